//! An in-process fake of an Apache Flink JobManager's REST API, for tests and `warden demo`.
//!
//! The fake answers like a real Flink 2.3.0 session cluster (one JobManager, one TaskManager with
//! four slots); the shapes follow the responses captured in `tests/fixtures/flink-2.3.0/`, and a
//! test in this module checks that every key of those samples is produced. With
//! [`FlinkApiVersion::V1`] it speaks the 1.x dialect instead.
//!
//! Time is real: a RUNNING job completes a checkpoint every second and a job in a restart loop
//! restarts every second. Nothing runs in the background; the effects of elapsed time are
//! computed from timestamps whenever the fake is asked. [`FakeJobManager::fast_forward`] moves a
//! job's clock so tests need not sleep.
//!
//! Differences from a real cluster worth knowing:
//! * Every job is the same streaming topology: `Source: <name>-source` → `Map -> Sink: Writer`,
//!   each vertex with the job's parallelism (1 unless a jar run asks for more).
//! * Error texts are what Flink 2.x sends: `errors[0]` is a stringified Java exception (class,
//!   message, stack trace), so match on the HTTP status and a substring, never on equality.
//! * An unknown `GET` path answers 404 `Unable to load requested file <path>.` (what a cluster
//!   with the web UI says, see `error-not-found.json`); other methods, or every method after
//!   `set_web_ui(false)`, answer 404 `Not found: <uri>`.

mod model;
mod rescale;
mod server;
#[cfg(test)]
mod tests;
mod text;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use server::{lock, now_ms, Jar, Reply, State};

/// Which generation of Flink's REST API the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlinkApiVersion {
    /// Flink 1.x (reported as 1.20.1): `/jobs/:jid/exceptions` carries the deprecated top-level
    /// `root-exception`, `timestamp`, `all-exceptions` and `truncated`, history entries name the
    /// TaskManager in `location`; jar runs accept `programArgs` (but not `claimMode`); the 2.x-only
    /// fields (`pending-operators`, `job-type`, `jobType`, `schedulerType`, `application-id`,
    /// `slotSharingGroupId`) are absent; `/overview` has `slots-free-and-blocked` and
    /// `taskmanagers-blocked`; the metric `fullRestarts` exists.
    V1,
    /// Flink 2.x (reported as 2.3.0): `exceptionHistory` only, `endpoint` instead of `location`;
    /// jar runs reject `programArgs` and accept `claimMode`.
    V2,
}

/// What the savepoint operations triggered from now on do (`POST /jobs/:jid/savepoints` and
/// `POST /jobs/:jid/stop`). The behaviour is captured when the operation is triggered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointBehaviour {
    /// The first `n` status polls answer `IN_PROGRESS`, the next one `COMPLETED` with
    /// `operation.location` (or with a `failure-cause` if the job is not RUNNING with all tasks
    /// up at that moment). `CompleteAfterPolls(0)` completes on the first poll.
    CompleteAfterPolls(u32),
    /// The first poll answers `COMPLETED` with `operation.failure-cause` of class
    /// `org.apache.flink.runtime.checkpoint.CheckpointException` and this message; the job is
    /// left as it was.
    Fail(String),
    /// Every poll answers `IN_PROGRESS`.
    NeverComplete,
}

impl Default for SavepointBehaviour {
    /// `CompleteAfterPolls(1)`: one `IN_PROGRESS`, then `COMPLETED`.
    fn default() -> Self {
        SavepointBehaviour::CompleteAfterPolls(1)
    }
}

/// What jobs run from a jar do (see [`FakeJobManager::set_jar_behaviour`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JarBehaviour {
    /// The program's `main()` throws: `POST /jars/:id/run` answers 400 (`Could not execute application.`,
    /// caused by `ProgramInvocationException: The main method caused an error: <message>`) and no job starts.
    MainThrows(String),
    /// The job starts RUNNING, but the answer to `POST /jars/:id/run` is a 500 (an answer lost after the
    /// submission, as a timeout would).
    AnswerLost,
    /// The job starts RUNNING and fails for good `after` its start (restart strategy `none`), like
    /// [`FakeJobManager::fail`].
    FailsAfter {
        /// How long after its start.
        after: Duration,
        /// The exception class.
        class: String,
        /// Its message.
        message: String,
    },
    /// The job starts RUNNING and goes into a restart loop `after` its start, like
    /// [`FakeJobManager::restart_loop`].
    RestartLoopAfter {
        /// How long after its start.
        after: Duration,
        /// The exception class.
        class: String,
        /// Its message.
        message: String,
    },
}

/// Stops the server when the last [`FakeJobManager`] handle goes away.
struct Handle {
    state: Arc<Mutex<State>>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// A fake Flink JobManager serving Flink's REST API on a local port.
///
/// Cheap to clone (all clones share one server); dropping the last clone or calling
/// [`FakeJobManager::shutdown`] stops the server. Must be started inside a Tokio runtime.
#[derive(Clone)]
pub struct FakeJobManager {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for FakeJobManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeJobManager").field("addr", &self.inner.addr).finish_non_exhaustive()
    }
}

impl FakeJobManager {
    /// Starts a fake on `127.0.0.1` with a free port.
    pub async fn start(version: FlinkApiVersion) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), version).await
    }

    /// Starts a fake listening on `addr` (port 0 picks a free port; the address is reusable
    /// right after a previous fake on it was shut down).
    pub async fn start_on(addr: SocketAddr, version: FlinkApiVersion) -> std::io::Result<Self> {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let mut local = listener.local_addr()?;
        if local.ip().is_unspecified() {
            local.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let mut st = State::new(version);
        st.port = local.port();
        let state = Arc::new(Mutex::new(st));
        let app = Router::new().fallback(server::handle).with_state(state.clone());
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
                tracing::warn!(error = %e, "fake flink server stopped with an error");
            }
        });
        Ok(FakeJobManager {
            inner: Arc::new(Handle { state, addr: local, shutdown: tx, task: Mutex::new(Some(task)) }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    /// Base URL, e.g. `http://127.0.0.1:40123` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Switches the API dialect for all later answers.
    pub fn set_version(&self, v: FlinkApiVersion) {
        self.state().version = v;
    }

    /// Registers an uploaded jar and returns its id (`<uuid>_<file_name>`); every run of it
    /// (`POST /jars/:id/run`) starts a new job named `job_name`.
    pub fn add_jar(&self, file_name: &str, entry_class: &str, job_name: &str) -> String {
        let id = format!("{}_{file_name}", server::uuid4());
        self.state().jars.push(Jar {
            id: id.clone(),
            name: file_name.to_string(),
            entry_class: entry_class.to_string(),
            job_name: job_name.to_string(),
            uploaded: now_ms(),
        });
        id
    }

    /// Sets what jobs submitted from now on from jars of this file name do (uploaded or added).
    pub fn set_jar_behaviour(&self, file_name: &str, b: JarBehaviour) {
        self.state().jar_behaviours.insert(file_name.to_string(), b);
    }

    /// How a jar of this file name uploaded over `POST /jars/upload` runs: its entry class and the name of the
    /// job it starts (default: no entry class, the file name without `.jar`).
    pub fn on_upload(&self, file_name: &str, entry_class: &str, job_name: &str) {
        self.state().upload_as.insert(file_name.to_string(), (entry_class.to_string(), job_name.to_string()));
    }

    /// The file names of every jar uploaded over `POST /jars/upload`, in order.
    pub fn uploads(&self) -> Vec<String> {
        self.state().uploads.clone()
    }

    /// Starts a new RUNNING job named `job_name` (parallelism 1) and returns its id (32 hex).
    pub fn submit(&self, job_name: &str) -> String {
        self.state().start_job(None, job_name, 1, None)
    }

    /// Fails the job for good (restart strategy `none`): state FAILED, and an exception history
    /// entry whose root is `JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy`
    /// with `Caused by: <exception_class>: <message>` in its stack trace and the task failure
    /// as its concurrent exception.
    pub fn fail(&self, jid: &str, exception_class: &str, message: &str) {
        self.with_job(jid, |j, now| j.fail(exception_class, message, now));
    }

    /// Puts the job in a restart loop: state RESTARTING; the task fails at once and again after
    /// every further second, each failure adding an exception history entry and each second
    /// adding one to `numRestarts`. Ends with [`recover`](Self::recover) (which counts the final,
    /// successful restart), [`fail`](Self::fail), [`cancel`](Self::cancel) or
    /// [`finish`](Self::finish).
    pub fn restart_loop(&self, jid: &str, exception_class: &str, message: &str) {
        self.with_job(jid, |j, now| j.restart_loop(exception_class, message, now));
    }

    /// Marks `failed` subtasks (at most all of them) FAILED while the job state stays RUNNING:
    /// `tasks.failed = failed`, `tasks.running = total - failed`. `0` heals them.
    pub fn tasks_failing(&self, jid: &str, failed: u32) {
        self.with_job(jid, |j, now| j.tasks_failing(failed, now));
    }

    /// Cancels the job (CANCELED), as `PATCH /jobs/:jid?mode=cancel` does. No-op for jobs that
    /// already ended.
    pub fn cancel(&self, jid: &str) {
        self.with_job(jid, |j, now| j.cancel(now));
    }

    /// Finishes the job (FINISHED). No-op for jobs that already ended.
    pub fn finish(&self, jid: &str) {
        self.with_job(jid, |j, now| j.finish(now));
    }

    /// Makes the job RUNNING with all tasks healthy again (also out of a terminal state, which a
    /// real cluster cannot do: `end-time` goes back to -1).
    pub fn recover(&self, jid: &str) {
        self.with_job(jid, |j, now| j.recover(now));
    }

    /// While `on`, the job's periodic checkpoints fail ("Checkpoint expired before completing.")
    /// instead of completing, one per second, as under heavy backpressure.
    pub fn set_checkpoints_failing(&self, jid: &str, on: bool) {
        self.with_job(jid, |j, now| {
            j.advance(now);
            j.ckpt.failing = on;
        });
    }

    /// Pretends `d` more wall-clock time has passed for this job: its timestamps move back by
    /// `d`, so checkpoints, restarts, `uptime` and durations advance as if the test had slept.
    pub fn fast_forward(&self, jid: &str, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
        self.with_job(jid, |j, now| j.shift(ms, now));
    }

    /// Simulates a JobManager failover (pair it with [`set_leader_election`]
    /// (Self::set_leader_election) for the 503 window): the new leader forgets terminated jobs
    /// and savepoint operations, recovers every other job as freshly RUNNING (new `start-time`,
    /// `numRestarts` 0, empty exception history, checkpoint counts reset with `latest.restored`
    /// set to the newest completed checkpoint), and `web.tmpdir` gets a new UUID.
    pub fn failover(&self) {
        self.state().failover();
    }

    /// While `on`, every request answers 503 with Flink's leader-election error body.
    pub fn set_leader_election(&self, on: bool) {
        self.state().leader_election = on;
    }

    /// Whether unknown `GET` paths answer like the web UI's file server (`Unable to load
    /// requested file <path>.`, the default, as on a real 2.3.0 cluster) or like the bare REST
    /// router (`Not found: <uri>`).
    pub fn set_web_ui(&self, on: bool) {
        self.state().web_ui = on;
    }

    /// Answers every request for `path` with this canned response (any method). `path` is
    /// matched exactly against the request path, or against `path?query` if it contains `?`.
    /// The leader-election switch still wins over overrides.
    pub fn set_override(&self, path: &str, status: u16, content_type: &str, body: Vec<u8>) {
        self.state().overrides.insert(path.to_string(), Reply { status, content_type: content_type.to_string(), body });
    }

    /// Removes every override.
    pub fn clear_overrides(&self) {
        self.state().overrides.clear();
    }

    /// Makes every answer wait `d` first (`Duration::ZERO` turns it off).
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// Sets what savepoint / stop-with-savepoint operations triggered from now on do.
    pub fn set_savepoint_behaviour(&self, b: SavepointBehaviour) {
        self.state().savepoint_behaviour = b;
    }

    /// Runs the adaptive scheduler (or, with `false`, the default one again): in-place rescaling through
    /// `PUT /jobs/:jid/resource-requirements` works, see the crate's `rescale` module.
    pub fn set_adaptive_scheduler(&self, on: bool) {
        self.state().adaptive.on = on;
    }

    /// How long after a `PUT /jobs/:jid/resource-requirements` the job runs at its new parallelism (zero by
    /// default; a real 2.3.0 cluster took about 30 s).
    pub fn set_rescale_delay(&self, d: Duration) {
        self.state().adaptive.delay = d;
    }

    /// Submits a new RUNNING job named `job_name` at `parallelism` (one slot per unit of parallelism).
    pub fn submit_with_parallelism(&self, job_name: &str, parallelism: u32) -> String {
        self.state().start_job(None, job_name, parallelism, None)
    }

    /// The job's parallelism now (every vertex has it), or `None` for an unknown job.
    pub fn job_parallelism(&self, jid: &str) -> Option<u32> {
        let mut st = self.state();
        let now = now_ms();
        rescale::apply_due(&mut st, now, server::SLOTS);
        st.job_mut(jid).map(|j| j.parallelism)
    }

    /// `(jid, state)` of every job named `name`, newest first.
    pub fn jobs_named(&self, name: &str) -> Vec<(String, String)> {
        let mut st = self.state();
        let now = now_ms();
        st.jobs.iter_mut().for_each(|j| j.advance(now));
        server::settle(&mut st, now);
        st.jobs_newest_first()
            .into_iter()
            .filter(|j| j.name == name)
            .map(|j| (j.jid.clone(), j.status.name().to_string()))
            .collect()
    }

    /// The job's state (`RUNNING`, `FAILED`, …), or `None` for an unknown job.
    pub fn job_state(&self, jid: &str) -> Option<String> {
        let mut st = self.state();
        server::settle(&mut st, now_ms());
        st.job_mut(jid).map(|j| j.status.name().to_string())
    }

    /// The current `numRestarts` of the job, or `None` for an unknown job.
    pub fn num_restarts(&self, jid: &str) -> Option<u64> {
        let now = now_ms();
        self.state().job_mut(jid).map(|j| {
            j.advance(now);
            j.num_restarts
        })
    }

    /// Bodies of every `POST /jars/:id/run` received, in order, including rejected ones (a body
    /// that is not JSON is kept as a JSON string; an empty body as `{}`).
    pub fn jar_runs(&self) -> Vec<serde_json::Value> {
        self.state().jar_runs.clone()
    }

    /// Every request received, in order, as `"METHOD /path"` (without the query string). The log
    /// keeps the latest 50 000 to 100 000 requests.
    pub fn request_log(&self) -> Vec<String> {
        self.state().requests.iter().map(|(m, p, _)| format!("{m} {p}")).collect()
    }

    /// Every request received, in order, as `("METHOD /path", query string)`: [`request_log`](Self::request_log)
    /// with the query strings.
    pub fn request_log_with_queries(&self) -> Vec<(String, Option<String>)> {
        self.state().requests.iter().map(|(m, p, q)| (format!("{m} {p}"), q.clone())).collect()
    }

    /// The most requests that were in flight at once (received and not yet answered, a
    /// [`set_delay`](Self::set_delay) wait included) since the start or the last call of this
    /// method, which resets it to the number in flight now.
    pub fn take_max_in_flight(&self) -> usize {
        let mut st = self.state();
        let max = st.max_in_flight;
        st.max_in_flight = st.in_flight;
        max
    }

    /// Every request received, in order, as `"METHOD /path?query"` (query kept when present).
    pub fn requests(&self) -> Vec<String> {
        self.state()
            .requests
            .iter()
            .map(|(m, p, q)| match q {
                Some(q) => format!("{m} {p}?{q}"),
                None => format!("{m} {p}"),
            })
            .collect()
    }

    /// The `web.tmpdir` the fake reports in `/jobmanager/config` (changes on [`failover`]
    /// (Self::failover)).
    pub fn web_tmpdir(&self) -> String {
        self.state().web_tmpdir.clone()
    }

    /// Stops the server: the port stops accepting at once; requests in flight are finished.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// [`shutdown`](Self::shutdown), then waits until the server has closed every connection.
    pub async fn shutdown_and_wait(&self) {
        self.shutdown();
        let task = self.inner.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn with_job(&self, jid: &str, f: impl FnOnce(&mut model::Job, i64)) {
        let now = now_ms();
        let mut st = self.state();
        match st.job_mut(jid) {
            Some(j) => f(j, now),
            None => tracing::warn!(jid, "fake flink: no such job"),
        }
    }
}
