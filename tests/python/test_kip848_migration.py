"""Mixed membership (KIP-848's online upgrade and downgrade) with real clients against the real binary.

Covers: a group of three Apache Kafka Java consumers using the classic protocol
(cooperative-sticky) on a 6-partition topic, rolled one member at a time to
group.protocol=consumer and then back to classic, as an operator upgrades (and downgrades) a
deployment: the group becomes a KIP-848 consumer group when the first consumer-protocol member
joins (its classic members keep working through JoinGroup/SyncGroup/Heartbeat) and a classic
group again when the last one leaves; one member SIGKILLed while its group rebalances; every
record consumed, the commits reaching the end offsets, every partition owned at the end;
kafka-consumer-groups --describe showing the group while it mixes both kinds of member.
librdkafka (confluent-kafka) classic members with a librdkafka group.protocol=consumer member
joining and leaving the same way.
"""

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from support import create_topic, unique_topic, wait_until
from test_groups import produce
from test_java_groups import explain, groups, table
from test_kip848 import WAIT, JavaMember, committed, compile_member, kbroker, wait_split  # noqa: F401

N = 6
PER_PARTITION = 40
CLASSIC = "classic:cooperative-sticky"


def group_type(broker, group) -> str:
    res = groups(broker, "--list", "--type")
    assert res.returncode == 0, explain(res)
    for line in res.stdout.decode().splitlines():
        cols = line.lower().split()
        if cols and cols[0] == group:
            return cols[1]
    return "-"


def test_java_group_rolled_to_the_consumer_protocol_and_back(kbroker, tmp_path):
    topic, group = unique_topic("mig"), unique_topic("gmig")
    create_topic(kbroker.bootstrap, topic, N)
    cp = compile_member(tmp_path)
    sent = dict(produce(kbroker.bootstrap, topic, N, PER_PARTITION, "r0"))
    everyone = []

    def start(name, assignor):
        m = JavaMember(cp, tmp_path, kbroker.bootstrap, topic, group, name, assignor)
        everyone.append(m)
        return m

    def why():
        return "\n".join(m.explain() for m in everyone)

    members = [start(f"c{i}", CLASSIC) for i in range(3)]
    try:
        wait_split(members, N)
        assert group_type(kbroker, group) == "classic"
        # Upgrade, one member at a time: stop a classic member, start a consumer-protocol one.
        for i in range(3):
            assert members[i].stop() == 0, why()
            members[i] = start(f"n{i}", "uniform")
            wait_split(members, N)
            sent.update(produce(kbroker.bootstrap, topic, N, PER_PARTITION, f"up{i}"))
            assert group_type(kbroker, group) == "consumer", f"after {i + 1} upgraded\n{why()}"
            if i == 0:
                # Mixed: the tool describes the consumer-protocol member and the classic ones.
                res = groups(kbroker, "--describe", "--group", group, "--members")
                assert res.returncode == 0, explain(res)
                rows = table(res, "GROUP")
                assert len(rows) == 3, explain(res)
        # Downgrade, one at a time; a classic member is SIGKILLed right after joining (while
        # the group rebalances for it); its partitions go to the others after its session.
        victim = None
        for i in range(3):
            assert members[i].stop() == 0, why()
            members[i] = start(f"b{i}", CLASSIC)
            if i == 1:
                wait_until(lambda: members[1].lines, WAIT, what="the member's first event")
                victim = members[1]
                victim.kill()
                alive = [m for m in members if m is not victim]
                wait_split(alive, N)
                members[1] = start("b1-again", CLASSIC)
            wait_split(members, N)
            sent.update(produce(kbroker.bootstrap, topic, N, PER_PARTITION, f"down{i}"))
        wait_split(members, N)
        assert group_type(kbroker, group) == "classic", why()
        ends = {p: PER_PARTITION * 7 for p in range(N)}
        wait_until(lambda: committed(kbroker.bootstrap, group, topic, N) == ends, WAIT, interval=0.5,
                   what=f"commits at the end offsets {ends}")
        consumed = set().union(*(m.values() for m in everyone))
        missing = set(sent.values()) - consumed
        assert not missing, f"{len(missing)} records never consumed\n{why()}"
        seen = sum(len([ln for ln in m.lines if ln.startswith("REC ")]) for m in everyone)
        print(f"{len(sent)} records, {seen} deliveries ({seen - len(sent)} redelivered after hand-offs)")
        res = groups(kbroker, "--describe", "--group", group)
        assert res.returncode == 0, explain(res)
        rows = [r for r in table(res, "GROUP") if r["TOPIC"] == topic]
        assert sorted(int(r["PARTITION"]) for r in rows) == list(range(N)), explain(res)
        assert all(r["LAG"] == "0" and r["CONSUMER-ID"] != "-" for r in rows), explain(res)
    finally:
        codes = [m.stop() if m.proc.poll() is None else 0 for m in members]
        for m in everyone:
            if m.proc.poll() is None:
                m.kill()
    assert codes == [0, 0, 0], why()


def test_librdkafka_consumer_protocol_member_joins_a_classic_group(kbroker):
    topic, group = unique_topic("migc"), unique_topic("gmigc")
    create_topic(kbroker.bootstrap, topic, 4)
    sent = produce(kbroker.bootstrap, topic, 4, 25, "c")
    base = {"bootstrap.servers": kbroker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False}
    classic = {**base, "group.protocol": "classic", "partition.assignment.strategy": "cooperative-sticky",
               "session.timeout.ms": 10000, "heartbeat.interval.ms": 500}
    consumers = [Consumer(classic), Consumer(classic)]
    got = set()

    def commit(c, msg):
        # A classic member's commit while the group rebalances is answered REBALANCE_IN_PROGRESS,
        # and one at a generation older than the group's ILLEGAL_GENERATION (after the
        # downgrade the group's generation is its highest member epoch, so a member whose epoch
        # had not caught up commits at an older one: Kafka's ClassicGroup checks the same way);
        # a real application commits again later, as the next record does.
        try:
            c.commit(message=msg, asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() not in (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION):
                raise

    def poll_until(cond, what):
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for c in consumers:
                msg = c.poll(0.1)
                if msg is not None and not msg.error():
                    got.add(msg.value())
                    commit(c, msg)
            if cond():
                return
        pytest.fail(f"timed out waiting for {what}; assignments {assignments()}")

    def assignments():
        return [{tp.partition for tp in c.assignment()} for c in consumers]

    def split():
        a = assignments()
        return all(a) and sum(map(len, a)) == 4 and set().union(*a) == set(range(4))

    try:
        for c in consumers:
            c.subscribe([topic])
        poll_until(split, "the classic members to split the partitions")
        assert group_type(kbroker, group) == "classic"
        new = Consumer({**base, "group.protocol": "consumer"})
        new.subscribe([topic])
        consumers.append(new)
        poll_until(lambda: split() and group_type(kbroker, group) == "consumer",
                   "a split among the three, in a consumer group")
        new.close()
        consumers.remove(new)
        poll_until(lambda: split() and group_type(kbroker, group) == "classic" and len(got) == len(sent),
                   "the classic members alone again, in a classic group, everything consumed")
        assert got == set(sent.values())
        assert committed(kbroker.bootstrap, group, topic, 4) == {p: 25 for p in range(4)}
    finally:
        for c in consumers:
            c.close()


def test_franz_go_next_gen_and_classic_members_in_one_group(kbroker, tmp_path):
    """franz-go v1.22's KIP-848 support (kgo.ServerSideBalancer) in a group with a classic
    franz-go member (tests/compat/go/kip848): every record consumed, the commits at the end,
    the group a consumer group listing both member types. Needs Go (skipped without it)."""
    import shutil
    from support import REPO, run
    if shutil.which("go") is None:
        pytest.skip("go not installed")
    out = tmp_path / "kip848"
    r = run(["go", "build", "-C", str(REPO / "tests" / "compat" / "go"), "-o", str(out), "./kip848"], timeout=600)
    assert r.returncode == 0, f"go build failed:\n{r.stderr.decode()[-3000:]}"
    r = run([str(out), "-bootstrap", kbroker.bootstrap, "-partitions", "6", "-records", "6000", "-members", "2",
             "-classic", "1", "-timeout", "150s"], timeout=200)
    text = r.stdout.decode()
    print(text[-2000:])
    assert r.returncode == 0 and "kip848: PASS" in text, f"{text[-3000:]}\n{r.stderr.decode()[-3000:]}"
