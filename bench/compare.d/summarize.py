#!/usr/bin/env python3
"""Summarises bench/compare's results.tsv into markdown tables of medians with sluice/Kafka ratios.

usage: summarize.py results.tsv [limits.txt]
Columns of results.tsv (tab separated, header line first):
  round side client workload partitions records rec_s mb_s p50_ms p99_ms p999_ms status [cpu_s cpu_s_per_gb]
cpu_s is the broker process's CPU time (user + system, all threads) during the workload.
side: sluice | kafka | kafka-fsync.  A row whose status is not "ok" is listed but not used.
With limits.txt (`sluice bench limits` output) the "consume cold" rows get their share of the
O_DIRECT sequential read ceiling measured there.
"""
import csv
import statistics
import sys
from collections import defaultdict

SIDES = ["sluice", "kafka", "kafka-fsync"]
CLIENTS = [("sluice-bench", "`sluice bench` (Rust, pipelined, 64-record batches)"),
           ("kafka-perf", "Kafka's ProducerPerformance / ConsumerPerformance (Java client)"),
           ("librdkafka", "librdkafka (confluent-kafka, Python): consume and the tail consumer")]
WORKLOADS = ["produce acks=1", "produce acks=all", "fixed rate acks=all", "fixed rate acks=1", "consume"]
# Compressed produce workloads are named "produce acks=all <codec>" and listed after these, then
# the read workloads of issue #20 ("consume N consumers", "consume cold", "tail N/s").
READ_CEILING = "disk: O_DIRECT sequential read"


def read_ceiling(path):
    """MB/s of the O_DIRECT sequential read line of `sluice bench limits`' text output."""
    try:
        for line in open(path):
            if line.startswith(READ_CEILING):
                return float(line[len(READ_CEILING):].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return None


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_rate(r, mb):
    if r is None:
        return "—"
    return f"{r:,.0f} ({mb:.0f} MB/s)"


def fmt_ms(v):
    return "—" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.0f}")


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def main(path, limits=None):
    rows = list(csv.DictReader(open(path), delimiter="\t"))
    cells = defaultdict(lambda: defaultdict(list))
    failed = []
    rounds = set()
    for r in rows:
        rounds.add(r["round"])
        if r["status"] != "ok":
            failed.append(r)
            continue
        key = (r["client"], r["workload"], int(r["partitions"]), r["side"])
        for f in ("rec_s", "mb_s", "p50_ms", "p99_ms", "p999_ms", "cpu_s_per_gb"):
            try:
                cells[key][f].append(float(r.get(f) or ""))
            except ValueError:
                pass
    extra = sorted({k[1] for k in cells} - set(WORKLOADS), key=lambda w: (not w.startswith("produce"), w))
    workloads = WORKLOADS + extra
    latency_workloads = [w for w in workloads if not w.startswith("consume") and not w.startswith("tail")]
    tail_workloads = [w for w in workloads if w.startswith("tail")]
    get = lambda k, f: med(cells[k][f]) if k in cells else None
    n = lambda k: len(cells[k]["rec_s"]) if k in cells else 0
    def latency_table(heading, client, names):
        t = ["", f"### {heading}", "",
             "| workload | partitions | sluice | Kafka | Kafka flush.messages=1 | p99 sluice/Kafka | p99 sluice/Kafka-fsync |",
             "|---|---:|---:|---:|---:|---:|---:|"]
        for parts in sorted({k[2] for k in cells}):
            for w in names:
                ks = {s: (client, w, parts, s) for s in SIDES}
                if not any(k in cells for k in ks.values()):
                    continue
                cell = lambda s: ("—" if ks[s] not in cells else
                                  " / ".join(fmt_ms(get(ks[s], f)) for f in ("p50_ms", "p99_ms", "p999_ms")))
                p99 = {s: get(ks[s], "p99_ms") for s in SIDES}
                t.append(f"| {w} | {parts} | " + " | ".join(cell(s) for s in SIDES)
                         + f" | {ratio(p99['sluice'], p99['kafka'])} | {ratio(p99['sluice'], p99['kafka-fsync'])} |")
        return t

    out = [f"Medians of {len(rounds)} round(s); ratios are sluice ÷ Kafka "
           "(throughput: above 1 = sluice faster; latency: below 1 = sluice faster)."]
    for client, title in CLIENTS:
        if not any(k[0] == client for k in cells) and not any(r["client"] == client for r in failed):
            continue
        out += ["", f"### Throughput, records/s (MB/s) — client: {title}", "",
                "| workload | partitions | sluice | Kafka | Kafka flush.messages=1 | sluice/Kafka | sluice/Kafka-fsync |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for parts in sorted({k[2] for k in cells}):
            for w in workloads:
                ks = {s: (client, w, parts, s) for s in SIDES}
                if not any(k in cells for k in ks.values()):
                    continue
                v = {s: get(ks[s], "rec_s") for s in SIDES}
                mb = {s: get(ks[s], "mb_s") for s in SIDES}
                out.append(f"| {w} | {parts} | " + " | ".join(fmt_rate(v[s], mb[s] or 0) for s in SIDES)
                           + f" | {ratio(v['sluice'], v['kafka'])} | {ratio(v['sluice'], v['kafka-fsync'])} |")
        # (no produce latency section for a client with only read rows: librdkafka)
        if any(k[0] == client and k[1] in latency_workloads for k in cells) or client != "librdkafka":
            out += latency_table(f"Produce latency p50 / p99 / p99.9 ms — client: {title}", client, latency_workloads)
        if any(k[0] == client and k[1] in tail_workloads for k in cells):
            out += latency_table("Tail consumer end-to-end latency (produce call → poll) p50 / p99 / p99.9 ms"
                                 f" — client: {title}", client, tail_workloads)
        out += ["", f"### Broker CPU-seconds per GB of records — client: {title}", "",
                "| workload | partitions | sluice | Kafka | Kafka flush.messages=1 | sluice/Kafka | sluice/Kafka-fsync |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for parts in sorted({k[2] for k in cells}):
            for w in workloads:
                ks = {s: (client, w, parts, s) for s in SIDES}
                c = {s: get(ks[s], "cpu_s_per_gb") for s in SIDES}
                if not any(v is not None for v in c.values()):
                    continue
                out.append(f"| {w} | {parts} | " + " | ".join("—" if c[s] is None else f"{c[s]:.2f}" for s in SIDES)
                           + f" | {ratio(c['sluice'], c['kafka'])} | {ratio(c['sluice'], c['kafka-fsync'])} |")
    ceiling = read_ceiling(limits) if limits else None
    cold = sorted({(k[0], k[2]) for k in cells if k[1] == "consume cold"})
    if cold:
        what = f"{ceiling:,.0f} MB/s" if ceiling else "not measured"
        out += ["", f"### Cold consume (after a broker restart, page cache dropped) against the O_DIRECT read ceiling ({what})", "",
                "| client | partitions | sluice MB/s | share | Kafka MB/s | share | Kafka flush.messages=1 MB/s | share |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for client, parts in cold:
            cell = []
            for side in SIDES:
                mb = get((client, "consume cold", parts, side), "mb_s")
                cell += ["—", "—"] if mb is None else [f"{mb:,.0f}", f"{mb / ceiling:.0%}" if ceiling else "—"]
            out.append(f"| {client} | {parts} | " + " | ".join(cell) + " |")
    if failed:
        out += ["", "### Failed or timed-out runs (not in the medians)", "",
                "| round | side | client | workload | partitions | status |", "|---|---|---|---|---:|---|"]
        for r in failed:
            out.append(f"| {r['round']} | {r['side']} | {r['client']} | {r['workload']} | {r['partitions']} | {r['status']} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
