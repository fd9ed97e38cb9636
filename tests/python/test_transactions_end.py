"""EndTxn answered at the durable Prepare state, as Kafka answers it (issue #21).

The coordinator answers EndTxn once PrepareCommit/PrepareAbort is durable in
`__transaction_state`; the COMMIT/ABORT markers and the Complete state are written afterwards.
These tests hold the markers back with the fault-injection hook
`SLUICE_FAULT_TXN_MARKER_DELAY_MS` (a workspace build's binary has it) so that the window
between the answer and the markers is seconds, not milliseconds, and check:

- the commit returns before the markers are written; meanwhile the last stable offset stays at
  the transaction's first offset, so a read_committed reader sees nothing of it, then all of it
  once the markers land;
- the producer's next transaction starts while the markers are pending (librdkafka, transaction
  version 1: its AddPartitionsToTxn waits on the coordinator, then gets CONCURRENT_TRANSACTIONS
  and retries) and commits once they are written; nothing is lost or seen partially;
- a broker SIGKILLed after the Prepare state is durable but before the markers completes the
  transaction after its restart (the coordinator's sweep), and the same transactional id goes
  on;
- a broker SIGKILLed after the markers but before its sweep wrote the Complete state (it is
  written by the next sweep, or replaced by the id's next change) sends the markers again after
  its restart: the transaction stays committed, read once, and the id goes on.
"""

import signal
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from support import create_topic, unique_topic, wait_until

BROKER_CONFIG = "group_initial_rebalance_delay_ms = 0\n"
DELAY_VAR = "SLUICE_FAULT_TXN_MARKER_DELAY_MS"
HOLD_VAR = "SLUICE_FAULT_TXN_HOLD_COMPLETE"


def start(broker_factory, tmp_path, data_dir=None):
    cfg = tmp_path / "sluice-txn-end.toml"
    cfg.write_text(BROKER_CONFIG)
    return broker_factory.start(data_dir, config=cfg)


def producer(bootstrap, txid):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txid, "transaction.timeout.ms": 60000,
                  "linger.ms": 5})
    p.init_transactions(30)
    return p


def ends(bootstrap, topic, partitions, isolation):
    """Each partition's end offset as ListOffsets answers it for `isolation` (read_committed:
    the last stable offset)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("ends"), "isolation.level": isolation})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(partitions)]
    finally:
        c.close()


def read_committed(bootstrap, topic, partitions, want, timeout=15.0):
    """Every value read_committed reads from the start, until `want` values or `timeout`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("rc"), "isolation.level": "read_committed",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out, deadline = [], time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            m = c.poll(0.3)
            if m is not None and not m.error():
                out.append(m.value().decode())
        return out
    finally:
        c.close()


def send(p, topic, prefix, n, partitions):
    for i in range(n):
        p.produce(topic, value=f"{prefix}{i}".encode(), partition=i % partitions)


def test_end_txn_is_answered_before_its_markers(broker_factory, tmp_path, monkeypatch):
    delay = 3.0
    monkeypatch.setenv(DELAY_VAR, str(int(delay * 1000)))
    b = start(broker_factory, tmp_path)
    topic = unique_topic("early")
    create_topic(b.bootstrap, topic, 2)
    p = producer(b.bootstrap, unique_topic("earlytx"))

    p.begin_transaction()
    send(p, topic, "one-", 10, 2)
    t0 = time.monotonic()
    p.commit_transaction(30)
    answered = time.monotonic() - t0
    assert answered < delay - 1.0, f"commit took {answered:.2f}s: EndTxn waited for the delayed markers"
    assert "transaction markers delayed" in b.stderr_tail(400), "not a fault-injection build"
    # The markers are not written yet: read_committed ends at the transaction's first offset.
    lso = ends(b.bootstrap, topic, 2, "read_committed")
    hw = ends(b.bootstrap, topic, 2, "read_uncommitted")
    assert time.monotonic() - t0 < delay, "the offsets were asked too late to see the pending markers"
    assert lso == [0, 0] and hw == [5, 5], (lso, hw)

    # The next transaction begins while the markers are pending: its AddPartitionsToTxn waits,
    # is retried (CONCURRENT_TRANSACTIONS) and goes on once the first transaction completed.
    p.begin_transaction()
    send(p, topic, "two-", 10, 2)
    p.commit_transaction(30)
    assert time.monotonic() - t0 >= delay, "the second transaction was added before the first one completed"
    # Each partition: 5 records and a marker per transaction, once both sets of markers landed.
    wait_until(lambda: ends(b.bootstrap, topic, 2, "read_committed") == [12, 12], timeout=15, interval=0.3,
               what="both transactions' markers")
    got = read_committed(b.bootstrap, topic, 2, want=20)
    assert sorted(got) == sorted([f"one-{i}" for i in range(10)] + [f"two-{i}" for i in range(10)]), got


def commit_kept(bootstrap, topic, txid):
    """A new producer of `txid` commits ten records "kept-0".. over the topic's 2 partitions."""
    p = producer(bootstrap, txid)
    p.begin_transaction()
    send(p, topic, "kept-", 10, 2)
    p.commit_transaction(30)


def goes_on(bootstrap, topic, txid):
    """After a restart: read_committed reads the kept records once, and a new instance of the
    same transactional id commits another transaction."""
    kept = [f"kept-{i}" for i in range(10)]
    assert sorted(read_committed(bootstrap, topic, 2, want=10)) == sorted(kept)
    p = producer(bootstrap, txid)
    p.begin_transaction()
    send(p, topic, "next-", 4, 2)
    p.commit_transaction(30)
    got = read_committed(bootstrap, topic, 2, want=14)
    assert sorted(got) == sorted(kept + [f"next-{i}" for i in range(4)]), got


def test_prepared_commit_completes_after_a_kill(broker_factory, tmp_path, monkeypatch):
    monkeypatch.setenv(DELAY_VAR, "600000")
    b = start(broker_factory, tmp_path)
    topic, txid = unique_topic("prep"), unique_topic("preptx")
    create_topic(b.bootstrap, topic, 2)
    commit_kept(b.bootstrap, topic, txid)
    assert ends(b.bootstrap, topic, 2, "read_committed") == [0, 0], "markers written despite the delay"
    # PrepareCommit is durable and answered; the markers are not written. SIGKILL now.
    b.stop(signal.SIGKILL)
    monkeypatch.delenv(DELAY_VAR)
    b2 = start(broker_factory, tmp_path, data_dir=b.data_dir)
    wait_until(lambda: ends(b2.bootstrap, topic, 2, "read_committed") == [6, 6], timeout=15, interval=0.3,
               what="the prepared commit's markers after the restart")
    goes_on(b2.bootstrap, topic, txid)


def test_commit_whose_complete_state_was_not_written_survives_a_kill(broker_factory, tmp_path, monkeypatch):
    # The sweep writes a Complete state within a second of the markers; held back here so the
    # kill surely comes before it.
    monkeypatch.setenv(HOLD_VAR, "1")
    b = start(broker_factory, tmp_path)
    topic, txid = unique_topic("unwritten"), unique_topic("unwrittentx")
    create_topic(b.bootstrap, topic, 2)
    commit_kept(b.bootstrap, topic, txid)
    # The markers are durable once the last stable offset reaches the high watermark.
    wait_until(lambda: ends(b.bootstrap, topic, 2, "read_committed") == [6, 6], timeout=10, interval=0.1,
               what="the commit's markers")
    time.sleep(1.5)  # a sweep passes, holding the Complete state back
    assert "Complete states held back" in b.stderr_tail(400), "not a fault-injection build"
    b.stop(signal.SIGKILL)
    monkeypatch.delenv(HOLD_VAR)
    b2 = start(broker_factory, tmp_path, data_dir=b.data_dir)
    # The log still held the Prepare state: the restart sends the markers again.
    wait_until(lambda: f"transactional_id={txid}" in b2.stderr_tail(400)
               and "completing an unfinished transaction" in b2.stderr_tail(400), timeout=10, interval=0.2,
               what="the restart completing the transaction")
    goes_on(b2.bootstrap, topic, txid)
