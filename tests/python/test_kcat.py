"""kcat (librdkafka's command-line client) against sluice.

Covers: `kcat -P` producing lines (plain and keyed), `kcat -C -o beginning -e`
reading them back in order, `kcat -L` listing the topic with its partition, and
`kcat -z CODEC` storing batches compressed with that codec (the kcat 1.7 /
librdkafka 2.0 that Debian and Ubuntu ship compresses with gzip or snappy only when
ApiVersions lists Produce v2, as Kafka 4.x lists it; otherwise it sends them
uncompressed without an error). A Produce v0-2 request closes its connection, as
on Kafka 4.4, and the broker goes on serving.
"""

import pytest
import shutil
import socket
import struct

from support import (api_versions, connection_closed, fetch_v4_request, kstr, parse_fetch_v4_single,
                     recv_frame, request_frame, run, unique_topic)

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


# Kafka's codec ids in a record batch's attributes (bits 0-2).
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def stored_codec(broker, topic: str) -> int:
    """The codec bits of the first batch of `topic` partition 0, read with a raw Fetch v4."""
    host, port = broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(fetch_v4_request(1, topic, 0, 0, max_wait_ms=1000))
        _corr, err, _hw, records = parse_fetch_v4_single(recv_frame(s))
    assert err == 0 and len(records) > 61, (err, len(records))
    (attributes,) = struct.unpack_from(">h", records, 21)  # baseOffset 8, length 4, epoch 4, magic 1, crc 4
    return attributes & 0x7


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_kcat_stores_batches_compressed_with_the_codec_asked(broker, codec):
    topic = unique_topic(f"kcatz-{codec}")
    line = ("x" * 2000 + "\n").encode()
    kcat(broker, "-P", "-t", topic, "-p", "0", "-z", codec, input=line * 20)
    assert stored_codec(broker, topic) == CODECS[codec], f"kcat sent {codec} batches uncompressed"
    out = kcat(broker, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q")
    assert out.splitlines() == ["x" * 2000] * 20


def test_produce_v0_to_v2_is_listed_but_closes_the_connection(broker):
    host, port = broker.bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        assert api_versions(s, 1)[0] == (0, 13), "Produce listed as Kafka 4.x lists it"
    for version in (0, 1, 2):
        body = struct.pack(">hi", 1, 1000) + struct.pack(">i", 1) + kstr("p") + struct.pack(">iii", 1, 0, 0)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(request_frame(0, version, 7, body))
            assert connection_closed(s, 10), f"Produce v{version} answered instead of closing"
    with socket.create_connection((host, int(port)), timeout=10) as s:
        assert 18 in api_versions(s, 2), "the broker serves other connections"
    assert broker.alive()
