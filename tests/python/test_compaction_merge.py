"""Compaction merges small cleaned segments (Kafka's LogCleaner `groupSegmentsBySize`).

A compacted topic with 4 KiB segments gets many versions of few keys from
confluent-kafka while the broker's compactor is idle (retention timer once an
hour), so its partition directory holds dozens of sealed segments.  Restarted
with the compactor every 200 ms, the broker cleans them and rewrites adjacent
cleaned segments whose sizes sum to at most `segment.bytes` as one: the number
of `.log` files (and their index files) in the partition directory drops to a
few, no `.cleaned` file or swap marker is left, and a consumer from the
beginning (confluent-kafka, then kafka-python) still reads the latest value of
every key with increasing offsets; the same after another restart (the merged
segments open with their indexes).
"""

from __future__ import annotations

from pathlib import Path

from kafka import KafkaConsumer
from kafka import TopicPartition as KTopicPartition
from confluent_kafka import Producer

from support import metrics_address, scrape, total, unique_topic, wait_until
from test_compaction import consume_all, create

KEYS = 10
ROUNDS = 400


def segment_files(part: Path) -> dict:
    return {ext: sorted(p.name for p in part.glob(f"*.{ext}")) for ext in ("log", "index", "timeindex")}


def produce(bootstrap: str, topic: str) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "batch.num.messages": 5})
    for r in range(ROUNDS):
        for k in range(KEYS):
            p.produce(topic, key=f"k{k}".encode(), value=f"k{k}-r{r}-".encode() + b"x" * 40, partition=0)
        p.poll(0)
    assert p.flush(30) == 0
    return ROUNDS * KEYS


def check(records: list, end: int) -> None:
    offsets = [o for o, _, _ in records]
    assert offsets == sorted(set(offsets)), "offsets increase"
    assert offsets[-1] == end - 1, "the last record stays"
    latest = {}
    for _, k, v in records:
        latest[k] = v
    assert sorted(latest) == sorted(f"k{k}".encode() for k in range(KEYS))
    for k in range(KEYS):
        assert latest[f"k{k}".encode()] == f"k{k}-r{ROUNDS - 1}-".encode() + b"x" * 40


def test_cleaned_segments_merge_and_still_serve_every_latest_value(broker_factory, tmp_path):
    idle = tmp_path / "idle.toml"
    idle.write_text("log_retention_check_interval_ms = 3600000\n")
    busy = tmp_path / "busy.toml"
    busy.write_text("log_retention_check_interval_ms = 200\n")
    args = ("--metrics-listen", "127.0.0.1:0")
    broker = broker_factory.start(config=idle, extra_args=args)
    topic = unique_topic("merge")
    create(broker.bootstrap, topic, 1, {
        "cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "0",
    })
    end = produce(broker.bootstrap, topic)
    part = Path(broker.data_dir) / f"{topic}-0"
    before = segment_files(part)
    assert len(before["log"]) >= 15, before["log"]
    before_records = consume_all(broker.bootstrap, topic, end)
    assert len(before_records) == end, "nothing compacted before the restart"

    broker = broker_factory.restart(broker, config=busy, extra_args=args)

    def merged():
        files = segment_files(part)
        return files if len(files["log"]) <= 3 else None
    after = wait_until(merged, 60, interval=0.2, what="the cleaned segments merged")
    # Every sealed segment left has its index files (the active one writes them when it rolls),
    # no index file is left of a merged-away segment, nothing of a swap is left over.
    stems = lambda names: {n.rsplit(".", 1)[0] for n in names}  # noqa: E731
    sealed = stems(after["log"][:-1])
    assert sealed <= stems(after["index"]) <= stems(after["log"]), after
    assert sealed <= stems(after["timeindex"]) <= stems(after["log"]), after
    assert not list(part.glob("*.cleaned")) and not (part / "compaction.swap").exists()
    # The first sealed segment keeps the log's first base; every other base was a base before.
    assert after["log"][0] == before["log"][0]
    assert set(after["log"]) <= set(before["log"]) | {after["log"][-1]}
    m = scrape(metrics_address(broker))
    assert total(m, "sluice_compaction_failures_total") == 0
    assert total(m, "sluice_compaction_segments_rewritten_total") >= 1

    records = consume_all(broker.bootstrap, topic, end)
    check(records, end)
    assert len(records) < end, "compaction removed records"
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    try:
        kc.assign([KTopicPartition(topic, 0)])
        kc.seek_to_beginning()
        seen = []
        for msg in kc:
            seen.append((msg.offset, msg.key, msg.value))
            if msg.offset >= end - 1:
                break
    finally:
        kc.close()
    assert seen == records

    # The merged segments reopen (indexes loaded) and serve the same.
    broker = broker_factory.restart(broker, config=idle, extra_args=args)
    assert consume_all(broker.bootstrap, topic, end) == records
    assert len(segment_files(part)["log"]) <= 3
