//! RFC test vectors and behavioural tests for the SRTP transforms.

use super::backend::{derive, AesCtr, Keystream};
use super::*;

fn hex(s: &str) -> Vec<u8> {
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    assert!(clean.len().is_multiple_of(2), "odd hex length");
    clean
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Master key and salt of length right for `suite`, distinct per `seed`.
fn master(suite: SrtpSuite, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let key = (0..suite.master_key_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    let salt = (0..suite.master_salt_len())
        .map(|i| seed ^ 0xa5 ^ (i as u8).wrapping_mul(7))
        .collect();
    (key, salt)
}

fn pair(suite: SrtpSuite, backend: CryptoBackend) -> (SrtpContext, SrtpContext) {
    let (key, salt) = master(suite, 1);
    (
        SrtpContext::with_backend(suite, &key, &salt, backend).unwrap(),
        SrtpContext::with_backend(suite, &key, &salt, backend).unwrap(),
    )
}

/// An RTP packet with `payload_len` bytes of payload in a 1500-byte buffer.
fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> ([u8; 1500], usize) {
    let mut buf = [0u8; 1500];
    buf[0] = 0x80;
    buf[1] = 0;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for (i, b) in buf[12..12 + payload_len].iter_mut().enumerate() {
        *b = (i as u8) ^ (seq as u8);
    }
    (buf, 12 + payload_len)
}

/// An RTCP receiver report with one report block.
fn rtcp(ssrc: u32) -> ([u8; 1500], usize) {
    let mut buf = [0u8; 1500];
    buf[..4].copy_from_slice(&[0x81, 201, 0, 7]);
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    for (i, b) in buf[8..32].iter_mut().enumerate() {
        *b = i as u8;
    }
    (buf, 32)
}

// ---------------------------------------------------------------------------
// RFC 3711 Appendix B.2: AES-CM keystream.

#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
    let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
    for &backend in CryptoBackend::AVAILABLE {
        let cipher = AesCtr::new(backend, &key);

        // SSRC 0 and index 0: the counter block is the salt shifted left 16.
        let iv = cm_iv(&salt, 0, 0);
        assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
        let mut ks = [0u8; 48];
        cipher.apply(&iv, &mut ks);
        assert_eq!(
            ks.to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4
                 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0"),
            "{backend:?}"
        );

        // The last blocks of the RFC's listing, from counter 0xFEFF.
        let mut iv = iv;
        iv[14..].copy_from_slice(&[0xfe, 0xff]);
        let mut ks = [0u8; 48];
        cipher.apply(&iv, &mut ks);
        assert_eq!(
            ks.to_vec(),
            hex("EC8CDF7398607CB0F2D21675EA9EA1E4
                 362B7C3C6773516318A077D7FC5073AE
                 6A2CC3787889374FBEB4C81B17BA6C44"),
            "{backend:?}"
        );
    }
}

#[test]
fn cm_iv_places_ssrc_and_index() {
    let iv = cm_iv(&[0; 14], 0x1122_3344, 0xaabb_ccdd_eeff);
    assert_eq!(iv.to_vec(), hex("0000000011223344aabbccddeeff0000"));
    let salt: [u8; 14] = hex("0102030405060708090a0b0c0d0e").try_into().unwrap();
    let iv = cm_iv(&salt, 0xffff_ffff, 0xffff_ffff_ffff);
    assert_eq!(iv.to_vec(), hex("01020304faf9f8f7f6f5f4f3f2f10000"));
}

// ---------------------------------------------------------------------------
// RFC 3711 Appendix B.3 and RFC 6188 §7.2: key derivation.

#[test]
fn rfc3711_b3_key_derivation() {
    let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");

    let mut enc = [0u8; 16];
    derive(&key, &salt, LABEL_RTP_ENCRYPTION, &mut enc);
    assert_eq!(enc.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));

    let mut salt_out = [0u8; 14];
    derive(&key, &salt, LABEL_RTP_SALT, &mut salt_out);
    assert_eq!(salt_out.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));

    // The RFC lists 94 octets of auth key material; SHA1 uses the first 20.
    let mut auth = [0u8; 94];
    derive(&key, &salt, LABEL_RTP_AUTH, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex(
            "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
             E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
             6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
        )
    );
}

#[test]
fn rfc6188_aes256_key_derivation() {
    let key = hex("F0F04914B513F2763A1B1FA130F10E2998F6F6E43E4309D1E622A0E332B9F1B6");
    let salt = hex("3B04803DE51EE7C96423AB5B78D2");

    let mut enc = [0u8; 32];
    derive(&key, &salt, LABEL_RTP_ENCRYPTION, &mut enc);
    assert_eq!(
        enc.to_vec(),
        hex("5BA1064E30EC51613CAD926C5A28EF731EC7FB397F70A960653CAF06554CD8C4")
    );
    let mut salt_out = [0u8; 14];
    derive(&key, &salt, LABEL_RTP_SALT, &mut salt_out);
    assert_eq!(salt_out.to_vec(), hex("FA31791685CA444A9E07C6C64E93"));
    let mut auth = [0u8; 20];
    derive(&key, &salt, LABEL_RTP_AUTH, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex("FD9C32D39ED5FBB5A9DC96B30818454D1313DC05")
    );
}

// ---------------------------------------------------------------------------
// RFC 7714 §16 (SRTP) and §17 (SRTCP): AEAD vectors with session keys.

const GCM_KEY_128: &str = "000102030405060708090a0b0c0d0e0f";
const GCM_KEY_256: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// "Quid pro quo".
const GCM_SALT: &str = "517569642070726f2071756f";

/// The RTP packet of RFC 7714 §16: SSRC 0x5501a0b2, SEQ 0xf17b, ROC 0.
const RFC7714_RTP: &str = "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973
                           20646976 69736120 696e2070 61727465 73207472 6573";

/// The RTCP packet of RFC 7714 §17: SSRC "Mars", SRTCP index 0x5d4.
const RFC7714_RTCP: &str = "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930
                            4c756e61 deadbeef deadbeef deadbeef deadbeef deadbeef";

fn gcm_ctx(suite: SrtpSuite, backend: CryptoBackend) -> SrtpContext {
    let key = match suite {
        SrtpSuite::AeadAes128Gcm => hex(GCM_KEY_128),
        _ => hex(GCM_KEY_256),
    };
    SrtpContext::from_session_keys(suite, backend, &key, &[], &hex(GCM_SALT))
}

#[test]
fn rfc7714_nonces() {
    let salt: [u8; 12] = hex(GCM_SALT).try_into().unwrap();
    // §16.1: ROC 0, SEQ 0xf17b.
    assert_eq!(
        gcm_nonce(&salt, 0x5501_a0b2, 0xf17b).to_vec(),
        hex("51753c6580c2726f20718414")
    );
    // §17.1: SRTCP index 0x5d4.
    assert_eq!(
        gcm_nonce(&salt, 0x4d61_7273, 0x5d4).to_vec(),
        hex("517524055203726f207170bb")
    );
}

#[test]
fn rfc7714_16_srtp_vectors() {
    let cases = [
        (
            SrtpSuite::AeadAes128Gcm,
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439 0cce",
        ),
        (
            SrtpSuite::AeadAes256Gcm,
            "8040f17b 8041f8d3 5501a0b2 32b1de78 a822fe12 ef9f78fa 332e33aa b1801238
             9a58e2f3 b50b2a02 76ffae0f 1ba63799 b87b7aa3 db36dfff d6b0f9bb 7878d7a7 6c13",
        ),
    ];
    for &backend in CryptoBackend::AVAILABLE {
        for (suite, want) in cases {
            let plain = hex(RFC7714_RTP);
            let want = hex(want);
            let mut buf = [0u8; 256];
            buf[..plain.len()].copy_from_slice(&plain);
            let n = gcm_ctx(suite, backend)
                .protect_rtp(&mut buf, plain.len())
                .unwrap();
            assert_eq!(buf[..n], want[..], "{suite} {backend:?} protect");

            let mut rx = gcm_ctx(suite, backend);
            let n = rx.unprotect_rtp(&mut buf, want.len()).unwrap();
            assert_eq!(buf[..n], plain[..], "{suite} {backend:?} unprotect");

            let mut again = [0u8; 256];
            again[..want.len()].copy_from_slice(&want);
            assert_eq!(
                rx.unprotect_rtp(&mut again, want.len()),
                Err(SrtpError::Replayed)
            );
        }
    }
}

#[test]
fn rfc7714_17_srtcp_vectors() {
    let ssrc = 0x4d61_7273;
    // §17.1 (AES-128, encrypted) and §17.2 (AES-256, encrypted).
    let encrypted = [
        (
            SrtpSuite::AeadAes128Gcm,
            "81c8000d 4d617273 63e94885 dcdab67c a727d766 2f6b7e99 7ff5c0f7 6c06f32d
             c676a5f1 730d6fda 4ce09b46 86303ded 0bb9275b c84aa458 96cf4d2f c5abf872
             45d9eade 800005d4",
        ),
        (
            SrtpSuite::AeadAes256Gcm,
            "81c8000d 4d617273 d50ae4d1 f5ce5d30 4ba297e4 7d470c28 2c3ece5d bffe0a50
             a2eaa5c1 110555be 8415f658 c61de047 6f1b6fad 1d1eb30c 4446839f 57ff6f6c
             b26ac3be 800005d4",
        ),
    ];
    // §17.3 and §17.4: the same packet authenticated but not encrypted.
    let tag_only = [
        (
            SrtpSuite::AeadAes128Gcm,
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
             deadbeef deadbeef deadbeef deadbeef deadbeef 841dd968 3dd78ec9 2ae58790
             125f62b3 000005d4",
        ),
        (
            SrtpSuite::AeadAes256Gcm,
            "81c8000d 4d617273 4e545031 4e545032 52545020 0000042a 0000e930 4c756e61
             deadbeef deadbeef deadbeef deadbeef deadbeef 91db4afb feee5a97 8fab4393
             ed2615fe 000005d4",
        ),
    ];
    let plain = hex(RFC7714_RTCP);
    for &backend in CryptoBackend::AVAILABLE {
        for (suite, want) in encrypted {
            let want = hex(want);
            let mut tx = gcm_ctx(suite, backend);
            tx.streams.get_or_insert(ssrc).rtcp_tx_index = 0x5d3;
            let mut buf = [0u8; 256];
            buf[..plain.len()].copy_from_slice(&plain);
            let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            assert_eq!(buf[..n], want[..], "{suite} {backend:?} protect");

            let mut rx = gcm_ctx(suite, backend);
            let n = rx.unprotect_rtcp(&mut buf, want.len()).unwrap();
            assert_eq!(buf[..n], plain[..], "{suite} {backend:?} unprotect");
        }
        for (suite, wire) in tag_only {
            let wire = hex(wire);
            let mut buf = [0u8; 256];
            buf[..wire.len()].copy_from_slice(&wire);
            let mut rx = gcm_ctx(suite, backend);
            let n = rx.unprotect_rtcp(&mut buf, wire.len()).unwrap();
            assert_eq!(buf[..n], plain[..], "{suite} {backend:?} tag-only");

            // One flipped bit in the authenticated-only payload fails.
            buf[..wire.len()].copy_from_slice(&wire);
            buf[20] ^= 1;
            let mut rx = gcm_ctx(suite, backend);
            assert_eq!(
                rx.unprotect_rtcp(&mut buf, wire.len()),
                Err(SrtpError::AuthenticationFailed)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Suites and contexts.

#[test]
fn sdes_names_round_trip() {
    for suite in SrtpSuite::ALL {
        assert_eq!(SrtpSuite::from_sdes_name(suite.sdes_name()), Some(suite));
    }
    assert_eq!(SrtpSuite::from_sdes_name("aes_cm_128_hmac_sha1_80"), None);
    assert_eq!(SrtpSuite::from_sdes_name("F8_128_HMAC_SHA1_80"), None);
    assert_eq!(SrtpSuite::AesCm128HmacSha1_32.rtp_auth_tag_len(), 4);
    assert_eq!(SrtpSuite::AesCm128HmacSha1_32.rtcp_auth_tag_len(), 10);
    assert_eq!(SrtpSuite::AeadAes256Gcm.master_salt_len(), 12);
    assert_eq!(SrtpSuite::Aes256CmHmacSha1_80.master_key_len(), 32);
}

#[test]
fn bad_master_lengths_are_errors() {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    assert_eq!(
        SrtpContext::new(suite, &[0; 15], &[0; 14]).unwrap_err(),
        SrtpError::MasterKeyLength {
            expected: 16,
            actual: 15
        }
    );
    assert_eq!(
        SrtpContext::new(suite, &[0; 16], &[0; 12]).unwrap_err(),
        SrtpError::MasterSaltLength {
            expected: 14,
            actual: 12
        }
    );
}

#[test]
fn round_trip_every_suite_and_backend() {
    for &backend in CryptoBackend::AVAILABLE {
        for suite in SrtpSuite::ALL {
            let (mut tx, mut rx) = pair(suite, backend);
            for seq in [1000u16, 1001, 1003, 1002] {
                let (mut buf, len) = rtp(seq, 0xdead_beef, 160);
                let plain = buf;
                let n = tx.protect_rtp(&mut buf, len).unwrap();
                assert_eq!(n, len + suite.rtp_auth_tag_len());
                assert_eq!(buf[..12], plain[..12], "header stays clear");
                assert_ne!(buf[12..len], plain[12..len], "payload encrypted");
                let m = rx.unprotect_rtp(&mut buf, n).unwrap();
                assert_eq!(buf[..m], plain[..len], "{suite} {backend:?}");
            }
            for _ in 0..3 {
                let (mut buf, len) = rtcp(0xdead_beef);
                let plain = buf;
                let n = tx.protect_rtcp(&mut buf, len).unwrap();
                assert_eq!(n, len + suite.rtcp_overhead());
                assert_eq!(buf[..8], plain[..8]);
                assert_ne!(buf[8..len], plain[8..len]);
                let m = rx.unprotect_rtcp(&mut buf, n).unwrap();
                assert_eq!(buf[..m], plain[..len], "{suite} {backend:?} rtcp");
            }
        }
    }
}

#[test]
fn rtcp_index_starts_at_one_with_e_flag() {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let (mut tx, _) = pair(suite, CryptoBackend::RustCrypto);
    for want in 1u32..=3 {
        let (mut buf, len) = rtcp(7);
        let n = tx.protect_rtcp(&mut buf, len).unwrap();
        assert_eq!(be_u32(&buf[len..len + 4]), SRTCP_E_FLAG | want);
        assert_eq!(n, len + 14);
    }
}

#[test]
fn header_extension_and_csrcs_are_authenticated_not_encrypted() {
    for suite in SrtpSuite::ALL {
        let (mut tx, mut rx) = pair(suite, CryptoBackend::RustCrypto);
        let mut buf = [0u8; 256];
        // V=2, X=1, CC=2; two CSRCs; one-byte-header extension of 2 words.
        let header = hex("92 00 00 07 00 00 04 60 11 22 33 44 00 00 00 01 00 00 00 02
                          be de 00 02 10 aa 21 01 02 00 00 00");
        buf[..header.len()].copy_from_slice(&header);
        buf[header.len()..header.len() + 40].fill(0x55);
        let len = header.len() + 40;
        let plain = buf;
        let n = tx.protect_rtp(&mut buf, len).unwrap();
        assert_eq!(buf[..header.len()], header[..], "{suite}");
        assert!(buf[header.len()..len].iter().any(|&b| b != 0x55));

        // Flipping an extension byte breaks authentication.
        let mut forged = buf;
        forged[26] ^= 0x80;
        assert_eq!(
            rx.unprotect_rtp(&mut forged, n),
            Err(SrtpError::AuthenticationFailed)
        );
        let m = rx.unprotect_rtp(&mut buf, n).unwrap();
        assert_eq!(buf[..m], plain[..len]);
    }
}

#[test]
fn roc_increments_across_sequence_wrap() {
    for suite in SrtpSuite::ALL {
        let (mut tx, mut rx) = pair(suite, CryptoBackend::RustCrypto);
        let ssrc = 0x0102_0304;
        let mut wire = Vec::new();
        for k in 0..12u16 {
            let seq = 65530u16.wrapping_add(k);
            let (mut buf, len) = rtp(seq, ssrc, 160);
            let n = tx.protect_rtp(&mut buf, len).unwrap();
            wire.push((buf, n, seq));
        }
        assert_eq!(tx.tx_roc(ssrc), Some(1));
        // Deliver with some reordering around the wrap.
        wire.swap(5, 6);
        wire.swap(3, 7);
        for (mut buf, n, seq) in wire.iter().copied() {
            let m = rx.unprotect_rtp(&mut buf, n).unwrap();
            let (plain, len) = rtp(seq, ssrc, 160);
            assert_eq!(m, len);
            assert_eq!(buf[..m], plain[..len], "{suite} seq {seq}");
        }
        assert_eq!(rx.rx_roc(ssrc), Some(1));

        // A receiver that never saw the pre-wrap packets assumes ROC 0 for
        // seq 0 and cannot authenticate it: the ROC is in the tag or nonce.
        let (mut fresh, _) = pair(suite, CryptoBackend::RustCrypto);
        let (mut buf, n, _) = *wire.iter().find(|w| w.2 == 0).unwrap();
        assert_eq!(
            fresh.unprotect_rtp(&mut buf, n),
            Err(SrtpError::AuthenticationFailed)
        );
    }
}

#[test]
fn replay_rejected_and_late_packet_accepted_once() {
    for suite in SrtpSuite::ALL {
        let (mut tx, mut rx) = pair(suite, CryptoBackend::RustCrypto);
        let ssrc = 42;
        let mut wire = Vec::new();
        for seq in 100u16..200 {
            let (mut buf, len) = rtp(seq, ssrc, 20);
            let n = tx.protect_rtp(&mut buf, len).unwrap();
            wire.push((buf, n));
        }
        // Deliver 130..=170 except 150.
        for (i, &(mut buf, n)) in wire.iter().enumerate().take(71).skip(30) {
            if i != 50 {
                rx.unprotect_rtp(&mut buf, n).unwrap();
            }
        }
        // Replay of an accepted one.
        let (mut buf, n) = wire[60];
        assert_eq!(rx.unprotect_rtp(&mut buf, n), Err(SrtpError::Replayed));
        // Late but inside the window: accepted once, then a replay.
        let (mut buf, n) = wire[50];
        assert!(rx.unprotect_rtp(&mut buf, n).is_ok(), "{suite}");
        let (mut buf, n) = wire[50];
        assert_eq!(rx.unprotect_rtp(&mut buf, n), Err(SrtpError::Replayed));
        // Never seen, but 64 or more behind the highest (170): too old.
        let (mut buf, n) = wire[6];
        assert_eq!(rx.unprotect_rtp(&mut buf, n), Err(SrtpError::TooOld));
        let (mut buf, n) = wire[7];
        assert!(rx.unprotect_rtp(&mut buf, n).is_ok(), "107 is 63 behind");

        // SRTCP has its own window on the SRTCP index.
        let (mut buf, len) = rtcp(ssrc);
        let n = tx.protect_rtcp(&mut buf, len).unwrap();
        let copy = buf;
        rx.unprotect_rtcp(&mut buf, n).unwrap();
        let mut buf = copy;
        assert_eq!(rx.unprotect_rtcp(&mut buf, n), Err(SrtpError::Replayed));
    }
}

#[test]
fn protect_refuses_to_reuse_an_index() {
    let (mut tx, _) = pair(SrtpSuite::AesCm128HmacSha1_80, CryptoBackend::RustCrypto);
    let (mut buf, len) = rtp(5, 1, 20);
    tx.protect_rtp(&mut buf, len).unwrap();
    let (mut buf, len) = rtp(5, 1, 20);
    assert_eq!(tx.protect_rtp(&mut buf, len), Err(SrtpError::Replayed));
}

#[test]
fn tampering_is_rejected_and_leaves_state_alone() {
    for suite in SrtpSuite::ALL {
        let (mut tx, mut rx) = pair(suite, CryptoBackend::RustCrypto);
        let (mut buf, len) = rtp(7, 9, 160);
        let n = tx.protect_rtp(&mut buf, len).unwrap();
        let good = buf;
        for at in [1, 3, 11, 12, 100, n - 1] {
            let mut bad = good;
            bad[at] ^= 0x01;
            assert_eq!(
                rx.unprotect_rtp(&mut bad, n),
                Err(SrtpError::AuthenticationFailed),
                "{suite} byte {at}"
            );
        }
        // Forgeries created no stream state; the genuine packet still passes.
        assert!(rx.streams.peek(9).is_none());
        let mut buf = good;
        rx.unprotect_rtp(&mut buf, n).unwrap();

        let (mut buf, len) = rtcp(9);
        let n = tx.protect_rtcp(&mut buf, len).unwrap();
        let good = buf;
        for at in [1, 7, 8, len, n - 1] {
            let mut bad = good;
            bad[at] ^= 0x01;
            assert_eq!(
                rx.unprotect_rtcp(&mut bad, n),
                Err(SrtpError::AuthenticationFailed),
                "{suite} rtcp byte {at}"
            );
        }
        let mut buf = good;
        rx.unprotect_rtcp(&mut buf, n).unwrap();
    }
}

#[test]
fn wrong_key_fails_authentication() {
    for suite in SrtpSuite::ALL {
        let (key, salt) = master(suite, 1);
        let (key2, _) = master(suite, 2);
        let mut tx = SrtpContext::new(suite, &key, &salt).unwrap();
        let mut rx = SrtpContext::new(suite, &key2, &salt).unwrap();
        let (mut buf, len) = rtp(1, 1, 50);
        let n = tx.protect_rtp(&mut buf, len).unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut buf, n),
            Err(SrtpError::AuthenticationFailed)
        );
    }
}

#[test]
fn separate_rtp_and_rtcp_session_keys() {
    // An SRTP packet dressed as SRTCP must not authenticate: the session
    // keys differ (labels 0-2 vs 3-5).
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let (mut tx, mut rx) = pair(suite, CryptoBackend::RustCrypto);
    let (mut buf, len) = rtcp(3);
    let n = tx.protect_rtcp(&mut buf, len).unwrap();
    let mut other = SrtpContext::new(suite, &master(suite, 1).0, &master(suite, 1).1).unwrap();
    *other.rtcp = SessionCrypto::derive(
        CryptoBackend::RustCrypto,
        suite,
        &master(suite, 1).0,
        &master(suite, 1).1,
        [LABEL_RTP_ENCRYPTION, LABEL_RTP_AUTH, LABEL_RTP_SALT],
    );
    let copy = buf;
    assert_eq!(
        other.unprotect_rtcp(&mut buf, n),
        Err(SrtpError::AuthenticationFailed)
    );
    let mut buf = copy;
    rx.unprotect_rtcp(&mut buf, n).unwrap();
}

#[test]
fn streams_are_bounded_and_lru() {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let (mut tx, mut rx) = pair(suite, CryptoBackend::RustCrypto);
    for ssrc in 0..(STREAMS_MAX as u32 + 4) {
        let (mut buf, len) = rtp(10, ssrc, 10);
        let n = tx.protect_rtp(&mut buf, len).unwrap();
        rx.unprotect_rtp(&mut buf, n).unwrap();
    }
    assert_eq!(rx.streams.len(), STREAMS_MAX);
    assert!(rx.streams.peek(0).is_none());
    assert!(rx.streams.peek(STREAMS_MAX as u32 + 3).is_some());
}

#[test]
fn bad_lengths_are_errors() {
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let (mut tx, mut rx) = pair(suite, CryptoBackend::RustCrypto);
    let (mut buf, len) = rtp(1, 1, 160);
    assert!(matches!(
        tx.protect_rtp(&mut buf, 2000),
        Err(SrtpError::LengthOutOfRange { .. })
    ));
    assert!(matches!(
        tx.protect_rtp(&mut buf[..len + 9], len),
        Err(SrtpError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        tx.protect_rtcp(&mut buf[..40], 32),
        Err(SrtpError::BufferTooSmall { .. })
    ));
    assert_eq!(tx.protect_rtp(&mut buf, 11), Err(SrtpError::Truncated));
    assert_eq!(rx.unprotect_rtp(&mut buf, 21), Err(SrtpError::Truncated));
    assert_eq!(rx.unprotect_rtcp(&mut buf, 21), Err(SrtpError::Truncated));
    // CSRC count past the end.
    let (mut buf, _) = rtp(1, 1, 0);
    buf[0] = 0x8f;
    assert_eq!(tx.protect_rtp(&mut buf, 20), Err(SrtpError::Truncated));
    // Extension header and extension length past the end.
    buf[0] = 0x90;
    assert_eq!(tx.protect_rtp(&mut buf, 14), Err(SrtpError::Truncated));
    buf[14..16].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(tx.protect_rtp(&mut buf, 40), Err(SrtpError::Truncated));
    assert_eq!(rx.unprotect_rtp(&mut buf, 40), Err(SrtpError::Truncated));
    buf[0] = 0x40;
    assert_eq!(tx.protect_rtp(&mut buf, 40), Err(SrtpError::BadVersion));
    assert_eq!(tx.protect_rtcp(&mut buf, 40), Err(SrtpError::BadVersion));
    assert!(SrtpError::Truncated.is_peer_fault());
    assert!(!SrtpError::BufferTooSmall {
        needed: 1,
        capacity: 0
    }
    .is_peer_fault());
}

#[test]
fn arbitrary_input_never_panics() {
    // A small xorshift stream of packets: random bytes, random lengths,
    // with the version bits forced to 2 half of the time so parsing gets
    // past the first check.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for &backend in CryptoBackend::AVAILABLE {
        for suite in SrtpSuite::ALL {
            let (mut a, mut b) = pair(suite, backend);
            for _ in 0..2000 {
                let mut buf = [0u8; 96];
                for chunk in buf.chunks_mut(8) {
                    let r = next().to_le_bytes();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                if next() & 1 == 0 {
                    buf[0] = (buf[0] & 0x3f) | 0x80;
                }
                let len = (next() % 100) as usize;
                let _ = a.protect_rtp(&mut buf.clone(), len);
                let _ = a.protect_rtcp(&mut buf.clone(), len);
                let _ = b.unprotect_rtp(&mut buf.clone(), len);
                let _ = b.unprotect_rtcp(&mut buf.clone(), len);
                let _ = b.unprotect_rtp(&mut buf[..len.min(96)], len.min(96));
            }
        }
    }
}

#[test]
fn rtcp_index_exhaustion() {
    let (mut tx, _) = pair(SrtpSuite::AeadAes128Gcm, CryptoBackend::RustCrypto);
    tx.streams.get_or_insert(5).rtcp_tx_index = SRTCP_INDEX_MAX - 1;
    let (mut buf, len) = rtcp(5);
    let n = tx.protect_rtcp(&mut buf, len).unwrap();
    assert_eq!(be_u32(&buf[n - 4..n]), SRTCP_E_FLAG | SRTCP_INDEX_MAX);
    let (mut buf, len) = rtcp(5);
    assert_eq!(
        tx.protect_rtcp(&mut buf, len),
        Err(SrtpError::IndexExhausted)
    );
}

#[test]
fn unencrypted_srtcp_is_accepted_for_aes_cm() {
    // RFC 3711 §3.4: E = 0 means the payload is in the clear but still
    // authenticated (tag over packet || E+index).
    let suite = SrtpSuite::AesCm128HmacSha1_80;
    let (_, mut rx) = pair(suite, CryptoBackend::RustCrypto);
    let (mut buf, len) = rtcp(77);
    let plain = buf;
    buf[len..len + 4].copy_from_slice(&9u32.to_be_bytes());
    let SessionCrypto::Cm { mac, .. } = &*rx.rtcp else {
        unreachable!("AES-CM suite")
    };
    let tag = mac.compute(&buf[..len + 4], &[]);
    buf[len + 4..len + 14].copy_from_slice(&tag[..10]);
    let wire = buf;
    let n = rx.unprotect_rtcp(&mut buf, len + 14).unwrap();
    assert_eq!(buf[..n], plain[..len]);
    // Setting the E-flag without re-tagging breaks authentication (on a
    // fresh receiver: the first one would call index 9 a replay).
    let (_, mut fresh) = pair(suite, CryptoBackend::RustCrypto);
    let mut buf = wire;
    buf[len] |= 0x80;
    assert_eq!(
        fresh.unprotect_rtcp(&mut buf, len + 14),
        Err(SrtpError::AuthenticationFailed)
    );
}
