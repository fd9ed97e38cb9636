"""Share groups (KIP-932) in a three-broker sluice cluster: the share-partition state is written
through the partition's Raft log, so it survives the partition leader's SIGKILL.

  test_acknowledged_records_survive_the_partition_leaders_kill: three KafkaShareConsumers
    (ShareMember.java, "sync" mode: explicit acknowledgement and commitSync, printing the
    offsets the broker acknowledged) share the one partition of an RF=3 topic. Once part of the
    records is acknowledged, the partition's leader is SIGKILLed (and not restarted). After the
    failover no record whose acknowledgement the broker answered before the kill is delivered
    again, every record is delivered and in the end acknowledged (none lost), and the records
    in flight at the kill come again with a higher delivery count. Against a build that kept
    the state only in the leader's local file the new leader starts the share-partition afresh
    ("earliest") and delivers the acknowledged records again.

  test_share_offsets_reset_described_and_deleted_across_brokers: kafka-share-groups
    --reset-offsets (RF 1 and RF 3 topics whose partitions are led by different brokers),
    --describe, --delete-offsets and --delete, each answered by the group's coordinator for
    every partition (the coordinator forwards to the partition's leader over the peer links);
    KafkaShareConsumers then read from the reset point, and after the delete from the start.

Bounds: every wait has a deadline; the cluster and every member process are stopped by PID.
Sides: sluice only (test_share_groups.py covers a lone broker).
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from cluster_support import SluiceCluster, run_cluster
from support import unique_topic, wait_until
from test_groups import produce
from test_java_groups import explain, table
from test_share_groups import BROKER_CONFIG, ShareMember, compile_member, share_groups, start_offset
from test_txn_cluster import create_topic

pytestmark = pytest.mark.timeout(240)

WAIT = 90.0
N = 3000


class ShareCluster(SluiceCluster):
    """Three sluice brokers started with the share-group test settings."""

    def __init__(self, work, config):
        super().__init__(work)
        self.config = config

    def plan(self) -> None:
        super().plan()
        for node in self.nodes.values():
            node.argv += ["--config", str(self.config)]


@pytest.fixture
def cluster(request, tmp_path):
    cfg = tmp_path / "sluice-share.toml"
    cfg.write_text(BROKER_CONFIG)
    yield from run_cluster(request, ShareCluster(tmp_path / "cluster", cfg))


@pytest.fixture
def members():
    started = []
    yield started
    for m in started:
        m.kill()


def acked(lines) -> set:
    """Offsets whose acknowledgement the broker answered without error."""
    return {int(o) for line in lines if line.startswith("ACKED ") for o in line.split()[1:]}


def delivered(lines) -> list:
    """(offset, delivery count) of every REC line."""
    return [(int(p[1]), int(p[2])) for p in (line.split(" ", 3) for line in lines if line.startswith("REC "))]


def test_acknowledged_records_survive_the_partition_leaders_kill(cluster, tmp_path, members):
    topic, group = unique_topic("share-rf3"), unique_topic("sg")
    create_topic(cluster, topic, 1, 3, 2)
    sent = produce(cluster.bootstrap, topic, 1, N, "q")
    offsets = {off for (_, off) in sent}
    cp = compile_member(tmp_path)
    for i in range(3):
        members.append(ShareMember(cp, tmp_path, cluster.bootstrap, topic, group, f"s{i}", mode="sync"))
    all_lines = lambda: [line for m in members for line in list(m.lines)]  # noqa: E731
    wait_until(lambda: len(acked(all_lines())) >= N // 4, WAIT, interval=0.1, what="a quarter acknowledged")

    leader = cluster.leader_of(topic, 0)
    assert leader in cluster.ids, f"no leader for {topic}-0"
    cut = [len(m.lines) for m in members]
    cluster.kill(leader)
    before = [list(m.lines)[:k] for m, k in zip(members, cut)]
    acked_before = acked(line for ls in before for line in ls)
    assert acked_before < offsets, "everything was acknowledged before the kill: the test would prove nothing"

    wait_until(lambda: {off for (off, _) in delivered(all_lines())} >= offsets, WAIT, interval=0.5,
               what=f"every record delivered after node {leader}'s kill")

    # Every record acknowledged in the end: the share-partition start offset (as the group's
    # coordinator reads it from its replica) passes the last record. An acknowledgement that
    # committed while its answer was lost in the kill shows here, not as an ACKED line.
    live = SimpleNamespace(bootstrap=cluster.bootstrap_of([i for i in cluster.ids if i != leader]))

    def spso():
        try:
            return start_offset(live, group, topic)
        except AssertionError:
            return None
    wait_until(lambda: (spso() or -1) > max(offsets), WAIT, interval=1.0, what="every record acknowledged")
    after = [list(m.lines)[k:] for m, k in zip(members, cut)]
    again = [(off, c) for ls in after for (off, c) in delivered(ls) if off in acked_before]
    assert not again, f"{len(again)} records acknowledged before the kill delivered again, e.g. {again[:5]}"
    got = {off for m in members for (off, _) in delivered(list(m.lines))}
    assert offsets <= got, f"{len(offsets - got)} records never delivered"
    redelivered = [(off, c) for ls in after for (off, c) in delivered(ls) if c > 1]
    print(f"leader {leader} killed with {len(acked_before)} of {N} acknowledged; "
          f"{len(redelivered)} deliveries after it had a count above 1; {len(acked(all_lines()))} ACKED in all")
    for m in members:
        m.stop()


def describe_offsets(cluster, group) -> dict:
    """{(topic, partition): start offset} from kafka-share-groups --describe (None: '-')."""
    res = share_groups(cluster, "--describe", "--group", group)
    assert res.returncode == 0, explain(res)
    if "has no active members" in res.stdout.decode() and "TOPIC" not in res.stdout.decode():
        return {}
    out = {}
    for r in table(res, "GROUP"):
        v = r["START-OFFSET"]
        out[(r["TOPIC"], int(r["PARTITION"]))] = None if v == "-" else int(v)
    return out


def read_all_of(cp, tmp_path, cluster, group, sent: dict, want: dict, members, what) -> dict:
    """One "commit" ShareMember per topic of `want` ({topic: set of (partition, offset)}) in
    `group`, until each received all of its topic's `want` (or WAIT passes), then a second more
    (anything beyond would show), then they stop (acknowledging everything). `sent` is
    {topic: {(partition, offset): value}}. Returns {topic: set of (partition, offset) received}."""
    ms = {t: ShareMember(cp, tmp_path, cluster.bootstrap, t, group, f"{what}-{t}", mode="commit") for t in want}
    members.extend(ms.values())
    by_value = {t: {v.decode(): k for k, v in sent[t].items()} for t in want}

    def got():
        return {t: {by_value[t][v] for (_, _, v) in m.records() if v in by_value[t]} for t, m in ms.items()}
    wait_until(lambda: all(want[t] <= got()[t] for t in want), WAIT, interval=0.5, what=what)
    time.sleep(1.0)
    for m in ms.values():
        assert m.stop() == 0, m.stderr()
    return got()


def acknowledged_to_the_end(cluster, group, ends: dict) -> bool:
    """Every share-partition's start offset, as the coordinator describes it, passed the last
    record of `ends` ({(topic, partition): last offset + 1}; an RF 3 partition's log also holds
    the share state records, so its start offset may be beyond)."""
    d = describe_offsets(cluster, group)
    return d.keys() == ends.keys() and all((d[tp] or -1) >= end for tp, end in ends.items())


def test_share_offsets_reset_described_and_deleted_across_brokers(cluster, tmp_path, members):
    """kafka-share-groups --reset-offsets, --describe, --delete-offsets and --delete for a share
    group whose partitions are led by all three brokers (RF 1 and RF 3 topics), whatever broker
    coordinates the group: the coordinator forwards each partition's state operation to its
    leader over the peer links. Before that, the partitions of other brokers were refused."""
    rf1, rf3, group = unique_topic("share-rf1"), unique_topic("share-rf3"), unique_topic("sg")
    leaders1 = create_topic(cluster, rf1, 3, 1, 1)
    leaders3 = create_topic(cluster, rf3, 3, 3, 2)
    assert len(set(leaders1.values()) | set(leaders3.values())) >= 2, f"leaders not spread: {leaders1} {leaders3}"
    first = {rf1: produce(cluster.bootstrap, rf1, 3, 30, "a"), rf3: produce(cluster.bootstrap, rf3, 3, 30, "b")}
    time.sleep(1.0)
    # The reset point: kafka-share-groups 4.3 resets to a time (--to-datetime, local time).
    at = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"
    time.sleep(1.0)
    later = {rf1: produce(cluster.bootstrap, rf1, 3, 20, "c"), rf3: produce(cluster.bootstrap, rf3, 3, 20, "d")}
    sent = {t: {**first[t], **later[t]} for t in first}
    every = [(t, p) for t in (rf1, rf3) for p in range(3)]
    cp = compile_member(tmp_path)
    ends = {(t, p): 1 + max(o for (q, o) in sent[t] if q == p) for (t, p) in every}

    everything = {t: set(sent[t]) for t in sent}
    got = read_all_of(cp, tmp_path, cluster, group, sent, everything, members, "first")
    assert got == everything
    wait_until(lambda: acknowledged_to_the_end(cluster, group, ends), WAIT, interval=1.0,
               what="every share-partition acknowledged to the end, described by the coordinator")

    res = share_groups(cluster, "--reset-offsets", "--to-datetime", stamp, "--execute", "--group", group,
                       "--topic", rf1, "--topic", rf3)
    assert res.returncode == 0, explain(res)
    reset_to = {(t, p): min(o for (q, o) in later[t] if q == p) for (t, p) in every}
    rows = {(r["TOPIC"], int(r["PARTITION"])): int(r["NEW-OFFSET"]) for r in table(res, "GROUP")}
    assert rows == reset_to, explain(res)
    assert describe_offsets(cluster, group) == reset_to

    want = {t: set(later[t]) for t in later}
    got = read_all_of(cp, tmp_path, cluster, group, sent, want, members, "from-reset")
    for t in (rf1, rf3):
        assert got[t] == want[t], f"{t}: read {sorted(got[t] - want[t])[:10]} before the reset point"
    wait_until(lambda: acknowledged_to_the_end(cluster, group, ends), WAIT, interval=1.0,
               what="every share-partition acknowledged to the end again")

    res = share_groups(cluster, "--delete-offsets", "--group", group, "--topic", rf1)
    assert res.returncode == 0, explain(res)
    assert acknowledged_to_the_end(cluster, group, {k: v for k, v in ends.items() if k[0] == rf3})

    res = share_groups(cluster, "--delete", "--group", group)
    assert res.returncode == 0, explain(res)
    # Forgotten on every leader: the same group id starts again from the reset policy
    # (earliest in this cluster's config) on every partition, RF 3 ones included.
    got = read_all_of(cp, tmp_path, cluster, group, sent, everything, members, "after-delete")
    assert got == everything
