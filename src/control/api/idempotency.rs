//! `Idempotency-Key` for the two POSTs, so a retried request never places a
//! second call (F-A3).
//!
//! A key is scoped to the token's subject and the route. The first request
//! with a key marks it *in flight*; when the engine has answered, the
//! response (status, body, `Location`) is stored under the key together
//! with a fingerprint (SHA-256) of the parsed request, defaults applied, so
//! JSON whitespace and member order do not matter. Then:
//!
//! - same key, same fingerprint, finished: the stored response is replayed
//!   (with `Idempotency-Replayed: true`); the engine is not asked again;
//! - same key, same fingerprint, still in flight: 409
//!   `idempotency_in_progress` with `Retry-After: 1` (the second request
//!   does not wait: it never reaches the engine, and the client's retry
//!   gets the replay);
//! - same key, another fingerprint: 422 `idempotency_conflict`.
//!
//! Only answers that a retry could not change are stored: successes and
//! the engine's 4xx refusals, except 408, 409 and 429 (and every 5xx), which
//! clear the key so a retry is tried afresh.
//!
//! The table is bounded ([`IdempotencyStore::new`]'s `entries_max`, 100k by
//! default) and entries live `ttl` (24 h). Entries are kept in insertion
//! order, which is also expiry order, so expiry and eviction pop the front.
//! When full of live entries the oldest finished one is evicted early (its
//! key then behaves as new); if every entry is in flight the request is
//! refused with 503 `overloaded`. Times are arguments (sans-IO).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Longest key accepted (bytes); the IETF draft suggests UUIDs, Stripe
/// allows 255.
pub const KEY_LEN_MAX: usize = 255;

/// Whether `key` is acceptable: 1..=255 visible ASCII characters.
pub fn key_is_valid(key: &str) -> bool {
    (1..=KEY_LEN_MAX).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A request fingerprint.
pub type Fingerprint = [u8; 32];

/// The fingerprint of a request's canonical bytes.
pub fn fingerprint(canonical: &[u8]) -> Fingerprint {
    Sha256::digest(canonical).into()
}

/// A stored response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
    /// `Location`, if any.
    pub location: Option<String>,
}

/// Whether a response with `status` is stored for replay.
pub fn is_storable(status: u16) -> bool {
    (200..300).contains(&status)
        || ((400..500).contains(&status) && ![408, 409, 429].contains(&status))
}

/// Scope of a key: (subject, route, key).
pub type Scope = (String, &'static str, String);

#[derive(Debug)]
enum State {
    InFlight,
    Done(StoredResponse),
}

#[derive(Debug)]
struct Entry {
    fp: Fingerprint,
    state: State,
    /// Tells this entry apart from a later one under the same key in
    /// `order`.
    generation: u64,
}

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin {
    /// First time: go ahead, then call [`IdempotencyStore::finish`] with
    /// the generation.
    Started(u64),
    /// Answer with this stored response.
    Replay(StoredResponse),
    /// Same key, other body.
    Conflict,
    /// The first request with this key has not finished.
    InProgress,
    /// The table is full of requests in flight.
    Full,
}

/// The key table.
#[derive(Debug)]
pub struct IdempotencyStore {
    map: HashMap<Scope, Entry>,
    /// Insertion order: (inserted at, key, generation).
    order: VecDeque<(Instant, Scope, u64)>,
    entries_max: usize,
    ttl: Duration,
    next_generation: u64,
}

impl IdempotencyStore {
    /// A table of at most `entries_max` keys, each kept `ttl`.
    pub fn new(entries_max: usize, ttl: Duration) -> IdempotencyStore {
        assert!(entries_max > 0);
        IdempotencyStore {
            map: HashMap::new(),
            order: VecDeque::new(),
            entries_max,
            ttl,
            next_generation: 0,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            let Some((_, key, generation)) = self.order.pop_front() else {
                break;
            };
            self.remove_if(&key, generation, true);
        }
    }

    /// Removes `key` if it is still `generation` (and, unless
    /// `in_flight_too`, finished).
    fn remove_if(&mut self, key: &Scope, generation: u64, in_flight_too: bool) -> bool {
        let hit = self.map.get(key).is_some_and(|e| {
            e.generation == generation && (in_flight_too || matches!(e.state, State::Done(_)))
        });
        if hit {
            self.map.remove(key);
        }
        hit
    }

    /// Looks `key` up for a request with fingerprint `fp` at `now`.
    pub fn begin(&mut self, key: Scope, fp: Fingerprint, now: Instant) -> Begin {
        self.expire(now);
        if let Some(e) = self.map.get(&key) {
            return match (&e.state, e.fp == fp) {
                (_, false) => Begin::Conflict,
                (State::InFlight, true) => Begin::InProgress,
                (State::Done(r), true) => Begin::Replay(r.clone()),
            };
        }
        // Records of keys cleared early (retryable answers) stay in `order`
        // until they reach the front; compact so it stays bounded too.
        if self.order.len() >= 2 * self.entries_max {
            let map = &self.map;
            self.order
                .retain(|(_, k, g)| map.get(k).is_some_and(|e| e.generation == *g));
        }
        // Make room: drop order records of keys already gone, then the
        // oldest finished entries. In-flight ones are kept (their requests
        // are running); they are requeued behind.
        let mut scanned = 0;
        while self.map.len() >= self.entries_max && scanned < self.order.len() {
            let Some((at, k, generation)) = self.order.pop_front() else {
                break;
            };
            if !self.remove_if(&k, generation, false)
                && self.map.get(&k).is_some_and(|e| e.generation == generation)
            {
                self.order.push_back((at, k, generation));
                scanned += 1;
            }
        }
        if self.map.len() >= self.entries_max {
            return Begin::Full;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.order.push_back((now, key.clone(), generation));
        self.map.insert(
            key,
            Entry {
                fp,
                state: State::InFlight,
                generation,
            },
        );
        Begin::Started(generation)
    }

    /// Records the answer to the request that [`Begin::Started`]
    /// `generation`: stored if [`is_storable`], else the key is cleared.
    /// `None` (the request failed before an answer) clears it too.
    pub fn finish(&mut self, key: &Scope, generation: u64, response: Option<StoredResponse>) {
        let Some(e) = self.map.get_mut(key) else {
            return;
        };
        if e.generation != generation {
            return;
        }
        match response {
            Some(r) if is_storable(r.status) => e.state = State::Done(r),
            _ => {
                self.map.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn k(s: &str) -> Scope {
        ("portal".into(), "/v1/calls", s.into())
    }

    fn resp(status: u16) -> StoredResponse {
        StoredResponse {
            status,
            content_type: "application/json",
            body: format!("{{\"s\":{status}}}"),
            location: None,
        }
    }

    #[test]
    fn replay_conflict_in_progress() {
        let t0 = Instant::now();
        let mut s = IdempotencyStore::new(10, Duration::from_secs(60));
        let fp = fingerprint(b"a");
        let Begin::Started(g) = s.begin(k("1"), fp, t0) else {
            panic!()
        };
        assert_eq!(s.begin(k("1"), fp, t0), Begin::InProgress);
        assert_eq!(s.begin(k("1"), fingerprint(b"b"), t0), Begin::Conflict);
        s.finish(&k("1"), g, Some(resp(201)));
        assert_eq!(s.begin(k("1"), fp, t0), Begin::Replay(resp(201)));
        assert_eq!(s.begin(k("1"), fingerprint(b"b"), t0), Begin::Conflict);
        // Another subject or route is another key.
        assert!(matches!(
            s.begin(("other".into(), "/v1/calls", "1".into()), fp, t0),
            Begin::Started(_)
        ));
        assert!(matches!(
            s.begin(("portal".into(), "/v1/notifications", "1".into()), fp, t0),
            Begin::Started(_)
        ));
        // Expired after the TTL.
        let later = t0 + Duration::from_secs(61);
        assert!(matches!(
            s.begin(k("1"), fingerprint(b"b"), later),
            Begin::Started(_)
        ));
    }

    #[test]
    fn retryable_answers_are_not_stored() {
        let t0 = Instant::now();
        let mut s = IdempotencyStore::new(10, Duration::from_secs(60));
        let fp = fingerprint(b"a");
        for status in [429, 503, 500, 409] {
            let Begin::Started(g) = s.begin(k("x"), fp, t0) else {
                panic!()
            };
            s.finish(&k("x"), g, Some(resp(status)));
            assert!(s.is_empty(), "{status}");
        }
        let Begin::Started(g) = s.begin(k("x"), fp, t0) else {
            panic!()
        };
        s.finish(&k("x"), g, None);
        assert!(s.is_empty());
        // Cleared keys do not grow the order queue without bound.
        for _ in 0..100 {
            let Begin::Started(g) = s.begin(k("x"), fp, t0) else {
                panic!()
            };
            s.finish(&k("x"), g, Some(resp(429)));
        }
        assert!(s.order.len() <= 20);
        assert!(is_storable(422) && is_storable(403) && is_storable(200));
    }

    #[test]
    fn bounded_evicts_oldest_finished_never_in_flight() {
        let t0 = Instant::now();
        let mut s = IdempotencyStore::new(3, Duration::from_secs(60));
        let fp = fingerprint(b"a");
        let Begin::Started(g0) = s.begin(k("0"), fp, t0) else {
            panic!()
        };
        // "0" stays in flight; "1" and "2" finish.
        for i in 1..3 {
            let Begin::Started(g) = s.begin(k(&i.to_string()), fp, t0) else {
                panic!()
            };
            s.finish(&k(&i.to_string()), g, Some(resp(201)));
        }
        assert!(matches!(s.begin(k("3"), fp, t0), Begin::Started(_)));
        assert_eq!(s.len(), 3);
        // "1" (the oldest finished) went; "0" is still in flight.
        assert!(matches!(s.begin(k("0"), fp, t0), Begin::InProgress));
        assert_eq!(s.begin(k("2"), fp, t0), Begin::Replay(resp(201)));
        // Fill with in-flight only: "2" goes, then full.
        assert!(matches!(s.begin(k("4"), fp, t0), Begin::Started(_)));
        assert_eq!(s.begin(k("5"), fp, t0), Begin::Full);
        s.finish(&k("0"), g0, Some(resp(201)));
        assert!(matches!(s.begin(k("5"), fp, t0), Begin::Started(_)));
        // Invariants: the order queue never lags behind the map.
        assert!(s.order.len() >= s.map.len());
        assert!(s.map.len() <= 3);
        // A stale generation cannot overwrite a newer entry.
        s.finish(&k("0"), g0, Some(resp(500)));
        assert!(!key_is_valid("") && !key_is_valid("a b") && key_is_valid("550e8400-e29b"));
    }
}
