//! `warden check`: validate the configuration, packs and rules.

use std::path::Path;
use std::process::ExitCode;

use super::Format;

pub fn run(config: &Path, format: Format, opts: warden::config::LoadOptions) -> ExitCode {
    let result = warden::plan::load_with(config, None, opts);
    match (format, result) {
        (Format::Text, Ok((p, _))) => {
            outln!(
                "{}: ok ({} targets, {} packs, {} rules, {} probe jobs)",
                config.display(),
                p.loaded.config.targets.len(),
                p.packs.len(),
                p.rules.len(),
                p.jobs.len()
            );
            ExitCode::SUCCESS
        }
        (Format::Text, Err(d)) => {
            outln!("{d}");
            eprintln!("{} problem(s)", d.len());
            ExitCode::from(1)
        }
        (Format::Json, r) => {
            let (ok, problems) = match &r {
                Ok(_) => (true, vec![]),
                Err(d) => (false, d.0.clone()),
            };
            outln!("{}", serde_json::json!({"ok": ok, "problems": problems}));
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
