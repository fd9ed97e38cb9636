"""A consumer at the tail of a partition that is being written is served from memory: the
flusher's writes fill the read cache (write-through), so the broker reads next to nothing from
the device. Before, the growing last chunk of the active segment was re-read from the device
for every fetch (~28-55x the produced bytes); reading such chunks by range alone gives ~1.3x.

Counted with `sluice_bytes_read_total` (direct-I/O bytes read from segment files) around a
run of a confluent-kafka producer (acks=all, small batches) and a consumer following it."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from support import metrics_address, scrape, total, unique_topic

MESSAGES = 4000
VALUE = b"t" * 1000


def test_tail_consumer_is_served_from_memory(broker_factory):
    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    topic = unique_topic("tail")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g"),
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = [0]
    done = threading.Event()

    def follow():
        deadline = time.monotonic() + 60
        while got[0] < MESSAGES and time.monotonic() < deadline:
            m = consumer.poll(0.1)
            if m is not None and m.error() is None:
                got[0] += 1
        done.set()

    before = scrape(addr)
    t = threading.Thread(target=follow)
    t.start()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for i in range(MESSAGES):
        producer.produce(topic, value=VALUE, partition=0)
        if i % 20 == 19:
            # Small flush rounds, each followed by the consumer's fetch of what it added.
            assert producer.flush(30) == 0
    assert producer.flush(30) == 0
    assert done.wait(70), "the consumer did not finish"
    t.join(10)
    consumer.close()
    assert got[0] == MESSAGES, f"consumed {got[0]} of {MESSAGES}"

    after = scrape(addr)
    produced = MESSAGES * len(VALUE)
    read = total(after, "sluice_bytes_read_total") - total(before, "sluice_bytes_read_total")
    fetches = total(after, "sluice_requests_total", api="Fetch") - total(before, "sluice_requests_total", api="Fetch")
    print(f"produced {produced} B, device bytes read {read:.0f} ({read / produced:.2f}x), fetches {fetches:.0f}")
    assert fetches >= 50, f"only {fetches} fetches: the consumer did not follow the tail"
    assert read <= produced / 4, f"a tail consumer made the broker read {read:.0f} B for {produced} B produced"


def test_read_cache_is_bounded_by_its_setting(broker_factory, tmp_path):
    """`read_cache_bytes_per_shard` bounds each shard's cache, which the flusher's writes fill:
    after 400 MB produced over 2 shards each holds more than half its bound and not more."""
    import json
    import subprocess

    from conftest import SLUICE_BIN

    bound = 128 * 1024 * 1024
    cfg = tmp_path / "cache.toml"
    cfg.write_text(f"read_cache_bytes_per_shard = {bound}\n")
    broker = broker_factory.start(config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    r = subprocess.run([str(SLUICE_BIN), "bench", "produce", "--broker", broker.bootstrap,
                        "--topic", unique_topic("cache"), "--partitions", "4", "--records", "400000",
                        "--record-size", "1000", "--acks", "1", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    assert json.loads(r.stdout.decode().strip().splitlines()[-1])["errors"] == 0
    samples = scrape(addr)
    held = [total(samples, "sluice_read_cache_bytes", shard=str(s)) for s in (0, 1)]
    print(f"read cache bytes per shard: {held}")
    for h in held:
        assert bound / 2 < h <= bound, f"a shard's read cache holds {h:.0f} B with a bound of {bound}"
