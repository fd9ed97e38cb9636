"""Client quotas with real clients: Kafka's `kafka-configs` (ConfigCommand, from Kafka 4.3.1's
core jar) sets and describes them, and they survive a restart; a confluent-kafka (librdkafka)
producer and consumer are held to their byte rates (measured; the broker's throttle reaches
them as librdkafka throttle events) while another client id on the same broker is not.

Rates are measured over 20 s. With Kafka's default sampling (11 windows of 1 s, the first burst
measured as if over 10 s), a client that starts at full speed can move about
(20 + 10) × quota in 20 s: 1.5 × its quota, so the check is "under 2 ×" (and above a fifth,
so a client that is merely stalled does not pass).
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer

from support import KAFKA_LIBS, create_topic, unique_topic
from test_security import java_tool

WINDOW_S = 20.0
QUOTA = 100_000  # bytes per second
VALUE = b"x" * 1000


def has_config_command() -> bool:
    return any(p.name.startswith("kafka_2.13-") for p in KAFKA_LIBS.glob("*.jar"))


pytestmark = pytest.mark.skipif(not has_config_command(),
                                reason="Kafka's core jar (kafka.admin.ConfigCommand) is not in tests/.deps/kafka-libs; "
                                       "tests/run installs it from tests/java/pom.xml")


def kafka_configs(bootstrap: str, *args):
    r = java_tool("kafka.admin.ConfigCommand", "--bootstrap-server", bootstrap, *args)
    return r.returncode, (r.stdout.decode() + r.stderr.decode())


def configs_ok(bootstrap: str, *args) -> str:
    rc, out = kafka_configs(bootstrap, *args)
    assert rc == 0, out
    return out


def set_quota(bootstrap: str, entity: list, config: str) -> None:
    configs_ok(bootstrap, "--alter", "--add-config", config, *entity)


def test_kafka_configs_alter_describe_delete_and_restart(broker_factory):
    b = broker_factory.start()
    bs = b.bootstrap
    clients_x = ["--entity-type", "clients", "--entity-name", "app-x"]
    set_quota(bs, clients_x, "producer_byte_rate=1024,consumer_byte_rate=2048")
    set_quota(bs, ["--entity-type", "users", "--entity-name", "alice"], "request_percentage=50")
    set_quota(bs, ["--entity-type", "users", "--entity-default"], "producer_byte_rate=4096")
    set_quota(bs, ["--entity-type", "users", "--entity-name", "alice", "--entity-type", "clients",
                   "--entity-name", "app-x"], "producer_byte_rate=777")

    out = configs_ok(bs, "--describe", *clients_x)
    assert "producer_byte_rate=1024.0" in out and "consumer_byte_rate=2048.0" in out, out
    users = configs_ok(bs, "--describe", "--entity-type", "users")
    assert "request_percentage=50.0" in users and "producer_byte_rate=4096.0" in users, users
    assert "'alice'" in users and "default user" in users.lower() or "<default>" in users, users
    pair = configs_ok(bs, "--describe", "--entity-type", "users", "--entity-name", "alice",
                      "--entity-type", "clients", "--entity-name", "app-x")
    assert "producer_byte_rate=777.0" in pair, pair

    # Refused as Kafka refuses them, and nothing changes.
    rc, out = kafka_configs(bs, "--alter", "--add-config", "producer_byte_rate=1.5", *clients_x)
    assert rc != 0 and "cannot be a fractional value" in out, out
    rc, out = kafka_configs(bs, "--alter", "--add-config", "producer_byte_rate=-5", *clients_x)
    assert rc != 0 and "must be greater than 0" in out, out

    # Delete one key; the other stays.
    configs_ok(bs, "--alter", "--delete-config", "consumer_byte_rate", *clients_x)
    out = configs_ok(bs, "--describe", *clients_x)
    assert "producer_byte_rate=1024.0" in out and "consumer_byte_rate" not in out, out

    # Quotas are metadata: they survive a restart.
    b = broker_factory.restart(b)
    bs = b.bootstrap
    out = configs_ok(bs, "--describe", *clients_x)
    assert "producer_byte_rate=1024.0" in out and "consumer_byte_rate" not in out, out
    users = configs_ok(bs, "--describe", "--entity-type", "users")
    assert "request_percentage=50.0" in users and "producer_byte_rate=4096.0" in users, users


class Throttles:
    """librdkafka's throttle events (the broker's throttle_time_ms), collected from poll()."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event.throttle_time)

    @property
    def positive(self) -> list:
        return [t for t in self.events if t > 0]


def produce_for(bootstrap: str, topic: str, client_id: str, seconds: float):
    """Produces 1,000-byte values as fast as librdkafka takes them for `seconds`; returns the
    bytes acknowledged in that time, the elapsed time and the throttle events."""
    throttles = Throttles()
    acked = [0]

    def on_delivery(err, msg):
        if err is None:
            acked[0] += len(msg.value())

    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
                  "queue.buffering.max.kbytes": 512, "throttle_cb": throttles,
                  "message.timeout.ms": 120000})
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        try:
            p.produce(topic, VALUE, on_delivery=on_delivery)
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    elapsed = time.monotonic() - start
    got = acked[0]
    p.flush(60)
    return got, elapsed, throttles


def test_a_producer_is_held_to_its_byte_rate_and_another_client_is_not(broker_factory):
    b = broker_factory.start()
    topic = unique_topic("quota-p")
    create_topic(b.bootstrap, topic, 1)
    set_quota(b.bootstrap, ["--entity-type", "clients", "--entity-name", "slow-producer"],
              f"producer_byte_rate={QUOTA}")

    slow, slow_s, slow_t = produce_for(b.bootstrap, topic, "slow-producer", WINDOW_S)
    rate = slow / slow_s
    print(f"slow-producer: {slow} bytes in {slow_s:.1f} s = {rate:,.0f} B/s (quota {QUOTA}); "
          f"throttle events {len(slow_t.positive)}, max {max(slow_t.positive, default=0):.3f} s")
    assert rate < 2 * QUOTA, f"{rate:,.0f} B/s is over twice the quota"
    assert rate > 0.2 * QUOTA, f"{rate:,.0f} B/s: the producer hardly moved"
    assert slow_t.positive, "the broker's throttle_time_ms never reached librdkafka"

    fast, fast_s, fast_t = produce_for(b.bootstrap, topic, "fast-producer", 5.0)
    fast_rate = fast / fast_s
    print(f"fast-producer: {fast} bytes in {fast_s:.1f} s = {fast_rate:,.0f} B/s; "
          f"throttle events {len(fast_t.positive)}")
    assert not fast_t.positive, "a client without a quota was throttled"
    assert fast_rate > 2 * QUOTA, "a client without a quota was held to another client's rate"


def consume_for(bootstrap: str, topic: str, client_id: str, seconds: float, want: int):
    throttles = Throttles()
    c = Consumer({"bootstrap.servers": bootstrap, "client.id": client_id, "group.id": f"g-{client_id}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "throttle_cb": throttles})
    c.subscribe([topic])
    got = 0
    start = None
    deadline = time.monotonic() + seconds + 30  # + time to join the group
    while time.monotonic() < deadline and got < want:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        if start is None:
            start = time.monotonic()
            deadline = start + seconds
        got += len(m.value())
    elapsed = time.monotonic() - (start or time.monotonic())
    c.close()
    return got, elapsed, throttles


def test_a_consumer_is_held_to_its_byte_rate(broker_factory):
    b = broker_factory.start()
    topic = unique_topic("quota-c")
    create_topic(b.bootstrap, topic, 1)
    total = 6_000_000
    p = Producer({"bootstrap.servers": b.bootstrap, "client.id": "loader", "linger.ms": 5})
    for _ in range(total // len(VALUE)):
        while True:
            try:
                p.produce(topic, VALUE)
                break
            except BufferError:
                p.poll(0.01)
    assert p.flush(60) == 0
    set_quota(b.bootstrap, ["--entity-type", "clients", "--entity-name", "slow-consumer"],
              f"consumer_byte_rate={QUOTA}")

    got, secs, throttles = consume_for(b.bootstrap, topic, "slow-consumer", WINDOW_S, total)
    rate = got / secs
    print(f"slow-consumer: {got} bytes in {secs:.1f} s = {rate:,.0f} B/s (quota {QUOTA}); "
          f"throttle events {len(throttles.positive)}")
    assert got < total, "the throttled consumer read everything"
    assert rate < 2 * QUOTA, f"{rate:,.0f} B/s is over twice the quota"
    assert rate > 0.2 * QUOTA, f"{rate:,.0f} B/s: the consumer hardly moved"
    assert throttles.positive, "the broker's throttle_time_ms never reached librdkafka"

    got, secs, throttles = consume_for(b.bootstrap, topic, "fast-consumer", WINDOW_S, total)
    print(f"fast-consumer: {got} bytes in {secs:.1f} s; throttle events {len(throttles.positive)}")
    assert got == total and not throttles.positive
