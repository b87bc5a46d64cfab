# Meshgate's container image (docs/operations.md "Container image").
#
#   docker build -t grpc-service-mesh .
#       Builds Meshgate from source on the official Swift image for Debian
#       bookworm, then the runtime image on debian:bookworm-slim.
#
#   scripts/container-artifacts.sh .build/release .docker-artifacts
#   docker build --target runtime-prebuilt -t grpc-service-mesh .
#       The same runtime image from binaries built on a bookworm host (what
#       the tests do with podman, where no registry is reachable).
#
# The runtime holds the meshgate and mesh-sample executables in
# /opt/meshgate/bin, the Swift runtime they link in /opt/meshgate/lib, the
# built-in filter plugins in /opt/meshgate/plugins (MESHGATE_PLUGIN_DIR),
# and the default config in /etc/meshgate/mesh.yaml; it runs as user 10001.

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${SWIFT_IMAGE} AS builder
# Unpinned on purpose (DL3008): bookworm's stable packages only change for
# security fixes, which an image rebuild should pick up.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnghttp2-dev libssl-dev libyaml-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN swift build -c release \
 && scripts/container-artifacts.sh .build/release /artifacts

FROM ${RUNTIME_IMAGE} AS runtime-base
# Only the shared libraries Meshgate needs besides its own: nghttp2,
# OpenSSL, libyaml, and the CA bundle for TLS to upstreams (unpinned, as above).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnghttp2-14 libssl3 libyaml-0-2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin meshgate
ENV PATH=/opt/meshgate/bin:/usr/local/bin:/usr/bin:/bin \
    LD_LIBRARY_PATH=/opt/meshgate/lib \
    MESHGATE_PLUGIN_DIR=/opt/meshgate/plugins
COPY deploy/container/mesh.yaml /etc/meshgate/mesh.yaml
WORKDIR /etc/meshgate
# 50051: gRPC (mutual TLS); 8086: plaintext grpc.health.v1 for probes;
# 8080 (/dashboard) and 9090 (/metrics): the admin views, read-only. The
# full admin API (POST /reload) stays on the container's loopback (9901).
EXPOSE 50051 8086 8080 9090
USER 10001:10001
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["meshgate", "probe", "--addr", "127.0.0.1:8086"]
ENTRYPOINT ["meshgate"]
CMD ["run", "--config", "/etc/meshgate/mesh.yaml"]

FROM runtime-base AS runtime-prebuilt
COPY .docker-artifacts/ /opt/meshgate/

# The default target, last: built from source.
FROM runtime-base AS runtime
COPY --from=builder /artifacts/ /opt/meshgate/
