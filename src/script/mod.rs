//! Rules in Rhai: one engine built once with limits, every rule compiled once, each evaluation run synchronously
//! (callers put it on a blocking thread) under an operation budget and a wall-clock deadline.
//!
//! A rule is a script file. It sees these variables:
//! - `obs`: the observation — `ok`, `status`, `latency_ms`, `time` (ms), `body` (the JSON answer, or `()`),
//!   `error` (`()` or `#{kind, message}`), `probe`, `target`;
//! - `target`: `#{name, url, labels}`;
//! - `params`: the pack's parameters (defaults merged with `warden.yaml`);
//! - `state`: a map of its own (per rule and target) that persists across evaluations and restarts.
//!
//! It asks for actions with `alert(#{...})`, `run("command", #{...})`, `log(...)`, declares an evaluation
//! inconclusive with `skip("why")`, may read more with `http_get("/path")` (bounded), and reads the clock with
//! `now()`. See `docs/rules.md` for the full reference.
//!
//! An evaluation is bounded: operations, sizes, `scripts.max_time` of computing (waiting for follow-up answers
//! excluded; the rule is stopped when it runs out), and `scripts.max_total_time` for everything, follow-ups
//! included: no follow-up waits beyond it, later ones answer at once with error kind `limit`, so a rule cannot keep
//! its probe busy with follow-ups yet can still conclude (alert without the root cause). A rule file with no code to run (empty, only comments, only function definitions) does not compile: it
//! would ask for nothing and so resolve every alert it raised (see `empty.rs`).

mod api;
pub mod convert;
mod empty;
mod glob;
pub mod json;
pub mod modules;
mod patch;
mod query;
mod rescale;

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position, Scope, AST};

use crate::config::ScriptLimits;
use crate::model::ActionRequest;
use crate::model::Observation;

pub use api::{FollowUp, FollowUpAnswer, STRATEGIES};
pub use modules::{ModuleSet, ModuleSource};

/// A rule that failed to compile or to run, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: rule `{rule}`: {message}", file.display())]
pub struct ScriptError {
    /// The rule's file.
    pub file: PathBuf,
    /// The rule's namespaced name.
    pub rule: String,
    /// 1-based line (0 if unknown).
    pub line: usize,
    /// 1-based column (0 if unknown).
    pub col: usize,
    /// What went wrong.
    pub message: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Namespaced name, e.g. `flink/job-not-running`.
    pub name: String,
    /// The pack it belongs to.
    pub pack: String,
    /// Where its source is.
    pub file: PathBuf,
    /// A hash of its source, to tell whether a reload changed it.
    pub source_hash: u64,
    ast: Arc<AST>,
}

/// The target as a rule sees it.
#[derive(Debug, Clone, Default)]
pub struct TargetInfo {
    /// Name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// What one evaluation decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The conditions and actions the rule asks for now (empty: all is well).
    Requests(Vec<ActionRequest>),
    /// The rule could not judge (e.g. the JobManager did not answer): keep every alert as it is.
    Skipped(String),
}

/// The result of one evaluation.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// What the rule decided.
    pub verdict: Verdict,
    /// The rule's state after the run.
    pub state: serde_json::Value,
}

/// Everything one evaluation reads.
pub struct EvalInput<'a> {
    /// The observation, converted once per poll with [`obs_to_dynamic`] and shared by the probe's rules.
    pub obs: &'a Dynamic,
    /// The target.
    pub target: &'a Dynamic,
    /// The pack's parameters.
    pub params: &'a Dynamic,
    /// The rule's state before the run.
    pub state: &'a serde_json::Value,
    /// The clock's reading.
    pub now: DateTime<Utc>,
    /// Follow-up GETs, if this evaluation may make them.
    pub follow_up: Option<Box<dyn FollowUp>>,
}

thread_local! {
    static CTX: RefCell<Option<api::EvalCtx>> = const { RefCell::new(None) };
}

/// The Rhai engine with Warden's limits and API, built once.
pub struct ScriptEngine {
    engine: Engine,
    limits: ScriptLimits,
    /// The configuration's command names, when known ([`ScriptEngine::with_commands`]).
    commands: Option<Arc<std::collections::BTreeSet<String>>>,
}

impl std::fmt::Debug for ScriptEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptEngine").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl ScriptEngine {
    /// Builds the engine with these limits.
    pub fn new(limits: &ScriptLimits) -> Self {
        let mut engine = Engine::new();
        // No file access: `import` is served from the packs' modules, in memory, while a rule compiles.
        engine.set_module_resolver(modules::PackResolver);
        engine.disable_symbol("eval");
        engine.set_max_operations(limits.max_operations);
        engine.set_max_call_levels(48);
        engine.set_max_expr_depths(96, 64);
        engine.set_max_string_size(limits.max_string.as_usize());
        engine.set_max_array_size(limits.max_array);
        engine.set_max_map_size(limits.max_map);
        engine.set_max_variables(10_000);
        engine.set_max_functions(1_000);
        engine.on_progress(|ops| {
            if ops % 512 != 0 {
                return None;
            }
            let late = CTX.with(|c| c.borrow().as_ref().is_some_and(|ctx| Instant::now() > ctx.deadline));
            late.then(|| Dynamic::from("wall-clock limit"))
        });
        engine.on_print(|s| {
            let rule = CTX.with(|c| c.borrow().as_ref().map(|c| c.rule.clone()).unwrap_or_default());
            tracing::info!(rule = %rule, "{s}");
        });
        engine.on_debug(|s, _src, pos| {
            let rule = CTX.with(|c| c.borrow().as_ref().map(|c| c.rule.clone()).unwrap_or_default());
            tracing::debug!(rule = %rule, line = pos.line().unwrap_or(0), "{s}");
        });
        // Job names and ids are thousands of distinct strings: Rhai's small intern cache only costs time here.
        engine.set_max_strings_interned(0);
        api::register(&mut engine);
        patch::register(&mut engine);
        rescale::register(&mut engine);
        // The read-only JSON view of `obs.body` and `http_get(..).body` (src/script/json.rs).
        json::register(&mut engine);
        glob::register(&mut engine);
        Self { engine, limits: limits.clone(), commands: None }
    }

    /// The same engine, knowing the configuration's command names: a rule's `run("name", …)` with any other name
    /// then fails the evaluation with the call's file:line:col (without them, as in pack tests, any name passes
    /// and the executor reports an unknown one).
    pub fn with_commands<'a>(mut self, names: impl IntoIterator<Item = &'a String>) -> Self {
        self.commands = Some(Arc::new(names.into_iter().cloned().collect()));
        self
    }

    /// The signatures of every function Warden registers for rules (Rhai's own standard library excluded, and so
    /// are the operators and Rhai map and array functions made to work on JSON views: [`json::compat_names`]),
    /// e.g. `alert(m: Map)`.
    pub fn registered_functions(&self) -> Vec<String> {
        let mut v = self.engine.gen_fn_signatures(false);
        let compat = json::compat_signatures();
        v.retain(|s| !compat.contains(s));
        v.sort();
        v
    }

    /// The limits this engine enforces.
    pub fn limits(&self) -> &ScriptLimits {
        &self.limits
    }

    /// Compiles a rule's source (a rule without modules: any `import` is an error; see
    /// [`ScriptEngine::compile_with_modules`]).
    pub fn compile(&self, name: &str, pack: &str, file: PathBuf, source: &str) -> Result<CompiledRule, ScriptError> {
        self.compile_with_modules(name, pack, file, source, &Arc::new(ModuleSet::default()))
    }

    /// The variables a rule may use, declared for the compiler. They are plain variables here, not constants: the
    /// optimizer would otherwise fold these placeholder values into the compiled rule.
    fn declared_scope() -> Scope<'static> {
        let mut scope = Scope::new();
        for v in ["obs", "target", "params", "state"] {
            scope.push(v, Dynamic::UNIT);
        }
        scope
    }

    /// Runs `rule` once. Synchronous and CPU-bound (follow-up requests block it): call it from a blocking thread.
    /// Bounded by `scripts.max_time` of computing; its follow-ups end by `scripts.max_total_time`.
    pub fn evaluate(&self, rule: &CompiledRule, input: EvalInput<'_>) -> Result<Evaluation, ScriptError> {
        // The context is the thread's until this evaluation ends, however it ends (a panic included).
        struct ClearCtx;
        impl Drop for ClearCtx {
            fn drop(&mut self) {
                CTX.with(|c| c.borrow_mut().take());
            }
        }
        let started = Instant::now();
        let total = self.limits.total_time();
        let ctx = api::EvalCtx {
            rule: rule.name.clone(),
            deadline: started + self.limits.max_time,
            total_deadline: started + total,
            total_budget: total,
            now: input.now,
            requests: Vec::new(),
            skipped: None,
            follow_up: input.follow_up,
            follow_ups_left: self.limits.max_follow_ups,
            commands: self.commands.clone(),
        };
        CTX.with(|c| *c.borrow_mut() = Some(ctx));
        let _clear = ClearCtx;
        let mut scope = Scope::new();
        scope.push_constant_dynamic("obs", input.obs.clone());
        scope.push_constant_dynamic("target", input.target.clone());
        scope.push_constant_dynamic("params", input.params.clone());
        let state = match input.state {
            serde_json::Value::Object(_) => convert::to_dynamic(input.state),
            _ => Dynamic::from_map(Map::new()),
        };
        scope.push_dynamic("state", state);
        let result = self.engine.run_ast_with_scope(&mut scope, &rule.ast);
        let Some(ctx) = CTX.with(|c| c.borrow_mut().take()) else {
            let message = "the evaluation lost its context (a module function evaluated another rule?)".to_string();
            return Err(ScriptError { file: rule.file.clone(), rule: rule.name.clone(), line: 0, col: 0, message });
        };
        if let Err(e) = result {
            return Err(self.runtime_error(rule, *e, started.elapsed()));
        }
        let state = scope.get("state").map(convert::to_json).unwrap_or(serde_json::Value::Null);
        let verdict = match ctx.skipped {
            Some(why) => Verdict::Skipped(why),
            None => Verdict::Requests(ctx.requests),
        };
        Ok(Evaluation { verdict, state })
    }

    fn runtime_error(&self, rule: &CompiledRule, e: EvalAltResult, took: Duration) -> ScriptError {
        // Report the innermost position: where in the rule the problem actually is.
        let mut err = &e;
        let mut via = Vec::new();
        while let EvalAltResult::ErrorInFunctionCall(name, _, inner, _) = err {
            via.push(name.clone());
            err = inner;
        }
        let (line, col) = pos(err.position());
        let (line, col) = if line == 0 { pos(e.position()) } else { (line, col) };
        let message = match err {
            EvalAltResult::ErrorTerminated(..) => format!(
                "stopped after {} ms: the rule exceeded the wall-clock limit of {} ms",
                took.as_millis(),
                self.limits.max_time.as_millis()
            ),
            EvalAltResult::ErrorTooManyOperations(..) => {
                format!(
                    "stopped: the rule exceeded its budget of {} operations (endless loop?)",
                    self.limits.max_operations
                )
            }
            EvalAltResult::ErrorDataTooLarge(what, ..) => format!("stopped: {what} exceeds the limit"),
            EvalAltResult::ErrorRuntime(v, ..) => format!("rule threw: {v}"),
            other => strip_pos(&other.to_string()),
        };
        let message = if via.is_empty() { message } else { format!("{message} (in function {})", via.join(" → ")) };
        ScriptError { file: rule.file.clone(), rule: rule.name.clone(), line, col, message }
    }
}

fn strip_pos(s: &str) -> String {
    match s.rfind(" (line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

fn pos(p: Position) -> (usize, usize) {
    (p.line().unwrap_or(0), p.position().unwrap_or(0))
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Converts an observation into the `obs` value rules see. Done once per poll; the result is shared by every rule
/// of the probe (cloning a shared value is cheap). The body is not copied: rules read it through a read-only view
/// of the parsed document ([`json::view`]).
pub fn obs_to_dynamic(o: &Observation) -> Dynamic {
    let mut m = Map::new();
    m.insert("probe".into(), o.probe.as_str().into());
    m.insert("target".into(), o.target.as_str().into());
    // `obs.job` of an ordinary probe reads as `()` without an entry (a missing key of a map is `()`).
    if let Some(job) = &o.job {
        m.insert("job".into(), json::view(job.clone()));
    }
    m.insert("time".into(), Dynamic::from_int(o.time.timestamp_millis()));
    m.insert("ok".into(), Dynamic::from_bool(o.error.is_none()));
    m.insert("status".into(), o.status.map(|s| Dynamic::from_int(s.into())).unwrap_or(Dynamic::UNIT));
    m.insert("latency_ms".into(), Dynamic::from_int(o.latency.as_millis() as i64));
    m.insert("body".into(), o.body.clone().map(json::view).unwrap_or(Dynamic::UNIT));
    let err = match &o.error {
        None => Dynamic::UNIT,
        Some(e) => {
            let mut em = Map::new();
            em.insert("kind".into(), e.kind.as_str().into());
            em.insert("message".into(), e.message.as_str().into());
            Dynamic::from_map(em)
        }
    };
    m.insert("error".into(), err);
    Dynamic::from_map(m).into_shared()
}

/// Converts a target into the `target` value rules see.
pub fn target_to_dynamic(t: &TargetInfo) -> Dynamic {
    let mut m = Map::new();
    m.insert("name".into(), t.name.as_str().into());
    m.insert("url".into(), t.url.as_str().into());
    let mut labels = Map::new();
    for (k, v) in &t.labels {
        labels.insert(k.as_str().into(), v.as_str().into());
    }
    m.insert("labels".into(), Dynamic::from_map(labels));
    Dynamic::from_map(m)
}

/// Converts parameters into the `params` value rules see. Shared, like `obs`, so that handing it to each
/// evaluation does not copy it (a rule that assigns it to a variable or passes it to a function still gets a copy).
pub fn params_to_dynamic(p: &std::collections::BTreeMap<String, serde_json::Value>) -> Dynamic {
    let mut m = Map::new();
    for (k, v) in p {
        m.insert(k.as_str().into(), convert::to_dynamic(v));
    }
    Dynamic::from_map(m).into_shared()
}

#[cfg(test)]
mod tests;
