//! Property tests with a fixed seed and a bounded number of cases: configuration values of every kind and JSON
//! bodies of every shape must give a clear error or a working daemon, never a panic — neither at load nor in the
//! date arithmetic, schedules and dispatching that use the values later.

use std::path::Path;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use warden::dispatch::Dispatcher;
use warden::model::{ActionRequest, Origin, Pending, RequestKind, Severity};
use warden::script::{TargetInfo, Verdict};
use warden::store::Store;

use crate::support::RULES_DIR;

fn runner(cases: u32) -> TestRunner {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

/// Duration texts: well-formed of every size (up to absurd), and garbage.
fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => ("[1-9][0-9]{0,2}", prop::sample::select(vec!["s", "m", "h", "d"])).prop_map(|(n, u)| format!("{n}{u}")),
        1 => ("[0-9]{1,14}", prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d", "w", "M", "y"]))
            .prop_map(|(n, u)| format!("{n}{u}")),
        1 => "[0-9a-z ]{0,12}",
        1 => Just("1000000y".to_string()),
    ]
}

fn size_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => ("[1-9][0-9]{0,3}", prop::sample::select(vec!["", "KiB", "MiB"])).prop_map(|(n, u)| format!("{n}{u}")),
        1 => ("[0-9]{1,22}", prop::sample::select(vec!["", "B", "KB", "KiB", "MB", "MiB", "GB", "GiB", "TB"]))
            .prop_map(|(n, u)| format!("{n}{u}")),
        1 => "[0-9a-zA-Z]{0,8}",
    ]
}

#[test]
fn configuration_values_of_every_size_load_or_fail_cleanly_and_never_panic_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.yaml");
    let fields = (
        (duration_text(), duration_text(), duration_text(), duration_text()),
        (duration_text(), duration_text(), duration_text(), duration_text()),
        (
            size_text(),
            0u32..5,
            prop_oneof![8 => Just("0 */5 * * * *".to_string()), 1 => "[0-9*/ ,-]{0,20}".prop_map(|s| s)],
        ),
    );
    let loaded_ok = std::cell::Cell::new(0u32);
    runner(256)
        .run(&fields, |((window, cooldown, repeat, every), (group_wait, backoff, grace, maint), (body, runs, cron))| {
            let text = format!(
                "state_dir: state\npack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - {{name: jm, url: \"http://127.0.0.1:1\", timeout: \"{grace}\"}}\n\
                 probes:\n  - {{name: p, every: \"{every}\", request: {{path: /x}}, max_body: \"{body}\", rules: [flink/restart-loop]}}\n  - {{name: c, cron: \"{cron}\", request: {{path: /x}}, rules: [flink/restart-loop]}}\n\
                 dispatch:\n  run_cooldown: \"{cooldown}\"\n  alert_repeat: \"{repeat}\"\n  storm_guard: {{max_runs: {runs}, window: \"{window}\"}}\n\
                 notify:\n  group_wait: \"{group_wait}\"\n  retry: {{initial_backoff: \"{backoff}\", max_backoff: \"{backoff}\"}}\n  maintenance:\n    - {{name: m, cron: \"0 0 3 * * *\", duration: \"{maint}\"}}\n\
                 packs:\n  flink:\n    every: \"{every}\"\n    params: {{not_running_for: \"{cooldown}\"}}\nshutdown_grace: \"{grace}\"\n"
            );
            std::fs::write(&path, &text).unwrap();
            let loaded = std::panic::catch_unwind(|| warden::plan::load(&path, None));
            let Ok(result) = loaded else { return Err(TestCaseError::fail(format!("load panicked on:\n{text}"))) };
            let Ok((plan, _engine)) = result else { return Ok(()) }; // a clear error is fine
            loaded_ok.set(loaded_ok.get() + 1);
            // Values that loaded are used without panicking: schedules, the dispatcher's arithmetic.
            let cfg = plan.loaded.config.clone();
            let used = std::panic::catch_unwind(move || {
                let far = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
                for j in &plan.jobs {
                    let _ = j.schedule.next_after(far);
                }
                let store = Store::in_memory();
                let mut d = Dispatcher::new(cfg.dispatch.clone(), false, &store).unwrap();
                for (i, at) in [0i64, 1, 3600, 86_400 * 365, 86_400 * 366 * 3].into_iter().enumerate() {
                    let origin = Origin {
                        rule: "flink/restart-loop".into(),
                        target: "jm".into(),
                        target_url: String::new(),
                        probe: "p".into(),
                        time: far + chrono::Duration::seconds(at),
                        observed: None,
                    };
                    let req = |kind| ActionRequest {
                        kind,
                        subject: "clicks".into(),
                        severity: Severity::Critical,
                        summary: "x".into(),
                        details: Value::Null,
                        pending: Some(Pending::Duration(cfg.dispatch.run_cooldown)),
                        cooldown: cfg.dispatch.alert_repeat,
                    };
                    let reqs = if i % 2 == 0 {
                        vec![req(RequestKind::Alert), req(RequestKind::Run { command: "c".into(), vars: Default::default() })]
                    } else {
                        vec![]
                    };
                    let _ = d.process(&origin, &Verdict::Requests(reqs), &store);
                }
            });
            if used.is_err() {
                return Err(TestCaseError::fail(format!("a value that loaded panicked later:\n{text}")));
            }
            Ok(())
        })
        .unwrap();
    eprintln!("{} of 256 generated configurations loaded", loaded_ok.get());
    assert!(
        loaded_ok.get() >= 5,
        "too few generated configurations loaded to test their later use: {}",
        loaded_ok.get()
    );
}

/// JSON of any shape, and JSON shaped like Flink's answers with values of the wrong types.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null)),
        "[a-zA-Z0-9 <>&\"'{}:-]{0,16}".prop_map(Value::from),
        prop::sample::select(vec!["RUNNING", "FAILED", "CANCELED", "RESTARTING", "FINISHED", "clicks", "a"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "jobs",
                    "jid",
                    "name",
                    "state",
                    "start-time",
                    "end-time",
                    "duration",
                    "tasks",
                    "failed",
                    "running",
                    "total",
                    "numRestarts",
                    "errors",
                    "x"
                ])
                .prop_map(str::to_string),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn json_bodies_of_any_shape_never_panic_the_shipped_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warden.yaml");
    std::fs::write(
        &path,
        format!(
            "state_dir: state\npack_paths: [\"{RULES_DIR}\"]\ntargets:\n  - {{name: jm, url: \"http://127.0.0.1:1\"}}\n\
             commands:\n  relaunch: {{argv: [\"true\", \"{{job}}\"]}}\npacks:\n  flink:\n    params: {{expected_jobs: [clicks, a], relaunch_command: relaunch}}\n"
        ),
    )
    .unwrap();
    let (plan, engine) = warden::plan::load(Path::new(&path), None).unwrap_or_else(|d| panic!("{d}"));
    let target = TargetInfo { name: "jm".into(), url: "http://127.0.0.1:1".into(), labels: Default::default() };
    let bodies =
        prop_oneof![json_value(), prop::collection::vec(json_value(), 0..8).prop_map(|jobs| json!({"jobs": jobs})),];
    let evaluated = std::cell::Cell::new(0u32);
    runner(128)
        .run(&bodies, |body| {
            for r in plan.rules.values() {
                let b = body.clone();
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    warden::ruletest::eval_once(&r.compiled, &r.params, &target, b, &engine)
                }));
                if run.is_err() {
                    return Err(TestCaseError::fail(format!("{} panicked on {body}", r.compiled.name)));
                }
                evaluated.set(evaluated.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert!(evaluated.get() >= 128 * 4, "every shipped rule judged every body: {}", evaluated.get());
}
