//! Where records live (F-C2..F-C7): the [`CdrStore`] trait and its SQL
//! implementation [`SqlStore`] over two databases, the embedded SQLite
//! ([`SqliteDb`], the default: no server to install) and PostgreSQL
//! ([`crate::cdr::pg::PgDb`], for several gateway hosts writing one store).
//!
//! # Durability (fsync policy)
//!
//! SQLite runs in WAL mode with `synchronous = FULL`: a transaction's
//! commit returns only after its WAL frames are fsync'ed, so **a record is
//! durable when the commit of its batch returns** ([`CdrStore::insert_batch`]),
//! across `kill -9` and power loss (given a disk that honours flushes).
//! Records are batched by the writer thread ([`crate::cdr::writer`]), so one
//! fsync covers up to `cdr.batch_max` records. PostgreSQL gives the same
//! guarantee with its defaults (`synchronous_commit = on`, `fsync = on`).
//! Inserting a call id that is already stored is a no-op, so a batch
//! retried after an unknown outcome never duplicates.
//!
//! # What is stored
//!
//! Caller and callee are sealed ([`crate::cdr::crypt`]) with their call id as
//! associated data, next to their keyed search hashes; everything else is
//! plain columns with indexes for the API's filters. SQLite runs with
//! `secure_delete = ON` so erased and expired rows are overwritten, not
//! left in free pages.
//!
//! The audit log is a table the code only ever `INSERT`s into and
//! `SELECT`s from; a trigger aborts any `UPDATE` or `DELETE` on it (and, on
//! PostgreSQL, `TRUNCATE`), whoever sends it.

use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use super::crypt::{CdrKeys, CryptError};
use super::record::{cut, Cdr, CdrKind, CdrStatus, HangupSide, LegQuality};
use crate::control::api::UtcTime;

/// Most records one [`CdrStore::search`] returns.
pub const PAGE_LIMIT_MAX: usize = 1000;

/// Records per query while exporting: memory stays at one chunk whatever
/// the export's size, and each query is short.
pub const EXPORT_CHUNK: usize = 1000;

/// Rows one retention or erasure statement deletes; a long delete runs as
/// several transactions so the writer is never blocked for long.
pub const DELETE_CHUNK: usize = 10_000;

/// Hour buckets a summary returns at most (a year and a day).
pub const SUMMARY_HOURS_MAX: usize = 366 * 24;

/// Trunks a summary lists at most.
pub const SUMMARY_TRUNKS_MAX: usize = 1000;

/// Most audit entries one [`CdrStore::audit_list`] returns.
pub const AUDIT_LIMIT_MAX: usize = 1000;

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database said no (I/O, constraint, connection).
    #[error("database: {0}")]
    Db(String),
    /// A sealed number did not open (wrong key, tampering).
    #[error("sealed number: {0}")]
    Crypt(#[from] CryptError),
    /// A stored value does not parse.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The configuration does not allow opening the store; names the key.
    #[error("invalid `{key}`: {reason}")]
    Config {
        /// Dotted config key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Db(e.to_string())
    }
}

/// Which records: every field is optional and they combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdrFilter {
    /// Calls created at or after this.
    pub from: Option<UtcTime>,
    /// Calls created before this.
    pub to: Option<UtcTime>,
    /// Caller or callee (matched by search hash, never in clear).
    pub number: Option<String>,
    /// The account.
    pub account: Option<String>,
    /// The kind.
    pub kind: Option<CdrKind>,
    /// The status.
    pub status: Option<CdrStatus>,
    /// The trunk by name.
    pub trunk: Option<String>,
}

impl CdrFilter {
    /// The filter as the audit log records it: JSON, the number replaced by
    /// the first 16 hex digits of its search hash (enough to find its
    /// records again, nothing for a reader of the log).
    pub fn audit_text(&self, keys: &CdrKeys) -> String {
        let mut m = serde_json::Map::new();
        if let Some(t) = self.from {
            m.insert("from".into(), t.to_string().into());
        }
        if let Some(t) = self.to {
            m.insert("to".into(), t.to_string().into());
        }
        if let Some(n) = &self.number {
            let h = keys.search_hash(n);
            let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
            m.insert("number_hash".into(), hex.into());
        }
        if let Some(a) = &self.account {
            m.insert("account".into(), a.clone().into());
        }
        if let Some(k) = self.kind {
            m.insert("kind".into(), k.as_str().into());
        }
        if let Some(s) = self.status {
            m.insert("status".into(), s.as_str().into());
        }
        if let Some(t) = &self.trunk {
            m.insert("trunk".into(), t.clone().into());
        }
        serde_json::Value::Object(m).to_string()
    }
}

/// Where a page ends: the last record's creation time and row number.
/// Rendered as an opaque string (`<created_ms>.<seq>`) for the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// Creation time of the last record returned, ms since the epoch.
    pub created_ms: i64,
    /// Its row number.
    pub seq: i64,
}

impl Cursor {
    /// The API form.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_ms, self.seq)
    }

    /// Parses [`Cursor::encode`]'s output; anything else is None.
    pub fn decode(s: &str) -> Option<Cursor> {
        if s.len() > 48 {
            return None;
        }
        let (a, b) = s.split_once('.')?;
        let digits = |x: &str| {
            let x = x.strip_prefix('-').unwrap_or(x);
            !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit())
        };
        if !digits(a) || !digits(b) {
            return None;
        }
        Some(Cursor {
            created_ms: a.parse().ok()?,
            seq: b.parse().ok()?,
        })
    }
}

/// One page of [`CdrStore::search`]: newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdrPage {
    /// The records.
    pub records: Vec<Cdr>,
    /// Where the next page starts; None on the last page.
    pub next: Option<Cursor>,
}

/// Calls of one status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusCount {
    /// The status.
    pub status: String,
    /// Calls.
    pub calls: u64,
}

/// Calls begun in one hour.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HourCount {
    /// Start of the hour (UTC).
    pub hour: UtcTime,
    /// Calls.
    pub calls: u64,
}

/// Calls through one trunk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrunkCount {
    /// The trunk's name ("" for calls that reached none).
    pub trunk: String,
    /// Calls.
    pub calls: u64,
    /// Of which answered.
    pub answered: u64,
}

/// [`CdrStore::summary`]: counts over the filter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Calls.
    pub calls: u64,
    /// Of which answered.
    pub answered: u64,
    /// `answered / calls` (0 with no calls).
    pub answer_rate: f64,
    /// Mean billable seconds of answered calls (0 with none).
    pub average_duration_s: f64,
    /// Calls by status, most first.
    pub by_status: Vec<StatusCount>,
    /// Calls per hour of creation, in time order (hours without calls
    /// left out).
    pub per_hour: Vec<HourCount>,
    /// Calls per trunk, most first.
    pub per_trunk: Vec<TrunkCount>,
}

/// An entry to append to the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// When.
    pub at: UtcTime,
    /// Who: the token subject, or `retention` for the job.
    pub who: String,
    /// What: `search`, `get`, `export`, `summary`, `erase`, `retention`,
    /// `audit`.
    pub action: String,
    /// The filter ([`CdrFilter::audit_text`]) or other parameters.
    pub filter: String,
    /// Rows read, exported or deleted.
    pub rows: u64,
}

/// A stored audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Its number (increasing).
    pub id: i64,
    /// When.
    pub at: UtcTime,
    /// Who.
    pub who: String,
    /// What.
    pub action: String,
    /// With which filter.
    pub filter: String,
    /// How many rows.
    pub rows: u64,
}

/// A call-record store. Every method may block (disk, network); callers
/// on an async runtime use a blocking pool.
pub trait CdrStore: Send + Sync + 'static {
    /// Stores records in one transaction: durable when this returns `Ok`
    /// (see the module docs). A call id already stored is skipped.
    /// Returns the records newly stored.
    fn insert_batch(&self, batch: &[Cdr]) -> Result<u64, StoreError>;

    /// One record by call id.
    fn get(&self, call_id: &str) -> Result<Option<Cdr>, StoreError>;

    /// Records matching `f`, newest first, after `after`, at most `limit`
    /// (capped at [`PAGE_LIMIT_MAX`]).
    fn search(
        &self,
        f: &CdrFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<CdrPage, StoreError>;

    /// Every record matching `f`, newest first, handed to `sink` one at a
    /// time; memory stays at [`EXPORT_CHUNK`] records. Stops at the first
    /// error of `sink`. Returns the records handed over.
    fn export(
        &self,
        f: &CdrFilter,
        sink: &mut dyn FnMut(&Cdr) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut after = None;
        let mut n = 0u64;
        loop {
            let page = self.search(f, after, EXPORT_CHUNK)?;
            for r in &page.records {
                sink(r)?;
                n += 1;
            }
            match page.next {
                Some(c) => after = Some(c),
                None => return Ok(n),
            }
        }
    }

    /// Counts over `f` ([`Summary`]).
    fn summary(&self, f: &CdrFilter) -> Result<Summary, StoreError>;

    /// Deletes records created before `before`; returns how many.
    fn delete_older_than(&self, before: UtcTime) -> Result<u64, StoreError>;

    /// Deletes every record of `account`; returns how many.
    fn erase_account(&self, account: &str) -> Result<u64, StoreError>;

    /// Appends to the audit log; returns the entry's id.
    fn audit_append(&self, e: &AuditRecord) -> Result<i64, StoreError>;

    /// Audit entries, newest first, with ids below `before_id`, at most
    /// `limit` (capped at [`AUDIT_LIMIT_MAX`]).
    fn audit_list(
        &self,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// The keys numbers are sealed with (for audit texts and search).
    fn keys(&self) -> &CdrKeys;
}

/// A value bound to a statement.
#[derive(Clone, Debug)]
pub enum Val {
    /// An integer.
    I(i64),
    /// An integer or NULL.
    OptI(Option<i64>),
    /// Text.
    T(String),
    /// Text or NULL.
    OptT(Option<String>),
    /// Bytes.
    B(Vec<u8>),
}

/// One result row, by column index.
pub trait Row {
    /// An integer column (None: NULL).
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError>;
    /// A text column (None: NULL).
    fn text(&self, i: usize) -> Result<Option<String>, StoreError>;
    /// A bytes column (None: NULL).
    fn blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError>;
}

/// SQL placeholder style.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `?1`.
    Sqlite,
    /// `$1`.
    Postgres,
}

impl Dialect {
    fn ph(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

/// What [`SqlStore`] needs of a database.
pub trait Db: Send + Sync + 'static {
    /// Its placeholder style.
    fn dialect(&self) -> Dialect;
    /// Runs one statement; returns the rows changed.
    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError>;
    /// Runs `sql` once per argument list, all in one transaction; returns
    /// the rows changed.
    fn execute_many(&self, sql: &str, rows: &[Vec<Val>]) -> Result<u64, StoreError>;
    /// Runs a query, handing each row to `f`.
    fn query(
        &self,
        sql: &str,
        args: &[Val],
        f: &mut dyn FnMut(&dyn Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// The columns every record query selects, in [`SqlStore::decode`]'s order.
const COLS: &str = "seq, call_id, kind, account, caller, callee, trunk, created_ms, ringing_ms, \
    answered_ms, ended_ms, duration_ms, billable_s, status, sip_code, q850, hangup, quality, dtmf";

/// [`CdrStore`] over any [`Db`].
pub struct SqlStore<D: Db> {
    db: D,
    keys: CdrKeys,
}

impl<D: Db> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &self.db.dialect())
            .field("keys", &self.keys)
            .finish()
    }
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl<D: Db> SqlStore<D> {
    /// A store over an opened database (schema already in place).
    pub fn new(db: D, keys: CdrKeys) -> SqlStore<D> {
        SqlStore { db, keys }
    }

    /// The database.
    pub fn db(&self) -> &D {
        &self.db
    }

    /// `WHERE ...` for `f` (and the cursor), with its arguments. Values
    /// are always bound, never spliced into the SQL.
    fn where_clause(&self, f: &CdrFilter, after: Option<Cursor>) -> (String, Vec<Val>) {
        let d = self.db.dialect();
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Val> = Vec::new();
        let bind = |args: &mut Vec<Val>, v: Val| {
            args.push(v);
            d.ph(args.len())
        };
        if let Some(t) = f.from {
            conds.push(format!(
                "created_ms >= {}",
                bind(&mut args, Val::I(t.unix_ms))
            ));
        }
        if let Some(t) = f.to {
            conds.push(format!(
                "created_ms < {}",
                bind(&mut args, Val::I(t.unix_ms))
            ));
        }
        if let Some(n) = &f.number {
            let h = self.keys.search_hash(n).to_vec();
            let a = bind(&mut args, Val::B(h.clone()));
            let b = bind(&mut args, Val::B(h));
            conds.push(format!("(caller_h = {a} OR callee_h = {b})"));
        }
        if let Some(a) = &f.account {
            conds.push(format!("account = {}", bind(&mut args, Val::T(a.clone()))));
        }
        if let Some(k) = f.kind {
            conds.push(format!(
                "kind = {}",
                bind(&mut args, Val::T(k.as_str().into()))
            ));
        }
        if let Some(s) = f.status {
            conds.push(format!(
                "status = {}",
                bind(&mut args, Val::T(s.as_str().into()))
            ));
        }
        if let Some(t) = &f.trunk {
            conds.push(format!("trunk = {}", bind(&mut args, Val::T(t.clone()))));
        }
        if let Some(c) = after {
            // A row-value comparison, which both databases turn into a range
            // on the (created_ms, seq) index: every page (and an export's
            // every chunk) starts where the last ended instead of scanning
            // past the rows already sent, as `a < x OR (a = x AND ...)` did.
            let a = bind(&mut args, Val::I(c.created_ms));
            let s = bind(&mut args, Val::I(c.seq));
            conds.push(format!("(created_ms, seq) < ({a}, {s})"));
        }
        if conds.is_empty() {
            (String::new(), args)
        } else {
            (format!(" WHERE {}", conds.join(" AND ")), args)
        }
    }

    fn encode(&self, c: &Cdr) -> Result<Vec<Val>, StoreError> {
        let mut rng = rand::thread_rng();
        let quality = serde_json::to_string(&[c.quality_a, c.quality_b])
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(vec![
            Val::T(c.call_id.clone()),
            Val::T(c.kind.as_str().into()),
            Val::T(c.account.clone()),
            Val::B(
                self.keys
                    .seal(&mut rng, "caller", &c.call_id, c.caller.as_bytes()),
            ),
            Val::B(self.keys.search_hash(&c.caller).to_vec()),
            Val::B(
                self.keys
                    .seal(&mut rng, "callee", &c.call_id, c.callee.as_bytes()),
            ),
            Val::B(self.keys.search_hash(&c.callee).to_vec()),
            Val::OptT(c.trunk.clone()),
            Val::I(c.created.unix_ms),
            Val::OptI(c.ringing.map(|t| t.unix_ms)),
            Val::OptI(c.answered.map(|t| t.unix_ms)),
            Val::I(c.ended.unix_ms),
            Val::I(i64_of(c.duration_ms)),
            Val::I(i64_of(c.billable_s)),
            Val::T(c.status.as_str().into()),
            Val::I(i64::from(c.sip_code)),
            Val::I(i64::from(c.q850_cause)),
            Val::T(c.hangup.as_str().into()),
            Val::T(quality),
            Val::OptT(c.dtmf.clone()),
        ])
    }

    /// A record from a row of [`COLS`], with its cursor.
    fn decode(&self, r: &dyn Row) -> Result<(Cdr, Cursor), StoreError> {
        let need_i = |i: usize| {
            r.int(i)?
                .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
        };
        let need_t = |i: usize| {
            r.text(i)?
                .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
        };
        let need_b = |i: usize| {
            r.blob(i)?
                .ok_or_else(|| StoreError::Corrupt(format!("column {i} is NULL")))
        };
        let seq = need_i(0)?;
        let call_id = need_t(1)?;
        let kind: CdrKind = need_t(2)?.parse().map_err(StoreError::Corrupt)?;
        let caller = self.keys.open_str("caller", &call_id, &need_b(4)?)?;
        let callee = self.keys.open_str("callee", &call_id, &need_b(5)?)?;
        let created_ms = need_i(7)?;
        let status: CdrStatus = need_t(13)?.parse().map_err(StoreError::Corrupt)?;
        let hangup: HangupSide = need_t(16)?.parse().map_err(StoreError::Corrupt)?;
        let [quality_a, quality_b]: [LegQuality; 2] = serde_json::from_str(&need_t(17)?)
            .map_err(|e| StoreError::Corrupt(format!("quality: {e}")))?;
        let cdr = Cdr {
            call_id,
            kind,
            account: need_t(3)?,
            caller,
            callee,
            trunk: r.text(6)?,
            created: UtcTime::from_unix_ms(created_ms),
            ringing: r.int(8)?.map(UtcTime::from_unix_ms),
            answered: r.int(9)?.map(UtcTime::from_unix_ms),
            ended: UtcTime::from_unix_ms(need_i(10)?),
            duration_ms: u64_of(need_i(11)?),
            billable_s: u64_of(need_i(12)?),
            status,
            sip_code: u16::try_from(need_i(14)?).unwrap_or(0),
            q850_cause: u8::try_from(need_i(15)?).unwrap_or(0),
            hangup,
            quality_a,
            quality_b,
            dtmf: r.text(18)?,
        };
        Ok((cdr, Cursor { created_ms, seq }))
    }

    fn count_query(
        &self,
        sql: &str,
        args: &[Val],
    ) -> Result<Vec<(Option<String>, i64, i64)>, StoreError> {
        let mut out = Vec::new();
        self.db.query(sql, args, &mut |r| {
            out.push((r.text(0)?, r.int(1)?.unwrap_or(0), r.int(2)?.unwrap_or(0)));
            Ok(())
        })?;
        Ok(out)
    }

    /// Deletes in chunks of [`DELETE_CHUNK`] rows matching `cond`.
    fn delete_chunked(&self, cond: &str, args: &[Val]) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM cdr WHERE seq IN (SELECT seq FROM cdr WHERE {cond} LIMIT {DELETE_CHUNK})"
        );
        let mut total = 0u64;
        loop {
            let n = self.db.execute(&sql, args)?;
            total += n;
            if n < DELETE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }
}

impl<D: Db> CdrStore for SqlStore<D> {
    fn insert_batch(&self, batch: &[Cdr]) -> Result<u64, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let d = self.db.dialect();
        let phs: Vec<String> = (1..=20).map(|i| d.ph(i)).collect();
        let sql = format!(
            "INSERT INTO cdr (call_id, kind, account, caller, caller_h, callee, callee_h, trunk, \
             created_ms, ringing_ms, answered_ms, ended_ms, duration_ms, billable_s, status, \
             sip_code, q850, hangup, quality, dtmf) VALUES ({}) ON CONFLICT (call_id) DO NOTHING",
            phs.join(", ")
        );
        let rows = batch
            .iter()
            .map(|c| self.encode(c))
            .collect::<Result<Vec<_>, _>>()?;
        self.db.execute_many(&sql, &rows)
    }

    fn get(&self, call_id: &str) -> Result<Option<Cdr>, StoreError> {
        let sql = format!(
            "SELECT {COLS} FROM cdr WHERE call_id = {}",
            self.db.dialect().ph(1)
        );
        let mut out = None;
        self.db.query(&sql, &[Val::T(call_id.into())], &mut |r| {
            out = Some(self.decode(r)?.0);
            Ok(())
        })?;
        Ok(out)
    }

    fn search(
        &self,
        f: &CdrFilter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<CdrPage, StoreError> {
        let limit = limit.clamp(1, PAGE_LIMIT_MAX);
        let (wh, args) = self.where_clause(f, after);
        // One more than asked tells whether a next page exists.
        let sql = format!(
            "SELECT {COLS} FROM cdr{wh} ORDER BY created_ms DESC, seq DESC LIMIT {}",
            limit + 1
        );
        let mut records = Vec::with_capacity(limit.min(64));
        let mut last = None;
        let mut more = false;
        self.db.query(&sql, &args, &mut |r| {
            if records.len() == limit {
                more = true;
                return Ok(());
            }
            let (c, cur) = self.decode(r)?;
            records.push(c);
            last = Some(cur);
            Ok(())
        })?;
        Ok(CdrPage {
            records,
            next: if more { last } else { None },
        })
    }

    fn summary(&self, f: &CdrFilter) -> Result<Summary, StoreError> {
        let (wh, args) = self.where_clause(f, None);
        let totals = self.count_query(
            &format!(
                "SELECT NULL, COUNT(*), COALESCE(CAST(SUM(CASE WHEN answered_ms IS NOT NULL \
                 THEN 1 ELSE 0 END) AS BIGINT), 0) FROM cdr{wh}"
            ),
            &args,
        )?;
        let (_, calls, answered) = totals.first().cloned().unwrap_or((None, 0, 0));
        let billable = self.count_query(
            &format!(
                "SELECT NULL, COALESCE(CAST(SUM(billable_s) AS BIGINT), 0), CAST(0 AS BIGINT) FROM cdr{wh}{} \
                 answered_ms IS NOT NULL",
                if wh.is_empty() { " WHERE" } else { " AND" }
            ),
            &args,
        )?;
        let billable = billable.first().map_or(0, |r| r.1);
        let by_status = self
            .count_query(
                &format!(
                    "SELECT status, COUNT(*), CAST(0 AS BIGINT) FROM cdr{wh} GROUP BY status ORDER BY 2 DESC, 1"
                ),
                &args,
            )?
            .into_iter()
            .map(|(s, n, _)| StatusCount {
                status: s.unwrap_or_default(),
                calls: u64_of(n),
            })
            .collect();
        let mut per_hour = Vec::new();
        self.db.query(
            &format!(
                "SELECT created_ms / 3600000 AS h, COUNT(*) FROM cdr{wh} GROUP BY h ORDER BY h \
                 LIMIT {SUMMARY_HOURS_MAX}"
            ),
            &args,
            &mut |r| {
                per_hour.push(HourCount {
                    hour: UtcTime::from_unix_ms(r.int(0)?.unwrap_or(0).saturating_mul(3_600_000)),
                    calls: u64_of(r.int(1)?.unwrap_or(0)),
                });
                Ok(())
            },
        )?;
        let per_trunk = self
            .count_query(
                &format!(
                    "SELECT COALESCE(trunk, ''), COUNT(*), COALESCE(CAST(SUM(CASE WHEN \
                     answered_ms IS NOT NULL THEN 1 ELSE 0 END) AS BIGINT), 0) FROM cdr{wh} \
                     GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {SUMMARY_TRUNKS_MAX}"
                ),
                &args,
            )?
            .into_iter()
            .map(|(t, n, a)| TrunkCount {
                trunk: t.unwrap_or_default(),
                calls: u64_of(n),
                answered: u64_of(a),
            })
            .collect();
        Ok(Summary {
            calls: u64_of(calls),
            answered: u64_of(answered),
            answer_rate: if calls > 0 {
                answered as f64 / calls as f64
            } else {
                0.0
            },
            average_duration_s: if answered > 0 {
                billable as f64 / answered as f64
            } else {
                0.0
            },
            by_status,
            per_hour,
            per_trunk,
        })
    }

    fn delete_older_than(&self, before: UtcTime) -> Result<u64, StoreError> {
        let cond = format!("created_ms < {}", self.db.dialect().ph(1));
        self.delete_chunked(&cond, &[Val::I(before.unix_ms)])
    }

    fn erase_account(&self, account: &str) -> Result<u64, StoreError> {
        let cond = format!("account = {}", self.db.dialect().ph(1));
        self.delete_chunked(&cond, &[Val::T(account.into())])
    }

    fn audit_append(&self, e: &AuditRecord) -> Result<i64, StoreError> {
        let d = self.db.dialect();
        let sql = format!(
            "INSERT INTO cdr_audit (at_ms, who, action, filter_text, row_count) VALUES ({}, {}, {}, {}, {}) \
             RETURNING id",
            d.ph(1),
            d.ph(2),
            d.ph(3),
            d.ph(4),
            d.ph(5)
        );
        let mut id = None;
        self.db.query(
            &sql,
            &[
                Val::I(e.at.unix_ms),
                Val::T(cut(&e.who, 256).into()),
                Val::T(cut(&e.action, 32).into()),
                Val::T(cut(&e.filter, 4096).into()),
                Val::I(i64_of(e.rows)),
            ],
            &mut |r| {
                id = r.int(0)?;
                Ok(())
            },
        )?;
        id.ok_or_else(|| StoreError::Db("audit insert returned no id".into()))
    }

    fn audit_list(
        &self,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = limit.clamp(1, AUDIT_LIMIT_MAX);
        let (wh, args) = match before_id {
            Some(b) => (
                format!(" WHERE id < {}", self.db.dialect().ph(1)),
                vec![Val::I(b)],
            ),
            None => (String::new(), Vec::new()),
        };
        let sql = format!(
            "SELECT id, at_ms, who, action, filter_text, row_count FROM cdr_audit{wh} ORDER BY id DESC \
             LIMIT {limit}"
        );
        let mut out = Vec::new();
        self.db.query(&sql, &args, &mut |r| {
            out.push(AuditEntry {
                id: r.int(0)?.unwrap_or(0),
                at: UtcTime::from_unix_ms(r.int(1)?.unwrap_or(0)),
                who: r.text(2)?.unwrap_or_default(),
                action: r.text(3)?.unwrap_or_default(),
                filter: r.text(4)?.unwrap_or_default(),
                rows: u64_of(r.int(5)?.unwrap_or(0)),
            });
            Ok(())
        })?;
        Ok(out)
    }

    fn keys(&self) -> &CdrKeys {
        &self.keys
    }
}

/// The SQLite schema: records, their indexes, the audit log and the
/// triggers that keep it append-only.
const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cdr (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    caller BLOB NOT NULL,
    caller_h BLOB NOT NULL,
    callee BLOB NOT NULL,
    callee_h BLOB NOT NULL,
    trunk TEXT,
    created_ms INTEGER NOT NULL,
    ringing_ms INTEGER,
    answered_ms INTEGER,
    ended_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    billable_s INTEGER NOT NULL,
    status TEXT NOT NULL,
    sip_code INTEGER NOT NULL,
    q850 INTEGER NOT NULL,
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    filter_text TEXT NOT NULL,
    row_count INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS cdr_audit_no_update BEFORE UPDATE ON cdr_audit
BEGIN SELECT RAISE(ABORT, 'cdr_audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS cdr_audit_no_delete BEFORE DELETE ON cdr_audit
BEGIN SELECT RAISE(ABORT, 'cdr_audit is append-only'); END;
";

/// The embedded database: one SQLite file in WAL mode, one connection for
/// writes and one for reads (WAL lets them run side by side).
pub struct SqliteDb {
    write: Mutex<rusqlite::Connection>,
    read: Mutex<rusqlite::Connection>,
}

/// [`SqlStore`] on SQLite.
pub type SqliteStore = SqlStore<SqliteDb>;

fn sqlite_conn(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let c = rusqlite::Connection::open(path)
        .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL + FULL: the commit fsyncs the WAL (module docs).
    let mode: String = c.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Db(format!(
            "{}: journal_mode is {mode}, not wal",
            path.display()
        )));
    }
    c.execute_batch("PRAGMA synchronous = FULL; PRAGMA secure_delete = ON;")?;
    Ok(c)
}

impl SqliteDb {
    /// Opens (creating if needed) the file and its schema.
    pub fn open(path: &Path) -> Result<SqliteDb, StoreError> {
        let write = sqlite_conn(path)?;
        write.execute_batch(SQLITE_SCHEMA)?;
        let read = sqlite_conn(path)?;
        Ok(SqliteDb {
            write: Mutex::new(write),
            read: Mutex::new(read),
        })
    }

    /// Copies the WAL into the main file (`PRAGMA wal_checkpoint(TRUNCATE)`).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let c = self.write.lock().unwrap_or_else(|e| e.into_inner());
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    /// Runs raw SQL on the write connection (tests: proving the audit
    /// triggers hold against anyone).
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        let c = self.write.lock().unwrap_or_else(|e| e.into_inner());
        c.execute_batch(sql)?;
        Ok(())
    }
}

impl SqliteStore {
    /// Opens the embedded store at `path`.
    pub fn open(path: &Path, keys: CdrKeys) -> Result<SqliteStore, StoreError> {
        Ok(SqlStore::new(SqliteDb::open(path)?, keys))
    }
}

fn sqlite_params(args: &[Val]) -> Vec<&dyn rusqlite::ToSql> {
    args.iter()
        .map(|v| -> &dyn rusqlite::ToSql {
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

struct SqliteRow<'a, 'b>(&'a rusqlite::Row<'b>);

impl Row for SqliteRow<'_, '_> {
    fn int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        Ok(self.0.get(i)?)
    }
    fn text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.0.get(i)?)
    }
    fn blob(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(i)?)
    }
}

impl Db for SqliteDb {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, args: &[Val]) -> Result<u64, StoreError> {
        let c = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.prepare_cached(sql)?.execute(&*sqlite_params(args))?;
        Ok(n as u64)
    }

    fn execute_many(&self, sql: &str, rows: &[Vec<Val>]) -> Result<u64, StoreError> {
        let mut c = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let tx = c.transaction()?;
        let mut n = 0u64;
        {
            let mut st = tx.prepare_cached(sql)?;
            for r in rows {
                n += st.execute(&*sqlite_params(r))? as u64;
            }
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
        // An INSERT ... RETURNING goes to the write connection.
        let lock = if sql.starts_with("INSERT") {
            &self.write
        } else {
            &self.read
        };
        let c = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut st = c.prepare_cached(sql)?;
        let mut rows = st.query(&*sqlite_params(args))?;
        while let Some(r) = rows.next()? {
            f(&SqliteRow(r))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod test {
    //! One suite, [`suite`], run against every backend.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::cdr::crypt::test::keys;
    use crate::cdr::crypt::Cipher;
    use crate::cdr::record::test::sample;
    use crate::cdr::retention::run_retention;

    /// A directory removed on drop.
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "kolokol-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const HOUR: i64 = 3_600_000;
    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    /// Every store behaviour the API relies on. `raw` runs SQL on the
    /// backend directly (to prove the audit triggers hold against anyone).
    pub(crate) fn suite(s: &dyn CdrStore, raw: &dyn Fn(&str) -> Result<(), StoreError>) {
        // 30 records: 3 accounts, numbers alternating, one per 10 minutes.
        let mut batch = Vec::new();
        for i in 0..30i64 {
            let kind = if i % 3 == 0 {
                CdrKind::Notification
            } else {
                CdrKind::ClickToCall
            };
            let mut c = sample(
                &format!("c-{i}"),
                kind,
                &format!("acct-{}", i % 3),
                if i % 2 == 0 {
                    "+4930111111"
                } else {
                    "+4930222222"
                },
                T0 + i * 600_000,
                i % 4 != 0,
            );
            if i % 5 == 0 {
                c.trunk = Some("carrier-b".into());
            }
            batch.push(c);
        }
        assert_eq!(s.insert_batch(&batch).unwrap(), 30);
        // A retried batch does not duplicate.
        assert_eq!(s.insert_batch(&batch[..5]).unwrap(), 0);
        // Round trip, numbers decrypted.
        assert_eq!(s.get("c-7").unwrap().as_ref(), Some(&batch[7]));
        assert_eq!(s.get("nope").unwrap(), None);

        // Search by number (normalised, by HMAC), account, kind, status,
        // trunk and time range.
        let f = |g: &dyn Fn(&mut CdrFilter)| {
            let mut f = CdrFilter::default();
            g(&mut f);
            f
        };
        let count = |f: &CdrFilter| s.search(f, None, 1000).unwrap().records.len();
        assert_eq!(count(&f(&|f| f.number = Some("+49 30 111-111".into()))), 15);
        assert_eq!(
            count(&f(&|f| f.number = Some("sip:+4930222222@x".into()))),
            15
        );
        assert_eq!(count(&f(&|f| f.number = Some("+4930900100".into()))), 30);
        assert_eq!(count(&f(&|f| f.number = Some("+4930333333".into()))), 0);
        assert_eq!(count(&f(&|f| f.account = Some("acct-1".into()))), 10);
        assert_eq!(count(&f(&|f| f.kind = Some(CdrKind::Notification))), 10);
        assert_eq!(count(&f(&|f| f.status = Some(CdrStatus::NoAnswer))), 8);
        assert_eq!(count(&f(&|f| f.trunk = Some("carrier-b".into()))), 6);
        assert_eq!(count(&f(&|f| f.account = Some("x' OR '1'='1".into()))), 0);
        let hour1 = f(&|f| {
            f.from = Some(UtcTime::from_unix_ms(T0 + HOUR));
            f.to = Some(UtcTime::from_unix_ms(T0 + 2 * HOUR));
        });
        assert_eq!(count(&hour1), 6);

        // Cursor paging: newest first, no gaps or repeats.
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let p = s.search(&CdrFilter::default(), after, 7).unwrap();
            assert!(p.records.len() <= 7);
            seen.extend(p.records.iter().map(|c| c.call_id.clone()));
            match p.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        let want: Vec<String> = (0..30).rev().map(|i| format!("c-{i}")).collect();
        assert_eq!(seen, want);
        // The limit is capped.
        assert!(s.search(&CdrFilter::default(), None, 1_000_000).is_ok());

        // Export streams everything matching.
        let mut ids = Vec::new();
        let n = s
            .export(&f(&|f| f.account = Some("acct-2".into())), &mut |c| {
                ids.push(c.call_id.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 10);
        assert_eq!(ids.len(), 10);

        // Summary.
        let sum = s.summary(&CdrFilter::default()).unwrap();
        assert_eq!((sum.calls, sum.answered), (30, 22));
        assert!((sum.answer_rate - 22.0 / 30.0).abs() < 1e-9);
        assert!((sum.average_duration_s - 60.0).abs() < 1e-9);
        assert_eq!(
            sum.by_status,
            vec![
                StatusCount {
                    status: "completed".into(),
                    calls: 22
                },
                StatusCount {
                    status: "no-answer".into(),
                    calls: 8
                }
            ]
        );
        assert_eq!(sum.per_hour.len(), 5);
        assert_eq!(sum.per_hour[0].hour.unix_ms, T0);
        assert_eq!(sum.per_hour[0].calls, 6);
        assert_eq!(sum.per_trunk[0].trunk, "carrier-a");
        assert_eq!(sum.per_trunk[0].calls, 24);
        assert_eq!(sum.per_trunk[1].calls, 6);
        let empty = s.summary(&f(&|f| f.account = Some("none".into()))).unwrap();
        assert_eq!((empty.calls, empty.answer_rate), (0, 0.0));

        // Retention deletes exactly the expired records: those created
        // before T0 + 1 h (6 of them) with a 1-day period at T0 + 1 d + 1 h.
        let now = UtcTime::from_unix_ms(T0 + 86_400_000 + HOUR);
        assert_eq!(run_retention(s, 1, now).unwrap(), 6);
        assert_eq!(count(&CdrFilter::default()), 24);
        assert!(s.get("c-5").unwrap().is_none() && s.get("c-6").unwrap().is_some());
        assert_eq!(run_retention(s, 0, now).unwrap(), 0);

        // Erasure removes one account's records and nothing else.
        let before = count(&CdrFilter::default());
        let acct1 = count(&f(&|f| f.account = Some("acct-1".into())));
        assert_eq!(s.erase_account("acct-1").unwrap(), acct1 as u64);
        assert_eq!(count(&CdrFilter::default()), before - acct1);
        assert_eq!(count(&f(&|f| f.account = Some("acct-1".into()))), 0);
        assert_eq!(s.erase_account("acct-1").unwrap(), 0);

        // Audit: append, list newest first, paged; append-only even for
        // raw SQL.
        for i in 0..3 {
            s.audit_append(&AuditRecord {
                at: UtcTime::from_unix_ms(T0 + i),
                who: "auditor".into(),
                action: "search".into(),
                filter: format!("{{\"n\":{i}}}"),
                rows: i as u64,
            })
            .unwrap();
        }
        let all = s.audit_list(None, 100).unwrap();
        assert_eq!(all.len(), 4, "3 + the retention run");
        assert_eq!(all[0].filter, "{\"n\":2}");
        assert_eq!(all[3].who, "retention");
        assert_eq!(all[3].rows, 6);
        let older = s.audit_list(Some(all[0].id), 2).unwrap();
        assert_eq!(older.len(), 2);
        assert_eq!(older[0].id, all[1].id);
        for sql in [
            "DELETE FROM cdr_audit",
            "UPDATE cdr_audit SET rows = 0",
            "UPDATE cdr_audit SET row_count = 0",
        ] {
            assert!(raw(sql).is_err(), "{sql} must fail");
        }
        assert_eq!(s.audit_list(None, 100).unwrap().len(), 4);
    }

    fn sqlite_keys() -> CdrKeys {
        keys("k1", Cipher::Aes256Gcm)
    }

    #[test]
    fn store_suite_sqlite() {
        let dir = TempDir::new("store");
        let s = SqliteStore::open(&dir.path().join("cdr.sqlite"), sqlite_keys()).unwrap();
        suite(&s, &|sql| s.db().execute_raw(sql));
    }

    #[test]
    fn sqlite_file_has_no_number_in_clear_and_rotation_reads_old_rows() {
        let dir = TempDir::new("clear");
        let path = dir.path().join("cdr.sqlite");
        let numbers = ["+4930123456789", "+4930987654321"];
        {
            let s = SqliteStore::open(&path, sqlite_keys()).unwrap();
            let mut c = sample("old", CdrKind::Inbound, "", numbers[0], T0, true);
            c.caller = format!("sip:{}@carrier.example", numbers[1]);
            s.insert_batch(&[c]).unwrap();
        }
        // Rotated: k2 active (and the other cipher); k1 still reads "old".
        let s = SqliteStore::open(&path, keys("k2", Cipher::ChaCha20Poly1305)).unwrap();
        s.insert_batch(&[sample(
            "new",
            CdrKind::Inbound,
            "",
            numbers[0],
            T0 + 1,
            true,
        )])
        .unwrap();
        assert_eq!(s.get("old").unwrap().unwrap().callee, numbers[0]);
        assert_eq!(
            s.search(
                &CdrFilter {
                    number: Some(numbers[0].into()),
                    ..CdrFilter::default()
                },
                None,
                10
            )
            .unwrap()
            .records
            .len(),
            2
        );
        s.db().checkpoint().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Ok(w) = std::fs::read(path.with_extension("sqlite-wal")) {
            bytes.extend(w);
        }
        for n in numbers
            .iter()
            .chain(&["+4930900100"])
            .flat_map(|n| [n.to_string(), n.trim_start_matches('+').to_string()])
        {
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n} in clear in the database file"
            );
        }
        // A store without k1 cannot read the old row: an error, not garbage.
        drop(s);
        let only_k2 = SqliteStore::open(
            &path,
            CdrKeys::new(&[("k2", [2u8; 32])], "k2", Cipher::Aes256Gcm, [9u8; 32]).unwrap(),
        )
        .unwrap();
        assert!(matches!(only_k2.get("old"), Err(StoreError::Crypt(_))));
        assert!(only_k2.get("new").unwrap().is_some());
    }

    /// A PostgreSQL server of the test's own: `initdb` into a temp dir,
    /// `pg_ctl start` on a free port with its socket in the temp dir (as
    /// the `postgres` user when run as root, since initdb refuses root),
    /// stopped by its postmaster's PID on drop.
    pub(crate) struct TestPg {
        dir: TempDir,
        port: u16,
        pid: Option<i32>,
    }

    fn pg_bin() -> Option<PathBuf> {
        for v in ["17", "16", "15", "14"] {
            let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
            if p.join("initdb").exists() {
                return Some(p);
            }
        }
        None
    }

    impl TestPg {
        pub(crate) fn start() -> Option<TestPg> {
            let Some(bin) = pg_bin() else {
                assert!(
                    std::env::var_os("KOLOKOL_SKIP_PG").is_some(),
                    "PostgreSQL is not installed (apt-get install postgresql, as scripts/test.sh \
                     does); set KOLOKOL_SKIP_PG=1 to skip the PostgreSQL store tests"
                );
                return None;
            };
            let dir = TempDir::new("pg");
            let root = unsafe { libc::geteuid() } == 0;
            let run = |args: &[&str]| {
                let mut c = if root {
                    let mut c = std::process::Command::new("runuser");
                    c.args(["-u", "postgres", "--"]);
                    c.arg(args[0]);
                    c
                } else {
                    std::process::Command::new(args[0])
                };
                c.args(&args[1..]);
                let out = c.output().unwrap();
                assert!(
                    out.status.success(),
                    "{args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            if root {
                let out = std::process::Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .status()
                    .unwrap();
                assert!(out.success());
            }
            let data = dir.path().join("data");
            let data_s = data.to_str().unwrap().to_string();
            let sock = dir.path().to_str().unwrap().to_string();
            let initdb = bin.join("initdb");
            run(&[
                initdb.to_str().unwrap(),
                "-D",
                &data_s,
                "-U",
                "kolokol",
                "--auth=trust",
                "-E",
                "UTF8",
            ]);
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = dir.path().join("pg.log");
            let pg_ctl = bin.join("pg_ctl");
            run(&[
                pg_ctl.to_str().unwrap(),
                "-D",
                &data_s,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-o",
                &format!("-p {port} -k {sock} -c listen_addresses=''"),
                "start",
            ]);
            let pid = std::fs::read_to_string(data.join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
            Some(TestPg { dir, port, pid })
        }

        pub(crate) fn url(&self) -> String {
            format!(
                "host={} port={} user=kolokol dbname=postgres",
                self.dir.path().display(),
                self.port
            )
        }
    }

    impl Drop for TestPg {
        fn drop(&mut self) {
            if let Some(pid) = self.pid {
                // SIGINT: PostgreSQL's fast shutdown.
                unsafe { libc::kill(pid, libc::SIGINT) };
                for _ in 0..100 {
                    if unsafe { libc::kill(pid, 0) } != 0 {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
    }

    #[test]
    fn store_suite_postgres() {
        let Some(pg) = TestPg::start() else { return };
        let s = crate::cdr::pg::PgStore::connect(&pg.url(), sqlite_keys()).unwrap();
        suite(&s, &|sql| s.db().execute_raw(sql));
        // The schema is idempotent: a second host connecting finds it.
        let again = crate::cdr::pg::PgStore::connect(&pg.url(), sqlite_keys()).unwrap();
        assert_eq!(
            again
                .search(&CdrFilter::default(), None, 100)
                .unwrap()
                .records
                .len(),
            16
        );
        assert!(again.db().execute_raw("TRUNCATE cdr_audit").is_err());
    }
}
