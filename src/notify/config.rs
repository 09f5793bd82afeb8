//! The `notify:` section of `warden.yaml`: channels, routes, grouping, reminders, retries and maintenance windows.
//! Every field's doc comment is the user reference.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::units;
use crate::config::yaml::{join_index, join_key, YamlDoc};
use crate::config::Secret;
use crate::diag::{closest, Diagnostic};

use super::matcher::Matcher;
use super::template;

/// The `notify:` section of `warden.yaml`.
///
/// ```yaml
/// notify:
///   group_wait: 10s
///   channels:
///     oncall: {type: slack, webhook_url: "${SLACK_WEBHOOK}"}
///     disk: {type: file, path: notifications.jsonl}
///   routes:
///     - match: {severity: critical}
///       channels: [oncall]
///   default: {channels: [disk]}
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Where notifications can go, by name: `{type: email | slack | file | plugin, ...}`.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Routes, tried in order. The first route whose `match` fits an alert sends it to its channels; with
    /// `continue: true` the next routes are tried too. Default: none (everything goes to `default`).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Where alerts go that no route matched. Default: nowhere (they are still in the alert log and journal).
    #[serde(default)]
    pub default: Option<DefaultRouteConfig>,
    /// Alerts for the same target and event that arrive within this time of the first one go out as one message
    /// (a TaskManager loss that fails twenty jobs is one message listing them). `0s` sends each alert at once.
    /// Routes may override it. Default `10s`.
    #[serde(default = "default_group_wait", with = "units::duration")]
    pub group_wait: Duration,
    /// The shortest time between two messages about the same still-firing alert on one channel. Reminders are
    /// produced by the dispatcher every `dispatch.alert_repeat` (or a rule's `cooldown`); a channel hears at most
    /// one every `repeat_interval`. Routes may override it. Default: every reminder the dispatcher produces.
    #[serde(default, with = "units::opt_duration")]
    pub repeat_interval: Option<Duration>,
    /// Send one *resolved* message when an alert clears (only to channels that were told it fired). Routes may
    /// override it. Default `true`.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// How many lines of the root exception a message shows. Default `5`.
    #[serde(default = "default_root_cause_lines")]
    pub root_cause_lines: usize,
    /// Retries of failed deliveries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Recurring maintenance windows: alerts they match are journalled but not sent while the window is open;
    /// those still firing when it closes are sent then.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            channels: BTreeMap::new(),
            routes: vec![],
            default: None,
            group_wait: default_group_wait(),
            repeat_interval: None,
            send_resolved: true,
            root_cause_lines: default_root_cause_lines(),
            retry: RetryConfig::default(),
            maintenance: vec![],
        }
    }
}

fn default_group_wait() -> Duration {
    Duration::from_secs(10)
}
fn default_root_cause_lines() -> usize {
    5
}
fn yes() -> bool {
    true
}

/// One notification channel; `type` says which kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChannelConfig {
    /// E-mail over SMTP.
    Email(EmailConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// A JSON-lines file: one line per alert, in the alert log's format.
    File(FileConfig),
    /// An executable that receives each message as JSON on stdin.
    Plugin(PluginConfig),
}

impl ChannelConfig {
    /// `email`, `slack`, `file` or `plugin`.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Email(_) => "email",
            ChannelConfig::Slack(_) => "slack",
            ChannelConfig::File(_) => "file",
            ChannelConfig::Plugin(_) => "plugin",
        }
    }

    /// The secret values of this channel (for redaction of error texts).
    pub fn secrets(&self) -> Vec<String> {
        let mut out = vec![];
        match self {
            ChannelConfig::Email(e) => {
                if let Some(a) = &e.auth {
                    out.push(a.password.expose().to_string());
                    if a.username.is_reference() {
                        out.push(a.username.expose().to_string());
                    }
                }
            }
            ChannelConfig::Slack(s) => out.push(s.webhook_url.expose().to_string()),
            ChannelConfig::Plugin(p) => out.extend(p.env.values().map(|s| s.expose().to_string())),
            ChannelConfig::File(_) => {}
        }
        out.retain(|s| s.len() >= 3);
        out
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or network (port 25). Not allowed with `auth`.
    None,
}

/// E-mail over SMTP (`type: email`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server's host name (also the name its TLS certificate must carry).
    pub host: String,
    /// The SMTP port. Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub tls: TlsMode,
    /// A PEM file with CA certificates to trust for the server (in addition to the public roots), e.g. a company
    /// CA or a self-signed server certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Log in with a user name and password (secret references such as `${SMTP_PASSWORD}` or
    /// `file:/run/secrets/smtp`).
    #[serde(default)]
    pub auth: Option<SmtpAuth>,
    /// The sender, e.g. `Warden <warden@example.com>`.
    pub from: String,
    /// Recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Copy recipients.
    #[serde(default)]
    pub cc: Vec<String>,
    /// Blind-copy recipients (they get the message; no header names them).
    #[serde(default)]
    pub bcc: Vec<String>,
    /// The subject line, a template (see "Templates" in the README). Default: the one-line headline.
    #[serde(default)]
    pub subject: Option<String>,
    /// The plain-text body, a template. Default: headline, then per alert the target, job, state, since when,
    /// root cause lines, Flink UI link and what Warden did.
    #[serde(default)]
    pub body: Option<String>,
    /// Timeout of each SMTP command (connect, TLS, login, send). Default `30s`.
    #[serde(default = "default_smtp_timeout", with = "units::duration")]
    pub timeout: Duration,
}

fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}

impl EmailConfig {
    /// The port, from `port` or the TLS mode.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.tls {
            TlsMode::Starttls => 587,
            TlsMode::Tls => 465,
            TlsMode::None => 25,
        })
    }
}

/// SMTP login.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpAuth {
    /// User name (may be a secret reference).
    pub username: Secret,
    /// Password: a secret reference such as `${SMTP_PASSWORD}` or `file:/run/secrets/smtp-password`.
    pub password: Secret,
}

/// A Slack incoming webhook (`type: slack`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The webhook URL. It is itself the credential: give it as `${SLACK_WEBHOOK_URL}` or `file:...`; Warden
    /// never prints it.
    pub webhook_url: Secret,
    /// Post as this user name (honoured by legacy webhooks and some workspaces).
    #[serde(default)]
    pub username: Option<String>,
    /// Post with this emoji as the icon, e.g. `:rotating_light:`.
    #[serde(default)]
    pub icon_emoji: Option<String>,
    /// Post with the image at this URL as the icon.
    #[serde(default)]
    pub icon_url: Option<String>,
    /// The plain `text` of the message: what notifications and clients without Block Kit show. A template.
    /// Default: the headline.
    #[serde(default)]
    pub text: Option<String>,
    /// The Block Kit section text (Slack mrkdwn), a template; replaces the built-in one section per alert.
    #[serde(default)]
    pub body: Option<String>,
    /// Timeout of one webhook call. Default `10s`.
    #[serde(default = "default_http_timeout", with = "units::duration")]
    pub timeout: Duration,
}

fn default_http_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A JSON-lines file (`type: file`): one line per alert, in the same format as the alert log
/// (`{"time", "event", "rule", "target", "subject", "severity", "summary", "details"}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file, relative to `warden.yaml`'s directory; created with its directory on first write.
    pub path: PathBuf,
}

/// An executable channel (`type: plugin`): Warden runs `command` once per message with the message as one JSON
/// document on stdin (format in `plugins/notify-webhook/README.md`). Exit 0: delivered; exit 65 (`EX_DATAERR`):
/// rejected for good, not retried; anything else (or the timeout): retried later.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Program and arguments, e.g. `[plugins/notify-webhook/notify-webhook, "https://hooks.example.com/x"]`. A
    /// program path with a `/` is relative to `warden.yaml`'s directory; a bare name is looked up in `PATH`.
    pub command: Vec<String>,
    /// Extra environment variables for the program (values may be secrets: `${ENV}`, `file:`).
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// The `text` field of the JSON document, a template. Default: the same text as the e-mail body.
    #[serde(default)]
    pub text: Option<String>,
    /// Kill the program after this long and retry later. Default `30s`.
    #[serde(default = "default_plugin_timeout", with = "units::duration")]
    pub timeout: Duration,
}

fn default_plugin_timeout() -> Duration {
    Duration::from_secs(30)
}

/// What an alert must look like for a route, silence or maintenance window to apply. Every field given must
/// match; each takes one value or a list of alternatives, and values may use `*` as a wildcard (`clicks-*`).
/// An empty `match` matches every alert.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `info`, `warning` or `critical`.
    #[serde(default)]
    pub severity: Option<OneOrMany>,
    /// Labels of the alert's target (`targets[].labels`), e.g. `{env: prod}`.
    #[serde(default)]
    pub labels: BTreeMap<String, OneOrMany>,
    /// The pack of the rule that raised the alert, e.g. `flink`.
    #[serde(default)]
    pub pack: Option<OneOrMany>,
    /// The rule, as `pack/rule` (`flink/job-not-running`) or its short name (`job-not-running`).
    #[serde(default)]
    pub rule: Option<OneOrMany>,
    /// The target's name.
    #[serde(default)]
    pub target: Option<OneOrMany>,
    /// The job name (the alert's subject).
    #[serde(default)]
    pub job: Option<OneOrMany>,
    /// `firing`, `reminder`, `resolved`, `giving_up`, `restarted`, `restart_failed` or `log`. Without it, a match
    /// applies to every event except `log` (rule log lines are only notified by routes that ask for them).
    #[serde(default)]
    pub event: Option<OneOrMany>,
}

/// One value or a list of alternatives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values.
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A route: which alerts go to which channels, with optional overrides of the lifecycle settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Which alerts this route takes (see [`MatchConfig`]). Default: all.
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
    /// Channel names under `notify.channels`.
    pub channels: Vec<String>,
    /// Keep trying the next routes after this one matched. Default `false`.
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    /// Overrides `notify.group_wait` for this route's channels.
    #[serde(default, with = "units::opt_duration")]
    pub group_wait: Option<Duration>,
    /// Overrides `notify.repeat_interval` for this route's channels.
    #[serde(default, with = "units::opt_duration")]
    pub repeat_interval: Option<Duration>,
    /// Overrides `notify.send_resolved` for this route's channels.
    #[serde(default)]
    pub send_resolved: Option<bool>,
    /// A runbook link shown with every alert this route sends that does not bring its own (a rule's
    /// `details.runbook_url` wins).
    #[serde(default)]
    pub runbook_url: Option<String>,
}

/// The route for alerts that no route matched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRouteConfig {
    /// Channel names under `notify.channels`.
    pub channels: Vec<String>,
    /// Overrides `notify.group_wait`.
    #[serde(default, with = "units::opt_duration")]
    pub group_wait: Option<Duration>,
    /// Overrides `notify.repeat_interval`.
    #[serde(default, with = "units::opt_duration")]
    pub repeat_interval: Option<Duration>,
    /// Overrides `notify.send_resolved`.
    #[serde(default)]
    pub send_resolved: Option<bool>,
}

/// Delivery retries: exponential backoff with jitter, from `initial_backoff` doubling up to `max_backoff`, until
/// `give_up_after` has passed since the message was queued. A Slack `429` waits its `Retry-After`. Permanent
/// errors (Slack `400 invalid_payload`, `404 no_service`, SMTP `5xx` other than a failed login) are not retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The first wait after a failure. Default `1s`.
    #[serde(default = "default_initial_backoff", with = "units::duration")]
    pub initial_backoff: Duration,
    /// The longest wait between two attempts. Default `5m`.
    #[serde(default = "default_max_backoff", with = "units::duration")]
    pub max_backoff: Duration,
    /// Stop retrying a message this long after it was queued (it is journalled as failed). Default `24h`.
    #[serde(default = "default_give_up_after", with = "units::duration")]
    pub give_up_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            give_up_after: default_give_up_after(),
        }
    }
}

fn default_initial_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_give_up_after() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A recurring maintenance window: it opens at each time of `cron` and stays open for `duration`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// A name for messages and the journal.
    pub name: String,
    /// When the window opens: cron with seconds, in UTC (`sec min hour day-of-month month day-of-week`), e.g.
    /// `"0 0 2 * * Sun"` for Sundays at 02:00 UTC.
    pub cron: String,
    /// How long it stays open, e.g. `2h`.
    #[serde(with = "units::duration")]
    pub duration: Duration,
    /// Which alerts it silences. Default: all.
    #[serde(default, rename = "match")]
    pub matches: MatchConfig,
}

impl NotifyConfig {
    /// Checks what types cannot (references between routes and channels, addresses, URLs, templates, cron
    /// expressions, secrets, files) and resolves secrets and relative paths against `base`. Problems are pushed
    /// with positions under `notify.` in `doc`.
    /// `environment: false` (`warden check --no-environment`) leaves secrets that name the environment or a file
    /// unresolved and does not read CA files or plugin programs outside `base`.
    pub fn check(&mut self, doc: &YamlDoc, base: &Path, environment: bool, diags: &mut Vec<Diagnostic>) {
        let names: Vec<String> = self.channels.keys().cloned().collect();
        for (name, ch) in self.channels.iter_mut() {
            let path = join_key("notify.channels", name);
            check_channel(doc, base, environment, name, &path, ch, diags);
        }
        let known: Vec<&str> = names.iter().map(String::as_str).collect();
        for (i, r) in self.routes.iter().enumerate() {
            let path = join_index("notify.routes", i);
            check_channel_refs(doc, &path, &r.channels, &known, diags);
            check_match(doc, &join_key(&path, "match"), &r.matches, diags);
        }
        if let Some(d) = &self.default {
            check_channel_refs(doc, "notify.default", &d.channels, &known, diags);
        }
        let mut windows = HashSet::new();
        for (i, m) in self.maintenance.iter().enumerate() {
            let path = join_index("notify.maintenance", i);
            if !windows.insert(m.name.clone()) {
                diags.push(doc.diag(&join_key(&path, "name"), format!("duplicate maintenance window `{}`", m.name)));
            }
            if let Err(e) = crate::schedule::Schedule::cron(&m.cron) {
                diags.push(doc.diag(&join_key(&path, "cron"), format!("maintenance window `{}`: {e}", m.name)));
            }
            if m.duration.is_zero() {
                diags.push(doc.diag(
                    &join_key(&path, "duration"),
                    format!("maintenance window `{}`: duration must be longer than 0s", m.name),
                ));
            }
            check_match(doc, &join_key(&path, "match"), &m.matches, diags);
        }
        let r = &self.retry;
        if r.initial_backoff.is_zero() {
            diags.push(doc.diag("notify.retry.initial_backoff", "initial_backoff must be longer than 0s"));
        }
        if r.max_backoff < r.initial_backoff {
            diags.push(doc.diag(
                "notify.retry.max_backoff",
                format!(
                    "max_backoff ({}) is shorter than initial_backoff ({})",
                    humantime::format_duration(r.max_backoff),
                    humantime::format_duration(r.initial_backoff)
                ),
            ));
        }
    }
}

fn check_channel_refs(doc: &YamlDoc, path: &str, channels: &[String], known: &[&str], diags: &mut Vec<Diagnostic>) {
    if channels.is_empty() {
        diags.push(doc.diag(&join_key(path, "channels"), "a route needs at least one channel"));
    }
    for (j, c) in channels.iter().enumerate() {
        if !known.contains(&c.as_str()) {
            let hint = match closest(c, known.iter().copied()) {
                Some(k) => format!(", did you mean `{k}`?"),
                None if known.is_empty() => "; no channels are defined under `notify.channels`".to_string(),
                None => format!("; channels: {}", known.join(", ")),
            };
            diags.push(doc.diag(&join_index(&join_key(path, "channels"), j), format!("unknown channel `{c}`{hint}")));
        }
    }
}

fn check_match(doc: &YamlDoc, path: &str, m: &MatchConfig, diags: &mut Vec<Diagnostic>) {
    if let Err((field, e)) = Matcher::from_config(m) {
        diags.push(doc.diag(&join_key(path, &field), e));
    }
}

fn check_template(doc: &YamlDoc, path: &str, channel: &str, src: &Option<String>, diags: &mut Vec<Diagnostic>) {
    if let Some(s) = src {
        if let Err(e) = template::check(s) {
            diags.push(doc.diag(path, format!("channel `{channel}`: invalid template: {e}")));
        }
    }
}

fn check_channel(
    doc: &YamlDoc,
    base: &Path,
    environment: bool,
    name: &str,
    path: &str,
    ch: &mut ChannelConfig,
    diags: &mut Vec<Diagnostic>,
) {
    let resolve = |s: &mut Secret, at: String, diags: &mut Vec<Diagnostic>| -> bool {
        if !environment && s.is_reference() {
            return false; // not looked at: it names the environment or a file
        }
        match s.resolve(base) {
            Ok(()) => true,
            Err(e) => {
                diags.push(doc.diag(&at, format!("channel `{name}`: {e}")));
                false
            }
        }
    };
    match ch {
        ChannelConfig::Email(e) => {
            if e.host.trim().is_empty() {
                diags.push(doc.diag(&join_key(path, "host"), format!("channel `{name}`: host is empty")));
            }
            if let Err(err) = e.from.parse::<lettre::message::Mailbox>() {
                diags.push(doc.diag(
                    &join_key(path, "from"),
                    format!("channel `{name}`: invalid sender address `{}`: {err}", e.from),
                ));
            }
            for (field, list) in [("to", &e.to), ("cc", &e.cc), ("bcc", &e.bcc)] {
                for (j, a) in list.iter().enumerate() {
                    if let Err(err) = a.parse::<lettre::message::Mailbox>() {
                        diags.push(doc.diag(
                            &join_index(&join_key(path, field), j),
                            format!("channel `{name}`: invalid address `{a}`: {err}"),
                        ));
                    }
                }
            }
            if e.to.is_empty() && e.cc.is_empty() && e.bcc.is_empty() {
                diags.push(
                    doc.diag(path, format!("channel `{name}`: give at least one recipient in `to`, `cc` or `bcc`")),
                );
            }
            if let Some(ca) = &e.ca_file {
                let p = base.join(ca);
                let look = environment || p.starts_with(base);
                match std::fs::read(&p) {
                    _ if !look => {}
                    Err(err) => diags.push(doc.diag(
                        &join_key(path, "ca_file"),
                        format!("channel `{name}`: cannot read CA file `{}`: {err}", p.display()),
                    )),
                    Ok(pem) if !pem_has_certificate(&pem) => diags.push(doc.diag(
                        &join_key(path, "ca_file"),
                        format!("channel `{name}`: CA file `{}` holds no PEM certificate", p.display()),
                    )),
                    Ok(_) => {}
                }
                e.ca_file = Some(p);
            }
            if let Some(a) = &mut e.auth {
                resolve(&mut a.username, join_key(path, "auth.username"), diags);
                resolve(&mut a.password, join_key(path, "auth.password"), diags);
                if e.tls == TlsMode::None {
                    diags.push(doc.diag(
                        &join_key(path, "tls"),
                        format!("channel `{name}`: `tls: none` with `auth` would send the password in clear text; use `starttls` or `tls`"),
                    ));
                }
            }
            check_template(doc, &join_key(path, "subject"), name, &e.subject, diags);
            check_template(doc, &join_key(path, "body"), name, &e.body, diags);
        }
        ChannelConfig::Slack(s) => {
            if resolve(&mut s.webhook_url, join_key(path, "webhook_url"), diags) {
                // The URL is the secret: say what is wrong with it without showing it.
                match reqwest::Url::parse(s.webhook_url.expose()) {
                    Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                    Ok(u) => diags.push(doc.diag(
                        &join_key(path, "webhook_url"),
                        format!("channel `{name}`: the webhook URL's scheme `{}` is not https", u.scheme()),
                    )),
                    Err(e) => diags.push(doc.diag(
                        &join_key(path, "webhook_url"),
                        format!("channel `{name}`: the webhook URL is not a valid URL ({e})"),
                    )),
                }
            }
            if s.icon_emoji.is_some() && s.icon_url.is_some() {
                diags.push(doc.diag(
                    &join_key(path, "icon_url"),
                    format!("channel `{name}`: give either `icon_emoji` or `icon_url`, not both"),
                ));
            }
            check_template(doc, &join_key(path, "text"), name, &s.text, diags);
            check_template(doc, &join_key(path, "body"), name, &s.body, diags);
        }
        ChannelConfig::File(f) => {
            f.path = base.join(&f.path);
        }
        ChannelConfig::Plugin(p) => {
            match p.command.first() {
                None => diags.push(
                    doc.diag(&join_key(path, "command"), format!("channel `{name}`: command needs at least a program")),
                ),
                Some(prog) if prog.contains('/') => {
                    let abs = base.join(prog);
                    if (environment || abs.starts_with(base)) && !is_executable(&abs) {
                        diags.push(doc.diag(
                            &join_index(&join_key(path, "command"), 0),
                            format!("channel `{name}`: `{}` is not an executable file", abs.display()),
                        ));
                    }
                    p.command[0] = abs.to_string_lossy().into_owned();
                }
                Some(_) => {}
            }
            for (k, v) in p.env.iter_mut() {
                resolve(v, join_key(&join_key(path, "env"), k), diags);
            }
            check_template(doc, &join_key(path, "text"), name, &p.text, diags);
        }
    }
}

/// True when `pem` holds at least one `CERTIFICATE` block.
pub(crate) fn pem_has_certificate(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn errs(text: &str) -> Vec<String> {
        match crate::config::load_str(Path::new("warden.yaml"), text) {
            Ok(_) => vec![],
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn a_full_example_loads_with_defaults() {
        // The secret comes from a file: tests never change the process environment (other tests run alongside).
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slack-hook"), "https://hooks.slack.test/services/T/B/x\n").unwrap();
        let text = "\
notify:
  channels:
    mail: {type: email, host: smtp.example.com, from: 'Warden <w@example.com>', to: [a@example.com]}
    slack: {type: slack, webhook_url: 'file:slack-hook'}
    disk: {type: file, path: out/n.jsonl}
  routes:
    - match: {severity: critical, labels: {env: [prod, staging]}}
      channels: [mail, slack]
      continue: true
  default: {channels: [disk]}
";
        let c = crate::config::load_str(&dir.path().join("warden.yaml"), text).unwrap().config.notify;
        assert_eq!(c.group_wait, std::time::Duration::from_secs(10));
        assert!(c.send_resolved);
        let super::ChannelConfig::File(f) = &c.channels["disk"] else { panic!() };
        assert_eq!(f.path, dir.path().join("out/n.jsonl"));
        let super::ChannelConfig::Slack(s) = &c.channels["slack"] else { panic!() };
        assert_eq!(s.webhook_url.expose(), "https://hooks.slack.test/services/T/B/x");
        let super::ChannelConfig::Email(e) = &c.channels["mail"] else { panic!() };
        assert_eq!(e.port(), 587);
        assert!(format!("{c:?}").contains("Secret(***)"));
        assert!(!format!("{c:?}").contains("hooks.slack.test"));
    }

    #[test]
    fn mistakes_are_reported_with_positions() {
        let text = "\
notify:
  channels:
    mail:
      type: email
      host: smtp.example.com
      from: not an address
      to: [ok@example.com, 'bad@']
      auth: {username: u, password: '${WARDEN_TEST_NO_SUCH_PASSWORD}'}
      tls: none
      subject: '{{ headline'
    hook: {type: slack, webhook_url: 'not a url'}
  routes:
    - match: {severity: urgent}
      channels: [mial]
  default: {channels: []}
  maintenance:
    - {name: nightly, cron: '0 0 2 * *', duration: 1h}
";
        let e = errs(text);
        let want = [
            "warden.yaml:6:13: channel `mail`: invalid sender address `not an address`",
            "warden.yaml:7:28: channel `mail`: invalid address `bad@`",
            "warden.yaml:8:37: channel `mail`: environment variable `WARDEN_TEST_NO_SUCH_PASSWORD` is not set",
            "warden.yaml:9:12: channel `mail`: `tls: none` with `auth`",
            "warden.yaml:10:16: channel `mail`: invalid template",
            "warden.yaml:11:38: channel `hook`: the webhook URL is not a valid URL",
            "warden.yaml:13:25: unknown severity `urgent`",
            "warden.yaml:14:18: unknown channel `mial`, did you mean `mail`?",
            "warden.yaml:15:23: a route needs at least one channel",
            "warden.yaml:17:29: maintenance window `nightly`: invalid cron expression",
        ];
        for w in want {
            assert!(e.iter().any(|m| m.starts_with(w)), "missing {w:?} in {e:#?}");
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
        assert!(!e.iter().any(|m| m.contains("not a url")), "the webhook URL is a secret: {e:#?}");
    }

    #[test]
    fn unknown_fields_and_types_point_at_the_key() {
        let e = errs("notify:\n  channels:\n    s: {type: slack, webhook_url: x, usernme: w}\n");
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("warden.yaml:3:") && e[0].contains("unknown field `usernme`"), "{e:#?}");
        let e = errs("notify:\n  channels:\n    s: {type: pager}\n");
        assert!(e[0].contains("unknown variant `pager`"), "{e:#?}");
        let e = errs("notify:\n  group_wiat: 1s\n");
        assert!(e[0].starts_with("warden.yaml:2:3: unknown field `group_wiat`, did you mean `group_wait`?"), "{e:#?}");
    }
}
