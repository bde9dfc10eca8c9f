//! SRTP through the running gateway, keyed over ng with SDES: SRTP<->RTP
//! and SRTP<->SRTP with different keys, bit-exact after decryption at the
//! far end; tampered, replayed and truncated packets dropped and counted.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use kolokol::control::bencode::Value;
use kolokol::media::srtp::{SrtpContext, SrtpSuite};
use kolokol::sdp::crypto::CryptoAttr;
use kolokol::sdp::Sdp;

const SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

fn key(seed: u8) -> Vec<u8> {
    (0..30u8).map(|i| i.wrapping_mul(7) ^ seed).collect()
}

fn ctx(key_salt: &[u8]) -> SrtpContext {
    SrtpContext::new(SUITE, &key_salt[..16], &key_salt[16..]).unwrap()
}

fn savp_sdp(addr: std::net::SocketAddr, tag: u32, key_salt: &[u8]) -> String {
    let line = CryptoAttr {
        tag,
        suite: SUITE.sdes_name().into(),
        key_salt: key_salt.to_vec(),
        lifetime: None,
    }
    .to_line();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{line}\r\na=rtcp-mux\r\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

fn reply_sdp(v: &Value) -> Sdp {
    assert_eq!(v.get("result").and_then(Value::as_str), Some("ok"), "{v:?}");
    Sdp::parse(v.get("sdp").and_then(Value::as_bytes).unwrap()).unwrap()
}

fn only_crypto(sdp: &Sdp) -> Vec<CryptoAttr> {
    sdp.media[0].crypto().map(Result::unwrap).collect()
}

fn send_srtp(from: &UdpSocket, c: &mut SrtpContext, seq: u16, to: std::net::SocketAddr) -> Vec<u8> {
    let plain = rtp(seq, 0x5151, seq as u8);
    let mut buf = [0u8; 2048];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = c.protect_rtp(&mut buf, plain.len()).unwrap();
    from.send_to(&buf[..n], to).unwrap();
    plain
}

fn recv_srtp(on: &UdpSocket, c: &mut SrtpContext) -> Vec<u8> {
    let (mut got, _) = recv(on).expect("SRTP packet");
    let len = got.len();
    got.resize(2048, 0);
    let n = c.unprotect_rtp(&mut got, len).expect("unprotects");
    got.truncate(n);
    got
}

#[test]
fn srtp_to_rtp_call() {
    let gw = Gateway::start(14000, 100, "");
    let mut ng = Ng::new(gw.ng);
    let (a, b) = (udp(), udp());
    let a_key = key(1);
    let offer = ng.cmd(
        "offer",
        &[
            ("call-id", s("srtp-rtp")),
            ("from-tag", s("ftag")),
            ("transport-protocol", s("RTP/AVP")),
            (
                "sdp",
                Value::from(savp_sdp(a.local_addr().unwrap(), 1, &a_key)),
            ),
        ],
    );
    let to_b = reply_sdp(&offer);
    assert_eq!(to_b.media[0].proto, "RTP/AVP");
    assert!(
        only_crypto(&to_b).is_empty(),
        "no keys toward the plain side"
    );
    let answer = ng.cmd(
        "answer",
        &[
            ("call-id", s("srtp-rtp")),
            ("from-tag", s("ftag")),
            ("to-tag", s("ttag")),
            (
                "sdp",
                Value::from(sdp_for(b.local_addr().unwrap(), "a=rtcp-mux\r\n")),
            ),
        ],
    );
    let to_a = reply_sdp(&answer);
    assert_eq!(to_a.media[0].proto, "RTP/SAVP");
    let ours = only_crypto(&to_a);
    assert_eq!(ours.len(), 1);
    assert_eq!(
        (ours[0].tag, ours[0].suite.as_str()),
        (1, SUITE.sdes_name())
    );
    assert_ne!(ours[0].key_salt, a_key, "a fresh key of our own");
    let a_dst = std::net::SocketAddr::new(to_a.media[0].address, to_a.media[0].port);
    let b_dst = std::net::SocketAddr::new(to_b.media[0].address, to_b.media[0].port);

    let mut a_tx = ctx(&a_key);
    let mut a_rx = ctx(&ours[0].key_salt);
    // A (SRTP) -> B (plain), across a sequence wrap.
    for seq in [65533u16, 65534, 65535, 0, 1, 2] {
        let plain = send_srtp(&a, &mut a_tx, seq, a_dst);
        assert_eq!(recv(&b).expect("plain at B").0, plain, "seq {seq}");
    }
    // B (plain) -> A (SRTP).
    for seq in 0..5u16 {
        let plain = rtp(seq, 0x7777, 9);
        b.send_to(&plain, b_dst).unwrap();
        assert_eq!(recv_srtp(&a, &mut a_rx), plain);
    }
}

#[test]
fn srtp_to_srtp_with_different_keys_and_bad_packets() {
    let gw = Gateway::start(14100, 100, "");
    let mut ng = Ng::new(gw.ng);
    let (a, b) = (udp(), udp());
    let (a_key, b_key) = (key(1), key(2));
    let offer = ng.cmd(
        "offer",
        &[
            ("call-id", s("srtp-srtp")),
            ("from-tag", s("ftag")),
            (
                "sdp",
                Value::from(savp_sdp(a.local_addr().unwrap(), 5, &a_key)),
            ),
        ],
    );
    let to_b = reply_sdp(&offer);
    assert_eq!(to_b.media[0].proto, "RTP/SAVP");
    let offered = only_crypto(&to_b);
    assert_eq!(offered.len(), 1, "A's one suite is offered to B");
    assert_ne!(offered[0].key_salt, a_key, "B never sees A's key");
    let answer = ng.cmd(
        "answer",
        &[
            ("call-id", s("srtp-srtp")),
            ("from-tag", s("ftag")),
            ("to-tag", s("ttag")),
            (
                "sdp",
                Value::from(savp_sdp(b.local_addr().unwrap(), offered[0].tag, &b_key)),
            ),
        ],
    );
    let to_a = reply_sdp(&answer);
    let answered = only_crypto(&to_a);
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].tag, 5, "the answer to A keeps A's tag");
    assert_ne!(answered[0].key_salt, b_key, "A never sees B's key");
    let a_dst = std::net::SocketAddr::new(to_a.media[0].address, to_a.media[0].port);
    let b_dst = std::net::SocketAddr::new(to_b.media[0].address, to_b.media[0].port);

    let (mut a_tx, mut a_rx) = (ctx(&a_key), ctx(&answered[0].key_salt));
    let (mut b_tx, mut b_rx) = (ctx(&b_key), ctx(&offered[0].key_salt));
    for seq in 0..10u16 {
        let plain = send_srtp(&a, &mut a_tx, seq, a_dst);
        assert_eq!(recv_srtp(&b, &mut b_rx), plain);
        let plain = send_srtp(&b, &mut b_tx, seq, b_dst);
        assert_eq!(recv_srtp(&a, &mut a_rx), plain);
    }

    // Tampered, replayed and truncated packets from A: dropped, counted.
    let plain = rtp(100, 0x5151, 1);
    let mut buf = [0u8; 2048];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = a_tx.protect_rtp(&mut buf, plain.len()).unwrap();
    let good = buf[..n].to_vec();
    let mut tampered = good.clone();
    tampered[30] ^= 0x40;
    a.send_to(&tampered, a_dst).unwrap();
    a.send_to(&good[..20], a_dst).unwrap();
    a.send_to(&good, a_dst).unwrap();
    a.send_to(&good, a_dst).unwrap(); // replay
    assert_eq!(recv_srtp(&b, &mut b_rx), plain, "the genuine one passes");
    assert_eq!(
        drain(&b, Duration::from_millis(200)),
        0,
        "nothing else does"
    );
    let q = ng.cmd("query", &[("call-id", s("srtp-srtp"))]);
    assert_eq!(leg_stat(&q, "ftag", "errors"), 3);
    assert!(gw.wait_metrics(|m| {
        let d = |i: usize| m.drops[i].load(std::sync::atomic::Ordering::Relaxed);
        d(7) == 1 && d(8) == 1
    }));
    // The call keeps flowing.
    let plain = send_srtp(&a, &mut a_tx, 101, a_dst);
    assert_eq!(recv_srtp(&b, &mut b_rx), plain);
}

#[test]
fn srtp_offer_errors_are_replies() {
    let gw = Gateway::start(14200, 100, "");
    let mut ng = Ng::new(gw.ng);
    let a: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
    // SAVP without a usable key.
    let sdp = savp_sdp(a, 1, &key(1)).replace("AES_CM_128_HMAC_SHA1_80", "NULL_CIPHER");
    let r = ng.cmd(
        "offer",
        &[
            ("call-id", s("bad1")),
            ("from-tag", s("f")),
            ("sdp", Value::from(sdp)),
        ],
    );
    assert_eq!(r.get("result").and_then(Value::as_str), Some("error"));
    // A callee that answers plain RTP to an SRTP offer.
    let r = ng.cmd(
        "offer",
        &[
            ("call-id", s("bad2")),
            ("from-tag", s("f")),
            ("sdp", Value::from(savp_sdp(a, 1, &key(1)))),
        ],
    );
    let _ = reply_sdp(&r);
    let r = ng.cmd(
        "answer",
        &[
            ("call-id", s("bad2")),
            ("from-tag", s("f")),
            ("to-tag", s("t")),
            (
                "sdp",
                Value::from(sdp_for("127.0.0.1:4002".parse().unwrap(), "")),
            ),
        ],
    );
    assert_eq!(r.get("result").and_then(Value::as_str), Some("error"));
    assert!(r
        .get("error-reason")
        .and_then(Value::as_str)
        .unwrap()
        .contains("RTP/AVP"));
}
