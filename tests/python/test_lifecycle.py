"""Broker process lifecycle and configuration.

Covers: SIGINT stops the broker with exit code 0; a --config TOML file with
num_partitions sets the partition count of auto-created topics; with
auto_create_topics_enable = false a produce to an unknown topic fails and the
topic is not created; an unknown config key makes the broker exit non-zero
without printing the ready line.
"""

import signal

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from conftest import SLUICE_BIN
from support import run, unique_topic


def write_config(tmp_path, text: str):
    path = tmp_path / "sluice.toml"
    path.write_text(text)
    return path


def test_sigint_is_graceful(broker):
    assert broker.stop(signal.SIGINT) == 0, broker.stderr_tail()


def test_config_num_partitions_for_auto_created_topics(broker_factory, tmp_path):
    b = broker_factory.start(config=write_config(tmp_path, "num_partitions = 4\n"))
    topic = unique_topic("cfg4")
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": False})
    p.produce(topic, value=b"x")
    assert p.flush(15) == 0
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert len(md.topics[topic].partitions) == 4


def test_config_auto_create_disabled(broker_factory, tmp_path):
    b = broker_factory.start(config=write_config(tmp_path, "auto_create_topics_enable = false\n"))
    topic = unique_topic("noauto")
    errors = []
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": False,
                  "message.timeout.ms": 3000})
    p.produce(topic, value=b"x", on_delivery=lambda err, msg: errors.append(err))
    p.flush(15)
    assert len(errors) == 1 and errors[0] is not None, f"produce to unknown topic: {errors}"
    md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10)
    assert topic not in md.topics or md.topics[topic].error is not None


def test_unknown_config_key_is_an_error(tmp_path):
    cfg = write_config(tmp_path, "num_partitions = 1\nno_such_key = 5\n")
    res = run([str(SLUICE_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
               "--cores", "1", "--config", str(cfg)], timeout=20)
    assert res.returncode != 0, "broker accepted an unknown config key"
    assert b"sluice ready" not in res.stdout
    assert b"no_such_key" in res.stderr, res.stderr.decode()[-2000:]
