"""Share groups (KIP-932): a clean run delivers every record exactly once, as Apache Kafka does.

Contract: five KafkaShareConsumers (ShareMember.java, implicit acknowledgement) of one share
group read one partition holding records written before they joined; once every record was
delivered they are stopped one after the other (each close() sends its last acknowledgements
and leaves the group while the others still poll). No consumer died and no lock expired, so
every offset is delivered once, at delivery count 1: a record delivered twice (the broker
released records a leaving member had delivered and acknowledged) fails the test. Kafka 4.4
delivers such a run with no redelivery (bench/share, ShareBench.java).
"""


from support import create_topic, unique_topic, wait_until
from test_groups import produce
from test_share_groups import ShareMember, compile_member, members, values_of  # noqa: F401 (members: fixture)

BROKER_CONFIG = (
    'share_auto_offset_reset = "earliest"\n'
    "group_share_session_timeout_ms = 6000\n"
    "group_share_heartbeat_interval_ms = 500\n"
)


def test_five_members_stopped_one_by_one_get_every_record_once(broker_factory, tmp_path, members):
    cfg = tmp_path / "sluice-share-once.toml"
    cfg.write_text(BROKER_CONFIG)
    broker = broker_factory.start(config=cfg)
    topic, group = unique_topic("once"), unique_topic("sg")
    create_topic(broker.bootstrap, topic, 1)
    n = 20_000
    want = {v.decode() for v in produce(broker.bootstrap, topic, 1, n, "v").values()}
    cp = compile_member(tmp_path)
    for i in range(5):
        members.append(ShareMember(cp, tmp_path, broker.bootstrap, topic, group, f"m{i}"))
    wait_until(lambda: values_of(members) >= want, 20.0, interval=0.2, what="every record delivered")
    for m in members:
        assert m.stop() == 0, m.stderr()
    deliveries = [(off, count, m.name) for m in members for (off, count, _) in m.records()]
    again = sorted((off, count, who) for off, count, who in deliveries if count != 1)
    assert not again, f"{len(again)} redeliveries, e.g. {again[:5]}"
    offsets = [off for off, _, _ in deliveries]
    assert len(offsets) == len(set(offsets)) == n, f"{len(offsets) - len(set(offsets))} offsets delivered twice"
