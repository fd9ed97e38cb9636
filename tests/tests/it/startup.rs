//! Start-up against a port or data dir that is (or was a moment ago) in use.
//!
//! Contract: a broker SIGKILLed and started again at once on the same port and data dir comes
//! up (it waits up to `listen_retry_ms` for the dead process's sockets to go) and keeps every
//! acknowledged record; a second broker on a port held by a live broker still fails, after the
//! wait, with the one-line `cannot listen on ADDR: Address already in use`; a second broker on
//! a data dir locked by a live broker fails at once naming the holder; a port held at start and
//! released within the wait is taken. The restarted broker also serves /metrics on its old
//! metrics port (retried in the background the same way).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::{sluice_bin, Broker};

use crate::common::*;

#[test]
fn restart_right_after_sigkill_on_the_same_port() {
    let _slot = shared_slot();
    // A fixed metrics port, as a deployment has (a free one, picked now).
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let metrics = metrics.to_string();
    let dir = tempfile::Builder::new().prefix("sluice-it-").tempdir().expect("create temp dir");
    let mut broker = Broker::start_with(dir, 2, &["--metrics-listen", &metrics]);
    let port = broker.port();
    let topic = topic_name("restart-same-port");
    create_topic(&broker.addr(), &topic, 2);
    const ROUNDS: usize = 6;
    const PER_ROUND: usize = 300;
    let mut sent = Vec::new();
    let mut waited = 0;
    for round in 0..ROUNDS {
        let msgs: Vec<Msg> = (0..PER_ROUND).map(|i| make_msg(round * PER_ROUND + i, 2, 41)).collect();
        {
            let p = producer(&broker.addr(), "all");
            send_all(&p, &topic, &msgs, 0);
            take_deliveries(&p, 0, msgs.len());
        }
        sent.extend(msgs);
        broker.kill();
        broker.start_again_same_port();
        assert_eq!(broker.port(), port, "round {round}: the restarted broker listens on its old port");
        let log = broker.current_stderr();
        assert!(!log.contains("data directory is in use"), "round {round}: the lock outlived the killed broker\n{log}");
        if log.contains("listen port in use") {
            waited += 1;
        }
        let scraped = scrape_within(&metrics, Duration::from_secs(20));
        assert!(
            scraped.contains("sluice_"),
            "round {round}: no /metrics on {metrics} after the restart: {scraped:?}\n{}",
            broker.current_stderr()
        );
    }
    eprintln!("{waited} of {ROUNDS} restarts waited for the port");
    consume_and_verify(&broker.addr(), &topic, 2, &sent, None, Duration::from_secs(60));
    broker.stop();
}

/// The body of `GET /metrics` at `addr`, retried until it answers or `within` passes ("" then).
fn scrape_within(addr: &str, within: Duration) -> String {
    use std::io::{Read, Write};
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let got = std::net::TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: sluice\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match got {
            Ok(body) if body.starts_with("HTTP/1.") && body.contains(" 200 ") => return body,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    String::new()
}

/// Runs a second broker with `args` (a fresh data dir unless `args` names one) and returns
/// (exit code, stdout, stderr, elapsed), killing it if it runs past 30 s.
fn second_broker(args: &[String]) -> (Option<i32>, String, String, Duration) {
    let dir = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let mut cmd = Command::new(sluice_bin());
    cmd.arg("serve")
        .args(args)
        .args(["--cores", "1", "--metrics-listen", ""])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !args.iter().any(|a| a == "--data-dir") {
        cmd.arg("--data-dir").arg(dir.path().join("data"));
    }
    let mut child = cmd.spawn().expect("spawn a second broker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect the second broker's output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn second_broker_on_a_live_port_fails_after_the_wait() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let addr = broker.addr();
    let (code, stdout, stderr, elapsed) =
        second_broker(&["--listen".into(), addr.clone(), "--listen-retry-ms".into(), "600".into()]);
    assert_eq!(code, Some(1), "a second broker on a live port must exit 1\n{stderr}");
    assert!(!stdout.contains("sluice ready"), "the second broker printed ready: {stdout}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("sluice: cannot listen on {addr}: Address already in use")),
        "last line names the port: {last:?}\n{stderr}"
    );
    assert!(stderr.contains("listen port in use"), "it logged why it waited\n{stderr}");
    assert!(elapsed >= Duration::from_millis(500), "it waited for the port ({elapsed:?})");
    // With no wait it fails at once.
    let (code, _, stderr, _) =
        second_broker(&["--listen".into(), addr.clone(), "--listen-retry-ms".into(), "0".into()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("listen port in use"), "no wait with listen-retry-ms 0\n{stderr}");
    // The first broker still serves.
    assert!(broker.is_running());
    let topic = topic_name("live-port");
    create_topic(&addr, &topic, 1);
    assert_eq!(metadata_partitions(&addr, &topic), Some(1));
    broker.stop();
}

#[test]
fn second_broker_on_a_locked_data_dir_fails() {
    let _slot = shared_slot();
    let mut broker = Broker::start(1);
    let data = broker.data_dir().display().to_string();
    let (code, stdout, stderr, _) =
        second_broker(&["--listen".into(), "127.0.0.1:0".into(), "--data-dir".into(), data]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stdout.contains("sluice ready"));
    assert!(stderr.contains("in use by another sluice process"), "{stderr}");
    broker.stop();
}

#[test]
fn start_waits_for_a_port_that_is_released() {
    use std::io::{BufRead, BufReader};
    let _slot = shared_slot();
    // Hold the port as a dying broker's sockets would, then let it go after a moment.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port to hold");
    let addr = holder.local_addr().expect("held address").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(sluice_bin())
        .args(["serve", "--listen", &addr, "--listen-retry-ms", "20000", "--cores", "1", "--metrics-listen", ""])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a broker");
    // Release the port only once the broker said it is waiting for it (bounded).
    let stderr = child.stderr.take().expect("stderr");
    let (err_tx, err_rx) = std::sync::mpsc::channel::<String>();
    let err_reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut waiting = false;
    while !waiting && std::time::Instant::now() < deadline {
        match err_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                waiting = line.contains("listen port in use");
                log.push_str(&line);
                log.push('\n');
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let gave_up = child.try_wait().expect("try_wait").is_some();
    drop(holder);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The ready line; listener lines may come before it.
        let line =
            BufReader::new(stdout).lines().take(16).map_while(Result::ok).find(|l| l.starts_with("sluice ready"));
        let _ = tx.send(line);
    });
    let line = if waiting && !gave_up { rx.recv_timeout(Duration::from_secs(30)).ok().flatten() } else { None };
    // SAFETY: signalling the child we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("broker exit");
    let _ = err_reader.join();
    log.extend(err_rx.try_iter().map(|l| l + "\n"));
    let stderr = log;
    assert!(waiting, "it logged why it waited (listen port in use)\n{stderr}");
    assert!(!gave_up, "the broker gave up while the port was held\n{stderr}");
    let line = line.unwrap_or_default();
    assert!(
        line.starts_with(&format!("sluice ready listen={addr} ")),
        "ready on the released port: {line:?}\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
}
