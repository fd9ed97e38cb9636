"""Connection limits: `max_connections_per_ip` and `max_connections` refuse extra connections
(closed at once) while admitted clients keep working, and `connections_max_idle_ms` closes idle
connections. One shard (`--cores 1`), so the per-shard share of each limit is the limit."""

from __future__ import annotations

import socket
import struct
import time

from support import connection_closed, recv_frame, wait_until


def api_versions_ok(sock: socket.socket, corr: int) -> bool:
    """Sends ApiVersions v0 and reads the whole answer; true if it carries `corr`."""
    req = struct.pack(">hhih", 18, 0, corr, 4) + b"test"
    sock.sendall(struct.pack(">i", len(req)) + req)
    body = recv_frame(sock)
    return body is not None and len(body) >= 4 and struct.unpack(">i", body[:4])[0] == corr


def test_per_ip_limit_refuses_extra_connections(broker_factory, tmp_path):
    cfg = tmp_path / "limits.toml"
    cfg.write_text("max_connections_per_ip = 3\n")
    broker = broker_factory.start(config=cfg, cores=1)
    admitted = [socket.create_connection((broker.host, broker.port), timeout=5) for _ in range(3)]
    for i, s in enumerate(admitted):
        assert api_versions_ok(s, 100 + i)
    extra = socket.create_connection((broker.host, broker.port), timeout=5)
    assert connection_closed(extra, 5), "the 4th connection from one IP must be closed"
    # The admitted ones still work; closing one makes room.
    assert api_versions_ok(admitted[0], 200)
    admitted.pop().close()

    def room():
        s = socket.create_connection((broker.host, broker.port), timeout=5)
        s.settimeout(5)
        try:
            return api_versions_ok(s, 300)
        except OSError:
            return False
        finally:
            s.close()
    # The freed slot is released when the broker notices the close; poll briefly.
    s = socket.create_connection((broker.host, broker.port), timeout=5)
    s.close()
    assert wait_until(room, timeout=10, what="a slot after closing a connection")
    for s in admitted:
        s.close()


def test_idle_connections_are_closed(broker_factory, tmp_path):
    cfg = tmp_path / "idle.toml"
    cfg.write_text("connections_max_idle_ms = 1500\n")
    broker = broker_factory.start(config=cfg, cores=1)
    busy = socket.create_connection((broker.host, broker.port), timeout=5)
    idle = socket.create_connection((broker.host, broker.port), timeout=5)
    started = time.monotonic()
    for i in range(6):  # the busy one sends a request every 0.5 s: never idle
        assert api_versions_ok(busy, i)
        time.sleep(0.5)
    assert connection_closed(idle, 10), "an idle connection must be closed"
    assert time.monotonic() - started >= 1.4
    assert api_versions_ok(busy, 99), "a busy connection stays open"
    busy.close()
