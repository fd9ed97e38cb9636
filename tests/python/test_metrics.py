"""The metrics endpoint: Prometheus text that a real parser accepts, figures that move under
load, readiness, and the per-shard view (partitions per shard, fsync latency, queue depth)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from support import metrics_address, scrape, total, unique_topic, wait_until


def test_metrics_parse_and_move_under_load(broker_factory):
    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    with urllib.request.urlopen(f"http://{addr}/ready", timeout=10) as r:
        assert r.status == 200 and r.read() == b"ready\n"

    topic = unique_topic("metrics")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(timeout=30)
    before = scrape(addr)
    # Partitions are spread over both shards (plus the internal offsets topic).
    per_shard = [total(before, "sluice_partitions", shard=str(s)) for s in (0, 1)]
    assert sum(per_shard) >= 4 and all(p > 0 for p in per_shard), per_shard

    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2})
    for i in range(2000):
        producer.produce(topic, key=str(i), value=b"x" * 200, partition=i % 4)
        if i % 500 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g"),
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    got, deadline = 0, time.monotonic() + 30
    while got < 2000 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and not m.error():
            got += 1
    assert got == 2000
    during = scrape(addr)
    assert total(during, "sluice_connections") >= 1, "the consumer is connected"
    consumer.close()

    after = scrape(addr)
    assert total(after, "sluice_requests_total", api="Produce") > total(before, "sluice_requests_total", api="Produce")
    assert total(after, "sluice_requests_total", api="Fetch") > 0
    assert total(after, "sluice_topic_bytes_in_total", topic=topic) >= 2000 * 200
    assert total(after, "sluice_topic_bytes_out_total", topic=topic) >= 2000 * 200
    assert total(after, "sluice_fsync_latency_seconds_count") > total(before, "sluice_fsync_latency_seconds_count")
    assert total(after, "sluice_bytes_written_total") > 0
    assert total(after, "sluice_request_latency_seconds_count", api="Produce") > 0
    # Partitions on shard 1 were produced through connections on shard 0 or the reverse.
    assert total(after, "sluice_cross_core_messages_sent_total") > 0
    assert total(after, "sluice_stage_latency_seconds_count", stage="append") > 0
    assert total(after, "sluice_inflight_requests") >= 0
    hits = total(after, "sluice_read_memory_hit_ratio")
    assert 0.0 <= hits <= 2.0


def test_deleted_topic_series_are_dropped(broker_factory):
    """A deleted topic's per-topic series leave the endpoint on every shard (it is not listed
    forever); the other topic's stay."""
    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    doomed, kept = unique_topic("metrics-del"), unique_topic("metrics-keep")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(doomed, 4, 1), NewTopic(kept, 2, 1)]).values():
        f.result(timeout=30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2})
    for i in range(400):
        producer.produce(doomed, value=b"d" * 100, partition=i % 4)
        producer.produce(kept, value=b"k" * 100, partition=i % 2)
    assert producer.flush(30) == 0
    before = scrape(addr)
    assert total(before, "sluice_topic_bytes_in_total", topic=doomed) >= 400 * 100
    assert total(before, "sluice_topic_bytes_in_total", topic=kept) >= 400 * 100

    admin.delete_topics([doomed])[doomed].result(timeout=30)

    def gone():
        names = {dict(labels).get("topic") for (name, labels) in scrape(addr)
                 if name.startswith("sluice_topic_bytes")}
        return names if doomed not in names else None
    names = wait_until(gone, timeout=15, what=f"the series of deleted topic {doomed} to leave /metrics")
    assert kept in names, names
    after = scrape(addr)
    assert total(after, "sluice_topic_bytes_in_total", topic=kept) >= 400 * 100


def test_metrics_endpoint_rejects_other_paths(broker_factory):
    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    try:
        urllib.request.urlopen(f"http://{addr}/nope", timeout=10)
        raise AssertionError("expected a 404")
    except urllib.error.HTTPError as e:
        assert e.code == 404
