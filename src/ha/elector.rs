//! The election task. One dedicated connection to PostgreSQL (reconnected after any error, at most every
//! `retry_every`), never a pooled one.
//!
//! - **Standby**: every `retry_every`, tries to take the lease ([`lease::take`]); it succeeds once the leader's lease
//!   has run out on the database's clock (or the leader released it on a graceful stop).
//! - **Leader**: renews every `renew_every`. Its own lease is measured on the monotonic clock from the moment it
//!   *sent* the renewal that succeeded, so it ends no later than the row's (`now()` on the database is later than
//!   the send). The instant that local lease runs out without a successful renewal — the database is down, slow, or
//!   unreachable; the process was paused — it steps down: the [`LeaseGuard`] stops holding at that instant whether
//!   or not this task has run, and the task then publishes the standby role, which cancels all acting.
//!
//! With the database down nobody acts: the leader cannot renew, so it steps down when its lease ends, and the
//! standby cannot take over. That is the safe side: an instance that cannot reach the database cannot record what
//! it does, nor learn that another instance acts, so acting would risk the very duplicates the pair exists to avoid.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use super::{lease, members, HaMetrics, HaView, Leadership, LeaseGuard, Role};

/// What the election needs.
#[derive(Clone)]
pub struct ElectorConfig {
    /// The PostgreSQL URL (a secret: never logged, never shown).
    pub url: String,
    /// This instance's name (the lease row's holder).
    pub instance: String,
    /// This process's restart owner id (`pid <n> on <host>`), written to `warden_members` for the handover.
    pub owner: String,
    /// `ha.lease`.
    pub lease: Duration,
    /// `ha.renew_every`.
    pub renew_every: Duration,
    /// `ha.retry_every`.
    pub retry_every: Duration,
}

impl std::fmt::Debug for ElectorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElectorConfig")
            .field("url", &"***")
            .field("instance", &self.instance)
            .field("lease", &self.lease)
            .field("renew_every", &self.renew_every)
            .field("retry_every", &self.retry_every)
            .finish()
    }
}

impl ElectorConfig {
    /// The election's settings from `ha:`, for the store at `url`.
    pub fn new(url: String, ha: &crate::config::HaConfig, owner: String) -> Self {
        ElectorConfig {
            url,
            instance: ha.instance.clone().unwrap_or_else(super::default_instance),
            owner,
            lease: ha.lease,
            renew_every: ha.renew_every,
            retry_every: ha.retry_every,
        }
    }
}

/// Why the election cannot talk to the database.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ElectionError {
    /// The URL cannot be used (the message shows it without its password).
    #[error("the leader election cannot use `store.postgres.url`: {0}")]
    Url(String),
    /// Connecting or a statement failed.
    #[error("{0}")]
    Db(String),
    /// The database did not answer in time.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<tokio_postgres::Error> for ElectionError {
    fn from(e: tokio_postgres::Error) -> Self {
        // `Display` of a driver error never contains the password; the source chain may name the host.
        let mut msg = e.to_string();
        if let Some(src) = std::error::Error::source(&e) {
            msg = format!("{msg}: {src}");
        }
        ElectionError::Db(msg)
    }
}

/// Checks the URL before the first connection, by the store's rules ([`crate::store::pg::PgTarget::parse`]: a
/// server on another host only with TLS or an explicit `sslmode=disable`), and decides on TLS the way the store does:
/// `sslmode=require` or `sslrootcert=` (a private CA, PEM) means TLS with the certificate and host name verified
/// (against that CA, else the public roots), never falling back to plain text; a server on this machine is reached in
/// plain text otherwise.
pub fn check_url(url: &str) -> Result<(tokio_postgres::Config, Option<MakeRustlsConnect>), ElectionError> {
    crate::store::pg::PgTarget::parse(url).map_err(|e| ElectionError::Url(e.0))?;
    let (stripped, ca) = crate::store::pg::take_param(url, "sslrootcert");
    let ca =
        ca.map(|p| std::path::PathBuf::from(percent_encoding::percent_decode_str(&p).decode_utf8_lossy().into_owned()));
    let mut cfg: tokio_postgres::Config =
        stripped.parse().map_err(|e: tokio_postgres::Error| ElectionError::Url(e.to_string()))?;
    cfg.application_name("warden-election");
    let tls = match cfg.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => None,
        tokio_postgres::config::SslMode::Require => Some(rustls_connector(ca.as_deref())?),
        _ if ca.is_some() => Some(rustls_connector(ca.as_deref())?),
        _ => None,
    };
    if tls.is_some() {
        cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    Ok((cfg, tls))
}

/// A TLS connector that verifies the server's certificate and name, made as the store's own connection makes it.
fn rustls_connector(ca: Option<&std::path::Path>) -> Result<MakeRustlsConnect, ElectionError> {
    crate::store::pg::rustls_connector(ca).map_err(|e| ElectionError::Url(e.to_string()))
}

/// A running election. Dropping it without [`Election::stop`] leaves the lease to run out on its own.
pub struct Election {
    /// The role as it changes.
    pub leadership: watch::Receiver<Leadership>,
    /// Whether this instance may act right now.
    pub guard: LeaseGuard,
    view: Arc<Mutex<HaView>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Election {
    /// Starts the election as a standby. Fails only on a URL that cannot work; a database that is down is retried.
    pub fn start(cfg: ElectorConfig, metrics: HaMetrics) -> Result<Election, ElectionError> {
        let (pg, tls) = check_url(&cfg.url)?;
        let guard = LeaseGuard::never();
        let standby = Leadership::standby(&cfg.instance);
        let (tx, rx) = watch::channel(standby);
        let view =
            Arc::new(Mutex::new(HaView { role: Role::Standby, instance: cfg.instance.clone(), ..HaView::single() }));
        metrics.set_role(Role::Standby);
        let stop = CancellationToken::new();
        let task =
            Task { cfg, pg, tls, metrics, view: view.clone(), guard: guard.clone(), tx, client: None, held: None };
        let task = tokio::spawn(task.run(stop.clone()));
        Ok(Election { leadership: rx, guard, view, stop, task })
    }

    /// What `warden status` shows.
    pub fn view(&self) -> HaView {
        self.view.lock().clone()
    }

    /// A handle that reads the view.
    pub fn view_handle(&self) -> Arc<Mutex<HaView>> {
        self.view.clone()
    }

    /// Stops the election; a leader releases its lease so that the standby takes over at its next try. Call it
    /// after acting has stopped (the lease is renewed until then).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

struct Held {
    epoch: i64,
    /// The local lease's end.
    until: Instant,
    /// When the last successful renewal (or the take) was sent.
    sent: Instant,
}

struct Task {
    cfg: ElectorConfig,
    pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    metrics: HaMetrics,
    view: Arc<Mutex<HaView>>,
    guard: LeaseGuard,
    tx: watch::Sender<Leadership>,
    client: Option<Client>,
    held: Option<Held>,
}

impl Task {
    async fn run(mut self, stop: CancellationToken) {
        tracing::info!(instance = %self.cfg.instance, lease = ?self.cfg.lease, "HA: starting as the standby");
        while !stop.is_cancelled() {
            match &self.held {
                Some(h) => {
                    let (epoch, until) = (h.epoch, h.until);
                    let next = (h.sent + self.cfg.renew_every).min(until);
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep_until(next) => {}
                    }
                    if Instant::now() >= until {
                        self.step_down("its lease ran out before a renewal succeeded");
                        continue;
                    }
                    let sent = Instant::now();
                    let renewed = tokio::select! {
                        _ = stop.cancelled() => break,
                        r = tokio::time::timeout_at(until, self.renew(epoch)) => r,
                    };
                    match renewed {
                        Ok(Ok(true)) => {
                            self.metrics.renewed(true);
                            let until = sent + self.cfg.lease;
                            self.guard.hold_until(until.into_std());
                            self.held = Some(Held { epoch, until, sent });
                            self.view.lock().last_error = None;
                        }
                        Ok(Ok(false)) => {
                            self.metrics.renewed(false);
                            self.step_down("another instance holds the lease now");
                        }
                        Ok(Err(e)) => {
                            self.metrics.renewed(false);
                            self.failed(&e);
                            // Try again after `retry_every`, within the lease.
                            if let Some(h) = &mut self.held {
                                h.sent = (Instant::now() + self.cfg.retry_every)
                                    .checked_sub(self.cfg.renew_every)
                                    .unwrap_or(h.sent);
                            }
                        }
                        Err(_) => {
                            self.metrics.renewed(false);
                            self.client = None;
                            self.step_down("its lease ran out while the database did not answer the renewal");
                        }
                    }
                }
                None => {
                    let sent = Instant::now();
                    let limit = self.cfg.lease.max(Duration::from_secs(1));
                    let taken = tokio::select! {
                        _ = stop.cancelled() => break,
                        r = tokio::time::timeout(limit, self.try_take()) => r.unwrap_or(Err(ElectionError::Timeout(limit))),
                    };
                    match taken {
                        Ok(Some((epoch, predecessors))) => {
                            self.promote(epoch, sent, predecessors);
                            continue;
                        }
                        Ok(None) => self.view.lock().last_error = None,
                        Err(e) => self.failed(&e),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(self.cfg.retry_every) => {}
                    }
                }
            }
        }
        self.release().await;
    }

    fn failed(&mut self, e: &ElectionError) {
        self.client = None;
        let msg = e.to_string();
        let mut v = self.view.lock();
        if v.last_error.as_deref() != Some(&msg) {
            tracing::warn!(instance = %self.cfg.instance, "HA: the database cannot be reached: {msg}");
        }
        v.last_error = Some(msg);
    }

    /// The connection, made if there is none.
    async fn client(&mut self) -> Result<&Client, ElectionError> {
        if self.client.is_none() {
            let limit = self.cfg.lease.max(Duration::from_secs(1));
            let connect = async {
                match &self.tls {
                    Some(tls) => {
                        let (client, conn) = self.pg.connect(tls.clone()).await?;
                        tokio::spawn(drive(conn));
                        Ok::<_, tokio_postgres::Error>(client)
                    }
                    None => {
                        let (client, conn) = self.pg.connect(NoTls).await?;
                        tokio::spawn(drive(conn));
                        Ok(client)
                    }
                }
            };
            let client = tokio::time::timeout(limit, connect).await.map_err(|_| ElectionError::Timeout(limit))??;
            lease::ensure_table(&client).await?;
            members::ensure_table(&client).await?;
            let _ = members::prune(&client).await;
            self.client = Some(client);
        }
        self.client.as_ref().ok_or_else(|| ElectionError::Db("no connection to the database".into()))
    }

    /// Renews the lease; `false` if it is not ours any more.
    async fn renew(&mut self, epoch: i64) -> Result<bool, ElectionError> {
        let (instance, owner, lease) = (self.cfg.instance.clone(), self.cfg.owner.clone(), self.cfg.lease);
        let c = self.client().await?;
        let Some(until) = lease::renew(c, &instance, epoch, lease).await? else { return Ok(false) };
        members::report(c, &instance, Role::Leader, Some(epoch), &owner).await?;
        let peer = members::peer(c, &instance).await?;
        let mut v = self.view.lock();
        v.lease_until = Some(until);
        v.peer = peer;
        Ok(true)
    }

    /// Tries to take the lease: its epoch and the restart owner ids of the other instances if it was taken.
    async fn try_take(&mut self) -> Result<Option<(i64, Vec<String>)>, ElectionError> {
        let (instance, owner, lease) = (self.cfg.instance.clone(), self.cfg.owner.clone(), self.cfg.lease);
        let c = self.client().await?;
        if let Some(t) = lease::take(c, &instance, lease).await? {
            let others = members::other_owners(c, &instance, &owner).await?;
            members::report(c, &instance, Role::Leader, Some(t.epoch), &owner).await?;
            let mut v = self.view.lock();
            v.lease_until = Some(t.lease_until);
            return Ok(Some((t.epoch, others)));
        }
        members::report(c, &instance, Role::Standby, None, &owner).await?;
        let row = lease::read(c).await?;
        let peer = members::peer(c, &instance).await?;
        let mut v = self.view.lock();
        v.peer = peer;
        if let Some(r) = row {
            v.epoch = Some(r.epoch);
            v.holder = Some(r.holder);
            v.lease_until = Some(r.lease_until);
        }
        Ok(None)
    }

    fn promote(&mut self, epoch: i64, sent: Instant, predecessors: Vec<String>) {
        let until = sent + self.cfg.lease;
        self.guard.hold_until(until.into_std());
        self.held = Some(Held { epoch, until, sent });
        self.metrics.set_role(Role::Leader);
        self.metrics.epoch.set(epoch);
        self.metrics.transitions.inc();
        {
            let mut v = self.view.lock();
            v.role = Role::Leader;
            v.epoch = Some(epoch);
            v.holder = Some(self.cfg.instance.clone());
            v.last_error = None;
        }
        tracing::info!(instance = %self.cfg.instance, epoch, "HA: this instance is the leader now");
        let _ = self.tx.send(Leadership {
            role: Role::Leader,
            epoch: Some(epoch),
            holder: self.cfg.instance.clone(),
            predecessors,
        });
    }

    fn step_down(&mut self, why: &str) {
        self.guard.revoke();
        let Some(h) = self.held.take() else { return };
        self.metrics.set_role(Role::Standby);
        self.metrics.transitions.inc();
        self.view.lock().role = Role::Standby;
        tracing::warn!(instance = %self.cfg.instance, epoch = h.epoch, "HA: stepping down, {why}: acting stops");
        let _ = self.tx.send(Leadership::standby(&self.cfg.instance));
    }

    /// On stop: a leader releases the lease (bounded wait) so the standby takes over at once.
    async fn release(&mut self) {
        self.guard.revoke();
        let Some(h) = self.held.take() else { return };
        let (instance, owner) = (self.cfg.instance.clone(), self.cfg.owner.clone());
        let done = tokio::time::timeout(Duration::from_secs(2), async {
            let c = self.client().await?;
            let released = lease::release(c, &instance, h.epoch).await?;
            members::report(c, &instance, Role::Standby, None, &owner).await?;
            Ok::<_, ElectionError>(released)
        })
        .await;
        match done {
            Ok(Ok(true)) => tracing::info!(instance = %instance, epoch = h.epoch, "HA: released the lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!("HA: cannot release the lease (it runs out on its own): {e}"),
            Err(_) => tracing::warn!("HA: cannot release the lease in time (it runs out on its own)"),
        }
        self.metrics.set_role(Role::Standby);
        self.view.lock().role = Role::Standby;
        let _ = self.tx.send(Leadership::standby(&instance));
    }
}

/// Drives a connection until it ends.
async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(conn: F) {
    if let Err(e) = conn.await {
        tracing::debug!("HA: the election's connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_stores_rules_and_a_private_ca_means_tls() {
        let (cfg, tls) = check_url("postgres://w:secret@127.0.0.1:5432/w").unwrap();
        assert!(tls.is_none());
        assert_eq!(cfg.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
        let err = |url: &str| check_url(url).err().expect("refused").to_string();
        let e = err("postgres://w:secret@db.example.com/w");
        assert!(e.contains("TLS") && !e.contains("secret"), "{e}");
        let (_, tls) = check_url("postgres://w@db.example.com/w?sslmode=disable").unwrap();
        assert!(tls.is_none());
        let (cfg, tls) = check_url("postgres://w@db.example.com/w?sslmode=require").unwrap();
        assert!(tls.is_some());
        assert_eq!(cfg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        let e = err("postgres://w@db.example.com/w?sslrootcert=/nonexistent/ca.pem");
        assert!(e.contains("sslrootcert `/nonexistent/ca.pem`"), "{e}");
    }
}
