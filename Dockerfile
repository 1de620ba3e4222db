# syntax=docker/dockerfile:1
# The idp node image: built in a Rust image, run in Debian slim as an unprivileged user.
#   docker build -t idp .
# docker-compose.yml runs three of these as a cluster (see deploy/README.md).

FROM rust:1.95-slim-bookworm AS builder
# aws-lc-rs (the only crypto provider) compiles AWS-LC from C sources: a C toolchain and cmake.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake pkg-config perl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p idp-node --bin idp \
    && install -m 0755 target/release/idp /usr/local/bin/idp

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin idp
COPY --from=builder /usr/local/bin/idp /usr/local/bin/idp
COPY deploy/idp/idp.toml /etc/idp/idp.toml
USER idp
# public HTTP, gossip (UDP), internal RPC, admin (/healthz, /readyz, /metrics)
EXPOSE 8080 7946/udp 7070 9090
ENTRYPOINT ["/usr/local/bin/idp"]
CMD ["serve", "--config", "/etc/idp/idp.toml"]
