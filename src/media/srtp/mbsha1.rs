//! Multi-buffer HMAC-SHA1: eight independent SRTP authentication tags
//! computed side by side, one per 32-bit lane of an AVX2 register.
//!
//! Why: on CPUs without the SHA extensions, SHA-1 is a serial chain of 80
//! dependent rounds per 64-byte block, and even AWS-LC's AVX2 code runs it at
//! about 1.1 ns per byte; for a 176-byte SRTP authentication input (four
//! compressions with the HMAC outer block) that was ~10% of the relay's CPU
//! (BENCHMARKS.md). A shard reaps completions in batches, so the tags of one
//! batch are independent messages: running eight of them in the lanes of one
//! register does the same 80 rounds once for eight packets (the technique of
//! Intel's multi-buffer hashing in isa-l_crypto; the code here is our own).
//!
//! HMAC (RFC 2104) keys are folded in advance: [`HmacKey`] holds the SHA-1
//! states after the `K XOR ipad` and `K XOR opad` blocks, so per message
//! only the message blocks and one outer block are compressed. The SRTP
//! authentication input is `M || ROC` (RFC 3711 §4.2): whole blocks of `M`
//! are loaded straight from the caller's packet, and only the last partial
//! block, the ROC and the padding are assembled in a 128-byte per-lane tail
//! on the stack. The caller's packet is never written.
//!
//! [`MacBatch`] uses AVX2 (with AVX-512VL rotates where present) when the
//! CPU has it, checked once at construction, and a scalar SHA-1 otherwise.
//! A group of eight costs the same however many lanes it fills.

/// Lanes per AVX2 pass.
pub const LANES: usize = 8;

/// A lane's tail: the message's last partial block (< 64 bytes), the
/// 4-byte ROC, `0x80` and the 64-bit length fit in two blocks.
const TAIL_BYTES: usize = 128;

/// SHA-1 initial state (FIPS 180-4 §5.3.1).
const SHA1_IV: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

/// SHA-1 round constants (FIPS 180-4 §4.2.1).
const K: [u32; 4] = [0x5a82_7999, 0x6ed9_eba1, 0x8f1b_bcdc, 0xca62_c1d6];

/// An HMAC-SHA1 key with its inner and outer SHA-1 states precomputed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HmacKey {
    inner: [u32; 5],
    outer: [u32; 5],
}

/// Placeholder for unused entries of fixed-size input arrays.
const ZERO_KEY: HmacKey = HmacKey {
    inner: [0; 5],
    outer: [0; 5],
};

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Derived key material stays out of logs.
        f.write_str("HmacKey(..)")
    }
}

impl HmacKey {
    /// Folds `key` (at most 64 bytes: SRTP session auth keys are 20) into
    /// the two SHA-1 states of RFC 2104.
    pub fn new(key: &[u8]) -> HmacKey {
        assert!(
            key.len() <= 64,
            "HMAC keys longer than a block are hashed first"
        );
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let mut inner = SHA1_IV;
        let mut outer = SHA1_IV;
        compress(&mut inner, &ipad);
        compress(&mut outer, &opad);
        HmacKey { inner, outer }
    }

    /// HMAC-SHA1 of `msg || roc` (big-endian ROC, RFC 3711 §4.2), scalar.
    pub fn compute(&self, msg: &[u8], roc: u32) -> [u8; 20] {
        let mut st = self.inner;
        let mut chunks = msg.chunks_exact(64);
        for block in &mut chunks {
            compress(&mut st, block.try_into().expect("64-byte chunk"));
        }
        let rest = chunks.remainder();
        let total = msg.len() + 4;
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()..rest.len() + 4].copy_from_slice(&roc.to_be_bytes());
        let n = finish_padding(&mut tail, rest.len() + 4, 64 + total);
        for block in tail[..n].chunks_exact(64) {
            compress(&mut st, block.try_into().expect("64-byte chunk"));
        }
        self.outer_finish(&st)
    }

    fn outer_finish(&self, inner_digest: &[u32; 5]) -> [u8; 20] {
        let mut block = [0u8; 64];
        for (i, w) in inner_digest.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        block[20] = 0x80;
        block[56..].copy_from_slice(&((64u64 + 20) * 8).to_be_bytes());
        let mut st = self.outer;
        compress(&mut st, &block);
        digest_bytes(&st)
    }
}

/// Writes SHA-1 padding after `used` bytes of `buf` for a message of
/// `total_len` bytes (counted from the start of the hash) and returns the
/// padded length (a multiple of 64).
fn finish_padding(buf: &mut [u8], used: usize, total_len: usize) -> usize {
    buf[used] = 0x80;
    let padded = (used + 1 + 8).div_ceil(64) * 64;
    buf[used + 1..padded - 8].fill(0);
    buf[padded - 8..padded].copy_from_slice(&(total_len as u64 * 8).to_be_bytes());
    padded
}

fn digest_bytes(st: &[u32; 5]) -> [u8; 20] {
    let mut out = [0u8; 20];
    for (i, w) in st.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// The SHA-1 compression function (FIPS 180-4 §6.1.2), scalar.
fn compress(st: &mut [u32; 5], block: &[u8; 64]) {
    let mut w = [0u32; 80];
    for (t, c) in block.chunks_exact(4).enumerate() {
        w[t] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    for t in 16..80 {
        w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
    }
    let [mut a, mut b, mut c, mut d, mut e] = *st;
    for (t, wt) in w.iter().enumerate() {
        let (f, k) = match t / 20 {
            0 => (d ^ (b & (c ^ d)), K[0]),
            1 => (b ^ c ^ d, K[1]),
            2 => ((b & c) | (d & (b | c)), K[2]),
            _ => (b ^ c ^ d, K[3]),
        };
        let tmp = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(*wt);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = tmp;
    }
    for (s, v) in st.iter_mut().zip([a, b, c, d, e]) {
        *s = s.wrapping_add(v);
    }
}

/// One message of a batch: the key, the bytes before the ROC, the ROC.
#[derive(Clone, Copy, Debug)]
pub struct MacInput<'a> {
    /// The session's folded HMAC key.
    pub key: &'a HmacKey,
    /// Authenticated portion of the packet (RFC 3711 §4.2: header and
    /// encrypted payload).
    pub msg: &'a [u8],
    /// Rollover counter appended to `msg` before hashing.
    pub roc: u32,
}

impl MacInput<'static> {
    /// An input that is only there to fill a fixed-size array.
    pub const EMPTY: MacInput<'static> = MacInput {
        key: &ZERO_KEY,
        msg: &[],
        roc: 0,
    };
}

/// Which eight-lane code a [`MacBatch`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// One message at a time (no AVX2, or forced for comparison).
    Scalar,
    /// AVX2, rotates as shift-shift-or.
    Avx2,
    /// AVX2 with AVX-512VL rotates on 256-bit registers.
    Avx512Vl,
}

impl Simd {
    /// The best this CPU runs.
    pub fn detect() -> Simd {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                return Simd::Avx512Vl;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Simd::Avx2;
            }
        }
        Simd::Scalar
    }
}

/// Batched HMAC-SHA1: [`MacBatch::run`] hashes its inputs eight at a time.
/// It holds no buffers; the CPU check is done once, at construction.
#[derive(Clone, Copy, Debug)]
pub struct MacBatch {
    simd: Simd,
}

impl Default for MacBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MacBatch {
    /// The best code this CPU runs ([`Simd::detect`]).
    pub fn new() -> MacBatch {
        Self::with_simd(Simd::detect())
    }

    /// The same with `simd`, or the best this CPU runs if it lacks `simd`.
    pub fn with_simd(simd: Simd) -> MacBatch {
        let best = Simd::detect();
        let simd = match (simd, best) {
            (Simd::Scalar, _) | (_, Simd::Scalar) => Simd::Scalar,
            (Simd::Avx512Vl, Simd::Avx512Vl) => Simd::Avx512Vl,
            _ => Simd::Avx2,
        };
        MacBatch { simd }
    }

    /// The code this batch runs.
    pub fn simd(&self) -> Simd {
        self.simd
    }

    /// `out[i] = HMAC-SHA1(inputs[i].key, inputs[i].msg || inputs[i].roc)`.
    /// Best called with a multiple of eight inputs.
    pub fn run(&self, inputs: &[MacInput<'_>], out: &mut [[u8; 20]]) {
        assert!(out.len() >= inputs.len());
        for (group, tags) in inputs.chunks(LANES).zip(out.chunks_mut(LANES)) {
            self.run_group(group, tags);
        }
    }

    /// Up to eight inputs in one pass.
    fn run_group(&self, group: &[MacInput<'_>], out: &mut [[u8; 20]]) {
        debug_assert!(group.len() <= LANES);
        if self.simd == Simd::Scalar || group.len() == 1 {
            for (i, o) in group.iter().zip(out.iter_mut()) {
                *o = i.key.compute(i.msg, i.roc);
            }
            return;
        }
        let mut tails = [[0u8; TAIL_BYTES]; LANES];
        let mut lanes = Lanes {
            msg: [[].as_slice(); LANES],
            full: [0; LANES],
            blocks: [0; LANES],
            inner: [[0; 5]; LANES],
            outer: [[0; 5]; LANES],
        };
        for (l, input) in group.iter().enumerate() {
            let m = input.msg.len();
            let full = m / 64;
            let rest = &input.msg[full * 64..];
            let tail = &mut tails[l];
            tail[..rest.len()].copy_from_slice(rest);
            tail[rest.len()..rest.len() + 4].copy_from_slice(&input.roc.to_be_bytes());
            let padded = finish_padding(tail, rest.len() + 4, 64 + m + 4);
            lanes.msg[l] = input.msg;
            lanes.full[l] = full;
            lanes.blocks[l] = (full + padded / 64) as u32;
            lanes.inner[l] = input.key.inner;
            lanes.outer[l] = input.key.outer;
        }
        let mut tags = [[0u8; 20]; LANES];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the instruction set was detected at construction (and is
        // not Scalar here); `Lanes` was filled above so that every lane's
        // blocks are whole 64-byte blocks of its message followed by at most
        // two of its tail, which `hmac_x8` relies on.
        unsafe {
            match self.simd {
                Simd::Avx512Vl => x86_vl::hmac_x8(&lanes, &tails, &mut tags),
                Simd::Avx2 => x86::hmac_x8(&lanes, &tails, &mut tags),
                Simd::Scalar => unreachable!("handled above"),
            }
        }
        out[..group.len()].copy_from_slice(&tags[..group.len()]);
    }
}

/// Eight messages laid out for one pass: lane `l` hashes `full[l]` whole
/// blocks of `msg[l]`, then `blocks[l] - full[l]` (1 or 2) blocks of its
/// tail. An unused lane has `blocks[l] == 0`.
struct Lanes<'a> {
    msg: [&'a [u8]; LANES],
    full: [usize; LANES],
    blocks: [u32; LANES],
    inner: [[u32; 5]; LANES],
    outer: [[u32; 5]; LANES],
}

/// The eight-lane code, generated once per instruction set: plain AVX2
/// rotates with two shifts and an OR; AVX-512VL has a rotate instruction
/// for 256-bit registers (`vprold`), which saves two of the three
/// operations in each of the three rotates per round, without 512-bit
/// registers and their frequency penalty.
#[cfg(target_arch = "x86_64")]
macro_rules! lanes_x8 {
    ($module:ident, $feat:literal, |$x:ident, $l:ident, $r:ident| $rol:expr) => {
        mod $module {
            use super::{Lanes, K, LANES, TAIL_BYTES};
            use std::arch::x86_64::*;

            #[target_feature(enable = $feat)]
            #[inline]
            fn rol<const $l: i32, const $r: i32>($x: __m256i) -> __m256i {
                $rol
            }

            /// Transposes eight rows of eight words (lane-major) into eight
            /// word-major vectors: `out[t]` has word `t` of every lane.
            #[target_feature(enable = $feat)]
            #[inline]
            fn transpose8(r: [__m256i; 8]) -> [__m256i; 8] {
                let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
                let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
                let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
                let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
                let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
                let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
                let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
                let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
                let u0 = _mm256_unpacklo_epi64(t0, t2);
                let u1 = _mm256_unpackhi_epi64(t0, t2);
                let u2 = _mm256_unpacklo_epi64(t1, t3);
                let u3 = _mm256_unpackhi_epi64(t1, t3);
                let u4 = _mm256_unpacklo_epi64(t4, t6);
                let u5 = _mm256_unpackhi_epi64(t4, t6);
                let u6 = _mm256_unpacklo_epi64(t5, t7);
                let u7 = _mm256_unpackhi_epi64(t5, t7);
                [
                    _mm256_permute2x128_si256::<0x20>(u0, u4),
                    _mm256_permute2x128_si256::<0x20>(u1, u5),
                    _mm256_permute2x128_si256::<0x20>(u2, u6),
                    _mm256_permute2x128_si256::<0x20>(u3, u7),
                    _mm256_permute2x128_si256::<0x31>(u0, u4),
                    _mm256_permute2x128_si256::<0x31>(u1, u5),
                    _mm256_permute2x128_si256::<0x31>(u2, u6),
                    _mm256_permute2x128_si256::<0x31>(u3, u7),
                ]
            }

            /// Eight SHA-1 compressions, one per lane, of the message words `w`.
            #[target_feature(enable = $feat)]
            #[inline]
            fn compress8(st: &mut [__m256i; 5], w: &mut [__m256i; 16]) {
                let [mut a, mut b, mut c, mut d, mut e] = *st;
                macro_rules! round {
                    ($t:expr, $f:ident, $k:expr) => {{
                        let t: usize = $t;
                        let wt = if t < 16 {
                            w[t]
                        } else {
                            let x = _mm256_xor_si256(
                                _mm256_xor_si256(w[(t - 3) & 15], w[(t - 8) & 15]),
                                _mm256_xor_si256(w[(t - 14) & 15], w[t & 15]),
                            );
                            let x = rol::<1, 31>(x);
                            w[t & 15] = x;
                            x
                        };
                        let f = $f!(b, c, d);
                        let tmp = _mm256_add_epi32(
                            _mm256_add_epi32(rol::<5, 27>(a), f),
                            _mm256_add_epi32(_mm256_add_epi32(e, $k), wt),
                        );
                        e = d;
                        d = c;
                        c = rol::<30, 2>(b);
                        b = a;
                        a = tmp;
                    }};
                }
                macro_rules! ch {
                    ($b:expr, $c:expr, $d:expr) => {
                        _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
                    };
                }
                macro_rules! parity {
                    ($b:expr, $c:expr, $d:expr) => {
                        _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
                    };
                }
                macro_rules! maj {
                    ($b:expr, $c:expr, $d:expr) => {
                        _mm256_or_si256(
                            _mm256_and_si256($b, $c),
                            _mm256_and_si256($d, _mm256_or_si256($b, $c)),
                        )
                    };
                }
                let k0 = _mm256_set1_epi32(K[0] as i32);
                let k1 = _mm256_set1_epi32(K[1] as i32);
                let k2 = _mm256_set1_epi32(K[2] as i32);
                let k3 = _mm256_set1_epi32(K[3] as i32);
                // Fully unrolled: with constant round numbers the message
                // schedule lives in registers instead of a stack array, and
                // the a..e shuffle is register renaming, not moves.
                macro_rules! r4 {
                    ($t:expr, $f:ident, $k:expr) => {
                        round!($t, $f, $k);
                        round!($t + 1, $f, $k);
                        round!($t + 2, $f, $k);
                        round!($t + 3, $f, $k);
                    };
                }
                macro_rules! r20 {
                    ($t:expr, $f:ident, $k:expr) => {
                        r4!($t, $f, $k);
                        r4!($t + 4, $f, $k);
                        r4!($t + 8, $f, $k);
                        r4!($t + 12, $f, $k);
                        r4!($t + 16, $f, $k);
                    };
                }
                r20!(0, ch, k0);
                r20!(20, parity, k1);
                r20!(40, maj, k2);
                r20!(60, parity, k3);
                st[0] = _mm256_add_epi32(st[0], a);
                st[1] = _mm256_add_epi32(st[1], b);
                st[2] = _mm256_add_epi32(st[2], c);
                st[3] = _mm256_add_epi32(st[3], d);
                st[4] = _mm256_add_epi32(st[4], e);
            }

            /// Word `i` of every lane's state as one vector.
            #[target_feature(enable = $feat)]
            #[inline]
            fn gather_state(s: &[[u32; 5]; LANES]) -> [__m256i; 5] {
                let mut v = [_mm256_setzero_si256(); 5];
                for (i, vi) in v.iter_mut().enumerate() {
                    let w: [i32; LANES] = std::array::from_fn(|l| s[l][i] as i32);
                    *vi = _mm256_setr_epi32(w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]);
                }
                v
            }

            /// HMAC-SHA1 of the eight messages in `lanes`.
            ///
            /// # Safety
            /// The CPU must have the instruction set; for every lane,
            /// `full[l] * 64 <= msg[l].len()` and `blocks[l] <= full[l] + 2`.
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn hmac_x8(
                lanes: &Lanes<'_>,
                tails: &[[u8; TAIL_BYTES]; LANES],
                tags: &mut [[u8; 20]; LANES],
            ) {
                let max_blocks = *lanes.blocks.iter().max().unwrap_or(&0) as usize;
                let bswap = _mm256_setr_epi8(
                    3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4,
                    11, 10, 9, 8, 15, 14, 13, 12,
                );
                let nblocks = _mm256_loadu_si256(lanes.blocks.as_ptr().cast());
                let mut st = gather_state(&lanes.inner);
                for blk in 0..max_blocks {
                    let mut lo = [_mm256_setzero_si256(); 8];
                    let mut hi = [_mm256_setzero_si256(); 8];
                    for l in 0..LANES {
                        let full = lanes.full[l];
                        // Whole blocks come from the packet, the rest from
                        // the tail; a lane past its end (or unused) rereads
                        // its tail, and its result is masked off below.
                        let p = if blk < full {
                            lanes.msg[l].as_ptr().add(blk * 64)
                        } else if blk - full < 2 {
                            tails[l].as_ptr().add((blk - full) * 64)
                        } else {
                            tails[l].as_ptr()
                        };
                        lo[l] = _mm256_shuffle_epi8(_mm256_loadu_si256(p.cast()), bswap);
                        hi[l] = _mm256_shuffle_epi8(_mm256_loadu_si256(p.add(32).cast()), bswap);
                    }
                    let a = transpose8(lo);
                    let b = transpose8(hi);
                    let mut w = [
                        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3],
                        b[4], b[5], b[6], b[7],
                    ];
                    let mut next = st;
                    compress8(&mut next, &mut w);
                    // Lanes whose message has fewer blocks keep their state.
                    let active = _mm256_cmpgt_epi32(nblocks, _mm256_set1_epi32(blk as i32));
                    for i in 0..5 {
                        st[i] = _mm256_blendv_epi8(st[i], next[i], active);
                    }
                }
                // Outer hash: one block of the 20-byte inner digest plus padding.
                let zero = _mm256_setzero_si256();
                let mut w = [
                    st[0],
                    st[1],
                    st[2],
                    st[3],
                    st[4],
                    _mm256_set1_epi32(0x8000_0000u32 as i32),
                    zero,
                    zero,
                    zero,
                    zero,
                    zero,
                    zero,
                    zero,
                    zero,
                    zero,
                    _mm256_set1_epi32(((64 + 20) * 8) as i32),
                ];
                let mut ost = gather_state(&lanes.outer);
                compress8(&mut ost, &mut w);
                let mut words = [[0u32; LANES]; 5];
                for i in 0..5 {
                    _mm256_storeu_si256(words[i].as_mut_ptr().cast(), ost[i]);
                }
                for (l, tag) in tags.iter_mut().enumerate() {
                    for i in 0..5 {
                        tag[i * 4..i * 4 + 4].copy_from_slice(&words[i][l].to_be_bytes());
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
lanes_x8!(x86, "avx2", |x, L, R| _mm256_or_si256(
    _mm256_slli_epi32::<L>(x),
    _mm256_srli_epi32::<R>(x)
));
#[cfg(target_arch = "x86_64")]
lanes_x8!(x86_vl, "avx2,avx512f,avx512vl", |x, L, R| {
    let _ = R;
    _mm256_rol_epi32::<L>(x)
});

#[cfg(test)]
mod test {
    use super::*;
    use hmac::{Hmac, Mac};

    fn reference(key: &[u8], msg: &[u8], roc: u32) -> [u8; 20] {
        let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).unwrap();
        m.update(msg);
        m.update(&roc.to_be_bytes());
        m.finalize().into_bytes().into()
    }

    /// RFC 2202 test case 2 ("Jefe"), with the last four message bytes
    /// passed as the ROC.
    #[test]
    fn rfc2202_case2() {
        let msg = b"what do ya want for nothing?";
        let (body, roc) = msg.split_at(msg.len() - 4);
        let roc = u32::from_be_bytes(roc.try_into().unwrap());
        let key = HmacKey::new(b"Jefe");
        let want = [
            0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
            0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79,
        ];
        assert_eq!(key.compute(body, roc), want);
        for batch in [Simd::Avx512Vl, Simd::Avx2, Simd::Scalar].map(MacBatch::with_simd) {
            let mut out = [[0u8; 20]; 1];
            batch.run(
                &[MacInput {
                    key: &key,
                    msg: body,
                    roc,
                }],
                &mut out,
            );
            assert_eq!(out[0], want);
        }
    }

    /// Every length from 0 to 300 (all padding cases), long ones, lanes of
    /// mixed lengths and keys, and batches that are not a multiple of
    /// eight, against RustCrypto's HMAC.
    #[test]
    fn batches_match_reference() {
        let keys: Vec<[u8; 20]> = (0..5u8).map(|k| [k.wrapping_mul(37) ^ 0xa5; 20]).collect();
        let hk: Vec<HmacKey> = keys.iter().map(|k| HmacKey::new(k)).collect();
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        let mut lens: Vec<usize> = (0..=300).collect();
        lens.extend([1532, 1536, 1900]);
        for batch in [Simd::Avx512Vl, Simd::Avx2, Simd::Scalar].map(MacBatch::with_simd) {
            for chunk in [1usize, 3, 8, 13, 64] {
                for group in lens.chunks(chunk) {
                    let inputs: Vec<MacInput> = group
                        .iter()
                        .enumerate()
                        .map(|(i, &n)| MacInput {
                            key: &hk[(n + i) % hk.len()],
                            msg: &data[i..i + n],
                            roc: (n as u32).wrapping_mul(0x0101_0101),
                        })
                        .collect();
                    let mut out = vec![[0u8; 20]; inputs.len()];
                    batch.run(&inputs, &mut out);
                    for (i, (inp, o)) in inputs.iter().zip(&out).enumerate() {
                        let n = group[i];
                        let want = reference(&keys[(n + i) % keys.len()], inp.msg, inp.roc);
                        assert_eq!(*o, want, "len {n} lane {i} chunk {chunk}");
                    }
                }
            }
        }
    }
}
