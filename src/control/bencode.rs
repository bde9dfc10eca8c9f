//! Bencode (the encoding of the rtpengine "ng" control protocol).
//!
//! Values are integers, byte strings, lists and dictionaries. The decoder is
//! strict about structure but bounded: nesting depth and element counts are
//! capped so that a hostile datagram cannot make the control plane allocate
//! without limit or recurse off the stack. Dictionary keys are kept sorted
//! (a `BTreeMap`), which is what the encoding requires on output.
//!
//! This is control-plane code (one message per call set-up), so the decoded
//! tree owns its bytes; nothing here is on the packet path.

use std::collections::BTreeMap;

/// Deepest nesting of lists/dictionaries accepted. ng messages nest at most
/// three deep (`flags` lists inside the top dictionary, `tags` in `query`).
pub const DEPTH_MAX: usize = 32;

/// Most elements accepted in one list or dictionary. An ng message has a few
/// dozen keys at most; a `list` reply can hold many call-ids but we only
/// decode requests and replies of bounded size.
pub const ELEMENTS_MAX: usize = 65_536;

/// A decoded bencode value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `i<digits>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`, keys sorted.
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why a byte string is not valid bencode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BencodeError {
    /// The input ended inside a value.
    #[error("bencode truncated at offset {0}")]
    Truncated(usize),
    /// A byte that cannot start or continue a value here.
    #[error("unexpected byte 0x{byte:02x} at offset {offset}")]
    Unexpected {
        /// The offending byte.
        byte: u8,
        /// Where it was.
        offset: usize,
    },
    /// An integer or length that is malformed or out of range.
    #[error("bad number at offset {0}")]
    BadNumber(usize),
    /// Nesting deeper than [`DEPTH_MAX`] or more than [`ELEMENTS_MAX`] items.
    #[error("bencode too deep or too large")]
    TooLarge,
    /// A dictionary key that is not a byte string.
    #[error("dictionary key at offset {0} is not a string")]
    KeyNotString(usize),
    /// Bytes left after the top-level value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Decode exactly one value that spans the whole input.
pub fn decode(input: &[u8]) -> Result<Value, BencodeError> {
    let (v, used) = decode_prefix(input)?;
    if used != input.len() {
        return Err(BencodeError::Trailing(input.len() - used));
    }
    Ok(v)
}

/// Decode one value from the start of `input`; returns it and the bytes used.
pub fn decode_prefix(input: &[u8]) -> Result<(Value, usize), BencodeError> {
    let mut d = Decoder { input, pos: 0 };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::Truncated(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        if depth > DEPTH_MAX {
            return Err(BencodeError::TooLarge);
        }
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.number(b'e')?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.bytes()?.to_vec())),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    if items.len() >= ELEMENTS_MAX {
                        return Err(BencodeError::TooLarge);
                    }
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut map = BTreeMap::new();
                while self.peek()? != b'e' {
                    if map.len() >= ELEMENTS_MAX {
                        return Err(BencodeError::TooLarge);
                    }
                    if !self.peek()?.is_ascii_digit() {
                        return Err(BencodeError::KeyNotString(self.pos));
                    }
                    let k = self.bytes()?.to_vec();
                    let v = self.value(depth + 1)?;
                    // Later duplicates win, as in rtpengine's own decoder.
                    map.insert(k, v);
                }
                self.pos += 1;
                Ok(Value::Dict(map))
            }
            byte => Err(BencodeError::Unexpected {
                byte,
                offset: self.pos,
            }),
        }
    }

    /// Parse a signed decimal terminated by `end`, consuming the terminator.
    fn number(&mut self, end: u8) -> Result<i64, BencodeError> {
        let start = self.pos;
        let rest = &self.input[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == end) else {
            return Err(BencodeError::Truncated(self.input.len()));
        };
        let text = &rest[..len];
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(BencodeError::BadNumber(start));
        }
        // Both sides checked to be ASCII digits with an optional sign.
        let s = std::str::from_utf8(text).map_err(|_| BencodeError::BadNumber(start))?;
        let n: i64 = s.parse().map_err(|_| BencodeError::BadNumber(start))?;
        self.pos += len + 1;
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&[u8], BencodeError> {
        let start = self.pos;
        let n = self.number(b':')?;
        let n = usize::try_from(n).map_err(|_| BencodeError::BadNumber(start))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or(BencodeError::Truncated(self.input.len()))?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

impl Value {
    /// An empty dictionary, for building replies.
    pub fn dict() -> Value {
        Value::Dict(BTreeMap::new())
    }

    /// Append the encoding of `self` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => {
                out.push(b'i');
                out.extend_from_slice(n.to_string().as_bytes());
                out.push(b'e');
            }
            Value::Bytes(b) => encode_bytes(b, out),
            Value::List(items) => {
                out.push(b'l');
                for i in items {
                    i.encode(out);
                }
                out.push(b'e');
            }
            Value::Dict(map) => {
                out.push(b'd');
                for (k, v) in map {
                    encode_bytes(k, out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// The encoding as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Insert into a dictionary (no-op on other kinds, which is a programmer
    /// error caught by the assertion in debug builds).
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        debug_assert!(matches!(self, Value::Dict(_)), "insert on a non-dict");
        if let Value::Dict(map) = self {
            map.insert(key.as_bytes().to_vec(), value.into());
        }
    }

    /// Look a key up in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(map) => map.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The bytes of a string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A string value as UTF-8 text.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// An integer value; ng drivers sometimes send numbers as strings, so a
    /// decimal string is accepted too.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The entries of a dictionary.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Bytes(s.into_bytes())
    }
}

impl From<&[u8]> for Value {
    fn from(s: &[u8]) -> Value {
        Value::Bytes(s.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(s: Vec<u8>) -> Value {
        Value::Bytes(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Value {
        Value::List(l)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn round_trip_ng_offer() {
        let raw = b"d7:call-id3:abc7:command5:offer5:flagsl7:trust-ae3:sdp5:v=0\r\ne";
        let v = decode(raw).unwrap();
        assert_eq!(v.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(
            v.get("flags").and_then(Value::as_list).map(|l| l.len()),
            Some(1)
        );
        assert_eq!(v.to_bytes(), raw.to_vec());
    }

    #[test]
    fn integers() {
        assert_eq!(decode(b"i-42e").unwrap(), Value::Int(-42));
        assert_eq!(decode(b"i0e").unwrap(), Value::Int(0));
        assert!(decode(b"ie").is_err());
        assert!(decode(b"i-e").is_err());
        assert!(decode(b"i99999999999999999999e").is_err());
        assert!(decode(b"i12").is_err());
    }

    #[test]
    fn malformed_inputs_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"d",
            b"l",
            b"5:abc",
            b"99999999999999999999:x",
            b"-1:x",
            b"di1ei2ee",
            b"d3:abce",
            b"x",
            b"i1ei2e",
            b"d3:abc",
        ];
        for c in cases {
            assert!(decode(c).is_err(), "{:?} should not decode", c);
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut deep = vec![b'l'; DEPTH_MAX + 2];
        deep.extend(vec![b'e'; DEPTH_MAX + 2]);
        assert_eq!(decode(&deep), Err(BencodeError::TooLarge));
        let mut ok = vec![b'l'; 4];
        ok.extend(vec![b'e'; 4]);
        assert!(decode(&ok).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and single-byte mutation
        // of a real message.
        let raw = b"d7:call-id3:abc7:command5:offer5:flagsl7:trust-ae3:sdp5:v=0\r\ne".to_vec();
        for cut in 0..raw.len() {
            let _ = decode(&raw[..cut]);
        }
        for i in 0..raw.len() {
            for b in [0u8, b'e', b'd', b'l', b'i', b':', b'9', b'-', 0xff] {
                let mut m = raw.clone();
                m[i] = b;
                let _ = decode(&m);
            }
        }
    }
}
