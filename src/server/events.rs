//! `POST /api/events`: events pushed by an operator listener plugin, a CI system or a deploy script.
//!
//! The handler checks (token, content type, size, shape, target), drops a retried `id` within
//! `server.events.dedup_window`, and hands the event to the daemon through a channel
//! ([`StatusHandle::push_event`](crate::runtime::StatusHandle::push_event)); the daemon journals it and runs the
//! rules of the `events:` probes that take it. Answers:
//!
//! | status | when |
//! |---|---|
//! | 202 `{"accepted": true, "duplicate": false, "id", "probes": [...]}` | taken (`probes`: those that will judge it) |
//! | 200 `{"accepted": true, "duplicate": true, "id"}` | the same `source` and `id` were taken within the window |
//! | 400 | not JSON, or not an event (the message says where and what) |
//! | 401 | a wrong or missing token |
//! | 403 | no `server.token` is configured: pushing events needs one |
//! | 413 | the body is larger than `server.events.max_body` |
//! | 415 | the content type is not `application/json` |
//! | 422 | the event names a target that is not configured |
//! | 503 | the daemon is not taking events (starting, stopping, or its queue is full): retry later |

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::runtime::events::PushedEvent;

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({"accepted": false, "error": message}))).into_response()
}

/// `POST /api/events`.
pub(super) async fn push(State(s): State<AppState>, req: Request) -> Response {
    if s.token.is_none() {
        return refuse(
            StatusCode::FORBIDDEN,
            "pushing events needs a token: set `server.token` and send `Authorization: Bearer <token>`".into(),
        );
    }
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        let got = if content_type.is_empty() { "none".to_string() } else { format!("`{content_type}`") };
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("events are JSON: send `Content-Type: application/json` (got {got})"),
        );
    }
    let limit = usize::try_from(s.events.max_body.0).unwrap_or(usize::MAX);
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the event is larger than `server.events.max_body` ({})", s.events.max_body),
        )
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.events.max_body.0) {
        return too_large();
    }
    let body: Body = req.into_body();
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else { return too_large() };
    let event = match PushedEvent::parse(&bytes) {
        Ok(e) => e,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(generation) = s.status.generation() else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "Warden is starting: no configuration loaded yet".into());
    };
    if let Some(t) = &event.target {
        if !generation.plan.loaded.config.targets.iter().any(|c| &c.name == t) {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "`target`: no target named `{t}` is configured (leave `target` out for the pseudo-target `events`)"
                ),
            );
        }
    }
    let probes: Vec<String> = event.routes(&generation.plan).iter().map(|(p, _, _)| p.probe.clone()).collect();
    let now = chrono::Utc::now();
    if let Some(id) = &event.id {
        let first = s.dedup.lock().unwrap_or_else(|p| p.into_inner()).first(&event.source, id, now);
        if !first {
            return (StatusCode::OK, Json(serde_json::json!({"accepted": true, "duplicate": true, "id": id})))
                .into_response();
        }
    }
    let (id, source) = (event.id.clone(), event.source.clone());
    if !s.status.push_event(event) {
        if let Some(id) = &id {
            s.dedup.lock().unwrap_or_else(|p| p.into_inner()).forget(&source, id);
        }
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is not taking events now (starting, stopping, or too many waiting): retry later".into(),
        );
    }
    (StatusCode::ACCEPTED, Json(serde_json::json!({"accepted": true, "duplicate": false, "id": id, "probes": probes})))
        .into_response()
}
