//! Reload without side effects and bounded work, with the real daemon watching its files: a rule saved in two
//! steps while its alert fires, a removed rule, rule directories replaced under a running daemon (`rm -rf` + `cp
//! -r`, `git checkout`, a Kubernetes ConfigMap symlink swap, a pack created after start), concurrent actions
//! beyond the limits, and follow-up requests beyond the rules' total time budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};
use warden::event::{Event, Events};
use warden::runtime::{self, ReloadSource, RunOptions, RuntimeError, Stats};
use warden::store::{JournalEntry, Store};

use crate::support::*;

const JNR: &str = "flink/job-not-running";

/// The daemon, running in this process and reloading from its configuration file as it changes.
struct Live {
    dir: TempDir,
    state_dir: PathBuf,
    rx: broadcast::Receiver<Event>,
    seen: Vec<Event>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<Arc<Stats>, RuntimeError>>>,
}

impl Live {
    /// Writes `cfg` as `<dir>/warden.yaml` and starts the daemon on it.
    fn start(dir: TempDir, cfg: &Value) -> Live {
        let config = write_config(dir.path(), cfg);
        Self::launch(dir, config)
    }

    /// Starts the daemon on `config`, watching it and its packs.
    fn launch(dir: TempDir, config: PathBuf) -> Live {
        let (plan, engine) =
            warden::plan::load(&config, None).unwrap_or_else(|d| panic!("the configuration does not load:\n{d}"));
        let state_dir = plan.loaded.config.state_dir.clone();
        let events = Events::default();
        let rx = events.subscribe();
        let (tx, stop_rx) = oneshot::channel::<()>();
        let opts = RunOptions { events, reload: Some(ReloadSource { config }), ..Default::default() };
        let task = tokio::spawn(runtime::run(plan, engine, opts, async move {
            let _ = stop_rx.await;
        }));
        Live { dir, state_dir, rx, seen: vec![], stop: Some(tx), task: Some(task) }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Waits (at most [`WAIT`]) for an event matching `pred`, keeping every event in `seen`.
    async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Ok(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(Err(RecvError::Lagged(_))) => continue,
                Ok(Err(RecvError::Closed)) => panic!("the daemon stopped while waiting for {what}"),
                Err(_) => {
                    let from = self.seen.len().saturating_sub(15);
                    panic!("timed out after {WAIT:?} waiting for {what}; last events: {:#?}", &self.seen[from..])
                }
            }
        }
    }

    /// Waits for `n` more polls.
    async fn polls(&mut self, n: usize) {
        for i in 0..n {
            self.wait_for(&format!("poll {} of {n}", i + 1), |e| matches!(e, Event::Observed { .. })).await;
        }
    }

    /// Waits for the next reload and returns its errors (empty when it was applied).
    async fn reload(&mut self, what: &str) -> Vec<String> {
        match self.wait_for(what, |e| matches!(e, Event::Reloaded { .. })).await {
            Event::Reloaded { errors, .. } => errors,
            _ => unreachable!(),
        }
    }

    fn journal(&self) -> Vec<JournalEntry> {
        Store::open(&self.state_dir).and_then(|s| s.entries(None)).expect("journal readable")
    }

    fn rule_states(&self) -> Vec<(String, String)> {
        let s = Store::open(&self.state_dir).expect("store");
        s.rule_states().expect("rule states").into_keys().collect()
    }

    fn count(&self, event: &str, rule: &str, subject: &str) -> usize {
        self.seen.iter().filter(|e| is_alert(e, event, rule, subject)).count()
    }

    async fn stop(mut self) -> Arc<Stats> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task).await.expect("stops in time").expect("no panic").expect("ran")
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Replaces `path` the way editors save: write a temporary file, rename it over.
fn save(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// A rule that always alerts about `subject`.
fn alerting(subject: &str) -> String {
    format!("alert(#{{ subject: \"{subject}\", summary: \"seen by the rule that says {subject}\" }});\n")
}

/// A pack `t` in `dir`: one probe of `/jobs/overview` every 200 ms and rule `r`, alerting about `subject`.
fn pack_in(dir: &Path, subject: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("pack dir");
    std::fs::write(
        dir.join("pack.yaml"),
        "name: t\nversion: 0.1.0\nprobes:\n  - name: p\n    every: 200ms\n    request:\n      path: /jobs/overview\n    rules: [r]\n",
    )
    .expect("pack.yaml");
    std::fs::write(dir.join("r.rhai"), alerting(subject)).expect("r.rhai");
    dir.join("r.rhai")
}

fn config(url: &str, pack_paths: &[&str]) -> Value {
    json!({"state_dir": "state", "pack_paths": pack_paths, "targets": [{"name": "jm", "url": url, "timeout": "5s"}]})
}

/// A broken save of `rule` (of rule `name`) is refused with its `file:line:col`; the fixed one, alerting about
/// `subject`, applies.
async fn broken_edit_refused_then_fix_applied(d: &mut Live, rule: &Path, name: &str, subject: &str) {
    save(rule, "let jobs = obs.body.jobs;\nalert(#{ subject: \"broken\",\n  summary: \n");
    let errors = d.reload("the broken edit").await;
    let all = errors.join("\n");
    let at = format!("{}:", rule.display());
    let line = all.lines().find(|l| l.starts_with(&at)).unwrap_or_else(|| panic!("no error at {at}:\n{all}"));
    let mut pos = line[at.len()..].splitn(3, ':');
    let (l, c) = (pos.next().unwrap_or(""), pos.next().unwrap_or(""));
    assert!(l.parse::<usize>().is_ok_and(|l| l >= 2) && c.parse::<usize>().is_ok(), "not file:line:col: {line}");
    assert!(line.contains("syntax error"), "{line}");
    save(rule, &alerting(subject));
    d.wait_for(&format!("`{subject}` firing after the fix"), |e| is_alert(e, "firing", name, subject)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_saved_in_two_steps_while_its_alert_fires_is_neither_resolved_nor_relaunched_again() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    copy_dir(Path::new(RULES_DIR), &dir.path().join("rules"));
    let rec = dir.path().join("relaunches");
    // The relaunch does not bring the job back: it stays FAILED, its alert keeps firing, and the default
    // run_cooldown (2m) holds any second relaunch back for the whole test.
    let cfg = flink_config(
        &fake.url(),
        json!({
            "pack_paths": ["rules"],
            "commands": {"relaunch": {"argv": ["sh", "-c", "printf '%s\\n' \"$1\" >> \"$0\"", rec, "{job}"]}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "relaunch"}}},
        }),
    );
    let mut d = Live::start(dir, &cfg);
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "no leader");
    d.wait_for("job-not-running firing", |e| is_alert(e, "firing", JNR, "clicks")).await;
    d.wait_for("the relaunch", |e| matches!(e, Event::RunFinished { subject, .. } if subject == "clicks")).await;

    // Saved in two steps: `: > job-not-running.rhai`, a reload in between, then the content.
    let file = d.path().join("rules/job-not-running.rhai");
    let content = std::fs::read_to_string(&file).unwrap();
    std::fs::File::create(&file).unwrap();
    let errors = d.reload("the reload of the empty file").await;
    d.polls(4).await; // time for an empty rule to run, had it been loaded
    std::fs::write(&file, &content).unwrap();
    let applied = d.reload("the reload of the rewritten file").await;
    d.polls(6).await; // well past not_running_for (400ms)

    let relaunches = std::fs::read_to_string(&rec).unwrap_or_default().lines().count();
    let (resolved, fired) = (d.count("resolved", JNR, "clicks"), d.count("firing", JNR, "clicks"));
    assert_eq!((resolved, fired, relaunches), (0, 1, 1), "(resolved, fired, relaunched): {:#?}", d.journal());
    assert_eq!(runs(&d.journal(), "clicks").len(), 1, "{:#?}", d.journal());
    // The half-saved file was refused, and said where; the complete one was applied.
    let all = errors.join("\n");
    assert!(all.starts_with(&format!("{}:1:1: rule `{JNR}`: the rule file has no code", file.display())), "{all}");
    assert!(applied.is_empty(), "{applied:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_rule_resolves_its_firing_alert_once_and_its_state_is_dropped() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    fake.submit("clicks");
    let dir = tempfile::tempdir().unwrap();
    let stay = alerting("stay");
    let gone = format!("state.n = (state.n ?? 0) + 1;\n{}", alerting("gone"));
    write_pack(dir.path(), "t", &[("stay", &stay), ("gone", &gone)]);
    let mut d = Live::start(dir, &config(&fake.url(), &["plugins/*"]));
    d.wait_for("`gone` firing", |e| is_alert(e, "firing", "t/gone", "gone")).await;
    d.polls(2).await;
    assert!(d.rule_states().contains(&("t/gone".into(), "jm".into())), "{:?}", d.rule_states());

    write_pack(d.path(), "t", &[("stay", &stay)]);
    std::fs::remove_file(d.path().join("plugins/t/gone.rhai")).unwrap();
    d.wait_for("`gone` resolved", |e| is_alert(e, "resolved", "t/gone", "gone")).await;
    d.polls(5).await;

    assert_eq!(d.count("resolved", "t/gone", "gone"), 1, "{:#?}", d.seen);
    assert_eq!(d.count("firing", "t/gone", "gone"), 1, "the removed rule's alert came back: {:#?}", d.seen);
    assert_eq!(d.count("resolved", "t/stay", "stay"), 0);
    assert!(!d.rule_states().iter().any(|(r, _)| r == "t/gone"), "{:?}", d.rule_states());
    let journal = d.journal();
    let resolved: Vec<_> = journal.iter().filter(|e| e.action == "resolved" && e.rule == "t/gone").collect();
    assert_eq!(resolved.len(), 1, "{journal:#?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_goes_on_after_the_rules_directory_is_replaced() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rule = pack_in(&dir.path().join("rules"), "one");
    pack_in(&dir.path().join("next"), "two");
    let mut d = Live::start(dir, &config(&fake.url(), &["rules"]));
    d.wait_for("`one` firing", |e| is_alert(e, "firing", "t/r", "one")).await;

    // rm -rf rules && cp -r next rules
    std::fs::remove_dir_all(d.path().join("rules")).unwrap();
    copy_dir(&d.path().join("next"), &d.path().join("rules"));
    d.wait_for("`two` firing", |e| is_alert(e, "firing", "t/r", "two")).await;
    broken_edit_refused_then_fix_applied(&mut d, &rule, "t/r", "three").await;
    d.stop().await;
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_goes_on_after_a_git_checkout_replaces_the_rules_directory() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let rule = pack_in(&p.join("rules"), "one");
    git(p, &["init", "-q", "-b", "main"]);
    git(p, &["add", "rules"]);
    git(p, &["commit", "-q", "-m", "one"]);
    git(p, &["checkout", "-q", "-b", "none"]);
    git(p, &["rm", "-rq", "rules"]);
    git(p, &["commit", "-q", "-m", "no rules"]);
    git(p, &["checkout", "-q", "-b", "two", "main"]);
    std::fs::write(&rule, alerting("two")).unwrap();
    git(p, &["commit", "-q", "-am", "two"]);
    git(p, &["checkout", "-q", "main"]);
    let mut d = Live::start(dir, &config(&fake.url(), &["rules"]));
    d.wait_for("`one` firing", |e| is_alert(e, "firing", "t/r", "one")).await;

    // Through a commit without the directory: git deletes it and creates it again.
    git(d.path(), &["checkout", "-q", "none"]);
    git(d.path(), &["checkout", "-q", "two"]);
    d.wait_for("`two` firing", |e| is_alert(e, "firing", "t/r", "two")).await;
    broken_edit_refused_then_fix_applied(&mut d, &rule, "t/r", "three").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_goes_on_after_a_configmap_symlink_swap() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    // A ConfigMap volume: the files are symlinks through `..data`, itself a symlink to a timestamped directory.
    let cfg = json!({
        "state_dir": p.join("state"), "pack_paths": ["rules"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "5s"}],
    });
    let version = |name: &str, subject: &str| {
        pack_in(&p.join(name).join("rules"), subject);
        write_config(&p.join(name), &cfg);
    };
    version("..2026_03_01_00_00_00.1", "one");
    std::os::unix::fs::symlink("..2026_03_01_00_00_00.1", p.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/warden.yaml", p.join("warden.yaml")).unwrap();
    std::os::unix::fs::symlink("..data/rules", p.join("rules")).unwrap();
    let mut d = Live::launch(dir, p.join("warden.yaml"));
    d.wait_for("`one` firing", |e| is_alert(e, "firing", "t/r", "one")).await;

    // The kubelet's update: a new timestamped directory, `..data` re-pointed atomically, the old one deleted.
    version("..2026_03_01_00_05_00.2", "two");
    std::os::unix::fs::symlink("..2026_03_01_00_05_00.2", p.join("..data_tmp")).unwrap();
    std::fs::rename(p.join("..data_tmp"), p.join("..data")).unwrap();
    std::fs::remove_dir_all(p.join("..2026_03_01_00_00_00.1")).unwrap();
    d.wait_for("`two` firing", |e| is_alert(e, "firing", "t/r", "two")).await;
    broken_edit_refused_then_fix_applied(&mut d, &p.join("rules/r.rhai"), "t/r", "three").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_created_after_start_is_loaded_and_watched() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No plugins/ yet: `warden pack new` creates it.
    let mut d = Live::start(dir, &config(&fake.url(), &["plugins/*"]));
    let out = std::process::Command::new(WARDEN)
        .args(["pack", "new", "ops", "-c"])
        .arg(d.path().join("warden.yaml"))
        .output()
        .expect("warden pack new runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let errors = d.reload("the reload with the new pack").await;
    assert!(errors.is_empty(), "{errors:?}");
    let pack = d.path().join("plugins/ops");
    assert!(pack.join("taskmanagers-missing.rhai").is_file());
    std::fs::write(
        pack.join("pack.yaml"),
        "name: ops\nversion: 0.1.0\nprobes:\n  - name: p\n    every: 200ms\n    request:\n      path: /jobs/overview\n    rules: [r]\n",
    )
    .unwrap();
    std::fs::write(pack.join("r.rhai"), alerting("ops")).unwrap();
    d.wait_for("the new pack's rule firing", |e| is_alert(e, "firing", "ops/r", "ops")).await;
    broken_edit_refused_then_fix_applied(&mut d, &pack.join("r.rhai"), "ops/r", "fixed").await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_beyond_the_per_target_limit_wait_their_turn_and_none_is_dropped() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let names: Vec<String> = (1..=4).map(|i| format!("job{i}")).collect();
    let jids: Vec<String> = names.iter().map(|n| fake.submit(n)).collect();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("runs");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"relaunch": {"argv": ["sh", "-c", "echo start >> \"$0\"; sleep 0.3; echo end >> \"$0\"", rec]}},
            "packs": {"flink": {"params": {"expected_jobs": names, "relaunch_command": "relaunch"}}},
            "dispatch": {"max_concurrent_actions": 8, "max_concurrent_actions_per_target": 1},
        }),
    );
    let mut d = Live::start(dir, &cfg);
    d.polls(2).await;
    for jid in &jids {
        fake.fail(jid, "java.lang.RuntimeException", "down");
    }
    for i in 0..names.len() {
        d.wait_for(&format!("relaunch {} of 4", i + 1), |e| matches!(e, Event::RunFinished { .. })).await;
    }
    let lines: Vec<String> = std::fs::read_to_string(&rec).unwrap().lines().map(String::from).collect();
    let want: Vec<&str> = ["start", "end"].repeat(4);
    assert_eq!(lines, want, "two relaunches ran at once on one target");
    let journal = d.journal();
    for n in &names {
        let r = runs(&journal, n);
        assert_eq!(r.len(), 1, "{n}: {journal:#?}");
        assert_eq!(r[0].outcome, "ok");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_beyond_the_total_time_budget_answer_at_once_and_the_rule_still_concludes() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rule = r#"
        let kinds = "";
        for i in 0..8 { let r = http_get("/jobs/overview"); kinds += if r.ok { "ok " } else { r.error.kind + " " }; }
        alert(#{ subject: "budget", summary: kinds });
    "#;
    write_pack(dir.path(), "t", &[("slow", rule)]);
    let mut cfg = config(&fake.url(), &["plugins/*"]);
    merge(&mut cfg, json!({"scripts": {"max_total_time": "1s"}}));
    let mut d = Live::start(dir, &cfg);
    fake.set_delay(std::time::Duration::from_millis(300));
    let fired = record(d.wait_for("the rule's verdict", |e| is_alert(e, "firing", "t/slow", "budget")).await);
    let kinds: Vec<&str> = fired.summary.split_whitespace().collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    let ok = kinds.iter().filter(|k| **k == "ok").count();
    assert!((1..=4).contains(&ok), "only the follow-ups within the budget are answered: {kinds:?}");
    assert_eq!(kinds.last(), Some(&"limit"), "{kinds:?}");
    assert!(kinds[ok..].iter().all(|k| *k == "limit" || *k == "timeout"), "{kinds:?}");
    d.stop().await;
}
