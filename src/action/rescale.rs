//! The `rescale` action: change a running job's parallelism, in place where the cluster supports it.
//!
//! 1. **Bounds.** The job must have `jobs.<job>.parallelism: {min, max}`; the parallelism asked for (a number, or
//!    a step from what the job runs at now) is clamped to them. Already there: nothing is done (journalled as
//!    `suppressed: …`, which the storm guard does not count).
//! 2. **Lock.** Never next to a restart of the same job: a rescale is refused (`suppressed: …`) while a restart
//!    record of the job is open (the per-job restart lock, which `warden restart` in another process also takes)
//!    or while this Warden rescales or restarts it; a restart that this Warden starts meanwhile waits for the
//!    rescale to end ([`job_lock`]).
//! 3. **Path.** In place when [`crate::flink::rescale::supports_in_place`] says so (Flink ≥ 1.18, adaptive
//!    scheduler): new per-vertex bounds, then verified by the vertices' parallelism. Otherwise
//!    [`RescaleOutcome::ViaSavepoint`]: the executor runs a savepoint restart with the parallelism overridden
//!    (the restart machinery of [`crate::action::restart`]: verified, rolled back if the new run fails).
//! 4. **Outcome.** Journalled (`ok`, `partial: …`, `failed at <step>: …`) with which path was used and how long
//!    Warden's part (reading the job, deciding, asking) and Flink's part (until the vertices run at the new
//!    parallelism) took, and announced as `rescaled`, `rescale_partial` or `rescale_failed`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::config::JobConfig;
use crate::fetch::TargetClient;
use crate::flink::client::FlinkClient;
use crate::flink::rescale::{self as flink_rescale, InPlaceResult, InPlaceSupport};
use crate::model::RescaleTo;
use crate::store::Store;

/// How a rescale was (or would have been) carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RescalePath {
    /// `PUT /jobs/:jid/resource-requirements`: Flink rescales the running job itself.
    InPlace,
    /// A savepoint, then the job resubmitted with the new parallelism.
    Savepoint,
}

impl RescalePath {
    /// `in-place` or `savepoint`.
    pub fn as_str(self) -> &'static str {
        match self {
            RescalePath::InPlace => "in-place",
            RescalePath::Savepoint => "savepoint",
        }
    }
}

impl std::fmt::Display for RescalePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long each side took, for the journal and the e2e figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RescaleTiming {
    /// Warden's part: reading the job and the cluster, deciding, and asking Flink.
    pub warden: Duration,
    /// Flink's part: from the ask until the vertices ran at the new parallelism (or Warden stopped waiting).
    pub flink: Duration,
}

/// How a rescale ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RescaleOutcome {
    /// Every vertex runs at the new parallelism.
    Done {
        /// The run rescaled (the same job id after an in-place rescale).
        jid: String,
        /// Parallelism before.
        from: u32,
        /// Parallelism now.
        to: u32,
        /// The path used.
        path: RescalePath,
        /// Why that path (the cluster's version and scheduler, or why not in place).
        why_path: String,
        /// Time split.
        timing: RescaleTiming,
    },
    /// The job runs, but below what was asked: the cluster has no free slot left. The bounds stay set.
    Partial {
        /// The run.
        jid: String,
        /// Parallelism before.
        from: u32,
        /// Parallelism asked for.
        wanted: u32,
        /// Parallelism the job got.
        got: u32,
        /// Free slots when this was decided.
        free_slots: u32,
        /// Time split.
        timing: RescaleTiming,
    },
    /// Nothing to do, or not now (already at the bound, a restart in progress): journalled as `suppressed: …`.
    Suppressed(String),
    /// The cluster cannot rescale in place: the caller rescales through a savepoint restart with the new
    /// parallelism (the restart machinery journals and announces that one). Not an end by itself.
    ViaSavepoint {
        /// The run to rescale.
        jid: String,
        /// Parallelism before.
        from: u32,
        /// Parallelism asked for, clamped.
        wanted: u32,
        /// Why not in place.
        reason: String,
    },
    /// A step failed.
    Failed {
        /// The step (`start`, `job`, `path`, `requirements`, `verify`, …).
        step: String,
        /// Why.
        message: String,
        /// The path, once chosen.
        path: Option<RescalePath>,
    },
}

impl RescaleOutcome {
    /// The journal outcome: `ok`, `partial: …`, `suppressed: …` or `failed at <step>: …`.
    pub fn journal(&self) -> String {
        match self {
            RescaleOutcome::Done { .. } => "ok".into(),
            RescaleOutcome::Partial { wanted, got, .. } => {
                format!("partial: parallelism {got} of {wanted} asked; no free slot left")
            }
            RescaleOutcome::Suppressed(why) => format!("suppressed: {why}"),
            RescaleOutcome::ViaSavepoint { .. } => "started".into(),
            RescaleOutcome::Failed { step, message, .. } => format!("failed at {step}: {message}"),
        }
    }

    fn failed(step: &str, message: impl Into<String>, path: Option<RescalePath>) -> Self {
        RescaleOutcome::Failed { step: step.into(), message: message.into(), path }
    }
}

type Locks = Mutex<HashMap<(usize, String, String), Arc<tokio::sync::Mutex<()>>>>;

/// This process's lock of `job` on `target` in the state store `store`, shared by rescales and restarts: a rescale
/// only proceeds if it can take it at once, a restart waits for it. (Keyed by the store too, so tests with their
/// own stores in one process do not meet.)
pub fn job_lock(store: &Arc<Store>, target: &str, job: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Locks> = OnceLock::new();
    let key = (Arc::as_ptr(store) as usize, target.to_string(), job.to_string());
    let mut locks = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    locks.entry(key).or_default().clone()
}

/// Rescales journalled and not finished yet (outcome `started`), oldest first: what the status API shows in flight.
/// Only the newest 200 rescale entries are looked at.
pub fn in_flight(store: &Store) -> Result<Vec<crate::store::JournalEntry>, crate::store::StoreError> {
    let f = crate::store::JournalFilter { kind: Some(crate::model::ActionKind::Rescale), ..Default::default() };
    Ok(store.find_entries(&f, Some(200))?.into_iter().filter(|e| e.outcome == "started").collect())
}

/// Everything a rescale needs.
pub struct RescaleContext<'a> {
    /// The store (restart records: the per-job lock).
    pub store: &'a Arc<Store>,
    /// The target's name.
    pub target: &'a str,
    /// The target's client.
    pub client: &'a TargetClient,
    /// The job's name.
    pub job: &'a str,
    /// The job's configuration (its bounds, `verify_timeout`).
    pub config: &'a JobConfig,
    /// The bounds the parallelism asked for is clamped to: the job's `parallelism` for a rule's request, `None`
    /// for an operator's `warden rescale --parallelism N` (Flink still refuses more than a vertex's max
    /// parallelism).
    pub bounds: Option<crate::config::ParallelismBounds>,
    /// How often Flink is polled while waiting.
    pub poll: Duration,
}

/// Rescales `job` (run `jid`, or its live run when empty) as `to` asks, clamped to the job's bounds; see the
/// module docs for the steps.
pub async fn rescale(ctx: &RescaleContext<'_>, jid: &str, to: RescaleTo) -> RescaleOutcome {
    let started = Instant::now();
    let Some(bounds) = ctx.bounds else {
        return RescaleOutcome::failed(
            "start",
            format!(
                "no `jobs.{}.parallelism: {{min, max}}` in warden.yaml; Warden does not rescale a job without bounds",
                ctx.job
            ),
            None,
        );
    };
    let lock = job_lock(ctx.store, ctx.target, ctx.job);
    let Ok(_guard) = lock.try_lock() else {
        return RescaleOutcome::Suppressed(format!(
            "a restart or rescale of {} is in progress in this Warden",
            ctx.job
        ));
    };
    let (store, target, job) = (ctx.store.clone(), ctx.target.to_string(), ctx.job.to_string());
    match store.call(move |s| s.restart_in_progress(&target, &job)).await {
        Ok(Some(r)) => {
            return RescaleOutcome::Suppressed(format!(
                "restart #{} of {} is in progress (step {}, {})",
                r.id,
                r.job,
                r.step,
                r.owner.as_deref().unwrap_or("an earlier Warden")
            ))
        }
        Ok(None) => {}
        Err(e) => return RescaleOutcome::failed("start", format!("cannot read the restart lock: {e}"), None),
    }
    let jid = match live_run(ctx, jid).await {
        Ok(j) => j,
        Err(e) => return RescaleOutcome::failed("job", e, None),
    };
    let shape = match flink_rescale::job_shape(ctx.client, &jid).await {
        Ok(s) => s,
        Err(e) => return RescaleOutcome::failed("job", e.to_string(), None),
    };
    if !shape.all_running() {
        return RescaleOutcome::failed(
            "job",
            format!(
                "job {} ({jid}) is {}, not RUNNING with every vertex running; not rescaling it now",
                ctx.job, shape.state
            ),
            None,
        );
    }
    let from = shape.parallelism();
    let wanted = to.resolve(from, bounds.min, bounds.max);
    if wanted == from {
        let why = match to {
            RescaleTo::Step(s) if s > 0 => {
                format!("already at its upper bound {} (jobs.{}.parallelism.max)", from, ctx.job)
            }
            RescaleTo::Step(_) => format!("already at its lower bound {} (jobs.{}.parallelism.min)", from, ctx.job),
            RescaleTo::Exactly(n) if n == from => format!("already at parallelism {from}"),
            RescaleTo::Exactly(n) => format!(
                "already at parallelism {from}, the nearest to {n} within its bounds {}..={} (jobs.{}.parallelism)",
                bounds.min, bounds.max, ctx.job
            ),
        };
        return RescaleOutcome::Suppressed(format!("{} {why}", ctx.job));
    }
    match flink_rescale::supports_in_place(ctx.client, &jid).await {
        InPlaceSupport::Yes { version, evidence } => {
            let why_path = format!("Flink {version}, {evidence}");
            in_place(ctx, &jid, from, wanted, why_path, started).await
        }
        InPlaceSupport::No { reason } if ctx.config.jar.is_none() => RescaleOutcome::failed(
            "path",
            format!(
                "cannot rescale {} in place ({reason}), and a savepoint rescale submits a jar over REST: \
                 `jobs.{}` resubmits with a command",
                ctx.job, ctx.job
            ),
            Some(RescalePath::Savepoint),
        ),
        InPlaceSupport::No { reason } => RescaleOutcome::ViaSavepoint { jid, from, wanted, reason },
    }
}

async fn in_place(
    ctx: &RescaleContext<'_>,
    jid: &str,
    from: u32,
    wanted: u32,
    why_path: String,
    started: Instant,
) -> RescaleOutcome {
    let (result, asked) =
        flink_rescale::rescale_in_place(ctx.client, jid, wanted, ctx.config.verify_timeout, ctx.poll).await;
    let timing = match asked {
        Some(at) => RescaleTiming { warden: at.duration_since(started), flink: at.elapsed() },
        None => RescaleTiming { warden: started.elapsed(), flink: Duration::ZERO },
    };
    match result {
        InPlaceResult::Done { shape } => RescaleOutcome::Done {
            jid: jid.to_string(),
            from,
            to: shape.parallelism(),
            path: RescalePath::InPlace,
            why_path,
            timing,
        },
        InPlaceResult::Partial { shape, free_slots } => {
            RescaleOutcome::Partial { jid: jid.to_string(), from, wanted, got: shape.parallelism(), free_slots, timing }
        }
        InPlaceResult::Failed { step, message } => RescaleOutcome::failed(step, message, Some(RescalePath::InPlace)),
    }
}

/// The run to rescale: `jid` if it is live, else the one live run of the job.
async fn live_run(ctx: &RescaleContext<'_>, jid: &str) -> Result<String, String> {
    let jobs = FlinkClient::new(ctx.client).jobs().await.map_err(|e| e.to_string())?;
    if !jid.is_empty() && jobs.iter().any(|j| j.jid == jid && j.is_live()) {
        return Ok(jid.to_string());
    }
    let live: Vec<_> = jobs.iter().filter(|j| j.name == ctx.job && j.is_live()).collect();
    match live.as_slice() {
        [one] => Ok(one.jid.clone()),
        [] => Err(format!("no live run of job {} on target {}", ctx.job, ctx.target)),
        many => Err(format!(
            "{} live runs of job {} ({}); not rescaling any",
            many.len(),
            ctx.job,
            many.iter().map(|j| j.jid.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// One line for people and the journal's output: path, parallelism before and after, the time split.
pub fn describe(job: &str, o: &RescaleOutcome) -> (String, serde_json::Value) {
    let ms = |d: Duration| d.as_millis() as u64;
    match o {
        RescaleOutcome::Done { jid, from, to, path, why_path, timing } => (
            format!(
                "{job} rescaled {path} from parallelism {from} to {to} ({why_path}); Warden {} ms, Flink {} ms",
                ms(timing.warden),
                ms(timing.flink)
            ),
            json!({"job": job, "jid": jid, "from": from, "to": to, "path": path, "why_path": why_path,
                   "warden_ms": ms(timing.warden), "flink_ms": ms(timing.flink)}),
        ),
        RescaleOutcome::Partial { jid, from, wanted, got, free_slots, timing } => (
            format!(
                "{job} rescaled in-place from parallelism {from} to only {got} of the {wanted} asked: the cluster has \
                 {free_slots} free slot(s); the job grows when slots come"
            ),
            json!({"job": job, "jid": jid, "from": from, "wanted": wanted, "to": got, "path": RescalePath::InPlace,
                   "free_slots": free_slots, "warden_ms": ms(timing.warden), "flink_ms": ms(timing.flink)}),
        ),
        RescaleOutcome::Suppressed(why) => (format!("rescale of {job} not done: {why}"), json!({"job": job})),
        RescaleOutcome::ViaSavepoint { jid, from, wanted, reason } => (
            format!("{job} is rescaled from parallelism {from} to {wanted} through a savepoint restart: {reason}"),
            json!({"job": job, "jid": jid, "from": from, "to": wanted, "path": RescalePath::Savepoint,
                   "why_path": reason}),
        ),
        RescaleOutcome::Failed { step, message, path } => (
            format!("rescale of {job} failed at step `{step}`: {message}"),
            json!({"job": job, "step": step, "path": path}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_outcomes() {
        let t = RescaleTiming::default();
        let done = RescaleOutcome::Done {
            jid: "a".into(),
            from: 1,
            to: 2,
            path: RescalePath::InPlace,
            why_path: "Flink 2.3.0, jobmanager.scheduler: adaptive".into(),
            timing: t,
        };
        assert_eq!(done.journal(), "ok");
        let (line, d) = describe("clicks", &done);
        assert!(line.starts_with("clicks rescaled in-place from parallelism 1 to 2"), "{line}");
        assert_eq!(d["path"], "in-place");
        let p = RescaleOutcome::Partial { jid: "a".into(), from: 1, wanted: 8, got: 4, free_slots: 0, timing: t };
        assert_eq!(p.journal(), "partial: parallelism 4 of 8 asked; no free slot left");
        assert!(RescaleOutcome::Suppressed("x".into()).journal().starts_with("suppressed"));
    }
}
