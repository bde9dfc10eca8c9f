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
//! set, and [`TrunkSet::for_shard`] divides `cps`, `max_calls` and the
//! global `sip.cps_max` between shards so their sum is the configured
//! limit. Health is also per shard: each shard probes its trunks itself.
//! Not here: DNS (NAPTR/SRV) resolution of trunk host names, building or
//! sending the OPTIONS/INVITE messages, STIR/SHAKEN Identity headers.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::{CallerIdMode, Config, RouteConfig, Transport, TrunkConfig, TRUNKS_MAX};
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
    /// This shard's share of the global CPS is zero.
    global_closed: bool,
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
                // A zero CPS share (TrunkSet::for_shard) means no calls on
                // this shard: max_calls 0 makes the trunk never eligible,
                // and its bucket (at least 1/s) is never used.
                cfg: TrunkConfig {
                    max_calls: if c.cps == 0 { 0 } else { c.max_calls },
                    ..c.clone()
                },
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
            global_closed: false,
            events: VecDeque::with_capacity(EVENTS_MAX),
            events_dropped: 0,
            last_now: now,
        }
    }

    /// Adds a global CPS limit (`sip.cps_max`, divided by the shard count)
    /// over all trunks, burst the same size. 0 (a shard whose share of a
    /// small limit is nothing) refuses every outbound call with
    /// [`NoTrunkReason::GlobalCps`].
    pub fn with_global_cps(mut self, now: Instant, cps: u32) -> Self {
        self.global_cps = Some(TokenBucket::new(now, cps.max(1), cps.max(1)));
        self.global_closed = cps == 0;
        self
    }

    /// The trunk set of shard `k` of `cfg.shards.count`: every trunk's
    /// `max_calls` and `cps` and the global `sip.cps_max` are divided
    /// between the shards ([`shard_share`]) so that the shards together
    /// never exceed the configured limits. A trunk whose share is zero
    /// takes no calls on this shard ([`NoTrunkReason::CallsLimit`]).
    pub fn for_shard(cfg: &Config, k: usize, now: Instant) -> Self {
        let n = cfg.shards.count;
        assert!(k < n);
        let trunks: Vec<TrunkConfig> = cfg
            .trunks
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.cps = shard_share(t.cps, n, k);
                t.max_calls = shard_share(t.max_calls, n, k);
                t
            })
            .collect();
        TrunkSet::new(&trunks, now).with_global_cps(now, shard_share(cfg.sip.cps_max, n, k))
    }

    /// Takes a new configuration for the same trunks (SIGHUP): addresses,
    /// transports, credentials, priorities, weights, limits and health
    /// check settings change; live state stays (calls in progress, health,
    /// the last digest challenge if the credentials are the same). Adding,
    /// removing or renaming trunks needs a restart: live calls refer to
    /// trunks by position. `new` comes from [`TrunkSet::for_shard`] of the
    /// new configuration.
    pub fn reconfigure(&mut self, new: TrunkSet) -> Result<(), String> {
        let old: Vec<&str> = self.trunks.iter().map(|t| t.cfg.name.as_str()).collect();
        let names: Vec<&str> = new.trunks.iter().map(|t| t.cfg.name.as_str()).collect();
        if old != names {
            return Err(format!(
                "trunks {old:?} -> {names:?}: adding, removing or reordering trunks needs a restart"
            ));
        }
        for (t, n) in self.trunks.iter_mut().zip(new.trunks) {
            let same_creds = t.cfg.username == n.cfg.username
                && t.cfg.password == n.cfg.password
                && t.cfg.realm == n.cfg.realm;
            if !same_creds {
                t.digest = None;
            }
            if t.cfg.options_interval_s != n.cfg.options_interval_s {
                t.options_next = n.options_next;
                t.options_in_flight = false;
            }
            if t.cfg.cps != n.cfg.cps {
                t.cps = n.cps;
            }
            t.cfg = n.cfg;
        }
        self.by_priority = new.by_priority;
        self.global_cps = new.global_cps;
        self.global_closed = new.global_closed;
        Ok(())
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
                if self.global_closed {
                    return Err(NoTrunk {
                        reason: NoTrunkReason::GlobalCps,
                        retry_after_s: Some(RETRY_AFTER_CALLS_S),
                    });
                }
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

    /// Weighted draw among the `eligible` members of one group, RFC 2782
    /// style. RFC 2782 draws in `0..=sum` with zero-weight entries first,
    /// which gives zero-weight entries a small chance but also biases the
    /// first weighted entry by one unit; here weighted trunks get exactly
    /// `weight / (sum + z)` and the zero-weight ones together `z / (sum +
    /// z)`, z being 1 if any is eligible and 0 otherwise. All zero: uniform.
    fn draw(
        &self,
        rng: &mut impl Rng,
        group: &[TrunkId],
        eligible: TrunkMask,
        n: u32,
        sum: u64,
    ) -> TrunkId {
        let members = || {
            group
                .iter()
                .copied()
                .filter(move |&id| eligible.contains(id))
        };
        let weight = |id: TrunkId| u64::from(self.trunks[id.index()].cfg.weight);
        let zeros = members().filter(|&id| weight(id) == 0).count();
        if sum == 0 {
            let k = rng.gen_range(0..n) as usize;
            // n counts exactly the members, so the k-th exists.
            return members().nth(k).expect("k < n eligible members");
        }
        let r = rng.gen_range(0..sum + u64::from(zeros > 0));
        if r == sum {
            let k = rng.gen_range(0..zeros);
            // zeros > 0 here, and it counts exactly the zero-weight members.
            return members()
                .filter(|&id| weight(id) == 0)
                .nth(k)
                .expect("k < zero-weight members");
        }
        let mut running = 0;
        for id in members() {
            running += weight(id);
            if running > r {
                return id;
            }
        }
        unreachable!("the running sum ends at sum > r")
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
    /// next probe scheduled one interval from `now`. The iterator is lazy:
    /// trunks it has not yielded when dropped stay due.
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

    /// The probe [`TrunkSet::options_due`] returned for `id` was not sent
    /// (no usable address to send it to): `id` is no longer in flight and
    /// its health is unchanged; the next probe stays scheduled one interval
    /// after the skipped one.
    pub fn options_skipped(&mut self, id: TrunkId) {
        self.trunks[id.index()].options_in_flight = false;
    }

    /// Whether a probe of `id` is in flight (returned by
    /// [`TrunkSet::options_due`], no result yet).
    pub fn options_in_flight(&self, id: TrunkId) -> bool {
        self.trunks[id.index()].options_in_flight
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

/// Shard `k`'s share of a limit `total` split over `shards`: `total /
/// shards`, plus one for the first `total % shards` shards, so the shares
/// add up to exactly `total` (and some are zero when `total < shards`).
pub fn shard_share(total: u32, shards: usize, k: usize) -> u32 {
    assert!(k < shards);
    let n = u32::try_from(shards).unwrap_or(u32::MAX);
    let k = k as u32;
    total / n + u32::from(k < total % n)
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

#[cfg(test)]
mod test {
    use super::*;
    use crate::sip::digest::{parse_challenge, verify};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn trunk(name: &str, priority: u16, weight: u16) -> TrunkConfig {
        TrunkConfig {
            name: name.into(),
            address: "127.0.0.1:5090".into(),
            priority,
            weight,
            max_calls: 1_000_000,
            cps: 1_000_000,
            ..TrunkConfig::default()
        }
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x6b6f6c6f6b6f6c)
    }

    /// Draws `n` times (ending each call at once) and counts per trunk.
    fn counts(set: &mut TrunkSet, now: Instant, n: usize, exclude: &[TrunkId]) -> Vec<u64> {
        let mut rng = rng();
        let mut c = vec![0u64; set.len()];
        for _ in 0..n {
            let id = set.select(now, &mut rng, set.all(), exclude).unwrap();
            set.call_ended(id);
            c[id.index()] += 1;
        }
        c
    }

    /// Pearson chi-square of observed counts against expected shares.
    fn chi_square(observed: &[u64], shares: &[f64]) -> f64 {
        let n: u64 = observed.iter().sum();
        let total: f64 = shares.iter().sum();
        observed
            .iter()
            .zip(shares)
            .map(|(&o, &s)| {
                let e = n as f64 * s / total;
                (o as f64 - e).powi(2) / e
            })
            .sum()
    }

    #[test]
    fn lowest_priority_group_then_weight() {
        let now = Instant::now();
        let cfgs = [
            trunk("a", 1, 10),
            trunk("b", 1, 30),
            trunk("c", 2, 100),
            trunk("d", 1, 60),
        ];
        let mut set = TrunkSet::new(&cfgs, now);
        let c = counts(&mut set, now, 20_000, &[]);
        assert_eq!(
            c[2], 0,
            "priority 2 is never used while priority 1 is eligible"
        );
        // 2 degrees of freedom: 13.8 is the p = 0.001 critical value.
        let x2 = chi_square(&[c[0], c[1], c[3]], &[10.0, 30.0, 60.0]);
        assert!(x2 < 13.8, "chi-square {x2} for {c:?}");
    }

    #[test]
    fn zero_weights() {
        let now = Instant::now();
        // All zero: uniform.
        let mut set = TrunkSet::new(&[trunk("a", 1, 0), trunk("b", 1, 0)], now);
        let c = counts(&mut set, now, 10_000, &[]);
        assert!(chi_square(&c, &[1.0, 1.0]) < 10.8, "{c:?}");
        // Beside weight 9, a zero-weight trunk gets 1 in 10.
        let mut set = TrunkSet::new(&[trunk("a", 1, 0), trunk("b", 1, 9)], now);
        let c = counts(&mut set, now, 10_000, &[]);
        assert!(chi_square(&c, &[1.0, 9.0]) < 10.8, "{c:?}");
        // A lone zero-weight trunk is simply used.
        let mut set = TrunkSet::new(&[trunk("a", 1, 0)], now);
        assert_eq!(counts(&mut set, now, 10, &[]), [10]);
    }

    #[test]
    fn failover_excludes_tried_trunks() {
        let now = Instant::now();
        let cfgs = [trunk("a", 1, 50), trunk("b", 1, 50), trunk("c", 2, 1)];
        let mut set = TrunkSet::new(&cfgs, now);
        let (a, b, c) = (TrunkId(0), TrunkId(1), TrunkId(2));
        assert_eq!(counts(&mut set, now, 100, &[a]), [0, 100, 0]);
        assert_eq!(counts(&mut set, now, 100, &[a, b]), [0, 0, 100]);
        let e = set
            .select(now, &mut rng(), set.all(), &[a, b, c])
            .unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::AllTried);
        assert_eq!(e.retry_after_s(), None);
        assert_eq!(e.status(), 503);
        // A route restricted to c uses only c; an empty route has none.
        let mut only_c = TrunkMask::empty();
        only_c.insert(c);
        assert_eq!(set.select(now, &mut rng(), only_c, &[]), Ok(c));
        let e = set
            .select(now, &mut rng(), TrunkMask::empty(), &[])
            .unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::NoTrunks);
        assert_eq!(e.status(), 404);
        // No trunks at all.
        let mut none = TrunkSet::new(&[], now);
        let e = none.select(now, &mut rng(), none.all(), &[]).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::NoTrunks);
    }

    #[test]
    fn max_calls_limit_and_spill_to_next_priority() {
        let now = Instant::now();
        let mut a = trunk("a", 1, 1);
        a.max_calls = 2;
        let mut set = TrunkSet::new(&[a.clone()], now);
        let mut r = rng();
        let id = TrunkId(0);
        assert_eq!(set.select(now, &mut r, set.all(), &[]), Ok(id));
        assert_eq!(set.select(now, &mut r, set.all(), &[]), Ok(id));
        assert_eq!(set.calls(id), 2);
        let e = set.select(now, &mut r, set.all(), &[]).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::CallsLimit);
        assert_eq!(e.retry_after_s(), Some(RETRY_AFTER_CALLS_S));
        assert!(
            !set.call_started(id),
            "inbound calls count against the same limit"
        );
        set.call_ended(id);
        assert_eq!(set.select(now, &mut r, set.all(), &[]), Ok(id));
        set.call_ended(id);
        assert!(set.call_started(id));

        // A full priority-1 trunk spills to priority 2.
        let mut set = TrunkSet::new(&[a, trunk("b", 2, 1)], now);
        let picks: Vec<_> = (0..4)
            .map(|_| set.select(now, &mut r, set.all(), &[]).unwrap().0)
            .collect();
        assert_eq!(picks, [0, 0, 1, 1]);
    }

    #[test]
    fn cps_token_bucket_with_virtual_time() {
        let t0 = Instant::now();
        let mut a = trunk("a", 1, 1);
        a.cps = 2;
        let mut set = TrunkSet::new(&[a], t0);
        let mut r = rng();
        let mut go = |set: &mut TrunkSet, now| {
            let res = set.select(now, &mut r, set.all(), &[]);
            if let Ok(id) = res {
                set.call_ended(id);
            }
            res
        };
        // Burst of 2, then refused with Retry-After 1 s (next token 0.5 s).
        assert!(go(&mut set, t0).is_ok());
        assert!(go(&mut set, t0).is_ok());
        let e = go(&mut set, t0).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::CpsLimit);
        assert_eq!(e.retry_after_s(), Some(1));
        assert!(go(&mut set, t0 + Duration::from_millis(499)).is_err());
        assert!(go(&mut set, t0 + Duration::from_millis(500)).is_ok());
        // Trying every millisecond for 10 s admits 2 per second.
        let mut admitted = 0;
        for ms in 501..=10_500 {
            if go(&mut set, t0 + Duration::from_millis(ms)).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 20);
        // An idle bucket refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(100);
        assert!(go(&mut set, later).is_ok());
        assert!(go(&mut set, later).is_ok());
        assert!(go(&mut set, later).is_err());
    }

    #[test]
    fn cps_limited_trunk_spills_and_limits_outrank_down() {
        let now = Instant::now();
        let mut a = trunk("a", 1, 1);
        a.cps = 1;
        let mut b = trunk("b", 2, 1);
        b.down_after = 1;
        let mut set = TrunkSet::new(&[a, b], now);
        let mut r = rng();
        assert_eq!(set.select(now, &mut r, set.all(), &[]), Ok(TrunkId(0)));
        assert_eq!(set.select(now, &mut r, set.all(), &[]), Ok(TrunkId(1)));
        set.handle_options_result(now, TrunkId(1), false);
        assert_eq!(set.health(TrunkId(1)), Health::Down);
        // a is out of tokens, b is down: the answer is the limit (503 +
        // Retry-After), since waiting helps.
        let e = set.select(now, &mut r, set.all(), &[]).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::CpsLimit);
        assert_eq!(e.retry_after_s(), Some(1));
    }

    #[test]
    fn global_cps() {
        let now = Instant::now();
        let mut set =
            TrunkSet::new(&[trunk("a", 1, 1), trunk("b", 1, 1)], now).with_global_cps(now, 3);
        let mut r = rng();
        for _ in 0..3 {
            set.select(now, &mut r, set.all(), &[]).unwrap();
        }
        let e = set.select(now, &mut r, set.all(), &[]).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::GlobalCps);
        assert_eq!(e.retry_after_s(), Some(1));
        let later = now + Duration::from_millis(334);
        assert!(set.select(later, &mut r, set.all(), &[]).is_ok());
    }

    #[test]
    fn token_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10, 3);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert_eq!(b.wait(t0), Duration::from_millis(100));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert_eq!(ceil_s(Duration::from_millis(1)), 1);
        assert_eq!(ceil_s(Duration::ZERO), 1);
        assert_eq!(ceil_s(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn health_hysteresis_and_events() {
        let t0 = Instant::now();
        let mut a = trunk("a", 1, 1);
        a.options_interval_s = 10;
        let mut set = TrunkSet::new(&[a], t0);
        let id = TrunkId(0);
        let mut r = rng();
        // Two failures: still up. A success resets the streak.
        set.handle_options_result(t0, id, false);
        set.handle_options_result(t0, id, false);
        set.handle_options_result(t0, id, true);
        set.handle_options_result(t0, id, false);
        set.handle_options_result(t0, id, false);
        assert_eq!(set.health(id), Health::Up);
        assert_eq!(set.poll_event(), None);
        // The third failure in a row is an INVITE timeout: down.
        assert!(set.handle_invite_result(t0, id, None));
        assert_eq!(set.health(id), Health::Down);
        assert_eq!(
            set.poll_event(),
            Some(TrunkEvent::Down {
                id,
                name: "a".into()
            })
        );
        let e = set.select(t0, &mut r, set.all(), &[]).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::AllDown);
        assert_eq!(e.retry_after_s(), None);
        // Down: one success, a failure (resets), then two successes: up.
        set.handle_options_result(t0, id, true);
        set.handle_options_result(t0, id, false);
        set.handle_options_result(t0, id, true);
        // A late INVITE answer is not a probe.
        set.handle_invite_result(t0, id, Some(200));
        assert_eq!(set.health(id), Health::Down);
        set.handle_options_result(t0, id, true);
        assert_eq!(set.health(id), Health::Up);
        assert_eq!(
            set.poll_event(),
            Some(TrunkEvent::Up {
                id,
                name: "a".into()
            })
        );
        assert_eq!(set.poll_event(), None);
        assert!(set.select(t0, &mut r, set.all(), &[]).is_ok());
        // 408 counts as a failure, 486 is an answer that resets the streak.
        assert!(set.handle_invite_result(t0, id, Some(408)));
        assert!(set.handle_invite_result(t0, id, Some(408)));
        assert!(!set.handle_invite_result(t0, id, Some(486)));
        assert!(set.handle_invite_result(t0, id, Some(408)));
        assert_eq!(set.health(id), Health::Up);
    }

    #[test]
    fn without_health_checks_a_trunk_stays_up() {
        let t0 = Instant::now();
        let mut a = trunk("a", 1, 1);
        a.options_interval_s = 0;
        let mut set = TrunkSet::new(&[a], t0);
        for _ in 0..10 {
            set.handle_invite_result(t0, TrunkId(0), None);
        }
        assert_eq!(set.health(TrunkId(0)), Health::Up);
        assert_eq!(set.options_due(t0).count(), 0);
        assert_eq!(set.poll_timeout(), None);
    }

    #[test]
    fn options_schedule() {
        let t0 = Instant::now();
        let mut a = trunk("a", 1, 1);
        a.options_interval_s = 30;
        let mut b = trunk("b", 1, 1);
        b.options_interval_s = 0;
        let mut c = trunk("c", 1, 1);
        c.options_interval_s = 5;
        let mut set = TrunkSet::new(&[a, b, c], t0);
        assert_eq!(set.poll_timeout(), Some(t0));
        let due: Vec<_> = set.options_due(t0).collect();
        assert_eq!(due, [TrunkId(0), TrunkId(2)]);
        // In flight: not due again, and no timer for them.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(set.options_due(t1).count(), 0);
        assert_eq!(set.poll_timeout(), None);
        set.handle_options_result(t1, TrunkId(2), true);
        // The next probe is one interval after the last was sent.
        assert_eq!(set.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(set.options_due(t1).count(), 0);
        let t2 = t0 + Duration::from_secs(5);
        assert_eq!(set.options_due(t2).collect::<Vec<_>>(), [TrunkId(2)]);
        set.handle_options_result(t2, TrunkId(0), true);
        set.handle_options_result(t2, TrunkId(2), true);
        assert_eq!(set.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        // A skipped probe changes no health and keeps the schedule.
        let t3 = t0 + Duration::from_secs(10);
        assert_eq!(set.options_due(t3).collect::<Vec<_>>(), [TrunkId(2)]);
        assert!(set.options_in_flight(TrunkId(2)));
        set.options_skipped(TrunkId(2));
        assert!(!set.options_in_flight(TrunkId(2)));
        assert_eq!(set.health(TrunkId(2)), Health::Up);
        assert_eq!(set.poll_timeout(), Some(t0 + Duration::from_secs(15)));
    }

    #[test]
    fn failover_table() {
        let cases: &[(Option<u16>, bool)] = &[
            (None, true),
            (Some(408), true),
            (Some(500), true),
            (Some(502), true),
            (Some(503), true),
            (Some(504), true),
            (Some(599), true),
            (Some(400), false),
            (Some(403), false),
            (Some(404), false),
            (Some(480), false),
            (Some(484), false),
            (Some(486), false),
            (Some(487), false),
            (Some(488), false),
            (Some(600), false),
            (Some(603), false),
            (Some(604), false),
            (Some(200), false),
            (Some(180), false),
            (Some(302), false),
        ];
        for &(status, want) in cases {
            assert_eq!(should_failover(status), want, "{status:?}");
        }
        assert!(!options_ok(None));
        assert!(!options_ok(Some(408)));
        assert!(!options_ok(Some(503)));
        assert!(options_ok(Some(200)));
        assert!(options_ok(Some(405)));
        assert!(options_ok(Some(404)));
    }

    #[test]
    fn caller_id_rotation_and_headers() {
        let mut pool = CallerIdPool::new(&["+491".into(), "+492".into(), "+493".into()]);
        let seq: Vec<String> = (0..7).map(|_| pool.next().unwrap().to_string()).collect();
        assert_eq!(
            seq,
            ["+491", "+492", "+493", "+491", "+492", "+493", "+491"]
        );
        assert_eq!(CallerIdPool::new(&[]).next(), None);

        let v = "<sip:+491@carrier.example;user=phone>".to_string();
        let h = caller_id_headers(CallerIdMode::Pai, "+491", "carrier.example");
        assert_eq!((h.pai.as_ref(), h.from.as_ref()), (Some(&v), None));
        let h = caller_id_headers(CallerIdMode::From, "+491", "carrier.example");
        assert_eq!((h.pai.as_ref(), h.from.as_ref()), (None, Some(&v)));
        let h = caller_id_headers(CallerIdMode::Both, "+491", "carrier.example");
        assert_eq!((h.pai.as_ref(), h.from.as_ref()), (Some(&v), Some(&v)));
    }

    #[test]
    fn routes_longest_prefix() {
        let now = Instant::now();
        let set = TrunkSet::new(&[trunk("a", 1, 1), trunk("b", 1, 1)], now);
        let route = |prefix: &str, to: &str, trunks: &[&str]| RouteConfig {
            prefix: prefix.into(),
            to: to.into(),
            trunks: trunks.iter().map(|s| s.to_string()).collect(),
        };
        let routes = Routes::new(
            &[
                route("", "trunks", &[]),
                route("+49", "trunks", &["b"]),
                route("49800", "contact-centre", &[]),
            ],
            &set,
        );
        let mut only_b = TrunkMask::empty();
        only_b.insert(TrunkId(1));
        assert_eq!(
            routes.lookup("+4930123"),
            Some(&RouteTarget::Trunks(only_b))
        );
        assert_eq!(routes.lookup("4930123"), Some(&RouteTarget::Trunks(only_b)));
        assert_eq!(
            routes.lookup("+49800123"),
            Some(&RouteTarget::ContactCentre)
        );
        assert_eq!(
            routes.lookup("+1555"),
            Some(&RouteTarget::Trunks(set.all()))
        );
        let routes = Routes::new(&[route("+49", "trunks", &[])], &set);
        assert_eq!(routes.lookup("+1555"), None);
        assert_eq!(set.id_of("b"), Some(TrunkId(1)));
        assert_eq!(set.id_of("x"), None);
    }

    #[test]
    fn shard_shares_add_up() {
        for total in [0, 1, 2, 3, 7, 50, 1000] {
            for shards in 1..=5 {
                let sum: u32 = (0..shards).map(|k| shard_share(total, shards, k)).sum();
                assert_eq!(sum, total, "{total} over {shards}");
            }
        }
        assert_eq!(shard_share(3, 2, 0), 2);
        assert_eq!(shard_share(3, 2, 1), 1);
    }

    #[test]
    fn for_shard_divides_limits() {
        let now = Instant::now();
        let text = "[shards]\ncount = 2\ncpus = []\n[sip]\ncps_max = 1\n\
                    [[trunks]]\nname = \"a\"\naddress = \"h\"\nmax_calls = 3\ncps = 1000\n\
                    [[trunks]]\nname = \"b\"\naddress = \"h\"\ncps = 1\npriority = 20\n";
        let cfg = Config::parse(text).unwrap();
        let mut r = rng();
        let mut s0 = TrunkSet::for_shard(&cfg, 0, now);
        let mut s1 = TrunkSet::for_shard(&cfg, 1, now);
        assert_eq!(s0.config(TrunkId(0)).max_calls, 2);
        assert_eq!(s1.config(TrunkId(0)).max_calls, 1);
        // Trunk b's single CPS token is on shard 0; shard 1 has none.
        assert_eq!(s0.config(TrunkId(1)).cps, 1);
        assert_eq!(s1.config(TrunkId(1)).max_calls, 0);
        // Shard 1 has no share of the global CPS of 1.
        let e = s1.select(now, &mut r, s1.all(), &[]).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::GlobalCps);
        assert!(e.retry_after_s().is_some());
        assert_eq!(s0.select(now, &mut r, s0.all(), &[]), Ok(TrunkId(0)));
        // A trunk with a zero share is never eligible.
        let mut b1 = TrunkSet::new(&[s1.config(TrunkId(1)).clone()], now);
        let e = b1.select(now, &mut r, b1.all(), &[]).unwrap_err();
        assert_eq!(e.reason, NoTrunkReason::CallsLimit);
    }

    #[test]
    fn trunk_mask() {
        assert!(TrunkMask::all(0).is_empty());
        assert!(TrunkMask::all(TRUNKS_MAX).contains(TrunkId(63)));
        assert!(!TrunkMask::all(3).contains(TrunkId(3)));
        assert!(!TrunkMask::all(TRUNKS_MAX).contains(TrunkId(64)));
    }

    #[test]
    fn digest_pre_authentication() {
        let now = Instant::now();
        let mut a = trunk("a", 1, 1);
        a.username = Some("kolokol".into());
        a.password = Some("secret".into());
        a.realm = Some("carrier".into());
        let b = trunk("b", 1, 1);
        let mut set = TrunkSet::new(&[a, b], now);
        let (ta, tb) = (TrunkId(0), TrunkId(1));
        let mut r = rng();
        let req = RequestInfo {
            method: "INVITE",
            uri: "sip:+4930123@127.0.0.1:5090",
            body: b"",
        };
        assert_eq!(set.authorize(ta, &mut r, &req), None, "no challenge yet");
        let ch = |realm: &str| {
            parse_challenge(&format!(
                "Digest realm=\"{realm}\", nonce=\"n1\", qop=\"auth\", algorithm=SHA-256"
            ))
            .unwrap()
        };
        assert!(!set.handle_challenge(ta, 401, ch("other")), "wrong realm");
        assert!(
            !set.handle_challenge(tb, 401, ch("carrier")),
            "no credentials"
        );
        assert_eq!(set.authorize(tb, &mut r, &req), None);
        assert!(set.handle_challenge(ta, 407, ch("carrier")));
        let (h, auth1) = set.authorize(ta, &mut r, &req).unwrap();
        assert_eq!(h, AuthHeader::ProxyAuthorization);
        assert_eq!(h.as_str(), "Proxy-Authorization");
        assert!(verify(&auth1, "secret", &req));
        assert_eq!(auth1.nc, Some(1));
        assert_eq!(auth1.cnonce.as_ref().map(String::len), Some(16));
        let (_, auth2) = set.authorize(ta, &mut r, &req).unwrap();
        assert_eq!(auth2.nc, Some(2));
        assert_ne!(auth1.cnonce, auth2.cnonce);
        assert!(verify(&auth2, "secret", &req));
        // A new challenge restarts the count; clearing forgets it.
        assert!(set.handle_challenge(ta, 401, ch("carrier")));
        let (h, auth3) = set.authorize(ta, &mut r, &req).unwrap();
        assert_eq!((h, auth3.nc), (AuthHeader::Authorization, Some(1)));
        set.clear_challenge(ta);
        assert_eq!(set.authorize(ta, &mut r, &req), None);
    }

    #[test]
    fn reconfigure_keeps_live_state_and_refuses_a_new_trunk_list() {
        let now = Instant::now();
        let mut set = TrunkSet::new(&[trunk("a", 10, 1), trunk("b", 20, 1)], now);
        let mut r = rng();
        let a = set.select(now, &mut r, set.all(), &[]).unwrap();
        assert_eq!(set.config(a).name, "a");
        assert_eq!(set.calls(a), 1);
        // Same trunks, new priorities and limits: b first now, a's live
        // call still counted.
        let mut ta = trunk("a", 30, 1);
        ta.max_calls = 1;
        let new = TrunkSet::new(&[ta, trunk("b", 5, 1)], now);
        set.reconfigure(new).unwrap();
        assert_eq!(set.calls(a), 1, "live call forgotten");
        let id = set.select(now, &mut r, set.all(), &[]).unwrap();
        assert_eq!(set.config(id).name, "b", "priorities not applied");
        // a is at its new max_calls (1): excluding b leaves nothing.
        assert!(set.select(now, &mut r, set.all(), &[id]).is_err());
        // A different list is refused and changes nothing.
        let e = set
            .reconfigure(TrunkSet::new(&[trunk("a", 1, 1)], now))
            .unwrap_err();
        assert!(e.contains("restart"), "{e}");
        assert_eq!(set.len(), 2);
        assert_eq!(set.config(a).priority, 30);
    }
}
