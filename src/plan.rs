//! Load → validate → compile. Turns a checked configuration and its packs into an immutable [`Plan`]: compiled
//! rules, their parameters, and one job per probe × target. Every problem in any file is reported at once; a plan
//! is only built when there are none.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::config::yaml::{join_index, join_key};
use crate::config::{LoadedConfig, ProbeConfig, TargetConfig, TargetSelector};
use crate::diag::{closest, Diagnostic, Diagnostics};
use crate::fetch::HttpRequest;
use crate::pack::{Pack, PackFiles, ParamType};
use crate::schedule::Schedule;
use crate::script::{CompiledRule, ScriptEngine};

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
}

/// A rule ready to run, with its pack's parameters.
#[derive(Debug, Clone)]
pub struct PlannedRule {
    /// The compiled rule.
    pub compiled: CompiledRule,
    /// Its pack's parameters (defaults merged with `warden.yaml`).
    pub params: BTreeMap<String, serde_json::Value>,
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
    let mut diags: Vec<Diagnostic> = vec![];
    let cfg = &loaded.config;
    let doc = &loaded.doc;
    let packs: Vec<Pack> = match source {
        PackSource::FromConfig => crate::pack::discover(&cfg.pack_paths, &loaded.base_dir, &mut diags, &doc.file),
        PackSource::Files(files) => files.into_iter().filter_map(|f| crate::pack::load(f, &mut diags)).collect(),
    };

    // Settings for packs that do not exist.
    let pack_names: Vec<&str> = packs.iter().map(Pack::name).collect();
    for name in cfg.packs.keys() {
        if !pack_names.contains(&name.as_str()) {
            let hint =
                closest(name, pack_names.iter().copied()).map(|c| format!(", did you mean `{c}`?")).unwrap_or_default();
            diags.push(doc.key_diag(&join_key("packs", name), format!("no pack named `{name}` was loaded{hint}")));
        }
    }

    let mut rules: BTreeMap<String, Arc<PlannedRule>> = BTreeMap::new();
    let mut jobs = vec![];
    for pack in &packs {
        let settings = cfg.packs.get(pack.name()).cloned().unwrap_or_default();
        let spath = join_key("packs", pack.name());
        // Parameters: unknown names, types, required ones.
        let mut params = BTreeMap::new();
        for (k, v) in &settings.params {
            match pack.manifest.parameters.get(k) {
                None => {
                    let hint = closest(k, pack.manifest.parameters.keys().map(String::as_str))
                        .map(|c| format!(", did you mean `{c}`?"))
                        .unwrap_or_default();
                    diags.push(doc.key_diag(
                        &join_key(&join_key(&spath, "params"), k),
                        format!("pack `{}` has no parameter `{k}`{hint}", pack.name()),
                    ));
                }
                Some(spec) => {
                    let at = join_key(&join_key(&spath, "params"), k);
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
        for (j, d) in settings.disabled_rules.iter().enumerate() {
            if !pack.rules.contains_key(d) {
                diags.push(doc.diag(
                    &join_index(&join_key(&spath, "disabled_rules"), j),
                    format!("pack `{}` has no rule `{d}`", pack.name()),
                ));
            }
        }
        // Compile every rule, reporting all syntax errors.
        for r in pack.rules.values() {
            match engine.compile(&r.name, pack.name(), r.file.clone(), &r.source) {
                Ok(c) => {
                    rules.insert(r.name.clone(), Arc::new(PlannedRule { compiled: c, params: params.clone() }));
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
            let names: Vec<String> = p
                .rules
                .iter()
                .filter(|r| !settings.disabled_rules.contains(r))
                .map(|r| format!("{}/{r}", pack.name()))
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut probe = p.clone();
            probe.name = format!("{}/{}", pack.name(), p.name);
            probe.rules = names;
            if let Some(every) = settings.every {
                probe.every = Some(every);
                probe.cron = None;
            }
            expand(&probe, settings.targets.as_ref(), &cfg.targets, &mut jobs);
        }
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
        expand(p, p.targets.as_ref(), &cfg.targets, &mut jobs);
    }

    if !diags.is_empty() {
        let mut d = Diagnostics(diags);
        d.sort();
        return Err(d);
    }
    let packs =
        packs.iter().map(|p| (p.name().to_string(), p.manifest.version.clone(), p.dir.display().to_string())).collect();
    Ok(Plan { loaded, rules, jobs, packs })
}

fn expand(p: &ProbeConfig, sel: Option<&TargetSelector>, targets: &[TargetConfig], jobs: &mut Vec<ProbeJob>) {
    let schedule = match (p.every, &p.cron) {
        (Some(d), _) => Schedule::Every(d),
        (None, Some(c)) => match Schedule::cron(c) {
            Ok(s) => s,
            Err(_) => return, // reported by the config check
        },
        (None, None) => return,
    };
    let method =
        reqwest::Method::from_bytes(p.request.method.to_ascii_uppercase().as_bytes()).unwrap_or(reqwest::Method::GET);
    for t in targets.iter().filter(|t| sel.is_none_or(|s| s.matches(t))) {
        jobs.push(ProbeJob {
            probe: p.name.clone(),
            target: t.name.clone(),
            schedule: schedule.clone(),
            request: HttpRequest {
                method: method.clone(),
                path: p.request.path.clone(),
                headers: p.request.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                body: p.request.body.clone(),
                max_body: p.max_body.as_usize(),
            },
            rules: p.rules.clone(),
        });
    }
}

/// Loads `warden.yaml` at `path` and builds the plan: what `warden check` and `warden run` do first.
pub fn load(
    path: &Path,
    engine_limits: Option<&crate::config::ScriptLimits>,
) -> Result<(Plan, ScriptEngine), Diagnostics> {
    let loaded = crate::config::load(path)?;
    let engine = ScriptEngine::new(engine_limits.unwrap_or(&loaded.config.scripts));
    let plan = build(loaded, PackSource::FromConfig, &engine)?;
    Ok((plan, engine))
}
