"""Dynamic group configs (IncrementalAlterConfigs on a GROUP resource) with Kafka's own tools
and clients against the real binary.

Contract: Kafka's `kafka-configs --entity-type groups` (ConfigCommand) sets a group's configs,
describes them, is refused (with Kafka's message) a value outside the broker's bounds, deletes
one, and the configs survive a restart (they are metadata); a KafkaShareConsumer
(ShareMember.java) in a group whose `share.auto.offset.reset` is `earliest` reads the records
written before it joined while the broker's own setting is `latest`, and a consumer of another
group without the config does not.
"""

import os
import subprocess

import pytest

from support import create_topic, unique_topic, wait_until
from test_groups import produce
from test_security import config_command_libs
from test_share_groups import ShareMember, compile_member, members, values_of  # noqa: F401 (members: fixture)

JAVA = "java"
BROKER_CONFIG = (
    'share_auto_offset_reset = "latest"\n'
    "group_share_session_timeout_ms = 6000\n"
    "group_share_heartbeat_interval_ms = 500\n"
)

pytestmark = pytest.mark.skipif(config_command_libs() is None, reason="no Kafka tools jar (ConfigCommand): "
                                "tests/run installs it from tests/java/pom.xml")


def kafka_configs(bootstrap: str, *args):
    libs, cls = config_command_libs()
    cmd = [JAVA, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", f"{libs}{os.sep}*", cls,
           "--bootstrap-server", bootstrap, *args]
    r = subprocess.run(cmd, capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout.decode() + r.stderr.decode()


def configs_ok(bootstrap: str, *args) -> str:
    rc, out = kafka_configs(bootstrap, *args)
    assert rc == 0, out[-3000:]
    return out


def group(name: str) -> list:
    return ["--entity-type", "groups", "--entity-name", name]


@pytest.fixture
def sconfig(tmp_path):
    cfg = tmp_path / "sluice-gconf.toml"
    cfg.write_text(BROKER_CONFIG)
    return cfg


def test_kafka_configs_sets_describes_refuses_deletes_and_keeps_group_configs(broker_factory, sconfig):
    b = broker_factory.start(config=sconfig)
    bs = b.bootstrap
    g = group(unique_topic("gc"))
    configs_ok(bs, "--alter", "--add-config", "share.auto.offset.reset=earliest,share.record.lock.duration.ms=20000", *g)
    out = configs_ok(bs, "--describe", *g)
    assert "share.auto.offset.reset=earliest" in out and "share.record.lock.duration.ms=20000" in out, out
    assert "share.session.timeout.ms" not in out, f"only the group's own configs are listed: {out}"

    # Outside the broker's bounds (group.consumer.min.heartbeat.interval.ms: sluice's default
    # interval, 1 s; Kafka's is 5 s): refused with Kafka's message, nothing changes.
    rc, out = kafka_configs(bs, "--alter", "--add-config", "consumer.heartbeat.interval.ms=500", *g)
    assert rc != 0 and "must be greater than or equal to group.consumer.min.heartbeat.interval.ms" in out, out
    rc, out = kafka_configs(bs, "--alter", "--add-config", "share.record.lock.duration.ms=61000", *g)
    assert rc != 0 and "group.share.max.record.lock.duration.ms" in out, out
    out = configs_ok(bs, "--describe", *g)
    assert "share.record.lock.duration.ms=20000" in out and "consumer.heartbeat.interval.ms" not in out, out

    # Delete one key; the other stays, and it survives a restart (metadata).
    configs_ok(bs, "--alter", "--delete-config", "share.record.lock.duration.ms", *g)
    b = broker_factory.restart(b)
    out = configs_ok(b.bootstrap, "--describe", *g)
    assert "share.auto.offset.reset=earliest" in out and "share.record.lock.duration.ms" not in out, out


def test_share_consumer_reads_from_the_start_because_of_the_group_config(broker_factory, sconfig, tmp_path,
                                                                         members):
    broker = broker_factory.start(config=sconfig)
    topic, early, late = unique_topic("gcshare"), unique_topic("early"), unique_topic("late")
    create_topic(broker.bootstrap, topic, 1)
    n = 50
    want = {v.decode() for v in produce(broker.bootstrap, topic, 1, n, "old").values()}
    configs_ok(broker.bootstrap, "--alter", "--add-config", "share.auto.offset.reset=earliest", *group(early))
    cp = compile_member(tmp_path)
    members.append(ShareMember(cp, tmp_path, broker.bootstrap, topic, early, "early"))
    members.append(ShareMember(cp, tmp_path, broker.bootstrap, topic, late, "late"))
    wait_until(lambda: values_of(members[:1]) >= want, 20.0, interval=0.2, what="the early group read every record")
    assert not members[1].records(), "the group without the config starts at the end (broker: latest)"
    for m in members:
        assert m.stop() == 0, m.stderr()
