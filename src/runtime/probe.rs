//! One probe × target: poll on schedule, evaluate the rules on a blocking thread, hand the verdicts on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::event::Event;
use crate::fetch::{HttpRequest, TargetClient};
use crate::model::Origin;
use crate::plan::{PlannedRule, ProbeJob};
use crate::script::{self, EvalInput, FollowUp, FollowUpAnswer, ScriptEngine, TargetInfo, Verdict};

pub(super) async fn probe_loop(job: ProbeJob, client: Arc<TargetClient>, shared: Arc<Shared>, stop: CancellationToken) {
    let target_info = TargetInfo { name: client.name.clone(), url: client.base.clone(), labels: client.labels.clone() };
    let target_dyn = script::target_to_dynamic(&target_info);
    let key = (job.probe.clone(), job.target.clone());
    let mut due = match &job.schedule {
        crate::schedule::Schedule::Every(_) => chrono::Utc::now(),
        s => match s.next_after(chrono::Utc::now()) {
            Some(t) => t,
            None => return,
        },
    };
    let mut last_error: Option<String> = None;
    loop {
        let wait = (due - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let obs = tokio::select! {
            o = client.observe(&job.probe, &job.request) => o,
            _ = stop.cancelled() => return,
        };
        shared.stats.polls.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &shared.record {
            if let Ok(line) = serde_json::to_string(&obs) {
                use std::io::Write;
                let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
                let _ = writeln!(f, "{line}");
            }
        }
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
        shared.events.send(Event::Observed { probe: job.probe.clone(), target: job.target.clone(), error: err });

        // The rules of the current generation: a reload that changed only rules takes effect at the next poll.
        let generation = shared.generation();
        let rules = generation.rules.get(&key).cloned().unwrap_or_default();
        let obs_dyn = script::obs_to_dynamic(&obs);
        let sh = shared.clone();
        let client2 = client.clone();
        let probe = job.probe.clone();
        let target_dyn2 = target_dyn.clone();
        let max_body = job.request.max_body;
        let handle = tokio::runtime::Handle::current();
        let verdicts = tokio::task::spawn_blocking(move || {
            evaluate_all(&sh, &generation.engine, &rules, &obs_dyn, &target_dyn2, &probe, &client2, handle, max_body)
        })
        .await
        .unwrap_or_default();
        for v in verdicts {
            if shared.tx.send(v).await.is_err() {
                return;
            }
        }
        let (next, skipped) = job.schedule.next_due(due, chrono::Utc::now());
        if skipped > 0 {
            shared.stats.skipped_runs.fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(probe = %job.probe, target = %job.target, skipped, "a run took longer than the schedule; skipped runs");
        }
        match next {
            Some(n) => due = n,
            None => return,
        }
    }
}

struct HttpFollowUp {
    client: Arc<TargetClient>,
    handle: tokio::runtime::Handle,
    max_body: usize,
}

impl FollowUp for HttpFollowUp {
    fn get(&mut self, path: &str) -> FollowUpAnswer {
        let req = HttpRequest::get(path, self.max_body);
        let (status, body, error) = self.handle.block_on(self.client.send(&req));
        FollowUpAnswer { status, body, error: error.map(|e| (e.kind.as_str().to_string(), e.message)) }
    }
}

#[allow(clippy::too_many_arguments)]
fn evaluate_all(
    sh: &Shared,
    engine: &ScriptEngine,
    rules: &[Arc<PlannedRule>],
    obs: &rhai::Dynamic,
    target: &rhai::Dynamic,
    probe: &str,
    client: &Arc<TargetClient>,
    handle: tokio::runtime::Handle,
    max_body: usize,
) -> Vec<(Origin, Verdict)> {
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        let key = (r.compiled.name.clone(), client.name.clone());
        let before = sh.states.lock().expect("states").get(&key).cloned().unwrap_or(serde_json::Value::Null);
        let params = script::params_to_dynamic(r.params_for(&client.name));
        let now = sh.clock.now();
        let follow = HttpFollowUp { client: client.clone(), handle: handle.clone(), max_body };
        sh.stats.evaluations.fetch_add(1, Ordering::Relaxed);
        let input = EvalInput { obs, target, params: &params, state: &before, now, follow_up: Some(Box::new(follow)) };
        match engine.evaluate(&r.compiled, input) {
            Ok(ev) => {
                if ev.state != before {
                    if let Err(e) = sh.store.save_rule_state(&key.0, &key.1, &ev.state) {
                        tracing::error!(rule = %key.0, "cannot save rule state: {e}");
                    }
                    sh.states.lock().expect("states").insert(key.clone(), ev.state);
                }
                let origin = Origin {
                    rule: key.0,
                    target: key.1,
                    target_url: client.base.clone(),
                    probe: probe.to_string(),
                    time: now,
                };
                out.push((origin, ev.verdict));
            }
            Err(e) => {
                sh.stats.rule_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(target_name = %client.name, "{e}");
                sh.events.send(Event::RuleFailed { error: e.to_string() });
            }
        }
    }
    out
}
