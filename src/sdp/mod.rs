//! SDP (RFC 4566) as the media relay needs it: read the addresses, ports,
//! codecs and RTCP attributes of each media section, and rewrite them to the
//! relay's own (the offer/answer rewrite of rtpengine's ng protocol).
//!
//! The description is kept as its lines so that everything we do not touch
//! passes through byte for byte. Parsing is bounded ([`SIZE_MAX`],
//! [`LINES_MAX`]) and never panics on input.

use std::net::IpAddr;

pub mod crypto;

/// Largest SDP accepted (bytes).
pub const SIZE_MAX: usize = 64 * 1024;
/// Most lines accepted.
pub const LINES_MAX: usize = 2000;
/// Most media sections accepted.
pub const MEDIA_MAX: usize = 16;

/// Why an SDP body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// Over [`SIZE_MAX`], [`LINES_MAX`] or [`MEDIA_MAX`].
    #[error("SDP too large")]
    TooLarge,
    /// Not UTF-8 text.
    #[error("SDP is not UTF-8 text")]
    NotText,
    /// A line that is not `<letter>=<value>`.
    #[error("malformed SDP line {0}")]
    BadLine(usize),
    /// No `v=0` first line.
    #[error("SDP does not start with v=0")]
    NoVersion,
    /// An `m=` line that does not parse.
    #[error("malformed m= line {0}")]
    BadMedia(usize),
    /// A `c=` line that does not parse.
    #[error("malformed c= line {0}")]
    BadConnection(usize),
    /// A media section with neither its own nor a session-level address.
    #[error("media section {0} has no connection address")]
    NoConnection(usize),
}

/// Media direction attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// a=sendrecv (the default)
    SendRecv,
    /// a=sendonly
    SendOnly,
    /// a=recvonly
    RecvOnly,
    /// a=inactive
    Inactive,
}

/// A parsed SDP body.
#[derive(Clone, Debug, PartialEq)]
pub struct Sdp {
    /// Session-level lines (`v=` through the line before the first `m=`).
    pub session: Vec<String>,
    /// Media sections.
    pub media: Vec<Media>,
}

/// One media section.
#[derive(Clone, Debug, PartialEq)]
pub struct Media {
    /// Its lines; the first is the `m=` line.
    pub lines: Vec<String>,
    /// `audio`, `video`, ...
    pub kind: String,
    /// Port from the `m=` line (0 = rejected/disabled stream).
    pub port: u16,
    /// Transport protocol (`RTP/AVP`, `RTP/SAVP`, ...).
    pub proto: String,
    /// Format list (payload types).
    pub formats: Vec<String>,
    /// Connection address (media-level or inherited).
    pub address: IpAddr,
    /// `a=rtcp:` port and optional address.
    pub rtcp: Option<(u16, Option<IpAddr>)>,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// Direction attribute (media-level or inherited).
    pub direction: Direction,
    /// Clock rate of the first format (from `a=rtpmap` or the static table).
    pub clock_rate: u32,
}

fn parse_connection(value: &str) -> Option<IpAddr> {
    // c=IN IP4 192.0.2.1[/ttl[/n]]
    let mut it = value.split_ascii_whitespace();
    if it.next()? != "IN" {
        return None;
    }
    let fam = it.next()?;
    let addr = it.next()?.split('/').next()?;
    let ip: IpAddr = addr.parse().ok()?;
    match (fam, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Some(ip),
        _ => None,
    }
}

fn direction_of(line: &str) -> Option<Direction> {
    match line {
        "a=sendrecv" => Some(Direction::SendRecv),
        "a=sendonly" => Some(Direction::SendOnly),
        "a=recvonly" => Some(Direction::RecvOnly),
        "a=inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

fn static_clock_rate(pt: &str) -> u32 {
    // RFC 3551 table 4/5 for the formats a telephony relay meets.
    match pt {
        "9" => 8000, // G.722 advertises 8000 though it samples at 16 kHz
        "10" | "11" => 44100,
        "14" | "25" | "26" | "28" | "31" | "32" | "33" | "34" => 90000,
        _ => 8000,
    }
}

impl Sdp {
    /// Parse a body.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        if body.len() > SIZE_MAX {
            return Err(SdpError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::NotText)?;
        let mut session = Vec::new();
        let mut sections: Vec<Vec<String>> = Vec::new();
        for (n, raw) in text.split('\n').enumerate() {
            if n >= LINES_MAX {
                return Err(SdpError::TooLarge);
            }
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.is_empty() {
                continue;
            }
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(SdpError::BadLine(n + 1));
            }
            if b[0] == b'm' {
                if sections.len() >= MEDIA_MAX {
                    return Err(SdpError::TooLarge);
                }
                sections.push(vec![line.to_string()]);
            } else if let Some(s) = sections.last_mut() {
                s.push(line.to_string());
            } else {
                session.push(line.to_string());
            }
        }
        if session.first().map(String::as_str) != Some("v=0") {
            return Err(SdpError::NoVersion);
        }
        let session_addr = session
            .iter()
            .find_map(|l| l.strip_prefix("c="))
            .map(|v| parse_connection(v).ok_or(SdpError::BadConnection(0)))
            .transpose()?;
        let session_dir = session
            .iter()
            .find_map(|l| direction_of(l))
            .unwrap_or(Direction::SendRecv);
        let mut media = Vec::with_capacity(sections.len());
        for (i, lines) in sections.into_iter().enumerate() {
            media.push(Media::parse(i, lines, session_addr, session_dir)?);
        }
        Ok(Sdp { session, media })
    }

    /// The session-level connection address, if any.
    pub fn session_address(&self) -> Option<IpAddr> {
        self.session
            .iter()
            .find_map(|l| l.strip_prefix("c="))
            .and_then(parse_connection)
    }

    /// Serialize with CRLF line ends.
    pub fn to_string_crlf(&self) -> String {
        let mut out = String::new();
        for l in self
            .session
            .iter()
            .chain(self.media.iter().flat_map(|m| &m.lines))
        {
            out.push_str(l);
            out.push_str("\r\n");
        }
        out
    }
}

impl Media {
    fn parse(
        index: usize,
        lines: Vec<String>,
        session_addr: Option<IpAddr>,
        session_dir: Direction,
    ) -> Result<Media, SdpError> {
        let m = &lines[0][2..];
        let mut it = m.split_ascii_whitespace();
        let kind = it.next().ok_or(SdpError::BadMedia(index))?.to_string();
        let port_field = it.next().ok_or(SdpError::BadMedia(index))?;
        let port: u16 = port_field
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or(SdpError::BadMedia(index))?;
        let proto = it.next().ok_or(SdpError::BadMedia(index))?.to_string();
        let formats: Vec<String> = it.map(str::to_string).collect();
        let mut address = None;
        let mut rtcp = None;
        let mut rtcp_mux = false;
        let mut direction = None;
        let mut rtpmap_rate = None;
        let first_fmt = formats.first().cloned().unwrap_or_default();
        for l in &lines[1..] {
            if let Some(v) = l.strip_prefix("c=") {
                address = Some(parse_connection(v).ok_or(SdpError::BadConnection(index))?);
            } else if let Some(v) = l.strip_prefix("a=rtcp:") {
                let mut p = v.split_ascii_whitespace();
                let port = p.next().and_then(|x| x.parse().ok());
                let addr = match (p.next(), p.next(), p.next()) {
                    (Some("IN"), Some(_), Some(a)) => a.parse().ok(),
                    _ => None,
                };
                rtcp = port.map(|port| (port, addr));
            } else if l == "a=rtcp-mux" {
                rtcp_mux = true;
            } else if let Some(d) = direction_of(l) {
                direction = Some(d);
            } else if let Some(v) = l.strip_prefix("a=rtpmap:") {
                let mut p = v.split_ascii_whitespace();
                if p.next() == Some(first_fmt.as_str()) {
                    rtpmap_rate = p
                        .next()
                        .and_then(|enc| enc.split('/').nth(1))
                        .and_then(|r| r.parse::<u32>().ok())
                        .filter(|&r| r > 0);
                }
            }
        }
        let address = address
            .or(session_addr)
            .ok_or(SdpError::NoConnection(index))?;
        Ok(Media {
            kind,
            port,
            proto,
            clock_rate: rtpmap_rate.unwrap_or_else(|| static_clock_rate(&first_fmt)),
            formats,
            address,
            rtcp,
            rtcp_mux,
            direction: direction.unwrap_or(session_dir),
            lines,
        })
    }

    /// The section's `a=crypto` attributes (RFC 4568), in offer order;
    /// unparsable ones are returned as errors so the caller can skip them.
    pub fn crypto(
        &self,
    ) -> impl Iterator<Item = Result<crypto::CryptoAttr, crypto::CryptoAttrError>> + '_ {
        self.lines
            .iter()
            .filter_map(|l| l.strip_prefix("a=crypto:"))
            .map(crypto::CryptoAttr::parse)
    }

    /// The remote RTCP address this section asks for (None if muxed).
    pub fn rtcp_addr(&self) -> Option<std::net::SocketAddr> {
        self.rtcp
            .map(|(port, addr)| (addr.unwrap_or(self.address), port).into())
    }
}

/// Where one media section should point after the rewrite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaEndpoint {
    /// The relay's address for this side.
    pub address: IpAddr,
    /// RTP port (0 keeps a rejected stream rejected).
    pub rtp_port: u16,
    /// RTCP port; `None` means rtcp-mux on the RTP port.
    pub rtcp_port: Option<u16>,
    /// Whether to advertise `a=rtcp-mux`.
    pub offer_mux: bool,
}

/// How to rewrite a description toward one side (the ng flags).
#[derive(Clone, Debug, Default)]
pub struct Rewrite {
    /// Endpoint per media section (same order as the SDP's).
    pub media: Vec<Option<MediaEndpoint>>,
    /// Replace the address in `o=` (`replace: origin`).
    pub replace_origin: bool,
    /// Strip ICE attributes (`ICE: remove`).
    pub ice_remove: bool,
    /// New transport protocol for every RTP section (`transport-protocol`).
    pub transport_protocol: Option<String>,
    /// Per media section: a transport protocol that overrides the above.
    pub media_proto: Vec<Option<String>>,
    /// Per media section: replace every `a=crypto` line with these lines
    /// (`Some(vec![])` strips them); `None` leaves them as they are.
    pub media_crypto: Vec<Option<Vec<String>>>,
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    }
}

const ICE_ATTRS: [&str; 7] = [
    "a=ice-ufrag:",
    "a=ice-pwd:",
    "a=candidate:",
    "a=end-of-candidates",
    "a=ice-options:",
    "a=remote-candidates:",
    "a=ice-lite",
];

fn is_ice(l: &str) -> bool {
    ICE_ATTRS.iter().any(|p| l.starts_with(p))
}

impl Sdp {
    /// Rewrite addresses and ports to the relay's, per `rw`.
    pub fn rewrite(&self, rw: &Rewrite) -> Sdp {
        let mut out = self.clone();
        // The session-level address becomes the first stream's endpoint.
        let first = rw.media.iter().flatten().next().map(|e| e.address);
        for l in &mut out.session {
            if let Some(ip) = first {
                if l.starts_with("c=") {
                    *l = format!("c=IN {} {}", family(ip), ip);
                } else if rw.replace_origin && l.starts_with("o=") {
                    let f: Vec<&str> = l[2..].split_ascii_whitespace().collect();
                    if f.len() == 6 {
                        *l = format!("o={} {} {} IN {} {}", f[0], f[1], f[2], family(ip), ip);
                    }
                }
            }
        }
        if rw.ice_remove {
            out.session.retain(|l| !is_ice(l));
        }
        let has_session_c = out.session.iter().any(|l| l.starts_with("c="));
        for (i, (m, ep)) in out.media.iter_mut().zip(rw.media.iter()).enumerate() {
            let Some(ep) = ep else { continue };
            let rtp_like = m.proto.starts_with("RTP/") || m.proto.starts_with("UDP/TLS/RTP/");
            let proto = match (
                rw.media_proto.get(i).and_then(Option::as_ref),
                &rw.transport_protocol,
            ) {
                (Some(p), _) if rtp_like => p.clone(),
                (None, Some(p)) if rtp_like => p.clone(),
                _ => m.proto.clone(),
            };
            let crypto = rw.media_crypto.get(i).and_then(Option::as_ref);
            let port = if m.port == 0 { 0 } else { ep.rtp_port };
            let mut lines = Vec::with_capacity(m.lines.len() + 2);
            lines.push(format!(
                "m={} {} {} {}",
                m.kind,
                port,
                proto,
                m.formats.join(" ")
            ));
            let conn = format!("c=IN {} {}", family(ep.address), ep.address);
            let mut wrote_c = false;
            for l in &m.lines[1..] {
                if l.starts_with("c=") {
                    lines.push(conn.clone());
                    wrote_c = true;
                } else if l.starts_with("a=rtcp:") || l == "a=rtcp-mux" {
                    // Re-added below from the endpoint.
                } else if crypto.is_some() && l.starts_with("a=crypto:") {
                    // Replaced below.
                } else if rw.ice_remove && is_ice(l) {
                } else {
                    lines.push(l.clone());
                }
            }
            // Media-level c= goes right after the m=/i= lines when the session
            // has none of its own (or the family changed).
            if !wrote_c && (!has_session_c || Some(ep.address) != first) {
                let at = lines
                    .iter()
                    .position(|l| !l.starts_with("m=") && !l.starts_with("i="))
                    .unwrap_or(lines.len());
                lines.insert(at, conn);
            }
            if port != 0 {
                let rtcp_port = ep.rtcp_port.unwrap_or(ep.rtp_port);
                lines.push(format!("a=rtcp:{rtcp_port}"));
                if ep.offer_mux {
                    lines.push("a=rtcp-mux".into());
                }
            }
            if let Some(c) = crypto {
                lines.extend(c.iter().cloned());
            }
            m.lines = lines;
            m.port = port;
            m.proto = proto;
            m.address = ep.address;
            m.rtcp_mux = port != 0 && ep.offer_mux;
            m.rtcp = if port == 0 {
                None
            } else {
                Some((ep.rtcp_port.unwrap_or(ep.rtp_port), None))
            };
        }
        out
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=ice-ufrag:abcd\r\na=candidate:1 1 UDP 1 10.0.0.1 4000 typ host\r\na=rtcp-mux\r\na=sendrecv\r\n";

    #[test]
    fn parses_offer() {
        let s = Sdp::parse(OFFER.as_bytes()).unwrap();
        assert_eq!(s.media.len(), 1);
        let m = &s.media[0];
        assert_eq!(m.port, 4000);
        assert_eq!(m.address, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert!(m.rtcp_mux);
        assert_eq!(m.formats, ["0", "8", "101"]);
        assert_eq!(m.clock_rate, 8000);
        assert_eq!(m.direction, Direction::SendRecv);
    }

    #[test]
    fn rewrites_to_relay() {
        let s = Sdp::parse(OFFER.as_bytes()).unwrap();
        let rw = Rewrite {
            media: vec![Some(MediaEndpoint {
                address: "127.0.0.1".parse().unwrap(),
                rtp_port: 30000,
                rtcp_port: Some(30001),
                offer_mux: false,
            })],
            replace_origin: true,
            ice_remove: true,
            transport_protocol: Some("RTP/AVP".into()),
            ..Rewrite::default()
        };
        let out = s.rewrite(&rw).to_string_crlf();
        assert!(out.contains("o=- 1 1 IN IP4 127.0.0.1\r\n"), "{out}");
        assert!(out.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(out.contains("m=audio 30000 RTP/AVP 0 8 101\r\n"));
        assert!(out.contains("a=rtcp:30001\r\n"));
        assert!(!out.contains("rtcp-mux"));
        assert!(!out.contains("ice-ufrag") && !out.contains("candidate"));
        assert!(out.contains("a=rtpmap:101 telephone-event/8000"));
        let back = Sdp::parse(out.as_bytes()).unwrap();
        assert_eq!(back.media[0].port, 30000);
    }

    #[test]
    fn ipv6_and_media_level_connection() {
        let sdp = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\nc=IN IP6 2001:db8::1\r\na=rtcp:5005\r\n";
        let s = Sdp::parse(sdp.as_bytes()).unwrap();
        assert_eq!(s.media[0].address, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            s.media[0].rtcp_addr(),
            Some("[2001:db8::1]:5005".parse().unwrap())
        );
        let out = s
            .rewrite(&Rewrite {
                media: vec![Some(MediaEndpoint {
                    address: "::1".parse().unwrap(),
                    rtp_port: 20000,
                    rtcp_port: None,
                    offer_mux: true,
                })],
                ..Rewrite::default()
            })
            .to_string_crlf();
        assert!(out.contains("c=IN IP6 ::1\r\n"), "{out}");
        assert!(out.contains("a=rtcp:20000\r\na=rtcp-mux\r\n"));
    }

    #[test]
    fn malformed_is_an_error() {
        assert_eq!(Sdp::parse(b"hello"), Err(SdpError::BadLine(1)));
        assert_eq!(Sdp::parse(b"s=x\r\n"), Err(SdpError::NoVersion));
        assert!(Sdp::parse(b"v=0\r\nm=audio x RTP/AVP 0\r\nc=IN IP4 1.2.3.4\r\n").is_err());
        assert!(Sdp::parse(b"v=0\r\nm=audio 4 RTP/AVP 0\r\n").is_err());
        assert!(Sdp::parse(b"v=0\r\nc=IN IP4 nope\r\nm=audio 4 RTP/AVP 0\r\n").is_err());
        assert!(Sdp::parse(&[0xff, 0xfe]).is_err());
        let big = "a=x\r\n".repeat(LINES_MAX + 1);
        assert_eq!(
            Sdp::parse(format!("v=0\r\n{big}").as_bytes()),
            Err(SdpError::TooLarge)
        );
        // Every prefix of a real offer parses or errors; none panics.
        for cut in 0..OFFER.len() {
            let _ = Sdp::parse(&OFFER.as_bytes()[..cut]);
        }
    }
}
