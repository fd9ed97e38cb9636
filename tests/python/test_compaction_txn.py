"""Compaction as Kafka 4's log cleaner does it, seen by real clients (confluent-kafka).

Delete horizon (KIP-534): a tombstone written with a timestamp an hour old is not removed
at its first cleaning (the old rule, by record time, would have removed it at once); that
cleaning stamps its batch with the delete-horizon attribute bit (0x40) and base timestamp
= cleaning time + `delete.retention.ms`, checked in the segment files; the tombstone is
still served until that horizon and gone after it (further passes triggered by more data).

Transactions: a transactional producer (librdkafka) commits one transaction, aborts one
overwriting the same keys, commits another; after compaction the aborted records are gone
from the log (read_uncommitted no longer sees them) while the committed latest values stay,
read_committed and read_uncommitted consumers agree, the last stable offset equals the
high watermark (no transaction left hanging by a removed marker), and the same holds after
a restart, after which the same transactional id commits again.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from support import unique_topic, wait_until
from test_compaction import create

BROKER_CONFIG = "log_retention_check_interval_ms = 200\ngroup_initial_rebalance_delay_ms = 0\n"


def start(broker_factory, tmp_path, data_dir=None):
    cfg = tmp_path / "sluice-compaction-txn.toml"
    cfg.write_text(BROKER_CONFIG)
    return broker_factory.start(data_dir=data_dir, config=cfg)


def read_all(bootstrap: str, topic: str, isolation: str, timeout: float = 30.0) -> list:
    """(offset, key, value) of every record of partition 0 a consumer with `isolation` reads
    from the beginning up to the end of the partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"), "enable.auto.commit": False,
                  "enable.partition.eof": True, "isolation.level": isolation})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        out, deadline = [], time.monotonic() + timeout
        for _ in range(100_000):
            if time.monotonic() > deadline:
                raise AssertionError(f"{isolation}: no end of partition within {timeout}s ({len(out)} read)")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise AssertionError(m.error())
            out.append((m.offset(), m.key(), m.value()))
        return out
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, isolation: str) -> tuple:
    """(low, high) as ListOffsets answers them for `isolation` (read_committed: high = LSO)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("w"), "isolation.level": isolation})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=15, cached=False)
    finally:
        c.close()


def batches_on_disk(part: Path) -> list:
    """(base offset, last offset, attributes, base timestamp, count) of every batch in the
    partition's segment files."""
    out = []
    for seg in sorted(part.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 61 <= len(data):
            base, length = struct.unpack_from(">qi", data, pos)
            if length <= 0:
                break  # zero padding of the last aligned write
            attributes, last_delta, base_ts = struct.unpack_from(">hiq", data, pos + 21)
            (count,) = struct.unpack_from(">i", data, pos + 57)
            out.append((base, base + last_delta, attributes, base_ts, count))
            pos += 12 + length
    return out


def latest(records: list) -> dict:
    out = {}
    for _, k, v in records:
        out[k] = v
    return out


def fill(p: Producer, topic: str, start: int, n: int) -> None:
    for i in range(start, start + n):
        p.produce(topic, key=f"filler-{i}".encode(), value=b"f" * 60, partition=0)
    assert p.flush(30) == 0


def test_a_tombstone_stays_delete_retention_ms_after_the_cleaning_that_stamps_it(broker_factory, tmp_path):
    broker = start(broker_factory, tmp_path)
    topic = unique_topic("horizon")
    retention_ms = 8_000
    create(broker.bootstrap, topic, 1, {
        "cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": str(retention_ms),
    })
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    hour_ago = int(time.time() * 1000) - 3_600_000
    for r in range(20):
        for k in range(4):
            p.produce(topic, key=f"k{k}".encode(), value=f"k{k}-r{r}".encode(), partition=0, timestamp=hour_ago)
    p.produce(topic, key=b"k0", value=None, partition=0, timestamp=hour_ago)
    assert p.flush(30) == 0
    produced_ms = int(time.time() * 1000)
    fill(p, topic, 0, 200)  # seals the tombstone's segment
    # The first cleaning: the overwritten values go, the (hour-old) tombstone stays, stamped.
    part = Path(broker.data_dir) / f"{topic}-0"

    def first_cleaning():
        recs = read_all(broker.bootstrap, topic, "read_uncommitted")
        keys = [k for _, k, _ in recs if k.startswith(b"k")]
        return recs if len(keys) == len(set(keys)) else None
    recs = wait_until(first_cleaning, 30, interval=0.3, what="the first cleaning")
    seen_ms = int(time.time() * 1000)
    assert b"k0" in latest(recs) and latest(recs)[b"k0"] is None, "the tombstone stays at its first cleaning"
    tomb_offset = next(o for o, k, v in recs if k == b"k0")
    [(_, _, attributes, base_ts, _)] = [b for b in batches_on_disk(part) if b[0] <= tomb_offset <= b[1]]
    assert attributes & 0x40, f"delete-horizon bit: attributes {attributes:#x}"
    assert produced_ms + retention_ms <= base_ts <= seen_ms + retention_ms, (produced_ms, base_ts, seen_ms)
    # Passes keep running (more data); the tombstone is served until its horizon, gone after.
    n = 200
    deadline = time.monotonic() + 60
    gone_ms = None
    for _ in range(600):
        assert time.monotonic() < deadline, "the tombstone was not removed after its horizon"
        fill(p, topic, n, 20)
        n += 20
        now_ms = int(time.time() * 1000)
        have = b"k0" in latest(read_all(broker.bootstrap, topic, "read_uncommitted"))
        if now_ms < base_ts:
            assert have, f"the tombstone went {base_ts - now_ms} ms before its horizon"
        if not have:
            gone_ms = int(time.time() * 1000)
            break
        time.sleep(0.3)
    assert gone_ms is not None and gone_ms >= base_ts
    # Every other key keeps its latest value.
    final = latest(read_all(broker.bootstrap, topic, "read_uncommitted"))
    assert [final[f"k{k}".encode()] for k in range(1, 4)] == [f"k{k}-r19".encode() for k in range(1, 4)]


def txn_producer(bootstrap: str, txid: str) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txid, "linger.ms": 0,
                  "transaction.timeout.ms": 60_000})
    p.init_transactions(30)
    return p


def transaction(p: Producer, topic: str, items: list, commit: bool) -> None:
    p.begin_transaction()
    for k, v in items:
        p.produce(topic, key=k.encode(), value=v.encode(), partition=0)
    p.flush(30)
    if commit:
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)


def check_views(bootstrap: str, topic: str, want: dict, compacted: bool) -> None:
    committed = read_all(bootstrap, topic, "read_committed")
    assert not any(v.startswith(b"aborted") for _, _, v in committed), "read_committed never sees aborted data"
    got = {k: v for k, v in latest(committed).items() if k.startswith(b"k")}
    assert got == want
    uncommitted = read_all(bootstrap, topic, "read_uncommitted")
    if compacted:
        assert not any(v.startswith(b"aborted") for _, _, v in uncommitted), "compaction removed aborted records"
        assert [r for r in uncommitted if r[1].startswith(b"k")] == [r for r in committed if r[1].startswith(b"k")]
    lo, hi = watermarks(bootstrap, topic, "read_uncommitted")
    _, lso = watermarks(bootstrap, topic, "read_committed")
    assert lso == hi, f"last stable offset {lso}, high watermark {hi}: a transaction left open"


def test_compaction_removes_aborted_transactions_and_keeps_committed_ones(broker_factory, tmp_path):
    broker = start(broker_factory, tmp_path)
    topic = unique_topic("txncompact")
    create(broker.bootstrap, topic, 1, {
        "cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "1000",
    })
    plain = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for k in range(5):
        plain.produce(topic, key=f"k{k}".encode(), value=b"base", partition=0)
    assert plain.flush(30) == 0
    txid = unique_topic("tx")
    p = txn_producer(broker.bootstrap, txid)
    transaction(p, topic, [(f"k{k}", "committed-1") for k in range(5)], commit=True)
    transaction(p, topic, [(f"k{k}", f"aborted-{k}") for k in range(5)], commit=False)
    transaction(p, topic, [("k5", "committed-3")], commit=True)
    want = {f"k{k}".encode(): b"committed-1" for k in range(5)} | {b"k5": b"committed-3"}
    # Before compaction: read_committed skips the aborted overwrite; read_uncommitted sees it.
    check_views(broker.bootstrap, topic, want, compacted=False)
    assert sum(v.startswith(b"aborted") for _, _, v in read_all(broker.bootstrap, topic, "read_uncommitted")) == 5
    fill(plain, topic, 0, 200)  # seals the transactions' segment

    def cleaned():
        recs = read_all(broker.bootstrap, topic, "read_uncommitted")
        return not any(v.startswith(b"aborted") or v == b"base" for _, _, v in recs)
    wait_until(cleaned, 30, interval=0.3, what="aborted and overwritten records removed")
    check_views(broker.bootstrap, topic, want, compacted=True)
    # More passes (the markers' horizons pass) change nothing clients see.
    fill(plain, topic, 200, 100)
    time.sleep(1.5)
    fill(plain, topic, 300, 100)
    check_views(broker.bootstrap, topic, want, compacted=True)
    # After a restart (the transaction index rebuilt from the compacted log): the same, and
    # the transactional id goes on (the restarted broker listens on a new port: a new client
    # with the same transactional.id, whose InitProducerId bumps the epoch).
    broker = broker_factory.restart(broker, config=tmp_path / "sluice-compaction-txn.toml")
    check_views(broker.bootstrap, topic, want, compacted=True)
    p2 = txn_producer(broker.bootstrap, txid)
    transaction(p2, topic, [("k6", "after-restart")], commit=True)
    want[b"k6"] = b"after-restart"
    check_views(broker.bootstrap, topic, want, compacted=True)
