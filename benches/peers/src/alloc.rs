//! A counting global allocator, switched on only around engine loads: while it counts, every
//! allocation and free updates the live total and its peak; while it is off (during the
//! timed checks) it costs one relaxed load and a predictable branch, so the allocation-heavy
//! peers are not slowed down by the measurement.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

pub struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

#[inline]
fn grew(by: usize) {
    if ON.load(Relaxed) {
        let now = LIVE.fetch_add(by as i64, Relaxed) + by as i64;
        PEAK.fetch_max(now, Relaxed);
    }
}

#[inline]
fn shrank(by: usize) {
    if ON.load(Relaxed) {
        LIVE.fetch_sub(by as i64, Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Heap figures of one measured window, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapWindow {
    /// The highest live heap above the start of the window.
    pub peak: i64,
    /// The live heap at the end of the window, above its start.
    pub retained: i64,
}

/// Runs `f` with counting on and returns its result with the heap figures.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, HeapWindow) {
    LIVE.store(0, Relaxed);
    PEAK.store(0, Relaxed);
    ON.store(true, Relaxed);
    let out = f();
    ON.store(false, Relaxed);
    let window = HeapWindow {
        peak: PEAK.load(Relaxed),
        retained: LIVE.load(Relaxed),
    };
    (out, window)
}
