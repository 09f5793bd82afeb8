use chrono::TimeZone;
use serde_json::{json, Value};

use super::*;

fn fixture(name: &str) -> Value {
    let p = format!("{}/tests/fixtures/flink-2.3.0/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&p).expect(&p)).unwrap()
}

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap()
}

#[test]
fn checkpoint_config_of_a_real_2_3_job() {
    let c = checkpointing(&fixture("job-checkpoints-config.json"));
    assert_eq!(
        c,
        Checkpointing::On {
            mode: Some(CheckpointMode::ExactlyOnce),
            interval_ms: 2000,
            storage: Some("FileSystemCheckpointStorage".into()),
            state_backend: Some("HashMapStateBackend".into()),
            retained: Some(true),
        }
    );
}

#[test]
fn checkpoint_config_of_1_15_shape_and_upper_case_mode() {
    // Flink 1.15's CheckpointConfigInfo: no changelog fields; the docs write the mode in upper case.
    let v = json!({"mode": "AT_LEAST_ONCE", "interval": 60000, "timeout": 600000, "min_pause": 0,
                   "max_concurrent": 1, "externalization": {"enabled": true, "delete_on_cancellation": true},
                   "state_backend": "EmbeddedRocksDBStateBackend", "checkpoint_storage": "JobManagerCheckpointStorage",
                   "unaligned_checkpoints": false, "tolerable_failed_checkpoints": 0,
                   "aligned_checkpoint_timeout": 0, "checkpoints_after_tasks_finish": true});
    let Checkpointing::On { mode, interval_ms, retained, storage, .. } = checkpointing(&v) else { panic!() };
    assert_eq!(mode, Some(CheckpointMode::AtLeastOnce));
    assert_eq!(interval_ms, 60000);
    assert_eq!(retained, Some(false), "deleted on cancellation: not retained");
    assert_eq!(storage.as_deref(), Some("JobManagerCheckpointStorage"));
    assert!(matches!(checkpointing(&json!({"errors": ["x"]})), Checkpointing::Unknown { .. }));
}

#[test]
fn checkpoint_stats_of_a_real_2_3_job() {
    let v = fixture("job-checkpoints.json");
    let latest_ack = v.pointer("/latest/completed/latest_ack_timestamp").unwrap().as_i64().unwrap();
    let now = ms(latest_ack + 7_400);
    let s = checkpoint_stats(&v, now);
    let last = s.last.unwrap();
    assert_eq!(last.id, 120);
    assert_eq!(last.age_s, 7);
    assert_eq!(last.completed_at, ms(latest_ack));
    assert_eq!(
        last.external_path.as_deref(),
        Some("file:/data/flink/checkpoints/7c2c64a25050d11d5b580a74e255d2e3/chk-120")
    );
    assert_eq!(s.size, Some(2010));
    // The history lists chk-111 … chk-120, two seconds apart, all 2010 bytes.
    let t = s.trend.unwrap();
    assert_eq!((t.samples, t.from_bytes, t.to_bytes, t.span_s), (10, 2010, 2010, 18));
    assert_eq!(t.change_pct(), Some(0.0));
}

#[test]
fn a_job_without_a_completed_checkpoint_has_no_age_size_or_trend() {
    let s = checkpoint_stats(&fixture("job-failed-checkpoints.json"), Utc::now());
    assert_eq!((s.last, s.size, s.trend), (None, None, None));
}

#[test]
fn a_growing_state_and_the_1_14_type_tag() {
    // `@class` (before FLINK-25808) instead of `className`, a savepoint in between that does not count, newest first.
    let c = |id: u64, size: u64, t: i64, savepoint: bool| {
        json!({"@class": "completed", "id": id, "status": "COMPLETED", "is_savepoint": savepoint,
               "trigger_timestamp": t - 5, "latest_ack_timestamp": t, "state_size": size, "external_path": "<checkpoint-not-externally-addressable>"})
    };
    let v = json!({"latest": {"completed": c(3, 300, 3_000_000, false)},
                   "history": [c(3, 300, 3_000_000, false), c(2, 9999, 2_000_000, true), c(1, 200, 1_000_000, false),
                               {"@class": "failed", "id": 4, "status": "FAILED"}]});
    let s = checkpoint_stats(&v, ms(3_060_000));
    assert_eq!(s.last.as_ref().unwrap().external_path, None, "not externally addressable");
    assert_eq!(s.last.unwrap().age_s, 60);
    let t = s.trend.unwrap();
    assert_eq!((t.samples, t.from_bytes, t.to_bytes, t.span_s), (2, 200, 300, 2000));
    assert_eq!(t.change_pct(), Some(50.0));
}

#[test]
fn the_newest_run_of_each_name() {
    let runs = newest_runs(&fixture("jobs-overview.json"));
    assert_eq!(runs, [("clicks".into(), "7c2c64a25050d11d5b580a74e255d2e3".into(), "RUNNING".into())]);
    assert!(newest_runs(&json!({"errors": []})).is_empty());
}

fn job(name: &str, state: &str) -> JobReport {
    JobReport {
        name: name.into(),
        jid: "7c2c64a25050d11d5b580a74e255d2e3".into(),
        state: state.into(),
        checkpointing: Checkpointing::On {
            mode: Some(CheckpointMode::ExactlyOnce),
            interval_ms: 2000,
            storage: Some("FileSystemCheckpointStorage".into()),
            state_backend: Some("HashMapStateBackend".into()),
            retained: Some(true),
        },
        last_checkpoint: Some(LastCheckpoint {
            id: 120,
            completed_at: ms(1_795_260_339_106),
            age_s: 7,
            external_path: None,
        }),
        state_size: Some(3 * 1024 * 1024 + 400_000),
        state_size_trend: Some(SizeTrend { samples: 10, from_bytes: 3_000_000, to_bytes: 3_545_728, span_s: 18 }),
        restarts_last_day: Some(2),
        error: None,
    }
}

#[test]
fn the_table() {
    let report = Report {
        generated_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
        targets: vec![
            TargetReport {
                target: "prod".into(),
                flink_version: Some("2.3.0".into()),
                error: None,
                jobs: vec![
                    job("clicks", "RUNNING"),
                    JobReport {
                        checkpointing: Checkpointing::Off,
                        last_checkpoint: None,
                        state_size: None,
                        state_size_trend: None,
                        restarts_last_day: Some(0),
                        ..job("orders-enrichment", "FAILED")
                    },
                ],
            },
            TargetReport {
                target: "legacy".into(),
                flink_version: Some("1.15.4".into()),
                error: None,
                jobs: vec![JobReport {
                    checkpointing: Checkpointing::Unknown { error: "HTTP 500: boom".into() },
                    error: Some("target `legacy` GET /jobs/x/checkpoints: timed out".into()),
                    restarts_last_day: None,
                    ..job("payments", "RESTARTING")
                }],
            },
            TargetReport {
                target: "staging".into(),
                flink_version: None,
                error: Some("target `staging` GET /overview: connection refused".into()),
                jobs: vec![],
            },
            TargetReport { target: "empty".into(), flink_version: Some("2.0.0".into()), error: None, jobs: vec![] },
        ],
    };
    insta::assert_snapshot!(render_table(&report));
}
