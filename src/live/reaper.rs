//! The reaper: one low-priority thread that drops what it is sent, so that freeing a big
//! value (a replaced policy of a million assignments) never runs on a runtime worker or a
//! request, and nobody waits or polls for it.
//!
//! The channel is FIFO and the thread drops each value as it arrives, so [`flush`]
//! returns once everything sent before it is freed. Started on first use; if the thread
//! cannot be started, values are dropped where they are (as without a reaper).

use std::sync::OnceLock;
use std::sync::mpsc;

/// How far the reaper lowers its niceness: to the lowest ordinary priority, not the idle
/// class, since `free` may take the allocator's locks that request threads also need, and
/// an idle-class thread holding one could be starved by a busy core.
const REAPER_NICENESS: i32 = 19;

type Sender = mpsc::Sender<Box<dyn Send>>;

fn reaper() -> Option<&'static Sender> {
    static REAPER: OnceLock<Option<Sender>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<Box<dyn Send>>();
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || {
                    if let Err(e) = crate::priority::lower_niceness_by(REAPER_NICENESS) {
                        tracing::debug!(error = %e, "the reaper keeps its priority");
                    }
                    // Each value is dropped as the loop moves to the next one.
                    for value in receiver {
                        drop(value);
                    }
                })
                .map_err(|e| tracing::warn!(error = %e, "no reaper thread: values drop in place"))
                .ok()
                .map(|_| sender)
        })
        .as_ref()
}

/// Drops `value` on the reaper thread; returns at once (one channel send).
pub fn drop_later<T: Send + 'static>(value: T) {
    if let Some(sender) = reaper() {
        // A send fails only if the reaper is gone; the value then drops here.
        let _ = sender.send(Box::new(value));
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
    drop_later(Marker(done));
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

    #[test]
    fn flush_waits_for_everything_sent_before_it() {
        let value = Arc::new(vec![0u8; 1 << 20]);
        let weak = Arc::downgrade(&value);
        drop_later(value);
        flush();
        assert!(weak.upgrade().is_none(), "the reaper freed the value");
    }
}
