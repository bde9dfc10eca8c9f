//! SIP stream framing: arbitrary bytes, pushed into a `StreamFramer` in
//! chunks whose sizes come from the first input bytes, must not panic. The
//! frames returned (messages, 4-byte pings, 2-byte pongs) concatenate to a
//! prefix of the stream, so messages never add up to more than the input;
//! every message is within the size limit; the buffer stays within the
//! limit plus one read; and an error is final.
#![no_main]

use kolokol::sip::stream::{Frame, FrameError, StreamFramer};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 2048;

fuzz_target!(|data: &[u8]| {
    // data[0] % 8 chunk-size bytes follow (each a chunk of 1..=256 bytes,
    // used in turn); no size bytes means one push of everything.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    let mut f = StreamFramer::new(MAX);
    let mut framed: Vec<u8> = Vec::new();
    let mut failed: Option<FrameError> = None;
    let mut off = 0;
    let mut k = 0;
    while off < stream.len() && failed.is_none() {
        let len = match sizes.get(k % sizes.len().max(1)) {
            Some(&s) => usize::from(s) + 1,
            None => stream.len(),
        };
        k += 1;
        let chunk = &stream[off..(off + len).min(stream.len())];
        off += chunk.len();
        if let Err(e) = f.push(chunk) {
            failed = Some(e);
            break;
        }
        assert!(f.pending() <= MAX + chunk.len());
        while let Some(r) = f.next() {
            match r {
                Ok(Frame::Message(m)) => {
                    assert!(!m.is_empty() && m.len() <= MAX);
                    framed.extend_from_slice(&m);
                }
                Ok(Frame::KeepAlive) => framed.extend_from_slice(b"\r\n\r\n"),
                Ok(Frame::Pong) => framed.extend_from_slice(b"\r\n"),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            assert!(framed.len() <= off);
        }
    }
    assert!(framed.len() <= stream.len());
    assert_eq!(&stream[..framed.len()], &framed[..]);
    if let Some(e) = failed {
        assert_eq!(f.next(), Some(Err(e)));
        assert_eq!(f.push(b"x"), Err(e));
        assert_eq!(f.next(), Some(Err(e)));
    }
});
