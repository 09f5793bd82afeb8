//! Slack incoming webhooks: Block Kit blocks plus the plain `text` Slack requires, and Slack's answers mapped to
//! retry or not (`429` waits `Retry-After`; `400 invalid_payload`, `403`, `404 no_service`, `410` are permanent).
//! The webhook URL is the credential: it never appears in an error (reqwest errors are stripped of their URL).

use std::time::Duration;

use serde_json::{json, Value};

use super::channel::{error_chain, DeliveryError};
use super::config::SlackConfig;
use super::template::{self, AlertView, View};
use crate::config::Secret;

/// Alerts shown as their own section; the rest are counted.
const MAX_ALERT_SECTIONS: usize = 20;
/// Slack's limit for a section's text.
const MAX_SECTION: usize = 3000;
/// Slack's limit for a header's text.
const MAX_HEADER: usize = 150;

/// A webhook client.
pub struct SlackSender {
    client: reqwest::Client,
    url: Secret,
}

impl SlackSender {
    /// Builds the HTTP client.
    pub fn new(c: &SlackConfig) -> Result<SlackSender, String> {
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e.without_url())))?;
        Ok(SlackSender { client, url: c.webhook_url.clone() })
    }

    /// Posts one payload.
    pub async fn send(&self, payload: &Value) -> Result<(), DeliveryError> {
        let resp = self.client.post(self.url.expose()).json(payload).send().await.map_err(|e| {
            let kind = if e.is_timeout() { "timed out" } else { "failed" };
            DeliveryError::retry(format!("Slack webhook call {kind}: {}", error_chain(&e.without_url())))
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(200).collect();
        classify(status.as_u16(), &body, retry_after)
    }
}

/// Maps Slack's answer to success, retry or permanent failure.
pub fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> Result<(), DeliveryError> {
    let said = if body.is_empty() { String::new() } else { format!(" `{body}`") };
    match status {
        200..=299 => Ok(()),
        429 => Err(DeliveryError::Retry {
            reason: format!("Slack is rate limiting (429{said})"),
            after: Some(retry_after.unwrap_or(Duration::from_secs(30)).min(Duration::from_secs(3600))),
        }),
        408 => Err(DeliveryError::retry(format!("Slack answered 408{said}"))),
        400 => Err(DeliveryError::permanent(format!("Slack rejected the message: 400{said} (not retried)"))),
        403 | 404 | 410 => Err(DeliveryError::permanent(format!(
            "Slack answered {status}{said}: the webhook is revoked, wrong or its channel is gone (not retried)"
        ))),
        s if s >= 500 => Err(DeliveryError::retry(format!("Slack answered {s}{said}"))),
        s => Err(DeliveryError::permanent(format!("Slack answered {s}{said} (not retried)"))),
    }
}

/// Escapes text for Slack mrkdwn.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// One alert's section. `summary` is false when the header already says it (a message with one alert).
fn alert_section(a: &AlertView, summary: bool) -> String {
    let job = match &a.link {
        Some(l) if a.jid.is_some() => format!("*<{}|{}>*", escape(l), escape(&a.job)),
        _ => format!("*{}*", escape(&a.job)),
    };
    let state = a.state.as_deref().map(|s| format!(" {}", escape(s))).unwrap_or_default();
    let since = match &a.for_ {
        Some(f) => format!("since {} ({f})", a.since),
        None => format!("since {}", a.since),
    };
    let mut s = format!("{job} on *{}*{state} {since} · rule `{}`", escape(&a.target), escape(&a.rule));
    if summary {
        s.push_str(&format!("\n{}", escape(&a.summary)));
    }
    if let Some(r) = &a.resolution {
        s.push_str(&format!("\n_Resolved:_ {}", escape(r)));
    }
    if let Some(w) = &a.was {
        s.push_str(&format!("\n_Was:_ {}", escape(w)));
    }
    if !a.root_cause_lines.is_empty() {
        let lines = a.root_cause_lines.join("\n").replace("```", "'''");
        s.push_str(&format!("\n```{}```", escape(&lines)));
    }
    if let (Some(l), None) = (&a.link, &a.jid) {
        s.push_str(&format!("\n<{}|Flink web UI>", escape(l)));
    }
    if let Some(u) = &a.runbook_url {
        s.push_str(&format!("\n<{}|Runbook>", escape(u)));
    }
    let did = if a.actions.is_empty() { "nothing (alert only)".to_string() } else { a.actions.join("; ") };
    s.push_str(&format!("\n_Warden:_ {}", escape(&did)));
    cut(&s, MAX_SECTION)
}

fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
}

/// The webhook payload: `text` (from the `text` template) and Block Kit `blocks`.
pub fn payload(env: &minijinja::Environment<'static>, channel: &str, c: &SlackConfig, v: &View) -> Value {
    // Values from outside (job names, exceptions) are escaped before they reach mrkdwn, in `text` as in the blocks.
    let text =
        template::render_escaped(env, channel, "text", c.text.as_deref(), template::DEFAULT_SLACK_TEXT, v, escape);
    let text = if text.trim().is_empty() { escape(&v.headline) } else { text };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&v.headline, MAX_HEADER), "emoji": true}}),
    ];
    match &c.body {
        Some(src) => {
            let body = template::render_escaped(env, channel, "body", Some(src), "{{ headline }}", v, escape);
            let chars: Vec<char> = body.chars().collect();
            for chunk in chars.chunks(MAX_SECTION).take(10) {
                let t: String = chunk.iter().collect();
                if !t.trim().is_empty() {
                    blocks.push(section(&t));
                }
            }
        }
        None => {
            // One alert: the header is its summary already (unless the header had to cut it).
            let repeat = v.alerts.len() > 1 || v.headline.chars().count() > MAX_HEADER;
            for a in v.alerts.iter().take(MAX_ALERT_SECTIONS) {
                blocks.push(section(&alert_section(a, repeat)));
            }
            if v.alerts.len() > MAX_ALERT_SECTIONS {
                let rest: Vec<String> =
                    v.alerts[MAX_ALERT_SECTIONS..].iter().map(|a| escape(&a.job)).take(100).collect();
                blocks.push(section(&cut(
                    &format!("…and {} more: {}", v.alerts.len() - MAX_ALERT_SECTIONS, rest.join(", ")),
                    MAX_SECTION,
                )));
            }
        }
    }
    let rules: Vec<&str> = {
        let mut r: Vec<&str> = v.alerts.iter().map(|a| a.rule.as_str()).collect();
        r.dedup();
        r
    };
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": escape(&format!("{} · {} · {} · {}", v.event, v.severity, v.target.name, rules.join(", ")))}]}));
    let mut p = json!({"text": cut(&text, 3000), "blocks": blocks});
    if let Some(u) = &c.username {
        p["username"] = json!(u);
    }
    if let Some(i) = &c.icon_emoji {
        p["icon_emoji"] = json!(i);
    }
    if let Some(i) = &c.icon_url {
        p["icon_url"] = json!(i);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_answers_map_to_retry_or_not() {
        assert!(classify(200, "ok", None).is_ok());
        assert!(matches!(classify(400, "invalid_payload", None), Err(DeliveryError::Permanent { .. })));
        assert!(matches!(classify(400, "no_text", None), Err(DeliveryError::Permanent { .. })));
        assert!(matches!(classify(404, "no_service", None), Err(DeliveryError::Permanent { .. })));
        assert!(matches!(classify(410, "channel_is_archived", None), Err(DeliveryError::Permanent { .. })));
        assert!(matches!(classify(500, "", None), Err(DeliveryError::Retry { after: None, .. })));
        assert_eq!(
            classify(429, "rate_limited", Some(Duration::from_secs(7))),
            Err(DeliveryError::Retry {
                reason: "Slack is rate limiting (429 `rate_limited`)".into(),
                after: Some(Duration::from_secs(7))
            })
        );
        let e = classify(404, "no_service", None).unwrap_err();
        assert!(e.reason().contains("404 `no_service`"), "{e}");
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
    }

    /// Every string in the payload, with where it is.
    fn strings(v: &Value, at: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::String(s) => out.push((at, s.clone())),
            Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| strings(x, format!("{at}[{i}]"), out)),
            Value::Object(o) => o.iter().for_each(|(k, x)| strings(x, format!("{at}.{k}"), out)),
            _ => {}
        }
    }

    #[test]
    fn a_hostile_job_name_is_escaped_in_text_and_blocks_alike() {
        use crate::model::{AlertRecord, Severity};
        let job = "<!channel> *ALERT* <http://evil.example|click> & more";
        let target =
            template::TargetView { name: "jm".into(), url: "http://jm:8081".into(), labels: Default::default() };
        let now = chrono::Utc::now();
        let rec = AlertRecord {
            time: now,
            event: "firing".into(),
            rule: "flink/job-not-running".into(),
            target: "jm".into(),
            subject: job.into(),
            severity: Severity::Critical,
            summary: format!("job {job} FAILED"),
            details: serde_json::json!({"root_cause": "java.lang.Exception: <!here> boom"}),
        };
        let v =
            template::view("firing", target.clone(), vec![template::alert_view(&rec, &target, vec![], 5, now)], now);
        let env = minijinja::Environment::new();
        for text in [None, Some("{{ headline }} — {{ alerts[0].job }}: {{ alerts[0].root_cause }}".to_string())] {
            let cfg = SlackConfig {
                text: text.clone(),
                ..serde_yaml::from_str("webhook_url: https://hooks.example/x").unwrap()
            };
            let p = payload(&env, "s", &cfg, &v);
            let mut all = vec![];
            strings(&p, String::new(), &mut all);
            for (at, s) in &all {
                if at.ends_with("type") || at.starts_with(".blocks[0].") {
                    continue; // the header block (first) is plain_text: Slack shows it literally
                }
                assert!(
                    !s.contains("<!channel>") && !s.contains("<!here>") && !s.contains("<http://evil"),
                    "{at}: {s}"
                );
            }
            assert!(p["text"].as_str().unwrap().contains("&lt;!channel&gt;"), "{}", p["text"]);
        }
    }
}
