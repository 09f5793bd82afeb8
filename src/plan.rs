//! Load → validate → compile. Turns a checked configuration and its packs into an immutable [`Plan`]: compiled
//! rules, their parameters (per target, after `packs.<name>.overrides`), and one job per probe × target. Every
//! problem in any file is reported at once; a plan is only built when there are none.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use crate::config::yaml::{join_index, join_key, YamlDoc};
use crate::config::{Config, LoadedConfig, ProbeConfig, TargetConfig, TargetSelector};
use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::fetch::HttpRequest;
use crate::pack::{Pack, PackFiles, ParamType};
use crate::schedule::Schedule;
use crate::script::{CompiledRule, ScriptEngine};

/// Parameter values by name.
pub type Params = BTreeMap<String, serde_json::Value>;

/// One probe polling one target.
#[derive(Debug, Clone)]
pub struct ProbeJob {
    /// The probe's (namespaced) name.
    pub probe: String,
    /// The target's name.
    pub target: String,
    /// When to poll.
    pub schedule: Schedule,
    /// What to request.
    pub request: HttpRequest,
    /// The rules that judge each answer, by namespaced name.
    pub rules: Vec<String>,
    /// Poll once per job of the target (`for_each:` of the probe); `request.path` then holds `{jid}`/`{job}`.
    pub for_each: Option<crate::config::ForEach>,
    /// Follow the pages of a list answer (`request.paginate`).
    pub paginate: Option<crate::fetch_pages::Paginate>,
}

/// A rule ready to run, with its pack's parameters.
#[derive(Debug, Clone)]
pub struct PlannedRule {
    /// The compiled rule.
    pub compiled: CompiledRule,
    /// Its pack's parameters (defaults merged with `packs.<pack>.params` in `warden.yaml`).
    pub params: Params,
    /// The parameters of the targets that `packs.<pack>.overrides` tunes, by target name; other targets use
    /// `params`.
    pub target_params: BTreeMap<String, Params>,
}

impl PlannedRule {
    /// The parameters the rule sees when it judges `target`.
    pub fn params_for(&self, target: &str) -> &Params {
        self.target_params.get(target).unwrap_or(&self.params)
    }
}

/// Everything the daemon runs, built from one consistent set of files.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The configuration.
    pub loaded: LoadedConfig,
    /// Rules by namespaced name.
    pub rules: BTreeMap<String, Arc<PlannedRule>>,
    /// Probe jobs.
    pub jobs: Vec<ProbeJob>,
    /// Loaded packs as `(name, version, directory)`.
    pub packs: Vec<(String, String, String)>,
    /// When the packs were about to be read: a file changed after this may not be in the plan (the daemon checks
    /// once its file watcher is armed).
    pub loaded_at: std::time::SystemTime,
    /// The inhibit rules in force: the packs' defaults (unless turned off) and `inhibit.rules`.
    pub inhibit: Vec<crate::notify::inhibit::InhibitRule>,
    /// The probes fed by pushed events (`events:` instead of `request:`); they have no polling job.
    pub events: Vec<EventProbe>,
}

/// A probe fed by events pushed to `POST /api/events`, with the rules it runs for each target.
#[derive(Debug, Clone, PartialEq)]
pub struct EventProbe {
    /// The probe's (namespaced) name.
    pub probe: String,
    /// Which events it takes.
    pub takes: crate::config::EventsProbeConfig,
    /// The rules (namespaced) that judge an event naming a target, by target name; targets the probe does not
    /// select are absent.
    pub targets: BTreeMap<String, Vec<String>>,
    /// The rules that judge an event naming no target (on the pseudo-target [`EVENTS_TARGET`]); `None` when the
    /// probe selects targets.
    pub untargeted: Option<Vec<String>>,
}

/// The pseudo-target of pushed events that name no target.
pub const EVENTS_TARGET: &str = "events";

impl Plan {
    /// The parameters `rule` (namespaced) sees when it judges `target`, or `None` for an unknown rule.
    pub fn params_for(&self, rule: &str, target: &str) -> Option<&Params> {
        self.rules.get(rule).map(|r| r.params_for(target))
    }
}

/// Where packs come from.
pub enum PackSource {
    /// The configuration's `pack_paths`.
    FromConfig,
    /// These pack files only (the demo's embedded pack).
    Files(Vec<PackFiles>),
}

/// Loads the packs and builds the plan.
pub fn build(loaded: LoadedConfig, source: PackSource, engine: &ScriptEngine) -> Result<Plan, Diagnostics> {
    let loaded_at = std::time::SystemTime::now();
    let mut diags: Vec<Diagnostic> = vec![];
    let cfg = &loaded.config;
    let doc = &loaded.doc;
    let packs: Vec<Pack> = match source {
        PackSource::FromConfig => crate::pack::discover(&cfg.pack_paths, &loaded.base_dir, &mut diags, &doc.file),
        PackSource::Files(files) => {
            let mut packs = vec![];
            for f in files {
                if let Some(p) = crate::pack::load(f, &mut diags) {
                    crate::pack::push_unique(&mut packs, p, &mut diags);
                }
            }
            packs
        }
    };
    crate::pack::check_dependencies(&packs, &mut diags);
    let modules = crate::pack::module_set(&packs);

    // Settings for packs that do not exist.
    let pack_names: Vec<&str> = packs.iter().map(Pack::name).collect();
    for name in cfg.packs.keys() {
        if !pack_names.contains(&name.as_str()) {
            let hint =
                closest(name, pack_names.iter().copied()).map(|c| format!(", did you mean `{c}`?")).unwrap_or_default();
            diags.push(doc.key_diag(&join_key("packs", name), format!("no pack named `{name}` was loaded{hint}")));
        }
    }
    let target_names: Vec<&str> = cfg.targets.iter().map(|t| t.name.as_str()).collect();

    let mut rules: BTreeMap<String, Arc<PlannedRule>> = BTreeMap::new();
    let mut jobs = vec![];
    let mut events = vec![];
    for pack in &packs {
        let settings = cfg.packs.get(pack.name()).cloned().unwrap_or_default();
        let spath = join_key("packs", pack.name());
        // Parameters: unknown names, types, required ones.
        check_params(doc, cfg, pack, &join_key(&spath, "params"), &settings.params, &mut diags);
        let mut params = Params::new();
        for (k, spec) in &pack.manifest.parameters {
            match settings.params.get(k).or(spec.default.as_ref()) {
                Some(v) => {
                    params.insert(k.clone(), v.clone());
                }
                None => diags.push(doc.diag(
                    &spath,
                    format!(
                        "pack `{}` needs parameter `{k}` to be set under `packs.{}.params` ({})",
                        pack.name(),
                        pack.name(),
                        spec.description
                    ),
                )),
            }
        }
        check_rule_names(doc, pack, &join_key(&spath, "disabled_rules"), &settings.disabled_rules, &mut diags);
        // Per-target overrides.
        for (i, ov) in settings.overrides.iter().enumerate() {
            let opath = join_index(&join_key(&spath, "overrides"), i);
            crate::config::check_selector(
                doc,
                &join_key(&opath, "targets"),
                Some(&ov.targets),
                &target_names,
                &mut diags,
            );
            check_params(doc, cfg, pack, &join_key(&opath, "params"), &ov.params, &mut diags);
            check_rule_names(doc, pack, &join_key(&opath, "disabled_rules"), &ov.disabled_rules, &mut diags);
        }
        let mut target_params = BTreeMap::new();
        let mut disabled: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for t in &cfg.targets {
            let mut p = params.clone();
            let off = disabled.entry(t.name.as_str()).or_default();
            off.extend(settings.disabled_rules.iter().map(String::as_str));
            for ov in settings.overrides.iter().filter(|o| o.targets.matches(t)) {
                p.extend(ov.params.iter().map(|(k, v)| (k.clone(), v.clone())));
                off.extend(ov.disabled_rules.iter().map(String::as_str));
            }
            check_restart_jobs(doc, cfg, &spath, &p, &mut diags);
            if p != params {
                target_params.insert(t.name.clone(), p);
            }
        }
        // Compile every rule, reporting all syntax and import errors.
        for r in pack.rules.values() {
            match engine.compile_with_modules(&r.name, pack.name(), r.file.clone(), &r.source, &modules) {
                Ok(c) => {
                    let planned =
                        PlannedRule { compiled: c, params: params.clone(), target_params: target_params.clone() };
                    rules.insert(r.name.clone(), Arc::new(planned));
                }
                Err(e) => {
                    diags.push(Diagnostic::new(&e.file, e.line, e.col, format!("rule `{}`: {}", e.rule, e.message)))
                }
            }
        }
        if !settings.enabled {
            continue;
        }
        for p in &pack.manifest.probes {
            let mut probe = p.clone();
            probe.name = format!("{}/{}", pack.name(), p.name);
            if let Some(every) = settings.every {
                probe.every = Some(every);
                probe.cron = None;
            }
            if let Some(takes) = &probe.events {
                let names_on = |off: Option<&BTreeSet<&str>>| -> Vec<String> {
                    p.rules
                        .iter()
                        .filter(|r| !off.is_some_and(|o| o.contains(r.as_str())))
                        .map(|r| format!("{}/{r}", pack.name()))
                        .collect()
                };
                let targets = cfg
                    .targets
                    .iter()
                    .filter(|t| settings.targets.as_ref().is_none_or(|s| s.matches(t)))
                    .map(|t| (t.name.clone(), names_on(disabled.get(t.name.as_str()))))
                    .collect();
                let pack_off: BTreeSet<&str> = settings.disabled_rules.iter().map(String::as_str).collect();
                let untargeted = settings.targets.is_none().then(|| names_on(Some(&pack_off)));
                events.push(EventProbe { probe: probe.name.clone(), takes: takes.clone(), targets, untargeted });
                continue;
            }
            let Some(schedule) = schedule_of(&probe) else { continue };
            // The pack's own choice of targets for this probe (`probes[].targets` in pack.yaml), within the targets
            // the user gives the pack (`packs.<name>.targets`).
            let polled = |t: &&TargetConfig| {
                settings.targets.as_ref().is_none_or(|s| s.matches(t))
                    && p.targets.as_ref().is_none_or(|s| s.matches(t))
            };
            for t in cfg.targets.iter().filter(polled) {
                let off = disabled.get(t.name.as_str());
                let names: Vec<String> = p
                    .rules
                    .iter()
                    .filter(|r| !off.is_some_and(|o| o.contains(r.as_str())))
                    .map(|r| format!("{}/{r}", pack.name()))
                    .collect();
                if !names.is_empty() {
                    jobs.push(job(&probe, t, &schedule, names));
                }
            }
        }
    }
    // Modules that no rule imports are checked too.
    for e in engine.check_modules(&modules) {
        diags.push(Diagnostic::new(&e.file, e.line, e.col, e.message));
    }

    for (i, p) in cfg.probes.iter().enumerate() {
        for (j, r) in p.rules.iter().enumerate() {
            if !rules.contains_key(r) && !diags.iter().any(|d| d.message.contains(&format!("rule `{r}`:"))) {
                let hint = closest(r, rules.keys().map(String::as_str))
                    .map(|c| format!(", did you mean `{c}`?"))
                    .unwrap_or_default();
                let how = if r.contains('/') { "" } else { " (rules are named `<pack>/<rule>`)" };
                diags.push(doc.diag(
                    &join_index(&join_key(&join_index("probes", i), "rules"), j),
                    format!("probe `{}` names unknown rule `{r}`{how}{hint}", p.name),
                ));
            }
        }
        if let Some(takes) = &p.events {
            let targets = cfg
                .targets
                .iter()
                .filter(|t| p.targets.as_ref().is_none_or(|s| s.matches(t)))
                .map(|t| (t.name.clone(), p.rules.clone()))
                .collect();
            let untargeted = p.targets.is_none().then(|| p.rules.clone());
            events.push(EventProbe { probe: p.name.clone(), takes: takes.clone(), targets, untargeted });
            continue;
        }
        expand(p, p.targets.as_ref(), &cfg.targets, &mut jobs);
    }

    check_fan_out_rules(doc, cfg, &packs, &jobs, &mut diags);
    let inhibit = crate::notify::inhibit::in_force(&cfg.inhibit, doc, &packs, &mut diags);

    if !diags.is_empty() {
        let mut d = Diagnostics(diags);
        d.sort();
        return Err(d);
    }
    let packs =
        packs.iter().map(|p| (p.name().to_string(), p.manifest.version.clone(), p.dir.display().to_string())).collect();
    Ok(Plan { loaded, rules, jobs, packs, loaded_at, inhibit, events })
}

/// A rule that judges a `for_each: job` probe judges no other probe: the dispatcher keeps one memory per (rule,
/// target) and takes each evaluation as the full list of what is wrong; a fan-out probe hands it the merged verdict
/// of a whole tick, which another probe's evaluation of the same rule would contradict (resolving its alerts).
fn check_fan_out_rules(doc: &YamlDoc, cfg: &Config, packs: &[Pack], jobs: &[ProbeJob], diags: &mut Vec<Diagnostic>) {
    let mut by_rule: BTreeMap<(&str, &str), BTreeSet<(&str, bool)>> = BTreeMap::new();
    for j in jobs {
        for r in &j.rules {
            by_rule.entry((r, &j.target)).or_default().insert((&j.probe, j.for_each.is_some()));
        }
    }
    let mut reported = BTreeSet::new();
    for ((rule, _), probes) in by_rule {
        if probes.len() < 2 || !probes.iter().any(|(_, fan)| *fan) || !reported.insert(rule) {
            continue;
        }
        let names: Vec<String> = probes.iter().map(|(p, _)| format!("`{p}`")).collect();
        let msg = format!(
            "rule `{rule}` judges probe {} on the same target; a rule of a `for_each` probe must judge only that \
             probe (copy the rule under another name for the other probe)",
            names.join(" and ")
        );
        // At the first of the probes in `warden.yaml`, else at the pack's manifest.
        let at = cfg.probes.iter().position(|p| probes.iter().any(|(n, _)| *n == p.name));
        match at {
            Some(i) => diags.push(doc.diag(&join_key(&join_index("probes", i), "rules"), msg)),
            None => {
                let pack = rule.split('/').next().unwrap_or("");
                let file = packs.iter().find(|p| p.name() == pack).map(|p| p.dir.join("pack.yaml"));
                diags.push(Diagnostic::new(file.unwrap_or_else(|| doc.file.clone()), 1, 1, msg));
            }
        }
    }
}

/// Checks parameter values set at `path` (`packs.<name>.params` or an override's `params`) against the pack.
fn check_params(doc: &YamlDoc, cfg: &Config, pack: &Pack, path: &str, set: &Params, diags: &mut Vec<Diagnostic>) {
    for (k, v) in set {
        let at = join_key(path, k);
        match pack.manifest.parameters.get(k) {
            None => {
                let hint = closest(k, pack.manifest.parameters.keys().map(String::as_str))
                    .map(|c| format!(", did you mean `{c}`?"))
                    .unwrap_or_default();
                diags.push(doc.key_diag(&at, format!("pack `{}` has no parameter `{k}`{hint}", pack.name())));
            }
            Some(spec) => {
                if let Err(e) = spec.kind.check(v) {
                    diags.push(doc.diag(&at, format!("parameter `{k}` of pack `{}`: {e}", pack.name())));
                } else if spec.kind == ParamType::Command {
                    let c = v.as_str().unwrap_or("");
                    if !c.is_empty() && !cfg.commands.contains_key(c) {
                        let hint = closest(c, cfg.commands.keys().map(String::as_str))
                            .map(|x| format!(", did you mean `{x}`?"))
                            .unwrap_or_default();
                        diags.push(doc.diag(
                            &at,
                            format!("parameter `{k}` names command `{c}`, which is not under `commands:`{hint}"),
                        ));
                    }
                }
            }
        }
    }
}

/// A pack that relaunches through `restart_job` (`relaunch_mode: restart_job`, as the Flink pack has it) needs a
/// `jobs.<name>` entry for every job it watches by name: otherwise the job's first failure would end in a runtime
/// error instead of a restart.
fn check_restart_jobs(doc: &YamlDoc, cfg: &Config, spath: &str, params: &Params, diags: &mut Vec<Diagnostic>) {
    if params.get("relaunch_mode").and_then(|m| m.as_str()) != Some("restart_job") {
        return;
    }
    let Some(expected) = params.get("expected_jobs").and_then(|e| e.as_array()) else { return };
    for name in expected.iter().filter_map(|n| n.as_str()) {
        if !cfg.jobs.contains_key(name) && !name.contains(['*', '?']) {
            diags.push(doc.diag(
                &join_key(spath, "params.relaunch_mode"),
                format!(
                    "`relaunch_mode: restart_job` needs a `jobs.{name}` entry saying how to restart expected job \
                     `{name}` (its jar or command, savepoint directory)"
                ),
            ));
        }
    }
}

/// Checks that every short rule name listed at `path` is a rule of `pack`.
fn check_rule_names(doc: &YamlDoc, pack: &Pack, path: &str, names: &[String], diags: &mut Vec<Diagnostic>) {
    for (j, d) in names.iter().enumerate() {
        if !pack.rules.contains_key(d) {
            let hint = closest(d, pack.rules.keys().map(String::as_str))
                .map(|c| format!(", did you mean `{c}`?"))
                .unwrap_or_default();
            diags.push(doc.diag(&join_index(path, j), format!("pack `{}` has no rule `{d}`{hint}", pack.name())));
        }
    }
}

/// The probe's schedule, or `None` when it has none that parses (the config check reports that).
fn schedule_of(p: &ProbeConfig) -> Option<Schedule> {
    match (p.every, &p.cron) {
        (Some(d), _) => Some(Schedule::Every(d)),
        (None, Some(c)) => Schedule::cron(c).ok(),
        (None, None) => None,
    }
}

/// The job of probe `p` on target `t`, judged by `rules`.
fn job(p: &ProbeConfig, t: &TargetConfig, schedule: &Schedule, rules: Vec<String>) -> ProbeJob {
    let method =
        reqwest::Method::from_bytes(p.request.method.to_ascii_uppercase().as_bytes()).unwrap_or(reqwest::Method::GET);
    ProbeJob {
        probe: p.name.clone(),
        target: t.name.clone(),
        schedule: schedule.clone(),
        request: HttpRequest {
            method,
            path: p.request.path.clone(),
            headers: p.request.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            body: p.request.body.clone(),
            max_body: p.max_body.as_usize(),
        },
        rules,
        for_each: p.for_each.clone(),
        paginate: p.request.paginate,
    }
}

fn expand(p: &ProbeConfig, sel: Option<&TargetSelector>, targets: &[TargetConfig], jobs: &mut Vec<ProbeJob>) {
    let Some(schedule) = schedule_of(p) else { return };
    for t in targets.iter().filter(|t| sel.is_none_or(|s| s.matches(t))) {
        jobs.push(job(p, t, &schedule, p.rules.clone()));
    }
}

/// Loads `warden.yaml` at `path` and builds the plan: what `warden check` and `warden run` do first.
pub fn load(
    path: &Path,
    engine_limits: Option<&crate::config::ScriptLimits>,
) -> Result<(Plan, ScriptEngine), Diagnostics> {
    load_with(path, engine_limits, crate::config::LoadOptions::default())
}

/// [`load`], looking at the outside world (secrets, files outside the configuration's directory) as `opts` says.
pub fn load_with(
    path: &Path,
    engine_limits: Option<&crate::config::ScriptLimits>,
    opts: crate::config::LoadOptions,
) -> Result<(Plan, ScriptEngine), Diagnostics> {
    let loaded = match crate::config::load_with(path, opts) {
        Ok(l) => l,
        Err(mut d) => {
            // One `warden check` reports every problem: the packs' own checks still run on what can be read.
            d.0.extend(pack_checks_on_raw(path));
            d.sort();
            return Err(d);
        }
    };
    let engine =
        ScriptEngine::new(engine_limits.unwrap_or(&loaded.config.scripts)).with_commands(loaded.config.commands.keys());
    let plan = build(loaded, PackSource::FromConfig, &engine)?;
    Ok((plan, engine))
}

/// For a configuration that does not load: the problems of `packs.<pack>.params` against the packs' manifests,
/// found on the raw document (each pack's settings read on their own), so that they are reported together with
/// the configuration's own problems instead of after those are fixed.
fn pack_checks_on_raw(path: &Path) -> Vec<Diagnostic> {
    let Ok(text) = std::fs::read_to_string(path) else { return vec![] };
    let Ok(doc) = YamlDoc::parse(path, &text) else { return vec![] };
    let mut ignore = vec![];
    let pack_paths: Vec<String> = doc
        .value
        .get("pack_paths")
        .and_then(|v| doc.typed(v, "pack_paths", &mut ignore))
        .unwrap_or_else(|| vec!["rules".to_string(), "plugins/*".to_string()]);
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut pack_diags = vec![];
    let packs = crate::pack::discover(&pack_paths, base, &mut pack_diags, &doc.file);
    // Commands as far as they read, so that a `command` parameter is not reported against a broken section.
    let commands_ok = match doc.value.get("commands") {
        None => true,
        Some(v) => doc.typed::<BTreeMap<String, crate::config::CommandConfig>>(v, "commands", &mut ignore).is_some(),
    };
    let mut only_commands = serde_yaml::Mapping::new();
    if let (true, Some(v)) = (commands_ok, doc.value.get("commands")) {
        only_commands.insert("commands".into(), v.clone());
    }
    let Some(cfg) = doc.typed::<Config>(&serde_yaml::Value::Mapping(only_commands), "", &mut ignore) else {
        return vec![];
    };
    let mut diags = vec![];
    let Some(serde_yaml::Value::Mapping(settings)) = doc.value.get("packs") else { return diags };
    for (k, v) in settings {
        let Some(name) = k.as_str() else { continue };
        let Some(pack) = packs.iter().find(|p| p.name() == name) else { continue };
        let spath = join_key("packs", name);
        let Some(params) =
            v.get("params").and_then(|p| doc.typed::<Params>(p, &join_key(&spath, "params"), &mut ignore))
        else {
            continue;
        };
        let mut found = vec![];
        check_params(&doc, &cfg, pack, &join_key(&spath, "params"), &params, &mut found);
        diags.extend(found.into_iter().filter(|d| commands_ok || !d.message.contains("`commands:`")));
    }
    diags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScriptLimits;
    use std::path::PathBuf;

    const PACK: &str = "name: t\nversion: 1.0.0\nparameters:\n  limit: {type: int, default: 3}\n  mode: {type: string, default: calm}\nprobes:\n  - name: p\n    every: 10s\n    request: {path: /x}\n    rules: [a, b]\n";

    fn pack_files() -> PackFiles {
        PackFiles {
            dir: PathBuf::from("packs/t"),
            manifest: PACK.into(),
            rules: vec![("a.rhai".into(), "import \"util\" as u;\nu::f();".into()), ("b.rhai".into(), "1;".into())],
            modules: vec![("util.rhai".into(), "fn f() { 1 }".into())],
        }
    }

    fn build_with(cfg: &str, packs: Vec<PackFiles>) -> Result<Plan, Diagnostics> {
        let loaded = crate::config::load_str(Path::new("w.yaml"), cfg).unwrap_or_else(|d| panic!("{d}"));
        build(loaded, PackSource::Files(packs), &ScriptEngine::new(&ScriptLimits::default()))
    }

    const TARGETS: &str = "targets:\n  - {name: prod, url: \"http://a:1\", labels: {env: prod}}\n  - {name: stage, url: \"http://b:1\", labels: {env: staging}}\n  - {name: dev, url: \"http://c:1\", labels: {env: staging}}\n";

    #[test]
    fn overrides_tune_parameters_and_rules_per_target() {
        let cfg = format!(
            "{TARGETS}packs:\n  t:\n    params: {{limit: 5}}\n    overrides:\n      - targets: {{labels: {{env: staging}}}}\n        params: {{limit: 50}}\n        disabled_rules: [b]\n      - targets: [dev]\n        params: {{mode: loud}}\n"
        );
        let plan = build_with(&cfg, vec![pack_files()]).unwrap_or_else(|d| panic!("{d}"));
        let p = |t: &str| plan.params_for("t/a", t).unwrap().clone();
        assert_eq!(p("prod")["limit"], 5);
        assert_eq!(p("prod")["mode"], "calm");
        assert_eq!(p("stage")["limit"], 50);
        assert_eq!(p("dev")["limit"], 50);
        assert_eq!(p("dev")["mode"], "loud");
        assert_eq!(p("unknown-target")["limit"], 5);
        assert!(plan.params_for("t/nope", "prod").is_none());
        let rules_of = |t: &str| plan.jobs.iter().find(|j| j.target == t).map(|j| j.rules.clone()).unwrap();
        assert_eq!(rules_of("prod"), vec!["t/a", "t/b"]);
        assert_eq!(rules_of("stage"), vec!["t/a"]);
        assert_eq!(rules_of("dev"), vec!["t/a"]);
    }

    #[test]
    fn events_probes_are_planned_per_target_without_a_polling_job() {
        let pack = PackFiles {
            dir: PathBuf::from("packs/e"),
            manifest: "name: e\nversion: 1.0.0\nprobes:\n  - name: pushed\n    events: {kinds: [deployed]}\n    rules: [a, b]\n"
                .into(),
            rules: vec![("a.rhai".into(), "1;".into()), ("b.rhai".into(), "1;".into())],
            modules: vec![],
        };
        let cfg = format!(
            "{TARGETS}packs:\n  e:\n    overrides:\n      - targets: [dev]\n        disabled_rules: [b]\nprobes:\n  - name: mine\n    events: {{sources: [ci]}}\n    targets: {{labels: {{env: prod}}}}\n    rules: [e/a]\n"
        );
        let plan = build_with(&cfg, vec![pack]).unwrap_or_else(|d| panic!("{d}"));
        assert!(plan.jobs.is_empty(), "events probes do not poll: {:?}", plan.jobs);
        let pushed = plan.events.iter().find(|p| p.probe == "e/pushed").unwrap();
        assert!(pushed.takes.takes("anyone", "deployed") && !pushed.takes.takes("anyone", "other"));
        assert_eq!(pushed.targets["prod"], ["e/a", "e/b"]);
        assert_eq!(pushed.targets["dev"], ["e/a"]);
        assert_eq!(pushed.untargeted.as_deref(), Some(&["e/a".to_string(), "e/b".to_string()][..]));
        let mine = plan.events.iter().find(|p| p.probe == "mine").unwrap();
        assert_eq!(mine.targets.keys().collect::<Vec<_>>(), ["prod"]);
        assert_eq!(mine.untargeted, None, "a probe that selects targets takes no untargeted event");
    }

    #[test]
    fn an_events_probe_with_polling_settings_or_a_probe_with_neither_is_refused() {
        let err = |cfg: &str| match crate::config::load_str(Path::new("w.yaml"), cfg) {
            Ok(_) => panic!("accepted: {cfg}"),
            Err(d) => d.to_string(),
        };
        let e =
            err("probes:\n  - name: x\n    events: {}\n    every: 10s\n    request: {path: /a}\n    rules: [t/a]\n");
        assert!(e.contains("w.yaml:4:12: probe `x`: an `events:` probe takes pushed events and has no `every`"), "{e}");
        assert!(e.contains("probe `x`: an `events:` probe takes pushed events and has no `request`"), "{e}");
        let e = err("probes:\n  - name: y\n    every: 10s\n    rules: [t/a]\n");
        assert!(e.contains("probe `y` needs `request:` (what to poll) or `events:`"), "{e}");
    }

    #[test]
    fn bad_overrides_are_reported_with_positions() {
        let cfg = format!(
            "{TARGETS}packs:\n  t:\n    overrides:\n      - targets: [prdo]\n        params: {{limt: 1, mode: 7}}\n        disabled_rules: [c]\n"
        );
        let err = build_with(&cfg, vec![pack_files()]).unwrap_err().to_string();
        let want = [
            "w.yaml:8:19: unknown target `prdo`, did you mean `prod`?",
            "w.yaml:9:18: pack `t` has no parameter `limt`, did you mean `limit`?",
            "w.yaml:9:33: parameter `mode` of pack `t`: expected a string, found 7",
            "w.yaml:10:26: pack `t` has no rule `c`",
        ];
        assert_eq!(err, want.join("\n"));
    }

    #[test]
    fn packs_with_the_same_name_and_broken_imports_are_reported() {
        let mut broken = pack_files();
        broken.rules[0].1 = "let x = 1;\nimport \"utli\" as u;".into();
        let err = build_with(TARGETS, vec![broken, pack_files()]).unwrap_err().to_string();
        assert_eq!(
            err,
            "packs/t/a.rhai:2:8: rule `t/a`: cannot import `utli`: pack `t` has no module `utli` (`modules/utli.rhai`), did you mean `util`?\npacks/t/pack.yaml:1:7: two packs are named `t`: `packs/t` and `packs/t`; pack names must be unique"
        );
    }

    #[test]
    fn a_pack_probe_polls_only_the_targets_it_selects_within_the_packs_targets() {
        let mut pack = pack_files();
        pack.manifest = "name: t\nversion: 1.0.0\nprobes:\n  - name: p\n    every: 10s\n    targets: {labels: {env: staging}}\n    request: {path: /x}\n    rules: [a]\n".into();
        let plan = build_with(TARGETS, vec![pack.clone()]).unwrap_or_else(|d| panic!("{d}"));
        let polled: Vec<&str> = plan.jobs.iter().map(|j| j.target.as_str()).collect();
        assert_eq!(polled, ["stage", "dev"]);
        let cfg = format!("{TARGETS}packs:\n  t:\n    targets: [prod, dev]\n");
        let plan = build_with(&cfg, vec![pack]).unwrap_or_else(|d| panic!("{d}"));
        let polled: Vec<&str> = plan.jobs.iter().map(|j| j.target.as_str()).collect();
        assert_eq!(polled, ["dev"]);
    }

    #[test]
    fn a_rule_of_a_fan_out_probe_judges_no_other_probe() {
        let mut pack = pack_files();
        pack.manifest = "name: t\nversion: 1.0.0\nprobes:\n  - name: p\n    every: 10s\n    request: {path: /x}\n    rules: [a]\n  - name: q\n    every: 10s\n    for_each: job\n    request: {path: \"/jobs/{jid}\"}\n    rules: [b]\n".into();
        let plan = build_with(TARGETS, vec![pack.clone()]).unwrap_or_else(|d| panic!("{d}"));
        let q = plan.jobs.iter().find(|j| j.probe == "t/q").unwrap();
        assert_eq!(q.for_each.as_ref().map(|f| f.concurrency), Some(4));
        let cfg =
            format!("{TARGETS}probes:\n  - name: mine\n    every: 10s\n    request: {{path: /y}}\n    rules: [t/b]\n");
        let err = build_with(&cfg, vec![pack]).unwrap_err().to_string();
        assert_eq!(
            err,
            "w.yaml:9:12: rule `t/b` judges probe `mine` and `t/q` on the same target; a rule of a `for_each` probe must judge only that probe (copy the rule under another name for the other probe)"
        );
    }

    #[test]
    fn a_packs_probe_polls_only_the_targets_its_manifest_selects() {
        let mut pack = pack_files();
        pack.manifest = "name: t\nversion: 1.0.0\nprobes:\n  - name: p\n    every: 10s\n    targets: {labels: {env: staging}}\n    request: {path: /x}\n    rules: [a]\n".into();
        let plan = build_with(TARGETS, vec![pack.clone()]).unwrap_or_else(|d| panic!("{d}"));
        let polled: Vec<&str> = plan.jobs.iter().map(|j| j.target.as_str()).collect();
        assert_eq!(polled, ["stage", "dev"]);
        let cfg = format!("{TARGETS}packs:\n  t:\n    targets: [dev, prod]\n");
        let plan = build_with(&cfg, vec![pack]).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(plan.jobs.iter().map(|j| j.target.as_str()).collect::<Vec<_>>(), ["dev"]);
    }

    #[test]
    fn the_embedded_flink_pack_still_builds() {
        let cfg = format!("{TARGETS}packs:\n  flink:\n    overrides:\n      - targets: [prod]\n        params: {{unreachable_polls: 9}}\n");
        let plan = build_with(&cfg, vec![crate::pack::embedded_flink_pack()]).unwrap_or_else(|d| panic!("{d}"));
        let rules = crate::pack::EMBEDDED_FLINK_FILES.iter().filter(|(r, _)| !r.contains('/') && r.ends_with(".rhai"));
        assert_eq!(plan.rules.len(), rules.count());
        assert_eq!(plan.params_for("flink/jobmanager-unreachable", "prod").unwrap()["unreachable_polls"], 9);
        assert_eq!(plan.params_for("flink/jobmanager-unreachable", "stage").unwrap()["unreachable_polls"], 3);
    }
}
