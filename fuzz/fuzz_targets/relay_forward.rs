//! The relay's fast path: a sequence of arbitrary datagrams, on arbitrary
//! sockets from a handful of sources, into a `RelayTable` with two calls
//! installed, must not panic, and the counters must add up.
//!
//! Call 0: leg A (socket 0, rtcp-muxed, SRTP both ways with a suite picked
//! by the first input byte) paired with leg B (sockets 1 and 2, plain, no
//! remote yet: it latches). Call 1: legs C and D share sockets 3 and 4
//! ("per-call" ports, told apart by source); D is strict-source. Sockets
//! 5-7 have no leg, 8 and 9 are past the table.
//!
//! Each datagram is `op, dt, len_lo, len_hi, bytes...`: `op & 0x0f` is the
//! socket (15 = make B rtcp-muxed instead), `op >> 4 & 7` the source,
//! `op & 0x80` protects the bytes with A's key first (so that they pass
//! SRTP authentication and reach the code after it); `dt` advances the
//! clock in milliseconds.
//!
//! Checked: A's authenticated packets reach B as the plaintext that A
//! protected; what the relay protects toward A unprotects with A's key to
//! what B sent; `rx == forwarded + drops`; and a twin table driven the way
//! a shard batches SRTP (tag precomputed with `MacBatch` from
//! `auth_input`, egress tag deferred and written afterwards) gives the same
//! verdicts, bytes and counters as `forward`.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kolokol::media::relay::{Leg, LegId, OnMismatch, RelayTable, Verdict};
use kolokol::media::rtp::{classify, PacketKind};
use kolokol::media::srtp::mbsha1::{MacBatch, MacInput};
use kolokol::media::srtp::{PreTag, SrtpContext, SrtpSuite};
use libfuzzer_sys::fuzz_target;

const BUF_LEN: usize = 2048;
const DATAGRAMS_MAX: usize = 64;

fn ctx(suite: SrtpSuite, seed: u8) -> Box<SrtpContext> {
    let key: Vec<u8> = (0..suite.master_key_len() as u8)
        .map(|i| i ^ seed)
        .collect();
    let salt: Vec<u8> = (0..suite.master_salt_len() as u8)
        .map(|i| i.wrapping_mul(seed))
        .collect();
    Box::new(SrtpContext::new(suite, &key, &salt).unwrap())
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let suite = SrtpSuite::ALL[usize::from(first) % SrtpSuite::ALL.len()];
    let sources = [
        addr("10.0.0.1:4000"),
        addr("10.0.0.1:4001"),
        addr("10.0.0.2:5000"),
        addr("10.0.0.2:5001"),
        addr("10.0.0.3:4000"),
        addr("10.0.0.4:4000"),
        addr("192.0.2.9:7777"),
        addr("[2001:db8::1]:6000"),
    ];
    let epoch = Instant::now();
    let mut now = epoch;
    let setup = || {
        let mut t = RelayTable::new(8, 8, epoch);
        let mut a = Leg::new(0, 0, None);
        a.set_remote(sources[0], None);
        a.srtp_in = Some(ctx(suite, 1));
        a.srtp_out = Some(ctx(suite, 2));
        let b = Leg::new(0, 1, Some(2));
        let (a, b) = (t.insert(a).unwrap(), t.insert(b).unwrap());
        t.pair(a, b);
        let mut c = Leg::new(1, 3, Some(4));
        c.set_remote(sources[4], None);
        let mut d = Leg::new(1, 3, Some(4));
        d.set_remote(sources[5], None);
        d.on_mismatch = OnMismatch::Drop;
        let (c, d) = (t.insert(c).unwrap(), t.insert(d).unwrap());
        t.pair(c, d);
        (t, a, b, c, d)
    };
    let (mut t, a, b, c, d) = setup();
    let (mut twin, ..) = setup();
    let macs = MacBatch::new();
    // What A sends with, and what A receives with.
    let mut a_tx = ctx(suite, 1);
    let mut a_rx = ctx(suite, 2);

    for _ in 0..DATAGRAMS_MAX {
        let [op, dt, lo, hi, tail @ ..] = rest else {
            break;
        };
        now += Duration::from_millis(u64::from(*dt));
        let want = usize::from(u16::from_le_bytes([*lo, *hi])) % (BUF_LEN + 1);
        let n = want.min(tail.len());
        let (pkt, next) = tail.split_at(n);
        rest = next;

        let sock = u32::from(op & 0x0f);
        if sock == 15 {
            t.set_muxed(b);
            twin.set_muxed(b);
            continue;
        }
        let src = sources[usize::from(op >> 4 & 7)];
        let mut buf = [0u8; BUF_LEN];
        buf[..n].copy_from_slice(pkt);
        let mut len = n;
        let mut protected = false;
        if op & 0x80 != 0 && sock == 0 {
            let r = match classify(pkt) {
                PacketKind::Rtcp => a_tx.protect_rtcp(&mut buf, len),
                _ => a_tx.protect_rtp(&mut buf, len),
            };
            if let Ok(m) = r {
                len = m;
                protected = true;
            }
        }
        let mut buf2 = buf;
        let mut len2 = len;
        let v = t.forward(now, sock, src, &mut buf, &mut len);
        // The twin, the way a shard batches: two lanes so SIMD runs.
        let mut tags = [[0u8; 20]; 2];
        let pre = twin.auth_input(sock, src, &buf2[..len2]).map(|inp| {
            macs.run(&[inp, inp], &mut tags);
            PreTag {
                key: *inp.key,
                roc: inp.roc,
                tag: tags[0],
            }
        });
        let mut deferred = None;
        let v2 = twin.forward_with(
            now,
            sock,
            src,
            &mut buf2,
            &mut len2,
            pre.as_ref(),
            Some(&mut deferred),
        );
        if let Some(dt) = deferred {
            let inp = MacInput {
                key: &dt.key,
                msg: &buf2[..dt.msg_len],
                roc: dt.roc,
            };
            macs.run(&[inp, inp], &mut tags);
            buf2[dt.msg_len..dt.msg_len + dt.tag_len].copy_from_slice(&tags[1][..dt.tag_len]);
        }
        assert_eq!(v, v2, "batched verdict ({suite:?})");
        if matches!(v, Verdict::Send { .. }) {
            assert_eq!(&buf[..len], &buf2[..len2], "batched bytes ({suite:?})");
        }
        assert_eq!(t.counters.drops, twin.counters.drops);
        if let Verdict::Send { sock: out, .. } = v {
            assert!(len <= BUF_LEN);
            assert!((out as usize) < t.sockets_max());
            if protected && out == t.leg(b).rtp_sock || protected && Some(out) == t.leg(b).rtcp_sock
            {
                assert_eq!(&buf[..len], pkt, "A -> B plaintext ({suite:?})");
            }
            if out == t.leg(a).rtp_sock && (sock == 1 || sock == 2) {
                // B -> A: what the relay protected, A can unprotect.
                let r = if matches!(classify(pkt), PacketKind::Rtcp) || sock == 2 {
                    a_rx.unprotect_rtcp(&mut buf, len)
                } else {
                    a_rx.unprotect_rtp(&mut buf, len)
                };
                let m = r.unwrap_or_else(|e| panic!("B -> A not unprotectable ({suite:?}): {e:?}"));
                assert_eq!(&buf[..m], pkt, "B -> A plaintext ({suite:?})");
            }
        }
        let drops: u64 = t.counters.drops.iter().sum();
        assert_eq!(t.counters.rx, t.counters.forwarded + drops);
    }
    let _ = (LegId(0), c, d);
});
