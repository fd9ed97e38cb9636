"""Compression codecs across clients against sluice.

For each of gzip, snappy, lz4 and zstd: 200 messages produced by kafka-python
(compression_type=codec) then 200 by confluent-kafka (compression.type=codec)
into one partition, then read back from offset 0 with BOTH kafka-python and
confluent-kafka, every key and value byte-exact and in order.  kafka-python
needs python-snappy, lz4 and zstandard for the non-gzip codecs (pinned in
requirements.txt); a case whose codec module is missing is skipped, not passed.
"""

import random

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition
from kafka import codec as kcodec

import socket
import struct

from support import (create_topic, fetch_v4_request, parse_fetch_v4_single, recv_frame,
                     unique_topic, wait_until)

N = 200

CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

AVAILABLE = {
    "gzip": kcodec.has_gzip,
    "snappy": kcodec.has_snappy,
    "lz4": kcodec.has_lz4,
    "zstd": kcodec.has_zstd,
}


def make_values(tag: str, seed: int) -> list:
    rng = random.Random(seed)
    out = []
    for i in range(N):
        if i % 3 == 0:  # compressible
            v = (f"{tag}-{i}-" * (1 + i % 50)).encode()
        elif i % 3 == 1:  # incompressible
            v = rng.randbytes(rng.randrange(0, 3000))
        else:
            v = bytes(range(256)) * (i % 5) + f"|{tag}|{i}".encode()
        out.append((f"{tag}-k{i}".encode(), v))
    return out


def produce_kafka_python(bootstrap: str, topic: str, codec: str, msgs: list) -> None:
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                      linger_ms=20, compression_type=codec)
    try:
        futures = [p.send(topic, key=k, value=v, partition=0) for k, v in msgs]
        p.flush(timeout=30)
        offsets = [f.get(timeout=30).offset for f in futures]
        assert offsets == list(range(offsets[0], offsets[0] + len(msgs))), "non-contiguous offsets"
    finally:
        p.close(timeout=10)


def produce_confluent(bootstrap: str, topic: str, codec: str, msgs: list) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all",
                  "linger.ms": 20, "compression.type": codec})
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)

    for k, v in msgs:
        p.produce(topic, key=k, value=v, partition=0, on_delivery=cb)
    left = p.flush(30)
    assert left == 0, f"{left} messages undelivered"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
    p.close()


def consume_confluent(bootstrap: str, topic: str, n: int) -> list:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-tests-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []

        def more():
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None:
                    got.append((m.offset(), m.key(), m.value()))
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consume error: {m.error()}")
            return len(got) >= n

        wait_until(more, 60, interval=0, what=f"{n} messages (have {len(got)})")
        extra = [m for m in c.consume(num_messages=100, timeout=0.5) if m.error() is None]
        assert not extra, f"{len(extra)} unexpected extra messages"
        return got
    finally:
        c.close()


def consume_kafka_python(bootstrap: str, topic: str, n: int) -> list:
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", fetch_max_wait_ms=100)
    try:
        tp = KTopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        got = []

        def more():
            for records in c.poll(timeout_ms=500, max_records=1000).values():
                got.extend((r.offset, r.key, r.value) for r in records)
            return len(got) >= n

        wait_until(more, 60, interval=0, what=f"{n} records (have {len(got)})")
        extra = [r for rs in c.poll(timeout_ms=500).values() for r in rs]
        assert not extra, f"{len(extra)} unexpected extra records"
        return got
    finally:
        c.close()


def stored_codecs(bootstrap: str, topic: str) -> set:
    """Compression codec ids (attributes & 7) of the batches a raw Fetch v4 from offset 0 returns."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(fetch_v4_request(7, topic, 0, 0, 100))
        resp = recv_frame(s)
    assert resp is not None
    _corr, err, _hw, records = parse_fetch_v4_single(resp)
    assert err == 0, f"fetch error_code {err}"
    codecs, pos = set(), 0
    while pos + 23 <= len(records):
        (blen,) = struct.unpack_from(">i", records, pos + 8)
        (attrs,) = struct.unpack_from(">h", records, pos + 21)
        codecs.add(attrs & 7)
        pos += 12 + blen
    return codecs


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_codec_cross_client(broker, codec):
    if not AVAILABLE[codec]():
        pytest.skip(f"kafka-python has no {codec} support installed (codec module missing)")
    topic = unique_topic(f"codec-{codec}")
    create_topic(broker.bootstrap, topic, 1)

    kp_msgs = make_values(f"kp-{codec}", 1)
    ck_msgs = make_values(f"ck-{codec}", 2)
    produce_kafka_python(broker.bootstrap, topic, codec, kp_msgs)
    produce_confluent(broker.bootstrap, topic, codec, ck_msgs)
    expected = [(i, k, v) for i, (k, v) in enumerate(kp_msgs + ck_msgs)]

    # The batches are stored as the clients compressed them (not decompressed or re-encoded).
    assert stored_codecs(broker.bootstrap, topic) == {CODEC_IDS[codec]}

    by_confluent = consume_confluent(broker.bootstrap, topic, len(expected))
    assert len(by_confluent) == len(expected)
    for got, want in zip(by_confluent, expected):
        assert got == want, f"confluent-kafka read offset {got[0]} differs from what was sent at {want[0]}"

    by_kafka_python = consume_kafka_python(broker.bootstrap, topic, len(expected))
    assert len(by_kafka_python) == len(expected)
    for got, want in zip(by_kafka_python, expected):
        assert got == want, f"kafka-python read offset {got[0]} differs from what was sent at {want[0]}"
