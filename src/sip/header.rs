//! Header names and the value grammars the gateway reads (RFC 3261 §7.3,
//! §20, §25.1): comma-separated lists, generic parameters, Via and
//! name-addr / addr-spec (From, To, Contact, Route, Record-Route).
//!
//! Every parsed value is a set of slices of the message. A raw header value
//! may still contain line folding (CRLF followed by SP/HT, RFC 3261 §7.3.1):
//! the scanners here treat CR and LF as linear white space, which is what
//! folding means, so nothing has to be unfolded into a new buffer.
//! [`unfold`] gives the single-line form when a caller wants text.

use std::borrow::Cow;

use super::uri::{self, Uri};

/// Whether `b` is a `token` character (RFC 3261 §25.1).
#[inline]
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Whether `s` is a non-empty token.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Linear white space, with the CRLF of a fold counted in.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Index of the first byte `c` in `s`: a byte loop, cheaper than
/// `str::find` on the short slices SIP values are.
#[inline]
pub(crate) fn byte_pos(s: &str, c: u8) -> Option<usize> {
    s.as_bytes().iter().position(|&b| b == c)
}

/// `s` without leading and trailing linear white space.
#[inline]
pub(crate) fn trim_lws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_lws(c as u8))
}

#[inline]
fn skip_lws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_lws(b[i]) {
        i += 1;
    }
    i
}

/// With `b[start] == b'"'`, the index just past the closing quote of the
/// quoted-string, honouring `\` quoted-pairs; `None` if unterminated.
pub(crate) fn quoted_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// A header value with every fold (CRLF plus the white space around it)
/// replaced by one SP (RFC 3261 §7.3.1). Borrows when there is no fold.
pub fn unfold(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            while out.ends_with([' ', '\t']) {
                out.pop();
            }
            while chars
                .next_if(|&c| matches!(c, ' ' | '\t' | '\r' | '\n'))
                .is_some()
            {}
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

macro_rules! header_names {
    ($( $(#[$doc:meta])* $var:ident = $name:literal $(, $compact:literal)? ; )*) => {
        /// A header field name, compact forms mapped to the full name
        /// (RFC 3261 §7.3.3 and the IANA SIP header registry). Matching is
        /// case-insensitive.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum HeaderName<'a> {
            $( $(#[$doc])* $var, )*
            /// Any other header, with its name as written.
            Other(&'a str),
        }

        impl<'a> HeaderName<'a> {
            /// Recognises a header name as written in a message.
            pub fn parse(name: &'a str) -> HeaderName<'a> {
                if name.len() == 1 {
                    let c = name.as_bytes()[0].to_ascii_lowercase();
                    $( $( if c == $compact { return HeaderName::$var; } )? )*
                    return HeaderName::Other(name);
                }
                $( if name.len() == $name.len() && name.eq_ignore_ascii_case($name) {
                    return HeaderName::$var;
                } )*
                HeaderName::Other(name)
            }

            /// The full name in its usual spelling (for [`HeaderName::Other`],
            /// the name as written).
            pub fn as_str(&self) -> &'a str {
                match self {
                    $( HeaderName::$var => $name, )*
                    HeaderName::Other(n) => n,
                }
            }
        }
    };
}

header_names! {
    /// `Via` / `v`
    Via = "Via", b'v';
    /// `From` / `f`
    From = "From", b'f';
    /// `To` / `t`
    To = "To", b't';
    /// `Call-ID` / `i`
    CallId = "Call-ID", b'i';
    /// `CSeq`
    CSeq = "CSeq";
    /// `Contact` / `m`
    Contact = "Contact", b'm';
    /// `Max-Forwards`
    MaxForwards = "Max-Forwards";
    /// `Content-Length` / `l`
    ContentLength = "Content-Length", b'l';
    /// `Content-Type` / `c`
    ContentType = "Content-Type", b'c';
    /// `Content-Encoding` / `e`
    ContentEncoding = "Content-Encoding", b'e';
    /// `Route`
    Route = "Route";
    /// `Record-Route`
    RecordRoute = "Record-Route";
    /// `Require`
    Require = "Require";
    /// `Proxy-Require`
    ProxyRequire = "Proxy-Require";
    /// `Supported` / `k`
    Supported = "Supported", b'k';
    /// `Unsupported`
    Unsupported = "Unsupported";
    /// `Expires`
    Expires = "Expires";
    /// `Subject` / `s`
    Subject = "Subject", b's';
    /// `Allow`
    Allow = "Allow";
    /// `Accept`
    Accept = "Accept";
    /// `Event` / `o` (RFC 6665)
    Event = "Event", b'o';
    /// `Allow-Events` / `u` (RFC 6665)
    AllowEvents = "Allow-Events", b'u';
    /// `Refer-To` / `r` (RFC 3515)
    ReferTo = "Refer-To", b'r';
    /// `Referred-By` / `b` (RFC 3892)
    ReferredBy = "Referred-By", b'b';
    /// `Accept-Contact` / `a` (RFC 3841)
    AcceptContact = "Accept-Contact", b'a';
    /// `Reject-Contact` / `j` (RFC 3841)
    RejectContact = "Reject-Contact", b'j';
    /// `Request-Disposition` / `d` (RFC 3841)
    RequestDisposition = "Request-Disposition", b'd';
    /// `Session-Expires` / `x` (RFC 4028)
    SessionExpires = "Session-Expires", b'x';
    /// `Min-SE` (RFC 4028)
    MinSe = "Min-SE";
    /// `Identity` / `y` (RFC 8224)
    Identity = "Identity", b'y';
    /// `Identity-Info` / `n` (RFC 4474, obsolete)
    IdentityInfo = "Identity-Info", b'n';
    /// `RSeq` (RFC 3262)
    RSeq = "RSeq";
    /// `RAck` (RFC 3262)
    RAck = "RAck";
    /// `Authorization`
    Authorization = "Authorization";
    /// `Proxy-Authorization`
    ProxyAuthorization = "Proxy-Authorization";
    /// `WWW-Authenticate`
    WwwAuthenticate = "WWW-Authenticate";
    /// `Proxy-Authenticate`
    ProxyAuthenticate = "Proxy-Authenticate";
    /// `P-Asserted-Identity` (RFC 3325)
    PAssertedIdentity = "P-Asserted-Identity";
    /// `Privacy` (RFC 3323)
    Privacy = "Privacy";
    /// `User-Agent`
    UserAgent = "User-Agent";
    /// `Server`
    Server = "Server";
    /// `Date`
    Date = "Date";
    /// `Timestamp`
    Timestamp = "Timestamp";
    /// `Warning`
    Warning = "Warning";
    /// `Retry-After`
    RetryAfter = "Retry-After";
    /// `Min-Expires`
    MinExpires = "Min-Expires";
}

/// Splits a header value into its comma-separated elements (RFC 3261
/// §7.3.1). Commas inside quoted strings and inside `<...>` are not
/// separators. Elements are trimmed of linear white space and may be empty
/// (`a,,b`); the grammar of the header decides whether that is an error.
#[derive(Clone, Debug)]
pub struct ListIter<'a> {
    s: &'a str,
    pos: usize,
    done: bool,
}

impl<'a> ListIter<'a> {
    /// Iterates the elements of `value`. An empty value has no elements.
    pub fn new(value: &'a str) -> ListIter<'a> {
        ListIter {
            s: value,
            pos: 0,
            done: trim_lws(value).is_empty(),
        }
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let b = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        let mut angle = false;
        while i < b.len() {
            match b[i] {
                b'"' if !angle => match quoted_end(b, i) {
                    Some(e) => i = e,
                    None => i = b.len(),
                },
                b'<' => {
                    angle = true;
                    i += 1;
                }
                b'>' => {
                    angle = false;
                    i += 1;
                }
                b',' if !angle => break,
                _ => i += 1,
            }
        }
        let end = i.min(b.len());
        if end >= b.len() {
            self.done = true;
        } else {
            self.pos = end + 1;
        }
        // `end` is the index of an ASCII ',' or the length: a char boundary.
        Some(trim_lws(self.s.get(start..end).unwrap_or("")))
    }
}

/// Generic parameters `*( SEMI name [ EQUAL value ] )` as written, after a
/// URI, a Via sent-by or a name-addr. Validated when built, so iteration
/// cannot fail. Names compare case-insensitively.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a str,
}

#[inline]
fn is_pname_byte(b: u8) -> bool {
    is_token_byte(b)
        || matches!(
            b,
            b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$' | b'(' | b')'
        )
}

#[inline]
fn is_pvalue_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b';' | b',' | b'"' | b'<' | b'>' | b'=' | b'?')
}

impl<'a> Params<'a> {
    /// Validates `raw` (empty, or starting with optional LWS and `;`).
    pub(crate) fn parse(raw: &'a str) -> Result<Params<'a>, ()> {
        let mut it = ParamIter { s: raw, pos: 0 };
        while let Some(r) = it.next_checked() {
            r?;
        }
        Ok(Params { raw })
    }

    /// The parameters as written, starting at the first `;` or white space.
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        trim_lws(self.raw).is_empty()
    }

    /// `(name, value)` pairs in order; quoted values keep their quotes.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            s: self.raw,
            pos: 0,
        }
    }

    /// `None` if `name` is absent, `Some(None)` if it has no value,
    /// `Some(Some(v))` otherwise.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

/// Iterator over [`Params`].
#[derive(Clone, Debug)]
pub struct ParamIter<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> ParamIter<'a> {
    #[allow(clippy::type_complexity)]
    fn next_checked(&mut self) -> Option<Result<(&'a str, Option<&'a str>), ()>> {
        let b = self.s.as_bytes();
        let mut i = skip_lws(b, self.pos);
        if i >= b.len() {
            self.pos = i;
            return None;
        }
        if b[i] != b';' {
            self.pos = b.len();
            return Some(Err(()));
        }
        i = skip_lws(b, i + 1);
        let ns = i;
        while i < b.len() && is_pname_byte(b[i]) {
            i += 1;
        }
        if i == ns {
            self.pos = b.len();
            return Some(Err(()));
        }
        let name = &self.s[ns..i];
        let after_name = i;
        i = skip_lws(b, i);
        let mut value = None;
        if i < b.len() && b[i] == b'=' {
            i = skip_lws(b, i + 1);
            let vs = i;
            if i < b.len() && b[i] == b'"' {
                match quoted_end(b, i) {
                    Some(e) => i = e,
                    None => {
                        self.pos = b.len();
                        return Some(Err(()));
                    }
                }
            } else {
                while i < b.len() && is_pvalue_byte(b[i]) {
                    i += 1;
                }
            }
            if i == vs {
                self.pos = b.len();
                return Some(Err(()));
            }
            value = Some(&self.s[vs..i]);
        } else {
            i = after_name;
        }
        // What follows must be white space, the next `;` or the end.
        if i < b.len() && !is_lws(b[i]) && b[i] != b';' {
            self.pos = b.len();
            return Some(Err(()));
        }
        self.pos = i;
        Some(Ok((name, value)))
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        self.next_checked().and_then(Result::ok)
    }
}

/// A header value that does not follow its grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed header value")]
pub struct ValueError;

/// One Via value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// The value as written (one element of the list).
    pub raw: &'a str,
    /// Protocol name, `SIP`.
    pub protocol: &'a str,
    /// Protocol version, `2.0`.
    pub version: &'a str,
    /// Transport (`UDP`, `TCP`, `TLS`, `SCTP`, `WS` or any token).
    pub transport: &'a str,
    /// sent-by host (IPv6 with brackets).
    pub host: &'a str,
    /// sent-by port.
    pub port: Option<u16>,
    /// All parameters.
    pub params: Params<'a>,
    /// `branch` value (may be the bare magic cookie, RFC 4475 §3.2.1).
    pub branch: Option<&'a str>,
    /// `received` value.
    pub received: Option<&'a str>,
    /// `rport` (RFC 3581): `Some(None)` when present without a value.
    pub rport: Option<Option<u16>>,
    /// `maddr` value.
    pub maddr: Option<&'a str>,
    /// `ttl` value.
    pub ttl: Option<u8>,
}

fn token_at(b: &[u8], mut i: usize) -> (usize, usize) {
    let s = i;
    while i < b.len() && is_token_byte(b[i]) {
        i += 1;
    }
    (s, i)
}

impl<'a> Via<'a> {
    /// Parses one Via element (already split from its list).
    pub fn parse(raw: &'a str) -> Result<Via<'a>, ValueError> {
        Self::parse_inner(raw).map_err(|()| ValueError)
    }

    fn parse_inner(raw: &'a str) -> Result<Via<'a>, ()> {
        let s = trim_lws(raw);
        let b = s.as_bytes();
        let (ps, pe) = token_at(b, 0);
        let mut i = skip_lws(b, pe);
        if ps == pe || i >= b.len() || b[i] != b'/' {
            return Err(());
        }
        let (vs, ve) = token_at(b, skip_lws(b, i + 1));
        i = skip_lws(b, ve);
        if vs == ve || i >= b.len() || b[i] != b'/' {
            return Err(());
        }
        let (ts, te) = token_at(b, skip_lws(b, i + 1));
        i = skip_lws(b, te);
        if ts == te || i == te {
            return Err(());
        }
        let hs = i;
        while i < b.len() && !is_lws(b[i]) && b[i] != b';' {
            i += 1;
        }
        let (host, port) = uri::split_hostport(&s[hs..i]).map_err(|_| ())?;
        let params = Params::parse(&s[i..])?;
        let mut via = Via {
            raw: s,
            protocol: &s[ps..pe],
            version: &s[vs..ve],
            transport: &s[ts..te],
            host,
            port,
            params,
            branch: None,
            received: None,
            rport: None,
            maddr: None,
            ttl: None,
        };
        for (name, value) in params.iter() {
            if name.eq_ignore_ascii_case("branch") {
                via.branch = Some(value.ok_or(())?);
            } else if name.eq_ignore_ascii_case("received") {
                via.received = Some(value.ok_or(())?);
            } else if name.eq_ignore_ascii_case("maddr") {
                via.maddr = Some(value.ok_or(())?);
            } else if name.eq_ignore_ascii_case("ttl") {
                let v = value.ok_or(())?;
                if v.len() > 3 {
                    return Err(());
                }
                via.ttl = Some(v.parse().map_err(|_| ())?);
            } else if name.eq_ignore_ascii_case("rport") {
                via.rport = Some(match value {
                    Some(v) => Some(uri::parse_port(v).ok_or(())?),
                    None => None,
                });
            }
        }
        Ok(via)
    }

    /// `host[:port]` of sent-by.
    pub fn sent_by(&self) -> (&'a str, Option<u16>) {
        (self.host, self.port)
    }
}

/// A `name-addr` or `addr-spec` with its header parameters (From, To,
/// Contact, Route, Record-Route; RFC 3261 §20.10, §25.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The value as written.
    pub raw: &'a str,
    /// Display name: the text inside the quotes (quoted-pairs not decoded)
    /// or the token run before `<`.
    pub display_name: Option<&'a str>,
    /// Whether the display name was a quoted string.
    pub display_quoted: bool,
    /// The URI.
    pub uri: Uri<'a>,
    /// Whether the URI was enclosed in `<>`. Without brackets every `;`
    /// after the URI starts a header parameter (RFC 4475 §3.3.12).
    pub bracketed: bool,
    /// Header parameters after the URI (`tag`, `expires`, `q`, ...).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one name-addr / addr-spec with its parameters.
    pub fn parse(raw: &'a str) -> Result<NameAddr<'a>, ValueError> {
        Self::parse_inner(raw).map_err(|()| ValueError)
    }

    fn parse_inner(raw: &'a str) -> Result<NameAddr<'a>, ()> {
        let s = trim_lws(raw);
        let b = s.as_bytes();
        let mut display_name = None;
        let mut display_quoted = false;
        let lt;
        if b.first() == Some(&b'"') {
            let e = quoted_end(b, 0).ok_or(())?;
            display_name = Some(&s[1..e - 1]);
            display_quoted = true;
            let i = skip_lws(b, e);
            if i >= b.len() || b[i] != b'<' {
                return Err(());
            }
            lt = Some(i);
        } else {
            let mut i = 0;
            while i < b.len() && !matches!(b[i], b'<' | b';' | b'"') {
                i += 1;
            }
            match b.get(i) {
                Some(b'<') => {
                    let d = trim_lws(&s[..i]);
                    if !d.bytes().all(|c| is_token_byte(c) || is_lws(c)) {
                        return Err(());
                    }
                    if !d.is_empty() {
                        display_name = Some(d);
                    }
                    lt = Some(i);
                }
                Some(b'"') => return Err(()),
                _ => lt = None,
            }
        }
        let (uri_s, rest, bracketed) = match lt {
            Some(lt) => {
                let gt = lt + byte_pos(&s[lt..], b'>').ok_or(())?;
                // Tolerate white space just inside the brackets (RFC 4475
                // §3.1.2.14 allows either answer).
                (trim_lws(&s[lt + 1..gt]), &s[gt + 1..], true)
            }
            None => {
                let end = byte_pos(s, b';').unwrap_or(s.len());
                (trim_lws(&s[..end]), &s[end..], false)
            }
        };
        let uri = Uri::parse(uri_s).map_err(|_| ())?;
        if !bracketed {
            // An unbracketed URI cannot carry headers (RFC 3261 §20).
            if let Uri::Sip(u) = &uri {
                if u.headers.is_some() {
                    return Err(());
                }
            }
        }
        let params = Params::parse(rest)?;
        Ok(NameAddr {
            raw: s,
            display_name,
            display_quoted,
            uri,
            bracketed,
            params,
        })
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn names_and_compact_forms() {
        for (n, want) in [
            ("v", HeaderName::Via),
            ("V", HeaderName::Via),
            ("vIA", HeaderName::Via),
            ("i", HeaderName::CallId),
            ("CALL-id", HeaderName::CallId),
            ("m", HeaderName::Contact),
            ("e", HeaderName::ContentEncoding),
            ("l", HeaderName::ContentLength),
            ("c", HeaderName::ContentType),
            ("f", HeaderName::From),
            ("s", HeaderName::Subject),
            ("k", HeaderName::Supported),
            ("t", HeaderName::To),
            ("o", HeaderName::Event),
            ("u", HeaderName::AllowEvents),
            ("r", HeaderName::ReferTo),
            ("x", HeaderName::SessionExpires),
            ("y", HeaderName::Identity),
            ("b", HeaderName::ReferredBy),
            ("a", HeaderName::AcceptContact),
            ("cseq", HeaderName::CSeq),
        ] {
            assert_eq!(HeaderName::parse(n), want, "{n}");
        }
        assert_eq!(HeaderName::parse("z"), HeaderName::Other("z"));
        assert_eq!(
            HeaderName::parse("C%6Fntact"),
            HeaderName::Other("C%6Fntact")
        );
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
    }

    #[test]
    fn unfolding() {
        assert!(matches!(unfold("a b"), Cow::Borrowed("a b")));
        assert_eq!(
            unfold("newfangled value\r\n continued"),
            "newfangled value continued"
        );
        assert_eq!(unfold("a  \r\n\t  b\r\n c"), "a b c");
    }

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        let v: Vec<_> =
            ListIter::new(r#""a, \"b," <sip:x@y;p=1,2>;q=1 , <sip:z>,  ,last"#).collect();
        assert_eq!(
            v,
            [r#""a, \"b," <sip:x@y;p=1,2>;q=1"#, "<sip:z>", "", "last"]
        );
        assert_eq!(ListIter::new("  ").count(), 0);
        let folded: Vec<_> = ListIter::new("application/sdp,\r\n   message/sip").collect();
        assert_eq!(folded, ["application/sdp", "message/sip"]);
    }

    #[test]
    fn params() {
        let p = Params::parse(" ; a = 1 ;\r\n b;C=\"x;y\"").unwrap();
        let all: Vec<_> = p.iter().collect();
        assert_eq!(all, [("a", Some("1")), ("b", None), ("C", Some("\"x;y\""))]);
        assert_eq!(p.get("c"), Some(Some("\"x;y\"")));
        assert_eq!(p.get("b"), Some(None));
        assert_eq!(p.get("d"), None);
        for bad in [";", ";;", "x", ";a=", ";a=\"x", ";a b", ";a=1 2"] {
            assert!(Params::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn via_params() {
        let v = Via::parse(
            "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKabc;received=192.0.2.1;rport;maddr=224.2.0.1;ttl=16",
        )
        .unwrap();
        assert_eq!((v.protocol, v.version, v.transport), ("SIP", "2.0", "UDP"));
        assert_eq!(v.sent_by(), ("[2001:db8::9]", Some(5070)));
        assert_eq!(v.branch, Some("z9hG4bKabc"));
        assert_eq!(v.received, Some("192.0.2.1"));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.maddr, Some("224.2.0.1"));
        assert_eq!(v.ttl, Some(16));
        let r = Via::parse("SIP/2.0/TCP h;rport=5061").unwrap();
        assert_eq!(r.rport, Some(Some(5061)));
        assert_eq!(r.branch, None);
        // Folded, with white space around every separator (RFC 4475 wsinv).
        let w = Via::parse(
            "SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .unwrap();
        assert_eq!(w.transport, "TCP");
        assert_eq!(w.host, "spindle.example.com");
        assert_eq!(w.branch, Some("z9hG4bK9ikj8"));
        for bad in [
            "SIP/2.0/UDP",
            "SIP/2.0 UDP h",
            "SIP/2.0/UDPh",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP h;ttl=300",
            "SIP/2.0/UDP h;rport=x",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP h;branch",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(r#""J Rosenberg \\\""  <sip:jdrosen@example.com>;tag=98asjd8"#)
            .unwrap();
        assert_eq!(n.display_name, Some(r#"J Rosenberg \\\""#));
        assert!(n.display_quoted);
        assert_eq!(n.uri.as_str(), "sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some("98asjd8"));

        let t = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(t.display_name, Some("caller"));
        assert!(!t.display_quoted);

        // Unbracketed: `;unknownparam` is a header parameter.
        let c = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(!c.bracketed);
        assert!(c.uri.as_sip().unwrap().params.is_empty());
        assert_eq!(c.params.get("unknownparam"), Some(None));
        // Bracketed: it is a URI parameter.
        let c = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(c.params.is_empty());
        assert_eq!(
            c.uri.as_sip().unwrap().params.get("unknownparam"),
            Some(None)
        );
        let o = NameAddr::parse("<http://www.example.com>;tag=3234233").unwrap();
        assert!(matches!(o.uri, Uri::Other(_)));
        assert_eq!(o.tag(), Some("3234233"));

        for bad in [
            "\"Mr. J. User <sip:j.user@example.com>",
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
