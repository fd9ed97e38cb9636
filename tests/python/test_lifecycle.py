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


def test_a_relative_data_dir_works_as_the_default_does(tmp_path):
    """`cargo run --release` uses `--data-dir ./data`: a relative path must serve, keep what it
    acknowledged across a restart and stop cleanly (it once failed every partition's directory
    fsync)."""
    import subprocess
    from confluent_kafka import Consumer, TopicPartition

    def start():
        proc = subprocess.Popen([str(SLUICE_BIN), "serve", "--listen", "127.0.0.1:0", "--metrics-listen", "",
                                 "--data-dir", "./data", "--cores", "1"], cwd=tmp_path,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(16):
            line = proc.stdout.readline().decode()
            if line.startswith("sluice ready"):
                return proc, line.split("listen=")[1].split()[0]
            if not line:
                break
        proc.kill()
        raise AssertionError(f"no ready line: {proc.stderr.read().decode()[-2000:]}")

    proc, addr = start()
    try:
        topic = unique_topic("reldir")
        p = Producer({"bootstrap.servers": addr, "acks": "all"})
        p.produce(topic, b"kept")
        assert p.flush(30) == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode()[-2000:]
    assert (tmp_path / "data").is_dir()
    proc, addr = start()
    try:
        c = Consumer({"bootstrap.servers": addr, "group.id": "reldir", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, 0, 0)])
        m = c.poll(30)
        assert m is not None and m.error() is None and m.value() == b"kept"
        c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
