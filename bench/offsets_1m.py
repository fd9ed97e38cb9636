#!/usr/bin/env python3
"""bench/offsets_1m.py: 1,000,000 offset commits to one group, then a restart (issue #23).

    .venv/bin/python bench/offsets_1m.py [--commits 1000000] [--partitions 10]
        [--segment-bytes 1048576] [--modes "nocompact compact"] [--work DIR] [--sluice PATH]

For each mode, a fresh single broker (`sluice serve --cores 2`, fresh data dir):
- `__consumer_offsets` gets `segment.bytes` = SEGMENT_BYTES (IncrementalAlterConfigs, as
  `kafka-configs.sh --alter --entity-type topics --entity-name __consumer_offsets` would), so
  its segments seal and can be compacted (the default, Kafka's 100 MiB, holds ~0.7 M commits
  in its active segment, which is never compacted);
- COMMITS OffsetCommit requests (v2, one partition each, rotating over PARTITIONS partitions
  of one topic, offsets increasing; generation -1: a simple consumer's commits), up to 800 in
  flight over 4 connections (each partition's commits in order on one), every answer checked;
- `nocompact`: the compactor's timer (`log_retention_check_interval_ms`) is an hour, so
  nothing is compacted; `compact`: it runs every second, and the script waits (up to 300 s)
  until the group's `__consumer_offsets` partition's cleaner checkpoint reaches its active
  segment;
- the broker is stopped (SIGTERM, clean), the size of `__consumer_offsets` on disk (sum of
  file sizes of every `__consumer_offsets-*` directory) is taken, the broker restarted on the
  same data dir, and the time from spawn to the ready line and to the first OffsetFetch
  answering every partition's last committed offset is reported.

Prints one line per mode. Every broker started is stopped by PID (finally).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_RE = re.compile(r"^sluice ready listen=(\S+):(\d+) cores=(\d+) data_dir=(.+)$")
GROUP = "offsets-1m-group"
TOPIC = "offsets-1m-topic"


def kstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key: int, version: int, corr: int, body: bytes) -> bytes:
    payload = struct.pack(">hhi", api_key, version, corr) + kstr("offsets-1m") + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return bytes(buf)


def recv_frame(s: socket.socket) -> bytes:
    (n,) = struct.unpack(">i", recv_exact(s, 4))
    return recv_exact(s, n)


def commit_body(partition: int, offset: int) -> bytes:
    """OffsetCommit v2: group, generation -1, member "", retention -1, one topic, one partition."""
    return (kstr(GROUP) + struct.pack(">i", -1) + kstr("") + struct.pack(">q", -1) + struct.pack(">i", 1)
            + kstr(TOPIC) + struct.pack(">i", 1) + struct.pack(">iq", partition, offset) + struct.pack(">h", -1))


def commit_error(resp: bytes) -> int:
    """The one partition's error code of an OffsetCommit v2 response (after the correlation id)."""
    pos = 4 + 4  # correlation id, topics count
    (n,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + n + 4  # name, partitions count
    _, code = struct.unpack_from(">ih", resp, pos)
    return code


class Broker:
    def __init__(self, sluice: Path, data: Path, config: Path, log: Path):
        self.log = log
        args = [str(sluice), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--cores", "2",
                "--config", str(config)]
        self.started = time.monotonic()
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self.port = None
        ready = threading.Event()

        def pump():
            for raw in self.proc.stdout:
                m = READY_RE.match(raw.decode(errors="replace").rstrip("\n"))
                if m and self.port is None:
                    self.port = int(m.group(2))
                    self.ready_s = time.monotonic() - self.started
                    ready.set()
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(600):
            self.stop()
            raise RuntimeError(f"no ready line within 600 s; see {log}")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode


def alter_segment_bytes(bootstrap: str, value: int) -> None:
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets",
                         incremental_configs=[ConfigEntry("segment.bytes", str(value),
                                                          incremental_operation=AlterConfigOpType.SET)])
    for f in admin.incremental_alter_configs([res]).values():
        f.result(timeout=30)


def create_topic(bootstrap: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=1)])[TOPIC].result(timeout=30)


def commit_all(port: int, commits: int, partitions: int, window: int = 200, conns: int = 4) -> float:
    """Sends `commits` commits; returns the seconds taken. A partition's commits all go over
    one connection (partition % conns), in order: the broker orders the requests of one
    connection, not those of several, so the last commit sent is the one that stays."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=120) for _ in range(conns)]
    t0 = time.monotonic()
    corr = 0
    pending = [bytearray() for _ in range(conns)]
    counts = [0] * conns

    def flush() -> None:
        for s, buf in zip(socks, pending):
            if buf:
                s.sendall(buf)
        for i, s in enumerate(socks):
            for _ in range(counts[i]):
                code = commit_error(recv_frame(s))
                if code != 0:
                    raise RuntimeError(f"OffsetCommit answered error {code}")
            pending[i].clear()
            counts[i] = 0

    try:
        for n in range(commits):
            p = n % partitions
            c = p % conns
            corr += 1
            pending[c] += frame(8, 2, corr, commit_body(p, n // partitions + 1))
            counts[c] += 1
            if counts[c] >= window:
                flush()
        flush()
    finally:
        for s in socks:
            s.close()
    return time.monotonic() - t0


def expected_offsets(commits: int, partitions: int) -> dict:
    last = {}
    for p in range(partitions):
        idx = [i for i in range(max(0, commits - partitions), commits) if i % partitions == p]
        if idx:
            last[p] = idx[-1] // partitions + 1
    return last


def fetch_after(b: Broker, partitions: int, want: dict, timeout: float = 300) -> tuple:
    """(seconds from the broker's spawn until OffsetFetch answers `want` for every partition,
    or until it answers an offset for every partition that stays the same for 5 s; what it
    answered)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + timeout
        first, last = None, None
        while time.monotonic() < deadline:
            try:
                got = c.committed([TopicPartition(TOPIC, p) for p in range(partitions)], timeout=10)
                got = {t.partition: t.offset for t in got}
            except Exception:  # coordinator still loading
                got = None
            now = time.monotonic()
            if got == want:
                return now - b.started, got
            if got and all(o >= 0 for o in got.values()):
                if got != last:
                    first, last = now, got
                elif now - first >= 5:
                    return first - b.started, got
            time.sleep(0.05)
        raise RuntimeError(f"no committed offsets served within {timeout} s after restart (last {last})")
    finally:
        c.close()


def offsets_dirs(data: Path) -> list:
    return sorted(d for d in data.iterdir() if d.name.startswith("__consumer_offsets-"))


def size_bytes(dirs: list, deleted: bool = False) -> int:
    """Bytes of the live files in `dirs`, or (`deleted`) of the `.deleted` ones: segments
    deleted or replaced by compaction, kept for `file.delete.delay.ms` (60 s) before they are
    freed, and freed at once by a restart's sweep."""
    return sum(f.stat().st_size for d in dirs for f in d.iterdir()
               if f.is_file() and f.name.endswith(".deleted") == deleted)


def group_partition(data: Path) -> Path:
    """The `__consumer_offsets` partition holding the group: the largest."""
    return max(offsets_dirs(data), key=lambda d: size_bytes([d]))


def wait_compacted(data: Path, timeout: float = 300) -> float:
    part = group_partition(data)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        bases = sorted(int(p.name[:-4]) for p in part.glob("*.log"))
        cp = part / "cleaner-offset-checkpoint"
        if len(bases) > 1 and cp.exists() and int(cp.read_text().strip() or 0) >= bases[-1]:
            return time.monotonic() - t0
        time.sleep(0.5)
    raise RuntimeError(f"{part.name} not compacted up to its active segment within {timeout} s")


def wait_freed(dirs: list, secs: float = 10) -> int:
    """Bytes of `.deleted` files still in `dirs` once a restart's sweep has had `secs` to free
    them (0 as soon as all are gone)."""
    deadline = time.monotonic() + secs
    while True:
        left = size_bytes([d for d in dirs if d.exists()], deleted=True)
        if left == 0 or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def note(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_mode(mode: str, args, work: Path) -> str:
    data = work / f"data-{mode}"
    config = work / f"{mode}.toml"
    interval = 1000 if mode == "compact" else 3_600_000
    config.write_text(f"log_retention_check_interval_ms = {interval}\ngroup_initial_rebalance_delay_ms = 0\n")
    log = work / f"{mode}.stderr.log"
    b = Broker(args.sluice, data, config, log)
    try:
        create_topic(b.bootstrap, args.partitions)
        alter_segment_bytes(b.bootstrap, args.segment_bytes)
        note(f"{mode}: committing")
        took = commit_all(b.port, args.commits, args.partitions)
        note(f"{mode}: committed in {took:.1f} s")
        waited = wait_compacted(data) if mode == "compact" else 0.0
        code = b.stop()
        note(f"{mode}: stopped")
        if code != 0:
            raise RuntimeError(f"broker exit {code} after SIGTERM; see {log}")
        dirs = offsets_dirs(data)
        size, kept = size_bytes(dirs), size_bytes(dirs, deleted=True)
        part = group_partition(data)
        segs = len(list(part.glob("*.log")))
        b = Broker(args.sluice, data, config, log)
        ready = b.ready_s
        want = expected_offsets(args.commits, args.partitions)
        fetched, served = fetch_after(b, args.partitions, want)
        wrong = "" if served == want else f" BUT OffsetFetch answered {served} where {want} was committed"
        left = wait_freed(dirs)
        return (f"{mode}: {args.commits} commits in {took:.1f} s ({args.commits / took:,.0f}/s); "
                f"waited {waited:.1f} s for compaction; __consumer_offsets on disk {size:,} bytes "
                f"({size / 1048576:.1f} MiB; group partition {part.name}: {segs} segments) and {kept:,} bytes "
                f"of .deleted files awaiting file.delete.delay.ms ({left:,} left within 10 s of the offsets "
                f"being served after the restart); "
                f"restart: ready line after {ready:.2f} s, committed offsets served after {fetched:.2f} s{wrong}")
    finally:
        b.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--commits", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=10)
    ap.add_argument("--segment-bytes", type=int, default=1 << 20)
    ap.add_argument("--modes", default="nocompact compact")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--sluice", type=Path, default=Path(os.environ.get("SLUICE_BIN", ROOT / "target/release/sluice")))
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sluice-offsets-1m-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; nproc {os.cpu_count()}; load {os.getloadavg()}", flush=True)
    for mode in args.modes.split():
        print(run_mode(mode, args, work), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
