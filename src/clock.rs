//! The one clock: real in the daemon, hand-driven in tests, so pending durations, cooldowns and windows are
//! testable without sleeping.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// Where Warden reads the time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// The system clock.
    System,
    /// A clock that moves only when told to.
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// A manual clock starting at `t`.
    pub fn manual(t: DateTime<Utc>) -> Self {
        Clock::Manual(Arc::new(Mutex::new(t)))
    }
    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(t) => *t.lock().expect("clock"),
        }
    }
    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, d: std::time::Duration) {
        if let Clock::Manual(t) = self {
            let mut g = t.lock().expect("clock");
            *g += chrono::Duration::from_std(d).expect("duration");
        }
    }
}
