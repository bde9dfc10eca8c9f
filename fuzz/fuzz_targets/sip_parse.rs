//! SIP message parse: arbitrary bytes into `SipMessage::parse` must not
//! panic, and a refusal must say whether to answer (400/501/505/513) or
//! drop. What parses has every accessor called; it re-emits (every header
//! kept) to a message that parses back with the same start line, headers
//! and body; and `response_to` writes a response that parses and carries
//! the request's Call-ID, CSeq, From tag and Via values.
#![no_main]

use kolokol::sip::build::{reemit, response_to, HeaderAction, Reemit};
use kolokol::sip::msg::{should_discard_response, HEADERS_MAX, MESSAGE_SIZE_MAX};
use kolokol::sip::{HeaderName, SipMessage, Uri};
use libfuzzer_sys::fuzz_target;

fn touch(m: &SipMessage<'_>) {
    let _ = (m.raw(), m.start_line_raw(), m.start_line(), m.is_request());
    let _ = (m.method(), m.status_code(), m.reason(), m.body());
    let _ = (m.call_id(), m.cseq(), m.max_forwards(), m.content_length());
    let _ = (m.expires(), m.content_type(), m.top_via());
    if let Some(Uri::Sip(u)) = m.request_uri() {
        let _ = (u.host_ip(), u.user_unescaped(), u.transport(), u.lr());
        let _ = u.params.iter().count();
    }
    for na in [m.from(), m.to()] {
        let _ = (na.tag(), na.params.iter().count(), na.uri.as_str());
    }
    assert_eq!(m.via().count(), m.list(HeaderName::Via).count());
    for v in m.via() {
        let _ = (v.sent_by(), v.branch, v.rport, v.params.iter().count());
    }
    let _ = m.contact_is_wildcard();
    let _ = m.contact().chain(m.route()).chain(m.record_route()).count();
    let _ = m.require().chain(m.supported()).chain(m.proxy_require()).count();
    for h in m.headers() {
        let _ = (h.unfolded(), h.values().count(), h.name.as_str());
        assert_eq!(HeaderName::parse(h.raw_name), h.name);
    }
    let _ = should_discard_response(m);
}

fuzz_target!(|data: &[u8]| {
    let m = match SipMessage::parse(data) {
        Ok(m) => m,
        Err(e) => {
            assert_eq!(e.is_discard(), e.status().is_none());
            return;
        }
    };
    touch(&m);

    // Re-emit with every header kept: Content-Length moves to the end (or
    // is added), everything else comes back byte for byte.
    let mut out = Vec::new();
    reemit(&m, &Reemit::default(), |_| HeaderAction::Keep, &mut out)
        .expect("re-emitting a parsed message");
    let roomy = out.len() <= MESSAGE_SIZE_MAX && m.headers().len() < HEADERS_MAX;
    if roomy {
        let back = SipMessage::parse(&out).expect("re-emitted message parses");
        touch(&back);
        assert_eq!(back.start_line(), m.start_line());
        assert_eq!(back.body(), m.body());
        let keep = |h: &&kolokol::sip::Header<'_>| h.name != HeaderName::ContentLength;
        assert!(back.headers().iter().filter(keep).eq(m.headers().iter().filter(keep)));
    }

    if m.is_request() {
        let mut resp = Vec::new();
        response_to(&m, 500, "Server Error", Some("fz1"), &mut resp).expect("response_to");
        if resp.len() <= MESSAGE_SIZE_MAX {
            let r = SipMessage::parse(&resp).expect("response parses");
            assert_eq!(r.call_id(), m.call_id());
            assert_eq!(r.cseq(), m.cseq());
            assert_eq!(r.from().tag(), m.from().tag());
            assert!(r.via().eq(m.via()));
            assert!(r.to().tag().is_some());
        }
    }
});
