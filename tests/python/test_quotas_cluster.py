"""Client quotas in a 3-broker sluice cluster: quotas are cluster metadata (QuotaChanged records
committed through the metadata log), so a quota set with Kafka's Java Admin client
(alterClientQuotas, the request `kafka-configs` sends; ClientQuotas.java) through one
broker throttles a librdkafka producer writing to a partition led by another broker, and it
still does after that broker restarts.
"""

from __future__ import annotations

import signal
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cluster_support import SluiceCluster, _stop_proc
from support import unique_topic, wait_until
from test_quotas_request import client_quotas

PARTITIONS = 6
QUOTA = 20_000  # bytes per second
VALUE = b"q" * 1000
TIMEOUT = 60


class BrokerThrottles:
    """librdkafka's throttle events as (broker id, seconds)."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append((event.broker_id, event.throttle_time))

    def positive_from(self, broker: int) -> list:
        return [t for b, t in self.events if b == broker and t > 0]


def produce_until_throttled(bootstrap: str, topic: str, partition: int, leader: int, client_id: str,
                            seconds: float, want: int = 3):
    """Produces to one partition as fast as librdkafka takes it, for at most `seconds` or until
    `want` positive throttle events from `leader`; returns the events and the bytes acked."""
    throttles = BrokerThrottles()
    acked = [0]

    def on_delivery(err, msg):
        if err is None:
            acked[0] += len(msg.value())

    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
                  "queue.buffering.max.kbytes": 256, "throttle_cb": throttles, "message.timeout.ms": 60000})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(throttles.positive_from(leader)) < want:
        try:
            p.produce(topic, VALUE, partition=partition, on_delivery=on_delivery)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    p.purge()
    p.flush(10)
    return throttles, acked[0]


def healthy_leaders(c, topic):
    return wait_until(lambda: c.healthy(topic, PARTITIONS, 1), TIMEOUT, interval=0.25,
                      what=f"{topic}: every partition led")


def test_a_quota_set_through_one_broker_throttles_on_another_and_survives_its_restart(tmp_path):
    c = SluiceCluster(tmp_path / "cluster").start()
    try:
        first = c.ids[0]
        topic = unique_topic("quota-cl")
        admin = AdminClient({"bootstrap.servers": c.bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=TIMEOUT)
        del admin
        leaders = healthy_leaders(c, topic)
        partition, leader = next(((p, b) for p, b in sorted(leaders.items()) if b != first), (None, None))
        assert partition is not None, f"every partition is led by broker {first}: {leaders}"

        # Set through the first broker (forwarded to the controller if it is not it).
        assert client_quotas(c.nodes[first].address, "set", "clients", "qc-slow", "producer_byte_rate",
                             str(QUOTA)).strip() == "OK"
        # Every broker describes it.
        for i in c.ids:
            wait_until(lambda i=i: "producer_byte_rate=20000.0" in client_quotas(
                c.nodes[i].address, "describe", "clients", "qc-slow"), TIMEOUT, interval=1,
                what=f"broker {i} has the quota")

        bootstrap = c.nodes[first].address
        throttles, acked = produce_until_throttled(bootstrap, topic, partition, leader, "qc-slow", 30)
        print(f"partition {partition} led by {leader}: {acked} bytes acked; throttle events {throttles.events[:10]}")
        assert len(throttles.positive_from(leader)) >= 3, \
            f"no throttle from broker {leader} (events {throttles.events})"

        fast, fast_acked = produce_until_throttled(bootstrap, topic, partition, leader, "qc-fast", 3, want=1)
        assert not [t for _, t in fast.events if t > 0], f"a client without a quota was throttled: {fast.events}"
        assert fast_acked > 0

        _stop_proc(c.nodes[leader].proc, signal.SIGTERM, 30)
        c.restart(leader)
        leaders = healthy_leaders(c, topic)
        assert leaders[partition] == leader, leaders  # one replica: it leads again
        throttles, acked = produce_until_throttled(bootstrap, topic, partition, leader, "qc-slow", 30)
        print(f"after restarting broker {leader}: {acked} bytes acked; throttle events {throttles.events[:10]}")
        assert len(throttles.positive_from(leader)) >= 3, \
            f"no throttle from restarted broker {leader} (events {throttles.events})"
        assert not c.crashed()
    finally:
        c.stop_all()
