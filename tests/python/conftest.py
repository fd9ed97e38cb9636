"""Pytest fixtures that run the real `sluice` binary.

`broker_factory` starts brokers (each on 127.0.0.1 with port 0, a temp data
dir unless one is given) and stops every one it started, by PID, at the end of
the test: SIGTERM, then SIGKILL after a deadline.  `broker` is one started
broker for tests that need just one.  A started broker unpacks as
`(host, port, data_dir, proc)`.

Environment:
  SLUICE_BIN            path of the binary (default <repo>/target/release/sluice)
  SLUICE_TEST_CORES     --cores for test brokers (default 2)
  SLUICE_READY_TIMEOUT  seconds to wait for the ready line (default 10)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
SLUICE_BIN = Path(os.environ.get("SLUICE_BIN", REPO / "target" / "release" / "sluice"))
CORES = int(os.environ.get("SLUICE_TEST_CORES", "2"))
READY_TIMEOUT = float(os.environ.get("SLUICE_READY_TIMEOUT", "10"))
STOP_TIMEOUT = 10.0

READY_RE = re.compile(r"^sluice ready listen=(\S+):(\d+) cores=(\d+) data_dir=(.+)$")


@dataclass
class Broker:
    host: str
    port: int
    data_dir: Path
    proc: subprocess.Popen
    stderr_path: Path
    stdout_lines: list = field(default_factory=list)
    stopped: bool = False  # set once the test (or fixture) asked it to stop

    def __iter__(self) -> Iterator:
        return iter((self.host, self.port, self.data_dir, self.proc))

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """Signals the broker by PID and waits; SIGKILL if it outlives `timeout`.

        Returns the exit code after `sig` (None if it had to be killed)."""
        if not self.stopped and self.proc.poll() is None:
            self.stopped = True
        else:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
            return None


def _pump_stdout(proc: subprocess.Popen, lines: Queue, keep: list) -> None:
    """Reads the broker's stdout for as long as it lives, so the pipe never fills."""
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        keep.append(line)
        lines.put(line)
    lines.put(None)


def start_broker(
    data_dir: Path,
    log_dir: Path,
    cores: int = CORES,
    config: Optional[Path] = None,
    extra_args: tuple = (),
) -> Broker:
    if not SLUICE_BIN.exists():
        pytest.fail(f"broker binary not found at {SLUICE_BIN}; build it or set SLUICE_BIN")
    data_dir.mkdir(parents=True, exist_ok=True)
    n = len(list(log_dir.glob("broker-*.stderr.log")))
    stderr_path = log_dir / f"broker-{n}.stderr.log"
    args = [str(SLUICE_BIN), "serve", "--listen", "127.0.0.1:0",
            "--data-dir", str(data_dir), "--cores", str(cores)]
    if config is not None:
        args += ["--config", str(config)]
    args += list(extra_args)
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    lines: Queue = Queue()
    keep: list = []
    threading.Thread(target=_pump_stdout, args=(proc, lines, keep), daemon=True).start()
    broker = Broker("127.0.0.1", 0, data_dir, proc, stderr_path, keep)

    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            broker.stop(signal.SIGKILL)
            pytest.fail(f"no ready line within {READY_TIMEOUT}s; stdout={keep!r}\n"
                        f"stderr tail:\n{broker.stderr_tail()}")
        try:
            line = lines.get(timeout=left)
        except Empty:
            continue
        if line is None:
            proc.wait(timeout=STOP_TIMEOUT)
            pytest.fail(f"broker exited with {proc.returncode} before ready; stdout={keep!r}\n"
                        f"stderr tail:\n{broker.stderr_tail()}")
        m = READY_RE.match(line)
        if m:
            broker.host, broker.port = m.group(1), int(m.group(2))
            assert broker.host == "127.0.0.1", line
            assert int(m.group(3)) == cores, line
            return broker


class BrokerFactory:
    """Starts brokers for one test and remembers them so they all get stopped."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[Broker] = []

    def start(self, data_dir: Optional[Path] = None, **kw) -> Broker:
        if data_dir is None:
            data_dir = self.tmp_path / f"data-{len(self.started)}"
        broker = start_broker(data_dir, self.tmp_path, **kw)
        self.started.append(broker)
        return broker

    def restart(self, broker: Broker, **kw) -> Broker:
        """SIGTERM `broker`, require a clean exit, start again on the same data dir."""
        code = broker.stop()
        assert code == 0, (f"broker exit code after SIGTERM was {code} (None = had to SIGKILL)\n"
                           f"stderr tail:\n{broker.stderr_tail()}")
        return self.start(broker.data_dir, **kw)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def broker_factory(request, tmp_path) -> Iterator[BrokerFactory]:
    factory = BrokerFactory(tmp_path)
    yield factory
    crashed = []
    for b in factory.started:
        if not b.stopped and not b.alive():
            crashed.append(b)
        b.stop()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for b in factory.started if failed else crashed:
        print(f"--- {b.stderr_path} (exit {b.proc.returncode}) ---\n{b.stderr_tail()}")
    if crashed:
        pytest.fail("broker died during the test: " +
                    ", ".join(f"pid {b.proc.pid} exit {b.proc.returncode}" for b in crashed))


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory.start()
