//! Destination numbers (SPEC F-P1): E.164 validation and normalisation, and
//! the `+digits` prefixes every policy list is written in.
//!
//! A number is accepted in international form only: `+`, then the country
//! code and national number, optionally with the visual separators of
//! ITU-T E.123 and RFC 3966 §5.1.1 (space, `-`, `.`, `(`, `)`), which are
//! dropped. National forms (`8 912 …`, `0 30 …`) and the `00` international
//! prefix are refused rather than guessed at: which one is meant depends on
//! the caller's country, and a wrong guess calls the wrong person.
//! Not here: number portability, ranges per country, or whether a number is
//! assigned at all.

use std::fmt;

/// Fewest digits after `+`. E.164 itself allows shorter numbers, but every
/// destination the portal calls (mobile and geographic numbers) has at
/// least 8 digits with its country code; shorter input is almost always a
/// truncated number. (The few countries with 7-digit international numbers,
/// e.g. Niue, are refused; lower this if that ever matters.)
pub const DIGITS_MIN: usize = 8;

/// Most digits after `+` (ITU-T E.164 §6: 15 digits in all).
pub const DIGITS_MAX: usize = 15;

/// Longest input looked at, separators included. Bounds the work spent on
/// one request; no sensibly written number is longer.
pub const INPUT_LEN_MAX: usize = 32;

/// A valid E.164 number in normalised form (`+` and 8..=15 digits, the
/// first not 0). Stored inline, so it is `Copy` and a cheap table key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164 {
    /// `+` and the digits; bytes past `len` are zero.
    buf: [u8; DIGITS_MAX + 1],
    /// Bytes of `buf` in use, `+` included.
    len: u8,
}

impl E164 {
    /// Validates and normalises `input`: `+`, then 8..=15 digits with no
    /// leading 0, visual separators allowed and removed, surrounding white
    /// space ignored. `None` for anything else.
    pub fn parse(input: &str) -> Option<E164> {
        if input.len() > INPUT_LEN_MAX {
            return None;
        }
        let rest = input.trim().strip_prefix('+')?;
        let mut buf = [0u8; DIGITS_MAX + 1];
        buf[0] = b'+';
        let mut len = 1;
        for b in rest.bytes() {
            match b {
                b'0'..=b'9' => {
                    if len == buf.len() {
                        return None;
                    }
                    buf[len] = b;
                    len += 1;
                }
                b' ' | b'-' | b'.' | b'(' | b')' => {}
                _ => return None,
            }
        }
        let digits = len - 1;
        if !(DIGITS_MIN..=DIGITS_MAX).contains(&digits) || buf[1] == b'0' {
            return None;
        }
        Some(E164 {
            buf,
            // At most DIGITS_MAX + 1 = 16.
            len: len as u8,
        })
    }

    /// The normalised form, e.g. `+79123456789`.
    pub fn as_str(&self) -> &str {
        // Only `+` and ASCII digits are ever written into `buf`.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).expect("ASCII")
    }

    /// Whether the number starts with `prefix` (a `+digits` prefix as
    /// [`is_prefix`] accepts; `+` matches every number).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.as_str().starts_with(prefix)
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.as_str())
    }
}

/// Whether `s` is a number prefix as the policy lists are written: `+`
/// then 0..=15 digits, the first not 0. `+` alone is every number.
pub fn is_prefix(s: &str) -> bool {
    let Some(d) = s.strip_prefix('+') else {
        return false;
    };
    d.len() <= DIGITS_MAX && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
}

/// A list of prefixes, matched by a linear scan (lists are bounded by
/// [`crate::config::POLICY_PREFIXES_MAX`], and a scan over a few hundred
/// short strings costs less than the request that asks).
#[derive(Clone, Debug, Default)]
pub(crate) struct Prefixes {
    list: Vec<Box<str>>,
}

impl Prefixes {
    /// The prefixes of `list` that [`is_prefix`] accepts; the others (which
    /// a validated config does not have) are left out.
    pub(crate) fn new(list: &[String]) -> Self {
        Prefixes {
            list: list
                .iter()
                .filter(|p| is_prefix(p))
                .map(|p| p.as_str().into())
                .collect(),
        }
    }

    /// Whether no prefix is listed.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether some listed prefix matches `n`.
    pub(crate) fn matches(&self, n: &E164) -> bool {
        self.list.iter().any(|p| n.has_prefix(p))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn parse_normalises_separators() {
        let n = E164::parse(" +7 (912) 345-67.89 ").unwrap();
        assert_eq!(n.as_str(), "+79123456789");
        assert_eq!(n.to_string(), "+79123456789");
        assert_eq!(E164::parse("+79123456789"), Some(n));
        assert_eq!(E164::parse("+12345678").unwrap().as_str(), "+12345678");
        assert_eq!(
            E164::parse("+123456789012345").unwrap().as_str(),
            "+123456789012345"
        );
    }

    #[test]
    fn parse_refuses_what_is_not_e164() {
        for s in [
            "",
            "+",
            "79123456789",
            "0079123456789",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+7912345678a",
            "+7912345678\u{0}",
            "+79123456789;ext=1",
            "++79123456789",
            "tel:+79123456789",
            "+7\t9123456789",
            "+７9123456789",
            "+7 9 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7",
        ] {
            assert_eq!(E164::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(is_prefix("+"));
        assert!(is_prefix("+49"));
        assert!(!is_prefix("49"));
        assert!(!is_prefix("+049"));
        assert!(!is_prefix("+4 9"));
        assert!(!is_prefix("+1234567890123456"));
        let p = Prefixes::new(&["+49".into(), "+7".into()]);
        assert!(p.matches(&E164::parse("+4930123456").unwrap()));
        assert!(p.matches(&E164::parse("+79123456789").unwrap()));
        assert!(!p.matches(&E164::parse("+4412345678").unwrap()));
        assert!(Prefixes::new(&[]).is_empty());
        assert!(Prefixes::new(&["+".into()]).matches(&E164::parse("+4412345678").unwrap()));
    }
}
