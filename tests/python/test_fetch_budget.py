"""A Fetch reads about what its answer can carry: each owner shard reads partitions in request
order and starts no more reads once the request's max_bytes came back; the partitions left
are answered empty with their watermarks. Before, every partition was read (up to its
partition max) and the answer then cut to max_bytes, so a consumer of many partitions made
the broker read many times what it sent (with 1,000 partitions, ~1 GB per 50 MB answer).

Counted with `sluice_partition_read_bytes_total` (bytes partition reads returned to fetches)
against `sluice_topic_bytes_out_total` (bytes the answers carried) while confluent-kafka
consumes everything of a 100-partition topic with fetch.max.bytes 1 MiB. Owner shards read
concurrently, each up to the whole max_bytes (so answers fill up whichever shard has the
data): with the test brokers' 2 shards that is up to ~2x what is sent (2.2x measured), where
reading every partition was ~10x."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import CORES
from support import metrics_address, scrape, total, unique_topic

PARTITIONS = 100
PER_PARTITION = 200
VALUE = b"f" * 1000


def test_fetch_reads_about_max_bytes(broker_factory):
    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    topic = unique_topic("budget")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(PARTITIONS * PER_PARTITION):
        for _ in range(100):
            try:
                producer.produce(topic, value=VALUE, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0

    before = scrape(addr)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g"),
                         "enable.auto.commit": False, "fetch.max.bytes": 1048576,
                         "max.partition.fetch.bytes": 1048576, "fetch.wait.max.ms": 100})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    want = PARTITIONS * PER_PARTITION
    got, deadline = 0, time.monotonic() + 60
    while got < want and time.monotonic() < deadline:
        for m in consumer.consume(1000, 0.5):
            if m.error() is None:
                got += 1
    consumer.close()
    assert got == want, f"consumed {got} of {want}"

    after = scrape(addr)
    read = total(after, "sluice_partition_read_bytes_total") - total(before, "sluice_partition_read_bytes_total")
    sent = total(after, "sluice_topic_bytes_out_total", topic=topic) - total(before, "sluice_topic_bytes_out_total", topic=topic)
    fetches = total(after, "sluice_requests_total", api="Fetch") - total(before, "sluice_requests_total", api="Fetch")
    print(f"partition reads returned {read:.0f} B, answers carried {sent:.0f} B ({read / sent:.2f}x), fetches {fetches:.0f}")
    assert sent >= want * len(VALUE), f"answers carried {sent:.0f} B for {want} records of {len(VALUE)} B"
    assert read <= (CORES + 1) * sent, f"fetches read {read:.0f} B from the logs to send {sent:.0f} B"
