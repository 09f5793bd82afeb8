//! The store's schema and its migrations.
//!
//! `PRAGMA user_version` is the schema version of a database; [`MIGRATIONS`] lists the steps from an empty file to
//! [`SCHEMA_VERSION`], in order. Opening a store applies the steps it lacks, each in its own transaction together
//! with its version number, so an upgrade interrupted half-way resumes at the next start. A migration, once
//! released, never changes: a change of schema is a new step at the end.
//!
//! Version 1 is the schema of the first release (which left `user_version` at 0 and created its tables with
//! `CREATE TABLE IF NOT EXISTS`): its DDL is the same, so on such a database it changes nothing and only records the
//! version. It includes the notifier's tables (`notify_*`, from `notify/outbox.rs` and `notify/silence.rs`), so
//! they are under the same ladder; their own `CREATE TABLE IF NOT EXISTS` then finds them in place (a test checks
//! that the two definitions stay identical).

use std::path::Path;

use rusqlite::Connection;

use super::{Result, StoreError};

/// The schema version this Warden writes and the newest it can read.
pub const SCHEMA_VERSION: u32 = 7;

/// One step of the ladder.
#[derive(Debug)]
pub struct Migration {
    /// The version the database has once this step is applied.
    pub version: u32,
    /// What it brings, for the log.
    pub what: &'static str,
    /// The change, run inside the step's transaction.
    pub apply: fn(&Connection) -> rusqlite::Result<()>,
}

/// The steps, oldest first; the last one's version is [`SCHEMA_VERSION`].
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, what: "the first release's tables", apply: |c| c.execute_batch(V1) },
    Migration {
        version: 2,
        what: "restart owners and leases",
        // Interim builds added these columns without a version: add only what is missing.
        apply: |c| {
            add_column(c, "restarts", "owner", "TEXT")?;
            add_column(c, "restarts", "lease_until", "TEXT")
        },
    },
    Migration {
        version: 3,
        what: "indexes for retention",
        apply: |c| {
            c.execute_batch(
                "CREATE INDEX IF NOT EXISTS journal_time ON journal(time);
                 CREATE INDEX IF NOT EXISTS notify_outbox_done ON notify_outbox(done) WHERE status <> 'pending';",
            )
        },
    },
    Migration {
        version: 4,
        what: "decision records (why a command ran or a job was restarted)",
        apply: |c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS decisions (journal_id INTEGER PRIMARY KEY, record TEXT NOT NULL);",
            )
        },
    },
    Migration {
        version: 5,
        what: "rule state per job (probes with `for_each: job`)",
        apply: |c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS job_rule_state (rule TEXT NOT NULL, target TEXT NOT NULL,
                   job TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (rule, target, job));",
            )
        },
    },
    Migration {
        version: 6,
        what: "the alerts firing now, for inhibit rules",
        apply: |c| c.execute_batch(crate::notify::inhibit::SCHEMA),
    },
    Migration {
        version: 7,
        what: "upgrades, rollbacks and rescales on restart records (kind, overrides, jars, step times)",
        apply: |c| c.execute_batch(V7),
    },
];

/// Version 7: what an upgrade, rollback or rescale records. Plain SQL that PostgreSQL accepts as well.
pub const V7: &str = "
ALTER TABLE restarts ADD COLUMN kind TEXT NOT NULL DEFAULT 'restart';
ALTER TABLE restarts ADD COLUMN overrides TEXT;
ALTER TABLE restarts ADD COLUMN jar_id TEXT;
ALTER TABLE restarts ADD COLUMN prev_jar_id TEXT;
ALTER TABLE restarts ADD COLUMN prev_parallelism INTEGER;
ALTER TABLE restarts ADD COLUMN rollback_of INTEGER;
ALTER TABLE restarts ADD COLUMN cause TEXT;
ALTER TABLE restarts ADD COLUMN steps TEXT;
";

/// `ALTER TABLE table ADD COLUMN column decl`, unless the table has that column already.
fn add_column(c: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let has: bool =
        c.query_row("SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)", [table, column], |r| {
            r.get(0)
        })?;
    if !has {
        c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// The first release's schema, word for word (the store's tables, then the notifier's).
const V1: &str = "
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

CREATE TABLE IF NOT EXISTS notify_pending (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT NOT NULL, grp TEXT NOT NULL, due TEXT NOT NULL, record TEXT NOT NULL, alert TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notify_pending_due ON notify_pending(due);
CREATE TABLE IF NOT EXISTS notify_outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT NOT NULL, lane TEXT NOT NULL, created TEXT NOT NULL, next_attempt TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, last_error TEXT NOT NULL DEFAULT '',
  message TEXT NOT NULL, journal_id INTEGER, done TEXT
);
CREATE INDEX IF NOT EXISTS notify_outbox_lane ON notify_outbox(status, lane, id);
CREATE TABLE IF NOT EXISTS notify_alert (
  channel TEXT NOT NULL, alert TEXT NOT NULL, state TEXT NOT NULL, last_sent TEXT,
  record TEXT NOT NULL, silenced_by TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (channel, alert)
);
CREATE TABLE IF NOT EXISTS notify_silence (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  matchers TEXT NOT NULL, starts TEXT NOT NULL, ends TEXT NOT NULL,
  comment TEXT NOT NULL, author TEXT NOT NULL, created TEXT NOT NULL, removed TEXT
);
";

/// A database written by a newer Warden than this one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("has schema version {found}, this Warden knows up to {known}: upgrade Warden")]
pub struct SchemaTooNew {
    /// The database's version.
    pub found: i64,
    /// The newest this Warden knows ([`SCHEMA_VERSION`]).
    pub known: u32,
}

/// The schema version of the database on `conn`.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Brings the database on `conn` (the file `path`) to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let err = |e: rusqlite::Error| StoreError::new(path, e);
    let too_new = |found: i64| StoreError::new(path, SchemaTooNew { found, known: SCHEMA_VERSION });
    let at = version(conn).map_err(err)?;
    if at > i64::from(SCHEMA_VERSION) {
        return Err(too_new(at));
    }
    let fresh: bool = conn
        .query_row("SELECT NOT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'journal')", [], |r| r.get(0))
        .map_err(err)?;
    for m in MIGRATIONS {
        if i64::from(m.version) <= at {
            continue;
        }
        // Another process may be upgrading the same file: the write lock serializes us, and the version is read
        // again under it.
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        let step = (|| {
            let now = version(conn)?;
            if now >= i64::from(m.version) {
                return Ok(now);
            }
            (m.apply)(conn)?;
            conn.pragma_update(None, "user_version", m.version)?;
            Ok(now)
        })();
        match step.and_then(|from| conn.execute_batch("COMMIT").map(|_| from)) {
            Ok(from) if from < i64::from(m.version) && !fresh => {
                tracing::info!(db = %path.display(), from, to = m.version, "state store upgraded: {}", m.what);
            }
            Ok(from) if from > i64::from(SCHEMA_VERSION) => {
                return Err(too_new(from));
            }
            Ok(_) => {}
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(err(e));
            }
        }
    }
    Ok(())
}
