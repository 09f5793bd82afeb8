//! `warden init`: a commented starter `warden.yaml`; with `--url`, its `expected_jobs` are the jobs the JobManager
//! runs now (asked through the same client as the daemon). The result is checked like `warden check` does.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use warden::fetch::{ClientPool, TargetClient};
use warden::flink::client::FlinkClient;

use super::Format;

/// Why `warden init` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The configuration file is already there.
    #[error("`{}` already exists; not overwriting it (remove it, or use --config to write another file)", .0.display())]
    Exists(PathBuf),
    /// `--url` or `--name` cannot be used as a target.
    #[error("--url `{url}` / --name `{name}`: {message}")]
    BadTarget {
        /// The URL given.
        url: String,
        /// The target name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The JobManager did not list its jobs.
    #[error("cannot list the jobs of the JobManager at `{url}`: {message} (is it a Flink JobManager's REST address, such as http://jobmanager:8081?)")]
    Jobs {
        /// The URL given.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The file could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
}

/// Asks the JobManager at `url` for its jobs and returns the names of the RUNNING ones, sorted, each once.
pub async fn running_jobs(name: &str, url: &str) -> Result<Vec<String>, InitError> {
    let bad = |message: String| InitError::BadTarget { url: url.to_string(), name: name.to_string(), message };
    let yaml = serde_json::json!({ "name": name, "url": url });
    let cfg: warden::config::TargetConfig = serde_json::from_value(yaml).map_err(|e| bad(e.to_string()))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(bad("the URL must start with http:// or https://".into()));
    }
    let client = TargetClient::new(&cfg, &mut ClientPool::default()).map_err(|e| bad(e.message))?;
    let jobs = FlinkClient::new(&client)
        .jobs()
        .await
        .map_err(|e| InitError::Jobs { url: url.to_string(), message: e.to_string() })?;
    let mut names: Vec<String> = jobs.into_iter().filter(|j| j.state == "RUNNING").map(|j| j.name).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The starter configuration: `expected_jobs` as given (`None`: not asked; an empty list is written with a hint).
pub fn starter(name: &str, url: &str, jobs: Option<&[String]>) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let (jobs_line, jobs_note) = match jobs {
        Some(js) if !js.is_empty() => (
            format!("[{}]", js.iter().map(|j| q(j)).collect::<Vec<_>>().join(", ")),
            format!("the jobs RUNNING on {url} when `warden init` asked"),
        ),
        Some(_) => ("[]".into(), format!("{url} ran no job when `warden init` asked: list your jobs' names here")),
        None => ("[]".into(), "list your jobs' names here (`warden init --url URL` fills it in)".into()),
    };
    format!(
        r#"# Warden configuration, written by `warden init`. Every key is in "Configuration reference" (Warden's README).
#   warden check   validate this file (exit 0: ok; every problem as file:line:col)
#   warden run     watch and act; saving this file (or SIGHUP) reloads it, and a bad edit keeps the last good one

# The journal, rule state and alert log (relative to this file).
state_dir: warden-state

# Where rule packs come from. `builtin:flink` is the Flink pack built into warden; a directory pack named `flink`
# (e.g. `warden pack export flink plugins/flink`, then edit it) replaces it. Your own packs go under plugins/.
# pack_paths: ["builtin:flink", "rules", "plugins/*"]

# The JobManagers to watch. Probe paths are appended to `url`, so YARN proxy URLs work.
targets:
  - name: {name}
    url: {url}
    # auth: {{bearer: "${{FLINK_TOKEN}}"}}     # or {{basic: {{username: warden, password: "file:/run/secrets/pw"}}}}
    # timeout: 10s

# Commands rules may run: argument vectors, placeholders ({{job}}, {{jid}}, {{target_url}}, …) substituted per argument.
commands: {{}}
#  relaunch:
#    argv: ["/opt/flink/bin/flink", "run", "--detached", "/opt/jobs/{{job}}.jar"]

packs:
  flink:
    params:
      # Jobs that must always have a running instance: {jobs_note}.
      expected_jobs: {jobs_line}
      # The command under `commands:` that relaunches a job ("": alert only).
      relaunch_command: ""
"#,
        name = q(name),
        url = q(url),
    )
}

/// Runs `warden init`: writes `config` (refusing to overwrite it), then checks it like `warden check`.
pub async fn run(config: &Path, url: Option<&str>, name: &str) -> Result<ExitCode, InitError> {
    if config.exists() {
        return Err(InitError::Exists(config.to_path_buf()));
    }
    let jobs = match url {
        Some(u) => Some(running_jobs(name, u).await?),
        None => None,
    };
    let text = starter(name, url.unwrap_or("http://localhost:8081"), jobs.as_deref());
    if let Some(d) = config.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|source| InitError::Write { path: d.to_path_buf(), source })?;
    }
    // create_new: a file that appeared since the check above is not overwritten either.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(config)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(source) = written {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(InitError::Exists(config.to_path_buf()));
        }
        return Err(InitError::Write { path: config.to_path_buf(), source });
    }
    match &jobs {
        Some(js) => outln!(
            "wrote {} with {} expected job(s) from {}: {}",
            config.display(),
            js.len(),
            url.unwrap_or(""),
            if js.is_empty() { "(none running)".to_string() } else { js.join(", ") }
        ),
        None => outln!("wrote {}", config.display()),
    }
    Ok(super::check::run(config, Format::Text, warden::config::LoadOptions { environment: true }))
}
