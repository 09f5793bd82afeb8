//! Bounded growth: pruning the state store by age and count (`retention:` in `warden.yaml`).
//!
//! [`prune`] deletes, oldest first and at most `batch` rows per table per call:
//!
//! - journal entries older than `retention.journal` (with their decision records), except an action that has not finished (`finished` is empty
//!   and it is not a dry run), the entry of a restart in progress, and the entry of a notification still in the
//!   outbox;
//! - finished restart records last moved before the same cutoff (a restart in progress is never touched);
//! - savepoint and checkpoint locations beyond `retention.savepoints.keep` per job or older than its `max_age`,
//!   except each job's newest and any location a restart in progress restores from;
//! - delivered and failed outbox messages done, and silences ended, before `retention.notifications`.
//!
//! Nothing younger than the storm guard's window is pruned whatever the settings say (the configuration check
//! refuses such settings too): the guard counts the relaunches and "giving up" alerts of that window in the journal.
//!
//! [`run`] prunes every `prune_every` on the store thread ([`Store::call`]), in batches, so the dispatcher's steps
//! interleave with a large first pruning instead of waiting for it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{args, ts, Result, Store};
use crate::clock::Clock;
use crate::config::{Config, RetentionConfig};

/// What pruning needs: the `retention:` settings and the storm guard's window.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// The settings.
    pub config: RetentionConfig,
    /// `dispatch.storm_guard.window`: nothing younger is pruned.
    pub guard_window: Duration,
}

impl Retention {
    /// The retention of a loaded configuration.
    pub fn of(config: &Config) -> Self {
        Retention { config: config.retention.clone(), guard_window: config.dispatch.storm_guard.window }
    }

    fn cutoff(&self, now: DateTime<Utc>, age: Duration) -> String {
        let age = chrono::Duration::from_std(age.max(self.guard_window)).unwrap_or(chrono::Duration::MAX);
        ts(now.checked_sub_signed(age).unwrap_or(DateTime::<Utc>::MIN_UTC))
    }
}

/// Rows deleted by one [`prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Journal entries.
    pub journal: usize,
    /// Finished restart records.
    pub restarts: usize,
    /// Savepoint and checkpoint locations.
    pub savepoints: usize,
    /// Delivered or failed outbox messages.
    pub outbox: usize,
    /// Ended silences.
    pub silences: usize,
}

impl Pruned {
    /// All rows deleted.
    pub fn total(&self) -> usize {
        self.journal + self.restarts + self.savepoints + self.outbox + self.silences
    }

    fn add(&mut self, o: Pruned) {
        self.journal += o.journal;
        self.restarts += o.restarts;
        self.savepoints += o.savepoints;
        self.outbox += o.outbox;
        self.silences += o.silences;
    }
}

/// Deletes what `retention` no longer keeps at `now`, at most `batch` rows per table, in one transaction. Call it
/// again while it deletes a full batch of anything.
pub fn prune(store: &Store, retention: &Retention, now: DateTime<Utc>, batch: usize) -> Result<Pruned> {
    let c = &retention.config;
    let journal_cutoff = retention.cutoff(now, c.journal);
    let notify_cutoff = retention.cutoff(now, c.notifications);
    let savepoint_cutoff = retention.cutoff(now, c.savepoints.max_age);
    let window_cutoff = retention.cutoff(now, Duration::ZERO);
    let keep = i64::try_from(c.savepoints.keep.max(1)).unwrap_or(i64::MAX);
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    store.transaction(|s| {
        s.with(|c| {
            let journal = c.execute(
                "DELETE FROM journal WHERE id IN (
                   SELECT id FROM journal
                   WHERE time < ?1
                     AND (finished IS NOT NULL OR outcome = 'dry-run')
                     AND id NOT IN (SELECT journal_id FROM restarts WHERE outcome IS NULL)
                     AND id NOT IN (SELECT journal_id FROM notify_outbox
                                    WHERE status = 'pending' AND journal_id IS NOT NULL)
                   ORDER BY id LIMIT ?2)",
                args![&journal_cutoff, batch],
            )?;
            // Outbox claims go with the messages they claimed.
            c.execute(
                "DELETE FROM notify_claim WHERE outbox_id NOT IN (SELECT id FROM notify_outbox WHERE status = 'pending')",
                &[],
            )?;
            // Decision records go with their journal entries.
            c.execute("DELETE FROM decisions WHERE journal_id NOT IN (SELECT id FROM journal)", &[])?;
            let restarts = c.execute(
                "DELETE FROM restarts WHERE id IN (
                   SELECT id FROM restarts WHERE outcome IS NOT NULL AND updated < ?1 ORDER BY id LIMIT ?2)",
                args![&journal_cutoff, batch],
            )?;
            let savepoints = c.execute(
                "DELETE FROM savepoints WHERE id IN (
                   SELECT s.id FROM savepoints s
                   WHERE s.id <> (SELECT MAX(m.id) FROM savepoints m WHERE m.target = s.target AND m.job = s.job)
                     AND s.location NOT IN (SELECT location FROM restarts
                                            WHERE outcome IS NULL AND location IS NOT NULL)
                     AND (s.time < ?1
                          OR (s.time < ?2 AND (SELECT COUNT(*) FROM savepoints n
                                               WHERE n.target = s.target AND n.job = s.job AND n.id > s.id) >= ?3))
                   ORDER BY s.id LIMIT ?4)",
                args![&savepoint_cutoff, &window_cutoff, keep, batch],
            )?;
            let outbox = c.execute(
                "DELETE FROM notify_outbox WHERE id IN (
                   SELECT id FROM notify_outbox WHERE status <> 'pending' AND done < ?1 ORDER BY id LIMIT ?2)",
                args![&notify_cutoff, batch],
            )?;
            let silences = c.execute(
                "DELETE FROM notify_silence WHERE id IN (
                   SELECT id FROM notify_silence WHERE ends < ?1 OR removed < ?1 ORDER BY id LIMIT ?2)",
                args![&notify_cutoff, batch],
            )?;
            Ok(Pruned { journal, restarts, savepoints, outbox, silences })
        })
    })
}

/// Prunes everything due at `now`, batch after batch, each on the store thread. Returns the rows deleted.
pub async fn prune_all(store: &Arc<Store>, retention: &Retention, now: DateTime<Utc>) -> Result<Pruned> {
    const BATCH: usize = 500;
    let mut all = Pruned::default();
    loop {
        let r = retention.clone();
        let p = store.call(move |s| prune(s, &r, now, BATCH)).await?;
        all.add(p);
        let full = [p.journal, p.restarts, p.savepoints, p.outbox, p.silences].iter().any(|n| *n >= BATCH);
        if !full {
            return Ok(all);
        }
    }
}

/// Prunes now and then every `retention.config.prune_every` until `stop` fires (reading the time from `clock`).
/// Failures are logged and retried at the next round. Spawn it next to the dispatcher:
/// `tokio::spawn(retention::run(store.clone(), Retention::of(&cfg), clock.clone(), stop.clone()))`.
pub async fn run(store: Arc<Store>, retention: Retention, clock: Clock, stop: CancellationToken) {
    let mut every = tokio::time::interval(retention.config.prune_every.max(Duration::from_millis(1)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let pruned = tokio::select! {
            p = prune_all(&store, &retention, clock.now()) => p,
            _ = stop.cancelled() => return,
        };
        match pruned {
            Ok(p) if p.total() > 0 => tracing::info!(
                journal = p.journal,
                restarts = p.restarts,
                savepoints = p.savepoints,
                outbox = p.outbox,
                silences = p.silences,
                "pruned the state store"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!("cannot prune the state store: {e}"),
        }
    }
}
