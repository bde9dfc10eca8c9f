//! `xdpcost` — the XDP relay program's own cost per packet (issue 7).
//!
//! Loads the relay program ([`XdpRelay::load`]), installs one relay entry
//! and runs the program with `BPF_PROG_TEST_RUN` on a forwarded RTP frame,
//! as if it had arrived on `--in`. The entry's rewrite is an identity: it
//! is keyed by the frame's destination (`--dst`), expects its source
//! (`--src`, strict) and rewrites source and destination to those same
//! values, with the full incremental checksum update, then sends out of
//! `--out`. The kernel reruns the program on the same buffer (non-live) or
//! on recycled pages that keep what the last run wrote (live frames), so a
//! real address change would make every later run miss the entry; with the
//! identity every run takes the forwarding path and does the same work.
//!
//! - **non-live**: the program alone, nothing leaves (the kernel's mean time
//!   per run; the action must be XDP_REDIRECT or XDP_TX);
//! - **live** (`BPF_F_TEST_XDP_LIVE_FRAMES`): every run's frame is really
//!   built and sent where the program sends it (out of `--out`, into the
//!   veth peer), so the time per run includes the redirect and the veth
//!   transmit, not the receiver's work.
//!
//! Run it inside the namespace that holds `--in` and `--out` (e.g. `ip netns
//! exec gw xdpcost ...`); the veth peer of `--out` needs an XDP program (or
//! GRO) to accept redirected frames, and with `--fib` the namespace needs
//! forwarding on `--in` (the kernel's FIB lookup from XDP refuses
//! otherwise). With `--verify-netns NS` a UDP socket bound to `--dst` in
//! namespace NS first counts what a small live run delivered, so the
//! figure is known to be for frames that really arrive with valid
//! checksums.
//!
//! ```text
//! ip netns exec gw taskset -c 0 xdpcost --in xga --out xgb --peer-mac 02:..:0b \
//!     --src 10.81.0.1:16000 --dst 10.82.0.1:16000 --verify-netns sink \
//!     --repeat 2000000 --rounds 5
//! ```
//!
//! Exit status: 0 measured, 1 could not run, 2 bad arguments.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use kolokol::media::xdp::{self, Egress, XdpEntry, XdpRelay, LIVE_BATCH_MAX};
use serde::Serialize;

const USAGE: &str = "\
usage: xdpcost --in IFACE --out IFACE (--peer-mac MAC | --fib) --src A:P --dst A:P [options]

  --in IFACE          interface the frame arrives on (its MAC is the frame's destination)
  --out IFACE         egress interface of the entry
  --peer-mac MAC      next hop's MAC on --out (the entry carries the egress)
  --fib               no egress in the entry: the program asks the FIB (needs a
                      resolved neighbour)
  --src A:P           the frame's source (checked, strict; rewritten to itself)
  --dst A:P           the frame's destination: the entry's key (rewritten to itself)
  --payload B         UDP payload bytes (default 172: RTP header + 160)
  --repeat N          runs per round (default 1000000, at most 100000000)
  --rounds R          rounds of non-live then live (default 5, at most 100)
  --batch B           live frames per batch (default 64, 1..=256)
  --verify-netns NS   first check that live frames arrive: a UDP socket bound to
                      --dst in namespace NS counts a 200-frame live run
  --json FILE         write the report as JSON
";

#[derive(Debug)]
struct Args {
    ingress: String,
    egress: String,
    peer_mac: Option<[u8; 6]>,
    fib: bool,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: usize,
    repeat: u32,
    rounds: usize,
    batch: u32,
    verify_netns: Option<String>,
    json: Option<String>,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut ingress = None;
    let mut egress = None;
    let mut peer_mac = None;
    let mut fib = false;
    let (mut src, mut dst) = (None, None);
    let mut payload = 172usize;
    let mut repeat = 1_000_000u32;
    let mut rounds = 5usize;
    let mut batch = 64u32;
    let mut verify_netns = None;
    let mut json = None;
    let mut it = argv.iter();
    fn addr(k: &str, v: &str) -> Result<SocketAddrV4, String> {
        v.parse()
            .map_err(|_| format!("{k}: expected IPv4:port, got {v:?}"))
    }
    fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("{k}: bad value {v:?}"))
    }
    while let Some(k) = it.next() {
        if k == "--fib" {
            fib = true;
            continue;
        }
        if k == "-h" || k == "--help" {
            return Err(String::new());
        }
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--in" => ingress = Some(v.clone()),
            "--out" => egress = Some(v.clone()),
            "--peer-mac" => {
                peer_mac = Some(xdp::parse_mac(v).ok_or_else(|| format!("--peer-mac: {v:?}"))?)
            }
            "--src" => src = Some(addr(k, v)?),
            "--dst" => dst = Some(addr(k, v)?),
            "--payload" => payload = num(k, v)?,
            "--repeat" => repeat = num(k, v)?,
            "--rounds" => rounds = num(k, v)?,
            "--batch" => batch = num(k, v)?,
            "--verify-netns" => verify_netns = Some(v.clone()),
            "--json" => json = Some(v.clone()),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    let need = |o: Option<SocketAddrV4>, k: &str| o.ok_or_else(|| format!("{k} is required"));
    let a = Args {
        ingress: ingress.ok_or("--in is required")?,
        egress: egress.ok_or("--out is required")?,
        peer_mac,
        fib,
        src: need(src, "--src")?,
        dst: need(dst, "--dst")?,
        payload,
        repeat,
        rounds,
        batch,
        verify_netns,
        json,
    };
    if a.peer_mac.is_some() == a.fib {
        return Err("give exactly one of --peer-mac and --fib".into());
    }
    if !(12..=1400).contains(&a.payload) {
        return Err("--payload must be 12..=1400".into());
    }
    if a.repeat == 0 || a.repeat > 100_000_000 {
        return Err("--repeat must be 1..=100000000".into());
    }
    if a.rounds == 0 || a.rounds > 100 {
        return Err("--rounds must be 1..=100".into());
    }
    if !(1..=LIVE_BATCH_MAX).contains(&a.batch) {
        return Err(format!("--batch must be 1..={LIVE_BATCH_MAX}"));
    }
    if let Some(ns) = &a.verify_netns {
        if ns.is_empty() || ns.contains('/') || ns == "." || ns == ".." {
            return Err(format!("--verify-netns: bad name {ns:?}"));
        }
    }
    Ok(a)
}

/// One's-complement sum of 16-bit big-endian words.
fn csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in *p {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet + IPv4 + UDP frame from `src` to `dst` with an RTP-looking
/// payload of `payload` bytes, both checksums valid.
fn frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: usize,
) -> Vec<u8> {
    let udp_len = 8 + payload;
    let ip_len = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = csum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut body = vec![0u8; payload];
    body[0] = 0x80; // RTP v2, PT 0
    for (i, b) in body.iter_mut().enumerate().skip(12) {
        *b = i as u8;
    }
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&(udp_len as u16).to_be_bytes());
    let c = match csum(&[&pseudo, &udp, &body]) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&udp);
    f.extend_from_slice(&body);
    f
}

/// A UDP socket bound to `addr` in network namespace `ns` (opened on a
/// thread that entered it; the socket stays there).
fn socket_in(ns: &str, addr: SocketAddrV4) -> Result<UdpSocket, String> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: a valid namespace fd; setns changes only this thread.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
            }
            let sock = UdpSocket::bind(addr).map_err(|e| format!("bind {addr} in {ns}: {e}"))?;
            let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
            Ok(sock)
        })
        .join()
        .map_err(|_| "namespace thread panicked".to_string())?
    })
}

#[derive(Serialize)]
struct Round {
    nonlive_ns: f64,
    live_ns: f64,
}

#[derive(Serialize)]
struct Report {
    tool: &'static str,
    frame_bytes: usize,
    ingress: String,
    egress: String,
    egress_from: &'static str,
    action: u32,
    action_name: &'static str,
    repeat: u32,
    live_batch: u32,
    rounds: Vec<Round>,
    nonlive_ns_median: f64,
    live_ns_median: f64,
    nonlive_ns_range: [f64; 2],
    live_ns_range: [f64; 2],
    entry_packets: u64,
    runs_total: u64,
    forwarded: u64,
    redirect_errors: u64,
    verify_sent: Option<u32>,
    verify_received: Option<u64>,
}

fn action_name(a: u32) -> &'static str {
    match a {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn run(a: &Args) -> Result<Report, String> {
    let in_idx = xdp::ifindex(&a.ingress).ok_or_else(|| format!("no interface {}", a.ingress))?;
    let out_idx = xdp::ifindex(&a.egress).ok_or_else(|| format!("no interface {}", a.egress))?;
    let in_mac = xdp::mac(&a.ingress).ok_or_else(|| format!("no MAC for {}", a.ingress))?;
    let out_mac = xdp::mac(&a.egress).ok_or_else(|| format!("no MAC for {}", a.egress))?;
    let mut relay = XdpRelay::load().map_err(|e| e.to_string())?;
    // The identity rewrite (see the module comment).
    let entry = XdpEntry {
        local: a.dst,
        expect_src: Some(a.src),
        strict: true,
        new_src: a.src,
        new_dst: a.dst,
        egress: a.peer_mac.map(|m| Egress {
            ifindex: out_idx,
            dst_mac: m,
            src_mac: out_mac,
        }),
    };
    relay.insert(&entry).map_err(|e| e.to_string())?;
    let f = frame(in_mac, [0x02, 0, 0, 0, 0, 0x01], a.src, a.dst, a.payload);
    let mut runs_total = 0u64;

    // The action, from one non-live run.
    let first = relay
        .test_run_on(&f, in_idx, 1, None)
        .map_err(|e| e.to_string())?;
    runs_total += 1;
    if first.action != 3 && first.action != 4 {
        return Err(format!(
            "the program did not forward the frame: {} (is the FIB/neighbour there with --fib?)",
            action_name(first.action)
        ));
    }

    let (mut verify_sent, mut verify_received) = (None, None);
    if let Some(ns) = &a.verify_netns {
        let sock = socket_in(ns, a.dst)?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        // Fewer than the veth's 256-frame ring, so none is dropped there.
        let n = 200u32;
        relay
            .test_run_on(&f, in_idx, n, Some(a.batch))
            .map_err(|e| format!("live run: {e}"))?;
        runs_total += u64::from(n);
        let mut got = 0u64;
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < deadline && got < u64::from(n) {
            match sock.recv_from(&mut buf) {
                Ok((len, from)) => {
                    let from_ok = from == std::net::SocketAddr::V4(a.src);
                    if len == a.payload && from_ok && buf[12..len] == f[f.len() - a.payload + 12..]
                    {
                        got += 1;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        verify_sent = Some(n);
        verify_received = Some(got);
        eprintln!(
            "xdpcost: verify: {got} of {n} live frames arrived at {} in {ns}, payload intact",
            a.dst
        );
        if got == 0 {
            return Err("no live frame arrived: is an XDP program on the peer of --out?".into());
        }
    }

    let mut rounds = Vec::new();
    for r in 0..a.rounds {
        let nl = relay
            .test_run_on(&f, in_idx, a.repeat, None)
            .map_err(|e| e.to_string())?;
        runs_total += u64::from(a.repeat);
        let lv = relay
            .test_run_on(&f, in_idx, a.repeat, Some(a.batch))
            .map_err(|e| format!("live run: {e}"))?;
        runs_total += u64::from(a.repeat);
        eprintln!(
            "xdpcost: round {}: non-live {:.1} ns/pkt, live {:.1} ns/pkt",
            r + 1,
            ns(nl.per_run),
            ns(lv.per_run)
        );
        rounds.push(Round {
            nonlive_ns: ns(nl.per_run),
            live_ns: ns(lv.per_run),
        });
    }
    let mut nlv: Vec<f64> = rounds.iter().map(|r| r.nonlive_ns).collect();
    let mut lvv: Vec<f64> = rounds.iter().map(|r| r.live_ns).collect();
    let nonlive_ns_median = median(&mut nlv);
    let live_ns_median = median(&mut lvv);
    let c = relay
        .counters(a.dst)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let st = relay.stats().map_err(|e| e.to_string())?;
    Ok(Report {
        tool: "xdpcost",
        frame_bytes: f.len(),
        ingress: a.ingress.clone(),
        egress: a.egress.clone(),
        egress_from: if a.fib { "fib lookup" } else { "entry" },
        action: first.action,
        action_name: action_name(first.action),
        repeat: a.repeat,
        live_batch: a.batch,
        rounds,
        nonlive_ns_median,
        live_ns_median,
        nonlive_ns_range: [nlv[0], nlv[nlv.len() - 1]],
        live_ns_range: [lvv[0], lvv[lvv.len() - 1]],
        entry_packets: c.packets,
        runs_total,
        forwarded: st.forwarded,
        redirect_errors: st.redirect_err,
        verify_sent,
        verify_received,
    })
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("xdpcost: {e}");
            }
            eprint!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    match run(&a) {
        Ok(r) => {
            println!(
                "xdpcost: {} B frame {} -> {}, {}: non-live {:.1} ns/pkt [{:.1}-{:.1}], live frames {:.1} ns/pkt [{:.1}-{:.1}] (median of {} rounds of {}); entry counted {} of {} runs, redirect errors {}",
                r.frame_bytes,
                r.ingress,
                r.egress,
                r.action_name,
                r.nonlive_ns_median,
                r.nonlive_ns_range[0],
                r.nonlive_ns_range[1],
                r.live_ns_median,
                r.live_ns_range[0],
                r.live_ns_range[1],
                r.rounds.len(),
                r.repeat,
                r.entry_packets,
                r.runs_total,
                r.redirect_errors
            );
            if let Some(path) = &a.json {
                let j = serde_json::to_string_pretty(&r).unwrap_or_default();
                if let Err(e) = std::fs::write(path, j + "\n") {
                    eprintln!("xdpcost: writing {path}: {e}");
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("xdpcost: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_checksums_verify() {
        let src: SocketAddrV4 = "10.81.0.1:16000".parse().unwrap();
        let dst: SocketAddrV4 = "10.80.0.1:40000".parse().unwrap();
        let f = frame([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, dst, 172);
        assert_eq!(f.len(), 14 + 20 + 8 + 172);
        // A header with its checksum in place sums to zero.
        assert_eq!(csum(&[&f[14..34]]), 0);
        let udp = &f[34..];
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&f[26..30]);
        pseudo[4..8].copy_from_slice(&f[30..34]);
        pseudo[9] = 17;
        pseudo[10..12].copy_from_slice(&(udp.len() as u16).to_be_bytes());
        assert_eq!(csum(&[&pseudo, udp]), 0);
    }

    #[test]
    fn args_are_checked() {
        let v = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let base = "--in a --out b --src 10.0.0.1:1 --dst 10.0.0.3:5";
        assert!(parse_args(&v(&format!("{base} --fib"))).is_ok());
        assert!(parse_args(&v(&format!("{base} --peer-mac 02:00:00:00:00:01"))).is_ok());
        assert!(parse_args(&v(base)).is_err());
        assert!(parse_args(&v(&format!("{base} --fib --peer-mac 02:00:00:00:00:01"))).is_err());
        assert!(parse_args(&v(&format!("{base} --fib --batch 300"))).is_err());
        assert!(parse_args(&v(&format!("{base} --fib --repeat 0"))).is_err());
        assert!(parse_args(&v(&format!("{base} --fib --verify-netns ../x"))).is_err());
    }
}
