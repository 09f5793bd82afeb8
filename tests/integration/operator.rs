//! Flink run by the Kubernetes operator: Warden must not fight it. A JobManager target labelled
//! `managed_by: flink-operator` gets its alerts, but no relaunch, restart or submission, ever.

use fake_flink::FlinkApiVersion;
use serde_json::json;
use warden::event::Event;

use crate::support::*;

const JNR: &str = "flink/job-not-running";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_operator_manages_is_never_relaunched_and_the_refusal_is_journalled_once() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s", "labels": {"managed_by": "flink-operator"}}],
            "commands": {"relaunch": recording_relaunch(&rec)},
            "dispatch": {"run_cooldown": "300ms"},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "relaunch"}}},
        }),
    );
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "no leader");
    d.wait_for("firing", |e| is_alert(e, "firing", JNR, "clicks")).await;
    d.polls(12).await; // many times the run cooldown
    let journal = d.journal();
    let refused: Vec<_> = journal.iter().filter(|e| e.action == "refused" && e.subject == "clicks").collect();
    assert_eq!(refused.len(), 1, "{journal:#?}");
    assert!(refused[0].outcome.contains("managed_by: flink-operator"), "{:?}", refused[0].outcome);
    assert!(runs(&journal, "clicks").is_empty(), "{journal:#?}");
    assert!(invocations(&rec).is_empty(), "no command ran");
    assert!(fake.jar_runs().is_empty(), "nothing was submitted");
    assert!(!d.seen.iter().any(|e| matches!(e, Event::RunStarted { .. } | Event::RestartProgress { .. })));
    d.stop().await;
}
