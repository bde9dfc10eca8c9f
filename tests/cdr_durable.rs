//! Nothing lost (issue 6, F-C2, N-7): calls placed through the portal API
//! under load, the gateway killed with SIGKILL mid-run, restarted on the
//! same store: every call the portal was told had completed (over the
//! event stream, before the kill) has its record, and the database is not
//! corrupt. Also: the file on disk holds no phone number in clear, and a
//! search by number finds the records.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kolokol::demo::carrier::{Behaviour, SimCarrier};
use kolokol::demo::client::Client;

mod harness;
use harness::{nanos, signal, xorshift, Harness, ProcId};

const IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
const CALLS: usize = 60;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn pick_ports(n: u16) -> u16 {
    let mut rng = nanos() ^ u64::from(std::process::id()) << 32 | 1;
    for _ in 0..2000 {
        let base = 10_000 + (xorshift(&mut rng) % 9_800) as u16;
        if (base..base + n)
            .all(|p| UdpSocket::bind((IP, p)).is_ok() && TcpListener::bind((IP, p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free ports");
}

fn token() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let args: Vec<String> = [
        "--scope",
        "calls:write calls:read notifications:write cdr:read",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    kolokol::control::api::token_cli(&args, now).unwrap()
}

fn start(h: &mut Harness, name: &'static str, cfg: &Path, client: &Client) -> ProcId {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kolokol"));
    c.arg("run").arg("--config").arg(cfg);
    let id = h.spawn(name, c);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        h.assert_alive(id);
        if client
            .request("GET", "/readyz", &[], None)
            .is_ok_and(|r| r.status == 200)
        {
            return id;
        }
        assert!(Instant::now() < deadline, "{name}: API not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_mid_run_loses_no_completed_record() {
    let carrier = SimCarrier::start(
        SocketAddr::new(IpAddr::V4(IP), 0),
        IpAddr::V4(IP),
        HashMap::new(),
        Behaviour {
            ring: Duration::from_millis(100),
            send_audio: false,
            ..Behaviour::default()
        },
    )
    .unwrap();
    let mut h = Harness::new("cdr-sigkill");
    let p = pick_ports(4);
    let media = pick_ports(128);
    let db = h.dir.join("cdr.sqlite");
    let cfg = format!(
        "[shards]\ncount = 2\ncpus = []\n\
         [media]\naddress = \"{IP}\"\nport_min = {media}\nport_max = {}\ncalls_max = 128\n\
         [ng]\nlisten = \"{IP}:{}\"\n\
         [sip]\nudp = [\"{IP}:{p}\"]\ntcp = []\n\
         [api]\nlisten = \"{IP}:{}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\njwks_file = \"{}\"\n\
         [policy]\ncps_max = 1000\nnumber_burst_calls_max = 0\naccount_burst_calls_max = 0\n\
         [cdr]\npath = \"{}\"\nkeys = [{{ id = \"k1\", key_hex = \"{}\" }}]\nactive_key = \"k1\"\n\
         search_key_hex = \"{}\"\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{}\"\noptions_interval_s = 0\n\
         [[routes]]\nprefix = \"\"\nto = \"trunks\"\n",
        media + 127,
        p + 1,
        p + 2,
        repo("config/tls/sip-test.crt").display(),
        repo("config/tls/sip-test.key").display(),
        repo("config/jwt/jwks.json").display(),
        db.display(),
        "ab".repeat(32),
        "cd".repeat(32),
        carrier.addr(),
    );
    let path = h.dir.join("kolokol.toml");
    fs::write(&path, cfg).unwrap();
    let api = SocketAddr::new(IpAddr::V4(IP), p + 2);
    let client = Client::https(api, &repo("config/tls/test-ca.crt"), &token()).unwrap();
    let gw = start(&mut h, "kolokol", &path, &client);

    // What the portal is told: completed calls over the event stream.
    let completed: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let done = completed.clone();
    let sse = client.clone();
    std::thread::spawn(move || {
        let _ = sse.events("/v1/events", Duration::from_secs(60), |ev| {
            if ev["state"] == "completed" {
                if let Some(id) = ev["call_id"].as_str() {
                    done.lock().unwrap().insert(id.to_string());
                }
            }
            true
        });
    });
    std::thread::sleep(Duration::from_millis(300));
    // Short notifications (one digit, then goodbye), 20 a second; the
    // gateway is killed while some are still up.
    let started = Instant::now();
    let mut placed = Vec::new();
    let mut killed_at = None;
    for i in 0..CALLS {
        let body = serde_json::json!({
            "account": "durable", "number": format!("+7901{i:07}"), "language": "en",
            "prompt": "digit-1", "repeat": 1, "require_confirmation": false,
        });
        if let Ok(r) = client.request("POST", "/v1/notifications", &[], Some(&body)) {
            if r.status == 201 {
                placed.push(r.json()["id"].as_str().unwrap_or_default().to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        if killed_at.is_none() && started.elapsed() >= Duration::from_millis(2500) {
            // Mid-run: the first calls have completed, later ones are up.
            if !completed.lock().unwrap().is_empty() {
                signal(&h.pid(gw).to_string(), "KILL");
                killed_at = Some(Instant::now());
                break;
            }
        }
    }
    let told: BTreeSet<String> = completed.lock().unwrap().clone();
    assert!(killed_at.is_some(), "no call completed before the kill");
    let st = h.wait(gw, Duration::from_secs(10));
    assert!(!st.success(), "the gateway was not killed ({st})");
    assert!(
        told.len() >= 3 && told.len() < placed.len(),
        "the kill was not mid-run: {} completed of {} placed",
        told.len(),
        placed.len()
    );

    // Restart on the same store; every completed call has its record.
    let gw2 = start(&mut h, "kolokol-restarted", &path, &client);
    let mut found = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/cdrs?account=durable&limit=1000&cursor={c}"),
            None => "/v1/cdrs?account=durable&limit=1000".to_string(),
        };
        let r = client.request("GET", &q, &[], None).unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        for rec in v["records"].as_array().cloned().unwrap_or_default() {
            if let Some(id) = rec["call_id"].as_str() {
                found.insert(id.to_string());
            }
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let lost: Vec<&String> = told.difference(&found).collect();
    assert!(
        lost.is_empty(),
        "{} calls reported completed have no record after SIGKILL: {lost:?}",
        lost.len()
    );
    // Search by number finds a record (through the HMAC index).
    let num = "+79010000000";
    let r = client
        .request(
            "GET",
            &format!("/v1/cdrs?number=%2B{}", &num[1..]),
            &[],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let by_number = r.json()["records"].as_array().map_or(0, Vec::len);
    if told.contains(&placed[0]) {
        assert_eq!(
            by_number,
            1,
            "search by number: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let st = h.terminate(gw2, Duration::from_secs(30));
    assert!(st.success());
    // No corruption, and no number in clear anywhere in the files.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    for f in fs::read_dir(&h.dir).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        if !name.starts_with("cdr.sqlite") {
            continue;
        }
        let bytes = fs::read(f.path()).unwrap();
        for i in 0..CALLS {
            let n = format!("7901{i:07}");
            assert!(
                !bytes.windows(n.len()).any(|w| w == n.as_bytes()),
                "{name} holds the number {n} in clear"
            );
        }
    }
}
