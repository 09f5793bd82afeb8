//! The typed Flink REST calls that restarts need: job lists, checkpoints, savepoints, cancel, jars, submission.
//! Built on a target's [`TargetClient`] (same auth, TLS and timeouts as probes). Works with Flink 1.15 through 2.x.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::fetch::{HttpRequest, TargetClient};

/// A REST call that failed: which call, and why (HTTP status and Flink's first error line, or the transport error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: {message}")]
pub struct FlinkError {
    /// The call, e.g. `POST /jobs/<jid>/stop`.
    pub call: String,
    /// What went wrong.
    pub message: String,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
}

/// One entry of `/jobs/overview`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    /// Job id.
    pub jid: String,
    /// Job name.
    pub name: String,
    /// Job state (`RUNNING`, `FAILED`, …).
    pub state: String,
    /// Start time, ms since the epoch.
    pub start_time: i64,
}

impl JobSummary {
    /// True while Flink itself is responsible for the job (running, starting, restarting, failing over).
    pub fn is_live(&self) -> bool {
        !matches!(self.state.as_str(), "FAILED" | "CANCELED" | "FINISHED")
    }
}

/// The state of a savepoint operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointStatus {
    /// Not done yet.
    InProgress,
    /// Done, at this location.
    Completed(String),
    /// Done, but failed (Flink's `failure-cause`).
    Failed(String),
    /// Flink does not know the trigger (expired after `rest.async.store-duration`, or a JobManager fail-over).
    Unknown,
}

/// What `/jobs/:jid/checkpoints` says about durable state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// `latest.completed.external_path`, if it is a real, restorable location.
    pub latest_completed: Option<String>,
    /// `latest.savepoint.external_path`.
    pub latest_savepoint: Option<String>,
    /// `latest.restored.external_path`: where the job's state came from.
    pub restored: Option<String>,
}

/// How to submit a job from a jar over REST (`POST /jars/:jarid/run`).
#[derive(Debug, Clone, Default)]
pub struct JarRun {
    /// Entry class (`entryClass`), if the jar's manifest does not name it.
    pub entry_class: Option<String>,
    /// Program arguments (`programArgsList`; never the removed `programArgs` string).
    pub args: Vec<String>,
    /// Parallelism.
    pub parallelism: Option<u32>,
    /// The savepoint or retained checkpoint to restore from.
    pub savepoint: Option<String>,
    /// Allow state that maps to no operator.
    pub allow_non_restored_state: bool,
    /// `CLAIM`, `NO_CLAIM` or `LEGACY`.
    pub claim_mode: Option<String>,
    /// Extra Flink configuration for the job (`flinkConfiguration`, Flink 1.19+).
    pub flink_config: std::collections::BTreeMap<String, String>,
}

/// Typed Flink REST calls on one target.
#[derive(Clone, Debug)]
pub struct FlinkClient<'a> {
    client: &'a TargetClient,
    max_body: usize,
}

/// Strips `file:` and a trailing `/_metadata` or `/`, so that the same location written two ways compares equal.
pub fn normalize_location(p: &str) -> String {
    let mut s = p.trim();
    for prefix in ["file://", "file:"] {
        if let Some(rest) = s.strip_prefix(prefix) {
            s = rest;
            break;
        }
    }
    let s = s.trim_end_matches('/');
    let s = s.strip_suffix("/_metadata").unwrap_or(s);
    let mut out = s.to_string();
    while out.starts_with("//") {
        out.remove(0);
    }
    out
}

fn restorable(p: Option<&str>) -> Option<String> {
    p.filter(|p| !p.is_empty() && *p != "<checkpoint-not-externally-addressable>").map(str::to_string)
}

impl<'a> FlinkClient<'a> {
    /// A client on `target`.
    pub fn new(client: &'a TargetClient) -> Self {
        Self { client, max_body: 32 * 1024 * 1024 }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, FlinkError> {
        let call = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let req = HttpRequest { method, path: path.to_string(), headers: vec![], body, max_body: self.max_body };
        let (status, body, err) = self.client.send(&req).await;
        match err {
            None => Ok(body.unwrap_or(Value::Null)),
            Some(e) => {
                // Flink's first error line is often a wrapper ("Could not execute application."); the innermost
                // `Caused by:` says what went wrong (a jar whose main() threw).
                let cause = body
                    .as_ref()
                    .and_then(|b| b.pointer("/errors/0"))
                    .and_then(Value::as_str)
                    .and_then(|t| t.lines().rev().find_map(|l| l.trim_start().strip_prefix("Caused by: ")))
                    .map(str::to_string);
                let message = match cause {
                    Some(c) => format!("{} (caused by {c})", e.message),
                    None => e.message,
                };
                Err(FlinkError { call, message, status })
            }
        }
    }

    /// The Flink version the cluster reports (`/config` → `flink-version`).
    pub async fn version(&self) -> Result<String, FlinkError> {
        let v = self.call(reqwest::Method::GET, "/config", None).await?;
        Ok(v.get("flink-version").and_then(Value::as_str).unwrap_or("").to_string())
    }

    /// Every job the JobManager knows, newest first.
    pub async fn jobs(&self) -> Result<Vec<JobSummary>, FlinkError> {
        let v = self.call(reqwest::Method::GET, "/jobs/overview", None).await?;
        let mut jobs: Vec<JobSummary> = v
            .get("jobs")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|j| JobSummary {
                        jid: j.get("jid").and_then(Value::as_str).unwrap_or("").into(),
                        name: j.get("name").and_then(Value::as_str).unwrap_or("").into(),
                        state: j.get("state").and_then(Value::as_str).unwrap_or("").into(),
                        start_time: j.get("start-time").and_then(Value::as_i64).unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.start_time));
        Ok(jobs)
    }

    /// The state of one job.
    pub async fn job_state(&self, jid: &str) -> Result<String, FlinkError> {
        let v = self.call(reqwest::Method::GET, &format!("/jobs/{jid}"), None).await?;
        Ok(v.get("state").and_then(Value::as_str).unwrap_or("").to_string())
    }

    /// What the job's checkpoint statistics say about restorable state.
    pub async fn checkpoints(&self, jid: &str) -> Result<CheckpointInfo, FlinkError> {
        let v = self.call(reqwest::Method::GET, &format!("/jobs/{jid}/checkpoints"), None).await?;
        let p = |ptr: &str| restorable(v.pointer(ptr).and_then(Value::as_str));
        Ok(CheckpointInfo {
            latest_completed: p("/latest/completed/external_path"),
            latest_savepoint: p("/latest/savepoint/external_path"),
            restored: p("/latest/restored/external_path"),
        })
    }

    /// Stop-with-savepoint (`drain: false`, so the job can resume). Returns the trigger id.
    pub async fn stop_with_savepoint(&self, jid: &str, dir: Option<&str>) -> Result<String, FlinkError> {
        let mut body = json!({"drain": false});
        if let Some(d) = dir {
            body["targetDirectory"] = json!(d);
        }
        let v = self.call(reqwest::Method::POST, &format!("/jobs/{jid}/stop"), Some(body)).await?;
        trigger_id(&v, &format!("POST /jobs/{jid}/stop"))
    }

    /// Triggers a savepoint (optionally cancelling the job). Returns the trigger id.
    pub async fn trigger_savepoint(&self, jid: &str, dir: Option<&str>, cancel: bool) -> Result<String, FlinkError> {
        let mut body = json!({"cancel-job": cancel});
        if let Some(d) = dir {
            body["target-directory"] = json!(d);
        }
        let v = self.call(reqwest::Method::POST, &format!("/jobs/{jid}/savepoints"), Some(body)).await?;
        trigger_id(&v, &format!("POST /jobs/{jid}/savepoints"))
    }

    /// Polls a savepoint (or stop) operation once.
    pub async fn savepoint_status(&self, jid: &str, trigger: &str) -> Result<SavepointStatus, FlinkError> {
        match self.call(reqwest::Method::GET, &format!("/jobs/{jid}/savepoints/{trigger}"), None).await {
            Err(e) if e.status == Some(404) => Ok(SavepointStatus::Unknown),
            Err(e) => Err(e),
            Ok(v) => {
                if v.pointer("/status/id").and_then(Value::as_str) != Some("COMPLETED") {
                    return Ok(SavepointStatus::InProgress);
                }
                if let Some(loc) = v.pointer("/operation/location").and_then(Value::as_str) {
                    return Ok(SavepointStatus::Completed(loc.to_string()));
                }
                let cause = v
                    .pointer("/operation/failure-cause/stack-trace")
                    .and_then(Value::as_str)
                    .and_then(|t| {
                        let lines: Vec<&str> = t.lines().collect();
                        lines
                            .iter()
                            .rev()
                            .find_map(|l| l.trim_start().strip_prefix("Caused by: "))
                            .or(lines.first().copied())
                            .map(str::to_string)
                    })
                    .or_else(|| v.pointer("/operation/failure-cause/class").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| "savepoint failed (no cause given)".into());
                Ok(SavepointStatus::Failed(cause))
            }
        }
    }

    /// Cancels a job (`PATCH /jobs/:jid?mode=cancel`).
    pub async fn cancel(&self, jid: &str) -> Result<(), FlinkError> {
        self.call(reqwest::Method::PATCH, &format!("/jobs/{jid}?mode=cancel"), Some(json!({}))).await.map(|_| ())
    }

    /// Finds an uploaded jar by file name (the newest upload of that name) or by its id. `None` if there is none.
    pub async fn find_jar(&self, name: &str) -> Result<Option<String>, FlinkError> {
        let v = self.call(reqwest::Method::GET, "/jars", None).await?;
        let mut files: Vec<&Value> = v
            .get("files")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|f| f["name"] == name || f["id"] == name).collect())
            .unwrap_or_default();
        files.sort_by_key(|f| std::cmp::Reverse(f.get("uploaded").and_then(Value::as_i64).unwrap_or(0)));
        Ok(files.first().and_then(|f| f.get("id")).and_then(Value::as_str).map(str::to_string))
    }

    /// Every uploaded jar: `(id, file name, uploaded ms)`, newest first.
    pub async fn jars(&self) -> Result<Vec<(String, String, i64)>, FlinkError> {
        let v = self.call(reqwest::Method::GET, "/jars", None).await?;
        let mut jars: Vec<(String, String, i64)> = v
            .get("files")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|f| {
                        let s = |k: &str| f.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        (s("id"), s("name"), f.get("uploaded").and_then(Value::as_i64).unwrap_or(0))
                    })
                    .collect()
            })
            .unwrap_or_default();
        jars.sort_by_key(|j| std::cmp::Reverse(j.2));
        Ok(jars)
    }

    /// The parallelism of each vertex of a job (`GET /jobs/:jid` → `vertices[].parallelism`).
    pub async fn vertex_parallelism(&self, jid: &str) -> Result<Vec<u32>, FlinkError> {
        let v = self.call(reqwest::Method::GET, &format!("/jobs/{jid}"), None).await?;
        Ok(v.get("vertices")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.get("parallelism").and_then(Value::as_u64)).map(|p| p as u32).collect())
            .unwrap_or_default())
    }

    /// The root cause of the job's newest failure (`GET /jobs/:jid/exceptions`); `None` when it never failed.
    pub async fn root_cause(&self, jid: &str) -> Result<Option<super::RootCause>, FlinkError> {
        let v = self.call(reqwest::Method::GET, &format!("/jobs/{jid}/exceptions?maxExceptions=1"), None).await?;
        Ok(super::root_cause(&v))
    }

    /// Uploads a jar (`POST /jars/upload`, multipart part `jarfile`). Returns its jar id.
    pub async fn upload_jar(&self, path: &Path) -> Result<String, FlinkError> {
        let call = "POST /jars/upload".to_string();
        let v = self.client.upload(path, "/jars/upload", "jarfile").await.map_err(|(status, message)| FlinkError {
            call: call.clone(),
            message,
            status,
        })?;
        let file = v.get("filename").and_then(Value::as_str).unwrap_or("");
        let id = file.rsplit('/').next().unwrap_or("");
        if id.is_empty() {
            return Err(FlinkError { call, message: format!("no filename in the answer: {v}"), status: None });
        }
        Ok(id.to_string())
    }

    /// Submits a job from an uploaded jar. `flink_major` picks the claim-mode field the cluster understands
    /// (`claimMode` in 2.x, `restoreMode` in 1.x). Returns the new job id.
    pub async fn run_jar(&self, jar_id: &str, run: &JarRun, flink_major: u32) -> Result<String, FlinkError> {
        let mut body = json!({"programArgsList": run.args, "allowNonRestoredState": run.allow_non_restored_state});
        if let Some(c) = &run.entry_class {
            body["entryClass"] = json!(c);
        }
        if let Some(p) = run.parallelism {
            body["parallelism"] = json!(p);
        }
        if let Some(s) = &run.savepoint {
            body["savepointPath"] = json!(s);
        }
        if let Some(m) = &run.claim_mode {
            body[if flink_major >= 2 { "claimMode" } else { "restoreMode" }] = json!(m);
        }
        if !run.flink_config.is_empty() {
            body["flinkConfiguration"] = json!(run.flink_config);
        }
        let v = self.call(reqwest::Method::POST, &format!("/jars/{jar_id}/run"), Some(body)).await?;
        v.get("jobid").and_then(Value::as_str).map(str::to_string).ok_or_else(|| FlinkError {
            call: format!("POST /jars/{jar_id}/run"),
            message: format!("no jobid in the answer: {v}"),
            status: None,
        })
    }

    /// Waits until `jid` is RUNNING, looking after 100 ms, then twice as long each time up to `poll`. Fails early
    /// when it reaches a terminal state.
    pub async fn wait_running(&self, jid: &str, timeout: Duration, poll: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = Duration::from_millis(100).min(poll);
        loop {
            let last;
            match self.job_state(jid).await {
                Ok(s) if s == "RUNNING" => return Ok(()),
                Ok(s) if matches!(s.as_str(), "FAILED" | "CANCELED" | "FINISHED") => {
                    return Err(format!("the new job {jid} ended as {s} instead of running"))
                }
                Ok(s) => last = s,
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the new job {jid} was not RUNNING within {} (last seen: {last})",
                    humantime::format_duration(timeout)
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(poll);
        }
    }
}

fn trigger_id(v: &Value, call: &str) -> Result<String, FlinkError> {
    v.get("request-id").and_then(Value::as_str).map(str::to_string).ok_or_else(|| FlinkError {
        call: call.into(),
        message: format!("no request-id in the answer: {v}"),
        status: None,
    })
}

/// The major version number of a Flink version string (`2.3.0` → 2). 1 when unknown.
pub fn major(version: &str) -> u32 {
    version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_compare_modulo_scheme_and_metadata() {
        assert_eq!(normalize_location("file:/data/chk-5/_metadata"), "/data/chk-5");
        assert_eq!(normalize_location("file:///data/chk-5/"), "/data/chk-5");
        assert_eq!(normalize_location("/data/chk-5"), "/data/chk-5");
        assert_eq!(normalize_location("s3://b/sp-1"), "s3://b/sp-1");
        assert_eq!(restorable(Some("<checkpoint-not-externally-addressable>")), None);
        assert_eq!(major("2.3.0"), 2);
        assert_eq!(major("1.20.1"), 1);
    }
}
