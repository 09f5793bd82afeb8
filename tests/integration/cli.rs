//! The command line: `warden check` (exit codes, text and JSON output), `warden history --format json`,
//! `warden demo`.

use std::path::Path;

use assert_cmd::Command;
use fake_flink::FlinkApiVersion;
use serde_json::{json, Value};

use crate::support::*;

fn warden() -> Command {
    let mut c = Command::new(WARDEN);
    c.env_remove("WARDEN_CONFIG").env_remove("WARDEN_LOG");
    c
}

/// `s` as a regex that matches it literally (for insta filters).
fn literal(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Snapshots `text` with the temp dir `dir` shown as `[DIR]`.
fn snapshot(name: &str, dir: &Path, text: &str) {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&literal(&dir.display().to_string()), "[DIR]");
    settings.bind(|| insta::assert_snapshot!(name, text));
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("warden.yaml");
    std::fs::write(&path, text.replace("RULES_DIR", RULES_DIR)).unwrap();
    path
}

const VALID: &str = "\
state_dir: state
pack_paths: [\"RULES_DIR\"]
targets:
  - name: jm
    url: http://127.0.0.1:8081
commands:
  relaunch:
    argv: [flink, run, -d, \"/jobs/{job}.jar\"]
packs:
  flink:
    params:
      expected_jobs: [clicks]
      relaunch_command: relaunch
";

/// Problems only semantic checks find (so all are reported together).
const INVALID: &str = "\
state_dir: state
pack_paths: [\"RULES_DIR\"]
targets:
  - name: jm
    url: ftp://127.0.0.1:8081
  - name: jm
    url: http://127.0.0.1:8082
probes:
  - name: mine
    targets: [jm, jn]
    cron: \"every tuesday\"
    request: {path: jobs/overview}
    rules: [flink/job-not-running]
commands:
  relaunch:
    argv: [flink, run, \"{job\"]
";

/// Typos, which the type checks find.
const TYPOS: &str = "\
targets:
  - name: jm
    url: http://127.0.0.1:8081
    timout: 2s
probes:
  - name: mine
    every: 10s
    request: {path: /jobs/overview, methd: GET}
    rules: [flink/job-not-running]
shutdown_grase: 5s
";

#[test]
fn check_accepts_a_valid_configuration_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), VALID);
    let out = warden().args(["check", "-c"]).arg(&path).assert().code(0).get_output().clone();
    snapshot("check_valid", dir.path(), &String::from_utf8_lossy(&out.stdout));
}

fn check_invalid(name: &str, text: &str, count: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), text);
    let out = warden().args(["check", "-c"]).arg(&path).assert().code(1).get_output().clone();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), count, "every problem is printed: {stdout}");
    let prefix = format!("{}:", path.display());
    for l in &lines {
        let rest = l.strip_prefix(&prefix).unwrap_or_else(|| panic!("{l:?} does not start with the file"));
        let mut parts = rest.splitn(3, ':');
        let (line, col) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(line.parse::<usize>().is_ok() && col.parse::<usize>().is_ok(), "{l:?} is not path:line:col: …");
        assert!(parts.next().is_some_and(|m| m.starts_with(' ') && m.len() > 1), "{l:?} has no message");
    }
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), format!("{count} problem(s)"));
    snapshot(name, dir.path(), &stdout);
}

#[test]
fn check_prints_every_semantic_problem_as_path_line_col_with_exit_1() {
    check_invalid("check_invalid", INVALID, 6);
}

#[test]
fn check_prints_every_typo_with_a_suggestion_with_exit_1() {
    check_invalid("check_typos", TYPOS, 3);
}

#[test]
fn check_usage_errors_exit_2() {
    warden().args(["check", "--bogus"]).assert().code(2);
    warden().args(["check", "--format", "xml"]).assert().code(2);
    warden().arg("frobnicate").assert().code(2);
}

#[test]
fn check_a_missing_file_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let out = warden().args(["check", "-c"]).arg(&path).assert().code(1).get_output().clone();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&format!("{}: cannot read configuration", path.display())), "{stdout}");
}

#[test]
fn check_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), VALID);
    let out = warden().args(["check", "--format", "json", "-c"]).arg(&path).assert().code(0).get_output().clone();
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v, json!({"ok": true, "problems": []}));

    let path = write(dir.path(), INVALID);
    let out = warden().args(["check", "--format", "json", "-c"]).arg(&path).assert().code(1).get_output().clone();
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().expect("a list of problems");
    assert_eq!(problems.len(), 6, "{v:#}");
    for p in problems {
        assert_eq!(p["file"], path.display().to_string(), "{p}");
        assert!(p["line"].as_u64().unwrap_or(0) > 0 && p["col"].as_u64().unwrap_or(0) > 0, "{p}");
        assert!(p["message"].as_str().is_some_and(|m| !m.is_empty()), "{p}");
    }
    let text = warden().args(["check", "-c"]).arg(&path).assert().code(1).get_output().stdout.clone();
    let as_text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p["line"], p["col"], p["message"].as_str().unwrap()))
        .collect();
    assert_eq!(String::from_utf8_lossy(&text).lines().collect::<Vec<_>>(), as_text, "text and JSON agree");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_format_json_prints_one_entry_per_line() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("warden.yaml");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"relaunch": recording_relaunch(&dir.path().join("relaunches"))},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "relaunch"}}},
        }),
    );
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "no leader");
    d.wait_for("resolved", |e| is_alert(e, "resolved", "flink/job-not-running", "clicks")).await;
    // Read the journal while the daemon still runs (a CLI process may do that).
    let out = warden().args(["history", "--format", "json", "-c"]).arg(&config).assert().code(0).get_output().clone();
    // --limit keeps the newest entries.
    let limited = warden().args(["history", "--format", "json", "--limit", "1", "-c"]).arg(&config).assert().code(0);
    let limited = String::from_utf8_lossy(&limited.get_output().stdout).to_string();
    d.stop().await; // (removes the temp dir)
    assert_eq!(limited.lines().count(), 1);
    assert!(limited.contains("\"action\":\"resolved\""), "{limited}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    for l in &lines {
        for k in ["time", "rule", "target", "action", "subject", "outcome"] {
            assert!(l[k].is_string(), "`{k}` missing in {l}");
        }
        assert!(chrono::DateTime::parse_from_rfc3339(l["time"].as_str().unwrap()).is_ok(), "{l}");
    }
    let brief: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap().to_string();
            (s("rule"), s("action"), s("subject"), s("outcome"))
        })
        .collect();
    let jnr = "flink/job-not-running".to_string();
    let want = |a: &str, o: &str| (jnr.clone(), a.to_string(), "clicks".to_string(), o.to_string());
    assert_eq!(brief, [want("alert", "ok"), want("run", "ok"), want("resolved", "ok")], "{lines:#?}");
    assert!(lines.iter().all(|l| l["target"] == "jm"));
    assert!(lines[0]["summary"].as_str().unwrap().contains("java.lang.IllegalStateException: no leader"));
    assert_eq!(lines[1]["detail"], "relaunch");
}

#[test]
fn history_without_a_journal_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = warden().args(["history", "--state-dir"]).arg(dir.path()).assert().code(1).get_output().clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no journal in"), "{err}");
}

#[test]
fn demo_closes_the_loop() {
    let out = warden().args(["demo", "--timeout", "60s"]).timeout(std::time::Duration::from_secs(90)).assert();
    let out = out.get_output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for word in ["DETECTED", "ROOT CAUSE", "RELAUNCH", "RECOVERED"] {
        assert!(stdout.contains(word), "the demo output lacks {word}:\n{stdout}");
    }
    assert!(stdout.contains("java.lang.IllegalStateException: Kafka partition clicks-3 has no leader"), "{stdout}");
    assert!(stdout.contains("The loop closed in"), "{stdout}");
}

#[test]
fn a_closed_stdout_ends_history_quietly_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), VALID);
    let store = warden::store::Store::open(&dir.path().join("state")).unwrap();
    for i in 0..5000 {
        store
            .journal(&warden::store::NewEntry {
                rule: "r".into(),
                target: "jm".into(),
                subject: format!("job-{i}"),
                action: warden::model::ActionKind::Alert,
                summary: "x".repeat(100),
                outcome: "ok".into(),
                ..Default::default()
            })
            .unwrap();
    }
    drop(store);
    // `warden history | head -1`: the reader goes away after one line.
    let mut child = std::process::Command::new(WARDEN)
        .args(["--config"])
        .arg(&cfg)
        .arg("history")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.contains("job-0"), "{first}");
    } // stdout closed here
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_log_filter_that_does_not_parse_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), VALID);
    let out = warden().args(["--log", "nonsense==="]).arg("--config").arg(&cfg).arg("check").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`nonsense===` is not a log filter"), "{err}");
}

#[test]
fn eval_params_are_type_checked_against_the_pack() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), VALID);
    let input = dir.path().join("overview.json");
    std::fs::write(&input, r#"{"jobs": []}"#).unwrap();
    let run = |param: &str| {
        warden()
            .arg("--config")
            .arg(&cfg)
            .args(["eval", "--rule", "flink/job-not-running", "--input"])
            .arg(&input)
            .args(["--param", param])
            .output()
            .unwrap()
    };
    let bad = run("expected_jobs=notjson");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("expected_jobs") && err.contains("list of strings"), "{err}");
    let unknown = run("expected_jbos=[\"a\"]");
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(1), "{err}");
    assert!(err.contains("did you mean `expected_jobs`"), "{err}");
    let good = run("expected_jobs=[\"clicks\"]");
    assert_eq!(good.status.code(), Some(0), "{}", String::from_utf8_lossy(&good.stderr));
}
