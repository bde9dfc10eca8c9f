//! `a=crypto` parsing (RFC 4568): arbitrary UTF-8 into `CryptoAttr::parse`
//! must not panic; what parses serializes with `to_line` to a line that
//! parses back to the same value.
#![no_main]

use kolokol::sdp::crypto::{base64_decode, base64_encode, CryptoAttr};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The attribute value, as `Media::crypto` hands it over.
    let value = s.strip_prefix("a=crypto:").unwrap_or(s);
    if let Ok(attr) = CryptoAttr::parse(value) {
        let line = attr.to_line();
        let again = line
            .strip_prefix("a=crypto:")
            .expect("to_line starts with a=crypto:");
        assert_eq!(
            CryptoAttr::parse(again).as_ref(),
            Ok(&attr),
            "re-parse of {line:?}"
        );
    }
    // The base64 helpers on their own: decode(encode(x)) == x.
    if let Ok(bytes) = base64_decode(s) {
        assert_eq!(base64_decode(&base64_encode(&bytes)).as_ref(), Ok(&bytes));
    }
});
