"""A short smoke of `sluice bench` (the full comparison is `bench/compare`, see BENCHMARKS.md):
limits, produce and consume run, finish quickly and report sane JSON. Speed is not asserted."""

from __future__ import annotations

import json
import subprocess

from conftest import SLUICE_BIN
from support import unique_topic


def bench(args, timeout=60) -> dict:
    r = subprocess.run([str(SLUICE_BIN), "bench", *args, "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-2000:]
    return json.loads(r.stdout.decode().strip().splitlines()[-1])


def test_bench_limits_produce_consume(broker, tmp_path):
    scratch = tmp_path / "limits"
    scratch.mkdir()
    limits = bench(["limits", "--dir", str(scratch), "--write-mib", "32", "--syncs", "50",
                    "--tcp-mib", "64", "--max-secs", "5"])
    assert isinstance(limits, dict) and limits, limits
    assert not list(scratch.iterdir()), "limits must clean up its files"

    topic = unique_topic("bench")
    produced = bench(["produce", "--broker", broker.bootstrap, "--topic", topic, "--partitions", "4",
                      "--records", "20000", "--record-size", "512", "--acks", "all", "--timeout-secs", "40"])
    assert produced["records"] >= 20000 and produced["errors"] == 0, produced
    assert produced["p50_ms"] > 0 and produced["p99_ms"] >= produced["p50_ms"], produced
    consumed = bench(["consume", "--broker", broker.bootstrap, "--topic", topic, "--records", "20000",
                      "--timeout-secs", "40"])
    assert consumed["records"] >= 20000 and consumed["errors"] == 0, consumed


def test_bench_compressed_batches_are_read_by_a_real_client(broker):
    """Every codec of `sluice bench produce --compression`: the bench's own consumer counts
    the records, and confluent-kafka (librdkafka's decompressors) reads them back intact."""
    from confluent_kafka import Consumer, TopicPartition

    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        topic = unique_topic(f"bench-{codec}")
        produced = bench(["produce", "--broker", broker.bootstrap, "--topic", topic, "--partitions", "1",
                          "--records", "640", "--batch-records", "64", "--record-size", "300",
                          "--compression", codec, "--payload", "text", "--timeout-secs", "30"])
        assert produced["records"] == 640 and produced["errors"] == 0, produced
        assert produced["workload"].endswith(f"compression={codec}"), produced
        consumed = bench(["consume", "--broker", broker.bootstrap, "--topic", topic, "--records", "640",
                          "--timeout-secs", "30"])
        assert consumed["records"] >= 640 and consumed["errors"] == 0, consumed
        c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": unique_topic("g"),
                      "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        values = []
        for _ in range(60):
            if len(values) >= 640:
                break
            for m in c.consume(200, timeout=0.5):
                assert m.error() is None, (codec, m.error())
                values.append(m.value())
        c.close()
        assert len(values) == 640, (codec, len(values))
        assert all(len(v) == 300 and v.isascii() for v in values), codec


def test_bench_fails_fast_when_the_broker_stalls(broker):
    """A broker that stops answering (SIGSTOP: connections stay open, nothing is read or
    answered) makes `sluice bench produce` fail within --request-timeout-ms, naming the stall,
    instead of hanging until --timeout-secs (as a crashed broker's producer once did for 5 min)."""
    import os
    import signal
    import time

    topic = unique_topic("bench-stall")
    p = subprocess.Popen([str(SLUICE_BIN), "bench", "produce", "--broker", broker.bootstrap, "--topic", topic,
                          "--partitions", "4", "--records", "100000000", "--rate", "5000", "--acks", "1",
                          "--timeout-secs", "120", "--request-timeout-ms", "2000", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    stopped = None
    try:
        time.sleep(3)  # topic created, records flowing (progress lines every second)
        assert p.poll() is None, p.communicate()[1].decode(errors="replace")[-2000:]
        os.kill(broker.proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if stopped is not None:
            os.kill(broker.proc.pid, signal.SIGCONT)
        if p.poll() is None:
            p.kill()
            p.wait()
    text = err.decode(errors="replace")
    assert p.returncode == 1, (p.returncode, text[-2000:])
    assert "within 2000 ms: the broker is stalled or unreachable" in text, text[-2000:]
    assert took < 15, (took, text[-2000:])
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["failed_connections"] >= 1 and 0 < report["records"] < 100000000, report
