//! Commands a killed Warden left behind. A command runs in its own process group, so when Warden is killed outright
//! (kill -9, OOM, power cut of the daemon only) the command goes on to its end without anyone collecting its exit
//! status. Each command's journal entry records which process it is when it starts (its details' `process`: pid,
//! process group, start time, boot, host: see [`ProcessIdentity`]); at start-up, [`reconcile`] looks at every run
//! still journalled as `started`:
//!
//! - gone (no such process, or another process with the same pid, or the host rebooted):
//!   `interrupted: warden stopped while it ran; pid N ended while Warden was down (exit status unknown)`;
//! - still running: `interrupted: warden stopped while it ran; pid N was still running when Warden came back`.
//!   Warden leaves it running (killing a relaunch half-way could leave a half-submitted job behind) and never runs
//!   it a second time; [`watch`] then follows it and, when it ends, adds `; it ended at <time> (exit status
//!   unknown)` to the entry;
//! - on another host (a state directory moved): says that Warden cannot tell.
//!
//! A run without a recorded process (killed between its start and the record) keeps the store's plain
//! `interrupted: warden stopped while it ran`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::command::{Liveness, ProcessIdentity};
use crate::clock::Clock;
use crate::store::{args, ts, Store};

/// The key of the process in a journal entry's details.
pub const DETAILS_KEY: &str = "process";

/// How often [`watch`] looks at the processes it follows.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A command left running by a killed Warden, followed until it ends.
#[derive(Debug, Clone)]
pub struct LeftOver {
    /// Its journal entry.
    pub journal_id: i64,
    /// The command's name.
    pub command: String,
    /// Which process it is.
    pub process: ProcessIdentity,
    /// Its journal outcome so far (what the end is added to).
    pub outcome: String,
}

/// Records in journal entry `journal_id` (a `run`) which process runs it.
pub fn record(store: &Store, journal_id: i64, process: &ProcessIdentity) -> crate::store::Result<()> {
    let value = serde_json::to_value(process).unwrap_or(serde_json::Value::Null);
    store.with_db(|c| {
        let details: String = c.query_one("SELECT details FROM journal WHERE id = ?1", args![journal_id])?.get(0)?;
        let details = match serde_json::from_str::<serde_json::Value>(&details) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.insert(DETAILS_KEY.into(), value);
                serde_json::Value::Object(m)
            }
            Ok(serde_json::Value::Null) | Err(_) => serde_json::json!({ DETAILS_KEY: value }),
            Ok(other) => serde_json::json!({ "value": other, DETAILS_KEY: value }),
        };
        c.execute("UPDATE journal SET details = ?2 WHERE id = ?1", args![journal_id, details.to_string()]).map(|_| ())
    })
}

/// At start-up, before the store marks what is left as interrupted: journals each run still `started` whose
/// process was recorded for what became of it (see the module docs). Returns the ones still running, for [`watch`].
pub fn reconcile(store: &Store, now: DateTime<Utc>) -> crate::store::Result<Vec<LeftOver>> {
    let rows: Vec<(i64, String, String)> = store.with_db(|c| {
        c.query(
            "SELECT id, detail, details FROM journal WHERE action = 'run' AND outcome = 'started' ORDER BY id",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .collect()
    })?;
    let mut running = vec![];
    for (journal_id, command, details) in rows {
        let process = serde_json::from_str::<serde_json::Value>(&details)
            .ok()
            .and_then(|d| d.get(DETAILS_KEY).cloned())
            .and_then(|p| serde_json::from_value::<ProcessIdentity>(p).ok());
        let Some(process) = process else { continue };
        let pid = process.pid;
        let (outcome, still) = match process.liveness() {
            Liveness::Running => {
                (format!("interrupted: warden stopped while it ran; pid {pid} was still running when Warden came back"), true)
            }
            Liveness::Gone => (
                format!("interrupted: warden stopped while it ran; pid {pid} ended while Warden was down (exit status unknown)"),
                false,
            ),
            Liveness::Unknown(why) => (format!("interrupted: warden stopped while it ran; pid {pid}: {why}"), false),
        };
        if still {
            tracing::warn!(
                command = %command,
                pid,
                "a command started by the previous Warden is still running; it is left to finish and followed"
            );
        } else {
            tracing::warn!(command = %command, pid, "a command was running when Warden last stopped: {outcome}");
        }
        store.finish(journal_id, &outcome, "", now)?;
        if still {
            running.push(LeftOver { journal_id, command, process, outcome });
        }
    }
    Ok(running)
}

/// Follows `left` (from [`reconcile`]) every `every` until each has ended, then journals when it ended, or until
/// `stop` fires (what is still running then is left as it was journalled).
pub async fn watch(store: Arc<Store>, mut left: Vec<LeftOver>, clock: Clock, every: Duration, stop: CancellationToken) {
    while !left.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let mut ended = vec![];
        left.retain(|l| {
            let gone = l.process.liveness() != Liveness::Running;
            if gone {
                ended.push(l.clone());
            }
            !gone
        });
        for l in ended {
            let at = clock.now();
            let outcome = format!("{}; it ended at {} (exit status unknown)", l.outcome, ts(at));
            tracing::info!(command = %l.command, pid = l.process.pid, "a command left running by the previous Warden ended");
            let id = l.journal_id;
            if let Err(e) = store.call(move |s| s.finish(id, &outcome, "", at)).await {
                tracing::error!("cannot journal the end of action {id}: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ActionKind;
    use crate::store::NewEntry;
    use chrono::TimeZone;

    fn started_run(store: &Store) -> i64 {
        store
            .journal(&NewEntry {
                rule: "flink/job-not-running".into(),
                target: "jm".into(),
                subject: "clicks".into(),
                action: ActionKind::Run,
                detail: "relaunch".into(),
                details: serde_json::json!({"vars": {"job": "clicks"}}),
                outcome: "started".into(),
                ..Default::default()
            })
            .unwrap()
    }

    fn outcome(store: &Store, id: i64) -> String {
        store.entries(None).unwrap().into_iter().find(|e| e.id == id).unwrap().outcome
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_left_running_is_journalled_as_such_then_followed_to_its_end() {
        let store = Arc::new(Store::in_memory());
        let clock = Clock::manual(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        // A process that outlived "the previous Warden", and one that ended while Warden was down.
        let mut alive = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let mut dead = std::process::Command::new("true").spawn().unwrap();
        dead.wait().unwrap();
        let (a, d) = (started_run(&store), started_run(&store));
        record(&store, a, &ProcessIdentity::of(alive.id() as i32)).unwrap();
        let dead_id = ProcessIdentity { start_ticks: Some(0), ..ProcessIdentity::of(dead.id() as i32) };
        record(&store, d, &dead_id).unwrap();
        let unrecorded = started_run(&store);
        let entry = store.entries(None).unwrap().into_iter().find(|e| e.id == a).unwrap();
        assert_eq!(entry.details["vars"]["job"], "clicks", "the details are kept");
        assert_eq!(entry.details["process"]["pid"], alive.id());

        let running = reconcile(&store, clock.now()).unwrap();
        assert_eq!(running.len(), 1);
        let still = format!(
            "interrupted: warden stopped while it ran; pid {} was still running when Warden came back",
            alive.id()
        );
        assert_eq!(outcome(&store, a), still);
        assert_eq!(
            outcome(&store, d),
            format!(
                "interrupted: warden stopped while it ran; pid {} ended while Warden was down (exit status unknown)",
                dead.id()
            )
        );
        assert_eq!(outcome(&store, unrecorded), "started", "left to the store's plain `interrupted`");

        let stop = CancellationToken::new();
        let watcher =
            tokio::spawn(watch(store.clone(), running, clock.clone(), Duration::from_millis(20), stop.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(outcome(&store, a), still, "still running: nothing more to say");
        clock.advance(Duration::from_secs(90));
        alive.kill().unwrap(); // it ends (and stays a zombie until reaped: that counts as ended)
        tokio::time::timeout(Duration::from_secs(10), watcher).await.expect("the watch ends with the process").unwrap();
        assert_eq!(outcome(&store, a), format!("{still}; it ended at 2026-01-01T00:01:30.000Z (exit status unknown)"));
        let _ = alive.wait();
    }

    #[test]
    fn a_reused_pid_or_another_boot_is_not_the_same_process() {
        let me = ProcessIdentity::of(std::process::id() as i32);
        assert_eq!(me.liveness(), Liveness::Running);
        if me.start_ticks.is_some() {
            let reused = ProcessIdentity { start_ticks: me.start_ticks.map(|t| t + 1), ..me.clone() };
            assert_eq!(reused.liveness(), Liveness::Gone);
        }
        if me.boot_id.is_some() {
            let rebooted = ProcessIdentity { boot_id: Some("another boot".into()), ..me.clone() };
            assert_eq!(rebooted.liveness(), Liveness::Gone);
        }
        let elsewhere = ProcessIdentity { host: "another-host".into(), ..me };
        assert!(matches!(elsewhere.liveness(), Liveness::Unknown(why) if why.contains("another-host")));
    }
}
