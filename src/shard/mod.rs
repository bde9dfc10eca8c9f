//! Shards: one pinned thread, one io_uring, one slice of the media ports.
//!
//! The control plane talks to a shard only through [`ShardHandle`]: it
//! sends a [`ShardCmd`] on a bounded queue and signals the shard's eventfd,
//! which completes a read on the shard's ring and wakes it. Replies come
//! back on a per-request channel; unsolicited events (a call ended by media
//! timeout) on the shared [`ShardEvent`] queue. Nothing else is shared: the
//! packet path touches only the shard's own memory. Counters are published
//! to [`ShardMetrics`] (relaxed atomics) once per housekeeping tick, not per
//! packet.

mod bufring;
mod run;
pub mod sip;
pub mod stream;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, Sender};

use crate::call::flow::{FlowError, FlowEvent, FlowId, FlowRequest};
use crate::call::{OriginateError, OriginateRequest, OriginationEvent, OriginationId};
use crate::config::Config;
use crate::media::relay::DropReason;
use crate::media::srtp::SrtpContext;
use crate::media::stats::LegStats;

pub use run::{ShardLoopConfig, XskSetup};

/// Depth of a shard's command queue. The control plane waits for each
/// reply, so a handful is plenty; the bound keeps a wedged shard from
/// absorbing memory.
pub const COMMAND_QUEUE_DEPTH: usize = 1024;

/// SRTP contexts for one leg (SDES, RFC 4568), made by the control plane.
#[derive(Debug)]
pub struct LegCrypto {
    /// Unprotects what the leg's remote sends (the remote's key).
    pub inbound: Box<SrtpContext>,
    /// Protects what goes to the leg's remote (our key for it).
    pub outbound: Box<SrtpContext>,
}

/// What one media stream (one `m=` line) needs at offer time.
#[derive(Debug)]
pub struct StreamOffer {
    /// Leg A's (the offerer's) RTP address from SDP, if usable.
    pub a_rtp: Option<SocketAddr>,
    /// Leg A's RTCP address (`a=rtcp`), if given.
    pub a_rtcp: Option<SocketAddr>,
    /// Leg A uses rtcp-mux (it offered it and we accept).
    pub a_mux: bool,
    /// Leg B is certain to use rtcp-mux (no RTCP port needed).
    pub b_mux: bool,
    /// IPv6 media on the B side (`address family`), else like A's.
    pub b_v6: bool,
    /// Leg A is IPv6.
    pub a_v6: bool,
    /// RTP clock rate of the stream's first codec.
    pub clock_rate: u32,
    /// The stream is disabled (port 0): no sockets.
    pub disabled: bool,
    /// Leg A speaks SRTP: its contexts.
    pub a_crypto: Option<LegCrypto>,
}

/// Leg B's side from the answer.
#[derive(Debug)]
pub struct StreamAnswer {
    /// Leg B's RTP address.
    pub b_rtp: Option<SocketAddr>,
    /// Leg B's RTCP address.
    pub b_rtcp: Option<SocketAddr>,
    /// Leg B accepted rtcp-mux.
    pub b_mux: bool,
    /// Leg B speaks SRTP: its contexts.
    pub b_crypto: Option<LegCrypto>,
}

/// A local media endpoint handed to the control plane for the SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// Address to advertise.
    pub address: IpAddr,
    /// RTP port (0 for a disabled stream).
    pub rtp_port: u16,
    /// RTCP port, `None` if muxed.
    pub rtcp_port: Option<u16>,
}

/// Both sides of one stream: `a` is what leg A sends to (goes in the
/// answer toward A), `b` is what leg B sends to (goes in the offer to B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPorts {
    /// Where A sends.
    pub a: LocalEndpoint,
    /// Where B sends.
    pub b: LocalEndpoint,
}

/// Figures of one leg for `query`/`delete` replies and the call record.
#[derive(Clone, Debug)]
pub struct LegReport {
    /// Index of the stream (m= line).
    pub stream: usize,
    /// `false` for leg A (offerer), `true` for leg B.
    pub is_b: bool,
    /// Where this leg's remote sends to.
    pub local: LocalEndpoint,
    /// The remote's current (latched or SDP) RTP address.
    pub remote: Option<SocketAddr>,
    /// Whether the remote address was learned from a packet.
    pub latched: bool,
    /// Receive statistics.
    pub stats: LegStats,
    /// RTP clock rate.
    pub clock_rate: u32,
    /// Seconds since the remote last sent something.
    pub idle_s: Option<u64>,
    /// The leg's RTP is relayed by the XDP program now (its packets are
    /// in `stats` all the same).
    pub offloaded: bool,
}

/// A call's report.
#[derive(Clone, Debug)]
pub struct CallReport {
    /// Control-plane key of the call.
    pub key: u64,
    /// Shard index.
    pub shard: usize,
    /// When the shard created it.
    pub created: SystemTime,
    /// All legs.
    pub legs: Vec<LegReport>,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// `calls_max` reached.
    #[error("call limit reached on shard")]
    CallsFull,
    /// No free media port (or socket slot) in the shard's slice.
    #[error("no free media ports")]
    PortsExhausted,
    /// The call does not exist on this shard.
    #[error("unknown call")]
    UnknownCall,
    /// Socket set-up failed.
    #[error("socket error: {0}")]
    Socket(String),
    /// The request does not fit the call (e.g. more streams in the answer).
    #[error("{0}")]
    Invalid(String),
    /// The shard did not answer or has stopped.
    #[error("shard unavailable")]
    Unavailable,
    /// The B2BUA refused to place the call (bad number, no route, limits).
    #[error("origination refused: {0}")]
    Refused(OriginateError),
    /// No such originated call (it has ended).
    #[error("unknown originated call")]
    UnknownOrigination,
    /// SIP is not enabled (`sip.enabled = false`).
    #[error("SIP is not enabled")]
    NoSip,
    /// The flow was refused (bad request, table full).
    #[error("flow refused: {0}")]
    Flow(FlowError),
}

/// A request to a shard.
pub enum ShardCmd {
    /// Create (or update, on re-offer) call `key` and allocate its ports.
    Offer {
        /// Control-plane key.
        key: u64,
        /// One entry per m= line (moved: SRTP contexts are not cloned).
        streams: Vec<StreamOffer>,
        /// Strict-source for this call.
        strict: bool,
        /// Reply channel.
        reply: Sender<Result<Vec<StreamPorts>, ShardError>>,
    },
    /// Leg B's addresses from the answer.
    Answer {
        /// Control-plane key.
        key: u64,
        /// One entry per m= line.
        streams: Vec<StreamAnswer>,
        /// Reply channel.
        reply: Sender<Result<Vec<StreamPorts>, ShardError>>,
    },
    /// Tear the call down; the reply carries its final figures.
    Delete {
        /// Control-plane key.
        key: u64,
        /// Reply channel.
        reply: Sender<Result<CallReport, ShardError>>,
    },
    /// Current figures of a call.
    Query {
        /// Control-plane key.
        key: u64,
        /// Reply channel.
        reply: Sender<Result<CallReport, ShardError>>,
    },
    /// Place an outbound call through the trunks (the B2BUA's origination
    /// API, [`crate::call::B2bua::originate`]); what happens to it comes
    /// back as [`ShardEvent::Origination`].
    Originate {
        /// What to call.
        req: OriginateRequest,
        /// Reply channel.
        reply: Sender<Result<OriginationId, ShardError>>,
    },
    /// Start a portal flow (click-to-call, notification) on this shard;
    /// its progress comes back as [`ShardEvent::Flow`].
    StartFlow {
        /// The flow.
        req: FlowRequest,
        /// Reply channel.
        reply: Sender<Result<FlowId, ShardError>>,
    },
    /// End a portal flow (hang up its calls).
    HangupFlow {
        /// The flow.
        id: FlowId,
        /// Reply channel.
        reply: Sender<Result<(), ShardError>>,
    },
    /// Hang up an originated call: CANCEL before the answer, BYE after.
    HangupOrigination {
        /// The call.
        id: OriginationId,
        /// Reply channel.
        reply: Sender<Result<(), ShardError>>,
    },
    /// Take a reloaded configuration's trunks and routes (SIGHUP).
    ReloadTrunks {
        /// The new configuration (validated).
        cfg: Arc<Config>,
        /// Reply channel: an error says why nothing changed.
        reply: Sender<Result<(), ShardError>>,
    },
    /// Stop the shard loop.
    Stop,
}

/// Something a shard tells the control plane unasked.
#[derive(Debug)]
pub enum ShardEvent {
    /// A call ended because all its legs were silent for `timeout_s`.
    MediaTimeout(CallReport),
    /// Progress of an originated call: dialing, ringing, answered, failed,
    /// ended ([`crate::call::OriginationEventKind`]).
    Origination {
        /// The shard the call lives on (hang up through it).
        shard: usize,
        /// What happened.
        event: OriginationEvent,
    },
    /// A call's record (F-C1) for the CDR writer, with the shard's clock
    /// anchor to turn its monotonic times into UTC.
    Record {
        /// The shard.
        shard: usize,
        /// The record.
        record: Box<crate::call::CallRecord>,
        /// (monotonic, wall clock) read together on the shard.
        anchor: (std::time::Instant, SystemTime),
    },
    /// A portal flow changed state ([`crate::call::flow::FlowState`]).
    Flow {
        /// The shard the flow lives on.
        shard: usize,
        /// What happened.
        event: FlowEvent,
    },
}

/// An originated call: the shard it lives on and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origination {
    /// Shard index.
    pub shard: usize,
    /// The call on that shard.
    pub id: OriginationId,
}

/// The shard with the fewest SIP calls as last published, ties broken by
/// `correlation` so equal shards share the load.
fn least_loaded(shards: &[ShardHandle], correlation: u64) -> Result<usize, ShardError> {
    let n = shards.len();
    if n == 0 {
        return Err(ShardError::Unavailable);
    }
    let start = (correlation % n as u64) as usize;
    Ok((0..n)
        .map(|i| (start + i) % n)
        .min_by_key(|&k| shards[k].metrics.sip_calls.load(Ordering::Relaxed))
        .unwrap_or(start))
}

/// Places an outbound call on the shard with the fewest SIP calls (as last
/// published; ties by the request's correlation), the entry point the
/// control plane's click-to-call and notifications build on. Events come
/// on the shard event queue as [`ShardEvent::Origination`].
pub fn originate(shards: &[ShardHandle], req: OriginateRequest) -> Result<Origination, ShardError> {
    let shard = least_loaded(shards, req.correlation)?;
    let id = shards[shard].call(|reply| ShardCmd::Originate { req, reply })?;
    Ok(Origination { shard, id })
}

/// A portal flow: the shard it lives on and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowRef {
    /// Shard index.
    pub shard: usize,
    /// The flow on that shard.
    pub id: FlowId,
}

/// Starts a portal flow on the shard with the fewest SIP calls (both of a
/// click-to-call's calls live there); events come as [`ShardEvent::Flow`].
pub fn start_flow(shards: &[ShardHandle], req: FlowRequest) -> Result<FlowRef, ShardError> {
    let shard = least_loaded(shards, req.correlation)?;
    let id = shards[shard].call(|reply| ShardCmd::StartFlow { req, reply })?;
    Ok(FlowRef { shard, id })
}

/// Ends a portal flow started with [`start_flow`].
pub fn hangup_flow(shards: &[ShardHandle], f: FlowRef) -> Result<(), ShardError> {
    let h = shards.get(f.shard).ok_or(ShardError::UnknownOrigination)?;
    h.call(|reply| ShardCmd::HangupFlow { id: f.id, reply })
}

/// One Prometheus series of [`ShardMetrics`]: name, type, help, getter.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardMetrics) -> u64,
);

/// Prometheus text for every shard's published counters: packets in and
/// out, drops by reason, calls, SIP messages, flows and trunk health.
pub fn write_metrics(shards: &[ShardHandle], out: &mut String) {
    use std::fmt::Write;
    let r = |m: &AtomicU64| m.load(Ordering::Relaxed);
    let series: [Series; 18] = [
        (
            "kolokol_media_rx_packets_total",
            "counter",
            "Media datagrams received.",
            |m| m.rx.load(Ordering::Relaxed),
        ),
        (
            "kolokol_media_tx_packets_total",
            "counter",
            "Media datagrams sent.",
            |m| m.tx.load(Ordering::Relaxed),
        ),
        (
            "kolokol_media_send_errors_total",
            "counter",
            "Media sends that failed.",
            |m| m.send_errors.load(Ordering::Relaxed),
        ),
        (
            "kolokol_media_calls",
            "gauge",
            "Relay calls (ng and SIP) on the shard.",
            |m| m.calls.load(Ordering::Relaxed),
        ),
        (
            "kolokol_media_timeouts_total",
            "counter",
            "Calls ended by media timeout.",
            |m| m.timeouts.load(Ordering::Relaxed),
        ),
        (
            "kolokol_sip_rx_total",
            "counter",
            "SIP messages received.",
            |m| m.sip_rx.load(Ordering::Relaxed),
        ),
        (
            "kolokol_sip_tx_total",
            "counter",
            "SIP messages sent.",
            |m| m.sip_tx.load(Ordering::Relaxed),
        ),
        (
            "kolokol_sip_dropped_total",
            "counter",
            "SIP messages dropped.",
            |m| m.sip_dropped.load(Ordering::Relaxed),
        ),
        (
            "kolokol_sip_rejected_total",
            "counter",
            "SIP requests answered with an error.",
            |m| m.sip_rejected.load(Ordering::Relaxed),
        ),
        (
            "kolokol_sip_calls",
            "gauge",
            "B2BUA calls on the shard.",
            |m| m.sip_calls.load(Ordering::Relaxed),
        ),
        (
            "kolokol_flows",
            "gauge",
            "Portal flows on the shard.",
            |m| m.flows.load(Ordering::Relaxed),
        ),
        (
            "kolokol_prompt_packets_total",
            "counter",
            "Prompt packets sent.",
            |m| m.prompt_packets.load(Ordering::Relaxed),
        ),
        (
            "kolokol_xdp_offloaded_legs",
            "gauge",
            "Relay directions offloaded to the XDP program.",
            |m| m.xdp_offloaded_legs.load(Ordering::Relaxed),
        ),
        (
            "kolokol_xdp_packets_total",
            "counter",
            "RTP packets relayed by the XDP program (not in media_rx).",
            |m| m.xdp_packets.load(Ordering::Relaxed),
        ),
        (
            "kolokol_xdp_source_drops_total",
            "counter",
            "Packets the XDP program dropped by the strict source check.",
            |m| m.xdp_src_drops.load(Ordering::Relaxed),
        ),
        (
            "kolokol_xdp_map_errors_total",
            "counter",
            "XDP map operations that failed.",
            |m| m.xdp_map_errors.load(Ordering::Relaxed),
        ),
        (
            "kolokol_xdp_egress_direct_total",
            "counter",
            "Relay directions offloaded with an egress from the shard's neighbour table.",
            |m| m.xdp_egress_direct.load(Ordering::Relaxed),
        ),
        (
            "kolokol_xdp_egress_updates_total",
            "counter",
            "Offloaded entries rewritten because their egress changed.",
            |m| m.xdp_egress_updates.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.index, get(&s.metrics));
        }
    }
    let _ = writeln!(
        out,
        "# HELP kolokol_media_drops_total Media datagrams dropped, by reason."
    );
    let _ = writeln!(out, "# TYPE kolokol_media_drops_total counter");
    for s in shards {
        for (i, d) in s.metrics.drops.iter().enumerate() {
            let reason = DropReason::NAMES.get(i).copied().unwrap_or("other");
            let _ = writeln!(
                out,
                "kolokol_media_drops_total{{shard=\"{}\",reason=\"{reason}\"}} {}",
                s.index,
                r(d)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP kolokol_trunk_up Trunk health (1 up, 0 down) as each shard sees it."
    );
    let _ = writeln!(out, "# TYPE kolokol_trunk_up gauge");
    for s in shards {
        for (name, up) in s.metrics.trunks() {
            let _ = writeln!(
                out,
                "kolokol_trunk_up{{shard=\"{}\",trunk=\"{name}\"}} {}",
                s.index,
                u8::from(up.load(Ordering::Relaxed))
            );
        }
    }
}

/// Reloads every shard's trunks and routes from `cfg` (SIGHUP). Shards
/// that refuse (trunks added or removed) keep their old set; the first
/// refusal is returned.
pub fn reload_trunks(shards: &[ShardHandle], cfg: &Config) -> Result<(), ShardError> {
    let cfg = Arc::new(cfg.clone());
    let mut first = Ok(());
    for s in shards {
        let c = cfg.clone();
        let r = s.call(|reply| ShardCmd::ReloadTrunks { cfg: c, reply });
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Hangs up a call placed by [`originate`].
pub fn hangup_origination(shards: &[ShardHandle], o: Origination) -> Result<(), ShardError> {
    let h = shards.get(o.shard).ok_or(ShardError::UnknownOrigination)?;
    h.call(|reply| ShardCmd::HangupOrigination { id: o.id, reply })
}

/// Counters a shard publishes once per tick (read by metrics and tests).
#[derive(Debug, Default)]
pub struct ShardMetrics {
    /// Datagrams received on media sockets.
    pub rx: AtomicU64,
    /// Datagrams sent.
    pub tx: AtomicU64,
    /// Drops by [`DropReason`].
    pub drops: [AtomicU64; DropReason::COUNT],
    /// Send completions that reported an error.
    pub send_errors: AtomicU64,
    /// Receive re-arms after the kernel ran out of buffers.
    pub enobufs: AtomicU64,
    /// Calls up now.
    pub calls: AtomicU64,
    /// Calls ended by media timeout.
    pub timeouts: AtomicU64,
    /// Loop turns (wake-ups) so far.
    pub wakeups: AtomicU64,
    /// SIP datagrams received (from the sockets or handed over).
    pub sip_rx: AtomicU64,
    /// SIP datagrams sent.
    pub sip_tx: AtomicU64,
    /// SIP datagrams handed to the shard that owns their dialog.
    pub sip_handed_over: AtomicU64,
    /// SIP datagrams dropped (unparseable, queues full, send errors).
    pub sip_dropped: AtomicU64,
    /// SIP requests refused with an error status (400, 481, 503, ...).
    pub sip_rejected: AtomicU64,
    /// Bridged calls up now.
    pub sip_calls: AtomicU64,
    /// Call records produced.
    pub sip_records: AtomicU64,
    /// INVITEs refused because every call slot of the shard was taken.
    pub sip_refused: AtomicU64,
    /// Per trunk: its name and whether it is up (OPTIONS health).
    pub trunks: std::sync::OnceLock<Vec<(String, std::sync::atomic::AtomicBool)>>,
    /// Prompt packets sent by the portal flows.
    pub prompt_packets: AtomicU64,
    /// Portal flows in progress.
    pub flows: AtomicU64,
    /// Relay directions offloaded to XDP now (two per leg pair).
    pub xdp_offloaded_legs: AtomicU64,
    /// Relay directions offloaded so far.
    pub xdp_installs: AtomicU64,
    /// RTP packets the XDP program relayed for this shard's legs (as last
    /// read; not counted in `rx`).
    pub xdp_packets: AtomicU64,
    /// Their UDP payload bytes.
    pub xdp_bytes: AtomicU64,
    /// Packets the XDP program dropped by the strict source check.
    pub xdp_src_drops: AtomicU64,
    /// XDP map operations that failed (pairs stayed on sockets).
    pub xdp_map_errors: AtomicU64,
    /// Relay directions installed with an egress from the shard's
    /// neighbour table (no FIB lookup in the program).
    pub xdp_egress_direct: AtomicU64,
    /// Installed entries rewritten because their egress changed.
    pub xdp_egress_updates: AtomicU64,
}

impl ShardMetrics {
    fn load(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Trunk health as this shard sees it: (name, up), set at start.
    pub fn trunks(&self) -> &[(String, std::sync::atomic::AtomicBool)] {
        self.trunks.get().map_or(&[], Vec::as_slice)
    }

    /// Total drops.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(Self::load).sum()
    }
}

/// The control plane's handle on a running shard.
pub struct ShardHandle {
    /// Shard index.
    pub index: usize,
    tx: Sender<ShardCmd>,
    wake: OwnedFd,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Published counters.
    pub metrics: Arc<ShardMetrics>,
}

/// How long the control plane waits for a shard's reply before giving up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

impl ShardHandle {
    /// Queue a command and wake the shard. Fails if the queue is full or
    /// the shard is gone.
    pub fn send(&self, cmd: ShardCmd) -> Result<(), ShardError> {
        self.tx.try_send(cmd).map_err(|_| ShardError::Unavailable)?;
        crate::sys::eventfd_signal(self.wake.as_raw_fd());
        Ok(())
    }

    /// Send and wait for the reply.
    pub fn call<T>(
        &self,
        make: impl FnOnce(Sender<Result<T, ShardError>>) -> ShardCmd,
    ) -> Result<T, ShardError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(make(tx))?;
        rx.recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| ShardError::Unavailable)?
    }

    /// Stop the shard and wait for its thread (once; later calls return
    /// at once). Handles are shared (`Arc`) by the ng server and the
    /// portal engine, so this takes `&self`.
    pub fn stop(&self) {
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = self.send(ShardCmd::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start all shards of `cfg`. `events` receives unsolicited shard events.
///
/// With SIP enabled every shard gets its own socket on each `sip.udp`
/// address (one `SO_REUSEPORT` group per address) and its own endpoint and
/// B2BUA; a bind failure (port taken) fails the start with the address in
/// the message.
pub fn spawn_all(cfg: &Config, events: Sender<ShardEvent>) -> std::io::Result<Vec<ShardHandle>> {
    spawn_all_with_xdp(cfg, events, None)
}

/// [`spawn_all`], handing each shard the XDP relay's maps (each opens its
/// own handle): it offloads plain RTP leg pairs to the XDP program, and
/// binds AF_XDP sockets on its queues of `xdp_interface` so legs on the
/// IPv4 media address get no socket (see `run/xsk.rs`); `None` relays on
/// sockets only.
pub fn spawn_all_with_xdp(
    cfg: &Config,
    events: Sender<ShardEvent>,
    xdp: Option<&crate::media::xdp::XdpMapFds>,
) -> std::io::Result<Vec<ShardHandle>> {
    let nofile = crate::sys::raise_nofile();
    let wakes = (0..cfg.shards.count)
        .map(|_| crate::sys::eventfd())
        .collect::<std::io::Result<Vec<_>>>()?;
    let sips = sip::setup_all(cfg, &wakes, std::time::Instant::now())?;
    let mut out = Vec::with_capacity(cfg.shards.count);
    for (k, (wake, sip)) in wakes.into_iter().zip(sips).enumerate() {
        let mut lc = ShardLoopConfig::from_config(cfg, k, nofile);
        lc.xdp = xdp.cloned();
        if xdp.is_some() {
            lc.xdp_interfaces = cfg.media.xdp_interface.clone();
        }
        lc.xsk = xdp.filter(|_| cfg.media.xsk_legs).map(|maps| XskSetup {
            maps: maps.clone(),
            interfaces: cfg.media.xdp_interface.clone(),
            sizes: cfg.media.xsk_sizes(),
            shards: cfg.shards.count,
        });
        out.push(spawn_with(lc, events.clone(), wake, sip)?);
    }
    Ok(out)
}

/// Start one shard without SIP.
pub fn spawn(lc: ShardLoopConfig, events: Sender<ShardEvent>) -> std::io::Result<ShardHandle> {
    spawn_with(lc, events, crate::sys::eventfd()?, None)
}

/// Start one shard with its wake-up eventfd and, optionally, SIP.
pub fn spawn_with(
    lc: ShardLoopConfig,
    events: Sender<ShardEvent>,
    wake: OwnedFd,
    sip: Option<sip::SipSetup>,
) -> std::io::Result<ShardHandle> {
    let (tx, rx): (Sender<ShardCmd>, Receiver<ShardCmd>) =
        crossbeam_channel::bounded(COMMAND_QUEUE_DEPTH);
    let wake_for_loop = wake.try_clone()?;
    let metrics = Arc::new(ShardMetrics::default());
    let m = metrics.clone();
    let index = lc.index;
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let thread = std::thread::Builder::new()
        .name(format!("shard-{index}"))
        .spawn(move || {
            if let Some(cpu) = lc.cpu {
                if let Err(e) = crate::sys::pin_to_cpu(cpu) {
                    eprintln!("shard {index}: cannot pin to CPU {cpu}: {e}");
                }
            }
            match run::Shard::new(lc, rx, wake_for_loop, m, events, sip) {
                Ok(mut shard) => {
                    let _ = ready_tx.send(Ok(()));
                    shard.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    ready_rx
        .recv()
        .map_err(|_| std::io::Error::other("shard thread died during start"))??;
    Ok(ShardHandle {
        index,
        tx,
        wake,
        thread: std::sync::Mutex::new(Some(thread)),
        metrics,
    })
}
