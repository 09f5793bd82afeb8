//! The adaptive scheduler's in-place rescaling (Flink ≥ 1.18): `GET`/`PUT /jobs/:jid/resource-requirements`,
//! shaped like `tests/fixtures/flink-2.3.0-adaptive/`.
//!
//! Off by default (the fake runs the default scheduler, whose answer to both calls is a 500
//! `UnsupportedOperationException`, as a real 2.3.0 cluster sends). With
//! [`crate::FakeJobManager::set_adaptive_scheduler`] on, `/jobmanager/config` lists `jobmanager.scheduler:
//! adaptive`, `/config` says `features.web-rescale: true`, jobs report `schedulerType: Adaptive`, and a PUT of
//! per-vertex bounds rescales the job after [`crate::FakeJobManager::set_rescale_delay`] (zero by default; a real
//! cluster took about 30 s): to the highest upper bound asked, as far as the free slots allow (the fake's job
//! occupies one slot per unit of parallelism). If even the highest lower bound cannot be met, the job stays as it
//! is (a real one would wait for resources). The job id, state and checkpoints carry on.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::server::{Reply, State};

/// What the fake's adaptive scheduler knows.
#[derive(Debug, Default)]
pub(super) struct Adaptive {
    /// Whether the cluster runs the adaptive scheduler.
    pub(super) on: bool,
    /// How long after a PUT the job runs at its new parallelism.
    pub(super) delay: Duration,
    /// The bounds last put, per job.
    requirements: HashMap<String, Value>,
    /// Rescales not applied yet: (jid, lower, upper, due at ms).
    pending: Vec<(String, u32, u32, i64)>,
}

const UNSUPPORTED: &str = "java.lang.UnsupportedOperationException: The DefaultScheduler does not support changing \
     the parallelism without a job restart. This feature is currently only expected to work with the \
     AdaptiveScheduler.";

fn internal(message: &str, frames: &str) -> Reply {
    Reply::errors(
        500,
        &[
            "Internal server error.",
            &format!("<Exception on server side:\n{message}\n{frames}\nEnd of exception on server side>"),
        ],
    )
}

fn not_found(jid: &str) -> Reply {
    internal(
        &format!("org.apache.flink.runtime.messages.FlinkJobNotFoundException: Could not find Flink job ({jid})"),
        "\tat org.apache.flink.runtime.dispatcher.Dispatcher.getJobMasterGateway(Dispatcher.java:2432)",
    )
}

fn bad_request(message: &str) -> Reply {
    Reply::errors(
        400,
        &[&format!(
            "org.apache.flink.runtime.rest.handler.RestHandlerException: {message}\n\tat org.apache.flink.runtime.rest.handler.job.JobResourceRequirementsUpdateHandler.handleRequest(JobResourceRequirementsUpdateHandler.java:77)"
        )],
    )
}

/// `GET /jobs/:jid/resource-requirements`.
pub(super) fn get(st: &State, jid: &str) -> Reply {
    let Some(job) = st.jobs.iter().find(|j| j.jid == jid) else { return not_found(jid) };
    if !st.adaptive.on {
        return internal(
            UNSUPPORTED,
            "\tat org.apache.flink.runtime.scheduler.SchedulerNG.requestJobResourceRequirements(SchedulerNG.java:225)",
        );
    }
    if let Some(r) = st.adaptive.requirements.get(jid) {
        return Reply::ok(r);
    }
    let bounds = json!({"parallelism": {"lowerBound": 1, "upperBound": job.parallelism}});
    let m: Map<String, Value> = job.vertex_ids.iter().map(|v| (v.clone(), bounds.clone())).collect();
    Reply::ok(&Value::Object(m))
}

/// `PUT /jobs/:jid/resource-requirements`.
pub(super) fn put(st: &mut State, jid: &str, body: &[u8], now: i64) -> Reply {
    let Some(job) = st.jobs.iter().find(|j| j.jid == jid) else { return not_found(jid) };
    if !st.adaptive.on {
        return internal(
            UNSUPPORTED,
            "\tat org.apache.flink.runtime.scheduler.SchedulerNG.updateJobResourceRequirements(SchedulerNG.java:237)",
        );
    }
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return bad_request("Request did not match expected format JobResourceRequirementsBody.");
    };
    if m.is_empty() {
        return bad_request("Request body does not specify resource requirements.");
    }
    let (mut lower, mut upper, mut problems) = (0u32, 0u32, vec![]);
    for (vertex, req) in &m {
        if !job.vertex_ids.contains(vertex) {
            problems.push(format!("Job vertex {vertex} was not found in the job."));
            continue;
        }
        let bound = |k: &str| req.pointer(&format!("/parallelism/{k}")).and_then(Value::as_u64).map(|n| n as u32);
        let (Some(lo), Some(up)) = (bound("lowerBound"), bound("upperBound")) else {
            return bad_request("Request did not match expected format JobResourceRequirementsBody.");
        };
        if up > 128 {
            problems.push(format!(
                "The newly requested parallelism {up} for the job vertex {vertex} exceeds its maximum parallelism 128."
            ));
        }
        if lo > up || lo == 0 {
            problems.push(format!("Invalid parallelism bounds [{lo}, {up}] for the job vertex {vertex}."));
        }
        lower = lower.max(lo);
        upper = upper.max(up);
    }
    if !problems.is_empty() {
        return bad_request(&problems.join("\n"));
    }
    st.adaptive.requirements.insert(jid.to_string(), Value::Object(m));
    let due = now + st.adaptive.delay.as_millis() as i64;
    st.adaptive.pending.retain(|p| p.0 != jid);
    st.adaptive.pending.push((jid.to_string(), lower, upper, due));
    Reply::ok(&json!({}))
}

/// Applies the rescales that are due at `now`, each as far as the free slots allow. `free` is the number of free
/// slots before any of them.
pub(super) fn apply_due(st: &mut State, now: i64, slots: u32) {
    if st.adaptive.pending.is_empty() {
        return;
    }
    let (due, later): (Vec<_>, Vec<_>) = st.adaptive.pending.drain(..).partition(|p| p.3 <= now);
    st.adaptive.pending = later;
    for (jid, lower, upper, _) in due {
        let used: u32 =
            st.jobs.iter().filter(|j| !j.status.is_globally_terminal() && j.jid != jid).map(|j| j.parallelism).sum();
        let available = slots.saturating_sub(used);
        if let Some(j) = st.jobs.iter_mut().find(|j| j.jid == jid && !j.status.is_globally_terminal()) {
            let target = upper.min(available);
            if target >= lower.max(1) {
                j.parallelism = target;
            }
        }
    }
}

/// `schedulerType` of a job's answers when the adaptive scheduler runs.
pub(super) fn mark_scheduler(st: &State, mut v: Value) -> Value {
    if st.adaptive.on {
        if let Some(m) = v.as_object_mut().filter(|m| m.contains_key("schedulerType")) {
            m.insert("schedulerType".into(), json!("Adaptive"));
        }
    }
    v
}
