//! A global allocator wrapper that counts live heap bytes, so memory per connection is measured
//! exactly, unaffected by freed memory the allocator keeps for reuse.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// Counters, one cache line each: threads that shared one counter would pass its line back and
/// forth on every allocation, a cost the services (plain mimalloc) do not pay and that would
/// skew the benchmarks against whatever allocates most.
const SHARDS: usize = 16;

#[repr(align(128))]
struct Shard(AtomicIsize);

static LIVE: [Shard; SHARDS] = [const { Shard(AtomicIsize::new(0)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Const-initialised with no destructor, so reading it never allocates.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's counter. A shard's sum can go negative (memory freed by another thread than
/// the one that took it); only the total is meaningful.
fn counter() -> &'static AtomicIsize {
    let i = SHARD
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS);
            }
            s.get()
        })
        .unwrap_or(0);
    &LIVE[i].0
}

fn add(n: usize) {
    counter().fetch_add(n as isize, Ordering::Relaxed);
}

fn sub(n: usize) {
    counter().fetch_sub(n as isize, Ordering::Relaxed);
}

/// The counting allocator over mimalloc (the services' allocator); install it with
/// `#[global_allocator]` in a binary.
pub struct Counting;

// The one unsafe impl of the workspace: a global allocator cannot be written without it.
#[allow(unsafe_code)]
// SAFETY: every call is forwarded to mimalloc unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        sub(layout.size());
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size);
            sub(layout.size());
        }
        p
    }
}

/// Live heap bytes, when [`Counting`] is the global allocator (0 otherwise).
pub fn live_bytes() -> usize {
    let total: isize = LIVE.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    total.max(0) as usize
}
