//! `warden history`: the journal, restarts and savepoint history.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::store::{JournalFilter, Store};

use super::Format;

/// What `warden history` was asked.
pub struct Args {
    pub format: Format,
    pub limit: Option<usize>,
    pub state_dir: Option<PathBuf>,
    pub restarts: bool,
    pub savepoints: bool,
    pub job: Option<String>,
    pub rule: Option<String>,
    pub kind: Option<warden::model::ActionKind>,
    pub since: Option<String>,
    pub follow: bool,
}

pub async fn run(config: &Path, a: Args) -> anyhow::Result<ExitCode> {
    let (sc, dir) = super::store_location(config, a.state_dir)?;
    if !super::has_store(&sc, &dir) {
        anyhow::bail!("no journal in `{}` yet (has `warden run` been started?)", dir.display());
    }
    let store = Store::open_configured(&sc, &dir)?;
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
    let mut filter = JournalFilter { job: a.job.clone(), rule: a.rule.clone(), kind: a.kind, ..Default::default() };
    if let Some(s) = &a.since {
        filter.since =
            Some(warden::server::api::parse_since(s, chrono::Utc::now()).map_err(|e| anyhow::anyhow!("--since: {e}"))?);
    }
    let filtered = filter != JournalFilter::default();
    let entries = store.find_entries(&filter, a.limit)?;
    if entries.is_empty() && a.format == Format::Text {
        if filtered {
            outln!("(no journal entries match)");
        } else {
            outln!("(the journal is empty: Warden has not acted yet)");
        }
    }
    let mut last = entries.last().map(|e| e.id).unwrap_or(0);
    print_entries(entries, a.format)?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: look for new entries every second until Ctrl-C.
    let store = std::sync::Arc::new(store);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let f = JournalFilter { after_id: Some(last), ..filter.clone() };
        let new = store.call(move |s| s.find_entries(&f, None)).await?;
        if let Some(e) = new.last() {
            last = e.id;
        }
        print_entries(new, a.format)?;
    }
}

fn print_entries(entries: Vec<warden::store::JournalEntry>, format: Format) -> anyhow::Result<()> {
    for e in entries {
        match format {
            Format::Json => outln!("{}", serde_json::to_string(&e)?),
            Format::Text => {
                let what = if e.detail.is_empty() || e.detail == e.action.as_str() {
                    e.action.to_string()
                } else {
                    format!("{} {}", e.action, e.detail)
                };
                // The id first: `warden explain <id>` takes it.
                outln!(
                    "#{:<5} {}  {:<18} {:<28} {:<14} {:<14} {:<24} {}",
                    e.id,
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
    Ok(())
}
