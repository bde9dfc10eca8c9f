//! The sans-IO forward path per packet: classify, source check/latching,
//! RTP header parse, loss/jitter accounting, peer lookup. No sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kolokol::media::relay::{Leg, RelayTable, Verdict};

fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

/// A table with `calls` calls installed (2 legs each, muxed), as a shard
/// would hold them.
fn table(calls: u32) -> (RelayTable, Vec<(u32, SocketAddr)>) {
    let now = Instant::now();
    let mut t = RelayTable::new(calls as usize * 2, calls as usize * 2, now);
    let mut senders = Vec::new();
    for c in 0..calls {
        let a_addr: SocketAddr = format!("10.0.{}.{}:4000", c / 250, c % 250 + 1)
            .parse()
            .unwrap();
        let b_addr: SocketAddr = format!("10.1.{}.{}:5000", c / 250, c % 250 + 1)
            .parse()
            .unwrap();
        let mut a = Leg::new(c, 2 * c, None);
        a.set_remote(a_addr, None);
        let mut b = Leg::new(c, 2 * c + 1, None);
        b.set_remote(b_addr, None);
        let (a, b) = (t.insert(a).unwrap(), t.insert(b).unwrap());
        t.pair(a, b);
        senders.push((2 * c, a_addr));
    }
    (t, senders)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay_forward");
    g.throughput(Throughput::Elements(1));
    for calls in [1u32, 1000, 10_000] {
        let (mut t, senders) = table(calls);
        let pkts: Vec<Vec<u8>> = (0..1024u16).map(rtp).collect();
        let mut i = 0usize;
        let mut now = Instant::now();
        let mut buf = [0u8; 2048];
        g.bench_function(format!("rtp_172B/{calls}_calls"), |bch| {
            bch.iter(|| {
                i = i.wrapping_add(1);
                now += Duration::from_micros(20);
                let (sock, src) = senders[i % senders.len()];
                let p = &pkts[i & 1023];
                buf[..p.len()].copy_from_slice(p);
                let mut len = p.len();
                let v = t.forward(now, sock, src, &mut buf, &mut len);
                assert!(matches!(v, Verdict::Send { .. }));
                v
            })
        });
    }
    // The drop path for garbage (must be cheaper than forwarding).
    let (mut t, senders) = table(1);
    g.bench_function("garbage_drop", |bch| {
        bch.iter_batched(
            || vec![0xffu8; 40],
            |mut p| {
                let mut len = p.len();
                t.forward(Instant::now(), senders[0].0, senders[0].1, &mut p, &mut len)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
