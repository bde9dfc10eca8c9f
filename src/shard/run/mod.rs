//! The shard loop: a plain io_uring completion loop, not an async runtime.
//!
//! Each turn: (1) reap up to [`CQE_BATCH_MAX`] completions and read the
//! clock once; (2) feed each received datagram to
//! [`RelayTable::forward`] and queue a `SendMsg` for each `Send` verdict,
//! pointing at the very buffer the datagram was received into (no copy);
//! (3) run commands and timers; (4) submit everything and sleep in one
//! `io_uring_enter` until `CQE_WANT` completions arrive, the next deadline
//! passes, or — with `min_wait_us` — at most that long once one completion
//! is there. That last knob batches wake-ups under partial load, trading a
//! bounded added latency for far fewer syscalls per packet.
//!
//! Sockets live only in the ring's fixed-file table: each is created,
//! bound, registered and its descriptor closed at once, so a shard's media
//! sockets do not count against the process's open-file limit (the table's
//! own size is capped by it per ring). Receives are multishot `RecvMsg`
//! with a provided buffer ring.
//!
//! With `datapath = "xdp"`, legs on the IPv4 media address have no socket
//! at all: their ports are virtual socket ids served by AF_XDP sockets
//! (`xsk.rs`); the hooks here are `xsk_open_side` (in `open_side`),
//! `xsk_close` (in `close_socket`), the egress check in `send`,
//! `xsk_turn` before each wait and `xsk_tick`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::{Domain, Protocol, Socket, Type};

mod flows;
mod neigh;
mod offload;
mod player;
mod xsk;

pub use xsk::XskSetup;

use super::bufring::BufRing;
use super::sip::{SipSetup, SipShard, SIP_KEY_BASE};
use super::{
    CallReport, LegReport, LocalEndpoint, ShardCmd, ShardError, ShardEvent, ShardMetrics,
    StreamAnswer, StreamOffer, StreamPorts,
};
use crate::call::b2bua::{BridgeId, MediaRequest, Output as B2buaOutput, SipAction};
use crate::config::{Config, PortMode};
use crate::media::relay::{DropReason, Leg, LegId, OnMismatch, RelayTable, SockId, Verdict};
use crate::media::srtp::mbsha1::{MacBatch, MacInput, Simd, LANES};
use crate::media::srtp::{DeferredTag, PreTag};
use crate::sdp::Sdp;
use crate::sip::endpoint::Output as EpOutput;
use crate::sip::trunk::TrunkEvent;

/// Most completions handled per reap. Bounds the time between clock reads
/// and command checks; 256 packets are ~1.5 ms of kernel work at worst.
const CQE_BATCH_MAX: usize = 256;
/// Completions to wait for before waking when min-wait batching is on.
const CQE_WANT: usize = 64;
/// Housekeeping period: media timeouts, metrics publication.
const TICK: Duration = Duration::from_millis(250);
/// Sends in flight at once. Each holds one receive buffer; fewer than the
/// buffer count so receives always have buffers left.
const SEND_SLOTS: usize = 2048;
/// Provided receive buffers per shard (2 KiB each: 8 MiB).
const RECV_BUFS: u16 = 4096;

const KIND_SHIFT: u32 = 60;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_WAKE: u64 = 3;
const KIND_CANCEL: u64 = 4;
/// Readiness of a SIP socket (multishot poll); the low bits are its index.
const KIND_SIP: u64 = 5;

fn recv_ud(sock: u32, gen: u32) -> u64 {
    (KIND_RECV << KIND_SHIFT) | (u64::from(gen & 0x0fff_ffff) << 32) | u64::from(sock)
}

/// Start-up knobs of one shard, derived from [`Config`].
#[derive(Clone, Debug)]
pub struct ShardLoopConfig {
    /// Shard index.
    pub index: usize,
    /// CPU to pin to.
    pub cpu: Option<usize>,
    /// Lowest port of the slice (inclusive).
    pub port_lo: u16,
    /// Highest port of the slice (inclusive).
    pub port_hi: u16,
    /// IPv4 bind address.
    pub bind_v4: Option<IpAddr>,
    /// IPv6 bind address.
    pub bind_v6: Option<IpAddr>,
    /// Address written into SDP instead of the bind address.
    pub advertise: Option<IpAddr>,
    /// Media timeout.
    pub timeout: Duration,
    /// Strict source by default.
    pub strict: bool,
    /// DSCP code point.
    pub dscp: u8,
    /// Share one port between the legs of a call.
    pub per_call: bool,
    /// Most calls.
    pub calls_max: usize,
    /// Size of the fixed-file table (socket slots).
    pub sockets_max: usize,
    /// Wake-up batching window (0 = wake on every completion).
    pub min_wait_us: u32,
    /// Socket-less legs over AF_XDP (`datapath = "xdp"`, relay attached);
    /// set by `spawn_all_with_xdp`.
    pub xsk: Option<XskSetup>,
    /// The XDP relay's entry maps, when it is loaded and attached: the
    /// shard offloads plain RTP leg pairs to it (see `offload.rs`).
    pub xdp: Option<crate::media::xdp::XdpMapFds>,
    /// `xdp_interface` (with `xdp`): the offload fills its entries' egress
    /// from its neighbour table on these (see `neigh.rs`); empty keeps the
    /// program's FIB lookup.
    pub xdp_interfaces: Vec<String>,
}

impl ShardLoopConfig {
    /// Knobs of shard `k`; `nofile` caps the fixed-file table.
    pub fn from_config(cfg: &Config, k: usize, nofile: u64) -> ShardLoopConfig {
        let (lo, hi) = cfg.shard_ports(k);
        let m = &cfg.media;
        let (v4, v6) = match m.address {
            IpAddr::V4(_) => (Some(m.address), m.address_v6.map(IpAddr::V6)),
            IpAddr::V6(_) => (None, Some(m.address)),
        };
        let ports = usize::from(hi - lo) + 1;
        let sockets_max = ports
            .min(m.calls_max.saturating_mul(4))
            .min(usize::try_from(nofile).unwrap_or(usize::MAX))
            .max(4);
        ShardLoopConfig {
            index: k,
            cpu: cfg.shards.cpus.get(k).copied(),
            port_lo: lo,
            port_hi: hi,
            bind_v4: v4,
            bind_v6: v6,
            advertise: m.advertise,
            timeout: Duration::from_secs(m.timeout_s),
            strict: m.strict_source,
            dscp: m.dscp,
            per_call: m.port_mode == PortMode::PerCall,
            calls_max: m.calls_max,
            sockets_max,
            min_wait_us: cfg.shards.min_wait_us,
            xsk: None,
            xdp: None,
            xdp_interfaces: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SockState {
    Free,
    /// A multishot receive is armed.
    Armed,
    /// Open, receive not armed (new, or the multishot ended).
    Idle,
    /// Cancel requested; waiting for the receive's final completion.
    Closing,
}

#[derive(Clone, Copy, Debug)]
struct SockSlot {
    state: SockState,
    gen: u32,
    port: u16,
    /// Idle in the pair pool (see [`PooledPair`]); its receive stays armed.
    pooled: bool,
}

/// An RTP/RTCP socket pair kept open after its call ended, for the next
/// call: opening and closing sockets (socket, bind, fixed-file update,
/// cancelling the multishot receive) was a fifth of a shard's CPU per call
/// at a few thousand calls per second. A pair waits [`POOL_QUARANTINE`]
/// before reuse so the old call's stray packets cannot be latched by the
/// new one; packets meanwhile find no leg and are dropped as unknown.
struct PooledPair {
    since: Instant,
    ip: IpAddr,
    rtp: u32,
    rtcp: u32,
    port: u16,
}

/// How long a pooled pair rests before reuse (12 packet times at 20 ms).
const POOL_QUARANTINE: Duration = Duration::from_millis(250);
/// Most pairs pooled: 2048, and at most an eighth of the socket table.
const POOL_PAIRS_MAX: usize = 2048;
/// Pooled pairs unused this long are closed.
const POOL_IDLE_MAX: Duration = Duration::from_secs(2);

/// Even-aligned port pairs of the slice; a pair returns when every socket
/// bound on it has closed. Freed pairs go to the back so a just-closed
/// port is reused last (stray packets of the old call find nothing).
struct PortPool {
    lo: u16,
    free: VecDeque<u16>,
    refs: Vec<u8>,
}

impl PortPool {
    fn new(lo: u16, hi: u16) -> PortPool {
        let first = lo + (lo & 1);
        let mut free = VecDeque::new();
        let mut p = u32::from(first);
        while p < u32::from(hi) {
            free.push_back(p as u16);
            p += 2;
        }
        let refs = vec![0; free.len() + 1];
        PortPool {
            lo: first,
            free,
            refs,
        }
    }

    fn alloc(&mut self) -> Option<u16> {
        self.free.pop_front()
    }

    fn idx(&self, port: u16) -> usize {
        usize::from((port & !1) - self.lo) / 2
    }

    fn add_ref(&mut self, port: u16) {
        let i = self.idx(port);
        self.refs[i] += 1;
    }

    /// Return a pair that got no socket (bind failed or not needed).
    fn give_back(&mut self, pair: u16) {
        if self.refs[self.idx(pair)] == 0 {
            self.free.push_back(pair);
        }
    }

    fn release(&mut self, port: u16) {
        let i = self.idx(port);
        assert!(self.refs[i] > 0, "port released more often than bound");
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            self.free.push_back(port & !1);
        }
    }
}

/// A received datagram waiting for the batch it came in with to be
/// relayed (see `Shard::flush_rx`).
struct RxPkt {
    sock: u32,
    src: SocketAddr,
    bid: u16,
    off: usize,
    len: usize,
    pre: Option<PreTag>,
}

/// A relayed datagram waiting for its batched SRTP tag before it is sent.
struct TxPkt {
    bid: u16,
    off: usize,
    len: usize,
    sock: SockId,
    dst: SocketAddr,
    deferred: Option<DeferredTag>,
    /// The deferred tag, once computed.
    tag: [u8; 20],
}

struct SendSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: crate::sys::SockAddrBuf,
    bid: u16,
}

struct StreamSlot {
    legs: Option<(LegId, LegId)>,
    ports: StreamPorts,
}

struct CallSlot {
    key: u64,
    created: SystemTime,
    created_at: Instant,
    streams: Vec<StreamSlot>,
}

/// One shard's state. Field order matters: the ring drops before the
/// buffers and send slots it may still reference.
pub(super) struct Shard {
    ring: IoUring,
    bufs: BufRing,
    send_slots: Box<[SendSlot]>,
    free_sends: Vec<u16>,
    recv_msg: Box<libc::msghdr>,
    wake_buf: Box<u64>,
    wake: OwnedFd,
    cfg: ShardLoopConfig,
    relay: RelayTable,
    /// Received datagrams of the current completion batch.
    rx: Vec<RxPkt>,
    /// Relayed datagrams of the batch being flushed.
    tx_batch: Vec<TxPkt>,
    /// Multi-buffer HMAC-SHA1 for the batch's SRTP tags; `None` on CPUs
    /// without AVX2, where each tag is computed inline by the backend.
    macs: Option<MacBatch>,
    socks: Vec<SockSlot>,
    free_socks: Vec<u32>,
    rearm: Vec<u32>,
    ports: PortPool,
    calls: Vec<Option<CallSlot>>,
    free_calls: Vec<u32>,
    by_key: HashMap<u64, u32>,
    cmds: Receiver<ShardCmd>,
    metrics: Arc<ShardMetrics>,
    events: Sender<ShardEvent>,
    min_wait: bool,
    send_errors: u64,
    enobufs: u64,
    tx: u64,
    wakeups: u64,
    timeouts: u64,
    next_tick: Instant,
    stop: bool,
    /// SIP endpoint and B2BUA; `None` when SIP is disabled.
    sip: Option<Box<SipShard>>,
    /// Readiness seen per SIP socket since it was last read.
    sip_ready: Vec<bool>,
    /// The SIP sockets' descriptors, kept outside `sip` so a poll can be
    /// re-armed while `sip` is taken out for driving (a completion reaped
    /// inside `push_sqe` on a full ring).
    sip_fds: Vec<i32>,
    /// The SIP layer's next deadline.
    sip_deadline: Option<Instant>,
    /// The SIP layer has input left (budget ran out): do not sleep.
    sip_busy: bool,
    /// Socket pairs of ended calls, oldest first.
    pool: VecDeque<PooledPair>,
    pool_max: usize,
    /// Local address of each open socket, by slot.
    sock_ip: Vec<Option<IpAddr>>,
    /// Socket-less legs (AF_XDP), when set up.
    xsk: Option<xsk::XskPath>,
    /// The portal flows' bridges.
    fm: flows::FlowMedia,
    /// Prompt players and DTMF detectors of flow calls.
    pm: player::Players,
    /// Offload of plain RTP leg pairs to the XDP relay; `None` on sockets.
    xdp: Option<Box<offload::Offload>>,
}

fn build_ring(entries: u32, cq: u32) -> io::Result<IoUring> {
    // DEFER_TASKRUN runs completion work only when we enter the kernel to
    // wait, which batches it; it needs SINGLE_ISSUER (kernel 6.1+).
    IoUring::builder()
        .setup_cqsize(cq)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::builder().setup_cqsize(cq).build(entries))
}

impl Shard {
    pub(super) fn new(
        cfg: ShardLoopConfig,
        cmds: Receiver<ShardCmd>,
        wake: OwnedFd,
        metrics: Arc<ShardMetrics>,
        events: Sender<ShardEvent>,
        sip: Option<SipSetup>,
    ) -> io::Result<Shard> {
        let sip = match sip {
            Some(s) => Some(Box::new(SipShard::new(s, cfg.index, Instant::now())?)),
            None => None,
        };
        let prompts = sip.as_ref().and_then(|s| s.prompts.clone());
        let ring = build_ring(4096, 32768)?;
        let min_wait = cfg.min_wait_us > 0 && ring.params().is_feature_min_timeout();
        ring.submitter()
            .register_files_sparse(cfg.sockets_max as u32)?;
        let bufs = BufRing::new(&ring, RECV_BUFS, 0)?;
        let send_slots: Box<[SendSlot]> = (0..SEND_SLOTS)
            .map(|_| SendSlot {
                // SAFETY: msghdr and iovec are plain C structs; zero is valid.
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                addr: Default::default(),
                bid: 0,
            })
            .collect();
        // SAFETY: zeroed msghdr is valid; only namelen matters for
        // multishot receive (it sizes the name area in each buffer).
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
        let legs_max = cfg.calls_max * 2 * 2;
        // Virtual socket ids of socket-less legs follow the real slots.
        let xsk = cfg.xsk.as_ref().and_then(|setup| {
            let vbase = cfg.sockets_max as u32;
            match xsk::XskPath::open(
                setup,
                cfg.index,
                cfg.bind_v4,
                cfg.port_lo,
                cfg.port_hi,
                vbase,
                cfg.dscp,
            ) {
                Ok(x) => Some(x),
                Err(why) => {
                    crate::log::log(
                        crate::log::Level::Warn,
                        "media data path: no AF_XDP legs, media ports get sockets",
                        &[("why", crate::log::Field::Str(&why))],
                    );
                    None
                }
            }
        });
        let vsocks = if xsk.is_some() {
            usize::from(cfg.port_hi - cfg.port_lo) + 1
        } else {
            0
        };
        let mut shard = Shard {
            bufs,
            send_slots,
            free_sends: (0..SEND_SLOTS as u16).rev().collect(),
            recv_msg,
            wake_buf: Box::new(0),
            wake,
            relay: RelayTable::new(legs_max, cfg.sockets_max + vsocks, Instant::now()),
            rx: Vec::with_capacity(CQE_BATCH_MAX),
            tx_batch: Vec::with_capacity(CQE_BATCH_MAX),
            macs: (Simd::detect() != Simd::Scalar).then(MacBatch::new),
            socks: vec![
                SockSlot {
                    state: SockState::Free,
                    gen: 0,
                    port: 0,
                    pooled: false,
                };
                cfg.sockets_max
            ],
            free_socks: (0..cfg.sockets_max as u32).rev().collect(),
            rearm: Vec::with_capacity(cfg.sockets_max),
            ports: PortPool::new(cfg.port_lo, cfg.port_hi),
            calls: (0..cfg.calls_max).map(|_| None).collect(),
            free_calls: (0..cfg.calls_max as u32).rev().collect(),
            by_key: HashMap::with_capacity(cfg.calls_max),
            cmds,
            metrics,
            events,
            min_wait,
            send_errors: 0,
            enobufs: 0,
            tx: 0,
            wakeups: 0,
            timeouts: 0,
            next_tick: Instant::now() + TICK,
            stop: false,
            sip_ready: vec![false; sip.as_ref().map_or(0, |s| s.fds().len())],
            sip_fds: sip.as_ref().map_or(Vec::new(), |s| s.fds()),
            sip,
            sip_deadline: None,
            sip_busy: false,
            pool: VecDeque::new(),
            sock_ip: vec![None; cfg.sockets_max],
            pool_max: POOL_PAIRS_MAX.min(cfg.sockets_max / 16),
            xsk,
            fm: flows::FlowMedia::default(),
            pm: player::Players::new(prompts),
            xdp: None,
            cfg,
            ring,
        };
        shard.xdp_setup(legs_max);
        shard.arm_wake();
        for i in 0..shard.sip_ready.len() {
            shard.arm_sip_poll(i);
        }
        shard.xsk_arm_all();
        Ok(shard)
    }

    fn push_sqe(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every pointer an SQE carries (msghdr, iovec, buffers,
            // wake_buf) lives in this struct until its completion is reaped.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            // SQ full: hand what we have to the kernel, then retry.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    eprintln!("shard {}: submit: {e}", self.cfg.index);
                }
                self.reap_some();
            }
        }
    }

    /// Reap without waiting when the SQ is full and the kernel is busy.
    fn reap_some(&mut self) {
        let now = Instant::now();
        self.process_completions(now);
    }

    fn arm_wake(&mut self) {
        let sqe = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(KIND_WAKE << KIND_SHIFT);
        self.push_sqe(sqe);
    }

    fn arm_sip_poll(&mut self, i: usize) {
        let Some(&fd) = self.sip_fds.get(i) else {
            return;
        };
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data((KIND_SIP << KIND_SHIFT) | i as u64);
        self.push_sqe(sqe);
    }

    fn arm_recv(&mut self, sock: u32) {
        let slot = &mut self.socks[sock as usize];
        debug_assert_eq!(slot.state, SockState::Idle);
        slot.state = SockState::Armed;
        let ud = recv_ud(sock, slot.gen);
        let sqe = opcode::RecvMsgMulti::new(types::Fixed(sock), &*self.recv_msg, self.bufs.bgid)
            .build()
            .user_data(ud);
        self.push_sqe(sqe);
    }

    /// The main loop; returns on `ShardCmd::Stop`.
    pub(super) fn run(&mut self) {
        while !self.stop {
            let now = Instant::now();
            self.process_completions(now);
            self.sip_turn(now);
            if now >= self.next_tick {
                self.tick(now);
            }
            // Sockets whose multishot receive ended (e.g. ENOBUFS) get a new
            // one once buffers are back.
            if self.bufs.out < u32::from(self.bufs.entries()) {
                while let Some(s) = self.rearm.pop() {
                    if self.socks[s as usize].state == SockState::Idle {
                        self.arm_recv(s);
                    }
                }
            }
            self.xsk_turn(now);
            self.wait();
        }
        self.shutdown();
    }

    fn wait(&mut self) {
        self.wakeups += 1;
        let now = Instant::now();
        let deadline = match self.sip_deadline {
            Some(d) => d.min(self.next_tick),
            None => self.next_tick,
        };
        let until = if self.sip_busy || self.xsk.as_ref().is_some_and(|x| x.busy) {
            Duration::ZERO
        } else {
            deadline
                .saturating_duration_since(now)
                .max(Duration::from_micros(50))
        };
        let ts = types::Timespec::new()
            .sec(until.as_secs())
            .nsec(until.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        let (want, args) = if self.min_wait {
            (CQE_WANT, args.min_wait_usec(self.cfg.min_wait_us))
        } else {
            (1, args)
        };
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => {
                eprintln!("shard {}: io_uring_enter: {e}", self.cfg.index);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn process_completions(&mut self, now: Instant) {
        let mut batch = [(0u64, 0i32, 0u32); CQE_BATCH_MAX];
        loop {
            let mut n = 0;
            for cqe in self.ring.completion().take(CQE_BATCH_MAX) {
                batch[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                n += 1;
            }
            for &(ud, res, flags) in &batch[..n] {
                match ud >> KIND_SHIFT {
                    KIND_RECV => self.on_recv(ud, res, flags),
                    KIND_SEND => self.on_send(ud, res),
                    KIND_WAKE => {
                        // Commands may remove legs: relay what came before.
                        self.flush_rx(now);
                        self.arm_wake();
                        self.run_commands(now);
                    }
                    KIND_CANCEL => {}
                    xsk::KIND_XSK => self.xsk_ready(ud, flags),
                    KIND_SIP => {
                        let i = (ud & 0xffff) as usize;
                        if let Some(r) = self.sip_ready.get_mut(i) {
                            *r = true;
                        }
                        if !cqueue::more(flags) {
                            self.arm_sip_poll(i);
                        }
                    }
                    _ => debug_assert!(false, "unknown completion {ud:#x}"),
                }
            }
            self.flush_rx(now);
            self.bufs.commit();
            if self.relay.latched_pending() {
                self.xdp_after_batch(now);
            }
            if n < CQE_BATCH_MAX {
                break;
            }
        }
    }

    #[inline]
    fn on_recv(&mut self, ud: u64, res: i32, flags: u32) {
        let sock = (ud & 0xffff_ffff) as u32;
        let gen = ((ud >> 32) & 0x0fff_ffff) as u32;
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if let Some(_b) = bid {
            self.bufs.taken();
        }
        let live = self
            .socks
            .get(sock as usize)
            .is_some_and(|s| s.gen & 0x0fff_ffff == gen && s.state != SockState::Free);
        if !more && live {
            self.recv_ended(sock, res);
        }
        let Some(bid) = bid else {
            return;
        };
        // Re-read the state: `recv_ended` may just have closed the socket.
        let open = live
            && matches!(
                self.socks[sock as usize].state,
                SockState::Armed | SockState::Idle
            );
        if res < 0 || !open {
            self.bufs.push(bid);
            return;
        }
        let buf = self.bufs.buf(bid);
        let Ok(out) = types::RecvMsgOut::parse(&buf[..res as usize], &self.recv_msg) else {
            self.relay.counters.drops[DropReason::Malformed as usize] += 1;
            self.bufs.push(bid);
            return;
        };
        let src = crate::sys::sockaddr_from_bytes(out.name_data());
        let payload = out.payload_data();
        let (Some(src), false) = (src, out.is_payload_truncated()) else {
            self.relay.counters.rx += 1;
            self.relay.counters.drops[DropReason::Malformed as usize] += 1;
            self.bufs.push(bid);
            return;
        };
        let off = payload.as_ptr() as usize - buf.as_ptr() as usize;
        let len = payload.len();
        self.rx.push(RxPkt {
            sock,
            src,
            bid,
            off,
            len,
            pre: None,
        });
    }

    /// Relays the datagrams received in this batch, in order, in three
    /// passes so that SRTP tags are hashed eight at a time
    /// ([`MacBatch`]): (1) the tags of packets arriving on AES-CM SRTP legs,
    /// (2) [`RelayTable::forward_with`] on each packet, which leaves the
    /// egress tags of AES-CM SRTP legs to us, (3) those tags, then the
    /// sends. The relay re-checks every precomputed tag's key and ROC, so a
    /// packet earlier in the batch that changes a leg (a ROC step) only
    /// costs a later one its shortcut. Re-entrant: a full SQ while sending
    /// reaps completions, which may flush again.
    fn flush_rx(&mut self, now: Instant) {
        if self.rx.is_empty() {
            return;
        }
        let mut rx = std::mem::take(&mut self.rx);
        let mut tx = std::mem::take(&mut self.tx_batch);
        tx.clear();
        let batching = self.macs.is_some();
        if let Some(macs) = self.macs {
            // Pass 1, eight packets at a time, straight from the buffers.
            let mut group = [MacInput::EMPTY; LANES];
            let mut which = [0usize; LANES];
            let mut tags = [[0u8; 20]; LANES];
            let mut n = 0;
            for i in 0..rx.len() {
                let p = &rx[i];
                let pkt = &self.bufs.buf(p.bid)[p.off..p.off + p.len];
                if let Some(inp) = self.relay.auth_input(p.sock, p.src, pkt) {
                    group[n] = inp;
                    which[n] = i;
                    n += 1;
                }
                if n == LANES || (n > 0 && i + 1 == rx.len()) {
                    macs.run(&group[..n], &mut tags);
                    for k in 0..n {
                        rx[which[k]].pre = Some(PreTag {
                            key: *group[k].key,
                            roc: group[k].roc,
                            tag: tags[k],
                        });
                    }
                    n = 0;
                }
            }
        }
        for p in rx.drain(..) {
            if self.pm.listening() {
                // DTMF of the portal's flows, before the relay sees it.
                self.pm
                    .inspect(p.sock, &self.bufs.buf(p.bid)[p.off..p.off + p.len]);
            }
            let mut len = p.len;
            let mut deferred = None;
            // The relay works in place on the rest of the buffer, which
            // leaves room after the datagram for an SRTP tag.
            let room = &mut self.bufs.buf_mut(p.bid)[p.off..];
            let v = self.relay.forward_with(
                now,
                p.sock,
                p.src,
                room,
                &mut len,
                p.pre.as_ref(),
                batching.then_some(&mut deferred),
            );
            match v {
                Verdict::Send { sock, dst } => tx.push(TxPkt {
                    bid: p.bid,
                    off: p.off,
                    len,
                    sock,
                    dst,
                    deferred,
                    tag: [0; 20],
                }),
                Verdict::Drop(_) => self.bufs.push(p.bid),
            }
        }
        if let Some(macs) = self.macs {
            // Pass 3: the deferred egress tags, eight at a time.
            let mut which = [0usize; LANES];
            let mut tags = [[0u8; 20]; LANES];
            let mut n = 0;
            for i in 0..tx.len() {
                if tx[i].deferred.is_some() {
                    which[n] = i;
                    n += 1;
                }
                if n == LANES || (n > 0 && i + 1 == tx.len()) {
                    let mut group = [MacInput::EMPTY; LANES];
                    for (g, &w) in group.iter_mut().zip(&which[..n]) {
                        let t = &tx[w];
                        if let Some(d) = &t.deferred {
                            *g = MacInput {
                                key: &d.key,
                                msg: &self.bufs.buf(t.bid)[t.off..t.off + d.msg_len],
                                roc: d.roc,
                            };
                        }
                    }
                    macs.run(&group[..n], &mut tags);
                    for k in 0..n {
                        tx[which[k]].tag = tags[k];
                    }
                    n = 0;
                }
            }
            for t in &tx {
                if let Some(d) = &t.deferred {
                    let at = t.off + d.msg_len;
                    self.bufs.buf_mut(t.bid)[at..at + d.tag_len]
                        .copy_from_slice(&t.tag[..d.tag_len]);
                }
            }
        }
        for t in tx.drain(..) {
            self.send(t.bid, t.off, t.len, t.sock, t.dst);
        }
        // Keep the allocations unless a re-entrant flush replaced them.
        if self.rx.capacity() == 0 {
            self.rx = rx;
        }
        if self.tx_batch.capacity() == 0 {
            self.tx_batch = tx;
        }
    }

    /// A multishot receive will post no more completions.
    fn recv_ended(&mut self, sock: u32, res: i32) {
        match self.socks[sock as usize].state {
            SockState::Closing => self.finish_close(sock),
            SockState::Armed => {
                if res == -libc::ENOBUFS {
                    self.enobufs += 1;
                }
                self.socks[sock as usize].state = SockState::Idle;
                self.rearm.push(sock);
            }
            SockState::Idle | SockState::Free => {}
        }
    }

    #[inline]
    fn send(&mut self, bid: u16, off: usize, len: usize, sock: SockId, dst: SocketAddr) {
        if sock as usize >= self.socks.len() {
            // A socket-less egress leg: out of an AF_XDP socket.
            if !self.xsk_send_from_socket(sock, dst, bid, off, len) {
                self.send_errors += 1;
            }
            self.bufs.push(bid);
            return;
        }
        let Some(slot_idx) = self.free_sends.pop() else {
            self.relay.counters.drops[DropReason::QueueFull as usize] += 1;
            self.relay.counters.forwarded -= 1;
            self.bufs.push(bid);
            return;
        };
        let ptr = self.bufs.ptr(bid, off);
        let slot = &mut self.send_slots[usize::from(slot_idx)];
        slot.bid = bid;
        let namelen = slot.addr.set(dst);
        slot.iov = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        slot.msg.msg_name = slot.addr.as_mut_ptr();
        slot.msg.msg_namelen = namelen;
        slot.msg.msg_iov = &mut slot.iov;
        slot.msg.msg_iovlen = 1;
        let sqe = opcode::SendMsg::new(types::Fixed(sock), &slot.msg)
            .build()
            .user_data((KIND_SEND << KIND_SHIFT) | u64::from(slot_idx));
        self.push_sqe(sqe);
    }

    #[inline]
    fn on_send(&mut self, ud: u64, res: i32) {
        let slot_idx = (ud & 0xffff) as u16;
        let bid = self.send_slots[usize::from(slot_idx)].bid;
        if res < 0 {
            self.send_errors += 1;
        } else {
            self.tx += 1;
        }
        if bid >= player::PLAY_BID_BASE {
            self.pm.release(bid - player::PLAY_BID_BASE);
        } else {
            self.bufs.push(bid);
        }
        self.free_sends.push(slot_idx);
    }

    // ---- sockets and ports ------------------------------------------------

    fn open_socket(&mut self, ip: IpAddr, port: u16) -> Result<u32, ShardError> {
        let Some(slot) = self.free_socks.pop() else {
            return Err(ShardError::PortsExhausted);
        };
        let r = (|| -> io::Result<()> {
            let domain = if ip.is_ipv4() {
                Domain::IPV4
            } else {
                Domain::IPV6
            };
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
            if ip.is_ipv6() {
                s.set_only_v6(true)?;
            }
            if self.cfg.dscp > 0 {
                let tos = u32::from(self.cfg.dscp) << 2;
                if ip.is_ipv4() {
                    s.set_tos(tos)?;
                } else {
                    s.set_tclass_v6(tos)?;
                }
            }
            if ip.is_ipv4() {
                crate::sys::set_dont_fragment_v4(s.as_raw_fd())?;
            }
            s.bind(&SocketAddr::new(ip, port).into())?;
            self.ring
                .submitter()
                .register_files_update(slot, &[s.as_raw_fd()])?;
            // The fixed-file table holds the socket now; the descriptor is
            // closed when `s` drops, freeing its place in the fd table.
            Ok(())
        })();
        match r {
            Ok(()) => {
                let st = &mut self.socks[slot as usize];
                st.state = SockState::Idle;
                st.gen = st.gen.wrapping_add(1);
                st.port = port;
                st.pooled = false;
                self.sock_ip[slot as usize] = Some(ip);
                self.ports.add_ref(port);
                self.arm_recv(slot);
                Ok(slot)
            }
            Err(e) => {
                self.free_socks.push(slot);
                Err(ShardError::Socket(e.to_string()))
            }
        }
    }

    fn close_socket(&mut self, sock: u32) {
        if self.xsk_close(sock) {
            return;
        }
        if self.relay.socket_in_use(sock) {
            return;
        }
        let st = self.socks[sock as usize];
        match st.state {
            SockState::Armed => {
                self.socks[sock as usize].state = SockState::Closing;
                let sqe = opcode::AsyncCancel::new(recv_ud(sock, st.gen))
                    .build()
                    .user_data(KIND_CANCEL << KIND_SHIFT);
                self.push_sqe(sqe);
            }
            SockState::Idle => self.finish_close(sock),
            SockState::Closing | SockState::Free => {}
        }
    }

    fn finish_close(&mut self, sock: u32) {
        let st = &mut self.socks[sock as usize];
        assert!(st.state != SockState::Free, "double close of socket {sock}");
        st.state = SockState::Free;
        let port = st.port;
        if let Err(e) = self.ring.submitter().register_files_update(sock, &[-1]) {
            eprintln!("shard {}: unregister socket: {e}", self.cfg.index);
        }
        self.ports.release(port);
        self.free_socks.push(sock);
    }

    fn local_ip(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.cfg.bind_v6
        } else {
            self.cfg.bind_v4
        }
    }

    fn advertised(&self, bind: IpAddr) -> IpAddr {
        match self.cfg.advertise {
            Some(a) if a.is_ipv4() == bind.is_ipv4() => a,
            _ => bind,
        }
    }

    /// Open the RTP (and RTCP unless muxed) sockets of one side on a fresh
    /// port pair; retries other pairs if a port is taken by someone else.
    fn open_side(&mut self, ip: IpAddr, mux: bool) -> Result<(u32, Option<u32>, u16), ShardError> {
        if let Some(r) = self.xsk_open_side(ip, mux) {
            return r;
        }
        if !mux {
            if let Some(pair) = self.take_pooled(ip, false) {
                return Ok(pair);
            }
        }
        let r = self.open_fresh(ip, mux);
        if !matches!(r, Err(ShardError::PortsExhausted)) {
            return r;
        }
        // Out of ports or socket slots: a pooled pair serves even before
        // its quarantine ends, rather than refusing the call.
        match self.take_pooled(ip, true) {
            Some((rtp, Some(rtcp), port)) if mux => {
                self.close_socket(rtcp);
                Ok((rtp, None, port))
            }
            Some(pair) => Ok(pair),
            None => r,
        }
    }

    fn open_fresh(&mut self, ip: IpAddr, mux: bool) -> Result<(u32, Option<u32>, u16), ShardError> {
        for _ in 0..64 {
            let pair = self.ports.alloc().ok_or(ShardError::PortsExhausted)?;
            let rtp = match self.open_socket(ip, pair) {
                Ok(s) => s,
                Err(ShardError::Socket(_)) => {
                    self.ports.give_back(pair);
                    continue;
                }
                Err(e) => {
                    self.ports.give_back(pair);
                    return Err(e);
                }
            };
            if mux {
                return Ok((rtp, None, pair));
            }
            match self.open_socket(ip, pair + 1) {
                Ok(rtcp) => return Ok((rtp, Some(rtcp), pair)),
                Err(e) => {
                    self.close_socket(rtp);
                    if !matches!(e, ShardError::Socket(_)) {
                        return Err(e);
                    }
                }
            }
        }
        Err(ShardError::PortsExhausted)
    }

    // ---- commands ----------------------------------------------------------

    fn run_commands(&mut self, now: Instant) {
        // Bounded: a flood of commands cannot starve the packet path.
        for _ in 0..64 {
            let Ok(cmd) = self.cmds.try_recv() else {
                return;
            };
            match cmd {
                ShardCmd::Offer {
                    key,
                    streams,
                    strict,
                    reply,
                } => {
                    let r = self.offer(now, key, streams, strict);
                    let _ = reply.send(r);
                }
                ShardCmd::Answer {
                    key,
                    streams,
                    reply,
                } => {
                    let r = self.answer(now, key, streams);
                    let _ = reply.send(r);
                }
                ShardCmd::Delete { key, reply } => {
                    let r = match self.by_key.get(&key) {
                        Some(&c) => Ok(self.delete(now, c)),
                        None => Err(ShardError::UnknownCall),
                    };
                    let _ = reply.send(r);
                }
                ShardCmd::Query { key, reply } => {
                    let r = match self.by_key.get(&key) {
                        Some(&c) => {
                            self.xdp_refresh_call(c);
                            Ok(self.report(now, c))
                        }
                        None => Err(ShardError::UnknownCall),
                    };
                    let _ = reply.send(r);
                }
                ShardCmd::Originate { req, reply } => {
                    let r = self.sip_command(now, |sip, now| {
                        sip.b2b.originate(now, req).map_err(ShardError::Refused)
                    });
                    let _ = reply.send(r);
                }
                ShardCmd::HangupOrigination { id, reply } => {
                    let r = self.sip_command(now, |sip, now| {
                        sip.b2b
                            .hangup_origination(now, id)
                            .map_err(|_| ShardError::UnknownOrigination)
                    });
                    let _ = reply.send(r);
                }
                ShardCmd::StartFlow { req, reply } => {
                    let r = self.sip_command(now, |sip, now| {
                        sip.flows.start(now, req).map_err(ShardError::Flow)
                    });
                    let _ = reply.send(r);
                }
                ShardCmd::HangupFlow { id, reply } => {
                    let r = self.sip_command(now, |sip, now| {
                        sip.flows
                            .hangup(now, id)
                            .map_err(|_| ShardError::UnknownOrigination)
                    });
                    let _ = reply.send(r);
                }
                ShardCmd::ReloadTrunks { cfg, reply } => {
                    let r = match self.sip.as_mut() {
                        Some(sip) => {
                            let k = self.cfg.index;
                            let trunks = crate::sip::trunk::TrunkSet::for_shard(&cfg, k, now);
                            let routes = crate::sip::trunk::Routes::new(&cfg.routes, &trunks);
                            sip.b2b.reload(trunks, routes).map_err(ShardError::Invalid)
                        }
                        None => Err(ShardError::NoSip),
                    };
                    let _ = reply.send(r);
                }
                ShardCmd::Stop => {
                    self.stop = true;
                    return;
                }
            }
        }
        // More queued: make sure we come back without waiting for a packet.
        crate::sys::eventfd_signal(self.wake.as_raw_fd());
    }

    fn offer(
        &mut self,
        now: Instant,
        key: u64,
        streams: Vec<StreamOffer>,
        strict: bool,
    ) -> Result<Vec<StreamPorts>, ShardError> {
        if let Some(&c) = self.by_key.get(&key) {
            // Remotes may change: off XDP, back on when final again.
            self.xdp_release_call(c);
            let r = self.reoffer(c, streams);
            self.xdp_check_call(c, now);
            return r;
        }
        let Some(ci) = self.free_calls.pop() else {
            return Err(ShardError::CallsFull);
        };
        let mut call = CallSlot {
            key,
            created: SystemTime::now(),
            created_at: now,
            streams: Vec::with_capacity(streams.len()),
        };
        let mut result = Ok(());
        for s in streams {
            match self.alloc_stream(ci, s, strict || self.cfg.strict) {
                Ok(slot) => call.streams.push(slot),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let ports = call.streams.iter().map(|s| s.ports).collect();
        self.calls[ci as usize] = Some(call);
        if let Err(e) = result {
            self.teardown(ci);
            return Err(e);
        }
        self.by_key.insert(key, ci);
        self.xdp_check_call(ci, now);
        Ok(ports)
    }

    fn reoffer(
        &mut self,
        ci: u32,
        streams: Vec<StreamOffer>,
    ) -> Result<Vec<StreamPorts>, ShardError> {
        let call = self.calls[ci as usize]
            .as_ref()
            .expect("indexed call exists");
        if call.streams.len() != streams.len() {
            return Err(ShardError::Invalid(format!(
                "re-offer has {} streams, call has {}",
                streams.len(),
                call.streams.len()
            )));
        }
        let legs: Vec<_> = call.streams.iter().map(|s| s.legs).collect();
        let ports = call.streams.iter().map(|s| s.ports).collect();
        for (l, s) in legs.iter().zip(streams) {
            let Some((a, _)) = l else { continue };
            let leg = self.relay.leg_mut(*a);
            if let Some(rtp) = s.a_rtp {
                leg.set_remote(rtp, s.a_rtcp);
            }
            // New keys on a re-offer replace the old ones.
            if let Some(c) = s.a_crypto {
                leg.srtp_in = Some(c.inbound);
                leg.srtp_out = Some(c.outbound);
            }
        }
        Ok(ports)
    }

    fn alloc_stream(
        &mut self,
        ci: u32,
        s: StreamOffer,
        strict: bool,
    ) -> Result<StreamSlot, ShardError> {
        let a_ip = self
            .local_ip(s.a_v6)
            .ok_or_else(|| ShardError::Invalid("no media address for leg A's family".into()))?;
        let b_ip = self
            .local_ip(s.b_v6)
            .ok_or_else(|| ShardError::Invalid("no media address for leg B's family".into()))?;
        if s.disabled {
            let off = |ip| LocalEndpoint {
                address: ip,
                rtp_port: 0,
                rtcp_port: None,
            };
            return Ok(StreamSlot {
                legs: None,
                ports: StreamPorts {
                    a: off(self.advertised(a_ip)),
                    b: off(self.advertised(b_ip)),
                },
            });
        }
        let shared = self.cfg.per_call && a_ip == b_ip;
        let (a_socks, b_socks) = if shared {
            let (rtp, rtcp, port) = self.open_side(a_ip, s.a_mux && s.b_mux)?;
            let side = |mux: bool| (rtp, if mux { None } else { rtcp }, port);
            (side(s.a_mux), side(s.b_mux))
        } else {
            let a = self.open_side(a_ip, s.a_mux)?;
            match self.open_side(b_ip, s.b_mux) {
                Ok(b) => (a, b),
                Err(e) => {
                    self.close_socket(a.0);
                    if let Some(r) = a.1 {
                        self.close_socket(r);
                    }
                    return Err(e);
                }
            }
        };
        let mk = |socks: (u32, Option<u32>, u16)| Leg::new(ci, socks.0, socks.1);
        let mut leg_a = mk(a_socks);
        let mut leg_b = mk(b_socks);
        for l in [&mut leg_a, &mut leg_b] {
            l.clock_rate = s.clock_rate;
            l.on_mismatch = if strict {
                OnMismatch::Drop
            } else {
                OnMismatch::Learn
            };
        }
        if let Some(rtp) = s.a_rtp {
            leg_a.set_remote(rtp, s.a_rtcp);
        }
        if let Some(c) = s.a_crypto {
            leg_a.srtp_in = Some(c.inbound);
            leg_a.srtp_out = Some(c.outbound);
        }
        let a = self
            .relay
            .insert(leg_a)
            .map_err(|_| ShardError::CallsFull)?;
        let b = match self.relay.insert(leg_b) {
            Ok(b) => b,
            Err(_) => {
                self.remove_leg(a, false);
                // Leg B never made it into the table: close its own
                // sockets (no-ops for sockets shared with leg A).
                self.close_socket(b_socks.0);
                if let Some(r) = b_socks.1 {
                    self.close_socket(r);
                }
                return Err(ShardError::CallsFull);
            }
        };
        self.relay.pair(a, b);
        let ep = |ip: IpAddr, socks: (u32, Option<u32>, u16)| LocalEndpoint {
            address: ip,
            rtp_port: socks.2,
            rtcp_port: socks.1.map(|_| socks.2 + 1),
        };
        Ok(StreamSlot {
            legs: Some((a, b)),
            ports: StreamPorts {
                a: ep(self.advertised(a_ip), a_socks),
                b: ep(self.advertised(b_ip), b_socks),
            },
        })
    }

    fn remove_leg(&mut self, id: LegId, pool: bool) {
        let leg = self.relay.remove(id);
        if let (true, Some(rtcp)) = (pool, leg.rtcp_sock) {
            if self.try_pool(leg.rtp_sock, rtcp) {
                return;
            }
        }
        self.close_socket(leg.rtp_sock);
        if let Some(s) = leg.rtcp_sock {
            self.close_socket(s);
        }
    }

    /// Keeps an unused RTP/RTCP pair open for a later call, if the pool
    /// has room and the pair is whole (port, port + 1, both receiving).
    fn try_pool(&mut self, rtp: u32, rtcp: u32) -> bool {
        if self.pool.len() >= self.pool_max
            || rtp as usize >= self.socks.len()
            || rtcp as usize >= self.socks.len()
            || self.relay.socket_in_use(rtp)
            || self.relay.socket_in_use(rtcp)
        {
            return false;
        }
        let (a, b) = (self.socks[rtp as usize], self.socks[rtcp as usize]);
        let open = |s: SockSlot| matches!(s.state, SockState::Armed | SockState::Idle) && !s.pooled;
        if !open(a) || !open(b) || a.port & 1 != 0 || b.port != a.port + 1 {
            return false;
        }
        let Some(ip) = self.sock_ip.get(rtp as usize).copied().flatten() else {
            return false;
        };
        self.socks[rtp as usize].pooled = true;
        self.socks[rtcp as usize].pooled = true;
        self.pool.push_back(PooledPair {
            since: Instant::now(),
            ip,
            rtp,
            rtcp,
            port: a.port,
        });
        true
    }

    /// The oldest pooled pair on `ip` that has rested long enough (or, with
    /// `force`, the oldest on `ip` at all).
    fn take_pooled(&mut self, ip: IpAddr, force: bool) -> Option<(u32, Option<u32>, u16)> {
        let i = if force {
            self.pool.iter().position(|p| p.ip == ip)?
        } else {
            let p = self.pool.front()?;
            if p.ip != ip || p.since.elapsed() < POOL_QUARANTINE {
                return None;
            }
            0
        };
        let p = self.pool.remove(i)?;
        self.socks[p.rtp as usize].pooled = false;
        self.socks[p.rtcp as usize].pooled = false;
        Some((p.rtp, Some(p.rtcp), p.port))
    }

    /// Closes pooled pairs unused for [`POOL_IDLE_MAX`] (all of them with
    /// `None`, at shutdown): when calls stop coming, ports go back.
    fn drain_pool(&mut self, now: Option<Instant>) {
        while let Some(p) = self.pool.front() {
            if now.is_some_and(|n| n.saturating_duration_since(p.since) < POOL_IDLE_MAX) {
                return;
            }
            let Some(p) = self.pool.pop_front() else {
                return;
            };
            self.socks[p.rtp as usize].pooled = false;
            self.socks[p.rtcp as usize].pooled = false;
            self.close_socket(p.rtp);
            self.close_socket(p.rtcp);
        }
    }

    fn answer(
        &mut self,
        now: Instant,
        key: u64,
        streams: Vec<StreamAnswer>,
    ) -> Result<Vec<StreamPorts>, ShardError> {
        let &ci = self.by_key.get(&key).ok_or(ShardError::UnknownCall)?;
        // Leg B's remote changes: off XDP, back on when final.
        self.xdp_release_call(ci);
        let r = self.answer_streams(ci, streams);
        self.xdp_check_call(ci, now);
        r
    }

    fn answer_streams(
        &mut self,
        ci: u32,
        streams: Vec<StreamAnswer>,
    ) -> Result<Vec<StreamPorts>, ShardError> {
        let n = self.calls[ci as usize]
            .as_ref()
            .map_or(0, |c| c.streams.len());
        if streams.len() > n {
            return Err(ShardError::Invalid(format!(
                "answer has {} streams, offer had {n}",
                streams.len()
            )));
        }
        for (i, s) in streams.into_iter().enumerate() {
            let call = self.calls[ci as usize]
                .as_mut()
                .expect("indexed call exists");
            let Some((_, b)) = call.streams[i].legs else {
                continue;
            };
            if s.b_mux {
                call.streams[i].ports.b.rtcp_port = None;
                if let Some(old) = self.relay.set_muxed(b) {
                    self.close_socket(old);
                }
            }
            let leg = self.relay.leg_mut(b);
            if let Some(rtp) = s.b_rtp {
                leg.set_remote(rtp, s.b_rtcp);
            }
            if let Some(c) = s.b_crypto {
                leg.srtp_in = Some(c.inbound);
                leg.srtp_out = Some(c.outbound);
            }
        }
        let call = self.calls[ci as usize]
            .as_ref()
            .expect("indexed call exists");
        Ok(call.streams.iter().map(|s| s.ports).collect())
    }

    fn report(&self, now: Instant, ci: u32) -> CallReport {
        let call = self.calls[ci as usize]
            .as_ref()
            .expect("indexed call exists");
        let mut legs = Vec::with_capacity(call.streams.len() * 2);
        for (i, s) in call.streams.iter().enumerate() {
            let Some((a, b)) = s.legs else { continue };
            for (id, is_b, local) in [(a, false, s.ports.a), (b, true, s.ports.b)] {
                let l = self.relay.leg(id);
                let mut stats = l.stats;
                // What XDP relayed since it was last added to the leg.
                let live = self.xdp_live(id);
                if let Some((p, by, d)) = live {
                    stats.add_offloaded(p, by, d);
                }
                legs.push(LegReport {
                    stream: i,
                    is_b,
                    local,
                    remote: l.remote_rtp,
                    latched: l.latched,
                    stats,
                    clock_rate: l.clock_rate,
                    idle_s: l
                        .last_rx
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                    offloaded: live.is_some(),
                });
            }
        }
        CallReport {
            key: call.key,
            shard: self.cfg.index,
            created: call.created,
            legs,
        }
    }

    fn delete(&mut self, now: Instant, ci: u32) -> CallReport {
        // Entries out first: their final counts go into the legs' figures.
        self.xdp_release_call(ci);
        let r = self.report(now, ci);
        self.teardown(ci);
        r
    }

    fn teardown(&mut self, ci: u32) {
        self.xdp_release_call(ci);
        if let Some(key) = self.calls[ci as usize].as_ref().map(|c| c.key) {
            // No leg of another call may keep pointing at these.
            self.unbridge(key);
            self.pm.forget(key);
        }
        let call = self.calls[ci as usize].take().expect("indexed call exists");
        for s in &call.streams {
            if let Some((a, b)) = s.legs {
                // Bridged SIP calls come and go by the thousand per
                // second: keep their sockets for the next one. An ng
                // `delete` frees its ports at once (rtpengine's contract).
                let pool = call.key & SIP_KEY_BASE != 0;
                self.remove_leg(a, pool);
                self.remove_leg(b, pool);
            }
        }
        if self.by_key.get(&call.key) == Some(&ci) {
            self.by_key.remove(&call.key);
        }
        self.free_calls.push(ci);
    }

    // ---- SIP ---------------------------------------------------------------

    /// The SIP layer's next deadline: its own timers and the prompt
    /// players' next packet.
    fn next_sip_deadline(&self, sip: &mut SipShard) -> Option<Instant> {
        match (sip.next_deadline(), self.pm.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs a control-plane command against the SIP layer, then carries
    /// out what it caused and notes the next deadline.
    fn sip_command<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut SipShard, Instant) -> Result<T, ShardError>,
    ) -> Result<T, ShardError> {
        let Some(mut sip) = self.sip.take() else {
            return Err(ShardError::NoSip);
        };
        let r = f(&mut sip, now);
        self.drive_sip(&mut sip, now);
        self.sip_deadline = self.next_sip_deadline(&mut sip);
        self.sip = Some(sip);
        r
    }

    /// One turn of the SIP layer: read ready sockets and the inbox (each
    /// within a budget), fire due timers, carry out everything the endpoint
    /// and the B2BUA ask for, and note the next deadline.
    fn sip_turn(&mut self, now: Instant) {
        let Some(mut sip) = self.sip.take() else {
            return;
        };
        for i in 0..sip.more.len() {
            if std::mem::take(&mut self.sip_ready[i]) || sip.more[i] {
                sip.recv(now, i);
                self.drive_sip(&mut sip, now);
            }
        }
        let inbox_more = sip.drain_inbox(now);
        self.drive_sip(&mut sip, now);
        if sip.ep.poll_timeout().is_some_and(|t| t <= now) {
            sip.ep.handle_timeout(now);
        }
        self.drive_sip(&mut sip, now);
        if sip.b2b.poll_timeout().is_some_and(|t| t <= now) {
            sip.b2b.handle_timeout(now);
        }
        self.drive_sip(&mut sip, now);
        if sip.flows.poll_timeout().is_some_and(|t| t <= now) {
            sip.flows.handle_timeout(now);
            self.drive_sip(&mut sip, now);
        }
        self.pump_players(&mut sip, now);
        self.drive_sip(&mut sip, now);
        self.sip_deadline = self.next_sip_deadline(&mut sip);
        self.sip_busy = inbox_more || sip.more.iter().any(|&m| m);
        // Trunk health changes are rare and matter to operators: log them.
        while let Some(ev) = sip.b2b.trunks().poll_event() {
            use crate::log::{log, Field, Level};
            let shard = self.cfg.index as i64;
            match ev {
                TrunkEvent::Down { name, .. } => log(
                    Level::Warn,
                    "trunk down (OPTIONS or INVITEs unanswered)",
                    &[("shard", Field::Int(shard)), ("trunk", Field::Str(&name))],
                ),
                TrunkEvent::Up { name, .. } => log(
                    Level::Info,
                    "trunk up",
                    &[("shard", Field::Int(shard)), ("trunk", Field::Str(&name))],
                ),
            }
        }
        self.sip = Some(sip);
    }

    /// Drains the endpoint's and the B2BUA's outputs until both are quiet.
    /// Each output is finite work and the queues are bounded, so this ends.
    fn drive_sip(&mut self, sip: &mut SipShard, now: Instant) {
        loop {
            let mut busy = false;
            while let Some(o) = sip.ep.poll_output() {
                busy = true;
                match o {
                    EpOutput::Transmit {
                        dst,
                        transport,
                        bytes,
                    } => sip.send(now, dst, transport, &bytes),
                    EpOutput::Event(ev) => sip.b2b.handle_event(now, ev),
                }
            }
            while let Some(o) = sip.b2b.poll_output() {
                busy = true;
                match o {
                    B2buaOutput::Sip(action) => {
                        let r = action.apply(now, &mut sip.ep);
                        match action {
                            SipAction::Invite { bridge, .. } => {
                                sip.b2b.handle_invite_started(now, bridge, r.ok().flatten());
                            }
                            // A re-offer the endpoint refused (glare: the
                            // leg has its own re-INVITE out) must still be
                            // answered, or the bridge waits forever.
                            SipAction::Reoffer { call, .. } if r.is_err() => {
                                sip.counters.actions_failed += 1;
                                sip.b2b.handle_reoffer_answered(now, call, 491, None);
                            }
                            // A probe the endpoint refused is a failed probe.
                            SipAction::Options { trunk, .. } if r.is_err() => {
                                sip.counters.actions_failed += 1;
                                sip.b2b.handle_options_failed(now, trunk);
                            }
                            _ if r.is_err() => sip.counters.actions_failed += 1,
                            _ => {}
                        }
                    }
                    B2buaOutput::Media(req) => self.sip_media(now, sip, req),
                    B2buaOutput::Record(r) => {
                        sip.record(&r);
                        // To the control plane's CDR writer (off the packet
                        // path); a full queue is counted.
                        let ev = ShardEvent::Record {
                            shard: self.cfg.index,
                            record: Box::new(r),
                            anchor: (Instant::now(), SystemTime::now()),
                        };
                        if self.events.try_send(ev).is_err() {
                            sip.counters.records_dropped += 1;
                        }
                    }
                }
            }
            // Originated calls' progress goes to their flow, or to the
            // control plane for calls it placed itself.
            while let Some(event) = sip.b2b.poll_origination_event() {
                busy = true;
                if flows::owned(&sip.flows, event.id) {
                    self.flow_origination_event(sip, &event);
                    sip.flows.handle_origination(now, &event);
                    continue;
                }
                let ev = ShardEvent::Origination {
                    shard: self.cfg.index,
                    event,
                };
                if self.events.try_send(ev).is_err() {
                    sip.counters.events_dropped += 1;
                }
            }
            busy |= self.drive_flows(sip, now);
            if !busy {
                return;
            }
        }
    }

    fn sip_media(&mut self, now: Instant, sip: &mut SipShard, req: MediaRequest) {
        match req {
            MediaRequest::Allocate { call, a_sdp } => {
                match self.sip_allocate(now, sip, call, &a_sdp) {
                    Ok((a, b)) => sip.b2b.handle_media_allocated(now, call, a, b),
                    Err(_) => {
                        sip.counters.media_failed += 1;
                        sip.b2b.handle_media_failed(now, call);
                    }
                }
            }
            MediaRequest::Install {
                call,
                a_remote,
                b_remote,
            }
            | MediaRequest::Update {
                call,
                a_remote,
                b_remote,
            } => {
                let answered = matches!(req, MediaRequest::Install { .. });
                if let Some(&key) = sip.bridges.get(&call) {
                    self.set_remotes(now, key, a_remote, b_remote);
                    // The media timeout counts from the answer: a call may
                    // ring for long without early media.
                    if let (true, Some(&ci)) = (answered, self.by_key.get(&key)) {
                        if let Some(c) = self.calls[ci as usize].as_mut() {
                            c.created_at = now;
                        }
                    }
                }
            }
            MediaRequest::Release { call } => {
                if let Some(key) = sip.bridges.remove(&call) {
                    sip.media_bridge.remove(&key);
                    if let Some(&ci) = self.by_key.get(&key) {
                        self.teardown(ci);
                    }
                }
            }
        }
    }

    /// Both relay legs of a bridged call, from A's offer: leg A's remote is
    /// the offer's first active stream, leg B's comes with the answer.
    fn sip_allocate(
        &mut self,
        now: Instant,
        sip: &mut SipShard,
        call: BridgeId,
        a_sdp: &[u8],
    ) -> Result<(SocketAddr, SocketAddr), ShardError> {
        let sdp = Sdp::parse(a_sdp).map_err(|e| ShardError::Invalid(e.to_string()))?;
        let m = sdp
            .media
            .iter()
            .find(|m| m.port != 0)
            .ok_or_else(|| ShardError::Invalid("no active stream in the offer".into()))?;
        let usable = !m.address.is_unspecified();
        let rtp = SocketAddr::new(m.address, m.port);
        let rtcp = match m.rtcp {
            Some((p, ip)) => Some(SocketAddr::new(ip.unwrap_or(m.address), p)),
            None => m.port.checked_add(1).map(|p| SocketAddr::new(m.address, p)),
        };
        let a_v6 = m.address.is_ipv6();
        let offer = StreamOffer {
            a_rtp: usable.then_some(rtp),
            a_rtcp: if usable { rtcp } else { None },
            a_mux: false,
            b_mux: false,
            a_v6,
            b_v6: a_v6,
            clock_rate: m.clock_rate,
            disabled: false,
            a_crypto: None,
        };
        let key = sip.media_key();
        let ports = self.offer(now, key, vec![offer], false)?;
        sip.bridges.insert(call, key);
        sip.media_bridge.insert(key, call);
        let p = ports[0];
        Ok((
            SocketAddr::new(p.a.address, p.a.rtp_port),
            SocketAddr::new(p.b.address, p.b.rtp_port),
        ))
    }

    /// New remotes for the first stream of media call `key` (RTCP at the
    /// RTP port + 1); `None` leaves a side as it is (held).
    fn set_remotes(
        &mut self,
        now: Instant,
        key: u64,
        a: Option<SocketAddr>,
        b: Option<SocketAddr>,
    ) {
        let Some(&ci) = self.by_key.get(&key) else {
            return;
        };
        self.xdp_release_call(ci);
        self.set_remotes_of(ci, a, b);
        self.xdp_check_call(ci, now);
    }

    fn set_remotes_of(&mut self, ci: u32, a: Option<SocketAddr>, b: Option<SocketAddr>) {
        let Some(legs) = self.calls[ci as usize]
            .as_ref()
            .and_then(|c| c.streams.first())
            .and_then(|s| s.legs)
        else {
            return;
        };
        for (id, remote) in [(legs.0, a), (legs.1, b)] {
            if let Some(rtp) = remote {
                let rtcp = rtp
                    .port()
                    .checked_add(1)
                    .map(|p| SocketAddr::new(rtp.ip(), p));
                self.relay.leg_mut(id).set_remote(rtp, rtcp);
            }
        }
    }

    // ---- timers ------------------------------------------------------------

    /// When call slot `ci` last heard from any remote (or was created).
    fn call_last_rx(&self, ci: u32) -> Option<Instant> {
        let c = self.calls.get(ci as usize)?.as_ref()?;
        let mut last = c.created_at;
        for s in &c.streams {
            if let Some((a, b)) = s.legs {
                for id in [a, b] {
                    if let Some(t) = self.relay.leg(id).last_rx {
                        last = last.max(t);
                    }
                }
            }
        }
        Some(last)
    }

    fn tick(&mut self, now: Instant) {
        self.next_tick = now + TICK;
        self.drain_pool(Some(now));
        // Offloaded legs' activity, from the XDP counters (bounded reads).
        self.xdp_tick(now);
        self.xsk_tick();
        let timeout = self.cfg.timeout;
        let mut expired = Vec::new();
        for ci in 0..self.calls.len() as u32 {
            let Some(last) = self.call_last_rx(ci) else {
                continue;
            };
            if now.saturating_duration_since(last) >= timeout {
                expired.push(ci);
            }
        }
        // A call about to expire with offloaded legs: read them once more.
        if self.xdp.is_some() {
            expired.retain(|&ci| {
                if !self.xdp_call_offloaded(ci) {
                    return true;
                }
                self.xdp_refresh_call(ci);
                self.call_last_rx(ci)
                    .is_some_and(|last| now.saturating_duration_since(last) >= timeout)
            });
        }
        // A bridged SIP call is ended by SIP (BYEs from the B2BUA), not
        // behind the B2BUA's back; it releases the media itself.
        let (sip_expired, expired): (Vec<u32>, Vec<u32>) = expired.into_iter().partition(|&ci| {
            self.calls[ci as usize]
                .as_ref()
                .is_some_and(|c| c.key & SIP_KEY_BASE != 0)
        });
        if let Some(mut sip) = self.sip.take() {
            for ci in sip_expired {
                let key = self.calls[ci as usize].as_ref().map_or(0, |c| c.key);
                if let Some(&bridge) = sip.media_bridge.get(&key) {
                    sip.b2b.handle_media_timeout(now, bridge);
                }
            }
            self.drive_sip(&mut sip, now);
            // The BYEs sent here armed retransmit timers: wait() must see them.
            self.sip_deadline = self.next_sip_deadline(&mut sip);
            self.sip = Some(sip);
        }
        for ci in expired {
            let r = self.delete(now, ci);
            self.timeouts += 1;
            // The queue is bounded; if the control plane is that far behind
            // it learns of the end from its own query failing.
            let _ = self.events.try_send(ShardEvent::MediaTimeout(r));
        }
        self.publish();
    }

    fn publish(&self) {
        let m = &self.metrics;
        let c = &self.relay.counters;
        m.rx.store(c.rx, Ordering::Relaxed);
        m.tx.store(self.tx, Ordering::Relaxed);
        for (d, v) in m.drops.iter().zip(c.drops.iter()) {
            d.store(*v, Ordering::Relaxed);
        }
        m.send_errors.store(self.send_errors, Ordering::Relaxed);
        m.enobufs.store(self.enobufs, Ordering::Relaxed);
        m.calls.store(self.by_key.len() as u64, Ordering::Relaxed);
        m.timeouts.store(self.timeouts, Ordering::Relaxed);
        m.wakeups.store(self.wakeups, Ordering::Relaxed);
        if let Some(sip) = &self.sip {
            let c = sip.counters;
            let e = sip.ep.counters();
            let b = sip.b2b.counters();
            m.sip_rx.store(c.rx + c.taken_over, Ordering::Relaxed);
            m.sip_tx.store(c.tx, Ordering::Relaxed);
            m.sip_handed_over.store(c.handed_over, Ordering::Relaxed);
            m.sip_dropped.store(
                c.handover_dropped
                    + c.tx_errors
                    + e.parse_dropped
                    + e.transmits_dropped
                    + e.events_dropped,
                Ordering::Relaxed,
            );
            m.sip_rejected.store(
                e.parse_answered + e.rejected_busy + e.no_dialog + e.rejected_other,
                Ordering::Relaxed,
            );
            m.sip_calls
                .store(sip.b2b.calls_len() as u64, Ordering::Relaxed);
            m.sip_records.store(c.records, Ordering::Relaxed);
            m.sip_refused.store(b.rejected_full, Ordering::Relaxed);
            m.flows.store(sip.flows.len() as u64, Ordering::Relaxed);
            let trunks = sip.b2b.trunks_ref();
            let names = m.trunks.get_or_init(|| {
                (0..trunks.len())
                    .map(|i| {
                        let id = crate::sip::trunk::TrunkId(i as u16);
                        (
                            trunks.config(id).name.clone(),
                            std::sync::atomic::AtomicBool::new(true),
                        )
                    })
                    .collect()
            });
            for (i, (_, up)) in names.iter().enumerate() {
                let id = crate::sip::trunk::TrunkId(i as u16);
                up.store(
                    trunks.health(id) == crate::sip::trunk::Health::Up,
                    Ordering::Relaxed,
                );
            }
        }
        m.prompt_packets
            .store(self.pm.counters.sent, Ordering::Relaxed);
        if let Some(x) = self.xdp_counters() {
            m.xdp_offloaded_legs.store(x.legs, Ordering::Relaxed);
            m.xdp_installs.store(x.installs, Ordering::Relaxed);
            m.xdp_packets.store(x.packets, Ordering::Relaxed);
            m.xdp_bytes.store(x.bytes, Ordering::Relaxed);
            m.xdp_src_drops.store(x.src_drops, Ordering::Relaxed);
            m.xdp_map_errors.store(x.map_errors, Ordering::Relaxed);
            m.xdp_egress_direct
                .store(x.egress_direct, Ordering::Relaxed);
            m.xdp_egress_updates
                .store(x.egress_updates, Ordering::Relaxed);
        }
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        let live: Vec<u32> = self.by_key.values().copied().collect();
        for ci in live {
            self.teardown(ci);
        }
        self.drain_pool(None);
        let _ = self.ring.submit();
        self.process_completions(now);
        self.publish();
        if let Some(r) = self.xsk_report() {
            eprintln!("shard {}: {r}", self.cfg.index);
        }
        if let Some(sip) = &self.sip {
            // The full breakdown once, at stop, for whoever reads the log.
            eprintln!(
                "shard {}: sip shell {:?}; endpoint {:?}; b2bua {:?}",
                self.cfg.index,
                sip.counters,
                sip.ep.counters(),
                sip.b2b.counters()
            );
            if let Some(st) = &sip.streams {
                eprintln!(
                    "shard {}: sip streams open {}; {:?}",
                    self.cfg.index,
                    st.len(),
                    st.counters
                );
            }
        }
    }
}
