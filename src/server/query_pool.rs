//! Where the expensive queries run: WhoCan, CheckAssign, ListPermissions and Plan (and the
//! AuthZEN searches, which are those) cost time in proportion to the policy (principals,
//! the action catalog, a principal's assignments and the deny assignments), unlike Check. They run on
//! the pool's own threads, never on the runtime's workers, at most [`QueryPool::limit`] at a
//! time (the rest wait for a turn), so however many callers ask them, Check and ext_authz
//! keep their workers. The pool's threads run under the OS's idle scheduling class
//! (`SCHED_IDLE` on Linux): a runtime worker woken with a Check to do takes the core from
//! a query at once, and the queries get the time left over, so a flood of expensive
//! queries slows the queries, not the decisions in front of the proxy. (A lower
//! niceness alone was not enough: a niced thread still runs out its time slice, some
//! milliseconds, before a woken worker gets the core.) Each query gets a [`Cancel`]
//! token that turns when its caller is gone (the client cancelled, or the server's deadline
//! dropped the request), and the query loops check it as they go, so no thread keeps
//! burning CPU for an answer nobody will read.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};

use tonic::Status;

/// How the pool's threads are scheduled against the rest of the host (`--query-priority`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueryPriority {
    /// The idle scheduling class (`SCHED_IDLE`): a worker woken with a Check takes the
    /// core at once; on a host kept busy by other work, queries wait (up to their
    /// deadline). In a container, the class orders threads within its own CPU group.
    #[default]
    Idle,
    /// Niceness 19: queries get a small share of a busy host, never none; a niced thread
    /// still runs out its time slice (milliseconds) before a woken worker gets the core.
    Low,
    /// The process's own priority.
    Normal,
}

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

type Job = Box<dyn FnOnce() + Send>;

/// The expensive queries' own concurrency limit and threads.
#[derive(Debug)]
pub struct QueryPool {
    /// One per query that may run at once; a running query holds one.
    permits: Arc<tokio::sync::Semaphore>,
    limit: usize,
    /// Queries for the pool's threads; each thread takes the next one when it is free.
    jobs: mpsc::Sender<Job>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    /// Threads started so far: one more each time the turns taken outnumber them, so the
    /// pool never holds more threads than queries have ever run at once, nor than `limit`.
    threads: AtomicUsize,
    priority: QueryPriority,
}

/// The default limit: half the cores (at least one), so Check and ext_authz keep the rest.
pub fn default_limit() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    (cores / 2).max(1)
}

impl Default for QueryPool {
    fn default() -> Self {
        Self::new(default_limit())
    }
}

impl QueryPool {
    pub fn new(limit: usize) -> Self {
        Self::with_priority(limit, QueryPriority::default())
    }

    pub fn with_priority(limit: usize, priority: QueryPriority) -> Self {
        let limit = limit.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        let (jobs, queue) = mpsc::channel();
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            threads: AtomicUsize::new(0),
            priority,
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

    /// Runs `query` on one of the pool's threads once a turn is free. If the caller goes
    /// away (this future is dropped) while it waits or runs, the query's [`Cancel`] turns; a
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
        self.enough_threads()?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // A panicking query must not take its thread with it; its caller gets an error
            // from the dropped sender.
            let value = std::panic::catch_unwind(AssertUnwindSafe(|| query(&cancel)));
            // The turn is given back however the query ended, before its caller hears.
            drop(turn);
            if let Ok(value) = value {
                let _ = answer.send(value);
            }
        });
        self.jobs
            .send(job)
            .map_err(|_| Status::unavailable("the query pool is closed"))?;
        answered.await.map_err(|_| Status::internal("query failed"))
    }

    /// Starts threads until there is one per turn taken.
    fn enough_threads(&self) -> Result<(), Status> {
        loop {
            let started = self.threads.load(Ordering::Acquire);
            if started >= self.in_flight() {
                return Ok(());
            }
            if self
                .threads
                .compare_exchange(started, started + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let (queue, priority) = (self.queue.clone(), self.priority);
            if let Err(e) = std::thread::Builder::new()
                .name("iot-authz-query".into())
                .spawn(move || serve_queries(&queue, priority))
            {
                self.threads.fetch_sub(1, Ordering::AcqRel);
                tracing::error!(error = %e, "could not start a query thread");
                return Err(Status::unavailable("no thread for the query"));
            }
        }
    }
}

/// A pool thread: lowers its own priority, then runs queries until the pool is dropped.
fn serve_queries(queue: &Mutex<mpsc::Receiver<Job>>, priority: QueryPriority) {
    if let Err(e) = lower_priority(priority) {
        tracing::warn!(error = %e, "could not lower a query thread's priority");
    }
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Gives the calling thread the pool's priority (see [`crate::priority`]).
fn lower_priority(priority: QueryPriority) -> Result<(), crate::priority::PriorityError> {
    match priority {
        QueryPriority::Idle => crate::priority::enter_idle_class(),
        QueryPriority::Low => crate::priority::lower_niceness_by(19),
        QueryPriority::Normal => Ok(()),
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

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn queries_run_in_the_idle_class_and_survive_a_panic() {
        let pool = QueryPool::new(2);
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let class = pool
            .run(|_| thread_priority::thread_schedule_policy())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(class, idle);
        // The caller's own thread keeps its class.
        let mine = thread_priority::thread_schedule_policy().unwrap();
        assert_ne!(mine, idle, "the caller was lowered too");
        // A query that panics answers an error; its thread and turn are not lost.
        let failed = pool.run(|_| -> u8 { panic!("a broken query") }).await;
        assert_eq!(failed.unwrap_err().code(), tonic::Code::Internal);
        for n in 0..4 {
            assert_eq!(pool.run(move |_| n).await.unwrap(), n);
        }
        assert_eq!(pool.in_flight(), 0);
        assert!(pool.threads.load(Ordering::Relaxed) <= 2);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_low_and_normal_priorities_are_kept_as_asked() {
        let here = || {
            (
                thread_priority::thread_schedule_policy().unwrap(),
                rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap(),
            )
        };
        let (class, mine) = here();
        let low = QueryPool::with_priority(1, QueryPriority::Low);
        assert_eq!(low.run(move |_| here()).await.unwrap(), (class, 19));
        let normal = QueryPool::with_priority(1, QueryPriority::Normal);
        assert_eq!(normal.run(move |_| here()).await.unwrap(), (class, mine));
    }
}
