//! The records API's [`CdrService`] over a [`CdrStore`]: every read,
//! export, summary, erasure and audit listing is written to the audit log
//! (F-C6) with the token's subject, the filter and the row count. A read
//! whose audit entry cannot be written fails rather than go unlogged.

use std::sync::Arc;

use super::record::Cdr;
use super::store::{AuditEntry, AuditRecord, CdrFilter, CdrPage, CdrStore, StoreError, Summary};
use crate::control::api::{ApiError, CdrQuery, CdrService, Principal, UtcTime};

/// [`CdrService`] over a store.
pub struct StoreCdrService {
    store: Arc<dyn CdrStore>,
}

impl std::fmt::Debug for StoreCdrService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCdrService").finish_non_exhaustive()
    }
}

fn unavailable(_: StoreError) -> ApiError {
    // The store's message may name files or hosts: not for the client.
    ApiError::new(
        503,
        "cdr_store_unavailable",
        "The record store is unavailable",
        "the call record store did not answer; try again later",
    )
    .retry_after(5)
}

impl StoreCdrService {
    /// A service over `store`.
    pub fn new(store: Arc<dyn CdrStore>) -> StoreCdrService {
        StoreCdrService { store }
    }

    fn audit(
        &self,
        who: &Principal,
        action: &str,
        filter: String,
        rows: u64,
    ) -> Result<(), ApiError> {
        self.store
            .audit_append(&AuditRecord {
                at: UtcTime::now(),
                who: who.subject.clone(),
                action: action.into(),
                filter,
                rows,
            })
            .map(|_| ())
            .map_err(unavailable)
    }
}

impl CdrService for StoreCdrService {
    fn search(&self, who: &Principal, q: &CdrQuery) -> Result<CdrPage, ApiError> {
        let page = self
            .store
            .search(&q.filter, q.cursor, q.limit)
            .map_err(unavailable)?;
        let mut f = q.filter.audit_text(self.store.keys());
        if let Some(c) = q.cursor {
            f = format!("{f} cursor={}", c.encode());
        }
        self.audit(who, "search", f, page.records.len() as u64)?;
        Ok(page)
    }

    fn export(
        &self,
        who: &Principal,
        filter: &CdrFilter,
        sink: &mut dyn FnMut(&Cdr) -> bool,
    ) -> Result<u64, ApiError> {
        let mut n = 0u64;
        let r = self.store.export(filter, &mut |c| {
            if sink(c) {
                n += 1;
                Ok(())
            } else {
                Err(StoreError::Db("the client went away".into()))
            }
        });
        // Logged however it ended, with the rows actually handed over.
        self.audit(who, "export", filter.audit_text(self.store.keys()), n)?;
        match r {
            Ok(_) => Ok(n),
            Err(e) => Err(unavailable(e)),
        }
    }

    fn summary(&self, who: &Principal, filter: &CdrFilter) -> Result<Summary, ApiError> {
        let s = self.store.summary(filter).map_err(unavailable)?;
        self.audit(
            who,
            "summary",
            filter.audit_text(self.store.keys()),
            s.calls,
        )?;
        Ok(s)
    }

    fn erase_account(&self, who: &Principal, account: &str) -> Result<u64, ApiError> {
        let n = self.store.erase_account(account).map_err(unavailable)?;
        self.audit(
            who,
            "erase",
            serde_json::json!({ "account": account }).to_string(),
            n,
        )?;
        Ok(n)
    }

    fn audit_log(
        &self,
        who: &Principal,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, ApiError> {
        let v = self
            .store
            .audit_list(before_id, limit)
            .map_err(unavailable)?;
        let f = match before_id {
            Some(b) => serde_json::json!({ "before": b }).to_string(),
            None => "{}".into(),
        };
        self.audit(who, "audit", f, v.len() as u64)?;
        Ok(v)
    }
}
