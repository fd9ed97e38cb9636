"""Malformed and unknown requests on raw sockets.

Covers: garbage bytes, a frame too short to hold a header, zero and negative
sizes, a truncated frame followed by EOF, and a 0x7fffffff size each get their
connection closed; a half-sent frame that just stalls does not block anyone;
throughout, separate confluent-kafka and kafka-python clients keep producing
and consuming.  An unknown API key (9999 v0) is answered with the same
correlation id and the connection stays usable for an ApiVersions v0 request.  A CreateTopics
whose manual assignment lists more broker ids than an i16 holds is refused and creates nothing
(the count once wrapped: 65,537 ids read as replication factor 1).
"""

import socket
import struct

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KTopicPartition

from support import api_versions, connection_closed, recv_frame, request_frame, unique_topic, wait_until

CLOSE_WITHIN_S = 5.0

BAD_INPUTS = {
    "http_garbage": b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "random_bytes": bytes((i * 167 + 13) % 256 for i in range(512)),
    "size_0x7fffffff": struct.pack(">i", 0x7FFFFFFF) + b"\x00\x12\x00\x00",
    "negative_size": struct.pack(">i", -1) + b"\x00" * 16,
    "zero_size": struct.pack(">i", 0),
    "header_too_short": struct.pack(">i", 3) + b"\x00\x12\x00",
}


def check_clients_work(bootstrap: str, tag: str) -> None:
    """One confluent-kafka and one kafka-python produce/consume round trip."""
    topic = unique_topic(f"ok-{tag}")
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all",
                  "message.timeout.ms": 15000})
    for i in range(20):
        p.produce(topic, value=f"c{i}".encode(), partition=0)
    assert p.flush(20) == 0, "confluent producer could not deliver"
    kp = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    for i in range(20):
        kp.send(topic, value=f"k{i}".encode(), partition=0)
    kp.flush(timeout=20)
    kp.close(timeout=10)
    want = [f"c{i}".encode() for i in range(20)] + [f"k{i}".encode() for i in range(20)]

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-tests-unused",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []

    def more():
        for m in c.consume(num_messages=100, timeout=0.5):
            if m.error() is None:
                got.append(m.value())
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"consume error: {m.error()}")
        return len(got) >= len(want)

    try:
        wait_until(more, 20, interval=0, what="confluent consumer reading 40 messages")
    finally:
        c.close()
    assert got == want

    kc = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                       fetch_max_wait_ms=100)
    tp = KTopicPartition(topic, 0)
    kc.assign([tp])
    kc.seek_to_beginning(tp)
    kgot = []

    def kmore():
        for recs in kc.poll(timeout_ms=500).values():
            kgot.extend(r.value for r in recs)
        return len(kgot) >= len(want)

    try:
        wait_until(kmore, 20, interval=0, what="kafka-python consumer reading 40 messages")
    finally:
        kc.close()
    assert kgot == want


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_closes_connection(broker, name):
    with socket.create_connection((broker.host, broker.port), timeout=5) as s:
        s.sendall(BAD_INPUTS[name])
        assert connection_closed(s, CLOSE_WITHIN_S), f"{name}: connection still open after {CLOSE_WITHIN_S}s"
    check_clients_work(broker.bootstrap, name.replace("_", "")[:8])


def test_truncated_frame_then_eof_closes(broker):
    frame = request_frame(18, 0, 42)
    with socket.create_connection((broker.host, broker.port), timeout=5) as s:
        s.sendall(frame[: len(frame) // 2])
        s.shutdown(socket.SHUT_WR)
        assert connection_closed(s, CLOSE_WITHIN_S), "broker kept a half-closed, truncated connection"
    check_clients_work(broker.bootstrap, "trunc")


def test_stalled_partial_frames_do_not_block_others(broker):
    socks = []
    try:
        for i in range(8):  # more than the shard count, so every shard holds one
            s = socket.create_connection((broker.host, broker.port), timeout=5)
            s.sendall(struct.pack(">i", 1000) + b"\x00\x12\x00\x00" + bytes(10))
            socks.append(s)
        check_clients_work(broker.bootstrap, "stall")
    finally:
        for s in socks:
            s.close()


def test_unknown_api_key_answered_and_connection_kept(broker):
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        s.sendall(request_frame(9999, 0, 0x1234ABCD))
        resp = recv_frame(s)
        assert resp is not None, "connection closed instead of answering unknown API key 9999"
        assert len(resp) >= 4
        (corr,) = struct.unpack_from(">i", resp, 0)
        assert corr == 0x1234ABCD, f"answer carries correlation id {corr:#x}"
        versions = api_versions(s, 77)
        assert 18 in versions and 0 in versions, f"ApiVersions listed {sorted(versions)}"
    check_clients_work(broker.bootstrap, "unknown")


def test_create_topics_with_more_broker_ids_than_an_i16_is_refused(broker):
    topic = unique_topic("rf-wrap")
    name = topic.encode()
    ids = 65537  # 65537 as an i16 is 1
    body = (
        struct.pack(">i", 1)  # topics
        + struct.pack(">h", len(name)) + name
        + struct.pack(">ih", -1, -1)  # num_partitions, replication_factor: from the assignment
        + struct.pack(">i", 1)  # assignments
        + struct.pack(">i", 0)  # partition_index
        + struct.pack(">i", ids) + struct.pack(">i", 0) * ids  # broker_ids
        + struct.pack(">i", 0)  # configs
        + struct.pack(">i", 10_000)  # timeout_ms
        + b"\x00"  # validate_only
    )
    with socket.create_connection((broker.host, broker.port), timeout=10) as s:
        s.sendall(request_frame(19, 2, 5150, body))
        resp = recv_frame(s)
    assert resp is not None, "connection closed instead of answering CreateTopics"
    corr, _throttle, n = struct.unpack_from(">iii", resp, 0)
    assert (corr, n) == (5150, 1), f"correlation {corr}, {n} topics"
    (name_len,) = struct.unpack_from(">h", resp, 12)
    (err,) = struct.unpack_from(">h", resp, 14 + name_len)
    assert err != 0, "a CreateTopics with 65,537 replicas per partition was accepted"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "md"})
    try:
        assert topic not in c.list_topics(timeout=10).topics, "the refused topic exists"
    finally:
        c.close()
