"""Protocol answers real clients must be able to use (librdkafka, the Java client and tools).

Covers: a Fetch of an out-of-range offset answered with OFFSET_OUT_OF_RANGE and an empty record
set (not a null one, which librdkafka rejects as a parse failure of the whole response), so
`auto.offset.reset=earliest` and `latest` reset and consume; the Java consumer (Kafka's console
consumer) over 50 partitions of three topics, with records produced while it reads, through
fetch sessions, with no "invalid full fetch response" (extraIds) in its FetchSessionHandler log;
ListOffsets MAX_TIMESTAMP (-3) with Kafka's GetOffsetShell and raw ListOffsets v9 (kafka-python's
protocol classes): the offset of the first record with the largest timestamp, inside a batch, for
every codec; offset, timestamp and leader epoch -1 on an empty partition; config resources with
Kafka's Java Admin client (ConfigResources.java, compiled here) and raw legacy AlterConfigs:
DescribeConfigs of a GROUP answers Kafka's group configs at their defaults, and altering BROKER
or GROUP configs (which sluice never applies) is refused with Kafka's error and message.

The `check_*` functions take only a bootstrap address, so they can be run against Apache Kafka
too (`KAFKA_BOOTSTRAP=127.0.0.1:9092 python tests/python/test_protocol_answers.py`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from support import KAFKA_LIBS, create_topic, unique_topic, wait_until

# librdkafka's words for the failure this file guards against.
PARSE_FAILURE = ("Protocol parse failure", "invalid MessageSetSize", "MessageSetSize -1")


def produce(bootstrap: str, topic: str, values: list, partition: int = 0) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    failed = []
    for v in values:
        p.produce(topic, v, partition=partition, on_delivery=lambda err, _m: err and failed.append(err))
    assert p.flush(30) == 0, "produce did not complete"
    assert not failed, f"delivery errors: {failed[:3]}"


class LoggedConsumer:
    """A librdkafka consumer whose logs and error callbacks are kept for assertions."""

    def __init__(self, bootstrap: str, reset: str):
        self.logs: list[str] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

        class Log:
            def __init__(self, sink):
                self.sink = sink

            def log(self, _level, msg, *args, **_kw):
                self.sink.append(msg % args if args else str(msg))

        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_topic("g"),
                           "enable.auto.commit": False, "auto.offset.reset": reset,
                           "fetch.wait.max.ms": 100, "debug": "fetch,protocol",
                           "error_cb": lambda e: self.errors.append(str(e))},
                          logger=Log(self.logs))

    def parse_failures(self) -> list[str]:
        return [line for line in self.logs + self.errors if any(w in line for w in PARSE_FAILURE)]

    def take(self, expected: int, timeout: float) -> list:
        got = []

        def more():
            for m in self.c.consume(num_messages=1000, timeout=0.3):
                if m.error() is None:
                    got.append(m)
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    self.errors.append(str(m.error()))
            # Fail fast rather than spin for the whole timeout.
            assert not self.parse_failures(), f"parse failures: {self.parse_failures()[:3]}"
            return len(got) >= expected

        wait_until(more, timeout, interval=0, what=f"{expected} messages (have {len(got)}); "
                   f"errors {self.errors[:3]}")
        return got

    def close(self):
        self.c.close()


def check_out_of_range_resets(bootstrap: str, reset: str) -> None:
    """A consumer assigned far beyond the log end resets per `auto.offset.reset` and consumes."""
    topic = unique_topic("oor")
    create_topic(bootstrap, topic, 1)
    first = [b"early-%d" % i for i in range(50)]
    produce(bootstrap, topic, first)
    c = LoggedConsumer(bootstrap, reset)
    try:
        c.c.assign([TopicPartition(topic, 0, 10_000)])
        if reset == "earliest":
            got = c.take(len(first), 30)
            assert [m.value() for m in got] == first
            assert [m.offset() for m in got] == list(range(len(first)))
        else:
            # latest: the reset lands on the log end, after which only new records arrive.
            def reset_done():
                c.c.consume(num_messages=100, timeout=0.2)
                assert not c.parse_failures(), f"parse failures: {c.parse_failures()[:3]}"
                # librdkafka's position stays unset until a message arrives; its fetch log
                # shows where the reset landed.
                mark = f"Fetch topic {topic} [0] at offset {len(first)} "
                return any(mark in line for line in list(c.logs))

            wait_until(reset_done, 30, interval=0, what="position reset to the log end")
            later = [b"late-%d" % i for i in range(20)]
            produce(bootstrap, topic, later)
            got = c.take(len(later), 30)
            assert [m.value() for m in got] == later
            assert got[0].offset() == len(first)
        extra = [m for m in c.c.consume(num_messages=100, timeout=0.5) if m.error() is None]
        assert not extra, f"{len(extra)} unexpected extra messages"
        assert not c.parse_failures(), c.parse_failures()[:3]
        # The out-of-range answer is seen once or a few times, not in a flood.
        oor = [line for line in c.logs if "out of range" in line.lower()]
        assert len(oor) <= 10, f"{len(oor)} out-of-range log lines: {oor[:3]}"
        assert not c.errors, f"consumer errors: {c.errors[:5]}"
    finally:
        c.close()


def test_out_of_range_fetch_resets_to_earliest(broker):
    check_out_of_range_resets(broker.bootstrap, "earliest")


def test_out_of_range_fetch_resets_to_latest(broker):
    check_out_of_range_resets(broker.bootstrap, "latest")


def java_cmd(main_class: str, *args, debug_loggers=(), extra_classpath=None) -> list:
    java = shutil.which("java")
    assert java, "java not on PATH"
    assert any(KAFKA_LIBS.glob("kafka-tools-*.jar")), f"no Kafka jars in {KAFKA_LIBS}; run tests/run"
    props = [f"-Dorg.slf4j.simpleLogger.log.{name}=debug" for name in debug_loggers]
    cp = f"{KAFKA_LIBS}{os.sep}*"
    if extra_classpath:
        cp = f"{extra_classpath}{os.pathsep}{cp}"
    return [java, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", *props, "-cp", cp, main_class, *args]


def check_java_consumer_many_partitions(bootstrap: str) -> None:
    """Kafka's console consumer reads 50 partitions of three topics, half of it produced once
    it has read the first half; its fetch session handler never finds an answer invalid."""
    prefix = unique_topic("jmany")
    shape = {f"{prefix}-a": 40, f"{prefix}-b": 9, f"{prefix}-c": 1}
    per = 10

    def produce_all(label: bytes):
        for topic, parts in shape.items():
            for p in range(parts):
                produce(bootstrap, topic, [b"%s-%d-%s-%d" % (topic.encode(), p, label, i) for i in range(per)], p)

    for topic, parts in shape.items():
        create_topic(bootstrap, topic, parts)
    produce_all(b"first")
    half = per * sum(shape.values())
    cmd = java_cmd("org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap,
                   "--include", f"{prefix}-.*", "--from-beginning", "--max-messages", str(2 * half),
                   "--timeout-ms", "60000", debug_loggers=["org.apache.kafka.clients.FetchSessionHandler"])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out: list = []
    err: list = []
    readers = [threading.Thread(target=lambda: out.extend(l.decode(errors="replace").rstrip("\n") for l in proc.stdout),
                                daemon=True),
               threading.Thread(target=lambda: err.extend(l.decode(errors="replace") for l in proc.stderr),
                                daemon=True)]
    for r in readers:
        r.start()
    try:
        wait_until(lambda: len(out) >= half or proc.poll() is not None, 90, what=f"{half} records read")
        assert len(out) == half, f"read {len(out)} of the first {half}; exit {proc.poll()}\n{''.join(err)[-3000:]}"
        # More records while the consumer polls: incremental fetches now carry data.
        produce_all(b"later")
        code = proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    for r in readers:
        r.join(10)
    log = "".join(err)
    assert code == 0, f"exit {code}\n{log[-3000:]}"
    assert len(out) == 2 * half and len(set(out)) == 2 * half, f"{len(out)} lines ({len(set(out))} distinct)"
    bad = [line for line in log.splitlines() if "invalid" in line.lower() and "fetch response" in line]
    assert not bad, f"{len(bad)} invalid fetch responses: {bad[:2]}"
    assert "extraIds" not in log and "extraPartitions" not in log and "omittedPartitions" not in log
    # The reads went through a fetch session, as against Kafka.
    assert "Built incremental fetch" in log, log[-2000:]


def test_java_consumer_many_partitions_fetch_sessions(broker):
    check_java_consumer_many_partitions(broker.bootstrap)


def raw_list_offsets(bootstrap: str, topic: str, partitions: list, timestamp: int, version: int = 9) -> dict:
    """partition -> (error, offset, timestamp, leader epoch) of a raw ListOffsets request."""
    import socket
    import struct

    from kafka.protocol.consumer.offsets import ListOffsetsRequest, ListOffsetsResponse

    host, port = bootstrap.rsplit(":", 1)
    t = ListOffsetsRequest.ListOffsetsTopic
    req = ListOffsetsRequest(replica_id=-1, isolation_level=0, timeout_ms=5000, topics=[t(name=topic, partitions=[
        t.ListOffsetsPartition(partition_index=p, current_leader_epoch=-1, timestamp=timestamp, max_num_offsets=1)
        for p in partitions])])
    req.with_header(correlation_id=7)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(req.encode(version=version, header=True, framed=True))
        (n,) = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))
        buf = s.recv(n, socket.MSG_WAITALL)
    r = ListOffsetsResponse.decode(buf, version=version, header=True)
    return {p.partition_index: (p.error_code, p.offset, p.timestamp, p.leader_epoch) for p in r.topics[0].partitions}


CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def check_max_timestamp(bootstrap: str) -> None:
    """Records with out-of-order timestamps, the largest twice and not last, in one batch, then
    a later batch with smaller ones: MAX_TIMESTAMP answers the first record with the largest."""
    base = 1_700_000_000_000
    prefix = unique_topic("mts")
    for codec in CODECS:
        topic = f"{prefix}-{codec}"
        create_topic(bootstrap, topic, 2)
        p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 500, "compression.type": codec,
                      "acks": "all"})
        for i, ts in enumerate([1000, 5000, 3000, 5000, 2000]):
            p.produce(topic, b"v%d" % i, partition=0, timestamp=base + ts)
        assert p.flush(30) == 0
        for i, ts in enumerate([1500, 1600]):
            p.produce(topic, b"w%d" % i, partition=0, timestamp=base + ts)
            assert p.flush(30) == 0
        got = raw_list_offsets(bootstrap, topic, [0, 1], -3)
        assert got[0][:3] == (0, 1, base + 5000), f"{codec}: {got[0]}"
        assert got[0][3] >= 0, f"{codec}: leader epoch {got[0][3]}"
        assert got[1] == (0, -1, -1, -1), f"{codec}: empty partition answered {got[1]}"
    res = subprocess.run(java_cmd("org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", bootstrap,
                                  "--topic", f"{prefix}-.*", "--time", "-3"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    lines = sorted(res.stdout.decode().split())
    # GetOffsetShell leaves out partitions without an offset (the empty ones), as with Kafka.
    assert lines == sorted(f"{prefix}-{c}:0:1" for c in CODECS), lines


def test_list_offsets_max_timestamp(broker):
    check_max_timestamp(broker.bootstrap)


# Kafka 4.4's group configs and defaults, as its DescribeConfigs answers a GROUP resource.
GROUP_DEFAULTS = {
    "consumer.assignment.interval.ms": "1000", "consumer.heartbeat.interval.ms": "5000",
    "consumer.session.timeout.ms": "45000", "errors.deadletterqueue.copy.record.enable": "false",
    "errors.deadletterqueue.topic.name": "", "share.assignment.interval.ms": "1000",
    "share.auto.offset.reset": "latest", "share.delivery.count.limit": "5",
    "share.heartbeat.interval.ms": "5000", "share.isolation.level": "read_uncommitted",
    "share.partition.max.record.locks": "2000", "share.record.lock.duration.ms": "30000",
    "share.renew.acknowledge.enable": "true", "share.session.timeout.ms": "45000",
    "streams.assignment.interval.ms": "1000", "streams.assignor.name": "sticky",
    "streams.heartbeat.interval.ms": "5000", "streams.initial.rebalance.delay.ms": "3000",
    "streams.num.standby.replicas": "0", "streams.rack.aware.assignment.tags": "",
    "streams.session.timeout.ms": "45000",
}


def run_config_resources(bootstrap: str, broker_id: str, workdir) -> list:
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ConfigResources.java")
    javac = shutil.which("javac")
    assert javac, "javac not on PATH"
    cp = f"{KAFKA_LIBS}{os.sep}*"
    res = subprocess.run([javac, "-d", str(workdir), "-cp", cp, src], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    res = subprocess.run(java_cmd("ConfigResources", bootstrap, broker_id, extra_classpath=workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return res.stdout.decode().splitlines()


def raw_alter_configs(bootstrap: str, resource_type: int, name: str, configs: dict) -> tuple:
    """(error code, message) of a legacy AlterConfigs v1 request, validate only."""
    import socket
    import struct

    from kafka.protocol.admin import AlterConfigsRequest, AlterConfigsResponse

    host, port = bootstrap.rsplit(":", 1)
    r = AlterConfigsRequest.AlterConfigsResource
    req = AlterConfigsRequest(validate_only=True, resources=[r(resource_type=resource_type, resource_name=name,
                              configs=[r.AlterableConfig(name=k, value=v) for k, v in configs.items()])])
    req.with_header(correlation_id=3)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(req.encode(version=1, header=True, framed=True))
        (n,) = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))
        buf = s.recv(n, socket.MSG_WAITALL)
    x = AlterConfigsResponse.decode(buf, version=1, header=True).responses[0]
    return x.error_code, x.error_message


def check_config_resources(bootstrap: str, broker_id: str, workdir, sluice: bool = True) -> None:
    lines = run_config_resources(bootstrap, broker_id, workdir)
    described = {}
    for line in lines:
        if line.startswith("describe "):
            name, rest = line[len("describe "):].split("=", 1)
            value, source, synonym = rest.rsplit(" ", 2)
            described[name] = (value, source, synonym)
    # sluice's default KIP-848 heartbeat interval is 1 s (Kafka's 5 s; ARCHITECTURE.md, groups).
    expected = dict(GROUP_DEFAULTS, **({"consumer.heartbeat.interval.ms": "1000"} if sluice else {}))
    assert {k: v[0] for k, v in described.items()} == expected, described
    assert all(v[1] == "source=DEFAULT_CONFIG" for v in described.values()), described
    assert described["consumer.session.timeout.ms"][2] == "synonym=group.consumer.session.timeout.ms"
    alters = {" ".join(line.split()[1:3]): line.split(" -> ", 1)[1] for line in lines if line.startswith("alter ")}
    static = "InvalidRequestException: Cannot update these configs dynamically: [auto.create.topics.enable]"
    assert alters["BROKER auto.create.topics.enable"].startswith(static), alters
    assert alters["GROUP no.such.group.config"] == \
        "InvalidConfigurationException: Unknown group config name: no.such.group.config", alters
    code, msg = raw_alter_configs(bootstrap, 4, broker_id, {"auto.create.topics.enable": "false"})
    assert code == 42 and msg.startswith("Cannot update these configs dynamically: [auto.create.topics.enable]")
    code, msg = raw_alter_configs(bootstrap, 4, "7", {"log.retention.ms": "100000"})
    assert (code, msg) == (42, f"Unexpected broker id, expected {broker_id}, but received 7"), (code, msg)
    # A group config within the broker's bounds is accepted (validate-only here) by both.
    assert alters["GROUP consumer.session.timeout.ms"] == "ok", alters
    if sluice:
        # Kafka applies this; sluice cannot, and says so instead of claiming it did.
        assert alters["BROKER log.retention.ms"].startswith(
            "InvalidRequestException: Cannot update these configs dynamically: [log.retention.ms]"), alters


def test_config_resources_group_and_broker(broker, tmp_path):
    check_config_resources(broker.bootstrap, "0", tmp_path)


if __name__ == "__main__":
    # Runs the checks against any broker, e.g. Apache Kafka, for comparison.
    boot = os.environ.get("KAFKA_BOOTSTRAP") or sys.argv[1]
    for name, fn in [("oor earliest", lambda: check_out_of_range_resets(boot, "earliest")),
                     ("oor latest", lambda: check_out_of_range_resets(boot, "latest")),
                     ("java many partitions", lambda: check_java_consumer_many_partitions(boot)),
                     ("max timestamp", lambda: check_max_timestamp(boot)),
                     ("config resources", lambda: check_config_resources(
                         boot, os.environ.get("KAFKA_BROKER_ID", "1"), __import__("tempfile").mkdtemp(), False))]:
        t0 = time.monotonic()
        fn()
        print(f"ok {name} ({time.monotonic() - t0:.1f}s)")
