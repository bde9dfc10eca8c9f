#!/bin/sh
# Generates the TEST-ONLY TLS material in this directory (committed so the
# example config and the TLS test work as-is). Never use it in production:
# the private keys are public. Re-run to renew (valid 10 years).
#   test-ca.crt / test-ca.key : a throw-away CA
#   sip-test.crt / sip-test.key : the gateway's certificate for 127.0.0.1,
#                                 ::1 and localhost, signed by the test CA
set -eu
cd "$(dirname "$0")"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout test-ca.key -out test-ca.crt -days 3650 \
  -subj "/O=Kolokol test/CN=Kolokol TEST CA (not for production)" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout sip-test.key -out sip-test.csr \
  -subj "/O=Kolokol test/CN=localhost"
cat > sip-test.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost
EXT
openssl x509 -req -in sip-test.csr -CA test-ca.crt -CAkey test-ca.key \
  -CAcreateserial -out sip-test.crt -days 3650 -extfile sip-test.ext
rm -f sip-test.csr sip-test.ext test-ca.srl
