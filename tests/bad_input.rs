//! Bad input on every interface is counted and dropped or answered with an
//! error; the shard keeps relaying the calls it already has.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use kolokol::control::bencode::Value;

fn result(v: &Value) -> Option<&str> {
    v.get("result").and_then(Value::as_str)
}

#[test]
fn ng_errors_are_replies_not_crashes() {
    let gw = Gateway::start(13000, 100, "");
    let mut ng = Ng::new(gw.ng);
    let r = ng.cmd("frobnicate", &[]);
    assert_eq!(result(&r), Some("error"));
    assert!(r
        .get("error-reason")
        .and_then(Value::as_str)
        .unwrap()
        .contains("frobnicate"));

    // Malformed bencode and a non-dictionary get error replies.
    for body in [&b"d7:command4:ping"[..], b"i42e", b"l4:pinge", b"\xff\xfe"] {
        let mut msg = b"ck1 ".to_vec();
        msg.extend_from_slice(body);
        msg[2] = b'0' + (body.len() % 10) as u8; // distinct cookies
        let reply = ng.raw(&msg).expect("reply to malformed request");
        let (_, b) = kolokol::control::ng::split_cookie(&reply).unwrap();
        let v = kolokol::control::bencode::decode(b).unwrap();
        assert_eq!(result(&v), Some("error"), "{body:?}");
    }
    // Not ng at all (no cookie): dropped silently.
    assert!(ng.raw(b"garbage-without-space").is_none());

    // Offers with missing keys or bad SDP.
    let r = ng.cmd("offer", &[("call-id", s("x"))]);
    assert_eq!(result(&r), Some("error"));
    let r = ng.cmd(
        "offer",
        &[
            ("call-id", s("x")),
            ("from-tag", s("f")),
            ("sdp", s("not sdp")),
        ],
    );
    assert_eq!(result(&r), Some("error"));
    assert!(r
        .get("error-reason")
        .and_then(Value::as_str)
        .unwrap()
        .contains("SDP"));
    let r = ng.cmd(
        "answer",
        &[
            ("call-id", s("nope")),
            ("from-tag", s("f")),
            (
                "sdp",
                Value::from(sdp_for("127.0.0.1:4000".parse().unwrap(), "")),
            ),
        ],
    );
    assert_eq!(result(&r), Some("error"));
    let r = ng.cmd("query", &[("call-id", s("nope"))]);
    assert_eq!(result(&r), Some("error"));
    // The server still works.
    assert_eq!(result(&ng.cmd("ping", &[])), Some("pong"));
}

#[test]
fn retransmitted_request_gets_the_same_reply() {
    let gw = Gateway::start(13100, 100, "");
    let mut ng = Ng::new(gw.ng);
    let mut d = Value::dict();
    d.insert("command", "offer");
    d.insert("call-id", "rtx");
    d.insert("from-tag", "f");
    d.insert("sdp", sdp_for("127.0.0.1:4000".parse().unwrap(), ""));
    let mut msg = b"same-cookie ".to_vec();
    d.encode(&mut msg);
    let first = ng.raw(&msg).unwrap();
    let second = ng.raw(&msg).unwrap();
    assert_eq!(first, second, "a retransmission is answered from the cache");
    let l = ng.cmd("list", &[]);
    assert_eq!(
        l.get("calls").and_then(Value::as_list).map(|c| c.len()),
        Some(1)
    );
}

#[test]
fn garbage_media_and_floods_do_not_stop_other_calls() {
    let gw = Gateway::start(13200, 200, "");
    let mut ng = Ng::new(gw.ng);
    // A healthy call.
    let Call {
        a,
        b,
        to_a: good_to_a,
        ..
    } = call(&mut ng, "good", "", "", &[]);
    // A victim call that receives junk.
    let Call {
        a: c,
        b: d,
        answer: ans2,
        ..
    } = call(&mut ng, "victim", "", "", &[]);
    let (victim_to_c, victim_rtcp, _) = target(&ans2);
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x80, 0x00, 0x01],
        vec![0xff; 100],
        vec![0x40; 40],                              // version 1
        vec![0x8f, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0], // 15 CSRCs, none present
        vec![0x80, 201, 0, 1],                       // RTCP shorter than its header
        vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42],    // STUN
    ];
    let flooder = udp();
    let rounds = 500;
    for round in 0..rounds {
        // Paced so the kernel's socket buffer never overflows: every datagram
        // must reach the shard and be counted there.
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for j in &junk {
            flooder.send_to(j, victim_to_c).unwrap();
        }
        flooder
            .send_to(&[0x80, 201, 0], victim_rtcp.unwrap())
            .unwrap();
    }
    // A flood to ports in the range that have no call (closed ports).
    for port in 13300..13400u16 {
        for _ in 0..20 {
            let _ = flooder.send_to(&rtp(1, 1, 1), ("127.0.0.1", port));
        }
    }
    // The healthy call still relays every packet.
    for seq in 0..50u16 {
        a.send_to(&rtp(seq, 5, 5), good_to_a).unwrap();
    }
    assert_eq!(drain(&b, Duration::from_millis(500)), 50);
    // Nothing of the junk reached the victim's peer.
    assert_eq!(drain(&d, Duration::from_millis(100)), 0);
    // The drops were counted.
    let want = (rounds * (junk.len() + 1)) as u64;
    assert!(
        gw.wait_metrics(|m| m.drops_total() >= want),
        "drops {} < {want}",
        gw.metrics[0].drops_total()
    );
    let q = ng.cmd("query", &[("call-id", s("victim"))]);
    assert_eq!(leg_stat(&q, "ftag", "errors"), want as i64);
    assert_eq!(leg_stat(&q, "ftag", "packets"), 0);
    // And the victim call still works for real media.
    c.send_to(&rtp(1, 9, 9), victim_to_c).unwrap();
    assert_eq!(recv(&d).unwrap().0, rtp(1, 9, 9));
    assert!(gw.metrics[0].rx.load(Ordering::Relaxed) >= want);
}
