#!/usr/bin/env python3
"""The broker CPU one KIP-848 heartbeat costs, for choosing sluice's default
`group_consumer_heartbeat_interval_ms` (issue #22; ARCHITECTURE.md, "Consumer groups").

    .venv/bin/python bench/heartbeat_cost.py [--sluice target/release/sluice] [--partitions 60]
        [--members 1000] [--seconds 10] [--in-flight 64]
    .venv/bin/python bench/heartbeat_cost.py --bootstrap HOST:PORT --pid BROKER_PID --topic T ...

Without --bootstrap it starts SLUICE itself (`serve --cores 1`, so one shard answers every
heartbeat, on a free loopback port and a fresh data dir under /tmp, removed at the end),
creates a topic of PARTITIONS partitions (confluent-kafka's AdminClient) and stops the broker
by PID when done.

Contract: MEMBERS raw ConsumerGroupHeartbeat v1 clients (client-generated member ids, one
group, subscribed to TOPIC, which must exist) join, then heartbeat as a well-behaved client
does: with their epoch, reporting the partitions they were last given as owned, so the group
settles (revocations acknowledged). Once every member is at the group's epoch and no answer
changed an assignment for a second, the members heartbeat back to back (IN_FLIGHT requests
outstanding over 4 connections) for SECONDS; the broker's CPU time over that window
(utime + stime of PID from /proc) divided by the heartbeats answered is the cost of one steady
heartbeat. Prints one JSON line: members, heartbeats, seconds, cpu_seconds, us_per_heartbeat,
and the CPU share of one core that MEMBERS members would take at 5 s, 1 s and 0.5 s intervals.
Loopback only; every wait is bounded (a stalled phase exits with an error).
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import socket
import struct
import sys
import time
import uuid

API_KEY, API_VERSION = 68, 1


def compact_str(s):
    if s is None:
        return b"\x00"
    b = s.encode()
    return uvarint(len(b) + 1) + b


def uvarint(n):
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        v = self.b[self.p:self.p + n]
        if len(v) != n:
            raise ValueError("short response")
        self.p += n
        return v

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        shift = n = 0
        for _ in range(5):
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
        raise ValueError("varint too long")

    def cstr(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def request(corr, group, member, epoch, topic, owned, join):
    """One ConsumerGroupHeartbeat v1 frame. `owned`: {topic_id bytes: [partitions]}."""
    body = compact_str(group) + compact_str(member) + struct.pack(">i", epoch)
    body += compact_str(None) + compact_str(None)  # instance id, rack id
    body += struct.pack(">i", 30_000 if join else -1)
    body += (uvarint(2) + compact_str(topic)) if join else b"\x00"  # subscribed names
    body += compact_str(None) + compact_str(None)  # regex, server assignor
    if owned is None:
        body += b"\x00"
    else:
        body += uvarint(len(owned) + 1)
        for tid, ps in owned.items():
            body += tid + uvarint(len(ps) + 1) + b"".join(struct.pack(">i", p) for p in ps) + b"\x00"
    body += b"\x00"
    header = struct.pack(">hhi", API_KEY, API_VERSION, corr) + struct.pack(">h", 2) + b"hb" + b"\x00"
    frame = header + body
    return struct.pack(">i", len(frame)) + frame


def parse(frame):
    """(correlation id, error, member epoch, interval, assignment or None)."""
    r = Reader(frame)
    corr = r.i32()
    r.tags()
    r.i32()  # throttle
    err = r.i16()
    r.cstr()
    r.cstr()
    epoch, interval = r.i32(), r.i32()
    assignment = None
    if r.i8() >= 0:
        assignment = {}
        for _ in range(r.uvarint() - 1):
            tid = r.take(16)
            ps = [r.i32() for _ in range(r.uvarint() - 1)]
            r.tags()
            assignment[tid] = ps
        r.tags()
    return corr, err, epoch, interval, assignment


class Conn:
    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=30)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def recv(self):
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">i", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    frame, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return frame
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("broker closed the connection")
            self.buf += chunk


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Member:
    def __init__(self, group, topic):
        self.id, self.group, self.topic = str(uuid.uuid4()), group, topic
        self.epoch, self.owned, self.joined = 0, {}, False

    def frame(self, corr):
        return request(corr, self.group, self.id, self.epoch, self.topic, self.owned, not self.joined)

    def answer(self, err, epoch, assignment):
        if err != 0:
            raise RuntimeError(f"member {self.id}: error {err}")
        self.joined, self.epoch = True, epoch
        if assignment is not None:
            self.owned = {t: ps for t, ps in assignment.items() if ps}
            return True
        return False


def round_trip(conns, members, in_flight, deadline):
    """Every member heartbeats once (up to `in_flight` outstanding per connection); returns
    (answers whose assignment changed, epochs seen)."""
    changed, epochs = 0, set()
    per = [members[i::len(conns)] for i in range(len(conns))]
    for c, ms in zip(conns, per):
        pending, corr, nxt = {}, 0, 0
        while nxt < len(ms) or pending:
            while nxt < len(ms) and len(pending) < in_flight:
                corr += 1
                pending[corr] = ms[nxt]
                c.send(ms[nxt].frame(corr))
                nxt += 1
            got, err, epoch, _, assignment = parse(c.recv())
            m = pending.pop(got)
            changed += m.answer(err, epoch, assignment)
            epochs.add(epoch)
            if time.monotonic() > deadline:
                raise TimeoutError("heartbeats did not finish in time")
    return changed, epochs


def start_sluice(binary, partitions):
    """(process, bootstrap, topic, data dir) of a fresh one-core broker with a topic."""
    from confluent_kafka.admin import AdminClient, NewTopic
    work = tempfile.mkdtemp(prefix="sluice-hb-cost.")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    cfg = os.path.join(work, "sluice.toml")
    with open(cfg, "w") as f:
        f.write('metrics_listen = ""\ngroup_consumer_session_timeout_ms = 120000\n')
    log = open(os.path.join(work, "sluice.log"), "wb")
    proc = subprocess.Popen([binary, "serve", "--cores", "1", "--config", cfg, "--listen", f"127.0.0.1:{port}",
                             "--data-dir", os.path.join(work, "data")], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
    bootstrap = f"127.0.0.1:{port}"
    for _ in range(300):
        with open(os.path.join(work, "sluice.log"), "rb") as f:
            if any(line.startswith(b"sluice ready") for line in f):
                break
        if proc.poll() is not None:
            sys.exit(f"heartbeat_cost: sluice exited, see {work}/sluice.log")
        time.sleep(0.1)
    else:
        proc.kill()
        sys.exit("heartbeat_cost: sluice did not start")
    topic = "hb-cost"
    fut = AdminClient({"bootstrap.servers": bootstrap}).create_topics([NewTopic(topic, partitions, 1)])[topic]
    fut.result(timeout=60)
    return proc, bootstrap, topic, work


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--topic")
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--partitions", type=int, default=60)
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--in-flight", type=int, default=64)
    a = ap.parse_args()
    proc = work = None
    if a.bootstrap is None:
        proc, a.bootstrap, a.topic, work = start_sluice(a.sluice, a.partitions)
        a.pid = proc.pid
    elif a.pid is None or a.topic is None:
        sys.exit("heartbeat_cost: --bootstrap needs --pid and --topic")
    try:
        measure(a)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            shutil.rmtree(work, ignore_errors=True)


def measure(a):
    host, port = a.bootstrap.rsplit(":", 1)
    conns = [Conn((host, int(port))) for _ in range(4)]
    group = f"hb-cost-{uuid.uuid4().hex[:8]}"
    members = [Member(group, a.topic) for _ in range(a.members)]
    deadline = time.monotonic() + 300
    quiet_since = None
    for _ in range(1000):
        changed, epochs = round_trip(conns, members, a.in_flight, deadline)
        if changed == 0 and len(epochs) == 1:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                break
        else:
            quiet_since = None
    else:
        sys.exit("heartbeat_cost: the group did not settle")
    start, cpu0, beats = time.monotonic(), cpu_seconds(a.pid), 0
    while time.monotonic() - start < a.seconds:
        round_trip(conns, members, a.in_flight, deadline + a.seconds)
        beats += len(members)
    secs, cpu = time.monotonic() - start, cpu_seconds(a.pid) - cpu0
    us = cpu / beats * 1e6
    share = {f"core_share_at_{ms}ms": round(a.members * (1000 / ms) * us / 1e6, 4) for ms in (5000, 1000, 500)}
    print(json.dumps({"members": a.members, "heartbeats": beats, "seconds": round(secs, 2),
                      "cpu_seconds": round(cpu, 3), "us_per_heartbeat": round(us, 2), **share}))


if __name__ == "__main__":
    main()
