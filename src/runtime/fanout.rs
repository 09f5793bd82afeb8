//! A probe that fans out over the jobs of its target (`for_each: job`): one task per probe × target, which at each
//! tick takes the target's jobs from its latest `/jobs/overview` answer, polls the probe's path once per job (at
//! most `concurrency` requests in flight), and judges every answer through the one evaluation path with the rules'
//! state of that job.
//!
//! The rules' verdicts over the tick's jobs are merged ([`JobVerdicts`]) and handed to the dispatcher once per
//! rule per tick, under the generation gate like an ordinary probe's: the dispatcher keeps one memory per (rule,
//! target), so job B's evaluation must not resolve job A's alert. A job that left the tick (gone from the cluster,
//! or out of `states`) stops contributing, so its alerts resolve.
//!
//! Per-job rule state is kept by job name (a relaunch keeps it); the state of a job that has not been in a tick
//! for [`FORGET_AFTER`] is dropped, in memory and in the store.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio_util::sync::CancellationToken;

use super::probe::{judge_one, FollowUps};
use super::Shared;
use crate::config::ForEach;
use crate::evaluate::{JobVerdicts, Observed};
use crate::event::Event;
use crate::fetch::{HttpRequest, TargetClient};
use crate::model::{doc, Doc, Observation, Origin, Recorded, RecordedFollowUp};
use crate::plan::{PlannedRule, ProbeJob};
use crate::schedule::Schedule;
use crate::script::{self, ScriptEngine, TargetInfo};
use crate::store::RuleStateKey;

/// How long a job may be absent from every tick before its per-job rule state is dropped.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The path that lists a Flink cluster's jobs.
const JOBS_OVERVIEW: &str = "/jobs/overview";

/// True for a request that fetches `/jobs/overview` (a query is allowed): its answers list the target's jobs.
pub(super) fn is_jobs_overview(req: &HttpRequest) -> bool {
    req.method == reqwest::Method::GET && req.path.split('?').next() == Some(JOBS_OVERVIEW)
}

/// The latest `/jobs/overview` answer of each target, with when it arrived (the monotonic clock).
#[derive(Debug, Default)]
pub(super) struct Overviews(Mutex<HashMap<String, (Instant, Arc<Doc>)>>);

impl Overviews {
    /// Keeps `body` as `target`'s latest overview.
    pub(super) fn put(&self, target: &str, body: &Arc<Doc>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(target) {
            Some(slot) => *slot = (Instant::now(), body.clone()),
            None => {
                m.insert(target.to_string(), (Instant::now(), body.clone()));
            }
        }
    }

    /// Drops `target`'s overview, if one is kept (its fan-out probes are gone).
    pub(super) fn forget(&self, target: &str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !m.is_empty() {
            m.remove(target);
        }
    }

    /// `target`'s latest overview, if it is not older than `max_age`.
    pub(super) fn fresh(&self, target: &str, max_age: Duration) -> Option<Arc<Doc>> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(target).filter(|(at, _)| at.elapsed() <= max_age).map(|(_, b)| b.clone())
    }
}

/// Whether `g` polls a fan-out probe on `target` (which reads the target's latest overview).
pub(super) fn fans_out(g: &super::generation::Generation, target: &str) -> bool {
    g.plan.jobs.iter().any(|j| j.for_each.is_some() && j.target == target)
}

/// The jobs of an overview answer whose state `fe` takes, each as its own entry: a document that shares the
/// overview's storage (no copy of the entry).
fn jobs_in(overview: &Doc, fe: &ForEach) -> Option<Vec<Arc<Doc>>> {
    let list = overview.get("jobs")?.as_array()?;
    Some(
        list.iter()
            .filter(|j| doc::field(j, "jid").and_then(|v| v.as_str()).is_some())
            .filter(|j| doc::field(j, "state").and_then(|v| v.as_str()).is_some_and(|s| fe.takes(s)))
            .map(|j| Arc::new(Doc::from_value(j.clone())))
            .collect(),
    )
}

/// The loop of one fan-out probe on one target.
pub(super) async fn fan_out_loop(
    job: ProbeJob,
    fe: ForEach,
    client: Arc<TargetClient>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let Schedule::Every(every) = job.schedule else {
        tracing::error!(probe = %job.probe, "a `for_each` probe needs `every` (the configuration check says so)");
        return;
    };
    let key = (job.probe.clone(), job.target.clone());
    let mut ticker = shared.ticker(&job.schedule);
    let labels = super::status::ProbeLabels { probe: job.probe.clone(), target: job.target.clone() };
    let mut merge = JobVerdicts::default();
    let mut last_error: Option<String> = None;
    // When each job with per-job state was last in a tick (jobs known from the store count from now).
    let mut present: HashMap<String, Instant> = {
        let states = shared.states.lock().unwrap_or_else(|p| p.into_inner());
        states
            .keys()
            .filter(|k| k.target == job.target && job.rules.contains(&k.rule))
            .filter_map(|k| k.job.clone())
            .map(|j| (j, Instant::now()))
            .collect()
    };
    loop {
        if super::probe::next_tick(&mut ticker, &stop, &shared, &labels).await.is_none() {
            return;
        }
        let (polled_at, started) = (shared.clock.now(), Instant::now());
        let next = chrono::Duration::from_std(every).ok().map(|d| polled_at + d);

        // The jobs: the target's own overview probe's latest answer, or one fetch for this tick.
        let overview = match shared.overviews.fresh(&job.target, every) {
            Some(o) => Ok(o),
            None => {
                let req = HttpRequest::get(JOBS_OVERVIEW, job.request.max_body.max(16 * 1024 * 1024));
                let o = tokio::select! {
                    o = client.observe(&job.probe, &req) => o,
                    _ = stop.cancelled() => return,
                };
                shared.stats.polls.fetch_add(1, Ordering::Relaxed);
                match (o.body, o.error) {
                    (Some(b), None) => Ok(b),
                    (_, Some(e)) => Err(format!("cannot list the jobs: {e}")),
                    (None, None) => Err("cannot list the jobs: the overview had no body".to_string()),
                }
            }
        };
        let jobs = overview.and_then(|o| {
            jobs_in(&o, &fe)
                .ok_or_else(|| "cannot list the jobs: the answer of /jobs/overview has no `jobs` list".into())
        });
        let jobs = match jobs {
            Ok(j) => j,
            Err(e) => {
                // No judgement this tick: the rules keep what they asked for, like a skipped evaluation.
                shared.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(probe = %job.probe, target = %job.target, "{e}");
                    last_error = Some(e.clone());
                }
                shared.status.fanned_out(&labels, polled_at, started.elapsed(), 0, 0, Some(e.clone()), next);
                shared.events.send(Event::Observed {
                    probe: job.probe.clone(),
                    target: job.target.clone(),
                    error: Some(e),
                });
                continue;
            }
        };

        // One request per job, at most `concurrency` in flight.
        let polls = futures_util::stream::iter(jobs.into_iter().map(|entry| {
            let jid = entry.get("jid").and_then(|v| v.as_str()).unwrap_or_default();
            let name = entry.get("name").and_then(|v| v.as_str()).unwrap_or_default();
            let req =
                HttpRequest { path: crate::config::fill_job_path(&job.request.path, jid, name), ..job.request.clone() };
            let (client, probe) = (&client, &job.probe);
            async move {
                let mut o = client.observe(probe, &req).await;
                o.job = Some(entry);
                o
            }
        }))
        .buffer_unordered(fe.concurrency.max(1))
        .collect::<Vec<Observation>>();
        let mut observations = tokio::select! {
            o = polls => o,
            _ = stop.cancelled() => return,
        };
        // Judged in a stable order (by job name), whatever order the answers came in.
        observations.sort_by(|a, b| a.job_name().cmp(&b.job_name()));
        let took = started.elapsed();
        let n = observations.len() as u64;
        let failed: Vec<&Observation> = observations.iter().filter(|o| o.error.is_some()).collect();
        shared.stats.polls.fetch_add(n, Ordering::Relaxed);
        shared.stats.poll_errors.fetch_add(failed.len() as u64, Ordering::Relaxed);
        let err = failed.first().and_then(|o| {
            let e = o.error.as_ref()?;
            Some(format!("{} of {n} job polls failed; job `{}`: {e}", failed.len(), o.job_name().unwrap_or("")))
        });
        if err.is_some() != last_error.is_some() {
            match &err {
                Some(e) => tracing::warn!(probe = %job.probe, target = %job.target, "{e}"),
                None => tracing::info!(probe = %job.probe, target = %job.target, jobs = n, "job polls succeed again"),
            }
        }
        last_error = err.clone();
        shared.status.fanned_out(&labels, polled_at, took, n, failed.len() as u64, err.clone(), next);
        shared.events.send(Event::Observed { probe: job.probe.clone(), target: job.target.clone(), error: err });

        // Jobs gone for long lose their per-job state.
        let now_i = Instant::now();
        for o in &observations {
            if let Some(name) = o.job_name() {
                match present.get_mut(name) {
                    Some(t) => *t = now_i,
                    None => {
                        present.insert(name.to_string(), now_i);
                    }
                }
            }
        }
        let forget: Vec<String> =
            present.iter().filter(|(_, t)| now_i.duration_since(**t) > FORGET_AFTER).map(|(j, _)| j.clone()).collect();
        for j in &forget {
            present.remove(j);
        }

        // Judge every answer on a blocking thread, then commit the tick.
        let generation = shared.generation();
        let rules = generation.rules.get(&key).cloned().unwrap_or_default();
        let sh = shared.clone();
        let client2 = client.clone();
        let probe = job.probe.clone();
        let max_body = job.request.max_body;
        let handle = tokio::runtime::Handle::current();
        let now = shared.clock.now();
        let record = shared.record.is_some();
        let stop2 = stop.clone();
        let judged = shared.evaluators.run(&stop, move |slot| {
            let follow =
                |log| FollowUps { client: client2.clone(), handle: handle.clone(), max_body, log, slot: slot.clone() };
            let tick = Tick { sh: &sh, engine: &generation.engine, rules: &rules, probe: &probe, now, stop: &stop2 };
            // Stopped in the middle of the tick: nothing of it is committed (a part of a tick would resolve the
            // alerts of the jobs not judged yet).
            let Some((done, logs)) = tick.judge(&observations, &mut merge, &follow, record) else {
                return (false, merge, observations, vec![]);
            };
            let alive = commit_tick(&sh, &rules, done, &mut merge, &probe, &client2, now, &forget);
            (alive, merge, observations, logs)
        });
        let Some(judged) = judged.await else { return };
        let (alive, m, observations, logs) = match judged {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(probe = %job.probe, target = %job.target, "judging this tick failed: {e}");
                merge = JobVerdicts::default();
                continue;
            }
        };
        merge = m;
        if let Some(r) = &shared.record {
            for (obs, asked) in observations.into_iter().zip(logs) {
                let follow_ups = asked
                    .map(|a| std::mem::take(&mut *a.lock().unwrap_or_else(|p| p.into_inner())))
                    .unwrap_or_default();
                if let Err(e) = r.write(&Recorded { obs, evaluated_at: Some(now), follow_ups }) {
                    tracing::warn!(probe = %job.probe, target = %job.target, "cannot record the observation: {e}");
                }
            }
        }
        if !alive {
            return; // the dispatcher is gone: shutting down
        }
    }
}

/// A new per-job state, waiting to be committed.
struct NewState {
    rule: Arc<PlannedRule>,
    key: RuleStateKey,
    state: serde_json::Value,
}

type FollowLog = Option<Arc<Mutex<Vec<RecordedFollowUp>>>>;

/// What judging one tick needs.
struct Tick<'a> {
    sh: &'a Shared,
    engine: &'a ScriptEngine,
    rules: &'a [Arc<PlannedRule>],
    probe: &'a str,
    now: chrono::DateTime<chrono::Utc>,
    /// The probe's stop: a tick over many jobs (each with follow-ups to a slow JobManager) must not hold up a
    /// shutdown.
    stop: &'a CancellationToken,
}

impl Tick<'_> {
    /// Judges each job's answer with every rule (the job's own state), adding the verdicts to `merge`. Returns the
    /// changed states and, when recording, each observation's follow-up log; `None` when the probe was stopped
    /// before every job was judged.
    fn judge(
        &self,
        observations: &[Observation],
        merge: &mut JobVerdicts,
        follow: &dyn Fn(FollowLog) -> FollowUps,
        record: bool,
    ) -> Option<(Vec<NewState>, Vec<FollowLog>)> {
        let sh = self.sh;
        let mut done = vec![];
        let mut logs = Vec::with_capacity(if record { observations.len() } else { 0 });
        sh.stats.evaluations.fetch_add((self.rules.len() * observations.len()) as u64, Ordering::Relaxed);
        let target = {
            let c = &follow(None).client;
            TargetInfo { name: c.name.clone(), url: c.base.clone(), labels: c.labels.clone() }
        };
        for obs in observations {
            if self.stop.is_cancelled() {
                return None;
            }
            let log: FollowLog = record.then(|| Arc::new(Mutex::new(Vec::new())));
            let follow = follow(log.clone());
            logs.push(log);
            let job = obs.job_name().unwrap_or_default().to_string();
            let obs_dyn = script::obs_to_dynamic(obs);
            let seen = Observed { obs: &obs_dyn, probe: self.probe, target: &target, now: self.now };
            let key = |rule: &str| RuleStateKey {
                rule: rule.to_string(),
                target: target.name.clone(),
                job: Some(job.clone()),
            };
            let mut state_of = |rule: &str| {
                let states = sh.states.lock().unwrap_or_else(|p| p.into_inner());
                states.get(&key(rule)).cloned().unwrap_or_default()
            };
            let mut follow_up = || Some(follow.client());
            for r in self.rules {
                let verdict = judge_one(sh, self.engine, r, &seen, Some(&job), &mut state_of, &mut follow_up);
                merge.add(&r.compiled.name, &job, verdict.as_ref().map(|v| &v.verdict));
                if let Some(state) = verdict.and_then(|v| v.new_state) {
                    done.push(NewState { rule: r.clone(), key: key(&r.compiled.name), state });
                }
            }
        }
        Some((done, logs))
    }
}

/// Saves the tick's new per-job states (one store transaction), drops the states of `forget` (jobs gone for
/// long), and hands the merged verdict of each rule to the dispatcher: under the generation gate, for the rules
/// the current generation still runs unchanged. Runs on a blocking thread. `false` when the dispatcher is gone.
#[allow(clippy::too_many_arguments)]
fn commit_tick(
    sh: &Shared,
    rules: &[Arc<PlannedRule>],
    done: Vec<NewState>,
    merge: &mut JobVerdicts,
    probe: &str,
    client: &TargetClient,
    now: chrono::DateTime<chrono::Utc>,
    forget: &[String],
) -> bool {
    let _gate = sh.gate.blocking_read();
    let current = sh.generation();
    let kept: Vec<NewState> = done.into_iter().filter(|d| current.runs(&d.rule)).collect();
    if !kept.is_empty() {
        let saved = sh.store.transaction(|s| {
            for d in &kept {
                s.save_scoped_rule_state(&d.key, &d.state)?;
            }
            Ok(())
        });
        if let Err(e) = saved {
            tracing::error!(probe = %probe, target = %client.name, "cannot save per-job rule state: {e}");
        }
        let mut states = sh.states.lock().unwrap_or_else(|p| p.into_inner());
        for d in kept {
            states.insert(d.key, d.state);
        }
    }
    if !forget.is_empty() {
        let names: Vec<String> = rules.iter().map(|r| r.compiled.name.clone()).collect();
        let mut states = sh.states.lock().unwrap_or_else(|p| p.into_inner());
        for j in forget {
            tracing::info!(probe = %probe, target = %client.name, job = %j, "the job has been gone for a day: its per-job rule state is dropped");
            states.retain(|k, _| !(k.target == client.name && k.job.as_deref() == Some(j) && names.contains(&k.rule)));
            if let Err(e) = sh.store.drop_job_rule_states(&names, &client.name, j) {
                tracing::error!(job = %j, "cannot drop the per-job rule state of a gone job: {e}");
            }
        }
    }
    let merged = merge.finish(rules.iter().map(|r| r.compiled.name.as_str()), true);
    let mut verdicts = Vec::with_capacity(merged.len());
    for ((rule, verdict), planned) in merged.into_iter().zip(rules) {
        if !current.runs(planned) {
            tracing::debug!(rule = %rule, "an evaluation of a rule that a reload removed or changed is dropped");
            continue;
        }
        let origin = Origin {
            rule,
            target: client.name.clone(),
            target_url: client.base.clone(),
            probe: probe.to_string(),
            time: now,
            observed: None,
        };
        verdicts.push((origin, verdict));
    }
    verdicts.is_empty() || sh.tx.blocking_send(verdicts).is_ok()
}
