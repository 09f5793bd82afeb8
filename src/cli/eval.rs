//! `warden eval`: one rule, once, on a saved answer, with canned answers for its follow-up `http_get`s; prints what
//! the rule asked for and why, the follow-ups it made, and its state after.
//!
//! `--format json` prints one object (the shape is documented in docs/authoring.md):
//!
//! ```json
//! {"rule": "flink/job-not-running", "input": "overview.json", "time": "2026-01-01T00:00:00Z",
//!  "outcome": "requests",                 // "requests", "nothing" (all is well) or "skipped"
//!  "skipped": null,                       // the reason, when skipped
//!  "requests": [{"action": "alert", "subject": "clicks", "severity": "critical", "summary": "…",
//!                "for": "15s", "cooldown": null, "details": {…}},
//!               {"action": "run", "command": "relaunch", "vars": {"job": "clicks"}, "subject": "clicks", …},
//!               {"action": "restart", "job": "clicks", "jid": "…", "strategy": "last-checkpoint", …}],
//!  "follow_ups": [{"path": "/jobs/…/exceptions", "status": 200, "answered": true, "error": null}],
//!  "state": {…}}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};
use warden::model::{ActionRequest, Pending, RequestKind};
use warden::ruletest::{EvalReport, Response};
use warden::script::Verdict;

use super::Format;

/// The arguments of `warden eval`.
pub struct Args<'a> {
    pub rule: &'a str,
    pub input: &'a Path,
    pub params: &'a [String],
    pub responses: &'a [String],
    pub format: Format,
    pub now: Option<&'a str>,
    /// The job the answer is about (`--job`, JSON), for rules of `for_each: job` probes.
    pub job: Option<&'a str>,
}

/// A `--response` that cannot be used.
#[derive(Debug, thiserror::Error)]
enum ResponseError {
    #[error("--response `{0}`: expected PATH=FILE, e.g. /jobs/<jid>/exceptions=exceptions.json")]
    Syntax(String),
    #[error("--response `{arg}`: the path must start with `/`")]
    Path { arg: String },
    #[error("--response `{arg}`: cannot read `{}`: {source}", file.display())]
    Read { arg: String, file: PathBuf, source: std::io::Error },
    #[error("--response `{arg}`: `{}` is not JSON: {source}", file.display())]
    Json { arg: String, file: PathBuf, source: serde_json::Error },
}

/// Canned answers by path, and the file each came from (for the output).
type Canned = (BTreeMap<String, Response>, BTreeMap<String, String>);

fn responses(args: &[String]) -> Result<Canned, ResponseError> {
    let mut out = BTreeMap::new();
    let mut from = BTreeMap::new();
    for a in args {
        // The last `=`: a path's query may hold one (`/jobs/x/exceptions?maxExceptions=5=ex.json`).
        let (path, file) = a.rsplit_once('=').ok_or_else(|| ResponseError::Syntax(a.clone()))?;
        if !path.starts_with('/') {
            return Err(ResponseError::Path { arg: a.clone() });
        }
        let file = PathBuf::from(file);
        let text = std::fs::read_to_string(&file).map_err(|source| ResponseError::Read {
            arg: a.clone(),
            file: file.clone(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|source| ResponseError::Json {
            arg: a.clone(),
            file: file.clone(),
            source,
        })?;
        out.insert(path.to_string(), Response { json: Some(json), ..Default::default() });
        from.insert(path.to_string(), file.display().to_string());
    }
    Ok((out, from))
}

pub fn run(config: &Path, a: Args<'_>) -> anyhow::Result<ExitCode> {
    let (canned, from) = match responses(a.responses) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warden: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let now = match a.now {
        None => chrono::Utc::now(),
        Some(t) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => t.with_timezone(&chrono::Utc),
            Err(e) => {
                eprintln!("warden: --now `{t}`: not an RFC 3339 time such as 2026-01-01T00:00:00Z ({e})");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let job = match a.job.map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(j)) if j.get("jid").is_some_and(Value::is_string) && j.get("name").is_some_and(Value::is_string) => {
            Some(warden::model::Doc::from_json(&j))
        }
        Some(Ok(_)) => {
            eprintln!("warden: --job: expected a JSON object with string `jid` and `name` (a /jobs/overview entry)");
            return Ok(ExitCode::from(2));
        }
        Some(Err(e)) => {
            eprintln!("warden: --job: not JSON ({e}), e.g. '{{\"jid\": \"a1b2\", \"name\": \"clicks\", \"state\": \"RUNNING\"}}'");
            return Ok(ExitCode::from(2));
        }
    };
    let mut loaded = match warden::config::load_with(config, warden::config::LoadOptions { environment: false }) {
        Ok(l) => l,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(1));
        }
    };
    // `--param` values go where `warden.yaml` would put them, so they are type-checked against the pack's
    // `pack.yaml` like any other (a value that is not JSON is taken as a string, and must then be one).
    let rule = a.rule;
    let pack = rule.split_once('/').map(|(p, _)| p).unwrap_or(rule).to_string();
    for kv in a.params {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!("warden: --param `{kv}`: expected NAME=VALUE (VALUE as JSON, e.g. expected_jobs='[\"clicks\"]')");
            return Ok(ExitCode::from(2));
        };
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        loaded.config.packs.entry(pack.clone()).or_default().params.insert(k.to_string(), v);
    }
    let engine = warden::script::ScriptEngine::new(&loaded.config.scripts);
    let plan = match warden::plan::build(loaded, warden::plan::PackSource::FromConfig, &engine) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            if !a.params.is_empty() {
                eprintln!("(the configuration with the --param values applied)");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let Some(r) = plan.rules.get(rule) else {
        let known: Vec<&str> = plan.rules.keys().map(String::as_str).collect();
        anyhow::bail!("no rule `{rule}` (known: {})", known.join(", "));
    };
    let p = r.params.clone();
    let input = a.input;
    let body =
        warden::model::Doc::parse(&std::fs::read(input).with_context(|| format!("cannot read `{}`", input.display()))?)
            .with_context(|| format!("`{}` is not JSON", input.display()))?;
    let target = warden::script::TargetInfo { name: "eval".into(), url: String::new(), labels: Default::default() };
    match warden::ruletest::eval_with(&r.compiled, &p, &target, body, job, &canned, Value::Null, now, &engine) {
        Ok(report) => {
            match a.format {
                Format::Json => outln!("{}", to_json(rule, input, now, &report)),
                Format::Text => outln!("{}", to_text(rule, input, &report, &from).trim_end()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn pending(p: &Option<Pending>) -> Option<String> {
    match p {
        None => None,
        Some(Pending::Duration(d)) => Some(human(*d)),
        Some(Pending::Evaluations(n)) => Some(format!("{n} evaluations in a row")),
    }
}

/// One request as the documented JSON object.
fn request_json(q: &ActionRequest) -> Value {
    let mut o = json!({
        "action": action_name(&q.kind),
        "subject": q.subject,
        "severity": q.severity.as_str(),
        "summary": q.summary,
        "for": pending(&q.pending),
        "cooldown": q.cooldown.map(human),
        "details": q.details,
    });
    match &q.kind {
        RequestKind::Run { command, vars } => {
            o["command"] = json!(command);
            o["vars"] = json!(vars);
        }
        RequestKind::Restart { job, jid, strategy, overrides } => {
            o["job"] = json!(job);
            o["jid"] = json!(jid);
            o["strategy"] = json!(strategy.to_string());
            if !overrides.is_empty() {
                o["overrides"] = json!(overrides);
            }
        }
        RequestKind::Patch { path, body } => {
            o["path"] = json!(path);
            o["patch"] = body.clone();
        }
        RequestKind::Rescale { job, jid, to } => {
            o["job"] = json!(job);
            o["jid"] = json!(jid);
            match to {
                warden::model::RescaleTo::Exactly(n) => o["parallelism"] = json!(n),
                warden::model::RescaleTo::Step(s) => o["step"] = json!(s),
            }
        }
        RequestKind::Alert | RequestKind::Log => {}
    }
    o
}

fn action_name(k: &RequestKind) -> &'static str {
    match k {
        RequestKind::Alert => "alert",
        RequestKind::Run { .. } => "run",
        RequestKind::Restart { .. } => "restart",
        RequestKind::Log => "log",
        RequestKind::Patch { .. } => "patch",
        RequestKind::Rescale { .. } => "rescale",
    }
}

fn to_json(rule: &str, input: &Path, now: chrono::DateTime<chrono::Utc>, r: &EvalReport) -> Value {
    let (outcome, skipped, requests) = match &r.evaluation.verdict {
        Verdict::Skipped(why) => ("skipped", Some(why.clone()), vec![]),
        Verdict::Requests(q) if q.is_empty() => ("nothing", None, vec![]),
        Verdict::Requests(q) => ("requests", None, q.iter().map(request_json).collect()),
    };
    json!({
        "rule": rule,
        "input": input.display().to_string(),
        "time": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "outcome": outcome,
        "skipped": skipped,
        "requests": requests,
        "follow_ups": r.follow_ups,
        "state": r.evaluation.state,
    })
}

fn to_text(rule: &str, input: &Path, r: &EvalReport, from: &BTreeMap<String, String>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "rule {rule} on {}", input.display());
    if !r.follow_ups.is_empty() {
        let _ = writeln!(s, "\nit fetched:");
        for f in &r.follow_ups {
            let status = f.status.map(|c| c.to_string()).unwrap_or_else(|| "no answer".into());
            let how = if f.answered {
                let key = f.path.split('?').next().unwrap_or(&f.path);
                let file = from.get(&f.path).or_else(|| from.get(key)).map(String::as_str).unwrap_or("?");
                format!("from {file}")
            } else {
                "no --response for this path".to_string()
            };
            let _ = writeln!(s, "  GET {} -> {status} ({how})", f.path);
        }
    }
    match &r.evaluation.verdict {
        Verdict::Skipped(why) => {
            let _ = writeln!(s, "\nit skipped: {why}\n  (inconclusive: every alert of this rule keeps its state)");
        }
        Verdict::Requests(q) if q.is_empty() => {
            let _ = writeln!(s, "\nit asked for nothing: all is well (its firing alerts would resolve)");
        }
        Verdict::Requests(q) => {
            let _ = writeln!(s, "\nit asked for {} action(s):", q.len());
            for (i, q) in q.iter().enumerate() {
                let head = match &q.kind {
                    RequestKind::Alert => format!("alert [{}] {}", q.severity.as_str(), q.subject),
                    RequestKind::Log => format!("log [{}] {}", q.severity.as_str(), q.subject),
                    RequestKind::Run { command, vars } => {
                        let v: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("run `{command}` for {} ({})", q.subject, v.join(", "))
                    }
                    RequestKind::Restart { job, jid, strategy, overrides } => {
                        let of = if jid.is_empty() { String::new() } else { format!(" (replacing run {jid})") };
                        let what = warden::action::restart::describe(overrides);
                        format!("{} {job} from {strategy}{what}{of}", overrides.kind())
                    }
                    RequestKind::Patch { path, body } => format!("patch {path} with {body}"),
                    RequestKind::Rescale { job, to, .. } => format!("rescale {job} to parallelism {to}"),
                };
                let _ = writeln!(s, "  {}. {head}", i + 1);
                if !q.summary.is_empty() {
                    let _ = writeln!(s, "     why: {}", q.summary);
                }
                let mut when = vec![];
                if let Some(p) = pending(&q.pending) {
                    when.push(format!("once it holds for {p}"));
                }
                if let Some(c) = q.cooldown {
                    when.push(format!("again at most every {}", human(c)));
                }
                if !when.is_empty() {
                    let _ = writeln!(s, "     when: {}", when.join(", "));
                }
                if let Value::Object(m) = &q.details {
                    for (k, v) in m {
                        let v = match v {
                            Value::String(t) => t.lines().next().unwrap_or("").to_string(),
                            other => other.to_string(),
                        };
                        let _ = writeln!(s, "     {k}: {v}");
                    }
                }
            }
        }
    }
    let state = serde_json::to_string_pretty(&r.evaluation.state).unwrap_or_default();
    let _ = writeln!(s, "\nstate after:\n{}", indent(&state));
    s
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}
