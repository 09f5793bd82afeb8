//! Bad input: broken configuration and rules are reported with where they are; broken rules and misbehaving
//! JobManagers at run time are reported while Warden keeps watching; hostile job names stay data; SIGTERM lets a
//! running relaunch finish within the grace period.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::json;
use warden::event::Event;

use crate::support::*;

/// Every diagnostic of loading `text` as `<dir>/warden.yaml`, as printed (`path:line:col: message`).
fn problems(dir: &Path, text: &str) -> Vec<String> {
    let path = dir.join("warden.yaml");
    std::fs::write(&path, text).unwrap();
    match warden::plan::load(&path, None) {
        Ok(_) => vec![],
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

fn at(dir: &Path, line: usize, col: usize, message: &str) -> String {
    format!("{}:{line}:{col}: {message}", dir.join("warden.yaml").display())
}

#[test]
fn malformed_yaml_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), "targets:\n  - name: jm\n    url: [unclosed\nstate_dir: x\n");
    assert_eq!(p.len(), 1, "{p:#?}");
    let prefix = format!("{}:", dir.path().join("warden.yaml").display());
    assert!(p[0].starts_with(&prefix), "{p:?}");
    let line: usize = p[0][prefix.len()..].split(':').next().unwrap().parse().expect("a line number");
    assert!((3..=4).contains(&line), "points at the unclosed list: {p:?}");
    assert!(p[0].contains("invalid YAML"), "{p:?}");
}

#[test]
fn unknown_keys_are_named_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(
        dir.path(),
        "targets:\n  - name: jm\n    url: http://127.0.0.1:1\n    timout: 2s\nshutdown_grase: 5s\n",
    );
    assert_eq!(
        p,
        [
            at(dir.path(), 4, 5, "unknown field `timout`, did you mean `timeout`?"),
            at(dir.path(), 5, 1, "unknown key `shutdown_grase`, did you mean `shutdown_grace`?"),
        ]
    );
    // A pack parameter with a typo.
    let text = format!(
        "pack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - name: jm\n    url: http://127.0.0.1:1\npacks:\n  flink:\n    params:\n      unreachable_pols: 2\n"
    );
    let p = problems(dir.path(), &text);
    assert_eq!(
        p,
        [at(dir.path(), 8, 7, "pack `flink` has no parameter `unreachable_pols`, did you mean `unreachable_polls`?")]
    );
}

#[test]
fn typos_in_several_settings_sections_are_all_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), "dispatch:\n  storm_guard:\n    max_run: 2\nscripts:\n  max_opertions: 5\n");
    assert_eq!(
        p,
        [
            at(dir.path(), 3, 5, "unknown field `max_run`, did you mean `max_runs`?"),
            at(dir.path(), 5, 3, "unknown field `max_opertions`, did you mean `max_operations`?"),
        ]
    );
}

#[test]
fn a_probe_naming_a_missing_target_or_rule_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let probe = |targets: &str, rule: &str| {
        format!(
            "pack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - name: jm\n    url: http://127.0.0.1:1\nprobes:\n  - name: mine\n    targets: [{targets}]\n    every: 10s\n    request: {{path: /jobs/overview}}\n    rules: [{rule}]\n"
        )
    };
    let p = problems(dir.path(), &probe("jm, jn", "flink/job-not-running"));
    assert_eq!(p, [at(dir.path(), 7, 19, "unknown target `jn`, did you mean `jm`?")]);
    let p = problems(dir.path(), &probe("jm", "flink/job-not-runing"));
    assert_eq!(
        p,
        [at(
            dir.path(),
            10,
            13,
            "probe `mine` names unknown rule `flink/job-not-runing`, did you mean `flink/job-not-running`?"
        )]
    );
    assert_eq!(problems(dir.path(), &probe("jm", "flink/job-not-running")), Vec::<String>::new());
}

#[test]
fn a_cron_expression_that_does_not_parse_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "pack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - name: jm\n    url: http://127.0.0.1:1\nprobes:\n  - name: mine\n    cron: \"every tuesday\"\n    request: {{path: /jobs/overview}}\n    rules: [flink/job-not-running]\n"
    );
    let p = problems(dir.path(), &text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with(&at(dir.path(), 7, 11, "probe `mine`: invalid cron")), "{p:?}");
}

#[test]
fn a_rhai_syntax_error_names_the_rule_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = write_pack(
        dir.path(),
        "mypack",
        &[("fine", "if !obs.ok { return; }\n"), ("broken", "// a comment\nlet jobs = obs.body.jobs;\nlet x = ;\n")],
    );
    let text = "targets:\n  - name: jm\n    url: http://127.0.0.1:1\n";
    let p = problems(dir.path(), text);
    assert_eq!(p.len(), 1, "only the broken rule is reported: {p:#?}");
    let want = format!("{}:3:9: rule `mypack/broken`: syntax error:", pdir.join("broken.rhai").display());
    assert!(p[0].starts_with(&want), "{:?} does not start with {want:?}", p[0]);
}

#[test]
fn warden_run_refuses_an_invalid_configuration_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.yaml");
    std::fs::write(&path, "targets:\n  - name: jm\n    url: http://127.0.0.1:1\n    timout: 2s\n").unwrap();
    let out = Command::new(WARDEN).args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&at(dir.path(), 4, 5, "unknown field `timout`, did you mean `timeout`?")), "{err}");
    assert!(err.contains("1 problem(s) in the configuration; not starting"), "{err}");
    assert!(!dir.path().join("warden-state").exists(), "nothing was started");
}

/// A config with only the packs under `<dir>/plugins/`, watching `url` as target `jm`.
fn plugin_config(url: &str, over: serde_json::Value) -> serde_json::Value {
    let mut c = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": url, "timeout": "2s"}],
        "shutdown_grace": "5s",
    });
    merge(&mut c, over);
    c
}

const CANARY: &str = "alert(#{subject: \"canary\", summary: \"the other rules still judge\"});\n";

fn rule_failed<'a>(e: &'a Event, file: &str) -> Option<&'a str> {
    match e {
        Event::RuleFailed { error } if error.contains(&format!("/{file}:")) => Some(error.as_str()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_that_loop_explode_or_throw_are_stopped_and_reported_while_others_alert() {
    let (fake, _) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let pdir = write_pack(
        dir.path(),
        "mypack",
        &[
            ("endless", "let n = 0;\nloop { n += 1; }\n"),
            ("huge", "let s = \"x\";\nloop { s += s; }\n"),
            ("throws", "let a = 1;\nthrow \"boom from the rule\";\n"),
            ("canary", CANARY),
        ],
    );
    let cfg = plugin_config(&fake.url(), json!({"scripts": {"max_operations": 50000, "max_time": "10s"}}));
    let mut d = Daemon::start_in(dir, cfg).await;
    let e = d.wait_for("endless reported", |e| rule_failed(e, "endless.rhai").is_some()).await;
    let msg = rule_failed(&e, "endless.rhai").unwrap();
    assert!(msg.starts_with(&format!("{}:2:", pdir.join("endless.rhai").display())), "{msg}");
    assert!(msg.contains("rule `mypack/endless`: stopped: the rule exceeded its budget of 50000 operations"), "{msg}");
    let e = d.seen_or_wait_for("huge reported", |e| rule_failed(e, "huge.rhai").is_some()).await;
    let msg = rule_failed(&e, "huge.rhai").unwrap();
    assert!(msg.contains("rule `mypack/huge`: stopped:") && msg.contains("string"), "{msg}");
    let e = d.seen_or_wait_for("throws reported", |e| rule_failed(e, "throws.rhai").is_some()).await;
    let msg = rule_failed(&e, "throws.rhai").unwrap();
    assert!(msg.starts_with(&format!("{}:2:1: ", pdir.join("throws.rhai").display())), "{msg}");
    assert!(msg.contains("rule `mypack/throws`: rule threw: boom from the rule"), "{msg}");
    let fired = record(d.seen_or_wait_for("canary alert", |e| is_alert(e, "firing", "mypack/canary", "canary")).await);
    assert_eq!(fired.summary, "the other rules still judge");
    // Warden keeps polling and judging: each poll reports the broken rules again, and the canary stays firing.
    let mark = d.seen.len();
    d.polls(3).await;
    d.wait_for("endless reported again", |e| rule_failed(e, "endless.rhai").is_some()).await;
    assert!(!d.seen[mark..].iter().any(|e| is_alert(e, "resolved", "mypack/canary", "canary")));
    let stats = d.stop().await;
    assert!(stats.rule_errors.load(std::sync::atomic::Ordering::Relaxed) >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_rule_is_stopped_by_the_wall_clock_limit() {
    let (fake, _) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    write_pack(dir.path(), "mypack", &[("endless", "loop { }\n"), ("canary", CANARY)]);
    let cfg =
        plugin_config(&fake.url(), json!({"scripts": {"max_operations": 1_000_000_000_000u64, "max_time": "300ms"}}));
    let mut d = Daemon::start_in(dir, cfg).await;
    let started = Instant::now();
    let e = d.wait_for("endless reported", |e| rule_failed(e, "endless.rhai").is_some()).await;
    let msg = rule_failed(&e, "endless.rhai").unwrap().to_string();
    assert!(msg.contains("exceeded the wall-clock limit of 300 ms"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped in time");
    d.seen_or_wait_for("canary alert", |e| is_alert(e, "firing", "mypack/canary", "canary")).await;
    d.wait_for("endless reported again", |e| rule_failed(e, "endless.rhai").is_some()).await;
    d.stop().await;
}

/// What is wrong with the JobManager in an error-kind test.
#[derive(Clone, Copy, Debug)]
enum Trouble {
    Down,
    Slow,
    Status500,
    LeaderElection,
    Html,
    Huge,
    Nested,
}

const KINDS: &str = "if !obs.ok {\n  alert(#{subject: \"jm\", summary: `kind=${obs.error.kind}`, details: #{message: obs.error.message}});\n}\n";

/// A custom rule sees `expected` as `obs.error.kind` while `trouble` lasts, the shipped jobmanager-unreachable rule
/// says `phrase`, job-not-running relaunches nothing meanwhile, and the alerts resolve once the JobManager answers
/// properly again: Warden kept polling throughout.
async fn error_kind(trouble: Trouble, expected: &str, phrase: &str) {
    let (fake, _) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let addr = fake.addr();
    let dir = tempfile::tempdir().unwrap();
    write_pack(dir.path(), "kinds", &[("kind", KINDS)]);
    let rec = dir.path().join("relaunches");
    let cfg = plugin_config(
        &fake.url(),
        json!({
            "pack_paths": [RULES_DIR, "plugins/*"],
            "targets": [{"name": "jm", "url": fake.url(), "timeout": "500ms"}],
            "commands": {"relaunch": recording_relaunch(&rec)},
            "packs": {"flink": {"every": "200ms", "params": {
                "expected_jobs": ["clicks"], "relaunch_command": "relaunch",
                "not_running_for": "200ms", "unreachable_polls": 2,
            }}},
        }),
    );
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    assert!(d.alert_log().is_empty());
    match trouble {
        Trouble::Down => tokio::time::timeout(WAIT, fake.shutdown_and_wait()).await.expect("fake stops"),
        Trouble::Slow => fake.set_delay(Duration::from_millis(1500)),
        Trouble::Status500 => fake.set_override(
            "/jobs/overview",
            500,
            "application/json",
            br#"{"errors":["Internal server error.","<Exception on server side: boom>"]}"#.to_vec(),
        ),
        Trouble::LeaderElection => fake.set_leader_election(true),
        Trouble::Html => fake.set_override(
            "/jobs/overview",
            200,
            "text/html",
            b"<!DOCTYPE html><html><body>Please log in</body></html>".to_vec(),
        ),
        // JSON nested 100,000 levels deep: refused before the parser, which recurses once per level, could run out
        // of stack and take the daemon down.
        Trouble::Nested => {
            let body = format!("{{\"jobs\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
            fake.set_override("/jobs/overview", 200, "application/json", body.into_bytes());
        }
        Trouble::Huge => {
            let mut body = b"{\"jobs\": [], \"pad\": \"".to_vec();
            body.resize(body.len() + 50 * 1024 * 1024, b'a');
            body.extend_from_slice(b"\"}");
            fake.set_override("/jobs/overview", 200, "application/json", body);
        }
    }
    let fired = record(d.wait_for("the kind alert", |e| is_alert(e, "firing", "kinds/kind", "jm")).await);
    assert_eq!(fired.summary, format!("kind={expected}"), "{trouble:?}: {:?}", fired.details);
    assert!(fired.details["message"].as_str().unwrap_or("").contains("target `jm` GET /jobs/overview"));
    let shipped = record(
        d.seen_or_wait_for("jobmanager-unreachable firing", |e| {
            is_alert(e, "firing", "flink/jobmanager-unreachable", "jm")
        })
        .await,
    );
    assert!(shipped.summary.starts_with(&format!("JobManager jm {phrase}: ")), "{trouble:?}: {}", shipped.summary);
    assert_eq!(shipped.details["kind"], expected);
    d.polls(4).await;
    assert!(invocations(&rec).is_empty(), "{trouble:?}: relaunched a job it could not see");
    let _back = match trouble {
        Trouble::Down => {
            let back = FakeJobManager::start_on(addr, FlinkApiVersion::V2).await.expect("restarts on the same port");
            back.submit("clicks");
            Some(back)
        }
        Trouble::Slow => {
            fake.set_delay(Duration::ZERO);
            None
        }
        Trouble::LeaderElection => {
            fake.set_leader_election(false);
            None
        }
        Trouble::Status500 | Trouble::Html | Trouble::Huge | Trouble::Nested => {
            fake.clear_overrides();
            None
        }
    };
    d.wait_for("the kind alert resolved", |e| is_alert(e, "resolved", "kinds/kind", "jm")).await;
    d.seen_or_wait_for("unreachable resolved", |e| is_alert(e, "resolved", "flink/jobmanager-unreachable", "jm")).await;
    d.wait_for("a good poll", |e| matches!(e, Event::Observed { error: None, .. })).await;
    d.polls(2).await;
    assert!(runs(&d.journal(), "clicks").is_empty(), "{trouble:?}: {:#?}", d.journal());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobmanager_down_is_error_kind_connect() {
    error_kind(Trouble::Down, "connect", "cannot be reached").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobmanager_slower_than_the_timeout_is_error_kind_timeout() {
    error_kind(Trouble::Slow, "timeout", "does not answer in time").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobmanager_answering_500_is_error_kind_http_status() {
    error_kind(Trouble::Status500, "http_status", "answers with an error").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobmanager_in_leader_election_is_error_kind_leader_election() {
    error_kind(Trouble::LeaderElection, "leader_election", "is in a leader election (HA fail-over in progress)").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobmanager_answering_html_is_error_kind_not_json() {
    error_kind(Trouble::Html, "not_json", "answers with something that is not JSON (a proxy or login page?)").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobmanager_answering_json_nested_100000_deep_is_error_kind_not_json() {
    error_kind(Trouble::Nested, "not_json", "answers with something that is not JSON (a proxy or login page?)").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobmanager_answering_50mb_is_error_kind_too_large() {
    error_kind(Trouble::Huge, "too_large", "answers with an error").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_job_name_reaches_the_command_as_one_literal_argument() {
    let evil = "clicks'; rm -rf ~; echo \"pwned\" $(touch pwned) `touch pwned2` && true";
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, evil).await;
    let dir = tempfile::tempdir().unwrap();
    // If the name ever reached a shell as code, `~` would be this sandbox, not the real home.
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("keep"), "still here").unwrap();
    let rec = dir.path().join("argv");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"record": {
                "argv": ["sh", "-c", "printf '%s\\n' \"$@\" '<end>' >> \"$0\"", rec, "{job}", "{jid}"],
                "env": {"HOME": home},
            }},
            "packs": {"flink": {"params": {"expected_jobs": [evil], "relaunch_command": "record"}}},
        }),
    );
    let workdir = dir.path().to_path_buf();
    let mut d = Daemon::start_in(dir, cfg).await;
    d.polls(2).await;
    fake.fail(&jid, "java.lang.RuntimeException", "bad name");
    let done = d.wait_for("the command ran", |e| matches!(e, Event::RunFinished { .. })).await;
    let Event::RunFinished { outcome, subject, .. } = done else { unreachable!() };
    assert_eq!(outcome, "ok");
    assert_eq!(subject, evil);
    assert_eq!(invocations(&rec), vec![vec![evil.to_string(), jid]], "one argument for the name, one for the jid");
    assert!(home.join("keep").exists(), "nothing was deleted");
    assert!(!workdir.join("pwned").exists() && !workdir.join("pwned2").exists(), "no command substitution ran");
    assert_eq!(runs(&d.journal(), evil).len(), 1);
    d.stop().await;
}

/// Runs `warden run` on a config whose relaunch command (for the missing job `slow`) writes `<dir>/marker.started`,
/// sleeps `sleep_s` seconds, then writes `<dir>/marker`; sends SIGTERM while it sleeps. Returns the exit status,
/// how long Warden took to exit after SIGTERM, the journal and the temp dir.
async fn sigterm_during_relaunch(
    sleep_s: u32,
    grace: &str,
) -> (std::process::ExitStatus, Duration, Vec<warden::store::JournalEntry>, tempfile::TempDir, Instant) {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let script = format!("touch \"$0.started\"; sleep {sleep_s}; echo done > \"$0\"");
    let cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"slow": {"argv": ["sh", "-c", script, marker], "timeout": "60s"}},
            "packs": {"flink": {"params": {"expected_jobs": ["slow"], "relaunch_command": "slow"}}},
            "shutdown_grace": grace,
        }),
    );
    let path = write_config(dir.path(), &cfg);
    let log = std::fs::File::create(dir.path().join("warden.log")).unwrap();
    let mut child = Command::new(WARDEN)
        .args(["run", "-c"])
        .arg(&path)
        .env("WARDEN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = dir.path().join("marker.started");
    eventually("the relaunch command to start", || started.exists()).await;
    let command_started = Instant::now();
    // SAFETY: signalling the child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let sent = Instant::now();
    let mut status = None;
    eventually("warden to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    let took = sent.elapsed();
    let journal = warden::store::Store::open(&dir.path().join("state")).unwrap().entries(None).unwrap();
    (status.unwrap(), took, journal, dir, command_started)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_relaunch_finish_within_the_grace_period() {
    let (status, _, journal, dir, _) = sigterm_during_relaunch(2, "20s").await;
    let log = std::fs::read_to_string(dir.path().join("warden.log")).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{log}");
    assert_eq!(std::fs::read_to_string(dir.path().join("marker")).unwrap_or_default(), "done\n", "{log}");
    let r = runs(&journal, "slow");
    assert_eq!(r.len(), 1, "{journal:#?}");
    assert_eq!(r[0].outcome, "ok", "{journal:#?}\n{log}");
    assert!(r[0].finished.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_kills_a_relaunch_that_outlasts_the_grace_period() {
    let (status, took, journal, dir, command_started) = sigterm_during_relaunch(3, "500ms").await;
    let log = std::fs::read_to_string(dir.path().join("warden.log")).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(took < Duration::from_millis(2500), "exited {took:?} after SIGTERM, the command sleeps 3s\n{log}");
    let r = runs(&journal, "slow");
    assert_eq!(r.len(), 1, "{journal:#?}");
    assert!(r[0].outcome.starts_with("interrupted: "), "{journal:#?}\n{log}");
    // The whole process group was killed: the command never gets to write its marker.
    let until = command_started + Duration::from_millis(3800);
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    assert!(!dir.path().join("marker").exists(), "the command outlived Warden");
}

const BASE: &str = "targets:\n  - name: jm\n    url: http://127.0.0.1:1\n";

#[test]
fn durations_longer_than_a_year_and_polls_faster_than_100ms_are_located_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (text, line, col, message) in [
        (format!("{BASE}dispatch:\n  storm_guard: {{window: 1000000y}}\n"), 5, 25, "longer than a year"),
        (format!("{BASE}notify:\n  group_wait: 300000y\n"), 5, 15, "longer than a year"),
        (
            format!("{BASE}probes:\n  - name: p\n    every: 0s\n    request: {{path: /x}}\n    rules: [x/y]\n"),
            6,
            12,
            "`every` must be at least 100ms",
        ),
        (
            format!("{BASE}probes:\n  - name: p\n    every: 50ms\n    request: {{path: /x}}\n    rules: [x/y]\n"),
            6,
            12,
            "`every` must be at least 100ms",
        ),
        (
            format!("pack_paths: [\"{RULES_DIR}\"]\n{BASE}packs:\n  flink:\n    every: 0s\n"),
            7,
            12,
            "`every` must be at least 100ms",
        ),
    ] {
        let p = problems(dir.path(), &text);
        assert!(
            p.iter().any(|x| x.starts_with(&at(dir.path(), line, col, "")) && x.contains(message)),
            "{text}\n=> {p:#?}"
        );
    }
    // A pack parameter of type duration, too.
    let text =
        format!("pack_paths: [\"{RULES_DIR}\"]\n{BASE}packs:\n  flink:\n    params: {{not_running_for: 9999999y}}\n");
    let p = problems(dir.path(), &text);
    assert!(p.iter().any(|x| x.contains("not_running_for") && x.contains("longer than a year")), "{p:#?}");
}

#[test]
fn commands_with_unknown_placeholders_or_placeholders_in_a_shell_script_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{BASE}commands:\n  a:\n    argv: [flink, run, \"/jobs/{{jbo}}.jar\"]\n  b:\n    argv: [sh, -c, \"flink run {{job}}\"]\n  c:\n    argv: [sh, -c, 'flink run \"$1\"', sh, \"{{job}}\", \"{{cluster}}\"]\n    placeholders: [cluster]\n"
    );
    let p = problems(dir.path(), &text);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with(&at(dir.path(), 6, 24, ""))
            && p[0].contains("unknown placeholder `{jbo}` (did you mean `{job}`?)"),
        "{p:#?}"
    );
    assert!(p[1].starts_with(&at(dir.path(), 8, 20, "")) && p[1].contains("inside a shell script"), "{p:#?}");
}

#[test]
fn bad_header_names_empty_files_and_unusable_state_dirs_are_caught_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let p = problems(dir.path(), &format!("{BASE}    headers: {{\"Bad Header\": x}}\n"));
    assert_eq!(p, [at(dir.path(), 4, 15, "target `jm`: `Bad Header` is not a valid HTTP header name")]);
    let p = problems(dir.path(), "  \n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("the configuration is empty"), "{p:?}");
    std::fs::write(dir.path().join("afile"), "").unwrap();
    let p = problems(dir.path(), &format!("state_dir: afile/state\n{BASE}"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with(&at(dir.path(), 1, 12, "")) && p[0].contains("is not a directory"), "{p:?}");
}

#[test]
fn check_no_environment_validates_the_shipped_examples_without_their_secrets() {
    let examples: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(examples.len() >= 3);
    let out = Command::new(WARDEN)
        .args(["check", "--no-environment"])
        .args(&examples)
        .env_remove("FLINK_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches(": ok (").count(), examples.len(), "{text}");
    // With the environment, the same files need their secrets (and say which).
    let out = Command::new(WARDEN).args(["check"]).args(&examples).env_remove("FLINK_TOKEN").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("environment variable `FLINK_TOKEN` is not set"));
}

#[test]
fn silence_for_longer_than_a_year_is_a_usage_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("warden.yaml");
    std::fs::write(&cfg, BASE).unwrap();
    for d in ["300000y", "8000y"] {
        let out = Command::new(WARDEN)
            .arg("--config")
            .arg(&cfg)
            .args(["silence", "add", "--match", "job=x", "--for", d])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("longer than a year") && !err.contains("panicked"), "{err}");
    }
}

#[test]
fn read_only_commands_need_none_of_the_daemons_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("warden.yaml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir: state\npack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - name: jm\n    url: http://127.0.0.1:1\n    auth: {{bearer: \"${{WARDEN_TEST_UNSET_TOKEN}}\"}}\n    headers: {{X-Key: \"file:/nonexistent/secret\"}}\nnotify:\n  channels:\n    chat: {{type: slack, webhook_url: \"${{WARDEN_TEST_UNSET_SLACK}}\"}}\n"
        ),
    )
    .unwrap();
    warden::store::Store::open(&dir.path().join("state")).unwrap();
    let input = dir.path().join("overview.json");
    std::fs::write(&input, r#"{"jobs": []}"#).unwrap();
    let rec = dir.path().join("rec.jsonl");
    std::fs::write(&rec, "").unwrap();
    let runs: Vec<Vec<std::ffi::OsString>> = vec![
        vec!["history".into()],
        vec!["history".into(), "--restarts".into()],
        vec!["silence".into(), "list".into()],
        vec!["pack".into(), "list".into()],
        vec!["test".into()],
        vec!["eval".into(), "--rule".into(), "flink/job-not-running".into(), "--input".into(), input.clone().into()],
        vec!["replay".into(), rec.clone().into()],
    ];
    for args in runs {
        let out = Command::new(WARDEN)
            .arg("--config")
            .arg(&cfg)
            .args(&args)
            .env_remove("WARDEN_TEST_UNSET_TOKEN")
            .env_remove("WARDEN_TEST_UNSET_SLACK")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "warden {args:?}: {err}{}", String::from_utf8_lossy(&out.stdout));
        assert!(!err.contains("is not set") && !err.contains("nonexistent"), "warden {args:?}: {err}");
    }
    // `check` does need them, and says which.
    let out = Command::new(WARDEN)
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .env_remove("WARDEN_TEST_UNSET_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WARDEN_TEST_UNSET_TOKEN"));
}

#[test]
fn check_reports_configuration_and_pack_parameter_problems_together() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "pack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - name: jm\n    url: http://127.0.0.1:1\n    timout: 2s\npacks:\n  flink:\n    params:\n      expected_job: [clicks]\n"
    );
    let p = problems(dir.path(), &text);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(p[0].starts_with(&at(dir.path(), 5, 5, "unknown field `timout`")), "{p:#?}");
    assert!(p[1].starts_with(&at(dir.path(), 9, 7, "")) && p[1].contains("did you mean `expected_jobs`"), "{p:#?}");
}

#[test]
fn restart_job_relaunches_need_a_jobs_entry_for_every_expected_job() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "pack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - name: jm\n    url: http://127.0.0.1:1\njobs:\n  clicks: {{jar: {{name: clicks.jar}}}}\npacks:\n  flink:\n    params:\n      expected_jobs: [clicks, orders]\n      relaunch_mode: restart_job\n"
    );
    let p = problems(dir.path(), &text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert!(p[0].starts_with(&at(dir.path(), 11, 22, "")) && p[0].contains("needs a `jobs.orders` entry"), "{p:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_command_name_not_under_commands_is_a_located_rule_error() {
    let (fake, _) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let pdir = write_pack(
        dir.path(),
        "mypack",
        &[("typo", "let job = \"clicks\";\nif obs.ok {\n    run(\"relaunh\", #{job: job});\n}\n"), ("canary", CANARY)],
    );
    let cfg = plugin_config(&fake.url(), json!({"commands": {"relaunch": {"argv": ["true"]}}}));
    let mut d = Daemon::start_in(dir, cfg).await;
    let e = d.wait_for("the typo reported", |e| rule_failed(e, "typo.rhai").is_some()).await;
    let msg = rule_failed(&e, "typo.rhai").unwrap();
    let want = format!("{}:3:5: rule `mypack/typo`: ", pdir.join("typo.rhai").display());
    assert!(msg.starts_with(&want), "{msg:?} does not start with {want:?}");
    assert!(msg.ends_with("run(): no command named `relaunh` under `commands:`, did you mean `relaunch`?"), "{msg}");
    d.seen_or_wait_for("canary alert", |e| is_alert(e, "firing", "mypack/canary", "canary")).await;
    d.polls(2).await;
    assert!(runs(&d.journal(), "clicks").is_empty(), "nothing was journalled to run: {:#?}", d.journal());
    d.stop().await;
}

/// `warden run -c <dir>/warden.yaml`, logging to `<dir>/<log>`.
fn spawn_warden(dir: &Path, log: &str) -> std::process::Child {
    let log = std::fs::File::create(dir.join(log)).unwrap();
    Command::new(WARDEN)
        .args(["run", "-c"])
        .arg(dir.join("warden.yaml"))
        .env("WARDEN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// A config whose relaunch command `slow` (for the missing job `slow`) writes its pid to `<dir>/marker.started`,
/// sleeps `sleep_s` seconds, then writes `<dir>/marker`.
fn slow_relaunch_config(dir: &Path, url: &str, sleep_s: u32, grace: &str) -> serde_json::Value {
    let script = format!("echo $$ > \"$0.started\"; sleep {sleep_s}; echo done > \"$0\"");
    flink_config(
        url,
        json!({
            "commands": {"slow": {"argv": ["sh", "-c", script, dir.join("marker")], "timeout": "60s"}},
            "packs": {"flink": {"params": {"expected_jobs": ["slow"], "relaunch_command": "slow"}}},
            "shutdown_grace": grace,
        }),
    )
}

/// Waits for the relaunch command of [`slow_relaunch_config`] to start; returns its pid.
async fn command_pid(dir: &Path) -> i32 {
    let started = dir.join("marker.started");
    let mut pid = None;
    eventually("the relaunch command to start", || {
        pid = std::fs::read_to_string(&started).ok().and_then(|s| s.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.unwrap()
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: signalling a child we spawned.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

async fn exit_of(child: &mut std::process::Child) -> std::process::ExitStatus {
    let mut status = None;
    eventually("warden to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    })
    .await;
    status.unwrap()
}

fn journal_of(dir: &Path) -> Vec<warden::store::JournalEntry> {
    warden::store::Store::open(&dir.join("state")).unwrap().entries(None).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_kills_running_commands_and_exits_at_once() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &slow_relaunch_config(dir.path(), &fake.url(), 4, "30s"));
    let mut child = spawn_warden(dir.path(), "warden.log");
    command_pid(dir.path()).await;
    let command_started = Instant::now();
    signal(&child, libc::SIGTERM);
    // The first signal is being handled (two at once could arrive as one): the graceful shutdown has begun.
    let log = dir.path().join("warden.log");
    eventually("the graceful shutdown", || std::fs::read_to_string(&log).unwrap_or_default().contains("shutting down"))
        .await;
    signal(&child, libc::SIGINT);
    let sent = Instant::now();
    let status = exit_of(&mut child).await;
    let took = sent.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{status:?}\n{text}");
    assert!(took < Duration::from_millis(2500), "exited {took:?} after the second signal (grace 30s)\n{text}");
    let journal = journal_of(dir.path());
    let r = runs(&journal, "slow");
    assert_eq!(r.len(), 1, "{journal:#?}");
    assert!(r[0].outcome.starts_with("interrupted: "), "{journal:#?}\n{text}");
    assert!(r[0].finished.is_some());
    // Its whole process group was killed: the command never gets to write its marker.
    tokio::time::sleep((command_started + Duration::from_millis(4800)).saturating_duration_since(Instant::now())).await;
    assert!(!dir.path().join("marker").exists(), "the command outlived Warden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_still_running_after_warden_was_killed_is_journalled_as_such_and_followed_not_rerun() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &slow_relaunch_config(dir.path(), &fake.url(), 4, "5s"));
    let mut first = spawn_warden(dir.path(), "first.log");
    let pid = command_pid(dir.path()).await;
    signal(&first, libc::SIGKILL);
    first.wait().unwrap();
    let mut second = spawn_warden(dir.path(), "second.log");
    let still = format!("interrupted: warden stopped while it ran; pid {pid} was still running when Warden came back");
    let outcome = || runs(&journal_of(dir.path()), "slow").first().map(|e| e.outcome.clone()).unwrap_or_default();
    eventually("the run journalled as still running", || outcome() == still).await;
    assert!(!dir.path().join("marker").exists(), "checked while the command still ran");
    // Warden leaves it running and follows it: when it ends, the entry says so.
    eventually("the command to end", || dir.path().join("marker").exists()).await;
    eventually("its end journalled", || outcome() != still).await;
    let o = outcome();
    assert!(o.starts_with(&format!("{still}; it ended at ")) && o.ends_with(" (exit status unknown)"), "{o}");
    signal(&second, libc::SIGTERM);
    let status = exit_of(&mut second).await;
    assert!(status.success(), "{status:?}");
    let journal = journal_of(dir.path());
    assert_eq!(runs(&journal, "slow").len(), 1, "never run a second time: {journal:#?}");
    let process = &runs(&journal, "slow")[0].details["process"];
    assert_eq!((process["pid"].as_i64(), process["pgid"].as_i64()), (Some(pid.into()), Some(pid.into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ended_while_warden_was_down_is_journalled_as_such() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &slow_relaunch_config(dir.path(), &fake.url(), 30, "5s"));
    let mut first = spawn_warden(dir.path(), "first.log");
    let pid = command_pid(dir.path()).await;
    signal(&first, libc::SIGKILL);
    first.wait().unwrap();
    // SAFETY: the command's own process group (it leads it), which outlived the Warden that started it.
    assert_eq!(unsafe { libc::kill(-pid, libc::SIGKILL) }, 0);
    let gone = || {
        // SAFETY: signal 0 only checks existence. A zombie still exists: look at its state too.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(false);
        !exists || zombie
    };
    eventually("the command to be gone", gone).await;
    let mut second = spawn_warden(dir.path(), "second.log");
    let want = format!(
        "interrupted: warden stopped while it ran; pid {pid} ended while Warden was down (exit status unknown)"
    );
    let outcome = || runs(&journal_of(dir.path()), "slow").first().map(|e| e.outcome.clone()).unwrap_or_default();
    eventually("the run journalled as ended while Warden was down", || outcome() == want).await;
    signal(&second, libc::SIGTERM);
    assert!(exit_of(&mut second).await.success());
    assert_eq!(runs(&journal_of(dir.path()), "slow").len(), 1);
}
