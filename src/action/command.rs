//! The `run` action: a named command as an argument vector. Placeholders are substituted inside each argument
//! separately — outside values never become shell syntax. The command runs in its own process group, with
//! stdin closed, bounded output capture, and a timeout (or shutdown) that kills the whole group.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::config::CommandConfig;

/// The placeholder names in one argument (`{job}` → `job`); `{{` and `}}` stand for literal braces.
pub fn placeholders(arg: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        Some(c) => {
                            return Err(format!(
                                "invalid character {c:?} in placeholder `{{{name}` of argument {arg:?}"
                            ))
                        }
                        None => return Err(format!("unclosed placeholder `{{{name}` in argument {arg:?}")),
                    }
                }
                if name.is_empty() {
                    return Err(format!(
                        "empty placeholder `{{}}` in argument {arg:?} (write `{{{{}}}}` for literal braces)"
                    ));
                }
                out.push(name);
            }
            '}' => return Err(format!("unmatched `}}` in argument {arg:?} (write `}}}}` for a literal brace)")),
            _ => {}
        }
    }
    Ok(out)
}

/// Substitutes placeholders in one argument. The result is exactly one argument, whatever the values contain.
pub fn substitute(arg: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|c| *c != '}').collect();
                match vars.get(&name) {
                    Some(v) => out.push_str(v),
                    None => {
                        let known: Vec<&str> = vars.keys().map(String::as_str).collect();
                        return Err(format!("placeholder `{{{name}}}` has no value (known: {})", known.join(", ")));
                    }
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// It exited with this code (`None` when killed by a signal).
    Exited(Option<i32>),
    /// It ran past its timeout and its process group was killed.
    TimedOut,
    /// Warden shut down and its grace period ended; the process group was killed.
    Interrupted,
    /// It could not be started.
    SpawnFailed(String),
    /// Its arguments could not be built (a placeholder without a value).
    BadArguments(String),
}

/// The result of running a command.
#[derive(Debug, Clone)]
pub struct CommandResult {
    /// How it ended.
    pub ending: Ending,
    /// Captured stdout and stderr (bounded).
    pub output: String,
    /// The argument vector that ran.
    pub argv: Vec<String>,
}

impl CommandResult {
    /// The journal's outcome word for this result.
    pub fn outcome(&self, timeout: std::time::Duration) -> String {
        match &self.ending {
            Ending::Exited(Some(0)) => "ok".into(),
            Ending::Exited(Some(c)) => format!("failed: exit code {c}"),
            Ending::Exited(None) => "failed: killed by a signal".into(),
            Ending::TimedOut => format!("failed: timeout after {}", humantime::format_duration(timeout)),
            Ending::Interrupted => "interrupted: warden shut down".into(),
            Ending::SpawnFailed(e) => format!("failed: cannot start: {e}"),
            Ending::BadArguments(e) => format!("failed: {e}"),
        }
    }
}

/// Builds the argument vector of `cmd` with `vars`.
pub fn argv(cmd: &CommandConfig, vars: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    cmd.argv.iter().map(|a| substitute(a, vars)).collect()
}

/// Runs `cmd`. Stops it (the whole process group) on timeout or when `cancel` fires.
pub async fn run(
    cmd: &CommandConfig,
    vars: &BTreeMap<String, String>,
    default_dir: &Path,
    cancel: CancellationToken,
) -> CommandResult {
    let argv = match argv(cmd, vars) {
        Ok(a) => a,
        Err(e) => return CommandResult { ending: Ending::BadArguments(e), output: String::new(), argv: vec![] },
    };
    let mut c = tokio::process::Command::new(&argv[0]);
    c.args(&argv[1..])
        .current_dir(cmd.workdir.as_deref().unwrap_or(default_dir))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    for (k, v) in &cmd.env {
        c.env(k, v.expose());
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return CommandResult {
                ending: Ending::SpawnFailed(format!("{}: {e}", argv[0])),
                output: String::new(),
                argv,
            }
        }
    };
    let pid = child.id().map(|p| p as i32);
    let max = cmd.max_output.as_usize();
    let out = tokio::spawn(capture(child.stdout.take(), max));
    let err = tokio::spawn(capture(child.stderr.take(), max));
    let kill_group = || {
        if let Some(pid) = pid {
            // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    };
    let ending = tokio::select! {
        status = child.wait() => Ending::Exited(status.ok().and_then(|s| s.code())),
        _ = tokio::time::sleep(cmd.timeout) => { kill_group(); let _ = child.wait().await; Ending::TimedOut }
        _ = cancel.cancelled() => { kill_group(); let _ = child.wait().await; Ending::Interrupted }
    };
    // Grandchildren may hold the pipes open; make sure the group is gone before collecting output.
    if !matches!(ending, Ending::Exited(_)) {
        kill_group();
    }
    let stdout = tokio::time::timeout(std::time::Duration::from_secs(2), out)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let stderr = tokio::time::timeout(std::time::Duration::from_secs(2), err)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let mut output = String::new();
    if !stdout.is_empty() {
        output.push_str(&stdout);
    }
    if !stderr.is_empty() {
        if !output.is_empty() && !output.ends_with('\n') {
            output.push('\n');
        }
        output.push_str("[stderr] ");
        output.push_str(&stderr);
    }
    CommandResult { ending, output, argv }
}

async fn capture<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, max: usize) -> String {
    let Some(mut r) = r else { return String::new() };
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let mut s = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        s.push_str(&format!("\n[… {dropped} more bytes not kept]"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cmd(argv: &[&str]) -> CommandConfig {
        CommandConfig {
            placeholders: vec![],
            argv: argv.iter().map(|s| s.to_string()).collect(),
            workdir: None,
            env: Default::default(),
            timeout: Duration::from_secs(10),
            max_output: crate::config::units::ByteSize(1024),
        }
    }

    fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn placeholder_syntax() {
        assert_eq!(placeholders("--job={job}-{jid}").unwrap(), vec!["job", "jid"]);
        assert_eq!(placeholders("{{literal}}").unwrap(), Vec::<String>::new());
        assert!(placeholders("{job").unwrap_err().contains("unclosed"));
        assert!(placeholders("{}").unwrap_err().contains("empty placeholder"));
        assert!(placeholders("{a b}").unwrap_err().contains("invalid character"));
        assert_eq!(substitute("{{x}}={x}", &vars(&[("x", "1")])).unwrap(), "{x}=1");
        assert!(substitute("{nope}", &vars(&[("x", "1")])).unwrap_err().contains("`{nope}` has no value"));
    }

    #[tokio::test]
    async fn hostile_job_names_stay_one_literal_argument() {
        let evil = "clicks'; rm -rf ~; echo \"$(id)\" `x` && true";
        let dir = tempfile::tempdir().unwrap();
        // printf prints each argument on its own line: one line means one argument.
        let c = cmd(&["printf", "%s\\n", "{job}"]);
        let r = run(&c, &vars(&[("job", evil)]), dir.path(), CancellationToken::new()).await;
        assert_eq!(r.ending, Ending::Exited(Some(0)));
        assert_eq!(r.output, format!("{evil}\n"));
        // And through an explicit shell, as "$1", it stays data.
        let c = cmd(&["sh", "-c", "printf '%s|' \"$1\"", "sh", "{job}"]);
        let r = run(&c, &vars(&[("job", evil)]), dir.path(), CancellationToken::new()).await;
        assert_eq!(r.output, format!("{evil}|"));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let mut c = cmd(&["sh", "-c", "(sleep 2; touch \"$1\") & sleep 30", "sh", marker.to_str().unwrap()]);
        c.timeout = Duration::from_millis(300);
        let r = run(&c, &BTreeMap::new(), dir.path(), CancellationToken::new()).await;
        assert_eq!(r.ending, Ending::TimedOut);
        assert!(r.outcome(c.timeout).starts_with("failed: timeout after 300ms"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }

    #[tokio::test]
    async fn output_is_bounded_and_exit_codes_reported() {
        let dir = tempfile::tempdir().unwrap();
        let c = cmd(&["sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x; echo oops >&2; exit 3"]);
        let r = run(&c, &BTreeMap::new(), dir.path(), CancellationToken::new()).await;
        assert_eq!(r.ending, Ending::Exited(Some(3)));
        assert!(r.output.contains("[… 3976 more bytes not kept]"), "{}", r.output);
        assert!(r.output.ends_with("[stderr] oops\n"));
        let r = run(&cmd(&["/no/such/program"]), &BTreeMap::new(), dir.path(), CancellationToken::new()).await;
        assert!(matches!(r.ending, Ending::SpawnFailed(_)));
    }
}
