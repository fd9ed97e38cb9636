"""Idempotent production against sluice.

Covers: InitProducerId v0 over a raw socket; hand-built v2 record batches
(varints, CRC-32C) sent with Produce v3 acks=-1 — a replay of the same
producer id/epoch/sequence answers with the original base offset and no error
and is stored once, a sequence gap answers OUT_OF_ORDER_SEQUENCE_NUMBER (45);
the same replay after a SIGTERM restart; producer state expiring after
producer_id_expiration_ms; and a confluent-kafka idempotent
producer replaced by a new one mid-stream (10,000 distinct values, no
duplicates, per-partition order).
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from support import create_topic, kstr, recv_frame, request_frame, unique_topic, wait_until

OUT_OF_ORDER_SEQUENCE_NUMBER = 45

# --- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78 --------------------

_CRC32C_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vector():
    assert crc32c(b"123456789") == 0xE3069283


# --- varints and record batches -----------------------------------------------

def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record(offset_delta: int, key: bytes, value: bytes) -> bytes:
    body = struct.pack(">b", 0) + varint(0) + varint(offset_delta)
    body += varint(len(key)) + key + varint(len(value)) + value + varint(0)
    return varint(len(body)) + body


def record_batch(producer_id: int, epoch: int, base_sequence: int, kvs: list) -> bytes:
    ts = int(time.time() * 1000)
    records = b"".join(record(i, k, v) for i, (k, v) in enumerate(kvs))
    # attributes .. end: the part the CRC covers.
    tail = struct.pack(">hiqqqhii", 0, len(kvs) - 1, ts, ts, producer_id, epoch,
                       base_sequence, len(kvs)) + records
    crc = crc32c(tail)
    after_length = struct.pack(">ibI", -1, 2, crc) + tail  # partitionLeaderEpoch, magic, crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


# --- raw requests ---------------------------------------------------------------

class Raw:
    def __init__(self, bootstrap: str):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=15)
        self.corr = 100

    def call(self, key: int, version: int, body: bytes) -> bytes:
        self.corr += 1
        self.sock.sendall(request_frame(key, version, self.corr, body))
        resp = recv_frame(self.sock)
        assert resp is not None, f"connection closed instead of answering api {key} v{version}"
        (corr,) = struct.unpack_from(">i", resp, 0)
        assert corr == self.corr, f"correlation id {corr} != {self.corr}"
        return resp[4:]

    def init_producer_id(self) -> tuple:
        body = struct.pack(">hi", -1, 60000)  # transactional_id null, transaction_timeout_ms
        resp = self.call(22, 0, body)
        _throttle, err, pid, epoch = struct.unpack_from(">ihqh", resp, 0)
        assert err == 0, f"InitProducerId error_code {err}"
        assert pid >= 0, f"InitProducerId producer_id {pid}"
        return pid, epoch

    def produce(self, topic: str, partition: int, batch: bytes) -> tuple:
        """Produce v3 acks=-1 of one batch; returns (error_code, base_offset)."""
        body = struct.pack(">hhi", -1, -1, 15000)  # transactional_id null, acks, timeout
        body += struct.pack(">i", 1) + kstr(topic)
        body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch
        resp = self.call(0, 3, body)
        (ntopics,) = struct.unpack_from(">i", resp, 0)
        assert ntopics == 1, f"{ntopics} topics in produce response"
        pos = 4
        (tlen,) = struct.unpack_from(">h", resp, pos)
        assert resp[pos + 2:pos + 2 + tlen].decode() == topic
        pos += 2 + tlen
        (nparts,) = struct.unpack_from(">i", resp, pos)
        assert nparts == 1, f"{nparts} partitions in produce response"
        part, err, base, _append_time = struct.unpack_from(">ihqq", resp, pos + 4)
        assert part == partition
        return err, base

    def close(self):
        self.sock.close()


def consume_values(bootstrap: str, topic: str, partitions: int, expected: int,
                   timeout: float = 60.0) -> list:
    """[(partition, offset, key, value)] read with assign() from offset 0; checks nothing extra."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-tests-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        got = []

        def more():
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is None:
                    got.append((m.partition(), m.offset(), m.key(), m.value()))
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(f"consume error: {m.error()}")
            return len(got) >= expected

        wait_until(more, timeout, interval=0, what=f"{expected} messages from {topic} (have {len(got)})")
        extra = [m for m in c.consume(num_messages=100, timeout=1.0) if m.error() is None]
        assert not extra, (f"{len(extra)} unexpected extra messages, first at offset "
                           f"{extra[0].offset()} value {extra[0].value()!r}")
        return got
    finally:
        c.close()


def test_raw_replay_dedup_and_sequence_gap(broker_factory):
    broker = broker_factory.start()
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic, 1)

    raw = Raw(broker.bootstrap)
    try:
        pid, epoch = raw.init_producer_id()
        assert epoch == 0, f"fresh producer epoch {epoch}"
        first = record_batch(pid, epoch, 0, [(b"k0", b"v0"), (b"k1", b"v1")])

        err1, base1 = raw.produce(topic, 0, first)
        assert (err1, base1) == (0, 0), f"first produce: error {err1} base offset {base1}"
        err2, base2 = raw.produce(topic, 0, first)
        assert (err2, base2) == (0, base1), f"replay: error {err2} base offset {base2} (want 0, {base1})"

        gap = record_batch(pid, epoch, 5, [(b"kg", b"gap")])
        err3, _ = raw.produce(topic, 0, gap)
        assert err3 == OUT_OF_ORDER_SEQUENCE_NUMBER, f"sequence gap answered error {err3}"

        # The in-order next batch is still accepted after the refused gap.
        nxt = record_batch(pid, epoch, 2, [(b"k2", b"v2")])
        err4, base4 = raw.produce(topic, 0, nxt)
        assert (err4, base4) == (0, 2), f"next in-order batch: error {err4} base offset {base4}"
    finally:
        raw.close()

    got = consume_values(broker.bootstrap, topic, 1, 3)
    assert [(o, k, v) for _, o, k, v in got] == [(0, b"k0", b"v0"), (1, b"k1", b"v1"), (2, b"k2", b"v2")]


def test_raw_replay_after_restart(broker_factory):
    broker = broker_factory.start()
    topic = unique_topic("idem-restart")
    create_topic(broker.bootstrap, topic, 1)

    raw = Raw(broker.bootstrap)
    try:
        pid, epoch = raw.init_producer_id()
        b0 = record_batch(pid, epoch, 0, [(b"a", b"first-0"), (b"b", b"first-1")])
        b1 = record_batch(pid, epoch, 2, [(b"c", b"second-0"), (b"d", b"second-1")])
        assert raw.produce(topic, 0, b0) == (0, 0)
        assert raw.produce(topic, 0, b1) == (0, 2)
    finally:
        raw.close()

    broker = broker_factory.restart(broker)

    raw = Raw(broker.bootstrap)
    try:
        err, base = raw.produce(topic, 0, b1)
        assert (err, base) == (0, 2), f"replay of last batch after restart: error {err} base offset {base}"
        err, _ = raw.produce(topic, 0, record_batch(pid, epoch, 9, [(b"x", b"gap")]))
        assert err == OUT_OF_ORDER_SEQUENCE_NUMBER, f"sequence gap after restart answered error {err}"
        b2 = record_batch(pid, epoch, 4, [(b"e", b"third-0")])
        err, base = raw.produce(topic, 0, b2)
        assert (err, base) == (0, 4), f"next in-order batch after restart: error {err} base offset {base}"
    finally:
        raw.close()

    got = consume_values(broker.bootstrap, topic, 1, 5)
    assert [v for _, _, _, v in got] == [b"first-0", b"first-1", b"second-0", b"second-1", b"third-0"]
    assert [o for _, o, _, _ in got] == [0, 1, 2, 3, 4]


def _produce_range(bootstrap: str, topic: str, start: int, stop: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                  "acks": "all", "linger.ms": 5})
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)

    for i in range(start, stop):
        for _ in range(1000):
            try:
                p.produce(topic, key=str(i % 13).encode(), value=f"seq-{i:06d}".encode(), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
    left = p.flush(60)
    assert left == 0, f"{left} messages undelivered"
    assert not errors, f"{len(errors)} delivery errors, first: {errors[0]}"
    p.close()


def test_idempotent_producer_restart_midstream(broker_factory):
    broker = broker_factory.start()
    topic = unique_topic("idem-prod")
    partitions = 3
    create_topic(broker.bootstrap, topic, partitions)

    _produce_range(broker.bootstrap, topic, 0, 5000)
    _produce_range(broker.bootstrap, topic, 5000, 10000)

    got = consume_values(broker.bootstrap, topic, partitions, 10000)
    seqs = [int(v.decode().split("-")[1]) for _, _, _, v in got]
    assert len(seqs) == 10000
    assert len(set(seqs)) == 10000, f"{10000 - len(set(seqs))} duplicates"
    assert set(seqs) == set(range(10000))
    for part in range(partitions):
        in_part = [(o, int(v.decode().split("-")[1])) for p, o, _, v in got if p == part]
        in_part.sort()
        s = [x for _, x in in_part]
        assert s == sorted(s), f"partition {part} out of order"
        offs = [o for o, _ in in_part]
        assert offs == list(range(len(offs))), f"partition {part} offsets not dense from 0"


def test_producer_state_expires(broker_factory, tmp_path):
    """producer_id_expiration_ms (Kafka's producer.id.expiration.ms): within it a replay is
    deduplicated and a gap refused; after it the producer is unknown, and, as Kafka's
    ProducerAppendInfo.checkSequence does for a producer without state, its batch is accepted at
    any sequence, so a replay that late is appended again."""
    cfg = tmp_path / "sluice.toml"
    cfg.write_text("producer_id_expiration_ms = 3000\n")
    broker = broker_factory.start(config=cfg)
    topic = unique_topic("idem-expiry")
    create_topic(broker.bootstrap, topic, 1)

    raw = Raw(broker.bootstrap)
    try:
        pid, epoch = raw.init_producer_id()
        b0 = record_batch(pid, epoch, 0, [(b"k0", b"v0"), (b"k1", b"v1")])
        assert raw.produce(topic, 0, b0) == (0, 0)
        assert raw.produce(topic, 0, b0) == (0, 0), "a replay within the expiration is deduplicated"
        err, _ = raw.produce(topic, 0, record_batch(pid, epoch, 5, [(b"kg", b"gap")]))
        assert err == OUT_OF_ORDER_SEQUENCE_NUMBER, f"a gap within the expiration answered {err}"

        time.sleep(3.5)
        err, base = raw.produce(topic, 0, b0)
        assert (err, base) == (0, 2), f"replay after expiry: error {err} base {base} (want appended at 2)"
        # The producer has state again: in-order continues, a gap is refused.
        assert raw.produce(topic, 0, record_batch(pid, epoch, 2, [(b"k2", b"v2")])) == (0, 4)
        err, _ = raw.produce(topic, 0, record_batch(pid, epoch, 9, [(b"kx", b"gap")]))
        assert err == OUT_OF_ORDER_SEQUENCE_NUMBER, f"a gap after the restart of state answered {err}"
    finally:
        raw.close()

    got = consume_values(broker.bootstrap, topic, 1, 5)
    assert [v for _, _, _, v in got] == [b"v0", b"v1", b"v0", b"v1", b"v2"]
