//! The retention job (F-C5): deletes records older than
//! `cdr.retention_days` and writes the run to the audit log.
//!
//! [`run_retention`] is one run (testable with any `now`);
//! [`spawn_retention`] runs it every `cdr.retention_interval_h` hours on a
//! thread of its own until the returned handle is dropped.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::store::{AuditRecord, CdrStore, StoreError};
use crate::control::api::UtcTime;

/// The audit log's `who` for retention runs.
pub const RETENTION_WHO: &str = "retention";

/// Deletes records created before `now - retention_days` and appends an
/// audit entry (`action = "retention"`, the cut-off as filter, the rows
/// deleted). `retention_days = 0` keeps everything and writes nothing.
pub fn run_retention(
    store: &dyn CdrStore,
    retention_days: u32,
    now: UtcTime,
) -> Result<u64, StoreError> {
    if retention_days == 0 {
        return Ok(0);
    }
    let cutoff = UtcTime::from_unix_ms(
        now.unix_ms
            .saturating_sub(i64::from(retention_days) * 86_400_000),
    );
    let n = store.delete_older_than(cutoff)?;
    store.audit_append(&AuditRecord {
        at: now,
        who: RETENTION_WHO.into(),
        action: "retention".into(),
        filter: serde_json::json!({ "created_before": cutoff.to_string(), "retention_days": retention_days })
            .to_string(),
        rows: n,
    })?;
    Ok(n)
}

/// The periodic job; dropping it stops the thread (within one wake-up).
#[derive(Debug)]
pub struct RetentionJob {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for RetentionJob {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs [`run_retention`] now and then every `interval`, on the thread
/// `kolokol-cdr-retention`. `on_error` hears failed runs (for the log);
/// the next run tries again.
pub fn spawn_retention(
    store: Arc<dyn CdrStore>,
    retention_days: u32,
    interval: Duration,
    on_error: impl Fn(&StoreError) + Send + 'static,
) -> std::io::Result<RetentionJob> {
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("kolokol-cdr-retention".into())
        .spawn(move || loop {
            if let Err(e) = run_retention(&*store, retention_days, UtcTime::now()) {
                on_error(&e);
            }
            match rx.recv_timeout(interval) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        })?;
    Ok(RetentionJob {
        stop: Some(tx),
        thread: Some(thread),
    })
}
