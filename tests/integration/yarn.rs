//! The optional pack `plugins/flink-yarn`: its rule tests pass, `examples/yarn-rm.yaml` next to it polls the
//! ResourceManager with the pack's probe only (the Flink pack stays off it), and the daemon follows a Flink job
//! through a fake ResourceManager's web proxy to the fake JobManager.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fake_flink::FlinkApiVersion;
use serde_json::{json, Value};

use crate::support::*;

const PACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/flink-yarn");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/yarn-rm.yaml");

fn warden(dir: &Path) -> Command {
    let mut c = Command::new(WARDEN);
    c.current_dir(dir).env_remove("WARDEN_CONFIG").env_remove("WARDEN_LOG");
    c
}

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn the_flink_yarn_rule_tests_pass() {
    let o = warden(Path::new(env!("CARGO_MANIFEST_DIR"))).args(["test", PACK]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let cases = std::fs::read_dir(Path::new(PACK).join("tests"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert!(cases >= 10, "{cases}");
    assert!(out(&o).contains(&format!("{cases} passed")), "{}", out(&o));
}

#[test]
fn the_yarn_example_next_to_the_pack_polls_only_the_resourcemanager_with_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(EXAMPLE, dir.path().join("warden.yaml")).unwrap();
    copy_dir(Path::new(PACK), &dir.path().join("plugins/flink-yarn"));
    let o = warden(dir.path()).args(["check", "--no-environment", "warden.yaml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    // One target (the RM), two packs, and one probe job: flink-yarn/yarn-apps on the RM, none of the Flink pack's.
    assert!(out(&o).contains("ok (1 targets, 2 packs,"), "{}", out(&o));
    assert!(out(&o).contains(", 1 probe jobs)"), "{}", out(&o));
    // Its commented `packs.flink-yarn` block is valid once the pack is there.
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let uncommented = example.replace("  # flink-yarn:", "  flink-yarn:").replace("\n  #   ", "\n    ");
    assert_ne!(uncommented, example);
    std::fs::write(dir.path().join("warden.yaml"), &uncommented).unwrap();
    let o = warden(dir.path()).args(["check", "--no-environment", "warden.yaml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains(", 1 probe jobs)"), "{}", out(&o));

    // The pack's probe selects targets by label: a JobManager target beside the RM adds the Flink pack's probes
    // only, not another flink-yarn one.
    let jm = "targets:\n  - name: jm\n    url: http://jobmanager:8081\n    labels: {kind: flink}\n";
    let jobs_of = |yaml: String| {
        std::fs::write(dir.path().join("warden.yaml"), yaml).unwrap();
        let o = warden(dir.path()).args(["check", "--no-environment", "warden.yaml"]).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let text = out(&o);
        let n = text.split(", ").find_map(|p| p.strip_suffix(" probe jobs)\n")).unwrap_or_else(|| panic!("{text}"));
        n.parse::<usize>().unwrap()
    };
    let both = jobs_of(example.replace("targets:\n", jm));
    // The JobManager alone: the RM's target entry removed (up to `packs:`).
    let start = example.find("  - name: yarn-rm").unwrap();
    let end = example.find("\npacks:").unwrap();
    let jm_only = jobs_of(format!("{}{}", &example[..start], &example[end + 1..]).replace("targets:\n", jm));
    assert!(jm_only >= 1, "{jm_only}");
    assert_eq!(both, jm_only + 1);
}

/// What the fake ResourceManager lists, and the queries it was asked.
#[derive(Default)]
struct Rm {
    /// Applications in NEW…RUNNING.
    live: Vec<Value>,
    /// FINISHED, FAILED and KILLED applications.
    ended: Vec<Value>,
    /// The query strings of `/ws/v1/cluster/apps`.
    queries: Vec<String>,
    /// The JobManager behind every RUNNING application's proxy.
    jm: String,
}

type SharedRm = Arc<Mutex<Rm>>;

async fn rm_apps(State(rm): State<SharedRm>, RawQuery(q): RawQuery) -> Response {
    let mut rm = rm.lock().unwrap();
    let q = q.unwrap_or_default();
    rm.queries.push(q.clone());
    let list = if q.contains("RUNNING") { rm.live.clone() } else { rm.ended.clone() };
    let body = if list.is_empty() { json!({"apps": null}) } else { json!({"apps": {"app": list}}) };
    axum::Json(body).into_response()
}

async fn rm_proxy(State(rm): State<SharedRm>, UrlPath((id, rest)): UrlPath<(String, String)>) -> Response {
    let jm = {
        let rm = rm.lock().unwrap();
        if !rm.live.iter().any(|a| a["id"] == id.as_str() && a["state"] == "RUNNING") {
            return (StatusCode::NOT_FOUND, "no such running application").into_response();
        }
        rm.jm.clone()
    };
    match reqwest::get(format!("{jm}/{rest}")).await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [("content-type", "application/json")], r.bytes().await.unwrap_or_default()).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn start_rm(rm: SharedRm) -> String {
    let app = axum::Router::new()
        .route("/ws/v1/cluster/apps", get(rm_apps))
        .route("/proxy/{id}/{*rest}", get(rm_proxy))
        .with_state(rm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn yarn_app(seq: u32, state: &str, final_status: &str, finished: i64, diagnostics: &str) -> Value {
    let id = format!("application_1795250000000_{seq:04}");
    json!({
        "id": id, "user": "flink", "name": "clicks-pipeline", "queue": "streaming", "state": state,
        "finalStatus": final_status, "progress": if finished > 0 { 100.0 } else { 0.0 },
        "trackingUI": if finished > 0 { "History" } else { "ApplicationMaster" },
        "trackingUrl": format!("http://rm:8088/proxy/{id}/"), "diagnostics": diagnostics,
        "clusterId": 1795250000000_i64, "applicationType": "Apache Flink", "applicationTags": "team-ads",
        "startedTime": 1795260101233_i64, "finishedTime": finished, "elapsedTime": 1000,
    })
}

const SAYS: &str = "flink-yarn/yarn-says-running";
const GONE: &str = "flink-yarn/app-not-running";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_behind_the_yarn_proxy_is_judged_and_an_ended_application_is_reported_and_relaunched_once() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let rm: SharedRm = Arc::new(Mutex::new(Rm { jm: fake.url().trim_end_matches('/').to_string(), ..Rm::default() }));
    rm.lock().unwrap().live.push(yarn_app(42, "RUNNING", "UNDEFINED", 0, ""));
    let url = start_rm(rm.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("relaunches");
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": [PACK],
        "targets": [{"name": "rm", "url": url, "labels": {"kind": "yarn-rm"}, "timeout": "2s"}],
        "commands": {"relaunch": {
            "argv": ["sh", "-c", "printf '%s\\n' \"$@\" '<end>' >> \"$0\"", rec, "{application}", "{app_id}", "{final_status}"],
            "placeholders": ["application", "app_id", "final_status"],
            "timeout": "10s",
        }},
        "packs": {"flink-yarn": {"every": "200ms", "params": {
            "applications": ["clicks-pipeline"], "relaunch_command": "relaunch",
            "tasks_failing_for": "600ms", "not_running_for": "400ms",
        }}},
        "shutdown_grace": "5s",
    });
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;

    // YARN says RUNNING; Flink, through the proxy, says a task failed.
    fake.tasks_failing(&jid, 1);
    let subject = "application_1795250000000_0042/clicks";
    let fired = record(d.wait_for("tasks failing behind YARN", |e| is_alert(e, "firing", SAYS, subject)).await);
    assert!(
        fired.summary.contains("is RUNNING but its job clicks runs only 1 of 2 tasks (1 failed)"),
        "{}",
        fired.summary
    );
    fake.recover(&jid);
    d.wait_for("resolved", |e| is_alert(e, "resolved", SAYS, subject)).await;

    // The application fails: gone from the live list, FINISHED/FAILED among the ended ones.
    {
        let mut rm = rm.lock().unwrap();
        rm.live.clear();
        let ended = chrono::Utc::now().timestamp_millis();
        rm.ended.push(yarn_app(42, "FINISHED", "FAILED", ended, "Flink job failed: Recovery is suppressed"));
    }
    let gone = record(d.wait_for("application ended", |e| is_alert(e, "firing", GONE, "clicks-pipeline")).await);
    assert!(
        gone.summary.contains("FINISHED on YARN less than a minute ago (final status FAILED): Flink job failed"),
        "{}",
        gone.summary
    );
    eventually("one relaunch", || invocations(&rec).len() == 1).await;
    assert_eq!(invocations(&rec)[0], ["clicks-pipeline", "application_1795250000000_0042", "FAILED"]);
    // Polls go on while it stays down: no second alert, no second relaunch (a relaunch is journalled when it is
    // dispatched, before its command runs).
    d.polls(10).await;
    let runs = d.journal().into_iter().filter(|e| e.action == "run").count();
    assert_eq!(runs, 1, "{:#?}", d.journal());
    assert_eq!(invocations(&rec).len(), 1);
    let firings = d.seen.iter().filter(|e| is_alert(e, "firing", GONE, "clicks-pipeline")).count();
    assert_eq!(firings, 1);
    // The ended ones were asked for with the type and a time bound.
    let asked = rm.lock().unwrap().queries.clone();
    assert!(
        asked
            .iter()
            .any(|q| q.starts_with("states=FINISHED,FAILED,KILLED&applicationTypes=Apache%20Flink&finishedTimeBegin=")),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|q| q == "states=NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING&applicationTypes=Apache%20Flink"),
        "{asked:?}"
    );

    // Resubmitted: a new application runs, the alert resolves.
    rm.lock().unwrap().live.push(yarn_app(43, "RUNNING", "UNDEFINED", 0, ""));
    d.wait_for("back", |e| is_alert(e, "resolved", GONE, "clicks-pipeline")).await;
    assert_eq!(invocations(&rec).len(), 1);
    assert!(
        !d.seen.iter().any(|e| is_alert(e, "firing", SAYS, "application_1795250000000_0042")),
        "the proxy of an ended application is not asked"
    );
    d.stop().await;
}
