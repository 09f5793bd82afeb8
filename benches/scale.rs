//! Daemon cost at scale: one Warden daemon with the shipped Flink pack's `jobs-overview` probe and its rules polling
//! `every: 5s` (the pack's per-job probes are off unless `WARDEN_SCALE_ALL_PROBES=1`).
//!
//! **Targets (issue 10)**:
//! - 100 targets × 100 jobs (20 polls/s): ≤ 1.5 % of one core on average, ≤ 25 MB peak RSS, and ≤ 0.7 ms of CPU
//!   per poll (HTTP, parse and rules included);
//! - 1,000 targets × 100 jobs (200 polls/s): ≤ 15 % of one core, ≤ 120 MB peak RSS, no skipped polls.
//!
//! The fake JobManagers (100 RUNNING jobs each, 10 of them expected) run in this process; Warden runs as a
//! separate process (the release binary, `warden run`) so that its CPU time and memory are measured alone, from
//! `/proc/<pid>/stat` and `/proc/<pid>/status`. After a warm-up of 15 s (`WARDEN_SCALE_WARMUP`), CPU is averaged
//! over a window of 60 s (`WARDEN_SCALE_SECONDS`). Skipped polls are the `skipped` counts Warden logs (at warn
//! level) during the window. At the end Warden gets SIGTERM and must exit 0 within 35 s. Linux only; everything
//! binds to 127.0.0.1. Run with `cargo bench --bench scale`; `WARDEN_SCALE_TARGETS` chooses the scenarios (default
//! `100,1000`); `WARDEN_SCALE_PACK_DIR` measures the pack in that directory instead of `rules/`;
//! `WARDEN_SCALE_BIN` another `warden` binary.
//!
//! **The reference**: in the 100-target scenario, `benches/reference/python_loop.py` (a persistent Python
//! `requests` + `json` loop doing the pack's checks that matter on a quiet cluster) polls the same fakes at the same
//! interval, in the same window, when `python3` with `requests` is there. Warden's CPU per poll is also given as a
//! ratio to the loop's: the 0.7 ms target was set when that loop took 2.1 ms per poll, so the ratio target
//! is 1/3, a figure that holds when this machine's speed drifts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_flink::{FakeJobManager, FlinkApiVersion};

const JOBS_PER_TARGET: usize = 100;
const EXPECTED_PER_TARGET: usize = 10;
const EVERY_SECS: u64 = 5;
/// The rules of the pack's probes other than `jobs-overview` (switched off unless `WARDEN_SCALE_ALL_PROBES`).
const OTHER_PROBES_RULES: [&str; 9] = [
    "checkpoints-stalled",
    "checkpoints-failing",
    "checkpointing-off",
    "checkpoint-duration",
    "savepoint-freshness",
    "state-size",
    "backpressure",
    "source-lag",
    "cluster-capacity",
];
const EXIT_WITHIN: Duration = Duration::from_secs(35);

/// One scenario's targets: (targets, CPU % of one core, peak RSS MB, CPU ms per poll if checked, skipped polls
/// checked).
struct Targets {
    targets: usize,
    cpu_pct: f64,
    rss_mb: f64,
    cpu_per_poll_ms: Option<f64>,
    no_skipped: bool,
}

fn targets_for(n: usize) -> Targets {
    if n <= 100 {
        Targets { targets: n, cpu_pct: 1.5, rss_mb: 25.0, cpu_per_poll_ms: Some(0.7), no_skipped: false }
    } else {
        Targets { targets: n, cpu_pct: 15.0, rss_mb: 120.0, cpu_per_poll_ms: None, no_skipped: true }
    }
}

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `warden` binary: `WARDEN_SCALE_BIN` if set (to compare two builds), else the one Cargo built for this
/// bench, else `<target>/release/warden` (built first if missing).
fn warden_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WARDEN_SCALE_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_warden").map(PathBuf::from).filter(|p| p.is_file()) {
        return p;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo().join("target"));
    let target = if target.is_absolute() { target } else { repo().join(target) };
    let bin = target.join("release").join("warden");
    if !bin.is_file() {
        eprintln!("scale: {} is missing; running `cargo build --release --bin warden`", bin.display());
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "--release", "--bin", "warden"])
            .current_dir(repo())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok && bin.is_file(), "could not build {}", bin.display());
    }
    bin
}

fn job_name(i: usize) -> String {
    format!("job-{i:03}")
}

fn write_config(dir: &Path, fakes: &[FakeJobManager]) -> PathBuf {
    let q = |p: &Path| serde_json::to_string(p).expect("path as JSON string");
    let expected: Vec<String> = (0..EXPECTED_PER_TARGET).map(job_name).collect();
    let mut y = String::new();
    let _ = writeln!(y, "state_dir: {}", q(&dir.join("state")));
    let pack_dir = std::env::var_os("WARDEN_SCALE_PACK_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("rules"));
    let _ = writeln!(y, "pack_paths: [{}]", q(&pack_dir));
    let _ = writeln!(y, "targets:");
    for (i, f) in fakes.iter().enumerate() {
        let _ = writeln!(y, "  - name: jm-{i:03}\n    url: {}\n    timeout: 5s", f.url());
    }
    let _ = writeln!(y, "packs:\n  flink:\n    every: {EVERY_SECS}s\n    params:");
    let _ = writeln!(y, "      expected_jobs: {}", serde_json::to_string(&expected).expect("names"));
    // The workload the targets are set for: the pack's `jobs-overview` probe and its rules, polled every 5 s. The
    // per-job probes (`for_each: job`: checkpoints, vertices) and `cluster-overview` have intervals of their own
    // (30 s, 1 m); `packs.flink.every` would poll them every 5 s too, 100 requests per target each. Set
    // `WARDEN_SCALE_ALL_PROBES=1` to keep them (then every probe of the pack is polled every 5 s).
    if std::env::var_os("WARDEN_SCALE_ALL_PROBES").is_none_or(|v| v.is_empty()) {
        let _ = writeln!(y, "    disabled_rules: {}", serde_json::to_string(&OTHER_PROBES_RULES).expect("names"));
    }
    let path = dir.join("warden.yaml");
    std::fs::write(&path, y).expect("write warden.yaml");
    path
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; the fields after its closing parenthesis are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Some((utime as f64 / tck, stime as f64 / tck))
}

/// A `/proc/<pid>/status` field in kB (e.g. `VmHWM`, `VmRSS`, `Threads` as a plain number).
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    line[key.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// `(Warden's overview polls, other requests)` the fakes have seen (the Python reference's polls are neither).
fn requests_seen(fakes: &[FakeJobManager]) -> (usize, usize) {
    let mut polls = 0;
    let mut other = 0;
    for f in fakes {
        for (r, query) in f.request_log_with_queries() {
            match (r == "GET /jobs/overview", query.as_deref()) {
                (true, None) => polls += 1,
                (true, Some(PYTHON_QUERY)) => {}
                _ => other += 1,
            }
        }
    }
    (polls, other)
}

/// The query string the Python reference's polls carry.
const PYTHON_QUERY: &str = "by=python";

/// The target for CPU per poll as a ratio to the reference: 0.7 ms when a persistent Python loop took
/// 2.1 ms per poll on this machine (issue 10), measured here against the same loop in the same window, because this
/// machine's speed drifts by up to 2x within an hour.
const PYTHON_RATIO_TARGET: f64 = 0.7 / 2.1;

/// Starts the reference (`benches/reference/python_loop.py`) over the targets of `config` for `window`, or says
/// why not (no `python3` with `requests`).
fn start_python_reference(config: &Path, window: Duration) -> Result<Child, String> {
    let ok = Command::new("python3")
        .args(["-c", "import requests"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Err("no python3 with the `requests` module".into());
    }
    Command::new("python3")
        .arg(repo().join("benches/reference/python_loop.py"))
        .arg(config)
        .arg(window.as_secs_f64().to_string())
        .arg(EVERY_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start python3: {e}"))
}

/// The reference's `(polls, CPU seconds)` from its output line `python-loop polls=<n> cpu=<s>`.
fn python_reference_result(child: Child) -> Option<(u64, f64)> {
    let out = child.wait_with_output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).lines().find(|l| l.starts_with("python-loop"))?.to_string();
    let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
    Some((field("polls=")?.parse().ok()?, field("cpu=")?.parse().ok()?))
}

/// `s` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The polls Warden says it skipped (its warn lines "... skipped runs ... skipped=N") in `log` from byte `from`.
fn skipped_polls(log: &Path, from: usize) -> u64 {
    let s = strip_ansi(
        std::fs::read(log)
            .ok()
            .and_then(|b| b.get(from..).map(|b| String::from_utf8_lossy(b).into_owned()))
            .unwrap_or_default()
            .as_str(),
    );
    s.as_str()
        .lines()
        .filter(|l| l.contains("skipped runs"))
        .map(|l| {
            l.split("skipped=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        })
        .sum()
}

fn stderr_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let s = strip_ansi(&s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs one scenario; returns whether every target was met.
fn scenario(t: &Targets, bin: &Path, warmup: Duration, window: Duration) -> bool {
    let n = t.targets;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
    let fakes: Vec<FakeJobManager> = rt.block_on(async {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let f = FakeJobManager::start(FlinkApiVersion::V2).await.expect("start fake JobManager");
            for j in 0..JOBS_PER_TARGET {
                f.submit(&job_name(j));
            }
            v.push(f);
        }
        v
    });

    let dir = tempfile::Builder::new().prefix("warden-scale-").tempdir().expect("temp dir");
    let config = write_config(dir.path(), &fakes);
    let err_path = dir.path().join("warden.stderr");
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("WARDEN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = child.id();
    println!(
        "scale: warden (pid {pid}, {}) watches {n} targets x {JOBS_PER_TARGET} jobs, every {EVERY_SECS}s, \
         {EXPECTED_PER_TARGET} expected jobs per target; warm-up {}s, window {}s",
        bin.display(),
        warmup.as_secs(),
        window.as_secs()
    );

    std::thread::sleep(warmup);
    if let Ok(Some(s)) = child.try_wait() {
        panic!("warden exited during the warm-up ({s}); its stderr:\n{}", stderr_tail(&err_path));
    }
    let (polls0, other0) = requests_seen(&fakes);
    assert!(polls0 > 0, "no poll reached the fakes during the warm-up; warden's stderr:\n{}", stderr_tail(&err_path));
    let log_from = std::fs::metadata(&err_path).map(|m| m.len() as usize).unwrap_or(0);
    // The reference runs beside Warden, over the same fakes, in the same window (the 100-target scenario).
    let python = t.cpu_per_poll_ms.map(|_| start_python_reference(&config, window));
    let (u0, s0) = cpu_seconds(pid).expect("read /proc/<pid>/stat");
    let t0 = Instant::now();
    let mut rss_max_kb = 0;
    let mut rss_sum_kb = 0;
    let mut samples = 0;
    while t0.elapsed() < window {
        std::thread::sleep(Duration::from_secs(1).min(window.saturating_sub(t0.elapsed())));
        if let Some(r) = status_field(pid, "VmRSS") {
            rss_max_kb = rss_max_kb.max(r);
            rss_sum_kb += r;
            samples += 1;
        }
    }
    let (u1, s1) = cpu_seconds(pid).expect("read /proc/<pid>/stat");
    let elapsed = t0.elapsed().as_secs_f64();
    let (polls1, other1) = requests_seen(&fakes);
    let hwm_kb = status_field(pid, "VmHWM").expect("read VmHWM");
    // What the resident memory is made of at the end: the process's own (heap, stacks) and pages mapped from files
    // (mostly the binary's code, shared with the page cache).
    let (anon_kb, file_kb) = (status_field(pid, "RssAnon").unwrap_or(0), status_field(pid, "RssFile").unwrap_or(0));
    let threads = status_field(pid, "Threads").unwrap_or(0);
    let skipped = skipped_polls(&err_path, log_from);

    let cpu_s = (u1 - u0) + (s1 - s0);
    let cpu_pct = cpu_s / elapsed * 100.0;
    let polls = (polls1 - polls0).max(1);
    let polls_per_s = polls as f64 / elapsed;
    let hwm_mb = hwm_kb as f64 / 1024.0;
    let per_poll_ms = cpu_s * 1e3 / polls as f64;
    println!("  cpu: user {:.2}s + system {:.2}s over {elapsed:.1}s; {threads} threads", u1 - u0, s1 - s0);
    println!(
        "  polls seen by the fakes: {polls_per_s:.1}/s (expected {:.1}/s), other requests: {}; total polls {polls1}",
        n as f64 / EVERY_SECS as f64,
        other1 - other0
    );
    if samples > 0 {
        println!(
            "  RSS during the window: mean {:.1} MB, max {:.1} MB",
            rss_sum_kb as f64 / samples as f64 / 1024.0,
            rss_max_kb as f64 / 1024.0
        );
    }
    println!(
        "  RSS at the end: {:.1} MB anonymous (heap, stacks) + {:.1} MB mapped from files (the binary's code, libraries)",
        anon_kb as f64 / 1024.0,
        file_kb as f64 / 1024.0
    );
    let mut ok = true;
    let mut verdict = |label: String, pass: bool| {
        ok &= pass;
        println!("scale: {n} targets: {label}: {}", self::pass(pass));
    };
    match t.cpu_per_poll_ms {
        Some(max) => verdict(format!("cpu per poll {per_poll_ms:.2} ms (target <= {max} ms)"), per_poll_ms <= max),
        None => println!("  cpu per poll: {per_poll_ms:.2} ms"),
    }
    match python {
        Some(Ok(child)) => match python_reference_result(child) {
            Some((py_polls, py_cpu)) if py_polls > 0 => {
                let py_ms = py_cpu * 1e3 / py_polls as f64;
                let ratio = per_poll_ms / py_ms;
                verdict(
                    format!(
                        "cpu per poll / the Python loop's in the same window: {per_poll_ms:.2} / {py_ms:.2} ms \
                         ({py_polls} polls) = {ratio:.2} (target <= {PYTHON_RATIO_TARGET:.2}: 0.7 ms against 2.1 ms)"
                    ),
                    ratio <= PYTHON_RATIO_TARGET,
                );
            }
            _ => println!("  the Python reference gave no figure"),
        },
        Some(Err(why)) => println!("  the Python reference did not run: {why}"),
        None => {}
    }
    verdict(format!("cpu {cpu_pct:.2} % of one core (target <= {} %)", t.cpu_pct), cpu_pct <= t.cpu_pct);
    verdict(format!("peak RSS {hwm_mb:.1} MB (target <= {} MB)", t.rss_mb), hwm_mb <= t.rss_mb);
    if t.no_skipped {
        verdict(format!("skipped polls {skipped} (target 0)"), skipped == 0);
    } else {
        println!("  skipped polls: {skipped}");
    }

    // SAFETY: signalling the child this bench started, by its pid.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let stopped = Instant::now();
    match wait_exit(&mut child, EXIT_WITHIN) {
        Some(s) => verdict(
            format!(
                "SIGTERM -> exit {} after {:.1}s (target: 0 within {}s)",
                s.code().map(|c| c.to_string()).unwrap_or_else(|| format!("{s}")),
                stopped.elapsed().as_secs_f64(),
                EXIT_WITHIN.as_secs(),
            ),
            s.success(),
        ),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            verdict(format!("SIGTERM -> still running after {}s, killed", EXIT_WITHIN.as_secs()), false);
        }
    }
    let tail = stderr_tail(&err_path);
    if !tail.trim().is_empty() {
        println!("  warden's stderr (last lines):\n{tail}");
    }
    rt.block_on(async {
        for f in &fakes {
            f.shutdown();
        }
    });
    ok
}

fn main() {
    let warmup = Duration::from_secs(env_secs("WARDEN_SCALE_WARMUP", 15));
    let window = Duration::from_secs(env_secs("WARDEN_SCALE_SECONDS", 60).max(1));
    let scenarios: Vec<usize> = std::env::var("WARDEN_SCALE_TARGETS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![100, 1_000]);
    let bin = warden_binary();
    let results: Vec<(usize, bool)> =
        scenarios.iter().map(|&n| (n, scenario(&targets_for(n), &bin, warmup, window))).collect();
    for (n, ok) in results {
        println!("scale: summary: {n} targets: {}", pass(ok));
    }
}
