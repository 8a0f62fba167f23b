//! Where the expensive queries run: WhoCan, CheckAssign, ListPermissions and Plan (and the
//! AuthZEN searches, which are those) cost time in proportion to the policy (principals,
//! the action catalog, a principal's assignments and the deny assignments), unlike Check. They run on
//! blocking threads, never on the runtime's workers, at most [`QueryPool::limit`] at a
//! time (the rest wait for a turn), so however many callers ask them, Check and ext_authz
//! keep their workers and cores. Each query gets a [`Cancel`] token that turns when its
//! caller is gone (the client cancelled, or the server's deadline dropped the request), and
//! the query loops check it as they go, so no thread keeps burning CPU for an answer
//! nobody will read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tonic::Status;

/// Turns when the query's caller is gone; queries poll it in their loops.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Sets the token when dropped: the handler's future is dropped when its caller goes away.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        (self.0).0.store(true, Ordering::Relaxed);
    }
}

/// The expensive queries' own concurrency limit and blocking threads.
#[derive(Debug)]
pub struct QueryPool {
    /// One per query that may run at once; a running query holds one.
    permits: Arc<tokio::sync::Semaphore>,
    limit: usize,
}

impl Default for QueryPool {
    /// Half the cores (at least one): Check and ext_authz keep the rest.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self::new((cores / 2).max(1))
    }
}

impl QueryPool {
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Queries running now (on their threads, including ones whose caller just left and
    /// that are stopping at their next check): the turns taken.
    pub fn in_flight(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Runs `query` on a blocking thread once a turn is free. If the caller goes away
    /// (this future is dropped) while it waits or runs, the query's [`Cancel`] turns; a
    /// query that stops for it returns what it likes, which nobody reads.
    pub async fn run<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Cancel) -> T + Send + 'static,
    ) -> Result<T, Status> {
        let cancel = Cancel::default();
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let turn = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the query pool is closed"))?;
        tokio::task::spawn_blocking(move || {
            // The turn is given back however the query ends.
            let _turn = turn;
            query(&cancel)
        })
        .await
        .map_err(|e| Status::internal(format!("query failed: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_caller_cancels_its_query_and_frees_its_turn() {
        let pool = Arc::new(QueryPool::new(1));
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        let runner = pool.clone();
        let task = tokio::spawn(async move {
            runner
                .run(move |cancel| {
                    let _ = started_tx.send(());
                    while !cancel.is_cancelled() {
                        std::thread::yield_now();
                    }
                    let _ = stopped_tx.send(());
                })
                .await
        });
        started.await.unwrap();
        assert_eq!(pool.in_flight(), 1);
        task.abort();
        stopped.await.unwrap();
        // The turn is free again: the next query runs.
        assert_eq!(pool.run(|_| 7).await.unwrap(), 7);
    }
}
