//! The `log` action: every alert, resolution and rule log line appended as one JSON object per line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::model::AlertRecord;

/// An append-only JSON-lines file.
#[derive(Debug)]
pub struct AlertLog {
    path: PathBuf,
    lock: Mutex<()>,
}

impl AlertLog {
    /// A log at `path` (created on first write, with its directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), lock: Mutex::new(()) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record: `{"time", "event", "rule", "target", "subject", "severity", "summary", "details"}`.
    pub fn append(&self, rec: &AlertRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&line)
    }
}
