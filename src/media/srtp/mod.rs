//! SRTP and SRTCP packet transforms (RFC 3711), sans-IO and in place.
//!
//! Suites: AES_CM_128_HMAC_SHA1_80/_32 (RFC 4568), AES_256_CM_HMAC_SHA1_80/
//! _32 (RFC 6188), AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 7714). One
//! [`SrtpContext`] holds the session keys derived from one master key and
//! salt (RFC 3711 §4.3, key derivation rate 0) for both SRTP and SRTCP, and
//! the per-SSRC state: the rollover counter estimate (§3.3.1, Appendix A),
//! the 64-packet replay window (§3.3.2), and the SRTCP index (§3.4, sent
//! with the E-flag set: SRTCP is always encrypted when we send it).
//!
//! The fast path ([`SrtpContext::protect_rtp`] and friends) works on the
//! caller's buffer: it neither allocates nor reads the clock, and no input
//! makes it panic; a bad packet is an [`SrtpError`] the caller counts and
//! drops. Key schedules are built once in [`SrtpContext::new`].
//!
//! Not done: MKI (RFC 3711 §3.1, the relay negotiates without it), key
//! derivation rates other than 0, encrypted header extensions (RFC 6904:
//! extensions are authenticated, not encrypted), the null cipher/auth
//! suites, and SRTCP sent without encryption (received ones are accepted).

mod aesni;
#[cfg(feature = "aws-lc-sys")]
mod awslc;
mod backend;
pub mod mbsha1;
mod stream;

pub use backend::CryptoBackend;
pub use stream::{REPLAY_WINDOW_LEN, STREAMS_MAX};

use backend::{
    derive, tags_equal, Aead, AesCtr, AesGcm, HmacSha1, Keystream, PacketMac, GCM_TAG_LEN, SHA1_LEN,
};
use stream::{StreamTable, WindowCheck};

/// An SRTP crypto suite, as named in SDES `a=crypto` lines (RFC 4568 §6.2,
/// RFC 6188 §7.1, RFC 7714 §14.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 4568).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit SRTP tag; SRTCP keeps
    /// the 80-bit tag (RFC 4568 §6.2.2).
    AesCm128HmacSha1_32,
    /// AES-256 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 6188).
    Aes256CmHmacSha1_80,
    /// AES-256 counter mode, HMAC-SHA1 with a 32-bit SRTP tag; SRTCP keeps
    /// the 80-bit tag (RFC 6188 §7.1).
    Aes256CmHmacSha1_32,
    /// AES-128 in GCM, 16-octet tag (RFC 7714).
    AeadAes128Gcm,
    /// AES-256 in GCM, 16-octet tag (RFC 7714).
    AeadAes256Gcm,
}

impl SrtpSuite {
    /// Every suite, in the order of preference the relay offers them.
    pub const ALL: [SrtpSuite; 6] = [
        SrtpSuite::AeadAes256Gcm,
        SrtpSuite::AeadAes128Gcm,
        SrtpSuite::AesCm128HmacSha1_80,
        SrtpSuite::AesCm128HmacSha1_32,
        SrtpSuite::Aes256CmHmacSha1_80,
        SrtpSuite::Aes256CmHmacSha1_32,
    ];

    /// The suite's SDES name (case-sensitive, RFC 4568 §6.2).
    pub fn sdes_name(self) -> &'static str {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            SrtpSuite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            SrtpSuite::Aes256CmHmacSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            SrtpSuite::Aes256CmHmacSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            SrtpSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// The suite with SDES name `name`, or `None` if Kolokol does not
    /// implement it.
    pub fn from_sdes_name(name: &str) -> Option<SrtpSuite> {
        SrtpSuite::ALL
            .into_iter()
            .find(|suite| suite.sdes_name() == name)
    }

    /// Whether the suite is an AEAD (RFC 7714) rather than AES-CM + HMAC.
    pub fn is_aead(self) -> bool {
        matches!(self, SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm)
    }

    /// Master (and session) encryption key length in bytes.
    pub fn master_key_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80
            | SrtpSuite::AesCm128HmacSha1_32
            | SrtpSuite::AeadAes128Gcm => 16,
            SrtpSuite::Aes256CmHmacSha1_80
            | SrtpSuite::Aes256CmHmacSha1_32
            | SrtpSuite::AeadAes256Gcm => 32,
        }
    }

    /// Master (and session) salt length in bytes: 112 bits for AES-CM,
    /// 96 bits for AEAD (RFC 7714 §12).
    pub fn master_salt_len(self) -> usize {
        if self.is_aead() {
            12
        } else {
            14
        }
    }

    /// Bytes [`SrtpContext::protect_rtp`] appends: the SRTP auth tag.
    pub fn rtp_auth_tag_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 | SrtpSuite::Aes256CmHmacSha1_80 => 10,
            SrtpSuite::AesCm128HmacSha1_32 | SrtpSuite::Aes256CmHmacSha1_32 => 4,
            SrtpSuite::AeadAes128Gcm | SrtpSuite::AeadAes256Gcm => GCM_TAG_LEN,
        }
    }

    /// The SRTCP auth tag length: 80 bits for every AES-CM suite, including
    /// the `_32` ones (RFC 4568 §6.2.2), 16 octets for AEAD.
    pub fn rtcp_auth_tag_len(self) -> usize {
        if self.is_aead() {
            GCM_TAG_LEN
        } else {
            10
        }
    }

    /// Bytes [`SrtpContext::protect_rtcp`] appends: E-flag + SRTCP index (4)
    /// and the SRTCP tag.
    pub fn rtcp_overhead(self) -> usize {
        SRTCP_INDEX_LEN + self.rtcp_auth_tag_len()
    }
}

impl std::fmt::Display for SrtpSuite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.sdes_name())
    }
}

/// Why a packet could not be protected or unprotected, or a context not
/// created.
///
/// Peer faults ([`SrtpError::is_peer_fault`]) are per-packet: count the
/// packet and drop it. The rest are API misuse by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The master key does not have the suite's length.
    #[error("master key is {actual} bytes, the suite needs {expected}")]
    MasterKeyLength {
        /// What the suite needs.
        expected: usize,
        /// What was given.
        actual: usize,
    },
    /// The master salt does not have the suite's length.
    #[error("master salt is {actual} bytes, the suite needs {expected}")]
    MasterSaltLength {
        /// What the suite needs.
        expected: usize,
        /// What was given.
        actual: usize,
    },
    /// `len` is larger than the buffer (caller bug).
    #[error("packet length {len} exceeds the buffer ({capacity} bytes)")]
    LengthOutOfRange {
        /// The length passed.
        len: usize,
        /// The buffer's length.
        capacity: usize,
    },
    /// The buffer has no room for the tag (and SRTCP index) that protecting
    /// appends (caller bug: size buffers with the suite's overhead).
    #[error("protecting needs {needed} bytes of buffer, it has {capacity}")]
    BufferTooSmall {
        /// Bytes the protected packet takes.
        needed: usize,
        /// The buffer's length.
        capacity: usize,
    },
    /// Shorter than its headers and tag, or CSRC count / extension length
    /// pointing past the end.
    #[error("packet truncated or its header lengths run past its end")]
    Truncated,
    /// RTP/RTCP version is not 2.
    #[error("not an RTP/RTCP version 2 packet")]
    BadVersion,
    /// The authentication tag did not verify (forged, corrupted, wrong key,
    /// or a wrong ROC guess).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// The packet index was already received (RFC 3711 §3.3.2), or, when
    /// protecting, already sent (reusing it would reuse keystream).
    #[error("replayed packet")]
    Replayed,
    /// The packet index is behind the replay window, so it cannot be told
    /// from a replay.
    #[error("packet index behind the replay window")]
    TooOld,
    /// The 48-bit SRTP index or 31-bit SRTCP index is used up: the master
    /// key must be replaced (RFC 3711 §9.2).
    #[error("packet index exhausted; the master key must be replaced")]
    IndexExhausted,
}

impl SrtpError {
    /// Whether the error is the remote peer's doing (count and drop the
    /// packet) rather than a misuse of the API.
    pub fn is_peer_fault(self) -> bool {
        !matches!(
            self,
            SrtpError::MasterKeyLength { .. }
                | SrtpError::MasterSaltLength { .. }
                | SrtpError::LengthOutOfRange { .. }
                | SrtpError::BufferTooSmall { .. }
        )
    }

    /// Whether the error is a replay-protection rejection.
    pub fn is_replay(self) -> bool {
        matches!(self, SrtpError::Replayed | SrtpError::TooOld)
    }
}

/// The E-flag and SRTCP index trailer (RFC 3711 §3.4).
const SRTCP_INDEX_LEN: usize = 4;
/// The E-flag: the SRTCP payload is encrypted.
const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// Largest SRTCP index (31 bits).
const SRTCP_INDEX_MAX: u32 = 0x7fff_ffff;
/// Fixed RTP header length.
const RTP_HEADER_LEN: usize = 12;
/// RTCP header + sender SSRC, left in the clear by SRTCP.
const RTCP_HEADER_LEN: usize = 8;

/// Key derivation labels (RFC 3711 §4.3.2).
const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_AUTH: u8 = 0x04;
const LABEL_RTCP_SALT: u8 = 0x05;

/// Session keys for one of SRTP or SRTCP.
// Boxed in the context, built once, never moved on the packet path.
#[allow(clippy::large_enum_variant)]
enum SessionCrypto {
    /// AES-CM + HMAC-SHA1. `salt` is the 112-bit session salt.
    Cm {
        cipher: AesCtr,
        mac: HmacSha1,
        /// The same key folded for [`mbsha1::MacBatch`] (batched tags).
        mbkey: mbsha1::HmacKey,
        salt: [u8; 14],
    },
    /// AES-GCM. `salt` is the 96-bit session salt.
    Gcm { aead: AesGcm, salt: [u8; 12] },
}

impl SessionCrypto {
    /// Derives the session keys for one of SRTP (`labels` = 0, 1, 2) or
    /// SRTCP (3, 4, 5) from the master key.
    fn derive(
        backend: CryptoBackend,
        suite: SrtpSuite,
        master_key: &[u8],
        master_salt: &[u8],
        labels: [u8; 3],
    ) -> Self {
        let key_len = suite.master_key_len();
        let mut key = [0u8; 32];
        derive(master_key, master_salt, labels[0], &mut key[..key_len]);
        if suite.is_aead() {
            let mut salt = [0u8; 12];
            derive(master_key, master_salt, labels[2], &mut salt);
            Self::gcm(backend, &key[..key_len], salt)
        } else {
            // n_a = 160 bits for HMAC-SHA1 (RFC 3711 §8.2).
            let mut auth = [0u8; SHA1_LEN];
            derive(master_key, master_salt, labels[1], &mut auth);
            let mut salt = [0u8; 14];
            derive(master_key, master_salt, labels[2], &mut salt);
            Self::cm(backend, &key[..key_len], &auth, salt)
        }
    }

    fn cm(backend: CryptoBackend, key: &[u8], auth: &[u8], salt: [u8; 14]) -> Self {
        SessionCrypto::Cm {
            cipher: AesCtr::new(backend, key),
            mac: HmacSha1::new(backend, auth),
            mbkey: mbsha1::HmacKey::new(auth),
            salt,
        }
    }

    fn gcm(backend: CryptoBackend, key: &[u8], salt: [u8; 12]) -> Self {
        SessionCrypto::Gcm {
            aead: AesGcm::new(backend, key),
            salt,
        }
    }
}

/// AES-CM counter block (RFC 3711 §4.1.1):
/// `IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`.
#[inline]
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// AEAD nonce (RFC 7714 §8.1 for SRTP, §9.1 for SRTCP): the session salt
/// XOR `0x0000 || SSRC || ROC || SEQ` (SRTP) or
/// `0x0000 || SSRC || 0x0000 || 0 || SRTCP index` (SRTCP); both are
/// `0x0000 || SSRC || 48-bit index`.
#[inline]
fn gcm_nonce(salt: &[u8; 12], ssrc: u32, index: u64) -> [u8; 12] {
    let mut nonce = *salt;
    for (b, s) in nonce[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, s) in nonce[6..12].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    nonce
}

/// Length of the RTP header of `pkt`: fixed part, CSRCs and header
/// extension (RFC 3550 §5.1, §5.3.1).
#[inline]
fn rtp_header_len(pkt: &[u8]) -> Result<usize, SrtpError> {
    if pkt.len() < RTP_HEADER_LEN {
        return Err(SrtpError::Truncated);
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::BadVersion);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(pkt[0] & 0x0f);
    if pkt[0] & 0x10 != 0 {
        let ext = pkt.get(len..len + 4).ok_or(SrtpError::Truncated)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
    }
    if len > pkt.len() {
        return Err(SrtpError::Truncated);
    }
    Ok(len)
}

#[inline]
fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Checks `len` against the buffer, then that protecting can append
/// `overhead` bytes.
#[inline]
fn check_room(buf: &[u8], len: usize, overhead: usize) -> Result<(), SrtpError> {
    if len > buf.len() {
        return Err(SrtpError::LengthOutOfRange {
            len,
            capacity: buf.len(),
        });
    }
    if buf.len() - len < overhead {
        return Err(SrtpError::BufferTooSmall {
            needed: len + overhead,
            capacity: buf.len(),
        });
    }
    Ok(())
}

#[inline]
fn check_len(buf: &[u8], len: usize) -> Result<(), SrtpError> {
    if len > buf.len() {
        return Err(SrtpError::LengthOutOfRange {
            len,
            capacity: buf.len(),
        });
    }
    Ok(())
}

#[inline]
fn window_result(check: WindowCheck) -> Result<(), SrtpError> {
    match check {
        WindowCheck::Fresh => Ok(()),
        WindowCheck::Replayed => Err(SrtpError::Replayed),
        WindowCheck::TooOld => Err(SrtpError::TooOld),
    }
}

/// The AES-CM keystream of `backend` alone, XORed into `data` (for
/// `benches/srtp.rs`, which compares the backends' counter modes; the
/// round keys are expanded on every call, so time a prepared closure).
#[doc(hidden)]
pub fn keystream_for_bench(backend: CryptoBackend, key: &[u8]) -> impl Fn(&[u8; 16], &mut [u8]) {
    let ctr = AesCtr::new(backend, key);
    move |iv, data| ctr.apply(iv, data)
}

/// An SRTP tag computed ahead of [`SrtpContext::unprotect_rtp_with`], in a
/// batch ([`mbsha1::MacBatch`]): the key and ROC it was computed with, so
/// the context can tell whether it still applies.
#[derive(Clone, Copy, Debug)]
pub struct PreTag {
    /// Key the tag was computed with.
    pub key: mbsha1::HmacKey,
    /// ROC appended to the packet for the tag.
    pub roc: u32,
    /// The full HMAC-SHA1 output.
    pub tag: [u8; SHA1_LEN],
}

/// A tag left to compute after [`SrtpContext::protect_rtp_deferred`]: HMAC
/// of `buf[..msg_len] || roc` with `key`, truncated to `tag_len` bytes and
/// written at `buf[msg_len..]`.
#[derive(Clone, Copy, Debug)]
pub struct DeferredTag {
    /// The session's folded auth key.
    pub key: mbsha1::HmacKey,
    /// ROC to append.
    pub roc: u32,
    /// Bytes of the packet authenticated (header and encrypted payload);
    /// the tag goes right after them.
    pub msg_len: usize,
    /// Tag length (10 or 4).
    pub tag_len: usize,
}

impl DeferredTag {
    /// Computes the tag one at a time and writes it (no batch at hand).
    pub fn write(&self, buf: &mut [u8]) {
        let n = self.msg_len;
        let tag = self.key.compute(&buf[..n], self.roc);
        buf[n..n + self.tag_len].copy_from_slice(&tag[..self.tag_len]);
    }
}

/// SRTP/SRTCP crypto state for one master key: session keys for both
/// protocols and per-SSRC index and replay state (up to [`STREAMS_MAX`]
/// SSRCs, least recently used evicted).
///
/// A relay leg has one context per direction. The same context can protect
/// and unprotect (send and receive state are kept apart), but two parties
/// must not protect with the same master key.
pub struct SrtpContext {
    suite: SrtpSuite,
    backend: CryptoBackend,
    /// Boxed so that a context (and a relay entry holding two) stays small;
    /// the key schedules are over a kilobyte.
    rtp: Box<SessionCrypto>,
    rtcp: Box<SessionCrypto>,
    streams: StreamTable,
}

impl std::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("backend", &self.backend)
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys for `suite` from `master_key` and
    /// `master_salt` (RFC 3711 §4.3, KDR 0) with the fastest backend
    /// for the suite ([`CryptoBackend::fastest_for`]).
    pub fn new(
        suite: SrtpSuite,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<SrtpContext, SrtpError> {
        Self::with_backend(
            suite,
            master_key,
            master_salt,
            CryptoBackend::fastest_for(suite),
        )
    }

    /// Like [`SrtpContext::new`], with the crypto computed by `backend`.
    pub fn with_backend(
        suite: SrtpSuite,
        master_key: &[u8],
        master_salt: &[u8],
        backend: CryptoBackend,
    ) -> Result<SrtpContext, SrtpError> {
        if master_key.len() != suite.master_key_len() {
            return Err(SrtpError::MasterKeyLength {
                expected: suite.master_key_len(),
                actual: master_key.len(),
            });
        }
        if master_salt.len() != suite.master_salt_len() {
            return Err(SrtpError::MasterSaltLength {
                expected: suite.master_salt_len(),
                actual: master_salt.len(),
            });
        }
        let rtp_labels = [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT];
        let rtcp_labels = [LABEL_RTCP_ENCRYPTION, LABEL_RTCP_AUTH, LABEL_RTCP_SALT];
        Ok(SrtpContext {
            suite,
            backend,
            rtp: Box::new(SessionCrypto::derive(
                backend,
                suite,
                master_key,
                master_salt,
                rtp_labels,
            )),
            rtcp: Box::new(SessionCrypto::derive(
                backend,
                suite,
                master_key,
                master_salt,
                rtcp_labels,
            )),
            streams: StreamTable::default(),
        })
    }

    /// A context using session keys given directly, as the RFC 7714 vectors
    /// do (no key derivation).
    #[cfg(test)]
    fn from_session_keys(
        suite: SrtpSuite,
        backend: CryptoBackend,
        key: &[u8],
        auth: &[u8],
        salt: &[u8],
    ) -> SrtpContext {
        let session = || {
            if suite.is_aead() {
                SessionCrypto::gcm(backend, key, salt.try_into().unwrap())
            } else {
                SessionCrypto::cm(backend, key, auth, salt.try_into().unwrap())
            }
        };
        SrtpContext {
            suite,
            backend,
            rtp: Box::new(session()),
            rtcp: Box::new(session()),
            streams: StreamTable::default(),
        }
    }

    /// The context's suite.
    pub fn suite(&self) -> SrtpSuite {
        self.suite
    }

    /// The backend computing the crypto.
    pub fn backend(&self) -> CryptoBackend {
        self.backend
    }

    /// The rollover counter last used or accepted for `ssrc` when sending
    /// (`None` if the SSRC is not tracked). For tests and diagnostics.
    pub fn tx_roc(&self, ssrc: u32) -> Option<u32> {
        let stream = self.streams.peek(ssrc)?;
        stream.rtp_tx.highest().map(|i| (i >> 16) as u32)
    }

    /// The rollover counter of the highest authenticated packet received
    /// for `ssrc` (`None` if the SSRC is not tracked).
    pub fn rx_roc(&self, ssrc: u32) -> Option<u32> {
        let stream = self.streams.peek(ssrc)?;
        stream.rtp_rx.highest().map(|i| (i >> 16) as u32)
    }

    /// The SRTP receive window of `ssrc` (a fresh one for a new SSRC),
    /// copied: nothing changes until a packet authenticates.
    fn rtp_rx_window(&self, ssrc: u32) -> stream::ReplayWindow {
        self.streams
            .peek(ssrc)
            .map(|s| s.rtp_rx)
            .unwrap_or_default()
    }

    /// For batched authentication of a received SRTP packet: the key, the
    /// authenticated bytes and the ROC the tag will be checked with, or
    /// `None` for AEAD suites and packets [`SrtpContext::unprotect_rtp`]
    /// will refuse anyway. Changes nothing.
    pub fn rtp_auth_input<'a>(&'a self, pkt: &'a [u8]) -> Option<mbsha1::MacInput<'a>> {
        let SessionCrypto::Cm { mbkey, .. } = &*self.rtp else {
            return None;
        };
        let body_len = pkt.len().checked_sub(self.suite.rtp_auth_tag_len())?;
        rtp_header_len(&pkt[..body_len]).ok()?;
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ssrc = be_u32(&pkt[8..12]);
        let index = self.rtp_rx_window(ssrc).estimate_index(seq)?;
        Some(mbsha1::MacInput {
            key: mbkey,
            msg: &pkt[..body_len],
            roc: (index >> 16) as u32,
        })
    }

    /// Protects the RTP packet `buf[..len]` in place (RFC 3711 §3.3):
    /// encrypts the payload, appends the auth tag, and returns the SRTP
    /// packet's length. `buf` must have [`SrtpSuite::rtp_auth_tag_len`]
    /// bytes of room after `len`.
    ///
    /// The packet index is estimated from the sequence number as a
    /// receiver would (so reordered input around a wrap gets the right
    /// ROC); an index already protected is refused with
    /// [`SrtpError::Replayed`].
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.protect_rtp_impl(buf, len, false).map(|(n, _)| n)
    }

    /// Like [`SrtpContext::protect_rtp`], but for AES-CM suites leaves the
    /// tag to the caller, to compute in a batch: returns the SRTP length and
    /// what to hash ([`DeferredTag`]); the packet must not go out before the
    /// tag is written. AEAD suites seal at once and return `None`.
    pub fn protect_rtp_deferred(
        &mut self,
        buf: &mut [u8],
        len: usize,
    ) -> Result<(usize, Option<DeferredTag>), SrtpError> {
        self.protect_rtp_impl(buf, len, true)
    }

    #[inline]
    fn protect_rtp_impl(
        &mut self,
        buf: &mut [u8],
        len: usize,
        defer: bool,
    ) -> Result<(usize, Option<DeferredTag>), SrtpError> {
        let tag_len = self.suite.rtp_auth_tag_len();
        check_room(buf, len, tag_len)?;
        let hdr_len = rtp_header_len(&buf[..len])?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = be_u32(&buf[8..12]);
        let stream = self.streams.get_or_insert(ssrc);
        let index = stream
            .rtp_tx
            .estimate_index(seq)
            .ok_or(SrtpError::IndexExhausted)?;
        window_result(stream.rtp_tx.check(index))?;
        let roc = (index >> 16) as u32;
        let deferred = match &*self.rtp {
            SessionCrypto::Cm {
                cipher,
                mac,
                mbkey,
                salt,
            } => {
                cipher.apply(&cm_iv(salt, ssrc, index), &mut buf[hdr_len..len]);
                if defer {
                    Some(DeferredTag {
                        key: *mbkey,
                        roc,
                        msg_len: len,
                        tag_len,
                    })
                } else {
                    let tag = mac.compute(&buf[..len], &roc.to_be_bytes());
                    buf[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
                    None
                }
            }
            SessionCrypto::Gcm { aead, salt } => {
                let (header, rest) = buf.split_at_mut(hdr_len);
                let (payload, tail) = rest.split_at_mut(len - hdr_len);
                let tag = aead.seal(&gcm_nonce(salt, ssrc, index), header, payload);
                tail[..GCM_TAG_LEN].copy_from_slice(&tag);
                None
            }
        };
        stream.rtp_tx.accept(index);
        Ok((len + tag_len, deferred))
    }

    /// Unprotects the SRTP packet `buf[..len]` in place (RFC 3711 §3.3):
    /// checks replay, verifies the tag, decrypts the payload, and returns the
    /// RTP packet's length. State changes only for packets that
    /// authenticate. On error the contents of `buf[..len]` are unspecified.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        self.unprotect_rtp_with(buf, len, None)
    }

    /// Like [`SrtpContext::unprotect_rtp`], using `pre` (computed in a
    /// batch from [`SrtpContext::rtp_auth_input`] on the same bytes) instead
    /// of hashing again when its key and ROC are the ones this packet needs.
    pub fn unprotect_rtp_with(
        &mut self,
        buf: &mut [u8],
        len: usize,
        pre: Option<&PreTag>,
    ) -> Result<usize, SrtpError> {
        check_len(buf, len)?;
        let tag_len = self.suite.rtp_auth_tag_len();
        let body_len = len.checked_sub(tag_len).ok_or(SrtpError::Truncated)?;
        let hdr_len = rtp_header_len(&buf[..body_len])?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = be_u32(&buf[8..12]);
        let window = self.rtp_rx_window(ssrc);
        let index = window
            .estimate_index(seq)
            .ok_or(SrtpError::IndexExhausted)?;
        window_result(window.check(index))?;
        let roc = (index >> 16) as u32;
        match &*self.rtp {
            SessionCrypto::Cm {
                cipher,
                mac,
                mbkey,
                salt,
            } => {
                let (body, tag) = buf[..len].split_at_mut(body_len);
                let computed = match pre {
                    Some(p) if p.roc == roc && p.key == *mbkey => p.tag,
                    _ => mac.compute(body, &roc.to_be_bytes()),
                };
                if !tags_equal(tag, &computed[..tag_len]) {
                    return Err(SrtpError::AuthenticationFailed);
                }
                cipher.apply(&cm_iv(salt, ssrc, index), &mut body[hdr_len..]);
            }
            SessionCrypto::Gcm { aead, salt } => {
                let (header, rest) = buf[..len].split_at_mut(hdr_len);
                let (payload, tag) = rest.split_at_mut(body_len - hdr_len);
                aead.open(&gcm_nonce(salt, ssrc, index), header, payload, tag)
                    .map_err(|()| SrtpError::AuthenticationFailed)?;
            }
        }
        self.streams.get_or_insert(ssrc).rtp_rx.accept(index);
        Ok(body_len)
    }

    /// Protects the RTCP (compound) packet `buf[..len]` in place (RFC 3711
    /// §3.4): encrypts everything after the first 8 bytes, appends the E-flag
    /// and the sender's next SRTCP index, then the tag, and returns the
    /// SRTCP packet's length. `buf` must have [`SrtpSuite::rtcp_overhead`]
    /// bytes of room after `len`.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let overhead = self.suite.rtcp_overhead();
        check_room(buf, len, overhead)?;
        if len < RTCP_HEADER_LEN {
            return Err(SrtpError::Truncated);
        }
        if buf[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        let ssrc = be_u32(&buf[4..8]);
        let stream = self.streams.get_or_insert(ssrc);
        if stream.rtcp_tx_index >= SRTCP_INDEX_MAX {
            return Err(SrtpError::IndexExhausted);
        }
        let index = stream.rtcp_tx_index + 1;
        let trailer = (SRTCP_E_FLAG | index).to_be_bytes();
        match &*self.rtcp {
            SessionCrypto::Cm {
                cipher, mac, salt, ..
            } => {
                let tag_len = self.suite.rtcp_auth_tag_len();
                cipher.apply(
                    &cm_iv(salt, ssrc, u64::from(index)),
                    &mut buf[RTCP_HEADER_LEN..len],
                );
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&trailer);
                let tag = mac.compute(&buf[..len + SRTCP_INDEX_LEN], &[]);
                let at = len + SRTCP_INDEX_LEN;
                buf[at..at + tag_len].copy_from_slice(&tag[..tag_len]);
            }
            SessionCrypto::Gcm { aead, salt } => {
                // AAD = header || E-flag + index (RFC 7714 §9.3).
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&trailer);
                let nonce = gcm_nonce(salt, ssrc, u64::from(index));
                let tag = aead.seal(&nonce, &aad, &mut buf[RTCP_HEADER_LEN..len]);
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                let at = len + GCM_TAG_LEN;
                buf[at..at + SRTCP_INDEX_LEN].copy_from_slice(&trailer);
            }
        }
        stream.rtcp_tx_index = index;
        Ok(len + overhead)
    }

    /// Unprotects the SRTCP packet `buf[..len]` in place (RFC 3711 §3.4,
    /// RFC 7714 §9): checks the SRTCP index against the replay window,
    /// verifies the tag, decrypts if the E-flag is set, and returns the RTCP
    /// packet's length. On error the contents of `buf[..len]` are
    /// unspecified.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        check_len(buf, len)?;
        let overhead = self.suite.rtcp_overhead();
        if len < RTCP_HEADER_LEN + overhead {
            return Err(SrtpError::Truncated);
        }
        if buf[0] >> 6 != 2 {
            return Err(SrtpError::BadVersion);
        }
        let ssrc = be_u32(&buf[4..8]);
        let rtcp_len = len - overhead;
        let tag_len = self.suite.rtcp_auth_tag_len();
        // AES-CM: packet || E+index || tag. AEAD: packet || tag || E+index.
        let trailer_at = if self.suite.is_aead() {
            len - SRTCP_INDEX_LEN
        } else {
            rtcp_len
        };
        let trailer = be_u32(&buf[trailer_at..trailer_at + SRTCP_INDEX_LEN]);
        let encrypted = trailer & SRTCP_E_FLAG != 0;
        let index = trailer & SRTCP_INDEX_MAX;
        let window = self
            .streams
            .peek(ssrc)
            .map(|s| s.rtcp_rx)
            .unwrap_or_default();
        window_result(window.check(u64::from(index)))?;
        match &*self.rtcp {
            SessionCrypto::Cm {
                cipher, mac, salt, ..
            } => {
                let (body, tag) = buf[..len].split_at_mut(len - tag_len);
                let computed = mac.compute(body, &[]);
                if !tags_equal(tag, &computed[..tag_len]) {
                    return Err(SrtpError::AuthenticationFailed);
                }
                if encrypted {
                    cipher.apply(
                        &cm_iv(salt, ssrc, u64::from(index)),
                        &mut body[RTCP_HEADER_LEN..rtcp_len],
                    );
                }
            }
            SessionCrypto::Gcm { aead, salt } => {
                let nonce = gcm_nonce(salt, ssrc, u64::from(index));
                let trailer = trailer.to_be_bytes();
                if encrypted {
                    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&trailer);
                    let (payload, tag) = buf[RTCP_HEADER_LEN..len - SRTCP_INDEX_LEN]
                        .split_at_mut(rtcp_len - RTCP_HEADER_LEN);
                    aead.open(&nonce, &aad, payload, tag)
                        .map_err(|()| SrtpError::AuthenticationFailed)?;
                } else {
                    // Unencrypted SRTCP (RFC 7714 §9.2): the AAD is the whole
                    // packet then the trailer, which sit either side of the
                    // tag. Rotate `tag || trailer` to `trailer || tag` so the
                    // AAD is contiguous, instead of copying the packet.
                    buf[rtcp_len..len].rotate_left(GCM_TAG_LEN);
                    let (aad, tag) = buf[..len].split_at_mut(rtcp_len + SRTCP_INDEX_LEN);
                    aead.open(&nonce, aad, &mut [], tag)
                        .map_err(|()| SrtpError::AuthenticationFailed)?;
                }
            }
        }
        self.streams
            .get_or_insert(ssrc)
            .rtcp_rx
            .accept(u64::from(index));
        Ok(rtcp_len)
    }
}

#[cfg(test)]
mod test;
