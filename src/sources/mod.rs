//! Live policy sources (SPEC §7): watched files and directories, and an HTTP(S) bundle
//! poller. Each reads the whole policy, and the [`Loader`] compiles it off the request path
//! and swaps it in, or rejects it and keeps the last good policy.

pub mod bundle;
pub mod files;
pub mod jwks;

use std::sync::Arc;

pub use crate::live::LoadOutcome;
use crate::policy::{PolicyError, SourceDocument, compile_sources, source};
use crate::store::StoreHost;

/// Compiles and installs policies into one service's live policy (its [`StoreHost`]: with
/// a store, file documents are validated with the store's objects).
#[derive(Debug, Clone)]
pub struct Loader {
    app: Arc<dyn StoreHost>,
}

impl Loader {
    pub fn new(app: Arc<dyn StoreHost>) -> Self {
        Self { app }
    }

    /// Where this loader installs policies.
    pub fn sink(&self) -> &Arc<dyn StoreHost> {
        &self.app
    }

    /// The sources are the policy serving: nothing to load, and an earlier error no longer
    /// describes them.
    pub fn unchanged(&self) -> LoadOutcome {
        self.app.policy().clear_error();
        LoadOutcome::Unchanged
    }

    /// Reads with `read`, then compiles and installs, all on a thread of its own so that
    /// the request path never waits for it; that thread also frees the policy it replaced.
    pub async fn load<F>(&self, read: F) -> LoadOutcome
    where
        F: FnOnce() -> Result<Vec<SourceDocument>, PolicyError> + Send + 'static,
    {
        let app = self.app.clone();
        // The revision hashes the bytes only (SPEC §3), so the names are compared too: a
        // file renamed (`p.yaml` to `p.json`) is read again and validated under its name.
        let current = app
            .policy()
            .current()
            .map(|p| (p.snapshot.revision.clone(), p.snapshot.sources.clone()));
        let store = app.store().cloned();
        let result = tokio::task::spawn_blocking(move || -> Result<LoadOutcome, PolicyError> {
            let sources = read()?;
            if let Some(store) = store {
                // With a store, files are validated with its objects as one policy.
                return store.load_files(&*app, sources);
            }
            if let Some((revision, names)) = &current
                && *revision == source::revision(&sources)
                && names.iter().eq(sources.iter().map(|s| &s.name))
            {
                return Ok(LoadOutcome::Unchanged);
            }
            let snapshot = compile_sources(&sources)?;
            drop(sources);
            let revision = snapshot.revision.clone();
            let previous = app.install(snapshot);
            drop(previous);
            Ok(LoadOutcome::Installed(revision))
        })
        .await;
        match result {
            Ok(Ok(LoadOutcome::Unchanged)) => self.unchanged(),
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                let message = e.to_string();
                self.app.reject(message.clone());
                LoadOutcome::Rejected(message)
            }
            Err(join) => {
                let message = format!("policy load failed: {join}");
                self.app.reject(message.clone());
                LoadOutcome::Rejected(message)
            }
        }
    }
}
