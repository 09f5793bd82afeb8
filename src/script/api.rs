//! The functions a rule can call. They only *record* what the rule asks for; none of them acts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rhai::{Dynamic, Engine, EvalAltResult, Map};

use super::convert::to_json;
use super::CTX;
use crate::model::{ActionRequest, Pending, RequestKind, Severity};

/// Answers a rule's follow-up GET. The daemon's implementation sends a real request to the rule's target;
/// tests supply canned answers.
pub trait FollowUp: Send {
    /// Fetches `path` (starting with `/`) from the rule's target.
    fn get(&mut self, path: &str) -> FollowUpAnswer;

    /// Fetches `path` like [`FollowUp::get`], waiting at most `limit` (what is left of the evaluation's total time
    /// budget) for the answer. The default ignores `limit`: canned answers do not wait.
    fn get_within(&mut self, path: &str, limit: Duration) -> FollowUpAnswer {
        let _ = limit;
        self.get(path)
    }
}

/// The answer to a follow-up GET.
#[derive(Debug, Clone, Default)]
pub struct FollowUpAnswer {
    /// HTTP status, if an answer arrived.
    pub status: Option<u16>,
    /// JSON body, if any (shared: the recording of follow-ups keeps it too).
    pub body: Option<std::sync::Arc<crate::model::Doc>>,
    /// `(kind, message)` when the answer is not usable.
    pub error: Option<(String, String)>,
}

pub(super) struct EvalCtx {
    pub rule: String,
    /// When the rule's computing time (`scripts.max_time`) runs out; moved on by the time follow-ups wait.
    pub deadline: Instant,
    /// When the evaluation's total budget (`scripts.max_total_time`) runs out: no follow-up waits past it.
    pub total_deadline: Instant,
    /// `scripts.max_total_time`, for messages.
    pub total_budget: Duration,
    pub now: DateTime<Utc>,
    pub requests: Vec<ActionRequest>,
    pub skipped: Option<String>,
    pub follow_up: Option<Box<dyn FollowUp>>,
    pub follow_ups_left: u32,
    /// The command names under `commands:`, when known: `run()` with another name is an error where it is called.
    pub commands: Option<std::sync::Arc<std::collections::BTreeSet<String>>>,
}

type R<T> = Result<T, Box<EvalAltResult>>;

fn with_ctx<T>(f: impl FnOnce(&mut EvalCtx) -> R<T>) -> R<T> {
    CTX.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => f(ctx),
        None => Err("this function can only be called while a rule is evaluated".into()),
    })
}

fn get_str(m: &Map, key: &str) -> R<Option<String>> {
    match m.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) if v.is_string() => Ok(Some(v.clone().into_string().unwrap_or_default())),
        Some(v) => Ok(Some(v.to_string())),
    }
}

fn pending_of(m: &Map) -> R<Option<Pending>> {
    let v = m.get("for").or_else(|| m.get("pending_for"));
    match v {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => {
            if let Ok(n) = v.as_int() {
                if n < 1 {
                    return Err(format!("`for` as a count of evaluations must be at least 1, not {n}").into());
                }
                return Ok(Some(Pending::Evaluations(n as u32)));
            }
            let s = v.to_string();
            crate::config::units::parse_duration(&s).map(|d| Some(Pending::Duration(d))).map_err(|e| e.into())
        }
    }
}

fn cooldown_of(m: &Map) -> R<Option<Duration>> {
    match get_str(m, "cooldown")? {
        None => Ok(None),
        Some(s) => crate::config::units::parse_duration(&s).map(Some).map_err(|e| e.into()),
    }
}

fn severity_of(m: &Map, default: Severity) -> R<Severity> {
    match get_str(m, "severity")? {
        None => Ok(default),
        Some(s) => Severity::parse(&s)
            .ok_or_else(|| format!("severity must be \"info\", \"warning\" or \"critical\", not {s:?}").into()),
    }
}

fn details_of(m: &Map) -> serde_json::Value {
    m.get("details").map(to_json).unwrap_or(serde_json::Value::Null)
}

/// Records a request of the running evaluation.
fn push(req: ActionRequest) -> R<()> {
    with_ctx(|c| {
        c.requests.push(req);
        Ok(())
    })
}

/// `alert(#{subject, summary, severity, details, for, cooldown})`
fn alert(m: Map) -> R<()> {
    let summary = get_str(&m, "summary")?.ok_or("alert() needs a `summary`")?;
    let req = ActionRequest {
        kind: RequestKind::Alert,
        subject: get_str(&m, "subject")?.unwrap_or_default(),
        severity: severity_of(&m, Severity::Warning)?,
        summary,
        details: details_of(&m),
        pending: pending_of(&m)?,
        cooldown: cooldown_of(&m)?,
    };
    push(req)
}

/// `run("command", #{job, jid, ..., subject, summary, for, cooldown})`
fn run(command: &str, m: Map) -> R<()> {
    if command.is_empty() {
        return Err("run() needs a command name".into());
    }
    with_ctx(|c| match &c.commands {
        Some(known) if !known.contains(command) => {
            let hint = crate::diag::closest(command, known.iter().map(String::as_str))
                .map(|x| format!(", did you mean `{x}`?"))
                .unwrap_or_default();
            Err(format!("run(): no command named `{command}` under `commands:`{hint}").into())
        }
        _ => Ok(()),
    })?;
    const POLICY: &[&str] = &["subject", "summary", "for", "pending_for", "cooldown", "severity", "details"];
    let mut vars = BTreeMap::new();
    for (k, v) in m.iter() {
        if POLICY.contains(&k.as_str()) {
            continue;
        }
        let s = if v.is_string() { v.clone().into_string().unwrap_or_default() } else { v.to_string() };
        vars.insert(k.to_string(), s);
    }
    let subject = get_str(&m, "subject")?.or_else(|| vars.get("job").cloned()).unwrap_or_default();
    let summary = get_str(&m, "summary")?.unwrap_or_else(|| format!("run `{command}` for `{subject}`"));
    let req = ActionRequest {
        kind: RequestKind::Run { command: command.to_string(), vars },
        subject,
        severity: severity_of(&m, Severity::Warning)?,
        summary,
        details: details_of(&m),
        pending: pending_of(&m)?,
        cooldown: cooldown_of(&m)?,
    };
    push(req)
}

/// Restart strategies `restart_job` accepts.
pub const STRATEGIES: &[&str] = crate::model::RestartStrategy::NAMES;

/// `restart_job(#{job, jid, strategy, jar, parallelism, subject, summary, for, cooldown})`
fn restart_job(m: Map) -> R<()> {
    let job = get_str(&m, "job")?.filter(|j| !j.is_empty()).ok_or("restart_job() needs a `job` name")?;
    let strategy = get_str(&m, "strategy")?.unwrap_or_else(|| "last-checkpoint".into());
    let Ok(strategy) = strategy.parse::<crate::model::RestartStrategy>() else {
        return Err(format!("restart_job(): strategy must be one of {STRATEGIES:?}, not {strategy:?}").into());
    };
    let jid = get_str(&m, "jid")?.unwrap_or_default();
    let subject = get_str(&m, "subject")?.unwrap_or_else(|| job.clone());
    let summary = get_str(&m, "summary")?.unwrap_or_else(|| format!("restart {job} ({strategy})"));
    // An upgrade (`jar`: a jar on the cluster, or a file with a `/` to upload) or a rescale (`parallelism`).
    let jar = match get_str(&m, "jar")?.filter(|j| !j.is_empty()) {
        Some(j) => Some(crate::model::JarRef::from_rule(&j).map_err(|e| format!("restart_job(): {e}"))?),
        None => None,
    };
    let parallelism = match m.get("parallelism") {
        None => None,
        Some(v) => match v.as_int().ok().and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0) {
            Some(p) => Some(p),
            None => return Err(format!("restart_job(): parallelism must be a positive integer, not {v}").into()),
        },
    };
    let overrides = crate::model::RestartOverrides { jar, parallelism, ..Default::default() };
    let req = ActionRequest {
        kind: RequestKind::Restart { job, jid, strategy, overrides },
        subject,
        severity: severity_of(&m, Severity::Warning)?,
        summary,
        details: details_of(&m),
        pending: pending_of(&m)?,
        cooldown: cooldown_of(&m)?,
    };
    push(req)
}

/// `log("message")` or `log(#{subject, summary, severity, details})`
fn log_map(m: Map) -> R<()> {
    let summary = get_str(&m, "summary")?.ok_or("log() needs a `summary`")?;
    let req = ActionRequest {
        kind: RequestKind::Log,
        subject: get_str(&m, "subject")?.unwrap_or_default(),
        severity: severity_of(&m, Severity::Info)?,
        summary,
        details: details_of(&m),
        pending: None,
        cooldown: None,
    };
    push(req)
}

fn log_str(s: &str) -> R<()> {
    let mut m = Map::new();
    m.insert("summary".into(), s.into());
    log_map(m)
}

/// `skip("reason")`: this evaluation is inconclusive; every alert keeps its state.
fn skip(reason: &str) -> R<()> {
    with_ctx(|c| {
        c.skipped = Some(reason.to_string());
        Ok(())
    })
}

/// `http_get("/jobs/<jid>/exceptions")` → `#{ok, status, body, error}`.
fn http_get(path: &str) -> R<Map> {
    if !path.starts_with('/') || path.starts_with("//") || path.contains("://") {
        return Err(format!("http_get() takes a path on the rule's target starting with `/`, not {path:?}").into());
    }
    if path.split(['/', '?']).any(|seg| seg == "..") {
        return Err(format!("http_get() path {path:?} may not contain `..`").into());
    }
    let answer = with_ctx(|c| {
        if c.follow_ups_left == 0 {
            return Ok(FollowUpAnswer {
                error: Some((
                    "limit".into(),
                    "this evaluation used up its follow-up requests (scripts.max_follow_ups)".into(),
                )),
                ..Default::default()
            });
        }
        let asked = Instant::now();
        let left = c.total_deadline.saturating_duration_since(asked);
        if left.is_zero() {
            return Ok(FollowUpAnswer {
                error: Some((
                    "limit".into(),
                    format!(
                        "this evaluation used up its total time budget of {} ms (scripts.max_total_time)",
                        c.total_budget.as_millis()
                    ),
                )),
                ..Default::default()
            });
        }
        c.follow_ups_left -= 1;
        let answer = match c.follow_up.as_mut() {
            Some(f) => f.get_within(path, left),
            None => FollowUpAnswer {
                error: Some(("unavailable".into(), "follow-up requests are not available here".into())),
                ..Default::default()
            },
        };
        // Waiting for the target is not the rule's computing time (`max_time` is about runaway scripts), but it
        // does count against the evaluation's total budget (`total_deadline`, checked above).
        c.deadline += asked.elapsed();
        Ok(answer)
    })?;
    let mut m = Map::new();
    m.insert("ok".into(), Dynamic::from_bool(answer.error.is_none()));
    m.insert("status".into(), answer.status.map(|s| Dynamic::from_int(s.into())).unwrap_or(Dynamic::UNIT));
    m.insert("body".into(), answer.body.map(super::json::view).unwrap_or(Dynamic::UNIT));
    let err = match answer.error {
        None => Dynamic::UNIT,
        Some((kind, message)) => {
            let mut e = Map::new();
            e.insert("kind".into(), kind.into());
            e.insert("message".into(), message.into());
            Dynamic::from_map(e)
        }
    };
    m.insert("error".into(), err);
    Ok(m)
}

/// `now()` → milliseconds since the epoch, from Warden's clock (simulated in tests).
fn now() -> R<i64> {
    with_ctx(|c| Ok(c.now.timestamp_millis()))
}

/// `duration_ms("5m")` → 300000.
fn duration_ms(s: &str) -> R<i64> {
    crate::config::units::parse_duration(s).map(|d| d.as_millis() as i64).map_err(|e| e.into())
}

/// `root_cause(exceptions_body)`: the most telling line of a Flink `/jobs/:jid/exceptions` answer, for 1.x
/// (`root-exception`) and 2.x (`exceptionHistory`) alike: the innermost `Caused by:` of the newest failure, else its
/// first line. `()` when there is no exception.
fn root_cause(body: Dynamic) -> R<Dynamic> {
    let v = to_json(&body);
    Ok(crate::flink::root_cause(&v).map(|c| Dynamic::from(c.to_string())).unwrap_or(Dynamic::UNIT))
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("alert", alert);
    engine.register_fn("run", run);
    engine.register_fn("restart_job", restart_job);
    engine.register_fn("log", log_map);
    engine.register_fn("log", log_str);
    engine.register_fn("skip", skip);
    engine.register_fn("http_get", http_get);
    engine.register_fn("now", now);
    engine.register_fn("duration_ms", duration_ms);
    engine.register_fn("to_json", |d: Dynamic| to_json(&d).to_string());
    engine.register_fn("root_cause", root_cause);
    // Lets the runtime's tests make an evaluation panic, as a bug in Warden or a library would.
    #[cfg(test)]
    engine.register_fn("panic_for_test", |why: &str| -> R<()> { panic!("{why}") });
}
