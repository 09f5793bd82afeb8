//! One probe × target: poll on schedule, evaluate the rules on a blocking thread, hand the verdicts on.
//!
//! An evaluation is committed (its rule state saved, its verdict handed to the dispatcher) under the generation
//! gate, and only if its rule is still the one the current generation runs: a reload that removed or changed the
//! rule while it was being evaluated wins, so a removed rule's alert cannot come back after its *resolved*.
//! A rule whose evaluation panics is reported as that rule's error; the probe's other rules still run.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::evaluate::{evaluate_observation, Observed, RuleVerdict};
use crate::event::Event;
use crate::fetch::{HttpRequest, TargetClient};
use crate::model::{Origin, Recorded, RecordedFollowUp};
use crate::plan::{PlannedRule, ProbeJob};
use crate::schedule::Ticker;
use crate::script::{self, FollowUp, FollowUpAnswer, ScriptEngine, TargetInfo, Verdict};
use crate::store::RuleStateKey;

pub(super) async fn probe_loop(job: ProbeJob, client: Arc<TargetClient>, shared: Arc<Shared>, stop: CancellationToken) {
    let key = (job.probe.clone(), job.target.clone());
    let mut ticker = shared.ticker(&job.schedule);
    let mut last_error: Option<String> = None;
    let labels = super::status::ProbeLabels { probe: job.probe.clone(), target: job.target.clone() };
    // The answers of a jobs-overview probe also tell the target's fan-out probes which jobs there are.
    let lists_jobs = super::fanout::is_jobs_overview(&job.request);
    // Whether the target has fan-out probes, for the generation it was worked out for.
    let mut fans_out = {
        let g = shared.generation();
        let f = super::fanout::fans_out(&g, &job.target);
        (g, f)
    };
    loop {
        if next_tick(&mut ticker, &stop, &shared, &labels).await.is_none() {
            return;
        }
        let (polled_at, started) = (shared.clock.now(), std::time::Instant::now());
        let obs = tokio::select! {
            o = crate::fetch_pages::observe(&client, &job.probe, &job.request, job.paginate) => o,
            _ = stop.cancelled() => return,
        };
        let took = started.elapsed();
        shared.stats.polls.fetch_add(1, Ordering::Relaxed);
        let err = obs.error.as_ref().map(|e| e.to_string());
        if err.is_some() {
            shared.stats.poll_errors.fetch_add(1, Ordering::Relaxed);
        }
        if err != last_error {
            match &err {
                Some(e) => tracing::warn!(probe = %job.probe, target = %job.target, "poll failed: {e}"),
                None => tracing::info!(probe = %job.probe, target = %job.target, "poll succeeds again"),
            }
            last_error = err.clone();
        }
        let next = match &job.schedule {
            crate::schedule::Schedule::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| polled_at + d),
            s => s.next_after(shared.clock.now()),
        };
        shared.status.polled(&labels, polled_at, took, err.clone(), next);
        // The rules of the current generation: a reload that changed only rules takes effect at the next poll.
        let generation = shared.generation();
        if let Some(body) = &obs.body {
            shared.status.saw_jobs(&job.target, body, polled_at);
            if lists_jobs && obs.error.is_none() {
                // Kept for the target's fan-out probes only: a parsed overview of 100 jobs is a few hundred KB, so
                // a thousand targets without fan-out probes would otherwise hold hundreds of MB for nothing.
                if !Arc::ptr_eq(&generation, &fans_out.0) {
                    fans_out = (generation.clone(), super::fanout::fans_out(&generation, &job.target));
                }
                if fans_out.1 {
                    shared.overviews.put(&job.target, body);
                } else {
                    shared.overviews.forget(&job.target);
                }
            }
        }
        shared.events.send(Event::Observed { probe: job.probe.clone(), target: job.target.clone(), error: err });

        let rules = generation.rules.get(&key).cloned().unwrap_or_default();
        let obs_dyn = script::obs_to_dynamic(&obs);
        let sh = shared.clone();
        let client2 = client.clone();
        let probe = job.probe.clone();
        let max_body = job.request.max_body;
        let handle = tokio::runtime::Handle::current();
        let now = shared.clock.now();
        let asked = shared.record.as_ref().map(|_| Arc::new(Mutex::new(Vec::new())));
        let log = asked.clone();
        let evaluated = shared.evaluators.run(&stop, move |slot| {
            let follow = FollowUps { client: client2, handle, max_body, log, slot };
            let done = evaluate_all(&sh, &generation.engine, &rules, &obs_dyn, &probe, now, &follow);
            commit(&sh, done)
        });
        let Some(evaluated) = evaluated.await else { return };
        if let (Some(r), Some(asked)) = (&shared.record, asked) {
            let follow_ups = std::mem::take(&mut *asked.lock().unwrap_or_else(|p| p.into_inner()));
            let line = Recorded { obs, evaluated_at: Some(now), follow_ups };
            if let Err(e) = r.write(&line) {
                tracing::warn!(probe = %job.probe, target = %job.target, "cannot record the observation: {e}");
            }
        }
        match evaluated {
            Ok(true) => {}
            Ok(false) => return, // the dispatcher is gone: shutting down
            Err(e) => tracing::error!(probe = %job.probe, target = %job.target, "evaluating this poll failed: {e}"),
        }
    }
}

/// Waits for the probe's next tick and accounts for the ticks it skipped (a run that took longer than the
/// schedule). `None` when the schedule has no next tick or the probe is stopped.
pub(super) async fn next_tick(
    ticker: &mut Ticker,
    stop: &CancellationToken,
    shared: &Shared,
    labels: &super::status::ProbeLabels,
) -> Option<()> {
    let skipped = tokio::select! {
        t = ticker.tick() => t?,
        _ = stop.cancelled() => return None,
    };
    if skipped > 0 {
        shared.stats.skipped_runs.fetch_add(skipped, Ordering::Relaxed);
        shared.status.skipped(labels, skipped);
        tracing::warn!(probe = %labels.probe, target = %labels.target, skipped, "a run took longer than the schedule; skipped runs");
    }
    Some(())
}

/// What the follow-up requests of one observation's evaluations need, and where they are recorded (with
/// `--record`).
pub(super) struct FollowUps {
    pub(super) client: Arc<TargetClient>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) max_body: usize,
    pub(super) log: Option<Arc<Mutex<Vec<RecordedFollowUp>>>>,
    /// The evaluation's slot, given back while a follow-up request waits for its answer.
    pub(super) slot: Arc<super::evaluators::Slot>,
}

impl FollowUps {
    /// The follow-up client of one evaluation.
    pub(super) fn client(&self) -> Box<dyn FollowUp> {
        Box::new(HttpFollowUp {
            client: self.client.clone(),
            handle: self.handle.clone(),
            max_body: self.max_body,
            log: self.log.clone(),
            slot: self.slot.clone(),
        })
    }
}

struct HttpFollowUp {
    client: Arc<TargetClient>,
    handle: tokio::runtime::Handle,
    max_body: usize,
    log: Option<Arc<Mutex<Vec<RecordedFollowUp>>>>,
    slot: Arc<super::evaluators::Slot>,
}

impl FollowUp for HttpFollowUp {
    fn get(&mut self, path: &str) -> FollowUpAnswer {
        self.get_within(path, Duration::MAX)
    }

    fn get_within(&mut self, path: &str, limit: Duration) -> FollowUpAnswer {
        let answer = self.ask(path, limit);
        if let Some(log) = &self.log {
            log.lock().unwrap_or_else(|p| p.into_inner()).push(RecordedFollowUp {
                path: path.to_string(),
                status: answer.status,
                body: answer.body.clone(),
                error: answer.error.clone(),
            });
        }
        answer
    }
}

impl HttpFollowUp {
    fn ask(&mut self, path: &str, limit: Duration) -> FollowUpAnswer {
        let req = HttpRequest::get(path, self.max_body);
        let send = self.client.send_doc(&req);
        let answer = self.slot.released_while(&self.handle, || self.handle.block_on(tokio::time::timeout(limit, send)));
        match answer {
            Ok((status, body, error)) => {
                FollowUpAnswer { status, body: body.map(Arc::new), error: error.map(|e| (e.kind.as_str().to_string(), e.message)) }
            }
            Err(_) => FollowUpAnswer {
                error: Some((
                    "timeout".into(),
                    format!(
                        "no answer within the {} ms left of the evaluation's total time budget (scripts.max_total_time)",
                        limit.as_millis()
                    ),
                )),
                ..Default::default()
            },
        }
    }
}

/// One rule's evaluation, waiting to be committed.
pub(super) struct Done {
    pub(super) rule: Arc<PlannedRule>,
    pub(super) origin: Origin,
    pub(super) verdict: Verdict,
    /// The rule's new state, if it changed.
    pub(super) state: Option<serde_json::Value>,
}

/// The probe's rules on one observation, through the one evaluation path ([`crate::evaluate`]) that `warden
/// test`, `eval` and `replay` use too.
#[allow(clippy::too_many_arguments)]
fn evaluate_all(
    sh: &Shared,
    engine: &ScriptEngine,
    rules: &[Arc<PlannedRule>],
    obs: &rhai::Dynamic,
    probe: &str,
    now: chrono::DateTime<chrono::Utc>,
    follow: &FollowUps,
) -> Vec<Done> {
    let client = &follow.client;
    let target = TargetInfo { name: client.name.clone(), url: client.base.clone(), labels: client.labels.clone() };
    let seen = Observed { obs, probe, target: &target, now };
    let mut state_of = |rule: &str| {
        let states = sh.states.lock().unwrap_or_else(|p| p.into_inner());
        let key = RuleStateKey { rule: rule.to_string(), target: client.name.clone(), job: None };
        states.get(&key).cloned().unwrap_or_default()
    };
    let mut follow_up = || -> Option<Box<dyn FollowUp>> { Some(follow.client()) };
    sh.stats.evaluations.fetch_add(rules.len() as u64, Ordering::Relaxed);
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        if let Some(v) = judge_one(sh, engine, r, &seen, None, &mut state_of, &mut follow_up) {
            out.push(Done { rule: r.clone(), origin: v.origin, verdict: v.verdict, state: v.new_state });
        }
    }
    out
}

/// One rule on one observation through the one evaluation path, timed for the status and metrics. A failure is
/// counted, logged (with the job, for a per-job observation) and announced here, and is `None`.
pub(super) fn judge_one(
    sh: &Shared,
    engine: &ScriptEngine,
    rule: &PlannedRule,
    seen: &Observed<'_>,
    job: Option<&str>,
    state_of: &mut dyn FnMut(&str) -> serde_json::Value,
    follow_up: &mut dyn FnMut() -> Option<Box<dyn FollowUp>>,
) -> Option<RuleVerdict> {
    let started = std::time::Instant::now();
    let params = rule.params_for(&seen.target.name);
    let result =
        evaluate_observation(engine, std::iter::once((&rule.compiled, params)), seen, state_of, follow_up).pop()?;
    sh.status.evaluated(&rule.compiled.name, seen.now, started.elapsed(), result.as_ref().err().map(|e| e.to_string()));
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            sh.stats.rule_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(target_name = %seen.target.name, probe = %seen.probe, job = job.unwrap_or(""), "{e}");
            sh.events.send(Event::RuleFailed { error: e.to_string() });
            None
        }
    }
}

/// Saves the rules' new states and hands their verdicts to the dispatcher, under the generation gate, for the rules
/// the current generation still runs unchanged. Runs on a blocking thread. `false` when the dispatcher is gone.
pub(super) fn commit(sh: &Shared, done: Vec<Done>) -> bool {
    let _gate = sh.gate.blocking_read();
    let current = sh.generation();
    let mut verdicts = Vec::with_capacity(done.len());
    for d in done {
        if !current.runs(&d.rule) {
            tracing::debug!(rule = %d.origin.rule, "an evaluation of a rule that a reload removed or changed is dropped");
            continue;
        }
        if let Some(state) = d.state {
            if let Err(e) = sh.store.save_rule_state(&d.origin.rule, &d.origin.target, &state) {
                tracing::error!(rule = %d.origin.rule, "cannot save rule state: {e}");
            }
            let key = RuleStateKey { rule: d.origin.rule.clone(), target: d.origin.target.clone(), job: None };
            sh.states.lock().unwrap_or_else(|p| p.into_inner()).insert(key, state);
        }
        verdicts.push((d.origin, d.verdict));
    }
    verdicts.is_empty() || sh.tx.blocking_send(verdicts).is_ok()
}
