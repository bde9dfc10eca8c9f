//! Shared by the tests on veth topologies in network namespaces
//! (`xdp_veth.rs`, `xdp_offload.rs`, `xdp_afxdp.rs`): running commands,
//! entering a namespace, capturing frames and checking their IPv4/UDP
//! headers and checksums.
#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::process::Command;

use kolokol::media::xdp;

pub fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `f` on a thread that has entered network namespace `ns`; sockets
/// it opens stay in `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                // SAFETY: a valid namespace fd; setns changes only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| "namespace thread panicked".to_string())?
    })
}

/// One's-complement sum of 16-bit big-endian words.
pub fn csum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut bytes = parts.iter().flat_map(|p| p.iter().copied());
    loop {
        match (bytes.next(), bytes.next()) {
            (Some(a), Some(b)) => sum += u32::from(u16::from_be_bytes([a, b])),
            (Some(a), None) => {
                sum += u32::from(u16::from_be_bytes([a, 0]));
                break;
            }
            _ => break,
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Checks an IPv4/UDP packet's checksums; returns (src, dst, payload).
pub fn check_ipv4_udp(p: &[u8]) -> Result<(SocketAddrV4, SocketAddrV4, Vec<u8>), String> {
    if p.len() < 28 || p[0] != 0x45 || p[9] != 17 {
        return Err("not IPv4/UDP without options".into());
    }
    if csum(&[&p[..20]]) != 0 {
        return Err("bad IP header checksum".into());
    }
    let udp = &p[20..];
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if ulen > udp.len() || ulen < 8 {
        return Err("bad UDP length".into());
    }
    let udp = &udp[..ulen];
    if udp[6..8] == [0, 0] {
        return Err("UDP checksum absent".into());
    }
    let len = (ulen as u16).to_be_bytes();
    let pseudo = [&p[12..20], &[0, 17], &len[..]].concat();
    if csum(&[&pseudo, udp]) != 0 {
        return Err("bad UDP checksum".into());
    }
    let a = |o: usize| std::net::Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
    let src = SocketAddrV4::new(a(12), u16::from_be_bytes([udp[0], udp[1]]));
    let dst = SocketAddrV4::new(a(16), u16::from_be_bytes([udp[2], udp[3]]));
    Ok((src, dst, udp[8..].to_vec()))
}

/// An AF_PACKET (cooked, IPv4) socket on the current namespace's `iface`.
pub fn capture(iface: &str) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::FromRawFd;
    let idx = xdp::ifindex(iface).ok_or("no capture interface")?;
    let proto = (libc::ETH_P_IP as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(proto)) };
    if fd < 0 {
        return Err(format!("AF_PACKET: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh socket we own.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_ll is valid; fields set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = idx as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(format!(
            "bind AF_PACKET: {}",
            std::io::Error::last_os_error()
        ));
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 300_000,
    };
    // SAFETY: valid option pointer and size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    big_rcvbuf(fd);
    Ok(owned)
}

/// Room for many packets (root may exceed rmem_max).
pub fn big_rcvbuf(fd: i32) {
    let size: libc::c_int = 32 << 20;
    // SAFETY: valid option pointer and size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
}

/// Three namespaces, `gen [xg0] <-> [xga] gw [xgb] <-> [xs0] sink`, with
/// loopback and both veth pairs up and no addresses yet; deleted on drop
/// (deleting a namespace deletes its veths, and with them their peers).
pub struct Topo {
    pub gen: String,
    pub gw: String,
    pub sink: String,
}

impl Drop for Topo {
    fn drop(&mut self) {
        for ns in [&self.gen, &self.gw, &self.sink] {
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

impl Topo {
    /// Namespaces `<prefix>gen<pid>`, `<prefix>gw<pid>`, `<prefix>sink<pid>`.
    pub fn veths(prefix: &str) -> Result<Topo, String> {
        let pid = std::process::id();
        let t = Topo {
            gen: format!("{prefix}gen{pid}"),
            gw: format!("{prefix}gw{pid}"),
            sink: format!("{prefix}sink{pid}"),
        };
        for ns in [&t.gen, &t.gw, &t.sink] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let (gen, gw, sink) = (t.gen.as_str(), t.gw.as_str(), t.sink.as_str());
        // Created inside gen/gw so nothing ever appears in the host's
        // namespace.
        #[rustfmt::skip]
        let steps: &[&[&str]] = &[
            &["ip", "-n", gen, "link", "add", "xg0", "type", "veth", "peer", "name", "xga", "netns", gw],
            &["ip", "-n", gw, "link", "add", "xgb", "type", "veth", "peer", "name", "xs0", "netns", sink],
            &["ip", "-n", gen, "link", "set", "xg0", "up"],
            &["ip", "-n", gw, "link", "set", "xga", "up"],
            &["ip", "-n", gw, "link", "set", "xgb", "up"],
            &["ip", "-n", sink, "link", "set", "xs0", "up"],
        ];
        for s in steps {
            sh(s)?;
        }
        Ok(t)
    }
}
