"""Contract: Kafka's own CLI reads the cluster's quorum and describes topics page by page —
`kafka-metadata-quorum describe --status / --replication` (DescribeQuorum) and `kafka-topics
--describe` (DescribeTopicPartitions, with a small `--partition-size-limit-per-response` so one
describe takes several pages) against three sluice brokers (`cluster_support`, `--cores 1`
each) and against a lone broker.

  test_quorum_status: every broker asked alone names the same leader (a member), epoch >= 1,
    high watermark > 0, the three members as voters with their peer endpoints, no observers.
  test_quorum_replication: one Leader row and two Follower rows for the three members, log end
    offsets > 0, followers caught up (lag 0) with recent fetch / caught-up times.
  test_topics_describe_pages: two RF 3 topics described together in pages of 2 partitions:
    every partition once, leader / replicas / ISR as Metadata says, the ELR columns that only
    DescribeTopicPartitions brings.
  test_quorum_lone_broker: a lone broker is the one voter and leader of its own quorum.

Sides: "sluice" always; "kafka" (a three-node KRaft cluster) with SLUICE_COMPARE_KAFKA=1, which
is how the expectations themselves are checked. Bounds: every tool run has a timeout, every
loop a deadline; brokers are stopped by PID by the fixtures.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from cluster_support import make_cluster
import support
from support import explain, wait_until

KAFKA_SIDE = os.environ.get("SLUICE_COMPARE_KAFKA") == "1"
SIDES = [
    pytest.param("sluice", marks=pytest.mark.timeout(240)),
    pytest.param("kafka", marks=[
        pytest.mark.skipif(not KAFKA_SIDE, reason="the Apache Kafka side runs with SLUICE_COMPARE_KAFKA=1"),
        pytest.mark.timeout(600)]),
]
TOOL_TIMEOUT = 120
QUORUM = "org.apache.kafka.tools.MetadataQuorumCommand"
TOPICS = "org.apache.kafka.tools.TopicCommand"


def kafka_tool(main_class, *args, input=None):
    return support.kafka_tool(main_class, *args, timeout=TOOL_TIMEOUT, input=input)


@pytest.fixture(params=SIDES)
def cluster(request, tmp_path):
    c = make_cluster(request.param, tmp_path / f"{request.param}-cluster")
    try:
        c.start()
        yield c
    finally:
        crashed = c.crashed()
        c.stop_all()
        if crashed:
            pytest.fail(f"{c.side} nodes {crashed} died during the test")


def status(bootstrap: str) -> dict:
    """`describe --status` as {key: value}."""
    res = kafka_tool(QUORUM, "--bootstrap-server", bootstrap, "describe", "--status")
    assert res.returncode == 0, explain(res)
    out = {}
    for line in res.stdout.decode().splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("ClusterId", "LeaderId", "LeaderEpoch", "HighWatermark", "MaxFollowerLag",
                                   "MaxFollowerLagTimeMs", "CurrentVoters", "CurrentObservers"):
            out[key.strip()] = value.strip()
    assert len(out) == 8, explain(res)
    return out


def replication(bootstrap: str) -> list:
    """`describe --replication` as a list of {column: value}."""
    res = kafka_tool(QUORUM, "--bootstrap-server", bootstrap, "describe", "--replication")
    assert res.returncode == 0, explain(res)
    lines = [l for l in res.stdout.decode().splitlines() if l.strip()]
    header = [h.strip() for h in lines[0].split("\t") if h.strip()]
    assert header == ["NodeId", "DirectoryId", "LogEndOffset", "Lag", "LastFetchTimestamp",
                      "LastCaughtUpTimestamp", "Status"], explain(res)
    rows = [dict(zip(header, [f.strip() for f in l.split("\t") if f.strip()])) for l in lines[1:]]
    assert all(len(r) == len(header) for r in rows), explain(res)
    return rows


def voter_ids(field: str) -> list:
    """Node ids of a CurrentVoters / CurrentObservers value: [{"id": 0, ...}, ...]."""
    import re
    return sorted(int(m) for m in re.findall(r'"id": (-?\d+)', field))


def test_quorum_status(cluster):
    seen = {}
    for i in cluster.ids:  # each broker alone: the ones not leading forward to the leader
        seen[i] = status(cluster.bootstrap_of([i]))
    leaders = {s["LeaderId"] for s in seen.values()}
    assert len(leaders) == 1, seen
    s = seen[cluster.ids[0]]
    assert int(s["LeaderId"]) in cluster.ids, s
    assert int(s["LeaderEpoch"]) >= 1, s
    assert int(s["HighWatermark"]) > 0, s
    assert s["ClusterId"], s
    assert voter_ids(s["CurrentVoters"]) == cluster.ids, s
    assert s["CurrentObservers"] == "[]", s
    assert '"endpoints": [' in s["CurrentVoters"], s


def test_quorum_replication(cluster):
    def settled():
        rows = replication(cluster.bootstrap)
        return rows if all(r["Lag"] == "0" for r in rows) else None

    rows = wait_until(settled, 60, interval=1.0, what="every voter caught up (Lag 0)")
    by_status = {}
    for r in rows:
        by_status.setdefault(r["Status"], []).append(int(r["NodeId"]))
    assert sorted(by_status) == ["Follower", "Leader"], rows
    assert len(by_status["Leader"]) == 1 and len(by_status["Follower"]) == 2, rows
    assert sorted(by_status["Leader"] + by_status["Follower"]) == cluster.ids, rows
    now_ms = time.time() * 1000
    for r in rows:
        assert int(r["LogEndOffset"]) > 0, r
        for col in ("LastFetchTimestamp", "LastCaughtUpTimestamp"):
            # Heard within the last minute (the leader's own are now; followers' are recent).
            assert 0 <= now_ms - int(r[col]) < 60_000, (col, r)


def create_topic(cluster, name, partitions):
    res = kafka_tool(TOPICS, "--bootstrap-server", cluster.bootstrap, "--create", "--topic", name,
                     "--partitions", str(partitions), "--replication-factor", "3")
    assert res.returncode == 0, explain(res)
    wait_until(lambda: cluster.healthy(name, partitions, 3), 60, interval=0.25,
               what=f"{name}: every partition led with a full ISR")


def described(out: str) -> dict:
    """{(topic, partition): fields} of kafka-topics --describe's partition lines."""
    parts = {}
    for line in out.splitlines():
        fields = dict(f.split(": ", 1) if ": " in f else (f.rstrip(":"), "")
                      for f in line.strip().split("\t") if f.strip())
        if "Partition" in fields and "Replicas" in fields:
            parts[(fields["Topic"], int(fields["Partition"]))] = fields
    return parts


def test_topics_describe_pages(cluster):
    a, b = f"pages-a-{uuid.uuid4().hex[:6]}", f"pages-b-{uuid.uuid4().hex[:6]}"
    create_topic(cluster, a, 3)
    create_topic(cluster, b, 4)
    res = kafka_tool(TOPICS, "--bootstrap-server", cluster.bootstrap, "--describe",
                     "--topic", f"pages-[ab]-.*", "--partition-size-limit-per-response", "2")
    assert res.returncode == 0, explain(res)
    got = described(res.stdout.decode())
    want = [(a, p) for p in range(3)] + [(b, p) for p in range(4)]
    assert sorted(k for k in got if k[0] in (a, b)) == sorted(want), explain(res)
    ids = lambda s: [int(x) for x in s.split(",") if x.strip()]  # noqa: E731
    for topic in (a, b):
        md = cluster.partitions(topic)
        for (t, p), f in got.items():
            if t != topic:
                continue
            assert int(f["Leader"]) == md[p].leader and ids(f["Replicas"]) == md[p].replicas, (t, p, f, md[p])
            assert sorted(ids(f["Isr"])) == sorted(md[p].replicas), (t, p, f)
            # Only DescribeTopicPartitions carries (empty) ELR and last-known ELR.
            assert f.get("Elr") == "" and f.get("LastKnownElr") == "", (t, p, f)
    out = res.stdout.decode()
    assert f"Topic: {a}\tTopicId:" in out and "PartitionCount: 4\tReplicationFactor: 3" in out, explain(res)


def test_quorum_lone_broker(broker):
    s = status(broker.bootstrap)
    assert s["LeaderId"] == "0" and voter_ids(s["CurrentVoters"]) == [0], s
    assert s["MaxFollowerLag"] == "0" and s["CurrentObservers"] == "[]", s
    rows = replication(broker.bootstrap)
    assert [(r["NodeId"], r["Status"], r["Lag"]) for r in rows] == [("0", "Leader", "0")], rows
