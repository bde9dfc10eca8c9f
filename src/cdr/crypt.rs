//! Phone numbers at rest (F-C3): sealed with an AEAD, found through a
//! keyed hash.
//!
//! # Sealed field
//!
//! Each number is sealed on its own with a fresh random 96-bit nonce:
//!
//! ```text
//! [cipher: 1 byte][key id length: 1 byte][key id][nonce: 12 bytes][ciphertext + 16-byte tag]
//! ```
//!
//! `cipher` is 1 for AES-256-GCM, 2 for ChaCha20-Poly1305. The key id
//! travels with the ciphertext, so after a rotation (a new `active_key`,
//! the old key still listed in `[cdr] keys`) old records open with their
//! own key and nothing is rewritten. The associated data binds the field
//! to its record (`field` name and call id): a ciphertext copied into
//! another row or column fails to open, as does any flipped bit.
//!
//! Random nonces: with 2^32 records per key the chance of a nonce
//! collision stays under 2^-32 (NIST SP 800-38D §8.3); rotate keys well
//! before billions of records.
//!
//! # Search
//!
//! [`CdrKeys::search_hash`] is HMAC-SHA256 under `search_key_hex` of the
//! [`normalize_number`]ed number: equal numbers give equal hashes whatever
//! the URI around them, and without the key the hash reveals nothing
//! (a bare hash of a phone number would be reversed by enumeration).
//! Rotating the search key means rehashing every row; it is not done here.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::CdrConfig;

/// Bytes of an AEAD nonce (both ciphers).
pub const NONCE_LEN: usize = 12;

/// Bytes of an AEAD tag (both ciphers).
pub const TAG_LEN: usize = 16;

/// Longest key id (it is stored in one length byte; the config allows 32).
pub const KEY_ID_LEN_MAX: usize = 32;

/// Keys a configuration may list at most: rotation keeps a handful.
pub const KEYS_MAX: usize = 64;

/// The AEAD a field is sealed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM (default; fast with AES-NI).
    Aes256Gcm,
    /// ChaCha20-Poly1305 (hosts without AES instructions).
    ChaCha20Poly1305,
}

impl Cipher {
    fn tag(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
            Cipher::ChaCha20Poly1305 => 2,
        }
    }

    fn from_tag(t: u8) -> Option<Cipher> {
        match t {
            1 => Some(Cipher::Aes256Gcm),
            2 => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// From the config string (`cdr.cipher`).
    pub fn from_config(s: &str) -> Option<Cipher> {
        match s {
            "aes-256-gcm" => Some(Cipher::Aes256Gcm),
            "chacha20-poly1305" => Some(Cipher::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// Why keys could not be loaded or a field could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptError {
    /// A configuration problem; names the key.
    #[error("invalid `{key}`: {reason}")]
    Config {
        /// Dotted config key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The sealed field is too short or has an unknown cipher.
    #[error("malformed sealed field")]
    Malformed,
    /// The field names a key id that is not configured.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// Authentication failed: wrong key, tampered data, or a field moved
    /// to another record.
    #[error("sealed field failed authentication")]
    Tampered,
}

struct Key {
    id: String,
    bytes: [u8; 32],
}

/// The number keys of a store: every configured key by id, the active one,
/// the cipher for new fields, and the search key.
pub struct CdrKeys {
    keys: Vec<Key>,
    active: usize,
    cipher: Cipher,
    search: [u8; 32],
}

impl fmt::Debug for CdrKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key bytes.
        f.debug_struct("CdrKeys")
            .field("ids", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .field("active", &self.keys[self.active].id)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl CdrKeys {
    /// Keys from raw parts: `(id, key)` pairs, the active id, the cipher
    /// of new fields and the search key.
    pub fn new(
        keys: &[(&str, [u8; 32])],
        active: &str,
        cipher: Cipher,
        search: [u8; 32],
    ) -> Result<CdrKeys, CryptError> {
        let err = |key: &str, reason: &str| CryptError::Config {
            key: key.into(),
            reason: reason.into(),
        };
        if keys.is_empty() {
            return Err(err(
                "cdr.keys",
                "no key configured: numbers cannot be stored in clear",
            ));
        }
        if keys.len() > KEYS_MAX {
            return Err(err("cdr.keys", "more than 64 keys"));
        }
        let mut out: Vec<Key> = Vec::with_capacity(keys.len());
        for (id, bytes) in keys {
            if id.is_empty() || id.len() > KEY_ID_LEN_MAX {
                return Err(err("cdr.keys", "a key id must be 1..=32 bytes"));
            }
            if out.iter().any(|k| k.id == *id) {
                return Err(err("cdr.keys", "a key id is listed twice"));
            }
            out.push(Key {
                id: (*id).to_string(),
                bytes: *bytes,
            });
        }
        let active = out
            .iter()
            .position(|k| k.id == active)
            .ok_or_else(|| err("cdr.active_key", "not an id in cdr.keys"))?;
        Ok(CdrKeys {
            keys: out,
            active,
            cipher,
            search,
        })
    }

    /// Keys from `[cdr]`.
    pub fn from_config(c: &CdrConfig) -> Result<CdrKeys, CryptError> {
        let cipher = Cipher::from_config(&c.cipher).ok_or_else(|| CryptError::Config {
            key: "cdr.cipher".into(),
            reason: format!("{:?} is not aes-256-gcm or chacha20-poly1305", c.cipher),
        })?;
        let mut keys = Vec::with_capacity(c.keys.len());
        for (i, k) in c.keys.iter().enumerate() {
            let bytes = parse_hex32(&k.key_hex).ok_or_else(|| CryptError::Config {
                key: format!("cdr.keys[{i}].key_hex"),
                reason: "must be 64 hex digits".into(),
            })?;
            keys.push((k.id.as_str(), bytes));
        }
        let search = parse_hex32(&c.search_key_hex).ok_or_else(|| CryptError::Config {
            key: "cdr.search_key_hex".into(),
            reason: "must be 64 hex digits".into(),
        })?;
        CdrKeys::new(&keys, &c.active_key, cipher, search)
    }

    /// The id new fields are sealed with.
    pub fn active_id(&self) -> &str {
        &self.keys[self.active].id
    }

    fn aad(field: &str, record: &str) -> Vec<u8> {
        let mut a = Vec::with_capacity(16 + field.len() + record.len());
        a.extend_from_slice(b"kolokol-cdr/1\0");
        a.extend_from_slice(field.as_bytes());
        a.push(0);
        a.extend_from_slice(record.as_bytes());
        a
    }

    /// Seals `plain` as `field` of record `record` (its call id) with the
    /// active key and a nonce from `rng`.
    pub fn seal(&self, rng: &mut dyn RngCore, field: &str, record: &str, plain: &[u8]) -> Vec<u8> {
        let key = &self.keys[self.active];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let aad = CdrKeys::aad(field, record);
        let payload = Payload {
            msg: plain,
            aad: &aad,
        };
        let ct = match self.cipher {
            Cipher::Aes256Gcm => Aes256Gcm::new(&key.bytes.into()).encrypt(&nonce.into(), payload),
            Cipher::ChaCha20Poly1305 => {
                ChaCha20Poly1305::new(&key.bytes.into()).encrypt(&nonce.into(), payload)
            }
        };
        // Encryption fails only for messages beyond 2^36 bytes; numbers
        // are cut to NUMBER_LEN_MAX long before.
        let ct = ct.unwrap_or_default();
        assert!(key.id.len() <= KEY_ID_LEN_MAX);
        let mut out = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + ct.len());
        out.push(self.cipher.tag());
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a field sealed by [`CdrKeys::seal`] under any configured key.
    pub fn open(&self, field: &str, record: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptError> {
        let (&tag, rest) = sealed.split_first().ok_or(CryptError::Malformed)?;
        let cipher = Cipher::from_tag(tag).ok_or(CryptError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(CryptError::Malformed)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(CryptError::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let key = self
            .keys
            .iter()
            .find(|k| k.id.as_bytes() == id)
            .ok_or_else(|| CryptError::UnknownKey(String::from_utf8_lossy(id).into_owned()))?;
        let aad = CdrKeys::aad(field, record);
        let payload = Payload { msg: ct, aad: &aad };
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptError::Malformed)?;
        match cipher {
            Cipher::Aes256Gcm => Aes256Gcm::new(&key.bytes.into()).decrypt(&nonce.into(), payload),
            Cipher::ChaCha20Poly1305 => {
                ChaCha20Poly1305::new(&key.bytes.into()).decrypt(&nonce.into(), payload)
            }
        }
        .map_err(|_| CryptError::Tampered)
    }

    /// Opens a field into a string (numbers are UTF-8 when sealed).
    pub fn open_str(&self, field: &str, record: &str, sealed: &[u8]) -> Result<String, CryptError> {
        String::from_utf8(self.open(field, record, sealed)?).map_err(|_| CryptError::Malformed)
    }

    /// The search hash of a number: HMAC-SHA256 of [`normalize_number`].
    pub fn search_hash(&self, number: &str) -> [u8; 32] {
        // new_from_slice fails only for key lengths HMAC rejects; it takes
        // any length.
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.search) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(normalize_number(number).as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// A number as it is hashed for search: the user part of a `sip:`,
/// `sips:` or `tel:` URI (or a bare number), parameters dropped, visual
/// separators (space, `-`, `.`, `(`, `)`) removed; a leading `+` kept and
/// a leading `00` turned into `+`. Anything else is kept as it is, so two
/// different inputs never hash alike by accident.
pub fn normalize_number(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|x| x.strip_suffix('>'))
        .unwrap_or(s);
    let lower = s.get(..5).map(str::to_ascii_lowercase).unwrap_or_default();
    let s = if lower.starts_with("sips:") {
        &s[5..]
    } else if lower.starts_with("sip:") || lower.starts_with("tel:") {
        &s[4..]
    } else {
        s
    };
    let s = s.split(['@', ';']).next().unwrap_or("");
    let mut out: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    if let Some(rest) = out.strip_prefix("00") {
        out = format!("+{rest}");
    }
    out
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// Two keys (`k1` old, `k2` new) and a search key; `active` chooses.
    pub(crate) fn keys(active: &str, cipher: Cipher) -> CdrKeys {
        CdrKeys::new(
            &[("k1", [1u8; 32]), ("k2", [2u8; 32])],
            active,
            cipher,
            [9u8; 32],
        )
        .unwrap()
    }

    #[test]
    fn seal_open_both_ciphers_random_nonce() {
        let mut rng = StdRng::seed_from_u64(1);
        for cipher in [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305] {
            let k = keys("k1", cipher);
            let a = k.seal(&mut rng, "callee", "c-1", b"+4930123456");
            let b = k.seal(&mut rng, "callee", "c-1", b"+4930123456");
            assert_ne!(a, b, "a fresh nonce per field");
            assert_eq!(a[0], cipher.tag());
            assert_eq!(&a[2..4], b"k1");
            assert!(!a.windows(11).any(|w| w == b"+4930123456"));
            assert_eq!(k.open_str("callee", "c-1", &a).unwrap(), "+4930123456");
        }
    }

    #[test]
    fn rotated_key_still_opens_old_fields() {
        let mut rng = StdRng::seed_from_u64(2);
        let old = keys("k1", Cipher::Aes256Gcm);
        let sealed_old = old.seal(&mut rng, "caller", "c-1", b"+111");
        // Rotation: k2 active, k1 still listed, and the cipher switched.
        let new = keys("k2", Cipher::ChaCha20Poly1305);
        assert_eq!(new.active_id(), "k2");
        assert_eq!(new.open_str("caller", "c-1", &sealed_old).unwrap(), "+111");
        let sealed_new = new.seal(&mut rng, "caller", "c-2", b"+222");
        assert_eq!(&sealed_new[2..4], b"k2");
        // A store that dropped k1 names the missing id.
        let only_k2 =
            CdrKeys::new(&[("k2", [2u8; 32])], "k2", Cipher::Aes256Gcm, [9u8; 32]).unwrap();
        assert_eq!(
            only_k2.open("caller", "c-1", &sealed_old),
            Err(CryptError::UnknownKey("k1".into()))
        );
        assert_eq!(
            only_k2.open_str("caller", "c-2", &sealed_new).unwrap(),
            "+222"
        );
    }

    #[test]
    fn tampering_and_moved_fields_detected() {
        let mut rng = StdRng::seed_from_u64(3);
        let k = keys("k1", Cipher::Aes256Gcm);
        let s = k.seal(&mut rng, "callee", "c-1", b"+4930123456");
        for i in 0..s.len() {
            let mut t = s.clone();
            t[i] ^= 0x01;
            assert!(k.open("callee", "c-1", &t).is_err(), "bit flip at {i}");
        }
        assert_eq!(k.open("caller", "c-1", &s), Err(CryptError::Tampered));
        assert_eq!(k.open("callee", "c-2", &s), Err(CryptError::Tampered));
        for n in 0..s.len() {
            assert!(k.open("callee", "c-1", &s[..n]).is_err());
        }
        // A different key under the same id fails too.
        let other = CdrKeys::new(&[("k1", [7u8; 32])], "k1", Cipher::Aes256Gcm, [9u8; 32]).unwrap();
        assert_eq!(other.open("callee", "c-1", &s), Err(CryptError::Tampered));
    }

    #[test]
    fn search_hash_is_keyed_and_normalised() {
        let k = keys("k1", Cipher::Aes256Gcm);
        let h = k.search_hash("+49 30 123-456");
        assert_eq!(
            h,
            k.search_hash("sip:+4930123456@carrier.example;user=phone")
        );
        assert_eq!(h, k.search_hash("<tel:+49-30-123456>"));
        assert_eq!(h, k.search_hash("004930123456"));
        assert_ne!(h, k.search_hash("+4930123457"));
        let other = CdrKeys::new(&[("k1", [1u8; 32])], "k1", Cipher::Aes256Gcm, [8u8; 32]).unwrap();
        assert_ne!(h, other.search_hash("+4930123456"));
    }

    #[test]
    fn keys_from_config_name_the_bad_key() {
        let mut c = CdrConfig {
            keys: vec![crate::config::CdrKeyConfig {
                id: "k1".into(),
                key_hex: "11".repeat(32),
            }],
            active_key: "k1".into(),
            search_key_hex: "22".repeat(32),
            ..CdrConfig::default()
        };
        let k = CdrKeys::from_config(&c).unwrap();
        assert_eq!(k.active_id(), "k1");
        assert!(!format!("{k:?}").contains("11111111"));
        c.active_key = "k9".into();
        let e = CdrKeys::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("cdr.active_key"), "{e}");
        c.keys.clear();
        let e = CdrKeys::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("cdr.keys"), "{e}");
    }
}
