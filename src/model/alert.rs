//! What happens to alerts and the actions the dispatcher decided on.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Severity;

/// Where an evaluation came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// Namespaced rule name.
    pub rule: String,
    /// Target name.
    pub target: String,
    /// The target's base URL (for the `{target_url}` placeholder).
    pub target_url: String,
    /// Probe name.
    pub probe: String,
    /// When the evaluation happened.
    pub time: DateTime<Utc>,
    /// The body of the observation the rule judged (shared, not copied), from which the decision record of a run
    /// or restart it asks for takes the job's entry. `None` where there is none (Warden's own evaluations, tests).
    /// The dispatcher drops it from the actions it plans, so a long restart does not keep the answer alive.
    pub observed: Option<std::sync::Arc<super::Doc>>,
}

/// What happens to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// It started firing.
    Firing,
    /// It is still firing after its repeat interval.
    Reminder,
    /// It cleared.
    Resolved,
    /// The storm guard stopped relaunching a job.
    GivingUp,
}

impl AlertEvent {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Firing => "firing",
            AlertEvent::Reminder => "reminder",
            AlertEvent::Resolved => "resolved",
            AlertEvent::GivingUp => "giving_up",
        }
    }
}

/// An alert (or log line) as written to the alert log and, later, to notification channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// When.
    pub time: DateTime<Utc>,
    /// What happened to it (`firing`, `reminder`, `resolved`, `giving_up`, or `log` for a rule's log line).
    pub event: String,
    /// The rule.
    pub rule: String,
    /// The target.
    pub target: String,
    /// The subject (job name).
    pub subject: String,
    /// Severity.
    pub severity: Severity,
    /// One line.
    pub summary: String,
    /// Structured details.
    pub details: serde_json::Value,
}

/// An action the dispatcher decided on; the journal entry already exists (`journal_id`).
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Write an alert (or log line) out.
    Notify {
        /// Journal row.
        journal_id: i64,
        /// The alert.
        record: AlertRecord,
    },
    /// Restart a job from its state.
    Restart {
        /// Journal row.
        journal_id: i64,
        /// The job's name.
        job: String,
        /// The run being replaced.
        jid: String,
        /// How the job is brought back.
        strategy: super::RestartStrategy,
        /// Another jar or parallelism (an upgrade or rescale).
        overrides: super::RestartOverrides,
        /// Rule and target.
        origin: Origin,
    },
    /// Run a named command.
    Run {
        /// Journal row.
        journal_id: i64,
        /// Command name.
        command: String,
        /// Placeholder values, including `target`, `target_url`, `rule`, `subject`, `probe`.
        vars: BTreeMap<String, String>,
        /// Rule, target and subject for messages.
        origin: Origin,
        /// The subject.
        subject: String,
    },
    /// Send a JSON merge patch to a path on the rule's target.
    Patch {
        /// Journal row.
        journal_id: i64,
        /// Path on the target.
        path: String,
        /// The merge patch.
        body: serde_json::Value,
        /// Rule and target.
        origin: Origin,
        /// The subject.
        subject: String,
    },
    /// Change a job's parallelism (in place where the cluster supports it).
    Rescale {
        /// Journal row.
        journal_id: i64,
        /// The job's name.
        job: String,
        /// The running job's id (may be empty).
        jid: String,
        /// The parallelism asked for, before the job's bounds clamp it.
        to: super::RescaleTo,
        /// Rule and target.
        origin: Origin,
    },
}
