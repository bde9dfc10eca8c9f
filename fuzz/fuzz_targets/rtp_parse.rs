//! RTP/RTCP header views: `classify`, `RtpHeader::parse` and `rtcp_summary`
//! on arbitrary bytes must not panic; a parsed RTP header's lengths lie
//! inside the datagram and `classify` calls it RTP or RTCP.
#![no_main]

use kolokol::media::rtp::{classify, rtcp_summary, PacketKind, RtpHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    if let Ok(h) = RtpHeader::parse(data) {
        assert!(h.header_len >= 12);
        assert!(h.header_len + h.payload_len <= data.len());
        assert_eq!(h.sequence, u16::from_be_bytes([data[2], data[3]]));
        // Version 2 and 12 bytes or more: RTP, or RTCP by its payload type.
        assert!(matches!(kind, PacketKind::Rtp | PacketKind::Rtcp));
    }
    let _ = rtcp_summary(data);
});
