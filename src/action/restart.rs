//! The `restart_job` action: bring a job back from its state, exactly once, and prove it came back.
//!
//! Steps, each saved in the store before and after it runs (the restart record is also the per-job lock):
//!
//! 1. `started` → choose the state: for `savepoint`, stop the running job with a savepoint (or trigger one and
//!    cancel) → `savepoint-triggered` → poll until COMPLETED with a location (COMPLETED with a `failure-cause`,
//!    or still IN_PROGRESS after `savepoint_timeout`, is a failure and the job keeps running); for
//!    `last-checkpoint`, the newest retained checkpoint from `/jobs/:jid/checkpoints`, else the newest location
//!    Warden recorded for the job, else the job's `fallback`; for `stateless`, nothing.
//! 2. `state-chosen` → wait until no instance of the job is live (never start a second one) → `submitting`.
//! 3. `submitting` → if an instance started after the restart began is already live (Warden died right after
//!    submitting), adopt it; otherwise submit (REST jar run with `savepointPath`, or a command with `{savepoint}`)
//!    → `submitted` with the new job id.
//! 4. `submitted` → the new job is RUNNING within `verify_timeout` and its `latest.restored.external_path` equals
//!    the location used → `done`.
//!
//! A Warden killed at any point resumes from the last saved step on its next start.
//!
//! **Upgrades and rescales** ([`RestartKind::Upgrade`], [`RestartKind::Rescale`]) are the same machine with
//! [`RestartOverrides`] applied at the submit step, and two more steps: before anything else, `started` records
//! what the job runs now (its jar id and parallelism, to roll back to) and puts the new jar on the cluster (a
//! local file is uploaded once) → `jar-uploaded` (the old run is untouched until then, so a failed upload costs
//! nothing); after `submitted` verified the new run (RUNNING, restored from the location, and for a rescale its
//! vertices at the new parallelism) → `probation`: it must stay RUNNING with no failure for the job's
//! `upgrade.probation` → `done`. Once the old run is gone (from `submitting` on), any failure rolls back: the new
//! run is cancelled, the record ends as failed with Flink's root cause, and in the same store transaction a
//! [`RestartKind::Rollback`] record begins at `state-chosen` with the previous jar and parallelism and the same
//! location; it is driven on at once (and resumed like any restart). A rollback that fails ends there: one alert,
//! no loop.
//!
//! **Ownership.** A restart record names its owner (`pid <n> on <host>`) and holds a lease ([`LEASE`]) that the
//! driver renews while it works. Only the owner writes the record (the store refuses a write from anyone else), so
//! a CLI `warden restart` and the daemon never drive the same restart: one that finds the job's restart already
//! owned follows it; one that finds the lease expired (or the owner's process gone) takes it over from its last
//! saved step. A driver that loses its lease stops at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{CommandConfig, Fallback, JobConfig, SavepointMode};
use crate::fetch::TargetClient;
use crate::flink::client::{major, normalize_location, FlinkClient, JarRun, SavepointStatus};
use crate::model::{JarRef, RestartKind, RestartOverrides, RestartResult, RestartStep, RestartStrategy, Severity};
use crate::store::{RestartRecord, Store};

/// How many savepoint/checkpoint locations are kept per job.
pub const HISTORY_KEEP: usize = 20;

/// How long a driver's claim on a restart holds without renewal; it is renewed every third of that.
pub const LEASE: Duration = Duration::from_secs(30);

/// This process as the owner of restarts: `pid <n> on <host>`.
pub fn owner_id() -> String {
    format!("pid {} on {}", std::process::id(), crate::store::lock::hostname())
}

/// Whether `owner` (as written by [`owner_id`]) is a process of this host that no longer exists.
pub fn owner_is_gone(owner: &str) -> bool {
    let Some((pid, host)) = owner.strip_prefix("pid ").and_then(|r| r.split_once(" on ")) else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else {
        return false;
    };
    if host != crate::store::lock::hostname() || pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks whether the process exists; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

fn chrono_lease(lease: Duration) -> chrono::Duration {
    chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(30))
}

/// Everything a restart needs.
pub struct RestartContext<'a> {
    /// The store (restart records, savepoint history).
    pub store: &'a Store,
    /// The target's client.
    pub client: &'a TargetClient,
    /// The job's configuration.
    pub job: &'a JobConfig,
    /// Named commands (for command-based resubmission).
    pub commands: &'a BTreeMap<String, CommandConfig>,
    /// Working directory for commands.
    pub workdir: &'a Path,
    /// The clock.
    pub clock: &'a Clock,
    /// Fires when Warden shuts down: the restart stops where it is and resumes on the next start.
    pub cancel: CancellationToken,
    /// How often Flink is polled while waiting.
    pub poll: Duration,
    /// Called with each step's news (for logs, events, the CLI).
    pub progress: &'a (dyn Fn(&RestartRecord, &str) + Send + Sync),
    /// Who drives restarts started or taken over through this context ([`owner_id`]).
    pub owner: String,
    /// How long a claim holds without renewal ([`LEASE`]; shorter in tests).
    pub lease: Duration,
}

/// How a restart ended (for now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartOutcome {
    /// The new job runs and restored from the chosen state.
    Done(RestartRecord),
    /// A step failed; the record says which and why.
    Failed {
        /// The record (its `outcome` is `failed at <step>: …`).
        record: RestartRecord,
        /// The step.
        step: String,
        /// Why.
        message: String,
    },
    /// Another restart of the same job is in progress.
    Busy(RestartRecord),
    /// Warden is shutting down; the restart resumes on the next start (or in a running daemon, which takes it
    /// over).
    Interrupted(RestartRecord),
    /// Another process took the restart over (this driver's lease had expired); it concludes the restart.
    HandedOver(RestartRecord),
    /// The store failed.
    StoreFailed(String),
}

enum Step {
    Next,
    Fail(&'static str, String),
    Stop,
}

/// Starts a restart of `job` on the context's target and drives it to its end.
pub async fn begin(
    ctx: &RestartContext<'_>,
    journal_id: i64,
    target: &str,
    job: &str,
    old_jid: &str,
    strategy: RestartStrategy,
) -> RestartOutcome {
    begin_with(ctx, journal_id, target, job, old_jid, strategy, &RestartOverrides::default()).await
}

/// Starts a restart of `job` with `overrides` (an upgrade or a rescale when they change the jar or the
/// parallelism, see [`RestartOverrides::kind`]) and drives it to its end, through its rollback if need be.
pub async fn begin_with(
    ctx: &RestartContext<'_>,
    journal_id: i64,
    target: &str,
    job: &str,
    old_jid: &str,
    strategy: RestartStrategy,
    overrides: &RestartOverrides,
) -> RestartOutcome {
    let lease = chrono_lease(ctx.lease);
    let kind = overrides.kind();
    let now = ctx.clock.now();
    match ctx
        .store
        .begin_restart_as(journal_id, target, job, strategy, old_jid, kind, overrides, now, &ctx.owner, lease)
    {
        Ok(Some(rec)) => {
            (ctx.progress)(&rec, &format!("{kind} #{} of {job} ({strategy}{}) begins", rec.id, describe(overrides)));
            drive(ctx, rec).await
        }
        Ok(None) => match ctx.store.restart_in_progress(target, job) {
            Ok(Some(r)) => RestartOutcome::Busy(r),
            Ok(None) => RestartOutcome::StoreFailed("the restart lock was taken and released at once; retry".into()),
            Err(e) => RestartOutcome::StoreFailed(e.to_string()),
        },
        Err(e) => RestartOutcome::StoreFailed(e.to_string()),
    }
}

/// Takes over an unfinished restart whose owner is gone (its lease expired or was released, or its process no
/// longer exists on this host) and drives it from its last saved step. `None` when it is not free to take.
pub async fn take_over(ctx: &RestartContext<'_>, rec: &RestartRecord) -> Option<RestartOutcome> {
    let lease = chrono_lease(ctx.lease);
    let now = ctx.clock.now();
    let mine = match ctx.store.claim_restart(rec.id, &ctx.owner, now, lease) {
        Ok(Some(r)) => Some(r),
        Ok(None) => match rec.owner.as_deref() {
            Some(o) if o != ctx.owner && owner_is_gone(o) => {
                ctx.store.steal_restart(rec.id, o, &ctx.owner, now, lease).ok().flatten()
            }
            _ => None,
        },
        Err(e) => return Some(RestartOutcome::StoreFailed(e.to_string())),
    }?;
    (ctx.progress)(
        &mine,
        &format!(
            "taking over restart #{} of {} at step {} (left by {})",
            mine.id,
            mine.job,
            mine.step,
            rec.owner.as_deref().unwrap_or("an earlier Warden")
        ),
    );
    Some(drive(ctx, mine).await)
}

/// What this driver does next.
enum Flow {
    /// The restart ended (or this driver stops).
    End(RestartOutcome),
    /// An upgrade or rescale failed and its rollback began: drive that record on.
    Then(RestartRecord),
}

/// Drives a restart this context owns from its last saved step, renewing the lease meanwhile, and then its
/// rollback if it began one. Stops at once if another process took it over.
pub async fn drive(ctx: &RestartContext<'_>, rec: RestartRecord) -> RestartOutcome {
    let mut rec = rec;
    loop {
        match drive_one(ctx, rec).await {
            Flow::End(o) => return o,
            Flow::Then(next) => {
                #[cfg(test)]
                if tests::crash_now(&next) {
                    let _ = ctx.store.release_restart(next.id, &ctx.owner);
                    return RestartOutcome::Interrupted(next);
                }
                (ctx.progress)(
                    &next,
                    &format!(
                        "rollback #{} of {} begins: the previous jar {} (parallelism {}) from {}",
                        next.id,
                        next.job,
                        next.jar_id.as_deref().unwrap_or("(the configured one)"),
                        next.overrides.parallelism.map(|p| p.to_string()).unwrap_or_else(|| "as configured".into()),
                        next.location.as_deref().unwrap_or("no state")
                    ),
                );
                rec = next;
            }
        }
    }
}

async fn drive_one(ctx: &RestartContext<'_>, rec: RestartRecord) -> Flow {
    let id = rec.id;
    let lease = chrono_lease(ctx.lease);
    let snapshot = rec.clone();
    let renew = async {
        loop {
            tokio::time::sleep(ctx.lease / 3).await;
            match ctx.store.renew_restart_lease(id, &ctx.owner, ctx.clock.now(), lease) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(restart = id, "cannot renew the restart's lease: {e}"),
            }
        }
    };
    let flow = tokio::select! {
        o = drive_steps(ctx, rec) => o,
        () = renew => {
            let rec = ctx.store.restart(id).ok().flatten().unwrap_or(snapshot);
            (ctx.progress)(&rec, &format!("restart #{id} was taken over by {}; stopping here", rec.owner.as_deref().unwrap_or("another process")));
            return Flow::End(RestartOutcome::HandedOver(rec));
        }
    };
    if let Flow::End(RestartOutcome::Interrupted(r)) = &flow {
        // Let whoever comes next resume it at once instead of waiting for the lease to run out.
        if let Err(e) = ctx.store.release_restart(r.id, &ctx.owner) {
            tracing::warn!(restart = r.id, "cannot release the restart's lease: {e}");
        }
    }
    flow
}

async fn drive_steps(ctx: &RestartContext<'_>, mut rec: RestartRecord) -> Flow {
    use RestartOutcome as O;
    loop {
        if ctx.cancel.is_cancelled() {
            return Flow::End(O::Interrupted(rec));
        }
        let step = match rec.step {
            RestartStep::Started if rec.kind.rolls_back() => prepare(ctx, &mut rec).await,
            RestartStep::Started | RestartStep::JarUploaded => choose_state(ctx, &mut rec).await,
            RestartStep::SavepointTriggered => await_savepoint(ctx, &mut rec).await,
            RestartStep::StateChosen => ensure_not_live(ctx, &mut rec).await,
            RestartStep::Submitting => submit(ctx, &mut rec).await,
            RestartStep::Submitted => verify(ctx, &mut rec).await,
            RestartStep::Probation => probation(ctx, &mut rec).await,
            RestartStep::Done => return Flow::End(O::Done(rec)),
        };
        match step {
            Step::Next => {
                rec.mark_step(ctx.clock.now());
                if let Err(e) = ctx.store.update_restart(&rec, ctx.clock.now()) {
                    if ctx.store.restart(rec.id).ok().flatten().is_some_and(|r| r.owner != rec.owner) {
                        return Flow::End(O::HandedOver(rec));
                    }
                    return Flow::End(O::StoreFailed(e.to_string()));
                }
                if rec.step == RestartStep::Done {
                    (ctx.progress)(&rec, "done");
                    return Flow::End(O::Done(rec));
                }
                #[cfg(test)]
                if tests::crash_now(&rec) {
                    return Flow::End(O::Interrupted(rec));
                }
            }
            Step::Stop => return Flow::End(O::Interrupted(rec)),
            Step::Fail(step, message) => {
                // From `submitting` on, the old run is gone: an upgrade or rescale that fails there is undone.
                let past_the_old_run =
                    matches!(rec.step, RestartStep::Submitting | RestartStep::Submitted | RestartStep::Probation);
                if rec.kind.rolls_back() && past_the_old_run {
                    return roll_back(ctx, rec, step, message).await;
                }
                let result = RestartResult::Failed { step: step.to_string(), message: message.clone() };
                (ctx.progress)(&rec, &result.to_string());
                rec.outcome = Some(result);
                if let Err(e) = ctx.store.update_restart(&rec, ctx.clock.now()) {
                    return Flow::End(O::StoreFailed(e.to_string()));
                }
                return Flow::End(O::Failed { record: rec, step: step.to_string(), message });
            }
        }
    }
}

/// Ends a failed upgrade or rescale and begins its rollback: the new run's root cause is recorded, what is left
/// of it cancelled, and the rollback record begun in the same transaction that ends this one.
async fn roll_back(ctx: &RestartContext<'_>, mut rec: RestartRecord, step: &'static str, message: String) -> Flow {
    let fc = FlinkClient::new(ctx.client);
    let mut cause = None;
    if let Some(new) = rec.new_jid.clone() {
        cause = fc.root_cause(&new).await.ok().flatten().map(|c| c.line);
        match fc.job_state(&new).await {
            Ok(s) if !matches!(s.as_str(), "FAILED" | "CANCELED" | "FINISHED") => {
                if let Err(e) = fc.cancel(&new).await {
                    (ctx.progress)(&rec, &format!("cannot cancel the new job {new}: {e} (the rollback tries again)"));
                }
            }
            _ => {}
        }
    }
    let cause = cause.unwrap_or_else(|| format!("failed at {step}: {message}"));
    (ctx.progress)(&rec, &format!("the new version failed at {step}: {message}; root cause: {cause}; rolling back"));
    rec.cause = Some(cause);
    rec.outcome = Some(RestartResult::Failed { step: step.to_string(), message: format!("{message}; rolled back") });
    // The entry class and arguments of the release the job ran, if an earlier upgrade set them.
    let previous = match (current_release(ctx, &rec.target, &rec.job).await, &rec.prev_jar_id) {
        (Some(last), Some(prev)) if last.jar_id.as_ref() == Some(prev) => last.overrides,
        _ => RestartOverrides::default(),
    };
    match ctx.store.roll_back(&rec, &previous, ctx.clock.now()) {
        Ok(next) => Flow::Then(next),
        Err(e) => {
            if ctx.store.restart(rec.id).ok().flatten().is_some_and(|r| r.owner != rec.owner) {
                return Flow::End(RestartOutcome::HandedOver(rec));
            }
            Flow::End(RestartOutcome::StoreFailed(e.to_string()))
        }
    }
}

/// `, jar X, parallelism N` for the overrides that are set.
pub fn describe(o: &RestartOverrides) -> String {
    let mut s = String::new();
    if let Some(j) = &o.jar {
        s.push_str(&format!(", jar {j}"));
    }
    if let Some(c) = &o.entry_class {
        s.push_str(&format!(", entry class {c}"));
    }
    if let Some(a) = &o.args {
        s.push_str(&format!(", args {a:?}"));
    }
    if let Some(p) = o.parallelism {
        s.push_str(&format!(", parallelism {p}"));
    }
    if o.allow_non_restored_state == Some(true) {
        s.push_str(", allowing non-restored state");
    }
    s
}

/// How a restart that ended is journalled (`journal`, the entry's outcome) and announced (`alert`: event,
/// severity, summary; `None` for no alert).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conclusion {
    /// The journal entry's outcome.
    pub journal: String,
    /// The alert: its event name, severity and one-line summary.
    pub alert: Option<(&'static str, Severity, String)>,
}

/// How `outcome` is journalled and announced, by kind: restarted / upgraded / rescaled / rolled back (with the
/// new version's root cause) / failed. `None` while the restart goes on elsewhere (interrupted, handed over) or
/// when the store failed.
pub fn conclusion(outcome: &RestartOutcome) -> Option<(&RestartRecord, Conclusion)> {
    let jar = |r: &RestartRecord| r.jar_id.clone().or_else(|| r.overrides.jar.as_ref().map(|j| j.to_string()));
    match outcome {
        RestartOutcome::Done(r) => {
            let from = r.location.as_deref().map(|l| format!("from {l}")).unwrap_or_else(|| "without state".into());
            let new = r.new_jid.as_deref().unwrap_or("?");
            let restored = if r.location.is_some() { " and restored from it" } else { "" };
            let (journal, event, severity, summary) = match r.kind {
                RestartKind::Restart => (
                    "ok".to_string(),
                    "restarted",
                    Severity::Info,
                    format!("{} restarted {from}: new job {new} is RUNNING{restored}", r.job),
                ),
                RestartKind::Upgrade => (
                    "ok".to_string(),
                    "upgraded",
                    Severity::Info,
                    format!(
                        "{} upgraded to {} {from}: new job {new} is RUNNING{restored}",
                        r.job,
                        jar(r).unwrap_or_else(|| "the new jar".into())
                    ),
                ),
                RestartKind::Rescale => (
                    "ok".to_string(),
                    "rescaled",
                    Severity::Info,
                    format!(
                        "{} rescaled to parallelism {} {from}: new job {new} is RUNNING{restored}",
                        r.job,
                        r.overrides.parallelism.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                    ),
                ),
                RestartKind::Rollback => {
                    let cause = r.cause.as_deref().unwrap_or("unknown");
                    (
                        format!("rolled back: {cause}"),
                        "rolled_back",
                        Severity::Warning,
                        format!(
                            "the new version of {} failed ({cause}); rolled back to the previous jar {} {from}: job {new} is RUNNING{restored}",
                            r.job,
                            jar(r).unwrap_or_else(|| "(as configured)".into())
                        ),
                    )
                }
            };
            Some((r, Conclusion { journal, alert: Some((event, severity, summary)) }))
        }
        RestartOutcome::Failed { record, step, message } => {
            let journal = format!("failed at {step}: {message}");
            let alert = match record.kind {
                RestartKind::Restart => (
                    "restart_failed",
                    Severity::Critical,
                    format!("restart of {} failed at step `{step}`: {message}", record.job),
                ),
                RestartKind::Upgrade | RestartKind::Rescale => (
                    "upgrade_failed",
                    Severity::Warning,
                    format!("{} of {} failed at step `{step}`: {message}", record.kind, record.job),
                ),
                RestartKind::Rollback => (
                    "rollback_failed",
                    Severity::Critical,
                    format!(
                        "the new version of {} failed ({}) and so did the rollback, at step `{step}`: {message}; Warden stops here",
                        record.job,
                        record.cause.as_deref().unwrap_or("unknown")
                    ),
                ),
            };
            Some((record, Conclusion { journal, alert: Some(alert) }))
        }
        RestartOutcome::Busy(r) => Some((
            r,
            Conclusion {
                journal: format!(
                    "suppressed: {} #{} of {} is already in progress (step {})",
                    r.kind, r.id, r.job, r.step
                ),
                alert: None,
            },
        )),
        RestartOutcome::Interrupted(_) | RestartOutcome::HandedOver(_) | RestartOutcome::StoreFailed(_) => None,
    }
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_else(|_| Utc::now())
}

/// Sleeps for the poll interval; false when Warden is shutting down.
async fn pause(ctx: &RestartContext<'_>) -> bool {
    pause_for(ctx, ctx.poll).await
}

/// Sleeps before the `n`-th look at something Flink is about to finish (a savepoint, a job leaving or reaching
/// RUNNING): 100 ms, doubling up to the poll interval, so a quick answer is seen at once and a slow one is not
/// asked for too often. False when Warden is shutting down.
async fn pause_n(ctx: &RestartContext<'_>, n: u32) -> bool {
    pause_for(ctx, backoff(ctx.poll, n)).await
}

/// `min(poll, 100 ms × 2^n)`.
pub(crate) fn backoff(poll: Duration, n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(16))).min(poll)
}

async fn pause_for(ctx: &RestartContext<'_>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = ctx.cancel.cancelled() => false,
    }
}

/// The release the job runs since its last upgrade, rollback or rescale (that record: its `jar_id` and
/// overrides), if that jar is still on the cluster. Restarts resubmit it, and upgrades roll back to it, instead
/// of `jobs.<name>.jar`, which may still name an older release.
async fn current_release(ctx: &RestartContext<'_>, target: &str, job: &str) -> Option<RestartRecord> {
    let last = ctx.store.last_change(target, job).ok().flatten()?;
    let id = last.jar_id.clone()?;
    let jars = FlinkClient::new(ctx.client).jars().await.ok()?;
    jars.iter().any(|j| j.0 == id).then_some(last)
}

/// An upgrade's or rescale's first step: what the job runs now (to roll back to), and the new jar on the cluster.
async fn prepare(ctx: &RestartContext<'_>, rec: &mut RestartRecord) -> Step {
    let fc = FlinkClient::new(ctx.client);
    let Some(jar) = &ctx.job.jar else {
        return Step::Fail(
            "prepare",
            format!(
                "an {} submits a jar over REST, but `jobs.{}` resubmits with a command: give it a `jar:`",
                rec.kind, rec.job
            ),
        );
    };
    // What the job runs now. Flink does not say which jar a job came from: the jar of its last upgrade, rollback or
    // rescale if that is still on the cluster, else the configured jar's newest upload (found before the new jar
    // is uploaded, which may have the same file name).
    let release = current_release(ctx, &rec.target, &rec.job).await;
    if rec.prev_jar_id.is_none() {
        rec.prev_jar_id = release.as_ref().and_then(|r| r.jar_id.clone());
    }
    if rec.prev_jar_id.is_none() {
        if let Some(name) = &jar.name {
            match fc.find_jar(name).await {
                Ok(id) => rec.prev_jar_id = id,
                Err(e) => return Step::Fail("prepare", e.to_string()),
            }
        }
    }
    if rec.prev_parallelism.is_none() {
        if !rec.old_jid.is_empty() {
            rec.prev_parallelism = fc.vertex_parallelism(&rec.old_jid).await.ok().and_then(|p| p.into_iter().max());
        }
        rec.prev_parallelism = rec.prev_parallelism.or(jar.parallelism);
    }
    match rec.overrides.jar.clone() {
        None => rec.jar_id = rec.prev_jar_id.clone(),
        Some(JarRef::Name(n)) => match fc.find_jar(&n).await {
            Ok(Some(id)) => rec.jar_id = Some(id),
            Ok(None) => {
                return Step::Fail(
                    "upload",
                    format!("no jar named `{n}` on the cluster (give a local file, with a `/`, to upload it)"),
                )
            }
            Err(e) => return Step::Fail("upload", e.to_string()),
        },
        Some(JarRef::Path(p)) => {
            let name = JarRef::Path(p.clone()).file_name();
            let path = if p.is_relative() { ctx.workdir.join(&p) } else { p };
            // An upload of this file made after the restart began is ours: Warden died before recording it.
            let since = parse_ts(&rec.started).timestamp_millis();
            let earlier = match fc.jars().await {
                Ok(jars) => jars.into_iter().find(|(_, n, up)| *n == name && *up >= since).map(|j| j.0),
                Err(e) => return Step::Fail("upload", e.to_string()),
            };
            match earlier {
                Some(id) => {
                    (ctx.progress)(rec, &format!("{name} was uploaded as {id} before Warden stopped; reusing it"));
                    rec.jar_id = Some(id);
                }
                None => match fc.upload_jar(&path).await {
                    Ok(id) => {
                        (ctx.progress)(rec, &format!("uploaded {} as {id}", path.display()));
                        rec.jar_id = Some(id);
                    }
                    Err(e) => return Step::Fail("upload", format!("{e}; the job keeps running")),
                },
            }
        }
    }
    rec.step = RestartStep::JarUploaded;
    Step::Next
}

async fn choose_state(ctx: &RestartContext<'_>, rec: &mut RestartRecord) -> Step {
    let fc = FlinkClient::new(ctx.client);
    match rec.strategy {
        RestartStrategy::Savepoint => {
            if rec.old_jid.is_empty() {
                return Step::Fail("savepoint", format!("no running job id of {} was given", rec.job));
            }
            match fc.job_state(&rec.old_jid).await {
                Ok(s) if s == "RUNNING" => {}
                Ok(s) => {
                    return Step::Fail(
                        "savepoint",
                        format!(
                            "job {} ({}) is {s}, not RUNNING: a savepoint needs a running job",
                            rec.job, rec.old_jid
                        ),
                    )
                }
                Err(e) => return Step::Fail("savepoint", e.to_string()),
            }
            let dir = ctx.job.savepoint_dir.as_deref();
            let trigger = match ctx.job.savepoint_mode {
                SavepointMode::Stop => fc.stop_with_savepoint(&rec.old_jid, dir).await,
                SavepointMode::Cancel => fc.trigger_savepoint(&rec.old_jid, dir, false).await,
            };
            match trigger {
                Ok(t) => {
                    (ctx.progress)(rec, &format!("savepoint of {} triggered ({t})", rec.old_jid));
                    rec.trigger_id = Some(t);
                    rec.step = RestartStep::SavepointTriggered;
                    Step::Next
                }
                Err(e) => Step::Fail("savepoint", e.to_string()),
            }
        }
        RestartStrategy::LastCheckpoint => {
            let mut loc = None;
            let mut why = vec![];
            if !rec.old_jid.is_empty() {
                match fc.checkpoints(&rec.old_jid).await {
                    Ok(info) => loc = info.latest_completed.or(info.latest_savepoint),
                    Err(e) => why.push(e.to_string()),
                }
                if loc.is_none() && why.is_empty() {
                    why.push(format!("/jobs/{}/checkpoints names no retained checkpoint", rec.old_jid));
                }
            }
            if loc.is_none() {
                match ctx.store.savepoints(Some(&rec.target), Some(&rec.job)) {
                    Ok(h) => loc = h.first().map(|s| s.location.clone()),
                    Err(e) => return Step::Fail("choose-state", e.to_string()),
                }
                if loc.is_some() {
                    (ctx.progress)(rec, "Flink has no retained checkpoint; using the newest location Warden recorded");
                } else {
                    why.push("Warden recorded none".into());
                }
            }
            match (loc, ctx.job.fallback) {
                (Some(l), _) => {
                    if let Err(e) = ctx.store.record_savepoint(
                        &rec.target,
                        &rec.job,
                        &l,
                        "checkpoint",
                        &rec.old_jid,
                        None,
                        ctx.clock.now(),
                        HISTORY_KEEP,
                    ) {
                        return Step::Fail("choose-state", e.to_string());
                    }
                    (ctx.progress)(rec, &format!("restoring from {l}"));
                    rec.location = Some(l);
                }
                (None, Fallback::Stateless) => {
                    (ctx.progress)(rec, &format!("no state to restore ({}); starting without state", why.join("; ")))
                }
                (None, Fallback::Fail) => {
                    return Step::Fail(
                        "choose-state",
                        format!(
                            "no retained checkpoint or savepoint for {} ({}); not starting it without state \
                             (set `fallback: stateless` under `jobs.{}` to allow that)",
                            rec.job,
                            why.join("; "),
                            rec.job
                        ),
                    )
                }
            }
            rec.step = RestartStep::StateChosen;
            Step::Next
        }
        RestartStrategy::Stateless => {
            rec.step = RestartStep::StateChosen;
            Step::Next
        }
    }
}

async fn await_savepoint(ctx: &RestartContext<'_>, rec: &mut RestartRecord) -> Step {
    let fc = FlinkClient::new(ctx.client);
    let trigger = rec.trigger_id.clone().unwrap_or_default();
    let deadline = parse_ts(&rec.updated) + chrono::Duration::from_std(ctx.job.savepoint_timeout).unwrap_or_default();
    let mut n = 0;
    loop {
        match fc.savepoint_status(&rec.old_jid, &trigger).await {
            Ok(SavepointStatus::Completed(loc)) => return savepoint_taken(ctx, rec, loc).await,
            Ok(SavepointStatus::Failed(cause)) => {
                return Step::Fail(
                    "savepoint",
                    format!("Flink reports the savepoint failed: {cause}; the job keeps running"),
                )
            }
            Ok(SavepointStatus::Unknown) => {
                // The trigger's result expired or a JobManager fail-over forgot it: the savepoint may have completed.
                return match fc.checkpoints(&rec.old_jid).await {
                    Ok(info) if info.latest_savepoint.is_some() => {
                        let loc = info.latest_savepoint.unwrap_or_default();
                        (ctx.progress)(
                            rec,
                            &format!("trigger {trigger} is forgotten; the job's latest savepoint is {loc}"),
                        );
                        savepoint_taken(ctx, rec, loc).await
                    }
                    _ => Step::Fail(
                        "savepoint",
                        format!(
                            "Flink no longer knows savepoint trigger {trigger} and shows no savepoint of {}",
                            rec.old_jid
                        ),
                    ),
                };
            }
            Ok(SavepointStatus::InProgress) | Err(_) => {}
        }
        if ctx.clock.now() >= deadline {
            let t = humantime::format_duration(ctx.job.savepoint_timeout);
            let message = match ctx.job.savepoint_mode {
                SavepointMode::Cancel => format!(
                    "the savepoint was still in progress after {t}; the job keeps running (savepoints are slow under \
                     backpressure)"
                ),
                SavepointMode::Stop => format!(
                    "the stop-with-savepoint was still in progress after {t}; the job keeps running for now, but Flink \
                     cannot abort a pending stop: if the savepoint completes later, the job stops (use \
                     `savepoint_mode: cancel` to avoid that)"
                ),
            };
            return Step::Fail("savepoint", message);
        }
        if !pause_n(ctx, n).await {
            return Step::Stop;
        }
        n += 1;
    }
}

async fn savepoint_taken(ctx: &RestartContext<'_>, rec: &mut RestartRecord, loc: String) -> Step {
    let now = ctx.clock.now();
    if let Err(e) =
        ctx.store.record_savepoint(&rec.target, &rec.job, &loc, "savepoint", &rec.old_jid, None, now, HISTORY_KEEP)
    {
        return Step::Fail("savepoint", e.to_string());
    }
    (ctx.progress)(rec, &format!("savepoint completed at {loc}"));
    rec.location = Some(loc);
    if ctx.job.savepoint_mode == SavepointMode::Cancel {
        if let Err(e) = FlinkClient::new(ctx.client).cancel(&rec.old_jid).await {
            rec.step = RestartStep::StateChosen;
            return Step::Fail(
                "cancel",
                format!(
                    "savepoint taken at {}, but cancelling the job failed: {e}",
                    rec.location.as_deref().unwrap_or("")
                ),
            );
        }
    }
    rec.step = RestartStep::StateChosen;
    Step::Next
}

async fn ensure_not_live(ctx: &RestartContext<'_>, rec: &mut RestartRecord) -> Step {
    let fc = FlinkClient::new(ctx.client);
    if rec.kind == RestartKind::Rollback {
        // The failed new version (the old run was stopped before it was submitted): cancel it if it is still live
        // (again, after a crash). Nothing else is cancelled: another live instance makes the rollback fail below.
        if let Ok(jobs) = fc.jobs().await {
            for j in jobs.iter().filter(|j| j.name == rec.job && j.is_live()) {
                if !rec.old_jid.is_empty() && j.jid == rec.old_jid {
                    (ctx.progress)(rec, &format!("cancelling {} ({}), the failed new version", j.jid, j.state));
                    if let Err(e) = fc.cancel(&j.jid).await {
                        (ctx.progress)(rec, &format!("cannot cancel {}: {e}", j.jid));
                    }
                }
            }
        }
    }
    // A stopped job takes a moment to leave RUNNING; wait for that, but never submit next to a live instance.
    let deadline = tokio::time::Instant::now() + ctx.job.stop_timeout;
    let mut n = 0;
    loop {
        match fc.jobs().await {
            Ok(jobs) => {
                let live: Vec<_> = jobs.iter().filter(|j| j.name == rec.job && j.is_live()).collect();
                if live.is_empty() {
                    rec.step = RestartStep::Submitting;
                    return Step::Next;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Step::Fail(
                        "submit",
                        format!(
                            "job {} is already live as {} ({}); not starting a second instance",
                            rec.job, live[0].jid, live[0].state
                        ),
                    );
                }
            }
            Err(e) => {
                if tokio::time::Instant::now() >= deadline {
                    return Step::Fail("submit", e.to_string());
                }
            }
        }
        if !pause_n(ctx, n).await {
            return Step::Stop;
        }
        n += 1;
    }
}

/// What is live of the job now, at the submit step.
enum Live {
    /// No live instance: submitting is safe.
    None,
    /// Exactly one: the submission already happened (Warden died after submitting) or someone started it; either
    /// way it is adopted, never doubled, whatever its start time says (no clock-skew window).
    One(String),
    /// More than one live instance: refuse and alert.
    Several(Vec<String>),
    /// Flink could not be asked: never submit blind.
    Unknown(String),
}

async fn live_instances(ctx: &RestartContext<'_>, rec: &RestartRecord) -> Live {
    match FlinkClient::new(ctx.client).jobs().await {
        Ok(jobs) => {
            let live: Vec<String> =
                jobs.into_iter().filter(|j| j.name == rec.job && j.is_live()).map(|j| j.jid).collect();
            match live.len() {
                0 => Live::None,
                1 => Live::One(live.into_iter().next().unwrap_or_default()),
                _ => Live::Several(live),
            }
        }
        Err(e) => Live::Unknown(e.to_string()),
    }
}

/// Whether this driver still holds the restart, asked of the store right before the submission (the one call that
/// must never happen twice): a driver that was paused while another process took the restart over — or an HA leader
/// whose lease moved on, whose write the store's fence refuses — stops here instead of submitting.
fn still_ours(ctx: &RestartContext<'_>, rec: &RestartRecord) -> bool {
    let renewed = ctx.store.renew_restart_lease(rec.id, &ctx.owner, ctx.clock.now(), chrono_lease(ctx.lease));
    match renewed {
        Ok(true) => !ctx.cancel.is_cancelled(),
        Ok(false) => {
            (ctx.progress)(rec, "the restart was taken over by another process; not submitting");
            false
        }
        Err(e) => {
            (ctx.progress)(rec, &format!("cannot confirm this process still drives the restart ({e}); not submitting"));
            false
        }
    }
}

async fn submit(ctx: &RestartContext<'_>, rec: &mut RestartRecord) -> Step {
    match live_instances(ctx, rec).await {
        Live::None => {}
        Live::One(jid) => {
            (ctx.progress)(
                rec,
                &format!("{jid} of {} is already live; adopting it instead of submitting again", rec.job),
            );
            rec.new_jid = Some(jid);
            rec.step = RestartStep::Submitted;
            return Step::Next;
        }
        Live::Several(jids) => {
            return Step::Fail(
                "submit",
                format!("{} live instances of {} ({}); not submitting another", jids.len(), rec.job, jids.join(", ")),
            )
        }
        Live::Unknown(e) => return Step::Fail("submit", format!("cannot list the jobs before submitting: {e}")),
    }
    let fc = FlinkClient::new(ctx.client);
    let new_jid = if let Some(jar) = &ctx.job.jar {
        let version = fc.version().await.unwrap_or_default();
        // A restart (and an upgrade's or rescale's settings it does not override) keeps the release the job runs
        // since its last upgrade, rollback or rescale; a rollback carries its own.
        let mut base = RestartOverrides::default();
        if rec.kind != RestartKind::Rollback {
            if let Some(last) = current_release(ctx, &rec.target, &rec.job).await {
                if rec.jar_id.is_none() {
                    (ctx.progress)(
                        rec,
                        &format!(
                            "submitting {}, the jar of {} #{} (what {} runs since)",
                            last.jar_id.as_deref().unwrap_or(""),
                            last.kind,
                            last.id,
                            rec.job
                        ),
                    );
                    rec.jar_id = last.jar_id.clone();
                }
                if rec.kind == RestartKind::Restart || rec.jar_id == last.jar_id {
                    base = last.overrides;
                }
            }
        }
        let mut jar_id = rec.jar_id.clone();
        if jar_id.is_none() {
            if let Some(name) = &jar.name {
                match fc.find_jar(name).await {
                    Ok(id) => jar_id = id,
                    Err(e) => return Step::Fail("submit", e.to_string()),
                }
            }
        }
        if jar_id.is_none() {
            match &jar.upload {
                Some(path) => match fc.upload_jar(path).await {
                    Ok(id) => jar_id = Some(id),
                    Err(e) => return Step::Fail("submit", e.to_string()),
                },
                None => {
                    return Step::Fail(
                        "submit",
                        format!(
                            "no jar named `{}` on the cluster and no `upload` file",
                            jar.name.as_deref().unwrap_or("")
                        ),
                    )
                }
            }
        }
        let o = &rec.overrides;
        let run = JarRun {
            entry_class: o.entry_class.clone().or(base.entry_class).or_else(|| jar.entry_class.clone()),
            args: o.args.clone().or(base.args).unwrap_or_else(|| jar.args.clone()),
            parallelism: o.parallelism.or(base.parallelism).or(jar.parallelism),
            savepoint: rec.location.clone(),
            allow_non_restored_state: o.allow_non_restored_state.unwrap_or(jar.allow_non_restored_state),
            claim_mode: jar.claim_mode.clone(),
            flink_config: jar.flink_config.clone(),
        };
        rec.jar_id = jar_id.clone();
        if !still_ours(ctx, rec) {
            return Step::Stop;
        }
        match fc.run_jar(jar_id.as_deref().unwrap_or(""), &run, major(&version)).await {
            Ok(j) => j,
            // The answer may be lost while the job was submitted (a timeout): no instance was live a moment ago,
            // so one live now is this submission. Adopt it rather than call the submission failed.
            Err(e) => match live_instances(ctx, rec).await {
                Live::One(j) => {
                    (ctx.progress)(
                        rec,
                        &format!("the jar run answered {e}, but {j} of {} is live: adopting it", rec.job),
                    );
                    j
                }
                _ => return Step::Fail("submit", e.to_string()),
            },
        }
    } else if !rec.overrides.is_empty() {
        return Step::Fail(
            "submit",
            format!("`jobs.{}` resubmits with a command, which cannot take a jar or a parallelism", rec.job),
        );
    } else {
        let name = ctx.job.command.clone().unwrap_or_default();
        let Some(cmd) = ctx.commands.get(&name) else {
            return Step::Fail("submit", format!("no command named `{name}`"));
        };
        let mut vars = BTreeMap::new();
        vars.insert("job".to_string(), rec.job.clone());
        vars.insert("jid".to_string(), rec.old_jid.clone());
        vars.insert("savepoint".to_string(), rec.location.clone().unwrap_or_default());
        vars.insert("target".to_string(), rec.target.clone());
        vars.insert("target_url".to_string(), ctx.client.base.clone());
        vars.insert("subject".to_string(), rec.job.clone());
        if !still_ours(ctx, rec) {
            return Step::Stop;
        }
        let r = super::command::run(cmd, &vars, ctx.workdir, ctx.cancel.clone()).await;
        let outcome = r.outcome(cmd.timeout);
        if outcome != "ok" {
            let tail: String =
                r.output.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
            return Step::Fail("submit", format!("command `{name}` {outcome}: {tail}"));
        }
        // The command submitted the job; find it.
        let deadline = tokio::time::Instant::now() + ctx.job.verify_timeout;
        loop {
            if let Live::One(j) = live_instances(ctx, rec).await {
                break j;
            }
            if tokio::time::Instant::now() >= deadline {
                return Step::Fail(
                    "submit",
                    format!(
                        "command `{name}` succeeded but no new instance of {} appeared within {}",
                        rec.job,
                        humantime::format_duration(ctx.job.verify_timeout)
                    ),
                );
            }
            if !pause(ctx).await {
                return Step::Stop;
            }
        }
    };
    (ctx.progress)(rec, &format!("submitted as {new_jid}"));
    rec.new_jid = Some(new_jid);
    rec.step = RestartStep::Submitted;
    Step::Next
}

async fn verify(ctx: &RestartContext<'_>, rec: &mut RestartRecord) -> Step {
    let fc = FlinkClient::new(ctx.client);
    let new = rec.new_jid.clone().unwrap_or_default();
    let started = tokio::time::Instant::now();
    let wait = tokio::select! {
        r = fc.wait_running(&new, ctx.job.verify_timeout, ctx.poll) => r,
        _ = ctx.cancel.cancelled() => return Step::Stop,
    };
    if let Err(e) = wait {
        return Step::Fail("verify", e);
    }
    if let Some(loc) = rec.location.clone() {
        let want = normalize_location(&loc);
        let deadline = started + ctx.job.verify_timeout;
        let mut n = 0;
        loop {
            let got = fc.checkpoints(&new).await.ok().and_then(|i| i.restored);
            match got {
                Some(g) if normalize_location(&g) == want => break,
                Some(g) => return Step::Fail("verify", format!("the new job {new} restored from {g}, not from {loc}")),
                None if tokio::time::Instant::now() >= deadline => {
                    return Step::Fail(
                        "verify",
                        format!("the new job {new} runs but reports no restored checkpoint (expected {loc})"),
                    )
                }
                None => {}
            }
            if !pause_n(ctx, n).await {
                return Step::Stop;
            }
            n += 1;
        }
        if let Err(e) = ctx.store.record_savepoint(
            &rec.target,
            &rec.job,
            &loc,
            "checkpoint",
            &rec.old_jid,
            Some(rec.id),
            ctx.clock.now(),
            HISTORY_KEEP,
        ) {
            return Step::Fail("verify", e.to_string());
        }
    }
    if let Some(want) = rec.overrides.parallelism {
        match fc.vertex_parallelism(&new).await {
            Ok(got) if got.iter().max() == Some(&want) => {}
            Ok(got) => {
                return Step::Fail(
                    "verify",
                    format!("the new job {new} runs with vertex parallelism {got:?}, not {want}"),
                )
            }
            Err(e) => return Step::Fail("verify", e.to_string()),
        }
    }
    if rec.kind.rolls_back() && !ctx.job.upgrade.probation.is_zero() {
        (ctx.progress)(
            rec,
            &format!(
                "{new} is RUNNING{}; on probation for {}",
                if rec.location.is_some() { " and restored" } else { "" },
                humantime::format_duration(ctx.job.upgrade.probation)
            ),
        );
        rec.step = RestartStep::Probation;
        return Step::Next;
    }
    rec.step = RestartStep::Done;
    rec.outcome = Some(RestartResult::Ok);
    Step::Next
}

/// The new run of an upgrade or rescale must stay RUNNING, with nothing in its exception history, for the job's
/// `upgrade.probation` (counted from when the step was reached, also across a restart of Warden).
async fn probation(ctx: &RestartContext<'_>, rec: &mut RestartRecord) -> Step {
    let fc = FlinkClient::new(ctx.client);
    let new = rec.new_jid.clone().unwrap_or_default();
    let since = rec
        .steps
        .iter()
        .rev()
        .find(|s| s.step == RestartStep::Probation)
        .map(|s| parse_ts(&s.at))
        .unwrap_or_else(|| parse_ts(&rec.updated));
    let until = since + chrono::Duration::from_std(ctx.job.upgrade.probation).unwrap_or_default();
    loop {
        match fc.job_state(&new).await {
            Ok(s) if s != "RUNNING" => {
                return Step::Fail("probation", format!("the new job {new} is {s} during its probation"))
            }
            _ => {}
        }
        if let Ok(Some(c)) = fc.root_cause(&new).await {
            return Step::Fail("probation", format!("the new job {new} failed during its probation: {}", c.line));
        }
        if ctx.clock.now() >= until {
            rec.step = RestartStep::Done;
            rec.outcome = Some(RestartResult::Ok);
            return Step::Next;
        }
        if !pause(ctx).await {
            return Step::Stop;
        }
    }
}

#[cfg(test)]
mod tests;
