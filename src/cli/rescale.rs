//! `warden rescale`: a running job at another parallelism. Today through a savepoint restart (the upgrade
//! machinery with only the parallelism overridden: verified by the new job's vertices, rolled back to the previous
//! parallelism from the same savepoint if the new run fails). [`choose_path`] is where the in-place path (the
//! adaptive scheduler, Flink 1.18+) is decided.

use std::path::Path;
use std::process::ExitCode;

use warden::config::{JobConfig, LoadedConfig};
use warden::model::RestartOverrides;

/// How a rescale is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescalePath {
    /// Savepoint, then the same jar again with the new parallelism (every Flink version; the job stops for a
    /// moment).
    Savepoint,
}

impl RescalePath {
    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            RescalePath::Savepoint => {
                "through a savepoint restart (stop with a savepoint, resubmit at the new parallelism)"
            }
        }
    }
}

/// Decides how `job` on `target` is rescaled. For now always [`RescalePath::Savepoint`].
pub async fn choose_path(_loaded: &LoadedConfig, _target: &str, _job: &str, _cfg: &JobConfig) -> RescalePath {
    RescalePath::Savepoint
}

/// `warden rescale`.
pub async fn run(
    config: &Path,
    target: &str,
    job: &str,
    parallelism: u32,
    jid: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let Some(loaded) = super::upgrade::load(config) else { return Ok(ExitCode::from(1)) };
    if parallelism == 0 {
        eprintln!("warden: --parallelism must be at least 1");
        return Ok(ExitCode::from(2));
    }
    let Some(cfg) = loaded.config.jobs.get(job) else {
        eprintln!("warden: no `jobs.{job}` entry in the configuration says how to submit `{job}`");
        return Ok(ExitCode::from(2));
    };
    let path = choose_path(&loaded, target, job, cfg).await;
    outln!("rescaling {job} on {target} to parallelism {parallelism} {}", path.describe());
    match path {
        RescalePath::Savepoint => {
            let overrides = RestartOverrides { parallelism: Some(parallelism), ..Default::default() };
            super::upgrade::execute(&loaded, target, job, jid, &overrides, dry_run).await
        }
    }
}
