//! The portal's HTTPS JSON API (F-A1..F-A5, F-O3): click-to-call and
//! notifications, call state, hang-up, server-sent events, signed webhooks,
//! health, readiness and Prometheus metrics. `openapi/kolokol.yaml`
//! describes it exactly (a unit test keeps the two in step).
//!
//! # Shape
//!
//! The server runs on a thread of its own with a single-threaded tokio
//! runtime ([`spawn_api`]); the call engine lives on the shards and is
//! reached only through the [`CallService`] trait, whose methods the
//! server calls on tokio's blocking pool (`spawn_blocking`), so a slow
//! engine answer never stalls other requests. Every other piece is here:
//!
//! - [`auth`]: bearer JWTs (RS256/ES256 against a JWKS), scopes, and
//!   [`auth::token_cli`] / [`auth::sign_token`] for test tokens;
//! - [`idempotency`]: the `Idempotency-Key` table;
//! - [`webhook`]: the signed, retried, bounded webhook queue;
//! - [`metrics`]: request counts, latency histogram, in-flight gauge;
//! - [`error`]: RFC 9457 problem details with stable codes;
//! - [`types`]: the request, view and event types of the boundary;
//! - `server`: routes, handlers, limits, the TLS accept loop.
//!
//! # Limits
//!
//! Request bodies are JSON only (415 otherwise), at most
//! [`BODY_LEN_MAX`] bytes (413), parsed strictly (unknown fields are a 422
//! `invalid_body` carrying serde's message). A request other than the event
//! stream gets 503 `request_timeout` after `api.request_timeout_ms`; a
//! connection must send its request head within [`HEADER_READ_TIMEOUT`] and
//! finish the TLS handshake within [`TLS_HANDSHAKE_TIMEOUT`]; at most
//! `api.max_connections` connections are served at once.
//!
//! # Draining
//!
//! [`ApiHandle::drain`] (or `POST /v1/admin/drain`) calls
//! [`CallService::drain`] and from then on answers POSTs with 503
//! `draining` and `/readyz` with 503; reads, hang-ups and the event stream
//! keep working so active calls can be followed to their end.

pub mod auth;
pub mod cdr;
pub mod error;
pub mod idempotency;
pub mod metrics;
mod server;
pub mod types;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use auth::{sign_token, token_cli, JwtAlg};
pub use cdr::{CdrQuery, CdrService};
pub use error::ApiError;
pub use server::{RouteSpec, ROUTES};
pub use types::{
    CallEvent, CallKind, CallResult, CallState, CallView, ClickToCallRequest, Language,
    NotificationRequest, Principal, UtcTime,
};
pub use webhook::{verify_signature, WebhookStats};

/// The call engine as the API sees it. The lead's shard code implements
/// it; the server never touches shards directly.
///
/// Every method may block briefly (< 5 ms typical): the server calls them
/// from tokio's blocking pool, except [`CallService::subscribe`], which it
/// calls on its runtime thread when an event stream opens (subscribing to a
/// broadcast channel does not block). Errors are [`ApiError`]s with the engine's
/// own stable codes (policy refusals, capacity, unknown call), rendered to
/// the client as problem documents; a `status` of 429 or 503 with
/// `retry_after_s` gets a `Retry-After`.
pub trait CallService: Send + Sync + 'static {
    /// Starts a click-to-call (call flow 1). The request is validated
    /// ([`ClickToCallRequest::validate`]) and, if the principal is bound to
    /// an account, for that account. Answer with the call in its first
    /// state (`queued` or later, or `rejected-by-policy` as an error).
    fn create_click_to_call(
        &self,
        who: &Principal,
        req: ClickToCallRequest,
    ) -> Result<CallView, ApiError>;
    /// Starts a notification (call flow 2); validated like the above.
    fn create_notification(
        &self,
        who: &Principal,
        req: NotificationRequest,
    ) -> Result<CallView, ApiError>;
    /// One call; an unknown id, or one of another account when
    /// `who.account` is set, is a 404 `not_found`.
    fn get_call(&self, who: &Principal, id: &str) -> Result<CallView, ApiError>;
    /// Calls (of `who.account` when set); `active_only` = not terminal.
    fn list_calls(&self, who: &Principal, active_only: bool) -> Result<Vec<CallView>, ApiError>;
    /// Hangs a call up (both legs); answers with its view after the request
    /// (the terminal state may follow as an event).
    fn hangup(&self, who: &Principal, id: &str) -> Result<CallView, ApiError>;
    /// Stop taking new calls; active ones go on.
    fn drain(&self);
    /// False while draining or while the shards are not up.
    fn ready(&self) -> bool;
    /// Calls in progress.
    fn active_calls(&self) -> usize;
    /// Appends the engine's Prometheus text lines (shards, calls by
    /// outcome, trunks), with their `# HELP`/`# TYPE` lines.
    fn write_metrics(&self, out: &mut String);
    /// A receiver of every state change, for SSE clients and webhooks.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CallEvent>;
}

/// Largest request body, bytes.
pub const BODY_LEN_MAX: usize = 64 * 1024;

/// Time a connection has to send a request head (also the keep-alive idle
/// limit between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Time [`ApiHandle::shutdown`] lets open requests finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Interval of SSE keep-alive comments, so proxies do not close an idle
/// stream.
pub const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

/// What [`spawn_api`] needs: the `[api]` and `[webhooks]` sections.
#[derive(Clone, Debug, Default)]
pub struct ApiConfig {
    /// `[api]`.
    pub api: crate::config::ApiConfig,
    /// `[webhooks]`.
    pub webhooks: crate::config::WebhooksConfig,
}

impl ApiConfig {
    /// The sections of a loaded configuration.
    pub fn from_config(cfg: &crate::config::Config) -> ApiConfig {
        ApiConfig {
            api: cfg.api.clone(),
            webhooks: cfg.webhooks.clone(),
        }
    }
}

/// Loads a TLS server configuration (PEM chain and key) on the ring
/// provider, offering HTTP/1.1 by ALPN.
pub fn load_tls(cert: &std::path::Path, key: &std::path::Path) -> io::Result<rustls::ServerConfig> {
    server::load_tls(cert, key)
}

/// The running API server.
pub struct ApiHandle {
    local_addr: SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    draining: Arc<AtomicBool>,
    service: Arc<dyn CallService>,
    webhooks: Arc<WebhookStats>,
}

impl std::fmt::Debug for ApiHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiHandle")
            .field("local_addr", &self.local_addr)
            .field("draining", &self.is_draining())
            .finish_non_exhaustive()
    }
}

impl ApiHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Starts draining, as `POST /v1/admin/drain` does: calls
    /// [`CallService::drain`]; POSTs get 503 `draining`, `/readyz` 503.
    /// Call this on SIGTERM.
    pub fn drain(&self) {
        if !self.draining.swap(true, Ordering::SeqCst) {
            self.service.drain();
        }
    }

    /// Whether draining was asked for (here or over HTTP): the process may
    /// exit once [`CallService::active_calls`] reaches 0.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Webhook delivery counters.
    pub fn webhook_stats(&self) -> &WebhookStats {
        &self.webhooks
    }

    /// Stops accepting, ends event streams, lets open requests finish for
    /// up to [`SHUTDOWN_GRACE`], and joins the server thread. Queued
    /// webhooks are dropped.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ApiHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the API: binds `cfg.api.listen` now (so a taken port is an error
/// here), loads the JWKS, then serves on a new thread named `kolokol-api`.
///
/// TLS: `tls` if given; else `api.tls_cert`/`api.tls_key` are loaded; else
/// plain HTTP if `api.insecure_http`, else an error naming the key. The
/// webhook sender starts when `webhooks.url` is set.
pub fn spawn_api(
    cfg: ApiConfig,
    service: Arc<dyn CallService>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<ApiHandle> {
    server::spawn(cfg, service, None, tls)
}

/// [`spawn_api`] with the records API (`/v1/cdrs`, `/v1/cdrs/export.csv`,
/// `/v1/reports/summary`, `DELETE /v1/accounts/{id}/cdrs`, `/v1/audit`)
/// served by `cdr`; without it ([`spawn_api`]) those routes answer 503
/// `cdr_store_unavailable` after authorization.
pub fn spawn_api_with_cdr(
    cfg: ApiConfig,
    service: Arc<dyn CallService>,
    cdr: Arc<dyn CdrService>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<ApiHandle> {
    server::spawn(cfg, service, Some(cdr), tls)
}
