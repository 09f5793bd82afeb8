//! Rule packs: a directory with `pack.yaml` (name, version, parameters, probes) and `.rhai` rule files.
//!
//! Rules are namespaced by pack (`flink/job-not-running`). The shipped Flink pack (`rules/`) is also embedded in
//! the binary, so `warden demo` works from anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::yaml::{join_index, join_key, YamlDoc};
use crate::config::ProbeConfig;
use crate::diag::Diagnostic;

/// `pack.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The pack's name: its rules are called `<name>/<rule>`. Letters, digits, `-` and `_`.
    pub name: String,
    /// Semantic version, `MAJOR.MINOR.PATCH`.
    #[serde(deserialize_with = "scalar_string")]
    pub version: String,
    /// What the pack watches for, in a sentence or two.
    #[serde(default)]
    pub description: String,
    /// The Warden versions the pack works with, e.g. `>=0.1, <0.2` (informational until pack installation checks it).
    #[serde(default)]
    pub warden: Option<String>,
    /// Parameters operators can set under `packs.<name>.params` in `warden.yaml`.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamSpec>,
    /// The pack's probes; rule names in them are the pack's own short names.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
}

/// A pack parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value when `warden.yaml` sets none. A parameter without a default must be set.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// What it does.
    #[serde(default)]
    pub description: String,
}

/// Types of pack parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    /// Text.
    String,
    /// A whole number.
    Int,
    /// A number.
    Float,
    /// `true` or `false`.
    Bool,
    /// A list of strings.
    StringList,
    /// A duration such as `5m`, passed to rules as text (use `duration_ms()`).
    Duration,
    /// The name of a command under `commands:` (or empty for none).
    Command,
    /// Any JSON value.
    Any,
}

impl ParamType {
    /// Checks `v` against this type.
    pub fn check(self, v: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value as V;
        let ok = match self {
            ParamType::String | ParamType::Command => v.is_string(),
            ParamType::Int => v.is_i64() || v.is_u64(),
            ParamType::Float => v.is_number(),
            ParamType::Bool => v.is_boolean(),
            ParamType::StringList => v.as_array().is_some_and(|a| a.iter().all(V::is_string)),
            ParamType::Duration => {
                return match v.as_str() {
                    Some(s) => crate::config::units::parse_duration(s).map(|_| ()),
                    None => Err(format!("expected a duration such as \"5m\", found {v}")),
                }
            }
            ParamType::Any => true,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {}, found {v}", self.describe()))
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ParamType::String => "a string",
            ParamType::Int => "an integer",
            ParamType::Float => "a number",
            ParamType::Bool => "true or false",
            ParamType::StringList => "a list of strings",
            ParamType::Duration => "a duration",
            ParamType::Command => "a command name",
            ParamType::Any => "any value",
        }
    }
}

/// A rule file of a pack.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// Short name (file stem).
    pub short: String,
    /// Namespaced name.
    pub name: String,
    /// Path (for messages).
    pub file: PathBuf,
    /// Source text.
    pub source: String,
}

/// A loaded pack.
#[derive(Debug, Clone)]
pub struct Pack {
    /// The manifest.
    pub manifest: Manifest,
    /// Its directory.
    pub dir: PathBuf,
    /// The parsed `pack.yaml`, for positions.
    pub doc: YamlDoc,
    /// Its rules, by short name.
    pub rules: BTreeMap<String, RuleSource>,
}

impl Pack {
    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }
}

/// The files of a pack, from disk or embedded.
#[derive(Debug, Clone)]
pub struct PackFiles {
    /// The directory (for messages and relative paths).
    pub dir: PathBuf,
    /// `pack.yaml`'s text.
    pub manifest: String,
    /// Rule files: (file name, text).
    pub rules: Vec<(String, String)>,
}

/// The shipped Flink pack, embedded in the binary.
pub fn embedded_flink_pack() -> PackFiles {
    PackFiles {
        dir: PathBuf::from("<embedded>/rules"),
        manifest: include_str!("../rules/pack.yaml").into(),
        rules: vec![
            ("job-not-running.rhai".into(), include_str!("../rules/job-not-running.rhai").into()),
            ("tasks-failing.rhai".into(), include_str!("../rules/tasks-failing.rhai").into()),
            ("restart-loop.rhai".into(), include_str!("../rules/restart-loop.rhai").into()),
            ("jobmanager-unreachable.rhai".into(), include_str!("../rules/jobmanager-unreachable.rhai").into()),
        ],
    }
}

/// Reads a pack directory.
pub fn read_dir(dir: &Path) -> Result<PackFiles, Diagnostic> {
    let mpath = dir.join("pack.yaml");
    let manifest =
        std::fs::read_to_string(&mpath).map_err(|e| Diagnostic::file(&mpath, format!("cannot read: {e}")))?;
    let mut rules = vec![];
    let entries = std::fs::read_dir(dir).map_err(|e| Diagnostic::file(dir, format!("cannot list: {e}")))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".rhai") && !name.starts_with('.') {
            let text = std::fs::read_to_string(e.path())
                .map_err(|err| Diagnostic::file(e.path(), format!("cannot read: {err}")))?;
            rules.push((name, text));
        }
    }
    rules.sort();
    Ok(PackFiles { dir: dir.to_path_buf(), manifest, rules })
}

/// Reads a scalar as text (YAML reads `version: 1.0` as a number).
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(d)? {
        serde_yaml::Value::String(s) => Ok(s),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a version such as \"1.2.3\", found {other:?}"))),
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Parses and checks a pack's files (not its rules' syntax: that is the compiler's job).
pub fn load(files: PackFiles, diags: &mut Vec<Diagnostic>) -> Option<Pack> {
    let mpath = files.dir.join("pack.yaml");
    let doc = match YamlDoc::parse(&mpath, &files.manifest) {
        Ok(d) => d,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let n = diags.len();
    let manifest: Manifest = doc.typed(&doc.value, "", diags)?;
    if !valid_name(&manifest.name) {
        diags
            .push(doc.diag("name", format!("pack name `{}` may only use letters, digits, `-` and `_`", manifest.name)));
    }
    if !is_semver(&manifest.version) {
        diags.push(doc.diag("version", format!("version `{}` is not MAJOR.MINOR.PATCH", manifest.version)));
    }
    for (k, p) in &manifest.parameters {
        if let Some(d) = &p.default {
            if let Err(e) = p.kind.check(d) {
                diags.push(doc.diag(&join_key(&join_key("parameters", k), "default"), format!("parameter `{k}`: {e}")));
            }
        }
    }
    let mut rules = BTreeMap::new();
    for (file, source) in files.rules {
        let short = file.trim_end_matches(".rhai").to_string();
        if !valid_name(&short) {
            diags.push(Diagnostic::file(
                files.dir.join(&file),
                "rule file names may only use letters, digits, `-` and `_` before `.rhai`",
            ));
            continue;
        }
        let name = format!("{}/{short}", manifest.name);
        rules.insert(short.clone(), RuleSource { short, name, file: files.dir.join(&file), source });
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in manifest.probes.iter().enumerate() {
        let path = join_index("probes", i);
        if !seen.insert(&p.name) {
            diags.push(doc.diag(&join_key(&path, "name"), format!("duplicate probe name `{}`", p.name)));
        }
        crate::config::check_schedule(&doc, &path, &p.name, p.every, p.cron.as_deref(), diags);
        for (j, r) in p.rules.iter().enumerate() {
            if !rules.contains_key(r) {
                let hint = crate::diag::closest(r, rules.keys().map(String::as_str))
                    .map(|c| format!(", did you mean `{c}`?"))
                    .unwrap_or_default();
                diags.push(doc.diag(
                    &join_index(&join_key(&path, "rules"), j),
                    format!(
                        "probe `{}` names rule `{r}`, which is not a `.rhai` file of pack `{}`{hint}",
                        p.name, manifest.name
                    ),
                ));
            }
        }
    }
    (diags.len() == n).then_some(Pack { manifest, dir: files.dir, doc, rules })
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Finds and loads the packs named by `pack_paths` (relative to `base`). Paths that are the defaults and do not
/// exist are skipped quietly; any other missing path is an error.
pub fn discover(pack_paths: &[String], base: &Path, diags: &mut Vec<Diagnostic>, config_file: &Path) -> Vec<Pack> {
    let defaults = ["rules", "plugins/*"];
    let mut packs: Vec<Pack> = vec![];
    for p in pack_paths {
        let (dir, many) = match p.strip_suffix("/*") {
            Some(d) => (base.join(d), true),
            None => (base.join(p), false),
        };
        if !dir.is_dir() {
            if !defaults.contains(&p.as_str()) {
                diags.push(Diagnostic::file(
                    config_file,
                    format!("pack path `{p}` ({}) is not a directory", dir.display()),
                ));
            }
            continue;
        }
        let dirs: Vec<PathBuf> = if many {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.join("pack.yaml").is_file()).collect())
                .unwrap_or_default();
            v.sort();
            v
        } else {
            vec![dir]
        };
        for d in dirs {
            match read_dir(&d) {
                Ok(files) => {
                    if let Some(pack) = load(files, diags) {
                        if let Some(other) = packs.iter().find(|o| o.name() == pack.name()) {
                            diags.push(pack.doc.diag(
                                "name",
                                format!("pack name `{}` is also used by `{}`", pack.name(), other.dir.display()),
                            ));
                        } else {
                            packs.push(pack);
                        }
                    }
                }
                Err(d) => diags.push(d),
            }
        }
    }
    packs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_pack_loads() {
        let mut diags = vec![];
        let p = load(embedded_flink_pack(), &mut diags).unwrap_or_else(|| panic!("{diags:?}"));
        assert_eq!(p.name(), "flink");
        assert_eq!(p.rules.len(), 4);
    }

    #[test]
    fn bad_manifest_is_reported_with_positions() {
        let files = PackFiles {
            dir: PathBuf::from("p"),
            manifest: "name: x\nversion: 1.0\nparameters:\n  n: {type: int, default: \"3\"}\nprobes:\n  - name: a\n    every: 5s\n    request: {path: /x}\n    rules: [nope]\n".into(),
            rules: vec![("yes.rhai".into(), "1".into())],
        };
        let mut diags = vec![];
        assert!(load(files, &mut diags).is_none());
        let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert!(msgs.contains(&"p/pack.yaml:2:10: version `1.0` is not MAJOR.MINOR.PATCH".to_string()), "{msgs:#?}");
        assert!(msgs.iter().any(|m| m.starts_with("p/pack.yaml:4:") && m.contains("expected an integer")), "{msgs:#?}");
        assert!(msgs.iter().any(|m| m.starts_with("p/pack.yaml:9:13: probe `a` names rule `nope`")), "{msgs:#?}");
    }
}
