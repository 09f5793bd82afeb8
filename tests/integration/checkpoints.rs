//! The checkpoint rules of the shipped Flink pack (the `job-checkpoints` probe: one request per running job) against
//! the fake JobManager, in both API generations, with the real daemon.

use std::time::Duration;

use fake_flink::FlinkApiVersion;
use serde_json::json;

use crate::support::*;

const STALLED: &str = "flink/checkpoints-stalled";
const FAILING: &str = "flink/checkpoints-failing";
const CHECKPOINT_RULES: [&str; 5] = [
    "flink/checkpoints-stalled",
    "flink/checkpoints-failing",
    "flink/checkpointing-off",
    "flink/checkpoint-duration",
    "flink/savepoint-freshness",
];

crate::both_versions!(
    a_job_whose_checkpoints_stop_completing_is_reported_and_resolved_when_one_completes,
    healthy_jobs_get_no_checkpoint_alert_and_cost_one_request_per_poll,
);

fn config(url: &str) -> serde_json::Value {
    flink_config(url, json!({"packs": {"flink": {"params": {"expected_jobs": ["clicks", "orders"]}}}}))
}

fn checkpoint_alerts(seen: &[warden::event::Event]) -> Vec<String> {
    seen.iter()
        .filter_map(|e| match e {
            warden::event::Event::Alert(a) if CHECKPOINT_RULES.contains(&a.rule.as_str()) => {
                Some(format!("{} {} {}: {}", a.event, a.rule, a.subject, a.summary))
            }
            _ => None,
        })
        .collect()
}

async fn a_job_whose_checkpoints_stop_completing_is_reported_and_resolved_when_one_completes(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let orders = fake.submit("orders");
    let mut d = Daemon::start_in(tempfile::tempdir().unwrap(), config(&fake.url())).await;
    d.polls(6).await;

    // A few checkpoints complete; then every checkpoint of `clicks` expires, and 21 minutes pass for it: longer than
    // the stall window of the fake's configuration (interval 1s, timeout 10m, no tolerable failures: 2 × 10m).
    fake.fast_forward(&jid, Duration::from_secs(5));
    fake.set_checkpoints_failing(&jid, true);
    fake.fast_forward(&jid, Duration::from_secs(21 * 60));
    let fired = record(d.wait_for("checkpoints-stalled firing", |e| is_alert(e, "firing", STALLED, "clicks")).await);
    assert_eq!(fired.severity.as_str(), "critical");
    assert!(
        fired.summary.starts_with("job clicks: checkpoints stalled, no checkpoint completed for 21m"),
        "{}",
        fired.summary
    );
    assert!(
        fired.summary.contains("allowed 20m (interval 1s, timeout 10m, 0 tolerable failures)"),
        "{}",
        fired.summary
    );
    assert!(fired.summary.contains("last failure: Checkpoint expired before completing."), "{}", fired.summary);
    assert_eq!(fired.details["jid"], jid);
    assert_eq!(fired.details["window_ms"], 1_200_000);
    assert_eq!(fired.details["latest_failure"], "Checkpoint expired before completing.");
    // (Decided in the same poll, so it may have come first.)
    let failing = match d.seen.iter().find(|e| is_alert(e, "firing", FAILING, "clicks")) {
        Some(e) => record(e.clone()),
        None => record(d.wait_for("checkpoints-failing firing", |e| is_alert(e, "firing", FAILING, "clicks")).await),
    };
    assert!(failing.summary.contains("checkpoints failed within 10m"), "{}", failing.summary);

    // The stalled job's configuration was read (once per rule that needed it), the healthy one's not at all.
    let asked = fake.requests();
    let config = |j: &str| asked.iter().filter(|r| r.ends_with(&format!("/jobs/{j}/checkpoints/config"))).count();
    assert!((1..=4).contains(&config(&jid)), "{}", config(&jid));

    // They complete again: resolved at the next poll.
    fake.set_checkpoints_failing(&jid, false);
    d.wait_for("checkpoints-stalled resolved", |e| is_alert(e, "resolved", STALLED, "clicks")).await;
    d.polls(6).await;
    let about_orders: Vec<String> = checkpoint_alerts(&d.seen).into_iter().filter(|a| a.contains("orders")).collect();
    assert!(about_orders.is_empty(), "the other job is healthy: {about_orders:?}");
    assert!(d.journal().iter().all(|e| e.action != "run" && e.action != "restart"), "{:#?}", d.journal());
    assert_eq!(fake.job_state(&jid).as_deref(), Some("RUNNING"));
    assert_eq!(fake.job_state(&orders).as_deref(), Some("RUNNING"));
}

async fn healthy_jobs_get_no_checkpoint_alert_and_cost_one_request_per_poll(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let orders = fake.submit("orders");
    // Both have been running (and checkpointing every second) for a minute.
    for j in [&jid, &orders] {
        fake.fast_forward(j, Duration::from_secs(60));
    }
    let mut d = Daemon::start_in(tempfile::tempdir().unwrap(), config(&fake.url())).await;
    d.polls(20).await;
    assert!(checkpoint_alerts(&d.seen).is_empty(), "{:?}", checkpoint_alerts(&d.seen));
    let asked = fake.requests();
    for j in [&jid, &orders] {
        let stats = asked.iter().filter(|r| r.ends_with(&format!("/jobs/{j}/checkpoints"))).count();
        let config = asked.iter().filter(|r| r.ends_with(&format!("/jobs/{j}/checkpoints/config"))).count();
        assert!(stats >= 2, "each running job's checkpoints are polled: {stats} for {j}");
        assert_eq!(config, 0, "a job that checkpoints well costs no follow-up request ({stats} polls)");
    }
}
