# leasekeeper image: the agent (dynamically linked) and the static client-only build.
#
#   docker build -t leasekeeper:0.1.0 .
#
# /usr/local/bin/leasekeeper         the full binary: `agent`, `check-config` and the client
#                                    commands. The default command runs the agent with the
#                                    config at /etc/leasekeeper/config.yaml (a ConfigMap).
# /usr/local/bin/leasekeeper-static  drain/status/watch/run/version only, statically linked:
#                                    an init container copies it into a shared emptyDir so that
#                                    the app container can run `leasekeeper drain` in its preStop
#                                    hook whatever its image has installed (see deploy/).
#
# The runtime stage runs as uid/gid 65532, numerically, so that Kubernetes' runAsNonRoot can
# verify it without a runAsUser.

ARG DEBIAN_BUILD_IMAGE=debian:bookworm
ARG DEBIAN_RUNTIME_IMAGE=debian:bookworm-slim

# ---- build --------------------------------------------------------------------------------
FROM ${DEBIAN_BUILD_IMAGE} AS build

# The -dev packages of the Makefile's PKGS (pkg-config names: hiredis libevent jansson
# yaml-0.1 libsodium libcurl). libsodium-dev and libjansson-dev also ship the .a archives
# that build/leasekeeper-static links, and libc6-dev (from build-essential) the static libc.
# hiredis 1.x (TLS to Redis) comes from bookworm-backports, as in `make deps`.
COPY tools/backports.sh /tmp/backports.sh
RUN sh /tmp/backports.sh \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential \
        pkg-config \
        libssl-dev \
        libevent-dev \
        libcurl4-openssl-dev \
        libsodium-dev \
        libjansson-dev \
        libyaml-dev \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        -t bookworm-backports libhiredict-shims-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN make -j"$(nproc)" all \
 && install -D -m 0755 -s build/leasekeeper        /out/leasekeeper \
 && install -D -m 0755 -s build/leasekeeper-static /out/leasekeeper-static \
 && /out/leasekeeper version \
 && /out/leasekeeper-static version

# ---- runtime ------------------------------------------------------------------------------
FROM ${DEBIAN_RUNTIME_IMAGE}

# Only the shared libraries the agent links (libcurl is for the etcd backend; libevent's
# "extra" part holds evhttp and evdns; libhiredict1.3.1 is hiredis 1.x with its TLS part),
# and CA certificates for TLS to etcd and Redis.
COPY tools/backports.sh /tmp/backports.sh
RUN sh /tmp/backports.sh && rm /tmp/backports.sh \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        -t bookworm-backports libhiredict1.3.1 \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libssl3 \
        libevent-2.1-7 \
        libevent-extra-2.1-7 \
        libcurl4 \
        libsodium23 \
        libjansson4 \
        libyaml-0-2 \
        ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 65532 leasekeeper \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin -K UID_MAX=65532 leasekeeper \
 && install -d -o 65532 -g 65532 -m 0755 /run/leasekeeper \
 && install -d -m 0755 /etc/leasekeeper

COPY --from=build /out/leasekeeper /out/leasekeeper-static /usr/local/bin/

# Fails the build if a runtime library is missing from the list above.
RUN leasekeeper version && leasekeeper-static version

LABEL org.opencontainers.image.title="leasekeeper" \
      org.opencontainers.image.description="Leader-lock sidecar: holds Redis/etcd leases for an app and hands them over gracefully on termination" \
      org.opencontainers.image.version="0.1.0"

USER 65532:65532
# Metrics and health (http_listen in the config; the deploy/ config listens on 0.0.0.0:9440).
EXPOSE 9440
ENTRYPOINT ["leasekeeper"]
CMD ["agent", "-c", "/etc/leasekeeper/config.yaml"]
