"""Request handlers: one async function per API, and the registry that maps keys to them.

Handler contract (what the group coordinator implements too)::

    async def handle(broker: Broker, request: Request, conn: ConnectionInfo) -> Reply | None

- `request` is `minilog.protocol.Request`; its payload has already passed
  `check(REQUEST_SCHEMAS[key], payload)` and its version is supported.
- Return `(payload, attachments)`: `payload` must match
  `RESPONSE_SCHEMAS[key]`; `attachments` is a list of bytes-like objects
  (file bytes are sent as-is). Return None to send nothing (acks=0 produce).
- Raise nothing on purpose: put error codes in the payload. An escaping
  exception becomes UNKNOWN_SERVER_ERROR (logged with its traceback).
- The handler runs under the request timeout (request.timeout.ms); when it
  expires, the client gets REQUEST_TIMED_OUT.

Registry: `DEFAULT_HANDLERS` (module level) is copied into each
`Broker.handlers`; a plugin replaces an entry with
`broker.register_handler(ApiKey.X, handle)`. The group APIs start with a
placeholder answering COORDINATOR_NOT_AVAILABLE.

Rules: the produce and fetch paths do per-batch work only (no record is
decoded); record bytes arrive and leave as attachments.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from collections.abc import Awaitable, Callable

import trio

from minilog import __version__
from minilog.protocol import (
    CONFIG_OP_DELETE,
    CONFIG_OP_SET,
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    OPT,
    REQUEST_SCHEMAS,
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    RESPONSE_SCHEMAS,
    SUPPORTED_VERSIONS,
    ApiKey,
    ErrorCode,
    FrameError,
    Request,
    batch_size_at,
    check,
    check_batch,
    error_message,
    CorruptBatchError,
    InvalidRecordError,
    validate_batch,
)
from minilog.storage import (
    CorruptRecord,
    LogCorrupted,
    OffsetOutOfRange,
    RecordTooLarge,
    StaleLeaderEpoch,
    StorageError,
)

from .config import BROKER_CONFIG_KEYS, TOPIC_CONFIG_KEYS, TOPIC_DEFAULT_FROM_BROKER
from .partition import PartitionError

if TYPE_CHECKING:
    from .app import Broker
    from .server import ConnectionInfo

__all__ = ["DEFAULT_HANDLERS", "Handler", "Reply", "dispatch", "error_reply", "empty_payload"]

log = logging.getLogger("minilog.broker.handlers")

Reply = tuple[dict, list]
Handler = Callable[["Broker", Request, "ConnectionInfo"], Awaitable["Reply | None"]]
DEFAULT_HANDLERS: dict[int, Handler] = {}


def handles(key: ApiKey):
    def register(fn: Handler) -> Handler:
        DEFAULT_HANDLERS[key] = fn
        return fn
    return register


# -- dispatch and error replies --------------------------------------------------------------

def empty_payload(spec: Any) -> Any:
    """The zero value of a schema: empty lists, 0, "", None for OPT, False."""
    if isinstance(spec, OPT):
        return None
    if isinstance(spec, dict):
        return {name: empty_payload(sub) for name, sub in spec.items()}
    if isinstance(spec, list):
        return []
    if spec is int:
        return 0
    if spec is str:
        return ""
    if spec is bool:
        return False
    if spec is float:
        return 0.0
    return None


def _compile(spec: Any) -> Callable[[Any], bool]:
    """A fast yes/no twin of `protocol.check` for one schema (no paths, no messages).

    `dispatch` runs it on every request; only when it says no does the slower
    `check` run, to name the bad field. Both must agree (tests cover it).
    """
    if isinstance(spec, OPT):
        inner = _compile(spec.spec)
        return lambda v: v is None or inner(v)
    if isinstance(spec, dict):
        fields = [(name, _compile(sub)) for name, sub in spec.items()]

        def check_map(v) -> bool:
            if not isinstance(v, dict):
                return False
            for name, sub in fields:
                if name not in v or not sub(v[name]):
                    return False
            return True
        return check_map
    if isinstance(spec, list):
        (item,) = spec
        sub = _compile(item)
        return lambda v: isinstance(v, list) and all(sub(x) for x in v)
    if spec is int:
        return lambda v: type(v) is int or type(v) is bool
    if spec is float:
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if spec is Any:
        return lambda v: True
    return lambda v: isinstance(v, spec)


_FAST_CHECKS: dict[int, Callable[[Any], bool]] = {key: _compile(spec) for key, spec in REQUEST_SCHEMAS.items()}


def error_reply(api_key: int, code: ErrorCode, message: str | None = None) -> Reply:
    """A schema-shaped response whose top-level error_code says the request failed."""
    payload = empty_payload(RESPONSE_SCHEMAS[api_key]) if api_key in RESPONSE_SCHEMAS else {}
    payload["error_code"] = int(code)
    payload["error_message"] = message or error_message(code)
    return payload, []


async def dispatch(broker: Broker, request: Request, conn: ConnectionInfo,
                   timeout_s: float) -> Reply | None:
    """Validate, route and time-bound one request; never raises (except Cancelled)."""
    key = request.api_key
    handler = broker.handlers.get(key)
    versions = SUPPORTED_VERSIONS.get(key)
    if handler is None or versions is None or not versions[0] <= request.api_version <= versions[1]:
        return error_reply(key, ErrorCode.UNSUPPORTED_VERSION,
                           f"api key {key} version {request.api_version} is not supported")
    if not _FAST_CHECKS[key](request.payload):
        # The full check is the authority: it names the bad field, and it also
        # accepts (and fills with None) optional fields an older peer omits.
        try:
            check(REQUEST_SCHEMAS[key], request.payload)
        except FrameError as exc:
            if key == ApiKey.PRODUCE and request.payload.get("acks") == 0:
                return None
            return error_reply(key, ErrorCode.INVALID_REQUEST, str(exc))
    if key == ApiKey.FETCH:           # a long poll may wait on top of the handling bound
        timeout_s += min(max(request.payload["max_wait_ms"], 0),
                         broker.config.fetch_max_wait_ms) / 1000
    reply = None
    with trio.move_on_after(timeout_s) as scope:
        try:
            reply = await handler(broker, request, conn)
        except Exception:
            log.exception("api %s: handler failed", ApiKey(key).name)
            return error_reply(key, ErrorCode.UNKNOWN_SERVER_ERROR)
    if scope.cancelled_caught:
        return error_reply(key, ErrorCode.REQUEST_TIMED_OUT)
    return reply


def _storage_code(exc: Exception) -> ErrorCode:
    if isinstance(exc, RecordTooLarge):
        return ErrorCode.MESSAGE_TOO_LARGE
    if isinstance(exc, CorruptRecord):
        return ErrorCode.CORRUPT_MESSAGE
    if isinstance(exc, OffsetOutOfRange):
        return ErrorCode.OFFSET_OUT_OF_RANGE
    if isinstance(exc, StaleLeaderEpoch):
        return ErrorCode.FENCED_LEADER_EPOCH
    if isinstance(exc, PartitionError):
        return exc.code
    return ErrorCode.KAFKA_STORAGE_ERROR


# -- cluster metadata ------------------------------------------------------------------------

@handles(ApiKey.API_VERSIONS)
async def handle_api_versions(broker, request, conn):
    versions = [[int(k), lo, hi] for k, (lo, hi) in sorted(SUPPORTED_VERSIONS.items())
                if k in broker.handlers]
    return {"error_code": 0, "api_versions": versions, "broker_version": __version__,
            "broker_id": broker.broker_id}, []


def _partition_meta(broker, topic: str, p: int) -> dict:
    part = broker.partition(topic, p)
    if part is None:
        return {"partition": p, "error_code": int(ErrorCode.LEADER_NOT_AVAILABLE), "leader": -1,
                "leader_epoch": -1, "replicas": [], "isr": []}
    return {"partition": p, "error_code": 0, "leader": part.leader_id,
            "leader_epoch": part.leader_epoch, "replicas": list(part.replicas), "isr": list(part.isr)}


def _topic_meta(broker, name: str) -> dict:
    meta = broker.topic_metadata(name)
    return {"topic": name, "error_code": 0, "is_internal": meta.internal,
            "partitions": [_partition_meta(broker, name, p) for p in range(meta.partitions)]}


@handles(ApiKey.METADATA)
async def handle_metadata(broker, request, conn):
    payload = request.payload
    names = payload["topics"]
    topics = []
    if names is None:
        names = sorted(broker.metadata.topics)
    for name in names:
        if broker.topic_metadata(name) is None:
            code = broker.auto_create_topic(name) if payload["allow_auto_topic_creation"] else \
                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            if code != ErrorCode.NONE:
                topics.append({"topic": name, "error_code": int(code), "partitions": []})
                continue
        topics.append(_topic_meta(broker, name))
    host = conn.local_host or broker.host
    return {"brokers": [{"node_id": broker.broker_id, "host": host, "port": broker.port}],
            "cluster_id": broker.metadata.cluster_id, "controller_id": broker.broker_id,
            "topics": topics}, []


@handles(ApiKey.DESCRIBE_TOPIC_PARTITIONS)
async def handle_describe_topic_partitions(broker, request, conn):
    names = request.payload["topics"]
    if names is None:
        names = sorted(broker.metadata.topics)
    topics = []
    for name in names:
        meta = broker.topic_metadata(name)
        if meta is None:
            topics.append({"topic": name, "error_code": int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                           "partitions": []})
            continue
        partitions = []
        for p in range(meta.partitions):
            entry = _partition_meta(broker, name, p)
            part = broker.partition(name, p)
            entry.update(log_start_offset=part.log_start_offset, log_end_offset=part.log_end_offset,
                         high_watermark=part.high_watermark, size_bytes=part.size_bytes)
            partitions.append(entry)
        topics.append({"topic": name, "error_code": 0, "is_internal": meta.internal,
                       "partitions": partitions})
    return {"topics": topics}, []


# -- topic administration --------------------------------------------------------------------

@handles(ApiKey.CREATE_TOPICS)
async def handle_create_topics(broker, request, conn):
    payload = request.payload
    results = []
    seen = set()
    for t in payload["topics"]:
        name = t["name"]
        if name in seen:
            results.append(_result(name, ErrorCode.INVALID_REQUEST, "topic named twice in one request"))
            continue
        seen.add(name)
        code, message = broker.create_topic(name, t["num_partitions"], t["replication_factor"],
                                            t["configs"], validate_only=payload["validate_only"])
        results.append(_result(name, code, message))
    return {"topics": results}, []


def _result(name: str, code: ErrorCode, message: str | None = None, key: str = "name") -> dict:
    return {key: name, "error_code": int(code),
            "error_message": (message or error_message(code)) if code else None}


@handles(ApiKey.DELETE_TOPICS)
async def handle_delete_topics(broker, request, conn):
    results = []
    for name in request.payload["topics"]:
        code, message = await broker.delete_topic(name)
        results.append(_result(name, code, message))
    return {"topics": results}, []


@handles(ApiKey.CREATE_PARTITIONS)
async def handle_create_partitions(broker, request, conn):
    payload = request.payload
    results = []
    for t in payload["topics"]:
        code, message = broker.create_partitions(t["name"], t["count"],
                                                 validate_only=payload["validate_only"])
        results.append(_result(t["name"], code, message))
    return {"results": results}, []


def _config_source(broker, topic_overrides: dict, key: str) -> tuple[bool, str]:
    if key in topic_overrides:
        return False, "TOPIC_CONFIG"
    broker_key = next((b for b, t in TOPIC_DEFAULT_FROM_BROKER.items() if t == key), None)
    if broker_key is not None and not broker.config.is_default(broker_key):
        return False, "STATIC_BROKER_CONFIG"
    return True, "DEFAULT_CONFIG"


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@handles(ApiKey.DESCRIBE_CONFIGS)
async def handle_describe_configs(broker, request, conn):
    results = []
    for res in request.payload["resources"]:
        rtype, name, wanted = res["resource_type"], res["resource_name"], res["config_names"]
        entry = {"resource_type": rtype, "resource_name": name, "error_code": 0,
                 "error_message": None, "configs": []}
        if rtype == RESOURCE_TOPIC:
            meta = broker.topic_metadata(name)
            if meta is None:
                entry.update(error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                             error_message=f"unknown topic {name!r}")
            else:
                effective = broker.config.topic_config(meta.configs)
                for key in TOPIC_CONFIG_KEYS:
                    if wanted is not None and key.name not in wanted:
                        continue
                    is_default, source = _config_source(broker, meta.configs, key.name)
                    entry["configs"].append({"name": key.name, "value": _fmt(effective[key.name]),
                                             "read_only": False, "is_default": is_default,
                                             "source": source})
        elif rtype == RESOURCE_BROKER and name in ("", str(broker.broker_id)):
            for key in BROKER_CONFIG_KEYS:
                if wanted is not None and key.name not in wanted:
                    continue
                default = broker.config.is_default(key.name)
                entry["configs"].append({"name": key.name, "value": _fmt(broker.config[key.name]),
                                         "read_only": True, "is_default": default,
                                         "source": "DEFAULT_CONFIG" if default else "STATIC_BROKER_CONFIG"})
        else:
            entry.update(error_code=int(ErrorCode.INVALID_REQUEST),
                         error_message=f"unknown resource type {rtype} or name {name!r}")
        results.append(entry)
    return {"results": results}, []


@handles(ApiKey.INCREMENTAL_ALTER_CONFIGS)
async def handle_incremental_alter_configs(broker, request, conn):
    payload = request.payload
    results = []
    for res in payload["resources"]:
        rtype, name = res["resource_type"], res["resource_name"]
        entry = {"resource_type": rtype, "resource_name": name, "error_code": 0, "error_message": None}
        if rtype != RESOURCE_TOPIC:
            entry.update(error_code=int(ErrorCode.INVALID_REQUEST),
                         error_message="only topic configs can be altered; broker settings are "
                                       "static (restart with --set)")
        else:
            changes = {}
            bad = None
            for c in res["configs"]:
                if c["op"] == CONFIG_OP_SET:
                    changes[c["name"]] = c["value"]
                elif c["op"] == CONFIG_OP_DELETE:
                    changes[c["name"]] = None
                else:
                    bad = f"config op {c['op']} is not supported (0 set, 1 delete)"
            if bad:
                entry.update(error_code=int(ErrorCode.INVALID_REQUEST), error_message=bad)
            else:
                code, message = broker.alter_topic_configs(name, changes,
                                                           validate_only=payload["validate_only"])
                entry.update(error_code=int(code), error_message=message if code else None)
        results.append(entry)
    return {"results": results}, []


# -- produce ---------------------------------------------------------------------------------

def _split_batches(view) -> list:
    """The batches in one attachment (usually one); CorruptBatchError when they do not tile it."""
    size = batch_size_at(view, 0)
    if size == len(view):
        return [view]
    batches, pos = [], 0
    while pos < len(view):
        size = batch_size_at(view, pos)
        if pos + size > len(view):
            raise CorruptBatchError("truncated batch at the end of the records")
        check_batch(view, pos)
        batches.append(view[pos:pos + size])
        pos += size
    return batches


async def _produce_one(broker, topic: str, p: int, records: int, attachments: list,
                       acks: int, timeout_s: float) -> dict:
    out = {"partition": p, "error_code": 0, "error_message": None, "base_offset": -1,
           "log_append_time": -1, "log_start_offset": -1}
    part = broker.partition(topic, p)
    if part is None:
        out.update(error_code=int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
                   error_message=f"unknown topic or partition {topic}-{p}")
        return out
    if broker.topic_metadata(topic).internal:
        out.update(error_code=int(ErrorCode.INVALID_TOPIC_EXCEPTION),
                   error_message=f"cannot produce to internal topic {topic}")
        return out
    if not 0 <= records < len(attachments):
        out.update(error_code=int(ErrorCode.INVALID_REQUEST),
                   error_message=f"records index {records} names no attachment")
        return out
    try:
        first = None
        batches = _split_batches(attachments[records])
        limit = part.log.config.max_message_bytes
        if len(batches) > 1 and any(len(b) > limit for b in batches):
            # All or nothing: refuse before the first batch is appended.
            raise RecordTooLarge(f"a batch exceeds max.message.bytes {limit}")
        for batch in batches:
            # Kafka's LogValidator: the records are what the header says, every
            # consumer can read them (issue 8 item 8). Larger batches are the
            # log's to refuse (MESSAGE_TOO_LARGE).
            if len(batch) <= limit:
                validate_batch(batch, max_message_bytes=limit)
        for batch in batches:
            info = await part.append(batch, acks=acks, timeout_s=timeout_s)
            first = first or info
        out.update(base_offset=first.base_offset, log_append_time=first.log_append_time,
                   log_start_offset=part.log_start_offset)
    except InvalidRecordError as exc:
        out.update(error_code=int(ErrorCode.INVALID_RECORD), error_message=str(exc))
    except CorruptBatchError as exc:
        out.update(error_code=int(ErrorCode.CORRUPT_MESSAGE), error_message=str(exc))
    except (StorageError, PartitionError) as exc:
        code = _storage_code(exc)
        out.update(error_code=int(code), error_message=str(exc))
        if isinstance(exc, LogCorrupted):
            log.error("%s-%d: %s", topic, p, exc)
    return out


@handles(ApiKey.PRODUCE)
async def handle_produce(broker, request, conn):
    payload = request.payload
    acks = payload["acks"]
    timeout_s = max(payload["timeout_ms"], 0) / 1000
    topics = []
    for t in payload["topics"]:
        partitions = []
        for pp in t["partitions"]:
            if acks not in (-1, 0, 1):
                partitions.append({"partition": pp["partition"],
                                   "error_code": int(ErrorCode.INVALID_REQUIRED_ACKS),
                                   "error_message": error_message(ErrorCode.INVALID_REQUIRED_ACKS),
                                   "base_offset": -1, "log_append_time": -1, "log_start_offset": -1})
                continue
            partitions.append(await _produce_one(broker, t["topic"], pp["partition"], pp["records"],
                                                 request.attachments, acks, timeout_s))
        topics.append({"topic": t["topic"], "partitions": partitions})
    if acks == 0:
        return None
    return {"topics": topics}, []


# -- fetch -----------------------------------------------------------------------------------

async def _fetch_round(broker, wanted: list, budget: int, follower: bool) -> tuple[list, list, int, bool]:
    """Read every wanted partition once. Returns (topics, attachments, bytes, any_error)."""
    topics, attachments, total, any_error = [], [], 0, False
    for t in wanted:
        partitions = []
        for pp in t["partitions"]:
            p = pp["partition"]
            out = {"partition": p, "error_code": 0, "high_watermark": -1, "last_stable_offset": -1,
                   "log_start_offset": -1, "records": -1}
            part = broker.partition(t["topic"], p)
            if part is None:
                out["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                any_error = True
                partitions.append(out)
                continue
            offset = pp["fetch_offset"]
            epoch = pp["current_leader_epoch"]
            if epoch >= 0 and epoch != part.leader_epoch:
                # KIP-320: a client with a stale (or future) view of the leader must refresh.
                out["error_code"] = int(ErrorCode.FENCED_LEADER_EPOCH if epoch < part.leader_epoch
                                        else ErrorCode.UNKNOWN_LEADER_EPOCH)
                any_error = True
                partitions.append(out)
                continue
            out.update(high_watermark=part.high_watermark, last_stable_offset=part.high_watermark,
                       log_start_offset=part.log_start_offset)
            limit = min(max(pp["partition_max_bytes"], 0), budget - total)
            try:
                if offset < part.log_start_offset or offset > part.log_end_offset:
                    raise OffsetOutOfRange(offset, part.log_start_offset, part.log_end_offset)
                if limit > 0 or total == 0:
                    data = part.read(offset, max(limit, 1),
                                     max_offset=part.log_end_offset if follower else None)
                    if data:
                        out["records"] = len(attachments)
                        attachments.append(data)
                        total += len(data)
            except (StorageError, PartitionError) as exc:
                out["error_code"] = int(_storage_code(exc))
                any_error = True
            partitions.append(out)
        topics.append({"topic": t["topic"], "partitions": partitions})
    return topics, attachments, total, any_error


@handles(ApiKey.FETCH)
async def handle_fetch(broker, request, conn):
    payload = request.payload
    follower = payload["replica_id"] >= 0
    budget = min(max(payload["max_bytes"], 0), broker.config.fetch_max_bytes)
    wait_s = min(max(payload["max_wait_ms"], 0), broker.config.fetch_max_wait_ms) / 1000
    min_bytes = payload["min_bytes"]
    deadline = trio.current_time() + wait_s
    while True:
        topics, attachments, total, any_error = await _fetch_round(
            broker, payload["topics"], budget, follower)
        if total >= min_bytes or any_error or trio.current_time() >= deadline or broker.stopping:
            return {"error_code": 0, "topics": topics}, attachments
        await _wait_for_any(broker, payload["topics"], deadline)


async def _wait_for_any(broker, wanted: list, deadline: float) -> None:
    """Sleep until any wanted partition's HW moves, the deadline passes, or the broker stops."""
    event = trio.Event()
    parts = [broker.partition(t["topic"], pp["partition"]) for t in wanted for pp in t["partitions"]]
    parts = [p for p in parts if p is not None]
    for part in parts:
        part.add_waiter(event)
    broker.add_stop_waiter(event)
    try:
        with trio.move_on_at(deadline):
            await event.wait()
    finally:
        for part in parts:
            part.discard_waiter(event)
        broker.discard_stop_waiter(event)


@handles(ApiKey.LIST_OFFSETS)
async def handle_list_offsets(broker, request, conn):
    topics = []
    for t in request.payload["topics"]:
        partitions = []
        for pp in t["partitions"]:
            p, ts = pp["partition"], pp["timestamp"]
            out = {"partition": p, "error_code": 0, "timestamp": -1, "offset": -1, "leader_epoch": -1}
            part = broker.partition(t["topic"], p)
            if part is None:
                out["error_code"] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            else:
                out["leader_epoch"] = part.leader_epoch
                if ts == EARLIEST_TIMESTAMP:
                    out["offset"] = part.log_start_offset
                elif ts == LATEST_TIMESTAMP:
                    out["offset"] = part.high_watermark
                elif ts < 0:
                    out["error_code"] = int(ErrorCode.INVALID_REQUEST)
                else:
                    try:
                        found = part.log.offset_for_timestamp(ts)
                    except StorageError as exc:
                        out["error_code"] = int(_storage_code(exc))
                        found = None
                    if found is not None and found[0] < part.high_watermark:
                        out["offset"], out["timestamp"] = found
            partitions.append(out)
        topics.append({"topic": t["topic"], "partitions": partitions})
    return {"topics": topics}, []


@handles(ApiKey.INIT_PRODUCER_ID)
async def handle_init_producer_id(broker, request, conn):
    payload = request.payload
    if payload["transactional_id"] is not None:
        return {"error_code": int(ErrorCode.INVALID_REQUEST), "producer_id": -1, "producer_epoch": -1,
                "error_message": "transactions are not supported"}, []
    pid, epoch = payload["producer_id"], payload["producer_epoch"]
    if pid >= 0 and 0 <= epoch < 32767 and pid < broker.producer_ids.next_id:
        return {"error_code": 0, "producer_id": pid, "producer_epoch": epoch + 1}, []
    pid = await broker.producer_ids.allocate()
    return {"error_code": 0, "producer_id": pid, "producer_epoch": 0}, []


# -- consumer-group placeholders (minilog.broker.groups replaces them) -----------------------

_NOT_AVAILABLE = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)


@handles(ApiKey.FIND_COORDINATOR)
async def handle_find_coordinator(broker, request, conn):
    return {"coordinators": [
        {"key": k, "node_id": -1, "host": "", "port": -1, "error_code": _NOT_AVAILABLE,
         "error_message": "the group coordinator is not available on this broker"}
        for k in request.payload["keys"]]}, []


@handles(ApiKey.OFFSET_COMMIT)
async def handle_offset_commit(broker, request, conn):
    return {"topics": [{"topic": t["topic"], "partitions": [
        {"partition": p["partition"], "error_code": _NOT_AVAILABLE} for p in t["partitions"]]}
        for t in request.payload["topics"]]}, []


@handles(ApiKey.CONSUMER_GROUP_DESCRIBE)
async def handle_consumer_group_describe(broker, request, conn):
    groups = []
    for g in request.payload["group_ids"]:
        entry = empty_payload(RESPONSE_SCHEMAS[ApiKey.CONSUMER_GROUP_DESCRIBE]["groups"][0])
        entry.update(group_id=g, error_code=_NOT_AVAILABLE, group_state="dead")
        groups.append(entry)
    return {"groups": groups}, []


@handles(ApiKey.DELETE_GROUPS)
async def handle_delete_groups(broker, request, conn):
    return {"results": [{"group_id": g, "error_code": _NOT_AVAILABLE}
                        for g in request.payload["group_ids"]]}, []


def _top_level_unavailable(key: ApiKey) -> Handler:
    async def handle(broker, request, conn):
        return error_reply(key, ErrorCode.COORDINATOR_NOT_AVAILABLE)
    handle.__name__ = f"handle_{key.name.lower()}_unavailable"
    return handle


for _key in (ApiKey.CONSUMER_GROUP_HEARTBEAT, ApiKey.OFFSET_FETCH, ApiKey.LIST_GROUPS):
    DEFAULT_HANDLERS[_key] = _top_level_unavailable(_key)

assert set(DEFAULT_HANDLERS) == set(ApiKey), set(ApiKey) - set(DEFAULT_HANDLERS)
