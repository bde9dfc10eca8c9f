//! SDES negotiation for the relay (RFC 4568): which suite each leg uses,
//! fresh keys for our side of every leg, and the SRTP contexts the shard
//! installs.
//!
//! Leg A (the offerer) may speak SRTP (`RTP/SAVP`, `RTP/SAVPF` with
//! `a=crypto`); leg B speaks whatever the `transport-protocol` flag asks
//! for, or what A speaks. For an SRTP leg A we accept A's first usable
//! `a=crypto` line and answer with the same tag and suite and a key of our
//! own. For an SRTP leg B we offer one `a=crypto` line per suite (A's
//! suites in A's order when A is SRTP, else [`DEFAULT_SUITES`]), each with
//! its own fresh key, and install the one B's answer picks. Keys come from
//! the operating system's CSPRNG, one per leg and direction, never reused.
//!
//! The ng flags `SDES-no-<suite>` and `SDES-only-<suite>` (or an `SDES`
//! list of `no-<suite>` / `only-<suite>`) restrict the suites offered and
//! accepted.

use rand::RngCore;

use crate::media::srtp::{SrtpContext, SrtpSuite};
use crate::sdp::crypto::CryptoAttr;
use crate::sdp::Media;
use crate::shard::LegCrypto;

/// Suites offered to an SRTP leg B when A gives none to follow, strongest
/// interoperable first (AES_CM_128_HMAC_SHA1_80 is what every trunk has).
pub const DEFAULT_SUITES: [SrtpSuite; 6] = [
    SrtpSuite::AesCm128HmacSha1_80,
    SrtpSuite::AesCm128HmacSha1_32,
    SrtpSuite::AeadAes128Gcm,
    SrtpSuite::AeadAes256Gcm,
    SrtpSuite::Aes256CmHmacSha1_80,
    SrtpSuite::Aes256CmHmacSha1_32,
];

/// Whether an SDP transport protocol is SRTP keyed by SDES.
pub fn is_sdes_proto(proto: &str) -> bool {
    matches!(proto, "RTP/SAVP" | "RTP/SAVPF")
}

/// Suite restrictions from the ng flags.
#[derive(Clone, Debug, Default)]
pub struct SdesPolicy {
    no: Vec<String>,
    only: Vec<String>,
}

impl SdesPolicy {
    /// From `SDES-no-X`/`SDES-only-X` flags and `SDES: [no-X, only-X]`.
    pub fn from_flags<'a>(items: impl Iterator<Item = &'a str>) -> SdesPolicy {
        let mut p = SdesPolicy::default();
        for f in items {
            let f = f.strip_prefix("SDES-").unwrap_or(f);
            if let Some(s) = f.strip_prefix("no-") {
                p.no.push(s.to_string());
            } else if let Some(s) = f.strip_prefix("only-") {
                p.only.push(s.to_string());
            }
        }
        p
    }

    /// Whether the policy allows `suite`.
    pub fn allows(&self, suite: SrtpSuite) -> bool {
        let name = suite.sdes_name();
        !self.no.iter().any(|n| n == name)
            && (self.only.is_empty() || self.only.iter().any(|n| n == name))
    }
}

fn fresh_key(suite: SrtpSuite) -> Vec<u8> {
    let mut k = vec![0u8; suite.master_key_len() + suite.master_salt_len()];
    rand::rngs::OsRng.fill_bytes(&mut k);
    k
}

fn context(suite: SrtpSuite, key_salt: &[u8]) -> Result<Box<SrtpContext>, String> {
    let (key, salt) = key_salt.split_at(suite.master_key_len().min(key_salt.len()));
    SrtpContext::new(suite, key, salt)
        .map(Box::new)
        .map_err(|e| format!("SRTP key for {}: {e}", suite.sdes_name()))
}

/// A usable `a=crypto` of an SDP section: known suite, allowed, right key
/// length.
fn usable(m: &Media, policy: &SdesPolicy) -> Vec<(CryptoAttr, SrtpSuite)> {
    m.crypto()
        .filter_map(Result::ok)
        .filter_map(|a| {
            let suite = SrtpSuite::from_sdes_name(&a.suite)?;
            let len = suite.master_key_len() + suite.master_salt_len();
            (policy.allows(suite) && a.key_salt.len() == len).then_some((a, suite))
        })
        .collect()
}

/// Leg A offered SRTP: pick its first usable line. Returns the contexts
/// and the attribute for our answer to A (same tag and suite, our key).
pub fn accept_offer(m: &Media, policy: &SdesPolicy) -> Result<(LegCrypto, CryptoAttr), String> {
    let (theirs, suite) = usable(m, policy)
        .into_iter()
        .next()
        .ok_or("no usable a=crypto in the SRTP offer")?;
    let ours = fresh_key(suite);
    let crypto = LegCrypto {
        inbound: context(suite, &theirs.key_salt)?,
        outbound: context(suite, &ours)?,
    };
    let answer = CryptoAttr {
        tag: theirs.tag,
        suite: theirs.suite,
        key_salt: ours,
        lifetime: None,
    };
    Ok((crypto, answer))
}

/// The suites to offer leg B: A's usable suites in A's order if A is SRTP,
/// else the defaults; the policy applies either way.
pub fn offer_suites(a: &Media, a_is_srtp: bool, policy: &SdesPolicy) -> Vec<SrtpSuite> {
    let mut out: Vec<SrtpSuite> = if a_is_srtp {
        usable(a, policy).into_iter().map(|(_, s)| s).collect()
    } else {
        DEFAULT_SUITES
            .iter()
            .copied()
            .filter(|&s| policy.allows(s))
            .collect()
    };
    out.dedup();
    out
}

/// Our `a=crypto` lines toward leg B, a fresh key each, tags from 1.
pub fn make_offer(suites: &[SrtpSuite]) -> Vec<CryptoAttr> {
    suites
        .iter()
        .enumerate()
        .map(|(i, &s)| CryptoAttr {
            tag: i as u32 + 1,
            suite: s.sdes_name().to_string(),
            key_salt: fresh_key(s),
            lifetime: None,
        })
        .collect()
}

/// Leg B answered: find the line that matches one we offered (tag and
/// suite) and build B's contexts.
pub fn accept_answer(m: &Media, offered: &[CryptoAttr]) -> Result<LegCrypto, String> {
    for a in m.crypto().filter_map(Result::ok) {
        let Some(ours) = offered
            .iter()
            .find(|o| o.tag == a.tag && o.suite == a.suite)
        else {
            continue;
        };
        let Some(suite) = SrtpSuite::from_sdes_name(&a.suite) else {
            continue;
        };
        return Ok(LegCrypto {
            inbound: context(suite, &a.key_salt)?,
            outbound: context(suite, &ours.key_salt)?,
        });
    }
    Err("the answer accepts none of the offered a=crypto suites".into())
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::sdp::Sdp;

    fn media(extra: &str, proto: &str) -> Media {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 {proto} 0\r\n{extra}"
        );
        Sdp::parse(sdp.as_bytes()).unwrap().media.remove(0)
    }

    #[test]
    fn accepts_first_usable_offer_line() {
        let m = media(
            "a=crypto:1 FOO_BAR inline:AAAA\r\n\
             a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n\
             a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n",
            "RTP/SAVP",
        );
        let (_, ans) = accept_offer(&m, &SdesPolicy::default()).unwrap();
        assert_eq!(
            (ans.tag, ans.suite.as_str()),
            (2, "AES_CM_128_HMAC_SHA1_32")
        );
        assert_eq!(ans.key_salt.len(), 30);
        let no32 = SdesPolicy::from_flags(["SDES-no-AES_CM_128_HMAC_SHA1_32"].into_iter());
        let (_, ans) = accept_offer(&m, &no32).unwrap();
        assert_eq!(ans.tag, 3);
        let only = SdesPolicy::from_flags(["only-AEAD_AES_128_GCM"].into_iter());
        assert!(accept_offer(&m, &only).is_err());
    }

    #[test]
    fn offer_and_answer_round_trip() {
        let plain = media("", "RTP/AVP");
        let suites = offer_suites(&plain, false, &SdesPolicy::default());
        assert_eq!(suites, DEFAULT_SUITES.to_vec());
        let offered = make_offer(&suites);
        assert_eq!(offered.len(), 6);
        assert_ne!(offered[0].key_salt, offered[1].key_salt[..30].to_vec());
        // B picks tag 3 (AEAD_AES_128_GCM) with its own key.
        let b = media(
            "a=crypto:3 AEAD_AES_128_GCM inline:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==\r\n",
            "RTP/SAVP",
        );
        assert!(accept_answer(&b, &offered).is_ok());
        let wrong = media(
            "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n",
            "RTP/SAVP",
        );
        assert!(accept_answer(&wrong, &offered).is_err());
    }
}
