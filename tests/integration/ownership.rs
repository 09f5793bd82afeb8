//! Nothing twice across processes: one daemon per state directory, `warden restart` beside a running daemon, and
//! restart drivers killed with -9 at any step — with real `warden` processes on a fake JobManager.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_flink::{FakeJobManager, FlinkApiVersion, SavepointBehaviour};
use serde_json::json;
use warden::model::{RestartResult, RestartStep};
use warden::store::{RestartRecord, Store};

use crate::support::{flink_config, write_config, WARDEN};

struct Rig {
    fake: FakeJobManager,
    dir: tempfile::TempDir,
    config: PathBuf,
}

async fn rig() -> Rig {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.expect("fake JobManager");
    fake.add_jar("clicks.jar", "demo.Clicks", "clicks");
    let jid = fake.submit("clicks");
    fake.fast_forward(&jid, Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "jobs": {"clicks": {"jar": {"name": "clicks.jar"}, "savepoint_timeout": "30s", "verify_timeout": "20s",
                                "stop_timeout": "10s", "fallback": "stateless"}},
            "packs": {"flink": {"every": "1s"}},
        }),
    );
    let config = write_config(dir.path(), &cfg);
    Rig { fake, dir, config }
}

impl Rig {
    fn warden(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WARDEN);
        c.arg("--config").arg(&self.config).args(args).current_dir(self.dir.path());
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    fn daemon(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("daemon log");
        self.warden(&["run"]).stdout(Stdio::null()).stderr(log).spawn().expect("warden run starts")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn restarts(&self) -> Vec<RestartRecord> {
        if !self.state().join("warden.db").exists() {
            return vec![];
        }
        Store::open(&self.state()).and_then(|s| s.restarts(None)).unwrap_or_default()
    }

    fn live(&self) -> Vec<String> {
        let live = ["RUNNING", "CREATED", "INITIALIZING", "RESTARTING", "FAILING", "CANCELLING"];
        self.fake.jobs_named("clicks").into_iter().filter(|(_, s)| live.contains(&s.as_str())).map(|(j, _)| j).collect()
    }
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill9(c: &mut Child) {
    // SAFETY: sending SIGKILL to our own child process.
    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
    let _ = c.wait();
}

fn wait_lock_held(state: &Path) {
    let start = Instant::now();
    while !state.join("warden.lock").exists()
        || std::fs::read_to_string(state.join("warden.lock")).unwrap_or_default().is_empty()
    {
        assert!(start.elapsed() < Duration::from_secs(20), "the daemon never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_state_dir_is_refused_and_names_the_first() {
    let r = rig().await;
    let mut first = r.daemon();
    wait_lock_held(&r.state());
    let out = r.warden(&["run"]).output().expect("second daemon runs");
    kill9(&mut first);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another Warden"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "the message must name the holder's pid: {err}");
    assert!(err.contains(&warden::store::lock::hostname()), "and its host: {err}");
    // The first one's death frees the directory at once (no stale lock).
    let mut third = r.daemon();
    wait_lock_held(&r.state());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(third.try_wait().expect("status").is_none(), "a daemon after a kill -9 must be able to start");
    kill9(&mut third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_restart_beside_a_running_restart_follows_it_and_nothing_is_submitted_twice() {
    let r = rig().await;
    r.fake.set_savepoint_behaviour(SavepointBehaviour::CompleteAfterPolls(3));
    let mut daemon = r.daemon();
    wait_lock_held(&r.state());
    // An operator starts a savepoint restart, then kills it (-9) while the savepoint is in progress.
    let mut first =
        r.warden(&["restart", "--target", "jm", "--job", "clicks", "--strategy", "savepoint"]).spawn().unwrap();
    wait_until("the savepoint to be triggered", Duration::from_secs(20), || {
        r.restarts().iter().any(|x| x.step == warden::model::RestartStep::SavepointTriggered)
    })
    .await;
    kill9(&mut first);
    // A second operator asks for another restart of the same job: it follows the one in progress (which the
    // daemon takes over from the killed driver) instead of starting its own.
    let second =
        r.warden(&["restart", "--target", "jm", "--job", "clicks", "--strategy", "last-checkpoint"]).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&second.stdout), String::from_utf8_lossy(&second.stderr));
    kill9(&mut daemon);
    assert_eq!(second.status.code(), Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("already in progress") && out.contains("following it"), "{out}");
    assert!(out.contains("done:"), "{out}");
    let restarts = r.restarts();
    assert_eq!(restarts.len(), 1, "one restart, not two: {restarts:#?}");
    assert_eq!(restarts[0].outcome, Some(RestartResult::Ok), "{restarts:#?}");
    assert_eq!(r.fake.jar_runs().len(), 1, "submitted {} times", r.fake.jar_runs().len());
    assert_eq!(r.live().len(), 1, "live instances: {:?}", r.live());
}

/// Where the driver of `kill_9_of_the_restart_driver_at_any_step_never_starts_the_job_twice` is killed, round after
/// round: at once (`None`), or as soon as its restart reached the step.
const KILL_AT: [Option<RestartStep>; 5] = [
    None,
    Some(RestartStep::Started),
    Some(RestartStep::SavepointTriggered),
    Some(RestartStep::StateChosen),
    Some(RestartStep::Submitted),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_restart_driver_at_any_step_never_starts_the_job_twice() {
    let r = rig().await;
    r.fake.set_savepoint_behaviour(SavepointBehaviour::CompleteAfterPolls(1));
    let mut daemon = r.daemon();
    wait_lock_held(&r.state());
    let mut killed_at = vec![];
    for round in 0..20u64 {
        let before = r.restarts().len();
        let mut driver =
            r.warden(&["restart", "--target", "jm", "--job", "clicks", "--strategy", "savepoint"]).spawn().unwrap();
        // Spread the kills over the restart's life: each round aims at one step (a restart now passes through all
        // of them within a few hundred milliseconds, so a fixed delay would only ever hit "done").
        let aim = KILL_AT[round as usize % KILL_AT.len()];
        let deadline = Instant::now() + Duration::from_secs(20);
        while let Some(step) = aim {
            let reached = r.restarts().get(before).is_some_and(|x| {
                x.outcome.is_some()
                    || RestartStep::ALL.iter().position(|s| *s == x.step)
                        >= RestartStep::ALL.iter().position(|s| *s == step)
            });
            if reached || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let step = r.restarts().get(before).map(|x| x.step.to_string()).unwrap_or_else(|| "not begun".into());
        kill9(&mut driver);
        killed_at.push(step);
        // Whatever was left is finished by the daemon, once.
        wait_until("the restart to end", Duration::from_secs(40), || {
            let rs = r.restarts();
            rs.len() == before || rs.iter().all(|x| x.outcome.is_some())
        })
        .await;
        let live = r.live();
        assert_eq!(live.len(), 1, "round {round} (killed at {:?}): live instances {live:?}", killed_at.last());
        if let Some(rec) = r.restarts().get(before) {
            assert_eq!(rec.outcome, Some(RestartResult::Ok), "round {round}: {rec:#?}");
        }
    }
    kill9(&mut daemon);
    let done = r.restarts().len();
    assert_eq!(r.fake.jar_runs().len(), done, "one submission per restart; killed at {killed_at:?}");
    let steps: std::collections::BTreeSet<&str> = killed_at.iter().map(String::as_str).collect();
    assert!(steps.len() >= 3, "the kills should have hit several steps: {killed_at:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_daemon_at_any_step_of_its_own_restart_never_starts_the_job_twice() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.expect("fake JobManager");
    fake.add_jar("clicks.jar", "demo.Clicks", "clicks");
    let first = fake.submit("clicks");
    fake.fast_forward(&first, Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("temp dir");
    // The daemon itself restarts the job when it fails (job-not-running with restart_job), as fast as it can.
    let cfg = flink_config(
        &fake.url(),
        json!({
            "jobs": {"clicks": {"jar": {"name": "clicks.jar"}, "verify_timeout": "20s", "stop_timeout": "10s",
                                "fallback": "stateless"}},
            // A short storm-guard window keeps the exponential backoff between rounds at a second.
            "dispatch": {"run_cooldown": "1s", "storm_guard": {"max_runs": 1000, "window": "2s"}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_mode": "restart_job",
                                           "restart_strategy": "last-checkpoint", "not_running_for": "200ms"}}},
        }),
    );
    let config = write_config(dir.path(), &cfg);
    let r = Rig { fake, dir, config };
    // Every answer takes a little while, so that a restart spans long enough for the kills to land inside it.
    r.fake.set_delay(Duration::from_millis(40));
    let mut daemon = r.daemon();
    wait_lock_held(&r.state());
    let mut killed_at = vec![];
    for round in 0..20u64 {
        let live = r.live();
        assert_eq!(live.len(), 1, "round {round}: {live:?}");
        let before = r.restarts().len();
        r.fake.fail(&live[0], "java.lang.RuntimeException", "boom");
        // Wait for the daemon to begin its restart, then kill it somewhere along the way.
        if tokio::time::timeout(
            Duration::from_secs(30),
            wait_until("", Duration::from_secs(31), || r.restarts().len() > before),
        )
        .await
        .is_err()
        {
            let log = std::fs::read_to_string(r.dir.path().join("daemon.log")).unwrap_or_default();
            panic!("round {round}: the daemon began no restart; its log:\n{}", &log[log.len().saturating_sub(4000)..]);
        }
        tokio::time::sleep(Duration::from_millis(30 * (round % 10))).await;
        let step = r.restarts().get(before).map(|x| x.step.to_string()).unwrap_or_default();
        kill9(&mut daemon);
        killed_at.push(step);
        // A new daemon takes the restart over from its last saved step (its driver's pid is gone).
        daemon = r.daemon();
        wait_until("the restart to end", Duration::from_secs(40), || {
            r.restarts().get(before).is_some_and(|x| x.outcome.is_some())
        })
        .await;
        let rec = r.restarts()[before].clone();
        assert_eq!(rec.outcome, Some(RestartResult::Ok), "round {round} (killed at {:?}): {rec:#?}", killed_at.last());
        wait_until("one live instance", Duration::from_secs(20), || r.live().len() == 1).await;
    }
    kill9(&mut daemon);
    eprintln!("daemon killed at steps: {killed_at:?}");
    let restarts = r.restarts();
    assert_eq!(r.fake.jar_runs().len(), restarts.len(), "one submission per restart; killed at {killed_at:?}");
    assert_eq!(r.live().len(), 1);
    let steps: std::collections::BTreeSet<&str> = killed_at.iter().map(String::as_str).collect();
    assert!(steps.len() >= 2, "the kills should have hit several steps: {killed_at:?}");
}
