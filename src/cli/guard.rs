//! `warden guard reset`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::model::ActionKind;
use warden::store::{NewEntry, Store};

pub fn reset(config: &Path, target: &str, subject: &str, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (sc, dir) = super::store_location(config, state_dir)?;
    let store = Store::open_configured(&sc, &dir)?;
    let now = chrono::Utc::now();
    store.reset_guard(target, subject, now)?;
    let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    store.journal(&NewEntry {
        time: Some(now),
        rule: "cli".into(),
        target: target.into(),
        subject: subject.into(),
        action: ActionKind::GuardReset,
        severity: "info".into(),
        summary: format!("storm guard reset for {subject} on {target} by {who}: relaunches are allowed again"),
        details: serde_json::json!({"by": who}),
        outcome: "ok".into(),
        ..Default::default()
    })?;
    outln!("storm guard reset for `{subject}` on `{target}`: relaunches are allowed again");
    Ok(ExitCode::SUCCESS)
}
