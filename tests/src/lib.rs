//! Test harness for sluice's black-box integration tests.
//!
//! This crate owns the lifecycle of a real `sluice` broker process as seen
//! from a test: locating the binary (`SLUICE_BIN`, else
//! `target/release/sluice`, else `target/debug/sluice`), starting it with
//! `sluice serve --listen 127.0.0.1:0` in a private temporary data directory,
//! waiting for its `sluice ready listen=...` line on stdout, and stopping it
//! by PID: SIGTERM with a deadline (asserting exit code 0), SIGKILL, restart
//! on the same data directory, and a `Drop` guard that never leaves a broker
//! running, even when a test panics.
//!
//! The broker's stderr (its logs) and the rest of its stdout are written to
//! files inside the temporary directory; panics raised by the harness include
//! the tail of those logs. The Kafka-client-side helpers live next to the
//! tests in `tests/tests/it/`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a broker may take to print its ready line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM in [`Broker::stop`].
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the `Drop` guard waits after SIGTERM before it sends SIGKILL.
const DROP_TERM_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for a SIGKILLed process to be reaped.
const KILL_REAP_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of the wait loops.
const POLL_STEP: Duration = Duration::from_millis(20);

/// Path of the `sluice` binary the tests run.
///
/// `SLUICE_BIN` wins; otherwise `target/release/sluice` relative to the
/// workspace root (this crate's parent), falling back to
/// `target/debug/sluice`. A `CARGO_TARGET_DIR` is honoured when set.
pub fn sluice_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests crate has a parent directory").to_path_buf();
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if Path::new(&t).is_absolute() => PathBuf::from(t),
        Some(t) => root.join(t),
        None => root.join("target"),
    };
    let release = target.join("release").join("sluice");
    if release.exists() {
        return release;
    }
    let debug = target.join("debug").join("sluice");
    if debug.exists() {
        return debug;
    }
    panic!(
        "sluice binary not found: set SLUICE_BIN or run `cargo build --release -p sluice` \
         (looked for {} and {})",
        release.display(),
        debug.display()
    );
}

/// A running (or stopped) `sluice` broker owned by one test.
///
/// Dropping it stops the process (SIGTERM, then SIGKILL after a grace
/// period) and removes the data directory.
pub struct Broker {
    child: Option<Child>,
    pid: i32,
    port: u16,
    /// Port to ask for on the next start (0: any free port).
    listen_port: u16,
    cores: usize,
    extra_args: Vec<String>,
    /// Extra environment variables of the process (fault hooks); see [`Broker::set_env`].
    env: Vec<(String, String)>,
    ready_line: String,
    /// Number of times the process has been started (1 after `start`).
    starts: u32,
    /// Holds the data dir and the logs; removed on drop.
    dir: TempDir,
}

impl Broker {
    /// Starts a broker with `--cores cores` in a fresh temporary directory.
    pub fn start(cores: usize) -> Broker {
        let dir = tempfile::Builder::new().prefix("sluice-it-").tempdir().expect("create temp dir");
        Broker::start_with(dir, cores, &[])
    }

    /// Starts a broker whose data dir is `dir/data`, with extra command-line
    /// arguments appended after the standard ones.
    pub fn start_with(dir: TempDir, cores: usize, extra_args: &[&str]) -> Broker {
        Broker::start_with_env(dir, cores, extra_args, &[])
    }

    /// Like [`start_with`](Broker::start_with), with extra environment
    /// variables for the process (kept for restarts until [`set_env`](Broker::set_env)).
    /// A broker with extra variables never dumps core (a fault test aborts it).
    pub fn start_with_env(dir: TempDir, cores: usize, extra_args: &[&str], env: &[(&str, &str)]) -> Broker {
        let mut b = Broker {
            child: None,
            pid: 0,
            port: 0,
            listen_port: 0,
            cores,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ready_line: String::new(),
            starts: 0,
            dir,
        };
        b.spawn();
        b
    }

    /// Replaces the extra environment variables used by the next start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    /// Port the broker listens on (loopback).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, suitable for `bootstrap.servers`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// PID of the current broker process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The `--cores` value.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The broker's data directory (stable across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The ready line the broker printed on its latest start.
    pub fn ready_line(&self) -> &str {
        &self.ready_line
    }

    /// Whether the process is still alive (not yet exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn stderr_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("stderr.{start}.log"))
    }

    fn stdout_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("stdout.{start}.log"))
    }

    /// The last `max_bytes` of the broker's stderr and stdout logs of every
    /// start so far, for panic messages.
    pub fn log_tail(&self, max_bytes: usize) -> String {
        let mut out = String::new();
        for start in 1..=self.starts {
            for (name, p) in [("stdout", self.stdout_path(start)), ("stderr", self.stderr_path(start))] {
                let text = fs::read(&p).unwrap_or_default();
                let from = text.len().saturating_sub(max_bytes);
                out.push_str(&format!(
                    "\n----- broker start #{start} {name} ({} bytes, last {}) -----\n",
                    text.len(),
                    text.len() - from
                ));
                out.push_str(&String::from_utf8_lossy(&text[from..]));
            }
        }
        out
    }

    fn spawn(&mut self) {
        self.spawn_within(START_TIMEOUT, false)
    }

    fn spawn_within(&mut self, start_timeout: Duration, diagnose: bool) {
        assert!(self.child.is_none(), "broker already running");
        let bin = sluice_bin();
        let data_dir = self.data_dir();
        fs::create_dir_all(&data_dir).expect("create data dir");
        self.starts += 1;
        let start = self.starts;
        let stderr = File::create(self.stderr_path(start)).expect("create stderr log");
        let mut cmd = Command::new(&bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.listen_port))
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--cores")
            .arg(self.cores.to_string())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        cmd.env("NO_COLOR", "1");
        if !self.env.is_empty() {
            cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
            unsafe {
                cmd.pre_exec(|| {
                    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::setrlimit(libc::RLIMIT_CORE, &none);
                    Ok(())
                });
            }
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.pid = child.id() as i32;
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);

        // A reader thread forwards the first line over a channel and copies
        // all stdout into a log file until the pipe closes (process exit).
        let (tx, rx) = mpsc::channel::<String>();
        let log_path = self.stdout_path(start);
        thread::Builder::new()
            .name(format!("sluice-stdout-{}", self.pid))
            .spawn(move || {
                let mut log = OpenOptions::new().create(true).append(true).open(&log_path).ok();
                let mut reader = BufReader::new(stdout);
                let mut line = String::new();
                let mut tx = Some(tx);
                loop {
                    line.clear();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if let Some(f) = log.as_mut() {
                                let _ = f.write_all(line.as_bytes());
                            }
                            if line.starts_with("sluice ready") {
                                if let Some(tx) = tx.take() {
                                    let _ = tx.send(line.trim_end().to_string());
                                }
                            }
                        }
                    }
                }
            })
            .expect("spawn stdout reader thread");

        let deadline = Instant::now() + start_timeout;
        let line = loop {
            match rx.recv_timeout(POLL_STEP * 5) {
                Ok(line) => break line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                        self.child = None;
                        panic!("broker exited with {status} before printing its ready line{}", self.log_tail(8192));
                    }
                    if Instant::now() >= deadline {
                        let tail = self.log_tail(8192);
                        let threads = if diagnose { thread_states(self.pid) } else { String::new() };
                        self.kill();
                        panic!("broker not ready within {start_timeout:?}{threads}{tail}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    panic!(
                        "broker closed stdout before printing its ready line (exit {status:?}){}",
                        self.log_tail(8192)
                    );
                }
            }
        };
        self.port = parse_ready_line(&line, self.cores, &data_dir)
            .unwrap_or_else(|e| panic!("bad ready line {line:?}: {e}{}", self.log_tail(4096)));
        self.ready_line = line;
    }

    /// Waits up to `timeout` for the child to exit; returns its status, or
    /// `None` if it is still running (or there is no child).
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        let max_iters = (timeout.as_millis() / POLL_STEP.as_millis()) as u64 + 2;
        for _ in 0..max_iters {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL_STEP);
        }
        None
    }

    fn signal(&self, sig: libc::c_int) {
        if self.pid > 0 {
            // SAFETY: plain syscall on a PID we spawned and have not reaped
            // yet (`child` is still `Some`), so it cannot have been reused.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    /// Graceful stop: SIGTERM, wait up to [`STOP_TIMEOUT`], and assert that
    /// the broker exited on its own with code 0. A broker that does not exit
    /// in time is SIGKILLed and the call panics.
    pub fn stop(&mut self) {
        assert!(self.child.is_some(), "stop(): broker is not running");
        self.signal(libc::SIGTERM);
        match self.wait_exit(STOP_TIMEOUT) {
            Some(status) => assert!(
                status.code() == Some(0),
                "broker exited with {status} after SIGTERM, expected exit code 0{}",
                self.log_tail(8192)
            ),
            None => {
                self.kill();
                panic!("broker did not exit within {STOP_TIMEOUT:?} after SIGTERM (SIGKILLed){}", self.log_tail(8192));
            }
        }
    }

    /// Sends SIGTERM and returns the exit status if the broker exits within
    /// `timeout`, without asserting anything (SIGKILL otherwise).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(timeout);
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// Hard stop: SIGKILL and reap. No-op if not running.
    pub fn kill(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(libc::SIGKILL);
        if self.wait_exit(KILL_REAP_TIMEOUT).is_none() {
            // Should not happen for SIGKILL; leave `child` set so Drop retries.
            eprintln!("sluice pid {} not reaped after SIGKILL", self.pid);
        }
    }

    /// Starts the broker again on the same data dir, port 0 (the port may
    /// change), same cores and arguments. It must not be running.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again(): broker still running");
        self.listen_port = 0;
        self.spawn();
    }

    /// Starts the broker again on the same data dir and the port it listened
    /// on before (clients keep their bootstrap address), same cores and
    /// arguments. Right after a SIGKILL the port may still be held by the
    /// dead process's sockets for a moment: the broker waits for it
    /// (`listen_retry_ms`).
    pub fn start_again_same_port(&mut self) {
        self.start_again_same_port_within(START_TIMEOUT);
    }

    /// Like [`start_again_same_port`](Broker::start_again_same_port) but waits
    /// up to `timeout` for the ready line (thread states on timeout, as
    /// [`start_again_within`](Broker::start_again_within)).
    pub fn start_again_same_port_within(&mut self, timeout: Duration) {
        assert!(self.child.is_none(), "start_again_same_port(): broker still running");
        assert!(self.port != 0, "start_again_same_port(): the broker never listened");
        self.listen_port = self.port;
        self.spawn_within(timeout, true);
        self.listen_port = 0;
    }

    /// Waits up to `timeout` for the broker to exit on its own (no signal
    /// sent); `None` if it is still running then.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.wait_exit(timeout)
    }

    /// The broker's stderr of start number `start` (1-based).
    pub fn stderr_of(&self, start: u32) -> String {
        String::from_utf8_lossy(&fs::read(self.stderr_path(start)).unwrap_or_default()).into_owned()
    }

    /// Like [`start_again`](Broker::start_again) but waits up to `timeout`
    /// for the ready line; on timeout the panic message also lists the
    /// broker's threads with their state, wchan and kernel stack.
    pub fn start_again_within(&mut self, timeout: Duration) {
        assert!(self.child.is_none(), "start_again_within(): broker still running");
        self.spawn_within(timeout, true);
    }

    /// Graceful [`stop`](Broker::stop) (asserting exit 0) followed by
    /// [`start_again`](Broker::start_again) on the same data dir.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_none() {
            if thread::panicking() {
                eprintln!("broker pid {} logs:{}", self.pid, self.log_tail(8192));
            }
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_exit(DROP_TERM_GRACE).is_none() {
            self.kill();
        }
        if thread::panicking() {
            // Shown by the test runner with the failing test's output.
            eprintln!("broker pid {} logs:{}", self.pid, self.log_tail(8192));
        }
    }
}

/// Parses `sluice ready listen=127.0.0.1:PORT cores=N data_dir=DIR`,
/// checking cores and (by canonical path) data dir; returns the port.
pub fn parse_ready_line(line: &str, cores: usize, data_dir: &Path) -> Result<u16, String> {
    let rest = line.strip_prefix("sluice ready ").ok_or("missing `sluice ready ` prefix")?;
    let mut listen = None;
    let mut got_cores = None;
    let mut got_dir = None;
    // data_dir is last and may in principle contain spaces.
    let (head, dir) = match rest.find("data_dir=") {
        Some(i) => (&rest[..i], Some(rest[i + "data_dir=".len()..].to_string())),
        None => (rest, None),
    };
    for field in head.split_whitespace() {
        if let Some(v) = field.strip_prefix("listen=") {
            listen = Some(v.to_string());
        } else if let Some(v) = field.strip_prefix("cores=") {
            got_cores = Some(v.to_string());
        }
    }
    if let Some(d) = dir {
        got_dir = Some(d);
    }
    let listen = listen.ok_or("missing listen=")?;
    let port_str = listen.strip_prefix("127.0.0.1:").ok_or_else(|| format!("listen={listen} is not 127.0.0.1:PORT"))?;
    let port: u16 = port_str.parse().map_err(|e| format!("bad port {port_str:?}: {e}"))?;
    if port == 0 {
        return Err("listen port is 0".into());
    }
    let got_cores = got_cores.ok_or("missing cores=")?;
    if got_cores != cores.to_string() {
        return Err(format!("cores={got_cores}, expected {cores}"));
    }
    let got_dir = got_dir.ok_or("missing data_dir=")?;
    let same = Path::new(&got_dir) == data_dir
        || match (fs::canonicalize(&got_dir), fs::canonicalize(data_dir)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
    if !same {
        return Err(format!("data_dir={got_dir}, expected {}", data_dir.display()));
    }
    Ok(port)
}

/// Every thread of `pid` with its name, state, wchan and kernel stack (root only), for diagnostics.
pub fn thread_states(pid: i32) -> String {
    let mut out = format!("\n----- threads of pid {pid} -----\n");
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for e in rd.flatten().take(256) {
        let p = e.path();
        let comm = fs::read_to_string(p.join("comm")).unwrap_or_default();
        let stat = fs::read_to_string(p.join("stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("?").to_string();
        let wchan = fs::read_to_string(p.join("wchan")).unwrap_or_default();
        let stack = fs::read_to_string(p.join("stack")).unwrap_or_default();
        out.push_str(&format!(
            "tid {} {} state={state} wchan={wchan}\n{}",
            e.file_name().to_string_lossy(),
            comm.trim(),
            stack.lines().take(12).map(|l| format!("    {l}\n")).collect::<String>()
        ));
    }
    out
}

/// Resident set size (`VmRSS`) of process `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Broker {
    /// The broker's stderr (its logs) of its current (latest) start.
    pub fn current_stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.stderr_path(self.starts)).unwrap_or_default()).into_owned()
    }

    /// How many times the process has been started.
    pub fn start_count(&self) -> u32 {
        self.starts
    }
}

/// Runs `f` until it returns `Some`, at most `max_tries` times and until
/// `timeout` elapses, sleeping `step` between tries.
pub fn retry_until<T>(
    timeout: Duration,
    max_tries: u32,
    step: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    for _ in 0..max_tries {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(step);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("sluice ready listen=127.0.0.1:45678 cores=2 data_dir={}", dir.path().display());
        assert_eq!(parse_ready_line(&line, 2, dir.path()), Ok(45678));
        assert!(parse_ready_line(&line, 1, dir.path()).is_err());
        assert!(parse_ready_line("sluice ready listen=127.0.0.1:0 cores=2 data_dir=/x", 2, Path::new("/x")).is_err());
        assert!(parse_ready_line("hello", 2, dir.path()).is_err());
    }

    #[test]
    fn retry_until_is_bounded() {
        let mut n = 0;
        let r: Option<()> = retry_until(Duration::from_secs(5), 3, Duration::ZERO, || {
            n += 1;
            None
        });
        assert!(r.is_none());
        assert_eq!(n, 3);
    }
}
