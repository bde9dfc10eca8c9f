//! The call detail record (F-C1), assembled sans-IO.
//!
//! A shard's B2BUA emits a [`CallRecord`] when a call ends; the engine adds
//! what only it knows (the portal's call id, the kind of call, the account,
//! the portal-facing result and the DTMF answer) in a [`CdrContext`], and
//! [`Cdr::from_call`] turns both into one [`Cdr`]. The B2BUA's times are
//! monotonic [`Instant`]s; they become UTC through a [`ClockAnchor`], an
//! `(Instant, SystemTime)` pair the caller reads once (this module never
//! reads a clock).
//!
//! Numbers are kept in clear here: [`crate::cdr::crypt`] seals them when the
//! store writes the record, so nothing below the store sees ciphertext.
//!
//! Not done here: per-leg quality comes from the relay's counters
//! ([`LegQuality`], every figure optional) once the shard passes them in.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::call::{CallOrigin, CallRecord, Hangup};
use crate::control::api::{CallResult, UtcTime};

/// Longest call id, account, trunk name or DTMF string a record keeps;
/// longer values are cut (at a character boundary) so a row is bounded.
pub const TEXT_LEN_MAX: usize = 128;

/// Longest caller or callee kept (a SIP URI, before encryption).
pub const NUMBER_LEN_MAX: usize = 256;

/// What kind of call a record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CdrKind {
    /// `POST /v1/calls` (call flow 1).
    ClickToCall,
    /// `POST /v1/notifications` (call flow 2).
    Notification,
    /// A citizen called in (call flow 3).
    Inbound,
    /// Media relayed for an external proxy over the ng protocol (flow 4).
    NgRelay,
}

impl CdrKind {
    /// Every kind.
    pub const ALL: [CdrKind; 4] = [
        CdrKind::ClickToCall,
        CdrKind::Notification,
        CdrKind::Inbound,
        CdrKind::NgRelay,
    ];

    /// The API (and database) string.
    pub fn as_str(self) -> &'static str {
        match self {
            CdrKind::ClickToCall => "click-to-call",
            CdrKind::Notification => "notification",
            CdrKind::Inbound => "inbound",
            CdrKind::NgRelay => "ng-relay",
        }
    }
}

/// How a call ended, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CdrStatus {
    /// Answered and ended normally (click-to-call bridged, inbound call).
    Completed,
    /// Notification played to the end.
    Delivered,
    /// Notification confirmed with 1.
    Confirmed,
    /// Notification rejected with 2.
    Rejected,
    /// Nobody answered.
    NoAnswer,
    /// Busy.
    Busy,
    /// Failed (trunk, network, SIP error, refusal by the gateway).
    Failed,
    /// Hung up through the API before it could finish.
    Cancelled,
    /// Refused by policy or anti-fraud.
    RejectedByPolicy,
}

impl CdrStatus {
    /// Every status.
    pub const ALL: [CdrStatus; 9] = [
        CdrStatus::Completed,
        CdrStatus::Delivered,
        CdrStatus::Confirmed,
        CdrStatus::Rejected,
        CdrStatus::NoAnswer,
        CdrStatus::Busy,
        CdrStatus::Failed,
        CdrStatus::Cancelled,
        CdrStatus::RejectedByPolicy,
    ];

    /// The API (and database) string.
    pub fn as_str(self) -> &'static str {
        match self {
            CdrStatus::Completed => "completed",
            CdrStatus::Delivered => "delivered",
            CdrStatus::Confirmed => "confirmed",
            CdrStatus::Rejected => "rejected",
            CdrStatus::NoAnswer => "no-answer",
            CdrStatus::Busy => "busy",
            CdrStatus::Failed => "failed",
            CdrStatus::Cancelled => "cancelled",
            CdrStatus::RejectedByPolicy => "rejected-by-policy",
        }
    }

    /// The status of the portal's result.
    pub fn from_result(r: CallResult) -> CdrStatus {
        match r {
            CallResult::Delivered => CdrStatus::Delivered,
            CallResult::Confirmed => CdrStatus::Confirmed,
            CallResult::Rejected => CdrStatus::Rejected,
            CallResult::Completed => CdrStatus::Completed,
            CallResult::NoAnswer => CdrStatus::NoAnswer,
            CallResult::Busy => CdrStatus::Busy,
            CallResult::Failed => CdrStatus::Failed,
            CallResult::Cancelled => CdrStatus::Cancelled,
            CallResult::RejectedByPolicy => CdrStatus::RejectedByPolicy,
        }
    }

    /// The status of a call the engine has no result for (inbound calls),
    /// from the SIP outcome: answered is completed; 486/600 busy;
    /// 408/480/487 no answer (RFC 3261 §21); anything else failed.
    pub fn from_sip(answered: bool, sip_code: u16) -> CdrStatus {
        if answered {
            return CdrStatus::Completed;
        }
        match sip_code {
            486 | 600 => CdrStatus::Busy,
            408 | 480 | 487 => CdrStatus::NoAnswer,
            _ => CdrStatus::Failed,
        }
    }
}

/// Which side ended the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HangupSide {
    /// The caller (for an originated call: the portal's hang-up).
    Caller,
    /// The callee or its network.
    Callee,
    /// The gateway (refusal, limits, timeouts).
    Gateway,
}

impl HangupSide {
    /// The API (and database) string.
    pub fn as_str(self) -> &'static str {
        match self {
            HangupSide::Caller => "caller",
            HangupSide::Callee => "callee",
            HangupSide::Gateway => "gateway",
        }
    }
}

impl From<Hangup> for HangupSide {
    fn from(h: Hangup) -> HangupSide {
        match h {
            Hangup::Caller => HangupSide::Caller,
            Hangup::Callee => HangupSide::Callee,
            Hangup::Gateway => HangupSide::Gateway,
        }
    }
}

macro_rules! parse_by_str {
    ($t:ty, $what:literal) => {
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<$t, String> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        let all: Vec<&str> = <$t>::ALL.iter().map(|v| v.as_str()).collect();
                        format!(
                            "{} is not a {}: one of {}",
                            shorten(s),
                            $what,
                            all.join(", ")
                        )
                    })
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

impl HangupSide {
    /// Every side.
    pub const ALL: [HangupSide; 3] = [HangupSide::Caller, HangupSide::Callee, HangupSide::Gateway];
}

parse_by_str!(CdrKind, "kind");
parse_by_str!(CdrStatus, "status");
parse_by_str!(HangupSide, "hang-up side");

/// A value quoted for an error message, cut to 64 bytes so a huge input
/// does not make a huge message.
pub(crate) fn shorten(s: &str) -> String {
    format!("{:?}", cut(s, 64))
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Media quality of one leg (F-M4). Every figure is optional: a leg that
/// carried no media, or a flow that does not measure it, leaves it out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegQuality {
    /// RTP packets received on the leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Packets lost (sequence gaps).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Interarrival jitter (RFC 3550 A.8), microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_us: Option<u32>,
    /// Estimated MOS times 100 (e.g. 430 for 4.30), integral so records
    /// compare exactly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mos_x100: Option<u16>,
}

impl LegQuality {
    /// Whether no figure is known.
    pub fn is_empty(&self) -> bool {
        *self == LegQuality::default()
    }
}

/// One call detail record, numbers in clear (the store seals them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cdr {
    /// The portal's call id (or, for inbound calls, A's Call-ID); unique
    /// per store.
    pub call_id: String,
    /// What kind of call.
    pub kind: CdrKind,
    /// The portal account ("" for inbound and ng-relay calls).
    pub account: String,
    /// The calling number or URI.
    pub caller: String,
    /// The called number.
    pub callee: String,
    /// The last trunk tried, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trunk: Option<String>,
    /// When the call attempt began.
    pub created: UtcTime,
    /// First ringing (180/183).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringing: Option<UtcTime>,
    /// Answer (2xx).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered: Option<UtcTime>,
    /// End of the call.
    pub ended: UtcTime,
    /// From `created` to `ended`, milliseconds.
    pub duration_ms: u64,
    /// From `answered` to `ended`, whole seconds rounded up (0 when not
    /// answered): what a carrier bills.
    pub billable_s: u64,
    /// How it ended.
    pub status: CdrStatus,
    /// Final SIP status (200 when answered).
    pub sip_code: u16,
    /// Q.850 cause of the release.
    pub q850_cause: u8,
    /// Who ended it.
    pub hangup: HangupSide,
    /// Quality of leg A (the caller's side; for originated calls the
    /// citizen's leg).
    pub quality_a: LegQuality,
    /// Quality of leg B.
    pub quality_b: LegQuality,
    /// The DTMF answer collected, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
}

/// Maps a monotonic [`Instant`] to UTC: the same moment read from both
/// clocks once, by the caller (the shell), at start or per batch.
#[derive(Clone, Copy, Debug)]
pub struct ClockAnchor {
    /// The monotonic reading.
    pub instant: Instant,
    /// The wall-clock reading taken at the same moment.
    pub system: SystemTime,
}

impl ClockAnchor {
    /// An anchor from a pair of readings.
    pub fn new(instant: Instant, system: SystemTime) -> ClockAnchor {
        ClockAnchor { instant, system }
    }

    /// `t` in UTC (saturating at the ends of `SystemTime`'s range).
    pub fn utc(&self, t: Instant) -> UtcTime {
        let s = if t >= self.instant {
            self.system.checked_add(t - self.instant)
        } else {
            self.system.checked_sub(self.instant - t)
        };
        UtcTime::from_system(s.unwrap_or(self.system))
    }
}

/// What the engine knows of a call that the B2BUA does not.
#[derive(Clone, Debug, Default)]
pub struct CdrContext {
    /// The portal's call id; None: use A's Call-ID (inbound calls), or
    /// `orig-<correlation>` for an originated call with no portal id.
    pub call_id: Option<String>,
    /// The kind; None: inbound for [`CallOrigin::Inbound`], click-to-call
    /// for an originated call.
    pub kind: Option<CdrKind>,
    /// The account; None: the originated call's own, "" for inbound.
    pub account: Option<String>,
    /// The portal's result; None: derived from the SIP outcome.
    pub result: Option<CallResult>,
    /// The DTMF answer collected.
    pub dtmf: Option<String>,
    /// Quality of leg A.
    pub quality_a: LegQuality,
    /// Quality of leg B.
    pub quality_b: LegQuality,
}

fn cut_owned(s: &str, max: usize) -> String {
    cut(s, max).to_string()
}

/// Whole seconds in `d`, rounded up.
fn ceil_s(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Cdr {
    /// The record of a call from the B2BUA's [`CallRecord`], the engine's
    /// [`CdrContext`] and a clock anchor. Text fields longer than
    /// [`TEXT_LEN_MAX`] (numbers: [`NUMBER_LEN_MAX`]) are cut.
    pub fn from_call(r: &CallRecord, ctx: CdrContext, clock: &ClockAnchor) -> Cdr {
        let (default_id, default_kind, default_account) = match &r.origin {
            CallOrigin::Inbound => (r.a_call_id.clone(), CdrKind::Inbound, String::new()),
            CallOrigin::Originated {
                correlation,
                account,
                ..
            } => (
                format!("orig-{correlation}"),
                CdrKind::ClickToCall,
                account.clone(),
            ),
        };
        let call_id = ctx.call_id.unwrap_or(default_id);
        let answered_for = r
            .answered
            .map(|a| r.ended.saturating_duration_since(a))
            .unwrap_or_default();
        let status = match ctx.result {
            Some(res) => CdrStatus::from_result(res),
            None => CdrStatus::from_sip(r.answered.is_some(), r.sip_status),
        };
        Cdr {
            call_id: cut_owned(&call_id, TEXT_LEN_MAX),
            kind: ctx.kind.unwrap_or(default_kind),
            account: cut_owned(
                ctx.account.as_deref().unwrap_or(&default_account),
                TEXT_LEN_MAX,
            ),
            caller: cut_owned(&r.caller, NUMBER_LEN_MAX),
            callee: cut_owned(&r.callee, NUMBER_LEN_MAX),
            trunk: r.trunk.as_deref().map(|t| cut_owned(t, TEXT_LEN_MAX)),
            created: clock.utc(r.created),
            ringing: r.ringing.map(|t| clock.utc(t)),
            answered: r.answered.map(|t| clock.utc(t)),
            ended: clock.utc(r.ended),
            duration_ms: u64::try_from(r.ended.saturating_duration_since(r.created).as_millis())
                .unwrap_or(u64::MAX),
            billable_s: ceil_s(answered_for),
            status,
            sip_code: r.sip_status,
            q850_cause: r.q850_cause,
            hangup: r.hangup.into(),
            quality_a: ctx.quality_a,
            quality_b: ctx.quality_b,
            dtmf: ctx.dtmf.as_deref().map(|d| cut_owned(d, TEXT_LEN_MAX)),
        }
    }

    /// Whether the call was answered.
    pub fn is_answered(&self) -> bool {
        self.answered.is_some()
    }
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;
    use crate::call::OriginationId;

    /// A record for store tests: answered when `answered_s` is set.
    pub(crate) fn sample(
        call_id: &str,
        kind: CdrKind,
        account: &str,
        callee: &str,
        created_ms: i64,
        answered: bool,
    ) -> Cdr {
        Cdr {
            call_id: call_id.into(),
            kind,
            account: account.into(),
            caller: "+4930900100".into(),
            callee: callee.into(),
            trunk: Some("carrier-a".into()),
            created: UtcTime::from_unix_ms(created_ms),
            ringing: Some(UtcTime::from_unix_ms(created_ms + 1_000)),
            answered: answered.then(|| UtcTime::from_unix_ms(created_ms + 3_000)),
            ended: UtcTime::from_unix_ms(created_ms + 63_000),
            duration_ms: 63_000,
            billable_s: if answered { 60 } else { 0 },
            status: if answered {
                CdrStatus::Completed
            } else {
                CdrStatus::NoAnswer
            },
            sip_code: if answered { 200 } else { 480 },
            q850_cause: if answered { 16 } else { 19 },
            hangup: HangupSide::Callee,
            quality_a: LegQuality {
                packets: Some(3000),
                lost: Some(3),
                jitter_us: Some(1500),
                mos_x100: Some(430),
            },
            quality_b: LegQuality::default(),
            dtmf: None,
        }
    }

    fn record(t0: Instant, origin: CallOrigin) -> CallRecord {
        CallRecord {
            bridge: None,
            origin,
            a_call_id: "a-call@host".into(),
            caller: "sip:+4930111@carrier".into(),
            callee: "+4930222".into(),
            trunk: Some("t1".into()),
            attempts: 1,
            trunk_status: Some(200),
            sip_status: 200,
            q850_cause: 16,
            hangup: Hangup::Caller,
            created: t0,
            ringing: Some(t0 + Duration::from_millis(800)),
            answered: Some(t0 + Duration::from_millis(2_500)),
            ended: t0 + Duration::from_millis(12_600),
        }
    }

    #[test]
    fn inbound_record_times_in_utc_and_billable_rounded_up() {
        let t0 = Instant::now();
        let anchor = ClockAnchor::new(
            t0 + Duration::from_secs(1),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let c = Cdr::from_call(
            &record(t0, CallOrigin::Inbound),
            CdrContext::default(),
            &anchor,
        );
        assert_eq!(c.call_id, "a-call@host");
        assert_eq!(c.kind, CdrKind::Inbound);
        assert_eq!(c.account, "");
        assert_eq!(c.created.unix_ms, 1_699_999_999_000);
        assert_eq!(c.ringing.unwrap().unix_ms, 1_699_999_999_800);
        assert_eq!(c.answered.unwrap().unix_ms, 1_700_000_001_500);
        assert_eq!(c.ended.unix_ms, 1_700_000_011_600);
        assert_eq!(c.duration_ms, 12_600);
        // 10.1 s answered bills 11 s.
        assert_eq!(c.billable_s, 11);
        assert_eq!(c.status, CdrStatus::Completed);
        assert_eq!(c.hangup, HangupSide::Caller);
        assert_eq!(c.created.to_string(), "2023-11-14T22:13:19.000Z");
    }

    #[test]
    fn originated_record_takes_the_engines_context() {
        let t0 = Instant::now();
        let anchor = ClockAnchor::new(t0, SystemTime::UNIX_EPOCH);
        let origin = CallOrigin::Originated {
            id: OriginationId::for_test(crate::call::BridgeId::for_test(3)),
            correlation: 42,
            account: "acct-1".into(),
        };
        let mut r = record(t0, origin.clone());
        let c = Cdr::from_call(&r, CdrContext::default(), &anchor);
        assert_eq!(
            (c.call_id.as_str(), c.kind, c.account.as_str()),
            ("orig-42", CdrKind::ClickToCall, "acct-1")
        );
        r.answered = None;
        r.sip_status = 486;
        let ctx = CdrContext {
            call_id: Some("c-9".into()),
            kind: Some(CdrKind::Notification),
            result: None,
            dtmf: Some("1".into()),
            quality_a: LegQuality {
                mos_x100: Some(410),
                ..LegQuality::default()
            },
            ..CdrContext::default()
        };
        let c = Cdr::from_call(&r, ctx.clone(), &anchor);
        assert_eq!(c.call_id, "c-9");
        assert_eq!(c.status, CdrStatus::Busy);
        assert_eq!(c.billable_s, 0);
        assert_eq!(c.dtmf.as_deref(), Some("1"));
        assert_eq!(c.quality_a.mos_x100, Some(410));
        let c = Cdr::from_call(
            &r,
            CdrContext {
                result: Some(CallResult::Confirmed),
                ..ctx
            },
            &anchor,
        );
        assert_eq!(c.status, CdrStatus::Confirmed);
    }

    #[test]
    fn long_fields_are_cut_and_strings_round_trip() {
        let t0 = Instant::now();
        let mut r = record(t0, CallOrigin::Inbound);
        r.a_call_id = "é".repeat(200);
        r.callee = "9".repeat(10_000);
        let c = Cdr::from_call(
            &r,
            CdrContext::default(),
            &ClockAnchor::new(t0, SystemTime::UNIX_EPOCH),
        );
        assert!(c.call_id.len() <= TEXT_LEN_MAX && c.call_id.starts_with('é'));
        assert_eq!(c.callee.len(), NUMBER_LEN_MAX);
        for k in CdrKind::ALL {
            assert_eq!(k.as_str().parse::<CdrKind>(), Ok(k));
        }
        for s in CdrStatus::ALL {
            assert_eq!(s.as_str().parse::<CdrStatus>(), Ok(s));
        }
        let e = "x'; DROP TABLE cdr; --".parse::<CdrStatus>().unwrap_err();
        assert!(e.contains("not a status"), "{e}");
    }
}
