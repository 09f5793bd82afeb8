//! Restart records (the per-job lock, with an owner and a lease) and the savepoint history.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{args, limit_of, ts, DbResult, Result, Row, Store};
use crate::model::{RestartKind, RestartOverrides, RestartResult, RestartStep, RestartStrategy, StepTime};

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
    /// Who drives it (`pid <n> on <host>`, see `action::restart::owner_id`); `None` for a restart begun before
    /// owners were recorded.
    pub owner: Option<String>,
    /// Until when the owner's claim holds (RFC 3339, as [`ts`] writes it); after that, or once released (`None`),
    /// another process may [claim](Store::claim_restart) it.
    pub lease_until: Option<String>,
    /// What the restart does: bring the same job back, upgrade it, roll an upgrade or rescale back, or rescale it.
    pub kind: RestartKind,
    /// What it submits differently from the job's `jobs.<name>.jar` (empty for a plain restart).
    pub overrides: RestartOverrides,
    /// The jar id it submits, once known (uploaded or found at the `jar-uploaded` step; for a rollback, the
    /// previous jar). `None`: the job's configured jar, found at the submit step.
    pub jar_id: Option<String>,
    /// For an upgrade or rescale: the jar id the job ran before, to roll back to (`None`: the configured jar).
    pub prev_jar_id: Option<String>,
    /// For an upgrade or rescale: the parallelism the job ran with before (its vertices' largest), to roll back to.
    pub prev_parallelism: Option<u32>,
    /// For a rollback: the upgrade or rescale it undoes.
    pub rollback_of: Option<i64>,
    /// For a rollback and the change it undoes: why the new version failed (Flink's root cause if it had one).
    pub cause: Option<String>,
    /// Each step reached and when, oldest first: the restart's timeline.
    pub steps: Vec<StepTime>,
}

impl RestartRecord {
    /// A restart of `job` that was never saved (id 0, step `started`, nothing chosen yet): what a restart that could
    /// not begin reports, and the base of records built by hand.
    pub fn unsaved(
        journal_id: i64,
        target: &str,
        job: &str,
        strategy: RestartStrategy,
        old_jid: &str,
        overrides: &RestartOverrides,
    ) -> RestartRecord {
        RestartRecord {
            id: 0,
            journal_id,
            target: target.into(),
            job: job.into(),
            strategy,
            old_jid: old_jid.into(),
            step: RestartStep::Started,
            trigger_id: None,
            location: None,
            new_jid: None,
            outcome: None,
            started: String::new(),
            updated: String::new(),
            owner: None,
            lease_until: None,
            kind: overrides.kind(),
            overrides: overrides.clone(),
            jar_id: None,
            prev_jar_id: None,
            prev_parallelism: None,
            rollback_of: None,
            cause: None,
            steps: vec![],
        }
    }

    /// Notes that the record reached its current step at `at` (once per step change).
    pub fn mark_step(&mut self, at: DateTime<Utc>) {
        if self.steps.last().map(|s| s.step) != Some(self.step) {
            self.steps.push(StepTime { step: self.step, at: ts(at) });
        }
    }

    /// The parallelism it submits: the override's, else `None` (the configured one).
    pub fn parallelism(&self) -> Option<u32> {
        self.overrides.parallelism
    }
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

const RESTART_COLS: &str = "id, journal_id, target, job, strategy, old_jid, step, trigger_id, location, new_jid, \
     outcome, started, updated, owner, lease_until, kind, overrides, jar_id, prev_jar_id, prev_parallelism, rollback_of, \
     cause, steps";

fn json_col<T: serde::de::DeserializeOwned + Default>(r: &Row, i: usize) -> DbResult<T> {
    match r.get::<Option<String>>(i)? {
        None => Ok(T::default()),
        Some(s) => serde_json::from_str(&s).map_err(|e| super::DbError::Other(format!("column {i}: {e}"))),
    }
}

fn overrides_text(o: &RestartOverrides) -> Option<String> {
    (!o.is_empty()).then(|| serde_json::to_string(o).unwrap_or_default())
}

fn steps_text(s: &[StepTime]) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "[]".into())
}

fn restart_row(r: &Row) -> DbResult<RestartRecord> {
    Ok(RestartRecord {
        id: r.get(0)?,
        journal_id: r.get(1)?,
        target: r.get(2)?,
        job: r.get(3)?,
        strategy: r.parse(4)?,
        old_jid: r.get(5)?,
        step: r.parse(6)?,
        trigger_id: r.get(7)?,
        location: r.get(8)?,
        new_jid: r.get(9)?,
        outcome: match r.get::<Option<String>>(10)? {
            Some(_) => Some(r.parse(10)?),
            None => None,
        },
        started: r.get(11)?,
        updated: r.get(12)?,
        owner: r.get(13)?,
        lease_until: r.get(14)?,
        kind: r.parse(15)?,
        overrides: json_col(r, 16)?,
        jar_id: r.get(17)?,
        prev_jar_id: r.get(18)?,
        prev_parallelism: r.get(19)?,
        rollback_of: r.get(20)?,
        cause: r.get(21)?,
        steps: json_col(r, 22)?,
    })
}

impl Store {
    /// Starts a restart record, which locks the job, held by `owner` until `at + lease`: `Ok(None)` if a restart
    /// of the same job on the same target is already in progress (its record is returned by
    /// [`Store::restart_in_progress`]; take it over with [`Store::claim_restart`] once its lease ran out).
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
        self.begin_restart_as(
            journal_id,
            target,
            job,
            strategy,
            old_jid,
            RestartKind::Restart,
            &RestartOverrides::default(),
            at,
            owner,
            lease,
        )
    }

    /// [`Store::begin_restart`] of a given kind with overrides (an upgrade or rescale).
    #[allow(clippy::too_many_arguments)] // one row's columns, named at every call site
    pub fn begin_restart_as(
        &self,
        journal_id: i64,
        target: &str,
        job: &str,
        strategy: RestartStrategy,
        old_jid: &str,
        kind: RestartKind,
        overrides: &RestartOverrides,
        at: DateTime<Utc>,
        owner: &str,
        lease: chrono::Duration,
    ) -> Result<Option<RestartRecord>> {
        let now = ts(at);
        let until = ts(at + lease);
        let steps = steps_text(&[StepTime { step: RestartStep::Started, at: now.clone() }]);
        // The partial unique index `restarts_one_per_job` decides: of two processes beginning at once, the second
        // waits for the first's commit and then inserts nothing.
        let inserted: Option<i64> = self.with(|c| {
            c.query_opt(
                "INSERT INTO restarts (journal_id, target, job, strategy, old_jid, step, started, updated, owner,
                                       lease_until, kind, overrides, steps)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'started', ?6, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT DO NOTHING RETURNING id",
                args![
                    journal_id,
                    target,
                    job,
                    strategy.as_str(),
                    old_jid,
                    now,
                    owner,
                    until,
                    kind.as_str(),
                    overrides_text(overrides),
                    steps
                ],
            )?
            .map(|r| r.get(0))
            .transpose()
        })?;
        match inserted {
            Some(id) => self.restart(id),
            None => Ok(None),
        }
    }

    /// Ends `failed` (an upgrade or rescale whose new run failed; its `outcome` is set) and begins its rollback in
    /// the same transaction, so the job is never without a restart in progress in between: the rollback record
    /// (kind `rollback`, same journal entry, owner and lease) restores the same `location` with the previous jar
    /// (`prev_jar_id`), parallelism (`prev_parallelism`) and the previous entry class and arguments (`previous`:
    /// those of the release the job ran, when it came from an earlier upgrade), at step `state-chosen`, replacing
    /// the failed run (`new_jid`). Only the failed record's owner may do this.
    pub fn roll_back(
        &self,
        failed: &RestartRecord,
        previous: &RestartOverrides,
        at: DateTime<Utc>,
    ) -> Result<RestartRecord> {
        self.transaction(|s| {
            s.update_restart(failed, at)?;
            let now = ts(at);
            let overrides = RestartOverrides {
                entry_class: previous.entry_class.clone(),
                args: previous.args.clone(),
                parallelism: failed.prev_parallelism,
                ..Default::default()
            };
            let steps = steps_text(&[StepTime { step: RestartStep::StateChosen, at: now.clone() }]);
            let id: i64 = s.with(|c| {
                c.query_one(
                    "INSERT INTO restarts (journal_id, target, job, strategy, old_jid, step, location, started, updated,
                                           owner, lease_until, kind, overrides, jar_id, prev_jar_id, prev_parallelism,
                                           rollback_of, cause, steps)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'state-chosen', ?6, ?7, ?7, ?8, ?9, 'rollback', ?10, ?11, ?11, ?12,
                             ?13, ?14, ?15)
                     RETURNING id",
                    args![
                        failed.journal_id,
                        &failed.target,
                        &failed.job,
                        failed.strategy.as_str(),
                        failed.new_jid.clone().unwrap_or_default(),
                        &failed.location,
                        now,
                        &failed.owner,
                        &failed.lease_until,
                        overrides_text(&overrides),
                        &failed.prev_jar_id,
                        failed.prev_parallelism,
                        failed.id,
                        &failed.cause,
                        steps
                    ],
                )?
                .get(0)
            })?;
            s.restart(id)?.ok_or_else(|| s.err(format!("the rollback of restart #{} vanished", failed.id)))
        })
    }

    /// Takes over restart `id` for `owner` until `now + lease`, if it is unfinished and its lease has expired or was
    /// released (a restart from before owners were recorded has none). One `UPDATE` decides, so of two processes
    /// claiming at once exactly one wins. Returns the record as claimed, or `None` while someone holds it — its
    /// own owner included, so a process scanning for orphans never takes over a restart it drives itself.
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
                args![id, owner, ts(now), ts(now + lease)],
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
                args![id, from, owner, ts(now + lease)],
            )
        })?;
        if n == 0 {
            return Ok(None);
        }
        self.restart(id)
    }

    /// Extends `owner`'s lease on restart `id` to `now + lease`. `false` if `owner` does not hold it any more
    /// (another Warden claimed it, it was released, or it ended): the caller must stop driving it.
    pub fn renew_restart_lease(
        &self,
        id: i64,
        owner: &str,
        now: DateTime<Utc>,
        lease: chrono::Duration,
    ) -> Result<bool> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE restarts SET lease_until = ?3 WHERE id = ?1 AND owner = ?2 AND outcome IS NULL",
                args![id, owner, ts(now + lease)],
            )
        })?;
        Ok(n == 1)
    }

    /// Gives up `owner`'s lease on restart `id` at once (it was interrupted), so another process may resume it
    /// without waiting for the lease to run out. The record keeps naming its last owner.
    pub fn release_restart(&self, id: i64, owner: &str) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE restarts SET lease_until = NULL WHERE id = ?1 AND owner = ?2", args![id, owner])
                .map(|_| ())
        })
    }

    /// One restart record.
    pub fn restart(&self, id: i64) -> Result<Option<RestartRecord>> {
        self.with(|c| {
            c.query_opt(&format!("SELECT {RESTART_COLS} FROM restarts WHERE id = ?1"), args![id])?
                .map(|r| restart_row(&r))
                .transpose()
        })
    }

    /// The newest upgrade, rollback or rescale of `job` on `target` that ended `ok`: the release the job runs since
    /// (its `jar_id` and overrides).
    pub fn last_change(&self, target: &str, job: &str) -> Result<Option<RestartRecord>> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {RESTART_COLS} FROM restarts WHERE target = ?1 AND job = ?2 AND outcome = 'ok'
                       AND kind IN ('upgrade', 'rollback', 'rescale') ORDER BY id DESC LIMIT 1"
                ),
                args![target, job],
            )?
            .map(|r| restart_row(&r))
            .transpose()
        })
    }

    /// The rollback that undoes restart `id` (an upgrade or rescale whose new run failed), if one began.
    pub fn rollback_of(&self, id: i64) -> Result<Option<RestartRecord>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {RESTART_COLS} FROM restarts WHERE rollback_of = ?1 ORDER BY id DESC LIMIT 1"),
                args![id],
            )?
            .map(|r| restart_row(&r))
            .transpose()
        })
    }

    /// The restart of `job` on `target` that is in progress, if any.
    pub fn restart_in_progress(&self, target: &str, job: &str) -> Result<Option<RestartRecord>> {
        self.with(|c| {
            c.query_opt(
                &format!("SELECT {RESTART_COLS} FROM restarts WHERE target = ?1 AND job = ?2 AND outcome IS NULL"),
                args![target, job],
            )?
            .map(|r| restart_row(&r))
            .transpose()
        })
    }

    /// Every restart still in progress (to resume at start-up).
    pub fn unfinished_restarts(&self) -> Result<Vec<RestartRecord>> {
        self.with(|c| {
            c.query(&format!("SELECT {RESTART_COLS} FROM restarts WHERE outcome IS NULL ORDER BY id"), &[])?
                .iter()
                .map(restart_row)
                .collect()
        })
    }

    /// Restarts, newest last (the newest `limit` when given).
    pub fn restarts(&self, limit: Option<usize>) -> Result<Vec<RestartRecord>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {RESTART_COLS} FROM (SELECT * FROM restarts ORDER BY id DESC LIMIT ?1) AS newest ORDER BY id"
                ),
                args![limit_of(limit)],
            )?
            .iter()
            .map(restart_row)
            .collect()
        })
    }

    /// Saves a restart's progress (before and after each step). Only its owner may: when another process has taken
    /// the restart over (`r.owner` is no longer the owner), nothing is written and the result is an error.
    pub fn update_restart(&self, r: &RestartRecord, at: DateTime<Utc>) -> Result<()> {
        let n = self.with(|c| {
            c.execute(
                "UPDATE restarts SET step = ?2, trigger_id = ?3, location = ?4, new_jid = ?5, outcome = ?6, updated = ?7,
                   jar_id = ?9, prev_jar_id = ?10, prev_parallelism = ?11, cause = ?12, steps = ?13
                 WHERE id = ?1 AND owner IS NOT DISTINCT FROM ?8",
                args![
                    r.id,
                    r.step.as_str(),
                    &r.trigger_id,
                    &r.location,
                    &r.new_jid,
                    r.outcome.as_ref().map(|o| o.to_string()),
                    ts(at),
                    &r.owner,
                    &r.jar_id,
                    &r.prev_jar_id,
                    r.prev_parallelism,
                    &r.cause,
                    steps_text(&r.steps)
                ],
            )
        })?;
        if n == 0 {
            return Err(self.err(format!("restart #{} is driven by another process now; this one stops", r.id)));
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
                .query_opt(
                    "SELECT id FROM savepoints WHERE target = ?1 AND job = ?2 AND location = ?3",
                    args![target, job, location],
                )?
                .map(|r| r.get(0))
                .transpose()?;
            match existing {
                Some(id) => {
                    if used_by.is_some() {
                        c.execute("UPDATE savepoints SET used_by = ?2 WHERE id = ?1", args![id, used_by])?;
                    }
                }
                None => {
                    c.execute(
                        "INSERT INTO savepoints (target, job, location, kind, jid, time, used_by)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        args![target, job, location, kind, jid, ts(at), used_by],
                    )?;
                }
            }
            c.execute(
                "DELETE FROM savepoints WHERE target = ?1 AND job = ?2 AND id NOT IN
                   (SELECT id FROM savepoints WHERE target = ?1 AND job = ?2 ORDER BY id DESC LIMIT ?3)",
                args![target, job, keep],
            )?;
            Ok(())
        })
    }

    /// The savepoint and checkpoint history of `job` on `target` (all jobs when `job` is `None`), newest first.
    pub fn savepoints(&self, target: Option<&str>, job: Option<&str>) -> Result<Vec<SavepointRecord>> {
        self.with(|c| {
            let rows = c.query(
                "SELECT target, job, location, kind, jid, time, used_by FROM savepoints
                 WHERE target = COALESCE(?1, target) AND job = COALESCE(?2, job) ORDER BY id DESC",
                args![target, job],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(SavepointRecord {
                        target: r.get(0)?,
                        job: r.get(1)?,
                        location: r.get(2)?,
                        kind: r.get(3)?,
                        jid: r.get(4)?,
                        time: r.get(5)?,
                        used_by: r.get(6)?,
                    })
                })
                .collect()
        })
    }
}
