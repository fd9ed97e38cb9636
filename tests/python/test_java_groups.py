"""Consumer groups with Apache Kafka's own Java tools (4.x jars fetched by tests/run).

Covers: the console consumer (org.apache.kafka.tools.consumer.ConsoleConsumer)
with --group reading from the beginning and committing on exit; kafka-consumer-groups
(org.apache.kafka.tools.consumer.group.ConsumerGroupCommand) --list, --describe
(CURRENT-OFFSET, LOG-END-OFFSET and LAG per partition after more was produced),
--describe --state, --delete-offsets and --delete.

The broker runs with `group_initial_rebalance_delay_ms = 0`; messages are
produced per partition with confluent-kafka so the expected numbers are exact.
"""


import pytest
from confluent_kafka import Producer

from support import create_topic, explain, unique_topic
from support import kafka_tool as support_kafka_tool
from test_groups import BROKER_CONFIG, produce

TOOL_TIMEOUT = 90


def kafka_tool(main_class: str, *args, input=None):
    return support_kafka_tool(main_class, *args, timeout=TOOL_TIMEOUT, input=input)


def groups(broker, *args):
    return kafka_tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                      "--bootstrap-server", broker.bootstrap, *args)


def table(res, first_col: str) -> list:
    """Rows of the whitespace-aligned table whose header starts with `first_col`, as dicts."""
    lines = res.stdout.decode().splitlines()
    for i, line in enumerate(lines):
        cols = line.split()
        if cols and cols[0] == first_col:
            rows = []
            for row in lines[i + 1:]:
                vals = row.split()
                if not vals:
                    break
                assert len(vals) == len(cols), f"row {row!r} does not match header {line!r}"
                rows.append(dict(zip(cols, vals)))
            return rows
    raise AssertionError(f"no table with a {first_col} column\n{explain(res)}")


@pytest.fixture
def gbroker(broker_factory, tmp_path):
    cfg = tmp_path / "sluice-groups.toml"
    cfg.write_text(BROKER_CONFIG)
    return broker_factory.start(config=cfg)


def test_console_consumer_group_describe_lag_list_delete(gbroker):
    topic, group = unique_topic("jgrp"), unique_topic("jg")
    create_topic(gbroker.bootstrap, topic, 3)
    first = produce(gbroker.bootstrap, topic, 3, 10, "one")

    res = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer",
                     "--bootstrap-server", gbroker.bootstrap, "--topic", topic,
                     "--group", group, "--from-beginning", "--max-messages", str(len(first)),
                     "--timeout-ms", "30000")
    assert "Processed a total of 30 messages" in res.stderr.decode(), explain(res)
    assert sorted(res.stdout.decode().splitlines()) == sorted(v.decode() for v in first.values())

    # More after the group's commit: lag 2, 3, 4.
    extra = {0: 2, 1: 3, 2: 4}
    pr = Producer({"bootstrap.servers": gbroker.bootstrap, "enable.idempotence": False})
    for p, n in extra.items():
        for i in range(n):
            pr.produce(topic, value=f"two-{p}-{i}".encode(), partition=p)
    assert pr.flush(30) == 0

    res = groups(gbroker, "--list")
    assert res.returncode == 0, explain(res)
    assert group in res.stdout.decode().split(), explain(res)

    res = groups(gbroker, "--describe", "--group", group)
    assert res.returncode == 0, explain(res)
    rows = {int(r["PARTITION"]): r for r in table(res, "GROUP") if r["TOPIC"] == topic}
    got = {p: (r["CURRENT-OFFSET"], r["LOG-END-OFFSET"], r["LAG"]) for p, r in rows.items()}
    want = {p: ("10", str(10 + n), str(n)) for p, n in extra.items()}
    assert got == want, explain(res)
    assert all(r["GROUP"] == group and r["CONSUMER-ID"] == "-" for r in rows.values()), explain(res)
    assert "has no active members" in (res.stdout + res.stderr).decode(), explain(res)

    res = groups(gbroker, "--describe", "--group", group, "--state")
    assert res.returncode == 0, explain(res)
    [state] = table(res, "GROUP")
    assert (state["GROUP"], state["STATE"], state["#MEMBERS"]) == (group, "Empty", "0"), explain(res)

    # --delete-offsets for the topic, then the group itself.
    res = groups(gbroker, "--delete-offsets", "--group", group, "--topic", topic)
    assert res.returncode == 0, explain(res)
    rows = table(res, "TOPIC")
    assert sorted((r["TOPIC"], r["PARTITION"], r["STATUS"]) for r in rows) == \
        [(topic, str(p), "Successful") for p in range(3)], explain(res)
    res = groups(gbroker, "--describe", "--group", group, "--offsets")
    assert res.returncode == 0, explain(res)
    assert topic not in res.stdout.decode(), explain(res)

    res = groups(gbroker, "--delete", "--group", group)
    assert res.returncode == 0, explain(res)
    assert f"Deletion of requested consumer groups ('{group}') was successful." in res.stdout.decode(), \
        explain(res)
    res = groups(gbroker, "--list")
    assert res.returncode == 0, explain(res)
    assert group not in res.stdout.decode().split(), explain(res)
