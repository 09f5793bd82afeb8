//! `warden report`: an inventory across targets, asked of each JobManager directly (not of the daemon) — the Flink
//! version, every job (the newest run of each name), its checkpointing mode, interval and storage, the age of its
//! last completed checkpoint, its state size and the trend of that size over the checkpoints Flink still lists,
//! and from the state store how often Warden relaunched or restarted it in the last day.
//!
//! Works with Flink 1.15 through 2.x: it reads only fields all of them have (`/overview` → `flink-version`, with
//! `/config` as the fallback; `/jobs/overview`; `/jobs/:jid/checkpoints` → `latest.completed`, `history`;
//! `/jobs/:jid/checkpoints/config` → `mode`, `interval`, `checkpoint_storage`, `state_backend`, `externalization`),
//! takes the checkpoint mode in any case (Flink writes `exactly_once`, its docs `EXACTLY_ONCE`), and ignores the
//! history entries' type tag (`@class` before 1.15, `className` since).
//!
//! A target that does not answer is a row saying so, not a failure of the report; a job whose checkpoint answers
//! fail says which. Requests run concurrently, at most [`CONCURRENCY`] at a time across all targets, each under its
//! target's timeout.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::fetch::{HttpRequest, TargetClient};
use crate::store::Store;

/// How many REST requests `warden report` has in flight at once, across all targets.
pub const CONCURRENCY: usize = 4;

/// The largest answer read (a checkpoint history with many operators is a few MB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The inventory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// When the JobManagers were asked (ages are relative to it).
    pub generated_at: DateTime<Utc>,
    /// One per target, in the configuration's order.
    pub targets: Vec<TargetReport>,
}

/// What one target said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetReport {
    /// The target's name.
    pub target: String,
    /// The Flink version it reports.
    pub flink_version: Option<String>,
    /// Why it could not be asked for its jobs (it did not answer, or answered with an error).
    pub error: Option<String>,
    /// Its jobs: the newest run of each name, sorted by name.
    pub jobs: Vec<JobReport>,
}

/// One job on a target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    /// The job's name.
    pub name: String,
    /// The id of its newest run.
    pub jid: String,
    /// That run's state (`RUNNING`, `FAILED`, …).
    pub state: String,
    /// How it checkpoints.
    pub checkpointing: Checkpointing,
    /// Its newest completed checkpoint, if any.
    pub last_checkpoint: Option<LastCheckpoint>,
    /// The state size of the newest completed checkpoint, in bytes.
    pub state_size: Option<u64>,
    /// How the state size moved over the completed checkpoints Flink still lists (`None` with fewer than two).
    pub state_size_trend: Option<SizeTrend>,
    /// Commands and restarts Warden ran for it on this target in the 24 hours before the report (dry runs and
    /// suppressed ones not counted); `None` without a state store.
    pub restarts_last_day: Option<u32>,
    /// Why its checkpoint statistics could not be read, if they could not.
    pub error: Option<String>,
}

/// Exactly-once or at-least-once checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointMode {
    /// `exactly_once`.
    ExactlyOnce,
    /// `at_least_once`.
    AtLeastOnce,
}

impl CheckpointMode {
    /// Reads Flink's `mode`, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "exactly_once" => Some(Self::ExactlyOnce),
            "at_least_once" => Some(Self::AtLeastOnce),
            _ => None,
        }
    }

    /// As Flink writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExactlyOnce => "exactly_once",
            Self::AtLeastOnce => "at_least_once",
        }
    }
}

/// A job's checkpointing configuration (`/jobs/:jid/checkpoints/config`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Checkpointing {
    /// Checkpointing is on.
    On {
        /// Exactly-once or at-least-once (`None`: a mode this Warden does not know).
        mode: Option<CheckpointMode>,
        /// The interval, in milliseconds.
        interval_ms: u64,
        /// Where checkpoints go (`FileSystemCheckpointStorage`, `JobManagerCheckpointStorage`).
        storage: Option<String>,
        /// The state backend (`HashMapStateBackend`, `EmbeddedRocksDBStateBackend`).
        state_backend: Option<String>,
        /// Whether checkpoints are kept when the job is cancelled (what a restart from the last checkpoint needs).
        retained: Option<bool>,
    },
    /// The job does not checkpoint.
    Off,
    /// Flink's answer could not be read.
    Unknown {
        /// Why.
        error: String,
    },
}

/// A job's newest completed checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LastCheckpoint {
    /// Flink's checkpoint id.
    pub id: u64,
    /// When it completed (its last acknowledgement).
    pub completed_at: DateTime<Utc>,
    /// Seconds between its completion and the report.
    pub age_s: i64,
    /// Where it is (`None` when it is not externally addressable).
    pub external_path: Option<String>,
}

/// How a job's state size moved over the completed checkpoints Flink still lists (`web.checkpoints.history`,
/// 10 by default).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeTrend {
    /// How many checkpoints it spans.
    pub samples: usize,
    /// The oldest one's state size, in bytes.
    pub from_bytes: u64,
    /// The newest one's state size, in bytes.
    pub to_bytes: u64,
    /// Seconds between the two.
    pub span_s: i64,
}

impl SizeTrend {
    /// The change in percent (`None` from an empty state).
    pub fn change_pct(&self) -> Option<f64> {
        (self.from_bytes > 0).then(|| (self.to_bytes as f64 - self.from_bytes as f64) * 100.0 / self.from_bytes as f64)
    }
}

/// Asks every target in `clients` (at most [`CONCURRENCY`] requests at a time across them).
pub async fn gather(clients: &[Arc<TargetClient>], now: DateTime<Utc>) -> Report {
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let all = clients.iter().map(|c| target_report(c, &limit, now));
    Report { generated_at: now, targets: futures_util::future::join_all(all).await }
}

/// Fills in each job's restarts in the 24 hours before the report from `store`.
pub fn add_restarts(report: &mut Report, store: &Store) -> crate::store::Result<()> {
    let since = report.generated_at - chrono::Duration::days(1);
    for t in &mut report.targets {
        for j in &mut t.jobs {
            j.restarts_last_day = Some(store.runs_since(&t.target, &j.name, since)?);
        }
    }
    Ok(())
}

/// A failed request: the HTTP status, if one came, and the message.
struct Failed {
    status: Option<u16>,
    message: String,
}

async fn get(c: &TargetClient, limit: &Semaphore, path: &str) -> Result<Value, Failed> {
    let _permit = limit.acquire().await.expect("the report's semaphore is never closed");
    let (status, body, err) = c.send(&HttpRequest::get(path, MAX_BODY)).await;
    match err {
        None => Ok(body.unwrap_or(Value::Null)),
        Some(e) => Err(Failed { status, message: e.message }),
    }
}

async fn target_report(c: &TargetClient, limit: &Semaphore, now: DateTime<Utc>) -> TargetReport {
    let mut t = TargetReport { target: c.name.clone(), flink_version: None, error: None, jobs: vec![] };
    let version = |v: &Value| v.get("flink-version").and_then(Value::as_str).map(str::to_string);
    t.flink_version = match get(c, limit, "/overview").await {
        Ok(v) => version(&v),
        Err(f) if f.status.is_none() => {
            // No answer at all: the rest would fail the same way.
            t.error = Some(f.message);
            return t;
        }
        Err(_) => get(c, limit, "/config").await.ok().as_ref().and_then(version),
    };
    let overview = match get(c, limit, "/jobs/overview").await {
        Ok(v) => v,
        Err(f) => {
            t.error = Some(f.message);
            return t;
        }
    };
    let runs = newest_runs(&overview);
    let jobs = runs.into_iter().map(|(name, jid, state)| job_report(c, limit, name, jid, state, now));
    t.jobs = futures_util::future::join_all(jobs).await;
    t
}

/// The newest run (by `start-time`) of each job name in a `/jobs/overview` answer, sorted by name.
pub fn newest_runs(overview: &Value) -> Vec<(String, String, String)> {
    let mut newest: std::collections::BTreeMap<String, (i64, String, String)> = Default::default();
    for j in overview.get("jobs").and_then(Value::as_array).into_iter().flatten() {
        let s = |k: &str| j.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let start = j.get("start-time").and_then(Value::as_i64).unwrap_or(i64::MIN);
        let e = newest.entry(s("name")).or_insert((i64::MIN, String::new(), String::new()));
        if start >= e.0 {
            *e = (start, s("jid"), s("state"));
        }
    }
    newest.into_iter().map(|(name, (_, jid, state))| (name, jid, state)).collect()
}

async fn job_report(
    c: &TargetClient,
    limit: &Semaphore,
    name: String,
    jid: String,
    state: String,
    now: DateTime<Utc>,
) -> JobReport {
    let config_path = format!("/jobs/{jid}/checkpoints/config");
    let stats_path = format!("/jobs/{jid}/checkpoints");
    let (config, stats) = tokio::join!(get(c, limit, &config_path), get(c, limit, &stats_path));
    let mut j = JobReport {
        name,
        jid,
        state,
        checkpointing: Checkpointing::Off,
        last_checkpoint: None,
        state_size: None,
        state_size_trend: None,
        restarts_last_day: None,
        error: None,
    };
    j.checkpointing = match config {
        Ok(v) => checkpointing(&v),
        Err(f) if not_enabled(&f) => Checkpointing::Off,
        Err(f) => Checkpointing::Unknown { error: f.message },
    };
    match stats {
        Ok(v) => {
            let s = checkpoint_stats(&v, now);
            (j.last_checkpoint, j.state_size, j.state_size_trend) = (s.last, s.size, s.trend);
        }
        Err(f) if not_enabled(&f) => {}
        Err(f) => j.error = Some(f.message),
    }
    j
}

/// Flink's 404 for a job that does not checkpoint ("Checkpointing has not been enabled." /
/// "Checkpointing is not enabled for this job").
fn not_enabled(f: &Failed) -> bool {
    f.status == Some(404) && (f.message.contains("not been enabled") || f.message.contains("not enabled"))
}

/// Reads `/jobs/:jid/checkpoints/config`.
pub fn checkpointing(v: &Value) -> Checkpointing {
    let Some(interval) = v.get("interval").and_then(Value::as_u64) else {
        return Checkpointing::Unknown { error: "the answer has no `interval`".into() };
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Checkpointing::On {
        mode: v.get("mode").and_then(Value::as_str).and_then(CheckpointMode::parse),
        interval_ms: interval,
        storage: s("checkpoint_storage"),
        state_backend: s("state_backend"),
        retained: v.pointer("/externalization/enabled").and_then(Value::as_bool).map(|on| {
            on && !v.pointer("/externalization/delete_on_cancellation").and_then(Value::as_bool).unwrap_or(false)
        }),
    }
}

/// What `/jobs/:jid/checkpoints` says about the job's newest completed checkpoint and its state size.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointStats {
    /// The newest completed checkpoint.
    pub last: Option<LastCheckpoint>,
    /// Its state size.
    pub size: Option<u64>,
    /// The trend over the listed history.
    pub trend: Option<SizeTrend>,
}

/// Reads `/jobs/:jid/checkpoints` (`now`: the report's time, for the age).
pub fn checkpoint_stats(v: &Value, now: DateTime<Utc>) -> CheckpointStats {
    let size = |c: &Value| c.get("state_size").or_else(|| c.get("checkpointed_size")).and_then(Value::as_u64);
    let time = |c: &Value| {
        c.get("latest_ack_timestamp")
            .and_then(Value::as_i64)
            .filter(|t| *t > 0)
            .or_else(|| c.get("trigger_timestamp").and_then(Value::as_i64))
            .and_then(DateTime::from_timestamp_millis)
    };
    let last = v.pointer("/latest/completed").filter(|c| c.is_object());
    let last_checkpoint = last.and_then(|c| {
        let completed_at = time(c)?;
        Some(LastCheckpoint {
            id: c.get("id").and_then(Value::as_u64).unwrap_or(0),
            completed_at,
            age_s: secs(now - completed_at),
            external_path: c
                .get("external_path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty() && *p != "<checkpoint-not-externally-addressable>")
                .map(str::to_string),
        })
    });
    // Completed checkpoints (not savepoints) of the listed history, oldest first.
    let mut done: Vec<&Value> = v
        .get("history")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("status").and_then(Value::as_str) == Some("COMPLETED"))
        .filter(|c| !c.get("is_savepoint").and_then(Value::as_bool).unwrap_or(false))
        .collect();
    done.sort_by_key(|c| c.get("id").and_then(Value::as_u64).unwrap_or(0));
    let trend = match (done.first(), done.last()) {
        (Some(a), Some(b)) if done.len() >= 2 => match (size(a), size(b), time(a), time(b)) {
            (Some(from), Some(to), Some(ta), Some(tb)) => {
                Some(SizeTrend { samples: done.len(), from_bytes: from, to_bytes: to, span_s: secs(tb - ta) })
            }
            _ => None,
        },
        _ => None,
    };
    CheckpointStats { last: last_checkpoint, size: last.and_then(size), trend }
}

/// A duration in whole seconds, rounded.
fn secs(d: chrono::Duration) -> i64 {
    (d.num_milliseconds() + 500).div_euclid(1000)
}

/// The report as a table for people: one row per job, one per target that did not answer or has no jobs.
pub fn render_table(r: &Report) -> String {
    let head = ["TARGET", "FLINK", "JOB", "STATE", "CHECKPOINTING", "LAST CKPT", "STATE SIZE", "TREND", "RESTARTS 24H"];
    let mut rows: Vec<Vec<String>> = vec![];
    let mut notes: Vec<String> = vec![];
    for t in &r.targets {
        let version = t.flink_version.clone().unwrap_or_else(|| "-".into());
        if let Some(e) = &t.error {
            rows.push(vec![t.target.clone(), version, "-".into(), "no answer".into()]);
            notes.push(format!("{}: {e}", t.target));
            continue;
        }
        if t.jobs.is_empty() {
            rows.push(vec![t.target.clone(), version, "-".into(), "(no jobs)".into()]);
            continue;
        }
        for j in &t.jobs {
            let ckpt = match &j.checkpointing {
                Checkpointing::On { mode, interval_ms, storage, .. } => {
                    let mode = mode.map(|m| m.as_str()).unwrap_or("?");
                    let every = humantime::format_duration(std::time::Duration::from_millis(*interval_ms));
                    let storage = storage.as_deref().map(short_storage).unwrap_or("?");
                    format!("{mode} every {every}, {storage}")
                }
                Checkpointing::Off => "off".into(),
                Checkpointing::Unknown { error } => {
                    notes.push(format!("{}/{}: checkpoint config: {error}", t.target, j.name));
                    "?".into()
                }
            };
            if let Some(e) = &j.error {
                notes.push(format!("{}/{}: checkpoints: {e}", t.target, j.name));
            }
            let last =
                j.last_checkpoint.as_ref().map(|c| format!("{} ago", age(c.age_s))).unwrap_or_else(|| "-".into());
            let size = j.state_size.map(bytes).unwrap_or_else(|| "-".into());
            let trend = j.state_size_trend.as_ref().map(trend).unwrap_or_else(|| "-".into());
            let restarts = j.restarts_last_day.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
            rows.push(vec![
                t.target.clone(),
                version.clone(),
                j.name.clone(),
                j.state.clone(),
                ckpt,
                last,
                size,
                trend,
                restarts,
            ]);
        }
    }
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            l.push_str(c);
            if i + 1 < cells.len() {
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head.map(String::from));
    for r in &rows {
        line(r);
    }
    for n in notes {
        out.push_str(&format!("\n{n}"));
    }
    out
}

/// `FileSystemCheckpointStorage` → `filesystem`, `JobManagerCheckpointStorage` → `jobmanager`.
fn short_storage(s: &str) -> &str {
    match s {
        "FileSystemCheckpointStorage" => "filesystem",
        "JobManagerCheckpointStorage" => "jobmanager",
        other => other,
    }
}

fn age(s: i64) -> String {
    match s {
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn trend(t: &SizeTrend) -> String {
    let change = match t.change_pct() {
        Some(p) if p.abs() < 0.05 => "flat".to_string(),
        Some(p) => format!("{p:+.1}%"),
        None if t.to_bytes == 0 => "flat".to_string(),
        None => format!("+{}", bytes(t.to_bytes)),
    };
    format!("{change} over {} ckpts ({})", t.samples, age(t.span_s))
}

#[cfg(test)]
mod tests;
