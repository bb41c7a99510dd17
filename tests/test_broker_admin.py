"""Topic administration, configs, producer ids and idempotence, against an
in-process broker (fast: same trio loop, real socket)."""

from __future__ import annotations

import os

import trio

from minilog.protocol import ApiKey, ErrorCode, build_batch

from conftest import AsyncRawClient, fetch_payload, produce_payload


async def _client(broker) -> AsyncRawClient:
    return await AsyncRawClient.connect(broker.port)


async def _create(c, topics, validate_only=False):
    r = await c.request(ApiKey.CREATE_TOPICS, {"topics": topics, "timeout_ms": 1000,
                                               "validate_only": validate_only})
    return [(t["name"], t["error_code"]) for t in r.payload["topics"]]


def _t(name, n=1, rf=1, configs=None):
    return {"name": name, "num_partitions": n, "replication_factor": rf, "configs": configs or {}}


async def test_create_topics_validation(inproc_broker):
    """Kafka's name rules, partition and replication checks, config validation, validate_only."""
    c = await _client(inproc_broker)
    got = await _create(c, [
        _t("ok.name_1-x", 2), _t(""), _t("."), _t(".."), _t("a" * 250), _t("bad/name"),
        _t("bad name"), _t("zero", 0), _t("rf3", 1, 3), _t("badcfg", 1, 1, {"retention.ms": "soon"}),
        _t("unknowncfg", 1, 1, {"no.such": "1"}), _t("codec", 1, 1, {"compression.type": "brotli"}),
        _t("default", -1, -1, {"compression.type": "zstd"}), _t("a" * 249),
    ])
    assert got == [
        ("ok.name_1-x", 0), ("", ErrorCode.INVALID_TOPIC_EXCEPTION),
        (".", ErrorCode.INVALID_TOPIC_EXCEPTION), ("..", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("a" * 250, ErrorCode.INVALID_TOPIC_EXCEPTION), ("bad/name", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("bad name", ErrorCode.INVALID_TOPIC_EXCEPTION), ("zero", ErrorCode.INVALID_PARTITIONS),
        ("rf3", ErrorCode.INVALID_REPLICATION_FACTOR), ("badcfg", ErrorCode.INVALID_CONFIG),
        ("unknowncfg", ErrorCode.INVALID_CONFIG), ("codec", ErrorCode.INVALID_CONFIG),
        ("default", 0), ("a" * 249, 0),
    ]
    assert await _create(c, [_t("ok.name_1-x")]) == [("ok.name_1-x", ErrorCode.TOPIC_ALREADY_EXISTS)]
    assert await _create(c, [_t("dry", 4)], validate_only=True) == [("dry", 0)]
    assert inproc_broker.topic_metadata("dry") is None
    assert inproc_broker.topic_metadata("default").partitions == 1
    assert os.path.isdir(os.path.join(inproc_broker.data_dir, "ok.name_1-x-1"))


async def test_metadata_auto_create_and_unknown(inproc_broker):
    """METADATA auto-creates when allowed, else reports UNKNOWN_TOPIC_OR_PARTITION."""
    c = await _client(inproc_broker)
    r = await c.request(ApiKey.METADATA, {"topics": ["nope"], "allow_auto_topic_creation": False})
    assert r.payload["topics"][0]["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    r = await c.request(ApiKey.METADATA, {"topics": ["auto", "bad name"], "allow_auto_topic_creation": True})
    auto, bad = r.payload["topics"]
    assert auto["error_code"] == 0 and auto["partitions"][0]["leader"] == inproc_broker.broker_id
    assert auto["partitions"][0]["isr"] == [inproc_broker.broker_id]
    assert bad["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert r.payload["brokers"] == [{"node_id": 0, "host": "127.0.0.1", "port": inproc_broker.port}]


async def test_delete_topic_and_recreate_starts_empty(inproc_broker):
    """A deleted topic's data is gone: recreating the name starts at offset 0."""
    c = await _client(inproc_broker)
    await c.create_topic("t", 2)
    await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([b"x"] * 5)])
    r = await c.request(ApiKey.DELETE_TOPICS, {"topics": ["t", "nope"], "timeout_ms": 1000})
    assert [t["error_code"] for t in r.payload["topics"]] == [0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION]
    assert inproc_broker.partition("t", 0) is None
    await c.create_topic("t", 1)
    r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([b"y"])])
    assert r.payload["topics"][0]["partitions"][0]["base_offset"] == 0


async def test_create_partitions_increase_only(inproc_broker):
    c = await _client(inproc_broker)
    await c.create_topic("t", 2)
    req = lambda n: {"topics": [{"name": "t", "count": n}], "timeout_ms": 1000, "validate_only": False}
    assert (await c.request(ApiKey.CREATE_PARTITIONS, req(2))).payload["results"][0]["error_code"] \
        == ErrorCode.INVALID_PARTITIONS
    assert (await c.request(ApiKey.CREATE_PARTITIONS, req(5))).payload["results"][0]["error_code"] == 0
    assert inproc_broker.topic_metadata("t").partitions == 5
    r = await c.request(ApiKey.PRODUCE, produce_payload("t", 4), [build_batch([b"z"])])
    assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0


async def test_alter_configs_applied_live(inproc_broker):
    """INCREMENTAL_ALTER_CONFIGS changes the running partitions (max.message.bytes here)."""
    c = await _client(inproc_broker)
    await c.create_topic("t")
    batch = build_batch([os.urandom(5000)])

    async def alter(ops, validate_only=False):
        r = await c.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, {"resources": [
            {"resource_type": 2, "resource_name": "t", "configs": ops}], "validate_only": validate_only})
        return r.payload["results"][0]["error_code"]

    assert await alter([{"name": "max.message.bytes", "op": 0, "value": "1000"}]) == 0
    r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch])
    assert r.payload["topics"][0]["partitions"][0]["error_code"] == ErrorCode.MESSAGE_TOO_LARGE
    assert await alter([{"name": "max.message.bytes", "op": 0, "value": "-5"}]) == ErrorCode.INVALID_CONFIG
    assert await alter([{"name": "nope", "op": 0, "value": "1"}]) == ErrorCode.INVALID_CONFIG
    assert await alter([{"name": "max.message.bytes", "op": 1, "value": None}]) == 0
    r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch])
    assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0
    r = await c.request(ApiKey.DESCRIBE_CONFIGS, {"resources": [
        {"resource_type": 2, "resource_name": "t", "config_names": ["max.message.bytes"]},
        {"resource_type": 4, "resource_name": "0", "config_names": ["num.partitions"]},
        {"resource_type": 2, "resource_name": "nope", "config_names": None}]})
    topic, brk, missing = r.payload["results"]
    assert topic["configs"][0]["is_default"] and topic["configs"][0]["value"] == "1048588"
    assert brk["configs"] == [{"name": "num.partitions", "value": "1", "read_only": True,
                               "is_default": True, "source": "DEFAULT_CONFIG"}]
    assert missing["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_describe_topic_partitions_offsets(inproc_broker):
    c = await _client(inproc_broker)
    await c.create_topic("t", 2)
    batch = build_batch([b"v"] * 4)
    await c.request(ApiKey.PRODUCE, produce_payload("t", 1), [batch])
    r = await c.request(ApiKey.DESCRIBE_TOPIC_PARTITIONS, {"topics": ["t", "nope"]})
    t, nope = r.payload["topics"]
    p1 = t["partitions"][1]
    assert (p1["log_start_offset"], p1["log_end_offset"], p1["high_watermark"]) == (0, 4, 4)
    assert p1["size_bytes"] == len(batch) and p1["leader_epoch"] == 0
    assert nope["error_code"] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


async def test_list_offsets_by_timestamp(inproc_broker):
    c = await _client(inproc_broker)
    await c.create_topic("t")
    for ts in (1000, 2000, 3000):
        await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([b"a", b"b"], timestamps=ts)])

    async def at(ts):
        r = await c.request(ApiKey.LIST_OFFSETS, {"replica_id": -1, "isolation_level": 0, "topics": [
            {"topic": "t", "partitions": [{"partition": 0, "timestamp": ts}]}]})
        p = r.payload["topics"][0]["partitions"][0]
        return p["offset"], p["timestamp"]

    assert await at(1500) == (2, 2000)
    assert await at(500) == (0, 1000)
    assert await at(9999) == (-1, -1)
    assert (await at(-1))[0] == 6 and (await at(-2))[0] == 0


async def test_idempotent_producer_dedup(inproc_broker):
    """Duplicates get the original offset; gaps get OUT_OF_ORDER_SEQUENCE_NUMBER; ids increase."""
    c = await _client(inproc_broker)
    await c.create_topic("t")
    init = {"transactional_id": None, "transaction_timeout_ms": 0, "producer_id": -1, "producer_epoch": -1}
    first = (await c.request(ApiKey.INIT_PRODUCER_ID, init)).payload
    second = (await c.request(ApiKey.INIT_PRODUCER_ID, init)).payload
    assert second["producer_id"] > first["producer_id"] and first["producer_epoch"] == 0
    pid = first["producer_id"]

    async def send(seq, n=2, epoch=0):
        batch = build_batch([b"x"] * n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)
        r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch])
        p = r.payload["topics"][0]["partitions"][0]
        return p["error_code"], p["base_offset"]

    assert await send(0) == (0, 0)
    assert await send(2) == (0, 2)
    assert await send(0) == (0, 0)              # duplicate of the first batch
    assert await send(2) == (0, 2)
    assert (await send(9))[0] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert await send(4) == (0, 4)
    assert await send(0, epoch=1) == (0, 6)     # a new epoch restarts at 0
    assert (await send(6, epoch=0))[0] == ErrorCode.INVALID_PRODUCER_EPOCH
    assert inproc_broker.partition("t", 0).log_end_offset == 8


async def test_producer_ids_increase_across_restart(tmp_path):
    """Producer ids persist in the data dir: a restarted broker never reuses one."""
    from minilog.broker.app import Broker
    from minilog.broker.config import BrokerConfig

    ids = []
    for _ in range(2):
        b = Broker(BrokerConfig.from_sources({}), str(tmp_path / "d"), port=0)
        async with trio.open_nursery() as n:
            await n.start(b.run)
            c = await AsyncRawClient.connect(b.port)
            r = await c.request(ApiKey.INIT_PRODUCER_ID, {"transactional_id": None,
                                "transaction_timeout_ms": 0, "producer_id": -1, "producer_epoch": -1})
            ids.append(r.payload["producer_id"])
            await c.aclose()
            b.request_shutdown()
    assert ids[1] > ids[0]


async def test_fetch_respects_max_bytes_and_wakes_on_any_partition(inproc_broker):
    """max_bytes bounds the response (at least one batch); a long poll on two partitions
    returns as soon as either gets data."""
    c = await _client(inproc_broker)
    await c.create_topic("t", 2)
    batch = build_batch([b"x" * 1000])
    for _ in range(5):
        await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch])
    r = await c.request(ApiKey.FETCH, fetch_payload("t", 0, 0, max_bytes=2500))
    assert len(r.attachments[0]) == 2 * len(batch)
    r = await c.request(ApiKey.FETCH, fetch_payload("t", 0, 0, max_bytes=10))
    assert len(r.attachments[0]) == len(batch)

    poll = fetch_payload("t", 0, 5, max_wait_ms=20_000)
    poll["topics"][0]["partitions"].append(dict(poll["topics"][0]["partitions"][0], partition=1,
                                                fetch_offset=0))
    producer = await _client(inproc_broker)
    with trio.fail_after(5):
        await c.send(ApiKey.FETCH, poll)
        while sum(inproc_broker.partition("t", p).statistics().waiters for p in (0, 1)) < 2:
            await trio.sleep(0.001)               # until the fetch is parked on both partitions
        await producer.request(ApiKey.PRODUCE, produce_payload("t", 1), [batch])
        r = await c.receive()
    p0, p1 = r.payload["topics"][0]["partitions"]
    assert p0["records"] == -1 and p1["records"] == 0


async def test_group_apis_answer_coordinator_not_available(tmp_path):
    """Without the group plugin, group APIs answer COORDINATOR_NOT_AVAILABLE (schema-valid)."""
    from minilog.broker.app import Broker
    from minilog.broker.config import BrokerConfig

    b = Broker(BrokerConfig.from_sources({}), str(tmp_path / "d"), port=0, group_coordinator=False)
    async with trio.open_nursery() as n:
        await n.start(b.run)
        c = await AsyncRawClient.connect(b.port)
        r = await c.request(ApiKey.LIST_GROUPS, {"states_filter": []})
        assert r.payload["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
        r = await c.request(ApiKey.FIND_COORDINATOR, {"key_type": 0, "keys": ["g"]})
        assert r.payload["coordinators"][0]["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
        r = await c.request(ApiKey.CONSUMER_GROUP_HEARTBEAT, {
            "group_id": "g", "member_id": "", "member_epoch": 0, "rebalance_timeout_ms": 1000,
            "subscribed_topic_names": ["t"], "server_assignor": None, "topic_partitions": None,
            "client_id": "c", "session_timeout_ms": None})
        assert r.payload["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
        await c.aclose()
        b.request_shutdown()


async def test_idempotent_dedup_survives_restart(tmp_path):
    """A retry of a batch written before a restart gets its original offset, not a duplicate."""
    from conftest import open_inproc_broker

    batch = bytes(build_batch([b"x"] * 3, producer_id=7, producer_epoch=0, base_sequence=0))
    async with open_inproc_broker(str(tmp_path / "d"), group_coordinator=False) as b:
        c = await AsyncRawClient.connect(b.port)
        await c.create_topic("t")
        await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([b"other"])])
        r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch])
        assert r.payload["topics"][0]["partitions"][0]["base_offset"] == 1
        await c.aclose()
    async with open_inproc_broker(str(tmp_path / "d"), group_coordinator=False) as b:
        c = await AsyncRawClient.connect(b.port)
        r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch])
        assert r.payload["topics"][0]["partitions"][0]["base_offset"] == 1
        assert b.partition("t", 0).log_end_offset == 4
        nxt = build_batch([b"y"], producer_id=7, producer_epoch=0, base_sequence=5)
        r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [nxt])
        assert r.payload["topics"][0]["partitions"][0]["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        await c.aclose()


async def test_issue_7_each_produced_batch_is_checked_once(inproc_broker, monkeypatch):
    """The replica manager's validate_records checks each batch (structure, CRC) once; the
    partition and the log use its header fields and never check the batch again."""
    import minilog.broker.replica_manager as rm
    import minilog.storage._log as storage_log

    checked = []
    real = rm.check_batch_fields

    def counting(buf, pos=0, size_max=None):
        checked.append(pos)
        return real(buf, pos, size_max)

    def refuse(*args, **kwargs):
        raise AssertionError("the log checked a batch the broker had already checked")

    monkeypatch.setattr(rm, "check_batch_fields", counting)
    monkeypatch.setattr(storage_log, "check_batch_fields", refuse)
    c = await _client(inproc_broker)
    await c.create_topic("t")
    batch = build_batch([b"x"] * 3)
    r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch + batch])
    assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0
    assert checked == [0, len(batch)]
    assert inproc_broker.partition("t", 0).log_end_offset == 6


async def test_each_listener_advertises_its_own_port(tmp_path):
    """A broker with two listeners: METADATA and FIND_COORDINATOR name the port the request
    came through, and both listeners serve the same topics."""
    from minilog.broker.app import Broker
    from minilog.broker.config import BrokerConfig
    from minilog.broker.listeners import ListenerConfig

    b = Broker(BrokerConfig.from_sources({}), str(tmp_path / "d"),
               listeners=[ListenerConfig("a", "127.0.0.1", 0), ListenerConfig("b", "127.0.0.1", 0)])
    async with trio.open_nursery() as n:
        await n.start(b.run)
        ports = [bound.info.port for bound in b.listeners.bound]
        assert len(set(ports)) == 2 and b.port == ports[0]
        for port in ports:
            c = await AsyncRawClient.connect(port)
            if port == ports[0]:
                assert await c.create_topic("t") == 0
            r = await c.request(ApiKey.METADATA, {"topics": ["t"], "allow_auto_topic_creation": False})
            assert r.payload["brokers"] == [{"node_id": 0, "host": "127.0.0.1", "port": port}]
            assert r.payload["topics"][0]["error_code"] == 0
            r = await c.request(ApiKey.FIND_COORDINATOR, {"key_type": 0, "keys": ["g"]})
            assert r.payload["coordinators"][0]["port"] == port
            await c.aclose()
        b.request_shutdown()


async def test_group_coordinator_follows_offsets_partition_leadership(inproc_broker):
    """The coordinator serves a group only while its __consumer_offsets partition is led here:
    resign forgets it, become_leader reloads it with its committed offsets."""
    from minilog.broker.groups import OFFSETS_TOPIC

    c = await _client(inproc_broker)
    await c.create_topic("t")
    r = await c.request(ApiKey.OFFSET_COMMIT, {"group_id": "g", "member_id": "", "member_epoch": -1,
                        "topics": [{"topic": "t", "partitions": [
                            {"partition": 0, "committed_offset": 42, "committed_leader_epoch": -1,
                             "committed_metadata": None}]}]})
    assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0
    coordinator = inproc_broker.groups
    p = coordinator.partition_for("g")
    coordinator.resign(p)
    assert "g" not in coordinator.store.groups()
    r = await c.request(ApiKey.FIND_COORDINATOR, {"key_type": 0, "keys": ["g"]})
    assert r.payload["coordinators"][0]["error_code"] == ErrorCode.COORDINATOR_NOT_AVAILABLE
    # The replica manager calls become_leader for a partition led here (as after a leader move).
    inproc_broker.replicas.on_leadership(OFFSETS_TOPIC, coordinator.become_leader, coordinator.resign)
    r = await c.request(ApiKey.OFFSET_FETCH, {"group_id": "g", "member_id": None, "member_epoch": -1,
                                              "topics": None})
    assert r.payload["error_code"] == 0
    assert r.payload["topics"][0]["partitions"][0]["committed_offset"] == 42
