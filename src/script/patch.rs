//! `patch(#{path, body, subject, summary, severity, details, for, cooldown})`: a rule asks for a JSON merge patch
//! of a resource on its target (see [`crate::action::patch`]). Like every request it only records what the rule
//! asks for; the dispatcher decides whether and when it is sent.

use std::time::Duration;

use rhai::{Engine, EvalAltResult, Map};

use super::convert::to_json;
use super::CTX;
use crate::model::{ActionRequest, Pending, RequestKind, Severity};

type R<T> = Result<T, Box<EvalAltResult>>;

fn text(m: &Map, key: &str) -> Option<String> {
    let v = m.get(key).filter(|v| !v.is_unit())?;
    Some(if v.is_string() { v.clone().into_string().unwrap_or_default() } else { v.to_string() })
}

fn pending(m: &Map) -> R<Option<Pending>> {
    let Some(v) = m.get("for").filter(|v| !v.is_unit()) else { return Ok(None) };
    if let Ok(n) = v.as_int() {
        if n < 1 {
            return Err(format!("patch(): `for` as a count of evaluations must be at least 1, not {n}").into());
        }
        return Ok(Some(Pending::Evaluations(n as u32)));
    }
    crate::config::units::parse_duration(&v.to_string()).map(|d| Some(Pending::Duration(d))).map_err(|e| e.into())
}

fn cooldown(m: &Map) -> R<Option<Duration>> {
    text(m, "cooldown").map(|s| crate::config::units::parse_duration(&s)).transpose().map_err(|e| e.into())
}

/// The request `patch(m)` records; an error names what is wrong with `m`.
fn request(m: &Map) -> R<ActionRequest> {
    let path = text(m, "path").ok_or("patch() needs a `path` on the rule's target")?;
    if !path.starts_with('/') || path.starts_with("//") || path.contains("://") {
        return Err(format!("patch() takes a path on the rule's target starting with `/`, not {path:?}").into());
    }
    if path.split(['/', '?']).any(|seg| seg == "..") {
        return Err(format!("patch() path {path:?} may not contain `..`").into());
    }
    let body = match m.get("body") {
        Some(b) if b.is_map() => to_json(b),
        _ => return Err("patch() needs a `body`: the merge patch, a map such as #{spec: #{restartNonce: 2}}".into()),
    };
    let severity = match text(m, "severity") {
        None => Severity::Warning,
        Some(s) => Severity::parse(&s)
            .ok_or_else(|| format!("severity must be \"info\", \"warning\" or \"critical\", not {s:?}"))?,
    };
    Ok(ActionRequest {
        subject: text(m, "subject").unwrap_or_else(|| path.clone()),
        summary: text(m, "summary").unwrap_or_else(|| format!("patch {path}")),
        kind: RequestKind::Patch { path, body },
        severity,
        details: m.get("details").map(to_json).unwrap_or(serde_json::Value::Null),
        pending: pending(m)?,
        cooldown: cooldown(m)?,
    })
}

fn patch(m: Map) -> R<()> {
    let req = request(&m)?;
    CTX.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => {
            ctx.requests.push(req);
            Ok(())
        }
        None => Err("patch() can only be called while a rule is evaluated".into()),
    })
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("patch", patch);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(src: &str) -> Map {
        Engine::new().eval::<Map>(src).unwrap()
    }

    #[test]
    fn a_patch_request_keys_on_path_and_body() {
        let r = request(&map(
            r#"#{path: "/apis/x/flinkdeployments/a", body: #{spec: #{restartNonce: 7}}, subject: "a", "for": 2}"#,
        ))
        .unwrap();
        assert_eq!(r.key(), r#"patch:/apis/x/flinkdeployments/a:{"spec":{"restartNonce":7}}"#);
        assert_eq!(r.subject, "a");
        assert_eq!(r.pending, Some(Pending::Evaluations(2)));
        let other =
            request(&map(r#"#{path: "/apis/x/flinkdeployments/a", body: #{spec: #{restartNonce: 8}}}"#)).unwrap();
        assert_ne!(r.key(), other.key(), "a new nonce is a new action");
    }

    #[test]
    fn bad_patches_are_refused_where_they_are_asked() {
        let e = |src: &str| request(&map(src)).unwrap_err().to_string();
        assert!(e(r#"#{body: #{}}"#).contains("needs a `path`"));
        assert!(e(r#"#{path: "http://evil/x", body: #{}}"#).contains("starting with `/`"));
        assert!(e(r#"#{path: "/a/../b", body: #{}}"#).contains("may not contain `..`"));
        assert!(e(r#"#{path: "/a", body: "x"}"#).contains("needs a `body`"));
        assert!(e(r#"#{path: "/a", body: #{}, severity: "loud"}"#).contains("severity must be"));
    }
}
