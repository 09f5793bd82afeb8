//! The `warden` command line. The only place that uses `anyhow`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use warden::plan;
use warden::runtime::{self, RunOptions};
use warden::store::Store;

/// Warden keeps Apache Flink jobs alive: YAML probes, Rhai rules, built-in actions.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about, long_about = None)]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = "warden.yaml", env = "WARDEN_CONFIG")]
    config: PathBuf,
    /// Log level or filter for messages on stderr (`info`, `debug`, `warden=debug`). Also `WARDEN_LOG`.
    #[arg(long, global = true, env = "WARDEN_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch the targets and act (until SIGINT or SIGTERM).
    Run {
        /// Journal what would happen, act never.
        #[arg(long)]
        dry_run: bool,
        /// Append every observation to this file (JSON lines), for `warden replay`.
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
    /// Run rule tests: each pack's `tests/*.yaml` (or the files and pack directories given). Exit 0: all passed.
    Test {
        /// Test files, pack directories, or directories of packs. Default: the configuration's packs, else
        /// `rules` and `plugins`.
        paths: Vec<PathBuf>,
    },
    /// Run one rule once on a saved answer and print what it would request.
    Eval {
        /// The rule, e.g. `flink/job-not-running`.
        #[arg(long)]
        rule: String,
        /// A file with the JSON answer (e.g. a saved `/jobs/overview`).
        #[arg(long)]
        input: PathBuf,
        /// Parameter overrides, `name=<JSON>` (e.g. `expected_jobs=["clicks"]`); repeatable.
        #[arg(long = "param", value_name = "NAME=JSON")]
        params: Vec<String>,
    },
    /// Feed a recording (`warden run --record`) through the current rules on simulated time and print the actions
    /// they would have taken.
    Replay {
        /// The recording.
        file: PathBuf,
    },
    /// Check the configuration, packs and rules. Exit 0: valid; 1: invalid (every problem printed as
    /// `path:line:col: message`); 2: usage error.
    Check {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Print the action journal, oldest first.
    History {
        /// Output format: text for people, json for one JSON object per line.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Only the newest N entries.
        #[arg(long)]
        limit: Option<usize>,
        /// Read this state directory instead of the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Show restarts (step by step) instead of the action journal.
        #[arg(long, conflicts_with = "savepoints")]
        restarts: bool,
        /// Show the savepoint and checkpoint history per job instead of the action journal.
        #[arg(long)]
        savepoints: bool,
        /// With --savepoints: only this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// Restart a job now from its state (a savepoint of the running job, its last retained checkpoint, or none),
    /// exactly once and verified, like the `restart_job` action. Exit 0 when the new job runs and restored.
    Restart {
        /// The target's name.
        #[arg(long)]
        target: String,
        /// The job's name (a key under `jobs:`).
        #[arg(long)]
        job: String,
        /// `savepoint` (job must be running), `last-checkpoint`, or `stateless`.
        #[arg(long, default_value = "savepoint")]
        strategy: String,
        /// The run to replace. Default: the newest live run of the job (savepoint), or its newest run (otherwise).
        #[arg(long)]
        jid: Option<String>,
    },
    /// Run the embedded demo: a fake JobManager, a job that fails, Warden detecting, explaining and relaunching it.
    Demo {
        /// Give up (exit 1) if the loop has not closed by then.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// The restart-storm guard.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
    /// Silences: stop notifications that match, for a while (they are still journalled).
    Silence {
        #[command(subcommand)]
        command: warden::notify::cli::SilenceCommand,
    },
    /// Notification channels.
    Notify {
        #[command(subcommand)]
        command: warden::notify::cli::NotifyCommand,
    },
    /// Rule packs: list, create, package and install them.
    Pack {
        #[command(subcommand)]
        command: warden::pack_cli::PackCommand,
    },
    /// Used by the demo's relaunch command: resubmit a job's jar on a (fake) JobManager over REST.
    #[command(hide = true)]
    DemoRelaunch {
        /// JobManager base URL.
        url: String,
        /// Job name (its jar is `<job>.jar`).
        job: String,
    },
}

#[derive(Subcommand, Debug)]
enum GuardCommand {
    /// Allow relaunches of a job again after the guard gave up on it.
    Reset {
        /// The target's name.
        #[arg(long)]
        target: String,
        /// The job name (the alert's subject).
        #[arg(long)]
        subject: String,
        /// Read this state directory instead of the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    warden::config::units::parse_duration(s)
}

fn init_tracing(filter: Option<&str>, default: &str) {
    let filter = EnvFilter::try_new(filter.unwrap_or(default)).unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("warden: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { dry_run, record } => {
            init_tracing(cli.log.as_deref(), "info");
            let (plan, engine) = match plan::load(&cli.config, None) {
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
                reload: Some(runtime::ReloadSource { config: cli.config.clone() }),
                ..Default::default()
            };
            runtime::run(plan, engine, opts, shutdown_signal()).await.context("warden could not start")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { format } => {
            init_tracing(cli.log.as_deref(), "warn");
            let result = plan::load(&cli.config, None);
            match (format, result) {
                (Format::Text, Ok((p, _))) => {
                    println!(
                        "{}: ok ({} targets, {} packs, {} rules, {} probe jobs)",
                        cli.config.display(),
                        p.loaded.config.targets.len(),
                        p.packs.len(),
                        p.rules.len(),
                        p.jobs.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                (Format::Text, Err(d)) => {
                    println!("{d}");
                    eprintln!("{} problem(s)", d.len());
                    Ok(ExitCode::from(1))
                }
                (Format::Json, r) => {
                    let (ok, problems) = match &r {
                        Ok(_) => (true, vec![]),
                        Err(d) => (false, d.0.clone()),
                    };
                    println!("{}", serde_json::json!({"ok": ok, "problems": problems}));
                    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
                }
            }
        }
        Command::History { format, limit, state_dir, restarts, savepoints, job } => {
            init_tracing(cli.log.as_deref(), "warn");
            let dir = state_dir_of(&cli.config, state_dir)?;
            if !dir.join("warden.db").is_file() {
                anyhow::bail!("no journal in `{}` yet (has `warden run` been started?)", dir.display());
            }
            let store = Store::open(&dir)?;
            if restarts {
                for r in store.restarts(limit)? {
                    match format {
                        Format::Json => println!("{}", serde_json::to_string(&r)?),
                        Format::Text => println!(
                            "{}  #{:<4} {:<14} {:<16} {:<15} step={:<20} from={} new={} {}",
                            r.started,
                            r.id,
                            r.target,
                            r.job,
                            r.strategy,
                            r.step,
                            r.location.as_deref().unwrap_or("-"),
                            r.new_jid.as_deref().unwrap_or("-"),
                            r.outcome.as_deref().unwrap_or("in progress")
                        ),
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            if savepoints {
                for s in store.savepoints(None, job.as_deref())? {
                    match format {
                        Format::Json => println!("{}", serde_json::to_string(&s)?),
                        Format::Text => println!(
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
            for e in store.entries(limit)? {
                match format {
                    Format::Json => println!("{}", serde_json::to_string(&e)?),
                    Format::Text => {
                        let what = if e.detail.is_empty() || e.detail == e.action {
                            e.action.clone()
                        } else {
                            format!("{} {}", e.action, e.detail)
                        };
                        println!(
                            "{}  {:<18} {:<28} {:<14} {:<14} {:<24} {}",
                            e.time, what, e.rule, e.target, e.subject, e.outcome, e.summary
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restart { target, job, strategy, jid } => {
            init_tracing(cli.log.as_deref(), "info");
            let loaded = match warden::config::load(&cli.config) {
                Ok(l) => l,
                Err(d) => {
                    eprintln!("{d}");
                    return Ok(ExitCode::from(1));
                }
            };
            let ok = warden::restart_cli::run(&loaded, &target, &job, &strategy, jid.as_deref()).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Test { paths } => {
            init_tracing(cli.log.as_deref(), "warn");
            let paths = if paths.is_empty() {
                match warden::config::load(&cli.config) {
                    Ok(l) => warden::reload::pack_dirs(&l.config.pack_paths, &l.base_dir),
                    Err(_) => vec![PathBuf::from("rules"), PathBuf::from("plugins")],
                }
            } else {
                paths
            };
            let files = warden::ruletest::discover(&paths);
            if files.is_empty() {
                eprintln!("no rule tests found under {paths:?}");
                return Ok(ExitCode::from(1));
            }
            let (mut passed, mut failed) = (0, 0);
            for f in files {
                let r = warden::ruletest::run_file(&f);
                if r.failures.is_empty() {
                    passed += 1;
                    println!("ok   {} ({})", r.name, f.display());
                } else {
                    failed += 1;
                    println!("FAIL {} ({})", r.name, f.display());
                    for x in &r.failures {
                        println!("  {x}");
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Eval { rule, input, params } => {
            init_tracing(cli.log.as_deref(), "warn");
            let (plan, engine) = match plan::load(&cli.config, None) {
                Ok(p) => p,
                Err(d) => {
                    eprintln!("{d}");
                    return Ok(ExitCode::from(1));
                }
            };
            let Some(r) = plan.rules.get(&rule) else {
                let known: Vec<&str> = plan.rules.keys().map(String::as_str).collect();
                anyhow::bail!("no rule `{rule}` (known: {})", known.join(", "));
            };
            let mut p = r.params.clone();
            for kv in params {
                let (k, v) = kv.split_once('=').context("--param takes NAME=JSON")?;
                let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
                p.insert(k.to_string(), v);
            }
            let body: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(&input).with_context(|| format!("cannot read `{}`", input.display()))?,
            )
            .with_context(|| format!("`{}` is not JSON", input.display()))?;
            let target =
                warden::script::TargetInfo { name: "eval".into(), url: String::new(), labels: Default::default() };
            match warden::ruletest::eval_once(&r.compiled, &p, &target, body, &engine) {
                Ok(ev) => {
                    match ev.verdict {
                        warden::script::Verdict::Skipped(why) => println!("skipped: {why}"),
                        warden::script::Verdict::Requests(reqs) if reqs.is_empty() => {
                            println!("no requests: all is well")
                        }
                        warden::script::Verdict::Requests(reqs) => {
                            for q in reqs {
                                println!("{}", serde_json::to_string(&q)?);
                            }
                        }
                    }
                    println!("state: {}", ev.state);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Replay { file } => {
            init_tracing(cli.log.as_deref(), "warn");
            let (plan, _) = match plan::load(&cli.config, None) {
                Ok(p) => p,
                Err(d) => {
                    eprintln!("{d}");
                    return Ok(ExitCode::from(1));
                }
            };
            let actions = warden::ruletest::replay(&plan, &file)?;
            for (t, a) in &actions {
                println!("{}  {a}", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            }
            println!("{} action(s) (follow-up requests are not recorded: rules saw them fail)", actions.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { timeout } => {
            init_tracing(cli.log.as_deref(), "error");
            let ok = warden::demo::run(timeout, &mut std::io::stdout()).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Guard { command: GuardCommand::Reset { target, subject, state_dir } } => {
            init_tracing(cli.log.as_deref(), "warn");
            let dir = state_dir_of(&cli.config, state_dir)?;
            let store = Store::open(&dir)?;
            store.reset_guard(&target, &subject, chrono::Utc::now())?;
            println!("storm guard reset for `{subject}` on `{target}`: relaunches are allowed again");
            Ok(ExitCode::SUCCESS)
        }
        Command::Silence { command } => {
            init_tracing(cli.log.as_deref(), "warn");
            Ok(ExitCode::from(warden::notify::cli::silence(command, &cli.config).await?))
        }
        Command::Notify { command } => {
            init_tracing(cli.log.as_deref(), "warn");
            Ok(ExitCode::from(warden::notify::cli::notify(command, &cli.config).await?))
        }
        Command::Pack { command } => {
            init_tracing(cli.log.as_deref(), "warn");
            Ok(ExitCode::from(warden::pack_cli::run(command, &cli.config).await?))
        }
        Command::DemoRelaunch { url, job } => {
            let jid = warden::demo::relaunch_over_rest(&url, &job).await?;
            println!("submitted {job}.jar: new job id {jid}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The state directory: given explicitly, or from the configuration (which must then be valid YAML).
fn state_dir_of(config: &Path, given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    match warden::config::load(config) {
        Ok(l) => Ok(l.config.state_dir),
        Err(d) => anyhow::bail!("{d}\ncannot find the state directory: fix the configuration or pass --state-dir"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
