//! Prompt playback as an RTP sender (SPEC F-M6): a sans-IO [`Player`] that
//! turns queued G.711 clips and silences into 20 ms RTP packets (RFC 3550
//! §5.1, RFC 3551 §4.5.14 for PCMU/PCMA framing).
//!
//! The caller owns the clock and the socket. It asks [`Player::next_deadline`]
//! when to wake up, and then drains [`Player::poll_packet`] with the current
//! time until it returns `None`; each call writes at most one packet.
//!
//! Timing rules:
//! - Packets are due on a 20 ms grid; sequence numbers go up by one and RTP
//!   timestamps by 160 per packet within a talk spurt.
//! - A caller that wakes up late gets the packets it missed, but at most
//!   [`LATE_BURST_MAX`] at once: the grid then skips ahead. No audio is
//!   dropped (a code read out must stay whole); the rest of the prompt is
//!   simply later, and the timestamps stay continuous so the receiver's
//!   jitter buffer sees one delay step, not a hole.
//! - When the queue runs dry and a whole slot passes with nothing to send,
//!   the talk spurt ends. The next packet opens a new one: marker bit set
//!   (RFC 3551 §4.1) and the timestamp advanced by the wall time that
//!   passed, so timestamps keep following the clock across pauses.
//!
//! [`PlayItem::Silence`] is sent as packets of the law's silence code, not
//! as a gap, so the gaps between read-out digits keep the stream (and any
//! NAT binding or media timeout on the far side) alive.
//!
//! What this does not do: no mixing, no RTCP, no SRTP (the relay protects
//! what it sends), no codec other than G.711.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::prompt::{Law, PromptLibrary, FRAME_BYTES};
use super::rtp::RTP_HEADER_LEN;

/// One packet's duration.
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// RTP timestamp units per packet: 20 ms at 8 kHz.
pub const SAMPLES_PER_PACKET: u32 = 160;

/// Bytes of every packet the player writes: 12-byte header, 160 bytes of
/// G.711.
pub const PACKET_LEN: usize = RTP_HEADER_LEN + FRAME_BYTES;

/// Most packets sent back to back for one late wake-up. Three is 60 ms of
/// audio: enough to absorb a shard loop that was busy for a couple of
/// slots, small enough that the far side's jitter buffer (typically 40 to
/// 100 ms) does not overflow. Later than that, the grid skips ahead.
pub const LATE_BURST_MAX: u32 = 3;

/// Items one player queues: the longest flow (a code of a dozen digits
/// with gaps, read twice, with intro and outro) needs about 55.
pub const QUEUE_MAX: usize = 64;

/// Longest single [`PlayItem::Silence`]: a pause longer than this is not
/// part of a prompt but a stalled flow, which should stop the player.
pub const SILENCE_MAX: Duration = Duration::from_secs(60);

/// Something to play.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlayItem {
    /// G.711 bytes in the player's law, sent 160 per packet; a short last
    /// packet is padded with silence.
    Clip(Arc<[u8]>),
    /// Silence, rounded up to whole 20 ms packets.
    Silence(Duration),
}

/// Why an item could not be queued. The queue is unchanged on error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlayError {
    /// The queue would hold more than [`QUEUE_MAX`] items.
    #[error("prompt queue full ({QUEUE_MAX} items)")]
    QueueFull,
    /// A silence longer than [`SILENCE_MAX`].
    #[error("silence longer than {SILENCE_MAX:?}")]
    SilenceTooLong,
    /// A digit string holds something other than `0`-`9`.
    #[error("not a digit: {0:?}")]
    NotADigit(char),
    /// The library has no such clip.
    #[error("no prompt {lang}/{name} in {law:?}")]
    MissingClip {
        /// Language asked for.
        lang: String,
        /// Clip name.
        name: String,
        /// Law asked for.
        law: Law,
    },
    /// Clips in one law asked for a player that sends the other law's
    /// static payload type.
    #[error("{law:?} clips on a player sending payload type {payload_type}")]
    LawMismatch {
        /// Law asked for.
        law: Law,
        /// The player's payload type.
        payload_type: u8,
    },
}

/// Clip names of the spoken digits, by value.
const DIGIT_CLIPS: [&str; 10] = [
    "digit-0", "digit-1", "digit-2", "digit-3", "digit-4", "digit-5", "digit-6", "digit-7",
    "digit-8", "digit-9",
];

/// A paced RTP sender of queued prompts for one stream (one SSRC).
#[derive(Debug)]
pub struct Player {
    ssrc: u32,
    payload_type: u8,
    silence: u8,
    /// Sequence number of the next packet.
    seq: u16,
    /// RTP timestamp of the next packet.
    ts: u32,
    /// The slot of the next packet.
    next_at: Instant,
    queue: VecDeque<PlayItem>,
    /// Progress in `queue.front()`: bytes sent of a clip, packets sent of a
    /// silence.
    pos: usize,
    /// The last slot carried a packet, so the next one may continue the
    /// talk spurt.
    in_spurt: bool,
    /// The next packet must carry the marker bit whatever its timing
    /// (first packet, or after [`Player::clear`]).
    marker_pending: bool,
    packets_sent: u64,
    slots_skipped: u64,
}

impl Player {
    /// A player whose first packet may go at `start` with sequence number
    /// `seq0` and timestamp `ts0` (`ts0` is the RTP time of `start`). The
    /// silence code is µ-law's unless `payload_type` is 8 (PCMA).
    pub fn new(ssrc: u32, payload_type: u8, seq0: u16, ts0: u32, start: Instant) -> Player {
        assert!(payload_type < 128, "RTP payload types are 7 bits");
        let law = Law::from_payload_type(payload_type).unwrap_or(Law::Mu);
        Player {
            ssrc,
            payload_type,
            silence: law.silence_byte(),
            seq: seq0,
            ts: ts0,
            next_at: start,
            queue: VecDeque::with_capacity(QUEUE_MAX),
            pos: 0,
            in_spurt: false,
            marker_pending: true,
            packets_sent: 0,
            slots_skipped: 0,
        }
    }

    /// Queue one item after those already queued. Empty clips and zero
    /// silences are accepted and play as nothing.
    pub fn enqueue(&mut self, item: PlayItem) -> Result<(), PlayError> {
        if let PlayItem::Silence(d) = &item {
            if *d > SILENCE_MAX {
                return Err(PlayError::SilenceTooLong);
            }
        }
        if item_packets(&item) == 0 {
            return Ok(());
        }
        if self.queue.len() >= QUEUE_MAX {
            return Err(PlayError::QueueFull);
        }
        self.queue.push_back(item);
        debug_assert!(self.queue.len() <= QUEUE_MAX);
        Ok(())
    }

    /// Queue `digits` read out one by one from `lib`'s `digit-0` ..
    /// `digit-9` clips in `lang` and `law`, with `gap` of silence between
    /// two digits (none after the last). All or nothing: on error the queue
    /// is unchanged.
    pub fn enqueue_digits(
        &mut self,
        lib: &PromptLibrary,
        lang: &str,
        law: Law,
        digits: &str,
        gap: Duration,
    ) -> Result<(), PlayError> {
        if Law::from_payload_type(self.payload_type).is_some_and(|l| l != law) {
            return Err(PlayError::LawMismatch {
                law,
                payload_type: self.payload_type,
            });
        }
        if gap > SILENCE_MAX {
            return Err(PlayError::SilenceTooLong);
        }
        let mut items = 0;
        for c in digits.chars() {
            let Some(d) = c.to_digit(10) else {
                return Err(PlayError::NotADigit(c));
            };
            let name = DIGIT_CLIPS[d as usize];
            if !lib.contains(lang, name, law) {
                return Err(PlayError::MissingClip {
                    lang: lang.to_owned(),
                    name: name.to_owned(),
                    law,
                });
            }
            items += if items == 0 || gap.is_zero() { 1 } else { 2 };
        }
        if self.queue.len() + items > QUEUE_MAX {
            return Err(PlayError::QueueFull);
        }
        for (i, c) in digits.chars().enumerate() {
            if i > 0 {
                self.enqueue(PlayItem::Silence(gap))?;
            }
            // Both checked above: a digit, and a clip the library has.
            let d = c.to_digit(10).expect("checked digit") as usize;
            let clip = lib
                .clip(lang, DIGIT_CLIPS[d], law)
                .expect("checked clip present");
            self.enqueue(PlayItem::Clip(clip))?;
        }
        Ok(())
    }

    /// Write the next packet into `buf` if its slot has come at `now`, and
    /// return its length ([`PACKET_LEN`]). Call again until `None`: a late
    /// caller gets up to [`LATE_BURST_MAX`] packets in a row.
    ///
    /// `buf` must hold [`PACKET_LEN`] bytes (a programmer error otherwise).
    pub fn poll_packet(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        assert!(buf.len() >= PACKET_LEN, "buffer below one packet");
        if self.queue.is_empty() || now < self.next_at {
            return None;
        }
        let late = now - self.next_at;
        let mut marker = self.marker_pending;
        if !self.in_spurt && late >= PACKET_INTERVAL {
            // A whole slot went by with nothing to send: a new talk spurt,
            // starting now, its timestamp as far on as the clock went.
            self.ts = self.ts.wrapping_add(samples_in(late));
            self.next_at = now;
            marker = true;
        } else {
            let due = slots_in(late).saturating_add(1);
            if due > u64::from(LATE_BURST_MAX) {
                let skip = due - u64::from(LATE_BURST_MAX);
                self.next_at += interval_times(skip);
                self.slots_skipped += skip;
            }
        }
        self.write_packet(marker, buf);
        self.marker_pending = false;
        self.in_spurt = true;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(SAMPLES_PER_PACKET);
        self.next_at += PACKET_INTERVAL;
        self.packets_sent += 1;
        if self.queue.is_empty() {
            // The spurt ends unless something is queued before the next
            // slot is a whole interval late.
            self.in_spurt = false;
        }
        Some(PACKET_LEN)
    }

    /// When [`poll_packet`](Self::poll_packet) next has something to send;
    /// `None` while idle. May be in the past (send now).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            None
        } else {
            Some(self.next_at)
        }
    }

    /// Whether nothing is queued.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
    }

    /// Drop everything queued, including the rest of the item playing. The
    /// next packet opens a new talk spurt (marker bit).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.pos = 0;
        self.in_spurt = false;
        self.marker_pending = true;
    }

    /// Items queued, the one playing included.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Packets written so far.
    pub fn packets_sent(&self) -> u64 {
        self.packets_sent
    }

    /// Slots skipped because the caller polled more than
    /// [`LATE_BURST_MAX`] slots late.
    pub fn slots_skipped(&self) -> u64 {
        self.slots_skipped
    }

    /// Sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.seq
    }

    /// The synchronisation source this player sends as.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Fill `buf` with the header and the next 160 bytes of the front item,
    /// and move past them (popping the item when done).
    fn write_packet(&mut self, marker: bool, buf: &mut [u8]) {
        buf[0] = 0x80; // V=2, no padding, no extension, no CSRC.
        buf[1] = (u8::from(marker) << 7) | self.payload_type;
        buf[2..4].copy_from_slice(&self.seq.to_be_bytes());
        buf[4..8].copy_from_slice(&self.ts.to_be_bytes());
        buf[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let payload = &mut buf[RTP_HEADER_LEN..PACKET_LEN];
        // Invariant: the queue never holds an item with nothing to send.
        let front = self.queue.front().expect("poll_packet checked non-empty");
        let done = match front {
            PlayItem::Clip(clip) => {
                let chunk = &clip[self.pos..clip.len().min(self.pos + FRAME_BYTES)];
                payload[..chunk.len()].copy_from_slice(chunk);
                payload[chunk.len()..].fill(self.silence);
                self.pos += FRAME_BYTES;
                self.pos >= clip.len()
            }
            PlayItem::Silence(_) => {
                payload.fill(self.silence);
                self.pos += 1;
                self.pos as u64 >= item_packets(front)
            }
        };
        if done {
            self.queue.pop_front();
            self.pos = 0;
        }
    }
}

/// Packets an item takes: clip bytes and silences rounded up to whole
/// packets.
fn item_packets(item: &PlayItem) -> u64 {
    match item {
        PlayItem::Clip(c) => c.len().div_ceil(FRAME_BYTES) as u64,
        PlayItem::Silence(d) => {
            let slot = PACKET_INTERVAL.as_nanos();
            d.as_nanos().div_ceil(slot) as u64
        }
    }
}

/// Whole packet intervals in `d`.
fn slots_in(d: Duration) -> u64 {
    (d.as_nanos() / PACKET_INTERVAL.as_nanos()) as u64
}

/// `n` packet intervals (`n` is at most a few minutes' worth in practice;
/// saturates rather than overflowing).
fn interval_times(n: u64) -> Duration {
    let nanos = PACKET_INTERVAL.as_nanos() as u64;
    Duration::from_nanos(n.saturating_mul(nanos))
}

/// RTP timestamp units (8 kHz) in `d`, modulo 2^32 as RTP time wraps.
fn samples_in(d: Duration) -> u32 {
    (d.as_nanos() * 8_000 / 1_000_000_000) as u32
}

#[cfg(test)]
mod test {
    use super::super::rtp::RtpHeader;
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    struct Sent {
        at: Instant,
        header: RtpHeader,
        payload: Vec<u8>,
    }

    fn clip(packets: usize, byte: u8) -> PlayItem {
        PlayItem::Clip(Arc::from(vec![byte; packets * FRAME_BYTES]))
    }

    /// Drive `p` like a shard loop that wakes exactly at each deadline,
    /// until idle; fail if it does not go idle within `bound` packets.
    fn drive(p: &mut Player, bound: usize) -> Vec<Sent> {
        let mut out = Vec::new();
        let mut buf = [0u8; PACKET_LEN];
        while let Some(at) = p.next_deadline() {
            while let Some(n) = p.poll_packet(at, &mut buf) {
                let header = RtpHeader::parse(&buf[..n]).expect("valid RTP");
                out.push(Sent {
                    at,
                    header,
                    payload: buf[header.header_len..n].to_vec(),
                });
                assert!(out.len() <= bound, "player never went idle");
            }
        }
        out
    }

    #[test]
    fn packets_are_paced_on_exact_20ms_slots() {
        let t0 = Instant::now();
        let mut p = Player::new(0x1234_5678, 0, 65_534, 0xffff_ff00, t0);
        assert!(p.is_idle());
        assert_eq!(p.next_deadline(), None);
        p.enqueue(clip(3, 0x11)).expect("queue");
        p.enqueue(clip(2, 0x22)).expect("queue");
        assert_eq!(p.next_deadline(), Some(t0));
        let mut buf = [0u8; PACKET_LEN];
        // Not before the slot.
        assert_eq!(p.poll_packet(t0 + 19 * MS, &mut buf), Some(PACKET_LEN));
        assert_eq!(p.poll_packet(t0 + 19 * MS, &mut buf), None);
        assert_eq!(p.next_deadline(), Some(t0 + 20 * MS));
        let rest = drive(&mut p, 10);
        assert_eq!(rest.len(), 4);
        for (i, s) in rest.iter().enumerate() {
            let k = i as u32 + 1;
            assert_eq!(s.at, t0 + 20 * MS * k);
            assert_eq!(s.header.sequence, 65_534u16.wrapping_add(k as u16));
            assert_eq!(s.header.timestamp, 0xffff_ff00u32.wrapping_add(160 * k));
            assert_eq!(s.header.ssrc, 0x1234_5678);
            assert_eq!(s.header.payload_type, 0);
            assert!(!s.header.marker);
            assert_eq!(s.payload.len(), 160);
        }
        assert!(rest[..2].iter().all(|s| s.payload == [0x11; 160]));
        assert!(rest[2..].iter().all(|s| s.payload == [0x22; 160]));
        assert!(p.is_idle());
        assert_eq!(p.packets_sent(), 5);
    }

    #[test]
    fn marker_on_first_packet_only() {
        let t0 = Instant::now();
        let mut p = Player::new(1, 8, 0, 0, t0);
        p.enqueue(clip(3, 0x55)).expect("queue");
        let sent = drive(&mut p, 10);
        let markers: Vec<bool> = sent.iter().map(|s| s.header.marker).collect();
        assert_eq!(markers, [true, false, false]);
        assert_eq!(sent[0].header.payload_type, 8);
    }

    #[test]
    fn late_poll_sends_a_bounded_burst_then_skips_ahead() {
        let t0 = Instant::now();
        let mut p = Player::new(7, 0, 100, 1000, t0);
        p.enqueue(clip(20, 0x42)).expect("queue");
        let mut buf = [0u8; PACKET_LEN];
        assert!(p.poll_packet(t0, &mut buf).is_some());
        // The loop was stuck for 200 ms: ten slots are due.
        let now = t0 + 20 * MS + 200 * MS;
        let mut burst = Vec::new();
        while p.poll_packet(now, &mut buf).is_some() {
            burst.push(RtpHeader::parse(&buf).expect("valid RTP"));
        }
        assert_eq!(burst.len(), LATE_BURST_MAX as usize);
        assert_eq!(p.slots_skipped(), 11 - u64::from(LATE_BURST_MAX));
        // Continuous sequence numbers and timestamps, no marker: the
        // audio is later, not cut.
        for (i, h) in burst.iter().enumerate() {
            assert_eq!(h.sequence, 101 + i as u16);
            assert_eq!(h.timestamp, 1000 + 160 * (1 + i as u32));
            assert!(!h.marker);
        }
        // Pacing resumes on the shifted grid: the next slot is after now.
        let next = p.next_deadline().expect("more to send");
        assert!(next > now && next <= now + 20 * MS, "{:?}", next - now);
        let rest = drive(&mut p, 40);
        assert_eq!(rest.len(), 20 - 1 - LATE_BURST_MAX as usize);
        assert_eq!(rest[0].header.timestamp, 1000 + 160 * 4);
        assert!(rest.windows(2).all(|w| w[1].at - w[0].at == 20 * MS));
        assert_eq!(p.packets_sent(), 20);
    }

    #[test]
    fn short_clip_and_silence_are_padded_to_whole_packets() {
        let t0 = Instant::now();
        let mut p = Player::new(7, 8, 0, 0, t0);
        p.enqueue(PlayItem::Clip(Arc::from(vec![0x01u8; 170])))
            .expect("queue");
        p.enqueue(PlayItem::Silence(30 * MS)).expect("queue");
        p.enqueue(PlayItem::Clip(Arc::from(Vec::new())))
            .expect("empty clip is a no-op");
        p.enqueue(PlayItem::Silence(Duration::ZERO)).expect("no-op");
        assert_eq!(p.queued(), 2);
        let sent = drive(&mut p, 10);
        assert_eq!(sent.len(), 4);
        assert_eq!(sent[1].payload[..10], [0x01; 10]);
        assert!(sent[1].payload[10..].iter().all(|&b| b == 0xd5));
        assert!(sent[2..].iter().all(|s| s.payload == [0xd5; 160]));
    }

    #[test]
    fn idle_period_jumps_timestamp_by_wall_time_with_marker() {
        let t0 = Instant::now();
        let mut p = Player::new(9, 0, 0, 0, t0);
        p.enqueue(clip(2, 1)).expect("queue");
        drive(&mut p, 10);
        // Queued again one second after the last packet's slot ended.
        let mut buf = [0u8; PACKET_LEN];
        p.enqueue(clip(2, 2)).expect("queue");
        let resume = t0 + 40 * MS + 1000 * MS;
        assert!(p.poll_packet(resume, &mut buf).is_some());
        let h = RtpHeader::parse(&buf).expect("valid RTP");
        assert!(h.marker);
        assert_eq!(h.sequence, 2);
        assert_eq!(h.timestamp, 320 + 8000);
        assert_eq!(p.next_deadline(), Some(resume + 20 * MS));
        // Something queued before its slot passes continues the spurt.
        assert!(p.poll_packet(resume + 20 * MS, &mut buf).is_some());
        p.enqueue(clip(1, 3)).expect("queue");
        assert!(p.poll_packet(resume + 45 * MS, &mut buf).is_some());
        let h = RtpHeader::parse(&buf).expect("valid RTP");
        assert!(!h.marker);
        assert_eq!(h.timestamp, 320 + 8000 + 320);
    }

    #[test]
    fn clear_stops_at_once_and_next_prompt_is_a_new_spurt() {
        let t0 = Instant::now();
        let mut p = Player::new(9, 0, 0, 0, t0);
        p.enqueue(clip(50, 1)).expect("queue");
        let mut buf = [0u8; PACKET_LEN];
        assert!(p.poll_packet(t0, &mut buf).is_some());
        p.clear();
        assert!(p.is_idle());
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.poll_packet(t0 + 20 * MS, &mut buf), None);
        p.enqueue(clip(1, 2)).expect("queue");
        assert!(p.poll_packet(t0 + 20 * MS, &mut buf).is_some());
        let h = RtpHeader::parse(&buf).expect("valid RTP");
        assert!(h.marker);
        assert_eq!((h.sequence, h.timestamp), (1, 160));
        assert_eq!(buf[RTP_HEADER_LEN], 2);
    }

    #[test]
    fn queue_is_bounded() {
        let mut p = Player::new(1, 0, 0, 0, Instant::now());
        for _ in 0..QUEUE_MAX {
            p.enqueue(clip(1, 0)).expect("below cap");
        }
        assert_eq!(p.enqueue(clip(1, 0)), Err(PlayError::QueueFull));
        assert_eq!(p.queued(), QUEUE_MAX);
        assert_eq!(
            Player::new(1, 0, 0, 0, Instant::now()).enqueue(PlayItem::Silence(SILENCE_MAX + MS)),
            Err(PlayError::SilenceTooLong)
        );
    }

    #[test]
    fn digits_take_the_sum_of_clips_and_gaps() {
        let lib = PromptLibrary::load_default().expect("shipped prompts");
        let t0 = Instant::now();
        let mut p = Player::new(5, 0, 0, 0, t0);
        let gap = 250 * MS;
        p.enqueue_digits(&lib, "en", Law::Mu, "123456", gap)
            .expect("digits");
        assert_eq!(p.queued(), 11);
        let sent = drive(&mut p, 1000);
        let clip_packets: usize = "123456"
            .chars()
            .map(|c| {
                let name = format!("digit-{c}");
                lib.clip("en", &name, Law::Mu).expect("clip").len() / FRAME_BYTES
            })
            .sum();
        // 250 ms is 12.5 slots, rounded up to 13 packets of silence.
        let expected = clip_packets + 5 * 13;
        assert_eq!(sent.len(), expected);
        assert_eq!(
            sent.last().expect("sent").at - sent[0].at,
            20 * MS * (expected as u32 - 1)
        );
        let last = sent.last().expect("sent").header;
        assert_eq!(last.timestamp, 160 * (expected as u32 - 1));
        assert_eq!(last.sequence, expected as u16 - 1);
        // The first packet is the start of "one", not silence.
        let one = lib.clip("en", "digit-1", Law::Mu).expect("clip");
        assert_eq!(sent[0].payload, one[..160]);
        assert!(sent[0].header.marker);
        assert_eq!(sent.iter().filter(|s| s.header.marker).count(), 1);
    }

    #[test]
    fn digits_are_all_or_nothing() {
        let lib = PromptLibrary::load_default().expect("shipped prompts");
        let mut p = Player::new(5, 0, 0, 0, Instant::now());
        let gap = 100 * MS;
        assert_eq!(
            p.enqueue_digits(&lib, "en", Law::Mu, "12x4", gap),
            Err(PlayError::NotADigit('x'))
        );
        assert!(matches!(
            p.enqueue_digits(&lib, "fr", Law::Mu, "1", gap),
            Err(PlayError::MissingClip { .. })
        ));
        assert!(matches!(
            p.enqueue_digits(&lib, "en", Law::A, "1", gap),
            Err(PlayError::LawMismatch { .. })
        ));
        let long = "1".repeat(QUEUE_MAX / 2 + 1);
        assert_eq!(
            p.enqueue_digits(&lib, "en", Law::Mu, &long, gap),
            Err(PlayError::QueueFull)
        );
        assert!(p.is_idle());
        // Without a gap every digit is one item.
        p.enqueue_digits(&lib, "ru", Law::Mu, "000", Duration::ZERO)
            .expect("digits");
        assert_eq!(p.queued(), 3);
    }
}
