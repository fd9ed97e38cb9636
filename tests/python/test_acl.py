"""ACLs (issue #24) with real clients: Kafka's `kafka-acls` (org.apache.kafka.tools.AclCommand),
confluent-kafka's AdminClient, Producer and Consumer (librdkafka).

The broker runs the standard authorizer with `User:admin` (a PLAIN user) as super user; `alice`
is a SCRAM-SHA-256 user with no ACLs until a test grants them. Certificates, listeners and the
SCRAM setup come from test_security.py.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   NewTopic, ResourcePatternType, ResourceType)

from support import unique_topic, wait_until
from test_security import (add_scram_users, certs, client_conf, expect_auth_failure, java_tool,  # noqa: F401
                           listeners_of, sec_config, start)

TIMEOUT = 30
AUTHZ = ('authorizer_class_name = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"\n'
         'super_users = ["User:admin"]\n')


def admin_conf(lst, certs):
    return client_conf(lst["SASL_PLAINTEXT"], certs, "SASL_PLAINTEXT", **{
        "sasl.mechanism": "PLAIN", "sasl.username": "admin", "sasl.password": "admin-secret"})


def alice_conf(lst, certs, **extra):
    return client_conf(lst["SASL_PLAINTEXT"], certs, "SASL_PLAINTEXT", **{
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "alice", "sasl.password": "alice-secret", **extra})


def secured(broker_factory, tmp_path, certs, extra=AUTHZ):
    b, lst = start(broker_factory, tmp_path, certs, plain_users={"admin": "admin-secret"}, extra=extra)
    admin = AdminClient(admin_conf(lst, certs))
    ups_admin = admin_conf(lst, certs)
    add_scram_users_as(ups_admin, {"alice": "alice-secret"})
    return b, lst, admin


def add_scram_users_as(conf, users):
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
    admin = AdminClient(conf)
    ups = [UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), p.encode())
           for u, p in users.items()]
    for _, fut in admin.alter_user_scram_credentials(ups).items():
        fut.result(timeout=TIMEOUT)


def create_topics(admin, *names):
    for _, fut in admin.create_topics([NewTopic(n, 1, 1) for n in names]).items():
        fut.result(timeout=TIMEOUT)


def produce_error(conf, topic):
    """Produces one message; the delivery error code (None when delivered)."""
    out = []
    p = Producer({**conf, "message.timeout.ms": 10000})
    p.produce(topic, b"x", on_delivery=lambda err, msg: out.append(err))
    p.flush(TIMEOUT)
    assert out, "no delivery report"
    return None if out[0] is None else out[0].code()


def consume_error(conf, topic, group):
    """Subscribes and polls until a message or an error arrives: the error code, or None."""
    c = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    deadline = time.monotonic() + TIMEOUT
    try:
        for _ in range(200):
            if time.monotonic() > deadline:
                break
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                return m.error().code()
            return None
    finally:
        c.close()
    raise AssertionError("neither a message nor an error")


def acl(rt, name, principal, op, perm=AclPermissionType.ALLOW, pattern=ResourcePatternType.LITERAL):
    return AclBinding(rt, name, pattern, principal, "*", op, perm)


def add_acls(admin, *bindings):
    for _, fut in admin.create_acls(list(bindings)).items():
        fut.result(timeout=TIMEOUT)


def kafka_acls(lst, tmp_path, *args, user=("PLAIN", "admin", "admin-secret")):
    mechanism, name, password = user
    module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
    props = tmp_path / f"{name}.properties"
    props.write_text(f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism={mechanism}\n"
                     f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
                     f'username="{name}" password="{password}";\n')
    return java_tool("org.apache.kafka.tools.AclCommand", "--bootstrap-server", lst["SASL_PLAINTEXT"],
                     "--command-config", str(props), *args)


KIP848 = ("group_initial_rebalance_delay_ms = 0\n"
          "group_consumer_session_timeout_ms = 6000\n"
          "group_consumer_heartbeat_interval_ms = 500\n")


def java_scram_props(tmp_path, user: str, password: str) -> Path:
    props = tmp_path / f"{user}-consumer.properties"
    props.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\n"
                     "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
                     f'username="{user}" password="{password}";\n')
    return props


def test_kip848_regex_subscription_gets_only_the_topics_its_principal_may_describe(
        broker_factory, tmp_path, certs, monkeypatch):
    """Java consumers (group.protocol=consumer, subscribe(SubscriptionPattern)) of two principals,
    each in its own group, with one regex matching three topics: each is assigned only the
    topics its principal may describe (Kafka's TopicRegexResolver filters the regex's topics by
    DESCRIBE with the context of the member whose heartbeat resolves it)."""
    b, lst, admin = secured(broker_factory, tmp_path, certs, extra=AUTHZ + KIP848)
    add_scram_users_as(admin_conf(lst, certs), {"bob": "bob-secret"})
    regex_acl_scenario(admin, lst["SASL_PLAINTEXT"], tmp_path, monkeypatch)
    assert b.alive()


@pytest.mark.skipif(os.environ.get("SLUICE_COMPARE_KAFKA") != "1",
                    reason="the Apache Kafka side runs with SLUICE_COMPARE_KAFKA=1")
def test_kip848_regex_subscription_acl_filtering_on_apache_kafka(tmp_path, monkeypatch):
    """The same scenario against one Apache Kafka 4.x KRaft node (bench/.kafka/libs-*) with the
    StandardAuthorizer and a SASL_PLAINTEXT (SCRAM-SHA-256) listener: how the harness itself is
    validated."""
    from cluster_support import KafkaCluster, free_port

    class SecuredKafka(KafkaCluster):
        def plan(self):
            super().plan()
            self.sasl = f"127.0.0.1:{free_port()}"
            props = self.work / "kafka-1.properties"
            text = props.read_text()
            for key in ("listeners=", "advertised.listeners="):
                line = next(x for x in text.splitlines() if x.startswith(key))
                text = text.replace(line, f"{line},SASL_PLAINTEXT://{self.sasl}")
            text = text.replace("listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
                                "SASL_PLAINTEXT:SASL_PLAINTEXT")
            text += ("sasl.enabled.mechanisms=SCRAM-SHA-256\n"
                     "listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config="
                     "org.apache.kafka.common.security.scram.ScramLoginModule required;\n"
                     "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n"
                     "super.users=User:ANONYMOUS\n"
                     "group.consumer.min.heartbeat.interval.ms=500\n"
                     "group.consumer.heartbeat.interval.ms=500\n")
            props.write_text(text)

    c = SecuredKafka(tmp_path / "kafka", brokers=1)
    try:
        c.start()
        plain = f"127.0.0.1:{c.nodes[1].port}"
        add_scram_users_as({"bootstrap.servers": plain}, {"alice": "alice-secret", "bob": "bob-secret"})
        regex_acl_scenario(AdminClient({"bootstrap.servers": plain}), c.sasl, tmp_path, monkeypatch)
    finally:
        c.stop_all()


def regex_acl_scenario(admin, sasl_bootstrap: str, tmp_path, monkeypatch):
    """alice and bob (SCRAM-SHA-256 users) each consume with one Java KIP-848 member in their own
    group, subscribed to the regex BASE-.*; alice may read BASE-a1 and BASE-shared, bob
    BASE-shared and BASE-b1. Each must be assigned exactly its own topics."""
    from test_kip848 import JavaMember, compile_member
    base = unique_topic("rxacl")
    a1, shared, b1 = f"{base}-a1", f"{base}-shared", f"{base}-b1"
    for _, fut in admin.create_topics([NewTopic(a1, 2, 1), NewTopic(shared, 1, 1), NewTopic(b1, 1, 1)]).items():
        fut.result(timeout=TIMEOUT)
    g_alice, g_bob = f"ga-{uuid.uuid4().hex[:6]}", f"gb-{uuid.uuid4().hex[:6]}"
    add_acls(admin,
             acl(ResourceType.GROUP, g_alice, "User:alice", AclOperation.READ),
             acl(ResourceType.TOPIC, a1, "User:alice", AclOperation.READ),
             acl(ResourceType.TOPIC, shared, "User:alice", AclOperation.READ),
             acl(ResourceType.GROUP, g_bob, "User:bob", AclOperation.READ),
             acl(ResourceType.TOPIC, b1, "User:bob", AclOperation.READ),
             acl(ResourceType.TOPIC, shared, "User:bob", AclOperation.READ))
    cp = compile_member(tmp_path)
    members = []
    try:
        for user, group in (("alice", g_alice), ("bob", g_bob)):
            monkeypatch.setenv("KIP848_CLIENT_PROPERTIES", str(java_scram_props(tmp_path, user, f"{user}-secret")))
            members.append(JavaMember(cp, tmp_path, sasl_bootstrap, f"re:{base}-.*", group, user))
        monkeypatch.delenv("KIP848_CLIENT_PROPERTIES")
        wants = [{(a1, 0), (a1, 1), (shared, 0)}, {(shared, 0), (b1, 0)}]
        for m, want in zip(members, wants):
            try:
                wait_until(lambda: m.topic_partitions() == want, 60, what=f"{m.name}'s assignment {want}")
            except AssertionError as e:
                raise AssertionError(f"{e}\n{m.explain()}") from None
        assert not [line for m in members for line in m.lines if line.startswith("ERROR")], \
            "\n".join(m.explain() for m in members)
    finally:
        for m in members:
            m.stop()


def test_authorized_operations_of_topics_cluster_and_groups_when_asked(broker_factory, tmp_path, certs):
    """KIP-430's authorized operations as librdkafka's admin test (0081) asks for them:
    DescribeTopics (Metadata), DescribeCluster and DescribeConsumerGroups with
    include_authorized_operations, for the super user (every operation of the resource type) and
    for alice with READ on one topic and one group (READ and the DESCRIBE it implies)."""
    from confluent_kafka import TopicCollection, TopicPartition
    b, lst, admin = secured(broker_factory, tmp_path, certs)
    topic, group = unique_topic("ops"), f"g-{uuid.uuid4().hex[:6]}"
    create_topics(admin, topic)
    add_acls(admin, acl(ResourceType.TOPIC, topic, "User:alice", AclOperation.READ),
             acl(ResourceType.GROUP, group, "User:alice", AclOperation.READ))
    alice = alice_conf(lst, certs)
    c = Consumer({**alice, "group.id": group})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)  # the group exists
    finally:
        c.close()
    alice_admin = AdminClient(alice)
    op = AclOperation
    topic_ops = {op.READ, op.WRITE, op.CREATE, op.DESCRIBE, op.DELETE, op.ALTER, op.DESCRIBE_CONFIGS,
                 op.ALTER_CONFIGS}
    cluster_ops = {op.CREATE, op.CLUSTER_ACTION, op.DESCRIBE_CONFIGS, op.ALTER_CONFIGS, op.IDEMPOTENT_WRITE,
                   op.ALTER, op.DESCRIBE}
    group_ops = {op.READ, op.DESCRIBE, op.DELETE, op.DESCRIBE_CONFIGS, op.ALTER_CONFIGS}
    for who, client, want_topic, want_cluster, want_group in (
            ("admin", admin, topic_ops, cluster_ops, group_ops),
            ("alice", alice_admin, {op.READ, op.DESCRIBE}, set(), {op.READ, op.DESCRIBE})):
        t = client.describe_topics(TopicCollection([topic]), include_authorized_operations=True)[topic]
        assert set(t.result(timeout=TIMEOUT).authorized_operations or []) == want_topic, who
        cl = client.describe_cluster(include_authorized_operations=True).result(timeout=TIMEOUT)
        assert set(cl.authorized_operations or []) == want_cluster, who
        g = client.describe_consumer_groups([group], include_authorized_operations=True)[group]
        assert set(g.result(timeout=TIMEOUT).authorized_operations or []) == want_group, who
    assert b.alive()


def test_a_principal_without_acls_is_refused_until_kafka_acls_adds_them(broker_factory, tmp_path, certs):
    b, lst, admin = secured(broker_factory, tmp_path, certs)
    topic = unique_topic("acl")
    create_topics(admin, topic)
    alice = alice_conf(lst, certs)
    assert produce_error(alice, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Creating topics needs CREATE: CreateTopics is refused.
    alice_admin = AdminClient(alice)
    fut = alice_admin.create_topics([NewTopic(unique_topic("alice-new"), 1, 1)])
    err = list(fut.values())[0].exception(timeout=TIMEOUT)
    assert err is not None and err.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err

    res = kafka_acls(lst, tmp_path, "--add", "--allow-principal", "User:alice", "--operation", "Write",
                     "--topic", topic)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert produce_error(alice, topic) is None

    group = f"g-{uuid.uuid4().hex[:6]}"
    assert consume_error(alice, topic, group) in (KafkaError.GROUP_AUTHORIZATION_FAILED,
                                                  KafkaError.TOPIC_AUTHORIZATION_FAILED)
    for args in (["--topic", topic], ["--group", group]):
        res = kafka_acls(lst, tmp_path, "--add", "--allow-principal", "User:alice", "--operation", "Read", *args)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    assert consume_error(alice, topic, group) is None

    res = kafka_acls(lst, tmp_path, "--list", "--topic", topic)
    out = res.stdout.decode()
    assert res.returncode == 0 and "User:alice" in out and "WRITE" in out and "READ" in out, out

    # Deny beats allow.
    add_acls(admin, acl(ResourceType.TOPIC, topic, "User:alice", AclOperation.READ, AclPermissionType.DENY))
    group2 = f"g3-{uuid.uuid4().hex[:6]}"
    add_acls(admin, acl(ResourceType.GROUP, group2, "User:alice", AclOperation.READ))
    assert consume_error(alice, topic, group2) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert b.alive()


def test_prefixed_acls_metadata_hiding_describe_delete_and_restart(broker_factory, tmp_path, certs):
    b, lst, admin = secured(broker_factory, tmp_path, certs)
    pre = f"pay-{uuid.uuid4().hex[:6]}-"
    mine, other = pre + "in", unique_topic("other")
    create_topics(admin, mine, other)
    add_acls(admin, acl(ResourceType.TOPIC, pre, "User:alice", AclOperation.WRITE,
                        pattern=ResourcePatternType.PREFIXED))
    alice = alice_conf(lst, certs)
    assert produce_error(alice, mine) is None
    assert produce_error(alice, other) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Metadata lists only the topics alice may describe (WRITE implies DESCRIBE).
    alice_admin = AdminClient(alice)
    listed = set(alice_admin.list_topics(timeout=TIMEOUT).topics)
    assert mine in listed and other not in listed, listed
    assert other in set(admin.list_topics(timeout=TIMEOUT).topics)

    # DescribeAcls with a MATCH filter finds the prefixed binding for the topic's name.
    match = AclBindingFilter(ResourceType.TOPIC, mine, ResourcePatternType.MATCH, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    found = admin.describe_acls(match).result(timeout=TIMEOUT)
    assert [(f.name, f.resource_pattern_type, f.principal, f.operation) for f in found] == [
        (pre, ResourcePatternType.PREFIXED, "User:alice", AclOperation.WRITE)], found

    # A principal without DESCRIBE on the cluster may not list ACLs.
    res = kafka_acls(lst, tmp_path, "--list", user=("SCRAM-SHA-256", "alice", "alice-secret"))
    out = (res.stdout + res.stderr).decode()
    assert res.returncode != 0 or "ClusterAuthorizationException" in out, out[-3000:]
    assert "ClusterAuthorizationException" in out, out[-3000:]

    # ACLs survive a restart.
    cfg = [a for a in b.proc.args if a.endswith(".toml")][0]
    b2 = broker_factory.restart(b, config=Path(cfg))
    lst2 = listeners_of(b2)
    admin2 = AdminClient(admin_conf(lst2, certs))
    assert len(admin2.describe_acls(match).result(timeout=TIMEOUT)) == 1
    alice2 = alice_conf(lst2, certs)
    assert produce_error(alice2, mine) is None

    # DeleteAcls removes it; alice is refused again.
    futures = admin2.delete_acls([match])
    deleted = futures[match].result(timeout=TIMEOUT)
    assert [d.name for d in deleted] == [pre]
    assert admin2.describe_acls(match).result(timeout=TIMEOUT) == []
    assert produce_error(alice2, mine) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_without_an_authorizer_everything_is_allowed_and_acl_apis_are_disabled(broker_factory, tmp_path, certs):
    b, lst, admin = secured(broker_factory, tmp_path, certs, extra="")
    topic = unique_topic("open")
    assert produce_error(alice_conf(lst, certs), topic) is None
    res = kafka_acls(lst, tmp_path, "--list")
    out = (res.stdout + res.stderr).decode()
    assert "SecurityDisabledException" in out or "No Authorizer is configured" in out, out[-3000:]
    err = list(admin.create_acls([acl(ResourceType.TOPIC, topic, "User:alice", AclOperation.READ)]).values())[0]
    e = err.exception(timeout=TIMEOUT)
    assert e is not None and e.args[0].code() == KafkaError.SECURITY_DISABLED, e


# --- the other APIs, the Java Admin client, the TLS principal ------------------------------

def run_acl_admin(lst, tmp_path, *args, user=("SCRAM-SHA-256", "alice", "alice-secret")) -> dict:
    """AclAdmin.java (Kafka's Java Admin client) as `user`: {call name: outcome}."""
    import os
    import shutil
    import subprocess

    from support import KAFKA_LIBS
    classes = tmp_path / "acl-classes"
    if not (classes / "AclAdmin.class").exists():
        javac = shutil.which("javac")
        assert javac, "javac not on PATH"
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "AclAdmin.java")
        res = subprocess.run([javac, "-d", str(classes), "-cp", f"{KAFKA_LIBS}{os.sep}*", src],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    mechanism, name, password = user
    module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
    props = tmp_path / f"java-{name}.properties"
    props.write_text(f"security.protocol=SASL_PLAINTEXT\nsasl.mechanism={mechanism}\n"
                     f"sasl.jaas.config=org.apache.kafka.common.security.{module} required "
                     f'username="{name}" password="{password}";\n')
    cmd = ["java", "-Xmx256m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=off",
           "-cp", f"{KAFKA_LIBS}{os.sep}*{os.pathsep}{classes}", "AclAdmin", lst["SASL_PLAINTEXT"], str(props), *args]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    out = {}
    for line in res.stdout.decode().splitlines():
        name_, _, outcome = line.partition(" ")
        out[name_] = outcome
    return out


def test_config_partition_record_log_dir_election_and_txn_apis_are_checked(broker_factory, tmp_path, certs):
    """Each API refused for alice without ACLs (the error Kafka gives), allowed after kafka-acls --add."""
    b, lst, admin = secured(broker_factory, tmp_path, certs)
    topic, group, txn = unique_topic("acl-api"), f"g-{uuid.uuid4().hex[:6]}", f"tx-{uuid.uuid4().hex[:6]}"
    create_topics(admin, topic)
    before = run_acl_admin(lst, tmp_path, "probe", topic, group, txn)
    # Apache Kafka 4.4 answers exactly this (same program, same ACLs; run by hand, 2026-12-06).
    assert before == {
        "describeConfigsTopic": "TopicAuthorizationException",
        "describeConfigsBroker": "ClusterAuthorizationException",
        "incrementalAlterConfigs": "TopicAuthorizationException",
        "createPartitions": "TopicAuthorizationException",
        "deleteRecords": "TopicAuthorizationException",
        "deleteConsumerGroupOffsets": "GroupAuthorizationException",
        "describeLogDirs": "ClusterAuthorizationException",
        "electLeaders": "ClusterAuthorizationException",
        "describeClusterOperations": "OK []",
        "describeTransactions": "TransactionalIdAuthorizationException",
        "listTransactions": "OK 0",
    }, before
    grants = [["--operation", "All", "--topic", topic], ["--operation", "All", "--group", group],
              ["--operation", "Describe", "--transactional-id", txn],
              ["--operation", "Describe", "--operation", "Alter", "--operation", "DescribeConfigs", "--cluster"]]
    for g in grants:
        res = kafka_acls(lst, tmp_path, "--add", "--allow-principal", "User:alice", *g)
        assert res.returncode == 0, res.stderr.decode()[-3000:]
    after = run_acl_admin(lst, tmp_path, "probe", topic, group, txn)
    # What Apache Kafka 4.4 answers to the same calls and ACLs (run by hand, 2026-12-06).
    assert after == {
        "describeConfigsTopic": "OK 1",
        "describeConfigsBroker": "OK 1",
        "incrementalAlterConfigs": "OK",
        "createPartitions": "OK",
        "deleteRecords": "OK",
        "deleteConsumerGroupOffsets": "GroupIdNotFoundException",
        "describeLogDirs": "OK 1",
        "electLeaders": "ElectionNotNeededException",
        "describeClusterOperations": "OK [ALTER, DESCRIBE, DESCRIBE_CONFIGS]",
        "describeTransactions": "TransactionalIdNotFoundException",
        "listTransactions": "OK 0",
    }, after
    assert b.alive()


def test_java_admin_creates_describes_and_deletes_acls(broker_factory, tmp_path, certs):
    b, lst, admin = secured(broker_factory, tmp_path, certs)
    topic = unique_topic("java-acl")
    out = run_acl_admin(lst, tmp_path, "acls", "User:bob", topic, user=("PLAIN", "admin", "admin-secret"))
    assert out == {"createAcls": "OK", "describeAcls": f"OK [User:bob:READ:{topic}]",
                   "deleteAcls": f"OK [User:bob:READ:{topic}]", "describeAclsAfter": "OK []"}, out
    # alice has no ALTER on the cluster: CreateAcls is refused.
    refused = run_acl_admin(lst, tmp_path, "acls", "User:bob", topic)
    assert refused["createAcls"] == "ClusterAuthorizationException", refused
    assert refused["describeAcls"] == "ClusterAuthorizationException", refused


def test_transactions_and_consumer_groups_need_their_acls(broker_factory, tmp_path, certs):
    """A transactional producer and a KIP-848 consumer (librdkafka) as alice."""
    b, lst, admin = secured(broker_factory, tmp_path, certs)
    topic, txn = unique_topic("acl-txn"), f"tx-{uuid.uuid4().hex[:6]}"
    create_topics(admin, topic)
    alice = alice_conf(lst, certs)
    add_acls(admin, acl(ResourceType.TOPIC, topic, "User:alice", AclOperation.WRITE))

    def transaction():
        p = Producer({**alice, "transactional.id": txn, "transaction.timeout.ms": 30000})
        try:
            p.init_transactions(TIMEOUT)
            p.begin_transaction()
            p.produce(topic, b"t")
            p.commit_transaction(TIMEOUT)
            return None
        except KafkaException as e:
            return e.args[0].code()

    assert transaction() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    add_acls(admin, acl(ResourceType.TRANSACTIONAL_ID, txn, "User:alice", AclOperation.WRITE))
    assert transaction() is None

    group = f"g848-{uuid.uuid4().hex[:6]}"
    add_acls(admin, acl(ResourceType.TOPIC, topic, "User:alice", AclOperation.READ))
    assert consume_error({**alice, "group.protocol": "consumer"}, topic, group) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    add_acls(admin, acl(ResourceType.GROUP, group, "User:alice", AclOperation.READ))
    assert consume_error({**alice, "group.protocol": "consumer"}, topic, group) is None
    assert b.alive()


def test_a_tls_client_certificate_is_the_principal(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs, client_auth="requested", plain_users={"admin": "admin-secret"},
                   extra=AUTHZ)
    admin = AdminClient(admin_conf(lst, certs))
    topic = unique_topic("cert")
    create_topics(admin, topic)
    with_cert = client_conf(lst["SSL"], certs, "SSL", **{"ssl.certificate.location": str(certs / "client.pem"),
                                                          "ssl.key.location": str(certs / "client.key")})
    without = client_conf(lst["SSL"], certs, "SSL")
    assert produce_error(with_cert, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The subject of client.pem is /CN=client: Kafka's principal is User:CN=client.
    add_acls(admin, acl(ResourceType.TOPIC, topic, "User:CN=client", AclOperation.WRITE))
    assert produce_error(with_cert, topic) is None
    assert produce_error(without, topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    add_acls(admin, acl(ResourceType.TOPIC, topic, "User:ANONYMOUS", AclOperation.WRITE))
    assert produce_error(without, topic) is None
    assert b.alive()


# Kafka's ssl.principal.mapping.rules: CN=client becomes CLIENT@CERTS (upper-cased), any other
# subject stays as it is. TOML literal string: the rules as written for Kafka.
MAPPING = "principal_mapping_rules = 'RULE:^CN=([a-z]+)$/$1@certs/U, DEFAULT'"


def test_ssl_principal_mapping_rules_give_the_acl_principal(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs, client_auth="requested", plain_users={"admin": "admin-secret"},
                   extra=AUTHZ, tls_extra=MAPPING)
    admin = AdminClient(admin_conf(lst, certs))
    mapped, raw = unique_topic("mapped"), unique_topic("raw")
    create_topics(admin, mapped, raw)
    with_cert = client_conf(lst["SSL"], certs, "SSL", **{"ssl.certificate.location": str(certs / "client.pem"),
                                                          "ssl.key.location": str(certs / "client.key")})
    add_acls(admin, acl(ResourceType.TOPIC, mapped, "User:CLIENT@CERTS", AclOperation.WRITE),
             acl(ResourceType.TOPIC, raw, "User:CN=client", AclOperation.WRITE))
    # The mapped principal's ACL allows; the raw subject's ACL no longer names this client.
    assert produce_error(with_cert, mapped) is None
    assert produce_error(with_cert, raw) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert b.alive()


def test_a_certificate_no_mapping_rule_applies_to_is_refused(broker_factory, tmp_path, certs):
    b, lst = start(broker_factory, tmp_path, certs, client_auth="requested",
                   tls_extra="principal_mapping_rules = 'RULE:^CN=nobody$/x/'")
    with_cert = client_conf(lst["SSL"], certs, "SSL", **{"ssl.certificate.location": str(certs / "client.pem"),
                                                          "ssl.key.location": str(certs / "client.key")})
    expect_auth_failure(with_cert)
    # Without a certificate there is no subject to map: ANONYMOUS, served.
    assert produce_error(client_conf(lst["SSL"], certs, "SSL"), unique_topic("anon")) is None
    assert b.alive()


def test_bad_principal_mapping_rules_fail_the_start(tmp_path, certs):
    import subprocess

    from conftest import SLUICE_BIN
    cfg = sec_config(tmp_path, certs, tls_extra="principal_mapping_rules = 'DEFAULT, RULE:^CN=(.*$/$1/'")
    r = subprocess.run([str(SLUICE_BIN), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"),
                        "--cores", "1", "--config", str(cfg)], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode != 0, out
    assert "ssl.principal.mapping.rules: invalid rule `RULE:^CN=(.*$/$1/`" in out, out
    assert "sluice ready" not in out, out


def find_coordinator_v0(address: str, group: str) -> int:
    """The error code of a raw FindCoordinator v0 for `group` sent to one broker."""
    import socket
    import struct

    from support import recv_frame, request_frame
    host, port = address.rsplit(":", 1)
    key = group.encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request_frame(10, 0, 7, struct.pack(">h", len(key)) + key))
        payload = recv_frame(s)
    assert payload is not None, f"{address} closed the connection"
    (correlation, code) = struct.unpack(">ih", payload[:6])
    assert correlation == 7
    return code


def test_an_acl_created_through_one_broker_is_enforced_by_all_three(tmp_path):
    from cluster_support import SluiceCluster
    cfg = tmp_path / "authz.toml"
    cfg.write_text(AUTHZ.replace('super_users = ["User:admin"]', "allow_everyone_if_no_acl_found = true"))

    class Secured(SluiceCluster):
        def plan(self):
            super().plan()
            for n in self.nodes.values():
                n.argv += ["--config", str(cfg)]

    c = Secured(tmp_path / "cluster").start()
    try:
        group = f"g-{uuid.uuid4().hex[:6]}"
        addresses = [c.nodes[i].address for i in c.ids]
        # No ACL on the group: everyone may (allow_everyone_if_no_acl_found); the coordinator
        # may still be coming up, so only "not refused" is asserted.
        assert all(find_coordinator_v0(a, group) != KafkaError.GROUP_AUTHORIZATION_FAILED for a in addresses)
        admin = AdminClient({"bootstrap.servers": addresses[0]})
        deny = acl(ResourceType.GROUP, group, "User:ANONYMOUS", AclOperation.DESCRIBE, AclPermissionType.DENY)
        deadline = time.monotonic() + TIMEOUT
        for _ in range(60):
            try:
                add_acls(admin, deny)
                break
            except KafkaException:
                assert time.monotonic() < deadline, "CreateAcls did not succeed"
                time.sleep(0.5)
        for a in addresses:
            codes = []
            for _ in range(100):
                codes.append(find_coordinator_v0(a, group))
                if codes[-1] == KafkaError.GROUP_AUTHORIZATION_FAILED or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert codes[-1] == KafkaError.GROUP_AUTHORIZATION_FAILED, (a, codes)
        assert not c.crashed()
    finally:
        c.stop_all()


def sluice_bench(*args, timeout=30):
    """`sluice bench ARGS --json`: (exit code, the JSON report or None, stderr's tail)."""
    import json
    import subprocess
    from conftest import SLUICE_BIN
    r = subprocess.run([str(SLUICE_BIN), "bench", *args, "--json"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=timeout)
    lines = r.stdout.decode().strip().splitlines()
    report = json.loads(lines[-1]) if lines else None
    return r.returncode, report, r.stderr.decode(errors="replace")[-2000:]


def test_bench_acl_premise_sluice_bench_is_checked_as_anonymous_and_allowed_by_one_acl(
        broker_factory, tmp_path, certs):
    """What bench/acl's configurations rely on: `sluice bench` over PLAINTEXT is User:ANONYMOUS,
    refused without an ACL, and one literal ALL ACL on its topic lets it create, produce and
    fetch, also with prefixed ACLs of other principals on prefixes of the topic's name (a DENY
    among them) that every check matches by resource and then rejects by principal."""
    b, lst, admin = secured(broker_factory, tmp_path, certs)
    topic = unique_topic("aclbench")
    common = ["--broker", lst["PLAINTEXT"], "--topic", topic, "--timeout-secs", "15"]
    rc, report, err = sluice_bench("produce", *common, "--partitions", "2", "--records", "200")
    assert rc != 0 or (report and report["errors"] > 0), (rc, report, err)
    others = [acl(ResourceType.TOPIC, topic[:n], f"User:svc-{n}", AclOperation.WRITE,
                  perm=AclPermissionType.DENY if n % 2 else AclPermissionType.ALLOW,
                  pattern=ResourcePatternType.PREFIXED) for n in range(1, len(topic) + 1)]
    add_acls(admin, acl(ResourceType.TOPIC, topic, "User:ANONYMOUS", AclOperation.ALL), *others)
    rc, report, err = sluice_bench("produce", *common, "--partitions", "2", "--records", "2000")
    assert rc == 0 and report["records"] >= 2000 and report["errors"] == 0, (rc, report, err)
    rc, report, err = sluice_bench("consume", *common, "--records", "2000")
    assert rc == 0 and report["records"] >= 2000 and report["errors"] == 0, (rc, report, err)
    # A DENY for ANONYMOUS on a prefix of the name wins over the literal ALLOW.
    add_acls(admin, acl(ResourceType.TOPIC, topic[:3], "User:ANONYMOUS", AclOperation.WRITE,
                        perm=AclPermissionType.DENY, pattern=ResourcePatternType.PREFIXED))
    rc, report, err = sluice_bench("produce", *common, "--partitions", "2", "--records", "200")
    assert rc != 0 or (report and report["errors"] > 0), (rc, report, err)
    assert b.alive()
