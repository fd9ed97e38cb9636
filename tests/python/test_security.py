"""Listeners, TLS and SASL (issue #24) with real clients: confluent-kafka (librdkafka),
kcat and the Java client (console producer/consumer).

Certificates are generated per test session with the openssl CLI: a CA, a server
certificate for 127.0.0.1 signed by it, a client certificate, and a second CA that signed
nothing the broker uses (the "wrong CA"). Brokers are started with a TOML config that names
several listeners; their ports come from the `sluice listener ...` lines printed before the
ready line.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from support import KAFKA_LIBS, connection_closed, request_frame, recv_frame, run, unique_topic

OPENSSL = shutil.which("openssl")
KCAT = shutil.which("kcat")
JAVA = shutil.which("java")
LISTENER_RE = re.compile(r"^sluice listener name=(\S+) protocol=(\S+) listen=(\S+):(\d+)$")
TIMEOUT = 30


def sh(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def make_ca(d: Path, name: str):
    sh(OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
       "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_leaf(d: Path, ca: str, name: str, ext: str):
    (d / f"{name}.ext").write_text(ext)
    sh(OPENSSL, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
       "-out", f"{name}.csr", cwd=d)
    sh(OPENSSL, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
       "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    assert OPENSSL, "openssl not on PATH"
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "otherca")
    make_leaf(d, "ca", "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    make_leaf(d, "ca", "client", "extendedKeyUsage=clientAuth\n")
    make_leaf(d, "otherca", "rogue", "extendedKeyUsage=clientAuth\n")
    return d


def listeners_of(broker) -> dict:
    out = {}
    for line in broker.stdout_lines:
        m = LISTENER_RE.match(line)
        if m:
            out[m.group(1)] = f"{m.group(3)}:{m.group(4)}"
    return out


def sec_config(tmp_path, certs: Path, client_auth="none", plain_users=None, extra="", tls_extra="") -> Path:
    """The config file of a broker with the four listeners; `extra` at the top level, `tls_extra`
    in the [tls] table."""
    users = plain_users or {"alice": "alice-secret"}
    cfg = tmp_path / f"sec-{uuid.uuid4().hex[:6]}.toml"
    cfg.write_text(
        'listeners = "PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0"\n'
        f"{extra}\n"
        "[tls]\n"
        f'cert_file = "{certs / "server.pem"}"\n'
        f'key_file = "{certs / "server.key"}"\n'
        f'ca_file = "{certs / "ca.pem"}"\n'
        f'client_auth = "{client_auth}"\n'
        f"{tls_extra}\n"
        "[sasl.plain_users]\n" + "".join(f'{u} = "{p}"\n' for u, p in users.items()))
    return cfg


def start(broker_factory, tmp_path, certs: Path, client_auth="none", plain_users=None, extra="", tls_extra=""):
    cfg = sec_config(tmp_path, certs, client_auth, plain_users, extra, tls_extra)
    b = broker_factory.start(config=cfg)
    lst = listeners_of(b)
    assert set(lst) == {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}, b.stdout_lines
    return b, lst


def client_conf(addr: str, certs: Path, protocol: str, **extra) -> dict:
    c = {"bootstrap.servers": addr, "security.protocol": protocol, "socket.timeout.ms": 10000,
         "message.timeout.ms": 15000}
    if "SSL" in protocol:
        c["ssl.ca.location"] = str(certs / "ca.pem")
    c.update(extra)
    return c


def roundtrip(conf: dict, topic: str, n: int = 20) -> list:
    """Produces n messages and consumes them back; the values read."""
    p = Producer(conf)
    for i in range(n):
        p.produce(topic, f"v{i}".encode())
    left = p.flush(TIMEOUT)
    assert left == 0, f"{left} messages not delivered"
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + TIMEOUT
    for _ in range(1000):
        if len(got) >= n or time.monotonic() > deadline:
            break
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value().decode())
    c.close()
    return got


def expect_auth_failure(conf: dict) -> str:
    """A producer with `conf` must fail to connect: the error text librdkafka reports."""
    errors = []
    p = Producer({**conf, "error_cb": lambda e: errors.append(str(e))})
    p.produce(unique_topic("never"), b"x")
    deadline = time.monotonic() + TIMEOUT
    for _ in range(200):
        if errors or time.monotonic() > deadline:
            break
        p.poll(0.2)
    p.purge()
    p.flush(1)
    assert errors, "the client reported no error"
    return " | ".join(errors)


# --- listeners and TLS --------------------------------------------------------------------


def test_each_listener_advertises_itself_and_tls_round_trips(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs)
    # Metadata on each listener names that listener's own address.
    for name, proto in [("PLAINTEXT", "PLAINTEXT"), ("SSL", "SSL")]:
        admin = AdminClient(client_conf(lst[name], certs, proto))
        md = admin.list_topics(timeout=TIMEOUT)
        brokers = [f"{x.host}:{x.port}" for x in md.brokers.values()]
        assert brokers == [lst[name]], (name, brokers)
    topic = unique_topic("tls")
    got = roundtrip(client_conf(lst["SSL"], certs, "SSL"), topic)
    assert got == [f"v{i}" for i in range(20)]
    # The plaintext listener sees the same log.
    got = roundtrip(client_conf(lst["PLAINTEXT"], certs, "PLAINTEXT"), topic, n=5)
    assert len(got) >= 5


def test_wrong_ca_is_refused(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs)
    err = expect_auth_failure(client_conf(lst["SSL"], certs, "SSL", **{"ssl.ca.location": str(certs / "otherca.pem")}))
    assert "certificate verify failed" in err or "SSL handshake failed" in err, err


def test_client_certificates_required(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs, client_auth="required")
    ok = client_conf(lst["SSL"], certs, "SSL", **{
        "ssl.certificate.location": str(certs / "client.pem"), "ssl.key.location": str(certs / "client.key")})
    assert roundtrip(ok, unique_topic("mtls"), n=3) == ["v0", "v1", "v2"]
    expect_auth_failure(client_conf(lst["SSL"], certs, "SSL"))
    rogue = client_conf(lst["SSL"], certs, "SSL", **{
        "ssl.certificate.location": str(certs / "rogue.pem"), "ssl.key.location": str(certs / "rogue.key")})
    expect_auth_failure(rogue)


def test_plaintext_and_garbage_on_a_tls_listener_close_cleanly(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs)
    host, port = lst["SSL"].rsplit(":", 1)
    # A Kafka request in clear text: the handshake fails and the broker closes.
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request_frame(18, 0, 1))
        assert connection_closed(s, 15), "plaintext client on a TLS listener not closed"
    # Garbage, a truncated ClientHello, and silence, in parallel: none stall the shard.
    socks = []
    for payload in [os.urandom(3000), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b""]:
        s = socket.create_connection((host, int(port)), timeout=5)
        if payload:
            s.sendall(payload)
        socks.append(s)
    got = roundtrip(client_conf(lst["SSL"], certs, "SSL"), unique_topic("after-garbage"), n=3)
    assert got == ["v0", "v1", "v2"]
    for s in socks:
        s.close()
    assert b.alive()


def test_certificates_reload_when_the_files_change(broker_factory, tmp_path, certs):
    d = tmp_path / "reload"
    d.mkdir()
    for f in ["server.pem", "server.key", "ca.pem"]:
        shutil.copy(certs / f, d / f)
    b, lst = start(broker_factory, tmp_path, d)
    assert roundtrip(client_conf(lst["SSL"], certs, "SSL"), unique_topic("r1"), n=1) == ["v0"]
    # A new server certificate signed by the other CA: after the files change, clients that
    # trust only the other CA connect, and those that trust the first one no longer do.
    (d / "srv2.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    sh(OPENSSL, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=srv2", "-keyout", "srv2.key", "-out", "srv2.csr",
       cwd=d)
    sh(OPENSSL, "x509", "-req", "-in", "srv2.csr", "-CA", str(certs / "otherca.pem"), "-CAkey",
       str(certs / "otherca.key"), "-CAcreateserial", "-days", "2", "-extfile", "srv2.ext", "-out", "srv2.pem", cwd=d)
    time.sleep(1.1)  # a later mtime
    shutil.copy(d / "srv2.key", d / "server.key")
    shutil.copy(d / "srv2.pem", d / "server.pem")
    time.sleep(1.5)  # past TLS_RELOAD_CHECK_MS
    new_ca = client_conf(lst["SSL"], certs, "SSL", **{"ssl.ca.location": str(certs / "otherca.pem")})

    def works():
        try:
            return roundtrip(new_ca, unique_topic("r2"), n=1) == ["v0"]
        except KafkaException:
            return False
    ok = False
    for _ in range(5):  # each shard reloads on its next accept after the check interval
        if works():
            ok = True
            break
        time.sleep(1)
    assert ok, "the reloaded certificate was not served"


def test_kcat_over_ssl(broker_factory, tmp_path, certs):
    assert KCAT, "kcat not on PATH"
    b, lst = start(broker_factory, tmp_path, certs)
    topic = unique_topic("kcat-ssl")
    common = ["-b", lst["SSL"], "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certs / 'ca.pem'}"]
    res = run([KCAT, *common, "-P", "-t", topic], timeout=TIMEOUT, input=b"one\ntwo\nthree\n")
    assert res.returncode == 0, res.stderr
    res = run([KCAT, *common, "-C", "-t", topic, "-o", "beginning", "-c", "3", "-e"], timeout=TIMEOUT)
    assert res.stdout.decode().split() == ["one", "two", "three"], res.stderr
    bad = ["-b", lst["SSL"], "-X", "security.protocol=SSL", "-X", f"ssl.ca.location={certs / 'otherca.pem'}"]
    res = run([KCAT, *bad, "-L", "-m", "5"], timeout=TIMEOUT)
    assert res.returncode != 0


# --- SASL ----------------------------------------------------------------------------------


def add_scram_users(lst, certs, users: dict):
    """Adds SCRAM credentials with AlterUserScramCredentials over the PLAINTEXT listener."""
    admin = AdminClient(client_conf(lst["PLAINTEXT"], certs, "PLAINTEXT"))
    ups = []
    for user, (mech, password) in users.items():
        m = ScramMechanism.SCRAM_SHA_256 if mech == "SCRAM-SHA-256" else ScramMechanism.SCRAM_SHA_512
        ups.append(UserScramCredentialUpsertion(user, ScramCredentialInfo(m, 4096), password.encode()))
    for user, fut in admin.alter_user_scram_credentials(ups).items():
        fut.result(timeout=TIMEOUT)
    return admin


@pytest.mark.parametrize("listener", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_right_and_wrong_passwords(broker_factory, tmp_path, certs, listener, mechanism):
    b, lst = start(broker_factory, tmp_path, certs)
    if mechanism != "PLAIN":
        add_scram_users(lst, certs, {"alice": (mechanism, "alice-secret")})
    good = client_conf(lst[listener], certs, listener, **{
        "sasl.mechanism": mechanism, "sasl.username": "alice", "sasl.password": "alice-secret"})
    assert roundtrip(good, unique_topic("sasl"), n=3) == ["v0", "v1", "v2"]
    for user, pw in [("alice", "wrong"), ("mallory", "alice-secret")]:
        err = expect_auth_failure({**good, "sasl.username": user, "sasl.password": pw})
        assert "Authentication failed" in err or "SASL authentication error" in err, err
    # Other clients are served after the failures.
    assert roundtrip(good, unique_topic("sasl-after"), n=1) == ["v0"]
    assert b.alive()


def test_scram_credentials_are_stored_salted_and_survive_a_restart(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs)
    admin = add_scram_users(lst, certs, {"bob": ("SCRAM-SHA-512", "bob-pass-123")})
    described = admin.describe_user_scram_credentials(["bob"])
    info = described["bob"].result(timeout=TIMEOUT) if isinstance(described, dict) else described.result()["bob"]
    assert [(c.mechanism, c.iterations) for c in info.scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_512, 4096)]
    stored = (b.data_dir / "scram-credentials").read_bytes()
    assert b"bob-pass-123" not in stored
    cfg = [a for a in b.proc.args if a.endswith(".toml")][0]
    b2 = broker_factory.restart(b, config=Path(cfg))
    lst2 = listeners_of(b2)
    conf = client_conf(lst2["SASL_PLAINTEXT"], certs, "SASL_PLAINTEXT", **{
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bob", "sasl.password": "bob-pass-123"})
    assert roundtrip(conf, unique_topic("scram-restart"), n=1) == ["v0"]


def test_sluice_user_adds_lists_and_deletes_users_of_a_stopped_broker(broker_factory, tmp_path, certs):
    """`sluice user` (SCRAM users of a stopped broker's data dir, password from stdin): a user
    added before the start authenticates; the command refuses while the broker runs; a deleted
    user is gone after a restart."""
    from conftest import SLUICE_BIN
    data = tmp_path / "user-data"

    def user(*args, password=None):
        stdin = f"{password}\n".encode() if password else b""
        return subprocess.run([str(SLUICE_BIN), "user", "--data-dir", str(data), *args], input=stdin,
                              capture_output=True, timeout=60)

    r = user("add", "carol", "--mechanism", "SCRAM-SHA-512", "--iterations", "8192", password="carol-pass-1")
    assert r.returncode == 0, r.stderr.decode()
    r = user("list")
    assert r.returncode == 0 and r.stdout.decode().strip() == "carol SCRAM-SHA-512(iterations=8192)", r
    assert b"carol-pass-1" not in (data / "scram-credentials").read_bytes()
    assert user("add", "dave", password=None).returncode == 1, "no password on stdin"
    cfg = sec_config(tmp_path, certs)
    b = broker_factory.start(data, config=cfg)
    lst = listeners_of(b)
    conf = client_conf(lst["SASL_PLAINTEXT"], certs, "SASL_PLAINTEXT", **{
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "carol", "sasl.password": "carol-pass-1"})
    assert roundtrip(conf, unique_topic("sluice-user"), n=1) == ["v0"]
    r = user("list")
    assert r.returncode == 1 and b"AlterUserScramCredentials" in r.stderr, r
    assert b.stop() == 0
    r = user("delete", "carol", "--mechanism", "SCRAM-SHA-512")
    assert r.returncode == 0, r.stderr.decode()
    assert user("list").stdout.decode().strip() == ""
    b2 = broker_factory.start(data, config=cfg)
    conf["bootstrap.servers"] = listeners_of(b2)["SASL_PLAINTEXT"]
    err = expect_auth_failure(conf)
    assert "Authentication failed" in err or "SASL authentication error" in err, err


def config_command_libs():
    """(directory, class) of Kafka's `kafka-configs` (ConfigCommand: `kafka.admin` in the core
    jar before Kafka 4.4, `org.apache.kafka.tools` after) in tests/run's kafka-libs or the server
    jars of bench/.kafka/libs-* (SLUICE_KAFKA_LIBS); None without."""
    import zipfile
    from cluster_support import kafka_server_libs
    for libs in (KAFKA_LIBS, kafka_server_libs()):
        for jar in sorted(libs.glob("kafka*.jar")) if libs else []:
            names = set(zipfile.ZipFile(jar).namelist())
            for cls in ("org.apache.kafka.tools.ConfigCommand", "kafka.admin.ConfigCommand"):
                if cls.replace(".", "/") + ".class" in names:
                    return libs, cls
    return None


@pytest.mark.skipif(config_command_libs() is None, reason="no Kafka tools jar (ConfigCommand): "
                    "tests/run installs it from tests/java/pom.xml")
def test_kafka_configs_adds_describes_and_deletes_scram_users(broker_factory, tmp_path, certs):
    """Kafka's own `kafka-configs --entity-type users` (ConfigCommand) as docs/security.md shows
    it: add SCRAM-SHA-256 credentials, describe them, log in, delete them."""
    b, lst = start(broker_factory, tmp_path, certs)

    def configs(*args):
        cmd = [JAVA, "-Xmx256m", "-cp", f"{config_command_libs()[0]}{os.sep}*", config_command_libs()[1],
               "--bootstrap-server", lst["PLAINTEXT"], *args]
        r = run(cmd, timeout=90)
        assert r.returncode == 0, (r.stdout + r.stderr).decode()[-3000:]
        return r.stdout.decode()

    user = ["--entity-type", "users", "--entity-name", "erin"]
    configs("--alter", "--add-config", "SCRAM-SHA-256=[iterations=8192,password=erin-secret]", *user)
    out = configs("--describe", *user)
    assert "SCRAM-SHA-256=iterations=8192" in out, out
    conf = client_conf(lst["SASL_PLAINTEXT"], certs, "SASL_PLAINTEXT", **{
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "erin", "sasl.password": "erin-secret"})
    assert roundtrip(conf, unique_topic("kafka-configs-scram"), n=1) == ["v0"]
    configs("--alter", "--delete-config", "SCRAM-SHA-256", *user)
    assert "SCRAM-SHA-256" not in configs("--describe", *user)
    err = expect_auth_failure(conf)
    assert "Authentication failed" in err or "SASL authentication error" in err, err


def test_before_authentication_only_sasl_requests_are_answered(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs)
    host, port = lst["SASL_PLAINTEXT"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request_frame(18, 0, 1))  # ApiVersions: answered
        assert recv_frame(s) is not None
        s.sendall(request_frame(3, 0, 2, body=b"\x00\x00\x00\x00"))  # Metadata v0: closes
        assert connection_closed(s, 10)
    # Garbage SASL messages: a failure answer and a close, never a crash or a stall.
    for payload in [b"", b"\x00" * 50, os.urandom(200), b"n,,n=,r=", b"\xff\xfe"]:
        with socket.create_connection((host, int(port)), timeout=5) as s:
            mech = b"SCRAM-SHA-256"
            s.sendall(request_frame(17, 1, 1, body=len(mech).to_bytes(2, "big") + mech))
            assert recv_frame(s) is not None
            s.sendall(request_frame(36, 0, 2, body=len(payload).to_bytes(4, "big") + payload))
            answer = recv_frame(s)
            assert answer is None or int.from_bytes(answer[4:6], "big") == 58, answer
            assert connection_closed(s, 10)
    conf = client_conf(lst["SASL_PLAINTEXT"], certs, "SASL_PLAINTEXT", **{
        "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-secret"})
    assert roundtrip(conf, unique_topic("sasl-garbage"), n=1) == ["v0"]


def java_tool(main_class: str, *args, input=None):
    assert JAVA, "java not on PATH"
    cmd = [JAVA, "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
           "-cp", f"{KAFKA_LIBS}{os.sep}*", main_class, *args]
    return run(cmd, timeout=90, input=input)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_java_client_over_sasl_ssl(broker_factory, tmp_path, certs, mechanism):
    b, lst = start(broker_factory, tmp_path, certs)
    if mechanism != "PLAIN":
        add_scram_users(lst, certs, {"alice": (mechanism, "alice-secret")})
    module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"

    def props(password):
        p = tmp_path / f"client-{password}.properties"
        p.write_text(
            "security.protocol=SASL_SSL\n"
            f"sasl.mechanism={mechanism}\n"
            f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
            f'username="alice" password="{password}";\n'
            "ssl.truststore.type=PEM\n"
            f"ssl.truststore.location={certs / 'ca.pem'}\n"
            "enable.idempotence=false\n"
            "max.block.ms=20000\n")
        return str(p)
    topic = unique_topic("java-sasl")
    res = java_tool("org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", lst["SASL_SSL"], "--topic", topic,
                    "--command-config", props("alice-secret"), input=b"a\nb\nc\n")
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    res = java_tool("org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", lst["SASL_SSL"],
                    "--topic", topic, "--from-beginning", "--max-messages", "3", "--timeout-ms", "20000",
                    "--command-config", props("alice-secret"))
    assert res.stdout.decode().split() == ["a", "b", "c"], res.stderr.decode()[-3000:]
    res = java_tool("org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", lst["SASL_SSL"], "--topic", topic,
                    "--command-config", props("wrong"), input=b"x\n")
    out = (res.stdout + res.stderr).decode()
    assert "Authentication failed" in out or "SaslAuthenticationException" in out, out[-3000:]


def test_java_admin_manages_scram_users(broker_factory, tmp_path, certs):
    """Kafka's Java Admin (what kafka-configs --entity-type users calls) adds, describes and
    deletes credentials; the user then authenticates with the Java console producer."""
    b, lst = start(broker_factory, tmp_path, certs)
    src = Path(__file__).resolve().parent / "ScramUsers.java"
    res = java_tool(str(src), lst["PLAINTEXT"], "carol", "carol-pw")
    out = res.stdout.decode().splitlines()
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert out == [
        "altered carol",
        "describe carol SCRAM_SHA_256 8192",
        "describe carol SCRAM_SHA_512 4096",
        "describe carol SCRAM_SHA_256 8192",
        "delete nobody: ResourceNotFoundException",
    ], out
    p = tmp_path / "carol.properties"
    p.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
                 "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                 'username="carol" password="carol-pw";\nenable.idempotence=false\nmax.block.ms=20000\n')
    res = java_tool("org.apache.kafka.tools.ConsoleProducer", "--bootstrap-server", lst["SASL_PLAINTEXT"],
                    "--topic", unique_topic("carol"), "--command-config", str(p), input=b"hello\n")
    assert res.returncode == 0, res.stderr.decode()[-3000:]


def raw_plain_login(host: str, port: int, user: bytes, password: bytes) -> socket.socket:
    """A connection authenticated with PLAIN through raw SaslHandshake v1 / SaslAuthenticate v0."""
    s = socket.create_connection((host, port), timeout=5)
    mech = b"PLAIN"
    s.sendall(request_frame(17, 1, 1, body=len(mech).to_bytes(2, "big") + mech))
    assert recv_frame(s) is not None
    token = b"\0" + user + b"\0" + password
    s.sendall(request_frame(36, 0, 2, body=len(token).to_bytes(4, "big") + token))
    answer = recv_frame(s)
    assert answer is not None and int.from_bytes(answer[4:6], "big") == 0, answer
    return s


def test_sessions_expire_without_reauthentication_and_clients_reauthenticate(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs, extra="connections_max_reauth_ms = 2000")
    host, port = lst["SASL_PLAINTEXT"].rsplit(":", 1)
    # A client that never re-authenticates: served before the session ends, closed after.
    s = raw_plain_login(host, int(port), b"alice", b"alice-secret")
    s.sendall(request_frame(18, 0, 3))
    assert recv_frame(s) is not None
    time.sleep(2.5)
    s.sendall(request_frame(18, 0, 4))
    assert connection_closed(s, 10), "an expired session was still served"
    s.close()
    # librdkafka re-authenticates (KIP-368) on one connection while producing for 6 s.
    conf = client_conf(lst["SASL_PLAINTEXT"], certs, "SASL_PLAINTEXT", **{
        "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": "alice-secret"})
    p = Producer(conf)
    topic = unique_topic("reauth")
    delivered = []
    for i in range(20):
        p.produce(topic, f"v{i}".encode(), on_delivery=lambda err, m: delivered.append(err is None))
        p.poll(0)
        time.sleep(0.3)
    assert p.flush(TIMEOUT) == 0
    assert len(delivered) == 20 and all(delivered)
    log = b.stderr_path.read_text(errors="replace")
    assert "reauthentication=true" in log, "no re-authentication seen in the broker's log"
