//! `warden silence …` and `warden notify test …`.

use std::path::Path;

use clap::Subcommand;

/// `warden silence` subcommands.
#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// List silences.
    List,
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

/// Runs a `warden silence` subcommand with the configuration at `config`. Returns the process exit code.
pub async fn silence(_cmd: SilenceCommand, _config: &Path) -> Result<u8, CliError> {
    Err(CliError("silences are not implemented yet".into()))
}

/// Runs a `warden notify` subcommand with the configuration at `config`. Returns the process exit code.
pub async fn notify(_cmd: NotifyCommand, _config: &Path) -> Result<u8, CliError> {
    Err(CliError("notification channels are not implemented yet".into()))
}
