"""The per-shard response budget (`max_response_bytes_per_shard`): clients that send large
Fetches and never read cannot make the broker hold more than the budget per shard (plus one
batch per connection), while a normal confluent-kafka consumer next to them keeps consuming.

Setup: `--cores 2`, a 32 MiB budget per shard, a 32-partition topic with ~2 MiB per partition
(batches of at most ~1 MB) read once so the read cache is warm. Then 16 raw connections with a
4 KiB receive buffer each pipeline 20 Fetch v4 requests for every partition from offset 0
(max_bytes and partition_max_bytes 2^31-1) and never read. Without the budget each of them
holds one answer of ~32 MiB (a partition read stops at a 1 MiB cache chunk): ~512 MiB.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from support import (
    RssSampler, create_topic, kstr, metrics_address, request_frame, rss_kib, scrape, total, unique_topic, wait_until,
)

MIB = 1024 * 1024
BUDGET = 32 * MIB          # max_response_bytes_per_shard in this test
CORES = 2
STALLED = 16               # connections that never read
PIPELINED = 20             # Fetches each of them sends
BIG_PARTS = 32
PER_PART = 32              # 64 KiB messages per partition: 2 MiB
MAX_BATCH = MIB            # the producer's batch.size bounds every stored batch
# The broker may hold the budget on each shard, plus the one batch every Fetch keeps whole.
HELD_BOUND = BUDGET + STALLED * MAX_BATCH
# RSS may also grow by reads in flight, allocator slack and the normal consumer's traffic.
RSS_SLACK = 64 * MIB


def fetch_everything(correlation_id: int, topic: str, partitions: int) -> bytes:
    """Fetch v4 of every partition from offset 0, max_wait 0, asking for as much as allowed."""
    body = struct.pack(">iiiib", -1, 0, 1, 0x7FFFFFFF, 0)
    body += struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", partitions)
    for q in range(partitions):
        body += struct.pack(">iqi", q, 0, 0x7FFFFFFF)
    return request_frame(1, 4, correlation_id, body)


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int, timeout: float) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-tests-unused",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100, "enable.partition.eof": False})
    got = 0
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while got < expected and time.monotonic() < deadline:
            for m in c.consume(num_messages=1000, timeout=0.5):
                assert m.error() is None, f"consume error on {topic}: {m.error()}"
                got += 1
    finally:
        c.close()
    return got


def produce(bootstrap: str, topic: str, partitions: int, per_part: int, value: bytes) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": MAX_BATCH, "message.max.bytes": MAX_BATCH})
    for i in range(partitions * per_part):
        for _ in range(2000):
            try:
                p.produce(topic, partition=i % partitions, value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(120) == 0, "produce did not complete"


def start_with_data(broker_factory, tmp_path, budget: int):
    """A broker with `budget` per shard, the big topic written and read once, and the pair topic."""
    cfg = tmp_path / f"budget-{budget}.toml"
    cfg.write_text(f"max_response_bytes_per_shard = {budget}\n")
    broker = broker_factory.start(config=cfg, cores=CORES, extra_args=("--metrics-listen", "127.0.0.1:0"))
    big, pair = unique_topic("big"), unique_topic("pair")
    create_topic(broker.bootstrap, big, BIG_PARTS)
    create_topic(broker.bootstrap, pair, 1)
    produce(broker.bootstrap, big, BIG_PARTS, PER_PART, os.urandom(64 * 1024))
    # Read everything once: the read cache is now as full as this data makes it.
    assert consume_all(broker.bootstrap, big, BIG_PARTS, BIG_PARTS * PER_PART, 120) == BIG_PARTS * PER_PART
    return broker, metrics_address(broker), big, pair


def stall(broker, big: str) -> list:
    """Opens the connections that ask for everything and never read."""
    stalled = []
    for i in range(STALLED):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((broker.host, broker.port))
        s.sendall(b"".join(fetch_everything(i * 1000 + k, big, BIG_PARTS) for k in range(PIPELINED)))
        stalled.append(s)
    return stalled


def held_per_shard(samples: dict) -> list:
    return [total(samples, "sluice_response_bytes_held", shard=str(s)) for s in range(CORES)]


def test_stalled_fetchers_are_held_to_the_budget(broker_factory, tmp_path):
    broker, addr, big, pair = start_with_data(broker_factory, tmp_path, BUDGET)
    pid = broker.proc.pid
    rss_before = rss_kib(pid)
    # Each connection lives on one shard: the budget of every shard, one batch per connection.
    rss_bound = rss_before + (CORES * BUDGET + STALLED * MAX_BATCH + RSS_SLACK) // 1024

    stalled = []
    try:
        stalled = stall(broker, big)
        # The broker builds answers until every stalled connection is blocked writing one.
        wait_until(lambda: sum(held_per_shard(scrape(addr))) >= BUDGET / 2, 30, interval=0.2,
                   what="stalled answers held by the broker")

        # A normal client produces and consumes next to them: it gets everything in time.
        with RssSampler(pid) as rss:
            n = 2000
            produce(broker.bootstrap, pair, 1, n, b"p" * 1024)
            started = time.monotonic()
            got = consume_all(broker.bootstrap, pair, 1, n, 30)
            took = time.monotonic() - started
            m = scrape(addr)
        assert got == n, f"the normal consumer got {got} of {n} messages within 30 s next to stalled clients"
        assert broker.alive()
        held = held_per_shard(m)
        assert all(h <= HELD_BOUND for h in held), f"held {held} bytes per shard > {HELD_BOUND}"
        assert total(m, "sluice_fetch_responses_shrunk_total") > 0, "no Fetch answer was cut to the budget"
        rss_peak = rss.peak
        print(f"RSS {rss_before} KiB before, peak {rss_peak} KiB (bound {rss_bound} KiB) with {STALLED} "
              f"stalled connections; held per shard {held}; normal consumer read {n} in {took:.1f} s")
        assert rss_peak <= rss_bound, f"RSS {rss_peak} KiB > bound {rss_bound} KiB (before: {rss_before} KiB)"
    finally:
        for s in stalled:
            s.close()
    # Closing the connections releases what was held for them.
    wait_until(lambda: total(scrape(addr), "sluice_response_bytes_held") == 0, 20,
               what="held response bytes back to 0 after the stalled clients closed")
    assert broker.alive()


def test_without_a_binding_budget_the_same_clients_hold_more(broker_factory, tmp_path):
    """The control: with a budget that never binds (1 TiB) the same clients make the broker hold
    more than the bound asserted above, so that test measures the budget, not the workload."""
    broker, addr, big, _pair = start_with_data(broker_factory, tmp_path, 1 << 40)
    stalled = []
    try:
        stalled = stall(broker, big)
        bound = CORES * HELD_BOUND
        held = wait_until(lambda: (lambda h: h if sum(h) > bound else None)(held_per_shard(scrape(addr))), 30,
                          interval=0.2, what=f"more than {bound} bytes held without a binding budget")
        print(f"held per shard without a binding budget: {held}")
        assert total(scrape(addr), "sluice_fetch_responses_shrunk_total") == 0
    finally:
        for s in stalled:
            s.close()
    wait_until(lambda: total(scrape(addr), "sluice_response_bytes_held") == 0, 20,
               what="held response bytes back to 0 after the stalled clients closed")
