//! `warden eval`: one rule, once, on a saved answer.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

pub fn run(config: &Path, rule: &str, input: &Path, params: &[String]) -> anyhow::Result<ExitCode> {
    let (plan, engine) = match warden::plan::load(config, None) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(1));
        }
    };
    let Some(r) = plan.rules.get(rule) else {
        let known: Vec<&str> = plan.rules.keys().map(String::as_str).collect();
        anyhow::bail!("no rule `{rule}` (known: {})", known.join(", "));
    };
    let mut p = r.params.clone();
    for kv in params {
        let (k, v) = kv.split_once('=').context("--param takes NAME=JSON")?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        p.insert(k.to_string(), v);
    }
    let body: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(input).with_context(|| format!("cannot read `{}`", input.display()))?,
    )
    .with_context(|| format!("`{}` is not JSON", input.display()))?;
    let target = warden::script::TargetInfo { name: "eval".into(), url: String::new(), labels: Default::default() };
    match warden::ruletest::eval_once(&r.compiled, &p, &target, body, &engine) {
        Ok(ev) => {
            match ev.verdict {
                warden::script::Verdict::Skipped(why) => println!("skipped: {why}"),
                warden::script::Verdict::Requests(reqs) if reqs.is_empty() => {
                    println!("no requests: all is well")
                }
                warden::script::Verdict::Requests(reqs) => {
                    for q in reqs {
                        println!("{}", serde_json::to_string(&q)?);
                    }
                }
            }
            println!("state: {}", ev.state);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::from(1))
        }
    }
}
