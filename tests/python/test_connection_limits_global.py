"""`max_connections_per_ip` and `max_connections` hold for the whole broker, not per shard: with
`--cores 2` and a limit of 5, twenty connections from 127.0.0.1 (which SO_REUSEPORT spreads over
both shards) leave exactly 5 served; after those 5 close, new ones are served again.

(Before the count was shared, each shard admitted ceil(5 / 2) = 3, so up to 6 were served.)"""

from __future__ import annotations

import socket
import struct

from support import metrics_address, recv_frame, scrape, total, wait_until

LIMIT = 5
OPENED = 20


def served(sock: socket.socket, corr: int, timeout: float = 5.0) -> bool:
    """True if ApiVersions v0 is answered on `sock`; False if the broker closed it instead."""
    req = struct.pack(">hhih", 18, 0, corr, 4) + b"test"
    sock.settimeout(timeout)
    try:
        sock.sendall(struct.pack(">i", len(req)) + req)
        body = recv_frame(sock)
    except (ConnectionResetError, BrokenPipeError):
        return False
    except socket.timeout:
        raise AssertionError(f"connection {corr} neither answered nor closed within {timeout}s")
    return body is not None and struct.unpack(">i", body[:4])[0] == corr


def open_many(port: int, n: int) -> list:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def limit_config(tmp_path, key: str):
    cfg = tmp_path / f"{key}.toml"
    cfg.write_text(f"{key} = {LIMIT}\n")
    return cfg


def check_limit_holds_across_shards(broker_factory, tmp_path, key: str):
    broker = broker_factory.start(config=limit_config(tmp_path, key), cores=2,
                                  extra_args=("--metrics-listen", "127.0.0.1:0"))
    addr = metrics_address(broker)
    socks = open_many(broker.port, OPENED)
    try:
        answered = [s for i, s in enumerate(socks) if served(s, 100 + i)]
        m = scrape(addr)
        per_shard = [total(m, "sluice_connections_accepted_total", shard=str(s))
                     + total(m, "sluice_connections_refused_total", shard=str(s)) for s in (0, 1)]
        # The kernel spread the connections over both shards, so a per-shard count would have
        # let each shard admit its own share.
        assert sum(per_shard) == OPENED, f"accepted + refused per shard: {per_shard}"
        assert all(n > 0 for n in per_shard), f"every connection landed on one shard: {per_shard}"
        assert len(answered) == LIMIT, f"{len(answered)} of {OPENED} connections served with {key} = {LIMIT}"
        # The served ones stay served.
        for i, s in enumerate(answered):
            assert served(s, 200 + i), "an admitted connection stopped being served"
        assert total(scrape(addr), "sluice_connections") == LIMIT
        for s in answered:
            s.close()

        # Once the broker has seen them close, LIMIT new connections are served again ...
        def all_served_again():
            fresh = open_many(broker.port, LIMIT)
            ok = all(served(s, 300 + i) for i, s in enumerate(fresh))
            if not ok:
                for s in fresh:
                    s.close()
                return None
            return fresh
        fresh = wait_until(all_served_again, 15, interval=0.2, what=f"{LIMIT} new connections served")
        # ... and one more is still refused.
        extra = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
        socks += fresh + [extra]
        assert not served(extra, 400), f"connection {LIMIT + 1} served again after reconnecting"
    finally:
        for s in socks:
            s.close()
    assert broker.alive()


def test_per_ip_limit_is_broker_wide(broker_factory, tmp_path):
    check_limit_holds_across_shards(broker_factory, tmp_path, "max_connections_per_ip")


def test_total_limit_is_broker_wide(broker_factory, tmp_path):
    check_limit_holds_across_shards(broker_factory, tmp_path, "max_connections")
