#!/usr/bin/env bash
# Certificates and tokens for the secure compose setup (deploy/secure.yml), made with openssl:
#   bash deploy/make-secrets.sh [DIR]        # default deploy/secrets (git-ignored); never overwrites
# DIR/ca.pem            the CA every tellm gRPC peer trusts (its key, ca.key, stays on this machine)
# DIR/inference.{pem,key}  server certificate of the inference service: inference, localhost, 127.0.0.1
#                          (also usable as a client certificate: the container's own healthcheck)
# DIR/controller.{pem,key}, DIR/policy.{pem,key}  client certificates (mutual TLS)
# DIR/tokens            the inference service's --auth-token-file: controller (route), policy (admin)
# DIR/controller.token, DIR/policy.token  each client's own token
# The containers run as uid 10001: run as root to hand the files to it (mode 0600), otherwise they are
# left world-readable (0644) so the containers can read them; keep DIR private then.
set -euo pipefail
DIR=${1:-$(dirname "$0")/secrets}
if [ -e "$DIR/ca.pem" ]; then
    echo "$DIR/ca.pem exists; remove $DIR to make new secrets" >&2
    exit 1
fi
mkdir -p "$DIR"
cd "$DIR"
DAYS=${TELLM_CERT_DAYS:-825}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days "$DAYS" -subj "/CN=tellm-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
issue() {  # name, subjectAltName
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
        -subj "/CN=$1" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=%s\n' "$2" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$DAYS" -out "$1.pem" \
        -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}
issue inference "DNS:inference,DNS:localhost,IP:127.0.0.1"
issue controller "DNS:controller"
issue policy "DNS:policy"
CONTROLLER_TOKEN=$(openssl rand -hex 32)
POLICY_TOKEN=$(openssl rand -hex 32)
printf '# name role token (tellm serve --auth-token-file)\ncontroller route %s\npolicy admin %s\n' \
    "$CONTROLLER_TOKEN" "$POLICY_TOKEN" > tokens
echo "$CONTROLLER_TOKEN" > controller.token
echo "$POLICY_TOKEN" > policy.token
rm -f ca.srl
if [ "$(id -u)" = 0 ]; then
    chown 10001:10001 ./*.pem ./*.key tokens ./*.token && chmod 0600 ./*.key tokens ./*.token
    chown root:root ca.key && chmod 0600 ca.key
else
    chmod 0644 ./*.pem ./*.key tokens ./*.token && chmod 0600 ca.key
fi
echo "secrets written to $DIR"
