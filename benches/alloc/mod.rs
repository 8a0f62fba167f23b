//! A counting global allocator, shared by the peer-engine benchmark (`benches/peers/`) and
//! the scale tool (`benches/scale/`) through `#[path]`: every allocation and free updates
//! the live heap, its peak and an allocation count while counting is on. It is on from the
//! start of the process, so the live total is the exact heap of everything alive; the tools
//! switch it off while checks are timed, where it would cost two atomic updates per
//! allocation (off, it costs one relaxed load and a predictable branch).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

pub struct Counting;

static ON: AtomicBool = AtomicBool::new(true);
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

#[inline]
fn grew(by: usize, new_block: bool) {
    if ON.load(Relaxed) {
        let now = LIVE.fetch_add(by as i64, Relaxed) + by as i64;
        PEAK.fetch_max(now, Relaxed);
        if new_block {
            ALLOCS.fetch_add(1, Relaxed);
        }
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
            grew(layout.size(), true);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size(), true);
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
                grew(new_size - layout.size(), false);
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Counting on or off. Whatever is allocated while it is off must be freed while it is off
/// (or the live total drifts): the tool only switches it off around timed checks, which
/// free what they allocate.
pub fn counting(on: bool) {
    ON.store(on, Relaxed);
}

/// The live heap, in bytes (everything allocated and not freed since the process started).
pub fn live() -> i64 {
    LIVE.load(Relaxed)
}

/// Starts a new peak window at the current live heap.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// The highest live heap since the last [`reset_peak`].
pub fn peak() -> i64 {
    PEAK.load(Relaxed)
}

/// Allocation calls (`alloc` and `alloc_zeroed`, not `realloc`) counted so far.
pub fn allocations() -> u64 {
    ALLOCS.load(Relaxed)
}

/// Heap figures of one measured window, in bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeapWindow {
    /// The highest live heap above the start of the window.
    pub peak: i64,
    /// The live heap at the end of the window, above its start.
    pub retained: i64,
}

/// Runs `f` with counting on, then leaves counting off; returns `f`'s result with the heap
/// figures of the window.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, HeapWindow) {
    counting(true);
    let start = live();
    reset_peak();
    let out = f();
    counting(false);
    let window = HeapWindow {
        peak: peak() - start,
        retained: live() - start,
    };
    (out, window)
}
