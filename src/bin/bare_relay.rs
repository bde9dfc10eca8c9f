//! `bare_relay`: the "bare forwarding loop" anchor that Kolokol's relay is measured against.
//!
//! It does the same kind of socket I/O as a Kolokol shard and nothing else: no SIP, no RTP
//! parsing, no relay table, no timers. Whatever the gateway costs per packet above this
//! program's figure is the price of its call logic; whatever this program costs is the price
//! of the kernel's UDP path plus the I/O API, on this host.
//!
//! ```text
//! bare_relay --addr 127.0.0.1 --base-port 30000 --pairs N --cpu 0 --mode uring|mmsg
//!            [--duration-s S] [--min-wait-us U] [--send-op sendmsg|send] [--stats-json FILE]
//! ```
//!
//! It binds 2N UDP sockets on ports base..base+2N-1. Ports (base+2i, base+2i+1) are a pair: a
//! datagram received on one socket is sent out of the other socket of the pair, to the last
//! source address seen on that other socket ("latching", as a media relay does with symmetric
//! RTP). Until the other leg has sent something, datagrams are dropped and counted. Oversized
//! (truncated), empty or otherwise odd datagrams are counted and dropped; nothing on the
//! packet path allocates or panics. The thread pins itself to `--cpu`; counters are printed on
//! SIGINT/SIGTERM or after `--duration-s`, and written as JSON with `--stats-json`.
//!
//! ## `--mode uring`: why each io_uring feature is used
//!
//! - **Registered (fixed) files** (`register_files`): every SQE names its socket by index, so
//!   the kernel skips the per-operation file-table lookup and reference counting.
//! - **Multishot `RecvMsgMulti`**, one per socket: a single SQE keeps producing a CQE per
//!   datagram, so receiving costs no SQE and no syscall per packet. When a CQE comes without
//!   `IORING_CQE_F_MORE` the operation has ended (e.g. `ENOBUFS`) and it is re-armed on the
//!   next loop turn, after buffers have been returned.
//! - **Provided buffer ring** (`register_buf_ring`, `BufRingEntry`, `RecvMsgOut::parse`): the
//!   kernel picks a buffer only when a datagram actually arrives, so thousands of idle sockets
//!   pin no memory; the buffer carries the source address and payload together.
//! - **`SendMsg` from the receive buffer**: the payload is sent in place (no copy). Buffer id
//!   `b` owns send slot `b` (msghdr, iovec, destination) while its send is in flight; the buffer
//!   goes back to the ring only when the send's CQE is reaped. Every in-flight operation thus
//!   holds a buffer, which bounds the work in flight and sizes the CQ so it cannot overflow.
//!   `--send-op send` uses `IORING_OP_SEND` with a destination address instead (kernel >= 6.0):
//!   the kernel then imports no msghdr/iovec per packet (no consistent difference measured on
//!   the 2-core test host, so the default stays `sendmsg`).
//! - **One `submit_with_args` per loop turn**: reap all CQEs, queue all sends, then submit them
//!   and wait for more completions in the same syscall.
//! - **`min_wait_usec`** (`IORING_FEAT_MIN_TIMEOUT`, kernel >= 6.12): the wait asks for `want`
//!   (32) completions (about 16 relayed packets: each gives a receive and a send completion)
//!   but, once `--min-wait-us` has passed, returns as soon as there is at least one. Under partial load this batches wakeups: each packet may wait up to U us
//!   longer in the CQ (bounded added latency), in exchange for up to 32x fewer wakeups and
//!   syscalls. Under full load 32 CQEs are ready at once and U never applies. `--min-wait-us
//!   0`, or a kernel without the feature, waits for a single completion (lowest latency,
//!   one wakeup per burst). Default 200 us: about 1% of a 20 ms RTP packet interval, small
//!   beside the jitter buffers at the ends of a call.
//! - **`SINGLE_ISSUER | DEFER_TASKRUN`** when the kernel has them: completion work runs only
//!   when this thread waits, so it is batched too and does not interrupt the loop.
//!
//! ## `--mode mmsg`
//!
//! The same relay with level-triggered epoll, `recvmmsg` and `sendmmsg` in batches of 64, for
//! comparison (the design says: measure each io_uring feature against this and keep what wins).

use io_uring::{cqueue, opcode, types, IoUring};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};
use std::{io, mem, ptr};

/// Size of one provided buffer: recvmsg_out header (16 B) + source address (28 B) + payload
/// (<= 2004 B, above any datagram on a 1500-byte MTU; larger ones are truncated and dropped).
const BUF_SIZE: usize = 2048;
/// Provided buffers (power of two, <= 32768): enough for a burst over many sockets between
/// two loop turns (8 MiB). Also the bound on sends in flight, since each holds one buffer.
const NBUF: usize = 4096;
const BGID: u16 = 0;
const SQ_ENTRIES: u32 = 1024;
/// Completions a uring wait asks for before `min_wait_usec` lets it return with fewer.
const WANT: usize = 32;
/// mmsg batch size: a common choice, and 64 x 2 KiB of buffers stay in L2.
const BATCH: usize = 64;
/// Upper bound of one wait, so that a signal or the deadline is noticed.
const TICK: Duration = Duration::from_millis(100);
const NAME_LEN: usize = mem::size_of::<libc::sockaddr_in6>();
/// `user_data` = kind << 32 | index (socket index for receives, buffer id for sends).
const UD_RECV: u64 = 1 << 32;
const UD_SEND: u64 = 2 << 32;
const UD_CANCEL: u64 = 3 << 32;
const UD_KIND: u64 = !0xffff_ffff;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Uring,
    Mmsg,
}

struct Args {
    addr: IpAddr,
    base_port: u16,
    pairs: usize,
    cpu: usize,
    mode: Mode,
    duration: Option<Duration>,
    min_wait_us: u32,
    send_msg: bool,
    stats_json: Option<String>,
}

/// Counters, printed and written as JSON in this order.
macro_rules! stats {
    ($($f:ident),*) => {
        #[derive(Default)]
        struct Stats { $($f: u64),* }
        impl Stats {
            fn fields(&self) -> Vec<(&'static str, u64)> { vec![$((stringify!($f), self.$f)),*] }
        }
    };
}
stats!(
    rx,
    tx,
    drop_no_peer,
    drop_oversize,
    drop_bad,
    send_err,
    recv_err,
    enobufs,
    wakeups
);

impl Stats {
    fn sent(&mut self, ok: bool) {
        *(if ok { &mut self.tx } else { &mut self.send_err }) += 1;
    }
}

/// A socket address (v4 or v6) as the kernel wrote it; `len == 0` means "not seen yet".
#[derive(Clone, Copy)]
struct Peer {
    sa: libc::sockaddr_in6,
    len: u32,
}

impl Peer {
    const NONE: Peer = Peer {
        sa: unsafe { mem::zeroed() },
        len: 0,
    };

    /// Latches `name` (raw sockaddr bytes); false if it is not a plausible v4/v6 address.
    fn latch(&mut self, name: &[u8]) -> bool {
        let fam = match name.get(..2) {
            Some(f) => u16::from_ne_bytes([f[0], f[1]]) as i32,
            None => return false,
        };
        let ok = (fam == libc::AF_INET && name.len() >= mem::size_of::<libc::sockaddr_in>())
            || (fam == libc::AF_INET6 && name.len() == NAME_LEN);
        if ok {
            // SAFETY: name.len() <= NAME_LEN (both callers bound it) = size of self.sa.
            unsafe {
                ptr::copy_nonoverlapping(
                    name.as_ptr(),
                    ptr::addr_of_mut!(self.sa).cast(),
                    name.len(),
                )
            };
            self.len = name.len() as u32;
        }
        ok
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: bare_relay --addr IP --base-port P --pairs N --cpu C --mode uring|mmsg \
         [--duration-s S] [--min-wait-us U (default 200)] [--send-op sendmsg|send] [--stats-json FILE]"
    );
    std::process::exit(2)
}

fn val<T: std::str::FromStr>(k: &str, v: &str) -> T {
    v.parse().unwrap_or_else(|_| {
        eprintln!("bad value for {k}: {v}");
        usage()
    })
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: IpAddr::from([127, 0, 0, 1]),
        base_port: 30000,
        pairs: 1,
        cpu: 0,
        mode: Mode::Uring,
        duration: None,
        min_wait_us: 200,
        send_msg: true,
        stats_json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--addr" => a.addr = val(&k, &v),
            "--base-port" => a.base_port = val(&k, &v),
            "--pairs" => a.pairs = val(&k, &v),
            "--cpu" => a.cpu = val(&k, &v),
            "--duration-s" => a.duration = Duration::try_from_secs_f64(val(&k, &v)).ok(),
            "--min-wait-us" => a.min_wait_us = val(&k, &v),
            "--stats-json" => a.stats_json = Some(v),
            "--mode" if v == "uring" => a.mode = Mode::Uring,
            "--mode" if v == "mmsg" => a.mode = Mode::Mmsg,
            "--send-op" if v == "sendmsg" => a.send_msg = true,
            "--send-op" if v == "send" => a.send_msg = false,
            _ => {
                eprintln!("bad option {k} {v}");
                usage()
            }
        }
    }
    if a.pairs == 0 || a.base_port as usize + 2 * a.pairs > 65536 {
        eprintln!("--pairs must be >= 1 and base-port + 2*pairs - 1 <= 65535");
        usage()
    }
    a
}

fn os_err<T: Default + PartialOrd>(r: T) -> io::Result<T> {
    if r < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setup_process(cpu: usize) -> io::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        os_err(libc::sched_setaffinity(
            0,
            mem::size_of::<libc::cpu_set_t>(),
            &set,
        ))
        .map_err(|e| io::Error::new(e.kind(), format!("sched_setaffinity cpu {cpu}: {e}")))?;
        // No SA_RESTART: a signal interrupts the blocking wait with EINTR.
        let mut sa: libc::sigaction = mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        os_err(libc::sigaction(libc::SIGINT, &sa, ptr::null_mut()))?;
        os_err(libc::sigaction(libc::SIGTERM, &sa, ptr::null_mut()))?;
        // 2N sockets may exceed the default soft limit of open files.
        let mut rl: libc::rlimit = mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
    Ok(())
}

fn bind_sockets(a: &Args) -> io::Result<Vec<Socket>> {
    (0..2 * a.pairs)
        .map(|k| {
            let sa = SocketAddr::new(a.addr, a.base_port + k as u16);
            let s = Socket::new(Domain::for_address(sa), Type::DGRAM, Some(Protocol::UDP))?;
            // Best effort (capped by net.core.[rw]mem_max); the same for both modes.
            let _ = s.set_recv_buffer_size(4 << 20);
            let _ = s.set_send_buffer_size(4 << 20);
            s.set_nonblocking(a.mode == Mode::Mmsg)?;
            // The same socket options as a Kolokol shard's media sockets.
            if sa.is_ipv4() {
                kolokol::sys::set_dont_fragment_v4(std::os::fd::AsRawFd::as_raw_fd(&s))?;
            }
            s.bind(&sa.into())
                .map_err(|e| io::Error::new(e.kind(), format!("bind {sa}: {e}")))?;
            Ok(s)
        })
        .collect()
}

fn stopping(deadline: Option<Instant>) -> bool {
    STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d)
}

/// Anonymous, page-aligned, zeroed memory that lives as long as the process.
fn map_anon(len: usize) -> io::Result<*mut u8> {
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

/// The provided-buffer ring: `NBUF` buffers of `BUF_SIZE` bytes, refilled by buffer id.
struct BufRing {
    ring: *mut types::BufRingEntry,
    bufs: *mut u8,
    tail: u16,
}

impl BufRing {
    fn push(&mut self, bid: u16) {
        let bid = bid as usize % NBUF; // the kernel only hands back ids we gave it
                                       // SAFETY: index < NBUF entries; the kernel reads an entry only once the tail covers it.
        let e = unsafe { &mut *self.ring.add(self.tail as usize % NBUF) };
        e.set_addr(self.bufs as u64 + (bid * BUF_SIZE) as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid as u16);
        self.tail = self.tail.wrapping_add(1);
    }
    /// Makes the pushed entries visible to the kernel (once per loop turn).
    fn publish(&self) {
        // SAFETY: the tail field of the ring header, u16-aligned, shared with the kernel.
        unsafe {
            (*(types::BufRingEntry::tail(self.ring).cast::<AtomicU16>()))
                .store(self.tail, Ordering::Release)
        }
    }
    fn buf(&self, bid: u16, len: usize) -> &[u8] {
        // SAFETY: the kernel is done writing buffer `bid` (its CQE was reaped); len is clamped.
        unsafe {
            std::slice::from_raw_parts(
                self.bufs.add((bid as usize % NBUF) * BUF_SIZE),
                len.min(BUF_SIZE),
            )
        }
    }
}

/// What a send in flight needs to stay put until its CQE: indexed by the buffer id it sends.
#[repr(C)]
struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    dst: Peer,
}

fn run_uring(socks: &[Socket], a: &Args, st: &mut Stats) -> io::Result<()> {
    let n = socks.len();
    // Every CQE holds a buffer except the one that ends each multishot receive, so at most
    // NBUF + n CQEs are ever pending: this CQ cannot overflow.
    let cq_entries = (2 * (NBUF + 2 * n)).next_power_of_two() as u32;
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(cq_entries)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(SQ_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_cqsize(cq_entries)
                .build(SQ_ENTRIES)
        })?;
    let min_timeout = ring.params().is_feature_min_timeout();
    let (want, min_wait) = if min_timeout && a.min_wait_us > 0 {
        (WANT, a.min_wait_us)
    } else {
        (1, 0)
    };
    if a.min_wait_us > 0 && !min_timeout {
        eprintln!("bare_relay: kernel lacks IORING_FEAT_MIN_TIMEOUT; waiting for 1 completion");
    }
    let fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    ring.submitter().register_files(&fds)?;

    let mut br = BufRing {
        ring: map_anon(NBUF * 16)?.cast(),
        bufs: map_anon(NBUF * BUF_SIZE)?,
        tail: 0,
    };
    (0..NBUF as u16).for_each(|b| br.push(b));
    br.publish();
    // SAFETY: the ring memory is mapped for the life of the process.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(br.ring as u64, NBUF as u16, BGID, 0)?
    };

    // The recvmsg template for the multishot receives: only the name and control sizes matter.
    let mut rhdr: Box<libc::msghdr> = Box::new(unsafe { mem::zeroed() });
    rhdr.msg_namelen = NAME_LEN as u32;
    let mut slots: Box<[SendSlot]> = (0..NBUF)
        .map(|_| SendSlot {
            hdr: unsafe { mem::zeroed() },
            iov: unsafe { mem::zeroed() },
            dst: Peer::NONE,
        })
        .collect();
    for s in slots.iter_mut() {
        s.hdr.msg_name = ptr::addr_of_mut!(s.dst.sa).cast();
        s.hdr.msg_iov = &mut s.iov;
        s.hdr.msg_iovlen = 1;
    }
    let mut peers = vec![Peer::NONE; n];
    let mut armed = vec![false; n];
    let mut sends_in_flight = 0usize;
    let deadline = a.duration.map(|d| Instant::now() + d);
    let ts = types::Timespec::from(TICK);
    let args = types::SubmitArgs::new()
        .min_wait_usec(min_wait)
        .timespec(&ts);

    let (submitter, mut sq, mut cq) = ring.split();
    // Queues one SQE, submitting what is queued if the SQ is full.
    let push =
        |sq: &mut io_uring::SubmissionQueue, e: &io_uring::squeue::Entry| -> io::Result<()> {
            // SAFETY: every pointer in `e` (rhdr, a send slot, a buffer) outlives its operation.
            while unsafe { sq.push(e) }.is_err() {
                sq.sync();
                submitter.submit()?;
                sq.sync();
            }
            Ok(())
        };
    // Winding down: cancel everything, keep reaping until nothing is in flight (bounded), then
    // drop the file table. Otherwise the sockets stay bound until the kernel's deferred ring
    // teardown runs, which on a busy host makes an immediate restart fail with EADDRINUSE.
    let mut wind_down: Option<Instant> = None;
    loop {
        match wind_down {
            None if stopping(deadline) => {
                let cancel = types::CancelBuilder::any();
                push(
                    &mut sq,
                    &opcode::AsyncCancel2::new(cancel)
                        .build()
                        .user_data(UD_CANCEL),
                )?;
                wind_down = Some(Instant::now() + Duration::from_secs(1));
            }
            Some(end) if sends_in_flight == 0 && !armed.contains(&true) || Instant::now() > end => {
                break;
            }
            Some(_) => {}
            None => {
                for (i, on) in armed.iter_mut().enumerate().filter(|(_, on)| !**on) {
                    let e = opcode::RecvMsgMulti::new(types::Fixed(i as u32), &*rhdr, BGID);
                    push(&mut sq, &e.build().user_data(UD_RECV | i as u64))?;
                    *on = true;
                }
            }
        }
        sq.sync();
        match submitter.submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        st.wakeups += 1;
        cq.sync();
        for cqe in &mut cq {
            let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            let idx = (ud & 0xffff_ffff) as usize;
            if ud & UD_KIND == UD_SEND {
                st.sent(res >= 0);
                sends_in_flight = sends_in_flight.saturating_sub(1);
                br.push(idx as u16);
                continue;
            }
            if ud & UD_KIND != UD_RECV || idx >= n {
                continue;
            }
            if !cqueue::more(flags) {
                armed[idx] = false; // multishot ended: re-armed at the top of the next turn
            }
            let Some(bid) = cqueue::buffer_select(flags) else {
                match -res {
                    libc::ENOBUFS => st.enobufs += 1, // out of buffers: re-armed next turn
                    libc::ECANCELED => {}             // winding down
                    _ => st.recv_err += 1,
                }
                continue;
            };
            let out = match types::RecvMsgOut::parse(br.buf(bid, res.max(0) as usize), &rhdr) {
                Ok(o) if res >= 0 => o,
                _ => {
                    st.recv_err += 1;
                    br.push(bid);
                    continue;
                }
            };
            st.rx += 1;
            if out.is_payload_truncated() {
                st.drop_oversize += 1;
            } else if out.is_name_data_truncated()
                || !peers[idx].latch(out.name_data())
                || out.payload_data().is_empty()
            {
                st.drop_bad += 1;
            } else if peers[idx ^ 1].len == 0 {
                st.drop_no_peer += 1;
            } else {
                let s = &mut slots[bid as usize % NBUF];
                s.iov.iov_base = out.payload_data().as_ptr() as *mut _;
                s.iov.iov_len = out.payload_data().len();
                s.dst = peers[idx ^ 1];
                s.hdr.msg_namelen = s.dst.len;
                let fd = types::Fixed((idx ^ 1) as u32);
                let e = if a.send_msg {
                    opcode::SendMsg::new(fd, &s.hdr).build()
                } else {
                    let (p, len) = (s.iov.iov_base as *const u8, s.iov.iov_len as u32);
                    let e = opcode::Send::new(fd, p, len).dest_addr(s.hdr.msg_name.cast());
                    e.dest_addr_len(s.dst.len).build()
                };
                push(&mut sq, &e.user_data(UD_SEND | bid as u64))?;
                sends_in_flight += 1;
                continue; // the buffer returns to the ring with the send's CQE
            }
            br.push(bid);
        }
        br.publish();
    }
    submitter.unregister_files()
}

fn run_mmsg(socks: &[Socket], a: &Args, st: &mut Stats) -> io::Result<()> {
    let n = socks.len();
    let ep = os_err(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    for (i, s) in socks.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        os_err(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) })?;
    }
    let mut bufs = vec![0u8; BATCH * BUF_SIZE];
    let mut names = [Peer::NONE; BATCH];
    let mut dsts = [Peer::NONE; BATCH];
    let mut riov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    let mut siov: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    let mut rmsg: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    let mut smsg: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for k in 0..BATCH {
        riov[k] = libc::iovec {
            iov_base: bufs[k * BUF_SIZE..].as_mut_ptr().cast(),
            iov_len: BUF_SIZE,
        };
        rmsg[k].msg_hdr.msg_name = ptr::addr_of_mut!(names[k].sa).cast();
        rmsg[k].msg_hdr.msg_iov = &mut riov[k];
        rmsg[k].msg_hdr.msg_iovlen = 1;
        smsg[k].msg_hdr.msg_name = ptr::addr_of_mut!(dsts[k].sa).cast();
        smsg[k].msg_hdr.msg_iov = &mut siov[k];
        smsg[k].msg_hdr.msg_iovlen = 1;
    }
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut peers = vec![Peer::NONE; n];
    let deadline = a.duration.map(|d| Instant::now() + d);
    while !stopping(deadline) {
        let ne = unsafe {
            libc::epoll_wait(
                ep,
                events.as_mut_ptr(),
                events.len() as i32,
                TICK.as_millis() as i32,
            )
        };
        st.wakeups += 1;
        for ev in &events[..ne.max(0) as usize] {
            let i = ev.u64 as usize;
            if i >= n {
                continue;
            }
            for m in rmsg.iter_mut() {
                m.msg_hdr.msg_namelen = NAME_LEN as u32;
                m.msg_hdr.msg_flags = 0;
            }
            let fd = socks[i].as_raw_fd();
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    rmsg.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                )
            };
            if r <= 0 {
                if r < 0
                    && !matches!(
                        io::Error::last_os_error().raw_os_error(),
                        Some(libc::EAGAIN | libc::EINTR)
                    )
                {
                    st.recv_err += 1;
                }
                continue;
            }
            let mut ns = 0;
            for k in 0..r as usize {
                st.rx += 1;
                let (h, len) = (&rmsg[k].msg_hdr, rmsg[k].msg_len as usize);
                let name_len = (h.msg_namelen as usize).min(NAME_LEN);
                // SAFETY: `names[k]` is NAME_LEN bytes.
                let name = unsafe {
                    std::slice::from_raw_parts(ptr::addr_of!(names[k].sa).cast::<u8>(), name_len)
                };
                if h.msg_flags & libc::MSG_TRUNC != 0 || len > BUF_SIZE {
                    st.drop_oversize += 1;
                } else if h.msg_namelen as usize > NAME_LEN || !peers[i].latch(name) || len == 0 {
                    st.drop_bad += 1;
                } else if peers[i ^ 1].len == 0 {
                    st.drop_no_peer += 1;
                } else {
                    dsts[ns] = peers[i ^ 1];
                    smsg[ns].msg_hdr.msg_namelen = dsts[ns].len;
                    siov[ns] = libc::iovec {
                        iov_base: riov[k].iov_base,
                        iov_len: len,
                    };
                    ns += 1;
                }
            }
            let (out, mut off) = (socks[i ^ 1].as_raw_fd(), 0);
            while off < ns {
                let r = unsafe {
                    libc::sendmmsg(
                        out,
                        smsg[off..].as_mut_ptr(),
                        (ns - off) as u32,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if r <= 0 {
                    st.sent(false); // the datagram at `off` failed (e.g. EAGAIN): skip it
                    off += 1;
                } else {
                    st.tx += r as u64;
                    off += r as usize;
                }
            }
        }
    }
    Ok(())
}

fn report(a: &Args, st: &Stats, secs: f64) -> io::Result<()> {
    let mode = if a.mode == Mode::Uring {
        "uring"
    } else {
        "mmsg"
    };
    let op = if a.send_msg { "sendmsg" } else { "send" };
    let f = st.fields();
    let text: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("bare_relay {mode}: {secs:.3} s {}", text.join(" "));
    let Some(path) = &a.stats_json else {
        return Ok(());
    };
    let json: Vec<String> = f.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    let head = format!(
        "\"mode\":\"{mode}\",\"send_op\":\"{op}\",\"pairs\":{}",
        a.pairs
    );
    let (mw, json) = (a.min_wait_us, json.join(","));
    std::fs::write(
        path,
        format!("{{{head},\"min_wait_us\":{mw},\"elapsed_s\":{secs:.3},{json}}}\n"),
    )
}

fn main() {
    let a = parse_args();
    let run = || -> io::Result<()> {
        setup_process(a.cpu)?;
        let socks = bind_sockets(&a)?;
        let mut st = Stats::default();
        let t0 = Instant::now();
        let r = match a.mode {
            Mode::Uring => run_uring(&socks, &a, &mut st),
            Mode::Mmsg => run_mmsg(&socks, &a, &mut st),
        };
        report(&a, &st, t0.elapsed().as_secs_f64())?;
        r
    };
    if let Err(e) = run() {
        eprintln!("bare_relay: {e}");
        std::process::exit(1);
    }
}
