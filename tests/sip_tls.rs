//! A basic call over SIP/TLS through the real `kolokol` binary, TLS on both
//! legs, with RTP relayed and checked bit-exact.
//!
//! ```text
//!   caller (this test, rustls client) ──TLS──> kolokol sip.tls
//!   kolokol (TLS client, trusts the test CA) ──TLS──> trunk (this test,
//!                                                     rustls server)
//!   caller RTP 127.0.0.1 ──> relay ──> trunk RTP (echoes) ──> relay ──> caller
//! ```
//!
//! The Debian SIPp has no TLS (tests/sipp/b2bua/tcp_notes.md), so both
//! user agents are written here, with rustls and the TEST-ONLY certificate
//! and CA in `config/tls/` (the gateway presents `sip-test.crt`; the
//! caller trusts `test-ca.crt`; the trunk presents the same certificate and
//! the gateway trusts it through `sip.tls_ca`). They are deliberately
//! small: one call, messages framed by Content-Length.
//!
//! Also checked: a peer that speaks plain TCP to the TLS port is dropped
//! and counted (`tls_errors`) without disturbing the call.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

mod harness;
use harness::{nanos, tail, wait_tcp_listen, xorshift, Harness};

const IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
const NUMBER: &str = "4930123456";
const RTP_PACKETS: u16 = 50;

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tls")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(tls_dir().join("test-ca.crt")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn server_config() -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(tls_dir().join("sip-test.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(tls_dir().join("sip-test.key")).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    )
}

/// One SIP message off a stream: headers up to the empty line, then
/// Content-Length bytes of body. Fails the test after `limit`.
fn read_msg(s: &mut impl Read, pending: &mut Vec<u8>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    let n = n.trim();
                    (n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l"))
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
            if pending.len() >= end + 4 + len {
                let msg: Vec<u8> = pending.drain(..end + 4 + len).collect();
                return String::from_utf8(msg).unwrap();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete SIP message within {limit:?}; have {:?}",
            String::from_utf8_lossy(pending)
        );
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "connection closed; have {:?}",
                String::from_utf8_lossy(pending)
            ),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n\r\n").next()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The RTP address in an SDP body (c= and m=audio).
fn sdp_addr(msg: &str) -> SocketAddr {
    let body = msg.split("\r\n\r\n").nth(1).unwrap_or("");
    let ip = body
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .unwrap_or_else(|| panic!("no c= in {msg:?}"));
    let port = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .unwrap_or_else(|| panic!("no m=audio in {msg:?}"));
    format!("{}:{}", ip.trim(), port).parse().unwrap()
}

fn sdp(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {IP}\r\ns=-\r\nc=IN IP4 {IP}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// Free ports: `n` consecutive ones (TCP and UDP) in 10000-19999.
fn pick_ports(n: u16) -> u16 {
    let mut rng = nanos() | 1;
    for _ in 0..1000 {
        let base = 10_000 + (xorshift(&mut rng) % 9_000) as u16;
        if (base..base + n)
            .all(|p| TcpListener::bind((IP, p)).is_ok() && UdpSocket::bind((IP, p)).is_ok())
        {
            return base;
        }
    }
    panic!("no {n} free ports in 10000-19999");
}

/// The trunk: accepts the gateway's TLS connection, answers the INVITE with
/// 180 and 200 (SDP toward its echoing RTP socket), takes the ACK and the
/// BYE. Returns the messages it received.
fn trunk(listener: TcpListener, rtp_port: u16) -> Vec<String> {
    listener.set_nonblocking(false).unwrap();
    let (sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let conn = rustls::ServerConnection::new(server_config()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut pending = Vec::new();
    let mut got = Vec::new();
    let rtp = UdpSocket::bind((IP, rtp_port)).unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let invite = read_msg(&mut s, &mut pending, Duration::from_secs(10));
    assert!(invite.starts_with("INVITE "), "trunk got {invite:?}");
    let body = sdp(rtp_port);
    let reply = |status: &str, to_tag: bool, body: &str| -> String {
        let mut r = format!("SIP/2.0 {status}\r\n");
        for l in invite.split("\r\n\r\n").next().unwrap().lines().skip(1) {
            let n = l
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if ["via", "from", "call-id", "cseq"].contains(&n.as_str()) {
                r.push_str(l);
                r.push_str("\r\n");
            } else if n == "to" {
                r.push_str(l);
                r.push_str(if to_tag { ";tag=trunk1\r\n" } else { "\r\n" });
            }
        }
        r.push_str(&format!("Contact: <sip:trunk@{IP}:5061;transport=tls>\r\n"));
        if body.is_empty() {
            r.push_str("Content-Length: 0\r\n\r\n");
        } else {
            r.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ));
        }
        r
    };
    s.write_all(reply("180 Ringing", true, "").as_bytes())
        .unwrap();
    s.write_all(reply("200 OK", true, &body).as_bytes())
        .unwrap();
    s.flush().unwrap();
    got.push(invite.clone());
    // ACK, then RTP echo until the BYE.
    let ack = read_msg(&mut s, &mut pending, Duration::from_secs(10));
    assert!(ack.starts_with("ACK "), "trunk got {ack:?} for the ACK");
    got.push(ack);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 2048];
    loop {
        assert!(Instant::now() < deadline, "trunk: no BYE within 20 s");
        while let Ok((n, from)) = rtp.recv_from(&mut buf) {
            let _ = rtp.send_to(&buf[..n], from);
        }
        // A short read timeout on the TLS socket: poll for the BYE.
        let mut b = [0u8; 4096];
        match s.read(&mut b) {
            Ok(0) => panic!("gateway closed the trunk connection before BYE"),
            Ok(n) => pending.extend_from_slice(&b[..n]),
            Err(_) => {}
        }
        if pending.windows(4).any(|w| w == b"\r\n\r\n") {
            let bye = read_msg(&mut s, &mut pending, Duration::from_secs(5));
            assert!(bye.starts_with("BYE "), "trunk got {bye:?} for the BYE");
            let ok = {
                let mut r = String::from("SIP/2.0 200 OK\r\n");
                for l in bye.lines().skip(1) {
                    let n = l
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    if ["via", "from", "to", "call-id", "cseq"].contains(&n.as_str()) {
                        r.push_str(l);
                        r.push_str("\r\n");
                    }
                }
                r + "Content-Length: 0\r\n\r\n"
            };
            s.write_all(ok.as_bytes()).unwrap();
            s.flush().unwrap();
            got.push(bye);
            return got;
        }
    }
}

#[test]
fn basic_call_over_tls_both_legs() {
    let h_label = "sip-tls";
    let mut h = Harness::new(h_label);
    let base = pick_ports(8);
    let (udp, tls, ng, trunk_port, uac_rtp, trunk_rtp) =
        (base, base + 1, base + 2, base + 3, base + 4, base + 6);
    let media = pick_ports(32);
    let dir = tls_dir();
    let cfg = format!(
        "# written by tests/sip_tls.rs\n\
         [shards]\ncount = 2\ncpus = []\n\n\
         [media]\naddress = \"{IP}\"\nport_min = {media}\nport_max = {}\ncalls_max = 8\n\
         timeout_s = 30\n\n\
         [ng]\nlisten = \"{IP}:{ng}\"\n\n\
         [sip]\nudp = [\"{IP}:{udp}\"]\ntcp = []\ntls = \"{IP}:{tls}\"\n\
         tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_ca = \"{}\"\n\n\
         [[trunks]]\nname = \"t1\"\naddress = \"{IP}:{trunk_port}\"\ntransport = \"tls\"\n\
         options_interval_s = 0\n\n\
         [[routes]]\nprefix = \"\"\nto = \"trunks\"\n",
        media + 31,
        dir.join("sip-test.crt").display(),
        dir.join("sip-test.key").display(),
        dir.join("test-ca.crt").display(),
    );
    let path = h.dir.join("kolokol.toml");
    fs::write(&path, cfg).unwrap();
    let listener = TcpListener::bind((IP, trunk_port)).unwrap();
    let trunk_thread = std::thread::spawn(move || trunk(listener, trunk_rtp));
    let mut c = Command::new(env!("CARGO_BIN_EXE_kolokol"));
    c.arg("run").arg("--config").arg(&path);
    let gw = h.spawn("kolokol", c);
    wait_tcp_listen(&mut h, gw, IP, tls, Duration::from_secs(15));

    // A peer speaking plain SIP to the TLS port is not a TLS peer.
    {
        let mut junk = TcpStream::connect((IP, tls)).unwrap();
        let _ = junk.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 512];
        // The gateway closes it (maybe after a TLS alert): EOF, not SIP.
        let mut seen = Vec::new();
        while let Ok(n) = junk.read(&mut b) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&b[..n]);
        }
        assert!(
            !seen.starts_with(b"SIP/2.0"),
            "the TLS port answered plain SIP: {:?}",
            String::from_utf8_lossy(&seen)
        );
    }

    // The caller.
    let sock = TcpStream::connect((IP, tls)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = sock.local_addr().unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(client_config(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let rtp = UdpSocket::bind((IP, uac_rtp)).unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let offer = sdp(uac_rtp);
    let call_id = format!("tls-{}@{IP}", nanos());
    let common = |method: &str, cseq: u32, branch: &str, to_tag: &str| -> String {
        format!(
            "Via: SIP/2.0/TLS {local};branch=z9hG4bK{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{IP}>;tag=uac1\r\n\
             To: <sip:{NUMBER}@{IP}>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\nContact: <sip:caller@{local};transport=tls>\r\n"
        )
    };
    let invite = format!(
        "INVITE sip:{NUMBER}@{IP}:{tls};transport=tls SIP/2.0\r\n{}\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
        common("INVITE", 1, "inv1", ""),
        offer.len()
    );
    s.write_all(invite.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut pending = Vec::new();
    let ok = loop {
        let m = read_msg(&mut s, &mut pending, Duration::from_secs(10));
        let status: u16 = m
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        assert!(
            m.starts_with("SIP/2.0 ") && status < 300,
            "caller got {m:?}; gateway stderr:\n{}",
            tail(&h.dir.join("kolokol.err"), 20)
        );
        if status >= 200 {
            break m;
        }
    };
    let contact = header(&ok, "Contact").unwrap_or("");
    assert!(
        contact.contains(&format!("{IP}:{tls};transport=tls")),
        "the gateway's Contact over TLS: {contact:?}"
    );
    let to = header(&ok, "To").unwrap();
    let to_tag = &to[to.find(";tag=").expect("To tag in 200")..];
    let relay = sdp_addr(&ok);
    assert!(
        (media..=media + 31).contains(&relay.port()),
        "answer points at {relay}, not the relay range"
    );
    let ack = format!(
        "ACK sip:{NUMBER}@{IP}:{tls};transport=tls SIP/2.0\r\n{}Content-Length: 0\r\n\r\n",
        common("ACK", 1, "ack1", to_tag)
    );
    s.write_all(ack.as_bytes()).unwrap();
    s.flush().unwrap();

    // RTP: every packet comes back through the trunk's echo, bit-exact.
    let mut echoed = 0u16;
    let mut buf = [0u8; 2048];
    for seq in 0..RTP_PACKETS {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend((0..160u32).map(|i| (i as u8) ^ (seq as u8)));
        rtp.send_to(&p, relay).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        while let Ok((n, from)) = rtp.recv_from(&mut buf) {
            assert_eq!(from, relay, "RTP came back from {from}, not the relay");
            let s = u16::from_be_bytes([buf[2], buf[3]]);
            let want: Vec<u8> = (0..160u32).map(|i| (i as u8) ^ (s as u8)).collect();
            assert_eq!(&buf[12..n], &want[..], "payload of packet {s} changed");
            echoed += 1;
        }
    }
    let until = Instant::now() + Duration::from_secs(2);
    while echoed < RTP_PACKETS && Instant::now() < until {
        if let Ok((n, _)) = rtp.recv_from(&mut buf) {
            if n > 12 {
                echoed += 1;
            }
        }
    }
    assert!(
        echoed >= RTP_PACKETS * 9 / 10,
        "only {echoed} of {RTP_PACKETS} RTP packets came back through the relay"
    );

    let bye = format!(
        "BYE sip:{NUMBER}@{IP}:{tls};transport=tls SIP/2.0\r\n{}Content-Length: 0\r\n\r\n",
        common("BYE", 2, "bye1", to_tag)
    );
    s.write_all(bye.as_bytes()).unwrap();
    s.flush().unwrap();
    let r = read_msg(&mut s, &mut pending, Duration::from_secs(10));
    assert!(r.starts_with("SIP/2.0 200"), "BYE answered {r:?}");

    let got = trunk_thread.join().expect("trunk thread");
    let via = header(&got[0], "Via").unwrap_or("");
    assert!(
        via.starts_with(&format!("SIP/2.0/TLS {IP}:{tls}")),
        "the gateway's INVITE to the TLS trunk has Via {via:?}"
    );
    let trunk_contact = header(&got[0], "Contact").unwrap_or("");
    assert!(
        trunk_contact.contains("transport=tls"),
        "the gateway's Contact toward the trunk: {trunk_contact:?}"
    );

    let st = h.terminate(gw, Duration::from_secs(10));
    assert!(st.success(), "kolokol exited with {st}");
    let err = fs::read_to_string(h.dir.join("kolokol.err")).unwrap();
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
    assert_eq!(sum("accepted: "), 2, "TLS connections accepted:\n{err}");
    assert_eq!(sum("opened: "), 1, "TLS connections opened to the trunk");
    assert!(
        sum("tls_errors: ") >= 1,
        "the plain-TCP peer on the TLS port was not counted as a TLS error"
    );
}
