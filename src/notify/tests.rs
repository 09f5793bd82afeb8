//! The notifier's lifecycle with a manual clock: routing, grouping, reminders, resolved, silences, maintenance
//! windows, retries, permanent failures, order per lane, and a restart on the same store. Channels are real: a
//! plugin script whose exit code a file decides, and JSON-lines files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::TimeZone;
use serde_json::Value;

use super::*;
use crate::model::Severity;

struct Rig {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    clock: Clock,
    n: Notifier,
}

/// A plugin that appends its stdin as one line to `out.jsonl` and exits with the number in `code` (0 if absent).
fn plugin(dir: &Path) -> PathBuf {
    let p = dir.join("plugin.sh");
    // One write per document (deliveries on different lanes run side by side).
    let script =
        "#!/bin/sh\ndoc=$(cat)\nprintf '%s\\n' \"$doc\" >> \"$OUT\"\nexit $(cat \"$CODE\" 2>/dev/null || echo 0)\n";
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn config(dir: &Path, notify: &str) -> NotifyConfig {
    let script = plugin(dir);
    let text = format!(
        "targets:\n  - {{name: jm, url: 'http://jm:8081', labels: {{env: prod}}}}\n  - {{name: jm2, url: 'http://jm2:8081'}}\n\
         notify:\n  channels:\n    hook:\n      type: plugin\n      command: ['{}']\n      env: {{OUT: '{}', CODE: '{}'}}\n\
         \x20   disk: {{type: file, path: disk.jsonl}}\n    other: {{type: file, path: other.jsonl}}\n{notify}",
        script.display(),
        dir.join("out.jsonl").display(),
        dir.join("code").display(),
    );
    crate::config::load_str(&dir.join("warden.yaml"), &text).unwrap_or_else(|d| panic!("{d}")).config.notify
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap()
}

impl Rig {
    fn new(notify: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let clock = Clock::manual(t0());
        let n = Self::notifier(dir.path(), notify, &store, &clock);
        Rig { dir, store, clock, n }
    }

    fn notifier(dir: &Path, notify: &str, store: &Arc<Store>, clock: &Clock) -> Notifier {
        let cfg = config(dir, notify);
        let targets = crate::config::load_str(
            &dir.join("warden.yaml"),
            "targets:\n  - {name: jm, url: 'http://jm:8081', labels: {env: prod}}\n  - {name: jm2, url: 'http://jm2:8081'}\n",
        )
        .unwrap()
        .config
        .targets;
        Notifier::new(cfg, &targets, store.clone(), clock.clone(), Events::default()).unwrap()
    }

    fn restart(self, notify: &str) -> Rig {
        let Rig { dir, store, clock, n } = self;
        drop(n);
        drop(store);
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let n = Self::notifier(dir.path(), notify, &store, &clock);
        Rig { dir, store, clock, n }
    }

    fn exit_code(&self, code: i32) {
        std::fs::write(self.dir.path().join("code"), code.to_string()).unwrap();
    }

    /// Ticks and delivers everything that is due now, until nothing more is.
    async fn pump(&self) {
        loop {
            let now = self.clock.now();
            self.n.tick(now).unwrap();
            let mut set = JoinSet::new();
            let mut lanes = HashMap::new();
            self.n.start_due(now, &mut set, &mut lanes).unwrap();
            if set.is_empty() {
                break;
            }
            while let Some(d) = set.join_next_with_id().await {
                self.n.done(d, &mut lanes);
            }
        }
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Documents the plugin received.
    fn docs(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("out.jsonl")).unwrap_or_default();
        text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn notify_journal(&self) -> Vec<crate::store::JournalEntry> {
        self.store.entries(None).unwrap().into_iter().filter(|e| e.action == "notify").collect()
    }

    fn submit(&self, event: &str, target: &str, job: &str) {
        self.n.submit(&rec(self.clock.now(), event, target, job)).unwrap();
    }
}

fn rec(time: DateTime<Utc>, event: &str, target: &str, job: &str) -> AlertRecord {
    AlertRecord {
        time,
        event: event.into(),
        rule: "flink/job-not-running".into(),
        target: target.into(),
        subject: job.into(),
        severity: Severity::Critical,
        summary: if event == "resolved" { format!("resolved: job {job} FAILED") } else { format!("job {job} FAILED") },
        details: serde_json::json!({"jid": format!("{job}-id"), "state": "FAILED"}),
    }
}

const HOOK_ONLY: &str = "  group_wait: 0s\n  default: {channels: [hook]}\n";

#[tokio::test]
async fn routes_match_in_order_continue_falls_through_and_default_catches_the_rest() {
    let r = Rig::new(
        "  group_wait: 0s\n  routes:\n    - match: {labels: {env: prod}}\n      channels: [disk]\n      continue: true\n\
         \x20   - match: {job: 'clicks*'}\n      channels: [other]\n    - match: {job: views}\n      channels: [hook]\n\
         \x20 default: {channels: [hook]}\n",
    );
    r.submit("firing", "jm", "clicks-eu"); // prod → disk, continue → clicks* → other, stop
    r.submit("firing", "jm2", "views"); // → hook
    r.submit("firing", "jm2", "orders"); // nothing matched → default hook
    r.submit("firing", "jm", "orders"); // prod → disk only (continue, nothing else) — not the default
    r.pump().await;
    let jobs = |v: Vec<Value>| v.iter().map(|l| l["subject"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(jobs(r.lines("disk.jsonl")), ["clicks-eu", "orders"]);
    assert_eq!(jobs(r.lines("other.jsonl")), ["clicks-eu"]);
    let docs = r.docs();
    assert_eq!(docs.len(), 1, "both on jm2, at the same time: one message");
    let hook: Vec<&str> = docs[0]["alerts"].as_array().unwrap().iter().map(|a| a["job"].as_str().unwrap()).collect();
    assert_eq!(hook, ["views", "orders"]);
}

#[tokio::test]
async fn alerts_for_one_target_within_group_wait_are_one_message() {
    let r = Rig::new("  group_wait: 30s\n  default: {channels: [hook]}\n");
    for i in 0..20 {
        r.submit("firing", "jm", &format!("job{i}"));
        r.advance(1);
    }
    r.submit("firing", "jm2", "elsewhere");
    r.pump().await;
    assert!(r.docs().is_empty(), "nothing before group_wait is over");
    r.advance(10); // 30 s after the first alert
    r.pump().await;
    let docs = r.docs();
    assert_eq!(docs.len(), 1, "{docs:#?}");
    assert_eq!(docs[0]["count"], 20);
    assert_eq!(docs[0]["headline"], "[FIRING] 20 alerts on jm: job0, job1, job2, job3, job4 and 15 more");
    r.advance(20);
    r.pump().await;
    assert_eq!(r.docs().len(), 2, "the other target's alert is its own message");
    assert_eq!(r.notify_journal().iter().filter(|e| e.outcome == "sent").count(), 2);
}

#[tokio::test]
async fn reminders_respect_repeat_interval_and_resolved_goes_once_to_those_told() {
    let r = Rig::new("  group_wait: 0s\n  repeat_interval: 1h\n  default: {channels: [hook]}\n");
    r.submit("resolved", "jm", "never-fired");
    r.submit("firing", "jm", "clicks");
    r.pump().await;
    r.advance(600);
    r.submit("reminder", "jm", "clicks"); // 10 min: within the hour
    r.pump().await;
    r.advance(3000);
    r.submit("reminder", "jm", "clicks"); // 60 min
    r.pump().await;
    r.submit("resolved", "jm", "clicks");
    r.pump().await;
    r.submit("resolved", "jm", "clicks"); // a second resolved is not sent again
    r.pump().await;
    let events: Vec<String> = r.docs().iter().map(|d| d["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["firing", "reminder", "resolved"]);
    let d = r.docs();
    // A resolved message says what is fine again, never the failure.
    assert_eq!(d[2]["headline"], "[RESOLVED] job clicks is running again");
    assert_eq!(d[0]["alerts"][0]["link"], "http://jm:8081/#/job/completed/clicks-id/overview");
}

#[tokio::test]
async fn a_resolved_never_overtakes_its_firing_even_when_its_group_is_due_first() {
    let r = Rig::new("  group_wait: 10s\n  default: {channels: [hook]}\n");
    r.submit("firing", "jm", "c");
    r.advance(10);
    r.pump().await; // firing c goes out
    r.submit("resolved", "jm", "c"); // opens the resolved group, due at +10 s
    r.advance(1);
    r.submit("firing", "jm", "a"); // a new firing group, due at +11 s
    r.advance(1);
    r.submit("resolved", "jm", "a"); // joins the resolved group, due at +10 s: before its firing
    r.advance(8);
    r.pump().await;
    let docs = r.docs();
    let seen: Vec<(String, Vec<String>)> = docs
        .iter()
        .map(|d| {
            let jobs = d["alerts"].as_array().unwrap().iter().map(|a| a["job"].as_str().unwrap().to_string()).collect();
            (d["event"].as_str().unwrap().to_string(), jobs)
        })
        .collect();
    let s = |e: &str, j: &[&str]| (e.to_string(), j.iter().map(|x| x.to_string()).collect::<Vec<_>>());
    assert_eq!(seen[0], s("firing", &["c"]));
    assert_eq!(seen[1], s("firing", &["a"]), "queued early, ahead of a's resolved: {seen:#?}");
    assert_eq!(seen[2], s("resolved", &["c", "a"]));
}

#[tokio::test]
async fn send_resolved_false_on_a_route_sends_no_resolved() {
    let r = Rig::new("  group_wait: 0s\n  routes:\n    - channels: [hook]\n      send_resolved: false\n");
    r.submit("firing", "jm", "clicks");
    r.submit("resolved", "jm", "clicks");
    r.pump().await;
    assert_eq!(r.docs().len(), 1);
}

#[tokio::test]
async fn a_silenced_alert_is_journalled_not_sent_and_sent_when_the_silence_ends_if_it_still_fires() {
    let r = Rig::new(HOOK_ONLY);
    let sid = silence::add(&r.store, &["job=clicks".into()], t0(), t0() + chrono::Duration::hours(2), "deploy", "ana")
        .unwrap();
    silence::add(&r.store, &["job=views".into()], t0(), t0() + chrono::Duration::hours(2), "", "ana").unwrap();
    r.submit("firing", "jm", "clicks");
    r.submit("firing", "jm", "views");
    r.submit("firing", "jm", "orders");
    r.pump().await;
    let jobs =
        |r: &Rig| r.docs().iter().map(|d| d["alerts"][0]["job"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(jobs(&r), ["orders"]);
    let j = r.notify_journal();
    let silenced: Vec<&str> =
        j.iter().filter(|e| e.outcome.starts_with("silenced: silence")).map(|e| e.subject.as_str()).collect();
    assert_eq!(silenced, ["clicks", "views"]);
    // views resolves while silenced: nothing is ever sent about it.
    r.submit("resolved", "jm", "views");
    // clicks is silenced until removed (from the CLI, another process: the store is the shared truth).
    r.advance(600);
    r.pump().await;
    assert_eq!(jobs(&r), ["orders"]);
    assert!(silence::remove(&r.store, sid, r.clock.now()).unwrap());
    r.pump().await;
    assert_eq!(jobs(&r), ["orders", "clicks"], "still firing when the silence ended: sent");
    assert_eq!(r.docs()[1]["event"], "firing");
    r.advance(7200);
    r.pump().await;
    assert_eq!(jobs(&r), ["orders", "clicks"], "views resolved while silenced: never sent");
}

#[tokio::test]
async fn maintenance_windows_hold_alerts_until_they_close() {
    let r = Rig::new(
        "  group_wait: 0s\n  default: {channels: [hook]}\n  maintenance:\n    - name: deploys\n      cron: '0 0 10 * * *'\n\
         \x20     duration: 30m\n      match: {target: jm}\n",
    );
    r.submit("firing", "jm", "clicks");
    r.submit("firing", "jm2", "views");
    r.pump().await;
    assert_eq!(r.docs().len(), 1);
    assert!(r.notify_journal().iter().any(|e| e.outcome.starts_with("silenced: maintenance window `deploys` until")));
    r.advance(1800);
    r.pump().await;
    assert_eq!(r.docs().len(), 2);
    assert_eq!(r.docs()[1]["alerts"][0]["job"], "clicks");
}

#[tokio::test]
async fn failures_are_retried_with_backoff_and_a_permanent_one_is_journalled_and_unblocks_its_lane() {
    let r = Rig::new(HOOK_ONLY);
    r.exit_code(75);
    r.submit("firing", "jm", "clicks");
    r.submit("resolved", "jm", "clicks");
    r.pump().await;
    assert_eq!(r.docs().len(), 1, "one attempt; the resolved waits behind the firing (order per lane)");
    let j = r.notify_journal();
    assert!(j[0].outcome.starts_with("retrying: plugin") && j[0].outcome.contains("exited with 75"), "{j:#?}");
    r.pump().await;
    assert_eq!(r.docs().len(), 1, "not before the backoff");
    // Backoff: 1 s, 2 s, 4 s, ... with jitter (half to full). After 3 failures the wait is at most 4 s.
    for _ in 0..2 {
        r.advance(4);
        r.pump().await;
    }
    assert_eq!(r.docs().len(), 3);
    r.exit_code(0);
    r.advance(4);
    r.pump().await;
    let docs = r.docs();
    assert_eq!(docs.len(), 5, "the firing went through, then the resolved right after");
    assert_eq!(docs[3]["event"], "firing");
    assert_eq!(docs[4]["event"], "resolved");
    assert_eq!(docs[0]["message_id"], docs[3]["message_id"], "a retry is the same message");
    let j = r.notify_journal();
    assert_eq!(j[0].outcome, "sent after 3 retries");
    assert_eq!(j[1].outcome, "sent");

    r.exit_code(65);
    r.submit("firing", "jm", "views");
    r.n.tick(r.clock.now()).unwrap(); // queued as its own message
    r.submit("firing", "jm", "orders");
    r.pump().await;
    let j = r.notify_journal();
    assert!(j[2].outcome.starts_with("failed: plugin") && j[2].outcome.contains("rejected the message (exit 65)"));
    assert!(j[3].outcome.starts_with("failed:"), "the next one was tried right after, not blocked: {j:#?}");
    assert_eq!(outbox::counts(&r.store).unwrap(), (0, 2, 2));

    // The channel never heard `views` fire (refused for good): it does not hear it resolve either.
    r.exit_code(0);
    let before = r.docs().len();
    r.submit("resolved", "jm", "views");
    r.pump().await;
    assert_eq!(r.docs().len(), before, "a resolved went to a channel whose firing failed permanently");
}

#[tokio::test]
async fn give_up_after_ends_retries_with_a_journalled_reason() {
    let r =
        Rig::new("  group_wait: 0s\n  default: {channels: [hook]}\n  retry: {give_up_after: 1m, max_backoff: 10s}\n");
    r.exit_code(1);
    r.submit("firing", "jm", "clicks");
    for _ in 0..10 {
        r.pump().await;
        r.advance(10);
    }
    let j = r.notify_journal();
    assert!(j[0].outcome.starts_with("failed: gave up after"), "{j:#?}");
    assert_eq!(outbox::counts(&r.store).unwrap().2, 1);
}

#[tokio::test]
async fn a_restart_sends_what_was_waiting_or_queued_and_nothing_twice() {
    let r = Rig::new("  group_wait: 30s\n  default: {channels: [hook]}\n");
    r.submit("firing", "jm", "sent-before");
    r.advance(30);
    r.pump().await;
    r.exit_code(75);
    r.submit("firing", "jm2", "queued"); // will fail once, then wait in the outbox
    r.advance(30);
    r.pump().await;
    r.submit("firing", "jm", "grouping"); // still in its group_wait at the "crash"
    let r = r.restart("  group_wait: 30s\n  default: {channels: [hook]}\n");
    r.exit_code(0);
    r.advance(60);
    r.pump().await;
    let mut jobs: Vec<String> = r.docs().iter().map(|d| d["alerts"][0]["job"].as_str().unwrap().to_string()).collect();
    jobs.sort();
    // `queued` twice: its failed attempt before the restart, then its delivery. Each other one once.
    assert_eq!(jobs, ["grouping", "queued", "queued", "sent-before"]);
    assert_eq!(outbox::counts(&r.store).unwrap(), (0, 3, 0));
    // A resolved after the restart still knows the channel was told.
    r.submit("resolved", "jm", "grouping");
    r.advance(30);
    r.pump().await;
    assert_eq!(r.docs().last().unwrap()["event"], "resolved");
}

#[tokio::test]
async fn log_lines_are_only_sent_by_routes_that_ask_for_them() {
    let r = Rig::new("  group_wait: 0s\n  routes:\n    - match: {event: log}\n      channels: [disk]\n  default: {channels: [hook]}\n");
    r.submit("log", "jm", "clicks");
    r.submit("firing", "jm", "clicks");
    r.pump().await;
    assert_eq!(r.lines("disk.jsonl").len(), 1);
    assert_eq!(r.docs().len(), 1);
    assert_eq!(r.docs()[0]["event"], "firing");
}

#[tokio::test]
async fn what_warden_did_comes_from_the_journal() {
    let r = Rig::new(HOOK_ONLY);
    r.store
        .journal(&NewEntry {
            time: Some(t0()),
            rule: "flink/job-not-running".into(),
            target: "jm".into(),
            subject: "clicks".into(),
            action: crate::model::ActionKind::Run,
            detail: "relaunch".into(),
            outcome: "ok".into(),
            ..Default::default()
        })
        .unwrap();
    r.submit("firing", "jm", "clicks");
    let mut other = rec(t0(), "firing", "jm", "views");
    other.details["relaunch"] = serde_json::json!("relaunch");
    r.n.submit(&other).unwrap();
    r.pump().await;
    let d = r.docs();
    assert_eq!(d[0]["alerts"][0]["actions"], serde_json::json!(["ran `relaunch`: succeeded"]));
    assert_eq!(d[0]["alerts"][1]["actions"], serde_json::json!(["will relaunch with `relaunch`"]));
}

#[tokio::test]
async fn the_run_loop_delivers_and_stops_promptly() {
    let r = Rig::new(HOOK_ONLY);
    let Rig { dir, store: _, clock: _, n } = r;
    let n = Arc::new(n);
    let stop = CancellationToken::new();
    let task = tokio::spawn(n.clone().run(stop.clone()));
    n.submit(&rec(t0(), "firing", "jm", "clicks")).unwrap();
    let out = dir.path().join("out.jsonl");
    for _ in 0..100 {
        if out.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(out.exists(), "delivered by the loop");
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(3), task).await.expect("stops").unwrap();
}

fn targets(dir: &Path) -> Vec<TargetConfig> {
    crate::config::load_str(
        &dir.join("warden.yaml"),
        "targets:\n  - {name: jm, url: 'http://jm:8081', labels: {env: prod}}\n  - {name: jm2, url: 'http://jm2:8081'}\n",
    )
    .unwrap()
    .config
    .targets
}

fn subjects(lines: Vec<Value>) -> Vec<String> {
    lines.iter().map(|l| format!("{} {}", l["event"].as_str().unwrap(), l["subject"].as_str().unwrap())).collect()
}

#[tokio::test]
async fn reconfigure_swaps_routes_and_keeps_waiting_batches_and_who_heard_what() {
    let r = Rig::new("  group_wait: 30s\n  default: {channels: [disk]}\n");
    r.submit("firing", "jm", "clicks");
    r.advance(30);
    r.pump().await;
    r.submit("firing", "jm", "views"); // waits out its group_wait across the reconfiguration
    r.advance(10);

    let new = config(r.dir.path(), "  group_wait: 30s\n  default: {channels: [disk, other]}\n");
    r.n.reconfigure(new, &targets(r.dir.path())).unwrap();
    r.advance(20);
    r.pump().await;
    assert_eq!(subjects(r.lines("disk.jsonl")), ["firing clicks", "firing views"], "the waiting batch went out once");
    assert!(r.lines("other.jsonl").is_empty(), "the new channel never heard of views: it was routed before");

    r.submit("resolved", "jm", "clicks");
    r.submit("firing", "jm", "orders"); // same lane as the resolved on each channel: a fixed order
    r.advance(30);
    r.pump().await;
    assert_eq!(subjects(r.lines("disk.jsonl")), ["firing clicks", "firing views", "resolved clicks", "firing orders"]);
    assert_eq!(
        subjects(r.lines("other.jsonl")),
        ["firing orders"],
        "a resolved goes only to channels that heard it fire"
    );
    assert_eq!(outbox::counts(&r.store).unwrap(), (0, 5, 0), "nothing queued twice, nothing left");
}

#[tokio::test]
async fn a_reconfiguration_with_an_error_keeps_the_old_settings() {
    let r = Rig::new("  group_wait: 0s\n  default: {channels: [disk]}\n");
    let mut bad = config(r.dir.path(), "  group_wait: 0s\n  default: {channels: [hook]}\n");
    bad.routes.push(config::RouteConfig {
        matches: config::MatchConfig::default(),
        channels: vec!["hook".into(), "nope".into()],
        continue_matching: false,
        group_wait: None,
        repeat_interval: None,
        send_resolved: None,
        runbook_url: None,
    });
    let e = r.n.reconfigure(bad, &targets(r.dir.path())).unwrap_err();
    assert_eq!(e.to_string(), "notify.routes[0].channels: unknown channel `nope`");

    let mut bad = config(r.dir.path(), "  group_wait: 0s\n  default: {channels: [hook]}\n");
    let config::ChannelConfig::Plugin(p) = bad.channels.get_mut("hook").unwrap() else { panic!() };
    p.text = Some("{{ headline".into());
    let e = r.n.reconfigure(bad, &targets(r.dir.path())).unwrap_err();
    assert!(e.to_string().starts_with("notify.channels.hook.text: invalid template"), "{e}");

    let mut bad = config(r.dir.path(), "  group_wait: 0s\n  default: {channels: [hook]}\n");
    bad.channels.insert(
        "mail".into(),
        serde_yaml::from_str(
            "{type: email, host: smtp.example.com, from: w@example.com, to: [a@example.com], ca_file: /nonexistent/ca.pem}",
        )
        .unwrap(),
    );
    let e = r.n.reconfigure(bad, &targets(r.dir.path())).unwrap_err();
    assert!(e.to_string().starts_with("channel `mail`: cannot read CA file `/nonexistent/ca.pem`"), "{e}");

    r.submit("firing", "jm", "clicks");
    r.pump().await;
    assert_eq!(subjects(r.lines("disk.jsonl")), ["firing clicks"], "still the old routes");
    assert!(r.docs().is_empty());
}

#[tokio::test]
async fn reconfigure_applies_new_maintenance_windows_templates_and_lifecycle_settings() {
    let r = Rig::new(HOOK_ONLY);
    r.submit("firing", "jm", "clicks");
    r.pump().await;
    let new = config(
        r.dir.path(),
        "  group_wait: 0s\n  send_resolved: false\n  default: {channels: [hook]}\n  maintenance:\n    - name: deploys\n\
         \x20     cron: '0 0 10 * * *'\n      duration: 30m\n      match: {job: views}\n",
    );
    let mut new = new;
    let config::ChannelConfig::Plugin(p) = new.channels.get_mut("hook").unwrap() else { panic!() };
    p.text = Some("reloaded: {{ headline }}".into());
    r.n.reconfigure(new, &targets(r.dir.path())).unwrap();
    r.submit("resolved", "jm", "clicks"); // send_resolved is now off
    r.submit("firing", "jm", "views"); // in the new maintenance window
    r.submit("firing", "jm2", "orders");
    r.pump().await;
    let docs = r.docs();
    assert_eq!(docs.len(), 2, "{docs:#?}");
    assert_eq!(docs[1]["alerts"][0]["job"], "orders");
    assert_eq!(docs[1]["text"], "reloaded: [FIRING] job orders FAILED");
    assert!(r.notify_journal().iter().any(|e| e.outcome.starts_with("silenced: maintenance window `deploys`")));
}

#[tokio::test]
async fn a_running_loop_picks_up_channels_added_by_a_reconfiguration() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let clock = Clock::manual(t0());
    let empty = crate::config::load_str(&dir.path().join("warden.yaml"), "state_dir: .\n").unwrap().config;
    let n = Arc::new(Notifier::new(empty.notify, &[], store, clock, Events::default()).unwrap());
    let stop = CancellationToken::new();
    let task = tokio::spawn(n.clone().run(stop.clone()));
    n.reconfigure(config(dir.path(), HOOK_ONLY), &targets(dir.path())).unwrap();
    n.submit(&rec(t0(), "firing", "jm", "clicks")).unwrap();
    let out = dir.path().join("out.jsonl");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !out.exists() {
        assert!(tokio::time::Instant::now() < deadline, "not delivered by the loop started without channels");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(3), task).await.expect("stops").unwrap();
}

#[tokio::test]
async fn a_route_attaches_its_runbook_to_alerts_that_bring_none() {
    let r = Rig::new(
        "  group_wait: 0s\n  routes:\n    - {match: {job: clicks}, channels: [hook], runbook_url: \"https://runbooks.example/clicks\"}\n  default: {channels: [hook]}\n",
    );
    r.submit("firing", "jm", "clicks");
    r.submit("firing", "jm", "views");
    r.pump().await;
    let docs = r.docs();
    let runbook_of = |job: &str| {
        docs.iter()
            .flat_map(|d| d["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| a["job"] == job)
            .map(|a| a["runbook_url"].clone())
    };
    assert_eq!(runbook_of("clicks"), Some(serde_json::json!("https://runbooks.example/clicks")), "{docs:#?}");
    assert_eq!(runbook_of("views"), Some(serde_json::Value::Null), "the default route gives none: {docs:#?}");
}

// ------------------------------------------------------------------------------------------------------------
// Inhibition

/// A rig whose notifier has the Flink pack's inhibit rule: `jobmanager-unreachable` inhibits `job-not-running` of
/// the same target.
fn inhibiting(notify: &str) -> Rig {
    let Rig { dir, store, clock, n } = Rig::new(notify);
    let c: crate::config::InhibitRuleConfig = serde_yaml::from_str(
        "source: {rule: flink/jobmanager-unreachable}\ntarget: {rule: flink/job-not-running}\nequal: [target]",
    )
    .unwrap();
    let rule = inhibit::InhibitRule::compile("flink/jobmanager-unreachable".into(), &c).unwrap();
    Rig { dir, store, clock, n: n.with_inhibit_rules(vec![rule]) }
}

fn jm_down(time: DateTime<Utc>, event: &str, target: &str) -> AlertRecord {
    AlertRecord {
        rule: "flink/jobmanager-unreachable".into(),
        summary: format!("JobManager {target} cannot be reached"),
        details: serde_json::json!({"kind": "connect"}),
        ..rec(time, event, target, target)
    }
}

fn headlines(r: &Rig) -> Vec<String> {
    r.docs().iter().map(|d| d["headline"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn an_inhibited_alert_is_sent_once_as_firing_when_its_source_resolves_while_it_still_fires() {
    let r = inhibiting(HOOK_ONLY);
    r.n.submit(&jm_down(r.clock.now(), "firing", "jm")).unwrap();
    r.submit("firing", "jm", "clicks");
    r.submit("firing", "jm2", "views"); // another target: not inhibited
    r.pump().await;
    let mut h = headlines(&r);
    h.sort(); // two targets: two lanes, delivered side by side
    assert_eq!(h, ["[FIRING] JobManager jm cannot be reached", "[FIRING] job views FAILED"], "clicks is held back");
    let j = r.notify_journal();
    let inhibited: Vec<&crate::store::JournalEntry> =
        j.iter().filter(|e| e.outcome.starts_with("inhibited:")).collect();
    assert_eq!(inhibited.len(), 1, "{j:#?}");
    assert_eq!(inhibited[0].subject, "clicks");
    assert_eq!(
        inhibited[0].outcome,
        "inhibited: by flink/jobmanager-unreachable (jm) on jm [inhibit rule flink/jobmanager-unreachable]"
    );
    assert_eq!(inhibited[0].details["inhibited_by"]["inhibit_rule"], "flink/jobmanager-unreachable");
    assert_eq!(inhibit::held_count(&r.store).unwrap(), 1);
    r.advance(600);
    r.submit("reminder", "jm", "clicks"); // still inhibited
    r.pump().await;
    assert_eq!(r.docs().len(), 2);
    // The JobManager answers again, clicks still fails: clicks is sent now, once, as firing.
    r.n.submit(&jm_down(r.clock.now(), "resolved", "jm")).unwrap();
    r.pump().await;
    r.advance(60);
    r.pump().await;
    let h = headlines(&r);
    assert_eq!(h.len(), 4, "{h:#?}");
    assert!(h[2..].contains(&"[FIRING] job clicks FAILED".to_string()), "{h:#?}");
    assert!(h[2..].iter().any(|l| l.starts_with("[RESOLVED] JobManager jm")), "{h:#?}");
    assert_eq!(inhibit::held_count(&r.store).unwrap(), 0);
    // It was sent: its resolution is sent too.
    r.submit("resolved", "jm", "clicks");
    r.pump().await;
    assert_eq!(headlines(&r).last().unwrap(), "[RESOLVED] job clicks is running again");
    assert_eq!(r.docs().len(), 5);
}

#[tokio::test]
async fn an_inhibited_alert_that_resolves_during_the_outage_sends_nothing() {
    let r = inhibiting(HOOK_ONLY);
    r.n.submit(&jm_down(r.clock.now(), "firing", "jm")).unwrap();
    r.submit("firing", "jm", "clicks");
    r.pump().await;
    r.submit("resolved", "jm", "clicks");
    r.n.submit(&jm_down(r.clock.now(), "resolved", "jm")).unwrap();
    r.advance(60);
    r.pump().await;
    let h = headlines(&r);
    assert_eq!(h.len(), 2, "nothing about clicks: {h:#?}");
    assert_eq!(h[0], "[FIRING] JobManager jm cannot be reached");
    assert!(h[1].starts_with("[RESOLVED] JobManager jm"), "{h:#?}");
    let never: Vec<String> = r
        .notify_journal()
        .into_iter()
        .filter(|e| e.outcome.starts_with("not sent: it resolved while inhibited"))
        .map(|e| e.subject)
        .collect();
    assert_eq!(never, ["clicks"]);
}

#[tokio::test]
async fn an_alert_that_fired_a_moment_before_its_source_is_held_back_when_group_wait_covers_the_gap() {
    let r = inhibiting("  group_wait: 10s\n  default: {channels: [hook]}\n");
    r.submit("firing", "jm", "clicks");
    r.advance(3);
    r.n.submit(&jm_down(r.clock.now(), "firing", "jm")).unwrap();
    r.advance(10);
    r.pump().await;
    assert_eq!(headlines(&r), ["[FIRING] JobManager jm cannot be reached"]);
    assert_eq!(inhibit::held_count(&r.store).unwrap(), 1);
    assert_eq!(r.notify_journal().iter().filter(|e| e.outcome.starts_with("inhibited:")).count(), 1);
}

#[tokio::test]
async fn a_channel_that_heard_an_alert_fire_before_the_outage_gets_no_reminder_but_its_resolved() {
    let r = inhibiting("  group_wait: 0s\n  repeat_interval: 1m\n  default: {channels: [hook]}\n");
    r.submit("firing", "jm", "clicks");
    r.pump().await;
    r.n.submit(&jm_down(r.clock.now(), "firing", "jm")).unwrap();
    r.advance(600);
    r.submit("reminder", "jm", "clicks");
    r.pump().await;
    assert_eq!(headlines(&r), ["[FIRING] job clicks FAILED", "[FIRING] JobManager jm cannot be reached"]);
    assert_eq!(inhibit::held_count(&r.store).unwrap(), 0, "not held: the channel knows it fires");
    r.submit("resolved", "jm", "clicks");
    r.pump().await;
    assert_eq!(headlines(&r).last().unwrap(), "[RESOLVED] job clicks is running again");
}

#[tokio::test]
async fn a_burst_of_job_alerts_during_an_outage_is_held_back_and_one_message_goes_out() {
    let r = inhibiting("  group_wait: 10s\n  default: {channels: [hook]}\n");
    r.n.submit(&jm_down(r.clock.now(), "firing", "jm")).unwrap();
    for i in 0..300 {
        r.submit("firing", "jm", &format!("job-{i:04}"));
    }
    assert_eq!(inhibit::held_count(&r.store).unwrap(), 300);
    r.advance(10);
    r.pump().await;
    assert_eq!(headlines(&r), ["[FIRING] JobManager jm cannot be reached"]);
}

#[tokio::test]
async fn a_reload_keeps_what_is_held_and_one_without_the_rule_sends_it_once() {
    let r = inhibiting(HOOK_ONLY);
    r.n.submit(&jm_down(r.clock.now(), "firing", "jm")).unwrap();
    r.submit("firing", "jm", "clicks");
    r.pump().await;
    assert_eq!(r.docs().len(), 1);
    // The same settings again (`reconfigure` keeps the inhibit rules): still held, nothing sent.
    r.n.reconfigure(config(r.dir.path(), HOOK_ONLY), &targets(r.dir.path())).unwrap();
    r.advance(60);
    r.pump().await;
    assert_eq!(r.docs().len(), 1);
    assert_eq!(inhibit::held_count(&r.store).unwrap(), 1);
    // Reloaded without inhibit rules: clicks, still firing, is sent once.
    r.n.reconfigure_with(config(r.dir.path(), HOOK_ONLY), &targets(r.dir.path()), vec![]).unwrap();
    r.pump().await;
    r.advance(60);
    r.pump().await;
    assert_eq!(headlines(&r), ["[FIRING] JobManager jm cannot be reached", "[FIRING] job clicks FAILED"]);
}
