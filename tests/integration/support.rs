//! Shared helpers: a fake JobManager with a job, configurations written to a temp dir (as JSON, which is YAML),
//! the daemon run in-process with a oneshot shutdown, and waiting on its events or on conditions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};
use warden::event::{Event, Events};
use warden::model::AlertRecord;
use warden::runtime::{self, RunOptions, RuntimeError, Stats};
use warden::store::{JournalEntry, Store};

/// The shipped Flink pack.
pub const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
/// The `warden` binary built for these tests.
pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
/// How long any wait may take before the test fails (generous: the machine may be loaded).
pub const WAIT: Duration = Duration::from_secs(20);

/// Generates one test per Flink API generation (`v1::name`, `v2::name`) from `async fn name(v: FlinkApiVersion)`.
#[macro_export]
macro_rules! both_versions {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        mod v1 {
            $( $(#[$m])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(fake_flink::FlinkApiVersion::V1).await } )*
        }
        mod v2 {
            $( $(#[$m])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(fake_flink::FlinkApiVersion::V2).await } )*
        }
    };
}

/// Merges `over` into `base` (objects key by key, anything else replaced).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_object() && v.is_object() => merge(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A configuration that watches `url` (target `jm`) with the shipped Flink pack every 200 ms, with short `for`
/// parameters, and `over` merged in.
pub fn flink_config(url: &str, over: Value) -> Value {
    let mut c = json!({
        "state_dir": "state",
        "pack_paths": [RULES_DIR],
        "targets": [{"name": "jm", "url": url, "timeout": "2s"}],
        "packs": {"flink": {"every": "200ms", "params": {"not_running_for": "400ms", "unreachable_polls": 2}}},
        "shutdown_grace": "5s",
    });
    merge(&mut c, over);
    c
}

/// A fake JobManager with a jar for `job` (so `demo-relaunch` can resubmit it) and one RUNNING run of it.
pub async fn fake_with_job(v: FlinkApiVersion, job: &str) -> (FakeJobManager, String) {
    let fake = FakeJobManager::start(v).await.expect("fake JobManager starts");
    fake.add_jar(&format!("{job}.jar"), "com.example.Job", job);
    let jid = fake.submit(job);
    (fake, jid)
}

/// A `commands:` entry that appends its arguments (`{target_url}`, `{job}`, `{jid}`, one per line, then `<end>`)
/// to `record`, then relaunches the job on the fake with `warden demo-relaunch`.
pub fn recording_relaunch(record: &Path) -> Value {
    json!({
        "argv": ["sh", "-c",
                 "printf '%s\\n' \"$@\" '<end>' >> \"$0\" && exec \"$WARDEN_EXE\" demo-relaunch \"$1\" \"$2\"",
                 record, "{target_url}", "{job}", "{jid}"],
        "env": {"WARDEN_EXE": WARDEN},
        "timeout": "20s",
    })
}

/// The argument vectors a recording command received, one per invocation.
pub fn invocations(record: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut out = vec![];
    let mut cur = vec![];
    for line in text.lines() {
        if line == "<end>" {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(line.to_string());
        }
    }
    out
}

/// Writes a pack `plugins/<name>/` under `dir`: one probe `p` of `/jobs/overview` every 200 ms judged by `rules`
/// (`(short name, source)`, in that order).
pub fn write_pack(dir: &Path, name: &str, rules: &[(&str, &str)]) -> PathBuf {
    let pdir = dir.join("plugins").join(name);
    std::fs::create_dir_all(&pdir).expect("pack dir");
    let names: Vec<&str> = rules.iter().map(|(n, _)| *n).collect();
    let manifest = format!(
        "name: {name}\nversion: 0.1.0\nprobes:\n  - name: p\n    every: 200ms\n    request:\n      path: /jobs/overview\n    rules: [{}]\n",
        names.join(", ")
    );
    std::fs::write(pdir.join("pack.yaml"), manifest).expect("pack.yaml");
    for (n, src) in rules {
        std::fs::write(pdir.join(format!("{n}.rhai")), src).expect("rule file");
    }
    pdir
}

/// Writes `cfg` as `<dir>/warden.yaml` (JSON is YAML) and returns its path.
pub fn write_config(dir: &Path, cfg: &Value) -> PathBuf {
    let path = dir.join("warden.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(cfg).expect("json")).expect("write warden.yaml");
    path
}

/// True for an alert event `event` (`firing`, `resolved`, `giving_up`, …) of `rule` about `subject`.
pub fn is_alert(e: &Event, event: &str, rule: &str, subject: &str) -> bool {
    matches!(e, Event::Alert(a) if a.event == event && a.rule == rule && a.subject == subject)
}

/// The alert record of an event (panics on other events).
pub fn record(e: Event) -> AlertRecord {
    match e {
        Event::Alert(a) => a,
        other => panic!("not an alert: {other:?}"),
    }
}

/// The journal's `run` entries about `subject`.
pub fn runs<'a>(journal: &'a [JournalEntry], subject: &str) -> Vec<&'a JournalEntry> {
    journal.iter().filter(|e| e.action == "run" && e.subject == subject).collect()
}

/// Runs `f` until it is true, checking every 50 ms, for at most [`WAIT`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon, running in this process.
pub struct Daemon {
    /// The directory holding `warden.yaml` and the state (removed when the daemon is dropped).
    dir: Option<TempDir>,
    /// The state directory.
    pub state_dir: PathBuf,
    rx: broadcast::Receiver<Event>,
    /// Every event received so far.
    pub seen: Vec<Event>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<Arc<Stats>, RuntimeError>>>,
}

impl Daemon {
    /// Writes `cfg` into a new temp dir and starts the daemon on it.
    pub async fn start(cfg: Value) -> Daemon {
        Self::start_in(tempfile::tempdir().expect("tempdir"), cfg).await
    }

    /// Writes `cfg` into `dir` (which may already hold packs) and starts the daemon on it.
    pub async fn start_in(dir: TempDir, cfg: Value) -> Daemon {
        write_config(dir.path(), &cfg);
        Self::launch(dir, false)
    }

    /// Starts the daemon on `<dir>/warden.yaml`, in dry-run mode if asked.
    pub fn launch(dir: TempDir, dry_run: bool) -> Daemon {
        let path = dir.path().join("warden.yaml");
        let (plan, engine) = warden::plan::load(&path, None).unwrap_or_else(|d| panic!("config does not load:\n{d}"));
        let state_dir = plan.loaded.config.state_dir.clone();
        let events = Events::default();
        let rx = events.subscribe();
        let (tx, stop_rx) = oneshot::channel::<()>();
        let opts = RunOptions { events, dry_run, ..Default::default() };
        let task = tokio::spawn(runtime::run(plan, engine, opts, async move {
            let _ = stop_rx.await;
        }));
        Daemon { dir: Some(dir), state_dir, rx, seen: vec![], stop: Some(tx), task: Some(task) }
    }

    fn tail(&self) -> String {
        let from = self.seen.len().saturating_sub(15);
        format!("{:#?}", &self.seen[from..])
    }

    /// Waits (at most [`WAIT`]) for an event matching `pred`, keeping every event in `seen`.
    pub async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Ok(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => panic!("the daemon stopped while waiting for {what}"),
                Err(_) => panic!("timed out after {WAIT:?} waiting for {what}; last events: {}", self.tail()),
            }
        }
    }

    /// The first event already received that matches `pred`, or else the next one to arrive (for events of
    /// independent probes, whose order is not fixed).
    pub async fn seen_or_wait_for(&mut self, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
        match self.seen.iter().find(|e| pred(e)) {
            Some(e) => e.clone(),
            None => self.wait_for(what, pred).await,
        }
    }

    /// Waits for `n` more polls of `target` (answered or failed).
    pub async fn polls(&mut self, n: usize) {
        for i in 0..n {
            self.wait_for(&format!("poll {} of {n}", i + 1), |e| matches!(e, Event::Observed { .. })).await;
        }
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.as_ref().expect("dir").path().join("warden.yaml")
    }

    /// The journal, oldest first.
    pub fn journal(&self) -> Vec<JournalEntry> {
        Store::open(&self.state_dir).and_then(|s| s.entries(None)).expect("journal readable")
    }

    /// The lines of `<state_dir>/alerts.jsonl`, parsed.
    pub fn alert_log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state_dir.join("alerts.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert log line {l:?}: {e}"))).collect()
    }

    async fn halt(&mut self) -> Arc<Stats> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the daemon stops in time")
            .expect("the daemon task does not panic")
            .expect("the daemon ran")
    }

    /// Stops the daemon (as SIGTERM would) and waits for it; returns its counters. Removes the temp dir.
    pub async fn stop(mut self) -> Arc<Stats> {
        self.halt().await
    }

    /// Stops the daemon and starts a new one on the same configuration and state.
    pub async fn restart(mut self) -> Daemon {
        self.halt().await;
        Self::launch(self.dir.take().expect("dir"), false)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
