//! Daemon cost at scale.
//!
//! **Targets: ≤ 5 % of one core on average and ≤ 50 MB peak RSS** for one Warden daemon watching 100 targets ×
//! 100 jobs each with the shipped Flink pack polling `every: 5s` (20 polls/s).
//!
//! 100 fake JobManagers (100 RUNNING jobs each) run in this process; Warden runs as a separate process (the release
//! binary, `warden run`) so that its CPU time and memory are measured alone, from `/proc/<pid>/stat` and
//! `/proc/<pid>/status`. After a warm-up of 15 s (`WARDEN_SCALE_WARMUP`), CPU is averaged over a window of 60 s
//! (`WARDEN_SCALE_SECONDS`). At the end Warden gets SIGTERM and must exit 0 within 35 s. Linux only; everything
//! binds to 127.0.0.1. Run with `cargo bench --bench scale`; `WARDEN_SCALE_PACK_DIR` measures the pack in that
//! directory instead of `rules/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_flink::{FakeJobManager, FlinkApiVersion};

const TARGETS: usize = 100;
const JOBS_PER_TARGET: usize = 100;
const EXPECTED_PER_TARGET: usize = 10;
const EVERY_SECS: u64 = 5;
const CPU_TARGET_PCT: f64 = 5.0;
const RSS_TARGET_MB: f64 = 50.0;
const EXIT_WITHIN: Duration = Duration::from_secs(35);

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The release `warden` binary: the one Cargo built for this bench, else `<target>/release/warden` (built first if
/// missing).
fn warden_binary() -> PathBuf {
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

/// `(overview polls, other requests)` the fakes have seen.
fn requests_seen(fakes: &[FakeJobManager]) -> (usize, usize) {
    let mut polls = 0;
    let mut other = 0;
    for f in fakes {
        for r in f.request_log() {
            if r == "GET /jobs/overview" {
                polls += 1;
            } else {
                other += 1;
            }
        }
    }
    (polls, other)
}

fn stderr_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
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

fn main() {
    let warmup = Duration::from_secs(env_secs("WARDEN_SCALE_WARMUP", 15));
    let window = Duration::from_secs(env_secs("WARDEN_SCALE_SECONDS", 60).max(1));
    let bin = warden_binary();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio runtime");
    let fakes: Vec<FakeJobManager> = rt.block_on(async {
        let mut v = Vec::with_capacity(TARGETS);
        for _ in 0..TARGETS {
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
    let mut child = Command::new(&bin)
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
        "scale: warden (pid {pid}, {}) watches {TARGETS} targets x {JOBS_PER_TARGET} jobs, every {EVERY_SECS}s, \
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
    let threads = status_field(pid, "Threads").unwrap_or(0);

    let cpu_pct = ((u1 - u0) + (s1 - s0)) / elapsed * 100.0;
    let polls_per_s = (polls1 - polls0) as f64 / elapsed;
    let hwm_mb = hwm_kb as f64 / 1024.0;
    println!("  cpu: user {:.2}s + system {:.2}s over {elapsed:.1}s; {threads} threads", u1 - u0, s1 - s0);
    println!(
        "  polls seen by the fakes: {polls_per_s:.1}/s (expected {:.1}/s), other requests: {}; total polls {polls1}",
        TARGETS as f64 / EVERY_SECS as f64,
        other1 - other0
    );
    if samples > 0 {
        println!(
            "  RSS during the window: mean {:.1} MB, max {:.1} MB",
            rss_sum_kb as f64 / samples as f64 / 1024.0,
            rss_max_kb as f64 / 1024.0
        );
    }
    if polls1 > 0 {
        println!("  cpu per poll: {:.2} ms", ((u1 - u0) + (s1 - s0)) * 1e3 / (polls1 - polls0).max(1) as f64);
    }
    println!("scale: cpu {cpu_pct:.1} % of one core (target <= 5 %): {}", pass(cpu_pct <= CPU_TARGET_PCT));
    println!("scale: peak RSS {hwm_mb:.1} MB (target <= 50 MB): {}", pass(hwm_mb <= RSS_TARGET_MB));

    // SAFETY: signalling the child this bench started, by its pid.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    let stopped = Instant::now();
    match wait_exit(&mut child, EXIT_WITHIN) {
        Some(s) => println!(
            "scale: SIGTERM -> exit {} after {:.1}s (target: 0 within {}s): {}",
            s.code().map(|c| c.to_string()).unwrap_or_else(|| format!("{s}")),
            stopped.elapsed().as_secs_f64(),
            EXIT_WITHIN.as_secs(),
            pass(s.success())
        ),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            println!("scale: SIGTERM -> still running after {}s, killed: FAIL", EXIT_WITHIN.as_secs());
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
}
