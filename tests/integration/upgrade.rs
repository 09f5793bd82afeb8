//! `warden upgrade` and `warden rescale` as processes, on a fake JobManager: beside a running daemon (one driver,
//! one submission), killed with -9 on probation (the daemon finishes it and rolls the failing version back once),
//! and what the command says and exits with.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_flink::{FakeJobManager, FlinkApiVersion, JarBehaviour};
use serde_json::json;
use warden::model::{RestartKind, RestartResult, RestartStep};
use warden::store::{RestartRecord, Store};

use crate::support::{flink_config, write_config, WARDEN};

struct Rig {
    fake: FakeJobManager,
    dir: tempfile::TempDir,
    config: PathBuf,
    jar: PathBuf,
}

/// A fake cluster running `clicks` from `clicks.jar`, a local `clicks-2.jar` that runs as `clicks` once uploaded,
/// and a configuration whose pack relaunches `clicks` with `restart_job` when it is not running.
async fn rig(probation: &str) -> Rig {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.expect("fake JobManager");
    fake.add_jar("clicks.jar", "demo.Clicks", "clicks");
    fake.on_upload("clicks-2.jar", "demo.Clicks", "clicks");
    let jid = fake.submit("clicks");
    fake.fast_forward(&jid, Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("temp dir");
    let jar = dir.path().join("clicks-2.jar");
    std::fs::write(&jar, b"PK\x03\x04").unwrap();
    let cfg = flink_config(
        &fake.url(),
        json!({
            "jobs": {"clicks": {"jar": {"name": "clicks.jar", "args": ["--rate", "100"]}, "savepoint_timeout": "20s",
                                "verify_timeout": "20s", "stop_timeout": "10s", "upgrade": {"probation": probation}}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_mode": "restart_job",
                                           "restart_strategy": "last-checkpoint"}}},
        }),
    );
    let config = write_config(dir.path(), &cfg);
    Rig { fake, dir, config, jar }
}

impl Rig {
    fn warden(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WARDEN);
        c.arg("--config").arg(&self.config).args(args).current_dir(self.dir.path());
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    fn upgrade(&self) -> Command {
        let jar = self.jar.display().to_string();
        self.warden(&["upgrade", "--target", "jm", "--job", "clicks", "--jar", &jar, "--args", "--rate", "200"])
    }

    fn daemon(&self) -> Child {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).expect("daemon log");
        self.warden(&["run"]).stdout(Stdio::null()).stderr(log).spawn().expect("warden run starts")
    }

    fn restarts(&self) -> Vec<RestartRecord> {
        let state = self.dir.path().join("state");
        if !state.join("warden.db").exists() {
            return vec![];
        }
        Store::open(&state).and_then(|s| s.restarts(None)).unwrap_or_default()
    }

    fn live(&self) -> Vec<String> {
        let live = ["RUNNING", "CREATED", "INITIALIZING", "RESTARTING", "FAILING", "CANCELLING"];
        self.fake.jobs_named("clicks").into_iter().filter(|(_, s)| live.contains(&s.as_str())).map(|(j, _)| j).collect()
    }

    fn runs(&self) -> Vec<String> {
        self.fake
            .request_log()
            .iter()
            .filter_map(|l| l.strip_prefix("POST /jars/").and_then(|r| r.strip_suffix("/run")).map(str::to_string))
            .collect()
    }

    /// How often the daemon has read `/jobs/overview` so far (its pack's polls).
    fn polls(&self) -> usize {
        self.fake.request_log().iter().filter(|l| l.starts_with("GET /jobs/overview")).count()
    }

    /// Waits until the daemon has polled `n` more times: the pack has judged the job that often since.
    async fn judged(&self, n: usize) {
        let from = self.polls();
        wait_until(&format!("{n} more polls of the daemon"), Duration::from_secs(30), || self.polls() >= from + n)
            .await;
    }

    fn wait_daemon_up(&self) {
        let lock = self.dir.path().join("state/warden.lock");
        let start = Instant::now();
        while std::fs::read_to_string(&lock).unwrap_or_default().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(20), "the daemon never took its lock");
            std::thread::sleep(Duration::from_millis(20));
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_beside_a_running_daemon_is_driven_once_and_the_daemon_does_not_relaunch_the_stopped_job() {
    let r = rig("1s").await;
    let mut daemon = r.daemon();
    r.wait_daemon_up();
    r.judged(1).await;
    let out = r.upgrade().output().expect("warden upgrade runs");
    // The pack judges the job several times since.
    r.judged(3).await;
    kill9(&mut daemon);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("upgrade #") && stdout.contains("done:"), "{stdout}");
    let rs = r.restarts();
    assert_eq!(rs.len(), 1, "one record: the daemon followed nothing and began nothing: {rs:#?}");
    assert_eq!((rs[0].kind, rs[0].outcome.clone()), (RestartKind::Upgrade, Some(RestartResult::Ok)));
    assert_eq!(r.fake.uploads(), vec!["clicks-2.jar".to_string()]);
    assert_eq!(r.runs(), vec![rs[0].jar_id.clone().unwrap()], "one submission, of the new jar");
    assert_eq!(r.fake.jar_runs()[0]["programArgsList"], json!(["--rate", "200"]));
    assert_eq!(r.live(), vec![rs[0].new_jid.clone().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_killed_on_probation_is_finished_by_the_daemon_which_rolls_the_failing_version_back_once() {
    let r = rig("4s").await;
    r.fake.set_jar_behaviour(
        "clicks-2.jar",
        JarBehaviour::RestartLoopAfter {
            after: Duration::from_millis(1500),
            class: "java.lang.IllegalStateException".into(),
            message: "v2 cannot read its state".into(),
        },
    );
    let mut daemon = r.daemon();
    r.wait_daemon_up();
    let mut cli = r.upgrade().spawn().expect("warden upgrade starts");
    let daemon_owner = format!("pid {} on {}", daemon.id(), warden::store::lock::hostname());
    wait_until("the upgrade's probation", Duration::from_secs(30), || {
        r.restarts().first().is_some_and(|x| x.step == RestartStep::Probation)
    })
    .await;
    // What the status API and page show for it in flight.
    let flight = warden::server::api::RestartView::from(r.restarts()[0].clone()).what();
    assert!(flight.starts_with("upgrade (savepoint, jar ") && flight.ends_with("_clicks-2.jar)"), "{flight}");
    kill9(&mut cli);
    wait_until("the rollback to end", Duration::from_secs(60), || {
        let rs = r.restarts();
        rs.len() == 2 && rs.iter().all(|x| x.outcome.is_some())
    })
    .await;
    // The pack must not relaunch anything afterwards either.
    r.judged(2).await;
    kill9(&mut daemon);
    let rs = r.restarts();
    assert_eq!(rs.len(), 2, "{rs:#?}");
    let (up, rb) = (&rs[0], &rs[1]);
    assert_eq!((up.kind, rb.kind, rb.rollback_of), (RestartKind::Upgrade, RestartKind::Rollback, Some(up.id)));
    assert_eq!(rb.owner.as_deref(), Some(daemon_owner.as_str()), "the daemon took over from the killed command");
    assert_eq!(rb.outcome, Some(RestartResult::Ok), "{rb:#?}");
    assert!(rb.cause.as_deref().is_some_and(|c| c.contains("v2 cannot read its state")), "{rb:#?}");
    assert_eq!(rb.location, up.location);
    assert_eq!(r.runs(), vec![up.jar_id.clone().unwrap(), up.prev_jar_id.clone().unwrap()], "one run of each jar");
    assert_eq!(r.live(), vec![rb.new_jid.clone().unwrap()]);
    let alerts = std::fs::read_to_string(r.dir.path().join("state/alerts.jsonl")).unwrap_or_default();
    let rolled: Vec<&str> = alerts.lines().filter(|l| l.contains("\"rolled_back\"")).collect();
    assert_eq!(rolled.len(), 1, "one alert about the rollback: {alerts}");
    assert!(rolled[0].contains("v2 cannot read its state"), "{}", rolled[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_upgrade_exits_1_and_history_shows_both_records() {
    let r = rig("1s").await;
    r.fake.set_jar_behaviour("clicks-2.jar", JarBehaviour::MainThrows("no --topic given".into()));
    let out = r.upgrade().output().expect("warden upgrade runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("rolled back to the previous jar") && stderr.contains("no --topic given"), "{stderr}");
    assert!(stdout.contains("[jar-uploaded]") && stdout.contains("rollback #2"), "{stdout}");
    let h = r.warden(&["history", "--restarts"]).output().unwrap();
    let h = String::from_utf8_lossy(&h.stdout);
    assert!(h.contains("upgrade (savepoint)") && h.contains("rollback (savepoint) of #1"), "{h}");
    assert!(h.contains("jar=") && h.contains("_clicks-2.jar") && h.contains("steps: started"), "{h}");
    assert_eq!(r.live().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_plan_and_change_nothing_and_rescale_says_which_path_it_took() {
    let r = rig("0s").await;
    let out = r
        .warden(&["upgrade", "--target", "jm", "--job", "clicks", "--jar", "clicks-2.jar", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("upgrade plan for clicks on jm") && stdout.contains("upload /"), "{stdout}");
    let out = r.warden(&["upgrade", "--target", "jm", "--job", "clicks", "--jar", "nope/x.jar"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
    assert!(r.fake.jar_runs().is_empty() && r.fake.uploads().is_empty());
    let out = r.warden(&["rescale", "--target", "jm", "--job", "clicks", "--parallelism", "3"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("to parallelism 3 through a savepoint restart"), "{stdout}");
    assert_eq!(r.fake.jar_runs().len(), 1);
    assert_eq!(r.fake.jar_runs()[0]["parallelism"], 3);
    let rs = r.restarts();
    assert_eq!((rs[0].kind, rs[0].overrides.parallelism), (RestartKind::Rescale, Some(3)));
    // The next plan starts from what runs now: the rescaled release.
    let out = r
        .warden(&["upgrade", "--target", "jm", "--job", "clicks", "--jar", "clicks-2.jar", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("_clicks.jar (from rescale #1), parallelism 3"), "{stdout}");
}
