"""The Kafka binary protocol codec (minilog.protocol.kafka): one case table, kafka-python as oracle.

Every case is encoded by minilog and by kafka-python's own protocol classes
(an independent implementation of the same schemas) and the bytes must be
equal; then minilog decodes the bytes whole, byte by byte and with trailing
bytes (h11's habit) and must get the case back. A seeded fuzz checks that
random and mutated bytes decode or raise the codec's typed error.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from minilog.protocol import FrameError
from minilog.protocol import kafka as K
from minilog.protocol.kafka._codec import _REQUEST_PLANS, _RESPONSE_PLANS
from minilog.protocol.kafka._schema import Plan

kp_admin = pytest.importorskip("kafka.protocol.admin")
kp_consumer = pytest.importorskip("kafka.protocol.consumer")
kp_metadata = pytest.importorskip("kafka.protocol.metadata")
kp_producer = pytest.importorskip("kafka.protocol.producer")

KP_CLASSES: dict[int, tuple[Any, Any]] = {
    0: (kp_producer.ProduceRequest, kp_producer.ProduceResponse),
    1: (kp_consumer.FetchRequest, kp_consumer.FetchResponse),
    2: (kp_consumer.ListOffsetsRequest, kp_consumer.ListOffsetsResponse),
    3: (kp_metadata.MetadataRequest, kp_metadata.MetadataResponse),
    8: (kp_consumer.OffsetCommitRequest, kp_consumer.OffsetCommitResponse),
    9: (kp_consumer.OffsetFetchRequest, kp_consumer.OffsetFetchResponse),
    10: (kp_metadata.FindCoordinatorRequest, kp_metadata.FindCoordinatorResponse),
    11: (kp_consumer.JoinGroupRequest, kp_consumer.JoinGroupResponse),
    12: (kp_consumer.HeartbeatRequest, kp_consumer.HeartbeatResponse),
    13: (kp_consumer.LeaveGroupRequest, kp_consumer.LeaveGroupResponse),
    14: (kp_consumer.SyncGroupRequest, kp_consumer.SyncGroupResponse),
    15: (kp_admin.DescribeGroupsRequest, kp_admin.DescribeGroupsResponse),
    16: (kp_admin.ListGroupsRequest, kp_admin.ListGroupsResponse),
    18: (kp_metadata.ApiVersionsRequest, kp_metadata.ApiVersionsResponse),
    19: (kp_admin.CreateTopicsRequest, kp_admin.CreateTopicsResponse),
    20: (kp_admin.DeleteTopicsRequest, kp_admin.DeleteTopicsResponse),
    22: (kp_producer.InitProducerIdRequest, kp_producer.InitProducerIdResponse),
}

BATCH = bytes(range(70))   # opaque to the codec: records travel as bytes
REQ, RSP = "request", "response"

# (api key, version, side, body): bodies give every field of that version.
CASES: list[tuple[int, int, str, dict[str, Any]]] = [
    (18, 0, REQ, {}),
    (18, 2, REQ, {}),
    (18, 3, REQ, {"client_software_name": "librdkafka", "client_software_version": "2.3.0"}),
    (18, 0, RSP, {"error_code": 0, "api_keys": [{"api_key": 0, "min_version": 0, "max_version": 7}]}),
    (18, 1, RSP, {"error_code": 0, "api_keys": K.supported_api_versions(), "throttle_time_ms": 0}),
    (18, 3, RSP, {"error_code": 0, "api_keys": K.supported_api_versions(), "throttle_time_ms": 5}),
    (3, 0, REQ, {"topics": []}),
    (3, 1, REQ, {"topics": None}),
    (3, 4, REQ, {"topics": [{"name": "orders"}, {"name": "é"}], "allow_auto_topic_creation": False}),
    (3, 0, RSP, {"brokers": [{"node_id": 1, "host": "localhost", "port": 9092}],
                 "topics": [{"error_code": 0, "name": "t", "partitions": [
                     {"error_code": 0, "partition_index": 0, "leader_id": 1,
                      "replica_nodes": [1], "isr_nodes": [1]}]}]}),
    (3, 4, RSP, {"throttle_time_ms": 0,
                 "brokers": [{"node_id": 1, "host": "h", "port": 9092, "rack": None}],
                 "cluster_id": "minilog", "controller_id": 1,
                 "topics": [{"error_code": 3, "name": "gone", "is_internal": False, "partitions": []},
                            {"error_code": 0, "name": "t", "is_internal": True, "partitions": [
                                {"error_code": 0, "partition_index": 2, "leader_id": 1,
                                 "replica_nodes": [1, 2], "isr_nodes": [1]}]}]}),
    (0, 3, REQ, {"transactional_id": None, "acks": -1, "timeout_ms": 30000, "topic_data": [
        {"name": "t", "partition_data": [{"index": 0, "records": BATCH}, {"index": 1, "records": None}]}]}),
    (0, 7, REQ, {"transactional_id": "tx", "acks": 1, "timeout_ms": 5, "topic_data": []}),
    (0, 0, RSP, {"responses": [{"name": "t", "partition_responses": [
        {"index": 0, "error_code": 0, "base_offset": 42}]}]}),
    (0, 7, RSP, {"responses": [{"name": "t", "partition_responses": [
        {"index": 0, "error_code": 2, "base_offset": -1, "log_append_time_ms": -1, "log_start_offset": 0}]}],
                 "throttle_time_ms": 0}),
    (1, 0, REQ, {"replica_id": -1, "max_wait_ms": 500, "min_bytes": 1, "topics": [
        {"topic": "t", "partitions": [{"partition": 0, "fetch_offset": 7, "partition_max_bytes": 1 << 20}]}]}),
    (1, 4, REQ, {"replica_id": -1, "max_wait_ms": 500, "min_bytes": 1, "max_bytes": 52428800,
                 "isolation_level": 1, "topics": [
        {"topic": "t", "partitions": [{"partition": 3, "fetch_offset": 0, "partition_max_bytes": 1}]}]}),
    (1, 0, RSP, {"responses": [{"topic": "t", "partitions": [
        {"partition_index": 0, "error_code": 0, "high_watermark": 10, "records": BATCH}]}]}),
    (1, 4, RSP, {"throttle_time_ms": 0, "responses": [{"topic": "t", "partitions": [
        {"partition_index": 0, "error_code": 0, "high_watermark": 10, "last_stable_offset": 10,
         "aborted_transactions": None, "records": BATCH},
        {"partition_index": 1, "error_code": 1, "high_watermark": -1, "last_stable_offset": -1,
         "aborted_transactions": [{"producer_id": 5, "first_offset": 0}], "records": None}]}]}),
    (2, 0, REQ, {"replica_id": -1, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "timestamp": -1, "max_num_offsets": 1}]}]}),
    (2, 2, REQ, {"replica_id": -1, "isolation_level": 0, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "timestamp": -2}]}]}),
    (2, 0, RSP, {"topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "error_code": 0, "old_style_offsets": [17]}]}]}),
    (2, 2, RSP, {"throttle_time_ms": 0, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "error_code": 0, "timestamp": -1, "offset": 17}]}]}),
    (10, 0, REQ, {"key": "g"}),
    (10, 1, REQ, {"key": "g", "key_type": 0}),
    (10, 0, RSP, {"error_code": 0, "node_id": 1, "host": "localhost", "port": 9092}),
    (10, 1, RSP, {"throttle_time_ms": 0, "error_code": 15, "error_message": "loading",
                  "node_id": -1, "host": "", "port": -1}),
    (11, 0, REQ, {"group_id": "g", "session_timeout_ms": 10000, "member_id": "", "protocol_type": "consumer",
                  "protocols": [{"name": "range", "metadata": b"\x00\x01meta"}]}),
    (11, 2, REQ, {"group_id": "g", "session_timeout_ms": 10000, "rebalance_timeout_ms": 300000,
                  "member_id": "m-1", "protocol_type": "consumer",
                  "protocols": [{"name": "range", "metadata": b""}, {"name": "roundrobin", "metadata": b"x"}]}),
    (11, 2, RSP, {"throttle_time_ms": 0, "error_code": 0, "generation_id": 3, "protocol_name": "range",
                  "leader": "m-1", "member_id": "m-1",
                  "members": [{"member_id": "m-1", "metadata": b"abc"}]}),
    (14, 1, REQ, {"group_id": "g", "generation_id": 3, "member_id": "m-1",
                  "assignments": [{"member_id": "m-1", "assignment": b"\x00\x00assign"}]}),
    (14, 1, RSP, {"throttle_time_ms": 0, "error_code": 0, "assignment": b"\x00\x00assign"}),
    (12, 1, REQ, {"group_id": "g", "generation_id": 3, "member_id": "m-1"}),
    (12, 0, RSP, {"error_code": 27}),
    (12, 1, RSP, {"throttle_time_ms": 0, "error_code": 22}),
    (13, 1, REQ, {"group_id": "g", "member_id": "m-1"}),
    (13, 1, RSP, {"throttle_time_ms": 0, "error_code": 0}),
    (8, 2, REQ, {"group_id": "g", "generation_id_or_member_epoch": 3, "member_id": "m-1",
                 "retention_time_ms": -1, "topics": [{"name": "t", "partitions": [
                     {"partition_index": 0, "committed_offset": 100, "committed_metadata": None}]}]}),
    (8, 3, REQ, {"group_id": "g", "generation_id_or_member_epoch": -1, "member_id": "",
                 "retention_time_ms": -1, "topics": [{"name": "t", "partitions": [
                     {"partition_index": 0, "committed_offset": 100, "committed_metadata": ""}]}]}),
    (8, 3, RSP, {"throttle_time_ms": 0, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "error_code": 0}]}]}),
    (9, 1, REQ, {"group_id": "g", "topics": [{"name": "t", "partition_indexes": [0, 1, 2]}]}),
    (9, 3, REQ, {"group_id": "g", "topics": None}),
    (9, 3, RSP, {"throttle_time_ms": 0, "topics": [{"name": "t", "partitions": [
        {"partition_index": 0, "committed_offset": -1, "metadata": "", "error_code": 0}]}], "error_code": 0}),
    (19, 0, REQ, {"topics": [{"name": "t", "num_partitions": 3, "replication_factor": 1, "assignments": [],
                              "configs": [{"name": "retention.ms", "value": "1000"}]}], "timeout_ms": 1000}),
    (19, 3, REQ, {"topics": [{"name": "t", "num_partitions": -1, "replication_factor": -1,
                              "assignments": [{"partition_index": 0, "broker_ids": [1]}],
                              "configs": [{"name": "cleanup.policy", "value": None}]}],
                  "timeout_ms": 1000, "validate_only": True}),
    (19, 3, RSP, {"throttle_time_ms": 0, "topics": [
        {"name": "t", "error_code": 36, "error_message": "topic already exists"},
        {"name": "u", "error_code": 0, "error_message": None}]}),
    (20, 1, REQ, {"topic_names": ["a", "b"], "timeout_ms": 1000}),
    (20, 1, RSP, {"throttle_time_ms": 0, "responses": [{"name": "a", "error_code": 0}]}),
    (22, 0, REQ, {"transactional_id": None, "transaction_timeout_ms": 60000}),
    (22, 0, RSP, {"throttle_time_ms": 0, "error_code": 0, "producer_id": 1000, "producer_epoch": 0}),
    (16, 0, REQ, {}),
    (16, 2, RSP, {"throttle_time_ms": 0, "error_code": 0, "groups": [{"group_id": "g", "protocol_type": "consumer"}]}),
    (15, 0, REQ, {"groups": ["g"]}),
    (15, 4, REQ, {"groups": ["g", "h"], "include_authorized_operations": False}),
    (15, 4, RSP, {"throttle_time_ms": 0, "groups": [
        {"error_code": 0, "group_id": "g", "group_state": "Stable", "protocol_type": "consumer",
         "protocol_data": "range", "members": [
             {"member_id": "m-1", "group_instance_id": None, "client_id": "c", "client_host": "/127.0.0.1",
              "member_metadata": b"md", "member_assignment": b"as"}],
         "authorized_operations": -(1 << 31)}]}),
]

_OPS_UNKNOWN = -(1 << 31)
CORRELATION_ID = 123456
CLIENT_ID = "test-client"


def _case_id(case: tuple[int, int, str, dict[str, Any]]) -> str:
    key, version, side, _ = case
    return f"{K.API_BY_KEY[key].name}-v{version}-{side}"


def _plan(key: int, version: int, side: str) -> Plan:
    return (_REQUEST_PLANS if side == REQ else _RESPONSE_PLANS)[key, version]


def _normalise(plan: Plan, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of this version only, bytes-like values as bytes, nested structs alike."""
    out: dict[str, Any] = {}
    for step in plan.steps:
        if not step.present:
            continue
        value = values.get(step.name, step.default)
        if step.kind == "struct_array" and value is not None:
            assert step.item_plan is not None
            value = [_normalise(step.item_plan, item) for item in value]
        elif isinstance(value, (memoryview, bytearray)):
            value = bytes(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[step.name] = value
    return out


def _kp_object(cls: Any, version: int, values: dict[str, Any]) -> Any:
    """Build kafka-python's object for `values` (nested structs through its data classes)."""
    kwargs = {}
    for name, value in values.items():
        field = cls.fields[name]
        if field.is_struct_array() and value is not None:
            value = [_kp_object(field.data_class, version, item) for item in value]
        elif name == "authorized_operations" and value == _OPS_UNKNOWN:
            value = None   # kafka-python models this int32 as a bit set; None is "unknown"
        kwargs[name] = value
    return cls(version=version, **kwargs)


def _kp_to_dict(obj: Any) -> Any:
    def fix(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _OPS_UNKNOWN if k == "authorized_operations" and v is None else fix(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value
    return fix(obj.to_dict(json=False))


def _kp_encode(key: int, version: int, side: str, body: dict[str, Any]) -> bytes:
    cls = KP_CLASSES[key][0 if side == REQ else 1]
    obj = _kp_object(cls, version, body)
    if side == REQ:
        obj.with_header(correlation_id=CORRELATION_ID, client_id=CLIENT_ID)
    else:
        obj.with_header(correlation_id=CORRELATION_ID)
    return bytes(obj.encode(header=True, framed=True))


def _ours_encode(key: int, version: int, side: str, body: dict[str, Any]) -> bytes:
    if side == REQ:
        return K.encode_request(key, version, CORRELATION_ID, CLIENT_ID, body)
    return b"".join(K.encode_response(key, version, CORRELATION_ID, body))


def _ours_decode(key: int, version: int, side: str, frame: bytes) -> dict[str, Any]:
    if side == REQ:
        req = K.decode_request(frame)
        assert (req.api_key, req.api_version, req.correlation_id, req.client_id) == (
            key, version, CORRELATION_ID, CLIENT_ID)
        return req.body
    rsp = K.decode_response(key, version, frame)
    assert rsp.correlation_id == CORRELATION_ID
    return rsp.body


def _frames(data: bytes, step: int | None, trailing: bytes = b"") -> list[bytes]:
    """Feed `data` (+ trailing) to a frame decoder whole or `step` bytes at a time."""
    dec = K.KafkaFrameDecoder(frame_bytes_min=4)
    out: list[bytes] = []
    chunks = [data + trailing] if step is None else [
        (data + trailing)[i : i + step] for i in range(0, len(data) + len(trailing), step)]
    for chunk in chunks:
        dec.feed(chunk)
        while True:
            frame = dec.next_frame()
            if frame is K.NEED_DATA:
                break
            assert isinstance(frame, bytearray)
            out.append(bytes(frame))
    assert dec.buffered_bytes == len(trailing)
    return out


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_encode_matches_kafka_python(case):
    """minilog's bytes for a message are exactly kafka-python's bytes for it."""
    key, version, side, body = case
    assert _ours_encode(key, version, side, body) == _kp_encode(key, version, side, body)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("step", [None, 1, 7])
def test_decode_whole_bytewise_and_with_trailing_bytes(case, step):
    """kafka-python's bytes decode to the case, fed whole, byte by byte and in 7-byte chunks,
    with the start of a next frame left buffered."""
    key, version, side, body = case
    data = _kp_encode(key, version, side, body)
    trailing = data[:6]
    [frame] = _frames(data, step, trailing)
    plan = _plan(key, version, side)
    assert _normalise(plan, _ours_decode(key, version, side, frame)) == _normalise(plan, body)


@pytest.mark.parametrize("case", [c for c in CASES if c[2] == RSP], ids=_case_id)
def test_kafka_python_reads_our_responses(case):
    """kafka-python's decoder reads minilog's response back to the same values."""
    key, version, _, body = case
    data = _ours_encode(key, version, RSP, body)
    decoded = KP_CLASSES[key][1].decode(data[4:], version=version, header=True)
    assert decoded.header.correlation_id == CORRELATION_ID
    expected = _normalise(_plan(key, version, RSP), body)
    got = _kp_to_dict(decoded)
    tagged_only = {"supported_features", "finalized_features_epoch", "finalized_features", "zk_migration_ready"}
    assert {k: v for k, v in got.items() if k not in tagged_only} == expected


def test_absent_fields_decode_to_defaults():
    """A field a version lacks decodes to its default, so handlers read every field of every version."""
    req = K.decode_request(K.encode_request(3, 0, 1, None, {"topics": []})[4:])
    assert req.client_id is None
    assert req.body == {"topics": [], "allow_auto_topic_creation": True}
    req = K.decode_request(K.encode_request(8, 0, 1, "c", {"group_id": "g", "topics": []})[4:])
    assert req.body["generation_id_or_member_epoch"] == -1 and req.body["member_id"] == ""


def test_pinned_bytes():
    """A few frames pinned byte for byte (independent of any library)."""
    assert K.encode_request(3, 4, 7, "cli", {"topics": [{"name": "a"}], "allow_auto_topic_creation": True}) == (
        bytes.fromhex("00000015" "0003" "0004" "00000007" "0003636c69" "00000001" "000161" "01"))
    heartbeat = b"".join(K.encode_response(12, 1, 9, {"error_code": 27}))
    assert heartbeat == bytes.fromhex("0000000a" "00000009" "00000000" "001b")
    # ApiVersions v3 request: header v2 (client id stays a classic string, then tagged fields)
    assert K.encode_request(18, 3, 1, "c", {"client_software_name": "a", "client_software_version": "1"}) == (
        bytes.fromhex("00000011" "0012" "0003" "00000001" "000163" "00" "0261" "0231" "00"))


def test_api_versions_above_ours_is_answered_in_v0_with_unsupported_version():
    """A v9 ApiVersions request (flexible header) raises UnsupportedVersionError carrying the
    correlation id, and the v0 answer lists our ranges with error 35, as Kafka's broker does."""
    frame = bytes.fromhex("0012" "0009" "0000002a" "000163" "00") + b"\x00\x00anything"
    with pytest.raises(K.UnsupportedVersionError) as info:
        K.decode_request(frame)
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == (18, 9, 42)
    answer = b"".join(K.encode_api_versions_unsupported(42))
    decoded = K.decode_response(18, 0, answer[4:])
    assert decoded.correlation_id == 42
    assert decoded.body["error_code"] == 35
    assert {a["api_key"]: a["max_version"] for a in decoded.body["api_keys"]}[18] == 3
    kp = KP_CLASSES[18][1].decode(answer[4:], version=0, header=True)
    assert kp.error_code == 35


def test_advertised_table():
    """Each range starts at v0, telemetry (71) is not offered, and the maxima are the issue's."""
    table = {a["api_key"]: (a["min_version"], a["max_version"]) for a in K.supported_api_versions()}
    assert 71 not in table
    assert table == {0: (0, 7), 1: (0, 4), 2: (0, 2), 3: (0, 4), 8: (0, 3), 9: (0, 3), 10: (0, 1), 11: (0, 2),
                     12: (0, 1), 13: (0, 1), 14: (0, 1), 15: (0, 4), 16: (0, 2), 18: (0, 3), 19: (0, 3),
                     20: (0, 1), 22: (0, 0)}


def test_unknown_api_key_is_unsupported():
    frame = struct.pack(">hhi", 71, 0, 5) + b"\xff\xff"
    with pytest.raises(K.UnsupportedVersionError) as info:
        K.decode_request(frame)
    assert info.value.correlation_id == 5


def test_frame_size_checked_before_buffering():
    """A frame declaring more than the cap is refused from its 4-byte prefix alone; errors are sticky."""
    dec = K.KafkaFrameDecoder(frame_bytes_max=1000)
    dec.feed(struct.pack(">i", 1001))
    with pytest.raises(K.KafkaProtocolError, match="outside"):
        dec.next_frame()
    with pytest.raises(K.KafkaProtocolError):
        dec.next_frame()
    for size in (-1, 0, 7):
        dec = K.KafkaFrameDecoder()
        dec.feed(struct.pack(">i", size))
        with pytest.raises(K.KafkaProtocolError):
            dec.next_frame()


@pytest.mark.parametrize("count", [2**31 - 1, 1000, 3])
def test_declared_array_count_checked_against_remaining_bytes(count):
    """Metadata v1 with a topics count larger than the bytes can hold is refused before allocation."""
    frame = struct.pack(">hhi", 3, 1, 1) + b"\xff\xff" + struct.pack(">i", count) + b"\x00\x01a"
    with pytest.raises(K.KafkaProtocolError, match="array declares"):
        K.decode_request(frame)


def test_declared_string_and_bytes_lengths_checked():
    frame = struct.pack(">hhi", 10, 0, 1) + b"\xff\xff" + struct.pack(">h", 30000) + b"g"
    with pytest.raises(K.KafkaProtocolError, match="needs 30000 bytes"):
        K.decode_request(frame)
    frame = struct.pack(">hhi", 10, 0, 1) + b"\xff\xff" + struct.pack(">h", -1)
    with pytest.raises(K.KafkaProtocolError, match="null not allowed"):
        K.decode_request(frame)
    frame = struct.pack(">hhi", 10, 0, 1) + b"\xff\xff" + b"\x00\x02\xc3\x28"
    with pytest.raises(K.KafkaProtocolError, match="UTF-8"):
        K.decode_request(frame)


def test_trailing_bytes_inside_a_frame_are_an_error():
    frame = K.encode_request(12, 0, 1, "c", {"group_id": "g", "generation_id": 1, "member_id": "m"})[4:]
    with pytest.raises(K.KafkaProtocolError, match="left after"):
        K.decode_request(frame + b"\x00")


def test_tagged_fields_in_flexible_request_are_skipped_with_bounds():
    """ApiVersions v3 with an unknown tagged field decodes; one whose size overruns is refused."""
    head = bytes.fromhex("0012" "0003" "00000001" "000163" "00" "0261" "0231")
    req = K.decode_request(head + bytes.fromhex("01" "05" "02" "abcd"))
    assert req.body["client_software_name"] == "a"
    with pytest.raises(K.KafkaProtocolError):
        K.decode_request(head + bytes.fromhex("01" "05" "7f" "abcd"))


def test_records_are_views_not_copies():
    """Produce's records decode as a view into the frame: the broker stamps offsets without copying."""
    body = {"transactional_id": None, "acks": 1, "timeout_ms": 1,
            "topic_data": [{"name": "t", "partition_data": [{"index": 0, "records": BATCH}]}]}
    frame = bytearray(K.encode_request(0, 7, 1, "c", body)[4:])
    records = K.decode_request(frame).body["topic_data"][0]["partition_data"][0]["records"]
    assert isinstance(records, memoryview) and records.obj is frame


def test_encode_rejects_values_that_do_not_fit():
    with pytest.raises(K.KafkaEncodeError):
        K.encode_response(12, 1, 1, {"error_code": 1 << 20})
    with pytest.raises(K.KafkaEncodeError):
        K.encode_response(3, 0, 1, {"brokers": None, "topics": []})


@pytest.mark.parametrize("seed", range(8))
def test_fuzz_random_and_mutated_bytes_decode_or_raise_the_typed_error(seed):
    """Random frames and single-byte mutations of valid ones decode or raise KafkaProtocolError
    (a FrameError), nothing else."""
    rng = random.Random(seed)
    valid = [_ours_encode(k, v, REQ, b)[4:] for k, v, s, b in CASES if s == REQ]
    decoded = 0
    for i in range(3000):
        if i % 3 == 0:
            key, version = rng.choice(list(_REQUEST_PLANS))
            frame = struct.pack(">hhi", key, version, i) + rng.randbytes(rng.randrange(0, 64))
        else:
            frame = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
            if rng.random() < 0.3:
                frame = frame[: rng.randrange(len(frame) + 1)]
        try:
            K.decode_request(bytes(frame))
            decoded += 1
        except FrameError as exc:
            assert isinstance(exc, K.KafkaProtocolError), f"seed {seed}: {exc!r}"
        except Exception as exc:  # pragma: no cover - the failure this test exists to find
            raise AssertionError(f"seed {seed}, iteration {i}: {exc!r} for {bytes(frame).hex()}") from exc
    assert decoded > 0, f"seed {seed}: nothing decoded; the mutations are too destructive to test anything"
