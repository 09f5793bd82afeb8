//! Restarts nobody drives any more: at start-up and then every few seconds, the daemon takes over each unfinished
//! restart whose owner is gone (a Warden killed mid-restart, a `warden restart` interrupted or killed), so a
//! restart never stays stuck at a step until the next daemon start.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::action::Executor;

/// How often the daemon looks for restarts whose owner is gone.
pub const ORPHAN_SCAN: Duration = Duration::from_secs(5);

/// Scans at once, then every `every` until `stop` fires. A restart taken over runs with `kill` as its cancel signal
/// (the end of the shutdown grace period), like every other action.
pub(super) async fn adopt_orphans(
    executor: Arc<RwLock<Arc<Executor>>>,
    every: Duration,
    stop: CancellationToken,
    kill: CancellationToken,
) {
    loop {
        let ex = executor.read().unwrap_or_else(|p| p.into_inner()).clone();
        let n = ex.resume_restarts(kill.clone()).await;
        if n > 0 {
            tracing::info!(restarts = n, "took over restarts whose driver was gone");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
