//! Zero-copy SIP message parsing (RFC 3261 §7, §20, §25) over one datagram.
//!
//! [`SipMessage::parse`] reads the start line, indexes the headers as
//! `(name, raw value)` slices in order (at most [`HEADERS_MAX`]), frames the
//! body by Content-Length, and validates what every element relies on:
//! the SIP version, the five mandatory headers (Via, From, To, Call-ID,
//! CSeq) and their grammars, single-valued headers appearing once, the
//! scalar ranges, and the CSeq method against the request method. The
//! typed accessors ([`SipMessage::via`], [`SipMessage::from`],
//! [`SipMessage::cseq`] ...) then cannot fail. Unknown headers are kept
//! byte for byte.
//!
//! A refused message comes back as a [`SipParseError`] that says what to do
//! with it: answer a request with [`SipParseError::status`], drop a
//! response silently (RFC 3261 §16.7, RFC 4475 §3.1.2.19). Nothing here
//! panics or indexes out of bounds on any input, and the only allocation
//! is the header index.
//!
//! Not done here: stream (TCP/TLS) framing, where a missing Content-Length
//! is an error and a short body means "wait for more"; this parser takes
//! one datagram, so a missing Content-Length means the body runs to its
//! end and bytes after the declared body are ignored (RFC 3261 §18.3).

use std::borrow::Cow;

use super::header::{self, is_token, trim_lws, HeaderName, ListIter, NameAddr, Via};
use super::uri::Uri;

/// Most header lines accepted in one message. 128 is about three times
/// what a request through several proxies carries (a Via and a
/// Record-Route per hop plus a dozen of its own); more is an attack or a
/// loop, answered with 400 rather than grown into.
pub const HEADERS_MAX: usize = 128;

/// Largest message accepted: the largest UDP payload.
pub const MESSAGE_SIZE_MAX: usize = 65_535;

/// Largest CSeq sequence number plus one (RFC 3261 §8.1.1.5: below 2**31).
pub const CSEQ_LIMIT: u32 = 1 << 31;

/// A SIP method (RFC 3261 §7.1 and the extensions the gateway meets).
/// Methods are case-sensitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// OPTIONS
    Options,
    /// REGISTER
    Register,
    /// PRACK (RFC 3262)
    Prack,
    /// UPDATE (RFC 3311)
    Update,
    /// INFO (RFC 6086)
    Info,
    /// REFER (RFC 3515)
    Refer,
    /// NOTIFY (RFC 6665)
    Notify,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// MESSAGE (RFC 3428)
    Message,
    /// Any other method token.
    Extension(&'a str),
}

impl<'a> Method<'a> {
    /// Recognises a method token; `None` if `s` is not a token.
    pub fn parse(s: &'a str) -> Option<Method<'a>> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "OPTIONS" => Method::Options,
            "REGISTER" => Method::Register,
            "PRACK" => Method::Prack,
            "UPDATE" => Method::Update,
            "INFO" => Method::Info,
            "REFER" => Method::Refer,
            "NOTIFY" => Method::Notify,
            "SUBSCRIBE" => Method::Subscribe,
            "MESSAGE" => Method::Message,
            s if is_token(s) => Method::Extension(s),
            _ => return None,
        })
    }

    /// The method as it is written on the wire.
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Extension(s) => s,
        }
    }
}

/// What is wrong with a refused message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// Over [`MESSAGE_SIZE_MAX`].
    #[error("message larger than {MESSAGE_SIZE_MAX} bytes")]
    TooLarge,
    /// No empty line ends the header section.
    #[error("header section not terminated")]
    Unterminated,
    /// The header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotText,
    /// The start line does not follow the grammar.
    #[error("malformed start line")]
    StartLine,
    /// The Request-URI does not parse, or carries headers.
    #[error("malformed Request-URI")]
    RequestUri,
    /// A SIP version other than 2.0.
    #[error("unsupported SIP version")]
    Version,
    /// A status code outside 100..=699.
    #[error("status code out of range")]
    StatusCode,
    /// A header line without a `name:`, or a fold before the first header.
    #[error("malformed header line")]
    HeaderLine,
    /// More than [`HEADERS_MAX`] header lines.
    #[error("more than {HEADERS_MAX} headers")]
    TooManyHeaders,
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A single-valued header appears more than once.
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    /// A header value does not follow its grammar.
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    /// A number outside its range (CSeq, Max-Forwards, Expires).
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    /// Content-Length says more bytes than the datagram has.
    #[error("Content-Length larger than the body")]
    BodyTooShort,
    /// The CSeq method differs from the request method.
    #[error("CSeq method differs from the request method")]
    MethodMismatch,
    /// An unknown request method whose CSeq method differs.
    #[error("unknown method and CSeq method differs")]
    UnknownMethodMismatch,
}

/// Why a datagram was not accepted as a SIP message, and what to do about
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SipParseError {
    /// A request that must be answered with [`SipParseError::status`].
    #[error("bad SIP request: {0}")]
    Request(Fault),
    /// A response: responses are never answered, so it is dropped.
    #[error("bad SIP response (discarded): {0}")]
    Response(Fault),
    /// Not recognisable as SIP (no start line, binary noise, keep-alive
    /// CRLFs): dropped.
    #[error("not a SIP message")]
    NotSip,
}

impl SipParseError {
    /// The status code to answer with, or `None` if the message is to be
    /// discarded silently.
    pub fn status(&self) -> Option<u16> {
        match self {
            SipParseError::Request(f) => Some(match f {
                Fault::Version => 505,
                Fault::UnknownMethodMismatch => 501,
                Fault::TooLarge => 513,
                _ => 400,
            }),
            SipParseError::Response(_) | SipParseError::NotSip => None,
        }
    }

    /// Whether the message is to be dropped without an answer.
    pub fn is_discard(&self) -> bool {
        self.status().is_none()
    }

    /// What was wrong, when it was recognised as SIP.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            SipParseError::Request(f) | SipParseError::Response(f) => Some(*f),
            SipParseError::NotSip => None,
        }
    }
}

/// The first line of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `Method SP Request-URI SP SIP/2.0`
    Request {
        /// Method.
        method: Method<'a>,
        /// Request-URI.
        uri: Uri<'a>,
    },
    /// `SIP/2.0 SP Status-Code SP Reason-Phrase`
    Response {
        /// 100..=699.
        code: u16,
        /// Reason phrase (may be empty).
        reason: &'a str,
    },
}

/// One header line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name, compact forms mapped to the full name.
    pub name: HeaderName<'a>,
    /// The name as written.
    pub raw_name: &'a str,
    /// The value as written, without surrounding white space; folds
    /// (CRLF + SP/HT) kept. See [`Header::unfolded`].
    pub value: &'a str,
    /// The whole header line(s) from the name to the end of the value.
    pub line: &'a str,
}

impl<'a> Header<'a> {
    /// The value with folds replaced by one SP.
    pub fn unfolded(&self) -> Cow<'a, str> {
        header::unfold(self.value)
    }

    /// The comma-separated elements of the value (for headers whose
    /// grammar is a list).
    pub fn values(&self) -> ListIter<'a> {
        ListIter::new(self.value)
    }
}

/// A parsed SIP message borrowing the datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipMessage<'a> {
    raw: &'a [u8],
    start_raw: &'a str,
    start: StartLine<'a>,
    headers: Vec<Header<'a>>,
    body: &'a [u8],
    call_id: &'a str,
    cseq: (u32, Method<'a>),
    from: NameAddr<'a>,
    to: NameAddr<'a>,
    top_via: Via<'a>,
    max_forwards: Option<u8>,
    content_length: Option<usize>,
    expires: Option<u32>,
}

/// Start of the header section and of the body: the index after the
/// empty line.
fn find_head_end(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(off) = b.get(i..)?.iter().position(|&c| c == b'\n') {
        let nl = i + off;
        match (b.get(nl + 1), b.get(nl + 2)) {
            (Some(b'\n'), _) => return Some((nl + 1, nl + 2)),
            (Some(b'\r'), Some(b'\n')) => return Some((nl + 1, nl + 3)),
            _ => i = nl + 1,
        }
    }
    None
}

/// Parses a decimal number of at most `digits_max` digits.
fn parse_num(s: &str, digits_max: usize) -> Option<u64> {
    if s.is_empty() || s.len() > digits_max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a number allowing leading zeros (`0068`): strips them, then at
/// most `digits_max` significant digits.
fn parse_scalar(s: &str, digits_max: usize) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        return Some(0);
    }
    parse_num(t, digits_max)
}

fn is_sip_version(v: &str) -> bool {
    v.eq_ignore_ascii_case("SIP/2.0")
}

/// `SIP/digits.digits` of any version.
fn looks_like_version(v: &str) -> bool {
    let Some(rest) = v.get(..4).filter(|p| p.eq_ignore_ascii_case("SIP/")) else {
        return false;
    };
    let rest = &v[rest.len()..];
    match rest.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

fn parse_start(line: &str) -> Result<StartLine<'_>, SipParseError> {
    // Compared as bytes: the line may start with a multi-byte char.
    if line
        .as_bytes()
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        let bad = SipParseError::Response;
        let (version, rest) = line.split_once(' ').ok_or(bad(Fault::StartLine))?;
        if !is_sip_version(version) {
            return Err(bad(Fault::Version));
        }
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(
                if code.bytes().all(|b| b.is_ascii_digit()) && !code.is_empty() {
                    Fault::StatusCode
                } else {
                    Fault::StartLine
                },
            ));
        }
        let code: u16 = code.parse().map_err(|_| bad(Fault::StatusCode))?;
        if !(100..=699).contains(&code) {
            return Err(bad(Fault::StatusCode));
        }
        if reason.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(bad(Fault::StartLine));
        }
        return Ok(StartLine::Response { code, reason });
    }
    let bad = SipParseError::Request;
    let (m, rest) = line.split_once(' ').ok_or(SipParseError::NotSip)?;
    let method = Method::parse(m).ok_or(SipParseError::NotSip)?;
    // Exactly one SP between the three elements (RFC 3261 §7.1): extra
    // white space is refused, which RFC 4475 §3.1.2.8-10 allows.
    let (uri, version) = rest.split_once(' ').ok_or(bad(Fault::StartLine))?;
    if version.contains(' ') || version.contains('\t') {
        return Err(bad(Fault::StartLine));
    }
    if !is_sip_version(version) {
        return Err(bad(if looks_like_version(version) {
            Fault::Version
        } else {
            Fault::StartLine
        }));
    }
    let uri = Uri::parse(uri).map_err(|_| bad(Fault::RequestUri))?;
    if let Uri::Sip(u) = &uri {
        // Headers are not allowed in a Request-URI (RFC 3261 §19.1.1).
        if u.headers.is_some() {
            return Err(bad(Fault::RequestUri));
        }
    }
    Ok(StartLine::Request { method, uri })
}

impl<'a> SipMessage<'a> {
    /// Parses one datagram. Leading CRLFs (keep-alives, RFC 3261 §7.5) are
    /// skipped; octets after the declared Content-Length are ignored.
    pub fn parse(buf: &'a [u8]) -> Result<SipMessage<'a>, SipParseError> {
        let lead = buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or(SipParseError::NotSip)?;
        let buf = &buf[lead..];
        let is_response = buf.len() >= 4 && buf[..4].eq_ignore_ascii_case(b"SIP/");
        let fail = |f: Fault| {
            if is_response {
                SipParseError::Response(f)
            } else {
                SipParseError::Request(f)
            }
        };
        if buf.len() > MESSAGE_SIZE_MAX {
            return Err(fail(Fault::TooLarge));
        }
        let Some((head_len, body_start)) = find_head_end(buf) else {
            // No start line at all is noise; a start line and headers
            // without the empty line is a malformed message.
            return Err(match buf.iter().position(|&b| b == b'\n') {
                Some(_) => {
                    // Still refuse non-SIP first lines as noise.
                    let first = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
                    match std::str::from_utf8(first) {
                        Ok(l) => match parse_start(l.strip_suffix('\r').unwrap_or(l)) {
                            Err(SipParseError::NotSip) => SipParseError::NotSip,
                            _ => fail(Fault::Unterminated),
                        },
                        Err(_) => SipParseError::NotSip,
                    }
                }
                None => SipParseError::NotSip,
            });
        };
        let head = match std::str::from_utf8(&buf[..head_len]) {
            Ok(h) => h,
            Err(e) => {
                // A first line that is not text is not SIP at all.
                let first_nl = buf.iter().position(|&b| b == b'\n').unwrap_or(0);
                return Err(if e.valid_up_to() < first_nl {
                    SipParseError::NotSip
                } else {
                    fail(Fault::NotText)
                });
            }
        };

        // Lines of the header section as (start, end) offsets in `head`
        // without the line ending; `head` ends with '\n'. Every offset is
        // at an ASCII byte or the end, so slicing cannot split a char.
        let hb = head.as_bytes();
        let mut pos = 0;
        let mut next_line = || -> Option<(usize, usize)> {
            if pos >= hb.len() {
                return None;
            }
            let start = pos;
            let nl = hb[start..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(hb.len(), |o| start + o);
            pos = nl + 1;
            let end = if nl > start && hb[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            Some((start, end))
        };
        let (s0, e0) = next_line().unwrap_or((0, 0));
        let start_raw = &head[s0..e0];
        let start = parse_start(start_raw)?;

        let mut headers: Vec<Header<'a>> = Vec::with_capacity(24);
        // The header being read: (line start, name, value start, value end).
        let mut cur: Option<(usize, &'a str, usize, usize)> = None;
        let finish = |headers: &mut Vec<Header<'a>>,
                      c: (usize, &'a str, usize, usize)|
         -> Result<(), SipParseError> {
            if headers.len() >= HEADERS_MAX {
                return Err(fail(Fault::TooManyHeaders));
            }
            let (ls, name, vs, ve) = c;
            let value = trim_lws(head.get(vs..ve).unwrap_or(""));
            headers.push(Header {
                name: HeaderName::parse(name),
                raw_name: name,
                value,
                line: head.get(ls..ve).unwrap_or(""),
            });
            Ok(())
        };
        while let Some((ls, le)) = next_line() {
            if ls == le {
                break;
            }
            let line = &hb[ls..le];
            let mut colon = None;
            for (i, &c) in line.iter().enumerate() {
                match c {
                    // A CR that does not end a line has no meaning in SIP.
                    b'\r' => return Err(fail(Fault::HeaderLine)),
                    b':' if colon.is_none() => colon = Some(i),
                    _ => {}
                }
            }
            if matches!(line[0], b' ' | b'\t') {
                match cur.as_mut() {
                    Some(c) => c.3 = le,
                    None => return Err(fail(Fault::HeaderLine)),
                }
                continue;
            }
            if let Some(c) = cur.take() {
                finish(&mut headers, c)?;
            }
            let colon = colon.ok_or(fail(Fault::HeaderLine))?;
            let name = head[ls..ls + colon].trim_end_matches([' ', '\t']);
            if !is_token(name) {
                return Err(fail(Fault::HeaderLine));
            }
            cur = Some((ls, name, ls + colon + 1, le));
        }
        if let Some(c) = cur.take() {
            finish(&mut headers, c)?;
        }

        // Validate what the accessors rely on.
        let mut call_id = None;
        let mut cseq = None;
        let mut from = None;
        let mut to = None;
        let mut top_via = None;
        let mut max_forwards = None;
        let mut content_length = None;
        let mut expires = None;
        fn once<T>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), Fault> {
            if slot.is_some() {
                return Err(Fault::Duplicate(name));
            }
            *slot = Some(v);
            Ok(())
        }
        for h in &headers {
            let v = h.value;
            let r: Result<(), Fault> = match h.name {
                HeaderName::Via => {
                    let mut r = Err(Fault::BadHeader("Via"));
                    for e in h.values() {
                        match Via::parse(e) {
                            Ok(via) => {
                                top_via.get_or_insert(via);
                                r = Ok(());
                            }
                            Err(_) => {
                                r = Err(Fault::BadHeader("Via"));
                                break;
                            }
                        }
                    }
                    r
                }
                HeaderName::CallId => {
                    if v.is_empty() || v.bytes().any(header::is_lws) {
                        Err(Fault::BadHeader("Call-ID"))
                    } else {
                        once(&mut call_id, v, "Call-ID")
                    }
                }
                HeaderName::CSeq => {
                    let b = v.as_bytes();
                    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
                    let m = trim_lws(&v[digits..]);
                    if digits == 0 || digits == v.len() || !header::is_lws(b[digits]) {
                        Err(Fault::BadHeader("CSeq"))
                    } else {
                        match (parse_scalar(&v[..digits], 10), Method::parse(m)) {
                            (_, None) => Err(Fault::BadHeader("CSeq")),
                            (Some(n), Some(m)) if n < u64::from(CSEQ_LIMIT) => {
                                once(&mut cseq, (n as u32, m), "CSeq")
                            }
                            _ => Err(Fault::OutOfRange("CSeq")),
                        }
                    }
                }
                HeaderName::From => match NameAddr::parse(v) {
                    Ok(n) => once(&mut from, n, "From"),
                    Err(_) => Err(Fault::BadHeader("From")),
                },
                HeaderName::To => match NameAddr::parse(v) {
                    Ok(n) => once(&mut to, n, "To"),
                    Err(_) => Err(Fault::BadHeader("To")),
                },
                HeaderName::MaxForwards => match parse_scalar(v, 3) {
                    Some(n) if n <= 255 => once(&mut max_forwards, n as u8, "Max-Forwards"),
                    Some(_) => Err(Fault::OutOfRange("Max-Forwards")),
                    None if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() => {
                        Err(Fault::OutOfRange("Max-Forwards"))
                    }
                    None => Err(Fault::BadHeader("Max-Forwards")),
                },
                HeaderName::ContentLength => match parse_scalar(v, 10) {
                    Some(n) => once(&mut content_length, n as usize, "Content-Length"),
                    None => Err(Fault::BadHeader("Content-Length")),
                },
                HeaderName::Expires => match parse_scalar(v, 10) {
                    Some(n) if n <= u64::from(u32::MAX) => once(&mut expires, n as u32, "Expires"),
                    Some(_) => Err(Fault::OutOfRange("Expires")),
                    None if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() => {
                        Err(Fault::OutOfRange("Expires"))
                    }
                    None => Err(Fault::BadHeader("Expires")),
                },
                HeaderName::Contact => {
                    if v == "*" {
                        Ok(())
                    } else {
                        let mut r = Ok(());
                        let mut n = 0;
                        for e in h.values() {
                            n += 1;
                            if NameAddr::parse(e).is_err() {
                                r = Err(Fault::BadHeader("Contact"));
                                break;
                            }
                        }
                        if n == 0 {
                            Err(Fault::BadHeader("Contact"))
                        } else {
                            r
                        }
                    }
                }
                HeaderName::Route | HeaderName::RecordRoute => {
                    let what = if h.name == HeaderName::Route {
                        "Route"
                    } else {
                        "Record-Route"
                    };
                    if h.values().all(|e| NameAddr::parse(e).is_ok()) && !v.is_empty() {
                        Ok(())
                    } else {
                        Err(Fault::BadHeader(what))
                    }
                }
                _ => Ok(()),
            };
            r.map_err(fail)?;
        }
        let top_via = top_via.ok_or(fail(Fault::Missing("Via")))?;
        let from = from.ok_or(fail(Fault::Missing("From")))?;
        let to = to.ok_or(fail(Fault::Missing("To")))?;
        let call_id = call_id.ok_or(fail(Fault::Missing("Call-ID")))?;
        let cseq = cseq.ok_or(fail(Fault::Missing("CSeq")))?;
        if let StartLine::Request { method, .. } = start {
            if cseq.1 != method {
                return Err(fail(if matches!(method, Method::Extension(_)) {
                    Fault::UnknownMethodMismatch
                } else {
                    Fault::MethodMismatch
                }));
            }
        }

        let rest = &buf[body_start.min(buf.len())..];
        let body = match content_length {
            Some(n) => rest.get(..n).ok_or(fail(Fault::BodyTooShort))?,
            None => rest,
        };
        let end = body_start + body.len();
        Ok(SipMessage {
            raw: buf.get(..end).unwrap_or(buf),
            start_raw,
            start,
            headers,
            body,
            call_id,
            cseq,
            from,
            to,
            top_via,
            max_forwards,
            content_length,
            expires,
        })
    }

    /// The message bytes, from the start line through the end of the body
    /// (leading CRLFs and trailing octets of the datagram excluded).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// The start line as written, without its CRLF.
    pub fn start_line_raw(&self) -> &'a str {
        self.start_raw
    }

    /// The parsed start line.
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method; `None` for a response.
    pub fn method(&self) -> Option<Method<'a>> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI; `None` for a response.
    pub fn request_uri(&self) -> Option<&Uri<'a>> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code; `None` for a request.
    pub fn status_code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase; `None` for a request.
    pub fn reason(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// All header lines in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// The headers called `name`, in order.
    pub fn headers_named<'s>(
        &'s self,
        name: HeaderName<'s>,
    ) -> impl Iterator<Item = &'s Header<'a>> + 's {
        self.headers
            .iter()
            .filter(move |h| same_name(&h.name, &name))
    }

    /// The first header called `name`.
    pub fn header(&self, name: HeaderName<'_>) -> Option<&Header<'a>> {
        self.headers.iter().find(|h| same_name(&h.name, &name))
    }

    /// The elements of every header called `name`, in order (empty
    /// elements skipped).
    pub fn list<'s>(&'s self, name: HeaderName<'s>) -> impl Iterator<Item = &'a str> + 's {
        self.headers_named(name)
            .flat_map(|h| h.values())
            .filter(|e| !e.is_empty())
    }

    /// The body (exactly Content-Length octets when that header is present).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Call-ID.
    pub fn call_id(&self) -> &'a str {
        self.call_id
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, Method<'a>) {
        self.cseq
    }

    /// From.
    pub fn from(&self) -> &NameAddr<'a> {
        &self.from
    }

    /// To.
    pub fn to(&self) -> &NameAddr<'a> {
        &self.to
    }

    /// Max-Forwards, when present (optional for RFC 2543 peers).
    pub fn max_forwards(&self) -> Option<u8> {
        self.max_forwards
    }

    /// Content-Length, when present.
    pub fn content_length(&self) -> Option<usize> {
        self.content_length
    }

    /// Expires, when present.
    pub fn expires(&self) -> Option<u32> {
        self.expires
    }

    /// Content-Type value (media type with its parameters), when present.
    pub fn content_type(&self) -> Option<&'a str> {
        self.header(HeaderName::ContentType).map(|h| h.value)
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> &Via<'a> {
        &self.top_via
    }

    /// Every Via value, top first.
    pub fn via(&self) -> impl Iterator<Item = Via<'a>> + '_ {
        // Validated in `parse`, so no element is skipped.
        self.list(HeaderName::Via)
            .filter_map(|e| Via::parse(e).ok())
    }

    /// Whether the Contact is `*` (REGISTER removing all bindings).
    pub fn contact_is_wildcard(&self) -> bool {
        self.header(HeaderName::Contact)
            .is_some_and(|h| h.value == "*")
    }

    /// Every Contact value in order (none for `*`).
    pub fn contact(&self) -> impl Iterator<Item = NameAddr<'a>> + '_ {
        self.list(HeaderName::Contact)
            .filter_map(|e| NameAddr::parse(e).ok())
    }

    /// Every Route value in order.
    pub fn route(&self) -> impl Iterator<Item = NameAddr<'a>> + '_ {
        self.list(HeaderName::Route)
            .filter_map(|e| NameAddr::parse(e).ok())
    }

    /// Every Record-Route value in order.
    pub fn record_route(&self) -> impl Iterator<Item = NameAddr<'a>> + '_ {
        self.list(HeaderName::RecordRoute)
            .filter_map(|e| NameAddr::parse(e).ok())
    }

    /// Option tags of Require.
    pub fn require(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.list(HeaderName::Require)
    }

    /// Option tags of Proxy-Require.
    pub fn proxy_require(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.list(HeaderName::ProxyRequire)
    }

    /// Option tags of Supported.
    pub fn supported(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.list(HeaderName::Supported)
    }
}

/// Header names compare case-insensitively, also for unknown ones.
fn same_name(a: &HeaderName<'_>, b: &HeaderName<'_>) -> bool {
    match (a, b) {
        (HeaderName::Other(x), HeaderName::Other(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

/// Whether a user agent must drop this response without processing it:
/// RFC 3261 §18.1.2 (a response at its UAC carries exactly one Via) and
/// RFC 4475 §3.3.10 (a Via sent-by that is a broadcast or unspecified
/// address would make a proxy send to it). Requests are never dropped here.
pub fn should_discard_response(msg: &SipMessage<'_>) -> bool {
    if msg.is_request() {
        return false;
    }
    let mut n = 0;
    for v in msg.via() {
        n += 1;
        match super::uri::host_ip(v.host) {
            Some(std::net::IpAddr::V4(a)) if a.is_broadcast() || a.is_unspecified() => return true,
            Some(std::net::IpAddr::V6(a)) if a.is_unspecified() => return true,
            _ => {}
        }
    }
    n != 1
}

#[cfg(test)]
mod test {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds, SIP/2.0/TCP p2.example.com;branch=z9hG4bK2\r\n\
        Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK3;rport\r\n\
        Max-Forwards: 70\r\n\
        t: Bob <sip:bob@biloxi.example.com>\r\n\
        f: \"Alice, A.\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        i: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        m: <sip:alice@pc33.atlanta.example.com>, \"x,y\" <sip:b,c@d;p=1>;q=0.5\r\n\
        Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n\
        Record-Route: <sip:rr.example.com;lr>\r\n\
        k: 100rel, timer\r\n\
        Require: timer\r\n\
        X-Custom:  kept   as is\r\n\
        c: application/sdp\r\n\
        l: 4\r\n\
        \r\n\
        v=0\r\ntrailing";

    #[test]
    fn parses_compact_forms_lists_and_typed_fields() {
        let m = SipMessage::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(m.method(), Some(Method::Invite));
        assert_eq!(m.call_id(), "a84b4c76e66710@pc33.atlanta.example.com");
        assert_eq!(m.cseq(), (314159, Method::Invite));
        assert_eq!(m.from().display_name, Some("Alice, A."));
        assert_eq!(m.from().tag(), Some("1928301774"));
        assert_eq!(m.to().tag(), None);
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.content_type(), Some("application/sdp"));
        assert_eq!(m.body(), b"v=0\r");
        let vias: Vec<_> = m.via().collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].branch, Some("z9hG4bK776asdhds"));
        assert_eq!(vias[1].transport, "TCP");
        assert_eq!(vias[2].host, "[2001:db8::1]");
        assert_eq!(vias[2].port, Some(5070));
        assert_eq!(vias[2].rport, Some(None));
        assert_eq!(m.top_via().branch, Some("z9hG4bK776asdhds"));
        let contacts: Vec<_> = m.contact().collect();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[1].display_name, Some("x,y"));
        assert_eq!(contacts[1].params.get("q"), Some(Some("0.5")));
        assert_eq!(m.route().count(), 2);
        assert_eq!(m.record_route().count(), 1);
        assert_eq!(m.supported().collect::<Vec<_>>(), ["100rel", "timer"]);
        assert_eq!(m.require().collect::<Vec<_>>(), ["timer"]);
        let x = m.header(HeaderName::Other("x-custom")).unwrap();
        assert_eq!(x.value, "kept   as is");
        assert_eq!(x.line, "X-Custom:  kept   as is");
    }

    #[test]
    fn folding_is_unfolded_on_request() {
        let msg = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 0009\r\n  OPTIONS\r\n\
            Subject: one\r\n  two  \r\n\tthree\r\n\r\n";
        let m = SipMessage::parse(msg.as_bytes()).unwrap();
        assert_eq!(m.cseq(), (9, Method::Options));
        let s = m.header(HeaderName::Subject).unwrap();
        assert_eq!(s.value, "one\r\n  two  \r\n\tthree");
        assert_eq!(s.unfolded(), "one two three");
        assert_eq!(m.body(), b"");
        assert_eq!(m.content_length(), None);
    }

    fn err(s: &str) -> SipParseError {
        SipMessage::parse(s.as_bytes()).unwrap_err()
    }

    const BASE: &str = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
        To: <sip:a@b>\r\nCall-ID: 1\r\n";

    #[test]
    fn refusals_and_their_status() {
        let r = |extra: &str| err(&format!("OPTIONS sip:a@b SIP/2.0\r\n{BASE}{extra}\r\n"));
        assert_eq!(
            r("CSeq: 1 OPTIONS\r\nCSeq: 2 OPTIONS\r\n").status(),
            Some(400)
        );
        assert_eq!(r("CSeq: 2147483648 OPTIONS\r\n").status(), Some(400));
        assert_eq!(r("CSeq: 1 INVITE\r\n").fault(), Some(Fault::MethodMismatch));
        assert_eq!(
            r("CSeq: 1 OPTIONS\r\nMax-Forwards: 256\r\n").fault(),
            Some(Fault::OutOfRange("Max-Forwards"))
        );
        assert_eq!(
            r("CSeq: 1 OPTIONS\r\nExpires: 4294967296\r\n").fault(),
            Some(Fault::OutOfRange("Expires"))
        );
        assert_eq!(
            r("CSeq: 1 OPTIONS\r\nContent-Length: 1\r\n").fault(),
            Some(Fault::BodyTooShort)
        );
        assert_eq!(
            r("CSeq: 1 OPTIONS\r\nl: -1\r\n").fault(),
            Some(Fault::BadHeader("Content-Length"))
        );
        let many = "X: y\r\n".repeat(HEADERS_MAX);
        assert_eq!(
            r(&format!("CSeq: 1 OPTIONS\r\n{many}")).fault(),
            Some(Fault::TooManyHeaders)
        );
        let e = err(&format!(
            "OPTIONS sip:a@b SIP/3.0\r\n{BASE}CSeq: 1 OPTIONS\r\n\r\n"
        ));
        assert_eq!(e.status(), Some(505));
        let e = err(&format!("FOO sip:a@b SIP/2.0\r\n{BASE}CSeq: 1 BAR\r\n\r\n"));
        assert_eq!(e.status(), Some(501));
        let e = err(&format!(
            "SIP/2.0 200 OK\r\n{BASE}CSeq: 99999999999 INVITE\r\n\r\n"
        ));
        assert!(e.is_discard());
        let e = err(&format!("SIP/2.0 700 Odd\r\n{BASE}CSeq: 1 INVITE\r\n\r\n"));
        assert_eq!(e, SipParseError::Response(Fault::StatusCode));
        assert_eq!(
            r("CSeq: 1 OPTIONS\r\nX: a\rb\r\n").fault(),
            Some(Fault::HeaderLine)
        );
        // A multi-byte char across byte 4 of the first line.
        assert!(err("ID:\u{5c8}x\r\n\r\n").is_discard());
        for noise in [
            "",
            "\r\n\r\n",
            "\x00\x01\x02",
            "hello",
            "\u{80}\u{81} x y\r\n\r\n",
        ] {
            assert!(err(noise).is_discard(), "{noise:?}");
        }
    }

    #[test]
    fn response_fields_and_discard_check() {
        let text = format!("\r\nSIP/2.0 180 Ringing\r\n{BASE}CSeq: 1 INVITE\r\n\r\n");
        let m = SipMessage::parse(text.as_bytes()).unwrap();
        assert_eq!(m.status_code(), Some(180));
        assert_eq!(m.reason(), Some("Ringing"));
        assert!(!should_discard_response(&m));
        let two = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 255.255.255.255\r\n{BASE}CSeq: 1 INVITE\r\n\r\n"
        );
        assert!(should_discard_response(
            &SipMessage::parse(two.as_bytes()).unwrap()
        ));
    }
}
