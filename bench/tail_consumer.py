"""A consumer at the tail: confluent-kafka produces RATE records/s of 1 KiB (acks=all,
linger.ms 0) to one partition for SECS seconds while a consumer follows it; prints the
device bytes the broker read (`sluice_bytes_read_total`) per byte produced, reads served
from memory and disk, and end-to-end latency (produce call to consumer poll) p50/p99.

    .venv/bin/python bench/tail_consumer.py            # after tests/run made the venv
    SLUICE_BIN=path RATE=2000 SECS=10 .venv/bin/python bench/tail_consumer.py

Starts its own broker (--cores 2, loopback, a temporary data dir) and stops it by PID."""
import os, re, subprocess, sys, tempfile, threading, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "python"))
from support import scrape, total
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BIN = os.environ.get("SLUICE_BIN", str(REPO / "target" / "release" / "sluice"))
RATE = int(os.environ.get("RATE", "2000"))
SECS = float(os.environ.get("SECS", "10"))
SIZE = 1024
d = tempfile.mkdtemp(prefix="tail-")
p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", d, "--cores", "2",
                      "--metrics-listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
port = metrics = None
deadline = time.time() + 20
lines = []
while time.time() < deadline and not (port and metrics):
    line = p.stdout.readline()
    lines.append(line)
    m = re.search(r"metrics=(127\.0\.0\.1:\d+)", line)
    if m: metrics = m.group(1)
    m = re.match(r"^sluice ready listen=(\S+):(\d+)", line)
    if m: port = m.group(2)
if not (port and metrics):
    p.kill()
    sys.exit("broker did not start:\n" + "".join(lines[-20:]))
threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
bs = f"127.0.0.1:{port}"
try:
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("tail", 1, 1)])["tail"].result(timeout=30)
    c = Consumer({"bootstrap.servers": bs, "group.id": "g", "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition("tail", 0, 0)])
    got = [0]
    stop = [False]
    lat = []
    def consume():
        while not stop[0]:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got[0] += 1
                lat.append(time.time() - float(m.value()[:20]))
    t = threading.Thread(target=consume); t.start()
    time.sleep(2)
    before = scrape(metrics)
    pr = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 0})
    n = int(RATE * SECS)
    t0 = time.time()
    for i in range(n):
        target = t0 + i / RATE
        while time.time() < target: time.sleep(0.0002)
        pr.produce("tail", value=f"{time.time():20.6f}".encode() + b"x" * (SIZE - 20), partition=0)
        pr.poll(0)
    pr.flush(30)
    time.sleep(1)
    stop[0] = True; t.join()
    after = scrape(metrics)
    rd = total(after, "sluice_bytes_read_total") - total(before, "sluice_bytes_read_total")
    fetches = total(after, "sluice_requests_total", api="Fetch") - total(before, "sluice_requests_total", api="Fetch")
    mem = total(after, "sluice_reads_from_memory_total") - total(before, "sluice_reads_from_memory_total")
    disk = total(after, "sluice_reads_from_disk_total") - total(before, "sluice_reads_from_disk_total")
    lat.sort()
    q = lambda x: lat[int(x * (len(lat) - 1))] * 1000 if lat else -1
    print(f"rate {RATE}/s x {SECS}s: produced {n} ({n*SIZE/1e6:.1f} MB), consumed {got[0]}, fetches {fetches:.0f}, "
          f"reads mem {mem:.0f} disk {disk:.0f}, device bytes read {rd/1e6:.1f} MB ({rd/(n*SIZE):.1f}x produced); "
          f"end-to-end ms p50 {q(.5):.2f} p99 {q(.99):.2f}")
    c.close()
finally:
    p.terminate()
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
    subprocess.run(["rm", "-rf", d])
