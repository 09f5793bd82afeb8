//! Channels: turning a message's view into what each kind sends, and sending it. Every error text that leaves
//! this module has the channel's secrets (SMTP credentials, the webhook URL, plugin environment) blanked out.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::AlertRecord;

use super::config::ChannelConfig;
use super::template::{self, View};
use super::{email, plugin, slack};

/// What a message carries, rendered for its channel when it was queued (so that retries send the same thing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Unique id: the e-mail's `Message-ID` local part and the plugin document's `message_id`.
    pub id: String,
    /// The channel's name.
    pub channel: String,
    /// When it was queued.
    pub created: DateTime<Utc>,
    /// Whether it is a `warden notify test` message.
    #[serde(default)]
    pub test: bool,
    /// What templates saw.
    pub view: View,
    /// The alerts as the alert log writes them (for `file` channels).
    pub records: Vec<AlertRecord>,
    /// The channel-specific rendering.
    pub rendered: Rendered,
}

/// A message rendered for one kind of channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rendered {
    /// E-mail subject and plain-text body.
    Email {
        /// Subject line.
        subject: String,
        /// Body.
        body: String,
    },
    /// The JSON posted to the webhook.
    Slack {
        /// `{text, blocks, username?, icon_emoji?, icon_url?}`.
        payload: serde_json::Value,
    },
    /// Lines for the file are the records themselves.
    File,
    /// The JSON document for the plugin's stdin.
    Plugin {
        /// The document.
        document: serde_json::Value,
    },
}

/// Why a delivery failed, and whether to try again.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryError {
    /// Try again later (after `after` when the receiver said so, e.g. Slack's `Retry-After`).
    Retry {
        /// What happened (secrets redacted).
        reason: String,
        /// How long the receiver asked us to wait.
        after: Option<std::time::Duration>,
    },
    /// Trying again would fail the same way.
    Permanent {
        /// What happened (secrets redacted).
        reason: String,
    },
}

impl DeliveryError {
    /// The reason.
    pub fn reason(&self) -> &str {
        match self {
            DeliveryError::Retry { reason, .. } | DeliveryError::Permanent { reason } => reason,
        }
    }

    /// A retryable error.
    pub fn retry(reason: impl Into<String>) -> Self {
        DeliveryError::Retry { reason: reason.into(), after: None }
    }

    /// A permanent error.
    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent { reason: reason.into() }
    }

    fn redacted(self, secrets: &[String]) -> Self {
        match self {
            DeliveryError::Retry { reason, after } => DeliveryError::Retry { reason: redact(&reason, secrets), after },
            DeliveryError::Permanent { reason } => DeliveryError::Permanent { reason: redact(&reason, secrets) },
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Replaces every occurrence of a secret (and of its URL-encoded form) with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() < 3 {
            continue;
        }
        out = out.replace(s.as_str(), "***");
        let enc: String = url_encode(s);
        if enc != *s {
            out = out.replace(&enc, "***");
        }
    }
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An error's text with its sources (`a: b: c`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// A channel ready to send.
pub struct Sender {
    name: String,
    kind: Kind,
    secrets: Vec<String>,
    config: ChannelConfig,
}

enum Kind {
    Email(Box<email::EmailSender>),
    Slack(slack::SlackSender),
    File(FileSender),
    Plugin(plugin::PluginSender),
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("name", &self.name).field("kind", &self.config.kind()).finish()
    }
}

impl Sender {
    /// Builds channel `name` (TLS settings, HTTP client). Fails with a message naming what is wrong.
    pub fn new(name: &str, config: &ChannelConfig) -> Result<Sender, String> {
        let secrets = config.secrets();
        let kind = match config {
            ChannelConfig::Email(c) => {
                Kind::Email(Box::new(email::EmailSender::new(c).map_err(|e| redact(&e, &secrets))?))
            }
            ChannelConfig::Slack(c) => Kind::Slack(slack::SlackSender::new(c).map_err(|e| redact(&e, &secrets))?),
            ChannelConfig::File(c) => Kind::File(FileSender { path: c.path.clone(), lock: Mutex::new(()) }),
            ChannelConfig::Plugin(c) => Kind::Plugin(plugin::PluginSender::new(c)),
        };
        Ok(Sender { name: name.to_string(), kind, secrets, config: config.clone() })
    }

    /// The channel's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `email`, `slack`, `file` or `plugin`.
    pub fn kind(&self) -> &'static str {
        self.config.kind()
    }

    /// Where this channel delivers, for people (`a@x, b@y via smtp.example.com:587`); never shows secrets.
    pub fn describe(&self) -> String {
        match &self.config {
            ChannelConfig::Email(c) => {
                let rcpt: Vec<&str> = c.to.iter().chain(&c.cc).chain(&c.bcc).map(String::as_str).collect();
                format!("e-mail to {} via {}:{}", rcpt.join(", "), c.host, c.port())
            }
            ChannelConfig::Slack(_) => "Slack webhook".into(),
            ChannelConfig::File(c) => format!("file {}", c.path.display()),
            ChannelConfig::Plugin(c) => format!("plugin {}", c.command.first().map(String::as_str).unwrap_or("")),
        }
    }

    /// Renders a view for this channel.
    pub fn render(
        &self,
        env: &minijinja::Environment<'static>,
        id: String,
        view: View,
        records: Vec<AlertRecord>,
        now: DateTime<Utc>,
        test: bool,
    ) -> Message {
        let name = &self.name;
        let rendered = match &self.config {
            ChannelConfig::Email(c) => Rendered::Email {
                subject: template::render(env, name, "subject", c.subject.as_deref(), template::DEFAULT_SUBJECT, &view)
                    .lines()
                    .next()
                    .unwrap_or("")
                    // One header line: no control character of a job name or exception reaches the headers.
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect(),
                body: template::render(env, name, "body", c.body.as_deref(), template::DEFAULT_BODY, &view),
            },
            ChannelConfig::Slack(c) => Rendered::Slack { payload: slack::payload(env, name, c, &view) },
            ChannelConfig::File(_) => Rendered::File,
            ChannelConfig::Plugin(c) => {
                let text = template::render(env, name, "text", c.text.as_deref(), template::DEFAULT_BODY, &view);
                Rendered::Plugin { document: plugin::document(name, &id, now, test, &view, text) }
            }
        };
        Message { id, channel: self.name.clone(), created: now, test, view, records, rendered }
    }

    /// Sends one message.
    pub async fn deliver(&self, m: &Message) -> Result<(), DeliveryError> {
        let r = match (&self.kind, &m.rendered) {
            (Kind::Email(e), Rendered::Email { subject, body }) => e.send(m, subject, body).await,
            (Kind::Slack(s), Rendered::Slack { payload }) => s.send(payload).await,
            (Kind::File(f), Rendered::File) => f.append(&m.records),
            (Kind::Plugin(p), Rendered::Plugin { document }) => p.run(document).await,
            _ => Err(DeliveryError::permanent(format!(
                "the queued message was rendered for another kind of channel than `{}` ({}); was the channel's \
                 type changed?",
                self.name,
                self.kind()
            ))),
        };
        r.map_err(|e| e.redacted(&self.secrets))
    }
}

struct FileSender {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileSender {
    fn append(&self, records: &[AlertRecord]) -> Result<(), DeliveryError> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| DeliveryError::permanent(e.to_string()))?;
            buf.push(b'\n');
        }
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let io = |e: std::io::Error| DeliveryError::retry(format!("cannot write `{}`: {e}", self.path.display()));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(io)?;
        f.write_all(&buf).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_covers_plain_and_url_encoded_forms() {
        let secrets = vec!["https://hooks.slack.com/services/T0/B0/xyz".to_string(), "p@ss w0rd".to_string()];
        let t = "error sending request for url (https://hooks.slack.com/services/T0/B0/xyz); auth p@ss w0rd / p%40ss%20w0rd";
        assert_eq!(redact(t, &secrets), "error sending request for url (***); auth *** / ***");
    }
}
