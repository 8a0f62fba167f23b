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
use crate::policy::{PolicyError, SourceDocument};

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

/// `serve --policy-debounce-ms`'s default.
pub const DEFAULT_DEBOUNCE_MS: u64 = 200;
/// `serve --policy-poll-seconds`'s default.
pub const DEFAULT_POLL_SECONDS: u64 = 30;

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(DEFAULT_DEBOUNCE_MS),
            poll_interval: Some(Duration::from_secs(DEFAULT_POLL_SECONDS)),
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

/// The directories to watch: each source directory, the parent of every source, and the
/// parent of every symlink on the way to a source (`/srv/current` → `release-7` in
/// `/srv/current/policy.yaml`), so that replacing that symlink is seen too; a watch on a
/// path follows its symlinks to the directory they name when it is added.
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
        for ancestor in s.ancestors().skip(1) {
            let linked = std::fs::symlink_metadata(ancestor).is_ok_and(|m| m.is_symlink());
            if let (true, Some(parent)) = (linked, ancestor.parent()) {
                targets.push(parent.to_path_buf());
            }
        }
    }
    targets.sort();
    targets.dedup();
    targets
}

/// Creates the watcher (one per source set: inotify instances are a scarce resource).
fn make_watcher(sources: &[PathBuf], events: &mpsc::Sender<()>) -> Option<RecommendedWatcher> {
    let tx = events.clone();
    let owned: Vec<PathBuf> = sources.to_vec();
    notify::recommended_watcher(move |res: notify::Result<Event>| {
        if let Ok(event) = res
            && mutates(&event)
            && (event.paths.is_empty() || event.paths.iter().any(|p| relevant(p, &owned)))
        {
            // A full channel already means "reload pending".
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file watching unavailable; relying on polling"))
    .ok()
}

/// Watches the targets that exist now. Watching a path again is harmless, and a deleted
/// directory's watch is gone with it, so this runs before every read.
fn rewatch(watcher: &mut RecommendedWatcher, sources: &[PathBuf]) {
    for target in watch_targets(sources) {
        if let Err(e) = watcher.watch(&target, RecursiveMode::NonRecursive) {
            tracing::debug!(path = %target.display(), error = %e, "cannot watch (yet)");
        }
    }
}

/// How many times [`read_settled`] reads before it gives up on a pass.
const SETTLE_READS: usize = 10;

/// Reads the policy until two reads `settle` apart agree, and returns that read; `None`
/// when the files kept changing for [`SETTLE_READS`] reads (the change that follows brings
/// another pass). An in-place rewrite (truncate, then write in chunks) can leave a prefix
/// that still parses, such as a file cut right after `denyAssignments:`; a read is only
/// installed once the bytes have held still for a debounce period, so a writer pausing
/// for less than that between chunks never has its torn file served. Writers should still
/// write a new file and rename it over the old one.
async fn read_settled(
    paths: &[PathBuf],
    max_bytes: u64,
    settle: Duration,
) -> Option<Result<Vec<SourceDocument>, PolicyError>> {
    let read = || {
        let paths = paths.to_vec();
        tokio::task::spawn_blocking(move || read_paths(&paths, max_bytes))
    };
    let same = |a: &Result<Vec<SourceDocument>, PolicyError>,
                b: &Result<Vec<SourceDocument>, PolicyError>| match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    };
    let mut previous = read().await.ok()?;
    for _ in 1..SETTLE_READS {
        tokio::time::sleep(settle).await;
        let next = read().await.ok()?;
        if same(&previous, &next) {
            return Some(next);
        }
        previous = next;
    }
    None
}

/// A file watcher whose watches are in place: changes from now on are seen.
pub struct FileWatcher {
    loader: Loader,
    paths: Vec<PathBuf>,
    sources: Vec<PathBuf>,
    options: WatchOptions,
    watcher: Option<RecommendedWatcher>,
    events_tx: mpsc::Sender<()>,
    events: mpsc::Receiver<()>,
}

impl FileWatcher {
    /// Sets up the watches now (synchronously), so that a change made after this returns
    /// is never missed.
    pub fn start(loader: Loader, paths: Vec<PathBuf>, options: WatchOptions) -> Self {
        let sources: Vec<PathBuf> = paths
            .iter()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .collect();
        let (events_tx, events) = mpsc::channel::<()>(1);
        let mut watcher = if options.notify {
            make_watcher(&sources, &events_tx)
        } else {
            None
        };
        if let Some(w) = watcher.as_mut() {
            rewatch(w, &sources);
        }
        Self {
            loader,
            paths,
            sources,
            options,
            watcher,
            events_tx,
            events,
        }
    }

    /// Reloads on change, on `trigger` and on the poll interval until `shutdown` resolves.
    /// The first pass reloads at once, closing the gap between the caller's first read and
    /// the watches.
    pub async fn run(
        mut self,
        mut trigger: mpsc::Receiver<()>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let poll = self
            .options
            .poll_interval
            .unwrap_or(Duration::from_secs(u64::MAX / 4));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut first = true;
        loop {
            if !first {
                tokio::select! {
                    _ = &mut shutdown => return,
                    Some(()) = self.events.recv() => {
                        // Debounce: wait for a quiet period so that multi-chunk writes
                        // settle, but no longer than ten periods, so that a file rewritten
                        // without pause cannot hold every reload back.
                        let limit = tokio::time::sleep(self.options.debounce * 10);
                        tokio::pin!(limit);
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep(self.options.debounce) => break,
                                _ = &mut limit => break,
                                Some(()) = self.events.recv() => {}
                            }
                        }
                    }
                    Some(()) = trigger.recv() => {}
                    _ = ticker.tick() => {}
                }
            }
            first = false;
            // Watch before reading: a directory deleted and made again since the last pass
            // is watched before its files are read, so a file written after this read still
            // sends an event.
            if let Some(w) = self.watcher.as_mut() {
                rewatch(w, &self.sources);
            }
            let Some(read) =
                read_settled(&self.paths, self.options.max_bytes, self.options.debounce).await
            else {
                tracing::debug!("policy files still changing; waiting for the next change");
                continue;
            };
            let outcome = self.loader.load(move || read).await;
            if let LoadOutcome::Installed(revision) = &outcome {
                tracing::info!(%revision, "policy reloaded from files");
            }
            // Keep the sender alive for the watcher callback's clone.
            let _ = &self.events_tx;
        }
    }
}
