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

Bounds: every wait has a deadline; the cluster and every member process are stopped by PID.
Sides: sluice only (test_share_groups.py covers a lone broker).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cluster_support import SluiceCluster
from support import unique_topic, wait_until
from test_groups import produce
from test_share_groups import BROKER_CONFIG, ShareMember, compile_member, start_offset
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
    c = ShareCluster(tmp_path / "cluster", cfg)
    try:
        c.start()
    except BaseException:
        c.stop_all()
        raise
    yield c
    crashed = c.crashed()
    c.stop_all()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed or crashed:
        print(f"events: {c.events}")
        for i in c.ids:
            print(f"--- node {i} log tail ---\n{c.log_tail(i, 60)}")
    if crashed:
        pytest.fail(f"nodes {crashed} died during the test without being killed")


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
