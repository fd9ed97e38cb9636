#!/usr/bin/env python3
"""Captures fuzz seed corpora from real client traffic.

Starts the real `sluice` broker on loopback, puts a recording TCP proxy in front of it, and
drives it with real clients (confluent-kafka producers with every codec, an idempotent
producer, a consumer group that commits, the admin API; kafka-python producer and consumer).
Then writes, deduplicated by content hash:

  corpus/request/cap-*       every request frame the clients sent (size prefix removed)
  corpus/batch/cap-*         record batches from the segment files the broker wrote
  corpus/log_recovery/cap-*  segment files in the log_recovery layout (flags 0 | i64 ts | segment)
  corpus/storage_files/cap-* index files the broker wrote at its clean shutdown, in the
                             storage_files layout (u32 size | u32 last_rel | u16 len | .index | .timeindex)
  corpus/group_store/cap-*   key/value records of __consumer_offsets (0 | u16 klen | key | value)

Usage (from the repository root, after `cargo build --release -p sluice` and with the test
venv): .venv/bin/python tests/fuzz/capture.py
Every broker started is stopped by its PID; only 127.0.0.1 is used.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
SLUICE = Path(os.environ.get("SLUICE_BIN", ROOT / "target" / "release" / "sluice"))
MAX_FILE = 256 * 1024
MAX_PER_TARGET = 300


class Recorder:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.lock = threading.Lock()

    def feed(self, buf: bytearray) -> None:
        """Takes whole frames off the front of `buf`."""
        while len(buf) >= 4:
            (size,) = struct.unpack(">i", buf[:4])
            if size < 0 or len(buf) < 4 + size:
                return
            with self.lock:
                self.frames.append(bytes(buf[4:4 + size]))
            del buf[:4 + size]


def relay(client: socket.socket, upstream: tuple, rec: Recorder, stop: threading.Event) -> None:
    server = socket.create_connection(upstream, timeout=10)
    pending = bytearray()
    socks = [client, server]
    try:
        for _ in range(10_000_000):
            if stop.is_set():
                return
            r, _, _ = select.select(socks, [], [], 0.2)
            for s in r:
                data = s.recv(1 << 20)
                if not data:
                    return
                if s is client:
                    pending.extend(data)
                    rec.feed(pending)
                    server.sendall(data)
                else:
                    client.sendall(data)
    except OSError:
        pass
    finally:
        client.close()
        server.close()


def proxy(listener: socket.socket, upstream: tuple, rec: Recorder, stop: threading.Event) -> None:
    listener.settimeout(0.2)
    while not stop.is_set():
        try:
            c, _ = listener.accept()
        except socket.timeout:
            continue
        threading.Thread(target=relay, args=(c, upstream, rec, stop), daemon=True).start()


def start_broker(data: Path, advertised_port: int) -> tuple[subprocess.Popen, int]:
    """Starts sluice on a free port, advertising the proxy's port to clients."""
    data.mkdir(parents=True)
    cfg = data.parent / "capture.toml"
    cfg.write_text(f'advertised_listen = "127.0.0.1:{advertised_port}"\nmetrics_listen = ""\n')
    p = subprocess.Popen([str(SLUICE), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--cores", "2",
                          "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        m = re.search(r"sluice ready listen=127\.0\.0\.1:(\d+)", line or "")
        if m:
            return p, int(m.group(1))
        if p.poll() is not None:
            break
    p.kill()
    sys.exit("broker did not start")


def drive(bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic("cap-a", 3, 1, config={"retention.ms": "3600000"}),
                                  NewTopic("cap-del", 1, 1)]).values():
        f.result(30)
    admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, "cap-a")])[
        ConfigResource(ConfigResource.Type.TOPIC, "cap-a")].result(30)
    admin.create_partitions([NewPartitions("cap-a", 4)])["cap-a"].result(30)
    admin.list_topics(timeout=10)
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5,
                      "acks": "all" if codec != "none" else "1"})
        for i in range(300):
            p.produce("cap-a", key=f"k{i % 7}".encode(), value=(f"{codec}-{i}-" * (1 + i % 9)).encode(),
                      headers=[("h", b"v")] if i % 3 == 0 else None)
        p.flush(30)
    idem = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(200):
        idem.produce("cap-a", value=b"idempotent-%d" % i, partition=i % 4)
    idem.flush(30)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cap-g", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe(["cap-a"])
    got = 0
    deadline = time.monotonic() + 30
    while got < 1700 and time.monotonic() < deadline:
        for m in c.consume(200, timeout=1.0):
            if m.error() is None:
                got += 1
        c.commit(asynchronous=False) if got else None
    c.close()
    c2 = Consumer({"bootstrap.servers": bootstrap, "group.id": "cap-g2"})
    c2.assign([TopicPartition("cap-a", 0, 0)])
    c2.offsets_for_times([TopicPartition("cap-a", 0, int(time.time() * 1000) - 60_000)], timeout=10)
    c2.consume(10, timeout=2.0)
    c2.close()
    admin.list_consumer_groups().result(10)
    admin.delete_topics(["cap-del"])["cap-del"].result(30)

    from kafka import KafkaConsumer, KafkaProducer
    kp = KafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip")
    for i in range(100):
        kp.send("cap-a", key=b"kp", value=b"kafka-python-%d" % i)
    kp.flush(30)
    kp.close()
    kc = KafkaConsumer("cap-a", bootstrap_servers=bootstrap, group_id="cap-kp", auto_offset_reset="earliest",
                       consumer_timeout_ms=3000)
    n = 0
    for _ in kc:
        n += 1
        if n >= 500:
            break
    kc.commit()
    kc.close()


def batches(seg: bytes):
    pos = 0
    while pos + 12 <= len(seg):
        (length,) = struct.unpack(">i", seg[pos + 8:pos + 12])
        if length <= 0 or pos + 12 + length > len(seg):
            return
        yield seg[pos:pos + 12 + length]
        pos += 12 + length


def varint(b: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        x = b[i]
        i += 1
        result |= (x & 0x7F) << shift
        if not x & 0x80:
            return (result >> 1) ^ -(result & 1), i
        shift += 7


def records(batch: bytes):
    """Key/value of each record of an uncompressed batch."""
    if len(batch) < 61 or struct.unpack(">h", batch[21:23])[0] & 7:
        return
    (count,) = struct.unpack(">i", batch[57:61])
    i = 61
    for _ in range(min(count, 10_000)):
        _, i = varint(batch, i)  # length
        i += 1  # attributes
        _, i = varint(batch, i)
        _, i = varint(batch, i)
        klen, i = varint(batch, i)
        key = batch[i:i + klen] if klen >= 0 else None
        i += max(klen, 0)
        vlen, i = varint(batch, i)
        value = batch[i:i + vlen] if vlen >= 0 else None
        i += max(vlen, 0)
        hn, i = varint(batch, i)
        for _ in range(hn):
            hk, i = varint(batch, i)
            i += hk
            hv, i = varint(batch, i)
            i += max(hv, 0)
        yield key, value


def save(target: str, items) -> int:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("cap-*"):
        old.unlink()
    seen = set()
    for data in items:
        if len(seen) >= MAX_PER_TARGET:
            break
        data = data[:MAX_FILE]
        h = hashlib.sha1(data).hexdigest()[:16]
        if h in seen:
            continue
        seen.add(h)
        (d / f"cap-{h}").write_bytes(data)
    return len(seen)


def main() -> None:
    rec = Recorder()
    stop = threading.Event()
    with tempfile.TemporaryDirectory(dir=ROOT / "target") as tmp:
        data = Path(tmp) / "data"
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        pport = listener.getsockname()[1]
        broker, port = start_broker(data, pport)
        try:
            threading.Thread(target=proxy, args=(listener, ("127.0.0.1", port), rec, stop), daemon=True).start()
            drive(f"127.0.0.1:{pport}")
        finally:
            stop.set()
            broker.send_signal(signal.SIGTERM)
            broker.wait(timeout=30)
        segs = sorted(data.rglob("*.log"))
        seg_bytes = [p.read_bytes() for p in segs if p.stat().st_size > 0]
        all_batches = [b for s in seg_bytes for b in batches(s)]
        idx = []
        for ip in sorted(data.rglob("*.index")):
            tp, lp = ip.with_suffix(".timeindex"), ip.with_suffix(".log")
            if tp.exists() and lp.exists():
                o, t = ip.read_bytes(), tp.read_bytes()
                idx.append(struct.pack(">IIH", lp.stat().st_size, 1 << 20, len(o)) + o + t)
        group = []
        for p in segs:
            if "__consumer_offsets" in str(p):
                for b in batches(p.read_bytes()):
                    for k, v in records(b):
                        if k is not None:
                            flag = b"\xff" if v is None else b"\x00"
                            group.append(flag + struct.pack(">H", len(k)) + k + (v or b""))
        counts = {
            "request": save("request", rec.frames),
            "batch": save("batch", all_batches),
            "log_recovery": save("log_recovery", [b"\x00" + struct.pack(">q", 0) + s for s in seg_bytes]
                                 + [b"\x02" + struct.pack(">q", 1) + s[: len(s) // 2] for s in seg_bytes]),
            "storage_files": save("storage_files", idx),
            "group_store": save("group_store", group),
        }
        print("captured:", counts)


if __name__ == "__main__":
    main()
