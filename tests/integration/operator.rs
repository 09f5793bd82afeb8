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

type Patches = std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>;

/// A Kubernetes API server in miniature: the pack's lists (FlinkDeployments from `deployments`, nothing else), and
/// PATCHes of resources, recorded as (path, content type, body).
async fn kubernetes(deployments: serde_json::Value) -> (String, Patches) {
    use axum::http::{HeaderMap, Method, Uri};
    let patches: Patches = Default::default();
    let seen = patches.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: String| {
        let (seen, deployments) = (seen.clone(), deployments.clone());
        async move {
            if method == Method::PATCH {
                let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                seen.lock().unwrap().push((uri.path().to_string(), ct, body));
                return axum::Json(
                    json!({"kind": "FlinkDeployment", "metadata": {"resourceVersion": "9001", "generation": 4}}),
                );
            }
            if uri.path() == "/apis/flink.apache.org/v1beta1/flinkdeployments" {
                return axum::Json(deployments);
            }
            axum::Json(json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, patches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_restarts_a_failed_deployment_the_operators_way_exactly_once() {
    let fixture =
        concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/flink-operator/tests/fixtures/deployments-clicks-failed.json");
    let list: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let (url, patches) = kubernetes(list).await;
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": [concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/flink-operator")],
        "targets": [{"name": "k8s", "url": url, "timeout": "2s", "labels": {"kind": "kubernetes"}, "auth": {"bearer": "sa-token"}}],
        "dispatch": {"run_cooldown": "200ms"},
        "packs": {"flink-operator": {"every": "100ms", "params": {
            "restart_failed": true, "restart_failed_for": "300ms", "unhealthy_for": "300ms"}}},
        "shutdown_grace": "5s",
    });
    let mut d = Daemon::start(cfg).await;
    d.wait_for("the failed deployment is alerted", |e| {
        is_alert(e, "firing", "flink-operator/deployment-status", "flink/clicks")
    })
    .await;
    eventually("the patch was sent", || !patches.lock().unwrap().is_empty()).await;
    d.polls(30).await; // many times the run cooldown: the same nonce is never sent again
    let sent = patches.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0].0, "/apis/flink.apache.org/v1beta1/namespaces/flink/flinkdeployments/clicks");
    assert_eq!(sent[0].1, "application/merge-patch+json");
    assert_eq!(sent[0].2, json!({"spec": {"restartNonce": 5}}));
    let journal = d.journal();
    let p: Vec<_> = journal.iter().filter(|e| e.action == "patch").collect();
    assert_eq!(p.len(), 1, "{journal:#?}");
    assert_eq!(p[0].outcome, "ok");
    assert!(p[0].output.contains("resourceVersion=9001"), "{:?}", p[0].output);
    assert!(!journal.iter().any(|e| e.output.contains("sa-token") || e.details.to_string().contains("sa-token")));
    d.stop().await;
}
