# syntax=docker/dockerfile:1
# portcullis: the binary is the entrypoint (`serve`, `migrate`, `policy apply`, ... are its
# arguments). Multi-stage: a pinned Rust image builds, distroless runs (glibc, CA
# certificates, no shell), as the non-root user 65532, with nothing written to the root
# filesystem (run it read-only). The echo example (the demo upstream of k8s/) rides along.
#   docker build -t portcullis:dev .
#   docker run --rm --read-only -v "$PWD/examples:/etc/portcullis:ro" portcullis:dev \
#     --config /etc/portcullis/portcullis.yaml config check

# The toolchain of rust-toolchain.toml, on the Debian release the runtime is built from.
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin portcullis --example echo_upstream \
    && install -D -m 0755 target/release/portcullis /out/portcullis \
    && install -D -m 0755 target/release/examples/echo_upstream /out/echo_upstream

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portcullis /out/echo_upstream /usr/local/bin/
USER 65532:65532
# gRPC ext_authz, admin (/ready, /live, /status), login, HTTP ext_authz.
EXPOSE 9001 9002 9003 9004
# For docker and compose: `portcullis status` asks the admin endpoint and exits 1 unless it
# serves a policy. Kubernetes ignores HEALTHCHECK and uses the probes in k8s/ instead. Assumes
# the admin endpoint on port 9002 of the container's loopback (the default, or 0.0.0.0:9002).
# With server.admin_token_file (needed off loopback), give the config as PORTCULLIS_CONFIG so
# the check reads the same file and sends the token.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/portcullis", "status", "--admin", "127.0.0.1:9002"]
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
