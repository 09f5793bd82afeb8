//! The HTTP side of the fake JobManager: one fallback handler that routes by hand, so that
//! overrides, delays, leader elections and Flink's own 404 texts apply to every path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State as AxState};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::model::{Job, JobStatus, Restored, SavepointKind, SAVEPOINT_DIR, TM_ID};
use super::{text, FlinkApiVersion, SavepointBehaviour};

/// Content type of every JSON answer (what Flink's `HandlerUtils` sends).
pub(super) const JSON_CONTENT_TYPE: &str = "application/json; charset=UTF-8";
/// `flink-revision` / `flink-commit` the fake reports.
const FLINK_COMMIT: &str = "c0f8d1a";
/// Slots of the fake's single TaskManager.
pub(super) const SLOTS: u32 = 4;
/// The request log keeps at most this many entries (the oldest half goes when it is full).
pub(super) const REQUEST_LOG_CAP: usize = 100_000;

/// A complete canned answer.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) content_type: String,
    pub(super) body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply { status, content_type: JSON_CONTENT_TYPE.to_string(), body: serde_json::to_vec(v).unwrap_or_default() }
    }

    pub(super) fn ok(v: &Value) -> Reply {
        Reply::json(200, v)
    }

    pub(super) fn errors(status: u16, msgs: &[&str]) -> Reply {
        Reply::json(status, &json!({ "errors": msgs }))
    }

    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        resp
    }
}

/// A jar "uploaded" to the fake.
#[derive(Debug, Clone)]
pub(super) struct Jar {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) entry_class: String,
    pub(super) job_name: String,
    pub(super) uploaded: i64,
}

/// An asynchronous savepoint / stop-with-savepoint operation.
#[derive(Debug, Clone)]
struct SavepointOp {
    kind: SavepointKind,
    /// `cancel-job` of a savepoint trigger.
    cancel_job: bool,
    target_dir: String,
    behaviour: SavepointBehaviour,
    polls: u32,
    result: Option<Value>,
}

/// Everything the fake cluster knows.
pub(super) struct State {
    pub(super) version: FlinkApiVersion,
    pub(super) port: u16,
    pub(super) leader_election: bool,
    pub(super) web_ui: bool,
    pub(super) overrides: HashMap<String, Reply>,
    pub(super) delay: Duration,
    pub(super) savepoint_behaviour: SavepointBehaviour,
    /// Oldest first.
    pub(super) jobs: Vec<Job>,
    pub(super) jars: Vec<Jar>,
    pub(super) jar_runs: Vec<Value>,
    /// (method, path, query) of every request received, in order.
    pub(super) requests: Vec<(String, String, Option<String>)>,
    /// Keyed by (jid, trigger id).
    ops: HashMap<(String, String), SavepointOp>,
    pub(super) web_tmpdir: String,
    pub(super) next_seq: u64,
    /// Requests being answered right now (received, not yet answered; the `set_delay` wait included).
    pub(super) in_flight: usize,
    /// The most requests in flight at once since the last reset.
    pub(super) max_in_flight: usize,
    /// The adaptive scheduler and its in-place rescales.
    pub(super) adaptive: super::rescale::Adaptive,
    /// What jobs run from a jar of this file name do.
    pub(super) jar_behaviours: HashMap<String, crate::JarBehaviour>,
    /// How an uploaded jar of this file name runs: (entry class, job name).
    pub(super) upload_as: HashMap<String, (String, String)>,
    /// File names uploaded, in order.
    pub(super) uploads: Vec<String>,
    /// Jobs that fail (or start restarting) at a time: (jid, due ms, what).
    pub(super) doomed: Vec<(String, i64, crate::JarBehaviour)>,
}

impl State {
    pub(super) fn new(version: FlinkApiVersion) -> State {
        State {
            version,
            port: 0,
            leader_election: false,
            web_ui: true,
            overrides: HashMap::new(),
            delay: Duration::ZERO,
            savepoint_behaviour: SavepointBehaviour::default(),
            jobs: Vec::new(),
            jars: Vec::new(),
            jar_runs: Vec::new(),
            requests: Vec::new(),
            ops: HashMap::new(),
            web_tmpdir: format!("/tmp/flink-web-{}", uuid4()),
            next_seq: 0,
            in_flight: 0,
            max_in_flight: 0,
            adaptive: Default::default(),
            jar_behaviours: HashMap::new(),
            upload_as: HashMap::new(),
            uploads: Vec::new(),
            doomed: Vec::new(),
        }
    }

    pub(super) fn job_mut(&mut self, jid: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.jid == jid)
    }

    fn job(&self, jid: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.jid == jid)
    }

    /// Jobs newest first (by submission), like the real cluster lists them.
    pub(super) fn jobs_newest_first(&self) -> Vec<&Job> {
        let mut v: Vec<&Job> = self.jobs.iter().collect();
        v.sort_by_key(|j| std::cmp::Reverse(j.seq));
        v
    }

    /// Starts a new RUNNING job and returns its id.
    pub(super) fn start_job(
        &mut self,
        jid: Option<String>,
        name: &str,
        parallelism: u32,
        restored: Option<Restored>,
    ) -> String {
        let jid = jid.unwrap_or_else(hex32);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.jobs.push(Job::new(jid.clone(), name, parallelism, now_ms(), restored, seq));
        jid
    }

    /// What a new leader knows: running jobs recovered, terminated jobs and operations gone.
    pub(super) fn failover(&mut self) {
        let now = now_ms();
        self.jobs.retain(|j| !j.status.is_globally_terminal());
        for j in &mut self.jobs {
            j.failover(now);
        }
        self.ops.clear();
        self.web_tmpdir = format!("/tmp/flink-web-{}", uuid4());
    }
}

/// Locks the state, ignoring poisoning (a panicking test must not wedge the fake).
pub(super) fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the epoch.
pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// 32 random lowercase hex digits (JobID, TriggerId).
pub(super) fn hex32() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A random version-4 UUID.
pub(super) fn uuid4() -> String {
    let n =
        (rand::random::<u128>() & !(0xf000u128 << 64) & !(0xc000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48);
    let h = format!("{n:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The one handler behind every path.
pub(super) async fn handle(
    AxState(shared): AxState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let delay = {
        let mut st = lock(&shared);
        if st.requests.len() >= REQUEST_LOG_CAP {
            st.requests.drain(..REQUEST_LOG_CAP / 2);
        }
        st.requests.push((method.as_str().to_string(), uri.path().to_string(), uri.query().map(str::to_string)));
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        st.delay
    };
    // Counted out however the request ends (a client that hangs up drops this future).
    struct InFlight<'a>(&'a Mutex<State>);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            let mut st = lock(self.0);
            st.in_flight = st.in_flight.saturating_sub(1);
        }
    }
    let _counted = InFlight(&shared);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = route(&mut lock(&shared), &method, &uri, &body);
    tracing::trace!(%method, %uri, status = reply.status, "fake flink answered");
    reply.into_response()
}

/// 400 for a path parameter Flink cannot parse.
fn bad_path_param(name: &str, value: &str) -> Reply {
    let msg = format!(
        "Bad request, could not parse parameters: Cannot resolve path parameter ({name}) from value \"{value}\"."
    );
    Reply::errors(400, &[&text::rest_handler_exception(&msg, None)])
}

/// 400 for a query parameter Flink cannot parse.
fn bad_query_param(name: &str, value: &str) -> Reply {
    let msg = format!(
        "Bad request, could not parse parameters: Cannot resolve query parameter ({name}) from value \"{value}\"."
    );
    Reply::errors(400, &[&text::rest_handler_exception(&msg, None)])
}

/// 400 for a request body that Flink's strict mapper rejects.
fn bad_body(class: &str, cause: &str) -> Reply {
    let msg = format!("Request did not match expected format {class}.");
    Reply::errors(400, &[&text::rest_handler_exception(&msg, Some(cause))])
}

fn job_not_found(jid: &str) -> Reply {
    Reply::errors(404, &[&text::job_not_found(jid)])
}

fn route(st: &mut State, method: &Method, uri: &Uri, body: &[u8]) -> Reply {
    if st.leader_election {
        return Reply::errors(503, &[text::LEADER_ELECTION]);
    }
    let path = uri.path();
    let full = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if let Some(o) = st.overrides.get(&full).or_else(|| st.overrides.get(path)) {
        return o.clone();
    }
    let now = now_ms();
    for j in &mut st.jobs {
        j.advance(now);
    }
    settle(st, now);
    super::rescale::apply_due(st, now, SLOTS);
    let query: Vec<(String, String)> = Query::try_from_uri(uri).map(|q| q.0).unwrap_or_default();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // Flink also serves every route under the versioned prefix `/v1`.
    let segs: &[&str] = match segs.as_slice() {
        ["v1", rest @ ..] if !rest.is_empty() => rest,
        s => s,
    };
    let m = method.clone();
    match (m, segs) {
        (Method::GET, ["overview"]) => overview(st),
        (Method::GET, ["config"]) => dashboard_config(st),
        (Method::GET, ["jobs"]) => {
            let jobs: Vec<Value> =
                st.jobs_newest_first().iter().map(|j| json!({"id": j.jid, "status": j.status.name()})).collect();
            Reply::ok(&json!({ "jobs": jobs }))
        }
        (Method::GET, ["jobs", "overview"]) => {
            let jobs: Vec<Value> = st
                .jobs_newest_first()
                .iter()
                .map(|j| super::rescale::mark_scheduler(st, j.overview_json(st.version, now)))
                .collect();
            Reply::ok(&json!({ "jobs": jobs }))
        }
        (Method::GET, ["jobs", jid]) => {
            with_job(st, jid, |st, j| Reply::ok(&super::rescale::mark_scheduler(st, j.details_json(st.version, now))))
        }
        (Method::GET, ["jobs", jid, "resource-requirements"]) => super::rescale::get(st, jid),
        (Method::PUT, ["jobs", jid, "resource-requirements"]) => super::rescale::put(st, jid, body, now),
        (Method::PATCH, ["jobs", jid]) => cancel_job(st, jid, &query),
        (Method::GET, ["jobs", jid, "status"]) => {
            with_job(st, jid, |_, j| Reply::ok(&json!({"status": j.status.name()})))
        }
        (Method::GET, ["jobs", jid, "exceptions"]) => {
            let max = match query.iter().rev().find(|(k, _)| k == "maxExceptions") {
                None => 20,
                Some((_, v)) => match v.parse::<usize>() {
                    Ok(n) => n,
                    Err(_) => return bad_query_param("maxExceptions", v),
                },
            };
            with_job(st, jid, |st, j| Reply::ok(&j.exceptions_json(st.version, max)))
        }
        (Method::GET, ["jobs", jid, "checkpoints"]) => with_job(st, jid, |_, j| Reply::ok(&j.checkpoints_json())),
        (Method::GET, ["jobs", jid, "checkpoints", "config"]) => {
            with_job(st, jid, |_, _| Reply::ok(&checkpoint_config()))
        }
        (Method::GET, ["jobs", jid, "metrics"]) => job_metrics(st, jid, &query, now),
        (Method::POST, ["jobs", jid, "stop"]) => trigger_savepoint(st, jid, body, true),
        (Method::POST, ["jobs", jid, "savepoints"]) => trigger_savepoint(st, jid, body, false),
        (Method::GET, ["jobs", jid, "savepoints", tid]) => savepoint_status(st, jid, tid),
        (Method::GET, ["jobmanager", "config"]) => jobmanager_config(st),
        (Method::GET, ["taskmanagers"]) => taskmanagers(st, now),
        (Method::GET, ["jars"]) => jars(st),
        (Method::POST, ["jars", "upload"]) => upload_jar(st, body),
        (Method::POST, ["jars", jarid, "run"]) => run_jar(st, jarid, body, &query),
        (Method::GET, _) if st.web_ui => {
            // With the web UI on the classpath, unknown GETs go to the static file server.
            Reply::errors(404, &[&format!("Unable to load requested file {path}.")])
        }
        _ => Reply::errors(404, &[&format!("Not found: {full}")]),
    }
}

/// Runs `f` on the job `jid`, or answers 400 / 404 like Flink.
fn with_job(st: &State, jid: &str, f: impl FnOnce(&State, &Job) -> Reply) -> Reply {
    if !is_hex32(jid) {
        return bad_path_param("jobid", jid);
    }
    let jid = jid.to_ascii_lowercase();
    match st.job(&jid) {
        Some(j) => f(st, j),
        None => job_not_found(&jid),
    }
}

fn overview(st: &State) -> Reply {
    let count = |s: JobStatus| st.jobs.iter().filter(|j| j.status == s).count();
    let running = st.jobs.iter().filter(|j| !j.status.is_globally_terminal()).count();
    let mut v = json!({
        "taskmanagers": 1,
        "slots-total": SLOTS,
        "slots-available": SLOTS.saturating_sub(used_slots(st)),
        "jobs-running": running,
        "jobs-finished": count(JobStatus::Finished),
        "jobs-cancelled": count(JobStatus::Canceled),
        "jobs-failed": count(JobStatus::Failed),
        "flink-version": flink_version(st.version),
        "flink-commit": FLINK_COMMIT,
    });
    if st.version == FlinkApiVersion::V1 {
        let m = v.as_object_mut().expect("object");
        m.insert("slots-free-and-blocked".into(), json!(0));
        m.insert("taskmanagers-blocked".into(), json!(0));
    }
    Reply::ok(&v)
}

fn used_slots(st: &State) -> u32 {
    st.jobs.iter().filter(|j| !j.status.is_globally_terminal()).map(|j| j.parallelism).sum()
}

fn flink_version(v: FlinkApiVersion) -> &'static str {
    match v {
        FlinkApiVersion::V1 => "1.20.1",
        FlinkApiVersion::V2 => "2.3.0",
    }
}

fn dashboard_config(st: &State) -> Reply {
    Reply::ok(&json!({
        "refresh-interval": 3000,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": flink_version(st.version),
        "flink-revision": format!("{FLINK_COMMIT} @ 2026-06-14T16:29:03+02:00"),
        "features": {
            "web-submit": true,
            "web-cancel": true,
            "web-rescale": st.adaptive.on,
            "web-history": false,
        },
    }))
}

fn checkpoint_config() -> Value {
    json!({
        "mode": "exactly_once",
        "interval": 1000,
        "timeout": 600000,
        "min_pause": 0,
        "max_concurrent": 1,
        "externalization": {"enabled": true, "delete_on_cancellation": false},
        "state_backend": "HashMapStateBackend",
        "checkpoint_storage": "FileSystemCheckpointStorage",
        "unaligned_checkpoints": false,
        "tolerable_failed_checkpoints": 0,
        "aligned_checkpoint_timeout": 0,
        "checkpoints_after_tasks_finish": true,
        "state_changelog_enabled": false,
        "changelog_periodic_materialization_interval": 600000,
        "changelog_storage": "memory",
    })
}

fn jobmanager_config(st: &State) -> Reply {
    let port = st.port.to_string();
    let pairs: [(&str, &str); 23] = [
        ("blob.server.port", "43259"),
        ("taskmanager.memory.process.size", "1280m"),
        ("taskmanager.bind-host", "localhost"),
        ("jobmanager.rpc.address", "localhost"),
        ("jobmanager.memory.off-heap.size", "134217728b"),
        ("jobmanager.memory.jvm-overhead.min", "201326592b"),
        ("jobmanager.memory.process.size", "1024m"),
        ("state.savepoints.dir", "file:///tmp/warden-fake/savepoints"),
        ("web.tmpdir", &st.web_tmpdir),
        ("jobmanager.rpc.port", "6123"),
        ("rest.bind-address", "127.0.0.1"),
        ("rest.port", &port),
        ("execution.checkpointing.interval", "1s"),
        ("jobmanager.bind-host", "localhost"),
        ("taskmanager.host", "localhost"),
        ("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"),
        ("parallelism.default", "1"),
        ("taskmanager.numberOfTaskSlots", "4"),
        ("rest.address", "localhost"),
        ("jobmanager.memory.jvm-metaspace.size", "268435456b"),
        ("jobmanager.memory.heap.size", "469762048b"),
        ("state.checkpoints.dir", "file:///tmp/warden-fake/checkpoints"),
        ("jobmanager.memory.jvm-overhead.max", "201326592b"),
    ];
    let mut v: Vec<Value> = pairs.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    if st.adaptive.on {
        v.push(json!({"key": "jobmanager.scheduler", "value": "adaptive"}));
    }
    Reply::ok(&Value::Array(v))
}

fn taskmanagers(st: &State, now: i64) -> Reply {
    let free = SLOTS.saturating_sub(used_slots(st));
    let frac = f64::from(free) / f64::from(SLOTS);
    let res = |f: f64| {
        json!({
            "cpuCores": (4.0 * f).floor(),
            "taskHeapMemory": (318.0 * f) as i64,
            "taskOffHeapMemory": 0,
            "managedMemory": (664.0 * f) as i64,
            "networkMemory": (166.0 * f) as i64,
            "extendedResources": {},
        })
    };
    Reply::ok(&json!({"taskmanagers": [{
        "id": TM_ID,
        "path": "pekko.tcp://flink@localhost:34825/user/rpc/taskmanager_0",
        "dataPort": 45909,
        "jmxPort": -1,
        "timeSinceLastHeartbeat": now,
        "slotsNumber": SLOTS,
        "freeSlots": free,
        "assignedTasks": st.jobs.iter().filter(|j| !j.status.is_globally_terminal()).map(|j| j.total_tasks()).sum::<u32>(),
        "totalResource": res(1.0),
        "freeResource": res(frac),
        "hardware": {
            "cpuCores": 4,
            "physicalMemory": 25276510208i64,
            "freeMemory": 301989888,
            "managedMemory": 697932196,
        },
        "memoryConfiguration": {
            "frameworkHeap": 134217728,
            "taskHeap": 335544308,
            "frameworkOffHeap": 134217728,
            "taskOffHeap": 0,
            "networkMemory": 174483048,
            "managedMemory": 697932196,
            "jvmMetaspace": 268435456,
            "jvmOverhead": 214748368,
            "totalFlinkMemory": 1476395008,
            "totalProcessMemory": 1959578832,
        },
    }]}))
}

fn jars(st: &State) -> Reply {
    let mut jars: Vec<&Jar> = st.jars.iter().collect();
    jars.reverse();
    let files: Vec<Value> = jars
        .iter()
        .map(|j| {
            json!({
                "id": j.id,
                "name": j.name,
                "uploaded": j.uploaded,
                "entry": [{"name": j.entry_class, "description": null}],
            })
        })
        .collect();
    Reply::ok(&json!({
        "address": format!("http://127.0.0.1:{}", st.port),
        "files": files,
    }))
}

fn job_metrics(st: &State, jid: &str, query: &[(String, String)], now: i64) -> Reply {
    if !is_hex32(jid) {
        return bad_path_param("jobid", jid);
    }
    // The metric store simply has nothing for an unknown job.
    let Some(job) = st.job(&jid.to_ascii_lowercase()) else {
        return Reply::ok(&json!([]));
    };
    let metrics = job.metrics(st.version, now);
    let wanted: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "get")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let has_get = query.iter().any(|(k, _)| k == "get");
    let v: Vec<Value> = if has_get {
        let mut seen = Vec::new();
        wanted
            .iter()
            .filter_map(|w| {
                if seen.contains(w) {
                    return None;
                }
                seen.push(*w);
                metrics.iter().find(|(id, _)| id == w).map(|(id, value)| json!({"id": id, "value": value}))
            })
            .collect()
    } else {
        metrics.iter().map(|(id, _)| json!({"id": id})).collect()
    };
    Reply::ok(&Value::Array(v))
}

fn cancel_job(st: &mut State, jid: &str, query: &[(String, String)]) -> Reply {
    if !is_hex32(jid) {
        return bad_path_param("jobid", jid);
    }
    if let Some((_, mode)) = query.iter().rev().find(|(k, _)| k == "mode") {
        match mode.to_ascii_lowercase().as_str() {
            "cancel" => {}
            "stop" => {
                let msg = "The termination mode \"stop\" has been removed. For an ungraceful \
                           shutdown, please use \"cancel\" instead. For a graceful shutdown, \
                           please use \"jobs/:jobId/stop\" instead.";
                return Reply::errors(308, &[&text::rest_handler_exception(msg, None)]);
            }
            _ => return bad_query_param("mode", mode),
        }
    }
    let now = now_ms();
    let Some(job) = st.job_mut(&jid.to_ascii_lowercase()) else {
        return Reply::errors(404, &[&text::rest_handler_exception("Job could not be found.", None)]);
    };
    match job.status {
        JobStatus::Failed | JobStatus::Finished => {
            let msg = format!(
                "Job cancellation failed because the job has already reached another terminal state ({}).",
                job.status.name()
            );
            Reply::errors(409, &[&text::rest_handler_exception(&msg, None)])
        }
        _ => {
            job.cancel(now);
            Reply::json(202, &json!({}))
        }
    }
}

/// The `Caused by:` line Jackson would produce for a rejected body.
fn jackson_cause(class: &str, problem: &BodyProblem, known: &[&str]) -> String {
    let fqcn = match class {
        "JarRunRequestBody" => "org.apache.flink.runtime.webmonitor.handlers.JarRunRequestBody",
        "SavepointTriggerRequestBody" => {
            "org.apache.flink.runtime.rest.messages.job.savepoints.SavepointTriggerRequestBody"
        }
        _ => "org.apache.flink.runtime.rest.messages.job.savepoints.stop.StopWithSavepointRequestBody",
    };
    let pkg = "org.apache.flink.shaded.jackson2.com.fasterxml.jackson";
    match problem {
        BodyProblem::NotJson => format!(
            "{pkg}.core.JsonParseException: Unexpected character: was expecting a JSON object\n \
             at [Source: (org.apache.flink.shaded.netty4.io.netty.buffer.ByteBufInputStream); line: 1, column: 1]"
        ),
        BodyProblem::Unknown(field) => {
            let list: Vec<String> = known.iter().map(|k| format!("\"{k}\"")).collect();
            format!(
                "{pkg}.databind.exc.UnrecognizedPropertyException: Unrecognized field \"{field}\" \
                 (class {fqcn}), not marked as ignorable ({} known properties: {}])\n \
                 at [Source: (org.apache.flink.shaded.netty4.io.netty.buffer.ByteBufInputStream); line: 1, column: 2] \
                 (through reference chain: {fqcn}[\"{field}\"])",
                known.len(),
                list.join(", ")
            )
        }
        BodyProblem::BadValue(field) => format!(
            "{pkg}.databind.exc.MismatchedInputException: Cannot deserialize value of field \"{field}\" \
             (class {fqcn})\n at [Source: (org.apache.flink.shaded.netty4.io.netty.buffer.ByteBufInputStream); \
             line: 1, column: 2] (through reference chain: {fqcn}[\"{field}\"])"
        ),
    }
}

/// Why a body was rejected.
enum BodyProblem {
    NotJson,
    Unknown(String),
    BadValue(String),
}

/// The type a body field must have.
#[derive(Clone, Copy)]
enum FieldType {
    Str,
    Bool,
    Int,
    StrList,
    StrMap,
    ClaimMode,
    FormatType,
    Hex32,
}

fn type_ok(t: FieldType, v: &Value) -> bool {
    if v.is_null() {
        return true;
    }
    match t {
        FieldType::Str => v.is_string(),
        FieldType::Bool => v.is_boolean(),
        FieldType::Int => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        FieldType::StrList => v.as_array().is_some_and(|a| a.iter().all(|x| x.is_string() || x.is_null())),
        FieldType::StrMap => v
            .as_object()
            .is_some_and(|m| m.values().all(|x| x.is_string() || x.is_number() || x.is_boolean() || x.is_null())),
        FieldType::ClaimMode => v.as_str().is_some_and(|s| matches!(s, "CLAIM" | "NO_CLAIM" | "LEGACY")),
        FieldType::FormatType => v.as_str().is_some_and(|s| matches!(s, "CANONICAL" | "NATIVE")),
        FieldType::Hex32 => v.as_str().is_some_and(is_hex32),
    }
}

/// Parses a body the way Flink's strict Jackson mapper does: an empty body is `{}`, unknown
/// fields and values of the wrong type are rejected.
fn parse_strict(body: &[u8], fields: &[(&str, FieldType)]) -> Result<Map<String, Value>, BodyProblem> {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|_| BodyProblem::NotJson)?
    };
    let Value::Object(m) = v else {
        return Err(BodyProblem::NotJson);
    };
    for (k, v) in &m {
        match fields.iter().find(|(name, _)| name == k) {
            None => return Err(BodyProblem::Unknown(k.clone())),
            Some((_, t)) if !type_ok(*t, v) => return Err(BodyProblem::BadValue(k.clone())),
            Some(_) => {}
        }
    }
    Ok(m)
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

fn run_jar(st: &mut State, jarid: &str, body: &[u8], query: &[(String, String)]) -> Reply {
    let recorded = serde_json::from_slice::<Value>(body).unwrap_or_else(|_| {
        if body.is_empty() {
            json!({})
        } else {
            Value::String(String::from_utf8_lossy(body).into_owned())
        }
    });
    st.jar_runs.push(recorded);
    let mut fields = vec![
        ("entryClass", FieldType::Str),
        ("programArgsList", FieldType::StrList),
        ("parallelism", FieldType::Int),
        ("jobId", FieldType::Hex32),
        ("allowNonRestoredState", FieldType::Bool),
        ("savepointPath", FieldType::Str),
        ("restoreMode", FieldType::ClaimMode),
        ("flinkConfiguration", FieldType::StrMap),
    ];
    match st.version {
        FlinkApiVersion::V1 => fields.push(("programArgs", FieldType::Str)),
        FlinkApiVersion::V2 => fields.push(("claimMode", FieldType::ClaimMode)),
    }
    let class = "JarRunRequestBody";
    let m = match parse_strict(body, &fields) {
        Ok(m) => m,
        Err(p) => {
            let known: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
            return bad_body(class, &jackson_cause(class, &p, &known));
        }
    };
    let Some(jar) = st.jars.iter().find(|j| j.id == jarid).cloned() else {
        let msg = format!("Jar file {}/flink-web-upload/{jarid} does not exist", st.web_tmpdir);
        return Reply::errors(400, &[&text::rest_handler_exception(&msg, None)]);
    };
    let q = |k: &str| query.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let parallelism = match m.get("parallelism").and_then(Value::as_i64) {
        Some(p) => p,
        None => match q("parallelism") {
            Some(p) => match p.parse::<i64>() {
                Ok(p) => p,
                Err(_) => return bad_query_param("parallelism", &p),
            },
            None => 1,
        },
    };
    let parallelism = u32::try_from(parallelism).unwrap_or(1).clamp(1, 1024);
    let conf = m.get("flinkConfiguration").and_then(Value::as_object);
    let conf_str = |k: &str| conf.and_then(|c| c.get(k)).and_then(Value::as_str);
    let savepoint = str_field(&m, "savepointPath")
        .map(str::to_string)
        .or_else(|| q("savepointPath"))
        .or_else(|| conf_str("execution.state-recovery.path").map(str::to_string))
        .or_else(|| conf_str("execution.savepoint.path").map(str::to_string));
    let jid = str_field(&m, "jobId").map(str::to_ascii_lowercase);
    if let Some(jid) = &jid {
        if st.job(jid).is_some() {
            const TRACE: &str = "<Exception on server side:\n\
                org.apache.flink.runtime.client.DuplicateJobSubmissionException: \
                Job has already been submitted.\n\
                \tat org.apache.flink.runtime.dispatcher.Dispatcher.submitJob(Dispatcher.java:520)\n\
                End of exception on server side>";
            return Reply::errors(500, &["Internal server error.", TRACE]);
        }
    }
    let now = now_ms();
    let behaviour = st.jar_behaviours.get(&jar.name).cloned();
    if let Some(crate::JarBehaviour::MainThrows(msg)) = &behaviour {
        let cause = format!(
            "org.apache.flink.client.program.ProgramInvocationException: The main method caused an error: {msg}"
        );
        return Reply::errors(400, &[&text::rest_handler_exception("Could not execute application.", Some(&cause))]);
    }
    let restored = savepoint.map(|path| restored_from(st, &path, now));
    let jid = st.start_job(jid, &jar.job_name, parallelism, restored);
    if let Some(b) = behaviour {
        let after = match &b {
            crate::JarBehaviour::FailsAfter { after, .. } | crate::JarBehaviour::RestartLoopAfter { after, .. } => {
                *after
            }
            crate::JarBehaviour::AnswerLost => return Reply::errors(500, &["Internal server error."]),
            crate::JarBehaviour::MainThrows(_) => Duration::ZERO,
        };
        st.doomed.push((jid.clone(), now + after.as_millis() as i64, b));
    }
    Reply::ok(&json!({ "jobid": jid }))
}

/// Jobs whose jar makes them fail now do.
pub(super) fn settle(st: &mut State, now: i64) {
    let due: Vec<(String, i64, crate::JarBehaviour)> = {
        let (due, later) = std::mem::take(&mut st.doomed).into_iter().partition(|d| d.1 <= now);
        st.doomed = later;
        due
    };
    for (jid, at, b) in due {
        if let Some(j) = st.job_mut(&jid) {
            if j.status.is_globally_terminal() {
                continue;
            }
            match b {
                crate::JarBehaviour::FailsAfter { class, message, .. } => j.fail(&class, &message, at.max(now - 1)),
                crate::JarBehaviour::RestartLoopAfter { class, message, .. } => {
                    j.restart_loop(&class, &message, at.max(now - 1))
                }
                crate::JarBehaviour::MainThrows(_) | crate::JarBehaviour::AnswerLost => {}
            }
        }
    }
}

/// `POST /jars/upload`: a multipart body with a `jarfile` part; the jar is known by its file name.
fn upload_jar(st: &mut State, body: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(body);
    let Some(name) = text
        .split("filename=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return Reply::errors(400, &["Exactly 1 file must be sent, received 0."]);
    };
    if !name.ends_with(".jar") {
        return Reply::errors(400, &["Only Jar files are allowed."]);
    }
    let (entry_class, job_name) =
        st.upload_as.get(&name).cloned().unwrap_or_else(|| (String::new(), name.trim_end_matches(".jar").to_string()));
    let id = format!("{}_{name}", uuid4());
    st.jars.push(Jar { id: id.clone(), name: name.clone(), entry_class, job_name, uploaded: now_ms() });
    st.uploads.push(name);
    Reply::ok(&json!({"filename": format!("{}/flink-web-upload/{id}", st.web_tmpdir), "status": "success"}))
}

/// `latest.restored` for a job started from `path`, using the id of the savepoint / checkpoint
/// when the fake produced it.
fn restored_from(st: &State, path: &str, now: i64) -> Restored {
    let trimmed = path.trim_end_matches('/').trim_end_matches("/_metadata");
    let known = st.jobs.iter().find_map(|j| {
        j.ckpt
            .history
            .iter()
            .chain(j.ckpt.latest_savepoint.iter())
            .chain(j.ckpt.latest_completed.iter())
            .find(|e| {
                matches!(&e.outcome, super::model::Outcome::Completed { external_path, .. }
                    if external_path.trim_end_matches('/') == trimmed)
            })
            .map(|e| e.id)
    });
    let from_name =
        trimmed.rsplit('/').next().and_then(|last| last.strip_prefix("chk-")).and_then(|n| n.parse::<u64>().ok());
    let last = trimmed.rsplit('/').next().unwrap_or_default();
    Restored {
        id: known.or(from_name).unwrap_or(1),
        ts: now,
        is_savepoint: last.starts_with("savepoint-"),
        path: path.to_string(),
    }
}

/// `file:///x` and `/x` become `file:/x` (how Flink prints local paths); other URIs stay.
fn normalize_dir(dir: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if let Some(rest) = dir.strip_prefix("file://") {
        format!("file:{rest}")
    } else if dir.contains("://") || dir.starts_with("file:") {
        dir.to_string()
    } else {
        format!("file:{dir}")
    }
}

fn trigger_savepoint(st: &mut State, jid: &str, body: &[u8], stop: bool) -> Reply {
    if !is_hex32(jid) {
        return bad_path_param("jobid", jid);
    }
    let jid = jid.to_ascii_lowercase();
    let (class, dir_key, fields): (&str, &str, Vec<(&str, FieldType)>) = if stop {
        (
            "StopWithSavepointRequestBody",
            "targetDirectory",
            vec![
                ("targetDirectory", FieldType::Str),
                ("drain", FieldType::Bool),
                ("formatType", FieldType::FormatType),
                ("triggerId", FieldType::Hex32),
            ],
        )
    } else {
        (
            "SavepointTriggerRequestBody",
            "target-directory",
            vec![
                ("target-directory", FieldType::Str),
                ("cancel-job", FieldType::Bool),
                ("formatType", FieldType::FormatType),
                ("triggerId", FieldType::Hex32),
            ],
        )
    };
    let m = match parse_strict(body, &fields) {
        Ok(m) => m,
        Err(p) => {
            let known: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
            return bad_body(class, &jackson_cause(class, &p, &known));
        }
    };
    let tid = str_field(&m, "triggerId").map(str::to_ascii_lowercase).unwrap_or_else(hex32);
    let key = (jid, tid.clone());
    if !st.ops.contains_key(&key) {
        let op = SavepointOp {
            kind: if stop { SavepointKind::SyncSavepoint } else { SavepointKind::Savepoint },
            cancel_job: m.get("cancel-job").and_then(Value::as_bool).unwrap_or(false),
            target_dir: normalize_dir(str_field(&m, dir_key).unwrap_or(SAVEPOINT_DIR)),
            behaviour: st.savepoint_behaviour.clone(),
            polls: 0,
            result: None,
        };
        st.ops.insert(key, op);
    }
    Reply::json(202, &json!({ "request-id": tid }))
}

fn failure_cause(class: &str, trace: &str) -> Value {
    let mut ser = vec![0xac, 0xed, 0x00, 0x05];
    ser.extend_from_slice(trace.as_bytes());
    json!({
        "status": {"id": "COMPLETED"},
        "operation": {"failure-cause": {
            "class": class,
            "stack-trace": trace,
            "serialized-throwable": text::base64(&ser),
        }},
    })
}

fn savepoint_status(st: &mut State, jid: &str, tid: &str) -> Reply {
    if !is_hex32(jid) {
        return bad_path_param("jobid", jid);
    }
    if !is_hex32(tid) {
        return bad_path_param("triggerid", tid);
    }
    let key = (jid.to_ascii_lowercase(), tid.to_ascii_lowercase());
    let Some(op) = st.ops.get_mut(&key) else {
        let msg = format!(
            "Operation not found under key: AsynchronousJobOperationKey{{triggerId={}, jobId={}}}",
            key.1, key.0
        );
        return Reply::errors(404, &[&text::not_found_exception(&msg)]);
    };
    if let Some(r) = &op.result {
        return Reply::ok(r);
    }
    op.polls += 1;
    let in_progress = json!({"status": {"id": "IN_PROGRESS"}, "operation": null});
    let fail_msg = match &op.behaviour {
        SavepointBehaviour::NeverComplete => return Reply::ok(&in_progress),
        SavepointBehaviour::CompleteAfterPolls(n) if op.polls <= *n => return Reply::ok(&in_progress),
        SavepointBehaviour::CompleteAfterPolls(_) => None,
        SavepointBehaviour::Fail(msg) => Some(msg.clone()),
    };
    let op = op.clone();
    let now = now_ms();
    let result = match (st.job_mut(&key.0), fail_msg) {
        (None, _) => {
            let trace = format!(
                "org.apache.flink.runtime.messages.FlinkJobNotFoundException: Could not find Flink job ({})\n{}",
                key.0,
                text::JOB_NOT_FOUND_CAUSE_FRAMES
            );
            failure_cause("org.apache.flink.runtime.messages.FlinkJobNotFoundException", &trace)
        }
        (Some(_), Some(msg)) => {
            failure_cause("org.apache.flink.runtime.checkpoint.CheckpointException", &text::checkpoint_trace(&msg))
        }
        (Some(job), None) if job.status != JobStatus::Running || job.failed_tasks > 0 => {
            let msg = format!(
                "Checkpoint triggering task Source: {}-source (1/{}) of job {} is not being executed \
                 at the moment. Aborting checkpoint. Failure reason: Not all required tasks are \
                 currently running.",
                job.name, job.parallelism, job.jid
            );
            failure_cause("org.apache.flink.runtime.checkpoint.CheckpointException", &text::checkpoint_trace(&msg))
        }
        (Some(job), None) => {
            let location = format!(
                "{}/savepoint-{}-{:012x}",
                op.target_dir,
                &job.jid[..6],
                rand::random::<u64>() & 0xffff_ffff_ffff
            );
            job.add_savepoint(&location, op.kind, now);
            if op.kind == SavepointKind::SyncSavepoint {
                job.finish(now);
            } else if op.cancel_job {
                job.cancel(now);
            }
            json!({"status": {"id": "COMPLETED"}, "operation": {"location": location}})
        }
    };
    if let Some(stored) = st.ops.get_mut(&key) {
        stored.result = Some(result.clone());
    }
    Reply::ok(&result)
}
