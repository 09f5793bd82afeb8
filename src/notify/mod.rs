//! Notifications: routing alerts to channels (e-mail, Slack, the file log, plugin executables), grouping, silences
//! and maintenance windows, templates, and a durable outbox with retries.
//!
//! The dispatcher decides *that* something is worth telling (`firing`, `reminder`, `resolved`, `giving_up`, `log`);
//! the executor hands each such [`AlertRecord`] to [`Notifier::submit`]; the notifier decides *whom* and *how*, and
//! delivers in the background ([`Notifier::run`]) from its outbox so that nothing is lost across outages and
//! restarts.

pub mod cli;

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::yaml::YamlDoc;
use crate::diag::Diagnostic;
use crate::dispatch::AlertRecord;
use crate::event::Events;
use crate::store::Store;

/// The `notify:` section of `warden.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {}

impl NotifyConfig {
    /// Checks what types cannot (references between routes and channels, secrets, files) and resolves secrets and
    /// relative paths against `base`. Problems are pushed with positions under `notify.` in `doc`.
    pub fn check(&mut self, _doc: &YamlDoc, _base: &Path, _diags: &mut Vec<Diagnostic>) {}
}

/// A notification subsystem failure.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The outbox could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Routes, groups, silences and delivers alerts.
pub struct Notifier {
    #[allow(dead_code)]
    config: NotifyConfig,
    #[allow(dead_code)]
    store: Arc<Store>,
    #[allow(dead_code)]
    clock: Clock,
    #[allow(dead_code)]
    events: Events,
}

impl Notifier {
    /// A notifier for `config`, keeping its outbox in `store`.
    pub fn new(config: NotifyConfig, store: Arc<Store>, clock: Clock, events: Events) -> Result<Self, NotifyError> {
        Ok(Self { config, store, clock, events })
    }

    /// Accepts one alert for routing and delivery. Must be quick and must not lose the alert: it is written to the
    /// outbox (or journalled as silenced) before this returns.
    pub fn submit(&self, _record: &AlertRecord) -> Result<(), NotifyError> {
        Ok(())
    }

    /// Delivers from the outbox until `stop` fires (then returns promptly; undelivered messages stay in the outbox
    /// for the next start).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        stop.cancelled().await;
    }
}
