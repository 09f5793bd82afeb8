//! Watching the configuration and the packs: any change (after a quiet `debounce`) or SIGHUP asks the runtime to
//! reload. Directories are watched, not files, because editors replace files on save; editor swap and backup
//! files are ignored. A polling mode serves network file systems.
//!
//! The watched directories themselves may be replaced while Warden runs: `rm -rf rules && cp -r new rules`, a
//! `git checkout`, a Kubernetes ConfigMap volume (whose files are symlinks through `..data`, a symlink re-pointed
//! atomically to a new timestamped directory on every update), or a pack directory that did not exist at start
//! (`warden pack new` creating `plugins/`). A watch on a directory follows that directory, not its name, so after
//! each burst of events (and every `poll_interval` in any case) the watcher resolves every watched path again
//! (symlinks followed, device and inode compared), re-arms the watches whose directory changed, and asks for a
//! reload if one of them did. Besides each pack directory, its parent is watched (or, while it does not exist, its
//! nearest existing ancestor), and both the directory `warden.yaml` is named in and the one it really is in.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fs_notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::ReloadConfig;

/// Why a reload was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A watched file changed (the first changed path), or a watched directory was replaced (its path).
    Changed(PathBuf),
    /// SIGHUP.
    Signal,
    /// `POST /-/reload` on Warden's HTTP server.
    Http,
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

/// What to watch: the configuration file and the pack directories, as the configuration names them (absolute,
/// symlinks not resolved: the watcher resolves them itself, again after every change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// `warden.yaml`.
    pub config: PathBuf,
    /// Pack directories (watched recursively).
    pub dirs: Vec<PathBuf>,
}

impl Watched {
    /// The path a change at `p` is about, if it concerns the configuration or a pack (and is not editor noise).
    fn relevant(&self, p: &Path) -> bool {
        !is_editor_noise(p) && (p == self.config || self.dirs.iter().any(|d| p.starts_with(d)))
    }
}

/// Where a path really is: the directory or file it resolves to, by device and inode. A changed print means the
/// name now leads somewhere else (a replaced directory, a re-pointed symlink), which a watch does not follow.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Print {
    real: PathBuf,
    dev: u64,
    ino: u64,
}

fn print(p: &Path) -> Option<Print> {
    let real = std::fs::canonicalize(p).ok()?;
    let m = std::fs::metadata(&real).ok()?;
    Some(Print { real, dev: m.dev(), ino: m.ino() })
}

fn dir_of(p: &Path) -> PathBuf {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
}

/// The watches `w` needs: path → recursive.
fn wanted(w: &Watched) -> BTreeMap<PathBuf, bool> {
    let mut out: BTreeMap<PathBuf, bool> = BTreeMap::new();
    let shallow = |out: &mut BTreeMap<PathBuf, bool>, p: PathBuf| {
        out.entry(p).or_insert(false);
    };
    shallow(&mut out, dir_of(&w.config));
    if let Some(real) = print(&w.config) {
        shallow(&mut out, dir_of(&real.real));
    }
    for d in &w.dirs {
        if d.is_dir() {
            out.insert(d.clone(), true);
            shallow(&mut out, dir_of(d));
            if let Some(real) = print(d) {
                shallow(&mut out, dir_of(&real.real));
            }
        } else if let Some(a) = d.ancestors().skip(1).find(|a| a.is_dir()) {
            shallow(&mut out, a.to_path_buf());
        }
    }
    out
}

struct Armed {
    recursive: bool,
    print: Option<Print>,
}

struct State {
    watcher: Box<dyn Watcher + Send>,
    what: Watched,
    armed: BTreeMap<PathBuf, Armed>,
    /// Prints of the configuration file and of each pack directory.
    prints: Vec<Option<Print>>,
}

impl State {
    fn item_prints(&self) -> Vec<Option<Print>> {
        std::iter::once(&self.what.config).chain(&self.what.dirs).map(|p| print(p)).collect()
    }

    /// Brings the watches in line with the file system; `moved` are paths that were created, removed or renamed
    /// (a watched directory among them is watched anew even if its inode number was reused). Returns a path whose
    /// watch or resolution changed (a reason to reload), if any.
    fn rearm(&mut self, moved: &[PathBuf]) -> Option<PathBuf> {
        let want = wanted(&self.what);
        let mut changed = None;
        let gone: Vec<PathBuf> = self.armed.keys().filter(|p| !want.contains_key(*p)).cloned().collect();
        for p in gone {
            let _ = self.watcher.unwatch(&p);
            self.armed.remove(&p);
        }
        for (p, recursive) in want {
            let now = print(&p);
            if let Some(a) = self.armed.get(&p) {
                let replaced = moved.iter().any(|m| *m == p || a.print.as_ref().is_some_and(|x| *m == x.real));
                if a.recursive == recursive && a.print == now && !replaced {
                    continue;
                }
                // The directory behind this name changed: the old watch follows the old one (or nothing).
                let _ = self.watcher.unwatch(&p);
                self.armed.remove(&p);
                changed.get_or_insert_with(|| p.clone());
            }
            let mode = if recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
            match self.watcher.watch(&p, mode) {
                Ok(()) => {
                    self.armed.insert(p, Armed { recursive, print: now });
                }
                Err(e) => tracing::warn!("cannot watch `{}`: {e}; trying again at the next change", p.display()),
            }
        }
        let prints = self.item_prints();
        if prints != self.prints {
            let items: Vec<&PathBuf> = std::iter::once(&self.what.config).chain(&self.what.dirs).collect();
            let first = prints.iter().zip(&self.prints).position(|(a, b)| a != b).unwrap_or(0);
            changed.get_or_insert_with(|| items.get(first).map(|p| p.to_path_buf()).unwrap_or_default());
            self.prints = prints;
        }
        if let Some(p) = &changed {
            tracing::info!(path = %p.display(), "a watched file or directory was replaced: watches re-armed");
        }
        changed
    }
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct WatchHandle {
    state: Arc<Mutex<State>>,
    _stop: DropGuard,
}

impl WatchHandle {
    /// Watches `w` from now on (after a reload changed `pack_paths`).
    pub fn update(&self, w: Watched) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.what != w {
            s.what = w;
            s.prints = s.item_prints();
            s.rearm(&[]);
        }
    }
}

/// Starts watching; each burst of relevant changes sends one [`Trigger`] after `debounce` of quiet.
pub fn watch(w: Watched, cfg: &ReloadConfig, tx: mpsc::Sender<Trigger>) -> Result<WatchHandle, String> {
    // The handler runs on the watcher's thread: it only forwards paths (editor noise too, as a reason to check
    // whether a directory was replaced, e.g. Kubernetes' `..data`), and whether they were created, removed or
    // renamed.
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<(PathBuf, bool)>();
    let handler = move |res: fs_notify::Result<Event>| {
        if let Ok(ev) = res {
            let moved = matches!(
                ev.kind,
                EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(fs_notify::event::ModifyKind::Name(_))
            );
            if !matches!(ev.kind, EventKind::Access(_)) {
                for p in ev.paths {
                    let _ = raw_tx.send((p, moved));
                }
            }
        }
    };
    let watcher: Box<dyn Watcher + Send> = if cfg.poll {
        let c = fs_notify::Config::default().with_poll_interval(cfg.poll_interval).with_compare_contents(true);
        Box::new(fs_notify::PollWatcher::new(handler, c).map_err(|e| format!("cannot start the polling watcher: {e}"))?)
    } else {
        Box::new(fs_notify::recommended_watcher(handler).map_err(|e| format!("cannot start the file watcher: {e}"))?)
    };
    let config_dir = dir_of(&w.config);
    let mut state = State { watcher, what: w, armed: BTreeMap::new(), prints: vec![] };
    state.prints = state.item_prints();
    state.rearm(&[]);
    if !state.armed.contains_key(&config_dir) {
        return Err(format!("cannot watch `{}`", config_dir.display()));
    }
    let state = Arc::new(Mutex::new(state));
    let stop = CancellationToken::new();
    let debounce = cfg.debounce;
    let recheck = cfg.poll_interval.max(Duration::from_millis(500));
    let (st, token) = (state.clone(), stop.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(recheck);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let mut paths = vec![];
            tokio::select! {
                _ = token.cancelled() => return,
                p = raw_rx.recv() => {
                    let Some(p) = p else { return };
                    paths.push(p);
                    // Wait for quiet: every further event restarts the wait.
                    loop {
                        tokio::select! {
                            _ = token.cancelled() => return,
                            r = tokio::time::timeout(debounce, raw_rx.recv()) => match r {
                                Ok(Some(p)) => paths.push(p),
                                Ok(None) => return,
                                Err(_) => break,
                            },
                        }
                    }
                }
                _ = every.tick() => {}
            }
            let reason = {
                let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
                let moved: Vec<PathBuf> = paths.iter().filter(|(_, m)| *m).map(|(p, _)| p.clone()).collect();
                let first = paths.into_iter().map(|(p, _)| p).find(|p| s.what.relevant(p));
                let replaced = s.rearm(&moved);
                first.or(replaced)
            };
            if let Some(p) = reason {
                if tx.send(Trigger::Changed(p)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(WatchHandle { state, _stop: stop.drop_guard() })
}

/// A file or directory of `w` modified at `since` or later, if any (the first found): for what changed between
/// loading a plan and arming the watcher. Pack directories are walked at most 8 levels and 10 000 entries deep.
pub fn changed_since(w: &Watched, since: std::time::SystemTime) -> Option<PathBuf> {
    fn newer(p: &Path, since: std::time::SystemTime) -> bool {
        std::fs::metadata(p).and_then(|m| m.modified()).is_ok_and(|t| t >= since)
    }
    fn walk(dir: &Path, since: std::time::SystemTime, depth: usize, budget: &mut usize) -> Option<PathBuf> {
        if newer(dir, since) {
            return Some(dir.to_path_buf());
        }
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            *budget = budget.checked_sub(1)?;
            let p = e.path();
            if p.is_dir() && depth < 8 {
                if let Some(found) = walk(&p, since, depth + 1, budget) {
                    return Some(found);
                }
            } else if newer(&p, since) {
                return Some(p);
            }
        }
        None
    }
    if newer(&w.config, since) {
        return Some(w.config.clone());
    }
    let mut budget = 10_000;
    w.dirs.iter().find_map(|d| {
        if d.is_dir() {
            walk(d, since, 0, &mut budget)
        } else {
            // A pack directory that appeared and went again, or will: its parent changed.
            d.ancestors().skip(1).find(|a| a.is_dir()).filter(|a| newer(a, since)).map(|_| d.clone())
        }
    })
}

/// The directories a configuration's packs live in (for watching): `dir/*` entries name `dir`; built-in packs
/// (`builtin:flink`) have none.
pub fn pack_dirs(pack_paths: &[String], base: &Path) -> Vec<PathBuf> {
    pack_paths
        .iter()
        .filter(|p| !crate::pack::is_builtin_path(p))
        .map(|p| base.join(p.strip_suffix("/*").unwrap_or(p)))
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

    fn quiet(cfg: &ReloadConfig) -> ReloadConfig {
        // No periodic re-check within these tests' waits: what they see comes from events.
        ReloadConfig { poll_interval: Duration::from_secs(3600), ..cfg.clone() }
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
        let cfg = quiet(&ReloadConfig { debounce: Duration::from_millis(150), ..Default::default() });
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

    /// Waits (at most 5 s) for a trigger, skipping none.
    async fn next(rx: &mut mpsc::Receiver<Trigger>, what: &str) -> Trigger {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no reload after {what}"))
            .unwrap()
    }

    /// Lets a burst settle and drops the triggers it caused.
    async fn settle(rx: &mut mpsc::Receiver<Trigger>) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        while rx.try_recv().is_ok() {}
    }

    #[test]
    fn what_changed_since_the_plan_was_loaded_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(rules.join("sub")).unwrap();
        std::fs::write(rules.join("sub/r.rhai"), "1;").unwrap();
        let config = dir.path().join("warden.yaml");
        std::fs::write(&config, "").unwrap();
        let w = Watched { config, dirs: vec![rules.clone(), dir.path().join("plugins")] };
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(changed_since(&w, later), None);
        let earlier = std::time::SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(changed_since(&w, earlier), Some(w.config.clone()));
        let only_dirs = Watched { config: dir.path().join("absent.yaml"), dirs: vec![rules.clone()] };
        assert!(changed_since(&only_dirs, earlier).is_some_and(|p| p.starts_with(&rules)));
    }

    #[tokio::test]
    async fn a_replaced_directory_and_a_repointed_symlink_are_watched_again() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        // A ConfigMap-like layout: rules -> ..data/rules, ..data -> ..v1.
        std::fs::create_dir_all(dir.join("..v1/rules")).unwrap();
        std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/rules", dir.join("rules")).unwrap();
        std::fs::create_dir_all(dir.join("plain")).unwrap();
        let config = dir.join("warden.yaml");
        std::fs::write(&config, "").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let cfg = quiet(&ReloadConfig { debounce: Duration::from_millis(50), ..Default::default() });
        let (rules, plain, plugins) = (dir.join("rules"), dir.join("plain"), dir.join("plugins"));
        let w = Watched { config, dirs: vec![rules.clone(), plain.clone(), plugins.clone()] };
        let _h = watch(w, &cfg, tx).unwrap();

        // The directory is replaced: the change is seen, and so are edits in the new one.
        std::fs::remove_dir_all(&plain).unwrap();
        std::fs::create_dir_all(&plain).unwrap();
        std::fs::write(plain.join("a.rhai"), "1;").unwrap();
        next(&mut rx, "replacing a directory").await;
        settle(&mut rx).await;
        std::fs::write(plain.join("a.rhai"), "2;").unwrap();
        assert_eq!(next(&mut rx, "an edit in the new directory").await, Trigger::Changed(plain.join("a.rhai")));

        // The symlink swap: a new version behind `..data`, the old one deleted.
        std::fs::create_dir_all(dir.join("..v2/rules")).unwrap();
        std::fs::write(dir.join("..v2/rules/r.rhai"), "1;").unwrap();
        std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(dir.join("..v1")).unwrap();
        let t = next(&mut rx, "the symlink swap").await;
        assert!(matches!(&t, Trigger::Changed(p) if p.starts_with(&rules)), "{t:?}");
        settle(&mut rx).await;
        std::fs::write(rules.join("r.rhai"), "2;").unwrap();
        assert_eq!(next(&mut rx, "an edit behind the new symlink").await, Trigger::Changed(rules.join("r.rhai")));

        // A pack directory created after start, then a pack in it.
        settle(&mut rx).await;
        std::fs::create_dir_all(plugins.join("ops")).unwrap();
        next(&mut rx, "creating plugins/").await;
        settle(&mut rx).await;
        std::fs::write(plugins.join("ops/pack.yaml"), "name: ops\n").unwrap();
        assert_eq!(next(&mut rx, "a file in it").await, Trigger::Changed(plugins.join("ops/pack.yaml")));
    }
}
