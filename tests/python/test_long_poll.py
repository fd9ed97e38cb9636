"""Fetch long polling.

A fetch waiting on an empty partition (max wait 6 s, min bytes 1) must be
answered soon after another client produces, not when the wait runs out.
Checked twice: with a raw Fetch v4 request whose start time is known exactly,
and with a confluent-kafka consumer (fetch.wait.max.ms=6000) over three
rounds.  The bound is max_wait/2: a correctness bound, not a speed claim.
"""

import random
import socket
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from support import (api_versions, create_topic, fetch_v4_request, parse_fetch_v4_single,
                     recv_frame, unique_topic)

MAX_WAIT_MS = 6000
BOUND_S = MAX_WAIT_MS / 1000 / 2


def produce_one(bootstrap: str, topic: str, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all",
                  "linger.ms": 0})
    p.produce(topic, value=value, partition=0)
    assert p.flush(10) == 0, "produce not delivered within 10 s"


def test_raw_fetch_wakes_on_produce(broker):
    topic = unique_topic("lpraw")
    create_topic(broker.bootstrap, topic, 1)
    produce_one(broker.bootstrap, topic, b"warm-up")  # also opens the producer path once

    with socket.create_connection((broker.host, broker.port), timeout=15) as s:
        lo, hi = api_versions(s, 1).get(1, (None, None))
        assert lo is not None and lo <= 4 <= hi, f"Fetch v4 not offered (range {lo}..{hi})"
        s.sendall(fetch_v4_request(7, topic, 0, offset=1, max_wait_ms=MAX_WAIT_MS))
        sent_at = time.monotonic()
        time.sleep(0.5)
        value = b"wake-up-" + bytes(range(32))
        produce_at = time.monotonic()
        produce_one(broker.bootstrap, topic, value)
        resp = recv_frame(s)
        answered_at = time.monotonic()

    assert resp is not None, "connection closed instead of a fetch answer"
    corr, err, hw, records = parse_fetch_v4_single(resp)
    assert (corr, err) == (7, 0)
    assert answered_at - sent_at >= 0.4, (
        f"fetch answered after {answered_at - sent_at:.2f}s, before anything was produced")
    assert value in records, f"answer lacks the new record (hw={hw}, {len(records)} record bytes)"
    assert hw == 2
    delay = answered_at - produce_at
    assert delay < BOUND_S, f"fetch answered {delay:.2f}s after produce (max wait {MAX_WAIT_MS} ms)"


def test_consumer_wakes_on_produce(broker):
    topic = unique_topic("lpc")
    create_topic(broker.bootstrap, topic, 1)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "sluice-tests-unused",
                  "enable.auto.commit": False, "fetch.wait.max.ms": MAX_WAIT_MS,
                  "fetch.min.bytes": 1})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    rnd = random.Random(5)

    def idle(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            m = c.poll(0.05)
            assert m is None or m.error() is not None, "unexpected message while idle"

    try:
        idle(1.5)
        for round_ in range(3):
            idle(rnd.uniform(0.3, 2.0))
            value = f"round-{round_}".encode()
            t0 = time.monotonic()
            produce_one(broker.bootstrap, topic, value)
            got = None
            for _ in range(1000):
                m = c.poll(0.05)
                if m is not None and m.error() is None:
                    got = m
                    break
                if m is not None and m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consume error: {m.error()}")
                if time.monotonic() - t0 > MAX_WAIT_MS / 1000 + 5:
                    break
            delay = time.monotonic() - t0
            assert got is not None, f"round {round_}: nothing consumed within {delay:.1f}s"
            assert got.value() == value and got.offset() == round_
            assert delay < BOUND_S, f"round {round_}: consumed {delay:.2f}s after produce"
    finally:
        c.close()
