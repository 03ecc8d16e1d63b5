//! The binary's memory allocator: mimalloc for everyday allocations, the system's (glibc)
//! for large blocks.
//!
//! The media path allocates per packet and viewer inside str0m (each outgoing datagram's
//! buffer, its send queue entries); mimalloc serves those ~10% cheaper in CPU per
//! forwarded packet than glibc at 100-200 viewers (docs/benchmarks.md, "Lever: the
//! allocator"). Large blocks are another matter: password hashing (scrypt, as Better Auth
//! does it) takes 32 MiB a sign-in, and mimalloc keeps a freed block until a later call
//! gets round to purging it, which after a burst of sign-ups can be never. glibc maps
//! blocks this large on their own and unmaps them when freed (see `main`'s mallopt).
//!
//! mimalloc is built without transparent huge pages (its `no_thp` feature): it would
//! otherwise ask for them on its regions, and each 2 MiB page touched counts whole in RSS.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks from this size up go to the system allocator. The same as the mmap threshold
/// `main` gives glibc, so every such block is its own mapping, returned when freed.
pub const LARGE_BLOCK_BYTES: usize = 4 << 20;

pub struct Allocator;

fn is_large(size: usize) -> bool {
    size >= LARGE_BLOCK_BYTES
}

// SAFETY: each block is served and released by the same allocator, chosen by its size,
// which `dealloc` and `realloc` are given unchanged (the `GlobalAlloc` contract); a
// block that changes sides in `realloc` is copied and the old one released where it came
// from.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: the caller guarantees new_size, rounded up to the alignment,
                // does not overflow isize.
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks grow and shrink across the threshold with their contents intact, and each is
    /// released by the allocator that served it (a mismatch aborts the process).
    #[test]
    fn blocks_keep_their_contents_across_the_threshold() {
        let a = Allocator;
        let small = Layout::from_size_align(1000, 16).unwrap();
        unsafe {
            let p = a.alloc(small);
            assert!(!p.is_null());
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let big = a.realloc(p, small, LARGE_BLOCK_BYTES + 10);
            assert!(!big.is_null());
            assert_eq!(big as usize % 16, 0);
            for i in 0..1000 {
                assert_eq!(*big.add(i), (i % 251) as u8);
            }
            let big_layout = Layout::from_size_align(LARGE_BLOCK_BYTES + 10, 16).unwrap();
            let bigger = a.realloc(big, big_layout, 2 * LARGE_BLOCK_BYTES);
            assert!(!bigger.is_null());
            assert_eq!(*bigger.add(999), (999 % 251) as u8);
            let bigger_layout = Layout::from_size_align(2 * LARGE_BLOCK_BYTES, 16).unwrap();
            let back = a.realloc(bigger, bigger_layout, 500);
            assert!(!back.is_null());
            for i in 0..500 {
                assert_eq!(*back.add(i), (i % 251) as u8);
            }
            a.dealloc(back, Layout::from_size_align(500, 16).unwrap());
            let zeroed = a.alloc_zeroed(big_layout);
            assert!(
                (0..big_layout.size())
                    .step_by(4096)
                    .all(|i| *zeroed.add(i) == 0)
            );
            a.dealloc(zeroed, big_layout);
        }
    }
}
