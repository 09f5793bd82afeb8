//! `GET /metrics`: Prometheus text (OpenMetrics) with every `warden_` metric; the gauges that describe the store
//! and the firing alerts are filled at scrape time.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::runtime::status::{self, AlertLabels, RestartLabels};

/// The content type of the OpenMetrics text format (Prometheus asks for it and reads it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    match render(&s).await {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot render the metrics: {e}\n")).into_response(),
    }
}

/// Fills the scrape-time gauges and encodes the registry.
pub(crate) async fn render(s: &AppState) -> Result<String, String> {
    let _one = s.render.lock().await;
    let m = s.status.metrics();
    let firing = s.status.firing();
    m.alerts_firing.clear();
    for a in &firing {
        m.alerts_firing
            .get_or_create(&AlertLabels { rule: a.rule.clone(), severity: a.severity.as_str().into() })
            .inc();
    }
    if let Some(store) = s.status.store() {
        let (backlog, restarts, inhibited) = store
            .call(|st| (status::outbox_backlog(st), status::restart_counts(st), crate::notify::inhibit::held_count(st)))
            .await;
        let (depth, oldest) = backlog.map_err(|e| e.to_string())?;
        m.outbox_depth.set(depth);
        // Before the notifier has made its tables there is nothing inhibited.
        m.alerts_inhibited.set(inhibited.map(|n| n as i64).unwrap_or(0));
        let age = oldest.map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0).unwrap_or(0.0);
        m.outbox_oldest_age.set(age);
        m.restarts.clear();
        for ((step, outcome), n) in restarts.map_err(|e| e.to_string())? {
            m.restarts.get_or_create(&RestartLabels { step, outcome }).set(n);
        }
    }
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &m.registry).map_err(|e| e.to_string())?;
    Ok(out)
}
