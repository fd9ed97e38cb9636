"""Consumer groups (classic protocol) with confluent-kafka (librdkafka) and kafka-python.

Covers: two members splitting a 6-partition topic and consuming every message
exactly once; a member leaving (LeaveGroup) and the survivor taking over; a
member SIGKILLed in a subprocess and expired after session.timeout.ms;
committed offsets surviving a broker restart; static membership
(group.instance.id) restarting without a rebalance, then expiring; kafka-python
subscribe/commit/committed; AdminClient list/describe/delete groups and
list/delete committed offsets; range, roundrobin and cooperative-sticky
assignment with two members.

Brokers here run with `group_initial_rebalance_delay_ms = 0` (config file) so a
new group does not wait Kafka's default 3 s before its first assignment.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import (OFFSET_INVALID, Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             KafkaError, KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient

from support import create_topic, unique_topic, wait_until

SESSION_MS = 6000  # the broker's default group_min_session_timeout_ms
BROKER_CONFIG = "group_initial_rebalance_delay_ms = 0\n"


# --- broker ------------------------------------------------------------------

@pytest.fixture
def group_config(tmp_path) -> Path:
    cfg = tmp_path / "sluice-groups.toml"
    cfg.write_text(BROKER_CONFIG)
    return cfg


@pytest.fixture
def gbroker(broker_factory, group_config):
    return broker_factory.start(config=group_config)


# --- helpers -----------------------------------------------------------------

def produce(bootstrap: str, topic: str, partitions: int, per_partition: int, tag: str,
            timeout: float = 30.0) -> dict:
    """Produces `per_partition` messages to each partition; returns {(partition, offset): value}."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False, "acks": "all",
                  "linger.ms": 5})
    out, errors = {}, []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            out[(msg.partition(), msg.offset())] = msg.value()

    for i in range(per_partition * partitions):
        p.produce(topic, value=f"{tag}-{i}".encode(), partition=i % partitions, on_delivery=cb)
    left = p.flush(timeout)
    assert left == 0 and not errors, f"{left} undelivered, errors {errors[:3]}"
    assert len(out) == per_partition * partitions
    return out


class Member:
    """A confluent-kafka consumer in a group, remembering its messages and rebalance callbacks."""

    def __init__(self, bootstrap: str, group: str, topics: list, name: str, **extra):
        self.name = name
        self.msgs: list = []    # (topic, partition, offset, value)
        self.events: list = []  # (kind, [(topic, partition)], monotonic time)
        self.errors: list = []
        conf = {"bootstrap.servers": bootstrap, "group.id": group, "client.id": name,
                "auto.offset.reset": "earliest", "enable.auto.commit": False,
                "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 500,
                "fetch.wait.max.ms": 100, "topic.metadata.refresh.interval.ms": 1000}
        conf.update(extra)
        self.c = Consumer(conf)
        self.closed = False
        self.c.subscribe(topics, on_assign=self._cb("assign"), on_revoke=self._cb("revoke"),
                         on_lost=self._cb("lost"))

    def _cb(self, kind):
        def cb(_consumer, parts):
            self.events.append((kind, sorted((p.topic, p.partition) for p in parts), time.monotonic()))
        return cb

    def poll(self, timeout: float = 0.05) -> None:
        for m in self.c.consume(num_messages=500, timeout=timeout):
            err = m.error()
            if err is None:
                self.msgs.append((m.topic(), m.partition(), m.offset(), m.value()))
            elif err.code() != KafkaError._PARTITION_EOF:
                self.errors.append(err)
                if err.fatal():
                    raise AssertionError(f"{self.name}: fatal consumer error {err}")

    def assignment(self) -> list:
        return sorted((tp.topic, tp.partition) for tp in self.c.assignment())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.c.close()

    def __repr__(self):
        return (f"<{self.name} assignment={self.assignment() if not self.closed else 'closed'} "
                f"msgs={len(self.msgs)} events={[(k, len(p)) for k, p, _ in self.events]} "
                f"errors={[str(e) for e in self.errors[-3:]]}>")


def pump(members: list, pred, timeout: float, what: str):
    """Polls every member in turn until `pred()` is truthy."""
    def step():
        for m in members:
            m.poll(0.05)
        return pred()
    try:
        return wait_until(step, timeout, interval=0, what=what)
    except AssertionError as e:
        raise AssertionError(f"{e}; members: {members}") from None


def pump_for(members: list, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / 0.05) + 2):
        if time.monotonic() >= deadline:
            break
        for m in members:
            m.poll(0.05)


def all_parts(topic: str, n: int) -> list:
    return [(topic, p) for p in range(n)]


def is_split(members: list, expected: list) -> bool:
    """Every member has something, assignments are disjoint and cover `expected`."""
    asg = [m.assignment() for m in members]
    flat = [tp for a in asg for tp in a]
    return all(asg) and len(flat) == len(set(flat)) and sorted(flat) == sorted(expected)


def wait_split(members: list, expected: list, timeout: float = 30.0) -> None:
    pump(members, lambda: is_split(members, expected), timeout,
         what=f"a complete, disjoint split of {len(expected)} partitions")


def consumed_keys(members: list, topic: str) -> list:
    return [(p, o) for m in members for (t, p, o, _v) in m.msgs if t == topic]


def group_description(admin: AdminClient, group: str):
    return admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)


# --- tests -------------------------------------------------------------------

def test_two_members_split_and_consume_exactly_once(gbroker):
    topic, group = unique_topic("gsplit"), unique_topic("grp")
    create_topic(gbroker.bootstrap, topic, 6)
    a = Member(gbroker.bootstrap, group, [topic], "a")
    b = Member(gbroker.bootstrap, group, [topic], "b")
    try:
        wait_split([a, b], all_parts(topic, 6))
        assert (len(a.assignment()), len(b.assignment())) == (3, 3), [a, b]
        sent = produce(gbroker.bootstrap, topic, 6, 20, "one")
        pump([a, b], lambda: len(consumed_keys([a, b], topic)) >= len(sent), 30,
             what=f"{len(sent)} messages across both members")
        pump_for([a, b], 1.0)  # anything extra (a re-delivery) would show up now
        keys = consumed_keys([a, b], topic)
        assert len(keys) == len(set(keys)), f"duplicates: {len(keys) - len(set(keys))}"
        assert set(keys) == set(sent), f"missing {set(sent) - set(keys)} extra {set(keys) - set(sent)}"
        for m in (a, b):
            mine = {p for (_t, p) in m.assignment()}
            assert {p for (_t, p, _o, _v) in m.msgs} <= mine, f"{m.name} read outside its assignment"
            for (_t, p, o, v) in m.msgs:
                assert sent[(p, o)] == v
    finally:
        a.close()
        b.close()


def test_leave_group_survivor_takes_over(gbroker):
    topic, group = unique_topic("gleave"), unique_topic("grp")
    create_topic(gbroker.bootstrap, topic, 6)
    a = Member(gbroker.bootstrap, group, [topic], "a")
    b = Member(gbroker.bootstrap, group, [topic], "b")
    try:
        wait_split([a, b], all_parts(topic, 6))
        first = produce(gbroker.bootstrap, topic, 6, 10, "one")
        pump([a, b], lambda: len(consumed_keys([a, b], topic)) >= len(first), 30, what="first batch")
        a.c.commit(asynchronous=False)
        b.c.commit(asynchronous=False)
        b_parts = b.assignment()
        a_before = len(a.msgs)

        t0 = time.monotonic()
        b.close()  # LeaveGroup
        pump([a], lambda: a.assignment() == all_parts(topic, 6), SESSION_MS / 1000 + 10,
             what="survivor owning all 6 partitions")
        took = time.monotonic() - t0
        # A LeaveGroup rebalances at once; only an expiry would take the whole session timeout.
        assert took < SESSION_MS / 1000, f"takeover after LeaveGroup took {took:.1f}s"

        second = produce(gbroker.bootstrap, topic, 6, 5, "two")
        pump([a], lambda: len(a.msgs) - a_before >= len(second), 30, what="second batch on the survivor")
        pump_for([a], 1.0)
        after = [(p, o) for (_t, p, o, _v) in a.msgs[a_before:]]
        # b committed before leaving: the survivor starts its former partitions at the commit.
        assert sorted(after) == sorted(second), \
            f"re-read {sorted(set(after) - set(second))[:10]}, missing {sorted(set(second) - set(after))[:10]}"
        first_seen = {}
        for (_t, p, o, _v) in a.msgs[a_before:]:
            first_seen.setdefault(p, o)
        assert {p: first_seen[p] for (_t, p) in b_parts} == {p: 10 for (_t, p) in b_parts}
    finally:
        a.close()
        b.close()


VICTIM = r"""
import sys, time
from confluent_kafka import Consumer
bootstrap, group, topic, session_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "victim",
              "auto.offset.reset": "earliest", "enable.auto.commit": False,
              "session.timeout.ms": session_ms, "heartbeat.interval.ms": 500})
c.subscribe([topic])
last = None
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    c.poll(0.1)
    now = sorted(tp.partition for tp in c.assignment())
    if now != last:
        print("ASSIGNED " + ",".join(map(str, now)), flush=True)
        last = now
"""


def test_killed_member_expires_after_session_timeout(gbroker, tmp_path):
    topic, group = unique_topic("gkill"), unique_topic("grp")
    create_topic(gbroker.bootstrap, topic, 6)
    script = tmp_path / "victim.py"
    script.write_text(VICTIM)
    proc = subprocess.Popen([sys.executable, str(script), gbroker.bootstrap, group, topic, str(SESSION_MS)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list = []

    def read():
        for raw in proc.stdout:
            lines.append(raw.decode().strip())
    threading.Thread(target=read, daemon=True).start()

    def victim_parts():
        assigned = [l for l in lines if l.startswith("ASSIGNED ")]
        if not assigned:
            return []
        tail = assigned[-1][len("ASSIGNED "):]
        return [(topic, int(p)) for p in tail.split(",") if p]

    a = Member(gbroker.bootstrap, group, [topic], "survivor")
    try:
        def split():
            v, s = victim_parts(), a.assignment()
            return v and s and not set(v) & set(s) and sorted(v + s) == all_parts(topic, 6)
        pump([a], split, 30, what=f"survivor and victim splitting 6 partitions (victim said {lines})")

        proc.send_signal(signal.SIGKILL)  # no LeaveGroup, no more heartbeats
        proc.wait(timeout=10)
        t0 = time.monotonic()
        pump([a], lambda: a.assignment() == all_parts(topic, 6), SESSION_MS / 1000 + 15,
             what="survivor owning all 6 partitions after the victim's session expired")
        took = time.monotonic() - t0
        # The victim heartbeated at most 0.5 s before the kill; it must live out its session.
        assert took >= SESSION_MS / 1000 - 1.5, f"victim removed after only {took:.1f}s"
        assert took <= SESSION_MS / 1000 + 10, f"victim removed only after {took:.1f}s"
        assert "member session expired" in gbroker.stderr_tail(400)

        sent = produce(gbroker.bootstrap, topic, 6, 5, "after")
        before = len(a.msgs)
        pump([a], lambda: {(p, o) for (_t, p, o, _v) in a.msgs[before:]} >= set(sent), 30,
             what="survivor reading new messages on all 6 partitions")
    finally:
        a.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_committed_offsets_survive_restart(broker_factory, group_config):
    b = broker_factory.start(config=group_config)
    topic, group = unique_topic("grestart"), unique_topic("grp")
    create_topic(b.bootstrap, topic, 3)
    first = produce(b.bootstrap, topic, 3, 10, "one")
    c = Member(b.bootstrap, group, [topic], "c1")
    try:
        pump([c], lambda: len(c.msgs) >= len(first), 30, what="first batch")
        c.c.commit(asynchronous=False)
        got = c.c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert {tp.partition: tp.offset for tp in got} == {0: 10, 1: 10, 2: 10}
    finally:
        c.close()

    b = broker_factory.restart(b, config=group_config)
    second = produce(b.bootstrap, topic, 3, 5, "two")
    c = Member(b.bootstrap, group, [topic], "c2")
    try:
        got = c.c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert {tp.partition: tp.offset for tp in got} == {0: 10, 1: 10, 2: 10}, \
            "committed offsets after restart"
        pump([c], lambda: len(c.msgs) >= len(second), 30, what="second batch after restart")
        pump_for([c], 1.0)
        first_seen = {}
        for (_t, p, o, _v) in c.msgs:
            first_seen.setdefault(p, o)
        assert first_seen == {0: 10, 1: 10, 2: 10}, "resumed somewhere other than the commit"
        assert sorted((p, o) for (_t, p, o, _v) in c.msgs) == sorted(second)
    finally:
        c.close()


def test_static_member_restart_keeps_generation(gbroker):
    topic, group = unique_topic("gstatic"), unique_topic("grp")
    create_topic(gbroker.bootstrap, topic, 6)
    session = 10_000
    static = lambda name: Member(gbroker.bootstrap, group, [topic], name,
                                 **{"group.instance.id": f"{group}-{name}", "session.timeout.ms": session})
    a, b = static("a"), static("b")
    a2 = None
    admin = AdminClient({"bootstrap.servers": gbroker.bootstrap})
    try:
        wait_split([a, b], all_parts(topic, 6))
        pump_for([a, b], 1.0)
        a_parts, b_parts = a.assignment(), b.assignment()
        assert is_split([a, b], all_parts(topic, 6)), [a, b]
        b_events = list(b.events)

        a.close()  # a static member does not send LeaveGroup on close
        pump_for([b], 1.0)
        d = group_description(admin, group)
        assert len(d.members) == 2, f"a static member was removed on close: {d.members}"

        t0 = time.monotonic()
        a2 = static("a")  # same group.instance.id, back within the session timeout
        pump([a2, b], lambda: a2.assignment() == a_parts, session / 1000 - 2,
             what="restarted static member getting its old partitions")
        assert time.monotonic() - t0 < session / 1000
        pump_for([a2, b], 2.0)
        # No new generation: b was never revoked or re-assigned, a2 got one assignment.
        assert b.events == b_events, f"b saw a rebalance: {b.events[len(b_events):]}"
        assert b.assignment() == b_parts
        assert [k for k, _p, _t in a2.events] == ["assign"], a2.events
        d = group_description(admin, group)
        assert d.state == ConsumerGroupState.STABLE, d.state
        assert sorted(m.group_instance_id for m in d.members) == [f"{group}-a", f"{group}-b"], d.members

        sent = produce(gbroker.bootstrap, topic, 6, 5, "static")
        pump([a2, b], lambda: len(consumed_keys([a2, b], topic)) >= len(sent), 30, what="messages")
        assert {p for (_t, p, _o, _v) in a2.msgs} == {p for (_t, p) in a_parts}

        # A static member that does not come back is expired after its session timeout.
        a2.close()
        t0 = time.monotonic()
        pump([b], lambda: b.assignment() == all_parts(topic, 6), session / 1000 + 15,
             what="b owning all partitions after the static member expired")
        took = time.monotonic() - t0
        assert took >= session / 1000 - 2, f"static member removed after only {took:.1f}s"
    finally:
        a.close()
        b.close()
        if a2 is not None:
            a2.close()


def test_kafka_python_group_commit(gbroker):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    topic, group = unique_topic("gkpy"), unique_topic("grp")
    create_topic(gbroker.bootstrap, topic, 3)
    sent = produce(gbroker.bootstrap, topic, 3, 10, "kpy")

    def consumer():
        return KafkaConsumer(bootstrap_servers=gbroker.bootstrap, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
                             fetch_max_wait_ms=100)

    c = consumer()
    try:
        c.subscribe([topic])
        got = []

        def more():
            for _tp, recs in c.poll(timeout_ms=200).items():
                got.extend((r.partition, r.offset, r.value) for r in recs)
            return len(got) >= len(sent)
        wait_until(more, 30, interval=0, what=f"{len(sent)} messages via kafka-python")
        assert c.assignment() == {KTP(topic, p) for p in range(3)}
        assert {(p, o): v for p, o, v in got} == sent and len(got) == len(sent)
        c.commit()
        assert {p: c.committed(KTP(topic, p)) for p in range(3)} == {0: 10, 1: 10, 2: 10}
    finally:
        c.close()

    c = consumer()
    try:
        assert {p: c.committed(KTP(topic, p)) for p in range(3)} == {0: 10, 1: 10, 2: 10}
        c.subscribe([topic])
        more = produce(gbroker.bootstrap, topic, 3, 1, "more")
        got = []

        def fresh():
            for _tp, recs in c.poll(timeout_ms=200).items():
                got.extend((r.partition, r.offset) for r in recs)
            return len(got) >= len(more)
        wait_until(fresh, 30, interval=0, what="the new messages after rejoining")
        assert sorted(got) == sorted(more) == [(0, 10), (1, 10), (2, 10)]
    finally:
        c.close()


def test_admin_list_describe_delete_groups_and_offsets(gbroker):
    from kafka import TopicPartition as KTP
    from kafka.admin import KafkaAdminClient
    from kafka.errors import GroupSubscribedToTopicError, NoError

    topic, other, group = unique_topic("gadm"), unique_topic("gold"), unique_topic("grp")
    create_topic(gbroker.bootstrap, topic, 3)
    create_topic(gbroker.bootstrap, other, 3)
    sent = produce(gbroker.bootstrap, topic, 3, 4, "adm")
    admin = AdminClient({"bootstrap.servers": gbroker.bootstrap})
    kadmin = KafkaAdminClient(bootstrap_servers=gbroker.bootstrap, request_timeout_ms=15000)
    m = Member(gbroker.bootstrap, group, [topic], "adm-member")
    try:
        pump([m], lambda: len(m.msgs) >= len(sent), 30, what="messages")
        m.c.commit(asynchronous=False)
        # Offsets for a topic the group does not subscribe to (any partition may be committed).
        m.c.commit(offsets=[TopicPartition(other, p, 2) for p in range(3)], asynchronous=False)

        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        assert not listed.errors, listed.errors
        mine = [g for g in listed.valid if g.group_id == group]
        assert len(mine) == 1, [g.group_id for g in listed.valid]
        assert mine[0].state == ConsumerGroupState.STABLE and not mine[0].is_simple_consumer_group

        d = group_description(admin, group)
        assert d.state == ConsumerGroupState.STABLE and d.partition_assignor == "range"
        assert [x.client_id for x in d.members] == ["adm-member"]
        assert sorted((tp.topic, tp.partition) for tp in d.members[0].assignment.topic_partitions) \
            == all_parts(topic, 3)

        fut = admin.delete_consumer_groups([group], request_timeout=10)[group]
        with pytest.raises(KafkaException) as err:
            fut.result(timeout=15)
        assert err.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, err.value

        def offsets():
            r = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                  request_timeout=10)[group].result(timeout=15)
            return {(tp.topic, tp.partition): tp.offset for tp in r.topic_partitions}
        want = {**{(topic, p): 4 for p in range(3)}, **{(other, p): 2 for p in range(3)}}
        assert offsets() == want

        # OffsetDelete: allowed for the unsubscribed topic, refused for the subscribed one.
        res = kadmin.delete_group_offsets(group, [KTP(other, p) for p in range(3)])
        assert {tp.partition: e for tp, e in res.items()} == {p: NoError for p in range(3)}, res
        try:
            res = kadmin.delete_group_offsets(group, [KTP(topic, 0)])
        except GroupSubscribedToTopicError:
            pass  # raised as a whole-request error by some client versions
        else:
            assert res == {KTP(topic, 0): GroupSubscribedToTopicError}, res
        assert offsets() == {(topic, p): 4 for p in range(3)}

        m.close()  # LeaveGroup: the group becomes empty at once
        wait_until(lambda: group_description(admin, group).state == ConsumerGroupState.EMPTY, 10,
                   what="group EMPTY after its only member left")
        admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)

        listed = admin.list_consumer_groups(request_timeout=10).result(timeout=15)
        assert group not in [g.group_id for g in listed.valid]
        assert offsets() == {} or all(o == OFFSET_INVALID for o in offsets().values()), offsets()
        with pytest.raises(KafkaException) as err:
            admin.delete_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        assert err.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, err.value

        # The deleted group's offsets are gone: a new member starts from the beginning.
        m2 = Member(gbroker.bootstrap, group, [topic], "adm-member-2")
        try:
            pump([m2], lambda: len(m2.msgs) >= len(sent), 30, what="re-reading after the group was deleted")
            assert min(o for (_t, _p, o, _v) in m2.msgs) == 0
        finally:
            m2.close()
    finally:
        m.close()
        kadmin.close()


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_assignors_two_members(gbroker, strategy):
    t6, t3, group = unique_topic("gasg6"), unique_topic("gasg3"), unique_topic("grp")
    create_topic(gbroker.bootstrap, t6, 6)
    create_topic(gbroker.bootstrap, t3, 3)
    expected = all_parts(t6, 6) + all_parts(t3, 3)
    members = [Member(gbroker.bootstrap, group, [t6, t3], f"m{i}",
                      **{"partition.assignment.strategy": strategy}) for i in range(2)]
    try:
        wait_split(members, expected, timeout=40)
        final = [m.assignment() for m in members]
        pump_for(members, 2.0)
        assert [m.assignment() for m in members] == final, "assignment still changing"
        sizes = sorted(len(a) for a in final)
        if strategy == "range":
            # Per topic, each member gets one contiguous block; 6 -> 3+3, 3 -> 2+1.
            for t, n in ((t6, 6), (t3, 3)):
                blocks = [sorted(p for (tt, p) in a if tt == t) for a in final]
                for blk in blocks:
                    assert blk == list(range(blk[0], blk[0] + len(blk))), blocks
                assert sorted(len(blk) for blk in blocks) == ([3, 3] if n == 6 else [1, 2]), blocks
        else:
            assert sizes == [4, 5], final
        d = group_description(AdminClient({"bootstrap.servers": gbroker.bootstrap}), group)
        assert d.partition_assignor == strategy and len(d.members) == 2, d

        sent = produce(gbroker.bootstrap, t6, 6, 3, strategy)
        pump(members, lambda: len(consumed_keys(members, t6)) >= len(sent), 30, what="messages")
        assert sorted(consumed_keys(members, t6)) == sorted(sent)
    finally:
        for m in members:
            m.close()
