//! A real PostgreSQL server for the tests, started by the test run itself: `initdb` into a temporary directory,
//! `postgres` listening on 127.0.0.1 (a free port) and a Unix socket in that directory, stopped when the [`Pg`] is
//! dropped (or, for [`Pg::shared`], when the test process exits).
//!
//! The binaries are looked up on `PATH`, then in `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package, which
//! `.ci/run` installs). PostgreSQL refuses to run as root: as root, the server runs as `nobody` (through
//! `runuser`), in a directory `nobody` owns. Without PostgreSQL, [`Pg::start`] prints a SKIP line and returns
//! `None` — except under `CI=true`, where a missing PostgreSQL fails the test instead, so CI runs them for real.
//!
//! Used by the integration tests (`tests/integration/store.rs`) and, through a `#[path]` module, by the store's
//! unit tests, so the store's test-suite runs on both backends.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A running PostgreSQL server.
pub struct Pg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server's tools as this user (when the tests run as root).
    user: Option<&'static str>,
    /// The server offers TLS with `server.crt` and `server.key` in its data directory.
    tls: bool,
}

static NEXT_DB: AtomicU32 = AtomicU32::new(1);

impl Pg {
    /// Starts a server of its own, or `None` (after printing why) when PostgreSQL is not installed. Under
    /// `CI=true`, a missing PostgreSQL panics instead; an installed one that does not start always does.
    pub fn start() -> Option<Pg> {
        Self::start_with(None)
    }

    /// Starts a server of its own that offers TLS with this certificate chain and key (PEM), as
    /// [`Pg::start`] otherwise.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> Option<Pg> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Option<Pg> {
        let Some(bin) = find_bin() else {
            let why = "`initdb` is neither on PATH nor in /usr/lib/postgresql/*/bin";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("PostgreSQL is needed for this test on CI: {why}");
            }
            eprintln!("SKIP: no PostgreSQL for this test: {why}");
            return None;
        };
        // Installed but not starting is a failure, not a skip. The port is picked before the server binds it:
        // should another process take it meanwhile, try another.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(bin.clone(), tls) {
                Ok(pg) => return Some(pg),
                Err(why) => last = why,
            }
        }
        panic!("PostgreSQL is installed ({}) but does not start: {last}", bin.display())
    }

    /// One server for the whole test process, stopped when it exits; `None` as for [`Pg::start`].
    pub fn shared() -> Option<&'static Pg> {
        static SHARED: OnceLock<Option<Pg>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let pg = Pg::start_with(None)?;
                SHARED_DATA.set((pg.bin.clone(), pg.data(), pg.user)).ok();
                // SAFETY: registers a plain `extern "C"` function with no arguments, as atexit expects.
                unsafe { libc::atexit(stop_shared) };
                Some(pg)
            })
            .as_ref()
    }

    fn try_start(bin: PathBuf, tls: Option<(&str, &str)>) -> Result<Pg, String> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let user = root.then_some("nobody");
        let dir = tempfile::Builder::new().prefix("warden-pg").tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        if let Some(u) = user {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
            let ok =
                Command::new("chown").args([u, &data.display().to_string()]).status().map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err(format!("cannot give {} to {u}", data.display()));
            }
        }
        let pg = Pg { dir, bin, port: free_port()?, user, tls: tls.is_some() };
        pg.run(
            "initdb",
            &["-D", &pg.data_s(), "-U", "warden", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
        )?;
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            for (name, text) in [("server.crt", cert), ("server.key", key)] {
                let path = pg.data().join(name);
                std::fs::write(&path, text).map_err(|e| e.to_string())?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
                if let Some(u) = user {
                    Command::new("chown").args([u, &path.display().to_string()]).status().map_err(|e| e.to_string())?;
                }
            }
        }
        if let Err(e) = pg.pg_ctl("start") {
            let log = std::fs::read_to_string(pg.data().join("server.log")).unwrap_or_default();
            return Err(format!("{e}\n{log}"));
        }
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn data_s(&self) -> String {
        self.data().display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = command(&self.bin, self.user, tool, args).output().map_err(|e| format!("{tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{tool} {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn pg_ctl(&self, what: &str) -> Result<(), String> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200{}",
            self.port,
            self.data_s(),
            if self.tls { " -c ssl=on" } else { "" }
        );
        let log = self.dir.path().join("data/server.log").display().to_string();
        self.run("pg_ctl", &["-D", &self.data_s(), "-l", &log, "-o", &opts, "-w", "-m", "fast", what])
    }

    /// The URL of a new, empty database on this server.
    pub fn database(&self) -> String {
        let name = format!("w{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let admin = format!("postgres://warden@127.0.0.1:{}/postgres", self.port);
        let sql = format!("CREATE DATABASE {name}");
        // The blocking client runs a runtime of its own: not on a tokio thread.
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls).expect("connect as the admin");
            c.batch_execute(&sql).expect("create a database");
        })
        .join()
        .expect("database created");
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://warden@127.0.0.1:{}/{name}", self.port)
    }

    /// Runs `sql` on database `url` with a connection of its own (not the store's).
    pub fn exec(&self, url: &str, sql: &str) {
        let (url, sql) = (url.to_string(), sql.to_string());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            c.batch_execute(&sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        })
        .join()
        .expect("sql ran");
    }

    /// Restarts the server (`pg_ctl restart -m fast`: open connections are cut, open transactions rolled back).
    pub fn restart(&self) {
        self.pg_ctl("restart").expect("restart PostgreSQL");
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ =
            command(&self.bin, self.user, "pg_ctl", &["-D", &self.data_s(), "-m", "immediate", "-w", "stop"]).output();
    }
}

static SHARED_DATA: OnceLock<(PathBuf, PathBuf, Option<&'static str>)> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some((bin, data, user)) = SHARED_DATA.get() {
        let _ = command(bin, *user, "pg_ctl", &["-D", &data.display().to_string(), "-m", "immediate", "-w", "stop"])
            .output();
        // The static's temporary directory is never dropped: remove it here.
        if let Some(dir) = data.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn command(bin: &Path, user: Option<&str>, tool: &str, args: &[&str]) -> Command {
    let exe = bin.join(tool);
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    c.args(args).current_dir("/").stdin(std::process::Stdio::null());
    c
}

/// The directory of `initdb`, `pg_ctl` and `postgres`.
fn find_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file());
    if on_path.is_some() {
        return on_path;
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d): &(u32, PathBuf)| d.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}
