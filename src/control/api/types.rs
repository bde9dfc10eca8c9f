//! The values that cross the boundary between the HTTP layer and the call
//! engine ([`super::CallService`]): requests as the portal posts them, the
//! view of a call it reads back, and the events it is sent.
//!
//! The request types are strict (`deny_unknown_fields`) and
//! [`ClickToCallRequest::validate`] / [`NotificationRequest::validate`]
//! check what serde cannot (lengths, patterns, ranges), so the engine only
//! ever sees well-formed values. Number *policy* (allowed prefixes,
//! blocklists, limits) is the engine's: here a number only has to be
//! E.164-shaped. openapi/kolokol.yaml states the same rules.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize, Serializer};

use super::error::ApiError;
use crate::config::is_e164;

/// Who is calling the API: the verified claims of the bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub` claim.
    pub subject: String,
    /// Scopes from `scope` (space separated) or `scp` (array).
    pub scopes: HashSet<String>,
    /// The `account` claim, if the token has one: such a principal may
    /// only act for that account (the server checks the POSTs, the engine
    /// scopes reads and hang-ups by it).
    pub account: Option<String>,
}

impl Principal {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// Prompt and digit language. The engine picks `config/prompts/<lang>/`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// Russian.
    Ru,
}

/// Longest `account`.
pub const ACCOUNT_LEN_MAX: usize = 64;
/// Longest `purpose`, in characters.
pub const PURPOSE_LEN_MAX: usize = 256;
/// Longest prompt name.
pub const PROMPT_LEN_MAX: usize = 64;
/// Longest one-time code read out (digits).
pub const DIGITS_LEN_MAX: usize = 12;
/// Most repetitions of a notification message.
pub const REPEAT_MAX: u8 = 5;
/// Repetitions when the request does not say.
pub const REPEAT_DEFAULT: u8 = 2;
/// Longest internal support-line number (not E.164, e.g. an extension).
pub const SUPPORT_LINE_LEN_MAX: usize = 15;

/// `POST /v1/calls`: click-to-call (call flow 1, RFC 3725 style third-party
/// call control): call the citizen, play a prompt, dial the support line,
/// bridge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickToCallRequest {
    /// The portal's account the call is made for (limits and CDRs).
    pub account: String,
    /// The citizen's number, E.164.
    pub citizen_number: String,
    /// The support line to bridge to; none = the configured contact centre.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_line: Option<String>,
    /// Free text kept in the CDR (why the portal called).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// Language of the prompt played to the citizen; none = the engine's
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// Official number to present (must be in `caller_id.pool`, which the
    /// engine checks); none = the next one from the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<String>,
}

/// `POST /v1/notifications`: a voice message or one-time code (call
/// flow 2), optionally confirmed by DTMF (1 = confirm, 2 = reject).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    /// The portal's account.
    pub account: String,
    /// The citizen's number, E.164.
    pub number: String,
    /// Language of the prompt and the digits.
    pub language: Language,
    /// A recorded prompt's name (`config/prompts/<lang>/<name>.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The code read out digit by digit (1..=12 digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
    /// How many times the message is played (1..=5).
    #[serde(default = "repeat_default")]
    pub repeat: u8,
    /// Ask for 1 (confirm) or 2 (reject) after the message.
    #[serde(default)]
    pub require_confirmation: bool,
}

fn repeat_default() -> u8 {
    REPEAT_DEFAULT
}

fn bad(detail: String) -> ApiError {
    ApiError::invalid_body(detail)
}

fn check_account(account: &str) -> Result<(), ApiError> {
    let ok = (1..=ACCOUNT_LEN_MAX).contains(&account.len())
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "account: must be 1..={ACCOUNT_LEN_MAX} characters of A-Z a-z 0-9 . _ : -"
        )))
    }
}

fn check_e164(field: &str, n: &str) -> Result<(), ApiError> {
    if is_e164(n) {
        Ok(())
    } else {
        // The policy's code for the same rule (F-P1), so a client sees one
        // code for a bad number whichever layer catches it.
        Err(ApiError::new(
            422,
            "invalid_number",
            "Invalid number",
            format!("{field}: not an E.164 number (+, a non-zero digit, at most 15 digits)"),
        ))
    }
}

impl ClickToCallRequest {
    /// Checks what the schema says beyond types; the error is a 422
    /// `invalid_body` naming the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_account(&self.account)?;
        check_e164("citizen_number", &self.citizen_number)?;
        if let Some(s) = &self.support_line {
            let digits = s.strip_prefix('+').unwrap_or(s);
            let ok = (1..=SUPPORT_LINE_LEN_MAX).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(bad(format!(
                    "support_line: must be an optional + and 1..={SUPPORT_LINE_LEN_MAX} digits"
                )));
            }
        }
        if let Some(p) = &self.purpose {
            if p.chars().count() > PURPOSE_LEN_MAX || p.chars().any(char::is_control) {
                return Err(bad(format!(
                    "purpose: at most {PURPOSE_LEN_MAX} characters, no control characters"
                )));
            }
        }
        if let Some(c) = &self.caller_id {
            check_e164("caller_id", c)?;
        }
        Ok(())
    }
}

impl NotificationRequest {
    /// Checks what the schema says beyond types; the error is a 422
    /// `invalid_body` naming the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        check_account(&self.account)?;
        check_e164("number", &self.number)?;
        if self.prompt.is_none() && self.digits.is_none() {
            return Err(bad("give `prompt`, `digits` or both".into()));
        }
        if let Some(p) = &self.prompt {
            let ok = (1..=PROMPT_LEN_MAX).contains(&p.len())
                && p.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !ok {
                return Err(bad(format!(
                    "prompt: a name of 1..={PROMPT_LEN_MAX} characters a-z 0-9 _ -"
                )));
            }
        }
        if let Some(d) = &self.digits {
            if !(1..=DIGITS_LEN_MAX).contains(&d.len()) || !d.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!("digits: 1..={DIGITS_LEN_MAX} digits 0-9")));
            }
        }
        if !(1..=REPEAT_MAX).contains(&self.repeat) {
            return Err(bad(format!("repeat: must be in 1..={REPEAT_MAX}")));
        }
        Ok(())
    }
}

/// What kind of call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// `POST /v1/calls`.
    ClickToCall,
    /// `POST /v1/notifications`.
    Notification,
}

/// A call's state; the strings are the API's (and the events').
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// Accepted, not dialled yet.
    Queued,
    /// INVITE sent to the citizen.
    Dialing,
    /// The citizen's phone rings (180/183).
    Ringing,
    /// The citizen answered.
    Answered,
    /// Click-to-call: the support line answered and media is bridged.
    Bridged,
    /// Notification: the citizen pressed 1.
    Confirmed,
    /// Notification: the citizen pressed 2.
    Rejected,
    /// Ended normally.
    Completed,
    /// Nobody answered in time.
    NoAnswer,
    /// The citizen's line was busy.
    Busy,
    /// The call failed (trunk, network, SIP error).
    Failed,
    /// Refused by policy or anti-fraud before anything was dialled.
    RejectedByPolicy,
}

impl CallState {
    /// Every state, in the order of the enum.
    pub const ALL: [CallState; 12] = [
        CallState::Queued,
        CallState::Dialing,
        CallState::Ringing,
        CallState::Answered,
        CallState::Bridged,
        CallState::Confirmed,
        CallState::Rejected,
        CallState::Completed,
        CallState::NoAnswer,
        CallState::Busy,
        CallState::Failed,
        CallState::RejectedByPolicy,
    ];

    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Queued => "queued",
            CallState::Dialing => "dialing",
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Bridged => "bridged",
            CallState::Confirmed => "confirmed",
            CallState::Rejected => "rejected",
            CallState::Completed => "completed",
            CallState::NoAnswer => "no-answer",
            CallState::Busy => "busy",
            CallState::Failed => "failed",
            CallState::RejectedByPolicy => "rejected-by-policy",
        }
    }

    /// Whether the call is over (no further state change follows).
    /// `confirmed` and `rejected` are not: `completed` follows the hang-up.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallState::Completed
                | CallState::NoAnswer
                | CallState::Busy
                | CallState::Failed
                | CallState::RejectedByPolicy
        )
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a call ended, from the portal's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallResult {
    /// Notification played to the end (no confirmation asked or given).
    Delivered,
    /// Notification confirmed with 1.
    Confirmed,
    /// Notification rejected with 2.
    Rejected,
    /// Click-to-call bridged and ended normally.
    Completed,
    /// Nobody answered.
    NoAnswer,
    /// Busy.
    Busy,
    /// Failed.
    Failed,
    /// Hung up through `DELETE /v1/calls/{id}` before it could finish.
    Cancelled,
    /// Refused by policy or anti-fraud.
    RejectedByPolicy,
}

/// A UTC instant, serialized as RFC 3339 with milliseconds
/// (`2026-05-01T12:00:00.123Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime {
    /// Milliseconds since 1970-01-01T00:00:00Z.
    pub unix_ms: i64,
}

impl UtcTime {
    /// Now, from the system clock.
    pub fn now() -> UtcTime {
        UtcTime::from_system(SystemTime::now())
    }

    /// From a system time (before 1970 counts negative).
    pub fn from_system(t: SystemTime) -> UtcTime {
        let unix_ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
        };
        UtcTime { unix_ms }
    }

    /// From milliseconds since the Unix epoch.
    pub fn from_unix_ms(unix_ms: i64) -> UtcTime {
        UtcTime { unix_ms }
    }

    /// Whole seconds since the Unix epoch.
    pub fn unix_s(self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }

    /// As a system time.
    pub fn to_system(self) -> SystemTime {
        if self.unix_ms >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.unix_ms as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(self.unix_ms.unsigned_abs())
        }
    }
}

/// Civil date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.unix_ms.rem_euclid(1000);
        let secs = self.unix_ms.div_euclid(1000);
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The portal's view of one call: what `GET /v1/calls/{id}` returns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallView {
    /// Call id (assigned by the engine, unique, URL-safe).
    pub id: String,
    /// Click-to-call or notification.
    pub kind: CallKind,
    /// The account it was made for.
    pub account: String,
    /// Current state.
    pub state: CallState,
    /// The citizen's number.
    pub number: String,
    /// Click-to-call: the support line bridged to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub support_line: Option<String>,
    /// When the request was accepted.
    pub created_at: UtcTime,
    /// Last state change.
    pub updated_at: UtcTime,
    /// When the citizen answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<UtcTime>,
    /// When the call ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<UtcTime>,
    /// Outcome, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<CallResult>,
    /// DTMF digits collected from the citizen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
    /// Final SIP status of the citizen's leg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip_status: Option<u16>,
    /// Q.850 cause (from a Reason header) if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q850: Option<u8>,
    /// Stable error code when the call failed or was refused by policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// One state change of one call, as sent on `GET /v1/events` and to the
/// webhook.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallEvent {
    /// Event id, increasing (the SSE `id:` line and `X-Kolokol-Event-Id`).
    pub id: u64,
    /// The call.
    pub call_id: String,
    /// The call's account.
    pub account: String,
    /// The state entered.
    pub state: CallState,
    /// When.
    pub at: UtcTime,
    /// Anything else the engine reports with it (SIP status, DTMF, the
    /// anti-fraud rule that fired); an object, possibly empty.
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod test {
    use super::*;

    fn c2c() -> ClickToCallRequest {
        ClickToCallRequest {
            account: "acc-1".into(),
            citizen_number: "+79991234567".into(),
            support_line: None,
            purpose: None,
            language: None,
            caller_id: None,
        }
    }

    #[test]
    fn utc_time_is_rfc3339() {
        assert_eq!(
            UtcTime::from_unix_ms(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        // 2000-02-29T23:59:59.999Z (leap day).
        assert_eq!(
            UtcTime::from_unix_ms(951_868_799_999).to_string(),
            "2000-02-29T23:59:59.999Z"
        );
        assert_eq!(
            UtcTime::from_unix_ms(1_777_636_800_123).to_string(),
            "2026-05-01T12:00:00.123Z"
        );
        assert_eq!(
            UtcTime::from_unix_ms(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
        let t = UtcTime::from_unix_ms(1_777_636_800_123);
        assert_eq!(UtcTime::from_system(t.to_system()), t);
        assert_eq!(t.unix_s(), 1_777_636_800);
    }

    #[test]
    fn states_serialize_as_the_api_strings() {
        for s in CallState::ALL {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
        }
        assert!(CallState::RejectedByPolicy.is_terminal() && !CallState::Confirmed.is_terminal());
        assert_eq!(
            serde_json::to_string(&CallKind::ClickToCall).unwrap(),
            "\"click_to_call\""
        );
    }

    #[test]
    fn click_to_call_validation_names_the_field() {
        c2c().validate().unwrap();
        let cases: Vec<(ClickToCallRequest, &str)> = vec![
            (
                ClickToCallRequest {
                    account: "".into(),
                    ..c2c()
                },
                "account",
            ),
            (
                ClickToCallRequest {
                    account: "a b".into(),
                    ..c2c()
                },
                "account",
            ),
            (
                ClickToCallRequest {
                    citizen_number: "89991234567".into(),
                    ..c2c()
                },
                "citizen_number",
            ),
            (
                ClickToCallRequest {
                    support_line: Some("12a".into()),
                    ..c2c()
                },
                "support_line",
            ),
            (
                ClickToCallRequest {
                    purpose: Some("x".repeat(257)),
                    ..c2c()
                },
                "purpose",
            ),
            (
                ClickToCallRequest {
                    caller_id: Some("+0".into()),
                    ..c2c()
                },
                "caller_id",
            ),
        ];
        for (req, field) in cases {
            let e = req.validate().unwrap_err();
            // A malformed number has the policy's code; the rest are bodies.
            let numeric = ["citizen_number", "caller_id", "number"].contains(&field);
            let want = if numeric {
                "invalid_number"
            } else {
                "invalid_body"
            };
            assert_eq!(e.code, want, "{field}");
            assert!(e.detail.starts_with(field), "{field}: {}", e.detail);
        }
        let ok = ClickToCallRequest {
            support_line: Some("800".into()),
            purpose: Some("ваш запрос".into()),
            ..c2c()
        };
        ok.validate().unwrap();
    }

    #[test]
    fn notification_parse_defaults_and_validation() {
        let n: NotificationRequest = serde_json::from_str(
            r#"{"account":"a","number":"+79991234567","language":"ru","digits":"123456"}"#,
        )
        .unwrap();
        assert_eq!(n.repeat, REPEAT_DEFAULT);
        assert!(!n.require_confirmation);
        n.validate().unwrap();
        let e = serde_json::from_str::<NotificationRequest>(
            r#"{"account":"a","number":"+7","language":"ru","digits":"1","extra":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("extra"), "{e}");
        let e = serde_json::from_str::<NotificationRequest>(
            r#"{"account":"a","number":"+7","language":"de","digits":"1"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("de"), "{e}");
        for (patch, field) in [
            (r#""digits":null"#, "give"),
            (r#""digits":"1234567890123""#, "digits"),
            (r#""digits":"12a""#, "digits"),
            (r#""prompt":"Bad Name""#, "prompt"),
            (r#""digits":"1","repeat":0"#, "repeat"),
            (r#""digits":"1","repeat":6"#, "repeat"),
        ] {
            let text = format!(r#"{{"account":"a","number":"+7999","language":"en",{patch}}}"#);
            let n: NotificationRequest = serde_json::from_str(&text).unwrap();
            let e = n.validate().unwrap_err();
            assert!(e.detail.starts_with(field), "{patch}: {}", e.detail);
        }
    }
}
