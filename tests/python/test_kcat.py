"""kcat (librdkafka's command-line client) against sluice.

Covers: `kcat -P` producing lines (plain and keyed), `kcat -C -o beginning -e`
reading them back in order, and `kcat -L` listing the topic with its partition.
"""

import shutil

from support import run, unique_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")


def kcat(broker, *args, input=None, timeout=30):
    assert KCAT, "kcat is not installed (tests/run installs it with apt-get)"
    res = run([KCAT, "-b", broker.bootstrap, *args], timeout=timeout, input=input)
    assert res.returncode == 0, f"kcat {' '.join(args)} exited {res.returncode}: {res.stderr.decode()}"
    return res.stdout.decode()


def test_produce_consume_and_list(broker):
    topic = unique_topic("kcat")
    lines = [f"line {i} \u00e9\u4e2d" for i in range(20)]
    kcat(broker, "-P", "-t", topic, input=("\n".join(lines) + "\n").encode())

    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q")
    assert out.splitlines() == lines

    listing = kcat(broker, "-L")
    assert f'topic "{topic}" with 1 partitions' in listing, listing
    one = kcat(broker, "-L", "-t", topic)
    assert "partition 0, leader" in one, one


def test_keyed_lines_with_offsets(broker):
    topic = unique_topic("kcatk")
    kcat(broker, "-P", "-t", topic, "-K", ":", input=b"a:1\nb:2\na:3\n")
    out = kcat(broker, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o %k=%s\\n")
    assert out.splitlines() == ["0 a=1", "1 b=2", "2 a=3"]
