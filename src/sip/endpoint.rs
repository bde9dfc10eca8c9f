//! The sans-IO SIP endpoint one shard owns: the transaction user glue that
//! routes datagrams to transactions and dialogs (RFC 3261 §8, §12–§17).
//!
//! [`SipEndpoint`] takes datagrams with [`SipEndpoint::handle_datagram`] and
//! timer expiries with [`SipEndpoint::handle_timeout`], and gives back
//! datagrams to send and events for the transaction user (the B2BUA) with
//! [`SipEndpoint::poll_output`] and the next deadline with
//! [`SipEndpoint::poll_timeout`]. After any `handle_*` or API call the
//! driver drains `poll_output` until `None` and then re-reads
//! `poll_timeout`. Time and randomness come in as arguments (`now`, the RNG
//! seed); nothing here reads the clock or touches a socket.
//!
//! What it does:
//! * Parses with [`SipMessage::parse`]; a refused request is answered with
//!   the status the parser names (400/501/505/513) when Via, From, To,
//!   Call-ID and CSeq can still be recovered, and dropped otherwise.
//! * Responses go to the client transaction with the same branch and CSeq
//!   method (§17.1.3); a 2xx retransmission whose INVITE transaction is gone
//!   goes to the dialog so that the ACK is re-sent (§13.2.2.4).
//! * Requests go to the server transaction they retransmit (§17.2.3), ACKs
//!   to the INVITE transaction (non-2xx) or the dialog (2xx), CANCEL to the
//!   INVITE it cancels (§9.2), in-dialog requests to their dialog (§12.2.2),
//!   new INVITEs to a new call ([`Event::IncomingCall`]).
//! * As UAS it retransmits its 2xx to INVITE until the ACK arrives
//!   (§13.3.1.4); as UAC it sends the ACK for 2xx itself, from the dialog.
//! * Mid-call offers go out as re-INVITE ([`SipEndpoint::send_reinvite`],
//!   §14.1: one at a time, ACKed by the endpoint, re-ACKed for each
//!   retransmitted 2xx, the outcome in [`Event::ReinviteAnswered`], 491 on
//!   glare) or UPDATE ([`SipEndpoint::send_update`], RFC 3311).
//! * Out-of-dialog OPTIONS probes (trunk health checks) go out with
//!   [`SipEndpoint::send_options`] in their own non-INVITE transaction; the
//!   final status, or `None` after Timer F, comes back once as
//!   [`Event::OptionsAnswered`].
//! * As UAC it PRACKs reliable provisional responses (RFC 3262 §4: `Require:
//!   100rel` with `RSeq`, in RSeq order, a retransmission PRACKed again with
//!   the same request and not reported twice); the PRACK's answer is
//!   absorbed. Our INVITEs say `Supported: timer, 100rel`; the TU adds
//!   `Require: 100rel` when a trunk needs it.
//! * A 401/407 to our INVITE carries its challenges in [`Event::Failed`]
//!   ([`Challenged`]); the TU answers with [`SipEndpoint::invite_resend`]
//!   (same Call-ID and From tag, next CSeq, RFC 3261 §22.2). Credentials
//!   are the TU's business (the trunk set holds them).
//! * Session timers (RFC 4028) on both sides: our INVITEs offer
//!   [`EndpointConfig::session_expires_s`] with `refresher=uac` and Min-SE;
//!   a request asking for less than [`EndpointConfig::min_se_s`] gets 422;
//!   our 2xx to an INVITE or a refresh carries the granted Session-Expires
//!   (and `Require: timer` when the peer supports it). The refresher
//!   refreshes with an UPDATE without SDP at half the interval; the other
//!   side, or a refresher whose refresh got 408/481 or no answer, ends the
//!   call with a BYE (Q.850 cause 102, [`SESSION_EXPIRED_REASON`]) and
//!   [`Event::SessionExpired`]. A received refresh reaches the TU as
//!   [`Event::Reinvite`]/[`Event::Update`] like any other; the timer restarts
//!   when the TU's 2xx goes out.
//!
//! Everything is bounded at creation: calls ([`EndpointConfig::dialogs_max`],
//! over it a new INVITE gets 503), transactions
//! ([`EndpointConfig::transactions_max`]) and pending outputs
//! ([`EndpointConfig::outputs_max`], over it an output is dropped and
//! counted).
//!
//! Not done here: DNS (RFC 3263; requests go to the address the TU gives, or
//! to the peer the call came from), forking (the first dialog wins),
//! stream framing and connections for TCP/TLS (the shell's: every message
//! comes in and goes out with its [`Remote`], whose transport sets Via,
//! Contact and whether transactions retransmit), 100rel as UAS (we never send reliable provisional
//! responses, do not advertise `100rel` in [`SUPPORTED`], answer `Require:
//! 100rel` with 420 and PRACK with 405), offers in PRACK or in reliable
//! provisional responses beyond reporting their SDP, retrying a 422 to our
//! own INVITE with the peer's Min-SE (the 422 is a failure like any 4xx),
//! and session refreshes by re-INVITE (a peer that refuses our refresh
//! UPDATE with 405/501 keeps its call without a session timer).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use crate::config::Transport;

use super::build::{start_response_to, BuildError, MessageWriter};
use super::dialog::{
    new_tag, Dialog, DialogError, DialogState, RequestFields, UacDialogParams, UasDialogParams,
};
use super::header::{HeaderName, Via};
use super::msg::{should_discard_response, Method, SipMessage, SipParseError};
use super::transaction::{
    ClientTransaction, ServerTransaction, TableError, TimerConfig, Transaction, TransactionKey,
    TransactionTable, TxEvent, TxHandle, TxKind, BRANCH_MAGIC_COOKIE,
};
use super::uri::Uri;

/// Methods this endpoint handles, for `Allow` (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE";

/// Body types accepted, for `Accept` (§20.1).
pub const ACCEPT: &str = "application/sdp";

/// Option tags supported as UAS (§20.37): session timers (RFC 4028). A
/// request that requires anything else (`100rel` included: reliable
/// provisional responses are only implemented as UAC) gets 420.
pub const SUPPORTED: &[&str] = &["timer"];

/// `Supported` of the INVITEs we send: as UAC we answer reliable
/// provisional responses with PRACK (RFC 3262) and take part in session
/// timers (RFC 4028).
pub const UAC_SUPPORTED: &str = "timer, 100rel";

/// The `Reason` (RFC 3326) on the BYE of a session that was not refreshed
/// in time (RFC 4028 §10): Q.850 cause 102 "recovery on timer expiry".
pub const SESSION_EXPIRED_REASON: &str = "Q.850;cause=102;text=\"Recovery on timer expiry\"";

/// The smallest session interval RFC 4028 §4 allows, seconds.
pub const SESSION_EXPIRES_MIN_S: u32 = 90;

/// Challenge header values kept from one 401/407 (servers list a few
/// algorithms at most; more are noise).
const CHALLENGES_MAX: usize = 8;

/// Seconds a 503 asks the peer to wait (§20.33). Long enough for a burst of
/// calls to clear, short enough not to look like an outage.
pub const RETRY_AFTER_S: u32 = 5;

/// Max-Forwards of requests we originate (§8.1.1.6 recommends 70).
const MAX_FORWARDS: u32 = 70;

/// Events one transaction input produces at most (Final + AckRequired +
/// Terminated, Timeout + Terminated): a bound for the drain loops.
const TX_EVENTS_BOUND: usize = 8;

/// Datagrams one transaction queues at most per input (request/response and
/// an ACK): a bound for the drain loops.
const TX_TRANSMITS_BOUND: usize = 4;

/// A peer as the transport layer knows it: its address and the transport
/// a message came in on or goes out on. For TCP/TLS the address names the
/// connection (its remote end); the shell keeps the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Remote {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The transport.
    pub transport: Transport,
}

impl Remote {
    /// A peer reached over UDP.
    pub fn udp(addr: SocketAddr) -> Remote {
        Remote {
            addr,
            transport: Transport::Udp,
        }
    }

    /// No retransmission timers on this transport (§17.1.1.2, §17.2.1).
    fn reliable(self) -> bool {
        self.transport.is_reliable()
    }
}

/// Startup knobs of a [`SipEndpoint`].
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Our address as written in Via sent-by and Contact for UDP (and for
    /// TCP/TLS when `local_tcp`/`local_tls` are unset).
    pub local: SocketAddr,
    /// Our TCP listen address, for Via and Contact of TCP messages.
    pub local_tcp: Option<SocketAddr>,
    /// Our TLS listen address, for Via and Contact of TLS messages.
    pub local_tls: Option<SocketAddr>,
    /// Capacity of the transaction table.
    pub transactions_max: usize,
    /// Capacity of the call slab (one dialog per call).
    pub dialogs_max: usize,
    /// Pending outputs (transmits and events) before new ones are dropped.
    pub outputs_max: usize,
    /// T1/T2/T4.
    pub timers: TimerConfig,
    /// The shard number carried in our branches and Call-IDs.
    pub shard: u8,
    /// Value of User-Agent (requests) and Server (responses).
    pub user_agent: String,
    /// Session interval (RFC 4028 Session-Expires) we offer in our INVITEs
    /// and grant to peers at most, seconds; 0 switches session timers off
    /// (`sip.session_expires_s`).
    pub session_expires_s: u32,
    /// Smallest session interval we accept (Min-SE); a request asking for
    /// less gets 422 (RFC 4028 §8.1; `sip.min_se_s`).
    pub min_se_s: u32,
}

impl EndpointConfig {
    /// Defaults sized for one shard of a small gateway: 4096 transactions,
    /// 1024 calls, 1024 pending outputs, RFC timer values, UDP, session
    /// timers of 1800 s with a Min-SE of 90 s (the `[sip]` defaults).
    pub fn new(local: SocketAddr, shard: u8) -> Self {
        Self {
            local,
            transactions_max: 4096,
            dialogs_max: 1024,
            outputs_max: 1024,
            timers: TimerConfig::default(),
            shard,
            user_agent: "Kolokol".to_string(),
            local_tcp: None,
            local_tls: None,
            session_expires_s: 1800,
            min_se_s: SESSION_EXPIRES_MIN_S,
        }
    }

    /// Takes the session timer knobs (`session_expires_s`, `min_se_s`) from
    /// the validated `[sip]` section.
    pub fn with_session_timers(mut self, sip: &crate::config::SipConfig) -> Self {
        self.session_expires_s = sip.session_expires_s;
        self.min_se_s = sip.min_se_s;
        self
    }
}

/// Address of a call (one dialog, UAC or UAS side) in the endpoint's slab.
/// Slots are reused once a call has ended, so a handle is valid only until
/// the call's last event ([`Event::Ended`], [`Event::Failed`],
/// [`Event::TimedOut`], [`Event::Cancelled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallHandle(pub u32);

/// What the endpoint tells the transaction user.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new INVITE arrived; answer with [`SipEndpoint::respond`]. A 100
    /// Trying has been sent already.
    IncomingCall {
        /// The new call.
        call: CallHandle,
        /// Where the INVITE came from.
        src: SocketAddr,
        /// The Request-URI.
        request_uri: String,
        /// The user part of a `sip:`/`sips:` Request-URI.
        request_user: Option<String>,
        /// The From value.
        from: String,
        /// The To value.
        to: String,
        /// The Call-ID.
        call_id: String,
        /// The first Contact value.
        contact: Option<String>,
        /// The body, if any (normally an SDP offer).
        sdp: Option<Vec<u8>>,
    },
    /// UAC: 180 Ringing.
    Ringing {
        /// The call.
        call: CallHandle,
        /// Early media SDP, if the 180 carried a body.
        sdp: Option<Vec<u8>>,
    },
    /// UAC: another provisional response above 100 (183 and friends).
    Progress {
        /// The call.
        call: CallHandle,
        /// 101..=199.
        status: u16,
        /// The body, if any.
        sdp: Option<Vec<u8>>,
    },
    /// UAC: 2xx to our INVITE; the endpoint has sent the ACK.
    Answered {
        /// The call.
        call: CallHandle,
        /// The SDP answer, if any.
        sdp: Option<Vec<u8>>,
    },
    /// UAC: 3xx–6xx to our INVITE (the ACK is sent by the transaction).
    /// The handle is dead after this event.
    Failed {
        /// The call.
        call: CallHandle,
        /// The final status.
        status: u16,
        /// Its reason phrase.
        reason: String,
        /// For a 401/407 with challenges: what the TU needs to answer it
        /// with [`SipEndpoint::invite_resend`] (RFC 3261 §22.2).
        challenge: Option<Box<Challenged>>,
    },
    /// UAC: no final response within 64*T1 (Timer B, §17.1.1.2), or a
    /// transport error. The handle is dead after this event.
    TimedOut {
        /// The call.
        call: CallHandle,
    },
    /// UAS: the caller cancelled before our final response; the endpoint
    /// answered the INVITE with 487. The handle is dead after this event.
    Cancelled {
        /// The call.
        call: CallHandle,
    },
    /// UAS: the ACK for our 2xx arrived; the dialog is confirmed.
    Acked {
        /// The call.
        call: CallHandle,
    },
    /// UAS: no ACK for our 2xx within 64*T1 (§13.3.1.4); the endpoint sends
    /// a BYE and [`Event::Ended`] follows.
    AckTimeout {
        /// The call.
        call: CallHandle,
    },
    /// A re-INVITE in a confirmed dialog; answer with
    /// [`SipEndpoint::respond`].
    Reinvite {
        /// The call.
        call: CallHandle,
        /// The new offer, if any.
        sdp: Option<Vec<u8>>,
    },
    /// An UPDATE (RFC 3311) in a dialog; answer with
    /// [`SipEndpoint::respond`].
    Update {
        /// The call.
        call: CallHandle,
        /// The new offer, if any.
        sdp: Option<Vec<u8>>,
    },
    /// The final answer to our UPDATE ([`SipEndpoint::send_update`]);
    /// 408 when none came (Timer F, §17.1.2.2).
    UpdateAnswered {
        /// The call.
        call: CallHandle,
        /// The final status.
        status: u16,
        /// The SDP answer, if any.
        sdp: Option<Vec<u8>>,
    },
    /// The final answer to our re-INVITE ([`SipEndpoint::send_reinvite`]);
    /// the endpoint has sent the ACK for a 2xx. 491 means the peer's offer
    /// crossed ours (glare, RFC 3261 §14.1); 408 that none came.
    ReinviteAnswered {
        /// The call.
        call: CallHandle,
        /// The final status.
        status: u16,
        /// The SDP answer, if any.
        sdp: Option<Vec<u8>>,
    },
    /// The session was not refreshed in time (RFC 4028 §10), or our
    /// refresh got 408/481: the endpoint has sent a BYE with
    /// [`SESSION_EXPIRED_REASON`] and [`Event::Ended`] follows.
    SessionExpired {
        /// The call.
        call: CallHandle,
    },
    /// The dialog ended by a BYE. The handle is dead after this event.
    Ended {
        /// The call.
        call: CallHandle,
        /// True if the peer sent the BYE.
        by_remote: bool,
    },
    /// The outcome of an out-of-dialog OPTIONS
    /// ([`SipEndpoint::send_options`]), reported exactly once per probe:
    /// the final status of the first final response (any class; 1xx are
    /// not reported), or `None` when none came within 64*T1 (Timer F,
    /// §17.1.2.2) or the transport failed.
    OptionsAnswered {
        /// The tag the TU gave [`SipEndpoint::send_options`].
        tag: u64,
        /// The final status; `None` for a timeout.
        status: Option<u16>,
    },
}

/// One thing for the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send a message: a datagram (UDP) or a framed message on the stream
    /// connection (TCP/TLS) to `dst`, opened if there is none.
    Transmit {
        /// Destination.
        dst: SocketAddr,
        /// The transport to send it on.
        transport: Transport,
        /// The message.
        bytes: Vec<u8>,
    },
    /// Tell the transaction user.
    Event(Event),
}

/// A 401/407 challenge to our INVITE and the identity of the refused
/// request, so the TU can send it again with credentials: same Call-ID and
/// From tag, CSeq one higher ([`SipEndpoint::invite_resend`], RFC 3261
/// §22.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenged {
    /// The `WWW-Authenticate` (401) or `Proxy-Authenticate` (407) values,
    /// in order, at most a few.
    pub challenges: Vec<String>,
    /// The Call-ID of the refused INVITE.
    pub call_id: String,
    /// Its From tag.
    pub from_tag: String,
    /// Its CSeq number.
    pub cseq: u32,
}

/// A TU call that could not be carried out (API misuse or overload, never
/// peer input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// No live call with this handle.
    #[error("unknown call handle")]
    UnknownCall,
    /// The call is not in a state that allows this.
    #[error("call state does not allow this: {0}")]
    InvalidState(&'static str),
    /// Every call slot is in use.
    #[error("call table full")]
    CallsFull,
    /// The transaction table is full.
    #[error("transaction table full")]
    TransactionsFull,
    /// A value could not be written into a message.
    #[error("cannot build message: {0}")]
    Build(#[from] BuildError),
    /// A dialog refused the request.
    #[error("dialog: {0}")]
    Dialog(#[from] DialogError),
}

/// What a UAC call is built from ([`SipEndpoint::invite`]).
#[derive(Clone, Copy, Debug)]
pub struct InviteParams<'a> {
    /// Where to send the INVITE (the trunk or outbound proxy; no DNS here).
    /// In-dialog requests of the call go there too.
    pub target: SocketAddr,
    /// The transport toward `target`.
    pub transport: Transport,
    /// The Request-URI (`sip:+4930123456@trunk.example.net`).
    pub request_uri: &'a str,
    /// Our From URI (`sip:alice@gw.example.org`).
    pub from: &'a str,
    /// Display name for From, unquoted (no `"` or `\`).
    pub from_display: Option<&'a str>,
    /// The To URI.
    pub to: &'a str,
    /// A Call-ID to use instead of a generated one.
    pub call_id: Option<&'a str>,
    /// The SDP offer.
    pub sdp: Option<&'a [u8]>,
    /// More headers (P-Asserted-Identity, Privacy, ...).
    pub extra_headers: &'a [(&'a str, &'a str)],
}

/// Counters of what the endpoint refused or lost, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Datagrams that did not parse and were dropped (responses, noise, or
    /// requests whose headers could not be recovered).
    pub parse_dropped: u64,
    /// Malformed requests answered with the parser's status.
    pub parse_answered: u64,
    /// Responses that were refused by §18.1.2 or matched no transaction or
    /// dialog.
    pub responses_unmatched: u64,
    /// ACKs that matched no transaction or dialog.
    pub acks_unmatched: u64,
    /// Requests answered with 503 because the call or transaction table was
    /// full.
    pub rejected_busy: u64,
    /// In-dialog requests for an unknown dialog (481).
    pub no_dialog: u64,
    /// Other requests refused with a 4xx/5xx (483, 420, 405, 501, 500, 491,
    /// 400).
    pub rejected_other: u64,
    /// Datagrams dropped because the output queue was full.
    pub transmits_dropped: u64,
    /// Events dropped because the output queue was full.
    pub events_dropped: u64,
    /// Messages we could not build from peer values (dropped).
    pub build_failed: u64,
}

/// A shard number in a branch we generated (`z9hG4bK-<shard>-<random>`).
pub fn shard_of_branch(branch: &str) -> Option<u8> {
    let rest = branch
        .strip_prefix(BRANCH_MAGIC_COOKIE)?
        .strip_prefix('-')?;
    rest.split_once('-')?.0.parse().ok()
}

/// A shard number in a Call-ID we generated (`<random>-<shard>@host`).
pub fn shard_of_call_id(call_id: &str) -> Option<u8> {
    let local = call_id.split_once('@').map_or(call_id, |(l, _)| l);
    local.rsplit_once('-')?.1.parse().ok()
}

/// Which slot generation of a call a transaction belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    idx: u32,
    generation: u32,
}

/// Why a transaction exists, so its events reach the right logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxPurpose {
    /// Our INVITE (UAC).
    Invite,
    /// Our BYE.
    Bye,
    /// Our UPDATE (RFC 3311).
    Update,
    /// Our CANCEL.
    Cancel,
    /// Our re-INVITE in a confirmed dialog.
    Reinvite,
    /// Our PRACK (RFC 3262); its answer is absorbed.
    Prack,
    /// Our session refresh (an UPDATE without SDP, RFC 4028 §10).
    Refresh,
    /// Our out-of-dialog OPTIONS probe ([`SipEndpoint::send_options`]),
    /// with the TU's tag; it has no call.
    Options {
        /// Reported back in [`Event::OptionsAnswered`].
        tag: u64,
    },
    /// A received request (server transaction) or anything else.
    Other,
}

#[derive(Clone, Copy, Debug)]
struct TxMeta {
    dst: Remote,
    owner: Option<Owner>,
    purpose: TxPurpose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallState {
    /// UAC: INVITE sent, no final response. UAS: INVITE received, no final
    /// response sent.
    Inviting,
    /// UAS: 2xx sent, waiting for the ACK.
    WaitAck,
    /// Dialog confirmed.
    Confirmed,
    /// Our BYE is on its way.
    Terminating,
}

/// A 2xx we retransmit until its ACK (§13.3.1.4).
#[derive(Debug)]
struct OkRetransmit {
    bytes: Vec<u8>,
    cseq: u32,
    next: Option<Instant>,
    interval: Duration,
    give_up: Instant,
}

/// A received request waiting for the TU's answer (re-INVITE, UPDATE).
#[derive(Debug)]
struct PendingServer {
    tx: TxHandle,
    raw: Vec<u8>,
    invite: bool,
}

#[derive(Debug)]
struct Call {
    uac: bool,
    state: CallState,
    call_id: String,
    local_tag: String,
    /// Our From (UAC) / To (UAS) value without the tag.
    local_uri: String,
    /// The peer's address: the INVITE target (UAC) or source (UAS).
    peer: Remote,
    dialog: Option<Dialog>,
    /// The initial INVITE (sent or received), kept to build CANCEL, the
    /// non-2xx ACK and our responses.
    invite_raw: Vec<u8>,
    invite_tx: Option<TxHandle>,
    /// UAC: a provisional response arrived (CANCEL allowed, §9.1).
    provisional: bool,
    /// UAC: the TU asked to cancel.
    cancel_requested: bool,
    cancel_sent: bool,
    /// UAC: the ACK for the 2xx (and the INVITE's CSeq), re-sent for each
    /// retransmitted 2xx.
    ack: Option<(u32, Vec<u8>)>,
    ok: Option<OkRetransmit>,
    pending: Option<PendingServer>,
    /// Our re-INVITE is waiting for its final response (§14.1: one at a
    /// time).
    reinvite_pending: bool,
    /// UAC: the RSeq of the last reliable provisional response we
    /// acknowledged, and that PRACK, re-sent as is when the provisional
    /// response is retransmitted (RFC 3262 §4).
    prack: Option<(u32, Vec<u8>)>,
    /// The negotiated session timer (RFC 4028), once a 2xx set it.
    session: Option<SessionTimer>,
}

/// One dialog's session timer (RFC 4028 §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SessionTimer {
    /// The session interval, seconds.
    interval_s: u32,
    /// True when we are the refresher.
    we_refresh: bool,
    /// The peer supports `timer` (our 2xx then carries `Require: timer`).
    peer_timer: bool,
    /// When we send the next refresh (we are the refresher, none in
    /// flight).
    refresh_at: Option<Instant>,
    /// When the session expires without a refresh: BYE then.
    expire_at: Instant,
}

impl SessionTimer {
    /// A timer (re)started at `now` by a 2xx to a session refresh; None
    /// if the interval (a peer's value) is beyond what `Instant` holds.
    fn start(now: Instant, interval_s: u32, we_refresh: bool, peer_timer: bool) -> Option<Self> {
        let interval = Duration::from_secs(u64::from(interval_s));
        let (refresh_at, expire_at) = if we_refresh {
            // §10: the refresher refreshes at half the interval and gives
            // up when the interval has passed without a 2xx.
            (
                Some(now.checked_add(interval / 2)?),
                now.checked_add(interval)?,
            )
        } else {
            // §10: the other side sends BYE before the expiry, the lesser
            // of 32 s and a third of the interval early.
            let early = Duration::from_secs(u64::from((interval_s / 3).min(32)));
            (None, now.checked_add(interval - early)?)
        };
        Some(SessionTimer {
            interval_s,
            we_refresh,
            peer_timer,
            refresh_at,
            expire_at,
        })
    }

    fn next(&self) -> Instant {
        self.refresh_at
            .map_or(self.expire_at, |r| r.min(self.expire_at))
    }

    /// The `Session-Expires` value for a request or response we send;
    /// `request` says whether we are the UAC of this transaction (the
    /// `refresher` names a transaction role, §4).
    fn header(&self, request: bool) -> String {
        let role = if self.we_refresh == request {
            "uac"
        } else {
            "uas"
        };
        format!("{};refresher={role}", self.interval_s)
    }
}

/// A parsed `Session-Expires` (RFC 4028 §4): delta-seconds and whether
/// `refresher=uac` (Some(true)), `uas` (Some(false)) or absent.
fn session_expires_of(msg: &SipMessage<'_>) -> Result<Option<(u32, Option<bool>)>, ()> {
    let Some(h) = msg.header(HeaderName::SessionExpires) else {
        return Ok(None);
    };
    let v = h.value.trim();
    let mut parts = v.split(';');
    let delta = parts
        .next()
        .map(str::trim)
        .and_then(|d| d.parse::<u32>().ok())
        .ok_or(())?;
    let mut refresher = None;
    for p in parts {
        if let Some((n, val)) = p.split_once('=') {
            if n.trim().eq_ignore_ascii_case("refresher") {
                refresher = match val.trim() {
                    r if r.eq_ignore_ascii_case("uac") => Some(true),
                    r if r.eq_ignore_ascii_case("uas") => Some(false),
                    _ => return Err(()),
                };
            }
        }
    }
    Ok(Some((delta, refresher)))
}

/// The `Min-SE` delta-seconds of a message, if present and numeric.
fn min_se_of(msg: &SipMessage<'_>) -> Option<u32> {
    let h = msg.header(HeaderName::MinSe)?;
    h.value.split(';').next()?.trim().parse().ok()
}

/// Whether the message lists `tag` in Supported or Require.
fn has_option(msg: &SipMessage<'_>, tag: &str) -> bool {
    msg.supported()
        .chain(msg.require())
        .any(|o| o.eq_ignore_ascii_case(tag))
}

/// The sans-IO SIP endpoint of one shard. See the module documentation.
#[derive(Debug)]
pub struct SipEndpoint {
    cfg: EndpointConfig,
    rng: StdRng,
    table: TransactionTable,
    tx_meta: Vec<Option<TxMeta>>,
    calls: Vec<Option<Call>>,
    generations: Vec<u32>,
    free_calls: Vec<u32>,
    /// (Call-ID, our tag) → call slot.
    by_dialog: HashMap<(String, String), u32>,
    /// 2xx retransmit deadlines: (at, call slot, generation), lazily
    /// deleted.
    ok_timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Session timer deadlines (RFC 4028): (at, call slot, generation),
    /// lazily deleted like `ok_timers`.
    session_timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    outputs: VecDeque<Output>,
    counters: EndpointCounters,
    last_now: Option<Instant>,
}

fn sent_by_of(via: &Via<'_>) -> String {
    match via.port {
        Some(p) => format!("{}:{p}", via.host),
        None => via.host.to_string(),
    }
}

fn body_of(msg: &SipMessage<'_>) -> Option<Vec<u8>> {
    (!msg.body().is_empty()).then(|| msg.body().to_vec())
}

fn is_handled(m: &Method<'_>) -> bool {
    matches!(
        m,
        Method::Invite
            | Method::Ack
            | Method::Bye
            | Method::Cancel
            | Method::Options
            | Method::Update
    )
}

/// A name-addr value without its `tag` parameter, for dialog URIs.
fn without_tag(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let (head, params) = match raw.rfind('>') {
        Some(i) => (&raw[..=i], &raw[i + 1..]),
        None => match raw.find(';') {
            Some(i) => (&raw[..i], &raw[i..]),
            None => (raw, ""),
        },
    };
    out.push_str(head);
    for p in params.split(';').filter(|p| !p.trim().is_empty()) {
        let name = p.split('=').next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("tag") {
            out.push(';');
            out.push_str(p.trim());
        }
    }
    out
}

/// The ACK for a non-2xx final response (§17.1.1.3): Request-URI, top Via,
/// From, Call-ID and Route of the INVITE `invite`, To of the response.
fn non_2xx_ack_of(invite: &[u8], resp: &SipMessage<'_>) -> Option<Vec<u8>> {
    let inv = SipMessage::parse(invite).ok()?;
    let mut out = Vec::with_capacity(invite.len().min(1024));
    let w = MessageWriter::request(&mut out, Method::Ack, inv.request_uri()?.as_str()).ok()?;
    let mut w = w.header("Via", inv.top_via().raw).ok()?;
    w = w.header("Max-Forwards", "70").ok()?;
    for r in inv.headers_named(HeaderName::Route) {
        w = w.header("Route", r.value).ok()?;
    }
    w = w.header("From", inv.from().raw).ok()?;
    w = w.header("To", resp.to().raw).ok()?;
    w = w.header("Call-ID", inv.call_id()).ok()?;
    w = w.header("CSeq", &format!("{} ACK", inv.cseq().0)).ok()?;
    w.finish(&[]);
    Some(out)
}

/// Answers a request that did not parse from the lines that can still be
/// read: every Via, From, To, Call-ID and CSeq must be present on one line
/// each, the top Via must parse, and the CSeq must not be an ACK.
fn recover_answer(bytes: &[u8], status: u16, out: &mut Vec<u8>) -> Option<()> {
    let head_end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .into_iter()
        .chain(bytes.windows(4).position(|w| w == b"\r\n\r\n"))
        .min()
        .unwrap_or(bytes.len());
    let head = &bytes[..head_end];
    let mut vias: Vec<&str> = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if line.starts_with([' ', '\t']) || line.contains('\r') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match HeaderName::parse(name.trim()) {
            HeaderName::Via => vias.push(value),
            HeaderName::From => from = from.or(Some(value)),
            HeaderName::To => to = to.or(Some(value)),
            HeaderName::CallId => call_id = call_id.or(Some(value)),
            HeaderName::CSeq => cseq = cseq.or(Some(value)),
            _ => {}
        }
        if vias.len() > super::msg::HEADERS_MAX {
            return None;
        }
    }
    let (from, to, call_id, cseq) = (from?, to?, call_id?, cseq?);
    let top = vias.first()?;
    Via::parse(top.split(',').next()?.trim()).ok()?;
    let mut cs = cseq.split_whitespace();
    cs.next()?.parse::<u32>().ok()?;
    if cs.next()? == "ACK" {
        return None;
    }
    let reason = reason_for(status);
    let mut w = MessageWriter::response(out, status, reason).ok()?;
    for v in vias {
        w = w.header("Via", v).ok()?;
    }
    w = w.header("From", from).ok()?;
    if to.contains("tag=") {
        w = w.header("To", to).ok()?;
    } else {
        w = w.header("To", &format!("{to};tag=malformed")).ok()?;
    }
    w = w.header("Call-ID", call_id).ok()?;
    w = w.header("CSeq", cseq).ok()?;
    w.finish(&[]);
    Some(())
}

/// The usual reason phrase of the statuses the endpoint sends itself.
fn reason_for(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "",
    }
}

impl SipEndpoint {
    /// An endpoint with every table allocated now; `rng_seed` seeds the RNG
    /// for branches, tags and Call-IDs.
    pub fn new(cfg: EndpointConfig, rng_seed: u64) -> Self {
        assert!(
            cfg.dialogs_max <= u32::MAX as usize,
            "dialogs_max fits CallHandle"
        );
        assert!(cfg.outputs_max > 0, "outputs_max is at least 1");
        let mut calls = Vec::with_capacity(cfg.dialogs_max);
        calls.resize_with(cfg.dialogs_max, || None);
        Self {
            rng: StdRng::seed_from_u64(rng_seed),
            table: TransactionTable::new(cfg.transactions_max),
            // Grows with the transaction table (which grows on demand).
            tx_meta: Vec::new(),
            calls,
            generations: vec![0; cfg.dialogs_max],
            free_calls: (0..cfg.dialogs_max as u32).rev().collect(),
            by_dialog: HashMap::with_capacity(cfg.dialogs_max),
            ok_timers: BinaryHeap::with_capacity(2 * cfg.dialogs_max + 1),
            session_timers: BinaryHeap::with_capacity(2 * cfg.dialogs_max + 1),
            outputs: VecDeque::with_capacity(cfg.outputs_max),
            counters: EndpointCounters::default(),
            last_now: None,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.cfg
    }

    /// What was refused or lost so far.
    pub fn counters(&self) -> EndpointCounters {
        self.counters
    }

    /// Number of live calls.
    pub fn calls_len(&self) -> usize {
        self.cfg.dialogs_max - self.free_calls.len()
    }

    /// Number of live transactions.
    pub fn transactions_len(&self) -> usize {
        self.table.len()
    }

    /// Number of outputs waiting to be polled.
    pub fn outputs_len(&self) -> usize {
        self.outputs.len()
    }

    /// The next output; drain until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline: call [`SipEndpoint::handle_timeout`] then.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.drop_stale_ok_timers();
        self.drop_stale_session_timers();
        let ok = self.ok_timers.peek().map(|Reverse((at, _, _))| *at);
        let session = self.session_timers.peek().map(|Reverse((at, _, _))| *at);
        [self.table.poll_timeout(), ok, session]
            .into_iter()
            .flatten()
            .min()
    }

    // -- outputs ----------------------------------------------------------

    fn push_transmit(&mut self, dst: Remote, bytes: Vec<u8>) {
        if self.outputs.len() >= self.cfg.outputs_max {
            self.counters.transmits_dropped += 1;
            return;
        }
        self.outputs.push_back(Output::Transmit {
            dst: dst.addr,
            transport: dst.transport,
            bytes,
        });
    }

    fn push_event(&mut self, ev: Event) {
        if self.outputs.len() >= self.cfg.outputs_max {
            self.counters.events_dropped += 1;
            return;
        }
        self.outputs.push_back(Output::Event(ev));
    }

    // -- identifiers --------------------------------------------------------

    fn random_hex(&mut self) -> String {
        let mut b = [0u8; 8];
        self.rng.fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn new_branch(&mut self) -> String {
        let r = self.random_hex();
        format!("{BRANCH_MAGIC_COOKIE}-{}-{r}", self.cfg.shard)
    }

    fn new_call_id(&mut self) -> String {
        let r = self.random_hex();
        format!("{r}-{}@{}", self.cfg.shard, self.cfg.local.ip())
    }

    /// Our address on `t`: what Via sent-by and Contact carry.
    fn local_on(&self, t: Transport) -> SocketAddr {
        match t {
            Transport::Udp => self.cfg.local,
            Transport::Tcp => self.cfg.local_tcp.unwrap_or(self.cfg.local),
            Transport::Tls => self.cfg.local_tls.unwrap_or(self.cfg.local),
        }
    }

    fn via(&self, t: Transport, branch: &str) -> String {
        let name = match t {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        };
        format!("SIP/2.0/{name} {};branch={branch};rport", self.local_on(t))
    }

    /// Our Contact on `t` (RFC 3261 §19.1.1: `transport=` for the
    /// connection-oriented ones, so in-dialog requests come back on them).
    fn contact(&self, t: Transport) -> String {
        match t {
            Transport::Udp => format!("<sip:{}>", self.local_on(t)),
            Transport::Tcp => format!("<sip:{};transport=tcp>", self.local_on(t)),
            Transport::Tls => format!("<sip:{};transport=tls>", self.local_on(t)),
        }
    }

    // -- call slab ----------------------------------------------------------

    fn alloc_call(&mut self, call: Call) -> Option<Owner> {
        let idx = self.free_calls.pop()?;
        let i = idx as usize;
        debug_assert!(self.calls[i].is_none(), "free call slot is empty");
        self.generations[i] = self.generations[i].wrapping_add(1);
        self.by_dialog
            .insert((call.call_id.clone(), call.local_tag.clone()), idx);
        self.calls[i] = Some(call);
        Some(Owner {
            idx,
            generation: self.generations[i],
        })
    }

    fn free_call(&mut self, idx: u32) {
        if let Some(call) = self.calls[idx as usize].take() {
            self.by_dialog.remove(&(call.call_id, call.local_tag));
            self.free_calls.push(idx);
        }
    }

    fn owner_of(&self, call: CallHandle) -> Option<Owner> {
        let i = call.0 as usize;
        self.calls.get(i)?.as_ref()?;
        Some(Owner {
            idx: call.0,
            generation: self.generations[i],
        })
    }

    fn call_of(&mut self, o: Owner) -> Option<&mut Call> {
        if self.generations.get(o.idx as usize) != Some(&o.generation) {
            return None;
        }
        self.calls[o.idx as usize].as_mut()
    }

    fn call_by_tag(&self, call_id: &str, local_tag: &str) -> Option<u32> {
        // The index is keyed by owned strings; a lookup allocates once.
        self.by_dialog
            .get(&(call_id.to_string(), local_tag.to_string()))
            .copied()
    }

    // -- transactions -------------------------------------------------------

    fn insert_tx(
        &mut self,
        key: TransactionKey,
        tx: Transaction,
        meta: TxMeta,
    ) -> Result<TxHandle, TableError> {
        let h = self.table.insert(key, tx)?;
        let i = h.0 as usize;
        if self.tx_meta.len() <= i {
            self.tx_meta.resize(i + 1, None);
        }
        self.tx_meta[i] = Some(meta);
        Ok(h)
    }

    /// Handles a transaction's events (with the response that caused them,
    /// if any), sends its datagrams and removes it once terminated.
    fn drain_tx(&mut self, now: Instant, h: TxHandle, resp: Option<&SipMessage<'_>>) {
        let Some(meta) = self.tx_meta.get(h.0 as usize).copied().flatten() else {
            return;
        };
        for _ in 0..TX_EVENTS_BOUND {
            let Some(ev) = self.table.update(h, |t| t.poll_event()).flatten() else {
                break;
            };
            self.on_tx_event(now, h, meta, ev, resp);
        }
        for _ in 0..TX_TRANSMITS_BOUND {
            let Some(bytes) = self
                .table
                .update(h, |t| t.poll_transmit().map(<[u8]>::to_vec))
                .flatten()
            else {
                break;
            };
            self.push_transmit(meta.dst, bytes);
        }
        if self.table.get(h).is_some_and(Transaction::is_terminated) {
            self.table.remove(h);
            if let Some(m) = self.tx_meta.get_mut(h.0 as usize) {
                *m = None;
            }
            if let Some(call) = meta.owner.and_then(|o| self.call_of(o)) {
                if call.invite_tx == Some(h) {
                    call.invite_tx = None;
                }
                if call.pending.as_ref().is_some_and(|p| p.tx == h) {
                    call.pending = None;
                }
            }
        }
    }

    fn on_tx_event(
        &mut self,
        now: Instant,
        h: TxHandle,
        meta: TxMeta,
        ev: TxEvent,
        resp: Option<&SipMessage<'_>>,
    ) {
        if let TxPurpose::Options { tag } = meta.purpose {
            // A non-INVITE client transaction passes up one final response
            // (Completed absorbs retransmissions) or one timeout, never
            // both, so the probe is reported once. 1xx are not reported.
            let status = match ev {
                TxEvent::Final(status) => Some(status),
                TxEvent::Timeout | TxEvent::TransportError => None,
                _ => return,
            };
            self.push_event(Event::OptionsAnswered { tag, status });
            return;
        }
        let Some(owner) = meta.owner else { return };
        if self.call_of(owner).is_none() {
            return;
        }
        match meta.purpose {
            TxPurpose::Invite => self.on_invite_event(now, h, owner, ev, resp),
            TxPurpose::Bye => {
                if matches!(
                    ev,
                    TxEvent::Final(_) | TxEvent::Timeout | TxEvent::TransportError
                ) {
                    self.push_event(Event::Ended {
                        call: CallHandle(owner.idx),
                        by_remote: false,
                    });
                    self.free_call(owner.idx);
                }
            }
            TxPurpose::Update => {
                let (status, sdp) = match (ev, resp) {
                    (TxEvent::Final(status), Some(msg)) => {
                        if (200..300).contains(&status) {
                            self.uac_session(now, owner, msg);
                        }
                        (status, body_of(msg))
                    }
                    (TxEvent::Timeout | TxEvent::TransportError, _) => (408, None),
                    _ => return,
                };
                self.push_event(Event::UpdateAnswered {
                    call: CallHandle(owner.idx),
                    status,
                    sdp,
                });
            }
            TxPurpose::Reinvite => self.on_reinvite_event(now, h, owner, ev, resp),
            TxPurpose::Refresh => match (ev, resp) {
                (TxEvent::Final(200..=299), Some(msg)) => self.uac_session(now, owner, msg),
                // The peer cannot take an UPDATE (RFC 4028 §7.4 would need a
                // re-INVITE with the session's SDP, which only the TU has):
                // keep the call and stop timing it rather than cut it at the
                // expiry; the maximum call duration still bounds it.
                (TxEvent::Final(405 | 501), _) => self.set_session(owner, None),
                // §10: a refresh that times out or gets 408/481 ends the
                // session; other refusals leave the expiry to decide.
                (TxEvent::Final(408 | 481) | TxEvent::Timeout | TxEvent::TransportError, _) => {
                    let live = self.call_of(owner).is_some_and(|c| c.session.is_some());
                    if live {
                        self.expire_session(now, owner);
                    }
                }
                _ => {}
            },
            TxPurpose::Prack | TxPurpose::Cancel | TxPurpose::Options { .. } | TxPurpose::Other => {
            }
        }
    }

    fn on_invite_event(
        &mut self,
        now: Instant,
        h: TxHandle,
        owner: Owner,
        ev: TxEvent,
        resp: Option<&SipMessage<'_>>,
    ) {
        let call = CallHandle(owner.idx);
        match (ev, resp) {
            (TxEvent::Provisional(status), Some(msg)) => {
                let Some(c) = self.call_of(owner) else { return };
                if c.state != CallState::Inviting {
                    return;
                }
                // Any provisional, 100 Trying included, allows a CANCEL
                // (RFC 3261 §9.1); only 101-199 can start an early dialog.
                c.provisional = true;
                if status > 100 {
                    Self::early_uac_dialog(c, msg, status);
                }
                if c.cancel_requested && !c.cancel_sent && c.provisional {
                    self.send_cancel(now, owner);
                }
                if status > 100 && !self.prack_reliable(now, owner, msg) {
                    // A retransmitted reliable provisional: PRACKed again,
                    // not reported twice.
                    return;
                }
                let sdp = body_of(msg);
                match status {
                    100 => {}
                    180 => self.push_event(Event::Ringing { call, sdp }),
                    _ => self.push_event(Event::Progress { call, status, sdp }),
                }
            }
            (TxEvent::Final(status @ 200..=299), Some(msg)) => {
                self.on_invite_2xx(now, owner, status, msg);
            }
            (TxEvent::Final(status), Some(msg)) => {
                // 3xx–6xx: the ACK goes through the transaction (§17.1.1.3).
                let ack = self.non_2xx_ack(owner, msg);
                if let Some(ack) = ack {
                    self.table.update(h, |t| {
                        if let Transaction::Client(c) = t {
                            let _ = c.set_ack(now, ack);
                        }
                    });
                }
                let Some(c) = self.call_of(owner) else { return };
                if c.state == CallState::Inviting {
                    let reason = msg.reason().unwrap_or("").to_string();
                    let challenge = Self::challenge_of(c, status, msg);
                    self.push_event(Event::Failed {
                        call,
                        status,
                        reason,
                        challenge,
                    });
                    self.free_call(owner.idx);
                }
            }
            (TxEvent::Timeout | TxEvent::TransportError, _) => {
                let Some(c) = self.call_of(owner) else { return };
                if c.state == CallState::Inviting {
                    self.push_event(Event::TimedOut { call });
                    self.free_call(owner.idx);
                }
            }
            _ => {}
        }
    }

    /// Our re-INVITE's transaction: ACK a 2xx from the dialog (re-sent for
    /// each retransmission), hand the non-2xx ACK to the transaction, and
    /// report the outcome once.
    fn on_reinvite_event(
        &mut self,
        now: Instant,
        h: TxHandle,
        owner: Owner,
        ev: TxEvent,
        resp: Option<&SipMessage<'_>>,
    ) {
        let call = CallHandle(owner.idx);
        match (ev, resp) {
            (TxEvent::Final(status @ 200..=299), Some(msg)) => {
                let cseq = msg.cseq().0;
                let Some(c) = self.call_of(owner) else { return };
                let peer = c.peer;
                if let Some((_, ack)) = c.ack.clone().filter(|a| a.0 == cseq) {
                    // A retransmitted 2xx: re-send the ACK (§13.2.2.4).
                    self.push_transmit(peer, ack);
                    return;
                }
                if let (Some(d), Some(contact)) = (c.dialog.as_mut(), msg.contact().next()) {
                    let _ = d.update_remote_target(contact.raw);
                }
                let fields = c
                    .dialog
                    .as_mut()
                    .map(|d| d.next_request_fields("ACK"))
                    .and_then(Result::ok);
                c.reinvite_pending = false;
                if let Some(fields) = fields {
                    let branch = self.new_branch();
                    match self.build_in_dialog(
                        peer.transport,
                        &fields,
                        Method::Ack,
                        &branch,
                        &[],
                        None,
                    ) {
                        Ok(ack) => {
                            self.push_transmit(peer, ack.clone());
                            if let Some(c) = self.call_of(owner) {
                                c.ack = Some((fields.cseq, ack));
                            }
                        }
                        Err(_) => self.counters.build_failed += 1,
                    }
                }
                self.uac_session(now, owner, msg);
                self.push_event(Event::ReinviteAnswered {
                    call,
                    status,
                    sdp: body_of(msg),
                });
            }
            (TxEvent::Final(status), Some(msg)) => {
                // 3xx–6xx: the ACK goes through the transaction (§17.1.1.3),
                // built from the re-INVITE it acknowledges.
                let request = self
                    .table
                    .get(h)
                    .and_then(|t| match t {
                        Transaction::Client(c) => Some(c.request().to_vec()),
                        Transaction::Server(_) => None,
                    })
                    .unwrap_or_default();
                if let Some(ack) = non_2xx_ack_of(&request, msg) {
                    self.table.update(h, |t| {
                        if let Transaction::Client(c) = t {
                            let _ = c.set_ack(now, ack);
                        }
                    });
                }
                let Some(c) = self.call_of(owner) else { return };
                c.reinvite_pending = false;
                self.push_event(Event::ReinviteAnswered {
                    call,
                    status,
                    sdp: None,
                });
            }
            (TxEvent::Timeout | TxEvent::TransportError, _) => {
                let Some(c) = self.call_of(owner) else { return };
                if c.reinvite_pending {
                    c.reinvite_pending = false;
                    self.push_event(Event::ReinviteAnswered {
                        call,
                        status: 408,
                        sdp: None,
                    });
                }
            }
            _ => {}
        }
    }

    /// RFC 4028 §7.2/§7.4: the 2xx to our INVITE, re-INVITE or UPDATE sets
    /// the session timer from its `Session-Expires`, or switches it off
    /// when there is none.
    fn uac_session(&mut self, now: Instant, owner: Owner, msg: &SipMessage<'_>) {
        let st = match session_expires_of(msg) {
            Ok(Some((delta, refresher))) => SessionTimer::start(
                now,
                delta.max(SESSION_EXPIRES_MIN_S),
                // In a response `uac` names us; absent, we refresh (§7.2).
                refresher.unwrap_or(true),
                true,
            ),
            _ => None,
        };
        self.set_session(owner, st);
    }

    /// The challenges of a 401/407 to the call's INVITE (RFC 3261 §22.2),
    /// None for other statuses or a 401/407 without any.
    fn challenge_of(c: &Call, status: u16, msg: &SipMessage<'_>) -> Option<Box<Challenged>> {
        let name = match status {
            401 => HeaderName::WwwAuthenticate,
            407 => HeaderName::ProxyAuthenticate,
            _ => return None,
        };
        let challenges: Vec<String> = msg
            .headers_named(name)
            .take(CHALLENGES_MAX)
            .map(|h| h.unfolded().into_owned())
            .collect();
        if challenges.is_empty() {
            return None;
        }
        // Our own INVITE's CSeq: a response is matched by branch and
        // method only, so its CSeq number is not to be trusted.
        let cseq = SipMessage::parse(&c.invite_raw).ok()?.cseq().0;
        Some(Box::new(Challenged {
            challenges,
            call_id: c.call_id.clone(),
            from_tag: c.local_tag.clone(),
            cseq,
        }))
    }

    /// RFC 3262 §4: answers a reliable provisional response (`Require:
    /// 100rel` and `RSeq`) with a PRACK in the early dialog. Returns false
    /// when the response repeats an RSeq already acknowledged (the same
    /// PRACK is re-sent) or is out of order (ignored), so the TU does not
    /// hear of it again; true otherwise, also for unreliable responses.
    fn prack_reliable(&mut self, now: Instant, owner: Owner, msg: &SipMessage<'_>) -> bool {
        if !msg.require().any(|o| o.eq_ignore_ascii_case("100rel")) {
            return true;
        }
        let Some(rseq) = msg
            .header(HeaderName::RSeq)
            .and_then(|h| h.value.trim().parse::<u32>().ok())
        else {
            return true;
        };
        let full = self.table.len() >= self.table.capacity();
        let Some(c) = self.call_of(owner) else {
            return false;
        };
        let peer = c.peer;
        match &c.prack {
            Some((last, bytes)) if *last == rseq => {
                let bytes = bytes.clone();
                self.push_transmit(peer, bytes);
                return false;
            }
            // §4: only the next RSeq in order is acknowledged.
            Some((last, _)) if Some(rseq) != last.checked_add(1) => return false,
            _ => {}
        }
        let same_dialog = c
            .dialog
            .as_ref()
            .is_some_and(|d| Some(d.id().remote_tag.as_str()) == msg.to().tag());
        if !same_dialog || full {
            // No early dialog to PRACK in (no To-tag or Contact, or another
            // fork), or no room: report it and let the UAS retransmit.
            return true;
        }
        let invite_cseq = msg.cseq().0;
        let Some(fields) = c
            .dialog
            .as_mut()
            .and_then(|d| d.next_request_fields("PRACK").ok())
        else {
            return true;
        };
        let rack = format!("{rseq} {invite_cseq} INVITE");
        let branch = self.new_branch();
        let Ok(bytes) = self.build_in_dialog(
            peer.transport,
            &fields,
            Method::Prack,
            &branch,
            &[("RAck", &rack)],
            None,
        ) else {
            self.counters.build_failed += 1;
            return true;
        };
        let Ok(key) = TransactionKey::client(&branch, "PRACK") else {
            return true;
        };
        let tx = ClientTransaction::new(
            now,
            TxKind::NonInvite,
            bytes.clone(),
            peer.reliable(),
            self.cfg.timers,
        );
        let meta = TxMeta {
            dst: peer,
            owner: Some(owner),
            purpose: TxPurpose::Prack,
        };
        if let Ok(h) = self.insert_tx(key, Transaction::Client(tx), meta) {
            self.drain_tx(now, h, None);
            if let Some(c) = self.call_of(owner) {
                c.prack = Some((rseq, bytes));
            }
        }
        true
    }

    /// §12.1.2: a provisional response with a To-tag and Contact creates an
    /// early dialog (the first one wins; forking is not handled).
    fn early_uac_dialog(c: &mut Call, msg: &SipMessage<'_>, status: u16) {
        if c.dialog.is_some() {
            return;
        }
        let (Some(tag), Some(contact)) = (msg.to().tag(), msg.contact().next()) else {
            return;
        };
        let rr: Vec<&str> = msg.record_route().map(|r| r.raw).collect();
        let remote_uri = without_tag(msg.to().raw);
        c.dialog = Dialog::new_uac(&UacDialogParams {
            status,
            call_id: &c.call_id,
            local_tag: &c.local_tag,
            remote_tag: tag,
            local_uri: &c.local_uri,
            remote_uri: &remote_uri,
            invite_cseq: msg.cseq().0,
            contact: contact.raw,
            record_route: &rr,
        })
        .ok();
    }

    fn on_invite_2xx(&mut self, now: Instant, owner: Owner, status: u16, msg: &SipMessage<'_>) {
        let call = CallHandle(owner.idx);
        let dst = {
            let Some(c) = self.call_of(owner) else { return };
            if let Some((_, ack)) = c.ack.clone() {
                // A retransmitted 2xx: re-send the ACK (§13.2.2.4).
                let peer = c.peer;
                self.push_transmit(peer, ack);
                return;
            }
            c.peer
        };
        let Some(c) = self.call_of(owner) else { return };
        let contact = msg.contact().next().map(|n| n.raw).unwrap_or("");
        let rr: Vec<&str> = msg.record_route().map(|r| r.raw).collect();
        let ok = match c.dialog.as_mut() {
            Some(d) if Some(d.id().remote_tag.as_str()) == msg.to().tag() => {
                d.confirm(contact, &rr).is_ok()
            }
            _ => {
                let remote_uri = without_tag(msg.to().raw);
                match Dialog::new_uac(&UacDialogParams {
                    status,
                    call_id: &c.call_id,
                    local_tag: &c.local_tag,
                    remote_tag: msg.to().tag().unwrap_or(""),
                    local_uri: &c.local_uri,
                    remote_uri: &remote_uri,
                    invite_cseq: msg.cseq().0,
                    contact,
                    record_route: &rr,
                }) {
                    Ok(d) => {
                        c.dialog = Some(d);
                        true
                    }
                    Err(_) => false,
                }
            }
        };
        if !ok {
            // A 2xx without Contact cannot be acknowledged in a dialog; the
            // call fails (the peer will time out waiting for the ACK).
            self.counters.build_failed += 1;
            self.push_event(Event::Failed {
                call,
                status: 502,
                reason: "Bad 2xx (no Contact)".to_string(),
                challenge: None,
            });
            self.free_call(owner.idx);
            return;
        }
        let cancelled = c.cancel_requested;
        c.state = CallState::Confirmed;
        let fields = c
            .dialog
            .as_mut()
            .map(|d| d.next_request_fields("ACK"))
            .and_then(Result::ok);
        let Some(fields) = fields else { return };
        let branch = self.new_branch();
        match self.build_in_dialog(dst.transport, &fields, Method::Ack, &branch, &[], None) {
            Ok(ack) => {
                self.push_transmit(dst, ack.clone());
                if let Some(c) = self.call_of(owner) {
                    c.ack = Some((fields.cseq, ack));
                }
            }
            Err(_) => self.counters.build_failed += 1,
        }
        if cancelled {
            // The 2xx crossed our CANCEL: acknowledge and hang up (§9.1).
            let _ = self.send_bye(now, call);
        } else {
            self.uac_session(now, owner, msg);
            self.push_event(Event::Answered {
                call,
                sdp: body_of(msg),
            });
        }
    }

    /// The ACK for a non-2xx final response to the call's INVITE.
    fn non_2xx_ack(&mut self, owner: Owner, resp: &SipMessage<'_>) -> Option<Vec<u8>> {
        let c = self.call_of(owner)?;
        non_2xx_ack_of(&c.invite_raw, resp)
    }

    /// Builds an in-dialog request from [`Dialog::next_request_fields`].
    fn build_in_dialog(
        &self,
        t: Transport,
        f: &RequestFields,
        method: Method<'_>,
        branch: &str,
        extra_headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<Vec<u8>, BuildError> {
        let mut out = Vec::with_capacity(512);
        let mut w = MessageWriter::request(&mut out, method, &f.request_uri)?;
        w = w.header("Via", &self.via(t, branch))?;
        w = w.header("Max-Forwards", &MAX_FORWARDS.to_string())?;
        for r in &f.route {
            w = w.header("Route", r)?;
        }
        w = w.header("From", &f.from)?;
        w = w.header("To", &f.to)?;
        w = w.header("Call-ID", &f.call_id)?;
        w = w.header("CSeq", &format!("{} {}", f.cseq, method.as_str()))?;
        if method != Method::Ack {
            w = w.header("User-Agent", &self.cfg.user_agent)?;
        }
        if matches!(method, Method::Invite | Method::Update) {
            w = w.header("Contact", &self.contact(t))?;
        }
        for (n, v) in extra_headers {
            w = w.header(n, v)?;
        }
        let body = match body {
            Some((ct, b)) => {
                w = w.header("Content-Type", ct)?;
                b
            }
            None => &[],
        };
        w.finish(body);
        Ok(out)
    }

    fn send_cancel(&mut self, now: Instant, owner: Owner) {
        let Some(c) = self.call_of(owner) else { return };
        c.cancel_sent = true;
        let (peer, invite_tx) = (c.peer, c.invite_tx);
        let Ok(inv) = SipMessage::parse(&c.invite_raw) else {
            return;
        };
        // §9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via
        // (so the same branch) as the INVITE; Route copied.
        let mut out = Vec::with_capacity(c.invite_raw.len().min(1024));
        let built = (|| -> Result<(), BuildError> {
            let uri = inv.request_uri().map(|u| u.as_str()).unwrap_or("");
            let mut w = MessageWriter::request(&mut out, Method::Cancel, uri)?;
            w = w.header("Via", inv.top_via().raw)?;
            w = w.header("Max-Forwards", &MAX_FORWARDS.to_string())?;
            for r in inv.headers_named(HeaderName::Route) {
                w = w.header("Route", r.value)?;
            }
            w = w.header("From", inv.from().raw)?;
            w = w.header("To", inv.to().raw)?;
            w = w.header("Call-ID", inv.call_id())?;
            w = w.header("CSeq", &format!("{} CANCEL", inv.cseq().0))?;
            w.finish(&[]);
            Ok(())
        })();
        let branch = inv.top_via().branch.unwrap_or("");
        let key = TransactionKey::client(branch, "CANCEL");
        drop(inv);
        if built.is_err() {
            self.counters.build_failed += 1;
            return;
        }
        let Ok(key) = key else { return };
        let tx = ClientTransaction::new(
            now,
            TxKind::NonInvite,
            out,
            peer.reliable(),
            self.cfg.timers,
        );
        let meta = TxMeta {
            dst: peer,
            owner: Some(owner),
            purpose: TxPurpose::Cancel,
        };
        if let Ok(h) = self.insert_tx(key, Transaction::Client(tx), meta) {
            self.drain_tx(now, h, None);
        }
        if let Some(ih) = invite_tx {
            self.table.update(ih, |t| {
                if let Transaction::Client(c) = t {
                    c.handle_cancel_sent(now);
                }
            });
        }
    }

    // -- input --------------------------------------------------------------

    /// One UDP datagram from `src`.
    pub fn handle_datagram(&mut self, now: Instant, src: SocketAddr, bytes: &[u8]) {
        self.handle_message(now, Remote::udp(src), bytes);
    }

    /// One message from `src`: a UDP datagram, or a message the shell
    /// framed off a TCP/TLS connection ([`crate::sip::stream`]). Answers go
    /// back on the same transport to the same address (for a stream: the
    /// same connection, RFC 3261 §18.2.2).
    pub fn handle_message(&mut self, now: Instant, src: Remote, bytes: &[u8]) {
        self.last_now = Some(now);
        let msg = match SipMessage::parse(bytes) {
            Ok(m) => m,
            Err(e) => return self.on_parse_error(src, bytes, e),
        };
        if msg.is_request() {
            self.on_request(now, src, &msg);
        } else {
            self.on_response(now, &msg);
        }
    }

    fn on_parse_error(&mut self, src: Remote, bytes: &[u8], e: SipParseError) {
        let Some(status) = e.status() else {
            self.counters.parse_dropped += 1;
            return;
        };
        let mut out = Vec::new();
        if recover_answer(bytes, status, &mut out).is_some() {
            self.counters.parse_answered += 1;
            self.push_transmit(src, out);
        } else {
            self.counters.parse_dropped += 1;
        }
    }

    fn on_response(&mut self, now: Instant, msg: &SipMessage<'_>) {
        if should_discard_response(msg) {
            self.counters.responses_unmatched += 1;
            return;
        }
        let (_, method) = msg.cseq();
        let status = msg.status_code().unwrap_or(0);
        let h = msg
            .top_via()
            .branch
            .and_then(|b| TransactionKey::client(b, method.as_str()).ok())
            .and_then(|k| self.table.find(&k));
        if let Some(h) = h {
            let fed = self
                .table
                .update(h, |t| match t {
                    Transaction::Client(c) => {
                        c.handle_response(now, status);
                        true
                    }
                    Transaction::Server(_) => false,
                })
                .unwrap_or(false);
            if fed {
                self.drain_tx(now, h, Some(msg));
                return;
            }
        }
        // A 2xx to an INVITE whose transaction is gone: the dialog re-sends
        // its ACK (§13.2.2.4).
        if method == Method::Invite && (200..300).contains(&status) {
            let idx = msg
                .from()
                .tag()
                .and_then(|t| self.call_by_tag(msg.call_id(), t));
            if let Some(c) = idx.and_then(|i| self.calls[i as usize].as_ref()) {
                if let Some((_, ack)) = c.ack.clone().filter(|a| a.0 == msg.cseq().0) {
                    let peer = c.peer;
                    self.push_transmit(peer, ack);
                    return;
                }
            }
        }
        self.counters.responses_unmatched += 1;
    }

    /// Answers `req` statelessly with `status` (and extra headers).
    fn reply_stateless(
        &mut self,
        src: Remote,
        req: &SipMessage<'_>,
        status: u16,
        headers: &[(&str, &str)],
    ) {
        if req.method() == Some(Method::Ack) {
            return;
        }
        match self.response_bytes(req, status, reason_for(status), None, headers, None) {
            Ok(b) => self.push_transmit(src, b),
            Err(_) => self.counters.build_failed += 1,
        }
    }

    fn response_bytes(
        &self,
        req: &SipMessage<'_>,
        status: u16,
        reason: &str,
        to_tag: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<Vec<u8>, BuildError> {
        let mut out = Vec::with_capacity(512);
        // Every final response needs a To-tag (§8.2.6.2); a tag that is not
        // a dialog's is fine for a stateless answer.
        let tag = match to_tag {
            Some(t) => Some(t),
            None if status > 100 => Some("nodlg"),
            None => None,
        };
        let mut w = start_response_to(req, status, reason, tag, &mut out)?;
        w = w.header("Server", &self.cfg.user_agent)?;
        for (n, v) in headers {
            w = w.header(n, v)?;
        }
        let body = match body {
            Some((ct, b)) => {
                w = w.header("Content-Type", ct)?;
                b
            }
            None => &[],
        };
        w.finish(body);
        Ok(out)
    }

    /// Answers `req` through a new server transaction, so its
    /// retransmissions are answered the same way; statelessly if the table
    /// is full.
    fn reply_with_tx(
        &mut self,
        now: Instant,
        src: Remote,
        req: &SipMessage<'_>,
        key: Option<TransactionKey>,
        status: u16,
        headers: &[(&str, &str)],
    ) {
        let kind = if req.method() == Some(Method::Invite) {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        let bytes = match self.response_bytes(req, status, reason_for(status), None, headers, None)
        {
            Ok(b) => b,
            Err(_) => {
                self.counters.build_failed += 1;
                return;
            }
        };
        if let Some(key) = key {
            let mut tx = ServerTransaction::new(now, kind, src.reliable(), self.cfg.timers);
            if tx.send_response(now, status, &bytes).is_ok() {
                let meta = TxMeta {
                    dst: src,
                    owner: None,
                    purpose: TxPurpose::Other,
                };
                if let Ok(h) = self.insert_tx(key, Transaction::Server(tx), meta) {
                    self.drain_tx(now, h, None);
                    return;
                }
            }
        }
        self.push_transmit(src, bytes);
    }

    fn on_request(&mut self, now: Instant, src: Remote, msg: &SipMessage<'_>) {
        let Some(method) = msg.method() else { return };
        let via = msg.top_via();
        let key = via
            .branch
            .and_then(|b| TransactionKey::server(b, &sent_by_of(via), method.as_str()).ok());
        if method == Method::Ack {
            return self.on_ack(now, msg, key.as_ref());
        }
        // A retransmission hits its server transaction (§17.2.3).
        if let Some(h) = key.as_ref().and_then(|k| self.table.find(k)) {
            let resent = self
                .table
                .update(h, |t| match t {
                    Transaction::Server(s) => s.handle_request_retransmit(now),
                    Transaction::Client(_) => true,
                })
                .unwrap_or(true);
            self.drain_tx(now, h, None);
            if !resent {
                // An INVITE in Accepted: the 2xx is ours to re-send.
                let owner = self
                    .tx_meta
                    .get(h.0 as usize)
                    .copied()
                    .flatten()
                    .and_then(|m| m.owner);
                let ok = owner
                    .and_then(|o| self.call_of(o))
                    .and_then(|c| c.ok.as_ref().map(|ok| ok.bytes.clone()));
                if let Some(ok) = ok {
                    self.push_transmit(src, ok);
                }
            }
            return;
        }
        if method == Method::Cancel {
            return self.on_cancel(now, src, msg, key);
        }
        if !is_handled(&method) {
            let status = if matches!(method, Method::Extension(_)) {
                501
            } else {
                405
            };
            self.counters.rejected_other += 1;
            return self.reply_with_tx(now, src, msg, key, status, &[("Allow", ALLOW)]);
        }
        if msg.max_forwards() == Some(0) {
            self.counters.rejected_other += 1;
            return self.reply_with_tx(now, src, msg, key, 483, &[]);
        }
        let unsupported: Vec<&str> = msg
            .require()
            .filter(|o| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(o)))
            .collect();
        if !unsupported.is_empty() {
            self.counters.rejected_other += 1;
            let list = unsupported.join(", ");
            return self.reply_with_tx(now, src, msg, key, 420, &[("Unsupported", &list)]);
        }
        if let Some(tag) = msg.to().tag() {
            return self.on_in_dialog(now, src, msg, key, tag);
        }
        match method {
            Method::Invite => self.on_new_invite(now, src, msg, key),
            Method::Options => {
                let supported = SUPPORTED.join(", ");
                let headers = [
                    ("Allow", ALLOW),
                    ("Accept", ACCEPT),
                    ("Supported", supported.as_str()),
                ];
                self.reply_with_tx(now, src, msg, key, 200, &headers);
            }
            _ => {
                // BYE/UPDATE outside a dialog (§12.2.2: no To-tag).
                self.counters.no_dialog += 1;
                self.reply_with_tx(now, src, msg, key, 481, &[]);
            }
        }
    }

    fn on_ack(&mut self, now: Instant, msg: &SipMessage<'_>, key: Option<&TransactionKey>) {
        // ACK for a non-2xx carries the INVITE's branch (§17.2.3).
        if let Some(h) = key.and_then(|k| self.table.find(k)) {
            let absorbed = self
                .table
                .update(h, |t| match t {
                    Transaction::Server(s) => s.handle_ack(now),
                    Transaction::Client(_) => false,
                })
                .unwrap_or(false);
            self.drain_tx(now, h, None);
            if absorbed {
                return;
            }
        }
        // ACK for a 2xx: to the dialog (§13.3.1.4).
        let idx = msg
            .to()
            .tag()
            .and_then(|t| self.call_by_tag(msg.call_id(), t));
        let cseq = msg.cseq().0;
        if let Some(idx) = idx {
            let generation = self.generations[idx as usize];
            let owner = Owner { idx, generation };
            let Some(c) = self.call_of(owner) else { return };
            if c.ok.as_ref().is_some_and(|ok| ok.cseq == cseq) {
                c.ok = None;
                let first = c.state == CallState::WaitAck;
                if first {
                    c.state = CallState::Confirmed;
                }
                if let Some(d) = c.dialog.as_mut() {
                    let _ = d.handle_remote_request("ACK", cseq);
                }
                if first {
                    self.push_event(Event::Acked {
                        call: CallHandle(idx),
                    });
                }
                return;
            }
            if c.dialog.is_some() {
                // A retransmitted ACK after the first: absorbed.
                return;
            }
        }
        self.counters.acks_unmatched += 1;
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        src: Remote,
        msg: &SipMessage<'_>,
        key: Option<TransactionKey>,
    ) {
        let invite = key
            .as_ref()
            .and_then(TransactionKey::cancelled_invite)
            .and_then(|k| self.table.find(&k));
        let Some(ih) = invite else {
            self.counters.no_dialog += 1;
            return self.reply_with_tx(now, src, msg, key, 481, &[]);
        };
        // 200 to the CANCEL (§9.2), then 487 to the INVITE if it has no
        // final response yet.
        self.reply_with_tx(now, src, msg, key, 200, &[]);
        let owner = self
            .tx_meta
            .get(ih.0 as usize)
            .copied()
            .flatten()
            .and_then(|m| m.owner);
        let Some(owner) = owner else { return };
        let pending = self
            .call_of(owner)
            .is_some_and(|c| !c.uac && c.state == CallState::Inviting && c.invite_tx == Some(ih));
        if pending {
            let call = CallHandle(owner.idx);
            if self
                .respond(now, call, 487, "Request Terminated", None)
                .is_ok()
            {
                self.push_event(Event::Cancelled { call });
            }
        }
    }

    fn on_new_invite(
        &mut self,
        now: Instant,
        src: Remote,
        msg: &SipMessage<'_>,
        key: Option<TransactionKey>,
    ) {
        let Some(key) = key else {
            // An RFC 2543 branch cannot be matched; refuse it.
            self.counters.rejected_other += 1;
            return self.reply_stateless(src, msg, 400, &[]);
        };
        let Some(contact) = msg.contact().next() else {
            self.counters.rejected_other += 1;
            return self.reply_with_tx(now, src, msg, Some(key), 400, &[]);
        };
        if let Some(status) = self.session_refusal(msg) {
            // RFC 4028 §8.1: too short a session interval gets 422.
            self.counters.rejected_other += 1;
            let min_se = self.cfg.min_se_s.to_string();
            return self.reply_with_tx(now, src, msg, Some(key), status, &[("Min-SE", &min_se)]);
        }
        let retry = RETRY_AFTER_S.to_string();
        // One slot stays free for the transaction that carries the 503's
        // retransmissions; without it the 503 goes statelessly.
        if self.free_calls.is_empty() || self.table.len() >= self.table.capacity() {
            self.counters.rejected_busy += 1;
            return self.reply_stateless(src, msg, 503, &[("Retry-After", &retry)]);
        }
        let local_tag = new_tag(&mut self.rng);
        let call = Call {
            uac: false,
            state: CallState::Inviting,
            call_id: msg.call_id().to_string(),
            local_tag,
            local_uri: without_tag(msg.to().raw),
            peer: src,
            dialog: None,
            invite_raw: msg.raw().to_vec(),
            invite_tx: None,
            provisional: false,
            cancel_requested: false,
            cancel_sent: false,
            ack: None,
            ok: None,
            pending: None,
            reinvite_pending: false,
            prack: None,
            session: None,
        };
        let Some(owner) = self.alloc_call(call) else {
            self.counters.rejected_busy += 1;
            return self.reply_stateless(src, msg, 503, &[("Retry-After", &retry)]);
        };
        let trying = match self.response_bytes(msg, 100, "Trying", None, &[], None) {
            Ok(b) => b,
            Err(_) => {
                self.counters.build_failed += 1;
                self.free_call(owner.idx);
                return;
            }
        };
        let mut tx = ServerTransaction::new(now, TxKind::Invite, src.reliable(), self.cfg.timers);
        // 100 Trying at once (§8.2.6.1): the TU may take a while.
        let _ = tx.send_response(now, 100, &trying);
        let meta = TxMeta {
            dst: src,
            owner: Some(owner),
            purpose: TxPurpose::Other,
        };
        let h = match self.insert_tx(key, Transaction::Server(tx), meta) {
            Ok(h) => h,
            Err(_) => {
                self.free_call(owner.idx);
                self.counters.rejected_busy += 1;
                return self.reply_stateless(src, msg, 503, &[("Retry-After", &retry)]);
            }
        };
        if let Some(c) = self.call_of(owner) {
            c.invite_tx = Some(h);
        }
        self.drain_tx(now, h, None);
        let uri = msg.request_uri();
        self.push_event(Event::IncomingCall {
            call: CallHandle(owner.idx),
            src: src.addr,
            request_uri: uri.map(|u| u.as_str().to_string()).unwrap_or_default(),
            request_user: uri
                .and_then(Uri::as_sip)
                .and_then(|u| u.user)
                .map(str::to_string),
            from: msg.from().raw.to_string(),
            to: msg.to().raw.to_string(),
            call_id: msg.call_id().to_string(),
            contact: Some(contact.raw.to_string()),
            sdp: body_of(msg),
        });
    }

    /// Answers a re-INVITE/UPDATE still waiting for the TU with 487 when
    /// the dialog ends, so its server transaction does not outlive the
    /// call (RFC 3261 §15.1.2).
    fn end_pending(&mut self, now: Instant, owner: Owner) {
        let Some(c) = self.call_of(owner) else { return };
        if c.pending.is_none() {
            return;
        }
        let call = CallHandle(owner.idx);
        let _ = self.respond(now, call, 487, "Request Terminated", None);
    }

    /// RFC 4028 §8.1: 422 for a `Session-Expires` below our Min-SE, 400
    /// for one that does not parse; None when the request is acceptable
    /// (or session timers are off).
    fn session_refusal(&self, msg: &SipMessage<'_>) -> Option<u16> {
        if self.cfg.session_expires_s == 0 {
            return None;
        }
        match session_expires_of(msg) {
            Err(()) => Some(400),
            Ok(Some((delta, _))) if delta < self.cfg.min_se_s => Some(422),
            Ok(_) => None,
        }
    }

    /// RFC 4028 §9: the session timer we grant as UAS for `req` (an INVITE
    /// or a refresh): None when timers are off or neither side asked.
    fn uas_session(&self, now: Instant, req: &SipMessage<'_>) -> Option<SessionTimer> {
        if self.cfg.session_expires_s == 0 {
            return None;
        }
        let peer_timer = has_option(req, "timer");
        let floor = min_se_of(req)
            .unwrap_or(0)
            .max(self.cfg.min_se_s)
            .max(SESSION_EXPIRES_MIN_S);
        let (interval, peer_refreshes) = match session_expires_of(req).ok().flatten() {
            // We may shorten the interval, not below the Min-SE (§9). A peer
            // without `timer` cannot refresh, so we do (§9).
            Some((delta, refresher)) => (
                delta.min(self.cfg.session_expires_s).max(floor),
                refresher.unwrap_or(true) && peer_timer,
            ),
            None if peer_timer => (self.cfg.session_expires_s.max(floor), true),
            None => return None,
        };
        SessionTimer::start(now, interval, !peer_refreshes, peer_timer)
    }

    fn on_in_dialog(
        &mut self,
        now: Instant,
        src: Remote,
        msg: &SipMessage<'_>,
        key: Option<TransactionKey>,
        to_tag: &str,
    ) {
        let Some(idx) = self.call_by_tag(msg.call_id(), to_tag) else {
            self.counters.no_dialog += 1;
            return self.reply_with_tx(now, src, msg, key, 481, &[]);
        };
        let owner = Owner {
            idx,
            generation: self.generations[idx as usize],
        };
        let method = msg.method().unwrap_or(Method::Ack);
        let (cseq, _) = msg.cseq();
        let Some(c) = self.call_of(owner) else { return };
        let from_ok = c
            .dialog
            .as_ref()
            .is_some_and(|d| Some(d.id().remote_tag.as_str()) == msg.from().tag());
        if !from_ok {
            self.counters.no_dialog += 1;
            return self.reply_with_tx(now, src, msg, key, 481, &[]);
        }
        let Some(d) = c.dialog.as_mut() else { return };
        if let Err(e) = d.handle_remote_request(method.as_str(), cseq) {
            self.counters.rejected_other += 1;
            let status = match e {
                DialogError::Terminated => 481,
                _ => 500,
            };
            return self.reply_with_tx(now, src, msg, key, status, &[]);
        }
        let call = CallHandle(idx);
        match method {
            Method::Bye => {
                self.reply_with_tx(now, src, msg, key, 200, &[]);
                self.end_pending(now, owner);
                let unanswered = self
                    .call_of(owner)
                    .is_some_and(|c| !c.uac && c.state == CallState::Inviting);
                if unanswered {
                    let _ = self.respond(now, call, 487, "Request Terminated", None);
                }
                self.push_event(Event::Ended {
                    call,
                    by_remote: true,
                });
                self.free_call(idx);
            }
            Method::Options => {
                let supported = SUPPORTED.join(", ");
                let headers = [
                    ("Allow", ALLOW),
                    ("Accept", ACCEPT),
                    ("Supported", supported.as_str()),
                ];
                self.reply_with_tx(now, src, msg, key, 200, &headers);
            }
            Method::Invite | Method::Update => {
                let Some(key) = key else {
                    self.counters.rejected_other += 1;
                    return self.reply_stateless(src, msg, 400, &[]);
                };
                let Some(c) = self.call_of(owner) else { return };
                let busy = c.pending.is_some()
                    || c.state != CallState::Confirmed
                    || (method == Method::Invite && c.ok.is_some())
                    || (c.reinvite_pending && (method == Method::Invite || !msg.body().is_empty()));
                if busy {
                    // §14.2: an offer while ours is pending.
                    self.counters.rejected_other += 1;
                    return self.reply_with_tx(now, src, msg, Some(key), 491, &[]);
                }
                if let Some(status) = self.session_refusal(msg) {
                    self.counters.rejected_other += 1;
                    let min_se = self.cfg.min_se_s.to_string();
                    return self.reply_with_tx(
                        now,
                        src,
                        msg,
                        Some(key),
                        status,
                        &[("Min-SE", &min_se)],
                    );
                }
                let Some(c) = self.call_of(owner) else { return };
                if let Some(contact) = msg.contact().next() {
                    if let Some(d) = c.dialog.as_mut() {
                        let _ = d.update_remote_target(contact.raw);
                    }
                }
                let invite = method == Method::Invite;
                let kind = if invite {
                    TxKind::Invite
                } else {
                    TxKind::NonInvite
                };
                let tx = ServerTransaction::new(now, kind, src.reliable(), self.cfg.timers);
                let meta = TxMeta {
                    dst: src,
                    owner: Some(owner),
                    purpose: TxPurpose::Other,
                };
                let Ok(h) = self.insert_tx(key, Transaction::Server(tx), meta) else {
                    self.counters.rejected_busy += 1;
                    let retry = RETRY_AFTER_S.to_string();
                    return self.reply_stateless(src, msg, 503, &[("Retry-After", &retry)]);
                };
                if let Some(c) = self.call_of(owner) {
                    c.pending = Some(PendingServer {
                        tx: h,
                        raw: msg.raw().to_vec(),
                        invite,
                    });
                }
                let sdp = body_of(msg);
                self.push_event(if invite {
                    Event::Reinvite { call, sdp }
                } else {
                    Event::Update { call, sdp }
                });
            }
            _ => {
                self.counters.rejected_other += 1;
                self.reply_with_tx(now, src, msg, key, 405, &[("Allow", ALLOW)]);
            }
        }
    }

    /// Drives every timer due at `now`: transaction timers (through the
    /// table's deadline heap) and the 2xx retransmissions.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        // Each expiry re-arms its transaction at least T1 later or ends it,
        // so one pass visits each transaction a bounded number of times.
        let bound = self.table.capacity() * super::transaction::HEAP_SLACK + 1;
        for _ in 0..bound {
            let Some(h) = self.table.poll_expired(now) else {
                break;
            };
            self.drain_tx(now, h, None);
        }
        for _ in 0..self.calls.len() + 1 {
            self.drop_stale_ok_timers();
            let Some(Reverse((at, idx, generation))) = self.ok_timers.peek().copied() else {
                break;
            };
            if at > now {
                break;
            }
            self.ok_timers.pop();
            self.on_ok_timer(now, Owner { idx, generation });
        }
        for _ in 0..self.calls.len() + 1 {
            self.drop_stale_session_timers();
            let Some(Reverse((at, idx, generation))) = self.session_timers.peek().copied() else {
                break;
            };
            if at > now {
                break;
            }
            self.session_timers.pop();
            self.on_session_timer(now, Owner { idx, generation });
        }
    }

    fn drop_stale_session_timers(&mut self) {
        while let Some(Reverse((at, idx, generation))) = self.session_timers.peek().copied() {
            let live = self.generations[idx as usize] == generation
                && self.calls[idx as usize]
                    .as_ref()
                    .and_then(|c| c.session.as_ref())
                    .is_some_and(|s| s.next() == at);
            if live {
                return;
            }
            self.session_timers.pop();
        }
    }

    /// Installs (or clears, with None) the call's session timer and arms
    /// its deadline.
    fn set_session(&mut self, owner: Owner, session: Option<SessionTimer>) {
        let Some(c) = self.call_of(owner) else { return };
        c.session = session;
        let Some(at) = session.map(|s| s.next()) else {
            return;
        };
        if self.session_timers.len() > 2 * self.calls.len() {
            // Rebuild from the live deadlines (at most one per call).
            let live: Vec<_> = self
                .calls
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let next = c.as_ref()?.session.as_ref()?.next();
                    Some(Reverse((next, i as u32, self.generations[i])))
                })
                .collect();
            self.session_timers.clear();
            self.session_timers.extend(live);
        }
        self.session_timers
            .push(Reverse((at, owner.idx, owner.generation)));
    }

    /// RFC 4028 §10: refresh at half the interval when we are the
    /// refresher; BYE when the session expires unrefreshed.
    fn on_session_timer(&mut self, now: Instant, owner: Owner) {
        let Some(c) = self.call_of(owner) else { return };
        let Some(mut st) = c.session else { return };
        if c.state != CallState::Confirmed && c.state != CallState::WaitAck {
            return;
        }
        if now >= st.expire_at {
            self.expire_session(now, owner);
            return;
        }
        if st.refresh_at.is_some_and(|r| r <= now) {
            st.refresh_at = None;
            self.set_session(owner, Some(st));
            if self.send_refresh(now, owner).is_err() {
                // No room for the refresh now: the expiry still ends the
                // call if nothing else refreshes it.
                self.counters.build_failed += 1;
            }
        }
    }

    /// Ends the call because its session expired: BYE with the Q.850 102
    /// `Reason`, [`Event::SessionExpired`] (and [`Event::Ended`] later).
    fn expire_session(&mut self, now: Instant, owner: Owner) {
        let call = CallHandle(owner.idx);
        self.set_session(owner, None);
        self.push_event(Event::SessionExpired { call });
        let reason = [("Reason", SESSION_EXPIRED_REASON)];
        if self.send_bye_with_headers(now, call, &reason).is_err() {
            self.push_event(Event::Ended {
                call,
                by_remote: false,
            });
            self.free_call(owner.idx);
        }
    }

    fn drop_stale_ok_timers(&mut self) {
        while let Some(Reverse((at, idx, generation))) = self.ok_timers.peek().copied() {
            let live = self.generations[idx as usize] == generation
                && self.calls[idx as usize]
                    .as_ref()
                    .and_then(|c| c.ok.as_ref())
                    .is_some_and(|ok| ok.next == Some(at));
            if live {
                return;
            }
            self.ok_timers.pop();
        }
    }

    fn arm_ok_timer(&mut self, owner: Owner, at: Instant) {
        if self.ok_timers.len() > 2 * self.calls.len() {
            // Rebuild from the live deadlines (at most one per call).
            let live: Vec<_> = self
                .calls
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let next = c.as_ref()?.ok.as_ref()?.next?;
                    Some(Reverse((next, i as u32, self.generations[i])))
                })
                .collect();
            self.ok_timers.clear();
            self.ok_timers.extend(live);
        }
        self.ok_timers
            .push(Reverse((at, owner.idx, owner.generation)));
    }

    /// §13.3.1.4: re-send the 2xx at T1, doubling up to T2, until the ACK
    /// or 64*T1.
    fn on_ok_timer(&mut self, now: Instant, owner: Owner) {
        let t2 = self.cfg.timers.t2;
        let Some(c) = self.call_of(owner) else { return };
        let peer = c.peer;
        let Some(ok) = c.ok.as_mut() else { return };
        if now >= ok.give_up {
            c.ok = None;
            let call = CallHandle(owner.idx);
            self.push_event(Event::AckTimeout { call });
            if self.send_bye(now, call).is_err() {
                self.push_event(Event::Ended {
                    call,
                    by_remote: false,
                });
                self.free_call(owner.idx);
            }
            return;
        }
        ok.interval = (ok.interval * 2).min(t2);
        let next = (now + ok.interval).min(ok.give_up);
        ok.next = Some(next);
        let bytes = ok.bytes.clone();
        self.push_transmit(peer, bytes);
        self.arm_ok_timer(owner, next);
    }

    // -- TU API -------------------------------------------------------------

    /// UAS: answers the call's INVITE, or its pending re-INVITE/UPDATE.
    /// A 101–199 creates the early dialog; a 2xx confirms it and is
    /// retransmitted until the ACK (§13.3.1.4); 3xx–6xx ends the call (the
    /// handle is dead afterwards unless it answered a re-INVITE/UPDATE).
    pub fn respond(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        reason: &str,
        body: Option<(&str, &[u8])>,
    ) -> Result<(), EndpointError> {
        self.respond_with_headers(now, call, status, reason, &[], body)
    }

    /// [`SipEndpoint::respond`] with more headers (`Retry-After` on a 503,
    /// `Reason` (RFC 3326), ...), written after Contact and Allow.
    pub fn respond_with_headers(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        reason: &str,
        extra_headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Result<(), EndpointError> {
        self.last_now = Some(now);
        let owner = self.owner_of(call).ok_or(EndpointError::UnknownCall)?;
        if !(101..=699).contains(&status) {
            return Err(EndpointError::InvalidState("status must be 101..=699"));
        }
        let peer = self.call_of(owner).ok_or(EndpointError::UnknownCall)?.peer;
        let contact = self.contact(peer.transport);
        let c = self.call_of(owner).ok_or(EndpointError::UnknownCall)?;
        let reinvite = c.pending.is_some();
        let (h, raw, invite) = if let Some(p) = c.pending.as_ref() {
            (p.tx, p.raw.clone(), p.invite)
        } else if !c.uac && c.state == CallState::Inviting {
            let h = c
                .invite_tx
                .ok_or(EndpointError::InvalidState("INVITE transaction gone"))?;
            (h, c.invite_raw.clone(), true)
        } else {
            return Err(EndpointError::InvalidState("nothing to answer"));
        };
        let req = SipMessage::parse(&raw)
            .map_err(|_| EndpointError::InvalidState("stored request does not parse"))?;
        let local_tag = c.local_tag.clone();
        // RFC 4028 §9: a 2xx to an INVITE or a refresh carries the granted
        // session interval (and Require: timer when the peer supports it).
        let session = if (200..300).contains(&status) {
            self.uas_session(now, &req)
        } else {
            None
        };
        let se = session.map(|s| s.header(false));
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(4 + extra_headers.len());
        if status < 300 {
            headers.push(("Contact", &contact));
        }
        if (200..300).contains(&status) {
            headers.push(("Allow", ALLOW));
        }
        if let (Some(st), Some(se)) = (session, se.as_deref()) {
            headers.push(("Session-Expires", se));
            if st.peer_timer {
                headers.push(("Require", "timer"));
            }
        }
        headers.extend_from_slice(extra_headers);
        let bytes = self.response_bytes(&req, status, reason, Some(&local_tag), &headers, body)?;
        let sent = self
            .table
            .update(h, |t| match t {
                Transaction::Server(s) => s.send_response(now, status, &bytes).is_ok(),
                Transaction::Client(_) => false,
            })
            .unwrap_or(false);
        if !sent {
            return Err(EndpointError::InvalidState("transaction refused response"));
        }
        let t1 = self.cfg.timers.t1;
        let give_up = now + self.cfg.timers.timeout();
        let reliable = peer.reliable();
        let c = self.call_of(owner).ok_or(EndpointError::UnknownCall)?;
        let cseq = req.cseq().0;
        if reinvite {
            if status >= 200 {
                c.pending = None;
            }
        } else if status < 300 {
            // §12.1.1: the dialog from the INVITE and our tag.
            let rr: Vec<&str> = req.record_route().map(|r| r.raw).collect();
            let remote_contact = req.contact().next().map(|n| n.raw).unwrap_or("");
            match c.dialog.as_mut() {
                Some(d) if status >= 200 => {
                    let _ = d.confirm(remote_contact, &rr);
                }
                Some(_) => {}
                None => {
                    let remote_uri = without_tag(req.from().raw);
                    c.dialog = Dialog::new_uas(&UasDialogParams {
                        status,
                        call_id: &c.call_id,
                        local_tag: &c.local_tag,
                        remote_tag: req.from().tag().unwrap_or(""),
                        local_uri: &c.local_uri,
                        remote_uri: &remote_uri,
                        invite_cseq: cseq,
                        contact: remote_contact,
                        record_route: &rr,
                        initial_local_cseq: 1,
                    })
                    .ok();
                }
            }
            if status >= 200 {
                c.state = CallState::WaitAck;
            }
        } else {
            if let Some(d) = c.dialog.as_mut() {
                d.terminate();
            }
            self.free_call(owner.idx);
        }
        self.drain_tx(now, h, None);
        if (200..300).contains(&status) {
            self.set_session(owner, session);
        }
        if invite && (200..300).contains(&status) {
            let next = (!reliable).then_some(now + t1);
            if let Some(c) = self.call_of(owner) {
                c.ok = Some(OkRetransmit {
                    bytes,
                    cseq,
                    next,
                    interval: t1,
                    give_up,
                });
            }
            // On a reliable transport only the give-up deadline runs.
            self.arm_ok_timer(owner, next.unwrap_or(give_up));
            if let Some(ok) = self.call_of(owner).and_then(|c| c.ok.as_mut()) {
                ok.next = Some(next.unwrap_or(give_up));
            }
        }
        Ok(())
    }

    /// UAC: starts a call. Generates the Call-ID (unless given), From tag
    /// and branch from the RNG, with the shard number in the Call-ID and
    /// branch ([`shard_of_call_id`], [`shard_of_branch`]).
    ///
    /// The INVITE carries `Supported: timer, 100rel` ([`UAC_SUPPORTED`]):
    /// reliable provisional responses are PRACKed (RFC 3262; put `Require:
    /// 100rel` into `extra_headers` to insist on them), and, unless
    /// [`EndpointConfig::session_expires_s`] is 0, `Session-Expires` with
    /// `refresher=uac` and `Min-SE` (RFC 4028 §7.1).
    pub fn invite(
        &mut self,
        now: Instant,
        p: &InviteParams<'_>,
    ) -> Result<CallHandle, EndpointError> {
        self.invite_inner(now, p, None)
    }

    /// UAC: sends an INVITE refused with a 401/407 again as a new call,
    /// with the same Call-ID (`p.call_id`, required) and From tag
    /// (`from_tag`) and the CSeq number `cseq` (one more than the refused
    /// one), a new branch, and the credentials in `p.extra_headers`
    /// (RFC 3261 §22.2). [`Challenged`] in [`Event::Failed`] has the
    /// values.
    pub fn invite_resend(
        &mut self,
        now: Instant,
        p: &InviteParams<'_>,
        from_tag: &str,
        cseq: u32,
    ) -> Result<CallHandle, EndpointError> {
        if p.call_id.is_none() {
            return Err(EndpointError::InvalidState(
                "a resent INVITE needs its Call-ID",
            ));
        }
        let tag_ok = !from_tag.is_empty()
            && from_tag.len() <= 64
            && from_tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
        if !tag_ok || cseq == 0 || cseq >= 1 << 31 {
            return Err(EndpointError::Build(BuildError::Value));
        }
        self.invite_inner(now, p, Some((from_tag, cseq)))
    }

    fn invite_inner(
        &mut self,
        now: Instant,
        p: &InviteParams<'_>,
        resend: Option<(&str, u32)>,
    ) -> Result<CallHandle, EndpointError> {
        self.last_now = Some(now);
        if self.free_calls.is_empty() {
            return Err(EndpointError::CallsFull);
        }
        if self.table.len() >= self.table.capacity() {
            return Err(EndpointError::TransactionsFull);
        }
        for u in [p.from, p.to, p.request_uri] {
            if Uri::parse(u).is_err() || u.contains(['<', '>', ' ']) {
                return Err(EndpointError::Build(BuildError::Value));
            }
        }
        let local_uri = match p.from_display {
            Some(d) if d.chars().any(|c| c == '"' || c == '\\' || c.is_control()) => {
                return Err(EndpointError::Build(BuildError::Value));
            }
            Some(d) => format!("\"{d}\" <{}>", p.from),
            None => format!("<{}>", p.from),
        };
        let call_id = match p.call_id {
            Some(c) => c.to_string(),
            None => self.new_call_id(),
        };
        let (tag, cseq) = match resend {
            Some((t, n)) => (t.to_string(), n),
            None => (new_tag(&mut self.rng), 1),
        };
        let branch = self.new_branch();
        let session_expires = (self.cfg.session_expires_s > 0).then(|| {
            (
                format!("{};refresher=uac", self.cfg.session_expires_s),
                self.cfg.min_se_s.to_string(),
            )
        });
        let mut out = Vec::with_capacity(1024);
        {
            let mut w = MessageWriter::request(&mut out, Method::Invite, p.request_uri)?;
            w = w.header("Via", &self.via(p.transport, &branch))?;
            w = w.header("Max-Forwards", &MAX_FORWARDS.to_string())?;
            w = w.header("From", &format!("{local_uri};tag={tag}"))?;
            w = w.header("To", &format!("<{}>", p.to))?;
            w = w.header("Call-ID", &call_id)?;
            w = w.header("CSeq", &format!("{cseq} INVITE"))?;
            w = w.header("Contact", &self.contact(p.transport))?;
            w = w.header("Allow", ALLOW)?;
            w = w.header("Supported", UAC_SUPPORTED)?;
            if let Some((se, min_se)) = &session_expires {
                w = w.header("Session-Expires", se)?;
                w = w.header("Min-SE", min_se)?;
            }
            w = w.header("User-Agent", &self.cfg.user_agent)?;
            for (n, v) in p.extra_headers {
                w = w.header(n, v)?;
            }
            let body = match p.sdp {
                Some(b) => {
                    w = w.header("Content-Type", "application/sdp")?;
                    b
                }
                None => &[],
            };
            w.finish(body);
        }
        let key = TransactionKey::client(&branch, "INVITE")
            .map_err(|_| EndpointError::InvalidState("generated branch refused"))?;
        let call = Call {
            uac: true,
            state: CallState::Inviting,
            call_id,
            local_tag: tag,
            local_uri,
            peer: Remote {
                addr: p.target,
                transport: p.transport,
            },
            dialog: None,
            invite_raw: out.clone(),
            invite_tx: None,
            provisional: false,
            cancel_requested: false,
            cancel_sent: false,
            ack: None,
            ok: None,
            pending: None,
            reinvite_pending: false,
            prack: None,
            session: None,
        };
        let owner = self.alloc_call(call).ok_or(EndpointError::CallsFull)?;
        let tx = ClientTransaction::new(
            now,
            TxKind::Invite,
            out,
            p.transport.is_reliable(),
            self.cfg.timers,
        );
        let meta = TxMeta {
            dst: Remote {
                addr: p.target,
                transport: p.transport,
            },
            owner: Some(owner),
            purpose: TxPurpose::Invite,
        };
        let h = match self.insert_tx(key, Transaction::Client(tx), meta) {
            Ok(h) => h,
            Err(_) => {
                self.free_call(owner.idx);
                return Err(EndpointError::TransactionsFull);
            }
        };
        if let Some(c) = self.call_of(owner) {
            c.invite_tx = Some(h);
        }
        self.drain_tx(now, h, None);
        Ok(CallHandle(owner.idx))
    }

    /// UAC: cancels a call that has no final response yet (§9.1). The
    /// CANCEL goes once a provisional response has arrived; the call then
    /// ends with [`Event::Failed`] (487) or, if the 2xx crossed the CANCEL,
    /// with an ACK, a BYE and [`Event::Ended`].
    pub fn cancel(&mut self, now: Instant, call: CallHandle) -> Result<(), EndpointError> {
        self.last_now = Some(now);
        let owner = self.owner_of(call).ok_or(EndpointError::UnknownCall)?;
        let c = self.call_of(owner).ok_or(EndpointError::UnknownCall)?;
        if !c.uac || c.state != CallState::Inviting {
            return Err(EndpointError::InvalidState("no INVITE to cancel"));
        }
        if c.cancel_requested {
            return Ok(());
        }
        c.cancel_requested = true;
        if c.provisional {
            self.send_cancel(now, owner);
        }
        Ok(())
    }

    /// Ends a confirmed call with a BYE (either side). [`Event::Ended`]
    /// follows when the BYE's transaction completes.
    pub fn send_bye(&mut self, now: Instant, call: CallHandle) -> Result<(), EndpointError> {
        self.send_bye_with_headers(now, call, &[])
    }

    /// Sends an UPDATE (RFC 3311) with an SDP offer in a confirmed dialog
    /// (either side); [`Event::UpdateAnswered`] brings the answer. The
    /// B2BUA uses it to pass a mid-call offer (hold/resume) across.
    pub fn send_update(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: &[u8],
    ) -> Result<(), EndpointError> {
        self.last_now = Some(now);
        let owner = self.owner_of(call).ok_or(EndpointError::UnknownCall)?;
        self.send_in_dialog(now, owner, Method::Update, TxPurpose::Update, Some(sdp))
    }

    /// Sends a re-INVITE (RFC 3261 §14.1) with an SDP offer in a confirmed
    /// dialog (either side). [`Event::ReinviteAnswered`] brings the final
    /// status and answer; the endpoint sends the ACK for a 2xx itself and
    /// re-sends it for each retransmitted 2xx (§13.2.2.4). Only one
    /// re-INVITE may be in progress at a time, and none while the peer's
    /// re-INVITE waits for our answer (§14.1).
    pub fn send_reinvite(
        &mut self,
        now: Instant,
        call: CallHandle,
        sdp: &[u8],
    ) -> Result<(), EndpointError> {
        self.last_now = Some(now);
        let owner = self.owner_of(call).ok_or(EndpointError::UnknownCall)?;
        let c = self.call_of(owner).ok_or(EndpointError::UnknownCall)?;
        if c.state != CallState::Confirmed {
            return Err(EndpointError::InvalidState("no confirmed dialog"));
        }
        if c.reinvite_pending || c.pending.as_ref().is_some_and(|p| p.invite) {
            return Err(EndpointError::InvalidState("an INVITE is in progress"));
        }
        self.send_in_dialog(now, owner, Method::Invite, TxPurpose::Reinvite, Some(sdp))?;
        if let Some(c) = self.call_of(owner) {
            c.reinvite_pending = true;
        }
        Ok(())
    }

    /// A session refresh (RFC 4028 §10): an UPDATE without SDP.
    fn send_refresh(&mut self, now: Instant, owner: Owner) -> Result<(), EndpointError> {
        self.send_in_dialog(now, owner, Method::Update, TxPurpose::Refresh, None)
    }

    /// Sends an INVITE or UPDATE in the call's dialog through a new client
    /// transaction, with the session timer headers when a timer runs.
    fn send_in_dialog(
        &mut self,
        now: Instant,
        owner: Owner,
        method: Method<'static>,
        purpose: TxPurpose,
        sdp: Option<&[u8]>,
    ) -> Result<(), EndpointError> {
        if self.table.len() >= self.table.capacity() {
            return Err(EndpointError::TransactionsFull);
        }
        let c = self.call_of(owner).ok_or(EndpointError::UnknownCall)?;
        if !matches!(c.state, CallState::Confirmed | CallState::WaitAck) {
            return Err(EndpointError::InvalidState("no confirmed dialog"));
        }
        let session = c.session;
        let d = c
            .dialog
            .as_mut()
            .ok_or(EndpointError::InvalidState("no dialog"))?;
        if d.state() == DialogState::Terminated {
            return Err(EndpointError::InvalidState("dialog terminated"));
        }
        let fields = d.next_request_fields(method.as_str())?;
        let peer = c.peer;
        let branch = self.new_branch();
        let body = sdp.map(|b| ("application/sdp", b));
        let se = session.map(|s| s.header(true));
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(3);
        if method == Method::Invite {
            headers.push(("Allow", ALLOW));
        }
        if let Some(se) = se.as_deref() {
            headers.push(("Supported", "timer"));
            headers.push(("Session-Expires", se));
        }
        let bytes =
            self.build_in_dialog(peer.transport, &fields, method, &branch, &headers, body)?;
        let key = TransactionKey::client(&branch, method.as_str())
            .map_err(|_| EndpointError::InvalidState("generated branch refused"))?;
        let kind = if method == Method::Invite {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        let tx = ClientTransaction::new(now, kind, bytes, peer.reliable(), self.cfg.timers);
        let meta = TxMeta {
            dst: peer,
            owner: Some(owner),
            purpose,
        };
        let h = self
            .insert_tx(key, Transaction::Client(tx), meta)
            .map_err(|_| EndpointError::TransactionsFull)?;
        self.drain_tx(now, h, None);
        Ok(())
    }

    /// UAC: sends an out-of-dialog OPTIONS (RFC 3261 §11) to `target` with
    /// `request_uri` (`sip:trunk.example:5060`) as Request-URI and To, for
    /// a trunk health check. It runs in its own non-INVITE client
    /// transaction (retransmitted by Timer E on UDP) with a fresh Call-ID
    /// and From tag and `Accept: application/sdp`; its outcome comes back
    /// once as [`Event::OptionsAnswered`] with `tag`. No call slot is used.
    /// Fails, sending nothing, when the transaction table is full or the
    /// URI cannot be written.
    pub fn send_options(
        &mut self,
        now: Instant,
        target: Remote,
        request_uri: &str,
        tag: u64,
    ) -> Result<(), EndpointError> {
        self.last_now = Some(now);
        if self.table.len() >= self.table.capacity() {
            return Err(EndpointError::TransactionsFull);
        }
        if Uri::parse(request_uri).is_err() || request_uri.contains(['<', '>', ' ', '"']) {
            return Err(EndpointError::Build(BuildError::Value));
        }
        let from_tag = new_tag(&mut self.rng);
        let call_id = self.new_call_id();
        let branch = self.new_branch();
        let mut out = Vec::with_capacity(512);
        {
            let mut w = MessageWriter::request(&mut out, Method::Options, request_uri)?;
            w = w.header("Via", &self.via(target.transport, &branch))?;
            w = w.header("Max-Forwards", &MAX_FORWARDS.to_string())?;
            let from = self.contact(Transport::Udp);
            w = w.header("From", &format!("{from};tag={from_tag}"))?;
            w = w.header("To", &format!("<{request_uri}>"))?;
            w = w.header("Call-ID", &call_id)?;
            w = w.header("CSeq", "1 OPTIONS")?;
            w = w.header("Accept", ACCEPT)?;
            w = w.header("User-Agent", &self.cfg.user_agent)?;
            w.finish(&[]);
        }
        let key = TransactionKey::client(&branch, "OPTIONS")
            .map_err(|_| EndpointError::InvalidState("generated branch refused"))?;
        let tx = ClientTransaction::new(
            now,
            TxKind::NonInvite,
            out,
            target.reliable(),
            self.cfg.timers,
        );
        let meta = TxMeta {
            dst: target,
            owner: None,
            purpose: TxPurpose::Options { tag },
        };
        let h = self
            .insert_tx(key, Transaction::Client(tx), meta)
            .map_err(|_| EndpointError::TransactionsFull)?;
        self.drain_tx(now, h, None);
        Ok(())
    }

    /// [`SipEndpoint::send_bye`] with more headers, such as the RFC 3326
    /// `Reason` of a call ended by the gateway.
    pub fn send_bye_with_headers(
        &mut self,
        now: Instant,
        call: CallHandle,
        extra_headers: &[(&str, &str)],
    ) -> Result<(), EndpointError> {
        self.last_now = Some(now);
        let owner = self.owner_of(call).ok_or(EndpointError::UnknownCall)?;
        if self.table.len() >= self.table.capacity() {
            return Err(EndpointError::TransactionsFull);
        }
        let c = self.call_of(owner).ok_or(EndpointError::UnknownCall)?;
        if !matches!(c.state, CallState::Confirmed | CallState::WaitAck) {
            return Err(EndpointError::InvalidState("no confirmed dialog"));
        }
        let d = c
            .dialog
            .as_mut()
            .ok_or(EndpointError::InvalidState("no dialog"))?;
        if d.state() == DialogState::Terminated {
            return Err(EndpointError::InvalidState("dialog terminated"));
        }
        let fields = d.next_request_fields("BYE")?;
        self.end_pending(now, owner);
        let c = self.call_of(owner).ok_or(EndpointError::UnknownCall)?;
        let Some(d) = c.dialog.as_mut() else {
            return Err(EndpointError::InvalidState("no dialog"));
        };
        d.terminate();
        c.state = CallState::Terminating;
        c.ok = None;
        let peer = c.peer;
        let branch = self.new_branch();
        let bytes = self.build_in_dialog(
            peer.transport,
            &fields,
            Method::Bye,
            &branch,
            extra_headers,
            None,
        )?;
        let key = TransactionKey::client(&branch, "BYE")
            .map_err(|_| EndpointError::InvalidState("generated branch refused"))?;
        let tx = ClientTransaction::new(
            now,
            TxKind::NonInvite,
            bytes,
            peer.reliable(),
            self.cfg.timers,
        );
        let meta = TxMeta {
            dst: peer,
            owner: Some(owner),
            purpose: TxPurpose::Bye,
        };
        let h = self
            .insert_tx(key, Transaction::Client(tx), meta)
            .map_err(|_| EndpointError::TransactionsFull)?;
        self.drain_tx(now, h, None);
        Ok(())
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use rand::Rng;
    use std::net::{IpAddr, Ipv4Addr};

    /// One-way delay of the simulated link.
    const DELAY: Duration = Duration::from_millis(10);
    const OFFER: &[u8] = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    const ANSWER: &[u8] = b"v=0\r\no=- 2 2 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";
    const SDP: &str = "application/sdp";

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 5060)
    }

    type DropFn = Box<dyn FnMut(usize, &[u8]) -> bool>;

    /// Two endpoints (0 = UAC at 10.0.0.1, 1 = UAS at 10.0.0.2) on a link
    /// with a fixed delay, a virtual clock, a drop filter and seeded loss.
    struct Net {
        now: Instant,
        eps: [SipEndpoint; 2],
        addrs: [SocketAddr; 2],
        inflight: Vec<(Instant, usize, SocketAddr, Vec<u8>)>,
        events: [Vec<Event>; 2],
        sent: [Vec<Vec<u8>>; 2],
        drop: DropFn,
        loss: f64,
        rng: StdRng,
        /// The link's transport: every message must go out on it.
        transport: Transport,
    }

    impl Net {
        fn with(cfg: impl Fn(usize, &mut EndpointConfig)) -> Self {
            let addrs = [addr(1), addr(2)];
            let mk = |i: usize| {
                let mut c = EndpointConfig::new(addrs[i], i as u8);
                c.transactions_max = 64;
                c.dialogs_max = 16;
                c.outputs_max = 64;
                cfg(i, &mut c);
                SipEndpoint::new(c, 100 + i as u64)
            };
            Net {
                now: Instant::now(),
                eps: [mk(0), mk(1)],
                addrs,
                inflight: Vec::new(),
                events: [Vec::new(), Vec::new()],
                sent: [Vec::new(), Vec::new()],
                drop: Box::new(|_, _| false),
                loss: 0.0,
                rng: StdRng::seed_from_u64(7),
                transport: Transport::Udp,
            }
        }

        fn new() -> Self {
            Self::with(|_, _| {})
        }

        fn flush(&mut self) {
            for i in 0..2 {
                // Bounded: an endpoint never holds more than outputs_max.
                for _ in 0..1000 {
                    let Some(o) = self.eps[i].poll_output() else {
                        break;
                    };
                    match o {
                        Output::Transmit {
                            dst,
                            transport,
                            bytes,
                        } => {
                            assert_eq!(transport, self.transport, "sent on the wrong transport");
                            self.sent[i].push(bytes.clone());
                            let lost = self.loss > 0.0 && self.rng.gen_bool(self.loss);
                            let Some(to) = self.addrs.iter().position(|a| *a == dst) else {
                                continue;
                            };
                            if !lost && !(self.drop)(i, &bytes) {
                                self.inflight
                                    .push((self.now + DELAY, to, self.addrs[i], bytes));
                            }
                        }
                        Output::Event(e) => self.events[i].push(e),
                    }
                }
            }
        }

        fn next_deadline(&mut self) -> Option<Instant> {
            let a = self.inflight.iter().map(|p| p.0).min();
            [a, self.eps[0].poll_timeout(), self.eps[1].poll_timeout()]
                .into_iter()
                .flatten()
                .min()
        }

        /// Runs the network for `d` of virtual time.
        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            for _ in 0..100_000 {
                self.flush();
                match self.next_deadline() {
                    Some(t) if t <= end => {
                        self.now = self.now.max(t);
                        let now = self.now;
                        let (due, later): (Vec<_>, Vec<_>) =
                            self.inflight.drain(..).partition(|p| p.0 <= now);
                        self.inflight = later;
                        for (_, to, addr, bytes) in due {
                            let src = Remote {
                                addr,
                                transport: self.transport,
                            };
                            self.eps[to].handle_message(now, src, &bytes);
                            self.flush();
                        }
                        self.eps[0].handle_timeout(now);
                        self.eps[1].handle_timeout(now);
                    }
                    _ => {
                        self.now = end;
                        return;
                    }
                }
            }
            panic!("network never went idle");
        }

        /// Delivers a raw datagram to endpoint `to` as if from the other.
        fn inject(&mut self, to: usize, bytes: &[u8]) {
            let src = self.addrs[1 - to];
            self.eps[to].handle_datagram(self.now, src, bytes);
            self.flush();
        }

        fn take(&mut self, i: usize) -> Vec<Event> {
            std::mem::take(&mut self.events[i])
        }

        fn sent_count(&self, i: usize, start: &str, cseq_method: &str) -> usize {
            self.sent[i]
                .iter()
                .filter_map(|b| SipMessage::parse(b).ok())
                .filter(|m| m.start_line_raw().starts_with(start))
                .filter(|m| m.cseq().1.as_str() == cseq_method)
                .count()
        }

        fn last_sent(&self, i: usize, start: &str) -> Vec<u8> {
            self.sent[i]
                .iter()
                .rev()
                .find(|b| b.starts_with(start.as_bytes()))
                .cloned()
                .unwrap_or_else(|| panic!("endpoint {i} sent no {start}"))
        }

        fn invite(&mut self, target: SocketAddr) -> CallHandle {
            let now = self.now;
            let c = self.eps[0]
                .invite(
                    now,
                    &InviteParams {
                        target,
                        transport: self.transport,
                        request_uri: "sip:bob@10.0.0.2",
                        from: "sip:alice@10.0.0.1",
                        from_display: Some("Alice"),
                        to: "sip:bob@10.0.0.2",
                        call_id: None,
                        sdp: Some(OFFER),
                        extra_headers: &[("P-Asserted-Identity", "<sip:+4930999000@gw>")],
                    },
                )
                .expect("invite");
            self.flush();
            c
        }

        fn incoming(&mut self) -> CallHandle {
            let evs = self.take(1);
            match evs.as_slice() {
                [Event::IncomingCall {
                    call,
                    request_user,
                    sdp,
                    ..
                }] => {
                    assert_eq!(request_user.as_deref(), Some("bob"));
                    assert_eq!(sdp.as_deref(), Some(OFFER));
                    *call
                }
                other => panic!("expected IncomingCall, got {other:?}"),
            }
        }

        fn respond(&mut self, call: CallHandle, status: u16, body: Option<&[u8]>) {
            let now = self.now;
            self.eps[1]
                .respond(
                    now,
                    call,
                    status,
                    reason_for(status),
                    body.map(|b| (SDP, b)),
                )
                .expect("respond");
            self.flush();
        }

        /// INVITE, 180, 200, ACK: returns (UAC call, UAS call).
        fn connect(&mut self) -> (CallHandle, CallHandle) {
            let a = self.invite(self.addrs[1]);
            self.run(Duration::from_millis(50));
            let b = self.incoming();
            self.respond(b, 180, None);
            self.run(Duration::from_millis(50));
            assert_eq!(self.take(0), vec![Event::Ringing { call: a, sdp: None }]);
            self.respond(b, 200, Some(ANSWER));
            self.run(Duration::from_millis(50));
            assert_eq!(
                self.take(0),
                vec![Event::Answered {
                    call: a,
                    sdp: Some(ANSWER.to_vec())
                }]
            );
            assert_eq!(self.take(1), vec![Event::Acked { call: b }]);
            (a, b)
        }

        fn settle(&mut self) {
            self.run(Duration::from_secs(40));
            assert_eq!(self.eps[0].calls_len(), 0);
            assert_eq!(self.eps[1].calls_len(), 0);
            assert_eq!(self.eps[0].transactions_len(), 0);
            assert_eq!(self.eps[1].transactions_len(), 0);
        }
    }

    fn raw(method: &str, to_tag: Option<&str>, cseq: u32, extra: &str) -> Vec<u8> {
        let to = match to_tag {
            Some(t) => format!("<sip:bob@10.0.0.2>;tag={t}"),
            None => "<sip:bob@10.0.0.2>".to_string(),
        };
        format!(
            "{method} sip:bob@10.0.0.2 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-raw-{method}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@10.0.0.1>;tag=rawtag\r\n\
             To: {to}\r\n\
             Call-ID: raw-call@10.0.0.1\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@10.0.0.1>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The single response endpoint 1 sent to an injected request.
    fn answer(net: &Net) -> SipMessage<'_> {
        let last = net.sent[1].last().expect("an answer");
        SipMessage::parse(last).expect("answer parses")
    }

    #[test]
    fn basic_call_with_bodies_and_bye() {
        let mut net = Net::new();
        let (a, b) = net.connect();
        assert_eq!(net.sent_count(1, "SIP/2.0 100", "INVITE"), 1);
        assert_eq!(net.sent_count(0, "ACK ", "ACK"), 1);
        // The INVITE carries what the UAC was given.
        let inv = net.sent[0][0].clone();
        let m = SipMessage::parse(&inv).unwrap();
        assert!(m.header(HeaderName::PAssertedIdentity).is_some());
        assert_eq!(m.from().display_name, Some("Alice"));
        assert_eq!(shard_of_call_id(m.call_id()), Some(0));
        assert_eq!(shard_of_branch(m.top_via().branch.unwrap()), Some(0));
        let now = net.now;
        net.eps[0].send_bye(now, a).unwrap();
        net.run(Duration::from_millis(100));
        assert_eq!(
            net.take(1),
            vec![Event::Ended {
                call: b,
                by_remote: true
            }]
        );
        assert_eq!(
            net.take(0),
            vec![Event::Ended {
                call: a,
                by_remote: false
            }]
        );
        net.settle();
        assert_eq!(net.eps[0].counters(), EndpointCounters::default());
        assert_eq!(net.eps[1].counters(), EndpointCounters::default());
    }

    #[test]
    fn ok_retransmitted_until_ack() {
        let mut net = Net::new();
        let mut acks_dropped = 0;
        net.drop = Box::new(move |from, b| {
            if from == 0 && b.starts_with(b"ACK ") && acks_dropped < 2 {
                acks_dropped += 1;
                return true;
            }
            false
        });
        net.invite(addr(2));
        net.run(Duration::from_millis(50));
        let b = net.incoming();
        net.respond(b, 200, Some(ANSWER));
        net.run(Duration::from_secs(5));
        // 200 at 0, 0.5 s (ACK lost), 1.5 s: the third ACK gets through.
        assert_eq!(net.sent_count(1, "SIP/2.0 200", "INVITE"), 3);
        assert_eq!(net.take(1), vec![Event::Acked { call: b }]);
        net.run(Duration::from_secs(30));
        assert_eq!(net.sent_count(1, "SIP/2.0 200", "INVITE"), 3);
        assert_eq!(net.eps[1].calls_len(), 1);
    }

    #[test]
    fn ok_gives_up_without_ack() {
        let mut net = Net::new();
        net.drop = Box::new(|from, b| from == 0 && b.starts_with(b"ACK "));
        net.invite(addr(2));
        net.run(Duration::from_millis(50));
        let b = net.incoming();
        net.respond(b, 200, Some(ANSWER));
        net.run(Duration::from_secs(40));
        let evs = net.take(1);
        assert_eq!(evs[0], Event::AckTimeout { call: b });
        assert!(evs.contains(&Event::Ended {
            call: b,
            by_remote: false
        }));
        // T1, 2, 4, 4, ... up to 32 s: 1 + 10 retransmissions.
        assert!(net.sent_count(1, "SIP/2.0 200", "INVITE") >= 10);
    }

    #[test]
    fn invite_retransmitted_by_timer_a() {
        let mut net = Net::new();
        let mut dropped = 0;
        net.drop = Box::new(move |from, b| {
            if from == 0 && b.starts_with(b"INVITE ") && dropped < 2 {
                dropped += 1;
                return true;
            }
            false
        });
        net.invite(addr(2));
        net.run(Duration::from_secs(2));
        assert_eq!(net.sent_count(0, "INVITE ", "INVITE"), 3);
        net.incoming();
    }

    #[test]
    fn call_survives_random_loss() {
        let mut net = Net::new();
        net.loss = 0.2;
        let a = net.invite(addr(2));
        net.run(Duration::from_secs(8));
        let b = net.incoming();
        net.respond(b, 200, Some(ANSWER));
        net.run(Duration::from_secs(8));
        assert!(net.take(0).contains(&Event::Answered {
            call: a,
            sdp: Some(ANSWER.to_vec())
        }));
        assert_eq!(net.take(1), vec![Event::Acked { call: b }]);
    }

    #[test]
    fn cancel_while_ringing() {
        let mut net = Net::new();
        let a = net.invite(addr(2));
        net.run(Duration::from_millis(50));
        let b = net.incoming();
        net.respond(b, 180, None);
        net.run(Duration::from_millis(50));
        net.take(0);
        let now = net.now;
        net.eps[0].cancel(now, a).unwrap();
        net.run(Duration::from_millis(200));
        assert_eq!(net.take(1), vec![Event::Cancelled { call: b }]);
        assert_eq!(net.sent_count(1, "SIP/2.0 200", "CANCEL"), 1);
        assert_eq!(net.sent_count(1, "SIP/2.0 487", "INVITE"), 1);
        assert_eq!(net.sent_count(0, "ACK ", "ACK"), 1);
        match net.take(0).as_slice() {
            [Event::Failed { call, status, .. }] => {
                assert_eq!((*call, *status), (a, 487));
            }
            other => panic!("expected Failed 487, got {other:?}"),
        }
        net.settle();
    }

    #[test]
    fn cancel_before_provisional_waits() {
        let mut net = Net::new();
        net.drop = Box::new(|from, b| from == 1 && b.starts_with(b"SIP/2.0 100"));
        let a = net.invite(addr(2));
        let now = net.now;
        net.eps[0].cancel(now, a).unwrap();
        net.run(Duration::from_millis(50));
        let b = net.incoming();
        assert_eq!(net.sent_count(0, "CANCEL ", "CANCEL"), 0);
        net.respond(b, 180, None);
        net.run(Duration::from_millis(100));
        assert_eq!(net.sent_count(0, "CANCEL ", "CANCEL"), 1);
        assert!(net.take(1).contains(&Event::Cancelled { call: b }));
    }

    #[test]
    fn cancel_after_trying_only() {
        // RFC 3261 §9.1: a 100 Trying is a provisional response, so a
        // CANCEL may (and after a failover must) go out at once.
        let mut net = Net::new();
        let a = net.invite(addr(2));
        net.run(Duration::from_millis(50));
        let b = net.incoming();
        assert_eq!(net.sent_count(1, "SIP/2.0 100", "INVITE"), 1);
        let now = net.now;
        net.eps[0].cancel(now, a).unwrap();
        net.run(Duration::from_millis(100));
        assert_eq!(net.sent_count(0, "CANCEL ", "CANCEL"), 1);
        assert!(net.take(1).contains(&Event::Cancelled { call: b }));
    }

    #[test]
    fn callee_bye() {
        let mut net = Net::new();
        let (a, b) = net.connect();
        let now = net.now;
        net.eps[1].send_bye(now, b).unwrap();
        net.run(Duration::from_millis(100));
        assert_eq!(
            net.take(0),
            vec![Event::Ended {
                call: a,
                by_remote: true
            }]
        );
        assert_eq!(
            net.take(1),
            vec![Event::Ended {
                call: b,
                by_remote: false
            }]
        );
        net.settle();
    }

    #[test]
    fn uac_update_and_its_timeout() {
        let mut net = Net::new();
        let (a, b) = net.connect();
        let now = net.now;
        net.eps[0].send_update(now, a, OFFER).unwrap();
        net.run(Duration::from_millis(50));
        assert_eq!(
            net.take(1),
            vec![Event::Update {
                call: b,
                sdp: Some(OFFER.to_vec())
            }]
        );
        net.respond(b, 200, Some(ANSWER));
        net.run(Duration::from_millis(50));
        assert_eq!(
            net.take(0),
            vec![Event::UpdateAnswered {
                call: a,
                status: 200,
                sdp: Some(ANSWER.to_vec())
            }]
        );
        // Unanswered: Timer F gives 408.
        net.drop = Box::new(|from, bytes| from == 0 && bytes.starts_with(b"UPDATE "));
        let now = net.now;
        net.eps[0].send_update(now, a, OFFER).unwrap();
        net.run(Duration::from_secs(40));
        assert_eq!(
            net.take(0),
            vec![Event::UpdateAnswered {
                call: a,
                status: 408,
                sdp: None
            }]
        );
    }

    #[test]
    fn extra_headers_on_bye_and_response() {
        let mut net = Net::new();
        let (_, b) = net.connect();
        let now = net.now;
        let reason = "Q.850;cause=102;text=\"Recovery on timer expiry\"";
        net.eps[1]
            .send_bye_with_headers(now, b, &[("Reason", reason)])
            .unwrap();
        net.run(Duration::from_millis(100));
        let bye = String::from_utf8(net.last_sent(1, "BYE ")).unwrap();
        assert!(bye.contains(&format!("\r\nReason: {reason}\r\n")), "{bye}");
        net.take(0);
        net.take(1);
        // A 503 with Retry-After.
        let a = net.invite(net.addrs[1]);
        net.run(Duration::from_millis(50));
        let b = net.incoming();
        net.eps[1]
            .respond_with_headers(
                net.now,
                b,
                503,
                "Service Unavailable",
                &[("Retry-After", "5")],
                None,
            )
            .unwrap();
        net.run(Duration::from_millis(100));
        let resp = String::from_utf8(net.last_sent(1, "SIP/2.0 503")).unwrap();
        assert!(resp.contains("\r\nRetry-After: 5\r\n"), "{resp}");
        assert!(net.take(0).iter().any(|e| matches!(
            e,
            Event::Failed { call, status: 503, .. } if *call == a
        )));
    }

    #[test]
    fn bye_for_unknown_dialog_gets_481() {
        let mut net = Net::new();
        net.inject(1, &raw("BYE", Some("nosuch"), 2, ""));
        assert_eq!(answer(&net).status_code(), Some(481));
        net.inject(1, &raw("BYE", None, 3, ""));
        assert_eq!(answer(&net).status_code(), Some(481));
        net.inject(1, &raw("CANCEL", None, 1, ""));
        assert_eq!(answer(&net).status_code(), Some(481));
        assert_eq!(net.eps[1].counters().no_dialog, 3);
        // An ACK that matches nothing is dropped silently.
        let n = net.sent[1].len();
        net.inject(1, &raw("ACK", Some("nosuch"), 1, ""));
        assert_eq!(net.sent[1].len(), n);
        assert_eq!(net.eps[1].counters().acks_unmatched, 1);
    }

    #[test]
    fn malformed_request_with_headers_gets_400() {
        let mut net = Net::new();
        net.inject(1, &raw("INVITE", None, 1, "Max-Forwards: lots\r\n"));
        let m = answer(&net);
        assert_eq!(m.status_code(), Some(400));
        assert_eq!(m.call_id(), "raw-call@10.0.0.1");
        assert!(m.to().tag().is_some());
        assert_eq!(net.eps[1].counters().parse_answered, 1);
        // Without a Call-ID nothing can be answered.
        let mut bad = raw("INVITE", None, 1, "Max-Forwards: lots\r\n");
        let s = String::from_utf8(bad.clone()).unwrap();
        bad = s.replace("Call-ID: raw-call@10.0.0.1\r\n", "").into_bytes();
        let n = net.sent[1].len();
        net.inject(1, &bad);
        assert_eq!(net.sent[1].len(), n);
        net.inject(1, b"\x00\x01garbage");
        assert_eq!(net.eps[1].counters().parse_dropped, 2);
        // A version we do not speak: 505.
        let v = String::from_utf8(raw("OPTIONS", None, 1, ""))
            .unwrap()
            .replacen("SIP/2.0\r\n", "SIP/7.0\r\n", 1);
        net.inject(1, v.as_bytes());
        assert_eq!(answer(&net).status_code(), Some(505));
    }

    #[test]
    fn options_outside_dialog_gets_200() {
        let mut net = Net::new();
        net.inject(1, &raw("OPTIONS", None, 1, ""));
        let m = answer(&net);
        assert_eq!(m.status_code(), Some(200));
        assert_eq!(m.header(HeaderName::Allow).map(|h| h.value), Some(ALLOW));
        assert_eq!(m.header(HeaderName::Accept).map(|h| h.value), Some(ACCEPT));
        assert!(m.header(HeaderName::Supported).is_some());
        // A retransmission is answered by the same transaction.
        net.inject(1, &raw("OPTIONS", None, 1, ""));
        assert_eq!(net.sent_count(1, "SIP/2.0 200", "OPTIONS"), 2);
        assert_eq!(net.eps[1].transactions_len(), 1);
    }

    #[test]
    fn refusals() {
        let mut net = Net::new();
        let mf0 = String::from_utf8(raw("INVITE", None, 1, ""))
            .unwrap()
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        net.inject(1, mf0.as_bytes());
        assert_eq!(answer(&net).status_code(), Some(483));
        net.inject(1, &raw("INVITE", None, 2, "Require: 100rel, foo\r\n"));
        let m = answer(&net);
        assert_eq!(m.status_code(), Some(420));
        assert_eq!(
            m.header(HeaderName::Unsupported).map(|h| h.value),
            Some("100rel, foo")
        );
        net.inject(1, &raw("REGISTER", None, 3, ""));
        let m = answer(&net);
        assert_eq!(m.status_code(), Some(405));
        assert!(m.header(HeaderName::Allow).is_some());
        net.inject(1, &raw("FROBNICATE", None, 4, ""));
        assert_eq!(answer(&net).status_code(), Some(501));
        assert!(net.take(1).is_empty());
        // A refused INVITE's ACK is absorbed by its transaction.
        net.inject(
            1,
            &raw("ACK", Some("nodlg"), 2, "").replace_branch("INVITE-2"),
        );
        assert_eq!(net.eps[1].counters().acks_unmatched, 0);
    }

    trait ReplaceBranch {
        fn replace_branch(self, b: &str) -> Vec<u8>;
    }
    impl ReplaceBranch for Vec<u8> {
        fn replace_branch(self, b: &str) -> Vec<u8> {
            let s = String::from_utf8(self).unwrap();
            let start = s.find("branch=").unwrap() + "branch=".len();
            let end = start + s[start..].find("\r\n").unwrap();
            format!("{}z9hG4bK-raw-{b}{}", &s[..start], &s[end..]).into_bytes()
        }
    }

    #[test]
    fn full_tables_get_503() {
        let mut net = Net::with(|i, c| {
            if i == 1 {
                c.dialogs_max = 1;
            }
        });
        net.invite(addr(2));
        net.run(Duration::from_millis(50));
        net.incoming();
        let second = net.invite(addr(2));
        net.run(Duration::from_millis(100));
        match net.take(0).as_slice() {
            [Event::Failed { call, status, .. }] => assert_eq!((*call, *status), (second, 503)),
            other => panic!("expected Failed 503, got {other:?}"),
        }
        let resp = net.last_sent(1, "SIP/2.0 503");
        let m = SipMessage::parse(&resp).unwrap();
        assert!(m.header(HeaderName::RetryAfter).is_some());
        assert_eq!(net.eps[1].counters().rejected_busy, 1);
        // The UAC side: no call slot left for a third call.
        let mut one = Net::with(|_, c| c.dialogs_max = 1);
        one.invite(addr(9));
        let now = one.now;
        let p = InviteParams {
            target: addr(9),
            transport: Transport::Udp,
            request_uri: "sip:x@h",
            from: "sip:a@h",
            from_display: None,
            to: "sip:x@h",
            call_id: None,
            sdp: None,
            extra_headers: &[],
        };
        assert_eq!(one.eps[0].invite(now, &p), Err(EndpointError::CallsFull));
    }

    #[test]
    fn unanswered_invite_times_out() {
        let mut net = Net::new();
        let a = net.invite(addr(9));
        net.run(Duration::from_secs(31));
        assert!(net.take(0).is_empty());
        net.run(Duration::from_secs(2));
        assert_eq!(net.take(0), vec![Event::TimedOut { call: a }]);
        // Timer A: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
        assert_eq!(net.sent_count(0, "INVITE ", "INVITE"), 7);
        net.settle();
    }

    #[test]
    fn uas_failure_is_acked() {
        let mut net = Net::new();
        let a = net.invite(addr(2));
        net.run(Duration::from_millis(50));
        let b = net.incoming();
        net.respond(b, 486, None);
        net.run(Duration::from_millis(100));
        match net.take(0).as_slice() {
            [Event::Failed {
                call,
                status,
                reason,
                challenge: None,
            }] => {
                assert_eq!((*call, *status, reason.as_str()), (a, 486, ""));
            }
            other => panic!("expected Failed 486, got {other:?}"),
        }
        assert_eq!(net.sent_count(0, "ACK ", "ACK"), 1);
        assert_eq!(net.eps[1].counters().acks_unmatched, 0);
        net.settle();
    }

    #[test]
    fn reinvite_and_update_in_dialog() {
        let mut net = Net::new();
        let (_, b) = net.connect();
        // Build a re-INVITE as the caller would, from the dialog's values.
        let inv = net.sent[0][0].clone();
        let inv = SipMessage::parse(&inv).unwrap();
        let ok = net.last_sent(1, "SIP/2.0 200");
        let ok = SipMessage::parse(&ok).unwrap();
        let reinvite = |method: &str, cseq: u32, branch: &str| {
            format!(
                "{method} sip:10.0.0.2:5060 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-{branch}\r\n\
                 Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
                 CSeq: {cseq} {method}\r\nContact: <sip:10.0.0.1:5060>\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
                inv.from().raw,
                ok.to().raw,
                inv.call_id(),
                OFFER.len()
            )
            .into_bytes()
            .into_iter()
            .chain(OFFER.iter().copied())
            .collect::<Vec<u8>>()
        };
        net.inject(1, &reinvite("INVITE", 2, "re1"));
        assert_eq!(
            net.take(1),
            vec![Event::Reinvite {
                call: b,
                sdp: Some(OFFER.to_vec())
            }]
        );
        // A second offer while the first is pending: 491.
        net.inject(1, &reinvite("UPDATE", 3, "up0"));
        assert_eq!(answer(&net).status_code(), Some(491));
        net.respond(b, 200, Some(ANSWER));
        let m = answer(&net);
        assert_eq!((m.status_code(), m.cseq().0), (Some(200), 2));
        assert_eq!(m.body(), ANSWER);
        // Lower CSeq than the dialog has seen: 500.
        net.inject(1, &reinvite("UPDATE", 1, "old"));
        assert_eq!(answer(&net).status_code(), Some(500));
        // The ACK stops the 2xx retransmissions.
        net.inject(1, &reinvite("ACK", 2, "ack2"));
        net.run(Duration::from_secs(5));
        assert_eq!(net.sent_count(1, "SIP/2.0 200", "INVITE"), 2);
        net.inject(1, &reinvite("UPDATE", 4, "up1"));
        assert_eq!(
            net.take(1),
            vec![Event::Update {
                call: b,
                sdp: Some(OFFER.to_vec())
            }]
        );
        net.respond(b, 200, Some(ANSWER));
        assert_eq!(answer(&net).status_code(), Some(200));
        assert_eq!(answer(&net).cseq().1, Method::Update);
    }

    #[test]
    fn shard_numbers_read_back() {
        assert_eq!(shard_of_branch("z9hG4bK-3-00ff"), Some(3));
        assert_eq!(shard_of_branch("z9hG4bK00ff"), None);
        assert_eq!(shard_of_call_id("abcd-12@10.0.0.1"), Some(12));
        assert_eq!(shard_of_call_id("abcd@10.0.0.1"), None);
    }

    fn header_of<'a>(m: &'a SipMessage<'_>, name: &str) -> Option<&'a str> {
        m.headers()
            .iter()
            .find(|h| h.raw_name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// A response to `req` with `extra` header lines (each ending CRLF).
    fn resp_to(req: &[u8], status: u16, to_tag: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let req = SipMessage::parse(req).unwrap();
        let mut out = Vec::new();
        let mut w =
            start_response_to(&req, status, reason_for(status), Some(to_tag), &mut out).unwrap();
        for (n, v) in extra {
            w = w.header(n, v).unwrap();
        }
        w.finish(&[]);
        out
    }

    #[test]
    fn uac_reinvite_is_acked_and_answered_once() {
        let mut net = Net::new();
        let (a, b) = net.connect();
        // The first ACK for the re-INVITE's 2xx is lost: the UAS re-sends
        // its 2xx and the UAC re-sends the ACK, reporting the answer once.
        let mut dropped = false;
        net.drop = Box::new(move |i, bytes| {
            let first = i == 0 && !dropped && bytes.starts_with(b"ACK ") && {
                let m = SipMessage::parse(bytes).unwrap();
                m.cseq().0 == 2
            };
            dropped |= first;
            first
        });
        let now = net.now;
        net.eps[0].send_reinvite(now, a, ANSWER).unwrap();
        // One re-INVITE at a time (§14.1).
        assert_eq!(
            net.eps[0].send_reinvite(now, a, ANSWER),
            Err(EndpointError::InvalidState("an INVITE is in progress"))
        );
        net.run(Duration::from_millis(50));
        assert_eq!(
            net.take(1),
            vec![Event::Reinvite {
                call: b,
                sdp: Some(ANSWER.to_vec())
            }]
        );
        let re = SipMessage::parse(&net.last_sent(0, "INVITE ")).map(|m| {
            (
                m.cseq().0,
                m.to().tag().is_some(),
                header_of(&m, "Session-Expires").map(str::to_string),
            )
        });
        assert_eq!(re, Ok((2, true, Some("1800;refresher=uac".to_string()))));
        net.respond(b, 200, Some(OFFER));
        net.run(Duration::from_secs(2));
        assert_eq!(
            net.take(0),
            vec![Event::ReinviteAnswered {
                call: a,
                status: 200,
                sdp: Some(OFFER.to_vec())
            }]
        );
        assert_eq!(net.sent_count(0, "ACK ", "ACK"), 3);
        assert!(net.sent_count(1, "SIP/2.0 200", "INVITE") >= 3);
        assert_eq!(net.take(1), vec![]);
        // The dialog goes on: another re-INVITE, refused with 488, is
        // acknowledged by the transaction.
        let now = net.now;
        net.eps[0].send_reinvite(now, a, ANSWER).unwrap();
        net.run(Duration::from_millis(50));
        net.take(1);
        net.respond(b, 488, None);
        net.run(Duration::from_millis(50));
        assert_eq!(
            net.take(0),
            vec![Event::ReinviteAnswered {
                call: a,
                status: 488,
                sdp: None
            }]
        );
        let ack = net.last_sent(0, "ACK ");
        assert_eq!(SipMessage::parse(&ack).unwrap().cseq().0, 3);
        let now = net.now;
        net.eps[0].send_bye(now, a).unwrap();
        net.settle();
    }

    #[test]
    fn reinvite_glare_gets_491_on_both_sides() {
        let mut net = Net::new();
        let (a, b) = net.connect();
        let now = net.now;
        net.eps[0].send_reinvite(now, a, OFFER).unwrap();
        net.eps[1].send_reinvite(now, b, ANSWER).unwrap();
        net.flush();
        net.run(Duration::from_millis(100));
        assert_eq!(
            net.take(0),
            vec![Event::ReinviteAnswered {
                call: a,
                status: 491,
                sdp: None
            }]
        );
        assert_eq!(
            net.take(1),
            vec![Event::ReinviteAnswered {
                call: b,
                status: 491,
                sdp: None
            }]
        );
        // Both may try again afterwards (RFC 3261 §14.1 back-off is the
        // TU's).
        let now = net.now;
        net.eps[0].send_reinvite(now, a, OFFER).unwrap();
        net.run(Duration::from_millis(50));
        assert!(matches!(net.take(1)[..], [Event::Reinvite { .. }]));
    }

    #[test]
    fn reliable_provisional_is_pracked_once() {
        let mut net = Net::new();
        // Nothing reaches endpoint 1: its part is played by hand.
        net.drop = Box::new(|i, _| i == 0);
        let now = net.now;
        let a = net.eps[0]
            .invite(
                now,
                &InviteParams {
                    target: net.addrs[1],
                    transport: Transport::Udp,
                    request_uri: "sip:bob@10.0.0.2",
                    from: "sip:alice@10.0.0.1",
                    from_display: None,
                    to: "sip:bob@10.0.0.2",
                    call_id: None,
                    sdp: Some(OFFER),
                    extra_headers: &[("Require", "100rel")],
                },
            )
            .unwrap();
        net.flush();
        let inv = net.sent[0][0].clone();
        let m = SipMessage::parse(&inv).unwrap();
        assert_eq!(header_of(&m, "Require"), Some("100rel"));
        assert_eq!(header_of(&m, "Supported"), Some(UAC_SUPPORTED));
        assert_eq!(header_of(&m, "Min-SE"), Some("90"));
        let contact = ("Contact", "<sip:10.0.0.2:5060>");
        let rel = |rseq: &str| {
            resp_to(
                &inv,
                183,
                "t1",
                &[contact, ("Require", "100rel"), ("RSeq", rseq)],
            )
        };
        net.inject(0, &rel("7"));
        assert_eq!(
            net.take(0),
            vec![Event::Progress {
                call: a,
                status: 183,
                sdp: None
            }]
        );
        let prack = net.last_sent(0, "PRACK ");
        let pm = SipMessage::parse(&prack).unwrap();
        assert_eq!(header_of(&pm, "RAck"), Some("7 1 INVITE"));
        assert_eq!(pm.cseq().0, 2);
        assert_eq!(pm.to().tag(), Some("t1"));
        // A retransmission is PRACKed again (same request), not reported.
        net.inject(0, &rel("7"));
        assert_eq!(net.take(0), vec![]);
        assert_eq!(net.sent_count(0, "PRACK ", "PRACK"), 2);
        assert_eq!(net.last_sent(0, "PRACK "), prack);
        // Out of order (a gap) is ignored; the next in order is PRACKed.
        net.inject(0, &rel("9"));
        assert_eq!(net.take(0), vec![]);
        net.inject(0, &rel("8"));
        assert_eq!(net.take(0).len(), 1);
        assert_eq!(net.sent_count(0, "PRACK ", "PRACK"), 3);
        // The PRACK's 200 is absorbed.
        net.inject(0, &resp_to(&prack, 200, "t1", &[]));
        assert_eq!(net.take(0), vec![]);
        // An unreliable 180 is reported without PRACK.
        net.inject(0, &resp_to(&inv, 180, "t1", &[contact]));
        assert_eq!(net.take(0), vec![Event::Ringing { call: a, sdp: None }]);
        assert_eq!(net.sent_count(0, "PRACK ", "PRACK"), 3);
        // The 2xx without Session-Expires: no session timer.
        net.inject(0, &resp_to(&inv, 200, "t1", &[contact]));
        assert!(matches!(net.take(0)[..], [Event::Answered { .. }]));
        assert_eq!(
            net.eps[0].calls[a.0 as usize].as_ref().unwrap().session,
            None
        );
    }

    #[test]
    fn session_timers_from_config_and_off() {
        let sip = crate::config::SipConfig {
            session_expires_s: 600,
            min_se_s: 120,
            ..Default::default()
        };
        let c = EndpointConfig::new(addr(1), 0).with_session_timers(&sip);
        assert_eq!((c.session_expires_s, c.min_se_s), (600, 120));
        // Off: no Session-Expires offered or granted, none refused.
        let mut net = Net::with(|_, c| c.session_expires_s = 0);
        net.connect();
        let inv = SipMessage::parse(&net.sent[0][0]).unwrap();
        assert_eq!(header_of(&inv, "Session-Expires"), None);
        let ok = net.last_sent(1, "SIP/2.0 200");
        assert_eq!(
            header_of(&SipMessage::parse(&ok).unwrap(), "Session-Expires"),
            None
        );
        net.inject(1, &raw("INVITE", None, 1, "Session-Expires: 60\r\n"));
        assert!(matches!(net.take(1)[..], [Event::IncomingCall { .. }]));
    }

    #[test]
    fn short_session_interval_gets_422() {
        let mut net = Net::new();
        net.inject(1, &raw("INVITE", None, 1, "Session-Expires: 60\r\n"));
        let m = answer(&net);
        assert_eq!(m.status_code(), Some(422));
        assert_eq!(header_of(&m, "Min-SE"), Some("90"));
        net.inject(1, &raw("INVITE", None, 2, "Session-Expires: soon\r\n"));
        assert_eq!(answer(&net).status_code(), Some(400));
        assert_eq!(net.take(1), vec![]);
        assert_eq!(net.eps[1].calls_len(), 0);
    }

    #[test]
    fn uas_session_expires_without_refresh() {
        let mut net = Net::new();
        net.inject(
            1,
            &raw(
                "INVITE",
                None,
                1,
                "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\nMin-SE: 100\r\n",
            ),
        );
        let Some(Event::IncomingCall { call: b, .. }) = net.take(1).pop() else {
            panic!("no call");
        };
        net.respond(b, 200, Some(ANSWER));
        let ok = answer(&net);
        assert_eq!(header_of(&ok, "Session-Expires"), Some("120;refresher=uac"));
        assert_eq!(header_of(&ok, "Require"), Some("timer"));
        let tag = ok.to().tag().unwrap().to_string();
        net.inject(1, &raw("ACK", Some(&tag), 1, ""));
        assert_eq!(net.take(1), vec![Event::Acked { call: b }]);
        // A refresh (UPDATE without SDP) at 50 s restarts the interval.
        net.run(Duration::from_secs(50));
        net.inject(
            1,
            &raw(
                "UPDATE",
                Some(&tag),
                2,
                "Supported: timer\r\nSession-Expires: 120;refresher=uac\r\n",
            ),
        );
        assert_eq!(net.take(1), vec![Event::Update { call: b, sdp: None }]);
        net.respond(b, 200, None);
        assert_eq!(
            header_of(&answer(&net), "Session-Expires"),
            Some("120;refresher=uac")
        );
        // 120 - min(32, 40) = 88 s after the refresh, not before.
        net.run(Duration::from_secs(87));
        assert_eq!(net.take(1), vec![]);
        net.run(Duration::from_secs(2));
        assert_eq!(
            net.take(1),
            vec![
                Event::SessionExpired { call: b },
                Event::Ended {
                    call: b,
                    by_remote: false
                }
            ]
        );
        let bye = net.last_sent(1, "BYE ");
        let bye = SipMessage::parse(&bye).unwrap();
        assert_eq!(header_of(&bye, "Reason"), Some(SESSION_EXPIRED_REASON));
    }

    #[test]
    fn uac_refreshes_at_half_the_interval() {
        let mut net = Net::with(|_, c| c.session_expires_s = 100);
        let (a, b) = net.connect();
        let ok = SipMessage::parse(&net.last_sent(1, "SIP/2.0 200"))
            .map(|m| header_of(&m, "Session-Expires").map(str::to_string));
        assert_eq!(ok, Ok(Some("100;refresher=uac".to_string())));
        for _ in 0..3 {
            net.run(Duration::from_secs(50));
            assert_eq!(net.take(1), vec![Event::Update { call: b, sdp: None }]);
            net.respond(b, 200, None);
            net.run(Duration::from_millis(50));
            assert_eq!(net.take(0), vec![]);
        }
        // The UAS's TU stops answering refreshes: the UAS, which counts
        // the interval without the refresh it never answered, ends the
        // session 100 - 32 s after the last refresh, before the UAC's
        // UPDATE times out.
        net.run(Duration::from_secs(50));
        assert_eq!(net.take(1), vec![Event::Update { call: b, sdp: None }]);
        net.run(Duration::from_secs(17));
        assert_eq!(net.take(1), vec![]);
        net.run(Duration::from_secs(2));
        assert_eq!(net.take(1)[0], Event::SessionExpired { call: b });
        assert_eq!(
            net.take(0),
            vec![Event::Ended {
                call: a,
                by_remote: true
            }]
        );
        // The UAS answered the unanswered UPDATE with 487 when it hung
        // up, so no transaction is left behind.
        assert_eq!(net.sent_count(1, "SIP/2.0 487", "UPDATE"), 1);
        net.settle();
    }

    #[test]
    fn outputs_are_bounded() {
        let mut ep = SipEndpoint::new(
            EndpointConfig {
                outputs_max: 4,
                ..EndpointConfig::new(addr(2), 1)
            },
            1,
        );
        let now = Instant::now();
        for i in 0..10 {
            ep.handle_datagram(now, addr(1), &raw("OPTIONS", None, i + 1, ""));
        }
        assert_eq!(ep.outputs_len(), 4);
        assert_eq!(ep.counters().transmits_dropped, 6);
    }

    /// Sends an OPTIONS probe from endpoint 0 to endpoint 1.
    fn probe(net: &mut Net, tag: u64) {
        let now = net.now;
        let target = net.addrs[1];
        net.eps[0]
            .send_options(now, Remote::udp(target), "sip:10.0.0.2:5060", tag)
            .expect("send_options");
        net.flush();
    }

    #[test]
    fn options_probe_answered_200() {
        let mut net = Net::new();
        probe(&mut net, 7);
        net.run(Duration::from_millis(50));
        assert_eq!(
            net.take(0),
            vec![Event::OptionsAnswered {
                tag: 7,
                status: Some(200)
            }]
        );
        assert_eq!(net.take(1), vec![], "the UAS answers OPTIONS itself");
        // The request as RFC 3261 §8.1.1 and §11.1 want it.
        let req = net.last_sent(0, "OPTIONS ");
        let m = SipMessage::parse(&req).unwrap();
        assert_eq!(m.start_line_raw(), "OPTIONS sip:10.0.0.2:5060 SIP/2.0");
        assert_eq!(m.cseq(), (1, Method::Options));
        assert!(m.top_via().branch.unwrap().starts_with("z9hG4bK-0-"));
        assert_eq!(header_of(&m, "Max-Forwards"), Some("70"));
        assert_eq!(header_of(&m, "To"), Some("<sip:10.0.0.2:5060>"));
        assert!(m.from().raw.starts_with("<sip:10.0.0.1:5060>;tag="));
        assert!(m.from().tag().is_some_and(|t| !t.is_empty()));
        assert_eq!(header_of(&m, "Accept"), Some(ACCEPT));
        assert_eq!(header_of(&m, "User-Agent"), Some("Kolokol"));
        assert_eq!(header_of(&m, "Content-Length"), Some("0"));
        assert_eq!(shard_of_call_id(m.call_id()), Some(0));
        assert_eq!(net.eps[0].counters().responses_unmatched, 0);
        assert_eq!(net.eps[0].calls_len(), 0, "a probe takes no call slot");
        // A second probe gets a fresh Call-ID and From tag.
        probe(&mut net, 8);
        net.run(Duration::from_millis(50));
        let req2 = net.last_sent(0, "OPTIONS ");
        let m2 = SipMessage::parse(&req2).unwrap();
        assert_ne!(m.call_id(), m2.call_id());
        assert_ne!(m.from().tag(), m2.from().tag());
        assert_eq!(
            net.take(0),
            vec![Event::OptionsAnswered {
                tag: 8,
                status: Some(200)
            }]
        );
        net.run(Duration::from_secs(10));
        assert_eq!(net.eps[0].transactions_len(), 0, "Timer K ends it");
    }

    #[test]
    fn options_probe_answered_404_is_still_an_answer() {
        let mut net = Net::new();
        net.drop = Box::new(|from, bytes| from == 0 && bytes.starts_with(b"OPTIONS "));
        probe(&mut net, 3);
        let req = net.last_sent(0, "OPTIONS ");
        // 1xx are not reported.
        net.inject(0, &resp_to(&req, 100, "t", &[]));
        assert_eq!(net.take(0), vec![]);
        net.inject(0, &resp_to(&req, 404, "t", &[]));
        assert_eq!(
            net.take(0),
            vec![Event::OptionsAnswered {
                tag: 3,
                status: Some(404)
            }]
        );
        assert_eq!(net.eps[0].counters().responses_unmatched, 0);
    }

    #[test]
    fn options_probe_unanswered_times_out_after_64_t1() {
        let mut net = Net::new();
        net.drop = Box::new(|from, bytes| from == 0 && bytes.starts_with(b"OPTIONS "));
        probe(&mut net, u64::MAX);
        let t1 = TimerConfig::default().t1;
        net.run(64 * t1 - Duration::from_millis(1));
        assert_eq!(net.take(0), vec![]);
        assert!(
            net.sent_count(0, "OPTIONS ", "OPTIONS") > 5,
            "Timer E retransmits"
        );
        net.run(Duration::from_millis(2));
        assert_eq!(
            net.take(0),
            vec![Event::OptionsAnswered {
                tag: u64::MAX,
                status: None
            }]
        );
        net.run(Duration::from_secs(10));
        assert_eq!(net.take(0), vec![]);
        assert_eq!(net.eps[0].transactions_len(), 0);
    }

    #[test]
    fn options_probe_retransmitted_final_reports_once() {
        let mut net = Net::new();
        net.drop = Box::new(|from, bytes| from == 0 && bytes.starts_with(b"OPTIONS "));
        probe(&mut net, 1);
        let req = net.last_sent(0, "OPTIONS ");
        let ok = resp_to(&req, 200, "t", &[]);
        net.inject(0, &ok);
        net.inject(0, &ok);
        net.run(Duration::from_secs(1));
        net.inject(0, &ok);
        // A different final status after the first is a stray too.
        net.inject(0, &resp_to(&req, 503, "t", &[]));
        assert_eq!(
            net.take(0),
            vec![Event::OptionsAnswered {
                tag: 1,
                status: Some(200)
            }]
        );
        assert_eq!(net.eps[0].counters().responses_unmatched, 0);
        // No timeout follows the answer.
        net.run(Duration::from_secs(40));
        assert_eq!(net.take(0), vec![]);
        assert_eq!(net.eps[0].transactions_len(), 0);
    }

    #[test]
    fn options_probe_refusals() {
        let mut ep = SipEndpoint::new(
            EndpointConfig {
                transactions_max: 1,
                ..EndpointConfig::new(addr(1), 0)
            },
            1,
        );
        let now = Instant::now();
        assert!(matches!(
            ep.send_options(now, Remote::udp(addr(2)), "not a uri", 0),
            Err(EndpointError::Build(_))
        ));
        assert!(matches!(
            ep.send_options(now, Remote::udp(addr(2)), "sip:a>b", 0),
            Err(EndpointError::Build(_))
        ));
        ep.send_options(now, Remote::udp(addr(2)), "sip:10.0.0.2", 0)
            .unwrap();
        assert_eq!(
            ep.send_options(now, Remote::udp(addr(2)), "sip:10.0.0.2", 1),
            Err(EndpointError::TransactionsFull)
        );
    }

    /// Over TCP every message names TCP (Via, Contact) and nothing is
    /// retransmitted by the transactions: an INVITE left unanswered for
    /// 3 s goes out once (UDP resends it at 0.5, 1.5 s ...); a whole call
    /// then runs and everything is cleaned up.
    #[test]
    fn call_over_tcp_names_tcp_and_does_not_retransmit() {
        let mut n = Net::new();
        n.transport = Transport::Tcp;
        let a = n.invite(n.addrs[1]);
        n.run(Duration::from_secs(3));
        let b = n.incoming();
        assert_eq!(
            n.sent_count(0, "INVITE", "INVITE"),
            1,
            "INVITE resent over TCP"
        );
        let inv = n.last_sent(0, "INVITE");
        let m = SipMessage::parse(&inv).unwrap();
        assert_eq!(m.top_via().transport, "TCP");
        assert!(m.contact().next().unwrap().raw.contains(";transport=tcp"));
        n.respond(b, 200, Some(ANSWER));
        n.run(Duration::from_millis(50));
        assert!(matches!(n.take(0).as_slice(), [Event::Answered { call, .. }] if *call == a));
        let ok = n.last_sent(1, "SIP/2.0 200");
        let m = SipMessage::parse(&ok).unwrap();
        assert!(m.contact().next().unwrap().raw.contains(";transport=tcp"));
        n.eps[0].send_bye(n.now, a).unwrap();
        n.flush();
        n.run(Duration::from_millis(50));
        let bye = n.last_sent(0, "BYE");
        assert_eq!(SipMessage::parse(&bye).unwrap().top_via().transport, "TCP");
        n.settle();
        assert_eq!(n.sent_count(0, "BYE", "BYE"), 1);
    }
}
