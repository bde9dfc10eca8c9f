//! SIP on a shard: the UDP sockets, the hand-over of messages between
//! shards, and the glue that drives the sans-IO [`SipEndpoint`] and
//! [`B2bua`] from the shard loop (SPEC F-S2, DESIGN "Routing a SIP message
//! to its shard").
//!
//! Every shard has its own UDP socket on each `sip.udp` address, all in one
//! `SO_REUSEPORT` group, so the kernel spreads peers over the shards by
//! their 4-tuple. That spread knows nothing of dialogs, so a shard that
//! receives a message first finds its owner ([`owner_shard`]): the shard
//! number Kolokol wrote into the Call-IDs it generates (every outbound leg,
//! so responses and in-dialog requests from trunks), else a hash of the
//! Call-ID (inbound calls, so the INVITE, its CANCEL, ACK and BYE all land
//! on one shard). A message for another shard goes to that shard's bounded
//! inbox ([`Handoff`]) and its eventfd is signalled; a full inbox is a
//! counted drop, which UDP retransmission recovers.
//!
//! Sockets are read with `recvfrom` when a multishot io_uring poll says
//! they are readable (SIP rates are tens of thousands of messages per
//! second, not millions of packets, and a datagram may be 64 KiB), in
//! bounded batches so media keeps flowing under a signalling flood.
//! Datagrams are sent with `sendto` from the socket of the destination's
//! address family.

use std::collections::HashMap;
use std::hash::Hasher;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use socket2::{Domain, Protocol, Socket, Type};

use super::stream::{self, Inbound, Listener, Streams, TlsConfigs};
use crate::call::b2bua::{B2bua, B2buaConfig, BridgeId, CallRecord};
use crate::call::flow::{Flows, FLOWS_MAX_DEFAULT};
use crate::config::Config;
use crate::config::Transport;
use crate::media::prompt::PromptLibrary;
use crate::sip::endpoint::{shard_of_call_id, EndpointConfig, Remote, SipEndpoint};
use crate::sip::msg::SipMessage;
use crate::sip::trunk::{CallerIdPool, Routes, TrunkSet};

/// Depth of a shard's SIP inbox (messages handed over by other shards).
pub const INBOX_DEPTH: usize = 8192;

/// Largest UDP datagram (65,535 minus the IPv4 and UDP headers).
const DATAGRAM_MAX: usize = 65_507;

/// Datagrams read from one socket per readiness event before the loop goes
/// back to media; the rest are read on the next turn without waiting.
pub(super) const RECV_BUDGET: usize = 256;

/// Lower bound of a shard's transaction table (it grows on demand).
const TRANSACTIONS_MIN: usize = 400_000;

/// How long a busy SIP port is retried at start (see [`bind_group`]).
pub(super) const PORT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Socket buffers: a burst of a few thousand INVITEs must not overflow.
const SOCKET_BUFFER: usize = 8 << 20;

/// A message passed between shards.
#[derive(Debug)]
pub enum Handoff {
    /// A message one shard received for a dialog another shard owns.
    Inbound {
        /// The peer that sent it, and how.
        src: Remote,
        /// For TCP/TLS: the shard that holds the connection, which the
        /// owner's answers go back through.
        conn_shard: usize,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A message for a peer whose TCP/TLS connection this shard holds.
    Outbound {
        /// Where to.
        dst: Remote,
        /// The message.
        bytes: Vec<u8>,
    },
}

/// Another shard, as seen by a shard handing a message over.
#[derive(Debug)]
pub struct Peer {
    /// Its inbox.
    pub tx: Sender<Handoff>,
    /// Its wake-up eventfd.
    pub wake: OwnedFd,
}

/// What a shard needs to serve SIP, built by [`crate::shard::spawn_all`].
pub struct SipSetup {
    /// This shard's sockets, one per `sip.udp` address, bound.
    pub socks: Vec<UdpSocket>,
    /// This shard's TCP and TLS listeners, bound and listening.
    pub listeners: Vec<Listener>,
    /// TLS server and client configurations.
    pub tls: TlsConfigs,
    /// The prompts the portal's flows play.
    pub prompts: Option<Arc<PromptLibrary>>,
    /// The endpoint's knobs.
    pub endpoint: EndpointConfig,
    /// The B2BUA with this shard's share of the trunk limits.
    pub b2bua: B2bua,
    /// Messages other shards hand over.
    pub inbox: Receiver<Handoff>,
    /// Every shard (this one included, unused), by index.
    pub peers: Vec<Peer>,
}

/// The shard that owns the dialog of a message with this Call-ID, of `n`:
/// the shard number in a Call-ID Kolokol generated, else a hash. The same
/// Call-ID always gives the same shard, which is all the routing needs.
pub fn owner_shard(call_id: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    if let Some(s) = shard_of_call_id(call_id) {
        if usize::from(s) < n {
            return usize::from(s);
        }
    }
    // FNV-1a: stable across processes and runs (no random seed), so every
    // shard computes the same owner.
    let mut h = Fnv1a::default();
    h.write(call_id.as_bytes());
    (h.finish() % n as u64) as usize
}

struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The Call-ID of a SIP message by a scan of its header lines, without a
/// full parse (the owner shard parses it again). `None` when it is not
/// found plainly (absent, folded over lines, not UTF-8): the caller then
/// parses the message properly, so the same Call-ID gives the same owner
/// either way.
pub fn fast_call_id(bytes: &[u8]) -> Option<&str> {
    let mut lines = bytes.split(|&b| b == b'\n').skip(1);
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        // A continuation line belongs to the header above it, whatever it
        // looks like: the parser sees it so, and so must the routing.
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if !(name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i")) {
            continue;
        }
        // A folded value continues on the next line: leave it to the parser.
        if lines
            .clone()
            .next()
            .is_some_and(|n| n.first().is_some_and(|&b| b == b' ' || b == b'\t'))
        {
            return None;
        }
        let v = std::str::from_utf8(line[colon + 1..].trim_ascii()).ok()?;
        return (!v.is_empty()).then_some(v);
    }
    None
}

/// Binds `n` sockets on `addr` in one `SO_REUSEPORT` group. A probe bind
/// without `SO_REUSEPORT` first makes sure nobody else holds the port
/// (another process of the same user could otherwise join the group and
/// silently take part of our traffic).
fn bind_group(addr: SocketAddr, n: usize) -> io::Result<Vec<UdpSocket>> {
    let domain = Domain::for_address(addr);
    // A gateway that was just killed may still hold the port for a moment:
    // its io_uring is torn down asynchronously, and the polls on its SIP
    // sockets keep them open until then. So a busy port is tried again for
    // a few seconds before it is an error.
    let deadline = std::time::Instant::now() + PORT_BUSY_WAIT;
    loop {
        let probe = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            probe.set_only_v6(true)?;
        }
        match probe.bind(&addr.into()) {
            Ok(()) => break,
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("SIP UDP {addr}: {e} (is another SIP server running?)"),
                ))
            }
        }
    }
    (0..n)
        .map(|_| {
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            if addr.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.set_reuse_port(true)?;
            // Best effort: the kernel caps these at net.core.*mem_max
            // (tuning/ raises it).
            let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
            let _ = s.set_send_buffer_size(SOCKET_BUFFER);
            s.set_nonblocking(true)?;
            s.bind(&addr.into())
                .map_err(|e| io::Error::new(e.kind(), format!("SIP UDP {addr}: {e}")))?;
            Ok(s.into())
        })
        .collect()
}

/// Builds every shard's [`SipSetup`] (None for all when SIP is disabled),
/// given each shard's wake-up eventfd.
pub fn setup_all(
    cfg: &Config,
    wakes: &[OwnedFd],
    now: Instant,
) -> io::Result<Vec<Option<SipSetup>>> {
    let n = cfg.shards.count;
    if !cfg.sip.enabled || cfg.sip.udp.is_empty() {
        return Ok((0..n).map(|_| None).collect());
    }
    // socks[address][shard]
    let mut groups = Vec::with_capacity(cfg.sip.udp.len());
    for &a in &cfg.sip.udp {
        groups.push(bind_group(a, n)?);
    }
    let tls = stream::tls_configs(cfg)?;
    let prompts = Some(Arc::new(crate::media::prompt::load_configured(cfg)?));
    // listeners[address][shard]
    let mut lgroups = Vec::new();
    for &a in &cfg.sip.tcp {
        lgroups.push(stream::bind_listeners(a, Transport::Tcp, n)?);
    }
    if let Some(a) = cfg.sip.tls {
        lgroups.push(stream::bind_listeners(a, Transport::Tls, n)?);
    }
    let local_tcp = cfg
        .sip
        .tcp
        .iter()
        .copied()
        .find(|t| !t.ip().is_unspecified());
    let local_tls = cfg.sip.tls.filter(|t| !t.ip().is_unspecified());
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| crossbeam_channel::bounded::<Handoff>(INBOX_DEPTH))
        .unzip();
    let calls = cfg.sip_calls_max();
    let mut out = Vec::with_capacity(n);
    for (k, inbox) in rxs.into_iter().enumerate() {
        let socks: Vec<UdpSocket> = groups.iter_mut().map(|g| g.remove(0)).collect();
        let listeners: Vec<Listener> = lgroups.iter_mut().map(|g| g.remove(0)).collect();
        let local = socks[0].local_addr()?;
        let mut ep = EndpointConfig::new(local, k as u8);
        ep.local_tcp = local_tcp;
        ep.local_tls = local_tls;
        ep.dialogs_max = calls.saturating_mul(2).max(16);
        // RFC 6026 keeps an answered INVITE's transactions (and Timer J a
        // BYE's) for 64*T1 = 32 s: about three per call linger that long,
        // so at 3,000 calls/s a shard holds ~300k. The table grows on
        // demand up to this bound.
        ep.transactions_max = calls.saturating_mul(4).max(TRANSACTIONS_MIN);
        ep.outputs_max = calls.saturating_mul(2).clamp(1024, 65_536);
        ep.timers = cfg.sip.timers();
        ep.user_agent = cfg.sip.user_agent.clone();
        let ep = ep.with_session_timers(&cfg.sip);
        let trunks = TrunkSet::for_shard(cfg, k, now);
        let routes = Routes::new(&cfg.routes, &trunks);
        let pool = CallerIdPool::new(&cfg.caller_id.pool);
        let b2bua = B2bua::new(
            B2buaConfig::from_config(&cfg.sip, &cfg.caller_id, calls.max(1)),
            trunks,
            routes,
            pool,
            rand::random(),
        );
        let peers = txs
            .iter()
            .zip(wakes)
            .map(|(tx, w)| {
                Ok(Peer {
                    tx: tx.clone(),
                    wake: w.try_clone()?,
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        out.push(Some(SipSetup {
            socks,
            listeners,
            tls: tls.clone(),
            prompts: prompts.clone(),
            endpoint: ep,
            b2bua,
            inbox,
            peers,
        }));
    }
    Ok(out)
}

/// Counters of the SIP shell (the endpoint and B2BUA count their own).
#[derive(Clone, Copy, Debug, Default)]
pub struct SipShellCounters {
    /// Datagrams read from the sockets.
    pub rx: u64,
    /// Datagrams sent.
    pub tx: u64,
    /// Datagrams that could not be sent (buffer full, unreachable, no
    /// socket of the destination's family).
    pub tx_errors: u64,
    /// Datagrams handed to another shard.
    pub handed_over: u64,
    /// Datagrams dropped because the owner's inbox was full.
    pub handover_dropped: u64,
    /// Datagrams received from other shards.
    pub taken_over: u64,
    /// Messages other shards asked this one to send on its connections.
    pub relayed_out: u64,
    /// Media allocations that failed (ports, calls, bad SDP).
    pub media_failed: u64,
    /// B2BUA actions the endpoint refused.
    pub actions_failed: u64,
    /// Call records produced.
    pub records: u64,
    /// Call records dropped because the event queue was full.
    pub records_dropped: u64,
    /// Origination events dropped because the control plane's event
    /// queue was full.
    pub events_dropped: u64,
}

/// The SIP state a shard owns.
pub(super) struct SipShard {
    pub ep: SipEndpoint,
    pub b2b: B2bua,
    pub socks: Vec<UdpSocket>,
    pub inbox: Receiver<Handoff>,
    peers: Vec<Peer>,
    index: usize,
    buf: Vec<u8>,
    /// The media call (shard key) of each bridged call.
    pub bridges: HashMap<BridgeId, u64>,
    /// The bridged call of each media call.
    pub media_bridge: HashMap<u64, BridgeId>,
    next_key: u64,
    pub counters: SipShellCounters,
    /// Sockets that still had datagrams when their budget ran out.
    pub more: Vec<bool>,
    /// Whether each socket is IPv4 (looked up once, not per send).
    v4: Vec<bool>,
    /// TCP and TLS; polled as one more socket (index `socks.len()`).
    pub streams: Option<Streams>,
    /// The portal's flows on this shard.
    pub flows: Flows,
    /// The prompts the flows play.
    pub prompts: Option<Arc<PromptLibrary>>,
    /// Peers whose connection another shard holds, learnt from the
    /// messages it handed over: answers go back through that shard.
    routes: HashMap<(Transport, SocketAddr), usize>,
    /// Scratch for messages framed off connections.
    inbound: Vec<Inbound>,
}

/// Peers remembered in [`SipShard::routes`]; when full it is cleared and
/// learnt again from the next messages (a stale entry only costs a hop).
const ROUTES_MAX: usize = 65_536;

/// Keys of media calls made for the B2BUA: the top bit keeps them apart
/// from the ng control plane's keys (which count up from zero).
pub(super) const SIP_KEY_BASE: u64 = 1 << 63;

impl SipShard {
    pub(super) fn new(setup: SipSetup, index: usize, now: Instant) -> io::Result<SipShard> {
        let seed = rand::random();
        // Always: even without listeners, TCP/TLS trunks are reached over
        // connections this shard opens.
        let streams = Some(Streams::new(setup.listeners, setup.tls, now)?);
        let n = setup.socks.len() + usize::from(streams.is_some());
        let v4 = setup
            .socks
            .iter()
            .map(|s| s.local_addr().is_ok_and(|a| a.is_ipv4()))
            .collect();
        Ok(SipShard {
            ep: SipEndpoint::new(setup.endpoint, seed),
            b2b: setup.b2bua,
            socks: setup.socks,
            inbox: setup.inbox,
            peers: setup.peers,
            index,
            buf: vec![0; DATAGRAM_MAX + 1],
            bridges: HashMap::new(),
            media_bridge: HashMap::new(),
            next_key: SIP_KEY_BASE,
            counters: SipShellCounters::default(),
            more: vec![false; n],
            v4,
            streams,
            flows: Flows::new(FLOWS_MAX_DEFAULT),
            prompts: setup.prompts,
            routes: HashMap::new(),
            inbound: Vec::new(),
        })
    }

    /// The descriptors the run loop polls: the UDP sockets, then the
    /// streams' epoll set.
    pub(super) fn fds(&self) -> Vec<i32> {
        self.socks
            .iter()
            .map(|u| u.as_raw_fd())
            .chain(self.streams.as_ref().map(Streams::fd))
            .collect()
    }

    /// A fresh media key for a bridged call.
    pub(super) fn media_key(&mut self) -> u64 {
        let k = self.next_key;
        self.next_key = self.next_key.wrapping_add(1) | SIP_KEY_BASE;
        k
    }

    /// The earliest deadline of the endpoint and the B2BUA.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        [
            self.ep.poll_timeout(),
            self.b2b.poll_timeout(),
            self.flows.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Reads up to [`RECV_BUDGET`] datagrams from socket `i` and feeds
    /// them to the endpoint or their owner shard.
    pub(super) fn recv(&mut self, now: Instant, i: usize) {
        if i == self.socks.len() {
            return self.recv_streams(now, i);
        }
        let mut budget = RECV_BUDGET;
        self.more[i] = false;
        while budget > 0 {
            budget -= 1;
            match self.socks[i].recv_from(&mut self.buf) {
                Ok((len, src)) => {
                    self.counters.rx += 1;
                    if len > DATAGRAM_MAX {
                        continue;
                    }
                    // Take the buffer out so dispatch can borrow self.
                    let buf = std::mem::take(&mut self.buf);
                    self.dispatch(now, Remote::udp(src), &buf[..len]);
                    self.buf = buf;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors of earlier sends surface here; nothing to read.
                Err(_) => {}
            }
        }
        self.more[i] = true;
    }

    /// Accepts, reads and writes TCP/TLS connections; every framed message
    /// is dispatched like a datagram.
    fn recv_streams(&mut self, now: Instant, i: usize) {
        let Some(st) = self.streams.as_mut() else {
            return;
        };
        let mut msgs = std::mem::take(&mut self.inbound);
        self.more[i] = st.poll(now, &mut msgs);
        for m in msgs.drain(..) {
            self.counters.rx += 1;
            self.dispatch(now, m.src, &m.bytes);
        }
        self.inbound = msgs;
    }

    /// Messages other shards handed over, up to a budget.
    pub(super) fn drain_inbox(&mut self, now: Instant) -> bool {
        for _ in 0..RECV_BUDGET {
            let Ok(h) = self.inbox.try_recv() else {
                return false;
            };
            match h {
                Handoff::Inbound {
                    src,
                    conn_shard,
                    bytes,
                } => {
                    self.counters.taken_over += 1;
                    if src.transport.is_reliable() && conn_shard != self.index {
                        if self.routes.len() >= ROUTES_MAX {
                            self.routes.clear();
                        }
                        self.routes.insert((src.transport, src.addr), conn_shard);
                    }
                    self.ep.handle_message(now, src, &bytes);
                }
                Handoff::Outbound { dst, bytes } => {
                    self.counters.relayed_out += 1;
                    self.send_stream(now, dst, &bytes, false);
                }
            }
        }
        true
    }

    fn dispatch(&mut self, now: Instant, src: Remote, bytes: &[u8]) {
        let n = self.peers.len();
        if n > 1 {
            // A message that does not parse is the endpoint's to answer or
            // count; any shard will do, so this one.
            let parsed;
            let cid = match fast_call_id(bytes) {
                Some(c) => Some(c),
                None => {
                    parsed = SipMessage::parse(bytes).ok();
                    parsed.as_ref().map(|m| m.call_id())
                }
            };
            if let Some(cid) = cid {
                {
                    let owner = owner_shard(cid, n);
                    if owner != self.index {
                        let p = &self.peers[owner];
                        let h = Handoff::Inbound {
                            src,
                            conn_shard: self.index,
                            bytes: bytes.to_vec(),
                        };
                        if p.tx.try_send(h).is_ok() {
                            self.counters.handed_over += 1;
                            crate::sys::eventfd_signal(p.wake.as_raw_fd());
                        } else {
                            self.counters.handover_dropped += 1;
                        }
                        return;
                    }
                }
            }
        }
        self.ep.handle_message(now, src, bytes);
    }

    /// Sends one message the endpoint produced.
    pub(super) fn send(&mut self, now: Instant, dst: SocketAddr, t: Transport, bytes: &[u8]) {
        match t {
            Transport::Udp => self.send_udp(dst, bytes),
            t => self.send_stream(
                now,
                Remote {
                    addr: dst,
                    transport: t,
                },
                bytes,
                true,
            ),
        }
    }

    /// Sends on this shard's connection to `dst`; else through the shard
    /// that handed over the peer's messages; else (when `route`) on a new
    /// connection.
    fn send_stream(&mut self, now: Instant, dst: Remote, bytes: &[u8], route: bool) {
        let Some(st) = self.streams.as_mut() else {
            self.counters.tx_errors += 1;
            return;
        };
        if !st.has(dst) && route {
            if let Some(&k) = self.routes.get(&(dst.transport, dst.addr)) {
                let p = &self.peers[k];
                let h = Handoff::Outbound {
                    dst,
                    bytes: bytes.to_vec(),
                };
                if p.tx.try_send(h).is_ok() {
                    self.counters.handed_over += 1;
                    crate::sys::eventfd_signal(p.wake.as_raw_fd());
                } else {
                    self.counters.handover_dropped += 1;
                }
                return;
            }
        }
        match st.send(now, dst, bytes, route) {
            Ok(()) => self.counters.tx += 1,
            Err(_) => self.counters.tx_errors += 1,
        }
    }

    /// Sends one datagram from the socket of `dst`'s family.
    fn send_udp(&mut self, dst: SocketAddr, bytes: &[u8]) {
        let sock = self
            .v4
            .iter()
            .zip(&self.socks)
            .find(|(v4, _)| **v4 == dst.is_ipv4())
            .map(|(_, s)| s);
        match sock.map(|s| s.send_to(bytes, dst)) {
            Some(Ok(_)) => self.counters.tx += 1,
            _ => self.counters.tx_errors += 1,
        }
    }

    /// Keeps a finished call's record for the CDR writer.
    pub(super) fn record(&mut self, _r: &CallRecord) {
        self.counters.records += 1;
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn owner_is_stable_and_honours_our_shard_tag() {
        for n in 1..=8usize {
            for cid in ["a84b4c76e66710@pc33.atlanta.com", "x", "", "1-2-3"] {
                let o = owner_shard(cid, n);
                assert!(o < n);
                assert_eq!(o, owner_shard(cid, n), "same Call-ID, same shard");
            }
        }
        // Our own Call-IDs carry the shard.
        assert_eq!(owner_shard("0123abcd-3@127.0.0.1", 4), 3);
        assert_eq!(owner_shard("0123abcd-1@127.0.0.1", 4), 1);
        // A tag beyond the shard count is someone else's: hashed.
        assert!(owner_shard("0123abcd-9@127.0.0.1", 4) < 4);
        // The fast scan agrees with the parser.
        let m = b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
                  i:  abc-1@host \r\nCSeq: 2 BYE\r\n\r\nCall-ID: body\r\n";
        assert_eq!(fast_call_id(m), Some("abc-1@host"));
        let folded = b"BYE sip:a@b SIP/2.0\r\nCall-ID: abc\r\n  -1@host\r\n\r\n";
        assert_eq!(fast_call_id(folded), None);
        assert_eq!(fast_call_id(b"garbage"), None);
        // A folded line that looks like a Call-ID is part of Subject.
        let sneaky = b"INVITE sip:a@b SIP/2.0\r\nSubject: x\r\n Call-ID: evil\r\n\
                       Call-ID: real\r\n\r\n";
        assert_eq!(fast_call_id(sneaky), Some("real"));
        assert_eq!(fast_call_id(b"X\r\nCall-ID:\r\n\r\n"), None);
        // Hashing spreads Call-IDs over the shards.
        let mut seen = [0u32; 4];
        for i in 0..4000 {
            seen[owner_shard(&format!("{i:x}@host"), 4)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }
}
