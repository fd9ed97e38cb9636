"""Contract: three-broker clusters for the replication tests, sluice or Apache Kafka, behind one
interface, every process owned by PID.

`SluiceCluster` starts `sluice serve` brokers (node ids 0..N-1, `--cores 1`, distinct client and
peer ports, a data dir each, one cluster id, metrics off). `KafkaCluster` starts combined
broker+controller KRaft nodes (node ids 1..N, static voters, as bench/compare.d/kafka.sh) from
the Kafka server jars of `bench/compare --quick` (bench/.kafka/libs-*) or SLUICE_KAFKA_LIBS.
Both:
  - `start()` formats/starts every node and waits for each to be ready (deadline);
  - `kill(node)` sends SIGKILL to that node's PID and waits for it to be gone;
  - `restart(node)` starts it again with exactly the same command line and data dir;
  - `stop_all()` stops every node it started, by PID (SIGTERM, SIGKILL after a deadline);
  - `metadata(node=None)` is a raw Metadata v7 answer (brokers; per partition leader, leader
    epoch, replicas, ISR, offline replicas) from one node, so a test can ask a chosen broker;
  - with `netns=True` each node runs in a network namespace the cluster creates (veth pairs on
    a bridge it creates, a /24 of 10.213.x.0 free on this host) and `cut(node)` / `heal(node)`
    add/remove blackhole routes between that node and every other node in both directions,
    leaving the test process (on the bridge) able to reach every node. Everything created is
    deleted by `stop_all()`.
Nothing here picks a port outside loopback or the namespaces it created.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Queue
from typing import Optional

from support import REPO, kstr, recv_frame, request_frame

SLUICE_BIN = Path(os.environ.get("SLUICE_BIN", REPO / "target" / "release" / "sluice"))
START_TIMEOUT = float(os.environ.get("SLUICE_CLUSTER_START_TIMEOUT", "30"))
KAFKA_START_TIMEOUT = 120.0
CONTROLLER_SETTLE_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


_PICKED: set = set()


def kraft_cluster_id() -> str:
    """A random KRaft cluster id (base64 of 16 random bytes, as `kafka-storage random-uuid`)
    that does not start with "-": such an id reads as an option on the command lines of
    kafka-storage and `sluice serve` (1 in 64 ids), which failed a cluster start now and then."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, below the kernel's ephemeral range (ip_local_port_range, 32768+ by
    default), so that no client connection takes it as its source port while a killed node is
    down and the node can bind it again when restarted."""
    for _ in range(1000):
        port = random.randrange(20000, 32000)
        if port in _PICKED:
            continue
        s = socket.socket()
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        _PICKED.add(port)
        return port
    raise AssertionError("no free port in 20000..32000")


def kafka_server_libs() -> Optional[Path]:
    """The directory of Apache Kafka's server jars (kafka_2.13-*.jar), or None."""
    env = os.environ.get("SLUICE_KAFKA_LIBS")
    cands = [Path(env)] if env else sorted((REPO / "bench" / ".kafka").glob("libs-*"), reverse=True)
    for d in cands:
        if any(d.glob("kafka_2.13-*.jar")):
            return d
    return None


# --- raw Metadata v7 ---------------------------------------------------------

@dataclass
class PartitionState:
    error: int
    leader: int
    leader_epoch: int
    replicas: list
    isr: list
    offline: list


@dataclass
class ClusterMetadata:
    brokers: dict  # node id -> (host, port)
    controller: int
    topics: dict  # name -> (error, {partition: PartitionState})

    def partitions(self, topic: str) -> dict:
        err, parts = self.topics.get(topic, (3, {}))
        return parts if err == 0 else {}


class _Reader:
    def __init__(self, b: bytes):
        self.b, self.pos = b, 0

    def take(self, fmt: str):
        v = struct.unpack_from(fmt, self.b, self.pos)
        self.pos += struct.calcsize(fmt)
        return v if len(v) > 1 else v[0]

    def string(self) -> Optional[str]:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.b[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def int32s(self) -> list:
        n = self.take(">i")
        return [self.take(">i") for _ in range(max(n, 0))]


def metadata_v7(host: str, port: int, topics: Optional[list], timeout: float = 5.0) -> ClusterMetadata:
    """One Metadata v7 request (no auto-creation) on a fresh connection to host:port."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(kstr(t) for t in topics)
    body += b"\x00"  # allow_auto_topic_creation = false
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(request_frame(3, 7, 7, body, client_id="sluice-repl-test"))
        resp = recv_frame(s)
    assert resp is not None, f"{host}:{port} closed the connection instead of answering Metadata"
    r = _Reader(resp)
    _corr, _throttle = r.take(">ii")
    brokers = {}
    for _ in range(r.take(">i")):
        node = r.take(">i")
        h = r.string()
        p = r.take(">i")
        r.string()  # rack
        brokers[node] = (h, p)
    r.string()  # cluster id
    controller = r.take(">i")
    out = {}
    for _ in range(r.take(">i")):
        terr = r.take(">h")
        name = r.string()
        r.take(">b")  # is_internal
        parts = {}
        for _ in range(r.take(">i")):
            perr, idx, leader, epoch = r.take(">hiii")
            parts[idx] = PartitionState(perr, leader, epoch, r.int32s(), r.int32s(), r.int32s())
        out[name] = (terr, parts)
    return ClusterMetadata(brokers, controller, out)


# --- network namespaces --------------------------------------------------------

def _ip(*args, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.decode().strip()}")
    return res


def netns_available() -> Optional[str]:
    """None if this process can create network namespaces, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    name = f"slprobe{os.getpid() % 100000}"
    res = _ip("netns", "add", name, check=False)
    if res.returncode != 0:
        return f"cannot create a network namespace: {res.stderr.decode().strip()}"
    _ip("netns", "del", name, check=False)
    return None


class NetnsLab:
    """A bridge in this namespace (address .1 of a free 10.213.x.0/24) and one namespace per
    node, joined to the bridge by a veth pair; node i gets address .(10+i)."""

    def __init__(self, nodes: list):
        self.tag = f"{os.getpid() % 10000:04d}{random.randrange(36 ** 2):02x}"[:6]
        self.bridge = f"slbr{self.tag}"
        self.ns = {n: f"slns{self.tag}-{n}" for n in nodes}
        self.cuts: set = set()
        used = _ip("-4", "addr").stdout.decode()
        third = next(x for x in random.sample(range(1, 250), 249) if f"10.213.{x}." not in used)
        self.prefix = f"10.213.{third}"
        self.created_ns: list = []
        self.bridge_made = False
        try:
            self._build(nodes)
        except Exception:
            self.destroy()
            raise

    def addr(self, node: int) -> str:
        return f"{self.prefix}.{10 + list(self.ns).index(node)}"

    def _build(self, nodes: list) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.bridge_made = True
        _ip("addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, n in enumerate(nodes):
            ns = self.ns[n]
            _ip("netns", "add", ns)
            self.created_ns.append(ns)
            host_end, ns_end = f"slv{self.tag}{i}", f"slp{self.tag}{i}"
            _ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end)
            _ip("link", "set", ns_end, "netns", ns)
            _ip("link", "set", host_end, "master", self.bridge)
            _ip("link", "set", host_end, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr(n)}/24", "dev", ns_end)
            _ip("-n", ns, "link", "set", ns_end, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def wrap(self, node: int, argv: list) -> list:
        return ["ip", "netns", "exec", self.ns[node], *argv]

    def _routes(self, node: int, verb: str) -> None:
        for other in self.ns:
            if other == node:
                continue
            _ip("-n", self.ns[node], "route", verb, "blackhole", f"{self.addr(other)}/32", check=verb == "add")
            _ip("-n", self.ns[other], "route", verb, "blackhole", f"{self.addr(node)}/32", check=verb == "add")

    def cut(self, node: int) -> None:
        assert node not in self.cuts, f"node {node} is already cut"
        self._routes(node, "add")
        self.cuts.add(node)

    def heal(self, node: int) -> None:
        self._routes(node, "del")
        self.cuts.discard(node)

    def destroy(self) -> None:
        for ns in self.created_ns:  # deleting a namespace deletes its veth end and the pair
            _ip("netns", "del", ns, check=False)
        self.created_ns = []
        if self.bridge_made:
            _ip("link", "del", self.bridge, check=False)
            self.bridge_made = False


# --- nodes and clusters --------------------------------------------------------

@dataclass
class Node:
    node_id: int
    host: str
    port: int
    argv: list
    log_path: Path
    proc: Optional[subprocess.Popen] = None
    lines: list = field(default_factory=list)
    runs: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _stop_proc(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class Cluster:
    side = "?"
    first_id = 0

    def __init__(self, work: Path, brokers: int = 3, netns: bool = False):
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.ids = list(range(self.first_id, self.first_id + brokers))
        self.lab: Optional[NetnsLab] = NetnsLab(self.ids) if netns else None
        self.nodes: dict = {}
        self.events: list = []  # (monotonic time, what) for failure messages

    # the subclass fills self.nodes in plan() and knows how to tell a node is ready
    def plan(self) -> None:
        raise NotImplementedError

    def _spawn(self, node: Node) -> None:
        raise NotImplementedError

    @staticmethod
    def _popen_logged(node: Node, header: str, stdout) -> None:
        """Starts the node's next run with a header line in its log; stderr always goes to the log,
        stdout to `stdout` (None: the log too)."""
        node.runs += 1
        with open(node.log_path, "ab") as log:
            log.write(f"--- run {node.runs} at {time.strftime('%T')}{header}\n".encode())
            log.flush()
            node.proc = subprocess.Popen(node.argv, stdin=subprocess.DEVNULL,
                                         stdout=log if stdout is None else stdout, stderr=log)

    def _wait_ready(self, node: Node, timeout: float) -> None:
        raise NotImplementedError

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes.values())

    def bootstrap_of(self, ids) -> str:
        return ",".join(self.nodes[i].address for i in ids)

    def note(self, what: str) -> None:
        self.events.append((round(time.monotonic(), 3), what))

    def start(self) -> "Cluster":
        self.plan()
        for node in self.nodes.values():
            self._spawn(node)
        for node in self.nodes.values():
            self._wait_ready(node, self.start_timeout)
        self.note("cluster started")
        return self

    def kill(self, node_id: int) -> None:
        node = self.nodes[node_id]
        assert node.alive(), f"node {node_id} is not running"
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=STOP_TIMEOUT)
        self.note(f"kill -9 node {node_id} (pid {node.proc.pid})")

    def restart(self, node_id: int) -> None:
        node = self.nodes[node_id]
        assert not node.alive(), f"node {node_id} still runs"
        self._spawn(node)
        self._wait_ready(node, self.start_timeout)
        self.note(f"restarted node {node_id} (pid {node.proc.pid})")

    def cut(self, node_id: int) -> None:
        assert self.lab is not None, "cut needs netns=True"
        self.lab.cut(node_id)
        self.note(f"cut node {node_id} from the others")

    def heal(self, node_id: int) -> None:
        assert self.lab is not None, "heal needs netns=True"
        self.lab.heal(node_id)
        self.note(f"healed node {node_id}")

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.proc is not None:
                _stop_proc(node.proc, signal.SIGTERM, STOP_TIMEOUT)
        if self.lab is not None:
            self.lab.destroy()

    def log_tail(self, node_id: int, lines: int = 30) -> str:
        try:
            text = self.nodes[node_id].log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def crashed(self) -> list:
        """Nodes that died without being killed by the test (their last run exited)."""
        return [n.node_id for n in self.nodes.values()
                if n.proc is not None and n.proc.poll() is not None and n.proc.returncode != -signal.SIGKILL]

    # --- metadata ------------------------------------------------------------

    def metadata(self, node_id: Optional[int] = None, topics: Optional[list] = None) -> ClusterMetadata:
        """Metadata from `node_id`, or from the first live node that answers."""
        order = [node_id] if node_id is not None else [i for i in self.ids if self.nodes[i].alive()]
        last = None
        for i in order:
            n = self.nodes[i]
            try:
                return metadata_v7(n.host, n.port, topics)
            except (OSError, AssertionError, struct.error) as e:
                last = e
        raise AssertionError(f"no node answered Metadata ({order}): {last!r}")

    def partitions(self, topic: str, node_id: Optional[int] = None) -> dict:
        try:
            return self.metadata(node_id, [topic]).partitions(topic)
        except AssertionError:
            return {}

    def leader_of(self, topic: str, partition: int, node_id: Optional[int] = None) -> int:
        st = self.partitions(topic, node_id).get(partition)
        return st.leader if st is not None and st.error == 0 else -1

    def healthy(self, topic: str, partitions: int, rf: int, node_id: Optional[int] = None) -> Optional[dict]:
        """{partition: leader} if every partition has a live leader and a full ISR, else None."""
        parts = self.partitions(topic, node_id)
        if len(parts) != partitions:
            return None
        out = {}
        for p, st in parts.items():
            if st.error != 0 or st.leader < 0 or len(st.replicas) != rf or sorted(st.isr) != sorted(st.replicas):
                return None
            if st.leader not in self.nodes or not self.nodes[st.leader].alive():
                return None
            out[p] = st.leader
        return out


class SluiceCluster(Cluster):
    side = "sluice"
    first_id = 0
    start_timeout = START_TIMEOUT

    def plan(self) -> None:
        assert SLUICE_BIN.exists(), f"broker binary not found at {SLUICE_BIN}; build it or set SLUICE_BIN"
        cluster_id = kraft_cluster_id()
        hosts = {i: (self.lab.addr(i) if self.lab else "127.0.0.1") for i in self.ids}
        client = {i: (9092 if self.lab else free_port()) for i in self.ids}
        peer = {i: (9093 if self.lab else free_port()) for i in self.ids}
        voters = ",".join(f"{i}@{hosts[i]}:{peer[i]}" for i in self.ids)
        for i in self.ids:
            argv = [str(SLUICE_BIN), "serve", "--node-id", str(i),
                    "--listen", f"{hosts[i]}:{client[i]}", "--peer-listen", f"{hosts[i]}:{peer[i]}",
                    "--controller-quorum-voters", voters, "--cluster-id", cluster_id,
                    "--metrics-listen", "", "--data-dir", str(self.work / f"broker-{i}"), "--cores", "1"]
            if self.lab:
                argv = self.lab.wrap(i, argv)
            self.nodes[i] = Node(i, hosts[i], client[i], argv, self.work / f"broker-{i}.log")

    def _spawn(self, node: Node) -> None:
        self._popen_logged(node, f": {' '.join(node.argv)}", subprocess.PIPE)
        q: Queue = Queue()
        node.ready_q = q

        def pump(proc=node.proc):
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                node.lines.append(line)
                q.put(line)
            q.put(None)
        threading.Thread(target=pump, daemon=True).start()

    def _wait_ready(self, node: Node, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"sluice node {node.node_id}: no ready line within {timeout}s\n"
                                     f"{self.log_tail(node.node_id)}")
            try:
                line = node.ready_q.get(timeout=left)
            except Empty:
                continue
            if line is None:
                node.proc.wait(timeout=STOP_TIMEOUT)
                raise AssertionError(f"sluice node {node.node_id} exited with {node.proc.returncode} "
                                     f"before ready\n{self.log_tail(node.node_id)}")
            if line.startswith("sluice ready"):
                return

    def start(self) -> "Cluster":
        super().start()
        self.settle_controller(CONTROLLER_SETTLE_TIMEOUT)
        return self

    def settle_controller(self, timeout: float) -> Optional[int]:
        """Waits (at most `timeout`) until every node's Metadata names the same controller; the
        ready line comes before the metadata log has elected a leader, and until then a broker
        names itself and answers CreateTopics with NOT_CONTROLLER (a Kafka broker reports
        started only once registered with the active controller, and forwards admin requests to
        it). Returns the controller, or None if the nodes never agreed (the test goes on and
        fails where the cluster falls short)."""
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.1) + 1):
            try:
                ctrl = {self.metadata(i).controller for i in self.ids}
            except AssertionError:
                ctrl = set()
            if len(ctrl) == 1 and next(iter(ctrl)) in self.nodes:
                self.note(f"controller {next(iter(ctrl))} named by every node")
                return next(iter(ctrl))
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.note(f"nodes did not agree on a controller within {timeout}s")
        return None


class KafkaCluster(Cluster):
    side = "kafka"
    first_id = 1
    start_timeout = KAFKA_START_TIMEOUT

    def __init__(self, work: Path, brokers: int = 3, netns: bool = False, heap: str = "512m"):
        self.libs = kafka_server_libs()
        assert self.libs is not None, ("no Apache Kafka server jars: run `bench/compare --quick` once "
                                       "(fills bench/.kafka/libs-*) or set SLUICE_KAFKA_LIBS")
        self.java = shutil.which("java")
        assert self.java, "java not on PATH"
        self.heap = heap
        super().__init__(work, brokers, netns)

    def _java(self, *args) -> list:
        return [self.java, "-cp", f"{self.libs}{os.sep}*", *args]

    def plan(self) -> None:
        n = len(self.ids)
        rf, isr = min(n, 3), (2 if min(n, 3) >= 2 else 1)
        hosts = {i: (self.lab.addr(i) if self.lab else "127.0.0.1") for i in self.ids}
        client = {i: (9092 if self.lab else free_port()) for i in self.ids}
        ctrl = {i: (9093 if self.lab else free_port()) for i in self.ids}
        voters = ",".join(f"{i}@{hosts[i]}:{ctrl[i]}" for i in self.ids)
        cluster_id = kraft_cluster_id()
        for i in self.ids:
            props = self.work / f"kafka-{i}.properties"
            props.write_text(f"""process.roles=broker,controller
node.id={i}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{hosts[i]}:{client[i]},CONTROLLER://{hosts[i]}:{ctrl[i]}
advertised.listeners=PLAINTEXT://{hosts[i]}:{client[i]}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={self.work}/kafka-data-{i}
num.partitions=1
offsets.topic.replication.factor={rf}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={isr}
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={isr}
group.initial.rebalance.delay.ms=0
""")
            res = subprocess.run(self._java("-Xmx256m", "kafka.tools.StorageTool", "format", "-t", cluster_id,
                                            "-c", str(props)),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            assert res.returncode == 0, f"kafka format of node {i} failed:\n{res.stdout.decode()[-2000:]}"
            argv = self._java(f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                              "-Djava.awt.headless=true", "kafka.Kafka", str(props))
            if self.lab:
                argv = self.lab.wrap(i, argv)
            self.nodes[i] = Node(i, hosts[i], client[i], argv, self.work / f"kafka-{i}.log")

    def _spawn(self, node: Node) -> None:
        self._popen_logged(node, "", None)
        node.started_marker = node.log_path.read_text(errors="replace").count("Kafka Server started")

    def _wait_ready(self, node: Node, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.2) + 2):
            if node.proc.poll() is not None:
                raise AssertionError(f"kafka node {node.node_id} exited with {node.proc.returncode}\n"
                                     f"{self.log_tail(node.node_id)}")
            text = node.log_path.read_text(errors="replace")
            if text.count("Kafka Server started") > node.started_marker:
                try:
                    socket.create_connection((node.host, node.port), timeout=2).close()
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        raise AssertionError(f"kafka node {node.node_id} not ready within {timeout}s\n{self.log_tail(node.node_id)}")


def make_cluster(side: str, work: Path, netns: bool = False) -> Cluster:
    if side == "sluice":
        return SluiceCluster(work, netns=netns)
    if side == "kafka":
        return KafkaCluster(work, netns=netns)
    raise ValueError(side)


# --- raw Produce / Fetch to one chosen broker (record batch v2, no compression) ---------

def _crc32c_table() -> list:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(b: bytes, pos: int) -> tuple:
    shift = z = 0
    for _ in range(10):
        byte = b[pos]
        pos += 1
        z |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
    raise ValueError("varint too long")


def encode_batch(records: list, timestamp_ms: Optional[int] = None) -> bytes:
    """A v2 record batch (no producer id, no compression) of [(key, value), ...]."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    body = b""
    for i, (key, value) in enumerate(records):
        r = b"\x00" + _varint(0) + _varint(i)
        r += _varint(-1) if key is None else _varint(len(key)) + key
        r += _varint(-1) if value is None else _varint(len(value)) + value
        r += _varint(0)
        body += _varint(len(r)) + r
    after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, ts, ts, -1, -1, -1, len(records)) + body
    head = struct.pack(">ib", -1, 2) + struct.pack(">I", crc32c(after_crc))
    return struct.pack(">qi", 0, len(head) + len(after_crc)) + head + after_crc


def decode_batches(data: bytes) -> list:
    """[(offset, key, value)] of the data records in `data` (control batches skipped; a
    truncated last batch, as Fetch may return, ignored)."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        base, blen = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + blen
        if end > len(data):
            break
        magic = data[pos + 16]
        assert magic == 2, f"record batch magic {magic}"
        attrs = struct.unpack_from(">h", data, pos + 21)[0]
        assert attrs & 0x07 == 0, "compressed batch: the raw reader handles none"
        count = struct.unpack_from(">i", data, pos + 57)[0]
        rpos = pos + 61
        for _ in range(count):
            length, rpos = _read_varint(data, rpos)
            rend = rpos + length
            rpos += 1  # attributes
            _ts, rpos = _read_varint(data, rpos)
            delta, rpos = _read_varint(data, rpos)
            klen, rpos = _read_varint(data, rpos)
            key = None if klen < 0 else data[rpos:rpos + klen]
            rpos += max(klen, 0)
            vlen, rpos = _read_varint(data, rpos)
            value = None if vlen < 0 else data[rpos:rpos + vlen]
            if not attrs & 0x20:
                out.append((base + delta, key, value))
            rpos = rend
        pos = end
    return out


def raw_produce(host: str, port: int, topic: str, partition: int, records: list, acks: int = -1,
                timeout_ms: int = 5000, socket_timeout: float = 20.0) -> tuple:
    """Produce v8 of one batch to exactly this broker. Returns (error_code, base_offset), or
    ('no answer', reason) if the broker closed or did not answer within socket_timeout."""
    batch = encode_batch(records)
    body = struct.pack(">hhi", -1, acks, timeout_ms) + struct.pack(">i", 1) + kstr(topic)
    body += struct.pack(">i", 1) + struct.pack(">ii", partition, len(batch)) + batch
    try:
        with socket.create_connection((host, port), timeout=socket_timeout) as s:
            s.settimeout(socket_timeout)
            s.sendall(request_frame(0, 8, 11, body, client_id="sluice-repl-raw"))
            resp = recv_frame(s)
    except OSError as e:
        return ("no answer", repr(e))
    if resp is None:
        return ("no answer", "connection closed")
    r = _Reader(resp)
    r.take(">i")  # correlation id
    assert r.take(">i") == 1
    r.string()
    assert r.take(">i") == 1
    _idx, err, base = r.take(">ihq")
    return (err, base)


def raw_fetch_all(host: str, port: int, topic: str, partition: int, max_rounds: int = 200,
                  socket_timeout: float = 10.0) -> tuple:
    """Fetch v4 from exactly this broker from offset 0 up to its high watermark.
    Returns (error_code, high_watermark, [(offset, key, value)])."""
    from support import fetch_v4_request, parse_fetch_v4_single
    out: list = []
    offset, hw, err = 0, -1, 0
    with socket.create_connection((host, port), timeout=socket_timeout) as s:
        s.settimeout(socket_timeout)
        for i in range(max_rounds):
            s.sendall(fetch_v4_request(100 + i, topic, partition, offset, max_wait_ms=0))
            resp = recv_frame(s)
            assert resp is not None, f"{host}:{port} closed the connection on Fetch"
            _corr, err, hw, records = parse_fetch_v4_single(resp)
            if err != 0:
                return err, hw, out
            recs = [r for r in decode_batches(records) if r[0] >= offset]
            if not recs:
                if offset >= hw:
                    return 0, hw, out
                # only control batches or a partial batch: advance past what came
                break
            out.extend(recs)
            offset = recs[-1][0] + 1
    return err, hw, out


def run_cluster(request, c):
    """A fixture's life of cluster `c`: started (stopped again if the start fails), yielded,
    stopped; each node's log tail printed when the test failed, and the test failed when a node
    died without the test stopping it. Use as `yield from run_cluster(request, c)`."""
    import pytest
    try:
        c.start()
    except BaseException:
        c.stop_all()
        raise
    yield c
    crashed = c.crashed()
    c.stop_all()
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed or crashed:
        print(f"events: {c.events}")
        for i in c.ids:
            print(f"--- {c.side} node {i} log tail ---\n{c.log_tail(i, 60)}")
    if crashed:
        pytest.fail(f"{c.side} nodes {crashed} died during the test without being stopped by it")
