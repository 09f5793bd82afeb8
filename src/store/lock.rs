//! One owner per state directory: `warden run` holds an exclusive `flock` on `<state_dir>/warden.lock` for as long
//! as it runs. The kernel releases it when the process ends in any way (kill -9 and power cuts included), so a stale
//! lock file never blocks a restart. The file's text names the holder (pid, host, start time) for the message a
//! second daemon prints.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The file name of the lock inside the state directory.
pub const LOCK_FILE: &str = "warden.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "the state directory `{}` is in use by another Warden ({holder}); one state directory has one owner: stop \
         that one first, or give this one its own `state_dir`",
        dir.display()
    )]
    Held {
        /// The state directory.
        dir: PathBuf,
        /// Who holds it, as written in the lock file (`pid 123 on host since …`).
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock the state directory `{}`: {source}", dir.display())]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock on `dir` (created if needed) without waiting.
    pub fn acquire(dir: &Path) -> Result<StateLock, LockError> {
        let io = |source| LockError::Io { dir: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "a process that has not written its name yet" } else { holder };
                return Err(LockError::Held { dir: dir.to_path_buf(), holder: holder.to_string() });
            }
            return Err(io(err));
        }
        let me = format!(
            "pid {} on {} since {}\n",
            std::process::id(),
            hostname(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(me.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(StateLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// This machine's host name (`unknown-host` if the system will not say).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_with_the_holders_pid_and_host_and_the_lock_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description: a second open in this process conflicts like another
        // process would.
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(err.contains(&hostname()), "{err}");
        assert!(err.contains("in use by another Warden"), "{err}");
        drop(first);
        StateLock::acquire(dir.path()).expect("free again after the holder went away");
    }
}
