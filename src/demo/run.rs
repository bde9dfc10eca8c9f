//! `kolokol demo`: the gateway on embedded defaults (free loopback ports),
//! the simulated carrier as its trunk, and both portal flows placed through
//! the real HTTPS API with a test token, their events printed as they come.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::carrier::{Behaviour, SimCarrier};
use super::client::Client;
use crate::config::Config;
use crate::gateway::{ApiStart, Gateway};

/// The numbers the demo calls.
const CITIZEN: &str = "+79001234567";
const SUPPORT: &str = "+74950000000";
const NOTIFIED: &str = "+79007654321";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A free UDP port on loopback.
fn free_udp() -> Result<u16, String> {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// A free block of `n` UDP ports on loopback, above 20000.
fn free_block(n: u16) -> Result<u16, String> {
    for base in (20_000u16..60_000)
        .step_by(usize::from(n))
        .skip((std::process::id() as usize) % 100)
    {
        if (base..base + n).all(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).is_ok()) {
            return Ok(base);
        }
    }
    Err("no free media ports on 127.0.0.1".into())
}

/// The demo's configuration: embedded defaults plus the carrier trunk and
/// the API with the repository's test certificate and keys.
pub fn demo_config(carrier: SocketAddr) -> Result<Config, String> {
    let sip = free_udp()?;
    let media = free_block(200)?;
    let text = format!(
        "[log]\nlevel = \"warn\"\nformat = \"text\"\n\
         [shards]\ncount = 1\ncpus = []\n\
         [media]\naddress = \"127.0.0.1\"\nport_min = {media}\nport_max = {}\ncalls_max = 64\n\
         [ng]\nlisten = \"127.0.0.1:0\"\n\
         [sip]\nudp = [\"127.0.0.1:{sip}\"]\ntcp = []\n\
         [api]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\njwks_file = \"{}\"\n\
         [flows]\nsupport_line = \"{SUPPORT}\"\n\
         [cdr]\npath = \"{}\"\nkeys = [{{ id = \"demo\", key_hex = \"{}\" }}]\n\
         active_key = \"demo\"\nsearch_key_hex = \"{}\"\n\
         [[trunks]]\nname = \"sim-carrier\"\naddress = \"{carrier}\"\noptions_interval_s = 0\n\
         [[routes]]\nprefix = \"\"\nto = \"trunks\"\n",
        media + 199,
        repo_file("config/tls/sip-test.crt").display(),
        repo_file("config/tls/sip-test.key").display(),
        repo_file("config/jwt/jwks.json").display(),
        std::env::temp_dir()
            .join(format!("kolokol-demo-cdr-{}.sqlite", std::process::id()))
            .display(),
        "11".repeat(32),
        "22".repeat(32),
    );
    Config::parse(&text).map_err(|e| e.to_string())
}

/// Waits for an event of call `id` in one of `states`; prints every event.
fn wait_state(
    rx: &mpsc::Receiver<serde_json::Value>,
    id: &str,
    states: &[&str],
    limit: Duration,
) -> Result<serde_json::Value, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = rx
            .recv_timeout(left)
            .map_err(|_| format!("no {states:?} for {id} within {limit:?}"))?;
        if ev["call_id"] == id {
            let st = ev["state"].as_str().unwrap_or("");
            if states.contains(&st) {
                return Ok(ev);
            }
        }
    }
}

/// Runs the demo; Ok(true) when both flows succeeded.
pub fn run_demo() -> Result<bool, String> {
    let mut numbers = HashMap::new();
    numbers.insert(
        NOTIFIED.to_string(),
        Behaviour {
            // Press 1 once the code has been read.
            dtmf: Some(('1', Duration::from_millis(8500))),
            send_audio: false,
            ..Behaviour::default()
        },
    );
    let carrier = SimCarrier::start(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        numbers,
        Behaviour::default(),
    )
    .map_err(|e| format!("simulated carrier: {e}"))?;
    println!("demo: simulated carrier (SIP UAS) on {}", carrier.addr());
    let cfg = demo_config(carrier.addr())?;
    crate::log::init(&cfg.log);
    let gw = Gateway::start(&cfg, ApiStart::Required)?;
    let api = gw.api_addr().ok_or("the API did not start")?;
    println!(
        "demo: gateway up: SIP {:?}, API https://{api}/v1",
        cfg.sip.udp
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let args: Vec<String> = [
        "--scope",
        "calls:write calls:read notifications:write cdr:read admin",
        "--sub",
        "demo-portal",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let token = crate::control::api::token_cli(&args, now)?;
    let client = Client::https(api, &repo_file("config/tls/test-ca.crt"), &token)
        .map_err(|e| format!("client: {e}"))?;

    // Events, printed as they arrive.
    let (tx, rx) = mpsc::channel();
    let sse = client.clone();
    std::thread::spawn(move || {
        let _ = sse.events("/v1/events", Duration::from_secs(120), |ev| {
            println!(
                "  event {:>3}  {:<22} {:<12} {}",
                ev["id"],
                ev["call_id"].as_str().unwrap_or(""),
                ev["state"].as_str().unwrap_or(""),
                ev["detail"]
            );
            tx.send(ev).is_ok()
        });
    });
    std::thread::sleep(Duration::from_millis(300));

    // 1. Click-to-call.
    println!("\ndemo: 1. click-to-call: call {CITIZEN}, play a prompt, bridge to {SUPPORT}");
    let r = client
        .request(
            "POST",
            "/v1/calls",
            &[("Idempotency-Key", "demo-c2c-1")],
            Some(&serde_json::json!({
                "account": "demo", "citizen_number": CITIZEN, "language": "ru",
            })),
        )
        .map_err(|e| format!("POST /v1/calls: {e}"))?;
    println!(
        "  POST /v1/calls -> {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let c2c = r.json()["id"].as_str().unwrap_or_default().to_string();
    let mut ok = r.status == 201 || r.status == 200;
    let bridged = wait_state(
        &rx,
        &c2c,
        &["bridged", "failed", "no-answer", "busy", "completed"],
        Duration::from_secs(30),
    )?;
    ok &= bridged["state"] == "bridged";
    std::thread::sleep(Duration::from_secs(3));
    let d = client
        .request("DELETE", &format!("/v1/calls/{c2c}"), &[], None)
        .map_err(|e| format!("DELETE: {e}"))?;
    println!("  DELETE /v1/calls/{c2c} -> {}", d.status);
    let end = wait_state(&rx, &c2c, &["completed", "failed"], Duration::from_secs(15))?;
    ok &= end["state"] == "completed";

    // 2. One-time code with confirmation.
    println!("\ndemo: 2. notification: read code 4711 to {NOTIFIED}, ask 1 = confirm / 2 = reject");
    let r = client
        .request(
            "POST",
            "/v1/notifications",
            &[("Idempotency-Key", "demo-otp-1")],
            Some(&serde_json::json!({
                "account": "demo", "number": NOTIFIED, "language": "en",
                "digits": "4711", "repeat": 1, "require_confirmation": true,
            })),
        )
        .map_err(|e| format!("POST /v1/notifications: {e}"))?;
    println!(
        "  POST /v1/notifications -> {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    let otp = r.json()["id"].as_str().unwrap_or_default().to_string();
    ok &= r.status == 201 || r.status == 200;
    let fin = wait_state(
        &rx,
        &otp,
        &["completed", "failed", "no-answer", "busy"],
        Duration::from_secs(60),
    )?;
    let view = client
        .request("GET", &format!("/v1/calls/{otp}"), &[], None)
        .map_err(|e| format!("GET: {e}"))?
        .json();
    println!(
        "  GET /v1/calls/{otp} -> result {} dtmf {}",
        view["result"], view["dtmf"]
    );
    ok &= fin["state"] == "completed" && view["result"] == "confirmed";

    let cdrs = client
        .request("GET", "/v1/cdrs?account=demo&limit=10", &[], None)
        .map_err(|e| format!("GET /v1/cdrs: {e}"))?;
    let recs = cdrs.json()["records"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    println!("\ndemo: call records stored (GET /v1/cdrs, numbers encrypted at rest):");
    for r in &recs {
        println!(
            "  {:<26} {:<14} {:<14} -> {:<14} status {:<10} billable {} s",
            r["call_id"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["caller"].as_str().unwrap_or(""),
            r["callee"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            r["billable_s"]
        );
    }
    ok &= recs.len() >= 2;
    println!("\ndemo: what the simulated carrier heard:");
    for c in carrier.calls() {
        println!(
            "  {:<14} answered {:<5} heard {:>5.1} s of audio (mean level {:>6.0}), pressed {:?}",
            c.number,
            c.answered,
            c.audio_bytes as f64 / 8000.0,
            c.mean_level,
            c.dtmf_sent
        );
    }
    gw.stop();
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("kolokol-demo-cdr-{}.sqlite", std::process::id())),
    );
    println!(
        "\ndemo: {}",
        if ok {
            "both flows succeeded (click-to-call bridged, code confirmed)"
        } else {
            "FAILED"
        }
    );
    Ok(ok)
}
