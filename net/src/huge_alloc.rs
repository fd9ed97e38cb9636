//! The process allocator: the system allocator, except that huge allocations only reserve
//! address space.
//!
//! Why: the Kafka codec (kafka-protocol 0.18) sizes vectors from array lengths read off the
//! wire before it has checked that the bytes exist, so a 20-byte request can ask for 100 GB
//! and an allocation failure aborts the process. Allocations of `HUGE` bytes or more are
//! therefore mapped with `MAP_NORESERVE`: the reservation succeeds, the decoder runs out of
//! request bytes after touching a few pages and returns an error, and the mapping is freed.
//! Only pages actually written consume memory, so real usage stays bounded by the request
//! size. (With `vm.overcommit_memory = 2` the kernel refuses such mappings; then the request
//! still aborts, as it would with the system allocator.)
//!
//! Contract: every block handed out is freed by the same path (by its size class), and
//! `realloc` moves blocks between the two classes by copying.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are reserved with mmap(MAP_NORESERVE).
pub const HUGE: usize = sluice_core::limits::HUGE_ALLOCATION_BYTES;
const PAGE: usize = 4096;

pub struct HugeAlloc;

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping; the caller checked size > 0.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p as *mut u8
    }
}

unsafe impl GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            // SAFETY: size is non-zero.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { map(layout.size()) }
        } else {
            // SAFETY: forwarded unchanged.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= HUGE && layout.align() <= PAGE {
            // SAFETY: the block came from `map` with this size.
            unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
        } else {
            // SAFETY: the block came from the system allocator with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_huge = layout.size() >= HUGE && layout.align() <= PAGE;
        let new_huge = new_size >= HUGE && layout.align() <= PAGE;
        match (old_huge, new_huge) {
            // SAFETY: forwarded unchanged.
            (false, false) => unsafe { System.realloc(ptr, layout, new_size) },
            (true, true) => {
                // SAFETY: remapping a block that came from `map`.
                let p =
                    unsafe { libc::mremap(ptr as *mut libc::c_void, layout.size(), new_size, libc::MREMAP_MAYMOVE) };
                if p == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    p as *mut u8
                }
            }
            _ => {
                // Crossing classes: allocate in the new class, copy, free the old block.
                // SAFETY: the new layout keeps the alignment and has a non-zero size.
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                // SAFETY: as above.
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks are valid for the smaller of the two sizes.
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

    #[test]
    fn huge_reservations_succeed_and_cross_classes() {
        let a = HugeAlloc;
        unsafe {
            let big = Layout::from_size_align(64 << 30, 8).unwrap();
            let p = a.alloc(big);
            assert!(!p.is_null(), "a 64 GiB reservation must succeed without committing memory");
            *p = 7;
            *p.add((64 << 30) - 1) = 9;
            let q = a.realloc(p, big, 16);
            assert!(!q.is_null());
            assert_eq!(*q, 7);
            let small = Layout::from_size_align(16, 8).unwrap();
            let r = a.realloc(q, small, HUGE + 4096);
            assert_eq!(*r, 7);
            a.dealloc(r, Layout::from_size_align(HUGE + 4096, 8).unwrap());
        }
    }
}
