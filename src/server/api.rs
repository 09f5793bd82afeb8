//! `GET /api/status`, `GET /api/history` and `POST /-/reload`, and [`StatusView`], what the status API, the
//! status page and `warden status` show.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::model::ActionKind;
use crate::runtime::status::ReloadOutcome;
use crate::runtime::StatusHandle;
use crate::store::{JournalEntry, JournalFilter, RestartRecord};

/// Everything `GET /api/status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    /// Warden's version.
    pub version: String,
    /// When this view was made.
    pub now: DateTime<Utc>,
    /// When the daemon started (`None` when read from the store, without a daemon).
    pub started: Option<DateTime<Utc>>,
    /// `daemon` (live) or `store` (what the state directory holds, no daemon answering).
    pub source: String,
    /// Dry-run mode.
    pub dry_run: bool,
    /// Every probe × target has run at least once.
    pub ready: bool,
    /// The last reload (the start counts as the first).
    pub reload: Option<ReloadOutcome>,
    /// Targets with their jobs.
    pub targets: Vec<TargetView>,
    /// Probes × targets.
    pub probes: Vec<ProbeView>,
    /// Rules.
    pub rules: Vec<RuleView>,
    /// Alerts firing now.
    pub alerts: Vec<AlertView>,
    /// Restarts in progress.
    pub restarts: Vec<RestartView>,
    /// Rescales in progress (journalled `rescale` entries not finished yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rescales: Vec<EntryView>,
    /// The newest journal entries (newest last).
    pub recent: Vec<EntryView>,
    /// The daemon's counters (polls, poll_errors, evaluations, rule_errors, actions, reloads, failed_reloads,
    /// skipped_runs).
    pub counters: BTreeMap<String, u64>,
    /// The HA pair: this instance's `role` (`leader`, `standby`, or `single` without PostgreSQL), the `epoch` it
    /// leads under (or the lease row's, as a standby), the lease `holder` and `lease_until`, and the `peer` (the
    /// other instance, with its role and when it was last seen).
    #[serde(default = "crate::ha::HaView::single")]
    pub ha: crate::ha::HaView,
}

/// `ok`, `failing`, `unknown`, …: how something is doing, in one word.
pub type Health = String;

/// A target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetView {
    /// Name.
    pub name: String,
    /// Base URL, without user information or query.
    pub url: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `ok` (every poll answered), `failing` (a poll failed or an alert about the target fires), `unknown` (not
    /// polled yet).
    pub health: Health,
    /// The newest poll error.
    pub last_error: Option<String>,
    /// Its jobs, as the last answer listing them showed, plus jobs an alert names that the answer lacks.
    pub jobs: Vec<JobView>,
}

/// A job on a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// Job name.
    pub name: String,
    /// Id of its newest run.
    pub jid: Option<String>,
    /// Flink's state, or `MISSING` when only an alert names it.
    pub state: String,
    /// `ok` (running, nothing firing), `failing` (an alert fires about it), `restarting` (a restart runs), or the
    /// state in lower case.
    pub health: Health,
    /// The summary of the alert firing about it.
    pub alert: Option<String>,
}

/// A probe × target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeView {
    /// Probe.
    pub probe: String,
    /// Target.
    pub target: String,
    /// `every 10s` or `cron …`.
    pub schedule: String,
    /// When the last poll started.
    pub last_run: Option<DateTime<Utc>>,
    /// How long it took.
    pub last_duration_ms: Option<u64>,
    /// Why it failed.
    pub last_error: Option<String>,
    /// When the next is due.
    pub next_run: Option<DateTime<Utc>>,
    /// Polls.
    pub runs: u64,
    /// Failed polls.
    pub errors: u64,
    /// For a probe with `for_each: job`: its last tick over the target's jobs (jobs polled, failed polls, job
    /// polls since start). `runs` and `errors` then count ticks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<crate::runtime::status::FanOutRun>,
}

/// A rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleView {
    /// Namespaced name.
    pub rule: String,
    /// Its file.
    pub file: String,
    /// Evaluations since start.
    pub evaluations: u64,
    /// Failed evaluations.
    pub errors: u64,
    /// The last error, as `file:line:col: message`.
    pub last_error: Option<String>,
    /// When.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A firing alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertView {
    /// Rule.
    pub rule: String,
    /// Target.
    pub target: String,
    /// Subject (job name).
    pub subject: String,
    /// `info`, `warning`, `critical`.
    pub severity: String,
    /// One line.
    pub summary: String,
    /// The root cause the rule found (the Flink pack's `details.root_cause`).
    pub root_cause: Option<String>,
    /// Firing since.
    pub since: DateTime<Utc>,
    /// When another alert inhibits it (its notifications are held back): which, e.g.
    /// `by flink/jobmanager-unreachable (jm) on jm [inhibit rule flink/jobmanager-unreachable]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inhibited_by: Option<String>,
}

/// A restart in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartView {
    /// Restart id.
    pub id: i64,
    /// Target.
    pub target: String,
    /// Job.
    pub job: String,
    /// Strategy.
    pub strategy: String,
    /// Step reached.
    pub step: String,
    /// Started.
    pub started: String,
    /// Last moved.
    pub updated: String,
    /// Who drives it.
    pub owner: Option<String>,
    /// `restart`, `upgrade`, `rollback` or `rescale`.
    #[serde(default)]
    pub kind: String,
    /// The jar id it submits, once known.
    #[serde(default)]
    pub jar: Option<String>,
    /// The parallelism it submits, when it changes it.
    #[serde(default)]
    pub parallelism: Option<u32>,
}

impl RestartView {
    /// The strategy, and for an upgrade, rollback or rescale its kind, jar and parallelism:
    /// `upgrade (savepoint, jar 3f1e_clicks-2.jar)`.
    pub fn what(&self) -> String {
        if self.kind.is_empty() || self.kind == "restart" {
            return self.strategy.clone();
        }
        let mut s = format!("{} ({}", self.kind, self.strategy);
        if let Some(j) = &self.jar {
            s.push_str(&format!(", jar {j}"));
        }
        if let Some(p) = self.parallelism {
            s.push_str(&format!(", parallelism {p}"));
        }
        s.push(')');
        s
    }
}

impl From<RestartRecord> for RestartView {
    fn from(r: RestartRecord) -> Self {
        RestartView {
            id: r.id,
            target: r.target,
            job: r.job,
            strategy: r.strategy.to_string(),
            step: r.step.to_string(),
            started: r.started,
            updated: r.updated,
            owner: r.owner,
            kind: r.kind.to_string(),
            jar: r.jar_id,
            parallelism: r.overrides.parallelism,
        }
    }
}

/// A journal entry, as the timeline shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryView {
    /// Row id.
    pub id: i64,
    /// When.
    pub time: String,
    /// Kind (`alert`, `resolved`, `run`, `restart`, …).
    pub kind: String,
    /// Detail (command name, `firing`, …).
    pub detail: String,
    /// Rule.
    pub rule: String,
    /// Target.
    pub target: String,
    /// Subject.
    pub subject: String,
    /// Severity.
    pub severity: String,
    /// Summary.
    pub summary: String,
    /// Outcome.
    pub outcome: String,
}

impl From<JournalEntry> for EntryView {
    fn from(e: JournalEntry) -> Self {
        EntryView {
            id: e.id,
            time: e.time,
            kind: e.action.to_string(),
            detail: e.detail,
            rule: e.rule,
            target: e.target,
            subject: e.subject,
            severity: e.severity,
            summary: e.summary,
            outcome: e.outcome,
        }
    }
}

/// How many journal entries the status view carries.
const RECENT: usize = 30;

/// The root cause in an alert's details, as one line.
fn root_cause(details: &serde_json::Value) -> Option<String> {
    match details.get("root_cause")? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn job_health(state: &str) -> &'static str {
    match state {
        "RUNNING" => "ok",
        "FINISHED" => "finished",
        "CANCELED" | "CANCELLING" => "cancelled",
        "CREATED" | "INITIALIZING" | "RECONCILING" => "starting",
        "SUSPENDED" => "suspended",
        _ => "failing", // FAILED, FAILING, RESTARTING
    }
}

/// Builds the view from the daemon's status (and the store, on its thread).
pub async fn build_view(status: &StatusHandle) -> Result<StatusView, String> {
    let (restarts, recent, inhibited, rescales) = match status.store() {
        Some(store) => {
            store
                .call(|s| {
                    let r = s.unfinished_restarts().map_err(|e| e.to_string())?;
                    let e = s.entries(Some(RECENT)).map_err(|e| e.to_string())?;
                    // Before the notifier has made its tables nothing is inhibited.
                    let i = crate::notify::inhibit::held_inhibited(s).unwrap_or_default();
                    let sc = crate::action::rescale::in_flight(s).map_err(|e| e.to_string())?;
                    Ok::<_, String>((r, e, i, sc))
                })
                .await?
        }
        None => (vec![], vec![], Default::default(), vec![]),
    };
    let firing = status.firing();
    let probes = status.probes();
    let rules = status.rules();
    let jobs = status.jobs();
    let g = status.generation();
    let mut view = StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        now: Utc::now(),
        started: Some(status.started()),
        source: "daemon".into(),
        dry_run: status.dry_run(),
        ready: status.ready(),
        reload: status.last_reload(),
        targets: vec![],
        probes: vec![],
        rules: vec![],
        alerts: firing
            .iter()
            .map(|a| AlertView {
                rule: a.rule.clone(),
                target: a.target.clone(),
                subject: a.subject.clone(),
                severity: a.severity.as_str().into(),
                summary: a.summary.clone(),
                root_cause: root_cause(&a.details),
                since: a.since,
                inhibited_by: inhibited.get(&(a.rule.clone(), a.target.clone(), a.subject.clone())).cloned(),
            })
            .collect(),
        restarts: restarts.into_iter().map(RestartView::from).collect(),
        rescales: rescales.into_iter().map(EntryView::from).collect(),
        recent: recent.into_iter().map(EntryView::from).collect(),
        counters: BTreeMap::new(),
        ha: status.ha(),
    };
    if let Some(st) = status.stats() {
        use std::sync::atomic::Ordering::Relaxed;
        for (k, v) in [
            ("polls", &st.polls),
            ("poll_errors", &st.poll_errors),
            ("skipped_runs", &st.skipped_runs),
            ("evaluations", &st.evaluations),
            ("rule_errors", &st.rule_errors),
            ("actions", &st.actions),
            ("reloads", &st.reloads),
            ("failed_reloads", &st.failed_reloads),
        ] {
            view.counters.insert(k.into(), v.load(Relaxed));
        }
    }
    let Some(g) = g else { return Ok(view) };
    for j in &g.plan.jobs {
        let run = probes.get(&(j.probe.clone(), j.target.clone())).cloned().unwrap_or_default();
        view.probes.push(ProbeView {
            probe: j.probe.clone(),
            target: j.target.clone(),
            schedule: {
                let when = match &j.schedule {
                    crate::schedule::Schedule::Every(d) => format!("every {}", humantime::format_duration(*d)),
                    crate::schedule::Schedule::Cron(c) => format!("cron {}", c.source()),
                };
                match &j.for_each {
                    None => when,
                    Some(fe) => {
                        let states: Vec<&str> = fe.states.iter().map(|s| s.as_str()).collect();
                        format!("{when}, per {} job, {} at a time", states.join("/"), fe.concurrency)
                    }
                }
            },
            last_run: run.last_run,
            last_duration_ms: run.last_duration_ms,
            last_error: run.last_error,
            next_run: run.next_run,
            runs: run.runs,
            errors: run.errors,
            fan_out: run.fan_out.or_else(|| j.for_each.as_ref().map(|_| Default::default())),
        });
    }
    view.probes.sort_by(|a, b| (&a.target, &a.probe).cmp(&(&b.target, &b.probe)));
    for (name, r) in &g.plan.rules {
        let run = rules.get(name).cloned().unwrap_or_default();
        view.rules.push(RuleView {
            rule: name.clone(),
            file: r.compiled.file.display().to_string(),
            evaluations: run.evaluations,
            errors: run.errors,
            last_error: run.last_error,
            last_error_at: run.last_error_at,
        });
    }
    view.rules.sort_by(|a, b| a.rule.cmp(&b.rule));
    for t in &g.plan.loaded.config.targets {
        let mine: Vec<&ProbeView> = view.probes.iter().filter(|p| p.target == t.name).collect();
        let last_error = mine.iter().filter_map(|p| p.last_error.clone()).next();
        let alerts: Vec<&AlertView> = view.alerts.iter().filter(|a| a.target == t.name).collect();
        let mut job_views: Vec<JobView> = vec![];
        for j in jobs.get(&t.name).map(Vec::as_slice).unwrap_or_default() {
            let alert = alerts.iter().find(|a| a.subject == j.name);
            let restarting = view.restarts.iter().any(|r| r.target == t.name && r.job == j.name);
            let health = if restarting {
                "restarting"
            } else if alert.is_some() {
                "failing"
            } else {
                job_health(&j.state)
            };
            job_views.push(JobView {
                name: j.name.clone(),
                jid: Some(j.jid.clone()),
                state: j.state.clone(),
                health: health.into(),
                alert: alert.map(|a| a.summary.clone()),
            });
        }
        // Jobs an alert names that no answer lists (an expected job that is missing).
        for a in &alerts {
            let about_target = a.subject.is_empty() || a.subject == t.name;
            if !about_target && !job_views.iter().any(|j| j.name == a.subject) {
                job_views.push(JobView {
                    name: a.subject.clone(),
                    jid: None,
                    state: "MISSING".into(),
                    health: "failing".into(),
                    alert: Some(a.summary.clone()),
                });
            }
        }
        job_views.sort_by(|a, b| a.name.cmp(&b.name));
        let target_alert = alerts.iter().any(|a| a.subject.is_empty() || a.subject == t.name);
        let health = if last_error.is_some() || target_alert {
            "failing"
        } else if mine.iter().any(|p| p.last_run.is_some()) {
            "ok"
        } else {
            "unknown"
        };
        view.targets.push(TargetView {
            name: t.name.clone(),
            url: super::redact_url(&t.url),
            labels: t.labels.clone(),
            health: health.into(),
            last_error,
            jobs: job_views,
        });
    }
    Ok(view)
}

pub(super) async fn status(State(s): State<AppState>) -> Response {
    match build_view(&s.status).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the state store: {e}\n")).into_response(),
    }
}

/// The query of `GET /api/history`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only entries about this job.
    pub job: Option<String>,
    /// Only entries from this rule.
    pub rule: Option<String>,
    /// Only entries of this kind (`alert`, `resolved`, `run`, `restart`, `log`, `guard`, `guard-reset`, `notify`).
    pub kind: Option<String>,
    /// Only entries at or after this time: RFC 3339 (`2026-01-01T00:00:00Z`) or a duration ago (`1h`, `2d`).
    pub since: Option<String>,
    /// The newest N (default 500, at most 10000).
    pub limit: Option<usize>,
}

/// Parses `since`: an RFC 3339 time, or a duration before `now`.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d: Duration = crate::config::units::parse_duration(s).map_err(|e| {
        format!("`since`: `{s}` is neither a time (2026-01-01T00:00:00Z) nor a duration ago (1h, 2d): {e}")
    })?;
    let d = chrono::Duration::from_std(d).map_err(|_| format!("`since`: `{s}` is too long ago"))?;
    now.checked_sub_signed(d).ok_or_else(|| format!("`since`: `{s}` is too long ago"))
}

/// Turns a query into a journal filter, or says what is wrong with it.
pub fn filter_of(q: &HistoryQuery, now: DateTime<Utc>) -> Result<JournalFilter, String> {
    let kind = match &q.kind {
        Some(k) => Some(k.parse::<ActionKind>().map_err(|e| format!("`kind`: {e}"))?),
        None => None,
    };
    let since = q.since.as_deref().map(|s| parse_since(s, now)).transpose()?;
    Ok(JournalFilter { job: q.job.clone(), rule: q.rule.clone(), kind, since, after_id: None })
}

pub(super) async fn history(
    State(s): State<AppState>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let filter = match filter_of(&q, Utc::now()) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let Some(store) = s.status.store() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the state store is not open yet\n").into_response();
    };
    let limit = q.limit.unwrap_or(500).min(10_000);
    match store.call(move |st| st.find_entries(&filter, Some(limit))).await {
        Ok(entries) => Json(entries).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the journal: {e}\n")).into_response(),
    }
}

/// What `POST /-/reload` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReloadAnswer {
    /// Whether the reload applied.
    pub ok: bool,
    /// Why not (each as `file:line:col: message`).
    pub errors: Vec<String>,
}

pub(super) async fn reload(State(s): State<AppState>) -> Response {
    let mut rx = s.status.watch_reloads();
    let before = rx.borrow_and_update().as_ref().map(|o| o.seq);
    if !s.status.request_reload() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "reload is not available (no configuration file, or one is queued)\n",
        )
            .into_response();
    }
    let waited = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if rx.changed().await.is_err() {
                return None;
            }
            let now = rx.borrow_and_update().clone();
            if let Some(o) = now.filter(|o| Some(o.seq) != before) {
                return Some(o);
            }
        }
    })
    .await;
    match waited {
        Ok(Some(o)) => {
            let code = if o.ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
            (code, Json(ReloadAnswer { ok: o.ok, errors: o.errors })).into_response()
        }
        Ok(None) => (StatusCode::SERVICE_UNAVAILABLE, "Warden is shutting down\n").into_response(),
        Err(_) => {
            (StatusCode::GATEWAY_TIMEOUT, "the reload did not finish within 120s; see the logs\n").into_response()
        }
    }
}
