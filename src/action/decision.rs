//! The decision record of a command run or a restart ([`Decision`]): built by the dispatcher from the evaluation
//! that asked for the action, and written in the same store transaction as the action's journal entry.
//!
//! What goes in, and what never does:
//!
//! - the rule, probe, target, job, what was asked, the job id it replaces and the root exception the rule reported;
//! - the rule's details: the request's own merged with its alert's about the same job in the same evaluation (the
//!   Flink pack reports the root cause in the alert, not in the restart request);
//! - the job's entry of the observation (its element of `/jobs/overview`, found by job id, else by name), never
//!   the whole answer;
//! - no secrets: values under secret-looking keys (`password`, `token`, `secret`, `authorization`, …) are masked,
//!   URLs lose their user information and query (as on the status page), and the target's URL, credentials
//!   and the commands' environment are not part of it at all;
//! - bounded: each part is cut to [`MAX_PART`] bytes of JSON (long texts shortened, long lists cut, deep nesting
//!   left out), which [`Decision::notes`] says.

use serde_json::{Map, Value};

use sonic_rs::{JsonValueTrait, ValueRef};

use crate::model::{doc, ActionRequest, Asked, Decision, DocValue, Origin, RequestKind};

/// The most bytes of JSON each of the record's parts (details, observation excerpt) keeps.
pub const MAX_PART: usize = 8 * 1024;

/// How many values of the observation are looked at to find the job's entry (a cluster may list thousands of
/// jobs; this bounds the work on a pathological answer).
const SEARCH_LIMIT: usize = 200_000;

/// The decision record of `r`, a run or restart request of the evaluation `o` whose requests were `evaluation`.
/// `None` for alerts and log lines (they have no record).
pub fn decide(o: &Origin, r: &ActionRequest, evaluation: &[ActionRequest]) -> Option<Decision> {
    let (asked, jid) = match &r.kind {
        RequestKind::Run { command, vars } => {
            let shown = vars
                .iter()
                .map(|(k, v)| {
                    let v = if secret_key(k) { MASK.to_string() } else { redact_text(v) };
                    (k.clone(), v)
                })
                .collect();
            (Asked::Run { command: command.clone(), vars: shown }, vars.get("jid").cloned())
        }
        RequestKind::Restart { job, jid, strategy, .. } => {
            (Asked::Restart { job: job.clone(), strategy: *strategy }, Some(jid.clone()))
        }
        RequestKind::Rescale { job, jid, to } => (Asked::Rescale { job: job.clone(), to: *to }, Some(jid.clone())),
        RequestKind::Alert | RequestKind::Log | RequestKind::Patch { .. } => return None,
    };
    let jid_before = jid.filter(|j| !j.is_empty());
    let mut notes = vec![];

    // The request's details, then those of the rule's alert about the same job in this evaluation.
    let mut details = Map::new();
    let alerts = evaluation.iter().filter(|a| matches!(a.kind, RequestKind::Alert) && a.subject == r.subject);
    for d in alerts.map(|a| &a.details).chain(std::iter::once(&r.details)) {
        if let Value::Object(m) = d {
            details.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }
    let root_cause = details.get("root_cause").and_then(|c| match c {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    });
    let mut details = Value::Object(details);
    redact(&mut details);
    let details = bounded(details, "the rule's details", &mut notes);

    let observed = match o.observed.as_deref() {
        None => None,
        Some(body) => match find_entry(body.root(), &r.subject, jid_before.as_deref()) {
            Some(entry) => {
                let mut entry = doc::to_json(entry);
                redact(&mut entry);
                Some(bounded(entry, "the observation's entry of the job", &mut notes))
            }
            None => {
                notes.push(format!("the observation did not list job `{}`", r.subject));
                None
            }
        },
    };
    Some(Decision {
        rule: o.rule.clone(),
        probe: o.probe.clone(),
        target: o.target.clone(),
        subject: r.subject.clone(),
        decided_at: o.time,
        asked,
        jid_before,
        root_cause: root_cause.map(|c| redact_text(&c)).map(|c| shorten(&c, 2000)),
        details,
        observed,
        notes,
    })
}

/// The job's entry in an observation: the object whose `jid` (or `id`) is `jid`, else the newest (by
/// `start-time`) whose `name` is `subject`. Searched breadth first, a few levels deep, over a bounded number of
/// values.
pub fn find_entry<'a>(body: &'a DocValue, subject: &str, jid: Option<&str>) -> Option<&'a DocValue> {
    let mut by_name: Option<&DocValue> = None;
    let mut queue = std::collections::VecDeque::from([(body, 0usize)]);
    let mut seen = 0usize;
    while let Some((v, depth)) = queue.pop_front() {
        seen += 1;
        if seen > SEARCH_LIMIT {
            break;
        }
        let children: Box<dyn Iterator<Item = &DocValue>> = match v.as_ref() {
            ValueRef::Object(m) => {
                let s = |k: &str| doc::field(v, k).and_then(|x| x.as_str());
                if let Some(j) = jid {
                    if s("jid") == Some(j) || s("id") == Some(j) {
                        return Some(v);
                    }
                }
                if s("name") == Some(subject) {
                    let start = |x: &DocValue| doc::field(x, "start-time").and_then(|t| t.as_i64()).unwrap_or(i64::MIN);
                    if by_name.is_none_or(|b| start(v) > start(b)) {
                        by_name = Some(v);
                    }
                }
                Box::new(m.iter().map(|(_, c)| c))
            }
            ValueRef::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        if depth < 4 {
            queue.extend(children.filter(|c| c.is_object() || c.is_array()).map(|c| (c, depth + 1)));
        }
    }
    by_name
}

const MASK: &str = "***";

/// Whether a key names something secret.
fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "authorization", "api_key", "apikey", "api-key", "credential", "cookie"]
        .iter()
        .any(|s| k.contains(s))
}

/// A text with the credentials and query of a URL in it masked (the whole text when it is a URL; URLs inside
/// longer texts are left as they are only if they carry neither).
fn redact_text(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    let t = s.trim();
    if !t.contains(char::is_whitespace) {
        return if reqwest::Url::parse(t).is_ok() { crate::server::redact_url(t) } else { s.to_string() };
    }
    s.split(' ')
        .map(
            |w| {
                if w.contains("://") && reqwest::Url::parse(w).is_ok() {
                    crate::server::redact_url(w)
                } else {
                    w.into()
                }
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// Masks secrets in a JSON value, in place: values of secret-looking keys, credentials and queries of URLs.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if secret_key(k) && !x.is_null() {
                    *x = Value::String(MASK.into());
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        Value::String(s) if s.contains("://") => *s = redact_text(s),
        _ => {}
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// `v` cut down until its JSON is at most [`MAX_PART`] bytes; a note says what was cut.
fn bounded(v: Value, what: &str, notes: &mut Vec<String>) -> Value {
    let size = |v: &Value| serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    let full = size(&v);
    if full <= MAX_PART {
        return v;
    }
    for (depth, text, items) in [(6, 1000, 50), (4, 300, 20), (3, 120, 8), (2, 60, 4)] {
        let cut = shrink(&v, depth, text, items);
        if size(&cut) <= MAX_PART {
            notes.push(format!("{what} was {full} bytes: long texts shortened, long lists cut"));
            return cut;
        }
    }
    notes.push(format!("{what} was {full} bytes, too large to keep"));
    Value::Null
}

fn shrink(v: &Value, depth: usize, text: usize, items: usize) -> Value {
    match v {
        Value::String(s) => Value::String(shorten(s, text)),
        Value::Array(a) if depth == 0 => Value::String(format!("[{} items]", a.len())),
        Value::Object(m) if depth == 0 => Value::String(format!("{{{} fields}}", m.len())),
        Value::Array(a) => {
            let mut out: Vec<Value> = a.iter().take(items).map(|x| shrink(x, depth - 1, text, items)).collect();
            if a.len() > items {
                out.push(Value::String(format!("… {} more", a.len() - items)));
            }
            Value::Array(out)
        }
        Value::Object(m) => {
            let mut out: Map<String, Value> =
                m.iter().take(items * 4).map(|(k, x)| (k.clone(), shrink(x, depth - 1, text, items))).collect();
            if m.len() > items * 4 {
                out.insert("…".into(), Value::String(format!("{} more fields", m.len() - items * 4)));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
