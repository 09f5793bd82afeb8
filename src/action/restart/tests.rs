//! Every branch of a restart, against the fake JobManager.

use crate::model::RestartStrategy;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::config::{JarConfig, TargetConfig};
use crate::fetch::ClientPool;
use crate::store::NewEntry;
use fake_flink::{FakeJobManager, FlinkApiVersion, SavepointBehaviour};

mod upgrade;

thread_local! {
    /// A simulated crash: the driver stops right after saving this step of a record of this kind.
    static CRASH_AFTER: std::cell::Cell<Option<(crate::model::RestartKind, crate::model::RestartStep)>> =
        const { std::cell::Cell::new(None) };
}

/// Arms a simulated crash right after `kind`'s `step` is saved (once).
pub(super) fn crash_after(kind: crate::model::RestartKind, step: crate::model::RestartStep) {
    CRASH_AFTER.with(|c| c.set(Some((kind, step))));
}

/// Whether the driver "crashes" now, having saved `rec` (disarms).
pub(super) fn crash_now(rec: &RestartRecord) -> bool {
    CRASH_AFTER.with(|c| {
        if c.get() == Some((rec.kind, rec.step)) {
            c.set(None);
            true
        } else {
            false
        }
    })
}

struct Rig {
    fake: FakeJobManager,
    client: TargetClient,
    store: Store,
    job: JobConfig,
    commands: BTreeMap<String, CommandConfig>,
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

fn job_config() -> JobConfig {
    JobConfig {
        jar: Some(JarConfig {
            name: Some("clicks.jar".into()),
            upload: None,
            entry_class: Some("demo.Clicks".into()),
            args: vec!["--rate".into(), "100".into()],
            parallelism: Some(2),
            allow_non_restored_state: false,
            claim_mode: Some("NO_CLAIM".into()),
            flink_config: Default::default(),
        }),
        command: None,
        savepoint_dir: Some("file:/tmp/warden-test/savepoints".into()),
        savepoint_mode: SavepointMode::Stop,
        fallback: Fallback::Fail,
        savepoint_timeout: Duration::from_secs(5),
        verify_timeout: Duration::from_secs(10),
        stop_timeout: Duration::from_secs(10),
        parallelism: None,
        upgrade: crate::config::UpgradeConfig { probation: Duration::from_millis(400) },
    }
}

async fn rig(version: FlinkApiVersion) -> Rig {
    let fake = FakeJobManager::start(version).await.unwrap();
    fake.add_jar("clicks.jar", "demo.Clicks", "clicks");
    let t = TargetConfig {
        name: "jm".into(),
        url: fake.url(),
        labels: Default::default(),
        auth: None,
        headers: Default::default(),
        ca_file: None,
        insecure_skip_verify: false,
        allow_cross_origin_redirects: false,
        timeout: Duration::from_secs(5),
    };
    let client = TargetClient::new(&t, &mut ClientPool::default()).unwrap();
    Rig {
        fake,
        client,
        store: Store::in_memory(),
        job: job_config(),
        commands: BTreeMap::new(),
        log: Arc::new(Mutex::new(vec![])),
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Rig {
    /// A restart record of `clicks` begun at `at` by `owner` (a 30 s lease), as a driver would have left it.
    fn begin(&self, strategy: RestartStrategy, old: &str, at: DateTime<Utc>, owner: &str) -> RestartRecord {
        self.store
            .begin_restart(self.journal(), "jm", "clicks", strategy, old, at, owner, chrono::Duration::seconds(30))
            .unwrap()
            .unwrap()
    }

    fn journal(&self) -> i64 {
        self.store
            .journal(&NewEntry {
                action: crate::model::ActionKind::Restart,
                subject: "clicks".into(),
                outcome: "started".into(),
                ..Default::default()
            })
            .unwrap()
    }

    async fn restart(&self, jid: &str, strategy: crate::model::RestartStrategy) -> RestartOutcome {
        let log = self.log.clone();
        let progress = move |_: &RestartRecord, m: &str| log.lock().unwrap().push(m.to_string());
        let ctx = self.ctx(&progress, CancellationToken::new());
        begin(&ctx, self.journal(), "jm", "clicks", jid, strategy).await
    }

    fn ctx<'a>(
        &'a self,
        progress: &'a (dyn Fn(&RestartRecord, &str) + Send + Sync),
        cancel: CancellationToken,
    ) -> RestartContext<'a> {
        RestartContext {
            store: &self.store,
            client: &self.client,
            job: &self.job,
            commands: &self.commands,
            workdir: self.dir.path(),
            clock: &Clock::System,
            cancel,
            poll: Duration::from_millis(50),
            progress,
            owner: super::owner_id(),
            lease: Duration::from_secs(30),
        }
    }

    /// A running job with a few completed checkpoints.
    fn running_job(&self) -> String {
        let jid = self.fake.submit("clicks");
        self.fake.fast_forward(&jid, Duration::from_secs(5));
        jid
    }

    fn live(&self) -> Vec<String> {
        self.fake.jobs_named("clicks").into_iter().filter(|(_, s)| s == "RUNNING").map(|(j, _)| j).collect()
    }
}

fn done(o: RestartOutcome) -> RestartRecord {
    match o {
        RestartOutcome::Done(r) => r,
        other => panic!("expected Done, got {other:?}"),
    }
}

fn failed(o: RestartOutcome) -> (String, String) {
    match o {
        RestartOutcome::Failed { step, message, record } => {
            assert_eq!(
                record.outcome.as_ref().map(|o| o.to_string()).as_deref(),
                Some(format!("failed at {step}: {message}").as_str())
            );
            (step, message)
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn failed_job_restarts_from_its_last_retained_checkpoint_over_rest() {
    for version in [FlinkApiVersion::V2, FlinkApiVersion::V1] {
        let r = rig(version).await;
        let jid = r.running_job();
        r.fake.fail(&jid, "java.lang.RuntimeException", "boom");
        let rec = done(r.restart(&jid, RestartStrategy::LastCheckpoint).await);
        let loc = rec.location.clone().expect("a checkpoint location");
        assert!(loc.contains(&format!("/{jid}/chk-")), "{loc}");
        let runs = r.fake.jar_runs();
        assert_eq!(runs.len(), 1, "exactly one submission");
        let body = &runs[0];
        assert_eq!(body["savepointPath"], loc.as_str());
        assert_eq!(body["programArgsList"], serde_json::json!(["--rate", "100"]));
        assert!(body.get("programArgs").is_none());
        assert_eq!(body["entryClass"], "demo.Clicks");
        assert_eq!(body["parallelism"], 2);
        match version {
            FlinkApiVersion::V2 => assert_eq!(body["claimMode"], "NO_CLAIM"),
            FlinkApiVersion::V1 => assert_eq!(body["restoreMode"], "NO_CLAIM"),
        }
        assert_eq!(r.live(), vec![rec.new_jid.clone().unwrap()]);
        let hist = r.store.savepoints(Some("jm"), Some("clicks")).unwrap();
        assert_eq!(hist[0].location, loc);
        assert_eq!(hist[0].used_by, Some(rec.id));
        // The lock is released.
        assert!(r.store.restart_in_progress("jm", "clicks").unwrap().is_none());
    }
}

#[tokio::test]
async fn without_any_checkpoint_the_fallback_decides() {
    let mut r = rig(FlinkApiVersion::V2).await;
    let jid = r.fake.submit("clicks");
    r.fake.fail(&jid, "java.lang.RuntimeException", "boom before the first checkpoint");
    let (step, msg) = failed(r.restart(&jid, RestartStrategy::LastCheckpoint).await);
    assert_eq!(step, "choose-state");
    assert!(msg.contains("no retained checkpoint or savepoint for clicks"), "{msg}");
    assert!(r.fake.jar_runs().is_empty(), "nothing submitted");

    r.job.fallback = Fallback::Stateless;
    let rec = done(r.restart(&jid, RestartStrategy::LastCheckpoint).await);
    assert_eq!(rec.location, None);
    assert!(r.fake.jar_runs()[0].get("savepointPath").is_none());
}

#[tokio::test]
async fn wardens_own_history_is_the_second_source() {
    let r = rig(FlinkApiVersion::V2).await;
    r.store.record_savepoint("jm", "clicks", "file:/sp/savepoint-1", "savepoint", "old", None, Utc::now(), 10).unwrap();
    let jid = r.fake.submit("clicks");
    r.fake.fail(&jid, "java.lang.RuntimeException", "boom");
    let rec = done(r.restart(&jid, RestartStrategy::LastCheckpoint).await);
    assert_eq!(rec.location.as_deref(), Some("file:/sp/savepoint-1"));
}

#[tokio::test]
async fn savepoint_restart_of_a_running_job() {
    let r = rig(FlinkApiVersion::V2).await;
    let jid = r.running_job();
    let rec = done(r.restart(&jid, RestartStrategy::Savepoint).await);
    let loc = rec.location.clone().unwrap();
    assert!(loc.starts_with("file:/tmp/warden-test/savepoints/savepoint-"), "{loc}");
    assert_eq!(r.fake.job_state(&jid).as_deref(), Some("FINISHED"), "stop-with-savepoint ends the old run");
    assert_eq!(r.fake.jar_runs()[0]["savepointPath"], loc.as_str());
    assert_eq!(r.live().len(), 1);
    let hist = r.store.savepoints(Some("jm"), Some("clicks")).unwrap();
    assert!(hist.iter().any(|s| s.kind == "savepoint" && s.location == loc && s.used_by == Some(rec.id)));
}

#[tokio::test]
async fn savepoint_then_cancel_mode() {
    let mut r = rig(FlinkApiVersion::V2).await;
    r.job.savepoint_mode = SavepointMode::Cancel;
    let jid = r.running_job();
    let rec = done(r.restart(&jid, RestartStrategy::Savepoint).await);
    assert_eq!(r.fake.job_state(&jid).as_deref(), Some("CANCELED"));
    assert!(rec.location.is_some());
}

#[tokio::test]
async fn a_failed_savepoint_leaves_the_job_running() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_savepoint_behaviour(SavepointBehaviour::Fail("Checkpoint expired before completing".into()));
    let jid = r.running_job();
    let (step, msg) = failed(r.restart(&jid, RestartStrategy::Savepoint).await);
    assert_eq!(step, "savepoint");
    assert!(msg.contains("Checkpoint expired before completing"), "{msg}");
    assert!(msg.contains("the job keeps running"));
    assert_eq!(r.fake.job_state(&jid).as_deref(), Some("RUNNING"));
    assert!(r.fake.jar_runs().is_empty());
}

#[tokio::test]
async fn a_savepoint_that_never_completes_times_out_and_the_job_keeps_running() {
    let mut r = rig(FlinkApiVersion::V2).await;
    r.job.savepoint_timeout = Duration::from_millis(600);
    r.fake.set_savepoint_behaviour(SavepointBehaviour::NeverComplete);
    let jid = r.running_job();
    let (step, msg) = failed(r.restart(&jid, RestartStrategy::Savepoint).await);
    assert_eq!(step, "savepoint");
    assert!(msg.contains("still in progress after 600ms"), "{msg}");
    assert!(
        msg.contains("Flink cannot abort a pending stop"),
        "stop mode must warn that a late savepoint stops the job: {msg}"
    );
    assert_eq!(r.fake.job_state(&jid).as_deref(), Some("RUNNING"));
    assert!(r.fake.jar_runs().is_empty());
}

#[tokio::test]
async fn savepoint_needs_a_running_job() {
    let r = rig(FlinkApiVersion::V2).await;
    let jid = r.running_job();
    r.fake.fail(&jid, "java.lang.RuntimeException", "boom");
    let (step, msg) = failed(r.restart(&jid, RestartStrategy::Savepoint).await);
    assert_eq!(step, "savepoint");
    assert!(msg.contains("is FAILED, not RUNNING"), "{msg}");
}

#[tokio::test]
async fn never_a_second_instance_when_one_is_live() {
    let mut r = rig(FlinkApiVersion::V2).await;
    r.job.stop_timeout = Duration::from_millis(300);
    let old = r.running_job();
    r.fake.fail(&old, "java.lang.RuntimeException", "boom");
    let other = r.fake.submit("clicks"); // someone relaunched it by hand meanwhile
    let ctx_log = r.log.clone();
    let progress = move |_: &RestartRecord, m: &str| ctx_log.lock().unwrap().push(m.to_string());
    let mut ctx = r.ctx(&progress, CancellationToken::new());
    ctx.poll = Duration::from_millis(20);
    // The live instance does not go away within `stop_timeout`: the restart fails at `submit` and says why.
    let outcome = begin(&ctx, r.journal(), "jm", "clicks", &old, RestartStrategy::LastCheckpoint).await;
    let (step, msg) = failed(outcome);
    assert_eq!(step, "submit");
    assert!(msg.contains(&format!("already live as {other}")) && msg.contains("not starting a second"), "{msg}");
    assert!(r.fake.jar_runs().is_empty(), "submitted next to a live instance");
    assert_eq!(r.live(), vec![other]);
}

#[tokio::test]
async fn one_restart_per_job_at_a_time() {
    let r = rig(FlinkApiVersion::V2).await;
    let first = r
        .store
        .begin_restart(
            1,
            "jm",
            "clicks",
            RestartStrategy::Savepoint,
            "x",
            Utc::now(),
            &super::owner_id(),
            chrono::Duration::seconds(30),
        )
        .unwrap()
        .unwrap();
    match r.restart("x", RestartStrategy::LastCheckpoint).await {
        RestartOutcome::Busy(rec) => assert_eq!(rec.id, first.id),
        other => panic!("{other:?}"),
    }
    // Another job on the same target is not blocked.
    assert!(r
        .store
        .begin_restart(
            2,
            "jm",
            "orders",
            RestartStrategy::Savepoint,
            "y",
            Utc::now(),
            &super::owner_id(),
            chrono::Duration::seconds(30)
        )
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn resuming_after_a_crash_right_after_submitting_does_not_submit_again() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    r.fake.fail(&old, "java.lang.RuntimeException", "boom");
    // Warden journalled `submitting`, submitted, and died before recording the new job id.
    let mut rec = r.begin(RestartStrategy::Stateless, &old, Utc::now(), &super::owner_id());
    rec.step = crate::model::RestartStep::Submitting;
    r.store.update_restart(&rec, Utc::now()).unwrap();
    let new = r.fake.submit("clicks");
    let log = r.log.clone();
    let progress = move |_: &RestartRecord, m: &str| log.lock().unwrap().push(m.to_string());
    let rec = done(
        drive(&r.ctx(&progress, CancellationToken::new()), r.store.unfinished_restarts().unwrap().remove(0)).await,
    );
    assert_eq!(rec.new_jid.as_deref(), Some(new.as_str()));
    assert!(r.fake.jar_runs().is_empty(), "the job was submitted a second time");
    assert!(r.log.lock().unwrap().iter().any(|m| m.contains("adopting it instead of submitting again")));
}

#[tokio::test]
async fn resuming_after_a_crash_during_the_savepoint_keeps_its_location() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_savepoint_behaviour(SavepointBehaviour::CompleteAfterPolls(2));
    let jid = r.running_job();
    // First life: trigger the savepoint, then "crash" (cancel) while it is in progress.
    let cancel = CancellationToken::new();
    let log = r.log.clone();
    let progress = move |_: &RestartRecord, m: &str| log.lock().unwrap().push(m.to_string());
    {
        let ctx = r.ctx(&progress, cancel.clone());
        let j = r.journal();
        let fut = begin(&ctx, j, "jm", "clicks", &jid, RestartStrategy::Savepoint);
        tokio::pin!(fut);
        // Let it trigger, then stop it.
        let _ = tokio::time::timeout(Duration::from_millis(30), &mut fut).await;
        cancel.cancel();
        let out = fut.await;
        assert!(matches!(out, RestartOutcome::Interrupted(_)), "{out:?}");
    }
    let pending = r.store.unfinished_restarts().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].step, crate::model::RestartStep::SavepointTriggered);
    assert!(pending[0].trigger_id.is_some());
    // Second life: resume from the journal.
    let rec = done(drive(&r.ctx(&progress, CancellationToken::new()), pending[0].clone()).await);
    assert_eq!(r.fake.jar_runs().len(), 1, "exactly one new job");
    assert_eq!(r.fake.jar_runs()[0]["savepointPath"], rec.location.clone().unwrap().as_str());
    assert_eq!(r.live().len(), 1);
}

#[tokio::test]
async fn submission_failures_name_the_step() {
    let mut r = rig(FlinkApiVersion::V2).await;
    r.job.jar.as_mut().unwrap().name = Some("missing.jar".into());
    let jid = r.running_job();
    r.fake.fail(&jid, "java.lang.RuntimeException", "boom");
    let (step, msg) = failed(r.restart(&jid, RestartStrategy::LastCheckpoint).await);
    assert_eq!(step, "submit");
    assert!(msg.contains("no jar named `missing.jar`"), "{msg}");
}

#[tokio::test]
async fn command_resubmission_gets_the_savepoint_as_one_argument() {
    let mut r = rig(FlinkApiVersion::V2).await;
    let args_file = r.dir.path().join("args");
    r.commands.insert(
        "resubmit".into(),
        CommandConfig {
            placeholders: vec![],
            argv: vec![
                "sh".into(),
                "-c".into(),
                "printf '%s\\n' \"$@\" > \"$0\"".into(),
                args_file.display().to_string(),
                "{savepoint}".into(),
                "{job}".into(),
            ],
            workdir: None,
            env: Default::default(),
            timeout: Duration::from_secs(30),
            max_output: crate::config::units::ByteSize(4096),
        },
    );
    r.job.jar = None;
    r.job.command = Some("resubmit".into());
    r.job.verify_timeout = Duration::from_millis(500);
    let jid = r.running_job();
    r.fake.fail(&jid, "java.lang.RuntimeException", "boom");
    // This command submits nothing: Warden must notice instead of calling the restart done.
    let (step, msg) = failed(r.restart(&jid, RestartStrategy::LastCheckpoint).await);
    assert_eq!(step, "submit");
    assert!(msg.contains("succeeded but no new instance of clicks appeared"), "{msg}");
    let got = std::fs::read_to_string(&args_file).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines.len(), 2, "{got}");
    assert!(lines[0].starts_with(&format!("file:/tmp/warden-fake/checkpoints/{jid}/chk-")), "{got}");
    assert_eq!(lines[1], "clicks");
}

#[tokio::test]
async fn a_live_instance_is_adopted_at_submit_whatever_its_start_time_says() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    r.fake.fail(&old, "java.lang.RuntimeException", "boom");
    // The restart's clock ran an hour ahead of the JobManager's when it began (a clock step, or skew between
    // hosts): the instance it submitted before dying "started before" the restart did.
    let ahead = Utc::now() + chrono::Duration::hours(1);
    let mut rec = r.begin(RestartStrategy::Stateless, &old, ahead, &super::owner_id());
    rec.step = crate::model::RestartStep::Submitting;
    r.store.update_restart(&rec, ahead).unwrap();
    let new = r.fake.submit("clicks");
    let progress = |_: &RestartRecord, _: &str| {};
    let rec = done(drive(&r.ctx(&progress, CancellationToken::new()), rec).await);
    assert_eq!(rec.new_jid.as_deref(), Some(new.as_str()));
    assert!(r.fake.jar_runs().is_empty(), "a second instance was submitted");
    assert_eq!(r.live(), vec![new]);
}

#[tokio::test]
async fn two_live_instances_at_submit_are_refused_not_joined_by_a_third() {
    let r = rig(FlinkApiVersion::V2).await;
    let mut rec = r.begin(RestartStrategy::Stateless, "", Utc::now(), &super::owner_id());
    rec.step = crate::model::RestartStep::Submitting;
    r.store.update_restart(&rec, Utc::now()).unwrap();
    let (a, b) = (r.fake.submit("clicks"), r.fake.submit("clicks"));
    let progress = |_: &RestartRecord, _: &str| {};
    let (step, msg) = failed(drive(&r.ctx(&progress, CancellationToken::new()), rec).await);
    assert_eq!(step, "submit");
    assert!(msg.contains("2 live instances") && msg.contains(&a) && msg.contains(&b), "{msg}");
    assert!(r.fake.jar_runs().is_empty());
}

#[tokio::test]
async fn a_restart_owned_by_a_live_driver_is_not_taken_over_until_its_lease_runs_out() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    r.fake.fail(&old, "java.lang.RuntimeException", "boom");
    // Another live process (pid 1 on this host: init, always alive) owns it with a valid lease.
    let other = format!("pid 1 on {}", crate::store::lock::hostname());
    let rec = r.begin(RestartStrategy::Stateless, &old, Utc::now(), &other);
    let progress = |_: &RestartRecord, _: &str| {};
    let ctx = r.ctx(&progress, CancellationToken::new());
    assert!(super::take_over(&ctx, &rec).await.is_none(), "took over a restart a live process drives");
    assert!(r.fake.jar_runs().is_empty());
    // Its lease runs out (the driver hung or was partitioned): now it is taken over and finished, once.
    let later = Utc::now() + chrono::Duration::seconds(31);
    let claimed = r.store.claim_restart(rec.id, &super::owner_id(), later, chrono::Duration::seconds(30)).unwrap();
    assert!(claimed.is_some());
    let done_rec = done(drive(&ctx, claimed.unwrap()).await);
    assert_eq!(done_rec.owner.as_deref(), Some(super::owner_id().as_str()));
    assert_eq!(r.fake.jar_runs().len(), 1);
    // The old driver, back, can no longer write the record.
    let mut stale = rec.clone();
    stale.step = crate::model::RestartStep::Submitting;
    assert!(r.store.update_restart(&stale, Utc::now()).is_err(), "a stale owner wrote the record");
}

#[tokio::test]
async fn a_restart_whose_driver_process_is_gone_is_taken_over_at_once() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    r.fake.fail(&old, "java.lang.RuntimeException", "boom");
    // A pid that does not exist on this host (a `warden restart` killed with -9), lease still valid.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let gone = format!("pid {} on {}", child.id(), crate::store::lock::hostname());
    assert!(super::owner_is_gone(&gone));
    let rec = r.begin(RestartStrategy::Stateless, &old, Utc::now(), &gone);
    let progress = |_: &RestartRecord, _: &str| {};
    let ctx = r.ctx(&progress, CancellationToken::new());
    let outcome = super::take_over(&ctx, &rec).await.expect("taken over");
    done(outcome);
    assert_eq!(r.fake.jar_runs().len(), 1);
}

#[test]
fn waits_on_flink_start_short_and_back_off_to_the_poll_interval() {
    let s = Duration::from_secs(1);
    let got: Vec<u128> = (0..6).map(|n| super::backoff(s, n).as_millis()).collect();
    assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    assert_eq!(super::backoff(Duration::from_millis(50), 0), Duration::from_millis(50));
    assert_eq!(super::backoff(s, 60), s);
}
