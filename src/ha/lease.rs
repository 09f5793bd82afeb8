//! The lease row: one row (`id = 1`) naming the leader (`holder`), its `epoch` (grows by one at every take, never
//! goes back) and until when its leadership holds (`lease_until`). Every decision is one statement on the
//! database's clock (`now()`), so the instances' clocks never have to agree.
//!
//! Why the row alone, and no advisory lock: a session advisory lock lives as long as its connection, so a leader
//! that is paused (SIGSTOP) or cut off behind a half-open TCP connection would hold it for as long as the server
//! keeps the connection, and a pooler in transaction mode (pgbouncer) hands sessions to whoever comes next. A lease
//! row works through any pooler and expires on its own.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

/// The lease table. The store's PostgreSQL migration creates it too, with this very statement.
pub const LEADER_DDL: &str = "CREATE TABLE IF NOT EXISTS warden_leader (id INT PRIMARY KEY CHECK (id = 1), \
     holder TEXT NOT NULL, epoch BIGINT NOT NULL, lease_until TIMESTAMPTZ NOT NULL, renewed_at TIMESTAMPTZ NOT NULL)";

/// Takes the lease for `holder` if nobody holds it (no row, or its lease ran out) or `holder` itself does. The epoch
/// grows by one at every take, a re-take by the same holder included: anything written under the holder's earlier
/// epoch (by a process that is gone, or by itself before it stepped down) is then refused by the fence.
const TAKE: &str = "INSERT INTO warden_leader (id, holder, epoch, lease_until, renewed_at) \
     VALUES (1, $1, 1, now() + make_interval(secs => $2), now()) \
     ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, epoch = warden_leader.epoch + 1, \
         lease_until = EXCLUDED.lease_until, renewed_at = EXCLUDED.renewed_at \
     WHERE warden_leader.lease_until < now() OR warden_leader.holder = EXCLUDED.holder \
     RETURNING epoch, lease_until";

/// Extends the lease of `holder` at `epoch`. Also after the row's lease ran out, as long as nobody took it: the
/// epoch is unchanged, so nobody acted in between.
const RENEW: &str = "UPDATE warden_leader SET lease_until = now() + make_interval(secs => $3), renewed_at = now() \
     WHERE id = 1 AND holder = $1 AND epoch = $2 RETURNING lease_until";

/// Ends the lease of `holder` at `epoch` now, so the standby takes over at its next try.
const RELEASE: &str = "UPDATE warden_leader SET lease_until = now() - interval '1 millisecond' \
     WHERE id = 1 AND holder = $1 AND epoch = $2";

/// What the lease row says.
const READ: &str = "SELECT holder, epoch, lease_until, now() FROM warden_leader WHERE id = 1";

/// A lease just taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The new epoch.
    pub epoch: i64,
    /// Until when it holds (the database's clock).
    pub lease_until: DateTime<Utc>,
}

/// The lease row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// Who holds (or last held) the lease.
    pub holder: String,
    /// Its epoch.
    pub epoch: i64,
    /// Until when.
    pub lease_until: DateTime<Utc>,
    /// The database's clock when it was read.
    pub now: DateTime<Utc>,
}

impl LeaseRow {
    /// Whether someone holds the lease now (by the database's clock).
    pub fn held(&self) -> bool {
        self.lease_until >= self.now
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Creates the lease table if it is missing.
pub async fn ensure_table(c: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    c.batch_execute(LEADER_DDL).await
}

/// Takes the lease for `holder` for `lease`, if it is free or already `holder`'s. `None`: someone else holds it.
pub async fn take(
    c: &impl GenericClient,
    holder: &str,
    lease: Duration,
) -> Result<Option<Taken>, tokio_postgres::Error> {
    let row = c.query_opt(TAKE, &[&holder, &secs(lease)]).await?;
    Ok(row.map(|r| Taken { epoch: r.get(0), lease_until: r.get(1) }))
}

/// Renews `holder`'s lease at `epoch` for `lease`. `None`: the lease is not ours any more (someone took it).
pub async fn renew(
    c: &impl GenericClient,
    holder: &str,
    epoch: i64,
    lease: Duration,
) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    let row = c.query_opt(RENEW, &[&holder, &epoch, &secs(lease)]).await?;
    Ok(row.map(|r| r.get(0)))
}

/// Ends `holder`'s lease at `epoch` at once. `false`: it was not ours any more.
pub async fn release(c: &impl GenericClient, holder: &str, epoch: i64) -> Result<bool, tokio_postgres::Error> {
    Ok(c.execute(RELEASE, &[&holder, &epoch]).await? == 1)
}

/// The lease row, if there is one.
pub async fn read(c: &impl GenericClient) -> Result<Option<LeaseRow>, tokio_postgres::Error> {
    let row = c.query_opt(READ, &[]).await?;
    Ok(row.map(|r| LeaseRow { holder: r.get(0), epoch: r.get(1), lease_until: r.get(2), now: r.get(3) }))
}
