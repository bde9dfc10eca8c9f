//! Outbound trunks (SPEC F-S4, F-S5): choosing a trunk for a call, per-trunk
//! and global limits, OPTIONS health with hysteresis, the failover rule,
//! digest state per trunk, and the caller-ID pool.
//!
//! Sans-IO like the rest of [`crate::sip`]: time (`now`) and randomness
//! (`rng`) are arguments; nothing here sends OPTIONS or INVITEs. The shard
//! asks [`TrunkSet::options_due`] which trunks to probe and reports the
//! outcome with [`TrunkSet::handle_options_result`]; it asks
//! [`TrunkSet::select`] for a trunk per attempt, reports each attempt's end
//! with [`TrunkSet::handle_invite_result`] and [`TrunkSet::call_ended`],
//! and drains [`TrunkSet::poll_event`] for metrics.
//!
//! Selection follows RFC 2782 (DNS SRV) ordering without DNS: the lowest
//! `priority` group with an eligible trunk wins, and inside the group a
//! trunk is drawn with probability proportional to its `weight`. A trunk is
//! eligible when it is up, allowed by the route, not yet tried for this
//! call (failover), under `max_calls`, and has a CPS token; a global CPS
//! bucket gates every selection.
//!
//! Limits are per [`TrunkSet`]; with several shards each shard owns one
//! set, so the shell divides `cps`, `max_calls` and the global CPS between
//! shards (see [`TrunkSet::with_global_cps`]). Not here: DNS (NAPTR/SRV)
//! resolution of trunk host names, STIR/SHAKEN Identity headers.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::{CallerIdMode, RouteConfig, Transport, TrunkConfig, TRUNKS_MAX};
use crate::config::{ROUTE_TO_CONTACT_CENTRE, ROUTE_TO_TRUNKS};
use crate::sip::digest::{Authorization, Challenge, Credentials, DigestSession, RequestInfo};

/// Retry-After (seconds) when calls are refused because every eligible
/// trunk is at `max_calls`: a call slot frees when some call ends, which
/// the set cannot predict; a few seconds spreads retries without making
/// callers wait long once capacity returns.
pub const RETRY_AFTER_CALLS_S: u32 = 5;

/// Most queued [`TrunkEvent`]s. Each trunk produces at most one event per
/// health transition, and transitions need several probes, so 4 per trunk
/// is far more than a shell that drains once per loop ever holds; beyond
/// it the oldest is dropped and counted ([`TrunkSet::events_dropped`]).
pub const EVENTS_MAX: usize = 4 * TRUNKS_MAX;

/// Index of a trunk in its [`TrunkSet`] (the order of `[[trunks]]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrunkId(pub u16);

impl TrunkId {
    /// The index into the configured trunk list.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A set of trunks as a bit mask (at most [`TRUNKS_MAX`] trunks), so a
/// route's trunk list costs no allocation per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TrunkMask(u64);

impl TrunkMask {
    /// The first `n` trunks.
    pub fn all(n: usize) -> Self {
        assert!(n <= TRUNKS_MAX);
        if n == TRUNKS_MAX {
            TrunkMask(u64::MAX)
        } else {
            TrunkMask((1u64 << n) - 1)
        }
    }

    /// No trunk.
    pub fn empty() -> Self {
        TrunkMask(0)
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: TrunkId) {
        assert!(id.index() < TRUNKS_MAX);
        self.0 |= 1 << id.index();
    }

    /// Whether `id` is in the set.
    pub fn contains(self, id: TrunkId) -> bool {
        id.index() < TRUNKS_MAX && self.0 & (1 << id.index()) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Why [`TrunkSet::select`] found no trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoTrunkReason {
    /// The route allows no trunk (or none is configured).
    NoTrunks,
    /// Every allowed trunk was already tried for this call.
    AllTried,
    /// Every allowed, untried trunk is down.
    AllDown,
    /// Untried trunks are up but all at `max_calls`.
    CallsLimit,
    /// Untried trunks are up but out of CPS tokens (some may also be at
    /// `max_calls`).
    CpsLimit,
    /// The global CPS bucket is empty.
    GlobalCps,
}

/// No trunk can take the call now; [`NoTrunk::retry_after_s`] says whether
/// this is a load limit (answer 503 with Retry-After) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no trunk: {reason:?}")]
pub struct NoTrunk {
    /// What stopped every candidate.
    pub reason: NoTrunkReason,
    retry_after_s: Option<u32>,
}

impl NoTrunk {
    /// Seconds for the Retry-After of a 503 when the refusal is a limit
    /// (calls or CPS); at least 1. None when waiting would not help
    /// (every trunk down or tried, or none routed): the caller answers
    /// without Retry-After, or with the last trunk's final response.
    pub fn retry_after_s(&self) -> Option<u32> {
        self.retry_after_s
    }

    /// The status the caller answers with when this is the end of the
    /// call: 503 for limits and down trunks, 404 when the route has no
    /// trunk. After [`NoTrunkReason::AllTried`] the caller forwards the
    /// last trunk's response instead; 503 is the fallback.
    pub fn status(&self) -> u16 {
        match self.reason {
            NoTrunkReason::NoTrunks => 404,
            _ => 503,
        }
    }
}

/// A trunk health transition, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrunkEvent {
    /// The trunk answers again and takes calls.
    Up {
        /// Which trunk.
        id: TrunkId,
        /// Its configured name.
        name: String,
    },
    /// The trunk stopped answering and takes no calls.
    Down {
        /// Which trunk.
        id: TrunkId,
        /// Its configured name.
        name: String,
    },
}

/// Whether a failed INVITE attempt moves on to the next trunk (F-S4).
///
/// `None` is a timeout (Timer B or the trunk's `timeout_ms`). Timeouts,
/// 408 and every 5xx (503 included: the trunk is overloaded or down) try
/// the next trunk. Other 4xx are about the call, not the trunk (486 Busy
/// Here, 404, 484 ...) and 6xx are global failures (RFC 3261 §21.6), so
/// they are final and forwarded. 1xx-3xx are not failures.
pub fn should_failover(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(408) => true,
        Some(s) => (500..600).contains(&s),
    }
}

/// Whether an OPTIONS outcome shows the trunk alive: any response except
/// 408 and 5xx (a 404 or 405 still proves a SIP server is there); `None`
/// (timeout, transport error) is a failure.
pub fn options_ok(status: Option<u16>) -> bool {
    match status {
        None | Some(408) => false,
        Some(s) => !(500..600).contains(&s),
    }
}

/// A rate limiter with the semantics of a token bucket of `burst` tokens
/// refilled at `rate` per second, computed as GCRA (ITU-T I.371 virtual
/// scheduling): one deadline instead of a fractional token count, so
/// refills never lose rounding and no float is involved.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Time one token takes to refill.
    interval: Duration,
    /// `(burst - 1) * interval`: how far ahead of `now` the theoretical
    /// arrival time may run.
    tolerance: Duration,
    /// Theoretical arrival time of the next conforming take.
    tat: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub fn new(now: Instant, rate: u32, burst: u32) -> Self {
        assert!(rate > 0 && burst > 0);
        let interval =
            Duration::from_nanos(1_000_000_000 / u64::from(rate)).max(Duration::from_nanos(1));
        TokenBucket {
            interval,
            tolerance: interval * (burst - 1),
            tat: now,
        }
    }

    /// How long until a token is available (zero = now).
    pub fn wait(&self, now: Instant) -> Duration {
        // A token is available when tat - tolerance <= now.
        self.tat
            .checked_sub(self.tolerance)
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// Whether a token is available at `now`.
    pub fn available(&self, now: Instant) -> bool {
        self.wait(now).is_zero()
    }

    /// Takes a token if one is available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if !self.available(now) {
            return false;
        }
        self.tat = self.tat.max(now) + self.interval;
        true
    }
}

/// Health of one trunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Takes calls.
    Up,
    /// Takes no calls until `up_after` OPTIONS succeed in a row.
    Down,
}

/// The authentication header a challenge asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthHeader {
    /// 401 `WWW-Authenticate` is answered with `Authorization`.
    Authorization,
    /// 407 `Proxy-Authenticate` is answered with `Proxy-Authorization`.
    ProxyAuthorization,
}

impl AuthHeader {
    /// The header name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthHeader::Authorization => "Authorization",
            AuthHeader::ProxyAuthorization => "Proxy-Authorization",
        }
    }
}

/// One trunk's live state.
#[derive(Debug)]
struct Trunk {
    cfg: TrunkConfig,
    health: Health,
    /// Consecutive failures while up / successes while down.
    streak: u32,
    calls: u32,
    cps: TokenBucket,
    /// Next OPTIONS; None when health checks are off.
    options_next: Option<Instant>,
    options_in_flight: bool,
    /// The last digest challenge, to pre-authenticate the next request.
    digest: Option<(AuthHeader, DigestSession)>,
}

/// The trunks of one shard, with their limits and health.
#[derive(Debug)]
pub struct TrunkSet {
    trunks: Vec<Trunk>,
    /// Trunk ids sorted by priority (stable: config order within a group).
    by_priority: Vec<TrunkId>,
    global_cps: Option<TokenBucket>,
    events: VecDeque<TrunkEvent>,
    events_dropped: u64,
    /// The latest `now` seen; time never goes backwards.
    last_now: Instant,
}

impl TrunkSet {
    /// All trunks up, health checks due at `now`, CPS buckets full, no
    /// global CPS limit. The configuration has been validated
    /// ([`crate::config::Config::validate`]).
    pub fn new(cfgs: &[TrunkConfig], now: Instant) -> Self {
        assert!(
            cfgs.len() <= TRUNKS_MAX,
            "validated: at most TRUNKS_MAX trunks"
        );
        let trunks: Vec<Trunk> = cfgs
            .iter()
            .map(|c| Trunk {
                cfg: c.clone(),
                health: Health::Up,
                streak: 0,
                calls: 0,
                cps: TokenBucket::new(now, c.cps.max(1), c.cps.max(1)),
                options_next: (c.options_interval_s > 0).then_some(now),
                options_in_flight: false,
                digest: None,
            })
            .collect();
        let mut by_priority: Vec<TrunkId> = (0..trunks.len()).map(|i| TrunkId(i as u16)).collect();
        by_priority.sort_by_key(|id| trunks[id.index()].cfg.priority);
        TrunkSet {
            trunks,
            by_priority,
            global_cps: None,
            events: VecDeque::with_capacity(EVENTS_MAX),
            events_dropped: 0,
            last_now: now,
        }
    }

    /// Adds a global CPS limit (`sip.cps_max`, divided by the shard count)
    /// over all trunks, burst the same size.
    pub fn with_global_cps(mut self, now: Instant, cps: u32) -> Self {
        self.global_cps = Some(TokenBucket::new(now, cps.max(1), cps.max(1)));
        self
    }

    /// Records `now`; a caller's clock never goes backwards (Instant is
    /// monotonic), so an earlier value is a programming error.
    fn advance(&mut self, now: Instant) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
    }

    /// Number of trunks.
    pub fn len(&self) -> usize {
        self.trunks.len()
    }

    /// Whether no trunk is configured.
    pub fn is_empty(&self) -> bool {
        self.trunks.is_empty()
    }

    /// Every trunk.
    pub fn all(&self) -> TrunkMask {
        TrunkMask::all(self.trunks.len())
    }

    /// The trunk called `name`.
    pub fn id_of(&self, name: &str) -> Option<TrunkId> {
        self.trunks
            .iter()
            .position(|t| t.cfg.name == name)
            .map(|i| TrunkId(i as u16))
    }

    /// The configuration of `id`.
    pub fn config(&self, id: TrunkId) -> &TrunkConfig {
        &self.trunks[id.index()].cfg
    }

    /// Health of `id`.
    pub fn health(&self, id: TrunkId) -> Health {
        self.trunks[id.index()].health
    }

    /// Calls in progress on `id`.
    pub fn calls(&self, id: TrunkId) -> u32 {
        self.trunks[id.index()].calls
    }

    /// Picks a trunk for one attempt of a call to a route allowing
    /// `route`, skipping `exclude` (the trunks already tried for this
    /// call). On success a CPS token (trunk and global) is taken and the
    /// call counts against the trunk's `max_calls` until
    /// [`TrunkSet::call_ended`].
    pub fn select(
        &mut self,
        now: Instant,
        rng: &mut impl Rng,
        route: TrunkMask,
        exclude: &[TrunkId],
    ) -> Result<TrunkId, NoTrunk> {
        self.advance(now);
        let mut allowed = false;
        let mut down = false;
        let mut calls_full = false;
        let mut cps_wait: Option<Duration> = None;
        let mut i = 0;
        while i < self.by_priority.len() {
            let prio = self.trunks[self.by_priority[i].index()].cfg.priority;
            let mut end = i;
            while end < self.by_priority.len()
                && self.trunks[self.by_priority[end].index()].cfg.priority == prio
            {
                end += 1;
            }
            // Eligible members of this group: weight sum and which ones.
            let mut eligible = TrunkMask::empty();
            let mut weight_sum: u64 = 0;
            let mut eligible_n: u32 = 0;
            for &id in &self.by_priority[i..end] {
                if !route.contains(id) {
                    continue;
                }
                allowed = true;
                if exclude.contains(&id) {
                    continue;
                }
                let t = &self.trunks[id.index()];
                if t.health == Health::Down {
                    down = true;
                    continue;
                }
                if t.calls >= t.cfg.max_calls {
                    calls_full = true;
                    continue;
                }
                let w = t.cps.wait(now);
                if !w.is_zero() {
                    cps_wait = Some(cps_wait.map_or(w, |c| c.min(w)));
                    continue;
                }
                eligible.insert(id);
                eligible_n += 1;
                weight_sum += u64::from(t.cfg.weight);
            }
            if eligible_n > 0 {
                if let Some(g) = &self.global_cps {
                    let w = g.wait(now);
                    if !w.is_zero() {
                        return Err(NoTrunk {
                            reason: NoTrunkReason::GlobalCps,
                            retry_after_s: Some(ceil_s(w)),
                        });
                    }
                }
                let id = self.draw(
                    rng,
                    &self.by_priority[i..end],
                    eligible,
                    eligible_n,
                    weight_sum,
                );
                let t = &mut self.trunks[id.index()];
                let took = t.cps.try_take(now);
                assert!(took, "eligible means a token is available");
                t.calls += 1;
                if let Some(g) = &mut self.global_cps {
                    let took = g.try_take(now);
                    assert!(took, "checked above");
                }
                return Ok(id);
            }
            i = end;
        }
        let (reason, retry_after_s) = if !allowed {
            (NoTrunkReason::NoTrunks, None)
        } else if let Some(w) = cps_wait {
            (NoTrunkReason::CpsLimit, Some(ceil_s(w)))
        } else if calls_full {
            (NoTrunkReason::CallsLimit, Some(RETRY_AFTER_CALLS_S))
        } else if down {
            (NoTrunkReason::AllDown, None)
        } else {
            (NoTrunkReason::AllTried, None)
        };
        Err(NoTrunk {
            reason,
            retry_after_s,
        })
    }

    /// RFC 2782 weighted draw among the `eligible` members of one group:
    /// zero-weight trunks first, a uniform number in `0..=sum`, the first
    /// trunk whose running weight reaches it. Zero-weight trunks thus get
    /// a small chance beside weighted ones; if all weights are zero the
    /// draw is uniform.
    fn draw(
        &self,
        rng: &mut impl Rng,
        group: &[TrunkId],
        eligible: TrunkMask,
        n: u32,
        sum: u64,
    ) -> TrunkId {
        let members = || group.iter().copied().filter(|&id| eligible.contains(id));
        if sum == 0 {
            let k = rng.gen_range(0..n) as usize;
            // n counts exactly the members, so the k-th exists.
            return members().nth(k).expect("k < n eligible members");
        }
        let weight = |id: TrunkId| u64::from(self.trunks[id.index()].cfg.weight);
        let r = rng.gen_range(0..=sum);
        let mut running = 0;
        let zero_first = members()
            .filter(|&id| weight(id) == 0)
            .chain(members().filter(|&id| weight(id) > 0));
        let mut last = None;
        for id in zero_first {
            running += weight(id);
            last = Some(id);
            if running >= r {
                return id;
            }
        }
        // The running sum ends at `sum` >= r, so the loop returned.
        last.expect("a non-empty group")
    }

    /// Counts a call on `id` that did not come from [`TrunkSet::select`]
    /// (an inbound call from the trunk), so it counts against
    /// `max_calls`. Returns false, counting nothing, when the trunk is
    /// full: the caller answers 503.
    pub fn call_started(&mut self, id: TrunkId) -> bool {
        let t = &mut self.trunks[id.index()];
        if t.calls >= t.cfg.max_calls {
            return false;
        }
        t.calls += 1;
        true
    }

    /// A call (or one attempt of it) on `id` has ended.
    pub fn call_ended(&mut self, id: TrunkId) {
        let t = &mut self.trunks[id.index()];
        assert!(t.calls > 0, "call_ended without a started call");
        t.calls -= 1;
    }

    /// The outcome of an INVITE sent to `id` (`None` = timeout). A timeout
    /// or 408 counts as a health failure; any other response shows the
    /// trunk alive and resets the failure streak. Returns
    /// [`should_failover`] for the status.
    pub fn handle_invite_result(&mut self, now: Instant, id: TrunkId, status: Option<u16>) -> bool {
        let alive = !matches!(status, None | Some(408));
        self.record(now, id, alive, false);
        should_failover(status)
    }

    /// Trunks whose OPTIONS probe is due; each is marked in flight (not
    /// returned again until [`TrunkSet::handle_options_result`]) and its
    /// next probe scheduled one interval from `now`.
    pub fn options_due(&mut self, now: Instant) -> impl Iterator<Item = TrunkId> + '_ {
        self.advance(now);
        self.trunks
            .iter_mut()
            .enumerate()
            .filter_map(move |(i, t)| {
                let due = t.options_next.is_some_and(|at| at <= now) && !t.options_in_flight;
                if !due {
                    return None;
                }
                t.options_in_flight = true;
                t.options_next =
                    Some(now + Duration::from_secs(u64::from(t.cfg.options_interval_s)));
                Some(TrunkId(i as u16))
            })
    }

    /// When the next OPTIONS probe is due, for the shell's timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.trunks
            .iter()
            .filter(|t| !t.options_in_flight)
            .filter_map(|t| t.options_next)
            .min()
    }

    /// The outcome of an OPTIONS probe ([`options_ok`] maps a status).
    /// `down_after` failures in a row take an up trunk down; `up_after`
    /// successes in a row bring a down trunk up.
    pub fn handle_options_result(&mut self, now: Instant, id: TrunkId, ok: bool) {
        self.trunks[id.index()].options_in_flight = false;
        self.record(now, id, ok, true);
    }

    /// Health hysteresis. Without health checks nothing could bring a
    /// trunk back, so INVITE failures then never take it down; a success
    /// from an INVITE never brings a down trunk up (no INVITE goes to a
    /// down trunk; a late answer is not a probe).
    fn record(&mut self, now: Instant, id: TrunkId, ok: bool, probe: bool) {
        self.advance(now);
        let t = &mut self.trunks[id.index()];
        let checks = t.cfg.options_interval_s > 0;
        let transition = match (t.health, ok) {
            (Health::Up, true) => {
                t.streak = 0;
                false
            }
            (Health::Up, false) => {
                if !checks {
                    return;
                }
                t.streak += 1;
                t.streak >= t.cfg.down_after
            }
            (Health::Down, true) if probe => {
                t.streak += 1;
                t.streak >= t.cfg.up_after
            }
            (Health::Down, true) => false,
            (Health::Down, false) => {
                t.streak = 0;
                false
            }
        };
        if !transition {
            return;
        }
        t.streak = 0;
        let name = t.cfg.name.clone();
        let ev = match t.health {
            Health::Up => {
                t.health = Health::Down;
                TrunkEvent::Down { id, name }
            }
            Health::Down => {
                t.health = Health::Up;
                TrunkEvent::Up { id, name }
            }
        };
        if self.events.len() == EVENTS_MAX {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(ev);
    }

    /// The next health transition, oldest first.
    pub fn poll_event(&mut self) -> Option<TrunkEvent> {
        self.events.pop_front()
    }

    /// Events dropped because nobody drained [`TrunkSet::poll_event`].
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Remembers a 401/407 challenge from `id` so that later requests
    /// pre-authenticate (a new challenge replaces the old one and its
    /// nonce count). Returns false, storing nothing, when the trunk has no
    /// credentials or the challenge is for another realm than the
    /// configured `realm`: the caller treats the 401/407 as final.
    pub fn handle_challenge(&mut self, id: TrunkId, status: u16, challenge: Challenge) -> bool {
        let t = &mut self.trunks[id.index()];
        if t.cfg.username.is_none() {
            return false;
        }
        if t.cfg.realm.as_ref().is_some_and(|r| *r != challenge.realm) {
            return false;
        }
        let header = if status == 407 {
            AuthHeader::ProxyAuthorization
        } else {
            AuthHeader::Authorization
        };
        t.digest = Some((header, DigestSession::new(challenge)));
        true
    }

    /// Forgets the stored challenge (the trunk refused credentials made
    /// from it, e.g. a 401 without `stale=true` right after them).
    pub fn clear_challenge(&mut self, id: TrunkId) {
        self.trunks[id.index()].digest = None;
    }

    /// Credentials for a request to `id` from the last challenge, with
    /// the next nonce count and a fresh `cnonce` from `rng`; None when
    /// there is no challenge yet or no credentials.
    pub fn authorize(
        &mut self,
        id: TrunkId,
        rng: &mut impl Rng,
        req: &RequestInfo<'_>,
    ) -> Option<(AuthHeader, Authorization)> {
        let t = &mut self.trunks[id.index()];
        let (header, session) = t.digest.as_mut()?;
        let creds = Credentials {
            username: t.cfg.username.as_deref()?,
            password: t.cfg.password.as_deref()?,
        };
        let mut cnonce = String::with_capacity(16);
        let v: u64 = rng.gen();
        // Writing to a String cannot fail.
        let _ = write!(cnonce, "{v:016x}");
        Some((*header, session.authorize(creds, req, &cnonce)))
    }
}

/// Whole seconds, rounded up, at least 1 (a Retry-After of 0 invites an
/// immediate retry).
fn ceil_s(d: Duration) -> u32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.clamp(1, u64::from(u32::MAX)) as u32
}

/// Where a route sends calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteTarget {
    /// The trunk set, restricted to these trunks.
    Trunks(TrunkMask),
    /// The `[contact_centre]`.
    ContactCentre,
}

/// The `[[routes]]` table: longest prefix of the called number wins.
#[derive(Clone, Debug)]
pub struct Routes {
    /// (prefix without `+`, target), longest prefix first.
    table: Vec<(String, RouteTarget)>,
}

impl Routes {
    /// Builds the table; trunk names resolve against `trunks`. The
    /// configuration has been validated, so every name and target is known.
    pub fn new(routes: &[RouteConfig], trunks: &TrunkSet) -> Self {
        let mut table: Vec<(String, RouteTarget)> = routes
            .iter()
            .map(|r| {
                let prefix = r.prefix.strip_prefix('+').unwrap_or(&r.prefix).to_string();
                let target = match r.to.as_str() {
                    ROUTE_TO_CONTACT_CENTRE => RouteTarget::ContactCentre,
                    to => {
                        assert_eq!(to, ROUTE_TO_TRUNKS, "validated route target");
                        let mut mask = TrunkMask::empty();
                        for name in &r.trunks {
                            let id = trunks.id_of(name).expect("validated trunk name");
                            mask.insert(id);
                        }
                        if r.trunks.is_empty() {
                            mask = trunks.all();
                        }
                        RouteTarget::Trunks(mask)
                    }
                };
                (prefix, target)
            })
            .collect();
        table.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Routes { table }
    }

    /// The route for a called number (a leading `+` is ignored); None when
    /// no prefix matches and there is no `""` route.
    pub fn lookup(&self, called: &str) -> Option<&RouteTarget> {
        let called = called.strip_prefix('+').unwrap_or(called);
        self.table
            .iter()
            .find(|(p, _)| called.starts_with(p.as_str()))
            .map(|(_, t)| t)
    }
}

/// Round-robin over the official numbers (`caller_id.pool`).
#[derive(Clone, Debug)]
pub struct CallerIdPool {
    numbers: Vec<String>,
    next: usize,
}

impl CallerIdPool {
    /// A pool over `numbers` (validated E.164), starting at the first.
    pub fn new(numbers: &[String]) -> Self {
        CallerIdPool {
            numbers: numbers.to_vec(),
            next: 0,
        }
    }

    /// The next number; None when the pool is empty (pass the caller's
    /// identity through).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<&str> {
        if self.numbers.is_empty() {
            return None;
        }
        let i = self.next;
        self.next = (i + 1) % self.numbers.len();
        Some(&self.numbers[i])
    }
}

/// Header values presenting an official number (F-S5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerIdHeaders {
    /// `P-Asserted-Identity` value (RFC 3325), when the mode asks for it.
    pub pai: Option<String>,
    /// `From` value without the tag (the dialog adds `;tag=`), when the
    /// mode asks for it; None leaves From as the B2BUA would write it.
    pub from: Option<String>,
}

/// The P-Asserted-Identity and From values for `number` (E.164 with `+`)
/// toward a trunk whose domain is `host` (host or `host:port` as in the
/// Request-URI): `<sip:+4930...@host;user=phone>` (RFC 3261 §19.1.6).
pub fn caller_id_headers(mode: CallerIdMode, number: &str, host: &str) -> CallerIdHeaders {
    let value = format!("<sip:{number}@{host};user=phone>");
    match mode {
        CallerIdMode::Pai => CallerIdHeaders {
            pai: Some(value),
            from: None,
        },
        CallerIdMode::From => CallerIdHeaders {
            pai: None,
            from: Some(value),
        },
        CallerIdMode::Both => CallerIdHeaders {
            pai: Some(value.clone()),
            from: Some(value),
        },
    }
}

/// The transport parameter for a Request-URI or Via toward a trunk.
pub fn transport_param(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    }
}
