//! The state store: one SQLite file (`<state_dir>/warden.db`) with the action journal, rule state, dispatcher
//! state and storm-guard resets. Nothing in it is lost across restarts; a CLI process (`warden history`,
//! `warden guard reset`) can use it while the daemon runs (WAL mode, busy timeout).

mod guard;
pub mod lock;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::model::{ActionKind, RestartResult, RestartStep, RestartStrategy};

/// A store failure, naming the database file.
#[derive(Debug, thiserror::Error)]
#[error("state store `{}`: {source}", path.display())]
pub struct StoreError {
    /// The database file.
    pub path: PathBuf,
    /// What SQLite or the file system said.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Result type of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The journal's text form of a time: RFC 3339, UTC, milliseconds (sorts as text).
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
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

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  time TEXT NOT NULL, rule TEXT NOT NULL, target TEXT NOT NULL, probe TEXT NOT NULL,
  subject TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL, severity TEXT NOT NULL,
  summary TEXT NOT NULL, details TEXT NOT NULL, outcome TEXT NOT NULL,
  output TEXT NOT NULL DEFAULT '', finished TEXT
);
CREATE INDEX IF NOT EXISTS journal_runs ON journal(action, target, subject, time);
CREATE TABLE IF NOT EXISTS rule_state (rule TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL,
  PRIMARY KEY (rule, target));
CREATE TABLE IF NOT EXISTS dispatch_state (rule TEXT NOT NULL, target TEXT NOT NULL, state TEXT NOT NULL,
  PRIMARY KEY (rule, target));
CREATE TABLE IF NOT EXISTS restarts (
  id INTEGER PRIMARY KEY AUTOINCREMENT, journal_id INTEGER NOT NULL, target TEXT NOT NULL, job TEXT NOT NULL,
  strategy TEXT NOT NULL, old_jid TEXT NOT NULL, step TEXT NOT NULL, trigger_id TEXT, location TEXT,
  new_jid TEXT, outcome TEXT, started TEXT NOT NULL, updated TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS restarts_one_per_job ON restarts(target, job) WHERE outcome IS NULL;
CREATE TABLE IF NOT EXISTS savepoints (
  id INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, job TEXT NOT NULL, location TEXT NOT NULL,
  kind TEXT NOT NULL, jid TEXT NOT NULL, time TEXT NOT NULL, used_by INTEGER
);
CREATE TABLE IF NOT EXISTS guard_reset (target TEXT NOT NULL, subject TEXT NOT NULL, time TEXT NOT NULL,
  PRIMARY KEY (target, subject));
";

impl Store {
    /// Opens (creating if needed) `<dir>/warden.db`.
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join("warden.db");
        let err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError { path: path.clone(), source: e };
        std::fs::create_dir_all(dir).map_err(|e| err(Box::new(e)))?;
        let conn = Connection::open(&path).map_err(|e| err(Box::new(e)))?;
        Self::init(conn, path.clone())
    }

    /// An in-memory store, for tests and benchmarks.
    pub fn in_memory() -> Store {
        Self::init(Connection::open_in_memory().expect("sqlite in memory"), PathBuf::from(":memory:")).expect("schema")
    }

    fn init(conn: Connection, path: PathBuf) -> Result<Store> {
        let s = Store { conn: Mutex::new(conn), path };
        s.with(|c| {
            c.busy_timeout(std::time::Duration::from_secs(5))?;
            c.pragma_update(None, "journal_mode", "WAL").ok();
            c.pragma_update(None, "synchronous", "NORMAL")?;
            c.execute_batch(SCHEMA)?;
            // Restart ownership (interim: the versioned migration ladder takes this over).
            let cols: Vec<String> = c
                .prepare("SELECT name FROM pragma_table_info('restarts')")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if !cols.iter().any(|c| c == "owner") {
                c.execute_batch(
                    "ALTER TABLE restarts ADD COLUMN owner TEXT; ALTER TABLE restarts ADD COLUMN lease_until TEXT;",
                )?;
            }
            Ok(())
        })?;
        Ok(s)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the database connection (for subsystems that keep their own tables, such as the outbox).
    /// Create tables with `CREATE TABLE IF NOT EXISTS`.
    pub fn with_conn<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.with(f)
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let c = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&c).map_err(|e| StoreError { path: self.path.clone(), source: Box::new(e) })
    }

    /// Journals a requested action; returns its id.
    pub fn journal(&self, e: &NewEntry) -> Result<i64> {
        let time = ts(e.time.unwrap_or_else(Utc::now));
        self.with(|c| {
            c.execute(
                "INSERT INTO journal (time, rule, target, probe, subject, action, detail, severity, summary, details, outcome)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    time,
                    e.rule,
                    e.target,
                    e.probe,
                    e.subject,
                    e.action.as_str(),
                    e.detail,
                    e.severity,
                    e.summary,
                    e.details.to_string(),
                    e.outcome
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Records how a journalled action ended.
    pub fn finish(&self, id: i64, outcome: &str, output: &str, at: DateTime<Utc>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE journal SET outcome = ?2, output = ?3, finished = ?4 WHERE id = ?1",
                params![id, outcome, output, ts(at)],
            )
            .map(|_| ())
        })
    }

    /// Journal entries, oldest first; the newest `limit` when given.
    pub fn entries(&self, limit: Option<usize>) -> Result<Vec<JournalEntry>> {
        let limit = limit.map(|l| l as i64).unwrap_or(-1);
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, time, rule, target, probe, subject, action, detail, severity, summary, details, outcome,
                        output, finished
                 FROM (SELECT * FROM journal ORDER BY id DESC LIMIT ?1) ORDER BY id",
            )?;
            let rows = st.query_map([limit], |r| {
                let details: String = r.get(10)?;
                Ok(JournalEntry {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    rule: r.get(2)?,
                    target: r.get(3)?,
                    probe: r.get(4)?,
                    subject: r.get(5)?,
                    action: parse_col(r, 6)?,
                    detail: r.get(7)?,
                    severity: r.get(8)?,
                    summary: r.get(9)?,
                    details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
                    outcome: r.get(11)?,
                    output: r.get(12)?,
                    finished: r.get(13)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Marks actions that were still running when Warden stopped (crash, kill -9) as interrupted. Called at
    /// start-up; returns how many there were.
    pub fn mark_interrupted(&self, at: DateTime<Utc>) -> Result<usize> {
        self.with(|c| {
            c.execute(
                "UPDATE journal SET outcome = 'interrupted: warden stopped while it ran', finished = ?1
                 WHERE outcome = 'started'
                   AND id NOT IN (SELECT journal_id FROM restarts WHERE outcome IS NULL)",
                [ts(at)],
            )
        })
    }

    /// Commands and restarts run for `subject` on `target` since `since` (for the storm guard; dry runs and
    /// suppressed ones do not count).
    pub fn runs_since(&self, target: &str, subject: &str, since: DateTime<Utc>) -> Result<u32> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM journal WHERE action IN ('run', 'restart') AND target = ?1 AND subject = ?2
                 AND time >= ?3
                 AND outcome <> 'dry-run' AND outcome NOT LIKE 'suppressed%'",
                params![target, subject, ts(since)],
                |r| r.get(0),
            )
        })
    }

    /// Whether a "giving up" alert was journalled for `subject` on `target` since `since`.
    pub fn gave_up_since(&self, target: &str, subject: &str, since: DateTime<Utc>) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM journal WHERE action = 'guard' AND target = ?1 AND subject = ?2 AND time >= ?3",
                params![target, subject, ts(since)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        })
    }

    /// Resets the storm guard for `subject` on `target` (`warden guard reset`).
    pub fn reset_guard(&self, target: &str, subject: &str, at: DateTime<Utc>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO guard_reset (target, subject, time) VALUES (?1, ?2, ?3)
                 ON CONFLICT (target, subject) DO UPDATE SET time = excluded.time",
                params![target, subject, ts(at)],
            )
            .map(|_| ())
        })
    }

    /// When the storm guard for `subject` on `target` was last reset.
    pub fn guard_reset_at(&self, target: &str, subject: &str) -> Result<Option<DateTime<Utc>>> {
        let t: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT time FROM guard_reset WHERE target = ?1 AND subject = ?2",
                params![target, subject],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc)))
    }

    /// Every rule's saved state, by (rule, target).
    pub fn rule_states(&self) -> Result<HashMap<(String, String), serde_json::Value>> {
        self.load_kv("rule_state")
    }

    /// Saves a rule's state.
    pub fn save_rule_state(&self, rule: &str, target: &str, state: &serde_json::Value) -> Result<()> {
        self.save_kv("rule_state", rule, target, state)
    }

    /// Forgets a rule's saved state on every target (its source changed).
    pub fn clear_rule_state(&self, rule: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM rule_state WHERE rule = ?1", [rule]).map(|_| ()))
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
            let mut st = c.prepare(&format!("SELECT rule, target, state FROM {table}"))?;
            let rows = st.query_map([], |r| {
                let s: String = r.get(2)?;
                Ok(((r.get(0)?, r.get(1)?), serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)))
            })?;
            rows.collect()
        })
    }

    fn save_kv(&self, table: &str, rule: &str, target: &str, state: &serde_json::Value) -> Result<()> {
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO {table} (rule, target, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT (rule, target) DO UPDATE SET state = excluded.state"
                ),
                params![rule, target, state.to_string()],
            )
            .map(|_| ())
        })
    }
}

/// A restart in progress or done: the restart's own journal, step by step. While `outcome` is `None` it is the
/// per-job lock (at most one restart per target and job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartRecord {
    /// Row id.
    pub id: i64,
    /// The journal entry of the `restart` action.
    pub journal_id: i64,
    /// Target.
    pub target: String,
    /// Job name.
    pub job: String,
    /// How the job is brought back.
    pub strategy: RestartStrategy,
    /// The run being replaced (may be empty).
    pub old_jid: String,
    /// The last step reached.
    pub step: RestartStep,
    /// The savepoint trigger id, once triggered.
    pub trigger_id: Option<String>,
    /// The savepoint or checkpoint location the job restarts from (`None`: stateless or not chosen yet).
    pub location: Option<String>,
    /// The new job's id, once submitted.
    pub new_jid: Option<String>,
    /// `None` while in progress; then how it ended.
    pub outcome: Option<RestartResult>,
    /// When it started.
    pub started: String,
    /// When it last moved.
    pub updated: String,
    /// Who drives it (`pid <n> on <host>`), while it is in progress.
    pub owner: Option<String>,
    /// Until when the owner's claim holds (RFC 3339); after that another process may take the restart over.
    pub lease_until: Option<String>,
}

/// A savepoint or checkpoint location Warden took or used for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavepointRecord {
    /// Target.
    pub target: String,
    /// Job name.
    pub job: String,
    /// Location.
    pub location: String,
    /// `savepoint` or `checkpoint`.
    pub kind: String,
    /// The job run it belongs to.
    pub jid: String,
    /// When Warden recorded it.
    pub time: String,
    /// The restart that used it, if any.
    pub used_by: Option<i64>,
}

const RESTART_COLS: &str =
    "id, journal_id, target, job, strategy, old_jid, step, trigger_id, location, new_jid, outcome, \
     started, updated, owner, lease_until";

/// Reads a text column as one of the domain enums; a value this binary does not know is a read error naming it.
fn parse_col<T: std::str::FromStr<Err = crate::model::UnknownValue>>(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let s: String = r.get(i)?;
    s.parse().map_err(|e| conv_err(i, e))
}

fn conv_err(i: usize, e: crate::model::UnknownValue) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
}

fn restart_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RestartRecord> {
    Ok(RestartRecord {
        id: r.get(0)?,
        journal_id: r.get(1)?,
        target: r.get(2)?,
        job: r.get(3)?,
        strategy: parse_col(r, 4)?,
        old_jid: r.get(5)?,
        step: parse_col(r, 6)?,
        trigger_id: r.get(7)?,
        location: r.get(8)?,
        new_jid: r.get(9)?,
        outcome: r.get::<_, Option<String>>(10)?.map(|s| s.parse()).transpose().map_err(|e| conv_err(10, e))?,
        started: r.get(11)?,
        updated: r.get(12)?,
        owner: r.get(13)?,
        lease_until: r.get(14)?,
    })
}

impl Store {
    /// Starts a restart record, which locks the job: `Ok(None)` if a restart of the same job on the same target is
    /// already in progress (its record is returned by [`Store::restart_in_progress`]).
    #[allow(clippy::too_many_arguments)] // one row's columns, named at every call site
    pub fn begin_restart(
        &self,
        journal_id: i64,
        target: &str,
        job: &str,
        strategy: RestartStrategy,
        old_jid: &str,
        at: DateTime<Utc>,
        owner: &str,
        lease: chrono::Duration,
    ) -> Result<Option<RestartRecord>> {
        let now = ts(at);
        let until = ts(at + lease);
        let inserted = self.with(|c| {
            match c.execute(
                "INSERT INTO restarts (journal_id, target, job, strategy, old_jid, step, started, updated, owner,
                                       lease_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'started', ?6, ?6, ?7, ?8)",
                params![journal_id, target, job, strategy.as_str(), old_jid, now, owner, until],
            ) {
                Ok(_) => Ok(Some(c.last_insert_rowid())),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })?;
        match inserted {
            Some(id) => self.restart(id),
            None => Ok(None),
        }
    }

    /// One restart record.
    pub fn restart(&self, id: i64) -> Result<Option<RestartRecord>> {
        self.with(|c| {
            c.query_row(&format!("SELECT {RESTART_COLS} FROM restarts WHERE id = ?1"), [id], restart_row).optional()
        })
    }

    /// The restart of `job` on `target` that is in progress, if any.
    pub fn restart_in_progress(&self, target: &str, job: &str) -> Result<Option<RestartRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RESTART_COLS} FROM restarts WHERE target = ?1 AND job = ?2 AND outcome IS NULL"),
                params![target, job],
                restart_row,
            )
            .optional()
        })
    }

    /// Every restart still in progress (to resume at start-up).
    pub fn unfinished_restarts(&self) -> Result<Vec<RestartRecord>> {
        self.with(|c| {
            let mut st =
                c.prepare(&format!("SELECT {RESTART_COLS} FROM restarts WHERE outcome IS NULL ORDER BY id"))?;
            let rows = st.query_map([], restart_row)?;
            rows.collect()
        })
    }

    /// Restarts, newest last (the newest `limit` when given).
    pub fn restarts(&self, limit: Option<usize>) -> Result<Vec<RestartRecord>> {
        let limit = limit.map(|l| l as i64).unwrap_or(-1);
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {RESTART_COLS} FROM (SELECT * FROM restarts ORDER BY id DESC LIMIT ?1) ORDER BY id"
            ))?;
            let rows = st.query_map([limit], restart_row)?;
            rows.collect()
        })
    }

    /// Saves a restart's progress (before and after each step). Only its owner may: when another process has taken
    /// the restart over (`r.owner` is no longer the owner), nothing is written and the result is an error.
    pub fn update_restart(&self, r: &RestartRecord, at: DateTime<Utc>) -> Result<()> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE restarts SET step = ?2, trigger_id = ?3, location = ?4, new_jid = ?5, outcome = ?6, updated = ?7
                 WHERE id = ?1 AND owner IS ?8",
                params![
                    r.id,
                    r.step.as_str(),
                    r.trigger_id,
                    r.location,
                    r.new_jid,
                    r.outcome.as_ref().map(|o| o.to_string()),
                    ts(at),
                    r.owner
                ],
            )
        })?;
        if n == 0 {
            return Err(StoreError {
                path: self.path.clone(),
                source: format!("restart #{} is driven by another process now; this one stops", r.id).into(),
            });
        }
        Ok(())
    }

    /// Records a savepoint or checkpoint location of a job (newest kept: `keep` per target and job).
    #[allow(clippy::too_many_arguments)] // one row's columns, named at every call site
    pub fn record_savepoint(
        &self,
        target: &str,
        job: &str,
        location: &str,
        kind: &str,
        jid: &str,
        used_by: Option<i64>,
        at: DateTime<Utc>,
        keep: usize,
    ) -> Result<()> {
        self.with(|c| {
            let existing: Option<i64> = c
                .query_row(
                    "SELECT id FROM savepoints WHERE target = ?1 AND job = ?2 AND location = ?3",
                    params![target, job, location],
                    |r| r.get(0),
                )
                .optional()?;
            match existing {
                Some(id) => {
                    if used_by.is_some() {
                        c.execute("UPDATE savepoints SET used_by = ?2 WHERE id = ?1", params![id, used_by])?;
                    }
                }
                None => {
                    c.execute(
                        "INSERT INTO savepoints (target, job, location, kind, jid, time, used_by)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![target, job, location, kind, jid, ts(at), used_by],
                    )?;
                }
            }
            c.execute(
                "DELETE FROM savepoints WHERE target = ?1 AND job = ?2 AND id NOT IN
                   (SELECT id FROM savepoints WHERE target = ?1 AND job = ?2 ORDER BY id DESC LIMIT ?3)",
                params![target, job, keep as i64],
            )?;
            Ok(())
        })
    }

    /// The savepoint and checkpoint history of `job` on `target` (all jobs when `job` is `None`), newest first.
    pub fn savepoints(&self, target: Option<&str>, job: Option<&str>) -> Result<Vec<SavepointRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT target, job, location, kind, jid, time, used_by FROM savepoints
                 WHERE (?1 IS NULL OR target = ?1) AND (?2 IS NULL OR job = ?2) ORDER BY id DESC",
            )?;
            let rows = st.query_map(params![target, job], |r| {
                Ok(SavepointRecord {
                    target: r.get(0)?,
                    job: r.get(1)?,
                    location: r.get(2)?,
                    kind: r.get(3)?,
                    jid: r.get(4)?,
                    time: r.get(5)?,
                    used_by: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }
}

impl Store {
    /// Takes over restart `id` for `owner` until `now + lease`, if it is unfinished and its lease has expired or was
    /// released. One UPDATE decides, so of two processes claiming at once exactly one wins.
    pub fn claim_restart(
        &self,
        id: i64,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<RestartRecord>> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE restarts SET owner = ?2, lease_until = ?4
                 WHERE id = ?1 AND outcome IS NULL AND (lease_until IS NULL OR lease_until < ?3)",
                params![id, owner, ts(now), ts(now + lease)],
            )
        })?;
        if n == 0 {
            return Ok(None);
        }
        self.restart(id)
    }

    /// Takes over restart `id` from `from`, a previous owner known to be dead (its process is gone), whatever its
    /// lease says. Compare-and-swap on the owner: `None` if someone else took it first.
    pub fn steal_restart(
        &self,
        id: i64,
        from: &str,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<Option<RestartRecord>> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE restarts SET owner = ?3, lease_until = ?4 WHERE id = ?1 AND owner = ?2 AND outcome IS NULL",
                params![id, from, owner, ts(now + lease)],
            )
        })?;
        if n == 0 {
            return Ok(None);
        }
        self.restart(id)
    }

    /// Extends `owner`'s lease on restart `id`; `false` when another owner holds it now (the caller must stop).
    pub fn renew_restart_lease(
        &self,
        id: i64,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE restarts SET lease_until = ?3 WHERE id = ?1 AND owner = ?2 AND outcome IS NULL",
                params![id, owner, ts(now + lease)],
            )
        })
        .map(|n| n == 1)
    }

    /// Gives up `owner`'s lease on restart `id` at once (it was interrupted), so another process may resume it.
    pub fn release_restart(&self, id: i64, owner: &str) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE restarts SET lease_until = NULL WHERE id = ?1 AND owner = ?2", params![id, owner])
                .map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_survives_reopen_and_interrupted_runs_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Utc::now();
        {
            let s = Store::open(dir.path()).unwrap();
            let id = s
                .journal(&NewEntry {
                    time: Some(t0),
                    rule: "flink/job-not-running".into(),
                    target: "jm".into(),
                    subject: "clicks".into(),
                    action: ActionKind::Run,
                    detail: "relaunch".into(),
                    outcome: "started".into(),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(id, 1);
            s.save_rule_state("r", "jm", &serde_json::json!({"n": 1})).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.mark_interrupted(Utc::now()).unwrap(), 1);
        let e = s.entries(None).unwrap();
        assert_eq!(e.len(), 1);
        assert!(e[0].outcome.starts_with("interrupted"));
        assert_eq!(s.rule_states().unwrap()[&("r".into(), "jm".into())], serde_json::json!({"n": 1}));
        assert_eq!(s.runs_since("jm", "clicks", t0 - chrono::Duration::seconds(1)).unwrap(), 1);
        assert_eq!(s.runs_since("jm", "clicks", t0 + chrono::Duration::seconds(1)).unwrap(), 0);
    }
}
