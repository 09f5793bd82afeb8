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

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics(vec![Diagnostic::file(path, format!("cannot read configuration: {e}"))]))?;
    load_str(path, &text)
}

/// Checks configuration text as if it had been read from `path`.
pub fn load_str(path: &Path, text: &str) -> Result<LoadedConfig, Diagnostics> {
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
    check_semantics(&doc, &base_dir, &mut config, &mut diags);
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

/// Checks what the types cannot: uniqueness, references, schedules, secrets, files. Resolves secrets and paths.
fn check_semantics(doc: &YamlDoc, base: &Path, config: &mut Config, diags: &mut Vec<Diagnostic>) {
    config.state_dir = base.join(&config.state_dir);
    if let Some(p) = &config.alert_log {
        config.alert_log = Some(base.join(p));
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
            if !p.is_file() {
                diags.push(doc.diag(
                    &join_key(&path, "ca_file"),
                    format!("target `{}`: CA file `{}` does not exist", t.name, p.display()),
                ));
            }
            t.ca_file = Some(p);
        }
        let name = t.name.clone();
        let resolve = |s: &mut Secret, at: String, diags: &mut Vec<Diagnostic>| {
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
            resolve(v, join_key(&join_key(&path, "headers"), h), diags);
        }
    }

    let target_names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
    let mut probe_names = HashSet::new();
    for (i, p) in config.probes.iter().enumerate() {
        let path = join_index("probes", i);
        if !probe_names.insert(p.name.clone()) {
            diags.push(doc.diag(&join_key(&path, "name"), format!("duplicate probe name `{}`", p.name)));
        }
        check_schedule(doc, &path, &p.name, p.every, p.cron.as_deref(), diags);
        check_selector(doc, &join_key(&path, "targets"), p.targets.as_ref(), &target_names, diags);
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
        if p.rules.is_empty() {
            diags.push(doc.diag(&join_key(&path, "rules"), format!("probe `{}` names no rules", p.name)));
        }
    }
    for (name, settings) in &config.packs {
        check_selector(doc, &format!("packs.{name}.targets"), settings.targets.as_ref(), &target_names, diags);
    }

    for (name, c) in config.commands.iter_mut() {
        let path = join_key("commands", name);
        if c.argv.is_empty() || c.argv[0].trim().is_empty() {
            diags.push(doc.diag(&join_key(&path, "argv"), format!("command `{name}`: argv needs at least a program")));
        }
        for (j, arg) in c.argv.iter().enumerate() {
            if let Err(e) = crate::action::command::placeholders(arg) {
                diags.push(doc.diag(&join_index(&join_key(&path, "argv"), j), format!("command `{name}`: {e}")));
            }
        }
        if let Some(w) = &c.workdir {
            c.workdir = Some(base.join(w));
        }
        for (k, v) in c.env.iter_mut() {
            if let Err(e) = v.resolve(base) {
                diags.push(doc.diag(&join_key(&join_key(&path, "env"), k), format!("command `{name}`: {e}")));
            }
        }
    }
    let command_names: Vec<String> = config.commands.keys().cloned().collect();
    for (name, j) in config.jobs.iter_mut() {
        let path = join_key("jobs", name);
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
                    if !p.is_file() {
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
    config.notify.check(doc, base, diags);
    if config.dispatch.storm_guard.max_runs == 0 {
        diags.push(doc.diag("dispatch.storm_guard.max_runs", "max_runs must be at least 1"));
    }
    config.retention.check(doc, &config.dispatch.storm_guard, diags);
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
        (Some(d), None) if d.is_zero() => {
            diags.push(doc.diag(&join_key(path, "every"), format!("probe `{probe}`: `every` must be longer than 0s")))
        }
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
    fn empty_file_is_a_valid_config_with_defaults() {
        let c = load_str(Path::new("/etc/warden/warden.yaml"), "").unwrap().config;
        assert_eq!(c.state_dir, PathBuf::from("/etc/warden/warden-state"));
        assert_eq!(c.pack_paths, vec!["rules", "plugins/*"]);
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
