#!/usr/bin/env python3
"""Writes the seed corpora to fuzz/corpus/<target>/ (small, valid inputs).

Run from anywhere; scripts/fuzz.sh runs it before fuzzing. Deterministic:
the same files every time, named seed-*.
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def rtp(seq, pt=0, ssrc=0x1234, payload=160, cc=0, ext=None):
    b0 = 0x80 | cc | (0x10 if ext is not None else 0)
    h = bytes([b0, pt]) + struct.pack(">HII", seq, seq * 160, ssrc)
    h += b"".join(struct.pack(">I", 0x1000 + i) for i in range(cc))
    if ext is not None:
        h += struct.pack(">HH", 0xBEDE, len(ext) // 4) + ext
    return h + bytes((i ^ seq) & 0xFF for i in range(payload))


SR = bytes([0x80, 200, 0, 6, 0, 0, 0, 1]) + bytes([0, 0, 0, 1, 0, 0, 0, 0]) + bytes(12)
RR = bytes([0x81, 201, 0, 7, 0, 0, 0, 2]) + bytes(16) + struct.pack(">II", 0x00010000, 655)
STUN = bytes([0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42]) + bytes(12)

KEY30 = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
CRYPTO = [
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20",
    f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}",
    f"3 AES_256_CM_HMAC_SHA1_80 inline:{'A' * 62}==|1048576",
    f"4 AEAD_AES_128_GCM inline:{'B' * 38}==",
    f"5 AEAD_AES_256_GCM inline:{'C' * 58}",
    f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20|1:4",
]

OFFER = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=ice-ufrag:abcd\r\n"
    "a=candidate:1 1 UDP 1 10.0.0.1 4000 typ host\r\na=rtcp-mux\r\na=sendrecv\r\n"
)
SDPS = [
    OFFER,
    "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 8\r\n"
    "c=IN IP6 2001:db8::1\r\na=rtcp:5005\r\n",
    "v=0\no=- 2 2 IN IP4 192.0.2.1\ns=call\nc=IN IP4 192.0.2.1\nt=0 0\na=sendonly\n"
    "m=audio 6000 RTP/SAVP 9 0\na=rtpmap:9 G722/8000\n"
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}|2^20\n"
    "a=rtcp:6001 IN IP4 192.0.2.2\n"
    "m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\na=inactive\n",
]


def bstr(s):
    if isinstance(s, str):
        s = s.encode()
    return str(len(s)).encode() + b":" + s


def bdict(pairs):
    return b"d" + b"".join(bstr(k) + v for k, v in sorted(pairs)) + b"e"


BENCODE = [
    bdict([("command", bstr("ping"))]),
    bdict(
        [
            ("command", bstr("offer")),
            ("call-id", bstr("abc@host")),
            ("from-tag", bstr("ft1")),
            ("sdp", bstr(OFFER)),
            ("flags", b"l" + bstr("trust-address") + bstr("SDES-off") + b"e"),
            ("replace", b"l" + bstr("origin") + b"e"),
        ]
    ),
    bdict([("result", bstr("pong")), ("n", b"i-42e"), ("l", b"li1eli2eee")]),
]


def relay_records(recs):
    out = b""
    for op, dt, pkt in recs:
        out += bytes([op, dt]) + struct.pack("<H", len(pkt)) + pkt
    return out


def src(i):
    return i << 4


RELAY = [
    # AES_CM_128_HMAC_SHA1_80 (index 2): A sends protected RTP, B answers.
    bytes([2])
    + relay_records(
        [
            (0x80 | src(0) | 0, 20, rtp(1)),
            (src(2) | 1, 20, rtp(1, ssrc=9)),
            (0x80 | src(0) | 0, 20, SR),
            (src(3) | 2, 5, RR),
            (0x80 | src(0) | 0, 20, rtp(3)),
            (0x80 | src(0) | 0, 20, SR),
            (src(0) | 0, 1, rtp(2)),  # not protected: fails auth
            (src(4) | 3, 20, rtp(5, ssrc=3)),
            (src(5) | 3, 20, rtp(5, ssrc=4)),
            (src(6) | 3, 20, rtp(6, ssrc=4)),
            (src(1) | 4, 20, SR),
            (src(0) | 0, 1, STUN),
            (15, 0, b""),
            (src(2) | 1, 20, SR),
        ]
    ),
    # AEAD_AES_256_GCM (index 0).
    bytes([0])
    + relay_records(
        [(0x80 | src(0), 20, rtp(s)) for s in (65534, 65535, 0, 1)]
        + [(src(2) | 1, 20, rtp(s, ssrc=9)) for s in (7, 8)]
        + [(src(7) | 7, 0, rtp(1)), (src(7) | 9, 0, rtp(1))]
    ),
]

SRTP = []
for suite in range(6):
    SRTP.append(bytes([suite, 17]) + rtp(100 + suite, payload=20))
SRTP += [
    bytes([2, 3]) + rtp(7, cc=2, payload=8),
    bytes([4, 40]) + rtp(8, ext=b"\x10\xaa\x00\x00", payload=8),
    bytes([0, 5]) + SR,
    bytes([3, 9]) + RR,
    bytes([1, 0]) + rtp(9, payload=0),
]


SIP_INVITE = (
    "INVITE sip:+4930123456@trunk.example.net;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1a;rport\r\n"
    "v: SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK-2b;received=192.0.2.1;ttl=3\r\n"
    "Max-Forwards: 70\r\n"
    "m: <sip:gw@192.0.2.10:5060;transport=udp>;expires=60, \"A, B\" <sip:b@h>\r\n"
    "t: <sip:+4930123456@trunk.example.net;user=phone>\r\n"
    "f: \"Portal\" <sip:+4930999000@gw.example.org>;tag=8a1b2c3d\r\n"
    "i: 3c26700d7b5e4f1a9b8c@192.0.2.10\r\n"
    "CSeq: 1 INVITE\r\n"
    "Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>\r\n"
    "k: 100rel, timer\r\nRequire: timer\r\nExpires: 30\r\n"
    "X-Unknown:  kept ,, as is\r\n"
    f"c: application/sdp\r\nl: {len(OFFER)}\r\n\r\n" + OFFER
)
SIP = [
    SIP_INVITE,
    "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
    "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\n"
    "CSeq: 1 INVITE\r\nRecord-Route: <sip:rr;lr>\r\nContent-Length: 0\r\n\r\n",
    "REGISTER sips:example.com SIP/2.0\nVia: SIP/2.0/TLS h\nFrom: sip:a@b;tag=1\n"
    "To: sip:a@b\nCall-ID: r\nCSeq: 2 REGISTER\nContact: *\nExpires: 0\n\n",
]
TORTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "rfc4475")
for name in ["wsinv.dat", "intmeth.dat", "esc01.dat", "mpart01.dat", "bcast.dat", "badinv01.dat", "inv2543.dat"]:
    with open(os.path.join(TORTURE, name), "rb") as f:
        SIP.append(f.read())


def write(target, items):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = item.encode()
        with open(os.path.join(d, f"seed-{i:02}"), "wb") as f:
            f.write(item)


write("srtp_unprotect", SRTP)
write("sdp_crypto", CRYPTO)
write("sdp_parse", SDPS)
write("bencode", BENCODE)
write("relay_forward", RELAY)
write("rtp_parse", [rtp(1), rtp(2, cc=3, ext=b"\x10\xaa\x00\x00", payload=4), bytes([0xA0]) + (rtp(3, payload=3) + b"\x02")[1:], SR, RR + SR, STUN])
write("sip_parse", SIP)


def ep_dgram(msg, op=0, step=1):
    if isinstance(msg, str):
        msg = msg.encode()
    return bytes([op, step]) + struct.pack(">H", len(msg)) + msg


EP_INVITE = (
    "INVITE sip:bob@192.0.2.9 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-f1\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:a@192.0.2.1>;tag=fa\r\nTo: <sip:bob@192.0.2.9>\r\n"
    "Call-ID: fz@192.0.2.1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@192.0.2.1>\r\n"
    f"Content-Type: application/sdp\r\nContent-Length: {len(OFFER)}\r\n\r\n" + OFFER
)
EP_CANCEL = EP_INVITE.split("\r\n\r\n")[0].replace("INVITE sip", "CANCEL sip").replace(
    "1 INVITE", "1 CANCEL").replace("application/sdp", "text/plain").split("Content-Length")[0] + "Content-Length: 0\r\n\r\n"
EP_OPTIONS = SIP[1].replace("SIP/2.0 180 Ringing", "OPTIONS sip:x@192.0.2.9 SIP/2.0").replace("1 INVITE", "1 OPTIONS")
write("sip_endpoint", [
    ep_dgram(EP_INVITE) + bytes([4, 1]) + bytes([4 | (2 << 3), 1]) + bytes([7, 200]),
    ep_dgram(EP_INVITE) + bytes([4, 1]) + ep_dgram(EP_CANCEL),
    bytes([5, 1]) + ep_dgram(SIP[1].replace("z9hG4bK1", "z9hG4bK-1-00")) + bytes([6, 1]),
    ep_dgram(EP_OPTIONS) + ep_dgram(SIP_INVITE) + ep_dgram(SIP[2]),
])

# sip_stream: byte 0 % 8 = number of chunk-size bytes (chunk = size + 1),
# then the TCP byte stream.
STREAM = ("\r\n\r\n" + EP_INVITE + "\r\n" + EP_OPTIONS + "\r\n\r\n" + SIP[1]).encode()
write("sip_stream", [
    bytes([0]) + STREAM,
    bytes([3, 0, 6, 200]) + STREAM,
    bytes([1, 0]) + EP_CANCEL.encode() + b"\r\n",
    bytes([0]) + SIP[1].replace("Content-Length: 0", "l: 7").encode() + b"ab\r\n\r\ncd",
])
