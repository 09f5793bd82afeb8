//! `warden upgrade`: a running job onto a new jar (entry class, arguments) from a savepoint — verified, on
//! probation, and rolled back to the previous jar from the same savepoint if the new version fails. Same locked,
//! journalled, resumable machinery as `warden restart` (see `warden::action::restart`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use warden::config::{JobConfig, LoadedConfig, SavepointMode};
use warden::fetch::{ClientPool, TargetClient};
use warden::flink::client::FlinkClient;
use warden::model::{JarRef, RestartKind, RestartOverrides, RestartStrategy};

/// What `warden upgrade` was asked.
pub struct Args {
    pub target: String,
    pub job: String,
    pub jar: String,
    pub entry_class: Option<String>,
    pub args: Option<Vec<String>>,
    pub allow_non_restored_state: bool,
    pub parallelism: Option<u32>,
    pub jid: Option<String>,
    pub dry_run: bool,
}

/// Loads the configuration, printing its diagnostics; `None` when it does not load.
pub(super) fn load(config: &Path) -> Option<LoadedConfig> {
    match warden::config::load(config) {
        Ok(l) => Some(l),
        Err(d) => {
            eprintln!("{d}");
            None
        }
    }
}

/// The jar as given on the command line: an existing local file (made absolute) is uploaded; a text with a `/`
/// must be one; anything else names a jar on the cluster (file name or jar id).
pub(super) fn jar_ref(s: &str) -> Result<JarRef, String> {
    let p = Path::new(s);
    if p.is_file() {
        let abs = std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf());
        return Ok(JarRef::Path(abs));
    }
    match JarRef::parse(s) {
        JarRef::Path(_) => Err(format!("--jar {s}: no such file (a jar on the cluster is named without a `/`)")),
        name => Ok(name),
    }
}

pub async fn run(config: &Path, a: Args) -> anyhow::Result<ExitCode> {
    let Some(loaded) = load(config) else { return Ok(ExitCode::from(1)) };
    let jar = match jar_ref(&a.jar) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("warden: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let overrides = RestartOverrides {
        jar: Some(jar),
        entry_class: a.entry_class,
        args: a.args,
        parallelism: a.parallelism,
        allow_non_restored_state: a.allow_non_restored_state.then_some(true),
    };
    execute(&loaded, &a.target, &a.job, a.jid.as_deref(), &overrides, a.dry_run).await
}

/// Runs (or with `dry_run` only plans) an upgrade or rescale of `job` with `overrides`.
pub(super) async fn execute(
    loaded: &LoadedConfig,
    target: &str,
    job: &str,
    jid: Option<&str>,
    overrides: &RestartOverrides,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let cfg = &loaded.config;
    let Some(job_cfg) = cfg.jobs.get(job) else {
        eprintln!("warden: no `jobs.{job}` entry in the configuration says how to submit `{job}`");
        return Ok(ExitCode::from(2));
    };
    if job_cfg.jar.is_none() {
        eprintln!(
            "warden: `jobs.{job}` resubmits with a command; upgrades and rescales submit a jar over REST (give it \
             a `jar:`)"
        );
        return Ok(ExitCode::from(2));
    }
    if dry_run {
        let Some(tcfg) = cfg.targets.iter().find(|t| t.name == target) else {
            eprintln!("warden: no target named `{target}`");
            return Ok(ExitCode::from(2));
        };
        let client = Arc::new(TargetClient::new(tcfg, &mut ClientPool::default())?);
        let mut facts = Facts::ask(&client, job, job_cfg, jid, overrides).await;
        // After an upgrade, rollback or rescale, the job runs (and rolls back to) that release while its jar is on
        // the cluster.
        if cfg.state_dir.join("warden.db").is_file() {
            let last =
                warden::store::Store::open(&cfg.state_dir).ok().and_then(|s| s.last_change(target, job).ok().flatten());
            if let Some(last) = last {
                let on_cluster = FlinkClient::new(&client).jars().await.unwrap_or_default();
                if let Some(id) = last.jar_id.filter(|id| on_cluster.iter().any(|j| &j.0 == id)) {
                    facts.current_jar = Ok(Some(format!("{id} (from {} #{})", last.kind, last.id)));
                }
            }
        }
        outln!("{}", render_plan(target, job, job_cfg, overrides, &facts));
        return Ok(ExitCode::SUCCESS);
    }
    match super::restart::restart(loaded, target, job, RestartStrategy::Savepoint, jid, overrides).await {
        Ok(true) => Ok(ExitCode::SUCCESS),
        Ok(false) => Ok(ExitCode::from(1)),
        Err(e) => {
            eprintln!("warden: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// What the cluster says, for a plan.
#[derive(Debug)]
pub(super) struct Facts {
    /// The running instance (or why there is none).
    pub running: Result<String, String>,
    /// The configured jar's id on the cluster (`Ok(None)`: not there).
    pub current_jar: Result<Option<String>, String>,
    /// Its parallelism now.
    pub current_parallelism: Option<u32>,
    /// The new jar's id when it is named (not uploaded).
    pub new_jar: Option<Result<Option<String>, String>>,
}

impl Facts {
    async fn ask(client: &TargetClient, job: &str, cfg: &JobConfig, jid: Option<&str>, o: &RestartOverrides) -> Facts {
        let fc = FlinkClient::new(client);
        let running = match jid {
            Some(j) => Ok(j.to_string()),
            None => match fc.jobs().await {
                Ok(jobs) => jobs
                    .iter()
                    .find(|j| j.name == job && j.state == "RUNNING")
                    .map(|j| j.jid.clone())
                    .ok_or_else(|| format!("no RUNNING instance of {job}: the upgrade would stop at its savepoint")),
                Err(e) => Err(e.to_string()),
            },
        };
        let current_parallelism = match &running {
            Ok(j) => fc.vertex_parallelism(j).await.ok().and_then(|p| p.into_iter().max()),
            Err(_) => None,
        };
        let name = cfg.jar.as_ref().and_then(|j| j.name.clone());
        let current_jar = match name {
            Some(n) => fc.find_jar(&n).await.map_err(|e| e.to_string()),
            None => Ok(None),
        };
        let new_jar = match &o.jar {
            Some(JarRef::Name(n)) => Some(fc.find_jar(n).await.map_err(|e| e.to_string())),
            _ => None,
        };
        Facts { running, current_jar, current_parallelism, new_jar }
    }
}

/// The plan `--dry-run` prints: each step, and what Warden does when it fails.
pub(super) fn render_plan(target: &str, job: &str, cfg: &JobConfig, o: &RestartOverrides, f: &Facts) -> String {
    let (jar_name, jar_class, jar_args, jar_p, jar_nrs) = match &cfg.jar {
        Some(j) => (j.name.clone(), j.entry_class.clone(), j.args.clone(), j.parallelism, j.allow_non_restored_state),
        None => (None, None, vec![], None, false),
    };
    let kind = o.kind();
    let mut s = format!("{kind} plan for {job} on {target} (--dry-run: nothing is done)\n");
    let running = match &f.running {
        Ok(j) => j.clone(),
        Err(e) => format!("? ({e})"),
    };
    let cur_jar = match &f.current_jar {
        Ok(Some(id)) => id.clone(),
        Ok(None) => format!("{} (not on the cluster)", jar_name.as_deref().unwrap_or("-")),
        Err(e) => format!("? ({e})"),
    };
    let cur_p = f.current_parallelism.or(jar_p).map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    s.push_str(&format!("  now       {job} runs as {running}: jar {cur_jar}, parallelism {cur_p}\n"));
    let mut n = 1;
    let mut step = |s: &mut String, text: String| {
        s.push_str(&format!("  {n}. {text}\n"));
        n += 1;
    };
    match &o.jar {
        Some(JarRef::Path(p)) => {
            step(&mut s, format!("upload {} (step jar-uploaded; fails: nothing changed, alert)", p.display()))
        }
        Some(JarRef::Name(name)) => {
            let id = match &f.new_jar {
                Some(Ok(Some(id))) => id.clone(),
                Some(Ok(None)) => "NOT ON THE CLUSTER: the upgrade would stop here".into(),
                Some(Err(e)) => format!("? ({e})"),
                None => "?".into(),
            };
            step(&mut s, format!("use jar {name} on the cluster: {id}"))
        }
        None => {}
    }
    let how = match cfg.savepoint_mode {
        SavepointMode::Stop => "stop-with-savepoint",
        SavepointMode::Cancel => "savepoint, then cancel",
    };
    step(
        &mut s,
        format!(
            "{how} of {running} into {} within {} (fails: the job keeps running, alert)",
            cfg.savepoint_dir.as_deref().unwrap_or("the cluster's savepoint directory"),
            humantime::format_duration(cfg.savepoint_timeout)
        ),
    );
    step(
        &mut s,
        format!("wait until no instance of {job} is live (within {})", humantime::format_duration(cfg.stop_timeout)),
    );
    let new_jar = o.jar.as_ref().map(|j| j.to_string()).unwrap_or_else(|| "the same jar".into());
    step(
        &mut s,
        format!(
            "submit {new_jar} from the savepoint: entry class {}, args {:?}, parallelism {}, allowNonRestoredState {}",
            o.entry_class.as_deref().or(jar_class.as_deref()).unwrap_or("(the manifest's)"),
            o.args.as_ref().unwrap_or(&jar_args),
            o.parallelism.or(jar_p).map(|p| p.to_string()).unwrap_or_else(|| "(the cluster's default)".into()),
            o.allow_non_restored_state.unwrap_or(jar_nrs)
        ),
    );
    let rescaled = o.parallelism.map(|p| format!(", its vertices at parallelism {p}")).unwrap_or_default();
    step(
        &mut s,
        format!(
            "verify: RUNNING and restored from the savepoint within {}{rescaled}",
            humantime::format_duration(cfg.verify_timeout)
        ),
    );
    if !cfg.upgrade.probation.is_zero() {
        step(
            &mut s,
            format!(
                "probation: still RUNNING with no failure after {}",
                humantime::format_duration(cfg.upgrade.probation)
            ),
        );
    }
    s.push_str(&format!(
        "  if the {kind} fails from the submit on: cancel the new job, resubmit jar {cur_jar} with parallelism \
         {cur_p} from the same savepoint, verify it (a rollback that fails: alert, no retry), and alert with the \
         new version's root cause"
    ));
    if kind != RestartKind::Upgrade && kind != RestartKind::Rescale {
        s.push_str("\n  (nothing to change: this is a plain restart)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use warden::config::{Fallback, JarConfig, UpgradeConfig};

    fn job() -> JobConfig {
        JobConfig {
            jar: Some(JarConfig {
                name: Some("clicks.jar".into()),
                entry_class: Some("demo.Clicks".into()),
                args: vec!["--rate".into(), "100".into()],
                parallelism: Some(2),
                upload: None,
                allow_non_restored_state: false,
                claim_mode: None,
                flink_config: Default::default(),
            }),
            command: None,
            savepoint_dir: Some("file:/savepoints".into()),
            savepoint_mode: SavepointMode::Stop,
            fallback: Fallback::Fail,
            savepoint_timeout: Duration::from_secs(300),
            verify_timeout: Duration::from_secs(180),
            stop_timeout: Duration::from_secs(60),
            upgrade: UpgradeConfig { probation: Duration::from_secs(60) },
            parallelism: None,
        }
    }

    #[test]
    fn the_dry_run_plan_names_every_step_and_the_rollback() {
        let o = RestartOverrides {
            jar: Some(JarRef::Path("/build/clicks-2.jar".into())),
            args: Some(vec!["--rate".into(), "200".into()]),
            ..Default::default()
        };
        let f = Facts {
            running: Ok("7c2c".into()),
            current_jar: Ok(Some("3f1e_clicks.jar".into())),
            current_parallelism: Some(2),
            new_jar: None,
        };
        insta::assert_snapshot!(render_plan("flink", "clicks", &job(), &o, &f));
    }

    #[test]
    fn a_rescale_plan_checks_the_parallelism() {
        let o = RestartOverrides { parallelism: Some(4), ..Default::default() };
        let f = Facts {
            running: Err("no RUNNING instance of clicks: the upgrade would stop at its savepoint".into()),
            current_jar: Ok(None),
            current_parallelism: None,
            new_jar: None,
        };
        let plan = render_plan("flink", "clicks", &job(), &o, &f);
        assert!(plan.starts_with("rescale plan for clicks"), "{plan}");
        assert!(plan.contains("its vertices at parallelism 4"), "{plan}");
        assert!(plan.contains("clicks.jar (not on the cluster)"), "{plan}");
    }
}
