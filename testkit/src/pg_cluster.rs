//! A private, throwaway PostgreSQL 15 cluster per test, for fault tests that stop, kill, restart
//! and hang the database under traffic without ever touching the machine's shared PostgreSQL on
//! 5432. Each cluster lives in its own temporary directory (data, Unix socket, server log),
//! listens on a free 127.0.0.1 port, trusts every local connection, and is removed on drop.
//!
//! PostgreSQL refuses to run as root and tests run as root, so `initdb` and `pg_ctl` run as the
//! `postgres` user through `runuser -u postgres --`, and the directory is handed to that user.
//! Every wait is bounded: a fault test must fail, not hang, when the database misbehaves.

use std::fs;
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use diesel::{Connection as _, RunQueryDsl as _, pg::PgConnection};

/// Where Debian/Ubuntu's `postgresql-15` package puts the server binaries (override with
/// `CPIS_PG_BIN`).
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Name prefix of every cluster directory; followed by the owning test process id so that a
/// later run can sweep clusters whose test process was killed before `Drop` could run.
const DIR_PREFIX: &str = "cpis-pg-";

/// `pg_ctl -t`: how long pg_ctl itself waits for the server to start or stop.
const PG_CTL_WAIT_SECS: u64 = 30;

/// Backstop on any helper process, a little longer than pg_ctl's own wait so pg_ctl reports
/// first (with a useful message) and we only kill it when something is badly stuck.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(PG_CTL_WAIT_SECS + 10);

/// How long `start`/`start_again` wait for the server to accept connections after pg_ctl says
/// it started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A private PostgreSQL cluster: started by [`PgCluster::start`], stopped and removed on drop.
///
/// All methods take `&self` so a test can share the cluster (e.g. in an `Arc`) between the
/// traffic it generates and the code that injects faults.
pub struct PgCluster {
    /// The TCP port; fixed once the first start succeeded, reused by every restart.
    port: AtomicU16,
    /// `<dir>/data`, owned by `postgres`.
    data_dir: PathBuf,
    /// `<dir>/postgres.log`: the server's stderr, quoted in panic messages.
    log_file: PathBuf,
    /// Set by `pause`, cleared by `resume`; `Drop` resumes first so the stop signal is handled.
    paused: AtomicBool,
    /// Declared last: dropped (and the directory removed) after `Drop::drop` stopped the server.
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port())
            .field("dir", &self.dir.path())
            .field("paused", &self.paused.load(Ordering::SeqCst))
            .finish()
    }
}

impl PgCluster {
    /// Creates and starts a fresh cluster and waits until it accepts connections.
    ///
    /// Returns `None` (with an `eprintln` "SKIPPED: ...") when the PostgreSQL binaries (or the
    /// `postgres` user, when running as root) are absent and `CI` is not set; panics in CI
    /// (`CI=true`) so the suite cannot silently skip. Panics when the binaries are present but
    /// the cluster cannot be created or started (with the server log in the message).
    pub fn start() -> Option<PgCluster> {
        if let Err(missing) = prerequisites() {
            assert!(
                !in_ci(),
                "private PostgreSQL cluster unavailable in CI: {missing} (CI must install postgresql-15)"
            );
            eprintln!("SKIPPED: private PostgreSQL cluster unavailable: {missing}");
            return None;
        }
        sweep_stale_clusters();

        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("create the cluster's temporary directory");
        if running_as_root() {
            // The server runs as postgres and must own its data, socket and log directory.
            let ran = run_bounded(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()),
                COMMAND_TIMEOUT,
            );
            assert!(
                ran.ok(),
                "chown the cluster directory to postgres: {}",
                ran.output
            );
        }
        let cluster = PgCluster {
            port: AtomicU16::new(0),
            data_dir: dir.path().join("data"),
            log_file: dir.path().join("postgres.log"),
            paused: AtomicBool::new(false),
            dir,
        };

        // --no-sync only skips initdb's final flush (the cluster is thrown away; the OS does not
        // crash under a test); the running server keeps fsync on, as in production.
        let ran = run_bounded(
            cluster
                .pg_tool("initdb")
                .arg("-D")
                .arg(&cluster.data_dir)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ]),
            Duration::from_secs(120),
        );
        assert!(ran.ok(), "initdb failed: {}", ran.output);

        // Learn a free port by binding :0 and releasing it; another process may grab it before
        // the server binds, so retry with a new port a couple of times.
        let mut last_failure = String::new();
        for _attempt in 0..3 {
            cluster.port.store(free_port(), Ordering::SeqCst);
            let ran = cluster.pg_ctl_start();
            if ran.ok() {
                cluster.wait_until_accepting();
                return Some(cluster);
            }
            last_failure = ran.output;
            // A half-started server must not hold the data directory for the next attempt.
            cluster.pg_ctl_stop("immediate");
        }
        panic!(
            "pg_ctl start failed three times: {last_failure}\n--- server log ---\n{}",
            cluster.log_tail()
        );
    }

    /// The URL of the `postgres` database as the `postgres` superuser (trust auth, no password):
    /// `postgres://postgres@127.0.0.1:PORT/postgres`. Stays valid across stop/restart.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Creates database `name` (lowercase letters, digits and `_`) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "database name {name:?} must be lowercase letters, digits and _"
        );
        let mut conn = PgConnection::establish(&self.url())
            .expect("connect to the private cluster to create a database");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .expect("CREATE DATABASE on the private cluster");
        self.url_for(name)
    }

    /// The TCP port the cluster listens on (the same after every restart).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The postmaster's pid while the server runs (from `postmaster.pid`, checked against
    /// `/proc`), `None` when it is stopped.
    pub fn pid(&self) -> Option<u32> {
        postmaster_pid(&self.data_dir)
    }

    /// The last lines of the server log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Clean shutdown (`pg_ctl stop -m fast`: sessions are terminated, a checkpoint is written),
    /// waiting at most 30 s. A paused cluster is resumed first, or it could not act on the
    /// signal. Does nothing when already stopped.
    pub fn stop(&self) {
        self.shutdown("fast");
    }

    /// Crash-like shutdown (`pg_ctl stop -m immediate`: no checkpoint, the next start runs
    /// crash recovery), waiting at most 30 s. Does nothing when already stopped.
    pub fn kill(&self) {
        self.shutdown("immediate");
    }

    /// `stop` then `start_again`: same port, same data directory, same URL.
    pub fn restart(&self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped (or killed) cluster again on the same port and data directory and waits
    /// until it accepts connections. Resumes a paused cluster; does nothing more when it already
    /// runs.
    pub fn start_again(&self) {
        self.resume();
        if self.pid().is_none() {
            // The port was ours a moment ago; retry briefly in case a dying postmaster or a
            // racing process still holds it.
            let mut ran = self.pg_ctl_start();
            for _retry in 0..3 {
                if ran.ok() {
                    break;
                }
                self.pg_ctl_stop("immediate");
                std::thread::sleep(Duration::from_millis(500));
                ran = self.pg_ctl_start();
            }
            assert!(
                ran.ok(),
                "pg_ctl start (again) on port {} failed: {}\n--- server log ---\n{}",
                self.port(),
                ran.output,
                self.log_tail()
            );
        }
        self.wait_until_accepting();
    }

    /// Hangs the database: SIGSTOP to the postmaster, then to all its children (backends,
    /// checkpointer, WAL writer, ...). The listening socket stays open, so clients connect at
    /// the TCP level but never get an answer; queries in flight never return. Panics when the
    /// cluster is not running.
    pub fn pause(&self) {
        let pid = self
            .pid()
            .expect("pause: the private cluster is not running");
        // Postmaster first, so it cannot fork a child we would miss.
        signal("STOP", &[pid]);
        let children = children_of(pid);
        signal("STOP", &children);
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Undoes [`pause`](Self::pause): SIGCONT to the postmaster and its children. Harmless when
    /// not paused.
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            let mut pids = children_of(pid);
            pids.push(pid);
            signal("CONT", &pids);
        }
        self.paused.store(false, Ordering::SeqCst);
    }

    /// True when the server answers `pg_isready` within its minimum timeout (~2 s: libpq rounds
    /// a 1 s connect timeout up to 2 s), i.e. false when stopped, starting, or paused.
    pub fn is_accepting(&self) -> bool {
        let port = self.port().to_string();
        run_bounded(
            Command::new(bin_dir().join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .args(["-d", "postgres", "-t", "1"])
                .current_dir(self.dir.path()),
            Duration::from_secs(10),
        )
        .ok()
    }

    fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port())
    }

    /// A PostgreSQL binary run as the `postgres` user when we are root (it refuses root), from
    /// inside the cluster directory (postgres may not be allowed into the test's cwd).
    fn pg_tool(&self, tool: &str) -> Command {
        let path = bin_dir().join(tool);
        let mut cmd = if running_as_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.current_dir(self.dir.path());
        cmd
    }

    fn pg_ctl_start(&self) -> Ran {
        // pg_ctl hands -o to /bin/sh, hence the quoted socket directory.
        let options = format!(
            "-p {} -k '{}' -c listen_addresses=127.0.0.1",
            self.port(),
            self.dir.path().display()
        );
        run_bounded(
            self.pg_tool("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "-o", &options])
                .arg("start"),
            COMMAND_TIMEOUT,
        )
    }

    fn pg_ctl_stop(&self, mode: &str) -> Ran {
        run_bounded(
            self.pg_tool("pg_ctl")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", mode, "-w", "-t", &PG_CTL_WAIT_SECS.to_string()])
                .arg("stop"),
            COMMAND_TIMEOUT,
        )
    }

    fn shutdown(&self, mode: &str) {
        // A stopped postmaster keeps the shutdown signal pending and pg_ctl would time out.
        self.resume();
        if self.pid().is_none() {
            return;
        }
        let ran = self.pg_ctl_stop(mode);
        assert!(
            ran.ok() || self.pid().is_none(),
            "pg_ctl stop -m {mode} failed: {}\n--- server log ---\n{}",
            ran.output,
            self.log_tail()
        );
    }

    fn wait_until_accepting(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.is_accepting() {
            assert!(
                Instant::now() < deadline,
                "private cluster on port {} not accepting connections after {READY_TIMEOUT:?}\n--- server log ---\n{}",
                self.port(),
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PgCluster {
    /// Resumes a paused server, stops it immediately, and (through the `TempDir` field) removes
    /// the directory. Never panics: it may run while a failed test unwinds.
    fn drop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let mut pids = children_of(pid);
        pids.push(pid);
        signal("CONT", &pids);
        if !self.pg_ctl_stop("immediate").ok() && self.pid().is_some() {
            // pg_ctl could not stop it; do not leak a server whose directory is about to vanish.
            signal("KILL", &pids);
        }
    }
}

/// A finished (or abandoned) helper process: exit code (`None` when it timed out, was killed
/// by a signal or could not be spawned) and its combined stdout/stderr.
struct Ran {
    code: Option<i32>,
    output: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` with stdout and stderr captured in an anonymous temporary file (a pipe could fill
/// up while we poll), killing it after `timeout`. Never panics.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Ran {
    let capture = tempfile::tempfile().ok();
    let stdio = |file: &Option<fs::File>| {
        file.as_ref()
            .and_then(|f| f.try_clone().ok())
            .map_or_else(Stdio::null, Stdio::from)
    };
    cmd.stdin(Stdio::null())
        .stdout(stdio(&capture))
        .stderr(stdio(&capture));
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(error) => {
            return Ran {
                code: None,
                output: format!("cannot run {cmd:?}: {error}"),
            };
        }
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut output = String::new();
    if let Some(mut file) = capture {
        let _ = file.rewind();
        let _ = file.read_to_string(&mut output);
    }
    if status.is_none() {
        output.push_str(&format!("\n(killed after {timeout:?}: {cmd:?})"));
    }
    Ran {
        code: status.and_then(|s| s.code()),
        output,
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn bin_dir() -> PathBuf {
    std::env::var_os("CPIS_PG_BIN").map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from)
}

/// Effective uid 0, read from `/proc/self/status` (the crate forbids the `unsafe` of `geteuid`).
fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Why a private cluster cannot be started here, if it cannot.
fn prerequisites() -> Result<(), String> {
    let bin = bin_dir();
    for tool in ["initdb", "pg_ctl", "postgres", "pg_isready"] {
        if !bin.join(tool).is_file() {
            return Err(format!("{} is missing", bin.join(tool).display()));
        }
    }
    if running_as_root() {
        // PostgreSQL refuses to run as root: we need runuser and the postgres account.
        let ran = run_bounded(
            Command::new("runuser").args(["-u", "postgres", "--", "true"]),
            Duration::from_secs(10),
        );
        if !ran.ok() {
            return Err(format!(
                "cannot run as the postgres user: {}",
                ran.output.trim()
            ));
        }
    }
    Ok(())
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// The postmaster of `data_dir`, if it runs: the pid on the first line of `postmaster.pid`,
/// only if that process is alive and was started on this data directory (a stale pid file's
/// pid may have been reused, possibly by the machine's shared PostgreSQL).
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    let (state, _ppid) = stat(pid)?;
    if state == 'Z' {
        return None;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let data_dir = data_dir.to_string_lossy();
    cmdline
        .split(|&b| b == 0)
        .any(|arg| String::from_utf8_lossy(arg) == data_dir)
        .then_some(pid)
}

/// State and parent pid of `pid` from `/proc/<pid>/stat`. The command name in parentheses may
/// itself contain spaces and parentheses, so parse after the last `)`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Direct children of `parent` (every server process is a direct child of the postmaster).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Sends `SIGname` to `pids` with kill(1) (no `unsafe` libc call). Never panics; a process
/// that exited meanwhile is not an error worth reporting.
fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = run_bounded(
        Command::new("kill")
            .args(["-s", name])
            .args(pids.iter().map(u32::to_string)),
        Duration::from_secs(10),
    );
}

/// Removes clusters left behind by test processes that no longer exist (killed by a timeout
/// before `Drop` ran): SIGKILL their postmaster and children, delete the directory.
fn sweep_stale_clusters() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|name| name.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new("/proc").join(owner.to_string()).exists() {
            continue; // its test process still runs (and owns it)
        }
        let path = entry.path();
        if let Some(pid) = postmaster_pid(&path.join("data")) {
            let mut pids = children_of(pid);
            pids.push(pid);
            signal("KILL", &pids);
        }
        let _ = fs::remove_dir_all(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select_one(url: &str) -> Result<(), String> {
        #[derive(diesel::QueryableByName)]
        struct One {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            one: i32,
        }
        let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
        let rows: Vec<One> = diesel::sql_query("SELECT 1 AS one")
            .load(&mut conn)
            .map_err(|e| e.to_string())?;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].one, 1);
        Ok(())
    }

    /// libpq rounds a 1 s connect timeout up to 2 s; without it a paused server hangs forever.
    fn quick(url: &str) -> String {
        format!("{url}?connect_timeout=1")
    }

    #[test]
    fn stop_start_again_pause_resume() {
        let Some(pg) = PgCluster::start() else { return };
        let url = pg.url();
        assert_ne!(pg.port(), 5432, "must never be the shared PostgreSQL");
        select_one(&url).expect("a fresh cluster answers SELECT 1");
        let db = pg.create_database("cpis_fault");
        select_one(&db).expect("the created database answers SELECT 1");

        pg.stop();
        assert!(pg.pid().is_none());
        assert!(!pg.is_accepting());
        assert!(
            select_one(&quick(&url)).is_err(),
            "a stopped cluster refuses connections"
        );
        pg.stop(); // idempotent

        pg.start_again();
        assert_eq!(pg.url(), url, "same port after start_again");
        select_one(&url).expect("works again after start_again");
        select_one(&db).expect("the created database survived the restart");

        pg.pause();
        let started = Instant::now();
        assert!(
            select_one(&quick(&url)).is_err(),
            "a paused cluster does not answer"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "connect_timeout bounded the attempt"
        );
        pg.resume();
        select_one(&url).expect("works again after resume");

        pg.kill();
        assert!(pg.pid().is_none());
        pg.restart(); // stop on a stopped cluster is a no-op; crash recovery on start
        select_one(&db).expect("works after kill + restart");
    }

    #[test]
    fn drop_of_a_paused_cluster_stops_it_and_removes_the_directory() {
        let Some(pg) = PgCluster::start() else { return };
        let dir = pg.dir.path().to_path_buf();
        let pid = pg.pid().expect("running");
        pg.pause();
        drop(pg);
        assert!(!dir.exists(), "{} removed", dir.display());
        assert!(
            stat(pid).is_none_or(|(state, _)| state == 'Z'),
            "postmaster {pid} gone"
        );
    }
}
