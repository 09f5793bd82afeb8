//! Watching the configuration and the packs: any change (after a quiet `debounce`) or SIGHUP asks the runtime to
//! reload. Directories are watched, not files, because editors replace files on save; editor swap and backup
//! files are ignored. A polling mode serves network file systems.

use std::path::{Path, PathBuf};

use fs_notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::ReloadConfig;

/// Why a reload was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file changed (the first changed path).
    Changed(PathBuf),
    /// SIGHUP.
    Signal,
}

/// True for files editors write next to the real one (`.x.swp`, `x~`, `4913`, `#x#`, `.#x`).
pub fn is_editor_noise(p: &Path) -> bool {
    let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with(".tmp")
        || name == "4913"
        || (name.starts_with('#') && name.ends_with('#'))
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: Box<dyn Watcher + Send>,
}

/// What to watch: the configuration file and the pack directories.
#[derive(Debug, Clone)]
pub struct Watched {
    /// `warden.yaml`.
    pub config: PathBuf,
    /// Pack directories (watched recursively).
    pub dirs: Vec<PathBuf>,
}

fn relevant(ev: &Event, w: &Watched) -> Option<PathBuf> {
    if matches!(ev.kind, EventKind::Access(_)) {
        return None;
    }
    ev.paths
        .iter()
        .find(|p| !is_editor_noise(p) && (*p == &w.config || w.dirs.iter().any(|d| p.starts_with(d))))
        .cloned()
}

/// Starts watching; each burst of relevant changes sends one [`Trigger`] after `debounce` of quiet.
pub fn watch(w: Watched, cfg: &ReloadConfig, tx: mpsc::Sender<Trigger>) -> Result<WatchHandle, String> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<PathBuf>();
    let w2 = w.clone();
    let handler = move |res: fs_notify::Result<Event>| {
        if let Ok(ev) = res {
            if let Some(p) = relevant(&ev, &w2) {
                let _ = raw_tx.send(p);
            }
        }
    };
    let mut watcher: Box<dyn Watcher + Send> = if cfg.poll {
        let c = fs_notify::Config::default().with_poll_interval(cfg.poll_interval).with_compare_contents(true);
        Box::new(fs_notify::PollWatcher::new(handler, c).map_err(|e| format!("cannot start the polling watcher: {e}"))?)
    } else {
        Box::new(fs_notify::recommended_watcher(handler).map_err(|e| format!("cannot start the file watcher: {e}"))?)
    };
    let config_dir = w.config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    watcher
        .watch(&config_dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch `{}`: {e}", config_dir.display()))?;
    for d in &w.dirs {
        if d.is_dir() {
            watcher.watch(d, RecursiveMode::Recursive).map_err(|e| format!("cannot watch `{}`: {e}", d.display()))?;
        }
    }
    let debounce = cfg.debounce;
    tokio::spawn(async move {
        while let Some(first) = raw_rx.recv().await {
            // Wait for quiet: every further event restarts the wait.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(Trigger::Changed(first)).await.is_err() {
                return;
            }
        }
    });
    Ok(WatchHandle { _watcher: watcher })
}

/// The directories a configuration's packs live in (for watching).
pub fn pack_dirs(pack_paths: &[String], base: &Path) -> Vec<PathBuf> {
    pack_paths
        .iter()
        .map(|p| base.join(p.strip_suffix("/*").unwrap_or(p)))
        .map(|p| p.canonicalize().unwrap_or(p))
        .collect()
}

/// Sends a trigger for every SIGHUP.
pub fn on_sighup(tx: mpsc::Sender<Trigger>) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; reload by editing the files instead");
            return;
        };
        while hup.recv().await.is_some() {
            if tx.send(Trigger::Signal).await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn editor_noise_is_ignored() {
        for p in [".job.rhai.swp", "job.rhai~", "4913", "#job.rhai#", ".#job.rhai", "x.tmp"] {
            assert!(is_editor_noise(Path::new(p)), "{p}");
        }
        assert!(!is_editor_noise(Path::new("rules/job-not-running.rhai")));
        assert!(!is_editor_noise(Path::new("warden.yaml")));
    }

    #[tokio::test]
    async fn a_burst_of_saves_is_one_reload_and_swap_files_none() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        let config = dir.join("warden.yaml");
        std::fs::write(&config, "").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let cfg = ReloadConfig { debounce: Duration::from_millis(150), ..Default::default() };
        let _h = watch(Watched { config: config.clone(), dirs: vec![rules.clone()] }, &cfg, tx).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::write(rules.join(".r.rhai.swp"), "x").unwrap();
        std::fs::write(dir.join("unrelated.txt"), "x").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(600), rx.recv()).await.is_err(), "noise triggered a reload");
        for i in 0..5 {
            std::fs::write(rules.join("r.rhai"), format!("// {i}")).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.expect("a reload").unwrap();
        assert_eq!(t, Trigger::Changed(rules.join("r.rhai")));
        assert!(tokio::time::timeout(Duration::from_millis(500), rx.recv()).await.is_err(), "one burst, one reload");
        std::fs::write(&config, "state_dir: x\n").unwrap();
        let t = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.expect("a reload").unwrap();
        assert_eq!(t, Trigger::Changed(config));
    }
}
