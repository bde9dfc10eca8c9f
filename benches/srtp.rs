//! SRTP protect/unprotect cost per packet (172-byte RTP packets: 12-byte
//! header + 160-byte payload, one 20 ms G.711 frame) for every suite, with
//! each Kolokol crypto backend and with libsrtp2 on the same packets in the
//! same run.
//!
//! libsrtp2 is reached through `extern "C"` declarations linked here only
//! (`#[link(name = "srtp2")]`), so only this bench binary needs the library;
//! Debian: `apt-get install -y libsrtp2-dev`. The ring backend is included
//! when built with `--features ring`.
//!
//! Run: `cargo bench --bench srtp [--features ring]`. Group `srtp_protect`
//! and `srtp_unprotect`, ids `<SUITE>/<impl>`; time per iteration is the
//! time per packet.

use std::ffi::{c_int, c_uint, c_ulong, c_void};
use std::time::Duration;

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use kolokol::media::srtp::{CryptoBackend, SrtpContext, SrtpSuite};

/// RTP payload bytes per packet.
const PAYLOAD_LEN: usize = 160;
/// RTP header (no CSRCs, no extension) + payload.
const PACKET_LEN: usize = 12 + PAYLOAD_LEN;
/// Buffer size: the packet plus room for any trailer (libsrtp writes up to
/// `SRTP_MAX_TRAILER_LEN` = 144 bytes).
const BUF_LEN: usize = PACKET_LEN + 160;
const SSRC: u32 = 0x1234_5678;

// ---------------------------------------------------------------------------
// libsrtp2 FFI. Layouts from <srtp2/srtp.h> 2.5 (x86_64: srtp_policy_t is
// 128 bytes, srtp_crypto_policy_t 24, `next` at offset 120).

#[repr(C)]
#[derive(Clone, Copy)]
struct SrtpCryptoPolicy {
    cipher_type: u32,
    cipher_key_len: c_int,
    auth_type: u32,
    auth_key_len: c_int,
    auth_tag_len: c_int,
    sec_serv: c_int,
}

#[repr(C)]
struct SrtpSsrc {
    kind: c_int,
    value: c_uint,
}

#[repr(C)]
struct SrtpPolicy {
    ssrc: SrtpSsrc,
    rtp: SrtpCryptoPolicy,
    rtcp: SrtpCryptoPolicy,
    key: *mut u8,
    keys: *mut c_void,
    num_master_keys: c_ulong,
    deprecated_ekt: *mut c_void,
    window_size: c_ulong,
    allow_repeat_tx: c_int,
    enc_xtn_hdr: *mut c_int,
    enc_xtn_hdr_count: c_int,
    next: *mut SrtpPolicy,
}

const _: () = assert!(std::mem::size_of::<SrtpPolicy>() == 128);
const _: () = assert!(std::mem::offset_of!(SrtpPolicy, next) == 120);

const SSRC_ANY_INBOUND: c_int = 2;
const SSRC_ANY_OUTBOUND: c_int = 3;

#[link(name = "srtp2")]
extern "C" {
    fn srtp_init() -> c_int;
    fn srtp_create(session: *mut *mut c_void, policy: *const SrtpPolicy) -> c_int;
    fn srtp_dealloc(session: *mut c_void) -> c_int;
    fn srtp_protect(ctx: *mut c_void, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_unprotect(ctx: *mut c_void, hdr: *mut c_void, len: *mut c_int) -> c_int;
    fn srtp_crypto_policy_set_rtp_default(p: *mut SrtpCryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(p: *mut SrtpCryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(p: *mut SrtpCryptoPolicy);
    fn srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(p: *mut SrtpCryptoPolicy);
    fn srtp_crypto_policy_set_aes_gcm_128_16_auth(p: *mut SrtpCryptoPolicy);
    fn srtp_crypto_policy_set_aes_gcm_256_16_auth(p: *mut SrtpCryptoPolicy);
}

/// One libsrtp session (one direction).
struct Libsrtp {
    session: *mut c_void,
    _key: Vec<u8>,
}

impl Libsrtp {
    fn new(suite: SrtpSuite, key: &[u8], salt: &[u8], outbound: bool) -> Libsrtp {
        let zero = SrtpCryptoPolicy {
            cipher_type: 0,
            cipher_key_len: 0,
            auth_type: 0,
            auth_key_len: 0,
            auth_tag_len: 0,
            sec_serv: 0,
        };
        let (mut rtp, mut rtcp) = (zero, zero);
        // SAFETY: the setters only write the struct they are given.
        unsafe {
            match suite {
                SrtpSuite::AesCm128HmacSha1_80 => {
                    srtp_crypto_policy_set_rtp_default(&mut rtp);
                    srtp_crypto_policy_set_rtp_default(&mut rtcp);
                }
                SrtpSuite::AesCm128HmacSha1_32 => {
                    srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&mut rtp);
                    srtp_crypto_policy_set_rtp_default(&mut rtcp);
                }
                SrtpSuite::Aes256CmHmacSha1_80 => {
                    srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&mut rtp);
                    srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&mut rtcp);
                }
                SrtpSuite::Aes256CmHmacSha1_32 => {
                    srtp_crypto_policy_set_aes_cm_256_hmac_sha1_32(&mut rtp);
                    srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&mut rtcp);
                }
                SrtpSuite::AeadAes128Gcm => {
                    srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut rtp);
                    srtp_crypto_policy_set_aes_gcm_128_16_auth(&mut rtcp);
                }
                SrtpSuite::AeadAes256Gcm => {
                    srtp_crypto_policy_set_aes_gcm_256_16_auth(&mut rtp);
                    srtp_crypto_policy_set_aes_gcm_256_16_auth(&mut rtcp);
                }
            }
        }
        let mut key_salt = [key, salt].concat();
        let policy = SrtpPolicy {
            ssrc: SrtpSsrc {
                kind: if outbound {
                    SSRC_ANY_OUTBOUND
                } else {
                    SSRC_ANY_INBOUND
                },
                value: 0,
            },
            rtp,
            rtcp,
            key: key_salt.as_mut_ptr(),
            keys: std::ptr::null_mut(),
            num_master_keys: 0,
            deprecated_ekt: std::ptr::null_mut(),
            window_size: 128,
            allow_repeat_tx: 0,
            enc_xtn_hdr: std::ptr::null_mut(),
            enc_xtn_hdr_count: 0,
            next: std::ptr::null_mut(),
        };
        let mut session = std::ptr::null_mut();
        // SAFETY: the policy and key outlive the call; libsrtp copies both.
        let status = unsafe { srtp_create(&mut session, &policy) };
        assert_eq!(status, 0, "srtp_create({suite})");
        Libsrtp {
            session,
            _key: key_salt,
        }
    }

    fn protect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize {
        let mut len = len as c_int;
        // SAFETY: buf has SRTP_MAX_TRAILER_LEN bytes of room after len.
        let status = unsafe { srtp_protect(self.session, buf.as_mut_ptr().cast(), &mut len) };
        assert_eq!(status, 0, "srtp_protect");
        len as usize
    }

    fn unprotect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize {
        let mut len = len as c_int;
        // SAFETY: buf holds len bytes.
        let status = unsafe { srtp_unprotect(self.session, buf.as_mut_ptr().cast(), &mut len) };
        assert_eq!(status, 0, "srtp_unprotect");
        len as usize
    }
}

impl Drop for Libsrtp {
    fn drop(&mut self) {
        // SAFETY: created by srtp_create, freed once.
        unsafe { srtp_dealloc(self.session) };
    }
}

// ---------------------------------------------------------------------------

fn master(suite: SrtpSuite) -> (Vec<u8>, Vec<u8>) {
    let key = (0..suite.master_key_len())
        .map(|i| i as u8 ^ 0x5a)
        .collect();
    let salt = (0..suite.master_salt_len())
        .map(|i| i as u8 ^ 0xc3)
        .collect();
    (key, salt)
}

/// A fresh RTP packet with sequence number `seq`.
fn packet(seq: u16) -> [u8; BUF_LEN] {
    let mut buf = [0u8; BUF_LEN];
    buf[0] = 0x80;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    buf[8..12].copy_from_slice(&SSRC.to_be_bytes());
    buf[12..PACKET_LEN].fill(0xd5);
    buf
}

/// Something that protects and unprotects RTP in place.
trait Impl {
    fn protect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize;
    fn unprotect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize;
}

impl Impl for SrtpContext {
    fn protect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize {
        self.protect_rtp(buf, len).expect("protect")
    }
    fn unprotect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize {
        self.unprotect_rtp(buf, len).expect("unprotect")
    }
}

impl Impl for Libsrtp {
    fn protect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize {
        Libsrtp::protect(self, buf, len)
    }
    fn unprotect(&mut self, buf: &mut [u8; BUF_LEN], len: usize) -> usize {
        Libsrtp::unprotect(self, buf, len)
    }
}

/// An implementation under test: (name, sender, receiver).
type Pair = (&'static str, Box<dyn Impl>, Box<dyn Impl>);

/// The implementations under test for `suite`.
fn impls(suite: SrtpSuite) -> Vec<Pair> {
    let (key, salt) = master(suite);
    let mut out: Vec<Pair> = Vec::new();
    for &backend in CryptoBackend::AVAILABLE {
        let ctx = || SrtpContext::with_backend(suite, &key, &salt, backend).unwrap();
        out.push((backend.name(), Box::new(ctx()), Box::new(ctx())));
    }
    out.push((
        "libsrtp2",
        Box::new(Libsrtp::new(suite, &key, &salt, true)),
        Box::new(Libsrtp::new(suite, &key, &salt, false)),
    ));
    out
}

fn bench(c: &mut Criterion) {
    // SAFETY: called once before any session is created.
    assert_eq!(unsafe { srtp_init() }, 0);

    for suite in SrtpSuite::ALL {
        // Separate sender/receiver pairs for the two groups: the protect
        // loop runs the sender's ROC far ahead of any receiver.
        let pairs = impls(suite).into_iter().zip(impls(suite));
        for ((name, mut tx, mut rx), (_, mut tx2, mut rx2)) in pairs {
            // Check the pair before timing (interop proper is in
            // tests/srtp_libsrtp.rs; this guards the bench setup).
            let mut seq: u16 = 0;
            let mut buf = packet(seq);
            let n = tx.protect(&mut buf, PACKET_LEN);
            assert_eq!(n, PACKET_LEN + suite.rtp_auth_tag_len());
            assert_eq!(rx.unprotect(&mut buf, n), PACKET_LEN);
            assert_eq!(buf[..PACKET_LEN], packet(seq)[..PACKET_LEN]);

            let mut g = c.benchmark_group("srtp_protect");
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(suite.sdes_name(), name), |b| {
                b.iter(|| {
                    // A new sequence number each time: senders refuse to
                    // reuse an index. Building the packet is part of the
                    // loop for every implementation alike.
                    seq = seq.wrapping_add(1);
                    let mut buf = packet(seq);
                    let n = tx.protect(&mut buf, black_box(PACKET_LEN));
                    black_box(&buf[..n]);
                })
            });
            g.finish();

            let mut g = c.benchmark_group("srtp_unprotect");
            g.throughput(Throughput::Elements(1));
            let mut seq: u16 = 0;
            g.bench_function(BenchmarkId::new(suite.sdes_name(), name), |b| {
                // Receivers refuse replays, so every iteration gets a newly
                // protected packet, made outside the timed routine.
                b.iter_batched(
                    || {
                        seq = seq.wrapping_add(1);
                        let mut buf = packet(seq);
                        let n = tx2.protect(&mut buf, PACKET_LEN);
                        (buf, n)
                    },
                    |(mut buf, n)| {
                        let m = rx2.unprotect(&mut buf, black_box(n));
                        black_box(&buf[..m]);
                    },
                    BatchSize::SmallInput,
                )
            });
            g.finish();
        }
    }
}

/// HMAC-SHA1 alone over an SRTP authentication input (the 172-byte packet
/// plus the 4-byte ROC), per tag: one at a time with RustCrypto and ring,
/// and through Kolokol's multi-buffer `MacBatch` (eight lanes of AVX2) in
/// batches of 64, the shard's completion batch. The AWS-LC single-buffer
/// figure is the HMAC share of `srtp_protect/.../aws-lc` above; the perf
/// profile in BENCHMARKS.md puts it at ~70% of that.
fn bench_hmac(c: &mut Criterion) {
    use hmac::{Hmac, Mac};
    use kolokol::media::srtp::mbsha1::{HmacKey, MacBatch, MacInput, Simd};
    const BATCH: usize = 64;
    let key = [0x5au8; 20];
    let pkts: Vec<Vec<u8>> = (0..BATCH as u16)
        .map(|s| packet(s)[..PACKET_LEN].to_vec())
        .collect();
    let mut g = c.benchmark_group("hmac_sha1_176B");
    g.throughput(Throughput::Elements(BATCH as u64));
    let rc = Hmac::<sha1::Sha1>::new_from_slice(&key).unwrap();
    g.bench_function("rustcrypto_single", |b| {
        b.iter(|| {
            for p in &pkts {
                let mut m = rc.clone();
                m.update(p);
                m.update(&7u32.to_be_bytes());
                black_box(m.finalize().into_bytes());
            }
        })
    });
    let rk = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
    g.bench_function("ring_single", |b| {
        b.iter(|| {
            for p in &pkts {
                let mut m = ring::hmac::Context::with_key(&rk);
                m.update(p);
                m.update(&7u32.to_be_bytes());
                black_box(m.sign());
            }
        })
    });
    let hk = HmacKey::new(&key);
    let inputs: Vec<MacInput> = pkts
        .iter()
        .map(|p| MacInput {
            key: &hk,
            msg: p,
            roc: 7,
        })
        .collect();
    let mut out = vec![[0u8; 20]; BATCH];
    for (name, simd) in [
        ("kolokol_scalar", Simd::Scalar),
        ("kolokol_x8_avx2", Simd::Avx2),
        ("kolokol_x8_avx512vl", Simd::Avx512Vl),
    ] {
        let batch = MacBatch::with_simd(simd);
        g.bench_function(name, |b| {
            b.iter(|| {
                batch.run(black_box(&inputs), &mut out);
                black_box(&out);
            })
        });
    }
    g.finish();
}

/// The AES-CM keystream alone on a 160-byte payload (AES-128), per backend:
/// what `aes-ni` (Kolokol's counter mode) saves against the libraries.
fn bench_keystream(c: &mut Criterion) {
    use kolokol::media::srtp::keystream_for_bench;
    let mut g = c.benchmark_group("aes_cm_keystream_160B");
    g.throughput(Throughput::Elements(1));
    let iv = [3u8; 16];
    for &backend in CryptoBackend::AVAILABLE {
        if backend.name() == "ring" {
            // ring has no AES-CTR; its backend uses RustCrypto's.
            continue;
        }
        let ks = keystream_for_bench(backend, &[7u8; 16]);
        let mut buf = [0u8; PAYLOAD_LEN];
        g.bench_function(backend.name(), |b| {
            b.iter(|| {
                ks(&iv, black_box(&mut buf));
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // Short runs: the machine is shared and has two cores.
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1000))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench, bench_hmac, bench_keystream
}
criterion_main!(benches);
