//! The Admin API writes through one replica waiting for its next transaction
//! (`Store::admin_queue`): the queue the Admin service (`server::admin`) fills and drains.
//! It lives with the store, which holds one per replica, so the store never names the
//! server.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::objects::{Object, ObjectError};
use crate::live::LoadedPolicy;

/// What a write finds under its key: the stored object, one that could not be decoded, or
/// nothing.
pub(crate) type Existing<'a> = Option<&'a Result<Object, ObjectError>>;

/// One Admin API write: its actor, its object's key under the prefix, and its plan.
pub(crate) struct Write {
    pub(crate) actor: String,
    pub(crate) object: String,
    pub(crate) plan: Arc<Plan>,
}

/// Plans a write (see [`Admin::write`]).
pub(crate) type Plan =
    dyn Fn(&LoadedPolicy, &str, Existing<'_>) -> Result<Option<Object>, Status> + Send + Sync;

/// A write waiting for its replica's next transaction, and where its answer goes.
pub(crate) struct Queued {
    pub(crate) write: Arc<Write>,
    pub(crate) reply: tokio::sync::oneshot::Sender<Result<String, Status>>,
}

/// The most writes one transaction holds (etcd refuses more than 128 operations, its
/// `--max-txn-ops` default, in a transaction: the writes, and the marker).
pub const MAX_GROUP: usize = 64;

/// The most bytes of values one transaction carries (etcd's default request limit is
/// 1.5 MiB); a write past it waits for the next transaction.
pub(crate) const MAX_GROUP_BYTES: usize = 1024 * 1024;

/// The Admin API writes waiting for their replica's next transaction (`Store::admin_queue`).
#[derive(Default)]
pub struct AdminQueue {
    pub(crate) writes: std::collections::VecDeque<Queued>,
    /// A task is committing the queue.
    pub(crate) draining: bool,
    /// The writes of the group being validated and committed.
    pub(crate) committing: usize,
    /// When the last group was taken, and how many writes it held.
    pub(crate) last_group: Option<(tokio::time::Instant, usize)>,
}

impl std::fmt::Debug for AdminQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminQueue")
            .field("writes", &self.writes.len())
            .field("draining", &self.draining)
            .finish()
    }
}

impl AdminQueue {
    /// The writes waiting for a transaction, and those of the group being committed.
    pub fn len(&self) -> (usize, usize) {
        (self.writes.len(), self.committing)
    }

    /// The next group, in arrival order: at most [`MAX_GROUP`] writes, one per key (a
    /// second write of a key waits for the next transaction, which a transaction's
    /// operations cannot both touch).
    pub(crate) fn take_group(&mut self) -> Vec<Queued> {
        let mut group: Vec<Queued> = Vec::new();
        let mut later = std::collections::VecDeque::new();
        while group.len() < MAX_GROUP
            && let Some(q) = self.writes.pop_front()
        {
            if group.iter().any(|g| g.write.object == q.write.object) {
                later.push_back(q);
            } else {
                group.push(q);
            }
        }
        later.append(&mut self.writes);
        self.writes = later;
        group
    }

    /// When the next group is to be taken, given at most `window` between two groups:
    /// `None` (at once) after a quiet spell, when a single write came alone after a
    /// single write (one client writing one at a time never waits), or when a full group
    /// waits already (or nothing does); otherwise the writes
    /// arriving until the window's end join the group. Under concurrent writes a group is
    /// validated and committed at most once per window: each validation costs what the
    /// changes pending since the last compaction cost, so fewer, larger groups take the
    /// store thread far less CPU for the same writes.
    pub(crate) fn gather_until(&self, window: Duration) -> Option<tokio::time::Instant> {
        let (at, size) = self.last_group?;
        let waiting = self.writes.len();
        // Nothing to gather for, a full group waiting already, or one writer at a time.
        if waiting == 0 || waiting >= MAX_GROUP || (size <= 1 && waiting <= 1) {
            return None;
        }
        let until = at.checked_add(window)?;
        (until > tokio::time::Instant::now()).then_some(until)
    }

    /// Writes taken in a group and not committed with it: first in line again.
    pub(crate) fn put_back(&mut self, rest: Vec<Queued>) {
        for q in rest.into_iter().rev() {
            self.writes.push_front(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(object: &str) -> Queued {
        let (reply, _) = tokio::sync::oneshot::channel();
        Queued {
            write: Arc::new(Write {
                actor: "user:root".into(),
                object: object.into(),
                plan: Arc::new(|_: &LoadedPolicy, _: &str, _: Existing<'_>| Ok(None)),
            }),
            reply,
        }
    }

    #[test]
    fn concurrent_writes_are_gathered_for_a_window_and_a_lone_writer_never_waits() {
        // An hour: "now" does not reach the window's end while the test runs.
        let window = Duration::from_secs(3600);
        let now = tokio::time::Instant::now;
        let mut queue = AdminQueue::default();
        queue.writes.push_back(queued("assignments/a-1"));
        // The first group, after a quiet spell: at once.
        assert_eq!(queue.gather_until(window), None);
        let group = queue.take_group();
        let taken = now();
        queue.last_group = Some((taken, group.len()));
        // One client writing one at a time: a single write after a single write, at once.
        queue.writes.push_back(queued("assignments/a-2"));
        assert_eq!(queue.gather_until(window), None);
        // Two waiting: gathered until a window after the last group was taken.
        queue.writes.push_back(queued("assignments/a-3"));
        assert_eq!(queue.gather_until(window), Some(taken + window));
        // A group of several taken: the next, even a single write, waits too.
        let group = queue.take_group();
        assert_eq!(group.len(), 2);
        let taken = now();
        queue.last_group = Some((taken, group.len()));
        queue.writes.push_back(queued("assignments/a-4"));
        assert_eq!(queue.gather_until(window), Some(taken + window));
        // A full group waiting, or none: at once.
        for _ in 0..MAX_GROUP {
            queue.writes.push_back(queued("assignments/a-5"));
        }
        assert_eq!(queue.gather_until(window), None);
        queue.writes.clear();
        assert_eq!(queue.gather_until(window), None);
        queue.writes.push_back(queued("assignments/a-4"));
        // Once the window is over (or with none): at once.
        queue.last_group = Some((taken - 2 * window, 2));
        assert_eq!(queue.gather_until(window), None);
        queue.last_group = Some((taken, 2));
        assert_eq!(queue.gather_until(Duration::ZERO), None);
    }
}
