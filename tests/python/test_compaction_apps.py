"""Applications that rely on compacted topics restart from them after compaction.

Kafka Connect (4.x runtime from Maven Central, distributed mode): a worker runs
CompactSource (compiled here; one task writing "pos=<n> gen=<g>" records with the
source offset {"pos": n}) with its config, offset and status topics created
beforehand as compacted topics with 1 KiB segments, dirty ratio 0.01 and no
compaction lag.  The connector's config is replaced GENERATIONS times (each a
connector config, task configs and a commit record in the config topic) while
offsets are flushed every 200 ms.  The worker is stopped; once the broker has
compacted the config and offset topics (far fewer records than were written),
a new worker with the same group starts from them: the connector's config is
the last one, its task runs with it (every new record carries the last
generation) and resumes right after the last committed source offset read from
the compacted offset topic.

Kafka Streams (4.x, from Maven Central): StreamsWordCount (exactly_once_v2, a
changelogged RocksDB count store; see test_streams_eos.py) runs with its
internal topics created with 4 KiB segments, dirty ratio 0.01 and no compaction
lag (`topic.*` Streams configs), so the broker's compactor (every 200 ms)
cleans the changelog while the app runs.  Once the changelog has been
compacted (fewer records than count updates, the latest count of every word
still in it), the app is stopped, its local state dir deleted, more input
produced, and a new instance with the same application id restores its store
from the compacted changelog: the final counts equal the occurrences of every
word in all the input (a count lost or taken from an older version by the
restore would show as a lower total), none above it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from support import KAFKA_LIBS, create_topic, metrics_address, scrape, total, unique_topic, wait_until
from test_streams_eos import DEADLINE, LINES, OutputReader, StreamsApp, make_lines, overcounted, produce_lines

COMPACT_FAST = ("topic.segment.bytes=4096", "topic.min.cleanable.dirty.ratio=0.01", "topic.min.compaction.lag.ms=0")


def changelog_topics(bootstrap: str, app_id: str) -> dict:
    """{changelog topic: partition count} of a Streams application."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    return {n: len(t.partitions) for n, t in md.topics.items() if n.startswith(app_id) and n.endswith("-changelog")}


def read_changelog(bootstrap: str, topic: str, partitions: int) -> tuple:
    """(record count, {word: latest count}) of a changelog, read_committed, from its start to its end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("clr"), "enable.auto.commit": False,
                  "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        n, latest, eof = 0, {}, set()
        deadline = time.monotonic() + 30
        while len(eof) < partitions:
            assert time.monotonic() < deadline, f"changelog {topic} not read to its end: {eof}"
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                eof.add(m.partition())
                continue
            eof.discard(m.partition())
            n += 1
            if m.value() is None:
                latest.pop(m.key().decode(), None)
            else:
                latest[m.key().decode()] = int.from_bytes(m.value(), "big", signed=True)
        return n, latest
    finally:
        c.close()


def test_streams_restores_its_state_from_a_compacted_changelog(broker_factory, tmp_path):
    cfg = tmp_path / "sluice-streams.toml"
    cfg.write_text("group_initial_rebalance_delay_ms = 0\nlog_retention_check_interval_ms = 200\n")
    b = broker_factory.start(config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"))
    src, dst = unique_topic("cin"), unique_topic("cout")
    create_topic(b.bootstrap, src, 3)
    create_topic(b.bootstrap, dst, 2)
    first, counts1 = make_lines(0, LINES)
    produce_lines(b.bootstrap, src, first)
    app_id, state = unique_topic("capp"), tmp_path / "state"
    app = StreamsApp(tmp_path, b.bootstrap, app_id, src, dst, state, COMPACT_FAST)
    reader = OutputReader(b.bootstrap, dst, 2)
    try:
        assert reader.wait_for(dict(counts1), DEADLINE, app), f"counts {reader.last}\n{app.explain()}"
        app.close()
        (changelog, partitions), = changelog_topics(b.bootstrap, app_id).items()
        updates = sum(counts1.values())  # one changelog record per count update (no cache)

        def compacted():
            n, latest = read_changelog(b.bootstrap, changelog, partitions)
            return (n, latest) if n < updates // 2 else None
        n, latest = wait_until(compacted, 60, interval=1, what=f"the changelog compacted below {updates // 2}")
        assert latest == dict(counts1), "the compacted changelog holds every word's latest count"
        m = scrape(metrics_address(b))
        assert total(m, "sluice_compaction_records_removed_total") > 0
        assert total(m, "sluice_compaction_failures_total") == 0

        # A new instance without local state restores the store from the compacted changelog.
        shutil.rmtree(state)
        second, counts2 = make_lines(LINES, LINES // 2)
        produce_lines(b.bootstrap, src, second)
        expected = counts1 + counts2
        app = StreamsApp(tmp_path, b.bootstrap, app_id, src, dst, state, COMPACT_FAST)
        assert reader.wait_for(dict(expected), DEADLINE, app), \
            f"counts {reader.last} != {dict(expected)} (changelog had {n} records)\n{app.explain()}"
        assert not overcounted(reader, expected), overcounted(reader, expected)
    finally:
        reader.close()
        app.close()



GENERATIONS = 20
CONNECT_DEADLINE = 120


def create_compacted(bootstrap: str, name: str, partitions: int) -> None:
    from test_compaction import create
    create(bootstrap, name, partitions, {
        "cleanup.policy": "compact", "segment.bytes": "1024", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "0",
    })


def read_topic(bootstrap: str, topic: str, partitions: int = 1) -> list:
    """(offset, key, value) of every record of a topic, from its start to its high watermark when
    the read began (a topic still written to has no end)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("rt"), "enable.auto.commit": False,
                  "enable.partition.eof": True})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out, done = [], {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + 30
        while len(done) < partitions:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} not read up to {ends}: {len(out)} records, position {c.position(tps)}")
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                done.add(m.partition())
                continue
            if m.offset() < ends[m.partition()]:
                out.append((m.offset(), m.key(), m.value()))
            if m.offset() >= ends[m.partition()] - 1:
                done.add(m.partition())
        return out
    finally:
        c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ConnectWorker:
    """One Kafka Connect distributed worker JVM (org.apache.kafka.connect.cli.ConnectDistributed)."""

    def __init__(self, workdir: Path, bootstrap: str, topics: dict):
        jvm, javac = shutil.which("java"), shutil.which("javac")
        assert jvm and javac, "java/javac not on PATH"
        assert any(KAFKA_LIBS.glob("connect-runtime-*.jar")), f"no connect-runtime jar in {KAFKA_LIBS}; run tests/run"
        cp = f"{KAFKA_LIBS}{os.sep}*"
        classes = workdir / "connect-classes"
        if not classes.exists():
            src = Path(__file__).resolve().parent / "CompactSource.java"
            res = subprocess.run([javac, "-nowarn", "-d", str(classes), "-cp", cp, str(src)],
                                 capture_output=True, timeout=120)
            assert res.returncode == 0, res.stderr.decode()[-3000:]
            services = classes / "META-INF" / "services"
            services.mkdir(parents=True)
            (services / "org.apache.kafka.connect.source.SourceConnector").write_text("sluicetest.CompactSource\n")
        self.port = free_port()
        props = workdir / f"worker-{time.time_ns()}.properties"
        props.write_text("\n".join([
            f"bootstrap.servers={bootstrap}",
            f"group.id={topics['group']}",
            f"config.storage.topic={topics['config']}",
            f"offset.storage.topic={topics['offset']}",
            f"status.storage.topic={topics['status']}",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.storage.StringConverter",
            "offset.flush.interval.ms=200",
            "scheduled.rebalance.max.delay.ms=0",
            f"listeners=http://127.0.0.1:{self.port}",
            "plugin.discovery=hybrid_warn",
        ]) + "\n")
        self.log = workdir / f"connect-{time.time_ns()}.log"
        self.proc = subprocess.Popen(
            [jvm, "-Xmx384m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
             "-cp", f"{classes}{os.pathsep}{cp}", "org.apache.kafka.connect.cli.ConnectDistributed", str(props)],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)

    def explain(self) -> str:
        return f"worker log tail:\n{self.log.read_text(errors='replace')[-4000:]}"

    def rest(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text else None)

    def wait_ready(self):
        def ready():
            assert self.proc.poll() is None, f"the worker exited\n{self.explain()}"
            try:
                return self.rest("GET", "/connectors")[0] == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                return False
        wait_until(ready, CONNECT_DEADLINE, interval=0.5, what="the Connect worker's REST API")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def positions(records: list) -> list:
    """(pos, generation) of CompactSource's records."""
    out = []
    for _, _, v in records:
        pos, gen = v.decode().split(" ")
        out.append((int(pos.removeprefix("pos=")), gen.removeprefix("gen=")))
    return out


def test_connect_restarts_from_its_compacted_topics(broker_factory, tmp_path):
    cfg = tmp_path / "sluice-connect.toml"
    cfg.write_text("group_initial_rebalance_delay_ms = 0\nlog_retention_check_interval_ms = 200\n")
    b = broker_factory.start(config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"))
    topics = {k: unique_topic(f"connect-{k}") for k in ("group", "config", "offset", "status")}
    for k in ("config", "offset", "status"):
        create_compacted(b.bootstrap, topics[k], 1)
    data = unique_topic("connect-data")
    create_topic(b.bootstrap, data, 1)
    name = "pos-source"
    config = {"connector.class": "sluicetest.CompactSource", "tasks.max": "1", "topic": data}
    worker = ConnectWorker(tmp_path, b.bootstrap, topics)
    try:
        worker.wait_ready()
        for g in range(GENERATIONS):
            status, _ = worker.rest("PUT", f"/connectors/{name}/config", {**config, "generation": f"g{g}"})
            assert status in (200, 201), status
            time.sleep(0.5)
        last = f"g{GENERATIONS - 1}"
        try:
            wait_until(lambda: any(gen == last for _, gen in positions(read_topic(b.bootstrap, data))), 60,
                       interval=0.5, what=f"records of generation {last}")
        except AssertionError as e:
            raise AssertionError(f"{e}\nstatus {worker.rest('GET', f'/connectors/{name}/status')}\n"
                                 f"{worker.explain()}") from None
        time.sleep(4)  # more records and offset flushes under the last config
        worker.stop()
        written = len(read_topic(b.bootstrap, data))
        produced = positions(read_topic(b.bootstrap, data))
        top = max(p for p, _ in produced)

        # The broker compacts the config and offset topics (the worker is stopped).
        def compacted():
            cfg_recs = read_topic(b.bootstrap, topics["config"])
            off_recs = read_topic(b.bootstrap, topics["offset"])
            # Records removed: far fewer records than offsets in the config topic, some fewer in
            # the offset topic (its active segment, never compacted, may hold most of them).
            done = len(cfg_recs) < (cfg_recs[-1][0] + 1) // 2 and len(off_recs) < off_recs[-1][0] + 1
            return (cfg_recs, off_recs) if done else None
        try:
            cfg_recs, off_recs = wait_until(compacted, 60, interval=1, what="the config and offset topics compacted")
        except AssertionError as e:
            cfg_recs, off_recs = read_topic(b.bootstrap, topics["config"]), read_topic(b.bootstrap, topics["offset"])
            raise AssertionError(f"{e}: config {len(cfg_recs)} records up to {cfg_recs[-1][0]}, "
                                 f"offset {len(off_recs)} up to {off_recs[-1][0]}") from None
        committed = json.loads(off_recs[-1][2])["pos"]
        assert 0 < committed <= top, (committed, top)
        m = scrape(metrics_address(b))
        assert total(m, "sluice_compaction_records_removed_total") > 0
        assert total(m, "sluice_compaction_failures_total") == 0

        worker = ConnectWorker(tmp_path, b.bootstrap, topics)
        worker.wait_ready()
        status, got = worker.rest("GET", f"/connectors/{name}/config")
        assert status == 200 and got.get("generation") == last, got

        def resumed():
            recs = read_topic(b.bootstrap, data)
            return positions(recs[written:]) if len(recs) >= written + 20 else None
        new = wait_until(resumed, 60, interval=0.5, what="records from the restarted worker")
        assert new[0][0] == committed + 1, f"resumed at {new[0][0]}, committed {committed}\n{worker.explain()}"
        assert [p for p, _ in new] == list(range(committed + 1, committed + 1 + len(new)))
        assert {g for _, g in new} == {last}, "the task runs with the last config"
    finally:
        worker.stop()
