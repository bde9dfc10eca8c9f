//! The portal's HTTPS API end to end: the real `kolokol run` binary with
//! its API (TLS with the test certificate, tokens signed with the test
//! key), real SIP to the simulated carrier (`kolokol::demo::carrier`, in
//! this process), real media. The carrier records what it heard, so the
//! tests check prompts (length, not silence), the bridge (audio both
//! ways), DTMF outcomes, idempotency, and that a call refused by policy
//! never reaches the carrier. The OpenAPI document is exercised against
//! the running server by schemathesis, and webhooks must survive the
//! portal being down for a minute.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kolokol::demo::carrier::{Behaviour, CallLog, SimCarrier};
use kolokol::demo::client::Client;

mod harness;
use harness::{nanos, signal, xorshift, Harness, ProcId};

const IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `n` consecutive free ports (TCP and UDP) in 10000-19999.
fn pick_ports(n: u16) -> u16 {
    static TAKEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());
    let mut rng = nanos() ^ u64::from(std::process::id()) << 32 | 1;
    for _ in 0..2000 {
        let base = 10_000 + (xorshift(&mut rng) % 9_800) as u16;
        let mut taken = TAKEN.lock().unwrap();
        if taken.iter().any(|&(a, b)| base <= b && a <= base + n) {
            continue;
        }
        if (base..base + n)
            .all(|p| UdpSocket::bind((IP, p)).is_ok() && TcpListener::bind((IP, p)).is_ok())
        {
            taken.push((base, base + n));
            return base;
        }
    }
    panic!("no {n} free ports");
}

fn token(scope: &str, account: Option<&str>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut args = vec!["--scope".to_string(), scope.to_string()];
    if let Some(a) = account {
        args.push("--account".into());
        args.push(a.into());
    }
    kolokol::control::api::token_cli(&args, now).expect("token")
}

const ALL: &str = "calls:write calls:read notifications:write admin";

struct Gw {
    h: Harness,
    id: ProcId,
    api: SocketAddr,
    carrier: SimCarrier,
    client: Client,
}

/// Starts a carrier and the gateway with `extra` config lines (sections
/// appended after the base config).
fn gateway(label: &str, numbers: HashMap<String, Behaviour>, extra: &str) -> Gw {
    let carrier = SimCarrier::start(
        SocketAddr::new(IpAddr::V4(IP), 0),
        IpAddr::V4(IP),
        numbers,
        Behaviour::default(),
    )
    .expect("carrier");
    let mut h = Harness::new(format!("portal-{label}"));
    let p = pick_ports(4);
    let media = pick_ports(64);
    let (sip, ng, api) = (p, p + 1, p + 2);
    let cfg = format!(
        "# tests/portal_api.rs ({label})\n\
         [shards]\ncount = 2\ncpus = []\n\
         [media]\naddress = \"{IP}\"\nport_min = {media}\nport_max = {}\ncalls_max = 32\n\
         [ng]\nlisten = \"{IP}:{ng}\"\n\
         [sip]\nudp = [\"{IP}:{sip}\"]\ntcp = []\n\
         [api]\nlisten = \"{IP}:{api}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\njwks_file = \"{}\"\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{}\"\noptions_interval_s = 0\n\
         [[routes]]\nprefix = \"\"\nto = \"trunks\"\n\
         {extra}\n",
        media + 63,
        repo("config/tls/sip-test.crt").display(),
        repo("config/tls/sip-test.key").display(),
        repo("config/jwt/jwks.json").display(),
        carrier.addr(),
    );
    let path = h.dir.join("kolokol.toml");
    fs::write(&path, cfg).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_kolokol"));
    c.arg("run").arg("--config").arg(&path);
    let id = h.spawn("kolokol", c);
    let api = SocketAddr::new(IpAddr::V4(IP), api);
    let client = Client::https(api, &repo("config/tls/test-ca.crt"), &token(ALL, None)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        h.assert_alive(id);
        if client
            .request("GET", "/readyz", &[], None)
            .is_ok_and(|r| r.status == 200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the API did not get ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    Gw {
        h,
        id,
        api,
        carrier,
        client,
    }
}

impl Gw {
    fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        let r = self
            .client
            .request("POST", path, &headers, Some(&body))
            .expect("POST");
        (r.status, r.json())
    }

    fn get(&self, id: &str) -> serde_json::Value {
        self.client
            .request("GET", &format!("/v1/calls/{id}"), &[], None)
            .expect("GET")
            .json()
    }

    /// Polls the call until its state is one of `states`.
    fn wait(&self, id: &str, states: &[&str], limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.get(id);
            if states.iter().any(|s| v["state"] == *s) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "call {id} not in {states:?} within {limit:?}: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn calls_to(&self, number: &str) -> Vec<CallLog> {
        self.carrier
            .calls()
            .into_iter()
            .filter(|c| c.number == number)
            .collect()
    }

    /// The carrier's call to `number`, once it has ended.
    fn ended_call(&self, number: &str) -> CallLog {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self
                .calls_to(number)
                .into_iter()
                .find(|c| c.ended.is_some())
            {
                return c;
            }
            assert!(Instant::now() < deadline, "no ended call to {number}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let st = self.h.terminate(self.id, Duration::from_secs(30));
        assert!(st.success(), "kolokol exited with {st}");
    }
}

fn notification(account: &str, number: &str, confirm: bool) -> serde_json::Value {
    serde_json::json!({
        "account": account, "number": number, "language": "en",
        "digits": "4711", "repeat": 1, "require_confirmation": confirm,
    })
}

/// Click-to-call through the API: the citizen is called, hears the prompt,
/// the support line is called, the two are bridged and each hears the
/// other; DELETE ends it and the call completes as bridged.
#[test]
fn click_to_call_is_bridged_with_media_both_ways_and_hung_up_by_delete() {
    let gw = gateway(
        "c2c",
        HashMap::new(),
        "[flows]\nsupport_line = \"+74950001122\"\n",
    );
    let (st, v) = gw.post(
        "/v1/calls",
        None,
        serde_json::json!({"account": "t", "citizen_number": "+79001110000", "language": "ru"}),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    gw.wait(&id, &["bridged"], Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let d = gw
        .client
        .request("DELETE", &format!("/v1/calls/{id}"), &[], None)
        .unwrap();
    assert_eq!(d.status, 200);
    let v = gw.wait(&id, &["completed"], Duration::from_secs(10));
    assert_eq!(v["result"], "completed", "{v}");
    let citizen = gw.ended_call("+79001110000");
    let support = gw.ended_call("+74950001122");
    // The support line hears only the citizen (through the bridge); the
    // citizen hears the prompt and then the support line.
    assert!(
        support.rtp_packets >= 70 && support.mean_level > 1000.0,
        "support heard {} packets (level {:.0}) through the bridge",
        support.rtp_packets,
        support.mean_level
    );
    assert!(
        citizen.rtp_packets >= support.rtp_packets && citizen.mean_level > 1000.0,
        "citizen heard {} packets (level {:.0})",
        citizen.rtp_packets,
        citizen.mean_level
    );
    gw.stop();
}

/// Notifications: DTMF 1 gives confirmed, 2 rejected, a phone that never
/// answers no-answer; the citizen heard seconds of real prompt audio.
#[test]
fn notification_outcomes_through_the_api() {
    let mut numbers = HashMap::new();
    for (n, k) in [("+79002220001", '1'), ("+79002220002", '2')] {
        numbers.insert(
            n.to_string(),
            Behaviour {
                dtmf: Some((k, Duration::from_millis(7500))),
                send_audio: false,
                ..Behaviour::default()
            },
        );
    }
    numbers.insert(
        "+79002220003".into(),
        Behaviour {
            answer: None,
            ..Behaviour::default()
        },
    );
    let gw = gateway("notify", numbers, "[flows]\nmax_duration_s = 12\n");
    let mut ids = Vec::new();
    for n in ["+79002220001", "+79002220002", "+79002220003"] {
        let (st, v) = gw.post("/v1/notifications", None, notification("t", n, true));
        assert_eq!(st, 201, "{v}");
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let terminal = ["completed", "failed", "no-answer", "busy"];
    let v1 = gw.wait(&ids[0], &terminal, Duration::from_secs(30));
    let v2 = gw.wait(&ids[1], &terminal, Duration::from_secs(30));
    let v3 = gw.wait(&ids[2], &terminal, Duration::from_secs(30));
    assert_eq!(
        (&v1["state"], &v1["result"], &v1["dtmf"]),
        (&"completed".into(), &"confirmed".into(), &"1".into()),
        "{v1}"
    );
    assert_eq!(
        (&v2["state"], &v2["result"]),
        (&"completed".into(), &"rejected".into()),
        "{v2}"
    );
    assert_eq!(v3["state"], "no-answer", "{v3}");
    let heard = gw.ended_call("+79002220001");
    assert!(
        heard.audio_bytes >= 5 * 8000 && heard.mean_level > 300.0,
        "the citizen heard {:.1} s at level {:.0}",
        heard.audio_bytes as f64 / 8000.0,
        heard.mean_level
    );
    gw.stop();
}

/// A retried POST with the same Idempotency-Key returns the first call and
/// places no second one.
#[test]
fn retried_post_with_the_same_idempotency_key_returns_the_first_call() {
    let gw = gateway("idem", HashMap::new(), "");
    let body = notification("t", "+79003330000", false);
    let (s1, v1) = gw.post("/v1/notifications", Some("retry-1"), body.clone());
    let (s2, v2) = gw.post("/v1/notifications", Some("retry-1"), body);
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(v1["id"], v2["id"], "a retry made a second call");
    gw.wait(
        v1["id"].as_str().unwrap(),
        &["completed"],
        Duration::from_secs(30),
    );
    assert_eq!(gw.calls_to("+79003330000").len(), 1, "calls placed");
    // Structured logs (F-O4): JSON lines with the number masked; the full
    // number appears nowhere in the log.
    let log = fs::read_to_string(gw.h.dir.join("kolokol.err")).unwrap_or_default();
    let states: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "call state")
        .collect();
    assert!(
        states
            .iter()
            .any(|v| v["state"] == "completed" && v["number"] == "+7*******000"),
        "no masked JSON state line: {states:?}"
    );
    assert!(
        !log.contains("79003330000"),
        "the number is in the log unmasked"
    );
    gw.stop();
}

/// Every policy rule trips with its code and HTTP status, and the refused
/// call never reaches the carrier.
#[test]
fn policy_rules_refuse_with_their_codes_and_dial_nothing() {
    // Do-not-disturb for +7812 from an hour ago to an hour ahead (UTC).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hm = |s: u64| format!("{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60);
    let policy = format!(
        "[policy]\nallowed_prefixes = [\"+7\"]\ndenied_prefixes = [\"+7900999\"]\n\
         blocked_numbers = [\"+79001112233\"]\naccount_day_calls_max = 3\n\
         number_day_calls_max = 1\ncps_max = 1000\nnumber_burst_calls_max = 0\n\
         account_burst_calls_max = 0\n\
         [[policy.dnd]]\nprefix = \"+7812\"\nutc_offset_minutes = 0\nstart = \"{}\"\nend = \"{}\"\n",
        hm(now - 3600),
        hm(now + 3600)
    );
    let gw = gateway("policy", HashMap::new(), &policy);
    let cases = [
        ("t", "12345", 422, "invalid_number"),
        ("t", "+4930123456", 403, "destination_not_allowed"),
        ("t", "+79009990000", 403, "destination_not_allowed"),
        ("t", "+79001112233", 403, "blocklisted"),
        ("t", "+78120000000", 429, "do_not_disturb"),
    ];
    for (acct, number, status, code) in cases {
        let (st, v) = gw.post("/v1/notifications", None, notification(acct, number, false));
        assert_eq!(
            (st, v["code"].as_str()),
            (status, Some(code)),
            "{number}: {v}"
        );
    }
    // Per-number daily limit: the first call goes, the second does not.
    let (st, _) = gw.post(
        "/v1/notifications",
        None,
        notification("n", "+79005550000", false),
    );
    assert_eq!(st, 201);
    let (st, v) = gw.post(
        "/v1/notifications",
        None,
        notification("n", "+79005550000", false),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (429, Some("number_daily_limit")),
        "{v}"
    );
    // Per-account daily limit: three calls, the fourth refused.
    for i in 0..3 {
        let (st, v) = gw.post(
            "/v1/notifications",
            None,
            notification("acc", &format!("+7900666000{i}"), false),
        );
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = gw.post(
        "/v1/notifications",
        None,
        notification("acc", "+79006660009", false),
    );
    assert_eq!(
        (st, v["code"].as_str()),
        (429, Some("account_daily_limit")),
        "{v}"
    );
    assert!(v["status"] == 429);
    // Let the placed calls reach the carrier, then check what it saw.
    std::thread::sleep(Duration::from_secs(2));
    for n in [
        "+4930123456",
        "+79009990000",
        "+79001112233",
        "+78120000000",
        "+79006660009",
    ] {
        assert!(
            gw.calls_to(n).is_empty(),
            "a refused call to {n} was dialled"
        );
    }
    assert_eq!(
        gw.calls_to("+79005550000").len(),
        1,
        "the over-limit call was dialled"
    );
    gw.stop();
}

/// The rate rules: global CPS, and the automatic burst blocks of one
/// number and of one account, reported as events.
#[test]
fn cps_and_burst_rules_refuse_and_report_auto_blocks() {
    let policy = "[policy]\ncps_max = 2\nnumber_day_calls_max = 100\naccount_day_calls_max = 1000\n\
                  number_burst_calls_max = 2\nnumber_burst_window_s = 60\nnumber_burst_block_s = 600\n\
                  account_burst_calls_max = 4\naccount_burst_window_s = 60\naccount_burst_block_s = 600\n";
    let gw = gateway("rates", HashMap::new(), policy);
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let sse = gw.client.clone();
    std::thread::spawn(move || {
        let _ = sse.events("/v1/events", Duration::from_secs(60), |v| {
            ev.lock().unwrap().push(v);
            true
        });
    });
    std::thread::sleep(Duration::from_millis(300));
    // CPS: a burst of requests at once; beyond the bucket, 429.
    let mut cps_refused = Vec::new();
    for i in 0..6 {
        let n = format!("+7900777000{i}");
        let (st, v) = gw.post(
            "/v1/notifications",
            None,
            notification(&format!("cps{i}"), &n, false),
        );
        if st == 429 {
            assert_eq!(v["code"], "global_cps_limit", "{v}");
            cps_refused.push(n);
        }
    }
    assert!(
        !cps_refused.is_empty(),
        "6 requests at once passed a 2/s limit"
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Number burst: a third call to one number within the window.
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        last = gw.post(
            "/v1/notifications",
            None,
            notification("b1", "+79008880000", false),
        );
    }
    assert_eq!(
        (last.0, last.1["code"].as_str()),
        (429, Some("burst_blocked_number")),
        "{}",
        last.1
    );
    // Account burst: a fifth call from one account within the window.
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(600));
        last = gw.post(
            "/v1/notifications",
            None,
            notification("b2", &format!("+7900888100{i}"), false),
        );
    }
    assert_eq!(
        (last.0, last.1["code"].as_str()),
        (429, Some("burst_blocked_account")),
        "{}",
        last.1
    );
    std::thread::sleep(Duration::from_secs(2));
    for n in cps_refused
        .iter()
        .map(String::as_str)
        .chain(["+79008881004"])
    {
        assert!(
            gw.calls_to(n).is_empty(),
            "a refused call to {n} was dialled"
        );
    }
    assert_eq!(
        gw.calls_to("+79008880000").len(),
        2,
        "calls to the burst number"
    );
    let ev = events.lock().unwrap();
    let blocks: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["state"] == "rejected-by-policy" && e["detail"]["auto_blocked"].is_string())
        .collect();
    let kinds: Vec<&str> = blocks
        .iter()
        .filter_map(|e| e["detail"]["auto_blocked"].as_str())
        .collect();
    assert!(
        kinds.contains(&"number") && kinds.contains(&"account"),
        "auto-block events: {blocks:?}"
    );
    drop(ev);
    gw.stop();
}

/// The portal is down for a minute (nothing listens); events queue and are
/// retried, then all arrive in order with valid signatures.
#[test]
fn webhooks_survive_the_portal_being_down_for_a_minute() {
    let port = pick_ports(1);
    let secret = "portal-test-secret-0123456789";
    let extra = format!(
        "[webhooks]\nurl = \"http://{IP}:{port}/hooks\"\nsecret = \"{secret}\"\n\
         retry_min_ms = 500\nretry_max_ms = 5000\ntimeout_ms = 2000\n"
    );
    let gw = gateway("webhook", HashMap::new(), &extra);
    let (st, v) = gw.post(
        "/v1/notifications",
        None,
        notification("t", "+79004440000", false),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    gw.wait(&id, &["completed"], Duration::from_secs(30));
    // The portal comes up a minute after the call started.
    let up_at = Instant::now() + Duration::from_secs(60);
    std::thread::sleep(up_at.saturating_duration_since(Instant::now()));
    let listener = TcpListener::bind((IP, port)).expect("portal port");
    listener.set_nonblocking(false).unwrap();
    let mut got: Vec<(String, serde_json::Value)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = tx.send(s);
        }
    });
    while Instant::now() < deadline && !got.iter().any(|(_, e)| e["state"] == "completed") {
        let Ok(mut s) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 4096];
        // Headers, then Content-Length bytes.
        let (head, body) = loop {
            let n = s.read(&mut b).unwrap_or(0);
            if n == 0 {
                break (String::new(), Vec::new());
            }
            buf.extend_from_slice(&b[..n]);
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..p]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < p + 4 + len {
                    let n = s.read(&mut b).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&b[..n]);
                }
                break (head, buf[p + 4..].to_vec());
            }
        };
        let hdr = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let ts = hdr("X-Kolokol-Timestamp");
        let sig = hdr("X-Kolokol-Signature");
        assert!(
            kolokol::control::api::verify_signature(secret.as_bytes(), &ts, &body, &sig),
            "bad webhook signature {sig:?} on {}",
            String::from_utf8_lossy(&body)
        );
        let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        let ev: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        got.push((hdr("X-Kolokol-Event-Id"), ev));
    }
    let states: Vec<&str> = got
        .iter()
        .filter(|(_, e)| e["call_id"] == id.as_str())
        .filter_map(|(_, e)| e["state"].as_str())
        .collect();
    assert_eq!(
        states.first().copied(),
        Some("queued"),
        "events after the outage: {states:?}"
    );
    assert_eq!(states.last().copied(), Some("completed"), "{states:?}");
    for s in ["dialing", "ringing", "answered"] {
        assert!(states.contains(&s), "{s} missing from {states:?}");
    }
    gw.stop();
}

/// The OpenAPI document against the running gateway (real engine, real
/// SIP): schemathesis generates requests from it; no 5xx, every response
/// as documented.
#[test]
fn openapi_document_holds_against_the_running_gateway() {
    let gw = gateway(
        "schemathesis",
        HashMap::new(),
        "[flows]\nsupport_line = \"+74950001122\"\n",
    );
    let out = Command::new("bash")
        .arg(repo("scripts/schemathesis.sh"))
        .arg(format!("https://{}", gw.api))
        // No admin scope: the script leaves the drain endpoint alone.
        .arg(token("calls:write calls:read notifications:write", None))
        .output()
        .expect("run scripts/schemathesis.sh");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{}",
        text.lines()
            .rev()
            .take(60)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    gw.stop();
}

/// SIGHUP reloads the policy from the file: a number blocked in the new
/// file is refused (nothing dialled) without a restart, and the gateway
/// says so in its log.
#[test]
fn sighup_reloads_the_policy_without_a_restart() {
    let gw = gateway("reload", HashMap::new(), "");
    let (st, v) = gw.post(
        "/v1/notifications",
        None,
        notification("t", "+79009870000", false),
    );
    assert_eq!(st, 201, "{v}");
    gw.wait(
        v["id"].as_str().unwrap(),
        &["completed"],
        Duration::from_secs(30),
    );
    let path = gw.h.dir.join("kolokol.toml");
    let mut cfg = fs::read_to_string(&path).unwrap();
    cfg.push_str("[policy]\nblocked_numbers = [\"+79009870000\"]\n");
    fs::write(&path, cfg).unwrap();
    signal(&gw.h.pid(gw.id).to_string(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = fs::read_to_string(gw.h.dir.join("kolokol.err")).unwrap_or_default();
        if log.contains("policy and trunks reloaded") {
            break;
        }
        assert!(Instant::now() < deadline, "no reload in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, v) = gw.post(
        "/v1/notifications",
        None,
        notification("t", "+79009870000", false),
    );
    assert_eq!((st, v["code"].as_str()), (403, Some("blocklisted")), "{v}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        gw.calls_to("+79009870000").len(),
        1,
        "the blocked call was dialled"
    );
    gw.stop();
}
