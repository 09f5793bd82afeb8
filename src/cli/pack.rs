//! `warden pack list/new/package/add`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use warden::pack::package::{add, new_pack, package, PackCliError, PackPaths, PackageTests, Result, TestsOutcome};

/// `warden pack` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum PackCommand {
    /// List the packs found through the configuration's `pack_paths`: name, version, rules, modules, directory.
    /// Exit 1 when a pack has problems (they are printed as `path:line:col: message`).
    List,
    /// Create a new pack: a working skeleton with a probe, a rule, a module, a rule test and a README.
    New {
        /// The pack's name: letters, digits, `-` and `_`.
        name: String,
        /// The directory to create it in. Default: `plugins/` next to the configuration file.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Check a pack, run its rule tests (a failing test refuses the package) and package it as `<name>-<version>.tar.gz`, with its SHA-256 in `<file>.sha256` next to it.
    Package {
        /// The pack's directory.
        dir: PathBuf,
        /// The package to write. Default: `<name>-<version>.tar.gz` in the current directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Package even if the pack's rule tests (`tests/*.yaml`) fail or without running them (said in the output).
        #[arg(long)]
        skip_tests: bool,
    },
    /// Write a pack built into the binary (e.g. `flink`: rules, manifest, tests) into DIR for editing. Put DIR
    /// under a `pack_paths` entry (e.g. `plugins/flink`) and it replaces `builtin:flink`.
    Export {
        /// The built-in pack's name.
        name: String,
        /// The directory to create (must not exist, or be empty).
        dir: PathBuf,
    },
    /// Install a pack from its directory or from a `.tar.gz` made by `warden pack package` (whose `.sha256` file
    /// must be next to it). Refuses a pack that is already installed, unless `--upgrade` and a higher version.
    Add {
        /// A pack directory or a `.tar.gz` package.
        source: PathBuf,
        /// The directory to install into. Default: `plugins/` next to the configuration file.
        #[arg(long)]
        into: Option<PathBuf>,
        /// Replace an installed pack of the same name with this higher version.
        #[arg(long)]
        upgrade: bool,
    },
}

/// Runs a `warden pack` command; `config` is the configuration file (its `pack_paths` say where packs are; a
/// missing file means the defaults). Returns the exit code.
pub async fn run(cmd: PackCommand, config: &Path) -> Result<u8> {
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || run_blocking(cmd, &config)).await.unwrap_or_else(|e| {
        Err(PackCliError::Io { action: "run", path: PathBuf::from("warden pack"), source: std::io::Error::other(e) })
    })
}

fn run_blocking(cmd: PackCommand, config: &Path) -> Result<u8> {
    let ctx = PackPaths::of_config(config)?;
    match cmd {
        PackCommand::List => {
            let (packs, problems) = ctx.discover();
            if packs.is_empty() {
                outln!("no packs found in {}", ctx.paths.join(", "));
            } else {
                outln!("{:<24} {:<12} {:>5} {:>7}  DIR", "NAME", "VERSION", "RULES", "MODULES");
                for p in &packs {
                    outln!(
                        "{:<24} {:<12} {:>5} {:>7}  {}",
                        p.name(),
                        p.manifest.version,
                        p.rules.len(),
                        p.modules.len(),
                        p.dir.display()
                    );
                }
            }
            if problems.is_empty() {
                Ok(0)
            } else {
                eprintln!("{problems}");
                eprintln!("{} problem(s)", problems.len());
                Ok(1)
            }
        }
        PackCommand::New { name, dir } => {
            let parent = dir.unwrap_or_else(|| ctx.base.join("plugins"));
            let created = new_pack(&name, &parent)?;
            outln!("created pack `{name}` in {}", created.display());
            outln!("  its rule test is {}", created.join("tests/taskmanagers-missing.yaml").display());
            if !ctx.covers(&parent) {
                outln!("note: add `{}/*` to `pack_paths` in the configuration to load it", parent.display());
            }
            Ok(0)
        }
        PackCommand::Package { dir, out, skip_tests } => {
            let (installed, _) = ctx.discover();
            let tests = if skip_tests { PackageTests::Skip } else { PackageTests::Run };
            let p = package(&dir, out.as_deref(), &installed, tests)?;
            match p.tests {
                TestsOutcome::Passed(0) => {
                    outln!("no rule tests in {} (add some under tests/)", dir.join("tests").display())
                }
                TestsOutcome::Passed(n) => outln!("{n} rule test(s) passed"),
                TestsOutcome::Skipped => outln!("rule tests NOT run (--skip-tests)"),
            }
            outln!("packaged `{}` {} as {}", p.name, p.version, p.file.display());
            outln!("sha256 {}  (in {})", p.sha256, p.checksum_file.display());
            Ok(0)
        }
        PackCommand::Export { name, dir } => {
            let written = warden::pack::export_builtin(&name, &dir)?;
            outln!("exported the built-in pack `{name}` to {} ({} files)", dir.display(), written.len());
            if ctx.covers(dir.parent().unwrap_or(Path::new("."))) {
                outln!("it replaces `builtin:{name}` from now on (a directory pack wins over the built-in one)");
            } else {
                outln!(
                    "note: add `{}` to `pack_paths` in the configuration to load it instead of `builtin:{name}`",
                    dir.display()
                );
            }
            Ok(0)
        }
        PackCommand::Add { source, into, upgrade } => {
            let into = into.unwrap_or_else(|| ctx.base.join("plugins"));
            let (installed, _) = ctx.discover();
            let a = add(&source, &into, &installed, upgrade)?;
            match &a.replaced {
                Some(old) => outln!("upgraded pack `{}` from {old} to {} in {}", a.name, a.version, a.dir.display()),
                None => outln!("installed pack `{}` {} in {}", a.name, a.version, a.dir.display()),
            }
            if !ctx.covers(&into) {
                outln!(
                    "note: `{}` is not in the configuration's `pack_paths`; add `{}/*` there to load the pack",
                    into.display(),
                    into.display()
                );
            }
            Ok(0)
        }
    }
}
