//! The optional `plugins/flink-ha` pack: its `warden test` cases pass from the binary, and the daemon reports a
//! JobManager fail-over of the fake JobManager once, with the job it recovered, across a Warden restart, without
//! relaunching anything.

use std::path::Path;

use assert_cmd::Command;
use fake_flink::FlinkApiVersion;
use serde_json::json;
use warden::event::Event;

use crate::both_versions;
use crate::support::*;

const PACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/flink-ha");
const FAILOVER: &str = "flink-ha/jobmanager-failover";

#[test]
fn the_packs_rule_tests_pass() {
    let cases = std::fs::read_dir(Path::new(PACK).join("tests"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert!(cases >= 10, "{cases} test files");
    let o = Command::new(WARDEN).arg("test").arg(PACK).env_remove("WARDEN_CONFIG").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("{cases} passed, 0 failed")), "{text}");
}

fn failovers(d: &Daemon) -> usize {
    d.journal().iter().filter(|e| e.rule == FAILOVER).count()
}

both_versions!(a_failover_is_reported_once_with_the_job_and_nothing_is_relaunched);

async fn a_failover_is_reported_once_with_the_job_and_nothing_is_relaunched(v: FlinkApiVersion) {
    let (fake, jid) = fake_with_job(v, "clicks").await;
    let mut cfg = flink_config(
        &fake.url(),
        json!({
            "pack_paths": [RULES_DIR, PACK],
            "commands": {"noop": {"argv": ["true"]}},
            "packs": {
                "flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "noop"}},
                "flink-ha": {"every": "200ms", "params": {"report_wait": "1s"}},
            },
        }),
    );
    cfg["targets"][0]["labels"] = json!({"flink-ha": "jobmanager"});
    let mut d = Daemon::start(cfg).await;
    d.polls(6).await;
    // What the rule knows (identity, jobs) is kept across a restart of Warden itself.
    let mut d = d.restart().await;
    d.polls(6).await;
    assert_eq!(failovers(&d), 0, "{:#?}", d.journal());

    fake.set_leader_election(true);
    d.polls(6).await;
    fake.failover();
    fake.set_leader_election(false);
    let rec = record(
        d.wait_for("the fail-over report", |e| matches!(e, Event::Alert(a) if a.rule == FAILOVER && a.event == "log"))
            .await,
    );
    assert!(rec.summary.contains("after a leader election"), "{}", rec.summary);
    assert!(rec.summary.contains("a different or restarted JobManager process answers"), "{}", rec.summary);
    assert!(rec.summary.contains("clicks (recovered under the same id (RUNNING))"), "{}", rec.summary);
    assert_eq!(rec.details["identity"], fake.web_tmpdir());
    assert_eq!(rec.details["jobs"][0]["jid"], jid.as_str());
    assert_eq!(rec.details["leader_election"], true);

    d.polls(10).await; // the new JobManager, poll after poll
    assert_eq!(failovers(&d), 1, "{:#?}", d.journal());
    assert_eq!(d.alert_log().iter().filter(|l| l["rule"] == FAILOVER).count(), 1);
    assert!(runs(&d.journal(), "clicks").is_empty(), "{:#?}", d.journal());
    assert!(fake.jar_runs().is_empty());
    d.stop().await;
}
