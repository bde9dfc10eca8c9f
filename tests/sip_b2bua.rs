//! Kolokol as a SIP B2BUA, end to end over UDP and TCP: the real `kolokol` binary
//! between a SIPp caller and one or two SIPp trunks.
//!
//! ```text
//!   SIPp caller ──SIP──> kolokol (127.0.0.1) ──SIP──> SIPp trunk(s)
//!   media 127.0.0.2        relay ports 127.0.0.1      media 127.0.0.3 / .4
//!        └──────RTP──────> [media range] <──────RTP──────┘ (-rtp_echo)
//! ```
//!
//! Every test writes its own config (SIP, ng and media ports picked free in
//! 10000-19999, see [`Ports`]), starts the gateway, waits until it answers
//! OPTIONS, starts the trunk UAS(es) and then the caller with scenarios
//! from `tests/sipp/b2bua/`, waits (bounded) for SIPp to exit, and asserts
//! on SIPp's exit status and `-trace_stat` counters, on the `<log>` lines
//! each side wrote (`-trace_logs`) and, for media, on the counters the
//! gateway prints when it stops (SIGTERM). Every SIPp also writes its
//! messages (`-trace_msg`) into the test's directory, which is kept and
//! printed after a failure (`KOLOKOL_IT_KEEP_LOGS=1` keeps it after a pass).
//!
//! SIPp must be installed (Debian `sip-tester`); the test never installs it
//! and fails with a clear message when it is missing. The tests run in
//! parallel with each other and with other test binaries: nothing uses a
//! fixed port.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod harness;
use harness::{
    find_tool, nanos, sipp_final_stats, tail, wait_tcp_listen, wait_udp_bound, xorshift, Harness,
    ProcId,
};

/// The number every caller dials (numeric user part: routed to the trunks).
const NUMBER: &str = "4930123456";

const SIP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const RELAY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const UAC_MEDIA_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const TRUNK_MEDIA_IP: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)];

/// RTP packets the caller streams per call in the media test (160-byte
/// PCMU payloads, 20 ms apart: 3 s of audio).
const AUDIO_PACKETS: usize = 150;
/// How long a SIPp process may run before the test gives up on it.
const SIPP_LIMIT: Duration = Duration::from_secs(25);

// ---------------------------------------------------------------------------
// 1. Basic call with RTP

/// One call, 3 s of G.711 from the caller, echoed by the trunk. The SDP
/// each side receives must point at the gateway's relay (127.0.0.1, a port
/// in its media range), never at the other party, and the gateway must have
/// relayed the audio both ways.
#[test]
fn basic_call_relays_rtp_and_rewrites_sdp() {
    basic_call_relays_rtp_and_rewrites_sdp_on(Tr::Udp);
}

/// [`basic_call_relays_rtp_and_rewrites_sdp`] over TCP.
#[test]
fn basic_call_relays_rtp_and_rewrites_sdp_over_tcp() {
    basic_call_relays_rtp_and_rewrites_sdp_on(Tr::Tcp);
}

fn basic_call_relays_rtp_and_rewrites_sdp_on(tr: Tr) {
    let mut t = Test::new("basic", tr);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_answer.xml", 1);
    let uac = t.caller("uac_call.xml", 1, &["-d", "4000"]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);

    let media = t.ports.media_min..=t.ports.media_max;
    let offers = t.log_lines("trunk0", "UAS_OFFER_SDP");
    let answers = t.log_lines("caller", "UAC_ANSWER_SDP");
    assert_eq!(offers.len(), 1, "offers logged by the trunk: {offers:?}");
    assert_eq!(
        answers.len(),
        1,
        "answers logged by the caller: {answers:?}"
    );
    let (oc, om) = (&offers[0]["c"], port_of(&offers[0]["m"]));
    let (ac, am) = (&answers[0]["c"], port_of(&answers[0]["m"]));
    assert_eq!(
        oc,
        &RELAY_IP.to_string(),
        "offer reaching the trunk: c= is not the gateway's address \
         (the caller's media address is {UAC_MEDIA_IP})"
    );
    assert!(
        media.contains(&om) && om != t.ports.uac_media,
        "offer reaching the trunk: m=audio {om} is not in the gateway's media range \
         {media:?} (the caller's own port is {})",
        t.ports.uac_media
    );
    assert_eq!(
        ac,
        &RELAY_IP.to_string(),
        "answer reaching the caller: c= is not the gateway's address \
         (the trunk's media address is {})",
        TRUNK_MEDIA_IP[0]
    );
    assert!(
        media.contains(&am) && am != t.ports.trunk_media[0],
        "answer reaching the caller: m=audio {am} is not in the gateway's media range \
         {media:?} (the trunk's own port is {})",
        t.ports.trunk_media[0]
    );
    assert_ne!(
        om, am,
        "the two legs share one relay port in per-leg mode (offer to the trunk and \
         answer to the caller both say {om})"
    );

    // The caller sent AUDIO_PACKETS; the trunk only echoes what the relay
    // forwarded to it, so the relay sees up to 2x that in and sends up to
    // 2x that out. One direction alone stays at AUDIO_PACKETS.
    let c = t.stop_gateway(gw);
    let want = (AUDIO_PACKETS as u64) * 2 * 80 / 100;
    assert!(
        c.rx >= want && c.tx >= want,
        "gateway relayed rx {} / tx {} RTP packets; want >= {want} each (caller sent \
         {AUDIO_PACKETS}, the trunk echoes them, so both directions must pass): {c:?}",
        c.rx,
        c.tx
    );
}

/// Over TCP SIPp carries every call on one connection, which one shard
/// accepted; with two shards about half the calls belong to the other one
/// (by Call-ID), which gets their messages handed over and must send its
/// answers back through the connection's shard. All calls complete, and
/// the gateway says it routed answers through the other shard.
#[test]
fn tcp_connection_shared_by_two_shards() {
    let mut t = Test::new("tcp-shards", Tr::Tcp);
    t.shards = 2;
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_answer.xml", 12);
    let uac = t.caller("uac_call.xml", 12, &["-r", "10", "-d", "1000"]);
    t.expect_success(uac, 12);
    t.expect_success(uas, 12);
    t.stop_gateway(gw);
    let err = fs::read_to_string(t.h.dir.join("kolokol.err")).unwrap_or_default();
    let sum = |key: &str| -> u64 {
        err.split(key)
            .skip(1)
            .filter_map(|r| {
                r.split([',', ' ', '}'])
                    .find(|w| !w.is_empty())?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let (relayed, taken) = (sum("relayed_out: "), sum("taken_over: "));
    assert!(
        relayed > 0 && taken > 0,
        "no message crossed shards (handed over {taken}, answers sent back through the \
         connection's shard {relayed}); 12 calls on one connection over 2 shards should"
    );
}

// ---------------------------------------------------------------------------
// 2. and 3. Hang-ups

/// The caller sends BYE: the trunk must receive a BYE and answer 200, and
/// the caller's BYE must be answered 200.
#[test]
fn caller_hangs_up() {
    caller_hangs_up_on(Tr::Udp);
}

/// [`caller_hangs_up`] over TCP.
#[test]
fn caller_hangs_up_over_tcp() {
    caller_hangs_up_on(Tr::Tcp);
}

fn caller_hangs_up_on(tr: Tr) {
    let mut t = Test::new("caller-bye", tr);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_answer.xml", 1);
    let uac = t.caller("uac_call.xml", 1, &["-d", "1000"]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    let byes = t.log_lines("trunk0", "UAS_GOT_BYE");
    assert_eq!(byes.len(), 1, "BYEs that reached the trunk: {byes:?}");
    let ok = t.log_lines("caller", "UAC_BYE_OK");
    assert_eq!(ok.len(), 1, "200s to the caller's BYE: {ok:?}");
    t.assert_msg_count("trunk0", "BYE sip:", 1);
    t.stop_gateway(gw);
}

/// The trunk sends BYE after a second: the caller must receive a BYE and
/// answer it, and the trunk's BYE must be answered 200.
#[test]
fn callee_hangs_up() {
    callee_hangs_up_on(Tr::Udp);
}

/// [`callee_hangs_up`] over TCP.
#[test]
fn callee_hangs_up_over_tcp() {
    callee_hangs_up_on(Tr::Tcp);
}

fn callee_hangs_up_on(tr: Tr) {
    let mut t = Test::new("callee-bye", tr);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_hangup.xml", 1);
    let uac = t.caller("uac_callee_hangup.xml", 1, &[]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    let byes = t.log_lines("caller", "UAC_GOT_BYE");
    assert_eq!(byes.len(), 1, "BYEs that reached the caller: {byes:?}");
    let ok = t.log_lines("trunk0", "UAS_BYE_OK");
    assert_eq!(ok.len(), 1, "200s to the trunk's BYE: {ok:?}");
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 4. CANCEL

/// The trunk rings and never answers; the caller cancels after the 180. The
/// caller gets 200 for the CANCEL and 487 for the INVITE; the trunk gets a
/// CANCEL, answers 200 and 487, and gets the ACK for its 487.
#[test]
fn cancel_while_ringing() {
    cancel_while_ringing_on(Tr::Udp);
}

/// [`cancel_while_ringing`] over TCP.
#[test]
fn cancel_while_ringing_over_tcp() {
    cancel_while_ringing_on(Tr::Tcp);
}

fn cancel_while_ringing_on(tr: Tr) {
    let mut t = Test::new("cancel", tr);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_ring_cancel.xml", 1);
    let uac = t.caller("uac_cancel.xml", 1, &[]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    for tag in ["UAC_GOT_180", "UAC_CANCEL_OK", "UAC_GOT_487"] {
        let l = t.log_lines("caller", tag);
        assert_eq!(l.len(), 1, "caller {tag}: {l:?}");
    }
    for tag in ["UAS_GOT_INVITE", "UAS_GOT_CANCEL", "UAS_GOT_ACK_487"] {
        let l = t.log_lines("trunk0", tag);
        assert_eq!(l.len(), 1, "trunk {tag}: {l:?}");
    }
    t.stop_gateway(gw);
}

/// The caller cancels as soon as it has the gateway's 100 Trying, before
/// the trunk has said anything; the trunk rings a second later. The
/// gateway may CANCEL the trunk only after that provisional response
/// (RFC 3261 §9.1), and must then do so: the caller gets 200 and 487, the
/// trunk a CANCEL after its 180.
#[test]
fn cancel_before_trunk_rings() {
    let mut t = Test::new("cancel-early", Tr::Udp);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_late_ring_cancel.xml", 1);
    let uac = t.caller("uac_cancel_early.xml", 1, &[]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    for tag in ["UAC_GOT_100", "UAC_CANCEL_OK", "UAC_GOT_487"] {
        let l = t.log_lines("caller", tag);
        assert_eq!(l.len(), 1, "caller {tag}: {l:?}");
    }
    for tag in ["UAS_GOT_INVITE", "UAS_GOT_CANCEL", "UAS_GOT_ACK_487"] {
        let l = t.log_lines("trunk0", tag);
        assert_eq!(l.len(), 1, "trunk {tag}: {l:?}");
    }
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 5. and 6. Failover

/// Trunk 1 (priority 10) answers 503; the call must go to trunk 2
/// (priority 20) and complete there.
#[test]
fn failover_on_503() {
    failover_on_503_on(Tr::Udp);
}

/// [`failover_on_503`] over TCP.
#[test]
fn failover_on_503_over_tcp() {
    failover_on_503_on(Tr::Tcp);
}

fn failover_on_503_on(tr: Tr) {
    let mut t = Test::new("failover-503", tr);
    let gw = t.gateway(&[Trunk::new("t1", 0), Trunk::new("t2", 1)]);
    let uas1 = t.trunk_uas(0, "uas_503.xml", 1);
    let uas2 = t.trunk_uas(1, "uas_answer.xml", 1);
    let uac = t.caller("uac_call.xml", 1, &["-d", "1000"]);
    t.expect_success(uac, 1);
    t.expect_success(uas1, 1);
    t.expect_success(uas2, 1);
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_INVITE").len(), 1);
    assert_eq!(
        t.log_lines("trunk0", "UAS_GOT_ACK_503").len(),
        1,
        "the 503 was not ACKed"
    );
    let offers = t.log_lines("trunk1", "UAS_OFFER_SDP");
    assert_eq!(offers.len(), 1, "INVITEs at the second trunk: {offers:?}");
    assert_eq!(t.log_lines("trunk1", "UAS_GOT_BYE").len(), 1);
    assert_eq!(t.log_lines("caller", "UAC_ANSWER_SDP").len(), 1);
    t.stop_gateway(gw);
}

/// Trunk 1 receives the INVITE and says nothing at all; after its
/// `timeout_ms` (1500) the call must go to trunk 2 and complete there.
#[test]
fn failover_on_timeout() {
    failover_on_timeout_on(Tr::Udp);
}

/// [`failover_on_timeout`] over TCP.
#[test]
fn failover_on_timeout_over_tcp() {
    failover_on_timeout_on(Tr::Tcp);
}

fn failover_on_timeout_on(tr: Tr) {
    let mut t = Test::new("failover-timeout", tr);
    let mut t1 = Trunk::new("t1", 0);
    t1.timeout_ms = 1500;
    let gw = t.gateway(&[t1, Trunk::new("t2", 1)]);
    let uas1 = t.trunk_uas(0, "uas_silent.xml", 1);
    let uas2 = t.trunk_uas(1, "uas_answer.xml", 1);
    let started = Instant::now();
    let uac = t.caller("uac_call.xml", 1, &["-d", "1000"]);
    t.expect_success(uac, 1);
    let took = started.elapsed();
    t.expect_success(uas2, 1);
    t.expect_success(uas1, 1);
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_INVITE").len(), 1);
    assert_eq!(t.log_lines("trunk1", "UAS_OFFER_SDP").len(), 1);
    assert_eq!(t.log_lines("trunk1", "UAS_GOT_BYE").len(), 1);
    assert_eq!(t.log_lines("caller", "UAC_ANSWER_SDP").len(), 1);
    // Trunk 2 is tried when trunk 1's timeout_ms has run out: not before,
    // and not only at Timer B (32 s).
    let first = t.first_received_at("trunk0", "INVITE ");
    let second = t.first_received_at("trunk1", "INVITE ");
    let gap = second - first;
    assert!(
        (1.4..3.0).contains(&gap),
        "the INVITE reached trunk 2 {gap:.3} s after trunk 1 (timeout_ms = 1500)"
    );
    // 1.5 s of silence on trunk 1 plus the 1 s hold.
    assert!(
        took >= Duration::from_millis(2400),
        "the call ended after {took:?}: too soon for a 1.5 s trunk timeout and a 1 s hold"
    );
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 7. Trunk call limit

/// The only trunk has `max_calls = 2`; the caller places 3 overlapping 3 s
/// calls 200 ms apart. The first two must be answered; exactly the third
/// must get 503 with a Retry-After, and never reach the trunk. Once they
/// have ended, two more overlapping calls must both be answered: the
/// trunk's slots are given back (also for the refused call).
#[test]
fn trunk_max_calls_gives_503() {
    trunk_max_calls_gives_503_on(Tr::Udp);
}

/// [`trunk_max_calls_gives_503`] over TCP.
#[test]
fn trunk_max_calls_gives_503_over_tcp() {
    trunk_max_calls_gives_503_on(Tr::Tcp);
}

fn trunk_max_calls_gives_503_on(tr: Tr) {
    let mut t = Test::new("max-calls", tr);
    let mut t1 = Trunk::new("t1", 0);
    t1.max_calls = 2;
    let gw = t.gateway(&[t1]);
    let uas = t.trunk_uas(0, "uas_answer.xml", 4);
    let uac = t.caller(
        "uac_limit.xml",
        3,
        &["-r", "5", "-rp", "1000", "-d", "3000"],
    );
    t.expect_success(uac, 3);
    let answered: Vec<String> = t
        .log_lines("caller", "UAC_ANSWERED")
        .into_iter()
        .map(|l| l["call"].clone())
        .collect();
    let refused = t.log_lines("caller", "UAC_GOT_503");
    assert_eq!(answered, ["1", "2"], "answered calls (by SIPp call number)");
    assert_eq!(refused.len(), 1, "503s: {refused:?}");
    assert_eq!(refused[0]["call"], "3", "the 503 went to the wrong call");
    let retry = &refused[0]["retry_after"];
    assert!(
        retry.parse::<u32>().is_ok_and(|s| s > 0),
        "the 503 carries no usable Retry-After (got {retry:?})"
    );
    assert_eq!(
        t.log_lines("trunk0", "UAS_OFFER_SDP").len(),
        2,
        "INVITEs that reached the trunk"
    );
    assert_eq!(t.log_lines("caller", "UAC_BYE_OK").len(), 2);

    let again = t.caller_named(
        "caller2",
        "uac_limit.xml",
        2,
        &["-r", "10", "-rp", "1000", "-d", "1000"],
    );
    t.expect_success(again, 2);
    t.expect_success(uas, 4);
    let refused = t.log_lines("caller2", "UAC_GOT_503");
    assert!(
        refused.is_empty(),
        "after the first calls ended the trunk still refused calls (slots not given \
         back?): {refused:?}"
    );
    assert_eq!(t.log_lines("caller2", "UAC_ANSWERED").len(), 2);
    t.stop_gateway(gw);
}

/// Every trunk answers 503: the caller gets a final error, 500 (the gateway
/// does not pass a trunk's 503 upstream, RFC 3261 §16.7 step 6, see
/// `map_failure` in src/call/b2bua.rs) after both trunks were tried.
#[test]
fn all_trunks_503_gives_500() {
    let mut t = Test::new("all-503", Tr::Udp);
    let gw = t.gateway(&[Trunk::new("t1", 0), Trunk::new("t2", 1)]);
    let uas1 = t.trunk_uas(0, "uas_503.xml", 1);
    let uas2 = t.trunk_uas(1, "uas_503.xml", 1);
    let uac = t.caller("uac_refused.xml", 1, &[]);
    t.expect_success(uac, 1);
    t.expect_success(uas1, 1);
    t.expect_success(uas2, 1);
    let finals = t.log_lines("caller", "UAC_FINAL");
    assert_eq!(finals.len(), 1, "final responses: {finals:?}");
    assert_eq!(finals[0]["status"], "500", "final response to the caller");
    t.stop_gateway(gw);
}

/// A Request-URI user that is not a number has no route: 404 from the
/// gateway, and nothing reaches the trunk.
#[test]
fn non_numeric_user_gets_404() {
    let mut t = Test::new("404", Tr::Udp);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_answer.xml", 1);
    let mut c = t.sipp_cmd("caller", "uac_refused.xml");
    c.arg(format!("{SIP_IP}:{}", t.ports.kolokol))
        .args(["-s", "service"])
        .args(["-i", &SIP_IP.to_string(), "-p", &t.ports.uac.to_string()])
        .args(["-mi", &UAC_MEDIA_IP.to_string()])
        .args(["-mp", &t.ports.uac_media.to_string()])
        .args(["-m", "1", "-recv_timeout", "10000"]);
    let uac = t.h.spawn("caller", c);
    t.expect_success(uac, 1);
    let finals = t.log_lines("caller", "UAC_FINAL");
    assert_eq!(finals.len(), 1, "final responses: {finals:?}");
    assert_eq!(finals[0]["status"], "404", "final response to the caller");
    t.h.assert_alive(uas);
    t.assert_msg_count("trunk0", "INVITE ", 0);
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 8. Malformed and out-of-dialog requests

/// A BYE for a dialog that does not exist gets 481; an INVITE with a broken
/// header gets 400; garbage datagrams are dropped without harm: afterwards
/// the gateway still answers OPTIONS and completes a call.
#[test]
fn malformed_and_out_of_dialog() {
    let mut t = Test::new("malformed", Tr::Udp);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let bad = t.caller_named("bad", "uac_bad.xml", 1, &[]);
    t.expect_success(bad, 1);
    assert_eq!(t.log_lines("bad", "UAC_BYE_481").len(), 1);
    assert_eq!(t.log_lines("bad", "UAC_INVITE_400").len(), 1);

    let sock = UdpSocket::bind((SIP_IP, 0)).unwrap();
    let to: SocketAddr = (SIP_IP, t.ports.kolokol).into();
    let mut junk: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"\x00\x01\x02\x03\xff\xfe\xfd".to_vec(),
        b"INVITE".to_vec(),
        b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
        b"INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP\r\nContent-Length: 99999\r\n\r\nx".to_vec(),
        vec![b'A'; 9000],
    ];
    let mut rng = nanos() | 1;
    for _ in 0..20 {
        junk.push(
            (0..(xorshift(&mut rng) % 1400) as usize)
                .map(|_| xorshift(&mut rng) as u8)
                .collect(),
        );
    }
    for j in &junk {
        sock.send_to(j, to).unwrap();
    }
    t.h.assert_alive(gw);
    wait_options_200(&mut t.h, gw, t.ports.kolokol, Duration::from_secs(5));

    let uas = t.trunk_uas(0, "uas_answer.xml", 1);
    let uac = t.caller("uac_call.xml", 1, &["-d", "500"]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_BYE").len(), 1);
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 9. Digest authentication toward the trunk

/// The trunk answers the first INVITE 407 (Digest, qop=auth, MD5): the
/// gateway must ACK it and send the INVITE again with a Proxy-Authorization
/// for its trunk credentials (kolokol/secret); the call then completes. The
/// digest response is recomputed here from the logged header and
/// Request-URI (SIPp 3.6.1's `verifyauth` rejects a correct
/// Proxy-Authorization with qop=auth, so the scenario does not rely on it).
#[test]
fn trunk_digest_auth_md5_over_tcp() {
    digest_auth_call("auth-md5-tcp", "MD5", Tr::Tcp);
}

#[test]
fn trunk_digest_auth_md5() {
    digest_auth_call("auth-md5", "MD5", Tr::Udp);
}

/// As [`trunk_digest_auth_md5`], with a SHA-256 challenge (RFC 7616/8760).
#[test]
fn trunk_digest_auth_sha256() {
    digest_auth_call("auth-sha256", "SHA-256", Tr::Udp);
}

fn digest_auth_call(label: &'static str, alg: &str, tr: Tr) {
    let mut t = Test::new(label, tr);
    let gw = t.gateway(&[Trunk::new("t1", 0)
        .with("username = \"kolokol\"")
        .with("password = \"secret\"")]);
    let uas = t.trunk_uas_with(0, "uas_auth_407.xml", 1, &["-key", "alg", alg]);
    let uac = t.caller("uac_call.xml", 1, &["-d", "1000"]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_INVITE_1").len(), 1);
    let (uri, auth) = t.authorized_invite("trunk0");
    let d = DigestCreds::parse(&auth);
    d.check(alg, &uri, "kolokol", "secret");
    // The 407 and the 200 were ACKed, nothing more was sent as INVITE.
    t.assert_msg_count("trunk0", "INVITE ", 2);
    t.assert_msg_count("trunk0", "ACK ", 2);
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_BYE").len(), 1);
    let answers = t.log_lines("caller", "UAC_ANSWER_SDP");
    assert_eq!(answers.len(), 1, "answers at the caller: {answers:?}");
    assert_eq!(answers[0]["c"], RELAY_IP.to_string());
    let media = t.ports.media_min..=t.ports.media_max;
    assert!(media.contains(&port_of(&answers[0]["m"])));
    t.stop_gateway(gw);
}

/// The trunk challenges again after the gateway answered the first 407
/// (here: the gateway's password is wrong). The gateway must not loop: it
/// ACKs both 407s, sends two INVITEs in all, and the caller gets a final
/// error (500, see `map_failure`) instead of hanging. The credentials it
/// sent are those of its config: the response fits "wrong", not "secret".
#[test]
fn trunk_digest_auth_rejected() {
    let mut t = Test::new("auth-wrong", Tr::Udp);
    let gw = t.gateway(&[Trunk::new("t1", 0)
        .with("username = \"kolokol\"")
        .with("password = \"wrong\"")]);
    let uas = t.trunk_uas_with(0, "uas_auth_407_reject.xml", 1, &["-key", "alg", "MD5"]);
    let uac = t.caller("uac_refused.xml", 1, &[]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    let finals = t.log_lines("caller", "UAC_FINAL");
    assert_eq!(finals.len(), 1, "final responses: {finals:?}");
    assert_eq!(finals[0]["status"], "500", "final response to the caller");
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_ACK_407").len(), 2);
    t.assert_msg_count("trunk0", "INVITE ", 2);
    let (uri, auth) = t.authorized_invite("trunk0");
    let d = DigestCreds::parse(&auth);
    d.check("MD5", &uri, "kolokol", "wrong");
    assert_ne!(
        d.get("response"),
        d.expected("MD5", &uri, "secret"),
        "the response also fits the right password?"
    );
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 10. Mid-call offers: hold and resume

/// The caller re-INVITEs with a=sendonly (hold), then a=sendrecv (resume).
/// Each must reach the trunk as a re-INVITE (not an UPDATE) whose SDP
/// still points at the gateway's relay with the caller's direction, and
/// the trunk's answers (recvonly, sendrecv) must come back to the caller,
/// again pointing at the relay.
#[test]
fn hold_and_resume_with_reinvite() {
    hold_and_resume_with_reinvite_on(Tr::Udp);
}

/// [`hold_and_resume_with_reinvite`] over TCP.
#[test]
fn hold_and_resume_with_reinvite_over_tcp() {
    hold_and_resume_with_reinvite_on(Tr::Tcp);
}

fn hold_and_resume_with_reinvite_on(tr: Tr) {
    let mut t = Test::new("hold", tr);
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_reinvite_hold.xml", 1);
    let uac = t.caller("uac_reinvite_hold.xml", 1, &[]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    let media = t.ports.media_min..=t.ports.media_max;
    let relay = RELAY_IP.to_string();
    let mut ports = BTreeMap::new();
    for (who, tag, dirs) in [
        ("trunk0", "UAS_HOLD_OFFER", &["sendonly"][..]),
        ("trunk0", "UAS_RESUME_OFFER", &["sendrecv"][..]),
        ("caller", "UAC_HOLD_ANSWER", &["recvonly", "inactive"][..]),
        ("caller", "UAC_RESUME_ANSWER", &["sendrecv"][..]),
    ] {
        let l = t.log_lines(who, tag);
        assert_eq!(l.len(), 1, "{who} {tag}: {l:?}");
        let l = &l[0];
        assert!(
            dirs.contains(&l["dir"].as_str()),
            "{who} {tag}: direction {:?}, want one of {dirs:?}",
            l["dir"]
        );
        assert_eq!(
            l["c"], relay,
            "{who} {tag}: c= is not the gateway's address"
        );
        let m = port_of(&l["m"]);
        assert!(
            media.contains(&m),
            "{who} {tag}: m=audio {m} is not in the gateway's media range {media:?}"
        );
        ports.insert(tag, m);
    }
    // The relay keeps each leg's port across hold and resume.
    assert_eq!(ports["UAS_HOLD_OFFER"], ports["UAS_RESUME_OFFER"]);
    assert_eq!(ports["UAC_HOLD_ANSWER"], ports["UAC_RESUME_ANSWER"]);
    t.assert_msg_count("trunk0", "INVITE ", 3);
    t.assert_msg_count("trunk0", "UPDATE ", 0);
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 11. Reliable provisional responses (RFC 3262)

/// The trunk has `require_100rel = true`: the INVITE to it must carry
/// `Require: 100rel`. The trunk's 183 with `Require: 100rel`, `RSeq: 1`
/// must be PRACKed (`RAck: 1 1 INVITE`), after which the trunk answers and
/// the call completes through the relay.
#[test]
fn reliable_183_is_pracked() {
    reliable_183_is_pracked_on(Tr::Udp);
}

/// [`reliable_183_is_pracked`] over TCP.
#[test]
fn reliable_183_is_pracked_over_tcp() {
    reliable_183_is_pracked_on(Tr::Tcp);
}

fn reliable_183_is_pracked_on(tr: Tr) {
    let mut t = Test::new("prack", tr);
    let gw = t.gateway(&[Trunk::new("t1", 0).with("require_100rel = true")]);
    let uas = t.trunk_uas(0, "uas_prack.xml", 1);
    let uac = t.caller("uac_call.xml", 1, &["-d", "1000"]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    let inv = t.log_raw("trunk0", "UAS_INVITE_HEADERS");
    assert_eq!(inv.len(), 1, "INVITEs at the trunk: {inv:?}");
    let require = inv[0]
        .split_once("require=")
        .and_then(|(_, r)| r.split_once(" supported="))
        .map(|(r, _)| r)
        .unwrap_or("");
    assert!(
        require.split(',').any(|o| o.trim() == "100rel"),
        "the INVITE to a require_100rel trunk has no `Require: 100rel`: {:?}",
        inv[0]
    );
    let pracks = t.log_raw("trunk0", "UAS_GOT_PRACK");
    assert_eq!(pracks.len(), 1, "PRACKs logged by the trunk: {pracks:?}");
    assert!(
        pracks[0].ends_with("rack=1 1 INVITE"),
        "PRACK for RSeq 1 of CSeq 1 INVITE expected: {:?}",
        pracks[0]
    );
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_BYE").len(), 1);
    let answers = t.log_lines("caller", "UAC_ANSWER_SDP");
    assert_eq!(answers.len(), 1, "answers at the caller: {answers:?}");
    assert_eq!(answers[0]["c"], RELAY_IP.to_string());
    let media = t.ports.media_min..=t.ports.media_max;
    assert!(media.contains(&port_of(&answers[0]["m"])));
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 12. Session timer (RFC 4028)

/// The caller asks for `Session-Expires: 90;refresher=uac`: the 200 must
/// carry a Session-Expires of at least 90 with `refresher=uac`, and the
/// caller's refresh UPDATE must get 200 with Session-Expires. On the trunk
/// leg the gateway runs its own timer: its INVITE offers `Supported: timer`
/// and the `[sip] session_expires_s` of its config (120 here), refreshed by
/// itself (`refresher=uac`).
#[test]
fn session_timer_with_update_refresh() {
    session_timer_with_update_refresh_on(Tr::Udp);
}

/// [`session_timer_with_update_refresh`] over TCP.
#[test]
fn session_timer_with_update_refresh_over_tcp() {
    session_timer_with_update_refresh_on(Tr::Tcp);
}

fn session_timer_with_update_refresh_on(tr: Tr) {
    let mut t = Test::new("timer", tr);
    t.sip_extra = "session_expires_s = 120\n".into();
    let gw = t.gateway(&[Trunk::new("t1", 0)]);
    let uas = t.trunk_uas(0, "uas_session_timer.xml", 1);
    let uac = t.caller("uac_session_timer.xml", 1, &[]);
    t.expect_success(uac, 1);
    t.expect_success(uas, 1);
    let interval = |se: &str| -> u32 {
        se.split(';')
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no interval in Session-Expires {se:?}"))
    };
    let a = t.log_lines("caller", "UAC_ST_ANSWER");
    assert_eq!(a.len(), 1, "caller UAC_ST_ANSWER: {a:?}");
    let se = &a[0]["session_expires"];
    assert!(interval(se) >= 90, "Session-Expires in the 200: {se:?}");
    assert!(
        se.contains("refresher=uac"),
        "the caller asked to refresh (refresher=uac); the 200 says {se:?}"
    );
    let r = t.log_lines("caller", "UAC_ST_REFRESH_OK");
    assert_eq!(r.len(), 1, "caller UAC_ST_REFRESH_OK: {r:?}");
    let se2 = &r[0]["session_expires"];
    assert!(
        !se2.is_empty() && interval(se2) >= 90,
        "the 200 to the refresh UPDATE has no usable Session-Expires: {se2:?}"
    );
    let inv = t.log_raw("trunk0", "UAS_ST_INVITE");
    assert_eq!(inv.len(), 1, "INVITEs at the trunk: {inv:?}");
    let (sup, se_b) = inv[0]
        .split_once("supported=")
        .and_then(|(_, r)| r.split_once(" se="))
        .unwrap_or_else(|| panic!("bad UAS_ST_INVITE line {:?}", inv[0]));
    assert!(
        sup.split(',').any(|o| o.trim() == "timer"),
        "the INVITE to the trunk does not offer `Supported: timer`: {:?}",
        inv[0]
    );
    assert_eq!(
        se_b.trim(),
        "120;refresher=uac",
        "Session-Expires toward the trunk: want [sip] session_expires_s with the \
         gateway refreshing"
    );
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// 13. Failover after 100 Trying

/// Trunk 1 sends only 100 Trying; after its `timeout_ms` (1500) the gateway
/// must fail over to trunk 2 *and* CANCEL trunk 1 (RFC 3261 §9.1: any
/// provisional response, 100 included, allows a CANCEL). Trunk 1 answers
/// 200 + 487 and gets the ACK; it never gets to answer the abandoned call
/// (its scenario picks up after 3 s without a CANCEL: a ghost call).
#[test]
fn failover_after_100_trying_cancels_first_trunk() {
    let mut t = Test::new("trying", Tr::Udp);
    let mut t1 = Trunk::new("t1", 0);
    t1.timeout_ms = 1500;
    let gw = t.gateway(&[t1, Trunk::new("t2", 1)]);
    let uas1 = t.trunk_uas(0, "uas_trying_then_answer.xml", 1);
    let uas2 = t.trunk_uas(1, "uas_answer.xml", 1);
    let uac = t.caller("uac_call.xml", 1, &["-d", "1000"]);
    t.expect_success(uac, 1);
    t.expect_success(uas2, 1);
    t.expect_success(uas1, 1);
    for (tag, want) in [
        ("UAS_GOT_INVITE", 1),
        ("UAS_GOT_CANCEL", 1),
        ("UAS_NO_CANCEL_ANSWERING", 0),
        ("UAS_LATE_200_ACKED", 0),
        ("UAS_LATE_200_BYE", 0),
    ] {
        let l = t.log_lines("trunk0", tag);
        assert_eq!(l.len(), want, "trunk 1 {tag}: {l:?}");
    }
    // The ACK for the 487; no BYE (there is no dialog).
    t.assert_msg_count("trunk0", "ACK ", 1);
    t.assert_msg_count("trunk0", "BYE ", 0);
    let invite = t.first_received_at("trunk0", "INVITE ");
    let cancel = t.first_received_at("trunk0", "CANCEL ") - invite;
    let failover = t.first_received_at("trunk1", "INVITE ") - invite;
    assert!(
        (1.4..3.0).contains(&cancel),
        "trunk 1 got the CANCEL {cancel:.3} s after its INVITE (timeout_ms = 1500)"
    );
    assert!(
        (1.4..3.0).contains(&failover),
        "the INVITE reached trunk 2 {failover:.3} s after trunk 1 (timeout_ms = 1500)"
    );
    assert_eq!(t.log_lines("trunk1", "UAS_OFFER_SDP").len(), 1);
    assert_eq!(t.log_lines("trunk1", "UAS_GOT_BYE").len(), 1);
    assert_eq!(t.log_lines("caller", "UAC_ANSWER_SDP").len(), 1);
    t.stop_gateway(gw);
}

/// As [`failover_after_100_trying_cancels_first_trunk`], but trunk 1
/// picks up just as the CANCEL arrives: its 200 crosses the CANCEL. The
/// call is already on trunk 2, so the gateway must ACK that 200 and hang
/// it up at once with a BYE (no ghost call on trunk 1), while the caller's
/// call on trunk 2 goes on undisturbed.
#[test]
fn failover_cancel_crossing_200_is_hung_up() {
    let mut t = Test::new("trying-race", Tr::Udp);
    let mut t1 = Trunk::new("t1", 0);
    t1.timeout_ms = 1500;
    let gw = t.gateway(&[t1, Trunk::new("t2", 1)]);
    let uas1 = t.trunk_uas(0, "uas_trying_cancel_race.xml", 1);
    let uas2 = t.trunk_uas(1, "uas_answer.xml", 1);
    let uac = t.caller("uac_call.xml", 1, &["-d", "3000"]);
    t.expect_success(uac, 1);
    t.expect_success(uas2, 1);
    t.expect_success(uas1, 1);
    for tag in ["UAS_GOT_CANCEL", "UAS_RACE_200_ACKED", "UAS_RACE_200_BYE"] {
        let l = t.log_lines("trunk0", tag);
        assert_eq!(l.len(), 1, "trunk 1 {tag}: {l:?}");
    }
    let cancel = t.first_received_at("trunk0", "CANCEL ");
    let bye = t.first_received_at("trunk0", "BYE ") - cancel;
    assert!(
        bye < 1.0,
        "trunk 1's crossing 200 was hung up {bye:.3} s after the CANCEL: the abandoned \
         call stayed up"
    );
    // The caller's call (on trunk 2) was not the one hung up.
    let caller_bye = t.first_received_at("trunk1", "BYE ") - cancel;
    assert!(
        caller_bye > 2.0,
        "trunk 2 got its BYE {caller_bye:.3} s after trunk 1's CANCEL; the caller holds 3 s"
    );
    assert_eq!(t.log_lines("trunk1", "UAS_GOT_BYE").len(), 1);
    assert_eq!(t.log_lines("caller", "UAC_BYE_OK").len(), 1);
    t.stop_gateway(gw);
}

// ---------------------------------------------------------------------------
// Overload: an INVITE flood at 3x capacity

/// The gateway's capacity here is its global `sip.cps_max` of 40 new calls
/// per second (split over two shards). A long call with RTP is set up
/// first; then a second caller sends INVITEs at 120 per second (3x) for
/// three seconds. Every flood INVITE must get an answer: a 200 (it fits in
/// the budget) or a 503 with a Retry-After, none left to time out; the
/// long call's audio must keep flowing through the flood, and both shards
/// must still be serving afterwards (OPTIONS answered, a call completes).
#[test]
fn invite_flood_at_3x_gets_503_while_calls_flow() {
    let mut t = Test::new("flood", Tr::Udp);
    let mut t1 = Trunk::new("t1", 0);
    t1.max_calls = 1000;
    t.shards = 2;
    t.calls_max = 200;
    t.sip_extra = "cps_max = 40\n".into();
    let gw = t.gateway(&[t1]);
    let uas = t.trunk_uas(0, "uas_answer.xml", 1000);
    // The long call: 150 packets (3 s) of audio, held 6 s.
    let long = t.caller("uac_call.xml", 1, &["-d", "6000"]);
    std::thread::sleep(Duration::from_millis(300));
    let flood_calls = 360;
    // The flood runs beside the long call: it takes the unused second
    // trunk's SIP and media ports (a later -p/-mp wins in SIPp).
    let (fp, fm) = (
        t.ports.trunks[1].to_string(),
        t.ports.trunk_media[1].to_string(),
    );
    let flood = t.caller_named(
        "flood",
        "uac_limit.xml",
        flood_calls,
        &[
            "-r", "120", "-rp", "1000", "-d", "100", "-p", &fp, "-mp", &fm,
        ],
    );
    t.expect_success(flood, flood_calls);
    t.expect_success(long, 1);
    let answered = t.log_lines("flood", "UAC_ANSWERED").len();
    let refused = t.log_lines("flood", "UAC_GOT_503");
    eprintln!(
        "sip_b2bua[flood]: {answered} answered, {} refused with 503",
        refused.len()
    );
    assert_eq!(
        answered + refused.len(),
        flood_calls as usize,
        "every flood INVITE gets a 200 or a 503 ({answered} answered, {} refused)",
        refused.len()
    );
    // 3 s at 40/s plus the token buckets' one-second bursts: well under
    // half of the 360 get through, and well over half are refused.
    assert!(
        (60..=200).contains(&answered),
        "{answered} of {flood_calls} flood calls answered at 3x a 40 CPS budget"
    );
    assert!(refused.len() >= 160, "only {} 503s", refused.len());
    for r in &refused {
        let retry = &r["retry_after"];
        assert!(
            retry.parse::<u32>().is_ok_and(|s| s > 0),
            "a 503 without a usable Retry-After: {r:?}"
        );
    }
    // Still serving: OPTIONS on the SIP port, and a normal call.
    wait_options_200(&mut t.h, gw, t.ports.kolokol, Duration::from_secs(5));
    let after = t.caller_named("after", "uac_call.xml", 1, &["-d", "500"]);
    t.expect_success(after, 1);
    t.h.terminate(uas, Duration::from_secs(5));
    let c = t.stop_gateway(gw);
    // The long call's 150 packets each way (echoed) went through the relay
    // during the flood; the flood calls send no RTP, the last call does.
    let want = (AUDIO_PACKETS as u64) * 2 * 80 / 100;
    assert!(
        c.rx >= want && c.tx >= want,
        "relayed rx {} / tx {} during the flood; want >= {want}: {c:?}",
        c.rx,
        c.tx
    );
}

// ---------------------------------------------------------------------------
// Test set-up

/// One trunk of the gateway's config; `uas` is the index of the SIPp trunk
/// (and of its port in [`Ports::trunks`]) behind it. Priorities follow the
/// index: 10, 20.
struct Trunk {
    name: &'static str,
    uas: usize,
    max_calls: u32,
    timeout_ms: u32,
    /// More `key = value` lines for this `[[trunks]]` entry.
    extra: String,
}

impl Trunk {
    fn new(name: &'static str, uas: usize) -> Trunk {
        Trunk {
            name,
            uas,
            max_calls: 100,
            timeout_ms: 5000,
            extra: String::new(),
        }
    }

    /// Adds a `key = value` line to this trunk's config.
    fn with(mut self, line: &str) -> Trunk {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }
}

/// One scenario: its ports, its processes, its directory.
/// The SIP transport a test runs over, between SIPp and the gateway on
/// both sides (media is RTP over UDP either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tr {
    Udp,
    Tcp,
}

impl Tr {
    /// The config and SIPp trace spelling.
    fn name(self) -> &'static str {
        match self {
            Tr::Udp => "udp",
            Tr::Tcp => "tcp",
        }
    }
}

struct Test {
    name: &'static str,
    tr: Tr,
    ports: Ports,
    h: Harness,
    /// The SIPp binary.
    sipp: PathBuf,
    /// More `key = value` lines for the gateway's `[sip]` section.
    sip_extra: String,
    /// Shards of the gateway (1 unless a test needs the hand-over).
    shards: usize,
    /// Media and B2BUA call slots per shard.
    calls_max: usize,
}

impl Test {
    fn new(name: &'static str, tr: Tr) -> Test {
        let sipp = find_tool("sipp", "Debian package `sip-tester`");
        let h = Harness::new(format!("sip-b2bua-{name}-{}", tr.name()));
        let ports = Ports::pick();
        eprintln!("sip_b2bua[{name}]: files in {}; {ports:?}", h.dir.display());
        fs::write(h.dir.join("g711u.raw"), vec![0xffu8; 160 * AUDIO_PACKETS]).unwrap();
        Test {
            name,
            tr,
            ports,
            h,
            sipp,
            sip_extra: String::new(),
            shards: 1,
            calls_max: 16,
        }
    }

    /// The gateway's config for these trunks.
    fn config_text(&self, trunks: &[Trunk]) -> String {
        let p = &self.ports;
        let mut cfg = format!(
            "# written by tests/sip_b2bua.rs ({})\n\
             [shards]\ncount = {}\ncpus = []\n\n\
             [media]\naddress = \"{RELAY_IP}\"\nport_min = {}\nport_max = {}\n\
             timeout_s = 30\nstrict_source = false\ndscp = 0\nport_mode = \"per-leg\"\n\
             calls_max = {}\n\n\
             [ng]\nlisten = \"127.0.0.1:{}\"\n\n\
             [log]\nlevel = \"info\"\n\n\
             [sip]\nudp = [\"{SIP_IP}:{}\"]\ntcp = [{}]\n{}\n",
            self.name,
            self.shards,
            p.media_min,
            p.media_max,
            self.calls_max,
            p.ng,
            p.kolokol,
            match self.tr {
                Tr::Udp => String::new(),
                Tr::Tcp => format!("\"{SIP_IP}:{}\"", p.kolokol),
            },
            self.sip_extra
        );
        for (i, tr) in trunks.iter().enumerate() {
            cfg.push_str(&format!(
                "[[trunks]]\nname = \"{}\"\naddress = \"{SIP_IP}:{}\"\ntransport = \"{}\"\n\
                 priority = {}\nweight = 100\nmax_calls = {}\ncps = 50\n\
                 options_interval_s = 0\ntimeout_ms = {}\n{}\n",
                tr.name,
                p.trunks[tr.uas],
                self.tr.name(),
                10 * (i + 1),
                tr.max_calls,
                tr.timeout_ms,
                tr.extra
            ));
        }
        cfg.push_str("[[routes]]\nprefix = \"\"\nto = \"trunks\"\n");
        cfg
    }

    /// Start the gateway with these trunks and wait until it answers
    /// OPTIONS on its SIP port.
    fn gateway(&mut self, trunks: &[Trunk]) -> ProcId {
        let cfg = self.config_text(trunks);
        let p = &self.ports;
        let path = self.h.dir.join("kolokol.toml");
        fs::write(&path, cfg).unwrap();
        let mut c = Command::new(env!("CARGO_BIN_EXE_kolokol"));
        c.arg("run").arg("--config").arg(&path);
        let id = self.h.spawn("kolokol", c);
        wait_options_200(&mut self.h, id, p.kolokol, Duration::from_secs(15));
        id
    }

    /// Start SIPp trunk number `n` (`trunk0`, `trunk1`) with a scenario
    /// from tests/sipp/b2bua, echoing RTP, for `calls` calls; returns once
    /// its SIP socket is bound.
    fn trunk_uas(&mut self, n: usize, xml: &str, calls: u32) -> ProcId {
        self.trunk_uas_with(n, xml, calls, &[])
    }

    /// [`Test::trunk_uas`] with `extra` SIPp arguments (`-key alg MD5`).
    fn trunk_uas_with(&mut self, n: usize, xml: &str, calls: u32, extra: &[&str]) -> ProcId {
        let name = ["trunk0", "trunk1"][n];
        let port = self.ports.trunks[n];
        let mut c = self.sipp_cmd(name, xml);
        c.args(["-i", &SIP_IP.to_string(), "-p", &port.to_string()])
            .args(["-mi", &TRUNK_MEDIA_IP[n].to_string()])
            .args(["-mp", &self.ports.trunk_media[n].to_string()])
            .arg("-rtp_echo")
            .args(["-m", &calls.to_string()])
            .args(extra);
        let id = self.h.spawn(name, c);
        match self.tr {
            Tr::Udp => wait_udp_bound(&mut self.h, id, SIP_IP, port, Duration::from_secs(10)),
            Tr::Tcp => wait_tcp_listen(&mut self.h, id, SIP_IP, port, Duration::from_secs(10)),
        }
        id
    }

    /// Start the SIPp caller towards the gateway: `calls` calls (all may
    /// overlap), the called number [`NUMBER`], plus `extra` arguments.
    fn caller(&mut self, xml: &str, calls: u32, extra: &[&str]) -> ProcId {
        self.caller_named("caller", xml, calls, extra)
    }

    fn caller_named(
        &mut self,
        name: &'static str,
        xml: &str,
        calls: u32,
        extra: &[&str],
    ) -> ProcId {
        let mut c = self.sipp_cmd(name, xml);
        c.arg(format!("{SIP_IP}:{}", self.ports.kolokol))
            .args(["-s", NUMBER])
            .args(["-i", &SIP_IP.to_string(), "-p", &self.ports.uac.to_string()])
            .args(["-mi", &UAC_MEDIA_IP.to_string()])
            .args(["-mp", &self.ports.uac_media.to_string()])
            .args(["-m", &calls.to_string(), "-l", &calls.to_string()])
            .args(["-recv_timeout", "10000"])
            .args(extra);
        self.h.spawn(name, c)
    }

    /// A SIPp command with the scenario copied into the test directory and
    /// every trace on: `<name>_logs.log` (`<log>` lines), `_msg.log` (all
    /// messages), `_errors.log`, `_stat.csv`.
    fn sipp_cmd(&self, name: &str, xml: &str) -> Command {
        let dir = &self.h.dir;
        let scen = dir.join(format!("{name}_{xml}"));
        fs::copy(fixture(xml), &scen).unwrap_or_else(|e| panic!("cannot copy scenario {xml}: {e}"));
        let mut c = Command::new(&self.sipp);
        c.current_dir(dir)
            .arg("-sf")
            .arg(&scen)
            .args(["-t", if self.tr == Tr::Tcp { "t1" } else { "u1" }])
            .args(["-nostdin", "-trace_logs", "-log_file"])
            .arg(dir.join(format!("{name}_logs.log")))
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join(format!("{name}_msg.log")))
            .args(["-trace_err", "-error_file"])
            .arg(dir.join(format!("{name}_errors.log")))
            .args(["-trace_stat", "-stf"])
            .arg(dir.join(format!("{name}_stat.csv")))
            .args(["-timeout", &format!("{}s", SIPP_LIMIT.as_secs())])
            .arg("-timeout_error");
        c
    }

    /// Wait (bounded) for a SIPp process; it must exit 0 (every call
    /// successful) with `calls` successful and no failed calls.
    fn expect_success(&mut self, id: ProcId, calls: u32) {
        let status = self.h.wait(id, SIPP_LIMIT + Duration::from_secs(5));
        let name = self.h.name(id);
        let all = sipp_final_stats(&self.h.dir.join(format!("{name}_stat.csv")));
        // The cumulative counters that say something: calls and failures.
        let stats: BTreeMap<&str, i64> = all
            .iter()
            .filter(|(k, v)| {
                k.ends_with("(C)") && (**v != 0 || k.starts_with("SuccessfulCall"))
                    || k.starts_with("FailedCall(C)")
            })
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert!(
            status.success(),
            "SIPp {name} exited with {status} (0 = all calls successful); stats {stats:?}; \
             errors:\n{}",
            tail(&self.h.dir.join(format!("{name}_errors.log")), 20)
        );
        assert_eq!(
            stats.get("SuccessfulCall(C)").copied(),
            Some(i64::from(calls)),
            "SIPp {name}: successful calls; stats {stats:?}"
        );
        assert_eq!(
            stats.get("FailedCall(C)").copied(),
            Some(0),
            "SIPp {name}: failed calls; stats {stats:?}"
        );
    }

    /// `<TAG> key=value ...` lines a SIPp process logged, as maps (the
    /// first `key=` of a line wins).
    fn log_lines(&self, name: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
        self.log_raw(name, tag)
            .iter()
            .map(|l| {
                let mut m = BTreeMap::new();
                for (k, v) in l.split_whitespace().filter_map(|w| w.split_once('=')) {
                    m.entry(k.to_owned()).or_insert_with(|| v.to_owned());
                }
                m
            })
            .collect()
    }

    /// The Request-URI and Proxy-Authorization value of the challenged
    /// INVITE's second attempt, from the trunk's `UAS_GOT_INVITE_2 call=N
    /// uri=URI auth=Digest ...` line (auth= last: it has spaces).
    fn authorized_invite(&self, name: &str) -> (String, String) {
        let l = self.log_raw(name, "UAS_GOT_INVITE_2");
        assert_eq!(l.len(), 1, "{name}: INVITEs with credentials: {l:?}");
        let (head, auth) = l[0]
            .split_once(" auth=")
            .unwrap_or_else(|| panic!("no auth= in {:?}", l[0]));
        let uri = head
            .split_whitespace()
            .find_map(|w| w.strip_prefix("uri="))
            .unwrap_or_else(|| panic!("no uri= in {:?}", l[0]));
        (uri.to_owned(), auth.trim().to_owned())
    }

    /// The `<TAG> ...` lines a SIPp process logged, without the tag.
    fn log_raw(&self, name: &str, tag: &str) -> Vec<String> {
        let path = self.h.dir.join(format!("{name}_logs.log"));
        let text = fs::read_to_string(&path).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let (first, rest) = l.split_once(' ').unwrap_or((l, ""));
                (first == tag).then(|| rest.trim().to_owned())
            })
            .collect()
    }

    /// The number of messages SIPp `name` received that start with `start`
    /// (from its -trace_msg file) must be `want`.
    fn assert_msg_count(&self, name: &str, start: &str, want: usize) {
        let path = self.h.dir.join(format!("{name}_msg.log"));
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut n = 0;
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if l.starts_with("UDP message received") || l.starts_with("TCP message received") {
                let first = lines.by_ref().find(|l| !l.trim().is_empty()).unwrap_or("");
                if first.starts_with(start) {
                    n += 1;
                }
            }
        }
        assert_eq!(n, want, "{name} received {n} messages starting {start:?}");
    }

    /// When SIPp `name` first received a message starting with `start`
    /// (seconds since midnight, from the -trace_msg time stamps).
    fn first_received_at(&self, name: &str, start: &str) -> f64 {
        let path = self.h.dir.join(format!("{name}_msg.log"));
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut stamp = None;
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if let Some(rest) = l.strip_prefix("-----") {
                // `----- 2026-11-26 17:38:02.041350`
                stamp = rest.split_whitespace().last().map(str::to_owned);
            } else if l.starts_with("UDP message received") || l.starts_with("TCP message received")
            {
                let first = lines.by_ref().find(|l| !l.trim().is_empty()).unwrap_or("");
                if first.starts_with(start) {
                    let s = stamp.clone().unwrap_or_default();
                    let f: Vec<f64> = s.split(':').filter_map(|x| x.parse().ok()).collect();
                    assert_eq!(f.len(), 3, "bad time stamp {s:?} in {}", path.display());
                    return f[0] * 3600.0 + f[1] * 60.0 + f[2];
                }
            }
        }
        panic!("{name} received no message starting {start:?}");
    }

    /// SIGTERM the gateway, wait for it, and return the counters it printed.
    fn stop_gateway(&mut self, id: ProcId) -> GatewayCounters {
        let status = self.h.terminate(id, Duration::from_secs(10));
        let err = fs::read_to_string(self.h.dir.join("kolokol.err")).unwrap_or_default();
        assert!(
            status.success(),
            "kolokol exited with {status} after SIGTERM; stderr:\n{}",
            tail(&self.h.dir.join("kolokol.err"), 30)
        );
        let c = GatewayCounters::parse(&err);
        eprintln!("sip_b2bua[{}]: gateway {c:?}", self.name);
        self.assert_transport();
        c
    }

    /// Every SIPp received its messages over the test's transport only,
    /// and every request the gateway sent names it in its Via.
    fn assert_transport(&self) {
        let (want, other) = match self.tr {
            Tr::Udp => ("UDP message received", "TCP message received"),
            Tr::Tcp => ("TCP message received", "UDP message received"),
        };
        let via = format!("Via: SIP/2.0/{}", self.tr.name().to_ascii_uppercase());
        for e in fs::read_dir(&self.h.dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(who) = name.strip_suffix("_msg.log") else {
                continue;
            };
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            // A trunk the test keeps idle may have received nothing.
            let got = text.matches(want).count();
            assert!(
                !text.contains(other),
                "{who} received {got} messages as {want:?} and some as {other:?}"
            );
            // Requests from the gateway: after a "... message received"
            // line, a start line that is not a status line.
            let mut lines = text.lines();
            while let Some(l) = lines.next() {
                if !l.starts_with(want) {
                    continue;
                }
                let start = lines.by_ref().find(|l| !l.trim().is_empty()).unwrap_or("");
                if start.starts_with("SIP/2.0 ") {
                    continue;
                }
                let top = lines.by_ref().find(|l| l.starts_with("Via:")).unwrap_or("");
                assert!(
                    top.starts_with(&via),
                    "{who} got {start:?} with top {top:?}, want {via:?}"
                );
            }
        }
    }
}

/// What `kolokol` prints per shard when it stops:
/// `shard N: rx A tx B drops C wakeups D; sip rx E tx F ...`, summed.
#[derive(Debug, Default)]
struct GatewayCounters {
    rx: u64,
    tx: u64,
    sip_rx: u64,
    sip_tx: u64,
    shards: usize,
}

impl GatewayCounters {
    fn parse(stderr: &str) -> GatewayCounters {
        let mut c = GatewayCounters::default();
        for line in stderr.lines().filter(|l| l.starts_with("shard ")) {
            let Some((media, sip)) = line.split_once("; sip ") else {
                continue;
            };
            let num = |s: &str, key: &str| -> u64 {
                let mut w = s.split_whitespace();
                while let Some(x) = w.next() {
                    if x == key {
                        return w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    }
                }
                0
            };
            c.rx += num(media, "rx");
            c.tx += num(media, "tx");
            c.sip_rx += num(sip, "rx");
            c.sip_tx += num(sip, "tx");
            c.shards += 1;
        }
        assert!(
            c.shards > 0,
            "kolokol printed no shard counters when stopped; stderr:\n{stderr}"
        );
        c
    }
}

/// A `Digest k=v, k="v", ...` credentials value, parsed here (not with
/// kolokol's own parser) to check the gateway's response independently.
struct DigestCreds {
    raw: String,
    params: BTreeMap<String, String>,
}

impl DigestCreds {
    fn parse(value: &str) -> DigestCreds {
        let rest = value
            .strip_prefix("Digest ")
            .unwrap_or_else(|| panic!("not Digest credentials: {value:?}"));
        let mut params = BTreeMap::new();
        let (mut key, mut val, mut in_key, mut quoted) =
            (String::new(), String::new(), true, false);
        let mut flush = |k: &mut String, v: &mut String| {
            if !k.trim().is_empty() {
                params.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
            k.clear();
            v.clear();
        };
        for ch in rest.chars() {
            match (in_key, quoted, ch) {
                (true, _, '=') => in_key = false,
                (true, _, ',') => flush(&mut key, &mut val),
                (true, _, c) => key.push(c),
                (false, false, '"') | (false, true, '"') => quoted = !quoted,
                (false, false, ',') => {
                    flush(&mut key, &mut val);
                    in_key = true;
                }
                (false, _, c) => val.push(c),
            }
        }
        flush(&mut key, &mut val);
        DigestCreds {
            raw: value.to_owned(),
            params,
        }
    }

    fn get(&self, k: &str) -> &str {
        self.params
            .get(k)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {k}= in the credentials {:?}", self.raw))
    }

    /// The response RFC 2617 §3.2.2 (RFC 7616 §3.4.1 for SHA-256) gives for
    /// an INVITE to `uri` with these parameters and `password`.
    fn expected(&self, alg: &str, uri: &str, password: &str) -> String {
        use sha2::Digest;
        let h = |s: String| -> String {
            match alg {
                "MD5" => format!("{:x}", md5::Md5::digest(s.as_bytes())),
                "SHA-256" => format!("{:x}", sha2::Sha256::digest(s.as_bytes())),
                _ => panic!("test does not know algorithm {alg}"),
            }
        };
        let ha1 = h(format!(
            "{}:{}:{password}",
            self.get("username"),
            self.get("realm")
        ));
        let ha2 = h(format!("INVITE:{uri}"));
        h(format!(
            "{ha1}:{}:{}:{}:{}:{ha2}",
            self.get("nonce"),
            self.get("nc"),
            self.get("cnonce"),
            self.get("qop")
        ))
    }

    /// The credentials answer the trunk's challenge (realm carrier.test,
    /// nonce `<pid>n1c0ffee`, qop auth, algorithm `alg`) for an INVITE to
    /// `uri` as `user`/`password`.
    fn check(&self, alg: &str, uri: &str, user: &str, password: &str) {
        let raw = &self.raw;
        assert_eq!(self.get("username"), user, "username in {raw:?}");
        assert_eq!(self.get("realm"), "carrier.test", "realm in {raw:?}");
        assert!(
            self.get("nonce").ends_with("n1c0ffee"),
            "nonce in {raw:?} is not the trunk's"
        );
        assert_eq!(
            self.get("uri"),
            uri,
            "digest-uri differs from the Request-URI in {raw:?}"
        );
        assert!(
            self.get("algorithm").eq_ignore_ascii_case(alg),
            "algorithm in {raw:?}, want {alg}"
        );
        assert_eq!(self.get("qop"), "auth", "qop in {raw:?}");
        assert_eq!(self.get("nc"), "00000001", "nc in {raw:?}");
        assert!(!self.get("cnonce").is_empty(), "empty cnonce in {raw:?}");
        let want = self.expected(alg, uri, password);
        assert_eq!(
            self.get("response").to_ascii_lowercase(),
            want,
            "digest response in {raw:?} is wrong for {user}/{password}, INVITE {uri}"
        );
    }
}

fn port_of(s: &str) -> u16 {
    s.parse()
        .unwrap_or_else(|_| panic!("not a port number in a SIPp log line: {s:?}"))
}

// ---------------------------------------------------------------------------
// Ports

/// Every port one test uses. SIP and ng on 127.0.0.1 in a block of
/// [`BLOCK`]; each SIPp's media on its own loopback address (`-mp`, +2 for
/// `-rtp_echo`; the caller's rtp_stream moves up if a port is taken); the
/// gateway's media range of [`MEDIA_SPAN`] ports on 127.0.0.1.
#[derive(Debug)]
struct Ports {
    kolokol: u16,
    ng: u16,
    uac: u16,
    trunks: [u16; 2],
    uac_media: u16,
    trunk_media: [u16; 2],
    media_min: u16,
    media_max: u16,
}

/// Ports are looked for here: below the example config's relay range
/// (20000-59999, used by other runs on this host), below the kernel's
/// ephemeral ports, and away from 5060/5090/5160/5190.
const PICK_LOW: u16 = 10_000;
const PICK_HIGH: u16 = 19_999;
const BLOCK: u16 = 32;
const MEDIA_SPAN: u16 = 64;

/// Ranges handed out to tests of this process, so parallel tests never
/// pick the same ports (other processes are caught by the bind check).
static TAKEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

impl Ports {
    fn pick() -> Ports {
        let mut rng = nanos() ^ (u64::from(std::process::id()) << 32) | 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut busy = Vec::new();
        loop {
            let sip = pick_in(&mut rng, BLOCK);
            let media = pick_in(&mut rng, MEDIA_SPAN);
            let p = Ports {
                kolokol: sip,
                ng: sip + 1,
                uac: sip + 2,
                trunks: [sip + 3, sip + 4],
                uac_media: sip + 8,
                trunk_media: [sip + 16, sip + 24],
                media_min: media,
                media_max: media + MEDIA_SPAN - 1,
            };
            let ranges = [(sip, sip + BLOCK - 1), (p.media_min, p.media_max)];
            let overlap = |a: (u16, u16), b: (u16, u16)| a.0 <= b.1 && b.0 <= a.1;
            let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
            if !overlap(ranges[0], ranges[1])
                && !taken.iter().any(|&t| ranges.iter().any(|&r| overlap(r, t)))
            {
                match p.first_busy() {
                    None => {
                        taken.extend(ranges);
                        return p;
                    }
                    Some(b) => busy.push(b),
                }
            }
            drop(taken);
            if Instant::now() > deadline {
                panic!(
                    "no free UDP ports for the test after 30 s (busy: {:?})",
                    &busy[busy.len().saturating_sub(10)..]
                );
            }
        }
    }

    /// The first port that cannot be bound now, if any.
    fn first_busy(&self) -> Option<SocketAddr> {
        let mut want: Vec<SocketAddr> = vec![
            (SIP_IP, self.kolokol).into(),
            (Ipv4Addr::LOCALHOST, self.ng).into(),
            (SIP_IP, self.uac).into(),
            (SIP_IP, self.trunks[0]).into(),
            (SIP_IP, self.trunks[1]).into(),
        ];
        for port in self.uac_media..self.uac_media + 8 {
            want.push((UAC_MEDIA_IP, port).into());
        }
        for (ip, base) in TRUNK_MEDIA_IP.iter().zip(self.trunk_media) {
            for port in base..base + 4 {
                want.push((*ip, port).into());
            }
        }
        for port in self.media_min..=self.media_max {
            want.push((RELAY_IP, port).into());
        }
        // The SIP ports serve TCP too in the TCP tests.
        let sip = [self.kolokol, self.uac, self.trunks[0], self.trunks[1]];
        sip.iter()
            .map(|&p| SocketAddr::from((SIP_IP, p)))
            .find(|a| std::net::TcpListener::bind(a).is_err())
            .or_else(|| want.into_iter().find(|a| UdpSocket::bind(a).is_err()))
    }
}

fn pick_in(rng: &mut u64, width: u16) -> u16 {
    let slots = u64::from((PICK_HIGH - PICK_LOW - width) / 16);
    PICK_LOW + 16 * (xorshift(rng) % slots) as u16
}

// ---------------------------------------------------------------------------
// Processes and logs

fn fixture(xml: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp/b2bua")
        .join(xml)
}

// ---------------------------------------------------------------------------
// Readiness

/// Send OPTIONS to the gateway until it answers 200 (its SIP socket is up
/// and the shard serves it); fail if it exits or the time runs out.
fn wait_options_200(h: &mut Harness, id: ProcId, port: u16, limit: Duration) {
    let sock = UdpSocket::bind((SIP_IP, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let deadline = Instant::now() + limit;
    let mut n = 0;
    loop {
        h.assert_alive(id);
        n += 1;
        let msg = format!(
            "OPTIONS sip:{SIP_IP}:{port} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-b2bua-probe-{n}\r\n\
             From: <sip:probe@{local}>;tag=probe{n}\r\n\
             To: <sip:{SIP_IP}:{port}>\r\n\
             Call-ID: b2bua-probe-{n}-{}@{local}\r\n\
             CSeq: {n} OPTIONS\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n",
            nanos()
        );
        let _ = sock.send_to(msg.as_bytes(), (SIP_IP, port));
        let mut buf = [0u8; 4096];
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            match sock.recv_from(&mut buf) {
                Ok((len, _)) if buf[..len].starts_with(b"SIP/2.0 200") => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if Instant::now() > deadline {
            panic!("kolokol did not answer OPTIONS on {SIP_IP}:{port} within {limit:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// The origination API (issue 4, item 6), through in-process shards

/// Shards started in this process from the test's config (the library's
/// `spawn_all`, as `kolokol run` does), and their event queue.
fn shards_in_process(
    t: &Test,
    trunks: &[Trunk],
) -> (
    Vec<kolokol::shard::ShardHandle>,
    crossbeam_channel::Receiver<kolokol::shard::ShardEvent>,
) {
    let cfg = kolokol::config::Config::parse(&t.config_text(trunks)).expect("test config");
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let shards = kolokol::shard::spawn_all(&cfg, tx).expect("shards start");
    (shards, rx)
}

/// The next origination event (others are skipped), within `limit`.
fn next_origination(
    rx: &crossbeam_channel::Receiver<kolokol::shard::ShardEvent>,
    limit: Duration,
) -> kolokol::call::OriginationEventKind {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(kolokol::shard::ShardEvent::Origination { event, .. }) => {
                assert_eq!(event.correlation, 77, "correlation not echoed");
                return event.kind;
            }
            Ok(_) => {}
            Err(_) => panic!("no origination event within {limit:?}"),
        }
    }
}

fn originate_request() -> kolokol::call::OriginateRequest {
    kolokol::call::OriginateRequest {
        number: format!("+{NUMBER}"),
        caller_id: None,
        account: "portal-test".into(),
        correlation: 77,
        max_duration: Some(Duration::from_secs(60)),
    }
}

/// The control plane places a call to a number: the trunk gets the INVITE
/// (with the gateway's relay in the SDP), and the events say dialing,
/// ringing, answered; the control plane hangs up, the trunk gets a BYE and
/// the event says ended by us.
#[test]
fn originated_call_rings_answers_and_is_hung_up() {
    use kolokol::call::{Hangup, OriginationEventKind as K};
    let mut t = Test::new("originate", Tr::Udp);
    t.shards = 2;
    let trunks = [Trunk::new("t1", 0)];
    let (mut shards, rx) = shards_in_process(&t, &trunks);
    let uas = t.trunk_uas(0, "uas_answer.xml", 1);
    let o = kolokol::shard::originate(&shards, originate_request()).expect("originate");
    let limit = Duration::from_secs(10);
    assert!(
        matches!(next_origination(&rx, limit), K::Dialing { ref trunk, attempt: 1 } if trunk == "t1")
    );
    assert!(matches!(
        next_origination(&rx, limit),
        K::Ringing { status: 180, .. }
    ));
    match next_origination(&rx, limit) {
        K::Answered { remote_sdp } => {
            let sdp = String::from_utf8_lossy(&remote_sdp);
            assert!(
                sdp.contains(&TRUNK_MEDIA_IP[0].to_string()),
                "answer is not the trunk's: {sdp}"
            );
        }
        other => panic!("expected Answered, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(300));
    kolokol::shard::hangup_origination(&shards, o).expect("hang up");
    assert!(matches!(
        next_origination(&rx, limit),
        K::Ended {
            by: Hangup::Caller,
            q850: 16
        }
    ));
    // A second hang-up of the same call is refused: it has ended.
    assert_eq!(
        kolokol::shard::hangup_origination(&shards, o),
        Err(kolokol::shard::ShardError::UnknownOrigination)
    );
    t.expect_success(uas, 1);
    let offers = t.log_lines("trunk0", "UAS_OFFER_SDP");
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_eq!(
        offers[0]["c"],
        RELAY_IP.to_string(),
        "offer not from the relay"
    );
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_BYE").len(), 1);
    for s in &mut shards {
        s.stop();
    }
}

/// The first trunk answers 503: the call goes to the second (a second
/// Dialing event), which answers and later hangs up itself. Bad input is
/// refused before anything is sent.
#[test]
fn originated_call_fails_over_and_the_far_end_hangs_up() {
    use kolokol::call::{Hangup, OriginateError, OriginationEventKind as K};
    let mut t = Test::new("originate-failover", Tr::Udp);
    let trunks = [Trunk::new("t1", 0), Trunk::new("t2", 1)];
    let (mut shards, rx) = shards_in_process(&t, &trunks);
    let mut bad = originate_request();
    bad.number = "12ab".into();
    assert!(matches!(
        kolokol::shard::originate(&shards, bad),
        Err(kolokol::shard::ShardError::Refused(
            OriginateError::BadNumber(_)
        ))
    ));
    let uas1 = t.trunk_uas(0, "uas_503.xml", 1);
    let uas2 = t.trunk_uas(1, "uas_hangup.xml", 1);
    kolokol::shard::originate(&shards, originate_request()).expect("originate");
    let limit = Duration::from_secs(10);
    assert!(matches!(
        next_origination(&rx, limit),
        K::Dialing { attempt: 1, .. }
    ));
    assert!(
        matches!(next_origination(&rx, limit), K::Dialing { ref trunk, attempt: 2 } if trunk == "t2")
    );
    let mut kinds = Vec::new();
    loop {
        let k = next_origination(&rx, limit);
        let end = matches!(k, K::Ended { .. } | K::Failed { .. });
        kinds.push(k);
        if end {
            break;
        }
    }
    assert!(
        kinds.iter().any(|k| matches!(k, K::Answered { .. })),
        "{kinds:?}"
    );
    assert!(
        matches!(
            kinds.last(),
            Some(K::Ended {
                by: Hangup::Callee,
                ..
            })
        ),
        "{kinds:?}"
    );
    t.expect_success(uas1, 1);
    t.expect_success(uas2, 1);
    for s in &mut shards {
        s.stop();
    }
}

/// Hung up while the trunk rings: the trunk gets a CANCEL, and the event
/// says failed with 487.
#[test]
fn originated_call_hung_up_while_ringing_is_cancelled() {
    use kolokol::call::OriginationEventKind as K;
    let mut t = Test::new("originate-cancel", Tr::Udp);
    let trunks = [Trunk::new("t1", 0)];
    let (mut shards, rx) = shards_in_process(&t, &trunks);
    let uas = t.trunk_uas(0, "uas_ring_cancel.xml", 1);
    let o = kolokol::shard::originate(&shards, originate_request()).expect("originate");
    let limit = Duration::from_secs(10);
    assert!(matches!(next_origination(&rx, limit), K::Dialing { .. }));
    assert!(matches!(next_origination(&rx, limit), K::Ringing { .. }));
    kolokol::shard::hangup_origination(&shards, o).expect("hang up");
    assert!(matches!(
        next_origination(&rx, limit),
        K::Failed { status: 487, .. }
    ));
    t.expect_success(uas, 1);
    assert_eq!(t.log_lines("trunk0", "UAS_GOT_CANCEL").len(), 1);
    for s in &mut shards {
        s.stop();
    }
}
