//! `warden run`: the daemon.
//!
//! The first SIGINT or SIGTERM starts a graceful shutdown (polling stops, running actions get `shutdown_grace`);
//! a second one ends Warden at once: running commands' process groups are killed and journalled as interrupted.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
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
    let force = CancellationToken::new();
    let shutdown = shutdown_signals(force.clone()).context("cannot install the SIGINT/SIGTERM handlers")?;
    let opts = RunOptions {
        dry_run,
        record,
        reload: Some(runtime::ReloadSource { config: config.to_path_buf() }),
        force,
        serve: true,
        ..Default::default()
    };
    runtime::run(plan, engine, opts, shutdown).await.context("warden could not start")?;
    Ok(ExitCode::SUCCESS)
}

/// Installs the SIGINT and SIGTERM handlers. The returned future completes on the first of either signal (the
/// graceful shutdown); `force` is cancelled on the next one (stop at once).
fn shutdown_signals(force: CancellationToken) -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if !next_signal(&mut term, &mut int).await {
            return;
        }
        let _ = first_tx.send(());
        tracing::warn!("send SIGINT or SIGTERM again to stop at once (running commands are killed)");
        if next_signal(&mut term, &mut int).await {
            tracing::warn!("second signal: stopping at once");
            force.cancel();
        }
    });
    Ok(async move {
        if first_rx.await.is_err() {
            std::future::pending::<()>().await; // no signal can arrive any more: run until killed
        }
    })
}

/// Waits for SIGTERM or SIGINT; `false` if neither can arrive any more.
async fn next_signal(term: &mut Signal, int: &mut Signal) -> bool {
    tokio::select! {
        s = term.recv() => s.is_some(),
        s = int.recv() => s.is_some(),
    }
}
