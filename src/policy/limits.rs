//! The counting half of the policy (SPEC F-P2, F-P3): calls per UTC day and
//! recent calls per subject (an account or a destination number), automatic
//! blocks, and the global calls-per-second bucket.
//!
//! Every table has a fixed maximum of entries. An entry is kept while it
//! still limits something: it has calls on the current UTC day, an active
//! automatic block, or a call inside the burst window. Entries that limit
//! nothing any more are reclaimed when the table is full ("day-rollover
//! eviction"); live entries are never evicted, because forgetting one would
//! reset a limit an abuser could then exceed. A full table of live entries
//! refuses subjects it does not know yet until the earliest entry expires,
//! which [`Table::room_for`] reports.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Milliseconds in a day.
pub(crate) const DAY_MS: u64 = 86_400_000;

/// Burst detection for one kind of subject: more than `calls_max` calls
/// within `window_ms` blocks the subject for `block_ms`. `calls_max == 0`
/// turns detection off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Burst {
    pub(crate) calls_max: u32,
    pub(crate) window_ms: u64,
    pub(crate) block_ms: u64,
}

/// What is known about one account or number.
#[derive(Debug)]
pub(crate) struct Subject {
    /// UTC day (days since the epoch) `day_calls` belongs to.
    day: u64,
    /// Calls committed on `day`.
    day_calls: u32,
    /// End of an automatic block (ms since the epoch); 0 = none.
    blocked_until_ms: u64,
    /// Times of the most recent calls, oldest first, at most
    /// `Burst::calls_max` of them.
    recent: VecDeque<u64>,
}

impl Subject {
    fn new(burst: &Burst) -> Self {
        Subject {
            day: 0,
            day_calls: 0,
            blocked_until_ms: 0,
            recent: VecDeque::with_capacity(burst.calls_max as usize),
        }
    }

    /// When this entry stops limiting anything (ms since the epoch): the
    /// end of its day's count, of its block, or of its burst window,
    /// whichever is last.
    fn dead_at_ms(&self, burst: &Burst) -> u64 {
        let day_end = if self.day_calls > 0 {
            self.day.saturating_add(1).saturating_mul(DAY_MS)
        } else {
            0
        };
        let window_end = self
            .recent
            .back()
            .map_or(0, |t| t.saturating_add(burst.window_ms));
        day_end.max(self.blocked_until_ms).max(window_end)
    }

    /// Forgets calls older than the burst window. A time after `now_ms`
    /// (the wall clock stepped back) counts as recent: when in doubt, keep
    /// limiting.
    fn prune(&mut self, now_ms: u64, burst: &Burst) {
        while self
            .recent
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= burst.window_ms)
        {
            self.recent.pop_front();
        }
    }
}

/// The bounded table of one kind of subject.
#[derive(Debug)]
pub(crate) struct Table<K> {
    map: HashMap<K, Subject>,
    max: usize,
    day_calls_max: u32,
    burst: Burst,
    /// No entry can be reclaimable before this time (ms since the epoch), so
    /// a sweep before it would find nothing. Entries only live longer as
    /// calls are recorded and blocks set, so the minimum taken at a sweep
    /// and lowered on every insert stays a lower bound; anything that
    /// shortens a life (unblock, reconfigure) resets it to 0.
    sweep_after_ms: u64,
}

impl<K: Hash + Eq> Table<K> {
    /// An empty table for at most `max` subjects.
    pub(crate) fn new(max: usize, day_calls_max: u32, burst: Burst) -> Self {
        Table {
            // Preallocated: the memory a full table takes is paid at start,
            // not discovered in the middle of a busy day.
            map: HashMap::with_capacity(max),
            max,
            day_calls_max,
            burst,
            sweep_after_ms: 0,
        }
    }

    /// Applies new limits, keeping every count and block. A smaller `max`
    /// than the entries held refuses new subjects until enough expire; a
    /// smaller `burst.calls_max` keeps the most recent calls.
    pub(crate) fn reconfigure(&mut self, max: usize, day_calls_max: u32, burst: Burst) {
        // A larger table is allocated now, as at start.
        self.map.reserve(max.saturating_sub(self.map.len()));
        self.max = max;
        self.day_calls_max = day_calls_max;
        self.burst = burst;
        for s in self.map.values_mut() {
            while s.recent.len() > burst.calls_max as usize {
                s.recent.pop_front();
            }
            s.recent.shrink_to(burst.calls_max as usize);
        }
        self.sweep_after_ms = 0;
    }

    /// Subjects held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Calls by `k` on UTC day `day`.
    pub(crate) fn calls_on<Q>(&self, k: &Q, day: u64) -> u32
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .get(k)
            .filter(|s| s.day == day)
            .map_or(0, |s| s.day_calls)
    }

    /// Whether `k` has reached the daily limit on `day`.
    pub(crate) fn day_limit_reached<Q>(&self, k: &Q, day: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.calls_on(k, day) >= self.day_calls_max
    }

    /// The end of `k`'s automatic block (ms since the epoch), if one is
    /// active at `now_ms`.
    pub(crate) fn blocked_until<Q>(&self, k: &Q, now_ms: u64) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map
            .get(k)
            .map(|s| s.blocked_until_ms)
            .filter(|&u| u > now_ms)
    }

    /// If one more call by `k` at `now_ms` would be more than
    /// `burst.calls_max` within the window, blocks `k` from `now_ms` for
    /// `burst.block_ms`, forgets its recent calls (so counting starts
    /// afresh when the block ends) and returns the block's end.
    pub(crate) fn trip<Q>(&mut self, k: &Q, now_ms: u64) -> Option<u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let burst = self.burst;
        if burst.calls_max == 0 {
            return None;
        }
        let s = self.map.get_mut(k)?;
        s.prune(now_ms, &burst);
        if s.recent.len() < burst.calls_max as usize {
            return None;
        }
        s.recent.clear();
        s.blocked_until_ms = now_ms.saturating_add(burst.block_ms);
        Some(s.blocked_until_ms)
    }

    /// Lifts `k`'s automatic block and forgets its recent calls; its daily
    /// count stays. Whether there was a block to lift.
    pub(crate) fn unblock<Q>(&mut self, k: &Q, now_ms: u64) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(s) = self.map.get_mut(k) else {
            return false;
        };
        let was = s.blocked_until_ms > now_ms;
        s.blocked_until_ms = 0;
        s.recent.clear();
        self.sweep_after_ms = 0;
        was
    }

    /// `Ok` if `k` has an entry or one can be made for it at `now_ms`;
    /// otherwise the earliest time (ms since the epoch) an entry may be
    /// reclaimed. Sweeps reclaimable entries when the table is full.
    pub(crate) fn room_for<Q>(&mut self, k: &Q, now_ms: u64) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.map.len() < self.max || self.map.contains_key(k) {
            return Ok(());
        }
        if now_ms >= self.sweep_after_ms {
            self.sweep(now_ms);
        }
        if self.map.len() < self.max {
            Ok(())
        } else {
            Err(self.sweep_after_ms)
        }
    }

    /// Counts one call by `k` at `now_ms` on UTC day `day`. Fails like
    /// [`Table::room_for`] when `k` is new and the table is full.
    pub(crate) fn record<Q>(&mut self, k: &Q, now_ms: u64, day: u64) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.room_for(k, now_ms)?;
        let burst = self.burst;
        if !self.map.contains_key(k) {
            // room_for said there is room for a new subject.
            assert!(self.map.len() < self.max);
            self.map.insert(k.to_owned(), Subject::new(&burst));
        }
        // Present: it was there or has just been inserted.
        let s = self.map.get_mut(k).expect("entry present");
        if s.day != day {
            s.day = day;
            s.day_calls = 0;
        }
        s.day_calls = s.day_calls.saturating_add(1);
        if burst.calls_max > 0 {
            s.prune(now_ms, &burst);
            if s.recent.len() >= burst.calls_max as usize {
                s.recent.pop_front();
            }
            s.recent.push_back(now_ms);
        }
        let dead_at = s.dead_at_ms(&burst);
        self.sweep_after_ms = self.sweep_after_ms.min(dead_at);
        Ok(())
    }

    /// Drops every entry that limits nothing at `now_ms` and notes when the
    /// next one may.
    fn sweep(&mut self, now_ms: u64) {
        let burst = self.burst;
        let mut next = u64::MAX;
        self.map.retain(|_, s| {
            s.prune(now_ms, &burst);
            let dead_at = s.dead_at_ms(&burst);
            let keep = dead_at > now_ms;
            if keep {
                next = next.min(dead_at);
            }
            keep
        });
        self.sweep_after_ms = next;
    }
}

/// The global calls-per-second limit: a token bucket of `rate` tokens
/// refilled at `rate` per second, computed as GCRA like
/// [`crate::sip::trunk::TokenBucket`]. That one runs on [`std::time::Instant`];
/// this one runs on wall-clock nanoseconds, which can step backwards, so
/// the theoretical arrival time is clamped to at most one bucket ahead of
/// `now`: a backward step then delays calls by at most one interval
/// instead of by the size of the step.
#[derive(Clone, Debug)]
pub(crate) struct Gcra {
    interval_ns: u64,
    tolerance_ns: u64,
    /// Theoretical arrival time of the next conforming call (ns since the
    /// epoch); 0 = a full bucket.
    tat_ns: u64,
}

impl Gcra {
    /// A full bucket for `rate` calls per second (0 is taken as 1).
    pub(crate) fn new(rate: u32) -> Self {
        let mut g = Gcra {
            interval_ns: 0,
            tolerance_ns: 0,
            tat_ns: 0,
        };
        g.set_rate(rate);
        g
    }

    /// Changes the rate, keeping what has been taken.
    pub(crate) fn set_rate(&mut self, rate: u32) {
        let rate = rate.max(1);
        self.interval_ns = (1_000_000_000 / u64::from(rate)).max(1);
        self.tolerance_ns = self.interval_ns * u64::from(rate - 1);
    }

    /// `tat_ns`, clamped to one bucket ahead of `now_ns`.
    fn tat(&self, now_ns: u64) -> u64 {
        self.tat_ns.min(
            now_ns
                .saturating_add(self.tolerance_ns)
                .saturating_add(self.interval_ns),
        )
    }

    /// Nanoseconds until a call conforms (0 = now).
    pub(crate) fn wait_ns(&self, now_ns: u64) -> u64 {
        self.tat(now_ns)
            .saturating_sub(self.tolerance_ns)
            .saturating_sub(now_ns)
    }

    /// Takes one call, conforming or not (a call committed without a
    /// token pushes the next ones back instead of being forgotten).
    pub(crate) fn take(&mut self, now_ns: u64) {
        self.tat_ns = self
            .tat(now_ns)
            .max(now_ns)
            .saturating_add(self.interval_ns);
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const B: Burst = Burst {
        calls_max: 3,
        window_ms: 10_000,
        block_ms: 60_000,
    };

    #[test]
    fn day_counts_belong_to_their_day() {
        let mut t: Table<String> = Table::new(4, 2, B);
        let day = 20_000;
        let now = day * DAY_MS;
        t.record("a", now, day).unwrap();
        assert!(!t.day_limit_reached("a", day));
        t.record("a", now + 100_000, day).unwrap();
        assert!(t.day_limit_reached("a", day));
        assert_eq!(t.calls_on("a", day + 1), 0);
        t.record("a", now + DAY_MS, day + 1).unwrap();
        assert_eq!(t.calls_on("a", day + 1), 1);
        assert_eq!(t.calls_on("a", day), 0);
    }

    #[test]
    fn trip_needs_more_than_calls_max_inside_the_window() {
        let mut t: Table<String> = Table::new(4, 100, B);
        let day = 1;
        let t0 = DAY_MS;
        for i in 0..3 {
            assert_eq!(t.trip("a", t0 + i), None);
            t.record("a", t0 + i, day).unwrap();
        }
        // A fourth call within 10 s of the first trips.
        assert_eq!(t.trip("a", t0 + 9_999), Some(t0 + 9_999 + 60_000));
        assert_eq!(t.blocked_until("a", t0 + 9_999), Some(t0 + 69_999));
        // The block forgot the recent calls: no second trip.
        assert_eq!(t.trip("a", t0 + 10_000), None);
        assert_eq!(t.blocked_until("a", t0 + 69_999), None);
        // A fourth call 10 s after the first is outside its window.
        for i in 0..3 {
            t.record("c", t0 + i, day).unwrap();
        }
        assert_eq!(t.trip("c", t0 + 10_000), None);
        // Off when calls_max is 0.
        t.reconfigure(4, 100, Burst { calls_max: 0, ..B });
        for i in 0..10 {
            t.record("b", t0 + i, day).unwrap();
            assert_eq!(t.trip("b", t0 + i), None);
        }
    }

    #[test]
    fn full_table_reclaims_only_dead_entries() {
        let mut t: Table<u32> = Table::new(2, 100, B);
        let day = 10;
        let t0 = day * DAY_MS + 1000;
        t.record(&1, t0, day).unwrap();
        t.record(&2, t0, day).unwrap();
        // Both count today: a third subject is refused until midnight.
        assert_eq!(t.room_for(&3, t0 + 1), Err((day + 1) * DAY_MS));
        assert_eq!(t.record(&3, t0 + 1, day), Err((day + 1) * DAY_MS));
        // Known subjects still record.
        t.record(&1, t0 + 2, day).unwrap();
        assert_eq!(t.len(), 2);
        // Next day, yesterday's entries are reclaimed.
        let t1 = (day + 1) * DAY_MS;
        t.record(&3, t1, day + 1).unwrap();
        assert_eq!(t.len(), 1);
        // A block keeps an entry past midnight.
        t.reconfigure(
            2,
            100,
            Burst {
                block_ms: 2 * DAY_MS,
                ..B
            },
        );
        for _ in 0..3 {
            t.record(&1, t1 + 1000, day + 1).unwrap();
        }
        let until = t1 + 1000 + 2 * DAY_MS;
        assert_eq!(t.trip(&1, t1 + 1000), Some(until));
        let t2 = (day + 2) * DAY_MS;
        t.record(&4, t2, day + 2).unwrap();
        assert_eq!(t.len(), 2);
        // The earliest expiry is 4's day count, at the next midnight.
        let t3 = (day + 3) * DAY_MS;
        assert_eq!(t.room_for(&5, t2), Err(t3));
        assert_eq!(t.room_for(&5, t3 - 1), Err(t3));
        // Then 4 is reclaimed; blocked 1 stays until its block ends.
        t.room_for(&5, t3).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.blocked_until(&1, t3), Some(until));
    }

    #[test]
    fn gcra_rate_burst_and_backward_steps() {
        let mut g = Gcra::new(2);
        let t0 = 10_000_000_000_000;
        assert_eq!(g.wait_ns(t0), 0);
        g.take(t0);
        assert_eq!(g.wait_ns(t0), 0);
        g.take(t0);
        assert_eq!(g.wait_ns(t0), 500_000_000);
        assert_eq!(g.wait_ns(t0 + 500_000_000), 0);
        // The clock steps back an hour: at most one interval to wait.
        let back = t0 - 3_600_000_000_000;
        assert!(g.wait_ns(back) <= 500_000_000);
        g.take(back);
        g.take(back);
        assert!(g.wait_ns(back) <= 500_000_000);
        // Overshooting commits push the next call back, boundedly.
        let mut g = Gcra::new(1);
        for _ in 0..1000 {
            g.take(t0);
        }
        assert_eq!(g.wait_ns(t0), 1_000_000_000);
        g.set_rate(0);
        let _ = g.wait_ns(u64::MAX);
        g.take(u64::MAX);
    }
}
