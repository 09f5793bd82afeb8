//! What the daemon knows about itself, for the HTTP server ([`crate::server`]) and `warden status`: a shared
//! handle that the runtime writes (probe runs, rule evaluations, reloads, firing alerts, the generation in force)
//! and the server reads. Writing is a few atomics or one short lock per event; nothing here waits on I/O.
//!
//! The Prometheus metrics live here too ([`Metrics`]): counters and histograms are updated where things happen;
//! the gauges that describe the store (outbox, restarts) and the firing alerts are filled when `/metrics` is read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use serde::Serialize;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};
use tokio::sync::{mpsc, watch};

use super::{Generation, Stats};
use crate::dispatch::FiringAlert;
use crate::model::{doc, Doc, DocValue};
use crate::reload::Trigger;
use crate::store::Store;

/// Labels of a probe × target.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// Probe name.
    pub probe: String,
    /// Target name.
    pub target: String,
}

/// Labels of a rule.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// Namespaced rule name.
    pub rule: String,
}

/// Labels of an action's end.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// Journal action kind (`alert`, `run`, `restart`, …).
    pub kind: String,
    /// `ok`, `failed`, `timeout`, `interrupted`, `suppressed`, …: the first word of the journalled outcome.
    pub outcome: String,
}

/// Labels of the firing-alerts gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabels {
    /// Rule.
    pub rule: String,
    /// `info`, `warning`, `critical`.
    pub severity: String,
}

/// Labels of the restarts gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    /// The step reached (for a failed restart: the step it failed at).
    pub step: String,
    /// `running`, `ok` or `failed`.
    pub outcome: String,
}

/// Labels of the reload counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `failed`.
    pub result: String,
}

/// Labels of the build info.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Warden's version.
    pub version: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 5 ms … 20 s
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}
fn rule_histogram() -> Histogram {
    // 0.1 ms … 3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Warden's Prometheus metrics, every name prefixed `warden_`.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `warden_probe_duration_seconds{probe,target}`: how long polls take (answer or error).
    pub probe_duration: Hist<ProbeLabels>,
    /// `warden_probe_errors_total{probe,target}`: polls that failed.
    pub probe_errors: Family<ProbeLabels, Counter>,
    /// `warden_probe_skipped_runs_total{probe,target}`: runs skipped because the previous one was still going.
    pub probe_skipped: Family<ProbeLabels, Counter>,
    /// `warden_rule_evaluation_duration_seconds{rule}`.
    pub rule_duration: Hist<RuleLabels>,
    /// `warden_rule_errors_total{rule}`: evaluations that failed (script error, limit).
    pub rule_errors: Family<RuleLabels, Counter>,
    /// `warden_actions_total{kind,outcome}`: actions carried out, by how they ended.
    pub actions: Family<ActionLabels, Counter>,
    /// `warden_alerts_firing{rule,severity}` (filled at scrape time).
    pub alerts_firing: Family<AlertLabels, Gauge>,
    /// `warden_outbox_depth`: notifications waiting to be delivered (filled at scrape time).
    pub outbox_depth: Gauge,
    /// `warden_alerts_inhibited`: alerts held back now because another alert inhibits them (filled at scrape time).
    pub alerts_inhibited: Gauge,
    /// `warden_outbox_oldest_age_seconds`: age of the oldest of them, 0 when none (filled at scrape time).
    pub outbox_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `warden_restarts{step,outcome}`: restart records in the store (filled at scrape time).
    pub restarts: Family<RestartLabels, Gauge>,
    /// `warden_reloads_total{result}`.
    pub reloads: Family<ResultLabels, Counter>,
    /// `warden_config_last_reload_successful`: 1 if the last reload (or the start) applied, 0 if it was rejected.
    pub reload_ok: Gauge,
    /// `warden_config_last_reload_success_timestamp_seconds`.
    pub reload_ok_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// `warden_build_info{version}` (always 1).
    pub build_info: Family<BuildLabels, Gauge>,
    /// `warden_ha_role{role}`, `warden_ha_epoch`, `warden_ha_lease_renewals_total{result}`,
    /// `warden_ha_transitions_total`.
    pub ha: crate::ha::HaMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            probe_duration: Family::new_with_constructor(probe_histogram),
            probe_errors: Family::default(),
            probe_skipped: Family::default(),
            rule_duration: Family::new_with_constructor(rule_histogram),
            rule_errors: Family::default(),
            actions: Family::default(),
            alerts_firing: Family::default(),
            outbox_depth: Gauge::default(),
            alerts_inhibited: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
            restarts: Family::default(),
            reloads: Family::default(),
            reload_ok: Gauge::default(),
            reload_ok_time: Gauge::default(),
            build_info: Family::default(),
            ha: crate::ha::HaMetrics::default(),
        };
        r.register("warden_probe_duration_seconds", "How long a poll takes, answer or error", m.probe_duration.clone());
        r.register(
            "warden_probe_errors",
            "Polls that failed (down, timeout, HTTP error, too large)",
            m.probe_errors.clone(),
        );
        r.register(
            "warden_probe_skipped_runs",
            "Scheduled runs skipped because the previous run of the same probe and target was still going",
            m.probe_skipped.clone(),
        );
        r.register(
            "warden_rule_evaluation_duration_seconds",
            "How long one rule takes on one observation",
            m.rule_duration.clone(),
        );
        r.register("warden_rule_errors", "Rule evaluations that failed (script error, limit)", m.rule_errors.clone());
        r.register("warden_actions", "Actions carried out, by journal kind and outcome", m.actions.clone());
        r.register("warden_alerts_firing", "Alerts firing now, by rule and severity", m.alerts_firing.clone());
        r.register("warden_outbox_depth", "Notifications waiting to be delivered", m.outbox_depth.clone());
        r.register(
            "warden_alerts_inhibited",
            "Alerts held back now because another alert inhibits them (`inhibit` rules)",
            m.alerts_inhibited.clone(),
        );
        r.register(
            "warden_outbox_oldest_age_seconds",
            "Age of the oldest notification waiting to be delivered (0 when none)",
            m.outbox_oldest_age.clone(),
        );
        r.register(
            "warden_restarts",
            "Restart records in the store (see retention.journal), by step reached and outcome (running, ok, failed)",
            m.restarts.clone(),
        );
        r.register("warden_reloads", "Reloads tried, by result", m.reloads.clone());
        r.register(
            "warden_config_last_reload_successful",
            "Whether the last reload (or the start) applied the configuration: 1 yes, 0 rejected",
            m.reload_ok.clone(),
        );
        r.register(
            "warden_config_last_reload_success_timestamp_seconds",
            "When the configuration in force was applied (Unix time)",
            m.reload_ok_time.clone(),
        );
        r.register("warden_build_info", "Warden's version (always 1)", m.build_info.clone());
        m.build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").into() }).set(1);
        m.ha.register(&mut r);
        Metrics { registry: r, ..m }
    }
}

/// One probe × target as last seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeRun {
    /// When the last poll started.
    pub last_run: Option<DateTime<Utc>>,
    /// How long it took, in milliseconds.
    pub last_duration_ms: Option<u64>,
    /// Why it failed, if it did.
    pub last_error: Option<String>,
    /// When the next run is due (approximately, for `every` schedules).
    pub next_run: Option<DateTime<Utc>>,
    /// Polls done.
    pub runs: u64,
    /// Polls that failed.
    pub errors: u64,
    /// For a probe with `for_each: job`, its last tick over the target's jobs (a probe × target is one row, however
    /// many jobs it polls; `runs` and `errors` then count ticks and ticks with a failed poll).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOutRun>,
}

/// The last tick of a probe with `for_each: job` on one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct FanOutRun {
    /// Jobs polled in the last tick.
    pub jobs: u64,
    /// Of those, polls that failed.
    pub failed: u64,
    /// Job polls since start.
    pub polls: u64,
}

/// One rule as last seen.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleRun {
    /// Evaluations.
    pub evaluations: u64,
    /// Evaluations that failed.
    pub errors: u64,
    /// The last error, with its `file:line:col`.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// When the rule last evaluated.
    pub last_run: Option<DateTime<Utc>>,
    /// How many of its last evaluations in a row failed (0 after a good one).
    pub failing_in_a_row: u64,
}

/// A Flink job as the last answer listing it showed it (any probe whose answer has Flink's `jobs: [{jid, name,
/// state}]` shape, such as `/jobs/overview`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct JobSeen {
    /// Job name.
    pub name: String,
    /// Job id (the newest run of that name).
    pub jid: String,
    /// Flink's state (`RUNNING`, `FAILED`, …).
    pub state: String,
    /// When that run started (Unix ms), if Flink said.
    pub start_time: Option<i64>,
    /// When the answer was seen.
    pub seen: DateTime<Utc>,
}

/// How the last reload went.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReloadOutcome {
    /// Sequence number: 0 is the start, each reload adds one.
    pub seq: u64,
    /// When.
    pub time: DateTime<Utc>,
    /// Whether it applied.
    pub ok: bool,
    /// Why not (each problem as `file:line:col: message`).
    pub errors: Vec<String>,
    /// What asked for it (`start`, `file change`, `SIGHUP`, `HTTP`).
    pub trigger: String,
    /// When the configuration in force was applied.
    pub last_success: DateTime<Utc>,
}

/// The daemon's state as the server sees it. Cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct StatusHandle(Arc<Inner>);

struct Inner {
    started: DateTime<Utc>,
    metrics: Metrics,
    generation: RwLock<Option<Arc<Generation>>>,
    store: OnceLock<Arc<Store>>,
    stats: OnceLock<Arc<Stats>>,
    reload_tx: OnceLock<mpsc::Sender<Trigger>>,
    /// Replaced at each leadership term (a standby has none: pushed events are refused).
    events_tx: RwLock<Option<mpsc::Sender<super::events::PushedEvent>>>,
    /// The HA pair's view, with a PostgreSQL store (`None`: a single instance).
    ha: RwLock<Option<Arc<Mutex<crate::ha::HaView>>>>,
    server: OnceLock<std::net::SocketAddr>,
    probes: Mutex<HashMap<(String, String), ProbeRun>>,
    rules: Mutex<HashMap<String, RuleRun>>,
    jobs: Mutex<HashMap<String, Vec<JobSeen>>>,
    firing: RwLock<Vec<FiringAlert>>,
    reload: watch::Sender<Option<ReloadOutcome>>,
    ready: AtomicBool,
    dry_run: AtomicBool,
}

impl Default for StatusHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StatusHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusHandle").field("started", &self.0.started).finish_non_exhaustive()
    }
}

impl StatusHandle {
    /// A fresh handle: nothing loaded yet.
    pub fn new() -> Self {
        Self(Arc::new(Inner {
            started: Utc::now(),
            metrics: Metrics::new(),
            generation: RwLock::new(None),
            store: OnceLock::new(),
            stats: OnceLock::new(),
            reload_tx: OnceLock::new(),
            events_tx: RwLock::new(None),
            ha: RwLock::new(None),
            server: OnceLock::new(),
            probes: Mutex::new(HashMap::new()),
            rules: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            firing: RwLock::new(vec![]),
            reload: watch::channel(None).0,
            ready: AtomicBool::new(false),
            dry_run: AtomicBool::new(false),
        }))
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// When this handle (the daemon) started.
    pub fn started(&self) -> DateTime<Utc> {
        self.0.started
    }

    /// The generation in force, once one is loaded.
    pub fn generation(&self) -> Option<Arc<Generation>> {
        self.0.generation.read().clone()
    }

    /// The state store, once open.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.0.store.get().cloned()
    }

    /// The daemon's counters, once running.
    pub fn stats(&self) -> Option<Arc<Stats>> {
        self.0.stats.get().cloned()
    }

    /// The address the HTTP server listens on, once it does.
    pub fn server_addr(&self) -> Option<std::net::SocketAddr> {
        self.0.server.get().copied()
    }

    /// Records the address the HTTP server listens on.
    pub fn set_server_addr(&self, a: std::net::SocketAddr) {
        let _ = self.0.server.set(a);
    }

    /// Whether the daemon runs in dry-run mode.
    pub fn dry_run(&self) -> bool {
        self.0.dry_run.load(Ordering::Relaxed)
    }

    /// True once every probe × target of the generation in force has run at least once (and stays true).
    pub fn ready(&self) -> bool {
        if self.0.ready.load(Ordering::Relaxed) {
            return true;
        }
        let Some(g) = self.generation() else { return false };
        let probes = self.0.probes.lock();
        let all = g
            .plan
            .jobs
            .iter()
            .all(|j| probes.get(&(j.probe.clone(), j.target.clone())).is_some_and(|p| p.last_run.is_some()));
        if all {
            self.0.ready.store(true, Ordering::Relaxed);
        }
        all
    }

    /// Probe runs by `(probe, target)`.
    pub fn probes(&self) -> HashMap<(String, String), ProbeRun> {
        self.0.probes.lock().clone()
    }

    /// Rule runs by rule.
    pub fn rules(&self) -> HashMap<String, RuleRun> {
        self.0.rules.lock().clone()
    }

    /// Jobs by target, as last listed (one entry per job name: its newest run), sorted by name.
    pub fn jobs(&self) -> HashMap<String, Vec<JobSeen>> {
        self.0.jobs.lock().clone()
    }

    /// Alerts firing now.
    pub fn firing(&self) -> Vec<FiringAlert> {
        self.0.firing.read().clone()
    }

    /// The last reload's outcome (the start counts as the first).
    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.0.reload.borrow().clone()
    }

    /// Follows reload outcomes.
    pub fn watch_reloads(&self) -> watch::Receiver<Option<ReloadOutcome>> {
        self.0.reload.subscribe()
    }

    /// Asks the daemon to reload, like SIGHUP. `false` when it cannot (not started, or running without a
    /// configuration file to reload from).
    pub fn request_reload(&self) -> bool {
        self.0.reload_tx.get().is_some_and(|tx| tx.try_send(Trigger::Http).is_ok())
    }

    /// Hands a pushed event to the daemon (it is judged by the `events:` probes that take it). `false` when no
    /// daemon takes events (not started yet, or shutting down), or its queue is full.
    pub fn push_event(&self, event: super::events::PushedEvent) -> bool {
        self.0.events_tx.read().as_ref().is_some_and(|tx| tx.try_send(event).is_ok())
    }

    // ---- written by the runtime ----

    pub(super) fn set_event_sink(&self, tx: Option<mpsc::Sender<super::events::PushedEvent>>) {
        *self.0.events_tx.write() = tx;
    }

    /// The HA pair's view (role, epoch, peer); `single` without an election.
    pub fn ha(&self) -> crate::ha::HaView {
        match &*self.0.ha.read() {
            Some(v) => v.lock().clone(),
            None => crate::ha::HaView::single(),
        }
    }

    pub(super) fn set_ha(&self, view: Arc<Mutex<crate::ha::HaView>>) {
        *self.0.ha.write() = Some(view);
    }

    pub(super) fn started_with(&self, g: Arc<Generation>, store: Arc<Store>, stats: Arc<Stats>, dry_run: bool) {
        let _ = self.0.store.set(store);
        let _ = self.0.stats.set(stats);
        self.0.dry_run.store(dry_run, Ordering::Relaxed);
        *self.0.generation.write() = Some(g);
        let now = Utc::now();
        self.set_reload(ReloadOutcome {
            seq: 0,
            time: now,
            ok: true,
            errors: vec![],
            trigger: "start".into(),
            last_success: now,
        });
    }

    pub(super) fn set_reload_trigger(&self, tx: mpsc::Sender<Trigger>) {
        let _ = self.0.reload_tx.set(tx);
    }

    pub(super) fn reloaded(&self, g: Option<Arc<Generation>>, trigger: &Trigger, errors: Vec<String>) {
        let now = Utc::now();
        let prev = self.last_reload();
        let ok = g.is_some();
        if let Some(g) = g {
            *self.0.generation.write() = Some(g.clone());
            // Forget probes and rules that are gone.
            let keep: std::collections::HashSet<(String, String)> =
                g.plan.jobs.iter().map(|j| (j.probe.clone(), j.target.clone())).collect();
            self.0.probes.lock().retain(|k, _| keep.contains(k));
            self.0.rules.lock().retain(|r, _| g.plan.rules.contains_key(r));
        }
        let trigger = match trigger {
            Trigger::Changed(p) => format!("file change ({})", p.display()),
            Trigger::Signal => "SIGHUP".into(),
            Trigger::Http => "HTTP (POST /-/reload)".into(),
        };
        self.set_reload(ReloadOutcome {
            seq: prev.as_ref().map(|p| p.seq + 1).unwrap_or(0),
            time: now,
            ok,
            errors,
            trigger,
            last_success: if ok { now } else { prev.map(|p| p.last_success).unwrap_or(now) },
        });
    }

    fn set_reload(&self, o: ReloadOutcome) {
        let m = &self.0.metrics;
        m.reload_ok.set(i64::from(o.ok));
        m.reload_ok_time.set(o.last_success.timestamp_millis() as f64 / 1000.0);
        if o.seq > 0 {
            m.reloads.get_or_create(&ResultLabels { result: if o.ok { "ok" } else { "failed" }.into() }).inc();
        }
        self.0.reload.send_replace(Some(o));
    }

    pub(super) fn set_firing(&self, firing: Vec<FiringAlert>) {
        *self.0.firing.write() = firing;
    }

    /// A poll of `(probe, target)` that started at `at` and took `took`; the next is due at `next`.
    pub(super) fn polled(
        &self,
        labels: &ProbeLabels,
        at: DateTime<Utc>,
        took: Duration,
        error: Option<String>,
        next: Option<DateTime<Utc>>,
    ) {
        let errors = u64::from(error.is_some());
        self.ran(labels, at, took, errors, error, next, None);
    }

    /// The part of [`StatusHandle::polled`] and [`StatusHandle::fanned_out`] they share: the duration and error
    /// metrics (`errors` failed requests), the probe's row and its fan-out figures (`(jobs, failed)`).
    #[allow(clippy::too_many_arguments)]
    fn ran(
        &self,
        labels: &ProbeLabels,
        at: DateTime<Utc>,
        took: Duration,
        errors: u64,
        error: Option<String>,
        next: Option<DateTime<Utc>>,
        fan_out: Option<(u64, u64)>,
    ) {
        let m = &self.0.metrics;
        m.probe_duration.get_or_create(labels).observe(took.as_secs_f64());
        if errors > 0 {
            m.probe_errors.get_or_create(labels).inc_by(errors);
        }
        let mut probes = self.0.probes.lock();
        let p = probes.entry((labels.probe.clone(), labels.target.clone())).or_default();
        p.last_run = Some(at);
        p.last_duration_ms = Some(took.as_millis() as u64);
        p.runs += 1;
        p.errors += u64::from(error.is_some());
        p.last_error = error;
        p.next_run = next;
        if let Some((jobs, failed)) = fan_out {
            let f = p.fan_out.get_or_insert_with(FanOutRun::default);
            f.jobs = jobs;
            f.failed = failed;
            f.polls += jobs;
        }
    }

    /// A tick of a `for_each: job` probe on `(probe, target)` that started at `at`, took `took` and polled `jobs`
    /// jobs of which `failed` failed (`error`: the tick's failure or the first failed poll's).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fanned_out(
        &self,
        labels: &ProbeLabels,
        at: DateTime<Utc>,
        took: Duration,
        jobs: u64,
        failed: u64,
        error: Option<String>,
        next: Option<DateTime<Utc>>,
    ) {
        // A failed tick without an answer of any job counts as one failed request.
        let errors = if failed > 0 || (jobs == 0 && error.is_some()) { failed.max(1) } else { 0 };
        self.ran(labels, at, took, errors, error, next, Some((jobs, failed)));
    }

    /// An answer from `target`: if it lists Flink jobs, they become the target's jobs. When they are the jobs
    /// seen last time (the same names, ids, states and start times), only the time they were seen changes, and
    /// nothing is allocated.
    pub(super) fn saw_jobs(&self, target: &str, body: &Doc, at: DateTime<Utc>) {
        let Some(list) = body.get("jobs").and_then(|j| j.as_array()) else { return };
        if let Some(old) = self.0.jobs.lock().get_mut(target) {
            if same_jobs(old, list) {
                old.iter_mut().for_each(|j| j.seen = at);
                return;
            }
        }
        let mut by_name: BTreeMap<&str, JobSeen> = BTreeMap::new();
        for j in list.iter() {
            let Some((name, jid, state, start_time)) = flink_job(j) else {
                continue; // not Flink's shape (e.g. `/jobs`, which has no names)
            };
            let newer = by_name.get(name).is_none_or(|old| start_time > old.start_time);
            if newer {
                let seen = JobSeen { name: name.into(), jid: jid.into(), state: state.into(), start_time, seen: at };
                by_name.insert(name, seen);
            }
        }
        if by_name.is_empty() && !list.is_empty() {
            return;
        }
        self.0.jobs.lock().insert(target.to_string(), by_name.into_values().collect());
    }

    pub(super) fn skipped(&self, labels: &ProbeLabels, n: u64) {
        self.0.metrics.probe_skipped.get_or_create(labels).inc_by(n);
    }

    /// One rule's evaluation: how long it took and its error, if any.
    pub(super) fn evaluated(&self, rule: &str, at: DateTime<Utc>, took: Duration, error: Option<String>) {
        let m = &self.0.metrics;
        let labels = RuleLabels { rule: rule.to_string() };
        m.rule_duration.get_or_create(&labels).observe(took.as_secs_f64());
        if error.is_some() {
            m.rule_errors.get_or_create(&labels).inc();
        }
        let mut rules = self.0.rules.lock();
        let r = rules.entry(rule.to_string()).or_default();
        r.evaluations += 1;
        r.last_run = Some(at);
        if let Some(e) = error {
            r.errors += 1;
            r.failing_in_a_row += 1;
            r.last_error = Some(e);
            r.last_error_at = Some(at);
        } else {
            r.failing_in_a_row = 0;
        }
    }

    /// An action ended with the journalled `outcome`.
    pub(super) fn action_done(&self, kind: &str, outcome: &str) {
        let first = outcome.split([':', ' ']).next().unwrap_or("").trim();
        let outcome = if first.is_empty() { "unknown" } else { first };
        self.0.metrics.actions.get_or_create(&ActionLabels { kind: kind.into(), outcome: outcome.into() }).inc();
    }
}

/// A Flink job entry's name, id, state and start time; `None` for an entry not of Flink's shape.
fn flink_job(j: &DocValue) -> Option<(&str, &str, &str, Option<i64>)> {
    let text = |k: &str| doc::field(j, k).and_then(|v| v.as_str());
    Some((text("name")?, text("jid")?, text("state")?, doc::field(j, "start-time").and_then(|v| v.as_i64())))
}

/// Whether the jobs [`StatusHandle::saw_jobs`] would keep from `list` are `old` (sorted by name, one per name),
/// whatever when they were seen. Allocates nothing; says `false` when in doubt (then the list is read again).
fn same_jobs(old: &[JobSeen], list: &[DocValue]) -> bool {
    /// Which of `old` a kept entry of `list` matched, as bits (lists of more jobs are read again).
    const WORDS: usize = 128;
    if old.is_empty() || old.len() > WORDS * 64 {
        return false;
    }
    let mut matched = [0u64; WORDS];
    let mut n = 0;
    for j in list {
        let Some((name, jid, state, start_time)) = flink_job(j) else { continue };
        let Ok(i) = old.binary_search_by(|s| s.name.as_str().cmp(name)) else { return false };
        let s = &old[i];
        match start_time.cmp(&s.start_time) {
            // An older run of a job whose newest run is kept.
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Greater => return false,
            std::cmp::Ordering::Equal => {
                let (word, bit) = (i / 64, 1u64 << (i % 64));
                if s.jid != jid || s.state != state || matched[word] & bit != 0 {
                    return false;
                }
                matched[word] |= bit;
                n += 1;
            }
        }
    }
    n == old.len()
}

/// Restart records by `(step, outcome)` as the `warden_restarts` gauge counts them, read from the store.
pub fn restart_counts(store: &Store) -> Result<BTreeMap<(String, String), i64>, crate::store::StoreError> {
    store.with_db(|c| {
        c.query(
            "SELECT step, CASE WHEN outcome IS NULL THEN 'running' WHEN outcome = 'ok' THEN 'ok' ELSE 'failed' END,
                    COUNT(*) FROM restarts GROUP BY 1, 2",
            &[],
        )?
        .iter()
        .map(|r| Ok(((r.get::<String>(0)?, r.get::<String>(1)?), r.get::<i64>(2)?)))
        .collect()
    })
}

/// Notifications waiting to be delivered: how many, and when the oldest was queued.
pub fn outbox_backlog(store: &Store) -> Result<(i64, Option<DateTime<Utc>>), crate::store::StoreError> {
    let (n, oldest): (i64, Option<String>) = store.with_db(|c| {
        let r = c.query_one("SELECT COUNT(*), MIN(created) FROM notify_outbox WHERE status = 'pending'", &[])?;
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok((n, oldest.and_then(|t| DateTime::parse_from_rfc3339(&t).ok().map(|t| t.with_timezone(&Utc)))))
}

/// The kind and outcome of journal entry `id`.
pub fn journal_outcome(store: &Store, id: i64) -> Result<Option<(String, String)>, crate::store::StoreError> {
    store.with_db(|c| {
        c.query_opt("SELECT action, outcome FROM journal WHERE id = ?1", crate::store::args![id])?
            .map(|r| Ok((r.get(0)?, r.get(1)?)))
            .transpose()
    })
}

#[cfg(test)]
mod saw_jobs_tests {
    use super::*;

    fn overview(jobs: &[(&str, &str, &str, i64)]) -> Doc {
        let jobs: Vec<serde_json::Value> = jobs
            .iter()
            .map(|(name, jid, state, start)| {
                serde_json::json!({"jid": jid, "name": name, "state": state, "start-time": start, "tasks": {"total": 1}})
            })
            .collect();
        Doc::from_json(&serde_json::json!({ "jobs": jobs }))
    }

    fn seen(s: &StatusHandle) -> Vec<JobSeen> {
        s.0.jobs.lock()["jm"].clone()
    }

    /// Name, id, state and start time of each job seen.
    fn what(s: &StatusHandle) -> Vec<(String, String, String, Option<i64>)> {
        seen(s).into_iter().map(|j| (j.name, j.jid, j.state, j.start_time)).collect()
    }

    fn ids(s: &StatusHandle) -> Vec<(String, String)> {
        seen(s).into_iter().map(|j| (j.name, j.jid)).collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn the_same_jobs_again_only_move_the_time_seen() {
        let s = StatusHandle::new();
        let (t1, t2) = (Utc::now(), Utc::now() + chrono::Duration::seconds(5));
        let jobs = [("b", "j2", "RUNNING", 20), ("a", "j0", "CANCELED", 5), ("a", "j1", "RUNNING", 10)];
        s.saw_jobs("jm", &overview(&jobs), t1);
        let first = what(&s);
        assert_eq!(ids(&s), pairs(&[("a", "j1"), ("b", "j2")]));
        let names = s.0.jobs.lock()["jm"].iter().map(|j| j.name.as_ptr()).collect::<Vec<_>>();
        // The same jobs in another order: the kept entries are the same ones, not new ones.
        let again = [("a", "j1", "RUNNING", 10), ("a", "j0", "CANCELED", 5), ("b", "j2", "RUNNING", 20)];
        s.saw_jobs("jm", &overview(&again), t2);
        assert_eq!(s.0.jobs.lock()["jm"].iter().map(|j| j.name.as_ptr()).collect::<Vec<_>>(), names);
        assert!(seen(&s).iter().all(|j| j.seen == t2));
        assert_eq!(what(&s), first);
    }

    #[test]
    fn changed_jobs_are_read_again() {
        let s = StatusHandle::new();
        let t = Utc::now();
        let base = [("a", "j1", "RUNNING", 10), ("b", "j2", "RUNNING", 20)];
        let cases: [&[(&str, &str, &str, i64)]; 5] = [
            &[("a", "j1", "FAILED", 10), ("b", "j2", "RUNNING", 20)],
            &[("a", "j1", "RUNNING", 10)],
            &[("a", "j1", "RUNNING", 10), ("b", "j2", "RUNNING", 20), ("c", "j3", "RUNNING", 30)],
            &[("a", "j1", "RUNNING", 10), ("b", "j2", "RUNNING", 20), ("b", "j4", "RUNNING", 25)],
            &[("a", "j1", "RUNNING", 10), ("a", "j1", "RUNNING", 10)],
        ];
        let want: [&[(&str, &str)]; 5] = [
            &[("a", "j1"), ("b", "j2")],
            &[("a", "j1")],
            &[("a", "j1"), ("b", "j2"), ("c", "j3")],
            &[("a", "j1"), ("b", "j4")],
            &[("a", "j1")],
        ];
        for (case, want) in cases.iter().zip(want) {
            s.saw_jobs("jm", &overview(&base), t);
            s.saw_jobs("jm", &overview(case), t);
            assert_eq!(ids(&s), pairs(want), "{case:?}");
        }
        s.saw_jobs("jm", &overview(&base), t);
        s.saw_jobs("jm", &overview(&[("a", "j1", "FAILED", 10), ("b", "j2", "RUNNING", 20)]), t);
        assert_eq!(seen(&s)[0].state, "FAILED");
        // An answer that lists no Flink jobs (another shape) leaves them as they were.
        s.saw_jobs("jm", &Doc::from_json(&serde_json::json!({"jobs": [{"id": "x", "status": "RUNNING"}]})), t);
        assert_eq!(seen(&s).len(), 2);
    }
}
