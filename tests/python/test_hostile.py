"""Hostile raw-socket clients, with a confluent-kafka client on the side that
must keep being served.

- A request split into 1-byte writes is answered correctly.
- Clients that send the 8-byte header of a frame declaring the allowed maximum
  (100 MiB) and then stall must not starve everybody else (the broker reserves
  its per-shard in-flight budget by declared size before the body arrives).
- A client that pipelines Fetch requests and never reads the answers is held
  back (bounded broker RSS, measured from /proc/PID/status) and others are served.
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from support import api_versions, create_topic, fetch_v4_request, request_frame, unique_topic, wait_until


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def round_trip(bootstrap: str, tag: str, timeout: float = 15.0) -> str | None:
    """Produce 20 messages (acks=all) and read them back; None if OK, else the problem."""
    topic = unique_topic(f"side-{tag}")
    errs = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": int(timeout * 1000),
                  "socket.timeout.ms": int(timeout * 1000)})
    for i in range(20):
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=0,
                  on_delivery=lambda err, msg: errs.append(err) if err else None)
    left = p.flush(timeout + 5)
    if left or errs:
        return f"produce: {left} unflushed, errors {[e.name() for e in errs[:3]]}"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "hostile-unused", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < 20 and time.monotonic() < deadline:
            for m in c.consume(num_messages=100, timeout=0.5):
                if m.error() is None:
                    got.append(m.value())
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    return f"consume error {m.error()}"
    finally:
        c.close()
    want = [f"{tag}-{i}".encode() for i in range(20)]
    return None if got == want else f"consumed {len(got)} of 20"


def test_request_in_one_byte_writes(broker):
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = request_frame(18, 0, 4242)
    for b in frame + frame:
        s.sendall(bytes([b]))
    api_versions_answers = []
    for _ in range(2):
        head = s.recv(4, socket.MSG_WAITALL)
        (size,) = struct.unpack(">i", head)
        body = s.recv(size, socket.MSG_WAITALL)
        api_versions_answers.append(struct.unpack_from(">ih", body, 0))
    assert api_versions_answers == [(4242, 0), (4242, 0)]
    assert api_versions(s, 7) and round_trip(broker.bootstrap, "tiny") is None
    s.close()


def test_stalled_max_size_frame_headers_do_not_starve_others(broker):
    assert round_trip(broker.bootstrap, "before") is None
    stalled = []
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
        s.sendall(struct.pack(">i", 100 << 20) + struct.pack(">hhi", 18, 0, i))
        stalled.append(s)
    time.sleep(0.5)
    problems = []
    for i in range(8):
        s = socket.create_connection(("127.0.0.1", broker.port), timeout=3)
        try:
            api_versions(s, 100 + i)
        except (OSError, AssertionError) as e:
            problems.append(f"fresh raw connection #{i}: {e!r}")
        finally:
            s.close()
    problem = round_trip(broker.bootstrap, "during", timeout=10)
    if problem:
        problems.append(f"confluent-kafka round trip: {problem}")
    for s in stalled:
        s.close()
    assert round_trip(broker.bootstrap, "after") is None, "broker did not recover after the stalled clients left"
    assert not problems, ("40 connections that sent only the 8-byte header of a 100 MiB frame starved the "
                          f"other clients: {problems}")


def filled_topic(broker, prefix):
    """A one-partition topic holding 2,000 records of 2,000 bytes (about 4 MB to fetch)."""
    topic = unique_topic(prefix)
    create_topic(broker.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "1"})
    for i in range(2000):
        p.produce(topic, value=bytes([i % 256]) * 2000, partition=0)
    assert p.flush(30) == 0
    return topic


def test_never_reading_fetch_flood_is_bounded(broker):
    topic = filled_topic(broker, "flood")
    pid = broker.proc.pid
    before = rss_kib(pid)
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    s.setblocking(False)
    frame = fetch_v4_request(1, topic, 0, 0, max_wait_ms=0)
    written = 0
    blocked_since = None
    deadline = time.monotonic() + 15
    for _ in range(10_000_000):
        if time.monotonic() > deadline or written >= 200_000:
            break
        try:
            n = s.send(frame)
            blocked_since = None
            if n == len(frame):
                written += 1
            else:
                time.sleep(0.005)
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 2:
                break
            time.sleep(0.005)
    time.sleep(0.5)
    during = rss_kib(pid)
    problem = round_trip(broker.bootstrap, "flood")
    s.close()
    time.sleep(1)
    after = rss_kib(pid)
    print(f"never-reading Fetch flood: {written} requests written; broker RSS {before} -> {during} KiB "
          f"(after close {after} KiB)")
    assert problem is None, f"side client while a client floods Fetch without reading: {problem}"
    assert during - before < 512 * 1024, f"broker RSS grew {during - before} KiB during the flood"


def test_connection_is_released_when_a_flooding_client_resets(broker_factory):
    """A client pipelines Fetch requests without reading until the broker's per-connection
    queue is full and the writer is blocked on the socket, then resets the connection: the
    writer fails, and the reader (waiting for room in the full queue) must end too, releasing
    the connection and the budget its queued requests hold."""
    from support import metrics_address, scrape, total

    broker = broker_factory.start(extra_args=("--metrics-listen", "127.0.0.1:0"))
    metrics = metrics_address(broker)
    topic = filled_topic(broker, "reset")
    # The producer that filled the topic closes its connections when it is collected, which
    # may be after this point: count from a broker with no client connected.
    wait_until(lambda: total(scrape(metrics), "sluice_connections") == 0, 10,
               what="the filling producer's connections to close")
    others = 0
    s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    frame = fetch_v4_request(1, topic, 0, 0, max_wait_ms=0)
    blocked_since, deadline = None, time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if s.send(frame) < len(frame):
                time.sleep(0.005)
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            if time.monotonic() - blocked_since > 1:
                break  # the broker stopped reading: its queue is full
            time.sleep(0.005)
    assert total(scrape(metrics), "sluice_connections") == others + 1
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST
    wait_until(lambda: total(scrape(metrics), "sluice_connections") == others, 10,
               what="the reset connection to be released")
    assert round_trip(broker.bootstrap, "after-reset") is None
