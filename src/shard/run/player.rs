//! Prompt playback and DTMF detection for the portal's flows, on the shard
//! (SPEC F-M6).
//!
//! A flow call's media is the trunk-facing leg (B) of its originated call.
//! When the call is answered the shard reads the trunk's answer for the
//! G.711 payload type (PCMU 0 or PCMA 8) and the `telephone-event` one, and
//! keeps a [`Tap`] for the call. `Play` loads the flow's segments from the
//! [`PromptLibrary`] into a [`Player`], which the shard polls at its
//! deadlines: each packet, 172 bytes at 20 ms, leaves from leg B's socket
//! toward the citizen's latched (or SDP) address, from a small pool of
//! send buffers of its own (the receive buffers belong to the kernel's
//! ring). `Listen` adds a [`DtmfDetector`] that sees every packet arriving
//! on leg B's socket before the relay does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types};

use super::{Shard, SipShard, KIND_SEND, KIND_SHIFT};
use crate::call::flow::{Segment, DIGIT_GAP};
use crate::call::{OriginationEvent, OriginationEventKind, OriginationId};
use crate::media::dtmf::DtmfDetector;
use crate::media::play::{PlayItem, Player};
use crate::media::prompt::{Law, PromptLibrary};
use crate::media::relay::SockId;
use crate::sdp::Sdp;

/// Send buffers for prompt packets (in flight at once, all calls).
const PLAY_BUFS: usize = 1024;

/// Bytes per send buffer: an RTP header and a 20 ms G.711 frame, rounded.
const PLAY_BUF: usize = 192;

/// Send-slot buffer ids at and above this are prompt buffers, not receive
/// buffers (the ring has fewer than this).
pub(super) const PLAY_BID_BASE: u16 = 0x8000;

/// One flow call's media taps.
struct Tap {
    call: OriginationId,
    /// G.711 payload type and law from the answer; None if the trunk chose
    /// no G.711 codec (nothing can be played).
    codec: Option<(u8, Law)>,
    /// RFC 4733 payload type from the answer.
    te_pt: Option<u8>,
    player: Option<Player>,
    /// A `Play` is in progress (its "done" is still due).
    playing: bool,
    dtmf: Option<DtmfDetector>,
    /// Leg B's RTP socket, while a detector listens.
    sock: Option<SockId>,
}

/// Counters of the flow media.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlayerCounters {
    /// Prompt packets sent.
    pub sent: u64,
    /// Prompt packets not sent (no buffer, no send slot, no address).
    pub dropped: u64,
    /// Prompts the library did not have.
    pub missing_prompts: u64,
    /// Plays on calls without a usable G.711 codec.
    pub no_codec: u64,
    /// Digits detected.
    pub digits: u64,
}

/// The shard's players and detectors.
pub(super) struct Players {
    taps: HashMap<u64, Tap>,
    by_sock: HashMap<SockId, u64>,
    bufs: Box<[[u8; PLAY_BUF]]>,
    free: Vec<u16>,
    library: Option<Arc<PromptLibrary>>,
    /// Digits seen since the last turn: (call, digit).
    digits: Vec<(OriginationId, char)>,
    /// Plays that ended since the last turn.
    done: Vec<OriginationId>,
    pub(super) counters: PlayerCounters,
}

impl Players {
    pub(super) fn new(library: Option<Arc<PromptLibrary>>) -> Self {
        Players {
            taps: HashMap::new(),
            by_sock: HashMap::new(),
            bufs: vec![[0u8; PLAY_BUF]; PLAY_BUFS].into_boxed_slice(),
            free: (0..PLAY_BUFS as u16).rev().collect(),
            library,
            digits: Vec::new(),
            done: Vec::new(),
            counters: PlayerCounters::default(),
        }
    }

    /// Whether any socket is watched for DTMF (a cheap test per batch).
    #[inline]
    pub(super) fn listening(&self) -> bool {
        !self.by_sock.is_empty()
    }

    /// A packet arrived on `sock`: feed it to its detector, if any.
    #[inline]
    pub(super) fn inspect(&mut self, sock: SockId, pkt: &[u8]) {
        let Some(key) = self.by_sock.get(&sock) else {
            return;
        };
        let Some(tap) = self.taps.get_mut(key) else {
            return;
        };
        if let Some(d) = tap.dtmf.as_mut().and_then(|d| d.feed(pkt)) {
            self.counters.digits += 1;
            self.digits.push((tap.call, d.digit));
        }
    }

    /// Whether the call with media `key` has a tap (a flow call: its
    /// media needs userspace, see `offload.rs`).
    pub(super) fn has_tap(&self, key: u64) -> bool {
        self.taps.contains_key(&key)
    }

    /// Drops the taps of the call with media `key` (torn down).
    pub(super) fn forget(&mut self, key: u64) {
        if let Some(t) = self.taps.remove(&key) {
            if let Some(s) = t.sock {
                self.by_sock.remove(&s);
            }
        }
    }

    /// A prompt buffer came back from a send.
    pub(super) fn release(&mut self, idx: u16) {
        self.free.push(idx);
    }

    /// The earliest packet due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.taps
            .values()
            .filter(|t| t.playing)
            .filter_map(|t| t.player.as_ref()?.next_deadline())
            .min()
    }
}

/// The G.711 codec and telephone-event payload types of an answer.
fn codecs_of(sdp: &[u8]) -> (Option<(u8, Law)>, Option<u8>) {
    let Ok(s) = Sdp::parse(sdp) else {
        return (None, None);
    };
    let Some(m) = s.media.iter().find(|m| m.port != 0) else {
        return (None, None);
    };
    let codec = m.formats.iter().find_map(|pt| match pt.as_str() {
        "0" => Some((0, Law::Mu)),
        "8" => Some((8, Law::A)),
        _ => None,
    });
    let te = m.lines.iter().find_map(|l| {
        let (pt, enc) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
        enc.to_ascii_lowercase()
            .starts_with("telephone-event/")
            .then(|| pt.trim().parse().ok())?
    });
    (codec, te)
}

impl Shard {
    /// Notes what the shell needs of a flow call's event (its codecs on
    /// the answer). Called before the flows see the event.
    pub(super) fn flow_origination_event(&mut self, sip: &SipShard, ev: &OriginationEvent) {
        if let OriginationEventKind::Answered { remote_sdp } = &ev.kind {
            let Some((key, _, _)) = self.legs_of_call(sip, ev.id) else {
                return;
            };
            let (codec, te_pt) = codecs_of(remote_sdp);
            // A flow call's media needs userspace (plays, DTMF).
            self.xdp_release_key(key);
            self.pm.taps.insert(
                key,
                Tap {
                    call: ev.id,
                    codec,
                    te_pt,
                    player: None,
                    playing: false,
                    dtmf: None,
                    sock: None,
                },
            );
        }
    }

    pub(super) fn flow_play(
        &mut self,
        sip: &mut SipShard,
        now: Instant,
        call: OriginationId,
        language: &str,
        segments: &[Segment],
    ) {
        let key = self.legs_of_call(sip, call).map(|(k, _, _)| k);
        if let Some(k) = key {
            // Prompt packets leave from the leg's socket: off XDP first.
            self.xdp_release_key(k);
        }
        let lib = self.pm.library.clone();
        let tap = key.and_then(|k| self.pm.taps.get_mut(&k));
        let (Some(tap), Some(lib)) = (tap, lib) else {
            // Nothing can be played: the flow goes on as if it had been.
            self.pm.counters.no_codec += 1;
            sip.flows.handle_play_done(now, call);
            return;
        };
        let Some((pt, law)) = tap.codec else {
            self.pm.counters.no_codec += 1;
            sip.flows.handle_play_done(now, call);
            return;
        };
        let player = tap.player.get_or_insert_with(|| {
            Player::new(rand::random(), pt, rand::random(), rand::random(), now)
        });
        player.clear();
        let mut missing = 0;
        for s in segments {
            let ok = match s {
                Segment::Prompt(name) => match lib.clip(language, name, law) {
                    Some(c) => player.enqueue(PlayItem::Clip(c)).is_ok(),
                    None => {
                        missing += 1;
                        true
                    }
                },
                Segment::Digits(d) => player
                    .enqueue_digits(&lib, language, law, d, DIGIT_GAP)
                    .is_ok(),
                Segment::Silence(t) => player.enqueue(PlayItem::Silence(*t)).is_ok(),
            };
            if !ok {
                missing += 1;
            }
        }
        self.pm.counters.missing_prompts += missing;
        if player.is_idle() {
            tap.playing = false;
            sip.flows.handle_play_done(now, call);
        } else {
            tap.playing = true;
        }
    }

    pub(super) fn flow_stop_play(&mut self, sip: &SipShard, call: OriginationId) {
        let Some((key, _, _)) = self.legs_of_call(sip, call) else {
            return;
        };
        if let Some(t) = self.pm.taps.get_mut(&key) {
            t.playing = false;
            if let Some(p) = t.player.as_mut() {
                p.clear();
            }
        }
    }

    pub(super) fn flow_listen(&mut self, sip: &SipShard, call: OriginationId) {
        let Some((key, _, b)) = self.legs_of_call(sip, call) else {
            return;
        };
        // The detector must see every packet: off XDP first.
        self.xdp_release_key(key);
        let sock = self.relay.leg(b).rtp_sock;
        let Some(t) = self.pm.taps.get_mut(&key) else {
            return;
        };
        let Some(pt) = t.te_pt else {
            // No telephone-event in the answer: no digits can come.
            return;
        };
        t.dtmf = Some(DtmfDetector::new(pt));
        t.sock = Some(sock);
        self.pm.by_sock.insert(sock, key);
    }

    /// Sends the prompt packets that are due, hands finished plays and
    /// detected digits to the flows.
    pub(super) fn pump_players(&mut self, sip: &mut SipShard, now: Instant) {
        if !self.pm.digits.is_empty() {
            for (call, d) in std::mem::take(&mut self.pm.digits) {
                sip.flows.handle_dtmf(now, call, d);
            }
        }
        let keys: Vec<u64> = self
            .pm
            .taps
            .iter()
            .filter(|(_, t)| t.playing)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some((_, b)) = self.legs_of_key(key) else {
                continue;
            };
            let (sock, dst) = {
                let leg = self.relay.leg(b);
                (leg.rtp_sock, leg.remote_rtp)
            };
            loop {
                let Some(idx) = self.pm.free.pop() else {
                    // Out of buffers: what is due now is skipped.
                    let mut scratch = [0u8; PLAY_BUF];
                    let t = self.pm.taps.get_mut(&key).expect("tap");
                    match t
                        .player
                        .as_mut()
                        .and_then(|p| p.poll_packet(now, &mut scratch))
                    {
                        Some(_) => {
                            self.pm.counters.dropped += 1;
                            continue;
                        }
                        None => break,
                    }
                };
                let t = self.pm.taps.get_mut(&key).expect("tap");
                let buf = &mut self.pm.bufs[usize::from(idx)];
                let n = t.player.as_mut().and_then(|p| p.poll_packet(now, buf));
                match (n, dst) {
                    (Some(n), Some(dst)) => {
                        self.send_play(idx, n, sock, dst);
                    }
                    (Some(_), None) => {
                        self.pm.counters.dropped += 1;
                        self.pm.free.push(idx);
                    }
                    (None, _) => {
                        self.pm.free.push(idx);
                        break;
                    }
                }
            }
            let t = self.pm.taps.get_mut(&key).expect("tap");
            if t.player.as_ref().is_none_or(Player::is_idle) {
                t.playing = false;
                let call = t.call;
                self.pm.done.push(call);
            }
        }
        for call in std::mem::take(&mut self.pm.done) {
            sip.flows.handle_play_done(now, call);
        }
    }

    /// Queues one prompt packet from prompt buffer `idx`.
    fn send_play(&mut self, idx: u16, len: usize, sock: SockId, dst: SocketAddr) {
        if sock as usize >= self.socks.len() {
            // A socket-less leg: out of an AF_XDP socket, copied at once.
            let mut x = self.xsk.take();
            let bytes = self.pm.bufs[usize::from(idx)].get(..len).unwrap_or(&[]);
            let ok = x.as_mut().is_some_and(|x| x.send_bytes(sock, dst, bytes));
            self.xsk = x;
            self.pm.release(idx);
            if ok {
                self.pm.counters.sent += 1;
            } else {
                self.pm.counters.dropped += 1;
            }
            return;
        }
        let Some(slot_idx) = self.free_sends.pop() else {
            self.pm.counters.dropped += 1;
            self.pm.free.push(idx);
            return;
        };
        let ptr = self.pm.bufs[usize::from(idx)].as_ptr();
        let slot = &mut self.send_slots[usize::from(slot_idx)];
        slot.bid = PLAY_BID_BASE + idx;
        let namelen = slot.addr.set(dst);
        slot.iov = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        slot.msg.msg_name = slot.addr.as_mut_ptr();
        slot.msg.msg_namelen = namelen;
        slot.msg.msg_iov = &mut slot.iov;
        slot.msg.msg_iovlen = 1;
        let sqe = opcode::SendMsg::new(types::Fixed(sock), &slot.msg)
            .build()
            .user_data((KIND_SEND << KIND_SHIFT) | u64::from(slot_idx));
        self.push_sqe(sqe);
        self.pm.counters.sent += 1;
    }
}
