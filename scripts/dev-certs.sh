#!/usr/bin/env bash
# Makes a development PKI with OpenSSL, laid out as a real one is: the CA's
# private key stays in a signing folder that nothing mounts or ships, and the
# workload folder holds the CA certificate plus one identity per workload.
#
#   scripts/dev-certs.sh [--ca-dir CADIR] [DIR]
#
# DIR (default: certs), what the workloads get (mount it, or make Secrets
# from it, one per workload with only that workload's files):
#   ca.pem                    the CA certificate: every workload's trust anchor
#   server.pem, server.key    the gateway: server and client auth, DNS localhost
#                             and grpc-mesh, IP 127.0.0.1, spiffe://meshgate.local/gateway
#                             (its listener certificate and its identity towards
#                             the replicas; "server" is the name config/mesh.yaml
#                             and the description config's mtls.cert_dir use)
#   replica.pem, replica.key  the replicas: server auth, DNS localhost and
#                             mesh-replicas, IP 127.0.0.1, spiffe://meshgate.local/replica
#   client.pem, client.key    a client of the gateway: client auth,
#                             spiffe://meshgate.local/client
# CADIR (default: `ca` beside DIR, so config/certs -> config/ca), the signing
# side: ca.pem, ca.key (and ca.srl). It must not be DIR or inside it. An
# existing CA there is reused, so running again renews the workload
# certificates without replacing the trust anchor; delete CADIR for a new CA.
#
# Workload files in DIR are replaced; a ca.key left in DIR by an older version
# of this script is removed. Keys are mode 600, CADIR 700. Never commit any of
# it (*.key, *.pem and certs/ are in .gitignore).
set -euo pipefail

usage() { echo "usage: scripts/dev-certs.sh [--ca-dir CADIR] [DIR]" >&2; exit 2; }
ca_dir=""
dir=""
while (($#)); do
    case "$1" in
        --ca-dir) (($# >= 2)) || usage; ca_dir="$2"; shift 2 ;;
        --ca-dir=*) ca_dir="${1#--ca-dir=}"; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) [[ -z "$dir" ]] || usage; dir="$1"; shift ;;
    esac
done
dir="${dir:-certs}"
days="${DAYS:-365}"

mkdir -p "$dir"
dir="$(cd "$dir" && pwd -P)"
ca_dir="${ca_dir:-$(dirname "$dir")/ca}"
mkdir -p "$ca_dir"
ca_dir="$(cd "$ca_dir" && pwd -P)"
umask 077                                   # keys are never readable by others, not even while written
case "$ca_dir/" in
    "$dir/"*)
        echo "dev-certs.sh: the CA folder $ca_dir is inside the workload folder $dir;" \
             "the CA key must stay out of what workloads get: give --ca-dir elsewhere" >&2
        rmdir "$ca_dir" 2>/dev/null || true
        exit 2 ;;
esac
chmod 700 "$ca_dir"

if [[ -f "$ca_dir/ca.key" && -f "$ca_dir/ca.pem" ]]; then
    ca_note="reused the CA in $ca_dir"
else
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Meshgate Dev CA" -keyout "$ca_dir/ca.key" -out "$ca_dir/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    ca_note="made a CA in $ca_dir"
fi
chmod 600 "$ca_dir/ca.key"
chmod 644 "$ca_dir/ca.pem"

work="$(mktemp -d)"                         # requests and extension files: never in DIR
trap 'rm -rf "$work"' EXIT

issue() {  # name subject extensions
    local name="$1" subject="$2" ext="$3"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$subject" \
        -keyout "$dir/$name.key" -out "$work/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" > "$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA "$ca_dir/ca.pem" -CAkey "$ca_dir/ca.key" \
        -CAserial "$ca_dir/ca.srl" -CAcreateserial -days "$days" \
        -extfile "$work/$name.ext" -out "$dir/$name.pem" 2>/dev/null
    chmod 600 "$dir/$name.key"
    chmod 644 "$dir/$name.pem"
}

issue server "/CN=meshgate-gateway" "$(printf '%s\n' \
    'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth,clientAuth' \
    'subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:grpc-mesh,URI:spiffe://meshgate.local/gateway')"
issue replica "/CN=meshgate-replica" "$(printf '%s\n' \
    'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' \
    'subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:mesh-replicas,URI:spiffe://meshgate.local/replica')"
issue client "/CN=client" "$(printf '%s\n' \
    'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' 'extendedKeyUsage=clientAuth' \
    'subjectAltName=URI:spiffe://meshgate.local/client')"
cp "$ca_dir/ca.pem" "$dir/ca.pem"
chmod 644 "$dir/ca.pem"
rm -f "$dir/ca.key" "$dir/ca.srl"           # an older layout's CA key next to the workload keys

echo "wrote $dir: ca.pem, server.pem/.key (gateway), replica.pem/.key (replicas), client.pem/.key (client); $ca_note (ca.key stays there)"
