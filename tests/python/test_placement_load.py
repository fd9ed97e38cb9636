"""Load-aware placement: while one shard takes all the appends, a new topic's partitions go to the
other shard (counting partitions alone would split them); once the appends stop and the rate
window passes, placement balances counts again. Placement is read from `/metrics`
(`sluice_partitions` per shard, before and after each create).

With `--cores 2`: 16 `__consumer_offsets` partitions (8 per shard) plus a 1-partition hot topic
give 9 and 8. By counts a 6-partition topic would get 3 and 3 (or 4 and 2); by the rule in
`shard/src/placement.rs` (share of partitions + share of recent appended bytes) every one of
the 6 goes to the cold shard, which then owns 14 against the hot shard's 9."""

from __future__ import annotations

import threading

from confluent_kafka import Producer

from support import create_topic, metrics_address, scrape, total, unique_topic, wait_until

WINDOW_S = 10          # PLACEMENT_LOAD_WINDOW_SECS
MIN_RATE = 1 << 20     # PLACEMENT_MIN_LOAD_BYTES_PER_SEC


def partitions_per_shard(addr: str) -> list:
    m = scrape(addr)
    return [int(total(m, "sluice_partitions", shard=str(s))) for s in (0, 1)]


def rates(addr: str) -> list:
    m = scrape(addr)
    return [total(m, "sluice_append_bytes_per_second", shard=str(s)) for s in (0, 1)]


def created_on(addr: str, bootstrap: str, topic: str, partitions: int) -> list:
    """Creates `topic` and returns how many of its partitions each shard received."""
    before = partitions_per_shard(addr)
    create_topic(bootstrap, topic, partitions)
    after = partitions_per_shard(addr)
    added = [a - b for a, b in zip(after, before)]
    assert sum(added) == partitions, f"partitions per shard {before} -> {after}"
    return added


def test_new_partitions_prefer_the_cold_shard(broker_factory):
    broker = broker_factory.start(cores=2, extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    hot_topic = unique_topic("hot")
    added = created_on(addr, broker.bootstrap, hot_topic, 1)
    hot = added.index(1)
    cold = 1 - hot

    stop = threading.Event()
    errors = []

    def keep_producing():
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "1", "linger.ms": 5})
        value = b"h" * 16384
        while not stop.is_set():
            for _ in range(64):
                try:
                    p.produce(hot_topic, partition=0, value=value,
                              on_delivery=lambda err, _m: err and errors.append(str(err)))
                except BufferError:
                    break
            p.poll(0.005)
        p.flush(30)

    producer = threading.Thread(target=keep_producing, daemon=True)
    producer.start()
    try:
        # The hot shard's rate is well above the threshold, the cold shard's is nil.
        seen = wait_until(lambda: (lambda r: r if r[hot] >= 4 * MIN_RATE else None)(rates(addr)), 30,
                          interval=0.5, what="the hot shard's append rate in /metrics")
        assert seen[cold] < MIN_RATE / 4, f"append rates per shard {seen}: shard {cold} should be idle"
        by_load = created_on(addr, broker.bootstrap, unique_topic("new"), 6)
        assert by_load[cold] == 6, f"new partitions per shard {by_load} with rates {seen}; want all on shard {cold}"
        counts = partitions_per_shard(addr)
    finally:
        stop.set()
        producer.join(60)
    assert not errors, f"hot producer errors: {errors[:3]}"
    print(f"rates {seen} B/s; 6 new partitions per shard {by_load}; partitions per shard now {counts}")

    # Idle again: after the window the rule falls back to counts, so the shard with fewer
    # partitions (the formerly hot one) gets the next ones.
    wait_until(lambda: sum(rates(addr)) < MIN_RATE, WINDOW_S + 15, interval=0.5,
               what="append rates back under the threshold")
    by_count = created_on(addr, broker.bootstrap, unique_topic("later"), 2)
    assert by_count[hot] == 2, f"with no load, 2 new partitions went {by_count}; counts were {counts}"
    assert broker.alive()
