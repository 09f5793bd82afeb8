//! The four shipped Flink rules against the fake JobManager, in both API generations, with the real daemon.

use std::time::Duration;

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::json;
use warden::event::Event;

use crate::support::*;

const JNR: &str = "flink/job-not-running";
const TASKS: &str = "flink/tasks-failing";
const LOOP: &str = "flink/restart-loop";
const UNREACHABLE: &str = "flink/jobmanager-unreachable";

const CLASS: &str = "java.lang.IllegalStateException";
const MESSAGE: &str = "Kafka partition clicks-3 has no leader (broker 2 unreachable)";

fn cause() -> String {
    format!("{CLASS}: {MESSAGE}")
}

crate::both_versions!(
    failed_job_is_explained_relaunched_once_and_resolved,
    cancelled_job_is_alerted_but_not_relaunched,
    cancelled_job_is_relaunched_with_relaunch_cancelled,
    finished_job_is_alerted_but_not_relaunched,
    finished_job_is_relaunched_with_relaunch_finished,
    missing_job_is_relaunched_with_relaunch_missing,
    missing_job_is_only_alerted_without_relaunch_missing,
    restarting_job_is_a_restart_loop_not_a_relaunch,
    restart_loop_is_reported_when_restarts_exceed_max_restarts,
    a_restart_loop_that_ends_in_failure_hands_over_to_job_not_running,
    failing_tasks_are_reported_after_their_for_and_resolved,
    unreachable_jobmanager_is_reported_and_nothing_is_relaunched_meanwhile,
    leader_election_is_reported_as_such_and_relaunching_waits_for_it,
    storm_guard_gives_up_after_max_runs,
    many_jobs_failing_at_once_all_get_their_root_cause,
    several_restart_loops_at_once_all_get_their_root_cause,
    a_slow_jobmanager_still_gets_its_failed_job_relaunched,
);

/// A config watching `clicks` with a relaunch command that records its arguments to `<dir>/relaunches`.
fn relaunching(fake: &FakeJobManager, dir: &tempfile::TempDir, params: serde_json::Value) -> serde_json::Value {
    let mut p = json!({"expected_jobs": ["clicks"], "relaunch_command": "relaunch"});
    merge(&mut p, params);
    flink_config(
        &fake.url(),
        json!({
            "commands": {"relaunch": recording_relaunch(&dir.path().join("relaunches"))},
            "packs": {"flink": {"params": p}},
        }),
    )
}

async fn failed_job_is_explained_relaunched_once_and_resolved(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = relaunching(&fake, &dir, json!({}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(3).await;
    assert!(d.journal().is_empty(), "a healthy job leads to no action: {:#?}", d.journal());

    let t0 = chrono::Utc::now();
    fake.fail(&jid, CLASS, MESSAGE);
    let fired = record(d.wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(fired.summary.contains(&cause()), "the alert names the root cause: {}", fired.summary);
    assert!(fired.summary.contains("FAILED"), "{}", fired.summary);
    assert_eq!(fired.details["root_cause"], cause());
    assert_eq!(fired.details["jid"], jid);
    assert!(fired.time - t0 >= chrono::Duration::milliseconds(400), "alerted before not_running_for passed");

    d.wait_for("job-not-running resolved", |e| is_alert(e, "resolved", JNR, "clicks")).await;
    let jobs = fake.jobs_named("clicks");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0].1, "RUNNING", "the relaunched run is live: {jobs:?}");
    assert_eq!(jobs[1], (jid.clone(), "FAILED".to_string()));

    d.polls(5).await; // and nothing more happens once it runs again
    assert_eq!(fake.jar_runs().len(), 1, "exactly one relaunch");
    assert_eq!(invocations(&rec), vec![vec![fake.url(), "clicks".to_string(), jid.clone()]]);
    let journal = d.journal();
    let r = runs(&journal, "clicks");
    assert_eq!(r.len(), 1, "{journal:#?}");
    assert_eq!((r[0].rule.as_str(), r[0].detail.as_str(), r[0].outcome.as_str()), (JNR, "relaunch", "ok"));
    let alert_id = journal.iter().find(|e| e.action == "alert" && e.rule == JNR).expect("alert journalled").id;
    assert!(alert_id < r[0].id, "the alert goes out before the relaunch");
    assert!(journal.iter().any(|e| e.action == "resolved" && e.subject == "clicks" && e.outcome == "ok"));

    let log: Vec<_> = d.alert_log().into_iter().filter(|l| l["rule"] == JNR).collect();
    let events: Vec<&str> = log.iter().map(|l| l["event"].as_str().unwrap_or("")).collect();
    assert_eq!(events, ["firing", "resolved"], "{log:#?}");
    assert!(log[0]["summary"].as_str().unwrap_or("").contains(&cause()));
    assert_eq!(log[0]["severity"], "critical");
    assert_eq!(log[0]["target"], "jm");
    d.stop().await;
}

#[derive(Clone, Copy)]
enum End {
    Cancel,
    Finish,
}

async fn ended_job_not_relaunched(v: FlinkApiVersion, end: End) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = relaunching(&fake, &dir, json!({}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    let word = match end {
        End::Cancel => {
            fake.cancel(&jid);
            "was cancelled"
        }
        End::Finish => {
            fake.finish(&jid);
            "finished"
        }
    };
    let fired = record(d.wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(fired.summary.contains(word) && fired.summary.contains("not relaunching"), "{}", fired.summary);
    assert_eq!(fired.severity.as_str(), "warning");
    // The relaunch would be due in the same evaluation as the alert; give it more polls anyway.
    d.polls(5).await;
    assert!(runs(&d.journal(), "clicks").is_empty(), "{:#?}", d.journal());
    assert!(fake.jar_runs().is_empty());
    assert!(invocations(&rec).is_empty());
    assert!(!d.seen.iter().any(|e| matches!(e, Event::RunStarted { .. })));
    d.stop().await;
}

async fn ended_job_relaunched(v: FlinkApiVersion, end: End) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let (params, state) = match end {
        End::Cancel => (json!({"relaunch_cancelled": true}), "CANCELED"),
        End::Finish => (json!({"relaunch_finished": true}), "FINISHED"),
    };
    let cfg = relaunching(&fake, &dir, params);
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    match end {
        End::Cancel => fake.cancel(&jid),
        End::Finish => fake.finish(&jid),
    }
    let fired = record(d.wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(fired.summary.contains(state), "{}", fired.summary);
    d.wait_for("job-not-running resolved", |e| is_alert(e, "resolved", JNR, "clicks")).await;
    assert_eq!(fake.jobs_named("clicks")[0].1, "RUNNING");
    assert_eq!(invocations(&rec), vec![vec![fake.url(), "clicks".to_string(), jid]]);
    assert_eq!(runs(&d.journal(), "clicks").len(), 1);
    assert_eq!(fake.jar_runs().len(), 1);
    d.stop().await;
}

async fn cancelled_job_is_alerted_but_not_relaunched(v: FlinkApiVersion) {
    ended_job_not_relaunched(v, End::Cancel).await
}

async fn cancelled_job_is_relaunched_with_relaunch_cancelled(v: FlinkApiVersion) {
    ended_job_relaunched(v, End::Cancel).await
}

async fn finished_job_is_alerted_but_not_relaunched(v: FlinkApiVersion) {
    ended_job_not_relaunched(v, End::Finish).await
}

async fn finished_job_is_relaunched_with_relaunch_finished(v: FlinkApiVersion) {
    ended_job_relaunched(v, End::Finish).await
}

async fn missing_job(v: FlinkApiVersion, relaunch_missing: bool) {
    let fake = FakeJobManager::start(v).await.unwrap();
    fake.add_jar("ghost.jar", "com.example.Ghost", "ghost");
    fake.submit("other"); // the JobManager lists jobs, just not this one
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = relaunching(&fake, &dir, json!({"expected_jobs": ["ghost"], "relaunch_missing": relaunch_missing}));
    let mut d = Daemon::start_in(dir, cfg).await;
    let fired = record(d.wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "ghost")).await);
    assert!(fired.summary.contains("not on JobManager jm"), "{}", fired.summary);
    assert_eq!(fired.details["state"], "MISSING");
    if relaunch_missing {
        d.wait_for("job-not-running resolved", |e| is_alert(e, "resolved", JNR, "ghost")).await;
        assert_eq!(fake.jobs_named("ghost").len(), 1);
        assert_eq!(fake.jobs_named("ghost")[0].1, "RUNNING");
        assert_eq!(invocations(&rec), vec![vec![fake.url(), "ghost".to_string(), String::new()]]);
        let journal = d.journal();
        assert_eq!(runs(&journal, "ghost").len(), 1);
        assert_eq!(runs(&journal, "ghost")[0].outcome, "ok");
    } else {
        d.polls(5).await;
        assert!(invocations(&rec).is_empty());
        assert!(fake.jar_runs().is_empty());
        assert!(runs(&d.journal(), "ghost").is_empty());
    }
    d.stop().await;
}

async fn missing_job_is_relaunched_with_relaunch_missing(v: FlinkApiVersion) {
    missing_job(v, true).await
}

async fn missing_job_is_only_alerted_without_relaunch_missing(v: FlinkApiVersion) {
    missing_job(v, false).await
}

async fn restarting_job_is_a_restart_loop_not_a_relaunch(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = relaunching(&fake, &dir, json!({"restarting_for": "1s"}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    let t0 = chrono::Utc::now();
    fake.restart_loop(&jid, "java.lang.RuntimeException", "Checkpoint storage s3://ckpt unavailable");
    let fired = record(d.wait_for("restart-loop firing", |e| is_alert(e, "firing", LOOP, "clicks")).await);
    assert!(fired.summary.contains("restart loop (restarting for"), "{}", fired.summary);
    assert!(
        fired.summary.contains("java.lang.RuntimeException: Checkpoint storage s3://ckpt unavailable"),
        "the alert carries the root cause: {}",
        fired.summary
    );
    assert!(fired.time - t0 >= chrono::Duration::seconds(1), "alerted before restarting_for passed");
    assert_eq!(fired.details["jid"], jid);
    // RESTARTING is Flink's own business: job-not-running neither alerts nor relaunches (its `for` is 400ms).
    assert!(runs(&d.journal(), "clicks").is_empty(), "{:#?}", d.journal());
    assert!(fake.jar_runs().is_empty());
    assert!(invocations(&rec).is_empty());
    assert!(!d.seen.iter().any(|e| matches!(e, Event::Alert(a) if a.rule == JNR)));

    fake.recover(&jid);
    d.wait_for("restart-loop resolved", |e| is_alert(e, "resolved", LOOP, "clicks")).await;
    assert!(fake.jar_runs().is_empty());
    d.stop().await;
}

async fn restart_loop_is_reported_when_restarts_exceed_max_restarts(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = relaunching(&fake, &dir, json!({"restarting_for": "1h", "max_restarts": 2}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    fake.restart_loop(&jid, "java.lang.OutOfMemoryError", "Java heap space");
    d.polls(3).await; // the rule samples numRestarts
    assert!(!d.seen.iter().any(|e| matches!(e, Event::Alert(_))), "no alert yet: {:#?}", d.seen);
    fake.fast_forward(&jid, Duration::from_secs(6)); // six more restarts
    let fired = record(d.wait_for("restart-loop firing", |e| is_alert(e, "firing", LOOP, "clicks")).await);
    assert!(fired.summary.contains("numRestarts grew by"), "{}", fired.summary);
    assert!(fired.summary.contains("java.lang.OutOfMemoryError: Java heap space"), "{}", fired.summary);
    assert!(fired.details["restarts_in_window"].as_i64().unwrap_or(0) > 2, "{:?}", fired.details);
    assert!(fake.jar_runs().is_empty());
    d.stop().await;
}

async fn a_restart_loop_that_ends_in_failure_hands_over_to_job_not_running(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = relaunching(&fake, &dir, json!({"restarting_for": "600ms"}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    fake.restart_loop(&jid, "java.lang.RuntimeException", "sink rejects writes");
    d.wait_for("restart-loop firing", |e| is_alert(e, "firing", LOOP, "clicks")).await;
    // The restart strategy gives up: the job FAILED for good.
    fake.fail(&jid, CLASS, MESSAGE);
    d.wait_for("restart-loop resolved", |e| is_alert(e, "resolved", LOOP, "clicks")).await;
    let fired = record(d.seen_or_wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(fired.summary.contains(&cause()), "{}", fired.summary);
    d.seen_or_wait_for("job-not-running resolved", |e| is_alert(e, "resolved", JNR, "clicks")).await;
    d.polls(3).await;
    assert_eq!(invocations(&rec), vec![vec![fake.url(), "clicks".to_string(), jid]]);
    assert_eq!(fake.jobs_named("clicks")[0].1, "RUNNING");
    assert!(!d
        .seen
        .iter()
        .skip_while(|e| !is_alert(e, "resolved", LOOP, "clicks"))
        .skip(1)
        .any(|e| is_alert(e, "firing", LOOP, "clicks")));
    d.stop().await;
}

async fn failing_tasks_are_reported_after_their_for_and_resolved(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = relaunching(&fake, &dir, json!({"tasks_failing_for": "600ms"}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    let t0 = chrono::Utc::now();
    fake.tasks_failing(&jid, 1);
    let fired = record(d.wait_for("tasks-failing firing", |e| is_alert(e, "firing", TASKS, "clicks")).await);
    assert!(fired.summary.contains("says RUNNING but only 1 of 2 tasks run (1 failed)"), "{}", fired.summary);
    assert!(fired.time - t0 >= chrono::Duration::milliseconds(600), "alerted before tasks_failing_for passed");
    assert_eq!(fired.details["jid"], jid);
    fake.recover(&jid);
    d.wait_for("tasks-failing resolved", |e| is_alert(e, "resolved", TASKS, "clicks")).await;
    assert!(fake.jar_runs().is_empty(), "a RUNNING job is never relaunched");
    let log: Vec<String> = d
        .alert_log()
        .iter()
        .map(|l| format!("{} {}", l["event"].as_str().unwrap(), l["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(log, [format!("firing {TASKS}"), format!("resolved {TASKS}")]);
    d.stop().await;
}

fn failed_polls(seen: &[Event]) -> usize {
    seen.iter().filter(|e| matches!(e, Event::Observed { error: Some(_), .. })).count()
}

async fn unreachable_jobmanager_is_reported_and_nothing_is_relaunched_meanwhile(v: FlinkApiVersion) {
    let (fake, _) = fake_with_job(v, "clicks").await;
    let addr = fake.addr();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = relaunching(&fake, &dir, json!({}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    tokio::time::timeout(WAIT, fake.shutdown_and_wait()).await.expect("fake stops");
    let mark = d.seen.len();
    let fired = record(d.wait_for("jobmanager-unreachable firing", |e| is_alert(e, "firing", UNREACHABLE, "jm")).await);
    assert!(failed_polls(&d.seen[mark..]) >= 2, "alerted before unreachable_polls (2) failed polls");
    assert!(fired.summary.contains("JobManager jm cannot be reached"), "{}", fired.summary);
    assert_eq!(fired.details["kind"], "connect");
    d.polls(5).await; // well past not_running_for: job-not-running must skip, not relaunch a job it cannot see
    assert!(invocations(&rec).is_empty());
    assert!(runs(&d.journal(), "clicks").is_empty(), "{:#?}", d.journal());

    let back = FakeJobManager::start_on(addr, v).await.expect("fake restarts on the same port");
    back.add_jar("clicks.jar", "com.example.Job", "clicks");
    back.submit("clicks");
    d.wait_for("jobmanager-unreachable resolved", |e| is_alert(e, "resolved", UNREACHABLE, "jm")).await;
    d.polls(3).await;
    assert!(invocations(&rec).is_empty());
    assert!(back.jar_runs().is_empty());
    assert!(!d.seen.iter().any(|e| matches!(e, Event::Alert(a) if a.rule == JNR)), "{:#?}", d.seen);
    d.stop().await;
}

async fn leader_election_is_reported_as_such_and_relaunching_waits_for_it(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = relaunching(&fake, &dir, json!({}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    fake.set_leader_election(true);
    let mark = d.seen.len();
    let fired = record(d.wait_for("jobmanager-unreachable firing", |e| is_alert(e, "firing", UNREACHABLE, "jm")).await);
    assert!(failed_polls(&d.seen[mark..]) >= 2, "alerted before unreachable_polls (2) failed polls");
    assert!(fired.summary.contains("is in a leader election"), "{}", fired.summary);
    assert_eq!(fired.details["kind"], "leader_election");
    assert_eq!(fired.details["status"], 503);
    // The job fails while nobody can see it: nothing is relaunched blindly.
    fake.fail(&jid, CLASS, MESSAGE);
    d.polls(5).await;
    assert!(invocations(&rec).is_empty());
    assert!(runs(&d.journal(), "clicks").is_empty(), "{:#?}", d.journal());
    assert!(fake.jar_runs().is_empty());

    fake.set_leader_election(false);
    d.wait_for("jobmanager-unreachable resolved", |e| is_alert(e, "resolved", UNREACHABLE, "jm")).await;
    // Now that it can see the failed job, job-not-running does its work, once.
    let fired = record(d.wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(fired.summary.contains(&cause()), "{}", fired.summary);
    d.wait_for("job-not-running resolved", |e| is_alert(e, "resolved", JNR, "clicks")).await;
    assert_eq!(invocations(&rec).len(), 1);
    assert_eq!(fake.jar_runs().len(), 1);
    d.stop().await;
}

async fn storm_guard_gives_up_after_max_runs(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
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
    fake.fail(&jid, CLASS, MESSAGE);
    let gave_up = record(d.wait_for("giving up", |e| is_alert(e, "giving_up", JNR, "clicks")).await);
    assert!(gave_up.summary.starts_with("giving up on clicks: 2 relaunches within 30m"), "{}", gave_up.summary);
    assert!(gave_up.summary.contains("warden guard reset --target jm --subject clicks"), "{}", gave_up.summary);
    assert_eq!(gave_up.severity.as_str(), "critical");
    d.polls(8).await; // several more cooldowns pass
    let journal = d.journal();
    let r = runs(&journal, "clicks");
    assert_eq!(r.len(), 2, "exactly max_runs runs: {journal:#?}");
    assert!(r.iter().all(|e| e.outcome == "ok"));
    assert_eq!(journal.iter().filter(|e| e.action == "guard").count(), 1, "{journal:#?}");
    let giving_up_lines = d.alert_log().iter().filter(|l| l["event"] == "giving_up").count();
    assert_eq!(giving_up_lines, 1);
    let giving_up_events = d.seen.iter().filter(|e| is_alert(e, "giving_up", JNR, "clicks")).count();
    assert_eq!(giving_up_events, 1);
    assert!(fake.jar_runs().is_empty());
    d.stop().await;
}

async fn many_jobs_failing_at_once_all_get_their_root_cause(v: FlinkApiVersion) {
    let fake = FakeJobManager::start(v).await.unwrap();
    let names: Vec<String> = (1..=6).map(|i| format!("job{i}")).collect();
    let jids: Vec<String> = names.iter().map(|n| fake.submit(n)).collect();
    let cfg = flink_config(&fake.url(), json!({"packs": {"flink": {"params": {"expected_jobs": names}}}}));
    let mut d = Daemon::start(cfg).await;
    d.polls(2).await;
    for (i, jid) in jids.iter().enumerate() {
        fake.fail(jid, CLASS, &format!("cause of job{}", i + 1));
    }
    for n in &names {
        let fired = record(d.wait_for(&format!("{n} firing"), |e| is_alert(e, "firing", JNR, n)).await);
        let want = format!("{CLASS}: cause of {n}");
        assert!(fired.summary.contains(&want), "{n}: {:?} lacks the root cause {want:?}", fired.summary);
    }
    d.stop().await;
}

async fn a_slow_jobmanager_still_gets_its_failed_job_relaunched(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    // A cluster with twenty more healthy jobs that must run.
    let mut expected = vec!["clicks".to_string()];
    for i in 1..=20 {
        expected.push(format!("healthy{i}"));
        fake.submit(&format!("healthy{i}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let mut cfg = relaunching(&fake, &dir, json!({"expected_jobs": expected}));
    // Every answer takes 1.2 s, well within the target's 5 s timeout.
    merge(&mut cfg, json!({"targets": [{"name": "jm", "url": fake.url(), "timeout": "5s"}]}));
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(1).await;
    fake.fail(&jid, CLASS, MESSAGE);
    fake.set_delay(Duration::from_millis(1200));
    let fired = record(d.wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(fired.summary.contains(&cause()), "{}", fired.summary);
    d.wait_for("the relaunch", |e| matches!(e, Event::RunFinished { .. })).await;
    assert_eq!(invocations(&rec).len(), 1);
    d.stop().await;
}

async fn several_restart_loops_at_once_all_get_their_root_cause(v: FlinkApiVersion) {
    let fake = FakeJobManager::start(v).await.unwrap();
    let names: Vec<String> = (1..=3).map(|i| format!("looper{i}")).collect();
    let jids: Vec<String> = names.iter().map(|n| fake.submit(n)).collect();
    let cfg = flink_config(&fake.url(), json!({"packs": {"flink": {"params": {"restarting_for": "1s"}}}}));
    let mut d = Daemon::start(cfg).await;
    d.polls(2).await;
    for (i, jid) in jids.iter().enumerate() {
        fake.restart_loop(jid, "java.lang.RuntimeException", &format!("sink {} rejects writes", i + 1));
    }
    // The alerts come in the JobManager's order (newest job first): collect them in any order.
    let mut fired = std::collections::BTreeMap::new();
    while fired.len() < names.len() {
        let e = record(
            d.wait_for("the restart-loop alerts", |e| names.iter().any(|n| is_alert(e, "firing", LOOP, n))).await,
        );
        fired.insert(e.subject.clone(), e.summary);
    }
    for (i, n) in names.iter().enumerate() {
        let want = format!("java.lang.RuntimeException: sink {} rejects writes", i + 1);
        assert!(fired[n].contains(&want), "{n}: {:?} lacks the root cause {want:?}", fired[n]);
    }
    d.stop().await;
}
