//! An AF_XDP socket (XSK) with its own UMEM, from raw syscalls.
//!
//! One XSK is bound to one (interface, rx queue). Its UMEM is `frames`
//! chunks of `frame_size` bytes, split at start: the first half is handed
//! to the kernel through the fill ring for receiving, the second half is
//! this socket's transmit pool. The four rings are mmap'd and driven with
//! the usual single-producer/single-consumer protocol: the producer writes
//! descriptors, then publishes its index with a release store; the consumer
//! reads the other side's index with an acquire load.
//!
//! Every frame is always in exactly one place, and [`Xsk::frames`] counts
//! them: in the kernel for receiving (fill ring and rx ring), held by the
//! caller after [`Xsk::recv`] until [`Xsk::refill`], free for transmit, or
//! in flight (tx ring until the completion ring hands it back, see
//! [`Xsk::reap`]). Nothing is allocated after [`Xsk::open`].
//!
//! Binding tries zero-copy first and falls back to copy mode (veth and
//! most virtual devices only do copy); [`Xsk::mode`] says which and
//! [`Xsk::zerocopy_refused`] why.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// `AF_XDP` (include/linux/socket.h).
const AF_XDP: libc::c_int = 44;

/// Sizes of one XSK, from `[media] xsk_*` (see `config.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XskConfig {
    /// UMEM frames (power of two, at least 64): half receive, half transmit.
    pub frames: u32,
    /// Bytes per frame: 2048 or 4096.
    pub frame_size: u32,
    /// Descriptors in each ring (power of two, at least `frames / 2`).
    pub ring: u32,
}

impl Default for XskConfig {
    fn default() -> Self {
        XskConfig {
            frames: 4096,
            frame_size: 2048,
            ring: 2048,
        }
    }
}

impl XskConfig {
    /// Check the sizes; the error names the problem.
    pub fn validate(&self) -> Result<(), String> {
        if !self.frames.is_power_of_two() || !(64..=1 << 20).contains(&self.frames) {
            return Err(format!(
                "{} frames: a power of two in 64..=1048576",
                self.frames
            ));
        }
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return Err(format!("frame size {}: 2048 or 4096", self.frame_size));
        }
        if !self.ring.is_power_of_two() || self.ring < self.frames / 2 || self.ring > 1 << 20 {
            return Err(format!(
                "ring size {}: a power of two, at least half the frames ({}), at most 1048576",
                self.ring,
                self.frames / 2
            ));
        }
        Ok(())
    }
}

/// How the socket is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskMode {
    /// The driver DMAs into the UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM.
    Copy,
}

/// One received datagram's frame, owned by the caller until
/// [`Xsk::refill`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxDesc {
    /// Offset of the frame's first byte in the UMEM.
    pub addr: u64,
    /// Its length.
    pub len: u32,
}

/// Counters of one XSK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskCounters {
    /// Frames received.
    pub rx: u64,
    /// Frames put on the tx ring.
    pub tx: u64,
    /// Frames the completion ring handed back.
    pub tx_completed: u64,
    /// `sendto` kicks.
    pub kicks: u64,
    /// Kicks that failed with something other than EAGAIN/EBUSY/ENOBUFS.
    pub kick_errors: u64,
    /// Kicks that gave up with descriptors still on the tx ring (they go
    /// with the next kick).
    pub kick_stalls: u64,
    /// Transmits refused: no free transmit frame.
    pub tx_no_frame: u64,
}

/// Where every UMEM frame is; the fields always add up to the total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCount {
    /// In the fill or rx ring (the kernel's, for receiving).
    pub kernel_rx: u32,
    /// Received and not yet given back with [`Xsk::refill`].
    pub held: u32,
    /// Free for transmit.
    pub tx_free: u32,
    /// Reserved for a transmit ([`Xsk::tx_frame`]) and not yet sent.
    pub tx_building: u32,
    /// On the tx ring or not yet completed.
    pub tx_in_flight: u32,
}

impl FrameCount {
    /// All frames.
    pub fn total(&self) -> u32 {
        self.kernel_rx + self.held + self.tx_free + self.tx_building + self.tx_in_flight
    }
}

/// One mmap'd ring.
struct Ring<T> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    desc: *mut T,
    mask: u32,
    size: u32,
    map: *mut libc::c_void,
    map_len: usize,
}

impl<T> Ring<T> {
    /// mmap the ring at page offset `pgoff` of `fd`.
    fn map(fd: RawFd, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Ring<T>> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: mapping the kernel's ring of this socket; checked below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = map.cast::<u8>();
        // SAFETY: the offsets are the kernel's, within the mapping.
        unsafe {
            Ok(Ring {
                producer: base.add(off.producer as usize).cast(),
                consumer: base.add(off.consumer as usize).cast(),
                desc: base.add(off.desc as usize).cast(),
                mask: size - 1,
                size,
                map,
                map_len,
            })
        }
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping; the kernel treats it as u32.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { &*self.consumer }
    }

    /// Entry `i` (any index; masked).
    fn slot(&self, i: u32) -> *mut T {
        // SAFETY: masked index within the ring's descriptor array.
        unsafe { self.desc.add((i & self.mask) as usize) }
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

/// An AF_XDP socket bound to one (interface, queue), with its UMEM.
pub struct Xsk {
    // Rings unmap before the socket closes, the UMEM after it.
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    fd: OwnedFd,
    umem_len: usize,
    frame_size: u32,
    tx_free: Vec<u64>,
    count: FrameCount,
    mode: XskMode,
    zerocopy_refused: Option<String>,
    ifindex: u32,
    queue: u32,
    /// Counters.
    pub counters: XskCounters,
    /// Last: unmapped after the socket closed.
    umem: Umem,
}

// SAFETY: the raw pointers are into mappings this value owns; it is moved
// to and used by one shard thread at a time.
unsafe impl Send for Xsk {}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a valid T of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ctx(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The UMEM mapping, unmapped on drop.
struct Umem(*mut u8, usize);

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: our own anonymous mapping, unmapped once.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

impl Xsk {
    /// Create, size, bind (zero-copy, else copy) and fill an XSK on
    /// (`ifindex`, `queue`).
    pub fn open(ifindex: u32, queue: u32, cfg: XskConfig) -> io::Result<Xsk> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match Self::open_mode(ifindex, queue, cfg, XskMode::ZeroCopy) {
            Ok(x) => Ok(x),
            Err(zc) => {
                let mut x = Self::open_mode(ifindex, queue, cfg, XskMode::Copy)?;
                x.zerocopy_refused = Some(zc.to_string());
                Ok(x)
            }
        }
    }

    fn open_mode(ifindex: u32, queue: u32, cfg: XskConfig, mode: XskMode) -> io::Result<Xsk> {
        // SAFETY: plain socket(2); owned at once.
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(ctx("socket(AF_XDP)", io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let umem_len = cfg.frames as usize * cfg.frame_size as usize;
        // SAFETY: an anonymous private mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ctx("mmap UMEM", io::Error::last_os_error()));
        }
        let umem = Umem(p.cast(), umem_len);
        let reg = libc::xdp_umem_reg {
            addr: p as u64,
            len: umem_len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(|e| ctx("XDP_UMEM_REG", e))?;
        for (opt, what) in [
            (libc::XDP_UMEM_FILL_RING, "fill ring"),
            (libc::XDP_UMEM_COMPLETION_RING, "completion ring"),
            (libc::XDP_RX_RING, "rx ring"),
            (libc::XDP_TX_RING, "tx ring"),
        ] {
            setsockopt(raw, opt, &cfg.ring).map_err(|e| ctx(what, e))?;
        }
        // SAFETY: zeroed offsets are valid; the kernel fills them.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` and `len` are valid for the call.
        let rc = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(ctx("XDP_MMAP_OFFSETS", io::Error::last_os_error()));
        }
        let fill = Ring::<u64>::map(raw, &off.fr, cfg.ring, libc::XDP_UMEM_PGOFF_FILL_RING)
            .map_err(|e| ctx("mmap fill ring", e))?;
        let comp = Ring::<u64>::map(raw, &off.cr, cfg.ring, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
            .map_err(|e| ctx("mmap completion ring", e))?;
        let rx =
            Ring::<libc::xdp_desc>::map(raw, &off.rx, cfg.ring, libc::XDP_PGOFF_RX_RING as u64)
                .map_err(|e| ctx("mmap rx ring", e))?;
        let tx =
            Ring::<libc::xdp_desc>::map(raw, &off.tx, cfg.ring, libc::XDP_PGOFF_TX_RING as u64)
                .map_err(|e| ctx("mmap tx ring", e))?;
        let flags = match mode {
            XskMode::ZeroCopy => libc::XDP_ZEROCOPY,
            XskMode::Copy => libc::XDP_COPY,
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: a valid sockaddr_xdp of the size given.
        let rc = unsafe {
            libc::bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            let what = match mode {
                XskMode::ZeroCopy => "bind (zero-copy)",
                XskMode::Copy => "bind (copy)",
            };
            return Err(ctx(what, io::Error::last_os_error()));
        }
        let half = cfg.frames / 2;
        let fs = u64::from(cfg.frame_size);
        let mut x = Xsk {
            rx,
            tx,
            fill,
            comp,
            fd,
            umem,
            umem_len,
            frame_size: cfg.frame_size,
            tx_free: (half..cfg.frames)
                .rev()
                .map(|i| u64::from(i) * fs)
                .collect(),
            count: FrameCount {
                tx_free: cfg.frames - half,
                ..FrameCount::default()
            },
            mode,
            zerocopy_refused: None,
            ifindex,
            queue,
            counters: XskCounters::default(),
        };
        // The receive half to the kernel (the fill ring holds them all).
        for i in 0..half {
            x.fill_one(u64::from(i) * fs);
        }
        x.publish_fill();
        x.count.kernel_rx = half;
        Ok(x)
    }

    /// The socket's descriptor (for the XSKMAP and for polling).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bound mode.
    pub fn mode(&self) -> XskMode {
        self.mode
    }

    /// Why zero-copy was refused (copy mode only).
    pub fn zerocopy_refused(&self) -> Option<&str> {
        self.zerocopy_refused.as_deref()
    }

    /// Interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Queue.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// Where the frames are.
    pub fn frames(&self) -> FrameCount {
        self.count
    }

    /// Writes `addr` to the fill ring without publishing it. The fill ring
    /// holds every receive frame, so it always has room.
    fn fill_one(&mut self, addr: u64) {
        let p = self.fill.prod().load(Ordering::Relaxed);
        // SAFETY: our slot: the kernel consumes only below the producer.
        unsafe { self.fill.slot(p).write(addr) };
        self.fill.prod().store(p.wrapping_add(1), Ordering::Relaxed);
    }

    fn publish_fill(&mut self) {
        let p = self.fill.prod().load(Ordering::Relaxed);
        self.fill.prod().store(p, Ordering::Release);
    }

    /// Takes up to `max` received frames into `out` (appended); the caller
    /// owns them until [`Xsk::refill`]. Returns how many.
    pub fn recv(&mut self, max: usize, out: &mut Vec<RxDesc>) -> usize {
        let cons = self.rx.cons().load(Ordering::Relaxed);
        let prod = self.rx.prod().load(Ordering::Acquire);
        let n = (prod.wrapping_sub(cons) as usize).min(max);
        for i in 0..n as u32 {
            // SAFETY: between consumer and producer: the kernel wrote it.
            let d = unsafe { self.rx.slot(cons.wrapping_add(i)).read() };
            out.push(RxDesc {
                addr: d.addr,
                len: d.len,
            });
        }
        if n > 0 {
            self.rx
                .cons()
                .store(cons.wrapping_add(n as u32), Ordering::Release);
            self.counters.rx += n as u64;
            self.count.kernel_rx -= n as u32;
            self.count.held += n as u32;
        }
        n
    }

    /// Frame bytes from `addr` to the end of its chunk (the room a datagram
    /// received there may grow into). `addr` must come from [`Xsk::recv`]
    /// or [`Xsk::tx_frame`]; anything else is an empty slice.
    pub fn frame_mut(&mut self, addr: u64) -> &mut [u8] {
        let fs = u64::from(self.frame_size);
        if addr >= self.umem_len as u64 {
            return &mut [];
        }
        let end = (addr / fs + 1) * fs;
        // SAFETY: [addr, end) is within the UMEM; the frame is the caller's
        // (held or building), so the kernel does not touch it meanwhile.
        unsafe {
            std::slice::from_raw_parts_mut(self.umem.0.add(addr as usize), (end - addr) as usize)
        }
    }

    /// Gives received frames back to the kernel for receiving.
    pub fn refill(&mut self, descs: &[RxDesc]) {
        let fs = u64::from(self.frame_size);
        for d in descs {
            // Back to the chunk's start.
            self.fill_one(d.addr - d.addr % fs);
        }
        self.publish_fill();
        self.count.held -= descs.len() as u32;
        self.count.kernel_rx += descs.len() as u32;
    }

    /// A free transmit frame (its chunk's start); write it with
    /// [`Xsk::frame_mut`], then [`Xsk::send`] or [`Xsk::unreserve`] it.
    /// `None` (counted) when all are in flight.
    pub fn tx_frame(&mut self) -> Option<u64> {
        if self.tx_free.is_empty() {
            self.reap();
        }
        match self.tx_free.pop() {
            Some(a) => {
                self.count.tx_free -= 1;
                self.count.tx_building += 1;
                Some(a)
            }
            None => {
                self.counters.tx_no_frame += 1;
                None
            }
        }
    }

    /// Returns a reserved frame unsent.
    pub fn unreserve(&mut self, addr: u64) {
        self.tx_free.push(addr);
        self.count.tx_building -= 1;
        self.count.tx_free += 1;
    }

    /// Queues a reserved frame of `len` bytes on the tx ring (published by
    /// [`Xsk::kick`]). The tx ring holds every transmit frame, so it always
    /// has room.
    pub fn send(&mut self, addr: u64, len: u32) {
        let p = self.tx.prod().load(Ordering::Relaxed);
        // SAFETY: our slot: the kernel consumes only below the producer.
        unsafe {
            self.tx.slot(p).write(libc::xdp_desc {
                addr,
                len,
                options: 0,
            })
        };
        self.tx.prod().store(p.wrapping_add(1), Ordering::Relaxed);
        self.count.tx_building -= 1;
        self.count.tx_in_flight += 1;
        self.counters.tx += 1;
    }

    /// Whether descriptors wait on the tx ring.
    fn tx_pending(&self) -> bool {
        let p = self.tx.prod().load(Ordering::Relaxed);
        self.tx.cons().load(Ordering::Acquire) != p
    }

    /// Publishes queued transmits and kicks the kernel (`sendto`, which in
    /// copy mode sends a bounded batch per call) until the tx ring drains
    /// or the device pushes back; then reaps completions.
    pub fn kick(&mut self) {
        let p = self.tx.prod().load(Ordering::Relaxed);
        self.tx.prod().store(p, Ordering::Release);
        // Each kick moves at least one batch; bounded so a stuck device
        // cannot hold the shard.
        let rounds = (self.tx.size / 16).max(8);
        let mut left = rounds;
        while self.tx_pending() {
            if left == 0 {
                self.counters.kick_stalls += 1;
                break;
            }
            left -= 1;
            self.counters.kicks += 1;
            // SAFETY: sendto with no buffer is AF_XDP's transmit kick.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) => {
                        self.reap();
                    }
                    Some(libc::ENOBUFS) => {
                        self.reap();
                    }
                    _ => {
                        self.counters.kick_errors += 1;
                        break;
                    }
                }
            }
        }
        self.reap();
    }

    /// Moves completed transmit frames back to the free pool.
    pub fn reap(&mut self) {
        let cons = self.comp.cons().load(Ordering::Relaxed);
        let prod = self.comp.prod().load(Ordering::Acquire);
        let n = prod.wrapping_sub(cons);
        for i in 0..n {
            // SAFETY: between consumer and producer: the kernel wrote it.
            let a = unsafe { self.comp.slot(cons.wrapping_add(i)).read() };
            self.tx_free.push(a - a % u64::from(self.frame_size));
        }
        if n > 0 {
            self.comp
                .cons()
                .store(cons.wrapping_add(n), Ordering::Release);
            self.count.tx_in_flight -= n;
            self.count.tx_free += n;
            self.counters.tx_completed += u64::from(n);
        }
    }

    /// The kernel's counters for this socket (drops for a full rx ring or
    /// an empty fill ring, invalid descriptors).
    pub fn kernel_stats(&self) -> io::Result<libc::xdp_statistics> {
        // SAFETY: zeroed statistics are valid; the kernel fills them.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: valid pointers for the call.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(st)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_validated() {
        assert!(XskConfig::default().validate().is_ok());
        let bad = |frames, frame_size, ring| {
            XskConfig {
                frames,
                frame_size,
                ring,
            }
            .validate()
            .is_err()
        };
        assert!(bad(100, 2048, 64));
        assert!(bad(32, 2048, 64));
        assert!(bad(4096, 1500, 2048));
        assert!(bad(4096, 2048, 1024));
        assert!(bad(4096, 2048, 3000));
        assert!(!bad(64, 4096, 32));
    }

    #[test]
    fn frame_count_adds_up() {
        let c = FrameCount {
            kernel_rx: 1,
            held: 2,
            tx_free: 3,
            tx_building: 4,
            tx_in_flight: 5,
        };
        assert_eq!(c.total(), 15);
    }

    #[test]
    fn opening_on_no_interface_fails_cleanly() {
        // Without privileges socket() fails; with them bind() does (no
        // such interface). Either way an error, no panic, nothing leaked.
        assert!(Xsk::open(0x7fff_fff0, 0, XskConfig::default()).is_err());
    }
}
