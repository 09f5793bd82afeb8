//! The domain's closed sets of values — restart strategies and steps, a restart's result, journal action kinds —
//! as enums. The store keeps them as text; they are parsed once, where a row is read.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A text that names none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what} (one of {})", expected.join(", "))]
pub struct UnknownValue {
    /// What was being parsed (`restart strategy`, …).
    pub what: &'static str,
    /// The text.
    pub value: String,
    /// The values that are known.
    pub expected: &'static [&'static str],
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every value, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The text of every value, in order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The text form (as stored and shown).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue { what: $what, value: s.to_string(), expected: $name::NAMES }),
                }
            }
        }
    };
}

text_enum!(
    /// How a restart brings a job back.
    RestartStrategy, "restart strategy", {
        /// A savepoint of the running job (triggered then cancelled, or stop-with-savepoint).
        Savepoint => "savepoint",
        /// The failed run's newest retained checkpoint, else the newest location Warden recorded, else the fallback.
        LastCheckpoint => "last-checkpoint",
        /// No state.
        Stateless => "stateless",
    }
);

text_enum!(
    /// The last step a restart reached (saved before and after each step, so a restart resumes where it was).
    RestartStep, "restart step", {
        /// Recorded; nothing done yet.
        Started => "started",
        /// An upgrade's or rescale's jar is on the cluster (uploaded once, or found by name); its id is recorded.
        JarUploaded => "jar-uploaded",
        /// A savepoint was triggered; waiting for it.
        SavepointTriggered => "savepoint-triggered",
        /// The state to restore is known (or none); the old run is being made sure to be gone.
        StateChosen => "state-chosen",
        /// About to submit (or adopt a submission that already happened).
        Submitting => "submitting",
        /// Submitted; verifying that the new run is RUNNING and restored.
        Submitted => "submitted",
        /// An upgrade's or rescale's new run is RUNNING and restored; it must stay so for the job's
        /// `upgrade.probation` before the change is done.
        Probation => "probation",
        /// Verified.
        Done => "done",
    }
);

text_enum!(
    /// What a restart record does: bring the same job back, change its jar or parallelism, or undo such a change.
    RestartKind, "restart kind", {
        /// The same job from its state (a `restart_job` request or `warden restart`).
        Restart => "restart",
        /// A new jar (or entry class or arguments) from a savepoint of the running job (`warden upgrade`).
        Upgrade => "upgrade",
        /// The previous jar and parallelism again, from the same state, after an upgrade or rescale failed.
        Rollback => "rollback",
        /// Another parallelism through a savepoint (`warden rescale`).
        Rescale => "rescale",
    }
);

#[allow(clippy::derivable_impls)] // the enum comes from `text_enum!`
impl Default for RestartKind {
    fn default() -> Self {
        RestartKind::Restart
    }
}

impl RestartKind {
    /// Whether a failure after the old run is gone is undone by a rollback (upgrades and rescales).
    pub fn rolls_back(self) -> bool {
        matches!(self, RestartKind::Upgrade | RestartKind::Rescale)
    }
}

text_enum!(
    /// What a journal entry records.
    ActionKind, "journal action", {
        /// An alert fired or reminded.
        Alert => "alert",
        /// An alert resolved.
        Resolved => "resolved",
        /// A named command ran.
        Run => "run",
        /// A JSON merge patch was sent to a target (e.g. a Kubernetes resource the Flink operator manages).
        Patch => "patch",
        /// A relaunch (command or restart) was refused because the target's jobs are managed by someone else
        /// (a target labelled `managed_by`, e.g. `flink-operator`).
        Refused => "refused",
        /// A restart from state.
        Restart => "restart",
        /// A change of a running job's parallelism (`rescale`), in place or through a savepoint restart.
        Rescale => "rescale",
        /// A rule's log line.
        Log => "log",
        /// The storm guard gave up on a job.
        Guard => "guard",
        /// An operator reset the storm guard of a job.
        GuardReset => "guard-reset",
        /// A notification was queued or delivered.
        Notify => "notify",
        /// An event pushed to `POST /api/events` arrived.
        Event => "event",
    }
);

impl PartialEq<&str> for ActionKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl ActionKind {
    /// Whether entries of this kind are relaunches (with a decision record; the storm guard counts them, and
    /// patches too).
    pub fn is_relaunch(self) -> bool {
        matches!(self, ActionKind::Run | ActionKind::Restart)
    }
}

/// How a restart ended; stored as `ok` or `failed at <step>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartResult {
    /// The new job runs and restored from the chosen state.
    Ok,
    /// A step failed.
    Failed {
        /// The step that failed (`savepoint`, `choose-state`, `cancel`, `submit`, `verify`, `resume`, …).
        step: String,
        /// Why.
        message: String,
    },
}

impl fmt::Display for RestartResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartResult::Ok => f.write_str("ok"),
            RestartResult::Failed { step, message } => write!(f, "failed at {step}: {message}"),
        }
    }
}

impl FromStr for RestartResult {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        if s == "ok" {
            return Ok(RestartResult::Ok);
        }
        let rest = s.strip_prefix("failed at ").ok_or_else(|| UnknownValue {
            what: "restart result",
            value: s.to_string(),
            expected: &["ok", "failed at <step>: <message>"],
        })?;
        let (step, message) = rest.split_once(": ").unwrap_or((rest, ""));
        Ok(RestartResult::Failed { step: step.to_string(), message: message.to_string() })
    }
}

impl Serialize for RestartResult {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_through_its_text() {
        for s in RestartStrategy::ALL {
            assert_eq!(s.as_str().parse::<RestartStrategy>().unwrap(), *s);
        }
        for s in RestartStep::ALL {
            assert_eq!(s.as_str().parse::<RestartStep>().unwrap(), *s);
        }
        for s in RestartKind::ALL {
            assert_eq!(s.as_str().parse::<RestartKind>().unwrap(), *s);
        }
        for s in ActionKind::ALL {
            assert_eq!(s.as_str().parse::<ActionKind>().unwrap(), *s);
        }
        let f = RestartResult::Failed { step: "submit".into(), message: "no jar: x: y".into() };
        assert_eq!(f.to_string().parse::<RestartResult>().unwrap(), f);
        assert_eq!("ok".parse::<RestartResult>().unwrap(), RestartResult::Ok);
        let e = "resume".parse::<RestartStrategy>().unwrap_err().to_string();
        assert_eq!(e, "`resume` is not a restart strategy (one of savepoint, last-checkpoint, stateless)");
    }
}
