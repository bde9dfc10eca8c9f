//! `apiload` — load and latency tool for the portal API (issue 5, SPEC N-6:
//! API request to first INVITE on the wire, p99 < 5 ms).
//!
//! It measures a separately started `kolokol run` (the bench configuration
//! is `benches/system/apibench.toml`; `benches/system/api_latency.sh` runs
//! the whole measurement) from one process that is both the portal and the
//! carrier, so both ends of the latency are read from the same monotonic
//! clock:
//!
//! 1. **SIP sink** (the trunk, `--sink`, default 127.0.0.1:5390). Every
//!    INVITE is timed and answered at once, statelessly, `486 Busy Here`
//!    (Via, From, To with a tag, Call-ID and CSeq copied), so calls end at
//!    once and nothing accumulates; the gateway's ACK is absorbed, any
//!    other request gets 200. The called number (Request-URI user part)
//!    says which API request the INVITE belongs to. Each INVITE has two
//!    times: when the sink read it, and the kernel's receive stamp
//!    (`SO_TIMESTAMPNS`, moved onto the monotonic clock by the wake-up
//!    delay measured against CLOCK_REALTIME right after the read), so the
//!    sink's own wake-up is not charged to the gateway. A retransmitted
//!    INVITE keeps its first time and is counted.
//! 2. **HTTP side.** Worker threads send `POST /v1/notifications` (account
//!    `--account`, digits "1", repeat 1, no confirmation), each to a number
//!    of its own, `+7900` and 7 digits, so no per-number limit can trip.
//!    With `--connection keep-alive` (the default) each worker holds one
//!    persistent HTTP/1.1 connection (`demo::client::Session`, opened and
//!    TLS-handshaken before the clock starts); with `close` every request
//!    opens a connection of its own (TLS handshake included, resumed when
//!    the session cache allows: the cost a portal without keep-alive pays).
//!    - **Paced** (`--rate R --duration-s S`): open loop. Request i is due
//!      at t0 + i/R whatever happened before; a free worker takes the next
//!      request, sleeps until it is due and sends it. Both latencies are
//!      measured from the **due** time, so a stall (in the gateway or in
//!      the tool: its lag is reported) is charged to every request it
//!      delays and coordinated omission is not hidden. `--workers N` must
//!      cover R x latency; the lag line says when it does not.
//!    - **Max** (`--max --workers K1,K2,..`): closed loop, one step per K:
//!      K workers send back to back for `--duration-s`; latencies are from
//!      the send. The sustained rate is the highest completed 2xx/s of a
//!      step in which >= 99.9 % of the answers were 2xx and >= 99.9 % of
//!      those had their INVITE at the sink.
//! 3. **Report**: per phase, p50/p90/p99/p99.9/max of API due -> INVITE
//!    and of the request latency (due -> response), counts (sent, 2xx,
//!    errors by status and problem code, INVITEs seen, missing,
//!    retransmitted, stray), achieved rate, and where the time goes: the
//!    server's own mean time to the response head (from `/metrics`), the
//!    gateway's CPU per request (`--server-pid`, schedstat), the tool's.
//!    `--json FILE` writes it all. The first `--warmup-s` of every phase
//!    is sent but not measured.
//!
//! The tool pins itself (all threads) to `--cpu` (default 1); run the
//! gateway under `taskset -c 0`.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kolokol::demo::client::{Client, Response};
use kolokol::sip::{response_to, Method, SipMessage, Uri};
use serde_json::{json, Value};

const USAGE: &str = "\
usage: apiload [--rate R --duration-s S | --max --duration-s S] [options]

  --api ADDR:PORT       the gateway's API (default 127.0.0.1:8543, https)
  --ca FILE             CA of the API's certificate (default config/tls/test-ca.crt)
  --token JWT           bearer token (default: minted with the test ES256 key,
                        scope notifications:write, as `kolokol token` does)
  --sink ADDR:PORT      the SIP sink, the gateway's trunk (default 127.0.0.1:5390)
  --rate R              paced mode: requests/s (default 200)
  --duration-s S        measured seconds per phase (default 20)
  --warmup-s W          unmeasured seconds before each phase (default 1)
  --max                 closed loop, one step per --workers entry: the
                        sustained requests/s
  --workers LIST        paced: worker threads (default 8); --max: comma list
                        of concurrencies, one step each (default 1,4,16)
  --connection MODE     keep-alive (default: one persistent connection per
                        worker) or close (a new TLS connection per request)
  --account A           account in the requests (default bench)
  --number-base B       first number is +7900 and B (7 digits, wrapping);
                        default derived from the clock, so reruns against
                        the same gateway use fresh numbers
  --idempotency         send an Idempotency-Key with every request
  --drain-ms D          wait for late INVITEs after a phase (default 2000)
  --pause-ms P          pause between --max steps (default 1000)
  --max-requests N      cap on requests per run (default 2000000)
  --cpu C|none          pin the tool to CPU C (default 1)
  --server-pid PID      report the gateway's CPU per request (schedstat)
  --json FILE           write the report as JSON
  --quiet               no progress lines

Exit status: 0 measured, 1 could not run, 2 bad arguments, 3 nothing
measured or a paced phase lost requests (non-2xx or missing INVITEs).
";

/// Numbers are `+7900` and this many digits.
const NUMBER_SPACE: u64 = 10_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnMode {
    KeepAlive,
    Close,
}

impl ConnMode {
    fn name(self) -> &'static str {
        match self {
            ConnMode::KeepAlive => "keep-alive",
            ConnMode::Close => "close",
        }
    }
}

#[derive(Debug)]
struct Args {
    api: SocketAddr,
    ca: PathBuf,
    token: Option<String>,
    sink: SocketAddr,
    rate: f64,
    duration_s: f64,
    warmup_s: f64,
    max: bool,
    workers: Option<Vec<usize>>,
    conn: ConnMode,
    account: String,
    number_base: Option<u64>,
    idempotency: bool,
    drain_ms: u64,
    pause_ms: u64,
    max_requests: usize,
    cpu: Option<usize>,
    server_pid: Option<u32>,
    json: Option<String>,
    quiet: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        api: "127.0.0.1:8543".parse().expect("literal"),
        ca: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/tls/test-ca.crt"
        )),
        token: None,
        sink: "127.0.0.1:5390".parse().expect("literal"),
        rate: 200.0,
        duration_s: 20.0,
        warmup_s: 1.0,
        max: false,
        workers: None,
        conn: ConnMode::KeepAlive,
        account: "bench".into(),
        number_base: None,
        idempotency: false,
        drain_ms: 2000,
        pause_ms: 1000,
        max_requests: 2_000_000,
        cpu: Some(1),
        server_pid: None,
        json: None,
        quiet: false,
    };
    let mut i = 0;
    while i < argv.len() {
        let raw = argv[i].as_str();
        let (key, inline) = match raw.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k, Some(v.to_string())),
            _ => (raw, None),
        };
        i += 1;
        match key {
            "--max" => {
                a.max = true;
                continue;
            }
            "--idempotency" => {
                a.idempotency = true;
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
            "--api" => a.api = num(key, &val)?,
            "--ca" => a.ca = PathBuf::from(val),
            "--token" => a.token = Some(val),
            "--sink" => a.sink = num(key, &val)?,
            "--rate" => a.rate = num(key, &val)?,
            "--duration-s" => a.duration_s = num(key, &val)?,
            "--warmup-s" => a.warmup_s = num(key, &val)?,
            "--workers" => {
                a.workers = Some(
                    val.split(',')
                        .map(|w| num::<usize>(key, w))
                        .collect::<Result<_, _>>()?,
                )
            }
            "--connection" => {
                a.conn = match val.as_str() {
                    "keep-alive" | "keepalive" => ConnMode::KeepAlive,
                    "close" => ConnMode::Close,
                    _ => return Err(format!("--connection: keep-alive or close, not {val:?}")),
                }
            }
            "--account" => a.account = val,
            "--number-base" => a.number_base = Some(num(key, &val)?),
            "--drain-ms" => a.drain_ms = num(key, &val)?,
            "--pause-ms" => a.pause_ms = num(key, &val)?,
            "--max-requests" => a.max_requests = num(key, &val)?,
            "--cpu" => {
                a.cpu = if val == "none" {
                    None
                } else {
                    Some(num(key, &val)?)
                }
            }
            "--server-pid" => a.server_pid = Some(num(key, &val)?),
            "--json" => a.json = Some(val),
            _ => return Err(format!("unknown argument {key:?}")),
        }
    }
    if !(a.rate > 0.0 && a.rate <= 100_000.0) {
        return Err("--rate must be in (0, 100000]".into());
    }
    if !(a.duration_s > 0.0 && a.duration_s <= 3600.0) {
        return Err("--duration-s must be in (0, 3600]".into());
    }
    if !(0.0..=600.0).contains(&a.warmup_s) {
        return Err("--warmup-s must be in [0, 600]".into());
    }
    if let Some(w) = &a.workers {
        if w.is_empty() || w.iter().any(|&k| k == 0 || k > 1024) {
            return Err("--workers: each in 1..=1024".into());
        }
        if !a.max && w.len() != 1 {
            return Err("--workers: one number in paced mode".into());
        }
    }
    if a.number_base.is_some_and(|b| b >= NUMBER_SPACE) {
        return Err("--number-base: 7 digits".into());
    }
    if a.max_requests == 0 || a.max_requests as u64 > NUMBER_SPACE / 2 {
        return Err("--max-requests: 1..=5000000".into());
    }
    Ok(a)
}

// ------------------------------------------------------------------- clock

/// Nanoseconds on the monotonic clock since the tool's start: the one
/// clock both the HTTP side and the sink read.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }

    /// Sleeps until `due`, the last 200 µs spinning (timer slack and
    /// wake-up would otherwise add tens of microseconds to every request).
    fn sleep_until(&self, due: u64) {
        const SPIN_NS: u64 = 200_000;
        loop {
            let now = self.ns();
            if now >= due {
                return;
            }
            let left = due - now;
            if left > SPIN_NS {
                thread::sleep(Duration::from_nanos(left - SPIN_NS));
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

// -------------------------------------------------------------------- sink

/// What the sink saw, by request slot (0 = no INVITE yet).
struct Slots {
    /// When the sink read the INVITE.
    read: Vec<AtomicU64>,
    /// The kernel's receive time of the INVITE on the same clock.
    kernel: Vec<AtomicU64>,
    base: u64,
    retransmissions: AtomicU64,
    stray: AtomicU64,
    other_requests: AtomicU64,
    unparsable: AtomicU64,
    reply_errors: AtomicU64,
}

impl Slots {
    fn new(n: usize, base: u64) -> Slots {
        Slots {
            read: (0..n).map(|_| AtomicU64::new(0)).collect(),
            kernel: (0..n).map(|_| AtomicU64::new(0)).collect(),
            base,
            retransmissions: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            other_requests: AtomicU64::new(0),
            unparsable: AtomicU64::new(0),
            reply_errors: AtomicU64::new(0),
        }
    }

    fn number(&self, slot: usize) -> String {
        format!("+7900{:07}", (self.base + slot as u64) % NUMBER_SPACE)
    }

    /// The slot of a called number (the Request-URI user part).
    fn slot_of(&self, user: &str) -> Option<usize> {
        let d = user
            .strip_prefix('+')
            .unwrap_or(user)
            .strip_prefix("7900")?;
        if d.len() != 7 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u64 = d.parse().ok()?;
        let slot = ((n + NUMBER_SPACE - self.base) % NUMBER_SPACE) as usize;
        (slot < self.read.len()).then_some(slot)
    }
}

/// One datagram and its kernel receive time (CLOCK_REALTIME, ns).
fn recv_stamped(
    fd: libc::c_int,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, Option<u64>)> {
    let mut name = [0u8; 128];
    let mut ctrl = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer in it refers to a live
    // local buffer of the stated length for the duration of the call.
    let (n, msg) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = name.as_mut_ptr().cast();
        msg.msg_namelen = name.len() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctrl.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&ctrl);
        let n = libc::recvmsg(fd, &mut msg, 0);
        (n, msg)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let src = kolokol::sys::sockaddr_from_bytes(&name[..msg.msg_namelen as usize]);
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // bounded by msg_controllen; the payload read is a timespec as
    // SCM_TIMESTAMPNS promises.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, src, stamp))
}

/// The sink's loop: until `stop`.
fn sink(sock: UdpSocket, slots: Arc<Slots>, clock: Clock, stop: Arc<AtomicBool>) {
    let fd = sock.as_raw_fd();
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(2048);
    while !stop.load(Ordering::Relaxed) {
        let (n, src, stamp) = match recv_stamped(fd, &mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                eprintln!("apiload: sink: {e}");
                return;
            }
        };
        let read_ns = clock.ns();
        // Wake-up delay: kernel stamp to now, both on CLOCK_REALTIME, read
        // within a microsecond of the monotonic reading above.
        let wake_ns = stamp.map_or(0, |k| realtime_ns().saturating_sub(k));
        let kernel_ns = read_ns.saturating_sub(wake_ns);
        let Ok(msg) = SipMessage::parse(&buf[..n]) else {
            slots.unparsable.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(method) = msg.method() else {
            continue; // a response (to nothing we sent): ignore
        };
        let (code, reason) = match method {
            Method::Ack => continue,
            Method::Invite => {
                let user = match msg.request_uri() {
                    Some(Uri::Sip(u)) => u.user,
                    _ => None,
                };
                match user.and_then(|u| slots.slot_of(u)) {
                    Some(s) => {
                        if slots.read[s]
                            .compare_exchange(
                                0,
                                read_ns.max(1),
                                Ordering::AcqRel,
                                Ordering::Acquire,
                            )
                            .is_ok()
                        {
                            slots.kernel[s].store(kernel_ns.max(1), Ordering::Release);
                        } else {
                            slots.retransmissions.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        slots.stray.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (486, "Busy Here")
            }
            _ => {
                slots.other_requests.fetch_add(1, Ordering::Relaxed);
                (200, "OK")
            }
        };
        // A To tag derived from the Call-ID: the same for a retransmission.
        let tag = format!("{:016x}", fnv1a(msg.call_id().as_bytes()));
        out.clear();
        let to_tag = if code == 486 {
            Some(tag.as_str())
        } else {
            None
        };
        let sent = response_to(&msg, code, reason, to_tag, &mut out)
            .ok()
            .zip(src)
            .map(|(len, to)| sock.send_to(&out[..len], to));
        if !matches!(sent, Some(Ok(_))) {
            slots.reply_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn open_sink(addr: SocketAddr) -> Result<UdpSocket, String> {
    let sock = UdpSocket::bind(addr).map_err(|e| format!("sink {addr}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| format!("sink: {e}"))?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!(
            "sink: SO_TIMESTAMPNS: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(sock)
}

// ------------------------------------------------------------------- HTTP

/// One request's record.
#[derive(Clone, Copy, Debug)]
struct Rec {
    slot: usize,
    /// When it was due (paced) or sent (max).
    due: u64,
    sent: u64,
    done: u64,
    /// HTTP status; 0 = no answer (I/O error).
    status: u16,
}

#[derive(Default)]
struct WorkerOut {
    recs: Vec<Rec>,
    /// Error answers and I/O errors: "503 overloaded", "io: ...".
    errors: BTreeMap<String, u64>,
    connects: u64,
}

/// What every worker shares.
struct Shared {
    client: Client,
    conn: ConnMode,
    account: String,
    idempotency: bool,
    clock: Clock,
    slots: Arc<Slots>,
    /// Next slot to use (across phases: every request has its own number).
    next_slot: AtomicU64,
}

impl Shared {
    fn body(&self, slot: usize) -> Value {
        json!({
            "account": self.account,
            "number": self.slots.number(slot),
            "language": "en",
            "digits": "1",
            "repeat": 1,
            "require_confirmation": false,
        })
    }
}

/// A worker's connection: persistent or one per request.
enum Conn {
    Keep(kolokol::demo::client::Session),
    Close(Client),
}

impl Conn {
    fn new(sh: &Shared) -> io::Result<Conn> {
        Ok(match sh.conn {
            ConnMode::KeepAlive => {
                let mut s = sh.client.session();
                s.connect()?;
                Conn::Keep(s)
            }
            ConnMode::Close => Conn::Close(sh.client.clone()),
        })
    }

    fn post(&mut self, sh: &Shared, slot: usize, out: &mut WorkerOut) -> io::Result<Response> {
        let body = sh.body(slot);
        let key = format!("apiload-{}-{slot}", sh.slots.base);
        let idem = [("Idempotency-Key", key.as_str())];
        let headers: &[(&str, &str)] = if sh.idempotency { &idem } else { &[] };
        match self {
            Conn::Keep(s) => s.request("POST", "/v1/notifications", headers, Some(&body)),
            Conn::Close(c) => {
                out.connects += 1;
                c.request("POST", "/v1/notifications", headers, Some(&body))
            }
        }
    }

    fn connects(&self) -> u64 {
        match self {
            Conn::Keep(s) => s.connects(),
            Conn::Close(_) => 0,
        }
    }
}

fn record(out: &mut WorkerOut, r: io::Result<Response>) -> u16 {
    match r {
        Ok(resp) => {
            if !(200..300).contains(&resp.status) {
                let code = resp.json()["code"].as_str().unwrap_or("").to_string();
                *out.errors
                    .entry(format!("{} {code}", resp.status).trim().to_string())
                    .or_default() += 1;
            }
            resp.status
        }
        Err(e) => {
            *out.errors.entry(format!("io: {e}")).or_default() += 1;
            0
        }
    }
}

/// A phase's plan.
enum Plan {
    /// `count` requests, request i due at `t0 + i * period_ns`.
    Paced { t0: u64, period_ns: f64, count: u64 },
    /// Back to back until `end`.
    Closed { end: u64 },
}

/// Runs one phase with `workers` threads; returns their records.
fn run_phase(
    sh: &Arc<Shared>,
    workers: usize,
    plan: Arc<Plan>,
    cap: usize,
) -> Result<Vec<WorkerOut>, String> {
    let barrier = Arc::new(Barrier::new(workers + 1));
    let taken = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for w in 0..workers {
        let sh = sh.clone();
        let plan = plan.clone();
        let barrier = barrier.clone();
        let taken = taken.clone();
        let h = thread::Builder::new()
            .name(format!("apiload-w{w}"))
            .spawn(move || -> Result<WorkerOut, String> {
                let conn = Conn::new(&sh);
                barrier.wait();
                let mut conn = conn.map_err(|e| format!("connecting to the API: {e}"))?;
                let mut out = WorkerOut::default();
                loop {
                    let i = taken.fetch_add(1, Ordering::Relaxed);
                    let due = match *plan {
                        Plan::Paced {
                            t0,
                            period_ns,
                            count,
                        } => {
                            if i >= count {
                                break;
                            }
                            let due = t0 + (i as f64 * period_ns) as u64;
                            sh.clock.sleep_until(due);
                            due
                        }
                        Plan::Closed { end } => {
                            let now = sh.clock.ns();
                            if now >= end {
                                break;
                            }
                            now
                        }
                    };
                    let slot = sh.next_slot.fetch_add(1, Ordering::Relaxed) as usize;
                    if slot >= cap {
                        break;
                    }
                    let sent = sh.clock.ns();
                    let r = conn.post(&sh, slot, &mut out);
                    let done = sh.clock.ns();
                    let status = record(&mut out, r);
                    out.recs.push(Rec {
                        slot,
                        due,
                        sent,
                        done,
                        status,
                    });
                }
                out.connects += conn.connects();
                Ok(out)
            })
            .map_err(|e| format!("spawning a worker: {e}"))?;
        handles.push(h);
    }
    barrier.wait();
    let mut outs = Vec::new();
    for h in handles {
        outs.push(h.join().map_err(|_| "a worker panicked".to_string())??);
    }
    Ok(outs)
}

// ----------------------------------------------------------------- report

/// Percentiles of nanosecond samples, in milliseconds.
fn dist(mut v: Vec<u64>) -> Value {
    if v.is_empty() {
        return json!({ "n": 0 });
    }
    v.sort_unstable();
    let q = |p: f64| {
        let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1e6
    };
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 / 1e6;
    json!({
        "n": v.len(),
        "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
        "max": v[v.len() - 1] as f64 / 1e6, "mean": mean,
    })
}

fn ms(v: &Value, k: &str) -> String {
    v[k].as_f64().map_or("-".into(), |x| format!("{x:.3}"))
}

/// Sum (seconds) and count of the server's request durations.
type ServerTime = Option<(f64, u64)>;

/// `kolokol_api_request_duration_seconds` sum and count of the route (a
/// route not served yet has no series: zero).
fn server_time(client: &Client) -> ServerTime {
    let r = client.request("GET", "/metrics", &[], None).ok()?;
    if r.status != 200 {
        return None;
    }
    let text = String::from_utf8_lossy(&r.body);
    let mut sum = 0.0;
    let mut count = 0;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("kolokol_api_request_duration_seconds_") else {
            continue;
        };
        if !rest.contains("route=\"/v1/notifications\"") {
            continue;
        }
        let v = l.rsplit(' ').next().unwrap_or("");
        if rest.starts_with("sum") {
            sum = v.parse::<f64>().ok()?;
        } else if rest.starts_with("count") {
            count = v.parse::<u64>().ok()?;
        }
    }
    Some((sum, count))
}

/// CPU time of this process, exited threads included.
fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage fills a live, zeroed rusage.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Everything a phase measured.
struct PhaseReport {
    json: Value,
    ok_fraction: f64,
    invite_fraction: f64,
    ok_rps: f64,
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    name: &str,
    workers: usize,
    target_rps: Option<f64>,
    window: (u64, u64),
    outs: &[WorkerOut],
    sh: &Shared,
    slots_before: (u64, u64, u64),
    server: (ServerTime, ServerTime),
    cpu: (Option<u64>, u64),
    server_idle_ns_per_s: Option<f64>,
) -> PhaseReport {
    let (w0, w1) = window;
    let paced = target_rps.is_some();
    // Paced: requests due in the window. Closed: requests that completed
    // in it (throughput), whenever they were sent.
    let in_window = |r: &Rec| {
        let t = if paced { r.due } else { r.done };
        t >= w0 && t < w1
    };
    let recs: Vec<&Rec> = outs
        .iter()
        .flat_map(|o| o.recs.iter())
        .filter(|r| in_window(r))
        .collect();
    let all_sent: u64 = outs.iter().map(|o| o.recs.len() as u64).sum();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for o in outs {
        for (k, v) in &o.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    let sent = recs.len() as u64;
    let ok: Vec<&&Rec> = recs
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .collect();
    let mut req_lat = Vec::new();
    let mut req_service = Vec::new();
    let mut lag = Vec::new();
    let mut inv_kernel = Vec::new();
    let mut inv_read = Vec::new();
    let mut wake = Vec::new();
    let mut invite_first = 0u64;
    let mut missing = 0u64;
    let mut last_done = w0;
    for r in &recs {
        req_lat.push(r.done - r.due);
        req_service.push(r.done - r.sent);
        lag.push(r.sent - r.due);
        last_done = last_done.max(r.done);
    }
    for r in &ok {
        let read = sh.slots.read[r.slot].load(Ordering::Acquire);
        let kern = sh.slots.kernel[r.slot].load(Ordering::Acquire);
        if read == 0 {
            missing += 1;
            continue;
        }
        inv_read.push(read.saturating_sub(r.due));
        inv_kernel.push(kern.max(r.due) - r.due);
        wake.push(read - kern.min(read));
        if kern < r.done {
            invite_first += 1;
        }
    }
    let secs = (w1 - w0) as f64 / 1e9;
    // Paced: completions over the time from the window's start to the
    // last answer (longer than the window when the gateway fell behind).
    let span = if paced {
        (last_done.max(w1) - w0) as f64 / 1e9
    } else {
        secs
    };
    let rps = sent as f64 / span;
    let ok_rps = ok.len() as f64 / span;
    let ok_fraction = if sent > 0 {
        ok.len() as f64 / sent as f64
    } else {
        0.0
    };
    let invite_fraction = if ok.is_empty() {
        0.0
    } else {
        1.0 - missing as f64 / ok.len() as f64
    };
    let server_mean_ms = match server {
        (Some((s0, c0)), Some((s1, c1))) if c1 > c0 => Some((s1 - s0) / (c1 - c0) as f64 * 1e3),
        _ => None,
    };
    let (server_cpu, self_cpu) = cpu;
    let per_req = |ns: u64| {
        if sent > 0 {
            ns as f64 / sent as f64 / 1e3
        } else {
            0.0
        }
    };
    let (r0, s0, o0) = slots_before;
    let json = json!({
        "phase": name,
        "mode": if paced { "paced" } else { "max" },
        "connection": sh.conn.name(),
        "workers": workers,
        "target_rps": target_rps,
        "window_s": secs,
        "sent_total": all_sent,
        "sent": sent,
        "ok_2xx": ok.len(),
        "errors": errors,
        "achieved_rps": rps,
        "ok_rps": ok_rps,
        "ok_fraction": ok_fraction,
        "invites_seen": inv_read.len(),
        "missing_invites": missing,
        "invite_before_response": invite_first,
        "invite_retransmissions": sh.slots.retransmissions.load(Ordering::Relaxed) - r0,
        "stray_invites": sh.slots.stray.load(Ordering::Relaxed) - s0,
        "other_sip_requests": sh.slots.other_requests.load(Ordering::Relaxed) - o0,
        "api_to_invite_ms": dist(inv_kernel),
        "api_to_invite_at_sink_read_ms": dist(inv_read),
        "sink_wakeup_ms": dist(wake),
        "request_ms": dist(req_lat),
        "request_from_send_ms": dist(req_service),
        "generator_lag_ms": dist(lag),
        "server_mean_to_head_ms": server_mean_ms,
        "server_cpu_us_per_request": server_cpu.map(per_req),
        "server_idle_cpu_percent": server_idle_ns_per_s.map(|i| i / 1e7),
        "server_cpu_us_per_request_above_idle": server_cpu.zip(server_idle_ns_per_s).map(
            |(c, i)| per_req(c.saturating_sub((i * secs) as u64))
        ),
        "apiload_cpu_us_per_request": per_req(self_cpu),
        "connections_opened": outs.iter().map(|o| o.connects).sum::<u64>(),
    });
    PhaseReport {
        json,
        ok_fraction,
        invite_fraction,
        ok_rps,
    }
}

fn render(p: &Value) -> String {
    let mut s = String::new();
    let target = p["target_rps"]
        .as_f64()
        .map_or("closed loop".to_string(), |r| format!("paced {r} req/s"));
    s += &format!(
        "phase {}: {target}, {} workers, {}, {:.0} s measured\n",
        p["phase"].as_str().unwrap_or(""),
        p["workers"],
        p["connection"].as_str().unwrap_or(""),
        p["window_s"].as_f64().unwrap_or(0.0)
    );
    s += &format!(
        "  requests: sent {} (measured; {} in all), 2xx {}, achieved {:.1} req/s ({:.1} 2xx/s)\n",
        p["sent"],
        p["sent_total"],
        p["ok_2xx"],
        p["achieved_rps"].as_f64().unwrap_or(0.0),
        p["ok_rps"].as_f64().unwrap_or(0.0)
    );
    if let Some(e) = p["errors"].as_object().filter(|e| !e.is_empty()) {
        s += "  errors (whole phase):";
        for (k, v) in e {
            s += &format!(" [{k}] x{v}");
        }
        s += "\n";
    }
    s += &format!(
        "  INVITEs: {} seen for the 2xx, {} missing, {} before the response, {} retransmitted, {} stray\n",
        p["invites_seen"],
        p["missing_invites"],
        p["invite_before_response"],
        p["invite_retransmissions"],
        p["stray_invites"]
    );
    s += "                                         p50      p90      p99    p99.9      max  (ms)\n";
    for (label, key) in [
        ("API -> INVITE (kernel rx)", "api_to_invite_ms"),
        ("API -> INVITE (sink read)", "api_to_invite_at_sink_read_ms"),
        ("request (due -> response)", "request_ms"),
        ("request (send -> response)", "request_from_send_ms"),
        ("generator lag (due -> send)", "generator_lag_ms"),
        ("sink wake-up (rx -> read)", "sink_wakeup_ms"),
    ] {
        let d = &p[key];
        s += &format!(
            "  {label:<36} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            ms(d, "p50"),
            ms(d, "p90"),
            ms(d, "p99"),
            ms(d, "p999"),
            ms(d, "max")
        );
    }
    let opt = |k: &str, unit: &str| {
        p[k].as_f64()
            .map_or("n/a".to_string(), |x| format!("{x:.3} {unit}"))
    };
    s += &format!(
        "  server's mean time to response head {}; {} connections opened\n",
        opt("server_mean_to_head_ms", "ms"),
        p["connections_opened"]
    );
    s += &format!(
        "  CPU per request: gateway {} ({} above its idle {}), apiload {}\n",
        opt("server_cpu_us_per_request", "us"),
        opt("server_cpu_us_per_request_above_idle", "us"),
        opt("server_idle_cpu_percent", "%"),
        opt("apiload_cpu_us_per_request", "us"),
    );
    s
}

// -------------------------------------------------------------------- main

fn mint_token() -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let args: Vec<String> = [
        "--scope",
        "notifications:write",
        "--sub",
        "apiload",
        "--ttl",
        "86400",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    kolokol::control::api::token_cli(&args, now)
}

fn run(a: &Args) -> Result<(Value, bool), String> {
    // SAFETY: plain prctl; a 1 µs timer slack keeps sleeps close to the
    // schedule.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    if let Some(c) = a.cpu {
        kolokol::sys::pin_to_cpu(c).map_err(|e| format!("--cpu {c}: {e}"))?;
    }
    let token = match &a.token {
        Some(t) => t.clone(),
        None => mint_token()?,
    };
    let client = Client::https(a.api, &a.ca, &token)
        .map_err(|e| format!("client ({}): {e}", a.ca.display()))?;
    let ready = client
        .request("GET", "/readyz", &[], None)
        .map_err(|e| format!("GET https://{}/readyz: {e}", a.api))?;
    if ready.status != 200 {
        return Err(format!(
            "the gateway is not ready: /readyz {}",
            ready.status
        ));
    }
    let clock = Clock(Instant::now());
    let base = a.number_base.unwrap_or_else(|| {
        // Fresh numbers for every run against the same gateway.
        (realtime_ns() / 1_000_000 * 7919) % NUMBER_SPACE
    });
    let paced_workers = a.workers.as_ref().map_or(8, |w| w[0]);
    let steps: Vec<usize> = a.workers.clone().unwrap_or_else(|| vec![1, 4, 16]);
    let cap = if a.max {
        a.max_requests
    } else {
        (a.rate * (a.warmup_s + a.duration_s)).ceil() as usize + 1
    };
    let slots = Arc::new(Slots::new(cap, base));
    let stop = Arc::new(AtomicBool::new(false));
    let sock = open_sink(a.sink)?;
    let sink_thread = {
        let slots = slots.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("apiload-sink".into())
            .spawn(move || sink(sock, slots, clock, stop))
            .map_err(|e| format!("spawning the sink: {e}"))?
    };
    let sh = Arc::new(Shared {
        client: client.clone(),
        conn: a.conn,
        account: a.account.clone(),
        idempotency: a.idempotency,
        clock,
        slots: slots.clone(),
        next_slot: AtomicU64::new(0),
    });
    // The gateway's CPU when idle, to tell the per-request cost from its
    // timers and ticks.
    let server_idle = a.server_pid.and_then(|pid| {
        let c0 = kolokol::sys::process_cpu_ns(pid).ok()?;
        let t0 = clock.ns();
        thread::sleep(Duration::from_secs(1));
        let c1 = kolokol::sys::process_cpu_ns(pid).ok()?;
        Some(c1.saturating_sub(c0) as f64 / ((clock.ns() - t0) as f64 / 1e9))
    });
    let warm = (a.warmup_s * 1e9) as u64;
    let dur = (a.duration_s * 1e9) as u64;

    let mut phases = Vec::new();
    let mut sustained: Option<(f64, usize)> = None;
    let mut lossy = false;
    let plan_list: Vec<(String, usize, Option<f64>)> = if a.max {
        steps
            .iter()
            .map(|&k| (format!("max-k{k}"), k, None))
            .collect()
    } else {
        vec![("paced".to_string(), paced_workers, Some(a.rate))]
    };
    for (n, (name, workers, target)) in plan_list.into_iter().enumerate() {
        if n > 0 {
            thread::sleep(Duration::from_millis(a.pause_ms));
        }
        if !a.quiet {
            eprintln!(
                "apiload: {name}: {} workers, {}, {} s + {} s warm-up ...",
                workers,
                a.conn.name(),
                a.duration_s,
                a.warmup_s
            );
        }
        let before = (
            slots.retransmissions.load(Ordering::Relaxed),
            slots.stray.load(Ordering::Relaxed),
            slots.other_requests.load(Ordering::Relaxed),
        );
        let srv0 = server_time(&client);
        // Connections are opened before t0 (run_phase's barrier); t0 is a
        // little later so the first requests are not all due at once.
        let t0 = clock.ns() + 50_000_000 + 20_000_000 * workers as u64 / 8;
        let (w0, w1) = (t0 + warm, t0 + warm + dur);
        let plan = Arc::new(match target {
            Some(r) => Plan::Paced {
                t0,
                period_ns: 1e9 / r,
                count: (r * (a.warmup_s + a.duration_s)).ceil() as u64,
            },
            None => Plan::Closed { end: w1 },
        });
        // The CPU counters are read at the window's edges by this thread.
        let cpu_probe = {
            let clock = sh.clock;
            let pid = a.server_pid;
            thread::spawn(move || {
                clock.sleep_until(w0);
                let s0 = pid.and_then(|p| kolokol::sys::process_cpu_ns(p).ok());
                let m0 = self_cpu_ns();
                clock.sleep_until(w1);
                let s1 = pid.and_then(|p| kolokol::sys::process_cpu_ns(p).ok());
                let m1 = self_cpu_ns();
                (
                    s0.zip(s1).map(|(x, y)| y.saturating_sub(x)),
                    m1 - m0.min(m1),
                )
            })
        };
        let outs = run_phase(&sh, workers, plan, cap)?;
        let cpu = cpu_probe.join().map_err(|_| "cpu probe panicked")?;
        // Late INVITEs: wait until every 2xx has its INVITE, or drain_ms.
        let deadline = clock.ns() + a.drain_ms * 1_000_000;
        loop {
            let missing = outs
                .iter()
                .flat_map(|o| o.recs.iter())
                .filter(|r| (200..300).contains(&r.status))
                .any(|r| slots.read[r.slot].load(Ordering::Acquire) == 0);
            if !missing || clock.ns() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let srv1 = server_time(&client);
        let rep = summarize(
            &name,
            workers,
            target,
            (w0, w1),
            &outs,
            &sh,
            before,
            (srv0, srv1),
            cpu,
            server_idle,
        );
        print!("{}", render(&rep.json));
        if target.is_some() {
            lossy |= rep.ok_fraction < 1.0 || rep.invite_fraction < 1.0;
            if let Some(lag) = rep.json["generator_lag_ms"]["p99"].as_f64() {
                if lag > 1.0 {
                    println!(
                        "  WARNING: apiload was late on its own schedule (lag p99 {lag:.3} ms): \
                         more --workers, or its CPU is busy; latencies include it"
                    );
                }
            }
        } else if rep.ok_fraction >= 0.999
            && rep.invite_fraction >= 0.999
            && sustained.is_none_or(|(r, _)| rep.ok_rps > r)
        {
            sustained = Some((rep.ok_rps, workers));
        }
        phases.push(rep.json);
        if sh.next_slot.load(Ordering::Relaxed) as usize >= cap {
            println!("  NOTE: --max-requests {cap} reached; later phases skipped");
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sink_thread.join();
    if a.max {
        match sustained {
            Some((r, k)) => println!(
                "sustained: {r:.0} req/s (2xx >= 99.9 % and INVITEs for >= 99.9 % of them), at {k} workers"
            ),
            None => println!("sustained: no step had >= 99.9 % 2xx with their INVITEs"),
        }
    }
    let measured_any = phases.iter().any(|p| p["ok_2xx"].as_u64().unwrap_or(0) > 0);
    let report = json!({
        "tool": "apiload",
        "api": a.api.to_string(),
        "sink": a.sink.to_string(),
        "connection": a.conn.name(),
        "mode": if a.max { "max" } else { "paced" },
        "duration_s": a.duration_s,
        "warmup_s": a.warmup_s,
        "number_base": base,
        "idempotency": a.idempotency,
        "cpu": a.cpu,
        "server_pid": a.server_pid,
        "sink_unparsable": slots.unparsable.load(Ordering::Relaxed),
        "sink_reply_errors": slots.reply_errors.load(Ordering::Relaxed),
        "phases": phases,
        "sustained_rps": sustained.map(|s| s.0),
        "sustained_workers": sustained.map(|s| s.1),
    });
    Ok((report, measured_any && !lossy))
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("apiload: {e}");
            }
            eprint!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    match run(&a) {
        Ok((report, good)) => {
            if let Some(path) = &a.json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("apiload: writing {path}: {e}");
                    std::process::exit(1);
                }
            }
            if !good {
                std::process::exit(3);
            }
        }
        Err(e) => {
            eprintln!("apiload: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_map_back_to_their_slots() {
        let s = Slots::new(100, NUMBER_SPACE - 3);
        assert_eq!(s.number(0), "+79009999997");
        assert_eq!(s.number(5), "+79000000002");
        assert_eq!(s.slot_of("+79000000002"), Some(5));
        assert_eq!(s.slot_of("79009999997"), Some(0));
        assert_eq!(s.slot_of("+79000000097"), None); // slot 100: beyond
        assert_eq!(s.slot_of("+7900123"), None);
        assert_eq!(s.slot_of("+74950000000"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = dist((1..=1000).map(|x| x * 1_000_000).collect());
        assert_eq!(d["p50"], 500.0);
        assert_eq!(d["p99"], 990.0);
        assert_eq!(d["p999"], 999.0);
        assert_eq!(d["max"], 1000.0);
    }

    #[test]
    fn sink_answers_invite_486_and_times_it() {
        let sock = open_sink("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = sock.local_addr().unwrap();
        let slots = Arc::new(Slots::new(10, 0));
        let stop = Arc::new(AtomicBool::new(false));
        let clock = Clock(Instant::now());
        let t = {
            let (slots, stop) = (slots.clone(), stop.clone());
            thread::spawn(move || sink(sock, slots, clock, stop))
        };
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let invite = format!(
            "INVITE sip:+79000000003@{addr} SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:+493012345670@127.0.0.1>;tag=a\r\n\
             To: <sip:+79000000003@{addr}>\r\n\
             Call-ID: c1@test\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:gw@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n"
        );
        for _ in 0..2 {
            peer.send_to(invite.as_bytes(), addr).unwrap();
            let mut buf = [0u8; 2048];
            let n = peer.recv(&mut buf).unwrap();
            let r = SipMessage::parse(&buf[..n]).unwrap();
            assert_eq!(r.status_code(), Some(486));
            assert_eq!(r.call_id(), "c1@test");
            assert!(r.to().tag().is_some());
            assert_eq!(r.top_via().branch, Some("z9hG4bK-1"));
        }
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert!(slots.read[3].load(Ordering::Relaxed) > 0);
        assert!(slots.kernel[3].load(Ordering::Relaxed) > 0);
        assert_eq!(slots.retransmissions.load(Ordering::Relaxed), 1);
    }
}
