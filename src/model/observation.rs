//! What one poll of one target saw: the unit that flows from probes to rules.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sonic_rs::JsonValueTrait;

use super::Doc;

/// The result of one probe request against one target. Either `body` holds the parsed JSON, or `error` says why
/// there is none (rules see both, so they can alert on "JobManager unreachable").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observation {
    /// The probe's name.
    pub probe: String,
    /// The target's name.
    pub target: String,
    /// For a probe with `for_each: job`: the job this observation is about, as its entry of the target's
    /// `/jobs/overview` (`jid`, `name`, `state`, `start-time`, …). `None` for ordinary probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Arc<Doc>>,
    /// When the request was sent.
    pub time: DateTime<Utc>,
    /// HTTP status, if an answer arrived.
    pub status: Option<u16>,
    /// Time from sending the request to having the whole body.
    #[serde(serialize_with = "ser_ms", deserialize_with = "de_ms", rename = "latency_ms")]
    pub latency: Duration,
    /// The JSON body (also present for error statuses when the body was JSON, e.g. Flink's `{"errors": [...]}`).
    pub body: Option<Arc<Doc>>,
    /// Why the poll did not give a usable answer.
    pub error: Option<FetchError>,
}

impl Observation {
    /// The name of the job this observation is about (`for_each: job` probes), `None` for ordinary probes. A job
    /// entry without a string `name` counts as the job named `""`.
    pub fn job_name(&self) -> Option<&str> {
        self.job.as_deref().map(|j| j.get("name").and_then(|n| n.as_str()).unwrap_or(""))
    }
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

fn de_ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Ok(Duration::from_millis(u64::deserialize(d)?))
}

/// Why a poll failed, in a form rules can branch on (`kind`) and people can read (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct FetchError {
    /// The class of failure.
    pub kind: FetchErrorKind,
    /// A one-line explanation naming the target and path; never contains credentials.
    pub message: String,
}

/// Classes of poll failure. Rules see them as lowercase strings (`obs.error.kind == "timeout"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchErrorKind {
    /// No answer within the target's timeout.
    Timeout,
    /// Connection refused, DNS failure, TLS failure.
    Connect,
    /// An answer with a non-2xx status.
    HttpStatus,
    /// Flink's 503 "ongoing leader election": a JobManager fail-over is in progress.
    LeaderElection,
    /// A 2xx answer whose body is not JSON (an HTML login page, a proxy error page).
    NotJson,
    /// The body exceeded the probe's `max_body`.
    TooLarge,
    /// Warden refused to send it: the path leaves the target's base path, or the answer redirected to another
    /// origin (scheme, host, port) that the target does not allow.
    Refused,
}

impl FetchErrorKind {
    /// The lowercase name rules see.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchErrorKind::Timeout => "timeout",
            FetchErrorKind::Connect => "connect",
            FetchErrorKind::HttpStatus => "http_status",
            FetchErrorKind::LeaderElection => "leader_election",
            FetchErrorKind::NotJson => "not_json",
            FetchErrorKind::TooLarge => "too_large",
            FetchErrorKind::Refused => "refused",
        }
    }
}

impl std::fmt::Display for FetchErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a recording (`warden run --record`): the observation, when the rules judged it, and what their
/// follow-up requests (`http_get`) were answered, so that `warden replay` decides exactly as the daemon did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    /// The observation.
    #[serde(flatten)]
    pub obs: Observation,
    /// When the rules judged it (the clock reading they saw; absent in recordings of older versions: then
    /// `time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
    /// The follow-up requests the rules made, in order, with their answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub follow_ups: Vec<RecordedFollowUp>,
}

/// A follow-up request of a rule and its answer, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedFollowUp {
    /// The path asked for.
    pub path: String,
    /// The HTTP status, if an answer arrived.
    pub status: Option<u16>,
    /// The JSON body, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Arc<Doc>>,
    /// The error kind and message, if the answer was not usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<(String, String)>,
}
