//! What a message says: the view of a group of alerts that templates see, the built-in templates, and rendering
//! with [minijinja](https://docs.rs/minijinja) (Jinja syntax: `{{ headline }}`, `{% for a in alerts %}`).
//!
//! The view (also the `alerts` of the plugin JSON document):
//!
//! | name | meaning |
//! |---|---|
//! | `headline` | what happened, in one line: `[FIRING] job clicks FAILED: java.io.IOException: disk full` |
//! | `event` | `firing`, `reminder`, `resolved`, `giving_up`, `restarted`, `restart_failed`, `log` or `test` |
//! | `severity` | the highest severity among the alerts |
//! | `count` | how many alerts the message carries |
//! | `target` | `{name, url, labels}` |
//! | `time` | when the message was made (UTC) |
//! | `alerts[]` | `rule`, `pack`, `target`, `target_url`, `job`, `jid`, `state`, `severity`, `summary` (for a resolved alert: what is fine again), `was` (resolved: the summary it fired with), `resolution` (resolved: how, when the journal says so), `since`, `for`, `time`, `root_cause`, `root_cause_lines` (the root exception's first line and its `Caused by:` chain first), `link` (Flink web UI), `runbook_url`, `actions` (what Warden did, with the last lines of a failed command's stderr), `details` (the rule's details) |
//!
//! Durations in summaries are written for people (`5m 15s`, never `315s`). A rule attaches a runbook with
//! `details: #{runbook_url: "https://…"}`; a route can give one for every alert it matches.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use crate::model::AlertRecord;
use crate::model::Severity;

/// The subject of e-mails.
pub const DEFAULT_SUBJECT: &str = "{{ headline }}";

/// The plain-text body of e-mails and plugin documents.
pub const DEFAULT_BODY: &str = "\
{{ headline }}
{% for a in alerts %}

{{ a.summary }}
  target:     {{ a.target }}{% if a.target_url %} ({{ a.target_url }}){% endif %}

  job:        {{ a.job }}{% if a.jid %} ({{ a.jid }}){% endif %}

{% if a.state %}
  state:      {{ a.state }} since {{ a.since }}{% if a.for %} ({{ a.for }}){% endif %}

{% else %}
  since:      {{ a.since }}{% if a.for %} ({{ a.for }}){% endif %}

{% endif %}
{% if a.was %}
  was:        {{ a.was }}
{% endif %}
{% if a.resolution %}
  resolved:   {{ a.resolution }}
{% endif %}
  rule:       {{ a.rule }} ({{ a.severity }})
{% if a.root_cause_lines %}
  root cause:
{% for l in a.root_cause_lines %}
    {{ l }}
{% endfor %}
{% endif %}
{% if a.link %}
  Flink UI:   {{ a.link }}
{% endif %}
{% if a.runbook_url %}
  runbook:    {{ a.runbook_url }}
{% endif %}
  Warden:     {{ a.actions | join(\"; \") if a.actions else \"nothing (alert only)\" }}
{% endfor %}

-- 
Warden · {{ event }} · {{ time }}
";

/// The plain `text` of Slack messages (the notification and fallback text).
pub const DEFAULT_SLACK_TEXT: &str = "{{ headline }}";

/// The target of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetView {
    /// Name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One alert as templates, Slack blocks and plugins see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    /// `firing`, `reminder`, `resolved`, `giving_up`, `restarted`, `restart_failed`, `log`, `test`.
    pub event: String,
    /// `pack/rule`.
    pub rule: String,
    /// The pack.
    pub pack: String,
    /// The target's name.
    pub target: String,
    /// The target's URL.
    pub target_url: String,
    /// The job name (the alert's subject).
    pub job: String,
    /// The Flink job id, when the rule said.
    pub jid: Option<String>,
    /// The job's state, when the rule said.
    pub state: Option<String>,
    /// `info`, `warning`, `critical`.
    pub severity: String,
    /// The rule's one line; for a resolved alert, what is fine again (`job clicks is running again`).
    pub summary: String,
    /// For a resolved alert: the summary it fired with.
    pub was: Option<String>,
    /// For a resolved alert: how it resolved, when the journal says so (`relaunched with \`relaunch\``).
    pub resolution: Option<String>,
    /// A runbook for this alert: the rule's `details.runbook_url`, else the matching route's `runbook_url`.
    pub runbook_url: Option<String>,
    /// Since when (the job ended, or the alert started firing), `YYYY-MM-DD HH:MM:SS UTC`.
    pub since: String,
    /// How long it has been (reminders) or was (resolved) firing, e.g. `12m 3s`.
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// When the alert event happened (RFC 3339).
    pub time: String,
    /// The root exception's most telling line.
    pub root_cause: Option<String>,
    /// The first `notify.root_cause_lines` lines of the root exception.
    pub root_cause_lines: Vec<String>,
    /// The job in the Flink web UI (or the target's UI when there is no job id).
    pub link: Option<String>,
    /// What Warden did about it, e.g. `run relaunch: ok`.
    pub actions: Vec<String>,
    /// The rule's structured details.
    pub details: serde_json::Value,
}

/// A message's view: one or more alerts for the same target and event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// One line: what happened.
    pub headline: String,
    /// The event all alerts share.
    pub event: String,
    /// The highest severity.
    pub severity: String,
    /// Number of alerts.
    pub count: usize,
    /// The target.
    pub target: TargetView,
    /// When the message was made (RFC 3339).
    pub time: String,
    /// The alerts.
    pub alerts: Vec<AlertView>,
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn human_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn str_field(d: &serde_json::Value, k: &str) -> Option<String> {
    match d.get(k)? {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn time_field(d: &serde_json::Value, k: &str) -> Option<DateTime<Utc>> {
    match d.get(k)? {
        serde_json::Value::Number(n) => {
            n.as_i64().filter(|ms| *ms > 0).and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        }
        serde_json::Value::String(s) => DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc)),
        _ => None,
    }
}

/// The Flink web UI page of a job: `<url>/#/job/running/<jid>/overview`, or `completed` for a job that ended.
pub fn flink_link(target_url: &str, jid: Option<&str>, state: Option<&str>) -> Option<String> {
    if target_url.is_empty() {
        return None;
    }
    let base = target_url.trim_end_matches('/');
    Some(match jid {
        Some(j) => {
            let ended = matches!(state, Some("FAILED" | "CANCELED" | "FINISHED" | "SUSPENDED"));
            format!("{base}/#/job/{}/{j}/overview", if ended { "completed" } else { "running" })
        }
        None => format!("{base}/#/overview"),
    })
}

fn event_label(event: &str) -> &'static str {
    match event {
        "firing" => "FIRING",
        "reminder" => "STILL FIRING",
        "resolved" => "RESOLVED",
        "giving_up" => "GIVING UP",
        "restarted" => "RESTARTED",
        "restart_failed" => "RESTART FAILED",
        "log" => "LOG",
        "test" => "TEST",
        _ => "ALERT",
    }
}

fn first_line(s: &str, max: usize) -> String {
    let l = s.lines().next().unwrap_or("").trim();
    if l.chars().count() > max {
        let cut: String = l.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        l.to_string()
    }
}

/// `text` with every whole number of seconds of a minute or more (`315s`) written as people read it (`5m 15s`).
pub fn humanize_seconds(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !chars[i - 1].is_alphanumeric();
        if chars[i].is_ascii_digit() && starts_word {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            let ends_word = j + 1 >= chars.len() || !chars[j + 1].is_alphanumeric();
            let digits: String = chars[i..j].iter().collect();
            if j < chars.len() && chars[j] == 's' && ends_word {
                if let Ok(n) = digits.parse::<u64>() {
                    if n >= 60 {
                        out.push_str(&humantime::format_duration(std::time::Duration::from_secs(n)).to_string());
                        i = j + 1;
                        continue;
                    }
                }
            }
            out.push_str(&digits);
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The lines of a root exception with the first line and the `Caused by:` chain first, then the rest in order:
/// the lines that say what happened before the frames that say where.
pub fn cause_first(trace: Vec<String>) -> Vec<String> {
    let mut head = vec![];
    let mut rest = vec![];
    for (i, l) in trace.into_iter().enumerate() {
        if i == 0 || l.trim_start().starts_with("Caused by:") {
            head.push(l);
        } else if !l.trim().is_empty() {
            rest.push(l);
        }
    }
    head.extend(rest);
    head
}

/// What a resolved alert says: the rule's own `details.resolved_summary` when it gave one, else a sentence for
/// the shipped Flink rules, else `<subject>: <rule> no longer fires`. Never the failure it fired with.
fn resolved_summary(r: &AlertRecord) -> String {
    if let Some(s) = str_field(&r.details, "resolved_summary") {
        return humanize_seconds(&s);
    }
    let s = &r.subject;
    match r.rule.as_str() {
        "flink/job-not-running" => format!("job {s} is running again"),
        "flink/tasks-failing" => format!("job {s}: all its tasks are running again"),
        "flink/restart-loop" => format!("job {s} is no longer restarting"),
        "flink/jobmanager-unreachable" => format!("JobManager {s} answers again"),
        _ => format!("{s}: {} no longer fires", r.rule),
    }
}

/// How an alert resolved, read from what Warden did (the journal): a successful restart or relaunch.
fn resolution(actions: &[String]) -> Option<String> {
    actions.iter().rev().find_map(|a| {
        if let Some(rest) = a.strip_prefix("restarted (") {
            let (strategy, tail) = rest.split_once(')').unwrap_or((rest, ""));
            return Some(format!("restarted by Warden ({strategy}){tail}"));
        }
        let cmd = a.strip_prefix("ran `")?.strip_suffix("`: succeeded")?;
        Some(format!("relaunched by Warden with `{cmd}`"))
    })
}

/// Builds one alert's view. `actions` is what Warden did (from the journal); `now` is for durations.
pub fn alert_view(
    r: &AlertRecord,
    target: &TargetView,
    actions: Vec<String>,
    root_cause_lines: usize,
    now: DateTime<Utc>,
) -> AlertView {
    let d = &r.details;
    let jid = str_field(d, "jid");
    let state = str_field(d, "state");
    let firing_since = time_field(d, "firing_since");
    let since = time_field(d, "end_time").or(firing_since).unwrap_or(r.time);
    let for_ = match r.event.as_str() {
        "reminder" | "resolved" => firing_since.map(|t| {
            let secs = (now.max(r.time) - t).num_seconds().max(0) as u64;
            let verb = if r.event == "resolved" { "was firing for" } else { "firing for" };
            format!("{verb} {}", humantime::format_duration(std::time::Duration::from_secs(secs)))
        }),
        _ => None,
    };
    let root_cause = str_field(d, "root_cause");
    let trace: Vec<String> = match d.get("stacktrace") {
        Some(serde_json::Value::String(s)) => s.lines().map(str::to_string).collect(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => root_cause.as_deref().map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default(),
    };
    let (pack, _) = r.rule.split_once('/').unwrap_or(("", ""));
    let fired_with = humanize_seconds(r.summary.strip_prefix("resolved: ").unwrap_or(&r.summary));
    let resolved = r.event == "resolved";
    let (summary, was, resolution) =
        if resolved { (resolved_summary(r), Some(fired_with), resolution(&actions)) } else { (fired_with, None, None) };
    let link = flink_link(&target.url, jid.as_deref(), state.as_deref());
    // A resolved message says what is fine again: not the failed state or its exception (those are under `was`
    // and in `details`).
    let (state, root_cause, trace) = if resolved { (None, None, vec![]) } else { (state, root_cause, trace) };
    AlertView {
        event: r.event.clone(),
        rule: r.rule.clone(),
        pack: pack.to_string(),
        target: r.target.clone(),
        target_url: target.url.clone(),
        job: r.subject.clone(),
        link,
        jid,
        state,
        severity: r.severity.as_str().to_string(),
        summary,
        was,
        resolution,
        runbook_url: str_field(d, "runbook_url"),
        since: human_time(since),
        for_,
        time: crate::store::ts(r.time),
        root_cause: root_cause.as_deref().map(|s| first_line(s, 500)),
        root_cause_lines: cause_first(trace).into_iter().take(root_cause_lines).map(|l| first_line(&l, 300)).collect(),
        actions,
        details: d.clone(),
    }
}

/// Builds a message's view from its alerts (all for `target` and the same event).
pub fn view(event: &str, target: TargetView, alerts: Vec<AlertView>, now: DateTime<Utc>) -> View {
    let severity =
        alerts.iter().filter_map(|a| Severity::parse(&a.severity)).max().unwrap_or(Severity::Info).as_str().to_string();
    let label = event_label(event);
    let headline = match alerts.as_slice() {
        [] => format!("[{label}] {}", target.name),
        [a] => {
            let notes: Vec<&str> = match event {
                "resolved" => a.resolution.iter().chain(a.for_.iter()).map(String::as_str).collect(),
                _ => vec![],
            };
            match notes.as_slice() {
                [] => format!("[{label}] {}", first_line(&a.summary, 200)),
                n => format!("[{label}] {} ({})", first_line(&a.summary, 200), n.join("; ")),
            }
        }
        many => {
            let mut jobs: Vec<&str> = vec![];
            for a in many {
                if !jobs.contains(&a.job.as_str()) {
                    jobs.push(&a.job);
                }
            }
            let shown: Vec<&str> = jobs.iter().take(5).copied().collect();
            let more = if jobs.len() > 5 { format!(" and {} more", jobs.len() - 5) } else { String::new() };
            format!("[{label}] {} alerts on {}: {}{more}", many.len(), target.name, shown.join(", "))
        }
    };
    View {
        headline,
        event: event.to_string(),
        severity,
        count: alerts.len(),
        target,
        time: crate::store::ts(now),
        alerts,
    }
}

/// The template environment: Jinja syntax, block tags trimmed, no HTML escaping.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Checks that a template compiles.
pub fn check(src: &str) -> Result<(), String> {
    environment().template_from_str(src).map(|_| ()).map_err(|e| describe(&e))
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// Renders `src` (or `default` when `src` is `None`). A template that fails at render time falls back to
/// `default`, with the error logged: the message still goes out.
pub fn render(
    env: &Environment<'static>,
    channel: &str,
    what: &str,
    src: Option<&str>,
    default: &str,
    v: &View,
) -> String {
    render_ctx(env, channel, what, src, default, &minijinja::Value::from_serialize(v), &v.headline)
}

/// [`render`] with every text value of the view passed through `escape` first (job names, summaries, exceptions,
/// URLs: everything that comes from outside), while the template's own text stays as written. For formats with
/// markup, such as Slack's mrkdwn, where a job named `<!channel>` must not ping a channel.
pub fn render_escaped(
    env: &Environment<'static>,
    channel: &str,
    what: &str,
    src: Option<&str>,
    default: &str,
    v: &View,
    escape: fn(&str) -> String,
) -> String {
    fn walk(v: &mut serde_json::Value, escape: fn(&str) -> String) {
        match v {
            serde_json::Value::String(s) => *s = escape(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, escape)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|x| walk(x, escape)),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(v).unwrap_or(serde_json::Value::Null);
    walk(&mut json, escape);
    let ctx = minijinja::Value::from_serialize(&json);
    render_ctx(env, channel, what, src, default, &ctx, &escape(&v.headline))
}

/// The one rendering path: the channel's template, else (or when it fails at render time) the built-in one.
fn render_ctx(
    env: &Environment<'static>,
    channel: &str,
    what: &str,
    src: Option<&str>,
    default: &str,
    ctx: &minijinja::Value,
    headline: &str,
) -> String {
    if let Some(s) = src {
        match env.render_named_str(&format!("notify.channels.{channel}.{what}"), s, ctx) {
            Ok(out) => return out,
            Err(e) => tracing::error!(channel, "template `{what}` failed, using the built-in one: {}", describe(&e)),
        }
    }
    env.render_str(default, ctx).unwrap_or_else(|e| format!("{headline}\n\n(template error: {})", describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> TargetView {
        TargetView { name: "prod-jm".into(), url: "http://jm:8081/".into(), labels: BTreeMap::new() }
    }

    fn failed(job: &str) -> AlertRecord {
        AlertRecord {
            time: Utc.with_ymd_and_hms(2026, 3, 1, 10, 2, 3).unwrap(),
            event: "firing".into(),
            rule: "flink/job-not-running".into(),
            target: "prod-jm".into(),
            subject: job.into(),
            severity: Severity::Critical,
            summary: format!("job {job} FAILED: java.io.IOException: disk full"),
            details: serde_json::json!({"job": job, "jid": "abc123", "state": "FAILED",
                "end_time": Utc.with_ymd_and_hms(2026, 3, 1, 10, 1, 0).unwrap().timestamp_millis(),
                "root_cause": "java.io.IOException: disk full", "relaunch": "relaunch",
                "stacktrace": "org.apache.flink.runtime.JobException: Recovery is suppressed\n\tat a.b(C.java:1)\n\tat d.e(F.java:2)\nCaused by: java.io.IOException: disk full"}),
        }
    }

    #[test]
    fn one_alert_says_what_where_since_why_and_what_warden_did() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 10, 2, 13).unwrap();
        let a = alert_view(&failed("clicks"), &target(), vec!["run relaunch: ok".into()], 2, now);
        assert_eq!(a.link.as_deref(), Some("http://jm:8081/#/job/completed/abc123/overview"));
        assert_eq!(a.since, "2026-03-01 10:01:00 UTC");
        assert_eq!(a.root_cause_lines.len(), 2);
        let v = view("firing", target(), vec![a], now);
        assert_eq!(v.headline, "[FIRING] job clicks FAILED: java.io.IOException: disk full");
        let body = render(&environment(), "mail", "body", None, DEFAULT_BODY, &v);
        let want = "\
[FIRING] job clicks FAILED: java.io.IOException: disk full

job clicks FAILED: java.io.IOException: disk full
  target:     prod-jm (http://jm:8081/)
  job:        clicks (abc123)
  state:      FAILED since 2026-03-01 10:01:00 UTC
  rule:       flink/job-not-running (critical)
  root cause:
    org.apache.flink.runtime.JobException: Recovery is suppressed
    Caused by: java.io.IOException: disk full
  Flink UI:   http://jm:8081/#/job/completed/abc123/overview
  Warden:     run relaunch: ok

-- 
Warden · firing · 2026-03-01T10:02:13.000Z
";
        assert_eq!(body, want);
    }

    #[test]
    fn a_group_lists_its_jobs_in_one_line() {
        let now = Utc::now();
        let alerts: Vec<AlertView> =
            (0..20).map(|i| alert_view(&failed(&format!("job{i}")), &target(), vec![], 5, now)).collect();
        let v = view("firing", target(), alerts, now);
        assert_eq!(v.headline, "[FIRING] 20 alerts on prod-jm: job0, job1, job2, job3, job4 and 15 more");
        assert_eq!(v.severity, "critical");
    }

    #[test]
    fn custom_templates_render_and_a_broken_one_falls_back() {
        let now = Utc::now();
        let v = view("firing", target(), vec![alert_view(&failed("clicks"), &target(), vec![], 5, now)], now);
        let env = environment();
        let s = render(&env, "m", "subject", Some("{{ count }} on {{ target.name }}: {{ alerts[0].job }}"), "x", &v);
        assert_eq!(s, "1 on prod-jm: clicks");
        let s = render(&env, "m", "subject", Some("{{ \"x\" + 1 }}"), DEFAULT_SUBJECT, &v);
        assert_eq!(s, v.headline);
        assert!(check("{% for %}").is_err());
        assert!(check(DEFAULT_BODY).is_ok());
    }

    #[test]
    fn running_jobs_link_to_running_and_no_jid_links_to_the_overview() {
        assert_eq!(flink_link("http://x", Some("j"), Some("RUNNING")).unwrap(), "http://x/#/job/running/j/overview");
        assert_eq!(flink_link("http://x/", None, None).unwrap(), "http://x/#/overview");
        assert_eq!(flink_link("", Some("j"), None), None);
    }
}

#[cfg(test)]
mod message_snapshots;
