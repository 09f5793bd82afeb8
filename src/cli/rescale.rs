//! `warden rescale`: a running job at another parallelism. In place where the cluster can (Flink 1.18+ with the
//! adaptive scheduler: new per-vertex bounds, verified by the vertices' parallelism, the same job id; see
//! [`warden::action::rescale`]), else through a savepoint restart (the upgrade machinery with only the parallelism
//! overridden: verified by the new job's vertices, rolled back to the previous parallelism from the same savepoint
//! if the new run fails). [`choose_path`] decides, and the command says which path it took and why.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use warden::action::rescale::RescaleOutcome;
use warden::config::{JobConfig, LoadedConfig};
use warden::event::Events;
use warden::fetch::{ClientPool, TargetClient};
use warden::flink::client::FlinkClient;
use warden::flink::rescale::InPlaceSupport;
use warden::model::{ActionKind, RescaleTo, RestartOverrides};
use warden::store::{NewEntry, Store};

/// How a rescale is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RescalePath {
    /// Savepoint, then the same jar again with the new parallelism (every Flink version; the job stops for a
    /// moment).
    Savepoint,
    /// New per-vertex bounds through `PUT /jobs/:jid/resource-requirements`: the adaptive scheduler rescales the
    /// running job (Flink 1.18+).
    InPlace,
}

impl RescalePath {
    /// For people.
    pub fn describe(self) -> &'static str {
        match self {
            RescalePath::Savepoint => {
                "through a savepoint restart (stop with a savepoint, resubmit at the new parallelism)"
            }
            RescalePath::InPlace => {
                "in place (the adaptive scheduler rescales the running job: no savepoint, the same job id)"
            }
        }
    }
}

/// Decides how `job` (run `jid`, else its RUNNING run) on `target` is rescaled, and why: in place when the cluster
/// supports it ([`warden::flink::rescale::supports_in_place`]), else through a savepoint.
pub async fn choose_path(
    loaded: &LoadedConfig,
    target: &str,
    job: &str,
    _cfg: &JobConfig,
    jid: Option<&str>,
) -> (RescalePath, String) {
    let Some(tcfg) = loaded.config.targets.iter().find(|t| t.name == target) else {
        return (RescalePath::Savepoint, format!("no target named `{target}`"));
    };
    let client = match TargetClient::new(tcfg, &mut ClientPool::default()) {
        Ok(c) => c,
        Err(e) => return (RescalePath::Savepoint, e.to_string()),
    };
    let jid = match jid {
        Some(j) => j.to_string(),
        None => match FlinkClient::new(&client).jobs().await {
            Ok(jobs) => {
                jobs.into_iter().find(|j| j.name == job && j.state == "RUNNING").map(|j| j.jid).unwrap_or_default()
            }
            Err(_) => String::new(),
        },
    };
    match warden::flink::rescale::supports_in_place(&client, &jid).await {
        InPlaceSupport::Yes { version, evidence } => (RescalePath::InPlace, format!("Flink {version}, {evidence}")),
        InPlaceSupport::No { reason } => (RescalePath::Savepoint, reason),
    }
}

/// Rescales in place through the executor's `rescale` action (journalled as `rescale`, rule `cli`, counted by the
/// storm guard like the daemon's; not clamped to `jobs.<job>.parallelism`: the operator's number is taken as
/// asked). Exit 0 when every vertex runs at `parallelism`, 1 otherwise.
async fn in_place(
    loaded: &LoadedConfig,
    target: &str,
    job: &str,
    parallelism: u32,
    jid: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let cfg = &loaded.config;
    let Some(tcfg) = cfg.targets.iter().find(|t| t.name == target) else {
        eprintln!("warden: no target named `{target}`");
        return Ok(ExitCode::from(2));
    };
    let client = Arc::new(TargetClient::new(tcfg, &mut ClientPool::default())?);
    let store = Arc::new(Store::open(&cfg.state_dir)?);
    let id = store.journal(&NewEntry {
        time: Some(chrono::Utc::now()),
        rule: "cli".into(),
        target: target.into(),
        subject: job.into(),
        action: ActionKind::Rescale,
        detail: parallelism.to_string(),
        severity: "info".into(),
        summary: format!("operator rescale of {job} to parallelism {parallelism}"),
        details: serde_json::json!({"old_jid": jid}),
        outcome: "started".into(),
        ..Default::default()
    })?;
    let executor = super::restart::operator_executor(loaded, store, Events::default(), target, client);
    let cancel = super::restart::cancel_on_ctrl_c();
    let to = RescaleTo::Exactly(parallelism);
    let o = executor.rescale(id, "cli", target, job, jid.unwrap_or(""), to, true, cancel).await;
    let (summary, _) = warden::action::rescale::describe(job, &o);
    outln!("{summary}");
    Ok(match o {
        RescaleOutcome::Done { .. } => ExitCode::SUCCESS,
        // The cluster said it cannot after all: the savepoint restart ran (and printed nothing here).
        RescaleOutcome::ViaSavepoint { .. } => {
            let ok = executor.store.entry(id)?.is_some_and(|e| e.outcome == "ok");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        _ => ExitCode::from(1),
    })
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
    let (path, why) = choose_path(&loaded, target, job, cfg, jid).await;
    outln!("rescaling {job} on {target} to parallelism {parallelism} {} ({why})", path.describe());
    match path {
        RescalePath::InPlace if dry_run => {
            outln!(
                "would PUT /jobs/<jid>/resource-requirements with bounds 1..{parallelism} for every vertex, then wait \
                 up to {} for every vertex to run at {parallelism}",
                humantime::format_duration(cfg.verify_timeout)
            );
            Ok(ExitCode::SUCCESS)
        }
        RescalePath::InPlace => in_place(&loaded, target, job, parallelism, jid).await,
        RescalePath::Savepoint => {
            let overrides = RestartOverrides { parallelism: Some(parallelism), ..Default::default() };
            super::upgrade::execute(&loaded, target, job, jid, &overrides, dry_run).await
        }
    }
}
