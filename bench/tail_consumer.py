"""A consumer at the tail: confluent-kafka produces RATE records/s of 1 KiB (acks=all,
linger.ms 0) to one partition for SECS seconds while a consumer follows it; prints end-to-end
latency (produce call to consumer poll) p50/p99/p99.9 and, against a sluice whose metrics it
can scrape, the device bytes the broker read (`sluice_bytes_read_total`) per byte produced and
the reads served from memory and disk.

    .venv/bin/python bench/tail_consumer.py            # after tests/run made the venv
    SLUICE_BIN=path RATE=2000 SECS=10 .venv/bin/python bench/tail_consumer.py
    .venv/bin/python bench/tail_consumer.py --bootstrap HOST:PORT --topic t --json   # any broker

Without --bootstrap it starts its own sluice (--cores 2, loopback, a temporary data dir) and
stops it by PID. With --bootstrap (any Kafka-compatible broker, e.g. Apache Kafka for
bench/compare's "tail" row) it creates --topic (1 partition, --replication, --config k=v,...)
there and reports latency only, unless --metrics names a sluice metrics address. --json prints
one object as `sluice bench --json` does (records consumed, records_per_sec, p50_ms, p99_ms,
p999_ms, errors = records produced but not consumed)."""
import argparse, json, os, re, subprocess, sys, tempfile, threading, time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "python"))
from support import scrape, total
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

SIZE = 1024


def parse_args():
    ap = argparse.ArgumentParser(description="tail consumer end-to-end latency")
    ap.add_argument("--bootstrap", help="an existing broker (default: start a sluice)")
    ap.add_argument("--metrics", help="sluice metrics address to scrape (own broker: its own)")
    ap.add_argument("--topic", default="tail")
    ap.add_argument("--rate", type=int, default=int(os.environ.get("RATE", "2000")))
    ap.add_argument("--secs", type=float, default=float(os.environ.get("SECS", "10")))
    ap.add_argument("--replication", type=int, default=1)
    ap.add_argument("--config", default="", help="topic configs k=v,... (e.g. flush.messages=1)")
    ap.add_argument("--json", action="store_true")
    return ap.parse_args()


def start_sluice():
    """Starts a sluice on loopback; returns (process, data dir, bootstrap, metrics address)."""
    binary = os.environ.get("SLUICE_BIN", str(REPO / "target" / "release" / "sluice"))
    d = tempfile.mkdtemp(prefix="tail-")
    p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", d, "--cores", "2",
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
        p.wait(10)
        subprocess.run(["rm", "-rf", d])
        sys.exit("broker did not start:\n" + "".join(lines[-20:]))
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, d, f"127.0.0.1:{port}", metrics


def run(a, bs, metrics):
    admin = AdminClient({"bootstrap.servers": bs})
    cfg = dict(kv.split("=", 1) for kv in a.config.split(",") if kv)
    admin.create_topics([NewTopic(a.topic, 1, a.replication, config=cfg)])[a.topic].result(timeout=60)
    c = Consumer({"bootstrap.servers": bs, "group.id": "g", "enable.auto.commit": False, "fetch.wait.max.ms": 100})
    c.assign([TopicPartition(a.topic, 0, 0)])
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
    before = scrape(metrics) if metrics else None
    pr = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 0})
    n = int(a.rate * a.secs)
    t0 = time.time()
    for i in range(n):
        target = t0 + i / a.rate
        while time.time() < target: time.sleep(0.0002)
        pr.produce(a.topic, value=f"{time.time():20.6f}".encode() + b"x" * (SIZE - 20), partition=0)
        pr.poll(0)
    left = pr.flush(30)
    # Wait (bounded) until the consumer has every record produced.
    deadline = time.time() + 10
    while got[0] < n and time.time() < deadline:
        time.sleep(0.05)
    elapsed = time.time() - t0
    stop[0] = True; t.join()
    c.close()
    lat.sort()
    q = lambda x: lat[int(x * (len(lat) - 1))] * 1000 if lat else -1
    if a.json:
        print(json.dumps({"workload": f"tail {a.rate}/s", "records": got[0], "bytes": got[0] * SIZE,
                          "seconds": elapsed, "records_per_sec": got[0] / elapsed,
                          "mb_per_sec": got[0] * SIZE / elapsed / 1e6,
                          "latency_what": "produce() call → consumer poll (end to end)",
                          "p50_ms": q(.5), "p99_ms": q(.99), "p999_ms": q(.999), "max_ms": q(1),
                          "errors": max(n - got[0], 0) + left}))
        return
    line = (f"rate {a.rate}/s x {a.secs}s: produced {n} ({n*SIZE/1e6:.1f} MB), consumed {got[0]}, "
            f"end-to-end ms p50 {q(.5):.2f} p99 {q(.99):.2f} p99.9 {q(.999):.2f}")
    if before is not None:
        after = scrape(metrics)
        d = lambda name, **kw: total(after, name, **kw) - total(before, name, **kw)
        rd = d("sluice_bytes_read_total")
        line += (f"; fetches {d('sluice_requests_total', api='Fetch'):.0f}, reads mem "
                 f"{d('sluice_reads_from_memory_total'):.0f} disk {d('sluice_reads_from_disk_total'):.0f}, "
                 f"device bytes read {rd/1e6:.1f} MB ({rd/(n*SIZE):.1f}x produced)")
    print(line)


def main():
    a = parse_args()
    if a.bootstrap:
        run(a, a.bootstrap, a.metrics)
        return
    p, d, bs, metrics = start_sluice()
    try:
        run(a, bs, a.metrics or metrics)
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
        subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
