//! What a new leader does before it acts: the restarts its predecessors drove are released, so its orphan scan
//! resumes each from its step journal at once instead of waiting out the restart's own lease (30 s). The restart's
//! journal then adopts a job the old leader already submitted (the `submitted` step records the new job id), never
//! submitting a second.
//!
//! Only restarts owned by another instance of the pair (as `warden_members` lists them) are released: a restart
//! that an operator's `warden restart` drives keeps its owner. An old leader that is only paused and wakes up finds
//! its restart taken over (its lease renewal fails, so it stops) and its writes refused by the fence.

use crate::store::{Store, StoreError};

/// Releases every unfinished restart owned by one of `predecessors` (restart owner ids). Returns how many.
/// Blocking (the store): call it on the store's thread.
pub fn release_predecessors_restarts(store: &Store, predecessors: &[String]) -> Result<Vec<i64>, StoreError> {
    let mut released = vec![];
    if predecessors.is_empty() {
        return Ok(released);
    }
    for r in store.unfinished_restarts()? {
        let Some(owner) = r.owner.as_deref() else { continue };
        if predecessors.iter().any(|p| p == owner) {
            store.release_restart(r.id, owner)?;
            released.push(r.id);
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::RestartStrategy;

    #[test]
    fn a_new_leader_takes_over_its_predecessors_restart_at_once_and_nobody_elses() {
        let s = Store::in_memory();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let lease = chrono::Duration::seconds(30);
        let old = s.begin_restart(1, "jm", "clicks", RestartStrategy::Savepoint, "j1", t0, "pid 7 on a", lease);
        let old = old.unwrap().unwrap();
        let cli = s.begin_restart(2, "jm", "orders", RestartStrategy::Savepoint, "j2", t0, "pid 9 on b", lease);
        let cli = cli.unwrap().unwrap();
        // Within the old leader's restart lease nobody can claim it …
        assert!(s.claim_restart(old.id, "pid 8 on b", t0, lease).unwrap().is_none());
        let released = release_predecessors_restarts(&s, &["pid 7 on a".to_string()]).unwrap();
        assert_eq!(released, vec![old.id]);
        // … after the handover the new leader claims it at once, and the operator's own restart stays theirs.
        let claimed = s.claim_restart(old.id, "pid 8 on b", t0, lease).unwrap().unwrap();
        assert_eq!(claimed.owner.as_deref(), Some("pid 8 on b"));
        assert!(s.claim_restart(cli.id, "pid 8 on b", t0, lease).unwrap().is_none());
        assert!(release_predecessors_restarts(&s, &[]).unwrap().is_empty());
    }
}
