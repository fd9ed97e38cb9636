"""Request-time quotas (`request_percentage`, Kafka's ClientRequestQuotaManager) with real clients.

A librdkafka (confluent-kafka) client that hammers the broker with Metadata and ListOffsets
requests under a tiny `request_percentage` quota (set with the Java Admin client's alterClientQuotas,
ClientQuotas.java: the AlterClientQuotas request `kafka-configs` sends) is throttled:
the broker's `throttle_time_ms` in those answers reaches it as throttle events. Before the
answers of every API carried the throttle, only Produce and Fetch did, and this client saw none.
Another client id on the same broker is not throttled.

With Kafka's default sampling (11 windows of 1 s) a client's first burst is measured as if over
10 s: at 0.01 % of a thread that is 1 ms of request time, a few dozen requests.
"""

from __future__ import annotations

import os
import subprocess
import time

from confluent_kafka import Consumer, TopicPartition

from support import KAFKA_LIBS, create_topic, unique_topic
from test_quotas import Throttles

HAMMER_S = 30.0
MAX_REQUESTS = 5000


def client_quotas(bootstrap: str, *args) -> str:
    """ClientQuotas.java (Kafka's Java Admin client): `set clients|users NAME KEY VALUE` or
    `describe clients|users NAME`; its output (the call must succeed)."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ClientQuotas.java")
    r = subprocess.run(["java", "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=off",
                        "-cp", f"{KAFKA_LIBS}{os.sep}*", src, bootstrap, *args],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180)
    assert r.returncode == 0, (r.stdout.decode() + r.stderr.decode())[-3000:]
    return r.stdout.decode()


def hammer(bootstrap: str, topic: str, client_id: str, seconds: float, want_throttled: int):
    """Sends Metadata and ListOffsets requests one after another (librdkafka waits for each
    answer) for at most `seconds` and `MAX_REQUESTS` requests, or until `want_throttled`
    positive throttle events; returns the requests sent and the throttle events."""
    throttles = Throttles()
    c = Consumer({"bootstrap.servers": bootstrap, "client.id": client_id, "group.id": f"g-{client_id}",
                  "throttle_cb": throttles, "socket.timeout.ms": 30000})
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and sent < MAX_REQUESTS and len(throttles.positive) < want_throttled:
            c.list_topics(topic, timeout=20)
            c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20, cached=False)
            sent += 2
            c.poll(0)  # serves the throttle callbacks
        c.poll(0.5)
    finally:
        c.close()
    return sent, throttles


def test_a_client_over_its_request_percentage_is_throttled_on_metadata_and_list_offsets(broker_factory):
    b = broker_factory.start()
    topic = unique_topic("quota-r")
    create_topic(b.bootstrap, topic, 1)
    assert client_quotas(b.bootstrap, "set", "clients", "hammer", "request_percentage", "0.01").strip() == "OK"
    assert "request_percentage=0.01" in client_quotas(b.bootstrap, "describe", "clients", "hammer")

    sent, throttles = hammer(b.bootstrap, topic, "hammer", HAMMER_S, want_throttled=3)
    print(f"hammer: {sent} requests; throttle events {len(throttles.events)}, "
          f"positive {len(throttles.positive)}, max {max(throttles.positive, default=0):.3f} s")
    assert len(throttles.positive) >= 3, \
        f"{sent} Metadata/ListOffsets requests under request_percentage=0.01 and no throttle_time_ms reached the client"
    # Request-time throttles are at most one quota sample (1 s by default), as Kafka's.
    assert max(throttles.positive) <= 1.0 + 1e-6, throttles.positive

    sent, calm = hammer(b.bootstrap, topic, "calm", 3.0, want_throttled=1)
    print(f"calm: {sent} requests; throttle events {len(calm.events)}, positive {len(calm.positive)}")
    assert sent > 0 and not calm.positive, "a client without a quota was throttled"
