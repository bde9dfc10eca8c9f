//! The XDP relay on a veth topology the test builds itself (issue 7):
//!
//! ```text
//!   gen [xg0 10.77.1.2] <-> [xga 10.77.1.1] gw [xgb 10.77.2.1] <-> [xs0 10.77.2.2] sink
//! ```
//!
//! The relay program is attached to gw's `xga`; one entry relays what gen
//! sends from 10.77.1.2:4000 to gw's 10.77.1.1:30000 out of `xgb` as
//! 10.77.2.1:30002 -> 10.77.2.2:5000. The sink sees every packet, payload
//! bit-exact, IP and UDP checksums valid (checked on an AF_PACKET capture
//! and by its UDP socket), and the entry's counters moved by N; gw's own
//! socket on :30000 saw nothing. A spoofed source with strict on is dropped
//! and counted. Without the entry, packets go to gw's stack (its socket gets
//! them) and not to the sink.
//!
//! Needs root, iproute2, ethtool and a build with the XDP program (clang and
//! libbpf-dev; scripts/test.sh installs them); skips with the reason
//! otherwise. Namespaces are named after the process id and removed at the
//! end, also on failure.

use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use kolokol::media::xdp::{self, AttachMode, Egress, XdpEntry, XdpRelay};
use netns::{big_rcvbuf, capture, check_ipv4_udp, csum, in_netns, sh, Topo};

mod netns;

const N: usize = 200;

/// The topology of this test: addresses on the veths, complete checksums
/// from the generator.
fn build_topo() -> Result<Topo, String> {
    let t = Topo::veths("kx")?;
    let (gen, gw, sink) = (t.gen.as_str(), t.gw.as_str(), t.sink.as_str());
    #[rustfmt::skip]
    let steps: &[&[&str]] = &[
        &["ip", "-n", gen, "addr", "add", "10.77.1.2/24", "dev", "xg0"],
        &["ip", "-n", gw, "addr", "add", "10.77.1.1/24", "dev", "xga"],
        &["ip", "-n", gw, "addr", "add", "10.77.2.1/24", "dev", "xgb"],
        &["ip", "-n", sink, "addr", "add", "10.77.2.2/24", "dev", "xs0"],
        // veth hands the peer partial checksums: the generator
        // must send complete ones for an XDP rewrite to be valid.
        &["ip", "netns", "exec", gen, "ethtool", "-K", "xg0", "tx", "off"],
    ];
    for s in steps {
        sh(s)?;
    }
    Ok(t)
}

fn skip(why: &str) {
    eprintln!("SKIPPED xdp_veth: {why}");
}

fn recv_packets(fd: &std::os::fd::OwnedFd, want: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            out.push(buf[..n as usize].to_vec());
        }
    }
    out
}

fn drain_udp(s: &UdpSocket, want: usize) -> Vec<(Vec<u8>, std::net::SocketAddr)> {
    drain_udp_for(s, want, Duration::from_secs(3))
}

/// Nothing arrives on `s` within half a second.
fn silent(s: &UdpSocket) -> bool {
    drain_udp_for(s, 1, Duration::from_millis(500)).is_empty()
}

fn drain_udp_for(
    s: &UdpSocket,
    want: usize,
    wait: Duration,
) -> Vec<(Vec<u8>, std::net::SocketAddr)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while out.len() < want && Instant::now() < deadline {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            out.push((buf[..n].to_vec(), from));
        }
    }
    out
}

/// An RTP packet (PCMU, 160 bytes of payload) with sequence `seq`.
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8).wrapping_mul(31)));
    p
}

#[test]
fn xdp_relays_rtp_across_veth() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("not root (network namespaces and XDP need it)");
    }
    if !xdp::built_in() {
        return skip("XDP not built in (install clang and libbpf-dev; scripts/test.sh does)");
    }
    for tool in ["ip", "ethtool"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return skip(&format!("{tool} not installed"));
        }
    }
    let topo = match build_topo() {
        Ok(t) => t,
        Err(e) => return skip(&format!("cannot build the veth topology: {e}")),
    };
    run(&topo);
}

fn run(topo: &Topo) {
    let gw_local: SocketAddrV4 = "10.77.1.1:30000".parse().unwrap();
    let gw_egress: SocketAddrV4 = "10.77.2.1:30002".parse().unwrap();
    let gen_src: SocketAddrV4 = "10.77.1.2:4000".parse().unwrap();
    let sink_dst: SocketAddrV4 = "10.77.2.2:5000".parse().unwrap();

    // gw: load, attach the relay to xga (and XDP_PASS on xgb, the side
    // redirected frames leave by), the socket the stack delivers to.
    let (relay, gw_sock, egress) = in_netns(&topo.gw, || {
        let mut r = match XdpRelay::load() {
            Ok(r) => r,
            Err(e) => return Err(format!("{e}")),
        };
        let a = r.attach("xga").map_err(|e| e.to_string())?;
        eprintln!(
            "xdp_veth: relay on xga in {:?} mode{}",
            a.mode,
            a.native_refused
                .as_ref()
                .map(|w| format!(" (native refused: {w})"))
                .unwrap_or_default()
        );
        let native = a.mode == AttachMode::Native;
        r.attach_pass("xgb").map_err(|e| e.to_string())?;
        let sock = UdpSocket::bind(gw_local).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let eg = Egress {
            ifindex: xdp::ifindex("xgb").ok_or("xgb")?,
            dst_mac: [0; 6],
            src_mac: xdp::mac("xgb").ok_or("xgb mac")?,
        };
        let _ = native;
        Ok((r, sock, eg))
    })
    .expect("enter gw")
    .unwrap_or_else(|e| panic!("XDP on gw: {e}"));
    let mut relay = relay;

    // sink: XDP_PASS on xs0 (veth needs a program on the receiving peer for
    // native redirect), a capture and the UDP socket.
    let (cap, sink_sock, sink_mac) = in_netns(&topo.sink, || {
        let cap = capture("xs0").expect("capture");
        let sock = UdpSocket::bind(sink_dst).expect("sink socket");
        big_rcvbuf(sock.as_raw_fd());
        big_rcvbuf(cap.as_raw_fd());
        sock.set_read_timeout(Some(Duration::from_millis(200))).ok();
        (cap, sock, xdp::mac("xs0").expect("xs0 mac"))
    })
    .expect("enter sink");
    in_netns(&topo.sink, || relay.attach_pass("xs0").map(|_| ()))
        .expect("enter sink")
        .expect("XDP_PASS on xs0");

    let (gen_sock, spoof_sock) = in_netns(&topo.gen, || {
        (
            UdpSocket::bind(gen_src).expect("gen socket"),
            UdpSocket::bind("10.77.1.2:4001").expect("spoof socket"),
        )
    })
    .expect("enter gen");
    // Resolve gw's MAC on gen first (ARP, and this datagram to a port with
    // no entry, pass through the program to the stack).
    gen_sock.send_to(b"arp", "10.77.1.1:9").expect("prime");
    std::thread::sleep(Duration::from_millis(200));

    let entry = XdpEntry {
        local: gw_local,
        expect_src: Some(gen_src),
        strict: true,
        new_src: gw_egress,
        new_dst: sink_dst,
        egress: Some(Egress {
            dst_mac: sink_mac,
            ..egress
        }),
    };
    relay.insert(&entry).expect("insert");
    assert_eq!(relay.counters(gw_local).unwrap(), Some(Default::default()));

    // N packets relayed.
    let sent: Vec<Vec<u8>> = (0..N as u16).map(rtp).collect();
    for p in &sent {
        gen_sock.send_to(p, gw_local).expect("send");
        std::thread::sleep(Duration::from_micros(200));
    }
    let got = drain_udp(&sink_sock, N);
    let caps = recv_packets(&cap, N);
    if got.len() != N || caps.len() != N {
        let seqs: Vec<u16> = got
            .iter()
            .map(|(p, _)| u16::from_be_bytes([p[2], p[3]]))
            .collect();
        panic!(
            "sink's socket received {} of {N}, capture {}: seqs {seqs:?}; counters {:?}, stats {:?}",
            got.len(),
            caps.len(),
            relay.counters(gw_local),
            relay.stats()
        );
    }
    for ((payload, from), want) in got.iter().zip(&sent) {
        assert_eq!(payload, want, "payload differs");
        assert_eq!(*from, std::net::SocketAddr::V4(gw_egress));
    }
    assert_eq!(caps.len(), N, "captured {} of {N}", caps.len());
    for (p, want) in caps.iter().zip(&sent) {
        let (src, dst, payload) = check_ipv4_udp(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((src, dst), (gw_egress, sink_dst));
        assert_eq!(&payload, want);
    }
    let c = relay.counters(gw_local).unwrap().expect("counters");
    assert_eq!(c.packets, N as u64, "{c:?}");
    assert_eq!(c.bytes, (N * (14 + 20 + 8 + 172)) as u64, "{c:?}");
    assert!(c.last_seen_ns > 0);
    assert_eq!(c.src_drops, 0);
    assert!(silent(&gw_sock), "gw's socket saw a relayed packet");
    eprintln!("xdp_veth: {N} relayed, checksums valid; counters {c:?}");

    // Strict source: a spoofed source port is dropped and counted.
    spoof_sock.send_to(&rtp(9999), gw_local).expect("spoof");
    std::thread::sleep(Duration::from_millis(300));
    let c2 = relay.counters(gw_local).unwrap().expect("counters");
    assert_eq!(c2.src_drops, 1, "{c2:?}");
    assert_eq!(c2.packets, N as u64);
    assert!(silent(&sink_sock), "spoofed packet reached the sink");
    assert!(silent(&gw_sock), "spoofed packet reached gw's stack");

    // Removed: packets go to gw's stack (its socket), not to the sink.
    relay.remove(gw_local).expect("remove");
    assert_eq!(relay.counters(gw_local).unwrap(), None);
    let before = relay.stats().unwrap();
    gen_sock.send_to(&rtp(7), gw_local).expect("send");
    let at_gw = drain_udp(&gw_sock, 1);
    assert_eq!(at_gw.len(), 1, "packet did not reach gw's stack");
    assert_eq!(at_gw[0].0, rtp(7));
    assert!(silent(&sink_sock), "forwarded after removal");
    let after = relay.stats().unwrap();
    assert!(after.pass_no_entry > before.pass_no_entry, "{after:?}");
    assert_eq!(after.forwarded, N as u64, "{after:?}");
    assert_eq!(after.drop_source, 1);
    eprintln!("xdp_veth: strict drop counted, removal passes to the stack; stats {after:?}");

    // BPF_PROG_TEST_RUN: the program's own cost per forwarded packet. The
    // kernel reruns the program on the frame it rewrote, so the entry maps
    // the frame onto itself (same addresses; the whole lookup, source
    // check, checksum update and counting still run).
    let loop_entry = XdpEntry {
        new_src: gen_src,
        new_dst: gw_local,
        ..entry
    };
    relay.insert(&loop_entry).expect("insert");
    let frame = ethernet_ipv4_udp(gen_src, gw_local, &rtp(1));
    let before = relay.stats().unwrap();
    let runs = 100_000u32;
    let (action, per_run) = relay.test_run(&frame, runs).expect("test run");
    let after = relay.stats().unwrap();
    eprintln!("xdp_veth: BPF_PROG_TEST_RUN: action {action}, {per_run:?} per forwarded packet");
    assert!(
        action == 3 || action == 4,
        "XDP_TX or XDP_REDIRECT, got {action}"
    );
    assert_eq!(after.forwarded - before.forwarded, u64::from(runs));
    relay.remove(gw_local).expect("remove");

    // Detach in gw's namespace, then the namespaces go.
    in_netns(&topo.gw, move || drop(relay)).expect("enter gw");
}

/// A complete Ethernet/IPv4/UDP frame with valid checksums.
fn ethernet_ipv4_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let ulen = (8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&(20 + ulen).to_be_bytes());
    ip.extend(src.ip().octets());
    ip.extend(dst.ip().octets());
    let c = csum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = Vec::new();
    udp.extend(src.port().to_be_bytes());
    udp.extend(dst.port().to_be_bytes());
    udp.extend(ulen.to_be_bytes());
    udp.extend([0, 0]);
    udp.extend(payload);
    let pseudo = [&ip[12..20], &[0, 17], &ulen.to_be_bytes()[..]].concat();
    let uc = csum(&[&pseudo, &udp]);
    udp[6..8].copy_from_slice(&uc.to_be_bytes());
    f.extend(ip);
    f.extend(udp);
    f
}
