//! The daemon: one task per probe × target, rule evaluation on blocking threads, one dispatcher task, actions on
//! a task tracker, and a shutdown that stops polling at once and gives running actions a grace period.
//!
//! ```text
//! probe task ──observe──► rules (spawn_blocking) ──(origin, verdict)──► dispatcher task ──► executor tasks
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::action::log::AlertLog;
use crate::action::Executor;
use crate::clock::Clock;
use crate::dispatch::{Dispatcher, Origin};
use crate::event::{Event, Events};
use crate::fetch::{ClientPool, HttpRequest, TargetClient};
use crate::plan::{Plan, PlannedRule, ProbeJob};
use crate::script::{self, EvalInput, FollowUp, FollowUpAnswer, ScriptEngine, TargetInfo, Verdict};
use crate::store::{Store, StoreError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A target's HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::fetch::ClientError),
    /// The notification subsystem could not start.
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Journal what would happen; act never.
    pub dry_run: bool,
    /// The clock rules and the dispatcher read.
    pub clock: Clock,
    /// Where progress is announced.
    pub events: Events,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { dry_run: false, clock: Clock::System, events: Events::default() }
    }
}

/// Counters, for the shutdown summary and the status API.
#[derive(Debug, Default)]
pub struct Stats {
    /// Polls done.
    pub polls: AtomicU64,
    /// Polls that failed.
    pub poll_errors: AtomicU64,
    /// Scheduled runs skipped because the previous run of the same probe × target was still going.
    pub skipped_runs: AtomicU64,
    /// Rule evaluations.
    pub evaluations: AtomicU64,
    /// Rule evaluations that failed (script error, limit).
    pub rule_errors: AtomicU64,
    /// Actions carried out.
    pub actions: AtomicU64,
}

type RuleStates = Arc<Mutex<HashMap<(String, String), serde_json::Value>>>;

struct Shared {
    engine: Arc<ScriptEngine>,
    store: Arc<Store>,
    states: RuleStates,
    stats: Arc<Stats>,
    clock: Clock,
    events: Events,
    tx: mpsc::Sender<(Origin, Verdict)>,
}

/// Runs the daemon until `shutdown` completes. Returns the counters.
pub async fn run(
    plan: Plan,
    engine: ScriptEngine,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<Stats>, RuntimeError> {
    let cfg = &plan.loaded.config;
    let store = Arc::new(Store::open(&cfg.state_dir)?);
    let interrupted = store.mark_interrupted(opts.clock.now())?;
    if interrupted > 0 {
        tracing::warn!("{interrupted} action(s) were running when Warden last stopped; journalled as interrupted");
    }
    let mut pool = ClientPool::default();
    let mut clients = HashMap::new();
    for t in &cfg.targets {
        clients.insert(t.name.clone(), Arc::new(TargetClient::new(t, &mut pool)?));
    }
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(1024);
    let shared = Arc::new(Shared {
        engine: Arc::new(engine),
        store: store.clone(),
        states: Arc::new(Mutex::new(store.rule_states()?)),
        stats: stats.clone(),
        clock: opts.clock.clone(),
        events: opts.events.clone(),
        tx,
    });
    let alert_log = cfg.alert_log.clone().unwrap_or_else(|| cfg.state_dir.join("alerts.jsonl"));
    let notifier = Arc::new(crate::notify::Notifier::new(
        cfg.notify.clone(),
        store.clone(),
        opts.clock.clone(),
        opts.events.clone(),
    )?);
    let notify_stop = CancellationToken::new();
    let notify_task = tokio::spawn(notifier.clone().run(notify_stop.clone()));
    let executor = Arc::new(Executor {
        commands: cfg.commands.clone(),
        alert_log: AlertLog::new(alert_log),
        workdir: plan.loaded.base_dir.clone(),
        store: store.clone(),
        clock: opts.clock.clone(),
        events: opts.events.clone(),
        notifier: Some(notifier),
        clients: clients.clone(),
        jobs: cfg.jobs.clone(),
        restart_poll: Duration::from_secs(1),
    });
    let dispatcher = Dispatcher::new(cfg.dispatch.clone(), opts.dry_run, &store)?;

    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let probes = TaskTracker::new();
    let actions = TaskTracker::new();
    tracing::info!(
        jobs = plan.jobs.len(),
        rules = plan.rules.len(),
        targets = cfg.targets.len(),
        dry_run = opts.dry_run,
        state = %store.path().display(),
        "warden is watching"
    );
    for job in &plan.jobs {
        let client = clients[&job.target].clone();
        let rules: Vec<Arc<PlannedRule>> = job.rules.iter().filter_map(|r| plan.rules.get(r).cloned()).collect();
        probes.spawn(probe_loop(job.clone(), client, rules, shared.clone(), stop.clone()));
    }
    drop(shared);
    probes.close();

    {
        // Restarts that were in progress when Warden stopped continue from their last saved step.
        let ex = executor.clone();
        let k = kill.clone();
        actions.spawn(async move { ex.resume_restarts(k).await });
    }
    let disp = tokio::spawn(dispatch_loop(
        rx,
        dispatcher,
        store.clone(),
        executor,
        actions.clone(),
        kill.clone(),
        stats.clone(),
    ));

    shutdown.await;
    tracing::info!("shutting down: polling stops; running actions get {:?} to finish", cfg.shutdown_grace);
    stop.cancel();
    probes.wait().await;
    let _ = disp.await; // the channel closed: every verdict was dispatched
    actions.close();
    if tokio::time::timeout(cfg.shutdown_grace, actions.wait()).await.is_err() {
        tracing::warn!("grace period over: killing running actions");
        kill.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), actions.wait()).await;
    }
    notify_stop.cancel();
    let _ = notify_task.await;
    tracing::info!(
        polls = stats.polls.load(Ordering::Relaxed),
        poll_errors = stats.poll_errors.load(Ordering::Relaxed),
        skipped_runs = stats.skipped_runs.load(Ordering::Relaxed),
        rule_errors = stats.rule_errors.load(Ordering::Relaxed),
        actions = stats.actions.load(Ordering::Relaxed),
        "warden stopped"
    );
    Ok(stats)
}

async fn dispatch_loop(
    mut rx: mpsc::Receiver<(Origin, Verdict)>,
    mut dispatcher: Dispatcher,
    store: Arc<Store>,
    executor: Arc<Executor>,
    actions: TaskTracker,
    kill: CancellationToken,
    stats: Arc<Stats>,
) {
    while let Some((origin, verdict)) = rx.recv().await {
        match dispatcher.process(&origin, &verdict, &store) {
            Ok(planned) if planned.is_empty() => {}
            Ok(planned) => {
                // One evaluation's actions run in order (the alert goes out before the relaunch); different
                // evaluations' actions run side by side.
                stats.actions.fetch_add(planned.len() as u64, Ordering::Relaxed);
                let ex = executor.clone();
                let k = kill.clone();
                actions.spawn(async move {
                    for p in planned {
                        ex.execute(p, k.clone()).await;
                    }
                });
            }
            Err(e) => tracing::error!(rule = %origin.rule, target = %origin.target, "cannot journal: {e}"),
        }
    }
}

async fn probe_loop(
    job: ProbeJob,
    client: Arc<TargetClient>,
    rules: Vec<Arc<PlannedRule>>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let target_info = TargetInfo { name: client.name.clone(), url: client.base.clone(), labels: client.labels.clone() };
    let target_dyn = script::target_to_dynamic(&target_info);
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

        let obs_dyn = script::obs_to_dynamic(&obs);
        let sh = shared.clone();
        let rules2 = rules.clone();
        let client2 = client.clone();
        let probe = job.probe.clone();
        let target_dyn2 = target_dyn.clone();
        let max_body = job.request.max_body;
        let handle = tokio::runtime::Handle::current();
        let verdicts = tokio::task::spawn_blocking(move || {
            evaluate_all(&sh, &rules2, &obs_dyn, &target_dyn2, &probe, &client2, handle, max_body)
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
        let params = script::params_to_dynamic(&r.params);
        let now = sh.clock.now();
        let follow = HttpFollowUp { client: client.clone(), handle: handle.clone(), max_body };
        sh.stats.evaluations.fetch_add(1, Ordering::Relaxed);
        let input = EvalInput { obs, target, params: &params, state: &before, now, follow_up: Some(Box::new(follow)) };
        match sh.engine.evaluate(&r.compiled, input) {
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
