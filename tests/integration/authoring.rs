//! Rule authoring from the binary alone: the built-in Flink pack, `pack export`, examples that work anywhere,
//! `pack package` running the pack's tests, `warden init` against a JobManager, `warden eval` output (snapshots),
//! and the "first rule in ten minutes" walkthrough of docs/authoring.md executed line by line.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use fake_flink::{FakeJobManager, FlinkApiVersion};

use crate::support::*;

fn warden(dir: &Path) -> Command {
    let mut c = Command::new(WARDEN);
    c.current_dir(dir).env_remove("WARDEN_CONFIG").env_remove("WARDEN_LOG");
    c
}

fn out(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `s` as a regex that matches it literally (for insta filters).
fn literal(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/tests/fixtures");

#[test]
fn the_examples_check_wherever_they_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut copied = vec![];
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "yaml") {
            let to = dir.path().join(e.file_name());
            std::fs::copy(e.path(), &to).unwrap();
            copied.push(to);
        }
    }
    assert!(copied.len() >= 3);
    let o = warden(dir.path()).args(["check", "--no-environment"]).args(&copied).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).matches(": ok (").count(), copied.len(), "{}", out(&o));
}

#[test]
fn pack_export_writes_the_builtin_pack_and_the_copy_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("warden.yaml"), "targets: [{name: jm, url: \"http://127.0.0.1:1\"}]\n").unwrap();
    let o = warden(dir.path()).args(["pack", "list"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("builtin:flink"), "{}", out(&o));

    let o = warden(dir.path()).args(["pack", "export", "flink", "plugins/flink"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("it replaces `builtin:flink`"), "{}", out(&o));
    for f in ["pack.yaml", "job-not-running.rhai", "tests/job-not-running.yaml", "tests/fixtures/jobs-overview.json"] {
        assert!(dir.path().join("plugins/flink").join(f).is_file(), "{f}");
    }
    // The directory pack wins: no duplicate-pack error, one `flink`, from plugins/flink.
    let o = warden(dir.path()).args(["pack", "list"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(text.matches("flink ").count(), 1, "{text}");
    assert!(text.contains("plugins/flink") && !text.contains("builtin:flink"), "{text}");
    let o = warden(dir.path()).args(["check"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    // Its tests pass, and exporting over it is refused.
    let o = warden(dir.path()).args(["test", "plugins/flink"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let o = warden(dir.path()).args(["pack", "export", "flink", "plugins/flink"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("already exists and is not empty"), "{}", out(&o));
}

#[test]
fn pack_package_refuses_a_pack_whose_tests_fail_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let o = warden(dir.path()).args(["pack", "new", "mine"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let test = dir.path().join("plugins/mine/tests/taskmanagers-missing.yaml");
    let text = std::fs::read_to_string(&test).unwrap().replace("2 expected", "5 expected");
    std::fs::write(&test, text).unwrap();
    let o = warden(dir.path()).args(["pack", "package", "plugins/mine"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("1 of 1 rule test(s) failed"), "{err}");
    assert!(err.contains("step 2 (at 30s)"), "{err}");
    assert!(err.contains("--skip-tests"), "{err}");
    assert!(!dir.path().join("mine-0.1.0.tar.gz").exists());
    let o = warden(dir.path()).args(["pack", "package", "plugins/mine", "--skip-tests"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rule tests NOT run (--skip-tests)"), "{}", out(&o));
    assert!(dir.path().join("mine-0.1.0.tar.gz").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_fills_expected_jobs_from_the_running_jobs_and_checks_the_result() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    fake.submit("clicks");
    fake.submit("orders enrichment");
    let failed = fake.submit("nightly-batch");
    fake.fail(&failed, "java.lang.RuntimeException", "boom");
    let url = fake.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let (first, second, yaml) = tokio::task::spawn_blocking(move || {
        let first = warden(&d).args(["init", "--url", &url]).output().unwrap();
        let yaml = std::fs::read_to_string(d.join("warden.yaml")).unwrap_or_default();
        let second = warden(&d).args(["init", "--url", &url]).output().unwrap();
        (first, second, yaml)
    })
    .await
    .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", out(&first));
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("with 2 expected job(s)"), "{said}");
    assert!(said.contains("warden.yaml: ok (1 targets, 1 packs, 14 rules"), "{said}");
    assert!(yaml.contains("expected_jobs: [\"clicks\", \"orders enrichment\"]"), "{yaml}");
    assert!(!yaml.contains("nightly-batch"), "{yaml}");
    // Never overwritten.
    assert_eq!(second.status.code(), Some(1));
    assert!(out(&second).contains("already exists; not overwriting it"), "{}", out(&second));
    assert_eq!(std::fs::read_to_string(dir.path().join("warden.yaml")).unwrap(), yaml);
    fake.shutdown();

    // A URL that is not a JobManager: nothing written, the URL in the message.
    let d = dir.path().join("other");
    std::fs::create_dir_all(&d).unwrap();
    let dd = d.clone();
    let o = tokio::task::spawn_blocking(move || {
        warden(&dd).args(["init", "--url", "http://127.0.0.1:9"]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("cannot list the jobs of the JobManager at `http://127.0.0.1:9`"), "{}", out(&o));
    assert!(!d.join("warden.yaml").exists());
}

/// `warden eval` on a failed job, with the exceptions answered by `--response`.
fn eval_failed_job(format: &str) -> (String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("warden.yaml"),
        "targets: [{name: jm, url: \"http://127.0.0.1:1\"}]\ncommands: {relaunch: {argv: [echo, \"{job}\"]}}\n",
    )
    .unwrap();
    let o = warden(dir.path())
        .args(["eval", "--rule", "flink/job-not-running", "--now", "2026-11-21T11:26:48Z", "--format", format])
        .arg("--input")
        .arg(format!("{FIXTURES}/jobs-overview-failed-only.json"))
        .args(["--param", "expected_jobs=[\"clicks\"]", "--param", "relaunch_command=relaunch"])
        .arg("--response")
        .arg(format!("/jobs/0494e314c586ea2a04408b827c542e40/exceptions={FIXTURES}/job-failed-exceptions.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let path = dir.path().to_path_buf();
    (String::from_utf8_lossy(&o.stdout).to_string(), path, dir)
}

#[test]
fn eval_text_says_what_the_rule_fetched_asked_for_and_why() {
    let (text, _, _dir) = eval_failed_job("text");
    assert!(!text.contains("\"kind\"") && !text.contains("pending"), "{text}");
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&literal(FIXTURES), "[FIXTURES]");
    settings.bind(|| insta::assert_snapshot!("eval_text", text));
}

#[test]
fn eval_json_has_the_documented_shape() {
    let (text, _, _dir) = eval_failed_job("json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for k in ["rule", "input", "time", "outcome", "skipped", "requests", "follow_ups", "state"] {
        assert!(v.get(k).is_some(), "{k} missing: {text}");
    }
    assert_eq!(v["follow_ups"][0]["answered"], true, "{text}");
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&literal(FIXTURES), "[FIXTURES]");
    settings.bind(|| insta::assert_snapshot!("eval_json", serde_json::to_string_pretty(&v).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_in_docs_authoring_runs_as_written() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/authoring.md")).unwrap();
    let mut lines = vec![];
    let mut inside = false;
    for l in doc.lines() {
        if l.trim() == "```sh walkthrough" {
            inside = true;
        } else if inside && l.trim() == "```" {
            inside = false;
        } else if inside && !l.trim().is_empty() {
            lines.push(l.to_string());
        }
    }
    assert!(lines.len() >= 7, "{lines:?}");
    for want in
        ["warden init", "warden pack new", "warden test", "warden eval", "warden pack package", "warden pack add"]
    {
        let w = want.trim_start_matches("warden ");
        assert!(
            lines.iter().any(|l| l.starts_with("warden") && l.contains(w)),
            "the walkthrough lost `{want}`: {lines:?}"
        );
    }
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let url = fake.url();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let bin_dir = Path::new(WARDEN).parent().unwrap().to_path_buf();
    // The other Warden, `elsewhere/`, runs (and records) while the pack is installed into it: the install must be
    // picked up by hot reload, and a replay of its recording must decide what it did.
    let add_line = lines.iter().position(|l| l.contains("pack add")).expect("the walkthrough installs the pack");
    let other = d.join("elsewhere");
    let mut daemon: Option<std::process::Child> = None;
    let (d2, other2, url2) = (d.clone(), other.clone(), url.clone());
    let start_other = move || {
        std::fs::create_dir_all(&other2).unwrap();
        // The configuration `warden init` wrote, polling every second.
        let yaml = std::fs::read_to_string(d2.join("warden.yaml")).unwrap();
        let yaml = yaml
            .replace("  flink:\n    params:\n", "  flink:\n    every: 1s\n    params:\n      not_running_for: 1s\n");
        std::fs::write(other2.join("warden.yaml"), yaml).unwrap();
        let log = std::fs::File::create(other2.join("warden.log")).unwrap();
        let child = std::process::Command::new(WARDEN)
            .args(["--config", "warden.yaml", "run", "--record", "recording.jsonl"])
            .current_dir(&other2)
            .env("WARDEN_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let _ = &url2;
        child
    };
    let log_has = |what: &str| std::fs::read_to_string(other.join("warden.log")).unwrap_or_default().contains(what);
    let results = tokio::task::spawn_blocking(move || {
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut results = vec![];
        for (i, l) in lines.iter().enumerate() {
            if i == add_line {
                daemon = Some(start_other());
                let log = d.join("elsewhere/warden.log");
                let deadline = std::time::Instant::now() + WAIT;
                while !std::fs::read_to_string(&log).unwrap_or_default().contains("warden is watching") {
                    assert!(std::time::Instant::now() < deadline, "the other Warden did not start");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
            let o = std::process::Command::new("sh")
                .arg("-c")
                .arg(l)
                .current_dir(&d)
                .env("PATH", &path)
                .env("JM", &url)
                .env_remove("WARDEN_CONFIG")
                .env_remove("WARDEN_LOG")
                .output()
                .unwrap();
            let ok = o.status.success();
            results.push((l.clone(), out(&o)));
            if !ok {
                panic!("walkthrough step `{l}` failed:\n{}", out(&o));
            }
        }
        (results, daemon)
    })
    .await
    .unwrap();
    let (results, daemon) = results;
    let mut daemon = daemon.expect("the other Warden ran");
    // Hot reload picked the installed pack up: its probe is polled and recorded.
    let recording = other.join("recording.jsonl");
    let rec_has = |what: &str| std::fs::read_to_string(&recording).unwrap_or_default().contains(what);
    // The new pack's probe runs `every: 30s`, its first poll at a random point of its first interval.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(45);
    while !(log_has("reloaded") && rec_has("\"probe\":\"team-checks/")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the installed pack was not hot-reloaded; the other Warden's log:\n{}",
            std::fs::read_to_string(other.join("warden.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The job fails: the other Warden alerts with its root cause.
    fake.fail(&jid, "java.lang.IllegalStateException", "Kafka partition clicks-3 has no leader");
    let alerts = other.join("warden-state/alerts.jsonl");
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&alerts).unwrap_or_default().contains("\"firing\"") {
        assert!(std::time::Instant::now() < deadline, "no alert from the other Warden");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    // Its recording, replayed, decides the same alerts at the same times as its journal says.
    let (plan, _) = warden::plan::load(&other.join("warden.yaml"), None).unwrap_or_else(|e| panic!("{e}"));
    let replayed: Vec<(String, String, String)> = warden::ruletest::replay(&plan, &recording)
        .unwrap()
        .into_iter()
        .map(|(t, a)| {
            let kind = if a.action == "alert" && a.event == "resolved" { "resolved".to_string() } else { a.action };
            (warden::store::ts(t), kind, a.subject)
        })
        .collect();
    let journal: Vec<(String, String, String)> = warden::store::Store::open(&other.join("warden-state"))
        .unwrap()
        .entries(None)
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e.action.as_str(), "alert" | "resolved" | "run" | "restart"))
        .map(|e| (e.time, e.action.to_string(), e.subject))
        .collect();
    assert!(!journal.is_empty());
    assert_eq!(replayed, journal, "replay must equal the live journal");
    let said = |prefix: &str| results.iter().find(|(l, _)| l.starts_with(prefix)).map(|(_, o)| o.clone()).unwrap();
    assert!(said("warden init").contains("with 1 expected job(s)"), "{}", said("warden init"));
    assert!(said("warden eval").contains("why: 1 TaskManager(s) registered, 2 expected"), "{}", said("warden eval"));
    assert!(said("warden pack package").contains("1 rule test(s) passed"), "{}", said("warden pack package"));
    assert!(dir.path().join("elsewhere/plugins/team-checks/pack.yaml").is_file());
    assert!(said("warden check").contains("2 packs"), "{}", said("warden check"));
    let yaml = std::fs::read_to_string(dir.path().join("warden.yaml")).unwrap();
    assert!(yaml.contains("expected_jobs: [\"clicks\"]"), "{yaml}");
}
