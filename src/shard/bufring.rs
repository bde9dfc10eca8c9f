//! A provided-buffer ring (io_uring `IORING_REGISTER_PBUF_RING`).
//!
//! The kernel picks a free buffer for each multishot receive; we hand a
//! buffer back only after we are done with it — for a forwarded datagram
//! that is after the send's completion, because the send reads the very
//! same bytes (zero copy between receive and send). Ownership therefore
//! moves: ring -> kernel (receive) -> shard -> kernel (send) -> ring.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// Size of each buffer. Media datagrams fit a 1500-byte MTU; the receive
/// header (16 bytes) and the source address (28 bytes) precede the payload.
pub const BUF_SIZE: usize = 2048;

/// The ring and its buffers.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    bufs: Vec<u8>,
    entries: u16,
    tail: u16,
    /// Buffer group id registered with the kernel.
    pub bgid: u16,
    /// Buffers currently not in the ring (held by the shard or a send).
    pub out: u32,
}

impl BufRing {
    /// Allocate `entries` (a power of two) buffers and register them.
    pub fn new(uring: &IoUring, entries: u16, bgid: u16) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two(), "buffer ring size must be 2^n");
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping, checked below; page-aligned as
        // the kernel requires.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut br = BufRing {
            ring: ptr.cast(),
            ring_bytes,
            bufs: vec![0u8; usize::from(entries) * BUF_SIZE],
            entries,
            tail: 0,
            bgid,
            out: u32::from(entries),
        };
        // SAFETY: the ring memory lives as long as `br`, which must outlive
        // the io_uring instance's use of it (the shard drops the ring first).
        unsafe {
            uring
                .submitter()
                .register_buf_ring_with_flags(ptr as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            br.push(bid);
        }
        br.commit();
        Ok(br)
    }

    /// Put buffer `bid` back (visible to the kernel after [`BufRing::commit`]).
    #[inline]
    pub fn push(&mut self, bid: u16) {
        debug_assert!(bid < self.entries);
        debug_assert!(self.out > 0, "returning more buffers than were taken");
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: idx < entries, inside the mapping.
        let e = unsafe { &mut *self.ring.add(idx) };
        e.set_addr(self.bufs.as_ptr() as u64 + u64::from(bid) * BUF_SIZE as u64);
        e.set_len(BUF_SIZE as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.out -= 1;
    }

    /// Publish pushed buffers to the kernel.
    #[inline]
    pub fn commit(&mut self) {
        // SAFETY: the tail field lives in the first entry's reserved space.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Note that the kernel consumed a buffer (a receive completed into it).
    #[inline]
    pub fn taken(&mut self) {
        self.out += 1;
    }

    /// The bytes of buffer `bid`.
    #[inline]
    pub fn buf(&self, bid: u16) -> &[u8] {
        let at = usize::from(bid) * BUF_SIZE;
        &self.bufs[at..at + BUF_SIZE]
    }

    /// The bytes of buffer `bid`, writable (the shard owns it between its
    /// receive and its send completion).
    #[inline]
    pub fn buf_mut(&mut self, bid: u16) -> &mut [u8] {
        let at = usize::from(bid) * BUF_SIZE;
        &mut self.bufs[at..at + BUF_SIZE]
    }

    /// Address of byte `off` of buffer `bid` (for a send's iovec).
    #[inline]
    pub fn ptr(&self, bid: u16, off: usize) -> *const u8 {
        debug_assert!(off < BUF_SIZE);
        // SAFETY: bid < entries and off < BUF_SIZE keep it in bounds.
        unsafe { self.bufs.as_ptr().add(usize::from(bid) * BUF_SIZE + off) }
    }

    /// Number of buffers.
    pub fn entries(&self) -> u16 {
        self.entries
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; the ring was dropped before us.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
        }
    }
}
