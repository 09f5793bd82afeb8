//! Secrets in configuration: a literal, `${ENV_VAR}`, or `file:/path` (first line of the file, trimmed).
//!
//! A [`Secret`] keeps its reference as written and resolves it at load time; its `Debug` and `Display` never show
//! the value, so it cannot leak into logs, the journal or the status output by accident.
//!
//! A `file:` secret remembers which file it read and that file's identity (modification time, size and, on Unix,
//! inode): [`Secret::file_changed`] tells, with one `stat`, that the file was replaced since, as the kubelet does
//! with a projected service-account token (a new file swapped in through a symlink, about every hour). The daemon
//! then reloads, which reads the new value.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Deserializer};

/// A value that may be secret, as written in the config (`${TOKEN}`, `file:/run/secrets/x`, or a literal).
#[derive(Clone)]
pub struct Secret {
    reference: String,
    value: Option<String>,
    /// For a resolved `file:` secret: the file and its identity when it was read.
    file: Option<(PathBuf, Option<FileStamp>)>,
}

/// Two secrets are equal when they are written alike and hold the same value (whenever their files were read).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.reference == other.reference && self.value == other.value
    }
}

impl Eq for Secret {}

/// What tells that a file was replaced or rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// The identity of the file at `path` (following symlinks), `None` when it cannot be read.
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp { modified: m.modified().ok(), len: m.len(), inode })
    }
}

impl Secret {
    /// A secret from a literal or a reference; call [`Secret::resolve`] before use.
    pub fn new(reference: impl Into<String>) -> Self {
        Self { reference: reference.into(), value: None, file: None }
    }

    /// For a `file:` secret: its file, when the file was replaced or changed since it was read (or cannot be read
    /// any more). `None` for other secrets and for an unchanged file. One `stat`, no read.
    pub fn file_changed(&self) -> Option<&Path> {
        let (path, stamp) = self.file.as_ref()?;
        (FileStamp::of(path) != *stamp).then_some(path.as_path())
    }

    /// Reads the environment variable or file the reference names. `base` resolves relative `file:` paths.
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        let r = self.reference.trim();
        let v = if let Some(name) = r.strip_prefix("${").and_then(|s| s.strip_suffix('}')) {
            std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set"))?
        } else if let Some(p) = r.strip_prefix("file:") {
            let path = base.join(p);
            // The identity first: a file replaced while it is read is then seen as changed, and read again.
            let stamp = FileStamp::of(&path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read secret file `{}`: {e}", path.display()))?;
            self.file = Some((path, stamp));
            text.lines().next().unwrap_or("").trim().to_string()
        } else {
            self.reference.clone()
        };
        self.value = Some(v);
        Ok(())
    }

    /// The resolved value (the literal itself when the secret was never resolved).
    pub fn expose(&self) -> &str {
        self.value.as_deref().unwrap_or(&self.reference)
    }

    /// True when the value came from the environment or a file (rather than a literal in the config).
    pub fn is_reference(&self) -> bool {
        let r = self.reference.trim();
        (r.starts_with("${") && r.ends_with('}')) || r.starts_with("file:")
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret::new(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_and_literal() {
        // A variable every test process has (no `set_var`: it is unsound while other test threads run).
        let path = std::env::var("PATH").expect("PATH is set");
        let mut s = Secret::new("${PATH}");
        s.resolve(Path::new(".")).unwrap();
        assert_eq!(s.expose(), path);
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let mut f = Secret::new("file:pw");
        f.resolve(dir.path()).unwrap();
        assert_eq!(f.expose(), "hunter2");

        assert_eq!(f.file_changed(), None);

        let mut missing = Secret::new("${WARDEN_TEST_SECRET_MISSING}");
        assert!(missing.resolve(Path::new(".")).unwrap_err().contains("WARDEN_TEST_SECRET_MISSING"));
    }

    /// The kubelet's way of rotating a projected token: a new directory, and the `..data` symlink swapped to it.
    #[cfg(unix)]
    #[test]
    fn a_file_secret_replaced_through_a_symlink_is_seen_as_changed_and_read_anew() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let rotate = |n: u32, token: &str| {
            std::fs::create_dir(d.join(format!("..2026_{n}"))).unwrap();
            std::fs::write(d.join(format!("..2026_{n}/token")), token).unwrap();
            std::os::unix::fs::symlink(format!("..2026_{n}"), d.join("..data_tmp")).unwrap();
            std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        };
        rotate(1, "token-one");
        std::os::unix::fs::symlink("..data/token", d.join("token")).unwrap();
        let mut s = Secret::new("file:token");
        s.resolve(d).unwrap();
        assert_eq!((s.expose(), s.file_changed()), ("token-one", None));
        assert_eq!(s.file_changed(), None, "an unchanged file stays unchanged");
        // Same length, and possibly the same modification time: the inode tells.
        rotate(2, "token-two");
        assert_eq!(s.file_changed(), Some(d.join("token").as_path()));
        let mut again = Secret::new("file:token");
        again.resolve(d).unwrap();
        assert_eq!((again.expose(), again.file_changed()), ("token-two", None));
        assert_ne!(s, again, "a new value is a different secret (the target gets a new client)");
        // A file that vanished counts as changed (the reload that follows says why it cannot read it).
        std::fs::remove_file(d.join("..2026_2/token")).unwrap();
        assert!(again.file_changed().is_some());
        assert_eq!(Secret::new("literal").file_changed(), None);
    }
}
