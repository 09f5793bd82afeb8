//! When probes run: a fixed interval (`every: 10s`) or a cron expression with seconds.
//!
//! [`Schedule::next_after`] is a pure function of time, so the scheduler's behaviour (including skipped runs when
//! one run takes longer than the interval) is testable without sleeping.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A probe's schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every fixed interval, starting right away.
    Every(Duration),
    /// On a cron schedule (UTC).
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    /// Parses a cron expression with seconds (`sec min hour dom month dow [year]`).
    pub fn cron(expr: &str) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "invalid cron expression `{expr}`: expected 6 or 7 fields (sec min hour day-of-month month \
                 day-of-week [year]), found {fields}"
            ));
        }
        cron::Schedule::from_str(expr)
            .map(|s| Schedule::Cron(Box::new(s)))
            .map_err(|e| format!("invalid cron expression `{expr}`: {e}"))
    }

    /// The first run time strictly after `t`. For `every`, runs are aligned to the previous run time `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(t + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX)),
            Schedule::Cron(c) => c.after(&t).next(),
        }
    }

    /// After a run that was due at `due` finished at `now`: the next due time that is still in the future, and how
    /// many due times were skipped because the run took too long (runs never overlap).
    pub fn next_due(&self, due: DateTime<Utc>, now: DateTime<Utc>) -> (Option<DateTime<Utc>>, u64) {
        let mut skipped = 0;
        let mut next = self.next_after(due);
        while let Some(n) = next {
            if n > now {
                break;
            }
            skipped += 1;
            if let Schedule::Every(d) = self {
                // Jump straight past `now` instead of iterating for very long stalls.
                let d = chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::MAX);
                let behind = (now - n).num_milliseconds().max(0) / d.num_milliseconds().max(1);
                skipped += behind as u64;
                next = Some(n + d * (behind as i32 + 1));
                break;
            }
            next = self.next_after(n);
        }
        (next, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cron_needs_seconds_and_reports_errors() {
        assert!(Schedule::cron("*/5 * * * *").unwrap_err().contains("expected 6 or 7 fields"));
        assert!(Schedule::cron("*/5 * * * * * * *").is_err());
        assert!(Schedule::cron("99 * * * * *").unwrap_err().starts_with("invalid cron expression `99 * * * * *`"));
        let s = Schedule::cron("*/15 * * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap();
        assert_eq!(s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 15).unwrap()));
    }

    #[test]
    fn slow_runs_skip_and_count_instead_of_overlapping() {
        let s = Schedule::Every(Duration::from_secs(10));
        let due = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        // Finished within the interval: nothing skipped.
        assert_eq!(s.next_due(due, due + chrono::Duration::seconds(3)), (Some(due + chrono::Duration::seconds(10)), 0));
        // Took 25 s: the runs due at 10 s and 20 s are skipped, the next is at 30 s.
        assert_eq!(
            s.next_due(due, due + chrono::Duration::seconds(25)),
            (Some(due + chrono::Duration::seconds(30)), 2)
        );
        let c = Schedule::cron("*/10 * * * * *").unwrap();
        assert_eq!(
            c.next_due(due, due + chrono::Duration::seconds(25)),
            (Some(due + chrono::Duration::seconds(30)), 2)
        );
    }
}
