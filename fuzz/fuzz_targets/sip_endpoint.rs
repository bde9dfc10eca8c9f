//! SIP endpoint: arbitrary bytes become a sequence of inputs for one
//! `SipEndpoint` (time steps, messages from two peers over UDP/TCP/TLS, and TU calls:
//! respond, invite, cancel, BYE), with every output drained after each.
//! Nothing is asserted but no panic and the bounds: pending outputs, calls
//! and transactions never exceed their configured caps.
//!
//! Input format, repeated: one op byte, one time-step byte (ms * 16), then
//! for a datagram a 2-byte big-endian length and that many bytes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kolokol::sip::endpoint::{
    CallHandle, EndpointConfig, Event, InviteParams, Output, Remote, SipEndpoint, Transport,
};
use libfuzzer_sys::fuzz_target;

const OUTPUTS_MAX: usize = 32;
const CALLS_MAX: usize = 4;
const TX_MAX: usize = 16;
/// Inputs per run: bounds the time one case takes.
const STEPS_MAX: usize = 256;

fn peer(i: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + (i & 1))), 5060)
}

/// The transport of a message or call: UDP, TCP or TLS, from op bits.
fn transport(i: u8) -> Transport {
    [Transport::Udp, Transport::Tcp, Transport::Tls][usize::from(i >> 1) % 3]
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = EndpointConfig::new(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)), 5060), 1);
    cfg.outputs_max = OUTPUTS_MAX;
    cfg.dialogs_max = CALLS_MAX;
    cfg.transactions_max = TX_MAX;
    let mut ep = SipEndpoint::new(cfg, 42);
    let start = Instant::now();
    let mut now = start;
    let mut calls: Vec<CallHandle> = Vec::new();
    let mut rest = data;
    for _ in 0..STEPS_MAX {
        let [op, step, tail @ ..] = rest else { break };
        rest = tail;
        now += Duration::from_millis(u64::from(*step) * 16);
        let pick = calls.get(usize::from(*step) % calls.len().max(1)).copied();
        match op % 8 {
            0..=3 => {
                let [hi, lo, tail @ ..] = rest else { break };
                let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
                let (dgram, tail) = tail.split_at(len);
                rest = tail;
                let src = Remote {
                    addr: peer(*op >> 3),
                    transport: transport(*op >> 3),
                };
                ep.handle_message(now, src, dgram);
            }
            4 => {
                if let Some(c) = pick {
                    let status = [180, 183, 200, 486, 487, 603][usize::from(*op >> 3) % 6];
                    let body = (status == 200).then_some(("application/sdp", &b"v=0\r\n"[..]));
                    let _ = ep.respond(now, c, status, "X", body);
                }
            }
            5 => {
                let p = InviteParams {
                    target: peer(*op >> 3),
                    transport: transport(*op >> 3),
                    request_uri: "sip:bob@192.0.2.2",
                    from: "sip:alice@192.0.2.9",
                    from_display: None,
                    to: "sip:bob@192.0.2.2",
                    call_id: None,
                    sdp: Some(b"v=0\r\n"),
                    extra_headers: &[],
                };
                if let Ok(c) = ep.invite(now, &p) {
                    calls.push(c);
                }
            }
            6 => {
                if let Some(c) = pick {
                    let _ = ep.cancel(now, c);
                }
            }
            _ => {
                if let Some(c) = pick {
                    let _ = ep.send_bye(now, c);
                }
            }
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        assert!(ep.outputs_len() <= OUTPUTS_MAX);
        assert!(ep.calls_len() <= CALLS_MAX);
        assert!(ep.transactions_len() <= TX_MAX);
        while let Some(o) = ep.poll_output() {
            match o {
                Output::Event(Event::IncomingCall { call, .. }) => {
                    if calls.len() < 64 {
                        calls.push(call);
                    }
                }
                Output::Transmit { bytes, .. } => assert!(bytes.len() <= 2 * 65_536),
                Output::Event(_) => {}
            }
        }
    }
    // Run every timer out: the endpoint must go idle on its own.
    for _ in 0..10_000 {
        let Some(t) = ep.poll_timeout() else { break };
        now = now.max(t);
        ep.handle_timeout(now);
        while ep.poll_output().is_some() {}
    }
    assert!(ep.poll_timeout().is_none(), "timers never ran out");
});
