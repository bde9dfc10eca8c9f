//! RTP and RTCP header views (RFC 3550 §5.1, §6.4; RFC 5761 §4 demux).
//!
//! Parsing is a bounds-checked read of the fixed header: no allocation, no
//! copy. A datagram that is too short or has the wrong version is reported
//! as such so the relay can count and drop it.

/// What the first bytes of a datagram on a media port look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// Version-2 RTP.
    Rtp,
    /// Version-2 RTCP (payload type 192..=223 per RFC 5761 §4).
    Rtcp,
    /// STUN (first byte 0..=3, RFC 7983): ICE, never relayed inline.
    Stun,
    /// DTLS (first byte 20..=63, RFC 7983).
    Dtls,
    /// Anything else, or too short to tell.
    Garbage,
}

/// Classify a datagram by RFC 7983's first-byte ranges and RFC 5761's
/// payload-type split between RTP and RTCP.
#[inline]
pub fn classify(pkt: &[u8]) -> PacketKind {
    let Some(&b0) = pkt.first() else {
        return PacketKind::Garbage;
    };
    match b0 {
        0..=3 => PacketKind::Stun,
        20..=63 => PacketKind::Dtls,
        128..=191 => match pkt.get(1) {
            Some(b1) if (192..=223).contains(b1) => {
                if pkt.len() >= RTCP_HEADER_LEN {
                    PacketKind::Rtcp
                } else {
                    PacketKind::Garbage
                }
            }
            Some(_) if pkt.len() >= RTP_HEADER_LEN => PacketKind::Rtp,
            _ => PacketKind::Garbage,
        },
        _ => PacketKind::Garbage,
    }
}

/// Length of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;
/// Length of the fixed RTCP header (common header + sender SSRC).
pub const RTCP_HEADER_LEN: usize = 8;

/// The fixed part of an RTP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Bytes before the payload (fixed header, CSRCs, extension).
    pub header_len: usize,
    /// Payload bytes (padding excluded).
    pub payload_len: usize,
}

/// Why a datagram is not a usable RTP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than its own header claims.
    #[error("RTP packet truncated")]
    Truncated,
    /// Version is not 2.
    #[error("RTP version is not 2")]
    Version,
    /// Padding count larger than the payload.
    #[error("RTP padding larger than payload")]
    Padding,
}

impl RtpHeader {
    /// Parse the header of `pkt` (RFC 3550 §5.1, with CSRC list, header
    /// extension and padding lengths checked against the datagram).
    #[inline]
    pub fn parse(pkt: &[u8]) -> Result<RtpHeader, RtpError> {
        if pkt.len() < RTP_HEADER_LEN {
            return Err(RtpError::Truncated);
        }
        let b0 = pkt[0];
        if b0 >> 6 != 2 {
            return Err(RtpError::Version);
        }
        let csrc_count = usize::from(b0 & 0x0f);
        let mut header_len = RTP_HEADER_LEN + 4 * csrc_count;
        if b0 & 0x10 != 0 {
            // Extension: 16-bit profile, 16-bit length in 32-bit words.
            let ext = pkt
                .get(header_len..header_len + 4)
                .ok_or(RtpError::Truncated)?;
            header_len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        if header_len > pkt.len() {
            return Err(RtpError::Truncated);
        }
        let mut payload_len = pkt.len() - header_len;
        if b0 & 0x20 != 0 {
            // The last octet counts the padding, itself included.
            let pad = usize::from(pkt[pkt.len() - 1]);
            if pad == 0 || pad > payload_len {
                return Err(RtpError::Padding);
            }
            payload_len -= pad;
        }
        Ok(RtpHeader {
            marker: pkt[1] & 0x80 != 0,
            payload_type: pkt[1] & 0x7f,
            sequence: u16::from_be_bytes([pkt[2], pkt[3]]),
            timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
            header_len,
            payload_len,
        })
    }
}

/// RTCP packet types (RFC 3550 §12.1).
pub mod rtcp_pt {
    /// Sender report.
    pub const SR: u8 = 200;
    /// Receiver report.
    pub const RR: u8 = 201;
}

/// One report block's round-trip inputs (RFC 3550 §6.4.1): LSR and DLSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportTiming {
    /// Middle 32 bits of the NTP timestamp of the last SR received.
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// What the relay needs from a compound RTCP packet: the NTP middle bits
/// of a sender report (to time the round trip) and the first report
/// block's LSR/DLSR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcpSummary {
    /// Middle 32 bits of the SR's NTP timestamp, if the compound has an SR.
    pub sr_ntp_mid: Option<u32>,
    /// The first report block with a non-zero LSR.
    pub report: Option<ReportTiming>,
}

/// Walk a compound RTCP packet (RFC 3550 §6.1) and pull out SR timing and
/// the first report block. Malformed lengths end the walk; `None` if the
/// first packet is not well formed.
pub fn rtcp_summary(pkt: &[u8]) -> Option<RtcpSummary> {
    let mut out = RtcpSummary::default();
    let mut off = 0;
    let mut first = true;
    while off + 4 <= pkt.len() {
        let b0 = pkt[off];
        if b0 >> 6 != 2 {
            return if first { None } else { Some(out) };
        }
        let count = usize::from(b0 & 0x1f);
        let pt = pkt[off + 1];
        let len = (usize::from(u16::from_be_bytes([pkt[off + 2], pkt[off + 3]])) + 1) * 4;
        if off + len > pkt.len() {
            return if first { None } else { Some(out) };
        }
        let body = &pkt[off..off + len];
        let blocks_at = match pt {
            rtcp_pt::SR if body.len() >= 28 => {
                out.sr_ntp_mid = Some(u32::from_be_bytes([body[10], body[11], body[12], body[13]]));
                Some(28)
            }
            rtcp_pt::RR if body.len() >= 8 => Some(8),
            _ => None,
        };
        if let (Some(at), None) = (blocks_at, out.report) {
            for i in 0..count {
                let b = at + 24 * i;
                let Some(block) = body.get(b..b + 24) else {
                    break;
                };
                let lsr = u32::from_be_bytes([block[16], block[17], block[18], block[19]]);
                let dlsr = u32::from_be_bytes([block[20], block[21], block[22], block[23]]);
                if lsr != 0 {
                    out.report = Some(ReportTiming { lsr, dlsr });
                    break;
                }
            }
        }
        first = false;
        off += len;
    }
    if first {
        None
    } else {
        Some(out)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&1234u32.to_be_bytes());
        p.extend_from_slice(&0xdeadbeefu32.to_be_bytes());
        p.extend_from_slice(&[0xd5; 160]);
        p
    }

    #[test]
    fn parses_plain_rtp() {
        let h = RtpHeader::parse(&rtp(7)).unwrap();
        assert_eq!(h.sequence, 7);
        assert_eq!(h.ssrc, 0xdeadbeef);
        assert_eq!(h.header_len, 12);
        assert_eq!(h.payload_len, 160);
        assert_eq!(classify(&rtp(7)), PacketKind::Rtp);
    }

    #[test]
    fn csrc_extension_and_padding() {
        let mut p = vec![0x80 | 0x10 | 0x20 | 1, 8, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2];
        p.extend_from_slice(&[0, 0, 0, 3]); // one CSRC
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension, 1 word
        p.extend_from_slice(&[9; 10]); // payload
        p.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.header_len, 12 + 4 + 8);
        assert_eq!(h.payload_len, 10);
        assert_eq!(h.payload_type, 8);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(RtpHeader::parse(&[0x80; 5]), Err(RtpError::Truncated));
        assert_eq!(RtpHeader::parse(&[0x40; 12]), Err(RtpError::Version));
        let mut p = rtp(1);
        p[0] |= 0x0f; // 15 CSRCs that are not there
        p.truncate(40);
        assert_eq!(RtpHeader::parse(&p), Err(RtpError::Truncated));
        let mut p = rtp(1);
        p[0] |= 0x20;
        *p.last_mut().unwrap() = 255;
        assert_eq!(RtpHeader::parse(&p), Err(RtpError::Padding));
        for n in 0..40 {
            let p = rtp(3);
            let _ = RtpHeader::parse(&p[..n]);
            let _ = classify(&p[..n]);
            let _ = rtcp_summary(&p[..n]);
        }
    }

    #[test]
    fn demux_rtcp_from_rtp() {
        let rr = [0x81, 201, 0, 7, 0, 0, 0, 1];
        assert_eq!(classify(&rr), PacketKind::Rtcp);
        assert_eq!(classify(&[0, 1, 0, 0]), PacketKind::Stun);
        assert_eq!(classify(&[22, 254, 253]), PacketKind::Dtls);
        assert_eq!(classify(&[0xff, 0]), PacketKind::Garbage);
        assert_eq!(classify(&[]), PacketKind::Garbage);
    }

    #[test]
    fn sr_and_report_block() {
        // SR with one report block.
        let mut p = vec![0x81, 200, 0, 12];
        p.extend_from_slice(&1u32.to_be_bytes()); // ssrc
        p.extend_from_slice(&[0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0]); // ntp
        p.extend_from_slice(&[0; 12]); // rtp ts, counts
        p.extend_from_slice(&[0; 16]); // block: ssrc, loss, ext seq, jitter
        p.extend_from_slice(&0xaabbccddu32.to_be_bytes()); // lsr
        p.extend_from_slice(&65536u32.to_be_bytes()); // dlsr = 1 s
        let s = rtcp_summary(&p).unwrap();
        assert_eq!(s.sr_ntp_mid, Some(0x1234_5678));
        assert_eq!(
            s.report,
            Some(ReportTiming {
                lsr: 0xaabbccdd,
                dlsr: 65536
            })
        );
    }
}
