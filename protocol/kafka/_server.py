"""The Kafka listener's codec: Kafka's binary protocol <-> minilog's codec-neutral request model.

Rules:
- One `KafkaServerCodec` per connection; it implements `ServerCodec`
  (`protocol/_codec.py`): sans-IO, raises only `FrameError`, errors sticky.
- Requests become the same request objects the native codec produces
  (`protocol/_messages.py`), so handlers never know the codec. The classic
  group APIs, which only Kafka clients speak, become the objects of
  `_classic_model.py`.
- Each response is encoded in the version the request used. A field the
  request model does not carry gets Kafka's default.
- An ApiVersions request above our versions gets the v0 answer with
  UNSUPPORTED_VERSION and our table (KIP-511); any other unknown API or
  version is a `FrameError` (the connection closes, as Kafka's broker does,
  because the body cannot be parsed).
- A well-framed body that does not parse (a short field, a count larger
  than the bytes) also closes the connection: Kafka's framing gives no way
  to answer a request whose fields are unknown.
- `ErrorResponse` (the request failed as a whole) is encoded in the API's
  own shape: the error in the top-level field where the API has one, else
  in every topic/partition/group entry of the request, which the codec
  keeps until the response is encoded.

Theory of operation: `next_request` takes a frame from `KafkaFrameDecoder`,
decodes it with the schema of its API and version (`decode_request`), then
converts the body with `_REQUEST_CONVERTERS[api_key]`. `encode_response`
converts a response object with `_RESPONSE_CONVERTERS[type]` to the
schema's dict and encodes it (`encode_response` of `_codec.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import _messages as m
from .. import _messages_admin as ma
from .. import _messages_groups as mg
from .._codec import NEED_DATA, DecodedRequest
from .._error_codes import ErrorCode
from .._errors import FrameError
from . import _classic_model as c
from ._codec import (
    FRAME_BYTES_MAX_DEFAULT,
    KafkaFrameDecoder,
    decode_request,
    encode_api_versions_unsupported,
    encode_response,
    supported_api_versions,
)
from ._messages import ApiKey
from ._types import Buffer, KafkaProtocolError, UnsupportedVersionError

__all__ = ["KafkaServerCodec"]

Body = dict[str, Any]
_KEY_TYPE_GROUP = 0
_PRODUCE_MAGIC_2_VERSION_MIN = 3     # Produce v0-2 carry message sets of magic 0/1
_MAGIC_OFFSET = 16                   # of the first batch: base offset int64, length int32, epoch int32


def _tp(topics: list[Body] | None, name_key: str, parts_key: str) -> list[mg.TopicPartitions] | None:
    if topics is None:
        return None
    return [mg.TopicPartitions(t[name_key], list(t[parts_key])) for t in topics]


# -- requests: Kafka body -> request object ----------------------------------------------------

def _produce(v: int, b: Body) -> Any:
    topics = [m.ProduceTopic(t["name"], [m.ProducePartition(p["index"], p["records"])
                                          for p in t["partition_data"]])
              for t in b["topic_data"]]
    if v < _PRODUCE_MAGIC_2_VERSION_MIN:
        return m.BadRequest(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                            f"Produce v{v} carries message format v0/v1; minilog stores only "
                            "RecordBatch v2 (magic 2): use a client that speaks Produce v3 or later",
                            respond=b["acks"] != 0)
    for t in topics:
        for p in t.partitions:
            records = p.records
            if records is not None and len(records) > _MAGIC_OFFSET and records[_MAGIC_OFFSET] != 2:
                # Kafka's rule for Produce v3+; a code clients do not retry, unlike CORRUPT_MESSAGE
                return m.BadRequest(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                                    f"{t.topic}-{p.partition}: record batch magic {records[_MAGIC_OFFSET]}; "
                                    "minilog stores only RecordBatch v2 (magic 2)", respond=b["acks"] != 0)
    if b["transactional_id"] is not None:
        return m.BadRequest(ErrorCode.INVALID_REQUEST, "transactions are not supported",
                            respond=b["acks"] != 0)
    return m.ProduceRequest(b["acks"], b["timeout_ms"], topics)


def _fetch(v: int, b: Body) -> Any:
    return m.FetchRequest(b["replica_id"], b["max_wait_ms"], b["min_bytes"], b["max_bytes"],
                          b["isolation_level"],
                          [m.FetchTopic(t["topic"], [m.FetchPartition(p["partition"], p["fetch_offset"],
                                                                      p["partition_max_bytes"])
                                                     for p in t["partitions"]])
                           for t in b["topics"]])


def _list_offsets(v: int, b: Body) -> Any:
    return m.ListOffsetsRequest(b["replica_id"], b["isolation_level"], [
        m.ListOffsetsTopic(t["name"], [m.ListOffsetsPartition(p["partition_index"], p["timestamp"])
                                       for p in t["partitions"]])
        for t in b["topics"]])


def _metadata(v: int, b: Body) -> Any:
    topics = b["topics"]
    names = None if topics is None or (v == 0 and not topics) else [t["name"] for t in topics]
    return m.MetadataRequest(names, b["allow_auto_topic_creation"])


def _offset_commit(v: int, b: Body) -> Any:
    return mg.OffsetCommitRequest(b["group_id"], b["member_id"], b["generation_id_or_member_epoch"], [
        mg.OffsetCommitTopic(t["name"], [
            mg.OffsetCommitPartition(p["partition_index"], p["committed_offset"], -1, p["committed_metadata"])
            for p in t["partitions"]])
        for t in b["topics"]])


def _offset_fetch(v: int, b: Body) -> Any:
    return mg.OffsetFetchRequest(b["group_id"], None, -1, _tp(b["topics"], "name", "partition_indexes"))


def _create_topics(v: int, b: Body) -> Any:
    topics = []
    for t in b["topics"]:
        if t["assignments"]:
            return m.BadRequest(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                "manual replica assignments are not supported; give a partition count")
        topics.append(ma.CreatableTopic(t["name"], t["num_partitions"], t["replication_factor"],
                                       {cfg["name"]: cfg["value"] for cfg in t["configs"]}))
    return ma.CreateTopicsRequest(topics, b["timeout_ms"], b["validate_only"])


_REQUEST_CONVERTERS: dict[int, Callable[[int, Body], Any]] = {
    ApiKey.PRODUCE: _produce,
    ApiKey.FETCH: _fetch,
    ApiKey.LIST_OFFSETS: _list_offsets,
    ApiKey.METADATA: _metadata,
    ApiKey.OFFSET_COMMIT: _offset_commit,
    ApiKey.OFFSET_FETCH: _offset_fetch,
    ApiKey.FIND_COORDINATOR: lambda v, b: mg.FindCoordinatorRequest(b["key_type"], [b["key"]]),
    ApiKey.JOIN_GROUP: lambda v, b: c.JoinGroupRequest(
        b["group_id"], b["session_timeout_ms"], b["rebalance_timeout_ms"], b["member_id"],
        b["protocol_type"], [(p["name"], bytes(p["metadata"])) for p in b["protocols"]]),
    ApiKey.HEARTBEAT: lambda v, b: c.HeartbeatRequest(b["group_id"], b["generation_id"], b["member_id"]),
    ApiKey.LEAVE_GROUP: lambda v, b: c.LeaveGroupRequest(b["group_id"], b["member_id"]),
    ApiKey.SYNC_GROUP: lambda v, b: c.SyncGroupRequest(
        b["group_id"], b["generation_id"], b["member_id"],
        [(a["member_id"], bytes(a["assignment"])) for a in b["assignments"]]),
    ApiKey.DESCRIBE_GROUPS: lambda v, b: c.DescribeGroupsRequest(list(b["groups"])),
    ApiKey.LIST_GROUPS: lambda v, b: mg.ListGroupsRequest([]),
    ApiKey.API_VERSIONS: lambda v, b: m.ApiVersionsRequest(b["client_software_name"],
                                                           b["client_software_version"]),
    ApiKey.CREATE_TOPICS: _create_topics,
    ApiKey.DELETE_TOPICS: lambda v, b: ma.DeleteTopicsRequest(list(b["topic_names"]), b["timeout_ms"]),
    ApiKey.INIT_PRODUCER_ID: lambda v, b: ma.InitProducerIdRequest(b["transactional_id"],
                                                                  b["transaction_timeout_ms"]),
}


# -- responses: response object -> Kafka body --------------------------------------------------

def _r_api_versions(r: m.ApiVersionsResponse) -> Body:
    return {"error_code": r.error_code,
            "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi} for k, lo, hi in r.api_versions]}


def _r_metadata(r: m.MetadataResponse) -> Body:
    return {
        "brokers": [{"node_id": b.node_id, "host": b.host, "port": b.port} for b in r.brokers],
        "cluster_id": r.cluster_id, "controller_id": r.controller_id,
        "topics": [{"error_code": t.error_code, "name": t.topic, "is_internal": t.is_internal,
                    "partitions": [{"error_code": p.error_code, "partition_index": p.partition,
                                    "leader_id": p.leader, "replica_nodes": p.replicas, "isr_nodes": p.isr}
                                   for p in t.partitions]}
                   for t in r.topics],
    }


def _r_produce(r: m.ProduceResponse) -> Body:
    return {"responses": [
        {"name": t.topic, "partition_responses": [
            {"index": p.partition, "error_code": p.error_code, "base_offset": p.base_offset,
             "log_append_time_ms": p.log_append_time, "log_start_offset": p.log_start_offset}
            for p in t.partitions]}
        for t in r.topics]}


def _r_fetch(r: m.FetchResponse) -> Body:
    return {"responses": [
        {"topic": t.topic, "partitions": [
            {"partition_index": p.partition, "error_code": p.error_code, "high_watermark": p.high_watermark,
             # no transactions: everything below the high watermark is stable
             "last_stable_offset": p.last_stable_offset if p.last_stable_offset >= 0 else p.high_watermark,
             "aborted_transactions": None, "records": b"" if p.records is None else p.records}
            for p in t.partitions]}
        for t in r.topics]}


def _r_list_offsets(r: m.ListOffsetsResponse) -> Body:
    return {"topics": [
        {"name": t.topic, "partitions": [
            {"partition_index": p.partition, "error_code": p.error_code,
             "old_style_offsets": [p.offset] if p.offset >= 0 else [],
             "timestamp": p.timestamp, "offset": p.offset}
            for p in t.partitions]}
        for t in r.topics]}


def _r_offset_commit(r: mg.OffsetCommitResponse) -> Body:
    return {"topics": [{"name": t.topic, "partitions": [
        {"partition_index": p.partition, "error_code": p.error_code} for p in t.partitions]}
        for t in r.topics]}


def _r_offset_fetch(r: mg.OffsetFetchResponse) -> Body:
    return {"error_code": r.error_code, "topics": [{"name": t.topic, "partitions": [
        {"partition_index": p.partition, "committed_offset": p.committed_offset,
         "metadata": p.metadata if p.metadata is not None else "", "error_code": p.error_code}
        for p in t.partitions]} for t in r.topics]}


def _r_find_coordinator(r: mg.FindCoordinatorResponse) -> Body:
    first = r.coordinators[0] if r.coordinators else mg.Coordinator("", error_code=int(ErrorCode.INVALID_REQUEST))
    return {"error_code": first.error_code, "error_message": first.error_message,
            "node_id": first.node_id, "host": first.host, "port": first.port}


def _r_topic_results(key: str) -> Callable[[Any], Body]:
    def convert(r: Any) -> Body:
        return {key: [{"name": t.name, "error_code": t.error_code, "error_message": t.error_message}
                      for t in r.topics]}
    return convert


_RESPONSE_CONVERTERS: dict[type, Callable[[Any], Body]] = {
    m.ApiVersionsResponse: _r_api_versions,
    m.MetadataResponse: _r_metadata,
    m.ProduceResponse: _r_produce,
    m.FetchResponse: _r_fetch,
    m.ListOffsetsResponse: _r_list_offsets,
    mg.OffsetCommitResponse: _r_offset_commit,
    mg.OffsetFetchResponse: _r_offset_fetch,
    mg.FindCoordinatorResponse: _r_find_coordinator,
    ma.CreateTopicsResponse: _r_topic_results("topics"),
    ma.DeleteTopicsResponse: _r_topic_results("responses"),
    ma.InitProducerIdResponse: lambda r: {"error_code": r.error_code, "producer_id": r.producer_id,
                                         "producer_epoch": r.producer_epoch},
    mg.ListGroupsResponse: lambda r: {"error_code": r.error_code, "groups": [
        {"group_id": g.group_id, "protocol_type": g.protocol_type} for g in r.groups]},
    c.JoinGroupResponse: lambda r: {"error_code": r.error_code, "generation_id": r.generation_id,
                                    "protocol_name": r.protocol_name, "leader": r.leader,
                                    "member_id": r.member_id,
                                    "members": [{"member_id": mid, "metadata": md} for mid, md in r.members]},
    c.SyncGroupResponse: lambda r: {"error_code": r.error_code, "assignment": r.assignment},
    c.HeartbeatResponse: lambda r: {"error_code": r.error_code},
    c.LeaveGroupResponse: lambda r: {"error_code": r.error_code},
    c.DescribeGroupsResponse: lambda r: {"groups": [
        {"error_code": g.error_code, "group_id": g.group_id, "group_state": g.group_state,
         "protocol_type": g.protocol_type, "protocol_data": g.protocol_data,
         "members": [{"member_id": mm.member_id, "client_id": mm.client_id, "client_host": mm.client_host,
                      "member_metadata": mm.member_metadata, "member_assignment": mm.member_assignment}
                     for mm in g.members]}
        for g in r.groups]},
}


def _error_body(api_key: int, request: Body, code: int, message: str | None) -> Body:
    """A whole-request failure in the API's own shape (see the module rules)."""
    if api_key == ApiKey.PRODUCE:
        return {"responses": [{"name": t["name"], "partition_responses": [
            {"index": p["index"], "error_code": code, "base_offset": -1} for p in t["partition_data"]]}
            for t in request.get("topic_data", [])]}
    if api_key == ApiKey.FETCH:
        return {"responses": [{"topic": t["topic"], "partitions": [
            {"partition_index": p["partition"], "error_code": code, "high_watermark": -1,
             "last_stable_offset": -1, "records": None} for p in t["partitions"]]}
            for t in request.get("topics", [])]}
    if api_key == ApiKey.LIST_OFFSETS:
        return {"topics": [{"name": t["name"], "partitions": [
            {"partition_index": p["partition_index"], "error_code": code} for p in t["partitions"]]}
            for t in request.get("topics", [])]}
    if api_key == ApiKey.METADATA:
        return {"topics": [{"error_code": code, "name": t["name"], "partitions": []}
                           for t in request.get("topics") or []]}
    if api_key == ApiKey.OFFSET_COMMIT:
        return {"topics": [{"name": t["name"], "partitions": [
            {"partition_index": p["partition_index"], "error_code": code} for p in t["partitions"]]}
            for t in request.get("topics", [])]}
    if api_key == ApiKey.OFFSET_FETCH:
        return {"error_code": code, "topics": [{"name": t["name"], "partitions": [
            {"partition_index": p, "committed_offset": -1, "metadata": "", "error_code": code}
            for p in t["partition_indexes"]]} for t in request.get("topics") or []]}
    if api_key == ApiKey.CREATE_TOPICS:
        return {"topics": [{"name": t["name"], "error_code": code, "error_message": message}
                           for t in request.get("topics", [])]}
    if api_key == ApiKey.DELETE_TOPICS:
        return {"responses": [{"name": n, "error_code": code} for n in request.get("topic_names", [])]}
    if api_key == ApiKey.DESCRIBE_GROUPS:
        return {"groups": [{"error_code": code, "group_id": g} for g in request.get("groups", [])]}
    if api_key == ApiKey.FIND_COORDINATOR:
        return {"error_code": code, "error_message": message, "node_id": -1, "host": "", "port": -1}
    return {"error_code": code}


class KafkaServerCodec:
    """The server side of Kafka's binary protocol for one connection.

    Args:
        frame_bytes_max: the largest request accepted (socket.request.max.bytes),
            checked from the size prefix before the frame is buffered.
    """

    name = "kafka"

    def __init__(self, frame_bytes_max: int = FRAME_BYTES_MAX_DEFAULT) -> None:
        self._decoder = KafkaFrameDecoder(frame_bytes_max)
        # Bodies of requests whose ErrorResponse must name their items, until answered.
        self._pending: dict[int, Body] = {}
        self._unsupported_api_versions: set[int] = set()
        self._error: FrameError | None = None

    @property
    def buffered_bytes(self) -> int:
        return self._decoder.buffered_bytes

    def feed(self, data: Buffer) -> None:
        self._decoder.feed(data)

    def next_request(self) -> DecodedRequest | Any:
        """The next request as (header, request object | BadRequest), or NEED_DATA.

        Raises:
            FrameError: the bytes cannot be framed or parsed; sticky (the decoder's).
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_request()
        except FrameError as exc:
            self._error = exc
            raise

    def _next_request(self) -> DecodedRequest | Any:
        frame = self._decoder.next_frame()
        if not isinstance(frame, bytearray):
            return NEED_DATA
        try:
            kr = decode_request(frame)
        except UnsupportedVersionError as exc:
            if exc.api_key != ApiKey.API_VERSIONS:
                raise
            self._unsupported_api_versions.add(exc.correlation_id)
            header = m.RequestHeader(exc.api_key, exc.api_version, exc.correlation_id, exc.client_id or "",
                                     len(frame))
            return header, m.BadRequest(ErrorCode.UNSUPPORTED_VERSION, "ApiVersions version above 3")
        header = m.RequestHeader(kr.api_key, kr.api_version, kr.correlation_id, kr.client_id or "",
                                 len(frame) + 1024)
        request = _REQUEST_CONVERTERS[kr.api_key](kr.api_version, kr.body)
        if kr.api_key in (ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.LIST_OFFSETS, ApiKey.METADATA,
                          ApiKey.OFFSET_COMMIT, ApiKey.OFFSET_FETCH, ApiKey.CREATE_TOPICS,
                          ApiKey.DELETE_TOPICS, ApiKey.DESCRIBE_GROUPS):
            if not (kr.api_key == ApiKey.PRODUCE and kr.body["acks"] == 0):
                self._pending[kr.correlation_id] = kr.body
        return header, request

    def encode_response(self, header: m.RequestHeader, response: Any) -> list[Any]:
        """The response frame's pieces, in the version of the request.

        Raises:
            FrameError: a response value does not fit its Kafka field (a bug upstream).
        """
        body = self._pending.pop(header.correlation_id, None)
        if header.correlation_id in self._unsupported_api_versions:
            self._unsupported_api_versions.discard(header.correlation_id)
            return encode_api_versions_unsupported(header.correlation_id)
        if type(response) is m.ErrorResponse:
            kafka_body = _error_body(header.api_key, body or {}, response.error_code, response.error_message)
        else:
            convert = _RESPONSE_CONVERTERS.get(type(response))
            if convert is None:
                raise KafkaProtocolError(f"no Kafka encoding for {type(response).__name__}")
            kafka_body = convert(response)
        try:
            return encode_response(header.api_key, header.api_version, header.correlation_id, kafka_body)
        except KafkaProtocolError:
            raise
        except (KeyError, TypeError, AttributeError) as exc:   # a value of the wrong type
            raise FrameError(f"cannot encode {type(response).__name__} for Kafka: {exc!r}") from exc

    def api_versions(self) -> list[list[int]]:
        return [[a["api_key"], a["min_version"], a["max_version"]] for a in supported_api_versions()]
