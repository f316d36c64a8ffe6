# syntax=docker/dockerfile:1
# The CP-IS container image: registry-service, lookup-service and the cpis tool, built from this
# repository with the locked dependencies, on a minimal runtime base with no shell.
#
#   docker build -t cpis:dev .
#
# One image holds all three binaries (deploy/ picks one per container with `command`), so the
# registry, the lookup service and the migration Job always run the same build.

# --- build ---------------------------------------------------------------------------------
FROM rust:1.95.0-slim-bookworm AS build
# pq-sys builds libpq from source and links the system OpenSSL (TLS to PostgreSQL).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
# The image's toolchain is the one rust-toolchain.toml pins; naming it here stops rustup from
# fetching the toolchain file's extra components (rustfmt, clippy) that a build does not use.
ENV RUSTUP_TOOLCHAIN=1.95.0
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p registry-service -p lookup-service -p cpis \
 && mkdir -p /out \
 && cp target/release/registry-service target/release/lookup-service target/release/cpis /out/

# --- runtime -------------------------------------------------------------------------------
# distroless base: glibc, libssl and CA certificates, no shell or package manager.
FROM gcr.io/distroless/base-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="cpis" \
      org.opencontainers.image.description="CP-IS registry and lookup services and the cpis tool" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/cpis-rs/cpis-rs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/ /usr/local/bin/
# The distroless "nonroot" user, by number so Kubernetes' runAsNonRoot can check it.
USER 65532:65532
# The embedded database's directory when a volume is mounted there (deploy/ overlay dev).
WORKDIR /var/lib/cpis
ENV CPIS_DATA_DIR=/var/lib/cpis \
    CPIS_LOG_FORMAT=json
EXPOSE 50051 50052 50053 9091 9092
# Kubernetes probes grpc.health.v1 and the admin port's /livez and /readyz (deploy/); the
# image has no shell or HTTP client for a Docker HEALTHCHECK to run.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/registry-service"]
CMD ["serve"]
