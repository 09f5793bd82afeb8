//! The dispatcher task: verdicts in, journalled decisions out, actions spawned on the action tracker.
//!
//! [`Dispatcher::process`] reads and writes the store (one transaction per step, `fsync`ed), so it runs on the
//! store's thread ([`Store::call`]), not on this task's worker: a locked or slow database delays decisions, never
//! the probes and timers that share the worker. The dispatcher moves to the store thread for each step and back;
//! this task awaits each step before it takes the next verdict, so verdicts are decided in the order they came.
//! In an HA pair only the leader runs it, and it drops every verdict once the leader's lease ([`LeaseGuard`]) has run
//! out.
//!
//! [`LeaseGuard`]: crate::ha::LeaseGuard

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Stats;
use crate::action::Executor;
use crate::dispatch::Dispatcher;
use crate::model::Origin;
use crate::script::Verdict;
use crate::store::Store;

#[allow(clippy::too_many_arguments)]
pub(super) async fn dispatch_loop(
    mut rx: mpsc::Receiver<Vec<(Origin, Verdict)>>,
    mut dispatcher: Dispatcher,
    store: Arc<Store>,
    executor: Arc<std::sync::RwLock<Arc<Executor>>>,
    mut policy: tokio::sync::watch::Receiver<crate::config::DispatchConfig>,
    actions: TaskTracker,
    kill: CancellationToken,
    stats: Arc<Stats>,
    status: super::StatusHandle,
    guard: crate::ha::LeaseGuard,
) {
    status.set_firing(dispatcher.firing_alerts());
    // The verdicts of one evaluation come as one message; they are decided one after the other.
    let mut batch = Vec::new().into_iter();
    loop {
        let Some((origin, verdict)) = batch.next() else {
            match rx.recv().await {
                Some(verdicts) => {
                    batch = verdicts.into_iter();
                    continue;
                }
                None => return,
            }
        };
        // A leader whose lease ran out (it was paused, or the database is gone) decides nothing more, even before
        // its term is stopped; the store's fence would refuse the decision's writes anyway.
        if !guard.holds() {
            tracing::debug!(rule = %origin.rule, target = %origin.target, "not the leader (any more): verdict dropped");
            continue;
        }
        if policy.has_changed().unwrap_or(false) {
            dispatcher.set_policy(policy.borrow_and_update().clone());
        }
        // Most verdicts of a quiet cluster ask for nothing and resolve nothing: no trip to the store's thread.
        if dispatcher.is_quiet(&origin, &verdict) {
            continue;
        }
        let (d, origin, decided) = store
            .call(move |s| {
                let decided = dispatcher.process(&origin, &verdict, s);
                (dispatcher, origin, decided)
            })
            .await;
        dispatcher = d;
        // Firing alerts change only with an alert or resolution (an action), or, in dry run, silently.
        if matches!(&decided, Ok(p) if !p.is_empty()) || status.dry_run() {
            status.set_firing(dispatcher.firing_alerts());
        }
        match decided {
            Ok(planned) if planned.is_empty() => {}
            Ok(planned) => {
                // One evaluation's actions run in order (the alert goes out before the relaunch); different
                // evaluations' actions run side by side. Actions keep the executor they started with.
                stats.actions.fetch_add(planned.len() as u64, Ordering::Relaxed);
                let ex = executor.read().unwrap_or_else(|p| p.into_inner()).clone();
                let k = kill.clone();
                let (store, status) = (store.clone(), status.clone());
                actions.spawn(async move {
                    for p in planned {
                        let id = journal_id(&p);
                        ex.execute(p, k.clone()).await;
                        // For `warden_actions_total{kind,outcome}`: the outcome the executor journalled.
                        if let Ok(Some((kind, outcome))) =
                            store.call(move |s| super::status::journal_outcome(s, id)).await
                        {
                            status.action_done(&kind, &outcome);
                        }
                    }
                });
            }
            Err(e) => tracing::error!(rule = %origin.rule, target = %origin.target, "cannot journal: {e}"),
        }
    }
}

fn journal_id(p: &crate::model::Planned) -> i64 {
    use crate::model::Planned;
    match p {
        Planned::Notify { journal_id, .. }
        | Planned::Restart { journal_id, .. }
        | Planned::Run { journal_id, .. }
        | Planned::Patch { journal_id, .. }
        | Planned::Rescale { journal_id, .. } => *journal_id,
    }
}
