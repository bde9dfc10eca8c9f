//! Per-SSRC SRTP/SRTCP state: rollover counter (ROC) estimation, the
//! 64-packet replay window and the bounded, least-recently-used table of
//! streams a context keeps.
//!
//! RFC 3711 §3.3.1 and Appendix A define how a receiver guesses the 48-bit
//! packet index `i = 2^16 * ROC + SEQ` from a 16-bit sequence number; §3.3.2
//! the replay list. The same window type serves the SRTCP index (§3.4),
//! which is sent explicitly and needs no estimate.

/// Width of the replay window, in packets. RFC 3711 §3.3.2 asks for at
/// least 64; a `u64` bitmap gives exactly that with one shift per packet.
pub const REPLAY_WINDOW_LEN: u64 = 64;

/// Streams (SSRCs) one context tracks. A relay leg normally carries one
/// SSRC per direction, a few more across re-INVITEs or with RTX/FEC; eight
/// covers that, and a linear scan over eight entries is cheaper than a
/// hash. Past the limit the least recently used stream is evicted, which
/// forgets its ROC and replay window (a reappearing SSRC starts over).
pub const STREAMS_MAX: usize = 8;

/// Largest rollover counter: the packet index is 48 bits (RFC 3711 §3.2.1).
const ROC_MAX: u64 = u32::MAX as u64;

/// Half the sequence number space, the pivot of RFC 3711 Appendix A.
const SEQ_HALF: i64 = 1 << 15;

/// Outcome of checking an index against a window, before authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowCheck {
    /// Not seen and inside (or ahead of) the window.
    Fresh,
    /// Seen before.
    Replayed,
    /// Behind the window: cannot tell, so reject (RFC 3711 §3.3.2).
    TooOld,
}

/// Highest index seen and the bitmap of the [`REPLAY_WINDOW_LEN`] indices at
/// and below it (bit `k` set = index `highest - k` was accepted).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayWindow {
    initialized: bool,
    highest: u64,
    bitmap: u64,
}

impl ReplayWindow {
    /// The highest index accepted so far (`None` before the first packet).
    pub(crate) fn highest(&self) -> Option<u64> {
        self.initialized.then_some(self.highest)
    }

    /// RFC 3711 Appendix A: the packet index for sequence number `seq`, given
    /// the highest index seen. Returns `None` when the guess needs a ROC past
    /// 2^32 - 1 (the key is exhausted).
    ///
    /// Before the first packet, and while the guess would need a negative ROC
    /// (a sequence number far "behind" the first ones), the ROC is 0: this is
    /// what libsrtp does and what the RFC means, as no packet can precede
    /// index 0.
    pub(crate) fn estimate_index(&self, seq: u16) -> Option<u64> {
        if !self.initialized {
            return Some(u64::from(seq));
        }
        let roc = (self.highest >> 16) as i64;
        let s_l = i64::from(self.highest as u16);
        let seq = i64::from(seq);
        let v = if s_l < SEQ_HALF {
            if seq - s_l > SEQ_HALF {
                roc - 1
            } else {
                roc
            }
        } else if s_l - SEQ_HALF > seq {
            roc + 1
        } else {
            roc
        };
        let v = v.max(0) as u64;
        if v > ROC_MAX {
            return None;
        }
        Some((v << 16) | seq as u64)
    }

    /// Replay check (RFC 3711 §3.3.2), without changing the window.
    pub(crate) fn check(&self, index: u64) -> WindowCheck {
        if !self.initialized || index > self.highest {
            return WindowCheck::Fresh;
        }
        let behind = self.highest - index;
        if behind >= REPLAY_WINDOW_LEN {
            WindowCheck::TooOld
        } else if self.bitmap & (1 << behind) != 0 {
            WindowCheck::Replayed
        } else {
            WindowCheck::Fresh
        }
    }

    /// Records `index` as accepted. Call only after [`Self::check`] said
    /// [`WindowCheck::Fresh`] and the packet authenticated.
    pub(crate) fn accept(&mut self, index: u64) {
        debug_assert_eq!(self.check(index), WindowCheck::Fresh);
        if !self.initialized {
            self.initialized = true;
            self.highest = index;
            self.bitmap = 1;
        } else if index > self.highest {
            let ahead = index - self.highest;
            self.bitmap = if ahead >= REPLAY_WINDOW_LEN {
                1
            } else {
                (self.bitmap << ahead) | 1
            };
            self.highest = index;
        } else {
            self.bitmap |= 1 << (self.highest - index);
        }
    }
}

/// Everything a context remembers about one SSRC. A context is normally
/// used in one direction, but keeps send and receive state apart so that a
/// context used both ways (tests, loopback) stays correct.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stream {
    /// SRTP packet indices this side protected (duplicates are refused, as
    /// libsrtp does without `allow_repeat_tx`: re-encrypting an index with
    /// different content would reuse keystream).
    pub(crate) rtp_tx: ReplayWindow,
    /// SRTP packet indices received and authenticated.
    pub(crate) rtp_rx: ReplayWindow,
    /// Last SRTCP index sent (0 = none yet; the first packet carries 1, as
    /// libsrtp's does).
    pub(crate) rtcp_tx_index: u32,
    /// SRTCP indices received and authenticated.
    pub(crate) rtcp_rx: ReplayWindow,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    used: bool,
    ssrc: u32,
    /// Context-wide use counter at the last use: the smallest is evicted.
    last_use: u64,
    stream: Stream,
}

/// Fixed-size table of [`Stream`]s keyed by SSRC, least recently used
/// evicted. No allocation after construction.
#[derive(Clone, Debug)]
pub(crate) struct StreamTable {
    slots: [Slot; STREAMS_MAX],
    uses: u64,
}

impl Default for StreamTable {
    fn default() -> Self {
        Self {
            slots: [Slot::default(); STREAMS_MAX],
            uses: 0,
        }
    }
}

impl StreamTable {
    /// The stream for `ssrc` if it is known, without touching recency: used on
    /// receive before a packet is authenticated, so that forged packets can
    /// neither create nor refresh entries.
    pub(crate) fn peek(&self, ssrc: u32) -> Option<&Stream> {
        self.slots
            .iter()
            .find(|s| s.used && s.ssrc == ssrc)
            .map(|s| &s.stream)
    }

    /// Number of streams held.
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    /// The stream for `ssrc`, created (evicting the least recently used one
    /// when full) if new, and marked as just used.
    pub(crate) fn get_or_insert(&mut self, ssrc: u32) -> &mut Stream {
        self.uses += 1;
        let uses = self.uses;
        let mut found = None;
        let mut victim = 0;
        for (i, s) in self.slots.iter().enumerate() {
            if s.used && s.ssrc == ssrc {
                found = Some(i);
                break;
            }
            let v = &self.slots[victim];
            // Prefer a free slot, then the oldest.
            if v.used && (!s.used || s.last_use < v.last_use) {
                victim = i;
            }
        }
        let i = match found {
            Some(i) => i,
            None => {
                self.slots[victim] = Slot {
                    used: true,
                    ssrc,
                    last_use: 0,
                    stream: Stream::default(),
                };
                victim
            }
        };
        let slot = &mut self.slots[i];
        assert!(slot.used && slot.ssrc == ssrc);
        slot.last_use = uses;
        &mut slot.stream
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn window_at(index: u64) -> ReplayWindow {
        let mut w = ReplayWindow::default();
        w.accept(index);
        w
    }

    #[test]
    fn first_packet_has_roc_zero() {
        let w = ReplayWindow::default();
        assert_eq!(w.estimate_index(65530), Some(65530));
        assert_eq!(w.estimate_index(0), Some(0));
    }

    #[test]
    fn roc_increments_across_wrap() {
        let w = window_at(65535);
        assert_eq!(w.estimate_index(0), Some(1 << 16));
        assert_eq!(w.estimate_index(10), Some((1 << 16) | 10));
        // A late packet from before the wrap keeps the old ROC.
        let w = window_at((1 << 16) | 2);
        assert_eq!(w.estimate_index(65534), Some(65534));
        assert_eq!(w.estimate_index(3), Some((1 << 16) | 3));
    }

    #[test]
    fn no_negative_roc() {
        // Highest seq 5 with ROC 0: seq 65000 is a forward jump, not ROC -1.
        let w = window_at(5);
        assert_eq!(w.estimate_index(65000), Some(65000));
    }

    #[test]
    fn roc_exhaustion() {
        let w = window_at((ROC_MAX << 16) | 65535);
        assert_eq!(w.estimate_index(0), None);
        assert_eq!(w.estimate_index(65534), Some((ROC_MAX << 16) | 65534));
    }

    #[test]
    fn window_replay_and_age() {
        let mut w = window_at(100);
        assert_eq!(w.check(100), WindowCheck::Replayed);
        assert_eq!(w.check(99), WindowCheck::Fresh);
        assert_eq!(w.check(37), WindowCheck::Fresh);
        assert_eq!(w.check(36), WindowCheck::TooOld);
        w.accept(99);
        assert_eq!(w.check(99), WindowCheck::Replayed);
        w.accept(110);
        assert_eq!(w.check(100), WindowCheck::Replayed);
        assert_eq!(w.check(99), WindowCheck::Replayed);
        assert_eq!(w.check(101), WindowCheck::Fresh);
        w.accept(1000);
        assert_eq!(w.check(110), WindowCheck::TooOld);
        assert_eq!(w.check(999), WindowCheck::Fresh);
        assert_eq!(w.highest(), Some(1000));
    }

    #[test]
    fn table_evicts_least_recently_used() {
        let mut t = StreamTable::default();
        for ssrc in 0..STREAMS_MAX as u32 {
            t.get_or_insert(ssrc).rtcp_tx_index = ssrc + 100;
        }
        assert_eq!(t.len(), STREAMS_MAX);
        // Touch 0 so that 1 becomes the oldest.
        t.get_or_insert(0);
        t.get_or_insert(999);
        assert_eq!(t.len(), STREAMS_MAX);
        assert!(t.peek(1).is_none());
        assert_eq!(t.peek(0).map(|s| s.rtcp_tx_index), Some(100));
        assert_eq!(t.peek(999).map(|s| s.rtcp_tx_index), Some(0));
    }
}
