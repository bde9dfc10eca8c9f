//! Policy and anti-fraud (SPEC F-P1..F-P3): whether the control API may
//! place a call, decided before any SIP is sent.
//!
//! [`Policy`] is a sans-IO machine like the rest of the core: the wall
//! clock enters as `now: SystemTime` (UTC days and local do-not-disturb
//! hours need wall time, not [`std::time::Instant`]), nothing here reads a
//! clock, and every table is bounded. It lives on the control plane, one
//! per gateway, behind the API handlers.
//!
//! # Use
//!
//! [`Policy::check`] runs every rule and returns [`Admitted`] (with the
//! normalised number) or the first [`PolicyError`] in this order:
//! request validation (account, number, support line, exemption), allowed
//! and denied prefixes, the blocklist, do-not-disturb, automatic blocks,
//! daily limits, burst detection, table capacity, global CPS. Only
//! [`Policy::commit`] counts the call against the daily, burst and CPS
//! limits, so a call that fails later (no trunk, drain) need not use up a
//! citizen's daily allowance. Commit right after the call is actually
//! queued, in the same turn of the control loop: checks that are not yet
//! committed do not see each other, so the limits can be exceeded by the
//! number of calls checked and not yet committed. [`Policy::admit`] does
//! both at once. After any call, drain [`Policy::poll_event`] to report
//! automatic blocks.
//!
//! # Limits and memory
//!
//! Daily counts run per UTC day (they restart at 00:00 UTC). Accounts and
//! numbers each have a table of at most `policy.accounts_max` /
//! `policy.numbers_max` entries, preallocated. Entries that no longer
//! limit anything (yesterday's counts, expired blocks, calls older than
//! the burst window) are reclaimed when the table is full; live entries
//! are never evicted, since forgetting one would lift its limits. When a
//! table is full of live entries, calls for accounts or numbers it does not
//! hold are refused with [`PolicyError::TableFull`] (`policy_table_full`,
//! HTTP 503, Retry-After until the earliest entry expires; at the latest
//! the next UTC midnight), while subjects already held are served as
//! usual.
//!
//! A wall clock can step backwards. Daily counts belong to the UTC day
//! they were made on, so a step back across midnight starts that day's
//! count afresh; recent-call times in the future count as recent, and the
//! CPS bucket waits at most one interval after a step.
//!
//! Not here: per-trunk CPS and call limits ([`crate::sip::trunk`]), which
//! the SIP layer applies to every call, and persistence: counts and
//! runtime blocks live in memory and start empty after a restart (a
//! [`Policy::reload`] keeps them).

mod dnd;
mod limits;
pub mod number;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::config::PolicyConfig;

pub use dnd::parse_time_of_day;
pub use number::E164;

use dnd::Dnd;
use limits::{Burst, Gcra, Table, DAY_MS};
use number::Prefixes;

/// Most events held for [`Policy::poll_event`]. Events are rare (one per
/// automatic block) and the control loop drains them after every call; a
/// backlog this deep means nobody is draining, and further events are
/// dropped and counted in [`PolicyCounters::events_dropped`].
pub const EVENTS_MAX: usize = 1024;

/// Longest account name accepted, bytes. Account names come from the
/// portal's credentials; this bounds the memory a table entry takes.
pub const ACCOUNT_LEN_MAX: usize = 128;

/// What the call is for (SPEC call flows 1 and 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// Call the citizen, then bridge to a support line.
    ClickToCall,
    /// Voice notification or one-time code.
    Notification,
}

/// One call the control API wants to place.
#[derive(Clone, Copy, Debug)]
pub struct PolicyRequest<'a> {
    /// The portal account asking (printable ASCII, 1..=128 bytes).
    pub account: &'a str,
    /// The citizen's number as given; see [`E164::parse`] for the forms
    /// accepted.
    pub number: &'a str,
    /// Click-to-call or notification.
    pub kind: CallKind,
    /// The support line a click-to-call bridges to; required for
    /// click-to-call, absent for notifications. It is dialled too, so it
    /// passes the destination rules and the blocklist, but it is not
    /// counted against limits.
    pub support_line: Option<&'a str>,
    /// Ask to be exempt from do-not-disturb hours; allowed only for the
    /// kinds in `policy.dnd_exempt_kinds`.
    pub dnd_exempt: bool,
}

/// A request that passed [`Policy::check`]; hand it to [`Policy::commit`]
/// when the call is queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    account: Box<str>,
    number: E164,
    support_line: Option<E164>,
    kind: CallKind,
}

impl Admitted {
    /// The account.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The destination, normalised (`+` and digits).
    pub fn number(&self) -> &E164 {
        &self.number
    }

    /// The support line, normalised.
    pub fn support_line(&self) -> Option<&E164> {
        self.support_line.as_ref()
    }

    /// The kind of call.
    pub fn kind(&self) -> CallKind {
        self.kind
    }
}

/// Why a call was refused. Each variant has a stable [`code`](Self::code)
/// for the API, an [`http_status`](Self::http_status), and where waiting
/// helps a [`retry_after_s`](Self::retry_after_s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The account name is empty, too long or not printable ASCII.
    #[error("invalid account")]
    InvalidAccount,
    /// The number is not E.164 (`+` and 8..=15 digits, no leading 0).
    #[error("invalid number: not E.164 (+ and 8 to 15 digits)")]
    InvalidNumber,
    /// Click-to-call without a valid E.164 support line, or a notification
    /// with one.
    #[error("invalid support line")]
    InvalidSupportLine,
    /// `dnd_exempt` asked for a kind of call `policy.dnd_exempt_kinds`
    /// does not list.
    #[error("this kind of call may not be exempt from do-not-disturb")]
    DndExemptNotAllowed,
    /// The destination is outside the allowed prefixes or inside a denied
    /// one.
    #[error("destination not allowed")]
    DestinationNotAllowed,
    /// The support line is not allowed as a destination, not among
    /// `policy.support_lines`, or blocked.
    #[error("support line not allowed")]
    SupportLineNotAllowed,
    /// The number is on the configured or runtime blocklist.
    #[error("number is blocklisted")]
    Blocklisted,
    /// The destination is inside its do-not-disturb hours.
    #[error("do-not-disturb hours at the destination")]
    DoNotDisturb {
        /// Seconds until the window ends.
        retry_after_s: u32,
    },
    /// The number is automatically blocked after a burst of calls.
    #[error("number blocked after a burst of calls")]
    BurstBlockedNumber {
        /// Seconds until the block ends.
        retry_after_s: u32,
    },
    /// The account is automatically blocked after a burst of calls.
    #[error("account blocked after a burst of calls")]
    BurstBlockedAccount {
        /// Seconds until the block ends.
        retry_after_s: u32,
    },
    /// The account has placed `policy.account_day_calls_max` calls today.
    #[error("account daily call limit reached")]
    AccountDailyLimit {
        /// Seconds until 00:00 UTC.
        retry_after_s: u32,
    },
    /// The number has received `policy.number_day_calls_max` calls today.
    #[error("number daily call limit reached")]
    NumberDailyLimit {
        /// Seconds until 00:00 UTC.
        retry_after_s: u32,
    },
    /// The gateway-wide `policy.cps_max` is reached.
    #[error("global calls-per-second limit reached")]
    GlobalCpsLimit {
        /// Seconds until a call conforms (at least 1).
        retry_after_s: u32,
    },
    /// The account or number table is full of live entries and this
    /// subject is not in it (see the module documentation), or the runtime
    /// blocklist is full.
    #[error("policy table full")]
    TableFull {
        /// Seconds until an entry may be reclaimed.
        retry_after_s: u32,
    },
}

impl PolicyError {
    /// Every code, in [`PolicyError::index`] order.
    pub const CODES: [&'static str; 14] = [
        "invalid_account",
        "invalid_number",
        "invalid_support_line",
        "dnd_exempt_not_allowed",
        "destination_not_allowed",
        "support_line_not_allowed",
        "blocklisted",
        "do_not_disturb",
        "burst_blocked_number",
        "burst_blocked_account",
        "account_daily_limit",
        "number_daily_limit",
        "global_cps_limit",
        "policy_table_full",
    ];

    /// Position in [`PolicyError::CODES`].
    fn index(&self) -> usize {
        match self {
            PolicyError::InvalidAccount => 0,
            PolicyError::InvalidNumber => 1,
            PolicyError::InvalidSupportLine => 2,
            PolicyError::DndExemptNotAllowed => 3,
            PolicyError::DestinationNotAllowed => 4,
            PolicyError::SupportLineNotAllowed => 5,
            PolicyError::Blocklisted => 6,
            PolicyError::DoNotDisturb { .. } => 7,
            PolicyError::BurstBlockedNumber { .. } => 8,
            PolicyError::BurstBlockedAccount { .. } => 9,
            PolicyError::AccountDailyLimit { .. } => 10,
            PolicyError::NumberDailyLimit { .. } => 11,
            PolicyError::GlobalCpsLimit { .. } => 12,
            PolicyError::TableFull { .. } => 13,
        }
    }

    /// The stable machine-readable code, e.g. `"invalid_number"`.
    pub fn code(&self) -> &'static str {
        Self::CODES[self.index()]
    }

    /// The HTTP status the API answers with: 422 for a malformed request,
    /// 403 for a destination that is refused whatever the time, 429 for
    /// limits, bursts and do-not-disturb (the same request succeeds later;
    /// see [`retry_after_s`](Self::retry_after_s)), 503 when the gateway's
    /// own tables are full.
    pub fn http_status(&self) -> u16 {
        match self {
            PolicyError::InvalidAccount
            | PolicyError::InvalidNumber
            | PolicyError::InvalidSupportLine => 422,
            PolicyError::DndExemptNotAllowed
            | PolicyError::DestinationNotAllowed
            | PolicyError::SupportLineNotAllowed
            | PolicyError::Blocklisted => 403,
            PolicyError::DoNotDisturb { .. }
            | PolicyError::BurstBlockedNumber { .. }
            | PolicyError::BurstBlockedAccount { .. }
            | PolicyError::AccountDailyLimit { .. }
            | PolicyError::NumberDailyLimit { .. }
            | PolicyError::GlobalCpsLimit { .. } => 429,
            PolicyError::TableFull { .. } => 503,
        }
    }

    /// Seconds after which the same request may succeed (the HTTP
    /// `Retry-After`); `None` when waiting does not help.
    pub fn retry_after_s(&self) -> Option<u32> {
        match *self {
            PolicyError::DoNotDisturb { retry_after_s }
            | PolicyError::BurstBlockedNumber { retry_after_s }
            | PolicyError::BurstBlockedAccount { retry_after_s }
            | PolicyError::AccountDailyLimit { retry_after_s }
            | PolicyError::NumberDailyLimit { retry_after_s }
            | PolicyError::GlobalCpsLimit { retry_after_s }
            | PolicyError::TableFull { retry_after_s } => Some(retry_after_s),
            _ => None,
        }
    }
}

/// What an automatic block applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSubject {
    /// A destination number.
    Number,
    /// A portal account.
    Account,
}

/// Why a subject was blocked automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockReason {
    /// More than `calls_max` calls within `window_s` seconds.
    Burst {
        /// The configured most calls in the window.
        calls_max: u32,
        /// The window, seconds.
        window_s: u32,
    },
}

/// Something the API reports to the portal.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyEvent {
    /// A number or account was blocked automatically (SPEC F-P3).
    AutoBlocked {
        /// Number or account.
        subject: BlockSubject,
        /// The normalised number or the account name.
        value: String,
        /// When the block ends.
        until: SystemTime,
        /// Why.
        reason: BlockReason,
    },
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyCounters {
    /// Requests checked.
    pub checked: u64,
    /// Requests that passed the check.
    pub admitted: u64,
    /// Calls committed.
    pub committed: u64,
    /// Refusals (by check or commit) per code, in [`PolicyError::CODES`]
    /// order.
    pub refused: [u64; PolicyError::CODES.len()],
    /// Automatic blocks started.
    pub auto_blocks: u64,
    /// Events dropped because nobody drained [`Policy::poll_event`].
    pub events_dropped: u64,
}

impl PolicyCounters {
    /// Refusals with `code` (0 for an unknown code).
    pub fn refused(&self, code: &str) -> u64 {
        PolicyError::CODES
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.refused[i])
    }

    /// `(code, refusals)` for every code.
    pub fn refusals(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        PolicyError::CODES.iter().copied().zip(self.refused)
    }
}

/// The rules that come straight from the configuration.
#[derive(Debug)]
struct Rules {
    allowed: Prefixes,
    denied: Prefixes,
    blocked_prefixes: Prefixes,
    blocked_numbers: HashSet<E164>,
    support_lines: HashSet<E164>,
    dnd: Dnd,
    dnd_exempt: Vec<CallKind>,
    runtime_blocks_max: usize,
    number_burst: Burst,
    account_burst: Burst,
}

impl Rules {
    fn new(cfg: &PolicyConfig) -> Self {
        let numbers = |list: &[String]| list.iter().filter_map(|n| E164::parse(n)).collect();
        let burst = |calls_max, window_s: u32, block_s: u32| Burst {
            calls_max,
            window_ms: u64::from(window_s.max(1)) * 1000,
            block_ms: u64::from(block_s.max(1)) * 1000,
        };
        Rules {
            allowed: Prefixes::new(&cfg.allowed_prefixes),
            denied: Prefixes::new(&cfg.denied_prefixes),
            blocked_prefixes: Prefixes::new(&cfg.blocked_prefixes),
            blocked_numbers: numbers(&cfg.blocked_numbers),
            support_lines: numbers(&cfg.support_lines),
            dnd: Dnd::new(&cfg.dnd),
            dnd_exempt: cfg.dnd_exempt_kinds.clone(),
            runtime_blocks_max: cfg.runtime_blocks_max.max(1),
            number_burst: burst(
                cfg.number_burst_calls_max,
                cfg.number_burst_window_s,
                cfg.number_burst_block_s,
            ),
            account_burst: burst(
                cfg.account_burst_calls_max,
                cfg.account_burst_window_s,
                cfg.account_burst_block_s,
            ),
        }
    }

    /// Allowed and not denied.
    fn destination_allowed(&self, n: &E164) -> bool {
        (self.allowed.is_empty() || self.allowed.matches(n)) && !self.denied.matches(n)
    }
}

/// `now` in milliseconds and nanoseconds since the Unix epoch; times
/// before the epoch are the epoch, times past 2554 saturate.
#[derive(Clone, Copy, Debug)]
struct Now {
    ms: u64,
    ns: u64,
}

impl Now {
    fn new(now: SystemTime) -> Self {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        Now {
            ms: u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            ns: u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// The UTC day, days since the epoch.
    fn day(self) -> u64 {
        self.ms / DAY_MS
    }

    /// Whole seconds (rounded up, at least 1, saturating) until `ms`.
    fn secs_until(self, ms: u64) -> u32 {
        let s = ms.saturating_sub(self.ms).div_ceil(1000).max(1);
        u32::try_from(s).unwrap_or(u32::MAX)
    }

    /// Seconds until the next 00:00 UTC.
    fn secs_to_midnight(self) -> u32 {
        self.secs_until(self.day().saturating_add(1).saturating_mul(DAY_MS))
    }
}

/// The policy machine: rules, counts, blocks and events. See the module
/// documentation.
#[derive(Debug)]
pub struct Policy {
    rules: Rules,
    cps: Gcra,
    accounts: Table<String>,
    numbers: Table<E164>,
    /// Numbers blocked at run time, with the end of each block (ms since
    /// the epoch).
    runtime_blocks: HashMap<E164, u64>,
    events: VecDeque<PolicyEvent>,
    counters: PolicyCounters,
}

impl Policy {
    /// A policy with empty counts. `cfg` should have passed
    /// [`PolicyConfig::validate`]; list entries it would refuse are ignored
    /// and zero table sizes, rates and windows are taken as 1, so an
    /// unvalidated config cannot panic.
    pub fn new(cfg: &PolicyConfig) -> Self {
        let rules = Rules::new(cfg);
        Policy {
            cps: Gcra::new(cfg.cps_max),
            accounts: Table::new(
                cfg.accounts_max.max(1),
                cfg.account_day_calls_max,
                rules.account_burst,
            ),
            numbers: Table::new(
                cfg.numbers_max.max(1),
                cfg.number_day_calls_max,
                rules.number_burst,
            ),
            runtime_blocks: HashMap::with_capacity(rules.runtime_blocks_max),
            events: VecDeque::with_capacity(EVENTS_MAX),
            counters: PolicyCounters::default(),
            rules,
        }
    }

    /// Applies a new configuration (SIGHUP), keeping daily counts, recent
    /// calls, automatic and runtime blocks, the CPS bucket's state, queued
    /// events and counters. Smaller tables than the entries held refuse new
    /// subjects until enough entries expire; nothing is forgotten early.
    pub fn reload(&mut self, cfg: &PolicyConfig) {
        self.rules = Rules::new(cfg);
        self.cps.set_rate(cfg.cps_max);
        self.accounts.reconfigure(
            cfg.accounts_max.max(1),
            cfg.account_day_calls_max,
            self.rules.account_burst,
        );
        self.numbers.reconfigure(
            cfg.numbers_max.max(1),
            cfg.number_day_calls_max,
            self.rules.number_burst,
        );
    }

    /// Checks `req` against every rule at `now`. Counts nothing against
    /// the limits (see [`commit`](Self::commit)), with one exception: an
    /// attempt that would exceed a burst threshold starts the automatic
    /// block, and queues its event, right here.
    pub fn check(
        &mut self,
        now: SystemTime,
        req: &PolicyRequest<'_>,
    ) -> Result<Admitted, PolicyError> {
        self.counters.checked += 1;
        let r = self.evaluate(Now::new(now), req);
        match &r {
            Ok(_) => self.counters.admitted += 1,
            Err(e) => self.counters.refused[e.index()] += 1,
        }
        r
    }

    /// Counts an admitted call against the daily, burst and CPS limits.
    /// Fails only with [`PolicyError::TableFull`] when another commit took
    /// the last free entry since the check; then nothing is counted and the
    /// call must not be placed.
    pub fn commit(&mut self, now: SystemTime, admitted: &Admitted) -> Result<(), PolicyError> {
        let now = Now::new(now);
        let day = now.day();
        let room = self
            .accounts
            .room_for(admitted.account(), now.ms)
            .and_then(|()| self.numbers.room_for(&admitted.number, now.ms));
        // Room for both is checked first so that a refusal counts nothing;
        // with room, neither record can fail.
        let recorded = room
            .and_then(|()| self.accounts.record(admitted.account(), now.ms, day))
            .and_then(|()| self.numbers.record(&admitted.number, now.ms, day));
        if let Err(free_ms) = recorded {
            let e = PolicyError::TableFull {
                retry_after_s: now.secs_until(free_ms),
            };
            self.counters.refused[e.index()] += 1;
            return Err(e);
        }
        self.cps.take(now.ns);
        self.counters.committed += 1;
        Ok(())
    }

    /// [`check`](Self::check) then [`commit`](Self::commit).
    pub fn admit(
        &mut self,
        now: SystemTime,
        req: &PolicyRequest<'_>,
    ) -> Result<Admitted, PolicyError> {
        let a = self.check(now, req)?;
        self.commit(now, &a)?;
        Ok(a)
    }

    /// Blocks `number` until `until` (replacing an earlier runtime block
    /// of it). Fails with [`PolicyError::InvalidNumber`], or with
    /// [`PolicyError::TableFull`] when `policy.runtime_blocks_max` blocks
    /// are active.
    pub fn block_number(
        &mut self,
        now: SystemTime,
        number: &str,
        until: SystemTime,
    ) -> Result<(), PolicyError> {
        let n = E164::parse(number).ok_or(PolicyError::InvalidNumber)?;
        let now = Now::new(now);
        let until_ms = Now::new(until).ms;
        if until_ms <= now.ms {
            self.runtime_blocks.remove(&n);
            return Ok(());
        }
        if self.runtime_blocks.len() >= self.rules.runtime_blocks_max
            && !self.runtime_blocks.contains_key(&n)
        {
            self.runtime_blocks.retain(|_, &mut u| u > now.ms);
            if self.runtime_blocks.len() >= self.rules.runtime_blocks_max {
                let first = self.runtime_blocks.values().min().copied().unwrap_or(0);
                return Err(PolicyError::TableFull {
                    retry_after_s: now.secs_until(first),
                });
            }
        }
        self.runtime_blocks.insert(n, until_ms);
        Ok(())
    }

    /// Lifts a runtime block and an automatic block of `number` (the
    /// configured blocklist stays). Whether a block was active.
    pub fn unblock_number(&mut self, now: SystemTime, number: &str) -> bool {
        let Some(n) = E164::parse(number) else {
            return false;
        };
        let now = Now::new(now);
        let runtime = self.runtime_blocks.remove(&n).is_some_and(|u| u > now.ms);
        let auto = self.numbers.unblock(&n, now.ms);
        runtime || auto
    }

    /// Lifts an automatic block of `account`. Whether one was active.
    pub fn unblock_account(&mut self, now: SystemTime, account: &str) -> bool {
        self.accounts.unblock(account, Now::new(now).ms)
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<PolicyEvent> {
        self.events.pop_front()
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &PolicyCounters {
        &self.counters
    }

    /// Calls committed for `account` on the UTC day of `now`.
    pub fn account_calls_today(&self, now: SystemTime, account: &str) -> u32 {
        self.accounts.calls_on(account, Now::new(now).day())
    }

    /// Calls committed to `number` (in any accepted form) on the UTC day of
    /// `now`.
    pub fn number_calls_today(&self, now: SystemTime, number: &str) -> u32 {
        E164::parse(number).map_or(0, |n| self.numbers.calls_on(&n, Now::new(now).day()))
    }

    /// Accounts and numbers whose counts are held.
    pub fn tracked(&self) -> (usize, usize) {
        (self.accounts.len(), self.numbers.len())
    }

    /// Every rule, in the order the module documentation gives.
    fn evaluate(&mut self, now: Now, req: &PolicyRequest<'_>) -> Result<Admitted, PolicyError> {
        let account = req.account;
        if account.is_empty()
            || account.len() > ACCOUNT_LEN_MAX
            || !account.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(PolicyError::InvalidAccount);
        }
        let number = E164::parse(req.number).ok_or(PolicyError::InvalidNumber)?;
        let support_line = match (req.kind, req.support_line) {
            (CallKind::ClickToCall, Some(s)) => {
                Some(E164::parse(s).ok_or(PolicyError::InvalidSupportLine)?)
            }
            (CallKind::Notification, None) => None,
            (CallKind::ClickToCall, None) | (CallKind::Notification, Some(_)) => {
                return Err(PolicyError::InvalidSupportLine)
            }
        };
        if req.dnd_exempt && !self.rules.dnd_exempt.contains(&req.kind) {
            return Err(PolicyError::DndExemptNotAllowed);
        }
        if !self.rules.destination_allowed(&number) {
            return Err(PolicyError::DestinationNotAllowed);
        }
        if let Some(s) = &support_line {
            let listed =
                self.rules.support_lines.is_empty() || self.rules.support_lines.contains(s);
            if !listed || !self.rules.destination_allowed(s) || self.blocklisted(s, now) {
                return Err(PolicyError::SupportLineNotAllowed);
            }
        }
        if self.blocklisted(&number, now) {
            return Err(PolicyError::Blocklisted);
        }
        if !req.dnd_exempt {
            if let Some(s) = self.rules.dnd.quiet_for(&number, now.ms / 1000) {
                return Err(PolicyError::DoNotDisturb {
                    retry_after_s: u32::try_from(s.max(1)).unwrap_or(u32::MAX),
                });
            }
        }
        if let Some(until) = self.accounts.blocked_until(account, now.ms) {
            return Err(PolicyError::BurstBlockedAccount {
                retry_after_s: now.secs_until(until),
            });
        }
        if let Some(until) = self.numbers.blocked_until(&number, now.ms) {
            return Err(PolicyError::BurstBlockedNumber {
                retry_after_s: now.secs_until(until),
            });
        }
        let day = now.day();
        if self.accounts.day_limit_reached(account, day) {
            return Err(PolicyError::AccountDailyLimit {
                retry_after_s: now.secs_to_midnight(),
            });
        }
        if self.numbers.day_limit_reached(&number, day) {
            return Err(PolicyError::NumberDailyLimit {
                retry_after_s: now.secs_to_midnight(),
            });
        }
        // Both are evaluated so that a call bursting on both blocks both.
        let account_until = self.accounts.trip(account, now.ms);
        let number_until = self.numbers.trip(&number, now.ms);
        if let Some(until) = account_until {
            let reason = burst_reason(&self.rules.account_burst);
            self.auto_blocked(BlockSubject::Account, account.into(), until, reason);
        }
        if let Some(until) = number_until {
            let reason = burst_reason(&self.rules.number_burst);
            self.auto_blocked(BlockSubject::Number, number.to_string(), until, reason);
        }
        if let Some(until) = account_until {
            return Err(PolicyError::BurstBlockedAccount {
                retry_after_s: now.secs_until(until),
            });
        }
        if let Some(until) = number_until {
            return Err(PolicyError::BurstBlockedNumber {
                retry_after_s: now.secs_until(until),
            });
        }
        let room = self
            .accounts
            .room_for(account, now.ms)
            .and_then(|()| self.numbers.room_for(&number, now.ms));
        if let Err(free_ms) = room {
            return Err(PolicyError::TableFull {
                retry_after_s: now.secs_until(free_ms),
            });
        }
        let wait_ns = self.cps.wait_ns(now.ns);
        if wait_ns > 0 {
            let s = wait_ns.div_ceil(1_000_000_000).max(1);
            return Err(PolicyError::GlobalCpsLimit {
                retry_after_s: u32::try_from(s).unwrap_or(u32::MAX),
            });
        }
        Ok(Admitted {
            account: account.into(),
            number,
            support_line,
            kind: req.kind,
        })
    }

    /// Whether `n` is on the configured or an active runtime blocklist.
    fn blocklisted(&self, n: &E164, now: Now) -> bool {
        self.rules.blocked_numbers.contains(n)
            || self.rules.blocked_prefixes.matches(n)
            || self.runtime_blocks.get(n).is_some_and(|&u| u > now.ms)
    }

    /// Queues an [`PolicyEvent::AutoBlocked`], or counts it dropped.
    fn auto_blocked(
        &mut self,
        subject: BlockSubject,
        value: String,
        until_ms: u64,
        reason: BlockReason,
    ) {
        self.counters.auto_blocks += 1;
        if self.events.len() >= EVENTS_MAX {
            self.counters.events_dropped += 1;
            return;
        }
        self.events.push_back(PolicyEvent::AutoBlocked {
            subject,
            value,
            until: system_time(until_ms),
            reason,
        });
        assert!(self.events.len() <= EVENTS_MAX);
    }
}

/// The reason an automatic block under `burst` reports.
fn burst_reason(burst: &Burst) -> BlockReason {
    BlockReason::Burst {
        calls_max: burst.calls_max,
        window_s: u32::try_from(burst.window_ms / 1000).unwrap_or(u32::MAX),
    }
}

/// `ms` since the epoch as a [`SystemTime`]. Every `u64` of milliseconds
/// fits a Unix `SystemTime` (64-bit seconds); elsewhere an unrepresentable
/// time becomes the latest 32-bit second, which still lies far beyond any
/// block.
fn system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(u32::MAX.into()))
}

#[cfg(test)]
mod test;
