#!/usr/bin/env bash
# A private certificate authority and one server certificate for 127.0.0.1 / localhost, so the
# local Kafka (SASL_SSL listener) and PostgreSQL (ssl = on) can be reached over TLS exactly as in
# production. Idempotent: existing files are kept until they are within 30 days of expiry.
#
#   deploy/tls/certs.sh          write the files (if needed) and print their directory
#
# Files in $PACKLINE_TLS_DIR: ca.pem (trust this), server.pem + server.key (PEM, unencrypted),
# kafka.pem (key then certificate, the PEM keystore Kafka reads).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"

DIR="$PACKLINE_TLS_DIR"
mkdir -p "$DIR"

fresh() { [[ -f "$DIR/$1" ]] && openssl x509 -checkend $((30 * 86400)) -noout -in "$DIR/$1" >/dev/null; }

if ! fresh ca.pem || ! fresh server.pem || [[ ! -f "$DIR/kafka.pem" ]]; then
  log "writing a local CA and a server certificate for 127.0.0.1 into $DIR"
  umask 077
  openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=Packline local CA" \
    -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$DIR/server.key" -out "$DIR/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$DIR/ext.cnf"
  openssl x509 -req -in "$DIR/server.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" \
    -CAcreateserial -days 825 -extfile "$DIR/ext.cnf" -out "$DIR/server.pem" 2>/dev/null
  # Kafka's PEM keystore: a PKCS#8 private key followed by the certificate chain.
  openssl pkcs8 -topk8 -nocrypt -in "$DIR/server.key" >"$DIR/kafka.pem"
  cat "$DIR/server.pem" "$DIR/ca.pem" >>"$DIR/kafka.pem"
  rm -f "$DIR/server.csr" "$DIR/ext.cnf"
  chmod 644 "$DIR/ca.pem" "$DIR/server.pem"
fi
echo "$DIR"
