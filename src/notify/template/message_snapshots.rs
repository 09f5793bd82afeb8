//! What on-call reads, kept as snapshots (`src/notify/template/snapshots/`): the e-mail text, the Slack payload
//! and the plugin document for a firing alert, a group, a resolved alert and an alert whose relaunch failed.

use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use crate::notify::config::SlackConfig;
use crate::notify::{plugin, slack};

fn target() -> TargetView {
    TargetView { name: "prod-jm".into(), url: "http://jm:8081".into(), labels: BTreeMap::new() }
}

fn at(min: u32, sec: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, min, sec).unwrap()
}

fn record(event: &str, rule: &str, job: &str, summary: &str, details: serde_json::Value) -> AlertRecord {
    AlertRecord {
        time: at(2, 3),
        event: event.into(),
        rule: rule.into(),
        target: "prod-jm".into(),
        subject: job.into(),
        severity: Severity::Critical,
        summary: summary.into(),
        details,
    }
}

fn failed(job: &str) -> AlertRecord {
    record(
        "firing",
        "flink/job-not-running",
        job,
        &format!("job {job} FAILED: java.io.IOException: disk full"),
        json!({"job": job, "jid": "0494e314c586ea2a04408b827c542e40", "state": "FAILED",
               "end_time": at(1, 0).timestamp_millis(), "root_cause": "java.io.IOException: disk full",
               "relaunch": "relaunch", "runbook_url": "https://wiki.example.com/runbooks/flink-job-down",
               "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy\n\tat org.apache.flink.runtime.executiongraph.failover.ExecutionFailureHandler.handleFailure(ExecutionFailureHandler.java:219)\n\tat org.apache.flink.runtime.scheduler.DefaultScheduler.onTaskFailed(DefaultScheduler.java:279)\nCaused by: java.lang.RuntimeException: cannot write checkpoint\n\tat demo.Sink.invoke(Sink.java:42)\nCaused by: java.io.IOException: disk full\n\tat java.io.FileOutputStream.writeBytes(Native Method)"}),
    )
}

/// The e-mail (subject and body), the Slack payload and the plugin document of one message.
fn render_all(v: &View) -> String {
    let env = environment();
    let subject = render(&env, "mail", "subject", None, DEFAULT_SUBJECT, v);
    let body = render(&env, "mail", "body", None, DEFAULT_BODY, v);
    let slack_cfg: SlackConfig =
        serde_json::from_value(json!({"webhook_url": "https://hooks.slack.example/T/B/x"})).unwrap();
    let payload = slack::payload(&env, "slack", &slack_cfg, v);
    let text = render(&env, "hook", "text", None, DEFAULT_BODY, v);
    let doc = plugin::document("hook", "msg-1", at(2, 13), false, v, text);
    format!(
        "=== e-mail\nSubject: {subject}\n\n{body}\n=== Slack payload\n{}\n\n=== plugin document\n{}\n",
        serde_json::to_string_pretty(&payload).unwrap(),
        serde_json::to_string_pretty(&doc).unwrap()
    )
}

#[test]
fn firing() {
    let now = at(2, 13);
    let a = alert_view(&failed("clicks"), &target(), vec!["will relaunch with `relaunch`".into()], 4, now);
    insta::assert_snapshot!(render_all(&view("firing", target(), vec![a], now)));
}

#[test]
fn grouped() {
    let now = at(2, 13);
    let loop_ = record(
        "firing",
        "flink/restart-loop",
        "orders-01",
        "job orders-01 restarting for 315s",
        json!({"jid": "fa4906f3015b8fe8e3c2a7d8e1b6b1d9", "state": "RESTARTING"}),
    );
    let alerts = vec![
        alert_view(&failed("clicks"), &target(), vec!["ran `relaunch`: succeeded".into()], 2, now),
        alert_view(&loop_, &target(), vec![], 2, now),
    ];
    insta::assert_snapshot!(render_all(&view("firing", target(), alerts, now)));
}

#[test]
fn resolved() {
    let now = at(7, 18);
    let mut r = failed("orders-01");
    r.event = "resolved".into();
    r.time = now;
    r.summary = format!("resolved: {}", r.summary);
    r.details["firing_since"] = json!("2026-03-01T10:02:03Z");
    let a = alert_view(&r, &target(), vec!["ran `relaunch`: succeeded".into()], 4, now);
    let v = view("resolved", target(), vec![a], now);
    assert_eq!(
        v.headline,
        "[RESOLVED] job orders-01 is running again (relaunched by Warden with `relaunch`; was firing for 5m 15s)"
    );
    insta::assert_snapshot!(render_all(&v));
}

#[test]
fn failed_action() {
    let now = at(2, 13);
    let did = "ran `relaunch`: failed: exit status 1; stderr: Could not build the program from JAR file. | \
               java.io.FileNotFoundException: /opt/jobs/clicks.jar (No such file or directory)";
    let a = alert_view(&failed("clicks"), &target(), vec![did.into()], 3, now);
    insta::assert_snapshot!(render_all(&view("firing", target(), vec![a], now)));
}

#[test]
fn root_cause_lines_put_the_caused_by_chain_first_and_durations_read_as_people_say_them() {
    let a = alert_view(&failed("clicks"), &target(), vec![], 3, at(2, 13));
    assert_eq!(
        a.root_cause_lines,
        [
            "org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy",
            "Caused by: java.lang.RuntimeException: cannot write checkpoint",
            "Caused by: java.io.IOException: disk full",
        ]
    );
    assert_eq!(
        humanize_seconds("restarting for 315s, 12s, 60s; x315s 3sx"),
        "restarting for 5m 15s, 12s, 1m; x315s 3sx"
    );
}
