#!/usr/bin/env bash
# Makes a development PKI with OpenSSL: a CA, a server certificate (for the
# gateway and the sample replicas: localhost and 127.0.0.1) and a client
# certificate (SPIFFE ID spiffe://meshgate.local/client), all signed by the
# CA. Usage: scripts/dev-certs.sh [DIR] (default: certs). Existing files in
# DIR are replaced. Never commit the keys (certs/ is in .gitignore).
set -euo pipefail
dir="${1:-certs}"
days="${DAYS:-365}"
mkdir -p "$dir"
cd "$dir"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=Meshgate Dev CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() {  # name subject extensions
    local name="$1" subject="$2" ext="$3"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subject" \
        -keyout "$name.key" -out "$name.csr" 2>/dev/null
    printf '%s\n' "$ext" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
        -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

issue server "/CN=localhost" "$(printf '%s\n' \
    'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth,clientAuth' \
    'subjectAltName=DNS:localhost,IP:127.0.0.1,URI:spiffe://meshgate.local/gateway')"
issue client "/CN=client" "$(printf '%s\n' \
    'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth' \
    'subjectAltName=URI:spiffe://meshgate.local/client')"
chmod 600 ./*.key
rm -f ca.srl
echo "wrote $(pwd): ca.pem server.pem/server.key client.pem/client.key"
