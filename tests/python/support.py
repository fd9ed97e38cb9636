"""Small helpers shared by the Python tests: names, bounded polling, raw
Kafka frames, subprocesses with timeouts, and topic creation."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[2]
KAFKA_LIBS = REPO / "tests" / ".deps" / "kafka-libs"


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(pred: Callable[[], object], timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls `pred` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / max(interval, 0.01)) + 2):
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value {last!r}")


def run(cmd: list, timeout: float, input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """Runs a command with a hard timeout; never raises on a non-zero exit."""
    return subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


def kafka_tool(main_class: str, *args, timeout: float, input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """One of Apache Kafka's command-line tools (its main class) from the Kafka jars, as
    kafka-*.sh runs it."""
    java = shutil.which("java")
    assert java, "java not on PATH"
    assert any(KAFKA_LIBS.glob("kafka-tools-*.jar")), f"no Kafka jars in {KAFKA_LIBS}; run tests/run"
    return run([java, "-Xmx256m", "-XX:+UseSerialGC", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp", f"{KAFKA_LIBS}{os.sep}*", main_class, *args], timeout=timeout, input=input)


def explain(res: subprocess.CompletedProcess) -> str:
    """A tool's exit code and output tails, for an assertion message."""
    return f"exit {res.returncode}\nstdout:\n{res.stdout.decode()[-3000:]}\nstderr:\n{res.stderr.decode()[-3000:]}"


# --- raw Kafka framing -------------------------------------------------------

def request_frame(api_key: int, api_version: int, correlation_id: int,
                  body: bytes = b"", client_id: str = "sluice-raw-test") -> bytes:
    """A length-prefixed request with a v1 header (key, version, correlation id, client id)."""
    cid = client_id.encode()
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(cid)) + cid
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Reads exactly n bytes; returns fewer only if the peer closed."""
    buf = b""
    for _ in range(n + 1):
        if len(buf) >= n:
            break
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def recv_frame(sock: socket.socket) -> Optional[bytes]:
    """One response frame's payload, or None if the connection closed first."""
    head = recv_exact(sock, 4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">i", head)
    assert 0 <= size < 64 * 1024 * 1024, f"implausible response size {size}"
    payload = recv_exact(sock, size)
    return payload if len(payload) == size else None


def connection_closed(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (EOF or reset) within `timeout`, draining any bytes it sends."""
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True
        if not data:
            return True
    return False


def kstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def api_versions(sock: socket.socket, correlation_id: int) -> dict:
    """ApiVersions v0 on an open socket: {api_key: (min, max)}; asserts the echo and no error."""
    sock.sendall(request_frame(18, 0, correlation_id))
    resp = recv_frame(sock)
    assert resp is not None, "connection closed instead of an ApiVersions answer"
    corr, err, n = struct.unpack_from(">ihi", resp, 0)
    assert corr == correlation_id, f"correlation id {corr} != {correlation_id}"
    assert err == 0, f"ApiVersions error_code {err}"
    out = {}
    for i in range(n):
        key, lo, hi = struct.unpack_from(">hhh", resp, 10 + 6 * i)
        out[key] = (lo, hi)
    return out


def fetch_v4_request(correlation_id: int, topic: str, partition: int, offset: int,
                     max_wait_ms: int, min_bytes: int = 1) -> bytes:
    """Fetch v4 (the oldest version Kafka 4 still serves) for one partition."""
    body = struct.pack(">iiiib", -1, max_wait_ms, min_bytes, 1 << 20, 0)
    body += struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20)
    return request_frame(1, 4, correlation_id, body)


def parse_fetch_v4_single(resp: bytes) -> tuple:
    """(correlation_id, error_code, high_watermark, records_bytes) of a one-partition Fetch v4 answer."""
    corr, _throttle, ntopics = struct.unpack_from(">iii", resp, 0)
    assert ntopics == 1, f"{ntopics} topics in fetch response"
    pos = 12
    (tlen,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + tlen
    (nparts,) = struct.unpack_from(">i", resp, pos)
    assert nparts == 1, f"{nparts} partitions in fetch response"
    pos += 4
    _part, err, hw, _lso, naborted = struct.unpack_from(">ihqqi", resp, pos)
    pos += 4 + 2 + 8 + 8 + 4 + max(naborted, 0) * 16
    (rlen,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    records = resp[pos:pos + rlen] if rlen > 0 else b""
    return corr, err, hw, records


# --- topics ------------------------------------------------------------------

def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 15.0) -> None:
    """Creates a topic with confluent-kafka's AdminClient and waits until Metadata shows it."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=timeout, request_timeout=timeout)
    futures[name].result(timeout=timeout)

    def ready():
        md = admin.list_topics(topic=name, timeout=5)
        t = md.topics.get(name)
        return t is not None and t.error is None and len(t.partitions) == partitions

    wait_until(ready, timeout, what=f"topic {name} with {partitions} partitions in metadata")


# --- the metrics endpoint ----------------------------------------------------

def metrics_address(broker) -> str:
    """The metrics address a broker started with `--metrics-listen 127.0.0.1:0` logged."""
    import re

    def find():
        m = re.search(r"metrics=(127\.0\.0\.1:\d+)", broker.stderr_path.read_text(errors="replace"))
        return m.group(1) if m else None
    return wait_until(find, timeout=10, what="the metrics address in the broker log")


def scrape(addr: str) -> dict:
    """{(name, frozenset(labels)): value} for every sample of /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def total(samples: dict, name: str, **labels) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def rss_kib(pid: int) -> int:
    """Resident set size of process `pid` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    """Samples a process's RSS every `interval` seconds on a thread while the `with` block runs;
    `peak` is the highest sample (taken at least once at entry and once at exit)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssSampler":
        self.samples.append(rss_kib(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.samples.append(rss_kib(self.pid))
        return False

    @property
    def peak(self) -> int:
        return max(self.samples)
