"""Disk full: the data dir sits on a small loop-mounted ext4 image (O_DIRECT
works there; tmpfs is not used).  A filler file next to the data dir leaves a
few MiB free; producing (acks=all, no retries) until requests fail must give
KAFKA_STORAGE_ERROR (code 56) rather than a hang or a crash, the broker keeps
serving reads, SIGTERM exits 0 even with no block left for the clean-shutdown
marker (and leaves no marker), and after the filler is deleted and the broker
restarted everything acknowledged is readable exactly once, nothing corrupt is
there, and producing works again.

Needs root and loop devices; otherwise the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from support import unique_topic

IMAGE_MB = 64
LEAVE_FREE = 6 * 1024 * 1024
VALUE_SIZE = 8 * 1024
MAX_MESSAGES = 20_000
PRODUCE_DEADLINE_S = 90


def value_of(i: int) -> bytes:
    head = f"disk-full:{i:08d}:".encode()
    body = bytes((i * 7 + j) % 251 for j in range(VALUE_SIZE - len(head)))
    return head + body


def parse_value(v: bytes) -> int | None:
    try:
        i = int(v[10:18])
    except (ValueError, TypeError):
        return None
    return i if v == value_of(i) else None


def sh(*cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


@pytest.fixture
def small_fs(tmp_path: Path):
    if os.geteuid() != 0:
        pytest.skip("disk-full test needs root to loop-mount an ext4 image")
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            pytest.skip(f"disk-full test needs {tool}")
    img = tmp_path / "fs.img"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(IMAGE_MB * 1024 * 1024)
    r = sh("mkfs.ext4", "-q", "-F", str(img))
    if r.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {r.stderr.decode(errors='replace').strip()}")
    r = sh("mount", "-o", "loop", str(img), str(mnt))
    if r.returncode != 0:
        pytest.skip(f"loop mount not permitted here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        for _ in range(20):
            if sh("umount", str(mnt)).returncode == 0:
                break
            time.sleep(0.5)
        else:
            sh("umount", "-l", str(mnt))


def quiet_tail(text: str, lines: int = 20) -> str:
    """The last `lines` of a broker log without the per-batch "append failed" errors, which
    otherwise hide the lines that explain a failure."""
    kept = [l for l in text.splitlines() if "append failed" not in l]
    return "\n".join(kept[-lines:])


def fill_completely(path: Path) -> int:
    """Writes `path` until the filesystem refuses (ENOSPC); returns the bytes it took."""
    total = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 64 << 10, 4 << 10, 512):
            chunk = b"\1" * size
            for _ in range(IMAGE_MB * 1024 * 1024 // size + 1):
                try:
                    total += f.write(chunk)
                except OSError:
                    break
        try:
            os.fsync(f.fileno())
        except OSError:
            pass
    return total


def consume_all(bootstrap: str, topic: str, expect_at_least: int, timeout: float = 60) -> list:
    """(offset, value) of partition 0 from the beginning up to the high watermark."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "disk-full-unused", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100, "check.crcs": True, "enable.partition.eof": True})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        assert hi >= expect_at_least, f"high watermark {hi} < {expect_at_least} acknowledged"
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + timeout
        for _ in range(100_000):
            if len(out) >= hi - lo or time.monotonic() > deadline:
                break
            for m in c.consume(num_messages=500, timeout=0.5):
                if m.error() is None:
                    out.append((m.offset(), m.value()))
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consume error: {m.error()}")
        assert len(out) == hi - lo, f"read {len(out)} of {hi - lo} records (watermarks {lo}..{hi})"
        return out
    finally:
        c.close()


def check_log(records: list, acked: dict) -> set:
    """Every record intact and unique, offsets contiguous, every acked id at its offset."""
    seen = {}
    for j, (off, v) in enumerate(records):
        assert off == records[0][0] + j, f"offsets not contiguous at #{j}: {off}"
        i = parse_value(v)
        assert i is not None, f"corrupt record at offset {off}: {v[:40]!r}... ({len(v) if v else 0} bytes)"
        assert i not in seen, f"record {i} present twice (offsets {seen[i]} and {off})"
        seen[i] = off
    for i, off in acked.items():
        assert seen.get(i) == off, f"acknowledged record {i} (offset {off}) missing or moved: found at {seen.get(i)}"
    return set(seen)


def test_disk_full_gives_storage_error_and_recovers(broker_factory, small_fs: Path):
    data_dir = small_fs / "data"
    filler = small_fs / "filler"
    st = os.statvfs(small_fs)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        left = max(free - LEAVE_FREE, 0)
        chunk = b"\0" * (1 << 20)
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())
    st = os.statvfs(small_fs)
    print(f"free after filler: {st.f_bavail * st.f_frsize // 1024} KiB")

    b = broker_factory.start(data_dir)
    topic = unique_topic("diskfull")
    acked: dict[int, int] = {}
    errors: dict[str, int] = {}

    def on_delivery(err, msg):
        i = parse_value(msg.value())
        if err is None:
            acked[i] = msg.offset()
        else:
            errors[err.name()] = errors.get(err.name(), 0) + 1

    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "enable.idempotence": False,
                  "retries": 0, "message.timeout.ms": 30000, "request.timeout.ms": 20000,
                  "linger.ms": 5, "batch.num.messages": 16, "queue.buffering.max.messages": 1000})
    start = time.monotonic()
    sent = 0
    first_error_at = None
    for i in range(MAX_MESSAGES):
        if errors and first_error_at is None:
            first_error_at = sent
        # Keep going a while after the first failure: every later request
        # must also be answered (acked or KAFKA_STORAGE_ERROR), none may hang.
        if first_error_at is not None and sent >= first_error_at + 300:
            break
        if time.monotonic() - start > PRODUCE_DEADLINE_S:
            break
        for _ in range(1000):
            try:
                p.produce(topic, value=value_of(i), partition=0, on_delivery=on_delivery)
                sent += 1
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    remaining = p.flush(40)
    took = time.monotonic() - start
    print(f"sent {sent}, acked {len(acked)}, errors {errors}, unflushed {remaining}, {took:.1f}s; "
          f"broker stderr tail:\n{b.stderr_tail(15)}")
    assert b.alive(), f"broker died when the disk filled:\n{quiet_tail(b.stderr_tail(400))}"
    assert remaining == 0, f"{remaining} produce requests still unanswered 40 s after the disk filled (hang)"
    assert errors, f"{sent} messages of {VALUE_SIZE} B all acknowledged on a disk with {LEAVE_FREE} B free?"
    assert set(errors) == {"KAFKA_STORAGE_ERROR"}, f"produce failures on a full disk: {errors}"
    assert acked, "nothing acknowledged before the disk filled"

    # Reads are still served, and nothing corrupt or unacknowledged-and-broken is visible.
    before = consume_all(b.bootstrap, topic, expect_at_least=max(acked.values()) + 1)
    check_log(before, acked)

    # Take the last free block too, so the clean-shutdown marker cannot be written: the stop
    # must still exit 0 (everything acknowledged is fdatasync'ed), say so, and leave no marker
    # (a half-written one would make the next start trust indexes it should rebuild).
    topped = fill_completely(small_fs / "filler2")
    code = b.stop()
    stopped = quiet_tail(b.stderr_tail(400))
    assert code == 0, f"exit code after SIGTERM with a full disk: {code}\n{stopped}"
    print(f"topped up {topped} B; broker stderr after SIGTERM:\n{stopped}")
    # Either a log could not write its index at close, or the marker itself failed.
    assert ("without the clean-shutdown marker" in stopped or "did not close cleanly" in stopped), \
        f"no warning that the stop left no marker:\n{stopped}"
    assert not (data_dir / ".clean-shutdown").exists(), "a clean-shutdown marker was left on a full disk"
    filler.unlink()
    (small_fs / "filler2").unlink()
    b2 = broker_factory.start(data_dir)
    assert "clean_start=false" in b2.stderr_tail(), f"restart after a stop without marker:\n{b2.stderr_tail()}"
    after = consume_all(b2.bootstrap, topic, expect_at_least=max(acked.values()) + 1)
    present = check_log(after, acked)
    assert len(after) >= len(before), f"records readable before the restart are gone: {len(before)} -> {len(after)}"

    # Producing works again.
    p2 = Producer({"bootstrap.servers": b2.bootstrap, "acks": "all", "message.timeout.ms": 20000})
    fresh: dict[int, int] = {}
    fresh_err: list = []

    def on_fresh(err, msg):
        if err is None:
            fresh[parse_value(msg.value())] = msg.offset()
        else:
            fresh_err.append(err.name())

    base = MAX_MESSAGES + 1
    for i in range(base, base + 100):
        p2.produce(topic, value=value_of(i), partition=0, on_delivery=on_fresh)
    assert p2.flush(30) == 0, "produce after freeing space did not complete"
    assert not fresh_err and len(fresh) == 100, f"produce after freeing space: errors {fresh_err}, ok {len(fresh)}"
    final = consume_all(b2.bootstrap, topic, expect_at_least=max(fresh.values()) + 1)
    check_log(final, {**acked, **fresh})
    print(f"records present after restart: {len(present)} (acked {len(acked)}); after new produce: {len(final)}")
    assert b2.stop() == 0
