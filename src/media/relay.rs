//! The relay table: rtpengine's split between call logic and the fast path.
//!
//! The call logic (a shard executing ng commands) installs flat [`Leg`]
//! entries and tells the table which local sockets belong to which leg; the
//! fast path, [`RelayTable::forward`], only looks entries up: "a datagram
//! from `src` arrived on socket `s`: which leg is it, is it acceptable, and
//! where does it go?" It returns a [`Verdict`]; the shard turns
//! `Verdict::Send` into a send operation. No allocation, no clock read, no
//! logging on this path.
//!
//! A leg is one endpoint of a call as the relay sees it: the remote party's
//! address (from SDP, then latched from the first packet, F-M2) and the
//! local socket(s) that party sends to. Each leg has a peer leg; what
//! arrives on a leg leaves through the peer's socket toward the peer's
//! remote address. The entry is kept flat (addresses, socket numbers,
//! counters) so that it can be copied into a BPF map for the XDP fast path
//! with the same meaning.
//!
//! Sockets are numbered by the shard ([`SockId`], the io_uring fixed-file
//! slot). A socket normally belongs to one leg; in "per-call" port mode both
//! legs of a call share one socket and are told apart by source address.

use std::net::SocketAddr;
use std::time::Instant;

use super::rtp::{classify, rtcp_summary, PacketKind, RtpHeader};
use super::stats::LegStats;

/// Index of a local socket in the shard (its io_uring fixed-file slot).
pub type SockId = u32;

/// Index of a leg in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LegId(pub u32);

/// What to do with a datagram whose source is not the leg's remote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnMismatch {
    /// Strict source: drop it and count it.
    Drop,
    /// Learn: the first packet latches the remote (symmetric RTP); later
    /// packets from another source are still relayed but do not re-latch.
    Learn,
}

/// Which component a socket carries for its leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// RTP, and RTCP too when the leg is rtcp-muxed (RFC 5761).
    Rtp,
    /// RTCP on its own port (port+1).
    Rtcp,
}

/// Why a datagram was dropped. Indexes the shard's drop counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// Too short, wrong version, bad lengths.
    Malformed = 0,
    /// The socket has no leg (closed between receive and lookup).
    NoLeg = 1,
    /// Strict source mode and the source is not the expected one.
    SourceMismatch = 2,
    /// The peer's address is not known yet (no answer, no packet).
    NoPeerAddress = 3,
    /// STUN/DTLS (we do not terminate ICE or DTLS on this path).
    Punted = 4,
    /// No send slot free (the egress queue is full).
    QueueFull = 5,
    /// The socket's two legs could not be told apart by source.
    Ambiguous = 6,
}

impl DropReason {
    /// Number of reasons (size of counter arrays).
    pub const COUNT: usize = 7;
    /// Stable names for metrics and ng replies.
    pub const NAMES: [&'static str; Self::COUNT] = [
        "malformed",
        "no_leg",
        "source_mismatch",
        "no_peer_address",
        "punted",
        "queue_full",
        "ambiguous",
    ];
}

/// The relay's answer for one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (possibly rewritten) datagram from `sock` to `dst`.
    Send {
        /// Local socket to send from.
        sock: SockId,
        /// Destination.
        dst: SocketAddr,
    },
    /// Do not forward; the reason has been counted.
    Drop(DropReason),
}

/// One leg: a flat forwarding entry plus its receive statistics.
#[derive(Clone, Debug)]
pub struct Leg {
    /// Opaque owner tag (the shard's call slot), for timeouts and teardown.
    pub call: u32,
    /// Where this leg's packets go.
    pub peer: LegId,
    /// Local socket the remote sends RTP (and muxed RTCP) to.
    pub rtp_sock: SockId,
    /// Local RTCP socket, `None` when rtcp-muxed.
    pub rtcp_sock: Option<SockId>,
    /// Remote RTP address: from SDP, then as latched.
    pub remote_rtp: Option<SocketAddr>,
    /// Remote RTCP address (port+1 or `a=rtcp`), or the RTP one if muxed.
    pub remote_rtcp: Option<SocketAddr>,
    /// Whether the remote address has been learned from a packet.
    pub latched: bool,
    /// Source checking.
    pub on_mismatch: OnMismatch,
    /// RTP clock rate of the leg's codec (for jitter), Hz.
    pub clock_rate: u32,
    /// Receive statistics.
    pub stats: LegStats,
    /// When the remote last sent something acceptable.
    pub last_rx: Option<Instant>,
    /// Middle NTP bits of the last SR that arrived on this leg and when it
    /// passed through the relay (for the peer's RR round-trip).
    last_sr: Option<(u32, Instant)>,
}

impl Leg {
    /// A leg with no remote yet.
    pub fn new(call: u32, rtp_sock: SockId, rtcp_sock: Option<SockId>) -> Leg {
        Leg {
            call,
            peer: LegId(u32::MAX),
            rtp_sock,
            rtcp_sock,
            remote_rtp: None,
            remote_rtcp: None,
            latched: false,
            on_mismatch: OnMismatch::Learn,
            clock_rate: 8000,
            stats: LegStats::default(),
            last_rx: None,
            last_sr: None,
        }
    }

    /// Set the remote from SDP; `rtcp` defaults to port+1, or the RTP
    /// address when muxed. Clears a previous latch (a re-INVITE moved it).
    pub fn set_remote(&mut self, rtp: SocketAddr, rtcp: Option<SocketAddr>) {
        self.remote_rtp = Some(rtp);
        self.remote_rtcp = Some(rtcp.unwrap_or_else(|| {
            if self.rtcp_sock.is_none() {
                rtp
            } else {
                SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
            }
        }));
        self.latched = false;
    }
}

/// Which legs use a socket, and as what.
#[derive(Clone, Copy, Debug, Default)]
struct SockOwners {
    legs: [Option<(LegId, Component)>; 2],
}

/// Counters of the whole table (one shard).
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayCounters {
    /// Datagrams offered to `forward`.
    pub rx: u64,
    /// Datagrams given a `Send` verdict.
    pub forwarded: u64,
    /// Drops by reason.
    pub drops: [u64; DropReason::COUNT],
}

/// The relay table of one shard: legs and socket ownership, bounded.
pub struct RelayTable {
    legs: Vec<Option<Leg>>,
    free_legs: Vec<u32>,
    sockets: Vec<SockOwners>,
    /// Table-wide counters.
    pub counters: RelayCounters,
    epoch: Instant,
}

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("relay table full")]
pub struct TableFull;

impl RelayTable {
    /// A table for at most `legs_max` legs and `sockets_max` sockets, all
    /// allocated now. `epoch` anchors the RTP-clock arrival times.
    pub fn new(legs_max: usize, sockets_max: usize, epoch: Instant) -> RelayTable {
        RelayTable {
            legs: vec![None; legs_max],
            free_legs: (0..legs_max as u32).rev().collect(),
            sockets: vec![SockOwners::default(); sockets_max],
            counters: RelayCounters::default(),
            epoch,
        }
    }

    /// Install a leg and attach it to its socket(s). The peer is set with
    /// [`RelayTable::pair`].
    pub fn insert(&mut self, leg: Leg) -> Result<LegId, TableFull> {
        let id = self.free_legs.pop().ok_or(TableFull)?;
        let lid = LegId(id);
        self.attach(leg.rtp_sock, lid, Component::Rtp);
        if let Some(s) = leg.rtcp_sock {
            self.attach(s, lid, Component::Rtcp);
        }
        let slot = &mut self.legs[id as usize];
        assert!(slot.is_none(), "free list handed out a used leg");
        *slot = Some(leg);
        Ok(lid)
    }

    fn attach(&mut self, sock: SockId, leg: LegId, c: Component) {
        let owners = &mut self.sockets[sock as usize].legs;
        let free = owners
            .iter_mut()
            .find(|o| o.is_none())
            .expect("a socket carries at most two legs");
        *free = Some((leg, c));
    }

    fn detach(&mut self, sock: SockId, leg: LegId) {
        for o in &mut self.sockets[sock as usize].legs {
            if matches!(o, Some((l, _)) if *l == leg) {
                *o = None;
            }
        }
    }

    /// Make `a` and `b` each other's peer.
    pub fn pair(&mut self, a: LegId, b: LegId) {
        self.leg_mut(a).peer = b;
        self.leg_mut(b).peer = a;
    }

    /// Remove a leg, detaching it from its sockets; returns it.
    pub fn remove(&mut self, id: LegId) -> Leg {
        let leg = self.legs[id.0 as usize]
            .take()
            .expect("removing a leg that is not installed");
        self.detach(leg.rtp_sock, id);
        if let Some(s) = leg.rtcp_sock {
            self.detach(s, id);
        }
        self.free_legs.push(id.0);
        leg
    }

    /// Drop a leg's RTCP socket (the remote accepted rtcp-mux).
    pub fn set_muxed(&mut self, id: LegId) -> Option<SockId> {
        let old = self.leg_mut(id).rtcp_sock.take();
        if let Some(s) = old {
            self.detach(s, id);
        }
        let leg = self.leg_mut(id);
        leg.remote_rtcp = leg.remote_rtp;
        old
    }

    /// A leg by id.
    pub fn leg(&self, id: LegId) -> &Leg {
        self.legs[id.0 as usize].as_ref().expect("leg installed")
    }

    /// A leg by id, mutable.
    pub fn leg_mut(&mut self, id: LegId) -> &mut Leg {
        self.legs[id.0 as usize].as_mut().expect("leg installed")
    }

    /// Legs installed now.
    pub fn len(&self) -> usize {
        self.legs.len() - self.free_legs.len()
    }

    /// Whether no legs are installed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity of socket slots.
    pub fn sockets_max(&self) -> usize {
        self.sockets.len()
    }

    /// Whether any leg still uses `sock`.
    pub fn socket_in_use(&self, sock: SockId) -> bool {
        self.sockets[sock as usize].legs.iter().any(Option::is_some)
    }

    fn drop(&mut self, r: DropReason, leg: Option<LegId>) -> Verdict {
        self.counters.drops[r as usize] += 1;
        if let Some(l) = leg {
            self.leg_mut(l).stats.errors += 1;
        }
        Verdict::Drop(r)
    }

    /// The fast path: classify the datagram `pkt` that arrived from `src` on
    /// local socket `sock`, account it, and say where it goes.
    #[inline]
    pub fn forward(&mut self, now: Instant, sock: SockId, src: SocketAddr, pkt: &[u8]) -> Verdict {
        self.counters.rx += 1;
        let Some(owners) = self.sockets.get(sock as usize).map(|s| s.legs) else {
            return self.drop(DropReason::NoLeg, None);
        };
        let (id, component) = match owners {
            [Some(o), None] | [None, Some(o)] => o,
            [Some(a), Some(b)] => match self.pick_by_source(a, b, src) {
                Some(o) => o,
                None => return self.drop(DropReason::Ambiguous, None),
            },
            [None, None] => return self.drop(DropReason::NoLeg, None),
        };
        let kind = classify(pkt);
        let is_rtcp = match (kind, component) {
            (PacketKind::Stun | PacketKind::Dtls, _) => {
                return self.drop(DropReason::Punted, Some(id))
            }
            (PacketKind::Garbage, _) => return self.drop(DropReason::Malformed, Some(id)),
            (PacketKind::Rtcp, _) | (_, Component::Rtcp) => true,
            (PacketKind::Rtp, Component::Rtp) => false,
        };
        // Source check and latching (F-M2).
        let leg = self.leg_mut(id);
        let expected = if is_rtcp {
            leg.remote_rtcp
        } else {
            leg.remote_rtp
        };
        if expected != Some(src) {
            match leg.on_mismatch {
                OnMismatch::Drop if leg.latched || expected.is_some() => {
                    return self.drop(DropReason::SourceMismatch, Some(id));
                }
                _ if !leg.latched => {
                    // Latch on the first packet; RTCP latches its own address.
                    if is_rtcp {
                        leg.remote_rtcp = Some(src);
                        if leg.rtcp_sock.is_none() {
                            leg.remote_rtp = Some(src);
                        }
                    } else {
                        leg.remote_rtp = Some(src);
                        if leg.rtcp_sock.is_none() {
                            leg.remote_rtcp = Some(src);
                        }
                    }
                    leg.latched = true;
                }
                _ => {}
            }
        } else if !leg.latched {
            leg.latched = true;
        }
        // Account on the ingress leg.
        if is_rtcp {
            if pkt.len() < super::rtp::RTCP_HEADER_LEN {
                return self.drop(DropReason::Malformed, Some(id));
            }
            leg.stats.on_rtcp(pkt.len());
            if let Some(summary) = rtcp_summary(pkt) {
                if let Some(mid) = summary.sr_ntp_mid {
                    leg.last_sr = Some((mid, now));
                }
                if let Some(rep) = summary.report {
                    // The report answers an SR that went the other way: it
                    // came in on the peer leg.
                    let peer = leg.peer;
                    let dlsr_us = u64::from(rep.dlsr) * 1_000_000 / 65536;
                    if let Some((mid, at)) =
                        self.legs[peer.0 as usize].as_ref().and_then(|p| p.last_sr)
                    {
                        if mid == rep.lsr {
                            let rtt = (now.saturating_duration_since(at).as_micros() as u64)
                                .saturating_sub(dlsr_us);
                            self.leg_mut(id).stats.rtt_us = rtt.min(u64::from(u32::MAX)) as u32;
                        }
                    }
                }
            }
        } else {
            let h = match RtpHeader::parse(pkt) {
                Ok(h) => h,
                Err(_) => return self.drop(DropReason::Malformed, Some(id)),
            };
            let nanos = now.saturating_duration_since(self.epoch).as_nanos() as u64;
            let leg = self.leg_mut(id);
            let arrival = nanos / 1000 * u64::from(leg.clock_rate) / 1_000_000;
            leg.stats
                .on_rtp(h.sequence, h.timestamp, h.ssrc, pkt.len(), arrival);
        }
        let leg = self.leg_mut(id);
        leg.last_rx = Some(now);
        let peer_id = leg.peer;
        // Egress through the peer.
        let Some(peer) = self.legs.get(peer_id.0 as usize).and_then(Option::as_ref) else {
            return self.drop(DropReason::NoPeerAddress, Some(id));
        };
        let (sock, dst) = if is_rtcp {
            (peer.rtcp_sock.unwrap_or(peer.rtp_sock), peer.remote_rtcp)
        } else {
            (peer.rtp_sock, peer.remote_rtp)
        };
        match dst {
            Some(dst) => {
                self.counters.forwarded += 1;
                Verdict::Send { sock, dst }
            }
            None => self.drop(DropReason::NoPeerAddress, Some(id)),
        }
    }

    /// Per-call port mode: tell the two legs on one socket apart by source.
    fn pick_by_source(
        &self,
        a: (LegId, Component),
        b: (LegId, Component),
        src: SocketAddr,
    ) -> Option<(LegId, Component)> {
        let la = self.leg(a.0);
        let lb = self.leg(b.0);
        let is = |l: &Leg| l.remote_rtp == Some(src) || l.remote_rtcp == Some(src);
        match (is(la), is(lb)) {
            (true, _) => Some(a),
            (_, true) => Some(b),
            // Unknown source: if exactly one leg has not latched yet, it is
            // that leg's first packet (NAT moved it).
            _ => match (la.latched, lb.latched) {
                (false, true) => Some(a),
                (true, false) => Some(b),
                _ => None,
            },
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::time::Duration;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&[0xff; 160]);
        p
    }

    /// A call: leg A on sockets 0/1 (remote 10.0.0.1:4000), leg B on 2/3.
    fn table() -> (RelayTable, LegId, LegId, Instant) {
        let now = Instant::now();
        let mut t = RelayTable::new(8, 8, now);
        let mut a = Leg::new(0, 0, Some(1));
        a.set_remote(addr("10.0.0.1:4000"), None);
        let b = Leg::new(0, 2, Some(3));
        let a = t.insert(a).unwrap();
        let b = t.insert(b).unwrap();
        t.pair(a, b);
        (t, a, b, now)
    }

    #[test]
    fn forwards_after_peer_known() {
        let (mut t, _a, b, now) = table();
        // B's address unknown: A's packets are dropped and counted.
        assert_eq!(
            t.forward(now, 0, addr("10.0.0.1:4000"), &rtp(1)),
            Verdict::Drop(DropReason::NoPeerAddress)
        );
        t.leg_mut(b).set_remote(addr("10.0.0.2:5000"), None);
        assert_eq!(
            t.forward(now, 0, addr("10.0.0.1:4000"), &rtp(2)),
            Verdict::Send {
                sock: 2,
                dst: addr("10.0.0.2:5000")
            }
        );
        // B to A, and RTCP on port+1 goes to A's port+1.
        assert_eq!(
            t.forward(now, 2, addr("10.0.0.2:5000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("10.0.0.1:4000")
            }
        );
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            t.forward(now, 3, addr("10.0.0.2:5001"), &rr),
            Verdict::Send {
                sock: 1,
                dst: addr("10.0.0.1:4001")
            }
        );
        assert_eq!(t.counters.forwarded, 3);
        assert_eq!(t.leg(b).stats.packets, 2);
    }

    #[test]
    fn latching_and_strict_source() {
        let (mut t, a, b, now) = table();
        t.leg_mut(b).set_remote(addr("10.0.0.2:5000"), None);
        // NAT: A's packets come from another port; learn mode latches.
        let v = t.forward(now, 0, addr("192.0.2.9:7777"), &rtp(1));
        assert!(matches!(v, Verdict::Send { .. }));
        assert_eq!(t.leg(a).remote_rtp, Some(addr("192.0.2.9:7777")));
        // B's packets now go to the latched address.
        assert_eq!(
            t.forward(now, 2, addr("10.0.0.2:5000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("192.0.2.9:7777")
            }
        );
        // A second source does not steal the latch.
        let _ = t.forward(now, 0, addr("198.51.100.1:1"), &rtp(2));
        assert_eq!(t.leg(a).remote_rtp, Some(addr("192.0.2.9:7777")));
        // Strict: anything but the expected source is dropped.
        t.leg_mut(a).on_mismatch = OnMismatch::Drop;
        assert_eq!(
            t.forward(now, 0, addr("198.51.100.1:1"), &rtp(3)),
            Verdict::Drop(DropReason::SourceMismatch)
        );
        assert!(matches!(
            t.forward(now, 0, addr("192.0.2.9:7777"), &rtp(4)),
            Verdict::Send { .. }
        ));
    }

    #[test]
    fn rtcp_mux_on_rtp_socket() {
        let now = Instant::now();
        let mut t = RelayTable::new(4, 4, now);
        let mut a = Leg::new(0, 0, None);
        a.set_remote(addr("10.0.0.1:4000"), None);
        let mut b = Leg::new(0, 1, None);
        b.set_remote(addr("10.0.0.2:5000"), None);
        let (a, b) = (t.insert(a).unwrap(), t.insert(b).unwrap());
        t.pair(a, b);
        let sr = [0x80, 200, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            t.forward(now, 0, addr("10.0.0.1:4000"), &sr),
            Verdict::Send {
                sock: 1,
                dst: addr("10.0.0.2:5000")
            }
        );
        assert_eq!(t.leg(a).stats.rtcp_packets, 1);
    }

    #[test]
    fn garbage_is_counted_and_dropped() {
        let (mut t, a, b, now) = table();
        t.leg_mut(b).set_remote(addr("10.0.0.2:5000"), None);
        let src = addr("10.0.0.1:4000");
        for junk in [&[][..], &[0x80][..], &[0xff; 40][..], &[0x80, 0, 1][..]] {
            assert_eq!(
                t.forward(now, 0, src, junk),
                Verdict::Drop(DropReason::Malformed)
            );
        }
        assert_eq!(
            t.forward(now, 0, src, &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]),
            Verdict::Drop(DropReason::Punted)
        );
        assert_eq!(t.counters.drops[DropReason::Malformed as usize], 4);
        assert_eq!(t.leg(a).stats.errors, 5);
        assert_eq!(
            t.forward(now, 7, src, &rtp(1)),
            Verdict::Drop(DropReason::NoLeg)
        );
        assert_eq!(
            t.forward(now, 99, src, &rtp(1)),
            Verdict::Drop(DropReason::NoLeg)
        );
        assert!(matches!(
            t.forward(now, 0, src, &rtp(9)),
            Verdict::Send { .. }
        ));
    }

    #[test]
    fn per_call_socket_shared_by_both_legs() {
        let now = Instant::now();
        let mut t = RelayTable::new(4, 4, now);
        let mut a = Leg::new(0, 0, None);
        a.set_remote(addr("10.0.0.1:4000"), None);
        let mut b = Leg::new(0, 0, None);
        b.set_remote(addr("10.0.0.2:5000"), None);
        let (a, b) = (t.insert(a).unwrap(), t.insert(b).unwrap());
        t.pair(a, b);
        assert_eq!(
            t.forward(now, 0, addr("10.0.0.1:4000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("10.0.0.2:5000")
            }
        );
        assert_eq!(
            t.forward(now, 0, addr("10.0.0.2:5000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("10.0.0.1:4000")
            }
        );
        // Both latched: a stranger cannot be placed.
        assert_eq!(
            t.forward(now, 0, addr("10.9.9.9:1"), &rtp(2)),
            Verdict::Drop(DropReason::Ambiguous)
        );
        let _ = (a, b);
    }

    #[test]
    fn remove_frees_sockets_and_slots() {
        let (mut t, a, b, now) = table();
        assert_eq!(t.len(), 2);
        t.remove(a);
        t.remove(b);
        assert!(t.is_empty());
        assert!(!t.socket_in_use(0));
        assert_eq!(
            t.forward(
                now + Duration::from_secs(1),
                0,
                addr("10.0.0.1:4000"),
                &rtp(1)
            ),
            Verdict::Drop(DropReason::NoLeg)
        );
        // Slots are reusable.
        let l = t.insert(Leg::new(1, 0, None)).unwrap();
        assert!(t.socket_in_use(0));
        t.remove(l);
    }

    #[test]
    fn rtt_from_sr_and_rr() {
        let (mut t, a, b, now) = table();
        t.leg_mut(b).set_remote(addr("10.0.0.2:5000"), None);
        // A sends an SR with NTP middle bits 0x00010000.
        let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
        sr.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        sr.extend_from_slice(&[0; 12]);
        assert!(matches!(
            t.forward(now, 1, addr("10.0.0.1:4001"), &sr),
            Verdict::Send { .. }
        ));
        // 50 ms later B's RR answers it, having held it 10 ms (655 units).
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 2];
        rr.extend_from_slice(&[0; 16]);
        rr.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        rr.extend_from_slice(&655u32.to_be_bytes());
        let later = now + Duration::from_millis(50);
        assert!(matches!(
            t.forward(later, 3, addr("10.0.0.2:5001"), &rr),
            Verdict::Send { .. }
        ));
        let rtt = t.leg(b).stats.rtt_us;
        assert!((39_000..=41_000).contains(&rtt), "rtt {rtt}");
        let _ = a;
    }
}

#[cfg(test)]
mod size_test {
    /// The per-call memory budget (N-5: < 4 KiB of gateway state per call)
    /// starts here: two legs per stream.
    #[test]
    fn leg_entry_is_small() {
        let leg = std::mem::size_of::<Option<super::Leg>>();
        println!("Option<Leg> = {leg} bytes");
        assert!(leg <= 320, "Leg grew to {leg} bytes");
    }
}
