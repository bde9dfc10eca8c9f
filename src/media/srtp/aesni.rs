//! AES-128/256 counter mode with AES-NI, for SRTP's short packets.
//!
//! Why our own: an SRTP payload is a handful of blocks (ten for a 20 ms
//! G.711 frame). Library CTR code is built for long buffers: AWS-LC's path
//! goes through a generic wrapper that manages a partial-block buffer and
//! then an eight-block loop, and spent ~107 ns on 160 bytes in the relay
//! (BENCHMARKS.md). Here the round keys sit in registers and up to eight
//! counter blocks go through the rounds interleaved, the only thing that
//! matters for AESENC's four-cycle latency.
//!
//! The counter is the last 32 bits of the block, big-endian, as in AWS-LC's
//! `ctr32` code; SRTP's counter blocks (RFC 3711 §4.1.1) end in 16 zero bits
//! and a packet has far fewer than 2^16 blocks, so this equals the RFC's
//! 128-bit counter. Key expansion is FIPS-197 §5.2 with AESKEYGENASSIST.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Expanded encryption round keys: 11 (AES-128) or 15 (AES-256).
#[derive(Clone)]
pub(crate) struct AesNiCtr {
    #[cfg(target_arch = "x86_64")]
    rk: [__m128i; 15],
    rounds: usize,
}

impl AesNiCtr {
    /// Whether this CPU can run it.
    pub(crate) fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("sse4.1")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Expands a 16- or 32-byte key, or `None` on a CPU without AES-NI.
    pub(crate) fn new(key: &[u8]) -> Option<AesNiCtr> {
        if !Self::available() {
            return None;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AES-NI and SSE4.1 were detected just above.
        unsafe {
            match key.len() {
                16 => Some(expand128(key.try_into().ok()?)),
                32 => Some(expand256(key.try_into().ok()?)),
                _ => None,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// XORs `data` with the keystream starting at counter block `iv`.
    #[inline]
    pub(crate) fn apply(&self, iv: &[u8; 16], data: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `AesNiCtr` exists only if AES-NI and SSE4.1 were
        // detected (`new`).
        unsafe {
            ctr(&self.rk, self.rounds, iv, data)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "aes,sse4.1")]
fn shift_xor(k: __m128i) -> __m128i {
    // k ^ (k << 32) ^ (k << 64) ^ (k << 96): each word XORed with all
    // words before it (FIPS-197 §5.2's running XOR).
    let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    let k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, _mm_slli_si128::<4>(k))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "aes,sse4.1")]
unsafe fn expand128(key: &[u8; 16]) -> AesNiCtr {
    let mut rk = [_mm_setzero_si128(); 15];
    rk[0] = _mm_loadu_si128(key.as_ptr().cast());
    macro_rules! step {
        ($i:expr, $rcon:expr) => {
            let t = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]));
            rk[$i] = _mm_xor_si128(shift_xor(rk[$i - 1]), t);
        };
    }
    step!(1, 0x01);
    step!(2, 0x02);
    step!(3, 0x04);
    step!(4, 0x08);
    step!(5, 0x10);
    step!(6, 0x20);
    step!(7, 0x40);
    step!(8, 0x80);
    step!(9, 0x1b);
    step!(10, 0x36);
    AesNiCtr { rk, rounds: 10 }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "aes,sse4.1")]
unsafe fn expand256(key: &[u8; 32]) -> AesNiCtr {
    let mut rk = [_mm_setzero_si128(); 15];
    rk[0] = _mm_loadu_si128(key.as_ptr().cast());
    rk[1] = _mm_loadu_si128(key.as_ptr().add(16).cast());
    macro_rules! even {
        ($i:expr, $rcon:expr) => {
            // RotWord/SubWord of the previous key's last word, with Rcon.
            let t = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]));
            rk[$i] = _mm_xor_si128(shift_xor(rk[$i - 2]), t);
        };
    }
    macro_rules! odd {
        ($i:expr) => {
            // SubWord only, no Rcon (FIPS-197 §5.2, Nk = 8).
            let t = _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0>(rk[$i - 1]));
            rk[$i] = _mm_xor_si128(shift_xor(rk[$i - 2]), t);
        };
    }
    even!(2, 0x01);
    odd!(3);
    even!(4, 0x02);
    odd!(5);
    even!(6, 0x04);
    odd!(7);
    even!(8, 0x08);
    odd!(9);
    even!(10, 0x10);
    odd!(11);
    even!(12, 0x20);
    odd!(13);
    even!(14, 0x40);
    AesNiCtr { rk, rounds: 14 }
}

/// Counter-mode keystream over `data`: eight blocks at a time, then the
/// rest in one group of 1, 2, 4 or 8 (each group size is its own fully
/// unrolled code, so the blocks stay in registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "aes,sse4.1")]
unsafe fn ctr(rk: &[__m128i; 15], rounds: usize, iv: &[u8; 16], data: &mut [u8]) {
    let head = _mm_loadu_si128(iv.as_ptr().cast());
    let mut counter = u32::from_be_bytes([iv[12], iv[13], iv[14], iv[15]]);
    let mut chunks = data.chunks_exact_mut(128);
    for chunk in &mut chunks {
        group::<8>(rk, rounds, head, counter, chunk);
        counter = counter.wrapping_add(8);
    }
    let rest = chunks.into_remainder();
    match rest.len().div_ceil(16) {
        0 => {}
        1 => group::<1>(rk, rounds, head, counter, rest),
        2 => group::<2>(rk, rounds, head, counter, rest),
        3 | 4 => group::<4>(rk, rounds, head, counter, rest),
        _ => group::<8>(rk, rounds, head, counter, rest),
    }
}

/// `N` keystream blocks from `counter` on, XORed into `data` (at most
/// `N * 16` bytes; a shorter tail uses part of the keystream).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "aes,sse4.1")]
#[inline]
unsafe fn group<const N: usize>(
    rk: &[__m128i; 15],
    rounds: usize,
    head: __m128i,
    counter: u32,
    data: &mut [u8],
) {
    debug_assert!(data.len() <= N * 16);
    let mut x: [__m128i; N] = std::array::from_fn(|j| {
        let c = counter.wrapping_add(j as u32).swap_bytes() as i32;
        _mm_xor_si128(_mm_insert_epi32::<3>(head, c), rk[0])
    });
    for k in &rk[1..rounds] {
        for xj in x.iter_mut() {
            *xj = _mm_aesenc_si128(*xj, *k);
        }
    }
    for xj in x.iter_mut() {
        *xj = _mm_aesenclast_si128(*xj, rk[rounds]);
    }
    let mut blocks = data.chunks_exact_mut(16);
    let mut j = 0;
    for block in &mut blocks {
        let p = block.as_mut_ptr().cast::<__m128i>();
        _mm_storeu_si128(p, _mm_xor_si128(_mm_loadu_si128(p), x[j]));
        j += 1;
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let mut ks = [0u8; 16];
        _mm_storeu_si128(ks.as_mut_ptr().cast(), x[j]);
        for (b, k) in tail.iter_mut().zip(ks) {
            *b ^= k;
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use aes::cipher::{KeyIvInit, StreamCipher};

    /// Against RustCrypto's CTR (32-bit big-endian counter) for both key
    /// sizes, every length up to 300 bytes, and a counter that wraps its
    /// low 32 bits.
    #[test]
    fn matches_rustcrypto_ctr32() {
        if !AesNiCtr::available() {
            return;
        }
        for key_len in [16usize, 32] {
            let key: Vec<u8> = (0..key_len as u8)
                .map(|i| i.wrapping_mul(29) ^ 0x5a)
                .collect();
            let ours = AesNiCtr::new(&key).unwrap();
            for iv_tail in [0u32, 0xffff_fffd] {
                let mut iv = [0x42u8; 16];
                iv[12..].copy_from_slice(&iv_tail.to_be_bytes());
                for len in 0..300 {
                    let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                    let mut a = plain.clone();
                    ours.apply(&iv, &mut a);
                    let mut b = plain.clone();
                    if key_len == 16 {
                        ctr::Ctr32BE::<aes::Aes128>::new(key[..].into(), (&iv).into())
                            .apply_keystream(&mut b);
                    } else {
                        ctr::Ctr32BE::<aes::Aes256>::new(key[..].into(), (&iv).into())
                            .apply_keystream(&mut b);
                    }
                    assert_eq!(a, b, "key {key_len} len {len} iv {iv_tail:#x}");
                }
            }
        }
    }
}
