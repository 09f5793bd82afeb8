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
    match start(cmd, vars, default_dir) {
        Ok(started) => started.wait(cancel).await,
        Err(r) => r,
    }
}

/// A command that was started: [`Started::identity`] says which process it is, [`Started::wait`] sees it to its
/// end. Dropping it kills the process (not its group: call `wait`).
#[derive(Debug)]
pub struct Started {
    child: tokio::process::Child,
    pid: Option<i32>,
    out: tokio::task::JoinHandle<String>,
    err: tokio::task::JoinHandle<String>,
    argv: Vec<String>,
    timeout: std::time::Duration,
    since: tokio::time::Instant,
}

/// Starts `cmd` in its own process group, stdin closed, output captured (bounded). `Err` is the result of a
/// command that could not start (its arguments or the spawn failed).
pub fn start(
    cmd: &CommandConfig,
    vars: &BTreeMap<String, String>,
    default_dir: &Path,
) -> Result<Started, CommandResult> {
    let argv = match argv(cmd, vars) {
        Ok(a) => a,
        Err(e) => return Err(CommandResult { ending: Ending::BadArguments(e), output: String::new(), argv: vec![] }),
    };
    let Some(program) = argv.first() else {
        let e = "the command has no program (empty `argv`)".to_string();
        return Err(CommandResult { ending: Ending::BadArguments(e), output: String::new(), argv });
    };
    let mut c = tokio::process::Command::new(program);
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
            return Err(CommandResult {
                ending: Ending::SpawnFailed(format!("{program}: {e}")),
                output: String::new(),
                argv,
            })
        }
    };
    let since = tokio::time::Instant::now();
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let max = cmd.max_output.as_usize();
    let out = tokio::spawn(capture(child.stdout.take(), max));
    let err = tokio::spawn(capture(child.stderr.take(), max));
    Ok(Started { child, pid, out, err, argv, timeout: cmd.timeout, since })
}

impl Started {
    /// Which process it is (its group has the same id): what Warden records so that, if Warden is killed while it
    /// runs, the next Warden can tell whether it still runs. `None` if it has already been reaped.
    pub fn identity(&self) -> Option<ProcessIdentity> {
        self.pid.map(ProcessIdentity::of)
    }

    /// Waits for the command to end; kills its whole process group on timeout or when `cancel` fires.
    pub async fn wait(mut self, cancel: CancellationToken) -> CommandResult {
        let pid = self.pid;
        let kill_group = || {
            if let Some(pid) = pid {
                // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
        };
        let child = &mut self.child;
        let ending = tokio::select! {
            status = child.wait() => Ending::Exited(status.ok().and_then(|s| s.code())),
            _ = tokio::time::sleep_until(self.since + self.timeout) => {
                kill_group();
                let _ = child.wait().await;
                Ending::TimedOut
            }
            _ = cancel.cancelled() => { kill_group(); let _ = child.wait().await; Ending::Interrupted }
        };
        // Grandchildren may hold the pipes open; make sure the group is gone before collecting output.
        if !matches!(ending, Ending::Exited(_)) {
            kill_group();
        }
        // Both pipes within one bound (a grandchild in another group may keep them open).
        let bound = std::time::Duration::from_secs(2);
        let (stdout, stderr) =
            tokio::join!(tokio::time::timeout(bound, self.out), tokio::time::timeout(bound, self.err));
        let stdout = stdout.ok().and_then(|r| r.ok()).unwrap_or_default();
        let stderr = stderr.ok().and_then(|r| r.ok()).unwrap_or_default();
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
        CommandResult { ending, output, argv: self.argv }
    }
}

/// Which process a command is, recorded when it starts (in its journal entry's details, as `process`) so that a
/// Warden started after the one that ran it was killed can tell whether it is still running, and not mistake
/// another process that got the same pid for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessIdentity {
    /// Its process id.
    pub pid: i32,
    /// Its process group (the command leads its own, so the same number): what a kill signals.
    pub pgid: i32,
    /// When it started, in clock ticks since boot (Linux: field 22 of `/proc/<pid>/stat`); `None` where unknown.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    /// The boot it started in (Linux: `/proc/sys/kernel/random/boot_id`); after a reboot no pid is the same process.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The host it runs on.
    pub host: String,
}

/// Whether a recorded process still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The same process (same pid, start time and boot) is still running.
    Running,
    /// It is gone: no such process, a zombie, another process with the same pid, or the host rebooted since.
    Gone,
    /// Warden cannot tell from here (why).
    Unknown(String),
}

impl ProcessIdentity {
    /// The identity of process `pid` (a command Warden just started), read now.
    pub fn of(pid: i32) -> Self {
        ProcessIdentity {
            pid,
            pgid: pid,
            start_ticks: proc_stat(pid).map(|s| s.start_ticks),
            boot_id: boot_id(),
            host: crate::store::lock::hostname(),
        }
    }

    /// Whether this process still runs.
    pub fn liveness(&self) -> Liveness {
        if self.host != crate::store::lock::hostname() {
            return Liveness::Unknown(format!(
                "it ran on host `{}`, so Warden cannot tell whether it still runs",
                self.host
            ));
        }
        if self.pid <= 0 {
            return Liveness::Gone;
        }
        if let (Some(then), Some(now)) = (&self.boot_id, boot_id()) {
            if *then != now {
                return Liveness::Gone;
            }
        }
        // SAFETY: signal 0 only checks whether the process exists; nothing is delivered.
        let rc = unsafe { libc::kill(self.pid, 0) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
            return Liveness::Gone;
        }
        match (proc_stat(self.pid), self.start_ticks) {
            (Some(stat), _) if stat.state == 'Z' || stat.state == 'X' => Liveness::Gone,
            (Some(stat), Some(then)) if stat.start_ticks != then => Liveness::Gone,
            (Some(_), Some(_)) => Liveness::Running,
            // The process vanished between the two looks.
            (None, _) if cfg!(target_os = "linux") => Liveness::Gone,
            // No start time to compare (not Linux): a process with this pid exists, most likely the same one.
            _ => Liveness::Running,
        }
    }
}

/// What Warden reads of `/proc/<pid>/stat`.
struct ProcStat {
    state: char,
    start_ticks: u64,
}

/// `/proc/<pid>/stat`: its state and start time. `None` where there is no such file (no such process, not Linux).
fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses; the fields after its last `)` are plain.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 of the file (state) is the first here, so field n is at n - 3; the start time is field 22.
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// This boot's id (Linux); `None` elsewhere.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string())
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
