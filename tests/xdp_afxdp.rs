//! AF_XDP on a veth topology the test builds itself (issue 7, item 3):
//!
//! ```text
//!   gen [xg0 10.79.1.2] <-> [xga 10.79.1.1] gw [xgb 10.79.2.1] <-> [xs0 10.79.2.2] sink
//!                              gw lo: 10.79.0.1 (the media address)
//! ```
//!
//! gen and sink route 10.79.0.1 via gw. The relay program runs on both gw
//! veths, XDP_PASS on the peers; TX checksum offload is off on gen and sink
//! (veth hands partial checksums to its peer otherwise).
//!
//! - `xsk_receives_to_user_and_transmits`: TO_USER entries steer a port to
//!   the AF_XDP socket of xga's queue 0; the test itself relays the frames
//!   out of xgb's socket with rewritten headers; the sink gets every
//!   payload bit-exact with valid checksums; every UMEM frame is back where
//!   it started.
//! - `gateway_relays_srtp_without_sockets`: the real gateway binary in gw's
//!   namespace, `datapath = "xdp"`; an SRTP<->RTP call over ng whose legs
//!   have no socket; decrypts bit-exact both ways.
//! - `ten_thousand_calls_without_ten_thousand_sockets`: 10,000 calls
//!   (40,000 ports) set up over ng with the open-file limit at 20,000; the
//!   gateway's descriptors stay few and traffic on every call arrives.
//!
//! Needs root, iproute2, ethtool and a build with the XDP program; skips
//! with the reason otherwise. Namespaces are named after the process id
//! and removed at the end, also on failure.

mod common;
mod netns;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use kolokol::media::xdp::frame::{self, Headers};
use kolokol::media::xdp::xsk::{RxDesc, Xsk, XskConfig, XskMode};
use kolokol::media::xdp::{self, XdpMaps, XdpRelay};
use netns::{big_rcvbuf, capture, check_ipv4_udp, in_netns, sh, Topo};

const GW_MEDIA: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const GEN_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 1, 2);
const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 2, 2);

fn build_topo(tag: &str) -> Result<Topo, String> {
    let t = Topo::veths(&format!("kaf{tag}"))?;
    let (gen, gw, sink) = (t.gen.as_str(), t.gw.as_str(), t.sink.as_str());
    #[rustfmt::skip]
    let steps: &[&[&str]] = &[
        &["ip", "-n", gen, "addr", "add", "10.79.1.2/24", "dev", "xg0"],
        &["ip", "-n", gw, "addr", "add", "10.79.1.1/24", "dev", "xga"],
        &["ip", "-n", gw, "addr", "add", "10.79.2.1/24", "dev", "xgb"],
        &["ip", "-n", gw, "addr", "add", "10.79.0.1/32", "dev", "lo"],
        &["ip", "-n", sink, "addr", "add", "10.79.2.2/24", "dev", "xs0"],
        &["ip", "-n", gen, "route", "add", "10.79.0.1/32", "via", "10.79.1.1"],
        &["ip", "-n", sink, "route", "add", "10.79.0.1/32", "via", "10.79.2.1"],
        &["ip", "netns", "exec", gen, "ethtool", "-K", "xg0", "tx", "off"],
        &["ip", "netns", "exec", sink, "ethtool", "-K", "xs0", "tx", "off"],
        // The offload's FIB lookups need forwarding on.
        &["ip", "netns", "exec", gw, "sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"],
    ];
    for s in steps {
        sh(s)?;
    }
    Ok(t)
}

/// Why this host cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces, XDP and AF_XDP need it)".into());
    }
    if !xdp::built_in() {
        return Some(
            "XDP not built in (install clang and libbpf-dev; scripts/test.sh does)".into(),
        );
    }
    for tool in ["ip", "ethtool"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// Captured UDP packets to `port` (others on the wire are skipped).
fn captured_to(fd: &std::os::fd::OwnedFd, port: u16, want: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 28 {
            let p = &buf[..n as usize];
            if p[9] == 17 && u16::from_be_bytes([p[22], p[23]]) == port {
                out.push(p.to_vec());
            }
        }
    }
    out
}

fn drain_udp(s: &UdpSocket, want: usize, wait: Duration) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_millis(100))).ok();
    while out.len() < want && Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((buf[..n].to_vec(), from));
        }
    }
    out
}

/// An RTP packet (PCMU, 160 bytes of payload) with sequence `seq`.
fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8).wrapping_mul(31)));
    p
}

/// The gw side of the direct test: the relay on both veths, XDP_PASS on
/// the peers, an XSK per gw veth (queue 0).
struct DirectGw {
    relay: XdpRelay,
    maps: XdpMaps,
    rx: Xsk,
    tx: Xsk,
}

#[test]
fn xsk_receives_to_user_and_transmits() {
    if let Some(why) = cannot_run() {
        return skip("xsk_receives_to_user_and_transmits", &why);
    }
    let topo = match build_topo("d") {
        Ok(t) => t,
        Err(e) => {
            return skip(
                "xsk_receives_to_user_and_transmits",
                &format!("cannot build the veth topology: {e}"),
            )
        }
    };
    const N: usize = 300;
    let local = SocketAddrV4::new(GW_MEDIA, 40000);
    let egress_src = SocketAddrV4::new(GW_MEDIA, 40002);
    let gen_src = SocketAddrV4::new(GEN_IP, 4000);
    let sink_dst = SocketAddrV4::new(SINK_IP, 5000);

    let gw = in_netns(&topo.gw, || -> Result<DirectGw, String> {
        let mut relay = XdpRelay::load().map_err(|e| e.to_string())?;
        relay.attach("xga").map_err(|e| e.to_string())?;
        relay.attach("xgb").map_err(|e| e.to_string())?;
        let mut maps = relay.shard_maps().map_err(|e| e.to_string())?;
        let cfg = XskConfig {
            frames: 256,
            frame_size: 2048,
            ring: 128,
        };
        let xga = xdp::ifindex("xga").ok_or("xga")?;
        let xgb = xdp::ifindex("xgb").ok_or("xgb")?;
        let rx = Xsk::open(xga, 0, cfg).map_err(|e| format!("XSK on xga: {e}"))?;
        let tx = Xsk::open(xgb, 0, cfg).map_err(|e| format!("XSK on xgb: {e}"))?;
        eprintln!(
            "xdp_afxdp: XSK mode {:?} (zero-copy refused: {:?})",
            rx.mode(),
            rx.zerocopy_refused()
        );
        maps.register_xsk(0, xga, 0, rx.fd())
            .map_err(|e| e.to_string())?;
        maps.register_xsk(1, xgb, 0, tx.fd())
            .map_err(|e| e.to_string())?;
        Ok(DirectGw {
            relay,
            maps,
            rx,
            tx,
        })
    })
    .expect("enter gw")
    .unwrap_or_else(|e| panic!("gw: {e}"));
    let mut gw = gw;
    assert_eq!(gw.rx.mode(), XskMode::Copy, "veth binds in copy mode");
    let gw_b_mac = in_netns(&topo.gw, || xdp::mac("xgb"))
        .unwrap()
        .expect("xgb mac");
    let (cap, sink_sock, sink_mac) = in_netns(&topo.sink, || {
        let cap = capture("xs0").expect("capture");
        let sock = UdpSocket::bind(sink_dst).expect("sink socket");
        big_rcvbuf(sock.as_raw_fd());
        (cap, sock, xdp::mac("xs0").expect("xs0 mac"))
    })
    .expect("enter sink");
    in_netns(&topo.sink, || gw.relay.attach_pass("xs0").map(|_| ()))
        .expect("enter sink")
        .expect("XDP_PASS on xs0");
    in_netns(&topo.gen, || gw.relay.attach_pass("xg0").map(|_| ()))
        .expect("enter gen")
        .expect("XDP_PASS on xg0");
    let gen_sock =
        in_netns(&topo.gen, || UdpSocket::bind(gen_src).expect("gen socket")).expect("enter gen");
    // Resolve gw's MAC on gen (no entry for :9: the stack answers).
    gen_sock.send_to(b"arp", (GW_MEDIA, 9)).expect("prime");
    std::thread::sleep(Duration::from_millis(200));

    gw.maps.insert_to_user(local).expect("TO_USER entry");
    let start_rx = gw.rx.frames();
    let start_tx = gw.tx.frames();
    let stats0 = gw.relay.stats().unwrap();

    let sent: Vec<Vec<u8>> = (0..N as u16).map(|s| rtp(s, 0x1234_5678)).collect();
    let mut relayed = 0usize;
    let mut descs: Vec<RxDesc> = Vec::with_capacity(64);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut next = 0usize;
    while relayed < N && Instant::now() < deadline {
        // Send in bursts of 16, then relay what arrived.
        for p in sent.iter().skip(next).take(16) {
            gen_sock.send_to(p, local).expect("send");
        }
        next = (next + 16).min(N);
        std::thread::sleep(Duration::from_millis(2));
        descs.clear();
        gw.rx.recv(64, &mut descs);
        for d in &descs {
            let f = &gw.rx.frame_mut(d.addr)[..d.len as usize];
            let p = frame::parse(f).expect("parses");
            assert_eq!(p.dst, local);
            assert_eq!(p.src, gen_src);
            let payload = f[frame::PAYLOAD_OFF..frame::PAYLOAD_OFF + p.payload_len].to_vec();
            let addr = gw.tx.tx_frame().expect("a free tx frame");
            let out = gw.tx.frame_mut(addr);
            out[frame::PAYLOAD_OFF..frame::PAYLOAD_OFF + payload.len()].copy_from_slice(&payload);
            let h = Headers {
                dst_mac: sink_mac,
                src_mac: gw_b_mac,
                src: egress_src,
                dst: sink_dst,
                tos: 0,
                ttl: 64,
            };
            let len = frame::write_headers(out, &h, payload.len()).expect("fits");
            gw.tx.send(addr, len as u32);
            relayed += 1;
        }
        gw.rx.refill(&descs);
        gw.tx.kick();
    }
    assert_eq!(relayed, N, "XSK received {relayed} of {N}");
    let got = drain_udp(&sink_sock, N, Duration::from_secs(3));
    assert_eq!(got.len(), N, "sink received {} of {N}", got.len());
    for ((payload, from), want) in got.iter().zip(&sent) {
        assert_eq!(payload, want, "payload differs");
        assert_eq!(*from, SocketAddr::V4(egress_src));
    }
    let caps = captured_to(&cap, sink_dst.port(), N);
    assert_eq!(caps.len(), N, "captured {} of {N}", caps.len());
    for (p, want) in caps.iter().zip(&sent) {
        let (src, dst, payload) = check_ipv4_udp(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((src, dst), (egress_src, sink_dst));
        assert_eq!(&payload, want);
    }
    // Every frame back where it started (completions may trail a little).
    let end = Instant::now() + Duration::from_secs(2);
    while gw.tx.frames() != start_tx && Instant::now() < end {
        gw.tx.reap();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(gw.rx.frames(), start_rx, "rx frames leaked");
    assert_eq!(gw.tx.frames(), start_tx, "tx frames leaked");
    assert_eq!(gw.rx.frames().total(), 256);
    assert_eq!(gw.tx.counters.tx, N as u64);
    assert_eq!(gw.tx.counters.tx_completed, N as u64);
    let stats = gw.relay.stats().unwrap();
    assert_eq!(stats.to_user - stats0.to_user, N as u64, "{stats:?}");
    let ks = gw.rx.kernel_stats().expect("XDP_STATISTICS");
    assert_eq!(ks.rx_dropped, 0);
    eprintln!(
        "xdp_afxdp: {N} frames via the XSK, rewritten and sent; rx {:?} tx {:?}; stats {stats:?}",
        gw.rx.counters, gw.tx.counters
    );

    // Without the entry, the port goes to gw's stack (no XSK delivery).
    gw.maps.remove(local).expect("remove");
    gen_sock.send_to(&sent[0], local).expect("send");
    std::thread::sleep(Duration::from_millis(200));
    descs.clear();
    assert_eq!(gw.rx.recv(64, &mut descs), 0, "delivered without an entry");
    drop(topo_detach(&topo, gw));
}

/// Detach (in gw's namespace) before the namespaces go.
fn topo_detach(topo: &Topo, gw: DirectGw) -> Result<(), String> {
    in_netns(&topo.gw, move || drop(gw))
}

// ---- the gateway binary in gw's namespace -------------------------------

/// The gateway process (`ip netns exec` execs it: the child's pid is the
/// gateway's); killed on drop if still running.
struct GwProc {
    child: std::process::Child,
    log: std::path::PathBuf,
    conf: std::path::PathBuf,
}

impl GwProc {
    fn start(ns: &str, tag: &str, calls_max: usize, port_min: u16, port_max: u16) -> GwProc {
        let dir = std::env::temp_dir();
        let pid = std::process::id();
        let conf = dir.join(format!("kolokol-afxdp-{tag}-{pid}.toml"));
        let log = dir.join(format!("kolokol-afxdp-{tag}-{pid}.log"));
        let toml = format!(
            "[shards]\ncount = 1\n\
             [sip]\nenabled = false\n\
             [api]\nenabled = false\n\
             [ng]\nlisten = \"127.0.0.1:22299\"\n\
             [media]\naddress = \"10.79.0.1\"\nport_min = {port_min}\nport_max = {port_max}\n\
             calls_max = {calls_max}\ntimeout_s = 600\n\
             datapath = \"xdp\"\nxdp_interface = [\"xga\", \"xgb\"]\nxsk_legs = true\n"
        );
        std::fs::write(&conf, toml).expect("write config");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_kolokol"))
            .arg("run")
            .arg("--config")
            .arg(&conf)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start the gateway");
        GwProc { child, log, conf }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Open descriptors of the gateway process.
    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGTERM, wait (bounded), return the log.
    fn stop(mut self) -> String {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for GwProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.conf);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An ng client whose socket lives in gw's namespace.
struct NgClient {
    sock: UdpSocket,
    to: SocketAddr,
    n: u64,
}

impl NgClient {
    fn new(ns: &str) -> NgClient {
        let sock =
            in_netns(ns, || UdpSocket::bind("127.0.0.1:0").expect("ng socket")).expect("enter gw");
        big_rcvbuf(sock.as_raw_fd());
        NgClient {
            sock,
            to: "127.0.0.1:22299".parse().unwrap(),
            n: 0,
        }
    }

    /// Wait until the gateway answers a ping.
    fn wait_ready(&mut self, gw: &mut GwProc) {
        let end = Instant::now() + Duration::from_secs(30);
        self.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok();
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            if let Ok(Some(st)) = gw.child.try_wait() {
                panic!("gateway exited ({st}): {}", gw.log_text());
            }
            let _ = self.sock.send_to(b"p1 d7:command4:pinge", self.to);
            if let Ok(n) = self.sock.recv(&mut buf) {
                if buf[..n].windows(4).any(|w| w == b"pong") {
                    return;
                }
            }
        }
        panic!("gateway did not answer ng: {}", gw.log_text());
    }

    fn encode(&mut self, v: &Value) -> (String, Vec<u8>) {
        self.n += 1;
        let cookie = format!("x{}_{}", std::process::id(), self.n);
        let mut msg = cookie.clone().into_bytes();
        msg.push(b' ');
        v.encode(&mut msg);
        (cookie, msg)
    }

    fn cmd(&mut self, command: &str, pairs: &[(&str, Value)]) -> Value {
        let mut d = Value::dict();
        d.insert("command", command);
        for (k, v) in pairs {
            d.insert(k, v.clone());
        }
        let (cookie, msg) = self.encode(&d);
        self.sock.send_to(&msg, self.to).expect("ng send");
        self.sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .ok();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.sock.recv(&mut buf).expect("ng reply");
            let (c, body) = kolokol::control::ng::split_cookie(&buf[..n]).expect("cookie");
            if c == cookie.as_bytes() {
                return kolokol::control::bencode::decode(body).expect("bencode");
            }
        }
    }
}

use kolokol::control::bencode::Value;
use kolokol::media::srtp::{SrtpContext, SrtpSuite};
use kolokol::sdp::crypto::CryptoAttr;
use kolokol::sdp::Sdp;

const SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

fn savp_sdp(addr: SocketAddrV4, key_salt: &[u8]) -> String {
    let line = CryptoAttr {
        tag: 1,
        suite: SUITE.sdes_name().into(),
        key_salt: key_salt.to_vec(),
        lifetime: None,
    }
    .to_line();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{line}\r\na=rtcp-mux\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

fn reply_sdp(v: &Value) -> Sdp {
    assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"), "{v:?}");
    Sdp::parse(v.get("sdp").and_then(Value::as_bytes).unwrap()).unwrap()
}

fn srtp_ctx(key_salt: &[u8]) -> SrtpContext {
    SrtpContext::new(SUITE, &key_salt[..16], &key_salt[16..]).unwrap()
}

/// Whether anything in namespace `ns` has a UDP socket bound to `port`.
fn udp_bound(ns: &str, port: u16) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ss", "-uan"])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().any(|l| {
        l.split_whitespace()
            .any(|f| f.ends_with(&format!(":{port}")))
    })
}

/// A figure `key: N` from the shard's "xsk path" line at stop.
fn xsk_figure(log: &str, key: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains("xsk path"))?;
    let at = line.find(&format!("{key}: "))? + key.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Prime the neighbour tables: gen (and with `sink`, the sink) send to a
/// port of gw's media address without an entry (gw's stack answers).
fn prime(topo: &Topo, sink: bool) {
    let all = [(&topo.gen, GEN_IP), (&topo.sink, SINK_IP)];
    for (ns, ip) in &all[..if sink { 2 } else { 1 }] {
        in_netns(ns, || {
            let s = UdpSocket::bind((*ip, 0)).expect("prime socket");
            let _ = s.send_to(b"arp", (GW_MEDIA, 9));
        })
        .expect("enter");
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// XDP_PASS on the receiving peers (a program of the test's own).
fn pass_on_peers(topo: &Topo) -> XdpRelay {
    let mut r = XdpRelay::load().expect("load");
    in_netns(&topo.gen, || r.attach_pass("xg0").map(|_| ()))
        .expect("enter gen")
        .expect("XDP_PASS on xg0");
    in_netns(&topo.sink, || r.attach_pass("xs0").map(|_| ()))
        .expect("enter sink")
        .expect("XDP_PASS on xs0");
    r
}

#[test]
fn gateway_relays_srtp_without_sockets() {
    if let Some(why) = cannot_run() {
        return skip("gateway_relays_srtp_without_sockets", &why);
    }
    let topo = match build_topo("s") {
        Ok(t) => t,
        Err(e) => {
            return skip(
                "gateway_relays_srtp_without_sockets",
                &format!("cannot build the veth topology: {e}"),
            )
        }
    };
    const N: u16 = 100;
    let _pass = pass_on_peers(&topo);
    // The sink is not primed: gw does not know its MAC when the first
    // packets toward it leave (they go through the kernel's stack).
    prime(&topo, false);
    let a_addr = SocketAddrV4::new(GEN_IP, 4000);
    let b_addr = SocketAddrV4::new(SINK_IP, 5000);
    let (a, cap_a) = in_netns(&topo.gen, || {
        let s = UdpSocket::bind(a_addr).expect("gen socket");
        big_rcvbuf(s.as_raw_fd());
        (s, capture("xg0").expect("capture on xg0"))
    })
    .expect("enter gen");
    let (b, cap_b) = in_netns(&topo.sink, || {
        let s = UdpSocket::bind(b_addr).expect("sink socket");
        big_rcvbuf(s.as_raw_fd());
        (s, capture("xs0").expect("capture on xs0"))
    })
    .expect("enter sink");

    let mut gw = GwProc::start(&topo.gw, "srtp", 64, 30000, 30999);
    let mut ng = NgClient::new(&topo.gw);
    ng.wait_ready(&mut gw);
    let fds_before = gw.fds();

    let a_key: Vec<u8> = (0..30u8).map(|i| i.wrapping_mul(13) ^ 0x5a).collect();
    let offer = ng.cmd(
        "offer",
        &[
            ("call-id", Value::from("afxdp-srtp")),
            ("from-tag", Value::from("ftag")),
            ("transport-protocol", Value::from("RTP/AVP")),
            ("sdp", Value::from(savp_sdp(a_addr, &a_key))),
        ],
    );
    let to_b = reply_sdp(&offer);
    assert_eq!(to_b.media[0].proto, "RTP/AVP");
    let answer = ng.cmd(
        "answer",
        &[
            ("call-id", Value::from("afxdp-srtp")),
            ("from-tag", Value::from("ftag")),
            ("to-tag", Value::from("ttag")),
            (
                "sdp",
                Value::from(common::sdp_for(SocketAddr::V4(b_addr), "a=rtcp-mux\r\n")),
            ),
        ],
    );
    let to_a = reply_sdp(&answer);
    let ours: Vec<CryptoAttr> = to_a.media[0].crypto().map(Result::unwrap).collect();
    assert_eq!(ours.len(), 1, "{to_a:?}");
    let a_dst = SocketAddrV4::new(GW_MEDIA, to_a.media[0].port);
    let b_dst = SocketAddrV4::new(GW_MEDIA, to_b.media[0].port);
    assert_eq!(to_a.media[0].address, std::net::IpAddr::V4(GW_MEDIA));
    eprintln!("xdp_afxdp: SRTP leg on {a_dst}, plain leg on {b_dst}");

    // No socket for either leg, and no descriptor more than before.
    assert!(!udp_bound(&topo.gw, a_dst.port()), "a socket on {a_dst}");
    assert!(!udp_bound(&topo.gw, b_dst.port()), "a socket on {b_dst}");
    let fds_call = gw.fds();
    assert_eq!(fds_call, fds_before, "the call opened descriptors");

    // A (SRTP) -> B (plain).
    let mut a_tx = srtp_ctx(&a_key);
    let mut sent = Vec::new();
    for seq in 0..N {
        let plain = rtp(seq, 0xa11ce);
        let mut buf = [0u8; 2048];
        buf[..plain.len()].copy_from_slice(&plain);
        let n = a_tx.protect_rtp(&mut buf, plain.len()).unwrap();
        a.send_to(&buf[..n], a_dst).expect("send");
        sent.push(plain);
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = drain_udp(&b, N as usize, Duration::from_secs(5));
    assert_eq!(
        got.len(),
        N as usize,
        "sink got {} of {N}: {}",
        got.len(),
        gw.log_text()
    );
    for ((p, from), want) in got.iter().zip(&sent) {
        assert_eq!(p, want, "decrypted payload differs");
        assert_eq!(*from, SocketAddr::V4(b_dst));
    }
    let caps = captured_to(&cap_b, b_addr.port(), N as usize);
    assert_eq!(caps.len(), N as usize);
    for (p, want) in caps.iter().zip(&sent) {
        let (src, dst, payload) = check_ipv4_udp(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((src, dst), (b_dst, b_addr));
        assert_eq!(&payload, want);
    }

    // B (plain) -> A (SRTP under the gateway's key).
    let mut a_rx = srtp_ctx(&ours[0].key_salt);
    let mut sent = Vec::new();
    for seq in 0..N {
        let plain = rtp(seq, 0xb0b);
        b.send_to(&plain, b_dst).expect("send");
        sent.push(plain);
        std::thread::sleep(Duration::from_millis(2));
    }
    let got = drain_udp(&a, N as usize, Duration::from_secs(5));
    assert_eq!(got.len(), N as usize, "gen got {} of {N}", got.len());
    for ((p, from), want) in got.iter().zip(&sent) {
        assert_eq!(*from, SocketAddr::V4(a_dst));
        assert_eq!(p.len(), want.len() + 10, "an 80-bit tag");
        let mut buf = p.clone();
        buf.resize(2048, 0);
        let n = a_rx
            .unprotect_rtp(&mut buf, p.len())
            .expect("authenticates");
        assert_eq!(&buf[..n], &want[..], "decrypts bit-exact");
    }
    let caps = captured_to(&cap_a, a_addr.port(), N as usize);
    assert_eq!(caps.len(), N as usize);
    for p in &caps {
        let (src, dst, _) = check_ipv4_udp(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((src, dst), (a_dst, a_addr));
    }

    // Delete: the entries go (the ports reach gw's stack, which has no
    // socket there either: nothing comes back).
    let del = ng.cmd(
        "delete",
        &[
            ("call-id", Value::from("afxdp-srtp")),
            ("from-tag", Value::from("ftag")),
        ],
    );
    assert_eq!(del.get("result").and_then(Value::as_str), Some("ok"));
    b.send_to(&rtp(999, 0xb0b), b_dst).expect("send");
    assert!(drain_udp(&a, 1, Duration::from_millis(500)).is_empty());

    let log = gw.stop();
    let rx = xsk_figure(&log, "rx").unwrap_or(0);
    let tx = xsk_figure(&log, "tx").unwrap_or(0);
    eprintln!(
        "xdp_afxdp: gateway fds {fds_before} before, {fds_call} with the call; xsk rx {rx} tx {tx}"
    );
    assert!(rx >= 2 * u64::from(N), "XSK rx {rx}: {log}");
    // The unknown sink: missed, sent through the kernel, then learned.
    let missed = xsk_figure(&log, "neigh_miss").unwrap_or(0);
    let via_stack = xsk_figure(&log, "via_stack").unwrap_or(0);
    assert_eq!(tx + via_stack, 2 * u64::from(N), "XSK tx {tx}: {log}");
    eprintln!("xdp_afxdp: neighbour misses {missed}, via the stack {via_stack}");
    assert!(missed >= 1 && via_stack == missed, "{log}");
    assert!(
        via_stack < u64::from(N),
        "the sink was never learned: {log}"
    );
    assert_eq!(xsk_figure(&log, "miss_dropped"), Some(0), "{log}");
}

impl NgClient {
    /// Send `reqs` with up to `window` outstanding; the replies, in order.
    fn pipelined(&mut self, reqs: &[Value], window: usize) -> Vec<Value> {
        let mut out: Vec<Option<Value>> = (0..reqs.len()).map(|_| None).collect();
        let mut by_cookie = std::collections::HashMap::new();
        let mut next = 0;
        let mut done = 0;
        let mut buf = vec![0u8; 65536];
        self.sock
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok();
        while done < reqs.len() {
            while next < reqs.len() && next - done < window {
                let (cookie, msg) = self.encode(&reqs[next]);
                self.sock.send_to(&msg, self.to).expect("ng send");
                by_cookie.insert(cookie.into_bytes(), next);
                next += 1;
            }
            let n = self.sock.recv(&mut buf).expect("ng reply within 10 s");
            let (c, body) = kolokol::control::ng::split_cookie(&buf[..n]).expect("cookie");
            if let Some(i) = by_cookie.remove(c) {
                out[i] = Some(kolokol::control::bencode::decode(body).expect("bencode"));
                done += 1;
            }
        }
        out.into_iter().map(Option::unwrap).collect()
    }
}

/// CPU time of every thread of process `pid`, ns (schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Counts datagrams per SSRC (the call index) on `sock` until `stop`.
fn counter(
    sock: UdpSocket,
    calls: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u32>> {
    std::thread::spawn(move || {
        let mut per = vec![0u32; calls];
        let mut buf = [0u8; 2048];
        sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = sock.recv(&mut buf) {
                if n >= 12 {
                    let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
                    if let Some(c) = per.get_mut(ssrc) {
                        *c += 1;
                    }
                }
            }
        }
        per
    })
}

/// Send `rounds` packets to each of `dsts` (SSRC = index), at about
/// `pps` packets per second.
fn send_rounds(sock: &UdpSocket, dsts: &[SocketAddrV4], rounds: u16, pps: u64) {
    let start = Instant::now();
    let mut k: u64 = 0;
    for r in 0..rounds {
        for (i, d) in dsts.iter().enumerate() {
            sock.send_to(&rtp(r, i as u32), d).expect("send");
            k += 1;
            if k.is_multiple_of(64) {
                let due = start + Duration::from_micros(k * 1_000_000 / pps);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
        }
    }
}

#[test]
fn ten_thousand_calls_without_ten_thousand_sockets() {
    if let Some(why) = cannot_run() {
        return skip("ten_thousand_calls_without_ten_thousand_sockets", &why);
    }
    let topo = match build_topo("t") {
        Ok(t) => t,
        Err(e) => {
            return skip(
                "ten_thousand_calls_without_ten_thousand_sockets",
                &format!("cannot build the veth topology: {e}"),
            )
        }
    };
    const CALLS: usize = 10_000;
    const ROUNDS: u16 = 3;
    // KOLOKOL_AFXDP_PPS raises the rate for a measurement run.
    let pps: u64 = std::env::var("KOLOKOL_AFXDP_PPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8_000);
    let t0 = Instant::now();
    let _pass = pass_on_peers(&topo);
    prime(&topo, true);
    let a_addr = SocketAddrV4::new(GEN_IP, 4000);
    let b_addr = SocketAddrV4::new(SINK_IP, 5000);
    let a = in_netns(&topo.gen, || UdpSocket::bind(a_addr).expect("gen socket")).unwrap();
    let b = in_netns(&topo.sink, || UdpSocket::bind(b_addr).expect("sink socket")).unwrap();
    big_rcvbuf(a.as_raw_fd());
    big_rcvbuf(b.as_raw_fd());

    // 42,000 ports: 10,000 calls x 2 legs x (RTP + RTCP) = 40,000.
    let mut gw = GwProc::start(&topo.gw, "10k", CALLS + 100, 20000, 61999);
    let mut ng = NgClient::new(&topo.gw);
    ng.wait_ready(&mut gw);
    let fds_before = gw.fds();
    // SAFETY: reading our own limit.
    let nofile = unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_max
    };

    let sdp_a = common::sdp_for(SocketAddr::V4(a_addr), "");
    let sdp_b = common::sdp_for(SocketAddr::V4(b_addr), "");
    let req = |cmd: &str, i: usize, sdp: &str| {
        let mut d = Value::dict();
        d.insert("command", cmd);
        d.insert("call-id", format!("afxdp-{i}").as_str());
        d.insert("from-tag", "ftag");
        if cmd == "answer" {
            d.insert("to-tag", "ttag");
        }
        d.insert("sdp", sdp);
        d
    };
    let offers: Vec<Value> = (0..CALLS).map(|i| req("offer", i, &sdp_a)).collect();
    let answers: Vec<Value> = (0..CALLS).map(|i| req("answer", i, &sdp_b)).collect();
    let t_setup = Instant::now();
    let to_b = ng.pipelined(&offers, 64);
    let to_a = ng.pipelined(&answers, 64);
    let setup = t_setup.elapsed();
    let port = |v: &Value| reply_sdp(v).media[0].port;
    let a_dsts: Vec<SocketAddrV4> = to_a
        .iter()
        .map(|v| SocketAddrV4::new(GW_MEDIA, port(v)))
        .collect();
    let b_dsts: Vec<SocketAddrV4> = to_b
        .iter()
        .map(|v| SocketAddrV4::new(GW_MEDIA, port(v)))
        .collect();
    let mut all: Vec<u16> = a_dsts.iter().chain(&b_dsts).map(|d| d.port()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 2 * CALLS, "distinct RTP ports");
    let fds_calls = gw.fds();
    eprintln!(
        "xdp_afxdp: {CALLS} calls set up over ng in {setup:?}; gateway fds {fds_before} -> {fds_calls} (limit {nofile})"
    );
    // 40,000 ports allocated; a socket each would need 40,000 descriptors.
    assert!(
        fds_calls < 1000 && fds_calls <= fds_before + 8,
        "gateway holds {fds_calls} descriptors"
    );
    assert!(
        (nofile as usize) < 4 * CALLS,
        "the test means a limit below 40,000 ports"
    );

    // Traffic both ways on every call.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let at_sink = counter(b.try_clone().unwrap(), CALLS, stop.clone());
    let at_gen = counter(a.try_clone().unwrap(), CALLS, stop.clone());
    let t_traffic = Instant::now();
    // gen -> sink first: every packet through the AF_XDP path (leg B
    // has not latched yet, so nothing is offloaded) and measured.
    let cpu0 = cpu_ns(gw.pid());
    send_rounds(&a, &a_dsts, ROUNDS, pps);
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_ns(gw.pid()).saturating_sub(cpu0);
    // sink -> gen: the first round latches leg B and the pair is offloaded
    // to the XDP program (FORWARD entries replacing TO_USER); the next
    // rounds go through XDP.
    send_rounds(&b, &b_dsts, ROUNDS, pps);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sink = at_sink.join().unwrap();
    let gen = at_gen.join().unwrap();
    let traffic = t_traffic.elapsed();
    let sent = (CALLS * usize::from(ROUNDS)) as f64;
    for (name, per) in [("sink", &sink), ("gen", &gen)] {
        let got: u64 = per.iter().map(|&c| u64::from(c)).sum();
        let silent = per.iter().filter(|&&c| c == 0).count();
        let loss = 1.0 - got as f64 / sent;
        eprintln!(
            "xdp_afxdp: {name} received {got} of {sent} ({:.4}% loss), {silent} calls silent",
            loss * 100.0
        );
        assert!(loss < 0.001, "{name}: loss {:.4}%", loss * 100.0);
        assert!(got as f64 <= sent, "{name}: duplicates");
    }
    eprintln!(
        "xdp_afxdp: gateway CPU {:.1} ms for {sent} packets relayed through AF_XDP at {pps}/s: {:.2} us per packet (all threads, idle wake-ups included)",
        cpu as f64 / 1e6,
        cpu as f64 / 1e3 / sent
    );
    let fds_traffic = gw.fds();
    let log = gw.stop();
    eprintln!(
        "xdp_afxdp: traffic {traffic:?}, fds during traffic {fds_traffic}, whole test {:?}; {}",
        t0.elapsed(),
        log.lines().find(|l| l.contains("xsk path")).unwrap_or("")
    );
    // The offload's own line: "xdp installs N packets M ...".
    let xdp_line = log
        .lines()
        .find(|l| l.contains("xdp installs"))
        .unwrap_or_default();
    eprintln!("xdp_afxdp: {xdp_line}");
    let figure = |key: &str| -> u64 {
        xdp_line
            .split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let xsk_rx = xsk_figure(&log, "rx").unwrap_or(0);
    let offloaded = figure("packets");
    assert_eq!(figure("installs"), 2 * CALLS as u64, "every pair offloaded");
    assert!(xsk_rx >= (sent * 1.3) as u64, "xsk rx {xsk_rx}");
    assert!(
        offloaded >= (sent * 0.6) as u64,
        "rounds 2 and 3 of sink -> gen through XDP: {offloaded}"
    );
}
