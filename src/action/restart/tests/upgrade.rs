//! Upgrades, rescales and their rollbacks, against the fake JobManager: every branch, and a crash after every
//! step.

use super::*;
use crate::model::{JarRef, RestartKind, RestartOverrides, RestartStep};
use fake_flink::JarBehaviour;

impl Rig {
    /// A local `clicks-2.jar` that the fake runs as job `clicks`.
    fn new_jar(&self) -> std::path::PathBuf {
        let p = self.dir.path().join("clicks-2.jar");
        std::fs::write(&p, b"PK\x03\x04 not really a jar").unwrap();
        self.fake.on_upload("clicks-2.jar", "demo.Clicks2", "clicks");
        p
    }

    fn upgrade_to(&self) -> RestartOverrides {
        RestartOverrides {
            jar: Some(JarRef::Path(self.new_jar())),
            args: Some(vec!["--rate".into(), "200".into()]),
            ..Default::default()
        }
    }

    async fn change(&self, jid: &str, o: &RestartOverrides) -> RestartOutcome {
        let log = self.log.clone();
        let progress = move |_: &RestartRecord, m: &str| log.lock().unwrap().push(m.to_string());
        let ctx = self.ctx(&progress, CancellationToken::new());
        begin_with(&ctx, self.journal(), "jm", "clicks", jid, RestartStrategy::Savepoint, o).await
    }

    /// Resumes the one unfinished record, as the next Warden would.
    async fn resume(&self) -> RestartOutcome {
        let pending = self.store.unfinished_restarts().unwrap();
        assert_eq!(pending.len(), 1, "one restart in progress: {pending:?}");
        let progress = |_: &RestartRecord, _: &str| {};
        drive(&self.ctx(&progress, CancellationToken::new()), pending[0].clone()).await
    }

    /// The jar id of every `POST /jars/:id/run`, in order.
    fn runs_of(&self) -> Vec<String> {
        self.fake
            .request_log()
            .iter()
            .filter_map(|l| l.strip_prefix("POST /jars/").and_then(|r| r.strip_suffix("/run")).map(str::to_string))
            .collect()
    }
}

fn steps(r: &RestartRecord) -> Vec<RestartStep> {
    r.steps.iter().map(|s| s.step).collect()
}

#[tokio::test]
async fn an_upgrade_uploads_once_submits_from_the_savepoint_and_passes_probation() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    let o = r.upgrade_to();
    let rec = done(r.change(&old, &o).await);
    assert_eq!(rec.kind, RestartKind::Upgrade);
    assert_eq!(r.fake.uploads(), vec!["clicks-2.jar".to_string()], "uploaded exactly once");
    let new_jar = rec.jar_id.clone().unwrap();
    assert!(new_jar.ends_with("_clicks-2.jar"), "{new_jar}");
    assert_eq!(r.runs_of(), vec![new_jar], "exactly one submission, of the new jar");
    let body = &r.fake.jar_runs()[0];
    let loc = rec.location.clone().unwrap();
    assert!(loc.contains("savepoint-"), "{loc}");
    assert_eq!(body["savepointPath"], loc.as_str());
    assert_eq!(body["programArgsList"], serde_json::json!(["--rate", "200"]), "the overridden arguments");
    assert_eq!(body["entryClass"], "demo.Clicks", "the configured entry class where none was overridden");
    assert_eq!(r.fake.job_state(&old).as_deref(), Some("FINISHED"), "stop-with-savepoint ended the old run");
    assert_eq!(r.live(), vec![rec.new_jid.clone().unwrap()]);
    assert!(rec.prev_jar_id.as_deref().is_some_and(|j| j.ends_with("_clicks.jar")), "{:?}", rec.prev_jar_id);
    assert_eq!(rec.prev_parallelism, Some(1));
    use RestartStep::*;
    assert_eq!(
        steps(&rec),
        vec![Started, JarUploaded, SavepointTriggered, StateChosen, Submitting, Submitted, Probation, Done]
    );
    let (_, c) = conclusion(&RestartOutcome::Done(rec.clone())).unwrap();
    let (event, _, summary) = c.alert.unwrap();
    assert_eq!(event, "upgraded");
    assert!(summary.contains("clicks upgraded to") && summary.contains(&loc), "{summary}");
    // The record keeps what was asked.
    assert_eq!(r.store.restart(rec.id).unwrap().unwrap().overrides, o);
}

#[tokio::test]
async fn a_failed_upload_changes_nothing() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_override("/jars/upload", 500, "application/json", br#"{"errors":["Internal server error."]}"#.to_vec());
    let old = r.running_job();
    let (step, msg) = failed(r.change(&old, &r.upgrade_to()).await);
    assert_eq!(step, "upload");
    assert!(msg.contains("HTTP 500") && msg.contains("the job keeps running"), "{msg}");
    assert_eq!(r.fake.job_state(&old).as_deref(), Some("RUNNING"), "the old run was not touched");
    assert!(r.fake.jar_runs().is_empty());
    assert!(r.store.restart_in_progress("jm", "clicks").unwrap().is_none());
}

#[tokio::test]
async fn a_failed_savepoint_leaves_the_old_version_running_and_submits_nothing() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_savepoint_behaviour(SavepointBehaviour::Fail("Checkpoint expired before completing".into()));
    let old = r.running_job();
    let outcome = r.change(&old, &r.upgrade_to()).await;
    let (_, c) = conclusion(&outcome).unwrap();
    assert_eq!(c.alert.unwrap().0, "upgrade_failed");
    let (step, msg) = failed(outcome);
    assert_eq!(step, "savepoint");
    assert!(msg.contains("Checkpoint expired"), "{msg}");
    assert_eq!(r.fake.job_state(&old).as_deref(), Some("RUNNING"));
    assert!(r.fake.jar_runs().is_empty(), "no rollback either: nothing had changed");
}

#[tokio::test]
async fn a_new_version_that_fails_in_probation_is_rolled_back_to_the_previous_jar_from_the_same_savepoint() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_jar_behaviour(
        "clicks-2.jar",
        JarBehaviour::RestartLoopAfter {
            after: Duration::from_millis(150),
            class: "java.lang.IllegalStateException".into(),
            message: "v2 cannot read its config".into(),
        },
    );
    let old = r.running_job();
    let outcome = r.change(&old, &r.upgrade_to()).await;
    let (_, c) = conclusion(&outcome).unwrap();
    let rb = done(outcome);
    assert_eq!(rb.kind, RestartKind::Rollback);
    let up = r.store.restart(rb.rollback_of.expect("rolls back a record")).unwrap().unwrap();
    assert_eq!(up.kind, RestartKind::Upgrade);
    match &up.outcome {
        Some(crate::model::RestartResult::Failed { step, message }) => {
            assert_eq!(step, "probation");
            assert!(message.ends_with("rolled back"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let cause = rb.cause.clone().unwrap();
    assert!(cause.contains("java.lang.IllegalStateException: v2 cannot read its config"), "{cause}");
    assert_eq!(up.cause.as_deref(), Some(cause.as_str()));
    // Same savepoint, previous jar and parallelism, exactly one submission of each jar.
    assert_eq!(rb.location, up.location);
    assert_eq!(rb.jar_id, up.prev_jar_id);
    let runs = r.runs_of();
    assert_eq!(runs, vec![up.jar_id.clone().unwrap(), up.prev_jar_id.clone().unwrap()]);
    assert_eq!(r.fake.jar_runs()[1]["savepointPath"], up.location.clone().unwrap().as_str());
    assert_eq!(r.fake.jar_runs()[1]["parallelism"], 1, "the parallelism the old run had");
    assert_eq!(r.fake.jar_runs()[1]["programArgsList"], serde_json::json!(["--rate", "100"]), "the old arguments");
    assert_eq!(r.fake.job_state(up.new_jid.as_deref().unwrap()).as_deref(), Some("CANCELED"));
    assert_eq!(r.live(), vec![rb.new_jid.clone().unwrap()], "one live instance: the rolled-back one");
    let (event, severity, summary) = c.alert.unwrap();
    assert_eq!((event, severity), ("rolled_back", crate::model::Severity::Warning));
    assert!(summary.contains("v2 cannot read its config") && summary.contains("rolled back"), "{summary}");
    assert!(c.journal.starts_with("rolled back: "), "{}", c.journal);
    assert!(r.store.restart_in_progress("jm", "clicks").unwrap().is_none());
}

#[tokio::test]
async fn a_new_version_that_never_runs_or_whose_main_throws_is_rolled_back_too() {
    for (behaviour, cause) in [
        (
            JarBehaviour::FailsAfter {
                after: Duration::ZERO,
                class: "java.lang.NoSuchMethodError".into(),
                message: "demo.Clicks.parse".into(),
            },
            "java.lang.NoSuchMethodError: demo.Clicks.parse",
        ),
        (JarBehaviour::MainThrows("missing --topic".into()), "The main method caused an error: missing --topic"),
    ] {
        let r = rig(FlinkApiVersion::V2).await;
        r.fake.set_jar_behaviour("clicks-2.jar", behaviour);
        let old = r.running_job();
        let rb = done(r.change(&old, &r.upgrade_to()).await);
        assert_eq!(rb.kind, RestartKind::Rollback);
        assert!(rb.cause.as_deref().is_some_and(|c| c.contains(cause)), "{:?}", rb.cause);
        assert_eq!(r.runs_of().len(), 2, "one submission of each jar");
        assert_eq!(r.live(), vec![rb.new_jid.clone().unwrap()]);
    }
}

#[tokio::test]
async fn a_rollback_that_fails_alerts_and_stops() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_jar_behaviour("clicks-2.jar", JarBehaviour::MainThrows("v2 is broken".into()));
    r.fake.set_jar_behaviour("clicks.jar", JarBehaviour::MainThrows("and so is v1 now".into()));
    let old = r.running_job();
    let outcome = r.change(&old, &r.upgrade_to()).await;
    let (rec, c) = conclusion(&outcome).unwrap();
    assert_eq!(rec.kind, RestartKind::Rollback);
    let (event, severity, summary) = c.alert.unwrap();
    assert_eq!((event, severity), ("rollback_failed", crate::model::Severity::Critical));
    assert!(summary.contains("v2 is broken") && summary.contains("and so is v1 now"), "{summary}");
    let (step, _) = failed(outcome);
    assert_eq!(step, "submit");
    assert_eq!(r.runs_of().len(), 2, "no third submission, no loop");
    assert!(r.live().is_empty());
    assert!(r.store.unfinished_restarts().unwrap().is_empty(), "nothing left to resume");
}

#[tokio::test]
async fn a_savepoint_rescale_submits_the_same_jar_at_the_new_parallelism_and_checks_the_vertices() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    let o = RestartOverrides { parallelism: Some(3), ..Default::default() };
    let rec = done(r.change(&old, &o).await);
    assert_eq!(rec.kind, RestartKind::Rescale);
    assert!(r.fake.uploads().is_empty());
    assert_eq!(r.runs_of(), vec![rec.prev_jar_id.clone().unwrap()], "the same jar");
    assert_eq!(r.fake.jar_runs()[0]["parallelism"], 3);
    assert_eq!(r.fake.jar_runs()[0]["savepointPath"], rec.location.clone().unwrap().as_str());
    let p = FlinkClient::new(&r.client).vertex_parallelism(rec.new_jid.as_deref().unwrap()).await.unwrap();
    assert_eq!(p, vec![3, 3]);
    assert!(conclusion(&RestartOutcome::Done(rec)).unwrap().1.alert.unwrap().2.contains("rescaled to parallelism 3"));
}

#[tokio::test]
async fn a_rescale_whose_new_run_fails_goes_back_to_the_old_parallelism() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_jar_behaviour(
        "clicks.jar",
        JarBehaviour::RestartLoopAfter {
            after: Duration::from_millis(100),
            class: "java.lang.OutOfMemoryError".into(),
            message: "Java heap space".into(),
        },
    );
    let old = r.running_job();
    let o = RestartOverrides { parallelism: Some(4), ..Default::default() };
    let outcome = r.change(&old, &o).await;
    // The same jar fails again at the old parallelism (the fake cannot tell them apart): the rollback is verified
    // without probation and ends done or failed, but never loops.
    let rb = match outcome {
        RestartOutcome::Done(r) | RestartOutcome::Failed { record: r, .. } => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(rb.kind, RestartKind::Rollback);
    assert_eq!(r.fake.jar_runs()[0]["parallelism"], 4);
    assert_eq!(r.fake.jar_runs()[1]["parallelism"], 1);
    assert_eq!(r.fake.jar_runs().len(), 2);
}

#[tokio::test]
async fn a_crash_after_any_step_of_an_upgrade_or_its_rollback_resumes_with_one_submission_of_each_jar() {
    use RestartStep::*;
    let points = [
        (RestartKind::Upgrade, Started),
        (RestartKind::Upgrade, JarUploaded),
        (RestartKind::Upgrade, SavepointTriggered),
        (RestartKind::Upgrade, StateChosen),
        (RestartKind::Upgrade, Submitting),
        (RestartKind::Upgrade, Submitted),
        (RestartKind::Upgrade, Probation),
        (RestartKind::Rollback, StateChosen),
        (RestartKind::Rollback, Submitting),
        (RestartKind::Rollback, Submitted),
    ];
    for (kind, step) in points {
        let r = rig(FlinkApiVersion::V2).await;
        r.fake.set_jar_behaviour(
            "clicks-2.jar",
            JarBehaviour::RestartLoopAfter {
                after: Duration::from_millis(150),
                class: "java.lang.RuntimeException".into(),
                message: "v2 fails".into(),
            },
        );
        let old = r.running_job();
        let o = r.upgrade_to();
        if step == Started {
            // Saved at `started` before anything ran: a record that was begun and never driven.
            let rec = r
                .store
                .begin_restart_as(
                    r.journal(),
                    "jm",
                    "clicks",
                    RestartStrategy::Savepoint,
                    &old,
                    RestartKind::Upgrade,
                    &o,
                    Utc::now(),
                    &super::owner_id(),
                    chrono::Duration::seconds(30),
                )
                .unwrap()
                .unwrap();
            r.store.release_restart(rec.id, &super::owner_id()).unwrap();
        } else {
            super::crash_after(kind, step);
            let first = r.change(&old, &o).await;
            assert!(matches!(first, RestartOutcome::Interrupted(_)), "{kind} {step}: {first:?}");
        }
        let pending = r.store.unfinished_restarts().unwrap();
        assert_eq!((pending[0].kind, pending[0].step), (kind, step), "crashed where asked");
        let rb = done(r.resume().await);
        assert_eq!(rb.kind, RestartKind::Rollback, "{kind} {step}");
        assert_eq!(r.fake.uploads().len(), 1, "{kind} {step}: uploaded once");
        let runs = r.runs_of();
        assert_eq!(runs.len(), 2, "{kind} {step}: one submission of each jar: {runs:?}");
        assert_ne!(runs[0], runs[1]);
        assert_eq!(r.live(), vec![rb.new_jid.clone().unwrap()], "{kind} {step}");
        assert!(rb.cause.as_deref().is_some_and(|c| c.contains("v2 fails")), "{kind} {step}: {:?}", rb.cause);
    }
}

#[tokio::test]
async fn an_upload_made_before_a_crash_is_reused() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    let o = r.upgrade_to();
    let rec = r
        .store
        .begin_restart_as(
            r.journal(),
            "jm",
            "clicks",
            RestartStrategy::Savepoint,
            &old,
            RestartKind::Upgrade,
            &o,
            Utc::now() - chrono::Duration::seconds(1),
            &super::owner_id(),
            chrono::Duration::seconds(30),
        )
        .unwrap()
        .unwrap();
    r.store.release_restart(rec.id, &super::owner_id()).unwrap();
    // Warden uploaded the jar and died before recording the `jar-uploaded` step.
    FlinkClient::new(&r.client).upload_jar(&r.dir.path().join("clicks-2.jar")).await.unwrap();
    let rec = done(r.resume().await);
    assert_eq!(r.fake.uploads().len(), 1, "the upload was reused, not repeated");
    assert_eq!(r.runs_of(), vec![rec.jar_id.unwrap()]);
}

#[tokio::test]
async fn a_jar_named_on_the_cluster_is_found_and_an_unknown_one_changes_nothing() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    let o = RestartOverrides { jar: Some(JarRef::Name("clicks-9.jar".into())), ..Default::default() };
    let (step, msg) = failed(r.change(&old, &o).await);
    assert_eq!(step, "upload");
    assert!(msg.contains("no jar named `clicks-9.jar`"), "{msg}");
    assert_eq!(r.fake.job_state(&old).as_deref(), Some("RUNNING"));
    let id = r.fake.add_jar("clicks-9.jar", "demo.Clicks", "clicks");
    let rec = done(r.change(&old, &o).await);
    assert_eq!(rec.jar_id.as_deref(), Some(id.as_str()));
    assert_eq!(r.runs_of(), vec![id]);
}

#[tokio::test]
async fn after_an_upgrade_restarts_keep_the_new_release_and_a_failed_second_upgrade_rolls_back_to_it() {
    let r = rig(FlinkApiVersion::V2).await;
    let old = r.running_job();
    let mut o = r.upgrade_to();
    o.entry_class = Some("demo.Clicks2".into());
    let v2 = done(r.change(&old, &o).await);
    let v2_jar = v2.jar_id.clone().unwrap();
    // The upgraded job fails: the restart resubmits v2 with its entry class and arguments, not `jobs.clicks.jar`.
    let new = v2.new_jid.clone().unwrap();
    r.fake.fast_forward(&new, Duration::from_secs(3));
    r.fake.fail(&new, "java.lang.RuntimeException", "boom");
    let re = done(r.restart(&new, RestartStrategy::LastCheckpoint).await);
    assert_eq!(re.kind, RestartKind::Restart);
    assert_eq!(re.jar_id.as_deref(), Some(v2_jar.as_str()));
    let body = &r.fake.jar_runs()[1];
    assert_eq!(
        (body["entryClass"].as_str(), &body["programArgsList"]),
        (Some("demo.Clicks2"), &serde_json::json!(["--rate", "200"]))
    );
    // A third release fails: the rollback goes back to v2 (not to the configured clicks.jar), as it ran.
    let p = r.dir.path().join("clicks-3.jar");
    std::fs::write(&p, b"PK").unwrap();
    r.fake.on_upload("clicks-3.jar", "demo.Clicks3", "clicks");
    r.fake.set_jar_behaviour(
        "clicks-3.jar",
        JarBehaviour::FailsAfter { after: Duration::ZERO, class: "java.lang.Error".into(), message: "v3".into() },
    );
    let cur = re.new_jid.clone().unwrap();
    let v3 = RestartOverrides { jar: Some(JarRef::Path(p)), ..Default::default() };
    let rb = done(r.change(&cur, &v3).await);
    assert_eq!(rb.kind, RestartKind::Rollback);
    assert_eq!(rb.jar_id.as_deref(), Some(v2_jar.as_str()));
    let runs = r.runs_of();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(runs[3], v2_jar);
    let body = &r.fake.jar_runs()[3];
    assert_eq!(
        (body["entryClass"].as_str(), &body["programArgsList"]),
        (Some("demo.Clicks2"), &serde_json::json!(["--rate", "200"]))
    );
}

#[tokio::test]
async fn a_submission_whose_answer_is_lost_is_adopted_not_rolled_back_nor_repeated() {
    let r = rig(FlinkApiVersion::V2).await;
    r.fake.set_jar_behaviour("clicks-2.jar", JarBehaviour::AnswerLost);
    let old = r.running_job();
    let rec = done(r.change(&old, &r.upgrade_to()).await);
    assert_eq!(rec.kind, RestartKind::Upgrade, "not rolled back");
    assert_eq!(r.runs_of().len(), 1, "submitted once");
    assert_eq!(r.live(), vec![rec.new_jid.clone().unwrap()]);
    assert!(r.log.lock().unwrap().iter().any(|m| m.contains("adopting it")), "{:?}", r.log.lock().unwrap());
}
