//! SDP parse and the offer/answer rewrite: arbitrary bytes into
//! `Sdp::parse` must not panic; what parses serializes back to itself, and
//! its rewrite toward a fixed relay endpoint (IPv4 with separate RTCP and
//! every ng flag; IPv6 rtcp-muxed with none) serializes to SDP that parses
//! back to the rewritten description.
#![no_main]

use kolokol::sdp::{MediaEndpoint, Rewrite, Sdp, LINES_MAX, SIZE_MAX};
use libfuzzer_sys::fuzz_target;

/// Whether `text` is within the parser's size limits. The rewrite adds
/// lines (c=, a=rtcp, a=rtcp-mux, a=crypto) and CRs, so an input right at
/// the limits can come out over them: that is a refusal, not a bug.
fn within_limits(text: &str) -> bool {
    text.len() <= SIZE_MAX && text.split('\n').count() <= LINES_MAX
}

/// Serializes `sdp` and parses it back; with `exact`, the result must
/// equal `sdp` field for field.
fn check(sdp: &Sdp, what: &str, exact: bool) {
    let text = sdp.to_string_crlf();
    if !within_limits(&text) {
        return;
    }
    match Sdp::parse(text.as_bytes()) {
        Ok(back) => {
            if exact {
                assert_eq!(&back, sdp, "{what}: re-parse differs:\n{text}");
            } else {
                assert_eq!(back.media.len(), sdp.media.len(), "{what}:\n{text}");
            }
        }
        Err(e) => panic!("{what}: output does not parse ({e}):\n{text}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = Sdp::parse(data) else {
        return;
    };
    check(&sdp, "serialize", true);
    let n = sdp.media.len();
    let v4 = Rewrite {
        media: vec![
            Some(MediaEndpoint {
                address: "203.0.113.7".parse().unwrap(),
                rtp_port: 30000,
                rtcp_port: Some(30001),
                offer_mux: false,
            });
            n
        ],
        replace_origin: true,
        ice_remove: true,
        transport_protocol: Some("RTP/SAVP".into()),
        media_proto: vec![None; n],
        media_crypto: vec![
            Some(vec![
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
                    .into()
            ]);
            n
        ],
    };
    check(&sdp.rewrite(&v4), "rewrite v4", true);
    let v6 = Rewrite {
        media: vec![
            Some(MediaEndpoint {
                address: "2001:db8::7".parse().unwrap(),
                rtp_port: 40000,
                rtcp_port: None,
                offer_mux: true,
            });
            n
        ],
        ..Rewrite::default()
    };
    check(&sdp.rewrite(&v6), "rewrite v6", true);
    // Endpoints for only some sections (the others pass through). Only
    // "parses again" here: a section left alone that inherited the session
    // c= inherits the rewritten one on re-parse.
    let some = Rewrite {
        media: (0..n)
            .map(|i| {
                (i % 2 == 0).then(|| MediaEndpoint {
                    address: "198.51.100.1".parse().unwrap(),
                    rtp_port: 50000 + i as u16,
                    rtcp_port: None,
                    offer_mux: false,
                })
            })
            .collect(),
        media_crypto: vec![Some(vec![]); n],
        ..Rewrite::default()
    };
    check(&sdp.rewrite(&some), "rewrite some", false);
});
