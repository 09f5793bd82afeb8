//! Notifications: routing alerts to channels (e-mail, Slack, a JSON-lines file, plugin executables), grouping,
//! reminders, *resolved* messages, silences and maintenance windows, templates, and a durable outbox with retries.
//!
//! The dispatcher decides *that* something is worth telling (`firing`, `reminder`, `resolved`, `giving_up`, `log`);
//! the executor hands each such [`AlertRecord`] to [`Notifier::submit`]; the notifier decides *whom* and *how*, and
//! delivers in the background ([`Notifier::run`]) from its outbox so that nothing is lost across outages and
//! restarts. A changed `notify` section is applied to the running notifier with [`Notifier::reconfigure`] (hot
//! reload): the settings are swapped whole, what the notifier remembers stays in the store.
//!
//! ```text
//! submit ─► firing set ─► routes ─► inhibited? ──yes──► journal "inhibited", hold (sent when nothing inhibits it)
//!                                      │no
//!                                      ▼
//!                                  silenced? ──yes──► journal "silenced", hold (sent when the silence ends)
//!                        │no
//!                        ▼
//!            notify_pending (group: channel × target × event, wait group_wait)
//!                        │ run(): group due
//!                        ▼
//!            render (templates, Slack blocks, plugin JSON) ─► notify_outbox + journal "queued"
//!                        │ run(): oldest per channel × target, when due
//!                        ▼
//!            deliver ─► sent │ retry (backoff + jitter, Retry-After) │ failed (permanent, journalled)
//! ```
//!
//! | module | concern |
//! |---|---|
//! | [`config`] | the `notify:` section and its checks |
//! | [`matcher`] | matching alerts (routes, silences, maintenance windows, inhibit rules) |
//! | [`inhibit`] | inhibit rules: one alert for a JobManager that is down, not one per job |
//! | [`template`] | what a message says: the view, the built-in templates, rendering |
//! | [`channel`], [`email`], [`slack`], [`plugin`] | rendering per channel kind and delivery |
//! | [`outbox`] | the notifier's SQLite tables |
//! | [`silence`] | silences and maintenance windows |
//! | `src/cli/silence.rs` (binary side) | `warden silence …`, `warden notify test` ([`send_test`]) |

pub mod channel;

pub mod config;
pub mod email;
pub mod inhibit;
pub mod matcher;
pub mod outbox;
pub mod plugin;
pub mod silence;
pub mod slack;
pub mod template;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::TargetConfig;
use crate::event::Events;
use crate::model::AlertRecord;
use crate::store::{NewEntry, Store};

pub use config::NotifyConfig;

use channel::{DeliveryError, Message, Sender};
use matcher::{Facts, Matcher};
use outbox::{AlertState, Change, Queued};
use template::TargetView;

/// The longest the delivery loop sleeps before it looks again (silence ends, `warden silence rm` from another
/// process, a manual clock in tests).
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Deliveries in flight at once (at most one per channel × target).
const MAX_IN_FLIGHT: usize = 16;
/// How long a shutdown waits for deliveries in flight.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A notification subsystem failure.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The outbox could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A route, maintenance window or template of the `notify` section is invalid (normally caught by the
    /// configuration check before it gets here).
    #[error("{at}: {message}")]
    Invalid {
        /// Where, e.g. `notify.routes[2].channels`.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// A channel could not be set up (TLS settings, CA file, HTTP client).
    #[error("channel `{channel}`: {message}")]
    Channel {
        /// The channel's name.
        channel: String,
        /// What is wrong (secrets redacted).
        message: String,
    },
    /// `warden notify test` named a channel that does not exist.
    #[error("no channel named `{channel}` under `notify.channels`{hint}")]
    UnknownChannel {
        /// The name given.
        channel: String,
        /// A suggestion or the list of channels.
        hint: String,
    },
    /// A test message could not be delivered.
    #[error("channel `{channel}` ({kind}): {reason}")]
    Delivery {
        /// The channel's name.
        channel: String,
        /// `email`, `slack`, `file`, `plugin`.
        kind: &'static str,
        /// The exact error (secrets redacted).
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Route {
    matcher: Matcher,
    channels: Vec<String>,
    continue_matching: bool,
    group_wait: Option<Duration>,
    repeat_interval: Option<Duration>,
    send_resolved: Option<bool>,
    runbook_url: Option<String>,
}

/// One channel an alert is routed to, with the lifecycle settings in force there.
#[derive(Debug, Clone, PartialEq)]
struct Hit {
    channel: String,
    group_wait: Duration,
    repeat_interval: Option<Duration>,
    send_resolved: bool,
    runbook_url: Option<String>,
}

/// Everything the `notify` section decides (routes, channels with their templates, maintenance windows, the
/// lifecycle settings) and the targets it knows: built whole, then swapped whole by [`Notifier::reconfigure`].
/// What the notifier remembers (the outbox, alerts waiting out `group_wait`, which channel heard which alert fire,
/// held alerts) lives in the store, keyed by channel name, and is not part of it.
#[derive(Clone)]
struct Setup {
    config: NotifyConfig,
    routes: Vec<Route>,
    default: Option<Route>,
    senders: BTreeMap<String, Arc<Sender>>,
    windows: Vec<silence::Window>,
    inhibit: Vec<inhibit::InhibitRule>,
    targets: HashMap<String, TargetView>,
    env: minijinja::Environment<'static>,
}

/// Routes, groups, silences and delivers alerts.
pub struct Notifier {
    setup: RwLock<Arc<Setup>>,
    store: Arc<Store>,
    clock: Clock,
    wake: tokio::sync::Notify,
    /// Channels that asked us to wait (Slack `429 Retry-After`), until when.
    blocked: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The firing alerts that match a `source` of the inhibit rules in force, for the settings they were picked
    /// with (read again from the store after a reconfiguration): what may inhibit, without reading and matching
    /// every firing alert for every alert submitted (a burst of thousands of job alerts).
    sources: Mutex<Option<(Arc<Setup>, Vec<AlertRecord>)>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("channels", &self.setup().senders.keys().collect::<Vec<_>>()).finish()
    }
}

fn target_views(targets: &[TargetConfig]) -> HashMap<String, TargetView> {
    targets
        .iter()
        .map(|t| (t.name.clone(), TargetView { name: t.name.clone(), url: t.url.clone(), labels: t.labels.clone() }))
        .collect()
}

fn senders(config: &NotifyConfig) -> Result<BTreeMap<String, Arc<Sender>>, NotifyError> {
    let mut out = BTreeMap::new();
    for (name, c) in &config.channels {
        let s = Sender::new(name, c).map_err(|message| NotifyError::Channel { channel: name.clone(), message })?;
        out.insert(name.clone(), Arc::new(s));
    }
    Ok(out)
}

fn chrono_d(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn new_message_id(now: DateTime<Utc>) -> String {
    format!("warden.{}.{:016x}", now.format("%Y%m%dT%H%M%S%.3f"), rand::thread_rng().gen::<u64>())
}

/// The templates a channel carries, by field name.
fn templates(c: &config::ChannelConfig) -> Vec<(&'static str, &Option<String>)> {
    match c {
        config::ChannelConfig::Email(e) => vec![("subject", &e.subject), ("body", &e.body)],
        config::ChannelConfig::Slack(s) => vec![("text", &s.text), ("body", &s.body)],
        config::ChannelConfig::Plugin(p) => vec![("text", &p.text)],
        config::ChannelConfig::File(_) => vec![],
    }
}

impl Setup {
    /// Builds everything `config` describes: compiles matchers and templates, checks that routes name existing
    /// channels, parses maintenance windows, and builds every channel (TLS settings, CA files, HTTP clients).
    /// Nothing is half-built: the first problem is the error.
    fn build(
        config: NotifyConfig,
        targets: &[TargetConfig],
        inhibit: Vec<inhibit::InhibitRule>,
    ) -> Result<Setup, NotifyError> {
        let invalid = |at: String, message: String| NotifyError::Invalid { at, message };
        let compile = |at: &str, m: &config::MatchConfig| {
            Matcher::from_config(m).map_err(|(field, e)| invalid(format!("{at}.match.{field}"), e))
        };
        let refs = |at: &str, channels: &[String]| -> Result<(), NotifyError> {
            if channels.is_empty() {
                return Err(invalid(format!("{at}.channels"), "a route needs at least one channel".into()));
            }
            match channels.iter().find(|c| !config.channels.contains_key(c.as_str())) {
                Some(c) => Err(invalid(format!("{at}.channels"), format!("unknown channel `{c}`"))),
                None => Ok(()),
            }
        };
        let mut routes = vec![];
        for (i, r) in config.routes.iter().enumerate() {
            let at = format!("notify.routes[{i}]");
            refs(&at, &r.channels)?;
            routes.push(Route {
                matcher: compile(&at, &r.matches)?,
                channels: r.channels.clone(),
                continue_matching: r.continue_matching,
                group_wait: r.group_wait,
                repeat_interval: r.repeat_interval,
                send_resolved: r.send_resolved,
                runbook_url: r.runbook_url.clone(),
            });
        }
        let default = match &config.default {
            Some(d) => {
                refs("notify.default", &d.channels)?;
                Some(Route {
                    matcher: Matcher::default(),
                    channels: d.channels.clone(),
                    continue_matching: false,
                    group_wait: d.group_wait,
                    repeat_interval: d.repeat_interval,
                    send_resolved: d.send_resolved,
                    runbook_url: None,
                })
            }
            None => None,
        };
        let mut windows = vec![];
        for (i, m) in config.maintenance.iter().enumerate() {
            let at = format!("notify.maintenance[{i}]");
            compile(&at, &m.matches)?;
            let w = silence::Window::new(m).ok_or_else(|| {
                invalid(at, format!("maintenance window `{}`: invalid cron expression or duration", m.name))
            })?;
            windows.push(w);
        }
        for (name, c) in &config.channels {
            for (field, src) in templates(c) {
                if let Some(src) = src {
                    template::check(src).map_err(|e| {
                        invalid(format!("notify.channels.{name}.{field}"), format!("invalid template: {e}"))
                    })?;
                }
            }
        }
        Ok(Setup {
            senders: senders(&config)?,
            routes,
            default,
            windows,
            inhibit,
            targets: target_views(targets),
            env: template::environment(),
            config,
        })
    }

    fn hits(&self, r: &Route, out: &mut Vec<Hit>) {
        for c in &r.channels {
            if self.senders.contains_key(c) && !out.iter().any(|h| &h.channel == c) {
                out.push(Hit {
                    channel: c.clone(),
                    group_wait: r.group_wait.unwrap_or(self.config.group_wait),
                    repeat_interval: r.repeat_interval.or(self.config.repeat_interval),
                    send_resolved: r.send_resolved.unwrap_or(self.config.send_resolved),
                    runbook_url: r.runbook_url.clone(),
                });
            }
        }
    }

    /// The channels an alert goes to: the routes in order (stopping at the first match without `continue`), else
    /// the default route.
    fn route(&self, f: &Facts<'_>) -> Vec<Hit> {
        let mut out = vec![];
        let mut matched = false;
        for r in &self.routes {
            if r.matcher.matches(f) {
                matched = true;
                self.hits(r, &mut out);
                if !r.continue_matching {
                    break;
                }
            }
        }
        if !matched && f.record.event != "log" {
            if let Some(d) = &self.default {
                self.hits(d, &mut out);
            }
        }
        out
    }

    /// True when `r` may inhibit other alerts under the rules in force.
    fn is_source(&self, r: &AlertRecord) -> bool {
        let t = self.target(&r.target);
        let f = Facts { record: r, labels: &t.labels };
        self.inhibit.iter().any(|rule| rule.is_source(&f))
    }

    fn target(&self, name: &str) -> TargetView {
        self.targets.get(name).cloned().unwrap_or_else(|| TargetView { name: name.to_string(), ..Default::default() })
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let r = &self.config.retry;
        let exp = r.initial_backoff.as_secs_f64() * 2f64.powi(attempts.saturating_sub(1).min(40) as i32);
        let cap = exp.min(r.max_backoff.as_secs_f64());
        Duration::from_secs_f64(cap * rand::thread_rng().gen_range(0.5..=1.0))
    }
}

impl Notifier {
    /// A notifier for `config` that knows `targets` (for labels in routes and links to the Flink web UI), keeping
    /// its outbox in `store`. Builds every channel (TLS settings, HTTP clients); fails, as
    /// [`Notifier::reconfigure`] does, when a route names an unknown channel or a matcher, template, maintenance
    /// window or channel cannot be built (the configuration check reports all of those earlier, with positions).
    pub fn new(
        config: NotifyConfig,
        targets: &[TargetConfig],
        store: Arc<Store>,
        clock: Clock,
        events: Events,
    ) -> Result<Self, NotifyError> {
        let _ = events;
        outbox::init(&store)?;
        Ok(Self {
            setup: RwLock::new(Arc::new(Setup::build(config, targets, vec![])?)),
            store,
            clock,
            wake: tokio::sync::Notify::new(),
            blocked: Mutex::new(HashMap::new()),
            sources: Mutex::new(None),
        })
    }

    /// Applies a changed `notify` section (and target list) to the running notifier, without a restart.
    ///
    /// The new routes, channels (with their templates and credentials), maintenance windows and lifecycle
    /// settings are built completely first; on any error the notifier keeps the set it had and the error says
    /// what is wrong. Otherwise they replace the old ones in one step: an alert is routed and a message rendered
    /// and delivered either entirely with the old set or entirely with the new one.
    ///
    /// What the notifier remembers is kept, because it lives in the store by channel name: messages in the
    /// outbox (and their retries), alerts waiting out `group_wait`, held (silenced) alerts, and which channel
    /// heard which alert fire — so a *resolved* still goes only to channels that were told it fired, and nothing
    /// is sent twice. (It goes to those of them the new routes pick for it: a channel the new routes no longer
    /// send the alert to does not hear it resolve.) A channel that keeps its name keeps all of that and delivers with its new settings (a
    /// changed Slack URL or SMTP password applies to messages already queued). A removed channel's waiting
    /// alerts are dropped with a warning and its queued messages are journalled as failed. Deliveries already in
    /// flight finish with the settings they started with.
    pub fn reconfigure(&self, cfg: NotifyConfig, targets: &[crate::config::TargetConfig]) -> Result<(), NotifyError> {
        let inhibit = self.setup().inhibit.clone();
        self.reconfigure_with(cfg, targets, inhibit)
    }

    /// Installs the inhibit rules in force (the packs' defaults and `inhibit.rules`, see [`inhibit`]) at start,
    /// keeping the rest of the settings.
    pub fn with_inhibit_rules(self, rules: Vec<inhibit::InhibitRule>) -> Self {
        let old = self.setup();
        let new = Setup { inhibit: rules, ..Setup::clone(&old) };
        *self.setup.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self
    }

    /// [`Notifier::reconfigure`] with a new set of inhibit rules, swapped in the same step as the rest. Alerts
    /// held back by an inhibition that no longer applies are sent (as firing, if they still fire) on the next
    /// round of [`Notifier::run`].
    pub fn reconfigure_with(
        &self,
        cfg: NotifyConfig,
        targets: &[crate::config::TargetConfig],
        inhibit: Vec<inhibit::InhibitRule>,
    ) -> Result<(), NotifyError> {
        let new = Arc::new(Setup::build(cfg, targets, inhibit)?);
        let names: Vec<String> = new.senders.keys().cloned().collect();
        *self.setup.write().unwrap_or_else(|p| p.into_inner()) = new;
        // A channel that is gone no longer waits for anyone's Retry-After.
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).retain(|c, _| names.contains(c));
        tracing::info!(channels = %names.join(", "), "notification settings reloaded");
        self.wake.notify_one();
        Ok(())
    }

    /// The settings in force now (one consistent set for the whole of an operation).
    fn setup(&self) -> Arc<Setup> {
        self.setup.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn silenced_by(&self, s: &Setup, f: &Facts<'_>, now: DateTime<Utc>) -> Result<Option<String>, NotifyError> {
        let silences = silence::list(&self.store, now, false)?;
        Ok(silence::silenced_by(&silences, &s.windows, f, now))
    }

    /// Accepts one alert for routing and delivery. Must be quick and must not lose the alert: it is written to the
    /// outbox (or journalled as silenced) before this returns.
    pub fn submit(&self, record: &AlertRecord) -> Result<(), NotifyError> {
        let s = self.setup();
        // Every alert counts as a possible source of inhibition, whether or not a route sends it anywhere: the
        // set of firing alerts is updated in the same transaction as the rest of what this alert changes.
        let track = matches!(record.event.as_str(), "firing" | "reminder" | "resolved");
        let target = s.target(&record.target);
        let facts = Facts { record, labels: &target.labels };
        let hits = if s.senders.is_empty() { vec![] } else { s.route(&facts) };
        if hits.is_empty() {
            if track {
                inhibit::track(&self.store, record)?;
                self.track_source(&s, record);
            }
            return Ok(());
        }
        let now = self.clock.now();
        let inhibited = self.inhibited_by(&s, &facts)?;
        let silenced = match &inhibited {
            Some(by) => Some(format!("inhibited {by}")),
            None => self.silenced_by(&s, &facts, now)?,
        };
        let key = outbox::alert_key(record);
        let mut changes = vec![];
        let mut journal_silenced = vec![];
        let mut never_sent = vec![];
        for h in hits {
            let pending = |r: &AlertRecord| Change::Pending {
                channel: h.channel.clone(),
                grp: outbox::group_key(&r.target, &r.event),
                due: now + chrono_d(h.group_wait),
                record: with_runbook(r, h.runbook_url.as_deref()),
            };
            match record.event.as_str() {
                "firing" | "reminder" => {
                    let state = outbox::alert_state(&self.store, &h.channel, &key)?;
                    let told = matches!(state, Some(AlertState::Sent { .. }));
                    if let Some(why) = &silenced {
                        // Held back to be sent when the silence ends, unless the channel already heard it fire
                        // (then this reminder is simply not sent).
                        if !told {
                            changes.push(Change::Hold {
                                channel: h.channel.clone(),
                                alert: key.clone(),
                                record: record.clone(),
                                silenced_by: why.clone(),
                            });
                        }
                        journal_silenced.push((h.channel.clone(), why.clone()));
                        continue;
                    }
                    if let (Some(AlertState::Sent { last_sent }), Some(every), "reminder") =
                        (&state, h.repeat_interval, record.event.as_str())
                    {
                        if now - *last_sent < chrono_d(every) {
                            tracing::debug!(channel = %h.channel, subject = %record.subject, "reminder within repeat_interval: not sent");
                            continue;
                        }
                    }
                    // A reminder about an alert this channel never heard fire is, for the channel, its firing.
                    let mut r = record.clone();
                    if r.event == "reminder" && !told {
                        r.event = "firing".into();
                    }
                    changes.push(pending(&r));
                    changes.push(Change::Sent { channel: h.channel.clone(), alert: key.clone(), at: now });
                }
                "resolved" => {
                    let state = outbox::alert_state(&self.store, &h.channel, &key)?;
                    changes.push(Change::Forget { channel: h.channel.clone(), alert: key.clone() });
                    if let Some(AlertState::Held { why }) = &state {
                        if why.starts_with("inhibited ") {
                            // Held back by an inhibition all along: the channel never heard it fire.
                            never_sent.push(h.channel.clone());
                            continue;
                        }
                    }
                    if let Some(why) = &silenced {
                        journal_silenced.push((h.channel.clone(), why.clone()));
                        continue;
                    }
                    // Only channels that were told it fired hear that it resolved.
                    if h.send_resolved && matches!(state, Some(AlertState::Sent { .. })) {
                        changes.push(pending(record));
                    }
                }
                _ => {
                    if let Some(why) = &silenced {
                        journal_silenced.push((h.channel.clone(), why.clone()));
                        continue;
                    }
                    changes.push(pending(record));
                }
            }
        }
        if track {
            changes.push(Change::Track { record: record.clone() });
        }
        // What this alert changes and the journal lines about its inhibition: one transaction (one sync to disk).
        self.store.transaction(|st| {
            outbox::apply(st, &changes)?;
            if let Some(by) = &inhibited {
                let channels: Vec<String> = journal_silenced.iter().map(|(c, _)| c.clone()).collect();
                journal_inhibited(st, record, &channels, by, now)?;
            }
            if !never_sent.is_empty() {
                journal_not_sent(st, record, &never_sent, now)?;
            }
            Ok(())
        })?;
        if track {
            self.track_source(&s, record);
        }
        if let Some(by) = &inhibited {
            tracing::info!(rule = %record.rule, target = %record.target, subject = %record.subject, event = %record.event, "not sent: inhibited {by}");
        } else {
            for (channel, why) in journal_silenced {
                self.journal_silenced(record, &channel, &why, now);
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// What inhibits `f` now, if anything (see [`inhibit`]).
    fn inhibited_by(&self, s: &Setup, f: &Facts<'_>) -> Result<Option<inhibit::InhibitedBy>, NotifyError> {
        if s.inhibit.is_empty() || !matches!(f.record.event.as_str(), "firing" | "reminder") {
            return Ok(None);
        }
        let sources = self.sources(s)?;
        Ok(inhibit::inhibited_by(&s.inhibit, f, &sources, &|t| s.target(t).labels))
    }

    /// The firing alerts that may inhibit others under `s`'s rules (see [`Notifier::sources`]).
    fn sources(&self, s: &Setup) -> Result<Vec<AlertRecord>, NotifyError> {
        if s.inhibit.is_empty() {
            return Ok(vec![]);
        }
        let mut cache = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((for_setup, v)) = &*cache {
            if std::ptr::eq(Arc::as_ptr(for_setup), s) {
                return Ok(v.clone());
            }
        }
        let v: Vec<AlertRecord> = inhibit::firing(&self.store)?.into_iter().filter(|r| s.is_source(r)).collect();
        // Cached only for the settings in force (the cache keeps them alive, so the comparison above is sound).
        let current = self.setup();
        if std::ptr::eq(Arc::as_ptr(&current), s) {
            *cache = Some((current, v.clone()));
        }
        Ok(v)
    }

    /// Keeps the cached sources up to date with an alert just handed to [`inhibit::track`].
    fn track_source(&self, s: &Setup, r: &AlertRecord) {
        let mut cache = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let Some((for_setup, v)) = &mut *cache else { return };
        if !std::ptr::eq(Arc::as_ptr(for_setup), s) {
            *cache = None; // settings changed: read again on next use
            return;
        }
        match r.event.as_str() {
            "firing" | "reminder" | "resolved" => {
                v.retain(|x| !(x.rule == r.rule && x.target == r.target && x.subject == r.subject));
                if r.event != "resolved" && s.is_source(r) {
                    v.push(r.clone());
                }
            }
            _ => {}
        }
    }

    /// Makes the delivery loop look at its timers now (after `warden silence rm`, or a manual clock moved in tests).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn journal_silenced(&self, r: &AlertRecord, channel: &str, why: &str, now: DateTime<Utc>) {
        let outcome = format!("silenced: {why}");
        let entry = NewEntry {
            time: Some(now),
            rule: r.rule.clone(),
            target: r.target.clone(),
            probe: String::new(),
            subject: r.subject.clone(),
            action: crate::model::ActionKind::Notify,
            detail: channel.into(),
            severity: r.severity.as_str().into(),
            summary: r.summary.clone(),
            details: serde_json::json!({"event": r.event, "silenced_by": why}),
            outcome: outcome.clone(),
        };
        match self.store.journal(&entry) {
            Ok(id) => {
                let _ = self.store.finish(id, &outcome, "", now);
            }
            Err(e) => tracing::error!(channel, "cannot journal a silenced notification: {e}"),
        }
        tracing::info!(channel, rule = %r.rule, subject = %r.subject, event = %r.event, "not sent: {why}");
    }

    /// Releases held alerts whose silence ended, queues groups whose wait is over, purges old messages.
    fn tick(&self, now: DateTime<Utc>) -> Result<(), NotifyError> {
        let s = self.setup();
        self.release_held(&s, now)?;
        for (channel, grp) in outbox::due_groups(&self.store, now)? {
            self.flush(&s, &channel, &grp, now)?;
        }
        // Delivered and failed messages are pruned with the rest of the store (`retention.notifications`).
        Ok(())
    }

    fn release_held(&self, s: &Setup, now: DateTime<Utc>) -> Result<(), NotifyError> {
        let held = outbox::held_why(&self.store)?;
        if held.is_empty() {
            return Ok(());
        }
        let silences = silence::list(&self.store, now, false)?;
        let firing = self.sources(s)?;
        for (channel, key, why, mut rec) in held {
            let target = s.target(&rec.target);
            let facts = Facts { record: &rec, labels: &target.labels };
            if silence::silenced_by(&silences, &s.windows, &facts, now).is_some() {
                continue;
            }
            if inhibit::inhibited_by(&s.inhibit, &facts, &firing, &|t| s.target(t).labels).is_some() {
                continue;
            }
            let Some(h) = s.route(&facts).into_iter().find(|h| h.channel == channel) else {
                outbox::apply(&self.store, &[Change::Forget { channel, alert: key }])?;
                continue;
            };
            tracing::info!(channel = %channel, rule = %rec.rule, subject = %rec.subject, "no longer silenced or inhibited and still firing: sending");
            rec.event = "firing".into();
            let grp = if why.starts_with("inhibited ") {
                outbox::released_group_key(&rec.target)
            } else {
                outbox::group_key(&rec.target, "firing")
            };
            let changes = [
                Change::Pending {
                    channel: channel.clone(),
                    grp,
                    due: now + chrono_d(h.group_wait),
                    record: rec.clone(),
                },
                Change::Sent { channel: channel.clone(), alert: key.clone(), at: now },
            ];
            // Only if it is still held: its resolution may have been submitted since `held` was read (and then it
            // was forgotten, and journalled as never sent, once).
            self.store.transaction(|st| match outbox::alert_state(st, &channel, &key)? {
                Some(AlertState::Held { .. }) => outbox::apply(st, &changes),
                _ => Ok(()),
            })?;
        }
        Ok(())
    }

    fn actions(&self, r: &AlertRecord) -> Vec<String> {
        let firing_since = r
            .details
            .get("firing_since")
            .and_then(|v| v.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let since = match r.event.as_str() {
            "reminder" | "resolved" => firing_since.unwrap_or(r.time),
            _ => r.time,
        };
        let mut out = outbox::actions_since(&self.store, &r.target, &r.subject, since, 3).unwrap_or_else(|e| {
            tracing::error!("cannot read the journal: {e}");
            vec![]
        });
        if out.is_empty() && r.event == "firing" {
            if let Some(cmd) = r.details.get("relaunch").and_then(|v| v.as_str()).filter(|s| !s.is_empty()) {
                out.push(format!("will relaunch with `{cmd}`"));
            }
        }
        out
    }

    /// Turns a due group into one message in the outbox, after any group that holds an earlier record about one
    /// of its alerts.
    fn flush(&self, s: &Setup, channel: &str, grp: &str, now: DateTime<Utc>) -> Result<(), NotifyError> {
        for earlier in outbox::predecessors(&self.store, channel, grp)? {
            self.flush(s, channel, &earlier, now)?;
        }
        if !s.inhibit.is_empty() || outbox::is_released_group(grp) {
            self.inhibit_waiting(s, channel, grp, now)?;
        }
        let (ids, records) = outbox::group(&self.store, channel, grp)?;
        let Some(sender) = s.senders.get(channel) else {
            tracing::warn!(channel, "dropping {} waiting alert(s): the channel is no longer configured", ids.len());
            outbox::drop_pending(&self.store, &ids)?;
            return Ok(());
        };
        let Some(first) = records.first() else {
            outbox::drop_pending(&self.store, &ids)?;
            return Ok(());
        };
        let target = s.target(&first.target);
        let event = first.event.clone();
        let alerts = records
            .iter()
            .map(|r| template::alert_view(r, &target, self.actions(r), s.config.root_cause_lines, now))
            .collect();
        let v = template::view(&event, target.clone(), alerts, now);
        let msg = sender.render(&s.env, new_message_id(now), v, records, now, false);
        let row = outbox::enqueue(&self.store, &msg, &outbox::lane(channel, &target.name), &ids)?;
        let jid = self.store.journal(&queued_entry(&msg, now))?;
        outbox::set_journal(&self.store, row, jid)?;
        Ok(())
    }

    /// Looks at inhibition again when a group's wait is over (a per-job alert may have arrived a poll before the
    /// alert that inhibits it): an inhibited *firing* is taken out of the group, with anything else waiting about
    /// it, and held (or forgotten, if it has resolved since); an inhibited *reminder* is dropped.
    fn inhibit_waiting(&self, s: &Setup, channel: &str, grp: &str, now: DateTime<Utc>) -> Result<(), NotifyError> {
        let rows = outbox::group_rows(&self.store, channel, grp)?;
        if !rows.iter().any(|(_, r)| matches!(r.event.as_str(), "firing" | "reminder")) {
            return Ok(());
        }
        let firing = self.sources(s)?;
        let released = outbox::is_released_group(grp);
        for (id, r) in rows {
            let key = outbox::alert_key(&r);
            if released && r.event == "firing" && !inhibit::is_firing(&self.store, &key)? {
                // Released from an inhibition, then resolved before its message went out: it never went out.
                let changes = [
                    Change::Unqueue { channel: channel.into(), alert: key.clone() },
                    Change::Forget { channel: channel.into(), alert: key },
                ];
                self.store.transaction(|st| {
                    outbox::apply(st, &changes)?;
                    journal_not_sent(st, &r, &[channel.to_string()], now)
                })?;
                continue;
            }
            let target = s.target(&r.target);
            let facts = Facts { record: &r, labels: &target.labels };
            let Some(by) = inhibit::inhibited_by(&s.inhibit, &facts, &firing, &|t| s.target(t).labels) else {
                continue;
            };
            let changes = if r.event == "firing" {
                let still = inhibit::is_firing(&self.store, &key)?;
                let after = if still {
                    Change::Hold {
                        channel: channel.into(),
                        alert: key.clone(),
                        record: r.clone(),
                        silenced_by: format!("inhibited {by}"),
                    }
                } else {
                    Change::Forget { channel: channel.into(), alert: key.clone() }
                };
                vec![Change::Unqueue { channel: channel.into(), alert: key }, after]
            } else {
                vec![Change::DropPending { id }]
            };
            self.store.transaction(|st| {
                outbox::apply(st, &changes)?;
                journal_inhibited(st, &r, &[channel.to_string()], &by, now)
            })?;
            tracing::info!(channel, rule = %r.rule, subject = %r.subject, "not sent: inhibited {by}");
        }
        Ok(())
    }

    /// When the notifier next has something to do by its clock: the end of the earliest `group_wait`, or the next
    /// attempt of a queued message (never before its channel's `Retry-After`). A message that is due already
    /// reports its time, which may have passed; `None` when nothing waits. (Silences and maintenance windows are
    /// looked at on every round of [`Notifier::run`], at least once a second.)
    pub fn next_due(&self) -> Result<Option<DateTime<Utc>>, NotifyError> {
        let mut next = outbox::next_group_due(&self.store)?;
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for q in outbox::heads(&self.store, |_| false)? {
            let due = due(&blocked, &q);
            next = Some(next.map_or(due, |n| n.min(due)));
        }
        Ok(next)
    }

    /// Starts deliveries that are due; returns when the next timer (retry, group) is due.
    fn start_due(
        &self,
        now: DateTime<Utc>,
        inflight: &mut JoinSet<(Queued, Result<(), DeliveryError>)>,
        lanes: &mut HashMap<tokio::task::Id, String>,
    ) -> Result<Option<DateTime<Utc>>, NotifyError> {
        let mut next = outbox::next_group_due(&self.store)?;
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let busy: HashSet<&String> = lanes.values().collect();
        let mut start = vec![];
        for q in outbox::heads(&self.store, |lane| busy.contains(&lane.to_string()))? {
            let due = due(&blocked, &q);
            if due > now {
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            if lanes.len() + start.len() >= MAX_IN_FLIGHT {
                break;
            }
            start.push(q);
        }
        let s = self.setup();
        for mut q in start {
            // One delivery at a time per message, whichever process delivers: another one may have taken it.
            if !outbox::claim(&self.store, q.id, q.attempts, now)? {
                continue;
            }
            let Some(sender) = s.senders.get(&q.channel).cloned() else {
                let reason = format!("channel `{}` is no longer configured", q.channel);
                self.fail(&mut q, now, &reason)?;
                continue;
            };
            if q.journal_id.is_none() {
                let journalled = self.store.journal(&queued_entry(&q.message, now)).and_then(|id| {
                    outbox::set_journal(&self.store, q.id, id)?;
                    Ok(id)
                });
                match journalled {
                    Ok(id) => q.journal_id = Some(id),
                    Err(e) => {
                        // Not started: the next round tries again (this process or another).
                        let _ = outbox::release(&self.store, q.id);
                        return Err(e.into());
                    }
                }
            }
            let lane = q.lane.clone();
            let h = inflight.spawn(async move {
                let r = sender.deliver(&q.message).await;
                (q, r)
            });
            lanes.insert(h.id(), lane);
        }
        Ok(next)
    }

    fn fail(&self, q: &mut Queued, now: DateTime<Utc>, reason: &str) -> Result<(), NotifyError> {
        outbox::failed(&self.store, q.id, now, reason)?;
        // The channel never heard these alerts fire: it must not later hear them resolve.
        let unheard: Vec<Change> = q
            .message
            .records
            .iter()
            .filter(|r| r.event == "firing")
            .map(|r| Change::Forget { channel: q.channel.clone(), alert: outbox::alert_key(r) })
            .collect();
        if !unheard.is_empty() {
            outbox::apply(&self.store, &unheard)?;
        }
        if let Some(j) = q.journal_id {
            self.store.finish(j, &format!("failed: {reason}"), "", now)?;
        }
        tracing::error!(channel = %q.channel, message = %q.message.id, "notification not delivered: {reason}");
        Ok(())
    }

    /// Records the outcome of one delivery.
    fn finish(&self, mut q: Queued, r: Result<(), DeliveryError>) -> Result<(), NotifyError> {
        let now = self.clock.now();
        match r {
            Ok(()) => {
                let outcome =
                    if q.attempts == 0 { "sent".to_string() } else { format!("sent after {} retries", q.attempts) };
                // The outbox and the journal say "sent" together, or neither does.
                self.store.transaction(|s| {
                    outbox::sent(s, q.id, now)?;
                    if let Some(j) = q.journal_id {
                        s.finish(j, &outcome, "", now)?;
                    }
                    Ok(())
                })?;
                tracing::info!(channel = %q.channel, message = %q.message.id, "{outcome}: {}", q.message.view.headline);
            }
            Err(DeliveryError::Permanent { reason }) => self.fail(&mut q, now, &reason)?,
            Err(DeliveryError::Retry { reason, after }) => {
                let s = self.setup();
                let attempts = q.attempts + 1;
                let age = now - q.message.created;
                if age >= chrono_d(s.config.retry.give_up_after) {
                    let reason = format!(
                        "gave up after {} attempts over {}: {reason}",
                        attempts,
                        humantime::format_duration(s.config.retry.give_up_after)
                    );
                    return self.fail(&mut q, now, &reason);
                }
                let wait = after.unwrap_or_else(|| s.backoff(attempts));
                let next = now + chrono_d(wait);
                if after.is_some() {
                    self.blocked.lock().unwrap_or_else(|p| p.into_inner()).insert(q.channel.clone(), next);
                }
                outbox::retry(&self.store, q.id, attempts, next, &reason)?;
                let outcome = format!(
                    "retrying: {reason} (attempt {attempts}; next in {})",
                    humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
                );
                if let Some(j) = q.journal_id {
                    // Not finished yet: update the outcome only.
                    self.store.set_outcome(j, &outcome)?;
                }
                tracing::warn!(channel = %q.channel, message = %q.message.id, "delivery failed, will retry: {reason}");
            }
        }
        Ok(())
    }

    /// Delivers from the outbox until `stop` fires (then returns promptly; undelivered messages stay in the outbox
    /// for the next start).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut inflight = JoinSet::new();
        let mut lanes: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut started = false;
        loop {
            if !started {
                if self.setup().senders.is_empty() {
                    // No channels: nothing to deliver (and what an earlier configuration left in the outbox stays
                    // there) until a reconfiguration adds some.
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.wake.notified() => continue,
                    }
                }
                started = true;
                let (pending, _, _) = outbox::counts(&self.store).unwrap_or_default();
                if pending > 0 {
                    tracing::info!(pending, "notifications from before the last stop are still to be delivered");
                }
            }
            let now = self.clock.now();
            if let Err(e) = self.tick(now) {
                tracing::error!("notifications: {e}");
            }
            let next = self.start_due(now, &mut inflight, &mut lanes).unwrap_or_else(|e| {
                tracing::error!("notifications: {e}");
                None
            });
            let wait = next.map(|t| (t - now).to_std().unwrap_or(Duration::ZERO)).unwrap_or(MAX_IDLE).min(MAX_IDLE);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => self.done(done, &mut lanes),
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while !inflight.is_empty() {
            match tokio::time::timeout_at(deadline, inflight.join_next_with_id()).await {
                Ok(Some(done)) => self.done(done, &mut lanes),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "{} notification(s) still being delivered at shutdown; they stay queued",
                        inflight.len()
                    );
                    inflight.abort_all();
                    break;
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn done(
        &self,
        done: Result<(tokio::task::Id, (Queued, Result<(), DeliveryError>)), tokio::task::JoinError>,
        lanes: &mut HashMap<tokio::task::Id, String>,
    ) {
        match done {
            Ok((id, (q, r))) => {
                lanes.remove(&id);
                if let Err(e) = self.finish(q, r) {
                    tracing::error!("notifications: {e}");
                }
            }
            Err(e) => {
                lanes.remove(&e.id());
                tracing::error!("a notification delivery task failed: {e}");
            }
        }
    }
}

/// One journal entry (finished) for an alert not sent to `channels` because another alert inhibits it.
fn journal_inhibited(
    st: &Store,
    r: &AlertRecord,
    channels: &[String],
    by: &inhibit::InhibitedBy,
    now: DateTime<Utc>,
) -> Result<(), crate::store::StoreError> {
    let details = serde_json::json!({"event": r.event, "inhibited_by": by});
    journal_done(st, r, channels, format!("inhibited: {by}"), details, now)
}

/// One journal entry (finished) for an alert that resolved while it was inhibited: nothing is sent about it.
fn journal_not_sent(
    st: &Store,
    r: &AlertRecord,
    channels: &[String],
    now: DateTime<Utc>,
) -> Result<(), crate::store::StoreError> {
    let outcome = "not sent: it resolved while inhibited and had never been sent".to_string();
    journal_done(st, r, channels, outcome, serde_json::json!({"event": r.event, "inhibited": true}), now)
}

fn journal_done(
    st: &Store,
    r: &AlertRecord,
    channels: &[String],
    outcome: String,
    details: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), crate::store::StoreError> {
    let entry = NewEntry {
        time: Some(now),
        rule: r.rule.clone(),
        target: r.target.clone(),
        probe: String::new(),
        subject: r.subject.clone(),
        action: crate::model::ActionKind::Notify,
        detail: channels.join(", "),
        severity: r.severity.as_str().into(),
        summary: r.summary.clone(),
        details,
        outcome: outcome.clone(),
    };
    let id = st.journal(&entry)?;
    st.finish(id, &outcome, "", now)
}

/// When a queued message may be tried: its next attempt, not before its channel's `Retry-After`.
fn due(blocked: &HashMap<String, DateTime<Utc>>, q: &Queued) -> DateTime<Utc> {
    match blocked.get(&q.channel) {
        Some(b) => q.next_attempt.max(*b),
        None => q.next_attempt,
    }
}

fn queued_entry(m: &Message, now: DateTime<Utc>) -> NewEntry {
    let v = &m.view;
    let mut jobs: Vec<&str> = vec![];
    for a in &v.alerts {
        if !jobs.contains(&a.job.as_str()) {
            jobs.push(&a.job);
        }
    }
    let subject =
        if jobs.len() > 3 { format!("{} (+{})", jobs[..3].join(", "), jobs.len() - 3) } else { jobs.join(", ") };
    NewEntry {
        time: Some(now),
        rule: v.alerts.first().map(|a| a.rule.clone()).unwrap_or_else(|| "warden".into()),
        target: v.target.name.clone(),
        probe: String::new(),
        subject,
        action: crate::model::ActionKind::Notify,
        detail: m.channel.clone(),
        severity: v.severity.clone(),
        summary: v.headline.clone(),
        details: serde_json::json!({
            "message_id": m.id,
            "event": v.event,
            "count": v.count,
            "alerts": v.alerts.iter().map(|a| serde_json::json!({"rule": a.rule, "job": a.job})).collect::<Vec<_>>(),
        }),
        outcome: "queued".into(),
    }
}

/// Sends a test message through channel `name` right away (not through the outbox) and reports the exact error.
/// Returns where it went, for people.
pub async fn send_test(config: &NotifyConfig, targets: &[TargetConfig], name: &str) -> Result<String, NotifyError> {
    let Some(c) = config.channels.get(name) else {
        let known: Vec<&str> = config.channels.keys().map(String::as_str).collect();
        let hint = match crate::diag::closest(name, known.iter().copied()) {
            Some(k) => format!(", did you mean `{k}`?"),
            None if known.is_empty() => "; none are configured".into(),
            None => format!("; channels: {}", known.join(", ")),
        };
        return Err(NotifyError::UnknownChannel { channel: name.into(), hint });
    };
    let sender = Sender::new(name, c).map_err(|message| NotifyError::Channel { channel: name.into(), message })?;
    let now = Utc::now();
    let target = targets
        .first()
        .map(|t| TargetView { name: t.name.clone(), url: t.url.clone(), labels: t.labels.clone() })
        .unwrap_or_else(|| TargetView { name: "test".into(), ..Default::default() });
    let record = AlertRecord {
        time: now,
        event: "test".into(),
        rule: "warden/test".into(),
        target: target.name.clone(),
        subject: "test".into(),
        severity: crate::model::Severity::Info,
        summary: format!("test message from Warden for channel `{name}`; if you read this, it works"),
        details: serde_json::json!({}),
    };
    let alert = template::alert_view(&record, &target, vec!["nothing: this is a test".into()], 0, now);
    let v = template::view("test", target, vec![alert], now);
    let m = sender.render(&template::environment(), new_message_id(now), v, vec![record], now, true);
    sender.deliver(&m).await.map_err(|e| NotifyError::Delivery {
        channel: name.into(),
        kind: sender.kind(),
        reason: e.reason().to_string(),
    })?;
    Ok(sender.describe())
}

/// `r` with the route's runbook link, unless the rule gave one.
fn with_runbook(r: &AlertRecord, runbook: Option<&str>) -> AlertRecord {
    let mut r = r.clone();
    if let Some(url) = runbook {
        match &mut r.details {
            serde_json::Value::Object(m) => {
                m.entry("runbook_url").or_insert_with(|| url.into());
            }
            serde_json::Value::Null => r.details = serde_json::json!({ "runbook_url": url }),
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests;
