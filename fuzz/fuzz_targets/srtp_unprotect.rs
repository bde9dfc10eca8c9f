//! SRTP/SRTCP unprotect on arbitrary bytes, and protect/unprotect symmetry.
//!
//! Input: byte 0 picks the suite and byte 1 the byte to tamper with; the
//! rest is the packet. With a fixed key:
//! - `unprotect_rtp` and `unprotect_rtcp` of the packet must not panic, and
//!   an `Ok` length must lie inside the packet;
//! - if the packet is RTP that `protect_rtp` accepts, unprotecting the
//!   result with the same key gives the packet back, bit-exact; the same
//!   for RTCP with `protect_rtcp` / `unprotect_rtcp`;
//! - a protected packet with one byte flipped never unprotects.
#![no_main]

use kolokol::media::srtp::{SrtpContext, SrtpSuite};
use libfuzzer_sys::fuzz_target;

/// Room after the packet for the largest overhead (SRTCP: 4 + 16).
const SPARE: usize = 64;

fn ctx(suite: SrtpSuite) -> SrtpContext {
    let key: Vec<u8> = (0..suite.master_key_len() as u8)
        .map(|i| i.wrapping_mul(7) ^ 0x5a)
        .collect();
    let salt: Vec<u8> = (0..suite.master_salt_len() as u8)
        .map(|i| i.wrapping_mul(13) ^ 0xa5)
        .collect();
    SrtpContext::new(suite, &key, &salt).expect("fixed key has the suite's lengths")
}

fn with_room(pkt: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; pkt.len() + SPARE];
    buf[..pkt.len()].copy_from_slice(pkt);
    buf
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let suite = SrtpSuite::ALL[usize::from(data[0]) % SrtpSuite::ALL.len()];
    let flip = usize::from(data[1]);
    let pkt = &data[2..];

    // Arbitrary bytes into the receive paths.
    let mut rx = ctx(suite);
    let mut buf = with_room(pkt);
    if let Ok(n) = rx.unprotect_rtp(&mut buf, pkt.len()) {
        assert!(n <= pkt.len());
    }
    let mut buf = with_room(pkt);
    if let Ok(n) = rx.unprotect_rtcp(&mut buf, pkt.len()) {
        assert!(n <= pkt.len());
    }
    // A length beyond the buffer is refused, not a panic.
    let mut buf = pkt.to_vec();
    assert!(rx.unprotect_rtp(&mut buf, pkt.len() + 1).is_err());
    assert!(rx.unprotect_rtcp(&mut buf, pkt.len() + 1).is_err());

    // RTP round trip.
    let mut tx = ctx(suite);
    let mut rx = ctx(suite);
    let mut buf = with_room(pkt);
    if let Ok(n) = tx.protect_rtp(&mut buf, pkt.len()) {
        assert_eq!(n, pkt.len() + suite.rtp_auth_tag_len());
        let protected = buf[..n].to_vec();
        // Tampered: one flipped byte must not authenticate.
        let mut bad = with_room(&protected);
        bad[flip % n] ^= 0x01;
        let mut rx_bad = ctx(suite);
        assert!(
            rx_bad.unprotect_rtp(&mut bad, n).is_err(),
            "tampered SRTP accepted ({suite:?})"
        );
        let m = rx
            .unprotect_rtp(&mut buf, n)
            .unwrap_or_else(|e| panic!("own SRTP refused ({suite:?}): {e:?}"));
        assert_eq!(&buf[..m], pkt, "SRTP round trip ({suite:?})");
        // The same packet again is a replay.
        let mut again = with_room(&protected);
        assert!(rx.unprotect_rtp(&mut again, n).is_err());
    }

    // RTCP round trip.
    let mut tx = ctx(suite);
    let mut rx = ctx(suite);
    let mut buf = with_room(pkt);
    if let Ok(n) = tx.protect_rtcp(&mut buf, pkt.len()) {
        assert_eq!(n, pkt.len() + suite.rtcp_overhead());
        let protected = buf[..n].to_vec();
        let mut bad = with_room(&protected);
        bad[flip % n] ^= 0x01;
        let mut rx_bad = ctx(suite);
        assert!(
            rx_bad.unprotect_rtcp(&mut bad, n).is_err(),
            "tampered SRTCP accepted ({suite:?})"
        );
        let m = rx
            .unprotect_rtcp(&mut buf, n)
            .unwrap_or_else(|e| panic!("own SRTCP refused ({suite:?}): {e:?}"));
        assert_eq!(&buf[..m], pkt, "SRTCP round trip ({suite:?})");
        let mut again = with_room(&protected);
        assert!(rx.unprotect_rtcp(&mut again, n).is_err());
    }
});
