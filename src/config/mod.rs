//! Configuration: `warden.yaml` → a validated [`Config`], or every problem at once as [`Diagnostics`].
//!
//! Loading is pure (it starts nothing): parse, type-check each item separately so that one bad probe does not hide
//! the next, then check what types cannot (schedules, references between items, secrets, files).

mod secret;
mod types;
pub mod units;
pub mod yaml;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub use secret::Secret;
pub use types::*;
use yaml::{join_index, join_key, Value, YamlDoc};

use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::schedule::Schedule;

/// A configuration that passed every check, with the document it came from (for positions of later errors).
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The typed configuration; secrets are resolved and relative paths are absolute.
    pub config: Config,
    /// The parsed document, to point later diagnostics (unknown rules, pack parameters) at the right line.
    pub doc: YamlDoc,
    /// The directory of `warden.yaml`; relative paths in it are resolved against this.
    pub base_dir: PathBuf,
}

/// Top-level keys of `warden.yaml`.
const TOP_KEYS: &[&str] = &[
    "state_dir",
    "store",
    "pack_paths",
    "targets",
    "probes",
    "commands",
    "packs",
    "jobs",
    "dispatch",
    "scripts",
    "reload",
    "notify",
    "alert_log",
    "shutdown_grace",
    "retention",
    "server",
    "self_alerts",
    "inhibit",
    "ha",
];

/// Finds the state directory for any command: `given` (a `--state-dir` flag) when there is one, else `state_dir`
/// of the configuration at `config`, relative to its directory (default `warden-state`). Only that one key is
/// read: no secret is resolved and nothing else has to be valid, so an operator's shell needs none of the daemon's
/// environment.
pub fn state_dir(config: &Path, given: Option<PathBuf>) -> Result<PathBuf, Diagnostics> {
    if let Some(d) = given {
        return Ok(d);
    }
    let text = std::fs::read_to_string(config).map_err(|e| {
        Diagnostics(vec![Diagnostic::file(
            config,
            format!("cannot read the configuration to find the state directory: {e} (or pass --state-dir)"),
        )])
    })?;
    let doc = YamlDoc::parse(config, &text).map_err(|d| Diagnostics(vec![d]))?;
    let dir = match doc.value.get("state_dir") {
        None | Some(Value::Null) => default_state_dir(),
        Some(Value::String(s)) => PathBuf::from(s),
        Some(_) => return Err(Diagnostics(vec![doc.diag("state_dir", "`state_dir` must be a path")])),
    };
    let base = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(base.join(dir))
}

/// Finds the state store for a command that reads or edits it (`history`, `status`, `silence`, `guard`, …):
/// with `given` (a `--state-dir` flag), the SQLite file in that directory; else the configuration's `store:`
/// (its PostgreSQL URL resolved: a `${VAR}` or `file:` secret must be readable from the operator's shell) and
/// `state_dir` (see [`state_dir`]). Nothing else of the configuration has to be valid.
pub fn store_location(config: &Path, given: Option<PathBuf>) -> Result<(StoreConfig, PathBuf), Diagnostics> {
    if given.is_some() {
        return Ok((StoreConfig::default(), state_dir(config, given)?));
    }
    let dir = state_dir(config, None)?;
    let text =
        std::fs::read_to_string(config).map_err(|e| Diagnostics(vec![Diagnostic::file(config, e.to_string())]))?;
    let doc = YamlDoc::parse(config, &text).map_err(|d| Diagnostics(vec![d]))?;
    let url = doc.value.get("store").and_then(|s| s.get("postgres")).and_then(|p| p.get("url"));
    let url = match url {
        None | Some(Value::Null) => return Ok((StoreConfig::default(), dir)),
        Some(Value::String(u)) => u.clone(),
        Some(_) => return Err(Diagnostics(vec![doc.diag("store.postgres.url", "`store.postgres.url` must be text")])),
    };
    let base = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut secret = Secret::new(url);
    secret
        .resolve(base)
        .map_err(|e| Diagnostics(vec![doc.diag("store.postgres.url", format!("`store.postgres.url`: {e}"))]))?;
    Ok((StoreConfig { postgres: Some(PostgresStoreConfig { url: secret }) }, dir))
}

/// How much of the outside world a load may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Resolve secrets (`${ENV}`, `file:`), read CA files, check jar and plugin files outside the configuration's
    /// directory and that the state directory is writable. Off for `warden check --no-environment` (CI validating a
    /// configuration without production's secrets and files); the result must then not be run.
    pub environment: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { environment: true }
    }
}

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    load_with(path, LoadOptions::default())
}

/// Reads and checks the configuration file at `path`, looking at the outside world as `opts` says.
pub fn load_with(path: &Path, opts: LoadOptions) -> Result<LoadedConfig, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics(vec![Diagnostic::file(path, format!("cannot read configuration: {e}"))]))?;
    load_str_with(path, &text, opts)
}

/// Checks configuration text as if it had been read from `path`.
pub fn load_str(path: &Path, text: &str) -> Result<LoadedConfig, Diagnostics> {
    load_str_with(path, text, LoadOptions::default())
}

/// The `managed_by` label of every target whose jobs something other than Warden manages (any value but `warden`).
pub fn hands_off(targets: &[TargetConfig]) -> BTreeMap<String, String> {
    targets
        .iter()
        .filter_map(|t| {
            t.labels.get(MANAGED_BY).filter(|v| v.as_str() != "warden").map(|v| (t.name.clone(), v.clone()))
        })
        .collect()
}

/// The target label that says who manages a target's jobs (`managed_by: flink-operator`).
pub const MANAGED_BY: &str = "managed_by";

/// Checks configuration text as if it had been read from `path`, looking at the outside world as `opts` says.
pub fn load_str_with(path: &Path, text: &str, opts: LoadOptions) -> Result<LoadedConfig, Diagnostics> {
    if text.trim().is_empty() {
        return Err(Diagnostics(vec![Diagnostic::file(
            path,
            "the configuration is empty: it needs at least `targets:` (see `examples/`)".to_string(),
        )]));
    }
    let doc = YamlDoc::parse(path, text).map_err(|d| Diagnostics(vec![d]))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_dir = if base_dir.as_os_str().is_empty() { PathBuf::from(".") } else { base_dir };
    let mut diags = Vec::new();

    let root = match &doc.value {
        Value::Null => serde_yaml::Mapping::new(),
        Value::Mapping(m) => m.clone(),
        _ => return Err(Diagnostics(vec![doc.diag("", "the configuration must be a mapping of settings")])),
    };

    // Type-check list and map items one by one so that every bad item is reported.
    for (k, v) in &root {
        let Some(key) = k.as_str() else {
            diags.push(doc.diag("", "configuration keys must be strings"));
            continue;
        };
        match key {
            "targets" => check_seq::<TargetConfig>(&doc, v, key, &mut diags),
            "probes" => check_seq::<ProbeConfig>(&doc, v, key, &mut diags),
            "commands" => check_map::<CommandConfig>(&doc, v, key, &mut diags),
            "packs" => check_map::<PackSettings>(&doc, v, key, &mut diags),
            "jobs" => check_map::<JobConfig>(&doc, v, key, &mut diags),
            k if TOP_KEYS.contains(&k) => {}
            other => {
                let hint = closest(other, TOP_KEYS.iter().copied())
                    .map(|c| format!(", did you mean `{c}`?"))
                    .unwrap_or_else(|| format!("; known keys: {}", TOP_KEYS.join(", ")));
                diags.push(doc.key_diag(other, format!("unknown key `{other}`{hint}")));
            }
        }
    }
    // The remaining settings sections, each on its own so that a typo in one does not hide a typo in another.
    for (k, v) in &root {
        let Some(key) = k.as_str() else { continue };
        if ["targets", "probes", "commands", "packs", "jobs"].contains(&key) || !TOP_KEYS.contains(&key) {
            continue;
        }
        let mut one = serde_yaml::Mapping::new();
        one.insert(k.clone(), v.clone());
        let _ = doc.typed::<Config>(&Value::Mapping(one), "", &mut diags);
    }
    if !diags.is_empty() {
        let mut d = Diagnostics(diags);
        d.sort();
        return Err(d);
    }
    let Some(mut config) = doc.typed::<Config>(&doc.value, "", &mut diags) else {
        return Err(Diagnostics(diags));
    };
    if matches!(doc.value, Value::Null) {
        config = doc.typed::<Config>(&Value::Mapping(Default::default()), "", &mut diags).expect("empty config");
    }
    check_semantics(&doc, &base_dir, &mut config, opts, &mut diags);
    config.dispatch.hands_off = hands_off(&config.targets);
    if !diags.is_empty() {
        let mut d = Diagnostics(diags);
        d.sort();
        return Err(d);
    }
    Ok(LoadedConfig { config, doc, base_dir })
}

fn check_seq<T: serde::de::DeserializeOwned>(doc: &YamlDoc, v: &Value, key: &str, diags: &mut Vec<Diagnostic>) {
    match v {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let _ = doc.typed::<T>(item, &join_index(key, i), diags);
            }
        }
        Value::Null => {}
        _ => diags.push(doc.diag(key, format!("`{key}` must be a list"))),
    }
}

fn check_map<T: serde::de::DeserializeOwned>(doc: &YamlDoc, v: &Value, key: &str, diags: &mut Vec<Diagnostic>) {
    match v {
        Value::Mapping(m) => {
            for (k, item) in m {
                let name = k.as_str().unwrap_or("?");
                let _ = doc.typed::<T>(item, &join_key(key, name), diags);
            }
        }
        Value::Null => {}
        _ => diags.push(doc.diag(key, format!("`{key}` must be a mapping of names to settings"))),
    }
}

/// Placeholders a command argument may use besides the variables a rule passes.
pub const BUILTIN_PLACEHOLDERS: &[&str] = &["target", "target_url", "rule", "subject", "probe"];

/// Placeholders every command may use: the built-in ones, the job and run a rule or restart passes, and the
/// savepoint of a restart by command.
pub const KNOWN_PLACEHOLDERS: &[&str] =
    &["target", "target_url", "rule", "subject", "probe", "job", "jid", "savepoint"];

/// The shortest `every:` Warden accepts: a faster poll is a load test on the JobManager, not monitoring.
pub const MIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Shells whose `-c` script must not contain placeholders (an outside value would become shell code).
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];

/// Checks what the types cannot: uniqueness, references, schedules, secrets, files. Resolves secrets and paths.
fn check_semantics(doc: &YamlDoc, base: &Path, config: &mut Config, opts: LoadOptions, diags: &mut Vec<Diagnostic>) {
    config.state_dir = base.join(&config.state_dir);
    if opts.environment {
        if let Err(e) = writable_dir(&config.state_dir) {
            diags.push(doc.diag("state_dir", format!("state directory `{}`: {e}", config.state_dir.display())));
        }
    }
    if let Some(p) = &config.alert_log {
        config.alert_log = Some(base.join(p));
    }
    if let Some(pg) = &mut config.store.postgres {
        if opts.environment || !pg.url.is_reference() {
            match pg.url.resolve(base) {
                Err(e) => diags.push(doc.diag("store.postgres.url", format!("`store.postgres.url`: {e}"))),
                Ok(()) => {
                    if let Err(e) = crate::store::pg::PgTarget::parse(pg.url.expose()) {
                        diags.push(doc.diag("store.postgres.url", format!("`store.postgres.url`: {e}")));
                    }
                }
            }
        }
    }

    let mut names = HashSet::new();
    for (i, t) in config.targets.iter_mut().enumerate() {
        let path = join_index("targets", i);
        if !names.insert(t.name.clone()) {
            diags.push(doc.diag(&join_key(&path, "name"), format!("duplicate target name `{}`", t.name)));
        }
        match reqwest::Url::parse(&t.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => diags.push(doc.diag(
                &join_key(&path, "url"),
                format!("target `{}`: url scheme `{}` is not http or https", t.name, u.scheme()),
            )),
            Err(e) => diags
                .push(doc.diag(&join_key(&path, "url"), format!("target `{}`: invalid url `{}`: {e}", t.name, t.url))),
        }
        if let Some(ca) = &t.ca_file {
            let p = base.join(ca);
            if opts.environment && !p.is_file() {
                diags.push(doc.diag(
                    &join_key(&path, "ca_file"),
                    format!("target `{}`: CA file `{}` does not exist", t.name, p.display()),
                ));
            }
            t.ca_file = Some(p);
        }
        let name = t.name.clone();
        let resolve = |s: &mut Secret, at: String, diags: &mut Vec<Diagnostic>| {
            if !opts.environment && s.is_reference() {
                return;
            }
            if let Err(e) = s.resolve(base) {
                diags.push(doc.diag(&at, format!("target `{name}`: {e}")));
            }
        };
        if let Some(auth) = &mut t.auth {
            match (&mut auth.bearer, &mut auth.basic) {
                (Some(s), None) => resolve(s, join_key(&path, "auth.bearer"), diags),
                (None, Some(b)) => resolve(&mut b.password, join_key(&path, "auth.basic.password"), diags),
                _ => diags.push(doc.diag(
                    &join_key(&path, "auth"),
                    format!("target `{}`: `auth` needs exactly one of `bearer` or `basic`", t.name),
                )),
            }
        }
        for (h, v) in t.headers.iter_mut() {
            let at = join_key(&join_key(&path, "headers"), h);
            if reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err() {
                diags.push(doc.key_diag(&at, format!("target `{name}`: `{h}` is not a valid HTTP header name")));
            }
            resolve(v, at, diags);
        }
    }

    let target_names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
    let mut probe_names = HashSet::new();
    for (i, p) in config.probes.iter().enumerate() {
        let path = join_index("probes", i);
        if !probe_names.insert(p.name.clone()) {
            diags.push(doc.diag(&join_key(&path, "name"), format!("duplicate probe name `{}`", p.name)));
        }
        check_selector(doc, &join_key(&path, "targets"), p.targets.as_ref(), &target_names, diags);
        if p.rules.is_empty() {
            diags.push(doc.diag(&join_key(&path, "rules"), format!("probe `{}` names no rules", p.name)));
        }
        if check_probe_kind(doc, &path, p, diags) {
            continue;
        }
        check_schedule(doc, &path, &p.name, p.every, p.cron.as_deref(), diags);
        if !p.request.path.starts_with('/') {
            diags.push(doc.diag(
                &join_key(&path, "request.path"),
                format!("probe `{}`: request path `{}` must start with `/`", p.name, p.request.path),
            ));
        }
        if reqwest::Method::from_bytes(p.request.method.to_ascii_uppercase().as_bytes()).is_err() {
            diags.push(
                doc.diag(&join_key(&path, "request.method"), format!("invalid HTTP method `{}`", p.request.method)),
            );
        }
        check_fan_out(doc, &path, p, diags);
    }
    for (name, settings) in &config.packs {
        check_selector(doc, &format!("packs.{name}.targets"), settings.targets.as_ref(), &target_names, diags);
        if settings.every.is_some_and(|e| e < MIN_EVERY) {
            diags.push(doc.diag(
                &format!("packs.{name}.every"),
                format!("pack `{name}`: `every` must be at least {}", humantime::format_duration(MIN_EVERY)),
            ));
        }
    }

    for (name, c) in config.commands.iter_mut() {
        let path = join_key("commands", name);
        if c.argv.is_empty() || c.argv[0].trim().is_empty() {
            diags.push(doc.diag(&join_key(&path, "argv"), format!("command `{name}`: argv needs at least a program")));
        }
        let script_at = c
            .argv
            .first()
            .map(|p| Path::new(p).file_name().and_then(|f| f.to_str()).unwrap_or(""))
            .filter(|p| SHELLS.contains(p))
            .and_then(|_| c.argv.iter().position(|a| a == "-c"))
            .map(|i| i + 1);
        for (j, arg) in c.argv.iter().enumerate() {
            let at = join_index(&join_key(&path, "argv"), j);
            match crate::action::command::placeholders(arg) {
                Err(e) => diags.push(doc.diag(&at, format!("command `{name}`: {e}"))),
                Ok(found) => {
                    for p in &found {
                        if !KNOWN_PLACEHOLDERS.contains(&p.as_str()) && !c.placeholders.contains(p) {
                            let hint = closest(
                                p,
                                KNOWN_PLACEHOLDERS.iter().copied().chain(c.placeholders.iter().map(String::as_str)),
                            )
                            .map(|x| format!(" (did you mean `{{{x}}}`?)"))
                            .unwrap_or_default();
                            diags.push(doc.diag(
                                &at,
                                format!(
                                    "command `{name}`: unknown placeholder `{{{p}}}`{hint}; known: {}; a variable a \
                                     rule passes must be listed under `placeholders:`",
                                    KNOWN_PLACEHOLDERS.join(", ")
                                ),
                            ));
                        }
                    }
                    if Some(j) == script_at && !found.is_empty() {
                        diags.push(doc.diag(
                            &at,
                            format!(
                                "command `{name}`: placeholder `{{{}}}` inside a shell script would paste an outside \
                                 value into shell code; pass it as an argument after the script and use \"$1\" instead",
                                found[0]
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(w) = &c.workdir {
            c.workdir = Some(base.join(w));
        }
        for (k, v) in c.env.iter_mut() {
            if !opts.environment && v.is_reference() {
                continue;
            }
            if let Err(e) = v.resolve(base) {
                diags.push(doc.diag(&join_key(&join_key(&path, "env"), k), format!("command `{name}`: {e}")));
            }
        }
    }
    let command_names: Vec<String> = config.commands.keys().cloned().collect();
    for (name, j) in config.jobs.iter_mut() {
        let path = join_key("jobs", name);
        if let Some(b) = j.parallelism {
            if b.min == 0 || b.min > b.max {
                diags.push(doc.diag(
                    &join_key(&path, "parallelism"),
                    format!(
                        "job `{name}`: parallelism bounds need 1 <= min <= max, not min {} and max {}",
                        b.min, b.max
                    ),
                ));
            }
        }
        match (&mut j.jar, &j.command) {
            (Some(_), Some(_)) | (None, None) => {
                diags.push(doc.diag(&path, format!("job `{name}`: give exactly one of `jar` or `command`")))
            }
            (None, Some(c)) if !command_names.contains(c) => {
                let hint = closest(c, command_names.iter().map(String::as_str))
                    .map(|x| format!(", did you mean `{x}`?"))
                    .unwrap_or_default();
                diags
                    .push(doc.diag(&join_key(&path, "command"), format!("job `{name}`: no command named `{c}`{hint}")));
            }
            (Some(jar), None) => {
                if jar.name.is_none() && jar.upload.is_none() {
                    diags.push(
                        doc.diag(
                            &join_key(&path, "jar"),
                            format!("job `{name}`: `jar` needs `name`, `upload`, or both"),
                        ),
                    );
                }
                if let Some(u) = &jar.upload {
                    let p = base.join(u);
                    if (opts.environment || p.starts_with(base)) && !p.is_file() {
                        diags.push(doc.diag(
                            &join_key(&path, "jar.upload"),
                            format!("job `{name}`: jar file `{}` does not exist", p.display()),
                        ));
                    }
                    jar.upload = Some(p);
                }
                if let Some(m) = &jar.claim_mode {
                    if !["CLAIM", "NO_CLAIM", "LEGACY"].contains(&m.as_str()) {
                        diags.push(doc.diag(
                            &join_key(&path, "jar.claim_mode"),
                            format!("job `{name}`: claim_mode `{m}` is not CLAIM, NO_CLAIM or LEGACY"),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    config.notify.check(doc, base, opts.environment, diags);
    check_inhibit(doc, &config.inhibit, diags);
    if config.dispatch.storm_guard.max_runs == 0 {
        diags.push(doc.diag("dispatch.storm_guard.max_runs", "max_runs must be at least 1"));
    }
    if config.dispatch.max_concurrent_actions == 0 {
        diags.push(doc.diag("dispatch.max_concurrent_actions", "max_concurrent_actions must be at least 1"));
    }
    if config.dispatch.max_concurrent_actions_per_target == 0 {
        diags.push(doc.diag(
            "dispatch.max_concurrent_actions_per_target",
            "max_concurrent_actions_per_target must be at least 1",
        ));
    }
    if let Some(total) = config.scripts.max_total_time.filter(|t| *t < config.scripts.max_time) {
        diags.push(doc.diag(
            "scripts.max_total_time",
            format!(
                "max_total_time ({}) must be at least max_time ({}): it is the budget of a whole evaluation, \
                 follow-up requests included",
                humantime::format_duration(total),
                humantime::format_duration(config.scripts.max_time)
            ),
        ));
    }
    config.retention.check(doc, &config.dispatch.storm_guard, diags);
    config.ha.check(doc, diags);
    check_server(doc, base, &mut config.server, opts, diags);
}

/// Inhibit rules: matchers, `equal` labels, unique names. (Names under `inhibit.disable` are checked against the
/// packs' rules when the packs are loaded.)
fn check_inhibit(doc: &YamlDoc, c: &InhibitConfig, diags: &mut Vec<Diagnostic>) {
    let mut names = HashSet::new();
    for (i, r) in c.rules.iter().enumerate() {
        let path = join_index("inhibit.rules", i);
        if let Some(n) = &r.name {
            if n.trim().is_empty() {
                diags.push(doc.diag(&join_key(&path, "name"), "an inhibit rule's name cannot be empty"));
            } else if !names.insert(n.clone()) {
                diags.push(doc.diag(&join_key(&path, "name"), format!("duplicate inhibit rule `{n}`")));
            }
        }
        if let Err(errors) = crate::notify::inhibit::InhibitRule::compile(String::new(), r) {
            for (field, e) in errors {
                diags.push(doc.diag(&join_key(&path, &field), format!("inhibit rule: {e}")));
            }
        }
    }
}

/// `server.listen` must be an IP socket address; `server.token` is resolved like every other secret.
fn check_server(doc: &YamlDoc, base: &Path, s: &mut ServerConfig, opts: LoadOptions, diags: &mut Vec<Diagnostic>) {
    if let Some(l) = &s.listen {
        if let Err(e) = l.parse::<std::net::SocketAddr>() {
            diags.push(doc.diag(
                "server.listen",
                format!(
                    "`server.listen`: `{l}` is not an address and port ({e}); write e.g. `127.0.0.1:9464`, \
                     `0.0.0.0:9464` or `[::1]:9464`"
                ),
            ));
        }
    }
    if let Some(t) = &mut s.token {
        if opts.environment || !t.is_reference() {
            if let Err(e) = t.resolve(base) {
                diags.push(doc.diag("server.token", format!("`server.token`: {e}")));
            } else if t.expose().is_empty() {
                diags.push(doc.diag("server.token", "`server.token` is empty: give a token or leave it out"));
            }
        }
    }
}

/// Whether Warden can keep its state in `dir`: an existing writable directory, or one it can create (the nearest
/// existing ancestor is a writable directory). Nothing is created.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut p = dir;
    loop {
        match std::fs::metadata(p) {
            Ok(m) if !m.is_dir() => return Err(format!("`{}` exists and is not a directory", p.display())),
            Ok(_) => {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
                // SAFETY: access(2) only reads the NUL-terminated path.
                if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
                    let why = std::io::Error::last_os_error();
                    return Err(if p == dir {
                        format!("not writable: {why}")
                    } else {
                        format!("cannot be created: `{}` is not writable: {why}", p.display())
                    });
                }
                return Ok(());
            }
            Err(_) => match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => return Ok(()),
            },
        }
    }
}

/// Checks that a probe either polls (`request:`) or takes pushed events (`events:`), and that an `events:` probe
/// has none of the polling settings. `true` when the polling checks are to be skipped: an `events:` probe, or one
/// with neither (already reported).
pub fn check_probe_kind(doc: &YamlDoc, path: &str, p: &ProbeConfig, diags: &mut Vec<Diagnostic>) -> bool {
    let Some(_) = &p.events else {
        if p.request.path.is_empty() {
            diags.push(doc.diag(
                path,
                format!("probe `{}` needs `request:` (what to poll) or `events:` (events pushed to Warden)", p.name),
            ));
            return true;
        }
        return false;
    };
    let polling = [
        ("request", !p.request.path.is_empty()),
        ("every", p.every.is_some()),
        ("cron", p.cron.is_some()),
        ("for_each", p.for_each.is_some()),
    ];
    for (key, set) in polling {
        if set {
            diags.push(doc.diag(
                &join_key(path, key),
                format!("probe `{}`: an `events:` probe takes pushed events and has no `{key}`", p.name),
            ));
        }
    }
    true
}

/// Checks a probe's `for_each` and the placeholders of its request path: only `{jid}` and `{job}`, only with
/// `for_each`, and a `for_each` probe needs one of them, an `every` interval, a state and a concurrency of 1 or more.
pub fn check_fan_out(doc: &YamlDoc, path: &str, p: &ProbeConfig, diags: &mut Vec<Diagnostic>) {
    let at_path = join_key(path, "request.path");
    let found = path_placeholders(&p.request.path);
    for (_, name) in &found {
        if !JOB_PATH_PLACEHOLDERS.contains(name) {
            let hint = crate::diag::closest(name, JOB_PATH_PLACEHOLDERS.iter().copied())
                .map(|c| format!(", did you mean `{{{c}}}`?"))
                .unwrap_or_default();
            diags.push(doc.diag(
                &at_path,
                format!(
                    "probe `{}`: unknown placeholder `{{{name}}}` in the request path (a `for_each: job` probe fills \
                     `{{jid}}` and `{{job}}`){hint}",
                    p.name
                ),
            ));
        }
    }
    let Some(fe) = &p.for_each else {
        if let Some((_, name)) = found.iter().find(|(_, n)| JOB_PATH_PLACEHOLDERS.contains(n)) {
            diags.push(doc.diag(
                &at_path,
                format!(
                    "probe `{}`: `{{{name}}}` in the request path needs `for_each: job` (the probe then polls once per \
                     job of the target)",
                    p.name
                ),
            ));
        }
        return;
    };
    let at = join_key(path, "for_each");
    if found.is_empty() {
        diags.push(doc.diag(
            &at_path,
            format!(
                "probe `{}` has `for_each: job` but its request path `{}` has no `{{jid}}` or `{{job}}`: every job \
                 would poll the same path",
                p.name, p.request.path
            ),
        ));
    }
    if fe.concurrency == 0 {
        diags.push(doc.diag(
            &join_key(&at, "concurrency"),
            format!("probe `{}`: `for_each.concurrency` must be at least 1", p.name),
        ));
    }
    if fe.states.is_empty() {
        diags.push(doc.diag(
            &join_key(&at, "states"),
            format!("probe `{}`: `for_each.states` lists no job state: no job would be polled", p.name),
        ));
    }
    if p.cron.is_some() && p.every.is_none() {
        diags.push(doc.diag(
            &join_key(path, "cron"),
            format!("probe `{}`: a `for_each` probe polls at a fixed interval: use `every`, not `cron`", p.name),
        ));
    }
}

/// Checks that a probe has exactly one valid schedule.
pub fn check_schedule(
    doc: &YamlDoc,
    path: &str,
    probe: &str,
    every: Option<std::time::Duration>,
    cron: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) {
    match (every, cron) {
        (Some(_), Some(_)) => diags.push(
            doc.diag(&join_key(path, "cron"), format!("probe `{probe}`: give either `every` or `cron`, not both")),
        ),
        (None, None) => {
            diags.push(doc.diag(path, format!("probe `{probe}` has no schedule: add `every: 10s` or `cron: ...`")))
        }
        (Some(d), None) if d < MIN_EVERY => diags.push(doc.diag(
            &join_key(path, "every"),
            format!("probe `{probe}`: `every` must be at least {}", humantime::format_duration(MIN_EVERY)),
        )),
        (None, Some(c)) => {
            if let Err(e) = Schedule::cron(c) {
                diags.push(doc.diag(&join_key(path, "cron"), format!("probe `{probe}`: {e}")));
            }
        }
        _ => {}
    }
}

/// Checks that a selector names only existing targets.
pub fn check_selector(
    doc: &YamlDoc,
    path: &str,
    sel: Option<&TargetSelector>,
    targets: &[&str],
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(TargetSelector::Names(names)) = sel {
        for (j, n) in names.iter().enumerate() {
            if !targets.contains(&n.as_str()) {
                let hint =
                    closest(n, targets.iter().copied()).map(|c| format!(", did you mean `{c}`?")).unwrap_or_default();
                diags.push(doc.diag(&join_index(path, j), format!("unknown target `{n}`{hint}")));
            }
        }
    }
}

/// Converts a YAML value into JSON (for parameters), or explains why it cannot be.
pub fn yaml_to_json(v: &Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot be used as a parameter value: {e}"))
}

/// Merges pack parameter defaults with the values set in `warden.yaml`.
pub fn merge_params(
    defaults: &BTreeMap<String, serde_json::Value>,
    set: &BTreeMap<String, serde_json::Value>,
) -> BTreeMap<String, serde_json::Value> {
    let mut out = defaults.clone();
    for (k, v) in set {
        out.insert(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match load_str(Path::new("warden.yaml"), text) {
            Ok(_) => vec![],
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn parallelism_bounds_need_min_at_most_max() {
        let job = |b: &str| format!("jobs:\n  clicks:\n    jar: {{name: clicks.jar}}\n    parallelism: {b}\n");
        assert!(errs(&job("{min: 1, max: 4}")).is_empty());
        assert!(errs(&job("{max: 4}")).is_empty(), "min defaults to 1");
        assert_eq!(
            errs(&job("{min: 3, max: 2}")),
            ["warden.yaml:4:18: job `clicks`: parallelism bounds need 1 <= min <= max, not min 3 and max 2"]
        );
        assert_eq!(errs(&job("{min: 0, max: 2}")).len(), 1);
        let e = errs(&job("{min: 1}"));
        assert!(e.len() == 1 && e[0].starts_with("warden.yaml:4:") && e[0].contains("max"), "{e:?}");
        let c = load_str(Path::new("warden.yaml"), &job("{max: 8}")).unwrap().config;
        assert_eq!(c.jobs["clicks"].parallelism, Some(ParallelismBounds { min: 1, max: 8 }));
    }

    #[test]
    fn targets_labelled_managed_by_are_hands_off_for_the_dispatcher() {
        let text = "targets:\n  - {name: a, url: \"http://a:8081\", labels: {managed_by: flink-operator}}\n  - {name: b, url: \"http://b:8081\", labels: {managed_by: warden}}\n  - {name: c, url: \"http://c:8081\"}\n";
        let c = load_str(Path::new("warden.yaml"), text).unwrap().config;
        assert_eq!(c.dispatch.hands_off, BTreeMap::from([("a".to_string(), "flink-operator".to_string())]));
    }

    #[test]
    fn the_store_is_sqlite_by_default_and_postgresql_when_given_a_url_never_shown() {
        let c = load_str(Path::new("warden.yaml"), "targets: []\n").unwrap().config;
        assert_eq!(c.store, StoreConfig::default(), "SQLite in state_dir, nothing to set");
        let text = "targets: []\nstore:\n  postgres:\n    url: postgres://w:hunter2@127.0.0.1:5432/w\n";
        let c = load_str(Path::new("warden.yaml"), text).unwrap().config;
        let url = &c.store.postgres.as_ref().unwrap().url;
        assert_eq!(url.expose(), "postgres://w:hunter2@127.0.0.1:5432/w");
        assert!(!format!("{c:?}").contains("hunter2"), "the URL is a secret");

        let typo = errs("targets: []\nstore:\n  postgress: {url: x}\n");
        assert!(typo.iter().any(|e| e.contains("warden.yaml:3:3") && e.contains("postgress")), "{typo:?}");
        let remote = errs("targets: []\nstore:\n  postgres:\n    url: postgres://w:hunter2@db.example.com/w\n");
        assert!(remote.iter().any(|e| e.contains("store.postgres.url") && e.contains("sslmode=require")), "{remote:?}");
        assert!(remote.iter().all(|e| !e.contains("hunter2")), "{remote:?}");
        let unset = errs("targets: []\nstore: {postgres: {url: '${WARDEN_TEST_PG_URL_UNSET}'}}\n");
        assert!(unset.iter().any(|e| e.contains("WARDEN_TEST_PG_URL_UNSET")), "{unset:?}");
    }

    #[test]
    fn an_empty_file_is_refused_and_a_minimal_one_gets_the_defaults() {
        let e = load_str(Path::new("/etc/warden/warden.yaml"), " \n").unwrap_err().to_string();
        assert!(e.contains("the configuration is empty"), "{e}");
        let opts = LoadOptions { environment: false };
        let c = load_str_with(Path::new("/etc/warden/warden.yaml"), "targets: []\n", opts).unwrap().config;
        assert_eq!(c.state_dir, PathBuf::from("/etc/warden/warden-state"));
        assert_eq!(c.pack_paths, vec!["builtin:flink", "rules", "plugins/*"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = "\
targets:
  - name: jm
    url: http://localhost:8081
    labls: {}
probes:
  - name: a
    targets: [jm, nope]
    cron: \"not a cron\"
    request: {path: /jobs/overview}
    rules: [x]
  - name: b
    every: 10s
    request: {path: jobs}
    rules: [x]
sttate_dir: /tmp
";
        let e = errs(text);
        assert!(e.contains(&"warden.yaml:4:5: unknown field `labls`, did you mean `labels`?".to_string()), "{e:#?}");
        assert!(
            e.contains(&"warden.yaml:15:1: unknown key `sttate_dir`, did you mean `state_dir`?".to_string()),
            "{e:#?}"
        );
        assert_eq!(e.len(), 2, "type errors stop before semantic checks: {e:#?}");

        let text = text.replace("    labls: {}\n", "").replace("sttate_dir", "state_dir");
        let e = errs(&text);
        assert!(e.iter().any(|m| m.starts_with("warden.yaml:6:") && m.contains("unknown target `nope`")), "{e:#?}");
        assert!(e.iter().any(|m| m.starts_with("warden.yaml:7:11: probe `a`: invalid cron")), "{e:#?}");
        assert!(e.iter().any(|m| m.starts_with("warden.yaml:12:") && m.contains("must start with `/`")), "{e:#?}");
    }

    #[test]
    fn fan_out_probes_are_checked_with_positions() {
        let probe = |for_each: &str, path: &str| {
            format!(
                "targets:\n  - {{name: jm, url: \"http://x\"}}\nprobes:\n  - name: cp\n    every: 30s\n{for_each}    request: {{path: \"{path}\"}}\n    rules: [p/r]\n"
            )
        };
        let ok = |t: &str| load_str_with(Path::new("warden.yaml"), t, LoadOptions { environment: false });
        let c = ok(&probe("    for_each: job\n", "/jobs/{jid}/checkpoints")).unwrap_or_else(|d| panic!("{d}")).config;
        let fe = c.probes[0].for_each.clone().unwrap();
        assert_eq!((fe.over, fe.states, fe.concurrency), (FanOutOver::Job, vec![JobState::Running], 4));
        let long = "    for_each: {over: job, states: [RUNNING, RESTARTING], concurrency: 8}\n";
        let fe = ok(&probe(long, "/jobs/{job}")).unwrap().config.probes[0].for_each.clone().unwrap();
        assert_eq!((fe.states.clone(), fe.concurrency), (vec![JobState::Running, JobState::Restarting], 8));
        assert!(fe.takes("RESTARTING") && !fe.takes("FAILED"));

        assert_eq!(
            errs(&probe("", "/jobs/{jid}/checkpoints")),
            ["warden.yaml:6:21: probe `cp`: `{jid}` in the request path needs `for_each: job` (the probe then polls once per job of the target)"]
        );
        assert_eq!(
            errs(&probe("    for_each: job\n", "/jobs/{jdi}/x")),
            ["warden.yaml:7:21: probe `cp`: unknown placeholder `{jdi}` in the request path (a `for_each: job` probe fills `{jid}` and `{job}`), did you mean `{jid}`?"]
        );
        assert_eq!(
            errs(&probe("    for_each: job\n", "/jobs/overview")),
            ["warden.yaml:7:21: probe `cp` has `for_each: job` but its request path `/jobs/overview` has no `{jid}` or `{job}`: every job would poll the same path"]
        );
        assert_eq!(
            errs(&probe("    for_each: job\n    cron: \"0 * * * * *\"\n", "/jobs/{jid}")),
            ["warden.yaml:7:11: probe `cp`: give either `every` or `cron`, not both"]
        );
        assert_eq!(
            errs(&probe("    for_each: {over: job, concurrency: 0, states: []}\n", "/jobs/{jid}")),
            [
                "warden.yaml:6:40: probe `cp`: `for_each.concurrency` must be at least 1",
                "warden.yaml:6:51: probe `cp`: `for_each.states` lists no job state: no job would be polled"
            ]
        );
        let e = errs(&probe("    for_each: {over: job, states: [RUNING]}\n", "/jobs/{jid}"));
        assert!(
            e.len() == 1 && e[0].starts_with("warden.yaml:6:") && e[0].contains("unknown variant `RUNING`"),
            "{e:?}"
        );
        let e = errs(&probe("    for_each: jobs\n", "/jobs/{jid}"));
        assert!(e.len() == 1 && e[0].starts_with("warden.yaml:6:") && e[0].contains("unknown variant `jobs`"), "{e:?}");
        let e = errs(&probe("    for_each: {over: job, concurency: 2}\n", "/jobs/{jid}"));
        assert!(e.len() == 1 && e[0].starts_with("warden.yaml:6:") && e[0].contains("concurency"), "{e:?}");
    }

    #[test]
    fn job_paths_are_filled_per_segment() {
        assert_eq!(fill_job_path("/jobs/{jid}/checkpoints", "ab12", "x"), "/jobs/ab12/checkpoints");
        assert_eq!(
            fill_job_path("/x/{job}?j={jid}&{other}", "a", "a b/c?d#é"),
            "/x/a%20b%2Fc%3Fd%23%C3%A9?j=a&{other}"
        );
        assert_eq!(path_placeholders("/a/{jid}/{ x}/{job}"), vec![(3, "jid"), (14, "job")]);
    }

    #[test]
    fn malformed_yaml_points_at_the_line() {
        let e = errs("targets:\n  - name: jm\n    url: [unclosed\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("warden.yaml:"), "{e:?}");
        assert!(e[0].contains("invalid YAML"), "{e:?}");
    }

    #[test]
    fn missing_secret_is_named() {
        let e = errs("targets:\n  - name: jm\n    url: http://x\n    auth: {bearer: \"${WARDEN_NO_SUCH_VAR}\"}\n");
        assert_eq!(e, vec!["warden.yaml:4:20: target `jm`: environment variable `WARDEN_NO_SUCH_VAR` is not set"]);
    }
}
