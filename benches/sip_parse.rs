//! SIP message parsing: Kolokol's zero-copy `SipMessage::parse` against the
//! `rsip` crate on the same messages in the same run. Both sides parse the
//! datagram and extract the fields a transaction layer needs first
//! (Call-ID, CSeq number and method, From tag, top Via branch), so rsip's
//! lazy typed-header parsing is paid for those fields too. Our parser also
//! validates every Via, From, To, Contact and Route value on the way; rsip
//! does not (it keeps other headers as untyped strings).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kolokol::sip::SipMessage;
use rsip::prelude::*;

const INVITE: &str = "INVITE sip:+4930123456@trunk.example.net;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---9f2c4f1c0b3d6e7a;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:gw@192.0.2.10:5060;transport=udp>\r\n\
To: <sip:+4930123456@trunk.example.net;user=phone>\r\n\
From: \"Portal\" <sip:+4930999000@gw.example.org;user=phone>;tag=8a1b2c3d\r\n\
Call-ID: 3c26700d7b5e4f1a9b8c@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE, INFO\r\n\
Supported: 100rel, timer, replaces\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: <sip:+4930999000@gw.example.org;user=phone>\r\n\
User-Agent: Kolokol/0.1\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 234\r\n\
\r\n\
v=0\r\n\
o=- 3912345678 3912345678 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 30000 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const OK200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---9f2c4f1c0b3d6e7a;rport=5060;received=192.0.2.10\r\n\
Record-Route: <sip:198.51.100.5;lr>\r\n\
To: <sip:+4930123456@trunk.example.net;user=phone>;tag=as5f3e2a1b\r\n\
From: \"Portal\" <sip:+4930999000@gw.example.org;user=phone>;tag=8a1b2c3d\r\n\
Call-ID: 3c26700d7b5e4f1a9b8c@192.0.2.10\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:+4930123456@198.51.100.5:5060>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, UPDATE\r\n\
Supported: replaces, timer\r\n\
Require: timer\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 0\r\n\
\r\n";

const BYE: &str = "BYE sip:+4930123456@198.51.100.5:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---0a0b0c0d0e0f1011;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:198.51.100.5;lr>\r\n\
To: <sip:+4930123456@trunk.example.net;user=phone>;tag=as5f3e2a1b\r\n\
From: \"Portal\" <sip:+4930999000@gw.example.org;user=phone>;tag=8a1b2c3d\r\n\
Call-ID: 3c26700d7b5e4f1a9b8c@192.0.2.10\r\n\
CSeq: 2 BYE\r\n\
Content-Length: 0\r\n\
\r\n";

/// Our side: parse and read the four fields.
fn ours(b: &[u8]) -> Option<(usize, u32, bool, usize)> {
    let m = SipMessage::parse(b).ok()?;
    let (n, method) = m.cseq();
    Some((
        m.call_id().len(),
        n,
        m.from().tag().is_some() && !method.as_str().is_empty(),
        m.top_via().branch.map_or(0, str::len),
    ))
}

/// rsip: parse and read the same four fields through its typed headers.
fn theirs(b: &[u8]) -> Option<(usize, u32, bool, usize)> {
    let m = rsip::SipMessage::try_from(b).ok()?;
    let call_id = m.call_id_header().ok()?.value().len();
    let cseq = m.cseq_header().ok()?.typed().ok()?;
    let tag = m.from_header().ok()?.tag().ok()?.is_some();
    let via = m.via_header().ok()?.typed().ok()?;
    let branch = via.branch().map_or(0, |b| b.to_string().len());
    Some((call_id, cseq.seq, tag, branch))
}

fn bench(c: &mut Criterion) {
    let wsinv = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/rfc4475/wsinv.dat"
    ))
    .expect("tests/data/rfc4475/wsinv.dat");
    let cases: [(&str, &[u8]); 4] = [
        ("invite_sdp", INVITE.as_bytes()),
        ("ok200", OK200.as_bytes()),
        ("bye", BYE.as_bytes()),
        ("wsinv", &wsinv),
    ];
    let mut g = c.benchmark_group("sip_parse");
    for (name, msg) in cases {
        let o = ours(msg);
        let t = theirs(msg);
        assert!(o.is_some(), "{name}: our parser refused it");
        if t.is_none() {
            eprintln!("sip_parse: rsip does not parse {name} (benched as its error path)");
        }
        g.throughput(Throughput::Bytes(msg.len() as u64));
        g.bench_function(format!("kolokol/{name}_{}B", msg.len()), |b| {
            b.iter(|| ours(black_box(msg)))
        });
        g.bench_function(format!("rsip/{name}_{}B", msg.len()), |b| {
            b.iter(|| theirs(black_box(msg)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
