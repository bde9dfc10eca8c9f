//! `cdrbench` — the call-detail-record store at scale (issue 6): the
//! writer's sustained rate, search latency and export memory, measured on
//! the real code paths over a store of `--records` records (default
//! 1,000,000).
//!
//! 1. **writer**: `--records` realistic records (below) go through
//!    [`CdrWriter`] with the configuration's defaults (`batch_max` 256,
//!    `batch_ms` 5, `queue_max` 65,536) as fast as it accepts them (a
//!    `Full` refusal is retried after 0.5 ms). The rate is records over the
//!    time from the first submit until `durable_through` covers the last
//!    ticket, i.e. until its batch's commit returned, on the store's fsync
//!    policy (SQLite: WAL, `synchronous = FULL`; both read back from the
//!    database and printed). A sampler (every 0.5 s) gives the rate per
//!    tenth of the run, so a slowdown as the table grows shows.
//! 2. **search**: `--searches` searches by number, each a random number of
//!    the pool (about `records / pool` matches), first page of 50, through
//!    both [`CdrStore::search`] (the query, HMAC index and decryption) and
//!    [`StoreCdrService::search`] (what the API handler calls: the same
//!    plus the audit-log insert, a durable commit of its own); then
//!    `--account-searches` by account and a random 24-hour window; then
//!    `--hot-searches` by one of the gateway's own presentation numbers,
//!    which are on about a fifth of all records each. Latencies are
//!    p50/p90/p99/max. The query plan of the number search is printed.
//! 3. **export**: the whole store through [`StoreCdrService::export`] and
//!    the API's CSV writer ([`csv_row`], chunks of [`EXPORT_CHUNK_BYTES`]
//!    taken off the buffer as the handler does) into `/dev/null`, while a
//!    sampler reads `VmRSS` every 0.5 s; the peak (and `VmHWM`, reset
//!    through `/proc/self/clear_refs` before the export) against the RSS
//!    before; the rows/s in each tenth of the export (a page's cost
//!    should not depend on where it is) and the plan of a page's query.
//!
//! The writer phase also reports the writer thread's CPU time and the
//! bytes this process wrote to storage (`/proc/self/io`), so a rate can
//! be told CPU-bound from I/O-bound.
//!
//! The records: numbers from a pool of `--pool` random German E.164
//! numbers; 40 % click-to-call and 40 % notifications from `--accounts`
//! accounts (caller: one of 4 presentation numbers, callee: the pool),
//! 15 % inbound (caller a `sip:` URI of the pool, callee the gateway's
//! number), 5 % ng-relay (both from the pool); creation times in order
//! over the last `--days` days with jitter; statuses, SIP codes, Q.850
//! causes, ringing/answer/end times, billable seconds, per-leg quality and
//! DTMF consistent with each kind; random UUID call ids. All from
//! `--seed`, so a `--keep`'t store can be measured again with `--reuse`.
//!
//! The store is SQLite at `--path` (default
//! `/tmp/kolokol-cdrbench-PID/cdr.sqlite`), deleted at the end unless
//! `--keep`. `--postgres` runs the same phases against a throw-away
//! PostgreSQL server it starts itself (initdb/pg_ctl from
//! `/usr/lib/postgresql/*/bin`, as the store tests do), `--pg-url URL`
//! against an existing one (its `cdr` tables must be empty).
//!
//! The machine (CPU model, cores, memory, kernel, file system of the
//! store, load average before and after), the date and the exact command
//! are printed and written to `--json FILE` with every figure.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kolokol::cdr::pg::PgStore;
use kolokol::cdr::service::StoreCdrService;
use kolokol::cdr::store::{Db, Val, EXPORT_CHUNK};
use kolokol::cdr::{
    Cdr, CdrFilter, CdrKeys, CdrKind, CdrStatus, CdrStore, CdrWriter, Cipher, HangupSide,
    LegQuality, SqliteStore, SubmitError, WriterConfig,
};
use kolokol::control::api::cdr::{csv_row, CSV_HEADER, EXPORT_CHUNK_BYTES};
use kolokol::control::api::{CdrQuery, CdrService, Principal, UtcTime};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

// The gateway's allocator, so RSS figures are the gateway's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage: cdrbench [options]

  --records N           records to write (default 1000000)
  --pool N              distinct citizen numbers (default 100000)
  --accounts N          portal accounts (default 200)
  --days N              creation times spread over the last N days (default 30)
  --searches N          searches by number (default 1000)
  --account-searches N  searches by account and 24 h window (default 200)
  --hot-searches N      searches by a presentation number (default 20)
  --page N              page size of every search (default 50)
  --seed N              record generator seed (default 1)
  --batch-max N         writer: records per commit (default: the config's, 256)
  --batch-ms N          writer: longest wait for a batch (default: the config's, 5)
  --path FILE           SQLite file (default /tmp/kolokol-cdrbench-PID/cdr.sqlite)
  --keep                keep the store at the end
  --reuse               skip the writer: the store at --path was written
                        by an earlier run with the same --records/--pool/
                        --accounts/--seed (and --keep)
  --no-export           skip the export phase
  --postgres            start a throw-away PostgreSQL server and use it
  --pg-url URL          use this PostgreSQL server (empty cdr tables)
  --json FILE           write every figure as JSON
";

#[derive(Clone, Debug)]
struct Args {
    records: u64,
    pool: usize,
    accounts: usize,
    days: u32,
    searches: usize,
    account_searches: usize,
    hot_searches: usize,
    page: usize,
    seed: u64,
    writer: WriterConfig,
    path: Option<PathBuf>,
    keep: bool,
    reuse: bool,
    export: bool,
    postgres: bool,
    pg_url: Option<String>,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        records: 1_000_000,
        pool: 100_000,
        accounts: 200,
        days: 30,
        searches: 1000,
        account_searches: 200,
        hot_searches: 20,
        page: 50,
        seed: 1,
        writer: WriterConfig::default(),
        path: None,
        keep: false,
        reuse: false,
        export: true,
        postgres: false,
        pg_url: None,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--keep" => a.keep = true,
            "--reuse" => a.reuse = true,
            "--no-export" => a.export = false,
            "--postgres" => a.postgres = true,
            "-h" | "--help" => return Err(String::new()),
            _ => {
                let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
                let num = |v: &str| -> Result<u64, String> {
                    v.replace('_', "")
                        .parse()
                        .map_err(|_| format!("{k}: {v:?} is not a number"))
                };
                match k.as_str() {
                    "--records" => a.records = num(&v)?,
                    "--pool" => a.pool = num(&v)? as usize,
                    "--accounts" => a.accounts = num(&v)? as usize,
                    "--days" => a.days = num(&v)? as u32,
                    "--searches" => a.searches = num(&v)? as usize,
                    "--account-searches" => a.account_searches = num(&v)? as usize,
                    "--hot-searches" => a.hot_searches = num(&v)? as usize,
                    "--page" => a.page = num(&v)? as usize,
                    "--seed" => a.seed = num(&v)?,
                    "--batch-max" => a.writer.batch_max = (num(&v)? as usize).max(1),
                    "--batch-ms" => a.writer.batch_wait = Duration::from_millis(num(&v)?),
                    "--path" => a.path = Some(PathBuf::from(v)),
                    "--pg-url" => a.pg_url = Some(v),
                    "--json" => a.json = Some(PathBuf::from(v)),
                    _ => return Err(format!("unknown option {k}")),
                }
            }
        }
    }
    if a.records == 0 || a.pool == 0 || a.accounts == 0 || a.days == 0 || a.page == 0 {
        return Err("--records, --pool, --accounts, --days and --page must be > 0".into());
    }
    if a.postgres && a.pg_url.is_some() {
        return Err("--postgres and --pg-url exclude each other".into());
    }
    Ok(a)
}

// ---------------------------------------------------------------- records

/// The gateway's presentation numbers (callers of originated calls).
const PRESENTATION: [&str; 4] = ["+4930901000", "+4930901001", "+4930901002", "+4930901003"];
/// The gateway's own number (callee of inbound calls).
const DID: &str = "+4930902000";
const TRUNKS: [&str; 3] = ["carrier-a", "carrier-b", "carrier-c"];
/// German mobile and city prefixes after +49.
const PREFIXES: [&str; 12] = [
    "151", "152", "157", "160", "170", "171", "176", "177", "179", "30", "40", "89",
];

/// Everything records are drawn from, deterministic in the seed.
struct Gen {
    rng: StdRng,
    pool: Vec<String>,
    accounts: usize,
    t0_ms: i64,
    span_ms: i64,
    n: u64,
}

fn uuid(rng: &mut StdRng) -> String {
    let a: u128 = rng.gen();
    let h = format!("{a:032x}");
    format!(
        "{}-{}-4{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Gen {
    fn new(a: &Args, now_ms: i64) -> Gen {
        let mut rng = StdRng::seed_from_u64(a.seed);
        let pool = (0..a.pool)
            .map(|_| {
                let p = PREFIXES[rng.gen_range(0..PREFIXES.len())];
                format!("+49{p}{:08}", rng.gen_range(0..100_000_000u32))
            })
            .collect();
        let span_ms = i64::from(a.days) * 86_400_000;
        Gen {
            // The records' stream is seeded apart from the pool's.
            rng: StdRng::seed_from_u64(a.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xcd7),
            pool,
            accounts: a.accounts,
            // Whole seconds so reruns on the same day overlap nicely.
            t0_ms: (now_ms - span_ms) / 1000 * 1000,
            span_ms,
            n: a.records,
        }
    }

    fn number(&mut self) -> String {
        self.pool[self.rng.gen_range(0..self.pool.len())].clone()
    }

    fn account(&mut self) -> String {
        format!("acct-{:03}", self.rng.gen_range(0..self.accounts))
    }

    /// Record `i` of `n`.
    fn record(&mut self, i: u64) -> Cdr {
        let step = (self.span_ms / self.n as i64).max(1);
        let created =
            self.t0_ms + (i as i64 * self.span_ms / self.n as i64) + self.rng.gen_range(0..step);
        let r: f64 = self.rng.gen();
        let kind = if r < 0.40 {
            CdrKind::ClickToCall
        } else if r < 0.80 {
            CdrKind::Notification
        } else if r < 0.95 {
            CdrKind::Inbound
        } else {
            CdrKind::NgRelay
        };
        let (account, caller, callee) = match kind {
            CdrKind::ClickToCall | CdrKind::Notification => {
                let acct = self.account();
                let p = PRESENTATION[self.rng.gen_range(0..PRESENTATION.len())].to_string();
                (acct, p, self.number())
            }
            CdrKind::Inbound => (
                String::new(),
                format!("sip:{}@carrier.example;user=phone", self.number()),
                DID.to_string(),
            ),
            CdrKind::NgRelay => (String::new(), self.number(), self.number()),
        };
        let s: f64 = self.rng.gen();
        let status = match kind {
            CdrKind::ClickToCall | CdrKind::Inbound | CdrKind::NgRelay => match s {
                s if s < 0.60 => CdrStatus::Completed,
                s if s < 0.80 => CdrStatus::NoAnswer,
                s if s < 0.90 => CdrStatus::Busy,
                s if s < 0.98 => CdrStatus::Failed,
                _ if kind == CdrKind::ClickToCall => CdrStatus::Cancelled,
                _ => CdrStatus::Failed,
            },
            CdrKind::Notification => match s {
                s if s < 0.30 => CdrStatus::Delivered,
                s if s < 0.60 => CdrStatus::Confirmed,
                s if s < 0.65 => CdrStatus::Rejected,
                s if s < 0.85 => CdrStatus::NoAnswer,
                s if s < 0.93 => CdrStatus::Busy,
                s if s < 0.99 => CdrStatus::Failed,
                _ => CdrStatus::RejectedByPolicy,
            },
        };
        let answered = matches!(
            status,
            CdrStatus::Completed
                | CdrStatus::Delivered
                | CdrStatus::Confirmed
                | CdrStatus::Rejected
        );
        let policy = status == CdrStatus::RejectedByPolicy;
        let ringing = (!policy && status != CdrStatus::Failed)
            .then(|| created + self.rng.gen_range(800..4_000));
        let answered_ms =
            answered.then(|| ringing.unwrap_or(created) + self.rng.gen_range(2_000..15_000));
        let ended = match answered_ms {
            Some(a) => a + self.rng.gen_range(10_000..300_000),
            None => ringing.unwrap_or(created) + self.rng.gen_range(0..30_000),
        };
        let (sip_code, q850) = match status {
            s if answered && s != CdrStatus::Cancelled => (200, 16),
            CdrStatus::NoAnswer => (480, 19),
            CdrStatus::Busy => (486, 17),
            CdrStatus::Cancelled => (487, 16),
            CdrStatus::RejectedByPolicy => (403, 21),
            _ => {
                if self.rng.gen_bool(0.5) {
                    (503, 41)
                } else {
                    (404, 1)
                }
            }
        };
        let hangup = if policy || status == CdrStatus::Failed {
            HangupSide::Gateway
        } else if self.rng.gen_bool(0.5) {
            HangupSide::Caller
        } else {
            HangupSide::Callee
        };
        let quality = |rng: &mut StdRng| match answered_ms {
            Some(a) => {
                let packets = ((ended - a) / 20) as u64;
                LegQuality {
                    packets: Some(packets),
                    lost: Some(rng.gen_range(0..=packets / 100)),
                    jitter_us: Some(rng.gen_range(200..20_000)),
                    mos_x100: Some(rng.gen_range(350..=440)),
                }
            }
            None => LegQuality::default(),
        };
        let quality_a = quality(&mut self.rng);
        let quality_b = quality(&mut self.rng);
        let trunk = match kind {
            CdrKind::NgRelay => None,
            _ if policy => None,
            _ => Some(TRUNKS[self.rng.gen_range(0..TRUNKS.len())].to_string()),
        };
        Cdr {
            call_id: uuid(&mut self.rng),
            kind,
            account,
            caller,
            callee,
            trunk,
            created: UtcTime::from_unix_ms(created),
            ringing: ringing.map(UtcTime::from_unix_ms),
            answered: answered_ms.map(UtcTime::from_unix_ms),
            ended: UtcTime::from_unix_ms(ended),
            duration_ms: (ended - created) as u64,
            billable_s: answered_ms.map_or(0, |a| ((ended - a) as u64).div_ceil(1000)),
            status,
            sip_code,
            q850_cause: q850,
            hangup,
            quality_a,
            quality_b,
            dtmf: match status {
                CdrStatus::Confirmed => Some("1".into()),
                CdrStatus::Rejected => Some("2".into()),
                _ => None,
            },
        }
    }
}

// ---------------------------------------------------------------- machine

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `VmRSS` (or another `Vm*` line) of this process, KiB.
fn vm_kib(field: &str) -> u64 {
    read("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes this process caused to be written to storage
/// (`/proc/self/io` `write_bytes`).
fn write_bytes() -> u64 {
    read("/proc/self/io")
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds of this process's thread named `name` (schedstat).
fn thread_cpu_s(name: &str) -> Option<f64> {
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let p = e.path();
        if read(&p.join("comm").to_string_lossy()).trim() == name {
            let ns: u64 = read(&p.join("schedstat").to_string_lossy())
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            return Some(ns as f64 / 1e9);
        }
    }
    None
}

/// CPU seconds (user + system) of the whole process so far.
fn process_cpu_s() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn loadavg() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file system holding `p`: (mount point, type).
fn fs_of(p: &Path) -> (String, String) {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let mut best = (String::new(), String::new());
    for l in read("/proc/mounts").lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 3 && p.starts_with(f[1]) && f[1].len() >= best.0.len() {
            best = (f[1].to_string(), f[2].to_string());
        }
    }
    best
}

fn machine() -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    // Tracked files changed since the commit (at run time): "-dirty".
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    let commit = if dirty && !commit.is_empty() {
        format!("{commit}-dirty")
    } else {
        commit
    };
    json!({
        "cpu": cpu,
        "cores": thread::available_parallelism().map_or(0, |n| n.get()),
        "mem_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "commit": commit,
    })
}

// ---------------------------------------------------------------- sampling

/// A thread reading a progress counter and VmRSS every `every`.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<(f64, u64, u64)>>,
}

impl Sampler {
    fn start(every: Duration, progress: impl Fn() -> u64 + Send + 'static) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let t0 = Instant::now();
            let mut v = Vec::new();
            loop {
                v.push((t0.elapsed().as_secs_f64(), progress(), vm_kib("VmRSS:")));
                if s.load(Ordering::Relaxed) {
                    return v;
                }
                let next = t0 + every * v.len() as u32;
                while !s.load(Ordering::Relaxed) && Instant::now() < next {
                    thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Sampler { stop, handle }
    }

    /// (seconds since start, progress, RSS KiB) samples, the last one at
    /// the stop.
    fn stop(self) -> Vec<(f64, u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Nearest-rank percentiles of latencies in ms.
fn lat_stats(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return json!({ "n": 0 });
    }
    v.sort_by(f64::total_cmp);
    let p = |q: f64| {
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i] * 1000.0).round() / 1000.0
    };
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({
        "n": v.len(),
        "p50_ms": p(0.50),
        "p90_ms": p(0.90),
        "p99_ms": p(0.99),
        "max_ms": p(1.0),
        "mean_ms": (mean * 1000.0).round() / 1000.0,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- backends

enum Backend {
    Sqlite(Arc<SqliteStore>),
    Pg(Arc<PgStore>),
}

impl Backend {
    fn store(&self) -> Arc<dyn CdrStore> {
        match self {
            Backend::Sqlite(s) => s.clone(),
            Backend::Pg(s) => s.clone(),
        }
    }

    /// Runs a query, each row's first `cols` text columns joined by " | ".
    fn rows(&self, sql: &str, args: &[Val], cols: &[usize]) -> Vec<String> {
        let mut out = Vec::new();
        let mut f = |r: &dyn kolokol::cdr::store::Row| {
            let v: Vec<String> = cols
                .iter()
                .map(|&i| {
                    r.text(i)
                        .ok()
                        .flatten()
                        .or_else(|| r.int(i).ok().flatten().map(|n| n.to_string()))
                        .unwrap_or_default()
                })
                .collect();
            out.push(v.join(" | "));
            Ok(())
        };
        let r = match self {
            Backend::Sqlite(s) => s.db().query(sql, args, &mut f),
            Backend::Pg(s) => s.db().query(sql, args, &mut f),
        };
        if let Err(e) = r {
            out.push(format!("error: {e}"));
        }
        out
    }

    fn count(&self) -> u64 {
        self.rows("SELECT COUNT(*) FROM cdr", &[], &[0])
            .first()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// How durable a commit is, as the database reports it.
    fn durability(&self) -> Value {
        match self {
            Backend::Sqlite(_) => {
                let one = |sql: &str| self.rows(sql, &[], &[0]).join(",");
                json!({
                    "journal_mode": one("PRAGMA journal_mode"),
                    // 2 = FULL
                    "synchronous": one("PRAGMA synchronous"),
                })
            }
            Backend::Pg(_) => {
                let one = |k: &str| self.rows(&format!("SHOW {k}"), &[], &[0]).join(",");
                json!({
                    "synchronous_commit": one("synchronous_commit"),
                    "fsync": one("fsync"),
                    "wal_sync_method": one("wal_sync_method"),
                })
            }
        }
    }

    /// The plan of `SELECT * FROM cdr WHERE cond ORDER BY created_ms DESC,
    /// seq DESC LIMIT limit`, as the store's queries have it (`cond` with
    /// SQLite's `?N`, turned into `$N` for PostgreSQL).
    fn plan(&self, cond: &str, args: &[Val], limit: usize) -> Vec<String> {
        let order = format!("ORDER BY created_ms DESC, seq DESC LIMIT {limit}");
        match self {
            Backend::Sqlite(_) => self.rows(
                &format!("EXPLAIN QUERY PLAN SELECT * FROM cdr WHERE {cond} {order}"),
                args,
                &[3],
            ),
            Backend::Pg(_) => self.rows(
                &format!(
                    "EXPLAIN SELECT * FROM cdr WHERE {} {order}",
                    cond.replace('?', "$")
                ),
                args,
                &[0],
            ),
        }
    }

    /// The plan of the search by `number`.
    fn number_plan(&self, keys: &CdrKeys, number: &str, page: usize) -> Vec<String> {
        let h = keys.search_hash(number).to_vec();
        self.plan(
            "(caller_h = ?1 OR callee_h = ?2)",
            &[Val::B(h.clone()), Val::B(h)],
            page + 1,
        )
    }

    /// The plan of an export page after the first (the cursor condition).
    fn export_plan(&self, at_ms: i64) -> Vec<String> {
        self.plan(
            "(created_ms < ?1 OR (created_ms = ?2 AND seq < ?3))",
            &[Val::I(at_ms), Val::I(at_ms), Val::I(i64::MAX)],
            EXPORT_CHUNK + 1,
        )
    }
}

/// A PostgreSQL server of the run's own (the store tests' recipe): initdb
/// into a temp dir, started on a free port with its socket there (as the
/// `postgres` user when root), stopped on drop.
struct TempPg {
    dir: PathBuf,
    port: u16,
    pid: Option<i32>,
}

impl TempPg {
    fn start() -> Result<TempPg, String> {
        let bin = ["17", "16", "15", "14"]
            .iter()
            .map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")))
            .find(|p| p.join("initdb").exists())
            .ok_or("PostgreSQL is not installed (apt-get install postgresql)")?;
        let dir = std::env::temp_dir().join(format!("kolokol-cdrbench-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let root = unsafe { libc::geteuid() } == 0;
        let run = |args: &[&str]| -> Result<(), String> {
            let mut c = if root {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--", args[0]]);
                c
            } else {
                std::process::Command::new(args[0])
            };
            let out = c.args(&args[1..]).output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{args:?}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        if root {
            std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| e.to_string())?;
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().to_string();
        let initdb = bin.join("initdb").to_string_lossy().to_string();
        run(&[
            &initdb,
            "-D",
            &data_s,
            "-U",
            "kolokol",
            "--auth=trust",
            "-E",
            "UTF8",
        ])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let pg_ctl = bin.join("pg_ctl").to_string_lossy().to_string();
        let log = dir.join("pg.log").to_string_lossy().to_string();
        run(&[
            &pg_ctl,
            "-D",
            &data_s,
            "-l",
            &log,
            "-w",
            "-o",
            &format!("-p {port} -k {} -c listen_addresses=''", dir.display()),
            "start",
        ])?;
        let pid = read(&format!("{data_s}/postmaster.pid"))
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok());
        Ok(TempPg { dir, port, pid })
    }

    fn url(&self) -> String {
        format!(
            "host={} port={} user=kolokol dbname=postgres",
            self.dir.display(),
            self.port
        )
    }
}

impl Drop for TempPg {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SIGINT: PostgreSQL's fast shutdown.
            unsafe { libc::kill(pid, libc::SIGINT) };
            for _ in 0..200 {
                if unsafe { libc::kill(pid, 0) } != 0 {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- phases

fn phase_writer(a: &Args, store: Arc<dyn CdrStore>, gen: &mut Gen) -> Value {
    let cfg = a.writer;
    let writer = Arc::new(CdrWriter::spawn(store, cfg).expect("spawn the writer"));
    let w = writer.clone();
    let sampler = Sampler::start(Duration::from_millis(500), move || w.durable_through());
    let (wb0, cpu0) = (write_bytes(), process_cpu_s());
    let t0 = Instant::now();
    let mut last = None;
    let mut full_waits = 0u64;
    for i in 0..a.records {
        let mut c = gen.record(i);
        loop {
            match writer.submit(c) {
                Ok(t) => {
                    last = Some(t);
                    break;
                }
                Err(SubmitError::Full(back)) => {
                    full_waits += 1;
                    c = *back;
                    thread::sleep(Duration::from_micros(500));
                }
                Err(SubmitError::Stopped(_)) => panic!("the writer stopped"),
            }
        }
    }
    let submitted = t0.elapsed();
    let last = last.expect("at least one record");
    writer
        .wait_durable(last, Duration::from_secs(3600))
        .expect("every record durable");
    let durable = t0.elapsed();
    let writer_cpu = thread_cpu_s("kolokol-cdr");
    let (wb, cpu) = (write_bytes() - wb0, process_cpu_s() - cpu0);
    let samples = sampler.stop();
    let stats = writer.stats();
    let batches = stats.batches.load(Ordering::Relaxed);
    let committed = stats.committed.load(Ordering::Relaxed);
    let commit_errors = stats.commit_errors.load(Ordering::Relaxed);
    writer.shutdown();
    // Rate per tenth of the records: when durable_through crossed each
    // tenth (sampled every 0.5 s; the last tenth ends at `durable`).
    let n = a.records;
    let mut tenths = Vec::new();
    let mut prev_t = 0.0;
    let mut prev_n = 0u64;
    for k in 1..=10u64 {
        let goal = n * k / 10;
        let (t, got) = if k == 10 {
            (durable.as_secs_f64(), n)
        } else {
            match samples.iter().find(|s| s.1 >= goal) {
                Some(s) => (s.0, s.1),
                None => continue,
            }
        };
        if t > prev_t && got > prev_n {
            tenths.push(((got - prev_n) as f64 / (t - prev_t)).round() as u64);
            prev_t = t;
            prev_n = got;
        }
    }
    let peak_rss = samples.iter().map(|s| s.2).max().unwrap_or(0);
    json!({
        "records": n,
        "config": { "batch_max": cfg.batch_max, "batch_ms": cfg.batch_wait.as_millis() as u64,
                    "queue_max": cfg.queue_max },
        "durable_s": (durable.as_secs_f64() * 1000.0).round() / 1000.0,
        "records_per_s_durable": (n as f64 / durable.as_secs_f64()).round() as u64,
        "submit_s": (submitted.as_secs_f64() * 1000.0).round() / 1000.0,
        "records_per_s_by_tenth": tenths,
        "batches": batches,
        "mean_batch": if batches > 0 { (committed as f64 / batches as f64 * 10.0).round() / 10.0 } else { 0.0 },
        "commit_errors": commit_errors,
        "full_waits": full_waits,
        "peak_rss_mib": (peak_rss as f64 / 1024.0 * 10.0).round() / 10.0,
        "writer_thread_cpu_s": writer_cpu.map(|c| (c * 100.0).round() / 100.0),
        "process_cpu_s": (cpu * 100.0).round() / 100.0,
        "storage_write_mib": (wb as f64 / 1048576.0).round(),
        "storage_write_kib_per_record": (wb as f64 / 1024.0 / n as f64 * 10.0).round() / 10.0,
    })
}

fn principal(scope: &str) -> Principal {
    Principal {
        subject: "cdrbench".into(),
        scopes: HashSet::from([scope.to_string()]),
        account: None,
    }
}

/// Runs `n` searches two ways (store, service), alternating, each with a
/// filter of its own from `filter`; returns (store, service, rows found).
fn search_both(
    n: usize,
    page: usize,
    store: &dyn CdrStore,
    svc: &StoreCdrService,
    filter: &mut dyn FnMut() -> CdrFilter,
) -> (Value, Value, Value) {
    let who = principal("cdr:read");
    let mut lat_store = Vec::with_capacity(n);
    let mut lat_svc = Vec::with_capacity(n);
    let mut rows = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let f = filter();
        let t = Instant::now();
        let p = store.search(&f, None, page).expect("search");
        lat_store.push(ms(t.elapsed()));
        rows.push(p.records.len());
        let q = CdrQuery {
            filter: filter(),
            cursor: None,
            limit: page,
        };
        let t = Instant::now();
        let p = svc.search(&who, &q).expect("service search");
        lat_svc.push(ms(t.elapsed()));
        rows.push(p.records.len());
    }
    let empty = rows.iter().filter(|&&r| r == 0).count();
    let full = rows.iter().filter(|&&r| r == page).count();
    let mean = rows.iter().sum::<usize>() as f64 / rows.len().max(1) as f64;
    (
        lat_stats(lat_store),
        lat_stats(lat_svc),
        json!({
            "mean_rows": (mean * 10.0).round() / 10.0,
            "min_rows": rows.iter().min().copied().unwrap_or(0),
            "max_rows": rows.iter().max().copied().unwrap_or(0),
            "searches_with_no_row": empty,
            "searches_with_a_full_page": full,
        }),
    )
}

fn phase_search(a: &Args, be: &Backend, gen: &Gen) -> Value {
    let store = be.store();
    let svc = StoreCdrService::new(store.clone());
    let mut rng = StdRng::seed_from_u64(a.seed ^ 0x5ea2c4);
    let plan = be.number_plan(store.keys(), &gen.pool[0], a.page);
    let hot_plan = be.number_plan(store.keys(), PRESENTATION[0], a.page);

    let pool = &gen.pool;
    let (num_store, num_svc, num_rows) =
        search_both(a.searches, a.page, &*store, &svc, &mut || CdrFilter {
            number: Some(pool[rng.gen_range(0..pool.len())].clone()),
            ..CdrFilter::default()
        });

    let mut rng = StdRng::seed_from_u64(a.seed ^ 0xacc7);
    let (t0, span, accounts) = (gen.t0_ms, gen.span_ms, gen.accounts);
    let (acc_store, acc_svc, acc_rows) =
        search_both(a.account_searches, a.page, &*store, &svc, &mut || {
            let from = t0 + rng.gen_range(0..(span - 86_400_000).max(1));
            CdrFilter {
                account: Some(format!("acct-{:03}", rng.gen_range(0..accounts))),
                from: Some(UtcTime::from_unix_ms(from)),
                to: Some(UtcTime::from_unix_ms(from + 86_400_000)),
                ..CdrFilter::default()
            }
        });

    let mut hot = Vec::new();
    let mut hot_rows = 0;
    for i in 0..a.hot_searches {
        let f = CdrFilter {
            number: Some(PRESENTATION[i % PRESENTATION.len()].into()),
            ..CdrFilter::default()
        };
        let t = Instant::now();
        let p = store.search(&f, None, a.page).expect("search");
        hot.push(ms(t.elapsed()));
        hot_rows = p.records.len();
    }
    json!({
        "page": a.page,
        "number_plan": plan,
        "by_number": { "store": num_store, "service": num_svc, "rows": num_rows },
        "by_account_24h": { "store": acc_store, "service": acc_svc, "rows": acc_rows },
        "by_presentation_number": {
            "store": lat_stats(hot),
            "plan": hot_plan,
            "matching_rows_each": a.records * 4 / 5 / PRESENTATION.len() as u64,
            "rows": hot_rows,
        },
    })
}

fn phase_export(be: &Backend, gen: &Gen) -> Value {
    let plan = be.export_plan(gen.t0_ms + gen.span_ms / 2);
    let expect = gen.n;
    let mut at_tenth: Vec<f64> = Vec::with_capacity(10);
    let store = be.store();
    let svc = StoreCdrService::new(store);
    let who = principal("cdr:export");
    let rss_before = vm_kib("VmRSS:");
    // Resets VmHWM to the current RSS (Linux >= 4.0).
    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rows = Arc::new(AtomicU64::new(0));
    let r = rows.clone();
    let sampler = Sampler::start(Duration::from_millis(500), move || {
        r.load(Ordering::Relaxed)
    });
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let mut bytes = 0u64;
    let t0 = Instant::now();
    // As the handler does: CSV into a buffer, a chunk taken off it at
    // EXPORT_CHUNK_BYTES.
    let mut buf = String::with_capacity(EXPORT_CHUNK_BYTES + 4096);
    buf.push_str(CSV_HEADER);
    let n = svc
        .export(&who, &CdrFilter::default(), &mut |c| {
            csv_row(&mut buf, c);
            let done = rows.fetch_add(1, Ordering::Relaxed) + 1;
            if at_tenth.len() < 10 && done >= expect * (at_tenth.len() as u64 + 1) / 10 {
                at_tenth.push(t0.elapsed().as_secs_f64());
            }
            if buf.len() >= EXPORT_CHUNK_BYTES {
                let chunk = bytes::Bytes::from(std::mem::take(&mut buf));
                bytes += chunk.len() as u64;
                out.write_all(&chunk).is_ok()
            } else {
                true
            }
        })
        .expect("export");
    bytes += buf.len() as u64;
    out.write_all(buf.as_bytes()).expect("write");
    let took = t0.elapsed();
    let samples = sampler.stop();
    let hwm = vm_kib("VmHWM:");
    let rss_after = vm_kib("VmRSS:");
    let peak = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let mib = |k: u64| (k as f64 / 1024.0 * 10.0).round() / 10.0;
    // RSS at each tenth of the export: flat means bounded.
    let mut tenths = Vec::new();
    for k in 1..=10u64 {
        if let Some(s) = samples.iter().find(|s| s.1 >= n * k / 10) {
            tenths.push(mib(s.2));
        }
    }
    // Rows per second in each tenth of the export: flat means each page
    // costs the same wherever it is.
    let rate_tenths: Vec<u64> = at_tenth
        .iter()
        .scan(0.0, |prev, &t| {
            let r = (expect as f64 / 10.0 / (t - *prev)).round() as u64;
            *prev = t;
            Some(r)
        })
        .collect();
    json!({
        "plan": plan,
        "rows": n,
        "rows_per_s_by_tenth": rate_tenths,
        "bytes": bytes,
        "seconds": (took.as_secs_f64() * 1000.0).round() / 1000.0,
        "rows_per_s": (n as f64 / took.as_secs_f64()).round() as u64,
        "mib_per_s": (bytes as f64 / 1048576.0 / took.as_secs_f64() * 10.0).round() / 10.0,
        "rss_before_mib": mib(rss_before),
        "rss_after_mib": mib(rss_after),
        "rss_peak_sampled_mib": mib(peak),
        "rss_hwm_mib": if hwm_reset { json!(mib(hwm)) } else { Value::Null },
        "rss_growth_mib": mib(peak.max(if hwm_reset { hwm } else { 0 }).saturating_sub(rss_before)),
        "rss_by_tenth_mib": tenths,
        "samples": samples.len(),
    })
}

// ---------------------------------------------------------------- main

fn file_mib(p: &Path) -> f64 {
    let sz = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = p.as_os_str().to_owned();
    wal.push("-wal");
    ((sz(p) + sz(Path::new(&wal))) as f64 / 1048576.0).round()
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("cdrbench: {e}");
            }
            eprint!("{USAGE}");
            std::process::exit(2);
        }
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let started = UtcTime::now();
    let mach = machine();
    let load_before = loadavg();
    println!("cdrbench  {started}");
    println!("command   {command}");
    println!(
        "machine   {} x{}, {} GiB, kernel {}, commit {}",
        mach["cpu"].as_str().unwrap_or(""),
        mach["cores"],
        mach["mem_gib"],
        mach["kernel"].as_str().unwrap_or(""),
        mach["commit"].as_str().unwrap_or("")
    );
    println!("load      {load_before} (1, 5, 15 min)");

    let keys = CdrKeys::new(
        &[("bench", [7u8; 32])],
        "bench",
        Cipher::Aes256Gcm,
        [9u8; 32],
    )
    .expect("keys");
    let mut pg = None;
    let mut cleanup: Option<PathBuf> = None;
    let (be, where_) = if a.postgres || a.pg_url.is_some() {
        let url = match &a.pg_url {
            Some(u) => u.clone(),
            None => {
                let p = TempPg::start().unwrap_or_else(|e| {
                    eprintln!("cdrbench: {e}");
                    std::process::exit(1)
                });
                let u = p.url();
                pg = Some(p);
                u
            }
        };
        let s = PgStore::connect(&url, keys).unwrap_or_else(|e| {
            eprintln!("cdrbench: {e}");
            std::process::exit(1)
        });
        let fs = pg.as_ref().map(|p| fs_of(&p.dir)).unwrap_or_default();
        (
            Backend::Pg(Arc::new(s)),
            json!({ "backend": "postgres", "server": if pg.is_some() { "temporary (initdb)" } else { "--pg-url" },
                    "fs": fs.1, "mount": fs.0 }),
        )
    } else {
        let path = match &a.path {
            Some(p) => p.clone(),
            None => {
                let d =
                    std::env::temp_dir().join(format!("kolokol-cdrbench-{}", std::process::id()));
                std::fs::create_dir_all(&d).expect("temp dir");
                cleanup = Some(d.clone());
                d.join("cdr.sqlite")
            }
        };
        if path.exists() && !a.reuse {
            eprintln!(
                "cdrbench: {} exists: delete it, or pass --reuse to measure it again",
                path.display()
            );
            std::process::exit(2);
        }
        if a.reuse && !path.exists() {
            eprintln!("cdrbench: --reuse: {} does not exist", path.display());
            std::process::exit(2);
        }
        if cleanup.is_none() && !a.keep {
            cleanup = Some(path.clone());
        }
        let s = SqliteStore::open(&path, keys).unwrap_or_else(|e| {
            eprintln!("cdrbench: {e}");
            std::process::exit(1)
        });
        let fs = fs_of(path.parent().unwrap_or(Path::new("/")));
        (
            Backend::Sqlite(Arc::new(s)),
            json!({ "backend": "sqlite", "path": path.display().to_string(), "fs": fs.1, "mount": fs.0 }),
        )
    };
    let durability = be.durability();
    println!("store     {where_}");
    println!("commits   {durability}");

    let mut gen = Gen::new(&a, started.unix_ms);
    let mut report = json!({
        "tool": "cdrbench",
        "date": started.to_string(),
        "command": command,
        "machine": mach,
        "load_before": load_before,
        "store": where_,
        "durability": durability,
        "records": a.records,
        "pool": a.pool,
        "accounts": a.accounts,
        "days": a.days,
        "seed": a.seed,
    });

    if a.reuse {
        let n = be.count();
        println!("reuse     {n} records in the store; writer skipped");
        assert_eq!(n, a.records, "--reuse: the store holds another --records");
    } else {
        if be.count() != 0 {
            eprintln!("cdrbench: the store is not empty");
            std::process::exit(2);
        }
        println!("\n== writer: {} records through CdrWriter", a.records);
        let w = phase_writer(&a, be.store(), &mut gen);
        println!(
            "durable   {} records/s ({} s; submitting took {} s, {} waits on Full)",
            w["records_per_s_durable"], w["durable_s"], w["submit_s"], w["full_waits"]
        );
        println!(
            "batches   {} (mean {} records), commit errors {}, peak RSS {} MiB",
            w["batches"], w["mean_batch"], w["commit_errors"], w["peak_rss_mib"]
        );
        println!("by tenth  {} records/s", w["records_per_s_by_tenth"]);
        println!(
            "CPU       writer thread {} s, process {} s; storage writes {} MiB ({} KiB/record){}",
            w["writer_thread_cpu_s"],
            w["process_cpu_s"],
            w["storage_write_mib"],
            w["storage_write_kib_per_record"],
            if matches!(be, Backend::Pg(_)) {
                " by this process: the server's are not counted"
            } else {
                ""
            }
        );
        report["writer"] = w;
    }
    if let Backend::Sqlite(_) = be {
        if let Some(p) = where_["path"].as_str() {
            let mib = file_mib(Path::new(p));
            println!("size      {mib} MiB (database + WAL)");
            report["store"]["size_mib"] = json!(mib);
        }
    }

    println!(
        "\n== search: {} by number, {} by account + 24 h, {} by presentation number; page {}",
        a.searches, a.account_searches, a.hot_searches, a.page
    );
    let s = phase_search(&a, &be, &gen);
    for l in s["number_plan"].as_array().into_iter().flatten() {
        println!("plan      {}", l.as_str().unwrap_or(""));
    }
    let line = |name: &str, v: &Value| {
        println!(
            "{name:<34} p50 {:>8} p90 {:>8} p99 {:>8} max {:>8} ms  (n {})",
            v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"], v["n"]
        );
    };
    line("number, store.search", &s["by_number"]["store"]);
    line(
        "number, service (+ audit commit)",
        &s["by_number"]["service"],
    );
    println!("          rows {}", s["by_number"]["rows"]);
    line("account+24h, store.search", &s["by_account_24h"]["store"]);
    line("account+24h, service", &s["by_account_24h"]["service"]);
    println!("          rows {}", s["by_account_24h"]["rows"]);
    line(
        "presentation number, store.search",
        &s["by_presentation_number"]["store"],
    );
    if s["by_presentation_number"]["plan"] != s["number_plan"] {
        for l in s["by_presentation_number"]["plan"]
            .as_array()
            .into_iter()
            .flatten()
        {
            println!("plan      {}", l.as_str().unwrap_or(""));
        }
    }
    report["search"] = s;

    if a.export {
        println!("\n== export: every record as CSV to /dev/null");
        let e = phase_export(&be, &gen);
        for l in e["plan"].as_array().into_iter().flatten() {
            println!("plan      {}", l.as_str().unwrap_or(""));
        }
        println!(
            "export    {} rows, {} MiB/s, {} rows/s, {} s",
            e["rows"], e["mib_per_s"], e["rows_per_s"], e["seconds"]
        );
        println!(
            "RSS       before {} MiB, peak {} MiB sampled / {} MiB VmHWM, growth {} MiB",
            e["rss_before_mib"], e["rss_peak_sampled_mib"], e["rss_hwm_mib"], e["rss_growth_mib"]
        );
        println!("by tenth  {} MiB", e["rss_by_tenth_mib"]);
        println!("by tenth  {} rows/s", e["rows_per_s_by_tenth"]);
        report["export"] = e;
    }
    let load_after = loadavg();
    println!("\nload      {load_after} (1, 5, 15 min) at the end");
    report["load_after"] = json!(load_after);
    report["finished"] = json!(UtcTime::now().to_string());

    drop(be);
    drop(pg);
    if let Some(p) = cleanup.filter(|_| !a.keep) {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(&p);
        } else {
            for ext in ["", "-wal", "-shm"] {
                let mut f = p.as_os_str().to_owned();
                f.push(ext);
                let _ = std::fs::remove_file(&f);
            }
        }
    }
    if let Some(j) = &a.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(j, text) {
            eprintln!("cdrbench: {}: {e}", j.display());
            std::process::exit(1);
        }
        println!("json      {}", j.display());
    }
}
