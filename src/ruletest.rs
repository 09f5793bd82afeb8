//! Rules on simulated time: `warden test` (rule tests in each pack's `tests/`), `warden eval` (one rule, one saved
//! answer) and `warden replay` (a recording from `warden run --record` through the current rules).
//!
//! All three run the real rule engine and the real dispatcher (`for`, cooldowns, the storm guard, resolution) on
//! a hand-driven clock with an in-memory store; nothing is sent and no command runs.
//!
//! A test file (`<pack>/tests/*.yaml`):
//!
//! ```yaml
//! name: a failed job is relaunched
//! rule: job-not-running              # short name in the pack, or pack/rule; or `rules: [a, b]`
//! params: {expected_jobs: [clicks], relaunch_command: relaunch}
//! steps:
//!   - at: 0s
//!     responses:
//!       /jobs/overview: {file: fixtures/jobs-overview-failed.json}   # or {json: …}, {status: 503, json: …}, {error: timeout}
//!       /jobs/0494e314c586ea2a04408b827c542e40/exceptions: {file: fixtures/job-failed-exceptions.json}
//!     expect:
//!       - {action: alert, event: firing, subject: clicks, summary_contains: "poison pill"}
//!       - {action: run, command: relaunch, subject: clicks}
//!     expect_not:
//!       - {action: restart}
//! ```
//!
//! The probe's own path (from the pack probe that runs the rule, or `probe:`) is the observation; the other paths
//! answer the rule's `http_get`. `at` is the time since the test's `start`.
//!
//! A rule of a `for_each: job` probe (path `/jobs/{jid}/checkpoints`) is tested per job: the test or a step gives
//! `job: {jid: a1b2…, name: clicks, state: RUNNING}` (any `/jobs/overview` fields), the path is filled from it
//! (`/jobs/a1b2…/checkpoints`: the key to give in `responses`), rules see it as `obs.job`, and their `state` is
//! kept per job name across steps. A step about one job leaves what the rules asked about the other jobs in
//! force (as in the daemon's tick, where every job is judged).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use crate::config::DispatchConfig;
use crate::dispatch::Dispatcher;
use crate::evaluate::{evaluate_observation, JobVerdicts, Observed};
use crate::model::Origin;
use crate::model::Planned;
use crate::model::{Doc, FetchError, FetchErrorKind, Observation};
use crate::script::{self, CompiledRule, FollowUp, FollowUpAnswer, ScriptEngine, TargetInfo, Verdict};
use crate::store::{RuleStateKey, Store};

/// A problem with a test file or a recording (not a failed expectation).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// A file could not be read or parsed.
    #[error("{0}")]
    Input(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Status, body and error of a simulated answer.
type Answer = (Option<u16>, Option<Arc<Doc>>, Option<FetchError>);

/// A canned answer for one path.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// A JSON file (relative to the test file).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// Inline JSON.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// The HTTP status (default 200). Non-2xx becomes an observation error (503 with "leader election" in
    /// `errors[0]` becomes `leader_election`).
    #[serde(default)]
    pub status: Option<u16>,
    /// No answer at all: `timeout`, `connect`, `not_json` or `too_large`.
    #[serde(default)]
    pub error: Option<String>,
}

impl Response {
    fn answer(&self, base: &Path, path: &str) -> Result<Answer, String> {
        if let Some(kind) = &self.error {
            let k = match kind.as_str() {
                "timeout" => FetchErrorKind::Timeout,
                "connect" => FetchErrorKind::Connect,
                "not_json" => FetchErrorKind::NotJson,
                "too_large" => FetchErrorKind::TooLarge,
                "refused" => FetchErrorKind::Refused,
                other => {
                    return Err(format!("unknown simulated error `{other}` (timeout, connect, not_json, too_large)"))
                }
            };
            let message = format!("simulated {kind} for {path}");
            return Ok((None, None, Some(FetchError { kind: k, message })));
        }
        let body = match (&self.file, &self.json) {
            (Some(f), _) => {
                let p = base.join(f);
                let text = std::fs::read(&p).map_err(|e| format!("cannot read `{}`: {e}", p.display()))?;
                Some(Arc::new(Doc::parse(&text).map_err(|e| format!("`{}` is not JSON: {e}", p.display()))?))
            }
            (None, Some(j)) => Some(Arc::new(Doc::from_json(j))),
            (None, None) => None,
        };
        let status = self.status.unwrap_or(200);
        if (200..300).contains(&status) {
            return Ok((Some(status), body, None));
        }
        let first =
            body.as_ref().and_then(|b| b.get("errors")?.as_array()?.first()?.as_str()).unwrap_or("").to_string();
        let leader = status == 503 && first.contains("leader election");
        let kind = if leader { FetchErrorKind::LeaderElection } else { FetchErrorKind::HttpStatus };
        Ok((Some(status), body, Some(FetchError { kind, message: format!("HTTP {status}: {first}") })))
    }
}

struct Canned {
    base: PathBuf,
    responses: BTreeMap<String, Response>,
}

impl FollowUp for Canned {
    fn get(&mut self, path: &str) -> FollowUpAnswer {
        let without_query = path.split('?').next().unwrap_or(path);
        let r = self.responses.get(path).or_else(|| self.responses.get(without_query));
        match r.map(|r| r.answer(&self.base, path)) {
            Some(Ok((status, body, error))) => {
                FollowUpAnswer { status, body, error: error.map(|e| (e.kind.as_str().into(), e.message)) }
            }
            Some(Err(e)) => FollowUpAnswer { error: Some(("test".into(), e)), ..Default::default() },
            None => FollowUpAnswer {
                status: Some(404),
                body: Some(Arc::new(Doc::from_json(&serde_json::json!({"errors": [format!("Not found: {path}")]})))),
                error: Some(("http_status".into(), format!("HTTP 404: the test gives no response for {path}"))),
            },
        }
    }
}

/// The recorded answers of one observation's follow-up requests (`warden replay`): each request gets the next
/// unused answer recorded for its path.
struct Replayed {
    answers: std::sync::Arc<std::sync::Mutex<Vec<Option<crate::model::RecordedFollowUp>>>>,
}

impl FollowUp for Replayed {
    fn get(&mut self, path: &str) -> FollowUpAnswer {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let next = answers.iter_mut().find(|a| a.as_ref().is_some_and(|a| a.path == path)).and_then(Option::take);
        match next {
            Some(a) => FollowUpAnswer { status: a.status, body: a.body, error: a.error },
            None => FollowUpAnswer {
                status: None,
                body: None,
                error: Some(("connect".into(), format!("{path} was not asked for when this was recorded"))),
            },
        }
    }
}

/// What the dispatcher decided in one step, in a form tests match against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actual {
    /// `alert`, `log`, `run`, `restart`, `patch` or `rescale`.
    pub action: String,
    /// For alerts: `firing`, `reminder`, `resolved`, `giving_up`.
    pub event: String,
    /// The subject.
    pub subject: String,
    /// For runs: the command; for restarts: the strategy; for patches: the path; for rescales: the parallelism
    /// asked for (`4`, `+1`, `-1`).
    pub command: String,
    /// Severity.
    pub severity: String,
    /// One line (for patches: the merge patch, as JSON).
    pub summary: String,
    /// The rule.
    pub rule: String,
}

impl std::fmt::Display for Actual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.action.as_str() {
            "run" | "restart" | "patch" | "rescale" => {
                write!(f, "{} {} {} ({}): {:?}", self.action, self.command, self.subject, self.rule, self.summary)
            }
            _ => write!(
                f,
                "{} {} {} [{}] ({}): {:?}",
                self.action, self.event, self.subject, self.severity, self.rule, self.summary
            ),
        }
    }
}

fn actuals(planned: Vec<Planned>) -> Vec<Actual> {
    planned
        .into_iter()
        .map(|p| match p {
            Planned::Notify { record, .. } => Actual {
                action: if record.event == "log" { "log".into() } else { "alert".into() },
                event: record.event,
                subject: record.subject,
                command: String::new(),
                severity: record.severity.as_str().into(),
                summary: record.summary,
                rule: record.rule,
            },
            Planned::Run { command, subject, origin, .. } => Actual {
                action: "run".into(),
                event: String::new(),
                subject,
                command,
                severity: String::new(),
                summary: String::new(),
                rule: origin.rule,
            },
            Planned::Patch { path, body, subject, origin, .. } => Actual {
                action: "patch".into(),
                event: String::new(),
                subject,
                command: path,
                severity: String::new(),
                summary: body.to_string(),
                rule: origin.rule,
            },
            Planned::Restart { job, strategy, origin, .. } => Actual {
                action: "restart".into(),
                event: String::new(),
                subject: job,
                command: strategy.to_string(),
                severity: String::new(),
                summary: String::new(),
                rule: origin.rule,
            },
            Planned::Rescale { job, to, origin, .. } => Actual {
                action: "rescale".into(),
                event: String::new(),
                subject: job,
                command: to.to_string(),
                severity: String::new(),
                summary: String::new(),
                rule: origin.rule,
            },
        })
        .collect()
}

/// Rules, the dispatcher and a clock, stepped by hand.
pub struct Sim {
    engine: ScriptEngine,
    store: Store,
    dispatcher: Dispatcher,
    now: DateTime<Utc>,
    states: HashMap<RuleStateKey, serde_json::Value>,
    /// The per-job verdicts of `for_each: job` observations, per (probe, target).
    fan_out: HashMap<(String, String), JobVerdicts>,
}

impl Sim {
    /// A simulation with this dispatch policy, starting at `start`.
    pub fn new(policy: DispatchConfig, limits: &crate::config::ScriptLimits, start: DateTime<Utc>) -> Self {
        let store = Store::in_memory();
        let dispatcher = Dispatcher::new(policy, false, &store).expect("fresh store");
        Self {
            engine: ScriptEngine::new(limits),
            store,
            dispatcher,
            now: start,
            states: HashMap::new(),
            fan_out: HashMap::new(),
        }
    }

    /// The engine (to compile rules with).
    pub fn engine(&self) -> &ScriptEngine {
        &self.engine
    }

    /// Evaluates `rules` on `obs` at `at` and dispatches; returns what the dispatcher decided. A rule error is
    /// returned as text (with file:line:col) in the error list and does not stop the others.
    ///
    /// An observation about a job (`obs.job`, from a `for_each: job` probe) uses the rules' state of that job
    /// (by name), and its verdicts are merged with what the rules last asked for the probe's other jobs
    /// ([`JobVerdicts`]), as the daemon merges a tick: a step about job B does not resolve job A's alert.
    pub fn step(
        &mut self,
        at: DateTime<Utc>,
        rules: &[(CompiledRule, BTreeMap<String, serde_json::Value>)],
        target: &TargetInfo,
        obs: &Observation,
        follow: &mut dyn FnMut() -> Box<dyn FollowUp>,
    ) -> Result<(Vec<Actual>, Vec<String>), TestError> {
        self.now = at;
        let obs_dyn = script::obs_to_dynamic(obs);
        let seen = Observed { obs: &obs_dyn, probe: &obs.probe, target, now: at };
        let job = obs.job_name().map(str::to_string);
        let key = |rule: &str| RuleStateKey { rule: rule.to_string(), target: target.name.clone(), job: job.clone() };
        let states = &self.states;
        let mut state_of = |rule: &str| states.get(&key(rule)).cloned().unwrap_or_default();
        let mut follow_up = || Some(follow());
        let results =
            evaluate_observation(&self.engine, rules.iter().map(|(r, p)| (r, p)), &seen, &mut state_of, &mut follow_up);
        let mut out = vec![];
        let mut errors = vec![];
        let merge_key = (obs.probe.clone(), target.name.clone());
        let mut merge = self.fan_out.remove(&merge_key).unwrap_or_default();
        for (r, (rule, _)) in results.into_iter().zip(rules) {
            match r {
                Ok(v) => {
                    if let Some(s) = v.new_state {
                        self.states.insert(key(&v.origin.rule), s);
                    }
                    if let Verdict::Skipped(why) = &v.verdict {
                        tracing::debug!(rule = %v.origin.rule, "skipped: {why}");
                    }
                    match &job {
                        Some(j) => merge.add(&v.origin.rule, j, Some(&v.verdict)),
                        None => out.extend(actuals(self.dispatcher.process(&v.origin, &v.verdict, &self.store)?)),
                    }
                }
                Err(e) => {
                    if let Some(j) = &job {
                        merge.add(&rule.name, j, None);
                    }
                    errors.push(e.to_string())
                }
            }
        }
        if job.is_some() {
            for (rule, verdict) in merge.finish(rules.iter().map(|(r, _)| r.name.as_str()), false) {
                let origin = Origin {
                    rule,
                    target: target.name.clone(),
                    target_url: target.url.clone(),
                    probe: obs.probe.clone(),
                    time: at,
                    observed: None,
                };
                out.extend(actuals(self.dispatcher.process(&origin, &verdict, &self.store)?));
            }
            self.fan_out.insert(merge_key, merge);
        }
        Ok((out, errors))
    }
}

/// One expected (or forbidden) action. Unset fields match anything.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `alert`, `log`, `run`, `restart`, `patch` or `rescale`.
    pub action: String,
    /// `firing`, `reminder`, `resolved`, `giving_up`.
    #[serde(default)]
    pub event: Option<String>,
    /// The subject (job name).
    #[serde(default)]
    pub subject: Option<String>,
    /// The command (`run`), strategy (`restart`), path (`patch`) or the parallelism asked for (`rescale`: `4`,
    /// `+1`, `-1`).
    #[serde(default)]
    pub command: Option<String>,
    /// `info`, `warning`, `critical`.
    #[serde(default)]
    pub severity: Option<String>,
    /// Text the summary contains.
    #[serde(default)]
    pub summary_contains: Option<String>,
}

impl Expect {
    fn matches(&self, a: &Actual) -> bool {
        a.action == self.action
            && self.event.as_ref().is_none_or(|e| *e == a.event)
            && self.subject.as_ref().is_none_or(|s| *s == a.subject)
            && self.command.as_ref().is_none_or(|c| *c == a.command)
            && self.severity.as_ref().is_none_or(|s| *s == a.severity)
            && self.summary_contains.as_ref().is_none_or(|s| a.summary.contains(s.as_str()))
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.action)?;
        for (k, v) in [
            ("event", &self.event),
            ("subject", &self.subject),
            ("command", &self.command),
            ("severity", &self.severity),
            ("summary contains", &self.summary_contains),
        ] {
            if let Some(v) = v {
                write!(f, " {k}={v:?}")?;
            }
        }
        Ok(())
    }
}

/// One step of a test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Time since the test's start, e.g. `0s`, `30s`, `5m`.
    pub at: String,
    /// Answers by request path.
    #[serde(default)]
    pub responses: BTreeMap<String, Response>,
    /// Actions that must happen in this step.
    #[serde(default)]
    pub expect: Vec<Expect>,
    /// Actions that must not happen in this step.
    #[serde(default)]
    pub expect_not: Vec<Expect>,
    /// When true, no action other than those in `expect` may happen.
    #[serde(default)]
    pub exactly: bool,
    /// For a rule of a `for_each: job` probe: the job this step's observation is about (overrides the test's
    /// `job`), as its `/jobs/overview` entry: `{jid: ..., name: ..., state: RUNNING}` and any other fields.
    #[serde(default)]
    pub job: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A rule test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// What the test shows.
    pub name: String,
    /// The rule under test (short name in the pack, or `pack/rule`).
    #[serde(default)]
    pub rule: Option<String>,
    /// Several rules evaluated on the same observations, in order.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Parameters (over the pack's defaults).
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// The probe path that is the observation. Default: the path of the pack probe that runs the rule.
    #[serde(default)]
    pub probe: Option<String>,
    /// For a rule of a `for_each: job` probe: the job each step's observation is about (a step may name another),
    /// as its `/jobs/overview` entry: `{jid: ..., name: ..., state: RUNNING}` and any other fields (`state`
    /// defaults to `RUNNING`). `{jid}` and `{job}` in the probe's path are filled from it, `responses` answer the
    /// filled path, and rule `state` is kept per job name across steps.
    #[serde(default)]
    pub job: Option<serde_json::Map<String, serde_json::Value>>,
    /// The simulated target. Default `{name: jobmanager, url: http://jobmanager:8081}`.
    #[serde(default)]
    pub target: Option<TestTarget>,
    /// When step `at: 0s` happens. Default `2026-01-01T00:00:00Z`.
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    /// Dispatcher policy (cooldowns, storm guard), as under `dispatch:` in `warden.yaml`.
    #[serde(default)]
    pub dispatch: Option<DispatchConfig>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// A simulated target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestTarget {
    /// Name.
    pub name: String,
    /// URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The result of one test file.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// The file.
    pub file: PathBuf,
    /// The test's name (or the file name when it could not be read).
    pub name: String,
    /// Readable explanations of every failed expectation (empty: passed).
    pub failures: Vec<String>,
}

fn default_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Runs one test file. The pack is the directory above the file's `tests/` directory.
pub fn run_file(file: &Path) -> TestReport {
    let mut report = TestReport { file: file.to_path_buf(), name: file.display().to_string(), failures: vec![] };
    if let Err(e) = run_file_inner(file, &mut report) {
        report.failures.push(e);
    }
    report
}

fn run_file_inner(file: &Path, report: &mut TestReport) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let doc = crate::config::yaml::YamlDoc::parse(file, &text).map_err(|d| d.to_string())?;
    let mut diags = vec![];
    let test: TestFile = doc.typed(&doc.value, "", &mut diags).ok_or_else(|| diags[0].to_string())?;
    report.name = test.name.clone();
    let base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let pack_dir = base.parent().ok_or_else(|| format!("{}: a test file lives in <pack>/tests/", file.display()))?;
    let files = crate::pack::read_dir(pack_dir).map_err(|d| d.to_string())?;
    let mut pdiags = vec![];
    let pack = crate::pack::load(files, &mut pdiags)
        .ok_or_else(|| pdiags.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))?;
    let mut names: Vec<String> = test.rule.iter().cloned().collect();
    names.extend(test.rules.iter().cloned());
    if names.is_empty() {
        return Err(doc.diag("", "the test names no `rule` (or `rules`)").to_string());
    }
    let mut params: BTreeMap<String, serde_json::Value> =
        pack.manifest.parameters.iter().filter_map(|(k, p)| p.default.clone().map(|d| (k.clone(), d))).collect();
    for (k, v) in &test.params {
        match pack.manifest.parameters.get(k) {
            None => {
                return Err(doc
                    .key_diag(&format!("params.{k}"), format!("pack `{}` has no parameter `{k}`", pack.name()))
                    .to_string())
            }
            Some(spec) => spec
                .kind
                .check(v)
                .map_err(|e| doc.diag(&format!("params.{k}"), format!("parameter `{k}`: {e}")).to_string())?,
        }
        params.insert(k.clone(), v.clone());
    }
    let mut policy = test.dispatch.clone().unwrap_or_default();
    // A target labelled `managed_by` (e.g. `flink-operator`) is hands-off for relaunches, as in the daemon.
    if let Some(t) = &test.target {
        if let Some(m) = t.labels.get(crate::config::MANAGED_BY).filter(|m| m.as_str() != "warden") {
            policy.hands_off.insert(t.name.clone(), m.clone());
        }
    }
    let mut sim = Sim::new(policy, &Default::default(), test.start.unwrap_or_else(default_start));
    // The pack's own modules (and those of the packs beside it, for its dependencies).
    let mut packs = vec![pack.clone()];
    if let Some(parent) = pack_dir.parent() {
        let mut ignore = vec![];
        for p in crate::pack::discover(&["*".to_string()], parent, &mut ignore, file) {
            if p.name() != pack.name() {
                packs.push(p);
            }
        }
    }
    let modules = crate::pack::module_set(&packs);
    let mut rules = vec![];
    let mut probe_path = test.probe.clone();
    for (i, n) in names.iter().enumerate() {
        let short = n.strip_prefix(&format!("{}/", pack.name())).unwrap_or(n);
        let at = if test.rule.is_some() && i == 0 {
            "rule".to_string()
        } else {
            format!("rules[{}]", i - usize::from(test.rule.is_some()))
        };
        let Some(src) = pack.rules.get(short) else {
            let known: Vec<&str> = pack.rules.keys().map(String::as_str).collect();
            let hint = crate::diag::closest(short, known.iter().copied())
                .map(|c| format!(", did you mean `{c}`?"))
                .unwrap_or_default();
            return Err(doc.diag(&at, format!("pack `{}` has no rule `{n}`{hint}", pack.name())).to_string());
        };
        let compiled = sim
            .engine()
            .compile_with_modules(&src.name, pack.name(), src.file.clone(), &src.source, &modules)
            .map_err(|e| e.to_string())?;
        if probe_path.is_none() {
            probe_path = pack
                .manifest
                .probes
                .iter()
                .find(|p| p.rules.iter().any(|r| r == short))
                // An `events:` probe's steps give the pushed event as the answer to `/api/events`.
                .map(|p| if p.events.is_some() { "/api/events".into() } else { p.request.path.clone() });
        }
        rules.push((compiled, params.clone()));
    }
    let probe_path = probe_path
        .ok_or_else(|| doc.diag("", "no pack probe runs this rule: set `probe: /path` in the test").to_string())?;
    let tt = test.target.clone();
    let target = TargetInfo {
        name: tt.as_ref().map(|t| t.name.clone()).unwrap_or_else(|| "jobmanager".into()),
        url: tt.as_ref().and_then(|t| t.url.clone()).unwrap_or_else(|| "http://jobmanager:8081".into()),
        labels: tt.map(|t| t.labels).unwrap_or_default(),
    };
    let start = test.start.unwrap_or_else(default_start);
    for (i, step) in test.steps.iter().enumerate() {
        let at_d = crate::config::units::parse_duration(&step.at)
            .map_err(|e| doc.diag(&format!("steps[{i}].at"), e).to_string())?;
        let at = start + chrono::Duration::from_std(at_d).unwrap_or_default();
        let (job, path) = job_of_step(&doc, &test, step, i, &probe_path)?;
        let resp = step
            .responses
            .get(&path)
            .cloned()
            .unwrap_or(Response { error: Some("connect".into()), ..Default::default() });
        let (status, body, error) =
            resp.answer(&base, &path).map_err(|e| doc.diag(&format!("steps[{i}].responses"), e).to_string())?;
        let obs = Observation {
            probe: format!("{}/test", pack.name()),
            target: target.name.clone(),
            job,
            time: at,
            status,
            latency: Duration::from_millis(5),
            body,
            error,
        };
        let responses = step.responses.clone();
        let b = base.clone();
        let mut follow =
            move || -> Box<dyn FollowUp> { Box::new(Canned { base: b.clone(), responses: responses.clone() }) };
        let (got, errors) = sim.step(at, &rules, &target, &obs, &mut follow).map_err(|e| e.to_string())?;
        let mut problems = vec![];
        for e in &errors {
            problems.push(format!("rule error: {e}"));
        }
        for e in &step.expect {
            if !got.iter().any(|a| e.matches(a)) {
                problems.push(format!("expected: {e}"));
            }
        }
        for e in &step.expect_not {
            if let Some(a) = got.iter().find(|a| e.matches(a)) {
                problems.push(format!("not expected: {e}\n        but got: {a}"));
            }
        }
        if step.exactly {
            for a in &got {
                if !step.expect.iter().any(|e| e.matches(a)) {
                    problems.push(format!("unexpected: {a}"));
                }
            }
        }
        if !problems.is_empty() {
            let pos = doc.pos(&format!("steps[{i}]"));
            let mut msg = format!("{}:{}:{}: step {} (at {}):", file.display(), pos.line, pos.col, i + 1, step.at);
            for p in problems {
                msg.push_str(&format!("\n    {p}"));
            }
            msg.push_str("\n    actual actions in this step:");
            if got.is_empty() {
                msg.push_str(" none");
            }
            for a in &got {
                msg.push_str(&format!("\n      - {a}"));
            }
            report.failures.push(msg);
        }
    }
    Ok(())
}

/// The job a step's observation is about (the step's `job`, else the test's) and the probe path filled from it.
/// A path with `{jid}` or `{job}` needs a job; a job's entry needs a string `jid` and `name`.
fn job_of_step(
    doc: &crate::config::yaml::YamlDoc,
    test: &TestFile,
    step: &Step,
    i: usize,
    template: &str,
) -> Result<(Option<Arc<Doc>>, String), String> {
    let (job, at) = match (&step.job, &test.job) {
        (Some(j), _) => (j, format!("steps[{i}].job")),
        (None, Some(j)) => (j, "job".to_string()),
        (None, None) => {
            if let Some((_, p)) = crate::config::path_placeholders(template).first() {
                return Err(doc
                    .diag(
                        &format!("steps[{i}]"),
                        format!(
                            "the probe path `{template}` has `{{{p}}}`: give the job it is about (`job: {{jid: ..., \
                             name: ..., state: RUNNING}}`) in the test or this step"
                        ),
                    )
                    .to_string());
            }
            return Ok((None, template.to_string()));
        }
    };
    let field = |k: &str| job.get(k).and_then(|v| v.as_str());
    let (Some(jid), Some(name)) = (field("jid"), field("name")) else {
        return Err(doc.diag(&at, "a job needs a string `jid` and `name` (its `/jobs/overview` entry)").to_string());
    };
    let path = crate::config::fill_job_path(template, jid, name);
    let mut entry = job.clone();
    entry.entry("state").or_insert_with(|| "RUNNING".into());
    Ok((Some(Arc::new(Doc::from_json(&serde_json::Value::Object(entry)))), path))
}

/// The test files under `paths`: files as given; a pack directory's `tests/*.yaml`; a directory of packs, each
/// pack's tests.
pub fn discover(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = vec![];
    let tests_of = |pack: &Path, out: &mut Vec<PathBuf>| {
        if let Ok(rd) = std::fs::read_dir(pack.join("tests")) {
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect();
            v.sort();
            out.extend(v);
        }
    };
    for p in paths {
        if p.is_file() {
            out.push(p.clone());
        } else if p.join("pack.yaml").is_file() {
            tests_of(p, &mut out);
        } else if let Ok(rd) = std::fs::read_dir(p) {
            let mut dirs: Vec<PathBuf> =
                rd.flatten().map(|e| e.path()).filter(|d| d.join("pack.yaml").is_file()).collect();
            dirs.sort();
            for d in dirs {
                tests_of(&d, &mut out);
            }
        }
    }
    out
}

/// One follow-up GET a rule made during `warden eval`, and what answered it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FollowUpRecord {
    /// The path the rule asked for (`/jobs/<jid>/exceptions?maxExceptions=5`).
    pub path: String,
    /// The HTTP status of the answer (404 when no `--response` gave one).
    pub status: Option<u16>,
    /// Whether a canned answer (`--response`) matched the path.
    pub answered: bool,
    /// `kind: message` when the answer was an error.
    pub error: Option<String>,
}

/// Canned answers that remember what was asked.
struct Recording {
    inner: Canned,
    log: Arc<parking_lot::Mutex<Vec<FollowUpRecord>>>,
}

impl FollowUp for Recording {
    fn get(&mut self, path: &str) -> FollowUpAnswer {
        let without_query = path.split('?').next().unwrap_or(path);
        let answered = self.inner.responses.contains_key(path) || self.inner.responses.contains_key(without_query);
        let a = self.inner.get(path);
        self.log.lock().push(FollowUpRecord {
            path: path.to_string(),
            status: a.status,
            answered,
            error: a.error.as_ref().map(|(k, m)| format!("{k}: {m}")),
        });
        a
    }
}

/// What one `warden eval` run found: the verdict, the state after, and the follow-ups the rule made.
#[derive(Debug, Clone)]
pub struct EvalReport {
    /// The verdict and the rule's state after the run.
    pub evaluation: script::Evaluation,
    /// The rule's `http_get` calls, in order.
    pub follow_ups: Vec<FollowUpRecord>,
}

/// Runs one rule once on a saved answer, now, with no follow-up answers. Returns the verdict and the rule's state,
/// or the error (see [`eval_with`]).
pub fn eval_once(
    rule: &CompiledRule,
    params: &BTreeMap<String, serde_json::Value>,
    target: &TargetInfo,
    body: impl Into<Doc>,
    engine: &ScriptEngine,
) -> Result<script::Evaluation, script::ScriptError> {
    let body = body.into();
    eval_with(rule, params, target, body, None, &BTreeMap::new(), serde_json::Value::Null, Utc::now(), engine)
        .map(|r| r.evaluation)
}

/// Runs one rule once on a saved answer (`warden eval`) at `now`. `responses` answer the rule's follow-up
/// `http_get`s by path (a path with a query also matches its entry without one), like a rule test's `responses`;
/// other paths get a 404. `state` is the rule's state before the run. `job` is the `/jobs/overview` entry the
/// observation is about (`obs.job`), for a rule of a `for_each: job` probe.
#[allow(clippy::too_many_arguments)]
pub fn eval_with(
    rule: &CompiledRule,
    params: &BTreeMap<String, serde_json::Value>,
    target: &TargetInfo,
    body: Doc,
    job: Option<Doc>,
    responses: &BTreeMap<String, Response>,
    state: serde_json::Value,
    now: DateTime<Utc>,
    engine: &ScriptEngine,
) -> Result<EvalReport, script::ScriptError> {
    let obs = Observation {
        probe: "eval".into(),
        target: target.name.clone(),
        job: job.map(Arc::new),
        time: now,
        status: Some(200),
        latency: Duration::from_millis(1),
        body: Some(Arc::new(body)),
        error: None,
    };
    let o = script::obs_to_dynamic(&obs);
    let seen = Observed { obs: &o, probe: &obs.probe, target, now: obs.time };
    let log = Arc::new(parking_lot::Mutex::new(vec![]));
    let mut follow_up = || -> Option<Box<dyn FollowUp>> {
        Some(Box::new(Recording {
            inner: Canned { base: PathBuf::new(), responses: responses.clone() },
            log: log.clone(),
        }))
    };
    let result = evaluate_observation(engine, [(rule, params)], &seen, &mut |_| state.clone(), &mut follow_up)
        .pop()
        .unwrap_or_else(|| {
            Err(script::ScriptError {
                file: rule.file.clone(),
                rule: rule.name.clone(),
                line: 0,
                col: 0,
                message: "the rule was not evaluated".into(),
            })
        })?;
    let follow_ups = log.lock().clone();
    Ok(EvalReport {
        evaluation: script::Evaluation { state: result.new_state.unwrap_or(state), verdict: result.verdict },
        follow_ups,
    })
}

/// Feeds recorded observations (JSON lines from `warden run --record`) through the plan's rules on simulated time
/// (`warden replay`). Returns `(time, action)` in order. Follow-up requests are not recorded: rules see them fail.
pub fn replay(plan: &crate::plan::Plan, recording: &Path) -> Result<Vec<(DateTime<Utc>, Actual)>, TestError> {
    let text = std::fs::read_to_string(recording)
        .map_err(|e| TestError::Input(format!("cannot read `{}`: {e}", recording.display())))?;
    let mut lines: Vec<crate::model::Recorded> = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        lines.push(
            serde_json::from_str(line)
                .map_err(|e| TestError::Input(format!("{}:{}: {e}", recording.display(), i + 1)))?,
        );
    }
    // Judged when the daemon judged them (recordings of older versions: when the request was sent).
    let at = |r: &crate::model::Recorded| r.evaluated_at.unwrap_or(r.obs.time);
    lines.sort_by_key(at);
    let cfg = &plan.loaded.config;
    let start = lines.first().map(at).unwrap_or_else(Utc::now);
    let mut sim = Sim::new(cfg.dispatch.clone(), &cfg.scripts, start);
    let mut out = vec![];
    for rec in &lines {
        let o = &rec.obs;
        let when = at(rec);
        let Some(job) = plan.jobs.iter().find(|j| j.probe == o.probe && j.target == o.target) else { continue };
        let rules: Vec<(CompiledRule, BTreeMap<String, serde_json::Value>)> = job
            .rules
            .iter()
            .filter_map(|r| plan.rules.get(r))
            .map(|r| (r.compiled.clone(), r.params_for(&o.target).clone()))
            .collect();
        let t = cfg.targets.iter().find(|t| t.name == o.target);
        let target = TargetInfo {
            name: o.target.clone(),
            url: t.map(|t| t.url.clone()).unwrap_or_default(),
            labels: t.map(|t| t.labels.clone()).unwrap_or_default(),
        };
        let answers = std::sync::Arc::new(std::sync::Mutex::new(rec.follow_ups.iter().cloned().map(Some).collect()));
        let mut follow = || -> Box<dyn FollowUp> { Box::new(Replayed { answers: answers.clone() }) };
        let (got, errors) = sim.step(when, &rules, &target, o, &mut follow)?;
        for e in errors {
            tracing::warn!("{e}");
        }
        out.extend(got.into_iter().map(|a| (when, a)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_flink_pack_passes_its_own_tests() {
        let files = discover(&[PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))]);
        assert!(files.len() >= 4, "{files:?}");
        let mut failures = vec![];
        for f in files {
            let r = run_file(&f);
            failures.extend(r.failures);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn a_failing_expectation_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("p");
        std::fs::create_dir_all(pack.join("tests")).unwrap();
        std::fs::write(
            pack.join("pack.yaml"),
            "name: p\nversion: 1.0.0\nprobes:\n  - name: x\n    every: 5s\n    request: {path: /x}\n    rules: [r]\n",
        )
        .unwrap();
        std::fs::write(
            pack.join("r.rhai"),
            "if obs.body.n > 1 { alert(#{subject: \"s\", summary: `n is ${obs.body.n}`}); }",
        )
        .unwrap();
        let t = pack.join("tests/t.yaml");
        std::fs::write(
            &t,
            "name: n\nrule: r\nsteps:\n  - at: 0s\n    responses:\n      /x: {json: {n: 5}}\n    expect:\n      - {action: alert, summary_contains: \"n is 6\"}\n  - at: 10s\n    responses:\n      /x: {json: {n: 0}}\n    expect:\n      - {action: alert, event: resolved, subject: s}\n",
        )
        .unwrap();
        let r = run_file(&t);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        let f = &r.failures[0];
        assert!(f.contains("t.yaml:4:5: step 1 (at 0s):"), "{f}");
        assert!(f.contains("expected: alert summary contains=\"n is 6\""), "{f}");
        assert!(f.contains("- alert firing s [warning] (p/r): \"n is 5\""), "{f}");

        // A test naming a rule that does not exist says so, with a suggestion.
        std::fs::write(pack.join("check.rhai"), "1").unwrap();
        std::fs::write(&t, "name: n\nrule: chek\nsteps: []\n").unwrap();
        let r = run_file(&t);
        assert!(
            r.failures[0].contains("t.yaml:2:7: pack `p` has no rule `chek`, did you mean `check`?"),
            "{:?}",
            r.failures
        );
    }
}

#[cfg(test)]
mod job_tests {
    use super::*;

    /// A pack whose probe fans out over jobs, and a rule that counts polls per job and alerts on a stuck count.
    fn pack(dir: &Path) -> PathBuf {
        let pack = dir.join("p");
        std::fs::create_dir_all(pack.join("tests")).unwrap();
        std::fs::write(
            pack.join("pack.yaml"),
            "name: p\nversion: 1.0.0\nprobes:\n  - name: cp\n    every: 30s\n    for_each: job\n    request: {path: \"/jobs/{jid}/checkpoints\"}\n    rules: [stuck]\n",
        )
        .unwrap();
        std::fs::write(
            pack.join("stuck.rhai"),
            r#"
let n = obs.body.counts.completed;
if state.last == n { state.same = (state.same ?? 0) + 1; } else { state.same = 0; }
state.last = n;
if state.same >= 1 {
    alert(#{subject: obs.job.name, summary: `${obs.job.name} (${obs.job.jid}, ${obs.job.state}) stuck at ${n}`});
}
"#,
        )
        .unwrap();
        pack.join("tests/t.yaml")
    }

    #[test]
    fn state_and_alerts_are_per_job_and_the_path_is_filled_from_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let t = pack(dir.path());
        // Job a stays at 5 across steps interleaved with job b's (which moves): only a's history makes it stuck,
        // and b's steps neither reset a's state nor resolve a's alert.
        std::fs::write(
            &t,
            r#"name: per job
rule: stuck
job: {jid: aaa, name: "clicks per/min", state: RUNNING}
steps:
  - at: 0s
    responses: {/jobs/aaa/checkpoints: {json: {counts: {completed: 5}}}}
  - at: 30s
    job: {jid: bbb, name: views}
    responses: {/jobs/bbb/checkpoints: {json: {counts: {completed: 1}}}}
  - at: 60s
    responses: {/jobs/aaa/checkpoints: {json: {counts: {completed: 5}}}}
    expect: [{action: alert, event: firing, subject: "clicks per/min", summary_contains: "(aaa, RUNNING) stuck at 5"}]
  - at: 90s
    job: {jid: bbb, name: views}
    responses: {/jobs/bbb/checkpoints: {json: {counts: {completed: 2}}}}
    exactly: true
  - at: 120s
    responses: {/jobs/aaa/checkpoints: {json: {counts: {completed: 6}}}}
    expect: [{action: alert, event: resolved, subject: "clicks per/min"}]
"#,
        )
        .unwrap();
        let r = run_file(&t);
        assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
    }

    #[test]
    fn a_job_name_is_percent_encoded_in_the_path_and_a_missing_job_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let t = pack(dir.path());
        std::fs::write(
            dir.path().join("p/pack.yaml"),
            "name: p\nversion: 1.0.0\nprobes:\n  - name: cp\n    every: 30s\n    for_each: job\n    request: {path: \"/x/{job}\"}\n    rules: [stuck]\n",
        )
        .unwrap();
        let case = |job: &str| {
            format!(
                "name: n\nrule: stuck\n{job}steps:\n  - at: 0s\n    responses: {{\"/x/a%20b%2Fc\": {{json: {{counts: {{completed: 1}}}}}}}}\n  - at: 1s\n    responses: {{\"/x/a%20b%2Fc\": {{json: {{counts: {{completed: 1}}}}}}}}\n    expect: [{{action: alert, subject: a b/c}}]\n"
            )
        };
        std::fs::write(&t, case("job: {jid: j1, name: a b/c}\n")).unwrap();
        let r = run_file(&t);
        assert!(r.failures.is_empty(), "{}", r.failures.join("\n"));
        std::fs::write(&t, case("")).unwrap();
        let r = run_file(&t);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        assert!(
            r.failures[0].contains("t.yaml:4:5: the probe path `/x/{job}` has `{job}`: give the job"),
            "{:?}",
            r.failures
        );
        std::fs::write(&t, case("job: {name: a b/c}\n")).unwrap();
        let r = run_file(&t);
        assert!(r.failures[0].contains("t.yaml:3:6: a job needs a string `jid` and `name`"), "{:?}", r.failures);
    }

    #[test]
    fn ordinary_observations_see_no_job() {
        let e = ScriptEngine::new(&Default::default());
        let rule = e
            .compile(
                "t/r",
                "t",
                PathBuf::from("r.rhai"),
                "if obs.job == () { alert(#{subject: \"none\", summary: \"s\"}); }",
            )
            .unwrap();
        let target = TargetInfo { name: "jm".into(), url: String::new(), labels: Default::default() };
        let ev = eval_once(&rule, &BTreeMap::new(), &target, serde_json::json!({}), &e).unwrap();
        assert!(matches!(ev.verdict, Verdict::Requests(ref r) if r.len() == 1), "{:?}", ev.verdict);
        let job = serde_json::json!({"jid": "j", "name": "n", "state": "RUNNING"});
        let ev = eval_with(
            &rule,
            &BTreeMap::new(),
            &target,
            Doc::from_json(&serde_json::json!({})),
            Some(Doc::from_json(&job)),
            &BTreeMap::new(),
            serde_json::Value::Null,
            Utc::now(),
            &e,
        )
        .unwrap();
        assert_eq!(ev.evaluation.verdict, Verdict::Requests(vec![]));
    }
}

#[cfg(test)]
mod replay_tests {
    use super::*;
    use crate::pack::PackFiles;
    use crate::plan::{build, PackSource};

    #[test]
    fn replay_uses_the_parameters_a_target_has_after_overrides_like_the_daemon() {
        let pack = PackFiles {
            dir: PathBuf::from("packs/t"),
            manifest: "name: t\nversion: 1.0.0\nparameters:\n  limit: {type: int, default: 3}\nprobes:\n  - name: p\n    every: 10s\n    request: {path: /x}\n    rules: [over]\n".into(),
            rules: vec![(
                "over.rhai".into(),
                "if obs.body.n > params.limit { alert(#{subject: \"n\", summary: `${target.name}: n is ${obs.body.n}`}); }".into(),
            )],
            modules: vec![],
        };
        let cfg = "targets:\n  - {name: prod, url: \"http://a:1\"}\n  - {name: stage, url: \"http://b:1\"}\npacks:\n  t:\n    params: {limit: 5}\n    overrides:\n      - targets: [stage]\n        params: {limit: 50}\n";
        let loaded = crate::config::load_str(Path::new("w.yaml"), cfg).unwrap_or_else(|d| panic!("{d}"));
        let plan = build(loaded, PackSource::Files(vec![pack]), &ScriptEngine::new(&Default::default()))
            .unwrap_or_else(|d| panic!("{d}"));
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec.jsonl");
        let line = |target: &str| {
            serde_json::json!({"probe": "t/p", "target": target, "time": "2026-12-01T10:00:00Z", "status": 200,
                               "latency_ms": 3, "body": {"n": 10}})
            .to_string()
        };
        std::fs::write(&rec, format!("{}\n{}\n", line("prod"), line("stage"))).unwrap();
        let got = replay(&plan, &rec).unwrap();
        let targets: Vec<&str> = got.iter().filter_map(|(_, a)| a.summary.split(':').next()).collect();
        // n = 10 is over prod's limit (5) but not over stage's overridden limit (50).
        assert_eq!(targets, ["prod"], "{got:?}");
    }

    #[test]
    fn replay_judges_recorded_job_observations_with_per_job_state() {
        let pack = PackFiles {
            dir: PathBuf::from("packs/t"),
            manifest: "name: t\nversion: 1.0.0\nprobes:\n  - name: cp\n    every: 30s\n    for_each: job\n    request: {path: \"/jobs/{jid}/checkpoints\"}\n    rules: [stuck]\n".into(),
            rules: vec![(
                "stuck.rhai".into(),
                "let n = obs.body.completed;\nif state.last == n { alert(#{subject: obs.job.name, summary: `${obs.job.jid} stuck`}); }\nstate.last = n;".into(),
            )],
            modules: vec![],
        };
        let cfg = "targets:\n  - {name: prod, url: \"http://a:1\"}\n";
        let loaded = crate::config::load_str(Path::new("w.yaml"), cfg).unwrap_or_else(|d| panic!("{d}"));
        let plan = build(loaded, PackSource::Files(vec![pack]), &ScriptEngine::new(&Default::default()))
            .unwrap_or_else(|d| panic!("{d}"));
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec.jsonl");
        let line = |t: &str, jid: &str, name: &str, n: i64| {
            serde_json::json!({"probe": "t/cp", "target": "prod", "job": {"jid": jid, "name": name, "state": "RUNNING"},
                               "time": t, "status": 200, "latency_ms": 3, "body": {"completed": n}})
            .to_string()
        };
        let lines = [
            line("2026-12-01T10:00:00Z", "a1", "clicks", 5),
            line("2026-12-01T10:00:00Z", "b1", "views", 7),
            line("2026-12-01T10:00:30Z", "a1", "clicks", 5),
            line("2026-12-01T10:00:30Z", "b1", "views", 8),
        ];
        std::fs::write(&rec, lines.join("\n")).unwrap();
        let got = replay(&plan, &rec).unwrap();
        let said: Vec<String> = got.iter().map(|(_, a)| format!("{} {} {}", a.event, a.subject, a.summary)).collect();
        // clicks stayed at 5 (its own state, not views' 7); views moved; views' poll does not resolve clicks.
        assert_eq!(said, ["firing clicks a1 stuck"], "{got:?}");
    }
}
