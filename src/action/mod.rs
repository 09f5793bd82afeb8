//! Built-in actions and the executor that carries out what the dispatcher planned, recording each outcome in the
//! journal.

pub mod command;
pub mod decision;
pub mod leftover;
pub mod limits;
pub mod log;
pub mod patch;
pub mod rescale;
pub mod restart;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::CommandConfig;
use crate::event::{Event, Events};
use crate::model::RestartStrategy;
use crate::model::{AlertRecord, Planned};
use crate::store::RestartRecord;
use crate::store::Store;
use restart::{RestartContext, RestartOutcome};

/// Carries out planned actions.
pub struct Executor {
    /// Named commands from `warden.yaml`.
    pub commands: BTreeMap<String, CommandConfig>,
    /// The alert log.
    pub alert_log: log::AlertLog,
    /// Default working directory for commands (the directory of `warden.yaml`).
    pub workdir: PathBuf,
    /// The journal.
    pub store: Arc<Store>,
    /// The clock.
    pub clock: Clock,
    /// Where progress is announced.
    pub events: Events,
    /// Routes alerts to notification channels (none in tests that do not need it).
    pub notifier: Option<Arc<crate::notify::Notifier>>,
    /// Targets' clients, by name (for restarts).
    pub clients: std::collections::HashMap<String, Arc<crate::fetch::TargetClient>>,
    /// How to restart each job, by name.
    pub jobs: BTreeMap<String, crate::config::JobConfig>,
    /// How often restarts poll Flink while they wait.
    pub restart_poll: std::time::Duration,
}

impl Executor {
    /// Carries out one planned action and journals its outcome. `cancel` fires when the shutdown grace period
    /// is over: a running command is then killed and journalled as interrupted.
    pub async fn execute(&self, p: Planned, cancel: CancellationToken) {
        // Bounded work: commands and restarts wait for a free slot (limits.rs); none is dropped.
        let _slot = match limits::wait_turn(&self.store, &p, &cancel).await {
            Ok(slot) => slot,
            Err(journal_id) => return self.finish(journal_id, limits::INTERRUPTED, ""),
        };
        match p {
            Planned::Notify { journal_id, record } => {
                // Journalled before listeners hear of it: whoever reacts to the event finds the entry finished.
                let outcome = self.deliver(&record);
                self.finish(journal_id, &outcome, "");
                self.events.send(Event::Alert(record));
            }
            Planned::Restart { journal_id, job, jid, strategy, overrides, origin } => {
                self.restart(journal_id, &origin.rule, &origin.target, &job, &jid, strategy, &overrides, cancel).await;
            }
            Planned::Rescale { journal_id, job, jid, to, origin } => {
                tokio::select! {
                    _ = self.rescale(journal_id, &origin.rule, &origin.target, &job, &jid, to, false, cancel.clone()) => {}
                    _ = cancel.cancelled() => {
                        // Flink goes on with the bounds it was given; only Warden's wait for it ends.
                        let why = "interrupted: Warden shut down while it waited for the rescale; Flink goes on \
                                   with any new bounds it was given";
                        self.finish(journal_id, why, "");
                    }
                }
            }
            Planned::Patch { journal_id, path, body, origin, subject } => {
                let out = match self.clients.get(&origin.target) {
                    Some(client) => patch::send(client, &path, &body).await,
                    None => patch::PatchOutcome {
                        outcome: format!("failed: no target named `{}`", origin.target),
                        output: String::new(),
                    },
                };
                if out.outcome == "ok" {
                    tracing::info!(rule = %origin.rule, target = %origin.target, subject = %subject, "patched {path}: {}", out.output);
                } else {
                    tracing::warn!(rule = %origin.rule, target = %origin.target, subject = %subject, "patch of {path} {}", out.outcome);
                }
                self.finish(journal_id, &out.outcome, &out.output);
            }
            Planned::Run { journal_id, command, vars, origin, subject } => {
                let Some(cmd) = self.commands.get(&command) else {
                    let outcome = format!("failed: no command named `{command}` under `commands:`");
                    tracing::error!(rule = %origin.rule, target = %origin.target, "{outcome}");
                    self.finish(journal_id, &outcome, "");
                    self.events.send(Event::RunFinished { command, subject, outcome, output: String::new() });
                    return;
                };
                self.events.send(Event::RunStarted {
                    command: command.clone(),
                    subject: subject.clone(),
                    argv: command::argv(cmd, &vars).unwrap_or_default(),
                });
                let r = match command::start(cmd, &vars, &self.workdir) {
                    Ok(started) => {
                        // Which process it is, so that a Warden killed meanwhile is followed by one that knows.
                        if let Some(process) = started.identity() {
                            let recorded = self.store.call(move |s| leftover::record(s, journal_id, &process)).await;
                            if let Err(e) = recorded {
                                tracing::error!("cannot record the process of action {journal_id}: {e}");
                            }
                        }
                        started.wait(cancel).await
                    }
                    Err(r) => r,
                };
                let outcome = r.outcome(cmd.timeout);
                if outcome == "ok" {
                    tracing::info!(rule = %origin.rule, target = %origin.target, job = %subject, jid = %vars.get("jid").map(String::as_str).unwrap_or(""), "command `{command}` succeeded");
                } else {
                    tracing::warn!(rule = %origin.rule, target = %origin.target, job = %subject, jid = %vars.get("jid").map(String::as_str).unwrap_or(""), "command `{command}` {outcome}");
                }
                self.finish(journal_id, &outcome, &r.output);
                self.events.send(Event::RunFinished { command, subject, outcome, output: r.output });
            }
        }
    }

    /// Writes an alert to the alert log, hands it to the notifier, and tells listeners. Returns the journal outcome.
    pub fn announce(&self, record: AlertRecord) -> String {
        let outcome = self.deliver(&record);
        self.events.send(Event::Alert(record));
        outcome
    }

    /// Writes an alert to the alert log and hands it to the notifier. Returns the journal outcome.
    fn deliver(&self, record: &AlertRecord) -> String {
        let outcome = match self.alert_log.append(record) {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                tracing::error!(file = %self.alert_log.path().display(), "cannot write the alert log: {e}");
                format!("failed: cannot write `{}`: {e}", self.alert_log.path().display())
            }
        };
        if let Some(n) = &self.notifier {
            if let Err(e) = n.submit(record) {
                tracing::error!(rule = %record.rule, subject = %record.subject, "cannot queue notification: {e}");
            }
        }
        outcome
    }

    fn restart_context<'a>(
        &'a self,
        target: &str,
        job: &str,
        cancel: CancellationToken,
        progress: &'a (dyn Fn(&RestartRecord, &str) + Send + Sync),
    ) -> Result<RestartContext<'a>, String> {
        let client = self.clients.get(target).ok_or_else(|| format!("no target named `{target}`"))?;
        let job_cfg = self
            .jobs
            .get(job)
            .ok_or_else(|| format!("no `jobs.{job}` entry in warden.yaml says how to restart job `{job}`"))?;
        Ok(RestartContext {
            store: &self.store,
            client,
            job: job_cfg,
            commands: &self.commands,
            workdir: &self.workdir,
            clock: &self.clock,
            cancel,
            poll: self.restart_poll,
            progress,
            owner: restart::owner_id(),
            lease: restart::LEASE,
        })
    }

    /// Runs a `restart_job` request and journals and announces how it ended.
    #[allow(clippy::too_many_arguments)]
    pub async fn restart(
        &self,
        journal_id: i64,
        rule: &str,
        target: &str,
        job: &str,
        jid: &str,
        strategy: RestartStrategy,
        overrides: &crate::model::RestartOverrides,
        cancel: CancellationToken,
    ) -> RestartOutcome {
        let events = self.events.clone();
        let progress = move |r: &RestartRecord, msg: &str| {
            tracing::info!(target = %r.target, job = %r.job, jid = %r.old_jid, new_jid = %r.new_jid.as_deref().unwrap_or(""), restart = r.id, step = %r.step, "{msg}");
            events.send(Event::RestartProgress { job: r.job.clone(), step: r.step, message: msg.to_string() });
        };
        // Not while this Warden rescales the job in place (a rescale does not start while this restart runs).
        let lock = rescale::job_lock(&self.store, target, job);
        let _rescaling = lock.lock().await;
        let outcome = match self.restart_context(target, job, cancel, &progress) {
            Ok(ctx) => restart::begin_with(&ctx, journal_id, target, job, jid, strategy, overrides).await,
            Err(e) => RestartOutcome::Failed {
                record: RestartRecord::unsaved(journal_id, target, job, strategy, jid, overrides),
                step: "start".into(),
                message: e,
            },
        };
        self.conclude(rule, &outcome);
        outcome
    }

    /// Runs a `rescale` request (see [`rescale`]) and journals and announces how it ended. `operator`: asked by
    /// `warden rescale --parallelism N` (not clamped to `jobs.<job>.parallelism`). Where the cluster cannot
    /// rescale in place, a savepoint restart with the new parallelism follows under the same journal entry, which
    /// the restart concludes (the outcome is then [`rescale::RescaleOutcome::ViaSavepoint`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn rescale(
        &self,
        journal_id: i64,
        rule: &str,
        target: &str,
        job: &str,
        jid: &str,
        to: crate::model::RescaleTo,
        operator: bool,
        cancel: CancellationToken,
    ) -> rescale::RescaleOutcome {
        let outcome = match (self.clients.get(target), self.jobs.get(job)) {
            (None, _) => rescale::RescaleOutcome::Failed {
                step: "start".into(),
                message: format!("no target named `{target}`"),
                path: None,
            },
            (_, None) => rescale::RescaleOutcome::Failed {
                step: "start".into(),
                message: format!("no `jobs.{job}` entry in warden.yaml gives the bounds of job `{job}`"),
                path: None,
            },
            (Some(client), Some(config)) => {
                let bounds = if operator {
                    Some(crate::config::ParallelismBounds { min: 1, max: u32::MAX })
                } else {
                    config.parallelism
                };
                let ctx = rescale::RescaleContext {
                    store: &self.store,
                    target,
                    client,
                    job,
                    config,
                    bounds,
                    poll: self.restart_poll,
                };
                rescale::rescale(&ctx, jid, to).await
            }
        };
        let (summary, details) = rescale::describe(job, &outcome);
        if let rescale::RescaleOutcome::ViaSavepoint { jid, wanted, .. } = &outcome {
            tracing::info!(rule, target, job, "{summary}");
            let overrides = crate::model::RestartOverrides { parallelism: Some(*wanted), ..Default::default() };
            self.restart(journal_id, rule, target, job, jid, RestartStrategy::Savepoint, &overrides, cancel).await;
            return outcome;
        }
        let journal = outcome.journal();
        match &outcome {
            rescale::RescaleOutcome::Suppressed(_) => tracing::info!(rule, target, job, "{summary}"),
            rescale::RescaleOutcome::Done { .. } => tracing::info!(rule, target, job, "{summary}"),
            _ => tracing::warn!(rule, target, job, "{summary}"),
        }
        self.finish(journal_id, &journal, &details.to_string());
        let announce = match &outcome {
            rescale::RescaleOutcome::Done { .. } => Some(("rescaled", crate::model::Severity::Info)),
            rescale::RescaleOutcome::Partial { .. } => Some(("rescale_partial", crate::model::Severity::Warning)),
            rescale::RescaleOutcome::Failed { .. } => Some(("rescale_failed", crate::model::Severity::Critical)),
            rescale::RescaleOutcome::Suppressed(_) | rescale::RescaleOutcome::ViaSavepoint { .. } => None,
        };
        if let Some((event, severity)) = announce {
            self.announce(AlertRecord {
                time: self.clock.now(),
                event: event.into(),
                rule: rule.into(),
                target: target.into(),
                subject: job.into(),
                severity,
                summary,
                details,
            });
        }
        outcome
    }

    /// Takes over and drives every unfinished restart whose owner is gone: at start-up (restarts in progress when
    /// Warden last stopped) and periodically while the daemon runs (a `warden restart` that was killed, a daemon
    /// that died while another instance waited). A restart another live process drives is left to it. Returns how
    /// many were taken over.
    pub async fn resume_restarts(&self, cancel: CancellationToken) -> usize {
        let records = match self.store.unfinished_restarts() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot read unfinished restarts: {e}");
                return 0;
            }
        };
        let mut n = 0;
        for rec in records {
            if self.take_over(&rec, cancel.clone()).await.is_some() {
                n += 1;
            }
        }
        n
    }

    /// Takes over one unfinished restart if its owner is gone, drives it to its end, and journals and announces
    /// how it ended. `None` when another live process drives it. A restart whose target or job this
    /// configuration no longer knows is failed (once, as its new owner) with the reason.
    pub async fn take_over(&self, rec: &RestartRecord, cancel: CancellationToken) -> Option<RestartOutcome> {
        let events = self.events.clone();
        let progress = move |r: &RestartRecord, msg: &str| {
            tracing::info!(target = %r.target, job = %r.job, jid = %r.old_jid, new_jid = %r.new_jid.as_deref().unwrap_or(""), restart = r.id, step = %r.step, "{msg}");
            events.send(Event::RestartProgress { job: r.job.clone(), step: r.step, message: msg.to_string() });
        };
        let outcome = match self.restart_context(&rec.target, &rec.job, cancel, &progress) {
            Ok(ctx) => restart::take_over(&ctx, rec).await?,
            Err(e) => {
                let lease = chrono::Duration::from_std(restart::LEASE).unwrap_or(chrono::Duration::seconds(30));
                let mut r = self.store.claim_restart(rec.id, &restart::owner_id(), self.clock.now(), lease).ok()??;
                r.outcome = Some(crate::model::RestartResult::Failed { step: "resume".into(), message: e.clone() });
                if let Err(err) = self.store.update_restart(&r, self.clock.now()) {
                    tracing::error!("cannot record the end of restart #{}: {err}", r.id);
                }
                RestartOutcome::Failed { record: r, step: "resume".into(), message: e }
            }
        };
        self.conclude("warden/resume", &outcome);
        Some(outcome)
    }

    /// Journals and announces how a restart ended (the texts by kind: [`restart::conclusion`]).
    fn conclude(&self, rule: &str, outcome: &RestartOutcome) {
        let now = self.clock.now();
        let Some((rec, c)) = restart::conclusion(outcome) else {
            match outcome {
                // Not journalled as ended: the restart goes on (taken over by the next driver), which concludes it.
                RestartOutcome::Interrupted(r) => {
                    tracing::info!(restart = r.id, step = %r.step, "restart interrupted; the next Warden resumes it")
                }
                RestartOutcome::HandedOver(r) => {
                    tracing::info!(restart = r.id, step = %r.step, "restart handed over to another process")
                }
                RestartOutcome::StoreFailed(e) => tracing::error!("restart: state store failed: {e}"),
                _ => {}
            }
            return;
        };
        let failed_step = match outcome {
            RestartOutcome::Failed { step, .. } => Some(step.clone()),
            _ => None,
        };
        let output = format!(
            "{} #{} strategy={} old_jid={} location={} new_jid={}{}{}",
            rec.kind,
            rec.id,
            rec.strategy,
            rec.old_jid,
            rec.location.as_deref().unwrap_or("-"),
            rec.new_jid.as_deref().unwrap_or("-"),
            rec.jar_id.as_deref().map(|j| format!(" jar={j}")).unwrap_or_default(),
            rec.overrides.parallelism.map(|p| format!(" parallelism={p}")).unwrap_or_default(),
        );
        if let Err(e) = self.store.finish(rec.journal_id, &c.journal, &output, now) {
            tracing::error!("cannot journal the outcome of restart #{}: {e}", rec.id);
        }
        if let Some((event, severity, summary)) = c.alert {
            self.announce(AlertRecord {
                time: now,
                event: event.into(),
                rule: rule.into(),
                target: rec.target.clone(),
                subject: rec.job.clone(),
                severity,
                summary,
                details: serde_json::json!({
                    "job": rec.job, "jid": rec.new_jid, "old_jid": rec.old_jid, "strategy": rec.strategy,
                    "location": rec.location, "restart": rec.id, "outcome": rec.outcome,
                    "step": failed_step.clone().unwrap_or_else(|| rec.step.to_string()),
                    "kind": rec.kind, "jar": rec.jar_id, "parallelism": rec.overrides.parallelism,
                    "cause": rec.cause, "rollback_of": rec.rollback_of,
                }),
            });
        }
    }

    fn finish(&self, id: i64, outcome: &str, output: &str) {
        if let Err(e) = self.store.finish(id, outcome, output, self.clock.now()) {
            tracing::error!("cannot journal the outcome of action {id}: {e}");
        }
    }
}
