//! Thin, checked wrappers over the few Linux calls the shells need that
//! `std` and `socket2` do not offer: CPU pinning, eventfd, file limits and
//! socket-address conversion for `msghdr`s.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Pin the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
    unsafe {
        let mut set: libc::cpu_set_t = mem::zeroed();
        if cpu >= 8 * mem::size_of::<libc::cpu_set_t>() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A non-blocking eventfd (used to wake a shard's ring for commands).
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned by the returned OwnedFd.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Add 1 to an eventfd counter (wakes a reader).
pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64. A failure (counter overflow,
    // EAGAIN) means a wake-up is already pending, which is all we need.
    let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut r: libc::rlimit = mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        r.rlim_cur
    }
}

/// Set DF on every IPv4 datagram of a socket (`IP_PMTUDISC_DO`). The
/// kernel then skips the per-packet IP ID hash (`__ip_select_ident`), which
/// is about 6% of a relay's CPU at 600 calls. Media packets are far below
/// any path MTU; an oversized one fails with EMSGSIZE instead of being
/// fragmented.
pub fn set_dont_fragment_v4(fd: RawFd) -> io::Result<()> {
    let v: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: setsockopt with a caller-owned fd and a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Storage big enough for an IPv4 or IPv6 socket address.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SockAddrBuf {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl Default for SockAddrBuf {
    fn default() -> Self {
        // SAFETY: all-zero is a valid sockaddr_in6 (family AF_UNSPEC).
        unsafe { mem::zeroed() }
    }
}

impl SockAddrBuf {
    /// Fill from a `SocketAddr`; returns the length to put in `msg_namelen`.
    #[inline]
    pub fn set(&mut self, addr: SocketAddr) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                self.v4 = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                self.v6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    /// A pointer for `msg_name`.
    pub fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        (self as *mut SockAddrBuf).cast()
    }
}

/// Decode a kernel-written socket address (`msg_name` bytes).
#[inline]
pub fn sockaddr_from_bytes(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    if i32::from(family) == libc::AF_INET && b.len() >= 8 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if i32::from(family) == libc::AF_INET6 && b.len() >= 28 {
        let port = u16::from_be_bytes([b[2], b[3]]);
        let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[8..24]);
        let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
        let ip = Ipv6Addr::from(o);
        // A v4-mapped source on a v6 socket is reported as plain IPv4.
        if let Some(v4) = ip.to_ipv4_mapped() {
            return Some(SocketAddr::new(IpAddr::V4(v4), port));
        }
        Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)))
    } else {
        None
    }
}

/// Nanoseconds this process's threads have spent on CPU, from
/// `/proc/PID/task/*/schedstat` (the accurate source; tick-based `stat`
/// overstates partial load).
pub fn process_cpu_ns(pid: u32) -> io::Result<u64> {
    let mut total = 0u64;
    for e in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let p = e?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            total += s
                .split_ascii_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for a in ["127.0.0.1:20000", "[::1]:30000", "[2001:db8::7]:5"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut buf = SockAddrBuf::default();
            let len = buf.set(a) as usize;
            // SAFETY: buf is at least len bytes of initialised memory.
            let bytes = unsafe { std::slice::from_raw_parts(buf.as_mut_ptr().cast::<u8>(), len) };
            assert_eq!(sockaddr_from_bytes(bytes), Some(a));
        }
        assert_eq!(sockaddr_from_bytes(&[0; 1]), None);
        assert_eq!(sockaddr_from_bytes(&[9, 9, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn cpu_time_of_self() {
        assert!(process_cpu_ns(std::process::id()).unwrap() > 0);
    }
}
