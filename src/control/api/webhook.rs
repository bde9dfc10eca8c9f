//! Webhooks: every [`CallEvent`] POSTed to the portal, signed, retried
//! (F-A4).
//!
//! # The request
//!
//! `POST <webhooks.url>` with `Content-Type: application/json`, the event
//! as the body (the same JSON as on `GET /v1/events`), and
//!
//! - `X-Kolokol-Event-Id`: the event id (increasing; a receiver that has
//!   seen it already answers 2xx and ignores it: delivery is at least once);
//! - `X-Kolokol-Timestamp`: Unix seconds when this attempt was signed;
//! - `X-Kolokol-Signature`: `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//!
//! A receiver recomputes the HMAC over the timestamp header, a `.` and the
//! raw body bytes, compares in constant time ([`verify_signature`]) and
//! rejects timestamps too far from its clock (five minutes is usual) so a
//! captured request cannot be replayed later.
//!
//! # Delivery
//!
//! Events go into a bounded queue (`webhooks.max_queue`; when it is full
//! the oldest event is dropped and counted) and are delivered one at a
//! time, in order, so events of one call arrive in order. 2xx is delivered;
//! 408, 429, 5xx, a timeout or a connection error is retried after
//! [`backoff_delay`] (1 s doubling to 60 s, ±20 % jitter; a `Retry-After`
//! of a 429/503 is honoured up to the maximum); any other status is a
//! permanent refusal and the event is dropped and counted. An event still
//! undelivered `webhooks.give_up_s` after it was queued (1 h) is dropped and
//! counted. While the portal is down the head of the queue waits and the
//! rest queue behind it. Queued events are not persisted: a restart loses
//! them (the CDRs keep every call's outcome).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::Sha256;
use tokio::sync::{broadcast, watch, Notify};

use super::types::CallEvent;
use crate::config::WebhooksConfig;

/// Header: the event id.
pub const HEADER_EVENT_ID: &str = "x-kolokol-event-id";
/// Header: Unix seconds the attempt was signed at.
pub const HEADER_TIMESTAMP: &str = "x-kolokol-timestamp";
/// Header: `v1=<hex HMAC-SHA256>`.
pub const HEADER_SIGNATURE: &str = "x-kolokol-signature";

/// Jitter: each delay is the nominal one times a factor in
/// `[1 - JITTER, 1 + JITTER)`, so many gateways retrying one portal do not
/// arrive in lockstep.
pub const JITTER: f64 = 0.2;

/// `v1=<hex>` of HMAC-SHA256(`secret`, `"<timestamp>.<body>"`).
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp.to_string().as_bytes(), body)
        .finalize()
        .into_bytes();
    let mut s = String::with_capacity(3 + 64);
    s.push_str("v1=");
    for b in tag {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn mac(secret: &[u8], timestamp: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length (RFC 2104 §2), so this cannot fail.
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(timestamp);
    m.update(b".");
    m.update(body);
    m
}

/// Whether `header` (an `X-Kolokol-Signature` value: one or more
/// comma-separated `v1=<hex>`) holds a valid signature of `body` at
/// `timestamp` (the `X-Kolokol-Timestamp` value, as received). Compares
/// in constant time. The caller checks that `timestamp` is recent.
pub fn verify_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    header.split(',').map(str::trim).any(|sig| {
        let Some(hex) = sig.strip_prefix("v1=") else {
            return false;
        };
        let Some(tag) = unhex(hex) else {
            return false;
        };
        mac(secret, timestamp.as_bytes(), body)
            .verify_slice(&tag)
            .is_ok()
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The delay before retry number `attempt` (0 = the first retry): `min`
/// doubled `attempt` times, at most `max`, times `1 - JITTER + 2 * JITTER
/// * u` for `u` in `[0, 1)`.
pub fn backoff_delay(attempt: u32, min: Duration, max: Duration, u: f64) -> Duration {
    let nominal = min
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    let u = if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.5
    };
    nominal.mul_f64(1.0 - JITTER + 2.0 * JITTER * u)
}

/// Delivery counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Events queued or being delivered.
    pub backlog: AtomicUsize,
    /// Events delivered (2xx).
    pub delivered: AtomicU64,
    /// Attempts that failed and were retried.
    pub retries: AtomicU64,
    /// Dropped: the queue was full.
    pub dropped_overflow: AtomicU64,
    /// Dropped: not delivered within `give_up_s`.
    pub dropped_gave_up: AtomicU64,
    /// Dropped: the portal answered a permanent 4xx.
    pub dropped_refused: AtomicU64,
    /// Events the queue missed because it fell behind the engine's
    /// broadcast channel.
    pub lagged: AtomicU64,
}

impl WebhookStats {
    /// Appends the Prometheus text exposition.
    pub fn write(&self, out: &mut String) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        out.push_str("# HELP kolokol_webhook_backlog Webhook events queued or being delivered.\n");
        out.push_str("# TYPE kolokol_webhook_backlog gauge\n");
        let _ = writeln!(
            out,
            "kolokol_webhook_backlog {}",
            self.backlog.load(Ordering::Relaxed)
        );
        out.push_str("# HELP kolokol_webhook_delivered_total Webhook events delivered.\n");
        out.push_str("# TYPE kolokol_webhook_delivered_total counter\n");
        let _ = writeln!(
            out,
            "kolokol_webhook_delivered_total {}",
            g(&self.delivered)
        );
        out.push_str(
            "# HELP kolokol_webhook_retries_total Failed webhook attempts that were retried.\n",
        );
        out.push_str("# TYPE kolokol_webhook_retries_total counter\n");
        let _ = writeln!(out, "kolokol_webhook_retries_total {}", g(&self.retries));
        out.push_str("# HELP kolokol_webhook_dropped_total Webhook events dropped, by reason.\n");
        out.push_str("# TYPE kolokol_webhook_dropped_total counter\n");
        for (reason, v) in [
            ("overflow", &self.dropped_overflow),
            ("gave_up", &self.dropped_gave_up),
            ("refused", &self.dropped_refused),
            ("lagged", &self.lagged),
        ] {
            let _ = writeln!(
                out,
                "kolokol_webhook_dropped_total{{reason=\"{reason}\"}} {}",
                g(v)
            );
        }
    }
}

/// One queued event.
struct Queued {
    id: u64,
    body: Bytes,
    queued_at: Instant,
}

/// The bounded queue between the event feed and the delivery task.
struct Queue {
    items: Mutex<VecDeque<Queued>>,
    max: usize,
    ready: Notify,
    stats: Arc<WebhookStats>,
}

impl Queue {
    fn push(&self, q: Queued) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() >= self.max {
            items.pop_front();
            self.stats.dropped_overflow.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.backlog.fetch_add(1, Ordering::Relaxed);
        }
        items.push_back(q);
        assert!(items.len() <= self.max);
        drop(items);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Queued> {
        self.items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A configured sender.
struct Sender {
    client: HttpsClient,
    url: http::Uri,
    secret: Vec<u8>,
    timeout: Duration,
    retry_min: Duration,
    retry_max: Duration,
    give_up: Duration,
}

fn io_err(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// The TLS client: webpki's public roots plus `ca_file`.
fn tls_client(ca_file: Option<&std::path::Path>) -> io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| io_err(format!("webhooks.ca_file {}: {e}", path.display())))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(io_err(format!(
                "webhooks.ca_file {}: no usable CA certificate",
                path.display()
            )));
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| io_err(format!("TLS: {e}")))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// What became of one attempt.
enum Outcome {
    Delivered,
    Refused,
    Retry(Option<Duration>),
}

impl Sender {
    fn new(cfg: &WebhooksConfig) -> io::Result<Option<Sender>> {
        let Some(url) = &cfg.url else {
            return Ok(None);
        };
        let url: http::Uri = url
            .parse()
            .map_err(|e| io_err(format!("webhooks.url {url:?}: {e}")))?;
        let secret = cfg
            .secret
            .clone()
            .ok_or_else(|| io_err("webhooks.secret must be set with webhooks.url".into()))?
            .into_bytes();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_millis(cfg.timeout_ms)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_client(cfg.ca_file.as_deref())?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1)
            .build(https);
        Ok(Some(Sender {
            client,
            url,
            secret,
            timeout: Duration::from_millis(cfg.timeout_ms),
            retry_min: Duration::from_millis(cfg.retry_min_ms),
            retry_max: Duration::from_millis(cfg.retry_max_ms),
            give_up: Duration::from_secs(cfg.give_up_s),
        }))
    }

    async fn attempt(&self, q: &Queued) -> Outcome {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let req = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("Kolokol/", env!("CARGO_PKG_VERSION")),
            )
            .header(HEADER_EVENT_ID, q.id)
            .header(HEADER_TIMESTAMP, ts)
            .header(HEADER_SIGNATURE, signature(&self.secret, ts, &q.body))
            .body(Full::new(q.body.clone()));
        let Ok(req) = req else {
            // Every part was validated at start; a bad request here is a
            // bug, and retrying would not fix it.
            return Outcome::Refused;
        };
        let send = async {
            let resp = self.client.request(req).await.ok()?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Read the (small) answer so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Some((status, retry_after))
        };
        match tokio::time::timeout(self.timeout, send).await {
            Ok(Some((s, _))) if s.is_success() => Outcome::Delivered,
            Ok(Some((s, ra)))
                if s.is_server_error()
                    || s == http::StatusCode::REQUEST_TIMEOUT
                    || s == http::StatusCode::TOO_MANY_REQUESTS =>
            {
                Outcome::Retry(ra)
            }
            Ok(Some(_)) => Outcome::Refused,
            Ok(None) | Err(_) => Outcome::Retry(None),
        }
    }

    /// Delivers `q`, retrying, until delivered, refused, given up or shut
    /// down (false).
    async fn deliver(
        &self,
        q: &Queued,
        stats: &WebhookStats,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut attempt = 0u32;
        loop {
            let age = q.queued_at.elapsed();
            if age >= self.give_up {
                stats.dropped_gave_up.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            let outcome = tokio::select! {
                o = self.attempt(q) => o,
                _ = shutdown.changed() => return false,
            };
            let hint = match outcome {
                Outcome::Delivered => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Outcome::Refused => {
                    stats.dropped_refused.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Outcome::Retry(hint) => hint,
            };
            stats.retries.fetch_add(1, Ordering::Relaxed);
            let mut delay = backoff_delay(attempt, self.retry_min, self.retry_max, rand::random());
            if let Some(h) = hint {
                delay = delay.max(h.min(self.retry_max));
            }
            // Never sleep past the give-up time; one last attempt is made
            // at it, then the check above drops the event.
            let left = self.give_up.saturating_sub(q.queued_at.elapsed());
            let delay = delay.min(left);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return false,
            }
        }
    }
}

/// Starts the feed and delivery tasks on the current runtime, when
/// `webhooks.url` is set; the stats exist either way (all zero without).
pub(crate) fn start(
    cfg: &WebhooksConfig,
    mut events: broadcast::Receiver<CallEvent>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<Arc<WebhookStats>> {
    let stats = Arc::new(WebhookStats::default());
    let Some(sender) = Sender::new(cfg)? else {
        return Ok(stats);
    };
    assert!(cfg.max_queue > 0);
    let queue = Arc::new(Queue {
        items: Mutex::new(VecDeque::new()),
        max: cfg.max_queue,
        ready: Notify::new(),
        stats: stats.clone(),
    });
    let feed_queue = queue.clone();
    let mut feed_shutdown = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                r = events.recv() => r,
                _ = feed_shutdown.changed() => return,
            };
            match ev {
                Ok(ev) => {
                    let body = match serde_json::to_vec(&ev) {
                        Ok(b) => Bytes::from(b),
                        Err(_) => continue,
                    };
                    feed_queue.push(Queued {
                        id: ev.id,
                        body,
                        queued_at: Instant::now(),
                    });
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    feed_queue.stats.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut shutdown = shutdown;
    tokio::spawn(async move {
        loop {
            let Some(q) = queue.pop() else {
                tokio::select! {
                    _ = queue.ready.notified() => continue,
                    _ = shutdown.changed() => return,
                }
            };
            let done = sender.deliver(&q, &queue.stats, &mut shutdown).await;
            queue.stats.backlog.fetch_sub(1, Ordering::Relaxed);
            if !done {
                return;
            }
        }
    });
    Ok(stats)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn backoff_schedule_doubles_to_the_cap_with_bounded_jitter() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let nominal: Vec<u64> = (0..10)
            .map(|a| backoff_delay(a, min, max, 0.5).as_secs())
            .collect();
        assert_eq!(nominal, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(backoff_delay(0, min, max, 0.0), Duration::from_millis(800));
        assert_eq!(backoff_delay(0, min, max, 1.0), Duration::from_millis(1200));
        assert_eq!(backoff_delay(40, min, max, 1.0), Duration::from_secs(72));
        assert_eq!(backoff_delay(u32::MAX, min, max, f64::NAN), max);
        // With the defaults, the hour before giving up holds 64 attempts.
        let total: Duration = (0..64).map(|a| backoff_delay(a, min, max, 0.5)).sum();
        assert_eq!(total, Duration::from_secs(63 + 58 * 60));
    }

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        let secret = b"0123456789abcdef";
        let body = br#"{"id":1}"#;
        let sig = signature(secret, 1_777_636_800, body);
        assert!(sig.starts_with("v1=") && sig.len() == 67);
        assert!(verify_signature(secret, "1777636800", body, &sig));
        // Key rotation: any of several signatures may match.
        assert!(verify_signature(
            secret,
            "1777636800",
            body,
            &format!("v1={}, {sig}", "0".repeat(64))
        ));
        assert!(!verify_signature(secret, "1777636801", body, &sig));
        assert!(!verify_signature(
            secret,
            "1777636800",
            br#"{"id":2}"#,
            &sig
        ));
        assert!(!verify_signature(
            b"another-secret-16",
            "1777636800",
            body,
            &sig
        ));
        assert!(!verify_signature(secret, "1777636800", body, "v1=zz"));
        assert!(!verify_signature(secret, "", body, &sig));
        assert!(!verify_signature(
            secret,
            "1777636800",
            body,
            &sig.replace("v1=", "v0=")
        ));
        // A test vector anyone can recompute:
        // printf '1.{}' | openssl dgst -sha256 -hmac 0123456789abcdef
        assert_eq!(
            signature(secret, 1, b"{}"),
            "v1=2af693cb56b22c16912222aeefdc75a01de562bf70ee2015f41ecea48382997f"
        );
    }

    #[test]
    fn queue_drops_the_oldest_when_full() {
        let stats = Arc::new(WebhookStats::default());
        let q = Queue {
            items: Mutex::new(VecDeque::new()),
            max: 2,
            ready: Notify::new(),
            stats: stats.clone(),
        };
        for id in 0..5 {
            q.push(Queued {
                id,
                body: Bytes::new(),
                queued_at: Instant::now(),
            });
        }
        assert_eq!(stats.dropped_overflow.load(Ordering::Relaxed), 3);
        assert_eq!(stats.backlog.load(Ordering::Relaxed), 2);
        assert_eq!(q.pop().map(|x| x.id), Some(3));
        assert_eq!(q.pop().map(|x| x.id), Some(4));
        assert!(q.pop().is_none());
    }
}
