//! The JSON view as rules see it, `where`/`group_by`/`count_by`, and a differential test: the Flink pack as it was
//! (a Rhai loop over plain maps and arrays) and as it was rewritten for views and `where` decide the same on
//! generated observations (rules whose behaviour changed since are compared in the version of that rewrite,
//! `testdata/flink-pack-view/`).

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rhai::{Dynamic, Map};
use serde_json::{json, Value};

use crate::config::ScriptLimits;
use crate::model::{Doc, FetchError, FetchErrorKind, Observation};
use crate::script::{
    convert, obs_to_dynamic, params_to_dynamic, target_to_dynamic, CompiledRule, EvalInput, Evaluation, FollowUp,
    FollowUpAnswer, ScriptEngine, ScriptError, TargetInfo, Verdict,
};

fn engine() -> ScriptEngine {
    ScriptEngine::new(&ScriptLimits::default())
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

fn observation(body: Option<Value>) -> Observation {
    Observation {
        probe: "p".into(),
        target: "jm".into(),
        job: None,
        time: t0(),
        status: Some(200),
        latency: Duration::from_millis(3),
        body: body.map(|b| Arc::new(Doc::from_json(&b))),
        error: None,
    }
}

fn compile(e: &ScriptEngine, name: &str, src: &str) -> CompiledRule {
    e.compile(name, "test", PathBuf::from(format!("{name}.rhai")), src).unwrap_or_else(|err| panic!("{err}"))
}

/// Runs `src` once on an observation with `body`.
fn run(src: &str, body: Value) -> Result<Evaluation, ScriptError> {
    let e = engine();
    let rule = compile(&e, "t", src);
    let obs = obs_to_dynamic(&observation(Some(body)));
    let target = target_to_dynamic(&TargetInfo { name: "jm".into(), ..Default::default() });
    let params = params_to_dynamic(&BTreeMap::new());
    let input =
        EvalInput { obs: &obs, target: &target, params: &params, state: &Value::Null, now: t0(), follow_up: None };
    e.evaluate(&rule, input)
}

/// The summary of the one alert `src` raises.
fn summary(src: &str, body: Value) -> String {
    let ev = run(src, body).unwrap_or_else(|e| panic!("{e}"));
    match ev.verdict {
        Verdict::Requests(r) if r.len() == 1 => r[0].summary.clone(),
        v => panic!("expected one request, got {v:?}"),
    }
}

/// `expr` evaluated by a rule, as JSON.
fn value_of(expr: &str, body: Value) -> Value {
    let s = summary(&format!("alert(#{{ summary: to_json({expr}) }});"), body);
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{expr}: {s}: {e}"))
}

fn sample() -> Value {
    json!({
        "jobs": [
            {"name": "a", "state": "RUNNING", "start-time": 5, "tasks": {"failed": 0, "total": 2}, "f": 1.5,
             "n": null, "list": [1, 2, 3]},
            {"name": "b", "state": "FAILED", "start-time": 9, "tasks": {"failed": 1, "total": 2}}
        ],
        "k": "v"
    })
}

#[test]
fn views_read_like_maps_and_arrays() {
    let cases: &[(&str, Value)] = &[
        ("[type_of(obs.body), type_of(obs.body.jobs), type_of(obs.body.k)]", json!(["map", "array", "string"])),
        ("obs.body.jobs[0].name", json!("a")),
        ("obs.body.jobs[0][\"start-time\"]", json!(5)),
        ("obs.body.jobs[0].tasks.failed", json!(0)),
        ("[obs.body.jobs[0].missing, obs.body.jobs[0].n, obs.body.jobs[0].missing?.x]", json!([null, null, null])),
        ("obs.body.jobs[0].missing ?? \"d\"", json!("d")),
        ("[obs.body.jobs.len(), obs.body.jobs[-1].name, obs.body.jobs.is_empty()]", json!([2, "b", false])),
        ("[\"k\" in obs.body, \"zz\" in obs.body, obs.body.contains(\"k\")]", json!([true, false, true])),
        ("obs.body.keys()", json!(["jobs", "k"])),
        ("obs.body.jobs[0].tasks.values()", json!([0, 2])),
        (
            "[obs.body.jobs[0].list.contains(2), 2 in obs.body.jobs[0].list, 7 in obs.body.jobs[0].list]",
            json!([true, true, false]),
        ),
        ("[obs.body.jobs[0].list.get(9), obs.body.get(\"k\"), obs.body.jobs[0].f]", json!([null, "v", 1.5])),
        ("[obs.body.jobs[0].state == \"RUNNING\", obs.body.jobs[0].tasks.total > 1]", json!([true, true])),
        ("{ let n = []; for j in obs.body.jobs { n.push(j.name); } n }", json!(["a", "b"])),
        ("{ let n = 0; for (j, i) in obs.body.jobs { n += i; } n }", json!(1)),
        ("obs.body.jobs[0].tasks", json!({"failed": 0, "total": 2})),
        ("obs.body.jobs.len() + obs.body.jobs[0].tasks.len()", json!(4)),
    ];
    for (expr, want) in cases {
        assert_eq!(&value_of(expr, sample()), want, "{expr}");
    }
}

#[test]
fn views_compare_and_print_like_plain_values() {
    let cases = [
        "obs.body.jobs[0].tasks == #{ failed: 0, total: 2 }",
        "#{ failed: 0, total: 2.0 } == obs.body.jobs[0].tasks",
        "obs.body.jobs[0].list == [1, 2, 3]",
        "obs.body.jobs[0] == obs.body.jobs[0]",
        "obs.body.jobs[0] != obs.body.jobs[1]",
        "obs.body.jobs[0].tasks != #{ failed: 1 }",
        "obs.body != ()",
        "obs.body.to_string() == obs.body.to_map().to_string()",
        "`${obs.body.jobs[0].tasks}` == `${obs.body.jobs[0].tasks.to_map()}`",
        "obs.body.jobs.to_debug() == obs.body.jobs.to_array().to_debug()",
        "to_json(obs.body) == to_json(obs.body.to_dynamic())",
        "(obs.body.jobs + [1]).len() == 3 && type_of(obs.body.jobs + [1]) == \"array\"",
    ];
    for c in cases {
        assert_eq!(value_of(c, sample()), json!(true), "{c}");
    }
}

#[test]
fn rhai_array_functions_work_on_views() {
    let cases: &[(&str, Value)] = &[
        ("obs.body.jobs.filter(|j| j.state == \"FAILED\").map(|j| j.name)", json!(["b"])),
        ("obs.body.jobs.reduce(|sum, j| (sum ?? 0) + j[\"start-time\"])", json!(14)),
        ("[obs.body.jobs.some(|j| j.name == \"b\"), obs.body.jobs.all(|j| j.name == \"b\")]", json!([true, false])),
        ("obs.body.jobs[0].list.index_of(3)", json!(2)),
        ("obs.body.jobs[0].list.order_desc()", json!([3, 2, 1])),
        ("obs.body.jobs[0].list.extract(1)", json!([2, 3])),
        ("obs.body.jobs.find(|j| j.tasks.failed > 0).name", json!("b")),
    ];
    for (expr, want) in cases {
        assert_eq!(&value_of(expr, sample()), want, "{expr}");
    }
}

#[test]
fn views_are_read_only_and_say_so() {
    for src in [
        "obs.body.k = 1;",
        "let b = obs.body; b.k = 1;",
        "let b = obs.body; b[\"k\"] = 1;",
        "let j = obs.body.jobs; j[0] = 1;",
        "let j = obs.body.jobs; j.push(1);",
        "let j = obs.body.jobs; j.sort();",
        "let b = obs.body; b.remove(\"k\");",
        "let b = obs.body; b.jobs[0].name = \"z\";",
    ] {
        let err = run(src, sample()).expect_err(src);
        assert!(err.message.contains("read-only") || err.message.contains("writable"), "{src}: {err}");
    }
    // A copy can be changed, and the view still shows the observation.
    let s = summary(
        "let m = obs.body.to_map(); m.k = 1; m.jobs[0].name = \"z\"; let a = obs.body.jobs.to_array(); a.push(1);
         alert(#{ summary: `${m.k} ${m.jobs[0].name} ${a.len()} ${obs.body.k} ${obs.body.jobs[0].name}` });",
        sample(),
    );
    assert_eq!(s, "1 z 3 v a");
}

#[test]
fn method_calls_on_fields_do_not_trip_over_read_only() {
    let s = summary(
        "alert(#{ summary: `${obs.body.jobs.len()} ${obs.body.jobs[0].tasks.len()} ${obs.body.jobs.where(\"true\").len()}` });",
        sample(),
    );
    assert_eq!(s, "2 2 2");
}

#[test]
fn bad_indexes_are_errors_and_never_panics() {
    for src in [
        "obs.body.jobs[5]",
        "obs.body.jobs[-9]",
        "obs.body.jobs[\"x\"]",
        "obs.body[0]",
        "obs.body.k.x",
        "obs.body.nothing.x",
        "obs.body.jobs.where(\"state ==\")",
        "obs.body.jobs.where(\"nothing.x == 1\")",
        "obs.body.jobs.where(\"name\")",
        "obs.body.jobs.where(\"name in $x\", #{})",
        "obs.body.jobs.group_by(\"tasks\")",
    ] {
        let err = run(&format!("let x = {src};"), sample()).expect_err(src);
        assert!(err.line == 1, "{src}: {err}");
    }
}

#[test]
fn where_group_by_and_count_by() {
    let body = json!({"jobs": [
        {"name": "a", "state": "RUNNING", "jid": "1", "tasks": {"running": 1, "total": 2}},
        {"name": "b", "state": "FAILED", "jid": "2", "tasks": {"running": 0, "total": 2}},
        {"name": "a", "state": "FAILED", "jid": "3", "tasks": {"running": 0, "total": 2}},
        {"name": "c", "state": "RESTARTING", "jid": "4"}
    ]});
    let cases: &[(&str, Value)] = &[
        ("obs.body.jobs.where(`state == \"FAILED\"`).map(|j| j.jid)", json!(["2", "3"])),
        ("obs.body.jobs.where(\"name in $n\", #{ n: [\"a\", \"c\"] }).map(|j| j.jid)", json!(["1", "3", "4"])),
        ("obs.body.jobs.where(\"jid !in $s\", #{ s: #{ \"1\": true, \"4\": 0 } }).map(|j| j.jid)", json!(["2", "3"])),
        (
            "obs.body.jobs.where(`state != 'RESTARTING' && tasks.running < tasks.total`).where(\"name == 'a'\").map(|j| j.jid)",
            json!(["1", "3"]),
        ),
        ("obs.body.jobs.where(\"tasks?.running ?? 9 > 5\").map(|j| j.jid)", json!(["4"])),
        ("obs.body.jobs.group_by(\"name\").a.map(|j| j.jid)", json!(["1", "3"])),
        ("obs.body.jobs.group_by(\"name\").keys()", json!(["a", "b", "c"])),
        ("obs.body.jobs.count_by(\"state\")", json!({"FAILED": 2, "RESTARTING": 1, "RUNNING": 1})),
        ("[\"a\", \"b\", \"x\"].where(\"this in $live\", #{ live: obs.body.jobs.count_by(\"name\") })", json!(["a", "b"])),
        ("[1, 2, 3, 4].where(\"this % 2 == 0\")", json!([2, 4])),
        ("obs.body.jobs.where(\"false\").len()", json!(0)),
    ];
    for (expr, want) in cases {
        assert_eq!(&value_of(expr, body.clone()), want, "{expr}");
    }
}

#[test]
fn views_become_json_in_requests_and_state() {
    let ev = run(
        "alert(#{ summary: \"s\", details: #{ t: obs.body.jobs[0].tasks, all: obs.body.jobs.where(\"name == 'b'\") } });
         state.last = obs.body.jobs[0]; state.list = obs.body.jobs[0].list;",
        sample(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let Verdict::Requests(r) = ev.verdict else { panic!("skipped") };
    assert_eq!(r[0].details, json!({"t": {"failed": 0, "total": 2}, "all": [sample()["jobs"][1].clone()]}));
    assert_eq!(ev.state, json!({"last": sample()["jobs"][0].clone(), "list": [1, 2, 3]}));
}

#[test]
fn the_view_shares_the_document() {
    let body = Arc::new(Doc::from_json(&sample()));
    let o = Observation { body: Some(body.clone()), ..observation(None) };
    let before = Arc::strong_count(&body);
    let obs = obs_to_dynamic(&o);
    assert_eq!(Arc::strong_count(&body), before + 1, "the body is viewed, not copied");
    drop(obs);
    assert_eq!(Arc::strong_count(&body), before);
}

#[test]
fn every_view_function_is_in_the_rule_authors_guide() {
    let guide = include_str!("../../docs/rules.md");
    let names = super::compat_names();
    assert!(names.len() > 20, "{names:?}");
    for n in names {
        let named = guide.contains(&format!("`{n}`")) || guide.contains(&format!("`{n}("));
        assert!(named, "docs/rules.md does not name `{n}` in its section on JSON values");
    }
}

#[test]
fn odd_json_and_odd_rules_give_errors_or_values_never_panics() {
    let bodies = [
        json!(null),
        json!(1),
        json!("s"),
        json!([]),
        json!({}),
        json!([null, [], {}]),
        json!({"jobs": 5}),
        json!({"jobs": [1, "x", null, [], {"state": []}]}),
        json!({"a": {"b": {"c": [[[{"d": u64::MAX}]]]}}}),
    ];
    let rules = [
        "let x = obs.body.jobs; x.len();",
        "for j in obs.body.jobs { let s = j.state; }",
        "obs.body.jobs.where(`state == 'RUNNING' && tasks.failed > 0`);",
        "obs.body.jobs.where(\"this[0] == 1\");",
        "obs.body.jobs.group_by(\"state\");",
        "obs.body.jobs.count_by(\"this\");",
        "obs.body.a.b.c[0][0][0].d + 1;",
        "to_json(obs.body); obs.body.to_dynamic(); `${obs.body}`;",
        "obs.body[0][0];",
        "obs.body.jobs.filter(|j| j.state == ()).len();",
        "obs.body.keys();",
        "obs.body.where(\"true\");",
    ];
    for b in &bodies {
        for r in rules {
            let _ = run(r, b.clone());
        }
    }
}

/// `obs` as it was before the view: today's `obs` with the body converted into plain Rhai maps and arrays.
fn plain_obs_to_dynamic(o: &Observation) -> Dynamic {
    let mut m = crate::script::obs_to_dynamic(o).read_lock::<Map>().expect("obs is a map").clone();
    m.insert("body".into(), o.body.as_deref().map(|b| convert::to_dynamic(&b.to_json())).unwrap_or(Dynamic::UNIT));
    Dynamic::from_map(m).into_shared()
}

/// Follow-up answers that depend only on the path and a seed, so both versions of a rule get the same ones; the
/// paths asked are recorded.
struct Answers {
    seed: u64,
    asked: Arc<Mutex<Vec<String>>>,
}

impl FollowUp for Answers {
    fn get(&mut self, path: &str) -> FollowUpAnswer {
        if let Ok(mut a) = self.asked.lock() {
            a.push(path.to_string());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.seed, path).hash(&mut h);
        let h = h.finish();
        let ok = |body: Value| FollowUpAnswer {
            status: Some(200),
            body: Some(Arc::new(Doc::from_json(&body))),
            error: None,
        };
        let failed =
            FollowUpAnswer { status: Some(500), body: None, error: Some(("http_status".into(), "500".into())) };
        if path.contains("/exceptions") {
            match h % 4 {
                0 => failed,
                1 => ok(json!({"exceptionHistory": {"entries": [], "truncated": false}})),
                2 => ok(json!({"root-exception": format!("java.lang.RuntimeException: boom {}\n\tat x", h % 7)})),
                _ => ok(json!({"exceptionHistory": {"entries": [{"exceptionName": "x",
                    "stacktrace": format!("a\nCaused by: java.io.IOException: gone {}\n\tat z", h % 5)}]}})),
            }
        } else if path.contains("/metrics") {
            match h % 5 {
                0 => failed,
                1 => ok(json!([])),
                _ => ok(json!([{"id": "numRestarts", "value": (h % 40).to_string()}])),
            }
        } else {
            failed
        }
    }
}

const STATES: &[&str] = &[
    "RUNNING",
    "RUNNING",
    "RUNNING",
    "FAILED",
    "CANCELED",
    "FINISHED",
    "RESTARTING",
    "FAILING",
    "INITIALIZING",
    "CREATED",
    "CANCELLING",
    "RECONCILING",
    "SUSPENDED",
    "UNKNOWN",
];

/// A task count as Flink writes it, now and then missing, `null`, a float or a string.
fn count(rng: &mut StdRng) -> Option<Value> {
    match rng.gen_range(0..40) {
        0 => None,
        1 => Some(Value::Null),
        2 => Some(json!(1.0)),
        3 => Some(json!("1")),
        _ => Some(json!(rng.gen_range(0..3))),
    }
}

fn overview(rng: &mut StdRng, now_ms: i64) -> Value {
    let mut jobs = Vec::new();
    for _ in 0..rng.gen_range(0..24) {
        let start = now_ms - rng.gen_range(0..4_000_000);
        let state = STATES[rng.gen_range(0..STATES.len())];
        let ended = matches!(state, "FAILED" | "CANCELED" | "FINISHED");
        let mut tasks = serde_json::Map::new();
        for k in ["total", "running", "finished", "failed", "canceled", "created"] {
            if let Some(v) = count(rng) {
                tasks.insert(k.into(), v);
            }
        }
        let mut j = json!({
            "jid": format!("{:032x}", rng.gen_range(0..30u32)),
            "name": format!("job-{}", rng.gen_range(0..8)),
            "state": state,
            "start-time": if rng.gen_range(0..10) == 0 { start - start % 100_000 } else { start },
            "end-time": if ended { start + rng.gen_range(0..600_000) } else { -1 },
            "duration": rng.gen_range(0..1_000_000),
        });
        // RUNNING jobs without task counts are errors in both versions; keep them rare.
        if state != "RUNNING" || rng.gen_range(0..30) != 0 {
            j["tasks"] = Value::Object(tasks);
        }
        jobs.push(j);
    }
    json!({ "jobs": jobs })
}

/// The Flink pack's parameters (defaults of `rules/pack.yaml`), varied.
fn params(rng: &mut StdRng) -> BTreeMap<String, Value> {
    let mut expected: Vec<String> = (0..rng.gen_range(0..7)).map(|_| format!("job-{}", rng.gen_range(0..10))).collect();
    if rng.gen_bool(0.2) {
        expected.extend(expected.first().cloned());
    }
    let mut p = BTreeMap::new();
    p.insert("expected_jobs".into(), json!(expected));
    p.insert("relaunch_command".into(), json!(if rng.gen_bool(0.8) { "relaunch" } else { "" }));
    p.insert("relaunch_mode".into(), json!(if rng.gen_bool(0.7) { "command" } else { "restart_job" }));
    p.insert("restart_strategy".into(), json!("last-checkpoint"));
    p.insert("relaunch_cancelled".into(), json!(rng.gen_bool(0.3)));
    p.insert("relaunch_finished".into(), json!(rng.gen_bool(0.3)));
    p.insert("relaunch_missing".into(), json!(rng.gen_bool(0.7)));
    p.insert("not_running_for".into(), json!("15s"));
    p.insert("cause_wait".into(), json!(if rng.gen_bool(0.5) { "10s" } else { "10m" }));
    p.insert("tasks_failing_for".into(), json!("2m"));
    p.insert("restarting_for".into(), json!(if rng.gen_bool(0.5) { "5m" } else { "30s" }));
    p.insert("max_restarts".into(), json!(rng.gen_range(0..12)));
    p.insert("restarts_window".into(), json!(if rng.gen_bool(0.5) { "30m" } else { "3m" }));
    p.insert("unreachable_polls".into(), json!(3));
    p.insert("watch".into(), json!("listed"));
    p.insert("settle_time".into(), json!("1m"));
    p
}

const PACK: [&str; 4] = ["job-not-running", "tasks-failing", "restart-loop", "jobmanager-unreachable"];

fn before(rule: &str) -> &'static str {
    match rule {
        "job-not-running" => include_str!("testdata/flink-pack-before/job-not-running.rhai"),
        "tasks-failing" => include_str!("testdata/flink-pack-before/tasks-failing.rhai"),
        "restart-loop" => include_str!("testdata/flink-pack-before/restart-loop.rhai"),
        _ => include_str!("testdata/flink-pack-before/jobmanager-unreachable.rhai"),
    }
}

fn now_shipped(rule: &str) -> &'static str {
    match rule {
        "job-not-running" => include_str!("../../rules/job-not-running.rhai"),
        "tasks-failing" => include_str!("../../rules/tasks-failing.rhai"),
        "restart-loop" => include_str!("../../rules/restart-loop.rhai"),
        _ => include_str!("../../rules/jobmanager-unreachable.rhai"),
    }
}

/// The rules as rewritten for views and `where`: those that changed behaviour since (a relaunch is followed until
/// it settles, a restart loop resolves once the job settled) in that version, the others as shipped.
fn view_version(rule: &str) -> &'static str {
    match rule {
        "job-not-running" => include_str!("testdata/flink-pack-view/job-not-running.rhai"),
        "restart-loop" => include_str!("testdata/flink-pack-view/restart-loop.rhai"),
        _ => now_shipped(rule),
    }
}

/// What one evaluation decided, comparably: the verdict, the state after, the follow-ups asked; or that it failed.
type Outcome = Result<(Verdict, Value, Vec<String>), ()>;

fn outcome(
    e: &ScriptEngine,
    rule: &CompiledRule,
    obs: &Dynamic,
    params: &Dynamic,
    state: &Value,
    now: DateTime<Utc>,
    seed: u64,
) -> Outcome {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let target =
        target_to_dynamic(&TargetInfo { name: "jm".into(), url: "http://jm:8081".into(), ..Default::default() });
    let input = EvalInput {
        obs,
        target: &target,
        params,
        state,
        now,
        follow_up: Some(Box::new(Answers { seed, asked: asked.clone() })),
    };
    let ev = e.evaluate(rule, input).map_err(|_| ())?;
    let asked = asked.lock().map(|a| a.clone()).unwrap_or_default();
    Ok((ev.verdict, ev.state, asked))
}

#[test]
fn the_flink_pack_decides_as_before_the_view() {
    let e = engine();
    let old: Vec<CompiledRule> = PACK.iter().map(|r| compile(&e, &format!("before/{r}"), before(r))).collect();
    let new: Vec<CompiledRule> = PACK.iter().map(|r| compile(&e, &format!("flink/{r}"), view_version(r))).collect();
    let (mut compared, mut requests, mut failures) = (0usize, 0usize, 0usize);
    for scenario in 0..250u64 {
        let mut rng = StdRng::seed_from_u64(scenario);
        let p = params(&mut rng);
        let params = params_to_dynamic(&p);
        let mut now = t0();
        let mut states: Vec<(Value, Value)> = vec![(Value::Null, Value::Null); PACK.len()];
        for poll in 0..8u64 {
            now += chrono::Duration::seconds(rng.gen_range(1..400));
            let mut o = observation(None);
            o.time = now;
            match rng.gen_range(0..20) {
                0 => o.error = Some(FetchError { kind: FetchErrorKind::Timeout, message: "slow".into() }),
                1 => o.body = Some(Arc::new(Doc::from_json(&json!({"errors": ["no"]})))),
                _ => o.body = Some(Arc::new(Doc::from_json(&overview(&mut rng, now.timestamp_millis())))),
            }
            let (old_obs, new_obs) = (plain_obs_to_dynamic(&o), obs_to_dynamic(&o));
            for (i, name) in PACK.iter().enumerate() {
                let seed = scenario * 1000 + poll;
                let a = outcome(&e, &old[i], &old_obs, &params, &states[i].0, now, seed);
                let b = outcome(&e, &new[i], &new_obs, &params, &states[i].1, now, seed);
                assert_eq!(
                    a,
                    b,
                    "{name}, scenario {scenario}, poll {poll}: the rule decides differently\nparams {p:?}\nbody {}",
                    o.body.as_deref().map(Doc::to_text).unwrap_or_default()
                );
                compared += 1;
                match a {
                    Ok((verdict, state, _)) => {
                        if let Verdict::Requests(r) = &verdict {
                            requests += r.len();
                        }
                        // Both decided the same; both go on from there.
                        states[i] = (state.clone(), state);
                    }
                    Err(()) => failures += 1,
                }
            }
        }
    }
    // The generated observations exercise the rules: many requests, some failures (odd task counts).
    assert!(compared >= 8000, "{compared}");
    assert!(requests > 2000, "only {requests} requests in {compared} evaluations");
    assert!(failures < compared / 5, "{failures} of {compared} evaluations failed");
    eprintln!("compared {compared} evaluations: {requests} requests, {failures} failed in both versions");
}

#[test]
fn a_quiet_cluster_leaves_rule_state_alone() {
    // Healthy jobs, every expected one running: no requests, no follow-ups, and from the second poll on every rule's
    // state stays as it was, so the daemon (which saves a state only when it changed) writes nothing.
    let e = engine();
    let rules: Vec<CompiledRule> = PACK.iter().map(|r| compile(&e, &format!("flink/{r}"), now_shipped(r))).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let mut p = params(&mut rng);
    p.insert("expected_jobs".into(), json!(["job-1", "job-2", "job-3"]));
    let params = params_to_dynamic(&p);
    let mut states = vec![Value::Null; PACK.len()];
    let mut now = t0();
    for poll in 0..5 {
        now += chrono::Duration::seconds(10);
        let jobs: Vec<Value> = (0..50)
            .map(|i| {
                json!({"jid": format!("{i:032x}"), "name": format!("job-{i}"), "state": "RUNNING",
                       "start-time": 1, "end-time": -1, "duration": poll * 10_000,
                       "tasks": {"total": 2, "running": 2, "finished": 0, "failed": 0}})
            })
            .collect();
        let o = Observation { time: now, ..observation(Some(json!({ "jobs": jobs }))) };
        let obs = obs_to_dynamic(&o);
        for (i, rule) in rules.iter().enumerate() {
            let out = outcome(&e, rule, &obs, &params, &states[i], now, 0);
            let Ok((verdict, state, asked)) = out else { panic!("{} failed", PACK[i]) };
            assert_eq!(verdict, Verdict::Requests(vec![]), "{}", PACK[i]);
            assert!(asked.is_empty(), "{}: {asked:?}", PACK[i]);
            if poll > 0 {
                assert_eq!(state, states[i], "{}: the state changed on a quiet poll", PACK[i]);
            }
            states[i] = state;
        }
    }
}

/// Runs `src` once on an observation whose body is `doc`; the one alert's summary.
fn summary_of_doc(src: &str, doc: Arc<Doc>) -> String {
    let e = engine();
    let rule = compile(&e, "t", src);
    let obs = obs_to_dynamic(&Observation { body: Some(doc), ..observation(None) });
    let target = target_to_dynamic(&TargetInfo { name: "jm".into(), ..Default::default() });
    let params = params_to_dynamic(&BTreeMap::new());
    let input =
        EvalInput { obs: &obs, target: &target, params: &params, state: &Value::Null, now: t0(), follow_up: None };
    match e.evaluate(&rule, input).unwrap_or_else(|e| panic!("{e}")).verdict {
        Verdict::Requests(r) if r.len() == 1 => r[0].summary.clone(),
        v => panic!("expected one request, got {v:?}"),
    }
}

#[test]
fn keys_come_in_the_document_s_order_and_a_repeated_key_reads_as_its_first_value() {
    let doc = Arc::new(Doc::parse(br#"{"z": 1, "a": {"y": 2, "b": 3}, "z": 4}"#).unwrap());
    let cases = [
        ("obs.body.keys()", json!(["z", "a", "z"])),
        ("obs.body.a.keys()", json!(["y", "b"])),
        ("obs.body.a.values()", json!([2, 3])),
        ("obs.body.values()", json!([1, {"b": 3, "y": 2}, 4])),
        ("[obs.body.z, obs.body[\"z\"], obs.body.get(\"z\"), obs.body.to_map().z]", json!([1, 1, 1, 1])),
        ("[obs.body.len(), \"z\" in obs.body, obs.body.contains(\"a\")]", json!([3, true, true])),
        ("obs.body == #{z: 1, a: #{b: 3, y: 2}}", json!(true)),
        ("[obs.body].where(\"z == 1 && a.b == 3\").len()", json!(1)),
        ("obs.body", json!({"a": {"b": 3, "y": 2}, "z": 1})),
    ];
    for (expr, want) in cases {
        let s = summary_of_doc(&format!("alert(#{{ summary: to_json({expr}) }});"), doc.clone());
        let got: Value = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{expr}: {s}: {e}"));
        assert_eq!(got, want, "{expr}");
    }
}

#[test]
fn reading_every_key_of_a_large_object_goes_through_one_index() {
    let n = 5_000;
    let mut text = String::from(r#"{"rows": ["#);
    for r in 0..2 {
        let keys: Vec<String> = (0..100).map(|i| format!(r#""k{i}": {}"#, i + r)).collect();
        text.push_str(&format!("{}{{{}}}", if r > 0 { "," } else { "" }, keys.join(",")));
    }
    text.push_str(r#"], "by_name": {"#);
    let keys: Vec<String> = (0..n).map(|i| format!(r#""job-{i}": {i}"#)).collect();
    text.push_str(&keys.join(","));
    text.push_str("}}");
    let doc = Arc::new(Doc::parse(text.as_bytes()).unwrap());
    let src = r#"
        let m = obs.body.by_name;
        let sum = 0;
        for k in m.keys() { sum += m[k]; }
        for i in 0..100 { sum += obs.body.by_name[`job-${i}`]; }
        let picked = obs.body.rows.where("k99 == 100 && this.k0 == 1").len();
        alert(#{ summary: `${sum} ${picked} ${"job-4999" in m} ${"job-5000" in m}` });
    "#;
    let want = (0..n).sum::<usize>() + (0..100).sum::<usize>();
    assert_eq!(summary_of_doc(src, doc.clone()), format!("{want} 1 true false"));
    // One index for `by_name` (however it was reached) and one per row the query read: every lookup after the
    // first is a binary search, not a scan of 5,000 keys.
    assert_eq!(doc.indexed_objects(), 3);
}

#[test]
fn a_scalar_as_a_document_is_what_its_json_would_parse_to() {
    use crate::script::json::doc_of;
    let values: Vec<Dynamic> = vec![
        Dynamic::UNIT,
        Dynamic::from(true),
        Dynamic::from(-7_i64),
        Dynamic::from(2.5_f64),
        Dynamic::from(f64::NAN),
        Dynamic::from("job-1 \"quoted\" ✓"),
        Dynamic::from(rhai::Array::from([Dynamic::from(1_i64), Dynamic::from("x")])),
    ];
    for v in values {
        let through_json = Doc::from_json(&crate::script::convert::to_json(&v));
        assert_eq!(doc_of(&v).to_json(), through_json.to_json(), "{v:?}");
    }
    // Names picked from a plain array of names, the way job-not-running picks the expected jobs that are not live.
    let src = r#"
        let down = ["a", "b", "c", 4].where("this !in $live", #{ live: ["b", 4] });
        alert(#{ summary: `${down}` });
    "#;
    assert_eq!(summary_of_doc(src, Arc::new(Doc::from_json(&json!({})))), r#"["a", "c"]"#);
}
