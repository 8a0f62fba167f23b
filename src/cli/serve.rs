//! `iot-authz serve`: logging, the policy, the listeners and signal handling around
//! [`crate::server::run`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::cli::{EXIT_ERROR, EXIT_OK, ServeArgs};
use crate::live::PolicyState;
use crate::policy::{PolicyError, SourceDocument, compile_sources};
use crate::server::cache::CacheOptions;
use crate::server::decision_log::LogTarget;
use crate::server::{App, AppOptions, ServerOptions, TlsFiles};
use crate::sources::Loader;
use crate::sources::bundle::{BundleClient, BundleOptions, Fetched};
use crate::sources::files::{self, WatchOptions};
use crate::store::{Store, StoreOptions};

/// The first policy, before the listeners open: files are read and compiled now (invalid is
/// fatal); a bundle is fetched once (unreachable is not fatal: the server starts unready and
/// keeps polling; a fetched but invalid bundle is fatal).
enum FirstPolicy {
    Ready(Box<crate::policy::Snapshot>),
    Pending,
    Invalid(PolicyError),
}

fn first_policy(
    args: &ServeArgs,
    runtime: &tokio::runtime::Runtime,
    bundle: &mut Option<BundleClient>,
) -> anyhow::Result<FirstPolicy> {
    Ok(match first_sources(args, runtime, bundle)? {
        Ok(Some(sources)) => match compile_sources(&sources) {
            Ok(s) => FirstPolicy::Ready(Box::new(s)),
            Err(e) => FirstPolicy::Invalid(e),
        },
        Ok(None) => FirstPolicy::Pending,
        Err(e) => FirstPolicy::Invalid(e),
    })
}

/// The store's options, when `--etcd-endpoints` is given (a TLS file that cannot be read
/// is an error).
fn store_options(args: &ServeArgs) -> Result<Option<StoreOptions>, super::admin::EtcdArgsError> {
    let mut options = args.etcd.options()?;
    if let Some(options) = &mut options {
        options.max_value_bytes = args.etcd_max_value_bytes;
        options.apply_window = std::time::Duration::from_millis(args.etcd_apply_window_ms);
        options.compact_at = args.etcd_compact_at;
    }
    Ok(options)
}

/// The file, bundle or embedded documents, read but not yet compiled (with a store that
/// needs the store's objects). `Ok(None)`: the bundle is not reachable yet.
fn first_sources(
    args: &ServeArgs,
    runtime: &tokio::runtime::Runtime,
    bundle: &mut Option<BundleClient>,
) -> anyhow::Result<Result<Option<Vec<SourceDocument>>, PolicyError>> {
    let sources = if let Some(url) = &args.policy_url {
        let mut options = BundleOptions::new(url.clone());
        options.interval = Duration::from_secs(args.policy_url_interval_seconds.max(1));
        options.token_file = args.policy_url_token_file.clone();
        options.max_bytes = args.max_policy_bytes;
        let mut client = BundleClient::new(options).map_err(|e| anyhow::anyhow!("{e}"))?;
        let fetched = match runtime.block_on(client.fetch()) {
            Ok(Fetched::Bundle { documents, etag }) => {
                client.accept(etag);
                Some(documents)
            }
            Ok(Fetched::NotModified) => None,
            Err(e) => {
                tracing::warn!(error = %e, "policy bundle not reachable yet; not ready until it is");
                None
            }
        };
        *bundle = Some(client);
        fetched
    } else if args.policy.is_empty() {
        tracing::info!(
            "serving the embedded demo policy (built-in role packs plus demo principals and routes); pass --policy to serve your own"
        );
        Some(crate::demo::sources())
    } else {
        match crate::policy::source::read_paths(&args.policy, args.max_policy_bytes) {
            Ok(s) => Some(s),
            Err(e) => return Ok(Err(e)),
        }
    };
    Ok(Ok(sources))
}

/// The documents' parse problems, if any: with a store they are compiled only once it has
/// been read, and a broken file is still fatal at start-up.
fn parse_problems(sources: &[SourceDocument]) -> Result<(), PolicyError> {
    let problems: Vec<_> = sources.iter().filter_map(|s| s.parse().err()).collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(PolicyError { problems })
    }
}

/// Runs the server until SIGTERM or SIGINT. An invalid policy at start-up exits 2.
pub fn serve(args: &ServeArgs) -> anyhow::Result<u8> {
    crate::install_crypto_provider();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        builder.worker_threads(args.worker_threads);
    }
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let telemetry = {
        let _entered = runtime.enter();
        crate::telemetry::init(if args.json {
            crate::telemetry::LogFormat::Json
        } else {
            args.log_format
        })
    };
    let mut bundle = None;
    let store = match store_options(args) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(EXIT_ERROR);
        }
    };
    // With a store the files are validated with its objects, once it has been read; until
    // then the server is not ready.
    let mut first_files = None;
    let first = if store.is_some() {
        let files = first_sources(args, &runtime, &mut bundle)?;
        match files.and_then(|f| parse_problems(f.as_deref().unwrap_or_default()).map(|()| f)) {
            Ok(files) => {
                first_files = files;
                FirstPolicy::Pending
            }
            Err(e) => FirstPolicy::Invalid(e),
        }
    } else {
        first_policy(args, &runtime, &mut bundle)?
    };
    let snapshot = match first {
        FirstPolicy::Ready(s) => {
            tracing::info!(revision = %s.revision, documents = s.counts.documents, assignments = s.counts.assignments, "policy loaded");
            Some(*s)
        }
        FirstPolicy::Pending => None,
        FirstPolicy::Invalid(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_ERROR);
        }
    };
    let options = server_options(args);
    runtime.block_on(async {
        let grpc = TcpListener::bind(&args.grpc_addr)
            .await
            .with_context(|| format!("binding gRPC address {}", args.grpc_addr))?;
        let http = TcpListener::bind(&args.http_addr)
            .await
            .with_context(|| format!("binding HTTP address {}", args.http_addr))?;
        let state = match snapshot {
            Some(s) => PolicyState::with_snapshot(s),
            None => PolicyState::new(),
        };
        let app = Arc::new(
            App::with_options(Arc::new(state), &app_options(args)).context("opening the decision log")?,
        );
        if args.shadow {
            tracing::warn!("shadow mode: every request is let through; would-be denials are only logged and marked");
        }
        let loader = Loader::new(app.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        if let Some(options) = store {
            let store = Arc::new(Store::new(options).map_err(|e| anyhow::anyhow!("{e}"))?);
            store.inputs().files = first_files.take();
            let _ = app.store.set(store.clone());
            tokio::spawn(crate::store::follow::follow(store, app.clone(), stopped()));
        }
        // SIGHUP forces a reload of the sources (a fetch of the bundle); the embedded demo
        // has nothing to reload.
        let (hup_tx, hup_rx) = mpsc::channel::<()>(1);
        spawn_sighup((bundle.is_some() || !args.policy.is_empty()).then_some(hup_tx));
        if let Some(client) = bundle.take() {
            tokio::spawn(crate::sources::bundle::poll(
                client,
                loader,
                hup_rx,
                stopped(),
            ));
        } else if !args.policy.is_empty() {
            let options = WatchOptions {
                debounce: Duration::from_millis(args.policy_debounce_ms),
                poll_interval: (args.policy_poll_seconds > 0)
                    .then(|| Duration::from_secs(args.policy_poll_seconds)),
                notify: !args.no_watch,
                max_bytes: args.max_policy_bytes,
            };
            // Watches are in place before the ready line is printed.
            let watcher = files::FileWatcher::start(loader, args.policy.clone(), options);
            tokio::spawn(watcher.run(hup_rx, stopped()));
        }
        // The signal handlers are in place before the ready line, so a caller may send
        // SIGTERM as soon as it reads it.
        let shutdown = shutdown_signal();
        // The ready line: scripts and tests wait for it instead of sleeping.
        println!(
            "iot-authz listening grpc={} http={}",
            grpc.local_addr()?,
            http.local_addr()?
        );
        tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, "listening");
        crate::server::run(app, options, grpc, http, async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        })
        .await
    })?;
    {
        let _entered = runtime.enter();
        telemetry.shutdown();
    }
    tracing::info!("stopped");
    Ok(EXIT_OK)
}

/// The server's limits and timeouts from the command line.
fn server_options(args: &ServeArgs) -> ServerOptions {
    ServerOptions {
        max_message_bytes: args.max_message_bytes,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        concurrency_per_connection: args.concurrency_per_connection,
        max_concurrent_streams: args.max_concurrent_streams,
        shutdown_delay: Duration::from_millis(args.shutdown_delay_ms),
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
        opening_timeout: ServerOptions::default().opening_timeout,
        max_connections: args.max_connections,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        max_connection_age: Duration::from_secs(args.max_connection_age_seconds),
        max_header_bytes: args.max_header_bytes,
        grpc_idle_timeout: Duration::from_millis(args.grpc_idle_timeout_ms),
        tls: args
            .tls_cert
            .as_ref()
            .zip(args.tls_key.as_ref())
            .map(|(cert, key)| TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_client_ca.clone(),
            }),
    }
}

/// The app's optional parts from the command line.
fn app_options(args: &ServeArgs) -> AppOptions {
    let cache = CacheOptions {
        capacity: args.decision_cache_size,
        ttl: Duration::from_secs(args.decision_cache_ttl_seconds.max(1)),
    };
    AppOptions {
        cache: Some(cache),
        decision_log: args
            .decision_log
            .as_deref()
            .map(|t| (LogTarget::parse(t), args.decision_log_sample)),
        shadow: args.shadow,
        keys: Default::default(),
        console: args.console,
        max_concurrent_queries: args
            .max_concurrent_queries
            .and_then(|n| usize::try_from(n).ok()),
        query_priority: args.query_priority,
    }
}

/// Forwards SIGHUP to the reload trigger; without one (the embedded demo), SIGHUP is
/// logged and ignored rather than ending the process.
fn spawn_sighup(trigger: Option<mpsc::Sender<()>>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match &trigger {
                Some(trigger) => {
                    tracing::info!("SIGHUP: reloading the policy");
                    // A full queue means a reload is already pending.
                    let _ = trigger.try_send(());
                }
                None => tracing::info!("SIGHUP ignored: the embedded demo policy has no source"),
            }
        }
    });
    #[cfg(not(unix))]
    drop(trigger);
}

/// Installs the SIGTERM and SIGINT handlers now, so a signal that arrives as soon as the
/// ready line is out is already ours (not the default action, which ends the process at
/// once), and returns a future that completes on either. Must run inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut term, mut int) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = recv(&mut term) => {},
                _ = recv(&mut int) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: draining in-flight requests");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::store_options;
    use crate::cli::{Cli, Command};

    fn parsed(extra: &[&str]) -> Result<Box<crate::cli::ServeArgs>, clap::Error> {
        let args = [
            "iot-authz",
            "serve",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
        ];
        let cli = Cli::try_parse_from(args.iter().chain(extra))?;
        match cli.command {
            Command::Serve(args) => Ok(args),
            _ => panic!("not serve"),
        }
    }

    #[test]
    fn the_store_flags_reach_the_store_options_within_their_bounds() {
        let args = parsed(&["--etcd-compact-at", "5", "--etcd-apply-window-ms", "7"]).unwrap();
        let options = store_options(&args).unwrap().unwrap();
        assert_eq!(options.compact_at, 5);
        assert_eq!(options.apply_window, std::time::Duration::from_millis(7));
        let defaults = store_options(&parsed(&[]).unwrap()).unwrap().unwrap();
        assert_eq!(defaults.compact_at, crate::store::COMPACT_AT);
        for bad in [
            ["--etcd-compact-at", "0"],
            ["--etcd-compact-at", "1000001"],
            ["--etcd-apply-window-ms", "10001"],
        ] {
            assert!(parsed(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
