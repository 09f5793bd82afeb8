//! `warden history`: the journal, restarts and savepoint history.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::store::Store;

use super::Format;

/// What `warden history` was asked.
pub struct Args {
    pub format: Format,
    pub limit: Option<usize>,
    pub state_dir: Option<PathBuf>,
    pub restarts: bool,
    pub savepoints: bool,
    pub job: Option<String>,
}

pub fn run(config: &Path, a: Args) -> anyhow::Result<ExitCode> {
    let dir = super::state_dir(config, a.state_dir)?;
    if !dir.join("warden.db").is_file() {
        anyhow::bail!("no journal in `{}` yet (has `warden run` been started?)", dir.display());
    }
    let store = Store::open(&dir)?;
    if a.restarts {
        for r in store.restarts(a.limit)? {
            match a.format {
                Format::Json => outln!("{}", serde_json::to_string(&r)?),
                Format::Text => outln!(
                    "{}  #{:<4} {:<14} {:<16} {:<15} step={:<20} from={} new={} {}",
                    r.started,
                    r.id,
                    r.target,
                    r.job,
                    r.strategy,
                    r.step,
                    r.location.as_deref().unwrap_or("-"),
                    r.new_jid.as_deref().unwrap_or("-"),
                    r.outcome.as_ref().map(|o| o.to_string()).unwrap_or_else(|| "in progress".into())
                ),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.savepoints {
        for s in store.savepoints(None, a.job.as_deref())? {
            match a.format {
                Format::Json => outln!("{}", serde_json::to_string(&s)?),
                Format::Text => outln!(
                    "{}  {:<14} {:<16} {:<10} {}  (run {}{})",
                    s.time,
                    s.target,
                    s.job,
                    s.kind,
                    s.location,
                    s.jid,
                    s.used_by.map(|r| format!(", used by restart #{r}")).unwrap_or_default()
                ),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    for e in store.entries(a.limit)? {
        match a.format {
            Format::Json => outln!("{}", serde_json::to_string(&e)?),
            Format::Text => {
                let what = if e.detail.is_empty() || e.detail == e.action.as_str() {
                    e.action.to_string()
                } else {
                    format!("{} {}", e.action, e.detail)
                };
                outln!(
                    "{}  {:<18} {:<28} {:<14} {:<14} {:<24} {}",
                    e.time,
                    what,
                    e.rule,
                    e.target,
                    e.subject,
                    e.outcome,
                    e.summary
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
