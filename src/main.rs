//! The `warden` binary: parses the command line and hands it to [`cli`]. The only place that uses `anyhow`
//! (with `cli`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    // Rules are evaluated on blocking threads. Tokio's default allows 512 of them and wakes its idle ones in turn,
    // so a burst (a thousand targets polled at start) leaves hundreds of threads that never retire, each with the
    // stack and heap of an evaluation. 64 evaluations at once already keep every core busy; more wait their turn.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(64).build() {
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

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), and each arena keeps the memory
/// freed into it. Warden's threads (async workers, rule evaluation, the store) hand bodies and values to each other,
/// so with one arena per thread the daemon's resident memory grows by a few MB per thread for nothing; it does
/// little enough allocation that one shared arena costs no measurable time. `MALLOC_ARENA_MAX` in the environment
/// still decides when it is set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes a malloc setting; it is called before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
