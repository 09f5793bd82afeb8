//! Warden's own HTTP server (axum): `/healthz`, `/readyz`, `/metrics`, `/api/status`, `/api/history`,
//! `POST /-/reload`, `POST /api/events` and the status page at `/`. It reads the daemon's [`StatusHandle`] and the
//! store (through [`crate::store::Store::call`], never on an async worker); it changes nothing but asking for a
//! reload and handing pushed events to the daemon (through a channel: it never runs rules itself).
//!
//! With `server.token` set every request but `GET /healthz` needs `Authorization: Bearer <token>` (or HTTP basic
//! authentication with the token as password, which browsers prompt for). No response carries a secret: targets
//! are shown by name and URL (without user information), never with their headers or credentials.

pub mod api;
mod events;
mod metrics;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::runtime::StatusHandle;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configured address cannot be bound.
    #[error(
        "`server.listen`: cannot listen on {addr}: {source} (choose another address, or `server: {{enabled: false}}`)"
    )]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// `server.listen` is not an address (loading reports this first).
    #[error("`server.listen`: `{0}` is not an address and port")]
    Address(String),
}

/// What every handler sees.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) status: StatusHandle,
    token: Option<Arc<str>>,
    /// One `/metrics` render at a time (the scrape-time gauges are cleared and refilled).
    pub(crate) render: Arc<tokio::sync::Mutex<()>>,
    /// `server.events`: the size limit of pushed events and the ids taken within the dedup window.
    events: crate::config::ServerEventsConfig,
    dedup: Arc<std::sync::Mutex<crate::runtime::events::Dedup>>,
}

/// Binds the address `cfg` names and serves until `stop` fires. `Ok(None)` when the server is off, or when the
/// default address (not one the configuration names) is taken: then Warden watches without it, and says so.
pub async fn start(
    cfg: &ServerConfig,
    status: StatusHandle,
    stop: CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServerError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let written = cfg.listen.clone();
    let addr = cfg.address().ok_or_else(|| ServerError::Address(written.clone().unwrap_or_default()))?;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(source) if written.is_none() => {
            tracing::error!(
                "the HTTP server cannot listen on the default address {addr}: {source}; Warden watches without it \
                 (set `server.listen` to another address, or `server.enabled: false`)"
            );
            return Ok(None);
        }
        Err(source) => return Err(ServerError::Bind { addr: addr.to_string(), source }),
    };
    let local = listener.local_addr().unwrap_or(addr);
    status.set_server_addr(local);
    tracing::info!(listen = %local, auth = cfg.token.is_some(), "serving /metrics, /api/status and the status page on http://{local}/");
    let app = router(status, cfg.token.as_ref().map(|t| Arc::from(t.expose())), cfg.events);
    Ok(Some(tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!("the HTTP server stopped: {e}");
        }
    })))
}

/// Serves on an already bound listener (for tests and tools that pick a free port), until `stop` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    status: StatusHandle,
    token: Option<String>,
    stop: CancellationToken,
) {
    let app = router(status, token.map(Arc::from), crate::config::ServerEventsConfig::default());
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!("the HTTP server stopped: {e}");
    }
}

/// The address the server of `cfg` is reached at, for clients such as `warden status` (`0.0.0.0` → loopback).
pub fn client_address(cfg: &ServerConfig) -> Option<SocketAddr> {
    let mut a = cfg.address()?;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(a)
}

fn router(status: StatusHandle, token: Option<Arc<str>>, events: crate::config::ServerEventsConfig) -> Router {
    let dedup = Arc::new(std::sync::Mutex::new(crate::runtime::events::Dedup::new(events.dedup_window)));
    let state = AppState { status, token, render: Arc::new(tokio::sync::Mutex::new(())), events, dedup };
    let guarded = Router::new()
        .route("/", get(page::page))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/status", get(api::status))
        .route("/api/history", get(api::history))
        .route("/-/reload", post(api::reload))
        .route("/api/events", post(events::push))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(guarded)
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: try /, /healthz, /readyz, /metrics, /api/status, /api/history, POST /api/events\n",
            )
        })
        .with_state(state)
}

/// Checks the bearer token (or basic password) when one is configured.
async fn auth(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else { return next.run(req).await };
    if authorized(req.headers(), token) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"warden\", charset=\"UTF-8\"")],
        "unauthorized: send `Authorization: Bearer <server.token>`\n",
    )
        .into_response()
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use base64::Engine;
    let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let given = if let Some(b) = v.strip_prefix("Bearer ") {
        b.trim().as_bytes().to_vec()
    } else if let Some(b) = v.strip_prefix("Basic ") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else { return false };
        match raw.iter().position(|&c| c == b':') {
            Some(i) => raw[i + 1..].to_vec(),
            None => return false,
        }
    } else {
        return false;
    };
    constant_time_eq(&given, token.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Alive, and a configuration is loaded.
async fn healthz(State(s): State<AppState>) -> Response {
    match s.status.generation() {
        Some(_) => (StatusCode::OK, "ok\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "starting: no configuration loaded yet\n").into_response(),
    }
}

/// Every probe × target has run at least once (a standby: it reaches the database).
async fn readyz(State(s): State<AppState>) -> Response {
    // A standby is ready when it can take over: its configuration is loaded and it reaches the database.
    let ha = s.status.ha();
    if ha.role == crate::ha::Role::Standby {
        return match &ha.last_error {
            None if s.status.generation().is_some() => (StatusCode::OK, "ready (standby)\n").into_response(),
            None => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no configuration loaded yet\n").into_response(),
            Some(e) => {
                (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: the standby cannot reach the database: {e}\n"))
                    .into_response()
            }
        };
    }
    if s.status.ready() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let waiting: Vec<String> = match s.status.generation() {
        None => vec!["the configuration".into()],
        Some(g) => {
            let runs = s.status.probes();
            g.plan
                .jobs
                .iter()
                .filter(|j| runs.get(&(j.probe.clone(), j.target.clone())).is_none_or(|r| r.last_run.is_none()))
                .map(|j| format!("{} on {}", j.probe, j.target))
                .collect()
        }
    };
    let shown: Vec<&str> = waiting.iter().take(10).map(String::as_str).collect();
    let more = waiting.len().saturating_sub(shown.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: waiting for the first run of {}{more}\n", shown.join(", ")))
        .into_response()
}

/// A URL without its user information (`https://user:pw@host/` → `https://host/`).
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            if u.query().is_some() {
                u.set_query(Some("…")); // a query may carry a token: never shown
            }
            u.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}
