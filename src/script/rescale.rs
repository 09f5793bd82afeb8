//! `rescale(#{job, jid, parallelism | step, subject, summary, severity, details, for, cooldown})`: a rule asks for
//! a running job's parallelism to change, to a number (`parallelism: 4`) or by a step from what it runs at now
//! (`step: 1`, `step: -1`). Like every request it only records what the rule asks for; the dispatcher decides
//! whether and when, and the action clamps it to `jobs.<job>.parallelism: {min, max}` (see
//! [`crate::action::rescale`]).

use std::time::Duration;

use rhai::{Engine, EvalAltResult, Map};

use super::convert::to_json;
use super::CTX;
use crate::model::{ActionRequest, Pending, RequestKind, RescaleTo, Severity};

type R<T> = Result<T, Box<EvalAltResult>>;

fn text(m: &Map, key: &str) -> Option<String> {
    let v = m.get(key).filter(|v| !v.is_unit())?;
    Some(if v.is_string() { v.clone().into_string().unwrap_or_default() } else { v.to_string() })
}

fn int(m: &Map, key: &str) -> R<Option<i64>> {
    match m.get(key).filter(|v| !v.is_unit()) {
        None => Ok(None),
        Some(v) => v.as_int().map(Some).map_err(|t| format!("rescale(): `{key}` must be an integer, not a {t}").into()),
    }
}

fn pending(m: &Map) -> R<Option<Pending>> {
    let Some(v) = m.get("for").filter(|v| !v.is_unit()) else { return Ok(None) };
    if let Ok(n) = v.as_int() {
        if n < 1 {
            return Err(format!("rescale(): `for` as a count of evaluations must be at least 1, not {n}").into());
        }
        return Ok(Some(Pending::Evaluations(n as u32)));
    }
    crate::config::units::parse_duration(&v.to_string()).map(|d| Some(Pending::Duration(d))).map_err(|e| e.into())
}

fn cooldown(m: &Map) -> R<Option<Duration>> {
    text(m, "cooldown").map(|s| crate::config::units::parse_duration(&s)).transpose().map_err(|e| e.into())
}

/// The request `rescale(m)` records; an error names what is wrong with `m`.
fn request(m: &Map) -> R<ActionRequest> {
    let job = text(m, "job").filter(|j| !j.is_empty()).ok_or("rescale() needs a `job` name")?;
    let to = match (int(m, "parallelism")?, int(m, "step")?) {
        (Some(_), Some(_)) => return Err("rescale(): give `parallelism` or `step`, not both".into()),
        (None, None) => {
            return Err("rescale() needs `parallelism` (a number, e.g. 4) or `step` (e.g. 1 or -1)".into());
        }
        (Some(n), None) if n < 1 || n > i64::from(u16::MAX) => {
            return Err(format!("rescale(): `parallelism` must be between 1 and 65535, not {n}").into());
        }
        (Some(n), None) => RescaleTo::Exactly(n as u32),
        (None, Some(0)) => return Err("rescale(): `step` 0 asks for no change".into()),
        (None, Some(s)) if s.abs() > i64::from(u16::MAX) => {
            return Err(format!("rescale(): `step` {s} is out of range").into());
        }
        (None, Some(s)) => RescaleTo::Step(s as i32),
    };
    let severity = match text(m, "severity") {
        None => Severity::Warning,
        Some(s) => Severity::parse(&s)
            .ok_or_else(|| format!("severity must be \"info\", \"warning\" or \"critical\", not {s:?}"))?,
    };
    Ok(ActionRequest {
        subject: text(m, "subject").unwrap_or_else(|| job.clone()),
        summary: text(m, "summary").unwrap_or_else(|| format!("rescale {job} to parallelism {to}")),
        kind: RequestKind::Rescale { job, jid: text(m, "jid").unwrap_or_default(), to },
        severity,
        details: m.get("details").map(to_json).unwrap_or(serde_json::Value::Null),
        pending: pending(m)?,
        cooldown: cooldown(m)?,
    })
}

fn rescale(m: Map) -> R<()> {
    let req = request(&m)?;
    CTX.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => {
            ctx.requests.push(req);
            Ok(())
        }
        None => Err("rescale() can only be called while a rule is evaluated".into()),
    })
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("rescale", rescale);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(src: &str) -> Map {
        Engine::new().eval::<Map>(src).unwrap()
    }

    #[test]
    fn a_step_or_a_number() {
        let r = request(&map(r#"#{job: "clicks", step: 1, "for": "10m"}"#)).unwrap();
        assert_eq!(r.kind, RequestKind::Rescale { job: "clicks".into(), jid: String::new(), to: RescaleTo::Step(1) });
        assert_eq!(r.key(), "rescale:clicks");
        assert_eq!(r.summary, "rescale clicks to parallelism +1");
        assert_eq!(r.pending, Some(Pending::Duration(Duration::from_secs(600))));
        let r = request(&map(r#"#{job: "clicks", jid: "ab", parallelism: 4, subject: "c"}"#)).unwrap();
        assert_eq!(r.kind, RequestKind::Rescale { job: "clicks".into(), jid: "ab".into(), to: RescaleTo::Exactly(4) });
        assert_eq!(r.subject, "c");
    }

    #[test]
    fn wrong_asks_say_what_is_wrong() {
        let e = |src: &str| request(&map(src)).unwrap_err().to_string();
        assert!(e(r#"#{step: 1}"#).contains("needs a `job`"));
        assert!(e(r#"#{job: "a"}"#).contains("needs `parallelism`"));
        assert!(e(r#"#{job: "a", step: 1, parallelism: 2}"#).contains("not both"));
        assert!(e(r#"#{job: "a", step: 0}"#).contains("no change"));
        assert!(e(r#"#{job: "a", parallelism: 0}"#).contains("between 1 and 65535"));
        assert!(e(r#"#{job: "a", parallelism: "4"}"#).contains("must be an integer"));
    }
}
