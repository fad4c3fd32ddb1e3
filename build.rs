//! Link-time settings of the `tidegate` binary.
//!
//! The binary wraps liburing's ring set-up, which glommio calls, so that every io_uring
//! the process makes runs completion work cooperatively (see `src/main.rs`). `--wrap`
//! sends glommio's calls of `io_uring_queue_init_params` to `__wrap_…` in the binary,
//! which calls the original as `__real_…`. Only the binary is linked this way: the
//! library's own tests keep glommio's default rings.

fn main() {
    println!("cargo:rustc-link-arg-bin=tidegate=-Wl,--wrap=io_uring_queue_init_params");
    println!("cargo:rerun-if-changed=build.rs");
}
