"""Transactions (exactly-once) with real clients.

Covers: Apache Kafka's Java transactional producer (Transactions.java, compiled here):
commit, abort and sendOffsetsToTransaction — a read_committed consumer sees only committed
records, read_uncommitted sees all, the group's offset is the committed transaction's; a second
producer with the same transactional.id fences the first and aborts its open transaction.
confluent-kafka (librdkafka): a transactional producer's commit and abort, read_committed
against read_uncommitted, and send_offsets_to_transaction in a consume-transform-produce step.
A producer that dies mid-transaction, with the broker killed (SIGKILL) and restarted: the
coordinator's state is replayed and the open transaction is aborted at its timeout, after which
read_committed consumers read past it and never see its records. Kafka's
kafka-transactions.sh (TransactionsCommand) lists and describes an open, then committed,
transaction; and with a transactional producer SIGKILLed mid-transaction (10 min timeout), so a
read_committed consumer is stuck at the last stable offset, `describe-producers` shows the open
transaction's start offset (DescribeProducers), `find-hanging` runs (nothing hanging: the
coordinator still has it, as on Kafka) and `abort --start-offset` ends it (WriteTxnMarkers), after
which the consumer reads on (the same scenario in a cluster: test_txn_cluster.py).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from support import KAFKA_LIBS, create_topic, unique_topic, wait_until

JAVA_TIMEOUT = 120
BROKER_CONFIG = "group_initial_rebalance_delay_ms = 0\n"


def java(workdir, *args, timeout=JAVA_TIMEOUT):
    javac, jvm = shutil.which("javac"), shutil.which("java")
    assert javac and jvm, "java/javac not on PATH"
    assert any(KAFKA_LIBS.glob("kafka-clients-*.jar")), f"no Kafka jars in {KAFKA_LIBS}; run tests/run"
    cp = f"{KAFKA_LIBS}{os.sep}*"
    if not (workdir / "Transactions.class").exists():
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Transactions.java")
        res = subprocess.run([javac, "-nowarn", "-d", str(workdir), "-cp", cp, src], capture_output=True, timeout=120)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    cmd = [jvm, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
           "-cp", f"{workdir}{os.pathsep}{cp}", "Transactions", *args]
    return subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def explain(res) -> str:
    return f"exit {res.returncode}\nstdout:\n{res.stdout.decode()}\nstderr:\n{res.stderr.decode()[-3000:]}"


@pytest.fixture
def tbroker(broker_factory, tmp_path):
    cfg = tmp_path / "sluice-txn.toml"
    cfg.write_text(BROKER_CONFIG)
    return broker_factory.start(config=cfg)


def read_values(bootstrap, topic, isolation, partitions=1, timeout=30.0):
    """Every value a consumer with `isolation` reads from the start, up to the end it sees."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("rd"), "isolation.level": isolation,
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out, eof, deadline = [], set(), time.time() + timeout
        while len(eof) < partitions and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    eof.add(m.partition())
                    continue
                raise AssertionError(m.error())
            out.append(m.value().decode())
        assert len(eof) == partitions, f"{isolation}: no end of partition within {timeout}s (read {len(out)})"
        return out
    finally:
        c.close()


def test_java_commit_abort_and_offsets(tbroker, tmp_path):
    topic, group = unique_topic("jtx"), unique_topic("jtxg")
    create_topic(tbroker.bootstrap, topic, 1)
    res = java(tmp_path, "commit-abort", tbroker.bootstrap, topic, group)
    assert res.returncode == 0, explain(res)
    assert "FAILED" not in res.stdout.decode(), explain(res)
    committed = read_values(tbroker.bootstrap, topic, "read_committed")
    assert sorted(committed) == sorted([f"c{i}" for i in range(10)] + [f"d{i}" for i in range(5)])
    assert len(read_values(tbroker.bootstrap, topic, "read_uncommitted")) == 25


def test_java_second_producer_fences_the_first(tbroker, tmp_path):
    topic = unique_topic("jfence")
    create_topic(tbroker.bootstrap, topic, 1)
    res = java(tmp_path, "fence", tbroker.bootstrap, topic)
    assert res.returncode == 0, explain(res)
    assert sorted(read_values(tbroker.bootstrap, topic, "read_committed")) == [f"live{i}" for i in range(4)]


def test_java_transaction_version_2_bumps_the_epoch_per_transaction(broker_factory, tbroker, tmp_path):
    """KIP-890 part 2: sluice finalizes `transaction.version` 2 by default, so the Java 4.x
    producer runs transaction version 2 (implicit partition adds, EndTxn v5): the coordinator's
    producer epoch grows by one at every commit and abort. With `transaction_version = 1` the
    same program keeps its epoch (version 1), and both see exactly the committed records."""
    topic = unique_topic("jtv2")
    create_topic(tbroker.bootstrap, topic, 1)
    res = java(tmp_path, "epochs", tbroker.bootstrap, topic, "1")
    assert res.returncode == 0, explain(res)
    cfg = tmp_path / "sluice-tv1.toml"
    cfg.write_text(BROKER_CONFIG + "transaction_version = 1\n")
    tv1 = broker_factory.start(config=cfg)
    create_topic(tv1.bootstrap, topic, 1)
    res = java(tmp_path, "epochs", tv1.bootstrap, topic, "0")
    assert res.returncode == 0, explain(res)


def txn_producer(bootstrap, txid, timeout_ms=10000):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txid,
                  "transaction.timeout.ms": timeout_ms, "linger.ms": 5})
    p.init_transactions(30)
    return p


def test_confluent_commit_abort_and_send_offsets(tbroker):
    src, dst, group = unique_topic("csrc"), unique_topic("cdst"), unique_topic("cgrp")
    create_topic(tbroker.bootstrap, src, 1)
    create_topic(tbroker.bootstrap, dst, 2)
    plain = Producer({"bootstrap.servers": tbroker.bootstrap})
    for i in range(20):
        plain.produce(src, value=f"in{i}".encode(), partition=0)
    assert plain.flush(15) == 0

    p = txn_producer(tbroker.bootstrap, unique_topic("ctx"))
    p.begin_transaction()
    for i in range(6):
        p.produce(dst, value=f"keep{i}".encode(), partition=i % 2)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(6):
        p.produce(dst, value=f"drop{i}".encode(), partition=i % 2)
    p.flush(15)
    p.abort_transaction(30)

    # Consume-transform-produce: read 10 inputs, write them transformed, commit the input
    # offsets in the same transaction.
    c = Consumer({"bootstrap.servers": tbroker.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    try:
        c.subscribe([src])
        got, deadline = [], time.time() + 30
        while len(got) < 10 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
        assert len(got) == 10
        p.begin_transaction()
        for m in got:
            p.produce(dst, value=b"out-" + m.value(), partition=0)
        p.send_offsets_to_transaction([TopicPartition(src, 0, got[-1].offset() + 1)],
                                      c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
    finally:
        c.close()

    committed = read_values(tbroker.bootstrap, dst, "read_committed", partitions=2)
    assert sorted(committed) == sorted([f"keep{i}" for i in range(6)] + [f"out-in{i}" for i in range(10)])
    everything = read_values(tbroker.bootstrap, dst, "read_uncommitted", partitions=2)
    assert len(everything) == 22 and sum(v.startswith("drop") for v in everything) == 6

    c2 = Consumer({"bootstrap.servers": tbroker.bootstrap, "group.id": group})
    try:
        [tp] = c2.committed([TopicPartition(src, 0)], timeout=15)
        assert tp.offset == got[-1].offset() + 1
    finally:
        c2.close()


def test_open_transaction_aborted_at_timeout_after_broker_kill(broker_factory, tbroker, tmp_path):
    topic, txid = unique_topic("hang"), unique_topic("hangtx")
    create_topic(tbroker.bootstrap, topic, 1)
    res = java(tmp_path, "hang", tbroker.bootstrap, topic, txid)
    assert res.returncode == 0 and b"OK sent" in res.stdout, explain(res)
    # The broker dies with the transaction open; it must replay the coordinator's state and
    # rebuild the partition's open transaction from the log.
    tbroker.stop(signal.SIGKILL)
    b = broker_factory.start(tbroker.data_dir, config=tmp_path / "sluice-txn.toml")
    plain = Producer({"bootstrap.servers": b.bootstrap})
    plain.produce(topic, value=b"after", partition=0)
    assert plain.flush(15) == 0
    # The Java producer asked for a 5 s transaction timeout: read_committed reaches "after"
    # only once the coordinator aborted it.
    def committed_after():
        try:
            v = read_values(b.bootstrap, topic, "read_committed", timeout=10)
        except AssertionError:
            return None
        return v if "after" in v else None

    seen = wait_until(committed_after, timeout=60, interval=1, what="the open transaction aborted by its timeout")
    assert seen == ["after"], seen
    assert sorted(read_values(b.bootstrap, topic, "read_uncommitted")) == sorted(["after"] + [f"hung{i}" for i in range(5)])


def transactions_tool(broker, *args):
    jvm = shutil.which("java")
    assert jvm and any(KAFKA_LIBS.glob("kafka-tools-*.jar")), f"no java or Kafka tools jars in {KAFKA_LIBS}"
    cmd = [jvm, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", f"{KAFKA_LIBS}{os.sep}*",
           "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", broker.bootstrap, *args]
    return subprocess.run(cmd, capture_output=True, timeout=JAVA_TIMEOUT, stdin=subprocess.DEVNULL)


def test_kafka_transactions_tool_lists_and_describes(tbroker):
    topic, txid = unique_topic("tool"), unique_topic("tooltx")
    create_topic(tbroker.bootstrap, topic, 2)
    p = txn_producer(tbroker.bootstrap, txid, timeout_ms=60000)
    p.begin_transaction()
    p.produce(topic, value=b"x", partition=1)
    assert p.flush(15) == 0

    res = transactions_tool(tbroker, "list")
    assert res.returncode == 0, explain(res)
    rows = [line.split() for line in res.stdout.decode().splitlines()]
    assert any(r and r[0] == txid and "Ongoing" in r for r in rows), explain(res)

    res = transactions_tool(tbroker, "describe", "--transactional-id", txid)
    assert res.returncode == 0, explain(res)
    out = res.stdout.decode()
    assert "Ongoing" in out and f"{topic}-1" in out, explain(res)

    p.commit_transaction(30)
    res = transactions_tool(tbroker, "describe", "--transactional-id", txid)
    assert res.returncode == 0 and "CompleteCommit" in res.stdout.decode(), explain(res)
    res = transactions_tool(tbroker, "describe", "--transactional-id", "no-such-" + txid)
    assert res.returncode != 0, explain(res)


def test_read_committed_long_polls_behind_an_open_transaction(broker_factory, tmp_path):
    from support import metrics_address, scrape, total

    cfg = tmp_path / "sluice-txn.toml"
    cfg.write_text(BROKER_CONFIG)
    b = broker_factory.start(config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(b)
    topic = unique_topic("lp")
    create_topic(b.bootstrap, topic, 1)
    p = txn_producer(b.bootstrap, unique_topic("lptx"), timeout_ms=60000)
    p.begin_transaction()
    p.produce(topic, value=b"pending", partition=0)
    assert p.flush(15) == 0
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": unique_topic("lpg"), "isolation.level": "read_committed",
                  "fetch.wait.max.ms": 500, "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        for _ in range(4):  # let the consumer start fetching
            assert c.poll(0.5) is None
        before = total(scrape(addr), "sluice_requests_total", api="Fetch")
        deadline = time.time() + 3
        while time.time() < deadline:
            assert c.poll(0.2) is None, "nothing committed yet"
        fetches = total(scrape(addr), "sluice_requests_total", api="Fetch") - before
        # Each fetch waits up to 500 ms for the open transaction to end: about 6 in 3 s, not
        # hundreds of empty answers.
        assert fetches <= 20, f"{fetches} fetches in 3 s behind an open transaction"
        p.commit_transaction(30)
        got = wait_until(lambda: c.poll(0.5), timeout=20, what="the committed record")
        assert got.value() == b"pending"
    finally:
        c.close()


def committed_offset(bootstrap, group, topic, isolation, timeout):
    """The group's committed offset of `topic`/0 as OffsetFetch answers it; librdkafka asks with
    require_stable when read_committed and retries UNSTABLE_OFFSET_COMMIT until `timeout`
    (then raises)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": isolation,
                  "enable.auto.commit": False})
    try:
        [tp] = c.committed([TopicPartition(topic, 0)], timeout=timeout)
        if tp.error is not None:
            raise KafkaException(tp.error)
        return tp.offset
    finally:
        c.close()


def test_staged_offsets_are_unstable_durable_and_recovered(broker_factory, tbroker, tmp_path):
    """TxnOffsetCommit's offsets: OffsetFetch require_stable answers UNSTABLE_OFFSET_COMMIT while
    the transaction is open (librdkafka's read_committed committed() retries it until its
    timeout), also after the broker was SIGKILLed and restarted (the staged offsets are durable
    and replayed); the transaction aborted by its timeout drops them; a committed one commits."""
    src, dst, group = unique_topic("ssrc"), unique_topic("sdst"), unique_topic("sgrp")
    create_topic(tbroker.bootstrap, src, 1)
    create_topic(tbroker.bootstrap, dst, 1)
    member = Consumer({"bootstrap.servers": tbroker.bootstrap, "group.id": group})
    p = txn_producer(tbroker.bootstrap, unique_topic("stx"), timeout_ms=15000)
    try:
        p.begin_transaction()
        p.produce(dst, value=b"x", partition=0)
        p.send_offsets_to_transaction([TopicPartition(src, 0, 7)], member.consumer_group_metadata(), 30)
        assert committed_offset(tbroker.bootstrap, group, src, "read_uncommitted", 10) < 0
        with pytest.raises(KafkaException):
            committed_offset(tbroker.bootstrap, group, src, "read_committed", 3)
    finally:
        member.close()
    # Dies with the transaction open and its offsets staged.
    tbroker.stop(signal.SIGKILL)
    b = broker_factory.start(tbroker.data_dir, config=tmp_path / "sluice-txn.toml")
    with pytest.raises(KafkaException):
        committed_offset(b.bootstrap, group, src, "read_committed", 3)
    # The coordinator aborts it at its timeout: the staged offsets are dropped, nothing pending.
    def stable():
        try:
            return committed_offset(b.bootstrap, group, src, "read_committed", 2) < 0
        except KafkaException:
            return None
    wait_until(stable, timeout=60, interval=1, what="the timed-out transaction's staged offsets dropped")

    # A committed transaction's offsets become the group's.
    member = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group})
    p2 = txn_producer(b.bootstrap, unique_topic("stx2"))
    try:
        p2.begin_transaction()
        p2.produce(dst, value=b"y", partition=0)
        p2.send_offsets_to_transaction([TopicPartition(src, 0, 9)], member.consumer_group_metadata(), 30)
        p2.commit_transaction(30)
    finally:
        member.close()
    assert committed_offset(b.bootstrap, group, src, "read_committed", 10) == 9


# --- kafka-transactions.sh describe-producers / find-hanging / abort (WriteTxnMarkers) -----------

HANG_SCRIPT = r"""
import os, signal, sys
from confluent_kafka import Producer
bootstrap, topic, partition, txid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txid,
              "transaction.timeout.ms": 600000, "linger.ms": 5})
p.init_transactions(60)
p.begin_transaction()
for i in range(3):
    p.produce(topic, value=f"hung{i}".encode(), partition=partition)
assert p.flush(60) == 0
print("sent", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def tool_at(bootstrap, *args):
    """kafka-transactions.sh (TransactionsCommand) against `bootstrap`."""
    jvm = shutil.which("java")
    assert jvm and any(KAFKA_LIBS.glob("kafka-tools-*.jar")), f"no java or Kafka tools jars in {KAFKA_LIBS}"
    cmd = [jvm, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", f"{KAFKA_LIBS}{os.sep}*",
           "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bootstrap, *args]
    return subprocess.run(cmd, capture_output=True, timeout=JAVA_TIMEOUT, stdin=subprocess.DEVNULL)


def table(res) -> list:
    """The data rows of a TransactionsCommand table (its first line is the header)."""
    lines = [line.split() for line in res.stdout.decode().splitlines() if line.strip()]
    return lines[1:]


def plain_offset(bootstrap, topic, partition, value) -> int:
    got = []
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all"})
    p.produce(topic, value=value, partition=partition, on_delivery=lambda e, m: got.append((e, m)))
    assert p.flush(30) == 0 and got and got[0][0] is None, got
    return got[0][1].offset()


def abort_a_hanging_transaction(data_bootstrap, tool_bootstrap, topic, partition):
    """A transactional producer (transaction.timeout.ms 10 min) is SIGKILLed with records sent
    in an open transaction: a read_committed consumer stops at its first offset (the last
    stable offset). kafka-transactions.sh describe-producers shows the open transaction's start
    offset; find-hanging finds nothing hanging (the coordinator still has the transaction
    open in that partition: Kafka answers the same); `abort --start-offset` writes the ABORT
    marker (WriteTxnMarkers to the partition's leader) and the consumer reads on, never seeing
    the aborted records. `tool_bootstrap` may name another broker than the leader."""
    txid = unique_topic("hangtool")
    before = plain_offset(data_bootstrap, topic, partition, b"before")
    res = subprocess.run([sys.executable, "-c", HANG_SCRIPT, data_bootstrap, topic, str(partition), txid],
                         capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == -signal.SIGKILL and b"sent" in res.stdout, explain(res)
    after = plain_offset(data_bootstrap, topic, partition, b"after")

    c = Consumer({"bootstrap.servers": data_bootstrap, "group.id": unique_topic("hangrd"),
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        seen = []

        def poll_for(value, seconds):
            deadline = time.time() + seconds
            while time.time() < deadline and value not in seen:
                m = c.poll(0.2)
                if m is not None and not m.error():
                    seen.append(m.value().decode())
            return value in seen

        assert poll_for("before", 30), seen
        assert not poll_for("after", 2), f"read_committed passed an open transaction: {seen}"

        res = tool_at(tool_bootstrap, "describe-producers", "--topic", topic, "--partition", str(partition))
        assert res.returncode == 0, explain(res)
        open_rows = [r for r in table(res) if r[-1] != "None"]
        assert len(open_rows) == 1, explain(res)
        producer_id, epoch, coordinator_epoch, last_seq, _, start = open_rows[0]
        assert before < int(start) < after and int(last_seq) == 2, explain(res)

        res = tool_at(tool_bootstrap, "find-hanging", "--topic", topic, "--max-transaction-timeout", "0")
        assert res.returncode == 0 and table(res) == [], explain(res)

        res = tool_at(tool_bootstrap, "abort", "--topic", topic, "--partition", str(partition),
                      "--start-offset", start)
        assert res.returncode == 0, explain(res)
        assert poll_for("after", 30), f"read_committed still stuck after the abort: {seen}"
        assert seen == ["before", "after"], seen

        res = tool_at(tool_bootstrap, "describe-producers", "--topic", topic, "--partition", str(partition))
        assert res.returncode == 0, explain(res)
        rows = {r[0]: r for r in table(res)}
        assert rows[producer_id][-1] == "None", explain(res)
        return {"producer": open_rows[0], "after_abort": rows[producer_id]}
    finally:
        c.close()


def test_kafka_transactions_tool_aborts_a_hanging_transaction(tbroker):
    topic = unique_topic("hangab")
    create_topic(tbroker.bootstrap, topic, 2)
    abort_a_hanging_transaction(tbroker.bootstrap, tbroker.bootstrap, topic, 1)
