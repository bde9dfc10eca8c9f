//! Ethernet/IPv4/UDP frames for the AF_XDP path, sans-IO: parse what an
//! AF_XDP socket received, and write the egress headers in front of a
//! payload in place (MACs, addresses, ports, lengths, the full IPv4 header
//! checksum and the UDP checksum: nothing offloads them on this path).
//!
//! Only what the relay handles is accepted: untagged Ethernet II, IPv4
//! without options, not fragmented, UDP with consistent lengths. Anything
//! else is a [`Reject`] the caller counts (the XDP program already passes
//! fragments and options to the stack, so these are rare).

use std::net::{Ipv4Addr, SocketAddrV4};

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length (no options).
pub const IP_LEN: usize = 20;
/// UDP header length.
pub const UDP_LEN: usize = 8;
/// Where the UDP payload starts in a frame we parse or build.
pub const PAYLOAD_OFF: usize = ETH_LEN + IP_LEN + UDP_LEN;

/// Why a received frame is not relayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reject {
    /// Shorter than the headers.
    Short = 0,
    /// 802.1Q / 802.1ad tagged.
    Vlan = 1,
    /// Not IPv4 (ethertype or IP version).
    NotIpv4 = 2,
    /// IPv4 options present.
    IpOptions = 3,
    /// A fragment.
    Fragment = 4,
    /// Not UDP.
    NotUdp = 5,
    /// IP total length or UDP length inconsistent with the frame.
    BadLength = 6,
}

impl Reject {
    /// Number of reasons.
    pub const COUNT: usize = 7;
    /// Stable names, by reason.
    pub const NAMES: [&'static str; Self::COUNT] = [
        "short",
        "vlan",
        "not_ipv4",
        "ip_options",
        "fragment",
        "not_udp",
        "bad_length",
    ];
}

/// A parsed IPv4/UDP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp4 {
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// UDP payload length (the payload starts at [`PAYLOAD_OFF`]).
    pub payload_len: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Parse an Ethernet/IPv4/UDP frame (checksums are not verified: SRTP
/// authenticates what matters, and plain RTP is relayed as rtpengine's
/// kernel path does).
pub fn parse(f: &[u8]) -> Result<Udp4, Reject> {
    if f.len() < ETH_LEN {
        return Err(Reject::Short);
    }
    match be16(f, 12) {
        0x0800 => {}
        0x8100 | 0x88a8 => return Err(Reject::Vlan),
        _ => return Err(Reject::NotIpv4),
    }
    if f.len() < PAYLOAD_OFF {
        return Err(Reject::Short);
    }
    let ip = &f[ETH_LEN..];
    if ip[0] >> 4 != 4 {
        return Err(Reject::NotIpv4);
    }
    if ip[0] & 0x0f != 5 {
        return Err(Reject::IpOptions);
    }
    if be16(ip, 6) & 0x3fff != 0 {
        return Err(Reject::Fragment);
    }
    if ip[9] != 17 {
        return Err(Reject::NotUdp);
    }
    let total = usize::from(be16(ip, 2));
    if total < IP_LEN + UDP_LEN || total > ip.len() {
        return Err(Reject::BadLength);
    }
    let udp = &ip[IP_LEN..];
    let ulen = usize::from(be16(udp, 4));
    if ulen < UDP_LEN || ulen > total - IP_LEN {
        return Err(Reject::BadLength);
    }
    let mut dst_mac = [0u8; 6];
    let mut src_mac = [0u8; 6];
    dst_mac.copy_from_slice(&f[0..6]);
    src_mac.copy_from_slice(&f[6..12]);
    Ok(Udp4 {
        dst_mac,
        src_mac,
        src: SocketAddrV4::new(ip4(ip, 12), be16(udp, 0)),
        dst: SocketAddrV4::new(ip4(ip, 16), be16(udp, 2)),
        payload_len: ulen - UDP_LEN,
    })
}

/// The headers of an egress frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Next hop's MAC.
    pub dst_mac: [u8; 6],
    /// Egress interface's MAC.
    pub src_mac: [u8; 6],
    /// Our address and port (the peer leg's local port).
    pub src: SocketAddrV4,
    /// The peer's remote.
    pub dst: SocketAddrV4,
    /// IPv4 TOS byte (DSCP << 2).
    pub tos: u8,
    /// TTL.
    pub ttl: u8,
}

/// One's-complement sum of big-endian 16-bit words (odd tail padded).
fn sum16(acc: u32, b: &[u8]) -> u32 {
    let mut acc = u64::from(acc);
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

fn fold(acc: u32) -> u16 {
    let mut a = acc;
    while a > 0xffff {
        a = (a & 0xffff) + (a >> 16);
    }
    !(a as u16)
}

/// Write Ethernet, IPv4 and UDP headers into `f[..PAYLOAD_OFF]` for the
/// `payload_len` bytes already at `f[PAYLOAD_OFF..]`, with both checksums;
/// returns the frame length, or `None` if `f` is too short or the datagram
/// would exceed IPv4's 65,535 bytes. DF is set and the IP id is 0 (RFC
/// 6864: atomic datagrams).
pub fn write_headers(f: &mut [u8], h: &Headers, payload_len: usize) -> Option<usize> {
    let total = PAYLOAD_OFF.checked_add(payload_len)?;
    let ip_total = u16::try_from(IP_LEN + UDP_LEN + payload_len).ok()?;
    let ulen = ip_total - IP_LEN as u16;
    if f.len() < total {
        return None;
    }
    f[0..6].copy_from_slice(&h.dst_mac);
    f[6..12].copy_from_slice(&h.src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[ETH_LEN..ETH_LEN + IP_LEN];
    ip[0] = 0x45;
    ip[1] = h.tos;
    ip[2..4].copy_from_slice(&ip_total.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
    ip[8] = h.ttl;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&h.src.ip().octets());
    ip[16..20].copy_from_slice(&h.dst.ip().octets());
    let c = fold(sum16(0, ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let u = ETH_LEN + IP_LEN;
    f[u..u + 2].copy_from_slice(&h.src.port().to_be_bytes());
    f[u + 2..u + 4].copy_from_slice(&h.dst.port().to_be_bytes());
    f[u + 4..u + 6].copy_from_slice(&ulen.to_be_bytes());
    f[u + 6..u + 8].copy_from_slice(&[0, 0]);
    // Pseudo-header: addresses, protocol, UDP length.
    let mut acc = sum16(0, &f[ETH_LEN + 12..ETH_LEN + 20]);
    acc = sum16(acc, &[0, 17]);
    acc = sum16(acc, &ulen.to_be_bytes());
    acc = sum16(acc, &f[u..total]);
    let c = match fold(acc) {
        0 => 0xffff,
        c => c,
    };
    f[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.1:1234 -> 10.0.0.2:5678 carrying "hello".
    fn sample() -> Vec<u8> {
        let h = Headers {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src: "10.0.0.1:1234".parse().unwrap(),
            dst: "10.0.0.2:5678".parse().unwrap(),
            tos: 0,
            ttl: 64,
        };
        let mut f = vec![0u8; PAYLOAD_OFF + 5];
        f[PAYLOAD_OFF..].copy_from_slice(b"hello");
        assert_eq!(write_headers(&mut f, &h, 5), Some(PAYLOAD_OFF + 5));
        f
    }

    #[test]
    fn known_checksums() {
        let f = sample();
        // IPv4 header 45 00 00 21 00 00 40 00 40 11 .. .. 0a000001 0a000002:
        // words 4500+0021+0000+4000+4011+0a00+0001+0a00+0002 = 0xd935,
        // complement 0x26ca.
        assert_eq!(&f[ETH_LEN + 10..ETH_LEN + 12], &[0x26, 0xca]);
        // UDP: pseudo 0a00+0001+0a00+0002+0011+000d, header 04d2+162e+000d,
        // data 6865+6c6c+6f00 = 0x1_72ff -> 0x7300, complement 0x8cff.
        assert_eq!(&f[ETH_LEN + IP_LEN + 6..PAYLOAD_OFF], &[0x8c, 0xff]);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(f[ETH_LEN + 8], 64);
    }

    #[test]
    fn a_written_frame_sums_to_zero_and_parses_back() {
        let f = sample();
        assert_eq!(fold(sum16(0, &f[ETH_LEN..ETH_LEN + IP_LEN])), 0);
        let ulen = (f.len() - ETH_LEN - IP_LEN) as u16;
        let mut acc = sum16(0, &f[ETH_LEN + 12..ETH_LEN + 20]);
        acc = sum16(acc, &[0, 17]);
        acc = sum16(acc, &ulen.to_be_bytes());
        acc = sum16(acc, &f[ETH_LEN + IP_LEN..]);
        assert_eq!(fold(acc), 0);
        let p = parse(&f).unwrap();
        assert_eq!(p.src, "10.0.0.1:1234".parse().unwrap());
        assert_eq!(p.dst, "10.0.0.2:5678".parse().unwrap());
        assert_eq!(p.payload_len, 5);
        assert_eq!(p.src_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[PAYLOAD_OFF..], b"hello");
    }

    #[test]
    fn lengths_follow_the_payload() {
        // SRTP adds a tag: a longer payload rewrites both lengths.
        let mut f = sample();
        f.extend_from_slice(&[0xaa; 10]);
        let h = Headers {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            src: "192.168.1.1:30000".parse().unwrap(),
            dst: "192.168.1.2:40000".parse().unwrap(),
            tos: 46 << 2,
            ttl: 64,
        };
        assert_eq!(write_headers(&mut f, &h, 15), Some(PAYLOAD_OFF + 15));
        let p = parse(&f).unwrap();
        assert_eq!(p.payload_len, 15);
        assert_eq!(be16(&f, ETH_LEN + 2), 20 + 8 + 15);
        assert_eq!(f[ETH_LEN + 1], 46 << 2);
        assert_eq!(fold(sum16(0, &f[ETH_LEN..ETH_LEN + IP_LEN])), 0);
        // Too small a buffer, too long a datagram.
        assert_eq!(write_headers(&mut [0u8; 40], &h, 0), None);
        assert_eq!(write_headers(&mut f, &h, 70_000), None);
    }

    #[test]
    fn rejects_are_told_apart() {
        let good = sample();
        assert_eq!(parse(&good[..10]), Err(Reject::Short));
        assert_eq!(parse(&good[..30]), Err(Reject::Short));
        let with = |at: usize, v: &[u8]| {
            let mut f = good.clone();
            f[at..at + v.len()].copy_from_slice(v);
            parse(&f)
        };
        assert_eq!(with(12, &[0x81, 0x00]), Err(Reject::Vlan));
        assert_eq!(with(12, &[0x86, 0xdd]), Err(Reject::NotIpv4));
        assert_eq!(with(ETH_LEN, &[0x65]), Err(Reject::NotIpv4));
        assert_eq!(with(ETH_LEN, &[0x46]), Err(Reject::IpOptions));
        assert_eq!(with(ETH_LEN + 6, &[0x20, 0x00]), Err(Reject::Fragment));
        assert_eq!(with(ETH_LEN + 6, &[0x00, 0x10]), Err(Reject::Fragment));
        assert_eq!(with(ETH_LEN + 9, &[6]), Err(Reject::NotUdp));
        assert_eq!(with(ETH_LEN + 2, &[0x01, 0x00]), Err(Reject::BadLength));
        assert_eq!(with(ETH_LEN + 2, &[0x00, 0x10]), Err(Reject::BadLength));
        assert_eq!(with(ETH_LEN + 24, &[0x00, 0x07]), Err(Reject::BadLength));
        assert_eq!(with(ETH_LEN + 24, &[0x00, 0x20]), Err(Reject::BadLength));
        // Ethernet padding after the datagram is fine.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(parse(&padded).unwrap().payload_len, 5);
    }
}
