//! The `tidegate` binary: all logic lives in the library; see `app::cli`.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc, called the way the C library is fastest to call.
///
/// The `mimalloc` crate passes every allocation to `mi_malloc_aligned`, whose fast path
/// only holds when the next free block happens to be aligned, and which otherwise takes a
/// generic path: 5.5 times per single-event request, about 500 instructions (callgrind).
/// `mi_malloc` already aligns every block to 16 bytes, as `malloc` does, so only larger
/// alignments need the aligned calls (the standard library's `System` allocator makes the
/// same split).
struct MiMalloc;

/// Alignment every mimalloc block has (its `MI_MAX_ALIGN_SIZE` on 64-bit targets).
const GUARANTEED_ALIGN: usize = 16;

fn plain(layout: Layout) -> bool {
    layout.align() <= GUARANTEED_ALIGN
}

// SAFETY: every block comes from mimalloc and returns to it; the aligned calls are used
// whenever the layout asks for more alignment than mimalloc guarantees.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout) {
            mi::mi_malloc(layout.size()) as *mut u8
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout) {
            mi::mi_zalloc(layout.size()) as *mut u8
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void)
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout) {
            mi::mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    tidegate::app::main()
}
