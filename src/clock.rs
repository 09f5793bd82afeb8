//! The one wall clock: real in the daemon, controlled in tests, so pending durations, cooldowns, windows and cron
//! schedules are testable without sleeping.
//!
//! Only *wall-clock* readings come from here (what time it is: journal times, `for`, cron). Intervals (`every:`
//! probes, timeouts) run on tokio's monotonic clock, which a wall-clock step cannot stall or flood.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Where Warden reads the wall-clock time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// A clock that moves only when told to.
    Manual(Arc<Mutex<DateTime<Utc>>>),
    /// A wall clock that runs with tokio's clock from a start time (so with tokio's time paused in a test it moves
    /// exactly as far as tokio's time does), and that can be stepped either way as NTP or an operator would.
    Following(Arc<Following>),
}

/// The state of a [`Clock::Following`] clock.
#[derive(Debug)]
pub struct Following {
    start: DateTime<Utc>,
    origin: tokio::time::Instant,
    steps: Mutex<chrono::Duration>,
}

impl Clock {
    /// A manual clock starting at `t`.
    pub fn manual(t: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(Mutex::new(t)))
    }

    /// A clock that reads `t` now and then runs with tokio's clock (see [`Clock::Following`]). Call it inside a
    /// tokio runtime.
    pub fn following_tokio(t: DateTime<Utc>) -> Self {
        Clock::Following(Arc::new(Following {
            start: t,
            origin: tokio::time::Instant::now(),
            steps: Mutex::new(chrono::Duration::zero()),
        }))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => *t.lock().unwrap_or_else(|p| p.into_inner()),
            Clock::Following(f) => {
                let ran = chrono::Duration::from_std(f.origin.elapsed()).unwrap_or(chrono::Duration::MAX);
                let steps = *f.steps.lock().unwrap_or_else(|p| p.into_inner());
                f.start + ran + steps
            }
        }
    }

    /// Moves a manual or following clock forward (no effect on the system clock).
    pub fn advance(&self, d: std::time::Duration) {
        self.step(chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX));
    }

    /// Steps a manual or following clock by `by`, forward or backward, as a wall-clock correction would (no
    /// effect on the system clock).
    pub fn step(&self, by: chrono::Duration) {
        match self {
            Clock::System => {}
            Clock::Manual(t) => {
                let mut g = t.lock().unwrap_or_else(|p| p.into_inner());
                *g = g.checked_add_signed(by).unwrap_or(*g);
            }
            Clock::Following(f) => {
                let mut g = f.steps.lock().unwrap_or_else(|p| p.into_inner());
                *g = g.checked_add(&by).unwrap_or(*g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_following_clock_runs_with_tokio_time_and_steps_both_ways() {
        let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let c = Clock::following_tokio(t0);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(c.now(), t0 + chrono::Duration::seconds(10));
        c.step(chrono::Duration::hours(-1));
        assert_eq!(c.now(), t0 + chrono::Duration::seconds(10) - chrono::Duration::hours(1));
        c.step(chrono::Duration::hours(2));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(c.now(), t0 + chrono::Duration::seconds(15) + chrono::Duration::hours(1));
        let m = Clock::manual(t0);
        m.step(chrono::Duration::minutes(-5));
        m.advance(Duration::from_secs(60));
        assert_eq!(m.now(), t0 - chrono::Duration::minutes(4));
    }
}
