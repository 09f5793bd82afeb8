use super::*;
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn origin(at: i64) -> Origin {
    Origin {
        rule: "flink/job-not-running".into(),
        target: "jm".into(),
        target_url: "http://jm:8081".into(),
        probe: "flink/jobs-overview".into(),
        time: t(at),
        observed: None,
    }
}

fn alert(subject: &str, pending: Option<Pending>) -> ActionRequest {
    ActionRequest {
        kind: RequestKind::Alert,
        subject: subject.into(),
        severity: Severity::Critical,
        summary: format!("job {subject} FAILED"),
        details: serde_json::json!({"job": subject}),
        pending,
        cooldown: None,
    }
}

fn relaunch(subject: &str) -> ActionRequest {
    ActionRequest {
        kind: RequestKind::Run {
            command: "relaunch".into(),
            vars: [("job".to_string(), subject.to_string())].into_iter().collect(),
        },
        subject: subject.into(),
        severity: Severity::Warning,
        summary: format!("relaunch {subject}"),
        details: serde_json::Value::Null,
        pending: None,
        cooldown: None,
    }
}

fn policy() -> DispatchConfig {
    DispatchConfig::default()
}

/// Short description of planned actions: `firing:clicks`, `run:relaunch:clicks`.
fn kinds(p: &[Planned]) -> Vec<String> {
    p.iter()
        .map(|p| match p {
            Planned::Notify { record, .. } => format!("{}:{}", record.event, record.subject),
            Planned::Run { command, subject, .. } => format!("run:{command}:{subject}"),
            Planned::Restart { job, strategy, .. } => format!("restart:{strategy}:{job}"),
            Planned::Patch { path, body, .. } => format!("patch:{path}:{body}"),
            Planned::Rescale { job, to, .. } => format!("rescale:{to}:{job}"),
        })
        .collect()
}

fn step(d: &mut Dispatcher, s: &Store, at: i64, reqs: Vec<ActionRequest>) -> Vec<String> {
    kinds(&d.process(&origin(at), &Verdict::Requests(reqs), s).unwrap())
}

#[test]
fn an_alert_fires_once_and_resolves_once() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    assert_eq!(step(&mut d, &s, 0, vec![alert("clicks", None)]), ["firing:clicks"]);
    assert_eq!(step(&mut d, &s, 10, vec![alert("clicks", None)]), Vec::<String>::new());
    assert_eq!(step(&mut d, &s, 20, vec![]), ["resolved:clicks"]);
    assert_eq!(step(&mut d, &s, 30, vec![]), Vec::<String>::new());
    let j = s.entries(None).unwrap();
    assert_eq!(j.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["alert", "resolved"]);
    assert_eq!(j[1].summary, "resolved: job clicks FAILED");
}

#[test]
fn pending_for_a_duration_then_fire_and_a_blip_never_fires() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    let a = || alert("clicks", Some(Pending::Duration(Duration::from_secs(60))));
    assert!(step(&mut d, &s, 0, vec![a()]).is_empty());
    assert!(step(&mut d, &s, 30, vec![a()]).is_empty());
    // Cleared before `for` ran out: forgotten, no resolved message, and the timer restarts.
    assert!(step(&mut d, &s, 40, vec![]).is_empty());
    assert!(step(&mut d, &s, 50, vec![a()]).is_empty());
    assert!(step(&mut d, &s, 100, vec![a()]).is_empty());
    assert_eq!(step(&mut d, &s, 110, vec![a()]), ["firing:clicks"]);
    assert!(s.entries(None).unwrap().len() == 1);
}

#[test]
fn pending_for_a_number_of_evaluations() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    let a = || alert("jm", Some(Pending::Evaluations(3)));
    assert!(step(&mut d, &s, 0, vec![a()]).is_empty());
    assert!(step(&mut d, &s, 1, vec![a()]).is_empty());
    assert_eq!(step(&mut d, &s, 2, vec![a()]), ["firing:jm"]);
}

#[test]
fn a_skipped_evaluation_changes_nothing() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    assert_eq!(step(&mut d, &s, 0, vec![alert("clicks", None)]), ["firing:clicks"]);
    let p = d.process(&origin(10), &Verdict::Skipped("jobmanager down".into()), &s).unwrap();
    assert!(p.is_empty());
    assert_eq!(d.firing().len(), 1, "a skipped evaluation must not resolve the alert");
}

#[test]
fn reminders_follow_the_cooldown() {
    let s = Store::in_memory();
    let mut pol = policy();
    pol.alert_repeat = Some(Duration::from_secs(3600));
    let mut d = Dispatcher::new(pol, false, &s).unwrap();
    assert_eq!(step(&mut d, &s, 0, vec![alert("clicks", None)]), ["firing:clicks"]);
    assert!(step(&mut d, &s, 1800, vec![alert("clicks", None)]).is_empty());
    assert_eq!(step(&mut d, &s, 3600, vec![alert("clicks", None)]), ["reminder:clicks"]);
}

#[test]
fn storm_guard_gives_up_once_then_resumes_after_reset_or_window() {
    let s = Store::in_memory();
    let mut pol = policy();
    pol.run_cooldown = Duration::from_secs(60);
    pol.storm_guard = crate::config::StormGuardConfig { max_runs: 3, window: Duration::from_secs(1800) };
    let mut d = Dispatcher::new(pol, false, &s).unwrap();
    assert_eq!(step(&mut d, &s, 0, vec![relaunch("clicks")]), ["run:relaunch:clicks"]);
    assert!(step(&mut d, &s, 30, vec![relaunch("clicks")]).is_empty(), "cooldown");
    assert_eq!(step(&mut d, &s, 60, vec![relaunch("clicks")]), ["run:relaunch:clicks"]);
    // Exponential backoff: after two runs in the window the cooldown is 2 × 60 s.
    assert!(step(&mut d, &s, 120, vec![relaunch("clicks")]).is_empty(), "backoff");
    assert_eq!(step(&mut d, &s, 180, vec![relaunch("clicks")]), ["run:relaunch:clicks"]);
    // Then 4 × 60 s; the fourth attempt within 30 minutes: one "giving up" alert, and no run.
    assert!(step(&mut d, &s, 400, vec![relaunch("clicks")]).is_empty(), "backoff");
    assert_eq!(step(&mut d, &s, 420, vec![relaunch("clicks")]), ["giving_up:clicks"]);
    assert!(step(&mut d, &s, 700, vec![relaunch("clicks")]).is_empty());
    assert!(step(&mut d, &s, 1000, vec![relaunch("clicks")]).is_empty());
    let guard = s.entries(None).unwrap().into_iter().find(|e| e.action == "guard").unwrap();
    assert!(guard.summary.starts_with("giving up on clicks: 3 relaunches within 30m"), "{}", guard.summary);
    assert!(guard.summary.contains("warden guard reset --target jm --subject clicks"));
    // It says when relaunches resume: when the first of the three runs (at 0 s) leaves the 30 m window, not "now".
    let resumes = t(1800).format("no more until %Y-%m-%d %H:%M:%S UTC").to_string();
    assert!(guard.summary.contains(&resumes), "{} (want {resumes})", guard.summary);
    // Another job is not affected.
    assert_eq!(step(&mut d, &s, 1000, vec![relaunch("orders")]), ["run:relaunch:orders"]);
    // An operator resets the guard: relaunches resume.
    s.reset_guard("jm", "clicks", t(1050)).unwrap();
    assert_eq!(step(&mut d, &s, 1260, vec![relaunch("clicks")]), ["run:relaunch:clicks"]);

    // Without a reset, the window passing also lets it resume.
    let s = Store::in_memory();
    let mut d = Dispatcher::new(d.policy.clone(), false, &s).unwrap();
    for at in [0, 60, 180] {
        assert_eq!(step(&mut d, &s, at, vec![relaunch("clicks")]).len(), 1);
    }
    assert_eq!(step(&mut d, &s, 420, vec![relaunch("clicks")]), ["giving_up:clicks"]);
    assert!(step(&mut d, &s, 1700, vec![relaunch("clicks")]).is_empty());
    // 30 minutes after the first run only two runs remain in the window, and the backoff (2 × 60 s since the
    // last run) has passed: a run is allowed again.
    assert_eq!(step(&mut d, &s, 1801, vec![relaunch("clicks")]), ["run:relaunch:clicks"]);
}

#[test]
fn dry_run_journals_and_acts_never() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), true, &s).unwrap();
    assert!(step(&mut d, &s, 0, vec![alert("clicks", None), relaunch("clicks")]).is_empty());
    let j = s.entries(None).unwrap();
    assert_eq!(j.len(), 2);
    assert!(j.iter().all(|e| e.outcome == "dry-run"));
    // Dry runs do not count towards the storm guard.
    assert_eq!(s.runs_since("jm", "clicks", t(-1)).unwrap(), 0);
}

#[test]
fn a_restart_neither_refires_nor_forgets() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut d = Dispatcher::new(policy(), false, &s).unwrap();
        assert_eq!(step(&mut d, &s, 0, vec![alert("clicks", None)]), ["firing:clicks"]);
        let pend = alert("orders", Some(Pending::Duration(Duration::from_secs(60))));
        assert!(step(&mut d, &s, 0, vec![alert("clicks", None), pend]).is_empty());
    }
    let s = Store::open(dir.path()).unwrap();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    let pend = alert("orders", Some(Pending::Duration(Duration::from_secs(60))));
    // `clicks` is still firing: no second message. `orders` keeps its pending timer from before the restart.
    assert_eq!(step(&mut d, &s, 61, vec![alert("clicks", None), pend]), ["firing:orders"]);
    assert_eq!(step(&mut d, &s, 70, vec![]), ["resolved:clicks", "resolved:orders"]);
}

#[test]
fn a_step_that_fails_half_way_writes_nothing_and_is_decided_again() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    let both = || vec![alert("clicks", None), relaunch("clicks")];
    let fail_on = |what: &str, on: &str| {
        s.with_db(|c| {
            c.batch(&format!(
                "CREATE TRIGGER fail BEFORE INSERT ON {on} {what} BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ))
        })
        .unwrap()
    };
    let heal = || s.with_db(|c| c.batch("DROP TRIGGER fail")).unwrap();

    // The alert and the relaunch are journalled, then saving the cooldown state fails.
    fail_on("", "dispatch_state");
    let err = d.process(&origin(0), &Verdict::Requests(both()), &s).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(s.entries(None).unwrap().is_empty(), "a journalled relaunch without its cooldown state");
    assert!(s.dispatch_states().unwrap().is_empty());
    assert!(d.firing().is_empty(), "the in-memory state did not move either");
    heal();

    // The alert is journalled, then journalling the relaunch fails.
    fail_on("WHEN NEW.action = 'run'", "journal");
    assert!(d.process(&origin(5), &Verdict::Requests(both()), &s).is_err());
    assert!(s.entries(None).unwrap().is_empty(), "an alert journalled without its step");
    assert!(s.dispatch_states().unwrap().is_empty());
    heal();

    // Once the database works again, the next evaluation decides the same, once.
    assert_eq!(step(&mut d, &s, 10, both()), ["firing:clicks", "run:relaunch:clicks"]);
    assert_eq!(s.entries(None).unwrap().len(), 2);
    assert_eq!(s.dispatch_states().unwrap().len(), 1);
    assert!(step(&mut d, &s, 20, both()).is_empty(), "fired once, in cooldown");
}

#[test]
fn a_run_that_stops_being_asked_for_and_comes_back_still_waits_out_its_cooldown() {
    // A rule file saved in two steps can, for one evaluation, leave out its `run(...)` and then ask again.
    let s = Store::in_memory();
    let mut pol = policy();
    pol.run_cooldown = Duration::from_secs(120);
    let mut d = Dispatcher::new(pol, false, &s).unwrap();
    assert_eq!(step(&mut d, &s, 0, vec![relaunch("clicks")]), ["run:relaunch:clicks"]);
    assert!(step(&mut d, &s, 10, vec![]).is_empty(), "not asked: nothing happens");
    assert!(step(&mut d, &s, 20, vec![relaunch("clicks")]).is_empty(), "asked again within the cooldown: no 2nd run");
    // The memory survives a restart of Warden (it is in the saved state).
    let mut d = Dispatcher::new(d.policy.clone(), false, &s).unwrap();
    assert!(step(&mut d, &s, 60, vec![relaunch("clicks")]).is_empty());
    assert_eq!(step(&mut d, &s, 121, vec![relaunch("clicks")]), ["run:relaunch:clicks"], "after the cooldown");
    // Long after the storm guard's window, nothing of it is kept.
    assert!(step(&mut d, &s, 200, vec![]).is_empty());
    assert!(step(&mut d, &s, 121 + 1800 + 1, vec![]).is_empty());
    assert_eq!(
        s.dispatch_states().unwrap()[&("flink/job-not-running".to_string(), "jm".to_string())],
        serde_json::json!({})
    );
}

/// An alert about run `jid` of clicks (the Flink pack's `details.episode`).
fn alert_about_run(jid: &str) -> ActionRequest {
    ActionRequest {
        summary: format!("job clicks FAILED (run {jid})"),
        details: serde_json::json!({"job": "clicks", "jid": jid, "episode": jid}),
        ..alert("clicks", Some(Pending::Duration(Duration::from_secs(15))))
    }
}

fn restart_req(subject: &str) -> ActionRequest {
    ActionRequest {
        kind: RequestKind::Restart {
            job: subject.into(),
            jid: "a1".into(),
            strategy: crate::model::RestartStrategy::LastCheckpoint,
            overrides: Default::default(),
        },
        ..relaunch(subject)
    }
}

fn hands_off() -> DispatchConfig {
    DispatchConfig { hands_off: [("jm".to_string(), "flink-operator".to_string())].into(), ..policy() }
}

#[test]
fn relaunches_on_an_operator_managed_target_are_refused_and_journalled_once() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(hands_off(), false, &s).unwrap();
    // The alert goes out; neither the command nor the restart runs, however long it is asked.
    let both = || vec![alert("clicks", None), relaunch("clicks"), restart_req("clicks")];
    assert_eq!(step(&mut d, &s, 0, both()), vec!["firing:clicks"]);
    for at in [10, 200, 400, 4000] {
        assert!(step(&mut d, &s, at, both()).is_empty(), "at {at}");
    }
    let refused = |s: &Store| {
        s.entries(None).unwrap().into_iter().filter(|e| e.action == ActionKind::Refused).collect::<Vec<_>>()
    };
    let r = refused(&s);
    assert_eq!(r.len(), 2, "once for the run, once for the restart: {r:#?}");
    assert!(r.iter().all(|e| e.outcome.starts_with("refused: target `jm` is labelled `managed_by: flink-operator`")));
    assert!(r.iter().all(|e| e.details["managed_by"] == "flink-operator"));
    assert_eq!(s.runs_since("jm", "clicks", t(-1)).unwrap(), 0, "nothing counts as a relaunch");
    // Recovered, then failed again: a new incident is refused (and journalled) again, once.
    assert_eq!(step(&mut d, &s, 4010, vec![]), vec!["resolved:clicks"]);
    step(&mut d, &s, 4020, vec![relaunch("clicks")]);
    step(&mut d, &s, 4030, vec![relaunch("clicks")]);
    assert_eq!(refused(&s).len(), 3);
    // Another target is not affected.
    let mut other = origin(4040);
    other.target = "jm2".into();
    let planned = d.process(&other, &Verdict::Requests(vec![relaunch("clicks")]), &s).unwrap();
    assert_eq!(kinds(&planned), vec!["run:relaunch:clicks"]);
}

fn patch_req(nonce: i64) -> ActionRequest {
    ActionRequest {
        kind: RequestKind::Patch {
            path: "/apis/flink.apache.org/v1beta1/namespaces/flink/flinkdeployments/clicks".into(),
            body: serde_json::json!({"spec": {"restartNonce": nonce}}),
        },
        subject: "flink/clicks".into(),
        severity: Severity::Warning,
        summary: "restart clicks".into(),
        details: serde_json::Value::Null,
        pending: Some(Pending::Evaluations(2)),
        cooldown: None,
    }
}

#[test]
fn a_new_episode_of_a_firing_alert_is_announced_at_once_and_only_once() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    let both = |jid: &str| vec![alert_about_run(jid), relaunch("clicks")];
    assert_eq!(step(&mut d, &s, 0, both("a")), ["run:relaunch:clicks"]);
    assert_eq!(step(&mut d, &s, 20, both("a")), ["firing:clicks"]);
    // The relaunched run b fails: news at once, with its own summary, while the relaunch waits out its cooldown.
    let p = d.process(&origin(30), &Verdict::Requests(both("b")), &s).unwrap();
    assert_eq!(kinds(&p), ["firing:clicks"]);
    let Planned::Notify { record, .. } = &p[0] else { panic!("{p:?}") };
    assert_eq!(record.summary, "job clicks FAILED (run b)");
    assert_eq!(record.details["firing_since"], serde_json::json!(t(20)), "the alert has fired since the first run");
    // Asked again about the same run: nothing (no alert_repeat), and no second relaunch before the cooldown.
    assert!(step(&mut d, &s, 40, both("b")).is_empty());
    assert!(step(&mut d, &s, 50, both("b")).is_empty());
    // A request without an episode (or with the same one) is not news either.
    assert!(step(&mut d, &s, 60, vec![alert("clicks", None)]).is_empty());
    assert_eq!(step(&mut d, &s, 70, vec![]), ["resolved:clicks"]);
    let actions: Vec<String> = s.entries(None).unwrap().iter().map(|e| e.action.as_str().to_string()).collect();
    assert_eq!(actions, ["run", "alert", "alert", "resolved"]);
}

#[test]
fn an_episode_that_changes_before_the_alert_fired_fires_once_when_due() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    assert!(step(&mut d, &s, 0, vec![alert_about_run("a")]).is_empty());
    assert!(step(&mut d, &s, 10, vec![alert_about_run("b")]).is_empty());
    assert_eq!(step(&mut d, &s, 20, vec![alert_about_run("b")]), ["firing:clicks"]);
    assert!(step(&mut d, &s, 30, vec![alert_about_run("b")]).is_empty());
}

#[test]
fn a_patch_is_sent_once_per_nonce_and_journalled() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(hands_off(), false, &s).unwrap();
    let p = "patch:/apis/flink.apache.org/v1beta1/namespaces/flink/flinkdeployments/clicks";
    assert!(step(&mut d, &s, 0, vec![patch_req(5)]).is_empty(), "pending for 2 evaluations");
    assert_eq!(step(&mut d, &s, 10, vec![patch_req(5)]), vec![format!(r#"{p}:{{"spec":{{"restartNonce":5}}}}"#)]);
    // Asked again, long after any cooldown: not sent again. A hands-off target still gets patches (the operator's way).
    for at in [20, 300, 3000] {
        assert!(step(&mut d, &s, at, vec![patch_req(5)]).is_empty(), "at {at}");
    }
    let j: Vec<_> = s.entries(None).unwrap().into_iter().filter(|e| e.action == ActionKind::Patch).collect();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].details["patch"], serde_json::json!({"spec": {"restartNonce": 5}}));
    // A new nonce is a new action (after its own pending), counted by the storm guard like a run.
    step(&mut d, &s, 3010, vec![patch_req(6)]);
    assert_eq!(step(&mut d, &s, 3020, vec![patch_req(6)]).len(), 1);
    assert_eq!(s.runs_since("jm", "flink/clicks", t(0)).unwrap(), 2);
}

#[test]
fn a_patch_in_dry_run_is_journalled_only() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), true, &s).unwrap();
    let once = Some(Pending::Evaluations(1));
    assert!(step(&mut d, &s, 0, vec![ActionRequest { pending: once, ..patch_req(5) }]).is_empty());
    let j = s.entries(None).unwrap();
    assert_eq!(j.len(), 1);
    assert_eq!((j[0].action, j[0].outcome.as_str()), (ActionKind::Patch, "dry-run"));
}

fn rescale_req(subject: &str, to: crate::model::RescaleTo) -> ActionRequest {
    ActionRequest {
        kind: RequestKind::Rescale { job: subject.into(), jid: "a1".into(), to },
        summary: format!("rescale {subject} to parallelism {to}"),
        ..relaunch(subject)
    }
}

#[test]
fn rescales_wait_for_their_cooldown_and_count_in_the_storm_guard_with_restarts() {
    use crate::model::RescaleTo;
    let s = Store::in_memory();
    let mut pol = policy();
    pol.run_cooldown = Duration::from_secs(60);
    pol.storm_guard = crate::config::StormGuardConfig { max_runs: 3, window: Duration::from_secs(1800) };
    let mut d = Dispatcher::new(pol, false, &s).unwrap();
    let up = || vec![rescale_req("clicks", RescaleTo::Step(1))];
    assert_eq!(step(&mut d, &s, 0, up()), ["rescale:+1:clicks"]);
    let e = s.entries(None).unwrap().pop().unwrap();
    assert_eq!((e.action, e.detail.as_str(), e.outcome.as_str()), (ActionKind::Rescale, "+1", "started"));
    assert!(s.decision(e.id).unwrap().is_some(), "a rescale keeps its decision record");
    // A second rescale within the cooldown does not happen.
    assert!(step(&mut d, &s, 30, up()).is_empty(), "cooldown");
    assert_eq!(step(&mut d, &s, 60, up()), ["rescale:+1:clicks"]);
    // Two rescales and a restart of the same job within the window: the next relaunch of any kind gives up.
    assert_eq!(step(&mut d, &s, 300, vec![restart_req("clicks")]), ["restart:last-checkpoint:clicks"]);
    assert_eq!(step(&mut d, &s, 700, up()), ["giving_up:clicks"]);
    // A rescale the executor found nothing to do for (suppressed) does not count.
    let s = Store::in_memory();
    let mut d = Dispatcher::new(d.policy.clone(), false, &s).unwrap();
    for at in [0, 60, 180] {
        assert_eq!(step(&mut d, &s, at, up()).len(), 1, "at {at}");
        let id = s.entries(None).unwrap().pop().unwrap().id;
        s.finish(id, "suppressed: clicks already at its upper bound 4", "", t(at)).unwrap();
    }
    assert_eq!(step(&mut d, &s, 240, up()), ["rescale:+1:clicks"]);
}

#[test]
fn a_rescale_on_an_operator_managed_target_is_refused() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(hands_off(), false, &s).unwrap();
    assert!(step(&mut d, &s, 0, vec![rescale_req("clicks", crate::model::RescaleTo::Exactly(4))]).is_empty());
    let e = s.entries(None).unwrap().pop().unwrap();
    assert_eq!(e.action, ActionKind::Refused);
}

/// The daemon skips the store for verdicts `is_quiet` calls quiet: only those that can change nothing may be.
#[test]
fn a_quiet_verdict_is_one_that_changes_nothing() {
    let s = Store::in_memory();
    let mut d = Dispatcher::new(policy(), false, &s).unwrap();
    let empty = Verdict::Requests(vec![]);
    assert!(d.is_quiet(&origin(0), &empty));
    assert!(d.is_quiet(&origin(0), &Verdict::Skipped("no answer".into())));
    assert!(!d.is_quiet(&origin(0), &Verdict::Requests(vec![alert("clicks", None)])));
    // Pending (not fired yet): the next empty verdict must reach `process`, which forgets it.
    let pending = Some(Pending::Evaluations(3));
    assert_eq!(step(&mut d, &s, 0, vec![alert("clicks", pending)]), Vec::<String>::new());
    assert!(!d.is_quiet(&origin(10), &empty));
    assert_eq!(step(&mut d, &s, 10, vec![]), Vec::<String>::new());
    assert!(d.is_quiet(&origin(20), &empty));
    // Firing: the empty verdict resolves it, also after a restart of Warden (the state comes from the store).
    assert_eq!(step(&mut d, &s, 30, vec![alert("clicks", None)]), ["firing:clicks"]);
    let mut again = Dispatcher::new(policy(), false, &s).unwrap();
    assert!(!again.is_quiet(&origin(40), &empty));
    assert!(again.is_quiet(&Origin { target: "other".into(), ..origin(40) }, &empty));
    assert_eq!(step(&mut again, &s, 40, vec![]), ["resolved:clicks"]);
    assert!(again.is_quiet(&origin(50), &empty));
}

/// A run kept dormant for its cooldown changes nothing while it is remembered, and must be forgotten after.
#[test]
fn a_dormant_run_is_quiet_until_it_is_forgotten() {
    let s = Store::in_memory();
    let mut pol = policy();
    pol.run_cooldown = Duration::from_secs(120);
    let mut d = Dispatcher::new(pol, false, &s).unwrap();
    let empty = Verdict::Requests(vec![]);
    assert_eq!(step(&mut d, &s, 0, vec![relaunch("clicks")]), ["run:relaunch:clicks"]);
    assert!(!d.is_quiet(&origin(10), &empty), "the run is still asked for: the empty verdict makes it dormant");
    assert!(step(&mut d, &s, 10, vec![]).is_empty());
    let saved = s.dispatch_states().unwrap();
    assert!(d.is_quiet(&origin(20), &empty));
    assert!(step(&mut d, &s, 20, vec![]).is_empty());
    assert_eq!(s.dispatch_states().unwrap(), saved, "a quiet verdict wrote nothing");
    let forgotten = 1800 + 1;
    assert!(!d.is_quiet(&origin(forgotten), &empty), "past the storm guard's window it is forgotten");
    assert!(step(&mut d, &s, forgotten, vec![]).is_empty());
    assert!(d.is_quiet(&origin(forgotten + 10), &empty));
}
