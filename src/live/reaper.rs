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

type Sender = mpsc::SyncSender<Box<dyn Send>>;

/// The reaper's queue, starting its thread on first use. Called once at start-up
/// ([`start`]) so that a request never pays for the thread's creation.
fn reaper() -> Option<&'static Sender> {
    static REAPER: OnceLock<Option<Sender>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (sender, receiver) = mpsc::sync_channel::<Box<dyn Send>>(QUEUE);
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || {
                    if let Err(e) = crate::priority::lower_niceness_by(REAPER_NICENESS) {
                        tracing::debug!(error = %e, "the reaper keeps its priority");
                    }
                    for value in receiver {
                        // A panicking destructor must not end the reaper: later values
                        // would all be freed by their senders.
                        let dropped =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                                drop(value)
                            }));
                        if dropped.is_err() {
                            tracing::error!("a value sent to the reaper panicked while dropped");
                        }
                    }
                })
                .map_err(|e| tracing::warn!(error = %e, "no reaper thread: values drop in place"))
                .ok()
                .map(|_| sender)
        })
        .as_ref()
}

/// Starts the reaper thread now rather than at the first value sent to it.
pub fn start() {
    let _ = reaper();
}

/// Drops `value` on the reaper thread and returns at once (one channel send); when the
/// reaper's queue is full (or there is no reaper), drops it here.
pub fn drop_later<T: Send + 'static>(value: T) {
    if let Some(sender) = reaper() {
        // A full queue or a gone reaper hands the value back, and it drops here.
        let _ = sender.try_send(Box::new(value));
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
    let (done, wait) = mpsc::sync_channel(1);
    // Waits for a place in the queue: the marker must go through it, behind the rest.
    if let Some(sender) = reaper() {
        let _ = sender.send(Box::new(Marker(done)));
    }
    // An error means the marker was dropped without signalling (no reaper): done too.
    let _ = wait.recv();
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
        drop_later(Bomb);
        let (sender, dropped_on) = mpsc::channel();
        drop_later(Probe(sender));
        // Still freed on the reaper, not here: the thread outlived the panic.
        assert_ne!(dropped_on.recv().unwrap(), std::thread::current().id());
    }

    #[test]
    fn a_full_queue_drops_the_value_in_place() {
        // Hold the reaper inside a drop, then fill its queue.
        let (entered, wait_entered) = mpsc::channel();
        let (release, held) = mpsc::channel::<()>();
        struct Hold(mpsc::Sender<()>, mpsc::Receiver<()>);
        impl Drop for Hold {
            fn drop(&mut self) {
                let _ = self.0.send(());
                let _ = self.1.recv();
            }
        }
        drop_later(Hold(entered, held));
        wait_entered.recv().unwrap();
        // Other tests may send too, so fill until a value comes back to this thread.
        let me = std::thread::current().id();
        let mut in_place = false;
        let mut probes = Vec::new();
        for _ in 0..=QUEUE {
            let (sender, dropped_on) = mpsc::channel();
            drop_later(Probe(sender));
            if dropped_on.try_recv() == Ok(me) {
                in_place = true;
                break;
            }
            probes.push(dropped_on);
        }
        release.send(()).unwrap();
        assert!(
            in_place,
            "a value beyond the queue's {QUEUE} places drops in place"
        );
        // The queued ones are then freed on the reaper.
        for dropped_on in probes {
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
