//! Routes, handlers and the accept loop of the API server.
//!
//! Every handler authorizes first (401/403), then checks what it needs
//! (draining, media type, size, schema), then calls the engine on the
//! blocking pool. Errors are [`ApiError`] problem documents throughout,
//! including unknown paths (404) and methods (405).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::Stream;
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::auth::{
    Jwks, Verifier, SCOPE_ADMIN, SCOPE_CALLS_READ, SCOPE_CALLS_WRITE, SCOPE_CDR_EXPORT,
    SCOPE_CDR_READ, SCOPE_NOTIFICATIONS_WRITE,
};
use super::cdr::{self as cdr_api, CdrService};
use super::error::ApiError;
use super::idempotency::{self, Begin, IdempotencyStore, StoredResponse};
use super::metrics::ApiMetrics;
use super::types::{CallView, ClickToCallRequest, NotificationRequest, Principal};
use super::webhook::{self, WebhookStats};
use super::{
    ApiConfig, ApiHandle, CallService, BODY_LEN_MAX, HEADER_READ_TIMEOUT, SHUTDOWN_GRACE,
    SSE_KEEPALIVE, TLS_HANDSHAKE_TIMEOUT,
};

/// The OpenAPI document, served at `/openapi.yaml`.
pub(crate) const OPENAPI_YAML: &str = include_str!("../../../openapi/kolokol.yaml");

/// One route the server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method (upper case).
    pub method: &'static str,
    /// Path template, `{param}` for parameters (as in OpenAPI).
    pub path: &'static str,
    /// Scope a token needs; `None` = no token needed.
    pub scope: Option<&'static str>,
}

const fn r(method: &'static str, path: &'static str, scope: Option<&'static str>) -> RouteSpec {
    RouteSpec {
        method,
        path,
        scope,
    }
}

/// Every route, with the scope it needs. The router serves exactly these
/// (tests check it, and that `openapi/kolokol.yaml` lists the same).
/// `/metrics` needs `admin` only when `api.metrics_public` is false.
pub const ROUTES: &[RouteSpec] = &[
    r("POST", "/v1/calls", Some(SCOPE_CALLS_WRITE)),
    r("GET", "/v1/calls", Some(SCOPE_CALLS_READ)),
    r("GET", "/v1/calls/{id}", Some(SCOPE_CALLS_READ)),
    r("DELETE", "/v1/calls/{id}", Some(SCOPE_CALLS_WRITE)),
    r("POST", "/v1/notifications", Some(SCOPE_NOTIFICATIONS_WRITE)),
    r("GET", "/v1/events", Some(SCOPE_CALLS_READ)),
    r("POST", "/v1/admin/drain", Some(SCOPE_ADMIN)),
    r("GET", "/v1/cdrs", Some(SCOPE_CDR_READ)),
    r("GET", "/v1/cdrs/export.csv", Some(SCOPE_CDR_EXPORT)),
    r("GET", "/v1/reports/summary", Some(SCOPE_CDR_READ)),
    r("DELETE", "/v1/accounts/{id}/cdrs", Some(SCOPE_ADMIN)),
    r("GET", "/v1/audit", Some(SCOPE_ADMIN)),
    r("GET", "/healthz", None),
    r("GET", "/readyz", None),
    r("GET", "/metrics", None),
    r("GET", "/openapi.yaml", None),
];

/// Threads of the blocking pool the engine is called on. Engine calls take
/// milliseconds, so this many in parallel is far beyond what the shards can
/// take; further calls wait in tokio's queue (bounded in turn by
/// `api.max_connections`, one request per HTTP/1.1 connection at a time).
const BLOCKING_THREADS_MAX: usize = 64;

/// A body over [`BODY_LEN_MAX`] but at most this long is read to its end
/// (and discarded) before the 413, so the client reliably gets the answer;
/// a longer one is answered at once.
const DRAIN_LEN_MAX: usize = 1024 * 1024;

/// Longest call id accepted in a path.
const CALL_ID_LEN_MAX: usize = 128;

/// Shared by every handler.
pub(crate) struct AppState {
    pub(crate) service: Arc<dyn CallService>,
    /// The records API's store; None: those routes answer 503.
    pub(crate) cdr: Option<Arc<dyn CdrService>>,
    pub(crate) verifier: Verifier,
    pub(crate) idem: Mutex<IdempotencyStore>,
    pub(crate) metrics: ApiMetrics,
    pub(crate) webhooks: Arc<WebhookStats>,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) metrics_public: bool,
    pub(crate) request_timeout: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
}

type St = Arc<AppState>;

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The principal of a request that needs `scope`.
pub(super) fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    scope: &str,
) -> Result<Principal, ApiError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized("send Authorization: Bearer <token>"));
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::invalid_token("the Authorization header is not ASCII"))?;
    let token = match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ => return Err(ApiError::unauthorized("use the Bearer scheme")),
    };
    let p = st
        .verifier
        .verify(token, now_unix())
        .map_err(|e| ApiError::invalid_token(e.to_string()))?;
    if !p.has_scope(scope) {
        return Err(ApiError::forbidden_scope(scope));
    }
    Ok(p)
}

pub(super) fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(_) => ApiError::internal().into_response(),
    }
}

/// Runs an engine call on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(ApiError::internal()))
}

/// The body of a JSON request: media type, size, strict parse.
async fn read_json<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LEN_MAX as u64) {
        return Err(ApiError::payload_too_large(BODY_LEN_MAX));
    }
    // Read to the end even past the limit (up to DRAIN_LEN_MAX, keeping
    // nothing beyond BODY_LEN_MAX): answering while the client still sends
    // would close the connection on unread data, and the TCP reset can
    // destroy the 413 before the client reads it.
    let mut body = body;
    let mut bytes = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| ApiError::invalid_body("the body could not be read"))?;
        if let Ok(data) = frame.into_data() {
            total = total.saturating_add(data.len());
            if total > DRAIN_LEN_MAX {
                return Err(ApiError::payload_too_large(BODY_LEN_MAX));
            }
            if total <= BODY_LEN_MAX {
                bytes.extend_from_slice(&data);
            }
        }
    }
    if total > BODY_LEN_MAX {
        return Err(ApiError::payload_too_large(BODY_LEN_MAX));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid_body(e.to_string()))
}

/// A request type of one of the POSTs.
trait CreateRequest: DeserializeOwned + Serialize + Send + 'static {
    fn validate(&self) -> Result<(), ApiError>;
    fn account(&self) -> &str;
}

impl CreateRequest for ClickToCallRequest {
    fn validate(&self) -> Result<(), ApiError> {
        ClickToCallRequest::validate(self)
    }
    fn account(&self) -> &str {
        &self.account
    }
}

impl CreateRequest for NotificationRequest {
    fn validate(&self) -> Result<(), ApiError> {
        NotificationRequest::validate(self)
    }
    fn account(&self) -> &str {
        &self.account
    }
}

fn stored_to_response(s: &StoredResponse, replayed: bool) -> Response {
    let mut r = (
        StatusCode::from_u16(s.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        s.body.clone(),
    )
        .into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(s.content_type),
    );
    if let Some(loc) = s
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        h.insert(header::LOCATION, loc);
    }
    if replayed {
        h.insert("idempotency-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// The engine's answer to a POST as a storable response.
fn created(result: &Result<CallView, ApiError>) -> (StoredResponse, Option<u32>) {
    match result {
        Ok(view) => (
            StoredResponse {
                status: 201,
                content_type: "application/json",
                body: serde_json::to_string(view).unwrap_or_default(),
                location: Some(format!("/v1/calls/{}", view.id)),
            },
            None,
        ),
        Err(e) => (
            StoredResponse {
                status: e.status_code().as_u16(),
                content_type: super::error::PROBLEM_JSON,
                body: e.body(),
                location: None,
            },
            e.retry_after_s,
        ),
    }
}

/// `POST /v1/calls` and `POST /v1/notifications`.
async fn create<T: CreateRequest>(
    st: St,
    headers: HeaderMap,
    body: Body,
    scope: &'static str,
    route: &'static str,
    call: fn(&dyn CallService, &Principal, T) -> Result<CallView, ApiError>,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, scope)?;
    if st.draining.load(Ordering::SeqCst) {
        return Err(ApiError::draining());
    }
    let req: T = read_json(&headers, body).await?;
    req.validate()?;
    if let Some(a) = &who.account {
        if a != req.account() {
            return Err(ApiError::forbidden_account(format!(
                "this token may only act for account {a:?}"
            )));
        }
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if idempotency::key_is_valid(k) => Some(k.to_string()),
            _ => return Err(ApiError::invalid_idempotency_key()),
        },
    };
    // `ready` is asked on the blocking pool too, right before the call.
    let engine = move |service: Arc<dyn CallService>, who: Principal, req: T| {
        if !service.ready() {
            return Err(ApiError::not_ready());
        }
        call(&*service, &who, req)
    };
    let Some(key) = key else {
        let service = st.service.clone();
        let result = blocking(move || engine(service, who, req)).await;
        let (resp, retry) = created(&result);
        return Ok(with_retry_after(stored_to_response(&resp, false), retry));
    };
    // Serializing the parsed request (defaults applied, fields in
    // declaration order) gives the same bytes for equivalent bodies.
    let canonical = serde_json::to_vec(&req).map_err(|_| ApiError::internal())?;
    let scope_key = (who.subject.clone(), route, key);
    let begin = st.idem.lock().unwrap_or_else(|e| e.into_inner()).begin(
        scope_key.clone(),
        idempotency::fingerprint(&canonical),
        Instant::now(),
    );
    let generation = match begin {
        Begin::Started(g) => g,
        Begin::Replay(stored) => return Ok(stored_to_response(&stored, true)),
        Begin::Conflict => return Err(ApiError::idempotency_conflict()),
        Begin::InProgress => return Err(ApiError::idempotency_in_progress()),
        Begin::Full => {
            return Err(ApiError::overloaded(
                "too many requests with Idempotency-Key in progress",
            ))
        }
    };
    // The engine call and the recording of its answer run in a task of
    // their own: if the client goes away (or the request times out), the
    // call still gets placed once and its answer is stored for the retry.
    let task_st = st.clone();
    let task = tokio::spawn(async move {
        let service = task_st.service.clone();
        let result = blocking(move || engine(service, who, req)).await;
        let (resp, retry) = created(&result);
        task_st
            .idem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(&scope_key, generation, Some(resp.clone()));
        (resp, retry)
    });
    match task.await {
        Ok((resp, retry)) => Ok(with_retry_after(stored_to_response(&resp, false), retry)),
        Err(_) => Err(ApiError::internal()),
    }
}

fn with_retry_after(mut r: Response, retry: Option<u32>) -> Response {
    if let Some(s) = retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

async fn create_call(State(st): State<St>, headers: HeaderMap, body: Body) -> Response {
    create::<ClickToCallRequest>(
        st,
        headers,
        body,
        SCOPE_CALLS_WRITE,
        "/v1/calls",
        |s, w, r| s.create_click_to_call(w, r),
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

async fn create_notification(State(st): State<St>, headers: HeaderMap, body: Body) -> Response {
    create::<NotificationRequest>(
        st,
        headers,
        body,
        SCOPE_NOTIFICATIONS_WRITE,
        "/v1/notifications",
        |s, w, r| s.create_notification(w, r),
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

fn valid_call_id(id: &str) -> bool {
    (1..=CALL_ID_LEN_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

fn call_id(p: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match p {
        Ok(Path(id)) if valid_call_id(&id) => Ok(id),
        _ => Err(ApiError::not_found("no such call")),
    }
}

async fn get_call(
    State(st): State<St>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_CALLS_READ)?;
    let id = call_id(id)?;
    let service = st.service.clone();
    let view = blocking(move || service.get_call(&who, &id)).await?;
    Ok(json_response(StatusCode::OK, &view))
}

async fn hangup(
    State(st): State<St>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_CALLS_WRITE)?;
    let id = call_id(id)?;
    let service = st.service.clone();
    let view = blocking(move || service.hangup(&who, &id)).await?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `?state=` of `GET /v1/calls`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum StateFilter {
    Active,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<StateFilter>,
}

#[derive(Serialize)]
struct CallList {
    calls: Vec<CallView>,
}

async fn list_calls(
    State(st): State<St>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let who = authorize(&st, &headers, SCOPE_CALLS_READ)?;
    let Query(q) = q.map_err(|e| ApiError::invalid_query(e.body_text()))?;
    let active = matches!(q.state, Some(StateFilter::Active));
    let service = st.service.clone();
    let calls = blocking(move || service.list_calls(&who, active)).await?;
    Ok(json_response(StatusCode::OK, &CallList { calls }))
}

/// Decrements the SSE client gauge when a stream ends.
struct SseClient(St);

impl Drop for SseClient {
    fn drop(&mut self) {
        self.0.metrics.sse_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /v1/events`: every state change as `event: call` with the event id
/// as `id:`; when this client fell behind the engine's channel, one
/// `event: lagged` with `{"missed": n}` and the stream goes on.
async fn events(
    State(st): State<St>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let who = authorize(&st, &headers, SCOPE_CALLS_READ)?;
    let rx = st.service.subscribe();
    st.metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
    let client = SseClient(st.clone());
    let shutdown = st.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (rx, shutdown, who.account, client),
        |(mut rx, mut shutdown, account, client)| async move {
            loop {
                let r = tokio::select! {
                    r = rx.recv() => r,
                    _ = shutdown.changed() => return None,
                };
                let ev = match r {
                    Ok(ev) => {
                        if account.as_ref().is_some_and(|a| *a != ev.account) {
                            continue;
                        }
                        match Event::default()
                            .id(ev.id.to_string())
                            .event("call")
                            .json_data(&ev)
                        {
                            Ok(e) => e,
                            Err(_) => continue,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => Event::default()
                        .event("lagged")
                        .data(serde_json::json!({ "missed": n }).to_string()),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                return Some((Ok(ev), (rx, shutdown, account, client)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEPALIVE).text("keep-alive")))
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    active_calls: usize,
}

async fn drain(State(st): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers, SCOPE_ADMIN)?;
    let service = st.service.clone();
    let first = !st.draining.swap(true, Ordering::SeqCst);
    let active = blocking(move || {
        if first {
            service.drain();
        }
        Ok(service.active_calls())
    })
    .await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &Status {
            status: "draining",
            active_calls: active,
        },
    ))
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(st): State<St>) -> Result<Response, ApiError> {
    let service = st.service.clone();
    let (ready, active) = blocking(move || Ok((service.ready(), service.active_calls()))).await?;
    if st.draining.load(Ordering::SeqCst) {
        return Err(ApiError::draining());
    }
    if !ready {
        return Err(ApiError::not_ready());
    }
    Ok(json_response(
        StatusCode::OK,
        &Status {
            status: "ready",
            active_calls: active,
        },
    ))
}

async fn metrics(State(st): State<St>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !st.metrics_public {
        authorize(&st, &headers, SCOPE_ADMIN)?;
    }
    let mut out = String::with_capacity(8192);
    st.metrics.write(&mut out);
    st.webhooks.write(&mut out);
    let idem = st.idem.lock().unwrap_or_else(|e| e.into_inner()).len();
    out.push_str("# HELP kolokol_api_idempotency_keys Idempotency keys remembered.\n");
    out.push_str("# TYPE kolokol_api_idempotency_keys gauge\n");
    out.push_str(&format!("kolokol_api_idempotency_keys {idem}\n"));
    out.push_str("# HELP kolokol_api_draining 1 while the gateway drains.\n");
    out.push_str("# TYPE kolokol_api_draining gauge\n");
    out.push_str(&format!(
        "kolokol_api_draining {}\n",
        u8::from(st.draining.load(Ordering::SeqCst))
    ));
    let service = st.service.clone();
    let out = blocking(move || {
        service.write_metrics(&mut out);
        Ok(out)
    })
    .await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        out,
    )
        .into_response())
}

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        )],
        OPENAPI_YAML,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Decrements the in-flight gauge however the request ends.
struct InFlight<'a>(&'a ApiMetrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Metrics and the request timeout around every route.
async fn observe(State(st): State<St>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|m| ROUTES.iter().find(|r| r.path == m.as_str()))
        .map_or("unmatched", |r| r.path);
    let method = req.method().clone();
    st.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(&st.metrics);
    let resp = if route == "/v1/events" {
        next.run(req).await
    } else {
        match tokio::time::timeout(st.request_timeout, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::request_timeout().into_response(),
        }
    };
    drop(guard);
    let method = match method {
        Method::GET
        | Method::POST
        | Method::DELETE
        | Method::HEAD
        | Method::PUT
        | Method::PATCH
        | Method::OPTIONS => method.as_str().to_string(),
        _ => "other".to_string(),
    };
    st.metrics
        .observe(route, &method, resp.status().as_u16(), start.elapsed());
    resp
}

/// The router over `st`.
pub(crate) fn router(st: St) -> Router {
    Router::new()
        .route("/v1/calls", post(create_call).get(list_calls))
        .route("/v1/calls/{id}", get(get_call).delete(hangup))
        .route("/v1/notifications", post(create_notification))
        .route("/v1/events", get(events))
        .route("/v1/admin/drain", post(drain))
        .route("/v1/cdrs", get(cdr_api::list_cdrs))
        .route("/v1/cdrs/export.csv", get(cdr_api::export_csv))
        .route("/v1/reports/summary", get(cdr_api::summary))
        .route(
            "/v1/accounts/{id}/cdrs",
            axum::routing::delete(cdr_api::erase_account),
        )
        .route("/v1/audit", get(cdr_api::audit))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.yaml", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(st.clone(), observe))
        .with_state(st)
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what)
}

/// See [`super::load_tls`].
pub(crate) fn load_tls(cert: &FsPath, key: &FsPath) -> io::Result<rustls::ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(format!("api.tls_cert {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "api.tls_cert {}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("api.tls_key {}: {e}", key.display())))?;
    let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| invalid(format!("TLS: {e}")))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| invalid(format!("api.tls_cert/api.tls_key: {e}")))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// Serves one connection until it closes or shutdown, then closes it
/// gracefully (the request in progress finishes).
async fn serve_conn<I>(io: I, app: Router, mut shutdown: watch::Receiver<bool>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Accepts until shutdown, then waits up to [`SHUTDOWN_GRACE`] for open
/// connections.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    max_connections: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    // EMFILE and friends: wait for descriptors to free up
                    // rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    if let Ok(Ok(stream)) = handshake {
                        serve_conn(stream, app, conn_shutdown).await;
                    }
                }
                None => serve_conn(tcp, app, conn_shutdown).await,
            }
        });
    }
    drop(listener);
    let n = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(n)).await;
}

/// See [`super::spawn_api`].
pub(crate) fn spawn(
    cfg: ApiConfig,
    service: Arc<dyn CallService>,
    cdr: Option<Arc<dyn CdrService>>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<ApiHandle> {
    let a = &cfg.api;
    let tls = match tls {
        Some(t) => Some(t),
        None => {
            if a.tls_cert.is_none() && !a.insecure_http {
                // Names the key and says what to do.
                a.check_startable().map_err(|e| invalid(e.to_string()))?;
            }
            match (&a.tls_cert, &a.tls_key) {
                (Some(c), Some(k)) => Some(Arc::new(load_tls(c, k)?)),
                (Some(_), None) => {
                    return Err(invalid("api.tls_key must be set with api.tls_cert".into()))
                }
                _ => None,
            }
        }
    };
    let jwks_file = a.jwks_file.as_ref().ok_or_else(|| {
        invalid(
            "api.jwks_file is not set: the API verifies bearer tokens with the keys of a JWKS file"
                .into(),
        )
    })?;
    let jwks = Jwks::load(jwks_file).map_err(|e| invalid(format!("api.jwks_file: {e}")))?;
    let verifier = Verifier {
        jwks,
        audience: a.audience.clone(),
        issuer: a.issuer.clone(),
    };
    let std_listener = std::net::TcpListener::bind(a.listen)
        .map_err(|e| io::Error::new(e.kind(), format!("api.listen {}: {e}", a.listen)))?;
    std_listener.set_nonblocking(true)?;
    let local_addr: SocketAddr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("kolokol-api-blocking")
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .build()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let draining = Arc::new(AtomicBool::new(false));
    let (webhooks, listener) = {
        let _enter = rt.enter();
        let webhooks = webhook::start(&cfg.webhooks, service.subscribe(), shutdown_rx.clone())?;
        (webhooks, tokio::net::TcpListener::from_std(std_listener)?)
    };
    let st = Arc::new(AppState {
        service: service.clone(),
        cdr,
        verifier,
        idem: Mutex::new(IdempotencyStore::new(
            a.idempotency_max_entries.max(1),
            Duration::from_secs(a.idempotency_ttl_s),
        )),
        metrics: ApiMetrics::default(),
        webhooks: webhooks.clone(),
        draining: draining.clone(),
        metrics_public: a.metrics_public,
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        shutdown: shutdown_rx.clone(),
    });
    let app = router(st);
    let acceptor = tls.map(TlsAcceptor::from);
    let max_connections = a.max_connections.max(1);
    let thread = std::thread::Builder::new()
        .name("kolokol-api".into())
        .spawn(move || {
            rt.block_on(accept_loop(
                listener,
                acceptor,
                app,
                max_connections,
                shutdown_rx,
            ));
            rt.shutdown_timeout(Duration::from_secs(1));
        })?;
    Ok(ApiHandle {
        local_addr,
        shutdown: shutdown_tx,
        thread: Some(thread),
        draining,
        service,
        webhooks,
    })
}
