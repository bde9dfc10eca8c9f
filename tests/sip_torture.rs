//! RFC 4475 torture messages: each file in `tests/data/rfc4475/` parsed
//! against the verdict in its `manifest.tsv` line (accept, reject:NNN,
//! reject-or-accept:NNN, discard), plus the specific facts RFC 4475 §3
//! says a parser must get right for some of them.

use std::path::PathBuf;

use kolokol::sip::msg::should_discard_response;
use kolokol::sip::{HeaderName, Method, SipMessage, Uri};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475")
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn manifest() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(dir().join("manifest.tsv")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<_> = l.split('\t').collect();
            assert!(cols.len() >= 4, "manifest line {l:?}");
            // Column 4 is "verdict; explanation".
            let verdict = cols[3].split(';').next().unwrap().trim().to_string();
            (cols[0].to_string(), verdict)
        })
        .collect()
}

#[test]
fn every_manifest_verdict_holds() {
    let lines = manifest();
    assert_eq!(lines.len(), 49, "manifest lines");
    let mut failures = Vec::new();
    for (file, verdict) in &lines {
        let bytes = load(file);
        let got = SipMessage::parse(&bytes);
        let ok = match verdict.split_once(':') {
            None if verdict == "accept" => got.is_ok(),
            None if verdict == "discard" => match &got {
                Err(e) => e.is_discard(),
                Ok(m) => !m.is_request() && should_discard_response(m),
            },
            Some(("reject", code)) => {
                let code: u16 = code.parse().unwrap();
                matches!(&got, Err(e) if e.status() == Some(code))
            }
            Some(("reject-or-accept", code)) => {
                let code: u16 = code.parse().unwrap();
                match &got {
                    Ok(_) => true,
                    Err(e) => e.status() == Some(code),
                }
            }
            _ => panic!("{file}: unknown verdict {verdict:?}"),
        };
        if !ok {
            failures.push(format!("{file}: want {verdict}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn parse<'a>(name: &str, bytes: &'a [u8]) -> SipMessage<'a> {
    SipMessage::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

#[test]
fn wsinv_reads_through_folding_and_odd_spacing() {
    let b = load("wsinv.dat");
    let m = parse("wsinv", &b);
    assert_eq!(m.method(), Some(Method::Invite));
    assert_eq!(m.to().tag(), Some("1918181833n"));
    assert_eq!(m.from().tag(), Some("98asjd8"));
    assert_eq!(m.from().display_name, Some(r#"J Rosenberg \\\""#));
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.cseq(), (9, Method::Invite));
    assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
    let vias: Vec<_> = m.via().collect();
    assert_eq!(vias.len(), 3);
    assert_eq!((vias[0].transport, vias[0].host), ("UDP", "192.0.2.2"));
    assert_eq!(vias[0].branch, Some("390skdjuw"));
    assert_eq!(vias[1].branch, Some("z9hG4bK9ikj8"));
    assert_eq!(vias[2].host, "192.168.255.111");
    assert_eq!(vias[2].branch, Some("z9hG4bK30239"));
    let c: Vec<_> = m.contact().collect();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].params.get("newparam"), Some(Some("newvalue")));
    assert_eq!(c[0].params.get("q"), Some(Some("0.33")));
    let nf = m.header(HeaderName::Other("newfangledheader")).unwrap();
    assert_eq!(nf.unfolded(), "newfangled value continued newfangled value");
    let odd = m
        .header(HeaderName::Other("UnknownHeaderWithUnusualValue"))
        .unwrap();
    assert_eq!(odd.value, ";;,,;;,;");
    assert_eq!(m.header(HeaderName::Subject).unwrap().value, "");
    assert_eq!(m.route().count(), 1);
    assert_eq!(m.body().len(), 150);
}

#[test]
fn escapes_and_unusual_tokens() {
    let b = load("esc01.dat");
    let m = parse("esc01", &b);
    let Some(Uri::Sip(u)) = m.request_uri() else {
        panic!()
    };
    assert_eq!(&*u.user_unescaped().unwrap(), b"sips:user@example.com");

    let b = load("escnull.dat");
    let m = parse("escnull", &b);
    let c: Vec<_> = m.contact().collect();
    assert_eq!(c.len(), 2);
    let users: Vec<_> = c
        .iter()
        .map(|n| {
            n.uri
                .as_sip()
                .unwrap()
                .user_unescaped()
                .unwrap()
                .into_owned()
        })
        .collect();
    assert_eq!(users, [b"\0".to_vec(), b"\0\0".to_vec()]);

    let b = load("esc02.dat");
    let m = parse("esc02", &b);
    assert_eq!(m.method(), Some(Method::Extension("RE%47IST%45R")));
    assert_eq!(m.contact().count(), 2, "C%6Fntact is not Contact");
    assert_eq!(m.from().display_name, Some("%Z%45"));

    let b = load("intmeth.dat");
    let m = parse("intmeth", &b);
    assert!(matches!(m.method(), Some(Method::Extension(_))));
    assert_eq!(m.call_id(), r#"intmeth.word%ZK-!.*_+'@word`~)(><:\/"][?}{"#);
    assert_eq!(m.from().tag(), Some("_token~1'+`*%!-."));

    let b = load("semiuri.dat");
    let m = parse("semiuri", &b);
    let u = m.request_uri().unwrap().as_sip().unwrap();
    assert_eq!(u.user, Some("user;par=u%40example.net"));
    assert_eq!(u.host, "example.com");
}

#[test]
fn framing_by_content_length() {
    let b = load("dblreq.dat");
    let m = parse("dblreq", &b);
    assert_eq!(m.method(), Some(Method::Register));
    assert_eq!(m.body(), b"");
    assert!(m.raw().len() < b.len());

    let b = load("mpart01.dat");
    let m = parse("mpart01", &b);
    assert_eq!(m.body().len(), 553);
    assert!(m.body().contains(&0));
    assert_eq!(m.top_via().rport, Some(None));

    let b = load("inv2543.dat");
    let m = parse("inv2543", &b);
    assert_eq!(m.content_length(), None);
    assert_eq!(m.max_forwards(), None);
    assert_eq!(m.top_via().branch, None);
    assert_eq!(m.from().tag(), None);
    assert!(!m.body().is_empty());
    assert_eq!(m.record_route().count(), 1);
}

#[test]
fn many_vias_transports_and_schemes() {
    let b = load("longreq.dat");
    let m = parse("longreq", &b);
    assert_eq!(m.via().count(), 34);
    let b = load("transports.dat");
    let m = parse("transports", &b);
    let t: Vec<_> = m.via().map(|v| v.transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    for f in ["unkscm.dat", "novelsc.dat"] {
        let b = load(f);
        let m = parse(f, &b);
        assert!(matches!(m.request_uri(), Some(Uri::Other(_))), "{f}");
    }
    let b = load("unksm2.dat");
    let m = parse("unksm2", &b);
    assert!(matches!(m.to().uri, Uri::Other(_)));
    assert!(matches!(m.from().uri, Uri::Other(_)));
    let b = load("cparam01.dat");
    let m = parse("cparam01", &b);
    let c = m.contact().next().unwrap();
    assert_eq!(c.params.get("unknownparam"), Some(None));
    let b = load("cparam02.dat");
    let m = parse("cparam02", &b);
    let c = m.contact().next().unwrap();
    assert!(c.params.is_empty());
    assert_eq!(
        c.uri.as_sip().unwrap().params.get("unknownparam"),
        Some(None)
    );
    let b = load("regescrt.dat");
    let m = parse("regescrt", &b);
    let c = m.contact().next().unwrap();
    assert_eq!(
        c.uri.as_sip().unwrap().headers,
        Some("Route=%3Csip:sip.example.com%3E")
    );
    let b = load("bext01.dat");
    let m = parse("bext01", &b);
    assert!(m.require().count() >= 1);
    assert!(m.proxy_require().count() >= 1);
    let b = load("zeromf.dat");
    assert_eq!(parse("zeromf", &b).max_forwards(), Some(0));
    let b = load("noreason.dat");
    let m = parse("noreason", &b);
    assert_eq!((m.status_code(), m.reason()), (Some(100), Some("")));
    let b = load("bcast.dat");
    let m = parse("bcast", &b);
    assert!(should_discard_response(&m));
}
