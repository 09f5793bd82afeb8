//! `warden status`: what the daemon sees, as a table: from its server's `/api/status` when it answers, else from
//! the state directory (firing alerts, restarts in progress, recent actions).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use warden::server::api::{AlertView, EntryView, RestartView, StatusView};
use warden::store::Store;

use super::Format;

pub async fn run(config: &Path, format: Format, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let loaded = warden::config::load(config).ok();
    let mut note = String::new();
    let mut view = None;
    if let Some(l) = loaded.as_ref().filter(|l| l.config.server.enabled && state_dir.is_none()) {
        match from_server(&l.config.server).await {
            Ok(v) => view = Some(v),
            Err(e) => note = format!("no daemon answered ({e}); showing the state directory"),
        }
    }
    let view = match view {
        Some(v) => v,
        None => {
            let (sc, dir) = super::store_location(config, state_dir)?;
            if !super::has_store(&sc, &dir) {
                anyhow::bail!(
                    "no daemon answered and no state in `{}` yet (has `warden run` been started?)",
                    dir.display()
                );
            }
            let policy = loaded.map(|l| l.config.dispatch).unwrap_or_default();
            tokio::task::spawn_blocking(move || from_store(&sc, &dir, policy)).await??
        }
    };
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&view)?),
        Format::Text => {
            if !note.is_empty() {
                outln!("({note})");
            }
            print_view(&view);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn from_server(cfg: &warden::config::ServerConfig) -> Result<StatusView, String> {
    let addr = warden::server::client_address(cfg).ok_or("`server.listen` is not an address")?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().map_err(|e| e.to_string())?;
    let mut req = client.get(format!("http://{addr}/api/status"));
    if let Some(t) = &cfg.token {
        req = req.bearer_auth(t.expose());
    }
    let r = req.send().await.map_err(|e| format!("http://{addr}: {}", short(&e)))?;
    if !r.status().is_success() {
        return Err(format!("http://{addr}/api/status answered {}", r.status()));
    }
    r.json().await.map_err(|e| format!("http://{addr}/api/status: {e}"))
}

fn short(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        e.to_string()
    }
}

fn from_store(
    sc: &warden::config::StoreConfig,
    dir: &Path,
    policy: warden::config::DispatchConfig,
) -> anyhow::Result<StatusView> {
    let store = Store::open_configured(sc, dir)?;
    let d = warden::dispatch::Dispatcher::new(policy, false, &store)?;
    let inhibited = warden::notify::inhibit::held_inhibited(&store).unwrap_or_default();
    let alerts = d
        .firing_alerts()
        .into_iter()
        .map(|a| AlertView {
            inhibited_by: inhibited.get(&(a.rule.clone(), a.target.clone(), a.subject.clone())).cloned(),
            rule: a.rule,
            target: a.target,
            subject: a.subject,
            severity: a.severity.as_str().into(),
            summary: a.summary,
            root_cause: a.details.get("root_cause").and_then(|c| c.as_str()).map(String::from),
            since: a.since,
        })
        .collect();
    Ok(StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        now: chrono::Utc::now(),
        started: None,
        source: "store".into(),
        dry_run: false,
        ready: false,
        reload: None,
        targets: vec![],
        probes: vec![],
        rules: vec![],
        alerts,
        restarts: store.unfinished_restarts()?.into_iter().map(RestartView::from).collect(),
        rescales: warden::action::rescale::in_flight(&store)?.into_iter().map(EntryView::from).collect(),
        recent: store.entries(Some(10))?.into_iter().map(EntryView::from).collect(),
        counters: Default::default(),
        ha: warden::ha::HaView::single(),
    })
}

/// The HA pair in one line (nothing for a single instance): role, epoch, lease, peer.
fn ha_line(ha: &warden::ha::HaView, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    use warden::ha::Role;
    let ago = |t: chrono::DateTime<chrono::Utc>| {
        let s = (now - t).num_milliseconds().max(0) as f64 / 1000.0;
        format!("{s:.1}s ago")
    };
    let lease = ha.lease_until.map(|t| t.format("%H:%M:%S%.3f UTC").to_string()).unwrap_or_else(|| "-".into());
    let epoch = ha.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into());
    let me = match ha.role {
        Role::Single => return None,
        Role::Leader => format!("HA: {} is the LEADER (epoch {epoch}, lease until {lease})", ha.instance),
        Role::Standby => match &ha.holder {
            Some(h) => {
                format!("HA: {} is the standby (the leader is {h}, epoch {epoch}, lease until {lease})", ha.instance)
            }
            None => format!("HA: {} is the standby (no leader seen yet)", ha.instance),
        },
    };
    let peer = match &ha.peer {
        Some(p) => format!("; peer {} ({}, seen {})", p.instance, p.role, ago(p.last_seen)),
        None => "; no peer seen".into(),
    };
    let err = ha.last_error.as_ref().map(|e| format!("; database: {e}")).unwrap_or_default();
    Some(format!("{me}{peer}{err}"))
}

/// Pads to `w` characters (not bytes).
fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n >= w {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(w - n))
    }
}

fn table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count()).min(60);
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let parts: Vec<String> =
            cells.iter().enumerate().map(|(i, c)| if i == last { c.clone() } else { pad(c, widths[i]) }).collect();
        outln!("  {}", parts.join("  ").trim_end());
    };
    line(head.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_view(v: &StatusView) {
    let verdict = if !v.alerts.is_empty() {
        format!("{} alert(s) firing", v.alerts.len())
    } else if v.targets.iter().any(|t| t.health == "failing") {
        "a target is failing".into()
    } else if v.source == "store" {
        "nothing firing (as last saved)".into()
    } else {
        "all good".into()
    };
    let from = match (v.source.as_str(), &v.started) {
        ("daemon", Some(s)) => format!("daemon up since {}", s.format("%Y-%m-%d %H:%M:%S UTC")),
        _ => "from the state directory (no daemon answered)".into(),
    };
    outln!("Warden {}: {verdict}  ({from}{})", v.version, if v.dry_run { ", dry run" } else { "" });
    if let Some(line) = ha_line(&v.ha, v.now) {
        outln!("{line}");
    }
    if let Some(r) = &v.reload {
        if r.ok {
            outln!("configuration: applied {} ({})", r.time.format("%Y-%m-%d %H:%M:%S UTC"), r.trigger);
        } else {
            outln!(
                "configuration: the reload at {} was REJECTED; running the one applied {}:",
                r.time.format("%H:%M:%S UTC"),
                r.last_success.format("%Y-%m-%d %H:%M:%S UTC")
            );
            for e in &r.errors {
                outln!("  {e}");
            }
        }
    }
    if !v.targets.is_empty() {
        outln!("\nTARGETS");
        table(
            &["TARGET", "HEALTH", "URL", "LAST ERROR"],
            v.targets
                .iter()
                .map(|t| {
                    vec![t.name.clone(), t.health.clone(), t.url.clone(), t.last_error.clone().unwrap_or_default()]
                })
                .collect(),
        );
        let jobs: Vec<Vec<String>> = v
            .targets
            .iter()
            .flat_map(|t| {
                t.jobs.iter().map(move |j| {
                    vec![
                        j.name.clone(),
                        t.name.clone(),
                        j.health.clone(),
                        j.state.clone(),
                        j.jid.clone().unwrap_or_else(|| "-".into()),
                        j.alert.clone().unwrap_or_default(),
                    ]
                })
            })
            .collect();
        if !jobs.is_empty() {
            outln!("\nJOBS");
            table(&["JOB", "TARGET", "HEALTH", "STATE", "JOB ID", "ALERT"], jobs);
        }
    }
    outln!("\nFIRING ALERTS");
    if v.alerts.is_empty() {
        outln!("  none");
    } else {
        table(
            &["SEVERITY", "JOB", "TARGET", "RULE", "SINCE", "SUMMARY / ROOT CAUSE"],
            v.alerts
                .iter()
                .map(|a| {
                    vec![
                        a.severity.clone(),
                        a.subject.clone(),
                        a.target.clone(),
                        a.rule.clone(),
                        a.since.format("%Y-%m-%d %H:%M:%S").to_string(),
                        match (&a.root_cause, &a.inhibited_by) {
                            (_, Some(by)) => format!("{} (inhibited {by}: not sent)", a.summary),
                            (Some(c), None) if !a.summary.contains(c.as_str()) => {
                                format!("{} (root cause: {c})", a.summary)
                            }
                            _ => a.summary.clone(),
                        },
                    ]
                })
                .collect(),
        );
    }
    outln!("\nRESTARTS IN PROGRESS");
    if v.restarts.is_empty() {
        outln!("  none");
    } else {
        table(
            &["#", "JOB", "TARGET", "STRATEGY", "STEP", "SINCE", "OWNER"],
            v.restarts
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.job.clone(),
                        r.target.clone(),
                        r.what(),
                        r.step.clone(),
                        r.started.clone(),
                        r.owner.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        );
    }
    let bad_probes: Vec<Vec<String>> = v
        .probes
        .iter()
        .filter(|p| p.last_error.is_some())
        .map(|p| vec![p.probe.clone(), p.target.clone(), p.last_error.clone().unwrap_or_default()])
        .collect();
    if !bad_probes.is_empty() {
        outln!("\nFAILING PROBES");
        table(&["PROBE", "TARGET", "LAST ERROR"], bad_probes);
    }
    let bad_rules: Vec<Vec<String>> = v
        .rules
        .iter()
        .filter(|r| r.last_error.is_some())
        .map(|r| vec![r.rule.clone(), r.errors.to_string(), r.last_error.clone().unwrap_or_default()])
        .collect();
    if !bad_rules.is_empty() {
        outln!("\nRULES WITH ERRORS");
        table(&["RULE", "ERRORS", "LAST ERROR"], bad_rules);
    }
    if !v.recent.is_empty() {
        outln!("\nRECENT ACTIONS");
        table(
            &["TIME", "KIND", "JOB", "TARGET", "OUTCOME", "SUMMARY"],
            v.recent
                .iter()
                .rev()
                .take(10)
                .map(|e| {
                    vec![
                        e.time.clone(),
                        e.kind.clone(),
                        e.subject.clone(),
                        e.target.clone(),
                        e.outcome.clone(),
                        e.summary.clone(),
                    ]
                })
                .collect(),
        );
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use warden::ha::{HaView, Peer, Role};

    use super::ha_line;

    #[test]
    fn the_pair_reads_in_one_line_and_a_single_instance_says_nothing() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 17, 0, 10).unwrap();
        assert_eq!(ha_line(&HaView::single(), now), None);
        let leader = HaView {
            role: Role::Leader,
            instance: "a".into(),
            epoch: Some(7),
            holder: Some("a".into()),
            lease_until: Some(Utc.with_ymd_and_hms(2026, 12, 1, 17, 0, 16).unwrap()),
            peer: Some(Peer {
                instance: "b".into(),
                role: Role::Standby,
                epoch: None,
                last_seen: Utc.with_ymd_and_hms(2026, 12, 1, 17, 0, 9).unwrap(),
            }),
            last_error: None,
        };
        insta::assert_snapshot!(ha_line(&leader, now).unwrap(), @"HA: a is the LEADER (epoch 7, lease until 17:00:16.000 UTC); peer b (standby, seen 1.0s ago)");
        let standby = HaView {
            role: Role::Standby,
            instance: "b".into(),
            peer: None,
            last_error: Some("connection refused".into()),
            ..leader
        };
        insta::assert_snapshot!(ha_line(&standby, now).unwrap(), @"HA: b is the standby (the leader is a, epoch 7, lease until 17:00:16.000 UTC); no peer seen; database: connection refused");
    }
}
