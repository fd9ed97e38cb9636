#!/usr/bin/env python3
"""sluice compatibility scenario for kafka-python and confluent-kafka.

    compat.py --client kafka-python|confluent --bootstrap HOST:PORT

Runs the six steps of tests/compat (create, produce, consume, configs,
delete-records, delete-topic) and prints one line per step:
    compat: <client> <step> PASS|FAIL|SKIP <detail>
Every loop is bounded by a count and a deadline.  Exit code is 0 whatever
the step results are (tests/compat/run reads the lines).
"""

import argparse
import os
import sys
import time
import traceback

TOTAL = 200
PARTITIONS = 3
CREATE_CONFIGS = {"retention.ms": "3600000", "max.message.bytes": "2000000"}
ALTERED_RETENTION = "7200000"
STEP_TIMEOUT = 30.0

CLIENT = "?"


def report(step, status, detail=""):
    detail = " ".join(str(detail).split())  # one line
    print(f"compat: {CLIENT} {step} {status} {detail}".rstrip(), flush=True)


def run_step(step, fn, *args):
    try:
        res = fn(*args)
    except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL line
        traceback.print_exc(file=sys.stderr)
        report(step, "FAIL", f"{type(e).__name__}: {e}")
        return None
    if isinstance(res, tuple) and res and res[0] == "SKIP":
        report(step, "SKIP", res[1])
    else:
        report(step, "PASS", res or "")
    return res


def split_codecs(codecs):
    """Splits TOTAL message ids over the codecs: [(codec, [ids])]."""
    out, start = [], 0
    for n, codec in enumerate(codecs):
        count = TOTAL // len(codecs) + (1 if n < TOTAL % len(codecs) else 0)
        out.append((codec, list(range(start, start + count))))
        start += count
    return out


def value_of(i, codec):
    return f"{CLIENT}|{i}|{codec}|" + "x" * (i % 50)


def check_consumed(got, plan):
    """got: {id: value}; plan: [(codec, ids)].  Raises on any mismatch."""
    want = {i: value_of(i, codec) for codec, ids in plan for i in ids}
    if len(got) != len(want):
        missing = sorted(set(want) - set(got))[:10]
        raise AssertionError(f"consumed {len(got)} distinct messages, want {len(want)}; missing e.g. {missing}")
    for i, v in want.items():
        if got.get(i) != v:
            raise AssertionError(f"message {i}: got {got.get(i)!r}, want {v!r}")


# --------------------------------------------------------------- kafka-python
class KafkaPythonScenario:
    def __init__(self, bootstrap, topic, group):
        from kafka import KafkaAdminClient
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-admin",
                                      request_timeout_ms=20000)
        self.plan = []

    def create(self):
        self.admin.create_topics(
            {self.topic: {"num_partitions": PARTITIONS, "replication_factor": 1,
                          "configs": dict(CREATE_CONFIGS)}},
            timeout_ms=10000, wait_for_metadata=True)
        topics = self.admin.describe_topics([self.topic])
        parts = len(topics[0]["partitions"])
        if parts != PARTITIONS:
            raise AssertionError(f"topic has {parts} partitions, want {PARTITIONS}")
        return f"{PARTITIONS} partitions with {CREATE_CONFIGS}"

    def produce(self):
        from kafka import KafkaProducer
        from kafka import codec as kc
        have = {"gzip": True, "snappy": kc.has_snappy(), "lz4": kc.has_lz4(), "zstd": kc.has_zstd()}
        codecs = [c for c, ok in have.items() if ok]
        missing = [c for c, ok in have.items() if not ok]
        self.plan = split_codecs(codecs)
        for codec, ids in self.plan:
            p = KafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, acks="all",
                              compression_type=codec, linger_ms=20, retries=5)
            try:
                futs = [p.send(self.topic, key=f"k{i}".encode(), value=value_of(i, codec).encode())
                        for i in ids]
                p.flush(timeout=STEP_TIMEOUT)
                for f in futs:
                    f.get(timeout=STEP_TIMEOUT)
            finally:
                p.close(timeout=5)
        note = f"; not in venv: {','.join(missing)} libs" if missing else ""
        return f"{TOTAL} msgs idempotent acks=all codecs={','.join(codecs)}{note}"

    def consume(self):
        from kafka import KafkaConsumer, TopicPartition
        c = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                          auto_offset_reset="earliest", enable_auto_commit=False,
                          client_id="compat-consumer")
        got = {}
        try:
            deadline = time.monotonic() + STEP_TIMEOUT
            polls = 0
            while len(got) < TOTAL and time.monotonic() < deadline and polls < 1000:
                polls += 1
                for _tp, recs in c.poll(timeout_ms=500).items():
                    for r in recs:
                        i = int(r.value.decode().split("|")[1])
                        if r.key.decode() != f"k{i}":
                            raise AssertionError(f"key {r.key!r} for message {i}")
                        got[i] = r.value.decode()
            check_consumed(got, self.plan)
            c.commit()
            committed = sum(c.committed(TopicPartition(self.topic, p)) or 0 for p in range(PARTITIONS))
            if committed != TOTAL:
                raise AssertionError(f"committed offsets sum to {committed}, want {TOTAL}")
        finally:
            c.close()
        return f"{len(got)} msgs checked, group {self.group} committed {TOTAL}"

    def _describe(self):
        from kafka.admin import ConfigResource, ConfigResourceType
        res = self.admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, self.topic)],
                                          config_filter="all")
        per_type = next(iter(res.values()))
        entries = per_type[self.topic]
        return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in entries.items()}

    def configs(self):
        from kafka.admin import ConfigResource, ConfigResourceType
        cfg = self._describe()
        for k, v in CREATE_CONFIGS.items():
            if cfg.get(k) != v:
                raise AssertionError(f"describe: {k}={cfg.get(k)!r}, want {v}")
        res = self.admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, self.topic, {"retention.ms": ("SET", ALTERED_RETENTION)})],
            incremental=True)
        cfg = self._describe()
        if cfg.get("retention.ms") != ALTERED_RETENTION:
            raise AssertionError(f"after incremental alter: retention.ms={cfg.get('retention.ms')!r} (alter result {res})")
        if cfg.get("max.message.bytes") != CREATE_CONFIGS["max.message.bytes"]:
            raise AssertionError(f"incremental alter lost max.message.bytes: {cfg.get('max.message.bytes')!r}")
        return f"retention.ms=3600000 described; incremental SET retention.ms={ALTERED_RETENTION} described"

    def _offsets(self, spec):
        from kafka import TopicPartition
        tp = TopicPartition(self.topic, 0)
        return self.admin.list_partition_offsets({tp: spec})[tp].offset

    def delete_records(self):
        from kafka import TopicPartition
        from kafka.admin import OffsetSpec
        hw = self._offsets(OffsetSpec.LATEST)
        if hw < 2:
            raise AssertionError(f"partition 0 has high watermark {hw}, need >= 2")
        target = hw // 2
        res = self.admin.delete_records({TopicPartition(self.topic, 0): target}, timeout_ms=10000)
        low = self._offsets(OffsetSpec.EARLIEST)
        if low != target:
            raise AssertionError(f"earliest offset {low} after delete_records({target}) (result {res})")
        return f"p0 deleted below {target} (hw {hw}); ListOffsets earliest={low}"

    def delete_topic(self):
        self.admin.delete_topics([self.topic], timeout_ms=10000)
        deadline = time.monotonic() + STEP_TIMEOUT
        for _ in range(100):
            if self.topic not in self.admin.list_topics():
                return "gone from list_topics"
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.topic} still listed after delete")

    def close(self):
        self.admin.close()


# ------------------------------------------------------------ confluent-kafka
class ConfluentScenario:
    def __init__(self, bootstrap, topic, group):
        from confluent_kafka.admin import AdminClient
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.plan = []

    @staticmethod
    def _wait(futs):
        return {k: f.result(timeout=STEP_TIMEOUT) for k, f in futs.items()}

    def create(self):
        from confluent_kafka.admin import NewTopic
        self._wait(self.admin.create_topics(
            [NewTopic(self.topic, PARTITIONS, 1, config=dict(CREATE_CONFIGS))], operation_timeout=10))
        deadline = time.monotonic() + STEP_TIMEOUT
        for _ in range(100):
            md = self.admin.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if md is not None and md.error is None and len(md.partitions) == PARTITIONS:
                return f"{PARTITIONS} partitions with {CREATE_CONFIGS}"
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(f"metadata for {self.topic}: {md and (md.error, len(md.partitions))}")

    def produce(self):
        from confluent_kafka import Producer
        codecs = ["gzip", "snappy", "lz4", "zstd"]
        self.plan = split_codecs(codecs)
        for codec, ids in self.plan:
            errs = []
            p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                          "acks": "all", "compression.type": codec, "linger.ms": 20})
            delivered = [0]

            def cb(err, _msg):
                if err is not None:
                    errs.append(str(err))
                else:
                    delivered[0] += 1

            for i in ids:
                p.produce(self.topic, key=f"k{i}".encode(), value=value_of(i, codec).encode(), on_delivery=cb)
                p.poll(0)
            left = p.flush(STEP_TIMEOUT)
            if left or errs or delivered[0] != len(ids):
                raise AssertionError(f"{codec}: {left} undelivered, {delivered[0]}/{len(ids)} ok, errors {errs[:3]}")
        return f"{TOTAL} msgs idempotent acks=all codecs={','.join(codecs)}"

    def consume(self):
        from confluent_kafka import Consumer, TopicPartition
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        got = {}
        try:
            c.subscribe([self.topic])
            deadline = time.monotonic() + STEP_TIMEOUT
            polls = 0
            while len(got) < TOTAL and time.monotonic() < deadline and polls < 1000:
                polls += 1
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    raise AssertionError(f"consume error: {m.error()}")
                i = int(m.value().decode().split("|")[1])
                if m.key().decode() != f"k{i}":
                    raise AssertionError(f"key {m.key()!r} for message {i}")
                got[i] = m.value().decode()
            check_consumed(got, self.plan)
            c.commit(asynchronous=False)
            committed = c.committed([TopicPartition(self.topic, p) for p in range(PARTITIONS)], timeout=10)
            total = sum(max(tp.offset, 0) for tp in committed)
            if total != TOTAL:
                raise AssertionError(f"committed offsets sum to {total}, want {TOTAL}: {committed}")
        finally:
            c.close()
        return f"{len(got)} msgs checked, group {self.group} committed {TOTAL}"

    def _describe(self):
        from confluent_kafka.admin import ConfigResource
        res = self._wait(self.admin.describe_configs([ConfigResource("topic", self.topic)]))
        entries = next(iter(res.values()))
        return {k: e.value for k, e in entries.items()}

    def configs(self):
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
        cfg = self._describe()
        for k, v in CREATE_CONFIGS.items():
            if cfg.get(k) != v:
                raise AssertionError(f"describe: {k}={cfg.get(k)!r}, want {v}")
        self._wait(self.admin.incremental_alter_configs([ConfigResource(
            "topic", self.topic, incremental_configs=[
                ConfigEntry("retention.ms", ALTERED_RETENTION, incremental_operation=AlterConfigOpType.SET)])]))
        cfg = self._describe()
        if cfg.get("retention.ms") != ALTERED_RETENTION:
            raise AssertionError(f"after incremental alter: retention.ms={cfg.get('retention.ms')!r}")
        if cfg.get("max.message.bytes") != CREATE_CONFIGS["max.message.bytes"]:
            raise AssertionError(f"incremental alter lost max.message.bytes: {cfg.get('max.message.bytes')!r}")
        return f"retention.ms=3600000 described; incremental SET retention.ms={ALTERED_RETENTION} described"

    def _offset(self, spec):
        from confluent_kafka import TopicPartition
        res = self._wait(self.admin.list_offsets({TopicPartition(self.topic, 0): spec}))
        return next(iter(res.values())).offset

    def delete_records(self):
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec
        hw = self._offset(OffsetSpec.latest())
        if hw < 2:
            raise AssertionError(f"partition 0 has high watermark {hw}, need >= 2")
        target = hw // 2
        res = self._wait(self.admin.delete_records([TopicPartition(self.topic, 0, target)]))
        low_reported = next(iter(res.values())).low_watermark
        low = self._offset(OffsetSpec.earliest())
        if low != target or low_reported != target:
            raise AssertionError(f"after delete_records({target}): reported low watermark {low_reported}, "
                                 f"ListOffsets earliest {low}")
        return f"p0 deleted below {target} (hw {hw}); low watermark={low_reported}, ListOffsets earliest={low}"

    def delete_topic(self):
        self._wait(self.admin.delete_topics([self.topic], operation_timeout=10))
        deadline = time.monotonic() + STEP_TIMEOUT
        for _ in range(100):
            if self.topic not in self.admin.list_topics(timeout=10).topics:
                return "gone from list_topics"
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.topic} still listed after delete")

    def close(self):
        pass


def helper(what, bootstrap, topic):
    """kcat has no admin API: the kcat scenario does its setup through these."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    if what == "committed":
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{topic}-group", enable_auto_commit=False)
        try:
            print(sum(c.committed(TopicPartition(topic, p)) or 0 for p in range(PARTITIONS)))
        finally:
            c.close()
        return 0
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
    try:
        if what == "create-topic":
            admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1,
                                         "configs": dict(CREATE_CONFIGS)}},
                                timeout_ms=10000, wait_for_metadata=True)
        else:
            admin.delete_topics([topic], timeout_ms=10000)
    finally:
        admin.close()
    return 0


def main():
    global CLIENT
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", choices=["kafka-python", "confluent"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default=None)
    ap.add_argument("--helper", choices=["create-topic", "committed", "delete-topic"],
                    help="setup helper for the kcat scenario (kafka-python admin); prints plain text")
    a = ap.parse_args()
    if a.helper:
        return helper(a.helper, a.bootstrap, a.topic)
    if not a.client:
        ap.error("--client is required")
    CLIENT = a.client
    topic = a.topic or f"compat-{a.client}-{os.getpid()}"
    group = f"{topic}-group"
    cls = KafkaPythonScenario if a.client == "kafka-python" else ConfluentScenario
    try:
        s = cls(a.bootstrap, topic, group)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        report("create", "FAIL", f"client setup: {type(e).__name__}: {e}")
        return 0
    try:
        run_step("create", s.create)
        run_step("produce", s.produce)
        run_step("consume", s.consume)
        run_step("configs", s.configs)
        run_step("delete-records", s.delete_records)
        run_step("delete-topic", s.delete_topic)
    finally:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
