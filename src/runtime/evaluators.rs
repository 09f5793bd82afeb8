//! How many evaluations run at once: as many as the machine has cores (at least two).
//!
//! Rules are interpreted on blocking threads (never on the async workers). Probes on one grid instant
//! ([`crate::schedule::Ticker::on_grid`]) answer within a few milliseconds of each other; without a bound each
//! answer would take a thread of its own, and a burst of 20 polls would keep 20 threads (each with its own stack and
//! allocator cache) for work that two cores do one after the other. An evaluation holds a slot while it runs and
//! gives it back while it waits for a follow-up request (`http_get`): a JobManager slow to answer holds up no other
//! target's evaluations.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The evaluation slots of a daemon.
pub(super) struct Evaluators {
    slots: Arc<Semaphore>,
}

impl Evaluators {
    /// As many slots as the machine has cores, at least two.
    pub(super) fn new() -> Self {
        Self::with_slots(std::thread::available_parallelism().map_or(2, |n| n.get()).max(2))
    }

    /// `n` slots (at least one).
    pub(super) fn with_slots(n: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(n.max(1))) }
    }

    /// Runs `evaluate` on a blocking thread once a slot is free. `evaluate` holds the slot until it returns (and
    /// hands it to its follow-up requests, which give it back while they wait); then the thread gives back the
    /// memory it freed ([`release_thread_memory`]). `None` when `stop` fires while the evaluation waits for a slot.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        stop: &CancellationToken,
        evaluate: impl FnOnce(Arc<Slot>) -> T + Send + 'static,
    ) -> Option<Result<T, tokio::task::JoinError>> {
        let slot = tokio::select! {
            s = self.slot() => s,
            _ = stop.cancelled() => return None,
        };
        let evaluated = tokio::task::spawn_blocking(move || {
            // What `evaluate` took (its observation, the slot) is dropped when it returns, before the release.
            let out = evaluate(slot);
            release_thread_memory();
            out
        });
        Some(evaluated.await)
    }

    /// Waits for a free slot.
    async fn slot(&self) -> Arc<Slot> {
        let permit = self.slots.clone().acquire_owned().await.ok();
        Arc::new(Slot { slots: self.slots.clone(), permit: Mutex::new(permit) })
    }
}

/// One evaluation's slot, held until it is dropped.
pub(super) struct Slot {
    slots: Arc<Semaphore>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    /// Runs `wait` (a blocking wait for a follow-up answer) with the slot given back, then takes a slot again
    /// (through `handle`: this runs on a blocking thread).
    pub(super) fn released_while<T>(&self, handle: &tokio::runtime::Handle, wait: impl FnOnce() -> T) -> T {
        drop(self.permit.lock().take());
        let out = wait();
        let again = handle.block_on(self.slots.clone().acquire_owned()).ok();
        *self.permit.lock() = again;
        out
    }
}

/// Ends an evaluation on its blocking thread ([`Evaluators::run`]): gives the memory the thread freed back to the system. The daemon's
/// allocator (mimalloc, `src/main.rs`) keeps a thread's freed pages until that thread allocates again, and an
/// evaluation thread may then sleep until the next instant of the grid: measured with 100 targets, the daemon held
/// about 4.5 MB more without this, at no measurable CPU cost with it. (Where another allocator is in use, as in the
/// tests, this frees nothing.)
fn release_thread_memory() {
    // SAFETY: mi_collect takes no pointers; it collects the calling thread's heap (`false`: without forcing the
    // abandoned pages of other threads).
    unsafe { libmimalloc_sys::mi_collect(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_bound_evaluations_and_a_follow_up_wait_gives_its_slot_back() {
        let ev = Evaluators::with_slots(1);
        let first = ev.slot().await;
        // The only slot is taken: a second evaluation waits.
        let second = tokio::time::timeout(std::time::Duration::from_millis(50), ev.slot()).await;
        assert!(second.is_err(), "a second slot while the only one is held");
        // While the first waits for a follow-up answer, a second evaluation gets the slot and ends.
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let waiting = tokio::task::spawn_blocking({
            let first = first.clone();
            move || first.released_while(&handle, || rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok())
        });
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), ev.slot()).await.expect("a free slot");
        drop(second);
        tx.send(()).unwrap();
        assert!(waiting.await.unwrap(), "the follow-up wait ended with its answer");
        // The first holds its slot again.
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), ev.slot()).await.is_err());
        drop(first);
        assert!(tokio::time::timeout(std::time::Duration::from_secs(5), ev.slot()).await.is_ok());
    }
}
