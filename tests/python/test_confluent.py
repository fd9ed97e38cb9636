"""confluent-kafka (librdkafka) against sluice.

Covers: a 3-partition topic made with AdminClient; 10,000 keyed messages with
headers produced with acks=all and read back with assign() (no consumer group)
byte-exact, including null/empty keys and values, in per-partition order;
acks=0 and acks=1 counts checked through the watermarks; every compression
codec; a near-1 MB value; and a SIGTERM restart on the same data dir keeping
topics, data and offsets.
"""

import random

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from support import create_topic, unique_topic, wait_until


def producer(bootstrap: str, **extra) -> Producer:
    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": False,
            "linger.ms": 5, "acks": "all"}
    conf.update(extra)
    return Producer(conf)


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 60.0) -> list:
    """Reads `expected` messages from every partition's beginning, without a group."""
    # librdkafka refuses a consumer without group.id; it is never used (no commits, no subscribe).
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-tests-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = []

        def more():
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None:
                    got.append(m)
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consume error: {m.error()}")
            return len(got) >= expected

        wait_until(more, timeout, interval=0, what=f"{expected} messages from {topic} (have {len(got)})")
        # Nothing beyond what was produced shows up.
        extra = [m for m in c.consume(num_messages=100, timeout=0.5) if m.error() is None]
        assert not extra, f"{len(extra)} unexpected extra messages, first at offset {extra[0].offset()}"
        return got
    finally:
        c.close()


def produce_and_collect(p: Producer, messages: list, topic: str, timeout: float = 60.0) -> list:
    """Produces (key, value, headers) tuples; returns the delivery reports' (partition, offset)."""
    reports = [None] * len(messages)
    errors = []

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                errors.append((i, err))
            else:
                reports[i] = (msg.partition(), msg.offset())
        return cb

    for i, (key, value, headers) in enumerate(messages):
        for _ in range(1000):
            try:
                p.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery(i))
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(timeout)
    assert left == 0, f"{left} messages still undelivered after {timeout}s"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
    return reports


def make_messages(n: int, seed: int = 7) -> list:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 97 == 0 else (b"" if i % 89 == 0 else f"key-{i % 50}".encode())
        if i % 101 == 0:
            value = None
        elif i % 103 == 0:
            value = b""
        else:
            value = i.to_bytes(4, "big") + rnd.randbytes(rnd.randrange(0, 300))
        headers = [("seq", str(i).encode()), ("bin", rnd.randbytes(rnd.randrange(0, 20))), ("empty", b"")]
        out.append((key, value, headers))
    return out


def test_10k_keyed_with_headers_acks_all_three_partitions(broker):
    topic = unique_topic("c10k")
    create_topic(broker.bootstrap, topic, 3)
    messages = make_messages(10_000)
    reports = produce_and_collect(producer(broker.bootstrap, acks="all"), messages, topic)

    by_partition = {p: [] for p in range(3)}
    for i, (part, off) in enumerate(reports):
        by_partition[part].append((off, i))
    for part, entries in by_partition.items():
        offsets = [off for off, _ in entries]
        assert offsets == list(range(len(entries))), f"partition {part}: offsets not 0..n-1 in send order"
    assert sum(1 for v in by_partition.values() if v) >= 2, "keys should spread over partitions"

    got = consume_all(broker.bootstrap, topic, 3, len(messages))
    assert len(got) == len(messages)
    seen = {p: [] for p in range(3)}
    for m in got:
        seen[m.partition()].append(m)
    for part, entries in by_partition.items():
        msgs = seen[part]
        assert [m.offset() for m in msgs] == [off for off, _ in entries], f"partition {part} offsets/order"
        for m, (_, i) in zip(msgs, entries):
            key, value, headers = messages[i]
            assert m.key() == key, f"message {i}: key {m.key()!r} != {key!r}"
            assert m.value() == value, f"message {i}: value differs"
            assert m.headers() == headers, f"message {i}: headers {m.headers()!r}"


@pytest.mark.parametrize("acks", ["0", "1"])
def test_acks_0_and_1_counts(broker, acks):
    topic = unique_topic(f"acks{acks}")
    n = 2000
    p = producer(broker.bootstrap, acks=acks)
    errors = []
    for i in range(n):
        for _ in range(1000):
            try:
                p.produce(topic, key=str(i).encode(), value=f"v{i}".encode(),
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(30) == 0
    assert not errors, f"delivery errors: {errors[:3]}"

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "sluice-tests-unused"})
    try:
        tp = TopicPartition(topic, 0)
        wait_until(lambda: c.get_watermark_offsets(tp, timeout=5) == (0, n), 15,
                   what=f"watermarks (0, {n})")
    finally:
        c.close()
    got = consume_all(broker.bootstrap, topic, 1, n)
    assert [m.value() for m in got] == [f"v{i}".encode() for i in range(n)]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_round_trip(broker, codec):
    topic = unique_topic(f"z{codec}")
    messages = [(f"k{i}".encode(), (f"value {i} " * (i % 40 + 1)).encode(), [("i", str(i).encode())])
                for i in range(500)]
    produce_and_collect(producer(broker.bootstrap, **{"compression.type": codec}), messages, topic)
    got = consume_all(broker.bootstrap, topic, 1, len(messages))
    assert [(m.key(), m.value(), m.headers()) for m in got] == messages


def test_near_one_megabyte_value(broker):
    topic = unique_topic("big")
    value = random.Random(3).randbytes(900_000)
    produce_and_collect(producer(broker.bootstrap), [(b"k", value, None)], topic)
    got = consume_all(broker.bootstrap, topic, 1, 1)
    assert got[0].value() == value


def test_restart_keeps_topics_and_data(broker_factory):
    b = broker_factory.start()
    multi, auto = unique_topic("keep3"), unique_topic("keepauto")
    create_topic(b.bootstrap, multi, 3)
    first = make_messages(600, seed=11)
    produce_and_collect(producer(b.bootstrap), first, multi)
    produce_and_collect(producer(b.bootstrap), first[:50], auto)

    b2 = broker_factory.restart(b)
    md = AdminClient({"bootstrap.servers": b2.bootstrap}).list_topics(timeout=10)
    assert multi in md.topics and auto in md.topics, f"topics after restart: {sorted(md.topics)}"
    assert len(md.topics[multi].partitions) == 3
    assert len(md.topics[auto].partitions) == 1

    got = consume_all(b2.bootstrap, multi, 3, len(first))
    assert sorted(m.value() or b"" for m in got) == sorted(v or b"" for _, v, _ in first)
    got_auto = consume_all(b2.bootstrap, auto, 1, 50)
    assert [m.value() for m in got_auto] == [v for _, v, _ in first[:50]]

    # Offsets continue where they stopped.
    reports = produce_and_collect(producer(b2.bootstrap), [(b"x", b"after-restart", None)], auto)
    assert reports == [(0, 50)]
