//! The one evaluation path: an observation through a probe's rules, each with its own state and the parameters
//! it has on that target (pack `overrides` included). The daemon, `warden test`, `warden eval` and `warden replay`
//! all call [`evaluate_observation`], so what a test or a replay decides is what the daemon would have decided.
//!
//! A rule that fails — a script error, a limit, even a panic inside the engine — fails alone, as that rule's
//! error with its file:line:col; the other rules of the observation still run.

use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use rhai::Dynamic;

use crate::model::Origin;
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
        let params = script::params_to_dynamic(params);
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
                message: format!("the rule's evaluation panicked ({why}); Warden goes on without this verdict"),
            })
        });
        out.push(result.map(|ev| RuleVerdict {
            origin: Origin {
                rule: rule.name.clone(),
                target: seen.target.name.clone(),
                target_url: seen.target.url.clone(),
                probe: seen.probe.to_string(),
                time: seen.now,
            },
            new_state: (ev.state != before).then_some(ev.state),
            verdict: ev.verdict,
        }));
    }
    out
}
