//! Interop with libsrtp2: for every suite, packets protected by libsrtp are
//! unprotected by Kolokol and packets protected by Kolokol are unprotected
//! by libsrtp, bit-exact, across a sequence-number wrap (ROC 0 -> 1) and for
//! SRTCP. Both implementations are deterministic for the same master key,
//! so their protected packets must also be identical byte for byte.
//!
//! The libsrtp side is `tests/interop/srtp_tool.c`, compiled here with the
//! system C compiler against `-lsrtp2` (Debian package `libsrtp2-dev`).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use kolokol::media::srtp::{CryptoBackend, SrtpContext, SrtpError, SrtpSuite};

/// libsrtp's `srtp_err_status_auth_fail`.
const LIBSRTP_AUTH_FAIL: u32 = 7;

/// Builds the C tool once per test binary and returns its path.
fn tool() -> &'static PathBuf {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/srtp_tool.c");
        // Cargo's scratch directory for integration tests, inside the target dir.
        let exe = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("srtp_tool");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
        let out = Command::new(&cc)
            .args(["-O2", "-o"])
            .arg(&exe)
            .arg(&src)
            .arg("-lsrtp2")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run the C compiler `{cc}` ({e}); the libsrtp2 interop test needs a C compiler and the Debian package libsrtp2-dev (apt-get install -y libsrtp2-dev)")
            });
        assert!(
            out.status.success(),
            "compiling {} against libsrtp2 failed; install the Debian package libsrtp2-dev \
             (apt-get install -y libsrtp2-dev).\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
}

/// Runs libsrtp over `packets` and returns, per packet, the output or the
/// libsrtp error status.
fn libsrtp(
    op: &str,
    proto: &str,
    suite: SrtpSuite,
    key: &[u8],
    salt: &[u8],
    packets: &[Vec<u8>],
) -> Vec<Result<Vec<u8>, u32>> {
    let hex: String = key.iter().chain(salt).map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new(tool())
        .args([op, proto, suite.sdes_name(), &hex])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn srtp_tool");
    let mut input = Vec::new();
    for p in packets {
        input.extend_from_slice(&(p.len() as u32).to_be_bytes());
        input.extend_from_slice(p);
    }
    let mut stdin = child.stdin.take().unwrap();
    // Write from another thread so a full stdout pipe cannot deadlock us.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut output)
        .unwrap();
    writer.join().unwrap().expect("write to srtp_tool");
    assert!(child.wait().unwrap().success(), "srtp_tool failed");

    let mut results = Vec::new();
    let mut rest = &output[..];
    while !rest.is_empty() {
        let status = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let len = u32::from_be_bytes(rest[4..8].try_into().unwrap()) as usize;
        let body = rest[8..8 + len].to_vec();
        rest = &rest[8 + len..];
        results.push(if status == 0 { Ok(body) } else { Err(status) });
    }
    assert_eq!(results.len(), packets.len(), "one record per packet");
    results
}

fn kolokol_protect(ctx: &mut SrtpContext, rtcp: bool, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    packets
        .iter()
        .map(|p| {
            let mut buf = vec![0u8; p.len() + 64];
            buf[..p.len()].copy_from_slice(p);
            let n = if rtcp {
                ctx.protect_rtcp(&mut buf, p.len())
            } else {
                ctx.protect_rtp(&mut buf, p.len())
            }
            .expect("kolokol protect");
            buf.truncate(n);
            buf
        })
        .collect()
}

fn kolokol_unprotect(
    ctx: &mut SrtpContext,
    rtcp: bool,
    packet: &[u8],
) -> Result<Vec<u8>, SrtpError> {
    let mut buf = packet.to_vec();
    let n = if rtcp {
        ctx.unprotect_rtcp(&mut buf, packet.len())
    } else {
        ctx.unprotect_rtp(&mut buf, packet.len())
    }?;
    buf.truncate(n);
    Ok(buf)
}

const SSRC_A: u32 = 0x1122_3344;
const SSRC_B: u32 = 0xcafe_f00d;

/// RTP packets for two SSRCs: SSRC_A runs from seq 65500 across the wrap
/// to 63 (ROC 0 -> 1), with a range of payload sizes and some packets with
/// CSRCs and a header extension; SSRC_B is interleaved every 10 packets.
fn rtp_packets() -> Vec<Vec<u8>> {
    let sizes = [160usize, 0, 1, 15, 16, 17, 31, 160, 1000, 160];
    let mut out = Vec::new();
    for k in 0..100u16 {
        let seq = 65500u16.wrapping_add(k);
        let payload = sizes[usize::from(k) % sizes.len()];
        let mut p = Vec::new();
        let (first, csrcs) = match k % 7 {
            3 => (0x80 | 0x10 | 2, 2), // X=1, CC=2
            5 => (0x80 | 0x10, 0),     // X=1
            _ => (0x80, 0),
        };
        p.push(first);
        p.push(if k % 13 == 0 { 0x80 | 8 } else { 0 }); // marker now and then
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(k) * 160).to_be_bytes());
        p.extend_from_slice(&SSRC_A.to_be_bytes());
        for c in 0..csrcs {
            p.extend_from_slice(&(0x0101_0101u32 * (c + 1)).to_be_bytes());
        }
        if first & 0x10 != 0 {
            // One-byte header extension (RFC 8285), 2 words.
            p.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0xaa, 0x21, 1, 2, 0, 0, 0]);
        }
        p.extend((0..payload).map(|i| (i as u8).wrapping_mul(3) ^ (k as u8)));
        out.push(p);
        if k % 10 == 9 {
            let seq_b = 1000 + k;
            let mut q = vec![0x80, 96];
            q.extend_from_slice(&seq_b.to_be_bytes());
            q.extend_from_slice(&[0, 0, 1, 0]);
            q.extend_from_slice(&SSRC_B.to_be_bytes());
            q.extend_from_slice(&[0x42; 160]);
            out.push(q);
        }
    }
    out
}

/// RTCP compound packets: SR + SDES for SSRC_A, RR for SSRC_B.
fn rtcp_packets() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for k in 0..20u32 {
        let mut p = Vec::new();
        if k % 4 == 3 {
            // RR with one report block (8 words).
            p.extend_from_slice(&[0x81, 201, 0, 7]);
            p.extend_from_slice(&SSRC_B.to_be_bytes());
            p.extend_from_slice(&SSRC_A.to_be_bytes());
            p.extend((0..20).map(|i| i as u8 ^ k as u8));
        } else {
            // SR without report blocks, then SDES CNAME.
            p.extend_from_slice(&[0x80, 200, 0, 6]);
            p.extend_from_slice(&SSRC_A.to_be_bytes());
            p.extend((0..20).map(|i| (i as u8).wrapping_add(k as u8)));
            p.extend_from_slice(&[0x81, 202, 0, 3]);
            p.extend_from_slice(&SSRC_A.to_be_bytes());
            p.extend_from_slice(&[1, 5, b'k', b'o', b'l', b'o', b'k', 0]);
        }
        out.push(p);
    }
    out
}

fn master(suite: SrtpSuite) -> (Vec<u8>, Vec<u8>) {
    let key = (0..suite.master_key_len())
        .map(|i| 0x3c ^ (i as u8).wrapping_mul(11))
        .collect();
    let salt = (0..suite.master_salt_len())
        .map(|i| 0xa7 ^ (i as u8).wrapping_mul(5))
        .collect();
    (key, salt)
}

/// Delivery order with some reordering, including around the wrap.
fn reordered<T: Clone>(v: &[T]) -> Vec<(usize, T)> {
    let mut order: Vec<(usize, T)> = v.iter().cloned().enumerate().collect();
    for i in (1..order.len()).step_by(9) {
        order.swap(i - 1, i);
    }
    order
}

fn interop(suite: SrtpSuite, backend: CryptoBackend, rtcp: bool) {
    let (key, salt) = master(suite);
    let proto = if rtcp { "rtcp" } else { "rtp" };
    let plain = if rtcp { rtcp_packets() } else { rtp_packets() };

    // libsrtp protects, Kolokol protects the same packets: identical bytes.
    let by_libsrtp: Vec<Vec<u8>> = libsrtp("protect", proto, suite, &key, &salt, &plain)
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|s| panic!("{suite} {proto}: libsrtp protect #{i}: status {s}"))
        })
        .collect();
    let mut tx = SrtpContext::with_backend(suite, &key, &salt, backend).unwrap();
    let by_kolokol = kolokol_protect(&mut tx, rtcp, &plain);
    for (i, (a, b)) in by_libsrtp.iter().zip(&by_kolokol).enumerate() {
        assert_eq!(
            a, b,
            "{suite} {proto}: protected packet #{i} differs from libsrtp's"
        );
    }
    if !rtcp {
        assert_eq!(tx.tx_roc(SSRC_A), Some(1), "{suite}: ROC after the wrap");
    }

    // libsrtp -> Kolokol, reordered.
    let mut rx = SrtpContext::with_backend(suite, &key, &salt, backend).unwrap();
    for (i, p) in reordered(&by_libsrtp) {
        let got = kolokol_unprotect(&mut rx, rtcp, &p)
            .unwrap_or_else(|e| panic!("{suite} {proto}: Kolokol unprotect #{i}: {e}"));
        assert_eq!(got, plain[i], "{suite} {proto}: #{i} not bit-exact");
    }
    if !rtcp {
        assert_eq!(rx.rx_roc(SSRC_A), Some(1), "{suite}: receiver ROC");
    }
    // A replay of a libsrtp packet is refused.
    assert!(
        kolokol_unprotect(&mut rx, rtcp, &by_libsrtp[50.min(by_libsrtp.len() - 1)])
            .unwrap_err()
            .is_replay()
    );

    // Kolokol -> libsrtp, reordered, then one tampered packet.
    let order = reordered(&by_kolokol);
    let mut wire: Vec<Vec<u8>> = order.iter().map(|(_, p)| p.clone()).collect();
    // A fresh packet (next SRTCP index, or seq 64 after 63) so that
    // libsrtp's replay check passes and its tag check fails.
    let mut next = plain[0].clone();
    if !rtcp {
        next[2..4].copy_from_slice(&64u16.to_be_bytes());
    }
    let mut forged = kolokol_protect(&mut tx, rtcp, &[next]).remove(0);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    wire.push(forged);
    let results = libsrtp("unprotect", proto, suite, &key, &salt, &wire);
    for ((i, _), r) in order.iter().zip(&results) {
        let got = r
            .as_ref()
            .unwrap_or_else(|s| panic!("{suite} {proto}: libsrtp unprotect #{i}: status {s}"));
        assert_eq!(got, &plain[*i], "{suite} {proto}: #{i} not bit-exact");
    }
    assert_eq!(results.last().unwrap(), &Err(LIBSRTP_AUTH_FAIL));
    println!(
        "{suite} {proto} ({}): {} packets libsrtp->kolokol and kolokol->libsrtp ok, protected bytes identical",
        backend.name(),
        plain.len()
    );
}

macro_rules! suite_tests {
    ($($name:ident => $suite:expr,)*) => {
        $(
            #[test]
            fn $name() {
                for &backend in CryptoBackend::AVAILABLE {
                    interop($suite, backend, false);
                    interop($suite, backend, true);
                }
            }
        )*
    };
}

suite_tests! {
    aes_cm_128_hmac_sha1_80 => SrtpSuite::AesCm128HmacSha1_80,
    aes_cm_128_hmac_sha1_32 => SrtpSuite::AesCm128HmacSha1_32,
    aes_256_cm_hmac_sha1_80 => SrtpSuite::Aes256CmHmacSha1_80,
    aes_256_cm_hmac_sha1_32 => SrtpSuite::Aes256CmHmacSha1_32,
    aead_aes_128_gcm => SrtpSuite::AeadAes128Gcm,
    aead_aes_256_gcm => SrtpSuite::AeadAes256Gcm,
}
