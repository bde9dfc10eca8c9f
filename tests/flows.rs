//! The portal's two flows through real shards and real SIP: shards started
//! in this process (the library's `spawn_all`, as `kolokol run` does) with
//! the simulated carrier (`kolokol::demo::carrier`) as the trunk, on
//! loopback. The carrier records what it hears, so the tests check that
//! the prompts were played (length, not silence), that the DTMF key
//! decided the result, and that a click-to-call's audio crossed the bridge
//! both ways.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use kolokol::call::flow::{FlowKind, FlowRequest, FlowState};
use kolokol::config::Config;
use kolokol::demo::carrier::{Behaviour, CallLog, SimCarrier};
use kolokol::shard::{ShardEvent, ShardHandle};

const IP: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Free UDP ports: `n` consecutive ones in 10000-19999.
fn pick_ports(n: u16) -> u16 {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        ^ u64::from(std::process::id()) << 20;
    for _ in 0..1000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let base = 10_000 + (seed % 9_000) as u16;
        if (base..base + n).all(|p| UdpSocket::bind((IP, p)).is_ok()) {
            return base;
        }
    }
    panic!("no free ports");
}

type Seen = (FlowState, Option<&'static str>, Option<char>);

struct Gw {
    shards: Vec<ShardHandle>,
    events: Receiver<ShardEvent>,
    carrier: SimCarrier,
    /// Events read while waiting for another flow's, by correlation.
    held: std::cell::RefCell<HashMap<u64, Vec<Seen>>>,
}

fn gateway(numbers: HashMap<String, Behaviour>) -> Gw {
    let carrier = SimCarrier::start(
        SocketAddr::new(IpAddr::V4(IP), 0),
        IpAddr::V4(IP),
        numbers,
        Behaviour::default(),
    )
    .expect("carrier");
    let sip = pick_ports(4);
    let media = pick_ports(64);
    let cfg = format!(
        "[shards]\ncount = 2\ncpus = []\n\
         [media]\naddress = \"{IP}\"\nport_min = {media}\nport_max = {}\ncalls_max = 32\n\
         [ng]\nlisten = \"{IP}:{}\"\n\
         [sip]\nudp = [\"{IP}:{sip}\"]\ntcp = []\n\
         [[trunks]]\nname = \"carrier\"\naddress = \"{}\"\noptions_interval_s = 0\n\
         [[routes]]\nprefix = \"\"\nto = \"trunks\"\n",
        media + 63,
        sip + 1,
        carrier.addr()
    );
    let cfg = Config::parse(&cfg).expect("config");
    let (tx, rx) = crossbeam_channel::bounded(4096);
    let shards = kolokol::shard::spawn_all(&cfg, tx).expect("shards");
    Gw {
        shards,
        events: rx,
        carrier,
        held: Default::default(),
    }
}

impl Gw {
    /// Flow events with this correlation until a terminal one (bounded).
    fn run_to_end(&self, correlation: u64, limit: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + limit;
        let mut out = self
            .held
            .borrow_mut()
            .remove(&correlation)
            .unwrap_or_default();
        loop {
            if out.last().is_some_and(|e| e.0.is_terminal()) {
                return out;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ShardEvent::Flow { event, .. }) => {
                    let e = (event.state, event.detail.result, event.detail.dtmf);
                    if event.correlation == correlation {
                        out.push(e);
                    } else {
                        self.held
                            .borrow_mut()
                            .entry(event.correlation)
                            .or_default()
                            .push(e);
                    }
                }
                Ok(_) => {}
                Err(_) => panic!("flow {correlation} did not end within {limit:?}: {out:?}"),
            }
        }
    }

    fn call_to(&self, number: &str) -> CallLog {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(c) = self
                .carrier
                .calls()
                .into_iter()
                .find(|c| c.number == number && c.ended.is_some())
            {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "the carrier has no ended call to {number}: {:?}",
                self.carrier.calls()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        for s in &mut self.shards {
            s.stop();
        }
    }
}

fn notification(number: &str, digits: &str, confirm: bool, corr: u64) -> FlowRequest {
    FlowRequest {
        kind: FlowKind::Notification {
            number: number.into(),
            prompt: None,
            digits: Some(digits.into()),
            repeat: 1,
            require_confirmation: confirm,
        },
        language: "en".into(),
        account: "test".into(),
        caller_id: None,
        correlation: corr,
        max_duration: Some(Duration::from_secs(30)),
    }
}

fn states(v: &[Seen]) -> Vec<&'static str> {
    v.iter().map(|e| e.0.as_str()).collect()
}

/// A notification with confirmation: the citizen hears the message, the
/// code and the question (seconds of real speech, not silence) and presses
/// 1 or 2; the flow says confirmed or rejected and completes with it.
#[test]
fn notification_plays_the_code_and_takes_the_key() {
    let mut numbers = HashMap::new();
    for (n, key) in [("+79001110001", '1'), ("+79001110002", '2')] {
        numbers.insert(
            n.to_string(),
            Behaviour {
                // Press after the message and code have played (~6 s).
                dtmf: Some((key, Duration::from_millis(7500))),
                send_audio: false,
                ..Behaviour::default()
            },
        );
    }
    let gw = gateway(numbers);
    let f1 = kolokol::shard::start_flow(&gw.shards, notification("+79001110001", "4711", true, 1))
        .expect("flow 1");
    let f2 = kolokol::shard::start_flow(&gw.shards, notification("+79001110002", "902", true, 2))
        .expect("flow 2");
    let _ = (f1, f2);
    let e1 = gw.run_to_end(1, Duration::from_secs(30));
    let e2 = gw.run_to_end(2, Duration::from_secs(30));
    assert_eq!(
        states(&e1),
        ["dialing", "ringing", "answered", "confirmed", "completed"]
    );
    assert_eq!(e1.last().unwrap().1, Some("confirmed"));
    assert_eq!(e1.last().unwrap().2, Some('1'));
    assert_eq!(
        states(&e2),
        ["dialing", "ringing", "answered", "rejected", "completed"]
    );
    assert_eq!(e2.last().unwrap().1, Some("rejected"));
    let c = gw.call_to("+79001110001");
    // Generic message + "your code is" + 4 digits + the question, then the
    // goodbye: several seconds of audio at 8,000 bytes a second.
    assert!(
        c.audio_bytes >= 5 * 8000,
        "the citizen heard only {} bytes ({} s) of prompts",
        c.audio_bytes,
        c.audio_bytes / 8000
    );
    assert!(
        c.mean_level > 300.0,
        "the prompts the citizen heard are near silence (mean level {})",
        c.mean_level
    );
    assert_eq!(c.ended, Some(true), "the gateway hangs up after goodbye");
}

/// No answer (the phone rings until the call's limit), busy, and a
/// notification without confirmation, delivered.
#[test]
fn notification_outcomes_no_answer_busy_delivered() {
    let mut numbers = HashMap::new();
    numbers.insert(
        "+79001110003".to_string(),
        Behaviour {
            answer: None,
            ..Behaviour::default()
        },
    );
    numbers.insert(
        "+79001110004".to_string(),
        Behaviour {
            answer: Some(486),
            ..Behaviour::default()
        },
    );
    let gw = gateway(numbers);
    let mut na = notification("+79001110003", "1", false, 3);
    na.max_duration = Some(Duration::from_secs(3));
    kolokol::shard::start_flow(&gw.shards, na).unwrap();
    kolokol::shard::start_flow(&gw.shards, notification("+79001110004", "1", false, 4)).unwrap();
    kolokol::shard::start_flow(&gw.shards, notification("+79001110005", "55", false, 5)).unwrap();
    let e3 = gw.run_to_end(3, Duration::from_secs(20));
    assert_eq!(e3.last().unwrap().0, FlowState::NoAnswer, "{e3:?}");
    let e4 = gw.run_to_end(4, Duration::from_secs(20));
    assert_eq!(e4.last().unwrap().0, FlowState::Busy, "{e4:?}");
    let e5 = gw.run_to_end(5, Duration::from_secs(30));
    assert_eq!(
        states(&e5),
        ["dialing", "ringing", "answered", "completed"],
        "{e5:?}"
    );
    assert_eq!(e5.last().unwrap().1, Some("delivered"));
}

/// Click-to-call: the citizen answers and hears the connecting prompt, the
/// support line is dialled and answers, the two are bridged and each hears
/// the other's audio; the control plane hangs up and the flow completes.
#[test]
fn click_to_call_bridges_audio_both_ways() {
    let gw = gateway(HashMap::new());
    let req = FlowRequest {
        kind: FlowKind::ClickToCall {
            citizen: "+79001119999".into(),
            support: "+74950001122".into(),
        },
        language: "ru".into(),
        account: "test".into(),
        caller_id: None,
        correlation: 7,
        max_duration: Some(Duration::from_secs(60)),
    };
    let f = kolokol::shard::start_flow(&gw.shards, req).unwrap();
    // Wait for "bridged".
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while !seen.contains(&FlowState::Bridged) {
        let left = deadline.saturating_duration_since(Instant::now());
        match gw.events.recv_timeout(left) {
            Ok(ShardEvent::Flow { event, .. }) if event.correlation == 7 => {
                assert!(
                    !event.state.is_terminal(),
                    "ended early: {seen:?} {event:?}"
                );
                seen.push(event.state);
            }
            Ok(_) => {}
            Err(_) => panic!("not bridged within 15 s: {seen:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            FlowState::Dialing,
            FlowState::Ringing,
            FlowState::Answered,
            FlowState::Bridged
        ]
    );
    // Two seconds of conversation.
    let at_bridge: HashMap<String, u64> = gw
        .carrier
        .calls()
        .into_iter()
        .map(|c| (c.number, c.rtp_packets))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    kolokol::shard::hangup_flow(&gw.shards, f).unwrap();
    let end = gw.run_to_end(7, Duration::from_secs(10));
    assert_eq!(end.last().unwrap().0, FlowState::Completed);
    assert_eq!(end.last().unwrap().1, Some("bridged"));
    let citizen = gw.call_to("+79001119999");
    let support = gw.call_to("+74950001122");
    for (who, c) in [("citizen", &citizen), ("support", &support)] {
        let before = at_bridge.get(&c.number).copied().unwrap_or(0);
        let during = c.rtp_packets - before;
        // 2 s at 50 packets/s from the other side; allow for start-up.
        assert!(
            during >= 70,
            "{who} received {during} packets across the bridge in 2 s (total {})",
            c.rtp_packets
        );
    }
    assert!(citizen.mean_level > 300.0, "citizen heard silence");
}
