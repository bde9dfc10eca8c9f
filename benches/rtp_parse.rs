//! RTP header parsing and RFC 7983/5761 classification per packet.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use kolokol::media::rtp::{classify, rtcp_summary, RtpHeader};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp_parse");
    g.throughput(Throughput::Elements(1));
    let mut plain = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
    plain.extend_from_slice(&[0xd5; 160]);
    let mut ext = vec![
        0x90 | 2,
        0x80 | 8,
        0,
        1,
        0,
        0,
        0,
        160,
        0,
        0,
        0,
        9,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        2,
    ];
    ext.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0xaa, 0, 0, 0x21, 1, 2, 0]);
    ext.extend_from_slice(&[0xd5; 160]);
    g.bench_function("plain_172B", |b| {
        b.iter(|| RtpHeader::parse(black_box(&plain)))
    });
    g.bench_function("csrc_ext_204B", |b| {
        b.iter(|| RtpHeader::parse(black_box(&ext)))
    });
    g.bench_function("classify", |b| b.iter(|| classify(black_box(&plain))));
    let mut sr = vec![0x81, 200, 0, 12, 0, 0, 0, 1];
    sr.extend_from_slice(&[0; 44]);
    g.bench_function("rtcp_sr_summary", |b| {
        b.iter(|| rtcp_summary(black_box(&sr)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
