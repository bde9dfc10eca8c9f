//! Calls the control plane places (issue 4 item 6; SPEC call flows 1 and
//! 2): [`B2bua::originate`] dials a number through the trunks and
//! [`B2bua::poll_origination_event`] tells how it goes.
//!
//! An originated call is a B2BUA [`super::b2bua`] call without an A leg.
//! It is routed by the number's prefix with the inbound routes
//! ([`crate::sip::trunk::Routes`]), and its one leg, toward the trunk, is
//! exactly a B leg: the same trunk selection (priority, weight, health,
//! `max_calls`, CPS), failover on timeout/408/5xx/503, digest answers to
//! 401/407, `Require: 100rel`, session timers, maximum duration, media
//! timeout and [`CallRecord`]. Where an inbound call would answer A, an
//! originated one queues an [`OriginationEvent`]:
//!
//! | B leg                         | event                                   |
//! |-------------------------------|-----------------------------------------|
//! | INVITE taken by the endpoint  | [`OriginationEventKind::Dialing`] (per trunk attempt) |
//! | 180/183 (new status or SDP)   | [`OriginationEventKind::Ringing`]       |
//! | 2xx with SDP                  | [`OriginationEventKind::Answered`]      |
//! | ends before answer            | [`OriginationEventKind::Failed`]        |
//! | ends after answer             | [`OriginationEventKind::Ended`]         |
//!
//! `Failed` carries the last trunk's own status (no A to shield from a
//! 503 or a 401): 408 when no trunk answered in time or the maximum
//! duration passed first, 487 when the control plane hung up first
//! ([`B2bua::hangup_origination`]: cancelled is a failure to connect, Q.850
//! cause 16, [`Hangup::Caller`] in the record), 503 when no relay ports
//! could be had, 502 for a 2xx without a usable answer. `Ended` says who
//! ended it: [`Hangup::Callee`] for the far end's BYE (cause 16),
//! [`Hangup::Caller`] for the control plane, [`Hangup::Gateway`] for the
//! maximum duration, a media timeout or an expired session timer (cause
//! 102). Every originated call gives exactly one `Failed` or `Ended` (lost
//! only to a full queue, which is counted), then its [`CallRecord`] with
//! [`CallOrigin::Originated`]. No event for 100 Trying: the endpoint
//! absorbs it.
//!
//! Media: the gateway always makes the offer itself. [`B2bua::originate`]
//! builds an SDP from the configured codecs (`sip.codecs` with a static
//! payload type, and `telephone-event` for RFC 4733 DTMF) whose address is
//! unspecified (`0.0.0.0` or `::`, the trunk's family), and hands it to the
//! shell in the ordinary [`MediaRequest::Allocate`] as A's offer. The
//! shell's allocation needs nothing new: it allocates the usual pair of
//! relay legs, sees no usable remote for leg A and leaves it unlatched,
//! and answers [`B2bua::handle_media_allocated`]. The trunk's offer is that
//! SDP pointed at leg B, so the media always flows through our relay
//! (counters, quality, media timeout). Leg A is the call's internal side:
//! idle until issue 5 attaches a prompt player or another call to it. A
//! caller-supplied SDP was not chosen: it would bypass the relay, and the
//! uses in SPEC flows 1 and 2 all want the media on this shard.
//!
//! Re-offers from the trunk (hold, a new address) are answered by the
//! gateway ([`B2bua::handle_event`] on [`crate::sip::endpoint::Event::Reinvite`]/
//! `Update`): the offer kept to the configured codecs, pointed at leg B,
//! direction mirrored.
//!
//! Bridging two originated calls (click-to-call, RFC 3725; issue 5) is not
//! done here, and nothing here stands in its way: each call has its own
//! slot, trunk leg and relay pair, and its [`OriginationId::bridge`] is the
//! [`BridgeId`] the shell already keys its media by. The bridge would
//! link the two slots in the [`B2bua`] so that (1) the relay joins the two
//! calls' inner legs, either by pointing each leg A's remote at the other
//! call's leg A address ([`MediaRequest::Update`] with `a_remote`: no new
//! relay code, one hairpin through the shard's own sockets; not tried yet)
//! or by a new relay command that splices the two B legs directly; (2) a re-offer from one trunk
//! crosses to the other call's B leg (the inbound re-offer code with "the
//! other side" being the linked call) instead of being answered locally,
//! which also covers RFC 3725 flow I's re-INVITE when the two trunks chose
//! different codecs; (3) a BYE on one ends or parks the other, as the
//! control plane asks.
//!
//! Not done here: a record for a refused [`B2bua::originate`] (the error
//! goes back to the control plane, which owns that attempt's record),
//! a share of the call slots reserved for inbound calls, policy (F-P:
//! allowed prefixes and the like are the control plane's, before this),
//! and a new offer when a failover crosses address families (the relay
//! legs keep the first trunk's family, as for inbound calls).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::b2bua::{trunk_target, ALeg, Admit, B2bua, BridgeId, Hangup};
#[cfg(doc)]
use super::b2bua::{CallRecord, MediaRequest};
use crate::sdp::Sdp;
use crate::sip::trunk::{NoTrunkReason, RouteTarget};

/// Digits of an E.164 number (ITU-T E.164 §6.1: at most 15).
pub const E164_DIGITS_MAX: usize = 15;

/// Digits of a dial string without `+` (national numbers with trunk
/// prefixes): the same bound as an inbound called number.
pub const DIAL_DIGITS_MAX: usize = 32;

/// Bytes of an account/tag: enough for a UUID or a tenant path, small
/// enough to keep records bounded.
pub const ACCOUNT_LEN_MAX: usize = 128;

/// Default of [`super::B2buaConfig::origination_events_max`]: a call gives
/// a handful of events, and the shell drains them every loop turn, so a
/// thousand covers a burst of a few hundred calls changing state at once.
pub const ORIGINATION_EVENTS_MAX_DEFAULT: usize = 1024;

/// An originated call, as [`B2bua::originate`] returned it. It is stale
/// once the call has ended (its slot's generation moves on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OriginationId(BridgeId);

impl OriginationId {
    pub(super) fn new(bridge: BridgeId) -> Self {
        OriginationId(bridge)
    }

    /// An id for unit tests of the layers above (CDR records).
    #[cfg(test)]
    pub(crate) fn for_test(bridge: BridgeId) -> Self {
        OriginationId(bridge)
    }

    /// The call's [`BridgeId`]: the id of its [`MediaRequest`]s and
    /// [`CallRecord::bridge`].
    pub fn bridge(self) -> BridgeId {
        self.0
    }
}

/// What to dial ([`B2bua::originate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginateRequest {
    /// The called number: digits with an optional leading `+` (E.164, at
    /// most [`E164_DIGITS_MAX`] digits), or digits alone (at most
    /// [`DIAL_DIGITS_MAX`]). Routed by prefix like an inbound call.
    pub number: String,
    /// The number to present instead of the caller-ID pool's (same
    /// syntax as [`OriginateRequest::number`]).
    pub caller_id: Option<String>,
    /// Account or tag for the record (at most [`ACCOUNT_LEN_MAX`] bytes,
    /// no control characters; may be empty).
    pub account: String,
    /// The control plane's own id, echoed in every event and the record.
    pub correlation: u64,
    /// A shorter limit than `sip.max_call_duration_s` (a longer one is cut
    /// to it); counted from now, ringing included. Zero is refused.
    pub max_duration: Option<Duration>,
}

/// Why a number was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NumberError {
    /// Nothing (or only `+`).
    #[error("empty number")]
    Empty,
    /// More digits than allowed.
    #[error("{digits} digits, at most {max} allowed")]
    TooLong {
        /// Digits given.
        digits: usize,
        /// The bound ([`E164_DIGITS_MAX`] with `+`, else
        /// [`DIAL_DIGITS_MAX`]).
        max: usize,
    },
    /// A byte that is not a digit (other than a leading `+`).
    #[error("not a digit at byte {at}")]
    NotDigit {
        /// Byte offset in the string.
        at: usize,
    },
}

/// Why [`B2bua::originate`] placed no call. Nothing was sent, allocated or
/// counted against a trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginateError {
    /// The called number is malformed.
    #[error("bad number: {0}")]
    BadNumber(NumberError),
    /// The caller-ID override is malformed.
    #[error("bad caller id: {0}")]
    BadCallerId(NumberError),
    /// The account is too long or has control characters.
    #[error("bad account (at most {ACCOUNT_LEN_MAX} bytes, no control characters)")]
    BadAccount,
    /// A maximum duration of zero.
    #[error("maximum duration must be positive")]
    BadMaxDuration,
    /// Every call slot of the shard is taken.
    #[error("call table full")]
    Capacity,
    /// No route for the number, or its route has no trunk.
    #[error("no route")]
    NoRoute,
    /// The route's trunks cannot take a call now: down, or at a call or
    /// CPS limit (the inbound 503).
    #[error("no trunk available: {reason:?}")]
    TrunksUnavailable {
        /// What stopped every trunk.
        reason: NoTrunkReason,
        /// When a limit frees up, in seconds (None: trunks down).
        retry_after_s: Option<u32>,
    },
    /// `sip.codecs` has no codec the gateway can offer by itself (one
    /// with a static RTP payload type).
    #[error("no codec to offer")]
    NoCodec,
}

/// [`B2bua::hangup_origination`] of a call that is not there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HangupError {
    /// The call has ended (hung up already, or ended by itself: its
    /// `Failed`/`Ended` event is out), or the id was never issued here.
    #[error("no such origination (ended or unknown)")]
    Stale,
}

/// How an originated call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginationEventKind {
    /// An INVITE went to a trunk (`attempt` counts from 1; a failover is
    /// a new attempt, a digest answer is not).
    Dialing {
        /// The trunk's name.
        trunk: String,
        /// Attempt number.
        attempt: u32,
    },
    /// The trunk answered 180/183 (or another 1xx above 100).
    Ringing {
        /// The provisional status.
        status: u16,
        /// It carried SDP: early media is being relayed.
        early_media: bool,
    },
    /// The call was answered.
    Answered {
        /// The trunk's SDP answer as received.
        remote_sdp: Vec<u8>,
    },
    /// The call ended without being answered. Terminal.
    Failed {
        /// The last trunk's final status; 408 timeout, 487 hung up by the
        /// control plane, 503 no relay ports, 502 unusable 2xx.
        status: u16,
        /// The Q.850 cause (RFC 3398 §8.2.6.1).
        q850: u8,
    },
    /// The answered call ended. Terminal.
    Ended {
        /// Who ended it.
        by: Hangup,
        /// The Q.850 cause: 16 for a hang-up, 102 for a timer.
        q850: u8,
    },
}

/// One [`OriginationEventKind`] of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginationEvent {
    /// The call.
    pub id: OriginationId,
    /// [`OriginateRequest::correlation`].
    pub correlation: u64,
    /// When it happened (the `now` of the input that caused it).
    pub at: Instant,
    /// What happened.
    pub kind: OriginationEventKind,
}

/// Where a [`CallRecord`]'s call came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOrigin {
    /// An INVITE on leg A.
    Inbound,
    /// [`B2bua::originate`].
    Originated {
        /// The call.
        id: OriginationId,
        /// [`OriginateRequest::correlation`].
        correlation: u64,
        /// [`OriginateRequest::account`].
        account: String,
    },
}

/// The A side of an originated call (what the B2BUA keeps of the
/// request).
#[derive(Debug)]
pub(super) struct Origin {
    pub correlation: u64,
    pub account: String,
    /// The number presented on every attempt (None: anonymous).
    pub presented: Option<String>,
    /// The last [`OriginationEventKind::Ringing`] reported.
    pub last_ringing: Option<(u16, bool)>,
}

/// The bounded queue of [`OriginationEvent`]s: full means the new event
/// is dropped (and counted by the caller).
#[derive(Debug)]
pub(super) struct OriginationEvents {
    queue: VecDeque<OriginationEvent>,
    max: usize,
}

impl OriginationEvents {
    pub(super) fn new(max: usize) -> Self {
        let max = max.max(1);
        OriginationEvents {
            queue: VecDeque::with_capacity(max),
            max,
        }
    }

    /// False when the queue was full and `ev` was dropped.
    pub(super) fn push(&mut self, ev: OriginationEvent) -> bool {
        if self.queue.len() >= self.max {
            return false;
        }
        self.queue.push_back(ev);
        assert!(self.queue.len() <= self.max, "queue below cap");
        true
    }

    fn pop(&mut self) -> Option<OriginationEvent> {
        self.queue.pop_front()
    }
}

impl B2bua {
    /// Places a call to `req.number` through the trunks routed for it.
    /// On success the call is in the slab and the shell has been asked
    /// for its relay legs ([`MediaRequest::Allocate`] on
    /// [`B2bua::poll_output`]); the INVITE follows
    /// [`B2bua::handle_media_allocated`], and everything after that comes
    /// as [`OriginationEvent`]s. The first trunk is chosen here, so a call
    /// that cannot be placed now is refused at once, with nothing to
    /// undo; later trunks are failovers.
    pub fn originate(
        &mut self,
        now: Instant,
        req: OriginateRequest,
    ) -> Result<OriginationId, OriginateError> {
        let r = self.try_originate(now, req);
        match r {
            Ok(_) => self.counters.originations += 1,
            Err(_) => self.counters.originations_refused += 1,
        }
        r
    }

    fn try_originate(
        &mut self,
        now: Instant,
        req: OriginateRequest,
    ) -> Result<OriginationId, OriginateError> {
        check_number(&req.number).map_err(OriginateError::BadNumber)?;
        if let Some(n) = &req.caller_id {
            check_number(n).map_err(OriginateError::BadCallerId)?;
        }
        if req.account.len() > ACCOUNT_LEN_MAX || req.account.chars().any(char::is_control) {
            return Err(OriginateError::BadAccount);
        }
        let max_duration = match req.max_duration {
            Some(d) if d.is_zero() => return Err(OriginateError::BadMaxDuration),
            Some(d) => d.min(self.cfg.max_call_duration),
            None => self.cfg.max_call_duration,
        };
        if self.free.is_empty() {
            return Err(OriginateError::Capacity);
        }
        let route = match self.routes.lookup(&req.number) {
            Some(RouteTarget::Trunks(mask)) => *mask,
            // As for inbound calls: the contact centre is no trunk.
            Some(RouteTarget::ContactCentre) | None => return Err(OriginateError::NoRoute),
        };
        if offer_formats(&self.cfg.codecs).is_empty() {
            return Err(OriginateError::NoCodec);
        }
        // Last: a successful select takes a CPS token and counts the call.
        let trunk = self
            .trunks
            .select(now, &mut self.rng, route, &[])
            .map_err(|e| match e.reason {
                NoTrunkReason::NoTrunks => OriginateError::NoRoute,
                reason => OriginateError::TrunksUnavailable {
                    reason,
                    retry_after_s: e.retry_after_s(),
                },
            })?;
        let cfg = self.trunks.config(trunk);
        let v6 = trunk_target(&cfg.address, cfg.transport).is_some_and(|t| t.is_ipv6());
        let session_id: u32 = self.rng.gen();
        let offer = offer_sdp(&self.cfg.codecs, v6, session_id);
        // offer_sdp writes what Sdp::parse reads; checked by the tests.
        let a_offer = Sdp::parse(offer.as_bytes()).expect("own offer parses");
        let presented = match req.caller_id {
            Some(n) => Some(n),
            None => self.caller_ids.next().map(str::to_string),
        };
        let index = self.admit(
            now,
            Admit {
                a: ALeg::Originated(Origin {
                    correlation: req.correlation,
                    account: req.account,
                    presented: presented.clone(),
                    last_ringing: None,
                }),
                route,
                trunk,
                caller: presented.unwrap_or_default(),
                callee: req.number,
                a_call_id: String::new(),
                a_offer,
                a_sdp: offer.into_bytes(),
                a_got: None,
                max_duration,
            },
        );
        Ok(OriginationId(self.id_of(index)))
    }

    /// Hangs up an originated call: CANCEL while it is not answered (the
    /// endpoint sends it once the trunk has answered provisionally, RFC
    /// 3261 §9.1), BYE once it is. The call ends at once: its terminal
    /// event (`Failed` 487 before the answer, `Ended` by
    /// [`Hangup::Caller`] after), then its record. A repeat, or a hang-up
    /// that races the call's own end, is [`HangupError::Stale`] and does
    /// nothing: the control plane can treat it as done.
    pub fn hangup_origination(
        &mut self,
        now: Instant,
        id: OriginationId,
    ) -> Result<(), HangupError> {
        match self.live(id.0) {
            Some(index) if self.hang_up(now, index) => Ok(()),
            _ => Err(HangupError::Stale),
        }
    }

    /// The next event of an originated call, oldest first. The shell
    /// drains these after [`B2bua::poll_output`].
    pub fn poll_origination_event(&mut self) -> Option<OriginationEvent> {
        self.origination_events.pop()
    }
}

/// Checks a called or presented number: `+` and 1 to [`E164_DIGITS_MAX`]
/// digits, or 1 to [`DIAL_DIGITS_MAX`] digits.
pub fn check_number(n: &str) -> Result<(), NumberError> {
    let (digits, max, offset) = match n.strip_prefix('+') {
        Some(d) => (d, E164_DIGITS_MAX, 1),
        None => (n, DIAL_DIGITS_MAX, 0),
    };
    if digits.is_empty() {
        return Err(NumberError::Empty);
    }
    if let Some(at) = digits.bytes().position(|b| !b.is_ascii_digit()) {
        return Err(NumberError::NotDigit { at: at + offset });
    }
    if digits.len() > max {
        return Err(NumberError::TooLong {
            digits: digits.len(),
            max,
        });
    }
    Ok(())
}

/// RFC 4733 telephone-event: the payload type the gateway offers it at.
const TELEPHONE_EVENT_PT: u8 = 101;

/// The `(payload type, rtpmap)` the gateway offers for `codecs`, in their
/// order: those with a static payload type (RFC 3551 table 4), then
/// telephone-event. Empty when none has a static type.
fn offer_formats(codecs: &[String]) -> Vec<(u8, &'static str)> {
    const STATIC: [(&str, u8, &str); 6] = [
        ("PCMU", 0, "PCMU/8000"),
        ("GSM", 3, "GSM/8000"),
        ("G723", 4, "G723/8000"),
        ("PCMA", 8, "PCMA/8000"),
        // RFC 3551 §4.5.2: G.722's RTP clock is 8000 Hz.
        ("G722", 9, "G722/8000"),
        ("G729", 18, "G729/8000"),
    ];
    let mut out: Vec<(u8, &'static str)> = Vec::new();
    for c in codecs {
        if let Some(&(_, pt, map)) = STATIC.iter().find(|s| s.0.eq_ignore_ascii_case(c)) {
            if !out.iter().any(|f| f.0 == pt) {
                out.push((pt, map));
            }
        }
    }
    if !out.is_empty() {
        out.push((TELEPHONE_EVENT_PT, "telephone-event/8000"));
    }
    out
}

/// The gateway's own offer for an originated call, before the relay
/// address is known: unspecified address (the shell reads "no remote for
/// leg A"), a placeholder port (9, discard; the shell only needs it
/// non-zero, and the rewrite to leg B replaces it), 20 ms packets as the
/// prompt player sends them (F-M6).
fn offer_sdp(codecs: &[String], v6: bool, session_id: u32) -> String {
    let (family, addr) = if v6 {
        ("IP6", IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        ("IP4", IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let formats = offer_formats(codecs);
    let pts: Vec<String> = formats.iter().map(|f| f.0.to_string()).collect();
    let mut s = format!(
        "v=0\r\no=kolokol {session_id} 1 IN {family} {addr}\r\ns=kolokol\r\n\
         c=IN {family} {addr}\r\nt=0 0\r\nm=audio 9 RTP/AVP {}\r\n",
        pts.join(" ")
    );
    for (pt, map) in &formats {
        s.push_str(&format!("a=rtpmap:{pt} {map}\r\n"));
    }
    s.push_str(&format!(
        "a=fmtp:{TELEPHONE_EVENT_PT} 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    ));
    s
}

/// The final status an originated call's `Failed` event and record get
/// for a last attempt that ended with `status` (None: no answer in time).
pub(super) fn failure_status(status: Option<u16>) -> u16 {
    match status {
        None => 408,
        Some(s) if (300..=699).contains(&s) => s,
        Some(_) => 500,
    }
}

/// Turns an offer's directions into the answer's (RFC 3264 §6.1):
/// sendonly and recvonly swap, sendrecv and inactive stay.
pub(super) fn mirror_direction(sdp: &mut Sdp) {
    use crate::sdp::Direction;
    let swap = |l: &mut String| {
        if l == "a=sendonly" {
            *l = "a=recvonly".into();
        } else if l == "a=recvonly" {
            *l = "a=sendonly".into();
        }
    };
    sdp.session.iter_mut().for_each(swap);
    for m in &mut sdp.media {
        m.lines.iter_mut().for_each(swap);
        m.direction = match m.direction {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        };
    }
}

/// The `o=` line of `last` (our previous SDP on a leg) with its version
/// one up (RFC 3264 §8); None when it has none to bump.
pub(super) fn next_origin(last: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(last).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("o="))?;
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    let [user, id, version, net, family, addr] = f[..] else {
        return None;
    };
    let version: u64 = version.parse().ok()?;
    let next = version.checked_add(1)?;
    Some(format!("o={user} {id} {next} {net} {family} {addr}"))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::call::b2bua::{
        B2buaConfig, CallRecord, MediaRequest, OutboundInvite, Output, SipAction,
        MAX_DURATION_REASON, Q850_NORMAL_CLEARING, Q850_TIMER_EXPIRY,
    };
    use crate::config::{RouteConfig, TrunkConfig};
    use crate::sip::endpoint::{CallHandle, Challenged, Event};
    use crate::sip::trunk::{CallerIdPool, Routes, TrunkId, TrunkSet};
    use std::net::SocketAddr;

    const B_SDP: &str = "v=0\r\no=trunk 5 5 IN IP4 203.0.113.9\r\ns=-\r\n\
        c=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 50000 RTP/AVP 8 101\r\n\
        a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    const A_LOCAL: &str = "192.0.2.10:20000";
    const B_LOCAL: &str = "192.0.2.10:20002";
    const NUMBER: &str = "+4930123";

    fn trunk(name: &str, priority: u16, address: &str) -> TrunkConfig {
        TrunkConfig {
            name: name.into(),
            address: address.into(),
            priority,
            max_calls: 1000,
            cps: 1000,
            options_interval_s: 0,
            timeout_ms: 5000,
            ..TrunkConfig::default()
        }
    }

    fn two_trunks() -> Vec<TrunkConfig> {
        vec![
            trunk("t1", 1, "192.0.2.1:5060"),
            trunk("t2", 2, "192.0.2.2"),
        ]
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    fn req(number: &str) -> OriginateRequest {
        OriginateRequest {
            number: number.into(),
            caller_id: None,
            account: "acct-7".into(),
            correlation: 42,
            max_duration: None,
        }
    }

    struct H {
        b: B2bua,
        t0: Instant,
        now: Instant,
    }

    fn setup_with(
        calls_max: usize,
        trunks: &[TrunkConfig],
        routes: &[RouteConfig],
        pool: &[&str],
        tweak: impl FnOnce(&mut B2buaConfig),
    ) -> H {
        let t0 = Instant::now();
        let set = TrunkSet::new(trunks, t0);
        let routes = Routes::new(routes, &set);
        let mut cfg = B2buaConfig::new(calls_max);
        cfg.max_call_duration = Duration::from_secs(60);
        tweak(&mut cfg);
        let pool: Vec<String> = pool.iter().map(|s| s.to_string()).collect();
        H {
            b: B2bua::new(cfg, set, routes, CallerIdPool::new(&pool), 7),
            t0,
            now: t0,
        }
    }

    fn default_h() -> H {
        setup_with(
            8,
            &two_trunks(),
            &[RouteConfig::default()],
            &["+4930999"],
            |_| {},
        )
    }

    impl H {
        fn drain(&mut self) -> Vec<Output> {
            let mut v = Vec::new();
            while let Some(o) = self.b.poll_output() {
                v.push(o);
                assert!(v.len() < 64, "output loop never ends");
            }
            v
        }

        fn events(&mut self) -> Vec<OriginationEventKind> {
            let mut v = Vec::new();
            while let Some(e) = self.b.poll_origination_event() {
                assert_eq!(e.correlation, 42);
                v.push(e.kind);
                assert!(v.len() < 64, "event loop never ends");
            }
            v
        }

        fn ev(&mut self, e: Event) -> Vec<Output> {
            self.b.handle_event(self.now, e);
            self.drain()
        }

        /// originate -> Allocate -> allocated -> INVITE toward a trunk.
        fn dial(&mut self, r: OriginateRequest) -> (OriginationId, OriginateInvite) {
            let id = self.b.originate(self.now, r).expect("originate");
            let out = self.drain();
            let [Output::Media(MediaRequest::Allocate { call, a_sdp })] = &out[..] else {
                panic!("expected Allocate, got {out:?}");
            };
            assert_eq!(*call, id.bridge());
            let a_sdp = text(a_sdp).to_string();
            self.b
                .handle_media_allocated(self.now, id.bridge(), sock(A_LOCAL), sock(B_LOCAL));
            let out = self.drain();
            let [Output::Sip(SipAction::Invite { bridge, invite })] = &out[..] else {
                panic!("expected Invite, got {out:?}");
            };
            assert_eq!(*bridge, id.bridge());
            (
                id,
                OriginateInvite {
                    a_sdp,
                    invite: invite.clone(),
                },
            )
        }

        fn started(&mut self, id: OriginationId, b: u32) {
            self.b
                .handle_invite_started(self.now, id.bridge(), Some(CallHandle(b)));
            assert_eq!(self.drain(), []);
        }

        /// A call answered by trunk leg `b`.
        fn connect(&mut self, b: u32) -> OriginationId {
            let (id, _) = self.dial(req(NUMBER));
            self.started(id, b);
            let out = self.ev(Event::Answered {
                call: CallHandle(b),
                sdp: Some(B_SDP.as_bytes().to_vec()),
            });
            assert_eq!(
                out,
                [Output::Media(MediaRequest::Install {
                    call: id.bridge(),
                    a_remote: None,
                    b_remote: Some(sock("203.0.113.9:50000")),
                })]
            );
            let ev = self.events();
            assert!(
                matches!(ev[..], [_, OriginationEventKind::Answered { .. }]),
                "{ev:?}"
            );
            id
        }
    }

    struct OriginateInvite {
        a_sdp: String,
        invite: OutboundInvite,
    }

    fn record_of(o: &Output) -> &CallRecord {
        match o {
            Output::Record(r) => r,
            _ => panic!("expected Record, got {o:?}"),
        }
    }

    fn dialing(trunk: &str, attempt: u32) -> OriginationEventKind {
        OriginationEventKind::Dialing {
            trunk: trunk.into(),
            attempt,
        }
    }

    fn failed_503(b: u32) -> Event {
        Event::Failed {
            call: CallHandle(b),
            status: 503,
            reason: "Service Unavailable".into(),
            challenge: None,
        }
    }

    #[test]
    fn originate_ring_answer_far_bye_ends_with_record() {
        let mut h = default_h();
        let (id, inv) = h.dial(req(NUMBER));
        assert_eq!(h.events(), [], "nothing to report before the INVITE leaves");
        // The shell allocates from the gateway's own offer: no remote for
        // the inner leg, the configured codecs and telephone-event.
        assert!(inv.a_sdp.contains("c=IN IP4 0.0.0.0\r\n"), "{}", inv.a_sdp);
        assert!(
            inv.a_sdp.contains("m=audio 9 RTP/AVP 8 0 101\r\n"),
            "{}",
            inv.a_sdp
        );
        let inv = inv.invite;
        assert_eq!(inv.trunk, TrunkId(0));
        assert_eq!(inv.target, sock("192.0.2.1:5060"));
        assert_eq!(inv.request_uri, "sip:+4930123@192.0.2.1:5060");
        assert_eq!(inv.to, "sip:+4930123@192.0.2.1:5060");
        assert_eq!(inv.from, "sip:+4930999@192.0.2.1:5060;user=phone");
        assert_eq!(
            inv.extra_headers,
            [(
                "P-Asserted-Identity".to_string(),
                "<sip:+4930999@192.0.2.1:5060;user=phone>".to_string()
            )]
        );
        // The trunk's offer points at the relay's leg B.
        let offer = text(&inv.sdp);
        assert!(offer.contains("c=IN IP4 192.0.2.10\r\n"), "{offer}");
        assert!(
            offer.contains("m=audio 20002 RTP/AVP 8 0 101\r\n"),
            "{offer}"
        );
        assert!(!offer.contains("0.0.0.0"), "{offer}");

        h.started(id, 100);
        assert_eq!(h.events(), [dialing("t1", 1)]);
        h.now += Duration::from_millis(300);
        assert_eq!(
            h.ev(Event::Ringing {
                call: CallHandle(100),
                sdp: None
            }),
            [],
            "no A leg to answer"
        );
        // A repeat says nothing new; 183 with SDP starts early media.
        h.ev(Event::Ringing {
            call: CallHandle(100),
            sdp: None,
        });
        let out = h.ev(Event::Progress {
            call: CallHandle(100),
            status: 183,
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert_eq!(
            out,
            [Output::Media(MediaRequest::Install {
                call: id.bridge(),
                a_remote: None,
                b_remote: Some(sock("203.0.113.9:50000")),
            })]
        );
        assert_eq!(
            h.events(),
            [
                OriginationEventKind::Ringing {
                    status: 180,
                    early_media: false
                },
                OriginationEventKind::Ringing {
                    status: 183,
                    early_media: true
                }
            ]
        );
        h.now += Duration::from_secs(2);
        let out = h.ev(Event::Answered {
            call: CallHandle(100),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert!(
            matches!(out[..], [Output::Media(MediaRequest::Update { .. })]),
            "{out:?}"
        );
        assert_eq!(
            h.events(),
            [OriginationEventKind::Answered {
                remote_sdp: B_SDP.as_bytes().to_vec()
            }]
        );
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 1);

        h.now += Duration::from_secs(30);
        let out = h.ev(Event::Ended {
            call: CallHandle(100),
            by_remote: true,
        });
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0],
            Output::Media(MediaRequest::Release { call: id.bridge() })
        );
        let r = record_of(&out[1]);
        assert_eq!(
            r.origin,
            CallOrigin::Originated {
                id,
                correlation: 42,
                account: "acct-7".into()
            }
        );
        assert_eq!(r.bridge, Some(id.bridge()));
        assert_eq!(
            (r.hangup, r.sip_status, r.q850_cause),
            (Hangup::Callee, 200, 16)
        );
        assert_eq!((r.caller.as_str(), r.callee.as_str()), ("+4930999", NUMBER));
        assert_eq!(r.a_call_id, "");
        assert_eq!(r.trunk.as_deref(), Some("t1"));
        assert_eq!((r.attempts, r.trunk_status), (1, Some(200)));
        assert_eq!(r.created, h.t0);
        assert_eq!(r.ringing, Some(h.t0 + Duration::from_millis(300)));
        assert_eq!(r.answered, Some(h.t0 + Duration::from_millis(2300)));
        assert_eq!(r.ended, h.now);
        let ev = h.b.poll_origination_event().unwrap();
        assert_eq!((ev.id, ev.correlation, ev.at), (id, 42, h.now));
        assert_eq!(
            ev.kind,
            OriginationEventKind::Ended {
                by: Hangup::Callee,
                q850: Q850_NORMAL_CLEARING
            }
        );
        assert_eq!(h.b.poll_origination_event(), None);
        assert_eq!(h.b.calls_len(), 0);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
        assert_eq!(h.b.poll_timeout(), None);
        assert_eq!(h.b.counters().originations, 1);
    }

    #[test]
    fn failover_on_503_then_second_trunk_answers() {
        let mut h = default_h();
        let (id, _) = h.dial(req(NUMBER));
        h.started(id, 100);
        let out = h.ev(failed_503(100));
        let [Output::Sip(SipAction::Invite { bridge, invite })] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(*bridge, id.bridge());
        assert_eq!(invite.trunk, TrunkId(1));
        assert_eq!(invite.target, sock("192.0.2.2:5060"));
        // The same number is presented on every attempt.
        assert_eq!(invite.from, "sip:+4930999@192.0.2.2;user=phone");
        h.started(id, 101);
        assert_eq!(h.events(), [dialing("t1", 1), dialing("t2", 2)]);
        h.ev(Event::Answered {
            call: CallHandle(101),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert!(matches!(
            h.events()[..],
            [OriginationEventKind::Answered { .. }]
        ));
        assert_eq!(h.b.counters().failovers, 1);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
        assert_eq!(h.b.trunks().calls(TrunkId(1)), 1);
    }

    #[test]
    fn all_trunks_failing_gives_failed_with_the_trunk_status() {
        let mut h = default_h();
        let (id, _) = h.dial(req(NUMBER));
        h.started(id, 100);
        h.ev(failed_503(100));
        h.started(id, 101);
        let out = h.ev(failed_503(101));
        assert_eq!(out.len(), 2, "{out:?}");
        let r = record_of(&out[1]);
        assert_eq!(
            (r.sip_status, r.q850_cause, r.hangup),
            (503, 41, Hangup::Callee)
        );
        assert_eq!((r.attempts, r.trunk_status), (2, Some(503)));
        assert_eq!(r.trunk.as_deref(), Some("t2"));
        assert_eq!(
            h.events(),
            [
                dialing("t1", 1),
                dialing("t2", 2),
                OriginationEventKind::Failed {
                    status: 503,
                    q850: 41
                }
            ]
        );
        assert_eq!(h.b.calls_len(), 0);

        // Busy does not fail over: the trunk's 486 at once.
        let (id, _) = h.dial(req(NUMBER));
        h.started(id, 102);
        h.ev(Event::Failed {
            call: CallHandle(102),
            status: 486,
            reason: "Busy Here".into(),
            challenge: None,
        });
        assert_eq!(
            h.events()[1..],
            [OriginationEventKind::Failed {
                status: 486,
                q850: 17
            }]
        );
        // No answer from either trunk: 408, cause 102.
        let (id, _) = h.dial(req(NUMBER));
        h.started(id, 103);
        h.ev(Event::TimedOut {
            call: CallHandle(103),
        });
        h.started(id, 104);
        h.ev(Event::TimedOut {
            call: CallHandle(104),
        });
        assert_eq!(
            h.events()[2..],
            [OriginationEventKind::Failed {
                status: 408,
                q850: Q850_TIMER_EXPIRY
            }]
        );
        assert_eq!(h.b.calls_len(), 0);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
        assert_eq!(h.b.trunks().calls(TrunkId(1)), 0);
    }

    #[test]
    fn hangup_while_ringing_cancels_and_fails_with_487() {
        let mut h = default_h();
        let (id, _) = h.dial(req(NUMBER));
        h.started(id, 100);
        h.ev(Event::Ringing {
            call: CallHandle(100),
            sdp: None,
        });
        h.events();
        assert_eq!(h.b.hangup_origination(h.now, id), Ok(()));
        let out = h.drain();
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Cancel {
                call: CallHandle(100)
            })
        );
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Release { call: id.bridge() })
        );
        let r = record_of(&out[2]);
        assert_eq!(
            (r.hangup, r.sip_status, r.q850_cause),
            (Hangup::Caller, 487, 16)
        );
        assert!(r.ringing.is_some() && r.answered.is_none());
        assert_eq!(
            h.events(),
            [OriginationEventKind::Failed {
                status: 487,
                q850: Q850_NORMAL_CLEARING
            }]
        );
        // Again: nothing more is sent or reported.
        assert_eq!(h.b.hangup_origination(h.now, id), Err(HangupError::Stale));
        assert_eq!(h.drain(), []);
        assert_eq!(h.events(), []);
        // The trunk's 487 to the CANCELled INVITE is no longer ours.
        let out = h.ev(Event::Failed {
            call: CallHandle(100),
            status: 487,
            reason: "Request Terminated".into(),
            challenge: None,
        });
        assert_eq!(out, []);
        assert_eq!(h.events(), []);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
    }

    #[test]
    fn hangup_before_the_invite_leaves_cancels_it_late() {
        let mut h = default_h();
        // While the ports are being allocated: they are released when
        // they come.
        let id = h.b.originate(h.now, req(NUMBER)).unwrap();
        h.drain();
        h.b.hangup_origination(h.now, id).unwrap();
        assert_eq!(
            h.drain()[0],
            Output::Media(MediaRequest::Release { call: id.bridge() })
        );
        h.b.handle_media_allocated(h.now, id.bridge(), sock(A_LOCAL), sock(B_LOCAL));
        assert_eq!(
            h.drain(),
            [Output::Media(MediaRequest::Release { call: id.bridge() })]
        );
        assert_eq!(
            h.events(),
            [OriginationEventKind::Failed {
                status: 487,
                q850: 16
            }]
        );
        // INVITE handed out, not yet taken: the leg it makes is cancelled.
        let id = h.b.originate(h.now, req(NUMBER)).unwrap();
        h.drain();
        h.b.handle_media_allocated(h.now, id.bridge(), sock(A_LOCAL), sock(B_LOCAL));
        h.drain();
        h.b.hangup_origination(h.now, id).unwrap();
        h.drain();
        h.b.handle_invite_started(h.now, id.bridge(), Some(CallHandle(9)));
        assert_eq!(
            h.drain(),
            [Output::Sip(SipAction::Cancel {
                call: CallHandle(9)
            })]
        );
        // Only the terminal event: the INVITE never counted as dialled.
        assert_eq!(h.events().len(), 1);
        assert_eq!(h.b.calls_len(), 0);
    }

    #[test]
    fn hangup_after_answer_sends_bye_and_ends() {
        let mut h = default_h();
        let id = h.connect(100);
        h.now += Duration::from_secs(5);
        h.b.hangup_origination(h.now, id).unwrap();
        let out = h.drain();
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Bye {
                call: CallHandle(100),
                headers: vec![]
            })
        );
        let r = record_of(&out[2]);
        assert_eq!(
            (r.hangup, r.sip_status, r.q850_cause),
            (Hangup::Caller, 200, 16)
        );
        assert_eq!(
            h.events(),
            [OriginationEventKind::Ended {
                by: Hangup::Caller,
                q850: Q850_NORMAL_CLEARING
            }]
        );
        // The BYE's own completion is not reported again.
        h.ev(Event::Ended {
            call: CallHandle(100),
            by_remote: false,
        });
        assert_eq!(h.events(), []);
        assert_eq!(h.b.hangup_origination(h.now, id), Err(HangupError::Stale));
    }

    #[test]
    fn bad_input_is_refused_with_its_reason() {
        let mut h = default_h();
        let mut refuse = |r: OriginateRequest| {
            let e = h.b.originate(h.now, r).unwrap_err();
            assert_eq!(h.drain(), []);
            e
        };
        use NumberError::*;
        use OriginateError::*;
        assert_eq!(refuse(req("")), BadNumber(Empty));
        assert_eq!(refuse(req("+")), BadNumber(Empty));
        assert_eq!(refuse(req("+49 30")), BadNumber(NotDigit { at: 3 }));
        assert_eq!(refuse(req("++49")), BadNumber(NotDigit { at: 1 }));
        assert_eq!(refuse(req("sip:bob@x")), BadNumber(NotDigit { at: 0 }));
        assert_eq!(refuse(req("49-30")), BadNumber(NotDigit { at: 2 }));
        let e164_16 = format!("+{}", "1".repeat(16));
        assert_eq!(
            refuse(req(&e164_16)),
            BadNumber(TooLong {
                digits: 16,
                max: E164_DIGITS_MAX
            })
        );
        assert_eq!(
            refuse(req(&"1".repeat(33))),
            BadNumber(TooLong {
                digits: 33,
                max: DIAL_DIGITS_MAX
            })
        );
        let mut r = req(NUMBER);
        r.caller_id = Some("official".into());
        assert_eq!(refuse(r), BadCallerId(NotDigit { at: 0 }));
        let mut r = req(NUMBER);
        r.account = "a\nb".into();
        assert_eq!(refuse(r), BadAccount);
        let mut r = req(NUMBER);
        r.account = "x".repeat(ACCOUNT_LEN_MAX + 1);
        assert_eq!(refuse(r), BadAccount);
        let mut r = req(NUMBER);
        r.max_duration = Some(Duration::ZERO);
        assert_eq!(refuse(r), BadMaxDuration);
        // The bounds themselves are fine.
        let mut r = req(&format!("+{}", "1".repeat(15)));
        r.account = "x".repeat(ACCOUNT_LEN_MAX);
        assert!(h.b.originate(h.now, r).is_ok());
        assert!(h.b.originate(h.now, req(&"1".repeat(32))).is_ok());
        let c = h.b.counters();
        assert_eq!((c.originations, c.originations_refused), (2, 12));
    }

    #[test]
    fn no_route_capacity_and_trunk_limits_are_distinct_errors() {
        // No route for the prefix, a contact-centre route, no trunks.
        let routes = [
            RouteConfig {
                prefix: "+49".into(),
                ..RouteConfig::default()
            },
            RouteConfig {
                prefix: "+4980".into(),
                to: crate::config::ROUTE_TO_CONTACT_CENTRE.into(),
                trunks: vec![],
            },
        ];
        let mut h = setup_with(4, &two_trunks(), &routes, &[], |_| {});
        assert_eq!(
            h.b.originate(h.now, req("+15551234")),
            Err(OriginateError::NoRoute)
        );
        assert_eq!(
            h.b.originate(h.now, req("+49800123")),
            Err(OriginateError::NoRoute)
        );
        let mut h = setup_with(4, &[], &[RouteConfig::default()], &[], |_| {});
        assert_eq!(
            h.b.originate(h.now, req(NUMBER)),
            Err(OriginateError::NoRoute)
        );

        // Every call slot taken (by an originated call here).
        let mut h = setup_with(1, &two_trunks(), &[RouteConfig::default()], &[], |_| {});
        h.b.originate(h.now, req(NUMBER)).unwrap();
        assert_eq!(
            h.b.originate(h.now, req(NUMBER)),
            Err(OriginateError::Capacity)
        );

        // Both trunks at max_calls: the inbound 503's reason and retry.
        let mut t = two_trunks();
        t[0].max_calls = 1;
        t[1].max_calls = 1;
        let mut h = setup_with(8, &t, &[RouteConfig::default()], &[], |_| {});
        h.b.originate(h.now, req(NUMBER)).unwrap();
        h.b.originate(h.now, req(NUMBER)).unwrap();
        let Err(OriginateError::TrunksUnavailable {
            reason,
            retry_after_s,
        }) = h.b.originate(h.now, req(NUMBER))
        else {
            panic!("expected TrunksUnavailable");
        };
        assert_eq!(reason, NoTrunkReason::CallsLimit);
        assert!(retry_after_s.is_some());
        assert_eq!(h.b.calls_len(), 2);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 1);
        assert_eq!(h.b.trunks().calls(TrunkId(1)), 1);

        // Nothing the gateway can offer.
        let mut h = setup_with(4, &two_trunks(), &[RouteConfig::default()], &[], |c| {
            c.codecs = vec!["opus".into()]
        });
        assert_eq!(
            h.b.originate(h.now, req(NUMBER)),
            Err(OriginateError::NoCodec)
        );
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
    }

    #[test]
    fn event_queue_overflow_is_counted_and_records_still_go() {
        let mut h = setup_with(8, &two_trunks(), &[RouteConfig::default()], &[], |c| {
            c.origination_events_max = 2
        });
        let (a, _) = h.dial(req(NUMBER));
        h.started(a, 100);
        let (b, _) = h.dial(req(NUMBER));
        h.started(b, 101);
        // Two Dialing events fill the queue; the ringing is dropped.
        h.ev(Event::Ringing {
            call: CallHandle(100),
            sdp: None,
        });
        assert_eq!(h.b.counters().origination_events_dropped, 1);
        let out = h.ev(failed_503(101));
        assert_eq!(out.len(), 1, "failover INVITE: {out:?}");
        h.b.hangup_origination(h.now, a).unwrap();
        let out = h.drain();
        assert!(matches!(out.last(), Some(Output::Record(_))), "{out:?}");
        assert_eq!(h.b.counters().origination_events_dropped, 2);
        assert_eq!(h.events(), [dialing("t1", 1), dialing("t1", 1)]);
        // Room again.
        h.b.hangup_origination(h.now, b).unwrap();
        assert!(matches!(
            h.events()[..],
            [OriginationEventKind::Failed { status: 487, .. }]
        ));
        assert_eq!(h.b.counters().origination_events_dropped, 2);
    }

    #[test]
    fn stale_ids_are_errors_and_do_not_touch_the_slot_successor() {
        let mut h = setup_with(1, &two_trunks(), &[RouteConfig::default()], &[], |_| {});
        let first = h.connect(100);
        h.ev(Event::Ended {
            call: CallHandle(100),
            by_remote: true,
        });
        h.events();
        assert_eq!(
            h.b.hangup_origination(h.now, first),
            Err(HangupError::Stale)
        );
        // The slot's next call has the same index, another generation.
        let second = h.connect(101);
        assert_eq!(first.bridge().index(), second.bridge().index());
        assert_ne!(first, second);
        assert_eq!(
            h.b.hangup_origination(h.now, first),
            Err(HangupError::Stale)
        );
        assert_eq!(h.drain(), []);
        assert_eq!(h.b.calls_len(), 1);
        assert_eq!(h.b.hangup_origination(h.now, second), Ok(()));
    }

    #[test]
    fn media_timeout_session_expiry_and_max_duration_end_with_cause_102() {
        let ended_by_gateway = [OriginationEventKind::Ended {
            by: Hangup::Gateway,
            q850: Q850_TIMER_EXPIRY,
        }];
        let mut h = default_h();
        // Media timeout: BYE to the trunk with the Reason.
        let id = h.connect(100);
        assert!(h.b.handle_media_timeout(h.now, id.bridge()));
        let out = h.drain();
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Bye {
                call: CallHandle(100),
                headers: vec![("Reason".into(), MAX_DURATION_REASON.into())]
            })
        );
        assert_eq!(record_of(&out[2]).hangup, Hangup::Gateway);
        assert_eq!(h.events(), ended_by_gateway);

        // Session timer: the endpoint BYEd the trunk already; nothing to
        // send, the call ends.
        let id = h.connect(101);
        let out = h.ev(Event::SessionExpired {
            call: CallHandle(101),
        });
        assert_eq!(
            out[0],
            Output::Media(MediaRequest::Release { call: id.bridge() })
        );
        assert_eq!(record_of(&out[1]).q850_cause, Q850_TIMER_EXPIRY);
        assert_eq!(h.events(), ended_by_gateway);

        // The request's maximum duration, shorter than the configured one.
        let mut r = req(NUMBER);
        r.max_duration = Some(Duration::from_secs(30));
        let (id, _) = h.dial(r);
        h.started(id, 102);
        h.ev(Event::Answered {
            call: CallHandle(102),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        h.events();
        assert_eq!(h.b.poll_timeout(), Some(h.now + Duration::from_secs(30)));
        h.now += Duration::from_secs(30);
        h.b.handle_timeout(h.now);
        let out = h.drain();
        assert!(
            matches!(&out[0], Output::Sip(SipAction::Bye { call, .. }) if *call == CallHandle(102)),
            "{out:?}"
        );
        assert_eq!(h.events(), ended_by_gateway);

        // A longer one is cut to the configured 60 s; reached while still
        // ringing it is a 408 failure and the INVITE is cancelled.
        let mut r = req(NUMBER);
        r.max_duration = Some(Duration::from_secs(3600));
        let (id, _) = h.dial(r);
        h.started(id, 103);
        h.ev(Event::Ringing {
            call: CallHandle(103),
            sdp: None,
        });
        h.events();
        assert_eq!(h.b.poll_timeout(), Some(h.now + Duration::from_secs(60)));
        h.now += Duration::from_secs(60);
        h.b.handle_timeout(h.now);
        let out = h.drain();
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Cancel {
                call: CallHandle(103)
            })
        );
        assert_eq!(
            h.events(),
            [OriginationEventKind::Failed {
                status: 408,
                q850: Q850_TIMER_EXPIRY
            }]
        );
        assert_eq!(h.b.calls_len(), 0);
    }

    #[test]
    fn digest_challenge_is_answered_without_a_new_attempt() {
        let mut t = two_trunks();
        t[0].username = Some("gw".into());
        t[0].password = Some("secret".into());
        let mut h = setup_with(8, &t, &[RouteConfig::default()], &["+4930999"], |_| {});
        let (id, _) = h.dial(req(NUMBER));
        h.started(id, 100);
        let out = h.ev(Event::Failed {
            call: CallHandle(100),
            status: 401,
            reason: "Unauthorized".into(),
            challenge: Some(Box::new(Challenged {
                challenges: vec!["Digest realm=\"carrier\", nonce=\"n1\", qop=\"auth\"".into()],
                call_id: "cid-1".into(),
                from_tag: "ft".into(),
                cseq: 1,
            })),
        });
        let [Output::Sip(SipAction::Invite { invite, .. })] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(invite.trunk, TrunkId(0));
        let resend = invite.resend.as_ref().expect("sent as a resend");
        assert_eq!((resend.call_id.as_str(), resend.cseq), ("cid-1", 2));
        assert!(invite
            .extra_headers
            .iter()
            .any(|(n, v)| n == "Authorization" && v.contains("username=\"gw\"")));
        h.started(id, 101);
        assert_eq!(h.events(), [dialing("t1", 1)], "same attempt");
        h.ev(Event::Answered {
            call: CallHandle(101),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert!(matches!(
            h.events()[..],
            [OriginationEventKind::Answered { .. }]
        ));
    }

    #[test]
    fn caller_id_override_anonymous_100rel_and_ipv6() {
        let mut t = vec![trunk("v6", 1, "[2001:db8::1]:5060")];
        t[0].require_100rel = true;
        let mut h = setup_with(8, &t, &[RouteConfig::default()], &[], |_| {});
        // No pool and no override: anonymous, no PAI.
        let (_, inv) = h.dial(req(NUMBER));
        assert!(inv.a_sdp.contains("c=IN IP6 ::\r\n"), "{}", inv.a_sdp);
        let inv = inv.invite;
        assert_eq!(inv.from, "sip:anonymous@anonymous.invalid");
        assert_eq!(
            inv.extra_headers,
            [("Require".to_string(), "100rel".to_string())]
        );
        // An override wins over the pool, in From and PAI.
        let mut h = default_h();
        let mut r = req(NUMBER);
        r.caller_id = Some("+4930555".into());
        let (id, inv) = h.dial(r);
        assert_eq!(inv.invite.from, "sip:+4930555@192.0.2.1:5060;user=phone");
        assert_eq!(
            inv.invite.extra_headers[0].1,
            "<sip:+4930555@192.0.2.1:5060;user=phone>"
        );
        h.b.hangup_origination(h.now, id).unwrap();
        assert_eq!(record_of(h.drain().last().unwrap()).caller, "+4930555");
    }

    #[test]
    fn trunk_reoffer_is_answered_by_the_gateway() {
        let mut h = default_h();
        let id = h.connect(100);
        let hold = B_SDP
            .replace("o=trunk 5 5", "o=trunk 5 6")
            .replace("50000", "50010")
            .replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
        let out = h.ev(Event::Reinvite {
            call: CallHandle(100),
            sdp: Some(hold.into_bytes()),
        });
        let [Output::Sip(SipAction::Respond {
            call,
            status: 200,
            sdp: Some(answer),
            ..
        }), Output::Media(MediaRequest::Update {
            call: media,
            a_remote: None,
            b_remote,
        })] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert_eq!((*call, *media), (CallHandle(100), id.bridge()));
        assert_eq!(*b_remote, Some(sock("203.0.113.9:50010")));
        let answer = text(answer);
        assert!(answer.contains("a=recvonly\r\n"), "{answer}");
        assert!(
            answer.contains("m=audio 20002 RTP/AVP 8 101\r\n"),
            "{answer}"
        );
        assert!(answer.contains("c=IN IP4 192.0.2.10\r\n"), "{answer}");
        // Our own origin, one version up from the offer we made.
        assert!(answer.contains(" 2 IN IP4 192.0.2.10\r\n"), "{answer}");
        assert!(answer.starts_with("v=0\r\no=kolokol "), "{answer}");
        assert!(!answer.contains("203.0.113.9"), "{answer}");
        // On hold by the far end: silence is not a media timeout.
        assert!(!h.b.handle_media_timeout(h.now, id.bridge()));
        // An offer without a usable codec keeps the session: 488.
        let out = h.ev(Event::Reinvite {
            call: CallHandle(100),
            sdp: Some(b"garbage".to_vec()),
        });
        assert!(matches!(
            out[..],
            [Output::Sip(SipAction::Respond { status: 488, .. })]
        ));
        assert_eq!(h.events(), [], "re-offers are not reported");
    }

    /// The gateway's endpoint with the B2BUA on it, and a trunk endpoint
    /// at t1's address; datagrams are delivered at once.
    struct E2e {
        gw: crate::sip::endpoint::SipEndpoint,
        trunk: crate::sip::endpoint::SipEndpoint,
        h: H,
        trunk_events: Vec<Event>,
        gw_sent: Vec<Vec<u8>>,
        other: Vec<Output>,
    }

    const GW: &str = "10.0.0.2:5060";
    const TRUNK: &str = "192.0.2.1:5060";

    impl E2e {
        fn new() -> Self {
            use crate::sip::endpoint::{EndpointConfig, SipEndpoint};
            E2e {
                gw: SipEndpoint::new(EndpointConfig::new(sock(GW), 0), 1),
                trunk: SipEndpoint::new(EndpointConfig::new(sock(TRUNK), 0), 2),
                h: default_h(),
                trunk_events: Vec::new(),
                gw_sent: Vec::new(),
                other: Vec::new(),
            }
        }

        /// What the shard shell does, until nothing moves.
        fn pump(&mut self) {
            use crate::sip::endpoint::Output as Ep;
            let now = self.h.now;
            for _ in 0..1000 {
                let mut moved = false;
                while let Some(o) = self.gw.poll_output() {
                    moved = true;
                    match o {
                        Ep::Transmit { dst, bytes, .. } => {
                            assert_eq!(dst, sock(TRUNK));
                            self.gw_sent.push(bytes.clone());
                            self.trunk.handle_datagram(now, sock(GW), &bytes);
                        }
                        Ep::Event(e) => self.h.b.handle_event(now, e),
                    }
                }
                while let Some(o) = self.trunk.poll_output() {
                    moved = true;
                    match o {
                        Ep::Transmit { bytes, .. } => {
                            self.gw.handle_datagram(now, sock(TRUNK), &bytes)
                        }
                        Ep::Event(e) => self.trunk_events.push(e),
                    }
                }
                while let Some(o) = self.h.b.poll_output() {
                    moved = true;
                    match o {
                        Output::Sip(a) => {
                            let r = a.apply(now, &mut self.gw);
                            match a {
                                SipAction::Invite { bridge, .. } => {
                                    self.h
                                        .b
                                        .handle_invite_started(now, bridge, r.ok().flatten())
                                }
                                _ => {
                                    r.unwrap();
                                }
                            }
                        }
                        Output::Media(MediaRequest::Allocate { call, .. }) => self
                            .h
                            .b
                            .handle_media_allocated(now, call, sock(A_LOCAL), sock(B_LOCAL)),
                        o => self.other.push(o),
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("never went idle");
        }

        /// Originates and returns the id and the trunk's leg.
        fn dial(&mut self) -> (OriginationId, CallHandle) {
            let id = self.h.b.originate(self.h.now, req(NUMBER)).unwrap();
            self.pump();
            let [Event::IncomingCall {
                call,
                request_user,
                from,
                sdp,
                ..
            }] = &self.trunk_events[..]
            else {
                panic!("{:?}", self.trunk_events);
            };
            assert_eq!(request_user.as_deref(), Some(NUMBER));
            assert!(
                from.contains("<sip:+4930999@192.0.2.1:5060;user=phone>"),
                "{from}"
            );
            let offer = text(sdp.as_ref().unwrap());
            assert!(offer.contains("m=audio 20002 RTP/AVP 8 0 101"), "{offer}");
            let call = *call;
            self.trunk_events.clear();
            (id, call)
        }
    }

    #[test]
    fn originated_calls_through_real_endpoints() {
        let mut e = E2e::new();
        let now = e.h.now;
        // Ring, answer, the far end hangs up.
        let (id, t) = e.dial();
        e.trunk.respond(now, t, 180, "Ringing", None).unwrap();
        e.pump();
        let body = Some(("application/sdp", B_SDP.as_bytes()));
        e.trunk.respond(now, t, 200, "OK", body).unwrap();
        e.pump();
        assert_eq!(e.trunk_events, [Event::Acked { call: t }]);
        e.trunk_events.clear();
        e.trunk.send_bye(now, t).unwrap();
        e.pump();
        assert_eq!(
            e.trunk_events,
            [Event::Ended {
                call: t,
                by_remote: false
            }],
            "the gateway answered the BYE"
        );
        e.trunk_events.clear();
        let ev = e.h.events();
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert_eq!(ev[0], dialing("t1", 1));
        assert_eq!(
            ev[1],
            OriginationEventKind::Ringing {
                status: 180,
                early_media: false
            }
        );
        assert!(
            matches!(&ev[2], OriginationEventKind::Answered { remote_sdp } if remote_sdp == B_SDP.as_bytes())
        );
        assert_eq!(
            ev[3],
            OriginationEventKind::Ended {
                by: Hangup::Callee,
                q850: 16
            }
        );
        let r = record_of(e.other.last().unwrap());
        assert!(matches!(r.origin, CallOrigin::Originated { id: i, .. } if i == id));
        e.other.clear();

        // Hung up after only a 100 Trying: the CANCEL reaches the trunk.
        let (id, t) = e.dial();
        assert!(!e.gw_sent.iter().any(|b| b.starts_with(b"CANCEL ")));
        e.h.b.hangup_origination(now, id).unwrap();
        e.pump();
        assert!(e.gw_sent.iter().any(|b| b.starts_with(b"CANCEL ")));
        assert_eq!(e.trunk_events, [Event::Cancelled { call: t }]);
        e.trunk_events.clear();
        assert_eq!(
            e.h.events()[1..],
            [OriginationEventKind::Failed {
                status: 487,
                q850: 16
            }]
        );

        // Hung up after the answer: the BYE reaches the trunk.
        let (id, t) = e.dial();
        e.trunk.respond(now, t, 200, "OK", body).unwrap();
        e.pump();
        e.trunk_events.clear();
        e.h.b.hangup_origination(now, id).unwrap();
        e.pump();
        assert_eq!(
            e.trunk_events,
            [Event::Ended {
                call: t,
                by_remote: true
            }]
        );
        assert_eq!(
            e.h.events().last(),
            Some(&OriginationEventKind::Ended {
                by: Hangup::Caller,
                q850: 16
            })
        );
        assert_eq!(e.h.b.calls_len(), 0);
        assert_eq!(
            e.h.b.counters().events_unknown,
            2,
            "the 487 and the BYE's end"
        );
    }

    #[test]
    fn offer_formats_follow_the_configured_codecs() {
        let c = |v: &[&str]| offer_formats(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            c(&["pcmu", "PCMA", "telephone-event", "PCMU"]),
            [
                (0, "PCMU/8000"),
                (8, "PCMA/8000"),
                (101, "telephone-event/8000")
            ]
        );
        assert_eq!(c(&["opus", "telephone-event"]), []);
        let sdp = offer_sdp(&["G722".to_string()], false, 1);
        let parsed = Sdp::parse(sdp.as_bytes()).unwrap();
        assert_eq!(parsed.media[0].formats, ["9", "101"]);
        assert!(parsed.media[0].address.is_unspecified());
    }
}
