//! Notifications against their real counterparts on loopback: a real SMTP server (started in this process by
//! `support::smtp`) in plain, STARTTLS (test CA, login) and implicit-TLS modes; an HTTP receiver that answers like
//! Slack's webhook endpoint (200 `ok`, 400 `invalid_payload`/`no_text`, 404 `no_service`, 429 with `Retry-After`,
//! 500, slow answers); the shipped `notify-webhook` plugin; the CLI; the daemon across a restart; and a running
//! notifier reconfigured (hot reload of the `notify` section).
//!
//! The notifier's own timing (`group_wait`, retries and their backoff, `Retry-After`) runs on a manual clock that
//! the tests move, so no test sleeps to let time pass; only the network is real, and waiting for it polls with a
//! deadline. Secrets reach the configuration through `file:` references or a child process's environment, never
//! through this process's environment. The last test prints the figures of the issue note.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DurationRound, Utc};
use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use warden::clock::Clock;
use warden::event::Events;
use warden::model::AlertRecord;
use warden::model::Severity;
use warden::notify::{outbox, Notifier};
use warden::store::{JournalEntry, Store};

use crate::support::smtp::{self, Security};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
const PLUGIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/notify-webhook/notify-webhook");
const WAIT: Duration = Duration::from_secs(30);
/// The webhook path: the token in it is the secret that must never be printed.
const HOOK_PATH: &str = "/services/T0WARDEN/B0WARDEN/hunter2webhooktoken";
const SMTP_USER: &str = "warden";
const SMTP_PASSWORD: &str = "correct-horse-battery-staple";
/// The login the SMTP server requires when it requires one.
const LOGIN: Option<(&str, &str)> = Some((SMTP_USER, SMTP_PASSWORD));

/// Polls `f` every 20 ms until it is true, for at most [`WAIT`] (for what happens on sockets and in other tasks).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A clock that moves only when a test moves it, starting now (on a whole millisecond, as the store keeps times).
fn manual_clock() -> Clock {
    Clock::manual(Utc::now().duration_trunc(chrono::Duration::milliseconds(1)).expect("truncate"))
}

// ------------------------------------------------------------------------------------------------------------
// A receiver that behaves like Slack's incoming-webhook endpoint (and records generic webhook posts on /hook).

#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    body: String,
    retry_after: Option<u64>,
    delay: Duration,
}

impl Reply {
    fn ok() -> Reply {
        Reply::status(200, "ok")
    }
    fn status(status: u16, body: &str) -> Reply {
        Reply { status, body: body.into(), retry_after: None, delay: Duration::ZERO }
    }
}

#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    path: String,
    payload: Value,
    status: u16,
}

#[derive(Default)]
struct RxState {
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
    got: Vec<Got>,
}

#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<RxState>>,
    arrived: Arc<tokio::sync::Notify>,
}

async fn receive(State(rx): State<Receiver>, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let reply = {
        let mut st = rx.state.lock().unwrap();
        let scripted = st.script.pop_front().or_else(|| st.fallback.clone()).unwrap_or_else(Reply::ok);
        // What Slack itself checks before anything else.
        let reply = if path != HOOK_PATH && path != "/hook" {
            Reply::status(404, "no_service")
        } else if parsed.is_none() {
            Reply::status(400, "invalid_payload")
        } else if path == HOOK_PATH && parsed.as_ref().and_then(|p| p["text"].as_str()).is_none_or(str::is_empty) {
            Reply::status(400, "no_text")
        } else {
            scripted
        };
        st.got.push(Got { at: Instant::now(), path, payload: parsed.unwrap_or(Value::Null), status: reply.status });
        reply
    };
    rx.arrived.notify_waiters();
    tokio::time::sleep(reply.delay).await;
    let mut resp = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    if let Some(s) = reply.retry_after {
        resp.headers_mut().insert("retry-after", s.to_string().parse().unwrap());
    }
    resp
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rx = Receiver {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            arrived: Arc::new(tokio::sync::Notify::new()),
        };
        let app = axum::Router::new().fallback(receive).with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        rx
    }
    fn url(&self) -> String {
        format!("http://{}{HOOK_PATH}", self.addr)
    }
    fn then(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }
    fn always(&self, r: Option<Reply>) {
        self.state.lock().unwrap().fallback = r;
    }
    fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }
    /// How many posts were answered 2xx (cheap: no copies).
    fn delivered_count(&self) -> usize {
        self.state.lock().unwrap().got.iter().filter(|g| g.status < 300).count()
    }
    /// When the last post arrived.
    fn last_at(&self) -> Instant {
        self.state.lock().unwrap().got.last().expect("a post").at
    }
    /// Payloads answered 2xx, in arrival order.
    fn delivered(&self) -> Vec<Value> {
        self.got().into_iter().filter(|g| g.status < 300).map(|g| g.payload).collect()
    }
}

// ------------------------------------------------------------------------------------------------------------
// E-mail helpers (the SMTP server itself is `support::smtp`)

/// A header's value in a raw message (unfolded).
fn header(data: &str, name: &str) -> Option<String> {
    let head = data.split("\r\n\r\n").next().unwrap_or(data).replace("\r\n ", " ").replace("\r\n\t", " ");
    let head = head.replace("\n ", " ");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

// ------------------------------------------------------------------------------------------------------------
// The notifier in-process, on a real store, with a clock the test moves.

struct Rig {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    notifier: Arc<Notifier>,
    clock: Clock,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn load(dir: &Path, notify: &str) -> warden::config::Config {
    let text = format!(
        "state_dir: state\ntargets:\n  - {{name: jm, url: 'http://jm.example:8081', labels: {{env: prod}}}}\nnotify:\n{notify}"
    );
    let path = dir.join("warden.yaml");
    std::fs::write(&path, &text).unwrap();
    warden::config::load(&path).unwrap_or_else(|d| panic!("{d}\n{text}")).config
}

impl Rig {
    fn start_in(dir: tempfile::TempDir, notify: &str, clock: Clock) -> Rig {
        let cfg = load(dir.path(), notify);
        let store = Arc::new(Store::open(&cfg.state_dir).unwrap());
        let notifier =
            Arc::new(Notifier::new(cfg.notify, &cfg.targets, store.clone(), clock.clone(), Events::default()).unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(notifier.clone().run(stop.clone()));
        Rig { dir, store, notifier, clock, stop, task }
    }

    /// Stops the notifier; returns its directory and clock for a restart.
    async fn stop(self) -> (tempfile::TempDir, Clock) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the notifier stops").unwrap();
        (self.dir, self.clock)
    }

    fn submit(&self, event: &str, job: &str) {
        self.notifier.submit(&record(event, "jm", job)).unwrap();
    }

    /// Moves the clock and tells the notifier to look at it.
    fn advance(&self, d: Duration) {
        self.clock.advance(d);
        self.notifier.wake();
    }

    /// How long, by the clock, until the notifier has something to do (a group's wait, a retry).
    fn next_due_in(&self) -> Duration {
        let next = self.notifier.next_due().unwrap().expect("something is waiting");
        (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO)
    }

    /// Nothing waits any more: no group, no message to send or retry.
    fn idle(&self) -> bool {
        self.notifier.next_due().unwrap().is_none()
    }

    fn notify_journal(&self) -> Vec<JournalEntry> {
        self.store.entries(None).unwrap().into_iter().filter(|e| e.action == "notify").collect()
    }

    async fn outcome(&self, what: &str, f: impl Fn(&str) -> bool) -> Vec<JournalEntry> {
        eventually(what, || self.notify_journal().iter().any(|e| f(&e.outcome))).await;
        self.notify_journal()
    }
}

fn record(event: &str, target: &str, job: &str) -> AlertRecord {
    AlertRecord {
        time: Utc::now(),
        event: event.into(),
        rule: "flink/job-not-running".into(),
        target: target.into(),
        subject: job.into(),
        severity: Severity::Critical,
        summary: format!("job {job} FAILED: java.io.IOException: disk full"),
        details: json!({"job": job, "jid": "a1b2c3", "state": "FAILED", "root_cause": "java.io.IOException: disk full",
            "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat x.y(Z.java:1)\nCaused by: java.io.IOException: disk full",
            "relaunch": "relaunch"}),
    }
}

fn email_channel(port: u16, tls: &str, extra: &str) -> String {
    format!(
        "  group_wait: 0s\n  retry: {{initial_backoff: 200ms, max_backoff: 1s}}\n  default: {{channels: [mail]}}\n  channels:\n    mail:\n      type: email\n      host: 127.0.0.1\n      port: {port}\n      tls: {tls}\n\
         \x20     from: 'Warden <warden@example.com>'\n      to: [oncall@example.com, 'Ops Lead <lead@example.com>']\n      cc: [team@example.com]\n      bcc: [audit@example.com]\n      timeout: 5s\n{extra}"
    )
}

// ------------------------------------------------------------------------------------------------------------
// E-mail

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_reaches_to_cc_and_bcc_with_subject_date_message_id_and_body() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::Plain, None, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "none", ""), manual_clock());
    rig.submit("firing", "clicks");
    let m = &smtp.wait_for(1).await[0];
    assert_eq!(m.mail_from, "warden@example.com");
    let mut rcpt: Vec<&str> = m.rcpt_tos.iter().map(String::as_str).collect();
    rcpt.sort();
    assert_eq!(rcpt, ["audit@example.com", "lead@example.com", "oncall@example.com", "team@example.com"]);
    let data = &m.data;
    assert_eq!(header(data, "From").unwrap(), "Warden <warden@example.com>");
    assert_eq!(header(data, "To").unwrap(), "oncall@example.com, \"Ops Lead\" <lead@example.com>");
    assert_eq!(header(data, "Cc").unwrap(), "team@example.com");
    assert_eq!(header(data, "Bcc"), None, "Bcc recipients get the mail, no header names them");
    assert_eq!(header(data, "Subject").unwrap(), "[FIRING] job clicks FAILED: java.io.IOException: disk full");
    let date = header(data, "Date").unwrap();
    let date = chrono::DateTime::parse_from_rfc2822(&date).unwrap_or_else(|e| panic!("Date `{date}`: {e}"));
    assert!((rig.clock.now() - date.with_timezone(&Utc)).num_seconds().abs() < 2, "{date}");
    let id = header(data, "Message-ID").unwrap();
    assert!(id.starts_with("<warden.") && id.ends_with("@example.com>"), "{id}");
    for want in [
        "job:        clicks (a1b2c3)",
        "state:      FAILED since",
        "    org.apache.flink.runtime.JobException: Recovery is suppressed",
        "Flink UI:   http://jm.example:8081/#/job/completed/a1b2c3/overview",
        "Warden:     will relaunch with `relaunch`",
    ] {
        assert!(data.contains(want), "body lacks {want:?}:\n{data}");
    }
    assert!(!m.tls);
    let j = rig.outcome("sent", |o| o == "sent").await;
    assert_eq!((j[0].detail.as_str(), j[0].subject.as_str()), ("mail", "clicks"));
    assert!(rig.idle());
    assert_eq!(smtp.mails().len(), 1, "received once");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_with_a_custom_ca_and_login() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::StartTls, LOGIN, &[]);
    std::fs::write(dir.path().join("smtp-password"), format!("{SMTP_PASSWORD}\n")).unwrap();
    let extra =
        format!("      ca_file: ca.pem\n      auth: {{username: {SMTP_USER}, password: 'file:smtp-password'}}\n");
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "starttls", &extra), manual_clock());
    rig.submit("firing", "clicks");
    let m = &smtp.wait_for(1).await[0];
    assert!(m.tls, "sent after STARTTLS: {m:?}");
    assert!(m.authenticated);
    assert_eq!(header(&m.data, "Subject").unwrap(), "[FIRING] job clicks FAILED: java.io.IOException: disk full");
    rig.outcome("sent", |o| o == "sent").await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::Implicit, None, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "tls", "      ca_file: ca.pem\n"), manual_clock());
    rig.submit("firing", "clicks");
    assert!(smtp.wait_for(1).await[0].tls);
    rig.outcome("sent", |o| o == "sent").await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_without_the_custom_ca_is_a_tls_error_and_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::StartTls, None, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "starttls", ""), manual_clock());
    rig.submit("firing", "clicks");
    let j = rig.outcome("an error", |o| o.starts_with("retrying:")).await;
    let o = &j[0].outcome;
    assert!(o.starts_with(&format!("retrying: TLS with SMTP server 127.0.0.1:{} failed", smtp.port)), "{o}");
    assert!(o.contains("UnknownIssuer"), "the certificate is not trusted without ca_file: {o}");
    assert_eq!(outbox::counts(&rig.store).unwrap().0, 1);
    // Retried after its backoff, and refused the same way: nothing ever went over the untrusted connection.
    rig.advance(rig.next_due_in());
    rig.outcome("the second attempt", |o| o.starts_with("retrying: TLS") && o.contains("(attempt 2;")).await;
    assert!(smtp.mails().is_empty());
    assert_eq!(smtp.transactions(), 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_with_a_wrong_password_is_a_clear_error_and_stays_queued_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::StartTls, LOGIN, &[]);
    std::fs::write(dir.path().join("smtp-password"), "wrong-password-123\n").unwrap();
    let extra =
        format!("      ca_file: ca.pem\n      auth: {{username: {SMTP_USER}, password: 'file:smtp-password'}}\n");
    let notify = email_channel(smtp.port, "starttls", &extra);
    let rig = Rig::start_in(dir, &notify, manual_clock());
    rig.submit("firing", "clicks");
    let j = rig.outcome("a login error", |o| o.starts_with("retrying: SMTP login to")).await;
    let o = &j[0].outcome;
    assert!(o.contains("535") && o.contains("check the channel's `auth`"), "{o}");
    assert!(!o.contains("wrong-password-123"), "{o}");
    assert_eq!(outbox::counts(&rig.store).unwrap(), (1, 0, 0), "kept in the outbox");
    assert_eq!(smtp.transactions(), 0, "no mail transaction without a login");
    let (dir, clock) = rig.stop().await;
    // The operator fixes the password; the next start sends the kept message when its retry is due, once.
    std::fs::write(dir.path().join("smtp-password"), format!("{SMTP_PASSWORD}\n")).unwrap();
    let rig = Rig::start_in(dir, &notify, clock);
    rig.advance(rig.next_due_in());
    let m = &smtp.wait_for(1).await[0];
    assert!(m.authenticated && m.tls);
    rig.outcome("sent after retries", |o| o.starts_with("sent after")).await;
    assert!(rig.idle(), "nothing left to send");
    assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 1, 0));
    assert_eq!((smtp.mails().len(), smtp.transactions()), (1, 1));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_refused_with_5xx_is_journalled_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::Plain, None, &["oncall@example.com"]);
    let notify = email_channel(smtp.port, "none", "").replace(
        "to: [oncall@example.com, 'Ops Lead <lead@example.com>']\n      cc: [team@example.com]\n      bcc: [audit@example.com]",
        "to: [oncall@example.com]",
    );
    let rig = Rig::start_in(dir, &notify, manual_clock());
    rig.submit("firing", "clicks");
    let j = rig.outcome("failed", |o| o.starts_with("failed:")).await;
    assert!(j[0].outcome.contains("refused the message") && j[0].outcome.contains("550"), "{}", j[0].outcome);
    assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 0, 1));
    assert!(rig.idle(), "no retry is scheduled");
    rig.advance(Duration::from_secs(3600));
    assert!(rig.idle());
    assert_eq!(rig.notify_journal().len(), 1);
    assert_eq!(smtp.transactions(), 1, "tried once");
    rig.stop().await;
}

// ------------------------------------------------------------------------------------------------------------
// Slack

/// The Slack channel's configuration; its webhook URL is a secret read from `<dir>/slack-hook`.
fn slack_channel(dir: &Path, url: &str, extra: &str) -> String {
    slack_channel_retry(dir, url, "{initial_backoff: 300ms, max_backoff: 2s}", extra)
}

fn slack_channel_retry(dir: &Path, url: &str, retry: &str, extra: &str) -> String {
    format!(
        "  group_wait: 0s\n  retry: {retry}\n  default: {{channels: [slack]}}\n  channels:\n    slack:\n      type: slack\n      webhook_url: '{}'\n      username: warden\n      icon_emoji: ':rotating_light:'\n      timeout: 3s\n{extra}",
        hook_secret(dir, url)
    )
}

/// Writes the webhook URL to `<dir>/slack-hook` and returns the secret reference to it.
fn hook_secret(dir: &Path, url: &str) -> &'static str {
    std::fs::write(dir.join("slack-hook"), format!("{url}\n")).unwrap();
    "file:slack-hook"
}

/// A notifier on a manual clock delivering to the Slack-like receiver.
fn slack_rig(rx: &Receiver, extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let notify = slack_channel(dir.path(), &rx.url(), extra);
    Rig::start_in(dir, &notify, manual_clock())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_block_kit_blocks_and_the_plain_text_once() {
    let rx = Receiver::start().await;
    let rig = slack_rig(&rx, "");
    rig.submit("firing", "clicks");
    eventually("the post", || !rx.delivered().is_empty()).await;
    let p = &rx.delivered()[0];
    assert_eq!(p["text"], "[FIRING] job clicks FAILED: java.io.IOException: disk full");
    assert_eq!(p["username"], "warden");
    assert_eq!(p["icon_emoji"], ":rotating_light:");
    let blocks = p["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let section = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(
        section.starts_with("*<http://jm.example:8081/#/job/completed/a1b2c3/overview|clicks>* on *jm* FAILED since")
    );
    assert!(section.contains("```org.apache.flink.runtime.JobException: Recovery is suppressed"), "{section}");
    assert!(section.contains("_Warden:_ will relaunch with `relaunch`"), "{section}");
    rig.outcome("sent", |o| o == "sent").await;
    assert!(rig.idle(), "nothing else waits to be sent");
    assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 1, 0));
    assert_eq!(rx.got().len(), 1, "exactly one post");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_permanent_errors_are_journalled_with_the_reason_and_not_retried() {
    let rx = Receiver::start().await;
    rx.then([Reply::status(400, "invalid_payload"), Reply::status(400, "no_text"), Reply::status(404, "no_service")]);
    let rig = slack_rig(&rx, "");
    for job in ["a", "b", "c"] {
        rig.submit("firing", job);
        eventually("the attempt", || rx.got().len() == ["a", "b", "c"].iter().position(|j| *j == job).unwrap() + 1)
            .await;
    }
    eventually("three failures", || {
        rig.notify_journal().iter().filter(|e| e.outcome.starts_with("failed:")).count() == 3
    })
    .await;
    let o: Vec<String> = rig.notify_journal().into_iter().map(|e| e.outcome).collect();
    assert!(o[0].contains("400 `invalid_payload`"), "{o:#?}");
    assert!(o[1].contains("400 `no_text`"), "{o:#?}");
    assert!(o[2].contains("404 `no_service`"), "{o:#?}");
    assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 0, 3));
    assert!(rig.idle(), "no retry is scheduled");
    assert_eq!(rx.got().len(), 3, "not retried");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_429_waits_retry_after() {
    let rx = Receiver::start().await;
    rx.then([Reply { retry_after: Some(2), ..Reply::status(429, "rate_limited") }]);
    let rig = slack_rig(&rx, "");
    rig.submit("firing", "clicks");
    let j = rig.outcome("rate limited", |o| o.starts_with("retrying:")).await;
    assert!(j[0].outcome.contains("429") && j[0].outcome.ends_with("(attempt 1; next in 2s)"), "{}", j[0].outcome);
    // Not the 150-300 ms backoff: exactly the 2 s Slack asked for.
    assert_eq!(rig.next_due_in(), Duration::from_secs(2), "Retry-After: 2 honoured");
    rig.advance(Duration::from_secs(2));
    eventually("delivered", || !rx.delivered().is_empty()).await;
    let g = rx.got();
    assert_eq!(g.iter().map(|g| g.status).collect::<Vec<_>>(), [429, 200]);
    let j = rig.outcome("sent after", |o| o.starts_with("sent after 1 retries")).await;
    assert!(j.iter().all(|e| !e.outcome.starts_with("failed")));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_500_is_retried_with_growing_backoff_without_duplicates_and_in_order() {
    let rx = Receiver::start().await;
    rx.then([Reply::status(500, ""), Reply::status(500, ""), Reply::status(500, ""), Reply::status(503, "")]);
    let rig = slack_rig(&rx, "");
    rig.submit("firing", "clicks");
    let mut waits = vec![];
    for attempt in 1..=4u32 {
        let tag = format!("(attempt {attempt};");
        rig.outcome(&format!("failed attempt {attempt}"), |o| o.contains(&tag)).await;
        if attempt == 1 {
            // Queued behind the firing in the same lane while it is retried: the resolved must not overtake it.
            rig.submit("resolved", "clicks");
            eventually("the resolved queued", || rig.notify_journal().len() == 2).await;
        }
        // initial 300 ms doubling up to 2 s, with jitter (half to full).
        let full = Duration::from_millis(300 * 2u64.pow(attempt - 1)).min(Duration::from_secs(2));
        let wait = rig.next_due_in();
        assert!(wait + Duration::from_millis(1) >= full / 2 && wait <= full, "attempt {attempt}: {wait:?} vs {full:?}");
        waits.push(wait);
        assert_eq!(rx.got().len(), attempt as usize, "no attempt before its time");
        rig.advance(wait);
    }
    eventually("both delivered", || rx.delivered().len() == 2).await;
    let g = rx.got();
    assert_eq!(g.iter().map(|g| g.status).collect::<Vec<_>>(), [500, 500, 500, 503, 200, 200]);
    assert!(waits[3] > waits[0], "the backoff grows: {waits:?}");
    let events: Vec<&str> = rx
        .delivered()
        .iter()
        .map(|p| p["text"].as_str().unwrap())
        .map(|t| &t[..5])
        .collect::<Vec<_>>()
        .into_iter()
        .map(|s| if s.starts_with("[FIR") { "firing" } else { "resolved" })
        .collect();
    assert_eq!(events, ["firing", "resolved"], "order per alert kept");
    let j = rig.outcome("sent", |o| o == "sent").await;
    assert_eq!(j[0].outcome, "sent after 4 retries");
    assert!(rig.idle());
    assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 2, 0));
    assert_eq!(rx.delivered().len(), 2, "no duplicates");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_slow_answer_within_the_timeout_is_one_delivery_and_beyond_it_a_retry() {
    let rx = Receiver::start().await;
    rx.then([Reply { delay: Duration::from_millis(200), ..Reply::ok() }]);
    // The call's timeout is real time (a socket waiting for an answer): kept short.
    let dir = tempfile::tempdir().unwrap();
    let notify = slack_channel(dir.path(), &rx.url(), "").replace("timeout: 3s", "timeout: 1s");
    let rig = Rig::start_in(dir, &notify, manual_clock());
    rig.submit("firing", "clicks");
    rig.outcome("sent", |o| o == "sent").await;
    assert_eq!(rx.got().len(), 1);

    rx.then([Reply { delay: Duration::from_secs(3), ..Reply::ok() }]);
    rig.submit("firing", "views");
    let j = rig.outcome("a timeout", |o| o.starts_with("retrying: Slack webhook call timed out")).await;
    assert!(!j.iter().any(|e| e.outcome.contains("hunter2webhooktoken")), "{j:#?}");
    rig.advance(rig.next_due_in());
    rig.outcome("sent after", |o| o.starts_with("sent after 1 retries")).await;
    rig.stop().await;
}

// ------------------------------------------------------------------------------------------------------------
// The shipped plugin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_webhook_plugin_posts_the_document_and_its_exit_codes_drive_retries() {
    let rx = Receiver::start().await;
    rx.then([Reply::status(503, "busy"), Reply::ok(), Reply::status(422, "bad")]);
    let notify = format!(
        "  group_wait: 0s\n  retry: {{initial_backoff: 200ms, max_backoff: 1s}}\n  default: {{channels: [hook]}}\n  channels:\n    hook:\n      type: plugin\n      command: ['{PLUGIN}']\n      env: {{NOTIFY_WEBHOOK_URL: 'http://{}/hook'}}\n",
        rx.addr
    );
    let rig = Rig::start_in(tempfile::tempdir().unwrap(), &notify, manual_clock());
    rig.submit("firing", "clicks");
    rig.outcome("a retry", |o| o.starts_with("retrying: plugin")).await;
    rig.advance(rig.next_due_in());
    rig.outcome("sent after a retry", |o| o == "sent after 1 retries").await;
    assert!(rx.got().iter().all(|g| g.path == "/hook"));
    let doc = &rx.delivered()[0];
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["channel"], "hook");
    assert_eq!(doc["event"], "firing");
    assert_eq!(doc["target"]["labels"]["env"], "prod");
    assert_eq!(doc["alerts"][0]["job"], "clicks");
    assert_eq!(doc["alerts"][0]["root_cause"], "java.io.IOException: disk full");
    assert!(doc["text"].as_str().unwrap().contains("Flink UI:"));
    rig.submit("firing", "views");
    let j = rig.outcome("rejected", |o| o.starts_with("failed:")).await;
    assert!(j[1].outcome.contains("rejected the message (exit 65): webhook answered 422: bad"), "{}", j[1].outcome);
    assert!(rig.idle(), "a rejected message is not retried");
    rig.stop().await;
}

// ------------------------------------------------------------------------------------------------------------
// The command line

fn warden(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(WARDEN)
        .args(args)
        .arg("--config")
        .arg(dir.join("warden.yaml"))
        .env_remove("WARDEN_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_notify_test_reports_success_and_the_exact_error() {
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::StartTls, LOGIN, &[]);
    let text = format!(
        "state_dir: state\nnotify:\n  channels:\n    slack: {{type: slack, webhook_url: '{}'}}\n    mail:\n      type: email\n      host: 127.0.0.1\n      port: {}\n      ca_file: ca.pem\n      auth: {{username: {SMTP_USER}, password: 'file:pw'}}\n      from: warden@example.com\n      to: [oncall@example.com]\n",
        rx.url(),
        smtp.port
    );
    std::fs::write(dir.path().join("warden.yaml"), text).unwrap();
    std::fs::write(dir.path().join("pw"), "not-the-password\n").unwrap();

    let (code, out, err) = warden(dir.path(), &["notify", "test", "slack"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "sent a test message through `slack` (Slack webhook)");
    assert_eq!(
        rx.delivered()[0]["text"],
        "[TEST] test message from Warden for channel `slack`; if you read this, it works"
    );

    rx.then([Reply::status(404, "no_service")]);
    let (code, out, err) = warden(dir.path(), &["notify", "test", "slack"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("channel `slack` (slack): Slack answered 404 `no_service`"), "{err}");
    assert!(!err.contains("hunter2webhooktoken") && !out.contains("hunter2webhooktoken"), "{err}");

    let (code, _, err) = warden(dir.path(), &["notify", "test", "mail"]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("channel `mail` (email): SMTP login to 127.0.0.1:{} failed", smtp.port)), "{err}");
    assert!(err.contains("535"), "{err}");
    assert!(!err.contains("not-the-password"), "{err}");
    std::fs::write(dir.path().join("pw"), format!("{SMTP_PASSWORD}\n")).unwrap();
    let (code, out, err) = warden(dir.path(), &["notify", "test", "mail"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("e-mail to oncall@example.com via 127.0.0.1:"), "{out}");
    assert_eq!(smtp.mails().len(), 1);
    assert!(smtp.mails()[0].data.contains("Subject: [TEST]"));

    let (code, _, err) = warden(dir.path(), &["notify", "test", "slak"]);
    assert_eq!(code, 1);
    assert!(err.contains("no channel named `slak` under `notify.channels`, did you mean `slack`?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_silences_add_list_rm() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("warden.yaml"), "state_dir: st\n").unwrap();
    let (code, out, err) = warden(
        dir.path(),
        &["silence", "add", "--match", "job=clicks", "--match", "target=jm", "--for", "2h", "--comment", "deploy"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("silence 1 added: job=clicks target=jm until "), "{out}");
    assert!(out.trim_end().ends_with("(2h)"), "{out}");
    let (_, out, _) = warden(dir.path(), &["silence", "list"]);
    assert!(out.contains("active") && out.contains("job=clicks target=jm") && out.contains("deploy"), "{out}");
    let (_, out, _) = warden(dir.path(), &["silence", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["matchers"], json!(["job=clicks", "target=jm"]));
    assert_eq!(v["active"], true);
    let (code, _, err) = warden(dir.path(), &["silence", "add", "--match", "jbo=clicks", "--for", "1h"]);
    assert_eq!(code, 1);
    assert!(err.contains("--match: unknown match key `jbo`, did you mean `job`?"), "{err}");
    let (code, out, _) = warden(dir.path(), &["silence", "rm", "1"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("silence 1 removed"));
    let (code, _, err) = warden(dir.path(), &["silence", "rm", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no active silence with id 1"), "{err}");
    let (_, out, _) = warden(dir.path(), &["silence", "list"]);
    assert_eq!(out.trim(), "no silences");
    let (_, out, _) = warden(dir.path(), &["silence", "list", "--all"]);
    assert!(out.contains("removed"), "{out}");
}

#[test]
fn check_reports_notify_mistakes_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("warden.yaml"),
        "notify:\n  channels:\n    mail: {type: email, host: h, from: w@example.com, to: [x@example.com]}\n  routes:\n    - channels: [mial]\n",
    )
    .unwrap();
    let (code, out, _) = warden(dir.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains("warden.yaml:5:18: unknown channel `mial`, did you mean `mail`?"), "{out}");
}

// ------------------------------------------------------------------------------------------------------------
// The daemon: the shipped Flink pack against the fake JobManager, notifications to the Slack-like receiver, all on
// one manual clock (`not_running_for: 0s`: an alert fires at the first poll that sees the job down; polls run on
// real time, the notifier's waits only when the test moves the clock).

struct Daemon {
    state_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Arc<warden::runtime::Stats>, warden::runtime::RuntimeError>>,
}

impl Daemon {
    fn start(dir: &Path, clock: &Clock) -> Daemon {
        let (plan, engine) = warden::plan::load(&dir.join("warden.yaml"), None).unwrap_or_else(|d| panic!("{d}"));
        let state_dir = plan.loaded.config.state_dir.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let opts = warden::runtime::RunOptions { clock: clock.clone(), ..Default::default() };
        let task = tokio::spawn(warden::runtime::run(plan, engine, opts, async move {
            let _ = rx.await;
        }));
        Daemon { state_dir, stop: Some(tx), task }
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
    /// The alerts waiting out `group_wait` on channel `slack` for target `jm` and `event`.
    fn waiting(&self, event: &str) -> usize {
        outbox::group(&self.store(), "slack", &outbox::group_key("jm", event)).unwrap().0.len()
    }
}

/// Waits until the fake JobManager has answered `n` job overviews (the daemon has seen its jobs).
async fn polled(fake: &FakeJobManager, n: usize) {
    eventually("polls of the job overview", || {
        fake.request_log().iter().filter(|r| r.as_str() == "GET /jobs/overview").count() >= n
    })
    .await;
}

fn daemon_config(dir: &Path, fake: &FakeJobManager, jobs: &[String], notify: Value) -> PathBuf {
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": [RULES_DIR],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "packs": {"flink": {"every": "200ms", "params": {"not_running_for": "0s", "unreachable_polls": 2,
                                                       "settle_time": "0s", "expected_jobs": jobs}}},
        "scripts": {"max_follow_ups": 60},
        "shutdown_grace": "5s",
        "notify": notify,
    });
    let path = dir.join("warden.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

fn slack_notify(dir: &Path, rx: &Receiver, group_wait: &str) -> Value {
    json!({
        "group_wait": group_wait,
        "retry": {"initial_backoff": "200ms", "max_backoff": "1s"},
        "channels": {"slack": {"type": "slack", "webhook_url": hook_secret(dir, &rx.url())}},
        "default": {"channels": ["slack"]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_turns_a_burst_of_50_failed_jobs_into_one_message() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let jobs: Vec<String> = (0..50).map(|i| format!("job-{i:02}")).collect();
    let jids: Vec<String> = jobs.iter().map(|j| fake.submit(j)).collect();
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    daemon_config(dir.path(), &fake, &jobs, slack_notify(dir.path(), &rx, "3s"));
    let clock = manual_clock();
    let d = Daemon::start(dir.path(), &clock);
    polled(&fake, 2).await;
    for j in &jids {
        fake.fail(j, "org.apache.flink.runtime.taskmanager.TaskManagerLostException", "TaskManager tm-3 lost");
    }
    eventually("50 alerts waiting out group_wait", || d.waiting("firing") == 50).await;
    let group_due = outbox::next_group_due(&d.store()).unwrap();
    assert_eq!(group_due, Some(clock.now() + chrono::Duration::seconds(3)), "one group, due after group_wait");
    assert!(rx.got().is_empty(), "nothing sent before group_wait is over");
    clock.advance(Duration::from_secs(3));
    eventually("the firing message", || !rx.delivered().is_empty()).await;
    eventually("the message marked sent", || outbox::counts(&d.store()).unwrap() == (0, 1, 0)).await;
    assert_eq!(outbox::next_group_due(&d.store()).unwrap(), None, "nothing else waits");
    let msgs = rx.delivered();
    let listed: usize = msgs.iter().map(|m| m["blocks"].as_array().unwrap().len()).sum();
    println!("FIGURE burst: 50 jobs failing at once → {} message(s) with grouping on (group_wait 3s)", msgs.len());
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert_eq!(
        msgs[0]["text"],
        format!("[FIRING] 50 alerts on jm: job-00, job-01, job-02, job-03, job-04 and 45 more")
    );
    assert!(listed >= 22, "20 sections, a summary of the other 30, header and context");
    let alerts = d.journal().iter().filter(|e| e.action == "alert").count();
    assert_eq!(alerts, 50);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_restart_delivers_the_queued_message_once_then_the_resolved() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let jobs = vec!["clicks".to_string(), "views".to_string()];
    let jids: Vec<String> = jobs.iter().map(|j| fake.submit(j)).collect();
    let rx = Receiver::start().await;
    rx.always(Some(Reply::status(503, "down")));
    let dir = tempfile::tempdir().unwrap();
    daemon_config(dir.path(), &fake, &jobs, slack_notify(dir.path(), &rx, "1s"));
    let clock = manual_clock();
    let d = Daemon::start(dir.path(), &clock);
    polled(&fake, 2).await;
    for j in &jids {
        fake.fail(j, "java.lang.IllegalStateException", "Kafka partition clicks-3 has no leader");
    }
    eventually("both alerts waiting out group_wait", || d.waiting("firing") == 2).await;
    // group_wait over: the first attempt; then one more after its backoff (at most max_backoff, 1 s).
    for n in 1..=2 {
        clock.advance(Duration::from_secs(1));
        eventually("a failed attempt", || rx.got().len() >= n).await;
        // ... and recorded, with its next attempt scheduled (before the clock moves again).
        eventually("the attempt recorded", || {
            outbox::heads(&d.store(), |_| false).unwrap().iter().any(|q| q.attempts >= n as u32)
        })
        .await;
    }
    d.stop().await;
    let before = rx.got().len();
    // While Warden is down: Slack comes back and the jobs are running again.
    rx.always(None);
    for j in &jids {
        fake.recover(j);
    }
    let d = Daemon::start(dir.path(), &clock);
    // The jobs run again: both alerts resolve (at once, on the clock), and wait out group_wait.
    eventually("both resolved waiting out group_wait", || d.waiting("resolved") == 2).await;
    assert_eq!(rx.got().len(), before, "nothing is sent before the clock moves");
    // Past the kept message's next attempt and the resolved group's wait: the firing goes first, then the
    // resolved.
    clock.advance(Duration::from_secs(1));
    eventually("the queued firing and then the resolved", || rx.delivered().len() >= 2).await;
    eventually("both marked sent", || outbox::counts(&d.store()).unwrap() == (0, 2, 0)).await;
    assert_eq!(outbox::next_group_due(&d.store()).unwrap(), None, "nothing else waits");
    let msgs = rx.delivered();
    assert_eq!(msgs.len(), 2, "exactly once each: {msgs:#?}");
    assert!(msgs[0]["text"].as_str().unwrap().starts_with("[FIRING] 2 alerts on jm: clicks, views"), "{:#}", msgs[0]);
    assert!(msgs[1]["text"].as_str().unwrap().starts_with("[RESOLVED] 2 alerts on jm: clicks, views"), "{:#}", msgs[1]);
    let section = msgs[0]["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(section.contains("Kafka partition clicks-3 has no leader"), "{section}");
    assert!(section.contains(&format!("/#/job/completed/{}/overview", jids[0])), "{section}");
    assert_eq!(rx.got().len(), before + 2, "no attempt after the restart failed or repeated");
    let notify: Vec<JournalEntry> = d.journal().into_iter().filter(|e| e.action == "notify").collect();
    assert!(notify[0].outcome.starts_with("sent after "), "{notify:#?}");
    assert_eq!(notify[1].outcome, "sent");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_honours_a_silence_added_from_the_cli_while_it_runs() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let jobs = vec!["clicks".to_string()];
    let jid = fake.submit("clicks");
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    daemon_config(dir.path(), &fake, &jobs, slack_notify(dir.path(), &rx, "0s"));
    // The silence's times come from the `warden` process's system clock: the daemon reads the same one (nothing
    // here waits on the notifier's timers).
    let d = Daemon::start(dir.path(), &Clock::System);
    let (code, _, err) =
        warden(dir.path(), &["silence", "add", "--match", "job=clicks", "--for", "1h", "--comment", "planned restart"]);
    assert_eq!(code, 0, "{err}");
    fake.fail(&jid, "java.lang.IllegalStateException", "boom");
    eventually("the silenced alert in the journal", || {
        d.journal().iter().any(|e| e.action == "notify" && e.outcome.starts_with("silenced: silence 1 (job=clicks)"))
    })
    .await;
    let held = outbox::held(&d.store()).unwrap();
    assert_eq!(held.len(), 1, "held back for when the silence ends: {held:?}");
    assert_eq!((held[0].0.as_str(), held[0].2.subject.as_str()), ("slack", "clicks"));
    assert_eq!(outbox::counts(&d.store()).unwrap(), (0, 0, 0), "silenced: not queued");
    assert!(rx.got().is_empty(), "silenced: not sent");
    let (code, _, _) = warden(dir.path(), &["silence", "rm", "1"]);
    assert_eq!(code, 0);
    eventually("the alert, now that the silence is over", || !rx.delivered().is_empty()).await;
    assert!(rx.delivered()[0]["text"].as_str().unwrap().starts_with("[FIRING] job clicks FAILED"));
    d.stop().await;
}

// ------------------------------------------------------------------------------------------------------------
// Hot reload of the `notify` section: `Notifier::reconfigure` on a running notifier.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_moves_a_running_notifier_to_a_new_slack_url_and_sends_nothing_twice() {
    let old = Receiver::start().await;
    let new = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let notify = |url: &str| slack_channel(&path, url, "").replace("group_wait: 0s", "group_wait: 10s");
    let rig = Rig::start_in(dir, &notify(&old.url()), manual_clock());
    rig.submit("firing", "clicks");
    rig.advance(Duration::from_secs(10));
    eventually("clicks at the old URL", || old.delivered_count() == 1).await;
    rig.outcome("sent", |o| o == "sent").await;
    rig.submit("firing", "views"); // waits out its group_wait across the reload

    // A reload that names a channel that does not exist is refused whole: the old settings stay.
    let mut bad = load(&path, &notify(&new.url()));
    bad.notify.default.as_mut().unwrap().channels.push("pager".into());
    let e = rig.notifier.reconfigure(bad.notify, &bad.targets).unwrap_err();
    assert_eq!(e.to_string(), "notify.default.channels: unknown channel `pager`");

    // The operator points the channel at a new webhook (the secret file changed) and reloads.
    let cfg = load(&path, &notify(&new.url()));
    rig.notifier.reconfigure(cfg.notify, &cfg.targets).unwrap();
    rig.advance(Duration::from_secs(10));
    eventually("views at the new URL", || new.delivered_count() == 1).await;
    rig.submit("resolved", "clicks"); // the channel heard clicks fire before the reload: it hears it resolve
    rig.advance(Duration::from_secs(10));
    eventually("the resolved at the new URL", || new.delivered_count() == 2).await;
    rig.submit("firing", "orders");
    rig.advance(Duration::from_secs(10));
    eventually("orders at the new URL", || new.delivered_count() == 3).await;
    eventually("all marked sent", || outbox::counts(&rig.store).unwrap() == (0, 4, 0)).await;
    assert!(rig.idle());

    let texts = |rx: &Receiver| -> Vec<String> {
        rx.delivered().iter().map(|p| p["text"].as_str().unwrap().split(':').next().unwrap().to_string()).collect()
    };
    assert_eq!(texts(&old), ["[FIRING] job clicks FAILED"]);
    assert_eq!(old.got().len(), 1, "the old URL heard nothing after the reload");
    assert_eq!(
        texts(&new),
        ["[FIRING] job views FAILED", "[RESOLVED] job clicks is running again", "[FIRING] job orders FAILED"],
        "each once, in order"
    );
    assert_eq!(new.got().len(), 3);
    let j = rig.notify_journal();
    assert_eq!(j.len(), 4);
    assert!(j.iter().all(|e| e.outcome == "sent"), "{j:#?}");
    rig.stop().await;
}

// ------------------------------------------------------------------------------------------------------------
// Secret hygiene: the real binary, debug logs, every output.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_logs_journal_history_or_any_output() {
    let fake = FakeJobManager::start(FlinkApiVersion::V2).await.unwrap();
    let jid = fake.submit("clicks");
    let rx = Receiver::start().await;
    rx.then([Reply::status(500, "oops"), Reply::status(500, "oops")]);
    rx.always(Some(Reply::status(404, "no_service")));
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::StartTls, LOGIN, &[]);
    let password = "Sup3r-Secret-SMTP-pass";
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": [RULES_DIR],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "packs": {"flink": {"every": "200ms", "params": {"not_running_for": "400ms", "expected_jobs": ["clicks"]}}},
        "shutdown_grace": "2s",
        "notify": {
            "group_wait": "0s",
            "retry": {"initial_backoff": "200ms", "max_backoff": "500ms"},
            "channels": {
                "slack": {"type": "slack", "webhook_url": "${WARDEN_HOOK}"},
                "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "ca_file": "ca.pem",
                         "auth": {"username": SMTP_USER, "password": "${WARDEN_SMTP_PASSWORD}"},
                         "from": "warden@example.com", "to": ["oncall@example.com"]},
            },
            "default": {"channels": ["slack", "mail"]},
        },
    });
    std::fs::write(dir.path().join("warden.yaml"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    // The secrets reach the child processes through their own environment, not this process's.
    let run = |args: &[&str]| {
        let out = Command::new(WARDEN)
            .args(args)
            .arg("--config")
            .arg(dir.path().join("warden.yaml"))
            .env("WARDEN_HOOK", rx.url())
            .env("WARDEN_SMTP_PASSWORD", password)
            .env("WARDEN_LOG", "debug")
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let daemon = Command::new(WARDEN)
        .args(["run", "--config"])
        .arg(dir.path().join("warden.yaml"))
        .env("WARDEN_HOOK", rx.url())
        .env("WARDEN_SMTP_PASSWORD", password)
        .env("WARDEN_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    polled(&fake, 2).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "boom");
    let db = dir.path().join("state");
    // A child process on the system clock: its retries (200 to 500 ms) take real time.
    eventually("both channels failed", || {
        let Ok(s) = Store::open(&db) else { return false };
        let e = s.entries(None).unwrap_or_default();
        e.iter().any(|e| e.detail == "slack" && e.outcome.starts_with("failed:"))
            && e.iter().any(|e| e.detail == "mail" && e.outcome.starts_with("retrying: SMTP login"))
    })
    .await;
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let out = daemon.wait_with_output().unwrap();
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(logs.contains("delivery failed, will retry"), "the failures are logged: {logs}");

    let mut texts = vec![("daemon logs", logs)];
    texts.push(("history", run(&["history"])));
    texts.push(("history json", run(&["history", "--format", "json"])));
    texts.push(("check", run(&["check"])));
    texts.push(("check json", run(&["check", "--format", "json"])));
    texts.push(("notify test slack", run(&["notify", "test", "slack"])));
    texts.push(("notify test mail", run(&["notify", "test", "mail"])));
    texts.push(("silence list", run(&["silence", "list", "--all"])));
    for f in ["warden.db", "warden.db-wal", "alerts.jsonl"] {
        let bytes = std::fs::read(db.join(f)).unwrap_or_default();
        texts.push((f, String::from_utf8_lossy(&bytes).into_owned()));
    }
    let hook = rx.url();
    for (what, text) in &texts {
        for secret in [password, hook.as_str(), "hunter2webhooktoken"] {
            assert!(!text.contains(secret), "`{secret}` appears in {what}:\n{text}");
        }
    }
    assert!(texts[1].1.contains("notify slack") && texts[1].1.contains("404 `no_service`"), "{}", texts[1].1);
    assert!(texts[5].1.contains("404 `no_service`"), "{}", texts[5].1);
    assert!(texts[6].1.contains("535"), "{}", texts[6].1);
    assert!(smtp.mails().is_empty(), "the wrong password sent nothing");
}

// ------------------------------------------------------------------------------------------------------------
// Figures: latency and outbox drain (printed; run with `--nocapture` to see them).

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_latency_and_outbox_drain_after_an_outage() {
    // 1. Alert-to-delivery latency on loopback: `Notifier::submit` of a firing alert → the receiver has it.
    let rx = Receiver::start().await;
    let rig = slack_rig(&rx, "");
    let mut lat = vec![];
    for i in 0..200 {
        let arrived = rx.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let t = Instant::now();
        rig.submit("firing", &format!("job{i}"));
        tokio::time::timeout(WAIT, arrived).await.expect("delivered");
        lat.push(rx.last_at() - t);
    }
    lat.sort();
    let (p50, p99) = (pct(&lat, 0.5), pct(&lat, 0.99));
    println!("FIGURE latency slack (200 firing alerts, group_wait 0s): median {p50:?}, p99 {p99:?}");
    assert!(p99 < Duration::from_millis(500), "{lat:?}");
    rig.stop().await;

    // 2. The same for e-mail, to the in-process SMTP server (plain SMTP on loopback).
    let dir = tempfile::tempdir().unwrap();
    let smtp = smtp::Server::start(dir.path(), Security::Plain, None, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "none", ""), manual_clock());
    let mut lat = vec![];
    for i in 0..50 {
        let t = Instant::now();
        rig.submit("firing", &format!("job{i}"));
        smtp.wait_for(i + 1).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "FIGURE latency e-mail (50 firing alerts, in-process SMTP server): median {:?}, p99 {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    assert!(pct(&lat, 0.99) < Duration::from_secs(2), "{lat:?}");
    assert_eq!(smtp.mails().len(), 50, "each once");
    drop(smtp);
    rig.stop().await;

    // 3. Outbox drain after a 10-minute Slack outage with 1,000 queued messages (simulated clock: one alert
    //    every 0.6 s of clock time, each its own message; the receiver answers 503 throughout).
    for lanes in [1usize, 10] {
        let rx = Receiver::start().await;
        rx.always(Some(Reply::status(503, "")));
        let clock = manual_clock();
        // The default retry settings: 1 s doubling to 5 min.
        let dir = tempfile::tempdir().unwrap();
        let notify = slack_channel_retry(dir.path(), &rx.url(), "{}", "");
        let rig = Rig::start_in(dir, &notify, clock.clone());
        let retry_during = {
            // 1000 alerts over 10 minutes of clock time.
            for i in 0..1000usize {
                rig.notifier.submit(&record("firing", &format!("jm{}", i % lanes), &format!("job{i}"))).unwrap();
                // Queued as its own message before the next one comes (else they would be grouped): polled
                // every millisecond, as this happens 2,000 times.
                let want = i as u64 + 1;
                let deadline = Instant::now() + WAIT;
                while {
                    let (p, s, f) = outbox::counts(&rig.store).unwrap();
                    p + s + f < want
                } {
                    assert!(Instant::now() < deadline, "alert {i} not queued");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                rig.advance(Duration::from_millis(600));
            }
            rx.state.lock().unwrap().got.len()
        };
        assert_eq!(outbox::counts(&rig.store).unwrap().0, 1000, "all queued, none lost");
        rx.always(None);
        let t = Instant::now();
        // Every lane's next attempt is at most one max_backoff (5 min) plus its jitter away: two cover it.
        rig.advance(Duration::from_secs(600));
        eventually("drained", || rx.delivered_count() == 1000).await;
        let took = t.elapsed();
        println!(
            "FIGURE drain ({lanes} lane(s)): 1000 queued after a 10-min outage ({retry_during} attempts during it) \
             drained in {took:?} = {:.0} msg/s",
            1000.0 / took.as_secs_f64()
        );
        eventually("all marked sent", || outbox::counts(&rig.store).unwrap() == (0, 1000, 0)).await;
        let mut texts: Vec<String> = rx.delivered().iter().map(|p| p["text"].as_str().unwrap().to_string()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 1000, "no duplicates");
        rig.stop().await;
    }
}
