//! The state store: the daemon keeps watching while another process holds the database, a database written by
//! the first release is upgraded in place, and one written by a newer Warden is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::json;
use warden::event::Event;
use warden::model::{ActionKind, RestartResult, RestartStep, RestartStrategy};
use warden::store::schema::SCHEMA_VERSION;
use warden::store::{Fence, NewEntry, Store, StoreError};

use crate::support::{is_alert, write_pack, Daemon, WARDEN};
use crate::support_pg::Pg;

/// The first release's `warden.db` (made by its own code; see `tests/fixtures/store/README.md`).
const V1_DB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/store/v1-warden.db");

/// One worker thread: if anything blocks it on SQLite, every task of the daemon stops with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_daemon_keeps_polling_while_another_process_holds_the_state_store() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.expect("fake JobManager");
    fake.submit("clicks");
    let dir = tempfile::tempdir().expect("tempdir");
    // Every evaluation asks for the alert, so every dispatcher step writes (its `seen` count).
    write_pack(dir.path(), "t", &[("always", "alert(#{ subject: \"clicks\", summary: \"always firing\" });\n")]);
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "shutdown_grace": "5s",
    });
    let mut d = Daemon::start_in(dir, cfg).await;
    d.wait_for("the alert", |e| is_alert(e, "firing", "t/always", "clicks")).await;
    // The executor journals the alert's outcome right after announcing it, still with a synchronous store call
    // on its worker (see the store's docs): let that finish before taking the lock.
    crate::support::eventually("the alert's outcome journalled", || {
        d.journal().iter().any(|e| e.action == ActionKind::Alert && e.outcome == "ok")
    })
    .await;

    // Another process (`warden history`, a backup, sqlite3) holds the write lock for 2 s.
    let db = d.state_dir.join("warden.db");
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).expect("second connection");
        c.execute_batch("BEGIN EXCLUSIVE; UPDATE journal SET output = output WHERE id = 1;").expect("write lock");
        let _ = locked_tx.send(Instant::now());
        std::thread::sleep(Duration::from_secs(2));
        c.execute_batch("COMMIT").expect("commit");
    });
    let locked_at = locked_rx.await.expect("the lock was taken");
    // A timer on the worker keeps ticking...
    let ticker = tokio::spawn(async {
        let mut last = Instant::now();
        let mut worst = Duration::ZERO;
        let mut every = tokio::time::interval(Duration::from_millis(20));
        for _ in 0..90 {
            every.tick().await;
            worst = worst.max(last.elapsed());
            last = Instant::now();
        }
        worst
    });
    // ... and the probe keeps polling the fake JobManager (served from the same worker).
    let mut polls = 0;
    while locked_at.elapsed() < Duration::from_millis(1800) {
        d.wait_for("a poll while the store is locked", |e| matches!(e, Event::Observed { .. })).await;
        if locked_at.elapsed() < Duration::from_millis(1900) {
            polls += 1;
        }
    }
    let worst = ticker.await.expect("ticker");
    holder.join().expect("lock holder");
    assert!(polls >= 4, "only {polls} polls in the 2 s the store was locked: the runtime was blocked");
    assert!(worst < Duration::from_millis(500), "a 20 ms timer waited {worst:?}: the runtime was blocked");

    // The decisions were only delayed: once the lock is gone, the dispatcher catches up, in order, and the alert
    // was sent once.
    let seen = |d: &Daemon| -> u64 {
        let s = Store::open(&d.state_dir).expect("store");
        let states = s.dispatch_states().expect("dispatch state");
        states[&("t/always".to_string(), "jm".to_string())]["alert:clicks"]["seen"].as_u64().unwrap_or(0)
    };
    let before = seen(&d);
    d.polls(3).await;
    crate::support::eventually("the dispatcher to catch up", || seen(&d) > before).await;
    let alerts = d.journal().iter().filter(|e| e.action == ActionKind::Alert && e.subject == "clicks").count();
    assert_eq!(alerts, 1);
    d.stop().await;
}

fn copy_fixture(dir: &Path) {
    std::fs::copy(V1_DB, dir.join("warden.db")).expect("copy the v1 database");
}

#[tokio::test]
async fn a_database_from_the_first_release_is_upgraded_in_place_and_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    let version = |dir: &Path| -> i64 {
        let c = rusqlite::Connection::open(dir.join("warden.db")).expect("open");
        c.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("user_version")
    };
    assert_eq!(version(dir.path()), 0, "the first release wrote no version");
    let s = Store::open(dir.path()).expect("the v1 database opens");
    assert_eq!(version(dir.path()), i64::from(SCHEMA_VERSION));

    // The journal, as the first release wrote it.
    let j = s.entries(None).expect("journal");
    let kinds: Vec<ActionKind> = j.iter().map(|e| e.action).collect();
    use ActionKind::*;
    assert_eq!(kinds, [Alert, Run, Notify, Notify, Notify, Notify, Restart, Restart]);
    assert_eq!((j[1].detail.as_str(), j[1].outcome.as_str(), j[1].output.as_str()), ("relaunch", "ok", "relaunched\n"));
    assert!(j[5].outcome.starts_with("failed: plugin"), "{:?}", j[5].outcome);
    assert_eq!(j[7].outcome, "started");
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").expect("time").to_utc();
    assert_eq!(s.runs_since("jm", "clicks", t0).expect("runs"), 2, "the relaunch and the restart");

    // Restarts: one done, one in progress, with no owner yet (a new Warden may claim it at once).
    let r = s.restarts(None).expect("restarts");
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].strategy, r[0].step, &r[0].outcome),
        (RestartStrategy::Savepoint, RestartStep::Done, &Some(RestartResult::Ok))
    );
    assert_eq!(r[0].location.as_deref(), Some("file:/sp/savepoint-a1b2"));
    assert_eq!((r[0].owner.as_deref(), r[0].lease_until.as_deref()), (None, None));
    let live = s.restart_in_progress("jm", "orders").expect("lock").expect("in progress");
    assert_eq!((live.strategy, live.step), (RestartStrategy::LastCheckpoint, RestartStep::StateChosen));
    let now = t0 + chrono::Duration::hours(1);
    let claimed = s.claim_restart(live.id, "me@here", now, chrono::Duration::seconds(60)).expect("claim");
    assert_eq!(claimed.and_then(|c| c.owner).as_deref(), Some("me@here"));

    // Savepoint history, rule and dispatcher state, the guard reset.
    let sp = s.savepoints(Some("jm"), Some("clicks")).expect("savepoints");
    assert_eq!(
        sp.iter().map(|p| p.location.as_str()).collect::<Vec<_>>(),
        ["file:/cp/chk-7", "file:/sp/savepoint-a1b2"]
    );
    assert_eq!(sp[1].used_by, Some(r[0].id));
    let rules = s.rule_states().expect("rule state");
    assert_eq!(rules[&("flink/job-not-running".into(), "jm".into())], json!({"seen": {"clicks": 3}}));
    let disp = s.dispatch_states().expect("dispatch state");
    let slot = &disp[&("flink/job-not-running".into(), "jm".into())];
    assert_eq!(slot["alert:clicks"]["fired_at"], "2026-03-01T10:00:00Z");
    assert!(slot["alert:orders"]["fired_at"].is_null(), "still pending");
    assert!(s.guard_reset_at("jm", "clicks").expect("guard").is_some());

    // A dispatcher resumes that state: `clicks` is not fired again, `orders` fires when its `for` is over.
    let mut d = warden::dispatch::Dispatcher::new(Default::default(), false, &s).expect("dispatcher");
    assert_eq!(d.firing().len(), 1);
    let origin = warden::model::Origin {
        rule: "flink/job-not-running".into(),
        target: "jm".into(),
        target_url: "http://jm:8081".into(),
        probe: "flink/jobs-overview".into(),
        time: t0 + chrono::Duration::minutes(10),
        observed: None,
    };
    let req = |subject: &str| warden::model::ActionRequest {
        kind: warden::model::RequestKind::Alert,
        subject: subject.into(),
        severity: warden::model::Severity::Critical,
        summary: format!("job {subject} FAILED"),
        details: json!({"job": subject}),
        pending: Some(warden::model::Pending::Duration(Duration::from_secs(300))),
        cooldown: None,
    };
    let verdict = warden::script::Verdict::Requests(vec![req("clicks"), req("orders")]);
    let planned = d.process(&origin, &verdict, &s).expect("a step on the upgraded store");
    let fired: Vec<String> = planned
        .iter()
        .filter_map(|p| match p {
            warden::model::Planned::Notify { record, .. } => Some(format!("{}:{}", record.event, record.subject)),
            _ => None,
        })
        .collect();
    assert_eq!(fired, ["firing:orders"]);

    // The notifier's tables: outbox history, waiting alerts, silences.
    let (pending, sent, failed): (i64, i64, i64) = s
        .with_db(|c| {
            let r = c.query_one(
                "SELECT (SELECT COUNT(*) FROM notify_pending),
                        (SELECT COUNT(*) FROM notify_outbox WHERE status = 'sent'),
                        (SELECT COUNT(*) FROM notify_outbox WHERE status = 'failed')",
                &[],
            )?;
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("outbox");
    assert_eq!((pending, sent, failed), (2, 3, 1));
    let silences = warden::notify::silence::list(&s, now, true).expect("silences");
    assert_eq!(silences.len(), 2);
    assert!(silences.iter().any(|x| x.matchers == ["job=clicks"] && x.removed.is_some()));
    drop(s);

    // Opening it again changes nothing.
    let s = Store::open(dir.path()).expect("reopen");
    assert_eq!(s.entries(None).expect("journal").len(), 9);
    assert_eq!(version(dir.path()), i64::from(SCHEMA_VERSION));
}

#[test]
fn a_database_from_a_newer_warden_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture(dir.path());
    {
        let c = rusqlite::Connection::open(dir.path().join("warden.db")).expect("open");
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).expect("set version");
    }
    let out = std::process::Command::new(WARDEN)
        .args(["history", "--state-dir"])
        .arg(dir.path())
        .output()
        .expect("run warden history");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let want = format!(
        "state store `{}` has schema version {}, this Warden knows up to {SCHEMA_VERSION}: upgrade Warden",
        dir.path().join("warden.db").display(),
        SCHEMA_VERSION + 1
    );
    assert!(stderr.contains(&want), "{stderr}");
    // Refused, not touched.
    let c = rusqlite::Connection::open(dir.path().join("warden.db")).expect("open");
    let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(v, i64::from(SCHEMA_VERSION) + 1);
}

// PostgreSQL: several Wardens on one database, the fence, a server restart. Each test starts its server (or prints
// SKIP without PostgreSQL; on CI it fails instead).

fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").expect("time").to_utc()
        + chrono::Duration::seconds(secs)
}

fn entry(subject: &str) -> NewEntry {
    NewEntry { time: Some(at(0)), subject: subject.into(), outcome: "ok".into(), ..Default::default() }
}

/// Runs `f` on `n` threads, each with a store of its own on `url`, released at once; returns what each returned.
fn race<T: Send + 'static>(url: &str, n: usize, f: impl Fn(&Store, usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let stores: Vec<Store> = (0..n).map(|_| Store::open_postgres(url).expect("store")).collect();
    let go = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (f, go) = (f.clone(), go.clone());
            std::thread::spawn(move || {
                go.wait();
                f(&s, i)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("racer")).collect()
}

#[test]
fn wardens_on_one_postgresql_database_race_for_a_restart_and_an_outbox_row_and_exactly_one_wins() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database();
    let lease = chrono::Duration::seconds(60);
    for round in 0..5 {
        let job = format!("clicks-{round}");
        // Beginning the same restart: the partial unique index lets one in.
        let j = job.clone();
        let begun = race(&url, 6, move |s, i| {
            s.begin_restart(1, "jm", &j, RestartStrategy::Stateless, "", at(0), &format!("w{i}"), lease)
                .expect("begin")
                .is_some()
        });
        assert_eq!(begun.iter().filter(|b| **b).count(), 1, "round {round}: {begun:?}");
        // Its lease ran out: six Wardens claim it at once, one takes it over.
        let s = Store::open_postgres(&url).expect("store");
        let id = s.restart_in_progress("jm", &job).expect("read").expect("in progress").id;
        let claimed = race(&url, 6, move |s, i| {
            s.claim_restart(id, &format!("c{i}"), at(120), lease).expect("claim").map(|r| r.owner)
        });
        let winners: Vec<_> = claimed.iter().flatten().collect();
        assert_eq!(winners.len(), 1, "round {round}: {claimed:?}");
        let owner = s.restart(id).expect("read").expect("there").owner;
        assert_eq!(Some(&owner), winners.first().copied(), "the record names the one winner");
        // One outbox message, six deliverers: one claim succeeds.
        let row: i64 = s
            .with_db(|c| {
                c.query_one(
                    "INSERT INTO notify_outbox (channel, lane, created, next_attempt, status, message)
                     VALUES ('disk', 'disk/jm', ?1, ?1, 'pending', '{}') RETURNING id",
                    warden::store::args![warden::store::ts(at(0))],
                )?
                .get(0)
            })
            .expect("queued");
        let claims = race(&url, 6, move |s, _| warden::notify::outbox::claim(s, row, 0, at(0)).expect("claim"));
        assert_eq!(claims.iter().filter(|c| **c).count(), 1, "round {round}: {claims:?}");
        // A claim whose delivery never reported back (its process died) runs out, and one other takes it over.
        let lease = warden::notify::outbox::CLAIM_LEASE.num_seconds();
        assert!(!warden::notify::outbox::claim(&s, row, 0, at(lease - 1)).expect("claim"), "still held");
        let later = race(&url, 6, move |s, _| warden::notify::outbox::claim(s, row, 0, at(lease + 1)).expect("claim"));
        assert_eq!(later.iter().filter(|c| **c).count(), 1, "round {round}: {later:?}");
        // Once delivered, nobody claims it again.
        warden::notify::outbox::sent(&s, row, at(1)).expect("sent");
        assert!(!warden::notify::outbox::claim(&s, row, 0, at(10 * lease)).expect("claim"));
    }
}

#[test]
fn a_warden_whose_lease_moved_on_is_refused_every_write_and_nothing_of_it_is_written() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database();
    let a = Store::open_postgres(&url).expect("store a");
    let b = Store::open_postgres(&url).expect("store b");
    pg.exec(&url, "INSERT INTO warden_leader VALUES (1, 'a', 1, now() + interval '10 s', now())");
    let fence_a = Fence { epoch: 1, holder: "a".into() };
    a.set_fence(Some(fence_a.clone())).expect("fence");
    let first = a.journal(&entry("while-leader")).expect("the leader writes");
    assert_eq!(
        a.with_db(|c| c
            .query_one("SELECT epoch FROM journal WHERE id = ?1", warden::store::args![first])?
            .get::<i64>(0))
            .expect("epoch"),
        1,
        "the entry records the epoch that allowed it"
    );

    // While a's write transaction is open, the election cannot move the lease on: the check holds the row.
    let moved = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (m, exec_url) = (moved.clone(), url.clone());
    let pg = std::sync::Arc::new(pg);
    let pg2 = pg.clone();
    let mut election = None;
    a.transaction(|s| {
        s.journal(&entry("in-step"))?;
        election = Some(std::thread::spawn(move || {
            pg2.exec(&exec_url, "UPDATE warden_leader SET epoch = epoch WHERE id = 1");
            m.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!moved.load(std::sync::atomic::Ordering::SeqCst), "the lease row was changed under a's write");
        Ok(())
    })
    .expect("a's step commits");
    election.expect("spawned").join().expect("the election's update");
    assert!(moved.load(std::sync::atomic::Ordering::SeqCst));

    // The election hands the lease to b (a was paused): a's writes are refused, all of them.
    pg.exec(&url, "UPDATE warden_leader SET holder = 'b', epoch = 2 WHERE id = 1");
    b.set_fence(Some(Fence { epoch: 2, holder: "b".into() })).expect("fence");
    let err = a.journal(&entry("stale")).unwrap_err();
    match &err {
        StoreError::Fenced { ours, current } => {
            assert_eq!(ours.as_ref(), Some(&fence_a));
            assert_eq!(current.as_ref().map(|f| (f.holder.as_str(), f.epoch)), Some(("b", 2)));
        }
        other => panic!("not refused by the fence: {other:?}"),
    }
    assert!(err.to_string().contains("write refused"), "{err}");
    let step = a.transaction(|s| {
        s.save_dispatch_state("r", "jm", &json!({"x": 1}))?;
        s.journal(&entry("stale-step"))
    });
    assert!(step.unwrap_err().is_fenced());
    assert!(a
        .begin_restart(1, "jm", "clicks", RestartStrategy::Stateless, "", at(0), "a", chrono::Duration::seconds(60))
        .unwrap_err()
        .is_fenced());
    assert!(a.save_rule_state("r", "jm", &json!(1)).unwrap_err().is_fenced());
    assert!(warden::notify::silence::add(&a, &["job=x".into()], at(0), at(60), "", "a").unwrap_err().is_fenced());
    // Reads still work (the status page of a demoted Warden).
    let subjects: Vec<String> = a.entries(None).expect("read").into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects, ["while-leader", "in-step"], "nothing of the refused writes was written");
    assert!(a.dispatch_states().expect("read").is_empty());

    // The new leader writes under its epoch; an operator's CLI (no fence) writes too.
    let id = b.journal(&entry("new-leader")).expect("b writes");
    let epoch: i64 = b
        .with_db(|c| c.query_one("SELECT epoch FROM journal WHERE id = ?1", warden::store::args![id])?.get(0))
        .expect("epoch");
    assert_eq!(epoch, 2);
    let cli = Store::open_postgres(&url).expect("cli store");
    cli.reset_guard("jm", "clicks", at(0)).expect("an unfenced store writes");
    // The lease gone altogether: refused too.
    pg.exec(&url, "DELETE FROM warden_leader");
    let gone = b.journal(&entry("no-lease")).unwrap_err();
    assert!(matches!(gone, StoreError::Fenced { current: None, .. }), "{gone:?}");
}

#[test]
fn a_postgresql_restart_mid_run_rolls_back_the_cut_transaction_and_the_store_reconnects() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database();
    let s = Store::open_postgres(&url).expect("store");
    s.journal(&entry("before")).expect("journal");
    // A dispatcher step is cut by the restart half-way: none of it is kept.
    let cut = s.transaction(|s| {
        s.journal(&entry("cut-1"))?;
        pg.restart();
        s.save_dispatch_state("r", "jm", &json!({"x": 1}))?;
        s.journal(&entry("cut-2"))
    });
    let err = cut.expect_err("a transaction over a lost connection fails");
    assert!(!err.is_fenced(), "{err}");
    // The next calls reconnect (the one that meets the cut may fail; it does not panic).
    let mut read = s.entries(None);
    if read.is_err() {
        read = s.entries(None);
    }
    let subjects: Vec<String> = read.expect("reconnected").into_iter().map(|e| e.subject).collect();
    assert_eq!(subjects, ["before"], "the cut step was rolled back, not half-applied");
    assert!(s.dispatch_states().expect("read").is_empty());
    s.journal(&entry("after")).expect("writes again");
    // A restart between two calls: the store notices the closed connection and reconnects at once.
    pg.restart();
    std::thread::sleep(Duration::from_millis(200));
    let mut n = s.entries(None).map(|e| e.len());
    if n.is_err() {
        n = s.entries(None).map(|e| e.len());
    }
    assert_eq!(n.expect("reconnected"), 2);
}

#[test]
fn a_postgresql_database_from_a_newer_warden_is_refused_with_both_versions() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database();
    drop(Store::open_postgres(&url).expect("a fresh database gets the schema"));
    drop(Store::open_postgres(&url).expect("opening it again changes nothing"));
    pg.exec(&url, &format!("UPDATE schema_version SET version = {}", SCHEMA_VERSION + 1));
    let err = Store::open_postgres(&url).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "state store `{url}` has schema version {}, this Warden knows up to {SCHEMA_VERSION}: upgrade Warden",
            SCHEMA_VERSION + 1
        )
    );
}

#[test]
fn a_postgresql_url_with_a_password_never_shows_it() {
    let Some(pg) = Pg::start() else { return };
    let url = format!("postgres://warden:hunter2@127.0.0.1:{}/no_such_db", pg.port());
    let err = Store::open_postgres(&url).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("warden:***@127.0.0.1"), "{err}");
    assert!(err.contains("no_such_db"), "{err}");
}

/// The whole daemon on PostgreSQL: `store: {postgres: {url: …}}` from `warden.yaml` (a secret from the
/// environment is resolved the same way; here a literal), an alert journalled, queued in the outbox, delivered
/// through a file channel and marked sent there; the SQLite file in `state_dir` is not created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_its_whole_state_in_postgresql_when_configured_to() {
    let Some(pg) = Pg::start() else { return };
    let url = pg.database();
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.expect("fake JobManager");
    fake.submit("clicks");
    let dir = tempfile::tempdir().expect("tempdir");
    write_pack(dir.path(), "t", &[("always", "alert(#{ subject: \"clicks\", summary: \"always firing\" });\n")]);
    let cfg = json!({
        "state_dir": "state",
        "store": {"postgres": {"url": url}},
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "notify": {
            "group_wait": "0s",
            "default": {"channels": ["file"]},
            "channels": {"file": {"type": "file", "path": "sent.jsonl"}},
        },
        "shutdown_grace": "5s",
    });
    let mut d = Daemon::start_in(dir, cfg).await;
    d.wait_for("the alert", |e| is_alert(e, "firing", "t/always", "clicks")).await;
    let s = Store::open_postgres(&url).expect("the daemon's store");
    crate::support::eventually("the notification marked sent in PostgreSQL", || {
        s.entries(None).expect("journal").iter().any(|e| e.action == ActionKind::Notify && e.outcome == "sent")
    })
    .await;
    let j = s.entries(None).expect("journal");
    assert_eq!(j.iter().filter(|e| e.action == ActionKind::Alert && e.subject == "clicks").count(), 1, "{j:#?}");
    assert!(s.dispatch_states().expect("state").contains_key(&("t/always".to_string(), "jm".to_string())));
    assert_eq!(warden::notify::outbox::counts(&s).expect("outbox"), (0, 1, 0));
    assert!(!d.state_dir.join("warden.db").exists(), "no SQLite file beside a PostgreSQL store");
    assert!(d.state_dir.join("warden.lock").exists(), "the per-instance lock stays in state_dir");

    // The operator's commands find the same store through the configuration.
    let yaml = d.state_dir.parent().expect("config dir").join("warden.yaml");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(WARDEN)
            .args(args)
            .arg("--config")
            .arg(&yaml)
            .env_remove("WARDEN_LOG")
            .output()
            .expect("run warden");
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "warden {args:?}: {stdout}{stderr}");
        stdout.into_owned()
    };
    let history = cli(&["history"]);
    assert!(history.contains("always firing"), "{history}");
    cli(&["silence", "add", "--match", "job=orders", "--for", "1h", "--comment", "maintenance"]);
    let silences = warden::notify::silence::list(&s, chrono::Utc::now(), false).expect("silences");
    assert_eq!(silences.iter().map(|x| x.comment.as_str()).collect::<Vec<_>>(), ["maintenance"]);
    assert!(!d.state_dir.join("warden.db").exists(), "the commands did not make a SQLite store either");
    d.stop().await;
}

/// A CA and a server certificate for `localhost` signed by it: `(ca.pem, server certificate, server key)`.
fn test_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Warden test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("server params");
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn tls_to_postgresql_verifies_the_server_certificate_and_name() {
    let (ca, cert, key) = test_ca();
    let Some(pg) = Pg::start_with_tls(&cert, &key) else { return };
    let db = pg.database();
    let name = db.rsplit('/').next().expect("database name");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("write the CA");
    let base = format!("postgres://warden@localhost:{}/{name}", pg.port());
    // Against the public roots, a private CA's certificate is refused: TLS was used, and it verifies.
    let err = Store::open_postgres(&format!("{base}?sslmode=require")).unwrap_err().to_string();
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");
    // With the CA the server's certificate is signed by, the store opens and works over TLS.
    let s = Store::open_postgres(&format!("{base}?sslrootcert={}", ca_file.display())).expect("TLS with the CA");
    s.journal(&entry("over-tls")).expect("journal");
    let ssl: bool = s
        .with_db(|c| c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?.get(0))
        .expect("pg_stat_ssl");
    assert!(ssl, "the connection is encrypted");
    // The name is checked too: 127.0.0.1 is not in the certificate.
    let by_ip = format!("postgres://warden@127.0.0.1:{}/{name}?sslrootcert={}", pg.port(), ca_file.display());
    let err = Store::open_postgres(&by_ip).unwrap_err().to_string();
    assert!(err.contains("certificate") || err.contains("NotValidForName"), "{err}");
}
