//! `warden guard reset`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::store::Store;

pub fn reset(config: &Path, target: &str, subject: &str, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = super::state_dir(config, state_dir)?;
    let store = Store::open(&dir)?;
    store.reset_guard(target, subject, chrono::Utc::now())?;
    println!("storm guard reset for `{subject}` on `{target}`: relaunches are allowed again");
    Ok(ExitCode::SUCCESS)
}
