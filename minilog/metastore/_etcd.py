"""`KVStore` on a real etcd (v3.4+), through etcd's JSON gateway, from trio, with no threads.

Why the gateway and httpx: etcd's native API is gRPC, and grpcio runs its
own threads and event loop (no trio support); the maintained etcd clients
for Python (etcd3, aetcd) sit on grpcio or asyncio. etcd also serves every
v3 call as JSON over HTTP/1.1 (grpc-gateway, `/v3/kv/range` and friends,
enabled by default on the client port). httpx speaks HTTP/1.1 on trio
natively (httpcore picks its trio backend through sniffio), keeps
connections alive in a pool, and streams response bodies, which is what a
watch needs. So one put is one HTTP round trip on a pooled connection, on
the trio thread. docs/cluster.md ("Metadata store") has the measured cost.

Wire rules (grpc-gateway's JSON mapping of etcd's protobufs):
- keys and values are base64; int64 fields (revisions, lease ids, TTLs)
  are JSON strings; fields at their default (0, false, empty) are omitted.
- errors come back as `{"error", "message", "code"}` with gRPC status
  codes; `_raise_for` maps them onto the `MetaStoreError` hierarchy.
- `/v3/watch` and `/v3/lease/keepalive` are streams: one JSON object per
  line, each wrapped in `{"result": ...}`. A watch is one long POST whose
  first line confirms creation; a keep-alive is a short POST with one
  request and one answer (a keep-alive answer without a TTL means the lease
  is gone).

Error handling: transport errors (refused, reset, timed out) become
`Unavailable`; so does gRPC UNAVAILABLE / DEADLINE_EXCEEDED. A write that
raised `Unavailable` may or may not have been applied.

Resource handling: `connect()` is an async context manager that owns the
httpx client and its connection pool; each watch owns one streaming
connection for its lifetime.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from ._types import (
    Compacted,
    Compare,
    Delete,
    DeleteResult,
    Event,
    EventType,
    FutureRevision,
    Get,
    InvalidRequest,
    KeyValue,
    Lease,
    LeaseInfo,
    LeaseNotFound,
    MetaStoreError,
    Op,
    OpResult,
    Put,
    PutResult,
    RangeResult,
    StoreStatistics,
    TxnResult,
    Unavailable,
    prefix_range_end,
)

__all__ = ["EtcdStore"]

REQUEST_TIMEOUT_S = 5.0  # one unary call, connect included
CONNECTIONS_MAX = 32  # pooled HTTP connections (each open watch holds one more)

_TARGETS = {"version": "VERSION", "create_revision": "CREATE", "mod_revision": "MOD", "value": "VALUE", "lease": "LEASE"}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}
_GRPC_UNAVAILABLE = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
_GRPC_INVALID = {3, 9}  # INVALID_ARGUMENT, FAILED_PRECONDITION


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(d.get("key")),
        value=_unb64(d.get("value")),
        create_revision=int(d.get("create_revision", 0)),
        mod_revision=int(d.get("mod_revision", 0)),
        version=int(d.get("version", 0)),
        lease=int(d.get("lease", 0)),
    )


def _revision(reply: dict[str, Any]) -> int:
    return int(reply.get("header", {}).get("revision", 0))


def _range_fields(key: bytes, prefix: bool) -> dict[str, str]:
    fields = {"key": _b64(key if key or not prefix else b"\0")}
    if prefix:
        fields["range_end"] = _b64(prefix_range_end(key))
    return fields


def _compare_json(c: Compare) -> dict[str, str]:
    field = {"create_revision": "create_revision", "mod_revision": "mod_revision"}.get(c.target, c.target)
    operand = _b64(c.operand) if isinstance(c.operand, bytes) else str(c.operand)
    return {"key": _b64(c.key), "target": _TARGETS[c.target], "result": _RESULTS[c.op], field: operand}


def _op_json(op: Op) -> dict[str, Any]:
    if isinstance(op, Get):
        body: dict[str, Any] = _range_fields(op.key, op.prefix)
        if op.limit:
            body["limit"] = str(op.limit)
        return {"request_range": body}
    if isinstance(op, Put):
        body = {"key": _b64(op.key), "value": _b64(op.value), "prev_kv": True}
        if op.lease:
            body["lease"] = str(op.lease)
        return {"request_put": body}
    assert isinstance(op, Delete)
    return {"request_delete_range": {**_range_fields(op.key, op.prefix), "prev_kv": True}}


def _range_result(d: dict[str, Any], revision: int) -> RangeResult:
    return RangeResult([_kv(kv) for kv in d.get("kvs", [])], int(d.get("count", 0)), revision)


def _put_result(d: dict[str, Any], revision: int) -> PutResult:
    return PutResult(revision, _kv(d["prev_kv"]) if "prev_kv" in d else None)


def _delete_result(d: dict[str, Any], revision: int) -> DeleteResult:
    return DeleteResult(revision, int(d.get("deleted", 0)), [_kv(kv) for kv in d.get("prev_kvs", [])])


def _op_result(d: dict[str, Any], revision: int) -> OpResult:
    if "response_range" in d:
        return _range_result(d["response_range"], revision)
    if "response_put" in d:
        return _put_result(d["response_put"], revision)
    return _delete_result(d.get("response_delete_range", {}), revision)


def _raise_for(reply: dict[str, Any], lease_id: int = 0) -> None:
    """Raise the `MetaStoreError` for an error reply; return for a good one."""
    if "error" not in reply and "code" not in reply:
        return
    code = int(reply.get("code", 2))
    message = str(reply.get("message") or reply.get("error") or "")
    if code in _GRPC_UNAVAILABLE:
        raise Unavailable(message)
    if "lease not found" in message:
        raise LeaseNotFound(lease_id)
    if "compacted" in message:
        raise Compacted(0)
    if "future revision" in message:
        raise FutureRevision(message)
    if code in _GRPC_INVALID:
        raise InvalidRequest(message)
    raise MetaStoreError(f"etcd error {code}: {message}")


class EtcdStore:
    """`KVStore` on etcd. Open with `async with EtcdStore.connect("http://127.0.0.1:2379") as kv`."""

    def __init__(self, client: httpx.AsyncClient, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self._client = client
        self._timeout_s = timeout_s
        self._requests = 0
        self._unavailable = 0
        self._watches_open = 0

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(self._requests, self._unavailable, self._watches_open)

    @classmethod
    @asynccontextmanager
    async def connect(cls, endpoint: str, *, timeout_s: float = REQUEST_TIMEOUT_S) -> AsyncIterator[EtcdStore]:
        """A store talking to `endpoint` ("http://host:port" or "etcd://host:port").

        Connecting is lazy: an unreachable etcd shows up as `Unavailable`
        on the first call, not here.
        """
        if endpoint.startswith("etcd://"):
            endpoint = "http://" + endpoint.removeprefix("etcd://")
        limits = httpx.Limits(max_connections=CONNECTIONS_MAX, max_keepalive_connections=CONNECTIONS_MAX)
        async with httpx.AsyncClient(base_url=endpoint, timeout=timeout_s, limits=limits) as client:
            yield cls(client, timeout_s=timeout_s)

    async def _call(self, path: str, body: dict[str, Any], *, lease_id: int = 0) -> dict[str, Any]:
        self._requests += 1
        try:
            return await self._call_once(path, body, lease_id)
        except Unavailable:
            self._unavailable += 1
            raise

    async def _call_once(self, path: str, body: dict[str, Any], lease_id: int) -> dict[str, Any]:
        try:
            response = await self._client.post(path, content=json.dumps(body))
        except httpx.TransportError as exc:
            raise Unavailable(f"etcd {path}: {exc!r}") from exc
        try:
            reply: dict[str, Any] = response.json()
        except ValueError:
            raise Unavailable(f"etcd {path}: HTTP {response.status_code}, not JSON")
        _raise_for(reply, lease_id)
        if response.status_code != 200:
            raise MetaStoreError(f"etcd {path}: HTTP {response.status_code}")
        return reply

    async def get(self, key: bytes, *, prefix: bool = False, limit: int = 0) -> RangeResult:
        if not key and not prefix:
            raise InvalidRequest("key is not provided")
        body: dict[str, Any] = _range_fields(key, prefix)
        if limit:
            body["limit"] = str(limit)
        reply = await self._call("/v3/kv/range", body)
        return _range_result(reply, _revision(reply))

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> PutResult:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value), "prev_kv": True}
        if lease:
            body["lease"] = str(lease)
        reply = await self._call("/v3/kv/put", body, lease_id=lease)
        return _put_result(reply, _revision(reply))

    async def delete(self, key: bytes, *, prefix: bool = False) -> DeleteResult:
        if not key and not prefix:
            raise InvalidRequest("key is not provided")
        reply = await self._call("/v3/kv/deleterange", {**_range_fields(key, prefix), "prev_kv": True})
        return _delete_result(reply, _revision(reply))

    async def txn(self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> TxnResult:
        body = {
            "compare": [_compare_json(c) for c in compare],
            "success": [_op_json(op) for op in success],
            "failure": [_op_json(op) for op in failure],
        }
        leases = [op.lease for op in (*success, *failure) if isinstance(op, Put) and op.lease]
        reply = await self._call("/v3/kv/txn", body, lease_id=leases[0] if leases else 0)
        revision = _revision(reply)
        responses = [_op_result(r, revision) for r in reply.get("responses", [])]
        return TxnResult(bool(reply.get("succeeded", False)), revision, responses)

    async def grant_lease(self, ttl_s: int) -> Lease:
        if ttl_s <= 0:
            raise InvalidRequest(f"lease TTL must be positive, not {ttl_s}")
        reply = await self._call("/v3/lease/grant", {"TTL": str(ttl_s)})
        return Lease(int(reply["ID"]), int(reply["TTL"]))

    async def keep_alive(self, lease_id: int) -> int:
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease_id)}, lease_id=lease_id)
        result = reply.get("result", {})
        _raise_for(result, lease_id)
        ttl_s = int(result.get("TTL", 0))
        if ttl_s <= 0:
            raise LeaseNotFound(lease_id)
        return ttl_s

    async def revoke_lease(self, lease_id: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease_id)}, lease_id=lease_id)

    async def lease_info(self, lease_id: int) -> LeaseInfo:
        reply = await self._call("/v3/lease/timetolive", {"ID": str(lease_id), "keys": True}, lease_id=lease_id)
        ttl_s = int(reply.get("TTL", 0))  # omitted when 0; a missing lease says -1
        if ttl_s < 0:
            raise LeaseNotFound(lease_id)
        keys = sorted(_unb64(k) for k in reply.get("keys", []))
        return LeaseInfo(lease_id, ttl_s, int(reply.get("grantedTTL", 0)), keys)

    async def compact(self, revision: int) -> None:
        await self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    @asynccontextmanager
    async def watch(
        self, key: bytes, *, prefix: bool = False, start_revision: int = 0
    ) -> AsyncIterator[AsyncIterator[Event]]:
        request: dict[str, Any] = _range_fields(key, prefix)
        if start_revision:
            request["start_revision"] = str(start_revision)
        body = json.dumps({"create_request": request})
        timeout = httpx.Timeout(self._timeout_s, read=None)  # a watch waits for changes as long as it lives
        self._requests += 1
        self._watches_open += 1
        try:
            async with self._client.stream("POST", "/v3/watch", content=body, timeout=timeout) as response:
                lines = response.aiter_lines()
                created = await self._next_result(lines)
                if not created.get("created"):
                    raise MetaStoreError(f"etcd watch not created: {created}")
                events = self._watch_events(lines, created)
                try:
                    yield events
                finally:
                    await events.aclose()
        except httpx.TransportError as exc:
            self._unavailable += 1
            raise Unavailable(f"etcd watch: {exc!r}") from exc
        finally:
            self._watches_open -= 1

    async def _next_result(self, lines: AsyncIterator[str]) -> dict[str, Any]:
        while True:
            try:
                line = await lines.__anext__()
            except StopAsyncIteration:
                self._unavailable += 1
                raise Unavailable("etcd watch stream ended")
            except httpx.TransportError as exc:
                self._unavailable += 1
                raise Unavailable(f"etcd watch: {exc!r}") from exc
            if not line.strip():
                continue
            message: dict[str, Any] = json.loads(line)
            _raise_for(message)
            result: dict[str, Any] = message.get("result", {})
            _raise_for(result)
            return result

    async def _watch_events(self, lines: AsyncIterator[str], first: dict[str, Any]) -> AsyncGenerator[Event, None]:
        result = first
        while True:
            if result.get("canceled"):
                compact_revision = int(result.get("compact_revision", 0))
                if compact_revision:
                    raise Compacted(compact_revision)
                raise Unavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
            for e in result.get("events", []):
                event_type = EventType.DELETE if e.get("type") == "DELETE" else EventType.PUT
                yield Event(event_type, _kv(e["kv"]))
            result = await self._next_result(lines)
