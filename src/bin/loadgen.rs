//! `loadgen` — Kolokol's RTP load generator and sink.
//!
//! One tool, one run, two relays: `loadgen` sets calls up over the rtpengine
//! "ng" control protocol, so the very same command measures Kolokol and
//! rtpengine (or, with `--bare-base-port`, the `bare_relay` forwarding loop
//! that needs no set-up at all).
//!
//! # What it does
//!
//! 1. **Set-up** (ng mode). For call `i` it sends `offer` (call-id, from-tag,
//!    leg A's SDP, `replace: [origin, session-connection]` as Kamailio's
//!    `rtpengine` module does); the reply's SDP is where leg B must send. Then
//!    `answer` (plus to-tag and leg B's SDP); its reply's SDP is where leg A
//!    must send. Requests are pipelined with a bounded window (`--ng-window`),
//!    retransmitted with the same cookie on timeout (ng servers cache replies
//!    by cookie, so a retry is idempotent), and every failure is counted; the
//!    first error reason is printed. At the end every call gets a `delete`.
//! 2. **Sending.** Each leg has its own source address, 127.S.x.y derived from
//!    `--src-net 127.S` and the leg index, and all legs share one UDP port
//!    (`--port`). A single socket bound to 0.0.0.0:port sends every packet
//!    with `IP_PKTINFO` naming the leg's source, in `sendmmsg` batches, so a
//!    leg sends from exactly the address in its SDP (no re-learning in the
//!    relay) and 10,000 calls cost two file descriptors, not 20,000.
//!    Paced mode (`--pps`, default 50 = G.711 20 ms) runs every leg direction
//!    as one merged schedule: packet g goes at t0 + g·period/legdirs, so the
//!    load is spread evenly over the period (never a burst of all calls at
//!    once), quantised to `--tick-us` wake-ups. `--flat` sends as fast as the
//!    generator can.
//!    **Namespaces** (the veth topology of `benches/system/xdp_veth.sh`):
//!    `--netns-a gen --netns-b sink --ng-netns gw` opens leg A's socket in
//!    namespace `gen`, leg B's in `sink` and the ng socket in `gw` (each on
//!    a short-lived thread that `setns`es there; a socket keeps its
//!    namespace). With `--src-net 10.81 --src-net-b 10.82` leg A's addresses
//!    are 10.81.x.y and leg B's 10.82.x.y; each /16 is made local in its
//!    namespace with `ip route add local 10.81.0.0/16 dev lo`, so the same
//!    `IP_PKTINFO` sending works and every leg still sends from its SDP
//!    address. `--relay-extra-pids` adds processes such as the relay side's
//!    NAPI kthreads to the relay's CPU.
//! 3. **Packets** are RTP (12-byte header, V=2, PT 0, an SSRC per leg and
//!    direction, sequence, timestamp += 8000/pps) with a payload (default 160
//!    bytes) that carries a magic, a run id, the leg-direction index, a 64-bit
//!    sequence and the send time (CLOCK_MONOTONIC ns). The sink therefore
//!    attributes and times packets even when the relay rewrites nothing, and
//!    ignores stale packets of an earlier run.
//! 4. **Sink.** The same socket receives with `recvmmsg`. `IP_PKTINFO` gives
//!    the destination address (which leg it arrived for; a packet that
//!    arrives at the wrong leg is counted as misrouted), `SO_TIMESTAMPNS`
//!    gives the kernel's receive time (on loopback: when the relay's send
//!    entered the stack), so one-way latency does not include the
//!    generator's own wake-up delay, and `SO_RXQ_OVFL` counts what the
//!    generator's own socket dropped. Per leg direction a 128-packet window
//!    over the sequence tells duplicates from reordering; loss is sent minus
//!    received (unique) after a drain wait. Only packets scheduled after the
//!    warm-up count for rates, loss and latency. Latency goes into a fixed
//!    histogram: 1 µs buckets to 10 ms, 100 µs to 1 s, then overflow.
//! 5. **Honesty about itself.** The generator records, per packet, how late
//!    it was sent against its schedule (`lag`), skips packets that would be
//!    more than `--max-lag-ms` late (counted, never sent, so never "lost"),
//!    reports its own CPU, the drops at its own socket, and says loudly when
//!    it could not keep its schedule: then the measurement is the
//!    generator's limit, not the relay's. With `--relay-pid` it reads the
//!    relay's CPU from `/proc/PID/task/*/schedstat` over the measured window.
//!    `--rt-prio` runs it SCHED_FIFO so neighbours on its core cannot make it
//!    late. It is one thread: about 5–6 µs of CPU per packet sent and
//!    received on the 2-core test host, so on a core of its own it keeps a
//!    schedule up to roughly 100k–150k packets/s each way (1,000–1,500
//!    G.711 calls); beyond that it says so.
//! 6. **SRTP** (`--srtp SUITE`, ng mode only). Leg A (the offerer) speaks
//!    SRTP and leg B plain RTP: A's offer is `RTP/SAVP` with
//!    `a=crypto:1 SUITE inline:<key||salt>` (a fresh key per call from the
//!    OS CSPRNG) and the request carries `transport-protocol: RTP/AVP`, so
//!    the relay offers B plain RTP; the answer reply's `a=crypto` (which must
//!    use SUITE) is the relay's key toward A. A protects what it sends with
//!    its own key (after the send stamp is written, in place, in the send
//!    buffer) and unprotects what arrives for it with the relay's key, in
//!    place in the receive buffer; one `SrtpContext` per leg and direction,
//!    nothing allocated per packet. Packets at A that fail to unprotect are
//!    counted (`srtp_errors`) and otherwise ignored (so they count as lost).
//!    The same command works against Kolokol and rtpengine (SDES).
//!
//! The sent timestamp of the k-th packet of a `sendmmsg` batch is
//! interpolated from the measured cost per packet (small batches, 16 by
//! default when paced, keep that error to a few µs); a packet that would
//! read negative is counted as a clock anomaly and recorded as 0. The
//! second latency line ("to the generator's read") includes the generator's
//! own tick wait and is there to show the difference.
//!
//! # Using it for the rtpengine comparison
//!
//! Pin the relay to CPU 0 and the generator to CPU 1, and run the same
//! command against each:
//!
//! ```text
//! taskset -c 0 rtpengine --config-file=rtpengine.conf &   # table=-1, 1 thread,
//!                                                          # endpoint-learning=off
//! loadgen --ng 127.0.0.1:2223 --calls 600 --pps 50 --duration-s 20 \
//!         --cpu 1 --relay-pid $(pidof rtpengine) --json rtpengine-600.json
//! taskset -c 0 kolokol run --config config/kolokol.toml &
//! loadgen --ng 127.0.0.1:2223 --calls 600 --pps 50 --duration-s 20 \
//!         --cpu 1 --relay-pid $(pidof kolokol) --json kolokol-600.json
//! taskset -c 0 bare_relay --addr 127.0.0.1 --base-port 6000 --pairs 600 --cpu 0 --mode uring &
//! loadgen --bare-base-port 6000 --calls 600 --duration-s 20 --cpu 1 \
//!         --relay-pid $(pidof bare_relay) --json bare-600.json
//! ```
//!
//! Compare `relay.cpu_pct` at the same paced load, and the most calls with
//! `loss_pct < 0.1` and `latency_us.p99 < 5000`; look at the `generator`
//! block before trusting a maximum (on 2 cores the generator often is the
//! limit). Flat-out runs make a userspace relay drop at its receive queue
//! (rtpengine then relays almost nothing); compare paced loads, and raise
//! `--calls` or `--pps` to find saturation.
//!
//! Caveats: schedstat counts softirq work done while the relay is on its
//! CPU, including other processes' traffic, so on a shared host check
//! `system_udp_rcvbuf_errors` (0 on a quiet host) before trusting a CPU
//! figure. Keep the generator's `--port` (default 16000) and the relay's
//! port range apart; other processes' ephemeral ports (32768–60999) can
//! take relay ports.
//!
//! Limits: at most 20,000 calls and 3,600 s per run; IPv4 only.
//! Exit status 0 measured, 1 could not run, 2 bad arguments, 3 nothing
//! measured (no call set up, or nothing came back).

use kolokol::control::bencode;
use kolokol::media::srtp::{SrtpContext, SrtpSuite};
use kolokol::sdp::crypto::CryptoAttr;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bencode::Value;
use serde::Serialize;

const MAX_CALLS: usize = 20_000;
const MAX_DURATION_S: f64 = 3600.0;
const MAX_PPS: u32 = 10_000;
const RTP_HDR: usize = 12;
const PAYLOAD_MIN: usize = 32;
const PAYLOAD_MAX: usize = 1460;
const MAGIC: [u8; 4] = *b"KLKG";
const FLAG_MEASURED: u8 = 1;
const FLAG_PRIME: u8 = 2;
const RECV_BUF: usize = 2048;
/// Room after each send buffer for an SRTP auth tag (at most 16 bytes).
const SRTP_ROOM: usize = 16;
/// Sequence window for telling duplicates from reordering, per leg direction.
const SEQ_WINDOW: u64 = 128;
/// Share of the estimated per-packet sendmmsg cost used to stamp the later
/// packets of a batch (see `SendBatch::flush`).
const STAMP_SHARE: f64 = 0.7;

// asm-generic socket option values (x86_64, aarch64); libc does not export
// all of them for every target.
const SO_TIMESTAMPNS: libc::c_int = 35;
const SO_RXQ_OVFL: libc::c_int = 40;
const SO_RCVBUFFORCE: libc::c_int = 33;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

// ---------------------------------------------------------------- arguments

#[derive(Debug, Clone)]
struct Args {
    ng: Option<SocketAddr>,
    calls: usize,
    pps: u32,
    flat: bool,
    duration_s: f64,
    warmup_s: f64,
    payload: usize,
    /// Leg A's source /16 (first two octets) and leg B's.
    nets: LegNets,
    cpu: Option<usize>,
    json: Option<String>,
    bare_base_port: Option<u16>,
    relay_addr: Ipv4Addr,
    port: u16,
    rtcp_mux: bool,
    tick_us: u64,
    batch: usize,
    drain_ms: u64,
    max_lag_ms: u64,
    ng_window: usize,
    ng_timeout_ms: u64,
    ng_retries: u32,
    relay_pid: Option<u32>,
    rt_prio: Option<i32>,
    quiet: bool,
    srtp: Option<SrtpSuite>,
    /// Network namespaces (names under /run/netns) for leg A's socket, leg
    /// B's socket and the ng socket; `None`: the caller's.
    netns_a: Option<String>,
    netns_b: Option<String>,
    ng_netns: Option<String>,
    /// More processes (e.g. NAPI kthreads) whose CPU counts as the relay's.
    relay_extra_pids: Vec<u32>,
}

const USAGE: &str = "\
usage: loadgen (--ng ADDR:PORT | --bare-base-port P) --calls N --duration-s S [options]

  --ng ADDR:PORT        ng control address of the relay (Kolokol or rtpengine)
  --bare-base-port P    no ng: call i uses relay ports P+2i (leg A) and P+2i+1 (leg B)
  --relay-addr IP       relay address in bare mode (default 127.0.0.1)
  --calls N             concurrent calls, 1..=20000
  --pps R               packets/s per leg per direction (default 50 = 20 ms G.711)
  --flat                send as fast as possible instead of paced
  --duration-s S        measured time (<= 3600)
  --warmup-s W          unmeasured time before it (default 2)
  --payload B           RTP payload bytes (default 160, 32..=1460)
  --src-net A.B         leg source addresses A.B.x.y (default 127.1); outside
                        127/8 the /16 must be local in its namespace (e.g.
                        `ip route add local A.B.0.0/16 dev lo`)
  --src-net-b A.B       leg B's source addresses from this /16 instead
  --netns-a NAME        open leg A's socket in network namespace NAME
  --netns-b NAME        open leg B's socket in network namespace NAME (with
                        different namespaces each side has its own socket)
  --ng-netns NAME       open the ng control socket in network namespace NAME
  --port P              the generator's UDP port, shared by all legs (default 16000)
  --rtcp-mux            offer a=rtcp-mux
  --cpu C               pin the generator to CPU C
  --relay-pid PID       report the relay's CPU (schedstat) over the measured window
  --relay-extra-pids P,Q,...  also count these processes' CPU as the relay's
                        (e.g. the NAPI kthreads that receive for it)
  --json FILE           write the report as JSON
  --tick-us T           pacing granularity (default 500)
  --batch B             sendmmsg/recvmmsg batch (default 16 paced, 64 flat)
  --drain-ms D          wait for stragglers after sending (default 500)
  --max-lag-ms L        skip (and count) packets later than this (default 20)
  --ng-window W         ng requests in flight (default 64)
  --ng-timeout-ms T     ng retransmission timeout (default 1000)
  --ng-retries R        ng retransmissions before failing a request (default 3)
  --rt-prio P           run the generator SCHED_FIFO at priority P (root), so
                        neighbours on its CPU cannot delay its schedule
  --quiet               no progress lines
  --srtp SUITE          leg A speaks SRTP (SDES suite, e.g. AES_CM_128_HMAC_SHA1_80),
                        leg B plain RTP (offer asks transport-protocol RTP/AVP); ng only

Exit status: 0 measured, 1 could not run, 2 bad arguments, 3 nothing measured
(no call set up or nothing came back).
";

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        ng: None,
        calls: 0,
        pps: 50,
        flat: false,
        duration_s: 0.0,
        warmup_s: 2.0,
        payload: 160,
        nets: LegNets {
            a: [127, 1],
            b: [127, 1],
        },
        cpu: None,
        json: None,
        bare_base_port: None,
        relay_addr: Ipv4Addr::LOCALHOST,
        port: 16000,
        rtcp_mux: false,
        tick_us: 500,
        batch: 0,
        drain_ms: 500,
        max_lag_ms: 20,
        ng_window: 64,
        ng_timeout_ms: 1000,
        ng_retries: 3,
        relay_pid: None,
        rt_prio: None,
        quiet: false,
        srtp: None,
        netns_a: None,
        netns_b: None,
        ng_netns: None,
        relay_extra_pids: Vec::new(),
    };
    let mut saw_duration = false;
    let mut net_b: Option<[u8; 2]> = None;
    let mut i = 0;
    while i < argv.len() {
        let raw = argv[i].as_str();
        let (key, inline) = match raw.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (raw, None),
        };
        i += 1;
        // Flags without a value.
        match key {
            "--flat" => {
                a.flat = true;
                continue;
            }
            "--rtcp-mux" => {
                a.rtcp_mux = true;
                continue;
            }
            "--quiet" => {
                a.quiet = true;
                continue;
            }
            "-h" | "--help" => return Err(String::new()),
            _ => {}
        }
        let val = match inline {
            Some(v) => v,
            None => {
                let v = argv
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("{key} needs a value"))?;
                i += 1;
                v
            }
        };
        fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("{key}: bad value {v:?}"))
        }
        match key {
            "--ng" => {
                a.ng = Some(num(key, &val)?);
            }
            "--calls" => a.calls = num(key, &val)?,
            "--pps" => a.pps = num(key, &val)?,
            "--duration-s" => {
                a.duration_s = num(key, &val)?;
                saw_duration = true;
            }
            "--warmup-s" => a.warmup_s = num(key, &val)?,
            "--payload" => a.payload = num(key, &val)?,
            "--src-net" => a.nets.a = parse_src_net(&val)?,
            "--src-net-b" => net_b = Some(parse_src_net(&val)?),
            "--netns-a" => a.netns_a = Some(parse_netns(&val)?),
            "--netns-b" => a.netns_b = Some(parse_netns(&val)?),
            "--ng-netns" => a.ng_netns = Some(parse_netns(&val)?),
            "--relay-extra-pids" => {
                a.relay_extra_pids = val
                    .split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| num(key, p))
                    .collect::<Result<_, _>>()?;
                if a.relay_extra_pids.len() > 64 {
                    return Err("--relay-extra-pids: at most 64".into());
                }
            }
            "--cpu" => a.cpu = Some(num(key, &val)?),
            "--json" => a.json = Some(val),
            "--bare-base-port" => a.bare_base_port = Some(num(key, &val)?),
            "--relay-addr" => a.relay_addr = num(key, &val)?,
            "--port" => a.port = num(key, &val)?,
            "--tick-us" => a.tick_us = num(key, &val)?,
            "--batch" => a.batch = num(key, &val)?,
            "--drain-ms" => a.drain_ms = num(key, &val)?,
            "--max-lag-ms" => a.max_lag_ms = num(key, &val)?,
            "--ng-window" => a.ng_window = num(key, &val)?,
            "--ng-timeout-ms" => a.ng_timeout_ms = num(key, &val)?,
            "--ng-retries" => a.ng_retries = num(key, &val)?,
            "--relay-pid" => a.relay_pid = Some(num(key, &val)?),
            "--srtp" => {
                a.srtp = Some(
                    SrtpSuite::from_sdes_name(val.trim())
                        .ok_or_else(|| format!("--srtp: unknown suite {val:?}"))?,
                )
            }
            "--rt-prio" => {
                let p: i32 = num(key, &val)?;
                if !(1..=99).contains(&p) {
                    return Err("--rt-prio must be 1..=99".into());
                }
                a.rt_prio = Some(p);
            }
            _ => return Err(format!("unknown option {key}")),
        }
    }
    a.nets.b = net_b.unwrap_or(a.nets.a);
    if a.ng.is_none() == a.bare_base_port.is_none() {
        return Err("give exactly one of --ng and --bare-base-port".into());
    }
    if a.srtp.is_some() && a.ng.is_none() {
        return Err("--srtp needs --ng (keys are exchanged in SDP)".into());
    }
    if let Some(SocketAddr::V6(_)) = a.ng {
        return Err("--ng: IPv4 only".into());
    }
    if a.calls == 0 || a.calls > MAX_CALLS {
        return Err(format!("--calls must be 1..={MAX_CALLS}"));
    }
    if !(saw_duration && a.duration_s > 0.0 && a.duration_s <= MAX_DURATION_S) {
        return Err(format!("--duration-s must be > 0 and <= {MAX_DURATION_S}"));
    }
    if !(a.warmup_s >= 0.0 && a.warmup_s <= 600.0) {
        return Err("--warmup-s must be 0..=600".into());
    }
    if a.pps == 0 || a.pps > MAX_PPS {
        return Err(format!("--pps must be 1..={MAX_PPS}"));
    }
    if !(PAYLOAD_MIN..=PAYLOAD_MAX).contains(&a.payload) {
        return Err(format!("--payload must be {PAYLOAD_MIN}..={PAYLOAD_MAX}"));
    }
    if a.port == 0 {
        return Err("--port must not be 0".into());
    }
    if let Some(p) = a.bare_base_port {
        let end = p as usize + 2 * a.calls;
        if end > 65536 {
            return Err("--bare-base-port + 2*calls exceeds 65535".into());
        }
        if a.relay_addr.is_loopback() && (p as usize..end).contains(&(a.port as usize)) {
            return Err(format!(
                "--port {} lies inside the relay's ports {p}..{}",
                a.port,
                end - 1
            ));
        }
    }
    if a.tick_us == 0 || a.tick_us > 20_000 {
        return Err("--tick-us must be 1..=20000".into());
    }
    if a.batch == 0 {
        a.batch = if a.flat { 64 } else { 16 };
    }
    a.batch = a.batch.clamp(1, 1024);
    if a.drain_ms > 60_000 || a.max_lag_ms > 60_000 {
        return Err("--drain-ms / --max-lag-ms at most 60000".into());
    }
    a.ng_window = a.ng_window.clamp(1, 4096);
    a.ng_timeout_ms = a.ng_timeout_ms.clamp(10, 60_000);
    a.ng_retries = a.ng_retries.min(20);
    Ok(a)
}

/// `A.B` (or `A.B.0.0`, `A.B.0.0/16`) → [A, B]: the /16 leg addresses come
/// from. In 127/8, 127.0 and 127.255 are refused: they hold 127.0.0.1 and
/// the loopback broadcast. Outside it, A must be a unicast first octet
/// (1..=223) other than 0.
fn parse_src_net(v: &str) -> Result<[u8; 2], String> {
    let v = v.trim().trim_end_matches("/16");
    let parts: Vec<&str> = v.split('.').collect();
    let bad = || format!("--src-net: expected A.B (a /16, e.g. 127.1 or 10.81), got {v:?}");
    if parts.len() < 2 || parts.len() > 4 {
        return Err(bad());
    }
    if parts[2..].iter().any(|p| *p != "0") {
        return Err(bad());
    }
    let a: u8 = parts[0].parse().map_err(|_| bad())?;
    let b: u8 = parts[1].parse().map_err(|_| bad())?;
    if a == 127 && (b == 0 || b == 255) {
        return Err(bad());
    }
    if a == 0 || a > 223 {
        return Err(bad());
    }
    Ok([a, b])
}

/// A network namespace name as `ip netns` keeps it under /run/netns.
fn parse_netns(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v != "."
        && v != ".."
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("bad network namespace name {v:?}"))
    }
}

/// Where legs' source addresses come from: leg A (even leg index) from
/// the /16 `a`, leg B (odd) from `b` (the same by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LegNets {
    a: [u8; 2],
    b: [u8; 2],
}

impl LegNets {
    /// Source address of leg `j` (call i: leg A = 2i, leg B = 2i+1).
    fn ip(&self, j: usize) -> Ipv4Addr {
        leg_ip(if j.is_multiple_of(2) { self.a } else { self.b }, j)
    }

    /// Inverse of [`LegNets::ip`]: the leg index of `ip` (host order).
    fn index(&self, ip: u32) -> Option<usize> {
        [(self.a, 0), (self.b, 1)]
            .into_iter()
            .find_map(|(net, side)| leg_index(net, ip).filter(|j| j % 2 == side))
    }
}

/// Source address of leg `j` in the /16 `net`; avoids host parts .0 and
/// .255. Good for 65,024 legs.
fn leg_ip(net: [u8; 2], j: usize) -> Ipv4Addr {
    let hi = (j / 254) as u8;
    let lo = (j % 254) as u8 + 1;
    Ipv4Addr::new(net[0], net[1], hi, lo)
}

/// Inverse of [`leg_ip`]: the leg index of address `ip` (host order).
fn leg_index(net: [u8; 2], ip: u32) -> Option<usize> {
    let [a, b, hi, lo] = ip.to_be_bytes();
    if [a, b] != net || lo == 0 || lo == 255 {
        return None;
    }
    Some(hi as usize * 254 + lo as usize - 1)
}

/// Run `f` on a short-lived thread that has entered network namespace `ns`
/// (`/run/netns/NAME`, as `ip netns add` makes it), or here when `ns` is
/// `None`. Sockets opened by `f` stay in that namespace for their life.
fn in_netns<T: Send>(
    ns: Option<&str>,
    f: impl FnOnce() -> Result<T, String> + Send,
) -> Result<T, String> {
    let Some(ns) = ns else {
        return f();
    };
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                // SAFETY: a valid namespace fd; setns changes only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(format!("setns {path}: {}", io::Error::last_os_error()));
                }
                f()
            })
            .join()
            .map_err(|_| format!("thread in namespace {ns} panicked"))?
    })
}

// ------------------------------------------------------------------- clocks

fn clock_ns(clk: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(clk, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn mono() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn sleep_until(t: u64) {
    let ts = libc::timespec {
        tv_sec: (t / 1_000_000_000) as libc::time_t,
        tv_nsec: (t % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: valid timespec; an EINTR return just wakes us early.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        );
    }
}

/// REALTIME − MONOTONIC, to turn kernel receive timestamps (REALTIME) into
/// the payload's clock. Sampled between two MONOTONIC reads.
fn realtime_offset() -> i128 {
    let a = mono();
    let r = clock_ns(libc::CLOCK_REALTIME);
    let b = mono();
    r as i128 - ((a as i128 + b as i128) / 2)
}

// ---------------------------------------------------------------- histogram

/// Fixed-bucket histogram of nanosecond values: 1 µs buckets up to 10 ms,
/// 100 µs buckets up to 1 s, then one overflow bucket; exact max.
#[derive(Clone)]
struct Hist {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    over: u64,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

const FINE_US: u64 = 10_000;
const COARSE_STEP_US: u64 = 100;
const COARSE_END_US: u64 = 1_000_000;

impl Hist {
    fn new() -> Hist {
        Hist {
            fine: vec![0; FINE_US as usize],
            coarse: vec![0; ((COARSE_END_US - FINE_US) / COARSE_STEP_US) as usize],
            over: 0,
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    #[inline]
    fn record(&mut self, ns: u64) {
        let us = ns / 1000;
        if us < FINE_US {
            self.fine[us as usize] += 1;
        } else if us < COARSE_END_US {
            self.coarse[((us - FINE_US) / COARSE_STEP_US) as usize] += 1;
        } else {
            self.over += 1;
        }
        self.count += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The q-quantile in µs (lower edge of its bucket; never above max).
    fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let max_us = self.max_ns as f64 / 1000.0;
        let mut seen = 0u64;
        for (i, c) in self.fine.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return (i as f64).min(max_us);
            }
        }
        for (i, c) in self.coarse.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ((FINE_US + i as u64 * COARSE_STEP_US) as f64).min(max_us);
            }
        }
        max_us
    }

    fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ns as f64 / self.count as f64 / 1000.0
        }
    }

    fn summary(&self) -> LatencyUs {
        LatencyUs {
            samples: self.count,
            p50: self.quantile_us(0.50),
            p99: self.quantile_us(0.99),
            p999: self.quantile_us(0.999),
            max: self.max_ns as f64 / 1000.0,
            mean: (self.mean_us() * 10.0).round() / 10.0,
        }
    }
}

// --------------------------------------------------------------------- RTP

/// Layout of the payload after the 12-byte RTP header.
mod pl {
    pub const MAGIC: usize = 0; // 4
    pub const RUN: usize = 4; // u32
    pub const LEGDIR: usize = 8; // u32
    pub const FLAGS: usize = 12; // u8
    pub const SEQ: usize = 16; // u64
    pub const SENT_NS: usize = 24; // u64
}

/// What the sink reads out of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed {
    legdir: u32,
    flags: u8,
    seq: u64,
    sent_ns: u64,
}

fn parse_packet(pkt: &[u8], run_id: u32) -> Option<Parsed> {
    if pkt.len() < RTP_HDR + PAYLOAD_MIN || pkt[0] >> 6 != 2 {
        return None;
    }
    // Skip CSRCs and a header extension if a relay added them.
    let cc = (pkt[0] & 0x0f) as usize;
    let mut off = RTP_HDR + 4 * cc;
    if pkt[0] & 0x10 != 0 {
        let ext = pkt.get(off + 2..off + 4)?;
        off += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
    }
    let p = pkt.get(off..off + PAYLOAD_MIN)?;
    if p[pl::MAGIC..pl::MAGIC + 4] != MAGIC {
        return None;
    }
    let rd4 = |o: usize| u32::from_be_bytes(p[o..o + 4].try_into().unwrap_or([0; 4]));
    let rd8 = |o: usize| u64::from_be_bytes(p[o..o + 8].try_into().unwrap_or([0; 8]));
    if rd4(pl::RUN) != run_id {
        return None;
    }
    Some(Parsed {
        legdir: rd4(pl::LEGDIR),
        flags: p[pl::FLAGS],
        seq: rd8(pl::SEQ),
        sent_ns: rd8(pl::SENT_NS),
    })
}

// --------------------------------------------------------------- per leg

/// Sender state of one leg direction (legdir d = 2·call + dir; dir 0 = A→B).
struct TxLeg {
    dst: libc::sockaddr_in,
    src: libc::in_addr,
    ssrc: u32,
    ts0: u32,
    next_seq: u64,
    sent_measured: u64,
    sent_total: u64,
    /// SRTP context that protects what this leg direction sends (leg A).
    srtp: Option<SrtpContext>,
}

/// Sink state of one leg direction.
#[derive(Clone, Default)]
struct RxLeg {
    any: bool,
    highest: u64,
    window: u128,
    received: u64,
    reordered: u64,
    dups: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum SeqVerdict {
    New,
    Reordered,
    Duplicate,
}

impl RxLeg {
    fn observe(&mut self, seq: u64) -> SeqVerdict {
        if !self.any {
            self.any = true;
            self.highest = seq;
            self.window = 1;
            return SeqVerdict::New;
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.window = if shift >= SEQ_WINDOW {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.highest = seq;
            return SeqVerdict::New;
        }
        let back = self.highest - seq;
        if back >= SEQ_WINDOW {
            return SeqVerdict::Reordered; // too old to tell; call it late
        }
        let bit = 1u128 << back;
        if self.window & bit != 0 {
            SeqVerdict::Duplicate
        } else {
            self.window |= bit;
            SeqVerdict::Reordered
        }
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn in_addr(ip: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from(ip).to_be(),
    }
}

// ------------------------------------------------------------- batch send

fn cmsg_space(len: usize) -> usize {
    // SAFETY: pure arithmetic.
    unsafe { libc::CMSG_SPACE(len as libc::c_uint) as usize }
}

struct SendBatch {
    cap: usize,
    n: usize,
    pkt_len: usize,
    bufs: Vec<u8>,
    iov: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_in>,
    ctrl: Vec<u64>,
    hdrs: Vec<libc::mmsghdr>,
    legdir: Vec<u32>,
    measured: Vec<bool>,
    /// Bytes between buffers: the packet plus room for an SRTP tag.
    stride: usize,
    /// Already SRTP-protected (a partial sendmmsg retries the rest; a
    /// protected packet must not be stamped or protected again).
    protected: Vec<bool>,
    /// SRTP protect failures (none expected).
    protect_errors: u64,
    /// Running estimate of ns per packet inside one sendmmsg, to stamp the
    /// i-th packet of a batch with when it really went.
    est_ns_per_pkt: f64,
}

impl SendBatch {
    fn new(cap: usize, pkt_len: usize) -> SendBatch {
        let stride = cmsg_space(std::mem::size_of::<libc::in_pktinfo>());
        let buf_stride = pkt_len + SRTP_ROOM;
        let mut b = SendBatch {
            cap,
            n: 0,
            pkt_len,
            bufs: vec![0xff; cap * buf_stride],
            // SAFETY: plain C structs, all-zero is valid.
            iov: vec![unsafe { std::mem::zeroed() }; cap],
            addrs: vec![unsafe { std::mem::zeroed() }; cap],
            ctrl: vec![0u64; cap * stride / 8 + 1],
            hdrs: vec![unsafe { std::mem::zeroed() }; cap],
            legdir: vec![0; cap],
            measured: vec![false; cap],
            stride: buf_stride,
            protected: vec![false; cap],
            protect_errors: 0,
            est_ns_per_pkt: 2000.0,
        };
        let ctrl_base = b.ctrl.as_mut_ptr() as *mut u8;
        for i in 0..cap {
            b.iov[i] = libc::iovec {
                // SAFETY: within bufs.
                iov_base: unsafe { b.bufs.as_mut_ptr().add(i * buf_stride) } as *mut libc::c_void,
                iov_len: pkt_len,
            };
            let h = &mut b.hdrs[i].msg_hdr;
            h.msg_name = &mut b.addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut b.iov[i];
            h.msg_iovlen = 1;
            // SAFETY: within ctrl (sized cap*stride), 8-byte aligned.
            h.msg_control = unsafe { ctrl_base.add(i * stride) } as *mut libc::c_void;
            h.msg_controllen = stride as _;
            // SAFETY: the control buffer holds one cmsghdr + in_pktinfo.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as _) as _;
            }
        }
        b
    }

    fn full(&self) -> bool {
        self.n == self.cap
    }

    /// Queue the next packet of leg direction `d`.
    fn push(&mut self, d: u32, leg: &mut TxLeg, run_id: u32, flags: u8, ts_step: u32) {
        let i = self.n;
        let buf = &mut self.bufs[i * self.stride..i * self.stride + self.pkt_len];
        self.iov[i].iov_len = self.pkt_len;
        self.protected[i] = false;
        let seq = leg.next_seq;
        leg.next_seq += 1;
        buf[0] = 0x80;
        buf[1] = 0; // PT 0 (PCMU), no marker
        buf[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        buf[4..8].copy_from_slice(
            &leg.ts0
                .wrapping_add((seq as u32).wrapping_mul(ts_step))
                .to_be_bytes(),
        );
        buf[8..12].copy_from_slice(&leg.ssrc.to_be_bytes());
        let p = &mut buf[RTP_HDR..];
        p[pl::MAGIC..pl::MAGIC + 4].copy_from_slice(&MAGIC);
        p[pl::RUN..pl::RUN + 4].copy_from_slice(&run_id.to_be_bytes());
        p[pl::LEGDIR..pl::LEGDIR + 4].copy_from_slice(&d.to_be_bytes());
        p[pl::FLAGS] = flags;
        p[pl::SEQ..pl::SEQ + 8].copy_from_slice(&seq.to_be_bytes());
        self.addrs[i] = leg.dst;
        // SAFETY: msg_control was laid out in new() with one in_pktinfo.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&self.hdrs[i].msg_hdr);
            let pi = libc::CMSG_DATA(c) as *mut libc::in_pktinfo;
            std::ptr::write_unaligned(
                pi,
                libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: leg.src,
                    ipi_addr: libc::in_addr { s_addr: 0 },
                },
            );
        }
        self.legdir[i] = d;
        self.measured[i] = flags & FLAG_MEASURED != 0;
        self.n += 1;
    }

    /// Send everything queued. Returns (sent, errors).
    fn flush(&mut self, fd: RawFd, tx: &mut [TxLeg]) -> (u64, u64) {
        let mut start = 0;
        let mut sent = 0u64;
        let mut errors = 0u64;
        let mut eagain_spins = 0;
        while start < self.n {
            // Stamp each packet with its estimated departure: the k-th
            // message of a sendmmsg leaves about k·(cost per packet) after
            // the call starts. The estimate is scaled down (STAMP_SHARE) so
            // an error makes latency read slightly high rather than
            // negative; the remaining error is a few µs per packet.
            let t = mono();
            for k in start..self.n {
                if self.protected[k] {
                    continue;
                }
                let at = t + ((k - start) as f64 * self.est_ns_per_pkt * STAMP_SHARE) as u64;
                let off = k * self.stride + RTP_HDR + pl::SENT_NS;
                self.bufs[off..off + 8].copy_from_slice(&at.to_be_bytes());
            }
            // SRTP after stamping (the stamp is inside the encrypted payload).
            for k in start..self.n {
                if self.protected[k] {
                    continue;
                }
                if let Some(ctx) = tx[self.legdir[k] as usize].srtp.as_mut() {
                    let buf = &mut self.bufs[k * self.stride..(k + 1) * self.stride];
                    match ctx.protect_rtp(buf, self.pkt_len) {
                        Ok(len) => {
                            self.iov[k].iov_len = len;
                            self.protected[k] = true;
                        }
                        Err(_) => self.protect_errors += 1,
                    }
                }
            }
            let want = self.n - start;
            // SAFETY: hdrs[start..n] point at live buffers owned by self.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(start),
                    want as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                let r = r as usize;
                let dt = mono() - t;
                // Ignore batches that were preempted: they would inflate the
                // estimate and stamp later packets after they really left.
                let per = dt as f64 / r as f64;
                if r >= 4 && per < 2.0 * self.est_ns_per_pkt + 1000.0 {
                    self.est_ns_per_pkt =
                        (0.9 * self.est_ns_per_pkt + 0.1 * per).clamp(200.0, 20_000.0);
                }
                for k in start..start + r {
                    let leg = &mut tx[self.legdir[k] as usize];
                    leg.sent_total += 1;
                    if self.measured[k] {
                        leg.sent_measured += 1;
                    }
                }
                sent += r as u64;
                start += r;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) if eagain_spins < 1000 => {
                    eagain_spins += 1;
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1) };
                }
                Some(libc::EINTR) => {}
                _ => {
                    // This message cannot go (e.g. ECONNREFUSED, EINVAL): drop it.
                    errors += 1;
                    start += 1;
                }
            }
        }
        self.n = 0;
        (sent, errors)
    }
}

/// One send batch per media socket: with leg A and leg B in different
/// namespaces, leg A's packets (even leg directions) go out of socket 0 and
/// leg B's out of socket 1; otherwise one socket sends everything.
struct Senders {
    fds: Vec<RawFd>,
    batches: Vec<SendBatch>,
}

impl Senders {
    fn new(fds: &[RawFd], cap: usize, pkt_len: usize) -> Senders {
        Senders {
            fds: fds.to_vec(),
            batches: fds.iter().map(|_| SendBatch::new(cap, pkt_len)).collect(),
        }
    }

    /// Some batch is full: flush before pushing more.
    fn full(&self) -> bool {
        self.batches.iter().any(SendBatch::full)
    }

    fn push(&mut self, d: u32, leg: &mut TxLeg, run_id: u32, flags: u8, ts_step: u32) {
        let k = (d as usize) % self.batches.len();
        self.batches[k].push(d, leg, run_id, flags, ts_step);
    }

    /// Send everything queued on every socket. Returns (sent, errors).
    fn flush(&mut self, tx: &mut [TxLeg]) -> (u64, u64) {
        let mut out = (0, 0);
        for (b, &fd) in self.batches.iter_mut().zip(&self.fds) {
            if b.n > 0 {
                let (s, e) = b.flush(fd, tx);
                out.0 += s;
                out.1 += e;
            }
        }
        out
    }

    fn protect_errors(&self) -> u64 {
        self.batches.iter().map(|b| b.protect_errors).sum()
    }
}

// ---------------------------------------------------------- batch receive

struct RecvBatch {
    cap: usize,
    bufs: Vec<u8>,
    iov: Vec<libc::iovec>,
    ctrl: Vec<u64>,
    ctrl_stride: usize,
    hdrs: Vec<libc::mmsghdr>,
}

/// One received datagram's metadata.
struct RxMeta {
    dst: Option<u32>,
    kernel_ts_ns: Option<u64>,
    ovfl: Option<u32>,
}

impl RecvBatch {
    fn new(cap: usize) -> RecvBatch {
        let stride = cmsg_space(std::mem::size_of::<libc::in_pktinfo>())
            + cmsg_space(std::mem::size_of::<libc::timespec>())
            + cmsg_space(4)
            + 64;
        let stride = (stride + 7) & !7;
        let mut b = RecvBatch {
            cap,
            bufs: vec![0; cap * RECV_BUF],
            // SAFETY: plain C structs, all-zero is valid.
            iov: vec![unsafe { std::mem::zeroed() }; cap],
            ctrl: vec![0u64; cap * stride / 8],
            ctrl_stride: stride,
            hdrs: vec![unsafe { std::mem::zeroed() }; cap],
        };
        for i in 0..cap {
            b.iov[i] = libc::iovec {
                // SAFETY: within bufs.
                iov_base: unsafe { b.bufs.as_mut_ptr().add(i * RECV_BUF) } as *mut libc::c_void,
                iov_len: RECV_BUF,
            };
        }
        b
    }

    /// Non-blocking recvmmsg; returns how many arrived (0 when none).
    fn recv(&mut self, fd: RawFd) -> usize {
        let base = self.ctrl.as_mut_ptr() as *mut u8;
        for i in 0..self.cap {
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iov[i];
            h.msg_iovlen = 1;
            // SAFETY: within ctrl.
            h.msg_control = unsafe { base.add(i * self.ctrl_stride) } as *mut libc::c_void;
            h.msg_controllen = self.ctrl_stride as _;
            h.msg_flags = 0;
            self.hdrs[i].msg_len = 0;
        }
        // SAFETY: hdrs point at live buffers owned by self.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.cap as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            0
        } else {
            r as usize
        }
    }

    fn packet(&mut self, i: usize) -> (&mut [u8], RxMeta) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(RECV_BUF);
        let mut meta = RxMeta {
            dst: None,
            kernel_ts_ns: None,
            ovfl: None,
        };
        // SAFETY: the kernel filled msg_control/msg_controllen; the CMSG
        // macros stay inside msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&h.msg_hdr);
            while !c.is_null() {
                let data = libc::CMSG_DATA(c);
                match ((*c).cmsg_level, (*c).cmsg_type) {
                    (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                        let pi: libc::in_pktinfo =
                            std::ptr::read_unaligned(data as *const libc::in_pktinfo);
                        meta.dst = Some(u32::from_be(pi.ipi_addr.s_addr));
                    }
                    (libc::SOL_SOCKET, SO_TIMESTAMPNS) => {
                        let ts: libc::timespec =
                            std::ptr::read_unaligned(data as *const libc::timespec);
                        if ts.tv_sec > 0 {
                            meta.kernel_ts_ns =
                                Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
                        }
                    }
                    (libc::SOL_SOCKET, SO_RXQ_OVFL) => {
                        meta.ovfl = Some(std::ptr::read_unaligned(data as *const u32));
                    }
                    _ => {}
                }
                c = libc::CMSG_NXTHDR(&h.msg_hdr, c);
            }
        }
        (&mut self.bufs[i * RECV_BUF..i * RECV_BUF + len], meta)
    }
}

// ------------------------------------------------------------------- sink

struct Sink {
    run_id: u32,
    rx: Vec<RxLeg>,
    /// Expected destination (host order) of each leg direction.
    expect_dst: Vec<u32>,
    lat: Hist,
    /// Latency to when the generator read the packet (includes its own
    /// wake-up and drain delay); for comparison with the kernel figure.
    lat_user: Hist,
    foreign: u64,
    misrouted: u64,
    prime: u64,
    unmeasured: u64,
    clock_anomalies: u64,
    kernel_ts: u64,
    user_ts: u64,
    /// Per media socket, its cumulative SO_RXQ_OVFL drop count.
    ovfl_last: Vec<u32>,
    rt_offset: i128,
    received_total: u64,
    nets: LegNets,
    /// Per leg (j = 2·call + side), the SRTP context that unprotects what
    /// arrives at it (leg A with --srtp); empty without SRTP.
    rx_srtp: Vec<Option<SrtpContext>>,
    /// SRTP packets that failed to unprotect (auth, replay, malformed).
    srtp_errors: u64,
}

impl Sink {
    /// Read up to `max_batches` recvmmsg batches from each socket; returns
    /// how many packets and whether more may be waiting (a limit was hit).
    fn drain(&mut self, fds: &[RawFd], rb: &mut RecvBatch, max_batches: usize) -> (usize, bool) {
        let mut got = 0;
        let mut more = false;
        for (k, &fd) in fds.iter().enumerate() {
            let (g, m) = self.drain_one(k, fd, rb, max_batches);
            got += g;
            more |= m;
        }
        (got, more)
    }

    fn drain_one(
        &mut self,
        k: usize,
        fd: RawFd,
        rb: &mut RecvBatch,
        max_batches: usize,
    ) -> (usize, bool) {
        let mut got = 0;
        for _ in 0..max_batches {
            let n = rb.recv(fd);
            if n == 0 {
                return (got, false);
            }
            got += n;
            let now = mono();
            self.rt_offset = realtime_offset();
            for i in 0..n {
                let (pkt, meta) = rb.packet(i);
                if let (Some(o), Some(last)) = (meta.ovfl, self.ovfl_last.get_mut(k)) {
                    *last = (*last).max(o);
                }
                self.account(pkt, &meta, now);
            }
            if n < rb.cap {
                return (got, false);
            }
        }
        (got, true)
    }

    fn account(&mut self, pkt: &mut [u8], meta: &RxMeta, now: u64) {
        self.received_total += 1;
        let mut len = pkt.len();
        if !self.rx_srtp.is_empty() {
            if let Some(ctx) = meta
                .dst
                .and_then(|ip| self.nets.index(ip))
                .and_then(|j| self.rx_srtp.get_mut(j))
                .and_then(Option::as_mut)
            {
                match ctx.unprotect_rtp(pkt, len) {
                    Ok(l) => len = l,
                    Err(_) => {
                        self.srtp_errors += 1;
                        return;
                    }
                }
            }
        }
        let Some(p) = parse_packet(&pkt[..len], self.run_id) else {
            self.foreign += 1;
            return;
        };
        let d = p.legdir as usize;
        if d >= self.rx.len() {
            self.foreign += 1;
            return;
        }
        if p.flags & FLAG_PRIME != 0 {
            self.prime += 1;
            return;
        }
        if meta.dst.is_some_and(|a| a != self.expect_dst[d]) {
            self.misrouted += 1;
        }
        let measured = p.flags & FLAG_MEASURED != 0;
        let st = &mut self.rx[d];
        let verdict = st.observe(p.seq);
        if !measured {
            self.unmeasured += 1;
            return;
        }
        match verdict {
            SeqVerdict::Duplicate => {
                st.dups += 1;
                return;
            }
            SeqVerdict::Reordered => st.reordered += 1,
            SeqVerdict::New => {}
        }
        st.received += 1;
        let rx_ns = match meta.kernel_ts_ns {
            Some(k) => {
                self.kernel_ts += 1;
                let m = k as i128 - self.rt_offset;
                if m < 0 {
                    0
                } else {
                    m as u64
                }
            }
            None => {
                self.user_ts += 1;
                now
            }
        };
        self.lat_user.record(now.saturating_sub(p.sent_ns));
        if rx_ns >= p.sent_ns {
            self.lat.record(rx_ns - p.sent_ns);
        } else {
            self.clock_anomalies += 1;
            self.lat.record(0);
        }
    }
}

// ------------------------------------------------------------ ng protocol

struct Ng {
    sock: UdpSocket,
    window: usize,
    timeout: Duration,
    retries: u32,
    cookie_prefix: String,
    counter: u64,
    garbage: u64,
    stray: u64,
    retransmits: u64,
    /// Set-up stops at Ctrl-C; the final deletes do not (they are bounded
    /// by the retransmission timeout anyway).
    interruptible: bool,
}

impl Ng {
    fn new(addr: SocketAddr, a: &Args, run_id: u32) -> io::Result<Ng> {
        let sock = in_netns(a.ng_netns.as_deref(), || {
            UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())
        })
        .map_err(io::Error::other)?;
        sock.connect(addr)?;
        let s2 = socket2::SockRef::from(&sock);
        let _ = s2.set_recv_buffer_size(4 << 20);
        let _ = s2.set_send_buffer_size(4 << 20);
        Ok(Ng {
            sock,
            window: a.ng_window,
            timeout: Duration::from_millis(a.ng_timeout_ms),
            retries: a.ng_retries,
            cookie_prefix: format!("{run_id:08x}"),
            counter: 0,
            garbage: 0,
            stray: 0,
            retransmits: 0,
            interruptible: true,
        })
    }

    /// Send all requests (windowed, retried) and return each one's reply
    /// dictionary or error reason, in order.
    fn batch(&mut self, reqs: &[Value]) -> Vec<Result<Value, String>> {
        let n = reqs.len();
        let mut out: Vec<Option<Result<Value, String>>> = (0..n).map(|_| None).collect();
        let mut pending: HashMap<Vec<u8>, (usize, Instant, u32)> = HashMap::new();
        let mut msgs: Vec<Vec<u8>> = Vec::with_capacity(n);
        for r in reqs {
            self.counter += 1;
            let mut m = format!("{}_{}", self.cookie_prefix, self.counter).into_bytes();
            m.push(b' ');
            r.encode(&mut m);
            msgs.push(m);
        }
        let cookie_of = |m: &[u8]| -> Vec<u8> {
            let end = m.iter().position(|&b| b == b' ').unwrap_or(m.len());
            m[..end].to_vec()
        };
        let mut next = 0;
        let mut done = 0;
        let mut buf = vec![0u8; 65536];
        while done < n {
            if self.interruptible && STOP.load(Ordering::Relaxed) {
                for o in out.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(Err("interrupted".into()));
                }
                break;
            }
            while pending.len() < self.window && next < n {
                let _ = self.sock.send(&msgs[next]);
                pending.insert(cookie_of(&msgs[next]), (next, Instant::now(), 0));
                next += 1;
            }
            let now = Instant::now();
            let earliest = pending
                .values()
                .map(|p| p.1 + self.timeout)
                .min()
                .unwrap_or(now + self.timeout);
            let wait = earliest
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            let _ = self.sock.set_read_timeout(Some(wait));
            match self.sock.recv(&mut buf) {
                Ok(len) => {
                    let m = &buf[..len];
                    match m.iter().position(|&b| b == b' ') {
                        Some(sp) => {
                            if let Some((idx, _, _)) = pending.remove(&m[..sp]) {
                                out[idx] = Some(interpret_reply(&m[sp + 1..]));
                                done += 1;
                            } else {
                                self.stray += 1;
                            }
                        }
                        None => self.garbage += 1,
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Nobody listens on the ng port (ICMP). Let timeouts run.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            // Retransmit or fail what timed out.
            let now = Instant::now();
            let mut expired: Vec<Vec<u8>> = Vec::new();
            for (c, p) in pending.iter() {
                if now >= p.1 + self.timeout {
                    expired.push(c.clone());
                }
            }
            for c in expired {
                let Some(p) = pending.get_mut(&c) else {
                    continue;
                };
                if p.2 < self.retries {
                    p.2 += 1;
                    p.1 = now;
                    self.retransmits += 1;
                    let _ = self.sock.send(&msgs[p.0]);
                } else {
                    let idx = p.0;
                    pending.remove(&c);
                    out[idx] = Some(Err(format!(
                        "timeout after {} retransmissions",
                        self.retries
                    )));
                    done += 1;
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Err("not sent".into())))
            .collect()
    }
}

fn interpret_reply(body: &[u8]) -> Result<Value, String> {
    let v = bencode::decode(body).map_err(|e| format!("bad reply: {e}"))?;
    match v.get("result").and_then(Value::as_str) {
        Some("ok") | Some("pong") => Ok(v),
        Some("error") => Err(v
            .get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or("error without reason")
            .to_string()),
        Some(other) => Err(format!("result {other:?}")),
        None => Err("reply without result".into()),
    }
}

/// A leg's SDP; with `crypto` (an `a=crypto` line without line end) the
/// stream is `RTP/SAVP` and carries that line.
fn make_sdp(ip: Ipv4Addr, port: u16, sess: u64, rtcp_mux: bool, crypto: Option<&str>) -> String {
    let mut s = String::with_capacity(320);
    let proto = if crypto.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let _ = write!(
        s,
        "v=0\r\no=- {sess} 1 IN IP4 {ip}\r\ns=loadgen\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} {proto} 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n"
    );
    if rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    if let Some(c) = crypto {
        s.push_str(c);
        s.push_str("\r\n");
    }
    s
}

/// The key||salt of the first `a=crypto` line of the first audio stream of
/// `sdp`, which must use `suite`.
fn sdp_crypto_key(sdp: &str, suite: SrtpSuite) -> Result<Vec<u8>, String> {
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                break;
            }
            in_audio = m.starts_with("audio ");
        } else if let Some(v) = line.strip_prefix("a=crypto:") {
            if !in_audio {
                continue;
            }
            let c = CryptoAttr::parse(v).map_err(|e| format!("bad a=crypto: {e:?}"))?;
            if c.suite != suite.sdes_name() {
                return Err(format!("answer chose suite {} not {}", c.suite, suite));
            }
            if c.key_salt.len() != suite.master_key_len() + suite.master_salt_len() {
                return Err(format!("a=crypto key of {} bytes", c.key_salt.len()));
            }
            return Ok(c.key_salt);
        }
    }
    Err("no a=crypto in the SRTP leg's SDP".into())
}

/// An SRTP context for `suite` from key||salt.
fn srtp_context(suite: SrtpSuite, key_salt: &[u8]) -> Result<SrtpContext, String> {
    let (k, salt) = key_salt.split_at(suite.master_key_len());
    SrtpContext::new(suite, k, salt).map_err(|e| format!("srtp context: {e:?}"))
}

/// Per call: (where A sends, where B sends, the relay's key||salt toward A
/// when SRTP).
type CallDests = Result<(SocketAddrV4, SocketAddrV4, Option<Vec<u8>>), String>;

/// Where to send for the first audio stream of an SDP: its media-level
/// `c=` (else the session-level one) and the `m=audio` port.
fn sdp_audio_addr(sdp: &str) -> Result<SocketAddrV4, String> {
    let mut session_c: Option<Ipv4Addr> = None;
    let mut media_c: Option<Ipv4Addr> = None;
    let mut port: Option<u16> = None;
    let mut in_media = false;
    let mut in_audio = false;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if in_audio {
                break; // next stream after our audio one
            }
            in_media = true;
            let mut it = m.split_whitespace();
            if it.next() == Some("audio") {
                in_audio = true;
                let p = it.next().unwrap_or("");
                let p = p.split('/').next().unwrap_or("");
                port = Some(p.parse().map_err(|_| format!("bad m= port {p:?}"))?);
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let mut it = c.split_whitespace();
            let (net, fam, addr) = (it.next(), it.next(), it.next());
            if net != Some("IN") || fam != Some("IP4") {
                if !in_media || in_audio {
                    return Err(format!("unsupported c= line {line:?}"));
                }
                continue;
            }
            let addr = addr.unwrap_or("").split('/').next().unwrap_or("");
            let ip: Ipv4Addr = addr
                .parse()
                .map_err(|_| format!("bad c= address {addr:?}"))?;
            if !in_media {
                session_c = Some(ip);
            } else if in_audio {
                media_c = Some(ip);
            }
        }
    }
    let port = port.ok_or("no m=audio line")?;
    if port == 0 {
        return Err("audio stream rejected (port 0)".into());
    }
    let ip = media_c.or(session_c).ok_or("no c= line")?;
    Ok(SocketAddrV4::new(ip, port))
}

fn call_id(run_id: u32, i: usize) -> String {
    format!("loadgen-{run_id:08x}-{i}")
}

/// Offer then answer every call. Returns, per call, (A's destination,
/// B's destination) or the error.
/// `offer_keys[i]` is leg A's key||salt of call i (empty without SRTP).
fn setup_calls(ng: &mut Ng, a: &Args, run_id: u32, offer_keys: &[Vec<u8>]) -> Vec<CallDests> {
    let n = a.calls;
    let replace = || {
        Value::List(vec![
            Value::from("origin"),
            Value::from("session-connection"),
        ])
    };
    let offers: Vec<Value> = (0..n)
        .map(|i| {
            let mut v = Value::dict();
            v.insert("command", "offer");
            v.insert("call-id", call_id(run_id, i));
            v.insert("from-tag", format!("a{i}"));
            let crypto = a.srtp.map(|suite| {
                CryptoAttr {
                    tag: 1,
                    suite: suite.sdes_name().to_string(),
                    key_salt: offer_keys[i].clone(),
                    lifetime: None,
                }
                .to_line()
            });
            v.insert(
                "sdp",
                make_sdp(
                    a.nets.ip(2 * i),
                    a.port,
                    1000 + 2 * i as u64,
                    a.rtcp_mux,
                    crypto.as_deref(),
                ),
            );
            v.insert("replace", replace());
            if a.srtp.is_some() {
                // Leg B gets plain RTP.
                v.insert("transport-protocol", "RTP/AVP");
            }
            v
        })
        .collect();
    let offer_replies = ng.batch(&offers);
    let mut b_dst: Vec<Result<SocketAddrV4, String>> = offer_replies
        .into_iter()
        .map(|r| {
            r.and_then(|v| reply_sdp_addr(&v))
                .map_err(|e| format!("offer: {e}"))
        })
        .collect();
    let mut answer_idx = Vec::new();
    let answers: Vec<Value> = (0..n)
        .filter(|&i| b_dst[i].is_ok())
        .map(|i| {
            answer_idx.push(i);
            let mut v = Value::dict();
            v.insert("command", "answer");
            v.insert("call-id", call_id(run_id, i));
            v.insert("from-tag", format!("a{i}"));
            v.insert("to-tag", format!("b{i}"));
            v.insert(
                "sdp",
                make_sdp(
                    a.nets.ip(2 * i + 1),
                    a.port,
                    1001 + 2 * i as u64,
                    a.rtcp_mux,
                    None,
                ),
            );
            v.insert("replace", replace());
            v
        })
        .collect();
    let answer_replies = ng.batch(&answers);
    let mut out: Vec<CallDests> = (0..n).map(|_| Err("not answered".to_string())).collect();
    for (k, r) in answer_replies.into_iter().enumerate() {
        let i = answer_idx[k];
        let b = std::mem::replace(&mut b_dst[i], Err(String::new()));
        let answered = r.and_then(|v| {
            let dst = reply_sdp_addr(&v)?;
            let key = match a.srtp {
                Some(suite) => {
                    let sdp = v.get("sdp").and_then(Value::as_str).unwrap_or("");
                    Some(sdp_crypto_key(sdp, suite)?)
                }
                None => None,
            };
            Ok((dst, key))
        });
        out[i] = match (answered.map_err(|e| format!("answer: {e}")), b) {
            (Ok((a_dst, key)), Ok(b_dst)) => Ok((a_dst, b_dst, key)),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
    }
    for i in 0..n {
        if let Err(e) = &b_dst[i] {
            if !e.is_empty() {
                out[i] = Err(e.clone());
            }
        }
    }
    out
}

fn reply_sdp_addr(v: &Value) -> Result<SocketAddrV4, String> {
    let sdp = v
        .get("sdp")
        .and_then(Value::as_str)
        .ok_or("reply without sdp")?;
    sdp_audio_addr(sdp)
}

fn delete_calls(ng: &mut Ng, run_id: u32, calls: &[usize]) -> (u64, Option<String>) {
    ng.interruptible = false;
    let reqs: Vec<Value> = calls
        .iter()
        .map(|&i| {
            let mut v = Value::dict();
            v.insert("command", "delete");
            v.insert("call-id", call_id(run_id, i));
            v.insert("from-tag", format!("a{i}"));
            v
        })
        .collect();
    let mut failures = 0;
    let mut first = None;
    for r in ng.batch(&reqs) {
        if let Err(e) = r {
            failures += 1;
            first.get_or_insert(e);
        }
    }
    (failures, first)
}

// -------------------------------------------------------------- /proc bits

/// CPU time of a process from schedstat (shared with the gateway's tools).
fn schedstat_ns(pid: u32) -> Option<u64> {
    kolokol::sys::process_cpu_ns(pid).ok()
}

/// A point of the measured window: (monotonic ns, the generator's CPU ns,
/// the relay's CPU ns as (process, extra pids), system UDP RcvbufErrors).
type Mark = (u64, u64, Option<(u64, u64)>, Option<u64>);

/// The relay's CPU: (its process, the sum of `--relay-extra-pids`), ns.
/// `None` without `--relay-pid` or when one of them has gone.
fn relay_cpu_ns(a: &Args) -> Option<(u64, u64)> {
    let main = schedstat_ns(a.relay_pid?)?;
    let mut extra = 0;
    for &p in &a.relay_extra_pids {
        extra += schedstat_ns(p)?;
    }
    Some((main, extra))
}

/// System-wide UDP RcvbufErrors from /proc/net/snmp.
fn udp_rcvbuf_errors() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = s.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let vals: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    vals.get(i)?.parse().ok()
}

fn pin_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks in libc.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cpu out of range",
            ));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: pointer to a live c_int.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as _,
        )
    };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The media socket: 0.0.0.0:port, IP_PKTINFO, kernel timestamps, drop
/// counter, big buffers. Waits up to 5 s for a busy port, then fails.
fn media_socket(port: u16) -> Result<socket2::Socket, String> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| format!("socket: {e}"))?;
        let addr = SockAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
        match s.bind(&addr) {
            Ok(()) => {
                let fd = s.as_raw_fd();
                setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
                    .map_err(|e| format!("IP_PKTINFO: {e}"))?;
                let _ = setsockopt_int(fd, libc::SOL_SOCKET, SO_TIMESTAMPNS, 1);
                let _ = setsockopt_int(fd, libc::SOL_SOCKET, SO_RXQ_OVFL, 1);
                if setsockopt_int(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20).is_err() {
                    let _ = s.set_recv_buffer_size(64 << 20);
                }
                let _ = s.set_send_buffer_size(8 << 20);
                s.set_nonblocking(true)
                    .map_err(|e| format!("nonblocking: {e}"))?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(format!("bind 0.0.0.0:{port}: {e} (pick another --port)")),
        }
    }
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

// ------------------------------------------------------------------ report

#[derive(Serialize, Clone, Debug, Default)]
struct LatencyUs {
    samples: u64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize, Debug, Default)]
struct DirReport {
    sent: u64,
    received: u64,
    lost: i64,
    loss_pct: f64,
    reordered: u64,
    duplicates: u64,
}

#[derive(Serialize, Debug, Default)]
struct GenReport {
    target_send_pps: f64,
    achieved_send_pps: f64,
    tick_us: u64,
    batch: usize,
    lag_us: LatencyUs,
    late_over_1ms: u64,
    skipped_sends: u64,
    send_errors: u64,
    kept_schedule: bool,
    /// Why not, when it did not.
    schedule_problems: Vec<String>,
    cpu_pct: f64,
    sink_socket_drops: u64,
}

#[derive(Serialize, Debug, Default)]
struct SinkReport {
    latency_clock: String,
    foreign: u64,
    misrouted: u64,
    prime: u64,
    unmeasured: u64,
    clock_anomalies: u64,
}

#[derive(Serialize, Debug)]
struct RelayReport {
    pid: u32,
    /// The relay process plus `extra_pids`, % of one core.
    cpu_pct: f64,
    relayed_pps_per_core: f64,
    /// Processes also counted as the relay's (`--relay-extra-pids`).
    extra_pids: Vec<u32>,
    /// The relay process alone.
    process_cpu_pct: f64,
    /// `extra_pids` together.
    extra_cpu_pct: f64,
}

#[derive(Serialize, Debug)]
struct NgReport {
    retransmits: u64,
    garbage_replies: u64,
    stray_replies: u64,
    setup_s: f64,
    delete_failures: u64,
    first_delete_error: Option<String>,
}

#[derive(Serialize, Debug)]
struct Report {
    tool: &'static str,
    target: String,
    mode: String,
    calls: usize,
    calls_active: usize,
    setup_failures: usize,
    first_setup_error: Option<String>,
    pps_per_leg_dir: Option<u32>,
    payload: usize,
    rtcp_mux: bool,
    /// SRTP suite of leg A (leg B plain), if any.
    srtp: Option<&'static str>,
    /// SRTP packets received at leg A that failed to unprotect.
    srtp_errors: u64,
    /// SRTP packets the generator failed to protect (none expected).
    srtp_protect_errors: u64,
    warmup_s: f64,
    duration_s: f64,
    /// Both directions together (same keys as each direction's figures).
    #[serde(flatten)]
    total: DirReport,
    relayed_pps: f64,
    latency_us: LatencyUs,
    /// Send to the generator's read (includes the generator's own delay).
    latency_user_us: LatencyUs,
    a_to_b: DirReport,
    b_to_a: DirReport,
    generator: GenReport,
    sink: SinkReport,
    relay: Option<RelayReport>,
    ng: Option<NgReport>,
    system_udp_rcvbuf_errors: Option<u64>,
}

fn pct(part: i64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        ((part as f64 / whole as f64 * 100.0) * 10_000.0).round() / 10_000.0
    }
}

fn render_table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "loadgen → {}   mode {}   payload {} B{}{}",
        r.target,
        r.mode,
        r.payload,
        if r.rtcp_mux { "   rtcp-mux" } else { "" },
        r.srtp
            .map(|x| format!("   leg A SRTP {x}, leg B RTP"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "calls {} (active {}, setup failures {}{})   measured {:.2} s after {:.1} s warm-up",
        r.calls,
        r.calls_active,
        r.setup_failures,
        r.first_setup_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        r.duration_s,
        r.warmup_s
    );
    let _ = writeln!(
        s,
        "{:<8} {:>12} {:>12} {:>10} {:>9} {:>10} {:>6}",
        "", "sent", "received", "lost", "loss %", "reordered", "dup"
    );
    let row = |s: &mut String, name: &str, d: &DirReport| {
        let _ = writeln!(
            s,
            "{:<8} {:>12} {:>12} {:>10} {:>9.4} {:>10} {:>6}",
            name, d.sent, d.received, d.lost, d.loss_pct, d.reordered, d.duplicates
        );
    };
    row(&mut s, "A->B", &r.a_to_b);
    row(&mut s, "B->A", &r.b_to_a);
    row(&mut s, "total", &r.total);
    let _ = writeln!(s, "relayed {:.0} pkt/s", r.relayed_pps);
    let l = &r.latency_us;
    let _ = writeln!(
        s,
        "one-way latency µs ({}): p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  mean {:.1}",
        r.sink.latency_clock, l.p50, l.p99, l.p999, l.max, l.mean
    );
    let u = &r.latency_user_us;
    let _ = writeln!(
        s,
        "  to the generator's read (incl. its own delay): p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        u.p50, u.p99, u.p999, u.max
    );
    let g = &r.generator;
    let _ = writeln!(
        s,
        "generator: send {:.0}/{:.0} pkt/s, lag µs p50 {:.0} p99 {:.0} max {:.0}, late>1ms {}, skipped {}, send errors {}, own-socket drops {}, CPU {:.1}%",
        g.achieved_send_pps,
        g.target_send_pps,
        g.lag_us.p50,
        g.lag_us.p99,
        g.lag_us.max,
        g.late_over_1ms,
        g.skipped_sends,
        g.send_errors,
        g.sink_socket_drops,
        g.cpu_pct
    );
    if let Some(rel) = &r.relay {
        let _ = writeln!(
            s,
            "relay pid {}: CPU {:.1}% of a core, {:.0} relayed pkt/s per core",
            rel.pid, rel.cpu_pct, rel.relayed_pps_per_core
        );
        if !rel.extra_pids.is_empty() {
            let _ = writeln!(
                s,
                "  of which the relay process {:.1}%, pids {:?} {:.1}%",
                rel.process_cpu_pct, rel.extra_pids, rel.extra_cpu_pct
            );
        }
    }
    if let Some(e) = r.system_udp_rcvbuf_errors {
        let _ = writeln!(s, "system UDP RcvbufErrors during the run: {e}");
    }
    if r.srtp.is_some() {
        let _ = writeln!(
            s,
            "SRTP: unprotect failures {}, protect failures {}",
            r.srtp_errors, r.srtp_protect_errors
        );
    }
    let k = &r.sink;
    if k.foreign + k.misrouted + k.clock_anomalies > 0 {
        let _ = writeln!(
            s,
            "sink: foreign {} misrouted {} clock anomalies {}",
            k.foreign, k.misrouted, k.clock_anomalies
        );
    }
    if let Some(n) = &r.ng {
        if n.retransmits + n.garbage_replies + n.stray_replies + n.delete_failures > 0 {
            let _ = writeln!(
                s,
                "ng: retransmits {} garbage {} stray {} delete failures {}{}",
                n.retransmits,
                n.garbage_replies,
                n.stray_replies,
                n.delete_failures,
                n.first_delete_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            );
        }
    }
    if r.total.sent > 0 && r.total.received == 0 {
        let _ = writeln!(
            s,
            "WARNING: nothing came back: is the relay running, on these ports, and reading?"
        );
    }
    if !g.kept_schedule && r.pps_per_leg_dir.is_some() {
        let _ = writeln!(
            s,
            "WARNING: the generator did not keep its schedule ({}): loss or latency may be the generator's, not the relay's",
            g.schedule_problems.join("; ")
        );
    } else if r.pps_per_leg_dir.is_none() && g.sink_socket_drops > 0 {
        let _ = writeln!(
            s,
            "WARNING: {} packets dropped at the generator's own socket",
            g.sink_socket_drops
        );
    }
    s
}

// -------------------------------------------------------------------- main

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("loadgen: {e}");
            }
            eprint!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    match run(&a) {
        Ok(report) => {
            print!("{}", render_table(&report));
            // Exit 3 when the run measured nothing (no call set up, or
            // nothing came back), so scripts notice; the report still stands.
            let failed =
                report.calls_active == 0 || (report.total.sent > 0 && report.total.received == 0);
            if let Some(path) = &a.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(j) => {
                        if let Err(e) = std::fs::write(path, j + "\n") {
                            eprintln!("loadgen: writing {path}: {e}");
                            std::process::exit(1);
                        }
                    }
                    Err(e) => {
                        eprintln!("loadgen: json: {e}");
                        std::process::exit(1);
                    }
                }
            }
            if failed {
                std::process::exit(3);
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

fn run(a: &Args) -> Result<Report, String> {
    // SAFETY: installing a handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    if let Some(c) = a.cpu {
        pin_cpu(c).map_err(|e| format!("--cpu {c}: {e}"))?;
    }
    if let Some(p) = a.rt_prio {
        let param = libc::sched_param { sched_priority: p };
        // SAFETY: valid sched_param for this thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
            return Err(format!("--rt-prio {p}: {}", io::Error::last_os_error()));
        }
    }
    let mut rng = mono() ^ ((std::process::id() as u64) << 32) ^ 0x9e37_79b9_7f4a_7c15;
    xorshift(&mut rng);
    let run_id = xorshift(&mut rng) as u32;
    let n = a.calls;
    let legdirs = 2 * n;

    // One socket for both legs, or one per leg side when the sides live in
    // different network namespaces.
    let mut socks = vec![in_netns(a.netns_a.as_deref(), || media_socket(a.port))?];
    if a.netns_a != a.netns_b {
        socks.push(in_netns(a.netns_b.as_deref(), || media_socket(a.port))?);
    }
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let fds = fds.as_slice();

    // ---- set-up
    let setup_start = Instant::now();
    let mut ng = None;
    // Leg A's SRTP key||salt per call: fresh from the OS CSPRNG.
    let offer_keys: Vec<Vec<u8>> = match a.srtp {
        Some(suite) => (0..n)
            .map(|_| {
                let mut k = vec![0u8; suite.master_key_len() + suite.master_salt_len()];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                k
            })
            .collect(),
        None => Vec::new(),
    };
    let dests: Vec<CallDests> = if let Some(addr) = a.ng {
        let mut c = Ng::new(addr, a, run_id).map_err(|e| format!("ng socket: {e}"))?;
        let mut ping = Value::dict();
        ping.insert("command", "ping");
        let saved = c.retries;
        c.retries = 2;
        if let Some(Err(e)) = c.batch(&[ping]).pop() {
            return Err(format!("ng {addr} does not answer ping: {e}"));
        }
        c.retries = saved;
        let d = setup_calls(&mut c, a, run_id, &offer_keys);
        ng = Some(c);
        d
    } else {
        let base = a.bare_base_port.unwrap_or(0);
        (0..n)
            .map(|i| {
                Ok((
                    SocketAddrV4::new(a.relay_addr, base + 2 * i as u16),
                    SocketAddrV4::new(a.relay_addr, base + 2 * i as u16 + 1),
                    None,
                ))
            })
            .collect()
    };
    let setup_s = setup_start.elapsed().as_secs_f64();
    let mut setup_failures = 0;
    let mut first_setup_error = None;
    let mut active_calls = Vec::new();
    let mut tx: Vec<TxLeg> = Vec::with_capacity(legdirs);
    let mut expect_dst = Vec::with_capacity(legdirs);
    let unroutable = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9);
    let mut rx_srtp: Vec<Option<SrtpContext>> = Vec::new();
    if a.srtp.is_some() {
        rx_srtp.resize_with(legdirs, || None);
    }
    for (i, d) in dests.into_iter().enumerate() {
        let (a_dst, b_dst, relay_key) = match d {
            Ok(p) => {
                active_calls.push(i);
                p
            }
            Err(e) => {
                setup_failures += 1;
                first_setup_error.get_or_insert(e);
                (unroutable, unroutable, None)
            }
        };
        let mut a_tx_ctx = None;
        if let (Some(suite), Some(rk)) = (a.srtp, relay_key) {
            a_tx_ctx = Some(srtp_context(suite, &offer_keys[i])?);
            rx_srtp[2 * i] = Some(srtp_context(suite, &rk)?);
        }
        let ip_a = a.nets.ip(2 * i);
        let ip_b = a.nets.ip(2 * i + 1);
        for (dst, src, rcv, ctx) in [(a_dst, ip_a, ip_b, a_tx_ctx), (b_dst, ip_b, ip_a, None)] {
            tx.push(TxLeg {
                dst: sockaddr_in(dst),
                src: in_addr(src),
                ssrc: xorshift(&mut rng) as u32,
                ts0: xorshift(&mut rng) as u32,
                next_seq: 0,
                sent_measured: 0,
                sent_total: 0,
                srtp: ctx,
            });
            expect_dst.push(u32::from(rcv));
        }
    }
    if !a.quiet {
        eprintln!(
            "loadgen: {} of {} calls set up in {:.2} s{}",
            active_calls.len(),
            n,
            setup_s,
            first_setup_error
                .as_deref()
                .map(|e| format!(" (first failure: {e})"))
                .unwrap_or_default()
        );
    }
    let active: Vec<u32> = active_calls
        .iter()
        .flat_map(|&i| [2 * i as u32, 2 * i as u32 + 1])
        .collect();

    let mut sink = Sink {
        run_id,
        rx: vec![RxLeg::default(); legdirs],
        expect_dst,
        lat: Hist::new(),
        lat_user: Hist::new(),
        foreign: 0,
        misrouted: 0,
        prime: 0,
        unmeasured: 0,
        clock_anomalies: 0,
        kernel_ts: 0,
        user_ts: 0,
        ovfl_last: vec![0; fds.len()],
        rt_offset: realtime_offset(),
        received_total: 0,
        nets: a.nets,
        rx_srtp,
        srtp_errors: 0,
    };
    let mut sb = Senders::new(fds, a.batch, RTP_HDR + a.payload);
    let mut rb = RecvBatch::new(64);
    let ts_step = (8000 / a.pps).max(1);
    let mut send_errors = 0u64;

    // Discard anything left in the socket from an earlier run.
    for &fd in fds {
        while rb.recv(fd) > 0 {}
    }

    // ---- prime (bare mode: the relay learns each leg from its first packet)
    if a.bare_base_port.is_some() && !active.is_empty() {
        for _round in 0..3 {
            for &d in &active {
                if sb.full() {
                    send_errors += sb.flush(&mut tx).1;
                    sink.drain(fds, &mut rb, 64);
                }
                sb.push(d, &mut tx[d as usize], run_id, FLAG_PRIME, ts_step);
            }
            send_errors += sb.flush(&mut tx).1;
            let until = mono() + 30_000_000;
            while mono() < until {
                if sink.drain(fds, &mut rb, 64).0 == 0 {
                    sleep_until(mono() + 1_000_000);
                }
            }
        }
    }

    // ---- traffic
    let warm_ns = (a.warmup_s * 1e9) as u64;
    let dur_ns = (a.duration_s * 1e9) as u64;
    let tick = a.tick_us * 1000;
    let t0 = mono() + 10_000_000;
    let t_measure = t0 + warm_ns;
    let t_end = t_measure + dur_ns;
    let period_ns = 1_000_000_000u128 / a.pps as u128;
    let r_active = active.len() as u128;
    // Packet g is due at T(g) = t0 + g·period/legdirs, quantised up to a tick.
    let due = |g: u64| -> u64 {
        let t = (g as u128 * period_ns / r_active.max(1)) as u64;
        t0 + t.div_ceil(tick) * tick
    };
    let mut lag = Hist::new();
    let mut late_1ms = 0u64;
    let mut skipped = 0u64;
    let max_lag = a.max_lag_ms * 1_000_000;
    let mut g: u64 = 0;
    let mut mark: Option<Mark> = None;
    let mut last_progress = mono();
    let mut progress_sent = 0u64;
    let mut progress_recv = 0u64;
    let mut total_sent = 0u64;

    if !active.is_empty() {
        sleep_until(t0);
        loop {
            if STOP.load(Ordering::Relaxed) {
                break;
            }
            let mut now = mono();
            if mark.is_none() && now >= t_measure {
                mark = Some((
                    now,
                    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
                    relay_cpu_ns(a),
                    udp_rcvbuf_errors(),
                ));
            }
            let mut finished = false;
            if a.flat {
                if now >= t_end {
                    break;
                }
                let flags = if now >= t_measure { FLAG_MEASURED } else { 0 };
                while !sb.full() {
                    let d = active[(g % r_active as u64) as usize];
                    sb.push(d, &mut tx[d as usize], run_id, flags, ts_step);
                    g += 1;
                }
                let (s, e) = sb.flush(&mut tx);
                total_sent += s;
                send_errors += e;
                sink.drain(fds, &mut rb, 4);
            } else {
                loop {
                    let q = due(g);
                    if q >= t_end {
                        finished = true;
                        break;
                    }
                    if q > now {
                        break;
                    }
                    let l = now - q;
                    if l > max_lag {
                        skipped += 1;
                        g += 1;
                        continue;
                    }
                    if sb.full() {
                        let (s, e) = sb.flush(&mut tx);
                        total_sent += s;
                        send_errors += e;
                        now = mono();
                        continue;
                    }
                    lag.record(l);
                    if l > 1_000_000 {
                        late_1ms += 1;
                    }
                    let d = active[(g % r_active as u64) as usize];
                    let flags = if q >= t_measure { FLAG_MEASURED } else { 0 };
                    sb.push(d, &mut tx[d as usize], run_id, flags, ts_step);
                    g += 1;
                }
                let (s, e) = sb.flush(&mut tx);
                total_sent += s;
                send_errors += e;
                // A bounded drain, so receiving never holds sends up for
                // long; when more is waiting, go round (sends first) again.
                let (_, more) = sink.drain(fds, &mut rb, 4);
                if finished {
                    break;
                }
                if more {
                    continue;
                }
                let next = due(g);
                if next > mono() {
                    sleep_until(next);
                }
            }
            if !a.quiet && now >= last_progress + 5_000_000_000 {
                let dt = (now - last_progress) as f64 / 1e9;
                eprintln!(
                    "loadgen: t={:.0}s send {:.0}/s recv {:.0}/s",
                    (now.saturating_sub(t0)) as f64 / 1e9,
                    (total_sent - progress_sent) as f64 / dt,
                    (sink.received_total - progress_recv) as f64 / dt
                );
                last_progress = now;
                progress_sent = total_sent;
                progress_recv = sink.received_total;
            }
        }
    }
    let t_stop = mono();
    let end_mark = (
        t_stop,
        clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
        relay_cpu_ns(a),
        udp_rcvbuf_errors(),
    );
    // Drain stragglers.
    let drain_until = mono() + a.drain_ms * 1_000_000;
    while mono() < drain_until {
        if sink.drain(fds, &mut rb, 64).0 == 0 {
            let mut pfds: Vec<libc::pollfd> = fds
                .iter()
                .map(|&fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let left_ms =
                (drain_until.saturating_sub(mono()) / 1_000_000).clamp(1, 10) as libc::c_int;
            // SAFETY: valid pollfds, as many as passed.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, left_ms) };
        }
    }

    // ---- tear down
    let (delete_failures, first_delete_error) = match ng.as_mut() {
        Some(c) => delete_calls(c, run_id, &active_calls),
        None => (0, None),
    };

    // ---- figures
    let interrupted = STOP.load(Ordering::Relaxed);
    let (m_t, m_cpu, m_relay, m_snmp) =
        mark.unwrap_or((t_stop, end_mark.1, end_mark.2, end_mark.3));
    let window_ns = end_mark.0.saturating_sub(m_t).max(1);
    let measured_s = if a.flat || interrupted {
        window_ns as f64 / 1e9
    } else {
        a.duration_s
    };
    let mut dirs = [DirReport::default(), DirReport::default()];
    for (d, (t, r)) in tx.iter().zip(sink.rx.iter()).enumerate() {
        let x = &mut dirs[d % 2];
        x.sent += t.sent_measured;
        x.received += r.received;
        x.reordered += r.reordered;
        x.duplicates += r.dups;
    }
    for x in dirs.iter_mut() {
        x.lost = x.sent as i64 - x.received as i64;
        x.loss_pct = pct(x.lost, x.sent);
    }
    let sent = dirs[0].sent + dirs[1].sent;
    let received = dirs[0].received + dirs[1].received;
    let lost = sent as i64 - received as i64;
    let gen_cpu = (end_mark.1.saturating_sub(m_cpu)) as f64 / window_ns as f64 * 100.0;
    let relayed_pps = received as f64 / measured_s;
    let relay = match (a.relay_pid, m_relay, end_mark.2) {
        (Some(pid), Some(x), Some(y)) => {
            let own = y.0.saturating_sub(x.0) as f64 / window_ns as f64;
            let extra = y.1.saturating_sub(x.1) as f64 / window_ns as f64;
            let cpu = own + extra;
            Some(RelayReport {
                pid,
                cpu_pct: (cpu * 1000.0).round() / 10.0,
                relayed_pps_per_core: if cpu > 0.0 {
                    (relayed_pps / cpu).round()
                } else {
                    0.0
                },
                extra_pids: a.relay_extra_pids.clone(),
                process_cpu_pct: (own * 1000.0).round() / 10.0,
                extra_cpu_pct: (extra * 1000.0).round() / 10.0,
            })
        }
        _ => None,
    };
    // SO_RXQ_OVFL is the socket's cumulative drop count; the socket is this run's.
    let sink_drops: u64 = sink.ovfl_last.iter().map(|&o| u64::from(o)).sum();
    let target_send_pps = if a.flat {
        0.0
    } else {
        active.len() as f64 * a.pps as f64
    };
    let mut schedule_problems = Vec::new();
    if a.flat {
        schedule_problems.push("flat mode has no schedule".to_string());
    }
    if skipped > 0 {
        schedule_problems.push(format!(
            "{skipped} sends skipped (> {} ms late)",
            a.max_lag_ms
        ));
    }
    if (late_1ms as f64) > 0.001 * (lag.count.max(1) as f64) {
        schedule_problems.push(format!("{late_1ms} sends > 1 ms late (over 0.1%)"));
    }
    if sink_drops > 0 {
        schedule_problems.push(format!(
            "{sink_drops} packets dropped at the generator's own socket"
        ));
    }
    if send_errors > 0 {
        schedule_problems.push(format!("{send_errors} send errors"));
    }
    let kept_schedule = schedule_problems.is_empty();
    let report = Report {
        tool: "loadgen",
        target: match a.ng {
            Some(x) => format!("ng {x}"),
            None => format!("bare {}:{}+", a.relay_addr, a.bare_base_port.unwrap_or(0)),
        },
        mode: if a.flat {
            "flat".into()
        } else {
            format!("paced {} pps/leg/dir", a.pps)
        },
        calls: n,
        calls_active: active_calls.len(),
        setup_failures,
        first_setup_error,
        pps_per_leg_dir: if a.flat { None } else { Some(a.pps) },
        payload: a.payload,
        rtcp_mux: a.rtcp_mux,
        srtp: a.srtp.map(SrtpSuite::sdes_name),
        srtp_errors: sink.srtp_errors,
        srtp_protect_errors: sb.protect_errors(),
        warmup_s: a.warmup_s,
        duration_s: (measured_s * 1000.0).round() / 1000.0,
        total: DirReport {
            sent,
            received,
            lost,
            loss_pct: pct(lost, sent),
            reordered: dirs[0].reordered + dirs[1].reordered,
            duplicates: dirs[0].duplicates + dirs[1].duplicates,
        },
        relayed_pps: relayed_pps.round(),
        latency_us: sink.lat.summary(),
        latency_user_us: sink.lat_user.summary(),
        a_to_b: std::mem::take(&mut dirs[0]),
        b_to_a: std::mem::take(&mut dirs[1]),
        generator: GenReport {
            target_send_pps,
            achieved_send_pps: (sent as f64 / measured_s).round(),
            tick_us: a.tick_us,
            batch: a.batch,
            lag_us: lag.summary(),
            late_over_1ms: late_1ms,
            skipped_sends: skipped,
            send_errors,
            kept_schedule,
            schedule_problems,
            cpu_pct: (gen_cpu * 10.0).round() / 10.0,
            sink_socket_drops: sink_drops,
        },
        sink: SinkReport {
            latency_clock: if sink.kernel_ts >= sink.user_ts {
                "kernel rx timestamp".into()
            } else {
                "user recv time".into()
            },
            foreign: sink.foreign,
            misrouted: sink.misrouted,
            prime: sink.prime,
            unmeasured: sink.unmeasured,
            clock_anomalies: sink.clock_anomalies,
        },
        relay,
        ng: ng.as_ref().map(|c| NgReport {
            retransmits: c.retransmits,
            garbage_replies: c.garbage,
            stray_replies: c.stray,
            setup_s: (setup_s * 1000.0).round() / 1000.0,
            delete_failures,
            first_delete_error,
        }),
        system_udp_rcvbuf_errors: match (m_snmp, end_mark.3) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x)),
            _ => None,
        },
    };
    Ok(report)
}

#[cfg(test)]
mod test {
    use super::*;
    use kolokol::sdp::crypto::base64_encode;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn cli_bounds() {
        assert!(args("--ng 127.0.0.1:2223 --calls 10 --duration-s 5").is_ok());
        assert!(args("--ng 127.0.0.1:2223 --calls 20001 --duration-s 5").is_err());
        assert!(args("--ng 127.0.0.1:2223 --calls 10 --duration-s 4000").is_err());
        assert!(args("--ng 127.0.0.1:2223 --calls 10").is_err());
        assert!(args("--calls 10 --duration-s 5").is_err());
        assert!(
            args("--ng 127.0.0.1:2223 --bare-base-port 30000 --calls 10 --duration-s 5").is_err()
        );
        assert!(args("--ng 127.0.0.1:2223 --calls 10 --duration-s 5 --payload 8").is_err());
        assert!(args("--ng nonsense --calls 10 --duration-s 5").is_err());
        assert!(args("--bare-base-port 65000 --calls 1000 --duration-s 5").is_err());
        assert!(args("--bare-base-port 15000 --calls 1000 --duration-s 5").is_err());
        assert!(args("--bare-base-port 15000 --calls 1000 --duration-s 5 --port 18000").is_ok());
        let a =
            args("--ng=127.0.0.1:2223 --calls=3 --duration-s=1 --flat --src-net 127.7").unwrap();
        assert!(a.flat);
        assert_eq!(
            a.nets,
            LegNets {
                a: [127, 7],
                b: [127, 7]
            }
        );
        assert_eq!(a.batch, 64);
        assert!(a.netns_a.is_none() && a.relay_extra_pids.is_empty());
        let a = args(
            "--ng 127.0.0.1:2223 --calls 3 --duration-s 1 --src-net 10.81 --src-net-b 10.82 \
             --netns-a kxgen --netns-b kxsink --ng-netns kxgw --relay-extra-pids 10,20",
        )
        .unwrap();
        assert_eq!(
            a.nets,
            LegNets {
                a: [10, 81],
                b: [10, 82]
            }
        );
        assert_eq!(a.netns_a.as_deref(), Some("kxgen"));
        assert_eq!(a.netns_b.as_deref(), Some("kxsink"));
        assert_eq!(a.ng_netns.as_deref(), Some("kxgw"));
        assert_eq!(a.relay_extra_pids, vec![10, 20]);
        assert!(args("--ng 127.0.0.1:2223 --calls 3 --duration-s 1 --netns-a ../x").is_err());
        assert!(args("--ng 127.0.0.1:2223 --calls 3 --duration-s 1 --netns-b a/b").is_err());
        assert!(args("--ng 127.0.0.1:2223 --calls 3 --duration-s 1 --relay-extra-pids x").is_err());
    }

    #[test]
    fn src_net_and_leg_addresses() {
        assert_eq!(parse_src_net("127.1"), Ok([127, 1]));
        assert_eq!(parse_src_net("127.3.0.0/16"), Ok([127, 3]));
        assert_eq!(parse_src_net("10.81"), Ok([10, 81]));
        assert!(parse_src_net("127.0").is_err());
        assert!(parse_src_net("127.255").is_err());
        assert!(parse_src_net("0.1").is_err());
        assert!(parse_src_net("224.1").is_err());
        assert!(parse_src_net("127.1.2").is_err());
        assert!(parse_src_net("10").is_err());
        let lo = [127, 1];
        assert_eq!(leg_ip(lo, 0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(leg_ip(lo, 253), Ipv4Addr::new(127, 1, 0, 254));
        assert_eq!(leg_ip(lo, 254), Ipv4Addr::new(127, 1, 1, 1));
        let mut seen = std::collections::HashSet::new();
        for j in 0..2 * MAX_CALLS {
            let ip = leg_ip(lo, j);
            assert!(ip.octets()[3] != 0 && ip.octets()[3] != 255);
            assert!(seen.insert(ip));
        }
        // Two /16s: leg A (even) from one, leg B (odd) from the other, and
        // back again; an address of the wrong side is no leg.
        let nets = LegNets {
            a: [10, 81],
            b: [10, 82],
        };
        assert_eq!(nets.ip(0), Ipv4Addr::new(10, 81, 0, 1));
        assert_eq!(nets.ip(1), Ipv4Addr::new(10, 82, 0, 2));
        for j in [0usize, 1, 253, 254, 1000, 39_999] {
            assert_eq!(nets.index(u32::from(nets.ip(j))), Some(j));
        }
        assert_eq!(nets.index(u32::from(Ipv4Addr::new(10, 81, 0, 2))), None);
        assert_eq!(nets.index(u32::from(Ipv4Addr::new(10, 82, 0, 1))), None);
        let same = LegNets { a: lo, b: lo };
        for j in [0usize, 1, 2, 3] {
            assert_eq!(same.index(u32::from(same.ip(j))), Some(j));
        }
    }

    #[test]
    fn sdp_addresses() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40002 RTP/AVP 0 8\r\na=rtcp:40003\r\n";
        assert_eq!(sdp_audio_addr(sdp), Ok("127.0.0.1:40002".parse().unwrap()));
        let sdp = "v=0\r\nc=IN IP4 1.1.1.1\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 2.2.2.2\r\n\
                   m=audio 6000 RTP/AVP 0\r\nc=IN IP4 3.3.3.3\r\nm=audio 7000 RTP/AVP 0\r\n";
        assert_eq!(sdp_audio_addr(sdp), Ok("3.3.3.3:6000".parse().unwrap()));
        assert!(sdp_audio_addr("v=0\r\nc=IN IP4 1.1.1.1\r\nm=audio 0 RTP/AVP 0\r\n").is_err());
        assert!(sdp_audio_addr("v=0\r\nm=audio 5 RTP/AVP 0\r\n").is_err());
        assert!(sdp_audio_addr("garbage").is_err());
        assert!(sdp_audio_addr("c=IN IP6 ::1\r\nm=audio 5 RTP/AVP 0\r\n").is_err());
        let mine = make_sdp(Ipv4Addr::new(127, 1, 0, 1), 16000, 5, true, None);
        assert_eq!(
            sdp_audio_addr(&mine),
            Ok("127.1.0.1:16000".parse().unwrap())
        );
        assert!(mine.contains("a=rtcp-mux"));
    }

    #[test]
    fn srtp_sdp_and_leg_index() {
        let suite = SrtpSuite::AesCm128HmacSha1_80;
        let key: Vec<u8> = (0..30).collect();
        let line = CryptoAttr {
            tag: 1,
            suite: suite.sdes_name().into(),
            key_salt: key.clone(),
            lifetime: None,
        }
        .to_line();
        let sdp = make_sdp(Ipv4Addr::new(127, 1, 0, 1), 16000, 5, false, Some(&line));
        assert!(sdp.contains("m=audio 16000 RTP/SAVP 0 8\r\n"));
        assert!(sdp.contains(&format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
            base64_encode(&key)
        )));
        assert_eq!(sdp_crypto_key(&sdp, suite), Ok(key));
        assert!(sdp_crypto_key(&sdp, SrtpSuite::AesCm128HmacSha1_32).is_err());
        assert!(sdp_crypto_key("m=audio 5 RTP/AVP 0\r\n", suite).is_err());
        for j in [0usize, 1, 253, 254, 1000, 65_023] {
            assert_eq!(leg_index([127, 1], u32::from(leg_ip([127, 1], j))), Some(j));
        }
        assert_eq!(leg_index([127, 2], u32::from(leg_ip([127, 1], 3))), None);
        // A packet protected by one context unprotects with the same key.
        let mut tx = srtp_context(suite, &(0..30).collect::<Vec<u8>>()).unwrap();
        let mut rx = srtp_context(suite, &(0..30).collect::<Vec<u8>>()).unwrap();
        let mut buf = [0u8; 200];
        buf[0] = 0x80;
        buf[12..16].copy_from_slice(b"KLKG");
        let n = tx.protect_rtp(&mut buf, 172).unwrap();
        assert_eq!(n, 182);
        assert_eq!(rx.unprotect_rtp(&mut buf, n), Ok(172));
        assert_eq!(&buf[12..16], b"KLKG");
    }

    #[test]
    fn replies() {
        assert!(interpret_reply(b"d6:result2:oke").is_ok());
        assert_eq!(
            interpret_reply(b"d6:result5:error12:error-reason3:bade"),
            Err("bad".into())
        );
        assert!(interpret_reply(b"garbage").is_err());
        assert!(interpret_reply(b"").is_err());
        assert!(interpret_reply(b"d3:foo3:bare").is_err());
    }

    #[test]
    fn sequence_verdicts() {
        let mut r = RxLeg::default();
        assert_eq!(r.observe(0), SeqVerdict::New);
        assert_eq!(r.observe(1), SeqVerdict::New);
        assert_eq!(r.observe(3), SeqVerdict::New);
        assert_eq!(r.observe(2), SeqVerdict::Reordered);
        assert_eq!(r.observe(2), SeqVerdict::Duplicate);
        assert_eq!(r.observe(3), SeqVerdict::Duplicate);
        assert_eq!(r.observe(1000), SeqVerdict::New);
        assert_eq!(r.observe(999), SeqVerdict::Reordered);
        assert_eq!(r.observe(1), SeqVerdict::Reordered);
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Hist::new();
        for us in 1..=1000u64 {
            h.record(us * 1000 + 500);
        }
        assert_eq!(h.quantile_us(0.5), 500.0);
        assert_eq!(h.quantile_us(0.99), 990.0);
        assert_eq!(h.max_ns, 1_000_500);
        h.record(50_000_000);
        h.record(5_000_000_000);
        assert_eq!(h.over, 1);
        assert!(h.quantile_us(1.0) >= 50_000.0);
        assert_eq!(Hist::new().quantile_us(0.5), 0.0);
    }

    #[test]
    fn packets_round_trip_and_garbage_is_rejected() {
        let mut tx = [TxLeg {
            dst: sockaddr_in("127.0.0.1:9".parse().unwrap()),
            src: in_addr(Ipv4Addr::new(127, 1, 0, 1)),
            ssrc: 7,
            ts0: 0,
            next_seq: 41,
            sent_measured: 0,
            sent_total: 0,
            srtp: None,
        }];
        let mut sb = SendBatch::new(4, RTP_HDR + 160);
        sb.push(0, &mut tx[0], 0xabcd, FLAG_MEASURED, 160);
        let pkt = sb.bufs[..RTP_HDR + 160].to_vec();
        let p = parse_packet(&pkt, 0xabcd).unwrap();
        assert_eq!((p.legdir, p.seq, p.flags), (0, 41, FLAG_MEASURED));
        assert!(parse_packet(&pkt, 0xabce).is_none());
        for cut in 0..pkt.len() {
            let _ = parse_packet(&pkt[..cut], 0xabcd);
        }
        let mut bad = pkt.clone();
        bad[0] = 0x9f; // CSRC count 15 + extension: points past the end
        assert!(parse_packet(&bad, 0xabcd).is_none());
        assert!(parse_packet(&[0u8; 3], 0).is_none());
    }
}
