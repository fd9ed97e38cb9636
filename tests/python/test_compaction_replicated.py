"""Contract: compaction of a *replicated* compacted topic (RF 3, Raft per partition) must not
lose a key's latest value on any replica — three sluice brokers on loopback
(`cluster_support.SluiceCluster`, every process owned by PID), real clients (confluent-kafka),
a broker config that runs the compactor every 200 ms, topics with 4 KiB segments, dirty ratio
0.01 and no compaction lag, so that each replica's compactor removes whole batches from its
sealed segments while Raft counts one entry per batch. Every workload takes more batches than
a Raft window holds (`RAFT_WINDOW_BATCHES` = 4096, plus the 1,024 after which a moved floor is
saved: core/src/limits.rs), so a replica's saved Raft floor is above offset 0 and a broker
that only compacts below its floor still compacts — except the shape
"fewer-batches-than-a-window", where only a floor moved up to the sealed segments lets them
be cleaned.

  test_a_compacted_replicated_topic_survives_a_restart_of_every_broker[how-shape]:
    a few dozen keys updated thousands of times in batches of 5 records (acks=all), or (shape
    "one-record-batches") keys written once then hot keys updated in one-record batches, or
    (shape "fewer-batches-than-a-window") the same keys updated 40 times in batches of 5; once
    every replica compacted, all three brokers are stopped (SIGTERM / kill -9) and restarted.
    A consumer from the beginning must see every key with its latest acknowledged value, the
    high watermark must not go back, no offset may be read with two different records, each
    replica's own files must still hold every key's latest value and its log end, and
    producing still works. (Bug A: the Raft window rebuilt at open counts batch headers from
    the saved floor and stops at the first batch compaction removed: the log is cut there, or
    the replica cannot open at all.)
  test_a_follower_down_while_its_leader_compacts_catches_up_with_every_key: the follower holds
    20 updates of the hot keys (checked in its files), then is stopped; the leader takes 20 more
    (all later removed, so the follower held batches the leader's compaction folds into gap
    batches) and more one-record batches than its Raft window holds: keys written
    once early (their only value must survive compaction) and many updates of a few hot keys;
    the leader compacts; the follower returns, must rejoin the ISR, its own files must hold
    every key's latest value, and it is then made the partition's only replica
    (kafka-reassign-partitions to [follower], RF 3 -> 1): a consumer from the beginning must
    see every early key and every hot key's latest value from it alone. (Bug B: catch-up below
    the leader's window counts batches and stops at compaction's gaps; the follower then gets
    nothing, or a snapshot at the window floor and misses every record below it.)
  test_brokers_killed_one_after_another_while_a_compacted_topic_is_cleaned_lose_no_latest_value:
    KILLS rounds (default 4; `SLUICE_RCOMPACT_KILLS` for more): updates of the same 40 keys,
    then, after a random pause (seeded: the seed is printed), kill -9 of the leader or of a
    follower while the replicas compact and move their floors, more updates while it is down,
    its restart, a full ISR. Then a consumer from the beginning must see every key's latest
    acknowledged value, no offset with two records, and every replica's own files must hold
    every latest value.
  test_a_partition_moved_to_one_replica_survives_that_replicas_restart[SIGTERM|SIGKILL]:
    not about compaction (found while writing the test above; its topic is cleanup.policy=delete,
    as a compacted one fails on bug A first): an RF 3 partition reassigned to one of its followers alone
    (kafka-reassign-partitions, RF 3 -> 1) must be led by it again, with every record, after
    that broker's restart. (Bug C: the group reopens with its old three-voter membership and,
    the two others having dropped the partition, never elects a leader.)

On failure the message names what was lost (keys, offsets, high watermarks before and after),
a per-broker scan of the partition's segment files and raft-state (read-only: batches, records,
offset gaps, last offset, cleaner checkpoint, saved Raft floor, keys missing or stale on that
replica) and the brokers' distinct ERROR/WARN lines about the partition. Bounds: every loop
has a count and a deadline, brokers are stopped by PID by the cluster helper, data dirs live
under pytest's tmp_path.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import time
import uuid
from pathlib import Path

import pytest

from cluster_support import STOP_TIMEOUT, SluiceCluster, decode_batches, run_cluster
from history_check import History
from support import wait_until
from test_replication import end_offsets, low_watermark, read_everything, reassign

RAFT_WINDOW_BATCHES = 4096  # core/src/limits.rs
SEGMENT_BYTES = 4096
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(SEGMENT_BYTES),
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "min.insync.replicas": "2",
}
BROKER_CONFIG = (
    "log_retention_check_interval_ms = 200\n"
    # a follower down for longer leaves the ISR, so its return to it means "caught up"
    "replica_lag_time_max_ms = 1000\n"
)
HEALTH_TIMEOUT = 30.0


class CompactingCluster(SluiceCluster):
    """Three sluice brokers started with `--config` (the compactor every 200 ms)."""

    def __init__(self, work: Path):
        super().__init__(work)
        self.config = work / "sluice.toml"
        self.config.write_text(BROKER_CONFIG)

    def plan(self) -> None:
        super().plan()
        for node in self.nodes.values():
            node.argv += ["--config", str(self.config)]

    def stop(self, node_id: int, sig: int) -> None:
        """Stops one broker by PID with `sig`; SIGTERM must exit 0 (README: clean shutdown)."""
        node = self.nodes[node_id]
        assert node.alive(), f"node {node_id} is not running"
        node.proc.send_signal(sig)
        code = node.proc.wait(timeout=STOP_TIMEOUT)
        self.note(f"{signal.Signals(sig).name} node {node_id} (pid {node.proc.pid}): exit {code}")
        if sig == signal.SIGTERM:
            assert code == 0, f"node {node_id} exited {code} after SIGTERM\n{self.log_tail(node_id)}"

    def restart_all(self, ids: list) -> None:
        """Starts the stopped brokers `ids` together (one alone may wait for a metadata quorum)."""
        for i in ids:
            assert not self.nodes[i].alive(), f"node {i} still runs"
            self._spawn(self.nodes[i])
        for i in ids:
            self._wait_ready(self.nodes[i], self.start_timeout)
            self.note(f"restarted node {i} (pid {self.nodes[i].proc.pid})")
        self.settle_controller(HEALTH_TIMEOUT)

    def part_dir(self, node_id: int, topic: str) -> Path:
        return self.work / f"broker-{node_id}" / f"{topic}-0"


@pytest.fixture
def cluster(request, tmp_path):
    yield from run_cluster(request, CompactingCluster(tmp_path / "cluster"))


# --- topic, producer, reads ----------------------------------------------------------

def create_compacted_topic(cluster, name: str, config: dict = TOPIC_CONFIG) -> dict:
    """An RF 3, min.insync.replicas 2, one-partition topic (compacted unless `config` says
    otherwise); waits until healthy."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    fut = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=3, config=config)],
                              operation_timeout=30, request_timeout=30)[name]
    fut.result(timeout=60)
    del admin, fut
    return wait_until(lambda: cluster.healthy(name, 1, 3), HEALTH_TIMEOUT, interval=0.25,
                      what=f"{name}: a leader and a full ISR (now {cluster.partitions(name)})")


class Acked:
    """What the producer got acknowledged: key -> (offset, value) of its highest offset."""

    def __init__(self):
        self.latest: dict = {}
        self.count = 0
        self.max_offset = -1
        self.errors: list = []

    def on_delivery(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        self.count += 1
        self.max_offset = max(self.max_offset, msg.offset())
        cur = self.latest.get(msg.key())
        if cur is None or msg.offset() > cur[0]:
            self.latest[msg.key()] = (msg.offset(), msg.value())


def produce(cluster, topic: str, records, acked: Acked, batch: int, timeout: float = 60.0) -> None:
    """Idempotent acks=all confluent-kafka producer, `batch` records per batch at most."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 1, "batch.num.messages": batch, "compression.type": "none",
                  "message.timeout.ms": int(timeout * 1000)})
    n = 0
    for key, value in records:
        for _ in range(200):
            try:
                p.produce(topic, key=key, value=value, partition=0, on_delivery=acked.on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        else:
            raise AssertionError("librdkafka's queue stayed full for 10 s")
        n += 1
        if n % 100 == 0:
            p.poll(0)
    left = p.flush(timeout)
    p.close()
    del p
    assert left == 0 and not acked.errors, (f"{left} records undelivered after {timeout}s; "
                                            f"errors {acked.errors[:5]}")


def read_all(cluster, topic: str, history: History, reader: str) -> list:
    """[(offset, key, value)] of partition 0 from the beginning to the high watermark."""
    out = read_everything(cluster.bootstrap, topic, History(), partitions=1, timeout=40)[0]
    history.new_session(reader)
    for off, k, v in out:
        history.read(reader, 0, off, k, v)
    return out


def lost_keys(records: list, acked: Acked) -> tuple:
    """(keys absent, keys whose last value read is not the latest acknowledged) as
    {key: (acked offset, acked value, what was read)}."""
    seen = {}
    for off, k, v in records:
        seen[k] = (off, v)
    absent = {k: want for k, want in acked.latest.items() if k not in seen}
    stale = {k: (want[0], want[1], seen[k]) for k, want in acked.latest.items()
             if k in seen and seen[k][1] != want[1]}
    return absent, stale


def describe_loss(records: list, acked: Acked, what: str) -> str:
    absent, stale = lost_keys(records, acked)
    if not absent and not stale:
        return ""
    offs = [o for o, _, _ in records]
    first_absent = sorted(absent.items(), key=lambda kv: kv[1][0])[:8]
    return (f"{what}: {len(absent)} of {len(acked.latest)} keys absent, {len(stale)} with an older value; "
            f"{len(records)} records read, offsets {offs[:1]}..{offs[-1:]}; acknowledged {acked.count} records, "
            f"last at offset {acked.max_offset}.\n  absent (key: acked offset, value): "
            f"{[(k, o, v) for k, (o, v) in first_absent]}\n  stale (key: acked offset, value, read (offset, value)): "
            f"{list(stale.items())[:5]}")


# --- read-only scan of a replica's segment files -------------------------------------------

def scan_segments(part: Path) -> dict:
    """Batches and records of a partition directory's `.log` files (stops at the first bytes
    that are not a whole v2 batch: an active segment's preallocated or torn tail). The broker
    compacts and rolls while the files are read, so a segment can vanish between the listing and
    its read: the scan starts again from a fresh listing (a bounded number of times)."""
    for _ in range(50):
        try:
            return _scan_segments_once(part)
        except FileNotFoundError:
            time.sleep(0.05)
    return _scan_segments_once(part)


def _scan_segments_once(part: Path) -> dict:
    out = {"segments": 0, "batches": 0, "records": [], "bases": [], "gaps": 0, "last": -1}
    if not part.is_dir():
        out["missing"] = True
        return out
    expect = None
    for seg in sorted(part.glob("*.log")):
        out["segments"] += 1
        data = seg.read_bytes()
        pos = 0
        for _ in range(1_000_000):
            if pos + 61 > len(data):
                break
            base, blen = struct.unpack_from(">qi", data, pos)
            end = pos + 12 + blen
            if blen < 49 or end > len(data) or data[pos + 16] != 2:
                break
            last_delta = struct.unpack_from(">i", data, pos + 23)[0]
            if expect is not None and base > expect:
                out["gaps"] += 1
            out["batches"] += 1
            out["bases"].append(base)
            # a sluice control batch takes no offset (lastOffsetDelta -1): the next starts at its base
            expect = base + last_delta + 1
            out["last"] = max(out["last"], base + last_delta)
            try:
                out["records"].extend(decode_batches(data[pos:end]))
            except (AssertionError, ValueError, IndexError, struct.error):
                pass
            pos = end
    return out


def raft_floor(part: Path) -> str:
    """The Raft floor (index, next offset) and commit index saved in the partition's `raft-state`
    file (storage/src/raft_state.rs, version 1: magic, version, term, vote, commit, floor index,
    floor term, floor next offset, ...), for failure messages; read-only."""
    try:
        b = (part / "raft-state").read_bytes()
        if b[:5] != b"SLRS\x01":
            return "raft-state of an unknown version"
        _term, _vote, commit, index, _fterm, nxt = struct.unpack_from(">QQQQQq", b, 5)
        return f"raft floor index {index} at offset {nxt}, commit {commit}"
    except (OSError, struct.error):
        return "no raft-state"


def replica_report(cluster, topic: str, acked: Acked) -> str:
    """One line per broker: what its segment files hold of the partition, and what is lost."""
    lines = []
    for i in cluster.ids:
        s = scan_segments(cluster.part_dir(i, topic))
        if s.get("missing"):
            lines.append(f"  node {i}: no partition directory")
            continue
        absent, stale = lost_keys(s["records"], acked)
        cp = cluster.part_dir(i, topic) / "cleaner-offset-checkpoint"
        lines.append(f"  node {i}: {s['segments']} segments, {s['batches']} batches ({s['gaps']} offset gaps), "
                     f"{len(s['records'])} records, last offset {s['last']}, cleaner checkpoint "
                     f"{cp.read_text().strip() if cp.exists() else None}, "
                     f"{raft_floor(cluster.part_dir(i, topic))}; {len(absent)} keys absent, "
                     f"{len(stale)} stale; first absent {sorted((o, k) for k, (o, _) in absent.items())[:4]}")
    return "per-replica segment files:\n" + "\n".join(lines)


def replica_problems(cluster, topic: str, acked: Acked, last_before: int, ids=None) -> list:
    """What each replica's own files lack: keys absent or stale, or a log end below `last_before`."""
    out = []
    for i in cluster.ids if ids is None else ids:
        s = scan_segments(cluster.part_dir(i, topic))
        absent, stale = lost_keys(s["records"], acked)
        if s["last"] < last_before:
            out.append(f"node {i}: its log ends at offset {s['last']}, below {last_before}")
        if absent or stale:
            out.append(f"node {i}: {len(absent)} keys absent, {len(stale)} with an older value "
                       f"(first absent {sorted((o, k) for k, (o, _) in absent.items())[:4]})")
    return out


def wait_replicas_hold_everything(cluster, topic: str, acked: Acked, last_before: int, what: str,
                                  ids=None, timeout: float = 15.0) -> None:
    """Waits (bounded) until every replica's files hold every key's latest value and reach
    `last_before`; fails naming what each replica lacks."""
    deadline = time.monotonic() + timeout
    problems: list = []
    for _ in range(int(timeout / 0.25) + 1):
        problems = replica_problems(cluster, topic, acked, last_before, ids)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert not problems, (f"{what}: after {timeout}s a replica's own log still lacks data:\n  "
                          + "\n  ".join(problems) + f"\n{replica_report(cluster, topic, acked)}\n"
                          + log_evidence(cluster, topic))


def log_evidence(cluster, topic: str, limit: int = 4) -> str:
    """The brokers' ERROR/WARN log lines about the partition, a Raft group, catch-up or a snapshot
    (distinct messages, first few each, with their count and first time)."""
    out = []
    for i in cluster.ids:
        try:
            text = cluster.nodes[i].log_path.read_text(errors="replace")
        except OSError:
            continue
        distinct: dict = {}  # message without its timestamp -> (first timestamp, count)
        for ln in text.splitlines():
            if (" ERROR " in ln or " WARN " in ln or "snapshot" in ln) and (
                    f"{topic}-0" in ln or "raft group" in ln or "catch-up" in ln or "snapshot" in ln):
                stamp, _, msg = ln.partition(" ")
                first, n = distinct.get(msg, (stamp, 0))
                distinct[msg] = (first, n + 1)
        lines = [f"{n}x from {first}: {msg}" for msg, (first, n) in list(distinct.items())[:limit]]
        out.append(f"  node {i} ({text.count('--- run ')} runs): " + ("\n    ".join(lines) or "none"))
    return "broker logs (ERROR/WARN about the partition):\n" + "\n".join(out)


def cleaner_checkpoint(cluster, node_id: int, topic: str) -> int:
    cp = cluster.part_dir(node_id, topic) / "cleaner-offset-checkpoint"
    try:
        return int(cp.read_text().strip() or -1)
    except (OSError, ValueError):
        return -1


def compacted(cluster, node_id: int, topic: str, acked: Acked) -> bool:
    """The replica's compactor ran and removed records: a cleaner checkpoint, and fewer data
    records in its files than were acknowledged. (Whether removed batches leave offset gaps or
    stand-in control batches is the broker's design; either way each removed batch was a Raft
    entry.)"""
    return (cleaner_checkpoint(cluster, node_id, topic) > 0
            and len(scan_segments(cluster.part_dir(node_id, topic))["records"]) < acked.count)


# --- 1. every broker restarted after compaction ------------------------------------------

KEYS = 40
# 28,000 records in batches of 5: over 5,600 batches, more than RAFT_WINDOW_BATCHES + the 1,024
# batches after which a trimmed floor is saved (RAFT_FLOOR_SAVE_BATCHES), so a broker that only
# compacts below its saved Raft floor compacts too; hundreds of 4 KiB segments.
ROUNDS = 700


def updates(tag: str, rounds: int = ROUNDS):
    for r in range(rounds):
        for k in range(KEYS):
            yield f"key-{k:02d}".encode(), f"{tag}-key-{k:02d}-r{r:04d}-".encode() + b"x" * 20


# 1,600 records in batches of 5: 320 batches, far fewer than a Raft window holds, in some 25
# sealed segments: each replica's group moves its saved floor to the sealed segments' end so
# they are cleaned, as Kafka cleans a sealed segment (before, nothing was cleaned below
# ~5,000 batches).
SMALL_ROUNDS = 40

EARLY_KEYS = 30
HOT_KEYS = 10
HOT_BATCHES = RAFT_WINDOW_BATCHES + 1200  # one record each: the window holds at most 4096


# Hot-key updates the follower of test 2 has before its stop (and as many after it).
PRE_STOP = 20


def window_workload(tag: str) -> tuple:
    """(early, hot): keys written once, then HOT_BATCHES updates of HOT_KEYS keys — produced one
    record per batch, more batches than a Raft window holds."""
    early = [(f"early-{k:02d}".encode(), f"{tag}-early-{k:02d}-only-value".encode()) for k in range(EARLY_KEYS)]
    hot = [(f"hot-{n % HOT_KEYS}".encode(), f"{tag}-hot-{n % HOT_KEYS}-v{n:05d}".encode())
           for n in range(HOT_BATCHES)]
    return early, hot


def check_read(cluster, topic, history, acked, reader, hw_before) -> list:
    records = read_all(cluster, topic, history, reader)
    hw = end_offsets(cluster.bootstrap, topic, 1)[0]
    problems = []
    if hw < hw_before:
        problems.append(f"the high watermark went back from {hw_before} to {hw}")
    loss = describe_loss(records, acked, f"a consumer from the beginning ({reader})")
    if loss:
        problems.append(loss)
    if history.conflicts:
        problems.append(f"offsets read with two different records: {history.conflicts[:5]}")
    assert not problems, "\n".join(problems) + "\n" + replica_report(cluster, topic, acked)
    return records


def check_read_explained(cluster, topic, history, acked, reader, hw_before, context: str) -> list:
    """check_read, a failure (or an unreadable partition) explained with the replicas' files and
    the brokers' log lines."""
    try:
        return check_read(cluster, topic, history, acked, reader, hw_before)
    except Exception as e:  # the consumer's KafkaException too: the partition may be unreadable
        raise AssertionError(f"{context} (high watermark before: {hw_before}, {acked.count} records "
                             f"acknowledged, {len(acked.latest)} keys):\n{type(e).__name__}: {e}\n"
                             f"{replica_report(cluster, topic, acked)}\n{log_evidence(cluster, topic)}") from None


@pytest.mark.timeout(150)
@pytest.mark.parametrize("how,shape", [
    ("SIGTERM", "batches-of-5"),
    ("SIGKILL", "batches-of-5"),
    ("SIGKILL", "one-record-batches"),
    ("SIGKILL", "fewer-batches-than-a-window"),
])
def test_a_compacted_replicated_topic_survives_a_restart_of_every_broker(cluster, how, shape):
    sig = signal.Signals[how]
    topic = f"rcompact-all-{uuid.uuid4().hex[:8]}"
    create_compacted_topic(cluster, topic)
    acked, history = Acked(), History()
    if shape == "batches-of-5":
        records = list(updates("a"))
        produce(cluster, topic, records, acked, batch=5)
    elif shape == "fewer-batches-than-a-window":
        records = list(updates("a", rounds=SMALL_ROUNDS))
        produce(cluster, topic, records, acked, batch=5)
    else:
        early, hot = window_workload("a")
        records = early + hot
        produce(cluster, topic, records, acked, batch=1, timeout=120)
    assert acked.count == len(records)
    # Every replica compacts on its own: wait until each has removed records.
    wait_until(lambda: all(compacted(cluster, i, topic, acked) for i in cluster.ids), 40, interval=0.5,
               what=f"every replica's compactor removing records ({replica_report(cluster, topic, acked)})")
    hw_before = end_offsets(cluster.bootstrap, topic, 1)[0]
    before = check_read(cluster, topic, history, acked, "before-restart", hw_before)
    assert len(before) < acked.count, f"compaction visible to a consumer: {len(before)} of {acked.count} records"
    report_before = replica_report(cluster, topic, acked)
    for i in cluster.ids:  # what the restart must keep: every replica's files hold every latest value
        absent, stale = lost_keys(scan_segments(cluster.part_dir(i, topic))["records"], acked)
        assert not absent and not stale, f"node {i} lost keys before any restart\n{report_before}"

    for i in cluster.ids:
        cluster.stop(i, sig)
    cluster.restart_all(cluster.ids)
    healthy = None
    try:
        healthy = wait_until(lambda: cluster.healthy(topic, 1, 3), HEALTH_TIMEOUT, interval=0.25,
                             what=f"{topic}: a leader and a full ISR after restarting every broker "
                                  f"(now {cluster.partitions(topic)})")
    except AssertionError as e:
        raise AssertionError(f"{e}\nbefore the {how} of every broker:\n{report_before}\nafter the restart:\n"
                             f"{replica_report(cluster, topic, acked)}") from None
    cluster.note(f"metadata healthy after the restart, leader {healthy[0]}")
    check_read_explained(cluster, topic, history, acked, f"after-{how}", hw_before,
                         f"after the {how} and restart of every broker; before the stop every replica "
                         f"held every key's latest value:\n{report_before}\nnow")

    # Each replica on its own kept its log end and every key's latest value.
    wait_replicas_hold_everything(cluster, topic, acked, hw_before - 1, f"after the {how} and restart")

    # Producing still works, and the new values are read back with the old keys' latest, and
    # reach every replica.
    produce(cluster, topic, updates("b", rounds=10), acked, batch=5)
    check_read_explained(cluster, topic, history, acked, "after-more", hw_before,
                         f"producing after the {how} and restart of every broker")
    wait_replicas_hold_everything(cluster, topic, acked, acked.max_offset,
                                  f"records produced after the {how} and restart")


# --- 2. a follower down while its leader appends more than a window and compacts -----------

@pytest.mark.timeout(180)
def test_a_follower_down_while_its_leader_compacts_catches_up_with_every_key(cluster, tmp_path):
    topic = f"rcompact-follow-{uuid.uuid4().hex[:8]}"
    leaders = create_compacted_topic(cluster, topic)
    leader = leaders[0]
    st = cluster.partitions(topic)[0]
    follower = next(i for i in st.replicas if i != leader)
    acked, history = Acked(), History()
    produce(cluster, topic, [(b"before", b"before-stop")], acked, batch=1)
    # Updates of the hot keys on both sides of the stop: the leader's compaction removes them
    # all (the hot keys are written again later), so the follower's log ends inside a run of
    # removed batches: it has the first ones, the leader only a gap batch standing for all.
    pre = [(f"hot-{n % HOT_KEYS}".encode(), f"f-pre-{n}".encode()) for n in range(2 * PRE_STOP)]
    produce(cluster, topic, pre[:PRE_STOP], acked, batch=1)
    def holds_pre():
        return scan_segments(cluster.part_dir(follower, topic))["last"] >= PRE_STOP
    wait_until(holds_pre, HEALTH_TIMEOUT, interval=0.1,
               what=f"node {follower} holding the first {PRE_STOP} hot-key updates")

    cluster.kill(follower)
    wait_until(lambda: follower not in getattr(cluster.partitions(topic, leader).get(0), "isr", [follower]),
               HEALTH_TIMEOUT, interval=0.2, what=f"node {follower} out of the ISR while down")
    early, hot = window_workload("f")
    t0 = time.monotonic()
    produce(cluster, topic, pre[PRE_STOP:] + early + hot, acked, batch=1, timeout=120)
    produced_s = time.monotonic() - t0
    cluster.note(f"{acked.count} records in one-record batches acknowledged in {produced_s:.1f}s "
                 f"while node {follower} was down")
    assert acked.count == 1 + 2 * PRE_STOP + EARLY_KEYS + HOT_BATCHES
    # The leader compacts: its sealed segments lose the superseded hot batches.
    wait_until(lambda: compacted(cluster, leader, topic, acked), 40, interval=0.5,
               what=f"the leader {leader} compacting ({replica_report(cluster, topic, acked)})")
    hw_before = end_offsets(cluster.bootstrap, topic, 1)[0]
    records = read_all(cluster, topic, history, "leader")
    loss = describe_loss(records, acked, f"read from the leader {leader} before the follower returns")
    assert not loss, loss
    assert len(records) < acked.count, "compaction visible to a consumer"

    cluster.restart(follower)
    try:
        wait_until(lambda: follower in getattr(cluster.partitions(topic, leader).get(0), "isr", []),
                   HEALTH_TIMEOUT, interval=0.25,
                   what=f"node {follower} back in the ISR (now {cluster.partitions(topic, leader)})")
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nnode {follower} was down while its leader {leader} appended {acked.count} one-record "
            f"batches (more than RAFT_WINDOW_BATCHES = {RAFT_WINDOW_BATCHES}) and compacted them; it never "
            f"caught up (catch-up below the window stops at compaction's gaps).\n"
            f"{replica_report(cluster, topic, acked)}\n{log_evidence(cluster, topic)}") from None
    cluster.note(f"node {follower} back in the ISR")
    wait_replicas_hold_everything(cluster, topic, acked, acked.max_offset,
                                  f"node {follower} back in the ISR after catching up", ids=[follower])
    # Snapshot of the returned follower's own files (before it is made the only replica).
    report_follower = replica_report(cluster, topic, acked)

    # The caught-up follower alone: RF 3 -> 1 onto it, then read everything from it.
    reassign(cluster, tmp_path / "to-follower.json", topic, [follower])
    wait_until(lambda: (lambda s: s is not None and s.replicas == [follower] and s.leader == follower)(
        cluster.partitions(topic, follower).get(0)), HEALTH_TIMEOUT, interval=0.25,
        what=f"{topic}-0 on node {follower} alone (now {cluster.partitions(topic, follower)})")
    try:
        after = read_all(cluster, topic, history, f"follower-{follower}-alone")
        hw = end_offsets(cluster.bootstrap, topic, 1)[0]
    except AssertionError as e:
        raise AssertionError(f"reading from node {follower} alone: {e}\n{report_follower}") from None
    problems = []
    if hw < hw_before:
        problems.append(f"the high watermark went back from {hw_before} (leader {leader}) to {hw} (node {follower})")
    missing_early = [k for k, _ in early if k not in {r[1] for r in after}]
    if missing_early:
        problems.append(f"{len(missing_early)} of {EARLY_KEYS} keys written once, early (below the leader's "
                        f"window), are gone: {missing_early[:8]}")
    loss = describe_loss(after, acked, f"node {follower} alone")
    if loss:
        problems.append(loss)
    if history.conflicts:
        problems.append(f"offsets read with two different records: {history.conflicts[:5]}")
    assert not problems, ("\n".join(problems) + f"\nwhile it was a follower in the ISR:\n{report_follower}\n"
                          f"{log_evidence(cluster, topic)}")
    print(f"follower {follower} caught up: {len(after)} records, high watermark {hw}; produce took "
          f"{produced_s:.1f}s; events {cluster.events}")


# --- 3. a partition moved to one replica, then that replica restarted ------------------------

def group_log_lines(cluster, node_id: int, limit: int = 6) -> str:
    """The last run's log lines of node `node_id` about Raft group t*-p0 (open, leader)."""
    text = cluster.nodes[node_id].log_path.read_text(errors="replace")
    last_run = text.split("--- run ")[-1]
    lines = [ln for ln in last_run.splitlines() if "-p0" in ln and ("raft group" in ln or "raft leader" in ln)]
    return "\n    ".join(lines[-limit:]) or "none"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_partition_moved_to_one_replica_survives_that_replicas_restart(cluster, tmp_path, how):
    topic = f"rcompact-shrink-{uuid.uuid4().hex[:8]}"
    # not compacted: the restart of a compacted one fails on bug A first
    leader = create_compacted_topic(cluster, topic, {**TOPIC_CONFIG, "cleanup.policy": "delete"})[0]
    target = next(i for i in cluster.partitions(topic)[0].replicas if i != leader)
    acked, history = Acked(), History()
    produce(cluster, topic, [(f"k{n % 20}".encode(), f"v{n}".encode()) for n in range(200)], acked, batch=5)
    reassign(cluster, tmp_path / "to-one.json", topic, [target])
    wait_until(lambda: (lambda s: s is not None and s.replicas == [target] and s.leader == target)(
        cluster.partitions(topic, target).get(0)), HEALTH_TIMEOUT, interval=0.25,
        what=f"{topic}-0 on node {target} alone (now {cluster.partitions(topic, target)})")
    hw_before = end_offsets(cluster.bootstrap, topic, 1)[0]
    before = check_read(cluster, topic, history, acked, "moved", hw_before)
    floor_before = raft_floor(cluster.part_dir(target, topic))

    cluster.stop(target, signal.Signals[how])
    cluster.restart(target)
    try:
        wait_until(lambda: cluster.leader_of(topic, 0, target) == target and end_offsets(cluster.bootstrap, topic, 1),
                   HEALTH_TIMEOUT, interval=0.5, what=f"node {target}, the only replica, leading {topic}-0 again")
    except Exception as e:
        raise AssertionError(
            f"after RF 3 -> 1 onto node {target} and its {how} and restart, {topic}-0 has no leader: {e}\n"
            f"  metadata now: {cluster.partitions(topic, target)}\n  node {target} before: {floor_before}; now: "
            f"{raft_floor(cluster.part_dir(target, topic))}\n  node {target}'s Raft group after the restart:\n"
            f"    {group_log_lines(cluster, target)}") from None
    after = check_read_explained(cluster, topic, history, acked, "moved-restarted", hw_before,
                                 f"node {target}, the only replica, after its {how} and restart")
    assert [r[:2] for r in after] == [r[:2] for r in before], (
        f"node {target} serves other records after its restart: {len(after)} records, {len(before)} before")


# --- 4. a single-replica compacted topic moved to another broker -----------------------------

@pytest.mark.timeout(150)
def test_a_single_replica_log_compacted_before_its_move_reaches_the_new_broker_whole(cluster, tmp_path):
    """An RF 1 compacted topic, compacted on the direct path (its removed batches leave offset
    holes, no gap batches), then moved to another broker with kafka-reassign-partitions: the
    new replica must get every key's latest value at the same offsets, and the old broker's
    copy is gone once the move completes."""
    from confluent_kafka.admin import AdminClient, NewTopic
    topic = f"rcompact-move1-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    config = {**TOPIC_CONFIG, "min.insync.replicas": "1"}
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config=config)],
                        operation_timeout=30, request_timeout=30)[topic].result(timeout=60)
    del admin
    wait_until(lambda: cluster.healthy(topic, 1, 1), HEALTH_TIMEOUT, interval=0.25,
               what=f"{topic}: a leader (now {cluster.partitions(topic)})")
    source = cluster.partitions(topic)[0].replicas[0]
    target = next(i for i in cluster.ids if i != source)
    acked, history = Acked(), History()
    # Hot keys updated in every round, and every 25 rounds five keys written once: compaction
    # keeps those and the hot keys' last round, so holes open before, between and after them.
    records = []
    for r in range(150):
        records += [(f"hot-{k:02d}".encode(), f"m-hot-{k:02d}-r{r:03d}-".encode() + b"x" * 20) for k in range(40)]
        if r % 25 == 0:
            records += [(f"once-{r:03d}-{k}".encode(), f"m-once-{r:03d}-{k}".encode()) for k in range(5)]
    produce(cluster, topic, records, acked, batch=5)
    wait_until(lambda: compacted(cluster, source, topic, acked), 40, interval=0.5,
               what=f"node {source} compacting its single replica ({replica_report(cluster, topic, acked)})")
    holes = scan_segments(cluster.part_dir(source, topic))["gaps"]
    assert holes > 0, f"the direct path's compaction left no offset hole\n{replica_report(cluster, topic, acked)}"
    hw_before = end_offsets(cluster.bootstrap, topic, 1)[0]
    before = check_read(cluster, topic, history, acked, "before-move", hw_before)

    reassign(cluster, tmp_path / "move.json", topic, [target])
    wait_until(lambda: (lambda s: s is not None and s.replicas == [target] and s.leader == target)(
        cluster.partitions(topic, target).get(0)), HEALTH_TIMEOUT, interval=0.25,
        what=f"{topic}-0 on node {target} alone (now {cluster.partitions(topic, target)})")
    after = check_read_explained(cluster, topic, history, acked, "after-move", hw_before,
                                 f"after moving the compacted single replica from node {source} to {target}")
    latest_before = {k: (o, v) for o, k, v in before}
    latest_after = {k: (o, v) for o, k, v in after}
    assert latest_after == latest_before, (
        f"the moved replica serves other latest records: {len(latest_after)} keys, {len(latest_before)} before\n"
        f"{replica_report(cluster, topic, acked)}\n{log_evidence(cluster, topic)}")
    wait_replicas_hold_everything(cluster, topic, acked, hw_before - 1, "after the move", ids=[target])

    # The copy reopens over the holes (its log covers them with hole batches) after a kill -9.
    cluster.stop(target, signal.SIGKILL)
    cluster.restart(target)
    wait_until(lambda: cluster.leader_of(topic, 0, target) == target, HEALTH_TIMEOUT, interval=0.5,
               what=f"node {target} leading {topic}-0 again after its restart")
    again = check_read_explained(cluster, topic, history, acked, "after-restart", hw_before,
                                 f"node {target}, the moved replica, after its SIGKILL and restart")
    assert [r[:2] for r in again] == [r[:2] for r in after], "the moved replica serves other records after a restart"
    produce(cluster, topic, [(b"after-restart", b"appended")], acked, batch=1)
    check_read(cluster, topic, history, acked, "appended-after-restart", hw_before)


# --- 5. a single-replica log whose start moved, moved to another broker ----------------------

@pytest.mark.timeout(150)
def test_a_single_replica_log_whose_start_moved_reaches_the_new_broker_from_its_log_start(cluster, tmp_path):
    """An RF 1 topic (not compacted) whose log start DeleteRecords moved, then moved to another
    broker: the new replica serves every record from the log start on, at the same offsets."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic
    topic = f"rcompact-move-start-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    config = {"segment.bytes": str(SEGMENT_BYTES), "min.insync.replicas": "1"}
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1, config=config)],
                        operation_timeout=30, request_timeout=30)[topic].result(timeout=60)
    wait_until(lambda: cluster.healthy(topic, 1, 1), HEALTH_TIMEOUT, interval=0.25,
               what=f"{topic}: a leader (now {cluster.partitions(topic)})")
    source = cluster.partitions(topic)[0].replicas[0]
    target = next(i for i in cluster.ids if i != source)
    acked, history = Acked(), History()
    produce(cluster, topic, [(f"k{n}".encode(), f"v{n}".encode()) for n in range(2000)], acked, batch=5)
    # DeleteRecords to an offset inside a batch (batches of 5 records).
    start = 1203
    res = admin.delete_records([TopicPartition(topic, 0, start)], request_timeout=30)
    low = next(iter(res.values())).result(timeout=30).low_watermark
    assert low == start, f"DeleteRecords answered low watermark {low}"
    hw_before = end_offsets(cluster.bootstrap, topic, 1)[0]
    before = read_all(cluster, topic, history, "before-move")
    assert before and before[0][0] == start and len(before) == hw_before - start, (before[:2], len(before))

    reassign(cluster, tmp_path / "move.json", topic, [target])
    wait_until(lambda: (lambda s: s is not None and s.replicas == [target] and s.leader == target)(
        cluster.partitions(topic, target).get(0)), HEALTH_TIMEOUT, interval=0.25,
        what=f"{topic}-0 on node {target} alone (now {cluster.partitions(topic, target)})")
    after = read_all(cluster, topic, history, "after-move")
    from_start = [r for r in after if r[0] >= start]
    assert from_start == before, (
        f"after the move node {target} serves {len(from_start)} records from offset {start} "
        f"(first {from_start[:2]}), {len(before)} before; {len(after)} in all\n{log_evidence(cluster, topic)}")
    assert not history.conflicts, history.conflicts[:5]
    low_after = low_watermark(cluster, topic)
    # The original proposed its log start once the converted group was its: the copy's log
    # start moved there too (it holds the batch holding offset 1203 and a hole batch below).
    assert low_after == start and after[0][0] == start, (
        f"after the move the low watermark is {low_after} (was {start}), first record at {after[0][0]}")
    del admin


# --- 6. brokers killed one after another while a small compacted topic is cleaned -----------

KILLS = int(os.environ.get("SLUICE_RCOMPACT_KILLS", "4"))


@pytest.mark.timeout(90 + 60 * KILLS)
def test_brokers_killed_one_after_another_while_a_compacted_topic_is_cleaned_lose_no_latest_value(cluster):
    seed = int(os.environ.get("SLUICE_RCOMPACT_SEED", str(random.randrange(1 << 30))))
    print(f"seed {seed} (replay: SLUICE_RCOMPACT_SEED={seed})")
    rng = random.Random(seed)
    topic = f"rcompact-kills-{uuid.uuid4().hex[:8]}"
    create_compacted_topic(cluster, topic)
    acked, history = Acked(), History()
    for n in range(KILLS):
        # Some 14 segments of updates: sealed ones get cleaned (every 200 ms) and each
        # replica moves its saved Raft floor up to them, while the kill comes.
        produce(cluster, topic, updates(f"r{n}", rounds=SMALL_ROUNDS // 2), acked, batch=5)
        leader = cluster.leader_of(topic, 0)
        followers = [i for i in cluster.ids if i != leader]
        victim = leader if n % 2 == 0 or leader < 0 else rng.choice(followers)
        time.sleep(rng.uniform(0.0, 0.6))
        cluster.stop(victim, signal.SIGKILL)
        produce(cluster, topic, updates(f"d{n}", rounds=4), acked, batch=5)
        cluster.restart(victim)
        wait_until(lambda: cluster.healthy(topic, 1, 3), HEALTH_TIMEOUT, interval=0.25,
                   what=f"{topic}: a full ISR after the kill -9 of node {victim} in round {n} "
                        f"(now {cluster.partitions(topic)})\n{replica_report(cluster, topic, acked)}")
    wait_until(lambda: all(compacted(cluster, i, topic, acked) for i in cluster.ids), 40, interval=0.5,
               what=f"every replica's compactor removing records ({replica_report(cluster, topic, acked)})")
    hw = end_offsets(cluster.bootstrap, topic, 1)[0]
    assert hw == acked.max_offset + 1, f"high watermark {hw}, last acknowledged offset {acked.max_offset}"
    check_read_explained(cluster, topic, history, acked, "after-kills", hw,
                         f"after {KILLS} kill -9s (seed {seed})")
    wait_replicas_hold_everything(cluster, topic, acked, acked.max_offset, f"after {KILLS} kill -9s (seed {seed})")
