//! A simulated carrier on loopback: a SIP user agent (UAS) that answers the
//! gateway's calls as a telephone network would, for `kolokol demo` and the
//! integration tests of the portal's flows.
//!
//! It is Kolokol's own sans-IO [`SipEndpoint`] over a UDP socket, on a
//! thread of its own. What it does with a call depends on the called
//! number ([`Behaviour`]): ring for a while and answer, or answer busy (486)
//! or never (the gateway's timeout), send audio (a tone, G.711 at 20 ms),
//! press a DTMF key (RFC 4733, three end packets) some time after the
//! answer, hang up after a while. It records every call ([`CallLog`]): how
//! much audio it received, how loud it was, and what happened, so a test
//! can check that a prompt was played (its length, not silence) and that
//! audio crossed a bridge.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sdp::Sdp;
use crate::sip::endpoint::{CallHandle, EndpointConfig, Event, Output, SipEndpoint};

/// How the carrier treats calls to one number.
#[derive(Clone, Debug)]
pub struct Behaviour {
    /// Ring this long (180) before the final answer.
    pub ring: Duration,
    /// The final answer: 200 answers; 486 busy, 480, 603 ...; `None`
    /// never answers (the gateway times out or cancels).
    pub answer: Option<u16>,
    /// Send a tone while the call is up.
    pub send_audio: bool,
    /// Press this key this long after the answer.
    pub dtmf: Option<(char, Duration)>,
    /// Hang up this long after the answer.
    pub hangup_after: Option<Duration>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            ring: Duration::from_millis(300),
            answer: Some(200),
            send_audio: true,
            dtmf: None,
            hangup_after: None,
        }
    }
}

/// What happened to one call.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    /// The called number (Request-URI user part).
    pub number: String,
    /// The final status the carrier sent.
    pub status: Option<u16>,
    /// The call was answered and acknowledged.
    pub answered: bool,
    /// RTP packets received.
    pub rtp_packets: u64,
    /// G.711 payload bytes received (8,000 per second of audio).
    pub audio_bytes: u64,
    /// Mean absolute amplitude of the received audio (16-bit linear).
    pub mean_level: f64,
    /// The key it pressed.
    pub dtmf_sent: Option<char>,
    /// The call has ended; `by_remote`: the gateway hung up.
    pub ended: Option<bool>,
    /// RTP packets it sent.
    pub rtp_sent: u64,
}

/// The simulated carrier. Dropping it stops its thread.
pub struct SimCarrier {
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<CallLog>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

struct Media {
    sock: UdpSocket,
    /// Where the gateway wants our RTP (its relay leg).
    remote: Option<SocketAddr>,
    pt: u8,
    te_pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    next_send: Instant,
    /// Sum of |sample| and count, for the level.
    level: (f64, u64),
}

struct Live {
    log: usize,
    beh: Behaviour,
    media: Media,
    answer_at: Option<Instant>,
    answered_at: Option<Instant>,
    dtmf_done: bool,
    hung_up: bool,
}

impl SimCarrier {
    /// Starts the carrier's SIP on `sip` (port 0 picks one) and its media
    /// on `media_ip`; calls to a number in `numbers` follow its behaviour,
    /// others `default`.
    pub fn start(
        sip: SocketAddr,
        media_ip: IpAddr,
        numbers: HashMap<String, Behaviour>,
        default: Behaviour,
    ) -> io::Result<SimCarrier> {
        let sock = UdpSocket::bind(sip)?;
        sock.set_read_timeout(Some(Duration::from_millis(2)))?;
        let addr = sock.local_addr()?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (logs.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("sim-carrier".into())
            .spawn(move || run(sock, addr, media_ip, numbers, default, l, s))?;
        Ok(SimCarrier {
            addr,
            logs,
            stop,
            thread: Some(thread),
        })
    }

    /// The carrier's SIP address (the gateway's trunk address).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<CallLog> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for SimCarrier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// µ-law encoding of a 16-bit linear sample (ITU-T G.711).
fn mulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = (s + BIAS).min(0x7fff);
    let exp = (31 - (s as u32).leading_zeros()).saturating_sub(7).min(7);
    let mant = (s >> (exp + 3)) & 0x0f;
    !(sign | ((exp as i32) << 4) | mant) as u8
}

/// Linear value of a µ-law byte.
fn mulaw_decode(b: u8) -> i16 {
    let b = !b;
    let sign = b & 0x80;
    let exp = (b >> 4) & 0x07;
    let mant = i32::from(b & 0x0f);
    let mag = (((mant << 3) + 0x84) << exp) - 0x84;
    if sign != 0 {
        -mag as i16
    } else {
        mag as i16
    }
}

/// Linear value of an A-law byte.
fn alaw_decode(b: u8) -> i16 {
    let b = b ^ 0x55;
    let sign = b & 0x80;
    let exp = (b >> 4) & 0x07;
    let mant = i32::from(b & 0x0f);
    let mag = if exp == 0 {
        (mant << 4) + 8
    } else {
        ((mant << 4) + 0x108) << (exp - 1)
    };
    if sign != 0 {
        mag as i16
    } else {
        -mag as i16
    }
}

fn answer_sdp(ip: IpAddr, port: u16, pt: u8, te_pt: u8) -> Vec<u8> {
    let fam = if ip.is_ipv6() { "IP6" } else { "IP4" };
    let name = if pt == 8 { "PCMA" } else { "PCMU" };
    format!(
        "v=0\r\no=carrier 1 1 IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pt} {te_pt}\r\na=rtpmap:{pt} {name}/8000\r\n\
         a=rtpmap:{te_pt} telephone-event/8000\r\na=fmtp:{te_pt} 0-15\r\na=sendrecv\r\n"
    )
    .into_bytes()
}

/// The offer's RTP address, G.711 payload type and telephone-event type.
fn read_offer(sdp: &[u8]) -> (Option<SocketAddr>, u8, u8) {
    let Ok(s) = Sdp::parse(sdp) else {
        return (None, 0, 101);
    };
    let Some(m) = s.media.iter().find(|m| m.port != 0) else {
        return (None, 0, 101);
    };
    let pt = m
        .formats
        .iter()
        .find_map(|f| match f.as_str() {
            "0" => Some(0),
            "8" => Some(8),
            _ => None,
        })
        .unwrap_or(0);
    let te = m
        .lines
        .iter()
        .find_map(|l| {
            let (pt, enc) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
            enc.to_ascii_lowercase()
                .starts_with("telephone-event/")
                .then(|| pt.trim().parse().ok())?
        })
        .unwrap_or(101);
    let addr = (!m.address.is_unspecified()).then(|| SocketAddr::new(m.address, m.port));
    (addr, pt, te)
}

fn rtp_header(out: &mut Vec<u8>, marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32) {
    out.push(0x80);
    out.push(if marker { 0x80 | pt } else { pt });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
}

#[allow(clippy::too_many_arguments)]
fn run(
    sock: UdpSocket,
    addr: SocketAddr,
    media_ip: IpAddr,
    numbers: HashMap<String, Behaviour>,
    default: Behaviour,
    logs: Arc<Mutex<Vec<CallLog>>>,
    stop: Arc<AtomicBool>,
) {
    let mut cfg = EndpointConfig::new(addr, 0);
    cfg.user_agent = "Kolokol-SimCarrier".into();
    cfg.session_expires_s = 0;
    let mut ep = SipEndpoint::new(cfg, rand::random());
    let mut calls: HashMap<CallHandle, Live> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let tone: Vec<u8> = (0..160)
        .map(|i| {
            let x = (i as f64 * 2.0 * std::f64::consts::PI * 425.0 / 8000.0).sin();
            mulaw((x * 8000.0) as i16)
        })
        .collect();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if let Ok((n, src)) = sock.recv_from(&mut buf) {
            ep.handle_datagram(now, src, &buf[..n]);
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        // Media and scheduled actions.
        let mut byes = Vec::new();
        for (h, c) in calls.iter_mut() {
            // Receive.
            while let Ok((n, from)) = c.media.sock.recv_from(&mut buf) {
                if n < 12 {
                    continue;
                }
                if c.media.remote.is_none() {
                    c.media.remote = Some(from);
                }
                let pt = buf[1] & 0x7f;
                let mut log = logs.lock().unwrap_or_else(|e| e.into_inner());
                let l = &mut log[c.log];
                l.rtp_packets += 1;
                if pt == 0 || pt == 8 {
                    let payload = &buf[12..n];
                    l.audio_bytes += payload.len() as u64;
                    for &b in payload {
                        let v = if pt == 0 {
                            mulaw_decode(b)
                        } else {
                            alaw_decode(b)
                        };
                        c.media.level.0 += f64::from(v).abs();
                        c.media.level.1 += 1;
                    }
                    l.mean_level = c.media.level.0 / c.media.level.1.max(1) as f64;
                }
            }
            // Answer when the ringing is over.
            if let Some(t) = c.answer_at {
                if now >= t {
                    c.answer_at = None;
                    let status = c.beh.answer.unwrap_or(200);
                    let mut log = logs.lock().unwrap_or_else(|e| e.into_inner());
                    log[c.log].status = Some(status);
                    drop(log);
                    if status == 200 {
                        let port = c.media.sock.local_addr().map(|a| a.port()).unwrap_or(0);
                        let sdp = answer_sdp(media_ip, port, c.media.pt, c.media.te_pt);
                        let _ = ep.respond(now, *h, 200, "OK", Some(("application/sdp", &sdp)));
                    } else {
                        let _ = ep.respond(now, *h, status, "Busy Here", None);
                    }
                }
            }
            let Some(up) = c.answered_at else { continue };
            if c.hung_up {
                continue;
            }
            // Audio at 20 ms.
            if let (true, Some(dst)) = (c.beh.send_audio, c.media.remote) {
                while c.media.next_send <= now {
                    let mut p = Vec::with_capacity(172);
                    rtp_header(
                        &mut p,
                        false,
                        c.media.pt,
                        c.media.seq,
                        c.media.ts,
                        c.media.ssrc,
                    );
                    p.extend_from_slice(&tone);
                    let _ = c.media.sock.send_to(&p, dst);
                    c.media.seq = c.media.seq.wrapping_add(1);
                    c.media.ts = c.media.ts.wrapping_add(160);
                    c.media.next_send += Duration::from_millis(20);
                    logs.lock().unwrap_or_else(|e| e.into_inner())[c.log].rtp_sent += 1;
                }
            }
            // The key press: RFC 4733, 5 updates then 3 end packets.
            if let (Some((key, after)), false, Some(dst)) =
                (c.beh.dtmf, c.dtmf_done, c.media.remote)
            {
                if now >= up + after {
                    c.dtmf_done = true;
                    let event = match key {
                        '0'..='9' => key as u8 - b'0',
                        '*' => 10,
                        '#' => 11,
                        _ => 1,
                    };
                    let ts = c.media.ts;
                    for i in 0..8u16 {
                        let end = i >= 5;
                        let dur = 160 * (i.min(5) + 1);
                        let mut p = Vec::with_capacity(16);
                        rtp_header(&mut p, i == 0, c.media.te_pt, c.media.seq, ts, c.media.ssrc);
                        p.push(event);
                        p.push(if end { 0x80 | 10 } else { 10 });
                        p.extend_from_slice(&dur.to_be_bytes());
                        let _ = c.media.sock.send_to(&p, dst);
                        c.media.seq = c.media.seq.wrapping_add(1);
                    }
                    c.media.ts = c.media.ts.wrapping_add(160 * 6);
                    logs.lock().unwrap_or_else(|e| e.into_inner())[c.log].dtmf_sent = Some(key);
                }
            }
            if let Some(after) = c.beh.hangup_after {
                if now >= up + after {
                    c.hung_up = true;
                    byes.push(*h);
                }
            }
        }
        for h in byes {
            let _ = ep.send_bye(now, h);
        }
        while let Some(o) = ep.poll_output() {
            match o {
                Output::Transmit { dst, bytes, .. } => {
                    let _ = sock.send_to(&bytes, dst);
                }
                Output::Event(ev) => match ev {
                    Event::IncomingCall {
                        call,
                        request_user,
                        sdp,
                        ..
                    } => {
                        let number = request_user.unwrap_or_default();
                        let beh = numbers
                            .get(&number)
                            .cloned()
                            .unwrap_or_else(|| default.clone());
                        let (remote, pt, te_pt) = sdp.as_deref().map_or((None, 0, 101), read_offer);
                        let Ok(msock) = UdpSocket::bind((media_ip, 0)) else {
                            let _ = ep.respond(now, call, 503, "Service Unavailable", None);
                            continue;
                        };
                        let _ = msock.set_nonblocking(true);
                        let mut log = logs.lock().unwrap_or_else(|e| e.into_inner());
                        log.push(CallLog {
                            number,
                            ..CallLog::default()
                        });
                        let idx = log.len() - 1;
                        drop(log);
                        let _ = ep.respond(now, call, 180, "Ringing", None);
                        let answer_at = beh.answer.map(|_| now + beh.ring);
                        calls.insert(
                            call,
                            Live {
                                log: idx,
                                beh,
                                media: Media {
                                    sock: msock,
                                    remote,
                                    pt,
                                    te_pt,
                                    seq: rand::random(),
                                    ts: rand::random(),
                                    ssrc: rand::random(),
                                    next_send: now,
                                    level: (0.0, 0),
                                },
                                answer_at,
                                answered_at: None,
                                dtmf_done: false,
                                hung_up: false,
                            },
                        );
                    }
                    Event::Acked { call } => {
                        if let Some(c) = calls.get_mut(&call) {
                            c.answered_at = Some(now);
                            c.media.next_send = now;
                            logs.lock().unwrap_or_else(|e| e.into_inner())[c.log].answered = true;
                        }
                    }
                    Event::Reinvite { call, .. } | Event::Update { call, .. } => {
                        if let Some(c) = calls.get(&call) {
                            let port = c.media.sock.local_addr().map(|a| a.port()).unwrap_or(0);
                            let sdp = answer_sdp(media_ip, port, c.media.pt, c.media.te_pt);
                            let _ =
                                ep.respond(now, call, 200, "OK", Some(("application/sdp", &sdp)));
                        }
                    }
                    Event::Ended { call, by_remote } => {
                        if let Some(c) = calls.remove(&call) {
                            logs.lock().unwrap_or_else(|e| e.into_inner())[c.log].ended =
                                Some(by_remote);
                        }
                    }
                    Event::Cancelled { call } => {
                        if let Some(c) = calls.remove(&call) {
                            logs.lock().unwrap_or_else(|e| e.into_inner())[c.log].ended =
                                Some(true);
                        }
                    }
                    Event::AckTimeout { call } | Event::SessionExpired { call } => {
                        if let Some(c) = calls.remove(&call) {
                            logs.lock().unwrap_or_else(|e| e.into_inner())[c.log].ended =
                                Some(false);
                        }
                    }
                    _ => {}
                },
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn g711_round_trips_closely() {
        for v in [-30000i16, -1000, -1, 0, 1, 100, 1000, 8000, 30000] {
            let back = mulaw_decode(mulaw(v));
            let err = (i32::from(back) - i32::from(v)).abs();
            assert!(err <= (i32::from(v).abs() / 16).max(8), "{v} -> {back}");
        }
        // A-law silence and a loud byte.
        assert!(alaw_decode(0xd5).abs() < 16);
        assert!(alaw_decode(0xaa).abs() > 1000);
    }

    #[test]
    fn offer_is_read_for_address_and_payload_types() {
        let sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\n";
        let (a, pt, te) = read_offer(sdp);
        assert_eq!(a, Some("127.0.0.1:4000".parse().unwrap()));
        assert_eq!((pt, te), (8, 96));
    }
}
