//! HTTP polling: one shared client per TLS setting (so connections are reused), auth, headers, timeouts and a
//! body size cap. Every outcome becomes an [`Observation`]; nothing here returns an error to the caller.
//!
//! Credentials stay with their target:
//! - a request path may not leave the target's base path: percent-decoded (repeatedly), with backslashes read as
//!   slashes, a `.` or `..` segment, a scheme or an authority is refused ([`contained_path`]); the final URL is
//!   checked again against the base;
//! - redirects are followed by hand (at most 5): within the target's origin with its headers; to another origin
//!   only if the target has `allow_cross_origin_redirects`, and then without `Authorization`, cookies or any
//!   configured header.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use crate::config::TargetConfig;
use crate::model::{Doc, FetchError, FetchErrorKind, Observation};

/// How long an idle connection to a target is kept for the next request.
const IDLE_CONNECTION_KEPT: Duration = Duration::from_secs(2);

/// Builds and shares `reqwest` clients: targets with the same TLS settings share one connection pool.
#[derive(Default)]
pub struct ClientPool {
    clients: HashMap<(Option<PathBuf>, bool), reqwest::Client>,
}

/// A problem building a target's HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("target `{target}`: {message}")]
pub struct ClientError {
    /// The target's name.
    pub target: String,
    /// What went wrong.
    pub message: String,
}

impl ClientPool {
    fn client(&mut self, ca: Option<&PathBuf>, insecure: bool) -> Result<reqwest::Client, String> {
        let key = (ca.cloned(), insecure);
        if let Some(c) = self.clients.get(&key) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            // An idle connection holds tens of KB (hyper's read buffer grows to the size of the answers it read):
            // kept for the follow-up requests of the rules of one poll, not across the seconds between polls, where
            // a thousand targets would hold tens of MB. Probes polled more often than this keep theirs.
            .pool_idle_timeout(IDLE_CONNECTION_KEPT)
            .pool_max_idle_per_host(1)
            // Redirects are followed by hand in `send`, to keep credentials on their origin.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| format!("cannot read CA file `{}`: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("CA file `{}` is not PEM: {e}", ca.display()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let c = b.build().map_err(|e| format!("cannot build HTTP client: {e}"))?;
        self.clients.insert(key, c.clone());
        Ok(c)
    }
}

/// Everything needed to send requests to one target.
#[derive(Clone)]
pub struct TargetClient {
    /// The target's name.
    pub name: String,
    /// Base URL without a trailing slash.
    pub base: String,
    /// The target's labels.
    pub labels: std::collections::BTreeMap<String, String>,
    client: reqwest::Client,
    headers: HeaderMap,
    timeout: Duration,
    base_url: reqwest::Url,
    cross_origin: bool,
    /// The URLs of the paths asked for lately (checked and parsed once: a probe asks for the same path at every
    /// poll).
    urls: Arc<parking_lot::Mutex<HashMap<String, reqwest::Url>>>,
}

/// How many checked URLs a target keeps (a fan-out probe asks for one path per job); the cache starts over when full.
const URLS_KEPT: usize = 256;

impl std::fmt::Debug for TargetClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetClient").field("name", &self.name).field("base", &self.base).finish_non_exhaustive()
    }
}

/// One HTTP request, relative to a target.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method, e.g. `GET`.
    pub method: reqwest::Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<serde_json::Value>,
    /// Largest body accepted.
    pub max_body: usize,
}

impl HttpRequest {
    /// A GET of `path` with a body cap.
    pub fn get(path: impl Into<String>, max_body: usize) -> Self {
        Self { method: reqwest::Method::GET, path: path.into(), headers: vec![], body: None, max_body }
    }
}

impl TargetClient {
    /// Prepares a target: its client from the pool, its auth and header values.
    pub fn new(cfg: &TargetConfig, pool: &mut ClientPool) -> Result<Self, ClientError> {
        let err = |message: String| ClientError { target: cfg.name.clone(), message };
        if cfg.insecure_skip_verify {
            tracing::warn!(target_name = %cfg.name, "TLS certificate verification is OFF for this target");
        }
        let client = pool.client(cfg.ca_file.as_ref(), cfg.insecure_skip_verify).map_err(err)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| err(format!("invalid header name `{k}`")))?;
            let mut val =
                HeaderValue::from_str(v.expose()).map_err(|_| err(format!("invalid value for header `{k}`")))?;
            val.set_sensitive(true);
            headers.insert(name, val);
        }
        if let Some(auth) = &cfg.auth {
            let raw = match (&auth.bearer, &auth.basic) {
                (Some(t), _) => format!("Bearer {}", t.expose()),
                (None, Some(b)) => {
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD
                            .encode(format!("{}:{}", b.username, b.password.expose()).as_bytes())
                    )
                }
                (None, None) => return Err(err("`auth` needs `bearer` or `basic`".into())),
            };
            let mut val =
                HeaderValue::from_str(&raw).map_err(|_| err("credentials contain invalid characters".into()))?;
            val.set_sensitive(true);
            headers.insert(AUTHORIZATION, val);
        }
        let base = cfg.url.trim_end_matches('/').to_string();
        let base_url = reqwest::Url::parse(&base).map_err(|e| err(format!("`url` `{}` is not a URL: {e}", cfg.url)))?;
        Ok(Self {
            name: cfg.name.clone(),
            base,
            base_url,
            cross_origin: cfg.allow_cross_origin_redirects,
            labels: cfg.labels.clone(),
            client,
            headers,
            timeout: cfg.timeout,
            urls: Arc::default(),
        })
    }

    /// Sends `req` and turns whatever happens into an observation for `probe`.
    pub async fn observe(&self, probe: &str, req: &HttpRequest) -> Observation {
        let time = Utc::now();
        let start = Instant::now();
        let (status, body, error) = self.send_doc(req).await;
        Observation {
            probe: probe.to_string(),
            target: self.name.clone(),
            job: None,
            time,
            status,
            latency: start.elapsed(),
            body: body.map(Arc::new),
            error,
        }
    }

    /// Uploads the file at `path` as multipart part `part` to `path_on_target`; returns the JSON answer, or the
    /// status (if any) and a message.
    pub async fn upload(
        &self,
        file: &std::path::Path,
        path_on_target: &str,
        part: &str,
    ) -> Result<serde_json::Value, (Option<u16>, String)> {
        let bytes =
            tokio::fs::read(file).await.map_err(|e| (None, format!("cannot read `{}`: {e}", file.display())))?;
        let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "job.jar".into());
        let file_part = reqwest::multipart::Part::bytes(bytes)
            .file_name(name)
            .mime_str("application/x-java-archive")
            .map_err(|e| (None, e.to_string()))?;
        let form = reqwest::multipart::Form::new().part(part.to_string(), file_part);
        let url = format!("{}{}", self.base, path_on_target);
        let resp = self
            .client
            .post(&url)
            .headers(self.headers.clone())
            .timeout(self.timeout.max(Duration::from_secs(60)))
            .multipart(form)
            .send()
            .await
            .map_err(|e| (None, describe(&e)))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| (Some(status), describe(&e)))?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            let first = v.pointer("/errors/0").and_then(|e| e.as_str()).and_then(|s| s.lines().next()).unwrap_or("");
            Err((Some(status), format!("HTTP {status}: {first}")))
        }
    }

    /// Sends `req`; returns the status, the JSON body if any, and the error if the answer is not usable.
    pub async fn send(&self, req: &HttpRequest) -> (Option<u16>, Option<serde_json::Value>, Option<FetchError>) {
        match self.exchange(req).await {
            Ok(answer) => answer.judge(serde_json::from_slice::<serde_json::Value>(&answer.body), |v| {
                v.get("errors")?.get(0)?.as_str().map(|s| s.lines().next().unwrap_or("").to_string())
            }),
            Err((status, error)) => (status, None, Some(error)),
        }
    }

    /// [`TargetClient::send`] with the body parsed into a [`Doc`] (what polls and follow-ups give rules).
    pub async fn send_doc(&self, req: &HttpRequest) -> (Option<u16>, Option<Doc>, Option<FetchError>) {
        use sonic_rs::{JsonContainerTrait, JsonValueTrait};
        match self.exchange(req).await {
            Ok(answer) => answer.judge(Doc::parse(&answer.body), |d| {
                let first = d.get("errors")?.as_array()?.first()?.as_str()?;
                Some(first.lines().next().unwrap_or("").to_string())
            }),
            Err((status, error)) => (status, None, Some(error)),
        }
    }

    /// Sends `req` and reads the whole body (within `max_body`), or says why not (with the status, if any).
    async fn exchange(&self, req: &HttpRequest) -> Result<Answer, (Option<u16>, FetchError)> {
        let where_ = format!("target `{}` {} {}", self.name, req.method, req.path);
        let fail = |kind, message: String| Err((None, FetchError { kind, message }));
        let mut url = match self.url_of(&req.path) {
            Ok(u) => u,
            Err(why) => return fail(FetchErrorKind::Refused, format!("{where_}: {why}")),
        };
        let mut same_origin = true;
        let mut hops = 0;
        let resp = loop {
            let mut rb = self.client.request(req.method.clone(), url.clone()).timeout(self.timeout);
            if same_origin {
                rb = rb.headers(self.headers.clone());
                for (k, v) in &req.headers {
                    rb = rb.header(k, v);
                }
            }
            if let Some(b) = &req.body {
                rb = rb.json(b);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => return fail(classify(&e), format!("{where_}: {}", describe(&e))),
            };
            if !resp.status().is_redirection() {
                break resp;
            }
            let Some(next) = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
            else {
                break resp; // a 3xx without a usable Location: judged as the status it is
            };
            hops += 1;
            if hops > 5 {
                return fail(FetchErrorKind::HttpStatus, format!("{where_}: more than 5 redirects"));
            }
            if next.origin() != self.base_url.origin() {
                if !self.cross_origin {
                    return fail(
                        FetchErrorKind::Refused,
                        format!(
                            "{where_}: redirected to another origin ({}); not followed (set \
                             `allow_cross_origin_redirects: true` on the target to follow it without credentials)",
                            next.origin().ascii_serialization()
                        ),
                    );
                }
                same_origin = false;
            }
            url = next;
        };
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        if let Some(len) = resp.content_length() {
            if len as usize > req.max_body {
                return Err((
                    Some(status),
                    FetchError {
                        kind: FetchErrorKind::TooLarge,
                        message: format!("{where_}: body of {len} bytes exceeds the limit of {} bytes", req.max_body),
                    },
                ));
            }
        }
        // One allocation of the announced size (checked against the cap above) instead of a doubling series: each
        // large allocation makes glibc's malloc sweep its free lists of small chunks.
        let announced = resp.content_length().map_or(0, |l| usize::try_from(l).unwrap_or(0)).min(req.max_body);
        let mut buf = Vec::with_capacity(announced);
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if buf.len() + c.len() > req.max_body {
                        return Err((
                            Some(status),
                            FetchError {
                                kind: FetchErrorKind::TooLarge,
                                message: format!("{where_}: body exceeds the limit of {} bytes", req.max_body),
                            },
                        ));
                    }
                    buf.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err((
                        Some(status),
                        FetchError { kind: classify(&e), message: format!("{where_}: {}", describe(&e)) },
                    ))
                }
            }
        }
        Ok(Answer { where_, status, content_type, body: buf })
    }
}

/// A whole answer, read but not parsed.
struct Answer {
    /// `target `…` METHOD path`, for messages.
    where_: String,
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    /// The status, the parsed body and the error of an answer: a 2xx whose body does not parse is `not_json`; any
    /// other status is `http_status` (`leader_election` for Flink's 503 during a JobManager fail-over), with the
    /// first of Flink's `errors` (found by `first_error`) or the start of the body.
    fn judge<T, E: std::fmt::Display>(
        &self,
        parsed: Result<T, E>,
        first_error: impl Fn(&T) -> Option<String>,
    ) -> (Option<u16>, Option<T>, Option<FetchError>) {
        let (where_, status, content_type, buf) = (&self.where_, self.status, &self.content_type, &self.body);
        let ok = (200..300).contains(&status);
        match (ok, parsed) {
            (true, Ok(v)) => (Some(status), Some(v), None),
            (true, Err(e)) => (
                Some(status),
                None,
                Some(FetchError {
                    kind: FetchErrorKind::NotJson,
                    message: format!(
                        "{where_}: answer is not JSON ({}; content-type `{content_type}`): {}",
                        e,
                        snippet(buf)
                    ),
                }),
            ),
            (false, parsed) => {
                let first = parsed.as_ref().ok().and_then(&first_error);
                let leader = status == 503 && first.as_deref().is_some_and(|s| s.contains("leader election"));
                let kind = if leader { FetchErrorKind::LeaderElection } else { FetchErrorKind::HttpStatus };
                let detail = first.unwrap_or_else(|| snippet(buf));
                let message = if leader {
                    format!("{where_}: HTTP 503, JobManager leader election in progress: {detail}")
                } else {
                    format!("{where_}: HTTP {status}: {detail}")
                };
                (Some(status), parsed.ok(), Some(FetchError { kind, message }))
            }
        }
    }
}

impl TargetClient {
    /// The URL of `path` on this target, or why it is refused: `path` must stay under the target's base path.
    pub fn url_of(&self, path: &str) -> Result<reqwest::Url, String> {
        if let Some(url) = self.urls.lock().get(path) {
            return Ok(url.clone());
        }
        let url = self.check_url(path)?;
        let mut urls = self.urls.lock();
        if urls.len() >= URLS_KEPT {
            urls.clear();
        }
        urls.insert(path.to_string(), url.clone());
        Ok(url)
    }

    fn check_url(&self, path: &str) -> Result<reqwest::Url, String> {
        let path = contained_path(path)?;
        let url = reqwest::Url::parse(&format!("{}{}", self.base, path))
            .map_err(|e| format!("`{path}` does not make a URL with the target's base: {e}"))?;
        let base_path = self.base_url.path().trim_end_matches('/');
        if url.origin() != self.base_url.origin() || !url.path().starts_with(base_path) {
            return Err(format!("`{path}` leaves the target's base URL"));
        }
        Ok(url)
    }
}

/// Checks that a request path stays under the base it is appended to: it starts with `/`, and neither it nor any
/// of its percent-decodings (repeated until nothing changes) holds a `.` or `..` segment (backslashes count as
/// slashes), a scheme (`://`) or an authority (`//` at the start). Returns the path unchanged when it is safe.
pub fn contained_path(path: &str) -> Result<&str, String> {
    let refuse = |why: &str| Err(format!("refused path `{}`: {why}", path.chars().take(200).collect::<String>()));
    if !path.starts_with('/') {
        return refuse("a path must start with `/`");
    }
    let (only_path, _query) = path.split_once('?').unwrap_or((path, ""));
    let mut text = only_path.to_string();
    for _ in 0..4 {
        let unified = text.replace('\\', "/");
        if unified.starts_with("//") || unified.contains("://") {
            return refuse("it names another host");
        }
        if unified.split('/').any(|seg| seg == "." || seg == "..") {
            return refuse("`.` and `..` segments could leave the target's base path");
        }
        let decoded = percent_encoding::percent_decode_str(&unified).decode_utf8_lossy().into_owned();
        if decoded == text {
            return Ok(path);
        }
        text = decoded;
    }
    refuse("it is encoded too many times over")
}

fn classify(e: &reqwest::Error) -> FetchErrorKind {
    if e.is_timeout() {
        FetchErrorKind::Timeout
    } else {
        FetchErrorKind::Connect
    }
}

/// A reqwest error without its URL (which could carry credentials), with its causes.
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    if e.is_timeout() {
        return "no answer before the timeout".into();
    }
    let mut parts = vec![];
    let mut src: Option<&dyn Error> = e.source();
    while let Some(s) = src {
        parts.push(s.to_string());
        src = s.source();
    }
    if parts.is_empty() {
        parts.push(if e.is_connect() { "cannot connect".into() } else { "request failed".into() });
    }
    parts.dedup();
    parts.join(": ")
}

/// The start of a body, printable, for messages.
fn snippet(buf: &[u8]) -> String {
    let s = String::from_utf8_lossy(&buf[..buf.len().min(120)]);
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if buf.len() > 120 {
        format!("`{}…`", s.trim())
    } else {
        format!("`{}`", s.trim())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::{HeaderMap as AxHeaders, StatusCode, Uri};
    use axum::response::IntoResponse;

    use super::*;
    use crate::config::Secret;

    type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

    /// A server that records every request (path and headers) and answers `/go` with a redirect to `to`.
    async fn server(to: Option<String>) -> (String, Seen) {
        let seen: Seen = Arc::new(Mutex::new(vec![]));
        let s2 = seen.clone();
        let app = axum::Router::new().fallback(move |uri: Uri, h: AxHeaders| {
            let seen = s2.clone();
            let to = to.clone();
            async move {
                let headers = h.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
                seen.lock().unwrap().push((uri.path().to_string(), headers));
                match (uri.path(), to) {
                    ("/base/go", Some(to)) => (StatusCode::FOUND, [("location", to)], "").into_response(),
                    _ => (StatusCode::OK, [("content-type", "application/json")], "{\"ok\":true}").into_response(),
                }
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, seen)
    }

    fn target(url: &str, cross: bool) -> TargetClient {
        let cfg = TargetConfig {
            name: "jm".into(),
            url: format!("{url}/base/"),
            labels: Default::default(),
            auth: Some(crate::config::AuthConfig { bearer: Some(Secret::new("t0ken")), basic: None }),
            headers: [("X-Api-Key".to_string(), Secret::new("s3cret"))].into(),
            ca_file: None,
            insecure_skip_verify: false,
            allow_cross_origin_redirects: cross,
            timeout: Duration::from_secs(5),
        };
        TargetClient::new(&cfg, &mut ClientPool::default()).unwrap()
    }

    fn carries_secret(headers: &[(String, String)]) -> bool {
        headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("x-api-key") || k.eq_ignore_ascii_case("authorization") || v.contains("s3cret")
        })
    }

    #[tokio::test]
    async fn a_redirect_to_another_origin_is_not_followed_and_no_secret_reaches_it() {
        let (other, other_seen) = server(None).await;
        let (url, _) = server(Some(format!("{other}/steal"))).await;
        let (_, _, err) = target(&url, false).send(&HttpRequest::get("/go", 1 << 20)).await;
        let err = err.expect("refused");
        assert_eq!(err.kind, FetchErrorKind::Refused);
        assert!(err.message.contains("another origin") && err.message.contains(&other), "{}", err.message);
        assert!(other_seen.lock().unwrap().is_empty(), "the other host was contacted");
    }

    #[tokio::test]
    async fn an_allowed_cross_origin_redirect_carries_no_credentials_and_same_origin_keeps_them() {
        let (other, other_seen) = server(None).await;
        let (url, seen) = server(Some(format!("{other}/elsewhere"))).await;
        let (status, body, err) = target(&url, true).send(&HttpRequest::get("/go", 1 << 20)).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!((status, body), (Some(200), Some(serde_json::json!({"ok": true}))));
        {
            let other_seen = other_seen.lock().unwrap();
            assert_eq!(other_seen.len(), 1);
            assert!(!carries_secret(&other_seen[0].1), "credentials crossed origins: {:?}", other_seen[0].1);
            assert!(carries_secret(&seen.lock().unwrap()[0].1), "the target itself gets its credentials");
        }

        // Within the origin (a relative Location), the redirect is followed with the target's headers.
        let (url, seen) = server(Some("/base/there".into())).await;
        let (status, _, err) = target(&url, false).send(&HttpRequest::get("/go", 1 << 20)).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(status, Some(200));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["/base/go", "/base/there"]);
        assert!(seen.iter().all(|(_, h)| carries_secret(h)), "same-origin requests keep the target's headers");
    }

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for bad in [
            "/%2e%2e/%2e%2e/ESCAPED",
            "/.%2E/.%2e/ESCAPED",
            "/..\\..\\ESCAPED",
            "/%252e%252e/ESCAPED",
            "/jobs/../../ESCAPED",
            "/./x",
            "//evil.example/x",
            "/x/http://evil.example/",
            "relative/path",
            "/%5c..%5cESCAPED",
        ] {
            assert!(contained_path(bad).is_err(), "`{bad}` was accepted");
        }
        for good in ["/jobs/overview", "/jobs/abc/exceptions?maxExceptions=10", "/jars/x.jar/run", "/a..b/c.d"] {
            assert_eq!(contained_path(good), Ok(good));
        }
    }

    #[tokio::test]
    async fn a_refused_path_is_never_sent() {
        let (url, seen) = server(None).await;
        let t = target(&url, false);
        let (_, _, err) = t.send(&HttpRequest::get("/%2e%2e/%2e%2e/ESCAPED", 1 << 20)).await;
        assert_eq!(err.map(|e| e.kind), Some(FetchErrorKind::Refused));
        assert!(seen.lock().unwrap().is_empty(), "{:?}", seen.lock().unwrap());
    }

    #[test]
    fn basic_auth_is_standard_base64() {
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
