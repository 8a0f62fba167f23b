//! The store's own thread: every compile of the store's objects (the watch's changes laid
//! over the base, a full compile, the Admin API's validation of a group of writes) runs
//! there, one job at a time, in the order asked, at a lower priority than the request
//! path ([`STORE_NICENESS`]). Those jobs hold the inputs' lock, so they never ran side by
//! side anyway; on a thread of their own, a burst of writes takes the cores from the
//! checks less (a woken runtime worker gets the core from a niced thread sooner), while
//! the niceness still gives the store a share of a busy host, so a revocation is never
//! starved out (unlike the idle class the expensive queries use).

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, PoisonError, mpsc};

/// How much lower than the request path's the store thread's priority is (its nice
/// value, on Linux). Compaction, a full compile at a million assignments, runs on a
/// thread of its own at the same niceness (`COMPACTION_NICENESS`), so that the watch
/// never waits for it.
pub const STORE_NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The store thread stopped before answering (a job panicked, or it could not start).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the store's thread could not be started: {0}")]
    Spawn(std::io::Error),
    #[error("the store's job ended without an answer (it panicked)")]
    NoAnswer,
}

/// Runs the store's compile jobs on one thread of its own, started at the first job.
#[derive(Debug, Default)]
pub struct StoreWorker {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl StoreWorker {
    /// Runs `job` on the store thread and waits for its answer without holding a runtime
    /// worker. A panicking job does not take the thread with it: its caller gets
    /// [`WorkerError::NoAnswer`].
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if let Ok(value) = std::panic::catch_unwind(AssertUnwindSafe(job)) {
                let _ = answer.send(value);
            }
        });
        self.send(job)?;
        answered.await.map_err(|_| WorkerError::NoAnswer)
    }

    /// Hands `job` to the thread, starting it first if there is none.
    fn send(&self, job: Job) -> Result<(), WorkerError> {
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let job = match jobs.as_ref() {
            Some(sender) => match sender.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (sender, receiver) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("iot-authz-store".into())
            .spawn(move || {
                if let Err(e) = crate::priority::lower_niceness_by(STORE_NICENESS) {
                    tracing::debug!(error = %e, "the store thread runs at the normal priority");
                }
                while let Ok(job) = receiver.recv() {
                    job();
                }
            })
            .map_err(WorkerError::Spawn)?;
        // The receiver lives as long as the thread, which ends only once every sender
        // is gone: this send cannot fail.
        let _ = sender.send(job);
        *jobs = Some(sender);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_lowered_thread_and_a_panic_spares_it() {
        let worker = StoreWorker::default();
        let first = worker.run(|| std::thread::current().id()).await.unwrap();
        // Three jobs asked at once, each quicker than the one before: run side by side
        // they would end in reverse; one at a time, in order.
        let ran = std::sync::Arc::new(Mutex::new(Vec::new()));
        let job = |n: u64| {
            let ran = ran.clone();
            move || {
                std::thread::sleep(std::time::Duration::from_millis(30 - 10 * n));
                ran.lock().unwrap().push(n);
                std::thread::current().id()
            }
        };
        let (a, b, c) = tokio::join!(worker.run(job(0)), worker.run(job(1)), worker.run(job(2)));
        assert_eq!([a.unwrap(), b.unwrap(), c.unwrap()], [first; 3]);
        assert_eq!(*ran.lock().unwrap(), [0, 1, 2]);
        let panicked = worker.run(|| -> u8 { panic!("a job that fails") }).await;
        assert!(
            matches!(panicked, Err(WorkerError::NoAnswer)),
            "{panicked:?}"
        );
        // The same thread goes on with the next job.
        assert_eq!(
            worker.run(|| std::thread::current().id()).await.unwrap(),
            first
        );
        #[cfg(target_os = "linux")]
        {
            let mine = rustix::process::getpriority_process(None).unwrap();
            let its = worker
                .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(its, (mine + STORE_NICENESS).min(19));
        }
    }
}
