//! `warden explain` on a restart the daemon really carried out (dispatcher, restart machinery, fake JobManager),
//! and `warden report` across Flink 1.x and 2.x JobManagers and one that does not answer.

use std::path::Path;
use std::time::Duration;

use assert_cmd::Command;
use fake_flink::FlinkApiVersion;
use serde_json::{json, Value};

use crate::support::*;

fn warden(config: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(WARDEN);
    c.env_remove("WARDEN_CONFIG").env_remove("WARDEN_LOG").args(args).arg("-c").arg(config);
    c.output().expect("warden runs")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn json_of(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}{}", stdout(o), String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_the_daemon_made_is_explained_and_counted_in_the_report() {
    let (fake, first) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    fake.fast_forward(&first, Duration::from_secs(5)); // a few retained checkpoints to restart from
    let cfg = flink_config(
        &fake.url(),
        json!({
            "jobs": {"clicks": {"jar": {"name": "clicks.jar"}, "verify_timeout": "20s", "fallback": "stateless"}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_mode": "restart_job",
                                           "restart_strategy": "last-checkpoint"}}},
        }),
    );
    let mut d = Daemon::start(cfg).await;
    d.polls(2).await;
    fake.fail(&first, "java.lang.RuntimeException", "poison pill in the clicks stream");
    d.wait_for("the restart to end", |e| is_alert(e, "restarted", "flink/job-not-running", "clicks")).await;
    let config = d.config_path();
    let entry = d.journal().into_iter().find(|e| e.action == "restart").expect("a restart entry");
    let id = entry.id.to_string();

    // Read while the daemon runs, as an operator would: the id from `warden history`, then `warden explain`.
    let history = stdout(&warden(&config, &["history", "--kind", "restart"]));
    let e = json_of(&warden(&config, &["explain", &id, "--json"]));
    let text = warden(&config, &["explain", &format!("#{id}")]);
    let report = json_of(&warden(&config, &["report", "--format", "json"]));
    let table = stdout(&warden(&config, &["report"]));
    let unknown = warden(&config, &["explain", "999999"]);
    let not_a_number = warden(&config, &["explain", "clicks"]);
    d.stop().await;

    let live: Vec<String> =
        fake.jobs_named("clicks").into_iter().filter(|(_, s)| s == "RUNNING").map(|(j, _)| j).collect();
    assert_eq!(live.len(), 1, "one new run: {live:?}");
    assert_eq!(e["entry"]["action"], "restart");
    assert_eq!(e["entry"]["outcome"], "ok");
    let why = &e["decision"];
    assert_eq!(why["rule"], "flink/job-not-running");
    assert_eq!(why["target"], "jm");
    assert_eq!(why["asked"], json!({"type": "restart", "job": "clicks", "strategy": "last-checkpoint"}));
    assert_eq!(why["jid_before"], first.as_str());
    assert!(
        why["root_cause"]
            .as_str()
            .unwrap_or("")
            .contains("java.lang.RuntimeException: poison pill in the clicks stream"),
        "{why:#}"
    );
    // The failed run's entry of the /jobs/overview answer the rule judged.
    assert_eq!(why["observed"]["jid"], first.as_str());
    assert_eq!(why["observed"]["state"], "FAILED");
    assert_eq!(why["details"]["state"], "FAILED");
    let r = &e["restart"];
    assert_eq!(r["old_jid"], first.as_str());
    assert_eq!(r["new_jid"], live[0].as_str());
    let location = r["location"].as_str().expect("restored from a checkpoint");
    assert!(location.contains(&first) && location.contains("/chk-"), "{location}");
    assert_eq!(e["restored_from"]["kind"], "checkpoint");
    assert_eq!(e["restored_from"]["location"], location);

    assert!(history.lines().any(|l| l.starts_with(&format!("#{id} "))), "history shows the id first: {history}");
    assert!(text.status.success());
    let text = stdout(&text);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&first, "[OLD JID]");
    settings.add_filter(&live[0], "[NEW JID]");
    settings.add_filter(r"journal entry #\d+", "journal entry #[ID]");
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[TIME]");
    settings.add_filter(r"\b1\d{12}\b", "[MS]");
    settings.add_filter(r"chk-\d+", "chk-[N]");
    settings.add_filter(r"duration: \d+", "duration: [MS]");
    settings.add_filter(r"file:[^ ]*/checkpoints", "file:[DIR]/checkpoints");
    settings.bind(|| insta::assert_snapshot!("explain_a_real_restart", text));

    assert_eq!(unknown.status.code(), Some(1));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(err.contains("no journal entry #999999") && err.contains("warden history"), "{err}");
    assert_eq!(not_a_number.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_a_number.stderr).contains("`clicks` is not a journal entry id"));

    let jobs = &report["targets"][0]["jobs"];
    assert_eq!(report["targets"][0]["flink_version"], "2.3.0");
    assert_eq!(jobs.as_array().unwrap().len(), 1, "the newest run of each name: {jobs:#}");
    assert_eq!(jobs[0]["jid"], live[0].as_str());
    assert_eq!(jobs[0]["restarts_last_day"], 1);
    assert!(
        table.contains("clicks") && table.lines().any(|l| l.starts_with("jm ") && l.trim_end().ends_with(" 1")),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reads_flink_1_and_2_and_a_target_that_does_not_answer_is_a_row() {
    let (v1, j1) = fake_with_job(FlinkApiVersion::V1, "orders").await;
    let (v2, j2) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    v1.fast_forward(&j1, Duration::from_secs(4));
    v2.fast_forward(&j2, Duration::from_secs(6));
    v2.submit("sessions");
    // A closed port: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &json!({
            "state_dir": "state",
            "targets": [{"name": "old", "url": v1.url(), "timeout": "2s"},
                        {"name": "gone", "url": format!("http://{dead}"), "timeout": "2s"},
                        {"name": "new", "url": v2.url(), "timeout": "2s"}],
        }),
    );
    let r = json_of(&warden(&config, &["report", "--json"]));
    let text = warden(&config, &["report"]);
    let only = json_of(&warden(&config, &["report", "--json", "--target", "new"]));
    let bad = warden(&config, &["report", "--target", "nope"]);

    let t = r["targets"].as_array().unwrap();
    let names: Vec<&str> = t.iter().map(|t| t["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["old", "gone", "new"], "in the configuration's order");
    assert_eq!(t[0]["flink_version"], "1.20.1");
    assert_eq!(t[2]["flink_version"], "2.3.0");
    assert!(t[1]["error"].as_str().unwrap().contains("gone"), "{:#}", t[1]);
    assert_eq!(t[1]["jobs"], json!([]));
    for (target, job, jid, ckpts) in [(&t[0], "orders", &j1, 4), (&t[2], "clicks", &j2, 6)] {
        let j = target["jobs"].as_array().unwrap().iter().find(|j| j["name"] == job).unwrap();
        assert_eq!(j["jid"], jid.as_str());
        assert_eq!(j["state"], "RUNNING");
        assert_eq!(j["checkpointing"]["status"], "on");
        assert_eq!(j["checkpointing"]["mode"], "exactly_once");
        assert_eq!(j["checkpointing"]["interval_ms"], 1000);
        assert_eq!(j["checkpointing"]["storage"], "FileSystemCheckpointStorage");
        assert_eq!(j["state_size"], 2010);
        assert!(j["last_checkpoint"]["external_path"].as_str().unwrap().contains(jid.as_str()), "{j:#}");
        assert!(j["state_size_trend"]["samples"].as_u64().unwrap() >= ckpts as u64 - 1, "{j:#}");
        assert_eq!(j["restarts_last_day"], Value::Null, "no state store yet");
    }
    assert_eq!(t[2]["jobs"].as_array().unwrap().len(), 2, "clicks and sessions");

    assert!(text.status.success(), "a dead target does not fail the report");
    let text = stdout(&text);
    assert!(text.lines().any(|l| l.starts_with("gone ") && l.contains("no answer")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("old ") && l.contains("1.20.1") && l.contains("orders")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("new ") && l.contains("exactly_once every 1s")), "{text}");
    assert!(text.contains("restarts are not known"), "{text}");

    assert_eq!(only["targets"].as_array().unwrap().len(), 1);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no target named `nope`"));
}
