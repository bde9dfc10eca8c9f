#!/usr/bin/env bash
# Generates the TEST-ONLY JWT signing keys in this directory and the JWKS
# the example config ([api] jwks_file) verifies against. They are committed
# so that the example config, the tests and `kolokol token` work as-is.
# NEVER USE THEM IN PRODUCTION: the private keys are public, so anyone can
# mint a token these keys verify. A real deployment puts the identity
# provider's public JWKS in api.jwks_file and has no private key here.
#   test-es256.pem : ECDSA P-256 private key (PKCS#8), kid "test-es256-1"
#   test-rs256.pem : RSA 2048 private key (PKCS#8), kid "test-rs256-1"
#   jwks.json      : the two public keys (RFC 7517), selected by kid
# Needs bash, openssl and coreutils (basenc, od). Re-run to make new keys.
set -euo pipefail
cd "$(dirname "$0")"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out test-es256.pem
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out test-rs256.pem
# base64url without padding (RFC 7515 §2) of stdin.
b64u() { basenc --base64url -w0 | tr -d '='; }
# hex on stdin -> bytes on stdout.
unhex() { local h; h=$(tr -d ' \n'); printf '%b' "$(printf '%s' "$h" | sed 's/../\\x&/g')"; }
# EC public key: DER SubjectPublicKeyInfo ends with 0x04 || X(32) || Y(32).
pt=$(openssl pkey -in test-es256.pem -pubout -outform DER | tail -c 64 | od -An -v -tx1 | tr -d ' \n')
x=$(printf '%s' "$pt" | cut -c1-64 | unhex | b64u)
y=$(printf '%s' "$pt" | cut -c65-128 | unhex | b64u)
# RSA modulus (hex) and the usual public exponent 65537 = AQAB.
n=$(openssl rsa -in test-rs256.pem -noout -modulus | sed 's/^Modulus=//' | unhex | b64u)
cat > jwks.json <<JSON
{
  "keys": [
    {"kty": "EC", "crv": "P-256", "kid": "test-es256-1", "use": "sig", "alg": "ES256",
     "x": "$x", "y": "$y"},
    {"kty": "RSA", "kid": "test-rs256-1", "use": "sig", "alg": "RS256",
     "e": "AQAB", "n": "$n"}
  ]
}
JSON
echo "wrote test-es256.pem test-rs256.pem jwks.json (TEST ONLY)"
