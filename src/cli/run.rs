//! `warden run`: the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use warden::runtime::{self, RunOptions};

pub async fn run(config: &Path, dry_run: bool, record: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (plan, engine) = match warden::plan::load(config, None) {
        Ok(p) => p,
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!("warden: {} problem(s) in the configuration; not starting", diags.len());
            return Ok(ExitCode::from(1));
        }
    };
    let opts = RunOptions {
        dry_run,
        record,
        reload: Some(runtime::ReloadSource { config: config.to_path_buf() }),
        serve: true,
        ..Default::default()
    };
    runtime::run(plan, engine, opts, shutdown_signal()).await.context("warden could not start")?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
