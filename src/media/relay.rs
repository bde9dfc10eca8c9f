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
use super::srtp::mbsha1::MacInput;
use super::srtp::{DeferredTag, PreTag, SrtpContext, SrtpError};
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
    /// SRTP/SRTCP authentication failed (forged, corrupted, wrong key).
    SrtpAuth = 7,
    /// SRTP/SRTCP replay (or older than the replay window).
    SrtpReplay = 8,
    /// Could not SRTP-protect toward the peer (or malformed for SRTP).
    SrtpOther = 9,
}

impl DropReason {
    /// Number of reasons (size of counter arrays).
    pub const COUNT: usize = 10;
    /// Stable names for metrics and ng replies.
    pub const NAMES: [&'static str; Self::COUNT] = [
        "malformed",
        "no_leg",
        "source_mismatch",
        "no_peer_address",
        "punted",
        "queue_full",
        "ambiguous",
        "srtp_auth",
        "srtp_replay",
        "srtp_other",
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
#[derive(Debug)]
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
    /// Whether the remote address has been learned from a packet (RTP, and
    /// RTCP when it shares the RTP socket).
    pub latched: bool,
    /// Whether the remote RTCP address has been learned from a packet on
    /// the leg's own RTCP socket. RTP and RTCP latch separately: NAT maps
    /// the two ports independently.
    pub rtcp_latched: bool,
    /// Source checking.
    pub on_mismatch: OnMismatch,
    /// RTP clock rate of the leg's codec (for jitter), Hz.
    pub clock_rate: u32,
    /// Receive statistics.
    pub stats: LegStats,
    /// Unprotects what this leg's remote sends (the remote's SDES key).
    pub srtp_in: Option<Box<SrtpContext>>,
    /// Protects what is sent to this leg's remote (our SDES key for it).
    pub srtp_out: Option<Box<SrtpContext>>,
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
            rtcp_latched: false,
            on_mismatch: OnMismatch::Learn,
            clock_rate: 8000,
            stats: LegStats::default(),
            srtp_in: None,
            srtp_out: None,
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
        self.rtcp_latched = false;
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
    /// Legs whose RTP latch was just set by a packet, for a shard that
    /// offloads latched legs (see [`RelayTable::log_latches`]); bounded by
    /// its capacity, empty and never pushed to unless enabled.
    latch_log: Vec<LegId>,
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
            legs: (0..legs_max).map(|_| None).collect(),
            free_legs: (0..legs_max as u32).rev().collect(),
            sockets: vec![SockOwners::default(); sockets_max],
            counters: RelayCounters::default(),
            epoch,
            latch_log: Vec::new(),
        }
    }

    /// Note (up to `max` at a time) the legs whose RTP latch a packet sets,
    /// for [`RelayTable::take_latched`]. Off (0) by default; costs one
    /// comparison per latching packet.
    pub fn log_latches(&mut self, max: usize) {
        self.latch_log = Vec::with_capacity(max);
    }

    /// The legs that latched since the last call (see
    /// [`RelayTable::log_latches`]), into `out`; the log is left empty.
    pub fn take_latched(&mut self, out: &mut Vec<LegId>) {
        out.append(&mut self.latch_log);
    }

    /// Whether a packet latched a leg since the last
    /// [`RelayTable::take_latched`].
    #[inline]
    pub fn latched_pending(&self) -> bool {
        !self.latch_log.is_empty()
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

    /// A leg by id, if it is installed.
    pub fn get(&self, id: LegId) -> Option<&Leg> {
        self.legs.get(id.0 as usize)?.as_ref()
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

    /// The fast path: classify the datagram in `buf[..*len]` that arrived
    /// from `src` on local socket `sock`, account it, transform it in place
    /// (SRTP unprotect on ingress, protect toward the peer) and say where it
    /// goes. On `Send`, `*len` is the length to send; `buf` must have room
    /// beyond `*len` for the peer's SRTP tag.
    #[inline]
    pub fn forward(
        &mut self,
        now: Instant,
        sock: SockId,
        src: SocketAddr,
        buf: &mut [u8],
        len: &mut usize,
    ) -> Verdict {
        self.forward_with(now, sock, src, buf, len, None, None)
    }

    /// For batched SRTP authentication (a shard's completion batch): the
    /// key, bytes and ROC of the tag [`RelayTable::forward_with`] will check
    /// for this packet, if it will arrive on an AES-CM SRTP leg as RTP.
    /// Changes nothing; a wrong guess only costs the batch its shortcut.
    pub fn auth_input<'a>(
        &'a self,
        sock: SockId,
        src: SocketAddr,
        pkt: &'a [u8],
    ) -> Option<MacInput<'a>> {
        let (id, component) = self.owner(sock, src).ok()?;
        if component != Component::Rtp || classify(pkt) != PacketKind::Rtp {
            return None;
        }
        self.legs
            .get(id.0 as usize)?
            .as_ref()?
            .srtp_in
            .as_deref()?
            .rtp_auth_input(pkt)
    }

    /// [`RelayTable::forward`] with the two SRTP batching shortcuts:
    /// `pre` is this packet's tag computed in a batch from
    /// [`RelayTable::auth_input`] (used when it still applies), and with
    /// `deferred` given, an AES-CM SRTP tag on egress RTP is left to the
    /// caller ([`DeferredTag`]), who must write it before sending.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(
        &mut self,
        now: Instant,
        sock: SockId,
        src: SocketAddr,
        buf: &mut [u8],
        len: &mut usize,
        pre: Option<&PreTag>,
        deferred: Option<&mut Option<DeferredTag>>,
    ) -> Verdict {
        self.counters.rx += 1;
        let (id, component) = match self.owner(sock, src) {
            Ok(o) => o,
            Err(reason) => return self.drop(reason, None),
        };
        let Some(pkt) = buf.get(..*len) else {
            return self.drop(DropReason::Malformed, Some(id));
        };
        let is_rtcp = match (classify(pkt), component) {
            (PacketKind::Stun | PacketKind::Dtls, _) => {
                return self.drop(DropReason::Punted, Some(id))
            }
            (PacketKind::Garbage, _) => return self.drop(DropReason::Malformed, Some(id)),
            (PacketKind::Rtcp, _) | (_, Component::Rtcp) => true,
            (PacketKind::Rtp, Component::Rtp) => false,
        };
        // Strict source (F-M2): decided before any work or state change.
        let leg = self.leg(id);
        let expected = if is_rtcp {
            leg.remote_rtcp
        } else {
            leg.remote_rtp
        };
        // The latch of the socket the packet came in on.
        let own_rtcp_socket = component == Component::Rtcp;
        let latched = if own_rtcp_socket {
            leg.rtcp_latched
        } else {
            leg.latched
        };
        if expected != Some(src)
            && leg.on_mismatch == OnMismatch::Drop
            && (latched || expected.is_some())
        {
            return self.drop(DropReason::SourceMismatch, Some(id));
        }
        // SRTP/SRTCP unprotect before anything trusts the packet: a forged
        // packet must not latch or move the statistics.
        if let Some(ctx) = self.leg_mut(id).srtp_in.as_deref_mut() {
            let r = if is_rtcp {
                ctx.unprotect_rtcp(buf, *len)
            } else {
                ctx.unprotect_rtp_with(buf, *len, pre)
            };
            match r {
                Ok(n) => *len = n,
                Err(e) => {
                    let reason = if e.is_replay() {
                        DropReason::SrtpReplay
                    } else if e == SrtpError::AuthenticationFailed {
                        DropReason::SrtpAuth
                    } else {
                        DropReason::Malformed
                    };
                    return self.drop(reason, Some(id));
                }
            }
        }
        let pkt = &buf[..*len];
        let epoch = self.epoch;
        let peer_id = self.leg(id).peer;
        let peer_last_sr = self
            .legs
            .get(peer_id.0 as usize)
            .and_then(Option::as_ref)
            .and_then(|p| p.last_sr);
        // Latching: the first acceptable packet fixes the remote address.
        if !own_rtcp_socket && !latched && self.latch_log.len() < self.latch_log.capacity() {
            self.latch_log.push(id);
        }
        let leg = self.leg_mut(id);
        if own_rtcp_socket {
            if expected != Some(src) && !latched {
                leg.remote_rtcp = Some(src);
            }
            leg.rtcp_latched = true;
        } else {
            if expected != Some(src) && !latched {
                // A muxed leg has one address for both.
                if is_rtcp || leg.rtcp_sock.is_none() {
                    leg.remote_rtcp = Some(src);
                }
                if !is_rtcp || leg.rtcp_sock.is_none() {
                    leg.remote_rtp = Some(src);
                }
            }
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
                // A report block answers an SR that went the other way,
                // i.e. one that came in on the peer leg.
                if let (Some(rep), Some((mid, at))) = (summary.report, peer_last_sr) {
                    if mid == rep.lsr {
                        let dlsr_us = u64::from(rep.dlsr) * 1_000_000 / 65536;
                        let rtt = (now.saturating_duration_since(at).as_micros() as u64)
                            .saturating_sub(dlsr_us);
                        leg.stats.rtt_us = rtt.min(u64::from(u32::MAX)) as u32;
                    }
                }
            }
        } else {
            let Ok(h) = RtpHeader::parse(pkt) else {
                return self.drop(DropReason::Malformed, Some(id));
            };
            let nanos = now.saturating_duration_since(epoch).as_nanos() as u64;
            let arrival = nanos / 1000 * u64::from(leg.clock_rate) / 1_000_000;
            leg.stats
                .on_rtp(h.sequence, h.timestamp, h.ssrc, pkt.len(), arrival);
        }
        leg.last_rx = Some(now);
        // Egress through the peer.
        let Some(peer) = self
            .legs
            .get_mut(peer_id.0 as usize)
            .and_then(Option::as_mut)
        else {
            return self.drop(DropReason::NoPeerAddress, Some(id));
        };
        let (sock, dst) = if is_rtcp {
            (peer.rtcp_sock.unwrap_or(peer.rtp_sock), peer.remote_rtcp)
        } else {
            (peer.rtp_sock, peer.remote_rtp)
        };
        let Some(dst) = dst else {
            return self.drop(DropReason::NoPeerAddress, Some(id));
        };
        if let Some(ctx) = peer.srtp_out.as_deref_mut() {
            let r = match (is_rtcp, deferred) {
                (true, _) => ctx.protect_rtcp(buf, *len),
                (false, None) => ctx.protect_rtp(buf, *len),
                (false, Some(slot)) => ctx.protect_rtp_deferred(buf, *len).map(|(n, d)| {
                    *slot = d;
                    n
                }),
            };
            match r {
                Ok(n) => *len = n,
                Err(_) => return self.drop(DropReason::SrtpOther, Some(id)),
            }
        }
        self.counters.forwarded += 1;
        Verdict::Send { sock, dst }
    }

    /// The leg (and component) a datagram from `src` on `sock` belongs to.
    #[inline]
    fn owner(&self, sock: SockId, src: SocketAddr) -> Result<(LegId, Component), DropReason> {
        let owners = self
            .sockets
            .get(sock as usize)
            .ok_or(DropReason::NoLeg)?
            .legs;
        match owners {
            [Some(o), None] | [None, Some(o)] => Ok(o),
            [Some(a), Some(b)] => self.pick_by_source(a, b, src).ok_or(DropReason::Ambiguous),
            [None, None] => Err(DropReason::NoLeg),
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

    /// Forward a copy of `pkt` in a buffer with room for a tag.
    fn fwd(t: &mut RelayTable, now: Instant, sock: SockId, src: SocketAddr, pkt: &[u8]) -> Verdict {
        let mut buf = [0u8; 2048];
        buf[..pkt.len()].copy_from_slice(pkt);
        let mut len = pkt.len();
        t.forward(now, sock, src, &mut buf, &mut len)
    }

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
            fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &rtp(1)),
            Verdict::Drop(DropReason::NoPeerAddress)
        );
        t.leg_mut(b).set_remote(addr("10.0.0.2:5000"), None);
        assert_eq!(
            fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &rtp(2)),
            Verdict::Send {
                sock: 2,
                dst: addr("10.0.0.2:5000")
            }
        );
        // B to A, and RTCP on port+1 goes to A's port+1.
        assert_eq!(
            fwd(&mut t, now, 2, addr("10.0.0.2:5000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("10.0.0.1:4000")
            }
        );
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            fwd(&mut t, now, 3, addr("10.0.0.2:5001"), &rr),
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
        let v = fwd(&mut t, now, 0, addr("192.0.2.9:7777"), &rtp(1));
        assert!(matches!(v, Verdict::Send { .. }));
        assert_eq!(t.leg(a).remote_rtp, Some(addr("192.0.2.9:7777")));
        // B's packets now go to the latched address.
        assert_eq!(
            fwd(&mut t, now, 2, addr("10.0.0.2:5000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("192.0.2.9:7777")
            }
        );
        // A second source does not steal the latch.
        let _ = fwd(&mut t, now, 0, addr("198.51.100.1:1"), &rtp(2));
        assert_eq!(t.leg(a).remote_rtp, Some(addr("192.0.2.9:7777")));
        // Strict: anything but the expected source is dropped.
        t.leg_mut(a).on_mismatch = OnMismatch::Drop;
        assert_eq!(
            fwd(&mut t, now, 0, addr("198.51.100.1:1"), &rtp(3)),
            Verdict::Drop(DropReason::SourceMismatch)
        );
        assert!(matches!(
            fwd(&mut t, now, 0, addr("192.0.2.9:7777"), &rtp(4)),
            Verdict::Send { .. }
        ));
    }

    #[test]
    fn latches_are_logged_once_when_asked() {
        let (mut t, a, b, now) = table();
        t.leg_mut(b).set_remote(addr("10.0.0.2:5000"), None);
        // Off by default: nothing is noted.
        let _ = fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &rtp(1));
        assert!(!t.latched_pending());
        t.leg_mut(a).set_remote(addr("10.0.0.1:4000"), None);
        t.log_latches(1);
        // The latching packet is noted; RTCP on the leg's own port and
        // later packets are not.
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let _ = fwd(&mut t, now, 1, addr("10.0.0.1:4001"), &rr);
        assert!(!t.latched_pending());
        let _ = fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &rtp(2));
        let _ = fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &rtp(3));
        let mut out = Vec::new();
        t.take_latched(&mut out);
        assert_eq!(out, vec![a]);
        assert!(!t.latched_pending());
        // Bounded: with the log full, another latch is not noted.
        let _ = fwd(&mut t, now, 2, addr("10.0.0.2:5000"), &rtp(1));
        t.leg_mut(a).set_remote(addr("10.0.0.1:4000"), None);
        let _ = fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &rtp(4));
        out.clear();
        t.take_latched(&mut out);
        assert_eq!(out, vec![b]);
    }

    #[test]
    fn rtp_and_rtcp_latch_separately() {
        let (mut t, a, b, now) = table();
        // B gave no usable address (NAT): both of its ports are learned.
        let rtp_src = addr("192.0.2.7:30000");
        let rtcp_src = addr("192.0.2.7:30517");
        assert!(matches!(
            fwd(&mut t, now, 2, rtp_src, &rtp(1)),
            Verdict::Drop(_) | Verdict::Send { .. }
        ));
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let _ = fwd(&mut t, now, 3, rtcp_src, &rr);
        assert_eq!(t.leg(b).remote_rtp, Some(rtp_src));
        assert_eq!(t.leg(b).remote_rtcp, Some(rtcp_src));
        // A's RTCP now reaches B's learned RTCP port.
        assert_eq!(
            fwd(&mut t, now, 1, addr("10.0.0.1:4001"), &rr),
            Verdict::Send {
                sock: 3,
                dst: rtcp_src
            }
        );
        let _ = a;
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
            fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &sr),
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
                fwd(&mut t, now, 0, src, junk),
                Verdict::Drop(DropReason::Malformed)
            );
        }
        assert_eq!(
            fwd(&mut t, now, 0, src, &[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]),
            Verdict::Drop(DropReason::Punted)
        );
        assert_eq!(t.counters.drops[DropReason::Malformed as usize], 4);
        assert_eq!(t.leg(a).stats.errors, 5);
        assert_eq!(
            fwd(&mut t, now, 7, src, &rtp(1)),
            Verdict::Drop(DropReason::NoLeg)
        );
        assert_eq!(
            fwd(&mut t, now, 99, src, &rtp(1)),
            Verdict::Drop(DropReason::NoLeg)
        );
        assert!(matches!(
            fwd(&mut t, now, 0, src, &rtp(9)),
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
            fwd(&mut t, now, 0, addr("10.0.0.1:4000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("10.0.0.2:5000")
            }
        );
        assert_eq!(
            fwd(&mut t, now, 0, addr("10.0.0.2:5000"), &rtp(1)),
            Verdict::Send {
                sock: 0,
                dst: addr("10.0.0.1:4000")
            }
        );
        // Both latched: a stranger cannot be placed.
        assert_eq!(
            fwd(&mut t, now, 0, addr("10.9.9.9:1"), &rtp(2)),
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
            fwd(
                &mut t,
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
            fwd(&mut t, now, 1, addr("10.0.0.1:4001"), &sr),
            Verdict::Send { .. }
        ));
        // 50 ms later B's RR answers it, having held it 10 ms (655 units).
        let mut rr = vec![0x81, 201, 0, 7, 0, 0, 0, 2];
        rr.extend_from_slice(&[0; 16]);
        rr.extend_from_slice(&0x0001_0000u32.to_be_bytes());
        rr.extend_from_slice(&655u32.to_be_bytes());
        let later = now + Duration::from_millis(50);
        assert!(matches!(
            fwd(&mut t, later, 3, addr("10.0.0.2:5001"), &rr),
            Verdict::Send { .. }
        ));
        let rtt = t.leg(b).stats.rtt_us;
        assert!((39_000..=41_000).contains(&rtt), "rtt {rtt}");
        let _ = a;
    }
}

#[cfg(test)]
mod srtp_test {
    use super::*;
    use crate::media::srtp::SrtpSuite;

    fn ctx(suite: SrtpSuite, seed: u8) -> Box<SrtpContext> {
        let key: Vec<u8> = (0..suite.master_key_len() as u8)
            .map(|i| i ^ seed)
            .collect();
        let salt: Vec<u8> = (0..suite.master_salt_len() as u8)
            .map(|i| i.wrapping_mul(seed))
            .collect();
        Box::new(SrtpContext::new(suite, &key, &salt).unwrap())
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend((0..160).map(|i| (i as u8) ^ (seq as u8)));
        p
    }

    /// A is SRTP (key 1 from A, key 2 toward A), B is plain RTP.
    fn table(suite: SrtpSuite) -> (RelayTable, Instant) {
        let now = Instant::now();
        let mut t = RelayTable::new(4, 4, now);
        let mut a = Leg::new(0, 0, None);
        a.set_remote("10.0.0.1:4000".parse().unwrap(), None);
        a.srtp_in = Some(ctx(suite, 1));
        a.srtp_out = Some(ctx(suite, 2));
        let mut b = Leg::new(0, 1, None);
        b.set_remote("10.0.0.2:5000".parse().unwrap(), None);
        let (a, b) = (t.insert(a).unwrap(), t.insert(b).unwrap());
        t.pair(a, b);
        (t, now)
    }

    #[test]
    fn transcrypts_both_ways_every_suite() {
        for suite in [
            SrtpSuite::AesCm128HmacSha1_80,
            SrtpSuite::AesCm128HmacSha1_32,
            SrtpSuite::Aes256CmHmacSha1_80,
            SrtpSuite::Aes256CmHmacSha1_32,
            SrtpSuite::AeadAes128Gcm,
            SrtpSuite::AeadAes256Gcm,
        ] {
            let (mut t, now) = table(suite);
            let (mut a_tx, mut a_rx) = (ctx(suite, 1), ctx(suite, 2));
            let a_src: SocketAddr = "10.0.0.1:4000".parse().unwrap();
            let b_src: SocketAddr = "10.0.0.2:5000".parse().unwrap();
            for seq in [65534u16, 65535, 0, 1] {
                // A -> B: SRTP in, plain out, bit-exact.
                let mut buf = [0u8; 2048];
                let plain = rtp(seq);
                buf[..plain.len()].copy_from_slice(&plain);
                let mut len = a_tx.protect_rtp(&mut buf, plain.len()).unwrap();
                assert!(len > plain.len());
                let v = t.forward(now, 0, a_src, &mut buf, &mut len);
                assert!(
                    matches!(v, Verdict::Send { sock: 1, .. }),
                    "{suite:?} {v:?}"
                );
                assert_eq!(&buf[..len], &plain[..], "{suite:?}");
                // B -> A: plain in, SRTP out that A can unprotect.
                let mut buf = [0u8; 2048];
                buf[..plain.len()].copy_from_slice(&plain);
                let mut len = plain.len();
                let v = t.forward(now, 1, b_src, &mut buf, &mut len);
                assert!(matches!(v, Verdict::Send { sock: 0, .. }));
                assert_ne!(&buf[..plain.len()], &plain[..]);
                let n = a_rx.unprotect_rtp(&mut buf, len).unwrap();
                assert_eq!(&buf[..n], &plain[..], "{suite:?}");
            }
        }
    }

    #[test]
    fn tampered_replayed_and_truncated_are_dropped_and_counted() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let (mut t, now) = table(suite);
        let mut a_tx = ctx(suite, 1);
        let a_src: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let mut buf = [0u8; 2048];
        let plain = rtp(7);
        buf[..plain.len()].copy_from_slice(&plain);
        let n = a_tx.protect_rtp(&mut buf, plain.len()).unwrap();
        let good = buf[..n].to_vec();
        // Tampered payload.
        let mut bad = good.clone();
        bad[40] ^= 1;
        let mut len = bad.len();
        bad.resize(2048, 0);
        assert_eq!(
            t.forward(now, 0, a_src, &mut bad, &mut len),
            Verdict::Drop(DropReason::SrtpAuth)
        );
        // Truncated below header + tag.
        let mut short = good[..14].to_vec();
        short.resize(64, 0);
        let mut len = 14;
        assert_eq!(
            t.forward(now, 0, a_src, &mut short, &mut len),
            Verdict::Drop(DropReason::Malformed)
        );
        // The genuine one passes once, then is a replay.
        for expect_ok in [true, false] {
            let mut b = good.clone();
            b.resize(2048, 0);
            let mut len = good.len();
            let v = t.forward(now, 0, a_src, &mut b, &mut len);
            if expect_ok {
                assert!(matches!(v, Verdict::Send { .. }));
            } else {
                assert_eq!(v, Verdict::Drop(DropReason::SrtpReplay));
            }
        }
        assert_eq!(t.counters.drops[DropReason::SrtpAuth as usize], 1);
        assert_eq!(t.counters.drops[DropReason::SrtpReplay as usize], 1);
        // A forged packet did not latch or count as media.
        let a = t.leg(LegId(0));
        assert_eq!(a.stats.rtp_received(), 1);
        assert_eq!(a.stats.errors, 3);
    }
    /// The batched path (tags precomputed in a `MacBatch` from
    /// `auth_input`, egress tags deferred) gives the same bytes and verdicts
    /// as `forward` on a second, identical table, across a ROC wrap and for
    /// a tampered packet; a stale precomputed tag (wrong ROC) is ignored.
    #[test]
    fn batched_tags_match_inline() {
        use crate::media::srtp::mbsha1::MacBatch;
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let (mut inline, now) = table(suite);
        let (mut batched, _) = table(suite);
        let macs = MacBatch::new();
        let mut a_tx = ctx(suite, 1);
        let a_src: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let b_src: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        for (i, seq) in [65533u16, 65534, 65535, 0, 1, 2].into_iter().enumerate() {
            let plain = rtp(seq);
            // A -> B.
            let mut pkt = [0u8; 2048];
            pkt[..plain.len()].copy_from_slice(&plain);
            let n = a_tx.protect_rtp(&mut pkt, plain.len()).unwrap();
            if i == 4 {
                pkt[30] ^= 0x40;
            }
            let (mut b1, mut b2) = (pkt, pkt);
            let (mut l1, mut l2) = (n, n);
            let v1 = inline.forward(now, 0, a_src, &mut b1, &mut l1);
            let inp = batched.auth_input(0, a_src, &b2[..n]).unwrap();
            let mut tag = [[0u8; 20]; 2];
            // Two lanes, so the SIMD code runs (one goes scalar).
            macs.run(&[inp, inp], &mut tag);
            let mut pre = PreTag {
                key: *inp.key,
                roc: inp.roc,
                tag: tag[0],
            };
            if i == 5 {
                // A stale guess: the relay recomputes and still accepts.
                pre.roc ^= 1;
                pre.tag = [0; 20];
            }
            let v2 = batched.forward_with(now, 0, a_src, &mut b2, &mut l2, Some(&pre), None);
            assert_eq!(v1, v2, "seq {seq}");
            assert_eq!(b1[..l1], b2[..l2], "seq {seq}");
            // B -> A: the deferred tag, written by the caller.
            let (mut b1, mut b2) = ([0u8; 2048], [0u8; 2048]);
            b1[..plain.len()].copy_from_slice(&plain);
            b2[..plain.len()].copy_from_slice(&plain);
            let (mut l1, mut l2) = (plain.len(), plain.len());
            let v1 = inline.forward(now, 1, b_src, &mut b1, &mut l1);
            let mut d = None;
            let v2 = batched.forward_with(now, 1, b_src, &mut b2, &mut l2, None, Some(&mut d));
            assert_eq!(v1, v2);
            let d = d.expect("AES-CM egress defers its tag");
            assert_eq!(l2, d.msg_len + d.tag_len);
            let inp = MacInput {
                key: &d.key,
                msg: &b2[..d.msg_len],
                roc: d.roc,
            };
            let mut tag = [[0u8; 20]; 2];
            macs.run(&[inp, inp], &mut tag);
            b2[d.msg_len..l2].copy_from_slice(&tag[1][..d.tag_len]);
            assert_eq!(b1[..l1], b2[..l2], "seq {seq}");
        }
        assert_eq!(inline.counters.drops, batched.counters.drops);
        assert_eq!(batched.counters.drops[DropReason::SrtpAuth as usize], 1);
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
