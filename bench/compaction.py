#!/usr/bin/env python3
"""bench/compaction.py: log compaction throughput and produce p99, sluice against Apache Kafka (issue #23).

    .venv/bin/python bench/compaction.py [--sides "sluice kafka"] [--mb 256] [--keys 1000]
        [--value-bytes 1024] [--segment-bytes 16777216] [--rate 2000] [--rate-secs 20]
        [--pairs 3] [--bg-segment-bytes 1048576]
        [--timeout 600] [--kafka-libs bench/.kafka/libs-4.4.0] [--sluice PATH] [--work DIR]

For each side, a fresh single broker (sluice: `sluice serve --cores 2`, compactor timer 1 s;
Kafka: a single-node KRaft broker from the jars `bench/compare` fetches, `log.cleaner.backoff.ms`
1000 and its other cleaner settings at their defaults), then:

1. Throughput. MB megabytes of records (VALUE_BYTES each, KEYS distinct keys, round robin) go
   to a one-partition topic with `cleanup.policy=compact`, `segment.bytes`=SEGMENT_BYTES,
   `min.cleanable.dirty.ratio`=0.01, `min.compaction.lag.ms`=0 (confluent-kafka, acks=all).
   The script waits until the cleaner has been quiet for 10 s after the produce (at most
   TIMEOUT s), and sums what every cleaning reported: Kafka's cleaner log (`LogCleaner`
   at INFO, "N MB of log processed in S seconds"), sluice's `compaction pass` log lines
   (`bytes_read`, `seconds`: the sealed segments a pass read whole to clean, and its duration).
   MB/s = MB processed / seconds cleaning. For sluice, also the seconds per phase of its passes
   (`phases_s`: transaction scan, key map, cleaning, swap; `read` is the part of map and clean
   spent waiting for segment reads).
2. Produce p99. After a discarded warm-up run (5 s), PAIRS pairs of runs of RATE-SECS seconds
   each, in ABBA order (nocompact, compact, compact, nocompact, ...) so that drift over the run
   falls on both: a fixed-rate producer (RATE records/s of VALUE_BYTES, acks=all, linger.ms=0,
   confluent-kafka; latency = librdkafka's per-message produce-to-ack latency) writes to a
   `cleanup.policy=delete` topic while a background producer writes the same volume of few-key
   records (RATE × VALUE_BYTES per second) either to another delete topic (`nocompact`) or to a
   compacted topic with dirty ratio 0.01 (`compact`); both background topics have
   `segment.bytes`=BG-SEGMENT-BYTES (1 MiB: a segment rolls every half second, so the cleaner
   has new dirty segments throughout). Each run prints p50/p99/max, and for `compact` the
   cleaner's passes and seconds during it (`duty` = seconds cleaning / seconds of the run). The
   p99 per mode is taken over the pooled latencies of all its runs (PAIRS × RATE × RATE-SECS
   samples), so that one slow batch does not decide it.
   The disk of this VM stalls for tens of milliseconds now and then on its own, so an
   independent probe (bench/disk_probe.py: a 4 KiB O_DIRECT|O_DSYNC write every 5 ms, in a
   process of its own) runs through the latency runs; each mode also prints how many of the
   probe's stalls (writes over 10 ms) fell in its runs and its p99 without the records in
   flight during one (`pooled outside the disk's stalls`). Stalls that compaction caused
   would show as more stalls in the `compact` runs: both counts are printed beside the ratio.
3. For sluice, the `compact` runs' latencies split by what a compaction pass was doing while
   each record was in flight (`compact pooled by pass phase`): `cpu` (transaction scan, key
   map, cleaning: CPU slices and segment reads), `swap` (writing and syncing the new
   segments, renames, checkpoint), `after` (sent within 0.1 s after a pass ended) or `none`.
   The phases are placed from each `compaction pass` line (its timestamp is the pass's end,
   then its `seconds` and phase seconds); a record's send time is its ack time less its
   latency. Which class holds the slow records says which part of a pass costs the p99.

Prints one line per side and measurement, then the sluice/Kafka throughput ratio and, per
side, the p99 with compaction against without (the issue's targets: ≥ 2× Kafka's cleaning
throughput; p99 with compaction within 10% of without). Every broker started is stopped by PID.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_RE = re.compile(r"^sluice ready listen=(\S+):(\d+) cores=(\d+) data_dir=(.+)$")
SLUICE_PASS_RE = re.compile(r"compaction pass.*?bytes_read=(\d+).*?seconds=([\d.]+)")
# The phases of a sluice pass (storage/src/log/compaction.rs `PassTimes`), on the same line.
SLUICE_PHASE_RE = re.compile(r"\b(scan|map|clean|swap|read)_s=([0-9.eE+-]+)")
KAFKA_PASS_RE = re.compile(r"([\d,]+\.\d+) MB of log processed in ([\d,]+\.\d+) seconds")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sluice:
    name = "sluice"

    def __init__(self, binary: Path, work: Path):
        data, self.log = work / "data-sluice", work / "sluice.log"
        cfg = work / "sluice.toml"
        cfg.write_text("log_retention_check_interval_ms = 1000\n")
        args = [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data), "--cores", "2",
                "--config", str(cfg)]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self.port = None
        ready = threading.Event()

        def pump():
            for raw in self.proc.stdout:
                m = READY_RE.match(raw.decode(errors="replace").rstrip("\n"))
                if m and self.port is None:
                    self.port = int(m.group(2))
                    ready.set()
        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(120):
            self.stop()
            raise RuntimeError(f"sluice: no ready line within 120 s; see {self.log}")

    def passes(self) -> list:
        """(bytes, seconds) of every compaction pass logged so far."""
        text = self.log.read_text(errors="replace")
        return [(int(b), float(s)) for b, s in SLUICE_PASS_RE.findall(text)]

    def phases(self) -> dict:
        """Seconds per phase summed over every compaction pass logged so far."""
        out = {}
        for line in self.log.read_text(errors="replace").splitlines():
            if "compaction pass" in line:
                for name, secs in SLUICE_PHASE_RE.findall(line):
                    out[name] = out.get(name, 0.0) + float(secs)
        return {k: round(v, 3) for k, v in out.items()}

    def pass_windows(self) -> list:
        """(start, end of the CPU phases, end) in Unix seconds of every compaction pass logged so
        far: the line is logged at the pass's end; scan, key map and cleaning come first (CPU
        and segment reads), then the swap (writes, syncs, renames) and the checkpoint."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if "compaction pass" not in line:
                continue
            m = SLUICE_PASS_RE.search(line)
            ph = dict(SLUICE_PHASE_RE.findall(line))
            try:
                end = datetime.datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
            except ValueError:
                continue
            start = end - float(m.group(2))
            cpu_end = start + sum(float(ph.get(k, 0)) for k in ("scan", "map", "clean"))
            out.append((start, cpu_end, end))
        return out

    def stop(self):
        stop_pid(self.proc)


# A record sent this long after a pass ended, overlapping none, is counted as `after`.
AFTER_PASS_S = 0.1


def attribute(samples: list, windows: list) -> dict:
    """Splits (sent_at, latency) samples by what a compaction pass was doing while each was in
    flight: `swap` (its writes and syncs), `cpu` (scan, key map, cleaning: CPU and reads),
    `after` (no pass, but sent within AFTER_PASS_S of a pass's end: what a pass leaves behind,
    e.g. records queued behind a delayed one, or the freeing of the replaced files' blocks in
    the next journal commit), or `none`. A sample overlapping both phases counts as `swap`."""
    classes = {"none": [], "after": [], "cpu": [], "swap": []}
    windows = sorted(windows)
    for t0, lat in samples:
        t1, cls = t0 + lat, "none"
        for start, cpu_end, end in windows:
            if start > t1:
                break
            if t0 <= end and t1 >= cpu_end:
                cls = "swap"
                break
            if t0 <= cpu_end and t1 >= start:
                cls = "cpu"
            elif cls == "none" and end < t0 <= end + AFTER_PASS_S:
                cls = "after"
        classes[cls].append(lat)
    return classes


class DiskProbe:
    """bench/disk_probe.py in a process of its own for as long as the latency runs last."""

    def __init__(self, path: Path):
        self.proc = subprocess.Popen(["python3", str(ROOT / "bench/disk_probe.py"), str(path)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        self.stalls = None

    def stop(self) -> list:
        """Stops the probe (once; later calls only answer again): (start, end) in Unix seconds
        of every stall it saw."""
        if self.stalls is None:
            self.proc.send_signal(signal.SIGTERM)
            out, _ = self.proc.communicate(timeout=30)
            self.stalls = [(float(a), float(b)) for line in out.splitlines() if line.startswith("stall ")
                           for a, b in [line.split()[1:3]]]
        return self.stalls


class Kafka:
    name = "kafka"

    def __init__(self, libs: Path, work: Path):
        if not any(libs.glob("kafka-server-*.jar")):
            raise RuntimeError(f"no Kafka jars in {libs}: run bench/compare --quick once (it fetches them)")
        self.port, cport = free_port(), free_port()
        props, data = work / "kafka.properties", work / "data-kafka"
        # The jars bench/compare fetches bind slf4j-simple (INFO to stdout), so the cleaner's
        # "MB of log processed" lines are in the broker's own output.
        self.log = work / "kafka.log"
        props.write_text("\n".join([
            "process.roles=broker,controller", "node.id=1", f"controller.quorum.voters=1@127.0.0.1:{cport}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}", "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}", "num.partitions=1", "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1", "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0", "log.cleaner.backoff.ms=1000",
        ]) + "\n")
        java, cp = os.environ.get("JAVA", "java"), f"{libs}{os.sep}*"
        cluster = "-"
        while cluster.startswith("-"):  # "-..." reads as an option to kafka-storage (1 id in 64)
            cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run([java, "-Xmx512m", "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster,
                        "-c", str(props)], check=True, capture_output=True, timeout=120)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([java, "-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                                          "-cp", cp, "kafka.Kafka", str(props)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"kafka exited; see {self.log}")
                time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"kafka: port not open within 120 s; see {self.log}")

    def passes(self) -> list:
        if not self.log.exists():
            return []
        text = self.log.read_text(errors="replace")
        return [(int(float(mb.replace(",", "")) * 1024 * 1024), float(s.replace(",", "")))
                for mb, s in KAFKA_PASS_RE.findall(text)]

    def stop(self):
        stop_pid(self.proc)


def stop_pid(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def create(bootstrap: str, name: str, config: dict) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=config)])[name].result(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == 1:
            return
        time.sleep(0.2)
    raise RuntimeError(f"topic {name} not in metadata")


def compacted(segment_bytes: int) -> dict:
    return {"cleanup.policy": "compact", "segment.bytes": str(segment_bytes), "min.cleanable.dirty.ratio": "0.01",
            "min.compaction.lag.ms": "0"}


def produce_bulk(bootstrap: str, topic: str, total_bytes: int, keys: int, value_bytes: int,
                 stop: threading.Event | None = None, rate_bytes: float | None = None) -> int:
    """Writes records of few keys until `total_bytes` (or `stop`), at most `rate_bytes` per second."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "batch.size": 1 << 20,
                  "queue.buffering.max.kbytes": 65536})
    value, sent, start = os.urandom(value_bytes), 0, time.monotonic()
    i = 0
    while sent < total_bytes and not (stop and stop.is_set()):
        try:
            p.produce(topic, key=f"key-{i % keys}".encode(), value=value)
        except BufferError:
            p.poll(0.05)
            continue
        i, sent = i + 1, sent + value_bytes
        if rate_bytes and sent > rate_bytes * (time.monotonic() - start):
            p.poll(0.01)
        elif i % 1000 == 0:
            p.poll(0)
    if p.flush(120) != 0:
        raise RuntimeError("records left unsent after 120 s")
    return sent


def wait_quiet(broker, quiet_s: float, timeout_s: float) -> list:
    """The cleaner's passes once none was added for `quiet_s` (at most `timeout_s`)."""
    deadline, last, since = time.monotonic() + timeout_s, None, time.monotonic()
    while time.monotonic() < deadline:
        got = broker.passes()
        if got != last:
            last, since = got, time.monotonic()
        elif got and time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.5)
    return broker.passes()


def fixed_rate(bootstrap: str, topic: str, rate: int, secs: float, value_bytes: int) -> dict:
    from confluent_kafka import Producer
    lat, errors, sent_at = [], [], []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            lat.append(msg.latency())
            sent_at.append(time.time() - msg.latency())
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    value = os.urandom(value_bytes)
    for i in range(10):  # warm-up, not measured: metadata, connection
        p.produce(topic, key=f"w{i}".encode(), value=value)
    p.flush(60)
    start, n = time.monotonic(), 0
    while time.monotonic() - start < secs:
        while n < rate * (time.monotonic() - start):
            p.produce(topic, key=f"r{n}".encode(), value=value, on_delivery=cb)
            n += 1
        p.poll(0.001)
    p.flush(60)
    return {"sent": n, "errors": len(errors), **summary(lat), "slow": slowest(list(zip(sent_at, lat)))}, \
        list(zip(sent_at, lat))


def slowest(samples: list, n: int = 5) -> list:
    """The n slowest records as 'HH:MM:SS.mmm latency-ms' (UTC send time), to set beside the
    broker's log."""
    top = sorted(samples, key=lambda s: s[1], reverse=True)[:n]
    return [f"{utc(t)} {lat * 1000:.1f}" for t, lat in sorted(top)]


def utc(t: float) -> str:
    """Unix seconds as HH:MM:SS.mmm UTC."""
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def summary(lat: list) -> dict:
    """acked, p50/p99/max in ms of produce-to-ack latencies (seconds)."""
    lat = sorted(lat)
    if not lat:
        return {"acked": 0}
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000  # noqa: E731
    return {"acked": len(lat), "p50_ms": round(q(0.5), 2), "p99_ms": round(q(0.99), 2),
            "max_ms": round(lat[-1] * 1000, 2)}


def run_side(side: str, args, work: Path) -> dict:
    wdir = work / side
    wdir.mkdir(parents=True, exist_ok=True)
    broker = Sluice(args.sluice, wdir) if side == "sluice" else Kafka(args.kafka_libs, wdir)
    out = {}
    probe = None
    try:
        boot = f"127.0.0.1:{broker.port}"
        create(boot, "bench-compact", compacted(args.segment_bytes))
        t0 = time.monotonic()
        sent = produce_bulk(boot, "bench-compact", args.mb << 20, args.keys, args.value_bytes)
        produce_s = time.monotonic() - t0
        passes = wait_quiet(broker, 10, args.timeout)
        mb = sum(b for b, _ in passes) / (1 << 20)
        secs = sum(s for _, s in passes)
        out["throughput"] = {"produced_mb": round(sent / (1 << 20), 1), "produce_s": round(produce_s, 1),
                             "passes": len(passes), "cleaned_mb": round(mb, 1), "cleaning_s": round(secs, 2),
                             "mb_per_s": round(mb / secs, 1) if secs > 0 else None}
        if hasattr(broker, "phases"):
            out["throughput"]["phases_s"] = broker.phases()
        print(side, "throughput", out["throughput"], flush=True)
        # A discarded warm-up run first: the first fixed-rate run otherwise carries the
        # broker's (and, for Kafka, the JIT's) warm-up, which made 'nocompact' look worse than
        # 'compact' on Kafka in the first full run (57 ms against 4.7 ms p99).
        create(boot, "bench-lat-warmup", {"cleanup.policy": "delete"})
        probe = DiskProbe(wdir / "disk-probe.dat")
        fixed_rate(boot, "bench-lat-warmup", args.rate, min(5.0, args.rate_secs), args.value_bytes)
        pooled = {"nocompact": [], "compact": []}
        spans = {"nocompact": [], "compact": []}
        samples = []
        for i in range(args.pairs):
            for mode in (("nocompact", "compact") if i % 2 == 0 else ("compact", "nocompact")):
                res, lat = latency_run(broker, boot, mode, i, args)
                pooled[mode] += lat
                spans[mode].append((min(t for t, _ in lat), max(t + x for t, x in lat)) if lat else (0, 0))
                if mode == "compact":
                    samples += lat
                out.setdefault("runs", []).append(res)
                print(side, mode, i, res, flush=True)
        stalls = probe.stop()
        for mode, lat in pooled.items():
            out[mode] = summary([x for _, x in lat])
            print(side, mode, "pooled", out[mode], flush=True)
        # The disk's own stalls (module doc of bench/disk_probe.py), placed by the probe: how
        # many fell in each mode's runs, and each mode's latencies without the records in
        # flight during one.
        for mode, lat in pooled.items():
            hit = [w for w in stalls if any(a <= w[1] and w[0] <= b for a, b in spans[mode])]
            clear = [x for t, x in lat if not any(t <= e and t + x >= b for b, e in hit)]
            out[mode + "_outside_disk_stalls"] = {**summary(clear), "disk_stalls": len(hit),
                                                   "disk_stall_ms": round(sum(e - b for b, e in hit) * 1000, 1),
                                                   "stalls": [f"{utc(b)} {(e - b) * 1000:.1f}" for b, e in hit]}
            print(side, mode, "pooled outside the disk's stalls", out[mode + "_outside_disk_stalls"], flush=True)
        if hasattr(broker, "pass_windows"):
            # Which part of a pass the slow produces of the compact runs overlapped.
            by = attribute(samples, broker.pass_windows())
            out["compact_by_phase"] = {k: summary(v) for k, v in by.items()}
            print(side, "compact pooled by pass phase", out["compact_by_phase"], flush=True)
    finally:
        if probe is not None:
            probe.stop()  # when a run failed: the probe runs until stopped
        broker.stop()
    return out


def latency_run(broker, boot: str, mode: str, i: int, args) -> tuple:
    """One fixed-rate run beside a background producer to a compacted (or delete) topic."""
    target, bg_topic = f"bench-lat-{mode}-{i}", f"bench-bg-{mode}-{i}"
    create(boot, target, {"cleanup.policy": "delete"})
    bg_config = compacted(args.bg_segment_bytes) if mode == "compact" else {
        "cleanup.policy": "delete", "segment.bytes": str(args.bg_segment_bytes)}
    create(boot, bg_topic, bg_config)
    stop = threading.Event()
    rate_bytes = args.rate * args.value_bytes
    bg = threading.Thread(target=produce_bulk, daemon=True,
                          args=(boot, bg_topic, 1 << 40, args.keys, args.value_bytes, stop, rate_bytes))
    bg.start()
    time.sleep(2)
    before = broker.passes()
    res, lat = fixed_rate(boot, target, args.rate, args.rate_secs, args.value_bytes)
    during = broker.passes()[len(before):]
    stop.set()
    bg.join(180)
    res = {"mode": mode, **res}
    if mode == "compact":
        secs = sum(s for _, s in during)
        res.update(passes=len(during), cleaning_s=round(secs, 3), duty=round(secs / args.rate_secs, 3))
    return res, lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", default="sluice kafka")
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--value-bytes", type=int, default=1024)
    ap.add_argument("--segment-bytes", type=int, default=16 << 20)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--rate-secs", type=float, default=20)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--bg-segment-bytes", type=int, default=1 << 20)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--kafka-libs", type=Path, default=ROOT / "bench/.kafka/libs-4.4.0")
    ap.add_argument("--sluice", type=Path, default=Path(os.environ.get("SLUICE_BIN", ROOT / "target/release/sluice")))
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sluice-compaction-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; nproc {os.cpu_count()}; load {os.getloadavg()}", flush=True)
    results = {side: run_side(side, args, work) for side in args.sides.split()}
    tp = {s: r["throughput"]["mb_per_s"] for s, r in results.items()}
    if tp.get("sluice") and tp.get("kafka"):
        print(f"cleaning throughput sluice/kafka: {tp['sluice'] / tp['kafka']:.2f}x (target >= 2x)")
    for side, r in results.items():
        a, b = r["nocompact"].get("p99_ms"), r["compact"].get("p99_ms")
        if a and b:
            print(f"{side}: produce p99 with compaction {b} ms, without {a} ms: {b / a:.2f}x (target <= 1.10x)")
        a, b = (r[m + "_outside_disk_stalls"].get("p99_ms") for m in ("nocompact", "compact"))
        if a and b:
            print(f"{side}: the same outside the disk's own stalls: {b} ms against {a} ms: {b / a:.2f}x")


if __name__ == "__main__":
    main()
