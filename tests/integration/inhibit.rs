//! Inhibition with the real daemon: a JobManager with 100 jobs goes into a leader election (every answer 503),
//! and a per-job rule of the operator's own (`ops/job-unverified`: "cannot tell whether <job> runs") fires for each
//! of its jobs while the shipped `flink/jobmanager-unreachable` fires for the JobManager. An inhibit rule in
//! `warden.yaml` turns that into one message; the daemon is restarted during the outage; when the JobManager
//! answers again only the JobManager's *resolved* is sent.
//!
//! Notifications go to a Slack-like HTTP receiver on loopback; the notifier's `group_wait` runs on a manual clock
//! that the test moves (polls run on real time).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use chrono::{DurationRound, Utc};
use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use warden::clock::Clock;
use warden::notify::{inhibit, outbox};
use warden::store::{JournalEntry, Store};

const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
const WAIT: Duration = Duration::from_secs(30);
const JOBS: usize = 100;

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records every JSON post and answers `ok`, as Slack's webhook endpoint does. Other requests are kept apart in
/// `stray`: under heavy load a `GET /jobs/overview` has been seen arriving on this port. Its cause is the test binary,
/// not Warden: tests that stop their fake JobManager on purpose (`bad_input`'s "down", `rules`' unreachable
/// JobManager) leave their Warden polling the freed port, and the kernel may hand that port to this receiver, which
/// binds port 0 in the same process. This test is about the messages.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    stray: Arc<Mutex<Vec<String>>>,
}

async fn receive(
    State(rx): State<Receiver>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Bytes,
) -> &'static str {
    if method != axum::http::Method::POST {
        rx.stray.lock().unwrap().push(format!("{method} {uri}"));
        return "ok";
    }
    rx.got.lock().unwrap().push(
        serde_json::from_slice(&body).unwrap_or_else(
            |e| serde_json::json!({"not_json": String::from_utf8_lossy(&body), "error": e.to_string()}),
        ),
    );
    "ok"
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = Receiver::default();
        let app = axum::Router::new().fallback(receive).with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (rx, addr)
    }
    fn texts(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|m| m["text"].as_str().unwrap_or("").to_string()).collect()
    }
}

struct Daemon {
    state_dir: PathBuf,
    status: warden::runtime::status::StatusHandle,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Arc<warden::runtime::Stats>, warden::runtime::RuntimeError>>,
}

impl Daemon {
    fn start(dir: &Path, clock: &Clock) -> Daemon {
        let (plan, engine) = warden::plan::load(&dir.join("warden.yaml"), None).unwrap_or_else(|d| panic!("{d}"));
        let state_dir = plan.loaded.config.state_dir.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let status = warden::runtime::status::StatusHandle::new();
        let opts = warden::runtime::RunOptions {
            clock: clock.clone(),
            status: status.clone(),
            serve: true,
            ..Default::default()
        };
        let task = tokio::spawn(warden::runtime::run(plan, engine, opts, async move {
            let _ = rx.await;
        }));
        Daemon { state_dir, status, stop: Some(tx), task }
    }
    /// `GET path` on Warden's own server.
    async fn get(&self, path: &str) -> String {
        eventually("the server listens", || self.status.server_addr().is_some()).await;
        let url = format!("http://{}{path}", self.status.server_addr().unwrap());
        reqwest::get(&url).await.unwrap().text().await.unwrap()
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task).await.expect("stops in time").unwrap().expect("ran");
    }
    fn store(&self) -> Store {
        Store::open(&self.state_dir).unwrap()
    }
    fn journal(&self) -> Vec<JournalEntry> {
        self.store().entries(None).unwrap()
    }
    fn firing(&self) -> usize {
        inhibit::firing(&self.store()).unwrap().len()
    }
    /// Alerts waiting out `group_wait` on the channel, of any group.
    fn waiting(&self) -> usize {
        let s = self.store();
        ["firing", "resolved"]
            .iter()
            .map(|e| outbox::group(&s, "slack", &outbox::group_key("jm", e)).unwrap().0.len())
            .sum::<usize>()
            + outbox::group(&s, "slack", &outbox::released_group_key("jm")).unwrap().0.len()
    }
    fn held(&self) -> usize {
        outbox::held(&self.store()).unwrap().len()
    }
    fn outcomes(&self, prefix: &str) -> Vec<JournalEntry> {
        self.journal().into_iter().filter(|e| e.action == "notify" && e.outcome.starts_with(prefix)).collect()
    }
    async fn polls(&self, fake: &FakeJobManager, n: usize) {
        let start = fake.request_log().len();
        eventually("more polls", || fake.request_log().len() >= start + n).await;
    }
}

/// The operator's pack: one rule that alerts about every job it cannot check while the JobManager does not answer.
fn write_ops_pack(dir: &Path) {
    let p = dir.join("plugins/ops");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("pack.yaml"),
        "name: ops\nversion: 0.1.0\nparameters:\n  jobs: {type: string_list, default: []}\n\
         probes:\n  - name: overview\n    every: 200ms\n    request: {path: /jobs/overview}\n    rules: [job-unverified]\n",
    )
    .unwrap();
    std::fs::write(
        p.join("job-unverified.rhai"),
        "if obs.ok { return; }\nfor name in params.jobs {\n  alert(#{ subject: name, severity: \"warning\", \"for\": 2,\n    \
         summary: `cannot tell whether ${name} runs: ${obs.error.message}` });\n}\n",
    )
    .unwrap();
}

fn write_config(dir: &Path, fake: &FakeJobManager, hook: SocketAddr, jobs: &[String]) {
    std::fs::write(dir.join("slack-hook"), format!("http://{hook}/services/T0/B0/x\n")).unwrap();
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": [RULES_DIR, "plugins/*"],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "packs": {
            "flink": {"every": "200ms", "params": {"not_running_for": "0s", "unreachable_polls": 2,
                                                 "expected_jobs": jobs}},
            "ops": {"params": {"jobs": jobs}},
        },
        "inhibit": {"rules": [{
            "name": "jm-down",
            "source": {"rule": "flink/jobmanager-unreachable"},
            "target": {"pack": "ops"},
        }]},
        "scripts": {"max_follow_ups": 60},
        "shutdown_grace": "5s",
        "server": {"listen": "127.0.0.1:0"},
        "notify": {
            "group_wait": "2s",
            "channels": {"slack": {"type": "slack", "webhook_url": "file:slack-hook"}},
            "default": {"channels": ["slack"]},
        },
    });
    std::fs::write(dir.join("warden.yaml"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_a_jobmanager_with_100_jobs_sends_one_message_not_101() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let jobs: Vec<String> = (0..JOBS).map(|i| format!("job-{i:03}")).collect();
    for j in &jobs {
        fake.submit(j);
    }
    let (rx, hook) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_ops_pack(dir.path());
    write_config(dir.path(), &fake, hook, &jobs);
    let clock = Clock::manual(Utc::now().duration_trunc(chrono::Duration::milliseconds(1)).unwrap());
    let d = Daemon::start(dir.path(), &clock);
    d.polls(&fake, 4).await;

    // The outage: 1 JobManager alert and 100 job alerts fire, in whichever order the two probes see it.
    fake.set_leader_election(true);
    eventually("101 alerts firing", || d.firing() == JOBS + 1).await;
    eventually("each waiting or held", || d.waiting() + d.held() == JOBS + 1).await;
    assert!(rx.texts().is_empty(), "nothing before group_wait");
    clock.advance(Duration::from_secs(2));
    eventually("the JobManager's alert", || !rx.texts().is_empty()).await;
    eventually("its message marked sent", || outbox::counts(&d.store()).unwrap() == (0, 1, 0)).await;
    let texts = rx.texts();
    assert_eq!(texts.len(), 1, "{texts:#?}\n{:#?}", rx.got.lock().unwrap());
    assert!(texts[0].starts_with("[FIRING] JobManager jm is in a leader election"), "{}", texts[0]);
    assert_eq!(d.held(), JOBS, "every job alert held back");
    let inhibited = d.outcomes("inhibited: by flink/jobmanager-unreachable (jm) on jm [inhibit rule jm-down]");
    let mut subjects: Vec<&str> = inhibited.iter().map(|e| e.subject.as_str()).collect();
    subjects.dedup();
    assert_eq!(subjects.len(), JOBS, "each job alert journalled as inhibited, with what inhibits it");
    assert!(
        inhibited
            .iter()
            .all(|e| e.rule == "ops/job-unverified"
                && e.details["inhibited_by"]["rule"] == "flink/jobmanager-unreachable")
    );

    // The metrics, the status API and `warden history` say so.
    let metrics = d.get("/metrics").await;
    assert!(metrics.lines().any(|l| l == "warden_alerts_inhibited 100"), "{metrics}");
    let status: Value = serde_json::from_str(&d.get("/api/status").await).unwrap();
    let alerts = status["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), JOBS + 1);
    let by = "by flink/jobmanager-unreachable (jm) on jm [inhibit rule jm-down]";
    assert_eq!(alerts.iter().filter(|a| a["inhibited_by"] == by).count(), JOBS);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["history", "--kind", "notify", "--job", "job-042", "-c"])
        .arg(dir.path().join("warden.yaml"))
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(history.contains("notify slack") && history.contains(&format!("inhibited: {by}")), "{history}");

    // Warden restarts during the outage: nothing is sent again, nothing held is lost.
    d.stop().await;
    let d = Daemon::start(dir.path(), &clock);
    d.polls(&fake, 6).await;
    clock.advance(Duration::from_secs(2));
    d.polls(&fake, 4).await;
    assert_eq!(rx.texts().len(), 1, "{:#?}", rx.got.lock().unwrap());
    assert_eq!(d.held(), JOBS);

    // The JobManager answers again: the job alerts resolve without a word, the JobManager's alert resolves.
    fake.set_leader_election(false);
    eventually("every alert resolved", || d.firing() == 0).await;
    d.polls(&fake, 4).await;
    clock.advance(Duration::from_secs(2));
    eventually("the resolved", || rx.texts().len() >= 2).await;
    eventually("nothing left waiting", || {
        outbox::counts(&d.store()).unwrap() == (0, 2, 0) && outbox::next_group_due(&d.store()).unwrap().is_none()
    })
    .await;
    clock.advance(Duration::from_secs(2));
    d.polls(&fake, 4).await;
    let texts = rx.texts();
    assert_eq!(texts.len(), 2, "{texts:#?}\n{:#?}", rx.got.lock().unwrap());
    assert!(texts[1].starts_with("[RESOLVED] JobManager jm"), "{}", texts[1]);
    assert_eq!(d.held(), 0);
    let never = d.outcomes("not sent: it resolved while inhibited");
    assert_eq!(never.len(), JOBS, "{never:#?}");
    println!(
        "FIGURE inhibition: {JOBS} job alerts + 1 JobManager alert during an outage → {} message(s) (firing, resolved); \
         other requests on the webhook's port: {:?}",
        texts.len(),
        rx.stray.lock().unwrap()
    );
    d.stop().await;
}
