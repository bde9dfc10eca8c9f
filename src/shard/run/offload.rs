//! Offload to the XDP relay (issue 7, DESIGN.md "Two data paths behind one
//! relay table"): a shard installs the leg pairs that need no userspace
//! work into the XDP program's map, through its own [`XdpMaps`] handle.
//!
//! A pair is offloadable when
//! - both legs are plain RTP (no `srtp_in`/`srtp_out`);
//! - neither leg's call has a prompt player or DTMF tap, nor is bridged by a
//!   portal flow (those need userspace for as long as the flow lives);
//! - both legs have their own RTCP socket, their RTP sockets differ (not
//!   per-call port mode, where both legs share one port and are told apart
//!   by source) and every address is IPv4;
//! - both remotes are final, with the relay's own semantics
//!   ([`crate::media::relay::RelayTable::forward_with`]): with
//!   [`OnMismatch::Learn`] once the leg has latched (its first packet went
//!   through the socket path; later sources are relayed, not re-latched,
//!   which is what a non-strict entry does), with [`OnMismatch::Drop`]
//!   (strict source) once its remote is known, from SDP or a latch.
//!
//! Direction A->B is keyed by leg A's local RTP address and port, expects
//! A's remote as source (strict with [`OnMismatch::Drop`]), and leaves from
//! B's local RTP address toward B's remote. Its egress (interface and
//! MACs) comes from the shard's neighbour table ([`NeighTable`]) when B's
//! remote is on the subnet of an `xdp_interface` and its MAC is known;
//! otherwise the program finds it by FIB lookup (which needs IPv4
//! forwarding on the ingress interface; no answer: the packet goes to the
//! stack and the socket path relays it). The tick re-validates installed
//! entries' egress against the table, a bounded slice of them per tick
//! and a full pass at most every [`REVALIDATE_PERIOD`] (the kernel's table
//! re-read at its start): an entry whose next hop's MAC or interface
//! changed, or became known, is rewritten in place (counters kept).
//!
//! RTCP stays on the socket path: it arrives on the legs' own RTCP ports,
//! which have no entry, so the relay keeps its RTCP figures (round trip,
//! SR/RR) exactly as before. (That is why rtcp-muxed legs are not
//! offloaded: their RTCP would be forwarded as RTP, uncounted.)
//!
//! Pairs are checked where a remote becomes final: after a receive batch
//! that latched legs (the relay logs them, [`RelayTable::log_latches`]),
//! after offer, answer, re-offer and SIP media updates. Every removal goes
//! through [`Shard::xdp_release`]: on delete, media timeout, teardown, any
//! remote change (re-installed when final again), and before a flow plays,
//! listens or bridges on a call. Installed legs cost nothing per packet.
//!
//! Counters: an entry's packets, bytes (as UDP payload) and source drops
//! are added into the leg's figures ([`LegStats::add_offloaded`]) when the
//! entry is removed, and to reports while it is installed, so ng
//! `query`/`delete` and media-timeout reports include offloaded packets.
//! The socket counters (`rx`, relay drops) count only what userspace saw;
//! the shard publishes the XDP figures separately (`xdp_*` in
//! [`ShardMetrics`](crate::shard::ShardMetrics)).
//!
//! Media timeout: an offloaded leg's `last_rx` is moved from the entry's
//! `last_seen_ns` (CLOCK_MONOTONIC, the clock of `Instant`). The tick reads
//! a leg's counters only when its last known activity is older than a
//! quarter of the timeout, and at most once per quarter; a call about to
//! expire has its offloaded legs read once more first.
//!
//! [`RelayTable::log_latches`]: crate::media::relay::RelayTable::log_latches
//! [`LegStats::add_offloaded`]: crate::media::stats::LegStats::add_offloaded

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::neigh::NeighTable;
use super::{Shard, TICK};
use crate::media::relay::{LegId, OnMismatch};
use crate::media::xdp::{monotonic_ns, Egress, XdpCounters, XdpEntry, XdpMaps};

/// Ethernet, IPv4 (no options: the program passes those) and UDP headers:
/// what the program's byte count has beyond the UDP payload.
const FRAME_OVERHEAD: u64 = 14 + 20 + 8;
/// Least time between the starts of two egress re-validation passes.
const REVALIDATE_PERIOD: Duration = Duration::from_secs(1);
/// Leg slots a tick's re-validation looks at, at most.
const REVALIDATE_SLOTS: usize = 4096;
/// Installed entries a tick re-validates, at most.
const REVALIDATE_ENTRIES: usize = 256;

/// One installed direction (from the leg it is stored under).
#[derive(Clone, Copy, Debug)]
struct Installed {
    /// The entry's key: the leg's local RTP address.
    local: SocketAddrV4,
    /// The counters as last read (not yet added to the leg's figures).
    seen: XdpCounters,
    /// When they were read.
    checked: Instant,
    /// The entry as installed (its egress re-validated by the tick).
    entry: XdpEntry,
    /// Installed with the AF_XDP socket as the FIB-miss fallback.
    user: bool,
}

/// The offload's counters (published by the shard).
#[derive(Clone, Copy, Debug, Default)]
pub struct OffloadCounters {
    /// Directions installed now (two per offloaded pair).
    pub legs: u64,
    /// Directions installed so far.
    pub installs: u64,
    /// Map operations that failed (the pair stays on sockets).
    pub map_errors: u64,
    /// Packets the program relayed for this shard's entries (as last read).
    pub packets: u64,
    /// Their UDP payload bytes.
    pub bytes: u64,
    /// Packets its strict source check dropped.
    pub src_drops: u64,
    /// Directions installed with an egress from the neighbour table (no
    /// FIB lookup), so far.
    pub egress_direct: u64,
    /// Installed entries rewritten because their egress changed.
    pub egress_updates: u64,
}

/// The shard's offload state.
pub(super) struct Offload {
    maps: XdpMaps,
    /// By leg index (bounded by the relay table's size).
    legs: Vec<Option<Installed>>,
    /// Scratch for the relay's latch log.
    latched: Vec<LegId>,
    /// Read an installed leg's counters at most this often.
    refresh: Duration,
    /// Egress interfaces and next hops' MACs.
    neigh: NeighTable,
    /// Next leg slot to re-validate (0: a pass is to start).
    cursor: usize,
    /// When the last re-validation pass started.
    pass_at: Option<Instant>,
    pub(super) counters: OffloadCounters,
}

impl Offload {
    pub(super) fn new(
        maps: XdpMaps,
        legs_max: usize,
        timeout: Duration,
        neigh: NeighTable,
    ) -> Offload {
        Offload {
            maps,
            legs: vec![None; legs_max],
            latched: Vec::with_capacity(legs_max),
            refresh: (timeout / 4).max(TICK),
            neigh,
            cursor: 0,
            pass_at: None,
            counters: OffloadCounters::default(),
        }
    }

    fn installed(&self, id: LegId) -> Option<&Installed> {
        self.legs.get(id.0 as usize)?.as_ref()
    }

    /// Takes a new reading into the totals; returns the packets it adds.
    fn account(&mut self, old: XdpCounters, new: XdpCounters) -> u64 {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let packets = d(old.packets, new.packets);
        self.counters.packets += packets;
        self.counters.bytes += d(payload_bytes(&old), payload_bytes(&new));
        self.counters.src_drops += d(old.src_drops, new.src_drops);
        packets
    }
}

/// UDP payload bytes of an entry's counters.
fn payload_bytes(c: &XdpCounters) -> u64 {
    c.bytes
        .saturating_sub(c.packets.saturating_mul(FRAME_OVERHEAD))
}

/// `ns` of CLOCK_MONOTONIC as an `Instant`, given both clocks read now.
fn instant_of(ns: u64, now: Instant, now_ns: u64) -> Option<Instant> {
    if ns == 0 {
        return None;
    }
    now.checked_sub(Duration::from_nanos(now_ns.saturating_sub(ns)))
}

fn v4(a: Option<SocketAddr>) -> Option<SocketAddrV4> {
    match a? {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

impl Shard {
    /// Set up the offload from the start-up config, and say once whether
    /// it is active.
    pub(super) fn xdp_setup(&mut self, legs_max: usize) {
        use crate::log::{log, Field, Level};
        let shard = ("shard", Field::Int(self.cfg.index as i64));
        let Some(fds) = self.cfg.xdp.take() else {
            log(Level::Info, "media offload to XDP: inactive", &[shard]);
            return;
        };
        match fds.open() {
            Ok(maps) => {
                self.relay.log_latches(legs_max);
                let neigh = NeighTable::open(&self.cfg.xdp_interfaces);
                let direct = if neigh.is_empty() {
                    "none (FIB lookup)"
                } else {
                    "neighbour table"
                };
                self.xdp = Some(Box::new(Offload::new(
                    maps,
                    legs_max,
                    self.cfg.timeout,
                    neigh,
                )));
                log(
                    Level::Info,
                    "media offload to XDP: active",
                    &[shard, ("egress", Field::Str(direct))],
                );
            }
            Err(e) => log(
                Level::Warn,
                "media offload to XDP: inactive, cannot open the maps",
                &[shard, ("why", Field::Str(&e.to_string()))],
            ),
        }
    }

    /// A leg's local RTP address, if IPv4 and specific.
    fn xdp_local(&self, id: LegId) -> Option<SocketAddrV4> {
        let rtp = self.relay.get(id)?.rtp_sock;
        if let Some(a) = self.xsk_local(rtp) {
            return Some(a);
        }
        let sock = rtp as usize;
        match self.sock_ip.get(sock).copied().flatten()? {
            IpAddr::V4(ip) if !ip.is_unspecified() => {
                Some(SocketAddrV4::new(ip, self.socks.get(sock)?.port))
            }
            _ => None,
        }
    }

    /// Whether a leg's call needs userspace (a portal flow's tap or bridge).
    fn xdp_flow_call(&self, id: LegId) -> bool {
        let Some(leg) = self.relay.get(id) else {
            return true;
        };
        let Some(Some(c)) = self.calls.get(leg.call as usize) else {
            return true;
        };
        self.pm.has_tap(c.key) || self.fm.is_bridged(c.key)
    }

    /// The two entries (A->B, B->A) of leg `a`'s pair, if it is offloadable
    /// now (see the module doc).
    fn xdp_entries(&self, a: LegId) -> Option<(LegId, XdpEntry, XdpEntry)> {
        let la = self.relay.get(a)?;
        let b = la.peer;
        let lb = self.relay.get(b)?;
        if lb.peer != a || la.rtp_sock == lb.rtp_sock {
            return None;
        }
        let plain = |l: &crate::media::relay::Leg| {
            l.srtp_in.is_none() && l.srtp_out.is_none() && l.rtcp_sock.is_some()
        };
        let fin = |l: &crate::media::relay::Leg| match l.on_mismatch {
            OnMismatch::Drop => l.remote_rtp.is_some(),
            OnMismatch::Learn => l.latched && l.remote_rtp.is_some(),
        };
        if !plain(la) || !plain(lb) || !fin(la) || !fin(lb) {
            return None;
        }
        if self.xdp_flow_call(a) || self.xdp_flow_call(b) {
            return None;
        }
        let (ra, rb) = (v4(la.remote_rtp)?, v4(lb.remote_rtp)?);
        let (pa, pb) = (self.xdp_local(a)?, self.xdp_local(b)?);
        let entry = |local, remote, strict, new_src, new_dst| XdpEntry {
            local,
            expect_src: Some(remote),
            strict,
            new_src,
            new_dst,
            egress: None,
        };
        let ab = entry(pa, ra, la.on_mismatch == OnMismatch::Drop, pb, rb);
        let ba = entry(pb, rb, lb.on_mismatch == OnMismatch::Drop, pa, ra);
        Some((b, ab, ba))
    }

    /// Installs leg `a`'s pair if it is offloadable and not installed yet.
    pub(super) fn xdp_try_install(&mut self, a: LegId, now: Instant) {
        let Some(x) = self.xdp.as_deref() else {
            return;
        };
        if x.installed(a).is_some() {
            return;
        }
        let Some((b, mut ab, mut ba)) = self.xdp_entries(a) else {
            return;
        };
        ab.egress = self.xdp_egress(*ab.new_dst.ip());
        ba.egress = self.xdp_egress(*ba.new_dst.ip());
        // A half-installed pair (cannot happen; defensive): start over.
        self.xdp_release(b);
        // Socket-less legs: a FIB miss goes to the AF_XDP socket.
        let user = |sock: Option<u32>| sock.is_some_and(|s| self.xsk_local(s).is_some());
        let (ua, ub) = (
            user(self.relay.get(a).map(|l| l.rtp_sock)),
            user(self.relay.get(b).map(|l| l.rtp_sock)),
        );
        let Some(x) = self.xdp.as_deref_mut() else {
            return;
        };
        let insert = |maps: &mut crate::media::xdp::XdpMaps, e: &XdpEntry, user: bool| {
            if user {
                maps.insert_user_fallback(e)
            } else {
                maps.insert(e)
            }
        };
        if let Err(e) = insert(&mut x.maps, &ab, ua) {
            x.counters.map_errors += 1;
            crate::log::log(
                crate::log::Level::Warn,
                "XDP offload: insert failed, pair stays on sockets",
                &[("why", crate::log::Field::Str(&e.to_string()))],
            );
            return;
        }
        if insert(&mut x.maps, &ba, ub).is_err() {
            x.counters.map_errors += 1;
            if x.maps.remove(ab.local).is_err() {
                x.counters.map_errors += 1;
            }
            if ua {
                self.xsk_restore_local(ab.local);
            }
            return;
        }
        for (id, e, user) in [(a, ab, ua), (b, ba, ub)] {
            if let Some(slot) = x.legs.get_mut(id.0 as usize) {
                *slot = Some(Installed {
                    local: e.local,
                    seen: XdpCounters::default(),
                    checked: now,
                    entry: e,
                    user,
                });
                x.counters.legs += 1;
                x.counters.installs += 1;
                x.counters.egress_direct += u64::from(e.egress.is_some());
            }
        }
    }

    /// Removes the XDP entry of `leg`'s direction, if installed, adding its
    /// final counters into the leg's figures. The one way entries go: a
    /// socket-less (AF_XDP) leg's entry is to be restored to its "to
    /// userspace" action here instead of deleted.
    pub(super) fn xdp_release(&mut self, leg: LegId) {
        let Some(x) = self.xdp.as_deref_mut() else {
            return;
        };
        let Some(inst) = x.legs.get_mut(leg.0 as usize).and_then(Option::take) else {
            return;
        };
        x.counters.legs = x.counters.legs.saturating_sub(1);
        let last = match x.maps.counters(inst.local) {
            Ok(Some(c)) => c,
            Ok(None) => inst.seen,
            Err(_) => {
                x.counters.map_errors += 1;
                inst.seen
            }
        };
        if x.maps.remove(inst.local).is_err() {
            x.counters.map_errors += 1;
        }
        x.account(inst.seen, last);
        // A socket-less leg's port goes back to the AF_XDP path.
        self.xsk_restore_local(inst.local);
        let (now, now_ns) = (Instant::now(), monotonic_ns());
        let Some(l) = self
            .relay
            .get(leg)
            .is_some()
            .then(|| self.relay.leg_mut(leg))
        else {
            return;
        };
        l.stats
            .add_offloaded(last.packets, payload_bytes(&last), last.src_drops);
        if last.packets > 0 {
            if let Some(t) = instant_of(last.last_seen_ns, now, now_ns) {
                l.last_rx = Some(l.last_rx.map_or(t, |r| r.max(t)));
            }
        }
    }

    /// The egress toward `dst` from the neighbour table (with what the
    /// AF_XDP path learned from frames), `None` to keep the FIB lookup.
    fn xdp_egress(&mut self, dst: std::net::Ipv4Addr) -> Option<Egress> {
        let learned = self.xsk.as_ref().and_then(|p| p.neighbour_mac(dst));
        self.xdp.as_deref_mut()?.neigh.egress(dst, learned)
    }

    /// Re-validates a bounded slice of the installed entries' egress
    /// against the neighbour table, rewriting (in place, counters kept)
    /// those whose egress changed. A pass over all leg slots starts at most
    /// every [`REVALIDATE_PERIOD`], with a fresh read of the kernel's table.
    fn xdp_revalidate(&mut self, now: Instant) {
        let Some(x) = self.xdp.as_deref_mut() else {
            return;
        };
        if x.neigh.is_empty() || x.legs.is_empty() {
            return;
        }
        if x.cursor == 0 {
            if x.pass_at
                .is_some_and(|t| now.saturating_duration_since(t) < REVALIDATE_PERIOD)
            {
                return;
            }
            x.pass_at = Some(now);
            x.neigh.read_kernel();
        }
        let start = x.cursor;
        let end = (start + REVALIDATE_SLOTS).min(x.legs.len());
        let mut checked = 0;
        let mut i = start;
        while i < end && checked < REVALIDATE_ENTRIES {
            let inst = self
                .xdp
                .as_deref()
                .and_then(|x| x.legs.get(i).copied().flatten());
            i += 1;
            let Some(inst) = inst else {
                continue;
            };
            checked += 1;
            let eg = self.xdp_egress(*inst.entry.new_dst.ip());
            if eg == inst.entry.egress {
                continue;
            }
            let Some(x) = self.xdp.as_deref_mut() else {
                return;
            };
            let e = XdpEntry {
                egress: eg,
                ..inst.entry
            };
            match x.maps.update(&e, inst.user) {
                Ok(()) => {
                    x.counters.egress_updates += 1;
                    if let Some(Some(s)) = x.legs.get_mut(i - 1) {
                        s.entry = e;
                    }
                }
                Err(_) => x.counters.map_errors += 1,
            }
        }
        if let Some(x) = self.xdp.as_deref_mut() {
            x.cursor = if i >= x.legs.len() { 0 } else { i };
        }
    }

    /// Releases `leg` and its peer.
    pub(super) fn xdp_release_pair(&mut self, leg: LegId) {
        if self.xdp.is_none() {
            return;
        }
        let peer = self.relay.get(leg).map(|l| l.peer);
        self.xdp_release(leg);
        if let Some(p) = peer {
            self.xdp_release(p);
        }
    }

    fn call_legs(&self, ci: u32) -> Vec<(LegId, LegId)> {
        self.calls
            .get(ci as usize)
            .and_then(Option::as_ref)
            .map(|c| c.streams.iter().filter_map(|s| s.legs).collect())
            .unwrap_or_default()
    }

    /// Releases every leg of call slot `ci`.
    pub(super) fn xdp_release_call(&mut self, ci: u32) {
        if self.xdp.is_none() {
            return;
        }
        for (a, b) in self.call_legs(ci) {
            self.xdp_release_pair(a);
            self.xdp_release_pair(b);
        }
    }

    /// Releases every leg of the call with media `key`.
    pub(super) fn xdp_release_key(&mut self, key: u64) {
        if let Some(&ci) = self.by_key.get(&key) {
            self.xdp_release_call(ci);
        }
    }

    /// Installs what has become offloadable in call slot `ci`.
    pub(super) fn xdp_check_call(&mut self, ci: u32, now: Instant) {
        if self.xdp.is_none() {
            return;
        }
        for (a, _) in self.call_legs(ci) {
            self.xdp_try_install(a, now);
        }
    }

    /// After a receive batch: the pairs of legs that just latched.
    pub(super) fn xdp_after_batch(&mut self, now: Instant) {
        let Some(x) = self.xdp.as_deref_mut() else {
            return;
        };
        let mut latched = std::mem::take(&mut x.latched);
        latched.clear();
        self.relay.take_latched(&mut latched);
        for &id in &latched {
            // The leg may have gone (and its slot been reused) since.
            if self.relay.get(id).is_some() {
                self.xdp_try_install(id, now);
            }
        }
        if let Some(x) = self.xdp.as_deref_mut() {
            x.latched = latched;
        }
    }

    /// Reads an installed leg's counters: totals, and its `last_rx` from
    /// the program's `last_seen_ns`.
    fn xdp_refresh(&mut self, leg: LegId, now: Instant, now_ns: u64) {
        let Some(x) = self.xdp.as_deref_mut() else {
            return;
        };
        let Some(inst) = x.legs.get(leg.0 as usize).copied().flatten() else {
            return;
        };
        let c = match x.maps.counters(inst.local) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(_) => {
                x.counters.map_errors += 1;
                return;
            }
        };
        let moved = x.account(inst.seen, c);
        if let Some(Some(i)) = x.legs.get_mut(leg.0 as usize) {
            i.seen = c;
            i.checked = now;
        }
        if moved > 0 {
            if let Some(t) = instant_of(c.last_seen_ns, now, now_ns) {
                if self.relay.get(leg).is_some() {
                    let l = self.relay.leg_mut(leg);
                    l.last_rx = Some(l.last_rx.map_or(t, |r| r.max(t)));
                }
            }
        }
    }

    /// Reads the counters of every installed leg of call slot `ci` (before
    /// a report).
    pub(super) fn xdp_refresh_call(&mut self, ci: u32) {
        if self.xdp.is_none() {
            return;
        }
        let (now, now_ns) = (Instant::now(), monotonic_ns());
        for (a, b) in self.call_legs(ci) {
            self.xdp_refresh(a, now, now_ns);
            self.xdp_refresh(b, now, now_ns);
        }
    }

    /// At each tick: reads the installed legs whose last known activity is
    /// older than the refresh period (a quarter of the media timeout), each
    /// at most once per period. Bounded: one map read per offloaded leg per
    /// period at most, none for legs heard from recently.
    pub(super) fn xdp_tick(&mut self, now: Instant) {
        let Some(x) = self.xdp.as_deref() else {
            return;
        };
        if x.counters.legs == 0 {
            return;
        }
        self.xdp_revalidate(now);
        let Some(x) = self.xdp.as_deref() else {
            return;
        };
        let period = x.refresh;
        let mut due = Vec::new();
        for c in self.calls.iter().flatten() {
            for (a, b) in c.streams.iter().filter_map(|s| s.legs) {
                for id in [a, b] {
                    let Some(inst) = x.installed(id) else {
                        continue;
                    };
                    let last = self.relay.leg(id).last_rx.unwrap_or(c.created_at);
                    if now.saturating_duration_since(last) >= period
                        && now.saturating_duration_since(inst.checked) >= period
                    {
                        due.push(id);
                    }
                }
            }
        }
        if due.is_empty() {
            return;
        }
        let (inow, now_ns) = (Instant::now(), monotonic_ns());
        for id in due {
            self.xdp_refresh(id, inow, now_ns);
        }
    }

    /// Whether call slot `ci` has an offloaded leg.
    pub(super) fn xdp_call_offloaded(&self, ci: u32) -> bool {
        let Some(x) = self.xdp.as_deref() else {
            return false;
        };
        self.call_legs(ci)
            .iter()
            .any(|&(a, b)| x.installed(a).is_some() || x.installed(b).is_some())
    }

    /// What an installed leg's entry has counted since it was last added
    /// to the leg's figures (for reports): packets, payload bytes, drops.
    pub(super) fn xdp_live(&self, leg: LegId) -> Option<(u64, u64, u64)> {
        let i = self.xdp.as_deref()?.installed(leg)?;
        Some((i.seen.packets, payload_bytes(&i.seen), i.seen.src_drops))
    }

    /// The offload's counters, if active.
    pub(super) fn xdp_counters(&self) -> Option<OffloadCounters> {
        self.xdp.as_deref().map(|x| x.counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes_strip_the_headers() {
        let c = XdpCounters {
            packets: 2,
            bytes: 2 * (42 + 172),
            ..Default::default()
        };
        assert_eq!(payload_bytes(&c), 344);
        assert_eq!(payload_bytes(&XdpCounters::default()), 0);
    }

    #[test]
    fn monotonic_ns_maps_onto_instants() {
        let (now, ns) = (Instant::now(), monotonic_ns());
        assert_eq!(instant_of(0, now, ns), None);
        let t = instant_of(ns - 1_000_000_000, now, ns).expect("a second ago");
        assert_eq!(now - t, Duration::from_secs(1));
        // A reading from "the future" (clock read a moment later) is now.
        assert_eq!(instant_of(ns + 5, now, ns), Some(now));
    }
}
