"""Unmodified Kafka clients against a real `minilog serve --kafka-port` process.

kafka-python, aiokafka, confluent-kafka (librdkafka) and kcat each create a
topic (kcat: produce to an auto-created one), produce keyed records, consume
them in a group, commit, and a restarted consumer resumes from the commit.
Cross-checks: what minilog's own client produces, each Kafka client reads,
and the other way round, with the same key on the same partition. The raw
protocol tests check the listener's refusals (old message format, an
ApiVersions version above ours, an oversized frame).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import subprocess
import time
import uuid
from typing import Any

import pytest

import minilog
from minilog.client._partitioner import partition_for_key
from minilog.protocol import kafka as K

from conftest import BrokerProcess, _readline_with_deadline

WAIT_S = 30.0


class KafkaBroker:
    """A started `minilog serve --kafka-port 0` subprocess; `kafka` is the Kafka listener's "host:port"."""

    def __init__(self, proc: BrokerProcess) -> None:
        assert proc.proc is not None and proc.proc.stdout is not None
        line = proc.more_lines[0] if proc.more_lines else _readline_with_deadline(proc.proc, WAIT_S)
        assert "kafka listener on" in line, f"no kafka listener line: {line!r}\n{proc.logs()}"
        self.proc = proc
        self.kafka = line.rsplit(" ", 1)[1].strip()

    @property
    def native(self) -> str:
        return self.proc.bootstrap


@pytest.fixture
def kbroker(broker_factory) -> KafkaBroker:
    # Short session timeouts are allowed so restarted consumers rejoin quickly.
    return KafkaBroker(broker_factory("--kafka-port", "0", "--set", "group.min.session.timeout.ms=1000"))


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _native_produce(kb: KafkaBroker, topic: str, records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, int]]:
    reports: list[tuple[Any, Any]] = []
    with minilog.Producer(kb.native, linger_ms=1) as p:
        for key, value in records:
            p.produce(topic, value, key=key, on_delivery=lambda err, r: reports.append((err, r)))
        assert p.flush(WAIT_S) == 0
    assert all(err is None for err, _ in reports), reports
    return [(r.key, r.partition) for _, r in reports]


def _native_read_all(kb: KafkaBroker, topic: str, partitions: int, count: int) -> list[Any]:
    got: list[Any] = []
    with minilog.Consumer(kb.native, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(partitions)])
        deadline = time.monotonic() + WAIT_S
        while len(got) < count and time.monotonic() < deadline:
            got.extend(c.poll(timeout_ms=200))
    assert len(got) == count, got
    return got


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["minilog", *args], capture_output=True, text=True, timeout=60)


# -- kafka-python ------------------------------------------------------------------------------

def test_kafka_python_produce_consume_commit_resume(kbroker):
    """kafka-python: admin create, keyed produce, group consume, commit, resume after restart;
    the records are read by minilog's own consumer on Kafka's partitions for their keys."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    topic, group = _topic("kp"), _topic("kpg")
    admin = KafkaAdminClient(bootstrap_servers=kbroker.kafka, request_timeout_ms=10_000)
    admin.create_topics([NewTopic(topic, 3, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=kbroker.kafka, acks="all")
    placed = {}
    for i in range(30):
        md = producer.send(topic, key=b"key-%d" % (i % 5), value=b"v%d" % i).get(timeout=WAIT_S)
        placed[b"key-%d" % (i % 5)] = md.partition
    producer.close()
    assert all(p == partition_for_key(k, 3) for k, p in placed.items())

    def consume(expected: int) -> list[Any]:
        consumer = KafkaConsumer(topic, bootstrap_servers=kbroker.kafka, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=1000, session_timeout_ms=6000)
        got: list[Any] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(consumer)
        consumer.commit()
        consumer.close()
        return got

    first = consume(30)
    assert sorted(r.value for r in first) == sorted(b"v%d" % i for i in range(30))
    _native_produce(kbroker, topic, [(b"key-1", b"late")])
    second = consume(1)
    assert [r.value for r in second] == [b"late"]       # resumed from the commit
    assert second[0].partition == placed[b"key-1"]       # native client: same key, same partition
    native = _native_read_all(kbroker, topic, 3, 31)
    assert {(r.key, r.partition) for r in native} >= {(k, p) for k, p in placed.items()}


# -- aiokafka ----------------------------------------------------------------------------------

def test_aiokafka_produce_consume_commit_resume(kbroker):
    """aiokafka: idempotent producer, group consumer, commit, resume; minilog's client reads them."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic, group = _topic("ak"), _topic("akg")

    async def produce() -> dict[bytes, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kbroker.kafka)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 2, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kbroker.kafka, acks="all", enable_idempotence=True)
        await producer.start()
        placed = {}
        for i in range(20):
            md = await producer.send_and_wait(topic, key=b"k%d" % (i % 4), value=b"a%d" % i)
            placed[b"k%d" % (i % 4)] = md.partition
        await producer.stop()
        return placed

    async def consume(expected: int) -> list[Any]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kbroker.kafka, group_id=group,
                                    auto_offset_reset="earliest", enable_auto_commit=False,
                                    session_timeout_ms=6000)
        await consumer.start()
        got: list[Any] = []
        try:
            deadline = time.monotonic() + WAIT_S
            while len(got) < expected and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    got.extend(records)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    placed = asyncio.run(produce())
    assert all(p == partition_for_key(k, 2) for k, p in placed.items())
    assert sorted(r.value for r in asyncio.run(consume(20))) == sorted(b"a%d" % i for i in range(20))
    _native_produce(kbroker, topic, [(b"k2", b"native")])
    second = asyncio.run(consume(1))
    assert [(r.value, r.partition) for r in second] == [(b"native", placed[b"k2"])]


# -- confluent-kafka ---------------------------------------------------------------------------

PRODUCTION_PRODUCER = {
    "acks": "all", "enable.idempotence": True, "retries": 3,
    "max.in.flight.requests.per.connection": 5, "compression.type": "lz4", "linger.ms": 5,
}


def test_confluent_kafka_production_producer_and_group_consumer(kbroker):
    """confluent-kafka with a typical production producer configuration (idempotent, lz4,
    acks=all, delivery callback, keyed JSON events, flush) works as is; a group consumer
    reads, commits and resumes; keys land where minilog's client puts them."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic, group = _topic("ck"), _topic("ckg")
    admin = AdminClient({"bootstrap.servers": kbroker.kafka})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(WAIT_S)
    delivered: list[tuple[Any, str, int, int]] = []

    def on_delivery(err: Any, msg: Any) -> None:
        delivered.append((err, msg.key().decode(), msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": kbroker.kafka, **PRODUCTION_PRODUCER})
    for i in range(200):
        event = {"order_id": i, "user": f"user-{i % 7}", "amount": i * 3}
        producer.produce(topic, key=event["user"], value=json.dumps(event), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(WAIT_S) == 0
    assert [d for d in delivered if d[0] is not None] == []
    assert len(delivered) == 200
    by_key: dict[str, set[int]] = {}
    for _, key, partition, _ in delivered:
        by_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in by_key.values()), by_key   # per-key order holds
    # librdkafka's default partitioner is consistent_random (CRC32); with murmur2_random it
    # places keys as Kafka's Java client and minilog's client do.
    java_compatible = Producer({"bootstrap.servers": kbroker.kafka, "partitioner": "murmur2_random"})
    murmur: list[int] = []
    java_compatible.produce(topic, key="user-3", value=b"{}", on_delivery=lambda e, m: murmur.append(m.partition()))
    assert java_compatible.flush(WAIT_S) == 0
    assert murmur == [partition_for_key(b"user-3", 4)]

    def consume(expected: int) -> list[Any]:
        consumer = Consumer({"bootstrap.servers": kbroker.kafka, "group.id": group,
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "session.timeout.ms": 6000})
        consumer.subscribe([topic])
        got: list[Any] = []
        deadline = time.monotonic() + WAIT_S
        while len(got) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg)
        consumer.commit(asynchronous=False)
        consumer.close()
        return got

    first = consume(201)
    assert sorted(json.loads(m.value()).get("order_id", -1) for m in first) == [-1, *range(200)]
    _native_produce(kbroker, topic, [(b"user-3", b'{"order_id": 200}')])
    second = consume(1)
    assert [(m.key(), m.partition()) for m in second] == [(b"user-3", partition_for_key(b"user-3", 4))]
    native = _native_read_all(kbroker, topic, 4, 202)
    assert {r.key for r in native} == {f"user-{i}".encode() for i in range(7)}


# -- kcat --------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")
def test_kcat_auto_created_topic_group_consume_and_resume(kbroker):
    """kcat produces to an auto-created topic, consumes it in a group (committing), and a second
    run of the group consumer resumes after the commit; minilog's client reads kcat's records."""
    topic, group = _topic("kc"), _topic("kcg")
    lines = "".join(f"key-{i % 3}:value-{i}\n" for i in range(12))
    subprocess.run(["kcat", "-P", "-b", kbroker.kafka, "-t", topic, "-K:"], input=lines, text=True,
                   check=True, timeout=60)

    def group_consume() -> list[str]:
        out = subprocess.run(["kcat", "-b", kbroker.kafka, "-G", group, "-e",
                              "-X", "auto.offset.reset=earliest",
                              "-X", "enable.auto.commit=true", "-X", "auto.commit.interval.ms=100",
                              "-f", "%k:%s\n", topic],
                             capture_output=True, text=True, timeout=90, check=True)
        return [line for line in out.stdout.splitlines() if line]

    assert sorted(group_consume()) == sorted(f"key-{i % 3}:value-{i}" for i in range(12))
    _native_produce(kbroker, topic, [(b"key-0", b"after")])
    assert group_consume() == ["key-0:after"]
    native = _native_read_all(kbroker, topic, 1, 13)
    assert native[0].key == b"key-0" and native[0].value == b"value-0"


# -- minilog's CLI sees the Kafka clients' groups --------------------------------------------

def test_minilog_groups_list_and_describe_show_a_kafka_group_with_lag(kbroker):
    """A kafka-python group's committed offsets show in `minilog groups list|describe` with lag."""
    from kafka import KafkaConsumer, KafkaProducer

    topic, group = _topic("lag"), _topic("lagg")
    producer = KafkaProducer(bootstrap_servers=kbroker.kafka)
    for i in range(5):
        producer.send(topic, key=b"k", value=b"%d" % i).get(timeout=WAIT_S)
    consumer = KafkaConsumer(topic, bootstrap_servers=kbroker.kafka, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=1000)
    got: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < 5 and time.monotonic() < deadline:
        got.extend(consumer)
    consumer.commit()
    for i in range(3):
        producer.send(topic, key=b"k", value=b"x%d" % i).get(timeout=WAIT_S)
    producer.close()
    listed = _cli("groups", "list", "--bootstrap-server", kbroker.native)
    assert group in listed.stdout, listed
    described = _cli("groups", "describe", group, "--bootstrap-server", kbroker.native)
    assert described.returncode == 0, described
    row = next(line.split() for line in described.stdout.splitlines() if line.startswith(topic))
    assert row[1:5] == ["0", "5", "8", "3"], described.stdout      # partition, current, end, lag
    consumer.close()


# -- raw protocol: refusals -----------------------------------------------------------------------

def _raw(kb: KafkaBroker) -> socket.socket:
    host, port = kb.kafka.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=WAIT_S)


def _roundtrip(sock: socket.socket, frame: bytes) -> bytes:
    sock.sendall(frame)
    size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def test_old_message_format_is_refused_with_a_clear_error(kbroker):
    """Produce v2 (message format v1) gets UNSUPPORTED_FOR_MESSAGE_FORMAT per partition; nothing is
    stored and the connection stays usable."""
    topic = _topic("old")
    with _raw(kbroker) as sock:
        meta = K.decode_response(3, 4, _roundtrip(sock, K.encode_request(
            3, 4, 1, "t", {"topics": [{"name": topic}], "allow_auto_topic_creation": True}))[0:])
        assert meta.body["topics"][0]["error_code"] in (0, 5)
        old_message_set = bytes(8) + struct.pack(">i", 30) + bytes(30)
        answer = K.decode_response(0, 2, _roundtrip(sock, K.encode_request(0, 2, 2, "t", {
            "acks": 1, "timeout_ms": 1000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": old_message_set}]}]})))
        part = answer.body["responses"][0]["partition_responses"][0]
        assert part["error_code"] == 43
        again = K.decode_response(18, 2, _roundtrip(sock, K.encode_request(18, 2, 3, "t", {})))
        assert again.body["error_code"] == 0


def test_api_versions_above_ours_gets_the_v0_answer(kbroker):
    with _raw(kbroker) as sock:
        frame = struct.pack(">hhi", 18, 9, 77) + b"\x00\x01c" + b"\x00" + b"\x02a\x021\x00"
        answer = K.decode_response(18, 0, _roundtrip(sock, struct.pack(">i", len(frame)) + frame))
    assert answer.correlation_id == 77 and answer.body["error_code"] == 35
    assert {a["api_key"] for a in answer.body["api_keys"]} == {a["api_key"] for a in K.supported_api_versions()}


def test_frame_above_socket_request_max_bytes_closes_the_connection(kbroker):
    """The size prefix alone is enough to refuse a frame above socket.request.max.bytes."""
    with _raw(kbroker) as sock:
        sock.sendall(struct.pack(">i", 2**31 - 1) + b"\x00\x12")
        with pytest.raises((ConnectionError, OSError)):
            _recv_exactly(sock, 4)


# -- the `listeners` setting -----------------------------------------------------------------

def test_listeners_setting_opens_both_listeners(broker_factory):
    """`listeners = "kafka://...,native://..."` opens both (native first, whatever the order)."""
    proc = broker_factory("--set", "listeners=kafka://127.0.0.1:0,native://127.0.0.1:0")
    kb = KafkaBroker(proc)
    with _raw(kb) as sock:
        answer = K.decode_response(18, 1, _roundtrip(sock, K.encode_request(18, 1, 5, "t", {})))
    assert answer.body["error_code"] == 0
    with minilog.Admin(kb.native) as admin:
        admin.create_topic("via-native", partitions=1)
        assert "via-native" in admin.list_topics()


@pytest.mark.parametrize("spec, problem", [
    ("kafka://h:1", "needs a native listener"),
    ("native://h:1,native://h:2", "a second native"),
    ("plaintext://h:1", "KIND://HOST:PORT"),
    ("native://h:x", "not a number"),
    ("native://h:70000", "not in"),
])
def test_listeners_setting_refuses_bad_specs(spec, problem):
    from minilog.broker.kafka.spec import listeners_problem, parse_listeners

    assert problem in (listeners_problem(spec) or "")
    assert parse_listeners("native://:9092, kafka://[::1]:9093") == [("native", "0.0.0.0", 9092),
                                                                     ("kafka", "::1", 9093)]
