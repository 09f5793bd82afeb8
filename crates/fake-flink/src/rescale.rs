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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{json, Value};

    use crate::{FakeJobManager, FlinkApiVersion};

    fn sample(name: &str) -> Value {
        let path = format!("{}/../../tests/fixtures/flink-2.3.0-adaptive/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
    }

    async fn call(fake: &FakeJobManager, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = reqwest::Client::new().request(method, format!("{}{path}", fake.url()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    #[tokio::test]
    async fn the_default_scheduler_refuses_like_flink_2_3_0() {
        let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
        let jid = fake.submit("clicks");
        let path = format!("/jobs/{jid}/resource-requirements");
        let real = sample("error-resource-requirements-default-scheduler.json");
        for method in [reqwest::Method::GET, reqwest::Method::PUT] {
            let (status, v) = call(&fake, method.clone(), &path, Some(json!({}))).await;
            assert_eq!(status, 500, "{method}");
            assert_eq!(v["errors"][0], real["errors"][0]);
            let first = |v: &Value| v["errors"][1].as_str().unwrap().lines().nth(1).unwrap_or("").to_string();
            assert_eq!(first(&v), first(&real), "{method}");
        }
        let (_, cfg) = call(&fake, reqwest::Method::GET, "/config", None).await;
        assert_eq!(cfg["features"]["web-rescale"], false);
    }

    #[tokio::test]
    async fn the_adaptive_scheduler_rescales_after_a_put_as_far_as_the_slots_go() {
        let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
        fake.set_adaptive_scheduler(true);
        let jid = fake.submit("clicks");
        let get = |p: String| {
            let fake = fake.clone();
            async move { call(&fake, reqwest::Method::GET, &p, None).await.1 }
        };
        // What a real adaptive cluster says about itself.
        assert_eq!(
            get("/config".into()).await["features"]["web-rescale"],
            sample("config.json")["features"]["web-rescale"]
        );
        let jm = get("/jobmanager/config".into()).await;
        assert!(jm.as_array().unwrap().contains(&json!({"key": "jobmanager.scheduler", "value": "adaptive"})));
        assert_eq!(get(format!("/jobs/{jid}")).await["schedulerType"], sample("job-running.json")["schedulerType"]);
        // The requirements: one entry per vertex, bounds 1..=1, as the sample.
        let path = format!("/jobs/{jid}/resource-requirements");
        let rr = get(path.clone()).await;
        let shape = |v: &Value| v.as_object().unwrap().values().cloned().collect::<Vec<_>>();
        assert_eq!(shape(&rr), shape(&sample("job-resource-requirements.json")));
        // Bad bodies: 400 like Flink.
        let (s, v) = call(&fake, reqwest::Method::PUT, &path, Some(json!({}))).await;
        assert_eq!(s, 400);
        assert!(v["errors"][0].as_str().unwrap().contains("Request body does not specify resource requirements."));
        let too_big: serde_json::Map<String, Value> = rr
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (k.clone(), json!({"parallelism": {"lowerBound": 1, "upperBound": 1000}})))
            .collect();
        let (s, v) = call(&fake, reqwest::Method::PUT, &path, Some(Value::Object(too_big))).await;
        assert_eq!(s, 400);
        assert!(v["errors"][0].as_str().unwrap().contains("exceeds its maximum parallelism 128"), "{v}");
        // A good one: 200 {}, the bounds echoed, and after the delay every vertex at 2.
        fake.set_rescale_delay(Duration::from_millis(300));
        let two: serde_json::Map<String, Value> = rr
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (k.clone(), json!({"parallelism": {"lowerBound": 1, "upperBound": 2}})))
            .collect();
        let (s, v) = call(&fake, reqwest::Method::PUT, &path, Some(Value::Object(two.clone()))).await;
        assert_eq!((s, v), (200, json!({})));
        assert_eq!(get(path.clone()).await, Value::Object(two));
        assert_eq!(fake.job_parallelism(&jid), Some(1), "not before the delay");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let job = get(format!("/jobs/{jid}")).await;
        let p: Vec<_> = job["vertices"].as_array().unwrap().iter().map(|v| v["parallelism"].clone()).collect();
        assert_eq!(p, vec![json!(2), json!(2)]);
        assert_eq!(job["state"], "RUNNING");
        // Up to 8 with four slots, one of them held by another job: 3.
        fake.set_rescale_delay(Duration::ZERO);
        fake.submit("other");
        let eight: serde_json::Map<String, Value> = rr
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (k.clone(), json!({"parallelism": {"lowerBound": 1, "upperBound": 8}})))
            .collect();
        call(&fake, reqwest::Method::PUT, &path, Some(Value::Object(eight))).await;
        assert_eq!(fake.job_parallelism(&jid), Some(3));
        assert_eq!(get("/overview".into()).await["slots-available"], 0);
    }
}
