//! `warden eval`: one rule, once, on a saved answer.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub fn run(config: &Path, rule: &str, input: &Path, params: &[String]) -> anyhow::Result<ExitCode> {
    let mut loaded = match warden::config::load_with(config, warden::config::LoadOptions { environment: false }) {
        Ok(l) => l,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(1));
        }
    };
    // `--param` values go where `warden.yaml` would put them, so they are type-checked against the pack's
    // `pack.yaml` like any other (a value that is not JSON is taken as a string, and must then be one).
    let pack = rule.split_once('/').map(|(p, _)| p).unwrap_or(rule).to_string();
    for kv in params {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!("warden: --param `{kv}`: expected NAME=VALUE (VALUE as JSON, e.g. expected_jobs='[\"clicks\"]')");
            return Ok(ExitCode::from(2));
        };
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        loaded.config.packs.entry(pack.clone()).or_default().params.insert(k.to_string(), v);
    }
    let engine = warden::script::ScriptEngine::new(&loaded.config.scripts);
    let plan = match warden::plan::build(loaded, warden::plan::PackSource::FromConfig, &engine) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            if !params.is_empty() {
                eprintln!("(the configuration with the --param values applied)");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let Some(r) = plan.rules.get(rule) else {
        let known: Vec<&str> = plan.rules.keys().map(String::as_str).collect();
        anyhow::bail!("no rule `{rule}` (known: {})", known.join(", "));
    };
    let p = r.params.clone();
    let body: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(input).with_context(|| format!("cannot read `{}`", input.display()))?,
    )
    .with_context(|| format!("`{}` is not JSON", input.display()))?;
    let target = warden::script::TargetInfo { name: "eval".into(), url: String::new(), labels: Default::default() };
    match warden::ruletest::eval_once(&r.compiled, &p, &target, body, &engine) {
        Ok(ev) => {
            match ev.verdict {
                warden::script::Verdict::Skipped(why) => outln!("skipped: {why}"),
                warden::script::Verdict::Requests(reqs) if reqs.is_empty() => {
                    outln!("no requests: all is well")
                }
                warden::script::Verdict::Requests(reqs) => {
                    for q in reqs {
                        outln!("{}", serde_json::to_string(&q)?);
                    }
                }
            }
            outln!("state: {}", ev.state);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
