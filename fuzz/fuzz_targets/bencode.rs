//! The ng protocol's bencode decoder: arbitrary bytes must not panic (or
//! recurse off the stack); what decodes encodes to bytes that decode to the
//! same value.
#![no_main]

use kolokol::control::bencode::{decode, decode_prefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((v, used)) = decode_prefix(data) {
        assert!(used <= data.len());
        assert_eq!(decode(&data[..used]).as_ref(), Ok(&v));
    }
    if let Ok(v) = decode(data) {
        let bytes = v.to_bytes();
        assert_eq!(decode(&bytes).as_ref(), Ok(&v), "re-decode");
        // The encoding is canonical: encoding again gives the same bytes.
        assert_eq!(decode(&bytes).unwrap().to_bytes(), bytes);
    }
});
