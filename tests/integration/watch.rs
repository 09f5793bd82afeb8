//! Which jobs job-not-running watches (`watch: all`, kept across restarts of Warden) and how it follows a relaunch,
//! against the fake JobManager with the real daemon.

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::json;
use warden::event::Event;

use crate::support::*;

const JNR: &str = "flink/job-not-running";

crate::both_versions!(
    watch_all_remembers_running_jobs_across_a_restart_of_warden,
    a_relaunched_run_that_fails_again_is_alerted_at_once_and_not_relaunched_before_the_cooldown,
);

/// `watch: all`: a job Warden saw RUNNING, then a restart of Warden while the JobManager restarts without HA and
/// forgets its jobs. The new Warden never saw the job, yet reports it missing and relaunches it once: the watched
/// set was kept in the rule's state.
async fn watch_all_remembers_running_jobs_across_a_restart_of_warden(v: FlinkApiVersion) {
    let (fake, _jid) = fake_with_job(v, "orders-eu").await;
    let addr = fake.addr();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"relaunch": recording_relaunch(&rec)},
            "packs": {"flink": {"params": {"watch": "all", "relaunch_command": "relaunch"}}},
        }),
    );
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(3).await;
    assert!(d.journal().is_empty(), "a healthy cluster leads to no action: {:#?}", d.journal());

    // The JobManager goes away; Warden restarts while it is away; the JobManager comes back empty.
    fake.shutdown_and_wait().await;
    let mut d = d.restart().await;
    d.polls(2).await; // failed polls: job-not-running skips them
    let fresh = FakeJobManager::start_on(addr, v).await.unwrap();
    fresh.add_jar("orders-eu.jar", "com.example.Job", "orders-eu");

    let fired = record(d.wait_for("orders-eu missing", |e| is_alert(e, "firing", JNR, "orders-eu")).await);
    assert!(fired.summary.contains("job orders-eu is not on JobManager jm"), "{}", fired.summary);
    d.wait_for("orders-eu back", |e| is_alert(e, "resolved", JNR, "orders-eu")).await;
    assert_eq!(fresh.jobs_named("orders-eu").len(), 1);
    assert_eq!(fresh.jobs_named("orders-eu")[0].1, "RUNNING");
    assert_eq!(invocations(&rec), vec![vec![fresh.url(), "orders-eu".to_string(), String::new()]]);

    // An operator cancels it: it leaves the set, said once in the alert log, and nothing is relaunched.
    let jid = fresh.jobs_named("orders-eu")[0].0.clone();
    fresh.cancel(&jid);
    d.wait_for("no longer watched", |e| {
        matches!(e, Event::Alert(a) if a.event == "log" && a.subject == "orders-eu"
            && a.summary.contains("CANCELED") && a.summary.contains("no longer watched"))
    })
    .await;
    d.polls(5).await;
    assert_eq!(invocations(&rec).len(), 1, "a cancelled job is not relaunched");
    assert_eq!(d.count_alerts("firing", "orders-eu"), 1, "{:#?}", d.seen);
    let logged = d.alert_log().iter().filter(|l| l["event"] == "log" && l["subject"] == "orders-eu").count();
    assert_eq!(logged, 1, "leaving the watched set is logged once");
    d.stop().await;
}

/// The relaunch command exits 0 and the new run fails within seconds: its own cause is alerted at once (a second
/// *firing*), the relaunch waits for `run_cooldown`, and the alert does not resolve while no run stays up.
async fn a_relaunched_run_that_fails_again_is_alerted_at_once_and_not_relaunched_before_the_cooldown(
    v: FlinkApiVersion,
) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"relaunch": recording_relaunch(&rec)},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "relaunch",
                                           "settle_time": "1m"}}},
        }),
    );
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "poison pill in partition 3");
    let first = record(d.wait_for("first firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(first.summary.contains("poison pill in partition 3"), "{}", first.summary);

    // The relaunched run comes up; it fails as soon as it runs.
    eventually("the relaunched run is RUNNING", || {
        fake.jobs_named("clicks").iter().any(|(j, st)| *j != jid && st == "RUNNING")
    })
    .await;
    let second_jid = fake.jobs_named("clicks").into_iter().find(|(j, _)| *j != jid).unwrap().0;
    fake.fail(&second_jid, "java.io.IOException", "sink table orders_out does not exist");
    let second = record(d.wait_for("second firing", |e| is_alert(e, "firing", JNR, "clicks")).await);
    assert!(second.summary.contains("FAILED again"), "{}", second.summary);
    assert!(second.summary.contains("java.io.IOException: sink table orders_out does not exist"), "{}", second.summary);
    assert_eq!(second.details["jid"], second_jid);
    assert!(second.time - first.time < chrono::Duration::seconds(30), "not held back by the cooldown");

    d.polls(8).await;
    assert_eq!(invocations(&rec).len(), 1, "no second relaunch before run_cooldown (2m): {:#?}", d.journal());
    assert_eq!(d.count_alerts("firing", "clicks"), 2, "each run's failure said once: {:#?}", d.seen);
    assert_eq!(d.count_alerts("resolved", "clicks"), 0);
    d.stop().await;
}

impl Daemon {
    /// How many alert events of job-not-running with this event and subject were seen.
    fn count_alerts(&self, event: &str, subject: &str) -> usize {
        self.seen.iter().filter(|e| is_alert(e, event, JNR, subject)).count()
    }
}
