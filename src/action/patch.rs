//! The `patch` action: a JSON merge patch (RFC 7396) sent with `PATCH` to a path on the rule's target, with the
//! target's auth and TLS. This is how the Flink Kubernetes Operator is asked to act: a new `spec.restartNonce`
//! restarts a `FlinkDeployment`/`FlinkSessionJob`, a new `spec.job.savepointTriggerNonce` takes a savepoint. The
//! operator does the work; Warden only changes the resource, once per nonce (the dispatcher's key holds the path
//! and the body), and journals the answer.

use crate::fetch::{HttpRequest, TargetClient};

/// The content type of a JSON merge patch (what the Kubernetes API expects for `spec` changes of custom resources).
pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// Largest answer read back (the patched resource).
const MAX_ANSWER: usize = 4 << 20;

/// How a patch ended, for the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOutcome {
    /// `ok`, or `failed: <why>`.
    pub outcome: String,
    /// What the target answered, in one line (the resource's `resourceVersion` and `generation`, or its error).
    pub output: String,
}

/// The request that sends `body` as a merge patch to `path`.
pub fn request(path: &str, body: &serde_json::Value) -> HttpRequest {
    HttpRequest {
        method: reqwest::Method::PATCH,
        path: path.to_string(),
        headers: vec![("Content-Type".into(), MERGE_PATCH.into())],
        body: Some(body.clone()),
        max_body: MAX_ANSWER,
    }
}

/// Sends the patch and says how it ended. A Kubernetes `Status` answer (403 Forbidden, 404, 409 Conflict, 422
/// Invalid) is reported with its `reason` and `message`, which say what RBAC rule or field is missing.
pub async fn send(client: &TargetClient, path: &str, body: &serde_json::Value) -> PatchOutcome {
    let (status, answer, error) = client.send(&request(path, body)).await;
    match error {
        None => {
            let meta = answer.as_ref().and_then(|a| a.get("metadata"));
            let field = |k: &str| meta.and_then(|m| m.get(k)).map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            PatchOutcome {
                outcome: "ok".into(),
                output: format!(
                    "HTTP {} resourceVersion={} generation={}",
                    status.unwrap_or(0),
                    field("resourceVersion").trim_matches('"'),
                    field("generation")
                ),
            }
        }
        Some(e) => {
            let k8s = answer.as_ref().filter(|a| a.get("kind").and_then(|k| k.as_str()) == Some("Status"));
            let why = match k8s {
                Some(s) => format!(
                    "HTTP {} {}: {}",
                    status.unwrap_or(0),
                    s.get("reason").and_then(|r| r.as_str()).unwrap_or(""),
                    s.get("message").and_then(|m| m.as_str()).unwrap_or("")
                ),
                None => e.message.clone(),
            };
            PatchOutcome { outcome: format!("failed: {why}"), output: e.message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::config::{AuthConfig, TargetConfig};
    use crate::fetch::ClientPool;
    use axum::http::HeaderMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    type Seen = Arc<Mutex<Vec<(String, String, String, String)>>>;

    /// A Kubernetes API server in miniature: answers a PATCH of the deployment with the patched resource and any
    /// other path with a 403 `Status`, recording (path, content type, authorization, body).
    async fn api() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: String| {
            let s = s.clone();
            async move {
                let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                s.lock().unwrap().push((uri.path().to_string(), h("content-type"), h("authorization"), body));
                if uri.path().ends_with("/flinkdeployments/clicks") {
                    let ok = serde_json::json!({"apiVersion": "flink.apache.org/v1beta1", "kind": "FlinkDeployment",
                        "metadata": {"name": "clicks", "resourceVersion": "4711", "generation": 8}});
                    (axum::http::StatusCode::OK, axum::Json(ok))
                } else {
                    let denied = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "Forbidden", "code": 403, "message": "flinksessionjobs.flink.apache.org \"x\" is forbidden: User \"system:serviceaccount:monitoring:warden\" cannot patch resource \"flinksessionjobs\""});
                    (axum::http::StatusCode::FORBIDDEN, axum::Json(denied))
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), seen)
    }

    fn client(url: &str) -> TargetClient {
        let cfg = TargetConfig {
            name: "k8s".into(),
            url: url.into(),
            labels: Default::default(),
            auth: Some(AuthConfig { bearer: Some(Secret::new("sa-token")), basic: None }),
            headers: Default::default(),
            ca_file: None,
            insecure_skip_verify: false,
            allow_cross_origin_redirects: false,
            timeout: Duration::from_secs(5),
        };
        TargetClient::new(&cfg, &mut ClientPool::default()).unwrap()
    }

    #[tokio::test]
    async fn a_merge_patch_goes_to_the_resource_with_the_targets_auth() {
        let (url, seen) = api().await;
        let path = "/apis/flink.apache.org/v1beta1/namespaces/flink/flinkdeployments/clicks";
        let body = serde_json::json!({"spec": {"restartNonce": 1767225600}});
        let out = send(&client(&url), path, &body).await;
        assert_eq!(out.outcome, "ok");
        assert_eq!(out.output, "HTTP 200 resourceVersion=4711 generation=8");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "one request, no retry: {seen:?}");
        let (p, ct, auth, sent) = &seen[0];
        assert_eq!(p, path);
        assert_eq!(ct, MERGE_PATCH);
        assert_eq!(auth, "Bearer sa-token");
        assert_eq!(serde_json::from_str::<serde_json::Value>(sent).unwrap(), body);
    }

    #[tokio::test]
    async fn a_forbidden_patch_says_what_rbac_is_missing() {
        let (url, _) = api().await;
        let path = "/apis/flink.apache.org/v1beta1/namespaces/flink/flinksessionjobs/x";
        let out = send(&client(&url), path, &serde_json::json!({"spec": {"restartNonce": 2}})).await;
        assert!(out.outcome.starts_with("failed: HTTP 403 Forbidden: "), "{out:?}");
        assert!(out.outcome.contains("cannot patch resource \"flinksessionjobs\""), "{out:?}");
        assert!(!out.outcome.contains("sa-token") && !out.output.contains("sa-token"), "{out:?}");
    }
}
