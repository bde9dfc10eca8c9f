//! Stream framing for SIP over TCP/TLS (RFC 3261 §18.3), sans-IO.
//!
//! [`StreamFramer`] turns the bytes read from one connection into complete
//! SIP messages and RFC 5626 §3.5.1 keep-alives. The transport shell
//! pushes what it read ([`StreamFramer::push`]) and then calls
//! [`StreamFramer::next`] until it returns `None`:
//!
//! - [`Frame::Message`]: start line, headers, the empty line and exactly
//!   Content-Length body bytes, ready for [`super::SipMessage::parse`].
//! - [`Frame::KeepAlive`]: a double CRLF "ping" between messages; answer it
//!   by writing [`PONG`].
//! - [`Frame::Pong`]: a single CRLF "pong" between messages; nothing to
//!   answer, but it proves the peer alive (reset the keep-alive timer).
//!
//! CRLFs before a start line are keep-alives, never part of the message.
//! A CRLF that is all the framer holds is reported as a pong at once (a
//! peer waiting for its pong must not wait for the next message); so a
//! ping that arrives split after its first CRLF is seen as two pongs. Pings
//! are four bytes written at once, so this does not happen in practice.
//!
//! Content-Length is mandatory on streams: a header section without one
//! (`Content-Length` or compact `l`, any case, whitespace before the colon
//! and around the value, value possibly folded onto continuation lines) is
//! [`FrameError::MissingContentLength`]; a value that is not a decimal
//! number, or several that disagree, is [`FrameError::BadContentLength`].
//! A message larger than `max_message` (header section plus body; so a
//! header section or a Content-Length that alone exceeds it too) is
//! [`FrameError::TooLarge`]. Every error is final: the stream has lost its
//! framing, the shell closes the connection, and `next` (and `push`) keep
//! returning the same error.
//!
//! The header section ends at the first empty line: CRLFCRLF, or with RFC
//! 4475 tolerance a bare LF where a CRLF is expected (`LF LF`, `LF CRLF`,
//! `CRLF LF`).
//!
//! Cost: the boundary search resumes where it stopped, the header section
//! is scanned once when complete, and consumed bytes are moved out once
//! per push; one allocation per message (the returned `Vec`). The buffer
//! holds at most `max_message` plus one read, provided the shell drains
//! `next` before pushing again.

/// The answer to a [`Frame::KeepAlive`] ping (RFC 5626 §3.5.1).
pub const PONG: &[u8] = b"\r\n";

/// One complete item from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete SIP message: start line, headers, empty line, body.
    Message(Vec<u8>),
    /// A CRLFCRLF ping: write [`PONG`] back.
    KeepAlive,
    /// A single CRLF pong: nothing to answer.
    Pong,
}

/// Why the stream cannot be framed any further (close the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Header section, Content-Length, or the two together exceed the
    /// limit, or the shell pushed again without draining `next`.
    #[error("SIP message on stream exceeds the size limit")]
    TooLarge,
    /// The header section has no Content-Length (mandatory on streams).
    #[error("SIP message on stream without Content-Length")]
    MissingContentLength,
    /// Content-Length is not a decimal number, or duplicates disagree.
    #[error("SIP message on stream with a malformed or conflicting Content-Length")]
    BadContentLength,
}

/// Sans-IO framer for one SIP stream connection. See the module docs.
#[derive(Debug)]
pub struct StreamFramer {
    max_message: usize,
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// Offset (from `pos`) where the boundary search resumes: the next
    /// byte not yet known to be outside an end-of-headers sequence.
    scanned: usize,
    /// Once the header section is complete: the whole message length.
    message_len: Option<usize>,
    failed: Option<FrameError>,
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            message_len: None,
            failed: None,
        }
    }

    /// Appends bytes read from the connection. Drain [`Self::next`] before
    /// pushing again; more than `max_message` bytes left undrained is
    /// [`FrameError::TooLarge`]. After an error nothing is appended.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() > self.max_message {
            return Err(self.fail(FrameError::TooLarge));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Bytes received but not yet returned as a frame.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The error the stream failed with, if any.
    pub fn error(&self) -> Option<FrameError> {
        self.failed
    }

    /// The next complete frame, `None` until more bytes are needed, or the
    /// (final, repeated) error.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Frame, FrameError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let data = &self.buf[self.pos..];
        if data.is_empty() {
            return None;
        }
        // Between messages: CRLFs are keep-alives.
        if self.scanned == 0 && self.message_len.is_none() && data[0] == b'\r' {
            match data {
                [b'\r', b'\n', b'\r', b'\n', ..] => {
                    self.pos += 4;
                    return Some(Ok(Frame::KeepAlive));
                }
                [b'\r'] | [b'\r', b'\n', b'\r'] => return None,
                [b'\r', b'\n'] | [b'\r', b'\n', _, ..] => {
                    self.pos += 2;
                    return Some(Ok(Frame::Pong));
                }
                // CR not followed by LF: not a keep-alive; let it frame
                // as the start of a (malformed) message.
                _ => {}
            }
        }
        let total = match self.message_len {
            Some(total) => total,
            None => match self.find_header_end() {
                None => {
                    if self.pending() > self.max_message {
                        return Some(Err(self.fail(FrameError::TooLarge)));
                    }
                    return None;
                }
                Some(hend) => {
                    let head = &self.buf[self.pos..self.pos + hend];
                    let total = match content_length(head) {
                        Ok(cl) => hend.checked_add(cl),
                        Err(e) => return Some(Err(self.fail(e))),
                    };
                    match total {
                        Some(t) if t <= self.max_message => {
                            self.message_len = Some(t);
                            t
                        }
                        _ => return Some(Err(self.fail(FrameError::TooLarge))),
                    }
                }
            },
        };
        if self.pending() < total {
            return None;
        }
        let msg = self.buf[self.pos..self.pos + total].to_vec();
        self.pos += total;
        self.scanned = 0;
        self.message_len = None;
        Some(Ok(Frame::Message(msg)))
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.failed = Some(e);
        self.buf = Vec::new();
        self.pos = 0;
        e
    }

    /// Length of the header section including the empty line, resuming
    /// the search at `scanned`. The empty line ends at the first LF that
    /// is followed by LF or CRLF.
    fn find_header_end(&mut self) -> Option<usize> {
        let data = &self.buf[self.pos..];
        let mut i = self.scanned;
        while i < data.len() {
            if data[i] != b'\n' {
                i += 1;
                continue;
            }
            match data.get(i + 1) {
                None => break,
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') => match data.get(i + 2) {
                    None => break,
                    Some(b'\n') => return Some(i + 3),
                    Some(_) => i += 1,
                },
                Some(_) => i += 1,
            }
        }
        self.scanned = i;
        None
    }
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The Content-Length of a complete header section (start line included).
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let mut found: Option<usize> = None;
    // Each header: its line plus continuation lines (starting with SP or
    // HTAB). The start line is the first "header" and is skipped.
    let mut lines = head.split(|&b| b == b'\n').peekable();
    lines.next();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if matches!(line.first(), Some(b' ' | b'\t') | None) {
            continue; // continuation of a header that is not Content-Length
        }
        let name = trim_end(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let mut parser = NumberParser::default();
        parser.feed(&line[colon + 1..])?;
        while let Some(next) = lines.peek() {
            if !matches!(next.first(), Some(b' ' | b'\t')) {
                break;
            }
            parser.feed(next)?;
            lines.next();
        }
        let value = parser.finish()?;
        match found {
            Some(v) if v != value => return Err(FrameError::BadContentLength),
            _ => found = Some(value),
        }
    }
    found.ok_or(FrameError::MissingContentLength)
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A decimal number surrounded by linear white space, fed in pieces.
/// Saturates at `usize::MAX` (too large anyway).
#[derive(Default)]
struct NumberParser {
    value: Option<usize>,
    done: bool,
}

impl NumberParser {
    fn feed(&mut self, s: &[u8]) -> Result<(), FrameError> {
        for &b in s {
            if b.is_ascii_digit() {
                if self.done {
                    return Err(FrameError::BadContentLength);
                }
                let d = usize::from(b - b'0');
                let v = self.value.unwrap_or(0);
                self.value = Some(v.saturating_mul(10).saturating_add(d));
            } else if is_lws(b) {
                self.done |= self.value.is_some();
            } else {
                return Err(FrameError::BadContentLength);
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<usize, FrameError> {
        self.value.ok_or(FrameError::BadContentLength)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/TCP a.example.com;branch=z9hG4bK1\r\n\
Call-ID: abc\r\n\
Content-Length: 5\r\n\
\r\n\
hello";

    fn drain(f: &mut StreamFramer) -> Vec<Result<Frame, FrameError>> {
        let mut out = Vec::new();
        while let Some(r) = f.next() {
            let err = r.is_err();
            out.push(r);
            if err {
                break;
            }
        }
        out
    }

    fn frame_all(input: &[u8], max: usize) -> Vec<Result<Frame, FrameError>> {
        let mut f = StreamFramer::new(max);
        f.push(input).unwrap();
        drain(&mut f)
    }

    fn msg(b: &[u8]) -> Result<Frame, FrameError> {
        Ok(Frame::Message(b.to_vec()))
    }

    fn with_header(h: &str, body: &str) -> Vec<u8> {
        format!("MESSAGE sip:a@b SIP/2.0\r\nCall-ID: x\r\n{h}\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn one_message_one_push() {
        assert_eq!(frame_all(MSG, 4096), vec![msg(MSG)]);
    }

    #[test]
    fn one_message_split_at_every_boundary() {
        for cut in 0..=MSG.len() {
            let mut f = StreamFramer::new(4096);
            f.push(&MSG[..cut]).unwrap();
            let first = drain(&mut f);
            f.push(&MSG[cut..]).unwrap();
            let mut all = first;
            all.extend(drain(&mut f));
            assert_eq!(all, vec![msg(MSG)], "cut at {cut}");
            assert_eq!(f.pending(), 0);
        }
    }

    #[test]
    fn one_message_byte_by_byte() {
        let mut f = StreamFramer::new(4096);
        let mut all = Vec::new();
        for b in MSG {
            f.push(std::slice::from_ref(b)).unwrap();
            all.extend(drain(&mut f));
        }
        assert_eq!(all, vec![msg(MSG)]);
    }

    #[test]
    fn two_messages_and_keepalives_in_one_push() {
        let mut input = b"\r\n\r\n".to_vec();
        input.extend_from_slice(MSG);
        input.extend_from_slice(b"\r\n\r\n\r\n");
        input.extend_from_slice(MSG);
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            frame_all(&input, 4096),
            vec![
                Ok(Frame::KeepAlive),
                msg(MSG),
                Ok(Frame::KeepAlive),
                Ok(Frame::Pong),
                msg(MSG),
                Ok(Frame::Pong),
            ]
        );
    }

    #[test]
    fn body_containing_crlfcrlf() {
        let m = with_header("Content-Length: 10", "ab\r\n\r\ncd\r\n");
        let mut input = m.clone();
        input.extend_from_slice(MSG);
        assert_eq!(frame_all(&input, 4096), vec![msg(&m), msg(MSG)]);
    }

    #[test]
    fn compact_and_spelling_variants() {
        for h in [
            "l: 3",
            "L:3",
            "content-length   :   3  ",
            "CONTENT-LENGTH:\t3",
            "Content-Length:\r\n 3",
            "Content-Length: 3\r\nl: 3",
        ] {
            let m = with_header(h, "xyz");
            assert_eq!(frame_all(&m, 4096), vec![msg(&m)], "{h:?}");
        }
    }

    #[test]
    fn zero_length_body() {
        let m = with_header("Content-Length: 0", "");
        let mut input = m.clone();
        input.extend_from_slice(&m);
        assert_eq!(frame_all(&input, 4096), vec![msg(&m), msg(&m)]);
    }

    #[test]
    fn bare_lf_boundary() {
        let m = b"OPTIONS sip:a@b SIP/2.0\nl: 2\n\nhi".to_vec();
        assert_eq!(frame_all(&m, 4096), vec![msg(&m)]);
    }

    #[test]
    fn missing_content_length() {
        for h in [
            "Subject: hi",
            // A folded continuation line is not a header.
            "Subject: hi\r\n l: 3",
            "Subject: hi\r\n\tContent-Length: 3",
            "X-Content-Length: 3",
            "Content-Lengthy: 3",
        ] {
            let m = with_header(h, "xyz");
            assert_eq!(
                frame_all(&m, 4096),
                vec![Err(FrameError::MissingContentLength)],
                "{h:?}"
            );
        }
    }

    #[test]
    fn bad_content_length() {
        for h in [
            "Content-Length: abc",
            "Content-Length: -1",
            "Content-Length: 3x",
            "Content-Length: 1 2",
            "Content-Length:",
            "Content-Length: +3",
            "Content-Length: 3\r\nl: 4",
            "l: 3\r\nContent-Length: 03\r\nContent-Length: 4",
        ] {
            let m = with_header(h, "xyz");
            assert_eq!(
                frame_all(&m, 4096),
                vec![Err(FrameError::BadContentLength)],
                "{h:?}"
            );
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut f = StreamFramer::new(4096);
        f.push(&with_header("Content-Length: x", "")).unwrap();
        assert_eq!(f.next(), Some(Err(FrameError::BadContentLength)));
        assert_eq!(f.next(), Some(Err(FrameError::BadContentLength)));
        assert_eq!(f.push(MSG), Err(FrameError::BadContentLength));
        assert_eq!(f.next(), Some(Err(FrameError::BadContentLength)));
        assert_eq!(f.error(), Some(FrameError::BadContentLength));
    }

    #[test]
    fn too_large_header_section() {
        let mut f = StreamFramer::new(64);
        let mut got = Vec::new();
        for _ in 0..20 {
            if f.push(b"X-Filler: aaaaaaaa\r\n").is_err() {
                break;
            }
            got.extend(drain(&mut f));
            assert!(f.pending() <= 64 + 20);
        }
        assert_eq!(got, vec![Err(FrameError::TooLarge)]);
        assert_eq!(f.next(), Some(Err(FrameError::TooLarge)));
    }

    #[test]
    fn too_large_content_length() {
        let m = with_header("Content-Length: 100000", "");
        assert_eq!(frame_all(&m, 4096), vec![Err(FrameError::TooLarge)]);
        let m = with_header("Content-Length: 99999999999999999999999999", "");
        assert_eq!(frame_all(&m, 4096), vec![Err(FrameError::TooLarge)]);
        // Exactly at the limit is fine.
        assert_eq!(frame_all(MSG, MSG.len()), vec![msg(MSG)]);
        assert_eq!(
            frame_all(MSG, MSG.len() - 1),
            vec![Err(FrameError::TooLarge)]
        );
    }

    #[test]
    fn push_without_draining_is_bounded() {
        let mut f = StreamFramer::new(MSG.len());
        f.push(MSG).unwrap();
        assert_eq!(f.push(MSG), Ok(()));
        assert_eq!(f.push(MSG), Err(FrameError::TooLarge));
    }

    #[test]
    fn ping_and_pong() {
        assert_eq!(frame_all(b"\r\n", 64), vec![Ok(Frame::Pong)]);
        assert_eq!(frame_all(b"\r\n\r\n", 64), vec![Ok(Frame::KeepAlive)]);
        assert_eq!(
            frame_all(b"\r\n\r\n\r\n\r\n", 64),
            vec![Ok(Frame::KeepAlive), Ok(Frame::KeepAlive)]
        );
        // A ping split after three bytes waits for its fourth.
        let mut f = StreamFramer::new(64);
        f.push(b"\r").unwrap();
        assert_eq!(f.next(), None);
        f.push(b"\n\r").unwrap();
        assert_eq!(f.next(), None);
        f.push(b"\n").unwrap();
        assert_eq!(f.next(), Some(Ok(Frame::KeepAlive)));
        assert_eq!(f.next(), None);
        // A pong before a message.
        let mut input = b"\r\n".to_vec();
        input.extend_from_slice(MSG);
        assert_eq!(frame_all(&input, 4096), vec![Ok(Frame::Pong), msg(MSG)]);
        assert_eq!(PONG, b"\r\n");
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&[u8]; 6] = [b"\r", b"\rX", b"\n\n", b"\r\n\n", b"x\r\n\r\n", b"::\n\n"];
        for i in inputs {
            let _ = frame_all(i, 16);
            let _ = frame_all(i, 0);
        }
    }
}
