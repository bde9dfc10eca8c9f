//! The ng control path per call set-up: bencode decode of a Kamailio-style
//! offer, SDP parse and rewrite to the relay's ports, reply encode.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kolokol::control::bencode::{self, Value};
use kolokol::sdp::{MediaEndpoint, Rewrite, Sdp};

const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 192.0.2.10\r\ns=-\r\n\
c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
a=ptime:20\r\na=sendrecv\r\n";

fn offer_msg() -> Vec<u8> {
    let mut d = Value::dict();
    d.insert("command", "offer");
    d.insert("call-id", "a84b4c76e66710@pc33.example.com");
    d.insert("from-tag", "1928301774");
    d.insert("via-branch", "z9hG4bK776asdhds");
    d.insert("sdp", SDP);
    d.insert(
        "replace",
        vec![Value::from("origin"), Value::from("session-connection")],
    );
    d.insert("ICE", "remove");
    d.insert("transport-protocol", "RTP/AVP");
    d.insert("rtcp-mux", vec![Value::from("demux")]);
    d.insert(
        "received-from",
        vec![Value::from("IP4"), Value::from("192.0.2.10")],
    );
    let mut out = b"5323_1 ".to_vec();
    d.encode(&mut out);
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ng_decode");
    g.throughput(Throughput::Elements(1));
    let msg = offer_msg();
    let body = &msg[7..];
    g.bench_function("bencode_offer", |b| {
        b.iter(|| bencode::decode(black_box(body)).unwrap())
    });
    g.bench_function("sdp_parse", |b| {
        b.iter(|| Sdp::parse(black_box(SDP.as_bytes())).unwrap())
    });
    let sdp = Sdp::parse(SDP.as_bytes()).unwrap();
    let rw = Rewrite {
        media: vec![Some(MediaEndpoint {
            address: "203.0.113.5".parse().unwrap(),
            rtp_port: 30000,
            rtcp_port: Some(30001),
            offer_mux: false,
        })],
        replace_origin: true,
        ice_remove: true,
        transport_protocol: Some("RTP/AVP".into()),
        ..Rewrite::default()
    };
    g.bench_function("sdp_rewrite", |b| {
        b.iter(|| sdp.rewrite(black_box(&rw)).to_string_crlf())
    });
    g.bench_function("offer_end_to_end", |b| {
        b.iter(|| {
            let v = bencode::decode(black_box(body)).unwrap();
            let s = Sdp::parse(v.get("sdp").unwrap().as_bytes().unwrap()).unwrap();
            let out = s.rewrite(&rw).to_string_crlf();
            let mut r = Value::dict();
            r.insert("result", "ok");
            r.insert("sdp", out);
            r.to_bytes()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
