//! Warden watching itself: every `self_alerts.every`, what Warden knows about itself becomes an evaluation of the
//! rule `warden/self` on the target `warden`, dispatched like any other, so each problem fires once through the
//! channels an operator set up and resolves when it goes away. Problems: a rule failing again and again, an
//! `every:` probe that stopped running, notifications stuck in the outbox, the last reload refused.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::model::{ActionRequest, Origin, RequestKind, Severity};
use crate::schedule::Schedule;
use crate::script::Verdict;

/// The rule name self-alerts are journalled and routed under (`match: {rule: warden/self}`).
pub const SELF_RULE: &str = "warden/self";
/// The target name self-alerts are about.
pub const SELF_TARGET: &str = "warden";

/// Looks at Warden every `self_alerts.every` (of the generation in force) until `stop` fires.
pub(super) async fn watch_self(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let cfg = shared.generation().plan.loaded.config.self_alerts.clone();
        tokio::select! {
            _ = tokio::time::sleep(cfg.every.max(Duration::from_millis(100))) => {}
            _ = stop.cancelled() => return,
        }
        if !cfg.enabled {
            continue;
        }
        let now = shared.clock.now();
        let oldest = shared.store.call(|s| super::status::outbox_backlog(s).ok().and_then(|(_, t)| t)).await;
        let requests = problems(&shared, &cfg, oldest, now);
        let origin = Origin {
            rule: SELF_RULE.into(),
            target: SELF_TARGET.into(),
            target_url: String::new(),
            probe: SELF_RULE.into(),
            time: now,
            observed: None,
        };
        tokio::select! {
            sent = shared.tx.send(vec![(origin, Verdict::Requests(requests))]) => if sent.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

fn alert(subject: String, severity: Severity, summary: String, details: serde_json::Value) -> ActionRequest {
    ActionRequest { kind: RequestKind::Alert, subject, severity, summary, details, pending: None, cooldown: None }
}

/// What is wrong with Warden now, as alert requests.
fn problems(
    shared: &Shared,
    cfg: &crate::config::SelfAlertsConfig,
    oldest_undelivered: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<ActionRequest> {
    let mut out = vec![];
    let g = shared.generation();
    for (rule, run) in shared.status.rules() {
        if run.failing_in_a_row >= u64::from(cfg.rule_errors) && g.plan.rules.contains_key(&rule) {
            let last = run.last_error.clone().unwrap_or_default();
            out.push(alert(
                format!("rule {rule}"),
                Severity::Warning,
                format!("rule {rule} failed its last {} evaluations: {last}", run.failing_in_a_row),
                serde_json::json!({"rule": rule, "failing_in_a_row": run.failing_in_a_row, "last_error": last}),
            ));
        }
    }
    let probes = shared.status.probes();
    let started = shared.status.started();
    for j in &g.plan.jobs {
        let Schedule::Every(every) = &j.schedule else { continue };
        let limit = chrono::Duration::from_std(*every * cfg.probe_intervals).unwrap_or(chrono::Duration::MAX);
        let last = probes.get(&(j.probe.clone(), j.target.clone())).and_then(|p| p.last_run).unwrap_or(started);
        if now - last > limit {
            out.push(alert(
                format!("probe {} on {}", j.probe, j.target),
                Severity::Critical,
                format!(
                    "probe {} on {} has not run for {} (it runs every {}): its rules are not judging that target",
                    j.probe,
                    j.target,
                    human(now - last),
                    humantime::format_duration(*every)
                ),
                serde_json::json!({"probe": j.probe, "target": j.target, "last_run": last}),
            ));
        }
    }
    if let Some(t) = oldest_undelivered {
        let limit = chrono::Duration::from_std(cfg.outbox_age).unwrap_or(chrono::Duration::MAX);
        if now - t > limit {
            out.push(alert(
                "notifications".into(),
                Severity::Critical,
                format!(
                    "a notification has waited {} to be delivered: a channel is failing (see `warden history`)",
                    human(now - t)
                ),
                serde_json::json!({"oldest_undelivered": t}),
            ));
        }
    }
    if let Some(r) = shared.status.last_reload().filter(|r| !r.ok) {
        let first = r.errors.first().cloned().unwrap_or_default();
        out.push(alert(
            "configuration".into(),
            Severity::Critical,
            format!("the last reload was refused ({} problem(s)); Warden runs on what it had: {first}", r.errors.len()),
            serde_json::json!({"errors": r.errors, "trigger": r.trigger, "time": r.time}),
        ));
    }
    out
}

/// A duration for people, to the second.
fn human(d: chrono::Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.num_seconds().max(0) as u64)).to_string()
}
