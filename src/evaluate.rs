//! The one evaluation path: an observation through a probe's rules, each with its own state and the parameters
//! it has on that target (pack `overrides` included). The daemon, `warden test`, `warden eval` and `warden replay`
//! all call [`evaluate_observation`], so what a test or a replay decides is what the daemon would have decided.
//!
//! A rule that fails — a script error, a limit, even a panic inside the engine — fails alone, as that rule's
//! error with its file:line:col; the other rules of the observation still run.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use rhai::Dynamic;

use crate::model::{ActionRequest, Origin, RequestKind};
use crate::plan::Params;
use crate::script::{self, CompiledRule, EvalInput, FollowUp, ScriptEngine, ScriptError, TargetInfo, Verdict};

/// What one rule decided about one observation.
#[derive(Debug)]
pub struct RuleVerdict {
    /// Which rule, where and when.
    pub origin: Origin,
    /// What it asks for.
    pub verdict: Verdict,
    /// Its new state, when it changed (the caller keeps it).
    pub new_state: Option<serde_json::Value>,
}

/// One observation, converted once and shared by every rule of the probe.
pub struct Observed<'a> {
    /// The observation as rules see it ([`script::obs_to_dynamic`]).
    pub obs: &'a Dynamic,
    /// The probe that made it.
    pub probe: &'a str,
    /// The target it is about.
    pub target: &'a TargetInfo,
    /// When the rules judge it (the one clock's reading).
    pub now: DateTime<Utc>,
}

/// Runs `rules` (each with the parameters it has on this target) on one observation. `state_of` gives a rule's
/// state before the run; `follow_up` makes the follow-up client of one evaluation. Returns each rule's verdict or
/// error, in the rules' order.
pub fn evaluate_observation<'r>(
    engine: &ScriptEngine,
    rules: impl IntoIterator<Item = (&'r CompiledRule, &'r Params)>,
    seen: &Observed<'_>,
    state_of: &mut dyn FnMut(&str) -> serde_json::Value,
    follow_up: &mut dyn FnMut() -> Option<Box<dyn FollowUp>>,
) -> Vec<Result<RuleVerdict, ScriptError>> {
    let target_dyn = script::target_to_dynamic(seen.target);
    let mut out = vec![];
    for (rule, params) in rules {
        let before = state_of(&rule.name);
        let params = params_dynamic(params);
        let input = EvalInput {
            obs: seen.obs,
            target: &target_dyn,
            params: &params,
            state: &before,
            now: seen.now,
            follow_up: follow_up(),
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| engine.evaluate(rule, input))).unwrap_or_else(|p| {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown cause".into());
            Err(ScriptError {
                file: rule.file.clone(),
                rule: rule.name.clone(),
                line: 0,
                col: 0,
                message: format!(
                    "the evaluation panicked: {why} (a bug in Warden; the rule's other evaluations and the other rules \
                     go on)"
                ),
            })
        });
        let max_state = engine.limits().max_state.as_usize();
        let result = result.and_then(|ev| {
            let size = if ev.state == before { 0 } else { serde_json::to_vec(&ev.state).map(|v| v.len()).unwrap_or(0) };
            if size > max_state {
                return Err(ScriptError {
                    file: rule.file.clone(),
                    rule: rule.name.clone(),
                    line: 0,
                    col: 0,
                    message: format!(
                        "the rule's state grew to {size} bytes on target `{}`, over `scripts.max_state` ({max_state} \
                         bytes): this evaluation is dropped and the previous state kept",
                        seen.target.name
                    ),
                });
            }
            Ok(ev)
        });
        out.push(result.map(|ev| RuleVerdict {
            origin: Origin {
                rule: rule.name.clone(),
                target: seen.target.name.clone(),
                target_url: seen.target.url.clone(),
                probe: seen.probe.to_string(),
                time: seen.now,
                observed: if acts(&ev.verdict) { observed_body(seen.obs) } else { None },
            },
            new_state: (ev.state != before).then_some(ev.state),
            verdict: ev.verdict,
        }));
    }
    out
}

/// How many parameter sets a thread keeps converted (a rule's parameters, per target with overrides).
const PARAMS_KEPT: usize = 256;

thread_local! {
    /// Parameters as rules see them, by where the plan keeps them, with the parameters they were converted from.
    static PARAMS: std::cell::RefCell<std::collections::HashMap<usize, (Params, Dynamic)>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `params` as rules see them ([`script::params_to_dynamic`]): converted from JSON once per thread and kept while
/// they stay the same (a reload that changes them makes a new conversion); each evaluation gets its own copy of the
/// converted map (cloning Rhai values shares their strings), because a rule can change the value it is given in
/// place (`params.names.push(x)`), and that must not reach the next evaluation.
fn params_dynamic(params: &Params) -> Dynamic {
    let at = params as *const Params as usize;
    PARAMS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((kept, d)) = c.get(&at) {
            if kept == params {
                return d.clone().into_shared();
            }
        }
        if c.len() >= PARAMS_KEPT {
            c.clear();
        }
        let d = script::params_to_dynamic(params).flatten();
        c.insert(at, (params.clone(), d.clone()));
        d.into_shared()
    })
}

/// Whether a verdict asks for a command, a restart or a rescale (whose decision record keeps an excerpt of the
/// observation).
fn acts(v: &Verdict) -> bool {
    matches!(v, Verdict::Requests(r) if r.iter().any(|r| matches!(r.kind, RequestKind::Run { .. } | RequestKind::Restart { .. } | RequestKind::Rescale { .. })))
}

/// The observation's body as the shared document the rules read (an `Arc` clone, not a copy).
fn observed_body(obs: &Dynamic) -> Option<std::sync::Arc<crate::model::Doc>> {
    let m = obs.read_lock::<rhai::Map>()?;
    script::json::view_doc(m.get("body")?)
}

/// The verdicts of a `for_each: job` probe's rules over the jobs of one tick, merged into one evaluation per rule
/// for the dispatcher.
///
/// The dispatcher keeps one memory per (rule, target) and takes each evaluation as the full list of what is wrong
/// *now*: handed each job's verdict on its own, the evaluation of job B would resolve job A's alert. So the
/// verdicts of a tick are merged: the requests of every job, in the tick's job order. A job whose evaluation was
/// skipped (`skip()`) or failed keeps what it asked for last time (its one-shot `log` requests excepted), like a
/// skipped evaluation of an ordinary probe. The daemon drops jobs that were not in the tick (gone from the cluster
/// or out of `states`), so their alerts resolve; `warden test` and `replay` keep them ([`JobVerdicts::finish`]).
#[derive(Debug, Default)]
pub struct JobVerdicts {
    /// What each (rule, job name) asked for at its last judged evaluation.
    last: BTreeMap<(String, String), Vec<ActionRequest>>,
    /// The tick being gathered: (rule, job name) → requests, in arrival order.
    tick: Vec<((String, String), Vec<ActionRequest>)>,
}

impl JobVerdicts {
    /// Adds what `rule` decided about job `job` (its name) in this tick: `None` when the evaluation failed.
    pub fn add(&mut self, rule: &str, job: &str, verdict: Option<&Verdict>) {
        let key = (rule.to_string(), job.to_string());
        let requests = match verdict {
            Some(Verdict::Requests(r)) => r.clone(),
            Some(Verdict::Skipped(_)) | None => self
                .last
                .get(&key)
                .map(|r| r.iter().filter(|r| !matches!(r.kind, RequestKind::Log)).cloned().collect())
                .unwrap_or_default(),
        };
        self.tick.push((key, requests));
    }

    /// Ends the tick: one merged verdict per rule of `rules` (in that order; a rule no job asked anything of gets
    /// an empty one, which resolves its alerts). With `drop_absent`, jobs that were not in this tick are
    /// forgotten; without, they keep contributing what they asked for last.
    pub fn finish<'a>(
        &mut self,
        rules: impl IntoIterator<Item = &'a str>,
        drop_absent: bool,
    ) -> Vec<(String, Verdict)> {
        let tick = std::mem::take(&mut self.tick);
        if drop_absent {
            self.last.clear();
        }
        for (key, requests) in tick {
            self.last.insert(key, requests);
        }
        let mut out = vec![];
        for rule in rules {
            let merged: Vec<ActionRequest> = self
                .last
                .range((rule.to_string(), String::new())..)
                .take_while(|((r, _), _)| r == rule)
                .flat_map(|(_, v)| v.iter().cloned())
                .collect();
            out.push((rule.to_string(), Verdict::Requests(merged)));
        }
        // One-shot requests are sent once.
        for v in self.last.values_mut() {
            v.retain(|r| !matches!(r.kind, RequestKind::Log));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScriptLimits;

    fn req(kind: RequestKind, subject: &str) -> ActionRequest {
        ActionRequest {
            kind,
            subject: subject.into(),
            severity: Default::default(),
            summary: String::new(),
            details: serde_json::Value::Null,
            pending: None,
            cooldown: None,
        }
    }

    fn subjects(v: &Verdict) -> Vec<String> {
        match v {
            Verdict::Requests(r) => r.iter().map(|r| r.key()).collect(),
            Verdict::Skipped(s) => vec![format!("skipped: {s}")],
        }
    }

    #[test]
    fn a_ticks_verdicts_are_merged_per_rule_and_skipped_or_failed_jobs_keep_their_requests() {
        let mut m = JobVerdicts::default();
        let asks = |s: &[&str]| Verdict::Requests(s.iter().map(|s| req(RequestKind::Alert, s)).collect());
        m.add("r", "a", Some(&asks(&["a"])));
        m.add("r", "b", Some(&Verdict::Requests(vec![req(RequestKind::Log, "b")])));
        m.add("s", "a", Some(&asks(&[])));
        let out = m.finish(["r", "s"], true);
        assert_eq!(
            out.iter().map(|(r, v)| (r.as_str(), subjects(v))).collect::<Vec<_>>(),
            [("r", vec!["alert:a".to_string(), "log:b".into()]), ("s", vec![])]
        );
        // Next tick: a is skipped (keeps its alert), b failed (its one-shot log is not repeated).
        m.add("r", "a", Some(&Verdict::Skipped("no answer".into())));
        m.add("r", "b", None);
        let out = m.finish(["r"], true);
        assert_eq!(subjects(&out[0].1), ["alert:a"]);
        // A tick without a: with `drop_absent` (the daemon) its alert goes; without (tests, replay) it stays.
        m.add("r", "b", Some(&asks(&["b"])));
        let mut kept = JobVerdicts::default();
        kept.add("r", "a", Some(&asks(&["a"])));
        kept.finish(["r"], false);
        kept.add("r", "b", Some(&asks(&["b"])));
        assert_eq!(subjects(&m.finish(["r"], true)[0].1), ["alert:b"]);
        assert_eq!(subjects(&kept.finish(["r"], false)[0].1), ["alert:a", "alert:b"]);
    }

    #[test]
    fn parameters_converted_once_stay_as_configured_whatever_a_rule_does_with_them() {
        let engine = ScriptEngine::new(&ScriptLimits::default());
        let compile = |name: &str, src: &str| {
            engine.compile(name, "t", std::path::PathBuf::from(format!("{name}.rhai")), src).unwrap()
        };
        // Each rule tries to change what it was given (some are refused with an error, some change a copy); a rule
        // evaluated after it with the same parameters must see them as configured.
        let tries = [
            "let p = params; p.names.push(\"x\"); p.limit = 9;",
            "let n = params.names; n.push(\"y\"); n.clear();",
            "fn f(p) { p.limit = 7; p.names.clear(); } f(params);",
            "params.names.push(\"z\");",
            "params.limit = 8;",
            "params.names.clear();",
            "params.names.sort();",
        ];
        let check = compile("t/check", "alert(#{ subject: \"seen\", summary: `${params.limit} ${params.names}` });");
        let target = TargetInfo { name: "jm".into(), url: String::new(), labels: Default::default() };
        let obs = Dynamic::UNIT;
        let seen = Observed { obs: &obs, probe: "p", target: &target, now: Utc::now() };
        let params: Params =
            [("limit".to_string(), serde_json::json!(3)), ("names".to_string(), serde_json::json!(["b", "a"]))]
                .into_iter()
                .collect();
        let null = || serde_json::Value::Null;
        for (i, t) in tries.iter().enumerate() {
            let rule = compile(&format!("t/try{i}"), t);
            let _ = evaluate_observation(&engine, [(&rule, &params)], &seen, &mut |_| null(), &mut || None);
            let out = evaluate_observation(&engine, [(&check, &params)], &seen, &mut |_| null(), &mut || None);
            match &out[0] {
                Ok(RuleVerdict { verdict: Verdict::Requests(r), .. }) => {
                    assert_eq!(r[0].summary, r#"3 ["b", "a"]"#, "after `{t}`")
                }
                other => panic!("after `{t}`: {other:?}"),
            }
        }
    }

    #[test]
    fn a_rule_whose_state_outgrows_max_state_fails_alone_and_keeps_its_old_state() {
        let limits = ScriptLimits { max_state: crate::config::units::ByteSize(1000), ..Default::default() };
        let engine = ScriptEngine::new(&limits);
        let compile = |name: &str, src: &str| {
            engine.compile(name, "t", std::path::PathBuf::from(format!("{name}.rhai")), src).unwrap()
        };
        let hog = compile("t/hog", "state.blob = (state.blob ?? \"\") + \"x\".pad(600, \"x\");");
        let fine = compile("t/fine", "alert(#{subject: \"s\", summary: \"still judged\"});");
        let target = TargetInfo { name: "jm".into(), url: String::new(), labels: Default::default() };
        let obs = Dynamic::UNIT;
        let seen = Observed { obs: &obs, probe: "p", target: &target, now: Utc::now() };
        let params = Params::new();
        let mut state = serde_json::Value::Null;
        for round in 0..3 {
            let s = state.clone();
            let out = evaluate_observation(
                &engine,
                [(&hog, &params), (&fine, &params)],
                &seen,
                &mut |_| s.clone(),
                &mut || None,
            );
            match &out[0] {
                Ok(v) => state = v.new_state.clone().unwrap_or(state),
                Err(e) => {
                    assert!(round >= 1, "600 bytes fit in 1000");
                    assert!(e.message.contains("over `scripts.max_state` (1000 bytes)"), "{e}");
                }
            }
            assert!(out[1].is_ok(), "the other rule still runs");
        }
        let kept = serde_json::to_vec(&state).unwrap().len();
        assert!(kept < 1000, "the state that was kept is the last one within the limit ({kept} bytes)");
    }
}
