# iot-authz container image: a release build on a pinned Rust (Debian bookworm, slim), run
# on distroless as the `nonroot` user (uid/gid 65532). No shell or package manager in the
# final image; the binary is stripped.
#
#   docker build -t iot-authz:0.1.0 .       # the tag the Helm chart uses by default
#   docker run --rm -p 50051:50051 -p 8181:8181 iot-authz:0.1.0          # the embedded demo
#   docker run --rm -v "$PWD/packs:/policy:ro" iot-authz:0.1.0 serve --policy /policy
#
# The dependencies are compiled in a layer of their own (cargo-chef: a recipe made from the
# manifests and the lock file only), so a change to the project's code rebuilds the project,
# not its dependency tree. The Helm chart in deploy/helm/iot-authz runs this image with its
# own arguments.

FROM rust:1.95.0-slim-bookworm AS chef
# The same profile settings in every cargo step, so the cached dependency layer matches the
# final build: no debug info, symbols stripped.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The dependency layer: rebuilt only when Cargo.toml or Cargo.lock change. The build needs
# no protoc (build.rs parses the protos with protox) and no OpenSSL (rustls with ring).
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin iot-authz
COPY . .
RUN cargo build --release --locked --bin iot-authz \
    && install -D -m 0755 target/release/iot-authz /out/iot-authz

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/iot-authz /usr/local/bin/iot-authz
USER 65532:65532
# gRPC (native API, Envoy ext_authz, health, reflection) and HTTP (/healthz, /readyz,
# /metrics).
EXPOSE 50051 8181
ENTRYPOINT ["/usr/local/bin/iot-authz"]
CMD ["serve"]
