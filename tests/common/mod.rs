//! Shared harness for integration tests: an in-process gateway (real
//! shards, real io_uring, real sockets on loopback), an ng client and RTP
//! endpoints.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kolokol::config::Config;
use kolokol::control::bencode::{self, Value};
use kolokol::control::ng::NgServer;
use kolokol::sdp::Sdp;
use kolokol::shard::ShardMetrics;

/// A gateway running in this process.
pub struct Gateway {
    pub ng: SocketAddr,
    pub metrics: Vec<Arc<ShardMetrics>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Start with media ports `port_min..port_min+span-1` and extra TOML
    /// lines for the `[media]` table.
    pub fn start(port_min: u16, span: u16, media_extra: &str) -> Gateway {
        let toml = format!(
            "[shards]\ncount = 1\n[sip]\nenabled = false\n[ng]\nlisten = \"127.0.0.1:0\"\n[media]\naddress = \"127.0.0.1\"\naddress_v6 = \"::1\"\nport_min = {port_min}\nport_max = {}\ncalls_max = 64\n{media_extra}\n",
            port_min + span - 1
        );
        let cfg = Config::parse(&toml).expect("test config");
        let (tx, rx) = crossbeam_channel::bounded(1024);
        let shards = kolokol::shard::spawn_all(&cfg, tx).expect("shards start");
        let metrics = shards.iter().map(|s| s.metrics.clone()).collect();
        let mut server = NgServer::bind(cfg.ng.listen, shards, rx).expect("ng bind");
        let ng = server.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            server.serve(|| s2.load(Ordering::Relaxed));
            server.shutdown();
        });
        Gateway {
            ng,
            metrics,
            stop,
            thread: Some(thread),
        }
    }

    /// Wait until the shard has published counters satisfying `f`.
    pub fn wait_metrics(&self, f: impl Fn(&ShardMetrics) -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if f(&self.metrics[0]) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An ng client.
pub struct Ng {
    sock: UdpSocket,
    to: SocketAddr,
    n: u64,
}

impl Ng {
    pub fn new(to: SocketAddr) -> Ng {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Ng { sock, to, n: 0 }
    }

    /// Send raw bytes, return the raw reply (None on timeout).
    pub fn raw(&mut self, msg: &[u8]) -> Option<Vec<u8>> {
        self.sock.send_to(msg, self.to).unwrap();
        let mut buf = vec![0u8; 65536];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    /// Send a request dictionary and decode the reply dictionary.
    pub fn req(&mut self, v: &Value) -> Value {
        self.n += 1;
        let cookie = format!("t{}_{}", std::process::id(), self.n);
        let mut msg = cookie.clone().into_bytes();
        msg.push(b' ');
        v.encode(&mut msg);
        let reply = self.raw(&msg).expect("ng reply");
        let (c, body) = kolokol::control::ng::split_cookie(&reply).expect("cookie");
        assert_eq!(c, cookie.as_bytes());
        bencode::decode(body).expect("reply bencode")
    }

    pub fn cmd(&mut self, command: &str, pairs: &[(&str, Value)]) -> Value {
        let mut d = Value::dict();
        d.insert("command", command);
        for (k, v) in pairs {
            d.insert(k, v.clone());
        }
        self.req(&d)
    }
}

pub fn s(x: &str) -> Value {
    Value::from(x)
}

pub fn sdp_for(addr: SocketAddr, extra: &str) -> String {
    let fam = if addr.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=- 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n{extra}a=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// The (address, rtp port, rtcp port, mux) a reply's SDP points at.
pub fn target(reply: &Value) -> (SocketAddr, Option<SocketAddr>, bool) {
    assert_eq!(
        reply.get("result").and_then(Value::as_str),
        Some("ok"),
        "reply {reply:?}"
    );
    let sdp = Sdp::parse(reply.get("sdp").and_then(Value::as_bytes).unwrap()).unwrap();
    let m = &sdp.media[0];
    let rtp = SocketAddr::new(m.address, m.port);
    (rtp, m.rtcp_addr(), m.rtcp_mux)
}

/// Offer from `a` and answer from `b`; returns (where A sends, where B sends).
pub fn setup_call(
    ng: &mut Ng,
    call_id: &str,
    a: SocketAddr,
    b: SocketAddr,
    a_extra: &str,
    b_extra: &str,
    flags: &[(&str, Value)],
) -> (Value, Value) {
    let mut pairs = vec![
        ("call-id", s(call_id)),
        ("from-tag", s("ftag")),
        ("sdp", Value::from(sdp_for(a, a_extra))),
    ];
    pairs.extend(flags.iter().cloned());
    let offer = ng.cmd("offer", &pairs);
    let mut pairs = vec![
        ("call-id", s(call_id)),
        ("from-tag", s("ftag")),
        ("to-tag", s("ttag")),
        ("sdp", Value::from(sdp_for(b, b_extra))),
    ];
    pairs.extend(flags.iter().cloned());
    let answer = ng.cmd("answer", &pairs);
    (offer, answer)
}

/// A G.711-sized RTP packet.
pub fn rtp(seq: u16, ssrc: u32, marker: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend(std::iter::repeat_n(marker, 160));
    p
}

pub fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    s
}

/// Receive one datagram (None on timeout) with its source.
pub fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, a)| (buf[..n].to_vec(), a))
}

/// Count datagrams arriving within `d`.
pub fn drain(s: &UdpSocket, d: Duration) -> usize {
    let end = Instant::now() + d;
    let mut n = 0;
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while Instant::now() < end {
        if s.recv_from(&mut buf).is_ok() {
            n += 1;
        }
    }
    s.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    n
}

/// Stream `idx` (0 = RTP, 1 = RTCP) of the first media of `tag` in a query
/// reply.
pub fn stream<'a>(q: &'a Value, tag: &str, idx: usize) -> &'a Value {
    &q.get("tags")
        .unwrap()
        .get(tag)
        .unwrap()
        .get("medias")
        .unwrap()
        .as_list()
        .unwrap()[0]
        .get("streams")
        .unwrap()
        .as_list()
        .unwrap()[idx]
}

/// A figure of the first media's RTP stream for the tag: looked up in the
/// stream, then its `stats`, then its `endpoint`.
pub fn leg_stat(q: &Value, tag: &str, key: &str) -> i64 {
    let st = stream(q, tag, 0);
    st.get(key)
        .or_else(|| st.get("stats").unwrap().get(key))
        .or_else(|| st.get("endpoint").unwrap().get(key))
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("no {key} in {st:?}"))
}

/// A `stats` figure of the first media's RTCP stream for the tag.
pub fn rtcp_stat(q: &Value, tag: &str, key: &str) -> i64 {
    let st = stream(q, tag, 1);
    st.get("stats")
        .and_then(|s| s.get(key))
        .and_then(Value::as_int)
        .unwrap_or_else(|| panic!("no {key} in {st:?}"))
}

/// A call set up over ng between two fresh loopback endpoints.
pub struct Call {
    /// Leg A's endpoint (the offerer).
    pub a: UdpSocket,
    /// Leg B's endpoint.
    pub b: UdpSocket,
    /// Where A sends (from the answer reply).
    pub to_a: SocketAddr,
    /// Where B sends (from the offer reply).
    pub to_b: SocketAddr,
    /// The offer reply.
    pub offer: Value,
    /// The answer reply.
    pub answer: Value,
}

/// Offer and answer a call with default SDP plus the extra lines.
pub fn call(ng: &mut Ng, id: &str, a_extra: &str, b_extra: &str, flags: &[(&str, Value)]) -> Call {
    let (a, b) = (udp(), udp());
    let (offer, answer) = setup_call(
        ng,
        id,
        a.local_addr().unwrap(),
        b.local_addr().unwrap(),
        a_extra,
        b_extra,
        flags,
    );
    let (to_a, _, _) = target(&answer);
    let (to_b, _, _) = target(&offer);
    Call {
        a,
        b,
        to_a,
        to_b,
        offer,
        answer,
    }
}
