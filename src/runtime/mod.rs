//! The daemon: one task per probe × target, rule evaluation on blocking threads, one dispatcher task, actions on
//! a task tracker, and a shutdown that stops polling at once and gives running actions a grace period.
//!
//! ```text
//! probe task ──observe──► rules (an evaluation slot: a blocking thread) ──verdicts of one poll──► dispatcher task ──► executor tasks
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::action::log::AlertLog;
use crate::action::Executor;
use crate::clock::Clock;
use crate::dispatch::Dispatcher;
use crate::event::{Event, Events};
use crate::model::Origin;
use crate::plan::Plan;
use crate::script::{ScriptEngine, Verdict};
use crate::store::{Store, StoreError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another Warden owns the state directory.
    #[error(transparent)]
    Locked(#[from] crate::store::lock::LockError),
    /// A target's HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::fetch::ClientError),
    /// The recording file could not be opened.
    #[error("cannot open the recording file `{0}`: {1}")]
    Record(String, String),
    /// The notification subsystem could not start.
    #[error(transparent)]
    Notify(#[from] crate::notify::NotifyError),
    /// The HTTP server could not listen on the address `server.listen` names.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// The leader election cannot work with the store's URL.
    #[error(transparent)]
    Election(#[from] crate::ha::elector::ElectionError),
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
    /// Reload from this configuration on file changes and SIGHUP (`None`: never reload).
    pub reload: Option<ReloadSource>,
    /// Append every observation to this file (JSON lines) for `warden replay`.
    pub record: Option<std::path::PathBuf>,
    /// Cancelled to stop at once (`warden run`: a second SIGINT/SIGTERM): during the shutdown, running actions are
    /// killed (commands' process groups, journalled `interrupted: …`) without waiting out `shutdown_grace`.
    /// Never cancelled by default.
    pub force: CancellationToken,
    /// Where the daemon tells what it knows about itself (read by the HTTP server and tests).
    pub status: StatusHandle,
    /// Start the HTTP server the configuration's `server` section describes (`warden run` does; tests and the
    /// demo usually do not).
    pub serve: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            clock: Clock::System,
            events: Events::default(),
            reload: None,
            record: None,
            force: CancellationToken::new(),
            status: StatusHandle::new(),
            serve: false,
        }
    }
}

/// How long a forced stop waits for killed actions to journal how they ended.
const FORCED_WAIT: Duration = Duration::from_secs(3);

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
    /// Reloads applied.
    pub reloads: AtomicU64,
    /// Reloads rejected (the running set stayed).
    pub failed_reloads: AtomicU64,
}

type RuleStates = Arc<Mutex<HashMap<crate::store::RuleStateKey, serde_json::Value>>>;

struct Shared {
    current: Arc<std::sync::RwLock<Arc<Generation>>>,
    /// Read while a probe commits an evaluation (saves rule state, hands its verdict to the dispatcher); written
    /// while a reload swaps the generation and retires the rules it removed. So no evaluation of a removed or
    /// changed rule gets in after the swap.
    gate: tokio::sync::RwLock<()>,
    store: Arc<Store>,
    states: RuleStates,
    stats: Arc<Stats>,
    clock: Clock,
    events: Events,
    /// Verdicts for the dispatcher: the verdicts of one evaluation (a poll's rules) travel together, so a quiet
    /// poll wakes the dispatcher task once, not once per rule.
    tx: mpsc::Sender<Vec<(Origin, Verdict)>>,
    record: Option<Arc<crate::action::log::RecordWriter>>,
    status: StatusHandle,
    /// The latest `/jobs/overview` answer of each target, for the probes that fan out over its jobs.
    overviews: fanout::Overviews,
    /// How soon after its start a probe polls first (`None`: within its interval, spread at random). A leader that
    /// just took over polls within [`FIRST_TICK_AS_LEADER`], so a failover does not wait a whole interval.
    first_tick: Option<Duration>,
    /// The origin of the grid the probes' due times are put on ([`crate::schedule::Ticker::on_grid`]): probes of
    /// one interval come due together, and a poll shares its wake-up with the others of its instant.
    grid: tokio::time::Instant,
    /// How many evaluations run at once.
    evaluators: evaluators::Evaluators,
}

/// How soon a new leader's probes poll first.
const FIRST_TICK_AS_LEADER: Duration = Duration::from_secs(1);

impl Shared {
    /// The ticker of a probe loop: due on the daemon's grid (sized for the generation's loops), the first run within
    /// [`FIRST_TICK_AS_LEADER`] for a leader that just took over.
    fn ticker(&self, schedule: &crate::schedule::Schedule) -> crate::schedule::Ticker {
        let loops = self.generation().plan.jobs.len();
        crate::schedule::Ticker::on_grid(schedule, self.clock.clone(), self.first_tick, self.grid, loops)
    }

    fn generation(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Where a reload reads from, and how changes are noticed.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// `warden.yaml`.
    pub config: std::path::PathBuf,
}

impl ReloadSource {
    /// What to watch for generation `g`: this configuration file and `g`'s pack directories, absolute but with
    /// symlinks kept (the watcher follows them itself, again after each change).
    fn watched(&self, g: &Generation) -> crate::reload::Watched {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        crate::reload::Watched {
            config: abs(&self.config),
            dirs: crate::reload::pack_dirs(&g.plan.loaded.config.pack_paths, &abs(&g.plan.loaded.base_dir)),
        }
    }
}

/// Runs the daemon until `shutdown` completes. Returns the counters.
///
/// With the default SQLite store the daemon acts from the start (role `single`). With a PostgreSQL store it is
/// one of an HA pair ([`crate::ha`]): it starts as the standby, with its configuration loaded, its clients built
/// and its server answering, and acts only during a *term*, from the moment it takes the lease until it loses or
/// releases it. Everything that acts (probes and rules, the dispatcher, actions, the outbox sender, the take-over
/// of orphaned restarts, self-alerts, pruning) belongs to the term and stops with it.
pub async fn run(
    plan: Plan,
    engine: ScriptEngine,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<Arc<Stats>, RuntimeError> {
    let cfg = plan.loaded.config.clone();
    // One owner per state directory, held until this function returns (or the process dies).
    let _lock = crate::store::lock::StateLock::acquire(&cfg.state_dir)?;
    let store = Arc::new(Store::open_configured(&cfg.store, &cfg.state_dir)?);
    let generation = Arc::new(Generation::new(plan, engine, None)?);
    let stats = Arc::new(Stats::default());
    let record = match &opts.record {
        Some(p) => Some(Arc::new(
            crate::action::log::RecordWriter::create(p, cfg.retention.recordings)
                .map_err(|e| RuntimeError::Record(p.display().to_string(), e.to_string()))?,
        )),
        None => None,
    };
    let current = Arc::new(std::sync::RwLock::new(generation.clone()));
    let notifier = Arc::new(
        crate::notify::Notifier::new(
            cfg.notify.clone(),
            &cfg.targets,
            store.clone(),
            opts.clock.clone(),
            opts.events.clone(),
        )?
        .with_inhibit_rules(generation.plan.inhibit.clone()),
    );
    let make_executor = |g: &Generation| {
        let c = &g.plan.loaded.config;
        Arc::new(Executor {
            commands: c.commands.clone(),
            alert_log: AlertLog::with_rotation(
                c.alert_log.clone().unwrap_or_else(|| c.state_dir.join("alerts.jsonl")),
                c.retention.alert_log,
            ),
            workdir: g.plan.loaded.base_dir.clone(),
            store: store.clone(),
            clock: opts.clock.clone(),
            events: opts.events.clone(),
            notifier: Some(notifier.clone()),
            clients: g.clients.clone(),
            jobs: c.jobs.clone(),
            restart_poll: Duration::from_secs(1),
        })
    };
    // Bounded work: the limits outlive every executor a reload builds (actions started by the old one still count).
    let limits = crate::action::limits::ActionLimits::install(&store, &cfg.dispatch);
    let executor = Arc::new(std::sync::RwLock::new(make_executor(&generation)));
    let (policy_tx, _) = tokio::sync::watch::channel(cfg.dispatch.clone());

    // The election, with a PostgreSQL store; without one this instance acts from the start.
    let election = match ha::postgres_url(&cfg) {
        Some(url) => {
            let ecfg = crate::ha::ElectorConfig::new(url, &cfg.ha, crate::action::restart::owner_id());
            let e = crate::ha::Election::start(ecfg, opts.status.metrics().ha.clone())?;
            opts.status.set_ha(e.view_handle());
            Some(e)
        }
        None => {
            opts.status.metrics().ha.set_role(crate::ha::Role::Single);
            None
        }
    };
    let guard = election.as_ref().map(|e| e.guard.clone()).unwrap_or_else(crate::ha::LeaseGuard::always);
    let mut leadership = election.as_ref().map(|e| e.leadership.clone());

    // What the server and `warden status` read; the server itself (if asked for) starts once the store is ours.
    opts.status.started_with(generation.clone(), store.clone(), stats.clone(), opts.dry_run);
    let server_stop = CancellationToken::new();
    let server = match opts.serve {
        true => crate::server::start(&cfg.server, opts.status.clone(), server_stop.clone()).await?,
        false => None,
    };
    tracing::info!(
        jobs = generation.plan.jobs.len(),
        rules = generation.plan.rules.len(),
        targets = cfg.targets.len(),
        dry_run = opts.dry_run,
        state = %store.path().display(),
        role = if election.is_some() { "standby" } else { "single" },
        "warden is watching"
    );
    let env = TermEnv {
        current: current.clone(),
        store: store.clone(),
        stats: stats.clone(),
        record,
        notifier: notifier.clone(),
        executor: executor.clone(),
        policy: policy_tx.clone(),
        guard: guard.clone(),
        opts: opts.clone(),
    };
    let mut term = match &election {
        None => Some(Term::start(&env, &crate::ha::Leadership::single()).await?),
        Some(_) => None,
    };

    // Reload triggers: file changes (if watching) and SIGHUP.
    let (reload_tx, mut reload_rx) = mpsc::channel::<crate::reload::Trigger>(8);
    let mut watch = None;
    if let Some(src) = &opts.reload {
        crate::reload::on_sighup(reload_tx.clone());
        if cfg.reload.watch {
            let watched = src.watched(&generation);
            match crate::reload::watch(watched.clone(), &cfg.reload, reload_tx.clone()) {
                Ok(h) => watch = Some(h),
                Err(e) => tracing::warn!("hot reload by file watching is off: {e}; SIGHUP still reloads"),
            }
            // What changed between loading the plan and arming the watcher (2 s of slack for coarse file times).
            let since = generation.plan.loaded_at.checked_sub(Duration::from_secs(2)).unwrap_or(std::time::UNIX_EPOCH);
            if let Some(p) = crate::reload::changed_since(&watched, since) {
                let _ = reload_tx.try_send(crate::reload::Trigger::Changed(p));
            }
        }
    }
    let secrets_stop = CancellationToken::new();
    if opts.reload.is_some() {
        opts.status.set_reload_trigger(reload_tx.clone());
        // Rotated token files (a projected service-account token) take effect without anyone asking.
        tokio::spawn(watch_secret_files(current.clone(), reload_tx.clone(), secrets_stop.clone()));
    }
    drop(reload_tx);

    tokio::pin!(shutdown);
    // A promotion whose term could not start (the store failed) is tried again while the lease holds.
    let mut retry_term: Option<tokio::time::Instant> = None;
    loop {
        let retry_at = retry_term;
        tokio::select! {
            _ = &mut shutdown => break,
            changed = async { leadership.as_mut().expect("guarded").changed().await }, if leadership.is_some() => {
                if changed.is_err() {
                    tracing::error!("HA: the election stopped; this instance no longer acts");
                    leadership = None;
                    if let Some(t) = term.take() {
                        t.stop_now().await;
                    }
                    continue;
                }
                let l = leadership.as_mut().expect("guarded").borrow_and_update().clone();
                let epoch = term.as_ref().and_then(|t| t.epoch);
                if let Some(t) = term.take_if(|_| !l.acts() || l.epoch != epoch) {
                    t.stop_now().await;
                }
                retry_term = None;
                if l.acts() && term.is_none() {
                    match Term::start(&env, &l).await {
                        Ok(t) => term = Some(t),
                        Err(e) => {
                            tracing::error!("HA: cannot start acting as the leader (tried again in 1s): {e}");
                            retry_term = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
            }
            _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {
                retry_term = None;
                let l = leadership.as_ref().map(|r| r.borrow().clone());
                if let Some(l) = l.filter(|l| l.acts() && term.is_none() && guard.holds()) {
                    match Term::start(&env, &l).await {
                        Ok(t) => term = Some(t),
                        Err(e) => {
                            tracing::error!("HA: cannot start acting as the leader (tried again in 1s): {e}");
                            retry_term = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
            }
            Some(trigger) = reload_rx.recv() => {
                let Some(src) = &opts.reload else { continue };
                let started = std::time::Instant::now();
                let swap = Swap {
                    current: &current,
                    term: term.as_mut(),
                    executor: &executor,
                    make_executor: &make_executor,
                    policy: &policy_tx,
                    limits: limits.limits(),
                    notifier: &notifier,
                    watch: watch.as_ref(),
                };
                let outcome = reload(src, swap).await;
                let took = started.elapsed();
                match &outcome {
                    Ok(jobs) => {
                        stats.reloads.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(trigger = ?trigger, jobs, took_ms = took.as_millis() as u64, "reloaded");
                    }
                    Err(errors) => {
                        stats.failed_reloads.fetch_add(1, Ordering::Relaxed);
                        for e in errors {
                            tracing::error!("{e}");
                        }
                        tracing::error!(trigger = ?trigger, problems = errors.len(), "reload rejected: Warden keeps running with what it had");
                    }
                }
                let applied = outcome.is_ok().then(|| current.read().unwrap_or_else(|p| p.into_inner()).clone());
                opts.status.reloaded(applied, &trigger, outcome.as_ref().err().cloned().unwrap_or_default());
                opts.events.send(Event::Reloaded { ok: outcome.is_ok(), errors: outcome.err().unwrap_or_default(), took });
            }
        }
    }

    secrets_stop.cancel();
    if let Some(t) = term.take() {
        tracing::info!("shutting down: polling stops; running actions get {:?} to finish", cfg.shutdown_grace);
        t.stop_graceful(cfg.shutdown_grace, &opts.force).await;
    }
    // Acting has stopped: the lease goes, so the standby takes over at its next try.
    if let Some(e) = election {
        e.stop().await;
    }
    server_stop.cancel();
    if let Some(server) = server {
        tokio::select! {
            _ = server => {}
            _ = opts.force.cancelled() => {}
        }
    }
    tracing::info!(
        polls = stats.polls.load(Ordering::Relaxed),
        poll_errors = stats.poll_errors.load(Ordering::Relaxed),
        skipped_runs = stats.skipped_runs.load(Ordering::Relaxed),
        rule_errors = stats.rule_errors.load(Ordering::Relaxed),
        actions = stats.actions.load(Ordering::Relaxed),
        reloads = stats.reloads.load(Ordering::Relaxed),
        "warden stopped"
    );
    Ok(stats)
}

/// What every term is started from: the parts of the daemon that outlive a change of role.
struct TermEnv {
    current: Arc<std::sync::RwLock<Arc<Generation>>>,
    store: Arc<Store>,
    stats: Arc<Stats>,
    record: Option<Arc<crate::action::log::RecordWriter>>,
    notifier: Arc<crate::notify::Notifier>,
    executor: Arc<std::sync::RwLock<Arc<Executor>>>,
    policy: tokio::sync::watch::Sender<crate::config::DispatchConfig>,
    guard: crate::ha::LeaseGuard,
    opts: RunOptions,
}

/// One stretch of acting: a single instance's whole run, or a leader's time between taking and losing the lease.
struct Term {
    /// The epoch it acts under (`None`: a single instance).
    epoch: Option<i64>,
    shared: Arc<Shared>,
    tasks: HashMap<(String, String), (String, CancellationToken)>,
    probes: TaskTracker,
    actions: TaskTracker,
    stop: CancellationToken,
    kill: CancellationToken,
    notify_stop: CancellationToken,
    notify_task: tokio::task::JoinHandle<()>,
    disp: tokio::task::JoinHandle<()>,
}

impl Term {
    /// Starts acting as `l` says: fences the store with the term's epoch, takes over what the previous term (or a
    /// killed Warden) left (restarts, commands, the outbox), then starts the probes, the dispatcher and the rest.
    async fn start(env: &TermEnv, l: &crate::ha::Leadership) -> Result<Term, RuntimeError> {
        let (store, opts) = (&env.store, &env.opts);
        let now = opts.clock.now();
        if let Some(epoch) = l.epoch {
            ha::fence(store, epoch, &l.holder).await?;
            let predecessors = l.predecessors.clone();
            let released =
                store.call(move |s| crate::ha::handover::release_predecessors_restarts(s, &predecessors)).await?;
            if !released.is_empty() {
                tracing::info!(restarts = ?released, epoch, "HA: taking over the restarts the previous leader drove");
            }
        }
        // Commands a killed Warden (or the previous leader) left behind: journalled for what became of them, the
        // running ones followed.
        let (left_running, interrupted) = store
            .call(move |s| {
                let left = crate::action::leftover::reconcile(s, now)?;
                Ok::<_, StoreError>((left, s.mark_interrupted(now)?))
            })
            .await?;
        if interrupted > 0 {
            tracing::warn!("{interrupted} action(s) were running when Warden last stopped; journalled as interrupted");
        }
        let (tx, rx) = mpsc::channel(1024);
        let states = store.call(|s| s.all_rule_states()).await?;
        let shared = Arc::new(Shared {
            current: env.current.clone(),
            gate: tokio::sync::RwLock::new(()),
            store: store.clone(),
            states: Arc::new(Mutex::new(states)),
            stats: env.stats.clone(),
            clock: opts.clock.clone(),
            events: opts.events.clone(),
            tx,
            record: env.record.clone(),
            status: opts.status.clone(),
            overviews: fanout::Overviews::default(),
            first_tick: l.epoch.map(|_| FIRST_TICK_AS_LEADER),
            grid: tokio::time::Instant::now(),
            evaluators: evaluators::Evaluators::new(),
        });
        let generation = shared.generation();
        let policy = generation.plan.loaded.config.dispatch.clone();
        let dry_run = opts.dry_run;
        let dispatcher = store.call(move |s| Dispatcher::new(policy, dry_run, s)).await?;
        let notify_stop = CancellationToken::new();
        let notify_task = tokio::spawn(env.notifier.clone().run(notify_stop.clone()));
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let probes = TaskTracker::new();
        let actions = TaskTracker::new();
        let mut tasks = HashMap::new();
        spawn_jobs(&generation, &mut tasks, &probes, &shared, &stop);
        // Restarts that were in progress when Warden (or the previous leader) stopped, or whose driver died since,
        // continue from their step.
        actions.spawn(orphans::adopt_orphans(env.executor.clone(), orphans::ORPHAN_SCAN, stop.clone(), kill.clone()));
        tokio::spawn(crate::action::leftover::watch(
            store.clone(),
            left_running,
            opts.clock.clone(),
            crate::action::leftover::WATCH_EVERY,
            stop.clone(),
        ));
        // Bounded growth: the store is pruned by the `retention` of the generation in force at each round.
        tokio::spawn(prune_loop(store.clone(), shared.clone(), stop.clone()));
        // Events pushed to `POST /api/events`, judged by the `events:` probes.
        let (events_tx, events_rx) = mpsc::channel(events::QUEUE);
        opts.status.set_event_sink(Some(events_tx));
        probes.spawn(events::events_loop(events_rx, shared.clone(), stop.clone()));
        // Warden watching itself (`self_alerts`).
        tokio::spawn(self_alerts::watch_self(shared.clone(), stop.clone()));
        let disp = tokio::spawn(dispatch_loop(
            rx,
            dispatcher,
            store.clone(),
            env.executor.clone(),
            env.policy.subscribe(),
            actions.clone(),
            kill.clone(),
            env.stats.clone(),
            opts.status.clone(),
            env.guard.clone(),
        ));

        // Rules that existed when Warden last ran and no longer do: their state goes, their alerts resolve. (The tasks
        // run by now: a store error here is reported, not returned, so that the term can still be stopped.)
        match store.call(|s| Ok::<_, StoreError>((s.dispatch_states()?, s.all_rule_states()?))).await {
            Err(e) => tracing::error!("cannot read which rules were removed since the last start: {e}"),
            Ok((dispatch, rules)) => {
                let kept = |v: &serde_json::Value| v.as_object().is_none_or(|m| !m.is_empty());
                let mut gone: Vec<(String, String)> =
                    dispatch.into_iter().filter(|(_, v)| kept(v)).map(|(k, _)| k).collect();
                gone.extend(rules.into_keys().map(|k| (k.rule, k.target)));
                gone.retain(|(rule, _)| !generation.plan.rules.contains_key(rule) && rule != self_alerts::SELF_RULE);
                gone.sort();
                gone.dedup();
                retire_rules(&gone, &generation, &shared, "warden/start").await;
            }
        }
        Ok(Term { epoch: l.epoch, shared, tasks, probes, actions, stop, kill, notify_stop, notify_task, disp })
    }

    /// Stops at once: the lease is lost (or about to be), so nothing may go on acting. Running actions are killed
    /// (their journal entries are finished by the next leader, which the fence lets write), deliveries in flight
    /// are given up (they stay queued for the next leader).
    async fn stop_now(self) {
        self.shared.status.set_event_sink(None);
        self.stop.cancel();
        self.kill.cancel();
        self.notify_stop.cancel();
        self.probes.close();
        self.actions.close();
        let Term { shared, probes, actions, disp, mut notify_task, .. } = self;
        drop(shared);
        let wind_down = async {
            probes.wait().await;
            let _ = disp.await;
            actions.wait().await;
        };
        let _ = tokio::time::timeout(FORCED_WAIT, wind_down).await;
        if tokio::time::timeout(Duration::from_millis(200), &mut notify_task).await.is_err() {
            notify_task.abort();
        }
        tracing::info!("acting stopped: this instance is the standby");
    }

    /// Stops for a shutdown: polling stops at once, running actions get `grace` to finish (or none once `force`
    /// fires), the outbox sender finishes the deliveries in flight.
    async fn stop_graceful(self, grace: Duration, force: &CancellationToken) {
        self.shared.status.set_event_sink(None);
        self.stop.cancel();
        self.probes.close();
        let Term { shared, probes, actions, disp, kill, notify_stop, notify_task, .. } = self;
        let graceful = async {
            probes.wait().await;
            drop(shared);
            let _ = disp.await; // the channel closed: every verdict was dispatched
            actions.close();
            tokio::time::timeout(grace, actions.wait()).await.is_ok()
        };
        let finished = tokio::select! {
            done = graceful => done,
            _ = force.cancelled() => false,
        };
        if !finished {
            actions.close();
            let wait = if force.is_cancelled() {
                tracing::warn!("stopping at once: killing running actions");
                FORCED_WAIT
            } else {
                tracing::warn!("grace period over: killing running actions");
                Duration::from_secs(10)
            };
            kill.cancel();
            let killed = tokio::time::timeout(wait, actions.wait());
            tokio::pin!(killed);
            tokio::select! {
                _ = &mut killed => {}
                _ = force.cancelled(), if !force.is_cancelled() => {
                    let _ = tokio::time::timeout(FORCED_WAIT, actions.wait()).await;
                }
            }
        }
        notify_stop.cancel();
        tokio::select! {
            _ = notify_task => {}
            _ = force.cancelled() => {}
        }
    }
}

/// Starts, keeps or stops probe tasks so that exactly the generation's jobs run. Unchanged jobs keep their task
/// (and their schedule): a reload never makes them miss a poll.
fn spawn_jobs(
    g: &Arc<Generation>,
    tasks: &mut HashMap<(String, String), (String, CancellationToken)>,
    probes: &TaskTracker,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) {
    let mut keep = std::collections::HashSet::new();
    for job in &g.plan.jobs {
        let key = (job.probe.clone(), job.target.clone());
        let sig = job_signature(job, g);
        keep.insert(key.clone());
        if let Some((old_sig, _)) = tasks.get(&key) {
            if *old_sig == sig {
                continue;
            }
        }
        if let Some((_, token)) = tasks.remove(&key) {
            token.cancel();
        }
        let token = stop.child_token();
        let client = g.clients[&job.target].clone();
        match &job.for_each {
            None => probes.spawn(probe_loop(job.clone(), client, shared.clone(), token.clone())),
            Some(fe) => {
                probes.spawn(fanout::fan_out_loop(job.clone(), fe.clone(), client, shared.clone(), token.clone()))
            }
        };
        tasks.insert(key, (sig, token));
    }
    tasks.retain(|k, (_, token)| {
        let kept = keep.contains(k);
        if !kept {
            token.cancel();
        }
        kept
    });
}

/// Everything a reload swaps, restarts or tells.
struct Swap<'a> {
    current: &'a std::sync::RwLock<Arc<Generation>>,
    /// The term acting now, if any (a standby has none: it swaps the generation and nothing else).
    term: Option<&'a mut Term>,
    executor: &'a std::sync::RwLock<Arc<Executor>>,
    make_executor: &'a (dyn Fn(&Generation) -> Arc<Executor> + Sync),
    policy: &'a tokio::sync::watch::Sender<crate::config::DispatchConfig>,
    limits: &'a crate::action::limits::ActionLimits,
    notifier: &'a crate::notify::Notifier,
    watch: Option<&'a crate::reload::WatchHandle>,
}

/// Reloads from `src`: loads and checks everything, then swaps it all at once, or changes nothing and says why
/// (every problem, each as `file:line:col`). Returns the new generation's number of probe jobs.
///
/// The dispatcher is not part of a generation: its memory (cooldowns, pending `for`, firing alerts, storm-guard
/// counts) survives every reload; only its policy changes. Rules whose source changed start with a fresh state;
/// rules that are gone lose their state and their firing alerts resolve, once. A standby only swaps what it keeps
/// loaded: the rule states and alerts in the store are the leader's.
async fn reload(src: &ReloadSource, s: Swap<'_>) -> Result<usize, Vec<String>> {
    let old = s.current.read().unwrap_or_else(|p| p.into_inner()).clone();
    let g = load_generation(src.config.clone(), &old).await?;
    let c = &g.plan.loaded.config;
    // The one step that can still fail comes before anything is swapped. Applied on every reload (it is one
    // atomic swap inside the notifier): a changed secret, which prints as `***`, must take effect too.
    reconfigure_notifier(s.notifier, &c.notify, &c.targets, &g.plan.inhibit)
        .map_err(|e| vec![format!("{}: the `notify` section cannot be applied: {e}", src.config.display())])?;
    let g = Arc::new(g);
    let c = &g.plan.loaded.config;
    let swap_all = || {
        *s.current.write().unwrap_or_else(|p| p.into_inner()) = g.clone();
        *s.executor.write().unwrap_or_else(|p| p.into_inner()) = (s.make_executor)(&g);
        let _ = s.policy.send(c.dispatch.clone());
        s.limits.resize(&c.dispatch);
    };
    match s.term {
        None => swap_all(),
        Some(term) => {
            // One swap of everything loaded; meanwhile no evaluation is committed (see `Shared::gate`).
            let shared = term.shared.clone();
            let gate = shared.gate.write().await;
            swap_all();
            forget_changed_rule_states(&old, &g, &shared);
            let targets = &old.plan.loaded.config.targets;
            let gone: Vec<(String, String)> = old
                .removed_rules(&g)
                .into_iter()
                .flat_map(|r| targets.iter().map(move |t| (r.clone(), t.name.clone())))
                .collect();
            retire_rules(&gone, &old, &shared, "warden/reload").await;
            spawn_jobs(&g, &mut term.tasks, &term.probes, &shared, &term.stop);
            drop(gate);
        }
    }
    if let Some(w) = s.watch {
        w.update(src.watched(&g));
    }
    Ok(g.plan.jobs.len())
}

/// Loads the configuration at `path` and builds the next generation from it (reusing `old`'s unchanged clients),
/// or says why not: every problem, each as `file:line:col`.
async fn load_generation(path: PathBuf, old: &Arc<Generation>) -> Result<Generation, Vec<String>> {
    let old = old.clone();
    let built = tokio::task::spawn_blocking(move || {
        let (plan, engine) =
            crate::plan::load(&path, None).map_err(|d| d.0.iter().map(|d| d.render()).collect::<Vec<_>>())?;
        Generation::new(plan, engine, Some(&old)).map_err(|e| vec![e.to_string()])
    })
    .await;
    built.unwrap_or_else(|e| Err(vec![format!("reload crashed: {e}")]))
}

/// Checks the `file:` secrets of the targets (bearer tokens, basic passwords, header values) every
/// `reload.poll_interval` (one `stat` each) and asks for a reload when one was replaced or changed: the reload reads
/// the new value and gives that target a new client. A reload that fails (the file is unreadable) is asked for
/// again at most once a minute.
async fn watch_secret_files(
    current: Arc<std::sync::RwLock<Arc<Generation>>>,
    reload: mpsc::Sender<crate::reload::Trigger>,
    stop: CancellationToken,
) {
    let generation = || current.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut asked: Option<(usize, std::time::Instant)> = None;
    loop {
        let g = generation();
        let every = g.plan.loaded.config.reload.poll_interval.max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let g = generation();
        let changed = g.plan.loaded.config.targets.iter().find_map(|t| {
            let auth = t.auth.iter().flat_map(|a| a.bearer.iter().chain(a.basic.iter().map(|b| &b.password)));
            let mut secrets = auth.chain(t.headers.values());
            secrets.find_map(|s| s.file_changed().map(|p| (t.name.clone(), p.to_path_buf())))
        });
        let Some((target, path)) = changed else { continue };
        let this = Arc::as_ptr(&g) as usize;
        if asked.is_some_and(|(gen, at)| gen == this && at.elapsed() < Duration::from_secs(60)) {
            continue;
        }
        tracing::info!(target_name = %target, file = %path.display(), "a secret file changed: reloading to read it");
        asked = Some((this, std::time::Instant::now()));
        let _ = reload.try_send(crate::reload::Trigger::Changed(path));
    }
}

/// Prunes the store every `retention.prune_every` (of the current generation) until `stop` fires.
async fn prune_loop(store: Arc<Store>, shared: Arc<Shared>, stop: CancellationToken) {
    use crate::store::retention::{prune_all, Retention};
    loop {
        let retention = Retention::of(&shared.generation().plan.loaded.config);
        let every = retention.config.prune_every.max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let pruned = tokio::select! {
            p = prune_all(&store, &retention, shared.clock.now()) => p,
            _ = stop.cancelled() => return,
        };
        match pruned {
            Ok(p) if p.total() > 0 => tracing::info!(pruned = p.total(), "pruned the state store (`retention`)"),
            Ok(_) => {}
            Err(e) => tracing::warn!("pruning the state store failed (tried again next round): {e}"),
        }
    }
}

/// Applies a changed `notify` section (and the targets its routes see) to the running notifier. An error rejects
/// the whole reload: the running generation stays.
fn reconfigure_notifier(
    notifier: &crate::notify::Notifier,
    cfg: &crate::notify::NotifyConfig,
    targets: &[crate::config::TargetConfig],
    inhibit: &[crate::notify::inhibit::InhibitRule],
) -> Result<(), crate::notify::NotifyError> {
    notifier.reconfigure_with(cfg.clone(), targets, inhibit.to_vec())
}

/// Rules whose source changed start with a fresh state; the others keep theirs.
fn forget_changed_rule_states(old: &Generation, new: &Generation, shared: &Shared) {
    for (name, r) in &new.plan.rules {
        let changed = old.plan.rules.get(name).is_some_and(|o| o.compiled.source_hash != r.compiled.source_hash);
        if changed {
            shared.states.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| k.rule != *name);
            if let Err(e) = shared.store.clear_rule_state(name) {
                tracing::error!(rule = %name, "cannot clear the state of a changed rule: {e}");
            }
        }
    }
}

/// Retires `(rule, target)` pairs whose rule no longer exists: drops the rule's state (in memory and in the store)
/// and hands the dispatcher an evaluation that asks for nothing, so that each alert still firing gets exactly one
/// *resolved* and everything else the dispatcher kept for the pair is forgotten. `g` supplies the targets' URLs;
/// `why` is journalled as the probe (`warden/start`, `warden/reload`).
async fn retire_rules(gone: &[(String, String)], g: &Generation, shared: &Shared, why: &str) {
    let mut cleared = std::collections::BTreeSet::new();
    for (rule, target) in gone {
        if cleared.insert(rule.clone()) {
            tracing::info!(rule = %rule, "the rule no longer exists: its state is dropped and its alerts resolve");
            shared.states.lock().unwrap_or_else(|p| p.into_inner()).retain(|k, _| k.rule != *rule);
            if let Err(e) = shared.store.clear_rule_state(rule) {
                tracing::error!(rule = %rule, "cannot clear the state of a removed rule: {e}");
            }
        }
        let origin = Origin {
            rule: rule.clone(),
            target: target.clone(),
            target_url: g.clients.get(target).map(|c| c.base.clone()).unwrap_or_default(),
            probe: why.into(),
            time: shared.clock.now(),
            observed: None,
        };
        if shared.tx.send(vec![(origin, Verdict::Requests(vec![]))]).await.is_err() {
            return;
        }
    }
}

mod dispatch_loop;
mod evaluators;
pub mod events;
mod fanout;
mod generation;
mod ha;
mod orphans;
mod probe;
pub mod self_alerts;
pub mod status;

use dispatch_loop::dispatch_loop;
use generation::job_signature;
pub use generation::Generation;
use probe::probe_loop;
pub use status::StatusHandle;

#[cfg(test)]
mod tests;
