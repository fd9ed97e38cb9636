"""Contract: issue #18's replication tests — three brokers on loopback (or in network namespaces
the test creates), real clients, a history checker — run against sluice and, as the reference
the harness is proven on, against a three-broker Apache Kafka 4.x KRaft cluster.

  test_kill_leaders_librdkafka / test_kill_leaders_java: an idempotent acks=all producer
    (confluent-kafka / the Java client) to an RF=3 min.insync.replicas=2 topic of 6 partitions
    under load; the leader of each partition in turn is kill -9'd (the producer must get
    acknowledgements again on every partition that broker led) and restarted with the same
    flags; a consumer reads throughout and must reach the end. Checked: every acknowledged
    record present exactly once, at its offset, in order; no offset read with two records.
  test_cut_off_leader: a leader is cut off from the other two brokers (blackhole routes between
    network namespaces); it must not acknowledge an acks=all produce; the majority must elect
    another leader and acknowledge; after healing the old leader must be back in the ISR, the
    record it was sent but never committed must be gone, and — made leader again by a preferred
    election — it must serve every acknowledged record. Same history checks.
  test_cli_describe / test_cli_leader_election / test_cli_reassign: Kafka's kafka-topics
    --describe, kafka-leader-election and kafka-reassign-partitions against the cluster.
  test_cli_rf_change: kafka-reassign-partitions raises an RF=1 partition to 3 replicas, the
    original broker is kill -9'd, every record is read back, and it goes down to 1 elsewhere.

Sides: "sluice" always; "kafka" only with SLUICE_COMPARE_KAFKA=1 (it needs Kafka's server jars
from `bench/compare --quick`, or SLUICE_KAFKA_LIBS, and takes minutes). Bounds: every loop has a
count and a deadline, every broker and client process is stopped by PID, namespaces are deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid

import pytest

from cluster_support import make_cluster, netns_available, raw_fetch_all, raw_produce, run_cluster
from history_check import History, Value
import support
from support import KAFKA_LIBS, explain, wait_until

KAFKA_SIDE = os.environ.get("SLUICE_COMPARE_KAFKA") == "1"
SIDES = [
    pytest.param("sluice", marks=pytest.mark.timeout(300)),
    pytest.param("kafka", marks=[
        pytest.mark.skipif(not KAFKA_SIDE, reason="the Apache Kafka side runs with SLUICE_COMPARE_KAFKA=1"),
        pytest.mark.timeout(900)]),
]
PARTITIONS = 6
RATE = 300  # records/s over all partitions
ACKS_AFTER_FAILOVER = 25  # new acknowledgements a partition must get after a kill or a cut
HEALTH_TIMEOUT = 120.0
FAILOVER_TIMEOUT = 60.0
TOOL_TIMEOUT = 120


# --- what sluice does not do yet ----------------------------------------------------

def pending_on_sluice(c, why):
    """Skips a test on sluice while #18 lacks what it needs (it runs on Kafka, and on sluice
    with SLUICE_REPLICATION_TESTS=1); `why` names what is missing."""
    if c.side == "sluice" and os.environ.get("SLUICE_REPLICATION_TESTS") != "1":
        pytest.skip(f"sluice: {why} (#18, not built yet; SLUICE_REPLICATION_TESTS=1 runs it)")


# --- fixtures ------------------------------------------------------------------

def _new_cluster(tmp_path, side, netns=False):
    if netns:
        why = netns_available()
        if why:
            pytest.skip(why)
    return make_cluster(side, tmp_path / f"{side}-cluster", netns=netns)


@pytest.fixture(params=SIDES)
def side(request):
    return request.param


@pytest.fixture
def cluster(request, tmp_path, side):
    yield from run_cluster(request, _new_cluster(tmp_path, side))


@pytest.fixture
def ns_cluster(request, tmp_path, side):
    yield from run_cluster(request, _new_cluster(tmp_path, side, netns=True))


# --- clients -------------------------------------------------------------------

def create_topic(cluster, name, partitions=PARTITIONS, rf=3, min_isr=2):
    """CreateTopics through confluent-kafka's AdminClient, then waits for a healthy topic."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf,
                                        config={"min.insync.replicas": str(min_isr)})],
                              operation_timeout=30, request_timeout=30)[name]
    failure = None
    try:
        fut.result(timeout=60)
    except Exception as e:  # the KafkaException carries the broker's error code and message
        failure = str(e)
    del admin, fut  # a failed test's traceback must not keep the client (and its reconnects) alive
    if failure is not None:
        raise AssertionError(f"{cluster.side}: CreateTopics {name} partitions={partitions} rf={rf} "
                             f"min.insync.replicas={min_isr} failed: {failure}")
    return wait_until(lambda: cluster.healthy(name, partitions, rf), HEALTH_TIMEOUT, interval=0.25,
                      what=f"{name}: every partition led with a full ISR of {rf} "
                           f"(now {cluster.partitions(name)})")


class RdkafkaProducer:
    """A confluent-kafka idempotent acks=all producer sending RATE records/s round-robin."""

    def __init__(self, bootstrap, topic, history, name="rdk", partitions=PARTITIONS, rate=RATE):
        from confluent_kafka import Producer
        self.p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                           "linger.ms": 5, "message.timeout.ms": 120000, "request.timeout.ms": 10000,
                           "retry.backoff.ms": 50, "topic.metadata.refresh.interval.ms": 5000})
        self.topic, self.history, self.name, self.parts, self.rate = topic, history, name, partitions, rate
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        seq = [0] * self.parts
        start = time.monotonic()
        n = 0
        for _ in range(100_000_000):
            if self.stop.is_set():
                break
            wait = start + n / self.rate - time.monotonic()
            if wait > 0:
                self.p.poll(min(wait, 0.05))
                continue
            part = n % self.parts
            n += 1
            s = seq[part]
            seq[part] += 1
            value = Value.make(self.name, part, s)
            self._produce(part, f"k{s}".encode(), value)
            self.p.poll(0)

    def _produce(self, part, key, value):
        def done(err, msg, part=part, value=value):
            if err is not None:
                self.history.failed_write(part, value, str(err))
            else:
                self.history.acked(msg.partition(), msg.offset(), msg.key(), msg.value())
        for _ in range(100):
            try:
                self.p.produce(self.topic, value=value, key=key, partition=part, on_delivery=done)
                self.sent += 1
                return
            except BufferError:
                self.p.poll(0.1)
        raise AssertionError("librdkafka's queue stayed full for 10 s")

    def start(self):
        self.thread.start()
        return self

    def finish(self, timeout=150.0):
        self.stop.set()
        self.thread.join(30)
        left = self.p.flush(timeout)
        assert left == 0, f"{left} records still undelivered {timeout}s after the producer stopped"

    def close(self):
        """Stops and destroys the client (a failed test's traceback keeps this object, and a
        live librdkafka client would go on reconnecting to stopped brokers)."""
        self.stop.set()
        self.thread.join(30)
        if self.p is not None:
            self.p.purge()
            self.p.flush(0)
            self.p.close()
            self.p = None


class JavaProducer:
    """ReplProducer.java (Apache Kafka's Java client, idempotent, acks=all) as a process."""

    def __init__(self, workdir, bootstrap, topic, history, name="java", partitions=PARTITIONS, rate=RATE):
        javac, java = shutil.which("javac"), shutil.which("java")
        assert javac and java, "java/javac not on PATH"
        assert any(KAFKA_LIBS.glob("kafka-clients-*.jar")), f"no Kafka jars in {KAFKA_LIBS}; run tests/run"
        cp = f"{KAFKA_LIBS}{os.sep}*"
        if not (workdir / "ReplProducer.class").exists():
            src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ReplProducer.java")
            res = subprocess.run([javac, "-nowarn", "-d", str(workdir), "-cp", cp, src], capture_output=True,
                                 timeout=120)
            assert res.returncode == 0, res.stderr.decode()[-3000:]
        self.stop_file = workdir / f"stop-{name}-{uuid.uuid4().hex[:6]}"
        self.err_path = workdir / f"{name}.stderr"
        self.history, self.done = history, None
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [java, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp",
                 f"{workdir}{os.pathsep}{cp}", "ReplProducer", bootstrap, topic, str(partitions), str(rate),
                 str(self.stop_file), "600000", name],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self.thread = threading.Thread(target=self._read, daemon=True)

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            kind, _, rest = line.partition(" ")
            if kind == "ACK":
                part, off, value = rest.split(" ", 2)
                v = Value.parse(value.encode())
                self.history.acked(int(part), int(off), f"k{v.seq}".encode(), value.encode())
            elif kind == "ERR":
                part, value, err = rest.split(" ", 2)
                self.history.failed_write(int(part), value.encode(), err)
            elif kind == "DONE":
                self.done = rest

    def start(self):
        self.thread.start()
        return self

    def finish(self, timeout=180.0):
        self.stop_file.touch()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the Java producer did not finish within {timeout}s")
        finally:
            self.thread.join(10)
        assert self.proc.returncode == 0, (f"Java producer exit {self.proc.returncode}\n"
                                           f"{self.err_path.read_text(errors='replace')[-3000:]}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Reader:
    """A confluent-kafka consumer assigned every partition from the beginning (no group), reading
    on a thread until stopped and recording every record in the history."""

    def __init__(self, bootstrap, topic, history, name="consumer", partitions=PARTITIONS):
        from confluent_kafka import Consumer
        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"repl-{uuid.uuid4().hex[:8]}",
                           "enable.auto.commit": False, "auto.offset.reset": "earliest",
                           "topic.metadata.refresh.interval.ms": 5000, "fetch.wait.max.ms": 100})
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        self.history, self.name = history, name
        self.next = {p: 0 for p in range(partitions)}
        self.stop = threading.Event()
        self.errors: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        for _ in range(10_000_000):
            if self.stop.is_set():
                break
            for m in self.c.consume(500, 0.2):
                if m.error() is not None:
                    if len(self.errors) < 50:
                        self.errors.append(str(m.error()))
                    continue
                self.history.read(self.name, m.partition(), m.offset(), m.key(), m.value())
                self.next[m.partition()] = m.offset() + 1

    def start(self):
        self.thread.start()
        return self

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        if self.c is not None:
            self.c.close()
            self.c = None


def end_offsets(bootstrap, topic, partitions=PARTITIONS) -> dict:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka import KafkaError, KafkaException
    moving = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
              KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex[:8]}"})
    deadline = time.monotonic() + 30
    try:
        out = {}
        for p in range(partitions):
            # librdkafka asks once, so a leader change in between (NOT_LEADER_FOR_PARTITION, as
            # Kafka answers it too) is retried here on fresh metadata, as its consumer would.
            for _ in range(100):
                try:
                    out[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
                    break
                except KafkaException as e:
                    if e.args[0].code() not in moving or time.monotonic() > deadline:
                        raise
                    c.list_topics(topic, timeout=10)
                    time.sleep(0.2)
            else:
                raise AssertionError(f"partition {p}: no high watermark after 100 tries")
        return out
    finally:
        c.close()


def read_everything(bootstrap, topic, history, partitions=PARTITIONS, timeout=90.0) -> dict:
    """Every record of every partition from the beginning to the high watermark now, read by a
    fresh consumer; also recorded in the history as reader "final"."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    ends = end_offsets(bootstrap, topic, partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"final-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = {p: [] for p in range(partitions)}
    nxt = {p: 0 for p in range(partitions)}
    deadline = time.monotonic() + timeout
    try:
        for _ in range(100_000):
            if all(nxt[p] >= ends[p] for p in range(partitions)) or time.monotonic() > deadline:
                break
            for m in c.consume(1000, 0.5):
                if m.error() is not None:
                    continue
                out[m.partition()].append((m.offset(), m.key(), m.value()))
                history.read("final", m.partition(), m.offset(), m.key(), m.value())
                nxt[m.partition()] = m.offset() + 1
            # Offsets may end in batches that hold no record for the client (control batches:
            # transaction markers, sluice's Raft membership changes): the consumer's position
            # moves past them, so it says how far the read got.
            for tp in c.position([TopicPartition(topic, p) for p in range(partitions)]):
                if tp.offset >= 0:
                    nxt[tp.partition] = max(nxt[tp.partition], tp.offset)
    finally:
        c.close()
    short = {p: (nxt[p], ends[p]) for p in range(partitions) if nxt[p] < ends[p]}
    assert not short, f"final read stopped short of the high watermark (next, end): {short}"
    return out


def check_history(history, final, producer_name):
    errors = history.check(final)
    assert not errors, f"history check failed ({history.summary()}):\n" + "\n".join(errors[:60])
    # a real run: each partition got acknowledged records and the final read holds them all
    for p in final:
        assert history.acked_in(p) > 0, f"no record of partition {p} was acknowledged"
    assert not history.failed, (f"{len(history.failed)} writes failed (delivery timeout 120 s): "
                                f"{history.failed[:5]}")


def wait_acks(history, partitions, before, what, timeout=FAILOVER_TIMEOUT):
    want = {p: before[p] + ACKS_AFTER_FAILOVER for p in partitions}
    wait_until(lambda: all(history.acked_in(p) >= want[p] for p in partitions), timeout, interval=0.05,
               what=f"{ACKS_AFTER_FAILOVER} new acknowledgements on partitions {sorted(partitions)} {what} "
                    f"(now {({p: history.acked_in(p) - before[p] for p in partitions})})")


# --- a. kill -9 the leader of each partition in turn -------------------------------

def kill_each_leader(cluster, topic, history, producer_alive):
    for p in range(PARTITIONS):
        leaders = wait_until(lambda: cluster.healthy(topic, PARTITIONS, 3), HEALTH_TIMEOUT, interval=0.25,
                             what=f"a healthy {topic} before kill {p + 1} (now {cluster.partitions(topic)})")
        victim = leaders[p]
        led = {q for q, leader in leaders.items() if leader == victim}
        before = {q: history.acked_in(q) for q in range(PARTITIONS)}
        cluster.kill(victim)
        wait_acks(history, led, before, f"after kill -9 of node {victim}, leader of {sorted(led)}")
        assert producer_alive(), "the producer died"
        cluster.restart(victim)
    wait_until(lambda: cluster.healthy(topic, PARTITIONS, 3), HEALTH_TIMEOUT, interval=0.25,
               what=f"a healthy {topic} after the last restart (now {cluster.partitions(topic)})")


def consumer_caught_up(cluster, topic, reader, timeout=60.0):
    ends = end_offsets(cluster.bootstrap, topic)
    wait_until(lambda: all(reader.next[p] >= ends[p] for p in range(PARTITIONS)), timeout, interval=0.2,
               what=f"the consumer that ran through the kills reaching {ends} (at {reader.next}; "
                    f"errors {reader.errors[-5:]})")


def test_kill_leaders_librdkafka(cluster):
    topic = f"repl-rdk-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic)
    history = History()
    reader = Reader(cluster.bootstrap, topic, history).start()
    producer = RdkafkaProducer(cluster.bootstrap, topic, history).start()
    try:
        wait_acks(history, range(PARTITIONS), {p: 0 for p in range(PARTITIONS)}, "before any kill")
        kill_each_leader(cluster, topic, history, producer.thread.is_alive)
        before = {p: history.acked_in(p) for p in range(PARTITIONS)}
        wait_acks(history, range(PARTITIONS), before, "after every broker is back")
        producer.finish()
        consumer_caught_up(cluster, topic, reader)
    finally:
        producer.close()
        reader.finish()
    final = read_everything(cluster.bootstrap, topic, history)
    check_history(history, final, "rdk")
    print(f"{cluster.side}: {history.summary()}; events {cluster.events}")


def test_kill_leaders_java(cluster, tmp_path):
    topic = f"repl-java-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic)
    history = History()
    reader = Reader(cluster.bootstrap, topic, history).start()
    producer = JavaProducer(tmp_path, cluster.bootstrap, topic, history).start()
    try:
        wait_acks(history, range(PARTITIONS), {p: 0 for p in range(PARTITIONS)}, "before any kill",
                  timeout=FAILOVER_TIMEOUT + 30)
        kill_each_leader(cluster, topic, history, lambda: producer.proc.poll() is None)
        before = {p: history.acked_in(p) for p in range(PARTITIONS)}
        wait_acks(history, range(PARTITIONS), before, "after every broker is back")
        producer.finish()
        assert producer.done is not None and "errors=0" in producer.done, producer.done
        consumer_caught_up(cluster, topic, reader)
    finally:
        producer.kill()
        reader.finish()
    final = read_everything(cluster.bootstrap, topic, history)
    check_history(history, final, "java")
    print(f"{cluster.side}: {history.summary()}; events {cluster.events}")


# --- b. a leader cut off from the others ---------------------------------------------

def elect_preferred(bootstrap, topic, partition):
    """ElectLeaders (PREFERRED) for one partition through confluent-kafka's AdminClient."""
    from confluent_kafka import ElectionType, TopicPartition
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # confluent-kafka 2.16's binding fails on any timeout keyword here (TypeError with two,
    # SystemError with one); its default request timeout is socket.timeout.ms (60 s)
    fut = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, partition)])
    try:
        result = fut.result(timeout=60)
    except Exception as e:
        result = {None: e}
    del admin, fut
    # ELECTION_NOT_NEEDED: the preferred replica leads already (a broker may move leadership
    # back on its own when the preferred replica returns)
    errors = {str(tp): str(err) for tp, err in result.items()
              if err is not None and "ELECTION_NOT_NEEDED" not in str(err)}
    assert not errors, f"ElectLeaders (PREFERRED) {topic}-{partition}: {errors}"


def test_cut_off_leader(ns_cluster):
    cluster = ns_cluster
    parts = 3
    topic = f"repl-cut-{uuid.uuid4().hex[:8]}"
    leaders = create_topic(cluster, topic, partitions=parts)
    history = History()
    reader = Reader(cluster.bootstrap, topic, history, partitions=parts).start()
    producer = RdkafkaProducer(cluster.bootstrap, topic, history, partitions=parts, rate=150).start()
    old = leaders[0]
    others = [i for i in cluster.ids if i != old]
    node = cluster.nodes[old]
    try:
        wait_acks(history, range(parts), {p: 0 for p in range(parts)}, "before the cut")
        cluster.cut(old)
        # 1. the cut-off leader must not acknowledge acks=all
        value = Value.make("cut", 0, 0)
        res = raw_produce(node.host, node.port, topic, 0, [(b"cut", value)], acks=-1, timeout_ms=5000)
        history.mark_never_committed(value)
        assert res[0] != 0, (f"{cluster.side}: node {old}, cut off from {others}, acknowledged an acks=all "
                             f"produce to partition 0 at offset {res[1]}")
        # what it serves meanwhile must agree with everything else ever read
        err, hw, recs = raw_fetch_all(node.host, node.port, topic, 0)
        for off, k, v in recs:
            history.read(f"cut-node-{old}", 0, off, k, v)
        # 2. the majority elects another leader and acknowledges
        # (a 1-tuple: node 0 is a valid leader, and wait_until waits for a truthy value)
        new, = wait_until(lambda: next(((lead,) for lead in [cluster.leader_of(topic, 0, o) for o in others]
                                        if lead in others), None),
                          FAILOVER_TIMEOUT, interval=0.2,
                          what=f"a leader of partition 0 among {others} (they say "
                               f"{[cluster.leader_of(topic, 0, o) for o in others]})")
        before = {p: history.acked_in(p) for p in range(parts)}
        wait_acks(history, [0], before, f"from the majority's new leader {new} during the cut")
        # 3. heal: the old leader catches up (back in the ISR) and the topic is whole again
        cluster.heal(old)
        wait_until(lambda: old in (cluster.partitions(topic, others[0]).get(0).isr
                                   if cluster.partitions(topic, others[0]).get(0) else []),
                   HEALTH_TIMEOUT, interval=0.25,
                   what=f"node {old} back in partition 0's ISR after healing "
                        f"(now {cluster.partitions(topic, others[0]).get(0)})")
        wait_until(lambda: cluster.healthy(topic, parts, 3), HEALTH_TIMEOUT, interval=0.25,
                   what=f"a healthy {topic} after healing (now {cluster.partitions(topic)})")
        before = {p: history.acked_in(p) for p in range(parts)}
        wait_acks(history, range(parts), before, "after healing")
        producer.finish()
    finally:
        producer.close()
        reader.finish()
    final = read_everything(cluster.bootstrap, topic, history, partitions=parts)
    # 4. the old leader, leader again, serves exactly the committed history (it truncated the
    #    record it was sent while cut off)
    assert cluster.partitions(topic)[0].replicas[0] == old, "the first leader is the preferred replica"
    elect_preferred(cluster.bootstrap, topic, 0)
    wait_until(lambda: all(cluster.leader_of(topic, 0, i) == old for i in cluster.ids), 60, interval=0.2,
               what=f"node {old} leading partition 0 again after a preferred election")
    err, hw, recs = raw_fetch_all(node.host, node.port, topic, 0)
    assert err == 0, f"Fetch from the old leader: error {err}"
    for off, k, v in recs:
        history.read(f"old-leader-{old}", 0, off, k, v)
    assert [r[0] for r in recs] == [r[0] for r in final[0]], \
        f"the old leader serves offsets {recs[:1]}..{recs[-1:]}, the final read {final[0][:1]}..{final[0][-1:]}"
    check_history(history, final, "rdk")
    print(f"{cluster.side}: {history.summary()}; cut produce answered {res}; events {cluster.events}")


# --- c. Kafka's CLI against the cluster ------------------------------------------------

def kafka_tool(main_class, *args, input=None):
    return support.kafka_tool(main_class, *args, timeout=TOOL_TIMEOUT, input=input)


def parse_describe(out: str) -> dict:
    """{partition: (leader, replicas, isr)} from kafka-topics --describe."""
    parts = {}
    for line in out.splitlines():
        fields = dict(f.split(": ", 1) for f in line.strip().split("\t") if ": " in f)
        if "Partition" in fields and "Replicas" in fields:
            ids = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
            parts[int(fields["Partition"])] = (int(fields["Leader"]), ids(fields["Replicas"]), ids(fields.get("Isr", "")))
    return parts


def test_cli_describe(cluster):
    topic = f"repl-cli-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, partitions=3)
    res = kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", cluster.bootstrap,
                     "--describe", "--topic", topic)
    assert res.returncode == 0, explain(res)
    out = res.stdout.decode()
    assert "ReplicationFactor: 3" in out, explain(res)
    assert "min.insync.replicas=2" in out, explain(res)
    described = parse_describe(out)
    md = cluster.partitions(topic)
    assert sorted(described) == [0, 1, 2], explain(res)
    for p, (leader, replicas, isr) in described.items():
        assert leader == md[p].leader and replicas == md[p].replicas, (p, described[p], md[p])
        assert sorted(isr) == sorted(replicas) and len(set(replicas)) == 3, (p, described[p])
    assert len({leader for leader, _, _ in described.values()}) > 1, f"all partitions led by one broker: {described}"


def test_cli_leader_election(cluster):
    topic = f"repl-elect-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, partitions=1)
    preferred = cluster.partitions(topic)[0].replicas[0]
    assert cluster.leader_of(topic, 0) == preferred
    cluster.kill(preferred)
    others = [i for i in cluster.ids if i != preferred]
    wait_until(lambda: cluster.leader_of(topic, 0, others[0]) in others, FAILOVER_TIMEOUT, interval=0.2,
               what=f"a new leader among {others}")
    cluster.restart(preferred)
    leaders = wait_until(lambda: cluster.healthy(topic, 1, 3), HEALTH_TIMEOUT, interval=0.25,
                         what=f"node {preferred} back in the ISR (now {cluster.partitions(topic)})")
    res = kafka_tool("org.apache.kafka.tools.LeaderElectionCommand", "--bootstrap-server", cluster.bootstrap,
                     "--election-type", "PREFERRED", "--topic", topic, "--partition", "0")
    assert res.returncode == 0, explain(res)
    if leaders[0] != preferred:  # Kafka: leadership stays until an election (or its 5-minute rebalance)
        want = f"Successfully completed leader election (PREFERRED) for partitions {topic}-0"
    else:  # the broker moved leadership back when the preferred replica returned
        want = f"Valid replica already elected for partitions {topic}-0"
    assert want in res.stdout.decode(), f"leader before the election: {leaders[0]}\n{explain(res)}"
    wait_until(lambda: all(cluster.leader_of(topic, 0, i) == preferred for i in cluster.ids), 30, interval=0.2,
               what=f"every broker naming node {preferred} leader after the election")


def produce_acked(cluster, topic: str, tag: str, n: int) -> History:
    """`n` records to partition 0 of `topic` from an idempotent acks=all producer, every one
    delivered within 60 s; the history of what was acknowledged."""
    from confluent_kafka import Producer
    history = History()
    p = Producer({"bootstrap.servers": cluster.bootstrap, "enable.idempotence": True, "acks": "all"})
    for s in range(n):
        p.produce(topic, key=f"k{s}".encode(), value=Value.make(tag, 0, s), partition=0,
                  on_delivery=lambda err, m: history.acked(m.partition(), m.offset(), m.key(), m.value())
                  if err is None else history.failed_write(0, m.value(), str(err)))
    left = p.flush(60)
    p.close()
    del p
    assert left == 0, f"{left} of {n} records undelivered after 60 s"
    return history


REASSIGN_TOOL = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"


def reassign(cluster, plan, topic: str, target: list):
    """kafka-reassign-partitions --execute moving partition 0 of `topic` to `target` (the plan
    written to the path `plan`), then --verify until it reports the move completed."""
    plan.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "replicas": target}]}))
    args = ("--bootstrap-server", cluster.bootstrap, "--reassignment-json-file", str(plan))
    res = kafka_tool(REASSIGN_TOOL, *args, "--execute")
    assert res.returncode == 0, explain(res)
    assert "Successfully started partition reassignment" in res.stdout.decode(), explain(res)

    def verified():
        r = kafka_tool(REASSIGN_TOOL, *args, "--verify")
        return r.returncode == 0 and f"Reassignment of partition {topic}-0 is completed" in r.stdout.decode()
    wait_until(verified, 90, interval=1, what=f"kafka-reassign-partitions --verify: {topic}-0 moved to {target}")


def test_cli_reassign(cluster, tmp_path):
    topic = f"repl-move-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, partitions=1, rf=2, min_isr=1)
    replicas = cluster.partitions(topic)[0].replicas
    spare = next(i for i in cluster.ids if i not in replicas)
    target = [replicas[1], spare]
    history = produce_acked(cluster, topic, "move", 200)
    reassign(cluster, tmp_path / "reassign.json", topic, target)
    st = cluster.partitions(topic)[0]
    assert sorted(st.replicas) == sorted(target) and sorted(st.isr) == sorted(target), st
    final = read_everything(cluster.bootstrap, topic, history, partitions=1)
    errors = history.check(final)
    assert not errors and len(final[0]) == 200, (errors, len(final[0]))


def test_cli_rf_change(cluster, tmp_path):
    """RF 1 -> 3 -> 1 with kafka-reassign-partitions, as Kafka users raise a topic's replication
    factor: the records of a single-replica partition reach two new replicas, survive the kill
    -9 of the original broker, and the partition then goes back to one replica on another
    broker."""
    topic = f"repl-rf-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, partitions=1, rf=1, min_isr=1)
    owner = cluster.partitions(topic)[0].replicas[0]
    others = [i for i in cluster.ids if i != owner]
    history = produce_acked(cluster, topic, "rf", 500)
    reassign(cluster, tmp_path / "up.json", topic, [others[0], others[1], owner])
    st = cluster.partitions(topic)[0]
    assert sorted(st.replicas) == sorted(cluster.ids) and sorted(st.isr) == sorted(cluster.ids), st
    cluster.kill(owner)
    wait_until(lambda: cluster.leader_of(topic, 0, others[0]) in others, FAILOVER_TIMEOUT, interval=0.2,
               what=f"a new leader among {others}")
    final = read_everything(cluster.bootstrap, topic, history, partitions=1)
    errors = history.check(final)
    assert not errors and len(final[0]) == 500, (errors, len(final[0]))
    reassign(cluster, tmp_path / "down.json", topic, [others[1]])
    wait_until(lambda: getattr(cluster.partitions(topic, others[1]).get(0), "replicas", None) == [others[1]], 30,
               interval=0.5,
               what=f"{topic}-0 on node {others[1]} alone")
    again = read_everything(cluster.bootstrap, topic, History(), partitions=1)
    assert again == final, f"read from node {others[1]} alone differs: {len(again[0])} records"


# --- transactions across a kill -9 of the transaction coordinator -----------------

def java_hash(s: str) -> int:
    h = 0
    for ch in s.encode("utf-16-be").decode("utf-16-be"):
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h


def txn_coordinator(cluster, txid: str) -> int:
    """The leader of the transactional id's `__transaction_state` partition (Kafka's placement:
    abs(hashCode) % partitions), -1 while unknown."""
    parts = cluster.partitions("__transaction_state")
    if not parts:
        return -1
    return cluster.leader_of("__transaction_state", (java_hash(txid) & 0x7FFFFFFF) % len(parts))


TXNS = 30
TXN_RECORDS = 4
TXN_KILL_AT = 10


def test_txn_coordinator_kill(cluster):
    """A confluent-kafka transactional producer commits TXNS transactions of TXN_RECORDS records
    to an RF=3 topic; in transaction TXN_KILL_AT (records sent, not committed) the broker leading
    its transaction coordinator's partition is kill -9'd, later restarted. The producer must
    recover (retriable errors retried, abortable ones aborted and the transaction redone; no
    fatal error), and a read_committed consumer must see every committed transaction exactly
    once and nothing of an aborted one."""
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    topic = f"repl-txn-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, partitions=3)
    txid = f"txn-{uuid.uuid4().hex[:8]}"
    p = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": txid,
                  "transaction.timeout.ms": 60000, "message.timeout.ms": 60000})
    p.init_transactions(60)
    committed, aborted, killed = [], [], None
    deadline = time.monotonic() + 200
    n = 0
    attempts = 0
    while n < TXNS:
        assert time.monotonic() < deadline, f"{cluster.side}: {n} of {TXNS} transactions in 200 s"
        attempts += 1
        assert attempts < TXNS * 10, "too many attempts"
        tag = f"t{n}-a{attempts}"
        try:
            p.begin_transaction()
            for i in range(TXN_RECORDS):
                p.produce(topic, key=f"{tag}-{i}".encode(), value=f"{tag}-{i}".encode(), partition=i % 3)
            if n == TXN_KILL_AT and killed is None:
                p.flush(30)
                found = wait_until(lambda: (lambda c: [c] if c >= 0 else None)(txn_coordinator(cluster, txid)),
                                   30, interval=0.2, what="the transaction coordinator")
                killed = found[0]
                cluster.kill(killed)
            retry_until = time.monotonic() + 90
            while True:
                try:
                    p.commit_transaction(30)
                    break
                except KafkaException as e:
                    err = e.args[0]
                    assert not err.fatal(), f"{cluster.side}: fatal commit error {err}"
                    if err.txn_requires_abort() or time.monotonic() > retry_until:
                        raise
                    assert err.retriable(), f"{cluster.side}: commit error neither retriable nor abortable: {err}"
                    time.sleep(0.2)
            committed.append(tag)
            n += 1
        except KafkaException as e:
            err = e.args[0]
            assert not err.fatal(), f"{cluster.side}: fatal transactional error {err}"
            cluster.note(f"transaction {tag}: {err}; aborting")
            abort_until = time.monotonic() + 90
            while True:
                try:
                    p.abort_transaction(30)
                    break
                except KafkaException as e2:
                    err2 = e2.args[0]
                    assert not err2.fatal() and time.monotonic() < abort_until, f"abort failed: {err2}"
                    time.sleep(0.2)
            aborted.append(tag)
        if killed is not None and n == TXN_KILL_AT + 3 and not cluster.nodes[killed].alive():
            cluster.restart(killed)
    if killed is not None and not cluster.nodes[killed].alive():
        cluster.restart(killed)
    p.flush(30)
    del p
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"g-{txid}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, q, 0) for q in range(3)])
    seen = []
    want = len(committed) * TXN_RECORDS
    read_until = time.monotonic() + 90
    while len(seen) < want and time.monotonic() < read_until:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        seen.append(m.value().decode())
    # A little longer: anything beyond `want` would be a duplicate or an aborted record.
    extra_until = time.monotonic() + 3
    while time.monotonic() < extra_until:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen.append(m.value().decode())
    c.close()
    expected = sorted(f"{tag}-{i}" for tag in committed for i in range(TXN_RECORDS))
    assert sorted(seen) == expected, (
        f"{cluster.side}: read_committed saw {len(seen)} records, {want} committed; "
        f"missing {sorted(set(expected) - set(seen))[:10]}, unexpected {sorted(set(seen) - set(expected))[:10]}, "
        f"aborted {aborted}")
    print(f"{cluster.side}: {len(committed)} transactions committed, aborted {aborted}, "
          f"coordinator node {killed} killed; events {cluster.events}")


def low_watermark(cluster, topic: str, node_id=None) -> int:
    """ListOffsets earliest of partition 0 (through the bootstrap: the leader answers)."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"lw-{uuid.uuid4().hex[:8]}"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=20, cached=False)[0]
    finally:
        c.close()


def test_delete_records_survives_a_leader_change(cluster):
    """DeleteRecords moves the partition's log start on every replica: after the leader's
    kill -9 the new leader answers the same low watermark and serves no record below it (as
    Kafka's followers take the leader's log start offset)."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient
    topic = f"repl-delrec-{uuid.uuid4().hex[:8]}"
    create_topic(cluster, topic, partitions=1)
    history = produce_acked(cluster, topic, "delrec", 200)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    res = admin.delete_records([TopicPartition(topic, 0, 83)], request_timeout=30)
    low = next(iter(res.values())).result(timeout=30).low_watermark
    del admin, res
    assert low == 83, f"{cluster.side}: DeleteRecords answered low watermark {low}"
    leader = cluster.leader_of(topic, 0)
    cluster.kill(leader)
    other = next(i for i in cluster.ids if i != leader)
    wait_until(lambda: cluster.leader_of(topic, 0, other) not in (-1, leader), HEALTH_TIMEOUT, interval=0.25,
               what=f"a new leader of {topic}-0 after the kill of node {leader}")
    new = cluster.leader_of(topic, 0, other)
    lows = wait_until(lambda: (lambda w: (w,) if w >= 0 else None)(low_watermark(cluster, topic)), HEALTH_TIMEOUT,
                      interval=0.5, what="a low watermark from the new leader")[0]
    final = read_everything(cluster.bootstrap, topic, history, partitions=1)[0]
    cluster.restart(leader)
    assert lows == 83 and final and final[0][0] == 83, (
        f"{cluster.side}: after DeleteRecords(83) and the kill of leader {leader}, new leader {new} answers "
        f"low watermark {lows}, first record read at {final[0][0] if final else None}")
