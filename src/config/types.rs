//! The typed configuration: `warden.yaml`. Every field's doc comment is the user reference.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::secret::Secret;
use super::units::{self, ByteSize};

/// The whole `warden.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for Warden's state: the SQLite journal, rule state and the alert log. Relative paths are resolved
    /// against the directory of `warden.yaml`. Default: `warden-state`.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where Warden keeps its journal, rule and dispatcher state, restarts, outbox and silences. Default: the
    /// embedded SQLite file `<state_dir>/warden.db`, nothing to set up. `store: {postgres: {url: …}}` keeps them in
    /// PostgreSQL instead, so that two Wardens (an HA pair) share them; `state_dir` still holds the per-instance
    /// lock, the alert log and recordings.
    #[serde(default)]
    pub store: StoreConfig,
    /// Where rule packs are loaded from, relative to `warden.yaml`. A path ending in `/*` means "every
    /// subdirectory that has a `pack.yaml`"; `builtin:flink` is the Flink pack built into the binary (a directory
    /// pack named `flink` replaces it). Default: `["builtin:flink", "rules", "plugins/*"]`.
    #[serde(default = "default_pack_paths")]
    pub pack_paths: Vec<String>,
    /// The endpoints Warden polls: Flink JobManagers, a YARN proxy, the Kubernetes API, any JSON REST service.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Probes of your own, in addition to those the packs bring.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// Named commands that rules may ask to `run`, by name.
    #[serde(default)]
    pub commands: BTreeMap<String, CommandConfig>,
    /// How to bring each job back with `restart_job`, keyed by job name.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    /// Per-pack settings, keyed by pack name (`flink`): which targets its probes poll and its parameters.
    #[serde(default)]
    pub packs: BTreeMap<String, PackSettings>,
    /// Policies between a rule's request and the action.
    #[serde(default)]
    pub dispatch: DispatchConfig,
    /// Limits for rule scripts.
    #[serde(default)]
    pub scripts: ScriptLimits,
    /// Hot reload of this file and the packs.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Notification channels, routes, grouping, silences and maintenance windows.
    #[serde(default)]
    pub notify: crate::notify::NotifyConfig,
    /// The JSON-lines file that every alert, resolution and rule log line is appended to.
    /// Default: `<state_dir>/alerts.jsonl`.
    #[serde(default)]
    pub alert_log: Option<PathBuf>,
    /// How long a shutdown (SIGINT/SIGTERM) waits for running actions to finish before killing them. Default `30s`.
    #[serde(default = "default_grace", with = "units::duration")]
    pub shutdown_grace: Duration,
    /// How long Warden keeps its history (journal, notifications, savepoint locations) and how large the alert log
    /// and recordings may grow. The defaults keep a few months of history and at most a few hundred MiB of files.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Warden's own HTTP server: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/api/status`, `/api/history`,
    /// `POST /-/reload`, `POST /api/events` (pushed events, with a `token` only) and the status page at `/`. On by
    /// default, on loopback (`127.0.0.1:9464`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Warden watching itself: alerts (rule `warden/self`, target `warden`) through the normal notification path
    /// when a rule keeps failing, a probe has stopped running, notifications are stuck, or the last reload failed;
    /// each resolves when the cause goes away.
    #[serde(default)]
    pub self_alerts: SelfAlertsConfig,
    /// Inhibition, Alertmanager-style: while an alert matching a rule's `source` fires (a JobManager is
    /// unreachable), the alerts matching its `target` that share the `equal` labels (the same target) are
    /// journalled but not sent. Packs bring defaults (the Flink pack: `jobmanager-unreachable` inhibits the pack's
    /// per-job alerts of the same target); the rules here come on top of them.
    #[serde(default)]
    pub inhibit: InhibitConfig,
    /// An active/standby pair on one PostgreSQL store (`store: {postgres: …}`): the leader election's timing and
    /// this instance's name. Ignored with the default SQLite store (one instance, no election). See the README's
    /// "HA pair" section.
    #[serde(default)]
    pub ha: HaConfig,
}

/// The state store's backend, under `store:`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Keep the state in PostgreSQL (10 or newer; tested with 15) rather than the SQLite file in `state_dir`.
    #[serde(default)]
    pub postgres: Option<PostgresStoreConfig>,
}

/// A PostgreSQL database for the state store, under `store.postgres`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresStoreConfig {
    /// The connection URL, as a secret: `${WARDEN_PG_URL}`, `file:/run/secrets/warden-pg` or (not recommended, it
    /// holds the password) a literal `postgres://user:password@host:5432/db`. It is never logged; messages show it
    /// without its password. A server on this machine (loopback, Unix socket) is reached in plain text unless the
    /// URL says `sslmode=require`; any other host needs `sslmode=require` (TLS, the certificate checked against
    /// the public roots, the host name too; add `sslrootcert=/absolute/path/ca.pem` to check it against your own
    /// CA instead) or, to send the password and journal in plain text on purpose, `sslmode=disable`. Warden creates and upgrades its tables itself (it needs the right to create tables in
    /// the database's default schema).
    pub url: Secret,
}

pub(crate) fn default_state_dir() -> PathBuf {
    PathBuf::from("warden-state")
}
fn default_pack_paths() -> Vec<String> {
    vec![crate::pack::BUILTIN_FLINK.into(), "rules".into(), "plugins/*".into()]
}
fn default_grace() -> Duration {
    Duration::from_secs(30)
}

/// One endpoint to poll.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Unique name, used in messages, the journal and the `{target}` placeholder.
    pub name: String,
    /// Base URL, e.g. `http://jobmanager:8081` or a YARN proxy URL such as
    /// `https://rm:8090/proxy/application_1700000000000_0001/`. Probe paths are appended to it.
    pub url: String,
    /// Free-form labels that probes and packs select targets by (`env: prod`, `kind: flink`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Authentication: `{bearer: "${TOKEN}"}` or `{basic: {username: u, password: "file:/run/secrets/pw"}}`.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Extra request headers for every request to this target. Values may be secrets (`${ENV}`, `file:`).
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// A PEM file with extra CA certificates to trust for this target.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Turns TLS certificate verification off for this target only. Off by default; Warden logs a warning at start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Follow redirects to another origin (scheme, host or port). Off by default: such an answer is an error of
    /// kind `refused`. When on, the redirected request carries none of the target's credentials: no
    /// `Authorization`, no cookies, none of `headers`. Redirects within the target's origin are always followed
    /// (at most 5), with its headers.
    #[serde(default)]
    pub allow_cross_origin_redirects: bool,
    /// Timeout of one request to this target (connect + answer). Default `10s`.
    #[serde(default = "default_timeout", with = "units::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// How Warden authenticates to a target: give exactly one of `bearer` or `basic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `Authorization: Bearer <token>`; the token is a secret reference such as `${FLINK_TOKEN}`.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
}

/// HTTP basic authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password (a secret reference such as `file:/run/secrets/flink-password`).
    pub password: Secret,
}

/// Which targets something applies to: a list of names, or `{labels: {key: value}}` (all must match).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TargetSelector {
    /// Targets by name.
    Names(Vec<String>),
    /// Targets whose labels include all of these.
    Labels {
        /// Required label values.
        labels: BTreeMap<String, String>,
    },
}

impl TargetSelector {
    /// True when `target` is selected.
    pub fn matches(&self, target: &TargetConfig) -> bool {
        match self {
            TargetSelector::Names(names) => names.iter().any(|n| n == &target.name),
            TargetSelector::Labels { labels } => labels.iter().all(|(k, v)| target.labels.get(k) == Some(v)),
        }
    }
}

/// A probe: what to request, from which targets, how often, and which rules judge the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Unique name (packs' probes are namespaced: `flink/jobs-overview`).
    pub name: String,
    /// Which targets to poll. Default: every target.
    #[serde(default)]
    pub targets: Option<TargetSelector>,
    /// Poll at a fixed interval, e.g. `10s`. Give either `every` or `cron`. The first poll comes at a random
    /// moment within the interval, put on the daemon's grid (steps of a tenth of the interval at most, 500 ms at
    /// most, finer with many targets), so that the polls of many targets share their wake-ups; then one poll every
    /// interval.
    #[serde(default, with = "units::opt_duration")]
    pub every: Option<Duration>,
    /// Poll on a cron schedule with seconds: `sec min hour day-of-month month day-of-week [year]`, in UTC,
    /// e.g. `"*/15 * * * * *"`.
    #[serde(default)]
    pub cron: Option<String>,
    /// The HTTP request. Give either `request` (a polling probe) or `events` (a probe fed by pushed events).
    #[serde(default)]
    pub request: RequestConfig,
    /// Instead of polling, take the events pushed to `POST /api/events` that match (see [`EventsProbeConfig`]).
    /// Such a probe has no `request`, `every`, `cron` or `for_each`; its rules see each matching event as
    /// `obs.body`, like the answer of a poll.
    #[serde(default)]
    pub events: Option<EventsProbeConfig>,
    /// Largest response body accepted, e.g. `16MiB`; a larger one becomes an observation with error `too_large`.
    /// Default `16MiB`.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Rules that judge each observation, by name (`flink/job-not-running`, or a short name inside a pack).
    pub rules: Vec<String>,
    /// Poll once per job of the target instead of once per target: `for_each: job`, or the long form
    /// `for_each: {over: job, states: [RUNNING], concurrency: 4}`. At each tick the probe takes the jobs of the
    /// target's latest `/jobs/overview` answer (the one the target's own jobs-overview probe fetched, if it is not
    /// older than this probe's interval; otherwise it fetches `/jobs/overview` once for the tick), keeps those
    /// whose state is in `states`, and sends `request` once per job with `{jid}` (the job's id) and `{job}` (its
    /// name, percent-encoded as a path segment) filled into the path, e.g. `/jobs/{jid}/checkpoints`. Each answer
    /// is one observation; rules see the job as `obs.job` and keep their `state` per job name. A tick that is
    /// still running when the next one is due skips that one (counted like any probe's skipped runs).
    #[serde(default)]
    pub for_each: Option<ForEach>,
}

/// What a probe fans out over, and how (`for_each:` of a probe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForEach {
    /// What to fan out over: `job` (the jobs of the target's `/jobs/overview`).
    pub over: FanOutOver,
    /// The job states to poll (Flink's `JobStatus` names). Default `[RUNNING]`.
    pub states: Vec<JobState>,
    /// At most this many requests of this probe in flight per target at a time. Default 4; at least 1.
    pub concurrency: usize,
}

impl ForEach {
    /// True when a job in state `state` (as `/jobs/overview` spells it) is polled.
    pub fn takes(&self, state: &str) -> bool {
        self.states.iter().any(|s| s.as_str() == state)
    }
}

/// The long form of `for_each:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForEachLong {
    /// `job`.
    over: FanOutOver,
    /// Job states to poll.
    #[serde(default = "default_fan_out_states")]
    states: Vec<JobState>,
    /// Requests in flight per target.
    #[serde(default = "default_fan_out_concurrency")]
    concurrency: usize,
}

fn default_fan_out_states() -> Vec<JobState> {
    vec![JobState::Running]
}

fn default_fan_out_concurrency() -> usize {
    4
}

impl<'de> Deserialize<'de> for ForEach {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ForEach;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`job` or a map `{over: job, states: [...], concurrency: N}`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ForEach, E> {
                let over = FanOutOver::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(ForEach { over, states: default_fan_out_states(), concurrency: default_fan_out_concurrency() })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ForEach, A::Error> {
                let l = ForEachLong::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ForEach { over: l.over, states: l.states, concurrency: l.concurrency })
            }
        }
        d.deserialize_any(V)
    }
}

/// What a probe can fan out over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanOutOver {
    /// The jobs of the target (its `/jobs/overview`).
    Job,
}

/// A Flink job's state (`JobStatus`), as `/jobs/overview` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    /// `INITIALIZING`.
    Initializing,
    /// `CREATED`.
    Created,
    /// `RUNNING`.
    Running,
    /// `FAILING`.
    Failing,
    /// `FAILED`.
    Failed,
    /// `CANCELLING`.
    Cancelling,
    /// `CANCELED`.
    Canceled,
    /// `FINISHED`.
    Finished,
    /// `RESTARTING`.
    Restarting,
    /// `SUSPENDED`.
    Suspended,
    /// `RECONCILING`.
    Reconciling,
}

impl JobState {
    /// The name as Flink spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Initializing => "INITIALIZING",
            JobState::Created => "CREATED",
            JobState::Running => "RUNNING",
            JobState::Failing => "FAILING",
            JobState::Failed => "FAILED",
            JobState::Cancelling => "CANCELLING",
            JobState::Canceled => "CANCELED",
            JobState::Finished => "FINISHED",
            JobState::Restarting => "RESTARTING",
            JobState::Suspended => "SUSPENDED",
            JobState::Reconciling => "RECONCILING",
        }
    }
}

/// The placeholders a `for_each: job` probe's `request.path` may hold.
pub const JOB_PATH_PLACEHOLDERS: [&str; 2] = ["jid", "job"];

/// The placeholders (`{name}`) in a request path, with their byte offsets.
pub fn path_placeholders(path: &str) -> Vec<(usize, &str)> {
    let mut out = vec![];
    let mut rest = path;
    let mut base = 0;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            out.push((base + open, name));
        }
        base += open + 1;
        rest = after;
    }
    out
}

/// Characters percent-encoded in a job name put into a path segment: everything but RFC 3986's unreserved ones.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A `for_each: job` probe's path for one job: `{jid}` and `{job}` (percent-encoded as a path segment) filled in.
pub fn fill_job_path(template: &str, jid: &str, name: &str) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        if let Some(tail) = after.strip_prefix("{jid}") {
            out.extend(percent_encoding::utf8_percent_encode(jid, SEGMENT));
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("{job}") {
            out.extend(percent_encoding::utf8_percent_encode(name, SEGMENT));
            rest = tail;
        } else {
            out.push('{');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

fn default_max_body() -> ByteSize {
    ByteSize(16 * 1024 * 1024)
}

/// Which pushed events a probe takes (`events:` of a probe). An event is taken when its `kind` is one of `kinds`
/// and its `source` one of `sources` (an empty list takes every value). An event that names a `target` is
/// judged on that target, and only by probes whose `targets` select it; an event without a target is judged on
/// the pseudo-target `events`, by probes that do not set `targets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsProbeConfig {
    /// Event kinds taken, e.g. `[deployment-status, deployment-event]`. Default: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Event sources taken, e.g. `[flink-operator]`. Default: every source.
    #[serde(default)]
    pub sources: Vec<String>,
}

impl EventsProbeConfig {
    /// True when an event of `source` and `kind` is taken.
    pub fn takes(&self, source: &str, kind: &str) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind))
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }
}

/// The HTTP request of a probe.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// HTTP method. Default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Path (and query) appended to the target's URL, e.g. `/jobs/overview`.
    pub path: String,
    /// Extra headers for this probe.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body to send (for POST probes).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Follow the pages of a list: `k8s` (the Kubernetes API: while `metadata.continue` is set, ask again with
    /// `continue=<token>`, at most 100 pages; the rules see one answer with every page's `items`). Put
    /// `labelSelector=…` and `limit=…` in the path's query, e.g.
    /// `/apis/flink.apache.org/v1beta1/namespaces/prod/flinkdeployments?labelSelector=team%3Dads&limit=200`.
    /// Default: none (one request).
    #[serde(default)]
    pub paginate: Option<crate::fetch_pages::Paginate>,
}

fn default_method() -> String {
    "GET".into()
}

/// A named command that rules can ask to run. Arguments are an argument vector, never a shell line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// Program and arguments. Placeholders such as `{job}`, `{jid}`, `{target}`, `{target_url}`, `{rule}` and
    /// `{subject}` are replaced inside each argument separately, so a job name with spaces, quotes or `;` stays one
    /// literal argument. To use a shell, say so yourself: `["sh", "-c", "flink run \"$1\"", "sh", "{job}"]`.
    pub argv: Vec<String>,
    /// Working directory. Default: the directory of `warden.yaml`.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Extra environment variables (values may be secrets).
    #[serde(default)]
    pub env: BTreeMap<String, Secret>,
    /// Kill the command's whole process group after this long. Default `5m`.
    #[serde(default = "default_cmd_timeout", with = "units::duration")]
    pub timeout: Duration,
    /// How much of stdout and of stderr is kept in the journal. Default `64KiB` each.
    #[serde(default = "default_max_output")]
    pub max_output: ByteSize,
    /// Placeholders beyond the built-in ones (`{job}`, `{jid}`, `{savepoint}`, `{target}`, `{target_url}`,
    /// `{rule}`, `{probe}`, `{subject}`) that the rules calling this command pass, e.g. `[cluster]` for
    /// `run("relaunch", #{job: j, cluster: c})`. Any other placeholder in `argv` is an error at load, so a typo
    /// such as `{jbo}` is caught by `warden check` and not when the job dies.
    #[serde(default)]
    pub placeholders: Vec<String>,
}

fn default_cmd_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_output() -> ByteSize {
    ByteSize(64 * 1024)
}

/// Settings for one pack, under `packs.<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackSettings {
    /// Set to `false` to load the pack but schedule none of its probes. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The targets the pack's probes poll. Default: every target.
    #[serde(default)]
    pub targets: Option<TargetSelector>,
    /// Values for the pack's parameters (see its `pack.yaml`); unset ones take the pack's defaults.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Rules of the pack not to run (short names, e.g. `tasks-failing`).
    #[serde(default)]
    pub disabled_rules: Vec<String>,
    /// Poll interval for all of the pack's probes, replacing the schedules in its `pack.yaml`.
    #[serde(default, with = "units::opt_duration")]
    pub every: Option<Duration>,
    /// Per-target tuning, applied in order on top of `params` and `disabled_rules` (a later entry wins), e.g.
    /// `[{targets: {labels: {env: staging}}, params: {not_running_for: 5m}, disabled_rules: [restart-loop]}]`.
    #[serde(default)]
    pub overrides: Vec<PackOverride>,
}

impl Default for PackSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            targets: None,
            params: BTreeMap::new(),
            disabled_rules: vec![],
            every: None,
            overrides: vec![],
        }
    }
}

/// Settings of a pack for some of its targets only, under `packs.<name>.overrides`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackOverride {
    /// The targets this entry applies to: a list of names, or `{labels: {key: value}}`.
    pub targets: TargetSelector,
    /// Parameter values for these targets, replacing the pack-wide ones.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Rules of the pack not to run on these targets (short names), besides the pack-wide `disabled_rules`.
    #[serde(default)]
    pub disabled_rules: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Policies that sit between a rule's request and the action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// How long after running a command for a subject before the same request may run it again, unless the rule
    /// gives its own `cooldown`. Default `2m`.
    #[serde(default = "default_run_cooldown", with = "units::duration")]
    pub run_cooldown: Duration,
    /// How often a still-firing alert is repeated, unless the rule gives its own `cooldown`. Default: never.
    #[serde(default, with = "units::opt_duration")]
    pub alert_repeat: Option<Duration>,
    /// The restart-storm guard.
    #[serde(default)]
    pub storm_guard: StormGuardConfig,
    /// The most actions (commands and `restart_job` restarts) that run at the same time, over all targets. More
    /// wait their turn, in the order they were decided, and the wait is logged; none is dropped. Alerts and log
    /// lines are not actions and never wait. A change applies at the next reload; running actions finish first.
    /// Default `16`.
    #[serde(default = "default_max_concurrent_actions")]
    pub max_concurrent_actions: usize,
    /// The most actions (commands and restarts) that run at the same time for one target, so that one cluster with
    /// many failed jobs neither floods its JobManager with submissions nor holds up the other targets' actions. More
    /// wait their turn like above. Default `4`.
    #[serde(default = "default_max_concurrent_actions_per_target")]
    pub max_concurrent_actions_per_target: usize,
    /// Not a setting: the targets whose jobs something else manages, each with its `managed_by` label (a target
    /// labelled `managed_by: flink-operator`, or any value but `warden`). Warden never relaunches a job there: a
    /// rule's `run` or `restart_job` for such a target is journalled as `refused` (once while it keeps being
    /// asked) and not carried out; its alerts go out as usual. Filled from `targets:` when the file is loaded.
    #[serde(skip)]
    pub hands_off: BTreeMap<String, String>,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            run_cooldown: default_run_cooldown(),
            alert_repeat: None,
            storm_guard: StormGuardConfig::default(),
            max_concurrent_actions: default_max_concurrent_actions(),
            max_concurrent_actions_per_target: default_max_concurrent_actions_per_target(),
            hands_off: BTreeMap::new(),
        }
    }
}

fn default_max_concurrent_actions() -> usize {
    16
}
fn default_max_concurrent_actions_per_target() -> usize {
    4
}

fn default_run_cooldown() -> Duration {
    Duration::from_secs(120)
}

/// At most `max_runs` commands for the same target and subject (job) within `window`; then one
/// "giving up on <job>" alert and no more runs until the window passes or `warden guard reset` is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StormGuardConfig {
    /// Runs allowed within the window. Default `3`.
    #[serde(default = "default_max_runs")]
    pub max_runs: u32,
    /// The window. Default `30m`.
    #[serde(default = "default_window", with = "units::duration")]
    pub window: Duration,
}

impl Default for StormGuardConfig {
    fn default() -> Self {
        Self { max_runs: default_max_runs(), window: default_window() }
    }
}

fn default_max_runs() -> u32 {
    3
}
fn default_window() -> Duration {
    Duration::from_secs(1800)
}

/// Limits every rule evaluation runs under. A rule that exceeds one is stopped and reported; others run on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimits {
    /// Wall-clock time one evaluation may spend computing, not counting the time it waits for the answers to its
    /// follow-up requests (`http_get`; those count against `max_total_time`). Default `1s`.
    #[serde(default = "default_wall", with = "units::duration")]
    pub max_time: Duration,
    /// Wall-clock time budget of one evaluation in all, waiting for its follow-up requests (`http_get`) included,
    /// so that a rule cannot keep its probe busy with follow-ups. Counted from the start of the evaluation: a
    /// follow-up only waits for what is left of it (cut short, it answers with error kind `timeout`), and one asked
    /// for when nothing is left answers at once with error kind `limit`; the rule can still conclude (e.g. alert
    /// without the root cause), within `max_time` of computing. Must be at least `max_time`. Default `15s` (or
    /// `max_time`, if that is longer).
    #[serde(default, with = "units::opt_duration")]
    pub max_total_time: Option<Duration>,
    /// Rhai operations one evaluation may perform. Default `5000000`.
    #[serde(default = "default_ops")]
    pub max_operations: u64,
    /// Largest string a rule may build. Default `1MiB`.
    #[serde(default = "default_string")]
    pub max_string: ByteSize,
    /// Largest array a rule may build (elements). Default `100000`.
    #[serde(default = "default_collection")]
    pub max_array: usize,
    /// Largest map a rule may build (entries). Default `100000`.
    #[serde(default = "default_collection")]
    pub max_map: usize,
    /// Follow-up GET requests one evaluation may make (`http_get`). Default `20`.
    #[serde(default = "default_follow_ups")]
    pub max_follow_ups: u32,
    /// Largest `state` one rule may keep per target, as JSON. A rule whose state grows past it gets an error for
    /// that evaluation (its verdict is dropped, its previous state kept), so a rule that stores more every poll
    /// cannot fill the disk or the memory. Default `256KiB`.
    #[serde(default = "default_max_state")]
    pub max_state: ByteSize,
}

impl Default for ScriptLimits {
    fn default() -> Self {
        Self {
            max_time: default_wall(),
            max_total_time: None,
            max_operations: default_ops(),
            max_string: default_string(),
            max_array: default_collection(),
            max_map: default_collection(),
            max_follow_ups: default_follow_ups(),
            max_state: default_max_state(),
        }
    }
}

fn default_max_state() -> ByteSize {
    ByteSize(256 * 1024)
}
fn default_wall() -> Duration {
    Duration::from_secs(1)
}

impl ScriptLimits {
    /// The budget of a whole evaluation, follow-up requests included (`max_total_time` or its default).
    pub fn total_time(&self) -> Duration {
        self.max_total_time.unwrap_or(Duration::from_secs(15)).max(self.max_time)
    }
}
fn default_ops() -> u64 {
    5_000_000
}
fn default_string() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_collection() -> usize {
    100_000
}
fn default_follow_ups() -> u32 {
    20
}

/// How Warden restarts one job (`restart_job`): where its state goes and how it is resubmitted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Resubmit over REST from a jar (`POST /jars/:jarid/run`). Give `jar` or `command`.
    #[serde(default)]
    pub jar: Option<JarConfig>,
    /// Or resubmit with this named command (under `commands:`); its arguments may use `{savepoint}` (empty for a
    /// stateless start), `{job}`, `{jid}` (the run that ended), `{target}`, `{target_url}`.
    #[serde(default)]
    pub command: Option<String>,
    /// Where savepoints are written (`targetDirectory`). Default: the cluster's configured savepoint directory.
    #[serde(default)]
    pub savepoint_dir: Option<String>,
    /// How a running job is stopped for a `savepoint` restart: `cancel` (trigger a savepoint, cancel the job once it
    /// completed; the default) or `stop` (stop-with-savepoint). With `stop`, a savepoint that times out cannot be
    /// aborted through Flink's REST API: if it completes later, the job stops.
    #[serde(default)]
    pub savepoint_mode: SavepointMode,
    /// What a `last-checkpoint` restart does when neither Flink nor Warden's history has a retained checkpoint or
    /// savepoint: `fail` (alert and do not start the job; the default) or `stateless` (start it without state).
    #[serde(default)]
    pub fallback: Fallback,
    /// A savepoint still in progress after this long is a failure (the job keeps running). Default `5m`.
    #[serde(default = "default_savepoint_timeout", with = "units::duration")]
    pub savepoint_timeout: Duration,
    /// The new job must be RUNNING (and report the restored path) within this long. Default `3m`.
    #[serde(default = "default_verify_timeout", with = "units::duration")]
    pub verify_timeout: Duration,
    /// How long a restart waits for the old run to leave a live state (RUNNING, RESTARTING, …) before it gives up
    /// rather than start a second instance next to it. Default `60s`.
    #[serde(default = "default_stop_timeout", with = "units::duration")]
    pub stop_timeout: Duration,
    /// The parallelism a `rescale` request may give the job: `{min: 1, max: 4}`. A rule's rescale (one step up,
    /// one step down, or a number) is clamped to these bounds; without them Warden does not rescale the job from
    /// rules. `min` must not exceed `max`.
    #[serde(default)]
    pub parallelism: Option<ParallelismBounds>,
    /// Upgrades and rescales of this job (`warden upgrade`, `warden rescale`, `restart_job` with `jar` or
    /// `parallelism`).
    #[serde(default)]
    pub upgrade: UpgradeConfig,
}

/// The bounds of a job's parallelism for `rescale` (`jobs.<name>.parallelism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelismBounds {
    /// The lowest parallelism a rescale may set. Default 1.
    #[serde(default = "default_min_parallelism")]
    pub min: u32,
    /// The highest parallelism a rescale may set (keep it at most the job's max parallelism and what the cluster's
    /// slots can hold).
    pub max: u32,
}

fn default_min_parallelism() -> u32 {
    1
}

/// How an upgrade or rescale is judged: the new run must be RUNNING and restored within `verify_timeout`, then
/// stay RUNNING without a single failure for `probation`; otherwise Warden rolls back to the previous jar and
/// parallelism from the same savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// How long the new run must keep RUNNING, with no failure in its exception history, before the upgrade is
    /// done ("fails in its first minutes"). `0s` ends it as soon as it is RUNNING and restored. Default `1m`.
    #[serde(default = "default_probation", with = "units::duration")]
    pub probation: Duration,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig { probation: default_probation() }
    }
}

fn default_probation() -> Duration {
    Duration::from_secs(60)
}

fn default_savepoint_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_verify_timeout() -> Duration {
    Duration::from_secs(180)
}

/// How a running job is stopped for a savepoint restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SavepointMode {
    /// `POST /jobs/:jid/stop` with `drain: false`.
    Stop,
    /// `POST /jobs/:jid/savepoints`, then `PATCH /jobs/:jid?mode=cancel` once it completed.
    #[default]
    Cancel,
}

/// What to do when there is no state to restore from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// Do not start the job; alert.
    #[default]
    Fail,
    /// Start the job without state.
    Stateless,
}

/// A job's jar, for resubmission over REST.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JarConfig {
    /// The jar's file name as listed by `GET /jars` (the newest upload of that name is used).
    #[serde(default)]
    pub name: Option<String>,
    /// A local jar file to upload when no jar of that name is on the cluster.
    #[serde(default)]
    pub upload: Option<PathBuf>,
    /// The entry class, if the jar's manifest does not name it.
    #[serde(default)]
    pub entry_class: Option<String>,
    /// Program arguments (sent as `programArgsList`, one element per argument).
    #[serde(default)]
    pub args: Vec<String>,
    /// Parallelism.
    #[serde(default)]
    pub parallelism: Option<u32>,
    /// Allow savepoint state that maps to no operator of the new job.
    #[serde(default)]
    pub allow_non_restored_state: bool,
    /// Claim mode for the restored state: `NO_CLAIM` (Flink's default), `CLAIM` or `LEGACY`.
    #[serde(default)]
    pub claim_mode: Option<String>,
    /// Extra Flink configuration for the job (`flinkConfiguration`, Flink 1.19+).
    #[serde(default)]
    pub flink_config: BTreeMap<String, String>,
}

/// Hot reload: Warden watches `warden.yaml` and the pack directories and reloads when they change (also on
/// SIGHUP). A reload parses, validates and compiles everything first and swaps only if all of it is good.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Watch the files. Default `true` (SIGHUP always works).
    #[serde(default = "yes")]
    pub watch: bool,
    /// Poll the files for changes instead of using file-system events (for network file systems). Default `false`.
    #[serde(default)]
    pub poll: bool,
    /// How often to poll when `poll` is on. Default `2s`.
    #[serde(default = "default_poll_interval", with = "units::duration")]
    pub poll_interval: Duration,
    /// Quiet time after the last change before reloading (editors write files in several steps, usually within a
    /// few milliseconds; a save that takes longer is reloaded twice, and a half-written file is refused with its
    /// error while the rules loaded before keep running). Default `50ms`.
    #[serde(default = "default_debounce", with = "units::duration")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: true, poll: false, poll_interval: default_poll_interval(), debounce: default_debounce() }
    }
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_debounce() -> Duration {
    Duration::from_millis(50)
}

/// How long Warden keeps its history and how large its files may grow, under `retention:`. Old rows are pruned
/// from the state store every `prune_every`; nothing still needed is pruned: not an action that has not finished,
/// not a restart in progress (nor its journal entry and the location it restores from), not a notification still
/// to be delivered, and nothing within the storm guard's window (`dispatch.storm_guard.window`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Journal entries (what `warden history` shows) and finished restart records older than this are deleted.
    /// At least `dispatch.storm_guard.window`, which counts relaunches in the journal. Default `90d`.
    #[serde(default = "default_journal_retention", with = "units::duration")]
    pub journal: Duration,
    /// Delivered and failed notifications (the outbox's history) and silences that ended longer ago than this are
    /// deleted. Default `30d`.
    #[serde(default = "default_notification_retention", with = "units::duration")]
    pub notifications: Duration,
    /// The savepoint and checkpoint locations Warden recorded per job (what `last-checkpoint` restarts fall back on).
    #[serde(default)]
    pub savepoints: SavepointRetention,
    /// Rotation of the alert log (`alert_log`, default `<state_dir>/alerts.jsonl`).
    #[serde(default)]
    pub alert_log: RotationConfig,
    /// Rotation of recordings (`warden run --record FILE`).
    #[serde(default)]
    pub recordings: RotationConfig,
    /// How often the state store is pruned. Default `1h`.
    #[serde(default = "default_prune_every", with = "units::duration")]
    pub prune_every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            journal: default_journal_retention(),
            notifications: default_notification_retention(),
            savepoints: SavepointRetention::default(),
            alert_log: RotationConfig::default(),
            recordings: RotationConfig::default(),
            prune_every: default_prune_every(),
        }
    }
}

fn default_journal_retention() -> Duration {
    Duration::from_secs(90 * 86400)
}
fn default_notification_retention() -> Duration {
    Duration::from_secs(30 * 86400)
}
fn default_prune_every() -> Duration {
    Duration::from_secs(3600)
}

/// How many savepoint and checkpoint locations Warden keeps per job, and for how long, under
/// `retention.savepoints`. The newest location of each job is kept whatever its age.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavepointRetention {
    /// Locations kept per target and job, newest first. At least `1`. Default `20`.
    #[serde(default = "default_savepoint_keep")]
    pub keep: usize,
    /// Locations recorded longer ago than this are forgotten (except each job's newest). At least
    /// `dispatch.storm_guard.window`. Default `30d`.
    #[serde(default = "default_savepoint_age", with = "units::duration")]
    pub max_age: Duration,
}

impl Default for SavepointRetention {
    fn default() -> Self {
        Self { keep: default_savepoint_keep(), max_age: default_savepoint_age() }
    }
}

fn default_savepoint_keep() -> usize {
    20
}
fn default_savepoint_age() -> Duration {
    Duration::from_secs(30 * 86400)
}

/// Size-based rotation of a JSON-lines file: when a line would take `FILE` past `max_size`, `FILE` becomes
/// `FILE.1`, `FILE.1` becomes `FILE.2`, and so on; the file beyond `keep` is deleted. A line is never split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationConfig {
    /// Largest size of the file before it is rotated, e.g. `64MiB`. At least `1KiB`. Default `64MiB`.
    #[serde(default = "default_rotate_size")]
    pub max_size: ByteSize,
    /// Rotated files kept (`FILE.1` … `FILE.<keep>`); `0` keeps none. Default `5`.
    #[serde(default = "default_rotate_keep")]
    pub keep: usize,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self { max_size: default_rotate_size(), keep: default_rotate_keep() }
    }
}

fn default_rotate_size() -> ByteSize {
    ByteSize(64 * 1024 * 1024)
}
fn default_rotate_keep() -> usize {
    5
}

impl RetentionConfig {
    /// Checks what the types cannot: nothing shorter than the storm guard's window, no empty history, no tiny
    /// files. A problem with a value left at its default is reported at `dispatch.storm_guard.window`.
    pub(crate) fn check(
        &self,
        doc: &super::yaml::YamlDoc,
        guard: &StormGuardConfig,
        diags: &mut Vec<crate::diag::Diagnostic>,
    ) {
        let set = |path: &str| {
            let mut v = Some(&doc.value);
            for k in path.split('.') {
                v = v.and_then(|v| v.get(k));
            }
            v.is_some()
        };
        let window = humantime::format_duration(guard.window);
        for (path, value, what) in [
            ("retention.journal", self.journal, "journal entries"),
            ("retention.savepoints.max_age", self.savepoints.max_age, "savepoint history"),
        ] {
            if value < guard.window {
                let at = if set(path) { path } else { "dispatch.storm_guard.window" };
                diags.push(doc.diag(
                    at,
                    format!(
                        "`{path}` ({}) is shorter than the storm guard's window `dispatch.storm_guard.window` \
                         ({window}): {what} within the window are still needed",
                        humantime::format_duration(value)
                    ),
                ));
            }
        }
        if self.savepoints.keep == 0 {
            diags.push(doc.diag("retention.savepoints.keep", "`retention.savepoints.keep` must be at least 1"));
        }
        for (path, r) in [("retention.alert_log", &self.alert_log), ("retention.recordings", &self.recordings)] {
            if r.max_size.0 < 1024 {
                diags.push(doc.diag(
                    &format!("{path}.max_size"),
                    format!("`{path}.max_size` must be at least 1KiB (it is {})", r.max_size),
                ));
            }
        }
        if self.prune_every.is_zero() {
            diags.push(doc.diag("retention.prune_every", "`retention.prune_every` must be longer than 0s"));
        }
    }
}

#[cfg(test)]
mod retention_tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        crate::config::load_str(Path::new("warden.yaml"), text)
            .map(|l| l.config)
            .map_err(|d| d.0.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn retention_has_defaults_and_takes_human_units() {
        let c = load("targets: []\n").unwrap().retention;
        assert_eq!(c, RetentionConfig::default());
        assert_eq!(c.journal, Duration::from_secs(90 * 86400));
        assert_eq!(c.alert_log, RotationConfig { max_size: ByteSize(64 << 20), keep: 5 });
        let c = load(
            "retention:\n  journal: 180d\n  notifications: 7d\n  savepoints: {keep: 5, max_age: 2d}\n  \
             alert_log: {max_size: 1MiB, keep: 0}\n  recordings: {max_size: 512MiB}\n  prune_every: 10m\n",
        )
        .unwrap()
        .retention;
        assert_eq!(c.journal, Duration::from_secs(180 * 86400));
        assert_eq!(c.savepoints, SavepointRetention { keep: 5, max_age: Duration::from_secs(2 * 86400) });
        assert_eq!(c.alert_log, RotationConfig { max_size: ByteSize(1 << 20), keep: 0 });
        assert_eq!(c.recordings, RotationConfig { max_size: ByteSize(512 << 20), keep: 5 });
        assert_eq!(c.prune_every, Duration::from_secs(600));
    }

    #[test]
    fn retention_shorter_than_the_storm_guard_window_is_refused_where_it_is_set() {
        let e =
            load("retention:\n  journal: 10m\n  savepoints:\n    keep: 0\n  recordings: {max_size: 10}\n").unwrap_err();
        assert_eq!(
            e,
            [
                "warden.yaml:2:12: `retention.journal` (10m) is shorter than the storm guard's window \
                 `dispatch.storm_guard.window` (30m): journal entries within the window are still needed",
                "warden.yaml:4:11: `retention.savepoints.keep` must be at least 1",
                "warden.yaml:5:26: `retention.recordings.max_size` must be at least 1KiB (it is 10 bytes)",
            ]
        );
        // A window longer than a default: reported at the window, which is what the operator wrote.
        let e = load("dispatch:\n  storm_guard:\n    window: 60d\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("warden.yaml:3:13: `retention.savepoints.max_age` (30days)"), "{e:?}");
        let e = load("retention:\n  jornal: 1d\n").unwrap_err();
        assert!(e[0].contains("unknown field `jornal`, did you mean `journal`?"), "{e:?}");
    }
}

/// Warden's own HTTP server, under `server:`. It is on by default and listens on loopback only
/// (`127.0.0.1:9464`), which is what a Prometheus on the same host (or a sidecar) expects; set `listen` to
/// `0.0.0.0:9464` to be scraped from elsewhere (then set a `token`), or `enabled: false` to turn it off.
///
/// If the default address is taken Warden logs an error and watches without its server; an address written in
/// `listen` that cannot be bound stops `warden run` with exit code 1. The section is read at start: a reload does
/// not move the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Serve at all. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The address and port to listen on, `host:port` with an IP address (`127.0.0.1:9464`, `[::1]:9464`,
    /// `0.0.0.0:9464`). Default `127.0.0.1:9464`.
    #[serde(default)]
    pub listen: Option<String>,
    /// A bearer token (a secret reference such as `${WARDEN_TOKEN}` or `file:/run/secrets/warden-token`) that
    /// every request but `GET /healthz` must carry as `Authorization: Bearer <token>` (browsers: HTTP basic
    /// authentication with any user name and the token as password). Default: none (no authentication).
    /// `POST /api/events` needs it: without a token that endpoint answers 403.
    #[serde(default)]
    pub token: Option<Secret>,
    /// Pushed events (`POST /api/events`): size limit and the window in which a retried event is taken once.
    #[serde(default)]
    pub events: ServerEventsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { enabled: true, listen: None, token: None, events: ServerEventsConfig::default() }
    }
}

/// `server.events`: how `POST /api/events` takes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEventsConfig {
    /// Largest request body accepted; a larger one is answered 413. Default `1MiB`.
    #[serde(default = "default_event_max_body")]
    pub max_body: ByteSize,
    /// An event whose `id` (with its `source`) was accepted within this window is answered 200 with
    /// `"duplicate": true` and not judged again, so a sender may retry safely. Remembered in memory (at most
    /// 100 000 ids): a restart of Warden forgets them. Default `10m`.
    #[serde(default = "default_event_dedup", with = "units::duration")]
    pub dedup_window: Duration,
}

impl Default for ServerEventsConfig {
    fn default() -> Self {
        Self { max_body: default_event_max_body(), dedup_window: default_event_dedup() }
    }
}

fn default_event_max_body() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_event_dedup() -> Duration {
    Duration::from_secs(600)
}

impl ServerConfig {
    /// The address used when `listen` is not set.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:9464";

    /// The address to listen on (`listen`, else [`ServerConfig::DEFAULT_LISTEN`]); `None` if `listen` is not a
    /// valid socket address (which loading reports).
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.as_deref().unwrap_or(Self::DEFAULT_LISTEN).parse().ok()
    }
}

/// When Warden alerts on itself (`self_alerts:`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfAlertsConfig {
    /// Set to `false` to turn self-alerts off. Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A rule whose last this many evaluations in a row failed raises an alert. Default `3`.
    #[serde(default = "default_self_rule_errors")]
    pub rule_errors: u32,
    /// An `every:` probe that has not run for this many intervals raises an alert. Default `3`.
    #[serde(default = "default_self_probe_intervals")]
    pub probe_intervals: u32,
    /// A notification still undelivered after this long raises an alert (it goes to every channel, so it may not
    /// reach the one that is down). Default `15m`.
    #[serde(default = "default_self_outbox_age", with = "units::duration")]
    pub outbox_age: Duration,
    /// How often Warden looks at itself. Default `10s`.
    #[serde(default = "default_self_every", with = "units::duration")]
    pub every: Duration,
}

impl Default for SelfAlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rule_errors: default_self_rule_errors(),
            probe_intervals: default_self_probe_intervals(),
            outbox_age: default_self_outbox_age(),
            every: default_self_every(),
        }
    }
}

fn default_self_rule_errors() -> u32 {
    3
}
fn default_self_probe_intervals() -> u32 {
    3
}
fn default_self_outbox_age() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_self_every() -> Duration {
    Duration::from_secs(10)
}

/// The `inhibit:` section: your inhibit rules, and whether the packs' default ones apply.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitConfig {
    /// Apply the inhibit rules that packs ship in their `pack.yaml` (named `<pack>/<name>`). Default `true`.
    #[serde(default = "yes")]
    pub pack_defaults: bool,
    /// Pack inhibit rules to leave out, by name (`flink/jobmanager-unreachable`), when the others should apply.
    #[serde(default)]
    pub disable: Vec<String>,
    /// Your own inhibit rules, applied in addition to the packs' ones.
    #[serde(default)]
    pub rules: Vec<InhibitRuleConfig>,
}

impl Default for InhibitConfig {
    fn default() -> Self {
        Self { pack_defaults: true, disable: vec![], rules: vec![] }
    }
}

/// One inhibit rule (in `warden.yaml` under `inhibit.rules`, or in a pack's `pack.yaml` under `inhibit`).
///
/// While an alert that matches `source` is firing, every alert that matches `target` and has the same value as
/// that source alert for each of the `equal` labels is *inhibited*: journalled (`warden history` shows it with the
/// alert that inhibits it) but not sent. If it still fires when the last source alert resolves, it is sent then,
/// once, as firing; if it resolves first, nothing is sent about it at all. An alert never inhibits itself.
/// Only alerts are inhibited (their firing, reminders and resolution): actions, `giving_up`, restart results and
/// log lines are not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    /// A name for the journal and `warden history` (`jobmanager-down`). In a pack it is prefixed with the pack's
    /// name (`flink/jobmanager-unreachable`). Default: `inhibit.rules[N]` (in a pack: `<pack>/inhibit[N]`).
    #[serde(default)]
    pub name: Option<String>,
    /// The alerts that inhibit: same keys as a route's `match` (`rule`, `pack`, `target`, `job`, `severity`,
    /// `labels`), except `event` (a source is a firing alert). An empty `source` is refused.
    pub source: crate::notify::config::MatchConfig,
    /// The alerts that are inhibited, with the same keys as `source`. An empty `target` is refused.
    pub target: crate::notify::config::MatchConfig,
    /// What must be the same in the source alert and the inhibited one: `target`, `job` (the subject), `rule`,
    /// `pack`, `severity`, `labels.NAME` (a label of the alert's target) or `details.NAME` (a field of the rule's
    /// alert map `details`). A label that one of them lacks is not equal. Default `[target]`: a JobManager
    /// that is down mutes its own jobs' alerts, not those of other clusters; write `equal: []` to drop that.
    #[serde(default = "default_inhibit_equal")]
    pub equal: Vec<String>,
}

fn default_inhibit_equal() -> Vec<String> {
    vec!["target".into()]
}

/// Leader election of an HA pair (`ha:`), used only with a PostgreSQL store. The leader holds a lease row in the
/// database and renews it; the standby takes it over once it has run out. The defaults give a failover under 10 s
/// after the leader dies (lease 6 s + one retry of 1 s + the first poll); a graceful stop hands over at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// How long the leadership lasts without a renewal. The leader stops acting the moment its own lease (measured
    /// on its monotonic clock from when it *sent* the last successful renewal) runs out, before the database would
    /// let anyone else take it. Longer: fewer false failovers on a slow database; shorter: faster failover.
    /// Default `6s`.
    #[serde(default = "default_ha_lease", with = "units::duration")]
    pub lease: Duration,
    /// How often the leader renews its lease. Less than half of `lease`, so one lost renewal does not cost the
    /// leadership. Default `2s`.
    #[serde(default = "default_ha_renew", with = "units::duration")]
    pub renew_every: Duration,
    /// How often the standby tries to take the lease (and reconnects to the database after an error). Default `1s`.
    #[serde(default = "default_ha_retry", with = "units::duration")]
    pub retry_every: Duration,
    /// This instance's name in the lease row, `warden status` and the peer's status. Unique per instance.
    /// Default: `<hostname>-<pid>`.
    #[serde(default)]
    pub instance: Option<String>,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            lease: default_ha_lease(),
            renew_every: default_ha_renew(),
            retry_every: default_ha_retry(),
            instance: None,
        }
    }
}

fn default_ha_lease() -> Duration {
    Duration::from_secs(6)
}
fn default_ha_renew() -> Duration {
    Duration::from_secs(2)
}
fn default_ha_retry() -> Duration {
    Duration::from_secs(1)
}

impl HaConfig {
    /// Checks what the types cannot: a renewal well within the lease, no zero durations, a usable instance name.
    pub(crate) fn check(&self, doc: &super::yaml::YamlDoc, diags: &mut Vec<crate::diag::Diagnostic>) {
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if self.lease < Duration::from_secs(1) {
            diags.push(doc.diag("ha.lease", format!("`ha.lease` must be at least 1s (it is {})", fmt(self.lease))));
        }
        if self.renew_every.is_zero() || self.renew_every * 2 >= self.lease {
            diags.push(doc.diag(
                "ha.renew_every",
                format!(
                    "`ha.renew_every` ({}) must be longer than 0s and less than half of `ha.lease` ({}): one lost \
                     renewal must not cost the leadership",
                    fmt(self.renew_every),
                    fmt(self.lease)
                ),
            ));
        }
        if self.retry_every.is_zero() || self.retry_every > self.lease {
            diags.push(doc.diag(
                "ha.retry_every",
                format!(
                    "`ha.retry_every` ({}) must be longer than 0s and at most `ha.lease` ({})",
                    fmt(self.retry_every),
                    fmt(self.lease)
                ),
            ));
        }
        if let Some(name) = &self.instance {
            let ok = !name.is_empty()
                && name.len() <= 200
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:@".contains(c));
            if !ok {
                diags.push(doc.diag(
                    "ha.instance",
                    format!("`ha.instance` `{name}` must be 1-200 characters of letters, digits and `-_.:@`"),
                ));
            }
        }
    }
}

#[cfg(test)]
mod ha_tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        crate::config::load_str(Path::new("warden.yaml"), text)
            .map(|l| l.config)
            .map_err(|d| d.0.iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn ha_has_defaults_for_a_failover_under_ten_seconds() {
        let c = load("targets: []\n").unwrap().ha;
        assert_eq!(c, HaConfig::default());
        assert!(c.lease + c.retry_every < Duration::from_secs(10));
        let c = load("ha:\n  lease: 10s\n  renew_every: 3s\n  retry_every: 500ms\n  instance: a-1\n").unwrap().ha;
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!(c.renew_every, Duration::from_secs(3));
        assert_eq!(c.retry_every, Duration::from_millis(500));
        assert_eq!(c.instance.as_deref(), Some("a-1"));
    }

    #[test]
    fn a_renewal_that_is_not_well_within_the_lease_is_refused_where_it_is_written() {
        let e = load("ha:\n  lease: 4s\n  renew_every: 2s\n").unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("warden.yaml:3:") && e[0].contains("less than half of `ha.lease`"), "{e:?}");
        let e = load("ha:\n  instance: 'a b'\n  unknown: 1\n").unwrap_err();
        assert!(e.iter().any(|e| e.contains("unknown")), "{e:?}");
        let e = load("ha:\n  instance: 'a b'\n").unwrap_err();
        assert!(e[0].contains("`ha.instance` `a b`"), "{e:?}");
    }
}
