"""KafkaServerCodec: Kafka frames to the codec-neutral request model and back, and the
coordinator's classic groups reached through the same handlers a real request goes through.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
import trio

from minilog.broker._services import RequestContext
from minilog.broker.groups import CoordinatorConfig, GroupCoordinator
from minilog.broker.handlers import HANDLERS
from minilog.protocol import (
    BadRequest,
    ErrorCode,
    ErrorResponse,
    FetchPartitionResponse,
    FetchResponse,
    FetchTopicResponse,
    FrameError,
    MetadataRequest,
    ProduceRequest,
)
from minilog.protocol import kafka as K

from test_groups_coordinator import FakeBroker

kp_consumer = pytest.importorskip("kafka.protocol.consumer")
kp_producer = pytest.importorskip("kafka.protocol.producer")


def _requests(codec: K.KafkaServerCodec, *frames: bytes) -> list:
    for frame in frames:
        codec.feed(frame)
    out = []
    while (item := codec.next_request()) is not K.NEED_DATA:
        out.append(item)
    return out


def _frame(api_key: int, version: int, correlation_id: int, body: dict) -> bytes:
    return K.encode_request(api_key, version, correlation_id, "t", body)


def test_produce_becomes_the_request_model_with_records_as_views():
    codec = K.KafkaServerCodec()
    batch = bytes(16) + b"\x02" + bytes(53)      # opaque here; only its magic byte is looked at
    [(header, request)] = _requests(codec, _frame(0, 7, 5, {
        "transactional_id": None, "acks": -1, "timeout_ms": 100,
        "topic_data": [{"name": "t", "partition_data": [{"index": 2, "records": batch}]}]}))
    assert (header.api_key, header.api_version, header.correlation_id, header.client_id) == (0, 7, 5, "t")
    assert isinstance(request, ProduceRequest) and request.acks == -1
    part = request.topics[0].partitions[0]
    assert part.partition == 2 and isinstance(part.records, memoryview) and bytes(part.records) == batch


def test_produce_v2_is_refused_as_old_message_format_and_a_transactional_produce_as_unsupported():
    codec = K.KafkaServerCodec()
    body = {"acks": 1, "timeout_ms": 1, "topic_data": []}
    [(_, old)] = _requests(codec, _frame(0, 2, 1, body))
    assert isinstance(old, BadRequest) and old.error_code == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert "magic 2" in old.message
    magic1 = bytearray(70)
    magic1[16] = 1
    [(_, old_batch)] = _requests(codec, _frame(0, 7, 3, {**body, "transactional_id": None, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": bytes(magic1)}]}]}))
    assert isinstance(old_batch, BadRequest) and old_batch.error_code == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
    assert "magic 1" in old_batch.message
    [(_, tx)] = _requests(codec, _frame(0, 3, 2, {**body, "transactional_id": "tx"}))
    assert isinstance(tx, BadRequest) and "transactions" in tx.message


@pytest.mark.parametrize("version, topics, expected", [
    (0, [], None), (1, None, None), (4, [], []), (4, [{"name": "a"}], ["a"])])
def test_metadata_topics_null_and_empty_by_version(version, topics, expected):
    """v0: an empty list means every topic; v1+: null means every topic, empty means none."""
    codec = K.KafkaServerCodec()
    [(_, request)] = _requests(codec, _frame(3, version, 1, {"topics": topics}))
    assert isinstance(request, MetadataRequest) and request.topics == expected


def test_error_response_is_encoded_in_the_apis_own_shape():
    """A whole-request failure puts the code in every partition of the request (produce has no
    top-level error field); kafka-python reads it."""
    codec = K.KafkaServerCodec()
    [(header, _)] = _requests(codec, _frame(0, 7, 9, {
        "transactional_id": None, "acks": 1, "timeout_ms": 1,
        "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": b""}, {"index": 1, "records": b""}]}]}))
    pieces = codec.encode_response(header, ErrorResponse(int(ErrorCode.INVALID_REQUEST), "bad"))
    decoded = kp_producer.ProduceResponse.decode(b"".join(pieces)[4:], version=7, header=True)
    assert [p.error_code for p in decoded.responses[0].partition_responses] == [42, 42]


def test_fetch_response_without_records_sends_empty_bytes_not_null():
    """kafka-python cannot read a null record set; Kafka sends empty bytes."""
    codec = K.KafkaServerCodec()
    [(header, _)] = _requests(codec, _frame(1, 4, 3, {"max_wait_ms": 0, "min_bytes": 1, "topics": []}))
    response = FetchResponse(0, [FetchTopicResponse("t", [FetchPartitionResponse(0, 0, 5, records=None)])])
    data = b"".join(codec.encode_response(header, response))
    decoded = kp_consumer.FetchResponse.decode(data[4:], version=4, header=True)
    part = decoded.responses[0].partitions[0]
    assert part.records == b"" and part.high_watermark == 5 and part.last_stable_offset == 5


def test_api_versions_above_ours_and_unknown_apis():
    codec = K.KafkaServerCodec()
    frame = struct.pack(">hhi", 18, 7, 11) + b"\x00\x01c\x00" + b"\x01\x01\x00"
    [(header, request)] = _requests(codec, struct.pack(">i", len(frame)) + frame)
    assert isinstance(request, BadRequest) and header.correlation_id == 11
    answer = K.decode_response(18, 0, b"".join(codec.encode_response(header, ErrorResponse(35)))[4:])
    assert answer.body["error_code"] == 35 and answer.correlation_id == 11
    frame = struct.pack(">hhi", 71, 0, 12) + b"\xff\xff"
    codec.feed(struct.pack(">i", len(frame)) + frame)
    with pytest.raises(FrameError):
        codec.next_request()
    with pytest.raises(FrameError):           # sticky: the connection is done
        codec.next_request()


def test_api_versions_lists_the_codec_table():
    assert K.KafkaServerCodec().api_versions() == [
        [a["api_key"], a["min_version"], a["max_version"]] for a in K.supported_api_versions()]


# -- through the handlers, as a real request goes ------------------------------------------------

async def _call(coordinator: GroupCoordinator, codec: K.KafkaServerCodec, api_key: int, version: int,
                body: dict) -> dict:
    [(header, request)] = _requests(codec, _frame(api_key, version, 1, body))
    services = SimpleNamespace(groups=coordinator, broker_id=0)
    response = await HANDLERS[type(request)](services, request, RequestContext(1, "test", 0))
    return K.decode_response(api_key, version, b"".join(codec.encode_response(header, response))[4:]).body


@pytest.fixture
def coordinator():
    c = GroupCoordinator(FakeBroker({"t": 2}), CoordinatorConfig(offsets_topic_num_partitions=3))
    c.load_nowait()
    return c


async def test_classic_group_join_sync_commit_fetch_and_describe(coordinator, autojump_clock):
    """A Kafka member joins, leads, syncs, commits with its generation (a stale generation is
    fenced) and the offsets are in the coordinator's store."""
    codec = K.KafkaServerCodec()
    joined = await _call(coordinator, codec, 11, 2, {
        "group_id": "g", "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000, "member_id": "",
        "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff"}]})
    assert joined["error_code"] == 0 and joined["leader"] == joined["member_id"]
    member, generation = joined["member_id"], joined["generation_id"]
    assignment = b"\x00\x00" + b"\x00\x00\x00\x01" + b"\x00\x01t" + b"\x00\x00\x00\x02" + bytes(4) + b"\x00\x00\x00\x01" + b"\xff\xff\xff\xff"
    synced = await _call(coordinator, codec, 14, 1, {"group_id": "g", "generation_id": generation,
                                                     "member_id": member,
                                                     "assignments": [{"member_id": member, "assignment": assignment}]})
    assert synced == {"throttle_time_ms": 0, "error_code": 0, "assignment": assignment}

    def commit(gen: int) -> dict:
        return {"group_id": "g", "generation_id_or_member_epoch": gen, "member_id": member,
                "retention_time_ms": -1, "topics": [{"name": "t", "partitions": [
                    {"partition_index": 1, "committed_offset": 42, "committed_metadata": ""}]}]}

    stale = await _call(coordinator, codec, 8, 2, commit(generation - 1))
    assert stale["topics"][0]["partitions"][0]["error_code"] == ErrorCode.ILLEGAL_GENERATION
    ok = await _call(coordinator, codec, 8, 2, commit(generation))
    assert ok["topics"][0]["partitions"][0]["error_code"] == 0
    fetched = await _call(coordinator, codec, 9, 3, {"group_id": "g", "topics": None})
    assert fetched["topics"][0]["partitions"][0]["committed_offset"] == 42
    described = await _call(coordinator, codec, 15, 0, {"groups": ["g"]})
    assert described["groups"][0]["group_state"] == "Stable"
    assert described["groups"][0]["members"][0]["member_assignment"] == assignment
    native = coordinator.describe_group("g")           # what `minilog groups describe` shows
    assert native.group_state == "stable"
    assert [(tp.topic, tp.partitions) for tp in native.members[0].assignment] == [("t", [0, 1])]
    assert [g.group_id for g in coordinator.list_groups([])] == ["g"]


async def test_a_group_is_one_kind_or_the_other(coordinator, autojump_clock):
    """A minilog member cannot heartbeat into a classic group that has members, and a Kafka
    member cannot join a minilog group that has members: INCONSISTENT_GROUP_PROTOCOL with a
    message naming the kind."""
    codec = K.KafkaServerCodec()
    joined = await _call(coordinator, codec, 11, 2, {
        "group_id": "kafka-group", "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000,
        "member_id": "", "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b""}]})
    assert joined["error_code"] == 0
    with pytest.raises(Exception) as info:
        await coordinator.heartbeat({"group_id": "kafka-group", "member_id": "", "member_epoch": 0,
                                     "rebalance_timeout_ms": 1000, "subscribed_topic_names": ["t"],
                                     "server_assignor": None, "topic_partitions": None, "client_id": "c"})
    assert info.value.code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL and "classic" in str(info.value)
    await coordinator.heartbeat({"group_id": "native-group", "member_id": "", "member_epoch": 0,
                                 "rebalance_timeout_ms": 1000, "subscribed_topic_names": ["t"],
                                 "server_assignor": None, "topic_partitions": None, "client_id": "c"})
    refused = await _call(coordinator, codec, 11, 2, {
        "group_id": "native-group", "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000,
        "member_id": "", "protocol_type": "consumer", "protocols": [{"name": "range", "metadata": b""}]})
    assert refused["error_code"] == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    await trio.lowlevel.checkpoint()
