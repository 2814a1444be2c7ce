#!/usr/bin/env bash
# Regenerates the test-only certificates in this directory: a CA and two
# server certificates for 127.0.0.1 and localhost signed by it (the second is
# used to test that a replaced certificate is picked up without a restart).
# Never use these keys for anything but tests.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout ca.key -out ca.pem -days "$days" -subj "/CN=Sextant test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
for n in server server2; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$n.key" -out "$n.csr" -subj "/CN=sextant-test-$n"
  openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" -out "$n.pem" \
    -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n')
  rm "$n.csr"
done
rm -f ca.srl
