//! The reaper: one low-priority thread that drops what it is sent, so that freeing a big
//! value (a replaced policy of a million assignments) never runs on a runtime worker or a
//! request, and nobody waits or polls for it.
//!
//! The channel is FIFO and the thread drops each value as it arrives, so [`flush`]
//! returns once everything sent before it is freed. Started on first use; if the thread
//! cannot be started, values are dropped where they are (as without a reaper).
//!
//! The queue is bounded ([`QUEUE`] values): when the reaper falls behind (a burst of
//! replaced policies on a busy host), the sender frees its value itself, so memory waiting
//! to be freed never grows without bound and a writer faster than the reaper is slowed
//! down by its own frees. A value whose drop panics is logged and the reaper goes on.

use std::sync::OnceLock;
use std::sync::mpsc;

/// How far the reaper lowers its niceness: to the lowest ordinary priority, not the idle
/// class, since `free` may take the allocator's locks that request threads also need, and
/// an idle-class thread holding one could be starved by a busy core.
const REAPER_NICENESS: i32 = 19;

/// How many values may wait for the reaper; a sender beyond it frees its value itself.
pub const QUEUE: usize = 8;

/// A reaper: the sending end of its queue (its thread ends when this is dropped).
struct Reaper(mpsc::SyncSender<Box<dyn Send>>);

impl Reaper {
    /// Starts a reaper thread with a queue of `queue` values; `None` if the thread cannot
    /// be started.
    fn spawn(queue: usize) -> Option<Self> {
        let (sender, receiver) = mpsc::sync_channel::<Box<dyn Send>>(queue);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || {
                if let Err(e) = crate::priority::lower_niceness_by(REAPER_NICENESS) {
                    tracing::debug!(error = %e, "the reaper keeps its priority");
                }
                for value in receiver {
                    // A panicking destructor must not end the reaper: later values would
                    // all be freed by their senders.
                    let dropped =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)));
                    if dropped.is_err() {
                        tracing::error!("a value sent to the reaper panicked while dropped");
                    }
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "no reaper thread: values drop in place"))
            .ok()
            .map(|_| Self(sender))
    }

    /// Sends `value` to the thread, or drops it here when the queue is full.
    fn drop_later<T: Send + 'static>(&self, value: T) {
        // A full queue or a gone thread hands the value back, and it drops here.
        let _ = self.0.try_send(Box::new(value));
    }

    /// Blocks until everything sent before this call has been dropped.
    fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        // Waits for a place in the queue: the marker must go through it, behind the rest.
        let _ = self.0.send(Box::new(Marker(done)));
        // An error means the marker was dropped without signalling: done too.
        let _ = wait.recv();
    }
}

/// The process's reaper, started on first use. Called once at start-up ([`start`]) so
/// that a request never pays for the thread's creation.
fn reaper() -> Option<&'static Reaper> {
    static REAPER: OnceLock<Option<Reaper>> = OnceLock::new();
    REAPER.get_or_init(|| Reaper::spawn(QUEUE)).as_ref()
}

/// Starts the reaper thread now rather than at the first value sent to it.
pub fn start() {
    let _ = reaper();
}

/// Drops `value` on the reaper thread and returns at once (one channel send); when the
/// reaper's queue is full (or there is no reaper), drops it here.
pub fn drop_later<T: Send + 'static>(value: T) {
    if let Some(reaper) = reaper() {
        reaper.drop_later(value);
    }
}

/// Signals when it is dropped: the reaper's marker for [`flush`].
struct Marker(mpsc::SyncSender<()>);

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// Blocks until everything sent to the reaper before this call has been dropped.
pub fn flush() {
    if let Some(reaper) = reaper() {
        reaper.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread::ThreadId;

    /// Reports the thread it is dropped on.
    struct Probe(mpsc::Sender<ThreadId>);

    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }

    #[test]
    fn a_value_is_dropped_on_the_reaper_thread_not_the_callers() {
        let (sender, dropped_on) = mpsc::channel();
        drop_later(Probe(sender));
        let reaper = dropped_on.recv().unwrap();
        assert_ne!(reaper, std::thread::current().id());
        // Every value goes to the same thread.
        let (sender, again) = mpsc::channel();
        drop_later(Probe(sender));
        assert_eq!(again.recv().unwrap(), reaper);
    }

    /// Panics when dropped.
    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("a destructor that panics");
        }
    }

    #[test]
    fn a_panicking_drop_does_not_stop_the_reaper() {
        let reaper = Reaper::spawn(QUEUE).unwrap();
        reaper.drop_later(Bomb);
        let (sender, dropped_on) = mpsc::channel();
        reaper.drop_later(Probe(sender));
        // Still freed on the reaper, not here: the thread outlived the panic.
        assert_ne!(dropped_on.recv().unwrap(), std::thread::current().id());
    }

    #[test]
    fn a_full_queue_drops_the_value_in_place() {
        // A reaper of its own, held inside a drop, its queue then filled.
        let reaper = Reaper::spawn(QUEUE).unwrap();
        let (entered, wait_entered) = mpsc::channel();
        let (release, held) = mpsc::channel::<()>();
        struct Hold(mpsc::Sender<()>, mpsc::Receiver<()>);
        impl Drop for Hold {
            fn drop(&mut self) {
                let _ = self.0.send(());
                let _ = self.1.recv();
            }
        }
        reaper.drop_later(Hold(entered, held));
        wait_entered.recv().unwrap();
        let me = std::thread::current().id();
        let mut queued = Vec::new();
        for _ in 0..QUEUE {
            let (sender, dropped_on) = mpsc::channel();
            reaper.drop_later(Probe(sender));
            assert!(dropped_on.try_recv().is_err(), "queued, not dropped yet");
            queued.push(dropped_on);
        }
        // One more than the queue holds: dropped here, at once.
        let (sender, dropped_on) = mpsc::channel();
        reaper.drop_later(Probe(sender));
        assert_eq!(dropped_on.try_recv(), Ok(me));
        // Released, the reaper frees the queued ones on its own thread.
        release.send(()).unwrap();
        for dropped_on in queued {
            assert_ne!(dropped_on.recv().unwrap(), me);
        }
    }

    #[test]
    fn flush_waits_for_everything_sent_before_it() {
        let value = Arc::new(vec![0u8; 1 << 20]);
        let weak = Arc::downgrade(&value);
        drop_later(value);
        flush();
        assert!(weak.upgrade().is_none(), "the reaper freed the value");
    }
}
