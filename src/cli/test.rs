//! `warden test`: the rule tests of packs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(config: &Path, paths: Vec<PathBuf>) -> ExitCode {
    let paths = if paths.is_empty() {
        match warden::config::load_with(config, warden::config::LoadOptions { environment: false }) {
            Ok(l) => warden::reload::pack_dirs(&l.config.pack_paths, &l.base_dir),
            Err(_) => vec![PathBuf::from("rules"), PathBuf::from("plugins")],
        }
    } else {
        paths
    };
    let files = warden::ruletest::discover(&paths);
    if files.is_empty() {
        eprintln!("no rule tests found under {paths:?}");
        return ExitCode::from(1);
    }
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let r = warden::ruletest::run_file(&f);
        if r.failures.is_empty() {
            passed += 1;
            outln!("ok   {} ({})", r.name, f.display());
        } else {
            failed += 1;
            outln!("FAIL {} ({})", r.name, f.display());
            for x in &r.failures {
                outln!("  {x}");
            }
        }
    }
    outln!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
