//! The PostgreSQL database for [`SqlStore`]: one store for several gateway
//! hosts (F-C7). Same tables, indexes and append-only audit triggers as
//! the embedded store; durability is PostgreSQL's (`synchronous_commit =
//! on`, the default: a commit returns after its WAL is flushed).
//!
//! One connection behind a mutex: the writer commits batches, the API's
//! reads are short keyset queries, and a deployment that needs more puts
//! a pooler (PgBouncer) in front.

use std::sync::Mutex;

use postgres::types::ToSql;
use postgres::{Client, NoTls};

use super::crypt::CdrKeys;
use super::store::{Db, Dialect, Row, SqlStore, StoreError, Val};

/// The PostgreSQL schema (idempotent).
const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cdr (
    seq BIGSERIAL PRIMARY KEY,
    call_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    caller BYTEA NOT NULL,
    caller_h BYTEA NOT NULL,
    callee BYTEA NOT NULL,
    callee_h BYTEA NOT NULL,
    trunk TEXT,
    created_ms BIGINT NOT NULL,
    ringing_ms BIGINT,
    answered_ms BIGINT,
    ended_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    billable_s BIGINT NOT NULL,
    status TEXT NOT NULL,
    sip_code BIGINT NOT NULL,
    q850 BIGINT NOT NULL,
    hangup TEXT NOT NULL,
    quality TEXT NOT NULL,
    dtmf TEXT
);
CREATE INDEX IF NOT EXISTS cdr_created ON cdr (created_ms, seq);
CREATE INDEX IF NOT EXISTS cdr_caller_h ON cdr (caller_h, created_ms);
CREATE INDEX IF NOT EXISTS cdr_callee_h ON cdr (callee_h, created_ms);
CREATE INDEX IF NOT EXISTS cdr_account ON cdr (account, created_ms);
CREATE INDEX IF NOT EXISTS cdr_kind ON cdr (kind, created_ms);
CREATE INDEX IF NOT EXISTS cdr_status ON cdr (status, created_ms);
CREATE INDEX IF NOT EXISTS cdr_trunk ON cdr (trunk, created_ms);
CREATE TABLE IF NOT EXISTS cdr_audit (
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    filter_text TEXT NOT NULL,
    row_count BIGINT NOT NULL
);
CREATE OR REPLACE FUNCTION cdr_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'cdr_audit is append-only'; END $$;
CREATE OR REPLACE TRIGGER cdr_audit_no_change BEFORE UPDATE OR DELETE ON cdr_audit
    FOR EACH ROW EXECUTE FUNCTION cdr_audit_append_only();
CREATE OR REPLACE TRIGGER cdr_audit_no_truncate BEFORE TRUNCATE ON cdr_audit
    FOR EACH STATEMENT EXECUTE FUNCTION cdr_audit_append_only();
";

/// Key of the advisory lock that serialises schema creation when several
/// hosts start at once.
const SCHEMA_LOCK: i64 = 0x6b6f_6c6f_6b6f_6c01;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        StoreError::Db(e.to_string())
    }
}

/// A PostgreSQL connection.
pub struct PgDb {
    client: Mutex<Client>,
}

/// [`SqlStore`] on PostgreSQL.
pub type PgStore = SqlStore<PgDb>;

impl PgDb {
    /// Connects (`host=... port=... user=... dbname=...` or a URL) and
    /// creates the schema if needed. TLS to the database is not done here:
    /// use a unix socket or a local network.
    pub fn connect(url: &str) -> Result<PgDb, StoreError> {
        let mut client =
            Client::connect(url, NoTls).map_err(|e| StoreError::Db(format!("cdr.url: {e}")))?;
        client.execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])?;
        let r = client.batch_execute(PG_SCHEMA);
        client.execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])?;
        r?;
        Ok(PgDb {
            client: Mutex::new(client),
        })
    }

    /// Runs raw SQL (tests: proving the audit triggers hold).
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        let mut c = self.client.lock().unwrap_or_else(|e| e.into_inner());
        c.batch_execute(sql)?;
        Ok(())
    }
}

impl PgStore {
    /// Opens the PostgreSQL store at `url`.
    pub fn connect(url: &str, keys: CdrKeys) -> Result<PgStore, StoreError> {
        Ok(SqlStore::new(PgDb::connect(url)?, keys))
    }
}

fn pg_params(args: &[Val]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|v| -> &(dyn ToSql + Sync) {
            match v {
                Val::I(i) => i,
                Val::OptI(i) => i,
                Val::T(t) => t,
                Val::OptT(t) => t,
                Val::B(b) => b,
            }
        })
        .collect()
}

struct PgRow<'a>(&'a postgres::Row);

impl Row for PgRow<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.0.try_get(i)?)
    }
    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.0.try_get(i)?)
    }
    fn blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.try_get(i)?)
    }
}

impl Db for PgDb {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let mut c = self.client.lock().unwrap_or_else(|e| e.into_inner());
        Ok(c.execute(sql, &pg_params(args))?)
    }

    fn execute_many(&self, sql: &str, rows: &[Vec<Val>]) -> Result<u64, StoreError> {
        let mut c = self.client.lock().unwrap_or_else(|e| e.into_inner());
        let mut tx = c.transaction()?;
        let st = tx.prepare(sql)?;
        let mut n = 0;
        for r in rows {
            n += tx.execute(&st, &pg_params(r))?;
        }
        tx.commit()?;
        Ok(n)
    }

    fn query(
        &self,
        sql: &str,
        args: &[Val],
        f: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut c = self.client.lock().unwrap_or_else(|e| e.into_inner());
        // Pages are at most PAGE_LIMIT_MAX + 1 rows, so collecting them is
        // bounded.
        for r in c.query(sql, &pg_params(args))? {
            f(&PgRow(&r))?;
        }
        Ok(())
    }
}
