"""kafka-python (pure Python client) against sluice.

Covers: a produce/consume round trip with keys and headers through a
group-less consumer with assign(); listing topics; creating and deleting a
topic with KafkaAdminClient (and TopicAlreadyExists on a second create);
ListOffsets through beginning_offsets/end_offsets, and offsets_for_times with
explicit record timestamps.
"""

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from support import unique_topic, wait_until


def producer(bootstrap: str, **extra) -> KafkaProducer:
    # The broker has no InitProducerId yet, so idempotence (on by default in 3.x) is off.
    conf = dict(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5)
    conf.update(extra)
    return KafkaProducer(**conf)


def consumer(bootstrap: str) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=100)


def read(c: KafkaConsumer, tp: TopicPartition, n: int, timeout: float = 30.0) -> list:
    got = []

    def more():
        for records in c.poll(timeout_ms=500, max_records=1000).values():
            got.extend(records)
        return len(got) >= n

    wait_until(more, timeout, interval=0, what=f"{n} records from {tp} (have {len(got)})")
    return got


@pytest.fixture
def admin(broker):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=15000)
    yield a
    a.close()


def test_round_trip_keys_and_headers(broker):
    topic = unique_topic("kp")
    n = 300
    p = producer(broker.bootstrap)
    sent = []
    for i in range(n):
        key = None if i % 10 == 0 else f"k{i}".encode()
        value = b"" if i % 25 == 0 else bytes(range(i % 256)) + f"|{i}".encode()
        headers = [("n", str(i).encode()), ("dup", b"a"), ("dup", b"b")]
        sent.append((key, value, headers))
        p.send(topic, key=key, value=value, headers=headers)
    p.flush(timeout=30)
    p.close(timeout=10)

    c = consumer(broker.bootstrap)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = read(c, tp, n)
    c.close()
    assert [r.offset for r in got] == list(range(n))
    for r, (key, value, headers) in zip(got, sent):
        assert (r.key, r.value, list(r.headers)) == (key, value, headers), f"offset {r.offset}"


def test_list_create_delete_topics(broker, admin):
    auto = unique_topic("kauto")
    p = producer(broker.bootstrap)
    p.send(auto, b"x").get(timeout=15)
    p.close(timeout=10)
    assert auto in admin.list_topics()

    name = unique_topic("kadmin")
    admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)], timeout_ms=15000)
    c = consumer(broker.bootstrap)
    wait_until(lambda: c.partitions_for_topic(name) == {0, 1, 2, 3}, 15,
               what=f"{name} with partitions 0..3")
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)], timeout_ms=15000)

    admin.delete_topics([name], timeout_ms=15000)
    wait_until(lambda: name not in admin.list_topics(), 15, what=f"{name} gone from list_topics")
    assert auto in admin.list_topics()
    c.close()


def test_list_offsets_beginning_and_end(broker, admin):
    topic = unique_topic("koff")
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)], timeout_ms=15000)
    p = producer(broker.bootstrap)
    for i in range(70):
        p.send(topic, value=f"a{i}".encode(), partition=0)
    for i in range(30):
        p.send(topic, value=f"b{i}".encode(), partition=1)
    p.flush(timeout=30)
    p.close(timeout=10)

    c = consumer(broker.bootstrap)
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    assert c.beginning_offsets(tps) == {tps[0]: 0, tps[1]: 0}
    assert c.end_offsets(tps) == {tps[0]: 70, tps[1]: 30}
    c.close()


def test_offsets_for_times(broker):
    topic = unique_topic("ktime")
    base = 1_700_000_000_000
    p = producer(broker.bootstrap)
    for i in range(10):
        p.send(topic, value=f"t{i}".encode(), timestamp_ms=base + i * 1000)
    p.flush(timeout=30)
    p.close(timeout=10)

    c = consumer(broker.bootstrap)
    tp = TopicPartition(topic, 0)
    found = c.offsets_for_times({tp: base + 4500})[tp]
    assert found is not None and (found.offset, found.timestamp) == (5, base + 5000)
    exact = c.offsets_for_times({tp: base})[tp]
    assert (exact.offset, exact.timestamp) == (0, base)
    assert c.offsets_for_times({tp: base + 60_000})[tp] is None
    c.close()
