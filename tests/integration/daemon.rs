//! Daemon behaviour users rely on beyond single rules: state across restarts, dry runs, `warden guard reset`.

use fake_flink::FlinkApiVersion;
use serde_json::{json, Value};
use warden::event::Event;
use warden::store::Store;

use crate::support::*;

const JNR: &str = "flink/job-not-running";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_neither_resends_a_firing_alert_nor_forgets_the_run_cooldown() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"noop": {"argv": ["true"]}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "noop"}}},
        }),
    );
    let mut d = Daemon::start(cfg).await;
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "no leader");
    d.wait_for("firing", |e| is_alert(e, "firing", JNR, "clicks")).await;
    d.wait_for("the relaunch ran", |e| matches!(e, Event::RunFinished { .. })).await;

    let mut d = d.restart().await;
    d.polls(6).await; // the job is still FAILED; the default run cooldown (2m) has not passed
    assert!(!d.seen.iter().any(|e| matches!(e, Event::Alert(_) | Event::RunStarted { .. })), "{:#?}", d.seen);
    let firing = d.alert_log().iter().filter(|l| l["event"] == "firing").count();
    assert_eq!(firing, 1, "the firing alert is not sent again after a restart");
    assert_eq!(runs(&d.journal(), "clicks").len(), 1);

    fake.recover(&jid);
    d.wait_for("resolved after the restart", |e| is_alert(e, "resolved", JNR, "clicks")).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_journals_what_would_happen_and_does_nothing() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V1, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"relaunch": recording_relaunch(&rec)},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "relaunch"}}},
        }),
    );
    write_config(dir.path(), &cfg);
    let mut d = Daemon::launch(dir, true);
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "no leader");
    let dry = |d: &Daemon| {
        let j = d.journal();
        let alert = j.iter().any(|e| e.action == "alert" && e.subject == "clicks" && e.outcome == "dry-run");
        let run = runs(&j, "clicks").iter().any(|e| e.outcome == "dry-run" && e.detail == "relaunch");
        alert && run
    };
    eventually("dry-run alert and run in the journal", || dry(&d)).await;
    d.polls(5).await;
    assert_eq!(runs(&d.journal(), "clicks").len(), 1, "{:#?}", d.journal());
    assert!(invocations(&rec).is_empty(), "no command ran");
    assert!(fake.jar_runs().is_empty());
    assert!(d.alert_log().is_empty(), "no alert was sent");
    assert!(!d.seen.iter().any(|e| matches!(e, Event::Alert(_) | Event::RunStarted { .. })));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_reset_lets_relaunches_resume() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"noop": {"argv": ["true"]}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "noop"}}},
            "dispatch": {"run_cooldown": "300ms", "storm_guard": {"max_runs": 2}},
        }),
    );
    let mut d = Daemon::start(cfg).await;
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "no leader");
    d.wait_for("giving up", |e| is_alert(e, "giving_up", JNR, "clicks")).await;
    d.polls(4).await;
    assert_eq!(runs(&d.journal(), "clicks").len(), 2);

    let out = assert_cmd::Command::new(WARDEN)
        .args(["guard", "reset", "--target", "jm", "--subject", "clicks", "-c"])
        .arg(d.config_path())
        .assert()
        .code(0);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("storm guard reset for `clicks` on `jm`"), "{stdout}");
    d.wait_for("a relaunch after the reset", |e| matches!(e, Event::RunStarted { .. })).await;
    d.wait_for("giving up again", |e| is_alert(e, "giving_up", JNR, "clicks")).await;
    d.polls(4).await;
    let journal = d.journal();
    assert_eq!(runs(&journal, "clicks").len(), 4, "{journal:#?}");
    assert_eq!(journal.iter().filter(|e| e.action == "guard").count(), 2);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_repeat_sends_reminders_while_an_alert_fires() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let cfg = flink_config(
        &fake.url(),
        json!({
            "packs": {"flink": {"params": {"tasks_failing_for": "200ms"}}},
            "dispatch": {"alert_repeat": "600ms"},
        }),
    );
    let mut d = Daemon::start(cfg).await;
    d.polls(2).await;
    fake.tasks_failing(&jid, 1);
    let fired = record(d.wait_for("firing", |e| is_alert(e, "firing", "flink/tasks-failing", "clicks")).await);
    let reminder = record(d.wait_for("reminder", |e| is_alert(e, "reminder", "flink/tasks-failing", "clicks")).await);
    assert!(reminder.time - fired.time >= chrono::Duration::milliseconds(600), "reminded before alert_repeat");
    assert_eq!(reminder.details["firing_since"], json!(fired.time), "{:?}", reminder.details);
    fake.recover(&jid);
    d.wait_for("resolved", |e| is_alert(e, "resolved", "flink/tasks-failing", "clicks")).await;
    let events: Vec<String> = d.alert_log().iter().map(|l| l["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events.first().map(String::as_str), Some("firing"));
    assert_eq!(events.last().map(String::as_str), Some("resolved"));
    assert!(events[1..events.len() - 1].iter().all(|e| e == "reminder") && events.len() >= 3, "{events:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_rule_stays_silent_while_the_others_judge() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let other = fake.submit("views");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"noop": {"argv": ["true"]}},
            "packs": {"flink": {
                "disabled_rules": ["job-not-running"],
                "params": {"expected_jobs": ["clicks"], "relaunch_command": "noop", "tasks_failing_for": "200ms"},
            }},
        }),
    );
    let mut d = Daemon::start(cfg).await;
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "no leader");
    fake.tasks_failing(&other, 1);
    d.wait_for("tasks-failing firing", |e| is_alert(e, "firing", "flink/tasks-failing", "views")).await;
    d.polls(5).await;
    assert!(!d.seen.iter().any(|e| matches!(e, Event::Alert(a) if a.rule == JNR)), "{:#?}", d.seen);
    assert!(runs(&d.journal(), "clicks").is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_recording_decides_what_the_daemon_did_at_the_same_times() {
    use warden::runtime::{self, RunOptions};
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("relaunches.txt");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"relaunch": recording_relaunch(&record)},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "relaunch",
                                           "not_running_for": "1s", "cause_wait": "2s"}}},
        }),
    );
    let path = write_config(dir.path(), &cfg);
    let recording = dir.path().join("recording.jsonl");
    let (plan, engine) = warden::plan::load(&path, None).unwrap_or_else(|d| panic!("{d}"));
    let events = warden::event::Events::default();
    let mut rx = events.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions { events, record: Some(recording.clone()), ..Default::default() };
    let daemon = tokio::spawn(runtime::run(plan, engine, opts, async move {
        let _ = stop_rx.await;
    }));
    // A job fails with a root cause (fetched by a follow-up request), is relaunched, runs again.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "Kafka partition clicks-3 has no leader");
    wait_alert(&mut rx, "firing").await;
    wait_alert(&mut rx, "resolved").await;
    let _ = stop_tx.send(());
    daemon.await.unwrap().unwrap();

    let journal = Store::open(&dir.path().join("state")).unwrap().entries(None).unwrap();
    let live: Vec<(String, String, String)> = journal
        .iter()
        .filter(|e| matches!(e.action.as_str(), "alert" | "resolved" | "run"))
        .map(|e| (e.time.clone(), e.action.to_string(), e.subject.clone()))
        .collect();
    assert!(live.iter().any(|(_, a, _)| a == "run"), "the daemon relaunched: {live:?}");
    let firing = journal.iter().find(|e| e.action == "alert").unwrap();
    assert!(firing.summary.contains("no leader") || firing.details.to_string().contains("no leader"), "{firing:?}");

    let (plan, _) = warden::plan::load(&path, None).unwrap();
    let replayed = warden::ruletest::replay(&plan, &recording).unwrap();
    let again: Vec<(String, String, String)> = replayed
        .iter()
        .map(|(t, a)| {
            let kind = if a.action == "alert" && a.event == "resolved" { "resolved" } else { a.action.as_str() };
            (warden::store::ts(*t), kind.to_string(), a.subject.clone())
        })
        .collect();
    assert_eq!(again, live, "replay must decide what the daemon did, at the same times");
    // The root cause came from a recorded follow-up answer, not from a 404.
    let replayed_firing = replayed.iter().find(|(_, a)| a.event == "firing").unwrap();
    assert!(!replayed_firing.1.summary.contains("404"), "{:?}", replayed_firing.1);
}

async fn wait_alert(rx: &mut tokio::sync::broadcast::Receiver<Event>, want: &str) {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(Event::Alert(a)) if a.event == want && a.subject == "clicks" => return,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {want}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_alerts_on_itself_through_the_normal_path_and_resolves() {
    use warden::runtime::{self, ReloadSource, RunOptions};
    let (fake, _) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let pack = write_pack(dir.path(), "team", &[("flaky", "throw \"the cluster API changed\";\n")]);
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": fake.url()}],
        "self_alerts": {"every": "200ms", "rule_errors": 2},
        "server": {"enabled": false},
    });
    let path = write_config(dir.path(), &cfg);
    let (plan, engine) = warden::plan::load(&path, None).unwrap_or_else(|d| panic!("{d}"));
    let events = warden::event::Events::default();
    let mut rx = events.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions { events, reload: Some(ReloadSource { config: path.clone() }), ..Default::default() };
    let daemon = tokio::spawn(runtime::run(plan, engine, opts, async move {
        let _ = stop_rx.await;
    }));
    // A rule that keeps failing: one alert, about that rule.
    let a = wait_self(&mut rx, "firing", "rule team/flaky").await;
    assert!(a.summary.contains("the cluster API changed"), "{}", a.summary);
    // Fixed (hot reload): it resolves.
    std::fs::write(pack.join("flaky.rhai"), "if !obs.ok { return; }\n").unwrap();
    wait_self(&mut rx, "resolved", "rule team/flaky").await;
    // A reload that is refused: one alert with the problem; fixed: resolved.
    std::fs::write(&path, "targets: [{name: jm, url: 12}]\nbogus: true\n").unwrap();
    let a = wait_self(&mut rx, "firing", "configuration").await;
    assert!(a.summary.contains("the last reload was refused"), "{}", a.summary);
    write_config(dir.path(), &cfg);
    wait_self(&mut rx, "resolved", "configuration").await;
    let _ = stop_tx.send(());
    daemon.await.unwrap().unwrap();
    // Each went through the journal and the alert log like any alert: fired once, resolved once.
    let log: Vec<Value> = std::fs::read_to_string(dir.path().join("state/alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["rule"] == "warden/self")
        .collect();
    let count = |ev: &str, subject: &str| log.iter().filter(|r| r["event"] == ev && r["subject"] == subject).count();
    assert_eq!((count("firing", "rule team/flaky"), count("resolved", "rule team/flaky")), (1, 1), "{log:#?}");
    assert_eq!((count("firing", "configuration"), count("resolved", "configuration")), (1, 1), "{log:#?}");
}

async fn wait_self(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    want: &str,
    subject: &str,
) -> warden::model::AlertRecord {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await {
                Ok(Event::Alert(a)) if a.rule == "warden/self" && a.event == want && a.subject == subject => return a,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for a self-alert {want} about {subject}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_notifications_and_a_probe_that_stopped_raise_self_alerts() {
    use warden::runtime::{self, RunOptions};
    let dir = tempfile::tempdir().unwrap();
    write_pack(dir.path(), "team", &[("loud", "alert(#{subject: \"x\", summary: \"something to say\"});\n")]);
    // A JobManager that takes connections and never answers: each poll waits out its timeout, so the probe
    // (every 200ms) falls behind.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let url = format!("http://{addr}");
    // A channel that fails (and is retried) until the file `up` exists.
    let up = dir.path().join("up");
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": url, "timeout": "3s"}],
        "self_alerts": {"every": "200ms", "outbox_age": "1s", "probe_intervals": 3},
        "notify": {"group_wait": "0s", "retry": {"initial_backoff": "100ms", "max_backoff": "200ms"},
                   "channels": {"down": {"type": "plugin", "command": ["sh", "-c", "test -f \"$0\" || exit 75", up]}},
                   "default": {"channels": ["down"]}},
        "server": {"enabled": false},
    });
    let path = write_config(dir.path(), &cfg);
    let (plan, engine) = warden::plan::load(&path, None).unwrap_or_else(|d| panic!("{d}"));
    let events = warden::event::Events::default();
    let mut rx = events.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions { events, ..Default::default() };
    let daemon = tokio::spawn(runtime::run(plan, engine, opts, async move {
        let _ = stop_rx.await;
    }));
    let a = wait_self(&mut rx, "firing", "probe team/p on jm").await;
    assert!(a.summary.contains("has not run for"), "{}", a.summary);
    let a = wait_self(&mut rx, "firing", "notifications").await;
    assert!(a.summary.contains("waited"), "{}", a.summary);
    // The JobManager answers again, and the channel comes back: both resolve.
    drop(silent);
    let _fake = fake_flink::FakeJobManager::start_on(addr, FlinkApiVersion::V2).await.unwrap();
    wait_self(&mut rx, "resolved", "probe team/p on jm").await;
    std::fs::write(&up, "").unwrap();
    wait_self(&mut rx, "resolved", "notifications").await;
    let _ = stop_tx.send(());
    daemon.await.unwrap().unwrap();
}
