use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::model::{FetchError, FetchErrorKind};
use crate::model::{Pending, RequestKind, Severity};

fn engine() -> ScriptEngine {
    ScriptEngine::new(&ScriptLimits::default())
}

fn compile(e: &ScriptEngine, src: &str) -> CompiledRule {
    e.compile("test/rule", "test", PathBuf::from("rules/rule.rhai"), src).unwrap_or_else(|e| panic!("{e}"))
}

fn obs(body: Option<serde_json::Value>, error: Option<FetchError>) -> Observation {
    Observation {
        probe: "p".into(),
        target: "jm".into(),
        job: None,
        time: chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        status: Some(200),
        latency: Duration::from_millis(12),
        body: body.map(|b| Arc::new(crate::model::Doc::from_json(&b))),
        error,
    }
}

struct Canned(Vec<String>);
impl FollowUp for Canned {
    fn get(&mut self, path: &str) -> FollowUpAnswer {
        self.0.push(path.to_string());
        FollowUpAnswer {
            status: Some(200),
            body: Some(Arc::new(crate::model::Doc::from_json(&serde_json::json!({"path": path})))),
            error: None,
        }
    }
}

fn eval_with(
    e: &ScriptEngine,
    src: &str,
    o: &Observation,
    state: serde_json::Value,
    follow: Option<Box<dyn FollowUp>>,
) -> Result<Evaluation, ScriptError> {
    let rule = compile(e, src);
    let obs = obs_to_dynamic(o);
    let target =
        target_to_dynamic(&TargetInfo { name: "jm".into(), url: "http://jm:8081".into(), ..Default::default() });
    let params = params_to_dynamic(&[("limit".to_string(), serde_json::json!(3))].into_iter().collect());
    let now = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 5).unwrap();
    e.evaluate(&rule, EvalInput { obs: &obs, target: &target, params: &params, state: &state, now, follow_up: follow })
}

fn eval(src: &str) -> Result<Evaluation, ScriptError> {
    eval_with(&engine(), src, &obs(Some(serde_json::json!({"jobs": []})), None), serde_json::Value::Null, None)
}

#[test]
fn a_rule_sees_the_observation_target_params_and_clock() {
    let src = r#"
        if obs.ok && obs.status == 200 && obs.latency_ms == 12 && obs.error == () && target.name == "jm"
           && params.limit == 3 && now() - obs.time == 5000 && obs.body.jobs.len() == 0 {
            alert(#{ subject: "all", summary: "seen" });
        }
    "#;
    let ev = eval(src).unwrap();
    let Verdict::Requests(r) = ev.verdict else { panic!() };
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].summary, "seen");
}

#[test]
fn requests_carry_policy_and_vars() {
    let src = r#"
        alert(#{ subject: "clicks", severity: "critical", summary: "down", "for": "30s", cooldown: "10m",
                 details: #{ jid: "abc", n: 2 } });
        alert(#{ subject: "jm", summary: "unreachable", "for": 3 });
        run("relaunch", #{ job: "clicks", jid: "abc", n: 7 });
        log("a line");
    "#;
    let Verdict::Requests(r) = eval(src).unwrap().verdict else { panic!() };
    assert_eq!(r.len(), 4);
    assert_eq!(r[0].severity, Severity::Critical);
    assert_eq!(r[0].pending, Some(Pending::Duration(Duration::from_secs(30))));
    assert_eq!(r[0].cooldown, Some(Duration::from_secs(600)));
    assert_eq!(r[0].details, serde_json::json!({"jid": "abc", "n": 2}));
    assert_eq!(r[1].pending, Some(Pending::Evaluations(3)));
    match &r[2].kind {
        RequestKind::Run { command, vars } => {
            assert_eq!(command, "relaunch");
            assert_eq!(vars["job"], "clicks");
            assert_eq!(vars["n"], "7");
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(r[2].subject, "clicks", "a run's subject defaults to its job");
    assert_eq!(r[3].kind, RequestKind::Log);
}

#[test]
fn bad_requests_are_script_errors_with_positions() {
    let e = eval("let x = 1;\nalert(#{ subject: \"a\" });").unwrap_err();
    assert_eq!((e.line, e.col), (2, 1), "{e}");
    assert!(e.message.contains("alert() needs a `summary`"), "{e}");
    let e = eval("alert(#{ summary: \"s\", severity: \"meh\" });").unwrap_err();
    assert!(e.message.contains("severity must be"), "{e}");
    let e = eval("alert(#{ summary: \"s\", \"for\": \"soon\" });").unwrap_err();
    assert!(e.message.contains("invalid duration `soon`"), "{e}");
}

#[test]
fn skip_keeps_everything_as_it_is() {
    let ev = eval(r#"alert(#{summary: "x"}); skip("jobmanager down");"#).unwrap();
    assert_eq!(ev.verdict, Verdict::Skipped("jobmanager down".into()));
}

#[test]
fn state_persists_between_evaluations() {
    let e = engine();
    let o = obs(Some(serde_json::json!({})), None);
    let src = "state.n = (state.n ?? 0) + 1;";
    let s1 = eval_with(&e, src, &o, serde_json::Value::Null, None).unwrap().state;
    let s2 = eval_with(&e, src, &o, s1, None).unwrap().state;
    assert_eq!(s2, serde_json::json!({"n": 2}));
}

#[test]
fn errors_are_visible_to_rules() {
    let e = engine();
    let o = obs(None, Some(FetchError { kind: FetchErrorKind::LeaderElection, message: "503".into() }));
    let src = r#"if !obs.ok { alert(#{summary: obs.error.kind}); }"#;
    let Verdict::Requests(r) = eval_with(&e, src, &o, serde_json::Value::Null, None).unwrap().verdict else { panic!() };
    assert_eq!(r[0].summary, "leader_election");
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let e = engine();
    let err = e.compile("p/r", "p", PathBuf::from("plugins/p/r.rhai"), "let a = 1;\nlet b = (2 + ;\n").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.to_string().starts_with("plugins/p/r.rhai:2:"), "{err}");
    assert!(err.message.starts_with("syntax error"), "{err}");
}

#[test]
fn endless_loops_are_stopped_by_the_operation_budget() {
    let limits = ScriptLimits { max_operations: 100_000, max_time: Duration::from_secs(60), ..Default::default() };
    let e = ScriptEngine::new(&limits);
    let err =
        eval_with(&e, "let i = 0;\nloop { i += 1; }", &obs(None, None), serde_json::Value::Null, None).unwrap_err();
    assert!(err.message.contains("exceeded its budget of 100000 operations"), "{err}");
    assert_eq!(err.line, 2);
}

#[test]
fn slow_rules_are_stopped_by_the_wall_clock() {
    let limits = ScriptLimits { max_time: Duration::from_millis(50), max_operations: u64::MAX, ..Default::default() };
    let e = ScriptEngine::new(&limits);
    let started = std::time::Instant::now();
    let err = eval_with(&e, "loop { }", &obs(None, None), serde_json::Value::Null, None).unwrap_err();
    assert!(err.message.contains("wall-clock limit of 50 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn huge_strings_are_refused() {
    let err = eval("let s = \"x\";\nloop { s += s; }").unwrap_err();
    assert!(err.message.contains("exceeds the limit"), "{err}");
}

#[test]
fn thrown_errors_are_reported_with_their_line() {
    let err = eval("let a = 1;\nthrow \"no jobs section\";").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(err.message.contains("rule threw: no jobs section"), "{err}");
    assert!(err.to_string().starts_with("rules/rule.rhai:2:1: rule `test/rule`:"), "{err}");
}

#[test]
fn errors_inside_functions_point_into_the_function() {
    let err = eval("fn f(x) {\n  x.nope()\n}\nf(1);").unwrap_err();
    assert_eq!(err.line, 2, "{err}");
    assert!(err.message.contains("in function f"), "{err}");
}

#[test]
fn scripts_have_no_file_access_or_eval() {
    let e = engine();
    // `import` is served only from packs' modules, resolved at compile time: a file path is refused there.
    assert!(e.compile("t/x", "t", PathBuf::from("x.rhai"), r#"import "std/fs" as fs;"#).is_err());
    assert!(e.compile("t/x", "t", PathBuf::from("x.rhai"), r#"eval("1")"#).is_err());
}

#[test]
fn follow_ups_are_bounded_and_stay_on_the_target() {
    let e = engine();
    let o = obs(Some(serde_json::json!({})), None);
    let src = r#"
        let a = http_get("/jobs/1/exceptions");
        let answers = [a.body.path];
        for i in 0..30 { let r = http_get("/x"); if !r.ok { answers.push(r.error.kind); break; } }
        alert(#{ summary: answers.len().to_string(), details: answers });
    "#;
    let Verdict::Requests(r) =
        eval_with(&e, src, &o, serde_json::Value::Null, Some(Box::new(Canned(vec![])))).unwrap().verdict
    else {
        panic!()
    };
    assert_eq!(r[0].details, serde_json::json!(["/jobs/1/exceptions", "limit"]));
    for bad in ["http://evil/x", "//evil/x", "relative", "/a/../../b"] {
        let err = eval(&format!("http_get({bad:?});")).unwrap_err();
        assert!(err.message.contains("http_get()"), "{bad}: {err}");
    }
}

#[test]
fn root_cause_reads_both_flink_shapes() {
    let src = r#"
        let v2 = #{ exceptionHistory: #{ entries: [#{ exceptionName: "x", stacktrace: "a\nCaused by: java.io.IOException: gone\n\tat z" }] } };
        let v1 = #{ "root-exception": "java.lang.RuntimeException: boom\n\tat q" };
        alert(#{ summary: root_cause(v2) + " | " + root_cause(v1) });
        if root_cause(#{ exceptionHistory: #{ entries: [] } }) != () { throw "expected ()"; }
    "#;
    let Verdict::Requests(r) = eval(src).unwrap().verdict else { panic!() };
    assert_eq!(r[0].summary, "java.io.IOException: gone | java.lang.RuntimeException: boom");
}

#[test]
fn every_registered_function_is_in_the_rule_authors_guide() {
    let guide = include_str!("../../docs/rules.md");
    let sigs = engine().registered_functions();
    assert!(sigs.len() >= 10, "{sigs:?}");
    for sig in &sigs {
        let name = sig.split('(').next().unwrap().trim_start_matches("fn ").trim();
        if name == "panic_for_test" {
            continue; // registered for the runtime's tests only
        }
        assert!(guide.contains(&format!("### `{name}(")), "docs/rules.md does not document `{name}` ({sig})");
    }
}

#[test]
fn functions_can_take_the_rule_variables_as_arguments() {
    let src = r#"
        fn pick(params, obs) { params.limit + obs.body.jobs.len() }
        alert(#{ summary: pick(params, obs).to_string() });
    "#;
    let Verdict::Requests(r) = eval(src).unwrap().verdict else { panic!() };
    assert_eq!(r[0].summary, "3");
}

#[test]
fn a_rule_file_without_code_does_not_compile_and_says_where() {
    let e = engine();
    for (src, at) in
        [("", "1:1"), ("// job-not-running\n\n", "1:1"), ("// helpers\nfn f() { alert(#{summary: \"x\"}) }\n", "2:1")]
    {
        let err = e.compile("p/r", "p", PathBuf::from("plugins/p/r.rhai"), src).unwrap_err();
        assert!(err.to_string().starts_with(&format!("plugins/p/r.rhai:{at}: rule `p/r`: the rule file ")), "{err}");
        assert!(err.message.contains("would resolve every alert it raised"), "{err}");
    }
}

/// Answers after `wait` of real time (the engine's budgets are on the real clock).
struct Slow(Duration);
impl FollowUp for Slow {
    fn get(&mut self, _: &str) -> FollowUpAnswer {
        std::thread::sleep(self.0);
        FollowUpAnswer {
            status: Some(200),
            body: Some(Arc::new(crate::model::Doc::from_json(&serde_json::json!({})))),
            error: None,
        }
    }
}

#[test]
fn follow_ups_count_against_the_total_time_budget() {
    // The computing limit alone would let ten slow follow-ups run (waiting is not computing); the total budget
    // does not.
    let limits = ScriptLimits {
        max_time: Duration::from_millis(100),
        max_total_time: Some(Duration::from_millis(250)),
        ..Default::default()
    };
    let e = ScriptEngine::new(&limits);
    let src = r#"
        let kinds = [];
        for i in 0..10 { let r = http_get("/x"); kinds.push(if r.ok { "ok" } else { r.error.kind }); }
        alert(#{ summary: "done", details: kinds });
    "#;
    let o = obs(Some(serde_json::json!({})), None);
    let started = std::time::Instant::now();
    let ev = eval_with(&e, src, &o, serde_json::Value::Null, Some(Box::new(Slow(Duration::from_millis(100))))).unwrap();
    let took = started.elapsed();
    let Verdict::Requests(r) = ev.verdict else { panic!() };
    let kinds: Vec<String> = serde_json::from_value(r[0].details.clone()).unwrap();
    let ok = kinds.iter().filter(|k| *k == "ok").count();
    assert!((2..=3).contains(&ok), "{kinds:?}");
    assert!(kinds[ok..].iter().all(|k| k == "limit"), "{kinds:?}");
    assert!(took < Duration::from_millis(700), "the follow-ups ran on past the budget: {took:?}");
    assert!(ScriptLimits::default().total_time() >= ScriptLimits::default().max_time);
}

#[test]
fn restart_job_carries_a_jar_and_a_parallelism() {
    let src = r#"
        restart_job(#{ job: "clicks", jid: "abc", strategy: "savepoint", jar: "clicks-2.jar", parallelism: 4 });
        restart_job(#{ job: "clicks", jar: "jobs/clicks-3.jar" });
        restart_job(#{ job: "clicks" });
    "#;
    let Verdict::Requests(r) = eval(src).unwrap().verdict else { panic!() };
    let o = |i: usize| match &r[i].kind {
        RequestKind::Restart { overrides, .. } => overrides.clone(),
        k => panic!("{k:?}"),
    };
    assert_eq!(o(0).jar, Some(crate::model::JarRef::Name("clicks-2.jar".into())));
    assert_eq!(o(0).parallelism, Some(4));
    assert_eq!(o(0).kind(), crate::model::RestartKind::Upgrade);
    assert_eq!(o(1).jar, Some(crate::model::JarRef::Path("jobs/clicks-3.jar".into())));
    assert!(o(2).is_empty());
    let e = eval(r#"restart_job(#{ job: "clicks", parallelism: 0 });"#).unwrap_err().to_string();
    assert!(e.contains("parallelism must be a positive integer"), "{e}");
    let e = eval(r#"restart_job(#{ job: "clicks", jar: "/etc/passwd" });"#).unwrap_err().to_string();
    assert!(e.contains("under the configuration's directory"), "{e}");
}
