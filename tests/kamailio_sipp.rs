//! A real client: Kamailio's `rtpengine` module drives Kolokol, SIPp places
//! calls through Kamailio with G.711 RTP.
//!
//! ```text
//!   SIPp UAC ──SIP──> Kamailio ──SIP──> SIPp UAS
//!   127.0.0.2 media     │ ng (bencode/UDP)   127.0.0.3 media, -rtp_echo
//!        │              v                         │
//!        └──RTP──> relay (Kolokol) 127.0.0.1 <──RTP┘
//! ```
//!
//! The test starts the relay, then Kamailio (`tests/kamailio/kamailio.cfg`:
//! `rtpengine_offer()` on the INVITE, `rtpengine_answer()` on the 200,
//! `rtpengine_delete()` on BYE/CANCEL, record-routing), then a SIPp UAS
//! (`tests/sipp/uas.xml`, echoing RTP) and a SIPp UAC (`tests/sipp/uac.xml`,
//! honouring Record-Route, streaming 3 s of G.711 µ-law RTP per call with
//! SIPp's `rtp_stream`, which needs no raw socket, so no root). Then it
//! checks that
//!
//! - the SDP that reached the callee, and the SDP that came back to the
//!   caller, carry the relay's address and a port inside its media range,
//!   never the other party's own address and port;
//! - media went through the relay both ways: the ng `query` of each live
//!   call shows packets received from the caller's leg, and packets received
//!   from the callee's leg, which only sends what it got (it echoes);
//! - every SIPp call succeeded, and the BYEs deleted the calls in the relay.
//!
//! Kamailio and SIPp must be installed (Debian `kamailio`,
//! `sip-tester`); the test never installs anything
//! and fails with a clear message when they are missing.
//!
//! Environment (all optional):
//! - `KOLOKOL_IT_RELAY=rtpengine` runs the same scenario against a real
//!   `rtpengine` (userspace, `table = -1`) instead of Kolokol, to check the
//!   harness itself and compare replies;
//! - `KOLOKOL_IT_SIP_BASE=N` uses UDP ports N..N+11 for SIP, ng and the
//!   SIPp media sockets, `KOLOKOL_IT_MEDIA_MIN=M` puts the relay's media
//!   range at M..M+199 (otherwise free ports are picked in 10000-19999);
//! - `KOLOKOL_IT_KEEP_LOGS=1` keeps the log directory after a pass (it is
//!   always kept, and printed, after a failure).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod harness;
use harness::{find_tool, nanos, sipp_final_stats, wait_udp_bound, xorshift, Harness, ProcId};

use kolokol::control::bencode::{self, Value};

/// Calls SIPp places (one per second, all may overlap).
const CALLS: u32 = 3;
/// How long the caller holds each call while the audio plays (ms).
const HOLD_MS: u32 = 4_000;
/// RTP packets the caller sends per call (160-byte PCMU payloads, 20 ms
/// apart: 3 s of audio).
const AUDIO_PACKETS: usize = 150;
/// Fewest packets the relay must have received on each leg of each call.
/// The caller sends [`AUDIO_PACKETS`]; the callee echoes what reached it.
/// The counters are sampled every [`POLL`] while the call is up, so the last
/// packets before the BYE are missed; 50 leaves room for that, while a relay
/// that forwards nothing (or only a few packets before losing the call)
/// stays far below.
const MIN_PACKETS: i64 = 50;
/// Relay media range width.
const MEDIA_SPAN: u16 = 200;
/// How often the ng counters are sampled during the calls.
const POLL: Duration = Duration::from_millis(200);

const SIP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const UAC_MEDIA_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const UAS_MEDIA_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[test]
fn kamailio_sipp_calls_relay_media_through_kolokol() {
    let relay_kind = match std::env::var("KOLOKOL_IT_RELAY").as_deref() {
        Ok("rtpengine") => RelayKind::Rtpengine,
        Ok("kolokol") | Ok("") | Err(_) => RelayKind::Kolokol,
        Ok(other) => panic!("KOLOKOL_IT_RELAY={other:?}: expected `kolokol` or `rtpengine`"),
    };

    // Tools first: a missing package is the most likely failure on a fresh
    // machine, and it deserves a message that says so.
    let kamailio = find_tool(
        "kamailio",
        "Debian package `kamailio` (it ships the rtpengine module)",
    );
    let sipp = find_tool("sipp", "Debian package `sip-tester`");
    let relay_bin = match relay_kind {
        RelayKind::Kolokol => PathBuf::from(env!("CARGO_BIN_EXE_kolokol")),
        RelayKind::Rtpengine => find_tool("rtpengine", "Debian package `rtpengine-daemon`"),
    };

    let mut h = Harness::new("kamailio-sipp");
    let dir = h.dir.clone();
    eprintln!("kamailio_sipp: logs and files in {}", dir.display());

    let ports = Ports::pick();
    eprintln!("kamailio_sipp: {ports:?}, relay {relay_kind:?}");
    let nonce = format!("{}{}", std::process::id(), nanos() % 1_000_000);

    // ---- the relay -------------------------------------------------------
    let relay_cfg = dir.join("relay.conf");
    let relay_cmd = match relay_kind {
        RelayKind::Kolokol => {
            fs::write(&relay_cfg, kolokol_config(&ports)).unwrap();
            let mut c = Command::new(&relay_bin);
            c.arg("run").arg("--config").arg(&relay_cfg);
            c
        }
        RelayKind::Rtpengine => {
            fs::write(&relay_cfg, rtpengine_config(&ports)).unwrap();
            let mut c = Command::new(&relay_bin);
            c.arg(format!("--config-file={}", relay_cfg.display()));
            c
        }
    };
    let relay = h.spawn("relay", relay_cmd);
    let ng = Ng::new(ports.ng);
    ng.wait_pong(&mut h, relay, Duration::from_secs(15));

    // ---- Kamailio --------------------------------------------------------
    let template = fs::read_to_string(fixture("kamailio/kamailio.cfg")).unwrap();
    let kam_cfg = dir.join("kamailio.cfg");
    fs::write(
        &kam_cfg,
        template
            .replace("@@SIP_PORT@@", &ports.kamailio.to_string())
            .replace("@@NG_PORT@@", &ports.ng.to_string()),
    )
    .unwrap();
    let check = Command::new(&kamailio)
        .arg("-c")
        .arg("-f")
        .arg(&kam_cfg)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", kamailio.display()));
    if !check.status.success() {
        panic!(
            "kamailio rejects {} ({}); is the rtpengine module (rtpengine.so, package kamailio) \
             installed?\n{}",
            kam_cfg.display(),
            check.status,
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let kam_run = dir.join("kamailio-run");
    fs::create_dir_all(&kam_run).unwrap();
    let mut c = Command::new(&kamailio);
    c.arg("-f")
        .arg(&kam_cfg)
        .args(["-DD", "-E", "-m", "64", "-M", "16", "-x", "tlsf"])
        .arg("-Y")
        .arg(&kam_run)
        .arg("-P")
        .arg(kam_run.join("kamailio.pid"));
    let kam = h.spawn("kamailio", c);
    wait_sip_keepalive(&mut h, kam, ports.kamailio, Duration::from_secs(15));

    // ---- SIPp ------------------------------------------------------------
    fs::copy(fixture("sipp/uas.xml"), dir.join("uas.xml")).unwrap();
    fs::copy(fixture("sipp/uac.xml"), dir.join("uac.xml")).unwrap();
    // The audio the UAC's rtp_stream plays (relative to SIPp's working
    // directory): raw µ-law silence, 160 bytes per 20 ms packet.
    fs::write(dir.join("g711u.raw"), vec![0xffu8; 160 * AUDIO_PACKETS]).unwrap();

    let sipp_timeout = format!("{}s", 30 + CALLS * (HOLD_MS / 1000 + 2));
    let mut c = Command::new(&sipp);
    c.current_dir(&dir)
        .arg("-sf")
        .arg(dir.join("uas.xml"))
        .args(["-i", &SIP_IP.to_string(), "-p", &ports.uas_sip.to_string()])
        .args([
            "-mi",
            &UAS_MEDIA_IP.to_string(),
            "-mp",
            &ports.uas_media.to_string(),
        ])
        .arg("-rtp_echo")
        .args(["-m", &CALLS.to_string()])
        .args(["-nostdin", "-trace_logs", "-log_file"])
        .arg(dir.join("uas_logs.log"))
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("uas_errors.log"))
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("uas_stat.csv"))
        .args(["-timeout", &sipp_timeout, "-timeout_error"]);
    let uas = h.spawn("sipp-uas", c);
    wait_udp_bound(&mut h, uas, SIP_IP, ports.uas_sip, Duration::from_secs(10));

    let cid_prefix = format!("kkit-{nonce}-");
    let mut c = Command::new(&sipp);
    c.current_dir(&dir)
        .arg(format!("{SIP_IP}:{}", ports.uas_sip))
        .arg("-sf")
        .arg(dir.join("uac.xml"))
        .args(["-s", "kolokol"])
        .args(["-i", &SIP_IP.to_string(), "-p", &ports.uac_sip.to_string()])
        .args(["-rsa", &format!("{SIP_IP}:{}", ports.kamailio)])
        .args([
            "-mi",
            &UAC_MEDIA_IP.to_string(),
            "-mp",
            &ports.uac_media.to_string(),
        ])
        .args([
            "-m",
            &CALLS.to_string(),
            "-l",
            &CALLS.to_string(),
            "-r",
            "1",
        ])
        .args(["-d", &HOLD_MS.to_string()])
        .args(["-cid_str", &format!("{cid_prefix}%u@kolokol.test")])
        .args(["-recv_timeout", "10000"])
        .args(["-nostdin", "-trace_logs", "-log_file"])
        .arg(dir.join("uac_logs.log"))
        .args(["-trace_err", "-error_file"])
        .arg(dir.join("uac_errors.log"))
        .args(["-trace_stat", "-stf"])
        .arg(dir.join("uac_stat.csv"))
        .args(["-timeout", &sipp_timeout, "-timeout_error"]);
    let uac = h.spawn("sipp-uac", c);
    let call_ids: Vec<String> = (1..=CALLS)
        .map(|n| format!("{cid_prefix}{n}@kolokol.test"))
        .collect();

    // ---- while the calls run: sample the relay's per-leg counters ---------
    let mut counters: BTreeMap<String, LegCounters> = BTreeMap::new();
    let mut query_log = String::new();
    let deadline = Instant::now() + Duration::from_secs(30 + u64::from(CALLS) * 10);
    let uac_status = loop {
        if let Some(st) = h.try_wait(uac) {
            break st;
        }
        if Instant::now() > deadline {
            panic!("SIPp UAC still running after its deadline");
        }
        h.assert_alive(relay);
        h.assert_alive(kam);
        for cid in &call_ids {
            let mut q = Value::dict();
            q.insert("command", "query");
            q.insert("call-id", cid.as_str());
            let reply = ng.request(&q);
            let ok = reply.get("result").and_then(Value::as_str) == Some("ok");
            if ok {
                let _ = writeln!(query_log, "{cid}: {}", show(&reply));
                counters.entry(cid.clone()).or_default().update(&reply);
            }
        }
        std::thread::sleep(POLL);
    };
    fs::write(dir.join("ng_queries.log"), &query_log).unwrap();
    let uas_status = h.wait(uas, Duration::from_secs(20));

    // ---- after the calls: the BYEs deleted them in the relay ------------
    let gone_deadline = Instant::now() + Duration::from_secs(5);
    let mut still_there: Vec<String> = call_ids.clone();
    while !still_there.is_empty() && Instant::now() < gone_deadline {
        still_there.retain(|cid| {
            let mut q = Value::dict();
            q.insert("command", "query");
            q.insert("call-id", cid.as_str());
            ng.request(&q).get("result").and_then(Value::as_str) == Some("ok")
        });
        if !still_there.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // ---- (c) every call succeeded ----------------------------------------
    let uac_stats = sipp_final_stats(&dir.join("uac_stat.csv"));
    let uas_stats = sipp_final_stats(&dir.join("uas_stat.csv"));
    assert!(
        uac_status.success(),
        "SIPp UAC exited with {uac_status} (0 = all calls succeeded); stats {uac_stats:?}"
    );
    assert!(
        uas_status.success(),
        "SIPp UAS exited with {uas_status} (0 = all calls succeeded); stats {uas_stats:?}"
    );
    for (side, stats) in [("UAC", &uac_stats), ("UAS", &uas_stats)] {
        assert_eq!(
            stats.get("SuccessfulCall(C)").copied(),
            Some(i64::from(CALLS)),
            "SIPp {side}: successful calls; stats {stats:?}"
        );
        assert_eq!(
            stats.get("FailedCall(C)").copied(),
            Some(0),
            "SIPp {side}: failed calls; stats {stats:?}"
        );
    }

    // ---- (a) the SDP each side received points at the relay ---------------
    let media = ports.media_min..=ports.media_max;
    let offers = sdp_log_lines(&dir.join("uas_logs.log"), "UAS_OFFER_SDP");
    let answers = sdp_log_lines(&dir.join("uac_logs.log"), "UAC_ANSWER_SDP");
    for cid in &call_ids {
        let (c, m) = offers
            .get(cid)
            .unwrap_or_else(|| panic!("the UAS logged no offer SDP for call {cid}: {offers:?}"));
        assert_eq!(
            c,
            &RELAY_IP.to_string(),
            "offer reaching the callee for {cid}: c= is not the relay's address \
             (the caller's media address is {UAC_MEDIA_IP})"
        );
        assert!(
            media.contains(m) && *m != ports.uac_media,
            "offer reaching the callee for {cid}: m=audio {m} is not in the relay's \
             media range {media:?} (the caller's own port is {})",
            ports.uac_media
        );
        let (c, m) = answers
            .get(cid)
            .unwrap_or_else(|| panic!("the UAC logged no answer SDP for call {cid}: {answers:?}"));
        assert_eq!(
            c,
            &RELAY_IP.to_string(),
            "answer reaching the caller for {cid}: c= is not the relay's address \
             (the callee's media address is {UAS_MEDIA_IP}); did rtpengine_answer fail?"
        );
        assert!(
            media.contains(m) && *m != ports.uas_media,
            "answer reaching the caller for {cid}: m=audio {m} is not in the relay's \
             media range {media:?} (the callee's own port is {})",
            ports.uas_media
        );
    }

    // ---- (b) media went through the relay, both ways -----------------------
    for cid in &call_ids {
        let leg = counters.get(cid).unwrap_or_else(|| {
            panic!(
                "ng `query` never answered `ok` for call {cid} while it was up \
                 (see ng_queries.log for the replies that did)"
            )
        });
        assert!(
            leg.caller >= MIN_PACKETS,
            "call {cid}: the relay received {} RTP packets from the caller's leg \
             (tag *UacTag*), want >= {MIN_PACKETS} of the {AUDIO_PACKETS} sent; {leg:?}",
            leg.caller
        );
        assert!(
            leg.callee >= MIN_PACKETS,
            "call {cid}: the relay received {} RTP packets from the callee's leg \
             (tag *UasTag*, which only echoes what the relay forwarded to it), \
             want >= {MIN_PACKETS}; {leg:?}",
            leg.callee
        );
    }
    assert!(
        still_there.is_empty(),
        "calls still known to the relay 5 s after their BYE (rtpengine_delete): {still_there:?}"
    );
    eprintln!("kamailio_sipp: counters {counters:?}");
}

// ---------------------------------------------------------------------------
// Relay configuration

#[derive(Clone, Copy, Debug)]
enum RelayKind {
    Kolokol,
    Rtpengine,
}

fn kolokol_config(p: &Ports) -> String {
    format!(
        "# written by tests/kamailio_sipp.rs\n\
         [shards]\n\
         count = 1\n\
         cpus = []\n\
         \n\
         [media]\n\
         address = \"{RELAY_IP}\"\n\
         port_min = {}\n\
         port_max = {}\n\
         timeout_s = 30\n\
         strict_source = false\n\
         dscp = 0\n\
         port_mode = \"per-leg\"\n\
         \n\
         [sip]\n\
         # Kamailio does the SIP here; Kolokol is only its relay.\n\
         enabled = false\n\
         \n\
         [ng]\n\
         listen = \"127.0.0.1:{}\"\n\
         \n\
         [log]\n\
         level = \"debug\"\n",
        p.media_min, p.media_max, p.ng
    )
}

fn rtpengine_config(p: &Ports) -> String {
    format!(
        "[rtpengine]\n\
         table = -1\n\
         interface = {RELAY_IP}\n\
         listen-ng = 127.0.0.1:{}\n\
         port-min = {}\n\
         port-max = {}\n\
         num-threads = 1\n\
         delete-delay = 0\n\
         foreground = true\n\
         log-stderr = true\n\
         log-level = 6\n",
        p.ng, p.media_min, p.media_max
    )
}

// ---------------------------------------------------------------------------
// Ports

/// Every port the test uses. SIP and ng on 127.0.0.1; each SIPp's media
/// sockets (`-mp` and, for `-rtp_echo`, `-mp`+2; +1 is kept for RTCP) on its
/// own loopback address; the relay's media range on 127.0.0.1.
#[derive(Debug)]
struct Ports {
    kamailio: u16,
    uas_sip: u16,
    uac_sip: u16,
    ng: u16,
    uas_media: u16,
    uac_media: u16,
    media_min: u16,
    media_max: u16,
}

/// Ports are looked for here: below the relay range of the example config
/// (20000-59999, which other runs on this host may be using) and below the
/// kernel's ephemeral ports (32768+ by default).
const PICK_LOW: u16 = 10_000;
const PICK_HIGH: u16 = 19_999;
const SIP_BLOCK: u16 = 12;

impl Ports {
    fn pick() -> Ports {
        let sip_env = env_port("KOLOKOL_IT_SIP_BASE");
        let media_env = env_port("KOLOKOL_IT_MEDIA_MIN");
        let mut rng = nanos() ^ (u64::from(std::process::id()) << 32);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut busy = Vec::new();
        loop {
            let sip = sip_env.unwrap_or_else(|| pick_in(&mut rng, SIP_BLOCK));
            let media = media_env.unwrap_or_else(|| pick_in(&mut rng, MEDIA_SPAN));
            let p = Ports {
                kamailio: sip,
                uas_sip: sip + 1,
                uac_sip: sip + 2,
                ng: sip + 3,
                uas_media: sip + 4,
                uac_media: sip + 8,
                media_min: media,
                media_max: media + MEDIA_SPAN - 1,
            };
            let overlap = p.media_min < sip + SIP_BLOCK && sip <= p.media_max;
            if !overlap {
                match p.first_busy() {
                    None => return p,
                    Some(b) => busy.push(b),
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "no free UDP ports for the test after 30 s (tried {} layouts; \
                     busy: {:?}); set KOLOKOL_IT_SIP_BASE / KOLOKOL_IT_MEDIA_MIN",
                    busy.len(),
                    &busy[busy.len().saturating_sub(10)..]
                );
            }
            if sip_env.is_some() || media_env.is_some() {
                // Fixed ports: wait for whoever holds them.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// The first port that cannot be bound now, if any.
    fn first_busy(&self) -> Option<SocketAddr> {
        let mut want: Vec<SocketAddr> = vec![
            (SIP_IP, self.kamailio).into(),
            (SIP_IP, self.uas_sip).into(),
            (SIP_IP, self.uac_sip).into(),
            (Ipv4Addr::LOCALHOST, self.ng).into(),
        ];
        for (ip, base) in [
            (UAS_MEDIA_IP, self.uas_media),
            (UAC_MEDIA_IP, self.uac_media),
        ] {
            for port in base..base + 3 {
                want.push((ip, port).into());
            }
        }
        for port in self.media_min..=self.media_max {
            want.push((RELAY_IP, port).into());
        }
        want.into_iter().find(|a| UdpSocket::bind(a).is_err())
    }
}

fn env_port(name: &str) -> Option<u16> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a port number")),
    )
}

fn pick_in(rng: &mut u64, width: u16) -> u16 {
    let slots = u64::from((PICK_HIGH - PICK_LOW - width) / 16);
    PICK_LOW + 16 * (xorshift(rng) % slots) as u16
}

// ---------------------------------------------------------------------------
// Processes and logs

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}

// ---------------------------------------------------------------------------
// Readiness

/// Send a SIP OPTIONS to Kamailio until it answers 200 (its config answers
/// OPTIONS addressed to itself), i.e. its workers are up.
fn wait_sip_keepalive(h: &mut Harness, kam: ProcId, port: u16, limit: Duration) {
    let sock = UdpSocket::bind((SIP_IP, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let deadline = Instant::now() + limit;
    let mut n = 0;
    loop {
        h.assert_alive(kam);
        n += 1;
        let msg = format!(
            "OPTIONS sip:{SIP_IP}:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-kkit-{n}\r\n\
             From: <sip:probe@{local}>;tag=probe{n}\r\n\
             To: <sip:{SIP_IP}:{port}>\r\n\
             Call-ID: kkit-probe-{n}@{local}\r\n\
             CSeq: {n} OPTIONS\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let _ = sock.send_to(msg.as_bytes(), (SIP_IP, port));
        let mut buf = [0u8; 4096];
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 200") {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!("kamailio did not answer OPTIONS on {SIP_IP}:{port} within {limit:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// ng client

struct Ng {
    sock: UdpSocket,
    to: SocketAddr,
    seq: std::cell::Cell<u32>,
}

impl Ng {
    fn new(port: u16) -> Ng {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        Ng {
            sock,
            to: (Ipv4Addr::LOCALHOST, port).into(),
            seq: std::cell::Cell::new(0),
        }
    }

    /// One request, up to 3 tries; the reply for our cookie, or a synthetic
    /// `{result: error, error-reason: ...}` if none came.
    fn request(&self, msg: &Value) -> Value {
        let body = msg.to_bytes();
        for _ in 0..3 {
            let n = self.seq.get() + 1;
            self.seq.set(n);
            let cookie = format!("kkit{}_{n}", std::process::id());
            let mut pkt = cookie.clone().into_bytes();
            pkt.push(b' ');
            pkt.extend_from_slice(&body);
            if self.sock.send_to(&pkt, self.to).is_err() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut buf = vec![0u8; 65_536];
            while Instant::now() < deadline {
                let Ok(len) = self.sock.recv(&mut buf) else {
                    break;
                };
                let data = &buf[..len];
                let Some(sp) = data.iter().position(|&b| b == b' ') else {
                    continue;
                };
                if &data[..sp] != cookie.as_bytes() {
                    continue; // a late reply to an earlier try
                }
                return bencode::decode(&data[sp + 1..]).unwrap_or_else(|e| {
                    panic!(
                        "the relay's ng reply is not bencode ({e}): {:?}",
                        String::from_utf8_lossy(data)
                    )
                });
            }
        }
        let mut v = Value::dict();
        v.insert("result", "error");
        v.insert("error-reason", "no reply (test harness)");
        v
    }

    /// Ping until `pong`, or fail if the relay exits or the time runs out.
    fn wait_pong(&self, h: &mut Harness, relay: ProcId, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut ping = Value::dict();
        ping.insert("command", "ping");
        loop {
            h.assert_alive(relay);
            let reply = self.request(&ping);
            if reply.get("result").and_then(Value::as_str) == Some("pong") {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the relay did not answer ng ping with pong on {} within {limit:?}; \
                     last reply {}",
                    self.to,
                    show(&reply)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Highest packet counts seen for one call, per side. The relay's `query`
/// reply (rtpengine's format) has `tags` → {tag → `medias` → [`streams` →
/// [`stats` → `packets`]]}, where a stream's packets are those *received*
/// from that tag's endpoint. The UAC's from-tag contains `UacTag`, the UAS's
/// to-tag `UasTag` (see the scenarios).
#[derive(Debug, Default)]
struct LegCounters {
    caller: i64,
    callee: i64,
    tags_seen: Vec<String>,
}

impl LegCounters {
    fn update(&mut self, reply: &Value) {
        let Some(tags) = reply.get("tags").and_then(Value::as_dict) else {
            return;
        };
        for (tag, leg) in tags {
            let tag = String::from_utf8_lossy(tag).into_owned();
            let mut packets = 0;
            for media in leg.get("medias").and_then(Value::as_list).unwrap_or(&[]) {
                for stream in media.get("streams").and_then(Value::as_list).unwrap_or(&[]) {
                    packets += stream
                        .get("stats")
                        .and_then(|s| s.get("packets"))
                        .and_then(Value::as_int)
                        .unwrap_or(0);
                }
            }
            if tag.contains("UacTag") {
                self.caller = self.caller.max(packets);
            } else if tag.contains("UasTag") {
                self.callee = self.callee.max(packets);
            }
            if !self.tags_seen.contains(&tag) {
                self.tags_seen.push(tag);
            }
        }
    }
}

/// A compact, readable rendering of a bencode value for the logs.
fn show(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        Value::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
        Value::List(l) => format!("[{}]", l.iter().map(show).collect::<Vec<_>>().join(", ")),
        Value::Dict(d) => format!(
            "{{{}}}",
            d.iter()
                .map(|(k, v)| format!("{}: {}", String::from_utf8_lossy(k), show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

// ---------------------------------------------------------------------------
// SIPp output

/// `<TAG> call_id=ID c=ADDR m=PORT ...` lines written by the scenarios'
/// `<log>` actions, by call-id.
fn sdp_log_lines(path: &Path, tag: &str) -> BTreeMap<String, (String, u16)> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read SIPp log {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(tag)) {
        // `TAG call_id=.. c=.. m=.. (raw c= line / raw m= line)`
        let head = line.split(" (").next().unwrap_or(line);
        let field = |name: &str| {
            head.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
        };
        let (Some(cid), Some(c), Some(m)) = (field("call_id="), field("c="), field("m=")) else {
            panic!("malformed {tag} line in {}: {line:?}", path.display());
        };
        let m = m
            .parse()
            .unwrap_or_else(|_| panic!("bad m= port in {}: {line:?}", path.display()));
        out.insert(cid, (c, m));
    }
    out
}
