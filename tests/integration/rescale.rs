//! Rescaling a job: a rule's `rescale` request through the daemon, the in-place path on a fake with the adaptive
//! scheduler, and every way it does not happen (default scheduler, too few slots, at the bound, cooldown and storm
//! guard, a restart of the same job in progress).

use std::collections::HashMap;
use std::sync::Arc;

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::{json, Value};
use tempfile::TempDir;
use warden::action::log::AlertLog;
use warden::action::rescale::{self, RescaleOutcome, RescalePath};
use warden::action::Executor;
use warden::clock::Clock;
use warden::event::{Event, Events};
use warden::fetch::{ClientPool, TargetClient};
use warden::model::{ActionKind, RescaleTo, RestartStrategy};
use warden::store::{NewEntry, Store};

use crate::support::{write_config, write_pack, Daemon};

/// A fake with `clicks` at parallelism 1, an executor on it, and the job's bounds `bounds`.
struct Rig {
    fake: FakeJobManager,
    jid: String,
    executor: Executor,
    store: Arc<Store>,
    _dir: TempDir,
}

async fn rig(adaptive: bool, bounds: Value) -> Rig {
    rig_on(FlinkApiVersion::V2, adaptive, bounds).await
}

async fn rig_on(version: FlinkApiVersion, adaptive: bool, bounds: Value) -> Rig {
    let fake = FakeJobManager::start(version).await.unwrap();
    fake.set_adaptive_scheduler(adaptive);
    fake.add_jar("clicks.jar", "demo.Clicks", "clicks");
    let jid = fake.submit("clicks");
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({
        "state_dir": "state",
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "jobs": {"clicks": {"jar": {"name": "clicks.jar", "entry_class": "demo.Clicks"}, "verify_timeout": "3s",
                            "savepoint_timeout": "3s", "parallelism": bounds, "upgrade": {"probation": "0s"}}},
        "server": {"enabled": false},
    });
    let path = write_config(dir.path(), &cfg);
    let (plan, _) = warden::plan::load(&path, None).unwrap_or_else(|d| panic!("{d}"));
    let cfg = plan.loaded.config.clone();
    let store = Arc::new(Store::open(&cfg.state_dir).unwrap());
    let client = Arc::new(TargetClient::new(&cfg.targets[0], &mut ClientPool::default()).unwrap());
    let executor = Executor {
        commands: cfg.commands.clone(),
        alert_log: AlertLog::new(cfg.state_dir.join("alerts.jsonl")),
        workdir: dir.path().to_path_buf(),
        store: store.clone(),
        clock: Clock::System,
        events: Events::default(),
        notifier: None,
        clients: HashMap::from([("jm".to_string(), client)]),
        jobs: cfg.jobs.clone(),
        restart_poll: std::time::Duration::from_millis(50),
    };
    Rig { fake, jid, executor, store, _dir: dir }
}

impl Rig {
    /// Journals a rescale request as the dispatcher would and carries it out.
    async fn rescale(&self, to: RescaleTo) -> (RescaleOutcome, warden::store::JournalEntry) {
        let id = self
            .store
            .journal(&NewEntry {
                rule: "test/scale".into(),
                target: "jm".into(),
                subject: "clicks".into(),
                action: ActionKind::Rescale,
                detail: to.to_string(),
                outcome: "started".into(),
                ..Default::default()
            })
            .unwrap();
        let cancel = tokio_util::sync::CancellationToken::new();
        let o = self.executor.rescale(id, "test/scale", "jm", "clicks", &self.jid, to, false, cancel).await;
        (o, self.store.entry(id).unwrap().unwrap())
    }

    /// `warden ARGS…` on the rig's configuration.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(crate::support::WARDEN)
            .arg("--config")
            .arg(self._dir.path().join("warden.yaml"))
            .args(args)
            .output()
            .unwrap()
    }

    fn puts(&self) -> usize {
        self.fake.requests().iter().filter(|r| r.starts_with("PUT ") && r.contains("resource-requirements")).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_on_an_adaptive_2x_cluster_and_verified_by_the_vertices() {
    let r = rig(true, json!({"min": 1, "max": 4})).await;
    let (o, entry) = r.rescale(RescaleTo::Step(1)).await;
    let RescaleOutcome::Done { jid, from, to, path, why_path, .. } = &o else { panic!("{o:?}") };
    assert_eq!((jid.as_str(), *from, *to, *path), (r.jid.as_str(), 1, 2, RescalePath::InPlace));
    assert_eq!(why_path, "Flink 2.3.0, the job's schedulerType: Adaptive");
    assert_eq!(r.fake.job_parallelism(&r.jid), Some(2), "the same run, now at 2");
    assert_eq!(r.fake.jobs_named("clicks").len(), 1, "no second run, no resubmission");
    assert_eq!(entry.outcome, "ok");
    let out: Value = serde_json::from_str(&entry.output).unwrap();
    assert_eq!((out["path"].as_str(), out["from"].as_u64(), out["to"].as_u64()), (Some("in-place"), Some(1), Some(2)));
    assert!(out["warden_ms"].is_u64() && out["flink_ms"].is_u64(), "{out}");
    // The PUT named both vertices with bounds 1..=2.
    let rr: Value = {
        let url = format!("{}/jobs/{}/resource-requirements", r.fake.url(), r.jid);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    };
    let bounds: Vec<_> = rr.as_object().unwrap().values().map(|v| v["parallelism"].clone()).collect();
    assert_eq!(bounds, vec![json!({"lowerBound": 1, "upperBound": 2}); 2]);
    // Announced, with the path it took.
    let log = std::fs::read_to_string(r.executor.alert_log.path()).unwrap();
    let rec: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(rec["event"], "rescaled");
    assert!(rec["summary"].as_str().unwrap().starts_with("clicks rescaled in-place from parallelism 1 to 2"), "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_in_place_on_a_default_scheduler_cluster_but_through_a_savepoint() {
    let r = rig(false, json!({"min": 1, "max": 4})).await;
    let (o, entry) = r.rescale(RescaleTo::Exactly(2)).await;
    let RescaleOutcome::ViaSavepoint { jid, from, wanted, reason } = &o else { panic!("{o:?}") };
    assert_eq!((jid.as_str(), *from, *wanted), (r.jid.as_str(), 1, 2));
    assert!(reason.contains("runs under the Default scheduler; in-place rescaling needs the adaptive one"), "{reason}");
    assert_eq!(r.puts(), 0, "no PUT to a cluster that cannot take it");
    // The savepoint restart, under the rescale's journal entry: a new run at parallelism 2, from the savepoint.
    assert_eq!(entry.action, ActionKind::Rescale);
    assert_eq!(entry.outcome, "ok", "{entry:?}");
    assert!(entry.output.starts_with("rescale #1 strategy=savepoint"), "{}", entry.output);
    let live: Vec<_> = r.fake.jobs_named("clicks").into_iter().filter(|(_, s)| s == "RUNNING").collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_ne!(live[0].0, r.jid, "a new run");
    assert_eq!(r.fake.job_parallelism(&live[0].0), Some(2));
    let rec = r.store.restarts(None).unwrap().pop().unwrap();
    assert_eq!((rec.journal_id, rec.overrides.parallelism), (entry.id, Some(2)));
    // One notice, from the restart machinery.
    let log = std::fs::read_to_string(r.executor.alert_log.path()).unwrap();
    let events: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.iter().filter(|e| e["event"] == "rescaled").count(), 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_slots_is_reported_as_partial_not_done() {
    let r = rig(true, json!({"min": 1, "max": 4})).await;
    // Four slots: `other` holds two, clicks one; one is free.
    r.fake.submit_with_parallelism("other", 2);
    let (o, entry) = r.rescale(RescaleTo::Exactly(4)).await;
    let RescaleOutcome::Partial { from, wanted, got, free_slots, .. } = &o else { panic!("{o:?}") };
    assert_eq!((*from, *wanted, *got, *free_slots), (1, 4, 2, 0));
    assert_eq!(r.fake.job_parallelism(&r.jid), Some(2));
    assert_eq!(entry.outcome, "partial: parallelism 2 of 4 asked; no free slot left");
    let log = std::fs::read_to_string(r.executor.alert_log.path()).unwrap();
    let rec: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!((rec["event"].as_str(), rec["severity"].as_str()), (Some("rescale_partial"), Some("warning")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescale_is_clamped_to_the_jobs_bounds() {
    let r = rig(true, json!({"min": 1, "max": 2})).await;
    let (o, _) = r.rescale(RescaleTo::Exactly(8)).await;
    assert!(matches!(o, RescaleOutcome::Done { to: 2, .. }), "{o:?}");
    assert_eq!(r.fake.job_parallelism(&r.jid), Some(2));
    // At the upper bound, one step up does nothing, asks Flink nothing, and says why.
    let puts = r.puts();
    let (o, entry) = r.rescale(RescaleTo::Step(1)).await;
    assert!(matches!(o, RescaleOutcome::Suppressed(_)), "{o:?}");
    assert_eq!(entry.outcome, "suppressed: clicks already at its upper bound 2 (jobs.clicks.parallelism.max)");
    assert_eq!(r.puts(), puts);
    // Down again, then not below the lower bound.
    assert!(matches!(r.rescale(RescaleTo::Step(-1)).await.0, RescaleOutcome::Done { to: 1, .. }));
    let (_, entry) = r.rescale(RescaleTo::Step(-1)).await;
    assert_eq!(entry.outcome, "suppressed: clicks already at its lower bound 1 (jobs.clicks.parallelism.min)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bounds_no_rescale() {
    let r = rig(true, Value::Null).await;
    let (o, _) = r.rescale(RescaleTo::Step(1)).await;
    let RescaleOutcome::Failed { step, message, .. } = &o else { panic!("{o:?}") };
    assert_eq!(step, "start");
    assert!(message.contains("no `jobs.clicks.parallelism: {min, max}`"), "{message}");
    assert_eq!(r.puts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rescale_while_the_job_restarts() {
    let r = rig(true, json!({"min": 1, "max": 4})).await;
    // A restart of clicks in progress (its record is the per-job lock; another process may drive it).
    let lease = chrono::Duration::seconds(30);
    let rec = r
        .store
        .begin_restart(
            0,
            "jm",
            "clicks",
            RestartStrategy::Savepoint,
            &r.jid,
            chrono::Utc::now(),
            "pid 1 on elsewhere",
            lease,
        )
        .unwrap()
        .unwrap();
    let (o, entry) = r.rescale(RescaleTo::Step(1)).await;
    assert!(matches!(o, RescaleOutcome::Suppressed(_)), "{o:?}");
    assert_eq!(
        entry.outcome,
        format!("suppressed: restart #{} of clicks is in progress (step started, pid 1 on elsewhere)", rec.id)
    );
    assert_eq!(r.puts(), 0);
    assert_eq!(r.fake.job_parallelism(&r.jid), Some(1));
    // And while this Warden holds the job (a restart it drives, or another rescale): not either.
    let other = rig(true, json!({"min": 1, "max": 4})).await;
    let lock = rescale::job_lock(&other.store, "jm", "clicks");
    let held = lock.lock().await;
    let (o, _) = other.rescale(RescaleTo::Step(1)).await;
    assert!(matches!(&o, RescaleOutcome::Suppressed(w) if w.contains("in progress in this Warden")), "{o:?}");
    drop(held);
    assert!(matches!(other.rescale(RescaleTo::Step(1)).await.0, RescaleOutcome::Done { to: 2, .. }));
}

/// A rule that asks for one step up on every evaluation, with a cooldown of an hour.
const SCALE_UP: &str = r#"
if !obs.ok { return; }
for j in obs.body.jobs {
    if j.name == "clicks" && j.state == "RUNNING" {
        rescale(#{job: "clicks", jid: j.jid, step: 1, cooldown: "1h", summary: "more clicks"});
    }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_rescale_goes_through_the_daemon_once_per_cooldown() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    fake.set_adaptive_scheduler(true);
    let jid = fake.submit("clicks");
    let dir = tempfile::tempdir().unwrap();
    write_pack(dir.path(), "scale", &[("up", SCALE_UP)]);
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "jobs": {"clicks": {"jar": {"name": "clicks.jar"}, "verify_timeout": "5s", "parallelism": {"min": 1, "max": 3}}},
        "server": {"enabled": false},
        "shutdown_grace": "5s",
    });
    let mut d = Daemon::start_in(dir, cfg).await;
    let e = d
        .wait_for("rescaled", |e| matches!(e, Event::Alert(a) if a.event == "rescaled" && a.subject == "clicks"))
        .await;
    let Event::Alert(a) = e else { unreachable!() };
    assert_eq!(a.rule, "scale/up");
    assert_eq!(a.details["path"], "in-place");
    assert_eq!(fake.job_parallelism(&jid), Some(2));
    // The rule keeps asking; the cooldown holds: no second rescale.
    d.polls(6).await;
    let rescales: Vec<_> = d.journal().into_iter().filter(|e| e.action == ActionKind::Rescale).collect();
    assert_eq!(rescales.len(), 1, "{rescales:#?}");
    assert_eq!(rescales[0].outcome, "ok");
    assert_eq!(fake.job_parallelism(&jid), Some(2), "not 3");
    d.stop().await;
}

/// Asks for a step up whenever the job's `details.ask` file exists: with no cooldown, only the storm guard stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storm_guard_stops_a_rescale_loop() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    fake.set_adaptive_scheduler(true);
    let jid = fake.submit("clicks");
    let dir = tempfile::tempdir().unwrap();
    write_pack(dir.path(), "scale", &[("up", &SCALE_UP.replace("cooldown: \"1h\"", "cooldown: \"0s\""))]);
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "jobs": {"clicks": {"jar": {"name": "clicks.jar"}, "verify_timeout": "5s", "parallelism": {"min": 1, "max": 4}}},
        "dispatch": {"storm_guard": {"max_runs": 2, "window": "1h"}},
        "server": {"enabled": false},
        "shutdown_grace": "5s",
    });
    let mut d = Daemon::start_in(dir, cfg).await;
    d.wait_for("giving up", |e| matches!(e, Event::Alert(a) if a.event == "giving_up" && a.subject == "clicks")).await;
    d.polls(4).await;
    let rescales: Vec<_> = d.journal().into_iter().filter(|e| e.action == ActionKind::Rescale).collect();
    assert_eq!(rescales.len(), 2, "{rescales:#?}");
    assert_eq!(fake.job_parallelism(&jid), Some(3), "two steps up, not a third");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_a_rescale_in_flight() {
    let r = Arc::new(rig(true, json!({"min": 1, "max": 4})).await);
    // Flink takes its time (a real 2.3.0 cluster took about 30 s).
    r.fake.set_rescale_delay(std::time::Duration::from_millis(1500));
    let running = tokio::spawn({
        let r = r.clone();
        async move { r.rescale(RescaleTo::Step(1)).await }
    });
    crate::support::eventually("the rescale shows in flight", || {
        rescale::in_flight(&r.store).unwrap().iter().any(|e| e.subject == "clicks" && e.detail == "+1")
    })
    .await;
    let view = warden::server::api::EntryView::from(rescale::in_flight(&r.store).unwrap().remove(0));
    assert_eq!((view.kind.as_str(), view.outcome.as_str()), ("rescale", "started"));
    let (o, _) = running.await.unwrap();
    assert!(matches!(o, RescaleOutcome::Done { to: 2, .. }), "{o:?}");
    assert!(rescale::in_flight(&r.store).unwrap().is_empty(), "done: no longer in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_rescale_goes_in_place_on_an_adaptive_cluster_and_says_so() {
    let r = rig(true, json!({"min": 1, "max": 2})).await;
    let dry = r.cli(&["rescale", "--target", "jm", "--job", "clicks", "--parallelism", "3", "--dry-run"]);
    let out = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&dry.stderr));
    assert!(out.contains("to parallelism 3 in place (the adaptive scheduler rescales the running job"), "{out}");
    assert!(out.contains("(Flink 2.3.0, the job's schedulerType: Adaptive)"), "{out}");
    assert_eq!((r.puts(), r.fake.job_parallelism(&r.jid)), (0, Some(1)), "a dry run changes nothing");
    // The operator's number is taken as asked (above the rules' bound of 2).
    let run = r.cli(&["rescale", "--target", "jm", "--job", "clicks", "--parallelism", "3"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&run.stderr));
    assert!(out.contains("clicks rescaled in-place from parallelism 1 to 3"), "{out}");
    assert_eq!(r.fake.job_parallelism(&r.jid), Some(3));
    assert_eq!(r.fake.jobs_named("clicks").len(), 1, "the same run");
    assert!(r.fake.jar_runs().is_empty(), "nothing resubmitted");
    let e = r.store.entries(None).unwrap().into_iter().find(|e| e.action == ActionKind::Rescale).unwrap();
    assert_eq!((e.rule.as_str(), e.outcome.as_str()), ("cli", "ok"));
    // Beyond what Flink allows (max parallelism 128): Flink's refusal, exit 1.
    let run = r.cli(&["rescale", "--target", "jm", "--job", "clicks", "--parallelism", "500"]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{out}");
    assert!(
        out.contains("failed at step `requirements`") && out.contains("exceeds its maximum parallelism 128"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_on_an_adaptive_1_20_cluster_too() {
    // Flink 1.x jobs do not report their scheduler: the cluster's configuration says it.
    let r = rig_on(FlinkApiVersion::V1, true, json!({"min": 1, "max": 4})).await;
    let (o, _) = r.rescale(RescaleTo::Exactly(3)).await;
    let RescaleOutcome::Done { to, path, why_path, .. } = &o else { panic!("{o:?}") };
    assert_eq!(
        (*to, *path, why_path.as_str()),
        (3, RescalePath::InPlace, "Flink 1.20.1, jobmanager.scheduler: adaptive")
    );
    assert_eq!(r.fake.job_parallelism(&r.jid), Some(3));
}

/// A daemon with only `plugins/flink-autoscale` (every 200 ms, `params`) on an adaptive fake where `clicks`'s source
/// vertex is backpressured (85 %) and its map runs flat out.
async fn autoscale(params: Value) -> (FakeJobManager, String, Daemon) {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    fake.set_adaptive_scheduler(true);
    let jid = fake.submit("clicks");
    let job: Value = reqwest::get(format!("{}/jobs/{jid}", fake.url())).await.unwrap().json().await.unwrap();
    for v in job["vertices"].as_array().unwrap() {
        let source = v["name"].as_str().unwrap().starts_with("Source");
        let (bp, busy) = if source { (850.0, 3.0) } else { (0.0, 1000.0) };
        let body =
            json!([{"id": "backPressuredTimeMsPerSecond", "max": bp}, {"id": "busyTimeMsPerSecond", "max": busy}]);
        let path = format!("/jobs/{jid}/vertices/{}/subtasks/metrics", v["id"].as_str().unwrap());
        fake.set_override(&path, 200, "application/json", body.to_string().into_bytes());
    }
    let mut p = json!({"warmup": "0s", "up_for": "1s"});
    crate::support::merge(&mut p, params);
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": [concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/flink-autoscale")],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s", "labels": {"flink-autoscale": "on"}}],
        "packs": {"flink-autoscale": {"every": "200ms", "params": p}},
        "jobs": {"clicks": {"jar": {"name": "clicks.jar"}, "verify_timeout": "5s", "parallelism": {"min": 1, "max": 4}}},
        "server": {"enabled": false},
        "shutdown_grace": "5s",
    });
    let d = Daemon::start(cfg).await;
    (fake, jid, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscale_pack_recommends_by_default_and_changes_nothing() {
    let (fake, jid, mut d) = autoscale(json!({})).await;
    let e = d
        .wait_for(
            "the recommendation",
            |e| matches!(e, Event::Alert(a) if a.event == "firing" && a.rule == "flink-autoscale/recommend"),
        )
        .await;
    let Event::Alert(a) = e else { unreachable!() };
    assert_eq!(a.summary, "clicks: parallelism 1 → 2: backpressure 85 % on `Source: clicks-source` for 1s");
    assert_eq!((a.details["parallelism"].as_u64(), a.details["recommended"].as_u64()), (Some(1), Some(2)));
    d.polls(3).await;
    assert_eq!(fake.job_parallelism(&jid), Some(1), "only a recommendation");
    assert!(d.journal().iter().all(|e| e.action != ActionKind::Rescale));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscale_pack_with_act_rescales_one_step_in_place() {
    let (fake, jid, mut d) = autoscale(json!({"act": true, "cooldown": "1h"})).await;
    let e = d
        .wait_for("rescaled", |e| matches!(e, Event::Alert(a) if a.event == "rescaled" && a.subject == "clicks"))
        .await;
    let Event::Alert(a) = e else { unreachable!() };
    assert_eq!(a.rule, "flink-autoscale/recommend");
    assert_eq!((a.details["path"].as_str(), a.details["to"].as_u64()), (Some("in-place"), Some(2)));
    assert_eq!(fake.job_parallelism(&jid), Some(2));
    // Still backpressured, but the cooldown holds: one step, not more.
    d.polls(6).await;
    let rescales: Vec<_> = d.journal().into_iter().filter(|e| e.action == ActionKind::Rescale).collect();
    assert_eq!(rescales.len(), 1, "{rescales:#?}");
    assert_eq!(rescales[0].summary, "clicks: parallelism 1 → 2: backpressure 85 % on `Source: clicks-source` for 1s");
    assert_eq!(fake.job_parallelism(&jid), Some(2));
    d.stop().await;
}
