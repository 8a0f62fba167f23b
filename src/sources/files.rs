//! Watched policy files and directories.
//!
//! The watcher listens on each source directory and on the parent of every source (file or
//! directory), so that editors' write-then-rename, files deleted and recreated, directories
//! deleted and recreated, and Kubernetes ConfigMap updates (a `..data` symlink swapped to a
//! new timestamped directory) all produce an event. Events are debounced, then the whole
//! policy is read again; unchanged bytes are a no-op. A periodic poll and `SIGHUP` (through
//! the `trigger` channel) force a reload too, so a missed event only delays a change.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{LoadOutcome, Loader};
use crate::policy::source::read_paths;

/// How the file watcher behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after the last event before reloading.
    pub debounce: Duration,
    /// Reload this often even without events (`None`: never).
    pub poll_interval: Option<Duration>,
    /// Use file-system notifications (off: only polls and triggers).
    pub notify: bool,
    /// Largest policy accepted, in bytes.
    pub max_bytes: u64,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(200),
            poll_interval: Some(Duration::from_secs(30)),
            notify: true,
            max_bytes: crate::policy::source::DEFAULT_MAX_POLICY_BYTES,
        }
    }
}

/// Whether an event may change the policy (reads of our own do not).
fn mutates(event: &Event) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Whether an event path concerns the sources: a source itself, something inside a source
/// directory, or a `..`-prefixed ConfigMap entry next to a source.
fn relevant(path: &Path, sources: &[PathBuf]) -> bool {
    sources.iter().any(|s| {
        path.starts_with(s)
            || s.starts_with(path)
            || (path.parent() == s.parent()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("..")))
            || path.parent() == Some(s.as_path())
    })
}

/// The directories to watch: each source directory and the parent of every source.
fn watch_targets(sources: &[PathBuf]) -> Vec<PathBuf> {
    let mut targets = Vec::new();
    for s in sources {
        if s.is_dir() {
            targets.push(s.clone());
        }
        if let Some(parent) = s.parent() {
            let parent = if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            };
            targets.push(parent);
        }
    }
    targets.sort();
    targets.dedup();
    targets
}

/// (Re)creates the watcher over the targets that exist now.
fn make_watcher(sources: &[PathBuf], events: &mpsc::Sender<()>) -> Option<RecommendedWatcher> {
    let tx = events.clone();
    let owned: Vec<PathBuf> = sources.to_vec();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
        if let Ok(event) = res
            && mutates(&event)
            && (event.paths.is_empty() || event.paths.iter().any(|p| relevant(p, &owned)))
        {
            // A full channel already means "reload pending".
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file watching unavailable; relying on polling"))
    .ok()?;
    for target in watch_targets(sources) {
        if let Err(e) = watcher.watch(&target, RecursiveMode::NonRecursive) {
            tracing::debug!(path = %target.display(), error = %e, "cannot watch (yet)");
        }
    }
    Some(watcher)
}

/// Watches `paths` and reloads on change until `shutdown` resolves.
pub async fn watch(
    loader: Loader,
    paths: Vec<PathBuf>,
    options: WatchOptions,
    mut trigger: mpsc::Receiver<()>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let sources: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    let mut _watcher = if options.notify {
        make_watcher(&sources, &events_tx)
    } else {
        None
    };
    let poll = options
        .poll_interval
        .unwrap_or(Duration::from_secs(u64::MAX / 4));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            Some(()) = events.recv() => {
                // Debounce: wait for a quiet period so that multi-chunk writes settle.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(options.debounce) => break,
                        Some(()) = events.recv() => {}
                    }
                }
            }
            Some(()) = trigger.recv() => {}
            _ = ticker.tick() => {}
        }
        let read_paths_owned = paths.clone();
        let max = options.max_bytes;
        let outcome = loader
            .load(move || read_paths(&read_paths_owned, max))
            .await;
        if let LoadOutcome::Installed(revision) = &outcome {
            tracing::info!(%revision, "policy reloaded from files");
        }
        // Directories may have been replaced: watch what exists now.
        if options.notify {
            // The new watcher is live before the old one goes, so no change slips between.
            let fresh = make_watcher(&sources, &events_tx);
            _watcher = fresh;
        }
    }
}
