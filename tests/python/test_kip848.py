"""KIP-848 consumer groups (group.protocol=consumer) with real clients against the real binary.

Covers: Apache Kafka's Java consumer 4.x (Kip848Consumer.java, compiled here) as several
members of one group, one SIGKILLed while it owns partitions (its partitions move to the
others after the session timeout; every record consumed; the group's commits reach the end
offsets); kafka-consumer-groups (ConsumerGroupCommand) --describe and --state while it runs;
static members (group.instance.id) leaving and coming back to the same partitions without
moving the others'; a joining member that waits for partitions another member must revoke
being given a fifth of the heartbeat interval until it has them (read from the Java client's
own log of the intervals it adopts); the group kept across a broker kill -9 and restart; librdkafka with
group.protocol=consumer.

The broker runs with a 6 s consumer session timeout and a 500 ms heartbeat interval so the
rebalances of these tests take seconds (sluice's group_consumer_* settings).
"""

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from support import KAFKA_LIBS, create_topic, unique_topic, wait_until
from test_groups import produce
from test_java_groups import explain, groups, table

BROKER_CONFIG = (
    "group_initial_rebalance_delay_ms = 0\n"
    "group_consumer_session_timeout_ms = 6000\n"
    "group_consumer_heartbeat_interval_ms = 500\n"
)
MEMBER_MAX_MS = 150_000
WAIT = 90.0


@pytest.fixture
def kbroker(broker_factory, tmp_path):
    cfg = tmp_path / "sluice-kip848.toml"
    cfg.write_text(BROKER_CONFIG)
    return broker_factory.start(config=cfg)


def compile_member(workdir) -> str:
    javac = shutil.which("javac")
    assert javac and shutil.which("java"), "java/javac not on PATH"
    assert any(KAFKA_LIBS.glob("kafka-clients-*.jar")), f"no Kafka jars in {KAFKA_LIBS}; run tests/run"
    cp = f"{KAFKA_LIBS}{os.sep}*"
    if not (workdir / "Kip848Consumer.class").exists():
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Kip848Consumer.java")
        res = subprocess.run([javac, "-nowarn", "-d", str(workdir), "-cp", cp, src], capture_output=True, timeout=120)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    return f"{workdir}{os.pathsep}{cp}"


class JavaMember:
    """One Kip848Consumer process; its output lines are collected as they come."""

    def __init__(self, cp, workdir, bootstrap, topic, group, name, assignor="uniform", instance=None, jvm=()):
        self.name = name
        self.stop_file = workdir / f"stop-{name}-{time.monotonic_ns()}"
        args = ["java", "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", *jvm, "-cp", cp, "Kip848Consumer",
                bootstrap, topic, group, assignor, str(self.stop_file), str(MEMBER_MAX_MS)]
        if instance:
            args.append(instance)
        self.err_path = workdir / f"{name}-{time.monotonic_ns()}.stderr"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self.lines: list = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def owned(self) -> set:
        """Partitions owned now, from the ASSIGNED/REVOKED callbacks (incremental with KIP-848)."""
        out = set()
        for line in list(self.lines):
            kind, _, rest = line.partition(" ")
            if kind not in ("ASSIGNED", "REVOKED"):
                continue
            ps = {int(p) for p in rest.split(",") if p}
            if kind == "ASSIGNED":
                out |= ps
            elif kind == "REVOKED":
                out -= ps
        return out

    def topic_partitions(self) -> set:
        """(topic, partition) owned after the last change (the last TPS line)."""
        last = [line for line in list(self.lines) if line.startswith("TPS")]
        if not last:
            return set()
        items = last[-1][4:].split(",")
        return {(t, int(p)) for t, _, p in (i.rpartition(":") for i in items if i)}

    def ever_assigned(self) -> set:
        return {int(p) for line in list(self.lines) if line.startswith("ASSIGNED ")
                for p in line.split(" ", 1)[1].split(",") if p}

    def values(self) -> set:
        return {line.split(" ", 3)[3].encode() for line in list(self.lines) if line.startswith("REC ")}

    def stop(self, timeout=60) -> int:
        self.stop_file.touch()
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        return code

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def explain(self) -> str:
        return (f"{self.name} exit {self.proc.poll()} lines {self.lines[-15:]}\n"
                f"stderr tail:\n{self.err_path.read_text(errors='replace')[-2500:]}")


def committed(bootstrap, group, topic, partitions) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def wait_split(members, partitions, timeout=WAIT):
    """Waits until the members own disjoint, non-empty sets covering every partition."""
    def split():
        owned = [m.owned() for m in members]
        union = set().union(*owned)
        disjoint = sum(len(o) for o in owned) == len(union)
        return owned if all(owned) and disjoint and union == set(range(partitions)) else None
    why = lambda: "\n".join(m.explain() for m in members)  # noqa: E731
    try:
        return wait_until(split, timeout, interval=0.2, what="a split of every partition")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{why()}") from None


def test_java_members_split_partitions_and_a_killed_one_is_replaced(kbroker, tmp_path):
    topic, group, n = unique_topic("k848"), unique_topic("g848"), 6
    create_topic(kbroker.bootstrap, topic, n)
    first = produce(kbroker.bootstrap, topic, n, 50, "one")
    cp = compile_member(tmp_path)
    members = [JavaMember(cp, tmp_path, kbroker.bootstrap, topic, group, f"m{i}") for i in range(3)]
    victim, survivors = members[0], members[1:]
    try:
        owned = wait_split(members, n)
        # The victim is a member that consumed: which one did depends on the order the JVMs
        # joined (the first takes every partition and may read all of `first` before the split).
        consuming = wait_until(lambda: [i for i, m in enumerate(members) if m.values()], WAIT,
                               what="a member consuming")
        victim = members[consuming[0]]
        survivors = [m for m in members if m is not victim]
        lost = owned[consuming[0]]
        victim.kill()
        killed_at = time.monotonic()
        second = produce(kbroker.bootstrap, topic, n, 50, "two")
        # After the session timeout the victim's partitions go to the survivors.
        wait_split(survivors, n)
        print(f"partitions of the killed member owned by the survivors {time.monotonic() - killed_at:.1f} s "
              f"after SIGKILL (session timeout 6 s, heartbeat interval 0.5 s)")
        assert all(any(p in s.ever_assigned() for s in survivors) for p in lost), \
            "\n".join(m.explain() for m in members)
        ends = {p: 100 for p in range(n)}
        wait_until(lambda: committed(kbroker.bootstrap, group, topic, n) == ends, WAIT, interval=0.5,
                   what="commits at the end offsets")
        consumed = set().union(*(m.values() for m in members))
        missing = (set(first.values()) | set(second.values())) - consumed
        assert not missing, f"{len(missing)} records never consumed\n" + "\n".join(m.explain() for m in members)

        res = groups(kbroker, "--describe", "--group", group)
        assert res.returncode == 0, explain(res)
        rows = [r for r in table(res, "GROUP") if r["TOPIC"] == topic]
        assert sorted(int(r["PARTITION"]) for r in rows) == list(range(n)), explain(res)
        assert all(r["CURRENT-OFFSET"] == "100" and r["LAG"] == "0" and r["CONSUMER-ID"] != "-" for r in rows), \
            explain(res)
        res = groups(kbroker, "--describe", "--group", group, "--state")
        assert res.returncode == 0, explain(res)
        [state] = table(res, "GROUP")
        assert (state["STATE"], state["#MEMBERS"]) == ("Stable", "2"), explain(res)
        res = groups(kbroker, "--list", "--type")
        assert res.returncode == 0, explain(res)
        assert any(line.lower().split()[:2] == [group, "consumer"] for line in res.stdout.decode().splitlines()), \
            explain(res)
    finally:
        codes = [m.stop() for m in survivors]
        if victim.proc.poll() is None:
            victim.kill()
    assert codes == [0, 0], "\n".join(m.explain() for m in members)
    assert all("CLOSED" in m.lines for m in survivors)


def test_java_static_member_comes_back_to_its_partitions(kbroker, tmp_path):
    topic, group, n = unique_topic("k848s"), unique_topic("g848s"), 4
    create_topic(kbroker.bootstrap, topic, n)
    cp = compile_member(tmp_path)
    a = JavaMember(cp, tmp_path, kbroker.bootstrap, topic, group, "a", "range", instance="inst-a")
    b = JavaMember(cp, tmp_path, kbroker.bootstrap, topic, group, "b", "range", instance="inst-b")
    a2 = None
    try:
        owned_a, owned_b = wait_split([a, b], n)
        b_lines = len(b.lines)
        assert a.stop() == 0, a.explain()   # leaves with epoch -2: its partitions stay its own
        a2 = JavaMember(cp, tmp_path, kbroker.bootstrap, topic, group, "a2", "range", instance="inst-a")
        wait_until(lambda: a2.owned() == owned_a, WAIT, what="the static member's partitions back",)
        assert not [line for line in b.lines[b_lines:] if line.startswith(("REVOKED", "ASSIGNED"))], b.explain()
        assert b.owned() == owned_b
    finally:
        for m in (a, b, a2):
            if m is not None:
                m.stop()


def test_java_regex_subscription_picks_up_new_topics_and_partitions(kbroker, tmp_path):
    from confluent_kafka.admin import AdminClient, NewPartitions
    base = unique_topic("rx")
    a, b, other = f"{base}-a", f"{base}-b", f"x{base}-c"
    create_topic(kbroker.bootstrap, a, 2)
    create_topic(kbroker.bootstrap, other, 1)
    cp = compile_member(tmp_path)
    m = JavaMember(cp, tmp_path, kbroker.bootstrap, f"re:{base}-.*", unique_topic("g848x"), "x")
    try:
        want = {(a, 0), (a, 1)}
        wait_until(lambda: m.topic_partitions() == want, WAIT, what=f"{want}")
        create_topic(kbroker.bootstrap, b, 1)
        admin = AdminClient({"bootstrap.servers": kbroker.bootstrap})
        for f in admin.create_partitions([NewPartitions(a, 3)]).values():
            f.result(30)
        want = {(a, 0), (a, 1), (a, 2), (b, 0)}
        try:
            wait_until(lambda: m.topic_partitions() == want, WAIT, what=f"{want}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{m.explain()}") from None
        sent = produce(kbroker.bootstrap, b, 1, 5, "late")
        wait_until(lambda: set(sent.values()) <= m.values(), WAIT, what="the new topic's records")
    finally:
        assert m.stop() == 0, m.explain()


def test_group_survives_broker_kill(broker_factory, kbroker, tmp_path):
    topic, group, n = unique_topic("k848r"), unique_topic("g848r"), 3
    create_topic(kbroker.bootstrap, topic, n)
    cp = compile_member(tmp_path)
    m = JavaMember(cp, tmp_path, kbroker.bootstrap, topic, group, "r")
    try:
        wait_split([m], n)
        res = groups(kbroker, "--describe", "--group", group, "--members")
        assert res.returncode == 0, explain(res)
        [before] = table(res, "GROUP")
    finally:
        m.kill()
    kbroker.stop(signal.SIGKILL)
    cfg = tmp_path / "sluice-kip848.toml"
    again = broker_factory.start(kbroker.data_dir, config=cfg)
    res = groups(again, "--describe", "--group", group, "--members")
    assert res.returncode == 0, explain(res)
    [after] = table(res, "GROUP")
    assert (after["CONSUMER-ID"], after["#PARTITIONS"]) == (before["CONSUMER-ID"], str(n)), explain(res)


def test_librdkafka_consumer_protocol(kbroker):
    import confluent_kafka
    version = confluent_kafka.libversion()[1]
    if version < 0x020A0000:
        pytest.skip(f"librdkafka {confluent_kafka.libversion()[0]} predates KIP-848 GA (2.10)")
    topic, group, n = unique_topic("k848c"), unique_topic("g848c"), 4
    create_topic(kbroker.bootstrap, topic, n)
    sent = produce(kbroker.bootstrap, topic, n, 25, "c")
    conf = {"bootstrap.servers": kbroker.bootstrap, "group.id": group, "group.protocol": "consumer",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    consumers = [Consumer(conf), Consumer(conf)]
    got, assigned = set(), [set(), set()]
    try:
        for c in consumers:
            c.subscribe([topic])
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and (len(got) < len(sent) or not all(assigned)):
            for i, c in enumerate(consumers):
                msg = c.poll(0.2)
                assigned[i] = {tp.partition for tp in c.assignment()}
                if msg is None or msg.error():
                    continue
                got.add(msg.value())
                c.commit(message=msg, asynchronous=False)
        assert got == set(sent.values()), f"{len(got)} of {len(sent)}; assigned {assigned}"
        assert all(assigned) and not (assigned[0] & assigned[1]), assigned
        assert committed(kbroker.bootstrap, group, topic, n) == {p: 25 for p in range(n)}
    finally:
        for c in consumers:
            c.close()
