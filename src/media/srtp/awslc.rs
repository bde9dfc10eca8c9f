//! The AWS-LC backend (`aws-lc-sys` feature): AES-CTR, HMAC-SHA1 and
//! AES-GCM from AWS-LC's assembly, called through `aws-lc-sys` directly.
//!
//! HMAC is built here from two SHA-1 states precomputed over the key XOR
//! ipad and opad blocks (RFC 2104), copied per packet: AWS-LC's own
//! `HMAC_CTX` path (and `aws-lc-rs`'s wrapper of it) costs about as much
//! again as the hashing for a 176-byte SRTP packet, because it copies and
//! cleans up three digest contexts per message.

use std::ptr::NonNull;
use std::sync::Once;

use aws_lc_sys as sys;

use super::backend::{GCM_TAG_LEN, SHA1_LEN};

/// SHA-1 block size, the HMAC pad length.
const SHA1_BLOCK_LEN: usize = 64;

fn library_init() {
    static INIT: Once = Once::new();
    // SAFETY: idempotent library set-up (CPU feature detection).
    INIT.call_once(|| unsafe { sys::CRYPTO_library_init() });
}

/// SHA-1 state after absorbing `block`.
fn sha1_after(block: &[u8; SHA1_BLOCK_LEN]) -> sys::SHA_CTX {
    let mut ctx = std::mem::MaybeUninit::<sys::SHA_CTX>::uninit();
    // SAFETY: SHA1_Init initializes the whole struct; the block is 64 bytes.
    unsafe {
        sys::SHA1_Init(ctx.as_mut_ptr());
        sys::SHA1_Update(ctx.as_mut_ptr(), block.as_ptr().cast(), block.len());
        ctx.assume_init()
    }
}

/// HMAC-SHA1 with precomputed inner and outer SHA-1 states.
pub(crate) struct HmacSha1 {
    inner: sys::SHA_CTX,
    outer: sys::SHA_CTX,
}

impl HmacSha1 {
    pub(crate) fn new(key: &[u8]) -> Self {
        library_init();
        let mut k = [0u8; SHA1_BLOCK_LEN];
        if key.len() > SHA1_BLOCK_LEN {
            // SAFETY: SHA1 writes 20 bytes into a 64-byte buffer.
            unsafe { sys::SHA1(key.as_ptr(), key.len(), k.as_mut_ptr()) };
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let ipad = k.map(|b| b ^ 0x36);
        let opad = k.map(|b| b ^ 0x5c);
        HmacSha1 {
            inner: sha1_after(&ipad),
            outer: sha1_after(&opad),
        }
    }

    #[inline]
    pub(crate) fn compute(&self, a: &[u8], b: &[u8]) -> [u8; SHA1_LEN] {
        let mut inner = self.inner;
        let mut outer = self.outer;
        let mut digest = [0u8; SHA1_LEN];
        let mut out = [0u8; SHA1_LEN];
        // SAFETY: the contexts are initialized copies; every pointer/length
        // pair comes from a live slice; SHA1_Final writes 20 bytes.
        unsafe {
            sys::SHA1_Update(&mut inner, a.as_ptr().cast(), a.len());
            sys::SHA1_Update(&mut inner, b.as_ptr().cast(), b.len());
            sys::SHA1_Final(digest.as_mut_ptr(), &mut inner);
            sys::SHA1_Update(&mut outer, digest.as_ptr().cast(), digest.len());
            sys::SHA1_Final(out.as_mut_ptr(), &mut outer);
        }
        out
    }
}

/// AES encryption round keys for counter mode.
pub(crate) struct AesCtr {
    key: sys::AES_KEY,
}

impl AesCtr {
    /// `key` is 16 or 32 bytes (checked by the caller).
    pub(crate) fn new(key: &[u8]) -> Self {
        library_init();
        assert!(key.len() == 16 || key.len() == 32);
        let mut aes = std::mem::MaybeUninit::<sys::AES_KEY>::uninit();
        // SAFETY: AES_set_encrypt_key fills the struct for a 128/256-bit key.
        let rc = unsafe {
            sys::AES_set_encrypt_key(key.as_ptr(), 8 * key.len() as u32, aes.as_mut_ptr())
        };
        assert_eq!(rc, 0, "AES_set_encrypt_key");
        // SAFETY: initialized by the successful call above.
        AesCtr {
            key: unsafe { aes.assume_init() },
        }
    }

    /// XORs `data` with the keystream from counter block `iv`. AWS-LC counts
    /// in the low 32 bits; SRTP's IVs end in 16 zero bits and a datagram is
    /// far below 2^16 blocks, so no carry ever differs from RFC 3711.
    #[inline]
    pub(crate) fn apply(&self, iv: &[u8; 16], data: &mut [u8]) {
        let mut ivec = *iv;
        let mut ecount = [0u8; 16];
        let mut num = 0;
        let p = data.as_mut_ptr();
        // SAFETY: in and out alias exactly, which AES_ctr128_encrypt allows;
        // ivec and ecount are the 16 bytes it needs.
        unsafe {
            sys::AES_ctr128_encrypt(
                p,
                p,
                data.len(),
                &self.key,
                ivec.as_mut_ptr(),
                ecount.as_mut_ptr(),
                &mut num,
            )
        };
    }
}

/// An AES-GCM `EVP_AEAD_CTX` (round keys and GHASH key precomputed).
pub(crate) struct AesGcm {
    ctx: NonNull<sys::EVP_AEAD_CTX>,
}

// SAFETY: the context is owned exclusively and AWS-LC's AEAD contexts are
// not tied to a thread; seal/open take it by const pointer.
unsafe impl Send for AesGcm {}
// SAFETY: seal/open do not mutate the context.
unsafe impl Sync for AesGcm {}

impl AesGcm {
    /// `key` is 16 or 32 bytes (checked by the caller).
    pub(crate) fn new(key: &[u8]) -> Self {
        library_init();
        // SAFETY: the AEAD getters return static descriptors; the key slice
        // is live for the call, which copies it.
        let ctx = unsafe {
            let aead = if key.len() == 16 {
                sys::EVP_aead_aes_128_gcm()
            } else {
                sys::EVP_aead_aes_256_gcm()
            };
            sys::EVP_AEAD_CTX_new(aead, key.as_ptr(), key.len(), GCM_TAG_LEN)
        };
        AesGcm {
            ctx: NonNull::new(ctx).expect("EVP_AEAD_CTX_new"),
        }
    }

    #[inline]
    pub(crate) fn seal(&self, nonce: &[u8; 12], aad: &[u8], data: &mut [u8]) -> [u8; GCM_TAG_LEN] {
        let mut tag = [0u8; GCM_TAG_LEN];
        let mut tag_len = 0;
        let p = data.as_mut_ptr();
        // SAFETY: in and out alias exactly (allowed); the tag buffer holds
        // GCM_TAG_LEN bytes; the other pointers come from live slices.
        let rc = unsafe {
            sys::EVP_AEAD_CTX_seal_scatter(
                self.ctx.as_ptr(),
                p,
                tag.as_mut_ptr(),
                &mut tag_len,
                tag.len(),
                nonce.as_ptr(),
                nonce.len(),
                p,
                data.len(),
                std::ptr::null(),
                0,
                aad.as_ptr(),
                aad.len(),
            )
        };
        // Fails only for lengths past GCM's limits, which a datagram is not.
        assert!(
            rc == 1 && tag_len == GCM_TAG_LEN,
            "EVP_AEAD_CTX_seal_scatter"
        );
        tag
    }

    #[inline]
    pub(crate) fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8],
    ) -> Result<(), ()> {
        let p = data.as_mut_ptr();
        // SAFETY: as in `seal`; the tag pointer/length come from a live slice.
        let rc = unsafe {
            sys::EVP_AEAD_CTX_open_gather(
                self.ctx.as_ptr(),
                p,
                nonce.as_ptr(),
                nonce.len(),
                p,
                data.len(),
                tag.as_ptr(),
                tag.len(),
                aad.as_ptr(),
                aad.len(),
            )
        };
        if rc == 1 {
            Ok(())
        } else {
            // Keep AWS-LC's thread-local error queue empty.
            // SAFETY: no preconditions.
            unsafe { sys::ERR_clear_error() };
            Err(())
        }
    }
}

impl Drop for AesGcm {
    fn drop(&mut self) {
        // SAFETY: created by EVP_AEAD_CTX_new and freed once.
        unsafe { sys::EVP_AEAD_CTX_free(self.ctx.as_ptr()) };
    }
}
