//! Paginated list probes: with `request.paginate: k8s` a probe of a Kubernetes API list follows
//! `metadata.continue` and hands its rules one observation whose `items` are those of every page, in order, and
//! whose `metadata` is the last page's. Built on [`crate::fetch`] (each page is one ordinary request, with the
//! target's auth, timeout and body cap).

use std::sync::Arc;

use serde::Deserialize;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use crate::fetch::{HttpRequest, TargetClient};
use crate::model::{doc, Doc, DocValue, FetchError, FetchErrorKind, Observation};

/// How a probe's answer is paged (`request.paginate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Paginate {
    /// The Kubernetes API's list paging: while the answer's `metadata.continue` is not empty, ask again with
    /// `continue=<token>` added to the query, and merge the `items`.
    #[serde(rename = "k8s")]
    K8s,
}

/// The most pages one poll follows; a list with more is an error of kind `too_large` (add or raise `limit=` in
/// the path's query, or narrow it with a `labelSelector`).
pub const MAX_PAGES: usize = 100;

/// Characters percent-encoded in a `continue` token put into a query.
const QUERY_VALUE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Sends `req` for `probe`, following pages as `paginate` says (`None`: one request). The joined document is
/// built once, after the last page.
pub async fn observe(client: &TargetClient, probe: &str, req: &HttpRequest, paginate: Option<Paginate>) -> Observation {
    let mut obs = client.observe(probe, req).await;
    let Some(Paginate::K8s) = paginate else { return obs };
    let mut pages: Vec<Arc<Doc>> = Vec::new();
    for page in 2.. {
        if obs.error.is_some() {
            return obs;
        }
        let Some(body) = obs.body.clone() else { return obs };
        let token = body
            .get("metadata")
            .and_then(|m| doc::field(m, "continue"))
            .and_then(|c| c.as_str())
            .filter(|c| !c.is_empty());
        let Some(token) = token else { break };
        if page > MAX_PAGES {
            obs.body = None;
            obs.error = Some(FetchError {
                kind: FetchErrorKind::TooLarge,
                message: format!(
                    "target `{}` GET {}: the list has more than {MAX_PAGES} pages (`paginate: k8s`); raise `limit=` in \
                     the path's query or narrow it with a `labelSelector`",
                    client.name, req.path
                ),
            });
            return obs;
        }
        let sep = if req.path.contains('?') { '&' } else { '?' };
        let token = percent_encoding::utf8_percent_encode(token, QUERY_VALUE);
        let next_req = HttpRequest { path: format!("{}{sep}continue={token}", req.path), ..req.clone() };
        pages.push(body);
        let next = client.observe(probe, &next_req).await;
        let latency = obs.latency + next.latency;
        if let Some(e) = &next.error {
            let gone = next.status == Some(410);
            let why =
                if gone { " (410 Gone: the continue token expired; the next poll lists from the start)" } else { "" };
            return Observation {
                error: Some(FetchError { kind: e.kind, message: format!("page {page}: {}{why}", e.message) }),
                latency,
                ..next
            };
        }
        obs = Observation { latency, ..next };
    }
    if let (false, Some(last)) = (pages.is_empty(), obs.body.clone()) {
        pages.push(last);
        obs.body = Some(Arc::new(join(&pages)));
    }
    obs
}

/// The pages as one document: the first page with the `items` of every page, in order, and the last page's
/// `metadata`.
fn join(pages: &[Arc<Doc>]) -> Doc {
    let (Some(first), Some(last)) = (pages.first(), pages.last()) else { return Doc::from_value(DocValue::new()) };
    let Some(o) = first.root().as_object() else { return (**first).clone() };
    let metadata = last.get("metadata");
    let mut text = Vec::with_capacity(1024);
    let write = |text: &mut Vec<u8>, v: &DocValue| {
        // A document's value is always valid JSON of bounded depth: writing it into memory cannot fail.
        let _ = serde_json::to_writer(&mut *text, v);
    };
    let key = |text: &mut Vec<u8>, k: &str| {
        let _ = serde_json::to_writer(&mut *text, k);
        text.push(b':');
    };
    text.push(b'{');
    let mut wrote_metadata = false;
    for (i, (k, v)) in o.iter().enumerate() {
        if i > 0 {
            text.push(b',');
        }
        key(&mut text, k);
        if k == "items" && v.is_array() {
            text.push(b'[');
            let items = pages.iter().filter_map(|p| p.get("items")?.as_array()).flat_map(|a| a.iter());
            for (j, item) in items.enumerate() {
                if j > 0 {
                    text.push(b',');
                }
                write(&mut text, item);
            }
            text.push(b']');
        } else if let (true, Some(m)) = (k == "metadata", metadata) {
            write(&mut text, m);
            wrote_metadata = true;
        } else {
            write(&mut text, v);
        }
    }
    if let (false, Some(m)) = (wrote_metadata, metadata) {
        if !o.is_empty() {
            text.push(b',');
        }
        key(&mut text, "metadata");
        write(&mut text, m);
    }
    text.push(b'}');
    Doc::parse(&text).unwrap_or_else(|_| (**last).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn client_for(pages: Vec<(&'static str, u16, serde_json::Value)>) -> TargetClient {
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let pages = pages.clone();
            async move {
                let q = uri.query().unwrap_or("").to_string();
                let (_, code, body) = pages.into_iter().find(|(want, _, _)| *want == q).expect("a page for the query");
                (axum::http::StatusCode::from_u16(code).unwrap(), axum::Json(body))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cfg = format!("targets:\n  - {{name: k8s, url: \"http://{addr}\"}}\n");
        let loaded = crate::config::load_str(std::path::Path::new("w.yaml"), &cfg).unwrap();
        TargetClient::new(&loaded.config.targets[0], &mut crate::fetch::ClientPool::default()).unwrap()
    }

    const PATH: &str =
        "/apis/flink.apache.org/v1beta1/namespaces/prod/flinkdeployments?labelSelector=team%3Dads&limit=2";

    #[tokio::test]
    async fn pages_are_followed_and_their_items_merged() {
        let c = client_for(vec![
            ("labelSelector=team%3Dads&limit=2", 200, json!({"kind": "FlinkDeploymentList", "items": [{"n": 1}, {"n": 2}], "metadata": {"continue": "eyJ2Ijo+/=", "resourceVersion": "10"}})),
            ("labelSelector=team%3Dads&limit=2&continue=eyJ2Ijo%2B%2F%3D", 200, json!({"items": [{"n": 3}, {"n": 4}], "metadata": {"continue": "p3", "resourceVersion": "10"}})),
            ("labelSelector=team%3Dads&limit=2&continue=p3", 200, json!({"items": [{"n": 5}], "metadata": {"resourceVersion": "10"}})),
        ])
        .await;
        let req = HttpRequest::get(PATH, 1 << 20);
        let obs = observe(&c, "p", &req, Some(Paginate::K8s)).await;
        assert_eq!(obs.error, None);
        let joined = obs.body.unwrap();
        // The first page's keys in their order, its `items` those of every page, the last page's `metadata`.
        assert_eq!(
            joined.to_text(),
            r#"{"items":[{"n":1},{"n":2},{"n":3},{"n":4},{"n":5}],"kind":"FlinkDeploymentList","metadata":{"resourceVersion":"10"}}"#
        );
        let body = joined.to_json();
        assert_eq!(body["items"], json!([{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}]));
        assert_eq!(body["kind"], "FlinkDeploymentList");
        assert_eq!(body["metadata"], json!({"resourceVersion": "10"}));
        // Without `paginate` only the first page.
        let one = observe(&c, "p", &req, None).await;
        assert_eq!(one.body.unwrap().to_json()["items"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_expired_continue_token_is_an_error_of_the_poll() {
        let c = client_for(vec![
            ("labelSelector=team%3Dads&limit=2", 200, json!({"items": [{"n": 1}], "metadata": {"continue": "old"}})),
            (
                "labelSelector=team%3Dads&limit=2&continue=old",
                410,
                json!({"kind": "Status", "reason": "Expired", "code": 410}),
            ),
        ])
        .await;
        let obs = observe(&c, "p", &HttpRequest::get(PATH, 1 << 20), Some(Paginate::K8s)).await;
        let e = obs.error.expect("an error");
        assert_eq!(e.kind, FetchErrorKind::HttpStatus);
        assert!(e.message.starts_with("page 2: ") && e.message.contains("410 Gone: the continue token expired"), "{e}");
        assert_eq!(obs.status, Some(410));
    }

    #[tokio::test]
    async fn a_list_of_too_many_pages_is_too_large() {
        let c = client_for(vec![
            ("labelSelector=team%3Dads&limit=2", 200, json!({"items": [], "metadata": {"continue": "again"}})),
            (
                "labelSelector=team%3Dads&limit=2&continue=again",
                200,
                json!({"items": [], "metadata": {"continue": "again"}}),
            ),
        ])
        .await;
        let obs = observe(&c, "p", &HttpRequest::get(PATH, 1 << 20), Some(Paginate::K8s)).await;
        assert_eq!(obs.error.map(|e| e.kind), Some(FetchErrorKind::TooLarge));
        assert_eq!(obs.body, None);
    }
}
