use super::*;

fn installed(dir: &Path) -> Vec<Pack> {
    let mut diags = vec![];
    let packs = pack::discover(&["plugins/*".into()], dir, &mut diags, &dir.join("warden.yaml"));
    assert!(diags.is_empty(), "{diags:?}");
    packs
}

/// A raw package entry: name, type, data, link target.
type RawEntry<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// A `.tar.gz` with the given raw entries (names written as-is, so `..` and absolute paths are possible) and a
/// matching `.sha256`.
fn raw_tarball(dir: &Path, entries: &[RawEntry<'_>]) -> PathBuf {
    let mut bytes = vec![];
    {
        let gz = flate2::write::GzEncoder::new(&mut bytes, flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            t.append(&h, *data).unwrap();
        }
        t.into_inner().unwrap().finish().unwrap();
    }
    let file = dir.join("evil.tar.gz");
    std::fs::write(&file, &bytes).unwrap();
    std::fs::write(checksum_path(&file), format!("{}  evil.tar.gz\n", hex(&Sha256::digest(&bytes)))).unwrap();
    file
}

const MANIFEST: &[u8] = b"name: evil\nversion: 1.0.0\n";

#[test]
fn new_package_add_round_trip() {
    let here = tempfile::tempdir().unwrap();
    let there = tempfile::tempdir().unwrap();
    let created = new_pack("team-checks", &here.path().join("plugins")).unwrap();
    assert_eq!(created, here.path().join("plugins/team-checks"));
    for f in
        ["pack.yaml", "taskmanagers-missing.rhai", "modules/util.rhai", "tests/taskmanagers-missing.yaml", "README.md"]
    {
        assert!(created.join(f).is_file(), "{f} missing");
    }
    // No staging directory is left behind.
    assert_eq!(std::fs::read_dir(here.path().join("plugins")).unwrap().count(), 1);

    let out = here.path().join("dist/team-checks.tar.gz");
    let p = package(&created, Some(&out), &[], PackageTests::Run).unwrap();
    assert_eq!((p.name.as_str(), p.version.as_str()), ("team-checks", "0.1.0"));
    let sum = std::fs::read_to_string(&p.checksum_file).unwrap();
    assert_eq!(sum, format!("{}  team-checks.tar.gz\n", p.sha256));
    // Deterministic: the same pack gives the same bytes.
    let again = package(&created, Some(&here.path().join("again.tar.gz")), &[], PackageTests::Run).unwrap();
    assert_eq!(again.sha256, p.sha256);

    let a = add(&out, &there.path().join("plugins"), &installed(there.path()), false).unwrap();
    assert_eq!(a.dir, there.path().join("plugins/team-checks"));
    assert_eq!(a.replaced, None);
    for f in ["pack.yaml", "taskmanagers-missing.rhai", "modules/util.rhai", "tests/taskmanagers-missing.yaml"] {
        assert_eq!(std::fs::read(created.join(f)).unwrap(), std::fs::read(a.dir.join(f)).unwrap(), "{f}");
    }

    // The added pack loads through `pack_paths` and its rules compile into a plan.
    let cfg = there.path().join("warden.yaml");
    std::fs::write(
        &cfg,
        "targets:\n  - {name: jm, url: \"http://127.0.0.1:1\"}\npacks:\n  team-checks:\n    params: {min_taskmanagers: 2}\n",
    )
    .unwrap();
    let (plan, _) = crate::plan::load(&cfg, None).unwrap_or_else(|d| panic!("{d}"));
    assert!(plan.rules.contains_key("team-checks/taskmanagers-missing"));
    assert_eq!(plan.params_for("team-checks/taskmanagers-missing", "jm").unwrap()["min_taskmanagers"], 2);
    // Its one probe job (the built-in Flink pack, loaded by default, brings its own).
    assert_eq!(plan.jobs.iter().filter(|j| j.probe.starts_with("team-checks/")).count(), 1);

    // Adding it again is refused; an upgrade needs a higher version.
    let err = add(&out, &there.path().join("plugins"), &installed(there.path()), false).unwrap_err();
    assert!(matches!(err, PackCliError::AlreadyInstalled { .. }), "{err}");
    assert!(err.to_string().starts_with("pack `team-checks` 0.1.0 is already installed at `"), "{err}");
    let err = add(&out, &there.path().join("plugins"), &installed(there.path()), true).unwrap_err();
    assert!(matches!(err, PackCliError::NotNewer { .. }), "{err}");
    let yaml = std::fs::read_to_string(created.join("pack.yaml")).unwrap().replace("version: 0.1.0", "version: 0.2.0");
    std::fs::write(created.join("pack.yaml"), yaml).unwrap();
    let a = add(&created, &there.path().join("plugins"), &installed(there.path()), true).unwrap();
    assert_eq!((a.version.as_str(), a.replaced.as_deref()), ("0.2.0", Some("0.1.0")));
    assert_eq!(installed(there.path())[0].manifest.version, "0.2.0");
    assert_eq!(std::fs::read_dir(there.path().join("plugins")).unwrap().count(), 1, "leftover staging directories");
}

#[test]
fn new_refuses_bad_names_and_existing_directories() {
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(new_pack("../x", d.path()), Err(PackCliError::BadName(_))));
    std::fs::create_dir_all(d.path().join("x")).unwrap();
    let err = new_pack("x", d.path()).unwrap_err();
    assert_eq!(err.to_string(), format!("`{}` already exists", d.path().join("x").display()));
}

#[test]
fn a_package_with_a_bad_or_missing_checksum_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let src = new_pack("p", &d.path().join("src")).unwrap();
    let out = d.path().join("p.tar.gz");
    package(&src, Some(&out), &[], PackageTests::Skip).unwrap();
    std::fs::write(checksum_path(&out), format!("{}  p.tar.gz\n", "0".repeat(64))).unwrap();
    let err = add(&out, &d.path().join("plugins"), &[], false).unwrap_err();
    assert!(matches!(err, PackCliError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("its `.sha256` file says 0000"), "{err}");
    std::fs::write(checksum_path(&out), "garbage\n").unwrap();
    assert!(matches!(add(&out, &d.path().join("plugins"), &[], false), Err(PackCliError::BadChecksumFile(_))));
    std::fs::remove_file(checksum_path(&out)).unwrap();
    let err = add(&out, &d.path().join("plugins"), &[], false).unwrap_err();
    assert!(matches!(err, PackCliError::NoChecksum { .. }), "{err}");
    assert!(!d.path().join("plugins/p").exists());
}

#[test]
fn entries_that_escape_the_pack_directory_are_refused() {
    use tar::EntryType::{Directory, Regular, Symlink};
    let cases: Vec<(Vec<RawEntry<'_>>, &str)> = vec![
        (
            vec![
                ("evil/", Directory, b"", None),
                ("evil/pack.yaml", Regular, MANIFEST, None),
                ("evil/../../x", Regular, b"x", None),
            ],
            "entry `evil/../../x` has `..` in its path, which escapes the pack directory",
        ),
        (vec![("/tmp/evil/pack.yaml", Regular, MANIFEST, None)], "entry `/tmp/evil/pack.yaml` has an absolute path"),
        (
            vec![("evil/pack.yaml", Regular, MANIFEST, None), ("evil/passwd", Symlink, b"", Some("../../etc/passwd"))],
            "entry `evil/passwd` is a link to `../../etc/passwd`, which escapes the pack directory",
        ),
        (
            vec![("evil/pack.yaml", Regular, MANIFEST, None), ("evil/abs", Symlink, b"", Some("/etc/passwd"))],
            "entry `evil/abs` is a link to `/etc/passwd`, which escapes the pack directory",
        ),
        (
            vec![("evil/pack.yaml", Regular, MANIFEST, None), ("other/x.rhai", Regular, b"1", None)],
            "entry `other/x.rhai` is outside the package's top directory",
        ),
    ];
    for (entries, want) in cases {
        let d = tempfile::tempdir().unwrap();
        let file = raw_tarball(d.path(), &entries);
        let into = d.path().join("plugins");
        let err = add(&file, &into, &[], false).unwrap_err();
        assert!(matches!(err, PackCliError::UnsafeEntry { .. }), "{err}");
        assert!(err.to_string().contains(want), "{err}\nwanted: {want}");
        // Nothing was installed, nothing was written outside, no staging directory is left.
        assert_eq!(std::fs::read_dir(&into).unwrap().count(), 0);
        assert!(!d.path().join("x").exists());
    }
    // The same package without the bad entry installs.
    let d = tempfile::tempdir().unwrap();
    let file = raw_tarball(d.path(), &[("evil/", Directory, b"", None), ("evil/pack.yaml", Regular, MANIFEST, None)]);
    assert_eq!(add(&file, &d.path().join("plugins"), &[], false).unwrap().name, "evil");
}

#[test]
fn add_validates_the_pack() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // A Warden range that excludes this Warden, a missing dependency and a missing module: all reported.
    std::fs::write(src.join("pack.yaml"), "name: p\nversion: 1.0.0\nwarden: \">=99\"\ndependencies: {base: \">=1\"}\n")
        .unwrap();
    std::fs::write(src.join("r.rhai"), "import \"nope\" as n;").unwrap();
    let err = add(&src, &d.path().join("plugins"), &[], false).unwrap_err().to_string();
    assert!(
        err.contains(&format!("pack `p` needs Warden `>=99`, but this is Warden {}", pack::WARDEN_VERSION)),
        "{err}"
    );
    std::fs::write(src.join("pack.yaml"), "name: p\nversion: 1.0.0\ndependencies: {base: \">=1\"}\n").unwrap();
    let err = add(&src, &d.path().join("plugins"), &[], false).unwrap_err().to_string();
    assert!(err.contains("pack `p` depends on pack `base` (`>=1`), which is not loaded"), "{err}");
    assert!(err.contains("r.rhai:1:8: rule `p/r`: cannot import `nope`"), "{err}");
    assert!(!d.path().join("plugins/p").exists());
    // Not a pack at all.
    let err = add(d.path(), &d.path().join("plugins"), &[], false).unwrap_err();
    assert!(matches!(err, PackCliError::NotAPack(_)), "{err}");
}

#[test]
fn pack_paths_come_from_the_configuration_or_the_defaults() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("warden.yaml");
    let p = PackPaths::of_config(&cfg).unwrap();
    assert_eq!(p.paths, vec!["builtin:flink", "rules", "plugins/*"]);
    std::fs::write(&cfg, "pack_paths: [mine/*]\ntargets: {not: valid here}\n").unwrap();
    let p = PackPaths::of_config(&cfg).unwrap();
    assert_eq!(p.paths, vec!["mine/*"]);
    std::fs::create_dir_all(d.path().join("mine")).unwrap();
    assert!(p.covers(&d.path().join("mine")));
    assert!(!p.covers(&d.path().join("plugins")));
    std::fs::write(&cfg, "pack_paths: 7\n").unwrap();
    assert!(matches!(PackPaths::of_config(&cfg), Err(PackCliError::Config(_))));
}

#[test]
fn the_skeletons_rule_test_passes() {
    let d = tempfile::tempdir().unwrap();
    let dir = new_pack("skel", d.path()).unwrap();
    let report = crate::ruletest::run_file(&dir.join("tests/taskmanagers-missing.yaml"));
    assert!(
        report.failures.is_empty(),
        "{}\n(`warden test` must compile rules with their pack's modules: `compile_with_modules(…, &pack::module_set(…))`)",
        report.failures.join("\n")
    );
    // And it fails when the rule is wrong: the test really checks something.
    let rule = std::fs::read_to_string(dir.join("taskmanagers-missing.rhai"))
        .unwrap()
        .replace("have < params", "have > params");
    std::fs::write(dir.join("taskmanagers-missing.rhai"), rule).unwrap();
    assert!(!crate::ruletest::run_file(&dir.join("tests/taskmanagers-missing.yaml")).failures.is_empty());
}

#[test]
fn a_pack_whose_tests_fail_is_not_packaged_unless_tests_are_skipped() {
    let here = tempfile::tempdir().unwrap();
    let created = new_pack("failing", here.path()).unwrap();
    let test = created.join("tests/taskmanagers-missing.yaml");
    let text = std::fs::read_to_string(&test).unwrap().replace("2 expected", "3 expected");
    std::fs::write(&test, text).unwrap();
    let out = here.path().join("failing.tar.gz");
    let e = package(&created, Some(&out), &[], PackageTests::Run).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PackCliError::TestsFailed { failed: 1, total: 1, .. }), "{msg}");
    assert!(msg.contains("1 of 1 rule test(s) failed"), "{msg}");
    assert!(msg.contains("--skip-tests"), "{msg}");
    assert!(msg.contains("expected: alert event=\"firing\" subject=\"taskmanagers\" summary contains=\"1 TaskManager(s) registered, 3 expected\""), "{msg}");
    assert!(!out.exists(), "a refused pack leaves no package behind");
    let p = package(&created, Some(&out), &[], PackageTests::Skip).unwrap();
    assert_eq!(p.tests, TestsOutcome::Skipped);
    assert!(out.exists());
}
