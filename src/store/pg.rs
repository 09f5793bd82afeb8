//! The PostgreSQL backend: one connection, owned by a dedicated thread (`warden-store-pg`).
//!
//! The `postgres` client is the blocking façade of `tokio-postgres` and runs a small runtime of its own: it must not
//! be created or used on a thread that is inside a tokio runtime (the store's synchronous methods are called from
//! tokio workers, under `block_in_place`). So every statement is handed to the connection's own thread and the
//! caller waits for the answer; the store's callers are already serialized by its lock, so this adds one hand-off
//! per statement and no reordering.
//!
//! **Reconnecting.** A connection found closed (the server restarted, a network cut) is opened again at the start
//! of the next call, with a bounded retry ([`RECONNECT_TRIES`] attempts, backing off up to 2 s, about 5 s in all);
//! the call that met the cut fails with an error. A transaction is never carried over a new connection: when the
//! connection is lost inside one, the server rolls it back, and every call until it ends fails, so it is rolled
//! back on this side too — never half-applied.
//!
//! **Fencing.** With a fence set ([`super::Store::set_fence`]), every write runs in a transaction that first locks
//! the lease row (`SELECT holder, epoch FROM warden_leader WHERE id = 1 FOR SHARE`) and compares it with the fence:
//! a lease that moved on (another holder, a newer epoch) or is gone refuses the write with
//! [`DbError::Fenced`]. The share lock is held until the transaction ends, so the election cannot hand the lease on
//! between the check and the commit: a write is either committed under the epoch that allowed it, or refused.
//!
//! **TLS.** A server on a loopback address or a Unix socket is reached in plain text unless the URL asks for TLS
//! (`sslmode=require`); any other host needs TLS with certificate verification against the Mozilla roots
//! (`webpki-roots`), and the URL is refused unless it says `sslmode=disable` explicitly. `sslmode=require` always
//! verifies the certificate and the host name here (like libpq's `verify-full`); `sslrootcert=/path/ca.pem`
//! verifies against that file's CA certificates instead of the public roots (a private CA, a cloud provider's),
//! and implies TLS.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use postgres::types::{IsNull, ToSql, Type};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db::{args, is_write, to_postgres, DbError, DbResult, Fence, Row, Value};

/// Connection attempts when (re)connecting, before a call gives up.
pub const RECONNECT_TRIES: u32 = 6;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease table of the leader election (created by the PostgreSQL migrations; the election owns its rows).
pub const LEADER_DDL: &str = "CREATE TABLE IF NOT EXISTS warden_leader (id INT PRIMARY KEY CHECK (id = 1), \
     holder TEXT NOT NULL, epoch BIGINT NOT NULL, lease_until TIMESTAMPTZ NOT NULL, renewed_at TIMESTAMPTZ NOT NULL)";

type Job = Box<dyn FnOnce(&mut Session) + Send>;

/// The handle the store keeps: statements go to the connection thread.
pub(crate) struct PgConn {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// A PostgreSQL URL that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UrlError(pub String);

/// Where to connect and how, from a `postgres://` URL (or a `key=value` connection string).
#[derive(Clone)]
pub struct PgTarget {
    config: postgres::Config,
    tls: bool,
    /// The CA certificates (PEM) to verify the server with instead of the public roots (`sslrootcert=`).
    ca: Option<std::path::PathBuf>,
    /// The URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget").field("at", &self.shown).field("tls", &self.tls).finish()
    }
}

impl PgTarget {
    /// Parses `url` and decides on TLS (see the module docs). The error never repeats the URL's password.
    pub fn parse(url: &str) -> Result<PgTarget, UrlError> {
        // `sslrootcert` (libpq's name) is ours to read: the client library does not know it.
        let (stripped, ca) = take_param(url, "sslrootcert");
        let ca = ca.map(|p| {
            let p = percent_encoding::percent_decode_str(&p).decode_utf8_lossy().into_owned();
            std::path::PathBuf::from(p)
        });
        let mut config: postgres::Config = stripped.parse().map_err(|e: postgres::Error| {
            UrlError(format!("`{}` is not a PostgreSQL URL: {}", redact(url), strip_secret(&e.to_string(), url)))
        })?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("warden");
        // A server that stops answering (a network cut without a reset) ends the connection within half a minute
        // instead of the kernel's quarter of an hour, so calls fail and the next one reconnects.
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(30));
        }
        if config.get_keepalives_idle() > Duration::from_secs(30) {
            config.keepalives_idle(Duration::from_secs(30));
        }
        let hosts = config.get_hosts();
        if hosts.is_empty() {
            return Err(UrlError(format!("`{}` names no host", redact(url))));
        }
        let local = hosts.iter().all(|h| match h {
            postgres::config::Host::Unix(_) => true,
            postgres::config::Host::Tcp(name) => is_loopback(name),
        });
        let mode = config.get_ssl_mode();
        let asked = url_ssl_mode(url);
        if ca.is_some() && mode == postgres::config::SslMode::Disable {
            return Err(UrlError(format!("`{}`: `sslrootcert` with `sslmode=disable` says two things", redact(url))));
        }
        let tls = match (mode, asked.as_deref()) {
            (postgres::config::SslMode::Disable, _) => false,
            (postgres::config::SslMode::Require, _) => true,
            _ if ca.is_some() => true,
            // `prefer` (the default when the URL says nothing): plain text on this machine only.
            _ if local => false,
            _ => {
                return Err(UrlError(format!(
                    "`{}`: a PostgreSQL server on another host is reached with TLS only: add `sslmode=require` \
                     (the certificate is verified against the public roots), or `sslmode=disable` to send the \
                     password and the journal in plain text on purpose",
                    redact(url)
                )))
            }
        };
        if tls {
            // Never fall back to plain text when TLS was asked for.
            config.ssl_mode(postgres::config::SslMode::Require);
        }
        Ok(PgTarget { config, tls, ca, shown: redact(url) })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// `url` without its query parameter `name`, and that parameter's value.
pub(crate) fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let mut value = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            Some(v) => {
                value = Some(v.to_string());
                false
            }
            None => true,
        })
        .collect();
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    (url, value)
}

fn url_ssl_mode(url: &str) -> Option<String> {
    let q = url.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.strip_prefix("sslmode=").map(str::to_string))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `url` with the password (in `user:password@` or a `password=` parameter) replaced by `***`.
pub fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..auth_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let (a, b) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
                out.replace_range(a..b, "***");
            }
        }
    }
    // `password=…` as a query parameter or in a key=value string.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let start = i + "password=".len();
        result.push_str(&rest[..start]);
        result.push_str("***");
        let end = rest[start..].find(['&', ' ']).map_or(rest.len(), |e| start + e);
        rest = &rest[end..];
    }
    result.push_str(rest);
    result
}

/// A message that might quote the URL, without its password.
fn strip_secret(message: &str, url: &str) -> String {
    let redacted = redact(url);
    let mut m = message.replace(url, &redacted);
    if let Ok(c) = url.parse::<postgres::Config>() {
        if let Some(pw) = c.get_password().filter(|p| !p.is_empty()) {
            m = m.replace(&*String::from_utf8_lossy(pw), "***");
        }
    }
    m
}

impl PgConn {
    /// Starts the connection thread and connects (with the bounded retry).
    pub(crate) fn connect(target: PgTarget) -> DbResult<PgConn> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        let tls = if target.tls { Some(rustls_connector(target.ca.as_deref())?) } else { None };
        let mut session = Session {
            config: target.config,
            tls,
            client: None,
            statements: HashMap::new(),
            fence: None,
            in_tx: false,
            fenced_in_tx: false,
        };
        std::thread::Builder::new()
            .name("warden-store-pg".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job(&mut session);
                }
            })
            .map_err(|e| DbError::Other(format!("cannot start the PostgreSQL connection thread: {e}")))?;
        let c = PgConn { jobs };
        c.run(|s| s.client().map(|_| ()))?;
        Ok(c)
    }

    fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Session) -> DbResult<T> + Send + 'static) -> DbResult<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |s| {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s)));
            let _ = tx.send(out);
        });
        self.jobs.send(job).map_err(|_| DbError::Other("the PostgreSQL connection thread is gone".into()))?;
        match rx.recv() {
            Ok(Ok(v)) => v,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(DbError::Other("the PostgreSQL connection thread dropped a call".into())),
        }
    }

    pub(crate) fn execute(&self, sql: &str, params: &[Value]) -> DbResult<usize> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.run(move |s| s.fenced(&sql, |s| s.execute(&sql, &params)))
    }

    pub(crate) fn query(&self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        let (sql, params) = (sql.to_string(), params.to_vec());
        self.run(move |s| s.fenced(&sql, |s| s.query(&sql, &params)))
    }

    pub(crate) fn batch(&self, sql: &str) -> DbResult<()> {
        let sql = sql.to_string();
        self.run(move |s| {
            let r = s.client()?.batch_execute(&sql);
            r.map_err(|e| s.failed(e))
        })
    }

    pub(crate) fn begin(&self) -> DbResult<()> {
        self.run(|s| s.begin())
    }

    pub(crate) fn end(&self, commit: bool) -> DbResult<()> {
        self.run(move |s| s.end(commit))
    }

    pub(crate) fn set_fence(&self, fence: Option<Fence>) -> DbResult<()> {
        self.run(move |s| {
            s.fence = fence;
            Ok(())
        })
    }
}

/// A TLS connector that verifies the server's certificate and name: against the CA certificates in `ca` (PEM)
/// when given, else the Mozilla roots.
pub(crate) fn rustls_connector(ca: Option<&std::path::Path>) -> DbResult<MakeRustlsConnect> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let roots = match ca {
        None => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        Some(path) => {
            let bad = |e: String| DbError::Other(format!("sslrootcert `{}`: {e}", path.display()));
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))?;
            for c in certs {
                roots.add(c.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificate in it".into()));
            }
            roots
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Other(format!("TLS set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The connection thread's state.
struct Session {
    config: postgres::Config,
    tls: Option<MakeRustlsConnect>,
    client: Option<postgres::Client>,
    /// Prepared statements of this connection, by their SQL as written (with `?1`).
    statements: HashMap<String, postgres::Statement>,
    fence: Option<Fence>,
    in_tx: bool,
    /// The fence was checked (and the lease row share-locked) in the open transaction.
    fenced_in_tx: bool,
}

impl Session {
    /// The connection, opened again if it was lost (not inside a transaction: that is lost with it).
    fn client(&mut self) -> DbResult<&mut postgres::Client> {
        let alive = self.client.as_ref().is_some_and(|c| !c.is_closed());
        if !alive {
            self.client = None;
            self.statements.clear();
            if self.in_tx {
                return Err(lost());
            }
            let client = self.connect()?;
            return Ok(self.client.insert(client));
        }
        self.client.as_mut().ok_or_else(lost)
    }

    fn connect(&self) -> DbResult<postgres::Client> {
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let r = match &self.tls {
                Some(tls) => self.config.connect(tls.clone()),
                None => self.config.connect(postgres::NoTls),
            };
            match r {
                Ok(c) => return Ok(c),
                Err(e) if attempt < RECONNECT_TRIES && !is_fatal_connect(&e) => {
                    tracing::warn!(attempt, "cannot reach PostgreSQL, trying again in {wait:?}: {}", pg_message(&e));
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                Err(e) => return Err(pg_error(&e)),
            }
        }
    }

    /// Notes a failed call: a connection error closes the client (the next call reconnects).
    fn failed(&mut self, e: postgres::Error) -> DbError {
        if e.is_closed() || self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
            self.statements.clear();
        }
        pg_error(&e)
    }

    fn statement(&mut self, sql: &str) -> DbResult<postgres::Statement> {
        self.client()?;
        if let Some(st) = self.statements.get(sql) {
            return Ok(st.clone());
        }
        let translated = to_postgres(sql).map_err(DbError::Other)?;
        let r = self.client()?.prepare(&translated);
        let st = r.map_err(|e| self.failed(e))?;
        self.statements.insert(sql.to_string(), st.clone());
        Ok(st)
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> DbResult<usize> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let r = self.client()?.execute(&st, &refs);
        r.map(|n| usize::try_from(n).unwrap_or(usize::MAX)).map_err(|e| self.failed(e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> DbResult<Vec<Row>> {
        let st = self.statement(sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let r = self.client()?.query(&st, &refs);
        let rows = r.map_err(|e| self.failed(e))?;
        rows.iter().map(row).collect()
    }

    /// Runs `f` (a statement) under the fence when it writes: inside the open transaction, after checking the
    /// fence once in it; outside one, in a transaction of its own.
    fn fenced<T>(&mut self, sql: &str, f: impl FnOnce(&mut Self) -> DbResult<T>) -> DbResult<T> {
        if self.fence.is_none() || !is_write(sql) {
            return f(self);
        }
        if self.in_tx {
            if !self.fenced_in_tx {
                self.check_fence()?;
                self.fenced_in_tx = true;
            }
            return f(self);
        }
        self.begin()?;
        let out = self.check_fence().and_then(|_| f(self));
        let end = self.end(out.is_ok());
        let v = out?;
        end?;
        Ok(v)
    }

    fn check_fence(&mut self) -> DbResult<()> {
        let rows = self.query("SELECT holder, epoch FROM warden_leader WHERE id = ?1 FOR SHARE", args![1i32])?;
        let current = match rows.first() {
            Some(r) => Some(Fence { holder: r.get(0)?, epoch: r.get(1)? }),
            None => None,
        };
        if current != self.fence {
            return Err(DbError::Fenced { ours: self.fence.clone(), current });
        }
        Ok(())
    }

    fn begin(&mut self) -> DbResult<()> {
        let r = self.client()?.batch_execute("BEGIN");
        r.map_err(|e| self.failed(e))?;
        self.in_tx = true;
        self.fenced_in_tx = false;
        Ok(())
    }

    fn end(&mut self, commit: bool) -> DbResult<()> {
        self.in_tx = false;
        self.fenced_in_tx = false;
        let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) else {
            self.client = None;
            self.statements.clear();
            // The server rolled the transaction back when the connection went.
            return if commit { Err(lost()) } else { Ok(()) };
        };
        let r = c.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" });
        r.map_err(|e| self.failed(e))
    }
}

fn lost() -> DbError {
    DbError::Postgres {
        message: "the connection to PostgreSQL was lost during a transaction; it was rolled back".into(),
        code: None,
    }
}

/// Errors that trying again will not fix: a wrong password or database, a TLS certificate refused.
fn is_fatal_connect(e: &postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        // 28xxx: invalid authorization; 3D000: no such database.
        return code.starts_with("28") || code == "3D000";
    }
    let text = format!("{e:?}");
    text.contains("InvalidCertificate") || text.contains("certificate")
}

fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
        None => {
            let mut m = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                m.push_str(": ");
                m.push_str(&s.to_string());
                src = s.source();
            }
            m
        }
    }
}

fn pg_error(e: &postgres::Error) -> DbError {
    DbError::Postgres { message: pg_message(e), code: e.code().map(|c| c.code().to_string()) }
}

fn row(r: &postgres::Row) -> DbResult<Row> {
    let mut cols = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let err = |e: postgres::Error| DbError::Other(format!("column {i} ({}): {}", c.name(), pg_message(&e)));
        let v = match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map_err(err)?.map(Value::Int),
            Type::INT4 => r.try_get::<_, Option<i32>>(i).map_err(err)?.map(|v| Value::Int(v.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i).map_err(err)?.map(|v| Value::Int(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i).map_err(err)?.map(|v| Value::Int(v.into())),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i).map_err(err)?.map(Value::Real),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                r.try_get::<_, Option<String>>(i).map_err(err)?.map(Value::Text)
            }
            ref t => return Err(DbError::Other(format!("column {i} ({}): type {t} is not read by Warden", c.name()))),
        };
        cols.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(cols))
}

/// A parameter takes the type PostgreSQL inferred for its place: an integer for an integer column, text for text.
impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::UNKNOWN => i.to_string().as_str().to_sql(ty, out),
                ref t => Err(format!("an integer where PostgreSQL expects {t}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                ref t => Err(format!("a real number where PostgreSQL expects {t}").into()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => s.as_str().to_sql(ty, out),
                ref t => Err(format!("text where PostgreSQL expects {t}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_urls_and_key_value_strings() {
        assert_eq!(redact("postgres://warden:s3cr%40t@db.example:5432/w"), "postgres://warden:***@db.example:5432/w");
        assert_eq!(
            redact("postgres://warden@db/w?password=hunter2&sslmode=require"),
            "postgres://warden@db/w?password=***&sslmode=require"
        );
        assert_eq!(redact("host=db user=w password=hunter2 dbname=w"), "host=db user=w password=*** dbname=w");
        assert_eq!(redact("postgresql:///w?host=/run/pg"), "postgresql:///w?host=/run/pg");
    }

    #[test]
    fn a_remote_server_needs_tls_or_an_explicit_sslmode_disable() {
        let err = PgTarget::parse("postgres://w:hunter2@db.example.com/w").unwrap_err().to_string();
        assert!(err.contains("TLS only") && err.contains("sslmode=require"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(PgTarget::parse("postgres://w:pw@db.example.com/w?sslmode=require").unwrap().tls);
        assert!(!PgTarget::parse("postgres://w:pw@db.example.com/w?sslmode=disable").unwrap().tls);
        assert!(!PgTarget::parse("postgres://w:pw@127.0.0.1:5433/w").unwrap().tls);
        assert!(!PgTarget::parse("postgres://w:pw@localhost/w").unwrap().tls);
        assert!(!PgTarget::parse("postgres://w@%2Frun%2Fpostgresql/w").unwrap().tls);
        let bad = PgTarget::parse("postgres://w:hunter2@db:notaport/w").unwrap_err().to_string();
        assert!(!bad.contains("hunter2"), "{bad}");
        assert!(format!("{:?}", PgTarget::parse("postgres://w:hunter2@localhost/w").unwrap()).contains("***"));
        let ca = PgTarget::parse("postgres://w@db.example.com/w?sslrootcert=/etc/ca%20dir/ca.pem&connect_timeout=3")
            .unwrap();
        assert!(ca.tls, "a CA file implies TLS");
        assert_eq!(ca.ca.as_deref(), Some(std::path::Path::new("/etc/ca dir/ca.pem")));
        assert!(PgTarget::parse("postgres://w@localhost/w?sslmode=disable&sslrootcert=/ca.pem").is_err());
    }
}
