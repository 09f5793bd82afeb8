//! The notifier's tables in the state store:
//!
//! - `notify_pending`: alerts waiting out their group's `group_wait`, per channel and group (target + event);
//! - `notify_outbox`: rendered messages, one lane per channel and target, delivered oldest first per lane (so
//!   the messages about one alert keep their order); `pending` until `sent` or `failed`;
//! - `notify_alert`: per channel and alert, whether its firing was `sent` (and when: for `repeat_interval` and
//!   for sending *resolved* only to channels that heard it fire) or `held` by a silence (to send it when the
//!   silence ends) or by an inhibition (to send it when nothing inhibits it any more);
//! - `notify_firing` ([`super::inhibit`]): the alerts firing now, which may inhibit others.
//!
//! Every change is a transaction, so a crash leaves each alert either waiting, queued or sent — never lost, and
//! a sent message is never queued again.

use chrono::{DateTime, Utc};

use crate::model::AlertRecord;
use crate::store::{args, ts, Backend, Store, StoreError};

use super::channel::Message;

pub(crate) const SCHEMA: &str = "
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
";

/// Creates the tables if needed (SQLite; on PostgreSQL the store's migrations made them), and releases the
/// outbox claims a previous run of this process's epoch left behind (it stopped while delivering: see [`claim`]).
pub fn init(store: &Store) -> Result<(), StoreError> {
    if store.backend() == Backend::Sqlite {
        store.with_db(|c| c.batch(SCHEMA))?;
    }
    super::inhibit::init(store)?;
    super::silence::init(store)?;
    store.with_db(|c| c.execute("DELETE FROM notify_claim WHERE epoch <= ?1", args![store.epoch()]))?;
    Ok(())
}

/// The key of an alert across events: rule, target and subject.
pub fn alert_key(r: &AlertRecord) -> String {
    format!("{}\u{1f}{}\u{1f}{}", r.rule, r.target, r.subject)
}

/// The group an alert joins on a channel: same target, same event.
pub fn group_key(target: &str, event: &str) -> String {
    format!("{target}\u{1f}{event}")
}

/// The group of alerts released from an inhibition (sent as firing when nothing inhibits them any more): kept
/// apart from other firing alerts so that, when its wait is over, the ones that resolved meanwhile (a JobManager
/// and its jobs coming back at once) are dropped rather than sent as firing and then resolved.
pub fn released_group_key(target: &str) -> String {
    format!("{target}\u{1f}firing\u{1f}released")
}

/// True for a group made by [`released_group_key`].
pub fn is_released_group(grp: &str) -> bool {
    grp.ends_with("\u{1f}firing\u{1f}released")
}

/// The lane of a message: same channel and target are delivered in order.
pub fn lane(channel: &str, target: &str) -> String {
    format!("{channel}\u{1f}{target}")
}

/// What a channel knows about an alert.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertState {
    /// Its firing was queued at `last_sent`.
    Sent {
        /// When the last message about it was queued.
        last_sent: DateTime<Utc>,
    },
    /// A silence or an inhibition holds it back.
    Held {
        /// Why (`silence 3 (…) until …`, `inhibited by …`).
        why: String,
    },
}

fn parse_ts(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// One change to make for a submitted alert, applied together in one transaction.
#[derive(Debug, Clone)]
pub enum Change {
    /// Wait in the group `grp` of `channel` until `due` (or the group's existing due time).
    Pending {
        /// Channel.
        channel: String,
        /// Group key.
        grp: String,
        /// Due time if this starts the group.
        due: DateTime<Utc>,
        /// The alert.
        record: AlertRecord,
    },
    /// Record that the channel was told the alert fires.
    Sent {
        /// Channel.
        channel: String,
        /// Alert key.
        alert: String,
        /// Now.
        at: DateTime<Utc>,
    },
    /// Hold the alert back (silenced).
    Hold {
        /// Channel.
        channel: String,
        /// Alert key.
        alert: String,
        /// The latest record.
        record: AlertRecord,
        /// Why.
        silenced_by: String,
    },
    /// Forget the alert (it resolved).
    Forget {
        /// Channel.
        channel: String,
        /// Alert key.
        alert: String,
    },
    /// Take everything about the alert out of the channel's waiting groups (it became inhibited before its first
    /// message went out).
    Unqueue {
        /// Channel.
        channel: String,
        /// Alert key.
        alert: String,
    },
    /// Take one waiting row out of its group.
    DropPending {
        /// The row.
        id: i64,
    },
    /// Keep the set of firing alerts up to date ([`super::inhibit::track`]).
    Track {
        /// The alert (firing, reminder or resolved).
        record: AlertRecord,
    },
}

/// What `channel` knows about `alert`.
pub fn alert_state(store: &Store, channel: &str, alert: &str) -> Result<Option<AlertState>, StoreError> {
    store.with_db(|c| {
        let Some(r) = c.query_opt(
            "SELECT state, last_sent, silenced_by FROM notify_alert WHERE channel = ?1 AND alert = ?2",
            args![channel, alert],
        )?
        else {
            return Ok(None);
        };
        let state: String = r.get(0)?;
        let last: Option<String> = r.get(1)?;
        Ok(Some(match state.as_str() {
            "held" => AlertState::Held { why: r.get(2)? },
            _ => AlertState::Sent { last_sent: last.map(|s| parse_ts(&s)).unwrap_or_default() },
        }))
    })
}

/// Applies changes in one transaction.
pub fn apply(store: &Store, changes: &[Change]) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    // Its own transaction, or a savepoint in the caller's ([`Store::transaction`]).
    store.transaction(|st| {
        st.with_db(|tx| {
            for ch in changes {
                match ch {
                    Change::Pending { channel, grp, due, record } => {
                        let existing: Option<String> = tx
                            .query_one(
                                "SELECT MIN(due) FROM notify_pending WHERE channel = ?1 AND grp = ?2",
                                args![channel, grp],
                            )?
                            .get(0)?;
                        let due = existing.unwrap_or_else(|| ts(*due));
                        tx.execute(
                            "INSERT INTO notify_pending (channel, grp, due, record, alert) VALUES (?1, ?2, ?3, ?4, ?5)",
                            args![
                                channel,
                                grp,
                                due,
                                record_text(record)?,
                                alert_key(record)
                            ],
                        )?;
                    }
                    Change::Sent { channel, alert, at } => {
                        tx.execute(
                            "INSERT INTO notify_alert (channel, alert, state, last_sent, record) VALUES (?1, ?2, 'sent', ?3, '')
                             ON CONFLICT (channel, alert) DO UPDATE SET state = 'sent', last_sent = excluded.last_sent,
                               record = '', silenced_by = ''",
                            args![channel, alert, ts(*at)],
                        )?;
                    }
                    Change::Hold { channel, alert, record, silenced_by } => {
                        tx.execute(
                            "INSERT INTO notify_alert (channel, alert, state, record, silenced_by) VALUES (?1, ?2, 'held', ?3, ?4)
                             ON CONFLICT (channel, alert) DO UPDATE SET state = 'held', record = excluded.record,
                               silenced_by = excluded.silenced_by",
                            args![channel, alert, record_text(record)?, silenced_by],
                        )?;
                    }
                    Change::Forget { channel, alert } => {
                        tx.execute(
                            "DELETE FROM notify_alert WHERE channel = ?1 AND alert = ?2",
                            args![channel, alert],
                        )?;
                    }
                    Change::Unqueue { channel, alert } => {
                        tx.execute(
                            "DELETE FROM notify_pending WHERE channel = ?1 AND alert = ?2",
                            args![channel, alert],
                        )?;
                    }
                    Change::DropPending { id } => {
                        tx.execute("DELETE FROM notify_pending WHERE id = ?1", args![*id])?;
                    }
                    Change::Track { record } => super::inhibit::track_on(tx, record)?,
                }
            }
            Ok(())
        })
    })
}

/// Alerts held back by silences: `(channel, alert key, latest record)`.
pub fn held(store: &Store) -> Result<Vec<(String, String, AlertRecord)>, StoreError> {
    store.with_db(|c| {
        let rows =
            c.query("SELECT channel, alert, record FROM notify_alert WHERE state = 'held' ORDER BY rowid", &[])?;
        let mut out = vec![];
        for r in rows {
            let (ch, a, rec): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if let Ok(rec) = serde_json::from_str(&rec) {
                out.push((ch, a, rec));
            }
        }
        Ok(out)
    })
}

/// Alerts held back by silences or inhibitions: `(channel, alert key, why, latest record)`.
pub fn held_why(store: &Store) -> Result<Vec<(String, String, String, AlertRecord)>, StoreError> {
    store.with_db(|c| {
        let rows = c.query(
            "SELECT channel, alert, silenced_by, record FROM notify_alert WHERE state = 'held' ORDER BY rowid",
            &[],
        )?;
        let mut out = vec![];
        for r in rows {
            let (ch, a, why, rec): (String, String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            if let Ok(rec) = serde_json::from_str(&rec) {
                out.push((ch, a, why, rec));
            }
        }
        Ok(out)
    })
}

/// Groups whose wait is over, oldest first: `(channel, group key)`.
pub fn due_groups(store: &Store, now: DateTime<Utc>) -> Result<Vec<(String, String)>, StoreError> {
    store.with_db(|c| {
        c.query(
            "SELECT channel, grp FROM notify_pending GROUP BY channel, grp HAVING MIN(due) <= ?1 ORDER BY MIN(id)",
            args![ts(now)],
        )?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?)))
        .collect()
    })
}

/// Other groups of `channel` that hold an earlier record about an alert in group `grp` (they must be queued
/// first, so that a *resolved* never overtakes its *firing*).
pub fn predecessors(store: &Store, channel: &str, grp: &str) -> Result<Vec<String>, StoreError> {
    store.with_db(|c| {
        c.query(
            "SELECT p.grp, MIN(p.id) FROM notify_pending p JOIN notify_pending q ON p.channel = q.channel AND p.alert = q.alert
             WHERE q.channel = ?1 AND q.grp = ?2 AND p.grp <> ?2 AND p.id < q.id GROUP BY p.grp ORDER BY MIN(p.id)",
            args![channel, grp],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect()
    })
}

/// When the next group is due, if any waits.
pub fn next_group_due(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    let t: Option<String> = store.with_db(|c| c.query_one("SELECT MIN(due) FROM notify_pending", &[])?.get(0))?;
    Ok(t.map(|s| parse_ts(&s)))
}

/// A record as the outbox stores it.
fn record_text(record: &AlertRecord) -> crate::store::DbResult<String> {
    serde_json::to_string(record).map_err(|e| crate::store::DbError::Other(format!("alert record: {e}")))
}

/// The rows of a group, in arrival order: their ids and records as stored.
fn pending_rows(store: &Store, channel: &str, grp: &str) -> Result<Vec<(i64, String)>, StoreError> {
    store.with_db(|c| {
        c.query(
            "SELECT id, record FROM notify_pending WHERE channel = ?1 AND grp = ?2 ORDER BY id",
            args![channel, grp],
        )?
        .iter()
        .map(|r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)))
        .collect()
    })
}

/// The alerts of a group, in arrival order, and the ids of its rows (unreadable rows are dropped with the rest).
pub fn group(store: &Store, channel: &str, grp: &str) -> Result<(Vec<i64>, Vec<AlertRecord>), StoreError> {
    let (mut ids, mut records) = (vec![], vec![]);
    for (id, rec) in pending_rows(store, channel, grp)? {
        ids.push(id);
        if let Ok(rec) = serde_json::from_str(&rec) {
            records.push(rec);
        }
    }
    Ok((ids, records))
}

/// The readable rows of a group, in arrival order, with their ids.
pub fn group_rows(store: &Store, channel: &str, grp: &str) -> Result<Vec<(i64, AlertRecord)>, StoreError> {
    Ok(pending_rows(store, channel, grp)?
        .into_iter()
        .filter_map(|(id, rec)| serde_json::from_str(&rec).ok().map(|rec| (id, rec)))
        .collect())
}

/// Queues a message and removes the pending rows it was made from, in one transaction. Returns its id.
pub fn enqueue(store: &Store, m: &Message, lane: &str, pending_ids: &[i64]) -> Result<i64, StoreError> {
    let body = serde_json::to_string(m).expect("message");
    store.transaction(|st| {
        st.with_db(|tx| {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO notify_outbox (channel, lane, created, next_attempt, status, message)
                     VALUES (?1, ?2, ?3, ?3, 'pending', ?4) RETURNING id",
                    args![&m.channel, lane, ts(m.created), body],
                )?
                .get(0)?;
            for p in pending_ids {
                tx.execute("DELETE FROM notify_pending WHERE id = ?1", args![*p])?;
            }
            Ok(id)
        })
    })
}

/// Drops pending rows (of a channel that no longer exists).
pub fn drop_pending(store: &Store, ids: &[i64]) -> Result<(), StoreError> {
    store.with_db(|c| {
        for p in ids {
            c.execute("DELETE FROM notify_pending WHERE id = ?1", args![*p])?;
        }
        Ok(())
    })
}

/// A queued message.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Row id.
    pub id: i64,
    /// Lane.
    pub lane: String,
    /// Channel.
    pub channel: String,
    /// When to try next.
    pub next_attempt: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The journal entry, once written.
    pub journal_id: Option<i64>,
    /// The message.
    pub message: Message,
}

/// The oldest pending message of every lane (only those can be sent: order per lane), except lanes for which
/// `skip` is true (those with a delivery in flight): their messages are not even read.
pub fn heads(store: &Store, skip: impl Fn(&str) -> bool) -> Result<Vec<Queued>, StoreError> {
    store.with_db(|c| {
        let rows = c.query(
            "SELECT o.id, o.lane, o.channel, o.next_attempt, o.attempts, o.journal_id FROM notify_outbox o
             JOIN (SELECT MIN(id) AS id FROM notify_outbox WHERE status = 'pending' GROUP BY lane) h ON o.id = h.id
             ORDER BY o.id",
            &[],
        )?;
        let mut out = vec![];
        for r in rows {
            let (id, lane, channel, next, attempts, journal_id): (i64, String, String, String, u32, Option<i64>) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
            if skip(&lane) {
                continue;
            }
            let msg: String = c.query_one("SELECT message FROM notify_outbox WHERE id = ?1", args![id])?.get(0)?;
            match serde_json::from_str::<Message>(&msg) {
                Ok(message) => {
                    out.push(Queued { id, lane, channel, next_attempt: parse_ts(&next), attempts, journal_id, message })
                }
                Err(e) => {
                    // Unreadable (written by another version?): set it aside rather than block its lane.
                    c.execute(
                        "UPDATE notify_outbox SET status = 'failed', last_error = ?2 WHERE id = ?1",
                        args![id, format!("unreadable message: {e}")],
                    )?;
                }
            }
        }
        Ok(out)
    })
}

/// Records the journal entry of a queued message.
pub fn set_journal(store: &Store, id: i64, journal_id: i64) -> Result<(), StoreError> {
    store.with_db(|c| c.execute("UPDATE notify_outbox SET journal_id = ?2 WHERE id = ?1", args![id, journal_id]))?;
    Ok(())
}

/// How long a delivery claim holds before another deliverer may take the message over (a delivery that ended
/// without its result being recorded: the store failed, the task died). Deliveries take seconds.
pub const CLAIM_LEASE: chrono::Duration = chrono::Duration::minutes(5);

/// Claims message `id` (`attempts` attempts so far) at `now` for one delivery attempt, under this process's epoch
/// ([`Store::epoch`]): `false` when it is no longer pending, was attempted meanwhile (another process moved it on),
/// or is claimed already by this epoch or a newer one and that claim has not run out ([`CLAIM_LEASE`]). One
/// statement decides (the claim row's primary key), so of two processes claiming at once exactly one wins; a claim
/// of an older epoch (a leader that lost its lease while delivering) is taken over at once. The claim ends with
/// [`sent`], [`failed`], [`retry`] or [`release`]. On PostgreSQL with a fence, a stale leader's claim is refused
/// before anything is sent.
pub fn claim(store: &Store, id: i64, attempts: u32, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let n = store.with_db(|c| {
        c.execute(
            "INSERT INTO notify_claim (outbox_id, epoch, until)
             SELECT id, ?2, ?4 FROM notify_outbox WHERE id = ?1 AND status = 'pending' AND attempts = ?3
             ON CONFLICT (outbox_id) DO UPDATE SET epoch = excluded.epoch, until = excluded.until
               WHERE notify_claim.epoch < excluded.epoch OR notify_claim.until < ?5",
            args![id, store.epoch(), attempts, ts(now + CLAIM_LEASE), ts(now)],
        )
    })?;
    Ok(n == 1)
}

/// Gives up the claim on message `id` without an attempt (its delivery could not start).
pub fn release(store: &Store, id: i64) -> Result<(), StoreError> {
    store.with_db(|c| unclaim(c, id))?;
    Ok(())
}

fn unclaim(c: &crate::store::Db, id: i64) -> crate::store::DbResult<usize> {
    c.execute("DELETE FROM notify_claim WHERE outbox_id = ?1", args![id])
}

/// Marks a message sent.
pub fn sent(store: &Store, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
    store.with_db(|c| {
        c.execute("UPDATE notify_outbox SET status = 'sent', done = ?2 WHERE id = ?1", args![id, ts(now)])?;
        unclaim(c, id)
    })?;
    Ok(())
}

/// Marks a message failed for good.
pub fn failed(store: &Store, id: i64, now: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
    store.with_db(|c| {
        c.execute(
            "UPDATE notify_outbox SET status = 'failed', done = ?2, last_error = ?3, attempts = attempts + 1 WHERE id = ?1",
            args![id, ts(now), reason],
        )?;
        unclaim(c, id)
    })?;
    Ok(())
}

/// Schedules another attempt.
pub fn retry(store: &Store, id: i64, attempts: u32, next: DateTime<Utc>, reason: &str) -> Result<(), StoreError> {
    store.with_db(|c| {
        c.execute(
            "UPDATE notify_outbox SET attempts = ?2, next_attempt = ?3, last_error = ?4 WHERE id = ?1",
            args![id, attempts, ts(next), reason],
        )?;
        unclaim(c, id)
    })?;
    Ok(())
}

/// Deletes sent and failed messages finished before `before`.
pub fn purge(store: &Store, before: DateTime<Utc>) -> Result<usize, StoreError> {
    store.with_db(|c| c.execute("DELETE FROM notify_outbox WHERE status <> 'pending' AND done < ?1", args![ts(before)]))
}

/// Messages by status: `(pending, sent, failed)`.
pub fn counts(store: &Store) -> Result<(u64, u64, u64), StoreError> {
    store.with_db(|c| {
        let r = c.query_one(
            "SELECT COALESCE(SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0),
                    COALESCE(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0) FROM notify_outbox",
            &[],
        )?;
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })
}

/// What Warden did about `subject` on `target` since `since` (newest `limit`, oldest first), from the journal:
/// commands run, restarts (with the savepoint or checkpoint they restored), the storm guard giving up.
pub fn actions_since(
    store: &Store,
    target: &str,
    subject: &str,
    since: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let rows: Vec<(String, String, String, String, String)> = store.with_db(|c| {
        c.query(
            "SELECT action, detail, outcome, summary, output FROM journal
             WHERE target = ?1 AND subject = ?2 AND time >= ?3 AND action NOT IN ('alert', 'resolved', 'log', 'notify')
             ORDER BY id DESC LIMIT ?4",
            args![target, subject, ts(since), limit],
        )?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
        .collect()
    })?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|(action, detail, outcome, summary, output)| describe(&action, &detail, &outcome, &summary, &output))
        .collect())
}

/// One journal entry as "what Warden did".
fn describe(action: &str, detail: &str, outcome: &str, summary: &str, output: &str) -> String {
    let outcome = match outcome {
        "started" => "running",
        "ok" => "succeeded",
        o => o,
    };
    match action {
        "run" if outcome.starts_with("failed") || outcome.starts_with("interrupted") => {
            // The journal keeps the command's output: its last stderr lines say why, where on-call reads.
            let err = output.rsplit_once("[stderr] ").map(|(_, e)| e).unwrap_or("");
            let lines: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let tail = &lines[lines.len().saturating_sub(3)..];
            if tail.is_empty() {
                format!("ran `{detail}`: {outcome}")
            } else {
                format!("ran `{detail}`: {outcome}; stderr: {}", tail.join(" | "))
            }
        }
        "run" => format!("ran `{detail}`: {outcome}"),
        "guard" => format!("gave up: {summary}"),
        "restart" => {
            // The restart action journals `... location=<savepoint or checkpoint> new_jid=...` as its output.
            let field = |k: &str| {
                output.split_whitespace().find_map(|w| w.strip_prefix(k)).filter(|v| !v.is_empty() && *v != "-")
            };
            match (outcome, field("location="), field("new_jid=")) {
                ("succeeded", Some(loc), new) => {
                    format!(
                        "restarted ({detail}) from {loc}{}",
                        new.map(|j| format!(" as job {j}")).unwrap_or_default()
                    )
                }
                ("succeeded", None, _) => format!("restarted ({detail}) without state"),
                (o, _, _) => format!("restart ({detail}): {o}"),
            }
        }
        _ if summary.is_empty() => format!("{action} {detail}: {outcome}"),
        _ => format!("{action} {detail}: {outcome} ({summary})"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn journal_entries_read_as_what_warden_did() {
        let d = super::describe;
        assert_eq!(d("run", "relaunch", "ok", "", ""), "ran `relaunch`: succeeded");
        // A failed command shows the last lines of its stderr (the journal keeps its output).
        assert_eq!(
            d("run", "relaunch", "failed: exit status 1", "", "submitting\n[stderr] one\ntwo\n\nthree\nfour\n"),
            "ran `relaunch`: failed: exit status 1; stderr: two | three | four"
        );
        assert_eq!(d("run", "relaunch", "started", "", ""), "ran `relaunch`: running");
        assert_eq!(
            d(
                "restart",
                "last-checkpoint",
                "ok",
                "",
                "restart #3 strategy=last-checkpoint old_jid=a location=s3://ck/chk-42 new_jid=b"
            ),
            "restarted (last-checkpoint) from s3://ck/chk-42 as job b"
        );
        assert_eq!(
            d("restart", "savepoint", "failed at savepoint: timed out", "", "restart #4 location=- new_jid=-"),
            "restart (savepoint): failed at savepoint: timed out"
        );
        assert_eq!(
            d("guard", "giving_up", "ok", "giving up on clicks: 3 relaunches", ""),
            "gave up: giving up on clicks: 3 relaunches"
        );
    }
}
