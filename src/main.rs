//! The `tidegate` binary: all logic lives in the library; see `app::cli`. What is here is
//! how the process calls the C libraries under it: the allocator, and io_uring's set-up.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::{c_int, c_uint, c_void};
use std::sync::Once;

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

/// Every io_uring glommio makes runs its completion work cooperatively.
///
/// By default a completion that arrives while the shard's thread runs in user space (a
/// client's bytes landing on a socket with a poll armed, a disk write finishing) makes the
/// kernel interrupt that thread at once, with a reschedule IPI, to post it. With
/// `IORING_SETUP_COOP_TASKRUN` (Linux 5.19) the work waits for the thread's next entry into
/// the kernel, which a shard makes many times per request (every send, every submission)
/// and whenever it goes to sleep, where it is woken as before. A running shard is then
/// never interrupted for its own completions. That matters most in durable mode: a
/// client's next request arrives only after its 202, which waits for the log's write, so
/// the poll for it is armed before the bytes come and almost every request cost one IPI.
/// On this project's VM, where an IPI costs microseconds, that was ~20,000 IPIs a second
/// and a sixth of the shard's core; with cooperative task running it is none, and durable
/// single-event requests went from ~50k to ~85k per second (bench/results/2026-12-06-io-uring-ipis.md).
///
/// glommio 0.9 sets no such flag and offers no way to, so the binary wraps liburing's
/// `io_uring_queue_init_params` at link time (`--wrap`, see build.rs) and adds it there,
/// for every ring but polled (`IOPOLL`) and kernel-polled (`SQPOLL`) ones. A kernel that
/// refuses the flag gets glommio's ring unchanged, and a warning.
///
/// # Safety
/// Called by glommio with liburing's arguments; `params` points to a `struct
/// io_uring_params`, whose `flags` is its third `u32`.
#[no_mangle]
unsafe extern "C" fn __wrap_io_uring_queue_init_params(
    entries: c_uint,
    ring: *mut c_void,
    params: *mut c_uint,
) -> c_int {
    const IOPOLL: c_uint = 1 << 0;
    const SQPOLL: c_uint = 1 << 1;
    const COOP_TASKRUN: c_uint = 1 << 8;
    static REPORTED: Once = Once::new();
    let flags_at = params.add(2);
    let flags = *flags_at;
    if flags & (IOPOLL | SQPOLL) != 0 {
        return __real_io_uring_queue_init_params(entries, ring, params);
    }
    *flags_at = flags | COOP_TASKRUN;
    let result = __real_io_uring_queue_init_params(entries, ring, params);
    if result != -libc::EINVAL {
        if result == 0 {
            REPORTED.call_once(|| {
                tracing::info!(
                    "io_uring rings run completion work cooperatively (IORING_SETUP_COOP_TASKRUN)"
                )
            });
        }
        return result;
    }
    *flags_at = flags;
    REPORTED.call_once(|| {
        tracing::warn!("the kernel refused IORING_SETUP_COOP_TASKRUN (it needs Linux 5.19): completions interrupt the shards, which costs CPU")
    });
    __real_io_uring_queue_init_params(entries, ring, params)
}

extern "C" {
    /// liburing's own `io_uring_queue_init_params`, under the name `--wrap` gives it.
    fn __real_io_uring_queue_init_params(
        entries: c_uint,
        ring: *mut c_void,
        params: *mut c_uint,
    ) -> c_int;
}

fn main() -> std::process::ExitCode {
    tidegate::app::main()
}
