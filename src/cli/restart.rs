//! `warden restart`: an operator-initiated restart through the same locked, journalled, resumable machinery as the
//! `restart_job` action.

use std::collections::HashMap;
use std::sync::Arc;

use warden::action::log::AlertLog;
use warden::action::restart::RestartOutcome;
use warden::action::Executor;
use warden::clock::Clock;
use warden::config::LoadedConfig;
use warden::event::{Event, Events};
use warden::fetch::{ClientPool, TargetClient};
use warden::flink::client::FlinkClient;
use warden::model::{ActionKind, RestartStrategy};
use warden::model::{RestartKind, RestartOverrides, RestartResult};
use warden::store::{NewEntry, RestartRecord, Store};

/// Why `warden restart` could not run.
#[derive(Debug, thiserror::Error)]
pub enum RestartCliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The store.
    #[error(transparent)]
    Store(#[from] warden::store::StoreError),
    /// The target's client.
    #[error(transparent)]
    Client(#[from] warden::fetch::ClientError),
    /// Flink could not be asked.
    #[error(transparent)]
    Flink(#[from] warden::flink::client::FlinkError),
}

/// `warden restart`: restarts `job` on `target` with `strategy`, printing progress. Exit 0 when the new job runs
/// (and restored).
pub async fn run(
    config: &std::path::Path,
    target: &str,
    job: &str,
    strategy: RestartStrategy,
    jid: Option<&str>,
) -> anyhow::Result<std::process::ExitCode> {
    let loaded = match warden::config::load(config) {
        Ok(l) => l,
        Err(d) => {
            eprintln!("{d}");
            return Ok(std::process::ExitCode::from(1));
        }
    };
    let ok = restart(&loaded, target, job, strategy, jid, &RestartOverrides::default()).await?;
    Ok(if ok { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

/// Restarts (upgrades, rescales: see [`RestartOverrides::kind`]) `job` on `target` through the executor, printing
/// progress; true when it ended with the new job running (a rollback is not that).
pub(super) async fn restart(
    loaded: &LoadedConfig,
    target: &str,
    job: &str,
    strategy: RestartStrategy,
    jid: Option<&str>,
    overrides: &RestartOverrides,
) -> Result<bool, RestartCliError> {
    let kind = overrides.kind();
    let cfg = &loaded.config;
    let tcfg = cfg.targets.iter().find(|t| t.name == target).ok_or_else(|| {
        RestartCliError::Usage(format!(
            "no target named `{target}` (known: {})",
            cfg.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    if !cfg.jobs.contains_key(job) {
        return Err(RestartCliError::Usage(format!(
            "no `jobs.{job}` entry in the configuration says how to restart `{job}`"
        )));
    }
    let client = Arc::new(TargetClient::new(tcfg, &mut ClientPool::default())?);
    let jid = match jid {
        Some(j) => j.to_string(),
        None => {
            let jobs = FlinkClient::new(&client).jobs().await?;
            let pick = if strategy == RestartStrategy::Savepoint {
                jobs.iter().find(|j| j.name == job && j.state == "RUNNING")
            } else {
                jobs.iter().find(|j| j.name == job)
            };
            match pick {
                Some(j) => j.jid.clone(),
                None if strategy == RestartStrategy::Savepoint => {
                    return Err(RestartCliError::Usage(format!("job `{job}` has no RUNNING instance on `{target}`")))
                }
                None => String::new(),
            }
        }
    };
    let store = Arc::new(Store::open_configured(&cfg.store, &cfg.state_dir)?);
    let events = Events::default();
    let mut rx = events.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(ev) = rx.recv().await {
            match ev {
                Event::RestartProgress { step, message, .. } => outln!("[{step}] {message}"),
                Event::Alert(a) => outln!("{}: {}", a.event, a.summary),
                _ => {}
            }
        }
    });
    let executor = operator_executor(loaded, store.clone(), events.clone(), target, client);
    let cancel = cancel_on_ctrl_c();
    // One driver per restart: a restart of this job already in progress is followed (or taken over if its driver is
    // gone), never doubled.
    let outcome = match store.restart_in_progress(target, job)? {
        Some(rec) => follow(&executor, &store, rec, cancel).await?,
        None => {
            // Journalled with its decision record (asked for by hand), in one transaction.
            let now = chrono::Utc::now();
            let journal_id = store.transaction(|s| {
                let id = s.journal(&NewEntry {
                    time: Some(now),
                    rule: "cli".into(),
                    target: target.into(),
                    probe: String::new(),
                    subject: job.into(),
                    action: ActionKind::Restart,
                    detail: strategy.to_string(),
                    severity: "info".into(),
                    summary: format!(
                        "operator {kind} of {job} ({strategy}{})",
                        warden::action::restart::describe(overrides)
                    ),
                    details: if overrides.is_empty() {
                        serde_json::json!({"old_jid": jid})
                    } else {
                        serde_json::json!({"old_jid": jid, "overrides": overrides})
                    },
                    outcome: "started".into(),
                })?;
                let why = warden::model::Decision {
                    rule: "cli".into(),
                    probe: String::new(),
                    target: target.into(),
                    subject: job.into(),
                    decided_at: now,
                    asked: warden::model::Asked::Restart { job: job.into(), strategy },
                    jid_before: Some(jid.clone()).filter(|j| !j.is_empty()),
                    root_cause: None,
                    details: serde_json::Value::Null,
                    observed: None,
                    notes: vec![format!("asked for by an operator with `warden {kind}`")],
                };
                s.save_decision(id, &why)?;
                Ok(id)
            })?;
            match executor.restart(journal_id, "cli", target, job, &jid, strategy, overrides, cancel.clone()).await {
                RestartOutcome::Busy(rec) => {
                    // Another driver began between the check and ours: ours never ran.
                    store.finish(
                        journal_id,
                        &format!("suppressed: restart #{} of {job} was already in progress; followed it", rec.id),
                        "",
                        chrono::Utc::now(),
                    )?;
                    follow(&executor, &store, rec, cancel).await?
                }
                other => other,
            }
        }
    };
    drop(executor);
    drop(events);
    let _ = printer.await;
    report(&outcome);
    Ok(matches!(&outcome, RestartOutcome::Done(r) if r.kind != RestartKind::Rollback))
}

/// Follows a restart another process drives until it ends, printing its steps; takes it over from its last step
/// if that process goes away (its lease runs out, or its pid is gone from this host).
async fn follow(
    executor: &Executor,
    store: &Store,
    mut rec: RestartRecord,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<RestartOutcome, RestartCliError> {
    outln!(
        "restart #{} of {} is already in progress (step {}, driven by {}); following it instead of starting another",
        rec.id,
        rec.job,
        rec.step,
        rec.owner.as_deref().unwrap_or("an earlier Warden")
    );
    let mut last = rec.step;
    loop {
        if let Some(o) = executor.take_over(&rec, cancel.clone()).await {
            return Ok(o);
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            _ = cancel.cancelled() => return Ok(RestartOutcome::Interrupted(rec)),
        }
        rec = match store.restart(rec.id)? {
            Some(r) => r,
            None => return Err(RestartCliError::Usage(format!("restart #{} disappeared from the store", rec.id))),
        };
        if rec.step != last {
            outln!("[{}] (restart #{} by {})", rec.step, rec.id, rec.owner.as_deref().unwrap_or("?"));
            last = rec.step;
        }
        match &rec.outcome {
            None => {}
            Some(RestartResult::Ok) => return Ok(RestartOutcome::Done(rec)),
            // An upgrade or rescale that failed is rolled back by the same driver: follow the rollback.
            Some(RestartResult::Failed { .. }) if rec.kind.rolls_back() && store.rollback_of(rec.id)?.is_some() => {
                let next = store.rollback_of(rec.id)?.unwrap_or(rec);
                outln!(
                    "[{}] rollback #{} of {} began (by {})",
                    next.step,
                    next.id,
                    next.job,
                    next.owner.as_deref().unwrap_or("?")
                );
                last = next.step;
                rec = next;
            }
            Some(RestartResult::Failed { step, message }) => {
                let (step, message) = (step.clone(), message.clone());
                return Ok(RestartOutcome::Failed { record: rec, step, message });
            }
        }
    }
}

/// Says how it ended, in one line (errors on stderr).
fn report(outcome: &RestartOutcome) {
    match outcome {
        RestartOutcome::Done(r) if r.kind == RestartKind::Rollback => eprintln!(
            "warden: {}",
            warden::action::restart::conclusion(outcome).and_then(|(_, c)| c.alert).map(|a| a.2).unwrap_or_default()
        ),
        RestartOutcome::Done(r) => outln!(
            "{} #{} of {} done: {} is RUNNING{}",
            r.kind,
            r.id,
            r.job,
            r.new_jid.as_deref().unwrap_or("?"),
            r.location.as_deref().map(|l| format!(", restored from {l}")).unwrap_or_default()
        ),
        RestartOutcome::Failed { record, step, message } if record.kind == RestartKind::Rollback => eprintln!(
            "warden: rollback #{} of {} failed at step `{step}`: {message} (the new version had failed: {}); \
             the job is not running: act by hand",
            record.id,
            record.job,
            record.cause.as_deref().unwrap_or("unknown")
        ),
        RestartOutcome::Failed { record, step, message } => {
            eprintln!("warden: {} #{} of {} failed at step `{step}`: {message}", record.kind, record.id, record.job)
        }
        RestartOutcome::Interrupted(r) => eprintln!(
            "warden: interrupted at step {} of restart #{}; a running `warden run` on this state directory takes it \
             over from there within seconds (or the next one started)",
            r.step, r.id
        ),
        RestartOutcome::HandedOver(r) => eprintln!(
            "warden: restart #{} was taken over by {}; see `warden history --restarts`",
            r.id,
            r.owner.as_deref().unwrap_or("another process")
        ),
        RestartOutcome::Busy(r) => {
            eprintln!("warden: restart #{} of {} is in progress elsewhere (step {})", r.id, r.job, r.step)
        }
        RestartOutcome::StoreFailed(e) => eprintln!("warden: the state store failed during the restart: {e}"),
    }
}

/// The executor of an operator's command (`warden restart`, `warden rescale`): the system clock, no notifier (the
/// command prints what happens), one target's client.
pub(crate) fn operator_executor(
    loaded: &LoadedConfig,
    store: Arc<Store>,
    events: Events,
    target: &str,
    client: Arc<TargetClient>,
) -> Executor {
    let cfg = &loaded.config;
    Executor {
        commands: cfg.commands.clone(),
        alert_log: AlertLog::new(cfg.alert_log.clone().unwrap_or_else(|| cfg.state_dir.join("alerts.jsonl"))),
        workdir: loaded.base_dir.clone(),
        store,
        clock: Clock::System,
        events,
        notifier: None,
        clients: HashMap::from([(target.to_string(), client)]),
        jobs: cfg.jobs.clone(),
        restart_poll: std::time::Duration::from_secs(1),
    }
}

/// A token cancelled on Ctrl-C: an operator's command stops where it is (its journal says so) instead of dying.
pub(crate) fn cancel_on_ctrl_c() -> tokio_util::sync::CancellationToken {
    let cancel = tokio_util::sync::CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        c2.cancel();
    });
    cancel
}
