//! Pushed events against the real `warden run` binary: `POST /api/events` with its token, size limit, content type
//! and shape checks; an event judged by an `events:` probe's rule that alerts; a retried id taken once.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

const TOKEN: &str = "s3cr3t-events-token";

/// A pack whose `events:` probe takes the operator's status updates; its rule alerts on each deployment that is
/// `FAILED` (kept in `state`, since each evaluation must list everything that is wrong now).
fn write_events_pack(dir: &Path) {
    let pdir = dir.join("plugins").join("deploys");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("pack.yaml"),
        "name: deploys\nversion: 0.1.0\nprobes:\n  - name: status\n    events: {kinds: [deployment-status], sources: [flink-operator]}\n    rules: [failed]\n",
    )
    .unwrap();
    std::fs::write(
        pdir.join("failed.rhai"),
        r#"
let e = obs.body;
if state.failed == () { state.failed = #{}; }
if e.data.state == "FAILED" { state.failed[e.subject] = `${e.subject} failed: ${e.data.error}`; }
else { state.failed.remove(e.subject); }
for s in state.failed.keys() {
    alert(#{ subject: s, severity: "critical", summary: state.failed[s], details: #{ target: obs.target } });
}
"#,
    )
    .unwrap();
}

struct Running {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    async fn post(&self, token: Option<&str>, content_type: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/api/events", self.base)).header("content-type", content_type);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.body(body).send().await.expect("the server answers");
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert!(!text.contains(TOKEN), "the token leaked into an answer: {text}");
        (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn event(&self, event: &Value) -> (u16, Value) {
        self.post(Some(TOKEN), "application/json", event.to_string()).await
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn start(dir: &Path, server: Value) -> Running {
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "prod", "url": "http://127.0.0.1:9"}],
        "server": server,
    });
    let path = write_config(dir, &cfg);
    let child = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["run", "-c"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("warden starts");
    let base = format!("http://{}", server["listen"].as_str().unwrap());
    let running = Running { child, base, http: reqwest::Client::new() };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = running.http.get(format!("{}/healthz", running.base)).send().await {
            if r.status() == 200 {
                return running;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "warden run did not serve /healthz");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alert_lines(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("state/alerts.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_events_are_checked_judged_by_rules_and_a_retry_is_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    write_events_pack(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let w = start(dir.path(), json!({"listen": listen, "token": TOKEN, "events": {"max_body": "1KiB"}})).await;
    let failed = json!({"id": "op-42", "source": "flink-operator", "kind": "deployment-status", "target": "prod",
                        "subject": "clicks", "data": {"state": "FAILED", "error": "OutOfMemoryError"}});

    // Refused: no token, a wrong token, not JSON by type, too large, not JSON, not an event, an unknown target.
    let (code, _) = w.post(None, "application/json", failed.to_string()).await;
    assert_eq!(code, 401);
    let (code, _) = w.post(Some("wrong"), "application/json", failed.to_string()).await;
    assert_eq!(code, 401);
    let (code, body) = w.post(Some(TOKEN), "text/plain", failed.to_string()).await;
    assert_eq!(code, 415, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Content-Type: application/json"), "{body}");
    let big = json!({"source": "ci", "kind": "x", "data": {"pad": "x".repeat(2000)}});
    let (code, body) = w.event(&big).await;
    assert_eq!(code, 413, "{body}");
    assert!(body["error"].as_str().unwrap().contains("server.events.max_body"), "{body}");
    let (code, body) = w.post(Some(TOKEN), "application/json", "{\"source\": \"ci\",\n \"kind\": }").await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("line 2 column"), "{body}");
    let (code, body) = w.event(&json!({"source": "ci"})).await;
    assert_eq!((code, body["error"].as_str().unwrap().contains("missing field `kind`")), (400, true), "{body}");
    let (code, body) = w.event(&json!({"source": "ci", "kind": "x", "target": "nope"})).await;
    assert_eq!(code, 422, "{body}");
    assert!(alert_lines(dir.path()).is_empty(), "nothing refused is judged");

    // Taken: judged by the pack's probe, and its rule alerts.
    let (code, body) = w.event(&failed).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body, json!({"accepted": true, "duplicate": false, "id": "op-42", "probes": ["deploys/status"]}));
    // The sender retries (it did not see the answer): taken once.
    let (code, body) = w.event(&failed).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body, json!({"accepted": true, "duplicate": true, "id": "op-42"}));

    let firing = |dir: &Path| {
        alert_lines(dir)
            .into_iter()
            .filter(|a| a["rule"] == "deploys/failed" && a["event"] == "firing")
            .collect::<Vec<_>>()
    };
    eventually("the rule's alert", || !firing(dir.path()).is_empty()).await;
    // An event that no probe takes is journalled, not judged.
    let (code, body) = w.event(&json!({"source": "ci", "kind": "deployed", "subject": "clicks"})).await;
    assert_eq!((code, &body["probes"]), (202, &json!([])), "{body}");
    // The deployment runs again: its alert resolves.
    let running = json!({"id": "op-43", "source": "flink-operator", "kind": "deployment-status", "target": "prod",
                         "subject": "clicks", "data": {"state": "RUNNING"}});
    assert_eq!(w.event(&running).await.0, 202);
    let resolved = |dir: &Path| alert_lines(dir).into_iter().any(|a| a["event"] == "resolved");
    eventually("the alert resolves", || resolved(dir.path())).await;

    let alerts = firing(dir.path());
    assert_eq!(alerts.len(), 1, "one alert for one event sent twice: {alerts:#?}");
    let a = &alerts[0];
    assert_eq!((a["subject"].as_str(), a["target"].as_str()), (Some("clicks"), Some("prod")), "{a}");
    assert_eq!(a["summary"], "clicks failed: OutOfMemoryError");

    // The journal has what arrived (the duplicate once), without the event's data.
    let store = warden::store::Store::open(&dir.path().join("state")).unwrap();
    let events: Vec<_> = store.entries(None).unwrap().into_iter().filter(|e| e.action == "event").collect();
    let details: Vec<String> = events.iter().map(|e| format!("{} {} {}", e.detail, e.subject, e.outcome)).collect();
    assert_eq!(
        details,
        [
            "flink-operator/deployment-status clicks judged by deploys/status",
            "ci/deployed clicks no probe takes it",
            "flink-operator/deployment-status clicks judged by deploys/status",
        ],
    );
    assert!(events.iter().all(|e| !e.details.to_string().contains("OutOfMemoryError")), "no data in the journal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_server_token_pushed_events_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_events_pack(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let w = start(dir.path(), json!({"listen": listen})).await;
    let (code, body) = w.post(None, "application/json", json!({"source": "ci", "kind": "x"}).to_string()).await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("server.token"), "{body}");
}

/// A target's `file:` bearer token rotated the kubelet's way (a new directory, the `..data` symlink swapped): the
/// daemon notices with a `stat`, reloads, and the next polls carry the new token.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_used_without_a_restart() {
    use std::sync::{Arc, Mutex};
    use warden::runtime::{self, ReloadSource, RunOptions};

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/jobs/overview",
        axum::routing::get(move |h: axum::http::HeaderMap| {
            let log = log.clone();
            async move {
                let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                log.lock().unwrap().push(auth);
                axum::Json(json!({"jobs": []}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let sa = dir.path().join("serviceaccount");
    std::fs::create_dir(&sa).unwrap();
    let rotate = |n: u32, token: &str| {
        std::fs::create_dir(sa.join(format!("..2026_{n}"))).unwrap();
        std::fs::write(sa.join(format!("..2026_{n}/token")), format!("{token}\n")).unwrap();
        std::os::unix::fs::symlink(format!("..2026_{n}"), sa.join("..data_tmp")).unwrap();
        std::fs::rename(sa.join("..data_tmp"), sa.join("..data")).unwrap();
    };
    rotate(1, "token-one");
    std::os::unix::fs::symlink("..data/token", sa.join("token")).unwrap();
    write_pack(dir.path(), "k8s", &[("r", "1;")]);
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "api", "url": format!("http://{addr}"), "auth": {"bearer": "file:serviceaccount/token"}}],
        "reload": {"watch": false, "poll_interval": "200ms"}, // no file watching: the secret check alone
        "server": {"enabled": false},
    });
    let config = write_config(dir.path(), &cfg);
    let (plan, engine) = warden::plan::load(&config, None).unwrap_or_else(|d| panic!("{d}"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions { reload: Some(ReloadSource { config }), ..Default::default() };
    let task = tokio::spawn(runtime::run(plan, engine, opts, async move {
        let _ = rx.await;
    }));
    let has = |t: &str| seen.lock().unwrap().iter().any(|a| a == &format!("Bearer {t}"));
    eventually("a poll with the first token", || has("token-one")).await;
    rotate(2, "token-two");
    eventually("a poll with the rotated token", || has("token-two")).await;
    let n = seen.lock().unwrap().len();
    eventually("two more polls", || seen.lock().unwrap().len() >= n + 2).await;
    let after: Vec<String> = seen.lock().unwrap()[n..].to_vec();
    assert!(after.iter().all(|a| a == "Bearer token-two"), "the old token is not sent any more: {after:?}");
    let _ = tx.send(());
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap().unwrap();
}
