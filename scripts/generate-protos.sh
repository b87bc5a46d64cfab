#!/usr/bin/env bash
# Regenerates the committed Swift code of Sources/MeshProto from proto/.
#
#   scripts/generate-protos.sh            (run from the repository root)
#
# Needs protoc (Debian package protobuf-compiler, installed if missing),
# python3 with the `protobuf` package, and protoc-gen-swift: $PROTOC_GEN_SWIFT
# if set, else built once from swift-protobuf $SWIFT_PROTOBUF_VERSION into
# .build-protoc/ (git-ignored).
set -euo pipefail

SWIFT_PROTOBUF_VERSION="1.39.0"
SWIFT_PROTOBUF_URL="${SWIFT_PROTOBUF_URL:-https://github.com/apple/swift-protobuf.git}"

if [[ ! -f Package.swift || ! -d proto ]]; then
    echo "generate-protos.sh: run from the repository root" >&2
    exit 1
fi

PROTO_DIR="proto"
OUT_DIR="Sources/MeshProto/Generated"
# grpc.health.v1 is shared by the gateway (which serves and uses it) and the sample.
HEALTH_OUT_DIR="Sources/GRPCHealthProto/Generated"
# The gateway's own descriptors (health, reflection), for merged reflection.
GATEWAY_OUT_DIR="Sources/MeshgateOwnServices/Reflection/Generated"
TOOLS_DIR=".build-protoc"

# Proto files that get Swift message types.
SWIFT_PROTOS=(
    mesh.proto
    grpc/health/v1/health.proto
    grpc/reflection/v1alpha/reflection.proto
)
# Proto files whose descriptors are embedded for server reflection.
DESCRIPTOR_PROTOS=(
    mesh.proto
    grpc/health/v1/health.proto
    grpc/reflection/v1alpha/reflection.proto
    grpc/reflection/v1/reflection.proto
)

# --- protoc -----------------------------------------------------------------
PROTOC="${PROTOC:-}"
if [[ -z "$PROTOC" ]]; then
    if ! command -v protoc >/dev/null 2>&1; then
        echo "protoc not found; installing protobuf-compiler" >&2
        if ! apt-get install -y protobuf-compiler >&2; then
            apt-get update >&2
            apt-get install -y protobuf-compiler >&2
        fi
    fi
    PROTOC="$(command -v protoc)"
fi

# --- protoc-gen-swift ---------------------------------------------------------
PLUGIN="${PROTOC_GEN_SWIFT:-}"
if [[ -z "$PLUGIN" ]]; then
    src="$TOOLS_DIR/swift-protobuf"
    PLUGIN="$src/.build/release/protoc-gen-swift"
    if [[ ! -x "$PLUGIN" ]] || [[ "$("$PLUGIN" --version 2>/dev/null)" != *"$SWIFT_PROTOBUF_VERSION"* ]]; then
        mkdir -p "$TOOLS_DIR"
        if [[ ! -d "$src/.git" ]]; then
            git clone --quiet "$SWIFT_PROTOBUF_URL" "$src"
        fi
        git -C "$src" fetch --quiet --tags origin || true
        git -C "$src" -c advice.detachedHead=false checkout --quiet "refs/tags/$SWIFT_PROTOBUF_VERSION"
        echo "building protoc-gen-swift $SWIFT_PROTOBUF_VERSION in $src" >&2
        (cd "$src" && swift build -c release --product protoc-gen-swift >&2)
    fi
fi
if [[ ! -x "$PLUGIN" ]]; then
    echo "generate-protos.sh: protoc-gen-swift not executable: $PLUGIN" >&2
    exit 1
fi

# --- python protobuf (for the descriptor splitter) ---------------------------
if ! python3 -c 'import google.protobuf' >/dev/null 2>&1; then
    echo "python3 lacks google.protobuf; installing the protobuf package" >&2
    python3 -m pip install --quiet protobuf >&2
fi

echo "protoc:           $("$PROTOC" --version) ($PROTOC)"
echo "protoc-gen-swift: $("$PLUGIN" --version) ($PLUGIN)"

# --- generate into a scratch folder, then replace OUT_DIR's contents ---------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/swift"

"$PROTOC" -I "$PROTO_DIR" \
    --plugin=protoc-gen-swift="$PLUGIN" \
    --swift_out="$tmp/swift" \
    --swift_opt=Visibility=Public \
    --swift_opt=FileNaming=PathToUnderscores \
    "${SWIFT_PROTOS[@]}"

"$PROTOC" -I "$PROTO_DIR" \
    --descriptor_set_out="$tmp/descriptors.pb" \
    "${DESCRIPTOR_PROTOS[@]}"

python3 scripts/descriptors_to_swift.py "$tmp/descriptors.pb" "$tmp/swift/FileDescriptors.swift"
# The gateway answers reflection about its own services from these.
python3 scripts/descriptors_to_swift.py --enum GatewayFileDescriptors \
    --only grpc/health/v1/health.proto,grpc/reflection/v1alpha/reflection.proto,grpc/reflection/v1/reflection.proto \
    "$tmp/descriptors.pb" "$tmp/GatewayFileDescriptors.swift"

mkdir -p "$OUT_DIR" "$HEALTH_OUT_DIR"
rm -f "$OUT_DIR"/*.pb.swift "$OUT_DIR"/FileDescriptors.swift "$HEALTH_OUT_DIR"/*.pb.swift
mv "$tmp"/swift/grpc_health_v1_health.pb.swift "$HEALTH_OUT_DIR"/
mkdir -p "$GATEWAY_OUT_DIR"
cp "$tmp"/GatewayFileDescriptors.swift "$GATEWAY_OUT_DIR"/
cp "$tmp"/swift/*.swift "$OUT_DIR"/

echo "wrote:"
for f in "$OUT_DIR"/*.swift "$HEALTH_OUT_DIR"/*.swift "$GATEWAY_OUT_DIR"/*.swift; do
    echo "  $f ($(wc -c <"$f") bytes)"
done
