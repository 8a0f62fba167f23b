//! The store (SPEC §9): policy objects kept in etcd, one per key, merged with the file or
//! bundle documents and validated with them as one policy.
//!
//! Each replica reads the prefix once ([`follow`]), then follows etcd's watch from that
//! revision; every change is compiled off the request path and installed, or rejected
//! like a bad file (the last good policy keeps serving). A compacted or broken watch is
//! resumed by a fresh read. Until the first read succeeds the server is not ready: it never
//! answers from the files alone, since the store may hold deny assignments.

pub mod etcd;
pub mod follow;
pub mod objects;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use crate::policy::document::Document;
use crate::policy::{PolicyError, Problem, Snapshot, SourceDocument, compile_documents, source};
use crate::server::App;
use crate::server::state::{LoadedPolicy, retire};
use crate::sources::LoadOutcome;

pub use etcd::{Etcd, EtcdAuth, EtcdTls, Password};
pub use objects::{Kind, Object, Objects};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "/iot-authz/";

/// How long a load waits for requests in flight to let go of the policy it replaced.
const RETIRE_PATIENCE: Duration = Duration::from_secs(5);

/// Where the store is and how it is read.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub max_value_bytes: usize,
    pub tls: Option<EtcdTls>,
    /// etcd user/password authentication.
    pub auth: Option<EtcdAuth>,
}

impl StoreOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            prefix: DEFAULT_PREFIX.into(),
            max_value_bytes: objects::DEFAULT_MAX_VALUE_BYTES,
            tls: None,
            auth: None,
        }
    }
}

/// What the policy is made of: the file (or bundle) documents and the store's objects.
#[derive(Debug, Default)]
pub struct Inputs {
    /// The last file documents that compiled (with the store); `None` until the first
    /// (a bundle not fetched yet).
    pub files: Option<Vec<SourceDocument>>,
    /// Every key under the prefix, as of `revision`; `None` until the first read.
    pub objects: Option<Objects>,
    /// The etcd revision `objects` were read at (or brought up to by the watch).
    pub revision: i64,
    /// The serving policy is the files plus `objects` (no change under the prefix was
    /// rejected since): only then may the revision it answers at advance.
    pub consistent: bool,
}

/// The store of one server: its connection, its inputs and its status.
#[derive(Debug)]
pub struct Store {
    pub options: StoreOptions,
    pub etcd: Etcd,
    inputs: Mutex<Inputs>,
    last_contact: Mutex<Option<Instant>>,
    reachable: AtomicBool,
    /// The store revision the serving policy answers at (0 before the first load).
    through: watch::Sender<i64>,
    /// The store revision whose objects were last compiled, installed or rejected: a
    /// change at that revision has been judged (status, tests).
    judged: watch::Sender<i64>,
    /// Asks the watch for a progress report (a token names a later revision).
    pub(crate) progress: Notify,
}

impl Store {
    pub fn new(options: StoreOptions) -> Result<Self, String> {
        let etcd = Etcd::connect(&options.endpoints, options.tls.as_ref())?
            .with_auth(options.auth.clone());
        Ok(Self {
            options,
            etcd,
            inputs: Mutex::new(Inputs::default()),
            last_contact: Mutex::new(None),
            reachable: AtomicBool::new(false),
            through: watch::Sender::new(0),
            judged: watch::Sender::new(0),
            progress: Notify::new(),
        })
    }

    /// The document name store objects are reported under.
    pub fn document_name(&self) -> String {
        format!("etcd:{}", self.options.prefix)
    }

    pub fn inputs(&self) -> MutexGuard<'_, Inputs> {
        match self.inputs.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// etcd answered.
    pub fn contact(&self) {
        if let Ok(mut t) = self.last_contact.lock() {
            *t = Some(Instant::now());
        }
        self.reachable.store(true, Ordering::Relaxed);
    }

    /// etcd did not answer.
    pub fn lost(&self) {
        self.reachable.store(false, Ordering::Relaxed);
    }

    /// Seconds since etcd last answered (`None`: never).
    pub fn seconds_since_contact(&self) -> Option<f64> {
        self.last_contact
            .lock()
            .ok()
            .and_then(|t| t.map(|t| t.elapsed().as_secs_f64()))
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// The store revision the serving policy answers at.
    pub fn through(&self) -> i64 {
        *self.through.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.through.subscribe()
    }

    /// Follows the revision of the last change judged (installed or rejected).
    pub fn judged(&self) -> watch::Receiver<i64> {
        self.judged.subscribe()
    }

    /// Nothing changed under the prefix up to `revision` (a watch progress report): the
    /// serving policy, if it is the files plus the objects, answers at `revision` too.
    pub fn advance(&self, app: &App, revision: i64) {
        let mut inputs = self.inputs();
        if revision <= inputs.revision {
            return;
        }
        inputs.revision = revision;
        if inputs.consistent
            && let Some(policy) = app.policy.current()
        {
            policy.store_revision.fetch_max(revision, Ordering::AcqRel);
            self.answers_at(app, revision);
        }
    }

    /// The serving policy answers at `revision` now: tells the requests waiting for a token
    /// and the metric (GetPolicyStatus reads the policy's own revision).
    fn answers_at(&self, app: &App, revision: i64) {
        app.metrics.store_revision.set(revision);
        self.through.send_replace(revision);
    }

    /// Compiles the files with the store's objects: the one place a served policy is made
    /// when a store is configured.
    pub fn compose(
        &self,
        files: &[SourceDocument],
        objects: &Objects,
    ) -> Result<Snapshot, PolicyError> {
        let name = self.document_name();
        let mut problems = Vec::new();
        let mut docs: Vec<(String, Document)> = Vec::with_capacity(files.len() + 1);
        for file in files {
            match file.parse() {
                Ok(doc) => docs.push((file.name.clone(), doc)),
                Err(p) => problems.push(p),
            }
        }
        match objects::document(objects) {
            Ok(doc) => docs.push((name.clone(), doc)),
            Err(bad) => problems.extend(bad.into_iter().map(|(key, message)| {
                Problem::new(
                    &name,
                    format!("`{}`", crate::policy::syntax::escape(&key)),
                    message,
                )
            })),
        }
        if !problems.is_empty() {
            return Err(PolicyError { problems });
        }
        let mut snapshot = compile_documents(&docs)?;
        snapshot.revision = source::revision(files);
        Ok(snapshot)
    }

    /// New file (or bundle) documents: compiled with the store's objects and installed, or
    /// rejected. Runs on a blocking thread. Before the store is first read they are only
    /// kept (the server stays unready).
    pub fn load_files(
        &self,
        app: &App,
        files: Vec<SourceDocument>,
    ) -> Result<LoadOutcome, PolicyError> {
        let mut inputs = self.inputs();
        if let Some(current) = &inputs.files
            && source::revision(current) == source::revision(&files)
            && current
                .iter()
                .map(|s| &s.name)
                .eq(files.iter().map(|s| &s.name))
        {
            return Ok(LoadOutcome::Unchanged);
        }
        let Some(objects) = &inputs.objects else {
            inputs.files = Some(files);
            return Ok(LoadOutcome::Unchanged);
        };
        let snapshot = self.compose(&files, objects)?;
        inputs.files = Some(files);
        let revision = snapshot.revision.clone();
        let previous = self.install(app, &mut inputs, snapshot);
        drop(inputs);
        let _freed_here = retire(previous, RETIRE_PATIENCE);
        Ok(LoadOutcome::Installed(revision))
    }

    /// The store's objects changed (a fresh read, or watch events applied to `inputs`):
    /// compiles and installs, or records the error. Runs on a blocking thread.
    pub fn recompile(&self, app: &App) -> LoadOutcome {
        let mut inputs = self.inputs();
        let judged = inputs.revision;
        let (Some(files), Some(objects)) = (&inputs.files, &inputs.objects) else {
            return LoadOutcome::Unchanged;
        };
        let mut previous = None;
        let outcome = match self.compose(files, objects) {
            Ok(snapshot) => {
                let revision = snapshot.revision.clone();
                previous = self.install(app, &mut inputs, snapshot);
                drop(inputs);
                LoadOutcome::Installed(revision)
            }
            Err(e) => {
                inputs.consistent = false;
                drop(inputs);
                let message = format!("store change rejected: {e}");
                app.reject(message.clone());
                LoadOutcome::Rejected(message)
            }
        };
        self.judged.send_replace(judged);
        let _freed_here = retire(previous, RETIRE_PATIENCE);
        outcome
    }

    fn install(
        &self,
        app: &App,
        inputs: &mut Inputs,
        snapshot: Snapshot,
    ) -> Option<Arc<LoadedPolicy>> {
        inputs.consistent = true;
        let revision = inputs.revision;
        let previous = app.install_at(snapshot, revision);
        self.answers_at(app, revision);
        previous
    }
}

/// A token naming a store revision (SPEC §10). Opaque to clients.
pub fn token(revision: i64) -> String {
    if revision <= 0 {
        String::new()
    } else {
        format!("r{revision}")
    }
}

/// The revision a token names; `Err` for anything that is not a token of ours.
pub fn parse_token(token: &str) -> Result<i64, String> {
    token
        .strip_prefix('r')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!(
                "consistency token `{}` is not one this service issued",
                crate::policy::syntax::escape(token)
            )
        })
}

/// The request header that carries a consistency token in ext_authz and the HTTP modes.
pub const CONSISTENCY_HEADER: &str = "x-iotauthz-consistency";

/// The longest a request waits for its replica to catch up with a token.
pub const MAX_TOKEN_WAIT: Duration = Duration::from_secs(2);

/// Why a request could not be answered at its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token (`INVALID_ARGUMENT`, 400).
    Invalid(String),
    /// The replica did not catch up in time (`UNAVAILABLE`, 503).
    Behind(String),
}

/// Waits until the policy answers at least at `token`'s revision, up to `limit` (itself at
/// most [`MAX_TOKEN_WAIT`]). Without a store a token is refused as `Behind`: no state
/// here can be shown to contain the write it names. An empty token asks for nothing.
pub async fn wait_for(app: &App, token: &str, limit: Option<Duration>) -> Result<(), TokenError> {
    if token.is_empty() {
        return Ok(());
    }
    let wanted = parse_token(token).map_err(TokenError::Invalid)?;
    let Some(store) = app.store.get() else {
        return Err(TokenError::Behind(
            "this server has no store, so it cannot answer at a consistency token".into(),
        ));
    };
    if store.through() >= wanted {
        return Ok(());
    }
    // A tenth of the caller's deadline is left to send the refusal before it expires.
    let limit = limit
        .map_or(MAX_TOKEN_WAIT, |d| d - d / 10)
        .min(MAX_TOKEN_WAIT);
    let mut rx = store.subscribe();
    store.progress.notify_one();
    let waited = tokio::time::timeout(limit, async {
        // A report may prove the revision current without any event: ask again now and then.
        loop {
            tokio::select! {
                r = rx.wait_for(|t| *t >= wanted) => return r.is_ok(),
                () = tokio::time::sleep(Duration::from_millis(100)) => store.progress.notify_one(),
            }
        }
    })
    .await;
    match waited {
        Ok(true) => Ok(()),
        _ => Err(TokenError::Behind(format!(
            "this replica has not caught up with the consistency token (it answers at {}, the token names {})",
            token_or_none(store.through()),
            escape_token(token)
        ))),
    }
}

fn token_or_none(revision: i64) -> String {
    if revision <= 0 {
        "no store revision yet".into()
    } else {
        token(revision)
    }
}

fn escape_token(token: &str) -> String {
    crate::policy::syntax::escape(token)
}

/// The token of the state a policy answers at (empty without a store).
pub fn token_of(policy: &LoadedPolicy) -> String {
    token(policy.store_revision())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_anything_else() {
        assert_eq!(parse_token(&token(42)), Ok(42));
        assert!(parse_token("42").is_err());
        assert!(parse_token("r-1").is_err());
        assert!(parse_token("r0").is_err());
        assert_eq!(token(0), "");
    }
}
