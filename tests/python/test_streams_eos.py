"""Kafka Streams (4.x, from Maven Central) word count with processing.guarantee=exactly_once_v2.

StreamsWordCount.java (compiled here) counts the words of an input topic into an output topic
through a repartition topic and a changelogged RocksDB store, every update written by a
transaction that also commits the input offsets. The output is read read_committed and checked
per word: the last count equals the number of occurrences produced, and no count ever went past
it (a record processed twice — the failure exactly-once prevents — would show as a count above
the expected one; with the record cache off every update is written).

- Run to completion: the counts are exact.
- SIGKILLed mid-run (after the first committed output, right after more input arrived) and
  restarted with the same application id and state dir: the open transaction of the killed
  instance is aborted (fenced by the new instance's InitProducerId), the store is restored from
  its changelog, and the counts are still exact.
"""

import collections
import os
import shutil
import signal
import subprocess
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from support import KAFKA_LIBS, create_topic, unique_topic

BROKER_CONFIG = "group_initial_rebalance_delay_ms = 0\n"
WORDS = [f"w{i}" for i in range(40)]
LINES = 3000
DEADLINE = 150
# SLUICE_STREAMS_GUARANTEE=at_least_once runs the same tests without transactions: the kill
# test then fails (counts past the expected ones), which shows what it catches.
GUARANTEE = os.environ.get("SLUICE_STREAMS_GUARANTEE", "exactly_once_v2")


class StreamsApp:
    """One StreamsWordCount JVM; stdout collected on a thread."""

    def __init__(self, workdir, bootstrap, app_id, src, dst, state_dir, extra=()):
        javac, jvm = shutil.which("javac"), shutil.which("java")
        assert javac and jvm, "java/javac not on PATH"
        assert any(KAFKA_LIBS.glob("kafka-streams-*.jar")), f"no kafka-streams jar in {KAFKA_LIBS}; run tests/run"
        cp = f"{KAFKA_LIBS}{os.sep}*"
        if not (workdir / "StreamsWordCount.class").exists():
            src_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "StreamsWordCount.java")
            res = subprocess.run([javac, "-nowarn", "-d", str(workdir), "-cp", cp, src_file],
                                 capture_output=True, timeout=120)
            assert res.returncode == 0, res.stderr.decode()[-3000:]
        self.log = workdir / f"streams-{time.time_ns()}.log"
        self.lines = []
        self.proc = subprocess.Popen(
            [jvm, "-Xmx384m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
             "-cp", f"{workdir}{os.pathsep}{cp}", "StreamsWordCount", bootstrap, app_id, src, dst, str(state_dir),
             GUARANTEE, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "wb"))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.decode().strip())

    def errors(self):
        return [line for line in self.lines if line.startswith("ERROR")]

    def explain(self):
        return f"stdout: {self.lines[-20:]}\nstderr tail:\n{self.log.read_text()[-3000:]}"

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def produce_lines(bootstrap, topic, lines):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i, line in enumerate(lines):
        p.produce(topic, key=f"k{i}".encode(), value=line.encode())
    assert p.flush(30) == 0


def make_lines(start, count):
    """Deterministic lines of 1-5 words each; the counts of every word they hold."""
    lines, counts = [], collections.Counter()
    for i in range(start, start + count):
        words = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(1 + i % 5)]
        counts.update(words)
        lines.append(" ".join(words))
    return lines, counts


class OutputReader:
    """A read_committed consumer of the output topic: the last and the largest count per word."""

    def __init__(self, bootstrap, topic, partitions):
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("wcr"),
                           "isolation.level": "read_committed", "enable.auto.commit": False})
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.last, self.peak, self.records = {}, {}, 0

    def poll_for(self, seconds):
        deadline = time.time() + seconds
        while time.time() < deadline:
            m = self.c.poll(0.2)
            if m is None or m.error():
                continue
            word, count = m.key().decode(), int.from_bytes(m.value(), "big", signed=True)
            self.records += 1
            self.last[word] = count
            self.peak[word] = max(count, self.peak.get(word, 0))

    def wait_for(self, expected, seconds, app):
        deadline = time.time() + seconds
        while time.time() < deadline and self.last != expected:
            assert not app.errors(), app.explain()
            self.poll_for(1)
        return self.last == expected

    def close(self):
        self.c.close()


def setup(broker_factory, tmp_path, name):
    cfg = tmp_path / "sluice-streams.toml"
    cfg.write_text(BROKER_CONFIG)
    b = broker_factory.start(config=cfg)
    src, dst = unique_topic(f"{name}in"), unique_topic(f"{name}out")
    create_topic(b.bootstrap, src, 3)
    create_topic(b.bootstrap, dst, 2)
    return b, src, dst


def overcounted(reader, expected):
    return {w: (reader.peak[w], n) for w, n in expected.items() if reader.peak.get(w, 0) > n}


def test_streams_word_count_exactly_once(broker_factory, tmp_path):
    b, src, dst = setup(broker_factory, tmp_path, "wc")
    lines, expected = make_lines(0, LINES)
    produce_lines(b.bootstrap, src, lines)
    app = StreamsApp(tmp_path, b.bootstrap, unique_topic("wcapp"), src, dst, tmp_path / "state")
    reader = OutputReader(b.bootstrap, dst, 2)
    try:
        assert reader.wait_for(dict(expected), DEADLINE, app), \
            f"counts {reader.last} != {dict(expected)}\n{app.explain()}"
        assert not overcounted(reader, expected), overcounted(reader, expected)
        # One update per occurrence (cache off), none twice.
        assert reader.records == sum(expected.values()), (reader.records, sum(expected.values()))
    finally:
        reader.close()
        app.close()


def test_streams_killed_mid_run_restarts_with_exact_counts(broker_factory, tmp_path):
    b, src, dst = setup(broker_factory, tmp_path, "wck")
    first, counts1 = make_lines(0, LINES)
    produce_lines(b.bootstrap, src, first)
    app_id, state = unique_topic("wckapp"), tmp_path / "state"
    app = StreamsApp(tmp_path, b.bootstrap, app_id, src, dst, state)
    reader = OutputReader(b.bootstrap, dst, 2)
    try:
        # Kill it once it has committed some output but not all of it.
        deadline = time.time() + DEADLINE
        while time.time() < deadline and reader.records < 200:
            assert not app.errors(), app.explain()
            reader.poll_for(0.5)
        assert reader.records >= 200, f"no output from the first instance\n{app.explain()}"
        # The first instance may already have caught up with the first lines (sluice is fast
        # enough for that), so more input goes in right before the kill: a word count of them
        # needs two transactions (through the repartition topic) at a 100 ms commit interval,
        # which cannot have committed in the moment between the flush and the SIGKILL.
        tail, counts_tail = make_lines(LINES, LINES // 2)
        produce_lines(b.bootstrap, src, tail)
        app.kill()
        reader.poll_for(2)
        counts1 += counts_tail
        assert reader.last != dict(counts1), "the first instance finished before it was killed"
        second, counts2 = make_lines(LINES + LINES // 2, LINES // 2)
        produce_lines(b.bootstrap, src, second)
        expected = counts1 + counts2
        app = StreamsApp(tmp_path, b.bootstrap, app_id, src, dst, state)
        assert reader.wait_for(dict(expected), DEADLINE, app), \
            f"counts {reader.last} != {dict(expected)}\n{app.explain()}"
        assert not overcounted(reader, expected), overcounted(reader, expected)
        assert reader.records == sum(expected.values()), (reader.records, sum(expected.values()))
    finally:
        reader.close()
        app.close()
