//! Compiles the native API proto (no system `protoc`: `protox` parses it) and writes the
//! descriptor sets that server reflection serves, for the native API and for Envoy's
//! `envoy.service.auth.v3.Authorization` (whose message types come from `envoy-types`; its
//! server is generated here, with the native API's codec); and
//! the client of etcd's v3 API, from the protos vendored under `proto/vendor/etcd/`.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);

    let native = protox::compile(
        ["iotauthz/v1/authz.proto", "iotauthz/v1/admin.proto"],
        ["proto"],
    )?;
    std::fs::write(out.join("iotauthz_descriptor.bin"), native.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // prost, with a look at each request's shape before it is decoded (src/proto/codec.rs).
        .codec_path("crate::proto::codec::AdmittingCodec")
        .compile_fds(native)?;

    let envoy = protox::compile(
        ["envoy/service/auth/v3/external_auth.proto"],
        ["proto/vendor"],
    )?;
    std::fs::write(out.join("envoy_auth_descriptor.bin"), envoy.encode_to_vec())?;
    // Envoy's Authorization service, server side, through the same codec: its messages
    // stay `envoy-types`' (every package is external), only the service is generated, so a
    // CheckRequest's shape is looked at before it is decoded. Only the service's own files
    // are handed over: the imports are only named, never generated.
    let mut auth = envoy;
    auth.file
        .retain(|f| f.package.as_deref() == Some("envoy.service.auth.v3"));
    let mut config = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::proto::codec::AdmittingCodec")
        .compile_well_known_types(true);
    for package in ["envoy", "google", "udpa", "validate", "xds"] {
        config = config.extern_path(
            format!(".{package}"),
            format!("::envoy_types::pb::{package}"),
        );
    }
    // The server's answer is `CheckResponse` on the wire, encoded by hand from the
    // decision (src/server/ext_authz.rs).
    config = config.extern_path(
        ".envoy.service.auth.v3.CheckResponse",
        "crate::server::ext_authz::CheckAnswer",
    );
    config.compile_fds(auth)?;

    // etcd's v3 API (KV, Watch, ...), client side only, for the store (src/store/). The
    // `etcd-client` crate would need a system `protoc`; its protos are vendored instead.
    let etcd = protox::compile(["etcd/api/etcdserverpb/rpc.proto"], ["proto/vendor"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd)?;
    Ok(())
}
