//! Rule packs: a directory with `pack.yaml` (name, version, Warden range, dependencies, parameters, probes), `.rhai`
//! rule files, Rhai modules under `modules/` that its rules can `import`, and rule tests under `tests/`.
//!
//! Rules are namespaced by pack (`flink/job-not-running`). The shipped Flink pack (`rules/`) is embedded in the
//! binary and loaded through the default `pack_paths` entry `builtin:flink`, so a `warden.yaml` works wherever it
//! is; `warden pack export flink DIR` writes it out for editing, and a directory pack named `flink` replaces the
//! built-in one. Optional packs live under `plugins/`.
//!
//! ```text
//! plugins/mypack/
//!   pack.yaml            name, version, warden: ">=0.1, <0.2", dependencies: {flink: ">=0.1"}, parameters, probes
//!   my-rule.rhai         the rule `mypack/my-rule`
//!   modules/util.rhai    `import "util" as u;` in the pack's rules (`import "mypack/util"` from dependents)
//!   tests/*.yaml         rule tests (`warden test`)
//! ```

pub mod package;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::config::yaml::{join_index, join_key, YamlDoc};
use crate::config::ProbeConfig;
use crate::diag::Diagnostic;
use crate::script::{ModuleSet, ModuleSource};

/// This Warden's version, which packs' `warden` ranges are checked against.
pub const WARDEN_VERSION: &str = env!("CARGO_PKG_VERSION");

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
    /// The Warden versions the pack works with, as a semver range such as `>=0.1, <0.2`. A pack whose range
    /// excludes the running Warden is not loaded. Default: any version.
    #[serde(default, deserialize_with = "opt_scalar_string")]
    pub warden: Option<String>,
    /// Other packs this one needs, as pack name → semver range (`flink: ">=0.1"`). Its rules may import their
    /// modules as `import "<pack>/<module>"`.
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    /// Parameters operators can set under `packs.<name>.params` in `warden.yaml`.
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamSpec>,
    /// The pack's probes; rule names in them are the pack's own short names.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// Default inhibit rules (see `inhibit.rules` in `warden.yaml` for the fields), applied unless `warden.yaml`
    /// says `inhibit.pack_defaults: false` or lists them under `inhibit.disable`. Each is named
    /// `<pack>/<name>`; rule names in their matchers are written in full (`flink/jobmanager-unreachable`) or short.
    #[serde(default)]
    pub inhibit: Vec<crate::config::InhibitRuleConfig>,
}

impl Manifest {
    /// The name of the pack's `i`-th inhibit rule: `<pack>/<name>`, or `<pack>/inhibit[i]` without a name.
    pub fn inhibit_name(&self, i: usize) -> String {
        match self.inhibit.get(i).and_then(|r| r.name.as_deref()) {
            Some(n) => format!("{}/{n}", self.name),
            None => format!("{}/inhibit[{i}]", self.name),
        }
    }
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
    /// The parsed `version`.
    pub version: semver::Version,
    /// Its directory.
    pub dir: PathBuf,
    /// The parsed `pack.yaml`, for positions.
    pub doc: YamlDoc,
    /// Its rules, by short name.
    pub rules: BTreeMap<String, RuleSource>,
    /// Its Rhai modules (`modules/*.rhai`), by name (file stem).
    pub modules: BTreeMap<String, ModuleSource>,
}

impl Pack {
    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The rule test files of the pack (`tests/*.yaml` and `tests/*.yml`), sorted. Empty for the embedded pack.
    pub fn test_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir.join("tests"))
            .map(|r| {
                r.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                    .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
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
    /// Module files under `modules/`: (file name, text).
    pub modules: Vec<(String, String)>,
}

/// The `pack_paths` entry of the shipped Flink pack: loaded from the binary, so a `warden.yaml` works wherever it
/// is. A directory pack named `flink` (from another `pack_paths` entry) replaces it.
pub const BUILTIN_FLINK: &str = "builtin:flink";

/// The prefix of `pack_paths` entries that name a pack embedded in the binary.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// Every file of the shipped Flink pack (`rules/`), as (path relative to the pack, text): the manifest, the rules,
/// the rule tests and their fixtures. What `warden pack export flink DIR` writes.
pub const EMBEDDED_FLINK_FILES: &[(&str, &str)] = &[
    ("pack.yaml", include_str!("../../rules/pack.yaml")),
    ("checkpoint-duration.rhai", include_str!("../../rules/checkpoint-duration.rhai")),
    ("checkpointing-off.rhai", include_str!("../../rules/checkpointing-off.rhai")),
    ("checkpoints-failing.rhai", include_str!("../../rules/checkpoints-failing.rhai")),
    ("checkpoints-stalled.rhai", include_str!("../../rules/checkpoints-stalled.rhai")),
    ("job-not-running.rhai", include_str!("../../rules/job-not-running.rhai")),
    ("jobmanager-unreachable.rhai", include_str!("../../rules/jobmanager-unreachable.rhai")),
    ("restart-loop.rhai", include_str!("../../rules/restart-loop.rhai")),
    ("savepoint-freshness.rhai", include_str!("../../rules/savepoint-freshness.rhai")),
    ("tasks-failing.rhai", include_str!("../../rules/tasks-failing.rhai")),
    ("modules/ckpt.rhai", include_str!("../../rules/modules/ckpt.rhai")),
    (
        "tests/fixtures/checkpoints-1x-config-hourly.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-config-hourly.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-config.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-config.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-failing-0-restored.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-failing-0-restored.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-failing-3-restored.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-failing-3-restored.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-failing-7.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-failing-7.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-failing-9.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-failing-9.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-hourly-next.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-hourly-next.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-hourly-stalled.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-hourly-stalled.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-hourly.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-hourly.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-in-progress-done.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-in-progress-done.json"),
    ),
    (
        "tests/fixtures/checkpoints-1x-in-progress.json",
        include_str!("../../rules/tests/fixtures/checkpoints-1x-in-progress.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-config-not-retained.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-config-not-retained.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-config-off.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-config-off.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-config-tolerant.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-config-tolerant.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-config.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-config.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-failing-2.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-failing-2.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-failing-3.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-failing-3.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-failing-4.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-failing-4.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-healthy.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-healthy.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-never-29m.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-never-29m.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-never-31m.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-never-31m.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-never-5m.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-never-5m.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-not-restored.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-not-restored.json"),
    ),
    ("tests/fixtures/checkpoints-2x-off.json", include_str!("../../rules/tests/fixtures/checkpoints-2x-off.json")),
    (
        "tests/fixtures/checkpoints-2x-recovered.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-recovered.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-savepoint.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-savepoint.json"),
    ),
    ("tests/fixtures/checkpoints-2x-slow.json", include_str!("../../rules/tests/fixtures/checkpoints-2x-slow.json")),
    (
        "tests/fixtures/checkpoints-2x-stalled-10m.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-stalled-10m.json"),
    ),
    (
        "tests/fixtures/checkpoints-2x-stalled-21m.json",
        include_str!("../../rules/tests/fixtures/checkpoints-2x-stalled-21m.json"),
    ),
    (
        "tests/fixtures/job-exceptions-history.json",
        include_str!("../../rules/tests/fixtures/job-exceptions-history.json"),
    ),
    (
        "tests/fixtures/job-failed-exceptions.json",
        include_str!("../../rules/tests/fixtures/job-failed-exceptions.json"),
    ),
    (
        "tests/fixtures/jobs-overview-cancelled.json",
        include_str!("../../rules/tests/fixtures/jobs-overview-cancelled.json"),
    ),
    (
        "tests/fixtures/jobs-overview-failed-only.json",
        include_str!("../../rules/tests/fixtures/jobs-overview-failed-only.json"),
    ),
    (
        "tests/fixtures/jobs-overview-restarting.json",
        include_str!("../../rules/tests/fixtures/jobs-overview-restarting.json"),
    ),
    (
        "tests/fixtures/jobs-overview-tasks-failing.json",
        include_str!("../../rules/tests/fixtures/jobs-overview-tasks-failing.json"),
    ),
    ("tests/fixtures/jobs-overview.json", include_str!("../../rules/tests/fixtures/jobs-overview.json")),
    ("tests/checkpoint-duration-1x.yaml", include_str!("../../rules/tests/checkpoint-duration-1x.yaml")),
    ("tests/checkpoint-duration.yaml", include_str!("../../rules/tests/checkpoint-duration.yaml")),
    ("tests/checkpointing-off-1x.yaml", include_str!("../../rules/tests/checkpointing-off-1x.yaml")),
    ("tests/checkpointing-off.yaml", include_str!("../../rules/tests/checkpointing-off.yaml")),
    ("tests/checkpoints-failing-1x.yaml", include_str!("../../rules/tests/checkpoints-failing-1x.yaml")),
    ("tests/checkpoints-failing.yaml", include_str!("../../rules/tests/checkpoints-failing.yaml")),
    ("tests/checkpoints-healthy.yaml", include_str!("../../rules/tests/checkpoints-healthy.yaml")),
    ("tests/checkpoints-stalled-1x.yaml", include_str!("../../rules/tests/checkpoints-stalled-1x.yaml")),
    ("tests/checkpoints-stalled-new-run.yaml", include_str!("../../rules/tests/checkpoints-stalled-new-run.yaml")),
    ("tests/checkpoints-stalled.yaml", include_str!("../../rules/tests/checkpoints-stalled.yaml")),
    ("tests/job-not-running-cancelled.yaml", include_str!("../../rules/tests/job-not-running-cancelled.yaml")),
    ("tests/job-not-running-cause-wait.yaml", include_str!("../../rules/tests/job-not-running-cause-wait.yaml")),
    (
        "tests/job-not-running-flink-restarting.yaml",
        include_str!("../../rules/tests/job-not-running-flink-restarting.yaml"),
    ),
    ("tests/job-not-running-restart-job.yaml", include_str!("../../rules/tests/job-not-running-restart-job.yaml")),
    ("tests/job-not-running-storm-guard.yaml", include_str!("../../rules/tests/job-not-running-storm-guard.yaml")),
    ("tests/job-not-running.yaml", include_str!("../../rules/tests/job-not-running.yaml")),
    ("tests/jobmanager-unreachable.yaml", include_str!("../../rules/tests/jobmanager-unreachable.yaml")),
    ("tests/restart-loop-count.yaml", include_str!("../../rules/tests/restart-loop-count.yaml")),
    ("tests/restart-loop.yaml", include_str!("../../rules/tests/restart-loop.yaml")),
    ("tests/savepoint-freshness-1x.yaml", include_str!("../../rules/tests/savepoint-freshness-1x.yaml")),
    ("tests/savepoint-freshness-per-job.yaml", include_str!("../../rules/tests/savepoint-freshness-per-job.yaml")),
    ("tests/savepoint-freshness.yaml", include_str!("../../rules/tests/savepoint-freshness.yaml")),
    ("tests/tasks-failing.yaml", include_str!("../../rules/tests/tasks-failing.yaml")),
    // State size, backpressure and source lag.
    ("backpressure.rhai", include_str!("../../rules/backpressure.rhai")),
    ("source-lag.rhai", include_str!("../../rules/source-lag.rhai")),
    ("state-size.rhai", include_str!("../../rules/state-size.rhai")),
    ("tests/fixtures/backpressure-job-1x.json", include_str!("../../rules/tests/fixtures/backpressure-job-1x.json")),
    (
        "tests/fixtures/backpressure-job-22-vertices.json",
        include_str!("../../rules/tests/fixtures/backpressure-job-22-vertices.json"),
    ),
    ("tests/fixtures/backpressure-job-2x.json", include_str!("../../rules/tests/fixtures/backpressure-job-2x.json")),
    (
        "tests/fixtures/backpressure-real-2x-job.json",
        include_str!("../../rules/tests/fixtures/backpressure-real-2x-job.json"),
    ),
    (
        "tests/fixtures/source-lag-real-2x-metric-names.json",
        include_str!("../../rules/tests/fixtures/source-lag-real-2x-metric-names.json"),
    ),
    ("tests/fixtures/state-size-1x-00m.json", include_str!("../../rules/tests/fixtures/state-size-1x-00m.json")),
    ("tests/fixtures/state-size-1x-30m.json", include_str!("../../rules/tests/fixtures/state-size-1x-30m.json")),
    ("tests/fixtures/state-size-1x-60m.json", include_str!("../../rules/tests/fixtures/state-size-1x-60m.json")),
    ("tests/fixtures/state-size-1x-90m.json", include_str!("../../rules/tests/fixtures/state-size-1x-90m.json")),
    (
        "tests/fixtures/state-size-1x-disabled.json",
        include_str!("../../rules/tests/fixtures/state-size-1x-disabled.json"),
    ),
    ("tests/fixtures/state-size-2x-00m.json", include_str!("../../rules/tests/fixtures/state-size-2x-00m.json")),
    ("tests/fixtures/state-size-2x-20m.json", include_str!("../../rules/tests/fixtures/state-size-2x-20m.json")),
    ("tests/fixtures/state-size-2x-40m.json", include_str!("../../rules/tests/fixtures/state-size-2x-40m.json")),
    ("tests/fixtures/state-size-2x-60m.json", include_str!("../../rules/tests/fixtures/state-size-2x-60m.json")),
    ("tests/backpressure-1x.yaml", include_str!("../../rules/tests/backpressure-1x.yaml")),
    ("tests/backpressure-budget.yaml", include_str!("../../rules/tests/backpressure-budget.yaml")),
    ("tests/backpressure-just-started.yaml", include_str!("../../rules/tests/backpressure-just-started.yaml")),
    ("tests/backpressure-real-2x.yaml", include_str!("../../rules/tests/backpressure-real-2x.yaml")),
    ("tests/backpressure.yaml", include_str!("../../rules/tests/backpressure.yaml")),
    ("tests/source-lag-1x.yaml", include_str!("../../rules/tests/source-lag-1x.yaml")),
    ("tests/source-lag-encoding.yaml", include_str!("../../rules/tests/source-lag-encoding.yaml")),
    ("tests/source-lag-no-metrics.yaml", include_str!("../../rules/tests/source-lag-no-metrics.yaml")),
    ("tests/source-lag.yaml", include_str!("../../rules/tests/source-lag.yaml")),
    ("tests/state-size-1x.yaml", include_str!("../../rules/tests/state-size-1x.yaml")),
    ("tests/state-size-new-run.yaml", include_str!("../../rules/tests/state-size-new-run.yaml")),
    ("tests/state-size-warmup.yaml", include_str!("../../rules/tests/state-size-warmup.yaml")),
    ("tests/state-size.yaml", include_str!("../../rules/tests/state-size.yaml")),
    // Which jobs to watch, cluster shape, duplicate instances (job-not-running, restart-loop, duplicate-jobs,
    // cluster-capacity).
    ("cluster-capacity.rhai", include_str!("../../rules/cluster-capacity.rhai")),
    ("duplicate-jobs.rhai", include_str!("../../rules/duplicate-jobs.rhai")),
    ("tests/cluster-capacity-defaults.yaml", include_str!("../../rules/tests/cluster-capacity-defaults.yaml")),
    ("tests/cluster-capacity.yaml", include_str!("../../rules/tests/cluster-capacity.yaml")),
    ("tests/duplicate-jobs-appears.yaml", include_str!("../../rules/tests/duplicate-jobs-appears.yaml")),
    ("tests/duplicate-jobs-1x.yaml", include_str!("../../rules/tests/duplicate-jobs-1x.yaml")),
    ("tests/duplicate-jobs-2x.yaml", include_str!("../../rules/tests/duplicate-jobs-2x.yaml")),
    (
        "tests/fixtures/cluster-capacity-1x-healthy.json",
        include_str!("../../rules/tests/fixtures/cluster-capacity-1x-healthy.json"),
    ),
    (
        "tests/fixtures/cluster-capacity-1x-lost-tm.json",
        include_str!("../../rules/tests/fixtures/cluster-capacity-1x-lost-tm.json"),
    ),
    (
        "tests/fixtures/cluster-capacity-2x-blocked.json",
        include_str!("../../rules/tests/fixtures/cluster-capacity-2x-blocked.json"),
    ),
    (
        "tests/fixtures/cluster-capacity-2x-healthy.json",
        include_str!("../../rules/tests/fixtures/cluster-capacity-2x-healthy.json"),
    ),
    (
        "tests/fixtures/duplicate-jobs-1x-one.json",
        include_str!("../../rules/tests/fixtures/duplicate-jobs-1x-one.json"),
    ),
    (
        "tests/fixtures/duplicate-jobs-1x-two.json",
        include_str!("../../rules/tests/fixtures/duplicate-jobs-1x-two.json"),
    ),
    (
        "tests/fixtures/duplicate-jobs-2x-one.json",
        include_str!("../../rules/tests/fixtures/duplicate-jobs-2x-one.json"),
    ),
    (
        "tests/fixtures/duplicate-jobs-2x-two.json",
        include_str!("../../rules/tests/fixtures/duplicate-jobs-2x-two.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-a-exceptions.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-a-exceptions.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-a-failed.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-a-failed.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-b-exceptions.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-b-exceptions.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-b-failed.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-b-failed.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-b-running.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-b-running.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-b-starting.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-b-starting.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-c-running.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-c-running.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-many-later.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-many-later.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-many.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-many.json"),
    ),
    (
        "tests/fixtures/job-not-running-1x-us-exceptions.json",
        include_str!("../../rules/tests/fixtures/job-not-running-1x-us-exceptions.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-a-exceptions.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-a-exceptions.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-a-failed.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-a-failed.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-b-exceptions.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-b-exceptions.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-b-failed.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-b-failed.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-b-running.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-b-running.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-b-starting.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-b-starting.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-c-running.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-c-running.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-many-later.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-many-later.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-many.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-many.json"),
    ),
    (
        "tests/fixtures/job-not-running-2x-us-exceptions.json",
        include_str!("../../rules/tests/fixtures/job-not-running-2x-us-exceptions.json"),
    ),
    (
        "tests/fixtures/restart-loop-1x-exceptions.json",
        include_str!("../../rules/tests/fixtures/restart-loop-1x-exceptions.json"),
    ),
    (
        "tests/fixtures/restart-loop-1x-restarting.json",
        include_str!("../../rules/tests/fixtures/restart-loop-1x-restarting.json"),
    ),
    (
        "tests/fixtures/restart-loop-1x-running.json",
        include_str!("../../rules/tests/fixtures/restart-loop-1x-running.json"),
    ),
    ("tests/job-not-running-patterns-1x.yaml", include_str!("../../rules/tests/job-not-running-patterns-1x.yaml")),
    ("tests/job-not-running-patterns-2x.yaml", include_str!("../../rules/tests/job-not-running-patterns-2x.yaml")),
    (
        "tests/job-not-running-relaunch-follow-1x.yaml",
        include_str!("../../rules/tests/job-not-running-relaunch-follow-1x.yaml"),
    ),
    (
        "tests/job-not-running-relaunch-follow-2x.yaml",
        include_str!("../../rules/tests/job-not-running-relaunch-follow-2x.yaml"),
    ),
    ("tests/job-not-running-watch-all-1x.yaml", include_str!("../../rules/tests/job-not-running-watch-all-1x.yaml")),
    ("tests/job-not-running-watch-all-2x.yaml", include_str!("../../rules/tests/job-not-running-watch-all-2x.yaml")),
    ("tests/restart-loop-settle-1x.yaml", include_str!("../../rules/tests/restart-loop-settle-1x.yaml")),
    ("tests/restart-loop-settle-2x.yaml", include_str!("../../rules/tests/restart-loop-settle-2x.yaml")),
];

/// The shipped Flink pack, embedded in the binary (its directory reads `builtin:flink` in messages).
pub fn embedded_flink_pack() -> PackFiles {
    let rhai = |rel: &&str| !rel.contains('/') && rel.ends_with(".rhai");
    PackFiles {
        dir: PathBuf::from(BUILTIN_FLINK),
        manifest: include_str!("../../rules/pack.yaml").into(),
        rules: EMBEDDED_FLINK_FILES
            .iter()
            .filter(|(rel, _)| rhai(rel))
            .map(|(rel, text)| (rel.to_string(), text.to_string()))
            .collect(),
        // `rules/modules/x.rhai` is listed above as `modules/x.rhai`.
        modules: EMBEDDED_FLINK_FILES
            .iter()
            .filter_map(|(rel, text)| Some((rel.strip_prefix("modules/")?.to_string(), text.to_string())))
            .collect(),
    }
}

/// The names of the packs built into the binary (`pack_paths` entries `builtin:<name>`).
pub const BUILTIN_PACKS: &[&str] = &["flink"];

/// The embedded pack called `name`, if there is one.
pub fn builtin_pack(name: &str) -> Option<PackFiles> {
    match name {
        "flink" => Some(embedded_flink_pack()),
        _ => None,
    }
}

/// All files of the embedded pack `name` (see [`EMBEDDED_FLINK_FILES`]).
pub fn builtin_pack_files(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match name {
        "flink" => Some(EMBEDDED_FLINK_FILES),
        _ => None,
    }
}

/// Why `warden pack export` did not write a pack.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No embedded pack has this name.
    #[error("no built-in pack named `{name}` (built in: {})", BUILTIN_PACKS.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The destination exists and is not an empty directory.
    #[error("`{}` already exists and is not empty; export into a new directory", dir.display())]
    NotEmpty {
        /// The destination.
        dir: PathBuf,
    },
    /// A file could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

/// Writes the embedded pack `name` (rules, manifest, tests and fixtures) into `dir`, which must not exist or be
/// empty. Put `dir` under a `pack_paths` entry (e.g. `plugins/flink`) and it replaces `builtin:<name>`.
pub fn export_builtin(name: &str, dir: &Path) -> Result<Vec<PathBuf>, ExportError> {
    let files = builtin_pack_files(name).ok_or_else(|| ExportError::Unknown { name: name.to_string() })?;
    if dir.exists() && std::fs::read_dir(dir).map(|mut r| r.next().is_some()).unwrap_or(true) {
        return Err(ExportError::NotEmpty { dir: dir.to_path_buf() });
    }
    let mut written = vec![];
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ExportError::Io { path: parent.to_path_buf(), source })?;
        }
        std::fs::write(&path, text).map_err(|source| ExportError::Io { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

/// Reads a pack directory: `pack.yaml`, its `*.rhai` rules and its `modules/*.rhai`.
pub fn read_dir(dir: &Path) -> Result<PackFiles, Diagnostic> {
    let mpath = dir.join("pack.yaml");
    let manifest =
        std::fs::read_to_string(&mpath).map_err(|e| Diagnostic::file(&mpath, format!("cannot read: {e}")))?;
    let rules = read_rhai_files(dir)?;
    let mdir = dir.join("modules");
    let modules = if mdir.is_dir() { read_rhai_files(&mdir)? } else { vec![] };
    Ok(PackFiles { dir: dir.to_path_buf(), manifest, rules, modules })
}

/// The `*.rhai` files directly in `dir` (hidden ones skipped), sorted by name.
fn read_rhai_files(dir: &Path) -> Result<Vec<(String, String)>, Diagnostic> {
    let mut out = vec![];
    let entries = std::fs::read_dir(dir).map_err(|e| Diagnostic::file(dir, format!("cannot list: {e}")))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".rhai") && !name.starts_with('.') {
            let text = std::fs::read_to_string(e.path())
                .map_err(|err| Diagnostic::file(e.path(), format!("cannot read: {err}")))?;
            out.push((name, text));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a scalar as text (YAML reads `version: 1.0` as a number).
fn scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_yaml::Value::deserialize(d)? {
        serde_yaml::Value::String(s) => Ok(s),
        serde_yaml::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected a version such as \"1.2.3\", found {other:?}"))),
    }
}

/// [`scalar_string`] for an optional field.
fn opt_scalar_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar_string(d).map(Some)
}

/// True for a valid pack, rule or module name: letters, digits, `-` and `_`.
pub fn valid_name(s: &str) -> bool {
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
    if !matches!(doc.value, serde_yaml::Value::Mapping(_)) {
        diags.push(doc.diag("", "`pack.yaml` must be a mapping with at least `name` and `version`"));
        return None;
    }
    let manifest: Manifest = doc.typed(&doc.value, "", diags)?;
    if !valid_name(&manifest.name) {
        diags
            .push(doc.diag("name", format!("pack name `{}` may only use letters, digits, `-` and `_`", manifest.name)));
    }
    let version = match semver::Version::parse(&manifest.version) {
        Ok(v) => Some(v),
        Err(_) => {
            diags.push(doc.diag("version", format!("version `{}` is not MAJOR.MINOR.PATCH", manifest.version)));
            None
        }
    };
    if let Some(range) = &manifest.warden {
        if let Err(e) = check_warden_range(range, WARDEN_VERSION) {
            diags.push(doc.diag("warden", format!("pack `{}` {e}", manifest.name)));
        }
    }
    for (dep, range) in &manifest.dependencies {
        let at = join_key("dependencies", dep);
        if dep == &manifest.name {
            diags.push(doc.key_diag(&at, format!("pack `{dep}` cannot depend on itself")));
        } else if !valid_name(dep) {
            diags.push(doc.key_diag(&at, format!("`{dep}` is not a pack name")));
        }
        if let Err(e) = semver::VersionReq::parse(range) {
            diags.push(doc.diag(&at, format!("dependency `{dep}`: `{range}` is not a version range: {e}")));
        }
    }
    for (k, p) in &manifest.parameters {
        if let Some(d) = &p.default {
            if let Err(e) = p.kind.check(d) {
                diags.push(doc.diag(&join_key(&join_key("parameters", k), "default"), format!("parameter `{k}`: {e}")));
            }
        }
    }
    let mut inhibit_names = std::collections::HashSet::new();
    for (i, r) in manifest.inhibit.iter().enumerate() {
        let at = join_index("inhibit", i);
        if let Some(n) = &r.name {
            if !valid_name(n) {
                diags.push(doc.diag(
                    &join_key(&at, "name"),
                    format!("inhibit rule name `{n}` may only use letters, digits, `-` and `_`"),
                ));
            } else if !inhibit_names.insert(n.clone()) {
                diags.push(doc.diag(&join_key(&at, "name"), format!("duplicate inhibit rule `{n}`")));
            }
        }
        if let Err(errors) = crate::notify::inhibit::InhibitRule::compile(manifest.inhibit_name(i), r) {
            for (field, e) in errors {
                diags.push(doc.diag(&join_key(&at, &field), format!("inhibit rule: {e}")));
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
    let mut modules = BTreeMap::new();
    for (file, source) in files.modules {
        let path = files.dir.join("modules").join(&file);
        let short = file.trim_end_matches(".rhai").to_string();
        if !valid_name(&short) {
            diags.push(Diagnostic::file(
                path,
                "module file names may only use letters, digits, `-` and `_` before `.rhai`",
            ));
            continue;
        }
        modules.insert(short.clone(), ModuleSource { name: short, file: path, source });
    }
    let mut seen = std::collections::HashSet::new();
    for (i, p) in manifest.probes.iter().enumerate() {
        let path = join_index("probes", i);
        if !seen.insert(&p.name) {
            diags.push(doc.diag(&join_key(&path, "name"), format!("duplicate probe name `{}`", p.name)));
        }
        if !crate::config::check_probe_kind(&doc, &path, p, diags) {
            crate::config::check_schedule(&doc, &path, &p.name, p.every, p.cron.as_deref(), diags);
            crate::config::check_fan_out(&doc, &path, p, diags);
        }
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
    match version {
        Some(version) if diags.len() == n => Some(Pack { manifest, version, dir: files.dir, doc, rules, modules }),
        _ => None,
    }
}

/// Checks a pack's `warden` range against a Warden version: `Err` says why it does not fit.
pub fn check_warden_range(range: &str, warden: &str) -> Result<(), String> {
    let req = semver::VersionReq::parse(range)
        .map_err(|e| format!("has `warden: {range}`, which is not a version range such as \">=0.1, <0.2\": {e}"))?;
    let v = semver::Version::parse(warden).map_err(|e| format!("cannot check: Warden's version `{warden}`: {e}"))?;
    if req.matches(&v) {
        Ok(())
    } else {
        Err(format!("needs Warden `{range}`, but this is Warden {warden}"))
    }
}

/// Adds `pack` to `packs` unless its name is taken, in which case the clash is reported naming both directories.
pub fn push_unique(packs: &mut Vec<Pack>, pack: Pack, diags: &mut Vec<Diagnostic>) {
    if let Some(other) = packs.iter().find(|o| o.name() == pack.name()) {
        diags.push(pack.doc.diag(
            "name",
            format!(
                "two packs are named `{}`: `{}` and `{}`; pack names must be unique",
                pack.name(),
                other.dir.display(),
                pack.dir.display()
            ),
        ));
    } else {
        packs.push(pack);
    }
}

/// Checks every pack's `dependencies` against the loaded packs: a missing pack or one whose version is outside
/// the range is reported at the dependency in the dependent pack's `pack.yaml`, naming both packs.
pub fn check_dependencies(packs: &[Pack], diags: &mut Vec<Diagnostic>) {
    for p in packs {
        for (dep, range) in &p.manifest.dependencies {
            let at = join_key("dependencies", dep);
            let Ok(req) = semver::VersionReq::parse(range) else { continue }; // reported by `load`
            match packs.iter().find(|o| o.name() == dep) {
                None => {
                    let hint = crate::diag::closest(dep, packs.iter().map(Pack::name))
                        .map(|c| format!(", did you mean `{c}`?"))
                        .unwrap_or_default();
                    diags.push(p.doc.diag(
                        &at,
                        format!("pack `{}` depends on pack `{dep}` (`{range}`), which is not loaded{hint}", p.name()),
                    ));
                }
                Some(o) if !req.matches(&o.version) => diags.push(p.doc.diag(
                    &at,
                    format!(
                        "pack `{}` needs pack `{dep}` `{range}`, but `{dep}` is version {} (`{}`)",
                        p.name(),
                        o.version,
                        o.dir.display()
                    ),
                )),
                Some(_) => {}
            }
        }
    }
}

/// The modules of `packs`, each pack allowed to import its own modules and its dependencies', for
/// [`crate::script::ScriptEngine::compile_with_modules`].
pub fn module_set(packs: &[Pack]) -> Arc<ModuleSet> {
    let mut set = ModuleSet::default();
    for p in packs {
        set.add_pack(p.name(), p.manifest.dependencies.keys().cloned(), p.modules.values().cloned());
    }
    Arc::new(set)
}

/// Finds and loads the packs named by `pack_paths` (relative to `base`): `dir` is one pack, `dir/*` every
/// non-hidden subdirectory with a `pack.yaml`, `builtin:<name>` a pack embedded in the binary. Paths that are the
/// defaults and do not exist are skipped quietly; any other missing path is an error. Two directory packs with the
/// same name are an error naming both directories; a directory pack replaces a built-in pack of the same name (said
/// at debug level), so an exported and edited `flink` pack wins over `builtin:flink`.
pub fn discover(pack_paths: &[String], base: &Path, diags: &mut Vec<Diagnostic>, config_file: &Path) -> Vec<Pack> {
    let defaults = ["rules", "plugins/*"];
    let mut packs: Vec<Pack> = vec![];
    let mut builtins: Vec<Pack> = vec![];
    for p in pack_paths {
        if let Some(name) = p.strip_prefix(BUILTIN_PREFIX) {
            match builtin_pack(name) {
                Some(files) => {
                    if let Some(pack) = load(files, diags) {
                        if !builtins.iter().any(|b| b.name() == pack.name()) {
                            builtins.push(pack);
                        }
                    }
                }
                None => {
                    let known: Vec<String> = BUILTIN_PACKS.iter().map(|n| format!("{BUILTIN_PREFIX}{n}")).collect();
                    diags.push(Diagnostic::file(
                        config_file,
                        format!("pack path `{p}` names no built-in pack (built in: {})", known.join(", ")),
                    ));
                }
            }
            continue;
        }
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
                .map(|r| {
                    r.flatten()
                        .map(|e| e.path())
                        // Hidden directories are skipped: `warden pack add` stages installs in one.
                        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                        .filter(|p| p.join("pack.yaml").is_file())
                        .collect()
                })
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
                        push_unique(&mut packs, pack, diags);
                    }
                }
                Err(d) => diags.push(d),
            }
        }
    }
    let mut out = vec![];
    for b in builtins {
        match packs.iter().find(|p| p.name() == b.name()) {
            Some(p) => tracing::debug!(
                "pack `{}` in `{}` replaces the built-in one ({BUILTIN_PREFIX}{})",
                p.name(),
                p.dir.display(),
                b.name()
            ),
            None => out.push(b),
        }
    }
    out.extend(packs);
    out
}

/// True for a `pack_paths` entry that names a built-in pack (`builtin:flink`) rather than a directory.
pub fn is_builtin_path(p: &str) -> bool {
    p.starts_with(BUILTIN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.rhai` rules of the shipped pack (every one of them must load).
    fn embedded_rule_count() -> usize {
        let n = EMBEDDED_FLINK_FILES.iter().filter(|(r, _)| !r.contains('/') && r.ends_with(".rhai")).count();
        assert!(n >= 6, "{n}");
        n
    }

    #[test]
    fn the_embedded_pack_loads() {
        let mut diags = vec![];
        let p = load(embedded_flink_pack(), &mut diags).unwrap_or_else(|| panic!("{diags:?}"));
        assert_eq!(p.name(), "flink");
        assert_eq!(p.rules.len(), embedded_rule_count());
    }

    #[test]
    fn the_embedded_files_are_exactly_the_rules_directory() {
        // A file added to `rules/` without being embedded would be missing from `builtin:flink` and exports.
        fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(root.join(rel)).unwrap().flatten() {
                let r = rel.join(e.file_name());
                if e.path().is_dir() {
                    walk(root, &r, out);
                } else {
                    out.push(r.display().to_string());
                }
            }
        }
        let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"));
        let mut on_disk = vec![];
        walk(root, Path::new(""), &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = EMBEDDED_FLINK_FILES.iter().map(|(r, _)| r.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        for (rel, text) in EMBEDDED_FLINK_FILES {
            assert_eq!(std::fs::read_to_string(root.join(rel)).unwrap(), *text, "{rel}");
        }
    }

    #[test]
    fn builtin_flink_loads_without_a_directory_and_a_directory_pack_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<String> = vec![BUILTIN_FLINK.into(), "rules".into(), "plugins/*".into()];
        let mut diags = vec![];
        let packs = discover(&paths, dir.path(), &mut diags, Path::new("warden.yaml"));
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            packs.iter().map(|p| (p.name(), p.dir.display().to_string())).collect::<Vec<_>>(),
            [("flink", BUILTIN_FLINK.to_string())]
        );
        assert_eq!(packs[0].rules.len(), embedded_rule_count());

        // An exported, edited copy under plugins/ wins, with no duplicate-pack error.
        let exported = dir.path().join("plugins/flink");
        export_builtin("flink", &exported).unwrap();
        std::fs::write(exported.join("extra.rhai"), "1").unwrap();
        let mut diags = vec![];
        let packs = discover(&paths, dir.path(), &mut diags, Path::new("warden.yaml"));
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(packs.len(), 1);
        assert_eq!(packs[0].dir, exported);
        assert_eq!(packs[0].rules.len(), embedded_rule_count() + 1);
        // The export carries the tests, which pass.
        for f in crate::ruletest::discover(std::slice::from_ref(&exported)) {
            assert!(crate::ruletest::run_file(&f).failures.is_empty(), "{}", f.display());
        }
        // Exporting over it is refused.
        let e = export_builtin("flink", &exported).unwrap_err().to_string();
        assert_eq!(e, format!("`{}` already exists and is not empty; export into a new directory", exported.display()));
        let e = export_builtin("flnk", &dir.path().join("x")).unwrap_err().to_string();
        assert_eq!(e, "no built-in pack named `flnk` (built in: flink)");
    }

    #[test]
    fn an_unknown_builtin_is_reported() {
        let mut diags = vec![];
        let packs = discover(&["builtin:yarn".into()], Path::new("."), &mut diags, Path::new("w.yaml"));
        assert!(packs.is_empty());
        assert_eq!(
            diags[0].to_string(),
            "w.yaml: pack path `builtin:yarn` names no built-in pack (built in: builtin:flink)"
        );
    }

    #[test]
    fn bad_manifest_is_reported_with_positions() {
        let files = PackFiles {
            dir: PathBuf::from("p"),
            manifest: "name: x\nversion: 1.0\nparameters:\n  n: {type: int, default: \"3\"}\nprobes:\n  - name: a\n    every: 5s\n    request: {path: /x}\n    rules: [nope]\n".into(),
            rules: vec![("yes.rhai".into(), "1".into())],
            modules: vec![],
        };
        let mut diags = vec![];
        assert!(load(files, &mut diags).is_none());
        let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert!(msgs.contains(&"p/pack.yaml:2:10: version `1.0` is not MAJOR.MINOR.PATCH".to_string()), "{msgs:#?}");
        assert!(msgs.iter().any(|m| m.starts_with("p/pack.yaml:4:") && m.contains("expected an integer")), "{msgs:#?}");
        assert!(msgs.iter().any(|m| m.starts_with("p/pack.yaml:9:13: probe `a` names rule `nope`")), "{msgs:#?}");
    }

    fn files(dir: &str, manifest: &str) -> PackFiles {
        PackFiles { dir: PathBuf::from(dir), manifest: manifest.into(), rules: vec![], modules: vec![] }
    }

    fn load_ok(f: PackFiles) -> Pack {
        let mut diags = vec![];
        load(f, &mut diags).unwrap_or_else(|| panic!("{diags:?}"))
    }

    fn load_err(f: PackFiles) -> Vec<String> {
        let mut diags = vec![];
        assert!(load(f, &mut diags).is_none(), "the pack loaded");
        diags.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn an_invalid_pack_yaml_is_reported() {
        assert_eq!(load_err(files("p", "name: [x\n")).len(), 1);
        assert!(load_err(files("p", "name: [x\n"))[0].starts_with("p/pack.yaml:"));
        assert_eq!(
            load_err(files("p", "- a\n")),
            vec!["p/pack.yaml:1:1: `pack.yaml` must be a mapping with at least `name` and `version`"]
        );
        let msgs = load_err(files("p", "name: x\nversion: 1.0.0\nwardn: \">=0.1\"\n"));
        assert_eq!(msgs, vec!["p/pack.yaml:3:1: unknown field `wardn`, did you mean `warden`?"]);
        let msgs = load_err(files("p", "name: x\nversion: 1.0.0\ndependencies: {flink: \"not a range\"}\n"));
        assert!(msgs[0].starts_with("p/pack.yaml:3:23: dependency `flink`: `not a range` is not a version range"));
    }

    #[test]
    fn a_pack_for_another_warden_is_refused() {
        let msgs = load_err(files("p", "name: x\nversion: 1.0.0\nwarden: \">=99.0\"\n"));
        assert_eq!(
            msgs,
            vec![format!("p/pack.yaml:3:9: pack `x` needs Warden `>=99.0`, but this is Warden {WARDEN_VERSION}")]
        );
        let msgs = load_err(files("p", "name: x\nversion: 1.0.0\nwarden: \"soon\"\n"));
        assert!(msgs[0].starts_with("p/pack.yaml:3:9: pack `x` has `warden: soon`, which is not a version range"));
        let this = semver::Version::parse(WARDEN_VERSION).unwrap();
        let range = format!(">={}.{}, <{}", this.major, this.minor, this.major + 1);
        assert_eq!(load_ok(files("p", &format!("name: x\nversion: 1.0.0\nwarden: \"{range}\"\n"))).name(), "x");
        assert!(check_warden_range(">=0.1, <0.2", "0.1.7").is_ok());
        assert!(check_warden_range(">=0.1, <0.2", "0.2.0").is_err());
    }

    #[test]
    fn dependencies_must_be_loaded_in_a_matching_version() {
        let base = load_ok(files("base", "name: base\nversion: 1.2.0\n"));
        let ok = load_ok(files("a", "name: a\nversion: 0.1.0\ndependencies:\n  base: \">=1.0, <2\"\n"));
        let old = load_ok(files("b", "name: b\nversion: 0.1.0\ndependencies:\n  base: \">=1.5\"\n"));
        let lost = load_ok(files("c", "name: c\nversion: 0.1.0\ndependencies:\n  bsae: \"1\"\n"));
        let mut diags = vec![];
        check_dependencies(&[base, ok, old, lost], &mut diags);
        let msgs: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "b/pack.yaml:4:9: pack `b` needs pack `base` `>=1.5`, but `base` is version 1.2.0 (`base`)".to_string(),
                "c/pack.yaml:4:9: pack `c` depends on pack `bsae` (`1`), which is not loaded, did you mean `base`?"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn two_packs_with_the_same_name_are_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["one", "two"] {
            std::fs::create_dir_all(dir.path().join("plugins").join(d)).unwrap();
            std::fs::write(dir.path().join("plugins").join(d).join("pack.yaml"), "name: same\nversion: 1.0.0\n")
                .unwrap();
        }
        // A hidden directory (an install in progress) is not a pack.
        std::fs::create_dir_all(dir.path().join("plugins/.staging")).unwrap();
        std::fs::write(dir.path().join("plugins/.staging/pack.yaml"), "name: same\nversion: 2.0.0\n").unwrap();
        let mut diags = vec![];
        let packs = discover(&["plugins/*".into()], dir.path(), &mut diags, Path::new("warden.yaml"));
        assert_eq!(packs.len(), 1);
        assert_eq!(diags.len(), 1, "{diags:?}");
        let one = dir.path().join("plugins/one");
        let two = dir.path().join("plugins/two");
        assert_eq!(
            diags[0].to_string(),
            format!(
                "{}:1:7: two packs are named `same`: `{}` and `{}`; pack names must be unique",
                two.join("pack.yaml").display(),
                one.display(),
                two.display()
            )
        );
    }

    #[test]
    fn modules_and_tests_are_read_from_the_pack_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("modules")).unwrap();
        std::fs::create_dir_all(p.join("tests")).unwrap();
        std::fs::write(p.join("pack.yaml"), "name: m\nversion: 1.0.0\n").unwrap();
        std::fs::write(p.join("r.rhai"), "import \"util\" as u;").unwrap();
        std::fs::write(p.join("modules/util.rhai"), "fn f() { 1 }").unwrap();
        std::fs::write(p.join("modules/bad name.rhai"), "fn f() { 1 }").unwrap();
        std::fs::write(p.join("tests/b.yaml"), "").unwrap();
        std::fs::write(p.join("tests/a.yml"), "").unwrap();
        std::fs::write(p.join("tests/notes.txt"), "").unwrap();
        let msgs = load_err(read_dir(p).unwrap());
        assert!(msgs[0].ends_with(
            "modules/bad name.rhai: module file names may only use letters, digits, `-` and `_` before `.rhai`"
        ));
        std::fs::remove_file(p.join("modules/bad name.rhai")).unwrap();
        let pack = load_ok(read_dir(p).unwrap());
        assert_eq!(pack.modules.keys().collect::<Vec<_>>(), vec!["util"]);
        assert_eq!(pack.modules["util"].file, p.join("modules/util.rhai"));
        assert_eq!(pack.test_files(), vec![p.join("tests/a.yml"), p.join("tests/b.yaml")]);
    }
}
