//! The API server in-process, over real HTTPS (the test CA of
//! `config/tls/`), against a fake [`CallService`]: what these tests check is
//! the HTTP layer (auth, idempotency, problem documents, SSE, webhooks,
//! drain, metrics, the OpenAPI document), not the call engine.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::auth::test::{claims, es, rs};
use super::auth::{JwtAlg, SigningKey};
use super::*;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn unix_now() -> i64 {
    UtcTime::now().unix_s()
}

/// An engine that remembers calls in a map.
pub(crate) struct Fake {
    calls: Mutex<HashMap<String, CallView>>,
    pub(crate) creates: AtomicUsize,
    next_id: AtomicU64,
    next_event: AtomicU64,
    pub(crate) tx: broadcast::Sender<CallEvent>,
    drained: AtomicBool,
    /// How long a create takes.
    delay: Duration,
}

impl Fake {
    pub(crate) fn new(events_capacity: usize, delay: Duration) -> Arc<Fake> {
        Arc::new(Fake {
            calls: Mutex::new(HashMap::new()),
            creates: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            next_event: AtomicU64::new(1),
            tx: broadcast::channel(events_capacity).0,
            drained: AtomicBool::new(false),
            delay,
        })
    }

    pub(crate) fn emit(&self, v: &CallView) {
        let _ = self.tx.send(CallEvent {
            id: self.next_event.fetch_add(1, Ordering::SeqCst),
            call_id: v.id.clone(),
            account: v.account.clone(),
            state: v.state,
            at: v.updated_at,
            detail: json!({}),
        });
    }

    fn create(
        &self,
        kind: CallKind,
        account: String,
        number: String,
        line: Option<String>,
    ) -> CallView {
        std::thread::sleep(self.delay);
        self.creates.fetch_add(1, Ordering::SeqCst);
        let now = UtcTime::now();
        let v = CallView {
            id: format!("c-{}", self.next_id.fetch_add(1, Ordering::SeqCst)),
            kind,
            account,
            state: CallState::Queued,
            number,
            support_line: line,
            created_at: now,
            updated_at: now,
            answered_at: None,
            ended_at: None,
            result: None,
            dtmf: None,
            sip_status: None,
            q850: None,
            error_code: None,
        };
        self.calls.lock().unwrap().insert(v.id.clone(), v.clone());
        self.emit(&v);
        v
    }

    fn visible(who: &Principal, v: &CallView) -> bool {
        who.account.as_ref().is_none_or(|a| *a == v.account)
    }
}

impl CallService for Fake {
    fn create_click_to_call(
        &self,
        _: &Principal,
        r: ClickToCallRequest,
    ) -> Result<CallView, ApiError> {
        Ok(self.create(
            CallKind::ClickToCall,
            r.account,
            r.citizen_number,
            r.support_line,
        ))
    }
    fn create_notification(
        &self,
        _: &Principal,
        r: NotificationRequest,
    ) -> Result<CallView, ApiError> {
        Ok(self.create(CallKind::Notification, r.account, r.number, None))
    }
    fn get_call(&self, who: &Principal, id: &str) -> Result<CallView, ApiError> {
        self.calls
            .lock()
            .unwrap()
            .get(id)
            .filter(|v| Fake::visible(who, v))
            .cloned()
            .ok_or_else(|| ApiError::not_found("no such call"))
    }
    fn list_calls(&self, who: &Principal, active_only: bool) -> Result<Vec<CallView>, ApiError> {
        let mut v: Vec<CallView> = self
            .calls
            .lock()
            .unwrap()
            .values()
            .filter(|v| Fake::visible(who, v) && (!active_only || !v.state.is_terminal()))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }
    fn hangup(&self, who: &Principal, id: &str) -> Result<CallView, ApiError> {
        let mut calls = self.calls.lock().unwrap();
        let v = calls
            .get_mut(id)
            .filter(|v| Fake::visible(who, v))
            .ok_or_else(|| ApiError::not_found("no such call"))?;
        if !v.state.is_terminal() {
            let now = UtcTime::now();
            v.state = CallState::Completed;
            v.result = Some(CallResult::Cancelled);
            v.updated_at = now;
            v.ended_at = Some(now);
        }
        let v = v.clone();
        drop(calls);
        self.emit(&v);
        Ok(v)
    }
    fn drain(&self) {
        self.drained.store(true, Ordering::SeqCst);
    }
    fn ready(&self) -> bool {
        !self.drained.load(Ordering::SeqCst)
    }
    fn active_calls(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .values()
            .filter(|v| !v.state.is_terminal())
            .count()
    }
    fn write_metrics(&self, out: &mut String) {
        out.push_str("# TYPE kolokol_fake_calls_total counter\n");
        out.push_str(&format!(
            "kolokol_fake_calls_total {}\n",
            self.creates.load(Ordering::SeqCst)
        ));
    }
    fn subscribe(&self) -> broadcast::Receiver<CallEvent> {
        self.tx.subscribe()
    }
}

/// The configuration of a test server: loopback, ephemeral port, the test
/// certificate and JWKS.
pub(crate) fn test_config() -> ApiConfig {
    let mut cfg = ApiConfig::default();
    cfg.api.listen = "127.0.0.1:0".parse().unwrap();
    cfg.api.tls_cert = Some(repo("config/tls/sip-test.crt"));
    cfg.api.tls_key = Some(repo("config/tls/sip-test.key"));
    cfg.api.jwks_file = Some(repo("config/jwt/jwks.json"));
    cfg
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A TLS client configuration trusting only the test CA.
fn tls_client() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls::pki_types::CertificateDer::pem_file_iter(repo("config/tls/test-ca.crt")).unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An HTTPS client trusting only the test CA.
fn client() -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_client())
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

use rustls::pki_types::pem::PemObject as _;

struct Api {
    handle: ApiHandle,
    client: HttpsClient,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts a problem document with `status` and `code`.
    fn problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.headers["content-type"], "application/problem+json");
        let v = self.json();
        assert_eq!(v["code"], code, "{}", self.body);
        assert_eq!(v["status"], status);
        assert_eq!(v["type"], format!("urn:kolokol:problem:{code}"));
        assert!(v["title"].is_string() && v["detail"].is_string());
        assert_eq!(v.as_object().unwrap().len(), 5);
    }
}

impl Api {
    fn start(fake: Arc<Fake>, cfg: ApiConfig) -> Api {
        let handle = spawn_api(cfg, fake, None).unwrap();
        Api {
            handle,
            client: client(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://127.0.0.1:{}{path}",
            self.handle.local_addr().port()
        )
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Answer {
        let mut b = http::Request::builder().method(method).uri(self.url(path));
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some()
            && !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            b = b.header("content-type", "application/json");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send(Method::GET, path, token, &[], None).await
    }

    async fn post(&self, path: &str, token: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.send(Method::POST, path, Some(token), headers, Some(body))
            .await
    }
}

fn token(scope: &str) -> String {
    let mut c = claims(scope);
    c["exp"] = json!(unix_now() + 600);
    es().sign(&c).unwrap()
}

const ALL: &str = "calls:write calls:read notifications:write admin";
const C2C: &str = r#"{"account":"acc-1","citizen_number":"+79991234567","purpose":"appointment"}"#;
const NOTE: &str = r#"{"account":"acc-1","number":"+79991234567","language":"ru","digits":"4821","require_confirmation":true}"#;

#[tokio::test]
async fn jwt_refusals_over_https() {
    let api = Api::start(Fake::new(64, Duration::ZERO), test_config());
    let now = unix_now();
    let ok = api.post("/v1/calls", &token("calls:write"), &[], C2C).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    let rs_ok = rs()
        .sign(&json!({"sub": "p", "aud": "kolokol", "scp": ["calls:read"], "exp": now + 60}))
        .unwrap();
    assert_eq!(api.get("/v1/calls", Some(&rs_ok)).await.status, 200);

    let expired = es()
        .sign(&json!({"sub": "p", "aud": "kolokol", "scope": "calls:read", "exp": now - 3600}))
        .unwrap();
    let wrong_aud = es()
        .sign(&json!({"sub": "p", "aud": "someone-else", "scope": "calls:read", "exp": now + 60}))
        .unwrap();
    // Wrong key: a fresh P-256 key that claims the test kid.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &rng,
    )
    .unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    let wrong_key = SigningKey::from_pem(pem.as_bytes(), "test-es256-1", JwtAlg::Es256)
        .unwrap()
        .sign(&json!({"sub": "p", "aud": "kolokol", "scope": "calls:read", "exp": now + 60}))
        .unwrap();
    let body = URL_SAFE_NO_PAD.encode(
        json!({"sub": "p", "aud": "kolokol", "scope": "calls:read", "exp": now + 60}).to_string(),
    );
    let alg_none = format!(
        "{}.{body}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"test-es256-1"}"#)
    );
    // HS256 keyed with the RSA public key as published (the JWKS text).
    let hs_input = format!(
        "{}.{body}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"test-rs256-1"}"#)
    );
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(auth::TEST_JWKS.as_bytes()).unwrap();
    mac.update(hs_input.as_bytes());
    let hs256 = format!(
        "{hs_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );

    for (what, t) in [
        ("expired", expired),
        ("wrong audience", wrong_aud),
        ("wrong key", wrong_key),
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("garbage", "not-a-jwt".to_string()),
    ] {
        let a = api.get("/v1/calls", Some(&t)).await;
        a.problem(401, "invalid_token");
        assert_eq!(
            a.headers["www-authenticate"], "Bearer realm=\"kolokol\", error=\"invalid_token\"",
            "{what}"
        );
    }
    let a = api.get("/v1/calls", None).await;
    a.problem(401, "unauthorized");
    assert_eq!(a.headers["www-authenticate"], "Bearer realm=\"kolokol\"");
    // Missing scope: 403 on every scoped route.
    let weak = token("cdr:read");
    for r in ROUTES
        .iter()
        .filter(|r| r.scope.is_some_and(|s| s != "cdr:read"))
    {
        let path = r.path.replace("{id}", "c-1");
        let m = Method::from_bytes(r.method.as_bytes()).unwrap();
        let body = (r.method == "POST").then_some("{}");
        let a = api.send(m, &path, Some(&weak), &[], body).await;
        a.problem(403, "forbidden_scope");
        assert!(a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope"));
    }
    // A token bound to an account may not act for another.
    let mut c = claims("calls:write");
    c["exp"] = json!(now + 60);
    c["account"] = json!("acc-2");
    let bound = es().sign(&c).unwrap();
    api.post("/v1/calls", &bound, &[], C2C)
        .await
        .problem(403, "forbidden_account");
    api.handle.shutdown();
}

#[tokio::test]
async fn idempotent_replay_reaches_the_engine_once() {
    let fake = Fake::new(64, Duration::ZERO);
    let api = Api::start(fake.clone(), test_config());
    let t = token(ALL);
    let key = [("idempotency-key", "k-1")];
    let first = api.post("/v1/calls", &t, &key, C2C).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    assert_eq!(first.headers["location"], format!("/v1/calls/{id}"));
    assert!(first.headers.get("idempotency-replayed").is_none());
    // The same body, re-ordered and re-spaced, is the same request.
    let same =
        r#"{ "purpose": "appointment", "citizen_number": "+79991234567", "account": "acc-1" }"#;
    for body in [C2C, same] {
        let again = api.post("/v1/calls", &t, &key, body).await;
        assert_eq!(again.status, 201);
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers["location"], first.headers["location"]);
        assert_eq!(again.headers["idempotency-replayed"], "true");
    }
    assert_eq!(fake.creates.load(Ordering::SeqCst), 1);
    // Another body under the key: conflict, nothing placed.
    let other = C2C.replace("+79991234567", "+79990000000");
    api.post("/v1/calls", &t, &key, &other)
        .await
        .problem(422, "idempotency_conflict");
    assert_eq!(fake.creates.load(Ordering::SeqCst), 1);
    // The same key on the other POST, or without a key, is a new call.
    let n = api.post("/v1/notifications", &t, &key, NOTE).await;
    assert_eq!(n.status, 201, "{}", n.body);
    assert_eq!(n.json()["kind"], "notification");
    assert_eq!(api.post("/v1/calls", &t, &[], C2C).await.status, 201);
    assert_eq!(fake.creates.load(Ordering::SeqCst), 3);
    api.post("/v1/calls", &t, &[("idempotency-key", "")], C2C)
        .await
        .problem(422, "invalid_idempotency_key");
    api.handle.shutdown();
}

#[tokio::test]
async fn concurrent_duplicates_reach_the_engine_once() {
    let fake = Fake::new(64, Duration::from_millis(400));
    let api = Api::start(fake.clone(), test_config());
    let t = token(ALL);
    let key = [("idempotency-key", "dup")];
    let (a, b) = tokio::join!(api.post("/v1/calls", &t, &key, C2C), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        api.post("/v1/calls", &t, &key, C2C).await
    });
    assert_eq!(a.status, 201, "{}", a.body);
    b.problem(409, "idempotency_in_progress");
    assert_eq!(b.headers["retry-after"], "1");
    // Once the first has finished, a retry replays it.
    let c = api.post("/v1/calls", &t, &key, C2C).await;
    assert_eq!(c.body, a.body);
    assert_eq!(fake.creates.load(Ordering::SeqCst), 1);
    api.handle.shutdown();
}

#[tokio::test]
async fn problem_documents_and_limits() {
    let api = Api::start(Fake::new(64, Duration::ZERO), test_config());
    let t = token(ALL);
    api.get("/v2/nothing", Some(&t))
        .await
        .problem(404, "not_found");
    let a = api
        .send(Method::PUT, "/v1/calls", Some(&t), &[], None)
        .await;
    a.problem(405, "method_not_allowed");
    assert!(a.headers["allow"].to_str().unwrap().contains("POST"));
    api.get("/v1/calls/nope", Some(&t))
        .await
        .problem(404, "not_found");
    api.get("/v1/calls/a%20b", Some(&t))
        .await
        .problem(404, "not_found");
    api.send(Method::DELETE, "/v1/calls/nope", Some(&t), &[], None)
        .await
        .problem(404, "not_found");
    api.post("/v1/calls", &t, &[("content-type", "text/plain")], C2C)
        .await
        .problem(415, "unsupported_media_type");
    let big = format!(r#"{{"account":"{}"}}"#, "a".repeat(BODY_LEN_MAX));
    api.post("/v1/calls", &t, &[], &big)
        .await
        .problem(413, "payload_too_large");
    // Over the limit without a length (chunked).
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = (0..20)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![b' '; 8192]))))
        .collect();
    let req = http::Request::post(api.url("/v1/calls"))
        .header("authorization", format!("Bearer {t}"))
        .header("content-type", "application/json")
        .body(http_body_util::StreamBody::new(futures_util::stream::iter(
            chunks,
        )))
        .unwrap();
    let chunked_client = Client::builder(TokioExecutor::new()).build(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_client())
            .https_only()
            .enable_http1()
            .build(),
    );
    let resp = chunked_client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    let a = api
        .post(
            "/v1/calls",
            &t,
            &[],
            r#"{"account":"a","citizen_number":"+7999","colour":"red"}"#,
        )
        .await;
    a.problem(422, "invalid_body");
    assert!(
        a.json()["detail"].as_str().unwrap().contains("colour"),
        "{}",
        a.body
    );
    api.post("/v1/calls", &t, &[], "[1,2")
        .await
        .problem(422, "invalid_body");
    api.post(
        "/v1/notifications",
        &t,
        &[],
        r#"{"account":"a","number":"+7999","language":"en"}"#,
    )
    .await
    .problem(422, "invalid_body");
    api.post(
        "/v1/notifications",
        &t,
        &[],
        &NOTE.replace("4821", "12345678901234"),
    )
    .await
    .problem(422, "invalid_body");
    api.get("/v1/calls?state=sleeping", Some(&t))
        .await
        .problem(422, "invalid_query");
    api.get("/v1/calls?colour=red", Some(&t))
        .await
        .problem(422, "invalid_query");
    // Reads, the list filter and hang-up.
    let id = api.post("/v1/calls", &t, &[], C2C).await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let g = api.get(&format!("/v1/calls/{id}"), Some(&t)).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["state"], "queued");
    assert_eq!(g.headers["content-type"], "application/json");
    let d = api
        .send(
            Method::DELETE,
            &format!("/v1/calls/{id}"),
            Some(&t),
            &[],
            None,
        )
        .await;
    assert_eq!(d.json()["state"], "completed");
    assert_eq!(d.json()["result"], "cancelled");
    assert_eq!(
        api.get("/v1/calls", Some(&t)).await.json()["calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        api.get("/v1/calls?state=active", Some(&t)).await.json(),
        json!({"calls": []})
    );
    let h = api.get("/healthz", None).await;
    assert_eq!(
        (h.status.as_u16(), h.json()),
        (200, json!({"status": "ok"}))
    );
    let o = api.get("/openapi.yaml", None).await;
    assert!(o.status == 200 && o.body.starts_with("openapi: 3.1"));
    api.handle.shutdown();
}

/// Reads SSE frames until `pred` holds for one; returns all seen.
async fn sse_until(body: &mut hyper::body::Incoming, pred: impl Fn(&str) -> bool) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.split("\n\n").any(&pred) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, body.frame())
            .await
            .expect("SSE timed out")
            .expect("stream ended")
            .unwrap();
        if let Some(d) = frame.data_ref() {
            seen.push_str(std::str::from_utf8(d).unwrap());
        }
    }
    seen
}

#[tokio::test]
async fn sse_delivers_events_and_survives_lag() {
    let fake = Fake::new(4, Duration::ZERO);
    let api = Api::start(fake.clone(), test_config());
    let t = token(ALL);
    let req = http::Request::get(api.url("/v1/events"))
        .header("authorization", format!("Bearer {t}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = api.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let created = api.post("/v1/calls", &t, &[], C2C).await.json();
    let seen = sse_until(&mut body, |f| f.contains("event: call")).await;
    let frame = seen
        .split("\n\n")
        .find(|f| f.contains("event: call"))
        .unwrap();
    assert!(frame.lines().any(|l| l.starts_with("id: ")), "{frame}");
    let data = frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let ev: Value = serde_json::from_str(data).unwrap();
    assert_eq!(ev["call_id"], created["id"]);
    assert_eq!(ev["state"], "queued");
    // Flood far past the channel's capacity: the client is told, then the
    // stream goes on.
    let v: CallView = fake
        .get_call(
            &Principal {
                subject: "t".into(),
                scopes: Default::default(),
                account: None,
            },
            created["id"].as_str().unwrap(),
        )
        .unwrap();
    for _ in 0..1000 {
        fake.emit(&v);
    }
    sse_until(&mut body, |f| {
        f.contains("event: lagged") && f.contains("\"missed\":")
    })
    .await;
    fake.emit(&CallView {
        state: CallState::Ringing,
        ..v
    });
    sse_until(&mut body, |f| f.contains("\"state\":\"ringing\"")).await;
    drop(body);
    api.handle.shutdown();
}

#[tokio::test]
async fn drain_makes_readyz_and_posts_503() {
    let fake = Fake::new(64, Duration::ZERO);
    let api = Api::start(fake.clone(), test_config());
    let t = token(ALL);
    let r = api.get("/readyz", None).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["status"].clone()),
        (200, json!("ready"))
    );
    api.post("/v1/admin/drain", &token("calls:write"), &[], "")
        .await
        .problem(403, "forbidden_scope");
    let d = api.post("/v1/admin/drain", &t, &[], "").await;
    assert_eq!(d.status, 202, "{}", d.body);
    assert_eq!(d.json(), json!({"status": "draining", "active_calls": 0}));
    assert!(fake.drained.load(Ordering::SeqCst) && api.handle.is_draining());
    api.get("/readyz", None).await.problem(503, "draining");
    api.post("/v1/calls", &t, &[], C2C)
        .await
        .problem(503, "draining");
    api.post("/v1/notifications", &t, &[], NOTE)
        .await
        .problem(503, "draining");
    assert_eq!(api.get("/v1/calls", Some(&t)).await.status, 200);
    assert_eq!(api.get("/healthz", None).await.status, 200);
    api.handle.shutdown();
}

#[tokio::test]
async fn metrics_have_the_histogram_and_the_engine_lines() {
    let api = Api::start(Fake::new(64, Duration::ZERO), test_config());
    let t = token(ALL);
    assert_eq!(api.post("/v1/calls", &t, &[], C2C).await.status, 201);
    api.get("/nope", None).await;
    let m = api.get("/metrics", None).await;
    assert_eq!(m.status, 200);
    assert!(m.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for line in [
        "# TYPE kolokol_api_request_duration_seconds histogram",
        "kolokol_api_request_duration_seconds_bucket{route=\"/v1/calls\",le=\"0.0005\"}",
        "kolokol_api_request_duration_seconds_bucket{route=\"/v1/calls\",le=\"+Inf\"} 1",
        "kolokol_api_requests_total{route=\"/v1/calls\",method=\"POST\",status=\"201\"} 1",
        "kolokol_api_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "kolokol_api_requests_in_flight 1",
        "kolokol_webhook_backlog 0",
        "kolokol_fake_calls_total 1",
    ] {
        assert!(m.body.contains(line), "{line} not in\n{}", m.body);
    }
    api.handle.shutdown();
    // Private metrics need admin.
    let mut cfg = test_config();
    cfg.api.metrics_public = false;
    let api = Api::start(Fake::new(64, Duration::ZERO), cfg);
    api.get("/metrics", None).await.problem(401, "unauthorized");
    api.get("/metrics", Some(&token("calls:read")))
        .await
        .problem(403, "forbidden_scope");
    assert_eq!(api.get("/metrics", Some(&t)).await.status, 200);
    api.handle.shutdown();
}

#[test]
fn startup_errors_name_the_key() {
    let fake: Arc<dyn CallService> = Fake::new(4, Duration::ZERO);
    let mut cfg = test_config();
    cfg.api.tls_cert = None;
    cfg.api.tls_key = None;
    let e = spawn_api(cfg.clone(), fake.clone(), None).unwrap_err();
    assert!(e.to_string().contains("api.tls_cert"), "{e}");
    cfg.api.insecure_http = true;
    cfg.api.jwks_file = None;
    let e = spawn_api(cfg.clone(), fake.clone(), None).unwrap_err();
    assert!(e.to_string().contains("api.jwks_file"), "{e}");
    cfg.api.jwks_file = Some(repo("config/jwt/missing.json"));
    let e = spawn_api(cfg.clone(), fake.clone(), None).unwrap_err();
    assert!(e.to_string().contains("api.jwks_file"), "{e}");
    let mut cfg = test_config();
    cfg.api.tls_key = Some(repo("config/jwt/jwks.json"));
    let e = spawn_api(cfg, fake.clone(), None).unwrap_err();
    assert!(e.to_string().contains("api.tls_key"), "{e}");
    // A taken port names the key too.
    let a = spawn_api(test_config(), fake.clone(), None).unwrap();
    let mut cfg = test_config();
    cfg.api.listen = a.local_addr();
    let e = spawn_api(cfg, fake, None).unwrap_err();
    assert!(e.to_string().contains("api.listen"), "{e}");
    a.shutdown();
}

/// The routes of the document: (METHOD, path) -> scopes of its security
/// requirement (`None` when an empty requirement makes it public).
fn document_routes() -> HashMap<(String, String), Option<Vec<String>>> {
    let doc: Value = serde_norway::from_str(server::OPENAPI_YAML).unwrap();
    let mut out = HashMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            let sec = op
                .get("security")
                .or(doc.get("security"))
                .unwrap()
                .as_array()
                .unwrap();
            let public = sec.is_empty() || sec.iter().any(|r| r.as_object().unwrap().is_empty());
            let scopes = (!public).then(|| {
                sec[0]["bearer"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect()
            });
            out.insert((method.to_uppercase(), path.clone()), scopes);
        }
    }
    out
}

#[tokio::test]
async fn routes_match_the_openapi_document() {
    let doc = document_routes();
    let served: HashMap<(String, String), Option<Vec<String>>> = ROUTES
        .iter()
        .map(|r| {
            (
                (r.method.to_string(), r.path.to_string()),
                r.scope.map(|s| vec![s.to_string()]),
            )
        })
        .collect();
    let d: BTreeSet<_> = doc.keys().collect();
    let s: BTreeSet<_> = served.keys().collect();
    assert_eq!(d, s, "routes in the document vs. served");
    assert_eq!(doc, served, "scopes in the document vs. served");
    // The router serves exactly ROUTES: each answers (401 without a token
    // when it has a scope), other methods on its path are 405.
    let api = Api::start(Fake::new(4, Duration::ZERO), test_config());
    let paths: BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
    for r in ROUTES {
        if r.path == "/v1/events" {
            continue; // never ends; covered by the SSE test
        }
        let path = r.path.replace("{id}", "c-1");
        let m = Method::from_bytes(r.method.as_bytes()).unwrap();
        let a = api.send(m, &path, None, &[], None).await;
        match r.scope {
            Some(_) => a.problem(401, "unauthorized"),
            None => assert!(a.status == 200, "{} {}: {}", r.method, r.path, a.status),
        }
    }
    for p in paths {
        let path = p.replace("{id}", "c-1");
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if ROUTES.iter().any(|r| r.path == p && r.method == m) {
                continue;
            }
            let a = api
                .send(
                    Method::from_bytes(m.as_bytes()).unwrap(),
                    &path,
                    None,
                    &[],
                    None,
                )
                .await;
            a.problem(405, "method_not_allowed");
        }
    }
    api.handle.shutdown();
}

/// A webhook receiver: answers 503 to the first `fail` requests, then 200;
/// over TLS (the test certificate) when `tls`.
async fn receiver(
    listener: tokio::net::TcpListener,
    fail: usize,
    tls: bool,
) -> Arc<Mutex<Vec<(HeaderMap, Bytes, u16)>>> {
    let seen: Arc<Mutex<Vec<(HeaderMap, Bytes, u16)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                let mut l = log.lock().unwrap();
                let status = if l.len() < fail { 503 } else { 200 };
                l.push((headers, body, status));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let acceptor = tls.then(|| {
        tokio_rustls::TlsAcceptor::from(Arc::new(
            load_tls(
                &repo("config/tls/sip-test.crt"),
                &repo("config/tls/sip-test.key"),
            )
            .unwrap(),
        ))
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let app = app.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let b = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            let _ = b
                                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = b
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                    }
                }
            });
        }
    });
    seen
}

/// The portal is down (connection refused), then answers 503 twice, then
/// takes the events: each arrives once accepted, in order, correctly signed.
async fn webhook_survives_an_outage(tls: bool) {
    // Reserve a port, then free it so that the first attempts are refused.
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let fake = Fake::new(64, Duration::ZERO);
    let mut cfg = test_config();
    let scheme = if tls { "https" } else { "http" };
    cfg.webhooks.url = Some(format!("{scheme}://127.0.0.1:{}/hook", addr.port()));
    cfg.webhooks.secret = Some("test-secret-0123456789".into());
    cfg.webhooks.ca_file = tls.then(|| repo("config/tls/test-ca.crt"));
    cfg.webhooks.retry_min_ms = 20;
    cfg.webhooks.retry_max_ms = 100;
    cfg.webhooks.timeout_ms = 2000;
    let api = Api::start(fake.clone(), cfg);
    let t = token(ALL);
    let first = api.post("/v1/calls", &t, &[], C2C).await.json();
    let second = api.post("/v1/notifications", &t, &[], NOTE).await.json();
    let stats = || api.handle.webhook_stats();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats().retries.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "no retries while refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stats().backlog.load(Ordering::Relaxed), 2);
    let m = api.get("/metrics", None).await.body;
    assert!(m.contains("kolokol_webhook_backlog 2"), "{m}");
    let seen = receiver(tokio::net::TcpListener::bind(addr).await.unwrap(), 2, tls).await;
    while stats().delivered.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "not delivered: {:?}", stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = seen.lock().unwrap().clone();
    // Two refused with 503, then both events, in order.
    assert_eq!(
        seen.iter().map(|s| s.2).collect::<Vec<_>>(),
        [503, 503, 200, 200]
    );
    let delivered: Vec<Value> = seen[2..]
        .iter()
        .map(|(h, body, _)| {
            let ts = h[webhook::HEADER_TIMESTAMP].to_str().unwrap();
            let sig = h[webhook::HEADER_SIGNATURE].to_str().unwrap();
            assert!(verify_signature(b"test-secret-0123456789", ts, body, sig));
            assert!(!verify_signature(b"another-secret-0123", ts, body, sig));
            assert!((ts.parse::<i64>().unwrap() - unix_now()).abs() < 60);
            assert_eq!(h["content-type"], "application/json");
            let ev: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(
                h[webhook::HEADER_EVENT_ID].to_str().unwrap(),
                ev["id"].to_string()
            );
            ev
        })
        .collect();
    assert_eq!(delivered[0]["call_id"], first["id"]);
    assert_eq!(delivered[1]["call_id"], second["id"]);
    assert_eq!(stats().backlog.load(Ordering::Relaxed), 0);
    assert_eq!(stats().dropped_gave_up.load(Ordering::Relaxed), 0);
    api.handle.shutdown();
}

#[tokio::test]
async fn webhook_over_http_survives_an_outage() {
    webhook_survives_an_outage(false).await;
}

#[tokio::test]
async fn webhook_over_https_survives_an_outage() {
    webhook_survives_an_outage(true).await;
}

#[tokio::test]
async fn webhook_gives_up_and_counts() {
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = test_config();
    cfg.webhooks.url = Some(format!("http://127.0.0.1:{}/hook", addr.port()));
    cfg.webhooks.secret = Some("test-secret-0123456789".into());
    cfg.webhooks.retry_min_ms = 20;
    cfg.webhooks.retry_max_ms = 50;
    cfg.webhooks.give_up_s = 1;
    let fake = Fake::new(64, Duration::ZERO);
    let api = Api::start(fake.clone(), cfg);
    assert_eq!(
        api.post("/v1/calls", &token(ALL), &[], C2C).await.status,
        201
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = api.handle.webhook_stats();
    while stats.dropped_gave_up.load(Ordering::Relaxed) < 1 {
        assert!(Instant::now() < deadline, "{stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.backlog.load(Ordering::Relaxed), 0);
    assert_eq!(stats.delivered.load(Ordering::Relaxed), 0);
    api.handle.shutdown();
}

/// Runs `scripts/schemathesis.sh` (PyPI schemathesis in a venv) against
/// this server with the fake engine. Needs python3 with venv and PyPI:
/// `cargo test --lib control::api::tests::schemathesis -- --ignored`.
#[test]
#[ignore = "installs schemathesis from PyPI and runs for a few minutes"]
fn schemathesis() {
    // Over HTTPS with the test CA, as the portal would.
    let cfg = test_config();
    let fake = Fake::new(1024, Duration::ZERO);
    let handle = spawn_api(cfg, fake, None).unwrap();
    let mut c = claims("calls:write calls:read notifications:write");
    c["exp"] = json!(unix_now() + 3600);
    let t = es().sign(&c).unwrap();
    let status = std::process::Command::new("bash")
        .arg(repo("scripts/schemathesis.sh"))
        .arg(format!("https://{}", handle.local_addr()))
        .arg(t)
        .status()
        .unwrap();
    handle.shutdown();
    assert!(status.success(), "schemathesis failed: {status}");
}

/// The records API against the SQLite store: scopes, bad input, paging,
/// the CSV export and the audit trail of every access.
#[tokio::test]
async fn records_api_on_the_sqlite_store() {
    use crate::cdr::crypt::test::keys;
    use crate::cdr::record::test::sample;
    use crate::cdr::service::StoreCdrService;
    use crate::cdr::store::test::TempDir;
    use crate::cdr::{CdrKind, CdrStore, Cipher, SqliteStore};

    let dir = TempDir::new("api-cdr");
    let store: Arc<dyn CdrStore> = Arc::new(
        SqliteStore::open(
            &dir.path().join("cdr.sqlite"),
            keys("k1", Cipher::Aes256Gcm),
        )
        .unwrap(),
    );
    let t0 = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
    let mut batch: Vec<_> = (0..25)
        .map(|i| {
            sample(
                &format!("c-{i}"),
                CdrKind::ClickToCall,
                if i < 20 { "acc-1" } else { "acc-2" },
                "+4930111111",
                t0 + i * 60_000,
                i % 2 == 0,
            )
        })
        .collect();
    batch[3].account = "=cmd|' /C calc'!A0".into();
    store.insert_batch(&batch).unwrap();
    let handle = spawn_api_with_cdr(
        test_config(),
        Fake::new(4, Duration::ZERO),
        Arc::new(StoreCdrService::new(store.clone())),
        None,
    )
    .unwrap();
    let api = Api {
        handle,
        client: client(),
    };
    let read = token("cdr:read");
    let export = token("cdr:export");
    let admin = token("admin");

    // Scopes.
    api.get("/v1/cdrs", Some(&export))
        .await
        .problem(403, "forbidden_scope");
    api.get("/v1/cdrs/export.csv", Some(&read))
        .await
        .problem(403, "forbidden_scope");
    api.get("/v1/audit", Some(&read))
        .await
        .problem(403, "forbidden_scope");
    api.send(
        Method::DELETE,
        "/v1/accounts/acc-2/cdrs",
        Some(&read),
        &[],
        None,
    )
    .await
    .problem(403, "forbidden_scope");

    // Bad input: 400 with a message naming the parameter.
    for (q, needle) in [
        ("from=yesterday", "from"),
        ("to=2026-02-30T00:00:00Z", "to"),
        ("limit=1000000", "limit"),
        ("limit=-1", "limit"),
        ("sort=desc", "unknown query parameter"),
        ("account=x%27%20OR%20%271%27%3D%271", "account"),
        ("number=1%3B%20DROP%20TABLE%20cdr", "number"),
        ("status=ok", "status"),
        ("cursor=%27", "cursor"),
        (
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            "before",
        ),
    ] {
        let a = api.get(&format!("/v1/cdrs?{q}"), Some(&read)).await;
        a.problem(400, "invalid_filter");
        assert!(
            a.json()["detail"].as_str().unwrap().contains(needle),
            "{q}: {}",
            a.body
        );
    }
    api.get("/v1/reports/summary?limit=5", Some(&read))
        .await
        .problem(400, "invalid_filter");
    api.get("/v1/audit?before=x", Some(&admin))
        .await
        .problem(400, "invalid_filter");

    // Paging by cursor, filtered by number and account.
    let mut ids = Vec::new();
    let mut url = "/v1/cdrs?number=%2B4930111111&account=acc-1&limit=7".to_string();
    loop {
        let a = api.get(&url, Some(&read)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        for r in v["records"].as_array().unwrap() {
            assert_eq!(r["callee"], "+4930111111");
            ids.push(r["call_id"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => {
                url = format!("/v1/cdrs?number=%2B4930111111&account=acc-1&limit=7&cursor={c}")
            }
            None => break,
        }
    }
    assert_eq!(ids.len(), 19, "acc-1 minus the renamed one");

    // A token bound to an account reads only that account.
    let mut c = claims("cdr:read");
    c["exp"] = json!(unix_now() + 600);
    c["account"] = json!("acc-2");
    let bound = es().sign(&c).unwrap();
    let a = api.get("/v1/cdrs", Some(&bound)).await;
    assert_eq!(a.json()["records"].as_array().unwrap().len(), 5);
    api.get("/v1/cdrs?account=acc-1", Some(&bound))
        .await
        .problem(403, "forbidden_account");

    // Summary.
    let a = api
        .get(
            "/v1/reports/summary?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
            Some(&read),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["calls"], 25);
    assert_eq!(v["answered"], 13);
    assert_eq!(v["per_hour"][0]["hour"], "2026-01-01T00:00:00.000Z");

    // Export: streamed CSV with formula cells neutralised.
    let a = api.get("/v1/cdrs/export.csv", Some(&export)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let lines: Vec<&str> = a.body.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 26);
    assert!(lines[0].starts_with("call_id,kind,account,caller,callee"));
    assert!(a.body.contains(",'+4930111111,"), "numbers are guarded");
    assert!(a.body.contains(",'=cmd|' /C calc'!A0,"), "{}", lines[23]);

    // Erasure (admin), then the audit log shows every access.
    let a = api
        .send(
            Method::DELETE,
            "/v1/accounts/acc-2/cdrs",
            Some(&admin),
            &[],
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["deleted"], 5);
    api.send(
        Method::DELETE,
        "/v1/accounts/a%27b/cdrs",
        Some(&admin),
        &[],
        None,
    )
    .await
    .problem(400, "invalid_path");
    let a = api.get("/v1/audit?limit=1000", Some(&admin)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let entries = a.json()["entries"].as_array().unwrap().clone();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in ["search", "summary", "export", "erase"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    let export_entry = entries.iter().find(|e| e["action"] == "export").unwrap();
    assert_eq!(export_entry["rows"], 25);
    let erase = entries.iter().find(|e| e["action"] == "erase").unwrap();
    assert_eq!(erase["rows"], 5);
    assert_eq!(erase["who"], claims("admin")["sub"]);
    let search = entries.iter().find(|e| e["action"] == "search").unwrap();
    assert!(
        !search["filter"].as_str().unwrap().contains("4930111111"),
        "no number in the log"
    );
    // The records API has no way to delete from the audit log.
    let a = api
        .send(Method::DELETE, "/v1/audit", Some(&admin), &[], None)
        .await;
    a.problem(405, "method_not_allowed");
    api.handle.shutdown();
}

/// Without a store the records routes authorize, then answer 503.
#[tokio::test]
async fn records_api_without_a_store_is_unavailable() {
    let api = Api::start(Fake::new(4, Duration::ZERO), test_config());
    api.get("/v1/cdrs", Some(&token("cdr:read")))
        .await
        .problem(503, "cdr_store_unavailable");
    api.get("/v1/cdrs?limit=0", Some(&token("cdr:read")))
        .await
        .problem(400, "invalid_filter");
    api.handle.shutdown();
}
