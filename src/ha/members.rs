//! `warden_members`: each instance writes its row (role, epoch, restart owner id) at every renewal or retry, so
//! each can show the other as its *peer*, and a new leader knows which restart owners were its predecessors'.
//! Rows not seen for a day are deleted (an instance named after its pid leaves one row per run).

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use super::{Peer, Role};

/// The members table.
pub const MEMBERS_DDL: &str = "CREATE TABLE IF NOT EXISTS warden_members (instance TEXT PRIMARY KEY, \
     role TEXT NOT NULL, epoch BIGINT, owner TEXT NOT NULL, seen_at TIMESTAMPTZ NOT NULL)";

const UPSERT: &str =
    "INSERT INTO warden_members (instance, role, epoch, owner, seen_at) VALUES ($1, $2, $3, $4, now()) \
     ON CONFLICT (instance) DO UPDATE SET role = EXCLUDED.role, epoch = EXCLUDED.epoch, owner = EXCLUDED.owner, \
         seen_at = EXCLUDED.seen_at";

const PEER: &str = "SELECT instance, role, epoch, seen_at FROM warden_members WHERE instance <> $1 \
     ORDER BY seen_at DESC LIMIT 1";

const PRUNE: &str = "DELETE FROM warden_members WHERE seen_at < now() - interval '1 day'";

const OTHER_OWNERS: &str = "SELECT owner FROM warden_members WHERE instance <> $1 AND owner <> $2";

/// Creates the members table if it is missing.
pub async fn ensure_table(c: &impl GenericClient) -> Result<(), tokio_postgres::Error> {
    c.batch_execute(MEMBERS_DDL).await
}

/// Writes this instance's row.
pub async fn report(
    c: &impl GenericClient,
    instance: &str,
    role: Role,
    epoch: Option<i64>,
    owner: &str,
) -> Result<(), tokio_postgres::Error> {
    c.execute(UPSERT, &[&instance, &role.as_str(), &epoch, &owner]).await.map(|_| ())
}

/// The other instance seen last, if any.
pub async fn peer(c: &impl GenericClient, instance: &str) -> Result<Option<Peer>, tokio_postgres::Error> {
    let row = c.query_opt(PEER, &[&instance]).await?;
    Ok(row.map(|r| {
        let role: String = r.get(1);
        let seen: DateTime<Utc> = r.get(3);
        Peer {
            instance: r.get(0),
            role: match role.as_str() {
                "leader" => Role::Leader,
                "single" => Role::Single,
                _ => Role::Standby,
            },
            epoch: r.get(2),
            last_seen: seen,
        }
    }))
}

/// The restart owner ids of the other instances (known within the last day): restarts they own are theirs to
/// hand over when this instance becomes the leader.
pub async fn other_owners(
    c: &impl GenericClient,
    instance: &str,
    owner: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(c.query(OTHER_OWNERS, &[&instance, &owner]).await?.into_iter().map(|r| r.get(0)).collect())
}

/// Deletes the rows of instances not seen for a day.
pub async fn prune(c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    c.execute(PRUNE, &[]).await
}
