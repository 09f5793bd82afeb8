//! The `log` action: every alert, resolution and rule log line appended as one JSON object per line; and the
//! recording of observations (`warden run --record`). Both files rotate by size (`retention.alert_log`,
//! `retention.recordings`): when a line would take `FILE` past `max_size`, `FILE.<keep-1>` … `FILE.1` move up one
//! (the oldest falls off), `FILE` becomes `FILE.1` and a new `FILE` starts. A line is never split across files, so
//! `cat FILE.2 FILE.1 FILE` is the whole history that is kept, in order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::config::RotationConfig;
use crate::model::AlertRecord;

/// An append-only JSON-lines file that rotates by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    rotation: RotationConfig,
    lock: Mutex<()>,
}

impl RotatingFile {
    /// A file at `path` (created on first write, with its directory).
    pub fn new(path: impl Into<PathBuf>, rotation: RotationConfig) -> Self {
        Self { path: path.into(), rotation, lock: Mutex::new(()) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rotation settings.
    pub fn rotation(&self) -> RotationConfig {
        self.rotation
    }

    /// Appends `line` and a newline, rotating first if the file would grow past `max_size`. The file is opened
    /// for each line, so an operator may move it away at any time.
    pub fn append_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let size = match std::fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if size > 0 && size.saturating_add(buf.len() as u64) > self.rotation.max_size.0 {
            self.rotate()?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&buf)
    }

    /// `FILE.<n>`.
    pub fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&self) -> std::io::Result<()> {
        let keep = self.rotation.keep;
        if keep == 0 {
            return remove_if_there(&self.path);
        }
        remove_if_there(&self.rotated(keep))?;
        for n in (1..keep).rev() {
            match std::fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, self.rotated(1))
    }
}

fn remove_if_there(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The alert log: an append-only JSON-lines file of alerts, resolutions and rule log lines.
#[derive(Debug)]
pub struct AlertLog {
    file: RotatingFile,
}

impl AlertLog {
    /// A log at `path` (created on first write, with its directory), rotated with the default settings
    /// (`64MiB`, 5 old files kept).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::with_rotation(path, RotationConfig::default())
    }

    /// A log at `path` rotated as `rotation` says (`retention.alert_log`).
    pub fn with_rotation(path: impl Into<PathBuf>, rotation: RotationConfig) -> Self {
        Self { file: RotatingFile::new(path, rotation) }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends one record: `{"time", "event", "rule", "target", "subject", "severity", "summary", "details"}`.
    pub fn append(&self, rec: &AlertRecord) -> std::io::Result<()> {
        let line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        self.file.append_line(&line)
    }
}

/// The recording of `warden run --record FILE`: one observation per line, for `warden replay`, rotated as
/// `retention.recordings` says. The runtime opens it at start-up ([`RecordWriter::create`], so a bad path is an
/// error before anything runs) and calls [`RecordWriter::write`] for each observation.
#[derive(Debug)]
pub struct RecordWriter {
    file: RotatingFile,
}

impl RecordWriter {
    /// Creates (or appends to) the recording at `path`; fails now if it cannot be opened for writing.
    pub fn create(path: impl Into<PathBuf>, rotation: RotationConfig) -> std::io::Result<Self> {
        let file = RotatingFile::new(path, rotation);
        std::fs::OpenOptions::new().create(true).append(true).open(file.path())?;
        Ok(Self { file })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends `value` as one JSON line (an [`crate::model::Observation`] for replay).
    pub fn write<T: Serialize + ?Sized>(&self, value: &T) -> std::io::Result<()> {
        let line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
        self.file.append_line(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::ByteSize;

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_string).collect()
    }

    #[test]
    fn a_full_file_rotates_keeping_n_old_files_and_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = RotatingFile::new(dir.path().join("sub/rec.jsonl"), RotationConfig { max_size: ByteSize(20), keep: 2 });
        for i in 0..8 {
            f.append_line(format!("line-{i}:45").as_bytes()).unwrap(); // 10 bytes with the newline
        }
        // Two lines per file; the two oldest files fell off.
        assert_eq!(lines(f.path()), ["line-6:45", "line-7:45"]);
        assert_eq!(lines(&f.rotated(1)), ["line-4:45", "line-5:45"]);
        assert_eq!(lines(&f.rotated(2)), ["line-2:45", "line-3:45"]);
        assert!(!f.rotated(3).exists());
        // A line longer than max_size gets a file of its own rather than being split.
        f.append_line(&[b'x'; 50]).unwrap();
        assert_eq!(lines(f.path()), ["x".repeat(50)]);
        assert_eq!(lines(&f.rotated(1)), ["line-6:45", "line-7:45"]);
    }

    #[test]
    fn keep_zero_starts_over_and_the_recorder_fails_early_on_a_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        let r = RecordWriter::create(dir.path().join("r.jsonl"), RotationConfig { max_size: ByteSize(30), keep: 0 })
            .unwrap();
        for i in 0..5 {
            r.write(&serde_json::json!({ "n": i })).unwrap(); // 8 bytes each
        }
        assert_eq!(lines(r.path()), [r#"{"n":3}"#, r#"{"n":4}"#]);
        assert!(!dir.path().join("r.jsonl.1").exists());
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        assert!(RecordWriter::create(blocked.join("r.jsonl"), RotationConfig::default()).is_err());
    }
}
