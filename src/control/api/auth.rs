//! OAuth 2.0 bearer tokens (RFC 6750) as JWTs (RFC 7519), verified against
//! the public keys of a JWKS file (RFC 7517).
//!
//! Only two JWS algorithms are accepted: RS256 (RSASSA-PKCS1-v1_5 with
//! SHA-256, RSA keys of 2048..=8192 bits) and ES256 (ECDSA P-256 SHA-256,
//! RFC 7518 §3.4 fixed-size signature). The key is chosen by the header's
//! `kid` and must be of the header's `alg`; the `alg` is never trusted to
//! pick a verifier on its own, so `none`, HS256 (including "HS256 with the
//! RSA public key as the HMAC secret") and any other algorithm are refused
//! before a signature is looked at. Claims are checked only after the
//! signature verified: `exp` (required, a number), `nbf` (if present), `aud`
//! (required, must contain the configured audience), `iss` (if configured),
//! `sub` (required), all with [`LEEWAY_S`] of clock skew. Signatures are
//! computed with `ring`.
//!
//! [`sign_token`] and [`token_cli`] mint tokens with a private key (the
//! TEST-ONLY keys in `config/jwt/`, never for production) for tests, the
//! demo and `kolokol token`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde::Deserialize;
use serde_json::Value;

use super::types::Principal;

/// Scope: place click-to-call calls and hang calls up.
pub const SCOPE_CALLS_WRITE: &str = "calls:write";
/// Scope: read calls and the event stream.
pub const SCOPE_CALLS_READ: &str = "calls:read";
/// Scope: place notifications.
pub const SCOPE_NOTIFICATIONS_WRITE: &str = "notifications:write";
/// Scope: read call detail records.
pub const SCOPE_CDR_READ: &str = "cdr:read";
/// Scope: export call detail records.
pub const SCOPE_CDR_EXPORT: &str = "cdr:export";
/// Scope: drain and other administration.
pub const SCOPE_ADMIN: &str = "admin";
/// Every scope the API knows; others in a token are ignored.
pub const SCOPES: [&str; 6] = [
    SCOPE_CALLS_WRITE,
    SCOPE_CALLS_READ,
    SCOPE_NOTIFICATIONS_WRITE,
    SCOPE_CDR_READ,
    SCOPE_CDR_EXPORT,
    SCOPE_ADMIN,
];

/// Clock skew allowed on `exp` and `nbf`, seconds (a minute is what most
/// JWT libraries default to; tokens live for minutes to hours).
pub const LEEWAY_S: i64 = 60;

/// Longest token accepted, bytes: an RS256 token with a 4096-bit key and a
/// generous claim set is well under 4 KiB; this bounds the work per request.
pub const TOKEN_LEN_MAX: usize = 8 * 1024;

/// Most keys in a JWKS file.
pub const JWKS_KEYS_MAX: usize = 64;

/// The accepted JWS algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwtAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA P-256 with SHA-256.
    Es256,
}

impl JwtAlg {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlg::Rs256 => "RS256",
            JwtAlg::Es256 => "ES256",
        }
    }
}

impl std::str::FromStr for JwtAlg {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<JwtAlg, AuthError> {
        match s {
            "RS256" => Ok(JwtAlg::Rs256),
            "ES256" => Ok(JwtAlg::Es256),
            other => Err(AuthError::Alg(other.chars().take(32).collect())),
        }
    }
}

impl fmt::Display for JwtAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token, key file or signing request was refused. The message is
/// safe to return to the client (it never echoes the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not three base64url parts, bad JSON, too long.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` other than RS256 / ES256 (`none`, HS256, ...).
    #[error("algorithm {0:?} is not accepted (RS256 or ES256 only)")]
    Alg(String),
    /// The header has no `kid`.
    #[error("token header has no kid")]
    NoKid,
    /// No key with that `kid`.
    #[error("unknown key id")]
    UnknownKid,
    /// The key is for another algorithm than the header names.
    #[error("key {kid:?} is for {key}, the token says {token}")]
    AlgMismatch {
        /// The key id.
        kid: String,
        /// The key's algorithm.
        key: JwtAlg,
        /// The header's.
        token: JwtAlg,
    },
    /// The header has `crit` (no extension is understood, RFC 7515 §4.1.11).
    #[error("token header has crit extensions, none are supported")]
    Crit,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// A claim is missing or has the wrong type.
    #[error("claim {0}: {1}")]
    Claim(&'static str, &'static str),
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` does not contain the configured audience.
    #[error("token is not for this audience")]
    Audience,
    /// `iss` is not the configured issuer.
    #[error("token is from another issuer")]
    Issuer,
    /// A JWKS file or private key is unusable.
    #[error("{0}")]
    Key(String),
}

/// One verification key.
#[derive(Clone)]
enum PublicKey {
    /// Modulus and exponent, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed point 0x04 || X || Y.
    Ec(Vec<u8>),
}

impl PublicKey {
    fn alg(&self) -> JwtAlg {
        match self {
            PublicKey::Rsa { .. } => JwtAlg::Rs256,
            PublicKey::Ec(_) => JwtAlg::Es256,
        }
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match self {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            PublicKey::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, sig)
                    .is_ok()
            }
        }
    }
}

/// One JWK as found in the file; only the members used are read.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

fn b64(field: &str, s: &Option<String>) -> Result<Vec<u8>, String> {
    let s = s.as_ref().ok_or_else(|| format!("no {field:?}"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("{field:?} is not base64url: {e}"))
}

/// The verification keys of a JWKS, by `kid`.
#[derive(Clone)]
pub struct Jwks {
    keys: HashMap<String, PublicKey>,
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self.keys.iter().map(|(k, v)| (k, v.alg())).collect();
        kids.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_struct("Jwks").field("keys", &kids).finish()
    }
}

impl Jwks {
    /// Reads a JWKS file.
    pub fn load(path: &Path) -> Result<Jwks, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        Jwks::parse(&text).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))
    }

    /// Parses a JWKS. Keys for encryption (`use` other than `sig`) or of
    /// other types (EC curves but P-256, OKP, oct) are skipped: an identity
    /// provider's JWKS may hold them. Symmetric keys never verify anything
    /// here. At least one RS256 or ES256 key must remain, every one with a
    /// unique `kid`.
    pub fn parse(text: &str) -> Result<Jwks, AuthError> {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| AuthError::Key(format!("not a JWKS: {e}")))?;
        if set.keys.len() > JWKS_KEYS_MAX {
            return Err(AuthError::Key(format!(
                "{} keys, at most {JWKS_KEYS_MAX}",
                set.keys.len()
            )));
        }
        let mut keys = HashMap::new();
        for (i, k) in set.keys.iter().enumerate() {
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match (k.kty.as_str(), k.crv.as_deref()) {
                ("RSA", _) => {
                    let n = b64("n", &k.n).map_err(|e| AuthError::Key(format!("key {i}: {e}")))?;
                    let e = b64("e", &k.e).map_err(|e| AuthError::Key(format!("key {i}: {e}")))?;
                    if n.len() < 256 || e.is_empty() || e.len() > 8 {
                        return Err(AuthError::Key(format!(
                            "key {i}: RSA modulus under 2048 bits or bad exponent"
                        )));
                    }
                    PublicKey::Rsa { n, e }
                }
                ("EC", Some("P-256")) => {
                    let x = b64("x", &k.x).map_err(|e| AuthError::Key(format!("key {i}: {e}")))?;
                    let y = b64("y", &k.y).map_err(|e| AuthError::Key(format!("key {i}: {e}")))?;
                    if x.len() != 32 || y.len() != 32 {
                        return Err(AuthError::Key(format!(
                            "key {i}: P-256 coordinates must be 32 bytes each"
                        )));
                    }
                    let mut p = Vec::with_capacity(65);
                    p.push(4);
                    p.extend_from_slice(&x);
                    p.extend_from_slice(&y);
                    PublicKey::Ec(p)
                }
                _ => continue,
            };
            // A key that names another algorithm (PS256, ES384) is not
            // one we verify with.
            if k.alg.as_deref().is_some_and(|a| a != key.alg().as_str()) {
                continue;
            }
            let Some(kid) = k.kid.clone().filter(|s| !s.is_empty()) else {
                return Err(AuthError::Key(format!(
                    "key {i}: no \"kid\" (tokens select keys by kid)"
                )));
            };
            if keys.insert(kid.clone(), key).is_some() {
                return Err(AuthError::Key(format!("kid {kid:?} appears twice")));
            }
        }
        if keys.is_empty() {
            return Err(AuthError::Key("no RS256 or ES256 signing key".into()));
        }
        Ok(Jwks { keys })
    }

    /// The key ids, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// What a token must be for.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// The keys.
    pub jwks: Jwks,
    /// Required member of `aud`.
    pub audience: String,
    /// Required `iss`, if any.
    pub issuer: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

fn decode_part(s: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| AuthError::Malformed(what))
}

/// A NumericDate claim (RFC 7519 §2): a JSON number, possibly fractional.
fn numeric(
    claims: &serde_json::Map<String, Value>,
    name: &'static str,
) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or(AuthError::Claim(name, "not a number")),
        Some(_) => Err(AuthError::Claim(name, "not a number")),
    }
}

impl Verifier {
    /// Verifies a compact-serialized JWS token at `now_unix` (seconds) and
    /// returns its principal.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Principal, AuthError> {
        if token.len() > TOKEN_LEN_MAX {
            return Err(AuthError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("not three dot-separated parts"));
        };
        let header: Header = serde_json::from_slice(&decode_part(h64, "header is not base64url")?)
            .map_err(|_| AuthError::Malformed("header is not a JSON object with alg"))?;
        let alg: JwtAlg = header.alg.parse()?;
        if header.crit.is_some() {
            return Err(AuthError::Crit);
        }
        let kid = header.kid.ok_or(AuthError::NoKid)?;
        let key = self.jwks.keys.get(&kid).ok_or(AuthError::UnknownKid)?;
        if key.alg() != alg {
            return Err(AuthError::AlgMismatch {
                kid,
                key: key.alg(),
                token: alg,
            });
        }
        let sig = decode_part(s64, "signature is not base64url")?;
        // The signing input is the ASCII of the two encoded parts (RFC 7515 §5.2).
        let signed = &token[..h64.len() + 1 + p64.len()];
        if !key.verify(signed.as_bytes(), &sig) {
            return Err(AuthError::Signature);
        }
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&decode_part(p64, "payload is not base64url")?)
                .map_err(|_| AuthError::Malformed("payload is not a JSON object"))?;
        let now = now_unix as f64;
        let exp = numeric(&claims, "exp")?.ok_or(AuthError::Claim("exp", "missing"))?;
        if now >= exp + LEEWAY_S as f64 {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric(&claims, "nbf")? {
            if now + (LEEWAY_S as f64) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        match claims.get("aud") {
            None => return Err(AuthError::Claim("aud", "missing")),
            Some(Value::String(a)) if *a == self.audience => {}
            Some(Value::Array(v)) if v.iter().any(|a| a.as_str() == Some(&self.audience)) => {}
            Some(Value::String(_) | Value::Array(_)) => return Err(AuthError::Audience),
            Some(_) => return Err(AuthError::Claim("aud", "not a string or array")),
        }
        if let Some(iss) = &self.issuer {
            match claims.get("iss") {
                Some(Value::String(s)) if s == iss => {}
                Some(Value::String(_)) => return Err(AuthError::Issuer),
                None => return Err(AuthError::Claim("iss", "missing")),
                Some(_) => return Err(AuthError::Claim("iss", "not a string")),
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None => return Err(AuthError::Claim("sub", "missing")),
            Some(_) => return Err(AuthError::Claim("sub", "not a non-empty string")),
        };
        let mut scopes = HashSet::new();
        let mut add = |s: &str| {
            if let Some(known) = SCOPES.iter().find(|k| **k == s) {
                scopes.insert((*known).to_string());
            }
        };
        match claims.get("scope") {
            None => {}
            Some(Value::String(s)) => s.split(' ').for_each(&mut add),
            Some(_) => return Err(AuthError::Claim("scope", "not a space-separated string")),
        }
        match claims.get("scp") {
            None => {}
            Some(Value::String(s)) => s.split(' ').for_each(&mut add),
            Some(Value::Array(v)) => {
                for s in v {
                    let s = s
                        .as_str()
                        .ok_or(AuthError::Claim("scp", "not an array of strings"))?;
                    add(s);
                }
            }
            Some(_) => return Err(AuthError::Claim("scp", "not an array of strings")),
        }
        let account = match claims.get("account") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(AuthError::Claim("account", "not a string")),
        };
        Ok(Principal {
            subject,
            scopes,
            account,
        })
    }
}

/// A private key that signs tokens.
pub struct SigningKey {
    alg: JwtAlg,
    kid: String,
    inner: SigningInner,
}

enum SigningInner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from PKCS#8 PEM text (`-----BEGIN PRIVATE KEY-----`), for
    /// `alg`, announced as `kid`.
    pub fn from_pem(pem: &[u8], kid: &str, alg: JwtAlg) -> Result<SigningKey, AuthError> {
        let der = match PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| AuthError::Key(format!("not a PEM private key: {e}")))?
        {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => {
                return Err(AuthError::Key(
                    "the key must be PKCS#8 (BEGIN PRIVATE KEY); convert with `openssl pkcs8 -topk8 -nocrypt`"
                        .into(),
                ))
            }
        };
        let inner = match alg {
            JwtAlg::Rs256 => SigningInner::Rsa(
                RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
                    .map_err(|e| AuthError::Key(format!("not an RSA key: {e}")))?,
            ),
            JwtAlg::Es256 => SigningInner::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_pkcs8_der(),
                    &SystemRandom::new(),
                )
                .map_err(|e| AuthError::Key(format!("not a P-256 key: {e}")))?,
            ),
        };
        Ok(SigningKey {
            alg,
            kid: kid.to_string(),
            inner,
        })
    }

    /// The public half as a JWK (for tests and the demo).
    pub fn public_jwk(&self) -> Value {
        match &self.inner {
            SigningInner::Ec(k) => {
                let p = k.public_key().as_ref();
                serde_json::json!({
                    "kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&p[33..65]),
                })
            }
            SigningInner::Rsa(k) => {
                let c: RsaPublicKeyComponents<Vec<u8>> = k.public().into();
                serde_json::json!({
                    "kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                    "n": URL_SAFE_NO_PAD.encode(&c.n),
                    "e": URL_SAFE_NO_PAD.encode(&c.e),
                })
            }
        }
    }

    /// A compact JWS of `claims` (a JSON object) with `alg`, `typ` and
    /// `kid` in the header.
    pub fn sign(&self, claims: &Value) -> Result<String, AuthError> {
        if !claims.is_object() {
            return Err(AuthError::Claim("claims", "must be a JSON object"));
        }
        let header = serde_json::json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match &self.inner {
            SigningInner::Ec(k) => k
                .sign(&rng, out.as_bytes())
                .map_err(|_| AuthError::Key("ECDSA signing failed".into()))?
                .as_ref()
                .to_vec(),
            SigningInner::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, out.as_bytes(), &mut sig)
                    .map_err(|_| AuthError::Key("RSA signing failed".into()))?;
                sig
            }
        };
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }
}

/// Signs `claims` with the PKCS#8 PEM key at `pem_path` (`alg` RS256 or
/// ES256, `kid` in the header). Used by the tests and the demo with the
/// TEST-ONLY keys of `config/jwt/`.
pub fn sign_token(
    pem_path: &Path,
    kid: &str,
    alg: JwtAlg,
    claims: &Value,
) -> Result<String, AuthError> {
    let pem = std::fs::read(pem_path)
        .map_err(|e| AuthError::Key(format!("{}: {e}", pem_path.display())))?;
    SigningKey::from_pem(&pem, kid, alg)?.sign(claims)
}

/// The TEST-ONLY ES256 key in `config/jwt/test-es256.pem`, built into the
/// binary so `kolokol token` and `kolokol demo` work from any directory.
/// Its private key is public: never trust it in production.
pub const TEST_ES256_PEM: &str = include_str!("../../../config/jwt/test-es256.pem");
/// The `kid` of [`TEST_ES256_PEM`] in `config/jwt/jwks.json`.
pub const TEST_ES256_KID: &str = "test-es256-1";
/// The TEST-ONLY RS256 key in `config/jwt/test-rs256.pem`.
pub const TEST_RS256_PEM: &str = include_str!("../../../config/jwt/test-rs256.pem");
/// The `kid` of [`TEST_RS256_PEM`].
pub const TEST_RS256_KID: &str = "test-rs256-1";
/// The TEST-ONLY JWKS `config/jwt/jwks.json`.
pub const TEST_JWKS: &str = include_str!("../../../config/jwt/jwks.json");

/// Usage of [`token_cli`].
pub const TOKEN_USAGE: &str =
    "usage: kolokol token [--scope \"calls:write calls:read\"] [--sub portal] \
[--ttl 3600] [--aud kolokol] [--iss ISSUER] [--account ACCOUNT] \
[--key PEM --kid KID --alg ES256|RS256]\n\
Prints a bearer token. Without --key it is signed with the TEST-ONLY key of \
config/jwt/ (kid test-es256-1), which only a gateway using config/jwt/jwks.json accepts.";

/// `kolokol token ARGS`: returns a signed token for `args` (the words after
/// `token`) at `now_unix`. Defaults: scope `calls:write calls:read
/// notifications:write`, sub `portal`, ttl 3600 s, aud `kolokol`, the
/// built-in TEST-ONLY ES256 key. The error is a message for the user
/// (including [`TOKEN_USAGE`] for bad arguments).
pub fn token_cli(args: &[String], now_unix: i64) -> Result<String, String> {
    let mut scope = format!("{SCOPE_CALLS_WRITE} {SCOPE_CALLS_READ} {SCOPE_NOTIFICATIONS_WRITE}");
    let mut sub = "portal".to_string();
    let mut ttl: i64 = 3600;
    let mut aud = "kolokol".to_string();
    let mut iss = None;
    let mut account = None;
    let mut key = None;
    let mut kid = None;
    let mut alg = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{TOKEN_USAGE}"))
        };
        match a.as_str() {
            "--scope" => scope = val()?,
            "--sub" => sub = val()?,
            "--ttl" => {
                ttl = val()?
                    .parse()
                    .ok()
                    .filter(|t| (1..=366 * 86_400).contains(t))
                    .ok_or_else(|| format!("--ttl: seconds in 1..=31622400\n{TOKEN_USAGE}"))?
            }
            "--aud" => aud = val()?,
            "--iss" => iss = Some(val()?),
            "--account" => account = Some(val()?),
            "--key" => key = Some(val()?),
            "--kid" => kid = Some(val()?),
            "--alg" => alg = Some(val()?),
            "-h" | "--help" => return Err(TOKEN_USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{TOKEN_USAGE}")),
        }
    }
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !SCOPES.contains(&s) {
            return Err(format!(
                "--scope: unknown scope {s:?} (known: {})",
                SCOPES.join(" ")
            ));
        }
    }
    let mut claims = serde_json::json!({
        "sub": sub,
        "aud": aud,
        "scope": scope,
        "iat": now_unix,
        "exp": now_unix + ttl,
    });
    if let Some(i) = iss {
        claims["iss"] = Value::String(i);
    }
    if let Some(a) = account {
        claims["account"] = Value::String(a);
    }
    let signer = match key {
        None => {
            if kid.is_some() || alg.is_some() {
                return Err(format!("--kid and --alg go with --key\n{TOKEN_USAGE}"));
            }
            SigningKey::from_pem(TEST_ES256_PEM.as_bytes(), TEST_ES256_KID, JwtAlg::Es256)
        }
        Some(path) => {
            let kid = kid.ok_or_else(|| format!("--key needs --kid\n{TOKEN_USAGE}"))?;
            let alg: JwtAlg = alg
                .as_deref()
                .unwrap_or("ES256")
                .parse()
                .map_err(|e| format!("--alg: {e}"))?;
            let pem = std::fs::read(&path).map_err(|e| format!("--key {path}: {e}"))?;
            SigningKey::from_pem(&pem, &kid, alg)
        }
    }
    .map_err(|e| e.to_string())?;
    signer.sign(&claims).map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod test {
    use super::*;
    use serde_json::json;

    pub(crate) const NOW: i64 = 1_777_636_800;

    pub(crate) fn verifier() -> Verifier {
        Verifier {
            jwks: Jwks::parse(TEST_JWKS).unwrap(),
            audience: "kolokol".into(),
            issuer: None,
        }
    }

    pub(crate) fn es() -> SigningKey {
        SigningKey::from_pem(TEST_ES256_PEM.as_bytes(), TEST_ES256_KID, JwtAlg::Es256).unwrap()
    }

    pub(crate) fn rs() -> SigningKey {
        SigningKey::from_pem(TEST_RS256_PEM.as_bytes(), TEST_RS256_KID, JwtAlg::Rs256).unwrap()
    }

    pub(crate) fn claims(scope: &str) -> Value {
        json!({"sub": "portal", "aud": "kolokol", "scope": scope, "exp": NOW + 600})
    }

    /// A header and claims signed with nothing: for forged tokens.
    fn unsigned(header: &Value, claims: &Value, sig: &[u8]) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    #[test]
    fn committed_keys_match_the_committed_jwks() {
        let jwks: Value = serde_json::from_str(TEST_JWKS).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys[0], es().public_jwk());
        assert_eq!(keys[1], rs().public_jwk());
        assert_eq!(
            Jwks::parse(TEST_JWKS).unwrap().kids(),
            ["test-es256-1", "test-rs256-1"]
        );
        // And the files on disk are what is built in.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/jwt");
        let t = sign_token(
            &dir.join("test-rs256.pem"),
            TEST_RS256_KID,
            JwtAlg::Rs256,
            &claims("admin"),
        )
        .unwrap();
        assert!(verifier().verify(&t, NOW).unwrap().has_scope("admin"));
    }

    #[test]
    fn good_tokens_verify_with_both_algorithms() {
        let v = verifier();
        for k in [es(), rs()] {
            let t = k.sign(&claims("calls:write calls:read bogus")).unwrap();
            let p = v.verify(&t, NOW).unwrap();
            assert_eq!(p.subject, "portal");
            assert_eq!(
                p.scopes,
                HashSet::from(["calls:write".to_string(), "calls:read".to_string()])
            );
            assert_eq!(p.account, None);
        }
        let t = es()
            .sign(
                &json!({"sub": "s", "aud": ["x", "kolokol"], "scp": ["admin"], "exp": NOW + 1,
                          "nbf": NOW - 5, "account": "acc-1"}),
            )
            .unwrap();
        let p = v.verify(&t, NOW).unwrap();
        assert!(p.has_scope("admin"));
        assert_eq!(p.account.as_deref(), Some("acc-1"));
    }

    #[test]
    fn refusals() {
        let v = verifier();
        let c = claims("calls:read");
        // Expired (beyond the leeway), not yet valid, audience, issuer.
        let t = es()
            .sign(&json!({"sub": "s", "aud": "kolokol", "exp": NOW - LEEWAY_S - 1}))
            .unwrap();
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Expired));
        let t = es()
            .sign(&json!({"sub": "s", "aud": "kolokol", "exp": NOW + 600, "nbf": NOW + 600}))
            .unwrap();
        assert_eq!(v.verify(&t, NOW), Err(AuthError::NotYetValid));
        let t = es()
            .sign(&json!({"sub": "s", "aud": "other", "exp": NOW + 600}))
            .unwrap();
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Audience));
        let t = es().sign(&json!({"sub": "s", "exp": NOW + 600})).unwrap();
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Claim("aud", "missing")));
        let t = es().sign(&json!({"sub": "s", "aud": "kolokol"})).unwrap();
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Claim("exp", "missing")));
        // A string where a NumericDate belongs is refused, not ignored.
        let t = es()
            .sign(&json!({"sub": "s", "aud": "kolokol", "exp": "9999999999"}))
            .unwrap();
        assert_eq!(
            v.verify(&t, NOW),
            Err(AuthError::Claim("exp", "not a number"))
        );
        let t = es()
            .sign(&json!({"sub": "s", "aud": "kolokol", "exp": NOW + 9, "nbf": "0"}))
            .unwrap();
        assert_eq!(
            v.verify(&t, NOW),
            Err(AuthError::Claim("nbf", "not a number"))
        );
        let t = es()
            .sign(&json!({"aud": "kolokol", "exp": NOW + 9}))
            .unwrap();
        assert_eq!(v.verify(&t, NOW), Err(AuthError::Claim("sub", "missing")));
        let with_iss = Verifier {
            issuer: Some("https://idp.example".into()),
            ..verifier()
        };
        let t = es().sign(&c).unwrap();
        assert_eq!(
            with_iss.verify(&t, NOW),
            Err(AuthError::Claim("iss", "missing"))
        );
        let mut ci = c.clone();
        ci["iss"] = json!("https://evil.example");
        assert_eq!(
            with_iss.verify(&es().sign(&ci).unwrap(), NOW),
            Err(AuthError::Issuer)
        );
        ci["iss"] = json!("https://idp.example");
        with_iss.verify(&es().sign(&ci).unwrap(), NOW).unwrap();

        // Wrong key: a fresh P-256 key announcing the test kid.
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        let other = SigningKey::from_pem(pem.as_bytes(), TEST_ES256_KID, JwtAlg::Es256).unwrap();
        assert_eq!(
            v.verify(&other.sign(&c).unwrap(), NOW),
            Err(AuthError::Signature)
        );
        let other = SigningKey::from_pem(pem.as_bytes(), "nope", JwtAlg::Es256).unwrap();
        assert_eq!(
            v.verify(&other.sign(&c).unwrap(), NOW),
            Err(AuthError::UnknownKid)
        );

        // Tampered claims under a good signature.
        let t = es().sign(&c).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims("admin").to_string()),
            parts[2]
        );
        assert_eq!(v.verify(&forged, NOW), Err(AuthError::Signature));

        // alg none, with and without a signature.
        let h = json!({"alg": "none", "kid": TEST_ES256_KID});
        assert_eq!(
            v.verify(&unsigned(&h, &c, b""), NOW),
            Err(AuthError::Alg("none".into()))
        );
        assert_eq!(
            v.verify(&unsigned(&h, &c, b"x"), NOW),
            Err(AuthError::Alg("none".into()))
        );

        // HS256 with the RSA public key (as PEM and as JWK n) as the secret.
        use hmac::{Hmac, Mac};
        let h = json!({"alg": "HS256", "typ": "JWT", "kid": TEST_RS256_KID});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(c.to_string())
        );
        let jwk = rs().public_jwk();
        for secret in [
            TEST_JWKS.as_bytes().to_vec(),
            jwk["n"].as_str().unwrap().as_bytes().to_vec(),
        ] {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
            mac.update(input.as_bytes());
            let tok = format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            );
            assert_eq!(v.verify(&tok, NOW), Err(AuthError::Alg("HS256".into())));
        }

        // Algorithm confusion between the two accepted algorithms: an
        // RS256 signature presented as ES256 for the RSA kid.
        let t = rs().sign(&c).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let h = json!({"alg": "ES256", "kid": TEST_RS256_KID});
        let swapped = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            parts[1],
            parts[2]
        );
        assert!(matches!(
            v.verify(&swapped, NOW),
            Err(AuthError::AlgMismatch { .. })
        ));

        // No kid, crit, garbage.
        let h = json!({"alg": "ES256"});
        assert_eq!(
            v.verify(&unsigned(&h, &c, b"x"), NOW),
            Err(AuthError::NoKid)
        );
        let h = json!({"alg": "ES256", "kid": TEST_ES256_KID, "crit": ["exp"]});
        assert_eq!(v.verify(&unsigned(&h, &c, b"x"), NOW), Err(AuthError::Crit));
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(
                matches!(v.verify(bad, NOW), Err(AuthError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            v.verify(&"a".repeat(TOKEN_LEN_MAX + 1), NOW),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn jwks_parsing() {
        // Foreign keys are skipped; a JWKS with none of ours is an error.
        let text = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"},
            {"kty":"EC","crv":"P-384","kid":"p","x":"AA","y":"AA"}]}"#;
        assert!(Jwks::parse(text).is_err());
        let mut set: Value = serde_json::from_str(TEST_JWKS).unwrap();
        set["keys"][1]["kid"] = json!("test-es256-1");
        let e = Jwks::parse(&set.to_string()).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let mut set: Value = serde_json::from_str(TEST_JWKS).unwrap();
        set["keys"][0]["x"] = json!("AAAA");
        assert!(Jwks::parse(&set.to_string()).is_err());
        let mut set: Value = serde_json::from_str(TEST_JWKS).unwrap();
        set["keys"][1]["use"] = json!("enc");
        assert_eq!(
            Jwks::parse(&set.to_string()).unwrap().kids(),
            ["test-es256-1"]
        );
        assert!(Jwks::parse("not json").is_err());
        assert!(Jwks::load(Path::new("/nonexistent/jwks.json")).is_err());
    }

    #[test]
    fn token_cli_mints_verifiable_tokens() {
        let args: Vec<String> = [
            "--scope",
            "calls:write calls:read",
            "--sub",
            "portal",
            "--ttl",
            "3600",
            "--account",
            "a1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = token_cli(&args, NOW).unwrap();
        let p = verifier().verify(&t, NOW + 3000).unwrap();
        assert!(p.has_scope("calls:write") && p.has_scope("calls:read") && !p.has_scope("admin"));
        assert_eq!(p.account.as_deref(), Some("a1"));
        assert_eq!(
            verifier().verify(&t, NOW + 3600 + LEEWAY_S),
            Err(AuthError::Expired)
        );
        let rs_args: Vec<String> = [
            "--key",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/jwt/test-rs256.pem"),
            "--kid",
            "test-rs256-1",
            "--alg",
            "RS256",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        verifier()
            .verify(&token_cli(&rs_args, NOW).unwrap(), NOW)
            .unwrap();
        for bad in [
            &["--scope", "calls:everything"][..],
            &["--ttl", "0"],
            &["--kid", "x"],
            &["--bogus"],
            &["--sub"],
        ] {
            let a: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(token_cli(&a, NOW).is_err(), "{bad:?}");
        }
    }
}
