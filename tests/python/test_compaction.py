"""Compacted topics (`cleanup.policy=compact`).

Produce validation, as Kafka's LogValidator: a record without a key on a
compacted topic fails its partition with INVALID_RECORD (87), one
`record_errors` entry per keyless record (its index in the batch and
"Compacted topic cannot accept message without key in topic partition T-P"),
and the partition error message Kafka builds from them; compressed batches are
decompressed to see their keys; the request's other partitions and topics are
stored as usual.  Checked with raw Produce v8 frames (to see `record_errors`,
which clients do not expose) and with confluent-kafka (librdkafka's delivery
error, as its test 0011 expects from Kafka).

Compaction: many updates of few keys and tombstones produced by confluent-kafka
to a compacted topic with 4 KiB segments; the shard's compactor (on the
retention timer, here every 200 ms) cleans the sealed segments; a consumer from
the beginning (confluent-kafka, then kafka-python) sees one record per key with
its latest value, no deleted key once past `delete.retention.ms`, offsets
increasing with gaps; the same after a restart, which cleans nothing again (the
cleaner checkpoint).
"""

from __future__ import annotations

import socket
import struct

import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka.record.default_records import DefaultRecordBatchBuilder

from support import kstr, metrics_address, recv_frame, request_frame, scrape, total, unique_topic, wait_until

MSG = "Compacted topic cannot accept message without key in topic partition {}"


def create(bootstrap: str, name: str, partitions: int, config: dict) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)],
                             operation_timeout=15, request_timeout=15)
    fs[name].result(timeout=15)

    def ready():
        t = admin.list_topics(topic=name, timeout=5).topics.get(name)
        return t is not None and t.error is None and len(t.partitions) == partitions
    wait_until(ready, 15, what=f"topic {name} in metadata")


def batch(keys: list, codec: int = 0) -> bytes:
    """One v2 batch, a record per key (None: no key), values v0, v1, …"""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    for i, k in enumerate(keys):
        b.append(i, timestamp=1_700_000_000_000, key=k, value=f"v{i}".encode(), headers=[])
    return bytes(b.build())


def produce_v8(sock: socket.socket, topics: list) -> dict:
    """Sends Produce v8 (acks=-1) for [(topic, [(partition, batch bytes)])] and returns
    {(topic, partition): (error_code, base_offset, [(batch_index, message)], error_message)}."""
    body = struct.pack(">hhi", -1, -1, 15000) + struct.pack(">i", len(topics))
    for name, parts in topics:
        body += kstr(name) + struct.pack(">i", len(parts))
        for p, data in parts:
            body += struct.pack(">ii", p, len(data)) + data
    sock.sendall(request_frame(0, 8, 7, body))
    resp = recv_frame(sock)
    assert resp is not None, "connection closed"
    pos = 4  # correlation id

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, resp, pos)
        pos += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def string():
        nonlocal pos
        n = take(">h")
        if n < 0:
            return None
        s = resp[pos:pos + n].decode()
        pos += n
        return s

    out = {}
    for _ in range(take(">i")):
        name = string()
        for _ in range(take(">i")):
            index, code, base, _append_time, _start = take(">ihqqq")
            errors = []
            for _ in range(take(">i")):
                bi = take(">i")
                errors.append((bi, string()))
            out[(name, index)] = (code, base, errors, string())
    return out


def test_keyless_records_are_refused_on_a_compacted_topic_only(broker):
    compacted, plain = unique_topic("compacted"), unique_topic("plain")
    create(broker.bootstrap, compacted, 3, {"cleanup.policy": "compact"})
    create(broker.bootstrap, plain, 1, {})
    sock = socket.create_connection((broker.host, broker.port), timeout=20)
    try:
        got = produce_v8(sock, [
            (compacted, [
                (0, batch([b"a", None, b"", None])),       # records 1 and 3 have no key
                (1, batch([b"a", b"b"], codec=1)),        # gzip, all keyed
                (2, batch([b"a", None, b"c"], codec=1)),  # gzip, record 1 keyless
            ]),
            (plain, [(0, batch([None, None]))]),
        ])
    finally:
        sock.close()
    code, base, errors, message = got[(compacted, 0)]
    assert code == 87, got
    assert base == -1
    tp = f"{compacted}-0"
    assert errors == [(1, MSG.format(tp)), (3, MSG.format(tp))]
    assert message == ("One or more records have been rejected due to 2 record errors in total, and only showing "
                       f"the first three errors at most: [RecordError(batchIndex=1, message='{MSG.format(tp)}'), "
                       f"RecordError(batchIndex=3, message='{MSG.format(tp)}')]")
    assert got[(compacted, 1)][:3] == (0, 0, []), got
    code, _, errors, _ = got[(compacted, 2)]
    assert (code, errors) == (87, [(1, MSG.format(f"{compacted}-2"))]), got
    assert got[(plain, 0)][:3] == (0, 0, []), got


def test_librdkafka_gets_invalid_record_for_a_keyless_record(broker):
    topic = unique_topic("compacted")
    create(broker.bootstrap, topic, 1, {"cleanup.policy": "compact,delete"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": False, "retries": 0})
    reports = {}

    def cb(name):
        return lambda err, msg: reports.__setitem__(name, (err, msg.offset()))
    p.produce(topic, value=b"no key", partition=0, on_delivery=cb("keyless"))
    p.flush(30)
    p.produce(topic, key=b"k", value=b"keyed", partition=0, on_delivery=cb("keyed"))
    p.flush(30)
    err, _ = reports["keyless"]
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, reports
    err, offset = reports["keyed"]
    assert err is None and offset == 0, reports


KEYS = 8
UPDATES = 150
FILLERS = 300


def consume_all(bootstrap: str, topic: str, end: int) -> list:
    """(offset, key, value) of every record of partition 0 up to `end`, from the beginning."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"), "enable.auto.commit": False,
                  "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out = []
        deadline = time.monotonic() + 20
        for _ in range(10_000):
            if time.monotonic() > deadline:
                raise AssertionError(f"consumer did not reach offset {end}: {len(out)} records")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    if m.offset() >= end:
                        break
                    continue
                raise AssertionError(m.error())
            out.append((m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


def produce_updates(bootstrap: str, topic: str) -> int:
    """Produces UPDATES rounds of KEYS keys (k3 deleted halfway and for good at the end), then
    FILLERS unique keys so that the updates end up in sealed segments. Returns the log end."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "batch.num.messages": 5})
    for r in range(UPDATES):
        for k in range(KEYS):
            tomb = k == 3 and (r == UPDATES // 2 or r == UPDATES - 1)
            p.produce(topic, key=f"k{k}".encode(), value=None if tomb else f"k{k}-r{r}".encode(), partition=0)
        p.poll(0)
    for n in range(FILLERS):
        p.produce(topic, key=f"filler-{n}".encode(), value=b"f" * 40, partition=0)
    assert p.flush(30) == 0
    return UPDATES * KEYS + FILLERS


def check_compacted(records: list, end: int) -> None:
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets increase"
    assert offsets[-1] == end - 1, "the last record stays"
    keys = [k for _, k, _ in records]
    assert len(keys) == len(set(keys)), f"one record per key: {len(keys)} records, {len(set(keys))} keys"
    latest = {k: v for _, k, v in records}
    for k in range(KEYS):
        if k == 3:
            assert f"k{k}".encode() not in latest, "a deleted key is gone after delete.retention.ms"
        else:
            assert latest[f"k{k}".encode()] == f"k{k}-r{UPDATES - 1}".encode()
    assert sum(1 for k in keys if k.startswith(b"filler-")) == 2 * FILLERS


def test_a_compacted_topic_keeps_the_latest_value_per_key(broker_factory, tmp_path):
    cfg = tmp_path / "sluice-compaction.toml"
    cfg.write_text("log_retention_check_interval_ms = 200\n")
    broker = broker_factory.start(config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"))
    topic = unique_topic("compacted")
    create(broker.bootstrap, topic, 1, {
        "cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "0",
    })
    end = produce_updates(broker.bootstrap, topic)
    assert len(consume_all(broker.bootstrap, topic, end)) <= end

    # The first cleaning keeps k3's tombstone and stamps its delete horizon (Kafka 4, KIP-534:
    # delete.retention.ms, here 0, counts from that cleaning); a later pass, due to more data,
    # removes it.
    def first_cleaning():
        keys = [k for _, k, _ in consume_all(broker.bootstrap, topic, end)]
        return len(keys) == len(set(keys))
    wait_until(first_cleaning, 30, interval=0.5, what="one record per key")
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2, "batch.num.messages": 5})
    for n in range(FILLERS, 2 * FILLERS):
        p.produce(topic, key=f"filler-{n}".encode(), value=b"f" * 40, partition=0)
    assert p.flush(30) == 0
    end += FILLERS

    def compacted():
        recs = consume_all(broker.bootstrap, topic, end)
        keys = [k for _, k, _ in recs]
        return recs if len(keys) == len(set(keys)) and b"k3" not in keys else None
    records = wait_until(compacted, 30, interval=0.5, what="one record per key")
    check_compacted(records, end)
    # Gaps: far fewer records than offsets.
    assert len(records) == KEYS - 1 + 2 * FILLERS < end
    # The metrics count what compaction did: every offset without a record is one it removed.
    m = scrape(metrics_address(broker))
    assert total(m, "sluice_compaction_passes_total") >= 1
    assert total(m, "sluice_compaction_failures_total") == 0
    assert total(m, "sluice_compaction_segments_rewritten_total") >= 1
    assert total(m, "sluice_compaction_bytes_removed_total") > 0
    assert total(m, "sluice_compaction_records_removed_total") == end - len(records)
    # kafka-python reads the same from the beginning.
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        kc.assign([KTopicPartition(topic, 0)])
        kc.seek_to_beginning()
        seen = []
        for m in kc:
            seen.append((m.offset, m.key, m.value))
            if m.offset >= end - 1:
                break
    finally:
        kc.close()
    assert seen == records
    # Every sealed segment cleaned: the cleaner checkpoint reached the active segment's base.
    part = Path(broker.data_dir) / f"{topic}-0"

    def all_clean():
        bases = sorted(int(p.name[:-4]) for p in part.glob("*.log"))
        cp = part / "cleaner-offset-checkpoint"
        return cp.exists() and int(cp.read_text()) == bases[-1]
    wait_until(all_clean, 30, interval=0.2, what="the cleaner checkpoint at the active segment")
    # After a restart the log serves the same records, and the checkpoint spares a pass over
    # what was cleaned before (without it every sealed segment is dirty again).
    broker = broker_factory.restart(broker, config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"))
    assert consume_all(broker.bootstrap, topic, end) == records
    time.sleep(2)  # ten retention-timer rounds
    m = scrape(metrics_address(broker))
    assert total(m, "sluice_compaction_passes_total") == 0
    assert total(m, "sluice_compaction_segments_rewritten_total") == 0
