//! `warden demo`: the embedded default. A fake JobManager on a loopback port runs a job named `clicks`; Warden
//! watches it with the shipped Flink pack; the job fails; Warden detects it, reads the root cause, relaunches the
//! job with a real command (`warden demo-relaunch`, an argument vector with placeholders) and sees it recover.
//! Nothing outside this process and its child command is needed.

use std::io::Write;
use std::time::{Duration, Instant};

use fake_flink::{FakeJobManager, FlinkApiVersion};
use warden::event::{Event, Events};
use warden::plan::{self, PackSource};
use warden::runtime::{self, RunOptions};
use warden::script::ScriptEngine;
use warden::store::Store;

/// Why the demo could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Local I/O (temp dir, fake server).
    #[error("demo: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded configuration did not load (a bug).
    #[error("demo: embedded configuration: {0}")]
    Config(String),
    /// The daemon failed.
    #[error("demo: {0}")]
    Runtime(#[from] runtime::RuntimeError),
    /// The journal could not be read.
    #[error("demo: {0}")]
    Store(#[from] warden::store::StoreError),
    /// A REST call of the relaunch helper failed.
    #[error("relaunch: {0}")]
    Rest(String),
}

const JOB: &str = "clicks";
const CAUSE_CLASS: &str = "java.lang.IllegalStateException";
const CAUSE_MSG: &str = "Kafka partition clicks-3 has no leader (broker 2 unreachable)";

/// Runs the demo, telling the story on `out`. `Ok(true)` when the loop closed (failure detected, explained,
/// relaunched, recovered) within `timeout`.
pub async fn run(timeout: Duration, out: &mut dyn Write) -> Result<bool, DemoError> {
    let started = Instant::now();
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await?;
    fake.add_jar("clicks.jar", "demo.Clicks", JOB);
    let first_jid = fake.submit(JOB);
    let dir = std::env::temp_dir().join(format!("warden-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let exe = std::env::current_exe()?;
    let config = format!(
        r#"
state_dir: {state}
targets:
  - name: demo-jobmanager
    url: {url}
    labels: {{kind: flink}}
    timeout: 2s
commands:
  relaunch:
    argv: [{exe}, demo-relaunch, "{{target_url}}", "{{job}}"]
    timeout: 30s
packs:
  flink:
    every: 1s
    params:
      expected_jobs: [{JOB}]
      relaunch_command: relaunch
      not_running_for: 2s
      settle_time: 3s
      unreachable_polls: 2
shutdown_grace: 5s
"#,
        state = serde_json::to_string(&dir.join("state")).unwrap_or_default(),
        url = fake.url(),
        exe = serde_json::to_string(&exe).unwrap_or_default(),
    );
    let config_path = dir.join("warden.yaml");
    std::fs::write(&config_path, &config)?;
    let loaded = warden::config::load(&config_path).map_err(|d| DemoError::Config(d.to_string()))?;
    let engine = ScriptEngine::new(&loaded.config.scripts);
    let plan = plan::build(loaded, PackSource::Files(vec![warden::pack::embedded_flink_pack()]), &engine)
        .map_err(|d| DemoError::Config(d.to_string()))?;
    let state_dir = plan.loaded.config.state_dir.clone();

    let say = |out: &mut dyn Write, s: String| {
        let _ = writeln!(out, "[{:>5.1}s] {s}", started.elapsed().as_secs_f64());
        let _ = out.flush();
    };
    let _ = writeln!(out, "Warden demo: a fake Flink JobManager at {} runs job `{JOB}` ({first_jid}).", fake.url());
    let _ = writeln!(
        out,
        "Warden watches it with the shipped Flink pack ({} rules), polling every second.\n",
        plan.rules.len()
    );

    let events = Events::default();
    let mut rx = events.subscribe();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions { events: events.clone(), ..Default::default() };
    let daemon = tokio::spawn(runtime::run(plan, engine, opts, async {
        let _ = stop_rx.await;
    }));

    let deadline = tokio::time::Instant::now() + timeout;
    let mut broke = false;
    let (mut detected, mut relaunched, mut recovered) = (false, false, false);
    let mut healthy_polls = 0;
    while !recovered {
        let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => break,
        };
        match ev {
            Event::Observed { error: None, .. } if !broke => {
                healthy_polls += 1;
                if healthy_polls == 1 {
                    say(out, format!("poll: job `{JOB}` is RUNNING, all tasks up. All is well."));
                }
                if healthy_polls == 3 {
                    say(out, format!("BREAK: job `{JOB}` now fails for good: {CAUSE_CLASS}: {CAUSE_MSG}"));
                    fake.fail(&first_jid, CAUSE_CLASS, CAUSE_MSG);
                    broke = true;
                }
            }
            Event::Observed { error: Some(e), .. } => say(out, format!("poll failed: {e}")),
            Event::RuleFailed { error } => say(out, format!("rule error: {error}")),
            Event::Alert(a) if a.subject == JOB && a.event == "firing" => {
                detected = true;
                say(out, format!("DETECTED by {}: {}", a.rule, a.summary));
                if let Some(c) = a.details.get("root_cause").and_then(|c| c.as_str()) {
                    say(out, format!("ROOT CAUSE (from /jobs/{first_jid}/exceptions): {c}"));
                }
            }
            Event::RunStarted { command, argv, .. } => {
                say(out, format!("RELAUNCH: command `{command}` runs {argv:?} (each placeholder is one argument)"));
            }
            Event::RunFinished { command, outcome, output, .. } => {
                relaunched = outcome == "ok";
                say(out, format!("command `{command}` finished: {outcome}; output: {}", output.trim()));
            }
            Event::Alert(a) if a.subject == JOB && a.event == "resolved" => {
                let now_running = fake.jobs_named(JOB).into_iter().find(|(_, s)| s == "RUNNING").map(|(j, _)| j);
                say(out, format!("RECOVERED: job `{JOB}` is running again as {}", now_running.unwrap_or_default()));
                recovered = true;
            }
            Event::Alert(a) => say(out, format!("{} ({}): {}", a.event, a.rule, a.summary)),
            _ => {}
        }
    }
    let _ = stop_tx.send(());
    let _ = daemon.await;
    fake.shutdown();

    let _ = writeln!(out, "\nThe journal (`warden history`):");
    let store = Store::open(&state_dir)?;
    for e in store.entries(None)? {
        let _ = writeln!(
            out,
            "  {} {:<9} {:<24} {:<8} {:<10} {}",
            e.time, e.action, e.rule, e.subject, e.outcome, e.summary
        );
    }
    let ok = detected && relaunched && recovered;
    if ok {
        let _ = writeln!(
            out,
            "\nThe loop closed in {:.1}s: detected, explained, relaunched, recovered.",
            started.elapsed().as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        let _ = writeln!(
            out,
            "\nThe loop did NOT close within {timeout:?}: detected={detected} relaunched={relaunched} recovered={recovered}. State kept in {}",
            dir.display()
        );
    }
    Ok(ok)
}

/// Resubmits `<job>.jar` on the JobManager at `url` over REST (`GET /jars`, `POST /jars/:id/run` with
/// `programArgsList`). Returns the new job id. This is what the demo's relaunch command does.
pub async fn relaunch_over_rest(url: &str, job: &str) -> Result<String, DemoError> {
    let base = url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| DemoError::Rest(e.to_string()))?;
    let jars: serde_json::Value = client
        .get(format!("{base}/jars"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| DemoError::Rest(format!("GET /jars: {}", e.without_url())))?
        .json()
        .await
        .map_err(|e| DemoError::Rest(format!("GET /jars: {e}")))?;
    let want = format!("{job}.jar");
    let id = jars["files"]
        .as_array()
        .and_then(|f| f.iter().find(|j| j["name"] == want.as_str()))
        .and_then(|j| j["id"].as_str())
        .ok_or_else(|| DemoError::Rest(format!("no jar named `{want}` on the JobManager")))?;
    let resp: serde_json::Value = client
        .post(format!("{base}/jars/{id}/run"))
        .json(&serde_json::json!({"programArgsList": []}))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| DemoError::Rest(format!("POST /jars/{id}/run: {}", e.without_url())))?
        .json()
        .await
        .map_err(|e| DemoError::Rest(format!("POST /jars/{id}/run: {e}")))?;
    resp["jobid"].as_str().map(str::to_string).ok_or_else(|| DemoError::Rest(format!("no jobid in {resp}")))
}
