//! Notifications against their real counterparts on loopback: a real SMTP server (aiosmtpd, started by these
//! tests; `python3 -m pip install aiosmtpd==1.4.6`) in plain, STARTTLS (self-signed CA) and implicit-TLS modes;
//! an HTTP receiver that answers like Slack's webhook endpoint (200 `ok`, 400 `invalid_payload`/`no_text`, 404
//! `no_service`, 429 with `Retry-After`, 500, slow answers); the shipped `notify-webhook` plugin; the CLI; and the
//! daemon across a restart. The last test prints the figures of the issue note.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
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

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
const PLUGIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins/notify-webhook/notify-webhook");
const WAIT: Duration = Duration::from_secs(30);
/// The webhook path: the token in it is the secret that must never be printed.
const HOOK_PATH: &str = "/services/T0WARDEN/B0WARDEN/hunter2webhooktoken";
const SMTP_USER: &str = "warden";
const SMTP_PASSWORD: &str = "correct-horse-battery-staple";

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
// A real SMTP server: aiosmtpd, in a Python process, recording each accepted message as one JSON line.

const SMTPD: &str = r#"
import asyncio, json, logging, ssl, sys, warnings
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

warnings.filterwarnings("ignore")
logging.getLogger("mail.log").setLevel(logging.CRITICAL)

cfg = json.load(open(sys.argv[1]))

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in cfg.get("reject", []):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        tls = session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None
        rec = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
               "data": envelope.content.decode("utf-8", "replace"), "tls": tls,
               "authenticated": bool(session.authenticated)}
        with open(cfg["out"], "a") as f:
            f.write(json.dumps(rec) + "\n")
        return "250 2.0.0 queued"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == cfg["user"] \
        and auth_data.password.decode() == cfg["password"]
    return AuthResult(success=ok, handled=False)

async def main():
    mode = cfg["mode"]
    ctx = None
    if mode != "plain":
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cfg["cert"], cfg["key"])
    auth = "user" in cfg
    def factory():
        return SMTP(Handler(), hostname="smtp.test", enable_SMTPUTF8=True,
                    tls_context=ctx if mode == "starttls" else None, require_starttls=(mode == "starttls"),
                    authenticator=authenticator if auth else None, auth_required=auth,
                    auth_require_tls=(mode == "starttls"))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx if mode == "tls" else None)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it: `(ca.pem, cert.pem, key.pem)`.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Warden test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "smtp.test");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let p = |n: &str, s: String| {
        let path = dir.join(n);
        std::fs::write(&path, s).unwrap();
        path
    };
    (p("ca.pem", ca.pem()), p("cert.pem", cert.pem()), p("key.pem", key.serialize_pem()))
}

impl Smtp {
    /// Starts aiosmtpd in `mode` (`plain`, `starttls`, `tls`), requiring login when `auth`, refusing mail to
    /// the addresses in `reject` with 550.
    fn start(dir: &Path, mode: &str, auth: bool, reject: &[&str]) -> Smtp {
        let out = dir.join(format!("smtp-{mode}.jsonl"));
        let mut cfg = json!({"mode": mode, "out": out, "reject": reject});
        if mode != "plain" {
            let (_, cert, key) = test_ca(dir);
            cfg["cert"] = json!(cert);
            cfg["key"] = json!(key);
        }
        if auth {
            cfg["user"] = json!(SMTP_USER);
            cfg["password"] = json!(SMTP_PASSWORD);
        }
        let cfg_path = dir.join(format!("smtpd-{mode}.json"));
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let script = dir.join("smtpd.py");
        std::fs::write(&script, SMTPD).unwrap();
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(&cfg_path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("aiosmtpd did not start (is it installed? python3 -m pip install aiosmtpd==1.4.6); said {line:?}")
        });
        Smtp { child, port, out }
    }

    fn mails(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

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
// The notifier in-process, on a real store, with the system clock.

struct Rig {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    notifier: Arc<Notifier>,
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
    fn start(notify: &str) -> Rig {
        Self::start_in(tempfile::tempdir().unwrap(), notify, Clock::System)
    }

    fn start_in(dir: tempfile::TempDir, notify: &str, clock: Clock) -> Rig {
        let cfg = load(dir.path(), notify);
        let store = Arc::new(Store::open(&cfg.state_dir).unwrap());
        let notifier =
            Arc::new(Notifier::new(cfg.notify, &cfg.targets, store.clone(), clock, Events::default()).unwrap());
        let stop = CancellationToken::new();
        let task = tokio::spawn(notifier.clone().run(stop.clone()));
        Rig { dir, store, notifier, stop, task }
    }

    async fn stop(self) -> tempfile::TempDir {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("the notifier stops").unwrap();
        self.dir
    }

    fn submit(&self, event: &str, job: &str) {
        self.notifier.submit(&record(event, "jm", job)).unwrap();
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
    let smtp = Smtp::start(dir.path(), "plain", false, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "none", ""), Clock::System);
    rig.submit("firing", "clicks");
    eventually("the mail", || !smtp.mails().is_empty()).await;
    let m = &smtp.mails()[0];
    assert_eq!(m["mail_from"], "warden@example.com");
    let mut rcpt: Vec<&str> = m["rcpt_tos"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    rcpt.sort();
    assert_eq!(rcpt, ["audit@example.com", "lead@example.com", "oncall@example.com", "team@example.com"]);
    let data = m["data"].as_str().unwrap();
    assert_eq!(header(data, "From").unwrap(), "Warden <warden@example.com>");
    assert_eq!(header(data, "To").unwrap(), "oncall@example.com, \"Ops Lead\" <lead@example.com>");
    assert_eq!(header(data, "Cc").unwrap(), "team@example.com");
    assert_eq!(header(data, "Bcc"), None, "Bcc recipients get the mail, no header names them");
    assert_eq!(header(data, "Subject").unwrap(), "[FIRING] job clicks FAILED: java.io.IOException: disk full");
    let date = header(data, "Date").unwrap();
    let date = chrono::DateTime::parse_from_rfc2822(&date).unwrap_or_else(|e| panic!("Date `{date}`: {e}"));
    assert!((Utc::now() - date.with_timezone(&Utc)).num_seconds().abs() < 60, "{date}");
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
    assert!(!m["tls"].as_bool().unwrap());
    let j = rig.outcome("sent", |o| o == "sent").await;
    assert_eq!((j[0].detail.as_str(), j[0].subject.as_str()), ("mail", "clicks"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_starttls_with_a_custom_ca_and_login() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path(), "starttls", true, &[]);
    std::env::set_var("WARDEN_IT_SMTP_PASSWORD_OK", SMTP_PASSWORD);
    let extra = format!(
        "      ca_file: ca.pem\n      auth: {{username: {SMTP_USER}, password: '${{WARDEN_IT_SMTP_PASSWORD_OK}}'}}\n"
    );
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "starttls", &extra), Clock::System);
    rig.submit("firing", "clicks");
    eventually("the mail", || !smtp.mails().is_empty()).await;
    let m = &smtp.mails()[0];
    assert!(m["tls"].as_bool().unwrap(), "sent after STARTTLS: {m}");
    assert!(m["authenticated"].as_bool().unwrap());
    rig.outcome("sent", |o| o == "sent").await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path(), "tls", false, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "tls", "      ca_file: ca.pem\n"), Clock::System);
    rig.submit("firing", "clicks");
    eventually("the mail", || !smtp.mails().is_empty()).await;
    assert!(smtp.mails()[0]["tls"].as_bool().unwrap());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_without_the_custom_ca_is_a_tls_error_and_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path(), "starttls", false, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "starttls", ""), Clock::System);
    rig.submit("firing", "clicks");
    let j = rig.outcome("an error", |o| o.starts_with("retrying:")).await;
    let o = &j[0].outcome;
    assert!(o.starts_with(&format!("retrying: TLS with SMTP server 127.0.0.1:{} failed", smtp.port)), "{o}");
    assert!(o.contains("UnknownIssuer"), "the certificate is not trusted without ca_file: {o}");
    assert_eq!(outbox::counts(&rig.store).unwrap().0, 1);
    assert!(smtp.mails().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_with_a_wrong_password_is_a_clear_error_and_stays_queued_until_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path(), "starttls", true, &[]);
    std::fs::write(dir.path().join("smtp-password"), "wrong-password-123\n").unwrap();
    let extra =
        format!("      ca_file: ca.pem\n      auth: {{username: {SMTP_USER}, password: 'file:smtp-password'}}\n");
    let notify = email_channel(smtp.port, "starttls", &extra);
    let rig = Rig::start_in(dir, &notify, Clock::System);
    rig.submit("firing", "clicks");
    let j = rig.outcome("a login error", |o| o.starts_with("retrying: SMTP login to")).await;
    let o = &j[0].outcome;
    assert!(o.contains("535") && o.contains("check the channel's `auth`"), "{o}");
    assert!(!o.contains("wrong-password-123"), "{o}");
    assert_eq!(outbox::counts(&rig.store).unwrap(), (1, 0, 0), "kept in the outbox");
    let dir = rig.stop().await;
    // The operator fixes the password; the next start sends the kept message, once.
    std::fs::write(dir.path().join("smtp-password"), format!("{SMTP_PASSWORD}\n")).unwrap();
    let rig = Rig::start_in(dir, &notify, Clock::System);
    eventually("the mail", || !smtp.mails().is_empty()).await;
    rig.outcome("sent after retries", |o| o.starts_with("sent after")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.mails().len(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_refused_with_5xx_is_journalled_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path(), "plain", false, &["oncall@example.com"]);
    let notify = email_channel(smtp.port, "none", "").replace(
        "to: [oncall@example.com, 'Ops Lead <lead@example.com>']\n      cc: [team@example.com]\n      bcc: [audit@example.com]",
        "to: [oncall@example.com]",
    );
    let rig = Rig::start_in(dir, &notify, Clock::System);
    rig.submit("firing", "clicks");
    let j = rig.outcome("failed", |o| o.starts_with("failed:")).await;
    assert!(j[0].outcome.contains("refused the message") && j[0].outcome.contains("550"), "{}", j[0].outcome);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 0, 1));
    assert_eq!(rig.notify_journal().len(), 1);
    rig.stop().await;
}

// ------------------------------------------------------------------------------------------------------------
// Slack

fn slack_channel(url: &str, extra: &str) -> String {
    slack_channel_retry(url, "{initial_backoff: 300ms, max_backoff: 2s}", extra)
}

fn slack_channel_retry(url: &str, retry: &str, extra: &str) -> String {
    format!(
        "  group_wait: 0s\n  retry: {retry}\n  default: {{channels: [slack]}}\n  channels:\n    slack:\n      type: slack\n      webhook_url: '${{WARDEN_IT_SLACK_HOOK_{}}}'\n      username: warden\n      icon_emoji: ':rotating_light:'\n      timeout: 3s\n{extra}",
        set_hook_var(url)
    )
}

/// Each test gets its own variable (tests run in parallel in one process).
fn set_hook_var(url: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string();
    std::env::set_var(format!("WARDEN_IT_SLACK_HOOK_{n}"), url);
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_block_kit_blocks_and_the_plain_text_once() {
    let rx = Receiver::start().await;
    let rig = Rig::start(&slack_channel(&rx.url(), ""));
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len(), 1, "exactly one post");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_permanent_errors_are_journalled_with_the_reason_and_not_retried() {
    let rx = Receiver::start().await;
    rx.then([Reply::status(400, "invalid_payload"), Reply::status(400, "no_text"), Reply::status(404, "no_service")]);
    let rig = Rig::start(&slack_channel(&rx.url(), ""));
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
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.got().len(), 3, "not retried");
    assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 0, 3));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_429_waits_retry_after() {
    let rx = Receiver::start().await;
    rx.then([Reply { retry_after: Some(2), ..Reply::status(429, "rate_limited") }]);
    let rig = Rig::start(&slack_channel(&rx.url(), ""));
    rig.submit("firing", "clicks");
    eventually("delivered", || !rx.delivered().is_empty()).await;
    let g = rx.got();
    assert_eq!(g[0].status, 429);
    let waited = g[1].at - g[0].at;
    assert!(waited >= Duration::from_millis(1900), "Retry-After: 2 honoured, waited {waited:?}");
    let j = rig.outcome("sent after", |o| o.starts_with("sent after 1 retries")).await;
    assert!(j.iter().all(|e| !e.outcome.starts_with("failed")));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_500_is_retried_with_growing_backoff_without_duplicates_and_in_order() {
    let rx = Receiver::start().await;
    rx.then([Reply::status(500, ""), Reply::status(500, ""), Reply::status(500, ""), Reply::status(503, "")]);
    let rig = Rig::start(&slack_channel(&rx.url(), ""));
    rig.submit("firing", "clicks");
    // Queued behind the firing in the same lane while it is retried: the resolved must not overtake it.
    eventually("a first failure", || !rx.got().is_empty()).await;
    rig.submit("resolved", "clicks");
    eventually("both delivered", || rx.delivered().len() == 2).await;
    let g = rx.got();
    assert_eq!(g.iter().map(|g| g.status).collect::<Vec<_>>(), [500, 500, 500, 503, 200, 200]);
    let gaps: Vec<Duration> = g.windows(2).take(4).map(|w| w[1].at - w[0].at).collect();
    // initial 300 ms doubling (jitter: half to full): ≥150, ≥300, ≥600, ≥1200 ms.
    for (i, (gap, min)) in gaps.iter().zip([150u64, 300, 600, 1000]).enumerate() {
        assert!(*gap >= Duration::from_millis(min), "gap {i} was {gap:?}: {gaps:?}");
    }
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
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rx.delivered().len(), 2, "no duplicates");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_slow_answer_within_the_timeout_is_one_delivery_and_beyond_it_a_retry() {
    let rx = Receiver::start().await;
    rx.then([Reply { delay: Duration::from_millis(1500), ..Reply::ok() }]);
    let rig = Rig::start(&slack_channel(&rx.url(), ""));
    rig.submit("firing", "clicks");
    rig.outcome("sent", |o| o == "sent").await;
    assert_eq!(rx.got().len(), 1);

    rx.then([Reply { delay: Duration::from_secs(5), ..Reply::ok() }]);
    rig.submit("firing", "views");
    let j = rig.outcome("a timeout", |o| o.starts_with("retrying: Slack webhook call timed out")).await;
    assert!(!j.iter().any(|e| e.outcome.contains("hunter2webhooktoken")), "{j:#?}");
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
    let rig = Rig::start(&notify);
    rig.submit("firing", "clicks");
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
    let smtp = Smtp::start(dir.path(), "starttls", true, &[]);
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
    assert!(smtp.mails()[0]["data"].as_str().unwrap().contains("Subject: [TEST]"));

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
// The daemon: the shipped Flink pack against the fake JobManager, notifications to the Slack-like receiver.

struct Daemon {
    state_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<Arc<warden::runtime::Stats>, warden::runtime::RuntimeError>>,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let (plan, engine) = warden::plan::load(&dir.join("warden.yaml"), None).unwrap_or_else(|d| panic!("{d}"));
        let state_dir = plan.loaded.config.state_dir.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(warden::runtime::run(plan, engine, Default::default(), async move {
            let _ = rx.await;
        }));
        Daemon { state_dir, stop: Some(tx), task }
    }
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task).await.expect("stops in time").unwrap().expect("ran");
    }
    fn journal(&self) -> Vec<JournalEntry> {
        Store::open(&self.state_dir).and_then(|s| s.entries(None)).unwrap()
    }
}

fn daemon_config(dir: &Path, fake: &FakeJobManager, jobs: &[String], notify: Value) -> PathBuf {
    let cfg = json!({
        "state_dir": "state",
        "pack_paths": [RULES_DIR],
        "targets": [{"name": "jm", "url": fake.url(), "timeout": "2s"}],
        "packs": {"flink": {"every": "200ms", "params": {"not_running_for": "400ms", "unreachable_polls": 2,
                                                       "expected_jobs": jobs}}},
        "scripts": {"max_follow_ups": 60},
        "shutdown_grace": "5s",
        "notify": notify,
    });
    let path = dir.join("warden.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    path
}

fn slack_notify(rx: &Receiver, group_wait: &str) -> Value {
    json!({
        "group_wait": group_wait,
        "retry": {"initial_backoff": "200ms", "max_backoff": "1s"},
        "channels": {"slack": {"type": "slack", "webhook_url": format!("${{WARDEN_IT_SLACK_HOOK_{}}}", set_hook_var(&rx.url()))}},
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
    daemon_config(dir.path(), &fake, &jobs, slack_notify(&rx, "3s"));
    let d = Daemon::start(dir.path());
    tokio::time::sleep(Duration::from_millis(600)).await;
    for j in &jids {
        fake.fail(j, "org.apache.flink.runtime.taskmanager.TaskManagerLostException", "TaskManager tm-3 lost");
    }
    eventually("the firing message", || !rx.delivered().is_empty()).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // one more group_wait: nothing else comes
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
    daemon_config(dir.path(), &fake, &jobs, slack_notify(&rx, "1s"));
    let d = Daemon::start(dir.path());
    tokio::time::sleep(Duration::from_millis(600)).await;
    for j in &jids {
        fake.fail(j, "java.lang.IllegalStateException", "Kafka partition clicks-3 has no leader");
    }
    eventually("two failed attempts", || rx.got().len() >= 2).await;
    d.stop().await;
    let before = rx.got().len();
    // While Warden is down: Slack comes back and the jobs are running again.
    rx.always(None);
    for j in &jids {
        fake.recover(j);
    }
    let d = Daemon::start(dir.path());
    eventually("the queued firing and then the resolved", || rx.delivered().len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
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
    daemon_config(dir.path(), &fake, &jobs, slack_notify(&rx, "0s"));
    let d = Daemon::start(dir.path());
    let (code, _, err) =
        warden(dir.path(), &["silence", "add", "--match", "job=clicks", "--for", "1h", "--comment", "planned restart"]);
    assert_eq!(code, 0, "{err}");
    fake.fail(&jid, "java.lang.IllegalStateException", "boom");
    eventually("the silenced alert in the journal", || {
        d.journal().iter().any(|e| e.action == "notify" && e.outcome.starts_with("silenced: silence 1 (job=clicks)"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(rx.got().is_empty(), "silenced: not sent");
    let (code, _, _) = warden(dir.path(), &["silence", "rm", "1"]);
    assert_eq!(code, 0);
    eventually("the alert, now that the silence is over", || !rx.delivered().is_empty()).await;
    assert!(rx.delivered()[0]["text"].as_str().unwrap().starts_with("[FIRING] job clicks FAILED"));
    d.stop().await;
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
    let smtp = Smtp::start(dir.path(), "starttls", true, &[]);
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
    tokio::time::sleep(Duration::from_millis(800)).await;
    fake.fail(&jid, "java.lang.IllegalStateException", "boom");
    let db = dir.path().join("state");
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
    let rig = Rig::start(&slack_channel(&rx.url(), ""));
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

    let dir = tempfile::tempdir().unwrap();
    let smtp = Smtp::start(dir.path(), "plain", false, &[]);
    let rig = Rig::start_in(dir, &email_channel(smtp.port, "none", ""), Clock::System);
    let mut lat = vec![];
    for i in 0..50 {
        let t = Instant::now();
        rig.submit("firing", &format!("job{i}"));
        eventually("the mail", || smtp.mails().len() > i).await;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "FIGURE latency e-mail (50 firing alerts, aiosmtpd, file polled every 20 ms): median {:?}, p99 {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    drop(smtp);
    rig.stop().await;

    // 3. Outbox drain after a 10-minute Slack outage with 1,000 queued messages (simulated clock: one alert
    //    every 0.6 s of clock time, each its own message; the receiver answers 503 throughout).
    for lanes in [1usize, 10] {
        let rx = Receiver::start().await;
        rx.always(Some(Reply::status(503, "")));
        let clock = Clock::manual(Utc::now());
        // The default retry settings: 1 s doubling to 5 min.
        let notify = slack_channel_retry(&rx.url(), "{}", "");
        let rig = Rig::start_in(tempfile::tempdir().unwrap(), &notify, clock.clone());
        let retry_during = {
            // 1000 alerts over 10 minutes of clock time.
            for i in 0..1000usize {
                rig.notifier.submit(&record("firing", &format!("jm{}", i % lanes), &format!("job{i}"))).unwrap();
                let want = i as u64 + 1;
                eventually("queued", || {
                    let (p, s, f) = outbox::counts(&rig.store).unwrap();
                    p + s + f == want
                })
                .await;
                clock.advance(Duration::from_millis(600));
                rig.notifier.wake();
            }
            rx.state.lock().unwrap().got.len()
        };
        assert_eq!(outbox::counts(&rig.store).unwrap().0, 1000, "all queued, none lost");
        rx.always(None);
        clock.advance(Duration::from_secs(300)); // at most one max_backoff after the outage ends
        let t = Instant::now();
        rig.notifier.wake();
        eventually("drained", || rx.delivered_count() == 1000).await;
        let took = t.elapsed();
        println!(
            "FIGURE drain ({lanes} lane(s)): 1000 queued after a 10-min outage ({retry_during} attempts during it) \
             drained in {took:?} = {:.0} msg/s",
            1000.0 / took.as_secs_f64()
        );
        assert_eq!(outbox::counts(&rig.store).unwrap(), (0, 1000, 0));
        let mut texts: Vec<String> = rx.delivered().iter().map(|p| p["text"].as_str().unwrap().to_string()).collect();
        texts.sort();
        texts.dedup();
        assert_eq!(texts.len(), 1000, "no duplicates");
        rig.stop().await;
    }
}
