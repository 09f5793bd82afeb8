//! The `warden` command line: argument parsing and one module per command. The library holds the pipeline; this
//! is the only place that prints for people and turns outcomes into exit codes.

/// `println!` for command output: a closed stdout (`warden history | head`) ends the process quietly (exit 0)
/// instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

mod check;
mod demo;
mod eval;
mod explain;
mod guard;
mod history;
mod init;
mod pack;
mod replay;
mod report;
mod restart;
mod run;
mod silence;
mod status;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// Warden keeps Apache Flink jobs alive: YAML probes, Rhai rules, built-in actions.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about, long_about = None)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = "warden.yaml", env = "WARDEN_CONFIG")]
    pub config: PathBuf,
    /// Log level or filter for messages on stderr (`info`, `debug`, `warden=debug`). Also `WARDEN_LOG`.
    #[arg(long, global = true, env = "WARDEN_LOG")]
    pub log: Option<String>,
    /// How log lines on stderr look: `text` for people (coloured on a terminal only) or `json`, one object per
    /// line, for log shippers. Also `WARDEN_LOG_FORMAT`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "WARDEN_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
        /// A canned answer for one of the rule's follow-up `http_get`s, `PATH=FILE` (a JSON file; a path with a
        /// query also matches `PATH` without one); repeatable. Other paths answer 404.
        #[arg(long = "response", value_name = "PATH=FILE")]
        responses: Vec<String>,
        /// Output format: text for people, json for one documented object (see docs/authoring.md).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// The time the rule sees as `now()` and `obs.time` (RFC 3339). Default: now.
        #[arg(long, value_name = "TIME")]
        now: Option<String>,
        /// For a rule of a `for_each: job` probe: the job the answer is about (`obs.job`), as its `/jobs/overview`
        /// entry in JSON, e.g. `{"jid": "a1b2…", "name": "clicks", "state": "RUNNING"}`.
        #[arg(long, value_name = "JSON")]
        job: Option<String>,
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
        /// Validate everything that does not need the outside world: secrets from the environment or files, CA
        /// files and programs outside the configuration's directory, and the state directory are not looked at
        /// (for CI, which does not hold production's secrets).
        #[arg(long)]
        no_environment: bool,
        /// More configuration files to check (each on its own), e.g. `warden check --no-environment examples/*.yaml`.
        files: Vec<PathBuf>,
    },
    /// Write a commented starter configuration (the --config file, default `warden.yaml`; never overwritten). With
    /// --url, `expected_jobs` are the jobs that JobManager runs now. The result is checked like `warden check`.
    Init {
        /// The JobManager's REST URL, e.g. `http://jobmanager:8081`: asked for its RUNNING jobs.
        #[arg(long)]
        url: Option<String>,
        /// The target's name in the configuration.
        #[arg(long, default_value = "jobmanager")]
        name: String,
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
        /// Only entries about this job (with --savepoints: only this job's history).
        #[arg(long)]
        job: Option<String>,
        /// Only entries from this rule (`flink/job-not-running`).
        #[arg(long)]
        rule: Option<String>,
        /// Only entries of this kind: alert, resolved, run, restart, log, guard, guard-reset, notify.
        #[arg(long)]
        kind: Option<warden::model::ActionKind>,
        /// Only entries at or after this time: RFC 3339 (`2026-01-01T00:00:00Z`) or a duration ago (`1h`, `2d`).
        #[arg(long)]
        since: Option<String>,
        /// Keep printing new entries as they are journalled (until Ctrl-C).
        #[arg(long, short)]
        follow: bool,
    },
    /// Why Warden ran a command or restarted a job: the rule that asked, the job's entry in the answer it judged,
    /// the root exception, the checkpoint or savepoint the job restored from, and the job ids before and after.
    /// Exit 1 when there is no such entry.
    Explain {
        /// The journal entry's id: the `#12` (or `12`) in the first column of `warden history` (e.g.
        /// `warden history --kind restart`), or `id` in `warden history --format json`.
        entry: String,
        /// Output format: text for people, json for one object (entry, decision, restart, restored_from).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Same as `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Read this state directory instead of the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// An inventory across targets, asked of each JobManager now: jobs, Flink version, checkpointing mode,
    /// interval and storage, last checkpoint age, state size and its trend, Warden's restarts in the last day. A
    /// target that does not answer is a row that says so. Exit 0 even then; 1 when the configuration does not load.
    Report {
        /// Output format: text for a table, json for one object.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Same as `--format json`.
        #[arg(long, conflicts_with = "format")]
        json: bool,
        /// Only these targets (repeatable). Default: all.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
        /// Read restarts from this state directory instead of the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// What the daemon sees now: targets, jobs, firing alerts, restarts in progress, failing probes and rules.
    /// Asks the running daemon's server (`server:` in warden.yaml); without one, reads the state directory.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Read this state directory (and do not ask a daemon).
        #[arg(long)]
        state_dir: Option<PathBuf>,
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
        strategy: warden::model::RestartStrategy,
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
        command: silence::SilenceCommand,
    },
    /// Notification channels.
    Notify {
        #[command(subcommand)]
        command: silence::NotifyCommand,
    },
    /// Rule packs: list, create, package and install them.
    Pack {
        #[command(subcommand)]
        command: pack::PackCommand,
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
pub enum GuardCommand {
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

/// How log lines look.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one line each, coloured only when stderr is a terminal.
    Text,
    /// One JSON object per line (time, level, message, fields such as target, job, jid).
    Json,
}

static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    warden::config::units::parse_duration(s)
}

/// Writes one line of command output to stdout; on a closed pipe the process ends quietly.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("warden: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// A `--log`/`WARDEN_LOG` filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("--log (or WARDEN_LOG): `{filter}` is not a log filter ({why}); use a level such as `info` or `debug`, or directives such as `warden=debug,info`")]
pub struct BadLogFilter {
    filter: String,
    why: String,
}

/// Checks `--log` before anything runs (an invalid filter used to be ignored silently).
pub fn check_log_filter(filter: Option<&str>) -> Result<(), BadLogFilter> {
    match filter {
        Some(f) => {
            EnvFilter::try_new(f).map(|_| ()).map_err(|e| BadLogFilter { filter: f.to_string(), why: e.to_string() })
        }
        None => Ok(()),
    }
}

fn init_tracing(filter: Option<&str>, default: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(filter.unwrap_or(default)).unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match LOG_FORMAT.get().copied().unwrap_or(LogFormat::Text) {
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// Runs the parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let log = cli.log.as_deref();
    let _ = LOG_FORMAT.set(cli.log_format);
    if let Err(e) = check_log_filter(log) {
        eprintln!("warden: {e}");
        return Ok(ExitCode::from(2));
    }
    match cli.command {
        Command::Run { dry_run, record } => {
            init_tracing(log, "info");
            run::run(&cli.config, dry_run, record).await
        }
        Command::Check { format, no_environment, files } => {
            init_tracing(log, "warn");
            let opts = warden::config::LoadOptions { environment: !no_environment };
            let files = if files.is_empty() { vec![cli.config.clone()] } else { files };
            let mut code = ExitCode::SUCCESS;
            for f in &files {
                if check::run(f, format, opts) != ExitCode::SUCCESS {
                    code = ExitCode::from(1);
                }
            }
            Ok(code)
        }
        Command::Init { url, name } => {
            init_tracing(log, "warn");
            Ok(init::run(&cli.config, url.as_deref(), &name).await?)
        }
        Command::History { format, limit, state_dir, restarts, savepoints, job, rule, kind, since, follow } => {
            init_tracing(log, "warn");
            let a = history::Args { format, limit, state_dir, restarts, savepoints, job, rule, kind, since, follow };
            history::run(&cli.config, a).await
        }
        Command::Explain { entry, format, json, state_dir } => {
            init_tracing(log, "warn");
            explain::run(&cli.config, &entry, if json { Format::Json } else { format }, state_dir).await
        }
        Command::Report { format, json, targets, state_dir } => {
            init_tracing(log, "warn");
            report::run(&cli.config, if json { Format::Json } else { format }, &targets, state_dir).await
        }
        Command::Status { format, state_dir } => {
            init_tracing(log, "warn");
            status::run(&cli.config, format, state_dir).await
        }
        Command::Restart { target, job, strategy, jid } => {
            init_tracing(log, "info");
            restart::run(&cli.config, &target, &job, strategy, jid.as_deref()).await
        }
        Command::Test { paths } => {
            init_tracing(log, "warn");
            Ok(test::run(&cli.config, paths))
        }
        Command::Eval { rule, input, params, responses, format, now, job } => {
            init_tracing(log, "warn");
            let args = eval::Args {
                rule: &rule,
                input: &input,
                params: &params,
                responses: &responses,
                format,
                now: now.as_deref(),
                job: job.as_deref(),
            };
            eval::run(&cli.config, args)
        }
        Command::Replay { file } => {
            init_tracing(log, "warn");
            replay::run(&cli.config, &file)
        }
        Command::Demo { timeout } => {
            init_tracing(log, "error");
            let ok = demo::run(timeout, &mut std::io::stdout()).await?;
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Command::Guard { command: GuardCommand::Reset { target, subject, state_dir } } => {
            init_tracing(log, "warn");
            guard::reset(&cli.config, &target, &subject, state_dir)
        }
        Command::Silence { command } => {
            init_tracing(log, "warn");
            Ok(ExitCode::from(silence::silence(command, &cli.config).await?))
        }
        Command::Notify { command } => {
            init_tracing(log, "warn");
            Ok(ExitCode::from(silence::notify(command, &cli.config).await?))
        }
        Command::Pack { command } => {
            init_tracing(log, "warn");
            Ok(ExitCode::from(pack::run(command, &cli.config).await?))
        }
        Command::DemoRelaunch { url, job } => {
            let jid = demo::relaunch_over_rest(&url, &job).await?;
            outln!("submitted {job}.jar: new job id {jid}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The state store of a command: the SQLite file in `--state-dir`, else the configuration's `store:` and
/// `state_dir` (see [`warden::config::store_location`]).
fn store_location(
    config: &std::path::Path,
    given: Option<PathBuf>,
) -> anyhow::Result<(warden::config::StoreConfig, PathBuf)> {
    warden::config::store_location(config, given).map_err(|d| anyhow::anyhow!("{d}"))
}

/// True when there is a store to read: a PostgreSQL one, or the SQLite file in `dir`.
fn has_store(store: &warden::config::StoreConfig, dir: &std::path::Path) -> bool {
    store.postgres.is_some() || dir.join("warden.db").is_file()
}
