//! Per-leg quality figures (F-M4): packets, bytes, loss from sequence gaps
//! (RFC 3550 A.1/A.3), interarrival jitter (RFC 3550 A.8), round trip from
//! RTCP (RFC 3550 §6.4.1) and an E-model MOS estimate (ITU-T G.107,
//! simplified for G.711 as in G.113 Appendix I).
//!
//! Updating is a handful of integer operations per packet; the MOS is only
//! computed when somebody asks.

/// Receive-side statistics of one leg (what the leg's remote sent us).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegStats {
    /// RTP and RTCP packets received and accepted.
    pub packets: u64,
    /// Bytes of those packets (UDP payload).
    pub bytes: u64,
    /// RTCP packets among `packets`.
    pub rtcp_packets: u64,
    /// Bytes of RTCP packets among `bytes`.
    pub rtcp_bytes: u64,
    /// Packets dropped on this leg (bad, wrong source, no peer address).
    pub errors: u64,
    /// SSRC of the current stream.
    pub ssrc: u32,
    /// Times the SSRC changed mid-call.
    pub ssrc_changes: u32,
    /// Extended highest sequence number (cycles << 16 | max_seq).
    ext_max_seq: u32,
    /// Extended first sequence number of the current SSRC.
    base_seq: u32,
    /// RTP packets counted for the loss figure (current SSRC).
    received: u64,
    /// Packets lost in earlier SSRCs.
    lost_before: u64,
    /// Packets that arrived with a sequence number below the highest.
    pub reordered: u64,
    /// Previous relative transit time, in RTP timestamp units.
    transit: i64,
    /// Jitter × 16 in RTP timestamp units (A.8 keeps it scaled).
    jitter_q4: u64,
    started: bool,
    /// Last round-trip time measured from RTCP, microseconds (0 = none).
    pub rtt_us: u32,
}

impl LegStats {
    /// Account an RTP packet. `arrival` is the arrival time converted to the
    /// stream's RTP clock (units of 1/clock_rate s).
    #[inline]
    pub fn on_rtp(&mut self, seq: u16, ts: u32, ssrc: u32, len: usize, arrival: u64) {
        self.packets += 1;
        self.bytes += len as u64;
        if !self.started || ssrc != self.ssrc {
            if self.started {
                self.ssrc_changes += 1;
                self.lost_before += self.lost_current();
            }
            self.started = true;
            self.ssrc = ssrc;
            self.base_seq = u32::from(seq);
            self.ext_max_seq = u32::from(seq);
            self.received = 1;
            self.transit = arrival as i64 - i64::from(ts);
            return;
        }
        self.received += 1;
        // RFC 3550 A.1: a delta below half the space is forward progress
        // (wrapping into the next cycle), above it a late packet.
        let max = self.ext_max_seq as u16;
        let delta = seq.wrapping_sub(max);
        if delta != 0 && delta < 0x8000 {
            let cycles = self.ext_max_seq & 0xffff_0000;
            let cycles = if seq < max {
                cycles.wrapping_add(0x1_0000)
            } else {
                cycles
            };
            self.ext_max_seq = cycles | u32::from(seq);
        } else if delta != 0 {
            self.reordered += 1;
        }
        // RFC 3550 A.8, in integers.
        let transit = arrival as i64 - i64::from(ts);
        let d = (transit - self.transit).unsigned_abs();
        self.transit = transit;
        self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
    }

    /// Account an RTCP packet.
    #[inline]
    pub fn on_rtcp(&mut self, len: usize) {
        self.packets += 1;
        self.rtcp_packets += 1;
        self.rtcp_bytes += len as u64;
        self.bytes += len as u64;
    }

    /// Account RTP packets the XDP program relayed for this leg (they never
    /// reached userspace): `bytes` of UDP payload, `drops` refused by its
    /// strict source check. They count as received RTP (and drops as
    /// errors); loss and jitter stay figures of what userspace saw.
    pub fn add_offloaded(&mut self, packets: u64, bytes: u64, drops: u64) {
        self.packets += packets;
        self.bytes += bytes;
        self.errors += drops;
    }

    fn lost_current(&self) -> u64 {
        if !self.started {
            return 0;
        }
        let expected = u64::from(self.ext_max_seq.wrapping_sub(self.base_seq)) + 1;
        expected.saturating_sub(self.received)
    }

    /// Packets missing from the sequence so far (RFC 3550 A.3, cumulative,
    /// never negative: duplicates do not offset losses).
    pub fn lost(&self) -> u64 {
        self.lost_before + self.lost_current()
    }

    /// Packets expected from the sequence numbers seen.
    pub fn expected(&self) -> u64 {
        self.lost() + self.rtp_received()
    }

    /// RTP packets received (all SSRCs).
    pub fn rtp_received(&self) -> u64 {
        self.packets - self.rtcp_packets
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u64 {
        self.jitter_q4 >> 4
    }

    /// Interarrival jitter in microseconds for a given clock rate.
    pub fn jitter_us(&self, clock_rate: u32) -> u64 {
        self.jitter() * 1_000_000 / u64::from(clock_rate.max(1))
    }

    /// Estimated MOS (1.0–4.5) from the E-model: G.711 with packet-loss
    /// concealment (Ie = 0, Bpl = 25.1), one-way delay taken as half the
    /// RTCP round trip plus a jitter buffer of twice the jitter.
    pub fn mos(&self, clock_rate: u32) -> f64 {
        let expected = self.expected();
        let loss_pct = if expected == 0 {
            0.0
        } else {
            100.0 * self.lost() as f64 / expected as f64
        };
        let delay_ms =
            f64::from(self.rtt_us) / 2000.0 + 2.0 * self.jitter_us(clock_rate) as f64 / 1000.0;
        mos_from(loss_pct, delay_ms)
    }
}

/// E-model (G.107) R-factor to MOS for G.711 with PLC.
pub fn mos_from(loss_pct: f64, delay_ms: f64) -> f64 {
    let r0 = 93.2;
    // Delay impairment Id (simplified G.107 form, Cole & Rosenbluth).
    let id = 0.024 * delay_ms
        + if delay_ms > 177.3 {
            0.11 * (delay_ms - 177.3)
        } else {
            0.0
        };
    // Effective equipment impairment: Ie = 0 for G.711, Bpl = 25.1 with PLC.
    let ie_eff = 95.0 * loss_pct / (loss_pct + 25.1);
    let r = (r0 - id - ie_eff).clamp(0.0, 100.0);
    let mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6;
    mos.clamp(1.0, 4.5)
}

#[cfg(test)]
mod test {
    use super::*;

    fn feed(s: &mut LegStats, seqs: &[u16]) {
        // Constant transit: arrival = timestamp + 1000 units.
        for &q in seqs {
            let ts = u32::from(q).wrapping_mul(160);
            s.on_rtp(q, ts, 7, 172, u64::from(ts) + 1000);
        }
    }

    #[test]
    fn counts_gaps_as_loss() {
        let mut s = LegStats::default();
        feed(&mut s, &[1, 2, 3, 5, 6, 9]);
        assert_eq!(s.rtp_received(), 6);
        assert_eq!(s.lost(), 3);
        assert_eq!(s.expected(), 9);
    }

    #[test]
    fn sequence_wrap_is_not_loss() {
        let mut s = LegStats::default();
        feed(&mut s, &[65533, 65534, 65535, 0, 1, 2]);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.expected(), 6);
    }

    #[test]
    fn reordering_counted_not_lost() {
        let mut s = LegStats::default();
        feed(&mut s, &[1, 3, 2, 4]);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.reordered, 1);
    }

    #[test]
    fn ssrc_change_restarts_sequence() {
        let mut s = LegStats::default();
        feed(&mut s, &[10, 11, 13]);
        s.on_rtp(5000, 0, 8, 172, 0);
        s.on_rtp(5001, 160, 8, 172, 160);
        assert_eq!(s.ssrc_changes, 1);
        assert_eq!(s.lost(), 1);
    }

    #[test]
    fn jitter_follows_a8() {
        let mut s = LegStats::default();
        // Transit alternates by 80 units: the estimate converges to 80.
        for i in 0..2000u32 {
            let ts = i * 160;
            let arrival = u64::from(ts) + if i % 2 == 0 { 0 } else { 80 };
            s.on_rtp(i as u16, ts, 1, 172, arrival);
        }
        let j = s.jitter();
        assert!((75..=80).contains(&j), "jitter {j}");
        assert_eq!(s.jitter_us(8000), j * 125);
        let mut still = LegStats::default();
        feed(&mut still, &[1, 2, 3, 4]);
        assert_eq!(still.jitter(), 0);
    }

    #[test]
    fn mos_range() {
        assert!(mos_from(0.0, 0.0) > 4.3);
        assert!(mos_from(5.0, 20.0) < mos_from(1.0, 20.0));
        assert!(mos_from(100.0, 500.0) >= 1.0);
    }
}
