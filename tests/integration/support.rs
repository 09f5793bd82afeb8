//! Shared helpers: a fake JobManager with a job, configurations written to a temp dir (as JSON, which is YAML),
//! the daemon run in-process with a oneshot shutdown, and waiting on its events or on conditions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fake_flink::{FakeJobManager, FlinkApiVersion};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, oneshot};
use warden::event::{Event, Events};
use warden::model::AlertRecord;
use warden::runtime::{self, RunOptions, RuntimeError, Stats};
use warden::store::{JournalEntry, Store};

/// The shipped Flink pack.
pub const RULES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
/// The `warden` binary built for these tests.
pub const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
/// How long any wait may take before the test fails (generous: the machine may be loaded).
pub const WAIT: Duration = Duration::from_secs(20);

/// Generates one test per Flink API generation (`v1::name`, `v2::name`) from `async fn name(v: FlinkApiVersion)`.
#[macro_export]
macro_rules! both_versions {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {
        mod v1 {
            $( $(#[$m])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(fake_flink::FlinkApiVersion::V1).await } )*
        }
        mod v2 {
            $( $(#[$m])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(fake_flink::FlinkApiVersion::V2).await } )*
        }
    };
}

/// Merges `over` into `base` (objects key by key, anything else replaced).
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(bv) if bv.is_object() && v.is_object() => merge(bv, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// A configuration that watches `url` (target `jm`) with the shipped Flink pack every 200 ms, with short `for`
/// parameters, and `over` merged in.
pub fn flink_config(url: &str, over: Value) -> Value {
    let mut c = json!({
        "state_dir": "state",
        "pack_paths": [RULES_DIR],
        "targets": [{"name": "jm", "url": url, "timeout": "2s"}],
        "packs": {"flink": {"every": "200ms", "params": {"not_running_for": "400ms", "unreachable_polls": 2, "settle_time": "600ms"}}},
        "shutdown_grace": "5s",
    });
    merge(&mut c, over);
    c
}

/// A fake JobManager with a jar for `job` (so `demo-relaunch` can resubmit it) and one RUNNING run of it.
pub async fn fake_with_job(v: FlinkApiVersion, job: &str) -> (FakeJobManager, String) {
    let fake = FakeJobManager::start(v).await.expect("fake JobManager starts");
    fake.add_jar(&format!("{job}.jar"), "com.example.Job", job);
    let jid = fake.submit(job);
    (fake, jid)
}

/// A `commands:` entry that appends its arguments (`{target_url}`, `{job}`, `{jid}`, one per line, then `<end>`)
/// to `record`, then relaunches the job on the fake with `warden demo-relaunch`.
pub fn recording_relaunch(record: &Path) -> Value {
    json!({
        "argv": ["sh", "-c",
                 "printf '%s\\n' \"$@\" '<end>' >> \"$0\" && exec \"$WARDEN_EXE\" demo-relaunch \"$1\" \"$2\"",
                 record, "{target_url}", "{job}", "{jid}"],
        "env": {"WARDEN_EXE": WARDEN},
        "timeout": "20s",
    })
}

/// The argument vectors a recording command received, one per invocation.
pub fn invocations(record: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    let mut out = vec![];
    let mut cur = vec![];
    for line in text.lines() {
        if line == "<end>" {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(line.to_string());
        }
    }
    out
}

/// Writes a pack `plugins/<name>/` under `dir`: one probe `p` of `/jobs/overview` every 200 ms judged by `rules`
/// (`(short name, source)`, in that order).
pub fn write_pack(dir: &Path, name: &str, rules: &[(&str, &str)]) -> PathBuf {
    let pdir = dir.join("plugins").join(name);
    std::fs::create_dir_all(&pdir).expect("pack dir");
    let names: Vec<&str> = rules.iter().map(|(n, _)| *n).collect();
    let manifest = format!(
        "name: {name}\nversion: 0.1.0\nprobes:\n  - name: p\n    every: 200ms\n    request:\n      path: /jobs/overview\n    rules: [{}]\n",
        names.join(", ")
    );
    std::fs::write(pdir.join("pack.yaml"), manifest).expect("pack.yaml");
    for (n, src) in rules {
        std::fs::write(pdir.join(format!("{n}.rhai")), src).expect("rule file");
    }
    pdir
}

/// Writes `cfg` as `<dir>/warden.yaml` (JSON is YAML) and returns its path.
pub fn write_config(dir: &Path, cfg: &Value) -> PathBuf {
    let path = dir.join("warden.yaml");
    std::fs::write(&path, serde_json::to_string_pretty(cfg).expect("json")).expect("write warden.yaml");
    path
}

/// True for an alert event `event` (`firing`, `resolved`, `giving_up`, …) of `rule` about `subject`.
pub fn is_alert(e: &Event, event: &str, rule: &str, subject: &str) -> bool {
    matches!(e, Event::Alert(a) if a.event == event && a.rule == rule && a.subject == subject)
}

/// The alert record of an event (panics on other events).
pub fn record(e: Event) -> AlertRecord {
    match e {
        Event::Alert(a) => a,
        other => panic!("not an alert: {other:?}"),
    }
}

/// The journal's `run` entries about `subject`.
pub fn runs<'a>(journal: &'a [JournalEntry], subject: &str) -> Vec<&'a JournalEntry> {
    journal.iter().filter(|e| e.action == "run" && e.subject == subject).collect()
}

/// Runs `f` until it is true, checking every 50 ms, for at most [`WAIT`].
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon, running in this process.
pub struct Daemon {
    /// The directory holding `warden.yaml` and the state (removed when the daemon is dropped).
    dir: Option<TempDir>,
    /// The state directory.
    pub state_dir: PathBuf,
    rx: broadcast::Receiver<Event>,
    /// Every event received so far.
    pub seen: Vec<Event>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<Arc<Stats>, RuntimeError>>>,
}

impl Daemon {
    /// Writes `cfg` into a new temp dir and starts the daemon on it.
    pub async fn start(cfg: Value) -> Daemon {
        Self::start_in(tempfile::tempdir().expect("tempdir"), cfg).await
    }

    /// Writes `cfg` into `dir` (which may already hold packs) and starts the daemon on it.
    pub async fn start_in(dir: TempDir, cfg: Value) -> Daemon {
        write_config(dir.path(), &cfg);
        Self::launch(dir, false)
    }

    /// Starts the daemon on `<dir>/warden.yaml`, in dry-run mode if asked.
    pub fn launch(dir: TempDir, dry_run: bool) -> Daemon {
        let path = dir.path().join("warden.yaml");
        let (plan, engine) = warden::plan::load(&path, None).unwrap_or_else(|d| panic!("config does not load:\n{d}"));
        let state_dir = plan.loaded.config.state_dir.clone();
        let events = Events::default();
        let rx = events.subscribe();
        let (tx, stop_rx) = oneshot::channel::<()>();
        let opts = RunOptions { events, dry_run, ..Default::default() };
        let task = tokio::spawn(runtime::run(plan, engine, opts, async move {
            let _ = stop_rx.await;
        }));
        Daemon { dir: Some(dir), state_dir, rx, seen: vec![], stop: Some(tx), task: Some(task) }
    }

    fn tail(&self) -> String {
        let from = self.seen.len().saturating_sub(15);
        format!("{:#?}", &self.seen[from..])
    }

    /// Waits (at most [`WAIT`]) for an event matching `pred`, keeping every event in `seen`.
    pub async fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
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
                Err(_) => panic!("timed out after {WAIT:?} waiting for {what}; last events: {}", self.tail()),
            }
        }
    }

    /// The first event already received that matches `pred`, or else the next one to arrive (for events of
    /// independent probes, whose order is not fixed).
    pub async fn seen_or_wait_for(&mut self, what: &str, mut pred: impl FnMut(&Event) -> bool) -> Event {
        match self.seen.iter().find(|e| pred(e)) {
            Some(e) => e.clone(),
            None => self.wait_for(what, pred).await,
        }
    }

    /// Waits for `n` more polls of `target` (answered or failed).
    ///
    /// Only the polls of probes that judge the whole target count: the Flink pack's per-job probes
    /// (`job-checkpoints`, `job-vertices`) and `cluster-overview` run beside `jobs-overview` at the same interval, so
    /// counting them would let a test go on before `jobs-overview` was judged. A probe's task evaluates a poll
    /// before it polls again, so after `n` polls the first `n - 1` have been judged and committed.
    pub async fn polls(&mut self, n: usize) {
        const BESIDE: [&str; 3] = ["flink/job-checkpoints", "flink/job-vertices", "flink/cluster-overview"];
        for i in 0..n {
            self.wait_for(
                &format!("poll {} of {n}", i + 1),
                |e| matches!(e, Event::Observed { probe, .. } if !BESIDE.contains(&probe.as_str())),
            )
            .await;
        }
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.as_ref().expect("dir").path().join("warden.yaml")
    }

    /// The journal, oldest first.
    pub fn journal(&self) -> Vec<JournalEntry> {
        Store::open(&self.state_dir).and_then(|s| s.entries(None)).expect("journal readable")
    }

    /// The lines of `<state_dir>/alerts.jsonl`, parsed.
    pub fn alert_log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state_dir.join("alerts.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alert log line {l:?}: {e}"))).collect()
    }

    async fn halt(&mut self) -> Arc<Stats> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("the daemon stops in time")
            .expect("the daemon task does not panic")
            .expect("the daemon ran")
    }

    /// Stops the daemon (as SIGTERM would) and waits for it; returns its counters. Removes the temp dir.
    pub async fn stop(mut self) -> Arc<Stats> {
        self.halt().await
    }

    /// Stops the daemon and starts a new one on the same configuration and state.
    pub async fn restart(mut self) -> Daemon {
        self.halt().await;
        Self::launch(self.dir.take().expect("dir"), false)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Notifications: a real SMTP server, in this process.

/// A small but real SMTP server (RFC 5321) on a loopback port, for the e-mail notification tests: plain, STARTTLS
/// (required before anything else, as a submission server does) or implicit TLS with a certificate from a test CA,
/// login with `AUTH PLAIN` or `AUTH LOGIN` (required when configured), and `550` for chosen recipients. It runs on
/// its own thread and runtime, so it answers whatever the test's own runtime is doing (e.g. waiting for a child
/// `warden` process), and it keeps every accepted message in memory.
pub mod smtp {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use base64::Engine;
    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
    use tokio::sync::oneshot;
    use tokio_rustls::rustls;

    /// How the server secures its connections.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Security {
        /// No TLS at all (port 25 style).
        Plain,
        /// Plain first, then `STARTTLS`, which is required before `AUTH`, `MAIL`, `RCPT` and `DATA`.
        StartTls,
        /// TLS from the first byte (port 465 style).
        Implicit,
    }

    /// One message the server accepted.
    #[derive(Debug, Clone)]
    pub struct Mail {
        /// The envelope sender (`MAIL FROM`).
        pub mail_from: String,
        /// The envelope recipients that were accepted (`RCPT TO`).
        pub rcpt_tos: Vec<String>,
        /// The message as received after `DATA` (headers and body, dot-unstuffed, CRLF line ends).
        pub data: String,
        /// Whether the message came over TLS.
        pub tls: bool,
        /// Whether the client had logged in.
        pub authenticated: bool,
    }

    #[derive(Default)]
    struct State {
        mails: Mutex<Vec<Mail>>,
        arrived: tokio::sync::Notify,
        transactions: AtomicUsize,
    }

    struct Settings {
        security: Security,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
        login: Option<(String, String)>,
        reject: Vec<String>,
    }

    /// The running server; stopped when dropped.
    pub struct Server {
        /// Its loopback port.
        pub port: u16,
        state: Arc<State>,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    /// A test CA (written to `<dir>/ca.pem`, for `ca_file: ca.pem`) and a server certificate it signed for
    /// `127.0.0.1` and `localhost`: `(ca.pem, certificate, key)`.
    fn certificates(
        dir: &Path,
    ) -> (PathBuf, rustls::pki_types::CertificateDer<'static>, rustls::pki_types::PrivateKeyDer<'static>) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Warden test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("server params");
        params.distinguished_name.push(DnType::CommonName, "smtp.test");
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server certificate");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write ca.pem");
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        (ca_pem, cert.der().clone(), key.into())
    }

    impl Server {
        /// Starts a server securing connections as `security` says (writing its CA to `<dir>/ca.pem` unless `Plain`),
        /// requiring a login as `login` (user, password) when given, and refusing mail for the addresses in
        /// `reject` with `550`.
        pub fn start(dir: &Path, security: Security, login: Option<(&str, &str)>, reject: &[&str]) -> Server {
            let acceptor = (security != Security::Plain).then(|| {
                let (_, cert, key) = certificates(dir);
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("TLS versions")
                    .with_no_client_auth()
                    .with_single_cert(vec![cert], key)
                    .expect("server certificate");
                tokio_rustls::TlsAcceptor::from(Arc::new(config))
            });
            let settings = Arc::new(Settings {
                security,
                acceptor,
                login: login.map(|(u, p)| (u.to_string(), p.to_string())),
                reject: reject.iter().map(|s| s.to_string()).collect(),
            });
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
            listener.set_nonblocking(true).expect("non-blocking listener");
            let port = listener.local_addr().expect("local address").port();
            let state = Arc::new(State::default());
            let (stop, mut stopped) = oneshot::channel::<()>();
            let st = state.clone();
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                if let Ok((sock, _)) = accepted {
                                    let _ = sock.set_nodelay(true);
                                    tokio::spawn(connection(sock, settings.clone(), st.clone()));
                                }
                            }
                        }
                    }
                });
            });
            Server { port, state, stop: Some(stop), thread: Some(thread) }
        }

        /// The messages accepted so far, oldest first.
        pub fn mails(&self) -> Vec<Mail> {
            self.state.mails.lock().expect("mails").clone()
        }

        /// How many mail transactions (`MAIL FROM` accepted) clients started, delivered or not.
        pub fn transactions(&self) -> usize {
            self.state.transactions.load(Ordering::SeqCst)
        }

        /// Waits (at most [`super::WAIT`]) until `n` messages have been accepted; returns them.
        pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
            let deadline = tokio::time::Instant::now() + super::WAIT;
            loop {
                let arrived = self.state.arrived.notified();
                tokio::pin!(arrived);
                arrived.as_mut().enable();
                let mails = self.mails();
                if mails.len() >= n {
                    return mails;
                }
                if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                    panic!("timed out after {:?} waiting for {n} mail(s); got {mails:#?}", super::WAIT);
                }
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

    /// One client connection. Ends on `QUIT`, on a closed or broken connection, and on a failed TLS handshake.
    async fn connection(sock: tokio::net::TcpStream, settings: Arc<Settings>, state: Arc<State>) {
        let mut tls = false;
        let io: Box<dyn Io> = match (&settings.acceptor, settings.security) {
            (Some(acceptor), Security::Implicit) => match acceptor.accept(sock).await {
                Ok(s) => {
                    tls = true;
                    Box::new(s)
                }
                Err(_) => return,
            },
            _ => Box::new(sock),
        };
        let mut conn = BufReader::new(io);
        let mut authenticated = false;
        let mut from: Option<String> = None;
        let mut rcpt: Vec<String> = vec![];
        if reply(&mut conn, "220 smtp.test ESMTP Warden test server").await.is_err() {
            return;
        }
        while let Some(line) = read_line(&mut conn).await {
            let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let verb = verb.to_ascii_uppercase();
            let must_starttls = settings.security == Security::StartTls && !tls;
            let can_auth = settings.login.is_some() && (tls || settings.security == Security::Plain);
            let answer: String = match verb.as_str() {
                "EHLO" => {
                    from = None;
                    rcpt.clear();
                    let mut lines = vec!["smtp.test greets you".to_string(), "8BITMIME".into(), "SMTPUTF8".into()];
                    if must_starttls {
                        lines.push("STARTTLS".into());
                    }
                    if can_auth && !authenticated {
                        lines.push("AUTH PLAIN LOGIN".into());
                    }
                    let last = lines.len() - 1;
                    lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                        .collect::<Vec<_>>()
                        .join("\r\n")
                }
                "HELO" => "250 smtp.test".into(),
                "NOOP" => "250 2.0.0 OK".into(),
                "RSET" => {
                    from = None;
                    rcpt.clear();
                    "250 2.0.0 OK".into()
                }
                "QUIT" => {
                    let _ = reply(&mut conn, "221 2.0.0 bye").await;
                    return;
                }
                "STARTTLS" if !must_starttls => "502 5.5.1 STARTTLS not available".into(),
                "STARTTLS" => {
                    if reply(&mut conn, "220 2.0.0 Ready to start TLS").await.is_err() {
                        return;
                    }
                    // Anything the client sent after STARTTLS in the clear is dropped with the buffer.
                    let Some(acceptor) = &settings.acceptor else { return };
                    match acceptor.accept(conn.into_inner()).await {
                        Ok(s) => conn = BufReader::new(Box::new(s) as Box<dyn Io>),
                        Err(_) => return,
                    }
                    tls = true;
                    (authenticated, from) = (false, None);
                    rcpt.clear();
                    continue;
                }
                _ if must_starttls => "530 5.7.0 Must issue a STARTTLS command first".into(),
                "AUTH" if !can_auth => "503 5.5.1 AUTH not available".into(),
                "AUTH" if authenticated => "503 5.5.1 already authenticated".into(),
                "AUTH" => {
                    let Some(ok) = login(&mut conn, arg, &settings).await else { return };
                    authenticated = ok;
                    if ok {
                        "235 2.7.0 Authentication successful".into()
                    } else {
                        "535 5.7.8 Authentication credentials invalid".into()
                    }
                }
                _ if settings.login.is_some()
                    && !authenticated
                    && ["MAIL", "RCPT", "DATA"].contains(&verb.as_str()) =>
                {
                    "530 5.7.0 Authentication required".into()
                }
                "MAIL" => match address(arg, "FROM:") {
                    Some(a) => {
                        state.transactions.fetch_add(1, Ordering::SeqCst);
                        from = Some(a);
                        rcpt.clear();
                        "250 2.1.0 OK".into()
                    }
                    None => "501 5.5.4 Syntax: MAIL FROM:<address>".into(),
                },
                "RCPT" if from.is_none() => "503 5.5.1 Error: need MAIL command".into(),
                "RCPT" => match address(arg, "TO:") {
                    Some(a) if settings.reject.contains(&a) => "550 5.1.1 no such mailbox here".into(),
                    Some(a) => {
                        rcpt.push(a);
                        "250 2.1.5 OK".into()
                    }
                    None => "501 5.5.4 Syntax: RCPT TO:<address>".into(),
                },
                "DATA" if rcpt.is_empty() => "503 5.5.1 Error: need RCPT command".into(),
                "DATA" => {
                    if reply(&mut conn, "354 End data with <CR><LF>.<CR><LF>").await.is_err() {
                        return;
                    }
                    let mut data = String::new();
                    loop {
                        let Some(l) = read_line(&mut conn).await else { return };
                        if l == "." {
                            break;
                        }
                        data.push_str(l.strip_prefix('.').unwrap_or(&l));
                        data.push_str("\r\n");
                    }
                    let mail = Mail {
                        mail_from: from.take().unwrap_or_default(),
                        rcpt_tos: std::mem::take(&mut rcpt),
                        data,
                        tls,
                        authenticated,
                    };
                    state.mails.lock().expect("mails").push(mail);
                    state.arrived.notify_waiters();
                    "250 2.0.0 queued".into()
                }
                _ => "500 5.5.2 command not recognized".into(),
            };
            if reply(&mut conn, &answer).await.is_err() {
                return;
            }
        }
    }

    /// The next line without its line end; `None` when the connection closed or broke.
    async fn read_line(conn: &mut BufReader<Box<dyn Io>>) -> Option<String> {
        let mut buf = vec![];
        match conn.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
        }
    }

    async fn reply(conn: &mut BufReader<Box<dyn Io>>, text: &str) -> std::io::Result<()> {
        let w = conn.get_mut();
        w.write_all(format!("{text}\r\n").as_bytes()).await?;
        w.flush().await
    }

    /// `FROM:<a@b> PARAMS` → `a@b`.
    fn address(arg: &str, prefix: &str) -> Option<String> {
        let rest = arg.get(..prefix.len()).filter(|p| p.eq_ignore_ascii_case(prefix)).map(|_| &arg[prefix.len()..])?;
        let rest = rest.trim_start();
        let inner = rest.strip_prefix('<')?;
        Some(inner[..inner.find('>')?].to_string())
    }

    fn decode(s: &str) -> Option<String> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim()).ok()?;
        String::from_utf8(bytes).ok()
    }

    /// Runs an `AUTH PLAIN` or `AUTH LOGIN` exchange; `Some(true)` when the credentials are right, `None` when the
    /// connection broke.
    async fn login(conn: &mut BufReader<Box<dyn Io>>, arg: &str, settings: &Settings) -> Option<bool> {
        async fn ask(conn: &mut BufReader<Box<dyn Io>>, prompt: &str) -> Option<String> {
            reply(conn, prompt).await.ok()?;
            read_line(conn).await
        }
        let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
        let (user, password) = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = if initial.is_empty() { ask(conn, "334 ").await? } else { initial.to_string() };
                // authorization identity NUL user NUL password
                let text = decode(&response).unwrap_or_default();
                let mut parts = text.split('\0').skip(1);
                (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string())
            }
            "LOGIN" => {
                let user = if initial.is_empty() { ask(conn, "334 VXNlcm5hbWU6").await? } else { initial.to_string() };
                let password = ask(conn, "334 UGFzc3dvcmQ6").await?;
                (decode(&user).unwrap_or_default(), decode(&password).unwrap_or_default())
            }
            _ => return Some(false),
        };
        Some(settings.login.as_ref().is_some_and(|(u, p)| *u == user && *p == password))
    }
}
