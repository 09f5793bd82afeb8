//! The `warden` binary: parses the command line and hands it to [`cli`]. The only place that uses `anyhow`
//! (with `cli`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the daemon's work is many small, short-lived allocations (parsed answers,
/// Rhai values) handed between threads, where glibc's malloc spent a third of the daemon's CPU time and kept the
/// memory freed by one thread in that thread's arena.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits its arenas eagerly on Linux (with transparent huge pages where allowed): the daemon's resident
/// memory then grows by whole arena chunks that are never given back, about twice its live heap. Committed on
/// demand instead (measured: 100 targets, peak RSS 71 MB with eager commit, 38 MB without; CPU alike).
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still decides when it is set.
#[cfg(target_os = "linux")]
fn mimalloc_commit_on_demand() {
    /// `mi_option_arena_eager_commit` in mimalloc.h (the bindings have no constant for it).
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: getenv with a NUL-terminated name; mi_option_set only stores an option. Runs before `main`, on the
    // only thread, before the first allocation through mimalloc reserves an arena.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

/// Runs [`mimalloc_commit_on_demand`] before `main` (and before Rust's runtime allocates anything).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static MIMALLOC_OPTIONS: extern "C" fn() = {
    extern "C" fn init() {
        mimalloc_commit_on_demand();
    }
    init
};

fn main() -> ExitCode {
    // Blocking work (rule evaluations, the store, file I/O) runs on blocking threads. Tokio's default allows 512 of
    // them and wakes its idle ones in turn, so a burst leaves hundreds of threads that never retire. Rule
    // evaluations are bounded by cores on their own (src/runtime/evaluators.rs); 64 threads cover the rest.
    //
    // Threads get 8 MB of stack (reserved, not resident: only the pages a thread touches count): the JSON parser
    // recurses once per nesting level, and an answer 128 levels deep (the most `Doc::parse` accepts) takes more than
    // tokio's default 2 MB in a debug build (a few tens of KB in a release build).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(64)
        .thread_stack_size(8 << 20)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warden: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let args = cli::Cli::parse();
        match cli::run(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("warden: {e:#}");
                ExitCode::from(1)
            }
        }
    })
}
