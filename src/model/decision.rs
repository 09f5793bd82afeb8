//! Why Warden acted: the decision record kept with the journal entry of every command run and restart.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::RestartStrategy;

/// Why Warden ran a command or restarted a job: which rule asked, on which observation, with what it saw. Written
/// in the same store transaction as the action's journal entry and shown by `warden explain <entry id>`. It never
/// holds secrets (values under secret-looking keys and the credentials and queries of URLs are masked) and stays
/// small (the observation excerpt is the job's entry, not the whole answer; long values are trimmed, which
/// [`Decision::notes`] says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The rule that asked (namespaced, e.g. `flink/job-not-running`), or `cli` for `warden restart`.
    pub rule: String,
    /// The probe whose observation the rule judged (empty for `warden restart`).
    pub probe: String,
    /// The target.
    pub target: String,
    /// What it is about (the job name).
    pub subject: String,
    /// When the rule judged the observation (or the operator asked).
    pub decided_at: DateTime<Utc>,
    /// What was asked for.
    pub asked: Asked,
    /// The job run the action replaces, as the rule named it (`None` when it named none, e.g. a job missing from
    /// the JobManager).
    pub jid_before: Option<String>,
    /// The root exception the rule reported: `root_cause` of its details, or of its alert about the same job in the
    /// same evaluation.
    pub root_cause: Option<String>,
    /// The rule's details: the request's own, merged with those of its alert about the same job in the same
    /// evaluation (the Flink pack puts state, end time and root cause there).
    pub details: serde_json::Value,
    /// The job's entry in the observation the rule judged (e.g. its element of `/jobs/overview`); `None` when the
    /// observation had no body or did not list the job.
    pub observed: Option<serde_json::Value>,
    /// What was left out or masked, for people reading the record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What a rule (or an operator) asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Asked {
    /// A named command from `warden.yaml`.
    Run {
        /// The command's name under `commands:`.
        command: String,
        /// The placeholder values the rule gave (secret-looking ones masked).
        vars: BTreeMap<String, String>,
    },
    /// A restart from state.
    Restart {
        /// The job's name (a key under `jobs:`).
        job: String,
        /// How the job is brought back.
        strategy: RestartStrategy,
    },
    /// A change of the job's parallelism.
    Rescale {
        /// The job's name (a key under `jobs:`).
        job: String,
        /// The parallelism asked for, before the job's bounds clamp it.
        to: super::RescaleTo,
    },
}
