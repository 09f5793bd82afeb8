//! What the storm guard reads: when the relaunches of a job happened.

use super::{args, ts, Result, Store};
use chrono::{DateTime, Utc};

impl Store {
    /// When each command and restart for `subject` on `target` since `since` was requested, oldest first (the same
    /// entries as [`Store::runs_since`] counts: dry runs and suppressed ones do not count; operator restarts do).
    pub fn relaunch_times_since(
        &self,
        target: &str,
        subject: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>> {
        let times: Vec<String> = self.with(|c| {
            c.query(
                "SELECT time FROM journal WHERE action IN ('run', 'restart', 'patch') AND target = ?1 AND subject = ?2
                 AND time >= ?3 AND outcome <> 'dry-run' AND outcome NOT LIKE 'suppressed%' ORDER BY time",
                args![target, subject, ts(since)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect()
        })?;
        Ok(times.iter().filter_map(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc)).collect())
    }
}
