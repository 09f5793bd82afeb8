//! `warden history`: the journal, restarts and savepoint history.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::store::{JournalFilter, Store};

use super::Format;

/// What `warden history` was asked.
pub struct Args {
    pub format: Format,
    pub limit: Option<usize>,
    pub state_dir: Option<PathBuf>,
    pub restarts: bool,
    pub savepoints: bool,
    pub job: Option<String>,
    pub rule: Option<String>,
    pub kind: Option<warden::model::ActionKind>,
    pub since: Option<String>,
    pub follow: bool,
}

pub async fn run(config: &Path, a: Args) -> anyhow::Result<ExitCode> {
    let dir = super::state_dir(config, a.state_dir)?;
    if !dir.join("warden.db").is_file() {
        anyhow::bail!("no journal in `{}` yet (has `warden run` been started?)", dir.display());
    }
    let store = Store::open(&dir)?;
    if a.restarts {
        for r in store.restarts(a.limit)? {
            if a.job.as_deref().is_some_and(|j| j != r.job) {
                continue;
            }
            match a.format {
                Format::Json => outln!("{}", serde_json::to_string(&r)?),
                Format::Text => outln!("{}", render_restart(&r)),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.savepoints {
        for s in store.savepoints(None, a.job.as_deref())? {
            match a.format {
                Format::Json => outln!("{}", serde_json::to_string(&s)?),
                Format::Text => outln!(
                    "{}  {:<14} {:<16} {:<10} {}  (run {}{})",
                    s.time,
                    s.target,
                    s.job,
                    s.kind,
                    s.location,
                    s.jid,
                    s.used_by.map(|r| format!(", used by restart #{r}")).unwrap_or_default()
                ),
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut filter = JournalFilter { job: a.job.clone(), rule: a.rule.clone(), kind: a.kind, ..Default::default() };
    if let Some(s) = &a.since {
        filter.since =
            Some(warden::server::api::parse_since(s, chrono::Utc::now()).map_err(|e| anyhow::anyhow!("--since: {e}"))?);
    }
    let filtered = filter != JournalFilter::default();
    let entries = store.find_entries(&filter, a.limit)?;
    if entries.is_empty() && a.format == Format::Text {
        if filtered {
            outln!("(no journal entries match)");
        } else {
            outln!("(the journal is empty: Warden has not acted yet)");
        }
    }
    let mut last = entries.last().map(|e| e.id).unwrap_or(0);
    print_entries(entries, a.format)?;
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: look for new entries every second until Ctrl-C.
    let store = std::sync::Arc::new(store);
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
        let f = JournalFilter { after_id: Some(last), ..filter.clone() };
        let new = store.call(move |s| s.find_entries(&f, None)).await?;
        if let Some(e) = new.last() {
            last = e.id;
        }
        print_entries(new, a.format)?;
    }
}

fn print_entries(entries: Vec<warden::store::JournalEntry>, format: Format) -> anyhow::Result<()> {
    for e in entries {
        match format {
            Format::Json => outln!("{}", serde_json::to_string(&e)?),
            Format::Text => {
                let what = if e.detail.is_empty() || e.detail == e.action.as_str() {
                    e.action.to_string()
                } else {
                    format!("{} {}", e.action, e.detail)
                };
                // The id first: `warden explain <id>` takes it.
                outln!(
                    "#{:<5} {}  {:<18} {:<28} {:<14} {:<14} {:<24} {}",
                    e.id,
                    e.time,
                    what,
                    e.rule,
                    e.target,
                    e.subject,
                    e.outcome,
                    e.summary
                );
            }
        }
    }
    Ok(())
}

/// One restart as `history --restarts` prints it: what it did (kind, strategy, jar, parallelism, the savepoint or
/// checkpoint it restored), how it ended, and its steps with the time each took.
fn render_restart(r: &warden::store::RestartRecord) -> String {
    use warden::model::RestartStep;
    let mut what = format!("{} ({})", r.kind, r.strategy);
    if let Some(of) = r.rollback_of {
        what.push_str(&format!(" of #{of}"));
    }
    let jar = r.jar_id.clone().or_else(|| r.overrides.jar.as_ref().map(|j| j.to_string()));
    let mut s = format!(
        "{}  #{:<4} {:<14} {:<16} {:<22} step={:<20} jar={} parallelism={} from={} new={} {}",
        r.started,
        r.id,
        r.target,
        r.job,
        what,
        r.step,
        jar.as_deref().unwrap_or("-"),
        r.overrides.parallelism.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        r.location.as_deref().unwrap_or("-"),
        r.new_jid.as_deref().unwrap_or("-"),
        r.outcome.as_ref().map(|o| o.to_string()).unwrap_or_else(|| "in progress".into())
    );
    if let Some(c) = &r.cause {
        s.push_str(&format!("\n        cause: {c}"));
    }
    if !r.steps.is_empty() {
        let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
        let mut parts = vec![];
        for (i, st) in r.steps.iter().enumerate() {
            let next = r.steps.get(i + 1).map(|n| n.at.as_str()).unwrap_or(r.updated.as_str());
            let took = match (at(&st.at), at(next)) {
                (Some(a), Some(b))
                    if st.step != RestartStep::Done && (r.outcome.is_some() || i + 1 < r.steps.len()) =>
                {
                    format!(" {:.1}s", (b - a).num_milliseconds() as f64 / 1000.0)
                }
                _ => String::new(),
            };
            parts.push(format!("{}{took}", st.step));
        }
        s.push_str(&format!("\n        steps: {}", parts.join(" → ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden::model::{JarRef, RestartKind, RestartOverrides, RestartResult, RestartStep, RestartStrategy, StepTime};
    use warden::store::RestartRecord;

    fn rec(id: i64, kind: RestartKind) -> RestartRecord {
        let step = |s: RestartStep, at: &str| StepTime { step: s, at: format!("2026-12-01T12:00:{at}Z") };
        RestartRecord {
            id,
            journal_id: 7,
            target: "flink".into(),
            job: "clicks".into(),
            strategy: RestartStrategy::Savepoint,
            old_jid: "7c2c".into(),
            step: RestartStep::Done,
            trigger_id: None,
            location: Some("file:/sp/savepoint-7c2c-1".into()),
            new_jid: Some("9f1e".into()),
            outcome: Some(RestartResult::Ok),
            started: "2026-12-01T12:00:00.000Z".into(),
            updated: "2026-12-01T12:01:10.000Z".into(),
            owner: None,
            lease_until: None,
            kind,
            overrides: RestartOverrides::default(),
            jar_id: Some("3f1e_clicks.jar".into()),
            prev_jar_id: None,
            prev_parallelism: None,
            rollback_of: None,
            cause: None,
            steps: vec![
                step(RestartStep::Started, "00.000"),
                step(RestartStep::JarUploaded, "00.400"),
                step(RestartStep::SavepointTriggered, "00.500"),
                step(RestartStep::StateChosen, "02.100"),
                step(RestartStep::Submitting, "02.600"),
                step(RestartStep::Submitted, "03.900"),
                step(RestartStep::Probation, "06.000"),
            ],
        }
    }

    #[test]
    fn restarts_show_kind_jar_parallelism_savepoint_and_step_times() {
        let mut up = rec(5, RestartKind::Upgrade);
        up.overrides = RestartOverrides { jar: Some(JarRef::Path("/b/clicks-2.jar".into())), ..Default::default() };
        up.jar_id = Some("8a0d_clicks-2.jar".into());
        up.outcome = Some(RestartResult::Failed {
            step: "probation".into(),
            message: "the new job 9f1e is RESTARTING during its probation; rolled back".into(),
        });
        up.step = RestartStep::Probation;
        up.cause = Some("java.lang.RuntimeException: marker file present: /tmp/m".into());
        up.updated = "2026-12-01T12:00:08.000Z".into();
        let mut rb = rec(6, RestartKind::Rollback);
        rb.rollback_of = Some(5);
        rb.old_jid = "9f1e".into();
        rb.new_jid = Some("b2c3".into());
        rb.cause = up.cause.clone();
        rb.overrides.parallelism = Some(2);
        rb.started = "2026-12-01T12:00:08.000Z".into();
        rb.updated = "2026-12-01T12:00:12.500Z".into();
        rb.steps = vec![
            StepTime { step: RestartStep::StateChosen, at: "2026-12-01T12:00:08.000Z".into() },
            StepTime { step: RestartStep::Submitting, at: "2026-12-01T12:00:09.000Z".into() },
            StepTime { step: RestartStep::Submitted, at: "2026-12-01T12:00:10.000Z".into() },
            StepTime { step: RestartStep::Done, at: "2026-12-01T12:00:12.500Z".into() },
        ];
        let mut rs = rec(7, RestartKind::Rescale);
        rs.overrides.parallelism = Some(4);
        let text = [up, rb, rs].iter().map(render_restart).collect::<Vec<_>>().join("\n");
        insta::assert_snapshot!(text);
    }
}
