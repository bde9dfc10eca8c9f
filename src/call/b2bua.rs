//! The B2BUA call (SPEC F-S3, F-S4, F-S5, F-S6): two independent dialogs
//! per bridged call, an inbound leg A and an outbound trunk leg B, with the
//! SDP of each rewritten to the gateway's media addresses (RFC 3264 offer/
//! answer, RFC 7092 §3.1 "media-relay B2BUA").
//!
//! [`B2bua`] is sans-IO. Its inputs are the [`Event`]s of the shard's
//! [`crate::sip::endpoint::SipEndpoint`] ([`B2bua::handle_event`]) and the
//! shell's answers to what it asked for ([`B2bua::handle_media_allocated`],
//! [`B2bua::handle_invite_started`], [`B2bua::handle_reoffer_answered`]);
//! timers go in with [`B2bua::handle_timeout`]. Its outputs
//! ([`B2bua::poll_output`]) are [`SipAction`]s for the endpoint,
//! [`MediaRequest`]s for the relay and a [`CallRecord`] per ended call;
//! [`B2bua::poll_timeout`] is the next deadline. After any `handle_*` the
//! driver drains `poll_output` until `None`, then re-reads `poll_timeout`.
//!
//! One call, step by step: an INVITE on A is routed by its Request-URI user
//! ([`Routes::lookup`]) and a trunk is chosen at once ([`TrunkSet::select`],
//! so a call that cannot be placed is refused before any media is
//! allocated); the shell is asked for the two legs' relay ports
//! ([`MediaRequest::Allocate`]); the B offer is A's SDP filtered to the
//! configured codecs and rewritten to B's relay address, sent in an INVITE
//! with the caller-ID pool's number ([`SipAction::Invite`]). Provisional
//! responses go back to A as 180/183, the 2xx as a 200 with B's answer
//! rewritten to A's relay address, and the relay is installed with both
//! remotes ([`MediaRequest::Install`]). A failed or timed-out attempt moves
//! to the next eligible trunk when [`should_failover`] says so. BYE on
//! either side ends the other; re-INVITE/UPDATE offers cross over rewritten
//! and are answered with the other side's answer.
//!
//! [`SipAction::apply`] carries an action out on the endpoint; a mid-call
//! offer crosses with the offerer's method (re-INVITE or UPDATE), its
//! answer comes back as [`Event::ReinviteAnswered`] or
//! [`Event::UpdateAnswered`]. A refresh (RFC 4028 §10: a re-INVITE or
//! UPDATE without SDP, or with the same SDP as that side's last) does not
//! cross: it is answered on its own leg with the SDP we last gave it.
//!
//! Trunks: a 401/407 with a challenge is answered once per attempt with an
//! INVITE to the same trunk carrying `Authorization`/`Proxy-Authorization`
//! from the trunk's credentials ([`TrunkSet::handle_challenge`],
//! [`TrunkSet::authorize`]; RFC 3261 §22.2: same Call-ID and From tag, next
//! CSeq). Without credentials, for another realm, or for a second challenge
//! in the same attempt the 401/407 is final (500 to A). Later INVITEs to
//! the trunk pre-authenticate with the stored challenge. A trunk with
//! `require_100rel` gets `Require: 100rel` (the endpoint PRACKs). Session
//! timers run in the endpoint on both legs; when one leg's session expires
//! ([`Event::SessionExpired`]) the other gets a BYE with cause 102.
//!
//! Trunk health (F-S4): every trunk with `options_interval_s > 0` is
//! probed with an out-of-dialog OPTIONS ([`SipAction::Options`], due times
//! from [`TrunkSet::options_due`] in [`B2bua::poll_timeout`] and
//! [`B2bua::handle_timeout`]); the answer ([`Event::OptionsAnswered`]) goes
//! to [`TrunkSet::handle_options_result`] through [`options_ok`], so
//! `down_after` failures in a row take a trunk down ([`TrunkSet::select`]
//! then skips it and calls fail over) and `up_after` answers bring it back.
//! A probe the endpoint refused ([`B2bua::handle_options_failed`]) or whose
//! answer never arrives (an event lost to a full queue: given up after
//! [`B2buaConfig::options_give_up`]) counts as a failure, so a trunk is
//! never left without probes. A trunk whose address needs DNS is not
//! probed (its INVITEs fail over anyway).
//!
//! Originated calls ([`B2bua::originate`], [`super::originate`]) are the
//! same kind of call without an A leg: the gateway itself is the caller, and
//! what would go to A (provisional, 2xx, final failure, BYE) becomes an
//! [`OriginationEvent`] on [`B2bua::poll_origination_event`]. Trunk
//! selection, failover, digest, 100rel, limits, the maximum duration, media
//! and session timers and the [`CallRecord`] are the B leg's as above.
//!
//! Not done here: late offers (an INVITE without SDP is refused with 488),
//! more than one relayed stream (other `m=` lines are disabled with port 0
//! in the offer to B), the `contact-centre` route target (404),
//! STIR/SHAKEN, and DNS for trunk addresses (a trunk `address` must be an
//! IP literal).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::originate::{
    failure_status, mirror_direction, next_origin, CallOrigin, Origin, OriginationEvent,
    OriginationEventKind, OriginationEvents, OriginationId, ORIGINATION_EVENTS_MAX_DEFAULT,
};
use crate::config::{CallerIdConfig, SipConfig};
use crate::config::{CallerIdMode, Transport, TRUNKS_MAX};
use crate::sdp::{Direction, MediaEndpoint, Rewrite, Sdp};
use crate::sip::digest::{select_challenge, RequestInfo};
use crate::sip::endpoint::{
    CallHandle, Challenged, EndpointError, Event, InviteParams, Remote, SipEndpoint,
};
use crate::sip::trunk::{
    caller_id_headers, options_ok, should_failover, transport_param, CallerIdPool, RouteTarget,
    Routes, TrunkId, TrunkMask, TrunkSet,
};

/// The `Reason` header (RFC 3326 §2) on the BYEs of a call cut at the
/// maximum duration: Q.850 cause 102 "recovery on timer expiry" (ITU-T
/// Q.850 §2.2.7.1). The release is started by a timer, and cause 102 keeps
/// such a cut apart from a party hanging up (cause 16) in every CDR and
/// ISUP interworking downstream (RFC 3398 maps 102 to a timeout).
pub const MAX_DURATION_REASON: &str = "Q.850;cause=102;text=\"Recovery on timer expiry\"";

/// Q.850 cause of a normal hang-up (cause 16, "normal call clearing").
pub const Q850_NORMAL_CLEARING: u8 = 16;

/// Q.850 cause of a timer expiry (cause 102).
pub const Q850_TIMER_EXPIRY: u8 = 102;

/// Longest called number taken from a Request-URI: E.164 allows 15 digits,
/// and national dialling plans with prefixes stay well under 32.
const CALLED_LEN_MAX: usize = 32;

/// Outputs one input produces at most is small (a handful); the queue
/// bound protects against a driver that forgets to drain.
const OUTPUTS_MAX_DEFAULT: usize = 4096;

/// The From URI of a caller without a usable identity (RFC 3323 §4.1.1.3).
const ANONYMOUS_URI: &str = "sip:anonymous@anonymous.invalid";

/// Startup knobs of a [`B2bua`].
#[derive(Clone, Debug)]
pub struct B2buaConfig {
    /// Concurrent bridged calls; beyond it a new INVITE gets 503.
    pub calls_max: usize,
    /// A call is ended this long after its INVITE arrived, however it is
    /// going (F-S6; `sip.max_call_duration_s`).
    pub max_call_duration: Duration,
    /// Encoding names kept in offers toward B (`sip.codecs`, compared
    /// without case); `telephone-event` (RFC 4733) is always kept.
    pub codecs: Vec<String>,
    /// Where the caller-ID pool's number is written (F-S5).
    pub caller_id_mode: CallerIdMode,
    /// Pending outputs before new ones are dropped and counted.
    pub outputs_max: usize,
    /// A probe with no [`Event::OptionsAnswered`] this long after it was
    /// sent counts as failed (the event was lost). Longer than the
    /// endpoint's Timer F (64*T1), which reports a timeout itself.
    pub options_give_up: Duration,
    /// Pending [`OriginationEvent`]s before new ones are dropped and
    /// counted ([`B2buaCounters::origination_events_dropped`]).
    pub origination_events_max: usize,
}

/// Margin of [`B2buaConfig::options_give_up`] over Timer F: the endpoint's
/// own timeout always arrives first.
const OPTIONS_GIVE_UP_MARGIN: Duration = Duration::from_secs(8);

impl B2buaConfig {
    /// Config with `calls_max` and the [`crate::config::SipConfig`] defaults
    /// otherwise (3 h maximum duration, PCMA/PCMU/telephone-event, PAI).
    pub fn new(calls_max: usize) -> Self {
        B2buaConfig {
            calls_max,
            max_call_duration: Duration::from_secs(3 * 3600),
            codecs: vec!["PCMA".into(), "PCMU".into(), "telephone-event".into()],
            caller_id_mode: CallerIdMode::Pai,
            outputs_max: OUTPUTS_MAX_DEFAULT,
            options_give_up: Duration::from_millis(64 * 500) + OPTIONS_GIVE_UP_MARGIN,
            origination_events_max: ORIGINATION_EVENTS_MAX_DEFAULT,
        }
    }

    /// Config from the validated `[sip]` and `[caller_id]` sections, for a
    /// shard that holds `calls_max` calls (its share of `sip.calls_max`).
    pub fn from_config(sip: &SipConfig, caller_id: &CallerIdConfig, calls_max: usize) -> Self {
        B2buaConfig {
            calls_max,
            max_call_duration: Duration::from_secs(sip.max_call_duration_s),
            codecs: sip.codecs.clone(),
            caller_id_mode: caller_id.mode,
            outputs_max: OUTPUTS_MAX_DEFAULT,
            options_give_up: Duration::from_millis(64 * sip.t1_ms) + OPTIONS_GIVE_UP_MARGIN,
            origination_events_max: ORIGINATION_EVENTS_MAX_DEFAULT,
        }
    }
}

/// Address of a bridged call in the [`B2bua`]'s slab. The generation makes
/// a handle to an ended call stale instead of pointing at its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BridgeId {
    index: u32,
    generation: u32,
}

impl BridgeId {
    /// A handle for unit tests of the layers above.
    #[cfg(test)]
    pub(crate) fn for_test(index: u32) -> BridgeId {
        BridgeId {
            index,
            generation: 0,
        }
    }

    /// The slot index (below `calls_max`).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// An INVITE toward a trunk, owned (see [`OutboundInvite::with_params`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundInvite {
    /// The trunk this attempt goes to.
    pub trunk: TrunkId,
    /// The trunk's address.
    pub target: SocketAddr,
    /// The transport toward the trunk.
    pub transport: Transport,
    /// `sip:<called>@<trunk address>`.
    pub request_uri: String,
    /// From URI (the pool number in `From`/`Both` mode, else the caller's).
    pub from: String,
    /// To URI.
    pub to: String,
    /// The SDP offer, rewritten to B's relay address.
    pub sdp: Vec<u8>,
    /// P-Asserted-Identity and the like.
    pub extra_headers: Vec<(String, String)>,
    /// Set when this INVITE answers a 401/407: it goes out as
    /// [`SipEndpoint::invite_resend`] with the refused INVITE's Call-ID and
    /// From tag (RFC 3261 §22.2).
    pub resend: Option<InviteResend>,
}

/// The identity an INVITE answering a challenge keeps from the refused one
/// (RFC 3261 §22.2): same Call-ID and From tag, the next CSeq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteResend {
    /// The Call-ID.
    pub call_id: String,
    /// The From tag.
    pub from_tag: String,
    /// The CSeq number of the new INVITE.
    pub cseq: u32,
}

impl OutboundInvite {
    /// Calls `f` with the borrowed [`InviteParams`] for
    /// [`crate::sip::endpoint::SipEndpoint::invite`].
    pub fn with_params<R>(&self, f: impl FnOnce(&InviteParams<'_>) -> R) -> R {
        let headers: Vec<(&str, &str)> = self
            .extra_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        f(&InviteParams {
            target: self.target,
            transport: self.transport,
            request_uri: &self.request_uri,
            from: &self.from,
            from_display: None,
            to: &self.to,
            call_id: self.resend.as_ref().map(|r| r.call_id.as_str()),
            sdp: Some(&self.sdp),
            extra_headers: &headers,
        })
    }
}

/// Which request carries a mid-dialog offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReofferMethod {
    /// re-INVITE (RFC 3261 §14).
    Invite,
    /// UPDATE (RFC 3311).
    Update,
}

/// What the endpoint should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SipAction {
    /// Answer the leg's INVITE or pending re-INVITE/UPDATE
    /// ([`crate::sip::endpoint::SipEndpoint::respond`]).
    Respond {
        /// The leg.
        call: CallHandle,
        /// Status code.
        status: u16,
        /// Reason phrase.
        reason: &'static str,
        /// Extra headers (Retry-After, Reason).
        headers: Vec<(String, String)>,
        /// SDP body.
        sdp: Option<Vec<u8>>,
    },
    /// Start the B leg; report the handle with
    /// [`B2bua::handle_invite_started`].
    Invite {
        /// The bridged call.
        bridge: BridgeId,
        /// What to send.
        invite: OutboundInvite,
    },
    /// Cancel the B leg's INVITE
    /// ([`crate::sip::endpoint::SipEndpoint::cancel`]).
    Cancel {
        /// The leg.
        call: CallHandle,
    },
    /// End a confirmed leg with a BYE.
    Bye {
        /// The leg.
        call: CallHandle,
        /// Extra headers (the RFC 3326 `Reason`).
        headers: Vec<(String, String)>,
    },
    /// Send a mid-dialog offer on the leg; the answer comes back as an
    /// endpoint event. If [`SipAction::apply`] fails, report it with
    /// [`B2bua::handle_reoffer_answered`] (status 491, no SDP).
    Reoffer {
        /// The leg.
        call: CallHandle,
        /// re-INVITE or UPDATE, as the other side used.
        method: ReofferMethod,
        /// The offer, rewritten to this leg's relay address.
        sdp: Vec<u8>,
    },
    /// Probe a trunk with an out-of-dialog OPTIONS
    /// ([`SipEndpoint::send_options`], tagged with the trunk index); the
    /// answer comes back as [`Event::OptionsAnswered`]. If
    /// [`SipAction::apply`] fails, report it with
    /// [`B2bua::handle_options_failed`].
    Options {
        /// The trunk probed.
        trunk: TrunkId,
        /// The trunk's address.
        target: SocketAddr,
        /// The transport toward the trunk.
        transport: Transport,
        /// `sip:<trunk host[:port]>`, also the To URI.
        request_uri: String,
    },
}

impl SipAction {
    /// Carries the action out on the shard's endpoint. For
    /// [`SipAction::Invite`] it returns the new leg, which the shell passes
    /// to [`B2bua::handle_invite_started`] (an error there is `None`).
    ///
    /// [`SipAction::Invite`] with [`OutboundInvite::resend`] set goes out
    /// through [`SipEndpoint::invite_resend`].
    ///
    /// [`SipAction::Reoffer`] goes out with the offerer's method: a
    /// re-INVITE ([`SipEndpoint::send_reinvite`]) or an UPDATE
    /// ([`SipEndpoint::send_update`]); the answer comes back as
    /// [`Event::ReinviteAnswered`] or [`Event::UpdateAnswered`], which
    /// [`B2bua::handle_event`] takes.
    pub fn apply(
        &self,
        now: Instant,
        ep: &mut SipEndpoint,
    ) -> Result<Option<CallHandle>, EndpointError> {
        match self {
            SipAction::Respond {
                call,
                status,
                reason,
                headers,
                sdp,
            } => {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let body = sdp.as_deref().map(|b| ("application/sdp", b));
                ep.respond_with_headers(now, *call, *status, reason, &h, body)?;
                Ok(None)
            }
            SipAction::Invite { invite, .. } => invite
                .with_params(|p| match &invite.resend {
                    Some(r) => ep.invite_resend(now, p, &r.from_tag, r.cseq),
                    None => ep.invite(now, p),
                })
                .map(Some),
            SipAction::Cancel { call } => ep.cancel(now, *call).map(|()| None),
            SipAction::Bye { call, headers } => {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                ep.send_bye_with_headers(now, *call, &h).map(|()| None)
            }
            SipAction::Reoffer { call, method, sdp } => match method {
                ReofferMethod::Invite => ep.send_reinvite(now, *call, sdp),
                ReofferMethod::Update => ep.send_update(now, *call, sdp),
            }
            .map(|()| None),
            SipAction::Options {
                trunk,
                target,
                transport,
                request_uri,
            } => ep
                .send_options(
                    now,
                    Remote {
                        addr: *target,
                        transport: *transport,
                    },
                    request_uri,
                    trunk.0.into(),
                )
                .map(|()| None),
        }
    }
}

/// What the relay should do. The shell allocates both legs' ports on the
/// shard that owns the call; RTCP is at the RTP port + 1 unless muxed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaRequest {
    /// Allocate the two legs; answer with [`B2bua::handle_media_allocated`]
    /// or [`B2bua::handle_media_failed`].
    Allocate {
        /// The bridged call.
        call: BridgeId,
        /// A's SDP offer as received.
        a_sdp: Vec<u8>,
    },
    /// Start relaying: A's packets go to `b_remote`, B's to `a_remote`.
    Install {
        /// The bridged call.
        call: BridgeId,
        /// A's RTP address from its SDP (None: on hold with port 0).
        a_remote: Option<SocketAddr>,
        /// B's RTP address from its SDP.
        b_remote: Option<SocketAddr>,
    },
    /// New remotes after a re-offer (or the 2xx after early media).
    Update {
        /// The bridged call.
        call: BridgeId,
        /// A's RTP address.
        a_remote: Option<SocketAddr>,
        /// B's RTP address.
        b_remote: Option<SocketAddr>,
    },
    /// Free both legs (also cancels an allocation still in progress; a
    /// release of nothing is ignored).
    Release {
        /// The bridged call.
        call: BridgeId,
    },
}

/// Who ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hangup {
    /// The caller (BYE or CANCEL on A); for an originated call, the
    /// control plane ([`B2bua::hangup_origination`]).
    Caller,
    /// The callee or its network (BYE on B, or a final failure).
    Callee,
    /// The gateway (refusal, maximum duration, ACK timeout, bad SDP).
    Gateway,
}

/// What a CDR needs of one call (F-C1). Times are monotonic; the shell
/// turns them into UTC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The bridged call; None for an INVITE refused before it got a slot
    /// (capacity, route, trunk limits, SDP).
    pub bridge: Option<BridgeId>,
    /// Inbound (A called in) or originated by the control plane, with the
    /// latter's correlation and account.
    pub origin: CallOrigin,
    /// A's Call-ID (empty for an originated call: it has no A leg).
    pub a_call_id: String,
    /// A's From URI; for an originated call, the number presented (the
    /// override or the pool's; empty when none).
    pub caller: String,
    /// The called number.
    pub callee: String,
    /// The last trunk tried, by name.
    pub trunk: Option<String>,
    /// INVITE attempts toward trunks.
    pub attempts: u32,
    /// The last trunk's final status (None: timeout or never reached).
    pub trunk_status: Option<u16>,
    /// The final status A got (200 when the call was answered).
    pub sip_status: u16,
    /// The Q.850 cause of the release (RFC 3398 §8.2.6.1 for failures).
    pub q850_cause: u8,
    /// Who ended the call.
    pub hangup: Hangup,
    /// When A's INVITE arrived.
    pub created: Instant,
    /// First 180/183 from B.
    pub ringing: Option<Instant>,
    /// 2xx from B.
    pub answered: Option<Instant>,
    /// When the call ended.
    pub ended: Instant,
}

/// One thing for the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// For the SIP endpoint.
    Sip(SipAction),
    /// For the relay.
    Media(MediaRequest),
    /// A call ended: its record for the CDR writer.
    Record(CallRecord),
}

/// What the B2BUA refused or ignored, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct B2buaCounters {
    /// INVITEs refused with 503 because every call slot was taken.
    pub rejected_full: u64,
    /// INVITEs refused with 404 (no route, no trunk for the route).
    pub rejected_no_route: u64,
    /// INVITEs refused with 503 because the trunks were at a limit.
    pub rejected_no_trunk: u64,
    /// Offers refused with 488 (no SDP, bad SDP, no allowed codec).
    pub rejected_sdp: u64,
    /// Attempts moved to another trunk.
    pub failovers: u64,
    /// Events for legs the B2BUA does not know (already ended).
    pub events_unknown: u64,
    /// Outputs dropped because the queue was full.
    pub outputs_dropped: u64,
    /// Connected calls ended because their media stopped.
    pub media_timeouts: u64,
    /// OPTIONS probes asked of the endpoint.
    pub options_sent: u64,
    /// Probes the endpoint refused ([`B2bua::handle_options_failed`]),
    /// counted as failed probes.
    pub options_send_failed: u64,
    /// Probes with no answer event within
    /// [`B2buaConfig::options_give_up`], counted as failed probes.
    pub options_lost: u64,
    /// Probes not sent: the trunk address needs DNS.
    pub options_skipped: u64,
    /// [`Event::OptionsAnswered`] for no probe in flight (ignored).
    pub options_unknown: u64,
    /// Calls placed by [`B2bua::originate`].
    pub originations: u64,
    /// [`B2bua::originate`] calls refused with an error.
    pub originations_refused: u64,
    /// [`OriginationEvent`]s dropped because their queue was full.
    pub origination_events_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for [`B2bua::handle_media_allocated`].
    Allocating,
    /// The INVITE went out; waiting for [`B2bua::handle_invite_started`].
    Starting,
    /// B is being invited (no provisional yet).
    Inviting,
    /// B sent 180/183.
    Early,
    /// B answered; A got the 200.
    Connected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// No provisional answer from the trunk within its `timeout_ms`.
    Attempt,
    /// `max_call_duration`.
    MaxDuration,
}

/// A mid-dialog offer crossing from `offerer` to the other side.
#[derive(Clone, Debug)]
struct Pending {
    offerer: Side,
    offer_remote: Option<SocketAddr>,
    offer_sdp: Vec<u8>,
    /// The offer as the offerer sent it.
    offer_got: Vec<u8>,
}

/// Who is on the A side of a [`Call`].
#[derive(Debug)]
pub(super) enum ALeg {
    /// The inbound leg that sent the INVITE.
    Inbound(CallHandle),
    /// Nobody: the control plane placed the call ([`B2bua::originate`]);
    /// what A would hear goes out as [`OriginationEvent`]s.
    Originated(Origin),
}

impl ALeg {
    /// The inbound leg's handle (None for an originated call).
    fn handle(&self) -> Option<CallHandle> {
        match self {
            ALeg::Inbound(h) => Some(*h),
            ALeg::Originated(_) => None,
        }
    }
}

/// What [`B2bua::admit`] needs to start a call; the rest of [`Call`]
/// starts empty.
pub(super) struct Admit {
    pub a: ALeg,
    pub route: TrunkMask,
    pub trunk: TrunkId,
    pub caller: String,
    pub callee: String,
    pub a_call_id: String,
    /// The offer B's is made from (A's, codec-filtered; or the gateway's
    /// own for an originated call).
    pub a_offer: Sdp,
    /// The bytes for [`MediaRequest::Allocate`].
    pub a_sdp: Vec<u8>,
    /// A's offer as received (None for an originated call).
    pub a_got: Option<Vec<u8>>,
    pub max_duration: Duration,
}

#[derive(Debug)]
struct Call {
    generation: u32,
    state: State,
    a: ALeg,
    b: Option<CallHandle>,
    route: TrunkMask,
    /// The trunk of the current attempt; counted in the [`TrunkSet`] while
    /// `trunk_counted`.
    trunk: TrunkId,
    trunk_counted: bool,
    tried: Vec<TrunkId>,
    caller: String,
    callee: String,
    a_call_id: String,
    /// A's offer after codec filtering.
    a_offer: Sdp,
    a_local: Option<SocketAddr>,
    b_local: Option<SocketAddr>,
    /// The offer toward B (the same on every trunk).
    b_offer: Vec<u8>,
    a_remote: Option<SocketAddr>,
    b_remote: Option<SocketAddr>,
    installed: bool,
    /// The last SDP we gave A and B (for an offerless re-INVITE).
    a_last: Option<Vec<u8>>,
    b_last: Option<Vec<u8>>,
    /// The last SDP A and B gave us, as received: an offer equal to it
    /// (or with the same `o=` line) is a session refresh, answered on its
    /// own leg (RFC 4028 §10, RFC 3264 §8).
    a_got: Option<Vec<u8>>,
    b_got: Option<Vec<u8>>,
    /// The INVITE of the current attempt, to send again with credentials.
    last_invite: Option<OutboundInvite>,
    /// This attempt already answered a challenge: another 401/407 is final
    /// (RFC 3261 §22.2, once per challenge).
    auth_answered: bool,
    pending: Option<Pending>,
    attempt_deadline: Option<Instant>,
    max_deadline: Instant,
    attempts: u32,
    trunk_status: Option<u16>,
    created: Instant,
    ringing: Option<Instant>,
    answered: Option<Instant>,
}

/// The B2BUA of one shard: bridged calls in a bounded slab.
#[derive(Debug)]
pub struct B2bua {
    pub(super) cfg: B2buaConfig,
    pub(super) trunks: TrunkSet,
    pub(super) routes: Routes,
    pub(super) caller_ids: CallerIdPool,
    pub(super) rng: StdRng,
    calls: Vec<Option<Call>>,
    generations: Vec<u32>,
    pub(super) free: Vec<u32>,
    /// Endpoint leg to (slot, side).
    legs: HashMap<CallHandle, (u32, Side)>,
    /// Deadlines, checked against the call on pop (lazy deletion).
    timers: BinaryHeap<Reverse<(Instant, u32, u32, TimerKind)>>,
    outputs: VecDeque<Output>,
    /// Events of originated calls ([`B2bua::poll_origination_event`]).
    pub(super) origination_events: OriginationEvents,
    pub(super) counters: B2buaCounters,
    /// Per trunk: when the OPTIONS probe in flight was handed out, for
    /// [`B2buaConfig::options_give_up`].
    probes: Vec<Option<Instant>>,
}

impl B2bua {
    /// A B2BUA with room for `cfg.calls_max` calls. `rng_seed` seeds the
    /// weighted trunk draw.
    pub fn new(
        cfg: B2buaConfig,
        trunks: TrunkSet,
        routes: Routes,
        caller_ids: CallerIdPool,
        rng_seed: u64,
    ) -> Self {
        assert!(cfg.calls_max > 0, "calls_max must be positive");
        assert!(cfg.calls_max <= u32::MAX as usize, "calls_max fits a u32");
        let n = cfg.calls_max;
        let outputs_max = cfg.outputs_max.max(16);
        let probes = vec![None; trunks.len()];
        B2bua {
            trunks,
            routes,
            caller_ids,
            rng: StdRng::seed_from_u64(rng_seed),
            calls: (0..n).map(|_| None).collect(),
            generations: vec![0; n],
            free: (0..n as u32).rev().collect(),
            legs: HashMap::with_capacity(2 * n),
            timers: BinaryHeap::with_capacity(2 * n),
            outputs: VecDeque::with_capacity(outputs_max),
            origination_events: OriginationEvents::new(cfg.origination_events_max),
            counters: B2buaCounters::default(),
            probes,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &B2buaConfig {
        &self.cfg
    }

    /// Takes a reloaded trunk and route configuration (SIGHUP): see
    /// [`TrunkSet::reconfigure`]; on error nothing changes.
    pub fn reload(&mut self, trunks: TrunkSet, routes: Routes) -> Result<(), String> {
        self.trunks.reconfigure(trunks)?;
        self.routes = routes;
        Ok(())
    }

    /// The trunk set (health, limits, events for metrics).
    pub fn trunks_ref(&self) -> &TrunkSet {
        &self.trunks
    }

    /// The trunk set (health, limits), mutable.
    pub fn trunks(&mut self) -> &mut TrunkSet {
        &mut self.trunks
    }

    /// Live calls.
    pub fn calls_len(&self) -> usize {
        self.cfg.calls_max - self.free.len()
    }

    /// What was refused or dropped.
    pub fn counters(&self) -> B2buaCounters {
        self.counters
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline (maximum duration, trunk answer timeout, the
    /// next OPTIONS probe or the give-up of one in flight).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let mut call = None;
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if self.timer_live(t) {
                call = Some(t.0);
                break;
            }
            self.timers.pop();
        }
        let give_up = self.cfg.options_give_up;
        let lost = self
            .probes
            .iter()
            .flatten()
            .map(|sent| *sent + give_up)
            .min();
        [call, self.trunks.poll_timeout(), lost]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires every deadline at or before `now`: call timers, then OPTIONS
    /// probes given up ([`B2buaConfig::options_give_up`]) and due
    /// ([`SipAction::Options`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.call_timeouts(now);
        self.options_timeouts(now);
    }

    fn call_timeouts(&mut self, now: Instant) {
        // Each call has at most two live deadlines, so this loop ends after
        // at most 2 * calls_max live entries plus the stale ones it drops.
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.0 > now {
                break;
            }
            self.timers.pop();
            if !self.timer_live(t) {
                continue;
            }
            let (_, index, _, kind) = t;
            match kind {
                TimerKind::Attempt => self.attempt_timeout(now, index),
                TimerKind::MaxDuration => self.max_duration(now, index),
            }
        }
    }

    /// An event from the endpoint.
    pub fn handle_event(&mut self, now: Instant, ev: Event) {
        match ev {
            Event::IncomingCall {
                call,
                request_user,
                from,
                call_id,
                sdp,
                ..
            } => self.incoming(now, call, request_user, &from, call_id, sdp),
            Event::Ringing { call, sdp } => self.provisional(now, call, 180, sdp),
            Event::Progress { call, status, sdp } => self.provisional(now, call, status, sdp),
            Event::Answered { call, sdp } => self.answered(now, call, sdp),
            Event::Failed {
                call,
                status,
                challenge,
                ..
            } => self.b_failed(now, call, Some(status), challenge.as_deref()),
            Event::TimedOut { call } => self.b_failed(now, call, None, None),
            Event::Cancelled { call } => self.a_cancelled(now, call),
            Event::Acked { .. } => {}
            Event::AckTimeout { call } => self.ack_timeout(now, call),
            Event::Reinvite { call, sdp } => self.reoffer(now, call, ReofferMethod::Invite, sdp),
            Event::Update { call, sdp } => self.reoffer(now, call, ReofferMethod::Update, sdp),
            Event::UpdateAnswered { call, status, sdp }
            | Event::ReinviteAnswered { call, status, sdp } => {
                self.handle_reoffer_answered(now, call, status, sdp)
            }
            Event::SessionExpired { call } => self.session_expired(now, call),
            Event::Ended { call, .. } => self.ended(now, call),
            Event::OptionsAnswered { tag, status } => self.options_answered(now, tag, status),
        }
    }

    /// The endpoint refused the [`SipAction::Options`] for `trunk`
    /// (transaction table full): counted, and a failed probe.
    pub fn handle_options_failed(&mut self, now: Instant, trunk: TrunkId) {
        let Some(slot) = self.probes.get_mut(trunk.index()) else {
            return;
        };
        if slot.take().is_some() {
            self.counters.options_send_failed += 1;
            self.trunks.handle_options_result(now, trunk, false);
        }
    }

    /// Gives up probes whose answer never came, then hands out the due
    /// ones. Both loops visit each trunk once (at most [`TRUNKS_MAX`]).
    fn options_timeouts(&mut self, now: Instant) {
        let give_up = self.cfg.options_give_up;
        for i in 0..self.probes.len() {
            if self.probes[i].is_some_and(|sent| sent + give_up <= now) {
                self.probes[i] = None;
                self.counters.options_lost += 1;
                self.trunks
                    .handle_options_result(now, TrunkId(i as u16), false);
            }
        }
        let mut due = TrunkMask::empty();
        for id in self.trunks.options_due(now) {
            due.insert(id);
        }
        for i in 0..self.trunks.len() {
            let id = TrunkId(i as u16);
            if !due.contains(id) {
                continue;
            }
            let cfg = self.trunks.config(id);
            let Some(target) = trunk_target(&cfg.address, cfg.transport) else {
                self.counters.options_skipped += 1;
                self.trunks.options_skipped(id);
                continue;
            };
            let tp = match cfg.transport {
                Transport::Udp => String::new(),
                t => format!(";transport={}", transport_param(t)),
            };
            let request_uri = format!("sip:{}{}", cfg.address, tp);
            self.probes[i] = Some(now);
            self.counters.options_sent += 1;
            self.push(Output::Sip(SipAction::Options {
                trunk: id,
                target,
                transport: cfg.transport,
                request_uri,
            }));
        }
    }

    /// The answer to the probe tagged `tag` (the trunk index).
    fn options_answered(&mut self, now: Instant, tag: u64, status: Option<u16>) {
        let probe = usize::try_from(tag)
            .ok()
            .and_then(|i| self.probes.get_mut(i))
            .and_then(Option::take);
        if probe.is_none() {
            // Not ours, or already given up.
            self.counters.options_unknown += 1;
            return;
        }
        // probes has one entry per trunk, so tag < trunks.len() <= u16::MAX.
        let id = TrunkId(tag as u16);
        self.trunks
            .handle_options_result(now, id, options_ok(status));
    }

    /// The shell allocated the call's two legs: `a_local` is the relay
    /// address A sends to, `b_local` the one B sends to.
    pub fn handle_media_allocated(
        &mut self,
        now: Instant,
        bridge: BridgeId,
        a_local: SocketAddr,
        b_local: SocketAddr,
    ) {
        let Some(index) = self.live(bridge) else {
            // The call ended while the ports were being allocated.
            self.push(Output::Media(MediaRequest::Release { call: bridge }));
            return;
        };
        let c = self.call_mut(index);
        if c.state != State::Allocating {
            return;
        }
        c.a_local = Some(a_local);
        c.b_local = Some(b_local);
        let offer = rewrite_to(&c.a_offer, b_local);
        c.b_offer = offer.to_string_crlf().into_bytes();
        c.b_last = Some(c.b_offer.clone());
        self.start_attempt(now, index);
    }

    /// The shell could not allocate media ports: A gets 503 (an originated
    /// call fails with 503).
    pub fn handle_media_failed(&mut self, now: Instant, bridge: BridgeId) {
        let Some(index) = self.live(bridge) else {
            return;
        };
        if let Some(a) = self.call_mut(index).a.handle() {
            // Out of relay ports is overload like a full call table: tell
            // the caller when to come back (RFC 3261 §21.5.4).
            let retry = vec![("Retry-After".to_string(), RETRY_AFTER_FULL_S.to_string())];
            self.respond(a, 503, retry, None);
        }
        self.finish(now, index, 503, 41, Hangup::Gateway);
    }

    /// The endpoint took (`Some(handle)`) or refused (`None`) the
    /// [`SipAction::Invite`] for `bridge`.
    pub fn handle_invite_started(
        &mut self,
        now: Instant,
        bridge: BridgeId,
        leg: Option<CallHandle>,
    ) {
        let Some(index) = self.live(bridge) else {
            if let Some(h) = leg {
                // A gave up meanwhile: drop the new leg at once.
                self.push(Output::Sip(SipAction::Cancel { call: h }));
            }
            return;
        };
        if self.call_mut(index).state != State::Starting {
            return;
        }
        match leg {
            Some(h) => {
                self.legs.insert(h, (index, Side::B));
                let c = self.call_mut(index);
                c.b = Some(h);
                c.state = State::Inviting;
                // A new attempt (not the same one again with credentials).
                if matches!(c.a, ALeg::Originated(_)) && !c.auth_answered {
                    let (trunk, attempt) = (c.trunk, c.attempts);
                    let trunk = self.trunks.config(trunk).name.clone();
                    self.origination_event(
                        now,
                        index,
                        OriginationEventKind::Dialing { trunk, attempt },
                    );
                }
            }
            // The endpoint is full: not the trunk's fault, but another
            // trunk will not help either; 503 fails over like a trunk 503
            // would and ends with a 500/503 toward A.
            None => self.attempt_failed(now, index, Some(503), false),
        }
    }

    /// The relay saw no packet on either leg of a connected call for the
    /// media timeout (`media.timeout_s`): both legs get a BYE with
    /// `Reason: Q.850;cause=102` and the call ends as the gateway's doing.
    /// A call still ringing has no media to miss and is left alone (its
    /// trunk timeout and the maximum duration bound it); returns whether
    /// the call was ended. So is a call on hold.
    pub fn handle_media_timeout(&mut self, now: Instant, bridge: BridgeId) -> bool {
        let Some(index) = self.live(bridge) else {
            return false;
        };
        let c = self.call_mut(index);
        if c.state != State::Connected {
            return false;
        }
        // A call on hold (a side's last SDP is not sendrecv, or its stream
        // is disabled) may be silent by design: the maximum duration and
        // the session timer bound it instead.
        let held = [&c.a_last, &c.b_last].into_iter().flatten().any(|b| {
            Sdp::parse(b).is_ok_and(|sdp| {
                sdp.media
                    .first()
                    .is_some_and(|m| m.port == 0 || m.direction != Direction::SendRecv)
            })
        });
        if held {
            return false;
        }
        self.counters.media_timeouts += 1;
        self.max_duration(now, index);
        true
    }

    /// The answer to a [`SipAction::Reoffer`] on `leg`: its final status
    /// and SDP. [`B2bua::handle_event`] calls it for
    /// [`Event::ReinviteAnswered`] and [`Event::UpdateAnswered`]; the shell
    /// calls it with 491 and no SDP when [`SipAction::apply`] refuses a
    /// re-offer (the leg has a re-INVITE of its own in progress: glare,
    /// RFC 3261 §14.1), so the offerer hears 491 and may retry.
    pub fn handle_reoffer_answered(
        &mut self,
        _now: Instant,
        leg: CallHandle,
        status: u16,
        sdp: Option<Vec<u8>>,
    ) {
        let Some(&(index, side)) = self.legs.get(&leg) else {
            self.counters.events_unknown += 1;
            return;
        };
        let c = self.call_mut(index);
        let Some(p) = c.pending.take() else {
            return;
        };
        if p.offerer == side {
            // An answer on the offerer's own leg: not ours to relay.
            c.pending = Some(p);
            return;
        }
        let offerer_leg = match p.offerer {
            Side::A => c.a.handle(),
            Side::B => c.b,
        };
        let Some(offerer_leg) = offerer_leg else {
            return;
        };
        let answer = sdp.as_deref().and_then(|b| Sdp::parse(b).ok());
        match (status, answer) {
            (200..=299, Some(ans)) => {
                let offerer_local = match p.offerer {
                    Side::A => c.a_local,
                    Side::B => c.b_local,
                };
                let Some(local) = offerer_local else { return };
                let body = rewrite_to(&ans, local).to_string_crlf().into_bytes();
                let answer_remote = stream_remote(&ans);
                match p.offerer {
                    Side::A => {
                        c.a_remote = p.offer_remote;
                        c.b_remote = answer_remote;
                        c.a_last = Some(body.clone());
                        c.b_last = Some(p.offer_sdp);
                        c.a_got = Some(p.offer_got);
                        c.b_got = sdp;
                    }
                    Side::B => {
                        c.b_remote = p.offer_remote;
                        c.a_remote = answer_remote;
                        c.b_last = Some(body.clone());
                        c.a_last = Some(p.offer_sdp);
                        c.b_got = Some(p.offer_got);
                        c.a_got = sdp;
                    }
                }
                let update = MediaRequest::Update {
                    call: self.id_of(index),
                    a_remote: self.call_mut(index).a_remote,
                    b_remote: self.call_mut(index).b_remote,
                };
                self.respond(offerer_leg, 200, Vec::new(), Some(body));
                self.push(Output::Media(update));
            }
            // A 2xx without a usable answer breaks offer/answer: refuse the
            // offer on the other side with 488 and keep the old session.
            (200..=299, None) => self.respond(offerer_leg, 488, Vec::new(), None),
            (s, _) => {
                // 405/501 would tell the offerer its own method is not
                // allowed; the truth is that its offer cannot be carried.
                let s = match s {
                    405 | 501 => 488,
                    300..=699 => s,
                    _ => 500,
                };
                self.respond(offerer_leg, s, Vec::new(), None);
            }
        }
    }

    // -- event handlers -----------------------------------------------------

    fn incoming(
        &mut self,
        now: Instant,
        a: CallHandle,
        request_user: Option<String>,
        from: &str,
        call_id: String,
        sdp: Option<Vec<u8>>,
    ) {
        if self.legs.contains_key(&a) {
            // The endpoint reuses a handle only after its last event, so a
            // known handle means an event was lost on the way; keep the old
            // mapping intact and still answer the INVITE, or it would hang.
            self.counters.events_unknown += 1;
            self.respond(a, 500, Vec::new(), None);
            return;
        }
        let caller = uri_of(from);
        let callee = request_user.unwrap_or_default();
        let refused = Refused {
            a,
            now,
            caller: &caller,
            callee: &callee,
            a_call_id: &call_id,
        };
        if self.free.is_empty() {
            self.counters.rejected_full += 1;
            let retry = vec![("Retry-After".to_string(), RETRY_AFTER_FULL_S.to_string())];
            self.refuse(&refused, 503, retry);
            return;
        }
        if !is_called_number(&callee) {
            self.counters.rejected_no_route += 1;
            self.refuse(&refused, 404, Vec::new());
            return;
        }
        let route = match self.routes.lookup(&callee) {
            Some(RouteTarget::Trunks(mask)) => *mask,
            // Contact-centre routing is not part of this B2BUA yet; no
            // route at all is "no such number".
            Some(RouteTarget::ContactCentre) | None => {
                self.counters.rejected_no_route += 1;
                self.refuse(&refused, 404, Vec::new());
                return;
            }
        };
        // RFC 3261 §13.3.1.1 lets a UAS refuse an offer it cannot accept
        // with 488; a late offer (no body) is not supported here.
        let offer = sdp
            .as_deref()
            .and_then(|b| Sdp::parse(b).ok())
            .and_then(|s| filter_codecs(&s, &self.cfg.codecs));
        let (Some(a_offer), Some(a_sdp)) = (offer, sdp) else {
            self.counters.rejected_sdp += 1;
            self.refuse(&refused, 488, Vec::new());
            return;
        };
        let trunk = match self.trunks.select(now, &mut self.rng, route, &[]) {
            Ok(t) => t,
            Err(e) => {
                let headers = match e.retry_after_s() {
                    Some(s) => vec![("Retry-After".to_string(), s.to_string())],
                    None => Vec::new(),
                };
                if e.status() == 404 {
                    self.counters.rejected_no_route += 1;
                } else {
                    self.counters.rejected_no_trunk += 1;
                }
                self.refuse(&refused, e.status(), headers);
                return;
            }
        };
        let max_duration = self.cfg.max_call_duration;
        self.admit(
            now,
            Admit {
                a: ALeg::Inbound(a),
                route,
                trunk,
                caller,
                callee,
                a_call_id: call_id,
                a_offer,
                a_sdp: a_sdp.clone(),
                a_got: Some(a_sdp),
                max_duration,
            },
        );
    }

    /// Takes a free slot for a call whose trunk is chosen (and counted),
    /// arms its maximum duration and asks the shell for its media
    /// ([`MediaRequest::Allocate`]).
    pub(super) fn admit(&mut self, now: Instant, n: Admit) -> u32 {
        // Every caller checked that a slot is free.
        let index = self.free.pop().expect("a free slot");
        let generation = self.generations[index as usize];
        let a_remote = stream_remote(&n.a_offer);
        let max_deadline = now + n.max_duration;
        let inbound = n.a.handle();
        self.calls[index as usize] = Some(Call {
            generation,
            state: State::Allocating,
            a: n.a,
            b: None,
            route: n.route,
            trunk: n.trunk,
            trunk_counted: true,
            tried: vec![n.trunk],
            caller: n.caller,
            callee: n.callee,
            a_call_id: n.a_call_id,
            a_offer: n.a_offer,
            a_local: None,
            b_local: None,
            b_offer: Vec::new(),
            a_remote,
            b_remote: None,
            installed: false,
            a_last: None,
            b_last: None,
            a_got: n.a_got,
            b_got: None,
            last_invite: None,
            auth_answered: false,
            pending: None,
            attempt_deadline: None,
            max_deadline,
            attempts: 0,
            trunk_status: None,
            created: now,
            ringing: None,
            answered: None,
        });
        if let Some(a) = inbound {
            self.legs.insert(a, (index, Side::A));
        }
        self.arm(max_deadline, index, TimerKind::MaxDuration);
        let bridge = self.id_of(index);
        self.push(Output::Media(MediaRequest::Allocate {
            call: bridge,
            a_sdp: n.a_sdp,
        }));
        index
    }

    /// Answers an INVITE that got no slot and records the attempt (F-C1: a
    /// CDR for every attempt).
    fn refuse(&mut self, r: &Refused<'_>, status: u16, headers: Vec<(String, String)>) {
        self.respond(r.a, status, headers, None);
        self.push(Output::Record(CallRecord {
            bridge: None,
            origin: CallOrigin::Inbound,
            a_call_id: r.a_call_id.to_string(),
            caller: r.caller.to_string(),
            callee: r.callee.to_string(),
            trunk: None,
            attempts: 0,
            trunk_status: None,
            sip_status: status,
            q850_cause: sip_to_q850(status),
            hangup: Hangup::Gateway,
            created: r.now,
            ringing: None,
            answered: None,
            ended: r.now,
        }));
    }

    fn provisional(&mut self, now: Instant, leg: CallHandle, status: u16, sdp: Option<Vec<u8>>) {
        let Some((index, Side::B)) = self.leg(leg) else {
            return;
        };
        let c = self.call_mut(index);
        if !matches!(c.state, State::Inviting | State::Early) || !(101..=199).contains(&status) {
            return;
        }
        c.state = State::Early;
        c.attempt_deadline = None;
        c.ringing.get_or_insert(now);
        let a = c.a.handle();
        // Early media (RFC 3960): relay it as soon as B describes it.
        let early = sdp.as_deref().and_then(|b| Sdp::parse(b).ok());
        let body = match (early, c.a_local) {
            (Some(s), Some(local)) => {
                c.b_remote = stream_remote(&s);
                let body = rewrite_to(&s, local).to_string_crlf().into_bytes();
                c.a_last = Some(body.clone());
                Some(body)
            }
            _ => None,
        };
        let early_media = body.is_some();
        if early_media {
            self.push_media(index);
        }
        match a {
            Some(a) => self.respond(a, status, Vec::new(), body),
            None => self.origination_ringing(now, index, status, early_media),
        }
    }

    fn answered(&mut self, now: Instant, leg: CallHandle, sdp: Option<Vec<u8>>) {
        let Some((index, Side::B)) = self.leg(leg) else {
            return;
        };
        let c = self.call_mut(index);
        if !matches!(c.state, State::Inviting | State::Early) {
            return;
        }
        c.attempt_deadline = None;
        let trunk = c.trunk;
        self.trunks.handle_invite_result(now, trunk, Some(200));
        let c = self.call_mut(index);
        let answer = sdp.as_deref().and_then(|b| Sdp::parse(b).ok());
        let (Some(ans), Some(local)) = (answer, c.a_local) else {
            // We sent an offer, so the 2xx must carry the answer (RFC 3264
            // §5); without one the call cannot be bridged: hang up B and
            // tell A the gateway got a bad response (502).
            c.trunk_status = Some(200);
            let (a, b) = (c.a.handle(), leg);
            self.push(Output::Sip(SipAction::Bye {
                call: b,
                headers: Vec::new(),
            }));
            if let Some(a) = a {
                self.respond(a, 502, Vec::new(), None);
            }
            self.finish(now, index, 502, 38, Hangup::Gateway);
            return;
        };
        c.state = State::Connected;
        c.answered = Some(now);
        c.trunk_status = Some(200);
        c.b_remote = stream_remote(&ans);
        c.b_got = sdp.clone();
        let body = rewrite_to(&ans, local).to_string_crlf().into_bytes();
        c.a_last = Some(body.clone());
        match c.a.handle() {
            Some(a) => self.respond(a, 200, Vec::new(), Some(body)),
            None => {
                // Checked above: the 2xx carried an SDP that parses.
                let remote_sdp = sdp.unwrap_or_default();
                self.origination_event(now, index, OriginationEventKind::Answered { remote_sdp });
            }
        }
        self.push_media(index);
    }

    fn b_failed(
        &mut self,
        now: Instant,
        leg: CallHandle,
        status: Option<u16>,
        challenge: Option<&Challenged>,
    ) {
        let Some((index, Side::B)) = self.leg(leg) else {
            return;
        };
        let c = self.call_mut(index);
        if !matches!(c.state, State::Inviting | State::Early) {
            return;
        }
        self.legs.remove(&leg);
        self.call_mut(index).b = None;
        if let (Some(s @ (401 | 407)), Some(ch)) = (status, challenge) {
            if self.answer_challenge(now, index, s, ch) {
                return;
            }
        }
        self.attempt_failed(now, index, status, true);
    }

    fn a_cancelled(&mut self, now: Instant, leg: CallHandle) {
        let Some((index, Side::A)) = self.leg(leg) else {
            return;
        };
        if let Some(b) = self.call_mut(index).b {
            self.push(Output::Sip(SipAction::Cancel { call: b }));
        }
        // The endpoint has answered A's INVITE with 487. From the network's
        // view the caller cleared the call normally (ISUP REL cause 16);
        // the SIP status 487 keeps "before answer" visible in the CDR.
        self.finish(now, index, 487, Q850_NORMAL_CLEARING, Hangup::Caller);
    }

    fn ack_timeout(&mut self, now: Instant, leg: CallHandle) {
        let Some((index, Side::A)) = self.leg(leg) else {
            return;
        };
        // The endpoint BYEs A itself (RFC 3261 §13.3.1.4); end B.
        if let Some(b) = self.call_mut(index).b {
            self.push(Output::Sip(SipAction::Bye {
                call: b,
                headers: Vec::new(),
            }));
        }
        self.finish(now, index, 200, Q850_TIMER_EXPIRY, Hangup::Gateway);
    }

    /// RFC 4028 §10: a leg's session was not refreshed in time. The
    /// endpoint has sent that leg's BYE (Q.850 cause 102); end the other
    /// the same way.
    fn session_expired(&mut self, now: Instant, leg: CallHandle) {
        let Some((index, side)) = self.leg(leg) else {
            return;
        };
        let other = self.other_leg(index, side);
        let c = self.call_mut(index);
        let reason = vec![("Reason".to_string(), MAX_DURATION_REASON.to_string())];
        if let Some(o) = other {
            let action = if c.state == State::Connected {
                SipAction::Bye {
                    call: o,
                    headers: reason,
                }
            } else {
                SipAction::Cancel { call: o }
            };
            self.push(Output::Sip(action));
        }
        self.finish(now, index, 200, Q850_TIMER_EXPIRY, Hangup::Gateway);
    }

    fn ended(&mut self, now: Instant, leg: CallHandle) {
        let Some((index, side)) = self.leg(leg) else {
            return;
        };
        let other = self.other_leg(index, side);
        let c = self.call_mut(index);
        let connected = c.state == State::Connected;
        if !connected && side == Side::B {
            // B's dialog ended before we bridged it (a 2xx the endpoint
            // had to BYE itself): A has no dialog to BYE yet.
            if let Some(a) = c.a.handle() {
                self.respond(a, 502, Vec::new(), None);
            }
            self.finish(now, index, 502, 38, Hangup::Callee);
            return;
        }
        if let Some(o) = other {
            let action = if connected {
                SipAction::Bye {
                    call: o,
                    headers: Vec::new(),
                }
            } else {
                SipAction::Cancel { call: o }
            };
            self.push(Output::Sip(action));
        }
        let hangup = match side {
            Side::A => Hangup::Caller,
            Side::B => Hangup::Callee,
        };
        self.finish(now, index, 200, Q850_NORMAL_CLEARING, hangup);
    }

    fn reoffer(
        &mut self,
        _now: Instant,
        leg: CallHandle,
        method: ReofferMethod,
        sdp: Option<Vec<u8>>,
    ) {
        let Some((index, side)) = self.leg(leg) else {
            return;
        };
        let c = self.call_mut(index);
        if c.state != State::Connected || c.pending.is_some() {
            // RFC 3261 §14.2: an offer while ours is in progress gets 491;
            // so does one before the bridge is up.
            self.respond(leg, 491, Vec::new(), None);
            return;
        }
        let got = match side {
            Side::A => c.a_got.as_deref(),
            Side::B => c.b_got.as_deref(),
        };
        let unchanged =
            matches!((sdp.as_deref(), got), (Some(new), Some(old)) if same_session(new, old));
        let last = match side {
            Side::A => c.a_last.clone(),
            Side::B => c.b_last.clone(),
        };
        if let (true, Some(last)) = (unchanged, last) {
            // The same session offered again: a session refresh (RFC 4028
            // §10) or a keep-alive. Answer with what this leg already has;
            // the other leg hears nothing (RFC 3264 §8: same o= version,
            // no change).
            self.respond(leg, 200, Vec::new(), Some(last));
            return;
        }
        let Some(body) = sdp else {
            // An offerless re-INVITE (RFC 3261 §14.1) or a session refresh:
            // offer what this side already has; nothing crosses over.
            let last = match side {
                Side::A => c.a_last.clone(),
                Side::B => c.b_last.clone(),
            };
            let last = if method == ReofferMethod::Update {
                None
            } else {
                last
            };
            self.respond(leg, 200, Vec::new(), last);
            return;
        };
        if side == Side::B && matches!(c.a, ALeg::Originated(_)) {
            // Nobody to cross to: the gateway answers itself.
            self.answer_locally(index, leg, &body);
            return;
        }
        let (other, other_local) = match side {
            Side::A => (c.b, c.b_local),
            Side::B => (c.a.handle(), c.a_local),
        };
        let parsed = Sdp::parse(&body)
            .ok()
            .and_then(|s| filter_codecs(&s, &self.cfg.codecs));
        let (Some(offer), Some(other), Some(other_local)) = (parsed, other, other_local) else {
            self.counters.rejected_sdp += 1;
            self.respond(leg, 488, Vec::new(), None);
            return;
        };
        let out = rewrite_to(&offer, other_local)
            .to_string_crlf()
            .into_bytes();
        let c = self.call_mut(index);
        c.pending = Some(Pending {
            offerer: side,
            offer_remote: stream_remote(&offer),
            offer_sdp: out.clone(),
            offer_got: body,
        });
        self.push(Output::Sip(SipAction::Reoffer {
            call: other,
            method,
            sdp: out,
        }));
    }

    // -- timers ---------------------------------------------------------------

    fn attempt_timeout(&mut self, now: Instant, index: u32) {
        let c = self.call_mut(index);
        c.attempt_deadline = None;
        if c.state != State::Inviting {
            return;
        }
        if let Some(b) = c.b.take() {
            // The endpoint sends the CANCEL once B answers provisionally
            // (RFC 3261 §9.1) and cleans the leg up; we are done with it.
            self.legs.remove(&b);
            self.push(Output::Sip(SipAction::Cancel { call: b }));
        }
        self.attempt_failed(now, index, None, true);
    }

    fn max_duration(&mut self, now: Instant, index: u32) {
        let c = self.call_mut(index);
        let reason = vec![("Reason".to_string(), MAX_DURATION_REASON.to_string())];
        let (a, b, state) = (c.a.handle(), c.b, c.state);
        if state == State::Connected {
            for leg in [a, b].into_iter().flatten() {
                self.push(Output::Sip(SipAction::Bye {
                    call: leg,
                    headers: reason.clone(),
                }));
            }
            self.finish(now, index, 200, Q850_TIMER_EXPIRY, Hangup::Gateway);
        } else {
            if let Some(b) = b {
                self.push(Output::Sip(SipAction::Cancel { call: b }));
            }
            // Not answered within the whole allowance: 408 is the SIP
            // image of cause 102 (RFC 3398 §7.2.4.1).
            if let Some(a) = a {
                self.respond(a, 408, reason, None);
            }
            self.finish(now, index, 408, Q850_TIMER_EXPIRY, Hangup::Gateway);
        }
    }

    // -- helpers ----------------------------------------------------------------

    /// Builds and emits the INVITE of the current attempt.
    fn start_attempt(&mut self, now: Instant, index: u32) {
        let bridge = self.id_of(index);
        let c = self.calls[index as usize].as_ref().expect("live call");
        let cfg = self.trunks.config(c.trunk);
        let trunk = c.trunk;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let Some(target) = trunk_target(&cfg.address, cfg.transport) else {
            // A trunk address we cannot reach without DNS: try the next.
            self.attempt_failed(now, index, Some(503), false);
            return;
        };
        let tp = match cfg.transport {
            Transport::Udp => String::new(),
            t => format!(";transport={}", transport_param(t)),
        };
        let request_uri = format!("sip:{}@{}{}", c.callee, cfg.address, tp);
        let to = format!("sip:{}@{}", c.callee, cfg.address);
        let address = cfg.address.clone();
        let require_100rel = cfg.require_100rel;
        let mut from = c.caller.clone();
        let b_offer = c.b_offer.clone();
        // An originated call presents the number chosen when it was placed
        // on every attempt; an inbound one the pool's next.
        let presented = match &c.a {
            ALeg::Originated(o) => Some(o.presented.clone()),
            ALeg::Inbound(_) => None,
        };
        let mode = self.cfg.caller_id_mode;
        let headers = match &presented {
            Some(p) => p.as_deref().map(|n| caller_id_headers(mode, n, &address)),
            None => self
                .caller_ids
                .next()
                .map(|n| caller_id_headers(mode, n, &address)),
        };
        let mut extra_headers = Vec::new();
        if let Some(h) = headers {
            if let Some(pai) = h.pai {
                extra_headers.push(("P-Asserted-Identity".to_string(), pai));
            }
            if let Some(f) = h.from {
                from = f.trim_start_matches('<').trim_end_matches('>').to_string();
            }
        }
        if let Some(p) = presented {
            // There is no caller's identity to pass through: From is the
            // presented number in every mode, or anonymous without one
            // (RFC 3323 §4.1.1.3).
            from = match p {
                Some(n) => format!("sip:{n}@{address};user=phone"),
                None => ANONYMOUS_URI.to_string(),
            };
        }
        if require_100rel {
            // RFC 3262 §4: the trunk must send its provisional responses
            // reliably; the endpoint PRACKs them.
            extra_headers.push(("Require".to_string(), "100rel".to_string()));
        }
        // Pre-authenticate with the trunk's last challenge, if any (RFC
        // 3261 §22.3); a stale nonce is answered by one more challenge.
        let info = RequestInfo {
            method: "INVITE",
            uri: &request_uri,
            body: &b_offer,
        };
        if let Some((header, auth)) = self.trunks.authorize(trunk, &mut self.rng, &info) {
            extra_headers.push((header.as_str().to_string(), auth.to_string()));
        }
        let invite = OutboundInvite {
            trunk,
            target,
            transport: self.trunks.config(trunk).transport,
            request_uri,
            from,
            to,
            sdp: b_offer,
            extra_headers,
            resend: None,
        };
        let c = self.call_mut(index);
        c.state = State::Starting;
        c.attempts += 1;
        c.auth_answered = false;
        c.last_invite = Some(invite.clone());
        let deadline = now + timeout;
        c.attempt_deadline = Some(deadline);
        self.arm(deadline, index, TimerKind::Attempt);
        self.push(Output::Sip(SipAction::Invite { bridge, invite }));
    }

    /// RFC 3261 §22.2: answers a 401/407 on B by sending the attempt's
    /// INVITE again to the same trunk with credentials from the trunk's
    /// config (same Call-ID and From tag, next CSeq, new branch). False
    /// when it cannot or may not (no credentials, another realm, no usable
    /// challenge, or this attempt already answered one): the 401/407 is
    /// then final.
    fn answer_challenge(&mut self, now: Instant, index: u32, status: u16, ch: &Challenged) -> bool {
        let c = self.call_mut(index);
        let trunk = c.trunk;
        if c.auth_answered {
            // Our credentials were refused: forget them for later calls.
            self.trunks.clear_challenge(trunk);
            return false;
        }
        let Some(mut invite) = c.last_invite.clone() else {
            return false;
        };
        let Ok(challenge) = select_challenge(ch.challenges.iter().map(String::as_str)) else {
            return false;
        };
        if !self.trunks.handle_challenge(trunk, status, challenge) {
            return false;
        }
        let info = RequestInfo {
            method: "INVITE",
            uri: &invite.request_uri,
            body: &invite.sdp,
        };
        let Some((header, auth)) = self.trunks.authorize(trunk, &mut self.rng, &info) else {
            return false;
        };
        let Some(cseq) = ch.cseq.checked_add(1) else {
            return false;
        };
        invite.extra_headers.retain(|(n, _)| {
            !n.eq_ignore_ascii_case("Authorization")
                && !n.eq_ignore_ascii_case("Proxy-Authorization")
        });
        invite
            .extra_headers
            .push((header.as_str().to_string(), auth.to_string()));
        invite.resend = Some(InviteResend {
            call_id: ch.call_id.clone(),
            from_tag: ch.from_tag.clone(),
            cseq,
        });
        let bridge = self.id_of(index);
        let timeout = Duration::from_millis(self.trunks.config(trunk).timeout_ms);
        let c = self.call_mut(index);
        c.auth_answered = true;
        c.state = State::Starting;
        let deadline = now + timeout;
        c.attempt_deadline = Some(deadline);
        self.arm(deadline, index, TimerKind::Attempt);
        self.push(Output::Sip(SipAction::Invite { bridge, invite }));
        true
    }

    /// The current attempt ended without a 2xx: next trunk or final answer
    /// to A. `trunk_fault` says whether the trunk itself answered (or did
    /// not), which feeds its health.
    fn attempt_failed(&mut self, now: Instant, index: u32, status: Option<u16>, trunk_fault: bool) {
        let c = self.call_mut(index);
        c.attempt_deadline = None;
        let trunk = c.trunk;
        let counted = std::mem::replace(&mut c.trunk_counted, false);
        if trunk_fault {
            c.trunk_status = status;
            self.trunks.handle_invite_result(now, trunk, status);
        }
        if counted {
            self.trunks.call_ended(trunk);
        }
        if should_failover(status) {
            let c = self.calls[index as usize].as_ref().expect("live call");
            let (route, tried) = (c.route, c.tried.clone());
            if let Ok(next) = self.trunks.select(now, &mut self.rng, route, &tried) {
                let c = self.call_mut(index);
                assert!(c.tried.len() < TRUNKS_MAX, "select excludes tried trunks");
                c.tried.push(next);
                c.trunk = next;
                c.trunk_counted = true;
                self.counters.failovers += 1;
                self.start_attempt(now, index);
                return;
            }
        }
        let (code, q850) = map_failure(status);
        let code = match self.call_mut(index).a.handle() {
            Some(a) => {
                self.respond(a, code, Vec::new(), None);
                code
            }
            // No A to shield from the trunk's 503 or 401: the control
            // plane hears the trunk's own status.
            None => failure_status(status),
        };
        self.finish(now, index, code, q850, Hangup::Callee);
    }

    /// Ends the call: frees its slot, legs and trunk count, releases the
    /// media and emits the record.
    fn finish(&mut self, now: Instant, index: u32, sip_status: u16, q850: u8, hangup: Hangup) {
        let bridge = self.id_of(index);
        let c = self.calls[index as usize].take().expect("live call");
        if let Some(a) = c.a.handle() {
            self.legs.remove(&a);
        }
        if let Some(b) = c.b {
            self.legs.remove(&b);
        }
        if c.trunk_counted {
            self.trunks.call_ended(c.trunk);
        }
        self.generations[index as usize] = c.generation.wrapping_add(1);
        self.free.push(index);
        assert!(self.free.len() <= self.cfg.calls_max, "slot freed twice");
        self.push(Output::Media(MediaRequest::Release { call: bridge }));
        let trunk = c
            .attempts
            .gt(&0)
            .then(|| self.trunks.config(c.trunk).name.clone());
        let origin = match c.a {
            ALeg::Inbound(_) => CallOrigin::Inbound,
            ALeg::Originated(o) => {
                // The end of the call for the control plane: Ended once
                // answered, Failed before (487 when it hung up first).
                let kind = match c.answered {
                    Some(_) => OriginationEventKind::Ended { by: hangup, q850 },
                    None => OriginationEventKind::Failed {
                        status: sip_status,
                        q850,
                    },
                };
                self.push_origination_event(OriginationEvent {
                    id: OriginationId::new(bridge),
                    correlation: o.correlation,
                    at: now,
                    kind,
                });
                CallOrigin::Originated {
                    id: OriginationId::new(bridge),
                    correlation: o.correlation,
                    account: o.account,
                }
            }
        };
        self.push(Output::Record(CallRecord {
            bridge: Some(bridge),
            origin,
            a_call_id: c.a_call_id,
            caller: c.caller,
            callee: c.callee,
            trunk,
            attempts: c.attempts,
            trunk_status: c.trunk_status,
            sip_status,
            q850_cause: q850,
            hangup,
            created: c.created,
            ringing: c.ringing,
            answered: c.answered,
            ended: now,
        }));
        // Stale timer entries pile up with churn; rebuild when they
        // outnumber the live ones several times over.
        if self.timers.len() > 4 * self.cfg.calls_max + 16 {
            let mut all = std::mem::take(&mut self.timers).into_vec();
            all.retain(|Reverse(t)| self.timer_live(*t));
            self.timers = BinaryHeap::from(all);
        }
    }

    fn push_media(&mut self, index: u32) {
        let call = self.id_of(index);
        let c = self.call_mut(index);
        let (a_remote, b_remote) = (c.a_remote, c.b_remote);
        let req = if c.installed {
            MediaRequest::Update {
                call,
                a_remote,
                b_remote,
            }
        } else {
            c.installed = true;
            MediaRequest::Install {
                call,
                a_remote,
                b_remote,
            }
        };
        self.push(Output::Media(req));
    }

    fn respond(
        &mut self,
        call: CallHandle,
        status: u16,
        headers: Vec<(String, String)>,
        sdp: Option<Vec<u8>>,
    ) {
        self.push(Output::Sip(SipAction::Respond {
            call,
            status,
            reason: reason_phrase(status),
            headers,
            sdp,
        }));
    }

    /// Ends an originated call at the control plane's request: a CANCEL
    /// for an INVITE still out (the endpoint holds it until a provisional
    /// answer allows it, RFC 3261 §9.1), a BYE once answered. False (and
    /// nothing done) for an inbound call, which an [`OriginationId`] can
    /// only name after its slot's generation counter wrapped.
    pub(super) fn hang_up(&mut self, now: Instant, index: u32) -> bool {
        let c = self.call_mut(index);
        if !matches!(c.a, ALeg::Originated(_)) {
            return false;
        }
        let (b, state) = (c.b, c.state);
        if state == State::Connected {
            if let Some(b) = b {
                self.push(Output::Sip(SipAction::Bye {
                    call: b,
                    headers: Vec::new(),
                }));
            }
            self.finish(now, index, 200, Q850_NORMAL_CLEARING, Hangup::Caller);
        } else {
            // Allocating or Starting have no leg yet: a late port
            // allocation is released, a late INVITE cancelled, by the
            // stale-id paths of handle_media_allocated and
            // handle_invite_started.
            if let Some(b) = b {
                self.push(Output::Sip(SipAction::Cancel { call: b }));
            }
            // 487 as if our own INVITE had been cancelled; cause 16, as a
            // caller's CANCEL is (see a_cancelled).
            self.finish(now, index, 487, Q850_NORMAL_CLEARING, Hangup::Caller);
        }
        true
    }

    /// An originated call's trunk re-offered mid-call: with nobody on the
    /// A side the gateway is the answerer. The answer is the offer kept to
    /// the configured codecs, pointed at B's relay address, with the
    /// direction mirrored (RFC 3264 §6.1) and the gateway's own `o=` line
    /// one version up (§8).
    fn answer_locally(&mut self, index: u32, leg: CallHandle, body: &[u8]) {
        let parsed = Sdp::parse(body)
            .ok()
            .and_then(|s| filter_codecs(&s, &self.cfg.codecs));
        let c = self.call_mut(index);
        let (Some(offer), Some(local)) = (parsed, c.b_local) else {
            self.counters.rejected_sdp += 1;
            self.respond(leg, 488, Vec::new(), None);
            return;
        };
        let mut answer = rewrite_to(&offer, local);
        mirror_direction(&mut answer);
        if let Some(o) = c.b_last.as_deref().and_then(next_origin) {
            if let Some(l) = answer.session.iter_mut().find(|l| l.starts_with("o=")) {
                *l = o;
            }
        }
        let bytes = answer.to_string_crlf().into_bytes();
        c.b_remote = stream_remote(&offer);
        c.b_got = Some(body.to_vec());
        c.b_last = Some(bytes.clone());
        self.respond(leg, 200, Vec::new(), Some(bytes));
        self.push_media(index);
    }

    /// Queues `kind` for the originated call in slot `index`.
    fn origination_event(&mut self, now: Instant, index: u32, kind: OriginationEventKind) {
        let id = OriginationId::new(self.id_of(index));
        let ALeg::Originated(o) = &self.call_mut(index).a else {
            return;
        };
        let correlation = o.correlation;
        self.push_origination_event(OriginationEvent {
            id,
            correlation,
            at: now,
            kind,
        });
    }

    /// A 18x on an originated call: reported when it says something new
    /// (status or early media), so a trunk repeating 183 cannot flood
    /// the queue.
    fn origination_ringing(&mut self, now: Instant, index: u32, status: u16, early_media: bool) {
        let ALeg::Originated(o) = &mut self.call_mut(index).a else {
            return;
        };
        if o.last_ringing == Some((status, early_media)) {
            return;
        }
        o.last_ringing = Some((status, early_media));
        let kind = OriginationEventKind::Ringing {
            status,
            early_media,
        };
        self.origination_event(now, index, kind);
    }

    fn push_origination_event(&mut self, ev: OriginationEvent) {
        if !self.origination_events.push(ev) {
            self.counters.origination_events_dropped += 1;
        }
    }

    fn push(&mut self, o: Output) {
        if self.outputs.len() >= self.cfg.outputs_max.max(16) {
            self.counters.outputs_dropped += 1;
            return;
        }
        self.outputs.push_back(o);
    }

    fn arm(&mut self, at: Instant, index: u32, kind: TimerKind) {
        let generation = self.generations[index as usize];
        self.timers.push(Reverse((at, index, generation, kind)));
    }

    fn timer_live(&self, (at, index, generation, kind): (Instant, u32, u32, TimerKind)) -> bool {
        match self.calls.get(index as usize).and_then(Option::as_ref) {
            Some(c) if c.generation == generation => match kind {
                TimerKind::Attempt => c.attempt_deadline == Some(at),
                TimerKind::MaxDuration => c.max_deadline == at,
            },
            _ => false,
        }
    }

    /// The leg on the other side of `side` (B may not exist yet).
    fn other_leg(&mut self, index: u32, side: Side) -> Option<CallHandle> {
        let c = self.call_mut(index);
        match side {
            Side::A => c.b,
            Side::B => c.a.handle(),
        }
    }

    fn leg(&mut self, leg: CallHandle) -> Option<(u32, Side)> {
        let r = self.legs.get(&leg).copied();
        if r.is_none() {
            self.counters.events_unknown += 1;
        }
        r
    }

    pub(super) fn live(&self, id: BridgeId) -> Option<u32> {
        match self.calls.get(id.index()).and_then(Option::as_ref) {
            Some(c) if c.generation == id.generation => Some(id.index),
            _ => None,
        }
    }

    pub(super) fn id_of(&self, index: u32) -> BridgeId {
        BridgeId {
            index,
            generation: self.generations[index as usize],
        }
    }

    fn call_mut(&mut self, index: u32) -> &mut Call {
        // Every caller got `index` from `legs`, `live` or the timer check,
        // which only name occupied slots.
        self.calls[index as usize].as_mut().expect("live call")
    }
}

/// What a refused INVITE's record is made of.
struct Refused<'a> {
    a: CallHandle,
    now: Instant,
    caller: &'a str,
    callee: &'a str,
    a_call_id: &'a str,
}

/// Whether an offer repeats the last SDP from the same side, byte for byte
/// up to trailing white space. The `o=` version alone would do by RFC 3264
/// §8, but peers that change the media without bumping it exist, and
/// relaying a repeat is harmless while swallowing a change is not.
fn same_session(new: &[u8], old: &[u8]) -> bool {
    new.trim_ascii_end() == old.trim_ascii_end()
}

/// Retry-After (seconds) on the 503 for a full call table: the same as the
/// endpoint's ([`crate::sip::endpoint::RETRY_AFTER_S`]).
const RETRY_AFTER_FULL_S: u32 = crate::sip::endpoint::RETRY_AFTER_S;

/// The status toward A and the Q.850 cause for a failed last attempt.
///
/// * Timeout (no answer from any trunk): 408, cause 102 (RFC 3398 §8.2.6.1).
/// * 503 from the trunk: 500 to A. RFC 3261 §16.7 step 6 tells a proxy not
///   to forward a 503 because A would read it as "this gateway is
///   overloaded" and, per RFC 3263 §4.3, fail over away from a gateway that
///   is fine for other numbers; the same holds for a B2BUA. Cause 41
///   (temporary failure) as RFC 3398 maps 503.
/// * 401/407: the trunk challenged the gateway's credentials, which A
///   cannot answer; 500, cause 21 (RFC 3398 maps 401/407 to 21).
/// * 3xx: the redirect target would need a new routing decision that is
///   not made here, and A cannot use the trunk's Contact; 480 (cause 127).
/// * Anything else is about the call (486, 404, 6xx ...) and is forwarded
///   as is, with the RFC 3398 cause.
fn map_failure(status: Option<u16>) -> (u16, u8) {
    match status {
        None => (408, Q850_TIMER_EXPIRY),
        Some(503) => (500, 41),
        Some(401 | 407) => (500, 21),
        Some(300..=399) => (480, 127),
        Some(s) if (300..=699).contains(&s) => (s, sip_to_q850(s)),
        Some(_) => (500, 41),
    }
}

/// SIP status to Q.850 cause, RFC 3398 §8.2.6.1 (and 127 "interworking,
/// unspecified" for the rest).
pub fn sip_to_q850(status: u16) -> u8 {
    match status {
        200..=299 => Q850_NORMAL_CLEARING,
        400 | 481 | 500 | 503 => 41,
        401..=403 | 407 | 603 => 21,
        404 | 485 | 604 => 1,
        405 | 501 | 406 | 415 => 79,
        408 | 504 => 102,
        410 => 22,
        480 => 18,
        482 | 483 => 25,
        484 => 28,
        486 | 600 => 17,
        502 => 38,
        606 => 58,
        _ => 127,
    }
}

/// Reason phrases for the statuses the B2BUA sends (RFC 3261 §21).
fn reason_phrase(status: u16) -> &'static str {
    match status {
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        480 => "Temporarily Unavailable",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => class_phrase(status),
    }
}

/// A generic phrase for a status without its own (RFC 3261 §21: the
/// phrase is for humans; the code alone carries the meaning).
fn class_phrase(status: u16) -> &'static str {
    match status / 100 {
        1 => "Session Progress",
        2 => "OK",
        3 => "Redirection",
        4 => "Request Failure",
        5 => "Server Failure",
        _ => "Global Failure",
    }
}

/// Whether a Request-URI user is a number we route: an optional `+` and
/// 1 to [`CALLED_LEN_MAX`] digits.
fn is_called_number(u: &str) -> bool {
    let d = u.strip_prefix('+').unwrap_or(u);
    !d.is_empty() && d.len() <= CALLED_LEN_MAX && d.bytes().all(|b| b.is_ascii_digit())
}

/// The URI of a From/To value (`"Alice" <sip:a@b>;tag=x` or
/// `sip:a@b;tag=x`), or an anonymous URI (RFC 3323 §4.1.1.3) when it
/// cannot be used in our own From.
fn uri_of(value: &str) -> String {
    let uri = match (value.find('<'), value.find('>')) {
        (Some(l), Some(r)) if l < r => &value[l + 1..r],
        _ => value.split(';').next().unwrap_or("").trim(),
    };
    let ok = crate::sip::uri::Uri::parse(uri).is_ok()
        && !uri.contains(['<', '>', ' ', '"'])
        && uri.len() <= 256;
    if ok {
        uri.to_string()
    } else {
        ANONYMOUS_URI.to_string()
    }
}

/// A trunk `address` (`ip`, `ip:port`, `[v6]`, `[v6]:port`) as a socket
/// address; the port defaults to 5060, or 5061 for TLS (RFC 3261 §19.1.2).
pub(super) fn trunk_target(address: &str, transport: Transport) -> Option<SocketAddr> {
    if let Ok(sa) = address.parse::<SocketAddr>() {
        return Some(sa);
    }
    let port = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let host = address
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(address);
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// Encoding names of the static payload types of RFC 3551 table 4 that a
/// telephony gateway meets.
fn static_encoding(pt: &str) -> Option<&'static str> {
    match pt {
        "0" => Some("PCMU"),
        "3" => Some("GSM"),
        "4" => Some("G723"),
        "8" => Some("PCMA"),
        "9" => Some("G722"),
        "18" => Some("G729"),
        _ => None,
    }
}

/// Keeps, in the first active audio section, the formats whose encoding is
/// in `allowed` (without case) or is `telephone-event`, with their
/// `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` lines; every other section is disabled
/// (port 0, RFC 3264 §6) since the relay carries one stream. None when no
/// audio section keeps a real codec.
pub(super) fn filter_codecs(sdp: &Sdp, allowed: &[String]) -> Option<Sdp> {
    let mut out = sdp.clone();
    let mut chosen = false;
    for m in &mut out.media {
        if chosen || m.kind != "audio" || m.port == 0 {
            disable(m);
            continue;
        }
        let encoding = |pt: &str| -> Option<String> {
            let prefix = format!("a=rtpmap:{pt} ");
            m.lines
                .iter()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.split('/').next())
                .map(|e| e.trim().to_string())
                .or_else(|| static_encoding(pt).map(str::to_string))
        };
        let mut keep = Vec::new();
        let mut real = false;
        for pt in &m.formats {
            let Some(enc) = encoding(pt) else { continue };
            if enc.eq_ignore_ascii_case("telephone-event") {
                keep.push(pt.clone());
            } else if allowed.iter().any(|a| a.eq_ignore_ascii_case(&enc)) {
                keep.push(pt.clone());
                real = true;
            }
        }
        if !real {
            disable(m);
            continue;
        }
        let dropped: Vec<&String> = m.formats.iter().filter(|f| !keep.contains(f)).collect();
        let mut lines = Vec::with_capacity(m.lines.len());
        let head: Vec<&str> = m.lines[0][2..].split_ascii_whitespace().take(3).collect();
        lines.push(format!("m={} {}", head.join(" "), keep.join(" ")));
        for l in &m.lines[1..] {
            let about_dropped = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|p| {
                l.strip_prefix(p)
                    .and_then(|v| v.split_ascii_whitespace().next())
                    .is_some_and(|pt| dropped.iter().any(|d| d.as_str() == pt))
            });
            if !about_dropped {
                lines.push(l.clone());
            }
        }
        m.lines = lines;
        m.formats = keep;
        chosen = true;
    }
    chosen.then_some(out)
}

/// Sets a media section's port to 0 (rejected, RFC 3264 §6).
fn disable(m: &mut crate::sdp::Media) {
    if m.port == 0 {
        return;
    }
    let f: Vec<&str> = m.lines[0][2..].split_ascii_whitespace().collect();
    if f.len() >= 3 {
        let rest = f[2..].join(" ");
        m.lines[0] = format!("m={} 0 {}", f[0], rest);
    }
    m.port = 0;
}

/// `sdp` with every active section pointed at `local` (RTCP at port + 1,
/// rtcp-mux offered as the original did).
fn rewrite_to(sdp: &Sdp, local: SocketAddr) -> Sdp {
    let rw = Rewrite {
        media: sdp
            .media
            .iter()
            .map(|m| {
                Some(MediaEndpoint {
                    address: local.ip(),
                    rtp_port: local.port(),
                    rtcp_port: local.port().checked_add(1),
                    offer_mux: m.rtcp_mux,
                })
            })
            .collect(),
        replace_origin: true,
        ..Rewrite::default()
    };
    sdp.rewrite(&rw)
}

/// The RTP address of the first active section (None when every stream is
/// disabled or held with a zero address).
fn stream_remote(sdp: &Sdp) -> Option<SocketAddr> {
    sdp.media
        .iter()
        .find(|m| m.port != 0)
        .filter(|m| !m.address.is_unspecified())
        .map(|m| SocketAddr::new(m.address, m.port))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::config::{RouteConfig, TrunkConfig};
    use crate::sip::trunk::{Health, TrunkEvent};

    const A_SDP: &str = "v=0\r\no=alice 1 1 IN IP4 198.51.100.1\r\ns=-\r\n\
        c=IN IP4 198.51.100.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8 18 101\r\n\
        a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\n\
        a=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
        a=sendrecv\r\n";
    const B_SDP: &str = "v=0\r\no=trunk 5 5 IN IP4 203.0.113.9\r\ns=-\r\n\
        c=IN IP4 203.0.113.9\r\nt=0 0\r\nm=audio 50000 RTP/AVP 8 101\r\n\
        a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    const A_LOCAL: &str = "192.0.2.10:20000";
    const B_LOCAL: &str = "192.0.2.10:20002";

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

    struct H {
        b: B2bua,
        t0: Instant,
        now: Instant,
    }

    fn setup(calls_max: usize, trunks: &[TrunkConfig], routes: &[RouteConfig]) -> H {
        let t0 = Instant::now();
        let set = TrunkSet::new(trunks, t0);
        let routes = Routes::new(routes, &set);
        let mut cfg = B2buaConfig::new(calls_max);
        cfg.max_call_duration = Duration::from_secs(60);
        let pool = CallerIdPool::new(&["+4930999".to_string()]);
        H {
            b: B2bua::new(cfg, set, routes, pool, 7),
            t0,
            now: t0,
        }
    }

    fn default_h() -> H {
        setup(8, &two_trunks(), &[RouteConfig::default()])
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn text(b: &[u8]) -> &str {
        std::str::from_utf8(b).unwrap()
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

        fn ev(&mut self, e: Event) -> Vec<Output> {
            self.b.handle_event(self.now, e);
            self.drain()
        }

        fn incoming(&mut self, a: u32, user: &str, sdp: &str) -> Vec<Output> {
            self.ev(Event::IncomingCall {
                call: CallHandle(a),
                src: sock("198.51.100.1:5060"),
                request_uri: format!("sip:{user}@gw.example.org"),
                request_user: Some(user.to_string()),
                from: "\"Alice\" <sip:alice@198.51.100.1>;tag=1".into(),
                to: format!("<sip:{user}@gw.example.org>"),
                call_id: format!("a-call-{a}"),
                contact: None,
                sdp: Some(sdp.as_bytes().to_vec()),
            })
        }

        /// A INVITE -> allocate -> B INVITE; returns the bridge and invite.
        fn start(&mut self, a: u32) -> (BridgeId, OutboundInvite) {
            let out = self.incoming(a, "+4930123", A_SDP);
            let [Output::Media(MediaRequest::Allocate { call, a_sdp })] = &out[..] else {
                panic!("expected Allocate, got {out:?}");
            };
            assert_eq!(text(a_sdp), A_SDP);
            let bridge = *call;
            self.b
                .handle_media_allocated(self.now, bridge, sock(A_LOCAL), sock(B_LOCAL));
            let out = self.drain();
            (bridge, expect_invite(&out, bridge))
        }

        fn started(&mut self, bridge: BridgeId, b: u32) {
            self.b
                .handle_invite_started(self.now, bridge, Some(CallHandle(b)));
            assert_eq!(self.drain(), []);
        }

        /// A basic call up to the 200 toward A.
        fn connect(&mut self, a: u32, b: u32) -> BridgeId {
            let (bridge, _) = self.start(a);
            self.started(bridge, b);
            let out = self.ev(Event::Answered {
                call: CallHandle(b),
                sdp: Some(B_SDP.as_bytes().to_vec()),
            });
            assert_eq!(out.len(), 2, "{out:?}");
            bridge
        }
    }

    fn expect_invite(out: &[Output], bridge: BridgeId) -> OutboundInvite {
        match out {
            [Output::Sip(SipAction::Invite { bridge: b, invite })] if *b == bridge => {
                invite.clone()
            }
            _ => panic!("expected one Invite, got {out:?}"),
        }
    }

    fn respond_of(o: &Output) -> (CallHandle, u16, Option<&str>) {
        match o {
            Output::Sip(SipAction::Respond {
                call, status, sdp, ..
            }) => (*call, *status, sdp.as_deref().map(text)),
            _ => panic!("expected Respond, got {o:?}"),
        }
    }

    fn record_of(o: &Output) -> &CallRecord {
        match o {
            Output::Record(r) => r,
            _ => panic!("expected Record, got {o:?}"),
        }
    }

    #[test]
    fn basic_call() {
        let mut h = default_h();
        let (bridge, inv) = h.start(1);
        assert_eq!(inv.trunk, TrunkId(0));
        assert_eq!(inv.target, sock("192.0.2.1:5060"));
        assert_eq!(inv.request_uri, "sip:+4930123@192.0.2.1:5060");
        assert_eq!(inv.from, "sip:alice@198.51.100.1");
        assert_eq!(
            inv.extra_headers,
            [(
                "P-Asserted-Identity".to_string(),
                "<sip:+4930999@192.0.2.1:5060;user=phone>".to_string()
            )]
        );
        let offer = text(&inv.sdp);
        assert!(offer.contains("c=IN IP4 192.0.2.10\r\n"), "{offer}");
        assert!(
            offer.contains("m=audio 20002 RTP/AVP 0 8 101\r\n"),
            "{offer}"
        );
        assert!(
            !offer.contains("G729") && !offer.contains("annexb"),
            "{offer}"
        );
        assert!(!offer.contains("198.51.100.1"), "{offer}");
        // The built params are what SipEndpoint::invite takes.
        inv.with_params(|p| {
            assert_eq!(p.target, inv.target);
            assert_eq!(p.extra_headers.len(), 1);
        });
        h.started(bridge, 100);

        h.now += Duration::from_millis(300);
        let out = h.ev(Event::Ringing {
            call: CallHandle(100),
            sdp: None,
        });
        assert_eq!(out.len(), 1);
        assert_eq!(respond_of(&out[0]), (CallHandle(1), 180, None));

        h.now += Duration::from_secs(2);
        let out = h.ev(Event::Answered {
            call: CallHandle(100),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert_eq!(out.len(), 2, "{out:?}");
        let (call, status, sdp) = respond_of(&out[0]);
        assert_eq!((call, status), (CallHandle(1), 200));
        let answer = sdp.unwrap();
        assert!(answer.contains("c=IN IP4 192.0.2.10\r\n"), "{answer}");
        assert!(
            answer.contains("m=audio 20000 RTP/AVP 8 101\r\n"),
            "{answer}"
        );
        assert!(!answer.contains("203.0.113.9"), "{answer}");
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Install {
                call: bridge,
                a_remote: Some(sock("198.51.100.1:40000")),
                b_remote: Some(sock("203.0.113.9:50000")),
            })
        );
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 1);

        h.now += Duration::from_secs(30);
        let out = h.ev(Event::Ended {
            call: CallHandle(1),
            by_remote: true,
        });
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Bye {
                call: CallHandle(100),
                headers: vec![]
            })
        );
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Release { call: bridge })
        );
        let r = record_of(&out[2]);
        assert_eq!(r.hangup, Hangup::Caller);
        assert_eq!((r.sip_status, r.q850_cause), (200, 16));
        assert_eq!(r.trunk.as_deref(), Some("t1"));
        assert_eq!((r.attempts, r.trunk_status), (1, Some(200)));
        assert_eq!(r.callee, "+4930123");
        assert_eq!(r.caller, "sip:alice@198.51.100.1");
        assert_eq!(r.a_call_id, "a-call-1");
        assert_eq!(r.created, h.t0);
        assert_eq!(r.ringing, Some(h.t0 + Duration::from_millis(300)));
        assert_eq!(r.answered, Some(h.t0 + Duration::from_millis(2300)));
        assert_eq!(r.ended, h.now);
        assert_eq!(h.b.calls_len(), 0);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
        // The BYE's own completion on B is no longer ours.
        assert_eq!(
            h.ev(Event::Ended {
                call: CallHandle(100),
                by_remote: false
            }),
            []
        );
        assert_eq!(h.b.poll_timeout(), None);
    }

    #[test]
    fn failover_on_503_then_success_on_trunk_2() {
        let mut h = default_h();
        let (bridge, _) = h.start(1);
        h.started(bridge, 100);
        let out = h.ev(Event::Failed {
            call: CallHandle(100),
            status: 503,
            reason: "Service Unavailable".into(),
            challenge: None,
        });
        let inv = expect_invite(&out, bridge);
        assert_eq!(inv.trunk, TrunkId(1));
        assert_eq!(inv.target, sock("192.0.2.2:5060"));
        assert_eq!(inv.request_uri, "sip:+4930123@192.0.2.2");
        assert!(text(&inv.sdp).contains("m=audio 20002 "));
        assert_eq!(h.b.counters().failovers, 1);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
        h.started(bridge, 101);
        // Events of the dead first leg are ignored.
        assert_eq!(
            h.ev(Event::Ringing {
                call: CallHandle(100),
                sdp: None
            }),
            []
        );
        let out = h.ev(Event::Answered {
            call: CallHandle(101),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert_eq!(respond_of(&out[0]).1, 200);
        let out = h.ev(Event::Ended {
            call: CallHandle(101),
            by_remote: true,
        });
        let r = record_of(&out[2]);
        assert_eq!(r.trunk.as_deref(), Some("t2"));
        assert_eq!(r.attempts, 2);
    }

    #[test]
    fn all_trunks_503_gives_500() {
        let mut h = default_h();
        let (bridge, _) = h.start(1);
        h.started(bridge, 100);
        for (leg, next) in [(100, true), (101, false)] {
            let out = h.ev(Event::Failed {
                call: CallHandle(leg),
                status: 503,
                reason: "Service Unavailable".into(),
                challenge: None,
            });
            if next {
                expect_invite(&out, bridge);
                h.started(bridge, 101);
            } else {
                assert_eq!(respond_of(&out[0]), (CallHandle(1), 500, None));
                let r = record_of(&out[2]);
                assert_eq!(
                    (r.sip_status, r.trunk_status, r.q850_cause),
                    (500, Some(503), 41)
                );
            }
        }
    }

    #[test]
    fn no_failover_on_486() {
        let mut h = default_h();
        let (bridge, _) = h.start(1);
        h.started(bridge, 100);
        let out = h.ev(Event::Failed {
            call: CallHandle(100),
            status: 486,
            reason: "Busy Here".into(),
            challenge: None,
        });
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(respond_of(&out[0]), (CallHandle(1), 486, None));
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Release { call: bridge })
        );
        let r = record_of(&out[2]);
        assert_eq!(
            (r.hangup, r.q850_cause, r.attempts),
            (Hangup::Callee, 17, 1)
        );
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
    }

    #[test]
    fn failure_mapping() {
        assert_eq!(map_failure(None), (408, 102));
        assert_eq!(map_failure(Some(503)), (500, 41));
        assert_eq!(map_failure(Some(407)), (500, 21));
        assert_eq!(map_failure(Some(302)), (480, 127));
        assert_eq!(map_failure(Some(486)), (486, 17));
        assert_eq!(map_failure(Some(404)), (404, 1));
        assert_eq!(map_failure(Some(603)), (603, 21));
        assert_eq!(map_failure(Some(502)), (502, 38));
        assert_eq!(map_failure(Some(100)), (500, 41));
    }

    #[test]
    fn timeout_failover_then_408() {
        let mut h = default_h();
        let (bridge, _) = h.start(1);
        h.started(bridge, 100);
        // Timer B on the first trunk.
        let out = h.ev(Event::TimedOut {
            call: CallHandle(100),
        });
        assert_eq!(expect_invite(&out, bridge).trunk, TrunkId(1));
        h.started(bridge, 101);
        // The second trunk says nothing within its timeout_ms: CANCEL it;
        // no trunk is left, so A gets 408.
        let deadline = h.b.poll_timeout().unwrap();
        assert_eq!(deadline, h.now + Duration::from_millis(5000));
        h.now = deadline;
        h.b.handle_timeout(h.now);
        let out = h.drain();
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Cancel {
                call: CallHandle(101)
            })
        );
        assert_eq!(respond_of(&out[1]), (CallHandle(1), 408, None));
        let r = record_of(&out[3]);
        assert_eq!(
            (r.sip_status, r.q850_cause, r.trunk_status),
            (408, 102, None)
        );
    }

    #[test]
    fn trunk_timeout_fails_over() {
        let mut h = default_h();
        let (bridge, _) = h.start(1);
        h.started(bridge, 100);
        h.now += Duration::from_millis(5000);
        h.b.handle_timeout(h.now);
        let out = h.drain();
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Cancel {
                call: CallHandle(100)
            })
        );
        assert_eq!(expect_invite(&out[1..], bridge).trunk, TrunkId(1));
    }

    #[test]
    fn early_media_then_answer_updates_the_relay() {
        let mut h = default_h();
        let (bridge, _) = h.start(1);
        h.started(bridge, 100);
        let early = B_SDP.replace("50000", "50010");
        let out = h.ev(Event::Progress {
            call: CallHandle(100),
            status: 183,
            sdp: Some(early.into_bytes()),
        });
        assert_eq!(
            out[0],
            Output::Media(MediaRequest::Install {
                call: bridge,
                a_remote: Some(sock("198.51.100.1:40000")),
                b_remote: Some(sock("203.0.113.9:50010")),
            })
        );
        let (call, status, sdp) = respond_of(&out[1]);
        assert_eq!((call, status), (CallHandle(1), 183));
        assert!(sdp.unwrap().contains("m=audio 20000 "));
        let out = h.ev(Event::Answered {
            call: CallHandle(100),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Update {
                call: bridge,
                a_remote: Some(sock("198.51.100.1:40000")),
                b_remote: Some(sock("203.0.113.9:50000")),
            })
        );
    }

    #[test]
    fn ack_timeout_on_a_ends_b() {
        let mut h = default_h();
        let bridge = h.connect(1, 100);
        let out = h.ev(Event::AckTimeout {
            call: CallHandle(1),
        });
        assert_eq!(
            out[..2],
            [
                Output::Sip(SipAction::Bye {
                    call: CallHandle(100),
                    headers: vec![]
                }),
                Output::Media(MediaRequest::Release { call: bridge }),
            ]
        );
        let r = record_of(&out[2]);
        assert_eq!((r.hangup, r.q850_cause), (Hangup::Gateway, 102));
        // The endpoint's own BYE on A then ends A: nothing more from us.
        assert_eq!(
            h.ev(Event::Ended {
                call: CallHandle(1),
                by_remote: false
            }),
            []
        );
    }

    #[test]
    fn cancel_while_ringing() {
        let mut h = default_h();
        let (bridge, _) = h.start(1);
        h.started(bridge, 100);
        h.ev(Event::Ringing {
            call: CallHandle(100),
            sdp: None,
        });
        let out = h.ev(Event::Cancelled {
            call: CallHandle(1),
        });
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Cancel {
                call: CallHandle(100)
            })
        );
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Release { call: bridge })
        );
        let r = record_of(&out[2]);
        assert_eq!((r.hangup, r.sip_status), (Hangup::Caller, 487));
        assert!(r.ringing.is_some() && r.answered.is_none());
        // B's 487 afterwards is ignored.
        let out = h.ev(Event::Failed {
            call: CallHandle(100),
            status: 487,
            reason: "Request Terminated".into(),
            challenge: None,
        });
        assert_eq!(out, []);
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
    }

    #[test]
    fn cancel_before_allocation_releases_late_ports() {
        let mut h = default_h();
        let out = h.incoming(1, "+4930123", A_SDP);
        let Output::Media(MediaRequest::Allocate { call: bridge, .. }) = out[0] else {
            panic!("{out:?}");
        };
        let out = h.ev(Event::Cancelled {
            call: CallHandle(1),
        });
        assert_eq!(out.len(), 2, "{out:?}");
        h.b.handle_media_allocated(h.now, bridge, sock(A_LOCAL), sock(B_LOCAL));
        assert_eq!(
            h.drain(),
            [Output::Media(MediaRequest::Release { call: bridge })]
        );
        h.b.handle_invite_started(h.now, bridge, Some(CallHandle(9)));
        assert_eq!(
            h.drain(),
            [Output::Sip(SipAction::Cancel {
                call: CallHandle(9)
            })]
        );
    }

    #[test]
    fn callee_bye() {
        let mut h = default_h();
        let bridge = h.connect(1, 100);
        let out = h.ev(Event::Ended {
            call: CallHandle(100),
            by_remote: true,
        });
        assert_eq!(
            out[0],
            Output::Sip(SipAction::Bye {
                call: CallHandle(1),
                headers: vec![]
            })
        );
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Release { call: bridge })
        );
        assert_eq!(record_of(&out[2]).hangup, Hangup::Callee);
    }

    #[test]
    fn reinvite_hold_passed_through() {
        let mut h = default_h();
        let bridge = h.connect(1, 100);
        let hold = A_SDP
            .replace("a=sendrecv", "a=sendonly")
            .replace("o=alice 1 1", "o=alice 1 2");
        let out = h.ev(Event::Reinvite {
            call: CallHandle(1),
            sdp: Some(hold.into_bytes()),
        });
        let [Output::Sip(SipAction::Reoffer { call, method, sdp })] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!((*call, *method), (CallHandle(100), ReofferMethod::Invite));
        let offer = text(sdp);
        assert!(offer.contains("a=sendonly"), "{offer}");
        assert!(offer.contains("m=audio 20002 RTP/AVP 0 8 101"), "{offer}");
        // Glare: B offers while A's offer is in flight.
        let out = h.ev(Event::Update {
            call: CallHandle(100),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert_eq!(respond_of(&out[0]), (CallHandle(100), 491, None));
        // B answers recvonly.
        let held = B_SDP.replace("a=rtpmap:101", "a=recvonly\r\na=rtpmap:101");
        h.b.handle_reoffer_answered(h.now, CallHandle(100), 200, Some(held.into_bytes()));
        let out = h.drain();
        assert_eq!(out.len(), 2, "{out:?}");
        let (call, status, sdp) = respond_of(&out[0]);
        assert_eq!((call, status), (CallHandle(1), 200));
        let answer = sdp.unwrap();
        assert!(answer.contains("a=recvonly"), "{answer}");
        assert!(answer.contains("m=audio 20000 "), "{answer}");
        assert_eq!(
            out[1],
            Output::Media(MediaRequest::Update {
                call: bridge,
                a_remote: Some(sock("198.51.100.1:40000")),
                b_remote: Some(sock("203.0.113.9:50000")),
            })
        );
        // On hold, silence is expected: no media timeout.
        assert!(!h.b.handle_media_timeout(h.now, bridge));
        assert_eq!(h.drain(), []);
        // Resume from B this time: crosses to A.
        let out = h.ev(Event::Reinvite {
            call: CallHandle(100),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        let [Output::Sip(SipAction::Reoffer { call, sdp, .. })] = &out[..] else {
            panic!("{out:?}");
        };
        assert_eq!(*call, CallHandle(1));
        assert!(text(sdp).contains("m=audio 20000 "));
        // An offerless re-INVITE is answered locally with the last SDP.
        h.b.handle_reoffer_answered(h.now, CallHandle(1), 200, Some(A_SDP.as_bytes().to_vec()));
        h.drain();
        let out = h.ev(Event::Reinvite {
            call: CallHandle(1),
            sdp: None,
        });
        let (call, status, sdp) = respond_of(&out[0]);
        assert_eq!((call, status), (CallHandle(1), 200));
        assert!(sdp.unwrap().contains("m=audio 20000 "));
    }

    #[test]
    fn max_duration_byes_both_sides() {
        let mut h = default_h();
        let bridge = h.connect(1, 100);
        let deadline = h.b.poll_timeout().unwrap();
        assert_eq!(deadline, h.t0 + Duration::from_secs(60));
        h.now = deadline - Duration::from_millis(1);
        h.b.handle_timeout(h.now);
        assert_eq!(h.drain(), []);
        h.now = deadline;
        h.b.handle_timeout(h.now);
        let out = h.drain();
        let reason = vec![("Reason".to_string(), MAX_DURATION_REASON.to_string())];
        assert_eq!(
            out[..3],
            [
                Output::Sip(SipAction::Bye {
                    call: CallHandle(1),
                    headers: reason.clone()
                }),
                Output::Sip(SipAction::Bye {
                    call: CallHandle(100),
                    headers: reason
                }),
                Output::Media(MediaRequest::Release { call: bridge }),
            ]
        );
        let r = record_of(&out[3]);
        assert_eq!((r.hangup, r.q850_cause), (Hangup::Gateway, 102));
        assert_eq!(h.b.poll_timeout(), None);
    }

    #[test]
    fn no_relay_ports_is_503_with_retry_after() {
        let mut h = default_h();
        let out = h.incoming(1, "+4930123", A_SDP);
        let [Output::Media(MediaRequest::Allocate { call, .. })] = &out[..] else {
            panic!("expected Allocate, got {out:?}");
        };
        h.b.handle_media_failed(h.now, *call);
        let out = h.drain();
        let Output::Sip(SipAction::Respond {
            status, headers, ..
        }) = &out[0]
        else {
            panic!("expected a response, got {out:?}");
        };
        assert_eq!(*status, 503);
        assert_eq!(headers[0].0, "Retry-After");
        assert!(headers[0].1.parse::<u32>().is_ok_and(|s| s > 0));
        assert_eq!(h.b.calls_len(), 0);
    }

    #[test]
    fn media_timeout_ends_connected_calls_only() {
        let mut h = default_h();
        // Ringing: no media expected yet, nothing happens.
        let (ringing, _) = h.start(2);
        h.started(ringing, 200);
        assert!(!h.b.handle_media_timeout(h.now, ringing));
        assert_eq!(h.drain(), []);
        let bridge = h.connect(1, 100);
        assert!(h.b.handle_media_timeout(h.now, bridge));
        let out = h.drain();
        let byes: Vec<CallHandle> = out
            .iter()
            .filter_map(|o| match o {
                Output::Sip(SipAction::Bye { call, headers }) => {
                    assert_eq!(headers[0].1, MAX_DURATION_REASON);
                    Some(*call)
                }
                _ => None,
            })
            .collect();
        assert_eq!(byes, [CallHandle(1), CallHandle(100)]);
        assert!(out.contains(&Output::Media(MediaRequest::Release { call: bridge })));
        assert_eq!(h.b.counters().media_timeouts, 1);
        // The call is gone: a second timeout is a no-op.
        assert!(!h.b.handle_media_timeout(h.now, bridge));
    }

    #[test]
    fn codec_filtering() {
        let sdp = Sdp::parse(A_SDP.as_bytes()).unwrap();
        let f = filter_codecs(&sdp, &["pcma".to_string()]).unwrap();
        assert_eq!(f.media[0].formats, ["8", "101"]);
        let s = f.to_string_crlf();
        assert!(!s.contains("PCMU") && !s.contains("G729") && !s.contains("fmtp:18"));
        assert!(s.contains("a=fmtp:101 0-16") && s.contains("a=sendrecv"));
        // A second stream is disabled; only telephone-event is no codec.
        let two = format!("{A_SDP}m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n");
        let f = filter_codecs(&Sdp::parse(two.as_bytes()).unwrap(), &["G729".into()]).unwrap();
        assert_eq!(f.media[0].formats, ["18", "101"]);
        assert_eq!(f.media[1].port, 0);
        assert!(f.to_string_crlf().contains("m=video 0 RTP/AVP 96"));
        assert!(filter_codecs(&sdp, &["opus".into()]).is_none());
        // Through the B2BUA: nothing acceptable means 488 to A.
        let mut h = default_h();
        let only_g729 = A_SDP.replace("RTP/AVP 0 8 18 101", "RTP/AVP 18");
        let out = h.incoming(1, "+4930123", &only_g729);
        assert_eq!(respond_of(&out[0]), (CallHandle(1), 488, None));
        assert_eq!(h.b.calls_len(), 0);
        assert_eq!(h.b.counters().rejected_sdp, 1);
    }

    #[test]
    fn over_capacity_gets_503() {
        let mut h = setup(1, &two_trunks(), &[RouteConfig::default()]);
        h.start(1);
        let out = h.incoming(2, "+4930124", A_SDP);
        let Output::Sip(SipAction::Respond {
            call,
            status,
            headers,
            ..
        }) = &out[0]
        else {
            panic!("{out:?}");
        };
        assert_eq!((*call, *status), (CallHandle(2), 503));
        assert_eq!(headers[0].0, "Retry-After");
        assert_eq!(h.b.counters().rejected_full, 1);
        // The refused attempt still gets its record (F-C1).
        let r = record_of(&out[1]);
        assert_eq!((r.bridge, r.sip_status, r.attempts), (None, 503, 0));
        assert_eq!((r.callee.as_str(), r.hangup), ("+4930124", Hangup::Gateway));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn trunk_limit_gets_503_with_retry_after() {
        let mut t = two_trunks();
        t.truncate(1);
        t[0].max_calls = 1;
        let mut h = setup(4, &t, &[RouteConfig::default()]);
        h.start(1);
        let out = h.incoming(2, "+4930124", A_SDP);
        let Output::Sip(SipAction::Respond {
            status, headers, ..
        }) = &out[0]
        else {
            panic!("{out:?}");
        };
        assert_eq!(*status, 503);
        assert_eq!(headers[0].0, "Retry-After");
    }

    #[test]
    fn no_route_or_no_trunk_gets_404() {
        let route = RouteConfig {
            prefix: "+49".into(),
            ..RouteConfig::default()
        };
        let mut h = setup(4, &two_trunks(), &[route]);
        let out = h.incoming(1, "+15551234", A_SDP);
        assert_eq!(respond_of(&out[0]), (CallHandle(1), 404, None));
        let out = h.incoming(2, "sip-user", A_SDP);
        assert_eq!(respond_of(&out[0]), (CallHandle(2), 404, None));
        // A route over an empty trunk set: NoTrunk says 404.
        let mut h = setup(4, &[], &[RouteConfig::default()]);
        let out = h.incoming(3, "+4930123", A_SDP);
        assert_eq!(respond_of(&out[0]), (CallHandle(3), 404, None));
        assert_eq!(h.b.counters().rejected_no_route, 1);
        assert_eq!(h.b.calls_len(), 0);
    }

    /// Three real endpoints (caller UA, gateway, trunk) with the B2BUA on
    /// the gateway's, datagrams delivered at once.
    struct E2e {
        eps: Vec<SipEndpoint>,
        addrs: [SocketAddr; 3],
        b2b: B2bua,
        now: Instant,
        events: [Vec<Event>; 3],
        sent: Vec<Vec<u8>>,
        other: Vec<Output>,
    }

    impl E2e {
        fn new() -> Self {
            Self::with_trunks(&two_trunks())
        }

        fn with_trunks(trunks: &[TrunkConfig]) -> Self {
            use crate::sip::endpoint::EndpointConfig;
            let h = setup(8, trunks, &[RouteConfig::default()]);
            let addrs = [
                sock("10.0.0.1:5060"),
                sock("10.0.0.2:5060"),
                sock("192.0.2.1:5060"),
            ];
            let eps = addrs
                .iter()
                .enumerate()
                .map(|(i, a)| SipEndpoint::new(EndpointConfig::new(*a, 0), i as u64))
                .collect();
            E2e {
                eps,
                addrs,
                b2b: h.b,
                now: h.now,
                events: Default::default(),
                sent: Vec::new(),
                other: Vec::new(),
            }
        }

        fn pump(&mut self) {
            let now = self.now;
            for _ in 0..1000 {
                let mut moved = false;
                for i in 0..3 {
                    while let Some(o) = self.eps[i].poll_output() {
                        moved = true;
                        match o {
                            crate::sip::endpoint::Output::Transmit { dst, bytes, .. } => {
                                if i == 1 {
                                    self.sent.push(bytes.clone());
                                }
                                let to = self.addrs.iter().position(|a| *a == dst).unwrap();
                                let src = self.addrs[i];
                                self.eps[to].handle_datagram(now, src, &bytes);
                            }
                            crate::sip::endpoint::Output::Event(e) if i == 1 => {
                                self.b2b.handle_event(now, e)
                            }
                            crate::sip::endpoint::Output::Event(e) => self.events[i].push(e),
                        }
                    }
                }
                while let Some(o) = self.b2b.poll_output() {
                    moved = true;
                    match o {
                        Output::Sip(a) => {
                            let r = a.apply(now, &mut self.eps[1]);
                            match a {
                                SipAction::Invite { bridge, .. } => {
                                    self.b2b
                                        .handle_invite_started(now, bridge, r.ok().flatten())
                                }
                                // A re-offer the endpoint refused (glare
                                // with the peer's own re-INVITE): 491.
                                SipAction::Reoffer { call, .. } if r.is_err() => {
                                    self.b2b.handle_reoffer_answered(now, call, 491, None)
                                }
                                _ => {
                                    r.unwrap();
                                }
                            }
                        }
                        Output::Media(MediaRequest::Allocate { call, .. }) => {
                            self.b2b.handle_media_allocated(
                                now,
                                call,
                                sock(A_LOCAL),
                                sock(B_LOCAL),
                            );
                        }
                        o => self.other.push(o),
                    }
                }
                if !moved {
                    return;
                }
            }
            panic!("never went idle");
        }
    }

    impl E2e {
        /// A calls through the gateway; returns A's leg and the trunk's.
        fn call(&mut self) -> (CallHandle, CallHandle) {
            let now = self.now;
            let a = self.eps[0]
                .invite(
                    now,
                    &InviteParams {
                        target: self.addrs[1],
                        transport: Transport::Udp,
                        request_uri: "sip:+4930123@10.0.0.2",
                        from: "sip:alice@10.0.0.1",
                        from_display: None,
                        to: "sip:+4930123@10.0.0.2",
                        call_id: None,
                        sdp: Some(A_SDP.as_bytes()),
                        extra_headers: &[],
                    },
                )
                .unwrap();
            self.pump();
            let [Event::IncomingCall { call: t, .. }] = self.events[2][..] else {
                panic!("{:?}", self.events[2]);
            };
            self.events[2].clear();
            (a, t)
        }

        /// [`E2e::call`] answered by the trunk.
        fn connect(&mut self) -> (CallHandle, CallHandle) {
            let (a, t) = self.call();
            let now = self.now;
            let body = Some(("application/sdp", B_SDP.as_bytes()));
            self.eps[2].respond(now, t, 200, "OK", body).unwrap();
            self.pump();
            assert!(matches!(self.events[0][..], [Event::Answered { .. }]));
            self.events[0].clear();
            self.events[2].clear();
            self.other.clear();
            (a, t)
        }

        /// The INVITEs the gateway sent to the trunk.
        fn trunk_invites(&self) -> Vec<Vec<u8>> {
            self.sent
                .iter()
                .filter(|b| b.starts_with(b"INVITE sip:+4930123@192.0.2.1"))
                .cloned()
                .collect()
        }
    }

    fn header<'a>(msg: &'a [u8], name: &str) -> Option<&'a str> {
        text(msg)
            .split("\r\n")
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    #[test]
    fn reinvite_crosses_as_reinvite_and_refresh_stays_local() {
        let mut e = E2e::new();
        let (a, t) = e.connect();
        let now = e.now;
        // Hold from A by re-INVITE reaches the trunk as a re-INVITE.
        let hold = A_SDP.replace("a=sendrecv", "a=sendonly");
        e.eps[0].send_reinvite(now, a, hold.as_bytes()).unwrap();
        e.pump();
        let [Event::Reinvite {
            call,
            sdp: Some(offer),
        }] = &e.events[2][..]
        else {
            panic!("{:?}", e.events[2]);
        };
        assert_eq!(*call, t);
        assert!(text(offer).contains("a=sendonly"));
        e.events[2].clear();
        let held = B_SDP.replace("a=rtpmap:101", "a=recvonly\r\na=rtpmap:101");
        let body = Some(("application/sdp", held.as_bytes()));
        e.eps[2].respond(now, t, 200, "OK", body).unwrap();
        e.pump();
        let [Event::ReinviteAnswered {
            call,
            status: 200,
            sdp: Some(ans),
        }] = &e.events[0][..]
        else {
            panic!("{:?}", e.events[0]);
        };
        assert_eq!(*call, a);
        assert!(text(ans).contains("a=recvonly") && text(ans).contains("m=audio 20000 "));
        let answer_to_a = ans.clone();
        // The gateway ACKed the trunk's 2xx.
        assert!(e
            .sent
            .iter()
            .any(|b| b.starts_with(b"ACK ") && text(b).contains("CSeq: 2 ACK")));
        assert!(matches!(
            e.other[..],
            [Output::Media(MediaRequest::Update { .. })]
        ));
        e.events[0].clear();
        e.other.clear();
        // A session refresh from A with the same SDP: answered on A's leg
        // with what A last got, nothing reaches the trunk.
        e.eps[0].send_reinvite(now, a, hold.as_bytes()).unwrap();
        e.pump();
        assert_eq!(
            e.events[0],
            [Event::ReinviteAnswered {
                call: a,
                status: 200,
                sdp: Some(answer_to_a)
            }]
        );
        assert_eq!(e.events[2], []);
        assert_eq!(e.other, []);
        // Glare: the trunk's re-INVITE crosses A's; A's side gets 491.
        e.events[0].clear();
        e.eps[2].send_reinvite(now, t, B_SDP.as_bytes()).unwrap();
        e.eps[0].send_reinvite(now, a, A_SDP.as_bytes()).unwrap();
        e.pump();
        assert!(
            e.events[0]
                .iter()
                .any(|ev| matches!(ev, Event::ReinviteAnswered { status: 491, .. })),
            "{:?}",
            e.events[0]
        );
    }

    #[test]
    fn trunk_challenge_is_answered_once_with_digest() {
        use crate::sip::digest::{parse_authorization, verify};
        let mut trunks = two_trunks();
        trunks[0].username = Some("gw".into());
        trunks[0].password = Some("secret".into());
        let mut e = E2e::with_trunks(&trunks);
        let (a, t) = e.call();
        let now = e.now;
        let challenge = "Digest realm=\"carrier\", nonce=\"n1\", qop=\"auth\", algorithm=SHA-256";
        let h = [("WWW-Authenticate", challenge)];
        e.eps[2]
            .respond_with_headers(now, t, 401, "Unauthorized", &h, None)
            .unwrap();
        e.pump();
        // The 401 was ACKed and the INVITE sent again with credentials:
        // same Call-ID and From tag, CSeq 2, a new branch.
        let invites = e.trunk_invites();
        assert_eq!(invites.len(), 2);
        let (first, second) = (&invites[0], &invites[1]);
        assert!(e
            .sent
            .iter()
            .any(|b| b.starts_with(b"ACK ") && text(b).contains("CSeq: 1 ACK")));
        assert_eq!(header(first, "Call-ID"), header(second, "Call-ID"));
        assert_eq!(header(first, "From"), header(second, "From"));
        assert_eq!(header(second, "CSeq"), Some("2 INVITE"));
        assert_ne!(header(first, "Via"), header(second, "Via"));
        assert_eq!(header(first, "Authorization"), None);
        let auth = parse_authorization(header(second, "Authorization").unwrap()).unwrap();
        assert_eq!(auth.username, "gw");
        let m = crate::sip::msg::SipMessage::parse(second).unwrap();
        let info = RequestInfo {
            method: "INVITE",
            uri: "sip:+4930123@192.0.2.1:5060",
            body: m.body(),
        };
        assert!(verify(&auth, "secret", &info));
        let [Event::IncomingCall { call: t2, .. }] = e.events[2][..] else {
            panic!("{:?}", e.events[2]);
        };
        e.events[2].clear();
        // A second challenge for the same attempt is final: 500 to A, no
        // third INVITE, no failover to t2.
        e.eps[2]
            .respond_with_headers(
                now,
                t2,
                407,
                "Proxy Authentication Required",
                &[("Proxy-Authenticate", challenge)],
                None,
            )
            .unwrap();
        e.pump();
        assert_eq!(e.trunk_invites().len(), 2);
        assert!(e
            .sent
            .iter()
            .all(|b| !b.starts_with(b"INVITE sip:+4930123@192.0.2.2")));
        let [Event::Failed { call, status, .. }] = &e.events[0][..] else {
            panic!("{:?}", e.events[0]);
        };
        assert_eq!((*call, *status), (a, 500));
        assert_eq!(e.b2b.calls_len(), 0);
    }

    #[test]
    fn challenge_without_credentials_is_final() {
        let mut e = E2e::new();
        let (a, t) = e.call();
        let now = e.now;
        let h = [("WWW-Authenticate", "Digest realm=\"c\", nonce=\"n\"")];
        e.eps[2]
            .respond_with_headers(now, t, 401, "Unauthorized", &h, None)
            .unwrap();
        e.pump();
        assert_eq!(e.trunk_invites().len(), 1);
        assert!(matches!(e.events[0][..], [Event::Failed { call, status: 500, .. }] if call == a));
    }

    #[test]
    fn require_100rel_and_session_timer_on_invite_to_trunk() {
        let mut trunks = two_trunks();
        trunks[0].require_100rel = true;
        let mut e = E2e::with_trunks(&trunks);
        let now = e.now;
        let p = InviteParams {
            target: e.addrs[1],
            transport: Transport::Udp,
            request_uri: "sip:+4930123@10.0.0.2",
            from: "sip:alice@10.0.0.1",
            from_display: None,
            to: "sip:+4930123@10.0.0.2",
            call_id: None,
            sdp: Some(A_SDP.as_bytes()),
            extra_headers: &[],
        };
        e.eps[0].invite(now, &p).unwrap();
        e.pump();
        // (The trunk here is a Kolokol endpoint, which refuses 100rel as
        // UAS with 420; only the request matters.)
        let inv = &e.trunk_invites()[0];
        assert_eq!(header(inv, "Require"), Some("100rel"));
        assert_eq!(header(inv, "Supported"), Some("timer, 100rel"));
        assert_eq!(header(inv, "Session-Expires"), Some("1800;refresher=uac"));
    }

    #[test]
    fn refreshes_are_answered_on_their_own_leg() {
        let mut h = default_h();
        h.connect(1, 100);
        // UPDATE without SDP from A: 200 without a body, nothing crosses.
        let out = h.ev(Event::Update {
            call: CallHandle(1),
            sdp: None,
        });
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(respond_of(&out[0]), (CallHandle(1), 200, None));
        // re-INVITE from the trunk repeating its SDP: answered with the
        // offer B got from us, nothing crosses.
        let out = h.ev(Event::Reinvite {
            call: CallHandle(100),
            sdp: Some(B_SDP.as_bytes().to_vec()),
        });
        assert_eq!(out.len(), 1, "{out:?}");
        let (call, status, sdp) = respond_of(&out[0]);
        assert_eq!((call, status), (CallHandle(100), 200));
        assert!(sdp.unwrap().contains("m=audio 20002 "));
        // A changed SDP from the trunk does cross.
        let moved = B_SDP.replace("50000", "50002");
        let out = h.ev(Event::Reinvite {
            call: CallHandle(100),
            sdp: Some(moved.into_bytes()),
        });
        assert!(matches!(
            out[..],
            [Output::Sip(SipAction::Reoffer {
                call: CallHandle(1),
                method: ReofferMethod::Invite,
                ..
            })]
        ));
    }

    #[test]
    fn session_expiry_on_one_leg_byes_the_other() {
        let mut h = default_h();
        let bridge = h.connect(1, 100);
        let out = h.ev(Event::SessionExpired {
            call: CallHandle(100),
        });
        match &out[..] {
            [Output::Sip(SipAction::Bye { call, headers }), Output::Media(MediaRequest::Release { call: r }), Output::Record(rec)] =>
            {
                assert_eq!(*call, CallHandle(1));
                assert_eq!(headers[0].1, MAX_DURATION_REASON);
                assert_eq!(*r, bridge);
                assert_eq!(
                    (rec.q850_cause, rec.hangup),
                    (Q850_TIMER_EXPIRY, Hangup::Gateway)
                );
            }
            _ => panic!("{out:?}"),
        }
        assert_eq!(h.b.calls_len(), 0);
    }

    #[test]
    fn end_to_end_through_real_endpoints() {
        let mut e = E2e::new();
        let now = e.now;
        let gw = e.addrs[1];
        let a = e.eps[0]
            .invite(
                now,
                &InviteParams {
                    target: gw,
                    transport: Transport::Udp,
                    request_uri: "sip:+4930123@10.0.0.2",
                    from: "sip:alice@10.0.0.1",
                    from_display: Some("Alice"),
                    to: "sip:+4930123@10.0.0.2",
                    call_id: None,
                    sdp: Some(A_SDP.as_bytes()),
                    extra_headers: &[],
                },
            )
            .unwrap();
        e.pump();
        let [Event::IncomingCall {
            call: t,
            request_user,
            from,
            sdp,
            ..
        }] = &e.events[2][..]
        else {
            panic!("{:?}", e.events[2]);
        };
        let t = *t;
        assert_eq!(request_user.as_deref(), Some("+4930123"));
        assert!(from.contains("sip:alice@10.0.0.1"), "{from}");
        assert!(text(sdp.as_ref().unwrap()).contains("m=audio 20002 RTP/AVP 0 8 101"));
        let invite = text(e.sent.iter().find(|b| b.starts_with(b"INVITE ")).unwrap());
        assert!(
            invite
                .contains("\r\nP-Asserted-Identity: <sip:+4930999@192.0.2.1:5060;user=phone>\r\n"),
            "{invite}"
        );
        e.events[2].clear();
        e.eps[2].respond(now, t, 180, "Ringing", None).unwrap();
        e.pump();
        assert_eq!(e.events[0], [Event::Ringing { call: a, sdp: None }]);
        e.events[0].clear();
        e.eps[2]
            .respond(
                now,
                t,
                200,
                "OK",
                Some(("application/sdp", B_SDP.as_bytes())),
            )
            .unwrap();
        e.pump();
        let [Event::Answered {
            call,
            sdp: Some(ans),
        }] = &e.events[0][..]
        else {
            panic!("{:?}", e.events[0]);
        };
        assert_eq!(*call, a);
        assert!(text(ans).contains("m=audio 20000 RTP/AVP 8 101"));
        assert!(matches!(
            e.other[..],
            [Output::Media(MediaRequest::Install { .. })]
        ));
        e.events[0].clear();
        e.events[2].clear();
        e.other.clear();

        // Hold from A by UPDATE, carried across and answered by the trunk.
        let hold = A_SDP.replace("a=sendrecv", "a=sendonly");
        e.eps[0].send_update(now, a, hold.as_bytes()).unwrap();
        e.pump();
        let [Event::Update {
            call,
            sdp: Some(offer),
        }] = &e.events[2][..]
        else {
            panic!("{:?}", e.events[2]);
        };
        assert_eq!(*call, t);
        assert!(text(offer).contains("a=sendonly") && text(offer).contains("m=audio 20002 "));
        let held = B_SDP.replace("a=rtpmap:101", "a=recvonly\r\na=rtpmap:101");
        e.eps[2]
            .respond(
                now,
                t,
                200,
                "OK",
                Some(("application/sdp", held.as_bytes())),
            )
            .unwrap();
        e.pump();
        let [Event::UpdateAnswered {
            call,
            status: 200,
            sdp: Some(ans),
        }] = &e.events[0][..]
        else {
            panic!("{:?}", e.events[0]);
        };
        assert_eq!(*call, a);
        assert!(text(ans).contains("a=recvonly") && text(ans).contains("m=audio 20000 "));
        assert!(matches!(
            e.other[..],
            [Output::Media(MediaRequest::Update { .. })]
        ));
        e.other.clear();
        e.events[0].clear();
        e.events[2].clear();

        e.eps[0].send_bye(now, a).unwrap();
        e.pump();
        assert!(e.events[2].contains(&Event::Ended {
            call: t,
            by_remote: true
        }));
        assert!(matches!(
            e.other[..],
            [
                Output::Media(MediaRequest::Release { .. }),
                Output::Record(_)
            ]
        ));
        assert_eq!(e.b2b.calls_len(), 0);
    }

    /// Trunk t1 probed every second, down after 2 failures, up after 2
    /// answers; t2 (priority 2) without health checks.
    fn probed_trunks() -> Vec<TrunkConfig> {
        let mut t = two_trunks();
        t[0].options_interval_s = 1;
        t[0].down_after = 2;
        t[0].up_after = 2;
        t
    }

    impl H {
        /// Advances to `t0 + ms` and fires the timers: the OPTIONS probes
        /// handed out (other outputs are not expected).
        fn probes_at(&mut self, ms: u64) -> Vec<(TrunkId, SocketAddr, String)> {
            self.now = self.t0 + Duration::from_millis(ms);
            self.b.handle_timeout(self.now);
            self.drain()
                .into_iter()
                .map(|o| match o {
                    Output::Sip(SipAction::Options {
                        trunk,
                        target,
                        request_uri,
                        ..
                    }) => (trunk, target, request_uri),
                    o => panic!("unexpected {o:?}"),
                })
                .collect()
        }

        fn options_answer(&mut self, trunk: TrunkId, status: Option<u16>) {
            let out = self.ev(Event::OptionsAnswered {
                tag: trunk.0.into(),
                status,
            });
            assert_eq!(out, []);
        }
    }

    #[test]
    fn options_probes_take_a_trunk_down_and_up() {
        let mut h = setup(8, &probed_trunks(), &[RouteConfig::default()]);
        let (t1, t2) = (TrunkId(0), TrunkId(1));
        let probe1 = || (t1, sock("192.0.2.1:5060"), "sip:192.0.2.1:5060".to_string());
        // Due at once; only t1 is probed.
        assert_eq!(h.b.poll_timeout(), Some(h.t0));
        assert_eq!(h.probes_at(0), [probe1()]);
        // In flight: no second probe, the give-up is the only deadline.
        assert_eq!(h.probes_at(1500), []);
        assert_eq!(
            h.b.poll_timeout(),
            Some(h.t0 + B2buaConfig::new(1).options_give_up)
        );
        // First failure: still up, next probe one interval after the last.
        h.options_answer(t1, None);
        assert_eq!(h.b.trunks().health(t1), Health::Up);
        assert_eq!(h.b.poll_timeout(), Some(h.t0 + Duration::from_secs(1)));
        assert_eq!(h.probes_at(1500), [probe1()]);
        // A 503 is a failure too: the second in a row takes t1 down.
        h.options_answer(t1, Some(503));
        assert_eq!(h.b.trunks().health(t1), Health::Down);
        assert_eq!(
            h.b.trunks().poll_event(),
            Some(TrunkEvent::Down {
                id: t1,
                name: "t1".into()
            })
        );
        // Calls go to t2 meanwhile.
        let (_, inv) = h.start(1);
        assert_eq!((inv.trunk, inv.target), (t2, sock("192.0.2.2:5060")));
        // Probes go on while down; one answer is not enough (up_after 2),
        // and any answer but 408/5xx counts (404 proves a server).
        assert_eq!(h.probes_at(2500), [probe1()]);
        h.options_answer(t1, Some(200));
        assert_eq!(h.b.trunks().health(t1), Health::Down);
        let (_, inv) = h.start(2);
        assert_eq!(inv.trunk, t2);
        assert_eq!(h.probes_at(3500), [probe1()]);
        h.options_answer(t1, Some(404));
        assert_eq!(h.b.trunks().health(t1), Health::Up);
        assert_eq!(
            h.b.trunks().poll_event(),
            Some(TrunkEvent::Up {
                id: t1,
                name: "t1".into()
            })
        );
        let (_, inv) = h.start(3);
        assert_eq!(inv.trunk, t1);
        // Answers for no probe in flight are ignored and counted.
        h.options_answer(t1, None);
        h.options_answer(TrunkId(1), None);
        h.options_answer(TrunkId(77), None);
        let ev = Event::OptionsAnswered {
            tag: u64::MAX,
            status: None,
        };
        assert_eq!(h.ev(ev), []);
        assert_eq!(h.b.trunks().health(t1), Health::Up);
        let c = h.b.counters();
        assert_eq!((c.options_sent, c.options_unknown), (4, 4));
    }

    #[test]
    fn refused_or_lost_probes_count_as_failures() {
        let mut h = setup(8, &probed_trunks(), &[RouteConfig::default()]);
        let t1 = TrunkId(0);
        // The endpoint refused the probe (table full).
        assert_eq!(h.probes_at(0).len(), 1);
        h.b.handle_options_failed(h.now, t1);
        h.b.handle_options_failed(h.now, t1);
        assert_eq!(h.b.counters().options_send_failed, 1, "counted once");
        assert_eq!(h.b.trunks().health(t1), Health::Up);
        // The answer is lost: given up after options_give_up, the second
        // failure, and the probes go on.
        assert_eq!(h.probes_at(1000).len(), 1);
        let give_up = h.b.config().options_give_up;
        assert_eq!(h.b.poll_timeout(), Some(h.now + give_up));
        let ms = 1000 + give_up.as_millis() as u64;
        assert_eq!(h.probes_at(ms - 1), []);
        assert_eq!(h.probes_at(ms).len(), 1, "given up, then probed again");
        assert_eq!(h.b.counters().options_lost, 1);
        assert_eq!(h.b.trunks().health(t1), Health::Down);
        // The late answer of the lost probe would be taken by the new one;
        // the endpoint's Timer F is shorter than the give-up, so a real
        // answer never comes that late.
        h.options_answer(t1, Some(200));
        assert_eq!(h.b.counters().options_unknown, 0);
    }

    #[test]
    fn probe_of_a_trunk_without_ip_address_is_skipped() {
        let mut t = probed_trunks();
        t[0].address = "sip.example.net:5070".into();
        t[0].transport = Transport::Tcp;
        t[1].options_interval_s = 5;
        t[1].transport = Transport::Tcp;
        let mut h = setup(8, &t, &[RouteConfig::default()]);
        assert_eq!(
            h.probes_at(0),
            [(
                TrunkId(1),
                sock("192.0.2.2:5060"),
                "sip:192.0.2.2;transport=tcp".to_string()
            )]
        );
        assert_eq!(h.b.counters().options_skipped, 1);
        assert_eq!(h.b.trunks().health(TrunkId(0)), Health::Up);
        // Skipped again one interval later, never in flight.
        assert_eq!(h.b.poll_timeout(), Some(h.t0 + Duration::from_secs(1)));
        assert_eq!(h.probes_at(1000), []);
        assert_eq!(h.b.counters().options_skipped, 2);
    }

    #[test]
    fn options_probe_through_real_endpoints() {
        let mut t = two_trunks();
        t[0].options_interval_s = 1;
        let mut e = E2e::with_trunks(&t);
        let now = e.now;
        assert_eq!(e.b2b.poll_timeout(), Some(now));
        e.b2b.handle_timeout(now);
        e.pump();
        // The trunk's endpoint answered 200 itself; the gateway took it.
        let opts: Vec<_> = e
            .sent
            .iter()
            .filter(|b| b.starts_with(b"OPTIONS "))
            .collect();
        assert_eq!(opts.len(), 1);
        assert!(text(opts[0]).starts_with("OPTIONS sip:192.0.2.1:5060 SIP/2.0\r\n"));
        assert_eq!(header(opts[0], "Accept"), Some("application/sdp"));
        let c = e.b2b.counters();
        assert_eq!((c.options_sent, c.options_unknown), (1, 0));
        assert!(!e.b2b.trunks().options_in_flight(TrunkId(0)));
        assert_eq!(e.eps[1].counters().responses_unmatched, 0);
        assert_eq!(
            e.b2b.poll_timeout(),
            Some(now + Duration::from_secs(1)),
            "next probe"
        );
        assert!(e.events.iter().all(Vec::is_empty));
    }

    #[test]
    fn from_mode_invite_is_accepted_by_the_endpoint() {
        use crate::sip::endpoint::EndpointConfig;
        let mut h = default_h();
        h.b.cfg.caller_id_mode = CallerIdMode::Both;
        let (bridge, inv) = h.start(1);
        assert_eq!(inv.from, "sip:+4930999@192.0.2.1:5060;user=phone");
        let mut ep = SipEndpoint::new(EndpointConfig::new(sock("10.0.0.2:5060"), 0), 1);
        let action = SipAction::Invite {
            bridge,
            invite: inv,
        };
        assert!(matches!(action.apply(h.now, &mut ep), Ok(Some(_))));
        // A re-offer on a leg without a confirmed dialog: a typed error.
        let reoffer = SipAction::Reoffer {
            call: CallHandle(0),
            method: ReofferMethod::Invite,
            sdp: Vec::new(),
        };
        assert!(reoffer.apply(h.now, &mut ep).is_err());
    }

    /// Random inputs in any order (including ones the endpoint would never
    /// send) never panic, never overflow the queue, and once every call is
    /// over no slot or trunk count is left behind. Originated calls mix
    /// in: each gets exactly one terminal event, then nothing more.
    #[test]
    fn random_inputs_are_safe() {
        use crate::call::originate::{OriginateRequest, OriginationEventKind, OriginationId};
        use rand::{Rng, SeedableRng};
        let (mut records, mut answered) = (0, 0);
        let (mut originated, mut originated_answered) = (0, 0);
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut trunks = two_trunks();
            trunks[0].username = Some("gw".into());
            trunks[0].password = Some("pw".into());
            let mut h = setup(4, &trunks, &[RouteConfig::default()]);
            let mut next_b = 1000u32;
            let mut allocs: Vec<BridgeId> = Vec::new();
            let mut handles: Vec<u32> = vec![1, 2, 3];
            // Originated calls and whether their terminal event came.
            let mut origs: Vec<(OriginationId, bool)> = Vec::new();
            let sdps = [Some(A_SDP), Some(B_SDP), Some("garbage"), None];
            for _ in 0..400 {
                // Mostly the newest legs, so that calls get somewhere.
                let n = handles.len();
                let pick = if rng.gen_bool(0.8) {
                    n - 1 - rng.gen_range(0..n.min(3))
                } else {
                    rng.gen_range(0..n)
                };
                let leg = CallHandle(handles[pick]);
                let sdp = sdps[rng.gen_range(0..sdps.len())].map(|s| s.as_bytes().to_vec());
                let status = [180, 183, 200, 302, 401, 404, 408, 486, 487, 500, 503, 603]
                    [rng.gen_range(0..12)];
                let mut outs: Vec<Output> = Vec::new();
                match rng.gen_range(0..21) {
                    0 | 1 => {
                        let a: usize = rng.gen_range(1..40);
                        let a = a as u32;
                        handles.push(a);
                        let good = rng.gen_bool(0.7);
                        let user = if good {
                            "+4930123"
                        } else {
                            ["12", "x@y", ""][a as usize % 3]
                        };
                        let body = if good || rng.gen() { A_SDP } else { "garbage" };
                        outs.extend(h.incoming(a, user, body));
                    }
                    2 => {
                        outs.extend(h.ev(Event::Ringing { call: leg, sdp }));
                    }
                    3 => {
                        outs.extend(h.ev(Event::Progress {
                            call: leg,
                            status: 183,
                            sdp,
                        }));
                    }
                    4 => {
                        let sdp = if rng.gen_bool(0.7) {
                            Some(B_SDP.as_bytes().to_vec())
                        } else {
                            sdp
                        };
                        outs.extend(h.ev(Event::Answered { call: leg, sdp }));
                    }
                    5 => {
                        let challenge = rng.gen_bool(0.5).then(|| {
                            Box::new(Challenged {
                                challenges: vec![
                                    "Digest realm=\"r\", nonce=\"n\", qop=\"auth\"".into(),
                                    "garbage".into(),
                                ],
                                call_id: "c@x".into(),
                                from_tag: "t".into(),
                                cseq: rng.gen(),
                            })
                        });
                        outs.extend(h.ev(Event::Failed {
                            call: leg,
                            status,
                            reason: String::new(),
                            challenge,
                        }));
                    }
                    15 => {
                        outs.extend(h.ev(Event::SessionExpired { call: leg }));
                    }
                    16 => {
                        outs.extend(h.ev(Event::ReinviteAnswered {
                            call: leg,
                            status,
                            sdp,
                        }));
                    }
                    6 => {
                        outs.extend(h.ev(Event::TimedOut { call: leg }));
                    }
                    7 => {
                        outs.extend(h.ev(Event::Cancelled { call: leg }));
                    }
                    8 => {
                        outs.extend(h.ev(Event::AckTimeout { call: leg }));
                    }
                    9 => {
                        outs.extend(h.ev(Event::Reinvite { call: leg, sdp }));
                    }
                    10 => {
                        outs.extend(h.ev(Event::Update { call: leg, sdp }));
                    }
                    11 => {
                        outs.extend(h.ev(Event::Ended {
                            call: leg,
                            by_remote: rng.gen(),
                        }));
                    }
                    12 => {
                        h.b.handle_reoffer_answered(h.now, leg, status, sdp);
                    }
                    13 => {
                        h.now += Duration::from_millis(rng.gen_range(0..20_000));
                        h.b.handle_timeout(h.now);
                    }
                    17 | 18 => {
                        let number = ["+4930123", "4930", "+49x", ""][rng.gen_range(0..4)];
                        let r = OriginateRequest {
                            number: number.into(),
                            caller_id: None,
                            account: String::new(),
                            correlation: seed,
                            max_duration: Some(Duration::from_secs(rng.gen_range(0..90))),
                        };
                        if let Ok(id) = h.b.originate(h.now, r) {
                            origs.push((id, false));
                        }
                    }
                    19 if !origs.is_empty() => {
                        let (id, _) = origs[rng.gen_range(0..origs.len())];
                        let _ = h.b.hangup_origination(h.now, id);
                    }
                    14 if !allocs.is_empty() => {
                        let id = allocs.swap_remove(rng.gen_range(0..allocs.len()));
                        if rng.gen_bool(0.9) {
                            h.b.handle_media_allocated(h.now, id, sock(A_LOCAL), sock(B_LOCAL));
                        } else {
                            h.b.handle_media_failed(h.now, id);
                        }
                    }
                    _ => {}
                }
                // The shell's side: answer Allocate and Invite.
                outs.extend(h.drain());
                let mut guard = 0;
                while let Some(o) = outs.pop() {
                    guard += 1;
                    assert!(guard < 1000);
                    match o {
                        Output::Media(MediaRequest::Allocate { call, .. }) => allocs.push(call),
                        Output::Record(r) => {
                            records += 1;
                            answered += usize::from(r.answered.is_some());
                        }
                        Output::Sip(SipAction::Invite { bridge, .. }) => {
                            let leg = rng.gen_bool(0.9).then(|| {
                                next_b += 1;
                                handles.push(next_b);
                                CallHandle(next_b)
                            });
                            h.b.handle_invite_started(h.now, bridge, leg);
                            outs.extend(h.drain());
                        }
                        _ => {}
                    }
                }
                assert!(h.b.calls_len() <= 4);
                while let Some(ev) = h.b.poll_origination_event() {
                    let o = origs.iter_mut().find(|o| o.0 == ev.id).expect("known id");
                    assert!(!o.1, "event after the terminal one: {ev:?}");
                    assert_eq!(ev.correlation, seed);
                    match ev.kind {
                        OriginationEventKind::Failed { .. } => o.1 = true,
                        OriginationEventKind::Ended { .. } => {
                            o.1 = true;
                            originated_answered += 1;
                        }
                        _ => {}
                    }
                }
            }
            for id in allocs {
                h.b.handle_media_allocated(h.now, id, sock(A_LOCAL), sock(B_LOCAL));
            }
            // Every call ends at its maximum duration at the latest; stray
            // INVITE actions left then are answered like a full endpoint.
            for _ in 0..8 {
                h.now += Duration::from_secs(61);
                h.b.handle_timeout(h.now);
                for o in h.drain() {
                    if let Output::Sip(SipAction::Invite { bridge, .. }) = o {
                        h.b.handle_invite_started(h.now, bridge, None);
                    }
                }
            }
            assert_eq!(h.b.calls_len(), 0, "seed {seed}");
            assert_eq!(h.b.trunks().calls(TrunkId(0)), 0, "seed {seed}");
            assert_eq!(h.b.trunks().calls(TrunkId(1)), 0, "seed {seed}");
            assert!(h.b.legs.is_empty(), "seed {seed}");
            assert_eq!(h.b.poll_timeout(), None, "seed {seed}");
            while let Some(ev) = h.b.poll_origination_event() {
                let o = origs.iter_mut().find(|o| o.0 == ev.id).expect("known id");
                assert!(!o.1, "event after the terminal one: {ev:?}");
                o.1 = matches!(
                    ev.kind,
                    OriginationEventKind::Failed { .. } | OriginationEventKind::Ended { .. }
                );
            }
            assert!(origs.iter().all(|o| o.1), "seed {seed}: {origs:?}");
            assert_eq!(h.b.counters().origination_events_dropped, 0);
            originated += origs.len();
        }
        // The walk reaches deep states, not only refusals.
        assert!(records > 200 && answered > 20, "{records} {answered}");
        assert!(
            originated > 40 && originated_answered > 5,
            "{originated} {originated_answered}"
        );
    }

    #[test]
    fn slots_are_reused_and_stale_ids_ignored() {
        let mut h = setup(1, &two_trunks(), &[RouteConfig::default()]);
        for i in 0..3u32 {
            let bridge = h.connect(1 + i, 100 + i);
            h.ev(Event::Ended {
                call: CallHandle(1 + i),
                by_remote: true,
            });
            h.b.handle_media_allocated(h.now, bridge, sock(A_LOCAL), sock(B_LOCAL));
            assert_eq!(
                h.drain(),
                [Output::Media(MediaRequest::Release { call: bridge })]
            );
        }
        assert_eq!(h.b.trunks().calls(TrunkId(0)), 0);
    }
}
