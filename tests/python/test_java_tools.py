"""Apache Kafka's own Java tools (4.x jars fetched by tests/run) against sluice.

Covers: kafka-topics (org.apache.kafka.tools.TopicCommand) --create, --list
and --describe; the console producer (org.apache.kafka.tools.ConsoleProducer)
with idempotence off and acks=all, keyed lines; the console consumer
(org.apache.kafka.tools.consumer.ConsoleConsumer) reading one partition from
the earliest offset without a group, for a fixed number of messages.
"""


import pytest

from support import explain, unique_topic
from support import kafka_tool as support_kafka_tool

TOOL_TIMEOUT = 90


def kafka_tool(main_class: str, *args, input=None):
    return support_kafka_tool(main_class, *args, timeout=TOOL_TIMEOUT, input=input)


def topics(broker, *args):
    return kafka_tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", broker.bootstrap, *args)


@pytest.fixture
def topic(broker):
    name = unique_topic("java")
    res = topics(broker, "--create", "--topic", name, "--partitions", "3", "--replication-factor", "1")
    assert res.returncode == 0, explain(res)
    assert f"Created topic {name}." in res.stdout.decode(), explain(res)
    return name


def test_topics_create_and_list(broker, topic):
    res = topics(broker, "--list")
    assert res.returncode == 0, explain(res)
    assert topic in res.stdout.decode().split(), explain(res)


def test_topics_describe(broker, topic):
    res = topics(broker, "--describe", "--topic", topic)
    if res.returncode != 0 and b"does not support DESCRIBE_CONFIGS" in res.stdout + res.stderr:
        # kafka-topics --describe also fetches topic configs; the broker has no DescribeConfigs yet.
        pytest.xfail("broker lacks DescribeConfigs: 'The node does not support DESCRIBE_CONFIGS'")
    assert res.returncode == 0, explain(res)
    out = res.stdout.decode()
    assert f"Topic: {topic}" in out and "PartitionCount: 3" in out, explain(res)
    for p in range(3):
        assert f"Partition: {p}" in out, explain(res)


def test_topics_create_existing_fails(broker, topic):
    res = topics(broker, "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1")
    assert res.returncode != 0, explain(res)
    assert "already exists" in (res.stdout + res.stderr).decode(), explain(res)


def test_console_producer_then_consumer(broker, topic):
    lines = [f"key{i % 3}:value {i}" for i in range(30)]
    res = kafka_tool("org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", broker.bootstrap,
                     "--topic", topic,
                     "--command-property", "enable.idempotence=false",
                     "--command-property", "acks=all",
                     "--reader-property", "parse.key=true",
                     "--reader-property", "key.separator=:",
                     input=("\n".join(lines) + "\n").encode())
    assert res.returncode == 0, explain(res)

    got = []
    for part in range(3):
        res = kafka_tool("org.apache.kafka.tools.consumer.ConsoleConsumer",
                         "--bootstrap-server", broker.bootstrap, "--topic", topic,
                         "--partition", str(part), "--offset", "earliest",
                         "--timeout-ms", "10000", "--max-messages", "30",
                         "--formatter-property", "print.key=true",
                         "--formatter-property", "key.separator=:")
        # With fewer than 30 messages in a partition the consumer ends by its timeout.
        assert "Processed a total of" in res.stderr.decode(), explain(res)
        got.append(res.stdout.decode().splitlines())
    assert sorted(sum(got, [])) == sorted(lines), f"per partition: {got}"
    for part_lines in got:  # order within a partition is send order
        assert part_lines == [l for l in lines if l in part_lines]
