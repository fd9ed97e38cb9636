"""librdkafka (confluent-kafka) static members (`group.instance.id`) with the
cooperative-sticky assignor: a member joining makes the others give up
partitions and rejoin with new metadata, which needs a follow-up rebalance;
a static member restarting gets its partitions back; a static member that
never comes back expires.  Every partition ends up owned and every record
consumed, within deadlines.

Before sluice rebalanced on a static member's rejoin with changed metadata,
the third member never got partitions (the group stayed Stable with the
given-up partitions owned by nobody).
"""

from __future__ import annotations

import time

from test_groups import Member, all_parts, consumed_keys, is_split, produce, pump, pump_for, wait_split
from support import create_topic, unique_topic

SESSION_MS = 10_000


def test_static_cooperative_members_join_restart_and_expire(broker_factory, tmp_path):
    cfg = tmp_path / "sluice.toml"
    cfg.write_text("group_initial_rebalance_delay_ms = 0\n")
    b = broker_factory.start(config=cfg)
    topic, group = unique_topic("gcoop"), unique_topic("grp")
    create_topic(b.bootstrap, topic, 6)
    parts = all_parts(topic, 6)

    def static(name):
        return Member(b.bootstrap, group, [topic], name,
                      **{"group.instance.id": f"{group}-{name}", "session.timeout.ms": SESSION_MS,
                         "partition.assignment.strategy": "cooperative-sticky"})

    members = []
    try:
        m1, m2 = static("a"), static("b")
        members += [m1, m2]
        wait_split([m1, m2], parts)

        # A third member: the others revoke part of their partitions and rejoin.
        m3 = static("c")
        members.append(m3)
        wait_split([m1, m2, m3], parts, timeout=30)
        assert any(k == "revoke" for k, _p, _t in m1.events + m2.events), "no cooperative revocation happened"

        sent = produce(b.bootstrap, topic, 6, 20, "first")
        pump([m1, m2, m3], lambda: set(consumed_keys([m1, m2, m3], topic)) >= set(sent), 30,
             what="the first records consumed")

        # a restarts (a static member does not leave on close) and gets its partitions back.
        a_parts = m1.assignment()
        m1.close()
        m1b = static("a")
        members.append(m1b)
        pump([m1b, m2, m3], lambda: m1b.assignment() == a_parts and is_split([m1b, m2, m3], parts),
             SESSION_MS / 1000 - 2, what="the restarted static member owning its old partitions")

        # b goes away for good: after its session timeout the others own everything.
        m2.close()
        t0 = time.monotonic()
        wait_split([m1b, m3], parts, timeout=SESSION_MS / 1000 + 30)
        assert time.monotonic() - t0 >= SESSION_MS / 1000 - 2, "b was removed before its session timeout"
        pump_for([m1b, m3], 1.0)

        more = produce(b.bootstrap, topic, 6, 20, "second")
        pump([m1b, m3], lambda: set(consumed_keys([m1b, m3], topic)) >= set(more), 30,
             what="the second records consumed by the remaining members")
        for m in members:
            assert not m.errors, f"{m.name}: {m.errors[:3]}"
    finally:
        for m in members:
            m.close()
