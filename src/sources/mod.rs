//! Live policy sources (SPEC §7): watched files and directories, and an HTTP(S) bundle
//! poller. Each reads the whole policy, and the [`Loader`] compiles it off the request path
//! and swaps it in, or rejects it and keeps the last good policy.

pub mod bundle;
pub mod files;

use std::sync::Arc;

use crate::policy::{PolicyError, SourceDocument, compile_sources, source};
use crate::server::App;

/// What one load attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// A new policy is serving (its revision).
    Installed(String),
    /// The sources hash to the revision already serving: nothing to do.
    Unchanged,
    /// Rejected; the last good policy keeps serving.
    Rejected(String),
}

/// Compiles and installs policies for one [`App`].
#[derive(Debug, Clone)]
pub struct Loader {
    app: Arc<App>,
}

impl Loader {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// Reads with `read`, then compiles and installs, all on a blocking thread so that the
    /// request path never waits for it.
    pub async fn load<F>(&self, read: F) -> LoadOutcome
    where
        F: FnOnce() -> Result<Vec<SourceDocument>, PolicyError> + Send + 'static,
    {
        let current = self
            .app
            .policy
            .current()
            .map(|p| p.snapshot.revision.clone());
        let result = tokio::task::spawn_blocking(move || -> Result<Option<_>, PolicyError> {
            let sources = read()?;
            if current.as_deref() == Some(source::revision(&sources).as_str()) {
                return Ok(None);
            }
            compile_sources(&sources).map(Some)
        })
        .await;
        match result {
            Ok(Ok(None)) => LoadOutcome::Unchanged,
            Ok(Ok(Some(snapshot))) => {
                let revision = snapshot.revision.clone();
                self.app.install(snapshot);
                LoadOutcome::Installed(revision)
            }
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
