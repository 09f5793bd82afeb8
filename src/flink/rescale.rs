//! Rescaling a running job in place: Flink ≥ 1.18 with the adaptive scheduler takes new per-vertex parallelism
//! bounds through `PUT /jobs/:jid/resource-requirements` and rescales the job itself (a restart from its latest
//! checkpoint inside the JobManager, same job id, no savepoint, no resubmission).
//!
//! [`supports_in_place`] decides whether a cluster can do that; [`rescale_in_place`] asks for it and then checks,
//! by polling `GET /jobs/:jid`, that every vertex runs at the new parallelism.
//!
//! **The bounds sent.** Each vertex gets `lowerBound: 1, upperBound: N`, as the Flink Kubernetes Operator does for
//! its in-place scaling. With a lower bound of N a cluster short of slots would stop the job and wait for
//! resources; with 1 the adaptive scheduler runs it at as much of N as the free slots allow and keeps it running.
//! Verification then reports honestly what the job got ([`InPlaceResult::Partial`]) instead of pretending.

use std::time::Duration;

use serde_json::{json, Value};

use super::client::FlinkError;
use crate::fetch::{HttpRequest, TargetClient};

/// Whether a cluster can rescale a job in place, and why (or why not): the reason is shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPlaceSupport {
    /// In-place rescaling works: Flink ≥ 1.18 and the adaptive scheduler.
    Yes {
        /// The Flink version the cluster reports.
        version: String,
        /// How the adaptive scheduler was recognised (`jobmanager.scheduler: adaptive`, …).
        evidence: String,
    },
    /// It does not; the rescale goes through a savepoint restart.
    No {
        /// Why not, for people.
        reason: String,
    },
}

impl InPlaceSupport {
    /// True for [`InPlaceSupport::Yes`].
    pub fn is_yes(&self) -> bool {
        matches!(self, InPlaceSupport::Yes { .. })
    }
}

/// Whether `version` (`1.18.0`, `2.3.0`, `1.20-SNAPSHOT`) is at least 1.18, where the resource-requirements API
/// exists. An unreadable version is not.
pub fn version_supports(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    major > 1 || (major == 1 && minor >= 18)
}

async fn call(
    client: &TargetClient,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, FlinkError> {
    let call = format!("{method} {path}");
    let req = HttpRequest { method, path: path.to_string(), headers: vec![], body, max_body: 4 * 1024 * 1024 };
    let (status, body, err) = client.send(&req).await;
    match err {
        None => Ok(body.unwrap_or(Value::Null)),
        Some(e) => Err(FlinkError { call, message: e.message, status }),
    }
}

/// Decides whether the cluster behind `client` can rescale `jid` in place: the Flink version from `/config`
/// (`flink-version` ≥ 1.18), then the adaptive scheduler, recognised by the job's `schedulerType` (`Adaptive`,
/// Flink 2.x), else by `jobmanager.scheduler: adaptive` in `/jobmanager/config`, else by `/config`'s
/// `features.web-rescale` (true only with the adaptive scheduler). A cluster that cannot be asked is `No`, with
/// the error.
pub async fn supports_in_place(client: &TargetClient, jid: &str) -> InPlaceSupport {
    let config = match call(client, reqwest::Method::GET, "/config", None).await {
        Ok(v) => v,
        Err(e) => return InPlaceSupport::No { reason: format!("cannot read the Flink version: {e}") },
    };
    let version = config.get("flink-version").and_then(Value::as_str).unwrap_or("").to_string();
    if !version_supports(&version) {
        let shown = if version.is_empty() { "an unknown version".to_string() } else { format!("Flink {version}") };
        return InPlaceSupport::No {
            reason: format!("{shown}: in-place rescaling needs Flink 1.18 or newer with the adaptive scheduler"),
        };
    }
    // The job says which scheduler runs it (Flink 2.x): the most precise answer, also for a job that chose its own.
    if !jid.is_empty() {
        if let Ok(job) = call(client, reqwest::Method::GET, &format!("/jobs/{jid}"), None).await {
            match job.get("schedulerType").and_then(Value::as_str) {
                Some("Adaptive") => {
                    return InPlaceSupport::Yes { version, evidence: "the job's schedulerType: Adaptive".into() }
                }
                Some(other) => {
                    return InPlaceSupport::No {
                        reason: format!(
                            "job {jid} runs under the {other} scheduler; in-place rescaling needs the adaptive one"
                        ),
                    }
                }
                None => {}
            }
        }
    }
    // Else the cluster's configuration (Flink 1.x jobs do not say).
    if let Ok(Value::Array(entries)) = call(client, reqwest::Method::GET, "/jobmanager/config", None).await {
        let scheduler = entries
            .iter()
            .find(|e| e.get("key").and_then(Value::as_str) == Some("jobmanager.scheduler"))
            .and_then(|e| e.get("value").and_then(Value::as_str))
            .map(str::to_ascii_lowercase);
        match scheduler.as_deref() {
            Some("adaptive") => {
                return InPlaceSupport::Yes { version, evidence: "jobmanager.scheduler: adaptive".into() }
            }
            Some(other) => {
                return InPlaceSupport::No {
                    reason: format!(
                        "Flink {version} runs the `{other}` scheduler (jobmanager.scheduler); in-place rescaling \
                         needs `adaptive`"
                    ),
                }
            }
            None => {}
        }
    }
    if config.pointer("/features/web-rescale").and_then(Value::as_bool) == Some(true) {
        return InPlaceSupport::Yes { version, evidence: "/config features.web-rescale is true".into() };
    }
    InPlaceSupport::No {
        reason: format!(
            "Flink {version} does not run the adaptive scheduler (jobmanager.scheduler is not `adaptive`); in-place \
             rescaling needs it"
        ),
    }
}

/// A job's vertices as `GET /jobs/:jid` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VertexParallelism {
    /// Vertex id (the key of the resource requirements).
    pub id: String,
    /// Vertex name.
    pub name: String,
    /// Its parallelism now.
    pub parallelism: u32,
    /// Its status (`RUNNING`, `CREATED`, …).
    pub status: String,
}

/// The state of a job and its vertices' parallelism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobShape {
    /// The job's state.
    pub state: String,
    /// Its vertices.
    pub vertices: Vec<VertexParallelism>,
}

impl JobShape {
    /// The job's parallelism: the highest of its vertices' (0 without vertices).
    pub fn parallelism(&self) -> u32 {
        self.vertices.iter().map(|v| v.parallelism).max().unwrap_or(0)
    }

    /// Whether the job is RUNNING with every vertex RUNNING.
    pub fn all_running(&self) -> bool {
        self.state == "RUNNING" && !self.vertices.is_empty() && self.vertices.iter().all(|v| v.status == "RUNNING")
    }

    /// `map=2, sink=2` for messages.
    pub fn describe(&self) -> String {
        self.vertices.iter().map(|v| format!("{}={}", v.name, v.parallelism)).collect::<Vec<_>>().join(", ")
    }
}

/// Reads a job's state and its vertices' parallelism (`GET /jobs/:jid`).
pub async fn job_shape(client: &TargetClient, jid: &str) -> Result<JobShape, FlinkError> {
    let v = call(client, reqwest::Method::GET, &format!("/jobs/{jid}"), None).await?;
    Ok(parse_shape(&v))
}

fn parse_shape(v: &Value) -> JobShape {
    let vertices = v
        .get("vertices")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| VertexParallelism {
                    id: x.get("id").and_then(Value::as_str).unwrap_or("").into(),
                    name: x.get("name").and_then(Value::as_str).unwrap_or("").into(),
                    parallelism: x.get("parallelism").and_then(Value::as_u64).unwrap_or(0) as u32,
                    status: x.get("status").and_then(Value::as_str).unwrap_or("").into(),
                })
                .collect()
        })
        .unwrap_or_default();
    JobShape { state: v.get("state").and_then(Value::as_str).unwrap_or("").to_string(), vertices }
}

/// Free task slots of the cluster (`/overview` → `slots-available`), if it says.
pub async fn free_slots(client: &TargetClient) -> Option<u32> {
    let v = call(client, reqwest::Method::GET, "/overview", None).await.ok()?;
    v.get("slots-available").and_then(Value::as_u64).map(|n| n as u32)
}

/// How an in-place rescale ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPlaceResult {
    /// Every vertex runs at the parallelism asked for.
    Done {
        /// The job's shape afterwards.
        shape: JobShape,
    },
    /// The job runs, but below the parallelism asked for, and the cluster has no free slot left: Flink gave it all
    /// it could. The bounds stay set, so the job grows when slots come.
    Partial {
        /// The job's shape afterwards.
        shape: JobShape,
        /// Free slots when this was decided.
        free_slots: u32,
    },
    /// A REST call failed or the job did not get there in time; the message says which and what was seen last.
    Failed {
        /// The step (`requirements`, `verify`).
        step: &'static str,
        /// Why.
        message: String,
    },
}

/// Asks Flink to run every vertex of `jid` at `parallelism` (`PUT /jobs/:jid/resource-requirements` with bounds
/// `1..=parallelism` for each vertex, see the module docs) and waits until `GET /jobs/:jid` shows it, at most
/// `timeout`, polling every `poll`. Also returns when Flink accepted the new bounds (`None` if it did not), which
/// splits the time into Warden's part and Flink's.
pub async fn rescale_in_place(
    client: &TargetClient,
    jid: &str,
    parallelism: u32,
    timeout: Duration,
    poll: Duration,
) -> (InPlaceResult, Option<std::time::Instant>) {
    let before = match job_shape(client, jid).await {
        Ok(s) => s,
        Err(e) => return (InPlaceResult::Failed { step: "requirements", message: e.to_string() }, None),
    };
    // The vertex ids come from the requirements themselves (they are what the PUT must name).
    let path = format!("/jobs/{jid}/resource-requirements");
    let current = match call(client, reqwest::Method::GET, &path, None).await {
        Ok(v) => v,
        Err(e) => return (InPlaceResult::Failed { step: "requirements", message: e.to_string() }, None),
    };
    let Some(current) = current.as_object().filter(|m| !m.is_empty()) else {
        let message = format!("GET {path} named no vertex: {current}");
        return (InPlaceResult::Failed { step: "requirements", message }, None);
    };
    let body: serde_json::Map<String, Value> = current
        .keys()
        .map(|id| (id.clone(), json!({"parallelism": {"lowerBound": 1, "upperBound": parallelism}})))
        .collect();
    if let Err(e) = call(client, reqwest::Method::PUT, &path, Some(Value::Object(body))).await {
        return (InPlaceResult::Failed { step: "requirements", message: e.to_string() }, None);
    }
    let asked = std::time::Instant::now();
    (verify(client, jid, parallelism, before, timeout, poll).await, Some(asked))
}

/// Polls `GET /jobs/:jid` until every vertex runs at `parallelism`, the job got all the slots there are, or
/// `timeout` passed.
async fn verify(
    client: &TargetClient,
    jid: &str,
    parallelism: u32,
    before: JobShape,
    timeout: Duration,
    poll: Duration,
) -> InPlaceResult {
    let old = before.parallelism();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = before;
    loop {
        match job_shape(client, jid).await {
            Ok(shape) => {
                if matches!(shape.state.as_str(), "FAILED" | "CANCELED" | "FINISHED") {
                    return InPlaceResult::Failed {
                        step: "verify",
                        message: format!("job {jid} ended as {} while rescaling", shape.state),
                    };
                }
                if shape.all_running() && shape.vertices.iter().all(|v| v.parallelism == parallelism) {
                    return InPlaceResult::Done { shape };
                }
                // Rescaled, but not as far as asked, and nothing left to give: Flink's final word for now.
                if shape.all_running() && shape.parallelism() != old && shape.parallelism() < parallelism {
                    if let Some(0) = free_slots(client).await {
                        return InPlaceResult::Partial { shape, free_slots: 0 };
                    }
                }
                last = shape;
            }
            Err(e) => tracing::debug!(jid, "while verifying the rescale: {e}"),
        }
        if tokio::time::Instant::now() >= deadline {
            let free = free_slots(client).await;
            let slots = match free {
                Some(0) if parallelism > last.parallelism() => {
                    "; the cluster has no free slot, so Flink cannot give it more".to_string()
                }
                Some(n) => format!("; {n} free slot(s)"),
                None => String::new(),
            };
            return InPlaceResult::Failed {
                step: "verify",
                message: format!(
                    "job {jid} did not reach parallelism {parallelism} within {} (last seen: {}, {}){slots}",
                    humantime::format_duration(timeout),
                    last.state,
                    last.describe()
                ),
            };
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_1_18_support_it() {
        assert!(version_supports("1.18.0"));
        assert!(version_supports("1.20.1"));
        assert!(version_supports("2.3.0"));
        assert!(version_supports("1.19-SNAPSHOT"));
        assert!(!version_supports("1.17.2"));
        assert!(!version_supports("1.15.4"));
        assert!(!version_supports(""));
    }

    #[test]
    fn a_job_shape_from_a_2_3_0_answer() {
        let v: Value = serde_json::from_str(include_str!("../../tests/fixtures/flink-2.3.0/job-running.json")).unwrap();
        let s = parse_shape(&v);
        assert_eq!(s.state, "RUNNING");
        assert_eq!(s.vertices.len(), 2);
        assert_eq!(s.parallelism(), 1);
        assert!(s.all_running());
        assert_eq!(s.describe(), "Source: clicks-source=1, Map -> Sink: Writer=1");
    }
}
