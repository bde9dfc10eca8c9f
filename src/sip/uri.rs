//! SIP and SIPS URIs (RFC 3261 §19.1, §25.1), borrowed from the message.
//!
//! A `sip:`/`sips:` URI is split into user, password, host, port,
//! parameters and headers; every part is a slice of the input, with `%HH`
//! escapes left in place ([`unescape`] decodes them when a caller compares
//! values, RFC 3261 §19.1.4). Any other scheme (`tel:`, `soap.beep:`,
//! `isbn:` ...) is kept as an opaque but valid [`Uri::Other`]: the gateway
//! must carry such URIs through without understanding them (RFC 4475
//! §3.3.2-3.3.4). Parsing never panics and never allocates.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

use super::header::{byte_pos, Params};

/// A URI as it appears in a Request-URI, a name-addr or an addr-spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// Any other syntactically valid absolute URI, kept opaque.
    Other(OtherUri<'a>),
}

/// A URI of a scheme this parser does not interpret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherUri<'a> {
    /// The whole URI.
    pub raw: &'a str,
    /// Scheme (before the first `:`), as written.
    pub scheme: &'a str,
    /// Everything after the first `:` (never empty).
    pub opaque: &'a str,
}

/// A parsed `sip:` or `sips:` URI. All parts are raw slices of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// The whole URI as written.
    pub raw: &'a str,
    /// `true` for `sips:`.
    pub secure: bool,
    /// User part (escapes not decoded; may contain `;` and `?`, RFC 4475
    /// §3.1.1.9).
    pub user: Option<&'a str>,
    /// Password after `user:`.
    pub password: Option<&'a str>,
    /// Host: a name, an IPv4 address or an IPv6 reference with its
    /// brackets.
    pub host: &'a str,
    /// Port, when given.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Params<'a>,
    /// Headers after `?`, undecoded (`Route=%3Csip:x%3E&Subject=y`).
    pub headers: Option<&'a str>,
}

/// Why a URI did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UriError;

impl<'a> Uri<'a> {
    /// Parses an absolute URI. Surrounding whitespace is not accepted: the
    /// caller trims what its grammar allows.
    pub fn parse(s: &'a str) -> Result<Uri<'a>, UriError> {
        let colon = byte_pos(s, b':').ok_or(UriError)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        if !is_scheme(scheme) || rest.is_empty() {
            return Err(UriError);
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            let secure = scheme.len() == 4;
            return SipUri::parse_rest(s, secure, rest).map(Uri::Sip);
        }
        if rest
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || matches!(b, b'<' | b'>' | b'"'))
        {
            return Err(UriError);
        }
        Ok(Uri::Other(OtherUri {
            raw: s,
            scheme,
            opaque: rest,
        }))
    }

    /// The URI exactly as written.
    pub fn as_str(&self) -> &'a str {
        match self {
            Uri::Sip(u) => u.raw,
            Uri::Other(o) => o.raw,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other(_) => None,
        }
    }
}

impl<'a> SipUri<'a> {
    fn parse_rest(raw: &'a str, secure: bool, rest: &'a str) -> Result<SipUri<'a>, UriError> {
        if rest
            .bytes()
            .any(|b| b <= b' ' || b == 0x7f || matches!(b, b'<' | b'>' | b'"'))
        {
            return Err(UriError);
        }
        // `@` appears only as the userinfo delimiter: user, password,
        // host, parameters and headers must all escape it.
        let (user, password, hostpart) = match byte_pos(rest, b'@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let (u, p) = match byte_pos(userinfo, b':') {
                    Some(c) => (&userinfo[..c], Some(&userinfo[c + 1..])),
                    None => (userinfo, None),
                };
                if u.is_empty() {
                    return Err(UriError);
                }
                (Some(u), p, &rest[at + 1..])
            }
            None => (None, None, rest),
        };
        let (before_headers, headers) = match byte_pos(hostpart, b'?') {
            Some(q) => {
                let h = &hostpart[q + 1..];
                if h.is_empty() {
                    return Err(UriError);
                }
                (&hostpart[..q], Some(h))
            }
            None => (hostpart, None),
        };
        let (hostport, params) = match byte_pos(before_headers, b';') {
            Some(sc) => (&before_headers[..sc], &before_headers[sc..]),
            None => (before_headers, ""),
        };
        let (host, port) = split_hostport(hostport)?;
        let params = Params::parse(params).map_err(|_| UriError)?;
        Ok(SipUri {
            raw,
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The host as an IP address, when it is one (IPv6 without brackets).
    pub fn host_ip(&self) -> Option<IpAddr> {
        host_ip(self.host)
    }

    /// The user part with `%HH` escapes decoded.
    pub fn user_unescaped(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(unescape)
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }

    /// Whether the `lr` (loose routing) parameter is present.
    pub fn lr(&self) -> bool {
        self.params.get("lr").is_some()
    }
}

/// Splits `host[:port]` where host may be an IPv6 reference; validates
/// both. Used for URIs and Via sent-by.
pub(crate) fn split_hostport(s: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if s.starts_with('[') {
        let close = byte_pos(s, b']').ok_or(UriError)?;
        let host = &s[..close + 1];
        let after = &s[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError),
        };
        (host, port)
    } else {
        match byte_pos(s, b':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    if !is_host(host) {
        return Err(UriError);
    }
    let port = match port {
        Some(p) => Some(parse_port(p).ok_or(UriError)?),
        None => None,
    };
    Ok((host, port))
}

/// A port: 1 to 5 digits fitting u16.
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Whether `h` is a host: a hostname/IPv4 (alphanumerics, `-`, `.`, `_`)
/// or a bracketed IPv6 address.
pub(crate) fn is_host(h: &str) -> bool {
    if let Some(inner) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// A host string (as in [`SipUri::host`]) as an IP address.
pub fn host_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        Some(inner) => inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse().ok(),
    }
}

fn is_scheme(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
}

/// Decodes `%HH` escapes (RFC 3261 §19.1.4). A `%` not followed by two hex
/// digits is kept as it is. Borrows when there is nothing to decode. A
/// decoded `%00` stays in the output: it must not truncate the value
/// (RFC 4475 §3.1.1.4).
pub fn unescape(s: &str) -> Cow<'_, [u8]> {
    let b = s.as_bytes();
    if !b.contains(&b'%') {
        return Cow::Borrowed(b);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod test {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn full_sip_uri() {
        let u = sip("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&X=y");
        assert!(u.secure);
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.host_ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr());
        assert_eq!(u.headers, Some("Subject=hi&X=y"));
    }

    #[test]
    fn host_only_and_ipv4() {
        let u = sip("sip:192.0.2.1");
        assert_eq!(u.user, None);
        assert_eq!(u.host_ip(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(u.port, None);
        assert!(u.params.is_empty());
    }

    #[test]
    fn user_with_semicolon_and_escapes() {
        // RFC 4475 §3.1.1.9: the user part is `user;par=u%40example.net`.
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        assert_eq!(u.host, "example.com");
        assert_eq!(&*u.user_unescaped().unwrap(), b"user;par=u@example.net");
        // §3.1.1.4: %00 does not truncate.
        let n = sip("sip:null-%00-null@example.com");
        assert_eq!(&*n.user_unescaped().unwrap(), b"null-\0-null");
        assert_eq!(&*unescape("%zz%4"), b"%zz%4");
    }

    #[test]
    fn other_schemes_are_opaque() {
        for s in [
            "tel:+15551234",
            "soap.beep://192.0.2.103:3002",
            "nobodyKnowsThisScheme:totallyopaquecontent",
            "isbn:2983792873",
        ] {
            match Uri::parse(s) {
                Ok(Uri::Other(o)) => assert_eq!(o.raw, s),
                other => panic!("{s}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_uris() {
        for s in [
            "",
            "sip:",
            "<sip:a@b>",
            "sip:a@",
            "sip:@host",
            "sip:host:",
            "sip:host:99999",
            "sip:[::1",
            "sip:[zz]",
            "sip:a b@host",
            "sip:host;;x",
            "sip:host?",
            "1abc:x",
            "tel:",
        ] {
            assert!(Uri::parse(s).is_err(), "{s}");
        }
    }
}
