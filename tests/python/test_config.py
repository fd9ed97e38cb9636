"""Configuration: bad files are refused with a message naming the key (and the line), `sluice
config check` validates without starting, flags override the file, and `topic_defaults` give
topics their defaults (visible through DescribeConfigs with the broker as the source)."""

from __future__ import annotations

import subprocess

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from conftest import SLUICE_BIN
from support import unique_topic


def run(args, timeout=20):
    return subprocess.run([str(SLUICE_BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def test_bad_config_files_name_the_key(tmp_path):
    cases = {
        "unknown key": ('listen = "127.0.0.1:0"\nbogus_key = 1\n', ["bogus_key", "line 2"]),
        "wrong type": ('listen = "127.0.0.1:0"\ncores = "two"\n', ["cores", "line 2"]),
        "out of range": ('listen = "127.0.0.1:0"\nnum_partitions = 0\n', ["num_partitions", "0"]),
        "bad address": ('listen = "nowhere"\n', ["listen", "nowhere"]),
        "spin out of range": ('shard_spin_before_park_us = 10001\n', ["shard_spin_before_park_us", "10001"]),
        "bad topic default": ('[topic_defaults]\n"retention.ms" = "soon"\n', ["retention.ms", "soon"]),
    }
    for name, (text, words) in cases.items():
        f = tmp_path / f"{name.replace(' ', '_')}.toml"
        f.write_text(text)
        for args in (["config", "check", str(f)], ["serve", "--config", str(f), "--data-dir", str(tmp_path / "d")]):
            r = run(args)
            err = r.stderr.decode()
            assert r.returncode != 0, f"{name}: {args} exited 0"
            assert len(err.strip().splitlines()) == 1, f"{name}: expected one line, got {err!r}"
            for w in words:
                assert w in err, f"{name}: {w!r} not in {err!r}"


def test_config_check_accepts_a_good_file(tmp_path):
    f = tmp_path / "ok.toml"
    f.write_text('listen = "127.0.0.1:0"\nnum_partitions = 3\n[topic_defaults]\n"log.retention.ms" = 1000\n')
    r = run(["config", "check", str(f)])
    assert r.returncode == 0, r.stderr
    assert b"ok" in r.stdout and b"num_partitions: 3" in r.stdout


def test_topic_defaults_and_flags_override_the_file(broker_factory, tmp_path):
    f = tmp_path / "broker.toml"
    # The file asks for port 1 (unusable); the --listen flag of the fixture must win.
    f.write_text('listen = "127.0.0.1:1"\nnum_partitions = 3\n'
                 '[topic_defaults]\n"log.retention.ms" = 123456\n"segment.bytes" = 1048576\n')
    broker = broker_factory.start(config=f)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    topic = unique_topic("defaults")
    admin.create_topics([NewTopic(topic, -1, -1)])[topic].result(timeout=30)
    md = admin.list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3, "num_partitions from the file"
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(timeout=30)
    assert configs["retention.ms"].value == "123456"
    assert configs["segment.bytes"].value == "1048576"
    assert configs["retention.bytes"].value == "-1", "Kafka's default where nothing is set"
    # A value set on the topic wins over the broker default.
    other = unique_topic("own")
    admin.create_topics([NewTopic(other, 1, 1, config={"retention.ms": "5000"})])[other].result(timeout=30)
    res2 = ConfigResource(ConfigResource.Type.TOPIC, other)
    assert admin.describe_configs([res2])[res2].result(timeout=30)["retention.ms"].value == "5000"
