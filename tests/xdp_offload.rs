//! Shards offload plain RTP leg pairs to the XDP relay (issue 7, item 2),
//! with the real gateway binary on a veth topology the test builds:
//!
//! ```text
//!   gen [xg0 10.78.1.2] <-> [xga 10.78.1.1] gw [xgb 10.78.2.1] <-> [xs0 10.78.2.2] sink
//!                                gw lo: 10.78.0.1/32 (the media address)
//! ```
//!
//! `kolokol run` runs in gw's namespace with `datapath = "xdp"` on xga and
//! xgb; gen and sink route 10.78.0.1 through gw, so one media address
//! serves both sides. Calls are set up over ng; after a few packets each
//! way (latching, over the sockets) the shard installs the pair and:
//! - the sink gets every packet bit-exact with valid IP/UDP checksums, and
//!   gen gets the other direction;
//! - ng `query` counts the offloaded packets per leg, while the shard's
//!   socket receive counter (its stop line) only has the latching ones;
//! - a spoofed source on a strict-source call is dropped and counted;
//! - a re-offer moving a remote re-installs the pair with the new source,
//!   keeping the counts;
//! - ng `delete` removes the entries: later packets reach nobody;
//! - traffic through XDP alone keeps a call past `timeout_s`, and stopping
//!   it ends the call by media timeout.
//!
//! With IPv4 forwarding off in gw's namespace (where the program's FIB
//! lookup refuses), with and without socket-less legs (`xsk_legs`), the
//! shard fills the entries' egress from its neighbour table and the
//! program still forwards: its counters move, the sink gets every packet
//! bit-exact, and the shard's receive path sees only the latching ones.
//!
//! Needs root, iproute2, ethtool and a build with the XDP program; skips
//! with the reason otherwise. Namespaces are named after the process id and
//! removed at the end, also on failure; the gateway is stopped by its pid.

mod common;
mod netns;

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{leg_stat, rtp, sdp_for, target, Ng};
use kolokol::control::bencode::Value;
use kolokol::media::xdp::{self, XdpRelay};
use netns::{big_rcvbuf, check_ipv4_udp, sh, Topo};

/// Packets per direction and call in the offloaded phase.
const N: usize = 200;
/// Packets per direction sent first, over the sockets (latching).
const LATCH: usize = 5;
const TIMEOUT_S: u64 = 3;
/// Packets from call 2's new source after its re-offer.
const MOVED: usize = 50;

/// The topology, its namespaces named with `tag`; IPv4 forwarding in
/// gw's namespace on or off.
fn build_topo(tag: &str, forwarding: bool) -> Result<Topo, String> {
    let t = Topo::veths(&format!("kxo{tag}"))?;
    let (gen, gw, sink) = (t.gen.as_str(), t.gw.as_str(), t.sink.as_str());
    #[rustfmt::skip]
    let steps: &[&[&str]] = &[
        &["ip", "-n", gen, "addr", "add", "10.78.1.2/24", "dev", "xg0"],
        &["ip", "-n", gw, "addr", "add", "10.78.1.1/24", "dev", "xga"],
        &["ip", "-n", gw, "addr", "add", "10.78.2.1/24", "dev", "xgb"],
        &["ip", "-n", gw, "addr", "add", "10.78.0.1/32", "dev", "lo"],
        &["ip", "-n", sink, "addr", "add", "10.78.2.2/24", "dev", "xs0"],
        // A destination on no xdp_interface subnet (routed through the
        // sink): its entries keep the program's FIB lookup.
        &["ip", "-n", sink, "addr", "add", "10.79.0.2/32", "dev", "xs0"],
        // bpf_fib_lookup (the program's egress lookup, in input mode)
        // answers only where forwarding is on.
        &["ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"],
        &["ip", "-n", gen, "route", "add", "10.78.0.1/32", "via", "10.78.1.1"],
        &["ip", "-n", sink, "route", "add", "10.78.0.1/32", "via", "10.78.2.1"],
        &["ip", "-n", gw, "route", "add", "10.79.0.2/32", "via", "10.78.2.2"],
        // veth hands the peer partial checksums: both senders must
        // send complete ones for an XDP rewrite to be valid.
        &["ip", "netns", "exec", gen, "ethtool", "-K", "xg0", "tx", "off"],
        &["ip", "netns", "exec", sink, "ethtool", "-K", "xs0", "tx", "off"],
    ];
    for s in steps {
        if !forwarding && s.iter().any(|a| a.contains("forwarding=1")) {
            // Off everywhere in gw's namespace (also on the interfaces
            // created before: `all` does not reset them to 0).
            for c in ["all", "default", "xga", "xgb"] {
                let k = format!("net.ipv4.conf.{c}.forwarding=0");
                sh(&["ip", "netns", "exec", gw, "sysctl", "-qw", &k])?;
            }
            continue;
        }
        sh(s)?;
    }
    Ok(t)
}

/// The gateway process, stopped (SIGTERM, then SIGKILL) on drop.
struct GwProc {
    child: Child,
    log: PathBuf,
    dir: PathBuf,
}

impl GwProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (bounded) for the exit; returns its log.
    fn stop(&mut self) -> String {
        let pid = self.child.id() as i32;
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.log();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("gateway did not stop on SIGTERM; log:\n{}", self.log());
    }
}

impl Drop for GwProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `f` in `ns`; a test cannot go on without it.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    netns::in_netns(ns, f).expect("enter namespace")
}

/// An AF_PACKET capture on `iface`; a test cannot go on without it.
fn capture(iface: &str) -> std::os::fd::OwnedFd {
    netns::capture(iface).expect("capture")
}

fn skip(why: &str) {
    eprintln!("SKIPPED xdp_offload: {why}");
}

/// Captured UDP packets to `dst` (others on the wire are skipped).
fn captured_to(fd: &std::os::fd::OwnedFd, dst: SocketAddrV4, want: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 28 {
            let p = &buf[..n as usize];
            let to = SocketAddrV4::new(
                std::net::Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                u16::from_be_bytes([p[22], p[23]]),
            );
            if p[9] == 17 && to == dst {
                out.push(p.to_vec());
            }
        }
    }
    out
}

fn endpoint(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
    big_rcvbuf(s.as_raw_fd());
    s
}

fn drain_for(s: &UdpSocket, want: usize, wait: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((buf[..n].to_vec(), from));
        }
    }
    out
}

/// Nothing arrives on `s` within half a second.
fn silent(s: &UdpSocket) -> bool {
    drain_for(s, 1, Duration::from_millis(500)).is_empty()
}

/// Offer from `a` (gen) and answer from `b` (sink); returns (where gen
/// sends, where sink sends).
fn setup(ng: &mut Ng, id: &str, a: &str, b: &str, strict: bool) -> (SocketAddr, SocketAddr) {
    let flags = || {
        if strict {
            vec![("flags", Value::List(vec![Value::from("strict-source")]))]
        } else {
            Vec::new()
        }
    };
    let mut pairs = vec![
        ("call-id", Value::from(id)),
        ("from-tag", Value::from("ftag")),
        ("sdp", Value::from(sdp_for(a.parse().unwrap(), ""))),
    ];
    pairs.extend(flags());
    let offer = ng.cmd("offer", &pairs);
    let mut pairs = vec![
        ("call-id", Value::from(id)),
        ("from-tag", Value::from("ftag")),
        ("to-tag", Value::from("ttag")),
        ("sdp", Value::from(sdp_for(b.parse().unwrap(), ""))),
    ];
    pairs.extend(flags());
    let answer = ng.cmd("answer", &pairs);
    (target(&answer).0, target(&offer).0)
}

/// Sends `pkts` from `from` to `to`, a little apart (veth queues are
/// short), and checks `at` receives them all, bit-exact, from `via`.
fn relay_all(from: &UdpSocket, to: SocketAddr, at: &UdpSocket, via: SocketAddr, pkts: &[Vec<u8>]) {
    for p in pkts {
        from.send_to(p, to).expect("send");
        std::thread::sleep(Duration::from_micros(300));
    }
    let got = drain_for(at, pkts.len(), Duration::from_secs(3));
    assert_eq!(
        got.len(),
        pkts.len(),
        "received {} of {}",
        got.len(),
        pkts.len()
    );
    for ((payload, src), want) in got.iter().zip(pkts) {
        assert_eq!(payload, want, "payload differs");
        assert_eq!(*src, via, "relayed from the wrong address");
    }
}

/// The figure after `key` in the shard's stop line.
fn stop_figure(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.starts_with("shard 0: rx "))
        .unwrap_or_else(|| panic!("no stop line in the log:\n{log}"));
    let mut words = line
        .split_whitespace()
        .map(|w| w.trim_end_matches([';', ',']));
    while let Some(w) = words.next() {
        if w == key {
            if let Some(v) = words.next().and_then(|v| v.parse().ok()) {
                return v;
            }
        }
    }
    panic!("no {key} in {line}");
}

/// The tests of this file one at a time (timing on a small shared host).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Root, the XDP program and the tools, else the reason to skip.
fn prerequisites() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root (network namespaces and XDP need it)".into());
    }
    if !xdp::built_in() {
        return Err("XDP not built in (install clang and libbpf-dev; scripts/test.sh does)".into());
    }
    for tool in ["ip", "ethtool", "sysctl"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Err(format!("{tool} not installed"));
        }
    }
    Ok(())
}

#[test]
fn shards_offload_plain_rtp_to_xdp() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = prerequisites() {
        return skip(&why);
    }
    let topo = match build_topo("", true) {
        Ok(t) => t,
        Err(e) => return skip(&format!("cannot build the veth topology: {e}")),
    };
    run(&topo);
}

#[test]
fn offload_forwards_with_forwarding_off() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(why) = prerequisites() {
        return skip(&why);
    }
    for xsk_legs in [false, true] {
        let topo = match build_topo(if xsk_legs { "fx" } else { "f" }, false) {
            Ok(t) => t,
            Err(e) => return skip(&format!("cannot build the veth topology: {e}")),
        };
        run_forwarding_off(&topo, xsk_legs);
    }
}

fn start_gateway(topo: &Topo) -> GwProc {
    start_gateway_with(topo, "")
}

fn start_gateway_with(topo: &Topo, extra: &str) -> GwProc {
    let dir = std::env::temp_dir().join(format!("kxoffload{}{}", topo.gw, std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("kolokol.toml");
    std::fs::write(
        &cfg,
        format!(
            "[shards]\ncount = 1\n[sip]\nenabled = false\n[api]\nenabled = false\n\
             [ng]\nlisten = \"127.0.0.1:22222\"\n\
             [media]\naddress = \"10.78.0.1\"\nport_min = 30000\nport_max = 30099\n\
             calls_max = 64\ntimeout_s = {TIMEOUT_S}\ndatapath = \"xdp\"\n\
             xdp_interface = [\"xga\", \"xgb\"]\n{extra}"
        ),
    )
    .expect("config");
    let log = dir.join("gw.log");
    let child = Command::new("ip")
        .args(["netns", "exec", &topo.gw])
        .arg(env!("CARGO_BIN_EXE_kolokol"))
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start kolokol");
    GwProc { child, log, dir }
}

/// An ng client in gw's namespace, once the gateway answers `ping`.
fn ng_client(topo: &Topo, gw: &mut GwProc) -> Ng {
    let to: SocketAddr = "127.0.0.1:22222".parse().unwrap();
    let mut ng = in_netns(&topo.gw, || Ng::new(to));
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(st)) = gw.child.try_wait() {
            panic!("gateway exited ({st}); log:\n{}", gw.log());
        }
        if ng
            .raw(b"p1 d7:command4:pinge")
            .is_some_and(|r| r.windows(4).any(|w| w == b"pong"))
        {
            return ng;
        }
        assert!(Instant::now() < end, "ng not answering; log:\n{}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(topo: &Topo) {
    // XDP_PASS on the gen and sink ends: native redirect into a veth needs
    // a program on the peer that receives.
    let mut pass = XdpRelay::load().expect("load XDP");
    in_netns(&topo.gen, || pass.attach_pass("xg0").map(|_| ())).expect("XDP_PASS on xg0");
    in_netns(&topo.sink, || pass.attach_pass("xs0").map(|_| ())).expect("XDP_PASS on xs0");

    let mut gw = start_gateway(topo);
    let mut ng = ng_client(topo, &mut gw);
    let log = gw.log();
    assert!(
        log.contains("media offload to XDP: active")
            && !log.contains("falling back to sockets")
            && !log.contains("forwarding is off"),
        "XDP offload not active; log:\n{log}"
    );

    let (gen1, gen2, spoof, gen3) = in_netns(&topo.gen, || {
        (
            endpoint("10.78.1.2:4000"),
            endpoint("10.78.1.2:4002"),
            endpoint("10.78.1.2:4003"),
            endpoint("10.78.1.2:4004"),
        )
    });
    let (sink1, sink2, sink3, cap) = in_netns(&topo.sink, || {
        (
            endpoint("10.78.2.2:5000"),
            endpoint("10.78.2.2:5002"),
            endpoint("10.79.0.2:5004"),
            capture("xs0"),
        )
    });
    let mut socket_path = 0u64;

    // Call 1, learning mode: a few packets each way latch both legs over
    // the sockets; the shard then installs the pair.
    let (to_a, to_b) = setup(&mut ng, "c1", "10.78.1.2:4000", "10.78.2.2:5000", false);
    let latch_a: Vec<Vec<u8>> = (0..LATCH as u16).map(|i| rtp(i, 0xa1, 1)).collect();
    let latch_b: Vec<Vec<u8>> = (0..LATCH as u16).map(|i| rtp(i, 0xb1, 2)).collect();
    relay_all(&gen1, to_a, &sink1, to_b, &latch_a);
    // A's packets and B's first go over the sockets; B's first latches B
    // and the pair goes to XDP with the rest of B's. They are sent after
    // the install: at the hand-over a packet still in the receive path may
    // be overtaken by a later one forwarded by XDP (a real, one-packet
    // reordering that this test does not measure).
    relay_all(&sink1, to_b, &gen1, to_a, &latch_b[..1]);
    std::thread::sleep(Duration::from_millis(100));
    relay_all(&sink1, to_b, &gen1, to_a, &latch_b[1..]);
    socket_path += LATCH as u64 + 1;
    std::thread::sleep(Duration::from_millis(100));

    // Offloaded: N each way.
    let a_pkts: Vec<Vec<u8>> = (0..N as u16)
        .map(|i| rtp(LATCH as u16 + i, 0xa1, 3))
        .collect();
    let b_pkts: Vec<Vec<u8>> = (0..N as u16)
        .map(|i| rtp(LATCH as u16 + i, 0xb1, 4))
        .collect();
    relay_all(&gen1, to_a, &sink1, to_b, &a_pkts);
    let sink_v4 = SocketAddrV4::new("10.78.2.2".parse().unwrap(), 5000);
    let caps = captured_to(&cap, sink_v4, LATCH + N);
    assert!(caps.len() >= N, "captured {} of {}", caps.len(), LATCH + N);
    for (i, p) in caps[caps.len() - N..].iter().enumerate() {
        let (src, dst, _) = check_ipv4_udp(p).unwrap_or_else(|e| {
            let q = ng.cmd("query", &[("call-id", Value::from("c1"))]);
            panic!("offloaded packet {i}: {e}; query {q:?}; log:\n{}", gw.log())
        });
        assert_eq!(SocketAddr::V4(src), to_b);
        assert_eq!(dst, sink_v4);
    }
    relay_all(&sink1, to_b, &gen1, to_a, &b_pkts);
    let q = ng.cmd("query", &[("call-id", Value::from("c1"))]);
    assert_eq!(leg_stat(&q, "ftag", "offloaded"), 1, "{q:?}");
    assert_eq!(leg_stat(&q, "ttag", "offloaded"), 1, "{q:?}");
    assert_eq!(leg_stat(&q, "ftag", "packets"), (LATCH + N) as i64, "{q:?}");
    assert_eq!(leg_stat(&q, "ttag", "packets"), (LATCH + N) as i64, "{q:?}");
    assert_eq!(leg_stat(&q, "ftag", "bytes"), ((LATCH + N) * 172) as i64);
    eprintln!("xdp_offload: call 1 relayed {N} each way; query counts them");

    // Call 2, strict source: both remotes from SDP are final, installed at
    // the answer; a spoofed source is dropped by the program and counted.
    let (to_a2, to_b2) = setup(&mut ng, "c2", "10.78.1.2:4002", "10.78.2.2:5002", true);
    let c2: Vec<Vec<u8>> = (0..N as u16).map(|i| rtp(i, 0xa2, 5)).collect();
    relay_all(&gen2, to_a2, &sink2, to_b2, &c2);
    spoof.send_to(&rtp(999, 0xa2, 6), to_a2).expect("spoof");
    assert!(silent(&sink2), "spoofed packet relayed");
    let q = ng.cmd("query", &[("call-id", Value::from("c2"))]);
    assert_eq!(leg_stat(&q, "ftag", "packets"), N as i64, "{q:?}");
    assert_eq!(leg_stat(&q, "ftag", "errors"), 1, "{q:?}");
    eprintln!("xdp_offload: call 2 (strict) relayed {N}, spoof dropped and counted");

    // Re-offer moves A to another port: the entries go (their counts stay
    // in the legs' figures) and come back with the new source; the old one
    // is now a stranger.
    let gen2b = in_netns(&topo.gen, || endpoint("10.78.1.2:4006"));
    let mut pairs = vec![
        ("call-id", Value::from("c2")),
        ("from-tag", Value::from("ftag")),
        (
            "sdp",
            Value::from(sdp_for("10.78.1.2:4006".parse().unwrap(), "")),
        ),
    ];
    pairs.push(("flags", Value::List(vec![Value::from("strict-source")])));
    let re = ng.cmd("offer", &pairs);
    assert_eq!(target(&re).0, to_b2, "re-offer keeps B's port");
    let moved: Vec<Vec<u8>> = (0..MOVED as u16)
        .map(|i| rtp(N as u16 + i, 0xa2, 11))
        .collect();
    relay_all(&gen2b, to_a2, &sink2, to_b2, &moved);
    gen2.send_to(&rtp(998, 0xa2, 12), to_a2).expect("send");
    assert!(silent(&sink2), "old source relayed after the re-offer");
    let q = ng.cmd("query", &[("call-id", Value::from("c2"))]);
    assert_eq!(leg_stat(&q, "ftag", "packets"), (N + MOVED) as i64, "{q:?}");
    assert_eq!(leg_stat(&q, "ftag", "errors"), 2, "{q:?}");
    assert_eq!(leg_stat(&q, "ftag", "port"), 4006, "{q:?}");
    eprintln!("xdp_offload: re-offer re-installed call 2 with the new source");

    // delete: the reply has the offloaded figures, and the entries are
    // gone (the ports are closed too: nothing reaches the sink).
    let d = ng.cmd("delete", &[("call-id", Value::from("c1"))]);
    assert_eq!(leg_stat(&d, "ftag", "offloaded"), 0, "entries out first");
    assert_eq!(leg_stat(&d, "ftag", "packets"), (LATCH + N) as i64, "{d:?}");
    assert_eq!(leg_stat(&d, "ttag", "packets"), (LATCH + N) as i64, "{d:?}");
    let d2 = ng.cmd("delete", &[("call-id", Value::from("c2"))]);
    assert_eq!(
        leg_stat(&d2, "ftag", "packets"),
        (N + MOVED) as i64,
        "{d2:?}"
    );
    gen1.send_to(&rtp(7, 0xa1, 7), to_a).expect("send");
    gen2.send_to(&rtp(7, 0xa2, 7), to_a2).expect("send");
    assert!(silent(&sink1), "forwarded after delete");
    assert!(silent(&sink2), "forwarded after delete");
    eprintln!("xdp_offload: delete reports the figures and removes the entries");

    // Call 3: traffic only through XDP for longer than the media timeout
    // keeps the call; silence ends it. Its sink is routed (on no
    // xdp_interface subnet): that direction forwards by FIB lookup.
    let (to_a3, to_b3) = setup(&mut ng, "c3", "10.78.1.2:4004", "10.79.0.2:5004", false);
    let l3a: Vec<Vec<u8>> = (0..LATCH as u16).map(|i| rtp(i, 0xa3, 8)).collect();
    let l3b: Vec<Vec<u8>> = (0..LATCH as u16).map(|i| rtp(i, 0xb3, 9)).collect();
    relay_all(&gen3, to_a3, &sink3, to_b3, &l3a);
    // As for call 1: B's first packet alone, then the rest after the install.
    relay_all(&sink3, to_b3, &gen3, to_a3, &l3b[..1]);
    std::thread::sleep(Duration::from_millis(100));
    relay_all(&sink3, to_b3, &gen3, to_a3, &l3b[1..]);
    socket_path += LATCH as u64 + 1;
    std::thread::sleep(Duration::from_millis(100));
    let long = Duration::from_secs(TIMEOUT_S + 2);
    let start = Instant::now();
    let mut sent3 = 0u16;
    while start.elapsed() < long {
        gen3.send_to(&rtp(LATCH as u16 + sent3, 0xa3, 10), to_a3)
            .expect("send");
        sent3 += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let got3 = drain_for(&sink3, usize::from(sent3), Duration::from_secs(2));
    assert_eq!(got3.len(), usize::from(sent3), "call 3 lost packets");
    let q = ng.cmd("query", &[("call-id", Value::from("c3"))]);
    assert_eq!(
        q.get("result").and_then(Value::as_str),
        Some("ok"),
        "call 3 ended while XDP carried its media: {q:?}"
    );
    assert_eq!(
        leg_stat(&q, "ftag", "packets"),
        (LATCH + usize::from(sent3)) as i64
    );
    let idle = Instant::now();
    let ended = loop {
        std::thread::sleep(Duration::from_millis(250));
        let q = ng.cmd("query", &[("call-id", Value::from("c3"))]);
        if q.get("result").and_then(Value::as_str) != Some("ok") {
            break idle.elapsed();
        }
        assert!(
            idle.elapsed() < Duration::from_secs(TIMEOUT_S + 4),
            "call 3 did not time out when silent"
        );
    };
    assert!(
        ended >= Duration::from_secs(TIMEOUT_S) - Duration::from_millis(600),
        "timed out after {ended:?}, timeout {TIMEOUT_S} s"
    );
    eprintln!(
        "xdp_offload: call 3 kept {long:?} by {sent3} XDP packets, timed out {ended:?} after silence"
    );

    // The shard's own figures: socket receives are the latching packets
    // only (plus slack for ones the program passed before a neighbour
    // entry); XDP figures have the rest.
    let log = gw.stop();
    let rx = stop_figure(&log, "rx");
    let xdp_packets = stop_figure(&log, "packets");
    let drops = stop_figure(&log, "src_drops");
    let installs = stop_figure(&log, "installs");
    let errors = stop_figure(&log, "map_errors");
    let direct = stop_figure(&log, "egress_direct");
    eprintln!(
        "xdp_offload: shard rx {rx} (socket path), xdp packets {xdp_packets}, src_drops {drops}, \
         installs {installs}, egress_direct {direct}"
    );
    let offloaded = (3 * N + MOVED + usize::from(sent3) + 2 * (LATCH - 1)) as u64;
    assert!(
        rx >= socket_path && rx <= socket_path + 10,
        "socket path saw {rx}, expected about {socket_path}"
    );
    assert!(
        xdp_packets + 10 >= offloaded && xdp_packets <= offloaded,
        "xdp packets {xdp_packets}, offloaded {offloaded}"
    );
    assert_eq!(
        rx + xdp_packets,
        socket_path + offloaded,
        "every packet once"
    );
    assert_eq!(drops, 2, "the spoof and the old source after the re-offer");
    assert_eq!(installs, 8, "three pairs, one again after the re-offer");
    assert_eq!(
        direct, 7,
        "every direction from the neighbour table but call 3's toward its routed sink"
    );
    assert_eq!(errors, 0);
    in_netns(&topo.gen, move || drop(pass));
}

/// The figure after `key: ` in the shard's AF_XDP counters line.
fn xsk_figure(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("xsk path"))?;
    let at = line.find(&format!("{key}: "))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Forwarding off in gw: one learning call, latched over the receive path
/// (sockets, or the AF_XDP sockets with `xsk_legs`), then `N` each way
/// through XDP with the egress from the shard's neighbour table.
fn run_forwarding_off(topo: &Topo, xsk_legs: bool) {
    let what = if xsk_legs {
        "socket-less legs"
    } else {
        "socket legs"
    };
    let mut pass = XdpRelay::load().expect("load XDP");
    in_netns(&topo.gen, || pass.attach_pass("xg0").map(|_| ())).expect("XDP_PASS on xg0");
    in_netns(&topo.sink, || pass.attach_pass("xs0").map(|_| ())).expect("XDP_PASS on xs0");

    let mut gw = start_gateway_with(topo, if xsk_legs { "xsk_legs = true\n" } else { "" });
    let mut ng = ng_client(topo, &mut gw);
    let log = gw.log();
    assert!(
        log.contains("media offload to XDP: active") && log.contains("forwarding is off"),
        "expected the offload active with forwarding off; log:\n{log}"
    );

    let gen = in_netns(&topo.gen, || endpoint("10.78.1.2:4000"));
    let (sink, cap) = in_netns(&topo.sink, || (endpoint("10.78.2.2:5000"), capture("xs0")));
    let (to_a, to_b) = setup(&mut ng, "f1", "10.78.1.2:4000", "10.78.2.2:5000", false);
    let latch_a: Vec<Vec<u8>> = (0..LATCH as u16).map(|i| rtp(i, 0xf1, 1)).collect();
    let latch_b: Vec<Vec<u8>> = (0..LATCH as u16).map(|i| rtp(i, 0xf2, 2)).collect();
    relay_all(&gen, to_a, &sink, to_b, &latch_a);
    // B's first packet latches B and the shard installs the pair; the rest
    // go through XDP (sent after the install, so no packet of the
    // receive path can arrive after a later one forwarded by XDP).
    relay_all(&sink, to_b, &gen, to_a, &latch_b[..1]);
    std::thread::sleep(Duration::from_millis(100));
    relay_all(&sink, to_b, &gen, to_a, &latch_b[1..]);
    let receive_path = LATCH as u64 + 1;
    // Past a re-validation pass, should the first look have missed a MAC.
    std::thread::sleep(Duration::from_millis(1500));

    let a_pkts: Vec<Vec<u8>> = (0..N as u16)
        .map(|i| rtp(LATCH as u16 + i, 0xf1, 3))
        .collect();
    let b_pkts: Vec<Vec<u8>> = (0..N as u16)
        .map(|i| rtp(LATCH as u16 + i, 0xf2, 4))
        .collect();
    relay_all(&gen, to_a, &sink, to_b, &a_pkts);
    let sink_v4 = SocketAddrV4::new("10.78.2.2".parse().unwrap(), 5000);
    let caps = captured_to(&cap, sink_v4, LATCH + N);
    assert!(caps.len() >= N, "captured {} of {}", caps.len(), LATCH + N);
    for (i, (p, want)) in caps[caps.len() - N..].iter().zip(&a_pkts).enumerate() {
        let (src, dst, payload) =
            check_ipv4_udp(p).unwrap_or_else(|e| panic!("{what}: packet {i}: {e}"));
        assert_eq!(SocketAddr::V4(src), to_b);
        assert_eq!(dst, sink_v4);
        assert_eq!(&payload, want, "{what}: packet {i} differs");
    }
    relay_all(&sink, to_b, &gen, to_a, &b_pkts);
    let q = ng.cmd("query", &[("call-id", Value::from("f1"))]);
    assert_eq!(leg_stat(&q, "ftag", "offloaded"), 1, "{q:?}");
    assert_eq!(leg_stat(&q, "ttag", "offloaded"), 1, "{q:?}");
    assert_eq!(leg_stat(&q, "ftag", "packets"), (LATCH + N) as i64, "{q:?}");
    assert_eq!(leg_stat(&q, "ttag", "packets"), (LATCH + N) as i64, "{q:?}");

    // The sink's MAC changes and gw's kernel learns it (as from a
    // gratuitous ARP): the shard's re-validation rewrites the installed
    // entry; frames to the old MAC would not reach the sink's stack.
    let new_mac = "02:78:00:00:00:99";
    sh(&[
        "ip", "-n", &topo.sink, "link", "set", "xs0", "address", new_mac,
    ])
    .expect("sink MAC");
    #[rustfmt::skip]
    sh(&["ip", "-n", &topo.gw, "neigh", "replace", "10.78.2.2", "lladdr", new_mac, "dev", "xgb", "nud", "stale"])
        .expect("gw neighbour");
    std::thread::sleep(Duration::from_millis(1600));
    let moved: Vec<Vec<u8>> = (0..MOVED as u16)
        .map(|i| rtp((LATCH + N) as u16 + i, 0xf1, 5))
        .collect();
    relay_all(&gen, to_a, &sink, to_b, &moved);

    let log = gw.stop();
    let rx = if xsk_legs {
        xsk_figure(&log, "rx").unwrap_or_else(|| panic!("no xsk path line:\n{log}"))
    } else {
        stop_figure(&log, "rx")
    };
    let xdp_packets = stop_figure(&log, "packets");
    let direct = stop_figure(&log, "egress_direct");
    let updates = stop_figure(&log, "egress_updates");
    eprintln!(
        "xdp_offload: forwarding off, {what}: receive path {rx}, xdp packets {xdp_packets}, \
         egress_direct {direct}, egress_updates {updates}"
    );
    let offloaded = (2 * N + MOVED + LATCH - 1) as u64;
    assert!(
        rx >= receive_path && rx <= receive_path + 10,
        "{what}: the receive path saw {rx}, expected about {receive_path} (the FIB lookup \
         refuses with forwarding off: without an egress every packet comes up)"
    );
    assert!(
        xdp_packets + 10 >= offloaded && xdp_packets <= offloaded,
        "{what}: xdp packets {xdp_packets}, offloaded {offloaded}"
    );
    assert_eq!(direct, 2, "{what}: both directions with a direct egress");
    assert_eq!(
        updates, 1,
        "{what}: the direction toward the sink rewritten"
    );
    drop(gen);
    in_netns(&topo.gen, move || drop(pass));
}
