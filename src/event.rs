//! Progress announcements (for `warden demo`, logs and tests): what was observed, decided and done.

use tokio::sync::broadcast;

use crate::model::AlertRecord;

/// Something worth telling a person about.
#[derive(Debug, Clone)]
pub enum Event {
    /// A poll finished.
    Observed {
        /// Probe.
        probe: String,
        /// Target.
        target: String,
        /// The error, if the poll failed.
        error: Option<String>,
    },
    /// A rule failed (syntax, runtime error, limit).
    RuleFailed {
        /// The error, with file:line:col.
        error: String,
    },
    /// An alert was written (firing, reminder, resolved, giving up, log).
    Alert(AlertRecord),
    /// A restart moved to a new step.
    RestartProgress {
        /// Job name.
        job: String,
        /// The step reached.
        step: crate::model::RestartStep,
        /// What happened.
        message: String,
    },
    /// A reload was tried.
    Reloaded {
        /// Whether it was applied.
        ok: bool,
        /// Why not (each with file:line:col, source line and caret).
        errors: Vec<String>,
        /// How long loading and swapping took.
        took: std::time::Duration,
    },
    /// A command started.
    RunStarted {
        /// Command name.
        command: String,
        /// Subject.
        subject: String,
        /// The argument vector.
        argv: Vec<String>,
    },
    /// A command ended.
    RunFinished {
        /// Command name.
        command: String,
        /// Subject.
        subject: String,
        /// Outcome as journalled.
        outcome: String,
        /// Captured output.
        output: String,
    },
}

/// A broadcast of events; sending never blocks and nobody has to listen.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<Event>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl Events {
    /// Announces an event.
    pub fn send(&self, e: Event) {
        let _ = self.0.send(e);
    }
    /// Listens from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.subscribe()
    }
}
