//! Call detail records (F-C1..F-C7).
//!
//! - [`record`]: the [`Cdr`], built sans-IO from a shard's
//!   [`crate::call::CallRecord`] and the engine's [`CdrContext`];
//! - [`crypt`]: numbers sealed with AES-256-GCM or ChaCha20-Poly1305 and
//!   hashed with HMAC-SHA256 for search;
//! - [`store`]: the [`CdrStore`] trait, the SQL implementation and the
//!   embedded SQLite database (durability and fsync policy documented
//!   there); [`pg`]: the PostgreSQL database;
//! - [`writer`]: the writer thread with its bounded queue and durable
//!   tickets;
//! - [`retention`]: the retention job;
//! - [`service`]: the records API's [`crate::control::api::CdrService`] over
//!   a store, writing the audit log.

pub mod crypt;
pub mod pg;
pub mod record;
pub mod retention;
pub mod service;
pub mod store;
pub mod writer;

pub use crypt::{CdrKeys, Cipher, CryptError};
pub use record::{Cdr, CdrContext, CdrKind, CdrStatus, ClockAnchor, HangupSide, LegQuality};
pub use store::{
    AuditEntry, AuditRecord, CdrFilter, CdrPage, CdrStore, Cursor, SqliteStore, StoreError, Summary,
};
pub use writer::{CdrWriter, SubmitError, Ticket, WaitError, WriterConfig};

use std::sync::Arc;

use crate::config::CdrConfig;

/// Opens the store `[cdr]` names: its keys, then SQLite at `cdr.path` or
/// PostgreSQL at `cdr.url`.
pub fn open_store(cfg: &CdrConfig) -> Result<Arc<dyn CdrStore>, StoreError> {
    let keys = CdrKeys::from_config(cfg)?;
    match cfg.backend.as_str() {
        "sqlite" => Ok(Arc::new(SqliteStore::open(&cfg.path, keys)?)),
        "postgres" => {
            let url = cfg.url.as_deref().unwrap_or_default();
            Ok(Arc::new(pg::PgStore::connect(url, keys)?))
        }
        other => Err(StoreError::Config {
            key: "cdr.backend".into(),
            reason: format!("{other:?} is not sqlite or postgres"),
        }),
    }
}
