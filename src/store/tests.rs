use std::sync::Arc;

use chrono::TimeZone;
use futures_util::FutureExt;

use super::*;
use crate::model::RestartStrategy;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
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
    let dir = tempfile::tempdir().unwrap();
    let t0 = Utc::now();
    {
        let s = Store::open(dir.path()).unwrap();
        let id = s.journal(&entry(t0, ActionKind::Run, "clicks", "started")).unwrap();
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

#[test]
fn commits_are_synced_to_the_write_ahead_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let (mode, sync): (String, i64) = s
        .with_conn(|c| {
            let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let sync = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
            Ok((mode, sync))
        })
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous = FULL: every commit is fsynced before it returns");
}

#[tokio::test(flavor = "current_thread")]
async fn calls_run_on_the_store_thread_in_order_and_pass_panics_on() {
    let s = Arc::new(Store::in_memory());
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

#[test]
fn a_transaction_writes_all_or_nothing_and_nested_ones_are_savepoints() {
    let s = Store::in_memory();
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

#[test]
fn a_fresh_store_has_the_latest_schema_and_a_newer_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.with_conn(schema::version).unwrap(), i64::from(schema::SCHEMA_VERSION));
    assert_eq!(schema::MIGRATIONS.last().map(|m| m.version), Some(schema::SCHEMA_VERSION));
    assert!(schema::MIGRATIONS.windows(2).all(|w| w[1].version == w[0].version + 1), "an ordered ladder");
    s.with_conn(|c| c.pragma_update(None, "user_version", 99)).unwrap();
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
    let theirs = notify_objects(&plain).unwrap();
    let s = Store::in_memory();
    let ours = s.with_conn(notify_objects).unwrap();
    for object in &theirs {
        assert!(ours.contains(object), "the migrations define {} differently or not at all", object.1);
    }
    crate::notify::outbox::init(&s).unwrap();
    assert_eq!(s.with_conn(notify_objects).unwrap(), ours, "their CREATE … IF NOT EXISTS finds everything in place");
}

#[test]
fn a_restart_is_held_by_its_owner_until_its_lease_runs_out() {
    let s = Store::in_memory();
    let lease = chrono::Duration::seconds(60);
    let a = s.begin_restart(1, "jm", "clicks", RestartStrategy::Savepoint, "j1", t0(), "1@a", lease).unwrap().unwrap();
    assert_eq!(a.owner.as_deref(), Some("1@a"));
    assert_eq!(a.lease_until.as_deref(), Some(ts(t0() + lease).as_str()));
    assert!(
        s.begin_restart(2, "jm", "clicks", RestartStrategy::Stateless, "j1", t0(), "2@b", lease).unwrap().is_none(),
        "one restart per job"
    );
    let at = |secs: i64| t0() + chrono::Duration::seconds(secs);
    assert_eq!(s.claim_restart(a.id, "2@b", at(30), lease).unwrap(), None, "the lease still runs");
    assert!(s.renew_restart_lease(a.id, "1@a", at(30), lease).unwrap());
    assert_eq!(s.claim_restart(a.id, "2@b", at(80), lease).unwrap(), None, "renewed until 90 s");
    let b = s.claim_restart(a.id, "2@b", at(90), lease).unwrap().expect("expired: taken over");
    assert_eq!((b.owner.as_deref(), b.step, b.journal_id), (Some("2@b"), a.step, 1));
    assert!(!s.renew_restart_lease(a.id, "1@a", at(91), lease).unwrap(), "the old owner learns it lost it");
    assert!(s.claim_restart(a.id, "2@b", at(91), lease).unwrap().is_some(), "the holder may claim again");
    assert!(!s.release_restart(a.id, "1@a").unwrap());
    assert!(s.release_restart(a.id, "2@b").unwrap());
    let c = s.claim_restart(a.id, "1@a", at(92), lease).unwrap().expect("released: anyone may take it");
    assert_eq!(c.owner.as_deref(), Some("1@a"));
    let mut done = c.clone();
    done.outcome = Some(crate::model::RestartResult::Ok);
    s.update_restart(&done, at(93)).unwrap();
    assert_eq!(s.claim_restart(a.id, "2@b", at(500), lease).unwrap(), None, "a finished restart is nobody's");
    assert!(!s.renew_restart_lease(a.id, "1@a", at(93), lease).unwrap());
}
