//! An HA pair: two Warden instances on one PostgreSQL store, one of them the *leader* that acts and notifies, the
//! other a *standby* that keeps its configuration loaded and takes over when the leader's lease runs out.
//!
//! - [`lease`]: the lease row (`warden_leader`) and its SQL: take (the epoch grows by one), renew, release; every
//!   decision on the database's clock, the lease row alone (no session advisory lock, so it works through
//!   pgbouncer in transaction mode and a paused leader's open connection holds nothing).
//! - [`members`]: `warden_members`, who is there (the peer in `warden status`) and which restart owner id each
//!   instance uses (so a new leader can take over its predecessor's restarts at once, [`handover`]).
//! - [`elector`]: the election task: the leader renews and steps down the instant its lease, measured on the
//!   monotonic clock from when it *sent* the last successful renewal, runs out; the standby retries. It publishes a
//!   [`Leadership`] on a watch channel and a [`LeaseGuard`] that acting code checks before each side effect.
//! - [`handover`]: what a new leader does first: releases the restarts its predecessors drove.
//! - [`shard`]: on paper for more than two instances: targets spread over the live members by rendezvous hashing,
//!   with a simulation of members joining and leaving.
//!
//! The fencing check itself lives in the store: a write under an epoch that is no longer the lease row's is
//! refused, so an old leader that did not notice it lost the lease still cannot act.

pub mod elector;
pub mod handover;
pub mod lease;
pub mod members;
pub mod metrics;
pub mod shard;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use elector::{Election, ElectorConfig};
pub use metrics::HaMetrics;

/// What an instance is in the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// No election: the SQLite store, one instance that always acts.
    Single,
    /// Holds the lease: the one instance that acts and notifies.
    Leader,
    /// Waits for the lease; keeps its configuration loaded and its clients built, acts never.
    Standby,
}

impl Role {
    /// `single`, `leader`, `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Leader => "leader",
            Role::Standby => "standby",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the election says now (sent on a watch channel at each change of role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// Leader, standby (or single, without an election).
    pub role: Role,
    /// The epoch of the lease this instance holds (leader only). Every side effect is written under it.
    pub epoch: Option<i64>,
    /// This instance's name (the lease row's `holder`).
    pub holder: String,
    /// On becoming the leader: the restart owner ids (`pid <n> on <host>`) of the other instances, whose unfinished
    /// restarts this leader takes over at once ([`handover`]).
    pub predecessors: Vec<String>,
}

impl Leadership {
    /// A single instance: always acts, no epoch.
    pub fn single() -> Self {
        Leadership { role: Role::Single, epoch: None, holder: String::new(), predecessors: vec![] }
    }

    /// A standby named `holder`.
    pub fn standby(holder: &str) -> Self {
        Leadership { role: Role::Standby, epoch: None, holder: holder.into(), predecessors: vec![] }
    }

    /// Whether this instance may act.
    pub fn acts(&self) -> bool {
        matches!(self.role, Role::Single | Role::Leader)
    }
}

/// Whether this instance's leadership still holds *now*, on the monotonic clock: acting code checks it right before
/// each side effect, so a leader that was paused (SIGSTOP, a long GC-like stall, a frozen VM) past its lease does
/// not act when it wakes, even before the election task has run. Cheap to clone and to check (one atomic).
#[derive(Debug, Clone)]
pub struct LeaseGuard(Arc<GuardInner>);

#[derive(Debug)]
struct GuardInner {
    base: Instant,
    /// Nanoseconds after `base` until which acting is allowed; 0 = never, `u64::MAX` = always (single).
    until: AtomicU64,
}

impl LeaseGuard {
    /// A guard that always holds (a single instance).
    pub fn always() -> Self {
        let g = Self::never();
        g.0.until.store(u64::MAX, Ordering::SeqCst);
        g
    }

    /// A guard that holds until told otherwise by [`LeaseGuard::hold_until`].
    pub fn never() -> Self {
        LeaseGuard(Arc::new(GuardInner { base: Instant::now(), until: AtomicU64::new(0) }))
    }

    /// Allows acting until `until`.
    pub fn hold_until(&self, until: Instant) {
        let nanos = until.saturating_duration_since(self.0.base).as_nanos();
        self.0.until.store(u64::try_from(nanos).unwrap_or(u64::MAX - 1).max(1), Ordering::SeqCst);
    }

    /// Forbids acting from now on.
    pub fn revoke(&self) {
        self.0.until.store(0, Ordering::SeqCst);
    }

    /// Whether acting is allowed now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Whether acting is allowed at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        match self.0.until.load(Ordering::SeqCst) {
            0 => false,
            u64::MAX => true,
            until => now.saturating_duration_since(self.0.base) < Duration::from_nanos(until),
        }
    }
}

/// The other instance of the pair, as it last said it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// Its name.
    pub instance: String,
    /// What it said it was.
    pub role: Role,
    /// Its epoch, when it said it was the leader.
    pub epoch: Option<i64>,
    /// When it was last seen (it writes its row every renewal or retry).
    pub last_seen: DateTime<Utc>,
}

/// What `warden status` and `/api/status` show about the pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HaView {
    /// `single`, `leader` or `standby`.
    pub role: Role,
    /// This instance's name (empty for a single instance).
    #[serde(default)]
    pub instance: String,
    /// The epoch this instance leads under (leader), or the lease row's epoch as last read (standby).
    #[serde(default)]
    pub epoch: Option<i64>,
    /// Who holds the lease, as last read.
    #[serde(default)]
    pub holder: Option<String>,
    /// Until when the lease row says the leadership holds (the database's clock).
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
    /// The other instance.
    #[serde(default)]
    pub peer: Option<Peer>,
    /// The last error talking to the database, while it lasts.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl HaView {
    /// A single instance.
    pub fn single() -> Self {
        HaView {
            role: Role::Single,
            instance: String::new(),
            epoch: None,
            holder: None,
            lease_until: None,
            peer: None,
            last_error: None,
        }
    }
}

/// This instance's default name: `<hostname>-<pid>`.
pub fn default_instance() -> String {
    let host = hostname();
    format!("{host}-{}", std::process::id())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname writes at most that many bytes.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if r == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let clean: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(100).collect::<String>();
    if clean.is_empty() {
        "warden".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_holds_until_its_lease_and_not_a_moment_after() {
        let g = LeaseGuard::never();
        let now = Instant::now();
        assert!(!g.holds_at(now));
        g.hold_until(now + Duration::from_secs(6));
        assert!(g.holds_at(now + Duration::from_secs(5)));
        assert!(!g.holds_at(now + Duration::from_secs(6)));
        // A paused process wakes long after its lease: it must not act.
        assert!(!g.holds_at(now + Duration::from_secs(60)));
        g.revoke();
        assert!(!g.holds_at(now));
        assert!(LeaseGuard::always().holds_at(now + Duration::from_secs(1 << 30)));
    }

    #[test]
    fn roles_read_as_users_see_them() {
        assert_eq!(serde_json::to_string(&Role::Standby).unwrap(), "\"standby\"");
        assert!(Leadership::single().acts());
        assert!(!Leadership::standby("b").acts());
        let name = default_instance();
        assert!(name.ends_with(&format!("-{}", std::process::id())), "{name}");
    }
}
