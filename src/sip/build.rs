//! Writing SIP messages into a caller-supplied buffer.
//!
//! [`MessageWriter`] builds a request or response from parts and always
//! writes Content-Length itself, from the body it is given. [`response_to`]
//! answers a request the way RFC 3261 §8.2.6 says: Via (all, in order),
//! From, To (with a To-tag added when it has none), Call-ID and CSeq copied.
//! [`reemit`] writes a received message again with some headers replaced,
//! removed or added, every other header line passing through byte for byte
//! (the B2BUA and proxy paths).
//!
//! Names and values are checked so that nothing a peer sent can inject a
//! header line: a value may contain a fold (CRLF followed by SP/HT, as a
//! received raw value may) but no other CR or LF. On any error `out` is
//! left as it was before the call.

use std::io::Write as _;

use super::header::{is_token, HeaderName};
use super::msg::{Header, Method, SipMessage};

/// Why a message could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A header name that is not a token, or Content-Length (always
    /// written by the writer).
    #[error("bad header name")]
    HeaderName,
    /// A value or start-line element with CR/LF outside a fold, or other
    /// characters its grammar forbids.
    #[error("bad header value or start line")]
    Value,
    /// A status code outside 100..=699.
    #[error("status code out of range")]
    StatusCode,
    /// [`response_to`] was given a response.
    #[error("not a request")]
    NotARequest,
}

/// Whether `v` has no CR or LF except as part of a fold (CRLF, or the bare
/// LF the parser also accepts, followed by SP/HT).
fn is_safe_value(v: &str) -> bool {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\r' => {
                if b.get(i + 1) != Some(&b'\n') || !matches!(b.get(i + 2), Some(b' ' | b'\t')) {
                    return false;
                }
                i += 3;
            }
            b'\n' => {
                if !matches!(b.get(i + 1), Some(b' ' | b'\t')) {
                    return false;
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    true
}

fn check_name(name: &str) -> Result<(), BuildError> {
    if !is_token(name) || HeaderName::parse(name) == HeaderName::ContentLength {
        return Err(BuildError::HeaderName);
    }
    Ok(())
}

/// Writes one message: start line, headers, then Content-Length and body
/// from [`MessageWriter::finish`].
#[derive(Debug)]
pub struct MessageWriter<'o> {
    out: &'o mut Vec<u8>,
    start: usize,
}

impl<'o> MessageWriter<'o> {
    /// Starts a request `method uri SIP/2.0`.
    pub fn request(
        out: &'o mut Vec<u8>,
        method: Method<'_>,
        uri: &str,
    ) -> Result<MessageWriter<'o>, BuildError> {
        if uri.is_empty()
            || uri.bytes().any(|b| b <= b' ' || b == 0x7f)
            || !is_token(method.as_str())
        {
            return Err(BuildError::Value);
        }
        let start = out.len();
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(uri.as_bytes());
        out.extend_from_slice(b" SIP/2.0\r\n");
        Ok(MessageWriter { out, start })
    }

    /// Starts a response `SIP/2.0 code reason`.
    pub fn response(
        out: &'o mut Vec<u8>,
        code: u16,
        reason: &str,
    ) -> Result<MessageWriter<'o>, BuildError> {
        if !(100..=699).contains(&code) {
            return Err(BuildError::StatusCode);
        }
        if reason.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(BuildError::Value);
        }
        let start = out.len();
        // Writing into a Vec cannot fail.
        let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
        Ok(MessageWriter { out, start })
    }

    /// Starts a message with a start line given as text (no CRLF).
    pub fn raw_start(out: &'o mut Vec<u8>, line: &str) -> Result<MessageWriter<'o>, BuildError> {
        if line.is_empty() || line.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(BuildError::Value);
        }
        let start = out.len();
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        Ok(MessageWriter { out, start })
    }

    fn fail(self, e: BuildError) -> BuildError {
        self.out.truncate(self.start);
        e
    }

    /// Adds `name: value`. Content-Length is refused: [`finish`] writes it.
    ///
    /// [`finish`]: MessageWriter::finish
    pub fn header(self, name: &str, value: &str) -> Result<MessageWriter<'o>, BuildError> {
        if let Err(e) = check_name(name) {
            return Err(self.fail(e));
        }
        if !is_safe_value(value) {
            return Err(self.fail(BuildError::Value));
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        Ok(self)
    }

    /// Adds a received header line exactly as it was written.
    fn line(self, h: &Header<'_>) -> Result<MessageWriter<'o>, BuildError> {
        if !is_safe_value(h.line) {
            return Err(self.fail(BuildError::Value));
        }
        self.out.extend_from_slice(h.line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        Ok(self)
    }

    /// Writes Content-Length, the empty line and `body`; returns the length
    /// of the whole message.
    pub fn finish(self, body: &[u8]) -> usize {
        let _ = write!(self.out, "Content-Length: {}\r\n\r\n", body.len());
        self.out.extend_from_slice(body);
        self.out.len() - self.start
    }
}

/// Starts a response to `req` (RFC 3261 §8.2.6.2): Via values in order,
/// From, To (with `;tag=to_tag` appended when To has no tag), Call-ID and
/// CSeq copied. Add more headers, then [`MessageWriter::finish`].
pub fn start_response_to<'o>(
    req: &SipMessage<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    out: &'o mut Vec<u8>,
) -> Result<MessageWriter<'o>, BuildError> {
    if !req.is_request() {
        return Err(BuildError::NotARequest);
    }
    if let Some(t) = to_tag {
        if !is_token(t) {
            return Err(BuildError::Value);
        }
    }
    let mut w = MessageWriter::response(out, code, reason)?;
    for h in req.headers() {
        if h.name == HeaderName::Via {
            w = w.header("Via", h.value)?;
        }
    }
    w = w.header("From", req.from().raw)?;
    w = match (req.to().tag(), to_tag) {
        (None, Some(tag)) => {
            if !is_safe_value(req.to().raw) {
                return Err(w.fail(BuildError::Value));
            }
            let _ = write!(w.out, "To: {};tag={tag}\r\n", req.to().raw);
            w
        }
        _ => w.header("To", req.to().raw)?,
    };
    w = w.header("Call-ID", req.call_id())?;
    let (n, m) = req.cseq();
    let _ = write!(w.out, "CSeq: {n} {}\r\n", m.as_str());
    Ok(w)
}

/// Writes a complete response to `req` without a body (see
/// [`start_response_to`]); returns its length.
pub fn response_to(
    req: &SipMessage<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<usize, BuildError> {
    Ok(start_response_to(req, code, reason, to_tag, out)?.finish(&[]))
}

/// What [`reemit`] does with one received header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderAction<'x> {
    /// Copy the line byte for byte.
    Keep,
    /// Leave it out.
    Remove,
    /// Write it at the same place with this value (full header name).
    Replace(&'x str),
}

/// The parts of a re-emitted message that do not come from the original.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reemit<'x> {
    /// A new start line (no CRLF); `None` keeps the original.
    pub start_line: Option<&'x str>,
    /// Headers written before the received ones (a new Via, say).
    pub prepend: &'x [(&'x str, &'x str)],
    /// Headers written after the received ones.
    pub append: &'x [(&'x str, &'x str)],
    /// A new body; `None` keeps the original.
    pub body: Option<&'x [u8]>,
}

/// Writes `msg` again: `action` decides for each received header (in
/// order) whether it is kept byte for byte, removed or replaced;
/// Content-Length is always dropped and written anew for the body.
/// Returns the length written.
pub fn reemit<'a, 'x>(
    msg: &SipMessage<'a>,
    edit: &Reemit<'x>,
    mut action: impl FnMut(&Header<'a>) -> HeaderAction<'x>,
    out: &mut Vec<u8>,
) -> Result<usize, BuildError> {
    let mut w = MessageWriter::raw_start(out, edit.start_line.unwrap_or(msg.start_line_raw()))?;
    for (n, v) in edit.prepend {
        w = w.header(n, v)?;
    }
    for h in msg.headers() {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        w = match action(h) {
            HeaderAction::Keep => w.line(h)?,
            HeaderAction::Remove => w,
            HeaderAction::Replace(v) => w.header(h.name.as_str(), v)?,
        };
    }
    for (n, v) in edit.append {
        w = w.header(n, v)?;
    }
    Ok(w.finish(edit.body.unwrap_or(msg.body())))
}

#[cfg(test)]
mod test {
    use super::*;

    const REQ: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\r\n\
        v: SIP/2.0/UDP pc.example.com;branch=z9hG4bKpc;rport=5060\r\n\
        f: \"A\" <sip:alice@example.com>;tag=a1\r\n\
        To: <sip:bob@example.com>\r\n\
        Call-ID: c1@pc\r\n\
        CSeq: 7 INVITE\r\n\
        Max-Forwards: 69\r\n\
        X-Odd:  \tweird ,, value\r\n  continued\r\n\
        Content-Length: 3\r\n\
        \r\nabc";

    #[test]
    fn built_request_round_trips() {
        let mut out = Vec::new();
        let body = b"v=0\r\n";
        let n = MessageWriter::request(&mut out, Method::Invite, "sip:bob@example.com")
            .unwrap()
            .header("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx;rport")
            .unwrap()
            .header("From", "<sip:a@example.com>;tag=t1")
            .unwrap()
            .header("To", "<sip:bob@example.com>")
            .unwrap()
            .header("Call-ID", "id1")
            .unwrap()
            .header("CSeq", "1 INVITE")
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .header("Content-Type", "application/sdp")
            .unwrap()
            .finish(body);
        assert_eq!(n, out.len());
        let m = SipMessage::parse(&out).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.request_uri().unwrap().as_str(), "sip:bob@example.com");
        assert_eq!(m.top_via().branch, Some("z9hG4bKx"));
        assert_eq!(m.top_via().rport, Some(None));
        assert_eq!(m.from().tag(), Some("t1"));
        assert_eq!(m.call_id(), "id1");
        assert_eq!(m.cseq(), (1, Method::Invite));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.content_length(), Some(body.len()));
        assert_eq!(m.body(), body);
    }

    #[test]
    fn response_to_copies_rfc3261_8_2_6_headers() {
        let req = SipMessage::parse(REQ.as_bytes()).unwrap();
        let mut out = b"junk".to_vec();
        response_to(&req, 180, "Ringing", Some("b2"), &mut out).unwrap();
        let text = std::str::from_utf8(&out[4..]).unwrap();
        assert_eq!(
            text,
            "SIP/2.0 180 Ringing\r\n\
             Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\r\n\
             Via: SIP/2.0/UDP pc.example.com;branch=z9hG4bKpc;rport=5060\r\n\
             From: \"A\" <sip:alice@example.com>;tag=a1\r\n\
             To: <sip:bob@example.com>;tag=b2\r\n\
             Call-ID: c1@pc\r\n\
             CSeq: 7 INVITE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let r = SipMessage::parse(&out[4..]).unwrap();
        assert_eq!(r.status_code(), Some(180));
        assert_eq!(r.to().tag(), Some("b2"));
        assert_eq!(r.via().count(), 2);
        assert_eq!(r.cseq(), req.cseq());
        assert!(response_to(&r, 200, "OK", None, &mut Vec::new()).is_err());
    }

    #[test]
    fn reemit_keeps_unknown_lines_byte_exact() {
        let req = SipMessage::parse(REQ.as_bytes()).unwrap();
        let mut out = Vec::new();
        reemit(&req, &Reemit::default(), |_| HeaderAction::Keep, &mut out).unwrap();
        let again = SipMessage::parse(&out).unwrap();
        // Content-Length was last, so it comes back at the same place.
        assert_eq!(again.headers(), req.headers());
        assert_eq!(again.body(), b"abc");
        assert!(std::str::from_utf8(&out)
            .unwrap()
            .contains("X-Odd:  \tweird ,, value\r\n  continued\r\n"));

        let mut out = Vec::new();
        reemit(
            &req,
            &Reemit {
                start_line: Some("INVITE sip:carol@example.net SIP/2.0"),
                prepend: &[("Via", "SIP/2.0/UDP gw.example.org;branch=z9hG4bKgw")],
                append: &[("Content-Type", "text/plain")],
                body: Some(b"hello"),
            },
            |h| match h.name {
                HeaderName::MaxForwards => HeaderAction::Replace("68"),
                HeaderName::Other(_) => HeaderAction::Remove,
                _ => HeaderAction::Keep,
            },
            &mut out,
        )
        .unwrap();
        let m = SipMessage::parse(&out).unwrap();
        assert_eq!(m.request_uri().unwrap().as_str(), "sip:carol@example.net");
        assert_eq!(m.top_via().host, "gw.example.org");
        assert_eq!(m.via().count(), 3);
        assert_eq!(m.max_forwards(), Some(68));
        assert!(m.header(HeaderName::Other("X-Odd")).is_none());
        assert_eq!(m.content_type(), Some("text/plain"));
        assert_eq!(m.body(), b"hello");
    }

    #[test]
    fn injection_is_refused_and_out_restored() {
        let mut out = b"keep".to_vec();
        let w = MessageWriter::response(&mut out, 200, "OK").unwrap();
        assert_eq!(w.header("X", "a\r\nEvil: 1").err(), Some(BuildError::Value));
        assert_eq!(out, b"keep");
        let w = MessageWriter::response(&mut out, 200, "OK").unwrap();
        assert_eq!(
            w.header("Content-Length", "9").err(),
            Some(BuildError::HeaderName)
        );
        let w = MessageWriter::response(&mut out, 200, "OK").unwrap();
        assert_eq!(w.header("l", "9").err(), Some(BuildError::HeaderName));
        let w = MessageWriter::response(&mut out, 200, "OK").unwrap();
        assert_eq!(
            w.header("Bad Name", "9").err(),
            Some(BuildError::HeaderName)
        );
        assert_eq!(out, b"keep");
        assert!(MessageWriter::response(&mut out, 99, "x").is_err());
        assert!(MessageWriter::response(&mut out, 200, "x\r\n").is_err());
        assert!(MessageWriter::request(&mut out, Method::Bye, "sip:a b").is_err());
        // A folded value is fine.
        let w = MessageWriter::response(&mut out, 200, "OK").unwrap();
        assert!(w.header("Subject", "a\r\n b").is_ok());
    }
}
