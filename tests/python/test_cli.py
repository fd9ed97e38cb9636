"""The admin CLI (`sluice topic|group|produce|consume`) against a running sluice.

Covers: topic create/list/describe/alter-config/delete with their tables, JSON and
exit codes (1 naming the Kafka error, 2 usage, 3 cannot connect); produce with
keys and headers and consume back byte-exact in text and JSON (including bytes
that are not UTF-8); keyed records landing on the partition Kafka's default
partitioner (murmur2) picks, checked against librdkafka's murmur2 partitioner;
consuming as a group, then `group describe` showing committed offsets, log end
offsets and lag, resuming from the committed offsets, a live member's assignment,
`group list` and `group delete`.

The broker runs with `group_initial_rebalance_delay_ms = 0` so joins are quick.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from confluent_kafka import Producer

from conftest import SLUICE_BIN
from support import unique_topic, wait_until

TIMEOUT = 60


@pytest.fixture
def cbroker(broker_factory, tmp_path):
    cfg = tmp_path / "sluice-cli.toml"
    cfg.write_text("group_initial_rebalance_delay_ms = 0\n")
    return broker_factory.start(config=cfg)


def cli(broker, *args, input: bytes | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    cmd = [str(SLUICE_BIN), *args]
    if broker is not None:
        cmd += ["--bootstrap-server", broker.bootstrap]
    return subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          stdin=None if input is not None else subprocess.DEVNULL)


def ok(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}"
    return p.stdout.decode()


def table(text: str) -> list[dict]:
    """Parses an aligned table (header row, columns split on runs of 2+ spaces)."""
    import re
    lines = [l for l in text.splitlines() if l.strip()]
    head = re.split(r"\s{2,}", lines[0].strip())
    return [dict(zip(head, re.split(r"\s{2,}", l.strip()))) for l in lines[1:]]


# --- topics ------------------------------------------------------------------

def test_topic_lifecycle(cbroker):
    t = unique_topic("cli")
    assert ok(cli(cbroker, "topic", "create", t, "--partitions", "3", "--config", "retention.ms=60000")) \
        == f"Created topic {t}.\n"

    again = cli(cbroker, "topic", "create", t)
    assert again.returncode == 1
    assert b"TOPIC_ALREADY_EXISTS" in again.stderr

    rows = {r["TOPIC"]: r for r in table(ok(cli(cbroker, "topic", "list")))}
    assert rows[t]["PARTITIONS"] == "3" and rows[t]["REPLICATION-FACTOR"] == "1"
    listed = {x["topic"]: x for x in json.loads(ok(cli(cbroker, "topic", "list", "--json")))}
    assert listed[t]["partitions"] == 3 and listed[t]["internal"] is False
    assert listed[t]["topic_id"] == rows[t]["TOPIC-ID"] and len(rows[t]["TOPIC-ID"]) == 22

    text = ok(cli(cbroker, "topic", "describe", t))
    first, rest = text.split("\n", 1)
    assert first == f"Topic: {t}  TopicId: {rows[t]['TOPIC-ID']}  PartitionCount: 3  ReplicationFactor: 1"
    parts_text, cfg_text = rest.split("CONFIG", 1)
    parts = table(parts_text)
    assert [(p["PARTITION"], p["LEADER"], p["REPLICAS"], p["ISR"]) for p in parts] == \
        [("0", "0", "0", "0"), ("1", "0", "0", "0"), ("2", "0", "0", "0")]
    assert table("CONFIG" + cfg_text) == [{"CONFIG": "retention.ms", "VALUE": "60000",
                                           "SOURCE": "DYNAMIC_TOPIC_CONFIG"}]

    d = json.loads(ok(cli(cbroker, "topic", "describe", t, "--json")))
    assert len(d) == 1 and d[0]["topic_id"] == rows[t]["TOPIC-ID"]
    assert [p["leader"] for p in d[0]["partitions"]] == [0, 0, 0]
    cfgs = {c["name"]: c for c in d[0]["configs"]}
    assert cfgs["retention.ms"]["value"] == "60000" and cfgs["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert cfgs["cleanup.policy"]["source"] == "DEFAULT_CONFIG"

    assert ok(cli(cbroker, "topic", "alter-config", t, "--set", "max.message.bytes=200000",
                  "--delete", "retention.ms")) == f"Updated configs of topic {t}.\n"
    cfgs = {c["name"]: c for c in json.loads(ok(cli(cbroker, "topic", "describe", t, "--json")))[0]["configs"]}
    assert cfgs["max.message.bytes"]["value"] == "200000"
    assert cfgs["max.message.bytes"]["source"] == "DYNAMIC_TOPIC_CONFIG"
    assert cfgs["retention.ms"]["source"] != "DYNAMIC_TOPIC_CONFIG"

    bad = cli(cbroker, "topic", "alter-config", t, "--set", "no.such.config=1")
    assert bad.returncode == 1 and b"INVALID_CONFIG" in bad.stderr
    unknown = cli(cbroker, "topic", "describe", "no-such-topic-" + t)
    assert unknown.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in unknown.stderr

    assert ok(cli(cbroker, "topic", "delete", t)) == f"Deleted topic {t}.\n"
    assert t not in {x["topic"] for x in json.loads(ok(cli(cbroker, "topic", "list", "--json")))}
    gone = cli(cbroker, "topic", "delete", t)
    assert gone.returncode == 1 and b"UNKNOWN_TOPIC_OR_PARTITION" in gone.stderr


def test_usage_and_connection_errors(cbroker, tmp_path):
    assert cli(cbroker, "topic", "create").returncode == 2                       # missing NAME
    assert cli(cbroker, "topic", "create", "x", "--config", "novalue").returncode == 2
    assert cli(cbroker, "topic", "alter-config", "x").returncode == 2            # nothing to change
    assert cli(cbroker, "consume", "x", "--group", "g", "--partition", "0").returncode == 2
    assert cli(cbroker, "produce", "x", "--acks", "2", input=b"").returncode == 2
    # A port nobody listens on: bind one, close it, use it.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = cli(None, "topic", "list", "--bootstrap-server", f"127.0.0.1:{port}")
    assert p.returncode == 3, p.stderr
    assert b"cannot connect" in p.stderr


# --- produce / consume -------------------------------------------------------

LINES = [b"k1:hello", "k2:wörld ✓".encode(), b"k1:value:with:colons", b":empty key", b"k3:", b"k4:  spaces  "]


def test_produce_consume_roundtrip_text_and_json(cbroker):
    t = unique_topic("cli")
    ok(cli(cbroker, "topic", "create", t, "--partitions", "1"))
    data = b"\n".join(LINES) + b"\n"
    ok(cli(cbroker, "produce", t, "--key-separator", ":", "--header", "app=cli", "--header", "trace=a=b",
           input=data))
    out = cli(cbroker, "consume", t, "--from-beginning", "--max-messages", str(len(LINES)))
    values = [l.split(b":", 1)[1] for l in LINES]
    assert ok(out) == (b"\n".join(values) + b"\n").decode()
    assert out.stdout == b"\n".join(values) + b"\n"
    assert f"Processed a total of {len(LINES)} messages" in out.stderr.decode()

    recs = [json.loads(l) for l in ok(cli(cbroker, "consume", t, "--from-beginning", "--timeout-ms", "1500",
                                          "--format", "json")).splitlines()]
    assert len(recs) == len(LINES)
    now_ms = time.time() * 1000
    for i, (r, line) in enumerate(zip(recs, LINES)):
        k, v = line.split(b":", 1)
        assert r["topic"] == t and r["partition"] == 0 and r["offset"] == i
        assert r["key"].encode() == k and r["value"].encode() == v
        assert r["headers"] == [{"key": "app", "value": "cli"}, {"key": "trace", "value": "a=b"}]
        assert abs(r["timestamp"] - now_ms) < 120_000

    # --offset and --partition; --from-end sees nothing old.
    part = ok(cli(cbroker, "consume", t, "--partition", "0", "--offset", "4", "--timeout-ms", "1000"))
    assert part.encode() == values[4] + b"\n" + values[5] + b"\n"
    assert ok(cli(cbroker, "consume", t, "--from-end", "--timeout-ms", "500")) == ""

    # A line without the separator is a usage error.
    bad = cli(cbroker, "produce", t, "--key-separator", ":", input=b"no separator\n")
    assert bad.returncode == 2 and b"no key separator" in bad.stderr


def test_binary_values_and_acks(cbroker):
    t = unique_topic("cli")
    payload = [b"\xff\xfe raw", b"tab\there", b"", b"crlf"]
    ok(cli(cbroker, "produce", t, "--acks", "1", input=b"\n".join(payload[:3]) + b"\ncrlf\r\n"))
    out = cli(cbroker, "consume", t, "--from-beginning", "--max-messages", "4")
    assert out.returncode == 0 and out.stdout == b"\xff\xfe raw\ntab\there\n\ncrlf\n", out
    recs = [json.loads(l) for l in ok(cli(cbroker, "consume", t, "--from-beginning", "--max-messages", "4",
                                          "--format", "json")).splitlines()]
    assert recs[0]["value"] == {"base64": "//4gcmF3"} and recs[0]["key"] is None
    assert recs[1]["value"] == "tab\there" and recs[2]["value"] == ""
    # acks=0 gets no answer, but the records arrive.
    ok(cli(cbroker, "produce", t, "--acks", "0", input=b"late1\nlate2\n"))
    got = wait_until(lambda: cli(cbroker, "consume", t, "--offset", "4", "--timeout-ms", "500").stdout
                     == b"late1\nlate2\n", 10, what="acks=0 records")
    assert got


def test_keyed_records_use_kafkas_default_partitioner(cbroker):
    t = unique_topic("cli")
    ok(cli(cbroker, "topic", "create", t, "--partitions", "6"))
    keys = [f"key-{i}" for i in range(40)]
    ok(cli(cbroker, "produce", t, "--key-separator", "=", input="".join(f"{k}=v\n" for k in keys).encode()))
    recs = [json.loads(l) for l in ok(cli(cbroker, "consume", t, "--from-beginning", "--max-messages",
                                          str(len(keys)), "--format", "json")).splitlines()]
    ours = {r["key"]: r["partition"] for r in recs}
    assert len(set(ours.values())) > 1

    # librdkafka's murmur2 partitioner is the Java client's default for keyed records.
    p = Producer({"bootstrap.servers": cbroker.bootstrap, "partitioner": "murmur2_random"})
    theirs = {}

    def cb(err, msg):
        assert err is None, err
        theirs[msg.key().decode()] = msg.partition()

    for k in keys:
        p.produce(t, key=k.encode(), value=b"v", on_delivery=cb)
    assert p.flush(30) == 0
    assert ours == theirs


# --- groups ------------------------------------------------------------------

def describe(cbroker, group: str) -> dict:
    return json.loads(ok(cli(cbroker, "group", "describe", group, "--json")))


def test_group_consume_describe_lag_list_delete(cbroker):
    t = unique_topic("cli")
    g = unique_topic("grp")
    ok(cli(cbroker, "topic", "create", t, "--partitions", "2"))
    ok(cli(cbroker, "produce", t, "--partition", "0", input=b"a0\na1\na2\na3\n"))
    ok(cli(cbroker, "produce", t, "--partition", "1", input=b"b0\nb1\n"))

    first = cli(cbroker, "consume", t, "--group", g, "--from-beginning", "--timeout-ms", "3000")
    assert sorted(ok(first).splitlines()) == ["a0", "a1", "a2", "a3", "b0", "b1"]

    # Lag after producing more.
    ok(cli(cbroker, "produce", t, "--partition", "0", input=b"a4\na5\na6\n"))
    ok(cli(cbroker, "produce", t, "--partition", "1", input=b"b2\n"))
    d = describe(cbroker, g)
    assert d["state"] == "Empty" and d["members"] == []
    offs = {o["partition"]: o for o in d["offsets"]}
    assert (offs[0]["committed_offset"], offs[0]["log_end_offset"], offs[0]["lag"]) == (4, 7, 3)
    assert (offs[1]["committed_offset"], offs[1]["log_end_offset"], offs[1]["lag"]) == (2, 3, 1)

    text = ok(cli(cbroker, "group", "describe", g))
    assert text.startswith(f"Group: {g}  State: Empty")
    rows = table(text.split("\n\n")[1])
    assert [(r["TOPIC"], r["PARTITION"], r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) for r in rows] == \
        [(t, "0", "4", "7", "3"), (t, "1", "2", "3", "1")]
    assert f"Consumer group '{g}' has no active members." in text

    listed = {x["group"]: x for x in json.loads(ok(cli(cbroker, "group", "list", "--json")))}
    assert listed[g]["state"] == "Empty" and listed[g]["protocol_type"] == "consumer"
    assert g in {r["GROUP"] for r in table(ok(cli(cbroker, "group", "list")))}

    # Resume from the committed offsets; --max-messages commits exactly what was printed.
    again = cli(cbroker, "consume", t, "--group", g, "--max-messages", "3", "--timeout-ms", "5000")
    got = ok(again).splitlines()
    assert len(got) == 3 and set(got) <= {"a4", "a5", "a6", "b2"}
    d = describe(cbroker, g)
    assert sum(o["lag"] for o in d["offsets"]) == 1

    # A live member: state, assignment, and delete refused while it is there.
    member = subprocess.Popen([str(SLUICE_BIN), "consume", t, "--group", g, "--bootstrap-server",
                               cbroker.bootstrap], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        d = wait_until(lambda: (lambda x: x if x["state"] == "Stable" and x["members"] else None)(
            describe(cbroker, g)), 20, interval=0.2, what="a stable group with a member")
        (m,) = d["members"]
        assert m["assignment"] == [{"topic": t, "partitions": [0, 1]}] and m["assignment_version"] is not None
        assert {o["member_id"] for o in d["offsets"]} == {m["member_id"]}
        text = ok(cli(cbroker, "group", "describe", g))
        assert f"{t}:0,1" in text and m["member_id"] in text
        busy = cli(cbroker, "group", "delete", g)
        assert busy.returncode == 1 and b"NON_EMPTY_GROUP" in busy.stderr
        wait_until(lambda: sum(o["lag"] for o in describe(cbroker, g)["offsets"]) == 0, 20,
                   interval=0.3, what="the member to commit the last record")
    finally:
        member.send_signal(signal.SIGINT)
        out, err = member.communicate(timeout=30)
    assert member.returncode == 0, err
    assert b"Processed a total of 1 messages" in err
    wait_until(lambda: describe(cbroker, g)["state"] == "Empty", 10, what="the member to leave")

    assert ok(cli(cbroker, "group", "delete", g)) == f"Deleted group {g}.\n"
    assert g not in {x["group"] for x in json.loads(ok(cli(cbroker, "group", "list", "--json")))}
    gone = cli(cbroker, "group", "delete", g)
    assert gone.returncode == 1 and b"GROUP_ID_NOT_FOUND" in gone.stderr
    missing = cli(cbroker, "group", "describe", g)
    assert missing.returncode == 1 and b"GROUP_ID_NOT_FOUND" in missing.stderr
