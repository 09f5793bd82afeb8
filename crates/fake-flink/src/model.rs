//! The fake cluster's job model: state machine, lazily computed checkpoints and restarts, and
//! the JSON shapes Flink uses to report them.

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use serde_json::{json, Map, Value};

use super::text;
use super::FlinkApiVersion;

/// How many checkpoints `/jobs/:jid/checkpoints` keeps in `history`.
pub(super) const CHECKPOINT_HISTORY_CAP: usize = 10;
/// How many entries the exception history keeps (`web.exception-history-size`, default 16).
pub(super) const EXCEPTION_HISTORY_CAP: usize = 16;
/// Size in bytes every fake checkpoint reports.
pub(super) const CHECKPOINT_SIZE: i64 = 2010;
/// Directory that holds the fake's retained checkpoints.
pub(super) const CHECKPOINT_DIR: &str = "/tmp/warden-fake/checkpoints";
/// Default savepoint directory of the fake cluster.
pub(super) const SAVEPOINT_DIR: &str = "/tmp/warden-fake/savepoints";
/// Data endpoint of the fake's single TaskManager.
pub(super) const TM_ENDPOINT: &str = "localhost:45909";
/// Resource id of the fake's single TaskManager.
pub(super) const TM_ID: &str = "localhost:34825-d772a6";
/// Name of the operator chain that fails in the fake's jobs.
const MAP_VERTEX: &str = "Map -> Sink: Writer";

/// Flink's `JobStatus`, in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum JobStatus {
    Initializing,
    Created,
    Running,
    Failing,
    Failed,
    Cancelling,
    Canceled,
    Finished,
    Restarting,
    Suspended,
    Reconciling,
}

impl JobStatus {
    /// Every status, in declaration order.
    pub(super) const ALL: [JobStatus; 11] = [
        JobStatus::Initializing,
        JobStatus::Created,
        JobStatus::Running,
        JobStatus::Failing,
        JobStatus::Failed,
        JobStatus::Cancelling,
        JobStatus::Canceled,
        JobStatus::Finished,
        JobStatus::Restarting,
        JobStatus::Suspended,
        JobStatus::Reconciling,
    ];

    /// The name Flink uses on the wire.
    pub(super) fn name(self) -> &'static str {
        match self {
            JobStatus::Initializing => "INITIALIZING",
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Suspended => "SUSPENDED",
            JobStatus::Reconciling => "RECONCILING",
        }
    }

    /// FAILED, CANCELED and FINISHED end a job for good.
    pub(super) fn is_globally_terminal(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::Canceled | JobStatus::Finished)
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// Flink's `ExecutionState` (task / vertex state), in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exec {
    Created,
    Scheduled,
    Deploying,
    Running,
    Finished,
    Canceling,
    Canceled,
    Failed,
    Reconciling,
    Initializing,
}

const EXEC_ALL: [Exec; 10] = [
    Exec::Created,
    Exec::Scheduled,
    Exec::Deploying,
    Exec::Running,
    Exec::Finished,
    Exec::Canceling,
    Exec::Canceled,
    Exec::Failed,
    Exec::Reconciling,
    Exec::Initializing,
];

impl Exec {
    fn name(self) -> &'static str {
        match self {
            Exec::Created => "CREATED",
            Exec::Scheduled => "SCHEDULED",
            Exec::Deploying => "DEPLOYING",
            Exec::Running => "RUNNING",
            Exec::Finished => "FINISHED",
            Exec::Canceling => "CANCELING",
            Exec::Canceled => "CANCELED",
            Exec::Failed => "FAILED",
            Exec::Reconciling => "RECONCILING",
            Exec::Initializing => "INITIALIZING",
        }
    }

    fn is_terminal(self) -> bool {
        matches!(self, Exec::Finished | Exec::Canceled | Exec::Failed)
    }
}

/// Subtask counts per `ExecutionState`, indexed like [`EXEC_ALL`].
type TaskCounts = [u32; 10];

/// Renders task counts with UPPERCASE keys (as in `/jobs/:jid`).
fn counts_upper(c: &TaskCounts) -> Value {
    let mut m = Map::new();
    for (i, s) in EXEC_ALL.iter().enumerate() {
        m.insert(s.name().to_string(), json!(c[i]));
    }
    Value::Object(m)
}

/// Aggregated vertex state, roughly like `ExecutionJobVertex.getAggregateJobVertexState`.
fn aggregate(c: &TaskCounts, parallelism: u32) -> Exec {
    for s in EXEC_ALL {
        if c[s as usize] == parallelism {
            return s;
        }
    }
    for s in [Exec::Failed, Exec::Canceling, Exec::Canceled, Exec::Running] {
        if c[s as usize] > 0 {
            return s;
        }
    }
    Exec::Created
}

/// Which kind of savepoint a completed checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SavepointKind {
    /// `POST /jobs/:jid/savepoints`.
    Savepoint,
    /// `POST /jobs/:jid/stop`.
    SyncSavepoint,
}

/// How a checkpoint ended.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Completed { external_path: String, savepoint: Option<SavepointKind> },
    Failed { failure_ts: i64, message: String },
}

/// One checkpoint as shown in `latest` / `history`.
#[derive(Debug, Clone)]
pub(super) struct CheckpointEntry {
    pub(super) id: u64,
    pub(super) trigger_ts: i64,
    pub(super) ack_ts: i64,
    pub(super) acked: u32,
    pub(super) outcome: Outcome,
}

impl CheckpointEntry {
    fn is_completed(&self) -> bool {
        matches!(self.outcome, Outcome::Completed { .. })
    }

    fn savepoint(&self) -> Option<SavepointKind> {
        match &self.outcome {
            Outcome::Completed { savepoint, .. } => *savepoint,
            Outcome::Failed { .. } => None,
        }
    }

    fn duration(&self) -> i64 {
        self.ack_ts - self.trigger_ts
    }

    fn external_path(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Completed { external_path, .. } => Some(external_path),
            Outcome::Failed { .. } => None,
        }
    }

    fn shift(&mut self, ms: i64) {
        self.trigger_ts -= ms;
        self.ack_ts -= ms;
        if let Outcome::Failed { failure_ts, .. } = &mut self.outcome {
            *failure_ts -= ms;
        }
    }

    /// `CheckpointStatistics` JSON; `retained` is the id of the checkpoint that is not discarded.
    fn to_json(&self, num_subtasks: u32, retained: Option<u64>) -> Value {
        let savepoint = self.savepoint();
        let checkpoint_type = match savepoint {
            Some(SavepointKind::Savepoint) => "SAVEPOINT",
            Some(SavepointKind::SyncSavepoint) => "SYNC_SAVEPOINT",
            None => "CHECKPOINT",
        };
        let mut v = json!({
            "id": self.id,
            "is_savepoint": savepoint.is_some(),
            "savepointFormat": if savepoint.is_some() { json!("CANONICAL") } else { Value::Null },
            "trigger_timestamp": self.trigger_ts,
            "latest_ack_timestamp": self.ack_ts,
            "checkpointed_size": CHECKPOINT_SIZE,
            "state_size": CHECKPOINT_SIZE,
            "end_to_end_duration": self.duration(),
            "alignment_buffered": 0,
            "processed_data": 0,
            "persisted_data": 0,
            "num_subtasks": num_subtasks,
            "num_acknowledged_subtasks": self.acked,
            "checkpoint_type": checkpoint_type,
            "tasks": {},
        });
        let m = v.as_object_mut().expect("object");
        match &self.outcome {
            Outcome::Completed { external_path, .. } => {
                m.insert("className".into(), json!("completed"));
                m.insert("status".into(), json!("COMPLETED"));
                m.insert("external_path".into(), json!(external_path));
                let discarded = savepoint.is_none() && retained != Some(self.id);
                m.insert("discarded".into(), json!(discarded));
            }
            Outcome::Failed { failure_ts, message } => {
                m.insert("className".into(), json!("failed"));
                m.insert("status".into(), json!("FAILED"));
                m.insert("failure_timestamp".into(), json!(failure_ts));
                m.insert("failure_message".into(), json!(message));
            }
        }
        v
    }
}

/// What `latest.restored` shows for a job started from a savepoint / checkpoint.
#[derive(Debug, Clone)]
pub(super) struct Restored {
    pub(super) id: u64,
    pub(super) ts: i64,
    pub(super) is_savepoint: bool,
    pub(super) path: String,
}

/// Checkpoint statistics of one job.
#[derive(Debug, Clone, Default)]
pub(super) struct Checkpoints {
    pub(super) next_id: u64,
    pub(super) completed: u64,
    pub(super) failed: u64,
    pub(super) restored: Option<Restored>,
    /// Newest first, at most [`CHECKPOINT_HISTORY_CAP`].
    pub(super) history: VecDeque<CheckpointEntry>,
    pub(super) latest_completed: Option<CheckpointEntry>,
    pub(super) latest_savepoint: Option<CheckpointEntry>,
    pub(super) latest_failed: Option<CheckpointEntry>,
    /// Time of the last periodic checkpoint tick; `Some` only while RUNNING.
    pub(super) clock: Option<i64>,
    /// While true, periodic checkpoints fail (expire) instead of completing.
    pub(super) failing: bool,
}

impl Checkpoints {
    fn push(&mut self, e: CheckpointEntry) {
        match &e.outcome {
            Outcome::Completed { savepoint, .. } => {
                self.completed += 1;
                if savepoint.is_some() {
                    self.latest_savepoint = Some(e.clone());
                } else {
                    self.latest_completed = Some(e.clone());
                }
            }
            Outcome::Failed { .. } => {
                self.failed += 1;
                self.latest_failed = Some(e.clone());
            }
        }
        self.history.push_front(e);
        self.history.truncate(CHECKPOINT_HISTORY_CAP);
    }

    /// Runs `n` periodic checkpoints whose ticks fall one second apart after `clock`.
    fn run_ticks(&mut self, jid: &str, clock: i64, n: u64, num_subtasks: u32) {
        let skip = n.saturating_sub(CHECKPOINT_HISTORY_CAP as u64);
        // Checkpoints that would drop out of the history anyway are only counted.
        if self.failing {
            self.failed += skip;
        } else {
            self.completed += skip;
        }
        self.next_id += skip;
        for k in (skip + 1)..=n {
            let tick = clock + 1000 * k as i64;
            let id = self.next_id;
            self.next_id += 1;
            let duration = 8 + (id % 7) as i64;
            let e = if self.failing {
                CheckpointEntry {
                    id,
                    trigger_ts: tick - 1000,
                    ack_ts: tick - 990,
                    acked: num_subtasks.saturating_sub(1),
                    outcome: Outcome::Failed {
                        failure_ts: tick,
                        message: "Checkpoint expired before completing.".into(),
                    },
                }
            } else {
                CheckpointEntry {
                    id,
                    trigger_ts: tick - duration,
                    ack_ts: tick,
                    acked: num_subtasks,
                    outcome: Outcome::Completed {
                        external_path: format!("file:{CHECKPOINT_DIR}/{jid}/chk-{id}"),
                        savepoint: None,
                    },
                }
            };
            self.push(e);
        }
    }

    fn shift(&mut self, ms: i64) {
        for e in self.history.iter_mut() {
            e.shift(ms);
        }
        for e in [&mut self.latest_completed, &mut self.latest_savepoint, &mut self.latest_failed].into_iter().flatten()
        {
            e.shift(ms);
        }
        if let Some(r) = &mut self.restored {
            r.ts -= ms;
        }
        if let Some(c) = &mut self.clock {
            *c -= ms;
        }
    }

    /// The newest completed checkpoint or savepoint.
    pub(super) fn newest_completed(&self) -> Option<&CheckpointEntry> {
        match (&self.latest_completed, &self.latest_savepoint) {
            (Some(c), Some(s)) => Some(if s.id > c.id { s } else { c }),
            (c, s) => c.as_ref().or(s.as_ref()),
        }
    }

    /// `CheckpointingStatistics` JSON.
    fn to_json(&self, num_subtasks: u32) -> Value {
        let retained = self.latest_completed.as_ref().map(|e| e.id);
        let completed: Vec<&CheckpointEntry> = self.history.iter().filter(|e| e.is_completed()).collect();
        let sizes: Vec<i64> = completed.iter().map(|_| CHECKPOINT_SIZE).collect();
        let durations: Vec<i64> = completed.iter().map(|e| e.duration()).collect();
        let zeros: Vec<i64> = completed.iter().map(|_| 0).collect();
        let entry = |e: &Option<CheckpointEntry>| e.as_ref().map_or(Value::Null, |e| e.to_json(num_subtasks, retained));
        json!({
            "counts": {
                "restored": u64::from(self.restored.is_some()),
                "total": self.completed + self.failed,
                "in_progress": 0,
                "completed": self.completed,
                "failed": self.failed,
            },
            "summary": {
                "checkpointed_size": stats(&sizes, true),
                "state_size": stats(&sizes, true),
                "end_to_end_duration": stats(&durations, true),
                "alignment_buffered": stats(&zeros, false),
                "processed_data": stats(&zeros, true),
                "persisted_data": stats(&zeros, true),
            },
            "latest": {
                "completed": entry(&self.latest_completed),
                "savepoint": entry(&self.latest_savepoint),
                "failed": entry(&self.latest_failed),
                "restored": self.restored.as_ref().map_or(Value::Null, |r| json!({
                    "id": r.id,
                    "restore_timestamp": r.ts,
                    "is_savepoint": r.is_savepoint,
                    "external_path": r.path,
                })),
            },
            "history": self.history.iter().map(|e| e.to_json(num_subtasks, retained)).collect::<Vec<_>>(),
        })
    }
}

/// `StatsSummaryDto`; with no samples Flink writes `"NaN"` percentiles (except for
/// `alignment_buffered`, which reports zeros).
fn stats(values: &[i64], nan_when_empty: bool) -> Value {
    if values.is_empty() {
        let p = if nan_when_empty { json!("NaN") } else { json!(0.0) };
        return json!({"min": 0, "max": 0, "avg": 0, "p50": p, "p90": p, "p95": p, "p99": p, "p999": p});
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let pct = |q: f64| {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64
    };
    json!({
        "min": sorted[0],
        "max": sorted[sorted.len() - 1],
        "avg": sorted.iter().sum::<i64>() / sorted.len() as i64,
        "p50": pct(0.5),
        "p90": pct(0.9),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "p999": pct(0.999),
    })
}

/// One entry of the exception history (`RootExceptionInfo` / `ExceptionInfo`).
#[derive(Debug, Clone)]
pub(super) struct ExceptionEntry {
    pub(super) name: String,
    pub(super) trace: String,
    pub(super) ts: i64,
    /// `taskName` for task failures; global failures have none.
    pub(super) task: Option<String>,
    pub(super) concurrent: Vec<ExceptionEntry>,
}

impl ExceptionEntry {
    fn to_json(&self, version: FlinkApiVersion, root: bool) -> Value {
        let mut m = Map::new();
        m.insert("exceptionName".into(), json!(self.name));
        m.insert("stacktrace".into(), json!(self.trace));
        m.insert("timestamp".into(), json!(self.ts));
        m.insert("failureLabels".into(), json!({}));
        if let Some(task) = &self.task {
            m.insert("taskName".into(), json!(task));
            let key = match version {
                FlinkApiVersion::V1 => "location",
                FlinkApiVersion::V2 => "endpoint",
            };
            m.insert(key.into(), json!(TM_ENDPOINT));
            m.insert("taskManagerId".into(), json!(TM_ID));
        }
        if root {
            let conc: Vec<Value> = self.concurrent.iter().map(|c| c.to_json(version, false)).collect();
            m.insert("concurrentExceptions".into(), Value::Array(conc));
        }
        Value::Object(m)
    }
}

/// The latest failure cause, for the deprecated 1.x top-level exception fields.
#[derive(Debug, Clone)]
pub(super) struct FailureInfo {
    root_trace: String,
    ts: i64,
    task_trace: String,
    task: String,
}

/// A running restart loop (see `FakeJobManager::restart_loop`).
#[derive(Debug, Clone)]
pub(super) struct RestartLoop {
    since: i64,
    /// Failures recorded so far; the k-th (from 0) happens at `since + k s`.
    created: u64,
    class: String,
    message: String,
}

/// One job of the fake cluster.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub(super) jid: String,
    pub(super) name: String,
    pub(super) parallelism: u32,
    pub(super) status: JobStatus,
    pub(super) timestamps: [i64; 11],
    pub(super) start_time: i64,
    pub(super) end_time: i64,
    pub(super) last_modification: i64,
    pub(super) failed_tasks: u32,
    pub(super) vertex_ids: [String; 2],
    pub(super) slot_sharing_group: String,
    pub(super) ckpt: Checkpoints,
    pub(super) num_restarts: u64,
    pub(super) restart_loop: Option<RestartLoop>,
    /// Oldest first, at most [`EXCEPTION_HISTORY_CAP`].
    pub(super) exceptions: VecDeque<ExceptionEntry>,
    pub(super) failure: Option<FailureInfo>,
    pub(super) running_since: Option<i64>,
    pub(super) attempt: u64,
    /// Submission order; job lists show the newest submission first.
    pub(super) seq: u64,
}

/// 32 lowercase hex digits derived from `parts` (stable across runs).
fn stable_id(parts: &[&str]) -> String {
    let mut out = String::new();
    for salt in 0u8..2 {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        parts.hash(&mut h);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl Job {
    /// A job that has just reached RUNNING at `now`.
    pub(super) fn new(
        jid: String,
        name: &str,
        parallelism: u32,
        now: i64,
        restored: Option<Restored>,
        seq: u64,
    ) -> Job {
        let vertex_ids = [stable_id(&[name, "source"]), stable_id(&[name, "map-sink"])];
        let slot_sharing_group = stable_id(&[&jid, "ssg"]);
        let next_id = restored.as_ref().map_or(1, |r| r.id + 1);
        let mut job = Job {
            jid,
            name: name.to_string(),
            parallelism: parallelism.max(1),
            status: JobStatus::Initializing,
            timestamps: [0; 11],
            start_time: now - 41,
            end_time: -1,
            last_modification: now,
            failed_tasks: 0,
            vertex_ids,
            slot_sharing_group,
            ckpt: Checkpoints { next_id, restored, ..Checkpoints::default() },
            num_restarts: 0,
            restart_loop: None,
            exceptions: VecDeque::new(),
            failure: None,
            running_since: None,
            attempt: 0,
            seq,
        };
        job.timestamps[JobStatus::Initializing.idx()] = now - 41;
        job.timestamps[JobStatus::Created.idx()] = now - 24;
        job.enter(JobStatus::Running, now);
        job
    }

    /// Total number of subtasks (two vertices of `parallelism` each).
    pub(super) fn total_tasks(&self) -> u32 {
        2 * self.parallelism
    }

    /// Moves to `s` at `ts`, keeping timestamps and clocks consistent.
    fn enter(&mut self, s: JobStatus, ts: i64) {
        if self.status.is_globally_terminal() && !s.is_globally_terminal() {
            // Only the test controls can do this; forget the old ending.
            self.end_time = -1;
            for t in
                [JobStatus::Failing, JobStatus::Failed, JobStatus::Cancelling, JobStatus::Canceled, JobStatus::Finished]
            {
                self.timestamps[t.idx()] = 0;
            }
        }
        self.timestamps[s.idx()] = ts;
        self.status = s;
        self.last_modification = ts;
        if s == JobStatus::Running {
            self.running_since = Some(ts);
            self.ckpt.clock = Some(ts);
        } else {
            self.running_since = None;
            self.ckpt.clock = None;
        }
        if s != JobStatus::Restarting {
            self.restart_loop = None;
        }
        if s.is_globally_terminal() {
            self.end_time = ts;
        }
    }

    /// Materialises everything that wall-clock time has produced up to `now`: periodic
    /// checkpoints while RUNNING, restarts (and their failures) while in a restart loop.
    pub(super) fn advance(&mut self, now: i64) {
        if self.status == JobStatus::Running {
            if let Some(clock) = self.ckpt.clock {
                let n = (now - clock).div_euclid(1000);
                if n > 0 {
                    let subtasks = self.total_tasks();
                    self.ckpt.run_ticks(&self.jid, clock, n as u64, subtasks);
                    self.ckpt.clock = Some(clock + 1000 * n);
                }
            }
        }
        if self.status == JobStatus::Restarting {
            if let Some(mut l) = self.restart_loop.take() {
                let due = ((now - l.since).div_euclid(1000) + 1).max(0) as u64;
                if due > l.created {
                    let skip = (due - l.created).saturating_sub(EXCEPTION_HISTORY_CAP as u64);
                    // Failures that would drop out of the history anyway are only counted.
                    let restarts_skipped = (l.created + skip).saturating_sub(l.created.max(1));
                    self.num_restarts += restarts_skipped;
                    self.attempt += skip;
                    l.created += skip;
                    while l.created < due {
                        let ts = l.since + 1000 * l.created as i64;
                        if l.created >= 1 {
                            self.num_restarts += 1;
                            self.timestamps[JobStatus::Running.idx()] = ts - 100;
                        }
                        self.push_task_failure(&l.class, &l.message, ts);
                        self.timestamps[JobStatus::Restarting.idx()] = ts;
                        self.last_modification = ts;
                        l.created += 1;
                    }
                }
                self.restart_loop = Some(l);
            }
        }
    }

    fn task_name(&self) -> String {
        format!("{MAP_VERTEX} (1/{})", self.parallelism)
    }

    fn push_exception(&mut self, e: ExceptionEntry) {
        self.exceptions.push_back(e);
        while self.exceptions.len() > EXCEPTION_HISTORY_CAP {
            self.exceptions.pop_front();
        }
    }

    /// Records a task failure (an exception history entry with a task) at `ts`.
    fn push_task_failure(&mut self, class: &str, message: &str, ts: i64) {
        let trace = text::task_trace(class, message);
        let task = self.task_name();
        let entry = ExceptionEntry {
            name: class.to_string(),
            trace: trace.clone(),
            ts,
            task: Some(format!("{task} - execution #{}", self.attempt)),
            concurrent: Vec::new(),
        };
        self.attempt += 1;
        self.push_exception(entry);
        self.failure = Some(FailureInfo { root_trace: trace.clone(), ts, task_trace: trace, task });
    }

    /// FAILED with restart strategy `none`.
    pub(super) fn fail(&mut self, class: &str, message: &str, now: i64) {
        self.advance(now);
        let task_trace = text::task_trace(class, message);
        let root_trace = text::no_restart_trace(class, message);
        let task = self.task_name();
        let concurrent = ExceptionEntry {
            name: class.to_string(),
            trace: task_trace.clone(),
            ts: now,
            task: Some(format!("{task} - execution #{}", self.attempt)),
            concurrent: Vec::new(),
        };
        self.attempt += 1;
        self.push_exception(ExceptionEntry {
            name: "org.apache.flink.runtime.JobException".into(),
            trace: root_trace.clone(),
            ts: now,
            task: None,
            concurrent: vec![concurrent],
        });
        self.failure = Some(FailureInfo { root_trace, ts: now, task_trace, task });
        self.timestamps[JobStatus::Failing.idx()] = now;
        self.enter(JobStatus::Failed, now);
    }

    /// RESTARTING, failing again every second.
    pub(super) fn restart_loop(&mut self, class: &str, message: &str, now: i64) {
        self.advance(now);
        self.enter(JobStatus::Restarting, now);
        self.restart_loop =
            Some(RestartLoop { since: now, created: 0, class: class.to_string(), message: message.to_string() });
        self.advance(now);
    }

    /// Marks `failed` subtasks FAILED while the job stays RUNNING.
    pub(super) fn tasks_failing(&mut self, failed: u32, now: i64) {
        self.advance(now);
        self.failed_tasks = failed.min(self.total_tasks());
        self.last_modification = now;
    }

    /// CANCELED (no-op for globally terminal jobs).
    pub(super) fn cancel(&mut self, now: i64) {
        self.advance(now);
        if self.status.is_globally_terminal() {
            return;
        }
        self.timestamps[JobStatus::Cancelling.idx()] = now;
        self.enter(JobStatus::Canceled, now);
    }

    /// FINISHED (no-op for globally terminal jobs).
    pub(super) fn finish(&mut self, now: i64) {
        self.advance(now);
        if self.status.is_globally_terminal() {
            return;
        }
        self.enter(JobStatus::Finished, now);
    }

    /// RUNNING with all tasks healthy.
    pub(super) fn recover(&mut self, now: i64) {
        self.advance(now);
        self.failed_tasks = 0;
        if self.status == JobStatus::Running {
            self.last_modification = now;
            return;
        }
        if self.status == JobStatus::Restarting {
            // The restart that finally worked.
            self.num_restarts += 1;
        }
        self.enter(JobStatus::Running, now);
    }

    /// Adds a completed savepoint taken at `now`.
    pub(super) fn add_savepoint(&mut self, location: &str, kind: SavepointKind, now: i64) -> u64 {
        self.advance(now);
        let id = self.ckpt.next_id;
        self.ckpt.next_id += 1;
        let subtasks = self.total_tasks();
        self.ckpt.push(CheckpointEntry {
            id,
            trigger_ts: now - 31,
            ack_ts: now,
            acked: subtasks,
            outcome: Outcome::Completed { external_path: location.to_string(), savepoint: Some(kind) },
        });
        id
    }

    /// Pretends `ms` more milliseconds of this job's life have passed.
    pub(super) fn shift(&mut self, ms: i64, now: i64) {
        self.advance(now);
        for t in self.timestamps.iter_mut() {
            if *t > 0 {
                *t -= ms;
            }
        }
        self.start_time -= ms;
        if self.end_time >= 0 {
            self.end_time -= ms;
        }
        self.last_modification -= ms;
        if let Some(r) = &mut self.running_since {
            *r -= ms;
        }
        if let Some(l) = &mut self.restart_loop {
            l.since -= ms;
        }
        for e in self.exceptions.iter_mut() {
            e.ts -= ms;
            for c in e.concurrent.iter_mut() {
                c.ts -= ms;
            }
        }
        if let Some(f) = &mut self.failure {
            f.ts -= ms;
        }
        self.ckpt.shift(ms);
        self.advance(now);
    }

    /// What a new leader shows after recovering this job from the HA store at `now`.
    pub(super) fn failover(&mut self, now: i64) {
        self.advance(now);
        let restored = self.ckpt.newest_completed().map(|e| Restored {
            id: e.id,
            ts: now,
            is_savepoint: e.savepoint().is_some(),
            path: e.external_path().unwrap_or_default().to_string(),
        });
        let mut fresh = Job::new(self.jid.clone(), &self.name, self.parallelism, now, restored, self.seq);
        fresh.ckpt.next_id = fresh.ckpt.next_id.max(self.ckpt.next_id);
        *self = fresh;
    }

    /// Subtask counts of vertex `v` (0 = source, 1 = map/sink chain).
    fn vertex_tasks(&self, v: usize) -> TaskCounts {
        let p = self.parallelism;
        let mut c: TaskCounts = [0; 10];
        match self.status {
            JobStatus::Running => {
                let on_map = self.failed_tasks.min(p);
                let on_source = (self.failed_tasks - on_map).min(p);
                let failed = if v == 1 { on_map } else { on_source };
                c[Exec::Running as usize] = p - failed;
                c[Exec::Failed as usize] = failed;
            }
            JobStatus::Restarting | JobStatus::Failing | JobStatus::Failed => {
                if v == 1 {
                    c[Exec::Failed as usize] = 1;
                    c[Exec::Canceled as usize] = p - 1;
                } else {
                    c[Exec::Canceled as usize] = p;
                }
            }
            JobStatus::Cancelling => c[Exec::Canceling as usize] = p,
            JobStatus::Canceled | JobStatus::Suspended => c[Exec::Canceled as usize] = p,
            JobStatus::Finished => c[Exec::Finished as usize] = p,
            JobStatus::Initializing | JobStatus::Created => c[Exec::Created as usize] = p,
            JobStatus::Reconciling => c[Exec::Reconciling as usize] = p,
        }
        c
    }

    fn job_tasks(&self) -> TaskCounts {
        let mut c = self.vertex_tasks(0);
        for (i, n) in self.vertex_tasks(1).iter().enumerate() {
            c[i] += n;
        }
        c
    }

    fn duration(&self, now: i64) -> i64 {
        (if self.end_time >= 0 { self.end_time } else { now }) - self.start_time
    }

    /// `JobDetails` as listed by `/jobs/overview` (task keys lowercase + `total`).
    pub(super) fn overview_json(&self, version: FlinkApiVersion, now: i64) -> Value {
        let mut tasks = Map::new();
        let counts = self.job_tasks();
        for (i, s) in EXEC_ALL.iter().enumerate() {
            tasks.insert(s.name().to_ascii_lowercase(), json!(counts[i]));
        }
        tasks.insert("total".into(), json!(self.total_tasks()));
        let mut v = json!({
            "jid": self.jid,
            "name": self.name,
            "start-time": self.start_time,
            "end-time": self.end_time,
            "duration": self.duration(now),
            "state": self.status.name(),
            "last-modification": self.last_modification,
            "tasks": tasks,
        });
        if version == FlinkApiVersion::V2 {
            let m = v.as_object_mut().expect("object");
            m.insert("jobType".into(), json!("STREAMING"));
            m.insert("schedulerType".into(), json!("Default"));
            m.insert("pending-operators".into(), json!(0));
        }
        v
    }

    /// `JobDetailsInfo` as returned by `/jobs/:jid` (task keys UPPERCASE).
    pub(super) fn details_json(&self, version: FlinkApiVersion, now: i64) -> Value {
        let names = [format!("Source: {}-source", self.name), MAP_VERTEX.to_string()];
        let mut vertices = Vec::new();
        let mut status_counts: TaskCounts = [0; 10];
        let running_ts = self.timestamps[JobStatus::Running.idx()];
        for (v, name) in names.iter().enumerate() {
            let tasks = self.vertex_tasks(v);
            let status = aggregate(&tasks, self.parallelism);
            status_counts[status as usize] += 1;
            let start = if running_ts > 0 { running_ts + 3 } else { -1 };
            let end = if status.is_terminal() && start >= 0 { self.last_modification.max(start) } else { -1 };
            let duration = if start < 0 { -1 } else { (if end >= 0 { end } else { now }) - start };
            let done = status.is_terminal();
            let mut vertex = json!({
                "id": self.vertex_ids[v],
                "name": name,
                "maxParallelism": 128,
                "parallelism": self.parallelism,
                "status": status.name(),
                "start-time": start,
                "end-time": end,
                "duration": duration,
                "tasks": counts_upper(&tasks),
                "metrics": {
                    "read-bytes": 0,
                    "read-bytes-complete": done,
                    "write-bytes": 0,
                    "write-bytes-complete": done,
                    "read-records": 0,
                    "read-records-complete": done,
                    "write-records": 0,
                    "write-records-complete": done,
                    "accumulated-backpressured-time": 0,
                    "accumulated-idle-time": 0,
                    "accumulated-busy-time": 0.0,
                },
            });
            if version == FlinkApiVersion::V2 {
                vertex
                    .as_object_mut()
                    .expect("object")
                    .insert("slotSharingGroupId".into(), json!(self.slot_sharing_group));
            }
            vertices.push(vertex);
        }
        let mut timestamps = Map::new();
        for s in JobStatus::ALL {
            timestamps.insert(s.name().to_string(), json!(self.timestamps[s.idx()]));
        }
        let plan = json!({
            "jid": self.jid,
            "name": self.name,
            "type": "STREAMING",
            "nodes": [
                {
                    "id": self.vertex_ids[1],
                    "operator": "",
                    "parallelism": self.parallelism,
                    "operator_strategy": "",
                    "description": "Map<br/>+- Sink: Writer<br/>",
                    "optimizer_properties": {},
                    "inputs": [{
                        "id": self.vertex_ids[0],
                        "num": 0,
                        "exchange": "pipelined_bounded",
                        "ship_strategy": "HASH",
                    }],
                },
                {
                    "id": self.vertex_ids[0],
                    "operator": "",
                    "parallelism": self.parallelism,
                    "operator_strategy": "",
                    "description": format!("Source: {}-source<br/>", self.name),
                    "optimizer_properties": {},
                },
            ],
        });
        let mut v = json!({
            "jid": self.jid,
            "name": self.name,
            "isStoppable": false,
            "state": self.status.name(),
            "start-time": self.start_time,
            "end-time": self.end_time,
            "duration": self.duration(now),
            "maxParallelism": -1,
            "now": now,
            "timestamps": timestamps,
            "vertices": vertices,
            "status-counts": counts_upper(&status_counts),
            "plan": plan,
        });
        if version == FlinkApiVersion::V2 {
            let m = v.as_object_mut().expect("object");
            m.insert("application-id".into(), json!(self.jid));
            m.insert("job-type".into(), json!("STREAMING"));
            m.insert("schedulerType".into(), json!("Default"));
            m.insert("pending-operators".into(), json!(0));
        }
        v
    }

    /// `CheckpointingStatistics` of this job.
    pub(super) fn checkpoints_json(&self) -> Value {
        self.ckpt.to_json(self.total_tasks())
    }

    /// `/jobs/:jid/exceptions` with at most `max` history entries, newest first.
    pub(super) fn exceptions_json(&self, version: FlinkApiVersion, max: usize) -> Value {
        let entries: Vec<Value> = self.exceptions.iter().rev().take(max).map(|e| e.to_json(version, true)).collect();
        let history = json!({
            "entries": entries,
            "truncated": self.exceptions.len() > max,
        });
        match version {
            FlinkApiVersion::V2 => json!({ "exceptionHistory": history }),
            FlinkApiVersion::V1 => {
                let current = matches!(self.status, JobStatus::Failing | JobStatus::Failed | JobStatus::Restarting);
                let all: Vec<Value> = match (&self.failure, current) {
                    (Some(f), true) => vec![json!({
                        "exception": f.task_trace,
                        "task": f.task,
                        "location": TM_ENDPOINT,
                        "timestamp": f.ts,
                        "taskManagerId": TM_ID,
                    })],
                    _ => Vec::new(),
                };
                json!({
                    "root-exception": self.failure.as_ref().map(|f| f.root_trace.clone()),
                    "timestamp": self.failure.as_ref().map(|f| f.ts),
                    "all-exceptions": all,
                    "truncated": false,
                    "exceptionHistory": history,
                })
            }
        }
    }

    /// Every job metric the fake knows, as (id, value) with values rendered as strings.
    pub(super) fn metrics(&self, version: FlinkApiVersion, now: i64) -> Vec<(&'static str, String)> {
        let terminal = self.status.is_globally_terminal();
        let since = |s: JobStatus| {
            if self.status == s {
                now - self.timestamps[s.idx()]
            } else {
                0
            }
        };
        let uptime = match self.running_since {
            Some(t) => now - t,
            None if terminal => -1,
            None => 0,
        };
        let downtime = match self.status {
            JobStatus::Failing | JobStatus::Restarting => now - self.timestamps[self.status.idx()],
            _ if terminal => -1,
            _ => 0,
        };
        let all_running = if self.status == JobStatus::Running && self.failed_tasks == 0 { uptime } else { 0 };
        let last = self.ckpt.newest_completed();
        let last_i64 = |f: &dyn Fn(&CheckpointEntry) -> i64| last.map_or(-1, f);
        let mut m: Vec<(&'static str, String)> = vec![
            ("lastCheckpointSize", last_i64(&|_| CHECKPOINT_SIZE).to_string()),
            ("lastCheckpointExternalPath", last.and_then(|e| e.external_path()).unwrap_or("n/a").to_string()),
            ("failingTime", since(JobStatus::Failing).to_string()),
            ("numRescales", "0".into()),
            ("restartingTime", since(JobStatus::Restarting).to_string()),
            ("lastCheckpointMetadataSize", last_i64(&|_| 1183).to_string()),
            ("numberOfInProgressCheckpoints", "0".into()),
            ("lastCheckpointProcessedData", last_i64(&|_| 0).to_string()),
            ("numberOfCompletedCheckpoints", self.ckpt.completed.to_string()),
            ("numRestarts", self.num_restarts.to_string()),
            ("deployingTime", "0".into()),
            ("createdTime", since(JobStatus::Created).to_string()),
            ("lastCheckpointDuration", last_i64(&|e| e.duration()).to_string()),
            ("numberOfFailedCheckpoints", self.ckpt.failed.to_string()),
            ("cancellingTime", since(JobStatus::Cancelling).to_string()),
            ("lastCheckpointCompletedTimestamp", last_i64(&|e| e.ack_ts).to_string()),
            ("totalNumberOfCheckpoints", (self.ckpt.completed + self.ckpt.failed).to_string()),
            ("lastCompletedCheckpointId", last_i64(&|e| e.id as i64).to_string()),
            ("lastCheckpointRestoreTimestamp", self.ckpt.restored.as_ref().map_or(-1, |r| r.ts).to_string()),
            ("runningTime", uptime.max(0).to_string()),
            ("uptime", uptime.to_string()),
            ("initializingTime", since(JobStatus::Initializing).to_string()),
            ("allSubTasksRunningOrFinishedTime", all_running.to_string()),
            ("downtime", downtime.to_string()),
            ("lastCheckpointFullSize", last_i64(&|_| CHECKPOINT_SIZE).to_string()),
            ("lastCheckpointPersistedData", last_i64(&|_| 0).to_string()),
        ];
        if version == FlinkApiVersion::V1 {
            m.push(("fullRestarts", self.num_restarts.to_string()));
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_tick_every_second_and_history_is_capped() {
        let mut job = Job::new("a".repeat(32), "clicks", 1, 1_000_000, None, 0);
        job.advance(1_000_999);
        assert_eq!(job.ckpt.completed, 0);
        assert!(job.ckpt.latest_completed.is_none());
        job.advance(1_003_000);
        assert_eq!(job.ckpt.completed, 3);
        assert_eq!(job.ckpt.history[0].id, 3);
        job.advance(1_100_000);
        assert_eq!(job.ckpt.completed, 100);
        assert_eq!(job.ckpt.history.len(), CHECKPOINT_HISTORY_CAP);
        assert_eq!(job.ckpt.history[0].id, 100);
        assert_eq!(job.ckpt.history[9].id, 91);
        assert_eq!(job.ckpt.next_id, 101);
    }

    #[test]
    fn restart_loop_counts_one_restart_per_second() {
        let mut job = Job::new("b".repeat(32), "clicks", 1, 1_000_000, None, 0);
        job.restart_loop("java.lang.RuntimeException", "boom", 1_000_500);
        assert_eq!(job.num_restarts, 0);
        assert_eq!(job.exceptions.len(), 1);
        job.advance(1_003_600);
        assert_eq!(job.num_restarts, 3);
        assert_eq!(job.exceptions.len(), 4);
        job.advance(1_100_600);
        assert_eq!(job.num_restarts, 100);
        assert_eq!(job.exceptions.len(), EXCEPTION_HISTORY_CAP);
        assert_eq!(job.exceptions.back().map(|e| e.ts), Some(1_100_500));
    }

    #[test]
    fn stats_percentiles() {
        let v = stats(&[7, 50, 16, 12], true);
        assert_eq!(v["min"], 7);
        assert_eq!(v["max"], 50);
        assert_eq!(v["avg"], 21);
        assert_eq!(v["p50"], 12.0);
        assert_eq!(v["p99"], 50.0);
        assert_eq!(stats(&[], true)["p50"], "NaN");
        assert_eq!(stats(&[], false)["p50"], 0.0);
    }

    #[test]
    fn base64_matches_known_values() {
        assert_eq!(text::base64(b""), "");
        assert_eq!(text::base64(b"f"), "Zg==");
        assert_eq!(text::base64(b"fo"), "Zm8=");
        assert_eq!(text::base64(b"foobar"), "Zm9vYmFy");
    }
}
