//! Between a rule's requests and the actions: dedup, `for`, cooldown, resolution and the restart-storm guard.
//!
//! Rules are declarative: each evaluation lists what is wrong *now*. The dispatcher keeps, per rule and target, one
//! state per dedup key (`alert:<subject>`, `run:<command>:<subject>`), fires a key once its `for` is met, repeats it
//! after its cooldown, and resolves an alert when an evaluation no longer asks for it. A skipped evaluation (the
//! rule could not judge) changes nothing. State is saved in the store after every change, so a restart neither
//! re-sends a firing alert nor forgets a pending one; what one step decides (journal rows and state) is written in
//! one transaction, so a crash never leaves a journalled relaunch without its cooldown, or the reverse. The daemon
//! runs the dispatcher on the store's thread ([`Store::call`]), never on an async worker.
//!
//! A firing alert whose `details.episode` changes (the Flink pack: a newer run of the job ended) is news: it is
//! announced again at once, as firing, whatever its cooldown.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::DispatchConfig;
use crate::model::{
    ActionKind, ActionRequest, AlertEvent, AlertRecord, Origin, Pending, Planned, RequestKind, Severity,
};
use crate::script::Verdict;
use crate::store::{NewEntry, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct KeyState {
    first_seen: DateTime<Utc>,
    seen: u32,
    fired_at: Option<DateTime<Utc>>,
    last_action: Option<DateTime<Utc>>,
    alert: bool,
    subject: String,
    severity: Severity,
    summary: String,
    details: serde_json::Value,
    /// A run or restart key that stopped being asked for after it acted: kept only for its `last_action`, so that
    /// if it is asked again (a rule file saved in two steps, a flapping job) the cooldown and backoff still hold.
    /// Pending `for` starts over. Dropped once the storm guard's window has passed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dormant: bool,
}

type Slot = BTreeMap<String, KeyState>;

/// An alert that is firing, as [`Dispatcher::firing_alerts`] reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FiringAlert {
    /// The rule that asks for it.
    pub rule: String,
    /// The target.
    pub target: String,
    /// What it is about (job name).
    pub subject: String,
    /// Its severity.
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// The rule's details (the Flink pack puts the job's `root_cause` here).
    pub details: serde_json::Value,
    /// When it first fired.
    pub since: DateTime<Utc>,
}

/// The dispatcher. Owned by one task; every decision is a function of the evaluation, the clock and the store.
pub struct Dispatcher {
    policy: DispatchConfig,
    dry_run: bool,
    states: HashMap<(String, String), Slot>,
}

impl Dispatcher {
    /// A dispatcher that resumes the states saved in `store`.
    pub fn new(policy: DispatchConfig, dry_run: bool, store: &Store) -> Result<Self, StoreError> {
        let mut states = HashMap::new();
        for (k, v) in store.dispatch_states()? {
            if let Ok(slot) = serde_json::from_value::<Slot>(v) {
                states.insert(k, slot);
            }
        }
        Ok(Self { policy, dry_run, states })
    }

    /// Replaces the policy (after a reload).
    pub fn set_policy(&mut self, policy: DispatchConfig) {
        self.policy = policy;
    }

    /// Alerts currently firing, as `(rule, target, subject, summary)`.
    pub fn firing(&self) -> Vec<(String, String, String, String)> {
        let mut out = vec![];
        for ((rule, target), slot) in &self.states {
            for k in slot.values() {
                if k.alert && k.fired_at.is_some() {
                    out.push((rule.clone(), target.clone(), k.subject.clone(), k.summary.clone()));
                }
            }
        }
        out.sort();
        out
    }

    /// Alerts currently firing, with what the status API and page show of them, sorted by rule, target, subject.
    pub fn firing_alerts(&self) -> Vec<FiringAlert> {
        let mut out = vec![];
        for ((rule, target), slot) in &self.states {
            for k in slot.values() {
                if let (true, Some(since)) = (k.alert, k.fired_at) {
                    out.push(FiringAlert {
                        rule: rule.clone(),
                        target: target.clone(),
                        subject: k.subject.clone(),
                        severity: k.severity,
                        summary: k.summary.clone(),
                        details: k.details.clone(),
                        since,
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.rule, &a.target, &a.subject).cmp(&(&b.rule, &b.target, &b.subject)));
        out
    }

    /// Whether `verdict` can change nothing: it asks for nothing (or was skipped), and nothing asked before by this
    /// rule on this target is waiting to be resolved or forgotten (only runs kept dormant for their cooldown, which
    /// stay as they are). [`Dispatcher::process`] writes nothing for it and returns no actions, so a caller that has
    /// to reach the store first (the daemon's dispatcher task) can leave it at that.
    pub fn is_quiet(&self, o: &Origin, verdict: &Verdict) -> bool {
        let Verdict::Requests(requests) = verdict else {
            return true;
        };
        if !requests.is_empty() {
            return false;
        }
        let Some(slot) = self.states.get(&(o.rule.clone(), o.target.clone())) else {
            return true;
        };
        let memory = self.dormant_memory();
        slot.values().all(|st| st.dormant && !st.alert && st.last_action.is_some_and(|last| o.time - last < memory))
    }

    /// How long a run that is no longer asked for stays dormant (see `KeyState::dormant`).
    fn dormant_memory(&self) -> chrono::Duration {
        chrono_d(self.policy.storm_guard.window.max(self.policy.run_cooldown))
    }

    /// Decides what follows from one evaluation, journals it, and returns the actions to carry out (none in
    /// dry-run mode: those are journalled with outcome `dry-run`). Everything the step writes (journal rows and the
    /// dispatcher's state) is one store transaction: if any of it fails, none of it is written, the in-memory
    /// state stays as it was, and the next evaluation decides again.
    pub fn process(&mut self, o: &Origin, verdict: &Verdict, store: &Store) -> Result<Vec<Planned>, StoreError> {
        let Verdict::Requests(requests) = verdict else {
            return Ok(vec![]);
        };
        let slot_key = (o.rule.clone(), o.target.clone());
        let before = self.states.get(&slot_key).cloned().unwrap_or_default();
        if requests.is_empty() && before.is_empty() {
            return Ok(vec![]); // all quiet and nothing to resolve: no transaction, no write lock
        }
        let (planned, slot) = store.transaction(|s| self.step(o, requests, &before, s))?;
        if slot != before {
            if slot.is_empty() {
                self.states.remove(&slot_key);
            } else {
                self.states.insert(slot_key, slot);
            }
        }
        Ok(planned)
    }

    /// One step of [`Dispatcher::process`], inside its transaction: the new slot and the actions.
    fn step(
        &self,
        o: &Origin,
        requests: &[ActionRequest],
        before: &Slot,
        store: &Store,
    ) -> Result<(Vec<Planned>, Slot), StoreError> {
        let now = o.time;
        let mut slot = before.clone();
        let mut planned = Vec::new();
        let mut asked = std::collections::HashSet::new();

        for r in requests {
            if let RequestKind::Log = r.kind {
                let rec = record(o, r, "log");
                planned.extend(self.notify(o, rec, "log", store)?);
                continue;
            }
            let key = r.key();
            if !asked.insert(key.clone()) {
                continue; // the same key twice in one evaluation counts once
            }
            let st = slot.entry(key).or_insert_with(|| KeyState {
                first_seen: now,
                seen: 0,
                fired_at: None,
                last_action: None,
                alert: matches!(r.kind, RequestKind::Alert),
                subject: r.subject.clone(),
                severity: r.severity,
                summary: r.summary.clone(),
                details: r.details.clone(),
                dormant: false,
            });
            if st.dormant {
                // Asked again: pending starts over, but the last run still counts for the cooldown.
                st.dormant = false;
                st.first_seen = now;
                st.seen = 0;
                st.fired_at = None;
            }
            // A new episode of a firing alert (see `episode`): announced now, as firing.
            let renewed = matches!(r.kind, RequestKind::Alert)
                && st.fired_at.is_some()
                && episode(&r.details).is_some_and(|e| Some(e) != episode(&st.details));
            st.seen += 1;
            st.severity = r.severity;
            st.summary = r.summary.clone();
            st.details = r.details.clone();
            let due = match r.pending {
                None => true,
                Some(Pending::Evaluations(n)) => st.seen >= n,
                Some(Pending::Duration(d)) => now - st.first_seen >= chrono_d(d),
            };
            if !due {
                continue;
            }
            // A relaunch on a target whose jobs someone else manages (the Flink Kubernetes Operator): refused and
            // journalled once while it keeps being asked; nothing is carried out, and nothing to resolve later.
            if let (
                RequestKind::Run { .. } | RequestKind::Restart { .. } | RequestKind::Rescale { .. },
                Some(manager),
            ) = (&r.kind, self.policy.hands_off.get(&o.target))
            {
                if st.fired_at.is_none() {
                    st.fired_at = Some(now);
                    self.refuse(o, r, manager, store)?;
                }
                continue;
            }
            // A patch is sent once per key (path and body): asking for it again changes nothing, and a new
            // action needs a new body (the operator's nonces).
            if matches!(r.kind, RequestKind::Patch { .. }) && st.last_action.is_some() {
                continue;
            }
            let acts = matches!(
                r.kind,
                RequestKind::Run { .. }
                    | RequestKind::Restart { .. }
                    | RequestKind::Patch { .. }
                    | RequestKind::Rescale { .. }
            );
            let cooldown = r.cooldown.or(if acts { Some(self.policy.run_cooldown) } else { self.policy.alert_repeat });
            let repeat = match (st.last_action, cooldown) {
                (None, _) => true,
                (Some(last), Some(cd)) => {
                    // Exponential backoff between attempts: the cooldown doubles with each run in the guard's window.
                    let cd = if acts { self.backoff(cd, o, &r.subject, store)? } else { cd };
                    now - last >= chrono_d(cd)
                }
                (Some(_), None) => false,
            };
            if !repeat && !renewed {
                continue;
            }
            let first = st.fired_at.is_none();
            st.fired_at.get_or_insert(now);
            let previous_action = st.last_action.replace(now);
            match &r.kind {
                RequestKind::Alert => {
                    let ev = if first || renewed { AlertEvent::Firing } else { AlertEvent::Reminder };
                    let mut rec = record(o, r, ev.as_str());
                    if let Some(t) = st.fired_at {
                        if !first {
                            rec.details = with_field(rec.details, "firing_since", serde_json::json!(t));
                        }
                    }
                    planned.extend(self.notify(o, rec, ev.as_str(), store)?);
                }
                RequestKind::Run { .. }
                | RequestKind::Restart { .. }
                | RequestKind::Patch { .. }
                | RequestKind::Rescale { .. } => {
                    let (command, vars) = match &r.kind {
                        RequestKind::Run { command, vars } => (command.as_str(), vars.clone()),
                        _ => ("", BTreeMap::new()),
                    };
                    let acts = self.run(o, r, requests, command, &vars, store)?;
                    // Held back by the storm guard: not an action, so the backoff clock keeps its last real run.
                    let acted = acts.iter().any(|p| {
                        matches!(
                            p,
                            Planned::Run { .. }
                                | Planned::Restart { .. }
                                | Planned::Patch { .. }
                                | Planned::Rescale { .. }
                        )
                    });
                    if !acted && !self.dry_run {
                        st.last_action = previous_action;
                    }
                    planned.extend(acts);
                }
                RequestKind::Log => unreachable!(),
            }
        }

        // Keys not asked for any more: alerts resolve, pending ones are forgotten, and a run that acted stays
        // dormant for its cooldown (see `KeyState::dormant`).
        let memory = self.dormant_memory();
        let gone: Vec<String> = slot.keys().filter(|k| !asked.contains(*k)).cloned().collect();
        for k in gone {
            let Some(st) = slot.remove(&k) else { continue };
            if let (false, Some(last)) = (st.alert, st.last_action) {
                if now - last < memory {
                    slot.insert(k, KeyState { dormant: true, seen: 0, fired_at: None, ..st });
                }
                continue;
            }
            if st.alert && st.fired_at.is_some() {
                let rec = AlertRecord {
                    time: now,
                    event: AlertEvent::Resolved.as_str().into(),
                    rule: o.rule.clone(),
                    target: o.target.clone(),
                    subject: st.subject.clone(),
                    severity: st.severity,
                    summary: format!("resolved: {}", st.summary),
                    details: with_field(st.details.clone(), "firing_since", serde_json::json!(st.fired_at)),
                };
                planned.extend(self.notify(o, rec, "resolved", store)?);
            }
        }

        if slot != *before {
            let state = serde_json::to_value(&slot)
                .map_err(|e| StoreError::new(store.path(), format!("cannot save the dispatcher's state: {e}")))?;
            store.save_dispatch_state(&o.rule, &o.target, &state)?;
        }
        Ok((planned, slot))
    }

    fn notify(&self, o: &Origin, rec: AlertRecord, detail: &str, store: &Store) -> Result<Option<Planned>, StoreError> {
        let action = match rec.event.as_str() {
            "resolved" => ActionKind::Resolved,
            "log" => ActionKind::Log,
            "giving_up" => ActionKind::Guard,
            _ => ActionKind::Alert,
        };
        let id = store.journal(&NewEntry {
            time: Some(rec.time),
            rule: rec.rule.clone(),
            target: rec.target.clone(),
            probe: o.probe.clone(),
            subject: rec.subject.clone(),
            action,
            detail: detail.into(),
            severity: rec.severity.as_str().into(),
            summary: rec.summary.clone(),
            details: rec.details.clone(),
            outcome: if self.dry_run { "dry-run".into() } else { "started".into() },
        })?;
        Ok((!self.dry_run).then_some(Planned::Notify { journal_id: id, record: rec }))
    }

    /// Journals a relaunch that is not carried out because `manager` manages the target's jobs.
    fn refuse(&self, o: &Origin, r: &ActionRequest, manager: &str, store: &Store) -> Result<(), StoreError> {
        tracing::info!(rule = %o.rule, target = %o.target, subject = %r.subject, "refused {}: {manager} manages this target's jobs", r.key());
        store.journal(&NewEntry {
            time: Some(o.time),
            rule: o.rule.clone(),
            target: o.target.clone(),
            probe: o.probe.clone(),
            subject: r.subject.clone(),
            action: ActionKind::Refused,
            detail: r.key(),
            severity: r.severity.as_str().into(),
            summary: r.summary.clone(),
            details: with_field(r.details.clone(), "managed_by", serde_json::json!(manager)),
            outcome: format!(
                "refused: target `{}` is labelled `managed_by: {manager}`; Warden does not relaunch its jobs",
                o.target
            ),
        })?;
        Ok(())
    }

    /// `cooldown` × 2^(runs in the storm guard's window − 1), at most the window.
    fn backoff(&self, cooldown: Duration, o: &Origin, subject: &str, store: &Store) -> Result<Duration, StoreError> {
        let g = &self.policy.storm_guard;
        let runs = relaunch_times(store, &o.target, subject, o.time - chrono_d(g.window))?.len() as u32;
        let factor = 2u32.saturating_pow(runs.saturating_sub(1).min(16));
        Ok(cooldown.saturating_mul(factor).min(g.window.max(cooldown)))
    }

    fn run(
        &self,
        o: &Origin,
        r: &ActionRequest,
        evaluation: &[ActionRequest],
        command: &str,
        vars: &BTreeMap<String, String>,
        store: &Store,
    ) -> Result<Vec<Planned>, StoreError> {
        let now = o.time;
        let g = &self.policy.storm_guard;
        let mut since = now - chrono_d(g.window);
        if let Some(reset) = store.guard_reset_at(&o.target, &r.subject)? {
            since = since.max(reset);
        }
        let times = relaunch_times(store, &o.target, &r.subject, since)?;
        let runs = times.len() as u32;
        if runs >= g.max_runs {
            if store.gave_up_since(&o.target, &r.subject, since)? {
                return Ok(vec![]);
            }
            // Relaunches are allowed again once enough of the counted ones have left the window: when the
            // (runs - max_runs)-th oldest is `window` old.
            let k = (runs.saturating_sub(g.max_runs)) as usize;
            let until = times.get(k).copied().unwrap_or(now) + chrono_d(g.window);
            let rec = AlertRecord {
                time: now,
                event: AlertEvent::GivingUp.as_str().into(),
                rule: o.rule.clone(),
                target: o.target.clone(),
                subject: r.subject.clone(),
                severity: Severity::Critical,
                summary: format!(
                    "giving up on {}: {runs} relaunches within {}; no more until {} or `warden guard reset --target {} --subject {}`",
                    r.subject,
                    humantime::format_duration(g.window),
                    until.format("%Y-%m-%d %H:%M:%S UTC"),
                    o.target,
                    r.subject
                ),
                details: serde_json::json!({"action": r.key(), "runs": runs, "window_s": g.window.as_secs(),
                    "resumes_at": until, "last_request": r.summary}),
            };
            return Ok(self.notify(o, rec, "giving_up", store)?.into_iter().collect());
        }
        // Journalled before it runs (outcome `started`), or only journalled in dry-run mode, with its decision
        // record (why), in this step's transaction.
        let journal = |action: ActionKind, detail: &str, details: serde_json::Value| {
            let id = store.journal(&NewEntry {
                time: Some(now),
                rule: o.rule.clone(),
                target: o.target.clone(),
                probe: o.probe.clone(),
                subject: r.subject.clone(),
                action,
                detail: detail.into(),
                severity: r.severity.as_str().into(),
                summary: r.summary.clone(),
                details,
                outcome: if self.dry_run { "dry-run".into() } else { "started".into() },
            })?;
            if let Some(d) = crate::action::decision::decide(o, r, evaluation) {
                store.save_decision(id, &d)?;
            }
            Ok::<_, StoreError>(id)
        };
        // The actions do not need the observation: a long restart should not keep it alive.
        let origin = Origin { observed: None, ..o.clone() };
        if let RequestKind::Patch { path, body } = &r.kind {
            let id = journal(ActionKind::Patch, path, with_field(r.details.clone(), "patch", body.clone()))?;
            if self.dry_run {
                return Ok(vec![]);
            }
            return Ok(vec![Planned::Patch {
                journal_id: id,
                path: path.clone(),
                body: body.clone(),
                origin,
                subject: r.subject.clone(),
            }]);
        }
        if let RequestKind::Rescale { job, jid, to } = &r.kind {
            let id = journal(
                ActionKind::Rescale,
                &to.to_string(),
                with_field(r.details.clone(), "old_jid", serde_json::json!(jid)),
            )?;
            if self.dry_run {
                return Ok(vec![]);
            }
            return Ok(vec![Planned::Rescale { journal_id: id, job: job.clone(), jid: jid.clone(), to: *to, origin }]);
        }
        if let RequestKind::Restart { job, jid, strategy, overrides } = &r.kind {
            let id = journal(
                ActionKind::Restart,
                strategy.as_str(),
                with_field(r.details.clone(), "old_jid", serde_json::json!(jid)),
            )?;
            if self.dry_run {
                return Ok(vec![]);
            }
            return Ok(vec![Planned::Restart {
                journal_id: id,
                job: job.clone(),
                jid: jid.clone(),
                strategy: *strategy,
                overrides: overrides.clone(),
                origin,
            }]);
        }
        let id = journal(ActionKind::Run, command, with_field(r.details.clone(), "vars", serde_json::json!(vars)))?;
        if self.dry_run {
            return Ok(vec![]);
        }
        let mut all = vars.clone();
        all.insert("target".into(), o.target.clone());
        all.insert("target_url".into(), o.target_url.clone());
        all.insert("rule".into(), o.rule.clone());
        all.insert("probe".into(), o.probe.clone());
        all.insert("subject".into(), r.subject.clone());
        Ok(vec![Planned::Run {
            journal_id: id,
            command: command.into(),
            vars: all,
            origin,
            subject: r.subject.clone(),
        }])
    }
}

/// When `subject` on `target` was relaunched since `since`, oldest first: the runs, restarts and patches the
/// store counts, and rescales (dry runs and suppressed ones do not count). The storm guard and the backoff count
/// them together: a job rescaled three times in its window has been restarted by Flink three times.
fn relaunch_times(
    store: &Store,
    target: &str,
    subject: &str,
    since: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, StoreError> {
    let mut times = store.relaunch_times_since(target, subject, since)?;
    let f = crate::store::JournalFilter {
        job: Some(subject.to_string()),
        kind: Some(ActionKind::Rescale),
        since: Some(since),
        ..Default::default()
    };
    for e in store.find_entries(&f, None)? {
        if e.target != target || e.outcome == "dry-run" || e.outcome.starts_with("suppressed") {
            continue;
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(&e.time) {
            times.push(t.with_timezone(&Utc));
        }
    }
    times.sort();
    Ok(times)
}

/// What occurrence an alert is about, when its rule says so in `details.episode` (the Flink pack's
/// job-not-running: the job id of the run that ended). `None` when absent or null.
fn episode(details: &serde_json::Value) -> Option<&serde_json::Value> {
    details.get("episode").filter(|v| !v.is_null())
}

fn chrono_d(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn record(o: &Origin, r: &ActionRequest, event: &str) -> AlertRecord {
    AlertRecord {
        time: o.time,
        event: event.into(),
        rule: o.rule.clone(),
        target: o.target.clone(),
        subject: r.subject.clone(),
        severity: r.severity,
        summary: r.summary.clone(),
        details: r.details.clone(),
    }
}

fn with_field(details: serde_json::Value, k: &str, v: serde_json::Value) -> serde_json::Value {
    match details {
        serde_json::Value::Object(mut m) => {
            m.insert(k.into(), v);
            serde_json::Value::Object(m)
        }
        serde_json::Value::Null => serde_json::json!({ k: v }),
        other => serde_json::json!({"value": other, k: v}),
    }
}

#[cfg(test)]
mod tests;
