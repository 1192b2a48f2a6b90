# The `omnisql` binary in a small image, for the Helm charts' default image (ghcr.io/omnisql/omnisql).
# Build with any OCI builder, e.g. `docker build -t ghcr.io/omnisql/omnisql:0.1.0 .` or
# `podman build …`; this repository's own machines have no container engine, so CI does not build it.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p omnisql \
 && install -D target/release/omnisql /out/omnisql

# Debian's distroless base: glibc and CA certificates, no shell, a non-root user (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/omnisql /usr/local/bin/omnisql
USER 65532:65532
ENTRYPOINT ["omnisql"]
