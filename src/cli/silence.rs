//! `warden silence …` and `warden notify test …`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use clap::{Subcommand, ValueEnum};

use warden::notify::matcher::Matcher;
use warden::notify::silence as silences;
use warden::store::Store;

/// `warden silence` subcommands.
#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// Silence the alerts that match, for a while: they are journalled, not sent. Takes effect at once, also in a
    /// running daemon. When it ends, alerts that still fire are sent.
    Add {
        /// What to silence, as KEY=VALUE (repeat for more; all must match; the same key twice means either value).
        /// Keys: job, target, rule, pack, severity, event, labels.NAME. Values may use `*`.
        #[arg(long = "match", value_name = "KEY=VALUE", required = true)]
        matchers: Vec<String>,
        /// How long, e.g. `2h`, `30m`.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
        duration: Duration,
        /// Why (shown in `warden silence list` and the journal).
        #[arg(long, default_value = "")]
        comment: String,
        /// Who (default: `$USER`).
        #[arg(long, env = "USER", default_value = "unknown")]
        author: String,
        /// Use this state directory instead of the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// List silences that are active or pending (with `--all`, also those that ended).
    List {
        /// Include silences that ended or were removed.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Use this state directory instead of the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// End a silence now.
    Rm {
        /// The silence's id (from `warden silence list`).
        id: i64,
        /// Use this state directory instead of the configuration's.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

/// Output format of `warden silence list`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// `warden notify` subcommands.
#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Send a test message through one channel and report the exact error if it fails.
    Test {
        /// The channel's name under `notify.channels`.
        channel: String,
    },
}

/// A CLI failure, printed by `main`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

fn parse_duration(s: &str) -> Result<Duration, String> {
    warden::config::units::parse_duration(s)
}

/// The configuration's store (or the SQLite file in `--state-dir`).
fn open(config: &Path, given: Option<PathBuf>) -> Result<Store, CliError> {
    let (sc, dir) = warden::config::store_location(config, given).map_err(|d| CliError(d.to_string()))?;
    Store::open_configured(&sc, &dir).map_err(|e| CliError(e.to_string()))
}

/// Runs a `warden silence` subcommand with the configuration at `config`. Returns the process exit code.
pub async fn silence(cmd: SilenceCommand, config: &Path) -> Result<u8, CliError> {
    let now = Utc::now();
    match cmd {
        SilenceCommand::Add { matchers, duration, comment, author, state_dir: dir } => {
            let m = Matcher::from_pairs(&matchers).map_err(|e| CliError(format!("--match: {e}")))?;
            if duration.is_zero() {
                return Err(CliError("--for: the duration must be longer than 0s".into()));
            }
            let store = open(config, dir)?;
            let ends = now + chrono::Duration::from_std(duration).map_err(|e| CliError(format!("--for: {e}")))?;
            let id =
                silences::add(&store, &matchers, now, ends, &comment, &author).map_err(|e| CliError(e.to_string()))?;
            outln!(
                "silence {id} added: {m} until {} ({})",
                warden::notify::template::human_time(ends),
                humantime::format_duration(duration)
            );
            Ok(0)
        }
        SilenceCommand::List { all, format, state_dir: dir } => {
            let store = open(config, dir)?;
            let list = silences::list(&store, now, all).map_err(|e| CliError(e.to_string()))?;
            match format {
                Format::Json => {
                    for s in &list {
                        let mut v = serde_json::to_value(s).expect("json");
                        v["active"] = serde_json::json!(s.active(now));
                        outln!("{v}");
                    }
                }
                Format::Text if list.is_empty() => outln!("no silences"),
                Format::Text => {
                    outln!("{:<5} {:<8} {:<24} {:<32} {:<12} COMMENT", "ID", "STATE", "ENDS", "MATCH", "AUTHOR");
                    for s in &list {
                        let state = if s.removed.is_some() {
                            "removed"
                        } else if s.ends <= now {
                            "expired"
                        } else if s.starts > now {
                            "pending"
                        } else {
                            "active"
                        };
                        outln!(
                            "{:<5} {:<8} {:<24} {:<32} {:<12} {}",
                            s.id,
                            state,
                            warden::notify::template::human_time(s.ends),
                            s.matchers.join(" "),
                            s.author,
                            s.comment
                        );
                    }
                }
            }
            Ok(0)
        }
        SilenceCommand::Rm { id, state_dir: dir } => {
            let store = open(config, dir)?;
            if silences::remove(&store, id, now).map_err(|e| CliError(e.to_string()))? {
                outln!("silence {id} removed: alerts it held back that still fire are sent now");
                Ok(0)
            } else {
                Err(CliError(format!("no active silence with id {id} (see `warden silence list --all`)")))
            }
        }
    }
}

/// Runs a `warden notify` subcommand with the configuration at `config`. Returns the process exit code.
pub async fn notify(cmd: NotifyCommand, config: &Path) -> Result<u8, CliError> {
    match cmd {
        NotifyCommand::Test { channel } => {
            let loaded = warden::config::load(config)
                .map_err(|d| CliError(format!("{d}\n{} problem(s) in the configuration; fix them first", d.len())))?;
            let c = &loaded.config;
            match warden::notify::send_test(&c.notify, &c.targets, &channel).await {
                Ok(to) => {
                    outln!("sent a test message through `{channel}` ({to})");
                    Ok(0)
                }
                Err(e) => Err(CliError(format!("test message not delivered: {e}"))),
            }
        }
    }
}
