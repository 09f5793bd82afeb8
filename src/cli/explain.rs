//! `warden explain <entry>`: why Warden ran a command or restarted a job — the journal entry, its decision record
//! (the rule, what it saw, the root exception) and, for a restart, the state it restored from and the job ids
//! before and after.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::model::{Asked, Decision};
use warden::store::{Explanation, RestartRecord, Store};

use super::Format;

/// A journal entry id as the user typed it: `12` or `#12` (as `warden history` shows it).
pub fn parse_id(s: &str) -> Result<i64, String> {
    s.trim().trim_start_matches('#').parse::<i64>().map_err(|_| {
        format!("`{s}` is not a journal entry id: give the number `warden history` shows in its first column (`#12` or `12`)")
    })
}

pub async fn run(config: &Path, entry: &str, format: Format, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let id = parse_id(entry).map_err(|e| anyhow::anyhow!(e))?;
    let (sc, dir) = super::store_location(config, state_dir)?;
    if !super::has_store(&sc, &dir) {
        anyhow::bail!("no journal in `{}` yet (has `warden run` been started?)", dir.display());
    }
    let found = tokio::task::spawn_blocking(move || Store::open_configured(&sc, &dir)?.explain(id)).await??;
    let Some(e) = found else {
        anyhow::bail!(
            "no journal entry #{id} (`warden history` lists the entries with their ids; old ones are pruned)"
        );
    };
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&e)?),
        Format::Text => outln!("{}", render(&e).trim_end()),
    }
    Ok(ExitCode::SUCCESS)
}

/// The explanation for people.
pub fn render(e: &Explanation) -> String {
    let mut o = String::new();
    let j = &e.entry;
    let what = if j.detail.is_empty() { j.action.to_string() } else { format!("{} {}", j.action, j.detail) };
    let _ = writeln!(o, "journal entry #{}: {what} — {} on {}", j.id, j.subject, j.target);
    line(&mut o, "time", &j.time);
    line(&mut o, "summary", &j.summary);
    let finished = j.finished.as_deref().map(|f| format!(" (finished {f})")).unwrap_or_default();
    line(&mut o, "outcome", &format!("{}{finished}", j.outcome));
    o.push('\n');
    match &e.decision {
        Some(d) => why(&mut o, d),
        None => {
            let _ = writeln!(o, "why");
            if j.action.is_relaunch() {
                let _ = writeln!(o, "  no decision record: this entry was journalled before Warden kept them");
            } else {
                let _ = writeln!(
                    o,
                    "  no decision record: Warden keeps one for command runs and restarts, not for `{}` entries",
                    j.action
                );
                line(&mut o, "rule", &j.rule);
                if !j.details.is_null() {
                    line(&mut o, "details", &compact(&j.details));
                }
            }
        }
    }
    if let Some(r) = &e.restart {
        o.push('\n');
        restart(&mut o, r, e);
    }
    o
}

fn line(o: &mut String, key: &str, value: &str) {
    let _ = writeln!(o, "  {key:<14} {value}");
}

fn why(o: &mut String, d: &Decision) {
    let _ = writeln!(o, "why");
    let by = if d.rule == "cli" { "an operator (warden restart)".to_string() } else { format!("rule {}", d.rule) };
    line(o, "asked by", &by);
    if !d.probe.is_empty() {
        line(o, "on", &format!("probe {} of target {}", d.probe, d.target));
    }
    line(o, "decided at", &d.decided_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let asked = match &d.asked {
        Asked::Restart { job, strategy } => format!("restart {job} ({strategy})"),
        Asked::Rescale { job, to } => format!("rescale {job} to parallelism {to}"),
        Asked::Run { command, vars } => {
            let vars: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("run `{command}` with {}", if vars.is_empty() { "no values".into() } else { vars.join(", ") })
        }
    };
    line(o, "asked for", &asked);
    line(o, "job id before", d.jid_before.as_deref().unwrap_or("(none named)"));
    line(o, "root cause", d.root_cause.as_deref().unwrap_or("(none reported)"));
    if let serde_json::Value::Object(m) = &d.details {
        if !m.is_empty() {
            let _ = writeln!(o, "  details");
            // (`root_cause` is shown above.)
            for (k, v) in m.iter().filter(|(k, _)| *k != "root_cause") {
                let _ = writeln!(o, "    {k}: {}", compact(v));
            }
        }
    }
    match &d.observed {
        Some(serde_json::Value::Object(m)) => {
            let _ = writeln!(o, "  observed (the job's entry in the answer the rule judged)");
            for (k, v) in m {
                let _ = writeln!(o, "    {k}: {}", compact(v));
            }
        }
        Some(v) => line(o, "observed", &compact(v)),
        None => {}
    }
    for n in &d.notes {
        line(o, "note", n);
    }
}

fn restart(o: &mut String, r: &RestartRecord, e: &Explanation) {
    let _ = writeln!(o, "restart #{} ({})", r.id, r.strategy);
    line(o, "job id before", if r.old_jid.is_empty() { "(none)" } else { &r.old_jid });
    let from = match (&r.location, &e.restored_from) {
        (Some(loc), Some(s)) => format!("{} {loc} (of run {}, recorded {})", s.kind, s.jid, s.time),
        (Some(loc), None) => loc.clone(),
        (None, _) if r.strategy == warden::model::RestartStrategy::Stateless => "nothing (stateless)".into(),
        (None, _) if r.step < warden::model::RestartStep::StateChosen => match r.outcome {
            None => "(not chosen yet)".into(),
            Some(_) => "nothing: the restart ended before a state was chosen".into(),
        },
        (None, _) => "nothing (no retained state was found; the job's fallback applied)".into(),
    };
    line(o, "restored from", &from);
    line(o, "job id after", r.new_jid.as_deref().unwrap_or("(none yet)"));
    line(o, "last step", &format!("{} at {}", r.step, r.updated));
    let outcome = r.outcome.as_ref().map(|x| x.to_string()).unwrap_or_else(|| "in progress".into());
    line(o, "outcome", &outcome);
}

/// A JSON value on one line: texts without quotes, the rest as JSON.
fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if s.is_empty() => "\"\"".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;
    use warden::model::{ActionKind, RestartResult, RestartStep, RestartStrategy};
    use warden::store::{JournalEntry, SavepointRecord};

    fn entry(action: ActionKind, detail: &str) -> JournalEntry {
        JournalEntry {
            id: 12,
            time: "2026-12-01T12:00:00.000Z".into(),
            rule: "flink/job-not-running".into(),
            target: "jm".into(),
            probe: "flink/jobs-overview".into(),
            subject: "clicks".into(),
            action,
            detail: detail.into(),
            severity: "critical".into(),
            summary: "restart clicks from its state (last run 7c2c FAILED)".into(),
            details: json!({"old_jid": "7c2c"}),
            outcome: "ok".into(),
            output: String::new(),
            finished: Some("2026-12-01T12:00:09.000Z".into()),
        }
    }

    fn decision() -> Decision {
        Decision {
            rule: "flink/job-not-running".into(),
            probe: "flink/jobs-overview".into(),
            target: "jm".into(),
            subject: "clicks".into(),
            decided_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap(),
            asked: Asked::Restart { job: "clicks".into(), strategy: RestartStrategy::LastCheckpoint },
            jid_before: Some("7c2c".into()),
            root_cause: Some("java.lang.RuntimeException: poison pill found at /data/flink/poison".into()),
            details: json!({"job": "clicks", "jid": "7c2c", "state": "FAILED", "end_time": 1795260347985_i64}),
            observed: Some(json!({"jid": "7c2c", "name": "clicks", "state": "FAILED",
                                  "tasks": {"total": 2, "failed": 1}})),
            notes: vec![],
        }
    }

    #[test]
    fn a_restart_explained() {
        let r = RestartRecord {
            id: 3,
            step: RestartStep::Done,
            location: Some("file:/data/flink/checkpoints/7c2c/chk-120".into()),
            new_jid: Some("9f1e".into()),
            outcome: Some(RestartResult::Ok),
            started: "2026-12-01T12:00:00.100Z".into(),
            updated: "2026-12-01T12:00:09.000Z".into(),
            ..RestartRecord::unsaved(12, "jm", "clicks", RestartStrategy::LastCheckpoint, "7c2c", &Default::default())
        };
        let s = SavepointRecord {
            target: "jm".into(),
            job: "clicks".into(),
            location: "file:/data/flink/checkpoints/7c2c/chk-120".into(),
            kind: "checkpoint".into(),
            jid: "7c2c".into(),
            time: "2026-12-01T12:00:01.000Z".into(),
            used_by: Some(3),
        };
        let e = Explanation {
            entry: entry(ActionKind::Restart, "last-checkpoint"),
            decision: Some(decision()),
            restart: Some(r),
            restored_from: Some(s),
        };
        insta::assert_snapshot!(render(&e));
    }

    #[test]
    fn a_command_run_explained() {
        let mut d = decision();
        d.asked = Asked::Run {
            command: "relaunch".into(),
            vars: [("job", "clicks"), ("jid", "7c2c")].into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        };
        d.observed = None;
        d.notes = vec!["the observation did not list job `clicks`".into()];
        let e = Explanation {
            entry: entry(ActionKind::Run, "relaunch"),
            decision: Some(d),
            restart: None,
            restored_from: None,
        };
        insta::assert_snapshot!(render(&e));
    }

    #[test]
    fn an_alert_has_no_record_and_says_why() {
        let e = Explanation {
            entry: entry(ActionKind::Alert, "firing"),
            decision: None,
            restart: None,
            restored_from: None,
        };
        let text = render(&e);
        assert!(text.contains("Warden keeps one for command runs and restarts"), "{text}");
    }

    #[test]
    fn a_restart_that_failed_before_choosing_a_state_says_so() {
        let r = RestartRecord {
            id: 4,
            step: RestartStep::SavepointTriggered,
            trigger_id: Some("t".into()),
            outcome: Some(RestartResult::Failed { step: "savepoint".into(), message: "timed out".into() }),
            started: "2026-12-01T12:00:00.100Z".into(),
            updated: "2026-12-01T12:05:00.000Z".into(),
            ..RestartRecord::unsaved(12, "jm", "clicks", RestartStrategy::Savepoint, "7c2c", &Default::default())
        };
        let e = Explanation {
            entry: entry(ActionKind::Restart, "savepoint"),
            decision: Some(decision()),
            restart: Some(r),
            restored_from: None,
        };
        let text = render(&e);
        assert!(text.contains("restored from  nothing: the restart ended before a state was chosen"), "{text}");
        assert!(text.contains("job id after   (none yet)"), "{text}");
        assert!(text.contains("outcome        failed at savepoint: timed out"), "{text}");
    }

    #[test]
    fn ids_as_history_shows_them() {
        assert_eq!(parse_id("#12"), Ok(12));
        assert_eq!(parse_id("12"), Ok(12));
        assert!(parse_id("clicks").unwrap_err().contains("`clicks` is not a journal entry id"));
    }
}
