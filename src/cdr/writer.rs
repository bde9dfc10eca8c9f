//! The CDR writer: a thread that takes records off a bounded queue and
//! commits them in batches (F-C2, N-7).
//!
//! [`CdrWriter::submit`] never blocks: it numbers the record with a
//! [`Ticket`] and queues it, or refuses with [`SubmitError::Full`] handing
//! the record back (the caller keeps it and retries; nothing is dropped
//! silently). The thread takes up to `batch_max` records, waiting at most
//! `batch_ms` for a batch to fill, and commits them in one transaction
//! ([`CdrStore::insert_batch`]); when the commit returns, every ticket of
//! the batch is durable ([`CdrWriter::durable_through`]).
//! [`CdrWriter::wait_durable`] blocks until a ticket is durable or a
//! timeout, so the engine reports a call `completed` only after its record
//! is on disk.
//!
//! A failed commit is retried (with a back-off up to
//! [`RETRY_BACKOFF_MAX`]) until it succeeds or the writer is shut down:
//! the batch stays in memory, tickets do not advance, waiters time out and
//! the failure is counted in [`WriterStats`]. Since the queue is bounded,
//! submitters see `Full` rather than memory growing.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::record::Cdr;
use super::store::CdrStore;
use crate::config::CdrConfig;

/// Longest pause between retries of a failing commit: long enough not to
/// hammer a database that is down, short enough that records flow again
/// within seconds of its return.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Knobs of the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// Records per transaction at most.
    pub batch_max: usize,
    /// Longest a batch waits to fill.
    pub batch_wait: Duration,
    /// Records queued at most.
    pub queue_max: usize,
}

impl WriterConfig {
    /// From `[cdr]`.
    pub fn from_config(c: &CdrConfig) -> WriterConfig {
        WriterConfig {
            batch_max: c.batch_max.max(1),
            batch_wait: Duration::from_millis(c.batch_ms),
            queue_max: c.queue_max.max(1),
        }
    }
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig::from_config(&CdrConfig::default())
    }
}

/// A submitted record's number: tickets are handed out in submission
/// order, and batches commit in that order, so ticket `t` is durable once
/// [`CdrWriter::durable_through`] is at least `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// Why a record was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is at `queue_max`; the record is handed back.
    #[error("the CDR queue is full")]
    Full(Box<Cdr>),
    /// The writer has stopped; the record is handed back.
    #[error("the CDR writer has stopped")]
    Stopped(Box<Cdr>),
}

/// Why a wait ended without the record being durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// Not durable within the timeout (still queued or being retried).
    #[error("the record is not durable yet")]
    Timeout,
    /// The writer stopped before the record was committed.
    #[error("the CDR writer stopped before the record was stored")]
    Stopped,
}

/// Counters of the writer (for `/metrics`).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records committed.
    pub committed: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Commits that failed (and were retried).
    pub commit_errors: AtomicU64,
    /// Submissions refused because the queue was full.
    pub refused_full: AtomicU64,
}

struct Durable {
    /// Highest durable ticket, whether the thread has ended, whether
    /// shutdown was asked for.
    through: Mutex<(u64, bool, bool)>,
    cond: Condvar,
}

/// The sending side of the queue: records with their ticket numbers.
type Queue = Sender<(u64, Cdr)>;

/// The writer thread and its queue. Cheap to share behind an `Arc`.
pub struct CdrWriter {
    /// Ticket counter and sender, under one lock so queue order is ticket
    /// order.
    tx: Mutex<(u64, Option<Queue>)>,
    durable: Arc<Durable>,
    stats: Arc<WriterStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for CdrWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CdrWriter")
            .field("durable_through", &self.durable_through())
            .finish_non_exhaustive()
    }
}

impl CdrWriter {
    /// Starts the thread `kolokol-cdr` writing into `store`.
    pub fn spawn(store: Arc<dyn CdrStore>, cfg: WriterConfig) -> io::Result<CdrWriter> {
        assert!(cfg.batch_max > 0 && cfg.queue_max > 0);
        let (tx, rx) = bounded(cfg.queue_max);
        let durable = Arc::new(Durable {
            through: Mutex::new((0, false, false)),
            cond: Condvar::new(),
        });
        let stats = Arc::new(WriterStats::default());
        let (d, s) = (durable.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("kolokol-cdr".into())
            .spawn(move || run(&*store, &rx, cfg, &d, &s))?;
        Ok(CdrWriter {
            tx: Mutex::new((0, Some(tx))),
            durable,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a record without blocking.
    pub fn submit(&self, cdr: Cdr) -> Result<Ticket, SubmitError> {
        let mut g = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let next = g.0 + 1;
        let Some(tx) = &g.1 else {
            return Err(SubmitError::Stopped(Box::new(cdr)));
        };
        match tx.try_send((next, cdr)) {
            Ok(()) => {
                g.0 = next;
                Ok(Ticket(next))
            }
            Err(TrySendError::Full((_, c))) => {
                self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Full(Box::new(c)))
            }
            Err(TrySendError::Disconnected((_, c))) => Err(SubmitError::Stopped(Box::new(c))),
        }
    }

    /// The highest ticket whose record is durable (0: none yet).
    pub fn durable_through(&self) -> u64 {
        self.durable
            .through
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// Whether `t` is durable now.
    pub fn is_durable(&self, t: Ticket) -> bool {
        self.durable_through() >= t.0
    }

    /// Blocks until `t` is durable, the writer stops, or `timeout`.
    pub fn wait_durable(&self, t: Ticket, timeout: Duration) -> Result<(), WaitError> {
        let deadline = Instant::now() + timeout;
        let mut g = self
            .durable
            .through
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if g.0 >= t.0 {
                return Ok(());
            }
            if g.1 {
                return Err(WaitError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::Timeout);
            }
            g = self
                .durable
                .cond
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// [`CdrWriter::submit`] then [`CdrWriter::wait_durable`]; a full queue
    /// is retried (1 ms apart) within the same timeout.
    pub fn submit_and_wait(&self, cdr: Cdr, timeout: Duration) -> Result<Ticket, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut cdr = cdr;
        let t = loop {
            match self.submit(cdr) {
                Ok(t) => break t,
                Err(SubmitError::Stopped(_)) => return Err(WaitError::Stopped),
                Err(SubmitError::Full(c)) => {
                    if Instant::now() >= deadline {
                        return Err(WaitError::Timeout);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    cdr = *c;
                }
            }
        };
        self.wait_durable(t, deadline.saturating_duration_since(Instant::now()))?;
        Ok(t)
    }

    /// Counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Stops taking records, commits every queued one (a failing batch is
    /// tried [`SHUTDOWN_ATTEMPTS`] more times), and joins the thread.
    /// Waiters on records never committed get [`WaitError::Stopped`].
    pub fn shutdown(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).1 = None;
        self.durable
            .through
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .2 = true;
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for CdrWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Attempts at one batch once the queue is closed (shutdown): the records
/// are then lost to this process, and the caller's waits say so.
pub const SHUTDOWN_ATTEMPTS: u32 = 5;

fn run(
    store: &dyn CdrStore,
    rx: &Receiver<(u64, Cdr)>,
    cfg: WriterConfig,
    durable: &Durable,
    stats: &WriterStats,
) {
    let mut batch: Vec<Cdr> = Vec::with_capacity(cfg.batch_max);
    let mut last;
    let mut closed = false;
    while !closed {
        // Block for the first record, then fill until batch_max or
        // batch_wait.
        match rx.recv() {
            Ok((t, c)) => {
                last = t;
                batch.push(c);
            }
            Err(_) => break,
        }
        let deadline = Instant::now() + cfg.batch_wait;
        while batch.len() < cfg.batch_max {
            match rx.recv_deadline(deadline) {
                Ok((t, c)) => {
                    last = t;
                    batch.push(c);
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut backoff = Duration::from_millis(10);
        let mut attempts = 0u32;
        loop {
            match store.insert_batch(&batch) {
                Ok(_) => {
                    stats
                        .committed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    let mut g = durable.through.lock().unwrap_or_else(|e| e.into_inner());
                    assert!(last > g.0, "tickets commit in order");
                    g.0 = last;
                    durable.cond.notify_all();
                    break;
                }
                Err(_) => {
                    stats.commit_errors.fetch_add(1, Ordering::Relaxed);
                    attempts += 1;
                    // The queue closing means shutdown: give up after a few.
                    let stopping = closed || durable.through.lock().map_or(true, |g| g.2);
                    if stopping && attempts >= SHUTDOWN_ATTEMPTS {
                        closed = true;
                        break;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
        batch.clear();
    }
    let mut g = durable.through.lock().unwrap_or_else(|e| e.into_inner());
    g.1 = true;
    durable.cond.notify_all();
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::cdr::crypt::test::keys;
    use crate::cdr::crypt::Cipher;
    use crate::cdr::record::test::sample;
    use crate::cdr::record::CdrKind;
    use crate::cdr::store::SqliteStore;

    #[test]
    fn batches_commit_and_tickets_become_durable() {
        let dir = crate::cdr::store::test::TempDir::new("writer");
        let store = Arc::new(
            SqliteStore::open(
                &dir.path().join("cdr.sqlite"),
                keys("k1", Cipher::Aes256Gcm),
            )
            .unwrap(),
        );
        let w = CdrWriter::spawn(
            store.clone(),
            WriterConfig {
                batch_max: 64,
                batch_wait: Duration::from_millis(5),
                queue_max: 1000,
            },
        )
        .unwrap();
        let mut last = Ticket(0);
        for i in 0..500 {
            let c = sample(&format!("w-{i}"), CdrKind::Inbound, "", "+4930555", i, true);
            last = w.submit(c).unwrap();
        }
        w.wait_durable(last, Duration::from_secs(10)).unwrap();
        assert!(w.is_durable(Ticket(1)));
        assert!(w.stats().batches.load(Ordering::Relaxed) < 500, "batched");
        let t = w
            .submit_and_wait(
                sample("w-last", CdrKind::Inbound, "", "+1", 0, false),
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(t, Ticket(501));
        assert!(store.get("w-last").unwrap().is_some());
        assert_eq!(
            store
                .search(&Default::default(), None, 1000)
                .unwrap()
                .records
                .len(),
            501
        );
        w.shutdown();
        assert_eq!(
            w.wait_durable(Ticket(502), Duration::from_secs(1)),
            Err(WaitError::Stopped)
        );
        assert!(matches!(
            w.submit(sample("late", CdrKind::Inbound, "", "+1", 0, false)),
            Err(SubmitError::Stopped(_))
        ));
    }

    #[test]
    fn full_queue_hands_the_record_back() {
        /// A store whose commits block until released.
        struct Slow(Mutex<bool>, Condvar, SqliteStore);
        impl CdrStore for Slow {
            fn insert_batch(&self, b: &[Cdr]) -> Result<u64, crate::cdr::StoreError> {
                let mut g = self.0.lock().unwrap();
                while !*g {
                    g = self.1.wait(g).unwrap();
                }
                self.2.insert_batch(b)
            }
            fn get(&self, id: &str) -> Result<Option<Cdr>, crate::cdr::StoreError> {
                self.2.get(id)
            }
            fn search(
                &self,
                f: &crate::cdr::CdrFilter,
                a: Option<crate::cdr::Cursor>,
                l: usize,
            ) -> Result<crate::cdr::CdrPage, crate::cdr::StoreError> {
                self.2.search(f, a, l)
            }
            fn summary(
                &self,
                f: &crate::cdr::CdrFilter,
            ) -> Result<crate::cdr::Summary, crate::cdr::StoreError> {
                self.2.summary(f)
            }
            fn delete_older_than(
                &self,
                b: crate::control::api::UtcTime,
            ) -> Result<u64, crate::cdr::StoreError> {
                self.2.delete_older_than(b)
            }
            fn erase_account(&self, a: &str) -> Result<u64, crate::cdr::StoreError> {
                self.2.erase_account(a)
            }
            fn audit_append(
                &self,
                e: &crate::cdr::AuditRecord,
            ) -> Result<i64, crate::cdr::StoreError> {
                self.2.audit_append(e)
            }
            fn audit_list(
                &self,
                b: Option<i64>,
                l: usize,
            ) -> Result<Vec<crate::cdr::AuditEntry>, crate::cdr::StoreError> {
                self.2.audit_list(b, l)
            }
            fn keys(&self) -> &crate::cdr::CdrKeys {
                self.2.keys()
            }
        }
        let dir = crate::cdr::store::test::TempDir::new("writer-full");
        let inner =
            SqliteStore::open(&dir.path().join("c.sqlite"), keys("k1", Cipher::Aes256Gcm)).unwrap();
        let slow = Arc::new(Slow(Mutex::new(false), Condvar::new(), inner));
        let w = CdrWriter::spawn(
            slow.clone(),
            WriterConfig {
                batch_max: 1,
                batch_wait: Duration::ZERO,
                queue_max: 4,
            },
        )
        .unwrap();
        let mut refused = None;
        for i in 0..10 {
            match w.submit(sample(
                &format!("f-{i}"),
                CdrKind::Inbound,
                "",
                "+1",
                0,
                false,
            )) {
                Ok(_) => {}
                Err(SubmitError::Full(c)) => {
                    refused = Some(c);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let c = refused.expect("the queue filled");
        assert!(c.call_id.starts_with("f-"));
        assert!(w.stats().refused_full.load(Ordering::Relaxed) >= 1);
        let t = w.durable_through();
        assert_eq!(
            w.wait_durable(Ticket(t + 1), Duration::from_millis(20)),
            Err(WaitError::Timeout)
        );
        *slow.0.lock().unwrap() = true;
        slow.1.notify_all();
        w.submit_and_wait(*c, Duration::from_secs(10)).unwrap();
    }
}
