#!/usr/bin/env python3
"""librdkafka's consume rate, for bench/compare's "librdkafka" row: a confluent-kafka Consumer
(librdkafka's default fetch settings) assigned every partition of TOPIC from the beginning (no
group, so no join) reads RECORDS records as fast as it can. Prints one JSON object as
`sluice bench --json` does (records, bytes, seconds, records_per_sec, mb_per_sec, errors), the
time counted from assign() to the last record.

    .venv/bin/python bench/compare.d/rdkafka_consume.py --bootstrap HOST:PORT --topic T --records N
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--timeout-secs", type=float, default=300)
    a = ap.parse_args()
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "bench-rdkafka", "enable.auto.commit": False,
                  "enable.partition.eof": False})
    try:
        md = c.list_topics(a.topic, timeout=30).topics[a.topic]
        if md.error is not None:
            sys.exit(f"rdkafka_consume: topic {a.topic}: {md.error}")
        parts = [TopicPartition(a.topic, p, -2) for p in sorted(md.partitions)]  # -2: beginning
        start = time.monotonic()
        deadline = start + a.timeout_secs
        c.assign(parts)
        n = nbytes = errors = 0
        while n < a.records and time.monotonic() < deadline:
            for m in c.consume(num_messages=10000, timeout=0.5):
                e = m.error()
                if e is None:
                    n += 1
                    nbytes += len(m)
                elif e.code() != KafkaError._PARTITION_EOF:
                    errors += 1
                    print(f"rdkafka_consume: {e}", file=sys.stderr)
        secs = max(time.monotonic() - start, 1e-9)
    finally:
        c.close()
    if n < a.records:
        print(f"rdkafka_consume: read {n} of {a.records} records before the deadline", file=sys.stderr)
    print(json.dumps({"workload": "consume", "records": n, "bytes": nbytes, "seconds": secs,
                      "records_per_sec": n / secs, "mb_per_sec": nbytes / secs / 1e6, "errors": errors}))
    return 0 if n >= a.records and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
