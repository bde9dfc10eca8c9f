//! SDES key exchange (RFC 4568): the `a=crypto` attribute.
//!
//! `a=crypto:<tag> <crypto-suite> inline:<key||salt base64>[|<lifetime>][|<MKI>:<length>] [<session params>]`
//!
//! Only one key per attribute and no MKI are supported. A lifetime is kept
//! as given; an MKI, several `inline:` keys or unknown session parameters
//! are a clear error, so the offer falls back to another attribute or is
//! refused. Keys are checked for the suite's exact length by the caller,
//! which knows the suites.

use std::fmt::Write as _;

/// Why an `a=crypto` line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoAttrError {
    /// Not `<tag> <suite> <key-params>`.
    #[error("malformed a=crypto")]
    Malformed,
    /// The tag is not a 1–9 digit decimal.
    #[error("bad a=crypto tag")]
    Tag,
    /// The key method is not `inline:`.
    #[error("a=crypto key method is not inline")]
    KeyMethod,
    /// The key is not valid base64.
    #[error("a=crypto key is not base64")]
    Base64,
    /// A lifetime that is neither a number nor `2^n`.
    #[error("bad a=crypto lifetime")]
    Lifetime,
    /// Master key identifiers are not supported.
    #[error("a=crypto MKI is not supported")]
    Mki,
    /// More than one key in the attribute.
    #[error("a=crypto with several keys is not supported")]
    SeveralKeys,
    /// Session parameters (UNENCRYPTED_SRTP, KDR, ...) are not supported.
    #[error("a=crypto session parameter {0:?} is not supported")]
    SessionParam(String),
}

/// One parsed `a=crypto` attribute.
#[derive(Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    /// The tag that the answer repeats.
    pub tag: u32,
    /// Suite name, e.g. `AES_CM_128_HMAC_SHA1_80`.
    pub suite: String,
    /// Master key followed by master salt.
    pub key_salt: Vec<u8>,
    /// Key lifetime in packets, if given.
    pub lifetime: Option<u64>,
}

impl std::fmt::Debug for CryptoAttr {
    // The key never goes into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoAttr")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .field("key_salt", &format_args!("<{} bytes>", self.key_salt.len()))
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl CryptoAttr {
    /// Parse the value after `a=crypto:`.
    pub fn parse(value: &str) -> Result<CryptoAttr, CryptoAttrError> {
        let mut it = value.split_ascii_whitespace();
        let tag = it.next().ok_or(CryptoAttrError::Malformed)?;
        if tag.is_empty() || tag.len() > 9 || !tag.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CryptoAttrError::Tag);
        }
        let tag: u32 = tag.parse().map_err(|_| CryptoAttrError::Tag)?;
        let suite = it.next().ok_or(CryptoAttrError::Malformed)?.to_string();
        let params = it.next().ok_or(CryptoAttrError::Malformed)?;
        if let Some(p) = it.next() {
            return Err(CryptoAttrError::SessionParam(p.to_string()));
        }
        if params.contains(';') {
            return Err(CryptoAttrError::SeveralKeys);
        }
        let inline = params
            .strip_prefix("inline:")
            .ok_or(CryptoAttrError::KeyMethod)?;
        let mut parts = inline.split('|');
        let key_salt = base64_decode(parts.next().unwrap_or(""))?;
        let mut lifetime = None;
        for p in parts {
            if p.contains(':') {
                return Err(CryptoAttrError::Mki);
            }
            if lifetime.is_some() {
                return Err(CryptoAttrError::Malformed);
            }
            lifetime = Some(parse_lifetime(p)?);
        }
        Ok(CryptoAttr {
            tag,
            suite,
            key_salt,
            lifetime,
        })
    }

    /// The attribute line, `a=crypto:...`, without line end.
    pub fn to_line(&self) -> String {
        let mut s = format!(
            "a=crypto:{} {} inline:{}",
            self.tag,
            self.suite,
            base64_encode(&self.key_salt)
        );
        if let Some(l) = self.lifetime {
            if l.is_power_of_two() {
                let _ = write!(s, "|2^{}", l.trailing_zeros());
            } else {
                let _ = write!(s, "|{l}");
            }
        }
        s
    }
}

fn parse_lifetime(p: &str) -> Result<u64, CryptoAttrError> {
    if let Some(exp) = p.strip_prefix("2^") {
        let e: u32 = exp.parse().map_err(|_| CryptoAttrError::Lifetime)?;
        if e > 63 {
            return Err(CryptoAttrError::Lifetime);
        }
        return Ok(1u64 << e);
    }
    p.parse().map_err(|_| CryptoAttrError::Lifetime)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64; padding optional, nothing else tolerated.
pub fn base64_decode(s: &str) -> Result<Vec<u8>, CryptoAttrError> {
    let s = s.trim_end_matches('=');
    if s.len() % 4 == 1 || s.len() > 4096 {
        return Err(CryptoAttrError::Base64);
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(CryptoAttrError::Base64),
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rfc4568_example() {
        // RFC 4568 section 9.1's offer.
        let a = CryptoAttr::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        )
        .unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.suite, "AES_CM_128_HMAC_SHA1_80");
        assert_eq!(a.key_salt.len(), 30);
        assert_eq!(a.lifetime, Some(1 << 20));
        assert_eq!(
            a.to_line(),
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20"
        );
        assert!(!format!("{a:?}").contains("PS1u"), "keys stay out of logs");
    }

    #[test]
    fn rejects_what_we_do_not_support() {
        let key = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";
        let p = |s: &str| CryptoAttr::parse(s);
        assert_eq!(
            p(&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20|1:4")),
            Err(CryptoAttrError::Mki)
        );
        assert_eq!(
            p(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{key};inline:{key}"
            )),
            Err(CryptoAttrError::SeveralKeys)
        );
        assert!(matches!(
            p(&format!(
                "1 AES_CM_128_HMAC_SHA1_80 inline:{key} UNENCRYPTED_SRTP"
            )),
            Err(CryptoAttrError::SessionParam(_))
        ));
        assert_eq!(p("x AES inline:AAAA"), Err(CryptoAttrError::Tag));
        assert_eq!(p("1 AES uri:AAAA"), Err(CryptoAttrError::KeyMethod));
        assert_eq!(p("1 AES inline:A*AA"), Err(CryptoAttrError::Base64));
        assert_eq!(p("1 AES inline:AAAA|2^99"), Err(CryptoAttrError::Lifetime));
        assert_eq!(p("1"), Err(CryptoAttrError::Malformed));
        for cut in 0..key.len() + 30 {
            let s = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{key}|2^20");
            let _ = p(&s[..cut.min(s.len())]);
        }
    }

    #[test]
    fn base64_round_trip() {
        for n in 0..70u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
    }
}
