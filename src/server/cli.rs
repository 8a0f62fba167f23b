//! `iot-authz serve`: logging, the policy, the listeners and signal handling around
//! [`super::run`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use super::state::PolicyState;
use super::{App, ServerOptions, TlsFiles};
use crate::cli::{EXIT_ERROR, EXIT_OK, ServeArgs, load_policy};

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the server until SIGTERM or SIGINT. An invalid policy at start-up exits 2.
pub fn serve(args: &ServeArgs) -> anyhow::Result<u8> {
    init_logging(&args.log_format);
    let snapshot = match load_policy(&args.policy) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    if args.policy.is_empty() {
        tracing::info!(
            "serving the embedded demo policy (built-in role packs plus demo principals and routes); pass --policy to serve your own"
        );
    }
    tracing::info!(revision = %snapshot.revision, documents = snapshot.counts.documents, assignments = snapshot.counts.assignments, "policy loaded");
    let options = ServerOptions {
        max_message_bytes: args.max_message_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        concurrency_per_connection: args.concurrency_per_connection,
        max_concurrent_streams: args.max_concurrent_streams,
        tls: args
            .tls_cert
            .as_ref()
            .zip(args.tls_key.as_ref())
            .map(|(cert, key)| TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            }),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let grpc = TcpListener::bind(&args.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC address {}", args.grpc_addr))?;
        let http = TcpListener::bind(&args.http_addr)
            .await
            .with_context(|| format!("binding HTTP address {}", args.http_addr))?;
        let app = Arc::new(App::new(Arc::new(PolicyState::with_snapshot(snapshot))));
        // The ready line: scripts and tests wait for it instead of sleeping.
        println!(
            "iot-authz listening grpc={} http={}",
            grpc.local_addr()?,
            http.local_addr()?
        );
        tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, "listening");
        super::run(app, options, grpc, http, shutdown_signal()).await
    })?;
    tracing::info!("stopped");
    Ok(EXIT_OK)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: draining in-flight requests");
}
