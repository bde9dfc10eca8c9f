//! The crypto primitives under SRTP, behind small internal traits so that
//! the packet transforms do not care which library computes them.
//!
//! Every key schedule is built once, when a context is created: AES round
//! keys (and the GHASH key for GCM) live in the cipher objects, and HMAC's
//! inner and outer SHA-1 states are precomputed from the session auth key.
//! Per packet, only a copy of the HMAC state and the keystream or AEAD
//! computation happen; nothing allocates.
//!
//! Backends: RustCrypto (`aes`, `ctr`, `hmac`, `sha1`, `aes-gcm`) always;
//! `ring` for AES-GCM and HMAC-SHA1 with the `ring` feature (ring has no
//! public AES-CTR, so AES-CM keystream stays on RustCrypto there); AWS-LC
//! for all three with the `aws-lc-sys` feature ([`super::awslc`]). The key
//! derivation at context creation always uses RustCrypto.

use aes::cipher::consts::U16;
use aes::cipher::{BlockCipher, BlockEncrypt, BlockSizeUser, InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128, Aes128Enc, Aes256, Aes256Enc};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Length of the AEAD authentication tag (RFC 7714 §7: 16 octets).
pub(crate) const GCM_TAG_LEN: usize = 16;

/// Length of an HMAC-SHA1 output before truncation.
pub(crate) const SHA1_LEN: usize = 20;

/// Which library computes the ciphers and MACs of a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CryptoBackend {
    /// RustCrypto: `aes` (AES-NI when the CPU has it), `ctr`, `hmac` +
    /// `sha1`, `aes-gcm` (with PCLMULQDQ GHASH).
    RustCrypto,
    /// `ring` for AES-GCM and HMAC-SHA1 (BoringSSL assembly); AES-CM
    /// keystream on RustCrypto, as ring exposes no AES-CTR.
    #[cfg(feature = "ring")]
    Ring,
    /// AWS-LC (`aws-lc-sys`) for AES-CTR, HMAC-SHA1 and AES-GCM.
    #[cfg(feature = "aws-lc-sys")]
    AwsLc,
    /// Kolokol's own AES-NI counter mode for the AES-CM keystream
    /// ([`super::aesni`], built for SRTP's short payloads); HMAC-SHA1 from
    /// AWS-LC and AES-GCM from ring when those are compiled in, RustCrypto
    /// otherwise. On a CPU without AES-NI the keystream is RustCrypto's.
    AesNi,
}

impl CryptoBackend {
    /// Every backend compiled in, for benchmarks and tests.
    pub const AVAILABLE: &'static [CryptoBackend] = &[
        CryptoBackend::RustCrypto,
        #[cfg(feature = "ring")]
        CryptoBackend::Ring,
        #[cfg(feature = "aws-lc-sys")]
        CryptoBackend::AwsLc,
        CryptoBackend::AesNi,
    ];

    /// The fastest compiled-in backend for `suite`, as measured by
    /// `benches/srtp.rs` on the test host (BENCHMARKS.md): for the
    /// AES-CM/HMAC-SHA1 suites Kolokol's AES-NI keystream with AWS-LC's
    /// HMAC (its SHA-1 is ~1.7x RustCrypto's on a CPU without SHA
    /// instructions), or AWS-LC alone without AES-NI; ring for AES-GCM;
    /// RustCrypto otherwise.
    pub fn fastest_for(suite: super::SrtpSuite) -> CryptoBackend {
        if suite.is_aead() {
            #[cfg(feature = "ring")]
            return CryptoBackend::Ring;
        } else {
            if super::aesni::AesNiCtr::available() {
                return CryptoBackend::AesNi;
            }
            #[cfg(feature = "aws-lc-sys")]
            return CryptoBackend::AwsLc;
        }
        #[allow(unreachable_code)]
        CryptoBackend::RustCrypto
    }

    /// Short stable name (bench and log labels).
    pub fn name(self) -> &'static str {
        match self {
            CryptoBackend::RustCrypto => "rustcrypto",
            #[cfg(feature = "ring")]
            CryptoBackend::Ring => "ring",
            #[cfg(feature = "aws-lc-sys")]
            CryptoBackend::AwsLc => "aws-lc",
            CryptoBackend::AesNi => "aes-ni",
        }
    }
}

/// AES in counter mode, RFC 3711 §4.1.1: XOR `data` with the keystream that
/// starts at counter block `iv`.
pub(crate) trait Keystream {
    fn apply(&self, iv: &[u8; 16], data: &mut [u8]);
}

/// A keyed MAC over a packet given as up to two slices (SRTP authenticates
/// `header || payload || ROC`, and the ROC is not in the packet).
pub(crate) trait PacketMac {
    fn compute(&self, a: &[u8], b: &[u8]) -> [u8; SHA1_LEN];
}

/// An AEAD with a 96-bit nonce and a 16-octet tag (RFC 7714).
pub(crate) trait Aead {
    /// Encrypts `data` in place and returns the tag over `aad` and `data`.
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; GCM_TAG_LEN];
    /// Verifies `tag` and decrypts `data` in place. On `Err` the contents
    /// of `data` are unspecified (some backends decrypt before comparing).
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> Result<(), ()>;
}

/// AES-CTR key: AES-128 or AES-256 encryption round keys.
// The variants are key schedules of different sizes; one lives per session,
// behind the context's box, and is never moved on the packet path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AesCtr {
    Aes128(Aes128Enc),
    Aes256(Aes256Enc),
    #[cfg(feature = "aws-lc-sys")]
    AwsLc(super::awslc::AesCtr),
    AesNi(super::aesni::AesNiCtr),
}

impl AesCtr {
    /// Builds the round keys. `key` is 16 or 32 bytes (checked by the caller).
    pub(crate) fn new(backend: CryptoBackend, key: &[u8]) -> Self {
        #[cfg(feature = "aws-lc-sys")]
        if backend == CryptoBackend::AwsLc {
            return AesCtr::AwsLc(super::awslc::AesCtr::new(key));
        }
        if backend == CryptoBackend::AesNi {
            if let Some(k) = super::aesni::AesNiCtr::new(key) {
                return AesCtr::AesNi(k);
            }
        }
        match key.len() {
            16 => AesCtr::Aes128(Aes128Enc::new(key.into())),
            32 => AesCtr::Aes256(Aes256Enc::new(key.into())),
            n => panic!("AES key of {n} bytes: suite tables are wrong"),
        }
    }
}

/// Counter mode over a borrowed cipher: `ctr` accepts `&C` as the block
/// cipher, so the round keys are used in place rather than copied per packet.
fn ctr_apply<C>(cipher: &C, iv: &[u8; 16], data: &mut [u8])
where
    C: BlockEncrypt + BlockCipher + BlockSizeUser<BlockSize = U16>,
{
    let mut ctr = ctr::Ctr128BE::<&C>::from_core(ctr::CtrCore::inner_iv_init(cipher, iv.into()));
    ctr.apply_keystream(data);
}

impl Keystream for AesCtr {
    #[inline]
    fn apply(&self, iv: &[u8; 16], data: &mut [u8]) {
        match self {
            AesCtr::Aes128(c) => ctr_apply(c, iv, data),
            AesCtr::Aes256(c) => ctr_apply(c, iv, data),
            #[cfg(feature = "aws-lc-sys")]
            AesCtr::AwsLc(k) => k.apply(iv, data),
            AesCtr::AesNi(k) => k.apply(iv, data),
        }
    }
}

/// HMAC-SHA1 with precomputed inner/outer states.
pub(crate) enum HmacSha1 {
    RustCrypto(Hmac<Sha1>),
    #[cfg(feature = "ring")]
    Ring(ring::hmac::Key),
    #[cfg(feature = "aws-lc-sys")]
    AwsLc(super::awslc::HmacSha1),
}

impl HmacSha1 {
    pub(crate) fn new(backend: CryptoBackend, key: &[u8]) -> Self {
        match backend {
            // HMAC takes keys of any length; this cannot fail.
            CryptoBackend::RustCrypto => HmacSha1::RustCrypto(
                <Hmac<Sha1> as Mac>::new_from_slice(key).expect("HMAC accepts any key length"),
            ),
            #[cfg(feature = "ring")]
            CryptoBackend::Ring => HmacSha1::Ring(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                key,
            )),
            #[cfg(feature = "aws-lc-sys")]
            CryptoBackend::AwsLc => HmacSha1::AwsLc(super::awslc::HmacSha1::new(key)),
            #[cfg(feature = "aws-lc-sys")]
            CryptoBackend::AesNi => HmacSha1::AwsLc(super::awslc::HmacSha1::new(key)),
            #[cfg(not(feature = "aws-lc-sys"))]
            CryptoBackend::AesNi => HmacSha1::new(CryptoBackend::RustCrypto, key),
        }
    }
}

impl PacketMac for HmacSha1 {
    #[inline]
    fn compute(&self, a: &[u8], b: &[u8]) -> [u8; SHA1_LEN] {
        let mut out = [0u8; SHA1_LEN];
        match self {
            HmacSha1::RustCrypto(key) => {
                let mut mac = key.clone();
                mac.update(a);
                mac.update(b);
                out.copy_from_slice(&mac.finalize().into_bytes());
            }
            #[cfg(feature = "ring")]
            HmacSha1::Ring(key) => {
                let mut ctx = ring::hmac::Context::with_key(key);
                ctx.update(a);
                ctx.update(b);
                out.copy_from_slice(ctx.sign().as_ref());
            }
            #[cfg(feature = "aws-lc-sys")]
            HmacSha1::AwsLc(key) => out = key.compute(a, b),
        }
        out
    }
}

/// AES-GCM key: round keys plus the GHASH key.
// As for `AesCtr`: one per session, boxed with it, never moved per packet.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AesGcm {
    Aes128(Aes128Gcm),
    Aes256(Aes256Gcm),
    #[cfg(feature = "ring")]
    Ring(ring::aead::LessSafeKey),
    #[cfg(feature = "aws-lc-sys")]
    AwsLc(super::awslc::AesGcm),
}

impl AesGcm {
    /// `key` is 16 or 32 bytes (checked by the caller).
    pub(crate) fn new(backend: CryptoBackend, key: &[u8]) -> Self {
        match backend {
            CryptoBackend::RustCrypto => match key.len() {
                16 => AesGcm::Aes128(Aes128Gcm::new(key.into())),
                32 => AesGcm::Aes256(Aes256Gcm::new(key.into())),
                n => panic!("AES-GCM key of {n} bytes: suite tables are wrong"),
            },
            #[cfg(feature = "ring")]
            CryptoBackend::Ring => {
                let alg = match key.len() {
                    16 => &ring::aead::AES_128_GCM,
                    32 => &ring::aead::AES_256_GCM,
                    n => panic!("AES-GCM key of {n} bytes: suite tables are wrong"),
                };
                // The length matches the algorithm, so this cannot fail.
                let key = ring::aead::UnboundKey::new(alg, key).expect("key length matches");
                AesGcm::Ring(ring::aead::LessSafeKey::new(key))
            }
            #[cfg(feature = "aws-lc-sys")]
            CryptoBackend::AwsLc => AesGcm::AwsLc(super::awslc::AesGcm::new(key)),
            #[cfg(feature = "ring")]
            CryptoBackend::AesNi => AesGcm::new(CryptoBackend::Ring, key),
            #[cfg(not(feature = "ring"))]
            CryptoBackend::AesNi => AesGcm::new(CryptoBackend::RustCrypto, key),
        }
    }
}

impl Aead for AesGcm {
    #[inline]
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; GCM_TAG_LEN] {
        let mut out = [0u8; GCM_TAG_LEN];
        match self {
            // Only fails for data longer than 2^36 bytes, which a datagram is not.
            AesGcm::Aes128(k) => out.copy_from_slice(
                &k.encrypt_in_place_detached(nonce.into(), aad, data)
                    .expect("datagram below GCM limit"),
            ),
            AesGcm::Aes256(k) => out.copy_from_slice(
                &k.encrypt_in_place_detached(nonce.into(), aad, data)
                    .expect("datagram below GCM limit"),
            ),
            #[cfg(feature = "ring")]
            AesGcm::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(*nonce),
                        ring::aead::Aad::from(aad),
                        data,
                    )
                    .expect("datagram below GCM limit");
                out.copy_from_slice(tag.as_ref());
            }
            #[cfg(feature = "aws-lc-sys")]
            AesGcm::AwsLc(k) => out = k.seal(nonce, aad, data),
        }
        out
    }

    #[inline]
    fn open(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> Result<(), ()> {
        if tag.len() != GCM_TAG_LEN {
            return Err(());
        }
        match self {
            AesGcm::Aes128(k) => k
                .decrypt_in_place_detached(nonce.into(), aad, data, tag.into())
                .map_err(|_| ()),
            AesGcm::Aes256(k) => k
                .decrypt_in_place_detached(nonce.into(), aad, data, tag.into())
                .map_err(|_| ()),
            #[cfg(feature = "ring")]
            AesGcm::Ring(k) => {
                let mut t = [0u8; GCM_TAG_LEN];
                t.copy_from_slice(tag);
                k.open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(*nonce),
                    ring::aead::Aad::from(aad),
                    ring::aead::Tag::from(t),
                    data,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| ())
            }
            #[cfg(feature = "aws-lc-sys")]
            AesGcm::AwsLc(k) => k.open(nonce, aad, data, tag),
        }
    }
}

/// Constant-time comparison of a received tag with the computed one.
#[inline]
pub(crate) fn tags_equal(received: &[u8], computed: &[u8]) -> bool {
    received.len() == computed.len() && bool::from(received.ct_eq(computed))
}

/// The SRTP key derivation PRF (RFC 3711 §4.3.1 and §4.3.3, KDR 0):
/// `out = AES-CM(master_key, IV = (master_salt XOR label<<48) * 2^16)`.
///
/// `master_salt` is 14 bytes for AES-CM suites and 12 for AEAD suites; a
/// 12-byte salt is zero-padded on the right to 112 bits (RFC 7714 §11, as
/// libsrtp does).
pub(crate) fn derive(master_key: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    assert!(master_salt.len() <= 14);
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    // key_id = label || r (r = 0 with KDR 0) is 56 bits, aligned right in
    // the 112-bit salt: the label lands in octet 7.
    iv[7] ^= label;
    out.fill(0);
    match master_key.len() {
        16 => ctr_apply(&Aes128::new(master_key.into()), &iv, out),
        32 => ctr_apply(&Aes256::new(master_key.into()), &iv, out),
        n => panic!("master key of {n} bytes: suite tables are wrong"),
    }
}
