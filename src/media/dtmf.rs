//! RFC 4733 telephone-event DTMF detection for one received stream (SPEC
//! F-M6, call flow 2's "press 1 to confirm").
//!
//! A key press arrives as a series of RTP packets with one timestamp (the
//! event's start): a first packet, updates with a growing duration, and an
//! end packet (E bit) sent three times (RFC 4733 §2.5.1.4). Any of them may
//! be lost, repeated or reordered. [`DtmfDetector::feed`] reports each press
//! exactly once:
//! - on the first packet of the event that has the E bit;
//! - or, if every end packet was lost, when the next event starts (a newer
//!   timestamp) — or at [`DtmfDetector::flush`] when the call stops.
//!
//! Packets of an event already reported and packets older than the newest
//! event (by RTP timestamp order, RFC 3550 §5.1) are dropped silently.
//! Malformed packets, other payload types and non-DTMF events (codes above
//! 15: flash, tones) are counted in [`DtmfStats`] and ignored, never an
//! error.
//!
//! What this does not do: no in-band (audio) DTMF detection, no RFC 2198
//! redundancy unpacking, no SIP INFO. Segments of a key held longer than
//! 8 s (RFC 4733 §2.5.1.3) are joined when a segment starts exactly where
//! the previous one ended.

use super::rtp::RtpHeader;

/// Length of the telephone-event payload (RFC 4733 §2.3).
const EVENT_PAYLOAD_LEN: usize = 4;

/// One key press.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtmfDigit {
    /// `0`-`9`, `*`, `#` or `A`-`D` (RFC 4733 §3.2 events 0-15).
    pub digit: char,
    /// How long the key was held, in RTP timestamp units (8 kHz: 1/8 ms);
    /// the longest duration seen, saturating at `u16::MAX`.
    pub duration_samples: u16,
    /// Power level of the tone in -dBm0 (0 loudest, 63 quietest), from the
    /// last packet seen.
    pub volume: u8,
}

/// What the detector dropped, for the call's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DtmfStats {
    /// Not parseable as RTP, or a payload shorter than 4 bytes.
    pub malformed: u64,
    /// RTP with another payload type (audio, comfort noise) fed here.
    pub wrong_payload_type: u64,
    /// Telephone events that are not DTMF keys (codes above 15).
    pub other_events: u64,
    /// Packets older than the newest event (late or reordered).
    pub stale: u64,
    /// Packets of an event that was already reported (redundant end
    /// packets, retransmissions).
    pub duplicates: u64,
    /// Key presses reported.
    pub digits: u64,
}

/// The DTMF event being received.
#[derive(Clone, Copy, Debug)]
struct Event {
    ssrc: u32,
    /// RTP timestamp of the current segment (the event's start, or of the
    /// segment for events longer than 0xFFFF units).
    timestamp: u32,
    code: u8,
    /// Longest duration seen in the current segment.
    segment_duration: u16,
    /// Durations of earlier segments of the same press.
    earlier: u32,
    volume: u8,
    ended: bool,
    reported: bool,
}

impl Event {
    fn digit(&self) -> DtmfDigit {
        let total = self.earlier + u32::from(self.segment_duration);
        DtmfDigit {
            // Only DTMF codes become events; see `dtmf_char`.
            digit: dtmf_char(self.code).expect("event holds a DTMF code"),
            duration_samples: u16::try_from(total).unwrap_or(u16::MAX),
            volume: self.volume,
        }
    }
}

/// Detects RFC 4733 DTMF key presses in one stream's packets.
#[derive(Clone, Debug)]
pub struct DtmfDetector {
    payload_type: u8,
    /// SSRC and timestamp of the newest event seen, DTMF or not: anything
    /// older is stale.
    newest: Option<(u32, u32)>,
    /// The newest event, when it is a DTMF key.
    current: Option<Event>,
    stats: DtmfStats,
}

impl DtmfDetector {
    /// A detector for telephone-event packets sent with `payload_type` (the
    /// dynamic type negotiated in SDP, e.g. 101).
    pub fn new(payload_type: u8) -> DtmfDetector {
        DtmfDetector {
            payload_type,
            newest: None,
            current: None,
            stats: DtmfStats::default(),
        }
    }

    /// Take one received RTP packet (plain, after SRTP unprotect) and return
    /// a key press when this packet completes one. Never fails: anything
    /// unusable is counted in [`stats`](Self::stats) and dropped.
    pub fn feed(&mut self, rtp: &[u8]) -> Option<DtmfDigit> {
        let Ok(h) = RtpHeader::parse(rtp) else {
            self.stats.malformed += 1;
            return None;
        };
        if h.payload_type != self.payload_type {
            self.stats.wrong_payload_type += 1;
            return None;
        }
        let Some(p) = rtp
            .get(h.header_len..h.header_len + h.payload_len)
            .filter(|p| p.len() >= EVENT_PAYLOAD_LEN)
        else {
            self.stats.malformed += 1;
            return None;
        };
        // RFC 4733 §2.3: event (8), E (1), R (1), volume (6), duration (16).
        let code = p[0];
        let end = p[1] & 0x80 != 0;
        let volume = p[1] & 0x3f;
        let duration = u16::from_be_bytes([p[2], p[3]]);

        if let Some((ssrc, ts)) = self.newest {
            if ssrc == h.ssrc && ts == h.timestamp {
                return self.same_event(code, end, volume, duration);
            }
            if ssrc == h.ssrc && (h.timestamp.wrapping_sub(ts) as i32) < 0 {
                self.stats.stale += 1;
                return None;
            }
        }
        self.newest = Some((h.ssrc, h.timestamp));

        // A later segment of a key held for more than 0xFFFF units
        // (§2.5.1.3): same key, no end yet, starting where the last ended.
        if let Some(cur) = self.current.as_mut() {
            let segment_end = cur.timestamp.wrapping_add(u32::from(cur.segment_duration));
            if cur.ssrc == h.ssrc
                && cur.code == code
                && !cur.ended
                && !cur.reported
                && segment_end == h.timestamp
            {
                cur.earlier += u32::from(cur.segment_duration);
                cur.timestamp = h.timestamp;
                cur.segment_duration = duration;
                cur.volume = volume;
                cur.ended = end;
                return self.report_if_ended();
            }
        }

        // A new event: whatever came before is over.
        let previous = self
            .current
            .take()
            .filter(|e| !e.reported)
            .map(|e| e.digit());
        if dtmf_char(code).is_none() {
            self.stats.other_events += 1;
            return self.reported(previous);
        }
        self.current = Some(Event {
            ssrc: h.ssrc,
            timestamp: h.timestamp,
            code,
            segment_duration: duration,
            earlier: 0,
            volume,
            ended: end,
            reported: false,
        });
        if previous.is_some() {
            // One report per call: an event that already ended is reported
            // on its next (redundant end) packet or at flush.
            return self.reported(previous);
        }
        self.report_if_ended()
    }

    /// Report the key still being held or whose end packets were all lost,
    /// when the stream stops (hang-up, timeout). `None` if there is none or
    /// it was reported already.
    pub fn flush(&mut self) -> Option<DtmfDigit> {
        let cur = self.current.as_mut().filter(|e| !e.reported)?;
        cur.reported = true;
        let digit = cur.digit();
        self.reported(Some(digit))
    }

    /// What was dropped and reported so far.
    pub fn stats(&self) -> DtmfStats {
        self.stats
    }

    /// The payload type this detector accepts.
    pub fn payload_type(&self) -> u8 {
        self.payload_type
    }

    /// Another packet of the newest event.
    fn same_event(&mut self, code: u8, end: bool, volume: u8, duration: u16) -> Option<DtmfDigit> {
        let Some(cur) = self.current.as_mut() else {
            // The newest event is not a DTMF key.
            self.stats.other_events += 1;
            return None;
        };
        if cur.reported {
            self.stats.duplicates += 1;
            return None;
        }
        if cur.code != code {
            // One timestamp, two keys: a broken sender. Keep the first.
            self.stats.malformed += 1;
            return None;
        }
        cur.segment_duration = cur.segment_duration.max(duration);
        cur.volume = volume;
        cur.ended |= end;
        self.report_if_ended()
    }

    fn report_if_ended(&mut self) -> Option<DtmfDigit> {
        let cur = self.current.as_mut().filter(|e| e.ended && !e.reported)?;
        cur.reported = true;
        let digit = cur.digit();
        self.reported(Some(digit))
    }

    fn reported(&mut self, digit: Option<DtmfDigit>) -> Option<DtmfDigit> {
        if digit.is_some() {
            self.stats.digits += 1;
        }
        digit
    }
}

/// The key of a DTMF event code (RFC 4733 §3.2, table 7).
fn dtmf_char(code: u8) -> Option<char> {
    Some(match code {
        0..=9 => char::from(b'0' + code),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + code - 12),
        _ => return None,
    })
}

#[cfg(test)]
mod test {
    use super::*;

    const PT: u8 = 101;
    const SSRC: u32 = 0x0bad_cafe;

    /// One telephone-event packet.
    fn ev(seq: u16, ts: u32, code: u8, end: bool, duration: u16) -> Vec<u8> {
        ev_pt(PT, seq, ts, code, end, duration)
    }

    fn ev_pt(pt: u8, seq: u16, ts: u32, code: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&SSRC.to_be_bytes());
        p.push(code);
        p.push((u8::from(end) << 7) | 10);
        p.extend_from_slice(&duration.to_be_bytes());
        p
    }

    /// A whole key press as a sender makes it (RFC 4733 §2.5.1): a first
    /// packet, updates every 50 ms, three end packets.
    fn press(seq0: u16, ts: u32, code: u8, updates: u16) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut seq = seq0;
        for i in 0..=updates {
            out.push(ev(seq, ts, code, false, 400 * i));
            seq += 1;
        }
        for _ in 0..3 {
            out.push(ev(seq, ts, code, true, 400 * (updates + 1)));
            seq += 1;
        }
        out
    }

    fn feed_all(d: &mut DtmfDetector, pkts: &[Vec<u8>]) -> Vec<DtmfDigit> {
        pkts.iter().filter_map(|p| d.feed(p)).collect()
    }

    #[test]
    fn press_with_three_end_packets_is_reported_once_on_first_end() {
        let mut d = DtmfDetector::new(PT);
        let pkts = press(1, 8000, 5, 3);
        for p in &pkts[..4] {
            assert_eq!(d.feed(p), None);
        }
        assert_eq!(
            d.feed(&pkts[4]),
            Some(DtmfDigit {
                digit: '5',
                duration_samples: 1600,
                volume: 10
            })
        );
        assert_eq!(d.feed(&pkts[5]), None);
        assert_eq!(d.feed(&pkts[6]), None);
        assert_eq!(d.flush(), None);
        assert_eq!(d.stats().duplicates, 2);
        assert_eq!(d.stats().digits, 1);
    }

    #[test]
    fn retransmitted_and_reordered_packets_are_not_reported_again() {
        let mut d = DtmfDetector::new(PT);
        let pkts = press(1, 8000, 1, 2);
        // End first (reordered), then the rest, then a retransmission.
        assert_eq!(d.feed(&pkts[3]).map(|x| x.digit), Some('1'));
        for p in pkts.iter().chain(pkts.iter()) {
            assert_eq!(d.feed(p), None);
        }
        assert_eq!(d.stats().digits, 1);
    }

    #[test]
    fn two_digits_back_to_back() {
        let mut d = DtmfDetector::new(PT);
        let mut pkts = press(1, 8000, 1, 2);
        pkts.extend(press(7, 8000 + 1600, 2, 2));
        let got: Vec<char> = feed_all(&mut d, &pkts).iter().map(|x| x.digit).collect();
        assert_eq!(got, ['1', '2']);
        // The same key twice is two presses (two timestamps).
        let mut pkts = press(20, 20_000, 9, 1);
        pkts.extend(press(30, 22_000, 9, 1));
        let got: Vec<char> = feed_all(&mut d, &pkts).iter().map(|x| x.digit).collect();
        assert_eq!(got, ['9', '9']);
    }

    #[test]
    fn lost_end_packets_report_when_next_event_starts_or_at_flush() {
        let mut d = DtmfDetector::new(PT);
        let first = press(1, 8000, 3, 3);
        let second = press(10, 16_000, 4, 3);
        // No end packets of '3' arrive.
        assert!(feed_all(&mut d, &first[..4]).is_empty());
        let got = d.feed(&second[0]).expect("previous press reported");
        assert_eq!((got.digit, got.duration_samples), ('3', 1200));
        let got = feed_all(&mut d, &second[1..]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].digit, '4');

        // '7' held and the call ends before any end packet.
        assert!(feed_all(&mut d, &press(30, 30_000, 7, 3)[..2]).is_empty());
        assert_eq!(d.flush().map(|x| x.digit), Some('7'));
        assert_eq!(d.flush(), None);
        assert_eq!(d.stats().digits, 3);
    }

    #[test]
    fn next_event_starting_with_its_end_is_reported_on_its_redundant_end() {
        let mut d = DtmfDetector::new(PT);
        assert!(feed_all(&mut d, &press(1, 8000, 1, 2)[..2]).is_empty());
        // Only the end packets of '2' arrive: '1' is reported first, '2' on
        // the next redundant end.
        let two = press(10, 9600, 2, 2);
        assert_eq!(d.feed(&two[3]).map(|x| x.digit), Some('1'));
        assert_eq!(d.feed(&two[4]).map(|x| x.digit), Some('2'));
        assert_eq!(d.feed(&two[5]), None);
        // Had the redundant ends been lost too, flush would report it.
        let mut d = DtmfDetector::new(PT);
        assert!(feed_all(&mut d, &press(1, 8000, 1, 2)[..2]).is_empty());
        assert_eq!(d.feed(&two[3]).map(|x| x.digit), Some('1'));
        assert_eq!(d.flush().map(|x| x.digit), Some('2'));
    }

    #[test]
    fn late_packet_of_an_older_event_is_stale() {
        let mut d = DtmfDetector::new(PT);
        let one = press(1, 8000, 1, 2);
        let two = press(10, 9600, 2, 2);
        assert_eq!(feed_all(&mut d, &one[..2]).len(), 0);
        assert_eq!(d.feed(&two[0]).map(|x| x.digit), Some('1'));
        // '1''s end arrives late: not a new press.
        assert_eq!(feed_all(&mut d, &one[3..]).len(), 0);
        assert_eq!(d.stats().stale, 3);
        assert_eq!(feed_all(&mut d, &two[1..]).len(), 1);
    }

    #[test]
    fn timestamp_wrap_is_newer_not_stale() {
        let mut d = DtmfDetector::new(PT);
        let got = feed_all(&mut d, &press(1, u32::MAX - 100, 6, 1));
        assert_eq!(got[0].digit, '6');
        let got = feed_all(&mut d, &press(10, 1500, 0, 1));
        assert_eq!(got[0].digit, '0');
        assert_eq!(d.stats().stale, 0);
    }

    #[test]
    fn all_sixteen_keys_map() {
        let mut d = DtmfDetector::new(PT);
        let mut keys = String::new();
        for code in 0..16u8 {
            let ts = 10_000 * u32::from(code);
            for p in press(u16::from(code) * 10, ts, code, 1) {
                if let Some(x) = d.feed(&p) {
                    keys.push(x.digit);
                }
            }
        }
        assert_eq!(keys, "0123456789*#ABCD");
    }

    #[test]
    fn wrong_payload_type_short_payload_and_other_events_are_counted() {
        let mut d = DtmfDetector::new(PT);
        // PCMU audio on the same port.
        let mut audio = ev_pt(0, 1, 0, 1, true, 0);
        audio.extend_from_slice(&[0xff; 156]);
        assert_eq!(d.feed(&audio), None);
        // Telephone event with a 3-byte payload.
        let short = &ev(2, 0, 1, true, 800)[..15];
        assert_eq!(d.feed(short), None);
        // Flash (16) and a tone (code 70): ignored, but they end '5'.
        assert!(feed_all(&mut d, &press(3, 100, 5, 2)[..2]).is_empty());
        assert_eq!(
            d.feed(&ev(9, 900, 16, false, 0)).map(|x| x.digit),
            Some('5')
        );
        assert_eq!(d.feed(&ev(10, 900, 16, true, 800)), None);
        assert_eq!(d.feed(&ev(11, 2000, 70, true, 800)), None);
        let s = d.stats();
        assert_eq!(s.wrong_payload_type, 1);
        assert_eq!(s.malformed, 1);
        assert_eq!(s.other_events, 3);
        assert_eq!(s.digits, 1);
    }

    #[test]
    fn long_press_segments_are_one_press() {
        let mut d = DtmfDetector::new(PT);
        let ts = 1000;
        assert_eq!(d.feed(&ev(1, ts, 8, false, 0)), None);
        assert_eq!(d.feed(&ev(2, ts, 8, false, 0xffff)), None);
        // The next segment starts where the first one ended.
        let ts2 = ts + 0xffff;
        assert_eq!(d.feed(&ev(3, ts2, 8, false, 8000)), None);
        let got = d.feed(&ev(4, ts2, 8, true, 16_000)).expect("one press");
        assert_eq!(got.digit, '8');
        assert_eq!(got.duration_samples, u16::MAX);
        assert_eq!(d.feed(&ev(5, ts2, 8, true, 16_000)), None);
        assert_eq!(d.stats().digits, 1);
    }

    #[test]
    fn garbage_never_panics() {
        let mut d = DtmfDetector::new(PT);
        // Every prefix of valid packets, header bits flipped, and a cheap
        // deterministic pseudo-random stream of byte strings.
        let base = ev(1, 8000, 1, true, 800);
        for n in 0..=base.len() {
            let _ = d.feed(&base[..n]);
        }
        for bit in 0..base.len() * 8 {
            let mut p = base.clone();
            p[bit / 8] ^= 1 << (bit % 8);
            let _ = d.feed(&p);
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut p: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8).collect();
            if len >= 2 && x & 1 == 0 {
                p[0] = 0x80 | (p[0] & 0x3f);
                p[1] = PT | (p[1] & 0x80);
            }
            let _ = d.feed(&p);
        }
        let _ = d.flush();
    }
}
