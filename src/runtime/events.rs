//! Events pushed to `POST /api/events` (by a Flink Kubernetes Operator listener plugin, a CI system, a deploy
//! script), judged like observations.
//!
//! ```text
//! server (parse, size limit, token, dedup) ──PushedEvent──► channel ──► events task ──► journal (`event`)
//!                                                                            └──► rules of the `events:` probes
//!                                                                                 (an evaluation slot, the
//!                                                                                 one evaluation path) ──► dispatcher
//! ```
//!
//! The server never reaches into the rules: it hands the event to this task through a bounded channel, and this
//! task commits each evaluation the way a probe does (rule state, then the verdict to the dispatcher, under the
//! generation gate). An event is one observation per probe that takes it: `obs.body` is the event (its `id`,
//! `source`, `kind`, `target`, `subject`, `time` and `data`, plus `received`, when Warden took it), `obs.probe` the
//! probe, `obs.target` the target it names or the pseudo-target `events`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::evaluators::Slot;
use super::probe::{commit, judge_one, Done, FollowUps};
use super::Shared;
use crate::evaluate::Observed;
use crate::model::{ActionKind, Observation};
use crate::plan::{EventProbe, Plan, EVENTS_TARGET};
use crate::script::{self, FollowUp, TargetInfo};
use crate::store::{NewEntry, RuleStateKey};

/// How many pushed events wait for the daemon at most; beyond that `POST /api/events` answers 503.
pub const QUEUE: usize = 256;

/// The longest `id`, `source`, `kind`, `target` or `subject` accepted, in bytes.
pub const MAX_NAME: usize = 256;

/// An event as a sender pushes it (the body of `POST /api/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushedEvent {
    /// A unique id chosen by the sender: an event retried with the same `id` (and `source`) within
    /// `server.events.dedup_window` is taken once. Optional; without it every post is a new event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Who sends it, e.g. `flink-operator`, `ci`, `deploy`. Probes select events by it (`events.sources`).
    pub source: String,
    /// What happened, e.g. `deployment-status`, `deployment-event`, `deployed`. Probes select events by it
    /// (`events.kinds`).
    pub kind: String,
    /// The name of a configured target the event is about; without it the event is judged on the pseudo-target
    /// `events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What it is about within the target, e.g. a job or a `FlinkDeployment` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When it happened (RFC 3339). Default: when Warden received it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// Anything else, as a JSON object. Default `{}`.
    #[serde(default = "empty_object")]
    pub data: serde_json::Value,
    /// When Warden received it (set by Warden; a value sent is refused).
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub received: Option<DateTime<Utc>>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Why a pushed event was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The body is not JSON, or not an event.
    #[error("the body is not an event: {message} at line {line} column {column} (expected {{\"source\": …, \"kind\": …, \"data\": {{…}}}})")]
    Json {
        /// What serde says.
        message: String,
        /// Line in the body.
        line: usize,
        /// Column in the body.
        column: usize,
    },
    /// A field is empty, too long, or not of the accepted characters.
    #[error("`{field}` {why}")]
    Field {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl PushedEvent {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, EventError> {
        let e: PushedEvent = serde_json::from_slice(body).map_err(|e| EventError::Json {
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_string(),
            line: e.line(),
            column: e.column(),
        })?;
        let name = |field: &'static str, v: &str| -> Result<(), EventError> {
            let why = if v.trim().is_empty() {
                "must not be empty".to_string()
            } else if v.len() > MAX_NAME {
                format!("is {} bytes long; at most {MAX_NAME} are accepted", v.len())
            } else if v.chars().any(char::is_control) {
                "must not contain control characters".to_string()
            } else {
                return Ok(());
            };
            Err(EventError::Field { field, why })
        };
        name("source", &e.source)?;
        name("kind", &e.kind)?;
        for (field, v) in [("id", &e.id), ("target", &e.target), ("subject", &e.subject)] {
            if let Some(v) = v {
                name(field, v)?;
            }
        }
        if !e.data.is_object() {
            return Err(EventError::Field { field: "data", why: "must be a JSON object".into() });
        }
        Ok(e)
    }

    /// The probes of `plan` that take this event, each with the target it is judged on and the rules that judge
    /// it there.
    pub fn routes<'p>(&self, plan: &'p Plan) -> Vec<(&'p EventProbe, String, &'p [String])> {
        plan.events
            .iter()
            .filter(|p| p.takes.takes(&self.source, &self.kind))
            .filter_map(|p| {
                let (target, rules) = match &self.target {
                    Some(t) => (t.clone(), p.targets.get(t)?),
                    None => (EVENTS_TARGET.to_string(), p.untargeted.as_ref()?),
                };
                (!rules.is_empty()).then_some((p, target, rules.as_slice()))
            })
            .collect()
    }
}

/// The ids of events taken within the dedup window, so that a retried event is taken once. Bounded: beyond
/// [`Dedup::MAX`] ids the oldest are forgotten first.
#[derive(Debug)]
pub struct Dedup {
    window: chrono::Duration,
    seen: HashMap<(String, String), DateTime<Utc>>,
    order: VecDeque<((String, String), DateTime<Utc>)>,
}

impl Dedup {
    /// The most ids remembered.
    pub const MAX: usize = 100_000;

    /// Remembers ids for `window`.
    pub fn new(window: std::time::Duration) -> Self {
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        Self { window, seen: HashMap::new(), order: VecDeque::new() }
    }

    /// `true` when `(source, id)` was not taken within the window before `now`; it is then remembered as taken.
    pub fn first(&mut self, source: &str, id: &str, now: DateTime<Utc>) -> bool {
        while let Some((key, at)) = self.order.front() {
            if self.order.len() <= Self::MAX && *at + self.window > now {
                break;
            }
            if self.seen.get(key) == Some(at) {
                self.seen.remove(key);
            }
            self.order.pop_front();
        }
        let key = (source.to_string(), id.to_string());
        if self.seen.get(&key).is_some_and(|at| *at + self.window > now) {
            return false;
        }
        self.seen.insert(key.clone(), now);
        self.order.push_back((key, now));
        true
    }

    /// Forgets `(source, id)` (an event that was accepted but could not be handed on, so a retry is taken).
    pub fn forget(&mut self, source: &str, id: &str) {
        self.seen.remove(&(source.to_string(), id.to_string()));
    }
}

/// Takes pushed events from `rx` until `stop` fires or every sender is gone: journals each, and runs the rules of
/// the `events:` probes that take it, one event at a time (in arrival order).
pub(super) async fn events_loop(mut rx: mpsc::Receiver<PushedEvent>, shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e {
                Some(e) => e,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let sh = shared.clone();
        let handle = tokio::runtime::Handle::current();
        let judged = shared.evaluators.run(&stop, move |slot| judge(&sh, event, handle, slot));
        let Some(judged) = judged.await else { return };
        match judged {
            Ok(true) => {}
            Ok(false) => return, // the dispatcher is gone: shutting down
            Err(e) => tracing::error!("judging a pushed event failed: {e}"),
        }
    }
}

/// Journals one event and runs the rules that take it. Runs on a blocking thread. `false` when the dispatcher
/// is gone.
fn judge(sh: &Shared, mut event: PushedEvent, handle: tokio::runtime::Handle, slot: Arc<Slot>) -> bool {
    let now = sh.clock.now();
    event.received = Some(now);
    let generation = sh.generation();
    let routes = event.routes(&generation.plan);
    let probes: Vec<&str> = routes.iter().map(|(p, _, _)| p.probe.as_str()).collect();
    let entry = NewEntry {
        time: Some(now),
        target: event.target.clone().unwrap_or_else(|| EVENTS_TARGET.into()),
        probe: "api/events".into(),
        subject: event.subject.clone().unwrap_or_default(),
        action: ActionKind::Event,
        detail: format!("{}/{}", event.source, event.kind),
        summary: format!("event `{}` from `{}`", event.kind, event.source),
        // What arrived, without `data` (it may carry anything the sender put in it).
        details: serde_json::json!({
            "id": event.id, "source": event.source, "kind": event.kind, "target": event.target,
            "subject": event.subject, "time": event.time, "probes": probes,
        }),
        outcome: if probes.is_empty() {
            "no probe takes it".into()
        } else {
            format!("judged by {}", probes.join(", "))
        },
        ..NewEntry::default()
    };
    if let Err(e) = sh.store.journal(&entry) {
        tracing::error!("cannot journal a pushed event: {e}");
    }
    let body = Arc::new(crate::model::Doc::from_json(&event));
    let mut done = vec![];
    for (probe, target, rule_names) in routes {
        let obs = Observation {
            probe: probe.probe.clone(),
            target: target.clone(),
            job: None,
            time: event.time.unwrap_or(now),
            status: None,
            latency: std::time::Duration::ZERO,
            body: Some(body.clone()),
            error: None,
        };
        let client = generation.clients.get(&target).cloned();
        let info = match &client {
            Some(c) => TargetInfo { name: c.name.clone(), url: c.base.clone(), labels: c.labels.clone() },
            None => TargetInfo { name: target.clone(), url: String::new(), labels: Default::default() },
        };
        let rules: Vec<_> = rule_names.iter().filter_map(|r| generation.plan.rules.get(r).cloned()).collect();
        let obs_dyn = script::obs_to_dynamic(&obs);
        let seen = Observed { obs: &obs_dyn, probe: &probe.probe, target: &info, now };
        let follow = client.map(|client| FollowUps {
            client,
            handle: handle.clone(),
            max_body: 16 << 20,
            log: None,
            slot: slot.clone(),
        });
        let mut state_of = |rule: &str| {
            let states = sh.states.lock().unwrap_or_else(|p| p.into_inner());
            let key = RuleStateKey { rule: rule.to_string(), target: target.clone(), job: None };
            states.get(&key).cloned().unwrap_or_default()
        };
        let mut follow_up = || -> Option<Box<dyn FollowUp>> { follow.as_ref().map(FollowUps::client) };
        sh.stats.evaluations.fetch_add(rules.len() as u64, Ordering::Relaxed);
        for r in &rules {
            if let Some(v) = judge_one(sh, &generation.engine, r, &seen, None, &mut state_of, &mut follow_up) {
                done.push(Done { rule: r.clone(), origin: v.origin, verdict: v.verdict, state: v.new_state });
            }
        }
    }
    commit(sh, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn an_event_parses_with_defaults_and_keeps_its_data() {
        let e = PushedEvent::parse(br#"{"source":"ci","kind":"deployed","data":{"version":"1.2"}}"#).unwrap();
        assert_eq!((e.source.as_str(), e.kind.as_str()), ("ci", "deployed"));
        assert_eq!(e.data["version"], "1.2");
        assert_eq!((e.id, e.target, e.time, e.received), (None, None, None, None));
        let e = PushedEvent::parse(br#"{"source":"ci","kind":"deployed"}"#).unwrap();
        assert_eq!(e.data, serde_json::json!({}));
    }

    #[test]
    fn bad_events_say_what_is_wrong() {
        let err = |b: &[u8]| PushedEvent::parse(b).unwrap_err().to_string();
        assert!(err(b"{\"source\": \"ci\",\n \"kind\": }").contains("at line 2 column"), "{}", err(b"{"));
        assert!(err(br#"{"kind":"x"}"#).contains("missing field `source`"));
        assert!(err(br#"{"source":"ci","kind":"x","colour":1}"#).contains("unknown field `colour`"));
        assert!(err(br#"{"source":"ci","kind":"x","received":"2024-01-01T00:00:00Z"}"#).contains("unknown field"));
        assert_eq!(err(br#"{"source":" ","kind":"x"}"#), "`source` must not be empty");
        assert_eq!(err(br#"{"source":"ci","kind":"x","data":[1]}"#), "`data` must be a JSON object");
        let long = format!(r#"{{"source":"ci","kind":"x","id":"{}"}}"#, "a".repeat(MAX_NAME + 1));
        assert!(err(long.as_bytes()).starts_with("`id` is 257 bytes long"));
        assert!(err(br#"{"source":"ci","kind":"a\nb"}"#).contains("control characters"));
    }

    #[test]
    fn a_retried_id_is_taken_once_within_the_window() {
        let mut d = Dedup::new(std::time::Duration::from_secs(60));
        assert!(d.first("ci", "42", at(0)));
        assert!(!d.first("ci", "42", at(59)), "a retry within the window is a duplicate");
        assert!(d.first("deploy", "42", at(1)), "the same id from another source is another event");
        assert!(d.first("ci", "42", at(60)), "after the window it is new again");
        d.forget("ci", "42");
        assert!(d.first("ci", "42", at(61)), "a forgotten id is taken again");
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut d = Dedup::new(std::time::Duration::from_secs(3600));
        for i in 0..Dedup::MAX + 10 {
            assert!(d.first("s", &i.to_string(), at(0)));
        }
        assert!(d.first("s", "x", at(0)));
        assert!(d.seen.len() <= Dedup::MAX + 1, "{}", d.seen.len());
        assert!(!d.first("s", &(Dedup::MAX + 5).to_string(), at(0)), "the newest ids are kept");
    }
}
