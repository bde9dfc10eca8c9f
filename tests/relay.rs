//! The media relay end to end: ng offer/answer, then RTP and RTCP through
//! real sockets on loopback.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use kolokol::control::bencode::Value;

#[test]
fn offer_answer_then_rtp_both_ways() {
    let gw = Gateway::start(12000, 100, "");
    let mut ng = Ng::new(gw.ng);
    let Call {
        a,
        b,
        offer,
        answer,
        ..
    } = call(&mut ng, "c1", "", "", &[]);
    let (to_b_side, b_rtcp, _) = target(&offer);
    let (to_a_side, a_rtcp, _) = target(&answer);
    // Kolokol's own ports from its range, one pair per leg.
    for p in [to_a_side, to_b_side] {
        assert!((12000..12100).contains(&p.port()), "port {p}");
        assert_eq!(p.ip().to_string(), "127.0.0.1");
    }
    assert_ne!(to_a_side.port(), to_b_side.port());
    assert_eq!(a_rtcp.unwrap().port(), to_a_side.port() + 1);
    assert_eq!(b_rtcp.unwrap().port(), to_b_side.port() + 1);

    // A -> relay -> B, payload intact, coming from the port B was given.
    for seq in 0..10 {
        a.send_to(&rtp(seq, 0xaaaa, 0x11), to_a_side).unwrap();
        let (got, from) = recv(&b).expect("B receives");
        assert_eq!(got, rtp(seq, 0xaaaa, 0x11));
        assert_eq!(from, to_b_side, "B sees the relay's port for it");
    }
    // B -> relay -> A.
    for seq in 0..5 {
        b.send_to(&rtp(seq, 0xbbbb, 0x22), to_b_side).unwrap();
        let (got, from) = recv(&a).expect("A receives");
        assert_eq!(got, rtp(seq, 0xbbbb, 0x22));
        assert_eq!(from, to_a_side);
    }
    // query: figures match what was sent.
    let q = ng.cmd("query", &[("call-id", s("c1"))]);
    assert_eq!(leg_stat(&q, "ftag", "packets"), 10);
    assert_eq!(leg_stat(&q, "ftag", "bytes"), 10 * 172);
    assert_eq!(leg_stat(&q, "ttag", "packets"), 5);
    assert_eq!(leg_stat(&q, "ftag", "lost"), 0);
    assert_eq!(
        leg_stat(&q, "ttag", "local port"),
        i64::from(to_b_side.port())
    );
}

#[test]
fn loss_and_query_figures() {
    let gw = Gateway::start(12100, 100, "");
    let mut ng = Ng::new(gw.ng);
    let Call {
        a, b, to_a, offer, ..
    } = call(&mut ng, "c-loss", "", "", &[]);
    let _ = target(&offer);
    // Sequence 0..20 with 5 gaps.
    let mut sent = 0;
    for seq in 0..20u16 {
        if seq % 4 == 1 {
            continue;
        }
        a.send_to(&rtp(seq, 7, 0), to_a).unwrap();
        sent += 1;
    }
    assert_eq!(drain(&b, Duration::from_millis(300)), sent);
    let q = ng.cmd("query", &[("call-id", s("c-loss"))]);
    assert_eq!(leg_stat(&q, "ftag", "packets"), sent as i64);
    // Sequence numbers 1, 5, 9, 13 and 17 never came.
    assert_eq!(leg_stat(&q, "ftag", "lost"), 5);
    assert_eq!(leg_stat(&q, "ftag", "expected"), 20);
    assert!(leg_stat(&q, "ftag", "mos x10") < 45);
}

#[test]
fn latching_learns_nat_source() {
    let gw = Gateway::start(12200, 100, "");
    let mut ng = Ng::new(gw.ng);
    let (a, b) = (udp(), udp());
    // A's SDP claims an address it does not send from (NAT).
    let fake_a: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let (offer, answer) = setup_call(
        &mut ng,
        "c-nat",
        fake_a,
        b.local_addr().unwrap(),
        "",
        "",
        &[],
    );
    let (to_a, _, _) = target(&answer);
    let (to_b, _, _) = target(&offer);
    a.send_to(&rtp(1, 1, 1), to_a).unwrap();
    assert!(recv(&b).is_some(), "first packet relayed");
    // B's media now goes to where A really is, not to the SDP address.
    b.send_to(&rtp(1, 2, 2), to_b).unwrap();
    let (got, _) = recv(&a).expect("A receives at its latched address");
    assert_eq!(got, rtp(1, 2, 2));
    let q = ng.cmd("query", &[("call-id", s("c-nat"))]);
    assert_eq!(leg_stat(&q, "ftag", "latched"), 1);
    assert_eq!(
        leg_stat(&q, "ftag", "port"),
        i64::from(a.local_addr().unwrap().port())
    );
}

#[test]
fn strict_source_drops_strangers() {
    let gw = Gateway::start(12300, 100, "");
    let mut ng = Ng::new(gw.ng);
    let (a, b, stranger) = (udp(), udp(), udp());
    let flags = [("flags", Value::List(vec![s("strict-source")]))];
    let (_offer, answer) = setup_call(
        &mut ng,
        "c-strict",
        a.local_addr().unwrap(),
        b.local_addr().unwrap(),
        "",
        "",
        &flags,
    );
    let (to_a, _, _) = target(&answer);
    stranger.send_to(&rtp(1, 9, 9), to_a).unwrap();
    assert!(recv(&b).is_none(), "stranger's packet must not be relayed");
    a.send_to(&rtp(2, 1, 1), to_a).unwrap();
    assert_eq!(recv(&b).unwrap().0, rtp(2, 1, 1));
    assert!(gw.wait_metrics(|m| m.drops[2].load(std::sync::atomic::Ordering::Relaxed) == 1));
    let q = ng.cmd("query", &[("call-id", s("c-strict"))]);
    assert_eq!(leg_stat(&q, "ftag", "errors"), 1);
}

#[test]
fn rtcp_on_port_plus_one_and_rtcp_mux() {
    let gw = Gateway::start(12400, 100, "");
    let mut ng = Ng::new(gw.ng);
    // Call 1: no mux. A's RTCP socket is at A's port+1 per SDP convention,
    // so give A an explicit a=rtcp line pointing at its RTCP socket.
    let (a, a_rtcp, b, b_rtcp) = (udp(), udp(), udp(), udp());
    let a_extra = format!("a=rtcp:{}\r\n", a_rtcp.local_addr().unwrap().port());
    let b_extra = format!("a=rtcp:{}\r\n", b_rtcp.local_addr().unwrap().port());
    let (offer, answer) = setup_call(
        &mut ng,
        "c-rtcp",
        a.local_addr().unwrap(),
        b.local_addr().unwrap(),
        &a_extra,
        &b_extra,
        &[],
    );
    let (_, to_a_rtcp, _) = target(&answer);
    let (_, to_b_rtcp, _) = target(&offer);
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 5];
    a_rtcp.send_to(&rr, to_a_rtcp.unwrap()).unwrap();
    let (got, from) = recv(&b_rtcp).expect("RTCP relayed to B's RTCP port");
    assert_eq!(got, rr);
    assert_eq!(from, to_b_rtcp.unwrap());
    b_rtcp.send_to(&rr, to_b_rtcp.unwrap()).unwrap();
    assert_eq!(recv(&a_rtcp).unwrap().0, rr);

    // Call 2: both sides mux; RTCP shares the RTP port both ways.
    let Call {
        a,
        b,
        offer,
        answer,
        ..
    } = call(&mut ng, "c-mux", "a=rtcp-mux\r\n", "a=rtcp-mux\r\n", &[]);
    let (to_a, to_a_rtcp, a_mux) = target(&answer);
    let (to_b, _, b_mux) = target(&offer);
    assert!(a_mux && b_mux, "mux offered to B and answered to A");
    assert_eq!(
        to_a_rtcp,
        Some(to_a),
        "a=rtcp equals the RTP port when muxed"
    );
    a.send_to(&rr, to_a).unwrap();
    let (got, from) = recv(&b).expect("muxed RTCP relayed");
    assert_eq!((got.as_slice(), from), (&rr[..], to_b));
    a.send_to(&rtp(1, 3, 3), to_a).unwrap();
    assert_eq!(recv(&b).unwrap().0, rtp(1, 3, 3));
    let q = ng.cmd("query", &[("call-id", s("c-mux"))]);
    // One RTP packet in the RTP stream's figures, one RTCP in the RTCP's.
    assert_eq!(leg_stat(&q, "ftag", "packets"), 1);
    assert_eq!(rtcp_stat(&q, "ftag", "packets"), 1);
}

#[test]
fn media_timeout_ends_call() {
    let gw = Gateway::start(12500, 100, "timeout_s = 1\n");
    let mut ng = Ng::new(gw.ng);
    let Call { a, b, to_a, .. } = call(&mut ng, "c-silent", "", "", &[]);
    let q = ng.cmd("query", &[("call-id", s("c-silent"))]);
    assert_eq!(q.get("result").and_then(Value::as_str), Some("ok"));
    std::thread::sleep(Duration::from_millis(1800));
    let q = ng.cmd("query", &[("call-id", s("c-silent"))]);
    assert_eq!(
        q.get("result").and_then(Value::as_str),
        Some("error"),
        "a silent call is gone after the timeout: {q:?}"
    );
    assert!(gw.wait_metrics(|m| m.timeouts.load(std::sync::atomic::Ordering::Relaxed) == 1));
    a.send_to(&rtp(1, 1, 1), to_a).unwrap();
    assert!(recv(&b).is_none(), "nothing relayed after the call ended");
}

#[test]
fn active_call_survives_timeout_window() {
    let gw = Gateway::start(12600, 100, "timeout_s = 1\n");
    let mut ng = Ng::new(gw.ng);
    let Call { a, b, to_a, .. } = call(&mut ng, "c-busy", "", "", &[]);
    for seq in 0..40u16 {
        a.send_to(&rtp(seq, 1, 1), to_a).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let q = ng.cmd("query", &[("call-id", s("c-busy"))]);
    assert_eq!(q.get("result").and_then(Value::as_str), Some("ok"));
    assert_eq!(drain(&b, Duration::from_millis(200)), 40);
}

#[test]
fn delete_frees_the_ports() {
    let gw = Gateway::start(12700, 100, "");
    let mut ng = Ng::new(gw.ng);
    let Call { to_a, to_b, .. } = call(&mut ng, "c-del", "", "", &[]);
    // While the call is up its ports are taken.
    assert!(UdpSocket::bind(to_a).is_err());
    let d = ng.cmd(
        "delete",
        &[("call-id", s("c-del")), ("from-tag", s("ftag"))],
    );
    assert_eq!(d.get("result").and_then(Value::as_str), Some("ok"), "{d:?}");
    // Ports are released once the shard has closed the sockets.
    let mut freed = false;
    for _ in 0..50 {
        if UdpSocket::bind(to_a).is_ok() && UdpSocket::bind(to_b).is_ok() {
            freed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(freed, "ports {to_a} and {to_b} free after delete");
    let l = ng.cmd("list", &[]);
    assert_eq!(
        l.get("calls").and_then(Value::as_list).map(|c| c.len()),
        Some(0)
    );
    let d = ng.cmd("delete", &[("call-id", s("c-del"))]);
    assert_eq!(d.get("result").and_then(Value::as_str), Some("error"));
}

#[test]
fn ipv6_call() {
    let gw = Gateway::start(12800, 100, "");
    let mut ng = Ng::new(gw.ng);
    let a = UdpSocket::bind("[::1]:0").unwrap();
    let b = UdpSocket::bind("[::1]:0").unwrap();
    for s in [&a, &b] {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    }
    let (offer, answer) = setup_call(
        &mut ng,
        "c-v6",
        a.local_addr().unwrap(),
        b.local_addr().unwrap(),
        "",
        "",
        &[],
    );
    let (to_a, _, _) = target(&answer);
    let (to_b, _, _) = target(&offer);
    assert!(to_a.is_ipv6() && to_b.is_ipv6());
    a.send_to(&rtp(1, 1, 1), to_a).unwrap();
    assert_eq!(recv(&b).unwrap(), (rtp(1, 1, 1), to_b));
    b.send_to(&rtp(1, 2, 2), to_b).unwrap();
    assert_eq!(recv(&a).unwrap(), (rtp(1, 2, 2), to_a));
}

#[test]
fn per_call_port_mode_shares_one_port() {
    let gw = Gateway::start(12900, 100, "port_mode = \"per-call\"\n");
    let mut ng = Ng::new(gw.ng);
    let Call {
        a, b, to_a, to_b, ..
    } = call(&mut ng, "c-pc", "a=rtcp-mux\r\n", "a=rtcp-mux\r\n", &[]);
    assert_eq!(to_a, to_b, "both legs on one local port");
    a.send_to(&rtp(1, 1, 1), to_a).unwrap();
    assert_eq!(recv(&b).unwrap().0, rtp(1, 1, 1));
    b.send_to(&rtp(1, 2, 2), to_b).unwrap();
    assert_eq!(recv(&a).unwrap().0, rtp(1, 2, 2));
}

#[test]
fn mux_offered_to_b_and_rejected() {
    let gw = Gateway::start(13400, 100, "");
    let mut ng = Ng::new(gw.ng);
    let (a, b, b_rtcp) = (udp(), udp(), udp());
    let b_extra = format!("a=rtcp:{}\r\n", b_rtcp.local_addr().unwrap().port());
    let (offer, answer) = setup_call(
        &mut ng,
        "c-mux-rej",
        a.local_addr().unwrap(),
        b.local_addr().unwrap(),
        "a=rtcp-mux\r\n",
        &b_extra,
        &[],
    );
    let (to_b, to_b_rtcp, offered) = target(&offer);
    let (to_a, _, a_mux) = target(&answer);
    assert!(offered && a_mux);
    // Mux was offered to B, so its RTCP port is the RTP port: one socket.
    assert_eq!(to_b_rtcp, Some(to_b));
    // B rejected mux: it still sends RTCP to that port, and gets A's RTCP
    // on its own RTCP port.
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 5];
    b_rtcp.send_to(&rr, to_b).unwrap();
    assert_eq!(recv(&a).unwrap(), (rr.to_vec(), to_a));
    a.send_to(&rr, to_a).unwrap();
    assert_eq!(recv(&b_rtcp).unwrap(), (rr.to_vec(), to_b));
    a.send_to(&rtp(1, 1, 1), to_a).unwrap();
    assert_eq!(recv(&b).unwrap().0, rtp(1, 1, 1));
}

/// Receive one datagram and the TOS byte it carried (IP_RECVTOS).
fn recv_tos(s: &UdpSocket) -> Option<(Vec<u8>, u8)> {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    let one: libc::c_int = 1;
    let mut buf = [0u8; 2048];
    let mut cmsg = [0u64; 16];
    // SAFETY: plain setsockopt/recvmsg on a live socket with buffers that
    // outlive the calls; the cmsg walk stays inside `cmsg`.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_RECVTOS,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return None;
        }
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_TOS {
                let tos = *libc::CMSG_DATA(c);
                return Some((buf[..n as usize].to_vec(), tos));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Some((buf[..n as usize].to_vec(), 0))
    }
}

#[test]
fn dscp_marks_relayed_media() {
    // EF (46) is the default; the TOS byte carries DSCP << 2.
    let gw = Gateway::start(13500, 100, "dscp = 46\n");
    let mut ng = Ng::new(gw.ng);
    let Call { a, b, to_a, .. } = call(&mut ng, "c-dscp", "", "", &[]);
    a.send_to(&rtp(1, 1, 1), to_a).unwrap();
    let (got, tos) = recv_tos(&b).expect("relayed packet");
    assert_eq!(got, rtp(1, 1, 1));
    assert_eq!(tos >> 2, 46, "DSCP EF on relayed media (TOS {tos:#x})");

    // dscp = 0 leaves the TOS byte alone.
    let gw0 = Gateway::start(13600, 100, "dscp = 0\n");
    let mut ng0 = Ng::new(gw0.ng);
    let Call {
        a: c,
        b: d,
        to_a: to_c,
        ..
    } = call(&mut ng0, "c-dscp0", "", "", &[]);
    c.send_to(&rtp(1, 1, 1), to_c).unwrap();
    let (_, tos) = recv_tos(&d).expect("relayed packet");
    assert_eq!(tos >> 2, 0);
}
