//! The daemon end to end against the fake JobManager: hot reload, a panicking rule, cron on a stepped clock.

use std::time::{Duration, Instant};

use super::*;
use crate::event::Event;
use fake_flink::{FakeJobManager, FlinkApiVersion};

fn write(path: &std::path::Path, text: &str) {
    // Editors replace files: write a temp file and rename it over the old one.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn wait_for<T>(
    rx: &mut tokio::sync::broadcast::Receiver<Event>,
    what: &str,
    mut f: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) => {
                if let Some(t) = f(&ev) {
                    return t;
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            _ => panic!("timed out waiting for {what}"),
        }
    }
}

fn alert_of(ev: &Event, event: &str, subject: &str) -> bool {
    matches!(ev, Event::Alert(a) if a.event == event && a.subject == subject)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_edited_on_disk_takes_effect_a_broken_one_is_refused_and_the_old_one_keeps_running() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    fake.submit("clicks");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().canonicalize().unwrap();
    let pack = dir.join("plugins/t");
    std::fs::create_dir_all(&pack).unwrap();
    std::fs::write(
        pack.join("pack.yaml"),
        "name: t\nversion: 1.0.0\nprobes:\n  - name: overview\n    every: 200ms\n    request: {path: /jobs/overview}\n    rules: [r]\n",
    )
    .unwrap();
    let rule = pack.join("r.rhai");
    let rule_text = |subject: &str| {
        format!("state.n = (state.n ?? 0) + 1;\nalert(#{{ subject: \"{subject}\", summary: `seen ${{obs.body.jobs.len()}} job(s)` }});\n")
    };
    write(&rule, &rule_text("one"));
    let config = dir.join("warden.yaml");
    std::fs::write(
        &config,
        format!("state_dir: state\npack_paths: [\"plugins/*\"]\ntargets:\n  - name: jm\n    url: {}\n", fake.url()),
    )
    .unwrap();

    let (plan, engine) = crate::plan::load(&config, None).unwrap();
    let events = Events::default();
    let mut rx = events.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions {
        events: events.clone(),
        reload: Some(ReloadSource { config: config.clone() }),
        ..Default::default()
    };
    let daemon = tokio::spawn(run(plan, engine, opts, async {
        let _ = stop_rx.await;
    }));

    wait_for(&mut rx, "`one` firing", |e| alert_of(e, "firing", "one").then_some(())).await;

    // Edit the rule: the new one decides the next evaluations; the old alert resolves.
    let saved = Instant::now();
    write(&rule, &rule_text("two"));
    wait_for(&mut rx, "a reload", |e| matches!(e, Event::Reloaded { ok: true, .. }).then_some(())).await;
    let swapped = saved.elapsed();
    wait_for(&mut rx, "`two` firing", |e| alert_of(e, "firing", "two").then_some(())).await;
    let decided = saved.elapsed();
    eprintln!("save → reloaded {swapped:?}, save → new rule decided {decided:?}");

    // Break it half-way through a save: refused, with file:line:col and the source line; the old rule keeps going.
    write(&rule, "alert(#{ subject: \"three\", summary: \n");
    let errors = wait_for(&mut rx, "a refused reload", |e| match e {
        Event::Reloaded { ok: false, errors, .. } => Some(errors.clone()),
        _ => None,
    })
    .await;
    let all = errors.join("\n");
    assert!(all.contains(&format!("{}:", rule.display())), "{all}");
    assert!(all.contains("syntax error"), "{all}");
    assert!(all.contains(" | alert(#{ subject: \"three\", summary: "), "the source line is shown: {all}");
    // Polls go on with the old rule: no resolution of `two`, and evaluations keep coming.
    let mut polls = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(Ok(ev)) = tokio::time::timeout_at(until, rx.recv()).await {
        assert!(!alert_of(&ev, "resolved", "two"), "the broken rule replaced the working one");
        assert!(!matches!(ev, Event::RuleFailed { .. }), "the broken rule was run");
        if matches!(ev, Event::Observed { .. }) {
            polls += 1;
        }
    }
    assert!(polls >= 3, "polling stopped during the failed reload ({polls} polls)");

    // Fix it.
    write(&rule, &rule_text("four"));
    wait_for(&mut rx, "`four` firing", |e| alert_of(e, "firing", "four").then_some(())).await;

    // A rule whose source changed starts with a fresh state; the counter restarted.
    let store = Store::open(&dir.join("state")).unwrap();
    let n = store.rule_states().unwrap()[&("t/r".to_string(), "jm".to_string())]["n"].as_i64().unwrap();
    assert!(n <= 10, "state was not reset for the changed rule (n = {n})");

    let _ = stop_tx.send(());
    let stats = daemon.await.unwrap().unwrap();
    assert_eq!(stats.failed_reloads.load(Ordering::Relaxed), 1);
    assert!(stats.reloads.load(Ordering::Relaxed) >= 2);
}

/// A running daemon on `<dir>/warden.yaml` watching the fake at `url` with one pack `t` of `rules` (short name,
/// source), probed by `schedule` (`every: 200ms` or `cron: "…"`).
struct Running {
    rx: tokio::sync::broadcast::Receiver<Event>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Arc<Stats>, RuntimeError>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(url: &str, schedule: &str, rules: &[(&str, &str)], clock: Clock) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("plugins/t");
        std::fs::create_dir_all(&pack).unwrap();
        let names: Vec<&str> = rules.iter().map(|(n, _)| *n).collect();
        std::fs::write(
            pack.join("pack.yaml"),
            format!(
                "name: t\nversion: 1.0.0\nprobes:\n  - name: p\n    {schedule}\n    request: {{path: /jobs/overview}}\n    rules: [{}]\n",
                names.join(", ")
            ),
        )
        .unwrap();
        for (n, src) in rules {
            std::fs::write(pack.join(format!("{n}.rhai")), src).unwrap();
        }
        let config = dir.path().join("warden.yaml");
        std::fs::write(
            &config,
            format!("state_dir: state\npack_paths: [\"plugins/*\"]\ntargets:\n  - name: jm\n    url: {url}\n"),
        )
        .unwrap();
        let (plan, engine) = crate::plan::load(&config, None).unwrap_or_else(|d| panic!("{d}"));
        let events = Events::default();
        let rx = events.subscribe();
        let (tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = RunOptions { events, clock, ..Default::default() };
        let task = tokio::spawn(run(plan, engine, opts, async {
            let _ = stop_rx.await;
        }));
        Running { rx, stop: Some(tx), task, _dir: dir }
    }

    async fn stop(mut self) -> Arc<Stats> {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_whose_evaluation_panics_is_that_rules_error_and_the_other_rules_still_run() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    fake.submit("clicks");
    let rules = [
        ("boom", "if obs.ok { panic_for_test(\"kaboom\"); }\n"),
        ("canary", "alert(#{ subject: \"canary\", summary: \"still judged\" });\n"),
    ];
    let mut d = Running::start(&fake.url(), "every: 200ms", &rules, Clock::System);
    let failed = |e: &Event| match e {
        Event::RuleFailed { error } if error.contains("rule `t/boom`") => Some(error.clone()),
        _ => None,
    };
    let error = wait_for(&mut d.rx, "the panic reported as t/boom's error", failed).await;
    assert!(error.contains("the evaluation panicked: kaboom"), "{error}");
    assert!(error.contains("boom.rhai"), "the error names the rule's file: {error}");
    wait_for(&mut d.rx, "the other rule of the same poll", |e| alert_of(e, "firing", "canary").then_some(())).await;
    // The probe and the daemon go on: more polls, and the rule is judged (and fails) again.
    for _ in 0..3 {
        wait_for(&mut d.rx, "more polls", |e| matches!(e, Event::Observed { .. }).then_some(())).await;
    }
    wait_for(&mut d.rx, "the next panic", failed).await;
    let stats = d.stop().await;
    assert!(stats.rule_errors.load(Ordering::Relaxed) >= 2);
    assert!(stats.polls.load(Ordering::Relaxed) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_probes_run_on_wardens_wall_clock_and_go_on_after_it_steps_either_way() {
    use chrono::TimeZone;
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let at = |h, m, s| chrono::Utc.with_ymd_and_hms(2026, 3, 1, h, m, s).unwrap();
    // Hourly, on a clock half a second before the hour: the first poll is half a second away (on the system
    // clock it would be up to an hour away).
    let clock = Clock::following_tokio(at(0, 59, 59) + chrono::Duration::milliseconds(500));
    let mut d = Running::start(&fake.url(), "cron: \"0 0 * * * *\"", &[("r", "1;\n")], clock.clone());
    let polled = |e: &Event| matches!(e, Event::Observed { .. }).then_some(());
    let bound = crate::schedule::CRON_RECHECK + Duration::from_secs(3);
    let started = tokio::time::Instant::now();
    wait_for(&mut d.rx, "the poll at 01:00", polled).await;
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Back to two seconds before 01:00: the probe polls at 01:00 again, it does not wait for 02:00.
    clock.step(at(0, 59, 58) - clock.now());
    let stepped = tokio::time::Instant::now();
    wait_for(&mut d.rx, "the poll after a step back", polled).await;
    assert!(stepped.elapsed() <= bound, "{:?}", stepped.elapsed());

    // Forward by an hour, to a second before 02:00: one poll at 02:00, and no burst.
    clock.step(at(1, 59, 59) - clock.now());
    let stepped = tokio::time::Instant::now();
    wait_for(&mut d.rx, "the poll after a step forward", polled).await;
    assert!(stepped.elapsed() <= bound, "{:?}", stepped.elapsed());
    let quiet = tokio::time::timeout(Duration::from_millis(1500), wait_for(&mut d.rx, "nothing", polled)).await;
    assert!(quiet.is_err(), "a poll came outside the schedule");
    let stats = d.stop().await;
    assert_eq!(stats.polls.load(Ordering::Relaxed), 3);
    assert_eq!(stats.skipped_runs.load(Ordering::Relaxed), 0, "a wall-clock step is not a skipped run");
}
