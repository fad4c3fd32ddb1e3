//! The `tidegate` binary: all logic lives in the library; see `app::cli`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tidegate::app::main()
}
