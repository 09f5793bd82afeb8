//! Tests of the fake JobManager over real HTTP, including the check that it stays honest to
//! the responses captured from a real Flink 2.3.0 cluster.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{FakeJobManager, FlinkApiVersion, SavepointBehaviour};

macro_rules! fixture {
    ($name:literal) => {{
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/flink-2.3.0/", $name);
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str::<Value>(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }};
}

async fn start(v: FlinkApiVersion) -> FakeJobManager {
    FakeJobManager::start(v).await.expect("fake starts")
}

/// `(status, content type, parsed JSON body)`.
async fn call(fake: &FakeJobManager, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", fake.url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = resp.text().await.expect("body");
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, ct, v)
}

async fn get(fake: &FakeJobManager, path: &str) -> Value {
    let (status, ct, v) = call(fake, reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    assert!(ct.starts_with("application/json"), "GET {path}: {ct}");
    v
}

async fn post(fake: &FakeJobManager, path: &str, body: Value) -> (u16, Value) {
    let (s, _, v) = call(fake, reqwest::Method::POST, path, Some(body)).await;
    (s, v)
}

/// Every key path of `v`: `a.b`, array elements merged under `a[]`.
fn key_paths(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    out.insert(p.clone());
                    walk(x, &p, out);
                }
            }
            Value::Array(a) => {
                let p = format!("{prefix}[]");
                for x in a {
                    walk(x, &p, out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// Differences between the key paths of a sample and of the fake's answer, except `allowed`.
fn diff_keys(name: &str, sample: &Value, fake: &Value, allowed: &[&str]) -> Vec<String> {
    let s = key_paths(sample);
    let f = key_paths(fake);
    let mut problems = Vec::new();
    for k in s.difference(&f) {
        if !allowed.contains(&k.as_str()) {
            problems.push(format!("{name}: fake lacks `{k}`"));
        }
    }
    for k in f.difference(&s) {
        if !allowed.contains(&k.as_str()) {
            problems.push(format!("{name}: fake has `{k}` that the sample lacks"));
        }
    }
    problems
}

/// Records every key-path difference between a sample and the fake's answer.
fn check(problems: &mut Vec<String>, name: &str, sample: Value, answer: &Value) {
    problems.extend(diff_keys(name, &sample, answer, &[]));
}

fn string_values(v: &Value, field: &str) -> BTreeSet<String> {
    v.as_array().expect("array").iter().filter_map(|x| x[field].as_str().map(str::to_string)).collect()
}

fn jid_of(v: &Value) -> String {
    v["jobid"].as_str().expect("jobid").to_string()
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test]
async fn fake_stays_honest() {
    let fake = start(FlinkApiVersion::V2).await;
    let mut problems = Vec::new();

    // One CANCELED, one FINISHED and one RUNNING run of "clicks", as in the samples.
    let jar = fake.add_jar("clicks.jar", "demo.Clicks", "clicks");
    let canceled = fake.submit("clicks");
    fake.cancel(&canceled);
    let finished = fake.submit("clicks");
    fake.finish(&finished);
    let (s, run) = post(
        &fake,
        &format!("/jars/{jar}/run"),
        json!({"programArgsList": ["--rate", "5"], "savepointPath": "file:/data/flink/savepoints/savepoint-fa4906-cdc93e50293f"}),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let running = jid_of(&run);
    fake.fast_forward(&running, Duration::from_millis(3500));

    check(&mut problems, "overview.json", fixture!("overview.json"), &get(&fake, "/overview").await);
    check(&mut problems, "config.json", fixture!("config.json"), &get(&fake, "/config").await);
    check(&mut problems, "jobs.json", fixture!("jobs.json"), &get(&fake, "/jobs").await);
    let overview = get(&fake, "/jobs/overview").await;
    check(&mut problems, "jobs-overview.json", fixture!("jobs-overview.json"), &overview);
    let states: Vec<&str> = overview["jobs"].as_array().unwrap().iter().map(|j| j["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["RUNNING", "FINISHED", "CANCELED"], "newest first");
    check(&mut problems, "jars.json", fixture!("jars.json"), &get(&fake, "/jars").await);
    check(&mut problems, "taskmanagers.json", fixture!("taskmanagers.json"), &get(&fake, "/taskmanagers").await);
    let jm_config = get(&fake, "/jobmanager/config").await;
    let sample_config = fixture!("jobmanager-config.json");
    for k in string_values(&sample_config, "key").difference(&string_values(&jm_config, "key")) {
        problems.push(format!("jobmanager-config.json: fake lacks config key `{k}`"));
    }
    check(&mut problems, "jobmanager-config.json", sample_config, &jm_config);
    check(
        &mut problems,
        "job-running.json",
        fixture!("job-running.json"),
        &get(&fake, &format!("/jobs/{running}")).await,
    );
    check(
        &mut problems,
        "job-checkpoints.json",
        fixture!("job-checkpoints.json"),
        &get(&fake, &format!("/jobs/{running}/checkpoints")).await,
    );
    check(
        &mut problems,
        "job-checkpoints-config.json",
        fixture!("job-checkpoints-config.json"),
        &get(&fake, &format!("/jobs/{running}/checkpoints/config")).await,
    );
    check(
        &mut problems,
        "job-exceptions-empty.json",
        fixture!("job-exceptions-empty.json"),
        &get(&fake, &format!("/jobs/{running}/exceptions")).await,
    );
    let ids = get(&fake, &format!("/jobs/{running}/metrics")).await;
    let sample_ids = fixture!("job-metrics-ids.json");
    for k in string_values(&sample_ids, "id").difference(&string_values(&ids, "id")) {
        problems.push(format!("job-metrics-ids.json: fake lacks metric `{k}`"));
    }
    check(&mut problems, "job-metrics-ids.json", sample_ids, &ids);
    check(
        &mut problems,
        "job-metrics.json",
        fixture!("job-metrics.json"),
        &get(
            &fake,
            &format!("/jobs/{running}/metrics?get=numberOfCompletedCheckpoints,lastCheckpointSize,numRestarts,uptime"),
        )
        .await,
    );

    // The running job starts failing and restarting.
    fake.restart_loop(&running, "java.lang.RuntimeException", "poison pill found at /data/flink/poison");
    check(
        &mut problems,
        "jobs-overview-restarting.json",
        fixture!("jobs-overview-restarting.json"),
        &get(&fake, "/jobs/overview").await,
    );
    check(
        &mut problems,
        "job-restarting.json",
        fixture!("job-restarting.json"),
        &get(&fake, &format!("/jobs/{running}")).await,
    );
    fake.fast_forward(&running, Duration::from_millis(2500));
    check(
        &mut problems,
        "job-exceptions-history.json",
        fixture!("job-exceptions-history.json"),
        &get(&fake, &format!("/jobs/{running}/exceptions?maxExceptions=3")).await,
    );

    // A second run with restart strategy none fails before any checkpoint completes.
    let (s, run) =
        post(&fake, &format!("/jars/{jar}/run"), json!({"flinkConfiguration": {"restart-strategy.type": "none"}}))
            .await;
    assert_eq!(s, 200, "{run}");
    let failed = jid_of(&run);
    fake.set_checkpoints_failing(&failed, true);
    fake.fast_forward(&failed, Duration::from_millis(1500));
    fake.fail(&failed, "java.lang.RuntimeException", "poison pill found at /data/flink/poison");
    check(
        &mut problems,
        "jobs-overview-failed.json",
        fixture!("jobs-overview-failed.json"),
        &get(&fake, "/jobs/overview").await,
    );
    check(&mut problems, "job-failed.json", fixture!("job-failed.json"), &get(&fake, &format!("/jobs/{failed}")).await);
    check(
        &mut problems,
        "job-failed-checkpoints.json",
        fixture!("job-failed-checkpoints.json"),
        &get(&fake, &format!("/jobs/{failed}/checkpoints")).await,
    );
    check(
        &mut problems,
        "job-failed-exceptions.json",
        fixture!("job-failed-exceptions.json"),
        &get(&fake, &format!("/jobs/{failed}/exceptions?maxExceptions=3")).await,
    );

    // Error bodies: same keys, and for these two even the same text.
    let zero = "0".repeat(32);
    let (s, _, body) = call(&fake, reqwest::Method::GET, &format!("/jobs/{zero}"), None).await;
    assert_eq!(s, 404);
    assert_eq!(body, fixture!("error-job-not-found.json"));
    check(&mut problems, "error-job-not-found.json", fixture!("error-job-not-found.json"), &body);
    let (s, _, body) = call(&fake, reqwest::Method::GET, "/nope", None).await;
    assert_eq!(s, 404);
    assert_eq!(body, fixture!("error-not-found.json"));

    assert!(problems.is_empty(), "the fake drifted from Flink 2.3.0:\n{}", problems.join("\n"));
}

#[test]
fn samples_are_all_covered() {
    // Every sample must be used by `fake_stays_honest` (or listed here with a reason).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/flink-2.3.0");
    let this_file = include_str!("tests.rs");
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(dir).expect("fixtures dir") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !this_file.contains(&format!("fixture!(\"{name}\")")) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "samples not checked: {missing:?}");
}

#[tokio::test]
async fn job_lifecycle_and_task_counts() {
    let fake = start(FlinkApiVersion::V2).await;
    let jid = fake.submit("orders");
    assert!(is_hex32(&jid));
    assert_eq!(fake.job_state(&jid).as_deref(), Some("RUNNING"));
    let d = get(&fake, &format!("/jobs/{jid}")).await;
    assert_eq!(d["end-time"], -1);
    assert_eq!(d["timestamps"].as_object().unwrap().len(), 11);
    assert!(d["timestamps"]["RUNNING"].as_i64().unwrap() > 0);
    assert_eq!(d["timestamps"]["FAILED"], 0);
    assert_eq!(d["vertices"][0]["tasks"]["RUNNING"], 1);
    assert_eq!(get(&fake, &format!("/jobs/{jid}/status")).await, json!({"status": "RUNNING"}));

    fake.tasks_failing(&jid, 1);
    let o = get(&fake, "/jobs/overview").await;
    let j = &o["jobs"][0];
    assert_eq!(j["state"], "RUNNING");
    assert_eq!(j["tasks"]["total"], 2);
    assert_eq!(j["tasks"]["failed"], 1);
    assert_eq!(j["tasks"]["running"], 1);
    assert_eq!(get(&fake, &format!("/jobs/{jid}")).await["status-counts"]["FAILED"], 1);
    fake.recover(&jid);
    let o = get(&fake, "/jobs/overview").await;
    assert_eq!(o["jobs"][0]["tasks"]["failed"], 0);
    assert_eq!(o["jobs"][0]["tasks"]["running"], 2);

    let (s, _, body) = call(&fake, reqwest::Method::PATCH, &format!("/jobs/{jid}?mode=cancel"), None).await;
    assert_eq!((s, body), (202, json!({})));
    assert_eq!(fake.job_state(&jid).as_deref(), Some("CANCELED"));
    let d = get(&fake, &format!("/jobs/{jid}")).await;
    let end = d["end-time"].as_i64().unwrap();
    assert!(end > 0);
    assert_eq!(d["timestamps"]["CANCELED"], end);
    assert_eq!(d["duration"], end - d["start-time"].as_i64().unwrap());
    let (s, _, _) = call(&fake, reqwest::Method::PATCH, &format!("/jobs/{jid}"), None).await;
    assert_eq!(s, 202, "cancelling a canceled job is fine");

    let other = fake.submit("orders");
    fake.finish(&other);
    let (s, _, body) = call(&fake, reqwest::Method::PATCH, &format!("/jobs/{other}"), None).await;
    assert_eq!(s, 409);
    assert!(body["errors"][0].as_str().unwrap().contains("terminal state (FINISHED)"));
    let named = fake.jobs_named("orders");
    assert_eq!(named, vec![(other.clone(), "FINISHED".to_string()), (jid.clone(), "CANCELED".to_string())]);
    let overview = get(&fake, "/overview").await;
    assert_eq!(overview["jobs-cancelled"], 1);
    assert_eq!(overview["jobs-finished"], 1);
    assert_eq!(overview["jobs-running"], 0);
}

#[tokio::test]
async fn checkpoints_complete_every_second() {
    let fake = start(FlinkApiVersion::V2).await;
    let jid = fake.submit("clicks");
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["latest"]["completed"], Value::Null);
    assert_eq!(c["counts"]["completed"], 0);
    assert_eq!(c["history"], json!([]));
    let m = get(&fake, &format!("/jobs/{jid}/metrics?get=lastCompletedCheckpointId")).await;
    assert_eq!(m, json!([{"id": "lastCompletedCheckpointId", "value": "-1"}]));

    fake.fast_forward(&jid, Duration::from_millis(3500));
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["counts"]["completed"], 3);
    let latest = &c["latest"]["completed"];
    assert_eq!(latest["id"], 3);
    assert_eq!(latest["className"], "completed");
    assert_eq!(latest["discarded"], false);
    assert_eq!(latest["external_path"], format!("file:/tmp/warden-fake/checkpoints/{jid}/chk-3"));
    let ids: Vec<i64> = c["history"].as_array().unwrap().iter().map(|h| h["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [3, 2, 1]);
    assert_eq!(c["history"][1]["discarded"], true);
    let m = get(&fake, &format!("/jobs/{jid}/metrics?get=numberOfCompletedCheckpoints,nonsense,numRestarts")).await;
    assert_eq!(m, json!([{"id": "numberOfCompletedCheckpoints", "value": "3"}, {"id": "numRestarts", "value": "0"}]));

    fake.fast_forward(&jid, Duration::from_secs(60));
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["counts"]["completed"], 63);
    assert_eq!(c["history"].as_array().unwrap().len(), 10);
    assert_eq!(c["history"][0]["id"], 63);
    let d = get(&fake, &format!("/jobs/{jid}")).await;
    assert!(d["duration"].as_i64().unwrap() >= 63_500);

    // No checkpoints while not RUNNING.
    fake.fail(&jid, "java.lang.IllegalStateException", "bad");
    fake.fast_forward(&jid, Duration::from_secs(5));
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["counts"]["completed"], 63);

    // Failing checkpoints.
    let jid = fake.submit("slow");
    fake.set_checkpoints_failing(&jid, true);
    fake.fast_forward(&jid, Duration::from_millis(2100));
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["counts"]["failed"], 2);
    assert_eq!(c["latest"]["completed"], Value::Null);
    assert_eq!(c["latest"]["failed"]["className"], "failed");
    assert_eq!(c["summary"]["state_size"]["p50"], "NaN");
}

#[tokio::test]
async fn restart_loop_climbs_and_recovers() {
    let fake = start(FlinkApiVersion::V2).await;
    let jid = fake.submit("clicks");
    fake.restart_loop(&jid, "java.io.IOException", "disk full");
    assert_eq!(fake.job_state(&jid).as_deref(), Some("RESTARTING"));
    fake.fast_forward(&jid, Duration::from_millis(3200));
    let m = get(&fake, &format!("/jobs/{jid}/metrics?get=numRestarts")).await;
    assert_eq!(m, json!([{"id": "numRestarts", "value": "3"}]));
    assert_eq!(fake.num_restarts(&jid), Some(3));
    let e = get(&fake, &format!("/jobs/{jid}/exceptions")).await;
    let entries = e["exceptionHistory"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    let ts: Vec<i64> = entries.iter().map(|x| x["timestamp"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] > w[1]), "newest first: {ts:?}");
    assert!(entries[0]["stacktrace"].as_str().unwrap().starts_with("java.io.IOException: disk full\n\tat "));
    assert_eq!(entries[0]["exceptionName"], "java.io.IOException");
    let e = get(&fake, &format!("/jobs/{jid}/exceptions?maxExceptions=2")).await;
    assert_eq!(e["exceptionHistory"]["entries"].as_array().unwrap().len(), 2);
    assert_eq!(e["exceptionHistory"]["truncated"], true);
    let o = get(&fake, "/jobs/overview").await;
    assert_eq!(o["jobs"][0]["end-time"], -1);
    assert_eq!(o["jobs"][0]["tasks"]["failed"], 1);
    assert_eq!(o["jobs"][0]["tasks"]["running"], 0);

    fake.recover(&jid);
    assert_eq!(fake.job_state(&jid).as_deref(), Some("RUNNING"));
    fake.fast_forward(&jid, Duration::from_secs(10));
    assert_eq!(fake.num_restarts(&jid), Some(4), "stops climbing after recovery");
}

#[tokio::test]
async fn failed_job_has_flink_root_cause() {
    let fake = start(FlinkApiVersion::V2).await;
    let jid = fake.submit("clicks");
    fake.fail(&jid, "java.lang.NullPointerException", "user code bug");
    assert_eq!(fake.job_state(&jid).as_deref(), Some("FAILED"));
    let e = get(&fake, &format!("/jobs/{jid}/exceptions")).await;
    let root = &e["exceptionHistory"]["entries"][0];
    assert_eq!(root["exceptionName"], "org.apache.flink.runtime.JobException");
    let trace = root["stacktrace"].as_str().unwrap();
    assert!(trace.starts_with(
        "org.apache.flink.runtime.JobException: Recovery is suppressed by NoRestartBackoffTimeStrategy\n"
    ));
    assert!(trace.contains("\nCaused by: java.lang.NullPointerException: user code bug\n"));
    assert_eq!(root["concurrentExceptions"][0]["exceptionName"], "java.lang.NullPointerException");
    let d = get(&fake, &format!("/jobs/{jid}")).await;
    assert_eq!(d["end-time"], d["timestamps"]["FAILED"]);
    assert!(d["timestamps"]["FAILING"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn v1_and_v2_exception_shapes() {
    let fake = start(FlinkApiVersion::V1).await;
    let jid = fake.submit("clicks");
    let e = get(&fake, &format!("/jobs/{jid}/exceptions")).await;
    assert_eq!(e["root-exception"], Value::Null);
    assert_eq!(e["timestamp"], Value::Null);
    assert_eq!(e["all-exceptions"], json!([]));
    assert_eq!(e["truncated"], false);
    assert_eq!(e["exceptionHistory"]["entries"], json!([]));

    fake.restart_loop(&jid, "java.lang.RuntimeException", "boom");
    let e = get(&fake, &format!("/jobs/{jid}/exceptions")).await;
    assert!(e["root-exception"].as_str().unwrap().starts_with("java.lang.RuntimeException: boom"));
    assert!(e["timestamp"].as_i64().unwrap() > 0);
    let all = &e["all-exceptions"][0];
    for k in ["exception", "task", "location", "timestamp", "taskManagerId"] {
        assert!(all.get(k).is_some(), "all-exceptions lacks {k}: {all}");
    }
    let entry = &e["exceptionHistory"]["entries"][0];
    assert_eq!(entry["location"], "localhost:45909");
    assert!(entry.get("endpoint").is_none());
    // 1.x has none of the 2.x additions.
    let d = get(&fake, &format!("/jobs/{jid}")).await;
    assert!(d.get("pending-operators").is_none() && d.get("job-type").is_none());
    let o = get(&fake, "/jobs/overview").await;
    assert!(o["jobs"][0].get("pending-operators").is_none());
    assert_eq!(get(&fake, "/overview").await["flink-version"], "1.20.1");

    fake.set_version(FlinkApiVersion::V2);
    let e = get(&fake, &format!("/jobs/{jid}/exceptions")).await;
    let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["exceptionHistory"]);
    let entry = &e["exceptionHistory"]["entries"][0];
    assert_eq!(entry["endpoint"], "localhost:45909");
    assert!(entry.get("location").is_none());
    assert_eq!(get(&fake, &format!("/jobs/{jid}")).await["pending-operators"], 0);
}

#[tokio::test]
async fn jar_run_body_is_strict() {
    let fake = start(FlinkApiVersion::V2).await;
    let jar = fake.add_jar("clicks.jar", "demo.Clicks", "clicks");
    assert!(jar.ends_with("_clicks.jar"));
    let jars = get(&fake, "/jars").await;
    assert_eq!(jars["files"][0]["id"], jar.as_str());
    assert_eq!(jars["files"][0]["entry"][0]["name"], "demo.Clicks");
    let path = format!("/jars/{jar}/run");
    let rejected = [
        json!({"programArgs": "--rate 5"}),
        json!({"entryClass": "demo.Clicks", "foo": 1}),
        json!({"parallelism": "2"}),
        json!({"restoreMode": "KEEP"}),
        json!(["not", "an", "object"]),
    ];
    for body in &rejected {
        let (s, v) = post(&fake, &path, body.clone()).await;
        assert_eq!(s, 400, "{body} → {v}");
        let msg = v["errors"][0].as_str().unwrap();
        assert!(msg.contains("Request did not match expected format JarRunRequestBody."), "{msg}");
    }
    let (s, v) = post(&fake, &path, json!({"programArgs": "x"})).await;
    assert_eq!(s, 400);
    assert!(v["errors"][0].as_str().unwrap().contains("Unrecognized field \"programArgs\""));
    assert!(fake.jobs_named("clicks").is_empty());

    let good = json!({
        "entryClass": "demo.Clicks",
        "programArgsList": ["--rate", "5"],
        "parallelism": 2,
        "savepointPath": "s3://bucket/sp/savepoint-abcdef-0123456789ab",
        "allowNonRestoredState": false,
        "restoreMode": "NO_CLAIM",
        "claimMode": "NO_CLAIM",
        "flinkConfiguration": {"restart-strategy.type": "none"},
    });
    let (s, v) = post(&fake, &path, good.clone()).await;
    assert_eq!(s, 200, "{v}");
    let jid = jid_of(&v);
    assert!(is_hex32(&jid));
    assert_eq!(fake.jobs_named("clicks"), vec![(jid.clone(), "RUNNING".to_string())]);
    let o = get(&fake, "/jobs/overview").await;
    assert_eq!(o["jobs"][0]["tasks"]["total"], 4);
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["counts"]["restored"], 1);
    assert_eq!(c["latest"]["restored"]["external_path"], "s3://bucket/sp/savepoint-abcdef-0123456789ab");
    assert_eq!(c["latest"]["restored"]["is_savepoint"], true);
    let runs = fake.jar_runs();
    assert_eq!(runs.len(), rejected.len() + 2);
    assert_eq!(runs[0], json!({"programArgs": "--rate 5"}));
    assert_eq!(runs.last(), Some(&good));

    // Empty body is `{}`; unknown jar is a 400.
    let (s, _, v) = call(&fake, reqwest::Method::POST, &path, None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&fake, "/jars/nope_clicks.jar/run", json!({})).await;
    assert_eq!(s, 400);
    assert!(v["errors"][0].as_str().unwrap().contains("does not exist"));

    // 1.x: `programArgs` is fine, `claimMode` unknown.
    fake.set_version(FlinkApiVersion::V1);
    let (s, v) = post(&fake, &path, json!({"programArgs": "--rate 5"})).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = post(&fake, &path, json!({"claimMode": "CLAIM"})).await;
    assert_eq!(s, 400);
}

async fn poll(fake: &FakeJobManager, jid: &str, tid: &str) -> Value {
    get(fake, &format!("/jobs/{jid}/savepoints/{tid}")).await
}

#[tokio::test]
async fn savepoint_behaviours() {
    let fake = start(FlinkApiVersion::V2).await;

    // Stop with savepoint: IN_PROGRESS once, then COMPLETED, and the job FINISHED.
    let jid = fake.submit("clicks");
    let (s, v) = post(
        &fake,
        &format!("/jobs/{jid}/stop"),
        json!({"targetDirectory": "file:///data/flink/savepoints", "drain": false}),
    )
    .await;
    assert_eq!(s, 202);
    let tid = v["request-id"].as_str().unwrap().to_string();
    assert!(is_hex32(&tid));
    assert_eq!(poll(&fake, &jid, &tid).await, json!({"status": {"id": "IN_PROGRESS"}, "operation": null}));
    assert_eq!(fake.job_state(&jid).as_deref(), Some("RUNNING"));
    let done = poll(&fake, &jid, &tid).await;
    assert_eq!(done["status"]["id"], "COMPLETED");
    let location = done["operation"]["location"].as_str().unwrap().to_string();
    let prefix = format!("file:/data/flink/savepoints/savepoint-{}-", &jid[..6]);
    assert!(location.starts_with(&prefix), "{location}");
    let suffix = &location[prefix.len()..];
    assert!(suffix.len() == 12 && suffix.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(fake.job_state(&jid).as_deref(), Some("FINISHED"));
    assert_eq!(poll(&fake, &jid, &tid).await, done, "result is kept");
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["latest"]["savepoint"]["external_path"], location.as_str());
    assert_eq!(c["latest"]["savepoint"]["checkpoint_type"], "SYNC_SAVEPOINT");

    // Savepoint with cancel-job, completing on the first poll, default directory.
    fake.set_savepoint_behaviour(SavepointBehaviour::CompleteAfterPolls(0));
    let jid = fake.submit("clicks");
    let (s, v) = post(&fake, &format!("/jobs/{jid}/savepoints"), json!({"cancel-job": true})).await;
    assert_eq!(s, 202);
    let tid = v["request-id"].as_str().unwrap().to_string();
    let done = poll(&fake, &jid, &tid).await;
    assert!(done["operation"]["location"].as_str().unwrap().starts_with("file:/tmp/warden-fake/savepoints/savepoint-"));
    assert_eq!(fake.job_state(&jid).as_deref(), Some("CANCELED"));

    // Failure.
    fake.set_savepoint_behaviour(SavepointBehaviour::Fail("Checkpoint expired before completing.".into()));
    let jid = fake.submit("clicks");
    let (_, v) = post(&fake, &format!("/jobs/{jid}/stop"), json!({"targetDirectory": "/sp"})).await;
    let tid = v["request-id"].as_str().unwrap().to_string();
    let done = poll(&fake, &jid, &tid).await;
    assert_eq!(done["status"]["id"], "COMPLETED");
    let cause = &done["operation"]["failure-cause"];
    assert_eq!(cause["class"], "org.apache.flink.runtime.checkpoint.CheckpointException");
    assert!(cause["stack-trace"].as_str().unwrap().contains("Checkpoint expired before completing."));
    assert!(cause["serialized-throwable"].as_str().unwrap().len() > 8);
    assert!(done["operation"].get("location").is_none());
    assert_eq!(fake.job_state(&jid).as_deref(), Some("RUNNING"));

    // Never completes.
    fake.set_savepoint_behaviour(SavepointBehaviour::NeverComplete);
    let (_, v) = post(&fake, &format!("/jobs/{jid}/savepoints"), json!({"target-directory": "/sp"})).await;
    let tid = v["request-id"].as_str().unwrap().to_string();
    for _ in 0..5 {
        assert_eq!(poll(&fake, &jid, &tid).await["status"]["id"], "IN_PROGRESS");
    }

    // A job that is not running cannot take a savepoint.
    fake.set_savepoint_behaviour(SavepointBehaviour::CompleteAfterPolls(0));
    fake.restart_loop(&jid, "java.lang.RuntimeException", "boom");
    let (_, v) = post(&fake, &format!("/jobs/{jid}/stop"), json!({})).await;
    let tid = v["request-id"].as_str().unwrap().to_string();
    let done = poll(&fake, &jid, &tid).await;
    assert!(done["operation"]["failure-cause"]["stack-trace"]
        .as_str()
        .unwrap()
        .contains("Not all required tasks are currently running."));

    // Client-chosen trigger ids are idempotent.
    let chosen = "ab".repeat(16);
    for _ in 0..2 {
        let (s, v) = post(&fake, &format!("/jobs/{jid}/savepoints"), json!({"triggerId": chosen})).await;
        assert_eq!((s, v), (202, json!({"request-id": chosen})));
    }

    // Strict bodies, unknown trigger.
    let (s, v) = post(&fake, &format!("/jobs/{jid}/stop"), json!({"target-directory": "/sp"})).await;
    assert_eq!(s, 400);
    assert!(v["errors"][0]
        .as_str()
        .unwrap()
        .contains("Request did not match expected format StopWithSavepointRequestBody."));
    let (s, _) = post(&fake, &format!("/jobs/{jid}/savepoints"), json!({"targetDirectory": "/sp"})).await;
    assert_eq!(s, 400);
    let (s, _, _) =
        call(&fake, reqwest::Method::GET, &format!("/jobs/{jid}/savepoints/{}", "f".repeat(32)), None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn leader_election_answers_503_everywhere() {
    let fake = start(FlinkApiVersion::V2).await;
    let jid = fake.submit("clicks");
    fake.set_leader_election(true);
    let expected =
        json!({"errors": ["Service temporarily unavailable due to an ongoing leader election. Please refresh."]});
    for path in ["/overview", "/jobs/overview", &format!("/jobs/{jid}"), "/nope"] {
        let (s, ct, v) = call(&fake, reqwest::Method::GET, path, None).await;
        assert_eq!((s, &v), (503, &expected), "{path}");
        assert!(ct.starts_with("application/json"));
    }
    let (s, v) = post(&fake, &format!("/jobs/{jid}/stop"), json!({})).await;
    assert_eq!((s, v), (503, expected));
    fake.set_leader_election(false);
    assert_eq!(get(&fake, "/overview").await["jobs-running"], 1);
}

#[tokio::test]
async fn overrides_delay_and_request_log() {
    let fake = start(FlinkApiVersion::V2).await;
    fake.set_override("/overview", 200, "text/html", b"<html>login</html>".to_vec());
    fake.set_override("/jobs/overview", 500, "application/json", b"{\"errors\":[\"Internal server error.\"]}".to_vec());
    let (s, ct, v) = call(&fake, reqwest::Method::GET, "/overview", None).await;
    assert_eq!((s, ct.as_str(), v), (200, "text/html", json!("<html>login</html>")));
    let (s, _, v) = call(&fake, reqwest::Method::GET, "/jobs/overview", None).await;
    assert_eq!(s, 500);
    assert_eq!(v["errors"][0], "Internal server error.");
    let big = vec![b'x'; 3 << 20];
    fake.set_override("/config", 200, "application/json", big.clone());
    let resp = reqwest::get(format!("{}/config", fake.url())).await.unwrap();
    assert_eq!(resp.bytes().await.unwrap().len(), big.len());
    fake.clear_overrides();
    assert_eq!(get(&fake, "/overview").await["flink-version"], "2.3.0");

    fake.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    get(&fake, "/overview").await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    fake.set_delay(Duration::ZERO);
    let t = Instant::now();
    get(&fake, "/overview?x=1").await;
    assert!(t.elapsed() < Duration::from_millis(300));

    let log = fake.request_log();
    assert_eq!(log.first().map(String::as_str), Some("GET /overview"));
    assert_eq!(log.last().map(String::as_str), Some("GET /overview"));
    assert_eq!(fake.requests().last().map(String::as_str), Some("GET /overview?x=1"));
    assert_eq!(log.len(), 6);
}

#[tokio::test]
async fn errors_and_odd_requests() {
    let fake = start(FlinkApiVersion::V2).await;
    let (s, _, v) = call(&fake, reqwest::Method::POST, "/nope?a=1", Some(json!({}))).await;
    assert_eq!((s, v), (404, json!({"errors": ["Not found: /nope?a=1"]})));
    fake.set_web_ui(false);
    let (s, _, v) = call(&fake, reqwest::Method::GET, "/nope", None).await;
    assert_eq!((s, v), (404, json!({"errors": ["Not found: /nope"]})));
    let (s, _, v) = call(&fake, reqwest::Method::GET, "/jobs/not-a-job-id", None).await;
    assert_eq!(s, 400);
    assert!(v["errors"][0].as_str().unwrap().contains("Cannot resolve path parameter (jobid)"));
    let unknown = "1".repeat(32);
    let (s, _, v) = call(&fake, reqwest::Method::GET, &format!("/jobs/{unknown}/checkpoints"), None).await;
    assert_eq!(s, 404);
    assert!(v["errors"][0]
        .as_str()
        .unwrap()
        .starts_with(&format!("org.apache.flink.runtime.rest.NotFoundException: Job {unknown} not found\n\tat ")));
    assert_eq!(get(&fake, &format!("/jobs/{unknown}/metrics")).await, json!([]));
    let (s, _, _) = call(&fake, reqwest::Method::PATCH, &format!("/jobs/{unknown}"), None).await;
    assert_eq!(s, 404);
    let jid = fake.submit("clicks");
    let (s, _, _) = call(&fake, reqwest::Method::GET, &format!("/jobs/{jid}/exceptions?maxExceptions=x"), None).await;
    assert_eq!(s, 400);
    assert_eq!(get(&fake, &format!("/v1/jobs/{jid}/status")).await["status"], "RUNNING");
    let ids = get(&fake, &format!("/jobs/{jid}/metrics")).await;
    assert!(ids.as_array().unwrap().iter().all(|m| m.get("value").is_none()));
    let m = get(&fake, &format!("/jobs/{jid}/metrics?get=uptime,lastCheckpointSize")).await;
    assert!(m.as_array().unwrap().iter().all(|x| x["value"].is_string()));
}

#[tokio::test]
async fn failover_looks_like_a_new_leader() {
    let fake = start(FlinkApiVersion::V2).await;
    let jid = fake.submit("clicks");
    let done = fake.submit("old");
    fake.finish(&done);
    fake.fast_forward(&jid, Duration::from_millis(3500));
    fake.restart_loop(&jid, "java.lang.RuntimeException", "boom");
    fake.fast_forward(&jid, Duration::from_millis(2500));
    let before = get(&fake, &format!("/jobs/{jid}")).await;
    let tmpdir = fake.web_tmpdir();
    fake.failover();
    assert_ne!(fake.web_tmpdir(), tmpdir);
    let config = get(&fake, "/jobmanager/config").await;
    assert!(config
        .as_array()
        .unwrap()
        .iter()
        .any(|kv| kv["key"] == "web.tmpdir" && kv["value"] == fake.web_tmpdir().as_str()));
    assert_eq!(fake.job_state(&done), None);
    let after = get(&fake, &format!("/jobs/{jid}")).await;
    assert_eq!(after["state"], "RUNNING");
    assert!(after["start-time"].as_i64() > before["start-time"].as_i64());
    assert_eq!(fake.num_restarts(&jid), Some(0));
    let c = get(&fake, &format!("/jobs/{jid}/checkpoints")).await;
    assert_eq!(c["counts"]["completed"], 0);
    assert_eq!(c["latest"]["restored"]["id"], 3);
    assert_eq!(c["latest"]["restored"]["external_path"], format!("file:/tmp/warden-fake/checkpoints/{jid}/chk-3"));
    let e = get(&fake, &format!("/jobs/{jid}/exceptions")).await;
    assert_eq!(e["exceptionHistory"]["entries"], json!([]));
}

#[tokio::test]
async fn shutdown_and_drop_stop_the_server() {
    let fake = start(FlinkApiVersion::V2).await;
    let addr = fake.addr();
    get(&fake, "/overview").await;
    fake.shutdown_and_wait().await;
    assert!(reqwest::get(format!("http://{addr}/overview")).await.is_err());

    // The same address can be used again right away.
    let again = FakeJobManager::start_on(addr, FlinkApiVersion::V2).await.unwrap();
    let clone = again.clone();
    assert_eq!(get(&clone, "/jobmanager/config").await[11]["value"], addr.port().to_string());
    drop(again);
    get(&clone, "/overview").await;
    drop(clone);
    let mut refused = false;
    for _ in 0..50 {
        if reqwest::get(format!("http://{addr}/overview")).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "server still up after the last handle was dropped");
}
