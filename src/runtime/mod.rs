//! The daemon: one task per probe × target, rule evaluation on blocking threads, one dispatcher task, actions on
//! a task tracker, and a shutdown that stops polling at once and gives running actions a grace period.
//!
//! ```text
//! probe task ──observe──► rules (spawn_blocking) ──(origin, verdict)──► dispatcher task ──► executor tasks
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
    tx: mpsc::Sender<(Origin, Verdict)>,
    record: Option<Arc<crate::action::log::RecordWriter>>,
    status: StatusHandle,
    /// The latest `/jobs/overview` answer of each target, for the probes that fan out over its jobs.
    overviews: fanout::Overviews,
}

impl Shared {
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
    // Commands a killed Warden left behind: journalled for what became of them, the running ones followed.
    let left_running = crate::action::leftover::reconcile(&store, opts.clock.now())?;
    let interrupted = store.mark_interrupted(opts.clock.now())?;
    if interrupted > 0 {
        tracing::warn!("{interrupted} action(s) were running when Warden last stopped; journalled as interrupted");
    }
    let generation = Arc::new(Generation::new(plan, engine, None)?);
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(1024);
    let record = match &opts.record {
        Some(p) => Some(Arc::new(
            crate::action::log::RecordWriter::create(p, cfg.retention.recordings)
                .map_err(|e| RuntimeError::Record(p.display().to_string(), e.to_string()))?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        current: Arc::new(std::sync::RwLock::new(generation.clone())),
        gate: tokio::sync::RwLock::new(()),
        store: store.clone(),
        states: Arc::new(Mutex::new(store.all_rule_states()?)),
        stats: stats.clone(),
        clock: opts.clock.clone(),
        events: opts.events.clone(),
        tx,
        record,
        status: opts.status.clone(),
        overviews: fanout::Overviews::default(),
    });
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
    let notify_stop = CancellationToken::new();
    let notify_task = tokio::spawn(notifier.clone().run(notify_stop.clone()));
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
    let dispatcher = Dispatcher::new(cfg.dispatch.clone(), opts.dry_run, &store)?;
    let (policy_tx, policy_rx) = tokio::sync::watch::channel(cfg.dispatch.clone());

    // What the server and `warden status` read; the server itself (if asked for) starts once the store is ours.
    opts.status.started_with(generation.clone(), store.clone(), stats.clone(), opts.dry_run);
    let server_stop = CancellationToken::new();
    let server = match opts.serve {
        true => crate::server::start(&cfg.server, opts.status.clone(), server_stop.clone()).await?,
        false => None,
    };

    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    let probes = TaskTracker::new();
    let actions = TaskTracker::new();
    tracing::info!(
        jobs = generation.plan.jobs.len(),
        rules = generation.plan.rules.len(),
        targets = cfg.targets.len(),
        dry_run = opts.dry_run,
        state = %store.path().display(),
        "warden is watching"
    );
    let mut tasks: HashMap<(String, String), (String, CancellationToken)> = HashMap::new();
    spawn_jobs(&generation, &mut tasks, &probes, &shared, &stop);
    // Restarts that were in progress when Warden stopped, or whose driver died since, continue from their step.
    actions.spawn(orphans::adopt_orphans(executor.clone(), orphans::ORPHAN_SCAN, stop.clone(), kill.clone()));
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
    opts.status.set_event_sink(events_tx);
    probes.spawn(events::events_loop(events_rx, shared.clone(), stop.clone()));
    // Warden watching itself (`self_alerts`).
    tokio::spawn(self_alerts::watch_self(shared.clone(), stop.clone()));
    let disp = tokio::spawn(dispatch_loop(
        rx,
        dispatcher,
        store.clone(),
        executor.clone(),
        policy_rx,
        actions.clone(),
        kill.clone(),
        stats.clone(),
        opts.status.clone(),
    ));

    // Rules that existed when Warden last ran and no longer do: their state goes, their alerts resolve.
    {
        let kept = |v: &serde_json::Value| v.as_object().is_none_or(|m| !m.is_empty());
        let mut gone: Vec<(String, String)> =
            store.dispatch_states()?.into_iter().filter(|(_, v)| kept(v)).map(|(k, _)| k).collect();
        gone.extend(store.all_rule_states()?.into_keys().map(|k| (k.rule, k.target)));
        gone.retain(|(rule, _)| !generation.plan.rules.contains_key(rule) && rule != self_alerts::SELF_RULE);
        gone.sort();
        gone.dedup();
        retire_rules(&gone, &generation, &shared, "warden/start").await;
    }

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
    if opts.reload.is_some() {
        opts.status.set_reload_trigger(reload_tx.clone());
        // Rotated token files (a projected service-account token) take effect without anyone asking.
        tokio::spawn(watch_secret_files(shared.clone(), reload_tx.clone(), stop.clone()));
    }
    drop(reload_tx);

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(trigger) = reload_rx.recv() => {
                let Some(src) = &opts.reload else { continue };
                let started = std::time::Instant::now();
                let swap = Swap {
                    shared: &shared,
                    tasks: &mut tasks,
                    probes: &probes,
                    stop: &stop,
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
                let applied = outcome.is_ok().then(|| shared.generation());
                opts.status.reloaded(applied, &trigger, outcome.as_ref().err().cloned().unwrap_or_default());
                opts.events.send(Event::Reloaded { ok: outcome.is_ok(), errors: outcome.err().unwrap_or_default(), took });
            }
        }
    }

    tracing::info!("shutting down: polling stops; running actions get {:?} to finish", cfg.shutdown_grace);
    stop.cancel();
    probes.close();
    let force = opts.force.clone();
    let graceful = async {
        probes.wait().await;
        drop(shared);
        let _ = disp.await; // the channel closed: every verdict was dispatched
        actions.close();
        tokio::time::timeout(cfg.shutdown_grace, actions.wait()).await.is_ok()
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
    server_stop.cancel();
    if let Some(server) = server {
        tokio::select! {
            _ = server => {}
            _ = force.cancelled() => {}
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
    shared: &'a Arc<Shared>,
    tasks: &'a mut HashMap<(String, String), (String, CancellationToken)>,
    probes: &'a TaskTracker,
    stop: &'a CancellationToken,
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
/// rules that are gone lose their state and their firing alerts resolve, once.
async fn reload(src: &ReloadSource, s: Swap<'_>) -> Result<usize, Vec<String>> {
    let old = s.shared.generation();
    let g = load_generation(src.config.clone(), &old).await?;
    let c = &g.plan.loaded.config;
    // The one step that can still fail comes before anything is swapped. Applied on every reload (it is one
    // atomic swap inside the notifier): a changed secret, which prints as `***`, must take effect too.
    reconfigure_notifier(s.notifier, &c.notify, &c.targets, &g.plan.inhibit)
        .map_err(|e| vec![format!("{}: the `notify` section cannot be applied: {e}", src.config.display())])?;
    let g = Arc::new(g);
    let c = &g.plan.loaded.config;
    // One swap of everything loaded; meanwhile no evaluation is committed (see `Shared::gate`).
    let gate = s.shared.gate.write().await;
    *s.shared.current.write().unwrap_or_else(|p| p.into_inner()) = g.clone();
    *s.executor.write().unwrap_or_else(|p| p.into_inner()) = (s.make_executor)(&g);
    let _ = s.policy.send(c.dispatch.clone());
    s.limits.resize(&c.dispatch);
    forget_changed_rule_states(&old, &g, s.shared);
    let targets = &old.plan.loaded.config.targets;
    let gone: Vec<(String, String)> = old
        .removed_rules(&g)
        .into_iter()
        .flat_map(|r| targets.iter().map(move |t| (r.clone(), t.name.clone())))
        .collect();
    retire_rules(&gone, &old, s.shared, "warden/reload").await;
    spawn_jobs(&g, s.tasks, s.probes, s.shared, s.stop);
    drop(gate);
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
    shared: Arc<Shared>,
    reload: mpsc::Sender<crate::reload::Trigger>,
    stop: CancellationToken,
) {
    let mut asked: Option<(usize, std::time::Instant)> = None;
    loop {
        let g = shared.generation();
        let every = g.plan.loaded.config.reload.poll_interval.max(Duration::from_millis(100));
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let g = shared.generation();
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
        if shared.tx.send((origin, Verdict::Requests(vec![]))).await.is_err() {
            return;
        }
    }
}

mod dispatch_loop;
pub mod events;
mod fanout;
mod generation;
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
