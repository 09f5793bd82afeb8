//! HTTP polling: one shared client per TLS setting (so connections are reused), auth, headers, timeouts and a
//! body size cap. Every outcome becomes an [`Observation`]; nothing here returns an error to the caller.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};

use crate::config::TargetConfig;
use crate::model::{FetchError, FetchErrorKind, Observation};

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
            .pool_idle_timeout(Duration::from_secs(90))
            .redirect(reqwest::redirect::Policy::limited(5));
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
}

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
                        base64_lite::encode(format!("{}:{}", b.username, b.password.expose()).as_bytes())
                    )
                }
                (None, None) => return Err(err("`auth` needs `bearer` or `basic`".into())),
            };
            let mut val =
                HeaderValue::from_str(&raw).map_err(|_| err("credentials contain invalid characters".into()))?;
            val.set_sensitive(true);
            headers.insert(AUTHORIZATION, val);
        }
        Ok(Self {
            name: cfg.name.clone(),
            base: cfg.url.trim_end_matches('/').to_string(),
            labels: cfg.labels.clone(),
            client,
            headers,
            timeout: cfg.timeout,
        })
    }

    /// Sends `req` and turns whatever happens into an observation for `probe`.
    pub async fn observe(&self, probe: &str, req: &HttpRequest) -> Observation {
        let time = Utc::now();
        let start = Instant::now();
        let (status, body, error) = self.send(req).await;
        Observation {
            probe: probe.to_string(),
            target: self.name.clone(),
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
        let where_ = format!("target `{}` {} {}", self.name, req.method, req.path);
        let fail = |kind, message: String| (None, None, Some(FetchError { kind, message }));
        let url = format!("{}{}", self.base, req.path);
        let mut rb = self.client.request(req.method.clone(), &url).headers(self.headers.clone()).timeout(self.timeout);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = &req.body {
            rb = rb.json(b);
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => return fail(classify(&e), format!("{where_}: {}", describe(&e))),
        };
        let status = resp.status().as_u16();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        if let Some(len) = resp.content_length() {
            if len as usize > req.max_body {
                return (
                    Some(status),
                    None,
                    Some(FetchError {
                        kind: FetchErrorKind::TooLarge,
                        message: format!("{where_}: body of {len} bytes exceeds the limit of {} bytes", req.max_body),
                    }),
                );
            }
        }
        let mut buf = Vec::new();
        let mut resp = resp;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if buf.len() + c.len() > req.max_body {
                        return (
                            Some(status),
                            None,
                            Some(FetchError {
                                kind: FetchErrorKind::TooLarge,
                                message: format!("{where_}: body exceeds the limit of {} bytes", req.max_body),
                            }),
                        );
                    }
                    buf.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    return (
                        Some(status),
                        None,
                        Some(FetchError { kind: classify(&e), message: format!("{where_}: {}", describe(&e)) }),
                    )
                }
            }
        }
        let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&buf);
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
                        snippet(&buf)
                    ),
                }),
            ),
            (false, parsed) => {
                let first = parsed
                    .as_ref()
                    .ok()
                    .and_then(|v| v.get("errors"))
                    .and_then(|e| e.get(0))
                    .and_then(|e| e.as_str())
                    .map(|s| s.lines().next().unwrap_or("").to_string());
                let leader = status == 503 && first.as_deref().is_some_and(|s| s.contains("leader election"));
                let kind = if leader { FetchErrorKind::LeaderElection } else { FetchErrorKind::HttpStatus };
                let detail = first.unwrap_or_else(|| snippet(&buf));
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

/// A tiny base64 encoder for basic auth (avoids a dependency for ten lines).
mod base64_lite {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /// Standard base64 with padding.
    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    #[test]
    fn rfc4648_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }
}
