# iot-authz container image: a release build on Debian bookworm, run on distroless as the
# `nonroot` user (uid/gid 65532). No shell or package manager in the final image.
#
#   docker build -t iot-authz:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8181:8181 iot-authz:0.1.0          # the embedded demo
#   docker run --rm -v "$PWD/packs:/policy:ro" iot-authz:0.1.0 serve --policy /policy
#
# The Helm chart in deploy/helm/iot-authz runs this image with its own arguments.

FROM rust:1-bookworm AS build
WORKDIR /src
# The build needs no protoc (build.rs parses the protos with protox) and no OpenSSL
# (rustls with ring).
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
