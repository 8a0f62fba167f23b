//! Compiles the native API proto (no system `protoc`: `protox` parses it) and writes the
//! descriptor sets that server reflection serves, for the native API and for Envoy's
//! `envoy.service.auth.v3.Authorization` (whose Rust types come from `envoy-types`); and
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

    // etcd's v3 API (KV, Watch, ...), client side only, for the store (src/store/). The
    // `etcd-client` crate would need a system `protoc`; its protos are vendored instead.
    let etcd = protox::compile(["etcd/api/etcdserverpb/rpc.proto"], ["proto/vendor"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(etcd)?;
    Ok(())
}
