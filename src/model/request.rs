//! What a rule asks for. Rules *return* requests; the dispatcher decides whether and when an action follows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Needs a look.
    #[default]
    Warning,
    /// Needs someone now.
    Critical,
}

impl Severity {
    /// Parses `info`, `warning`, `critical`.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// How long a condition must hold before the dispatcher acts on it (Prometheus' `for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    /// For at least this long since it was first requested.
    Duration(#[serde(with = "crate::model::ms")] Duration),
    /// In at least this many evaluations in a row.
    Evaluations(u32),
}

/// The kind of action requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RequestKind {
    /// A condition that is true now. It fires (after `pending`), may repeat after `cooldown`, and is *resolved*
    /// when an evaluation of the same rule and target no longer asks for it.
    Alert,
    /// Run the named command from `warden.yaml` with these placeholder values.
    Run {
        /// The command's name under `commands:`.
        command: String,
        /// Placeholder values (`job`, `jid`, ...), each substituted into single arguments.
        vars: BTreeMap<String, String>,
    },
    /// Restart a job from its state (see `jobs:` in `warden.yaml`), exactly once, and verify it came back.
    Restart {
        /// The job's name (a key under `jobs:`).
        job: String,
        /// The run being replaced (may be empty).
        jid: String,
        /// How the job is brought back.
        strategy: super::RestartStrategy,
        /// Another jar or parallelism (`jar`, `parallelism` in `restart_job`): an upgrade or rescale, rolled back
        /// if the new run fails.
        #[serde(default, skip_serializing_if = "super::RestartOverrides::is_empty")]
        overrides: super::RestartOverrides,
    },
    /// Append a line to the alert log now (no dedup: rules that log should remember what they logged in `state`).
    Log,
    /// Send a JSON merge patch (`PATCH`, `Content-Type: application/merge-patch+json`) to a path on the rule's
    /// target, with the target's auth and TLS: how the Flink Kubernetes Operator is asked to restart a deployment
    /// (`spec.restartNonce`) or take a savepoint (`spec.job.savepointTriggerNonce`). Dispatched like `run`
    /// (pending, storm guard, dry run, journal), but sent once per dedup key, which holds the path and the body:
    /// the same patch asked again is not sent again (not even after a cooldown, nor when it failed), and a patch
    /// with a new nonce is a new action.
    Patch {
        /// Path (and query) on the target, starting with `/`.
        path: String,
        /// The merge patch.
        body: serde_json::Value,
    },
    /// Change a running job's parallelism (`rescale(#{job, parallelism: N})` or `rescale(#{job, step: 1})`),
    /// clamped to `jobs.<job>.parallelism: {min, max}`: in place where the cluster supports it (Flink ≥ 1.18 with
    /// the adaptive scheduler), else through a savepoint restart. Dispatched like `restart_job` (pending, cooldown
    /// with backoff, storm guard, dry run, journal).
    Rescale {
        /// The job's name (a key under `jobs:`, which holds its bounds).
        job: String,
        /// The running job's id (may be empty: the live run of `job` is looked up).
        jid: String,
        /// The parallelism asked for.
        to: RescaleTo,
    },
}

/// The parallelism a `rescale` request asks for, before it is clamped to the job's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RescaleTo {
    /// Exactly this parallelism (`rescale(#{parallelism: 4})`).
    Exactly(u32),
    /// The job's current parallelism plus this (`rescale(#{step: 1})`, `step: -1`); never 0.
    Step(i32),
}

impl RescaleTo {
    /// The parallelism wanted for a job now at `current`, clamped to `min..=max` (and to at least 1).
    pub fn resolve(self, current: u32, min: u32, max: u32) -> u32 {
        let wanted = match self {
            RescaleTo::Exactly(n) => i64::from(n),
            RescaleTo::Step(s) => i64::from(current) + i64::from(s),
        };
        wanted.clamp(i64::from(min.max(1)), i64::from(max.max(min).max(1))) as u32
    }
}

impl std::fmt::Display for RescaleTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RescaleTo::Exactly(n) => write!(f, "{n}"),
            RescaleTo::Step(s) if *s >= 0 => write!(f, "+{s}"),
            RescaleTo::Step(s) => write!(f, "{s}"),
        }
    }
}

/// One request from one rule evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// What to do.
    pub kind: RequestKind,
    /// What it is about, usually the job name; part of the dedup key.
    pub subject: String,
    /// How urgent.
    pub severity: Severity,
    /// One line for people.
    pub summary: String,
    /// Structured details (root cause, job id, counts).
    pub details: serde_json::Value,
    /// Hold before acting.
    pub pending: Option<Pending>,
    /// Minimum time between repeats while it keeps being requested.
    #[serde(with = "crate::model::opt_ms")]
    pub cooldown: Option<Duration>,
}

impl ActionRequest {
    /// The part of the dedup key that the request itself decides (the rule and target complete it).
    pub fn key(&self) -> String {
        match &self.kind {
            RequestKind::Alert => format!("alert:{}", self.subject),
            RequestKind::Run { command, .. } => format!("run:{command}:{}", self.subject),
            RequestKind::Restart { .. } => format!("restart:{}", self.subject),
            RequestKind::Log => format!("log:{}", self.subject),
            RequestKind::Patch { path, body } => format!("patch:{path}:{body}"),
            RequestKind::Rescale { .. } => format!("rescale:{}", self.subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RescaleTo;

    #[test]
    fn a_rescale_is_clamped_to_the_bounds() {
        assert_eq!(RescaleTo::Step(1).resolve(1, 1, 4), 2);
        assert_eq!(RescaleTo::Step(1).resolve(4, 1, 4), 4);
        assert_eq!(RescaleTo::Step(-1).resolve(1, 1, 4), 1);
        assert_eq!(RescaleTo::Step(-3).resolve(6, 2, 8), 3);
        assert_eq!(RescaleTo::Exactly(16).resolve(2, 1, 8), 8);
        assert_eq!(RescaleTo::Exactly(0).resolve(2, 0, 8), 1);
        assert_eq!(RescaleTo::Step(1).to_string(), "+1");
        assert_eq!(RescaleTo::Step(-2).to_string(), "-2");
        assert_eq!(RescaleTo::Exactly(3).to_string(), "3");
    }
}

/// Durations as milliseconds in JSON.
pub mod ms {
    use super::*;
    /// Serializes as integer milliseconds.
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    /// Deserializes integer milliseconds.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Optional durations as milliseconds in JSON.
pub mod opt_ms {
    use super::*;
    /// Serializes as integer milliseconds or null.
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    /// Deserializes integer milliseconds or null.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
