//! Probes that fan out over the jobs of a target (`for_each: job`), against the fake JobManager with 500 jobs.

use std::collections::HashMap;

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::json;
use warden::event::Event;
use warden::store::Store;

use crate::support::*;

const RULE: &str = "fan/per-job";

/// Counts each job's polls in its own state, checks that `obs.job` is the job the answer is about, and alerts
/// about one job only.
const PER_JOB: &str = r#"
state.n = (state.n ?? 0) + 1;
state.jid = obs.job.jid;
state.name = obs.job.name;
state.path_ok = obs.ok && obs.body.counts != ();
if obs.job.name == "job-007" {
    alert(#{subject: obs.job.name, summary: "job-007 is watched"});
}
"#;

/// A pack `fan` whose probe polls `/jobs/{jid}/checkpoints` of every RUNNING job, 4 at a time.
fn fan_out_pack(dir: &std::path::Path, every: &str) {
    let pdir = dir.join("plugins").join("fan");
    std::fs::create_dir_all(&pdir).unwrap();
    let manifest = format!(
        "name: fan\nversion: 0.1.0\nprobes:\n  - name: checkpoints\n    every: {every}\n    for_each: {{over: job, concurrency: 4}}\n    request: {{path: \"/jobs/{{jid}}/checkpoints\"}}\n    rules: [per-job]\n"
    );
    std::fs::write(pdir.join("pack.yaml"), manifest).unwrap();
    std::fs::write(pdir.join("per-job.rhai"), PER_JOB).unwrap();
}

async fn fake_with_jobs(n: usize) -> (FakeJobManager, HashMap<String, String>) {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.expect("fake JobManager starts");
    let jobs = (0..n).map(|i| format!("job-{i:03}")).map(|name| (fake.submit(&name), name)).collect();
    (fake, jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_probe_polls_500_jobs_each_once_per_tick_within_its_concurrency() {
    let (fake, jobs) = fake_with_jobs(500).await;
    // Each answer takes 2 ms, so that requests overlap and the limit is what holds them back.
    fake.set_delay(std::time::Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    fan_out_pack(dir.path(), "1s");
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "5s"}],
        "shutdown_grace": "5s",
    });
    let mut d = Daemon::start_in(dir, cfg).await;
    d.wait_for("job-007's alert", |e| is_alert(e, "firing", RULE, "job-007")).await;
    d.polls(1).await;
    assert!(fake.take_max_in_flight() <= 4, "at most 4 requests in flight");
    d.polls(1).await;
    let max = fake.take_max_in_flight();
    assert!((2..=4).contains(&max), "the probe uses its concurrency but never more: {max} in flight at most");

    // A job that stops running leaves the ticks: its alert resolves; the other jobs' ticks go on.
    let jid7 = jobs.iter().find(|(_, n)| *n == "job-007").map(|(j, _)| j.clone()).unwrap();
    fake.cancel(&jid7);
    d.wait_for("job-007's alert resolves", |e| is_alert(e, "resolved", RULE, "job-007")).await;
    d.polls(1).await;

    // Between two ticks (answers judged, the next tick not begun), every job's state counts exactly its polls.
    let check = |d: &Daemon| -> Result<usize, String> {
        let states = Store::open(&d.state_dir).and_then(|s| s.job_rule_states()).map_err(|e| e.to_string())?;
        let log = fake.request_log();
        if states.len() != 500 {
            return Err(format!("{} states, not one per job", states.len()));
        }
        let mut per_tick = None;
        for (jid, name) in &jobs {
            let key = warden::store::RuleStateKey { rule: RULE.into(), target: "jm".into(), job: Some(name.clone()) };
            let s = &states[&key];
            assert_eq!(s["jid"], json!(jid), "obs.job is the job the answer is about");
            assert_eq!(s["name"], json!(name));
            assert_eq!(s["path_ok"], json!(true), "{name}: the path was filled and answered");
            let polled = log.iter().filter(|r| **r == format!("GET /jobs/{jid}/checkpoints")).count();
            if s["n"] != json!(polled) {
                return Err(format!("{name}: judged {} times, polled {polled} times", s["n"]));
            }
            if name != "job-007" && *per_tick.get_or_insert(polled) != polled {
                return Err(format!("{name}: polled {polled} times, not {per_tick:?} like the others"));
            }
        }
        Ok(per_tick.unwrap_or(0))
    };
    eventually("every job judged once per poll, polled once per tick", || check(&d).is_ok()).await;
    let polled_each = check(&d).unwrap();
    let log = fake.request_log();
    let overviews = log.iter().filter(|r| *r == "GET /jobs/overview").count();
    // No overview probe on this target: one fetch of the job list per tick (the next tick may have begun).
    assert!((polled_each..=polled_each + 1).contains(&overviews), "{overviews} overviews for {polled_each} ticks");
    let seen = d.seen.clone();
    d.stop().await;
    assert!(!seen.iter().any(|e| matches!(e, Event::RuleFailed { .. })), "{seen:#?}");
    let fired = seen.iter().filter(|e| is_alert(e, "firing", RULE, "job-007")).count();
    assert_eq!(fired, 1, "one alert for job-007, not resolved by the other jobs' evaluations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_list_comes_from_the_targets_own_overview_probe_when_it_is_fresh() {
    let (fake, _) = fake_with_jobs(20).await;
    let dir = tempfile::tempdir().unwrap();
    fan_out_pack(dir.path(), "500ms");
    write_pack(dir.path(), "ov", &[("quiet", "1;")]); // `ov/p` polls /jobs/overview every 200 ms
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": ["plugins/*"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "5s"}],
    });
    let mut d = Daemon::start_in(dir, cfg).await;
    let fan_ticks = |d: &Daemon| {
        d.seen.iter().filter(|e| matches!(e, Event::Observed { probe, .. } if probe == "fan/checkpoints")).count()
    };
    while fan_ticks(&d) < 4 {
        d.polls(1).await;
    }
    let overview_polls =
        d.seen.iter().filter(|e| matches!(e, Event::Observed { probe, .. } if probe == "ov/p")).count();
    let fetched = fake.request_log().iter().filter(|r| *r == "GET /jobs/overview").count();
    // Every /jobs/overview request is the overview probe's (one may be in flight); the fan-out asked for none.
    assert!((overview_polls..=overview_polls + 1).contains(&fetched), "{fetched} fetched, {overview_polls} by ov/p");
    let polled = fake.request_log().iter().filter(|r| r.ends_with("/checkpoints")).count();
    assert!(polled >= 4 * 20, "{polled} job polls in 4 ticks of 20 jobs");
    d.stop().await;
}

/// `warden run` as a child process on a fan-out pack (every `every`) over the fake's jobs, with its HTTP server on
/// a free port; returns the child (killed on drop) and the port.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_warden(dir: &std::path::Path, fake: &FakeJobManager, every: &str) -> (Child, u16) {
    fan_out_pack(dir, every);
    run_warden(dir, fake, json!({"pack_paths": ["plugins/*"]}))
}

/// `warden run` on `fake` (target `jm`) with its server on a free port, `extra` merged into the configuration.
fn run_warden(dir: &std::path::Path, fake: &FakeJobManager, extra: serde_json::Value) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cfg = json!({
        "state_dir": "state",
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "5s"}],
        "server": {"listen": format!("127.0.0.1:{port}")},
    });
    merge(&mut cfg, extra);
    let path = write_config(dir, &cfg);
    let child = std::process::Command::new(WARDEN)
        .args(["run", "-c"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    (Child(child), port)
}

/// The status API's rows of the fan-out probe (`None` while the server is not up).
async fn fan_out_rows(port: u16) -> Option<Vec<serde_json::Value>> {
    probe_rows(port, "fan/checkpoints").await
}

/// The status API's rows of `probe` (`None` while the server is not up).
async fn probe_rows(port: u16, probe: &str) -> Option<Vec<serde_json::Value>> {
    let v: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{port}/api/status")).await.ok()?.json().await.ok()?;
    Some(v["probes"].as_array()?.iter().filter(|p| p["probe"] == probe).cloned().collect())
}

/// Warden with the shipped Flink pack on `fake`, every probe every `every`, with the rules of `job-vertices` and
/// `cluster-overview` off: `jobs-overview` and the per-job `job-checkpoints` (six rules) run.
fn spawn_warden_shipped(dir: &std::path::Path, fake: &FakeJobManager, every: &str) -> (Child, u16) {
    let off = ["backpressure", "source-lag", "cluster-capacity"];
    run_warden(
        dir,
        fake,
        json!({"pack_paths": [RULES_DIR], "packs": {"flink": {"every": every, "disabled_rules": off}}}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_shows_one_row_per_probe_and_target_with_the_last_ticks_jobs() {
    let (fake, jobs) = fake_with_jobs(30).await;
    let dir = tempfile::tempdir().unwrap();
    let (_child, port) = spawn_warden(dir.path(), &fake, "300ms");
    let mut rows = vec![];
    for _ in 0..200 {
        rows = fan_out_rows(port).await.unwrap_or_default();
        if rows.first().is_some_and(|r| r["runs"].as_u64() >= Some(2)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(rows.len(), 1, "one row for 30 jobs: {rows:#?}");
    let row = &rows[0];
    assert_eq!(row["fan_out"]["jobs"], json!(30), "{row}");
    assert_eq!(row["fan_out"]["failed"], json!(0), "{row}");
    assert_eq!(row["schedule"], json!("every 300ms, per RUNNING job, 4 at a time"));
    assert!(row["fan_out"]["polls"].as_u64() >= Some(60), "{row}");

    // Polls that fail are counted in the tick's row, with the first one's error.
    let jid = jobs.keys().next().unwrap();
    fake.set_override(
        &format!("/jobs/{jid}/checkpoints"),
        500,
        "application/json",
        b"{\"errors\": [\"boom\"]}".to_vec(),
    );
    let mut row = serde_json::Value::Null;
    for _ in 0..100 {
        row = fan_out_rows(port).await.and_then(|r| r.first().cloned()).unwrap_or_default();
        if row["fan_out"]["failed"] == json!(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(row["fan_out"]["failed"], json!(1), "{row}");
    let err = row["last_error"].as_str().unwrap_or_default();
    assert!(err.starts_with("1 of 30 job polls failed; job `"), "{err}");
}

/// The figures of one fan-out probe over 500 jobs on loopback, with the `warden` binary as a separate process (so
/// that its CPU time is its own): wall time of a tick (the status API's `last_duration_ms`), CPU time of the
/// daemon per tick (`/proc/<pid>/stat`), and the requests per tick. Run with
/// `cargo test --test integration fan_out_figures -- --ignored --nocapture` (a debug build unless `--release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run by hand"]
async fn fan_out_figures_for_500_jobs() {
    figures_for_500_jobs(false).await;
}

/// The same figures with the shipped pack's `job-checkpoints` probe and its six rules (plus `jobs-overview`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "prints figures; run by hand"]
async fn shipped_checkpoint_rules_figures_for_500_jobs() {
    figures_for_500_jobs(true).await;
}

async fn figures_for_500_jobs(shipped: bool) {
    let (fake, _) = fake_with_jobs(500).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, port) =
        if shipped { spawn_warden_shipped(dir.path(), &fake, "2s") } else { spawn_warden(dir.path(), &fake, "2s") };
    let probe = if shipped { "flink/job-checkpoints" } else { "fan/checkpoints" };
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0 // USER_HZ
    };
    let status = || async { probe_rows(port, probe).await.and_then(|r| r.first().cloned()) };
    // Warm up: the first tick (connections, rule compilation caches).
    let mut row = None;
    for _ in 0..100 {
        row = status().await.filter(|p| p["runs"].as_u64() >= Some(1));
        if row.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first = row.expect("a first tick").clone();
    let pid = child.0.id();
    let (cpu0, runs0) = (cpu(pid), first["runs"].as_u64().unwrap());
    let requests0 = fake.request_log().len();
    let mut walls = vec![];
    let mut last_runs = runs0;
    while last_runs < runs0 + 5 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if let Some(p) = status().await {
            let runs = p["runs"].as_u64().unwrap();
            if runs > last_runs {
                walls.push(p["last_duration_ms"].as_u64().unwrap());
                assert_eq!(p["fan_out"]["jobs"], json!(500), "{p}");
                last_runs = runs;
            }
        }
    }
    let ticks = last_runs - runs0;
    let cpu_per_tick = (cpu(pid) - cpu0) / ticks as f64;
    let requests = fake.request_log().len() - requests0;
    drop(child);
    let per_tick = requests as f64 / ticks as f64;
    println!(
        "{probe} over 500 jobs, concurrency 4, loopback: tick wall time {walls:?} ms; daemon CPU per tick {:.0} ms; \
         {per_tick:.1} requests per tick ({requests} in {ticks} ticks), so {:.0} requests a minute at every 30s",
        cpu_per_tick * 1000.0,
        per_tick * 2.0
    );
}
