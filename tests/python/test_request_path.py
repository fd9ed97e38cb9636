"""The request path across shards, under many connections, under create/delete races and next to
a client that never reads its socket.

1. One producer connection writing a 12-partition topic whose partitions are on both shards: the
   writes cross cores (cross-core message counters move) and every partition reads back whole
   and in order.
2. 50 producer connections and 10 consumer connections at once: every message arrives exactly
   once and in per-producer order within its partition.
3. Concurrent CreateTopics/DeleteTopics of the same names from several AdminClients: afterwards
   Metadata from fresh connections (landing on both shards) agrees, the data dir agrees, every
   surviving topic works, and topics deleted afterwards are gone everywhere.
4. Raw clients pipelining large Fetches and never reading: a normal producer/consumer pair keeps
   most of its throughput and the broker's RSS stays bounded.

Thread pinning is covered by the Rust tests.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time
from collections import defaultdict

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from support import (
    RssSampler, create_topic, kstr, metrics_address, recv_frame, request_frame, rss_kib, scrape, total, unique_topic,
    wait_until,
)

MIB = 1024 * 1024


# --- helpers -------------------------------------------------------------------

def new_consumer(bootstrap: str, **extra) -> Consumer:
    conf = {"bootstrap.servers": bootstrap, "group.id": "sluice-tests-unused",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100, "enable.partition.eof": False}
    conf.update(extra)
    return Consumer(conf)


def produce_blocking(p: Producer, topic: str, **kw) -> None:
    for _ in range(2000):
        try:
            p.produce(topic, **kw)
            return
        except BufferError:
            p.poll(0.05)
    raise AssertionError("producer queue stayed full")


def consume_exactly(bootstrap: str, topic: str, partitions, expected: int, timeout: float = 60.0) -> list:
    """Reads `expected` messages from the beginning of `partitions`; asserts nothing more follows."""
    c = new_consumer(bootstrap)
    got = []
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

        def more():
            for m in c.consume(num_messages=2000, timeout=0.5):
                if m.error() is None:
                    got.append(m)
                else:
                    raise AssertionError(f"consume error on {topic}: {m.error()}")
            return len(got) >= expected

        wait_until(more, timeout, interval=0, what=f"{expected} messages from {topic} (have {len(got)})")
        extra = [m for m in c.consume(num_messages=100, timeout=1.0) if m.error() is None]
        assert not extra, f"{len(extra)} unexpected extra messages in {topic}"
        return got
    finally:
        c.close()


# --- raw Metadata v1 ------------------------------------------------------------

def _string(buf: bytes, pos: int):
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    if n < 0:
        return None, pos
    return buf[pos:pos + n].decode(), pos + n


def metadata_v1_all_topics(bootstrap_port: int, correlation_id: int) -> dict:
    """Opens a fresh connection, asks Metadata v1 for all topics (null list: never auto-creates),
    returns {topic: (error_code, partition_count, sorted partition ids, partition errors)}."""
    with socket.create_connection(("127.0.0.1", bootstrap_port), timeout=15) as s:
        s.sendall(request_frame(3, 1, correlation_id, struct.pack(">i", -1)))
        resp = recv_frame(s)
    assert resp is not None, "connection closed instead of a Metadata answer"
    (corr,) = struct.unpack_from(">i", resp, 0)
    assert corr == correlation_id
    pos = 4
    (nbrokers,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    for _ in range(nbrokers):
        pos += 4
        _host, pos = _string(resp, pos)
        pos += 4
        _rack, pos = _string(resp, pos)
    pos += 4  # controller id
    (ntopics,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    out = {}
    for _ in range(ntopics):
        (terr,) = struct.unpack_from(">h", resp, pos)
        pos += 2
        name, pos = _string(resp, pos)
        pos += 1  # is_internal
        (nparts,) = struct.unpack_from(">i", resp, pos)
        pos += 4
        ids, perrs = [], []
        for _ in range(nparts):
            perr, pid, _leader = struct.unpack_from(">hii", resp, pos)
            pos += 10
            for _arr in range(2):  # replicas, isr
                (n,) = struct.unpack_from(">i", resp, pos)
                pos += 4 + 4 * max(n, 0)
            ids.append(pid)
            perrs.append(perr)
        out[name] = (terr, nparts, sorted(ids), sorted(set(perrs)))
    assert pos == len(resp), f"Metadata v1 answer has {len(resp) - pos} trailing bytes"
    return out


# --- 1. one connection, partitions on both shards ----------------------------------------

def test_single_connection_produces_across_both_shards(broker_factory):
    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"), cores=2)
    addr = metrics_address(broker)
    topic = unique_topic("xcore")
    parts, per_part = 12, 400

    before = scrape(addr)
    create_topic(broker.bootstrap, topic, parts)
    created = scrape(addr)
    added = [total(created, "sluice_partitions", shard=str(s)) - total(before, "sluice_partitions", shard=str(s))
             for s in (0, 1)]
    # Both shards own some of the new topic's partitions, and no partition is counted twice.
    assert sum(added) == parts and all(a > 0 for a in added), f"new partitions per shard: {added}"

    # One producer instance, idempotent so librdkafka keeps per-partition order with 5 in flight.
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 2,
                  "enable.idempotence": True, "batch.num.messages": 50})
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(parts * per_part):
        part, seq = i % parts, i // parts
        produce_blocking(p, topic, partition=part, key=str(part).encode(),
                         value=f"{part}:{seq}:".encode() + b"v" * 300, on_delivery=cb)
        if i % 200 == 0:
            p.poll(0)
    assert p.flush(60) == 0, "messages undelivered after 60s"
    assert not errors, f"{len(errors)} delivery errors, first {errors[0]}"
    after = scrape(addr)
    sent = total(after, "sluice_cross_core_messages_sent_total") - total(created, "sluice_cross_core_messages_sent_total")
    recv = total(after, "sluice_cross_core_messages_received_total") - total(created, "sluice_cross_core_messages_received_total")
    assert sent > 0 and recv > 0, f"produce to both shards' partitions did not cross cores: sent {sent} received {recv}"
    # librdkafka keeps at most a bootstrap and one broker connection; the produce traffic used one.
    assert total(after, "sluice_requests_total", api="Produce") > total(created, "sluice_requests_total", api="Produce")

    got = consume_exactly(broker.bootstrap, topic, range(parts), parts * per_part)
    by_part = defaultdict(list)
    for m in got:
        by_part[m.partition()].append(m)
    for part in range(parts):
        ms = by_part[part]
        assert [m.offset() for m in ms] == list(range(per_part)), f"partition {part}: offsets not 0..{per_part - 1}"
        seqs = []
        for m in ms:
            vp, vs, _ = m.value().split(b":", 2)
            assert int(vp) == part, f"message for partition {int(vp)} read from partition {part}"
            seqs.append(int(vs))
        assert seqs == list(range(per_part)), f"partition {part} out of order: first bad at " \
            f"{next(i for i, s in enumerate(seqs) if s != i)}"


# --- 2. many concurrent connections ---------------------------------------------------

def test_fifty_producers_and_ten_consumers_at_once(broker_factory):
    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"), cores=2)
    addr = metrics_address(broker)
    topic = unique_topic("many")
    parts, producers, per_producer = 10, 50, 200
    create_topic(broker.bootstrap, topic, parts)
    expected_per_part = producers * per_producer // parts

    received = defaultdict(list)   # partition -> [(producer, seq, offset)]
    consumer_errors = []
    stop = threading.Event()
    consumers_ready = threading.Barrier(parts + 1, timeout=60)

    def consume(part: int):
        c = new_consumer(broker.bootstrap)
        try:
            c.assign([TopicPartition(topic, part, OFFSET_BEGINNING)])
            consumers_ready.wait()
            deadline = time.monotonic() + 120
            while len(received[part]) < expected_per_part and time.monotonic() < deadline and not stop.is_set():
                for m in c.consume(num_messages=500, timeout=0.5):
                    if m.error() is not None:
                        consumer_errors.append(str(m.error()))
                        continue
                    prod, seq = m.value().split(b":", 2)[:2]
                    received[part].append((int(prod), int(seq), m.offset()))
            # Anything beyond the expected count is a duplicate or a stray message.
            for m in c.consume(num_messages=100, timeout=1.0):
                if m.error() is None:
                    received[part].append((-1, -1, m.offset()))
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            consumer_errors.append(repr(e))
        finally:
            c.close()

    delivery_errors = []
    all_connected = threading.Barrier(producers + 1, timeout=60)
    release = threading.Event()

    def produce(j: int):
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                      "enable.idempotence": True})
        try:
            for seq in range(per_producer):
                produce_blocking(p, topic, partition=(j + seq) % parts,
                                 value=f"{j}:{seq}:".encode() + b"m" * 100,
                                 on_delivery=lambda err, _m: err and delivery_errors.append(str(err)))
                if seq == 0:
                    p.flush(30)  # connection is up before the barrier
                    all_connected.wait()
                p.poll(0)
            left = p.flush(60)
            if left:
                delivery_errors.append(f"producer {j}: {left} undelivered")
            release.wait(60)  # keep the connection open until the main thread has counted
        except Exception as e:  # noqa: BLE001
            delivery_errors.append(f"producer {j}: {e!r}")

    cthreads = [threading.Thread(target=consume, args=(i,), daemon=True) for i in range(parts)]
    pthreads = [threading.Thread(target=produce, args=(j,), daemon=True) for j in range(producers)]
    for t in cthreads:
        t.start()
    consumers_ready.wait()
    for t in pthreads:
        t.start()
    try:
        all_connected.wait()
        during = scrape(addr)
        conns = total(during, "sluice_connections")
        per_shard = [total(during, "sluice_connections", shard=str(s)) for s in (0, 1)]
        # 50 producers + 10 consumers, each with at least one open connection.
        assert conns >= producers + parts, f"only {conns} connections open ({per_shard} per shard)"
        assert all(c > 0 for c in per_shard), f"SO_REUSEPORT put every connection on one shard: {per_shard}"
    finally:
        release.set()
        for t in pthreads:
            t.join(120)
    for t in cthreads:
        t.join(150)
    stop.set()
    assert not any(t.is_alive() for t in pthreads + cthreads), "client threads did not finish"
    assert not delivery_errors, f"{len(delivery_errors)} producer errors, first {delivery_errors[0]}"
    assert not consumer_errors, f"{len(consumer_errors)} consumer errors, first {consumer_errors[0]}"

    seen = set()
    for part in range(parts):
        rows = received[part]
        assert len(rows) == expected_per_part, f"partition {part}: {len(rows)} messages, want {expected_per_part}"
        assert [o for _, _, o in rows] == list(range(expected_per_part)), f"partition {part}: offsets not contiguous"
        last = {}
        for prod, seq, off in rows:
            assert (prod + seq) % parts == part, f"({prod},{seq}) at {part}:{off} belongs to partition {(prod + seq) % parts}"
            assert seq > last.get(prod, -1), f"producer {prod} out of order in partition {part} at offset {off}"
            last[prod] = seq
            seen.add((prod, seq))
    assert len(seen) == producers * per_producer, f"{producers * per_producer - len(seen)} messages missing"
    assert broker.alive()


# --- 3. create/delete races ----------------------------------------------------------

def test_create_delete_races_leave_all_shards_agreeing(broker_factory, tmp_path):
    cfg = tmp_path / "no-autocreate.toml"
    cfg.write_text("auto_create_topics_enable = false\n")
    broker = broker_factory.start(config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"), cores=2)
    addr = metrics_address(broker)
    prefix = unique_topic("race")
    names = {f"{prefix}-{i}": n for i, n in enumerate((3, 4, 6, 1))}  # name -> its partition count
    threads_n, rounds = 4, 12
    ok_codes = {KafkaError.NO_ERROR, KafkaError.TOPIC_ALREADY_EXISTS, KafkaError.UNKNOWN_TOPIC_OR_PART}
    unexpected = []
    counts = defaultdict(int)

    def outcome(fut, what):
        try:
            fut.result(timeout=60)
            counts[what + ":ok"] += 1
        except KafkaException as e:
            err = e.args[0]
            counts[f"{what}:{err.name()}"] += 1
            if err.code() not in ok_codes:
                unexpected.append(f"{what}: {err}")
        except Exception as e:  # noqa: BLE001
            unexpected.append(f"{what}: {e!r}")

    def racer(t: int):
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        order = list(names)
        for r in range(rounds):
            # Every thread walks the names from a different start, so ops on one name interleave.
            for k in range(len(order)):
                name = order[(k + t + r) % len(order)]
                if (t + r) % 2 == 0:
                    outcome(admin.create_topics([NewTopic(name, names[name], 1)], operation_timeout=30,
                                                request_timeout=60)[name], "create")
                else:
                    outcome(admin.delete_topics([name], operation_timeout=30, request_timeout=60)[name], "delete")

    stop = threading.Event()
    produce_errors = defaultdict(int)

    def producer_during_race():
        # Appends land on logs while they are being created and deleted.
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 1,
                      "message.timeout.ms": 3000, "topic.metadata.refresh.interval.ms": 200})
        for _ in range(100_000):
            if stop.is_set():
                break
            for name in names:
                try:
                    p.produce(name, value=b"during-race",
                              on_delivery=lambda err, _m: err and produce_errors.__setitem__(
                                  err.name(), produce_errors[err.name()] + 1))
                except (BufferError, KafkaException):
                    pass
            p.poll(0.01)
        p.flush(10)

    pt = threading.Thread(target=producer_during_race, daemon=True)
    pt.start()
    racers = [threading.Thread(target=racer, args=(t,), daemon=True) for t in range(threads_n)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(300)
    stop.set()
    pt.join(30)
    assert not any(t.is_alive() for t in racers), "create/delete threads still running after 300s"
    assert broker.alive(), "broker died during the races"
    assert not unexpected, f"unexpected admin errors ({dict(counts)}): {unexpected[:5]}"
    assert counts["create:ok"] > 0 and counts["delete:ok"] > 0, dict(counts)

    # Metadata from 16 fresh connections; SO_REUSEPORT spreads them over both shards.
    accepted_before = [total(scrape(addr), "sluice_connections_accepted_total", shard=str(s)) for s in (0, 1)]
    views = [metadata_v1_all_topics(broker.port, 100 + i) for i in range(16)]
    accepted_after = [total(scrape(addr), "sluice_connections_accepted_total", shard=str(s)) for s in (0, 1)]
    spread = [a - b for a, b in zip(accepted_after, accepted_before)]
    assert all(x > 0 for x in spread), f"all 16 Metadata connections landed on one shard: {spread}"
    mine = [{k: v for k, v in view.items() if k in names} for view in views]
    for i, view in enumerate(mine[1:], 1):
        assert view == mine[0], f"connection {i} sees {view}, connection 0 sees {mine[0]}"
    surviving = mine[0]
    for name, (terr, nparts, ids, perrs) in surviving.items():
        assert terr == 0 and perrs == [0], f"{name}: topic error {terr}, partition errors {perrs}"
        assert nparts == names[name] and ids == list(range(names[name])), f"{name}: partitions {ids}"

    def dirs_of(name):
        return sorted(d for d in os.listdir(broker.data_dir) if re.fullmatch(re.escape(name) + r"-\d+", d))

    for name, n in names.items():
        want = [f"{name}-{p}" for p in range(n)] if name in surviving else []
        assert dirs_of(name) == sorted(want), f"{name}: data dirs {dirs_of(name)}, metadata says {want}"

    # Each surviving topic takes a produce and gives it back (after whatever the race left).
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 1})
    c = new_consumer(broker.bootstrap)
    try:
        for name, (_e, nparts, _ids, _pe) in surviving.items():
            highs = [c.get_watermark_offsets(TopicPartition(name, q), timeout=10)[1] for q in range(nparts)]
            for q in range(nparts):
                for k in range(5):
                    produce_blocking(p, name, partition=q, value=f"after-{q}-{k}".encode())
            assert p.flush(30) == 0, f"produce to surviving {name} did not complete"
            c.assign([TopicPartition(name, q, highs[q]) for q in range(nparts)])
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 5 * nparts and time.monotonic() < deadline:
                for m in c.consume(num_messages=100, timeout=0.5):
                    assert m.error() is None, f"{name}: {m.error()}"
                    got.append((m.partition(), m.value().decode()))
            assert sorted(got) == sorted((q, f"after-{q}-{k}") for q in range(nparts) for k in range(5)), \
                f"{name}: read back {sorted(got)[:10]}..."
            c.unassign()
    finally:
        c.close()

    # Delete everything that survived: every shard forgets it and its logs leave the disk.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    if surviving:
        for name, fut in admin.delete_topics(list(surviving), operation_timeout=30).items():
            fut.result(timeout=60)
    views = [metadata_v1_all_topics(broker.port, 200 + i) for i in range(8)]
    for view in views:
        left = set(view) & set(names)
        assert not left, f"deleted topics still listed: {left}"
    for name in names:
        assert dirs_of(name) == [], f"{name}: data dirs left after delete: {dirs_of(name)}"
    # The names are usable again, with their own partition counts.
    for name, n in names.items():
        create_topic(broker.bootstrap, name, n)
    views = [metadata_v1_all_topics(broker.port, 300 + i) for i in range(8)]
    for view in views:
        assert {k: v[1] for k, v in view.items() if k in names} == names


# --- 4. a client that never reads ------------------------------------------------------

def fetch_v4_big(correlation_id: int, topic: str, partitions: int) -> bytes:
    """Fetch v4 of every partition from offset 0, max_wait 0, asking for as much as allowed."""
    body = struct.pack(">iiiib", -1, 0, 1, 0x7FFFFFFF, 0)
    body += struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", partitions)
    for q in range(partitions):
        body += struct.pack(">iqi", q, 0, 0x7FFFFFFF)
    return request_frame(1, 4, correlation_id, body)


def recv_frame_into(sock: socket.socket, timeout: float) -> bytearray:
    """One response frame's payload read into a preallocated buffer (the answers here are tens
    of MiB arriving in small pieces)."""
    sock.settimeout(timeout)
    head = bytearray(4)
    view = memoryview(head)
    got = 0
    while got < 4:
        n = sock.recv_into(view[got:])
        assert n > 0, "connection closed before a response size"
        got += n
    (size,) = struct.unpack(">i", head)
    assert 0 < size <= 100 * MIB, f"implausible response size {size}"
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    deadline = time.monotonic() + timeout
    while got < size:
        assert time.monotonic() < deadline, f"only {got} of {size} response bytes within {timeout}s"
        n = sock.recv_into(view[got:])
        assert n > 0, f"connection closed after {got} of {size} response bytes"
        got += n
    return buf


def pair_throughput(bootstrap: str, topic: str, window: float) -> float:
    """Messages/s that a confluent producer (acks=all) gets through to a confluent consumer
    over `window` seconds, after 1 s of warm-up."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    c = new_consumer(bootstrap)
    tp = TopicPartition(topic, 0)
    high = c.get_watermark_offsets(tp, timeout=10)[1]
    c.assign([TopicPartition(topic, 0, high)])
    stop = threading.Event()
    errors = []

    def pump():
        while not stop.is_set():
            for _ in range(200):
                try:
                    p.produce(topic, partition=0, value=b"p" * 1024,
                              on_delivery=lambda err, _m: err and errors.append(str(err)))
                except BufferError:
                    break
            p.poll(0.001)

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    try:
        count, start, measuring = 0, time.monotonic(), False
        end = start + 1.0 + window
        while time.monotonic() < end:
            ms = c.consume(num_messages=1000, timeout=0.2)
            if not measuring and time.monotonic() >= start + 1.0:
                measuring, count = True, 0
            count += sum(1 for m in ms if m.error() is None)
        return count / window
    finally:
        stop.set()
        t.join(10)
        p.flush(30)
        c.close()
        assert not errors, f"pair producer errors: {errors[:3]}"


def test_clients_that_never_read_do_not_stall_others(broker_factory, tmp_path):
    # The read cache takes memory as the pair's producer writes (write-through) and as the
    # stalled Fetches read: that is memory the operator gave it, not buffering for stalled
    # clients. It is pinned small here and what it may still take is counted in the bound
    # (by default it is a quarter of the host's memory, which would swamp the measurement).
    cache_per_shard, cores = 128 * MIB, 2
    cfg = tmp_path / "cache.toml"
    cfg.write_text(f"read_cache_bytes_per_shard = {cache_per_shard}\n")
    broker = broker_factory.start(cores=cores, config=cfg, extra_args=("--metrics-listen", "127.0.0.1:0"))
    pid = broker.proc.pid
    metrics = metrics_address(broker)
    big, pair = unique_topic("big"), unique_topic("pair")
    big_parts = 4
    create_topic(broker.bootstrap, big, big_parts)
    create_topic(broker.bootstrap, pair, 1)
    # ~24 MiB per partition of the big topic: each Fetch answer can reach the 64 MiB response cap.
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 1000000, "message.max.bytes": 1000000})
    chunk = os.urandom(64 * 1024)
    for i in range(big_parts * 384):
        produce_blocking(p, big, partition=i % big_parts, value=chunk)
        p.poll(0)
    assert p.flush(120) == 0

    baseline = pair_throughput(broker.bootstrap, pair, window=3.0)
    assert baseline > 100, f"pair throughput without the bad clients is only {baseline:.0f} msg/s"
    rss_before = rss_kib(pid)
    cached_before = total(scrape(metrics), "sluice_read_cache_bytes")
    cache_room_kib = int(cores * cache_per_shard - cached_before) // 1024

    # 4 connections that pipeline 100 big Fetches each and then never read. A tiny receive
    # buffer keeps the kernel from absorbing the answers for us.
    bad, pipelined = [], 100
    for i in range(4):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", broker.port))
        s.settimeout(10)
        s.sendall(b"".join(fetch_v4_big(i * 1000 + k, big, big_parts) for k in range(pipelined)))
        bad.append(s)
    rss_peak = rss_kib(pid)
    try:
        time.sleep(1.0)  # let the broker read what it will and block on the writes
        rss_peak = max(rss_peak, rss_kib(pid))
        with RssSampler(pid, interval=0.1) as rss:
            with_bad = pair_throughput(broker.bootstrap, pair, window=3.0)
        rss_peak = max(rss_peak, rss.peak)
        assert broker.alive()
        # Bound: a stalled connection holds the one answer being written (Fetch answers are capped
        # at 64 MiB) and, while it is built, the reads it is assembled from: 2 x 64 MiB each, for 4
        # connections, plus 64 MiB of slack (measured: 83-107 MiB per stalled connection).
        # Buffering every pipelined answer would be 400 x ~64 MiB. On top: what the read cache
        # had not yet filled of its bound.
        rss_bound = rss_before + cache_room_kib + 4 * 128 * 1024 + 64 * 1024
        assert rss_peak <= rss_bound, \
            f"RSS {rss_peak} KiB > bound {rss_bound} KiB (before: {rss_before} KiB, cache room {cache_room_kib} KiB)"
        # The stalled connections cost the broker nothing once their writes block, so the pair
        # should run near its baseline; 30% leaves room for noise on a 2-core box that also runs
        # the clients, the Python interpreter and whatever else shares the machine.
        assert with_bad >= 0.3 * baseline, \
            f"pair throughput {with_bad:.0f} msg/s with stalled clients < 30% of {baseline:.0f} msg/s without"
        print(f"pair throughput {baseline:.0f} -> {with_bad:.0f} msg/s; RSS {rss_before} -> peak {rss_peak} KiB")

        # The stalled answers were real: the first one is large and well formed. (A partition
        # read stops at a 1 MiB read-cache chunk boundary, so an answer carries about 1 MiB
        # per partition rather than filling max_bytes; Kafka does not promise to fill it either.)
        first = recv_frame_into(bad[0], timeout=60)
        assert struct.unpack_from(">i", first, 0)[0] == 0, "first stalled answer has the wrong correlation id"
        assert len(first) > MIB, f"first stalled Fetch answer only {len(first)} bytes"
    finally:
        for s in bad:
            s.close()
    # And the broker lets go of them.
    wait_until(lambda: broker.alive() and rss_kib(pid) <= rss_bound, 20, what="RSS after closing the stalled clients")
