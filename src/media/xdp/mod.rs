//! The XDP data path (DESIGN.md, "Two data paths behind one relay table").
//!
//! `bpf/relay.bpf.c`, compiled by `build.rs` with clang when clang and
//! libbpf-dev are present, forwards plain RTP in the driver's receive path
//! from a BPF hash map of relay entries. This module loads it with `aya`,
//! attaches it to interfaces (native mode, then generic mode with the reason
//! native failed), and manages the map: [`XdpRelay::insert`],
//! [`XdpRelay::remove`], [`XdpRelay::counters`]. Dropping an [`XdpRelay`]
//! detaches it everywhere. Shards get their own handle on the entry maps,
//! [`XdpMaps`] (from [`XdpRelay::map_fds`]), and install the leg pairs they
//! offload (`src/shard/run/offload.rs`).
//!
//! Entries are FORWARD (rewrite and send in the driver) or TO_USER: the
//! program redirects the datagram to the AF_XDP socket registered for the
//! receiving interface and queue in `xsks` ([`xsk`], [`frame`]), where the
//! shard relays it like a socket's datagram; a socket-less leg needs no
//! file descriptor (`src/shard/run/xsk.rs`).
//!
//! Without clang the program is not built in: [`built_in`] is false and
//! [`XdpRelay::load`] says so; the gateway relays on sockets only.
//!
//! An [`XdpEntry`] is one direction of a leg pair, the same meaning as a
//! [`crate::media::relay::Leg`] and its peer: what the leg's remote sends to
//! `local` leaves from the peer leg's socket address (`new_src`) toward the
//! peer's remote (`new_dst`). IPv4 only for now.

pub mod frame;
pub mod xsk;

use std::net::SocketAddrV4;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{
    HashMap, IterableMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, XskMap,
};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, TestRun, TestRunOptions};

mod testrun;
pub use testrun::{TestRunOutcome, LIVE_BATCH_MAX};

/// The compiled program, when build.rs could build it.
#[cfg(kolokol_xdp)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/relay.bpf.o"
)));
#[cfg(not(kolokol_xdp))]
static OBJECT: Option<&[u8]> = None;

/// Whether this build carries the XDP program (clang was there at build
/// time).
pub fn built_in() -> bool {
    OBJECT.is_some()
}

/// Why the XDP path is not available or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// Built without clang/libbpf-dev.
    #[error("XDP not built in (clang and libbpf-dev were missing at build time); sockets only")]
    NotBuiltIn,
    /// The kernel refused the program or its maps.
    #[error("loading the XDP program: {0}")]
    Load(String),
    /// No such interface.
    #[error("no interface {0:?}")]
    NoInterface(String),
    /// Neither native nor generic mode attached.
    #[error("attaching XDP to {iface}: native: {native}; generic: {generic}")]
    Attach {
        /// The interface.
        iface: String,
        /// Why native (driver) mode failed.
        native: String,
        /// Why generic (SKB) mode failed.
        generic: String,
    },
    /// A map operation failed.
    #[error("relay map: {0}")]
    Map(String),
    /// Only IPv4 entries for now.
    #[error("XDP relay entries are IPv4 only")]
    NotIpv4,
}

/// Map key: the local address and port the remote sends to (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RawKey {
    addr: u32,
    port: u16,
    pad: u16,
}

/// Map value, laid out as `struct relay_entry` in bpf/relay.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawEntry {
    expect_addr: u32,
    expect_port: u16,
    strict: u8,
    /// [`ACTION_FORWARD`] or [`ACTION_TO_USER`] (was `pad0`).
    action: u8,
    new_saddr: u32,
    new_sport: u16,
    pad1: u16,
    new_daddr: u32,
    new_dport: u16,
    pad2: u16,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    ifindex: u32,
}

/// `enum action` in bpf/relay.bpf.c: rewrite and send in the driver.
const ACTION_FORWARD: u8 = 0;
/// `enum action`: redirect to the AF_XDP socket of the receiving queue.
const ACTION_TO_USER: u8 = 1;
/// `enum action`: forward, or to the AF_XDP socket when the FIB has no
/// answer (socket-less legs).
const ACTION_FORWARD_USER: u8 = 2;

/// Queues per interface in `xsks` (`XSK_QUEUES_PER_IF` in the C program).
pub const XSK_QUEUES_PER_IF: u32 = 64;
/// Interfaces in `xsks` (`XSK_IFS_MAX`).
pub const XSK_IFS_MAX: u32 = 16;

/// A TO_USER entry: everything to the key goes to the AF_XDP socket of the
/// queue it arrived on (the shard checks sources and rewrites).
fn raw_to_user() -> RawEntry {
    RawEntry {
        action: ACTION_TO_USER,
        ..RawEntry::default()
    }
}

/// Per-CPU counters, laid out as `struct relay_counters`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct RawCounters {
    packets: u64,
    bytes: u64,
    src_drops: u64,
    last_seen_ns: u64,
}

// SAFETY: plain `repr(C)` data with explicit padding fields, no pointers.
unsafe impl aya::Pod for RawKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RawEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for RawCounters {}

fn key_of(local: SocketAddrV4) -> RawKey {
    RawKey {
        addr: u32::from_ne_bytes(local.ip().octets()),
        port: local.port().to_be(),
        pad: 0,
    }
}

/// Where forwarded packets leave: the interface and the Ethernet addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Egress {
    /// Egress interface index.
    pub ifindex: u32,
    /// The next hop's MAC.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC.
    pub src_mac: [u8; 6],
}

/// One relay direction, as installed in the BPF map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpEntry {
    /// The local address and port the leg's remote sends to (the key).
    pub local: SocketAddrV4,
    /// The expected source (the leg's remote); `None` accepts any.
    pub expect_src: Option<SocketAddrV4>,
    /// Strict source: drop (and count) datagrams from another source.
    pub strict: bool,
    /// The new source: the peer leg's local socket address.
    pub new_src: SocketAddrV4,
    /// The new destination: the peer leg's remote.
    pub new_dst: SocketAddrV4,
    /// Where to send; `None` lets the program ask the kernel's FIB and
    /// neighbour tables (it passes the packet to the stack when they have
    /// no answer yet).
    pub egress: Option<Egress>,
}

impl XdpEntry {
    fn raw(&self) -> RawEntry {
        let (expect_addr, expect_port) = match self.expect_src {
            Some(a) => (u32::from_ne_bytes(a.ip().octets()), a.port().to_be()),
            None => (0, 0),
        };
        let eg = self.egress.unwrap_or(Egress {
            ifindex: 0,
            dst_mac: [0; 6],
            src_mac: [0; 6],
        });
        RawEntry {
            expect_addr,
            expect_port,
            strict: u8::from(self.strict),
            new_saddr: u32::from_ne_bytes(self.new_src.ip().octets()),
            new_sport: self.new_src.port().to_be(),
            new_daddr: u32::from_ne_bytes(self.new_dst.ip().octets()),
            new_dport: self.new_dst.port().to_be(),
            dst_mac: eg.dst_mac,
            src_mac: eg.src_mac,
            ifindex: eg.ifindex,
            action: ACTION_FORWARD,
            ..RawEntry::default()
        }
    }
}

/// One entry's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (Ethernet frames).
    pub bytes: u64,
    /// Packets dropped by the strict source check.
    pub src_drops: u64,
    /// CLOCK_MONOTONIC of the last forwarded packet, ns (0: none yet).
    pub last_seen_ns: u64,
}

/// Program-wide counters (`relay_stats`), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Not IPv4/UDP: passed to the stack.
    pub pass_not_udp4: u64,
    /// IPv4/UDP with no entry: passed to the stack.
    pub pass_no_entry: u64,
    /// Entry matched but fragments, IP options or no FIB answer: passed.
    pub pass_other: u64,
    /// Forwarded (XDP_TX or redirect).
    pub forwarded: u64,
    /// Dropped by the strict source check.
    pub drop_source: u64,
    /// bpf_redirect refused.
    pub redirect_err: u64,
    /// TO_USER entries: redirected to the rx queue's AF_XDP socket (or
    /// passed to the stack when the queue has none).
    pub to_user: u64,
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Native,
    /// Generic (SKB) mode; `reason` says why native failed.
    Generic,
}

/// An attachment.
#[derive(Debug)]
pub struct Attached {
    /// Interface name.
    pub iface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Mode.
    pub mode: AttachMode,
    /// Why native mode was refused (generic mode only).
    pub native_refused: Option<String>,
    prog: &'static str,
    link: Option<aya::programs::xdp::XdpLinkId>,
}

/// The loaded XDP relay: program, maps, attachments.
pub struct XdpRelay {
    ebpf: Ebpf,
    maps: XdpMaps,
    stats: PerCpuArray<MapData, u64>,
    /// `xsks` and `xsk_ifs`, for the shards' handles.
    xsk_fds: [Arc<OwnedFd>; 2],
    attached: Vec<Attached>,
}

/// A handle on the relay's two entry maps (`relay_map`, `relay_ctrs`):
/// install, remove and read [`XdpEntry`]s. The kernel maps are shared; each
/// shard owns its own handle (its own descriptors, made with
/// [`XdpRelay::shard_maps`] from [`XdpMapFds`]), so no lock is needed:
/// shards only touch the keys of their own ports.
pub struct XdpMaps {
    entries: HashMap<MapData, RawKey, RawEntry>,
    counters: PerCpuHashMap<MapData, RawKey, RawCounters>,
    /// `xsks` and `xsk_ifs` (shard handles only: AF_XDP registration).
    xsks: Option<XskMap<MapData>>,
    xsk_ifs: Option<HashMap<MapData, u32, u32>>,
    ncpus: usize,
}

/// The descriptors of the relay's entry maps, to hand to shards (cheap to
/// clone; each shard duplicates them into its own [`XdpMaps`]).
#[derive(Clone, Debug)]
pub struct XdpMapFds {
    entries: Arc<OwnedFd>,
    counters: Arc<OwnedFd>,
    xsks: Arc<OwnedFd>,
    xsk_ifs: Arc<OwnedFd>,
    ncpus: usize,
}

impl XdpMapFds {
    /// A shard's own handle: duplicates the descriptors (the kernel maps
    /// stay shared).
    pub fn open(&self) -> Result<XdpMaps, XdpError> {
        let dup = |fd: &OwnedFd| -> Result<MapData, XdpError> {
            let own = fd.as_fd().try_clone_to_owned().map_err(map_err)?;
            MapData::from_fd(own).map_err(map_err)
        };
        Ok(XdpMaps {
            entries: HashMap::try_from(Map::HashMap(dup(&self.entries)?)).map_err(map_err)?,
            counters: PerCpuHashMap::try_from(Map::PerCpuHashMap(dup(&self.counters)?))
                .map_err(map_err)?,
            xsks: Some(XskMap::try_from(Map::XskMap(dup(&self.xsks)?)).map_err(map_err)?),
            xsk_ifs: Some(HashMap::try_from(Map::HashMap(dup(&self.xsk_ifs)?)).map_err(map_err)?),
            ncpus: self.ncpus,
        })
    }
}

impl XdpMaps {
    /// Install (or replace) an entry; its counters start at zero.
    pub fn insert(&mut self, e: &XdpEntry) -> Result<(), XdpError> {
        let key = key_of(e.local);
        let zero =
            PerCpuValues::try_from(vec![RawCounters::default(); self.ncpus]).map_err(map_err)?;
        self.counters.insert(key, zero, 0).map_err(map_err)?;
        self.entries.insert(key, e.raw(), 0).map_err(map_err)
    }

    /// Rewrite an installed entry in place (its counters kept), as a
    /// FORWARD entry, or FORWARD_USER with `user` (see
    /// [`XdpMaps::insert_user_fallback`]).
    pub fn update(&mut self, e: &XdpEntry, user: bool) -> Result<(), XdpError> {
        let mut raw = e.raw();
        if user {
            raw.action = ACTION_FORWARD_USER;
        }
        self.entries
            .insert(key_of(e.local), raw, 0)
            .map_err(map_err)
    }

    /// Remove the entry for `local` (and its counters); packets to it then
    /// go to the stack. Removing an absent entry is not an error.
    pub fn remove(&mut self, local: SocketAddrV4) -> Result<(), XdpError> {
        let key = key_of(local);
        for r in [self.entries.remove(&key), self.counters.remove(&key)] {
            match r {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }

    /// Install (or replace) a FORWARD entry for a socket-less leg: when the
    /// kernel's FIB has no answer for it (no route or neighbour yet), the
    /// datagram goes to the AF_XDP socket instead of the stack (where no
    /// socket would catch it). Its counters start at zero.
    pub fn insert_user_fallback(&mut self, e: &XdpEntry) -> Result<(), XdpError> {
        let key = key_of(e.local);
        let zero =
            PerCpuValues::try_from(vec![RawCounters::default(); self.ncpus]).map_err(map_err)?;
        self.counters.insert(key, zero, 0).map_err(map_err)?;
        let raw = RawEntry {
            action: ACTION_FORWARD_USER,
            ..e.raw()
        };
        self.entries.insert(key, raw, 0).map_err(map_err)
    }

    /// Install (or restore) the TO_USER entry for `local`, counters
    /// zeroed: its datagrams go to the AF_XDP socket of the queue they
    /// arrive on.
    pub fn insert_to_user(&mut self, local: SocketAddrV4) -> Result<(), XdpError> {
        let key = key_of(local);
        let zero =
            PerCpuValues::try_from(vec![RawCounters::default(); self.ncpus]).map_err(map_err)?;
        self.counters.insert(key, zero, 0).map_err(map_err)?;
        self.entries.insert(key, raw_to_user(), 0).map_err(map_err)
    }

    /// Register AF_XDP socket `fd` for rx queue `queue` of interface
    /// `ifindex`, which is interface number `if_slot` (its place in
    /// `xdp_interface`, below [`XSK_IFS_MAX`]).
    pub fn register_xsk(
        &mut self,
        if_slot: u32,
        ifindex: u32,
        queue: u32,
        fd: std::os::fd::RawFd,
    ) -> Result<(), XdpError> {
        if if_slot >= XSK_IFS_MAX || queue >= XSK_QUEUES_PER_IF {
            return Err(XdpError::Map(format!(
                "interface {if_slot} queue {queue}: at most {XSK_IFS_MAX} interfaces of \
                 {XSK_QUEUES_PER_IF} queues"
            )));
        }
        let (Some(xsks), Some(ifs)) = (self.xsks.as_mut(), self.xsk_ifs.as_mut()) else {
            return Err(XdpError::Map("no AF_XDP maps on this handle".into()));
        };
        let base = if_slot * XSK_QUEUES_PER_IF;
        xsks.set(base + queue, fd, 0).map_err(map_err)?;
        ifs.insert(ifindex, base, 0).map_err(map_err)
    }

    /// Remove the socket of (`if_slot`, `queue`).
    pub fn unregister_xsk(&mut self, if_slot: u32, queue: u32) -> Result<(), XdpError> {
        let Some(xsks) = self.xsks.as_mut() else {
            return Ok(());
        };
        if if_slot >= XSK_IFS_MAX || queue >= XSK_QUEUES_PER_IF {
            return Ok(());
        }
        match xsks.unset(if_slot * XSK_QUEUES_PER_IF + queue) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// The counters of the entry for `local`, `None` if it is not installed.
    pub fn counters(&self, local: SocketAddrV4) -> Result<Option<XdpCounters>, XdpError> {
        match self.counters.get(&key_of(local), 0) {
            Ok(per_cpu) => {
                let mut c = XdpCounters::default();
                for v in per_cpu.iter() {
                    c.packets += v.packets;
                    c.bytes += v.bytes;
                    c.src_drops += v.src_drops;
                    c.last_seen_ns = c.last_seen_ns.max(v.last_seen_ns);
                }
                Ok(Some(c))
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock of [`XdpCounters::last_seen_ns`]
/// (`bpf_ktime_get_ns`) and of `std::time::Instant` on Linux.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The relay program's name in the object.
const PROG_RELAY: &str = "kolokol_relay";
/// The XDP_PASS program (for veth peers).
const PROG_PASS: &str = "kolokol_pass";

fn map_err(e: impl std::fmt::Display) -> XdpError {
    XdpError::Map(e.to_string())
}

/// The index of an interface, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// An interface's MAC address, in the calling thread's network namespace
/// (SIOCGIFHWADDR; sysfs would show the namespace it was mounted in).
pub fn mac(name: &str) -> Option<[u8; 6]> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return None;
    }
    // SAFETY: an all-zero ifreq is valid; the name fits with its NUL.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a socket, req a valid ifreq for SIOCGIFHWADDR.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return None;
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut out = [0u8; 6];
    for (d, s) in out.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Some(out)
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl XdpRelay {
    /// Load the program and its maps into the kernel (not attached yet).
    pub fn load() -> Result<XdpRelay, XdpError> {
        let obj = OBJECT.ok_or(XdpError::NotBuiltIn)?;
        let mut ebpf = Ebpf::load(obj).map_err(|e| XdpError::Load(e.to_string()))?;
        for name in [PROG_RELAY, PROG_PASS] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| XdpError::Load(format!("program {name} missing")))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| XdpError::Load(e.to_string()))?;
            prog.load()
                .map_err(|e| XdpError::Load(format!("{name}: {e}")))?;
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| XdpError::Load(format!("map {name} missing")))
        };
        let entries = HashMap::try_from(take(&mut ebpf, "relay_map")?).map_err(map_err)?;
        let counters = PerCpuHashMap::try_from(take(&mut ebpf, "relay_ctrs")?).map_err(map_err)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "relay_stats")?).map_err(map_err)?;
        // The AF_XDP maps: only their descriptors are kept (the program
        // holds the maps; shards open handles from these).
        let fd_of = |m: Map| -> Result<Arc<OwnedFd>, XdpError> {
            match m {
                Map::XskMap(d) | Map::HashMap(d) => Ok(Arc::new(
                    d.fd().as_fd().try_clone_to_owned().map_err(map_err)?,
                )),
                _ => Err(XdpError::Load("unexpected AF_XDP map type".into())),
            }
        };
        let xsk_fds = [
            fd_of(take(&mut ebpf, "xsks")?)?,
            fd_of(take(&mut ebpf, "xsk_ifs")?)?,
        ];
        let ncpus =
            aya::util::nr_cpus().map_err(|(what, e)| XdpError::Load(format!("{what}: {e}")))?;
        Ok(XdpRelay {
            ebpf,
            maps: XdpMaps {
                entries,
                counters,
                xsks: None,
                xsk_ifs: None,
                ncpus,
            },
            stats,
            xsk_fds,
            attached: Vec::new(),
        })
    }

    /// The entry maps' descriptors, duplicated, for the shards to open
    /// their own [`XdpMaps`] with.
    pub fn map_fds(&self) -> Result<XdpMapFds, XdpError> {
        let dup = |m: &MapData| m.fd().as_fd().try_clone_to_owned().map_err(map_err);
        Ok(XdpMapFds {
            entries: Arc::new(dup(self.maps.entries.map())?),
            counters: Arc::new(dup(self.maps.counters.map())?),
            xsks: self.xsk_fds[0].clone(),
            xsk_ifs: self.xsk_fds[1].clone(),
            ncpus: self.maps.ncpus,
        })
    }

    /// A second handle on the entry maps (what a shard owns).
    pub fn shard_maps(&self) -> Result<XdpMaps, XdpError> {
        self.map_fds()?.open()
    }

    /// Attach the relay program to `iface`: native mode, else generic mode
    /// (the returned attachment says why native was refused).
    pub fn attach(&mut self, iface: &str) -> Result<&Attached, XdpError> {
        self.attach_prog(PROG_RELAY, iface)
    }

    /// Attach the XDP_PASS program to `iface` (a veth peer that receives
    /// redirected frames needs one in native mode).
    pub fn attach_pass(&mut self, iface: &str) -> Result<&Attached, XdpError> {
        self.attach_prog(PROG_PASS, iface)
    }

    fn prog(&mut self, name: &str) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| XdpError::Load(format!("program {name} missing")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| XdpError::Load(e.to_string()))
    }

    fn attach_prog(&mut self, name: &'static str, iface: &str) -> Result<&Attached, XdpError> {
        let ifindex = ifindex(iface).ok_or_else(|| XdpError::NoInterface(iface.to_string()))?;
        let prog = self.prog(name)?;
        let (link, mode, native_refused) = match prog.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(l) => (l, AttachMode::Native, None),
            Err(native) => {
                let native = error_chain(&native);
                match prog.attach_to_if_index(ifindex, XdpMode::Skb) {
                    Ok(l) => (l, AttachMode::Generic, Some(native)),
                    Err(generic) => {
                        return Err(XdpError::Attach {
                            iface: iface.to_string(),
                            native,
                            generic: error_chain(&generic),
                        })
                    }
                }
            }
        };
        self.attached.push(Attached {
            iface: iface.to_string(),
            ifindex,
            mode,
            native_refused,
            prog: name,
            link: Some(link),
        });
        // Just pushed.
        Ok(&self.attached[self.attached.len() - 1])
    }

    /// The attachments.
    pub fn attached(&self) -> &[Attached] {
        &self.attached
    }

    /// Install (or replace) an entry; its counters start at zero.
    pub fn insert(&mut self, e: &XdpEntry) -> Result<(), XdpError> {
        self.maps.insert(e)
    }

    /// Remove the entry for `local` (and its counters); packets to it then
    /// go to the stack. Removing an absent entry is not an error.
    pub fn remove(&mut self, local: SocketAddrV4) -> Result<(), XdpError> {
        self.maps.remove(local)
    }

    /// The counters of the entry for `local`, `None` if it is not installed.
    pub fn counters(&self, local: SocketAddrV4) -> Result<Option<XdpCounters>, XdpError> {
        self.maps.counters(local)
    }

    /// Program-wide counters.
    pub fn stats(&self) -> Result<XdpStats, XdpError> {
        let mut v = [0u64; 7];
        for (i, slot) in v.iter_mut().enumerate() {
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            *slot = self.stats.get(&idx, 0).map_err(map_err)?.iter().sum();
        }
        Ok(XdpStats {
            pass_not_udp4: v[0],
            pass_no_entry: v[1],
            pass_other: v[2],
            forwarded: v[3],
            drop_source: v[4],
            redirect_err: v[5],
            to_user: v[6],
        })
    }

    /// Run the relay program `repeat` times on `frame` with
    /// `BPF_PROG_TEST_RUN` (not attached, no packet leaves): the XDP action
    /// and the kernel's mean time per run. The kernel reruns the program on
    /// the frame as the previous run left it, so to time forwarding the
    /// entry must map the frame onto itself (same addresses and ports);
    /// otherwise every run after the first is a map miss. `xdpcost` and
    /// `tests/xdp_veth.rs` do that, and check the forwarded count.
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration), XdpError> {
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.prog(PROG_RELAY)?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::default()
        };
        let r = prog
            .test_run(opts)
            .map_err(|e| XdpError::Load(error_chain(&e)))?;
        Ok((r.return_value, r.duration))
    }

    fn detach_all(&mut self) {
        let mut att = std::mem::take(&mut self.attached);
        for a in &mut att {
            if let Some(link) = a.link.take() {
                if let Ok(p) = self.prog(a.prog) {
                    // Nothing more to do if the kernel already let go.
                    let _ = p.detach(link);
                }
            }
        }
    }
}

impl Drop for XdpRelay {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// The gateway's start: with `datapath = "xdp"`, load the relay and attach
/// it to every `xdp_interface`; if that fails, log why and return `None`
/// (media relays on sockets). With `datapath = "sockets"`, `None`.
pub fn start(cfg: &crate::config::MediaConfig) -> Option<XdpRelay> {
    use crate::log::{log, Field, Level};
    if cfg.datapath != crate::config::Datapath::Xdp {
        log(Level::Info, "media data path: sockets", &[]);
        return None;
    }
    let fallback = |why: &str| {
        log(
            Level::Warn,
            "media data path: XDP unavailable, falling back to sockets",
            &[("why", Field::Str(why))],
        );
        None
    };
    let mut relay = match XdpRelay::load() {
        Ok(r) => r,
        Err(e) => return fallback(&e.to_string()),
    };
    for iface in &cfg.xdp_interface {
        match relay.attach(iface) {
            Ok(a) => {
                let mode = match a.mode {
                    AttachMode::Native => "native",
                    AttachMode::Generic => "generic",
                };
                let refused = a.native_refused.clone().unwrap_or_default();
                log(
                    Level::Info,
                    "media data path: XDP relay attached",
                    &[
                        ("interface", Field::Str(iface)),
                        ("mode", Field::Str(mode)),
                        ("native_refused", Field::Str(&refused)),
                    ],
                );
            }
            // Dropping `relay` detaches what did attach.
            Err(e) => return fallback(&e.to_string()),
        }
        if forwarding_off(iface) {
            log(
                Level::Warn,
                "XDP relay: IPv4 forwarding is off on the interface; the program's \
                 FIB lookup fails there, so entries whose egress the shards' \
                 neighbour tables do not know (a routed destination, a MAC not \
                 resolved yet) go to the socket path \
                 (sysctl net.ipv4.conf.<interface>.forwarding=1)",
                &[("interface", Field::Str(iface))],
            );
        }
    }
    Some(relay)
}

/// Whether IPv4 forwarding is off on `iface` (in this network namespace):
/// `bpf_fib_lookup` in input mode answers "forwarding disabled" there.
fn forwarding_off(iface: &str) -> bool {
    if iface.contains('/') || iface.starts_with('.') {
        return false;
    }
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"))
        .is_ok_and(|v| v.trim() == "0")
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(std::mem::size_of::<RawKey>(), 8);
        assert_eq!(std::mem::size_of::<RawEntry>(), 40);
        assert_eq!(std::mem::size_of::<RawCounters>(), 32);
    }

    #[test]
    fn to_user_entries_carry_the_action() {
        let r = raw_to_user();
        assert_eq!(r.action, ACTION_TO_USER);
        assert_eq!((r.expect_addr, r.ifindex, r.new_daddr), (0, 0, 0));
        let e = XdpEntry {
            local: "10.0.0.1:30000".parse().unwrap(),
            expect_src: None,
            strict: false,
            new_src: "10.0.1.1:30002".parse().unwrap(),
            new_dst: "10.0.1.2:5000".parse().unwrap(),
            egress: None,
        };
        assert_eq!(e.raw().action, ACTION_FORWARD);
        // The action sits where pad0 was: byte 7.
        assert_eq!(std::mem::offset_of!(RawEntry, action), 7);
    }

    #[test]
    fn entry_fields_are_network_order() {
        let e = XdpEntry {
            local: "10.0.0.1:30000".parse().unwrap(),
            expect_src: Some("10.0.0.2:4000".parse().unwrap()),
            strict: true,
            new_src: "10.0.1.1:30002".parse().unwrap(),
            new_dst: "10.0.1.2:5000".parse().unwrap(),
            egress: None,
        };
        let r = e.raw();
        assert_eq!(r.expect_addr.to_ne_bytes(), [10, 0, 0, 2]);
        assert_eq!(r.expect_port.to_ne_bytes(), 4000u16.to_be_bytes());
        assert_eq!(r.new_dport.to_ne_bytes(), 5000u16.to_be_bytes());
        assert_eq!(r.strict, 1);
        assert_eq!(r.ifindex, 0);
        let k = key_of(e.local);
        assert_eq!(k.port.to_ne_bytes(), 30000u16.to_be_bytes());
    }

    #[test]
    fn macs_parse_and_reject() {
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Some([2, 0, 0, 0, 0, 10]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:0a:0b"), None);
        assert_eq!(parse_mac("zz:00:00:00:00:0a"), None);
        assert_eq!(mac("no/such"), None);
        assert_eq!(mac(""), None);
        assert_eq!(mac("lo"), Some([0; 6]));
        assert_eq!(ifindex("no\0such"), None);
    }

    #[test]
    fn sockets_datapath_starts_no_xdp() {
        let cfg = crate::config::MediaConfig::default();
        assert!(start(&cfg).is_none());
        // An interface that does not exist: falls back, does not fail.
        let cfg = crate::config::MediaConfig {
            datapath: crate::config::Datapath::Xdp,
            xdp_interface: vec!["kx-no-such0".into()],
            ..Default::default()
        };
        assert!(start(&cfg).is_none());
    }

    #[test]
    fn load_says_why_when_not_built_in() {
        if !built_in() {
            let e = XdpRelay::load()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("not built in"), "{e}");
        }
    }
}
