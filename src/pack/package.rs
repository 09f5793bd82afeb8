//! Packaging packs: skeletons for new packs, `.tar.gz` packages with a SHA-256 checksum, and safe installs from a
//! directory or a package (the library side of `warden pack`).
//!
//! Installing is careful: the checksum file next to a package must match, entries with absolute paths, `..` or
//! links are refused, the pack must load (manifest, version, Warden range, dependencies) and its rules must
//! compile, and a pack that is already installed is only replaced by a higher version with `--upgrade`. The pack is
//! unpacked into a hidden staging directory first (pack discovery skips hidden directories) and renamed into place,
//! so a running Warden never sees half a pack.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::yaml::YamlDoc;
use crate::config::ScriptLimits;
use crate::diag::{Diagnostic, Diagnostics};
use crate::pack::{self, Pack, PackFiles};
use crate::script::ScriptEngine;

/// The largest package `pack add` unpacks (all files together).
pub const MAX_UNPACKED: u64 = 64 * 1024 * 1024;
/// The most entries a package may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// Why a `warden pack` command failed. Messages name the user's files and packs.
#[derive(Debug, thiserror::Error)]
pub enum PackCliError {
    /// A file operation failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create`, …).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// The configuration's `pack_paths` could not be read.
    #[error("cannot read `pack_paths` from the configuration:\n{0}")]
    Config(Diagnostics),
    /// The pack does not load or its rules do not compile.
    #[error("pack `{}` is not valid:\n{problems}", dir.display())]
    Invalid {
        /// The pack's directory (or package).
        dir: PathBuf,
        /// Every problem, as `path:line:col: message`.
        problems: Diagnostics,
    },
    /// The pack's rule tests (`tests/*.yaml`) fail: it is not packaged.
    #[error(
        "pack `{}` is not packaged: {failed} of {total} rule test(s) failed (fix them, or package anyway with \
         --skip-tests)\n{}",
        dir.display(),
        failures.join("\n")
    )]
    TestsFailed {
        /// The pack's directory.
        dir: PathBuf,
        /// How many test files failed.
        failed: usize,
        /// How many test files ran.
        total: usize,
        /// Each failing test with its failures, as `warden test` prints them.
        failures: Vec<String>,
    },
    /// A name that cannot be a pack's.
    #[error("`{0}` is not a valid pack name: use letters, digits, `-` and `_`")]
    BadName(String),
    /// Something is already where a new file or directory would go.
    #[error("`{}` already exists", .0.display())]
    Exists(PathBuf),
    /// `pack add` was given something that is neither a pack directory nor a package.
    #[error("`{}` is neither a pack directory (with a pack.yaml) nor a `.tar.gz` package", .0.display())]
    NotAPack(PathBuf),
    /// A package without its checksum file.
    #[error(
        "`{}` has no checksum file `{}` next to it; install packages together with the `.sha256` file that \
         `warden pack package` writes",
        file.display(),
        checksum.display()
    )]
    NoChecksum {
        /// The package.
        file: PathBuf,
        /// The checksum file that was looked for.
        checksum: PathBuf,
    },
    /// A checksum file that holds no SHA-256.
    #[error("`{}` does not hold a SHA-256 checksum (64 hex digits)", .0.display())]
    BadChecksumFile(PathBuf),
    /// The package's SHA-256 differs from its checksum file's.
    #[error(
        "checksum mismatch for `{}`: its `.sha256` file says {expected}, but the file's SHA-256 is {actual}; \
         the package is damaged or was changed",
        file.display()
    )]
    ChecksumMismatch {
        /// The package.
        file: PathBuf,
        /// The SHA-256 in the checksum file.
        expected: String,
        /// The package's actual SHA-256.
        actual: String,
    },
    /// A package that cannot be read as a gzip-compressed tar file.
    #[error("`{}` is not a readable .tar.gz: {message}", file.display())]
    BadArchive {
        /// The package.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A package entry that would land outside the pack directory, or that is not a plain file or directory.
    #[error("`{}` is refused: entry `{entry}` {why}", file.display())]
    UnsafeEntry {
        /// The package or directory.
        file: PathBuf,
        /// The entry's path as written in the package.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// The pack is installed and no upgrade was asked for.
    #[error(
        "pack `{name}` {installed} is already installed at `{}`; use --upgrade to replace it with a higher version",
        dir.display()
    )]
    AlreadyInstalled {
        /// The pack's name.
        name: String,
        /// The installed version.
        installed: String,
        /// Where it is installed.
        dir: PathBuf,
    },
    /// `--upgrade` with a version that is not higher than the installed one.
    #[error("pack `{name}` {installed} is installed at `{}`; {new} is not higher, so it is not installed", dir.display())]
    NotNewer {
        /// The pack's name.
        name: String,
        /// The installed version.
        installed: String,
        /// The version offered.
        new: String,
        /// Where it is installed.
        dir: PathBuf,
    },
    /// `warden pack export` failed.
    #[error(transparent)]
    Export(#[from] pack::ExportError),
    /// `--upgrade` of a pack that is installed outside the target directory.
    #[error(
        "pack `{name}` is installed at `{}`, not in `{}`; remove it there or use --into with its directory",
        dir.display(),
        into.display()
    )]
    InstalledElsewhere {
        /// The pack's name.
        name: String,
        /// Where it is installed.
        dir: PathBuf,
        /// Where the new one was to go.
        into: PathBuf,
    },
}

/// Result of the packaging functions.
pub type Result<T, E = PackCliError> = std::result::Result<T, E>;

pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PackCliError {
    let path = path.to_path_buf();
    move |source| PackCliError::Io { action, path, source }
}

/// Where packs are looked for: the configuration's `pack_paths`, relative to its directory.
#[derive(Debug, Clone)]
pub struct PackPaths {
    /// The configuration file.
    pub config: PathBuf,
    /// Its directory.
    pub base: PathBuf,
    /// `pack_paths` as written (`rules`, `plugins/*`).
    pub paths: Vec<String>,
}

impl PackPaths {
    /// Reads `pack_paths` from the configuration file without checking the rest of it (a pack can be listed or
    /// installed while, say, a secret is unset). A missing file means the default `[builtin:flink, rules, plugins/*]`.
    pub fn of_config(config: &Path) -> Result<Self> {
        let base = config.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        let defaults = vec![pack::BUILTIN_FLINK.to_string(), "rules".to_string(), "plugins/*".to_string()];
        if !config.exists() {
            return Ok(Self { config: config.to_path_buf(), base, paths: defaults });
        }
        let text = std::fs::read_to_string(config).map_err(io("read", config))?;
        let doc = YamlDoc::parse(config, &text).map_err(|d| PackCliError::Config(Diagnostics(vec![d])))?;
        let paths = match doc.value.get("pack_paths") {
            None | Some(serde_yaml::Value::Null) => defaults,
            Some(v) => {
                let mut diags = vec![];
                let paths: Option<Vec<String>> = doc.typed(v, "pack_paths", &mut diags);
                paths.ok_or(PackCliError::Config(Diagnostics(diags)))?
            }
        };
        Ok(Self { config: config.to_path_buf(), base, paths })
    }

    /// Loads every pack these paths lead to, with the problems found.
    pub fn discover(&self) -> (Vec<Pack>, Diagnostics) {
        let mut diags = vec![];
        let packs = pack::discover(&self.paths, &self.base, &mut diags, &self.config);
        let mut d = Diagnostics(diags);
        d.sort();
        (packs, d)
    }

    /// True when packs installed into `dir` are loaded (some `pack_paths` entry is `dir/*`).
    pub fn covers(&self, dir: &Path) -> bool {
        let want = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        self.paths.iter().filter_map(|p| p.strip_suffix("/*")).any(|p| {
            let d = self.base.join(p);
            d.canonicalize().unwrap_or(d) == want
        })
    }
}

/// Loads the pack in `files` and compiles its rules and modules, with `others` (installed packs) available as
/// dependencies. Every problem is returned at once.
pub fn validate(files: PackFiles, others: &[Pack]) -> Result<Pack, Diagnostics> {
    let mut diags: Vec<Diagnostic> = vec![];
    let Some(p) = pack::load(files, &mut diags) else {
        let mut d = Diagnostics(diags);
        d.sort();
        return Err(d);
    };
    let mut all: Vec<Pack> = others.iter().filter(|o| o.name() != p.name()).cloned().collect();
    all.push(p.clone());
    let mut deps = vec![];
    pack::check_dependencies(&all, &mut deps);
    let needs_me = format!("needs pack `{}`", p.name());
    diags.extend(deps.into_iter().filter(|d| d.file == p.doc.file || d.message.contains(&needs_me)));
    let modules = pack::module_set(&all);
    let engine = ScriptEngine::new(&ScriptLimits::default());
    for r in p.rules.values() {
        if let Err(e) = engine.compile_with_modules(&r.name, p.name(), r.file.clone(), &r.source, &modules) {
            diags.push(Diagnostic::new(&e.file, e.line, e.col, format!("rule `{}`: {}", e.rule, e.message)));
        }
    }
    let mine = format!("{}/", p.name());
    for e in engine.check_modules(&modules).into_iter().filter(|e| e.rule.starts_with(&mine)) {
        diags.push(Diagnostic::new(&e.file, e.line, e.col, e.message));
    }
    if diags.is_empty() {
        Ok(p)
    } else {
        let mut d = Diagnostics(diags);
        d.sort();
        Err(d)
    }
}

/// Checks `dir` as a pack and compiles it (see [`validate`]).
fn validate_dir(dir: &Path, others: &[Pack]) -> Result<Pack> {
    let invalid = |problems| PackCliError::Invalid { dir: dir.to_path_buf(), problems };
    let files = pack::read_dir(dir).map_err(|d| invalid(Diagnostics(vec![d])))?;
    validate(files, others).map_err(invalid)
}

// ---------------------------------------------------------------------------------------------------------------
// pack new

/// Creates the skeleton of pack `name` in `parent/name` and returns that directory. The skeleton loads, its rule
/// compiles (it imports the pack's module) and its test passes.
pub fn new_pack(name: &str, parent: &Path) -> Result<PathBuf> {
    if !pack::valid_name(name) {
        return Err(PackCliError::BadName(name.to_string()));
    }
    let dir = parent.join(name);
    if dir.exists() {
        return Err(PackCliError::Exists(dir));
    }
    let v = semver::Version::parse(pack::WARDEN_VERSION).unwrap_or(semver::Version::new(0, 1, 0));
    let upper = if v.major == 0 { format!("0.{}.0", v.minor + 1) } else { format!("{}.0.0", v.major + 1) };
    let warden_range = format!(">={}.{}.0, <{upper}", v.major, v.minor);
    let files: [(&str, String); 5] = [
        ("pack.yaml", SKELETON_MANIFEST.replace("{name}", name).replace("{warden}", &warden_range)),
        ("taskmanagers-missing.rhai", SKELETON_RULE.replace("{name}", name)),
        ("modules/util.rhai", SKELETON_MODULE.to_string()),
        ("tests/taskmanagers-missing.yaml", SKELETON_TEST.to_string()),
        ("README.md", SKELETON_README.replace("{name}", name)),
    ];
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    // Written next to the final directory, then renamed: a watching Warden never sees half a pack.
    let staging = staging_dir(parent, "new");
    let result = (|| {
        for (rel, text) in &files {
            let path = staging.join(rel);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(io("create", d))?;
            }
            std::fs::write(&path, text).map_err(io("write", &path))?;
        }
        std::fs::rename(&staging, &dir).map_err(io("create", &dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result?;
    Ok(dir)
}

const SKELETON_MANIFEST: &str = r#"# The `{name}` pack. See "Rule packs" in Warden's README for every field.
name: {name}
version: 0.1.0
description: >
  Alerts when a Flink cluster has fewer TaskManagers than expected.
# The Warden versions this pack works with (a semver range).
warden: "{warden}"
# Other packs this one needs (name: version range); import their modules as `import "<pack>/<module>"`.
dependencies: {}

parameters:
  min_taskmanagers:
    type: int
    default: 1
    description: Alert when fewer TaskManagers than this are registered.
  missing_for:
    type: duration
    default: 0s
    description: "How long the shortfall must last before the alert fires (0s: at once)."

probes:
  - name: overview
    every: 30s
    request:
      path: /overview
    rules: [taskmanagers-missing]
"#;

const SKELETON_RULE: &str = r#"// {name}/taskmanagers-missing
//
// Alerts when the cluster has fewer TaskManagers than `min_taskmanagers`; the alert resolves by itself once they
// are back. Tune it in warden.yaml under `packs.{name}.params` (or per target under `packs.{name}.overrides`).

import "util" as util;

if !obs.ok {
    skip(`no answer from the JobManager: ${obs.error.message}`);
    return;
}
let have = obs.body.taskmanagers;
if type_of(have) != "i64" {
    skip("the answer has no `taskmanagers` count: is this a Flink JobManager?");
    return;
}
if have < params.min_taskmanagers {
    let a = #{
        subject: "taskmanagers",
        severity: "critical",
        summary: util::shortfall(have, params.min_taskmanagers),
        details: #{ registered: have, expected: params.min_taskmanagers },
    };
    if duration_ms(params.missing_for) > 0 {
        a["for"] = params.missing_for;
    }
    alert(a);
}
"#;

const SKELETON_MODULE: &str = r#"// Helpers shared by the pack's rules: `import "util" as util;`, then `util::shortfall(1, 2)`.
// Packs that depend on this one import it as `import "<this pack>/util"`.

/// The alert's one-line summary.
fn shortfall(have, want) {
    `${have} TaskManager(s) registered, ${want} expected`
}
"#;

const SKELETON_TEST: &str = r#"name: too few TaskManagers fire an alert that resolves when they are back
rule: taskmanagers-missing
params: {min_taskmanagers: 2}
steps:
  - at: 0s
    responses:
      /overview: {json: {taskmanagers: 2, slots-total: 4, slots-available: 1, jobs-running: 1, jobs-finished: 0, jobs-cancelled: 0, jobs-failed: 0}}
    expect_not:
      - {action: alert}
  - at: 30s
    responses:
      /overview: {json: {taskmanagers: 1, slots-total: 2, slots-available: 0, jobs-running: 1, jobs-finished: 0, jobs-cancelled: 0, jobs-failed: 0}}
    expect:
      - {action: alert, event: firing, subject: taskmanagers, summary_contains: "1 TaskManager(s) registered, 2 expected"}
  - at: 60s
    responses:
      /overview: {json: {taskmanagers: 2, slots-total: 4, slots-available: 1, jobs-running: 1, jobs-finished: 0, jobs-cancelled: 0, jobs-failed: 0}}
    expect:
      - {action: alert, event: resolved, subject: taskmanagers}
"#;

const SKELETON_README: &str = r#"# {name}

A Warden rule pack.

| rule | fires when |
|---|---|
| `{name}/taskmanagers-missing` | fewer TaskManagers than `min_taskmanagers` are registered (for `missing_for`) |

Files:

- `pack.yaml`: name, version, the Warden versions it works with, dependencies, parameters, probes;
- `*.rhai`: the rules (`{name}/<file name>`);
- `modules/*.rhai`: functions the rules `import` (`import "util" as util;`);
- `tests/*.yaml`: rule tests, one scenario per file (`warden test`).

Use it: put this directory under a `pack_paths` entry (e.g. `plugins/*`) and tune it in `warden.yaml`:

```yaml
packs:
  {name}:
    params: {min_taskmanagers: 3}
    overrides:
      - targets: {labels: {env: staging}}
        params: {min_taskmanagers: 1}
```

Share it: `warden pack package <dir>` writes `{name}-<version>.tar.gz` and its `.sha256`;
`warden pack add {name}-<version>.tar.gz` installs it elsewhere.
"#;

// ---------------------------------------------------------------------------------------------------------------
// pack package

/// Whether [`package`] runs the pack's rule tests first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageTests {
    /// Run them; a failing test refuses the package.
    Run,
    /// Do not run them (`--skip-tests`).
    Skip,
}

/// What became of the pack's rule tests when it was packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestsOutcome {
    /// This many test files ran and passed (0: the pack has none).
    Passed(usize),
    /// They were not run (`--skip-tests`).
    Skipped,
}

/// Runs the rule tests of the pack in `dir` (`tests/*.yaml`, with [`crate::ruletest::run_file`]): `Ok(n)` when
/// all `n` pass, else [`PackCliError::TestsFailed`] with every failure.
pub fn run_pack_tests(dir: &Path) -> Result<usize> {
    let files = crate::ruletest::discover(&[dir.to_path_buf()]);
    let mut failures = vec![];
    let mut failed = 0;
    for f in &files {
        let r = crate::ruletest::run_file(f);
        if !r.failures.is_empty() {
            failed += 1;
            failures.push(format!("FAIL {} ({})", r.name, f.display()));
            failures.extend(r.failures.iter().map(|x| format!("  {x}")));
        }
    }
    if failed == 0 {
        Ok(files.len())
    } else {
        Err(PackCliError::TestsFailed { dir: dir.to_path_buf(), failed, total: files.len(), failures })
    }
}

/// A package written by [`package`].
#[derive(Debug, Clone)]
pub struct Packaged {
    /// What became of the pack's rule tests.
    pub tests: TestsOutcome,
    /// The pack's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The `.tar.gz`.
    pub file: PathBuf,
    /// The checksum file, `<file>.sha256`, in `sha256sum` format.
    pub checksum_file: PathBuf,
    /// The package's SHA-256, in hex.
    pub sha256: String,
}

/// The files and directories of a pack directory, relative to it, sorted; hidden entries are skipped, links are
/// refused.
fn pack_entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, bool)>) -> Result<()> {
        let here = root.join(rel);
        let mut entries: Vec<_> = std::fs::read_dir(&here)
            .map_err(io("list", &here))?
            .collect::<Result<_, _>>()
            .map_err(io("list", &here))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let r = rel.join(&name);
            let kind = e.file_type().map_err(io("read", &e.path()))?;
            if kind.is_symlink() {
                return Err(PackCliError::UnsafeEntry {
                    file: root.to_path_buf(),
                    entry: r.display().to_string(),
                    why: "is a symbolic link; packs hold only files and directories".into(),
                });
            } else if kind.is_dir() {
                out.push((r.clone(), true));
                walk(root, &r, out)?;
            } else if kind.is_file() {
                out.push((r, false));
            }
        }
        Ok(())
    }
    let mut out = vec![];
    walk(dir, Path::new(""), &mut out)?;
    Ok(out)
}

/// Checks the pack in `dir` (with `others` available as dependencies), runs its rule tests unless `tests` is
/// [`PackageTests::Skip`] (a failing test refuses the package), and writes it as a gzip-compressed tar file whose
/// entries are `<name>/…` in sorted order with fixed times and owners (the same pack gives the same bytes), plus
/// `<file>.sha256`.
pub fn package(dir: &Path, out: Option<&Path>, others: &[Pack], tests: PackageTests) -> Result<Packaged> {
    let p = validate_dir(dir, others)?;
    let tests = match tests {
        PackageTests::Run => TestsOutcome::Passed(run_pack_tests(dir)?),
        PackageTests::Skip => TestsOutcome::Skipped,
    };
    let file =
        out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(format!("{}-{}.tar.gz", p.name(), p.version)));
    let entries = pack_entries(dir)?;
    let mut bytes = vec![];
    {
        let gz = flate2::GzBuilder::new().mtime(0).write(&mut bytes, flate2::Compression::best());
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        let top = PathBuf::from(p.name());
        let mut h = dir_header();
        tar.append_data(&mut h, &top, std::io::empty()).map_err(io("package", dir))?;
        for (rel, is_dir) in &entries {
            let src = dir.join(rel);
            let name = top.join(rel);
            if *is_dir {
                let mut h = dir_header();
                tar.append_data(&mut h, &name, std::io::empty()).map_err(io("package", &src))?;
            } else {
                let data = std::fs::read(&src).map_err(io("read", &src))?;
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(if is_executable(&src) { 0o755 } else { 0o644 });
                h.set_mtime(0);
                h.set_uid(0);
                h.set_gid(0);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, &name, data.as_slice()).map_err(io("package", &src))?;
            }
        }
        let gz = tar.into_inner().map_err(io("package", dir))?;
        gz.finish().map_err(io("package", dir))?;
    }
    if let Some(d) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(io("create", d))?;
    }
    std::fs::write(&file, &bytes).map_err(io("write", &file))?;
    let sha256 = hex(&Sha256::digest(&bytes));
    let checksum_file = checksum_path(&file);
    let base = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    std::fs::write(&checksum_file, format!("{sha256}  {base}\n")).map_err(io("write", &checksum_file))?;
    Ok(Packaged { tests, name: p.name().to_string(), version: p.manifest.version.clone(), file, checksum_file, sha256 })
}

fn dir_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_: &Path) -> bool {
    false
}

/// `<file>.sha256`.
pub fn checksum_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// pack add

/// A pack installed by [`add`].
#[derive(Debug, Clone)]
pub struct Added {
    /// The pack's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Where it is now.
    pub dir: PathBuf,
    /// The version it replaced (`--upgrade`).
    pub replaced: Option<String>,
}

/// Installs the pack at `source` (a directory, or a `.tar.gz` with its `.sha256` next to it) as `into/<name>`.
/// `installed` are the packs already there (through `pack_paths`): a pack with the same name is refused unless
/// `upgrade` and the new version is higher, and the new pack's dependencies must be among them.
pub fn add(source: &Path, into: &Path, installed: &[Pack], upgrade: bool) -> Result<Added> {
    std::fs::create_dir_all(into).map_err(io("create", into))?;
    let staging = staging_dir(into, "add");
    let result = stage_and_install(source, into, &staging, installed, upgrade);
    if staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn stage_and_install(source: &Path, into: &Path, staging: &Path, installed: &[Pack], upgrade: bool) -> Result<Added> {
    let name = source.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if source.is_dir() {
        if !source.join("pack.yaml").is_file() {
            return Err(PackCliError::NotAPack(source.to_path_buf()));
        }
        copy_pack(source, staging)?;
    } else if source.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz")) {
        verify_checksum(source)?;
        unpack(source, staging)?;
    } else if !source.exists() {
        return Err(PackCliError::Io {
            action: "read",
            path: source.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    } else {
        return Err(PackCliError::NotAPack(source.to_path_buf()));
    }

    let invalid = |problems| PackCliError::Invalid { dir: source.to_path_buf(), problems };
    let files = pack::read_dir(staging).map_err(|d| invalid(Diagnostics(vec![d])))?;
    let p = validate(files, installed).map_err(invalid)?;
    let dest = into.join(p.name());

    let mut replaced = None;
    if let Some(old) = installed.iter().find(|o| o.name() == p.name()) {
        if !upgrade {
            return Err(PackCliError::AlreadyInstalled {
                name: p.name().into(),
                installed: old.manifest.version.clone(),
                dir: old.dir.clone(),
            });
        }
        if p.version <= old.version {
            return Err(PackCliError::NotNewer {
                name: p.name().into(),
                installed: old.manifest.version.clone(),
                new: p.manifest.version.clone(),
                dir: old.dir.clone(),
            });
        }
        if !same_dir(&old.dir, &dest) {
            return Err(PackCliError::InstalledElsewhere {
                name: p.name().into(),
                dir: old.dir.clone(),
                into: into.to_path_buf(),
            });
        }
        replaced = Some(old.manifest.version.clone());
    }
    if replaced.is_none() && dest.exists() {
        return Err(PackCliError::Exists(dest));
    }
    if replaced.is_some() {
        let old = staging_dir(into, "old");
        std::fs::rename(&dest, &old).map_err(io("move", &dest))?;
        if let Err(e) = std::fs::rename(staging, &dest) {
            let _ = std::fs::rename(&old, &dest);
            return Err(PackCliError::Io { action: "install", path: dest, source: e });
        }
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(staging, &dest).map_err(io("install", &dest))?;
    }
    Ok(Added { name: p.name().to_string(), version: p.manifest.version.clone(), dir: dest, replaced })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// A hidden directory in `parent` for work in progress (pack discovery skips hidden directories).
fn staging_dir(parent: &Path, what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    parent.join(format!(".warden-pack-{what}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

fn copy_pack(src: &Path, dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(io("create", dest))?;
    for (rel, is_dir) in pack_entries(src)? {
        let to = dest.join(&rel);
        if is_dir {
            std::fs::create_dir_all(&to).map_err(io("create", &to))?;
        } else {
            std::fs::copy(src.join(&rel), &to).map_err(io("write", &to))?;
        }
    }
    Ok(())
}

/// Checks `file` against the SHA-256 in `<file>.sha256`.
pub fn verify_checksum(file: &Path) -> Result<()> {
    let checksum = checksum_path(file);
    if !checksum.is_file() {
        return Err(PackCliError::NoChecksum { file: file.to_path_buf(), checksum });
    }
    let text = std::fs::read_to_string(&checksum).map_err(io("read", &checksum))?;
    let expected = text.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
    if expected.len() != 64 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PackCliError::BadChecksumFile(checksum));
    }
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(file).map_err(io("read", file))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io("read", file))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let actual = hex(&h.finalize());
    if actual != expected {
        return Err(PackCliError::ChecksumMismatch { file: file.to_path_buf(), expected, actual });
    }
    Ok(())
}

/// Unpacks the package `file` into `dest` (the pack directory itself: the package's one top directory is
/// stripped). Refuses absolute paths, `..`, links, special files, several top directories, and more than
/// [`MAX_ENTRIES`] entries or [`MAX_UNPACKED`] bytes.
pub fn unpack(file: &Path, dest: &Path) -> Result<()> {
    let f = std::fs::File::open(file).map_err(io("read", file))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let bad = |e: std::io::Error| PackCliError::BadArchive { file: file.to_path_buf(), message: e.to_string() };
    let refuse = |entry: &str, why: &str| PackCliError::UnsafeEntry {
        file: file.to_path_buf(),
        entry: entry.to_string(),
        why: why.to_string(),
    };
    std::fs::create_dir_all(dest).map_err(io("create", dest))?;
    let mut top: Option<std::ffi::OsString> = None;
    let (mut count, mut total) = (0usize, 0u64);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let kind = entry.header().entry_type();
        if matches!(kind, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        }
        count += 1;
        if count > MAX_ENTRIES {
            return Err(refuse(&raw, &format!("is one too many: packages hold at most {MAX_ENTRIES} entries")));
        }
        let path = PathBuf::from(&raw);
        let mut parts = vec![];
        for c in path.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_owned()),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(refuse(&raw, "has `..` in its path, which escapes the pack directory"))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(&raw, "has an absolute path, which escapes the pack directory"))
                }
            }
        }
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry.link_name().ok().flatten().map(|t| t.display().to_string()).unwrap_or_default();
                let escapes = link_escapes(&parts, Path::new(&target));
                let why = if escapes {
                    format!("is a link to `{target}`, which escapes the pack directory")
                } else {
                    format!("is a link (to `{target}`); packages hold only files and directories")
                };
                return Err(refuse(&raw, &why));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            other => {
                return Err(refuse(&raw, &format!("is a {other:?} entry; packages hold only files and directories")))
            }
        }
        let Some(first) = parts.first().cloned() else { continue };
        match &top {
            None => top = Some(first),
            Some(t) if *t != first => {
                return Err(refuse(&raw, "is outside the package's top directory; a package holds one pack directory"))
            }
            Some(_) => {}
        }
        let rel: PathBuf = parts[1..].iter().collect();
        let to = dest.join(&rel);
        if kind == tar::EntryType::Directory {
            std::fs::create_dir_all(&to).map_err(io("create", &to))?;
            continue;
        }
        if rel.as_os_str().is_empty() {
            return Err(refuse(&raw, "is a file where the pack directory should be"));
        }
        total += entry.header().size().map_err(bad)?;
        if total > MAX_UNPACKED {
            return Err(refuse(&raw, &format!("takes the package over {} MiB unpacked", MAX_UNPACKED >> 20)));
        }
        if let Some(d) = to.parent() {
            std::fs::create_dir_all(d).map_err(io("create", d))?;
        }
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&to).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                refuse(&raw, "appears twice")
            } else {
                PackCliError::Io { action: "write", path: to.clone(), source: e }
            }
        })?;
        std::io::copy(&mut (&mut entry).take(MAX_UNPACKED), &mut out).map_err(bad)?;
        out.flush().map_err(io("write", &to))?;
        #[cfg(unix)]
        if entry.header().mode().is_ok_and(|m| m & 0o111 != 0) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755));
        }
    }
    if top.is_none() {
        return Err(PackCliError::BadArchive { file: file.to_path_buf(), message: "the package is empty".into() });
    }
    Ok(())
}

/// True when a link at `parts` (inside the package, first part being the pack directory) pointing at `target`
/// resolves outside the pack directory.
fn link_escapes(parts: &[std::ffi::OsString], target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    // Depth inside the pack directory of the link's own directory.
    let mut depth = parts.len().saturating_sub(2) as i64;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests;
