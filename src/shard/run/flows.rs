//! The portal's flows ([`crate::call::flow`]) on the shard: the glue
//! between the sans-IO [`Flows`] and the shard's B2BUA and relay.
//!
//! - `Originate`/`Hangup` go to the B2BUA's origination API.
//! - `Bridge` joins the trunk-facing legs of two originated calls in the
//!   relay ([`RelayTable::pair`]): what the citizen sends leaves from the
//!   support call's socket toward the support line, and back, with no
//!   hand-over and no hairpin. `Unbridge` gives each call its own pair
//!   again; a call torn down while bridged is unbridged first, so no leg
//!   ever points at a freed one.
//! - `Play`, `StopPlay` and `Listen` drive the prompt player and the DTMF
//!   detector of the call's trunk-facing leg (see the player section).

use std::collections::HashMap;
use std::time::Instant;

use super::Shard;
use super::SipShard;
use crate::call::flow::{FlowAction, Flows};
use crate::call::{OriginateError, OriginationId};
use crate::media::relay::LegId;
use crate::shard::ShardEvent;

/// Flow state the shard keeps beside the relay.
#[derive(Default)]
pub(super) struct FlowMedia {
    /// Bridged originated calls, both ways: media key -> the other's.
    bridged: HashMap<u64, u64>,
    /// Counters.
    pub(super) counters: FlowShellCounters,
}

impl FlowMedia {
    /// Whether the call with media `key` is bridged to another.
    pub(super) fn is_bridged(&self, key: u64) -> bool {
        self.bridged.contains_key(&key)
    }
}

/// What the flow glue could not do.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowShellCounters {
    /// Bridges asked for calls without media (ended meanwhile).
    pub bridge_failed: u64,
    /// Flow events dropped because the control plane's queue was full.
    pub events_dropped: u64,
}

/// The SIP-like status a flow reports for a refused origination.
fn refusal_status(e: OriginateError) -> u16 {
    match e {
        OriginateError::NoRoute => 404,
        OriginateError::NoCodec => 488,
        OriginateError::Capacity | OriginateError::TrunksUnavailable { .. } => 503,
        _ => 400,
    }
}

impl Shard {
    /// Carries out what the flows ask and passes their events on. True
    /// when there was anything (the B2BUA may have output now).
    pub(super) fn drive_flows(&mut self, sip: &mut SipShard, now: Instant) -> bool {
        let mut busy = false;
        while let Some(a) = sip.flows.poll_action() {
            busy = true;
            match a {
                FlowAction::Originate { flow, leg, req } => {
                    let r = sip.b2b.originate(now, req).map_err(refusal_status);
                    sip.flows.handle_originated(now, flow, leg, r);
                }
                FlowAction::Hangup { call } => {
                    // A call that has ended already is not an error here.
                    let _ = sip.b2b.hangup_origination(now, call);
                }
                FlowAction::Bridge { a, b } => self.flow_bridge(sip, a, b),
                FlowAction::Unbridge { a, .. } => {
                    if let Some(key) = sip.bridges.get(&a.bridge()).copied() {
                        self.unbridge(key);
                    }
                }
                FlowAction::Play {
                    call,
                    language,
                    segments,
                } => self.flow_play(sip, now, call, &language, &segments),
                FlowAction::StopPlay { call } => self.flow_stop_play(sip, call),
                FlowAction::Listen { call } => self.flow_listen(sip, call),
            }
        }
        while let Some(event) = sip.flows.poll_event() {
            busy = true;
            let ev = ShardEvent::Flow {
                shard: self.cfg.index,
                event,
            };
            if self.events.try_send(ev).is_err() {
                self.fm.counters.events_dropped += 1;
            }
        }
        busy
    }

    /// The media key and relay legs (A, B) of an originated call.
    pub(super) fn legs_of_call(
        &self,
        sip: &SipShard,
        call: OriginationId,
    ) -> Option<(u64, LegId, LegId)> {
        let key = *sip.bridges.get(&call.bridge())?;
        let (a, b) = self.legs_of_key(key)?;
        Some((key, a, b))
    }

    pub(super) fn legs_of_key(&self, key: u64) -> Option<(LegId, LegId)> {
        let ci = *self.by_key.get(&key)?;
        self.calls[ci as usize].as_ref()?.streams.first()?.legs
    }

    fn flow_bridge(&mut self, sip: &SipShard, a: OriginationId, b: OriginationId) {
        let (Some((ka, _, ab)), Some((kb, _, bb))) =
            (self.legs_of_call(sip, a), self.legs_of_call(sip, b))
        else {
            self.fm.counters.bridge_failed += 1;
            return;
        };
        self.unbridge(ka);
        self.unbridge(kb);
        // Userspace relays bridged calls (and their legs change peers).
        self.xdp_release_key(ka);
        self.xdp_release_key(kb);
        self.relay.pair(ab, bb);
        self.fm.bridged.insert(ka, kb);
        self.fm.bridged.insert(kb, ka);
    }

    /// Gives the call with media `key` (and its bridge partner) their own
    /// pairs back. Called before a call's legs are freed.
    pub(super) fn unbridge(&mut self, key: u64) {
        let Some(other) = self.fm.bridged.remove(&key) else {
            return;
        };
        self.fm.bridged.remove(&other);
        self.xdp_release_key(key);
        self.xdp_release_key(other);
        for k in [key, other] {
            if let Some((a, b)) = self.legs_of_key(k) {
                self.relay.pair(a, b);
            }
        }
    }
}

/// Whether the flows own this originated call (its events go to them, not
/// to the control plane's raw origination stream).
pub(super) fn owned(flows: &Flows, call: OriginationId) -> bool {
    flows.owns(call)
}
