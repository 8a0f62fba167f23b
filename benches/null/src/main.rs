//! Null authorization servers: the floor iot-authz is measured against behind Envoy
//! (`scripts/bench-null.sh`).
//!
//! - `grpc ADDR`: Envoy's `envoy.service.auth.v3.Authorization/Check`, answering every
//!   CheckRequest OK at once (an empty `OkHttpResponse`), on the same tonic server settings
//!   as `iot-authz serve` (the values of `iot_authz::server::ServerOptions::default()`).
//! - `http ADDR`: HTTP/1.1 on axum (the stack of iot-authz's HTTP mode), answering every
//!   request 200 with an empty body at once, as Envoy's HTTP ext_authz filter expects.
//!
//! Both print `listening on ADDR` once bound. No decision, no identity, no metrics, no log:
//! whatever iot-authz costs above these is its own.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse, HttpResponse, OkHttpResponse,
};
use envoy_types::pb::google::rpc;
use iot_authz::server::ServerOptions;
use tonic::{Request, Response, Status};

/// The same allocator as the `iot-authz` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Null;

#[tonic::async_trait]
impl Authorization for Null {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse::default())),
            dynamic_metadata: None,
        }))
    }
}

async fn grpc(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let options = ServerOptions::default();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = AuthorizationServer::new(Null)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(options.concurrency_per_connection)
        .max_concurrent_streams(options.max_concurrent_streams)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(options.max_connection_age)
        .max_connection_age_grace(options.shutdown_grace)
        .http2_max_header_list_size(u32::try_from(options.max_header_bytes).unwrap_or(u32::MAX))
        .tcp_nodelay(true)
        .add_service(service)
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

async fn http(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let router = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    // As iot-authz's HTTP listener: axum's defaults (Nagle's algorithm left on).
    axum::serve(listener, router).await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr) = match args.as_slice() {
        [mode, addr] if mode == "grpc" || mode == "http" => match addr.parse::<SocketAddr>() {
            Ok(a) => (mode.clone(), a),
            Err(e) => {
                eprintln!("not an address: {addr}: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: iot-authz-null grpc|http ADDR");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if mode == "grpc" {
            grpc(addr).await
        } else {
            http(addr).await
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iot-authz-null: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
