//! The state store: the action journal, rule state, dispatcher state, storm-guard resets, restart records (the
//! per-job lock, with an owner and a lease), the savepoint history, and the notifier's outbox and silences. Nothing
//! in it is lost across restarts; a CLI process (`warden history`, `warden guard reset`) can use it while the
//! daemon runs.
//!
//! ## Two backends, one set of queries
//!
//! By default the store is one SQLite file, `<state_dir>/warden.db` (WAL mode, busy timeout): nothing to set up.
//! With `store: {postgres: {url: …}}` it is a PostgreSQL database holding the same tables ([`pg`]: the
//! connection's own thread, reconnection, TLS), so that the two Wardens of an HA pair share one state and either
//! can carry on where the other stopped. Every query is written once against the neutral surface in [`db`]
//! (`?1` placeholders, the SQL both dialects share); what differs — DDL, how a transaction begins, fencing — is in
//! [`db`], [`pg`] and [`schema`].
//!
//! ## Exactly once across processes (PostgreSQL)
//!
//! SQLite has one writer at a time (`BEGIN IMMEDIATE` takes the file's write lock), and one daemon per state
//! directory ([`lock`]). On PostgreSQL two processes may write at once, in `READ COMMITTED` transactions; what must
//! happen once is settled by the rows themselves:
//!
//! - **Beginning a restart**: the partial unique index `restarts_one_per_job` with `ON CONFLICT DO NOTHING`: a
//!   second insert for the same job waits for the first to commit, then inserts nothing.
//! - **Claiming, stealing, renewing a restart, writing its steps**: one `UPDATE … WHERE` compare-and-swap on the
//!   owner and lease; a concurrent update waits for the row lock and re-checks the condition on the new row, so
//!   exactly one claimer wins and a step of a lost owner changes nothing.
//! - **Delivering a notification**: [`crate::notify::outbox::claim`], one upsert on `notify_claim` keyed by the
//!   message (a claim of an older leader epoch is taken over, one of the same or a newer one is not).
//! - **The dispatcher's steps, rule state, the journal**: only the leader writes them, and the fence
//!   ([`Store::set_fence`]) makes that true in the database itself: every write transaction share-locks the lease
//!   row and is refused once the lease names another holder or epoch. The lock is held to the commit, so the
//!   election cannot hand the lease on between the check and the write.
//!
//! ## Never on the async workers
//!
//! A SQLite call can wait: for another process's write lock (up to the 5 s busy timeout), for `fsync` (every
//! commit, see below), for a slow disk. On a tokio worker that wait stops every task scheduled there: probes, timers,
//! the fake JobManager in tests. So async code reaches the store through [`Store::call`], which runs a closure on
//! the store's own thread and awaits the answer:
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<warden::store::Store>) -> warden::store::Result<()> {
//! let now = chrono::Utc::now();
//! store.call(move |s| s.finish(7, "ok", "", now)).await?;
//! # Ok(()) }
//! ```
//!
//! Why one dedicated thread with a queue rather than `spawn_blocking` per call:
//!
//! - **Order.** Jobs run one after the other in the order they were queued, so two writes of one task (or the
//!   dispatcher's steps) reach the database in the order they were made. `spawn_blocking` promises no order.
//! - **Bounded.** SQLite has one writer at a time and the store one connection: extra threads would only wait on
//!   its lock. When the database stalls, one thread waits and callers await a slot in a bounded queue; with
//!   `spawn_blocking`, every stalled call would hold one more thread of the blocking pool, which rule evaluation
//!   needs.
//! - **The design's picture.** DESIGN.md puts the store on its own thread, which is where a PostgreSQL backend
//!   would sit too.
//!
//! The thread is started when the store is opened and ends when the last handle to the store is dropped. A closure
//! that panics does not kill it: the panic is passed on to the caller, as `spawn_blocking` would. The synchronous
//! methods stay for blocking contexts (the CLI, rule evaluation on blocking threads, the store thread itself);
//! they serialize on one re-entrant connection lock, so a closure given to [`Store::call`] or
//! [`Store::transaction`] may call them freely.
//!
//! ## One transaction per decision
//!
//! [`Store::transaction`] runs a closure inside `BEGIN IMMEDIATE … COMMIT` (rolled back if it fails or panics;
//! nested calls become savepoints). The dispatcher writes everything one step decides (journal rows and its state)
//! in one, so a crash leaves either all of a step or none of it.
//!
//! ## Durable
//!
//! On PostgreSQL, a commit is durable as the server is configured (`synchronous_commit`, replication). On SQLite:
//! WAL mode with `synchronous = FULL`: every commit is `fsync`ed to the write-ahead log before it returns, so a
//! journalled relaunch or a restart step that Warden acted on survives a power cut. (With WAL, `NORMAL` only syncs
//! at checkpoints: the last commits before a power cut could vanish while their effects — a job submitted, a
//! message sent — did not, and Warden would do them twice.) The cost is one `fsync` per commit, which is why a
//! dispatcher step is one transaction rather than one per row.
//!
//! ## Schema versions
//!
//! `PRAGMA user_version` (SQLite) or the `schema_version` table (PostgreSQL) holds the schema version; [`schema`]
//! has the ordered migrations of each backend (a version means the same tables on both), each applied in its own
//! transaction when a store is opened. A database written by a newer Warden (a version above
//! [`schema::SCHEMA_VERSION`]) is refused rather than misread.
//!
//! ## Bounded growth
//!
//! [`retention`] prunes old journal entries, finished restarts, savepoint history, delivered notifications and
//! ended silences, never something still needed (see its docs); rotation of the alert log and recordings is in
//! [`crate::action::log`].

pub mod db;
mod decisions;
mod guard;
pub mod lock;
pub mod pg;
mod restarts;
pub mod retention;
pub mod schema;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use parking_lot::ReentrantMutex;
use rusqlite::Connection;
use serde::Serialize;

use crate::config::StoreConfig;
use crate::model::ActionKind;

pub use db::{args, Backend, Db, DbError, DbResult, Fence, Row, Value};
pub use decisions::Explanation;
pub use restarts::{RestartRecord, SavepointRecord};
pub use schema::SchemaTooNew;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed, naming it (the SQLite file, or the PostgreSQL URL without its password).
    #[error("state store `{}`{}", path.display(), tail(source.as_ref()))]
    Db {
        /// The database file, or the PostgreSQL URL without its password.
        path: PathBuf,
        /// What SQLite, PostgreSQL or the file system said, or [`SchemaTooNew`].
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A write refused because this process no longer holds the leader lease it acts under (PostgreSQL with a
    /// fence set: see [`Store::set_fence`]). Nothing of the refused write (or of its transaction) was written.
    #[error("state store: {}", db::fenced_message(ours, current))]
    Fenced {
        /// The lease this process acts under.
        ours: Option<Fence>,
        /// The lease as the database has it now (`None`: nobody holds it).
        current: Option<Fence>,
    },
}

impl StoreError {
    /// An error of the store at `path` (a write refused by the fence stays [`StoreError::Fenced`]).
    pub fn new(path: &Path, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let source = source.into();
        match source.downcast::<DbError>() {
            Ok(e) => match *e {
                DbError::Fenced { ours, current } => StoreError::Fenced { ours, current },
                e => StoreError::Db { path: path.to_path_buf(), source: Box::new(e) },
            },
            Err(source) => StoreError::Db { path: path.to_path_buf(), source },
        }
    }

    /// The schema versions, when the database was written by a newer Warden.
    pub fn schema_too_new(&self) -> Option<&SchemaTooNew> {
        match self {
            StoreError::Db { source, .. } => source.downcast_ref(),
            StoreError::Fenced { .. } => None,
        }
    }

    /// True for a write refused by the fence.
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

/// `state store `x` has schema version …` reads better than `state store `x`: has schema version …`.
fn tail(source: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    match source.downcast_ref::<SchemaTooNew>() {
        Some(v) => format!(" {v}"),
        None => format!(": {source}"),
    }
}

/// Result type of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Whose rule state it is: a rule on a target, and for the rules of `for_each: job` probes, one job of it (by
/// name, so that a relaunched job — new jid, same name — keeps its history).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleStateKey {
    /// The namespaced rule name.
    pub rule: String,
    /// The target's name.
    pub target: String,
    /// The job's name, for per-job state.
    pub job: Option<String>,
}

/// The journal's text form of a time: RFC 3339, UTC, milliseconds (sorts as text).
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses a time written by [`ts`].
pub(crate) fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// One journal entry: a requested action and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JournalEntry {
    /// Row id.
    pub id: i64,
    /// When the action was requested.
    pub time: String,
    /// The rule that asked (namespaced), or `warden` for Warden's own entries.
    pub rule: String,
    /// The target.
    pub target: String,
    /// The probe whose observation led to it.
    pub probe: String,
    /// What it is about (job name).
    pub subject: String,
    /// What it records.
    pub action: ActionKind,
    /// For `run`: the command's name; for alerts: `firing` or `reminder`.
    pub detail: String,
    /// `info`, `warning` or `critical`.
    pub severity: String,
    /// One line for people.
    pub summary: String,
    /// Structured details as JSON.
    pub details: serde_json::Value,
    /// `started`, `ok`, `failed: …`, `timeout`, `dry-run`, `suppressed: …`, `interrupted: …`, `sent`.
    pub outcome: String,
    /// Captured output of a command (bounded).
    pub output: String,
    /// When the action finished, if it has.
    pub finished: Option<String>,
}

/// The columns [`journal_row`] reads, in its order.
pub(crate) const JOURNAL_COLS: &str =
    "id, time, rule, target, probe, subject, action, detail, severity, summary, details, outcome, output, finished";

/// A journal row (selected as [`JOURNAL_COLS`]).
pub(crate) fn journal_row(r: &Row) -> DbResult<JournalEntry> {
    let details: String = r.get(10)?;
    Ok(JournalEntry {
        id: r.get(0)?,
        time: r.get(1)?,
        rule: r.get(2)?,
        target: r.get(3)?,
        probe: r.get(4)?,
        subject: r.get(5)?,
        action: r.parse(6)?,
        detail: r.get(7)?,
        severity: r.get(8)?,
        summary: r.get(9)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
        outcome: r.get(11)?,
        output: r.get(12)?,
        finished: r.get(13)?,
    })
}

/// Which journal entries [`Store::find_entries`] returns: all of the given conditions hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalFilter {
    /// About this job (the entry's subject).
    pub job: Option<String>,
    /// From this rule.
    pub rule: Option<String>,
    /// Of this kind.
    pub kind: Option<ActionKind>,
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// With an id above this one (for following the journal).
    pub after_id: Option<i64>,
}

/// A new journal entry (the store assigns id and outcome fields).
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// When.
    pub time: Option<DateTime<Utc>>,
    /// Rule.
    pub rule: String,
    /// Target.
    pub target: String,
    /// Probe.
    pub probe: String,
    /// Subject.
    pub subject: String,
    /// Action kind.
    pub action: ActionKind,
    /// Detail.
    pub detail: String,
    /// Severity.
    pub severity: String,
    /// Summary.
    pub summary: String,
    /// Details.
    pub details: serde_json::Value,
    /// Initial outcome.
    pub outcome: String,
}

impl Default for NewEntry {
    /// An empty `log` entry, to fill in with struct update syntax.
    fn default() -> Self {
        NewEntry {
            time: None,
            rule: String::new(),
            target: String::new(),
            probe: String::new(),
            subject: String::new(),
            action: ActionKind::Log,
            detail: String::new(),
            severity: String::new(),
            summary: String::new(),
            details: serde_json::Value::Null,
            outcome: String::new(),
        }
    }
}

/// A job for the store thread; it carries its own handle to the store and its own reply channel.
type Job = Box<dyn FnOnce() + Send>;

/// How many calls may wait for the store thread before callers wait for a slot.
const QUEUE: usize = 256;

/// The state store, on SQLite or PostgreSQL.
pub struct Store {
    /// Re-entrant: a closure running inside [`Store::transaction`] calls the same methods as anyone else.
    db: ReentrantMutex<Db>,
    /// The SQLite file, or the PostgreSQL URL without its password.
    path: PathBuf,
    /// To the store thread ([`Store::call`]); dropping the store closes it and the thread ends.
    queue: tokio::sync::mpsc::Sender<Job>,
    /// The leader lease this process writes under (PostgreSQL only).
    fence: parking_lot::Mutex<Option<Fence>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `<dir>/warden.db`, upgrading its schema to this Warden's; refuses a database
    /// written by a newer Warden.
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join("warden.db");
        std::fs::create_dir_all(dir).map_err(|e| StoreError::new(&path, e))?;
        let conn = Connection::open(&path).map_err(|e| StoreError::new(&path, e))?;
        Self::init(conn, path)
    }

    /// Opens the store the configuration names: PostgreSQL when `store.postgres` is set, else the SQLite file in
    /// `state_dir`.
    pub fn open_configured(store: &StoreConfig, state_dir: &Path) -> Result<Store> {
        off_worker(|| match &store.postgres {
            Some(pg) => Store::open_postgres(pg.url.expose()),
            None => Store::open(state_dir),
        })
    }

    /// Connects to the PostgreSQL database at `url` (see [`pg`] for TLS and reconnection), upgrading its schema to
    /// this Warden's; refuses a database written by a newer Warden. Errors name the URL without its password.
    pub fn open_postgres(url: &str) -> Result<Store> {
        let target = pg::PgTarget::parse(url).map_err(|e| StoreError::new(Path::new(&pg::redact(url)), e))?;
        let path = PathBuf::from(target.shown());
        let conn = pg::PgConn::connect(target).map_err(|e| StoreError::new(&path, e))?;
        let db = Db::postgres(conn);
        schema::migrate_postgres(&db, &path)?;
        Self::with_db_and_thread(db, path)
    }

    /// An in-memory store, for tests and benchmarks.
    pub fn in_memory() -> Store {
        let conn = Connection::open_in_memory().expect("sqlite in memory");
        Self::init(conn, PathBuf::from(":memory:")).expect("a fresh in-memory store")
    }

    fn init(conn: Connection, path: PathBuf) -> Result<Store> {
        let err = |e: rusqlite::Error| StoreError::new(&path, e);
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(err)?;
        if mode != "wal" && path != Path::new(":memory:") {
            tracing::warn!(db = %path.display(), mode, "the state store cannot use WAL mode; readers will wait for writers");
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        schema::migrate(&conn, &path)?;
        Self::with_db_and_thread(Db::sqlite(conn), path)
    }

    fn with_db_and_thread(db: Db, path: PathBuf) -> Result<Store> {
        let (queue, jobs) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        spawn_store_thread(jobs).map_err(|e| StoreError::new(&path, e))?;
        Ok(Store { db: ReentrantMutex::new(db), path, queue, fence: parking_lot::Mutex::new(None) })
    }

    /// The database file (for PostgreSQL: its URL without the password).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which database the store is on.
    pub fn backend(&self) -> Backend {
        self.db.lock().backend()
    }

    /// Sets the leader lease this process writes under. On PostgreSQL, from then on every write (journal entries,
    /// dispatcher and rule state, restart records and steps, outbox claims and deliveries, silences) first checks,
    /// in its transaction and under a share lock on the lease row, that `warden_leader` still names this holder
    /// and epoch, and is refused with [`StoreError::Fenced`] when it does not; journal entries record the epoch.
    /// `None` (the default) checks nothing: a single Warden, or a CLI process acting for an operator. A Warden
    /// that loses the lease keeps its old fence, so whatever it still tries to write is refused; it never clears
    /// it. On SQLite (one process per state directory, see [`lock`]) the fence is only recorded.
    pub fn set_fence(&self, fence: Option<Fence>) -> Result<()> {
        *self.fence.lock() = fence.clone();
        let db = self.db.lock();
        match db.pg() {
            Some(pg) => pg.set_fence(fence).map_err(|e| self.err(e)),
            None => Ok(()),
        }
    }

    /// The fence set with [`Store::set_fence`].
    pub fn fence(&self) -> Option<Fence> {
        self.fence.lock().clone()
    }

    /// The epoch writes are recorded under: the fence's, or 0 without one.
    pub fn epoch(&self) -> i64 {
        self.fence.lock().as_ref().map_or(0, |f| f.epoch)
    }

    /// Runs `f` with the store on the store's own thread and returns what it returns: the way for async code to
    /// use the store without blocking a tokio worker. Calls run one at a time in the order they were made. If the
    /// returned future is dropped, `f` still runs. A panic in `f` is passed on to the caller.
    pub async fn call<T: Send + 'static>(self: &Arc<Store>, f: impl FnOnce(&Store) -> T + Send + 'static) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = Arc::clone(self);
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&me)));
            drop(me);
            let _ = tx.send(out);
        });
        if let Err(tokio::sync::mpsc::error::SendError(job)) = self.queue.send(job).await {
            // The store thread is gone (it only ends when the store is dropped, so this is not expected): run the
            // job on the blocking pool rather than lose it.
            let _ = tokio::task::spawn_blocking(job).await;
        }
        match rx.await {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => std::panic::resume_unwind(Box::new("the state store dropped a call without running it")),
        }
    }

    /// Runs `f` in one transaction: committed if it returns `Ok`, rolled back if it returns an error or panics.
    /// Inside an enclosing transaction on the same thread it becomes a savepoint. Other threads' store calls wait
    /// until it ends. On SQLite it is `BEGIN IMMEDIATE` (the database's one write lock, across processes); on
    /// PostgreSQL a `READ COMMITTED` transaction whose races are settled by row locks (see the module docs).
    pub fn transaction<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        off_worker(|| self.transaction_here(f))
    }

    fn transaction_here<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Result<T> {
        let db = self.db.lock();
        let nested = db.in_transaction();
        if nested {
            db.batch("SAVEPOINT warden_step").map_err(|e| self.err(e))?;
        } else {
            db.begin().map_err(|e| self.err(e))?;
        }
        let mut guard = Rollback { db: &db, nested, armed: true };
        let out = f(self)?;
        // A commit that fails (SQLite busy past its timeout) leaves the transaction to the guard's rollback.
        if nested {
            db.batch("RELEASE warden_step").map_err(|e| self.err(e))?;
        } else {
            db.end(true).map_err(|e| self.err(e))?;
        }
        guard.armed = false;
        Ok(out)
    }

    /// Runs `f` on the store's connection through the backend-neutral SQL surface ([`Db`]): for subsystems that
    /// keep their own tables (the outbox, silences) and for tests. Their tables are created by the store's
    /// migrations ([`schema`]).
    pub fn with_db<T>(&self, f: impl FnOnce(&Db) -> DbResult<T>) -> Result<T> {
        self.with(f)
    }

    fn with<T>(&self, f: impl FnOnce(&Db) -> DbResult<T>) -> Result<T> {
        off_worker(|| {
            let c = self.db.lock();
            f(&c).map_err(|e| self.err(e))
        })
    }

    /// Runs `f` on the SQLite connection (SQLite only: `None` on PostgreSQL). For tests that look at SQLite
    /// itself (pragmas, triggers).
    #[doc(hidden)]
    pub fn with_sqlite<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<Result<T>> {
        let c = self.db.lock();
        c.sqlite_conn().map(|c| f(c).map_err(|e| self.err(e)))
    }

    fn err(&self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::new(&self.path, e)
    }

    /// Journals a requested action; returns its id. The entry records the epoch of the fence it was written
    /// under (none without one).
    pub fn journal(&self, e: &NewEntry) -> Result<i64> {
        let time = ts(e.time.unwrap_or_else(Utc::now));
        let epoch = self.fence.lock().as_ref().map(|f| f.epoch);
        self.with(|c| {
            c.query_one(
                "INSERT INTO journal (time, rule, target, probe, subject, action, detail, severity, summary, details,
                                      outcome, epoch)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
                args![
                    time,
                    &e.rule,
                    &e.target,
                    &e.probe,
                    &e.subject,
                    e.action.as_str(),
                    &e.detail,
                    &e.severity,
                    &e.summary,
                    e.details.to_string(),
                    &e.outcome,
                    epoch
                ],
            )?
            .get(0)
        })
    }

    /// Records how a journalled action ended.
    pub fn finish(&self, id: i64, outcome: &str, output: &str, at: DateTime<Utc>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE journal SET outcome = ?2, output = ?3, finished = ?4 WHERE id = ?1",
                args![id, outcome, output, ts(at)],
            )
            .map(|_| ())
        })
    }

    /// Sets the outcome of a journalled action that has not finished yet (a notification being retried).
    pub fn set_outcome(&self, id: i64, outcome: &str) -> Result<()> {
        self.with(|c| c.execute("UPDATE journal SET outcome = ?2 WHERE id = ?1", args![id, outcome]).map(|_| ()))
    }

    /// Journal entries, oldest first; the newest `limit` when given.
    pub fn entries(&self, limit: Option<usize>) -> Result<Vec<JournalEntry>> {
        self.find_entries(&JournalFilter::default(), limit)
    }

    /// Journal entries that match `f`, oldest first; the newest `limit` when given.
    pub fn find_entries(&self, f: &JournalFilter, limit: Option<usize>) -> Result<Vec<JournalEntry>> {
        let mut clauses = vec!["1 = 1".to_string()];
        let mut args: Vec<Value> = vec![];
        let mut add = |col: &str, op: &str, v: Option<Value>| {
            if let Some(v) = v {
                args.push(v);
                clauses.push(format!("{col} {op} ?{}", args.len() + 1));
            }
        };
        add("subject", "=", f.job.clone().map(Value::from));
        add("rule", "=", f.rule.clone().map(Value::from));
        add("action", "=", f.kind.map(|k| Value::from(k.as_str())));
        add("time", ">=", f.since.map(|t| Value::from(ts(t))));
        add("id", ">", f.after_id.map(Value::from));
        let sql = format!(
            "SELECT {JOURNAL_COLS}
             FROM (SELECT * FROM journal WHERE {} ORDER BY id DESC LIMIT ?1) AS newest ORDER BY id",
            clauses.join(" AND ")
        );
        let mut params = vec![Value::from(limit_of(limit))];
        params.extend(args);
        self.with(|c| c.query(&sql, &params)?.iter().map(journal_row).collect())
    }

    /// Marks actions that were still running when Warden stopped (crash, kill -9) as interrupted. Called at
    /// start-up; returns how many there were. A restart in progress is not one of them: it resumes, and its entry
    /// is finished when it ends.
    pub fn mark_interrupted(&self, at: DateTime<Utc>) -> Result<usize> {
        self.with(|c| {
            c.execute(
                "UPDATE journal SET outcome = 'interrupted: warden stopped while it ran', finished = ?1
                 WHERE outcome = 'started'
                   AND id NOT IN (SELECT journal_id FROM restarts WHERE outcome IS NULL)",
                args![ts(at)],
            )
        })
    }

    /// Commands and restarts run for `subject` on `target` since `since` (for the storm guard; dry runs and
    /// suppressed ones do not count).
    pub fn runs_since(&self, target: &str, subject: &str, since: DateTime<Utc>) -> Result<u32> {
        self.with(|c| {
            c.query_one(
                "SELECT COUNT(*) FROM journal WHERE action IN ('run', 'restart', 'patch') AND target = ?1 AND subject = ?2
                 AND time >= ?3
                 AND outcome <> 'dry-run' AND outcome NOT LIKE 'suppressed%'",
                args![target, subject, ts(since)],
            )?
            .get(0)
        })
    }

    /// Whether a "giving up" alert was journalled for `subject` on `target` since `since`.
    pub fn gave_up_since(&self, target: &str, subject: &str, since: DateTime<Utc>) -> Result<bool> {
        self.with(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT COUNT(*) FROM journal WHERE action = 'guard' AND target = ?1 AND subject = ?2 AND time >= ?3",
                    args![target, subject, ts(since)],
                )?
                .get(0)?;
            Ok(n > 0)
        })
    }

    /// Resets the storm guard for `subject` on `target` (`warden guard reset`).
    pub fn reset_guard(&self, target: &str, subject: &str, at: DateTime<Utc>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO guard_reset (target, subject, time) VALUES (?1, ?2, ?3)
                 ON CONFLICT (target, subject) DO UPDATE SET time = excluded.time",
                args![target, subject, ts(at)],
            )
            .map(|_| ())
        })
    }

    /// When the storm guard for `subject` on `target` was last reset.
    pub fn guard_reset_at(&self, target: &str, subject: &str) -> Result<Option<DateTime<Utc>>> {
        let t: Option<String> = self.with(|c| {
            c.query_opt("SELECT time FROM guard_reset WHERE target = ?1 AND subject = ?2", args![target, subject])?
                .map(|r| r.get(0))
                .transpose()
        })?;
        Ok(t.as_deref().and_then(parse_ts))
    }

    /// Every rule's saved state, by (rule, target).
    pub fn rule_states(&self) -> Result<HashMap<(String, String), serde_json::Value>> {
        self.load_kv("rule_state")
    }

    /// Saves a rule's state.
    pub fn save_rule_state(&self, rule: &str, target: &str, state: &serde_json::Value) -> Result<()> {
        self.save_kv("rule_state", rule, target, state)
    }

    /// Every per-job rule state (rules of `for_each: job` probes), by (rule, target, job name).
    pub fn job_rule_states(&self) -> Result<HashMap<RuleStateKey, serde_json::Value>> {
        self.with(|c| {
            c.query("SELECT rule, target, job, state FROM job_rule_state", &[])?
                .iter()
                .map(|r| {
                    let s: String = r.get(3)?;
                    let key = RuleStateKey { rule: r.get(0)?, target: r.get(1)?, job: Some(r.get(2)?) };
                    Ok((key, serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)))
                })
                .collect()
        })
    }

    /// Every rule state, per (rule, target) and per (rule, target, job), under one key type.
    pub fn all_rule_states(&self) -> Result<HashMap<RuleStateKey, serde_json::Value>> {
        let mut all = self.job_rule_states()?;
        for ((rule, target), v) in self.rule_states()? {
            all.insert(RuleStateKey { rule, target, job: None }, v);
        }
        Ok(all)
    }

    /// Saves a rule's state in its scope: per (rule, target), or per job when `key.job` is set.
    pub fn save_scoped_rule_state(&self, key: &RuleStateKey, state: &serde_json::Value) -> Result<()> {
        match &key.job {
            None => self.save_rule_state(&key.rule, &key.target, state),
            Some(job) => self.with(|c| {
                c.execute(
                    "INSERT INTO job_rule_state (rule, target, job, state) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (rule, target, job) DO UPDATE SET state = excluded.state",
                    args![&key.rule, &key.target, job, state.to_string()],
                )
                .map(|_| ())
            }),
        }
    }

    /// Drops the per-job states of `rules` for job `job` on `target` (a job gone from the cluster).
    pub fn drop_job_rule_states(&self, rules: &[String], target: &str, job: &str) -> Result<()> {
        self.with(|c| {
            for rule in rules {
                c.execute(
                    "DELETE FROM job_rule_state WHERE rule = ?1 AND target = ?2 AND job = ?3",
                    args![rule, target, job],
                )?;
            }
            Ok(())
        })
    }

    /// Forgets a rule's saved state on every target (its source changed).
    pub fn clear_rule_state(&self, rule: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM rule_state WHERE rule = ?1", args![rule])?;
            c.execute("DELETE FROM job_rule_state WHERE rule = ?1", args![rule]).map(|_| ())
        })
    }

    /// Every (rule, target)'s dispatcher state.
    pub fn dispatch_states(&self) -> Result<HashMap<(String, String), serde_json::Value>> {
        self.load_kv("dispatch_state")
    }

    /// Saves a (rule, target)'s dispatcher state.
    pub fn save_dispatch_state(&self, rule: &str, target: &str, state: &serde_json::Value) -> Result<()> {
        self.save_kv("dispatch_state", rule, target, state)
    }

    fn load_kv(&self, table: &str) -> Result<HashMap<(String, String), serde_json::Value>> {
        self.with(|c| {
            c.query(&format!("SELECT rule, target, state FROM {table}"), &[])?
                .iter()
                .map(|r| {
                    let s: String = r.get(2)?;
                    Ok(((r.get(0)?, r.get(1)?), serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)))
                })
                .collect()
        })
    }

    fn save_kv(&self, table: &str, rule: &str, target: &str, state: &serde_json::Value) -> Result<()> {
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO {table} (rule, target, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (rule, target) DO UPDATE SET state = excluded.state"
                ),
                args![rule, target, state.to_string()],
            )
            .map(|_| ())
        })
    }
}

/// `LIMIT ?` for "the newest `limit`" (all when `None`): both dialects take a large number for "no limit".
pub(crate) fn limit_of(limit: Option<usize>) -> i64 {
    limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

/// Rolls an open transaction (or savepoint) back unless disarmed (on error returns and on panics alike).
struct Rollback<'a> {
    db: &'a Db,
    nested: bool,
    armed: bool,
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        if self.armed {
            let r = if self.nested {
                self.db.batch("ROLLBACK TO warden_step; RELEASE warden_step")
            } else {
                self.db.end(false)
            };
            if let Err(e) = r {
                tracing::error!("state store: cannot roll back a failed transaction: {e}");
            }
        }
    }
}

/// Starts the thread that runs [`Store::call`] jobs, one at a time, until the store is dropped.
fn spawn_store_thread(mut jobs: tokio::sync::mpsc::Receiver<Job>) -> std::io::Result<()> {
    std::thread::Builder::new().name("warden-store".into()).spawn(move || {
        while let Some(job) = jobs.blocking_recv() {
            job();
        }
    })?;
    Ok(())
}

/// Runs blocking store work without holding up an async worker. Most store work runs on the store's own thread
/// ([`Store::call`]) or on blocking threads already; a synchronous call made from a task on a tokio multi-thread
/// worker (an action journalling its outcome, the notifier's outbox) first hands that worker's other tasks to
/// another thread (`block_in_place`), so a slow or locked database never stalls probes. Elsewhere (the store
/// thread, blocking threads, the CLI, current-thread runtimes in tests) the work simply runs.
fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests;
