"""Segment files are opened lazily and closed when idle: with `max_open_files_per_shard = 16`
and 150 partitions on 2 shards, the broker never holds more than about 2 × 16 segment files
open, while a confluent-kafka producer writes every partition and a consumer reads every one
back byte-exact — before and after a restart."""

from __future__ import annotations

import os
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from support import unique_topic, wait_until

PARTITIONS = 150
PER_PARTITION = 10
LIMIT = 16
# Two shards' limits, plus descriptors of operations in flight at the moment of counting.
BOUND = 2 * LIMIT + 8


def open_segment_files(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(".log"):
                n += 1
        except OSError:
            pass  # closed while listing
    return n


def value(p: int, i: int) -> bytes:
    return f"p{p}-m{i}-".encode() + bytes((p + i + j) % 251 for j in range(200))


def consume_all(bootstrap: str, topic: str, broker_pid: int) -> tuple[dict, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    got: dict = {}
    peak = 0
    deadline = time.monotonic() + 60
    total = 0
    for _ in range(100_000):
        if total >= PARTITIONS * PER_PARTITION or time.monotonic() > deadline:
            break
        for m in c.consume(500, timeout=1.0):
            assert m.error() is None, m.error()
            got.setdefault(m.partition(), []).append(m.value())
            total += 1
        peak = max(peak, open_segment_files(broker_pid))
    c.close()
    return got, peak


def test_open_segment_files_stay_bounded_with_many_partitions(broker_factory, tmp_path):
    cfg = tmp_path / "fds.toml"
    cfg.write_text(f"max_open_files_per_shard = {LIMIT}\n")
    broker = broker_factory.start(config=cfg, cores=2)
    topic = unique_topic("fds")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(60)

    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(PER_PARTITION):
        for part in range(PARTITIONS):
            p.produce(topic, value(part, i), partition=part)
        p.poll(0)
    assert p.flush(60) == 0, "every message acknowledged"
    assert open_segment_files(broker.proc.pid) <= BOUND

    got, peak = consume_all(broker.bootstrap, topic, broker.proc.pid)
    assert peak <= BOUND, f"{peak} segment files open with a limit of {LIMIT} per shard"
    for part in range(PARTITIONS):
        assert got.get(part) == [value(part, i) for i in range(PER_PARTITION)], f"partition {part}"

    broker = broker_factory.restart(broker, config=cfg, cores=2)
    wait_until(lambda: open_segment_files(broker.proc.pid) <= BOUND, timeout=10, what="fds after restart")
    got, peak = consume_all(broker.bootstrap, topic, broker.proc.pid)
    assert peak <= BOUND, f"after restart: {peak} segment files open"
    for part in range(PARTITIONS):
        assert got.get(part) == [value(part, i) for i in range(PER_PARTITION)], f"partition {part} after restart"
