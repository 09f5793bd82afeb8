//! `warden replay`: a recording through the current rules on simulated time.

use std::path::Path;
use std::process::ExitCode;

pub fn run(config: &Path, file: &Path) -> anyhow::Result<ExitCode> {
    let (plan, _) = match warden::plan::load_with(config, None, warden::config::LoadOptions { environment: false }) {
        Ok(p) => p,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::from(1));
        }
    };
    let actions = warden::ruletest::replay(&plan, file)?;
    for (t, a) in &actions {
        outln!("{}  {a}", t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    outln!("{} action(s) (follow-up requests are not recorded: rules saw them fail)", actions.len());
    Ok(ExitCode::SUCCESS)
}
