//! The records API (F-C4..F-C6): `GET /v1/cdrs`, `GET /v1/cdrs/export.csv`,
//! `GET /v1/reports/summary`, `DELETE /v1/accounts/{id}/cdrs`,
//! `GET /v1/audit`.
//!
//! Query strings are parsed strictly here, before anything reaches the
//! store: unknown or repeated parameters, bad dates, out-of-range limits and
//! values with characters outside each parameter's alphabet are a 400
//! `invalid_query` naming the parameter. The store binds every value as a
//! parameter anyway; the alphabets keep garbage out of the audit log.
//!
//! A token bound to an account (`account` claim) sees only that account's
//! records; asking for another is a 403 `forbidden_account`.
//!
//! The export streams: the store is read in chunks on the blocking pool and
//! CSV goes out through a channel of [`EXPORT_CHANNEL_CHUNKS`] chunks of
//! about [`EXPORT_CHUNK_BYTES`], so memory is bounded however many rows
//! match and a slow client slows the reader down.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::auth::{SCOPE_ADMIN, SCOPE_CDR_EXPORT, SCOPE_CDR_READ};
use super::error::ApiError;
use super::server::{authorize, blocking, json_response, AppState};
use super::types::{Principal, UtcTime};
use crate::cdr::record::{shorten, Cdr, LegQuality};
use crate::cdr::store::{AuditEntry, CdrFilter, CdrPage, Cursor, Summary, PAGE_LIMIT_MAX};

/// Records per page when `limit` is not given.
pub const LIMIT_DEFAULT: usize = 100;

/// Bytes of CSV gathered before a chunk goes to the client.
pub const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

/// Chunks in flight between the store reader and the client: enough to
/// keep both busy, few enough that memory stays at a few hundred KiB.
pub const EXPORT_CHANNEL_CHUNKS: usize = 4;

/// Longest value of `account` and `trunk`.
const NAME_LEN_MAX: usize = 64;

/// Longest `number` (E.164 has at most 15 digits; separators allowed).
const NUMBER_LEN_MAX: usize = 32;

/// A parsed `GET /v1/cdrs` query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CdrQuery {
    /// Which records.
    pub filter: CdrFilter,
    /// Where the page starts.
    pub cursor: Option<Cursor>,
    /// Records per page (1..=1000).
    pub limit: usize,
}

/// The call records as the API sees them; the gateway implements it over
/// its store ([`crate::cdr::service::StoreCdrService`]), tests with a fake.
/// Every method may block; the server calls them on the blocking pool.
/// Implementations write the audit log.
pub trait CdrService: Send + Sync + 'static {
    /// One page of records.
    fn search(&self, who: &Principal, q: &CdrQuery) -> Result<CdrPage, ApiError>;
    /// Every matching record to `sink`, until it returns false; returns
    /// the records handed over.
    fn export(
        &self,
        who: &Principal,
        filter: &CdrFilter,
        sink: &mut dyn FnMut(&Cdr) -> bool,
    ) -> Result<u64, ApiError>;
    /// Counts over the filter.
    fn summary(&self, who: &Principal, filter: &CdrFilter) -> Result<Summary, ApiError>;
    /// Deletes one account's records; returns how many.
    fn erase_account(&self, who: &Principal, account: &str) -> Result<u64, ApiError>;
    /// The audit log, newest first.
    fn audit_log(
        &self,
        who: &Principal,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, ApiError>;
}

/// 400 `invalid_filter`: the records API's bad query (the calls API's
/// `invalid_query` is a 422; the records API answers 400 as F-C4's
/// acceptance asks).
fn bad(detail: String) -> ApiError {
    ApiError::new(400, "invalid_filter", "Invalid records query", detail)
}

/// Parses an RFC 3339 date-time (`2026-05-01T12:00:00Z`, fraction and a
/// `+hh:mm` offset allowed) to UTC.
pub fn parse_rfc3339(s: &str) -> Option<UtcTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 35 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d < 1 || d > dim[(mo - 1) as usize] {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 9 {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        ms = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_s = match &s[i..] {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[..1], "+" | "-") && &o[3..4] == ":" => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // Days from civil (H. Hinnant).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset_s;
    Some(UtcTime::from_unix_ms(secs * 1000 + ms))
}

fn name_ok(s: &str) -> bool {
    (1..=NAME_LEN_MAX).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'))
}

fn number_ok(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    (1..=NUMBER_LEN_MAX).contains(&s.len())
        && (1..=15).contains(&digits)
        && s.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_digit() || matches!(b, b' ' | b'-' | b'.') || (i == 0 && b == b'+')
        })
}

/// Checks every parameter name is in `allowed` and none repeats.
fn check_names(pairs: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown query parameter {}; allowed: {}",
                shorten(k),
                allowed.join(", ")
            )));
        }
        if pairs[..i].iter().any(|(o, _)| o == k) {
            return Err(bad(format!("query parameter {k} given twice")));
        }
    }
    Ok(())
}

const FILTER_NAMES: [&str; 7] = ["from", "to", "number", "account", "kind", "status", "trunk"];

/// The filter parameters of `pairs` (names already checked).
fn parse_filter(pairs: &[(String, String)]) -> Result<CdrFilter, ApiError> {
    let mut f = CdrFilter::default();
    for (k, v) in pairs {
        match k.as_str() {
            "from" | "to" => {
                let t = parse_rfc3339(v).ok_or_else(|| {
                    bad(format!(
                        "{k}: {} is not an RFC 3339 date-time such as 2026-05-01T00:00:00Z",
                        shorten(v)
                    ))
                })?;
                if k == "from" {
                    f.from = Some(t);
                } else {
                    f.to = Some(t);
                }
            }
            "number" => {
                if !number_ok(v) {
                    return Err(bad(format!(
                        "number: {} is not a phone number (digits, an optional leading +)",
                        shorten(v)
                    )));
                }
                f.number = Some(v.clone());
            }
            "account" | "trunk" => {
                if !name_ok(v) {
                    return Err(bad(format!(
                        "{k}: {} must be 1..=64 characters of A-Z a-z 0-9 . _ - : @",
                        shorten(v)
                    )));
                }
                if k == "account" {
                    f.account = Some(v.clone());
                } else {
                    f.trunk = Some(v.clone());
                }
            }
            "kind" => f.kind = Some(v.parse().map_err(|e| bad(format!("kind: {e}")))?),
            "status" => f.status = Some(v.parse().map_err(|e| bad(format!("status: {e}")))?),
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (f.from, f.to) {
        if a >= b {
            return Err(bad("from must be before to".into()));
        }
    }
    Ok(f)
}

/// Parses the query of `GET /v1/cdrs`.
pub fn parse_cdr_query(pairs: &[(String, String)]) -> Result<CdrQuery, ApiError> {
    let mut allowed = FILTER_NAMES.to_vec();
    allowed.extend(["cursor", "limit"]);
    check_names(pairs, &allowed)?;
    let mut q = CdrQuery {
        filter: parse_filter(pairs)?,
        cursor: None,
        limit: LIMIT_DEFAULT,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "cursor" => {
                q.cursor = Some(Cursor::decode(v).ok_or_else(|| {
                    bad("cursor: not a cursor from a previous page's next_cursor".into())
                })?)
            }
            "limit" => q.limit = parse_limit(v, PAGE_LIMIT_MAX)?,
            _ => {}
        }
    }
    Ok(q)
}

fn parse_limit(v: &str, max: usize) -> Result<usize, ApiError> {
    match v.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) && v.len() <= 7 => Ok(n),
        _ => Err(bad(format!(
            "limit: {} must be an integer from 1 to {max}",
            shorten(v)
        ))),
    }
}

/// Parses the query of the export and the summary (filters only).
pub fn parse_filter_query(pairs: &[(String, String)]) -> Result<CdrFilter, ApiError> {
    check_names(pairs, &FILTER_NAMES)?;
    parse_filter(pairs)
}

/// Applies an account-bound token to a filter.
fn scope_account(who: &Principal, f: &mut CdrFilter) -> Result<(), ApiError> {
    if let Some(a) = &who.account {
        match &f.account {
            Some(b) if b != a => {
                return Err(ApiError::forbidden_account(format!(
                    "this token may only read account {a:?}"
                )))
            }
            _ => f.account = Some(a.clone()),
        }
    }
    Ok(())
}

fn service(st: &AppState) -> Result<Arc<dyn CdrService>, ApiError> {
    st.cdr.clone().ok_or_else(|| {
        ApiError::new(
            503,
            "cdr_store_unavailable",
            "The record store is unavailable",
            "this gateway has no call record store configured ([cdr])",
        )
    })
}

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn pairs(q: Pairs) -> Result<Vec<(String, String)>, ApiError> {
    q.map(|Query(p)| p).map_err(|e| {
        bad(format!(
            "the query string does not parse: {}",
            e.body_text()
        ))
    })
}

#[derive(Serialize)]
struct CdrList {
    records: Vec<Cdr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /v1/cdrs`.
pub(crate) async fn list_cdrs(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_CDR_READ)?;
    let mut q = parse_cdr_query(&pairs(q)?)?;
    scope_account(&who, &mut q.filter)?;
    let svc = service(&st)?;
    let page = blocking(move || svc.search(&who, &q)).await?;
    Ok(json_response(
        StatusCode::OK,
        &CdrList {
            next_cursor: page.next.map(|c| c.encode()),
            records: page.records,
        },
    ))
}

/// `GET /v1/reports/summary`.
pub(crate) async fn summary(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_CDR_READ)?;
    let mut f = parse_filter_query(&pairs(q)?)?;
    scope_account(&who, &mut f)?;
    let svc = service(&st)?;
    let s = blocking(move || svc.summary(&who, &f)).await?;
    Ok(json_response(StatusCode::OK, &s))
}

/// `DELETE /v1/accounts/{id}/cdrs`.
pub(crate) async fn erase_account(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_ADMIN)?;
    let account = match id {
        Ok(Path(a)) if name_ok(&a) => a,
        _ => {
            return Err(ApiError::new(
                400,
                "invalid_path",
                "Invalid path parameter",
                "the account id must be 1..=64 characters of A-Z a-z 0-9 . _ - : @",
            ))
        }
    };
    let svc = service(&st)?;
    let acc = account.clone();
    let n = blocking(move || svc.erase_account(&who, &acc)).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "account": account, "deleted": n }),
    ))
}

/// `GET /v1/audit`.
pub(crate) async fn audit(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_ADMIN)?;
    let p = pairs(q)?;
    check_names(&p, &["before", "limit"])?;
    let mut before = None;
    let mut limit = LIMIT_DEFAULT;
    for (k, v) in &p {
        match k.as_str() {
            "before" => {
                before = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(format!("before: {} is not an entry id", shorten(v))))?,
                )
            }
            "limit" => limit = parse_limit(v, crate::cdr::store::AUDIT_LIMIT_MAX)?,
            _ => {}
        }
    }
    let svc = service(&st)?;
    let entries = blocking(move || svc.audit_log(&who, before, limit)).await?;
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "entries": entries, "next_before": next_before }),
    ))
}

/// The CSV header row.
pub const CSV_HEADER: &str = "call_id,kind,account,caller,callee,trunk,created,ringing,answered,\
ended,duration_ms,billable_s,status,sip_code,q850_cause,hangup,a_packets,a_lost,a_jitter_us,\
a_mos,b_packets,b_lost,b_jitter_us,b_mos,dtmf\r\n";

/// Appends one CSV cell (RFC 4180): a cell starting with `=`, `+`, `-`,
/// `@`, tab or CR gets a leading `'` so spreadsheets do not run it as a
/// formula (OWASP CSV injection); a cell with `,`, `"`, CR or LF is quoted
/// with inner quotes doubled.
pub fn csv_cell(out: &mut String, v: &str) {
    let guard = v.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quote = v.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    for c in v.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Appends one record as a CSV line (CRLF-terminated).
pub fn csv_row(out: &mut String, c: &Cdr) {
    let q = |l: &LegQuality| {
        [
            opt(l.packets),
            opt(l.lost),
            opt(l.jitter_us),
            opt(l.mos_x100.map(|m| format!("{}.{:02}", m / 100, m % 100))),
        ]
    };
    let [ap, al, aj, am] = q(&c.quality_a);
    let [bp, bl, bj, bm] = q(&c.quality_b);
    let cells: [String; 25] = [
        c.call_id.clone(),
        c.kind.as_str().into(),
        c.account.clone(),
        c.caller.clone(),
        c.callee.clone(),
        opt(c.trunk.as_deref()),
        c.created.to_string(),
        opt(c.ringing),
        opt(c.answered),
        c.ended.to_string(),
        c.duration_ms.to_string(),
        c.billable_s.to_string(),
        c.status.as_str().into(),
        c.sip_code.to_string(),
        c.q850_cause.to_string(),
        c.hangup.as_str().into(),
        ap,
        al,
        aj,
        am,
        bp,
        bl,
        bj,
        bm,
        opt(c.dtmf.as_deref()),
    ];
    for (i, v) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, v);
    }
    out.push_str("\r\n");
}

/// `GET /v1/cdrs/export.csv`.
pub(crate) async fn export_csv(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Pairs,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_CDR_EXPORT)?;
    let mut f = parse_filter_query(&pairs(q)?)?;
    scope_account(&who, &mut f)?;
    let svc = service(&st)?;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(EXPORT_CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let mut buf = String::with_capacity(EXPORT_CHUNK_BYTES + 4096);
        buf.push_str(CSV_HEADER);
        let mut open = true;
        let r = svc.export(&who, &f, &mut |c| {
            csv_row(&mut buf, c);
            if buf.len() >= EXPORT_CHUNK_BYTES {
                let chunk = bytes::Bytes::from(std::mem::take(&mut buf));
                // Blocks while the client is slower than the store: that
                // is the back-pressure. A closed channel: the client left.
                open = tx.blocking_send(Ok(chunk)).is_ok();
            }
            open
        });
        match r {
            Ok(_) if !buf.is_empty() => {
                let _ = tx.blocking_send(Ok(bytes::Bytes::from(buf)));
            }
            Ok(_) => {}
            // Headers are out; cutting the stream tells the client it is
            // incomplete.
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"cdrs.csv\""),
    );
    Ok(resp)
}

#[cfg(test)]
mod test {
    use super::*;

    fn p(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20Z").unwrap().unix_ms,
            1_700_000_000_000
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20.5+01:00")
                .unwrap()
                .unix_ms,
            1_700_000_000_500
        );
        for bad in [
            "2023-02-30T00:00:00Z",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "yesterday",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14T22:13:20.Z",
        ] {
            assert!(parse_rfc3339(bad).is_none(), "{bad}");
        }
        let t = parse_rfc3339("2026-05-01T12:00:00.123Z").unwrap();
        assert_eq!(t.to_string(), "2026-05-01T12:00:00.123Z");
    }

    #[test]
    fn query_is_strict() {
        let q = parse_cdr_query(&p(&[
            ("from", "2026-01-01T00:00:00Z"),
            ("number", "+49 30 123"),
            ("kind", "click-to-call"),
            ("limit", "1000"),
        ]))
        .unwrap();
        assert_eq!(q.limit, 1000);
        assert_eq!(q.filter.number.as_deref(), Some("+49 30 123"));
        for (k, v, needle) in [
            ("limit", "1001", "limit"),
            ("limit", "0", "limit"),
            ("limit", "99999999999999999999", "limit"),
            ("from", "2026-13-01T00:00:00Z", "from"),
            ("account", "x' OR '1'='1", "account"),
            ("trunk", "a;DROP TABLE cdr", "trunk"),
            ("number", "1; DELETE FROM cdr", "number"),
            ("status", "answered", "status"),
            ("cursor", "abc", "cursor"),
            ("sort", "asc", "unknown query parameter"),
        ] {
            let e = parse_cdr_query(&p(&[(k, v)])).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.detail.contains(needle), "{k}={v}: {}", e.detail);
        }
        let e = parse_cdr_query(&p(&[("kind", "inbound"), ("kind", "inbound")])).unwrap_err();
        assert!(e.detail.contains("twice"));
        let e = parse_filter_query(&p(&[
            ("from", "2026-02-01T00:00:00Z"),
            ("to", "2026-01-01T00:00:00Z"),
        ]))
        .unwrap_err();
        assert!(e.detail.contains("before"));
        assert!(parse_filter_query(&p(&[("limit", "5")])).is_err());
    }

    #[test]
    fn csv_quotes_and_neutralises_formulas() {
        let mut s = String::new();
        for v in [
            "plain",
            "a,b",
            "say \"hi\"",
            "=1+1",
            "+4930",
            "-2",
            "@SUM(A1)",
            "x\ny",
        ] {
            csv_cell(&mut s, v);
            s.push('|');
        }
        assert_eq!(
            s,
            "plain|\"a,b\"|\"say \"\"hi\"\"\"|'=1+1|'+4930|'-2|'@SUM(A1)|\"x\ny\"|"
        );
        let mut s = String::new();
        csv_cell(&mut s, "=HYPERLINK(\"x\",\"y\")");
        assert_eq!(s, "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\"");
    }
}
