//! Silences (made with `warden silence add`, kept in the store so that the CLI and a running daemon share them)
//! and recurring maintenance windows (from the configuration). A silenced alert is journalled, not sent; if it
//! still fires when the silence ends, it is sent then.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::schedule::Schedule;
use crate::store::{args, ts, Backend, DbResult, Row, Store, StoreError};

use super::config::MaintenanceConfig;
use super::matcher::{Facts, Matcher};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notify_silence (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  matchers TEXT NOT NULL, starts TEXT NOT NULL, ends TEXT NOT NULL,
  comment TEXT NOT NULL, author TEXT NOT NULL, created TEXT NOT NULL, removed TEXT
);
";

/// One silence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    /// Its id (for `warden silence rm`).
    pub id: i64,
    /// The `KEY=VALUE` matchers as given.
    pub matchers: Vec<String>,
    /// When it starts.
    pub starts: DateTime<Utc>,
    /// When it ends.
    pub ends: DateTime<Utc>,
    /// Why.
    pub comment: String,
    /// Who.
    pub author: String,
    /// When it was removed early, if it was.
    pub removed: Option<DateTime<Utc>>,
}

impl Silence {
    /// True while it applies.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.removed.is_none() && self.starts <= now && now < self.ends
    }

    /// The compiled matcher (silences are checked when added, so this only fails on a hand-edited database).
    pub fn matcher(&self) -> Option<Matcher> {
        Matcher::from_pairs(&self.matchers).ok()
    }

    /// `silence 3 (job=clicks) until 2026-03-01 12:00:00 UTC`.
    pub fn describe(&self) -> String {
        format!("silence {} ({}) until {}", self.id, self.matchers.join(" "), super::template::human_time(self.ends))
    }
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// Creates the table if needed (SQLite; on PostgreSQL the store's migrations made it).
pub fn init(store: &Store) -> Result<(), StoreError> {
    match store.backend() {
        Backend::Sqlite => store.with_db(|c| c.batch(SCHEMA)),
        Backend::Postgres => Ok(()),
    }
}

/// Adds a silence; returns its id. The matchers must parse ([`Matcher::from_pairs`]).
pub fn add(
    store: &Store,
    matchers: &[String],
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
    comment: &str,
    author: &str,
) -> Result<i64, StoreError> {
    init(store)?;
    let m = serde_json::to_string(matchers).expect("strings");
    store.with_db(|c| {
        c.query_one(
            "INSERT INTO notify_silence (matchers, starts, ends, comment, author, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             RETURNING id",
            args![m, ts(starts), ts(ends), comment, author, ts(Utc::now())],
        )?
        .get(0)
    })
}

/// Ends a silence now. Returns false when there is no silence with that id or it is already over.
pub fn remove(store: &Store, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
    init(store)?;
    let Some(s) = get(store, id)? else { return Ok(false) };
    if s.removed.is_some() || s.ends <= now {
        return Ok(false);
    }
    store.with_db(|c| c.execute("UPDATE notify_silence SET removed = ?2 WHERE id = ?1", args![id, ts(now)]))?;
    Ok(true)
}

/// One silence by id.
pub fn get(store: &Store, id: i64) -> Result<Option<Silence>, StoreError> {
    store.with_db(|c| {
        c.query_opt(
            "SELECT id, matchers, starts, ends, comment, author, removed FROM notify_silence WHERE id = ?1",
            args![id],
        )?
        .map(|r| row(&r))
        .transpose()
    })
}

fn row(r: &Row) -> DbResult<Silence> {
    let m: String = r.get(1)?;
    Ok(Silence {
        id: r.get(0)?,
        matchers: serde_json::from_str(&m).unwrap_or_default(),
        starts: parse_ts(&r.get::<String>(2)?),
        ends: parse_ts(&r.get::<String>(3)?),
        comment: r.get(4)?,
        author: r.get(5)?,
        removed: r.get::<Option<String>>(6)?.map(|s| parse_ts(&s)),
    })
}

/// Silences that are active at `now` or start later; with `all`, also those that ended.
pub fn list(store: &Store, now: DateTime<Utc>, all: bool) -> Result<Vec<Silence>, StoreError> {
    init(store)?;
    let v: Vec<Silence> = store.with_db(|c| {
        c.query("SELECT id, matchers, starts, ends, comment, author, removed FROM notify_silence ORDER BY id", &[])?
            .iter()
            .map(row)
            .collect()
    })?;
    Ok(v.into_iter().filter(|s| all || (s.removed.is_none() && s.ends > now)).collect())
}

/// A compiled maintenance window.
#[derive(Debug, Clone)]
pub struct Window {
    name: String,
    schedule: Schedule,
    duration: chrono::Duration,
    matcher: Matcher,
}

impl Window {
    /// Compiles a window (the configuration check has validated it).
    pub fn new(c: &MaintenanceConfig) -> Option<Window> {
        Some(Window {
            name: c.name.clone(),
            schedule: Schedule::cron(&c.cron).ok()?,
            duration: chrono::Duration::from_std(c.duration).ok()?,
            matcher: Matcher::from_config(&c.matches).ok()?,
        })
    }

    /// When the window that is open at `now` closes, if one is.
    pub fn open_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The first opening after `now - duration` that is not after `now` means we are inside.
        let start = self.schedule.next_after(now - self.duration - chrono::Duration::milliseconds(1))?;
        (start <= now && now < start + self.duration).then_some(start + self.duration)
    }
}

/// Why an alert is silenced right now, if it is: the first matching silence or open maintenance window.
pub fn silenced_by(silences: &[Silence], windows: &[Window], f: &Facts<'_>, now: DateTime<Utc>) -> Option<String> {
    for s in silences {
        if s.active(now) && s.matcher().is_some_and(|m| m.matches(f)) {
            return Some(s.describe());
        }
    }
    for w in windows {
        if let Some(until) = w.open_until(now) {
            if w.matcher.matches(f) {
                return Some(format!("maintenance window `{}` until {}", w.name, super::template::human_time(until)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn add_list_remove() {
        let store = Store::in_memory();
        let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        let h = chrono::Duration::hours(1);
        let a = add(&store, &["job=clicks".into()], t0, t0 + h, "deploy", "ana").unwrap();
        let b = add(&store, &["target=jm".into()], t0, t0 + h * 2, "", "ana").unwrap();
        assert_eq!(list(&store, t0, false).unwrap().len(), 2);
        assert!(remove(&store, a, t0).unwrap());
        assert!(!remove(&store, a, t0).unwrap(), "already removed");
        assert!(!remove(&store, 99, t0).unwrap());
        let l = list(&store, t0, false).unwrap();
        assert_eq!(l.iter().map(|s| s.id).collect::<Vec<_>>(), vec![b]);
        assert_eq!(list(&store, t0 + h * 3, false).unwrap().len(), 0, "expired ones are not listed");
        assert_eq!(list(&store, t0 + h * 3, true).unwrap().len(), 2);
    }

    #[test]
    fn maintenance_window_is_open_for_its_duration_after_each_start() {
        let cfg = MaintenanceConfig {
            name: "nightly".into(),
            cron: "0 0 2 * * *".into(),
            duration: std::time::Duration::from_secs(3600),
            matches: Default::default(),
        };
        let w = Window::new(&cfg).unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 3, 1, h, m, 0).unwrap();
        assert_eq!(w.open_until(at(1, 59)), None);
        assert_eq!(w.open_until(at(2, 0)), Some(at(3, 0)));
        assert_eq!(w.open_until(at(2, 59)), Some(at(3, 0)));
        assert_eq!(w.open_until(at(3, 0)), None);
    }
}
