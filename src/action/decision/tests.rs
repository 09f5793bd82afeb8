use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::TimeZone;
use serde_json::{json, Value};

use super::*;
use crate::model::{RestartStrategy, Severity};

fn fixture(name: &str) -> Value {
    let p = format!("{}/tests/fixtures/flink-2.3.0/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect(&p)).unwrap()
}

fn origin(body: Option<Value>) -> Origin {
    Origin {
        rule: "flink/job-not-running".into(),
        target: "jm".into(),
        target_url: "https://warden:hunter22@jm:8081/".into(),
        probe: "flink/jobs-overview".into(),
        time: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
        observed: body.map(|b| Arc::new(crate::model::Doc::from_json(&b))),
    }
}

fn req(kind: RequestKind, details: Value) -> ActionRequest {
    ActionRequest {
        kind,
        subject: "clicks".into(),
        severity: Severity::Critical,
        summary: "x".into(),
        details,
        pending: None,
        cooldown: None,
    }
}

fn restart(jid: &str) -> ActionRequest {
    req(
        RequestKind::Restart {
            job: "clicks".into(),
            jid: jid.into(),
            strategy: RestartStrategy::LastCheckpoint,
            overrides: Default::default(),
        },
        Value::Null,
    )
}

#[test]
fn a_restart_keeps_the_failed_run_s_entry_and_the_root_cause_of_the_rule_s_alert() {
    let body = fixture("jobs-overview-failed.json");
    let failed = body["jobs"].as_array().unwrap().iter().find(|j| j["state"] == "FAILED").unwrap().clone();
    let jid = failed["jid"].as_str().unwrap();
    let alert = req(
        RequestKind::Alert,
        json!({"job": "clicks", "jid": jid, "state": "FAILED", "root_cause": "java.lang.RuntimeException: poison pill"}),
    );
    let other =
        ActionRequest { subject: "orders".into(), ..req(RequestKind::Alert, json!({"root_cause": "not this one"})) };
    let r = restart(jid);
    let d = decide(&origin(Some(body.clone())), &r, &[other, alert, r.clone()]).unwrap();
    assert_eq!(d.rule, "flink/job-not-running");
    assert_eq!(d.probe, "flink/jobs-overview");
    assert_eq!(d.asked, Asked::Restart { job: "clicks".into(), strategy: RestartStrategy::LastCheckpoint });
    assert_eq!(d.jid_before.as_deref(), Some(jid));
    assert_eq!(d.root_cause.as_deref(), Some("java.lang.RuntimeException: poison pill"));
    assert_eq!(d.details["state"], "FAILED");
    // The run the rule named, not another run of the same name.
    assert_eq!(d.observed, Some(failed));
    assert!(d.notes.is_empty(), "{:?}", d.notes);
}

#[test]
fn without_a_job_id_the_newest_run_of_the_name_is_kept() {
    let body = fixture("jobs-overview.json");
    let newest = body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["name"] == "clicks")
        .max_by_key(|j| j["start-time"].as_i64().unwrap())
        .unwrap()
        .clone();
    let d = decide(&origin(Some(body)), &restart(""), &[]).unwrap();
    assert_eq!(d.jid_before, None);
    assert_eq!(d.observed, Some(newest));
}

#[test]
fn a_job_missing_from_the_observation_is_said_so() {
    let d = decide(&origin(Some(json!({"jobs": []}))), &restart(""), &[]).unwrap();
    assert_eq!(d.observed, None);
    assert_eq!(d.notes, ["the observation did not list job `clicks`"]);
    let d = decide(&origin(None), &restart(""), &[]).unwrap();
    assert_eq!((d.observed, d.notes.len()), (None, 0));
}

#[test]
fn alerts_and_log_lines_have_no_record() {
    assert_eq!(decide(&origin(None), &req(RequestKind::Alert, Value::Null), &[]), None);
    assert_eq!(decide(&origin(None), &req(RequestKind::Log, Value::Null), &[]), None);
}

#[test]
fn secrets_never_reach_the_record() {
    let vars: BTreeMap<String, String> = [
        ("job", "clicks"),
        ("jid", "abc"),
        ("api_token", "s3cr3t-token"),
        ("url", "https://ops:pa55word@flink.example/x?sig=s3cr3t"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let body = json!({"jobs": [{"jid": "abc", "name": "clicks", "state": "FAILED",
                                "conf": {"s3.secret-key": "AKIA-s3cr3t", "password": "pa55word"},
                                "link": "see http://u:pa55word@h/ now"}]});
    let r = req(
        RequestKind::Run { command: "relaunch".into(), vars },
        json!({"Authorization": "Bearer s3cr3t", "root_cause": "failed calling https://ops:pa55word@db/"}),
    );
    let d = decide(&origin(Some(body)), &r, &[]).unwrap();
    let text = serde_json::to_string(&d).unwrap();
    for secret in ["s3cr3t", "pa55word", "hunter22", "AKIA"] {
        assert!(!text.contains(secret), "`{secret}` leaked: {text}");
    }
    let Asked::Run { vars, .. } = &d.asked else { panic!() };
    assert_eq!(vars["api_token"], "***");
    assert_eq!(vars["url"], "https://flink.example/x?%E2%80%A6");
    assert_eq!(d.jid_before.as_deref(), Some("abc"));
    assert_eq!(d.observed.as_ref().unwrap()["conf"]["password"], "***");
    // The target's URL is not part of the record at all.
    assert!(!text.contains("jm:8081"), "{text}");
}

#[test]
fn a_huge_entry_is_cut_to_the_bound_and_the_record_says_so() {
    let tasks: Vec<Value> = (0..5000).map(|i| json!({"id": i, "trace": "x".repeat(300)})).collect();
    let body = json!({"jobs": [{"jid": "abc", "name": "clicks", "state": "FAILED", "vertices": tasks}]});
    let alert = req(RequestKind::Alert, json!({"root_cause": "y".repeat(50_000)}));
    let d = decide(&origin(Some(body)), &restart("abc"), &[alert]).unwrap();
    let observed = serde_json::to_vec(&d.observed).unwrap().len();
    let details = serde_json::to_vec(&d.details).unwrap().len();
    assert!(observed <= MAX_PART && details <= MAX_PART, "{observed} {details}");
    assert_eq!(d.observed.as_ref().unwrap()["state"], "FAILED", "the small fields stay");
    assert!(d.root_cause.as_ref().unwrap().len() < 2100);
    assert_eq!(d.notes.len(), 2, "{:?}", d.notes);
    assert!(d.notes.iter().any(|n| n.starts_with("the observation's entry of the job was")), "{:?}", d.notes);
}

#[test]
fn the_dispatcher_journals_a_restart_with_its_record_and_an_alert_without_one() {
    let store = crate::store::Store::in_memory();
    let mut d = crate::dispatch::Dispatcher::new(Default::default(), false, &store).unwrap();
    let body = fixture("jobs-overview-failed.json");
    let jid = body["jobs"].as_array().unwrap().iter().find(|j| j["state"] == "FAILED").unwrap()["jid"]
        .as_str()
        .unwrap()
        .to_string();
    let alert = req(RequestKind::Alert, json!({"jid": jid, "root_cause": "java.lang.RuntimeException: poison pill"}));
    let verdict = crate::script::Verdict::Requests(vec![alert, restart(&jid)]);
    let planned = d.process(&origin(Some(body)), &verdict, &store).unwrap();
    let restart_id = planned
        .iter()
        .find_map(|p| match p {
            crate::model::Planned::Restart { journal_id, origin, .. } => {
                assert_eq!(origin.observed, None, "the planned action does not keep the observation");
                Some(*journal_id)
            }
            _ => None,
        })
        .unwrap();
    let e = store.explain(restart_id).unwrap().unwrap();
    let rec = e.decision.unwrap();
    assert_eq!(rec.root_cause.as_deref(), Some("java.lang.RuntimeException: poison pill"));
    assert_eq!(rec.observed.unwrap()["jid"], jid.as_str());
    let alert_id = store.entries(None).unwrap().iter().find(|e| e.action == "alert").unwrap().id;
    assert_eq!(store.explain(alert_id).unwrap().unwrap().decision, None);
    assert_eq!(store.explain(999).unwrap(), None);
}
