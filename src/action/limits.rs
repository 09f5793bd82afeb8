//! Bounded work: at most `dispatch.max_concurrent_actions` actions (commands and restarts) run at once, and at
//! most `dispatch.max_concurrent_actions_per_target` for one target. Alerts and log lines are not limited: they
//! never wait behind a slow command.
//!
//! An action that finds no free slot waits its turn (tokio's semaphores are fair: first decided, first run) and
//! the wait is logged; it is never dropped. It waits for its target's slot first and only then for an overall one,
//! so that a target with a queue does not hold overall slots that other targets could use. If Warden's shutdown
//! grace period ends while it still waits, it is journalled as interrupted without having started.
//!
//! The limits belong to the daemon, not to a generation: the [`Executor`](super::Executor) is rebuilt on every
//! reload, while actions started by the old one are still running and must keep counting. [`ActionLimits::install`]
//! registers one set per state directory (one daemon owns a state directory: see `store::lock`), the executor
//! finds it by its store's path, and a reload resizes it in place. An executor without a registered set (an
//! operator's `warden restart`, tests) is not limited.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::DispatchConfig;
use crate::model::Planned;
use crate::store::Store;

/// The journal outcome of an action that was still waiting for a slot when the shutdown grace period ended.
pub const INTERRUPTED: &str = "interrupted: Warden shut down while the action waited for a free slot; it did not start";

/// A semaphore that can be resized while permits are out.
#[derive(Debug)]
struct Resizable {
    sem: Arc<Semaphore>,
    size: usize,
}

impl Resizable {
    fn new(size: usize) -> Self {
        Self { sem: Arc::new(Semaphore::new(size)), size }
    }

    fn resize(&mut self, size: usize) {
        if size > self.size {
            self.sem.add_permits(size - self.size);
        } else if size < self.size {
            let surplus = self.size - size;
            let gone = self.sem.forget_permits(surplus);
            if gone < surplus {
                // The rest are in use: take them out of circulation as they come back.
                let sem = self.sem.clone();
                let rest = u32::try_from(surplus - gone).unwrap_or(u32::MAX);
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Ok(p) = sem.acquire_many_owned(rest).await {
                            p.forget();
                        }
                    });
                }
            }
        }
        self.size = size;
    }

    fn in_use(&self) -> usize {
        self.size.saturating_sub(self.sem.available_permits())
    }
}

#[derive(Debug)]
struct Inner {
    overall: Resizable,
    per_target_size: usize,
    per_target: HashMap<String, Resizable>,
}

/// The daemon's limits on concurrent actions, overall and per target.
#[derive(Debug)]
pub struct ActionLimits {
    inner: Mutex<Inner>,
}

/// A slot to run one action in; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _overall: OwnedSemaphorePermit,
    _target: OwnedSemaphorePermit,
}

type Registry = Mutex<HashMap<PathBuf, Weak<ActionLimits>>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The daemon's registration of its [`ActionLimits`]; dropping it unregisters them.
#[derive(Debug)]
pub struct Installed {
    key: PathBuf,
    limits: Arc<ActionLimits>,
}

impl Installed {
    /// The limits.
    pub fn limits(&self) -> &Arc<ActionLimits> {
        &self.limits
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
        if r.get(&self.key).is_some_and(|w| w.as_ptr() == Arc::as_ptr(&self.limits)) {
            r.remove(&self.key);
        }
    }
}

impl ActionLimits {
    /// Limits of `overall` actions at once, and `per_target` for one target (each at least 1).
    pub fn new(overall: usize, per_target: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                overall: Resizable::new(overall.max(1)),
                per_target_size: per_target.max(1),
                per_target: HashMap::new(),
            }),
        }
    }

    /// Limits from `dispatch:` for the daemon whose state is in `store`, registered until the result is dropped.
    pub fn install(store: &Store, cfg: &DispatchConfig) -> Installed {
        let limits = Arc::new(Self::new(cfg.max_concurrent_actions, cfg.max_concurrent_actions_per_target));
        let key = store.path().to_path_buf();
        registry().lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), Arc::downgrade(&limits));
        Installed { key, limits }
    }

    /// The limits registered for the daemon whose state is in `store`, if any.
    pub fn of(store: &Store) -> Option<Arc<ActionLimits>> {
        registry().lock().unwrap_or_else(|p| p.into_inner()).get(store.path()).and_then(Weak::upgrade)
    }

    /// Applies new sizes (after a reload). Running actions keep their slots; a smaller limit takes effect as they
    /// finish.
    pub fn resize(&self, cfg: &DispatchConfig) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.overall.resize(cfg.max_concurrent_actions.max(1));
        let per = cfg.max_concurrent_actions_per_target.max(1);
        g.per_target_size = per;
        for s in g.per_target.values_mut() {
            s.resize(per);
        }
    }

    /// How many actions hold a slot now: overall, and for `target`.
    pub fn in_use(&self, target: &str) -> (usize, usize) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (g.overall.in_use(), g.per_target.get(target).map(Resizable::in_use).unwrap_or(0))
    }

    /// Waits for a slot for an action (`what`, for the log) on `target`. `None` when `cancel` fired first.
    pub async fn acquire(&self, target: &str, what: &str, cancel: &CancellationToken) -> Option<Slot> {
        let (overall, per_target, limits) = {
            let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let size = g.per_target_size;
            let t = g.per_target.entry(target.to_string()).or_insert_with(|| Resizable::new(size)).sem.clone();
            (g.overall.sem.clone(), t, (g.overall.size, size))
        };
        if let (Ok(t), Ok(o)) = (per_target.clone().try_acquire_owned(), overall.clone().try_acquire_owned()) {
            return Some(Slot { _overall: o, _target: t });
        }
        let (busy, busy_here) = self.in_use(target);
        tracing::info!(
            target_name = %target,
            action = %what,
            running = busy,
            running_on_target = busy_here,
            max_concurrent_actions = limits.0,
            max_concurrent_actions_per_target = limits.1,
            "waiting for a free action slot"
        );
        let waited = Instant::now();
        let slot = async {
            let t = per_target.acquire_owned().await.ok()?;
            let o = overall.acquire_owned().await.ok()?;
            Some(Slot { _overall: o, _target: t })
        };
        let slot = tokio::select! {
            s = slot => s,
            _ = cancel.cancelled() => None,
        };
        match &slot {
            Some(_) => tracing::info!(
                target_name = %target,
                action = %what,
                waited_ms = waited.elapsed().as_millis() as u64,
                "got an action slot: starting"
            ),
            None => tracing::warn!(target_name = %target, action = %what, "shutting down: the action never got a slot"),
        }
        slot
    }
}

/// The executor's hook: waits until `p` may run, if it is a command or a restart of a daemon with registered
/// limits. `Err(journal_id)` when the shutdown grace period ended first: journal it as [`INTERRUPTED`].
pub async fn wait_turn(store: &Store, p: &Planned, cancel: &CancellationToken) -> Result<Option<Slot>, i64> {
    let (journal_id, target, what) = match p {
        Planned::Notify { .. } => return Ok(None),
        Planned::Run { journal_id, origin, command, subject, .. } => {
            (*journal_id, &origin.target, format!("run `{command}` for {subject}"))
        }
        Planned::Restart { journal_id, origin, job, .. } => (*journal_id, &origin.target, format!("restart {job}")),
        Planned::Patch { journal_id, origin, path, .. } => (*journal_id, &origin.target, format!("patch {path}")),
        Planned::Rescale { journal_id, origin, job, .. } => (*journal_id, &origin.target, format!("rescale {job}")),
    };
    let Some(limits) = ActionLimits::of(store) else { return Ok(None) };
    limits.acquire(target, &what, cancel).await.map(Some).ok_or(journal_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Runs `jobs` actions (target of each given) through `limits`, each holding its slot for 1 s of paused time;
    /// returns the most that ran at once overall and per target, and the order they started in.
    async fn run_all(limits: Arc<ActionLimits>, jobs: &[&'static str]) -> (usize, HashMap<String, usize>, Vec<usize>) {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let per = Arc::new(Mutex::new((HashMap::<String, usize>::new(), HashMap::<String, usize>::new(), vec![])));
        let mut tasks = vec![];
        for (i, t) in jobs.iter().enumerate() {
            let (limits, running, peak, per, t) = (limits.clone(), running.clone(), peak.clone(), per.clone(), *t);
            tasks.push(tokio::spawn(async move {
                let _slot = limits.acquire(t, "test", &CancellationToken::new()).await.expect("a slot");
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                {
                    let mut g = per.lock().unwrap();
                    let n = g.0.entry(t.to_string()).or_default();
                    *n += 1;
                    let n = *n;
                    let m = g.1.entry(t.to_string()).or_default();
                    *m = (*m).max(n);
                    g.2.push(i);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                *per.lock().unwrap().0.get_mut(t).unwrap() -= 1;
            }));
            tokio::task::yield_now().await; // decided one after the other
        }
        for t in tasks {
            t.await.unwrap();
        }
        let g = per.lock().unwrap();
        (peak.load(Ordering::SeqCst), g.1.clone(), g.2.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn actions_wait_their_turn_overall_and_per_target_and_none_is_dropped() {
        let limits = Arc::new(ActionLimits::new(3, 2));
        let jobs = ["a", "a", "a", "a", "b", "b", "c"];
        let started = tokio::time::Instant::now();
        let (peak, per, order) = run_all(limits.clone(), &jobs).await;
        assert_eq!(peak, 3);
        assert_eq!(per["a"], 2);
        assert!(per.values().all(|n| *n <= 2), "{per:?}");
        assert_eq!(order.len(), jobs.len(), "every action ran");
        // a's third and fourth wait for a's first two; they do not keep b and c from the free overall slot.
        assert_eq!(&order[..3], &[0, 1, 4]);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(limits.in_use("a"), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_resize_in_place_while_actions_run() {
        let limits = Arc::new(ActionLimits::new(1, 1));
        let cfg = |o, p| DispatchConfig {
            max_concurrent_actions: o,
            max_concurrent_actions_per_target: p,
            ..Default::default()
        };
        let slot = limits.acquire("a", "first", &CancellationToken::new()).await.unwrap();
        limits.resize(&cfg(4, 4));
        let (peak, _, _) = run_all(limits.clone(), &["a", "a", "a", "b"]).await;
        assert_eq!(peak, 3, "the held slot counts; three more run beside it");
        drop(slot);
        limits.resize(&cfg(2, 2));
        let (peak, _, _) = run_all(limits.clone(), &["a", "b", "c", "d"]).await;
        assert_eq!(peak, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_action_still_waiting_at_the_end_of_the_grace_period_does_not_start() {
        let limits = ActionLimits::new(1, 1);
        let _busy = limits.acquire("a", "busy", &CancellationToken::new()).await.unwrap();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            c.cancel();
        });
        assert!(limits.acquire("b", "late", &cancel).await.is_none());
    }

    #[test]
    fn the_daemon_registers_its_limits_by_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(ActionLimits::of(&store).is_none());
        let installed = ActionLimits::install(&store, &DispatchConfig::default());
        let found = ActionLimits::of(&store).expect("registered");
        assert!(Arc::ptr_eq(&found, installed.limits()));
        drop(found);
        drop(installed);
        assert!(ActionLimits::of(&store).is_none());
    }
}
