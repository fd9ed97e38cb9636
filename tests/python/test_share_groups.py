"""Share groups (KIP-932) with Apache Kafka's own Java clients against the real binary.

Covers: KafkaShareConsumer (ShareMember.java, compiled here) as several members of one share
group on a single partition: records split between them, each delivered once at delivery
count 1 and all acknowledged (the share-partition start offset reaches the end offset, read
with kafka-share-groups, ShareGroupCommand, which also lists and describes the group); one of
five members SIGKILLed while it holds acquired records: they are delivered again to the
others with a delivery count above 1 once the acquisition lock expires, none lost; the broker
SIGKILLed mid-way and restarted: the group is listed and described (its membership is stored
in __consumer_offsets) before any member rejoins, acknowledged records are not delivered again
beyond the records that were in flight, none lost; a member removed by the session timeout
stays removed across a broker restart (the removal is stored); a member SIGKILLed while holding
records frees them when its connection drops (as Kafka), not when their locks expire; members
closing one after the other (committing first) while the others poll: no record reaches two
applications, none lost; franz-go's share consumer (tests/compat/go/share) as three members of
one group; version 2 of ShareFetch/ShareAcknowledge: a record held past several acquisition
locks with RENEW acknowledgements (KIP-1222) and never redelivered, and
share.acquire.mode=record_limit (KIP-1206) acquiring no more than max.poll.records=1 asks for.

The broker runs with share_auto_offset_reset = "earliest", a 3 s acquisition lock and a 6 s
share session timeout so the tests take seconds.
"""

import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from support import KAFKA_LIBS, create_topic, unique_topic, wait_until
from test_groups import produce
from test_java_groups import explain, kafka_tool, table

LOCK_MS = 3000
MAX_LOCKS = 2000
BROKER_CONFIG = (
    'share_auto_offset_reset = "earliest"\n'
    f"group_share_record_lock_duration_ms = {LOCK_MS}\n"
    "group_share_session_timeout_ms = 6000\n"
    "group_share_heartbeat_interval_ms = 500\n"
    f"group_share_partition_max_record_locks = {MAX_LOCKS}\n"
)
MEMBER_MAX_MS = 120_000
WAIT = 60.0


@pytest.fixture
def sconfig(tmp_path):
    cfg = tmp_path / "sluice-share.toml"
    cfg.write_text(BROKER_CONFIG)
    return cfg


def compile_member(workdir) -> str:
    javac = shutil.which("javac")
    assert javac and shutil.which("java"), "java/javac not on PATH"
    assert any(KAFKA_LIBS.glob("kafka-clients-*.jar")), f"no Kafka jars in {KAFKA_LIBS}; run tests/run"
    cp = f"{KAFKA_LIBS}{os.sep}*"
    if not (workdir / "ShareMember.class").exists():
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ShareMember.java")
        res = subprocess.run([javac, "-nowarn", "-d", str(workdir), "-cp", cp, src], capture_output=True, timeout=120)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    return f"{workdir}{os.pathsep}{cp}"


class ShareMember:
    """One ShareMember process; its output lines are collected as they come."""

    def __init__(self, cp, workdir, bootstrap, topic, group, name, mode="accept", hold_ms=None):
        self.name = name
        self.stop_file = workdir / f"stop-{name}-{time.monotonic_ns()}"
        args = ["java", "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", cp, "ShareMember",
                bootstrap, topic, group, mode, str(self.stop_file), str(MEMBER_MAX_MS)]
        if hold_ms is not None:
            args.append(str(hold_ms))
        self.err_path = workdir / f"{name}-{time.monotonic_ns()}.stderr"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        self.lines: list = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    def records(self) -> list:
        """(offset, delivery count, value) of every record received."""
        out = []
        for line in list(self.lines):
            if line.startswith("REC "):
                _, off, count, value = line.split(" ", 3)
                out.append((int(off), int(count), value))
        return out

    def has(self, line: str) -> bool:
        return line in list(self.lines)

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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")[-3000:]


def share_groups(broker, *args):
    return kafka_tool("org.apache.kafka.tools.consumer.group.ShareGroupCommand",
                      "--bootstrap-server", broker.bootstrap, *args)


def start_offset(broker, group, topic) -> int:
    """The share-partition start offset of partition 0, from kafka-share-groups --describe."""
    res = share_groups(broker, "--describe", "--group", group)
    assert res.returncode == 0, explain(res)
    rows = [r for r in table(res, "GROUP") if r["TOPIC"] == topic and r["PARTITION"] == "0"]
    assert rows, explain(res)
    return int(rows[0]["START-OFFSET"])


def values_of(members) -> set:
    return {v for m in members for (_, _, v) in m.records()}


@pytest.fixture
def members():
    started = []
    yield started
    for m in started:
        m.kill()


def test_three_members_split_one_partition_and_acknowledge_all(broker_factory, sconfig, tmp_path, members):
    broker = broker_factory.start(config=sconfig)
    topic, group = unique_topic("share"), unique_topic("sg")
    create_topic(broker.bootstrap, topic, 1)
    cp = compile_member(tmp_path)
    for i in range(3):
        members.append(ShareMember(cp, tmp_path, broker.bootstrap, topic, group, f"m{i}"))
    wait_until(lambda: all(m.has("SUBSCRIBED") for m in members), WAIT, what="members subscribed")
    # All three in the group before any record exists, so none takes everything alone.
    listed = share_groups(broker, "--list")
    assert listed.returncode == 0 and group in listed.stdout.decode().split(), explain(listed)
    wait_until(lambda: len(table(share_groups(broker, "--describe", "--group", group, "--members"), "GROUP")) == 3,
               WAIT, interval=1.0, what="three members in the share group")
    n = 6000
    sent = produce(broker.bootstrap, topic, 1, n, "v")
    want = set(v.decode() for v in sent.values())
    wait_until(lambda: values_of(members) >= want, WAIT, interval=0.5, what="every record delivered")
    firsts = [(off, m.name) for m in members for (off, c, _) in m.records() if c == 1]
    assert len(firsts) == len({off for off, _ in firsts}) == n, "a record was delivered twice at count 1"
    busy = [m.name for m in members if m.records()]
    assert len(busy) >= 2, f"only {busy} received records"
    # Every record acknowledged: the share-partition start offset reaches the end.
    wait_until(lambda: start_offset(broker, group, topic) == n, WAIT, interval=1.0, what="SPSO at the end offset")
    for m in members:
        assert m.stop() == 0, m.stderr()


def produced_topic(broker, tmp_path, n, prefix):
    """A one-partition topic holding N records produced with PREFIX, and a new share group's
    name: (topic, group, the values sent, the Java class path of ShareMember)."""
    topic, group = unique_topic("share"), unique_topic("sg")
    create_topic(broker.bootstrap, topic, 1)
    sent = produce(broker.bootstrap, topic, 1, n, prefix)
    return topic, group, set(v.decode() for v in sent.values()), compile_member(tmp_path)


def victim_holding(broker, tmp_path, members, n, prefix):
    """A one-partition topic of N records and a share member ("victim", in `members`) that
    acquired some and holds them unacknowledged: (topic, group, the values sent, the Java class
    path, the victim, the offsets it holds)."""
    topic, group, want, cp = produced_topic(broker, tmp_path, n, prefix)
    victim = ShareMember(cp, tmp_path, broker.bootstrap, topic, group, "victim", mode="hold")
    members.append(victim)
    wait_until(lambda: victim.has("HOLDING"), WAIT, what="the victim holding records")
    held = {off for (off, _, _) in victim.records()}
    assert held
    return topic, group, want, cp, victim, held


def test_member_killed_while_holding_records_they_are_redelivered(broker_factory, sconfig, tmp_path, members):
    broker = broker_factory.start(config=sconfig)
    n = 20_000
    topic, group, want, cp, victim, held = victim_holding(broker, tmp_path, members, n, "k")
    for i in range(4):
        members.append(ShareMember(cp, tmp_path, broker.bootstrap, topic, group, f"m{i}"))
    time.sleep(1.0)
    victim.kill()
    survivors = members[1:]
    wait_until(lambda: values_of(survivors) >= want, WAIT, interval=0.5, what="every record delivered to survivors")
    again = {off: c for m in survivors for (off, c, _) in m.records() if off in held}
    assert set(again) == held, f"{len(held - set(again))} held records never redelivered"
    assert all(c >= 2 for c in again.values()), "a redelivered record kept delivery count 1"
    redeliveries = sum(1 for m in survivors for (_, c, _) in m.records() if c > 1)
    print(f"held by the victim {len(held)}, redeliveries counted {redeliveries}")
    wait_until(lambda: start_offset(broker, group, topic) == n, WAIT, interval=1.0, what="SPSO at the end offset")
    for m in survivors:
        assert m.stop() == 0, m.stderr()


def long_lock_config(tmp_path):
    """A broker whose acquisition locks and member sessions outlast the test: records held by a
    killed member can only come back through its dropped connection."""
    cfg = tmp_path / "sluice-share-long-lock.toml"
    cfg.write_text('share_auto_offset_reset = "earliest"\n'
                   "group_share_record_lock_duration_ms = 120000\n"
                   "group_share_session_timeout_ms = 120000\n"
                   "group_share_heartbeat_interval_ms = 500\n")
    return cfg


def test_member_killed_its_records_come_back_when_its_connection_drops(broker_factory, tmp_path, members):
    """As Kafka (its share session cache releases a dropped connection's sessions): a member
    SIGKILLed while holding records frees them when its connection drops, long before their
    acquisition lock (120 s here) or its group session would. They come again with delivery
    count 2 (Kafka 4.4 keeps the count on this release), none lost, nothing else twice."""
    broker = broker_factory.start(config=long_lock_config(tmp_path))
    n = 2000
    topic, group, want, cp, victim, held = victim_holding(broker, tmp_path, members, n, "d")
    survivor = ShareMember(cp, tmp_path, broker.bootstrap, topic, group, "survivor")
    members.append(survivor)
    # The survivor polls (it got records the victim does not hold) before the kill, so what
    # follows measures the release, not its start.
    wait_until(lambda: survivor.records(), WAIT, interval=0.2, what="the survivor receiving records")
    victim.kill()
    killed = time.monotonic()
    wait_until(lambda: values_of([survivor]) >= want, 30.0, interval=0.2,
               what="the victim's records delivered to the survivor (30 s, a quarter of their lock)")
    print(f"held {len(held)}, back {time.monotonic() - killed:.1f} s after the kill")
    got = survivor.records()
    again = {off: c for (off, c, _) in got if off in held}
    assert set(again) == held, f"{len(held - set(again))} held records not delivered again"
    assert all(c == 2 for c in again.values()), f"delivery counts of redelivered records: {set(again.values())}"
    offsets = [off for (off, _, _) in got]
    assert len(offsets) == len(set(offsets)), "the survivor got a record twice"
    # Records the victim's client had fetched but not yet returned from poll come back at
    # count 2 as well; every other record at 1.
    assert all(c in (1, 2) for (_, c, _) in got), "a record came with a count above 2"
    wait_until(lambda: start_offset(broker, group, topic) == n, WAIT, interval=1.0, what="SPSO at the end offset")
    assert survivor.stop() == 0, survivor.stderr()


def test_members_closing_while_others_poll_deliver_no_record_twice(broker_factory, sconfig, tmp_path, members):
    """bench/share's ending: members close one after the other while the others still poll.
    Each commits (accepts its last poll's records) before close, so no record reaches two
    applications and none is lost; the share-partition start offset reaches the end. Records
    a closing member had acquired but not yet returned from poll are released with its session
    and may come to another member at delivery count 2 (as on Kafka 4.4), never twice to an
    application."""
    broker = broker_factory.start(config=sconfig)
    n = 8000
    topic, group, want, cp = produced_topic(broker, tmp_path, n, "c")
    group_members = [ShareMember(cp, tmp_path, broker.bootstrap, topic, group, f"c{i}", mode="commit")
                     for i in range(4)]
    members.extend(group_members)
    # Close three of the four at a quarter, half and three quarters of the records.
    for i, m in enumerate(group_members[:3]):
        wait_until(lambda: len(values_of(group_members)) >= (i + 1) * n // 4, WAIT, interval=0.1,
                   what=f"{i + 1} quarter(s) delivered")
        assert m.stop() == 0, m.stderr()
    last = group_members[3]
    wait_until(lambda: values_of(group_members) >= want, WAIT, interval=0.5, what="every record delivered")
    wait_until(lambda: start_offset(broker, group, topic) == n, WAIT, interval=1.0, what="SPSO at the end offset")
    assert last.stop() == 0, last.stderr()
    seen: dict = {}
    for m in group_members:
        for (off, _, _) in m.records():
            seen.setdefault(off, []).append(m.name)
    twice = {off: who for off, who in seen.items() if len(who) > 1}
    assert not twice, f"{len(twice)} records reached two applications, e.g. {sorted(twice.items())[:3]}"
    assert len(seen) == n
    redelivered = sum(1 for m in group_members for (_, c, _) in m.records() if c > 1)
    print(f"records at delivery count > 1 (acquired, never returned by a closing member): {redelivered}")


def test_broker_killed_acknowledged_records_stay_acknowledged(broker_factory, sconfig, tmp_path, members):
    broker = broker_factory.start(config=sconfig)
    n = 20_000
    topic, group, want, cp = produced_topic(broker, tmp_path, n, "r")
    # Slow members (50 records a poll, 200 ms of work each), so the kill lands mid-way.
    first = [ShareMember(cp, tmp_path, broker.bootstrap, topic, group, f"a{i}", mode="slow") for i in range(3)]
    members.extend(first)
    wait_until(lambda: len(values_of(first)) >= n // 3, WAIT, interval=0.2, what="a third delivered")
    # Acknowledged before this point: the start offset only grows until the kill.
    spso = wait_until(lambda: start_offset(broker, group, topic), WAIT, interval=0.5, what="a start offset above 0")
    assert spso < n, "every record was acknowledged before the kill: the test would prove nothing"
    broker.stop(signal.SIGKILL)
    for m in first:
        m.kill()
    before = {off for m in first for (off, _, _) in m.records()}
    broker = broker_factory.start(broker.data_dir, config=sconfig)
    # The membership is stored: the group is known before any member comes back.
    listed = share_groups(broker, "--list")
    assert listed.returncode == 0 and group in listed.stdout.decode().split(), explain(listed)
    described = share_groups(broker, "--describe", "--group", group)
    assert described.returncode == 0 and [r for r in table(described, "GROUP") if r["TOPIC"] == topic], \
        explain(described)
    second = [ShareMember(cp, tmp_path, broker.bootstrap, topic, group, f"b{i}") for i in range(3)]
    members.extend(second)
    # The killed members' ids are still in the group until their sessions time out; the new
    # members join beside them. The share-partition's start offset is stored too.
    wait_until(lambda: all(m.has("SUBSCRIBED") for m in second), WAIT, what="members subscribed")
    recovered = wait_until(lambda: share_groups(broker, "--describe", "--group", group).returncode == 0
                           and start_offset(broker, group, topic), WAIT, interval=0.5, what="the group back")
    assert recovered >= spso, f"the start offset went back from {spso} to {recovered} across the kill"
    wait_until(lambda: values_of(first) | values_of(second) >= want, WAIT, interval=0.5, what="every record delivered")
    after = {off for m in second for (off, _, _) in m.records()}
    again = before & after
    # Only records not yet acknowledged at the kill (in flight, at most the record-lock
    # limit) may come again; everything below the recovered start offset never does.
    assert len(again) <= MAX_LOCKS, f"{len(again)} records delivered again after the restart"
    assert after and not any(off < spso for off in after), "an acknowledged record was delivered again"
    print(f"delivered before the kill {len(before)}, start offset read before the kill {spso}, "
          f"after the restart {recovered}, delivered again {len(again)}")
    wait_until(lambda: start_offset(broker, group, topic) == n, WAIT, interval=1.0, what="SPSO at the end offset")
    for m in second:
        assert m.stop() == 0, m.stderr()


def member_count(broker, group) -> int:
    """#MEMBERS of the share group, from kafka-share-groups --describe --state."""
    res = share_groups(broker, "--describe", "--group", group, "--state")
    assert res.returncode == 0, explain(res)
    rows = table(res, "GROUP")
    assert len(rows) == 1, explain(res)
    return int(rows[0]["#MEMBERS"])


def test_expired_member_stays_gone_after_a_restart(broker_factory, tmp_path, members):
    """A member SIGKILLed (no leave) is removed when its session times out, and the removal is
    written like a heartbeat's change: after a broker restart the group has no member. The
    restarted broker has a long session timeout, so a member brought back from an unwritten
    state would still be listed when the group is described."""
    short = tmp_path / "sluice-share-short.toml"
    short.write_text('share_auto_offset_reset = "earliest"\n'
                     "group_share_session_timeout_ms = 2000\n"
                     "group_share_heartbeat_interval_ms = 500\n")
    long = tmp_path / "sluice-share-long.toml"
    long.write_text('share_auto_offset_reset = "earliest"\n'
                    "group_share_session_timeout_ms = 60000\n"
                    "group_share_heartbeat_interval_ms = 500\n")
    broker = broker_factory.start(config=short)
    topic, group = unique_topic("share"), unique_topic("sg")
    create_topic(broker.bootstrap, topic, 1)
    cp = compile_member(tmp_path)
    victim = ShareMember(cp, tmp_path, broker.bootstrap, topic, group, "victim")
    members.append(victim)
    wait_until(lambda: victim.has("SUBSCRIBED"), WAIT, what="the member subscribed")
    wait_until(lambda: member_count(broker, group) == 1, WAIT, interval=0.5, what="one member in the group")
    victim.kill()
    wait_until(lambda: member_count(broker, group) == 0, WAIT, interval=0.5, what="the silent member expired")
    broker = broker_factory.restart(broker, config=long)
    assert member_count(broker, group) == 0, "the expired member came back with the restart"


def test_franz_go_share_members(broker_factory, sconfig, tmp_path):
    """franz-go v1.22's share-group consumer (kgo.ShareGroup, tests/compat/go/share): three
    members on one partition, every record delivered, none to two members at once at delivery
    count 1, no acknowledgement error. Needs Go (skipped without it)."""
    from support import REPO, run
    if shutil.which("go") is None:
        pytest.skip("go not installed")
    out = tmp_path / "share-go"
    r = run(["go", "build", "-C", str(REPO / "tests" / "compat" / "go"), "-o", str(out), "./share"], timeout=600)
    assert r.returncode == 0, f"go build failed:\n{r.stderr.decode()[-3000:]}"
    broker = broker_factory.start(config=sconfig)
    r = run([str(out), "-bootstrap", broker.bootstrap, "-records", "3000", "-members", "3", "-timeout", "90s"],
            timeout=150)
    text = r.stdout.decode()
    print(text[-2000:])
    assert r.returncode == 0 and "share: PASS" in text, f"{text[-3000:]}\n{r.stderr.decode()[-3000:]}"


def test_renewed_record_is_held_past_its_lock_and_never_redelivered(broker_factory, sconfig, tmp_path, members):
    """RENEW acknowledgements (KIP-1222; the Java client 4.4 sends them in ShareFetch and
    ShareAcknowledge v2): a member holds one record for 3.5 acquisition locks (3 s each) by
    renewing it, then accepts it. Its delivery count stays 1 each time the client hands it
    back after a renewal, no other member ever gets it (its lock never ran out), the final
    acceptance succeeds, and every record is acknowledged."""
    broker = broker_factory.start(config=sconfig)
    n = 20
    topic, group, want, cp = produced_topic(broker, tmp_path, n, "r")
    hold_ms = int(3.5 * LOCK_MS)
    holder = ShareMember(cp, tmp_path, broker.bootstrap, topic, group, "holder", mode="renew", hold_ms=hold_ms)
    members.append(holder)
    first = wait_until(lambda: next((ln for ln in list(holder.lines) if ln.startswith("HOLD ")), None), WAIT,
                       what="the holder holding a record")
    held = int(first.split()[1])
    other = ShareMember(cp, tmp_path, broker.bootstrap, topic, group, "other")
    members.append(other)
    done = wait_until(lambda: [ln for ln in list(holder.lines) if ln.startswith(("HELD-ACCEPTED", "ACKFAIL"))],
                      hold_ms / 1000 + WAIT, interval=0.2, what="the holder accepting its held record")
    assert done == [f"HELD-ACCEPTED {held}"], f"{done}\n{holder.lines[-40:]}\n{holder.stderr()}"
    renewed = [ln.split() for ln in holder.lines if ln.startswith(f"RENEWED {held} ")]
    assert len(renewed) >= 2, f"the client handed the renewed record back {len(renewed)} times"
    assert {r[2] for r in renewed} == {"1"}, f"delivery counts after renewals: {renewed}"
    wait_until(lambda: values_of([holder, other]) >= want, WAIT, interval=0.5, what="every record delivered")
    assert held not in {off for (off, _, _) in other.records()}, "the renewed record went to another member"
    assert {c for (off, c, _) in holder.records() if off == held} == {1}
    wait_until(lambda: start_offset(broker, group, topic) == n, WAIT, interval=1.0, what="SPSO at the end offset")
    for m in members:
        assert m.stop() == 0, m.stderr()


def test_record_limit_acquires_only_what_the_member_may_take(broker_factory, tmp_path, members):
    """share.acquire.mode=record_limit (KIP-1206, ShareFetch v2) with max.poll.records=1: the
    broker never acquires more records for a member than it asked for, even inside one batch
    (the 20 records below are produced together). A member that takes one record and then
    stops polling holds at most the one its poll returned and one its client fetched ahead; a
    second member gets every other record at delivery count 1, one per poll, long before the
    holder's locks (120 s) could expire."""
    broker = broker_factory.start(config=long_lock_config(tmp_path))
    n = 20
    topic, group, want, cp = produced_topic(broker, tmp_path, n, "l")
    holder = ShareMember(cp, tmp_path, broker.bootstrap, topic, group, "holder", mode="limit1hold")
    members.append(holder)
    wait_until(lambda: holder.has("HOLDING"), WAIT, what="the holder holding a record")
    assert len(holder.records()) == 1 and holder.has("POLLED 1"), holder.lines
    held = holder.records()[0][0]
    other = ShareMember(cp, tmp_path, broker.bootstrap, topic, group, "other", mode="limit1")
    members.append(other)
    wait_until(lambda: len(other.records()) >= n - 2, WAIT, interval=0.2, what="the other records delivered")
    time.sleep(1.0)
    got = other.records()
    polled = [int(ln.split()[1]) for ln in other.lines if ln.startswith("POLLED ")]
    assert polled and max(polled) == 1, f"records per poll: {polled}"
    assert held not in {off for (off, _, _) in got}
    assert all(c == 1 for (_, c, _) in got), got
    assert len(got) in (n - 2, n - 1), f"{len(got)} of {n}"
    for m in members:
        assert m.stop() == 0, m.stderr()
