//! `warden report`: an inventory across targets, asked of each JobManager now (see [`warden::report`]), with
//! Warden's restarts of the last day from the state store (read only; the daemon may be running).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use warden::fetch::{ClientPool, TargetClient};
use warden::store::Store;

use super::Format;

pub async fn run(
    config: &Path,
    format: Format,
    only: &[String],
    state_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let loaded = warden::config::load(config).map_err(|d| anyhow::anyhow!("{d}"))?;
    let cfg = &loaded.config;
    if let Some(unknown) = only.iter().find(|n| !cfg.targets.iter().any(|t| &t.name == *n)) {
        let known: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();
        anyhow::bail!("--target: no target named `{unknown}` (known: {})", known.join(", "));
    }
    let mut pool = ClientPool::default();
    let mut clients = vec![];
    for t in cfg.targets.iter().filter(|t| only.is_empty() || only.contains(&t.name)) {
        clients.push(Arc::new(TargetClient::new(t, &mut pool)?));
    }
    let mut report = warden::report::gather(&clients, chrono::Utc::now()).await;
    let (sc, dir) = super::store_location(config, state_dir)?;
    let mut note = None;
    if super::has_store(&sc, &dir) {
        report = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let store = Store::open_configured(&sc, &dir)?;
            warden::report::add_restarts(&mut report, &store)?;
            Ok(report)
        })
        .await??;
    } else {
        note = Some(format!("no state in `{}` yet: restarts are not known", dir.display()));
    }
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            outln!("{}", warden::report::render_table(&report).trim_end());
            if let Some(n) = note {
                outln!("\n({n})");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
