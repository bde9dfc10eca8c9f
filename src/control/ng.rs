//! rtpengine's "ng" control protocol: bencode dictionaries over UDP, each
//! message prefixed by a cookie that the reply repeats.
//!
//! Commands: `ping`, `offer`, `answer`, `delete`, `query`, `list`. An offer
//! carries the caller's SDP; Kolokol allocates both legs of every stream on
//! one shard (chosen by a hash of the call-id) and returns the SDP with its
//! own address and ports for the callee to send to. The answer carries the
//! callee's SDP and returns the version for the caller. Flags understood
//! (as Kamailio's `rtpengine` module sends them): `replace` (`origin`,
//! `session-connection`), `ICE` (`remove`), `transport-protocol`,
//! `rtcp-mux` (`offer`, `demux`, `accept`, `reject`), `direction`,
//! `address family`, `flags` (`strict-source`, `trust-address`,
//! `SIP-source-address`, others ignored).
//!
//! Every failure is a `result: error` reply with an `error-reason`; a
//! datagram that is not even a cookie and a dictionary is counted and
//! dropped. Replies are cached by cookie so a retransmitted request gets
//! the same answer without being executed twice (as rtpengine does).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use super::bencode::{self, Value};
use super::sdes::{self, SdesPolicy};
use crate::sdp::crypto::CryptoAttr;
use crate::sdp::{MediaEndpoint, Rewrite, Sdp};
use crate::shard::{
    CallReport, ShardCmd, ShardError, ShardEvent, ShardHandle, StreamAnswer, StreamOffer,
    StreamPorts,
};

/// Largest ng datagram read.
pub const DATAGRAM_MAX: usize = 65_535;
/// Replies remembered for retransmitted requests.
pub const REPLY_CACHE_MAX: usize = 8192;

/// Split `<cookie> <bencode>`.
pub fn split_cookie(d: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = d.iter().position(|&b| b == b' ')?;
    if sp == 0 || sp > 256 {
        return None;
    }
    Some((&d[..sp], &d[sp + 1..]))
}

/// Counters of the ng endpoint.
#[derive(Debug, Default, Clone, Copy)]
pub struct NgCounters {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with `result: error`.
    pub errors: u64,
    /// Datagrams dropped as not ng at all.
    pub garbage: u64,
    /// Retransmissions answered from the cache.
    pub retransmits: u64,
}

struct NgCall {
    shard: usize,
    key: u64,
    from_tag: String,
    to_tag: Option<String>,
    created: SystemTime,
    last_signal: SystemTime,
    ports: Vec<StreamPorts>,
    sdes: Vec<StreamSdes>,
}

/// What the offer decided about SRTP for one stream, for the answer.
#[derive(Default)]
struct StreamSdes {
    /// A's transport protocol, restored in the answer toward A.
    a_proto: String,
    /// Our `a=crypto` for the answer to A (A speaks SRTP).
    a_answer: Option<CryptoAttr>,
    /// What we offered B (B speaks SRTP).
    b_offered: Option<Vec<CryptoAttr>>,
}

/// The ng protocol server (runs on the control thread).
pub struct NgServer {
    sock: UdpSocket,
    shards: Arc<[ShardHandle]>,
    events: Receiver<ShardEvent>,
    calls: HashMap<String, NgCall>,
    keys: HashMap<u64, String>,
    next_key: u64,
    cache: HashMap<Vec<u8>, Vec<u8>>,
    cache_order: VecDeque<Vec<u8>>,
    /// Counters.
    pub counters: NgCounters,
    hasher: std::collections::hash_map::RandomState,
}

struct NgError(String);

impl From<ShardError> for NgError {
    fn from(e: ShardError) -> Self {
        NgError(e.to_string())
    }
}

impl From<&str> for NgError {
    fn from(e: &str) -> Self {
        NgError(e.to_string())
    }
}

type NgResult = Result<Value, NgError>;

fn str_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|x| x.as_str())
            .map(str::to_string)
            .collect(),
        Some(Value::Bytes(_)) => v
            .and_then(Value::as_str)
            .map(|s| s.split_ascii_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn has(list: &[String], what: &str) -> bool {
    list.iter().any(|x| x.eq_ignore_ascii_case(what))
}

fn unix_s(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl NgServer {
    /// Bind the ng socket.
    pub fn bind(
        listen: SocketAddr,
        shards: impl Into<Arc<[ShardHandle]>>,
        events: Receiver<ShardEvent>,
    ) -> std::io::Result<NgServer> {
        let shards = shards.into();
        assert!(!shards.is_empty(), "ng server needs at least one shard");
        let sock = UdpSocket::bind(listen)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(NgServer {
            sock,
            shards,
            events,
            calls: HashMap::new(),
            keys: HashMap::new(),
            next_key: 1,
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            counters: NgCounters::default(),
            hasher: Default::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Serve until `stop` returns true (checked every 200 ms).
    pub fn serve(&mut self, stop: impl Fn() -> bool) {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        while !stop() {
            self.drain_events();
            let (n, peer) = match self.sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    eprintln!("ng: recv: {e}");
                    continue;
                }
            };
            if let Some(reply) = self.handle_datagram(&buf[..n]) {
                let _ = self.sock.send_to(&reply, peer);
            }
        }
    }

    /// Stop every shard.
    pub fn shutdown(&mut self) {
        for s in self.shards.iter() {
            s.stop();
        }
    }

    /// The shards (for metrics).
    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    /// The shared handles (the portal engine uses the same shards).
    pub fn shard_handles(&self) -> Arc<[ShardHandle]> {
        self.shards.clone()
    }

    fn drain_events(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            // Originated calls are the control API's; ng has none.
            if let ShardEvent::MediaTimeout(r) = ev {
                if let Some(cid) = self.keys.remove(&r.key) {
                    self.calls.remove(&cid);
                }
            }
        }
    }

    /// Handle one datagram; `None` means drop it silently (not ng at all).
    pub fn handle_datagram(&mut self, d: &[u8]) -> Option<Vec<u8>> {
        let Some((cookie, body)) = split_cookie(d) else {
            self.counters.garbage += 1;
            return None;
        };
        if let Some(r) = self.cache.get(cookie) {
            self.counters.retransmits += 1;
            return Some(r.clone());
        }
        self.drain_events();
        self.counters.requests += 1;
        let reply = match bencode::decode(body) {
            Ok(req @ Value::Dict(_)) => match self.dispatch(&req) {
                Ok(v) => v,
                Err(NgError(reason)) => error_reply(&reason),
            },
            Ok(_) => error_reply("request is not a dictionary"),
            Err(e) => error_reply(&format!("malformed bencode: {e}")),
        };
        if reply.get("result").and_then(Value::as_str) == Some("error") {
            self.counters.errors += 1;
        }
        let mut out = Vec::with_capacity(cookie.len() + 64);
        out.extend_from_slice(cookie);
        out.push(b' ');
        reply.encode(&mut out);
        self.remember(cookie.to_vec(), out.clone());
        Some(out)
    }

    fn remember(&mut self, cookie: Vec<u8>, reply: Vec<u8>) {
        if self.cache_order.len() >= REPLY_CACHE_MAX {
            if let Some(old) = self.cache_order.pop_front() {
                self.cache.remove(&old);
            }
        }
        self.cache_order.push_back(cookie.clone());
        self.cache.insert(cookie, reply);
    }

    fn dispatch(&mut self, req: &Value) -> NgResult {
        let cmd = req
            .get("command")
            .and_then(Value::as_str)
            .ok_or("no command")?;
        match cmd {
            "ping" => {
                let mut r = Value::dict();
                r.insert("result", "pong");
                Ok(r)
            }
            "offer" => self.offer(req),
            "answer" => self.answer(req),
            "delete" => self.delete(req),
            "query" => self.query(req),
            "list" => self.list(req),
            other => Err(NgError(format!("Unrecognized command '{other}'"))),
        }
    }

    fn shard_for(&self, call_id: &str) -> usize {
        let mut h = self.hasher.build_hasher();
        h.write(call_id.as_bytes());
        (h.finish() % self.shards.len() as u64) as usize
    }

    fn offer(&mut self, req: &Value) -> NgResult {
        let call_id = need_str(req, "call-id")?;
        let from_tag = need_str(req, "from-tag")?;
        let sdp_raw = req
            .get("sdp")
            .and_then(Value::as_bytes)
            .ok_or("no SDP body")?;
        let sdp = Sdp::parse(sdp_raw).map_err(|e| NgError(format!("bad SDP: {e}")))?;
        if sdp.media.is_empty() {
            return Err("SDP has no media".into());
        }
        let opts = Opts::from(req);
        let src = source_override(req, &opts);
        // Offering rtcp-mux to B means B needs no RTCP socket of its own:
        // its RTCP port in our SDP is the RTP port, so even a B that rejects
        // mux sends RTCP there (RFC 5761 section 5.1.3), and the RTP socket
        // demultiplexes by payload type.
        let offer_mux: Vec<bool> = sdp
            .media
            .iter()
            .map(|m| (m.rtcp_mux && !opts.mux_demux) || opts.mux_offer)
            .collect();
        // SDES per stream: accept A's key, make ours for B (RFC 4568).
        let mut sdes_state = Vec::with_capacity(sdp.media.len());
        let mut a_cryptos = Vec::with_capacity(sdp.media.len());
        for m in &sdp.media {
            let a_srtp = sdes::is_sdes_proto(&m.proto);
            let b_proto = opts.transport.clone().unwrap_or_else(|| m.proto.clone());
            let mut st = StreamSdes {
                a_proto: m.proto.clone(),
                ..StreamSdes::default()
            };
            let mut a_crypto = None;
            if a_srtp && m.port != 0 {
                let (c, answer) = sdes::accept_offer(m, &opts.sdes).map_err(NgError)?;
                a_crypto = Some(c);
                st.a_answer = Some(answer);
            }
            if sdes::is_sdes_proto(&b_proto) && m.port != 0 {
                let suites = sdes::offer_suites(m, a_srtp, &opts.sdes);
                if suites.is_empty() {
                    return Err("no SRTP suite left to offer".into());
                }
                st.b_offered = Some(sdes::make_offer(&suites));
            }
            sdes_state.push(st);
            a_cryptos.push(a_crypto);
        }
        let streams: Vec<StreamOffer> = sdp
            .media
            .iter()
            .zip(&offer_mux)
            .zip(a_cryptos)
            .map(|((m, &b_mux), a_crypto)| {
                let addr = src.unwrap_or(m.address);
                let a_v6 = addr.is_ipv6();
                let usable = !addr.is_unspecified() && m.port != 0;
                let a_mux = m.rtcp_mux && !opts.mux_reject;
                StreamOffer {
                    a_rtp: usable.then(|| SocketAddr::new(addr, m.port)),
                    a_rtcp: if a_mux || !usable {
                        None
                    } else {
                        Some(rtcp_of(m, addr, src))
                    },
                    a_mux,
                    b_mux,
                    a_v6,
                    b_v6: opts.family_v6.unwrap_or(a_v6),
                    clock_rate: m.clock_rate,
                    disabled: m.port == 0,
                    a_crypto,
                }
            })
            .collect();
        // Re-offer from the callee side (a re-INVITE in the other direction)
        // is not modelled: treat it as an update of the same call.
        let existing = self.calls.get(call_id).map(|c| (c.shard, c.key));
        let (shard, key) = existing.unwrap_or_else(|| {
            let k = self.next_key;
            self.next_key += 1;
            (self.shard_for(call_id), k)
        });
        let strict = opts.strict;
        let ports = self.shards[shard].call(|reply| ShardCmd::Offer {
            key,
            streams,
            strict,
            reply,
        })?;
        let rw = Rewrite {
            media: ports
                .iter()
                .zip(&offer_mux)
                .map(|(p, &mux)| {
                    Some(MediaEndpoint {
                        address: p.b.address,
                        rtp_port: p.b.rtp_port,
                        rtcp_port: p.b.rtcp_port,
                        offer_mux: mux,
                    })
                })
                .collect(),
            replace_origin: opts.replace_origin,
            ice_remove: opts.ice_remove,
            transport_protocol: opts.transport.clone(),
            media_proto: Vec::new(),
            media_crypto: sdes_state
                .iter()
                .map(|st| {
                    Some(
                        st.b_offered
                            .iter()
                            .flatten()
                            .map(CryptoAttr::to_line)
                            .collect(),
                    )
                })
                .collect(),
        };
        let out = sdp.rewrite(&rw).to_string_crlf();
        let now = SystemTime::now();
        match self.calls.get_mut(call_id) {
            Some(c) => {
                c.last_signal = now;
                c.ports = ports;
                c.sdes = sdes_state;
            }
            None => {
                self.keys.insert(key, call_id.to_string());
                self.calls.insert(
                    call_id.to_string(),
                    NgCall {
                        shard,
                        key,
                        from_tag: from_tag.to_string(),
                        to_tag: None,
                        created: now,
                        last_signal: now,
                        ports,
                        sdes: sdes_state,
                    },
                );
            }
        }
        let mut r = Value::dict();
        r.insert("result", "ok");
        r.insert("sdp", out);
        Ok(r)
    }

    fn answer(&mut self, req: &Value) -> NgResult {
        let call_id = need_str(req, "call-id")?;
        let _from_tag = need_str(req, "from-tag")?;
        let to_tag = req.get("to-tag").and_then(Value::as_str).unwrap_or("");
        let sdp_raw = req
            .get("sdp")
            .and_then(Value::as_bytes)
            .ok_or("no SDP body")?;
        let sdp = Sdp::parse(sdp_raw).map_err(|e| NgError(format!("bad SDP: {e}")))?;
        let call = self.calls.get(call_id).ok_or("Unknown call-id")?;
        let (shard, key) = (call.shard, call.key);
        let opts = Opts::from(req);
        let src = source_override(req, &opts);
        // B's keys for the suites we offered it.
        let mut b_cryptos = Vec::with_capacity(sdp.media.len());
        for (i, m) in sdp.media.iter().enumerate() {
            let offered = call.sdes.get(i).and_then(|st| st.b_offered.as_ref());
            b_cryptos.push(match offered {
                Some(o) if m.port != 0 => {
                    if !sdes::is_sdes_proto(&m.proto) {
                        return Err(NgError(format!(
                            "SRTP was offered to the callee but it answered {}",
                            m.proto
                        )));
                    }
                    Some(sdes::accept_answer(m, o).map_err(NgError)?)
                }
                _ => None,
            });
        }
        let mut b_cryptos = b_cryptos.into_iter();
        let streams: Vec<StreamAnswer> = sdp
            .media
            .iter()
            .map(|m| {
                let addr = src.unwrap_or(m.address);
                let usable = !addr.is_unspecified() && m.port != 0;
                StreamAnswer {
                    b_crypto: b_cryptos.next().flatten(),
                    b_rtp: usable.then(|| SocketAddr::new(addr, m.port)),
                    b_rtcp: if m.rtcp_mux || !usable {
                        None
                    } else {
                        Some(rtcp_of(m, addr, src))
                    },
                    b_mux: m.rtcp_mux,
                }
            })
            .collect();
        let ports = self.shards[shard].call(|reply| ShardCmd::Answer {
            key,
            streams,
            reply,
        })?;
        // Toward A: mux exactly when A's leg is muxed (A offered it); A's
        // own transport protocol and, for SRTP, our key for A.
        let sdes_a = self.calls.get(call_id).map(|c| &c.sdes[..]).unwrap_or(&[]);
        let rw = Rewrite {
            media: ports
                .iter()
                .take(sdp.media.len())
                .map(|p| {
                    Some(MediaEndpoint {
                        address: p.a.address,
                        rtp_port: p.a.rtp_port,
                        rtcp_port: p.a.rtcp_port,
                        offer_mux: p.a.rtcp_port.is_none() && p.a.rtp_port != 0,
                    })
                })
                .collect(),
            replace_origin: opts.replace_origin,
            ice_remove: opts.ice_remove,
            transport_protocol: None,
            media_proto: sdes_a.iter().map(|st| Some(st.a_proto.clone())).collect(),
            media_crypto: sdes_a
                .iter()
                .map(|st| Some(st.a_answer.iter().map(CryptoAttr::to_line).collect()))
                .collect(),
        };
        let out = sdp.rewrite(&rw).to_string_crlf();
        if let Some(c) = self.calls.get_mut(call_id) {
            c.to_tag = Some(to_tag.to_string());
            c.last_signal = SystemTime::now();
            c.ports = ports;
        }
        let mut r = Value::dict();
        r.insert("result", "ok");
        r.insert("sdp", out);
        Ok(r)
    }

    fn delete(&mut self, req: &Value) -> NgResult {
        let call_id = need_str(req, "call-id")?;
        let Some(c) = self.calls.remove(call_id) else {
            // rtpengine answers an unknown call with an error; Kamailio
            // logs it and moves on.
            return Err("Call-ID not found".into());
        };
        self.keys.remove(&c.key);
        let report = self.shards[c.shard].call(|reply| ShardCmd::Delete { key: c.key, reply });
        let mut r = Value::dict();
        r.insert("result", "ok");
        r.insert("created", unix_s(c.created));
        if let Ok(rep) = report {
            fill_report(&mut r, &c, &rep);
        }
        Ok(r)
    }

    fn query(&mut self, req: &Value) -> NgResult {
        let call_id = need_str(req, "call-id")?;
        let c = self.calls.get(call_id).ok_or("Unknown call-id")?;
        let key = c.key;
        let rep = self.shards[c.shard].call(|reply| ShardCmd::Query { key, reply })?;
        let c = self.calls.get(call_id).ok_or("Unknown call-id")?;
        let mut r = Value::dict();
        r.insert("result", "ok");
        r.insert("created", unix_s(c.created));
        r.insert("last signal", unix_s(c.last_signal));
        fill_report(&mut r, c, &rep);
        Ok(r)
    }

    fn list(&mut self, req: &Value) -> NgResult {
        let limit = req
            .get("limit")
            .and_then(Value::as_int)
            .unwrap_or(32)
            .clamp(0, 100_000) as usize;
        let calls: Vec<Value> = self
            .calls
            .keys()
            .take(limit)
            .map(|k| Value::from(k.as_str()))
            .collect();
        let mut r = Value::dict();
        r.insert("result", "ok");
        r.insert("calls", calls);
        Ok(r)
    }
}

fn need_str<'a>(req: &'a Value, key: &str) -> Result<&'a str, NgError> {
    req.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| NgError(format!("No {key} in message")))
}

fn error_reply(reason: &str) -> Value {
    let mut r = Value::dict();
    r.insert("result", "error");
    r.insert("error-reason", reason);
    r
}

/// The flags of one request.
struct Opts {
    replace_origin: bool,
    ice_remove: bool,
    transport: Option<String>,
    mux_offer: bool,
    mux_demux: bool,
    mux_reject: bool,
    strict: bool,
    sip_source: bool,
    family_v6: Option<bool>,
    sdes: SdesPolicy,
}

impl Opts {
    fn from(req: &Value) -> Opts {
        let flags = str_list(req.get("flags"));
        let replace = str_list(req.get("replace"));
        let mux = str_list(req.get("rtcp-mux"));
        let ice = req.get("ICE").and_then(Value::as_str).unwrap_or("");
        let family = req
            .get("address family")
            .or_else(|| req.get("address-family"))
            .and_then(Value::as_str);
        let sdes_list = str_list(req.get("SDES"));
        let sdes = SdesPolicy::from_flags(
            flags
                .iter()
                .filter(|f| f.starts_with("SDES-"))
                .chain(sdes_list.iter())
                .map(String::as_str),
        );
        Opts {
            sdes,
            replace_origin: has(&replace, "origin"),
            ice_remove: ice.eq_ignore_ascii_case("remove"),
            transport: req
                .get("transport-protocol")
                .and_then(Value::as_str)
                .map(str::to_string),
            mux_offer: has(&mux, "offer"),
            mux_demux: has(&mux, "demux"),
            mux_reject: has(&mux, "reject"),
            strict: has(&flags, "strict-source"),
            sip_source: has(&flags, "SIP-source-address") && !has(&flags, "trust-address"),
            family_v6: match family {
                Some(f) if f.eq_ignore_ascii_case("IP6") => Some(true),
                Some(f) if f.eq_ignore_ascii_case("IP4") => Some(false),
                _ => None,
            },
        }
    }
}

/// A non-muxed remote's RTCP address: `a=rtcp` or RTP port + 1 (RFC 3605).
fn rtcp_of(m: &crate::sdp::Media, addr: IpAddr, src: Option<IpAddr>) -> SocketAddr {
    match m.rtcp_addr() {
        Some(r) => SocketAddr::new(src.unwrap_or(r.ip()), r.port()),
        None => SocketAddr::new(addr, m.port.wrapping_add(1)),
    }
}

/// With `SIP-source-address`, media goes to the address the SIP message
/// came from (`received-from: [IP4, addr]`) instead of the SDP's.
fn source_override(req: &Value, opts: &Opts) -> Option<IpAddr> {
    if !opts.sip_source {
        return None;
    }
    let rf = req.get("received-from")?.as_list()?;
    rf.get(1)?.as_str()?.parse().ok()
}

fn stats_dict(packets: u64, bytes: u64, errors: u64) -> Value {
    let mut s = Value::dict();
    s.insert("packets", packets);
    s.insert("bytes", bytes);
    s.insert("errors", errors);
    s
}

/// rtpengine-shaped figures: `tags` -> tag -> `medias` -> `streams`
/// (an RTP stream then an RTCP stream, as rtpengine lists them) -> `stats`,
/// plus `totals`. Kolokol adds its quality figures (loss, jitter, MOS,
/// round trip) to the RTP stream.
fn fill_report(r: &mut Value, c: &NgCall, rep: &CallReport) {
    let now = unix_s(SystemTime::now());
    let mut tags = Value::dict();
    let mut rtp_tot = (0u64, 0u64, 0u64);
    let mut rtcp_tot = (0u64, 0u64);
    let mut untagged = 0;
    for (is_b, tag) in [
        (false, Some(c.from_tag.as_str())),
        (true, c.to_tag.as_deref()),
    ] {
        let tag = match tag {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => {
                untagged += 1;
                format!("<untagged {untagged}>")
            }
        };
        let mut medias = Vec::new();
        for l in rep.legs.iter().filter(|l| l.is_b == is_b) {
            let st = &l.stats;
            let rtp_bytes = st.bytes - st.rtcp_bytes;
            rtp_tot.0 += st.rtp_received();
            rtp_tot.1 += rtp_bytes;
            rtp_tot.2 += st.errors;
            rtcp_tot.0 += st.rtcp_packets;
            rtcp_tot.1 += st.rtcp_bytes;
            let family = if l.local.address.is_ipv4() {
                "IPv4"
            } else {
                "IPv6"
            };
            let base = |port: u16, flag: &str| {
                let mut s = Value::dict();
                s.insert("local address", l.local.address.to_string());
                s.insert("local port", i64::from(port));
                s.insert("family", family);
                let mut ep = Value::dict();
                if let Some(a) = l.remote {
                    ep.insert("family", if a.is_ipv4() { "IPv4" } else { "IPv6" });
                    ep.insert("address", a.ip().to_string());
                    ep.insert("port", i64::from(a.port()));
                }
                s.insert("endpoint", ep);
                s.insert("flags", vec![Value::from(flag)]);
                if let Some(idle) = l.idle_s {
                    s.insert("last packet", now - idle as i64);
                }
                s
            };
            let mut rtp = base(l.local.rtp_port, "RTP");
            rtp.insert("SSRC", u64::from(st.ssrc));
            rtp.insert("stats", stats_dict(st.rtp_received(), rtp_bytes, st.errors));
            rtp.insert("latched", i64::from(l.latched));
            // Kolokol: relayed by the XDP program now (figures include it).
            rtp.insert("offloaded", i64::from(l.offloaded));
            rtp.insert("lost", st.lost());
            rtp.insert("expected", st.expected());
            rtp.insert("reordered", st.reordered);
            rtp.insert("jitter", st.jitter());
            rtp.insert("jitter_us", st.jitter_us(l.clock_rate));
            rtp.insert("rtt_us", u64::from(st.rtt_us));
            rtp.insert("mos x10", (st.mos(l.clock_rate) * 10.0).round() as i64);
            let mut rtcp = base(l.local.rtcp_port.unwrap_or(l.local.rtp_port), "RTCP");
            rtcp.insert("stats", stats_dict(st.rtcp_packets, st.rtcp_bytes, 0));
            let mut media = Value::dict();
            media.insert("index", (l.stream + 1) as i64);
            media.insert("type", "audio");
            media.insert("streams", vec![rtp, rtcp]);
            medias.push(media);
        }
        let mut t = Value::dict();
        t.insert(
            "tag",
            if tag.starts_with('<') {
                ""
            } else {
                tag.as_str()
            },
        );
        t.insert("created", unix_s(c.created));
        t.insert("medias", medias);
        tags.insert(&tag, t);
    }
    r.insert("tags", tags);
    let mut totals = Value::dict();
    totals.insert("RTP", stats_dict(rtp_tot.0, rtp_tot.1, rtp_tot.2));
    totals.insert("RTCP", stats_dict(rtcp_tot.0, rtcp_tot.1, 0));
    r.insert("totals", totals);
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn cookie_split() {
        assert_eq!(
            split_cookie(b"abc d4:a1:be"),
            Some((&b"abc"[..], &b"d4:a1:be"[..]))
        );
        assert_eq!(split_cookie(b"nospace"), None);
        assert_eq!(split_cookie(b" leading"), None);
    }
}
