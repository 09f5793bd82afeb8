use std::sync::Arc;

use chrono::TimeZone;
use futures_util::FutureExt;

use super::retention::{prune, Retention};
use super::*;
use crate::clock::Clock;
use crate::config::RetentionConfig;
use crate::model::{RestartStep, RestartStrategy};

#[path = "../../tests/integration/support_pg.rs"]
mod support_pg;

/// Where a test's database lives: the tests below run once per backend.
pub(crate) enum Place {
    /// A SQLite file in a temporary directory.
    Sqlite(tempfile::TempDir),
    /// A fresh database on the test run's PostgreSQL server.
    Postgres(String),
}

impl Place {
    /// A store on this place's database (a second one on the same database when called again).
    pub(crate) fn open(&self) -> Store {
        match self {
            Place::Sqlite(d) => Store::open(d.path()).unwrap(),
            Place::Postgres(url) => Store::open_postgres(url).unwrap(),
        }
    }
}

/// SQLite, and PostgreSQL when the test run has it (see `support_pg`).
pub(crate) fn places() -> Vec<Place> {
    let mut v = vec![Place::Sqlite(tempfile::tempdir().unwrap())];
    if let Some(pg) = support_pg::Pg::shared() {
        v.push(Place::Postgres(pg.database()));
    }
    v
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

fn entry(time: DateTime<Utc>, action: ActionKind, subject: &str, outcome: &str) -> NewEntry {
    NewEntry {
        time: Some(time),
        rule: "flink/job-not-running".into(),
        target: "jm".into(),
        subject: subject.into(),
        action,
        outcome: outcome.into(),
        ..Default::default()
    }
}

#[test]
fn journal_survives_reopen_and_interrupted_runs_are_marked() {
    for place in places() {
        let t0 = Utc::now();
        {
            let s = place.open();
            let id = s.journal(&entry(t0, ActionKind::Run, "clicks", "started")).unwrap();
            assert_eq!(id, 1);
            s.save_rule_state("r", "jm", &serde_json::json!({"n": 1})).unwrap();
        }
        let s = place.open();
        assert_eq!(s.mark_interrupted(Utc::now()).unwrap(), 1);
        let e = s.entries(None).unwrap();
        assert_eq!(e.len(), 1);
        assert!(e[0].outcome.starts_with("interrupted"));
        assert_eq!(s.rule_states().unwrap()[&("r".into(), "jm".into())], serde_json::json!({"n": 1}));
        assert_eq!(s.runs_since("jm", "clicks", t0 - chrono::Duration::seconds(1)).unwrap(), 1);
        assert_eq!(s.runs_since("jm", "clicks", t0 + chrono::Duration::seconds(1)).unwrap(), 0);
    }
}

#[test]
fn commits_are_synced_to_the_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let (mode, sync): (String, i64) = s
        .with_sqlite(|c| {
            let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok((mode, sync))
        })
        .unwrap()
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous = FULL: every commit is fsynced before it returns");
}

#[tokio::test(flavor = "current_thread")]
async fn calls_run_on_the_store_thread_in_order_and_pass_panics_on() {
    for place in places() {
        let s = Arc::new(place.open());
        let name = s.call(|_| std::thread::current().name().map(str::to_string)).await;
        assert_eq!(name.as_deref(), Some("warden-store"));
        // Queued one after the other: journalled in that order.
        let calls: Vec<_> = (0..50)
            .map(|i| s.call(move |s| s.journal(&entry(t0(), ActionKind::Log, &format!("s{i}"), "ok")).unwrap()))
            .collect();
        let ids = futures_util::future::join_all(calls).await;
        assert_eq!(ids, (1..=50).collect::<Vec<i64>>());
        let subjects: Vec<String> = s.entries(None).unwrap().into_iter().map(|e| e.subject).collect();
        assert_eq!(subjects, (0..50).map(|i| format!("s{i}")).collect::<Vec<_>>());
        // A panic reaches the caller; the thread lives on.
        let boom = std::panic::AssertUnwindSafe(s.call(|_| -> i64 { panic!("boom") })).catch_unwind().await;
        assert!(boom.is_err());
        assert_eq!(s.call(|s| s.entries(None).unwrap().len()).await, 50);
    }
}

#[test]
fn a_transaction_writes_all_or_nothing_and_nested_ones_are_savepoints() {
    for place in places() {
        let s = place.open();
        let failed: Result<()> = s.transaction(|s| {
            s.journal(&entry(t0(), ActionKind::Alert, "a", "started"))?;
            s.save_dispatch_state("r", "jm", &serde_json::json!({"x": 1}))?;
            Err(StoreError::new(s.path(), "injected"))
        });
        assert!(failed.is_err());
        assert!(s.entries(None).unwrap().is_empty());
        assert!(s.dispatch_states().unwrap().is_empty());

        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.transaction(|s| -> Result<()> {
                s.journal(&entry(t0(), ActionKind::Alert, "b", "started"))?;
                panic!("mid-step")
            });
        }));
        assert!(panicked.is_err());
        assert!(s.entries(None).unwrap().is_empty(), "a panic rolls back too");

        s.transaction(|s| {
            s.journal(&entry(t0(), ActionKind::Alert, "kept", "started"))?;
            let inner: Result<()> = s.transaction(|s| {
                s.journal(&entry(t0(), ActionKind::Alert, "dropped", "started"))?;
                Err(StoreError::new(s.path(), "inner"))
            });
            assert!(inner.is_err());
            Ok(())
        })
        .unwrap();
        let subjects: Vec<String> = s.entries(None).unwrap().into_iter().map(|e| e.subject).collect();
        assert_eq!(subjects, ["kept"]);
    }
}

#[test]
fn a_fresh_store_has_the_latest_schema_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.with_sqlite(schema::version).unwrap().unwrap(), i64::from(schema::SCHEMA_VERSION));
    assert_eq!(schema::MIGRATIONS.last().map(|m| m.version), Some(schema::SCHEMA_VERSION));
    assert!(schema::MIGRATIONS.windows(2).all(|w| w[1].version == w[0].version + 1), "an ordered ladder");
    s.with_sqlite(|c| c.pragma_update(None, "user_version", 99)).unwrap().unwrap();
    drop(s);
    let err = Store::open(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "state store `{}` has schema version 99, this Warden knows up to {}: upgrade Warden",
            dir.path().join("warden.db").display(),
            schema::SCHEMA_VERSION
        )
    );
    assert_eq!(err.schema_too_new(), Some(&SchemaTooNew { found: 99, known: schema::SCHEMA_VERSION }));
}

#[test]
fn an_interim_database_with_restart_owners_but_no_version_is_upgraded() {
    // A build between the first release and the ladder added the owner columns by hand and left version 0.
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Connection::open(dir.path().join("warden.db")).unwrap();
        (schema::MIGRATIONS[0].apply)(&c).unwrap();
        c.execute_batch(
            "ALTER TABLE restarts ADD COLUMN owner TEXT; ALTER TABLE restarts ADD COLUMN lease_until TEXT;",
        )
        .unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.with_sqlite(schema::version).unwrap().unwrap(), i64::from(schema::SCHEMA_VERSION));
    let r = s.begin_restart(1, "jm", "clicks", RestartStrategy::Stateless, "", t0(), "1@a", days(1)).unwrap();
    assert_eq!(r.and_then(|r| r.owner).as_deref(), Some("1@a"));
}

/// `(type, name, sql)` of the schema objects named `notify_…`.
fn notify_objects(c: &Connection) -> rusqlite::Result<Vec<(String, String, String)>> {
    let mut st = c.prepare(
        "SELECT type, name, sql FROM sqlite_master WHERE name LIKE 'notify%' AND sql IS NOT NULL ORDER BY name",
    )?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

#[test]
fn the_notifier_tables_are_created_by_the_migrations_exactly_as_the_notifier_defines_them() {
    let plain = Connection::open_in_memory().unwrap();
    plain.execute_batch(crate::notify::outbox::SCHEMA).unwrap();
    plain.execute_batch(crate::notify::silence::SCHEMA).unwrap();
    plain.execute_batch(crate::notify::inhibit::SCHEMA).unwrap();
    let theirs = notify_objects(&plain).unwrap();
    let s = Store::in_memory();
    let ours = s.with_sqlite(notify_objects).unwrap().unwrap();
    for object in &theirs {
        assert!(ours.contains(object), "the migrations define {} differently or not at all", object.1);
    }
    crate::notify::outbox::init(&s).unwrap();
    assert_eq!(
        s.with_sqlite(notify_objects).unwrap().unwrap(),
        ours,
        "their CREATE … IF NOT EXISTS finds everything in place"
    );
}

#[test]
fn a_restart_is_held_by_its_owner_until_its_lease_runs_out() {
    for place in places() {
        let s = place.open();
        let lease = chrono::Duration::seconds(60);
        let a =
            s.begin_restart(1, "jm", "clicks", RestartStrategy::Savepoint, "j1", t0(), "1@a", lease).unwrap().unwrap();
        assert_eq!(a.owner.as_deref(), Some("1@a"));
        assert_eq!(a.lease_until.as_deref(), Some(ts(t0() + lease).as_str()));
        assert!(
            s.begin_restart(2, "jm", "clicks", RestartStrategy::Stateless, "j1", t0(), "2@b", lease).unwrap().is_none(),
            "one restart per job"
        );
        let at = |secs: i64| t0() + chrono::Duration::seconds(secs);
        assert_eq!(s.claim_restart(a.id, "2@b", at(30), lease).unwrap(), None, "the lease still runs");
        assert_eq!(s.claim_restart(a.id, "1@a", at(30), lease).unwrap(), None, "not even its owner takes it twice");
        assert!(s.renew_restart_lease(a.id, "1@a", at(30), lease).unwrap());
        assert_eq!(s.claim_restart(a.id, "2@b", at(80), lease).unwrap(), None, "renewed until 90 s");
        let b = s.claim_restart(a.id, "2@b", at(91), lease).unwrap().expect("expired: taken over");
        assert_eq!((b.owner.as_deref(), b.step, b.journal_id), (Some("2@b"), a.step, 1));
        // The old owner learns it lost the restart, and cannot write a step any more (fencing).
        assert!(!s.renew_restart_lease(a.id, "1@a", at(92), lease).unwrap());
        let mut stale = a.clone();
        stale.step = RestartStep::Submitting;
        let err = s.update_restart(&stale, at(92)).unwrap_err().to_string();
        assert!(err.contains("driven by another process now"), "{err}");
        assert_eq!(s.restart(a.id).unwrap().map(|r| r.step), Some(a.step));
        // Released: anyone may claim it at once; it still names its last owner until then.
        s.release_restart(a.id, "1@a").unwrap();
        assert!(s.restart(a.id).unwrap().and_then(|r| r.lease_until).is_some(), "not 1@a's to release");
        s.release_restart(a.id, "2@b").unwrap();
        let released = s.restart(a.id).unwrap().unwrap();
        assert_eq!((released.owner.as_deref(), released.lease_until), (Some("2@b"), None));
        let c = s.claim_restart(a.id, "1@a", at(93), lease).unwrap().expect("released: anyone may take it");
        // A dead owner's restart may be stolen whatever its lease, once: compare-and-swap on the owner.
        assert!(s.steal_restart(a.id, "2@b", "3@c", at(94), lease).unwrap().is_none(), "2@b is not the owner");
        let d = s.steal_restart(a.id, "1@a", "3@c", at(94), lease).unwrap().expect("stolen from 1@a");
        assert_eq!(d.owner.as_deref(), Some("3@c"));
        assert!(s.steal_restart(a.id, "1@a", "4@d", at(94), lease).unwrap().is_none(), "3@c was first");
        let mut done = d.clone();
        done.outcome = Some(crate::model::RestartResult::Ok);
        s.update_restart(&done, at(95)).unwrap();
        assert_eq!(s.claim_restart(a.id, "2@b", at(500), lease).unwrap(), None, "a finished restart is nobody's");
        assert!(!s.renew_restart_lease(a.id, "3@c", at(95), lease).unwrap());
        assert_eq!(c.id, a.id);
    }
}

fn retention(journal: i64, notifications: i64, keep: usize, savepoint_age: i64, window: i64) -> Retention {
    let mut config =
        RetentionConfig { journal: std_days(journal), notifications: std_days(notifications), ..Default::default() };
    config.savepoints.keep = keep;
    config.savepoints.max_age = std_days(savepoint_age);
    Retention { config, guard_window: std_days(window) }
}

fn std_days(n: i64) -> std::time::Duration {
    std::time::Duration::from_secs(n as u64 * 86400)
}

fn count(s: &Store, table: &str) -> i64 {
    s.with_db(|c| c.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?.get(0)).unwrap()
}

#[test]
fn pruning_keeps_what_is_still_needed_on_controlled_time() {
    for place in places() {
        let clock = Clock::manual(t0());
        let s = place.open();
        let now = clock.now();
        // Old history: a finished alert, a dry run, an action still running, a finished restart.
        let done = s.journal(&entry(now, ActionKind::Alert, "clicks", "started")).unwrap();
        s.finish(done, "ok", "", now).unwrap();
        s.journal(&entry(now, ActionKind::Run, "clicks", "dry-run")).unwrap();
        let running = s.journal(&entry(now, ActionKind::Run, "orders", "started")).unwrap();
        let old_restart = s.journal(&entry(now, ActionKind::Restart, "clicks", "started")).unwrap();
        let mut r = s
            .begin_restart(
                old_restart,
                "jm",
                "clicks",
                RestartStrategy::Savepoint,
                "j0",
                now,
                "1@a",
                chrono::Duration::seconds(30),
            )
            .unwrap()
            .unwrap();
        r.outcome = Some(crate::model::RestartResult::Ok);
        s.update_restart(&r, now).unwrap();
        s.finish(old_restart, "ok", "", now).unwrap();
        // A restart in progress since then, restoring from an old location of `orders`.
        let live = s.journal(&entry(now, ActionKind::Restart, "orders", "started")).unwrap();
        let mut lr = s
            .begin_restart(
                live,
                "jm",
                "orders",
                RestartStrategy::LastCheckpoint,
                "o0",
                now,
                "1@a",
                chrono::Duration::seconds(30),
            )
            .unwrap()
            .unwrap();
        lr.location = Some("file:/cp/orders/1".into());
        s.update_restart(&lr, now).unwrap();
        for (job, loc) in [("clicks", "1"), ("clicks", "2"), ("clicks", "3"), ("orders", "1"), ("orders", "2")] {
            let location = format!("file:/cp/{job}/{loc}");
            s.record_savepoint("jm", job, &location, "checkpoint", "j", None, now, 100).unwrap();
        }
        // Notifications: delivered, failed and pending messages; a silence that ended, one that runs for long.
        s.with_db(|c| {
            for (status, done) in [("sent", Some(ts(now))), ("failed", Some(ts(now))), ("pending", None)] {
                c.execute(
                    "INSERT INTO notify_outbox (channel, lane, created, next_attempt, status, message, done)
                 VALUES ('disk', 'disk/jm', ?1, ?1, ?2, '{}', ?3)",
                    args![ts(now), status, done],
                )?;
            }
            Ok(())
        })
        .unwrap();
        crate::notify::silence::add(&s, &["job=clicks".into()], now, now + chrono::Duration::hours(1), "", "ana")
            .unwrap();
        crate::notify::silence::add(&s, &["job=orders".into()], now, now + days(60), "", "ana").unwrap();

        // Settings below the storm guard's window are read as the window: at 20 days, nothing is 30 days old.
        clock.advance(std_days(20));
        let short = retention(1, 1, 1, 1, 30);
        assert_eq!(prune(&s, &short, clock.now(), 100).unwrap().total(), 0);

        // At 32 days, with a journal kept 10 days and notifications 5 days, savepoints 2 per job and 40 days.
        clock.advance(std_days(5));
        let recent = s.journal(&entry(clock.now(), ActionKind::Alert, "recent", "ok")).unwrap();
        s.finish(recent, "ok", "", clock.now()).unwrap();
        clock.advance(std_days(7));
        let policy = retention(10, 5, 2, 40, 1);
        let p = prune(&s, &policy, clock.now(), 100).unwrap();
        assert_eq!((p.journal, p.restarts, p.outbox, p.silences), (3, 1, 2, 1), "{p:?}");
        let left: Vec<i64> = s.entries(None).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(left, [running, live, recent], "unfinished actions and a live restart's entry stay");
        assert_eq!(s.unfinished_restarts().unwrap().len(), 1);
        assert_eq!((count(&s, "notify_outbox"), count(&s, "notify_silence")), (1, 1));
        let locations = |job: &str| -> Vec<String> {
            s.savepoints(Some("jm"), Some(job)).unwrap().into_iter().map(|r| r.location).collect()
        };
        assert_eq!(locations("clicks"), ["file:/cp/clicks/3", "file:/cp/clicks/2"], "the newest `keep`");
        assert_eq!(locations("orders"), ["file:/cp/orders/2", "file:/cp/orders/1"]);

        // Much later: by age only the newest location of a job stays, and the one a live restart uses.
        clock.advance(std_days(100));
        let p = prune(&s, &policy, clock.now(), 100).unwrap();
        assert_eq!((p.savepoints, p.journal, p.silences), (1, 1, 1), "{p:?}");
        assert_eq!(locations("clicks"), ["file:/cp/clicks/3"]);
        assert_eq!(locations("orders"), ["file:/cp/orders/2", "file:/cp/orders/1"]);
        // Batches: one row per table per call.
        for i in 0..3 {
            let id = s.journal(&entry(clock.now() - days(50), ActionKind::Log, &format!("b{i}"), "ok")).unwrap();
            s.finish(id, "ok", "", clock.now()).unwrap();
        }
        assert_eq!(prune(&s, &policy, clock.now(), 1).unwrap().journal, 1);
        assert_eq!(prune(&s, &policy, clock.now(), 10).unwrap().journal, 2);
        assert_eq!(s.entries(None).unwrap().len(), 2, "the running action and the live restart's entry");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn pruning_runs_periodically_until_stopped() {
    let clock = Clock::manual(t0());
    let s = Arc::new(Store::in_memory());
    let mut r = retention(10, 5, 2, 40, 1);
    r.config.prune_every = std::time::Duration::from_millis(20);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(retention::run(s.clone(), r, clock.clone(), stop.clone()));
    let id = s.journal(&entry(t0(), ActionKind::Alert, "old", "ok")).unwrap();
    s.finish(id, "ok", "", t0()).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(s.entries(None).unwrap().len(), 1, "not old yet");
    clock.advance(std_days(11));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.entries(None).unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the entry was never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(5), task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_synchronous_store_call_from_an_async_task_does_not_stall_the_other_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    // Another process holds the database for a while.
    let other = rusqlite::Connection::open(dir.path().join("warden.db")).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let t2 = ticks.clone();
    let ticker = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            t2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let s2 = store.clone();
    // A task on the one worker journals synchronously (as the executor does) and waits for the lock.
    let writer = tokio::spawn(async move {
        s2.journal(&NewEntry { rule: "r".into(), outcome: "ok".into(), ..Default::default() }).unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let during = ticks.load(std::sync::atomic::Ordering::Relaxed);
    other.execute_batch("COMMIT").unwrap();
    writer.await.unwrap();
    ticker.await.unwrap();
    assert!(during >= 10, "the worker was blocked by the store call: only {during} ticks in 600 ms");
}

#[test]
fn per_job_rule_state_survives_reopen_and_is_cleared_with_its_rule() {
    for place in places() {
        let key = |rule: &str, job: Option<&str>| RuleStateKey {
            rule: rule.into(),
            target: "jm".into(),
            job: job.map(str::to_string),
        };
        {
            let s = place.open();
            s.save_scoped_rule_state(&key("r", Some("clicks")), &serde_json::json!({"n": 1})).unwrap();
            s.save_scoped_rule_state(&key("r", Some("clicks")), &serde_json::json!({"n": 2})).unwrap();
            s.save_scoped_rule_state(&key("r", Some("views")), &serde_json::json!({"n": 7})).unwrap();
            s.save_scoped_rule_state(&key("r", None), &serde_json::json!({"t": 1})).unwrap();
            s.save_scoped_rule_state(&key("q", Some("clicks")), &serde_json::json!({"q": 1})).unwrap();
        }
        let s = place.open();
        let all = s.all_rule_states().unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[&key("r", Some("clicks"))], serde_json::json!({"n": 2}));
        assert_eq!(all[&key("r", None)], serde_json::json!({"t": 1}));
        s.drop_job_rule_states(&["r".to_string()], "jm", "views").unwrap();
        assert!(!s.job_rule_states().unwrap().contains_key(&key("r", Some("views"))));
        s.clear_rule_state("r").unwrap();
        let left: Vec<RuleStateKey> = s.all_rule_states().unwrap().into_keys().collect();
        assert_eq!(left, [key("q", Some("clicks"))]);
    }
}
