//! Warden's own HTTP server against the real daemon watching the fake JobManager: health, readiness, every metric
//! read back by a Prometheus text parser, the status API, the history filters, `POST /-/reload`, the bearer
//! token, no secret in any answer; the status page in a real headless Chromium; the systemd unit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fake_flink::FlinkApiVersion;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use warden::runtime::{self, ReloadSource, RunOptions, RuntimeError, StatusHandle};

use crate::support::*;

const TOKEN: &str = "s3cr3t-server-token";
/// Every secret the configuration holds: none may appear in any answer.
const SECRETS: &[&str] = &[TOKEN, "s3cr3t-target-token", "s3cr3t-header", "s3cr3t-url-pass", "s3cr3t-env"];

/// The daemon, in process, with its server on a free loopback port.
struct Served {
    _dir: tempfile::TempDir,
    config: PathBuf,
    status: StatusHandle,
    base: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<Arc<runtime::Stats>, RuntimeError>>>,
}

impl Served {
    async fn start(cfg: &Value) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = write_config(dir.path(), cfg);
        let (plan, engine) = warden::plan::load(&config, None).unwrap_or_else(|d| panic!("config does not load:\n{d}"));
        let status = StatusHandle::new();
        let (tx, rx) = oneshot::channel::<()>();
        let opts = RunOptions {
            status: status.clone(),
            serve: true,
            reload: Some(ReloadSource { config: config.clone() }),
            ..Default::default()
        };
        let task = tokio::spawn(runtime::run(plan, engine, opts, async move {
            let _ = rx.await;
        }));
        eventually("the server listens", || status.server_addr().is_some() || task.is_finished()).await;
        let addr = status.server_addr().expect("the server started");
        Served {
            _dir: dir,
            config,
            status,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// GET with the token; returns status and body, and checks the body holds no secret.
    async fn get(&self, path: &str) -> (u16, String) {
        self.call(self.http.get(format!("{}{path}", self.base)).bearer_auth(TOKEN)).await
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> (u16, String) {
        let r = req.send().await.expect("the server answers");
        let code = r.status().as_u16();
        let body = r.text().await.expect("a body");
        for s in SECRETS {
            assert!(!body.contains(s), "a secret (`{s}`) leaked into an answer:\n{body}");
        }
        (code, body)
    }

    async fn json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).await;
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))
    }

    /// Waits (polling the API, at most [`WAIT`]) until `f` holds for `/api/status`.
    async fn status_until(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.json("/api/status").await;
            if f(&v) {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; status: {v:#}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task).await.expect("stops in time").expect("no panic").expect("ran");
    }
}

fn config_with_secrets(url: &str) -> Value {
    // The target URL carries a password, the target a bearer token and a secret header, a command a secret env.
    let with_pass = url.replacen("http://", "http://ops:s3cr3t-url-pass@", 1);
    flink_config(
        &with_pass,
        json!({
            "targets": [{"name": "jm", "url": with_pass, "timeout": "2s",
                         "auth": {"bearer": "s3cr3t-target-token"}, "headers": {"X-Api-Key": "s3cr3t-header"}}],
            "commands": {"noop": {"argv": ["true"], "env": {"API_KEY": "s3cr3t-env"}}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks"], "relaunch_command": "noop"}}},
            "server": {"listen": "127.0.0.1:0", "token": TOKEN},
            // Reloads come from POST /-/reload only, so each answer is about the file the test just wrote.
            "reload": {"watch": false},
        }),
    )
}

/// A strict reading of the OpenMetrics text: every family has HELP and TYPE before its samples, every sample line
/// is `name{labels} value`, names are `warden_…`, the text ends with `# EOF`. Returns the family names.
fn strict_families(text: &str) -> Vec<String> {
    let mut families: Vec<String> = vec![];
    let mut typed: Vec<(String, String)> = vec![];
    let lines = text.lines();
    let mut ended = false;
    for line in lines {
        assert!(!ended, "text after # EOF: {line}");
        if line == "# EOF" {
            ended = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            assert!(name.starts_with("warden_"), "family without the warden_ prefix: {line}");
            families.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, ty) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            assert_eq!(families.last().map(String::as_str), Some(name), "TYPE without HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&ty), "unexpected type: {line}");
            typed.push((name.to_string(), ty.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line: {line}");
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "bad value: {line}");
        let name = series.split('{').next().unwrap_or("");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels: {line}");
                for pair in labels[1..labels.len() - 1].split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label `{pair}` in {line}"));
                    assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad label name: {line}");
                    assert!(v.starts_with('"'), "unquoted label value: {line}");
                }
            }
        }
        let (family, ty) = typed.last().cloned().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
        let allowed: Vec<String> = match ty.as_str() {
            "counter" => vec![format!("{family}_total"), format!("{family}_created")],
            "histogram" => ["_bucket", "_sum", "_count", "_created"].iter().map(|s| format!("{family}{s}")).collect(),
            _ => vec![family.clone()],
        };
        assert!(allowed.iter().any(|a| a == name), "sample `{name}` does not belong to family `{family}`: {line}");
    }
    assert!(ended, "the text does not end with # EOF");
    families
}

fn metric<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a prometheus_parse::Sample> {
    scrape.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
}

fn value(s: &prometheus_parse::Sample) -> f64 {
    use prometheus_parse::Value as V;
    match &s.value {
        V::Counter(v) | V::Gauge(v) | V::Untyped(v) => *v,
        V::Histogram(b) => b.last().map(|c| c.count).unwrap_or(0.0),
        V::Summary(_) => f64::NAN,
    }
}

async fn scrape(s: &Served) -> (String, prometheus_parse::Scrape) {
    let r = s.http.get(format!("{}/metrics", s.base)).bearer_auth(TOKEN).send().await.expect("metrics");
    assert_eq!(r.status(), 200);
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = r.text().await.expect("text");
    for sec in SECRETS {
        assert!(!text.contains(sec), "a secret leaked into /metrics");
    }
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    (text, parsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_reports_health_metrics_status_history_and_reloads_without_a_secret_in_any_answer() {
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let cfg = config_with_secrets(&fake.url());
    let s = Served::start(&cfg).await;

    // /healthz needs no token; everything else does (bearer, or basic with the token as password).
    let (code, body) = s.call(s.http.get(format!("{}/healthz", s.base))).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    for path in ["/", "/readyz", "/metrics", "/api/status", "/api/history"] {
        let (code, _) = s.call(s.http.get(format!("{}{path}", s.base))).await;
        assert_eq!(code, 401, "{path} without a token");
        let (code, _) = s.call(s.http.get(format!("{}{path}", s.base)).bearer_auth("wrong")).await;
        assert_eq!(code, 401, "{path} with a wrong token");
    }
    let (code, _) = s.call(s.http.post(format!("{}/-/reload", s.base))).await;
    assert_eq!(code, 401, "reload without a token");
    let (code, _) = s.call(s.http.get(format!("{}/api/status", s.base)).basic_auth("anyone", Some(TOKEN))).await;
    assert_eq!(code, 200, "basic auth with the token as password (what browsers send)");

    // Ready once every probe has run.
    eventually("ready", || s.status.ready()).await;
    let (code, body) = s.get("/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));

    // A job fails: its alert, with the root cause, shows in the status API.
    fake.fail(&jid, "java.lang.IllegalStateException", "checkpoint storage unreachable");
    let v = s
        .status_until("the alert about clicks", |v| {
            v["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["subject"] == "clicks"))
        })
        .await;
    let alert = v["alerts"].as_array().unwrap().iter().find(|a| a["subject"] == "clicks").unwrap().clone();
    assert_eq!(alert["rule"], "flink/job-not-running");
    assert_eq!(alert["severity"], "critical");
    assert!(alert["root_cause"].as_str().unwrap_or("").contains("checkpoint storage unreachable"), "{alert:#}");
    let t = &v["targets"][0];
    assert_eq!(t["name"], "jm");
    assert!(!t["url"].as_str().unwrap().contains("ops:"), "user information is not shown: {t:#}");
    let job = t["jobs"].as_array().unwrap().iter().find(|j| j["name"] == "clicks").expect("the job is listed").clone();
    assert_eq!(job["health"], "failing", "{job:#}");
    assert!(!v["probes"].as_array().unwrap().is_empty());
    for p in v["probes"].as_array().unwrap() {
        assert!(p["last_run"].is_string() && p["next_run"].is_string(), "{p:#}");
    }
    assert!(v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "flink/job-not-running" && r["evaluations"].as_u64() > Some(0)));
    assert_eq!(v["reload"]["ok"], true);
    assert_eq!(v["source"], "daemon");

    // Every metric, read back by a parser; the strict reading checks the format line by line.
    eventually("the relaunch counted", || {
        s.status.stats().is_some_and(|st| st.actions.load(std::sync::atomic::Ordering::Relaxed) >= 2)
    })
    .await;
    let (text, m) = scrape(&s).await;
    let families = strict_families(&text);
    for f in [
        "warden_probe_duration_seconds",
        "warden_probe_errors",
        "warden_probe_skipped_runs",
        "warden_rule_evaluation_duration_seconds",
        "warden_rule_errors",
        "warden_actions",
        "warden_alerts_firing",
        "warden_outbox_depth",
        "warden_outbox_oldest_age_seconds",
        "warden_restarts",
        "warden_reloads",
        "warden_config_last_reload_successful",
        "warden_config_last_reload_success_timestamp_seconds",
        "warden_build_info",
    ] {
        assert!(families.iter().any(|x| x == f), "family {f} is missing from:\n{text}");
    }
    let probe = [("target", "jm")];
    let count = metric(&m, "warden_probe_duration_seconds_count", &probe)
        .or_else(|| {
            m.samples
                .iter()
                .find(|s| s.metric.starts_with("warden_probe_duration_seconds") && s.labels.get("target") == Some("jm"))
        })
        .unwrap_or_else(|| panic!("no probe duration for jm:\n{text}"));
    assert!(value(count) >= 1.0);
    let firing = metric(&m, "warden_alerts_firing", &[("rule", "flink/job-not-running"), ("severity", "critical")])
        .unwrap_or_else(|| panic!("no firing gauge:\n{text}"));
    assert_eq!(value(firing), 1.0);
    assert_eq!(value(metric(&m, "warden_config_last_reload_successful", &[]).unwrap()), 1.0);
    assert!(value(metric(&m, "warden_config_last_reload_success_timestamp_seconds", &[]).unwrap()) > 1.7e9);
    assert!(metric(&m, "warden_build_info", &[("version", env!("CARGO_PKG_VERSION"))]).is_some());
    assert!(text.contains("warden_actions_total{kind=\"alert\",outcome=\"ok\"}"), "{text}");
    assert!(
        metric(&m, "warden_rule_evaluation_duration_seconds_count", &[("rule", "flink/job-not-running")]).is_some()
            || text.contains("warden_rule_evaluation_duration_seconds_count{rule=\"flink/job-not-running\"}")
    );

    // History, filtered; bad filters are 400 with a reason.
    let h = s.json("/api/history?job=clicks&kind=alert&since=1h").await;
    let h = h.as_array().expect("a list");
    assert!(!h.is_empty() && h.iter().all(|e| e["subject"] == "clicks" && e["action"] == "alert"), "{h:#?}");
    let none = s.json("/api/history?rule=nope/none").await;
    assert_eq!(none, json!([]));
    let (code, body) = s.get("/api/history?kind=bogus").await;
    assert_eq!(code, 400);
    assert!(body.contains("`bogus` is not a journal action"), "{body}");
    let (code, body) = s.get("/api/history?since=yesterday-ish").await;
    assert_eq!(code, 400);
    assert!(body.contains("`since`"), "{body}");
    let (code, _) = s.get("/api/history?limit=-1").await;
    assert_eq!(code, 400);

    // The status page renders (the browser test below looks at it for real).
    let (code, page) = s.get("/").await;
    assert_eq!(code, 200);
    assert!(page.contains("data-job=\"clicks\""), "{page}");

    // A broken configuration: POST /-/reload says why, the metrics and the status show it, Warden keeps watching.
    let good = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, good.replace("\"every\": \"200ms\"", "\"every\": \"soon\"")).unwrap();
    assert_ne!(std::fs::read_to_string(&s.config).unwrap(), good, "the config was changed");
    let (code, body) = s.call(s.http.post(format!("{}/-/reload", s.base)).bearer_auth(TOKEN)).await;
    assert_eq!(code, 422, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ok"], false);
    assert!(answer["errors"][0].as_str().unwrap().contains("warden.yaml:"), "{answer:#}");
    let (_, m) = scrape(&s).await;
    assert_eq!(value(metric(&m, "warden_config_last_reload_successful", &[]).unwrap()), 0.0);
    let v = s.json("/api/status").await;
    assert_eq!(v["reload"]["ok"], false);
    assert!(v["reload"]["errors"][0].as_str().unwrap().contains("warden.yaml:"));
    let (_, page) = s.get("/").await;
    assert!(page.contains("was rejected"), "the page shows the failed reload");
    std::fs::write(&s.config, &good).unwrap();
    let (code, body) = s.call(s.http.post(format!("{}/-/reload", s.base)).bearer_auth(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    let (_, m) = scrape(&s).await;
    assert_eq!(value(metric(&m, "warden_config_last_reload_successful", &[]).unwrap()), 1.0);

    let (code, _) = s.get("/nope").await;
    assert_eq!(code, 404);

    // `warden status` asks the daemon (a configuration naming its address and token) or reads the store.
    let state = s.status.store().expect("store").path().parent().unwrap().to_path_buf();
    let other = tempfile::tempdir().unwrap();
    let addr = s.status.server_addr().unwrap().to_string();
    let cfg2 = json!({"state_dir": state, "targets": [], "server": {"listen": addr, "token": TOKEN}});
    let path2 = write_config(other.path(), &cfg2);
    let warden = |args: Vec<String>| async move {
        let shown = args.join(" ");
        let out =
            tokio::task::spawn_blocking(move || Command::new(WARDEN).args(&args).output().unwrap()).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "warden {shown}: {text}{}", String::from_utf8_lossy(&out.stderr));
        for sec in SECRETS {
            assert!(!text.contains(sec), "a secret leaked into `warden {shown}`");
        }
        text
    };
    let c2 = path2.display().to_string();
    let live = warden(vec!["status".into(), "-c".into(), c2.clone()]).await;
    assert!(live.contains("alert(s) firing") && live.contains("daemon up since"), "{live}");
    assert!(live.contains("clicks") && live.contains("FAILED") && live.contains("flink/job-not-running"), "{live}");
    let saved =
        warden(vec!["status".into(), "-c".into(), c2.clone(), "--state-dir".into(), state.display().to_string()]).await;
    assert!(saved.contains("from the state directory") && saved.contains("clicks"), "{saved}");
    let h = warden(vec![
        "history".into(),
        "-c".into(),
        c2.clone(),
        "--job".into(),
        "clicks".into(),
        "--kind".into(),
        "alert".into(),
        "--since".into(),
        "1h".into(),
    ])
    .await;
    assert!(h.lines().count() >= 1 && h.lines().all(|l| l.contains("alert") && l.contains("clicks")), "{h}");
    let none = warden(vec!["history".into(), "-c".into(), c2, "--rule".into(), "nope/none".into()]).await;
    assert_eq!(none.trim(), "(no journal entries match)");
    s.stop().await;
}

#[test]
fn server_listen_is_checked_at_load_with_its_location() {
    let e = warden::config::load_str(Path::new("warden.yaml"), "server:\n  listen: localhost:99999\n")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("warden.yaml:2:11: `server.listen`: `localhost:99999` is not an address and port"), "{e}");
    let e =
        warden::config::load_str(Path::new("warden.yaml"), "server:\n  lisen: 127.0.0.1:1\n").map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("did you mean `listen`?"), "{e}");
    let c = warden::config::load_str(Path::new("warden.yaml"), "targets: []\n").unwrap().config.server;
    assert!(c.enabled && c.token.is_none());
    assert_eq!(c.address(), Some("127.0.0.1:9464".parse().unwrap()), "on by default, on loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_run_stops_when_the_configured_address_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = json!({"state_dir": "state", "targets": [], "server": {"listen": addr.to_string()}});
    let path = write_config(dir.path(), &cfg);
    let out =
        tokio::task::spawn_blocking(move || Command::new(WARDEN).args(["run", "-c"]).arg(&path).output().unwrap())
            .await
            .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("`server.listen`: cannot listen on {addr}")), "{err}");
}

/// The status page in a real headless Chromium: a job fails, and its alert and root cause appear in the DOM; the
/// screenshot is kept as `target/artifacts/status-page.png`. Skipped (with a message) when Chromium is absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_a_failing_job_in_a_real_browser() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| which(b).is_some())
    else {
        eprintln!("SKIPPED the_status_page_shows_a_failing_job_in_a_real_browser: no chromium on PATH (apt-get install -y chromium)");
        return;
    };
    let (fake, jid) = fake_with_job(FlinkApiVersion::V2, "clicks").await;
    let other = fake.submit("orders");
    let mut cfg = flink_config(
        &fake.url(),
        json!({
            "commands": {"noop": {"argv": ["true"]}},
            "packs": {"flink": {"params": {"expected_jobs": ["clicks", "orders"], "relaunch_command": "noop"}}},
            "server": {"listen": "127.0.0.1:0"},
        }),
    );
    // Slow relaunches down so the failed job stays failed while the browser looks.
    merge(&mut cfg, json!({"dispatch": {"run_cooldown": "1h"}}));
    let s = Served::start(&cfg).await;
    eventually("ready", || s.status.ready()).await;
    let _ = other;
    fake.fail(&jid, "org.apache.flink.runtime.JobException", "Recovery is suppressed by NoRestartBackoffTimeStrategy");
    s.status_until("the alert about clicks", |v| {
        v["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["subject"] == "clicks"))
    })
    .await;

    let url = format!("{}/", s.base);
    let profile = tempfile::tempdir().unwrap();
    let flags = |extra: &[String]| {
        let mut c = Command::new(chromium);
        c.args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url);
        c
    };
    // The DOM after the page's script ran: the failing job, its alert and root cause, the healthy job.
    let mut dump = flags(&["--dump-dom".into(), "--virtual-time-budget=2000".into()]);
    let out = tokio::task::spawn_blocking(move || dump.output().expect("chromium runs")).await.unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(dom.contains("class=\"alert critical\""), "no alert in the DOM:\n{dom}");
    assert!(dom.contains("data-job=\"clicks\""), "{dom}");
    assert!(dom.contains("Recovery is suppressed by NoRestartBackoffTimeStrategy"), "the root cause is shown:\n{dom}");
    assert!(dom.contains("ALERT FIRING"), "the verdict says it:\n{dom}");
    assert!(dom.contains("data-job=\"orders\" data-health=\"ok\""), "the healthy job shows healthy:\n{dom}");
    assert!(dom.contains(" ago</time>"), "the script turned times into relative ones:\n{dom}");

    // The screenshot, kept for CI.
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&png);
    let mut shot = flags(&[
        format!("--screenshot={}", png.display()),
        "--window-size=1280,900".into(),
        "--hide-scrollbars".into(),
    ]);
    let out = tokio::task::spawn_blocking(move || shot.output().expect("chromium runs")).await.unwrap();
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "a real PNG ({} bytes)", bytes.len());
    s.stop().await;
}

/// The shipped systemd unit passes `systemd-analyze verify` (skipped when the tool is absent).
#[test]
fn the_systemd_unit_verifies() {
    let Some(tool) = which("systemd-analyze") else {
        eprintln!("SKIPPED the_systemd_unit_verifies: no systemd-analyze on PATH (apt-get install -y systemd)");
        return;
    };
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deploy/warden.service");
    let text = std::fs::read_to_string(&unit).expect("the unit exists");
    assert!(text.contains("ExecReload=/bin/kill -HUP $MAINPID"), "reload is SIGHUP");
    // Verify a copy whose ExecStart points at a binary that exists here (verify checks that it does).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("warden.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/warden", WARDEN)).unwrap();
    let out = Command::new(tool).args(["verify", "--man=no"]).arg(&copy).output().expect("systemd-analyze runs");
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err.lines().filter(|l| l.contains("warden.service")).collect();
    assert!(out.status.success() && problems.is_empty(), "systemd-analyze verify: {err}");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}
