//! Decision records (why a command ran or a job was restarted), one per journal entry, and what `warden explain`
//! reads: the entry, its record, and for a restart the restart's own record and the state it restored from.

use serde::Serialize;

use super::{args, journal_row, JournalEntry, RestartRecord, Result, SavepointRecord, Store, JOURNAL_COLS};
use crate::model::Decision;

/// Everything Warden knows about why and how one journalled action happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The journal entry.
    pub entry: JournalEntry,
    /// Why it happened (`None` for entries without one: alerts, log lines, and actions journalled before Warden kept
    /// decision records).
    pub decision: Option<Decision>,
    /// For a restart: its step journal (the state it restored from, the new job id, how it ended).
    pub restart: Option<RestartRecord>,
    /// For a restart: the savepoint or checkpoint it restored from, as Warden recorded it (its kind and run).
    pub restored_from: Option<SavepointRecord>,
}

impl Store {
    /// Saves the decision record of journal entry `journal_id` (inside the dispatcher's transaction, with the
    /// entry). A second record for the same entry replaces the first.
    pub fn save_decision(&self, journal_id: i64, d: &Decision) -> Result<()> {
        let text = serde_json::to_string(d).map_err(|e| self.err(format!("cannot save a decision record: {e}")))?;
        self.with(|c| {
            c.execute(
                "INSERT INTO decisions (journal_id, record) VALUES (?1, ?2)
                 ON CONFLICT (journal_id) DO UPDATE SET record = excluded.record",
                args![journal_id, text],
            )
            .map(|_| ())
        })
    }

    /// The decision record of journal entry `journal_id`, if it has one.
    pub fn decision(&self, journal_id: i64) -> Result<Option<Decision>> {
        let text: Option<String> = self.with(|c| {
            c.query_opt("SELECT record FROM decisions WHERE journal_id = ?1", args![journal_id])?
                .map(|r| r.get(0))
                .transpose()
        })?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| self.err(format!("the decision record of journal entry {journal_id} does not read: {e}")))
        })
        .transpose()
    }

    /// One journal entry.
    pub fn entry(&self, id: i64) -> Result<Option<JournalEntry>> {
        self.with(|c| {
            c.query_opt(&format!("SELECT {JOURNAL_COLS} FROM journal WHERE id = ?1"), args![id])?
                .map(|r| journal_row(&r))
                .transpose()
        })
    }

    /// The restart record of journal entry `journal_id` (the newest, should there be several).
    pub fn restart_of_entry(&self, journal_id: i64) -> Result<Option<RestartRecord>> {
        let id: Option<i64> = self
            .with(|c| c.query_one("SELECT MAX(id) FROM restarts WHERE journal_id = ?1", args![journal_id])?.get(0))?;
        match id {
            Some(id) => self.restart(id),
            None => Ok(None),
        }
    }

    /// What Warden knows about journal entry `id`; `None` when there is no such entry.
    pub fn explain(&self, id: i64) -> Result<Option<Explanation>> {
        let Some(entry) = self.entry(id)? else { return Ok(None) };
        let decision = self.decision(id)?;
        let restart = self.restart_of_entry(id)?;
        let restored_from = match &restart {
            Some(r) => match &r.location {
                Some(loc) => self
                    .savepoints(Some(&r.target), Some(&r.job))?
                    .into_iter()
                    .find(|s| s.used_by == Some(r.id) || &s.location == loc),
                None => None,
            },
            None => None,
        };
        Ok(Some(Explanation { entry, decision, restart, restored_from }))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::config::RetentionConfig;
    use crate::model::{ActionKind, Asked, RestartStrategy};
    use crate::store::retention::{prune, Retention};
    use crate::store::NewEntry;

    fn decision() -> Decision {
        Decision {
            rule: "flink/job-not-running".into(),
            probe: "flink/jobs-overview".into(),
            target: "jm".into(),
            subject: "clicks".into(),
            decided_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            asked: Asked::Restart { job: "clicks".into(), strategy: RestartStrategy::Stateless },
            jid_before: None,
            root_cause: None,
            details: serde_json::Value::Null,
            observed: None,
            notes: vec![],
        }
    }

    #[test]
    fn a_record_reads_back_and_goes_with_its_pruned_entry() {
        let s = Store::in_memory();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let new = |at| NewEntry {
            time: Some(at),
            action: ActionKind::Restart,
            subject: "clicks".into(),
            outcome: "started".into(),
            ..Default::default()
        };
        let old = s.journal(&new(t0)).unwrap();
        s.finish(old, "ok", "", t0).unwrap();
        let young = s.journal(&new(t0 + chrono::Duration::days(20))).unwrap();
        s.save_decision(old, &decision()).unwrap();
        s.save_decision(young, &decision()).unwrap();
        assert_eq!(s.decision(old).unwrap(), Some(decision()));
        assert_eq!(s.explain(old).unwrap().unwrap().decision, Some(decision()));

        let config = RetentionConfig { journal: std::time::Duration::from_secs(10 * 86400), ..Default::default() };
        let r = Retention { config, guard_window: std::time::Duration::from_secs(3600) };
        let p = prune(&s, &r, t0 + chrono::Duration::days(21), 100).unwrap();
        assert_eq!(p.journal, 1);
        assert_eq!(s.decision(old).unwrap(), None, "pruned with its entry");
        assert_eq!(s.explain(old).unwrap(), None);
        assert_eq!(s.decision(young).unwrap(), Some(decision()), "the young one stays");
    }
}
