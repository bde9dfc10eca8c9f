//! Socket-less legs: the shard's AF_XDP path (issue 7, item 3).
//!
//! With `datapath = "xdp"` and the relay attached, a leg on the IPv4 media
//! address gets no socket. The shard takes a port pair from its pool,
//! gives each port a *virtual* [`SockId`] above the real socket slots
//! (`vbase + port - port_lo`, so [`RelayTable`] is unchanged), and
//! installs a TO_USER entry for (media address, port): the XDP program
//! redirects those datagrams to the AF_XDP socket of the queue they arrive
//! on. The shard owns one XSK per `xdp_interface` per rx queue `q` with
//! `q % shards == index`.
//!
//! Each loop turn [`Shard::xsk_turn`] drains the rx rings (a multishot
//! poll on each XSK wakes the loop), parses each frame
//! ([`frame::parse`], rejects counted by reason), runs the same
//! [`RelayTable::forward_with`] as the socket path (latching, strict
//! source, SRTP, statistics) on a copy of the payload, and writes the
//! result into a transmit frame of the egress interface's XSK with new
//! headers ([`frame::write_headers`]), then kicks every XSK it queued on.
//! The egress interface is the one whose subnet holds the destination
//! (else the one the destination was seen on); its MAC comes from the
//! neighbour table: the kernel's (`/proc/net/arp`, read at start and after
//! misses) plus the source MAC of every frame received. A miss is counted
//! and the datagram sent through the kernel instead (one raw IPv4 socket
//! per shard, opened at the first miss: the kernel routes it and resolves
//! the next hop); the next tick re-reads the kernel's table.
//!
//! Plain pairs of socket-less legs are offloaded like socket legs
//! (`offload.rs`): their FORWARD entries replace the TO_USER ones, with
//! the AF_XDP socket as the fallback when the FIB has no answer
//! (`ACTION_FORWARD_USER`), and releasing them restores TO_USER
//! ([`Shard::xsk_restore_local`]).
//!
//! A datagram whose egress is a real socket (a call between the XDP
//! address and another family) is counted (`to_socket`) and dropped; the
//! reverse direction (socket -> virtual) is transmitted on the XSK.
//!
//! [`frame::parse`]: crate::media::xdp::frame::parse
//! [`frame::write_headers`]: crate::media::xdp::frame::write_headers

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use io_uring::{cqueue, opcode, types};

use super::{Shard, KIND_SHIFT};
use crate::media::relay::{DropReason, SockId, Verdict};
use crate::media::xdp::frame::{self, Headers, Reject, PAYLOAD_OFF};
use crate::media::xdp::xsk::{RxDesc, Xsk, XskConfig};
use crate::media::xdp::{XdpMapFds, XdpMaps};
use crate::shard::ShardError;

/// Readiness of an XSK (multishot poll); the low bits are its index.
pub(super) const KIND_XSK: u64 = 6;
/// Frames taken from one rx ring per call.
const RX_BATCH: usize = 64;
/// Frames handled per XSK per loop turn (bounds a turn's work).
const RX_TURN_MAX: usize = 1024;
/// Neighbour entries kept (the table is cleared when full).
const NEIGH_MAX: usize = 65_536;
/// Least time between two reads of the kernel's neighbour table on misses.
const ARP_REREAD: std::time::Duration = std::time::Duration::from_millis(20);
/// Unresolved destinations remembered until the next tick.
const PENDING_MAX: usize = 256;

/// One side's (RTP socket, RTCP socket, port), as `open_side` returns it.
type Side = (u32, Option<u32>, u16);

/// What a shard needs to run socket-less legs (from the gateway's start).
#[derive(Clone, Debug)]
pub struct XskSetup {
    /// The loaded relay's maps.
    pub maps: XdpMapFds,
    /// `xdp_interface`, in order (the order gives each its `xsks` slot).
    pub interfaces: Vec<String>,
    /// Socket sizes.
    pub sizes: XskConfig,
    /// Number of shards (queue `q` belongs to shard `q % shards`).
    pub shards: usize,
}

/// Counters of the AF_XDP path of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskPathCounters {
    /// Frames received on the shard's XSKs.
    pub rx: u64,
    /// Frames transmitted (queued on a tx ring).
    pub tx: u64,
    /// Frames not parsed, by [`Reject`] reason.
    pub rejects: [u64; Reject::COUNT],
    /// Not for one of this shard's virtual ports (another address, another
    /// shard's port, a closed port).
    pub not_ours: u64,
    /// No neighbour entry for the destination: sent through the kernel's
    /// stack instead (a raw IP socket, which resolves the next hop), and
    /// the table re-read at the next tick.
    pub neigh_miss: u64,
    /// Datagrams sent through the raw socket (neighbour misses).
    pub via_stack: u64,
    /// Neighbour misses that could not be sent at all.
    pub miss_dropped: u64,
    /// No transmit frame free on the egress XSK.
    pub tx_no_frame: u64,
    /// The egress leg has a real socket (not supported on this path).
    pub to_socket: u64,
    /// Socket path datagrams sent out of an XSK (egress leg socket-less).
    pub from_socket: u64,
    /// TO_USER entries that could not be installed or removed.
    pub entry_errors: u64,
    /// Kernel neighbour table reads.
    pub arp_reads: u64,
}

struct XskIface {
    /// Index in `xdp_interface`.
    slot: usize,
    mac: [u8; 6],
    /// IPv4 networks on the interface (address, prefix length).
    nets: Vec<(Ipv4Addr, u8)>,
    xsk: Xsk,
    /// Transmits queued since the last kick.
    dirty: bool,
}

/// The shard's AF_XDP state.
pub(super) struct XskPath {
    maps: XdpMaps,
    ifaces: Vec<XskIface>,
    names: Vec<String>,
    local: Ipv4Addr,
    vbase: u32,
    port_lo: u16,
    /// Open virtual ports, by `port - port_lo`.
    open: Vec<bool>,
    neigh: HashMap<Ipv4Addr, ([u8; 6], usize)>,
    pending: Vec<Ipv4Addr>,
    /// When the kernel's neighbour table was last read.
    arp_read_at: Option<Instant>,
    /// A raw IPv4 socket (opened at the first neighbour miss).
    raw: Option<std::os::fd::OwnedFd>,
    stack_buf: Box<[u8]>,
    descs: Vec<RxDesc>,
    scratch: Box<[u8]>,
    /// A ring still had frames when the turn's budget ran out: the loop
    /// must not sleep.
    pub(super) busy: bool,
    tos: u8,
    pub(super) counters: XskPathCounters,
}

pub(super) fn in_net(ip: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - u32::from(prefix.min(32)));
    u32::from(ip) & mask == u32::from(net) & mask
}

/// IPv4 addresses and prefixes of `name` (getifaddrs, this namespace).
pub(super) fn if_nets(name: &str) -> Vec<(Ipv4Addr, u8)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name.
        let n = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: sa_family is readable for any sockaddr.
        if n.to_bytes() != name.as_bytes()
            || i32::from(unsafe { (*ifa.ifa_addr).sa_family }) != libc::AF_INET
        {
            continue;
        }
        // SAFETY: AF_INET: both are sockaddr_in.
        let (a, m) = unsafe {
            (
                &*(ifa.ifa_addr as *const libc::sockaddr_in),
                &*(ifa.ifa_netmask as *const libc::sockaddr_in),
            )
        };
        let addr = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
        let prefix = u32::from_be(m.sin_addr.s_addr).count_ones() as u8;
        out.push((addr, prefix));
    }
    // SAFETY: the list from getifaddrs, freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Number of rx queues of `name` (sysfs of this namespace; 1 if unknown).
fn rx_queues(name: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{name}/queues"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// Complete entries of the kernel's ARP table: (ip, mac, device).
pub(super) fn kernel_arp() -> Vec<(Ipv4Addr, [u8; 6], String)> {
    std::fs::read_to_string("/proc/net/arp")
        .map(|t| parse_arp(&t))
        .unwrap_or_default()
}

/// The complete entries of a `/proc/net/arp` text.
fn parse_arp(text: &str) -> Vec<(Ipv4Addr, [u8; 6], String)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None;
            }
            let mac = crate::media::xdp::parse_mac(f[3])?;
            Some((f[0].parse().ok()?, mac, f[5].to_string()))
        })
        .collect()
}

impl XskPath {
    /// Open the shard's XSKs and map handles; `None` (with the reason
    /// logged) leaves the shard on sockets.
    pub(super) fn open(
        setup: &XskSetup,
        index: usize,
        local: Option<IpAddr>,
        port_lo: u16,
        port_hi: u16,
        vbase: u32,
        dscp: u8,
    ) -> Result<XskPath, String> {
        let Some(IpAddr::V4(local)) = local else {
            return Err("AF_XDP legs need an IPv4 media address".into());
        };
        let mut maps: XdpMaps = setup.maps.open().map_err(|e| e.to_string())?;
        let mut ifaces = Vec::new();
        for (slot, name) in setup.interfaces.iter().enumerate() {
            let ifindex =
                crate::media::xdp::ifindex(name).ok_or_else(|| format!("no interface {name}"))?;
            let mac = crate::media::xdp::mac(name).ok_or_else(|| format!("no MAC for {name}"))?;
            let nets = if_nets(name);
            let shards = setup.shards.max(1) as u32;
            for q in (0..rx_queues(name)).filter(|q| q % shards == index as u32) {
                let xsk = Xsk::open(ifindex, q, setup.sizes)
                    .map_err(|e| format!("AF_XDP socket on {name} queue {q}: {e}"))?;
                maps.register_xsk(slot as u32, ifindex, q, xsk.fd())
                    .map_err(|e| format!("registering the XSK of {name} queue {q}: {e}"))?;
                crate::log::log(
                    crate::log::Level::Info,
                    "media data path: AF_XDP socket bound",
                    &[
                        ("shard", crate::log::Field::Int(index as i64)),
                        ("interface", crate::log::Field::Str(name)),
                        ("queue", crate::log::Field::Int(i64::from(q))),
                        (
                            "mode",
                            crate::log::Field::Str(match xsk.mode() {
                                crate::media::xdp::xsk::XskMode::ZeroCopy => "zero-copy",
                                crate::media::xdp::xsk::XskMode::Copy => "copy",
                            }),
                        ),
                        (
                            "zerocopy_refused",
                            crate::log::Field::Str(xsk.zerocopy_refused().unwrap_or("")),
                        ),
                    ],
                );
                ifaces.push(XskIface {
                    slot,
                    mac,
                    nets: nets.clone(),
                    xsk,
                    dirty: false,
                });
            }
        }
        if ifaces.is_empty() {
            return Err(format!(
                "shard {index} owns no rx queue of the XDP interfaces"
            ));
        }
        let nports = usize::from(port_hi - port_lo) + 1;
        let mut x = XskPath {
            maps,
            ifaces,
            names: setup.interfaces.clone(),
            local,
            vbase,
            port_lo,
            open: vec![false; nports],
            neigh: HashMap::new(),
            pending: Vec::new(),
            arp_read_at: None,
            raw: None,
            stack_buf: vec![0u8; setup.sizes.frame_size as usize].into_boxed_slice(),
            descs: Vec::with_capacity(RX_BATCH),
            busy: false,
            scratch: vec![0u8; setup.sizes.frame_size as usize].into_boxed_slice(),
            tos: dscp << 2,
            counters: XskPathCounters::default(),
        };
        x.read_arp();
        Ok(x)
    }

    /// The shard's XSK descriptors, by index (for the readiness polls).
    pub(super) fn fds(&self) -> Vec<i32> {
        self.ifaces.iter().map(|f| f.xsk.fd()).collect()
    }

    fn vsock(&self, port: u16) -> Option<SockId> {
        let i = usize::from(port.checked_sub(self.port_lo)?);
        (i < self.open.len()).then(|| self.vbase + i as u32)
    }

    fn vport(&self, sock: SockId) -> Option<u16> {
        let i = sock.checked_sub(self.vbase)? as usize;
        (i < self.open.len()).then(|| self.port_lo + i as u16)
    }

    /// Whether `sock` is a virtual (socket-less) one.
    pub(super) fn owns(&self, sock: SockId) -> bool {
        self.vport(sock).is_some()
    }

    fn read_arp(&mut self) {
        self.counters.arp_reads += 1;
        self.arp_read_at = Some(Instant::now());
        for (ip, mac, dev) in kernel_arp() {
            if let Some(slot) = self.names.iter().position(|n| *n == dev) {
                if let Some(i) = self.ifaces.iter().position(|f| f.slot == slot) {
                    self.learn(ip, mac, i);
                }
            }
        }
    }

    /// The MAC this path knows for `ip` (learned from received frames or
    /// the kernel's table), for the offload's egress.
    pub(super) fn neighbour_mac(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.neigh.get(&ip).map(|&(mac, _)| mac)
    }

    fn learn(&mut self, ip: Ipv4Addr, mac: [u8; 6], iface: usize) {
        if self.neigh.get(&ip) == Some(&(mac, iface)) {
            return;
        }
        if self.neigh.len() >= NEIGH_MAX {
            self.neigh.clear();
        }
        self.neigh.insert(ip, (mac, iface));
    }

    /// The XSK (index) and next-hop MAC toward `dst`.
    fn egress(&mut self, dst: Ipv4Addr) -> Option<(usize, [u8; 6])> {
        let by_net = self
            .ifaces
            .iter()
            .position(|f| f.nets.iter().any(|&(n, p)| in_net(dst, n, p)));
        match (by_net, self.neigh.get(&dst)) {
            (Some(i), Some(&(mac, _))) => Some((i, mac)),
            (None, Some(&(mac, i))) => Some((i, mac)),
            _ => {
                self.counters.neigh_miss += 1;
                if self.pending.len() < PENDING_MAX && !self.pending.contains(&dst) {
                    self.pending.push(dst);
                }
                // The kernel may have resolved it since (an earlier miss
                // went through it): look again, at most every ARP_REREAD.
                let stale = self.arp_read_at.is_none_or(|t| t.elapsed() >= ARP_REREAD);
                if stale {
                    self.read_arp();
                }
                None
            }
        }
    }

    /// Put `payload` toward `dst` from virtual socket `from`; false if it
    /// could not be queued (counted).
    fn transmit(&mut self, from: SockId, dst: SocketAddr, payload: &[u8]) -> bool {
        let (Some(port), SocketAddr::V4(dst)) = (self.vport(from), dst) else {
            self.counters.not_ours += 1;
            return false;
        };
        let Some((i, dst_mac)) = self.egress(*dst.ip()) else {
            return self.via_stack(port, dst, payload);
        };
        let h = Headers {
            dst_mac,
            src_mac: self.ifaces[i].mac,
            src: SocketAddrV4::new(self.local, port),
            dst,
            tos: self.tos,
            ttl: 64,
        };
        let f = &mut self.ifaces[i];
        let Some(addr) = f.xsk.tx_frame() else {
            self.counters.tx_no_frame += 1;
            return false;
        };
        let buf = f.xsk.frame_mut(addr);
        let Some(room) = buf.get_mut(PAYLOAD_OFF..PAYLOAD_OFF + payload.len()) else {
            f.xsk.unreserve(addr);
            self.counters.tx_no_frame += 1;
            return false;
        };
        room.copy_from_slice(payload);
        match frame::write_headers(buf, &h, payload.len()) {
            Some(len) => {
                f.xsk.send(addr, len as u32);
                f.dirty = true;
                self.counters.tx += 1;
                true
            }
            None => {
                f.xsk.unreserve(addr);
                self.counters.tx_no_frame += 1;
                false
            }
        }
    }

    /// Queue `payload` toward `dst` from virtual socket `from` (prompt
    /// playback); sent at the end of the loop turn. False if dropped
    /// (counted).
    pub(super) fn send_bytes(&mut self, from: SockId, dst: SocketAddr, payload: &[u8]) -> bool {
        self.transmit(from, dst, payload)
    }

    /// A neighbour miss: the datagram goes through the kernel (a raw IP
    /// socket: routing, ARP and its queue), so the first packets toward a
    /// new remote are not lost while the table learns it.
    fn via_stack(&mut self, port: u16, dst: SocketAddrV4, payload: &[u8]) -> bool {
        use std::os::fd::{AsRawFd, FromRawFd};
        if self.raw.is_none() {
            // SAFETY: plain socket(2); owned at once.
            let fd = unsafe {
                libc::socket(
                    libc::AF_INET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_RAW,
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh descriptor we own.
                self.raw = Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            }
        }
        let h = Headers {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            src: SocketAddrV4::new(self.local, port),
            dst,
            tos: self.tos,
            ttl: 64,
        };
        let end = PAYLOAD_OFF + payload.len();
        let (Some(fd), Some(room)) = (&self.raw, self.stack_buf.get_mut(PAYLOAD_OFF..end)) else {
            self.counters.miss_dropped += 1;
            return false;
        };
        room.copy_from_slice(payload);
        let Some(len) = frame::write_headers(&mut self.stack_buf, &h, payload.len()) else {
            self.counters.miss_dropped += 1;
            return false;
        };
        let ip = &self.stack_buf[frame::ETH_LEN..len];
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid buffer and address for the call.
        let rc = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                ip.as_ptr().cast(),
                ip.len(),
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            self.counters.miss_dropped += 1;
            return false;
        }
        self.counters.via_stack += 1;
        true
    }

    fn kick_dirty(&mut self) {
        for f in &mut self.ifaces {
            if f.dirty {
                f.dirty = false;
                f.xsk.kick();
            } else {
                f.xsk.reap();
            }
        }
    }

    /// Install (or restore) the TO_USER entry of an open virtual port.
    fn install(&mut self, port: u16) -> bool {
        match self
            .maps
            .insert_to_user(SocketAddrV4::new(self.local, port))
        {
            Ok(()) => true,
            Err(_) => {
                self.counters.entry_errors += 1;
                false
            }
        }
    }

    /// Sum of every XSK's own counters (for the log at stop).
    fn xsk_counters(&self) -> Vec<String> {
        self.ifaces
            .iter()
            .map(|f| {
                format!(
                    "{}#{}: {:?} frames {:?} kernel {:?}",
                    self.names.get(f.slot).map_or("?", String::as_str),
                    f.xsk.queue(),
                    f.xsk.counters,
                    f.xsk.frames(),
                    f.xsk.kernel_stats().map(|s| (
                        s.rx_dropped,
                        s.rx_ring_full,
                        s.rx_fill_ring_empty_descs,
                        s.tx_invalid_descs
                    ))
                )
            })
            .collect()
    }
}

impl Shard {
    /// Arm the readiness polls of the XSKs (at start).
    pub(super) fn xsk_arm_all(&mut self) {
        let n = self.xsk.as_ref().map_or(0, |x| x.ifaces.len());
        for i in 0..n {
            self.xsk_arm(i);
        }
    }

    fn xsk_arm(&mut self, i: usize) {
        let Some(fd) = self.xsk.as_ref().and_then(|x| x.fds().get(i).copied()) else {
            return;
        };
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data((KIND_XSK << KIND_SHIFT) | i as u64);
        self.push_sqe(sqe);
    }

    /// A readiness completion: re-arm if the multishot poll ended (the
    /// rings themselves are drained every turn).
    pub(super) fn xsk_ready(&mut self, ud: u64, flags: u32) {
        if !cqueue::more(flags) {
            self.xsk_arm((ud & 0xffff) as usize);
        }
    }

    /// Socket-less RTP (and RTCP unless `mux`) ports on `ip`, if it is the
    /// AF_XDP media address: `None` otherwise (the caller opens sockets).
    pub(super) fn xsk_open_side(
        &mut self,
        ip: IpAddr,
        mux: bool,
    ) -> Option<Result<Side, ShardError>> {
        let x = self.xsk.as_mut()?;
        if ip != IpAddr::V4(x.local) {
            return None;
        }
        let Some(pair) = self.ports.alloc() else {
            return Some(Err(ShardError::PortsExhausted));
        };
        let ports: &[u16] = if mux { &[pair] } else { &[pair, pair + 1] };
        let mut socks = [0u32; 2];
        for (k, &port) in ports.iter().enumerate() {
            let vs = x.vsock(port);
            let ok = vs.is_some() && x.install(port);
            let Some(vs) = vs.filter(|_| ok) else {
                // Undo what was installed; the pair goes back (with the
                // last release, or here if nothing was taken).
                for &p in &ports[..k] {
                    let _ = x.maps.remove(SocketAddrV4::new(x.local, p));
                    if let Some(i) = p.checked_sub(x.port_lo) {
                        x.open[usize::from(i)] = false;
                    }
                    self.ports.release(p);
                }
                if k == 0 {
                    self.ports.give_back(pair);
                }
                return Some(Err(ShardError::Socket(
                    "installing the TO_USER entry failed".into(),
                )));
            };
            x.open[usize::from(port - x.port_lo)] = true;
            self.ports.add_ref(port);
            socks[k] = vs;
        }
        Some(Ok((socks[0], (!mux).then_some(socks[1]), pair)))
    }

    /// The local address of virtual socket `sock` (`None` for real ones).
    pub(super) fn xsk_local(&self, sock: SockId) -> Option<SocketAddrV4> {
        let x = self.xsk.as_ref()?;
        let port = x.vport(sock)?;
        Some(SocketAddrV4::new(x.local, port))
    }

    /// Restore the TO_USER entry of `local` if it is an open socket-less
    /// port (after its XDP FORWARD entry was removed); a no-op otherwise.
    pub(super) fn xsk_restore_local(&mut self, local: SocketAddrV4) {
        let Some(x) = self.xsk.as_ref() else {
            return;
        };
        if *local.ip() != x.local {
            return;
        }
        if let Some(vs) = x.vsock(local.port()) {
            self.xsk_restore_to_user(vs);
        }
    }

    /// (Re)install the TO_USER entry of virtual socket `sock` (e.g. when an
    /// XDP FORWARD entry for it is released). False if `sock` is not an
    /// open virtual socket or the map refused.
    pub(super) fn xsk_restore_to_user(&mut self, sock: SockId) -> bool {
        let Some(x) = self.xsk.as_mut() else {
            return false;
        };
        match x.vport(sock) {
            Some(port) if x.open[usize::from(port - x.port_lo)] => x.install(port),
            _ => false,
        }
    }

    /// Close a virtual socket: remove its entry and return its port once
    /// no leg uses it. False if `sock` is a real socket.
    pub(super) fn xsk_close(&mut self, sock: SockId) -> bool {
        let Some(port) = self.xsk.as_ref().and_then(|x| x.vport(sock)) else {
            return false;
        };
        if self.relay.socket_in_use(sock) {
            return true;
        }
        let Some(x) = self.xsk.as_mut() else {
            return true;
        };
        let i = usize::from(port - x.port_lo);
        if !x.open[i] {
            return true;
        }
        x.open[i] = false;
        if x.maps.remove(SocketAddrV4::new(x.local, port)).is_err() {
            x.counters.entry_errors += 1;
        }
        self.ports.release(port);
        true
    }

    /// A socket-path datagram whose egress socket is virtual: out of an
    /// XSK. True if `sock` is virtual (the caller frees its buffer).
    pub(super) fn xsk_send_from_socket(
        &mut self,
        sock: SockId,
        dst: SocketAddr,
        bid: u16,
        off: usize,
        len: usize,
    ) -> bool {
        let Some(x) = self.xsk.as_mut() else {
            return false;
        };
        if !x.owns(sock) {
            return false;
        }
        x.counters.from_socket += 1;
        let Some(payload) = self.bufs.buf(bid).get(off..off + len) else {
            return true;
        };
        if !x.transmit(sock, dst, payload) {
            self.relay.counters.drops[DropReason::QueueFull as usize] += 1;
            self.relay.counters.forwarded = self.relay.counters.forwarded.saturating_sub(1);
        }
        true
    }

    /// One turn of the AF_XDP path: drain every rx ring (bounded), relay,
    /// transmit, kick.
    pub(super) fn xsk_turn(&mut self, now: Instant) {
        let Some(mut x) = self.xsk.take() else {
            return;
        };
        let mut descs = std::mem::take(&mut x.descs);
        x.busy = false;
        for i in 0..x.ifaces.len() {
            let mut done = 0;
            while done < RX_TURN_MAX {
                descs.clear();
                let n = x.ifaces[i].xsk.recv(RX_BATCH, &mut descs);
                if n == 0 {
                    break;
                }
                done += n;
                x.counters.rx += n as u64;
                for d in &descs {
                    self.xsk_relay_one(&mut x, i, *d, now);
                }
                x.ifaces[i].xsk.refill(&descs);
            }
            x.busy |= done >= RX_TURN_MAX;
        }
        x.descs = descs;
        x.kick_dirty();
        self.xsk = Some(x);
        // Legs that latched on this path may now be offloaded.
        if self.relay.latched_pending() {
            self.xdp_after_batch(now);
        }
    }

    fn xsk_relay_one(&mut self, x: &mut XskPath, i: usize, d: RxDesc, now: Instant) {
        let len = d.len as usize;
        let p = {
            let f = x.ifaces[i].xsk.frame_mut(d.addr);
            let Some(f) = f.get(..len) else {
                x.counters.rejects[Reject::BadLength as usize] += 1;
                return;
            };
            let p = match frame::parse(f) {
                Ok(p) => p,
                Err(r) => {
                    x.counters.rejects[r as usize] += 1;
                    return;
                }
            };
            // The relay works in place and may grow the datagram (SRTP
            // tag): a copy in the scratch buffer lets the rx frame go back.
            let end = PAYLOAD_OFF + p.payload_len;
            match (f.get(PAYLOAD_OFF..end), x.scratch.get_mut(..p.payload_len)) {
                (Some(src), Some(dst)) => dst.copy_from_slice(src),
                _ => {
                    x.counters.rejects[Reject::BadLength as usize] += 1;
                    return;
                }
            }
            p
        };
        let vs = match x.vsock(p.dst.port()) {
            Some(vs) if *p.dst.ip() == x.local && x.open[(vs - x.vbase) as usize] => vs,
            _ => {
                x.counters.not_ours += 1;
                return;
            }
        };
        // The remote's MAC (or its router's) for the way back.
        x.learn(*p.src.ip(), p.src_mac, i);
        let mut n = p.payload_len;
        if self.pm.listening() {
            self.pm.inspect(vs, &x.scratch[..n]);
        }
        let v = self.relay.forward_with(
            now,
            vs,
            SocketAddr::V4(p.src),
            &mut x.scratch,
            &mut n,
            None,
            None,
        );
        if let Verdict::Send { sock, dst } = v {
            if !x.owns(sock) {
                x.counters.to_socket += 1;
                self.relay.counters.forwarded -= 1;
                return;
            }
            let out = std::mem::take(&mut x.scratch);
            let ok = x.transmit(sock, dst, &out[..n]);
            x.scratch = out;
            if !ok {
                self.relay.counters.drops[DropReason::QueueFull as usize] += 1;
                self.relay.counters.forwarded -= 1;
            }
        }
    }

    /// Housekeeping: resolve destinations that missed the neighbour table.
    pub(super) fn xsk_tick(&mut self) {
        let Some(x) = self.xsk.as_mut() else {
            return;
        };
        if x.pending.is_empty() {
            return;
        }
        // The misses went through the kernel, which resolved their next
        // hops: its table has them now.
        x.pending.clear();
        x.read_arp();
    }

    /// The AF_XDP path's counters, for the log at stop.
    pub(super) fn xsk_report(&self) -> Option<String> {
        let x = self.xsk.as_ref()?;
        Some(format!(
            "xsk path {:?}; sockets {:?}",
            x.counters,
            x.xsk_counters()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_match_by_prefix() {
        let n = Ipv4Addr::new(10, 79, 2, 1);
        assert!(in_net(Ipv4Addr::new(10, 79, 2, 2), n, 24));
        assert!(!in_net(Ipv4Addr::new(10, 79, 3, 2), n, 24));
        assert!(in_net(Ipv4Addr::new(10, 79, 3, 2), n, 16));
        assert!(in_net(Ipv4Addr::new(1, 2, 3, 4), n, 0));
        assert!(!in_net(Ipv4Addr::new(10, 79, 2, 2), n, 32));
        assert!(in_net(n, n, 32));
    }

    #[test]
    fn arp_table_keeps_complete_entries() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.79.2.2        0x1         0x2         96:1e:0b:6a:2f:01     *        xgb\n\
                 10.79.1.9        0x1         0x0         00:00:00:00:00:00     *        xga\n\
                 10.79.1.2        0x1         0x6         aa:bb:cc:dd:ee:ff     *        xga\n\
                 garbage\n\
                 10.79.1.3        0x1         0x2         zz:bb:cc:dd:ee:ff     *        xga\n";
        let e = parse_arp(t);
        assert_eq!(
            e,
            vec![
                (
                    Ipv4Addr::new(10, 79, 2, 2),
                    [0x96, 0x1e, 0x0b, 0x6a, 0x2f, 0x01],
                    "xgb".to_string()
                ),
                (
                    Ipv4Addr::new(10, 79, 1, 2),
                    [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
                    "xga".to_string()
                ),
            ]
        );
    }

    #[test]
    fn loopback_has_a_network() {
        assert!(if_nets("lo")
            .iter()
            .any(|&(a, p)| a.is_loopback() && p == 8));
        assert!(if_nets("no-such-if").is_empty());
        assert!(rx_queues("no-such-if") >= 1);
    }
}
