//! Built-in actions and the executor that carries out what the dispatcher planned, recording each outcome in the
//! journal.

pub mod command;
pub mod log;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::CommandConfig;
use crate::dispatch::Planned;
use crate::event::{Event, Events};
use crate::store::Store;

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
}

impl Executor {
    /// Carries out one planned action and journals its outcome. `cancel` fires when the shutdown grace period
    /// is over: a running command is then killed and journalled as interrupted.
    pub async fn execute(&self, p: Planned, cancel: CancellationToken) {
        match p {
            Planned::Notify { journal_id, record } => {
                let outcome = match self.alert_log.append(&record) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => {
                        tracing::error!(file = %self.alert_log.path().display(), "cannot write the alert log: {e}");
                        format!("failed: cannot write `{}`: {e}", self.alert_log.path().display())
                    }
                };
                self.finish(journal_id, &outcome, "");
                if let Some(n) = &self.notifier {
                    if let Err(e) = n.submit(&record) {
                        tracing::error!(rule = %record.rule, subject = %record.subject, "cannot queue notification: {e}");
                    }
                }
                self.events.send(Event::Alert(record));
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
                let r = command::run(cmd, &vars, &self.workdir, cancel).await;
                let outcome = r.outcome(cmd.timeout);
                if outcome == "ok" {
                    tracing::info!(rule = %origin.rule, target = %origin.target, subject = %subject, "command `{command}` succeeded");
                } else {
                    tracing::warn!(rule = %origin.rule, target = %origin.target, subject = %subject, "command `{command}` {outcome}");
                }
                self.finish(journal_id, &outcome, &r.output);
                self.events.send(Event::RunFinished { command, subject, outcome, output: r.output });
            }
        }
    }

    fn finish(&self, id: i64, outcome: &str, output: &str) {
        if let Err(e) = self.store.finish(id, outcome, output, self.clock.now()) {
            tracing::error!("cannot journal the outcome of action {id}: {e}");
        }
    }
}
