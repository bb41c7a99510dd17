"""The values and errors of the metadata store: etcd v3's data model, typed.

Rules:
- Keys and values are `bytes`, as in etcd. Callers encode (the cluster
  records in `_cluster.py` use UTF-8 keys and JSON values).
- Revisions follow etcd exactly. The store has one global revision that every
  write transaction raises by one (a transaction that writes several keys
  raises it once; a delete that matches nothing and a read-only transaction
  do not raise it). Each key carries `create_revision` (the revision that
  created it, 0 when it does not exist), `mod_revision` (the revision of its
  last write) and `version` (writes since it was created, 0 when absent).
- A comparison on a key that does not exist sees create_revision,
  mod_revision, version and lease as 0; a VALUE comparison on a missing key
  is always false (etcd's `applyCompare`: "nil == empty string in grpc; no
  way to represent missing value").
- Errors form one hierarchy under `MetaStoreError`. `Unavailable` means the
  outcome of a write is unknown (the request may have been applied); the
  others mean the request was rejected and changed nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "KeyValue",
    "EventType",
    "Event",
    "Compare",
    "CompareOp",
    "Get",
    "Put",
    "Delete",
    "Op",
    "RangeResult",
    "PutResult",
    "DeleteResult",
    "OpResult",
    "TxnResult",
    "Lease",
    "LeaseInfo",
    "MetaStoreError",
    "Unavailable",
    "Compacted",
    "FutureRevision",
    "LeaseNotFound",
    "InvalidRequest",
    "StoreStatistics",
    "prefix_range_end",
    "compare_holds",
]


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as stored, with etcd's per-key revisions."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0  # lease id the key is attached to, 0 for none


class EventType(enum.Enum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """One change seen by a watch.

    For DELETE, `kv` carries the key and the deleting revision as
    `mod_revision`; value, create_revision, version and lease are empty,
    exactly as etcd reports them.
    """

    type: EventType
    kv: KeyValue

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


CompareOp = Literal["==", "!=", "<", ">"]
_CompareTarget = Literal["version", "create_revision", "mod_revision", "value", "lease"]


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a transaction: `target(key) op operand`.

    Build with the class methods: `Compare.mod_revision(k, "==", rev)`,
    `Compare.missing(k)`, `Compare.value(k, "==", b"x")`.
    """

    key: bytes
    target: _CompareTarget
    op: CompareOp
    operand: int | bytes

    @classmethod
    def version(cls, key: bytes, op: CompareOp, version: int) -> Compare:
        return cls(key, "version", op, version)

    @classmethod
    def create_revision(cls, key: bytes, op: CompareOp, revision: int) -> Compare:
        return cls(key, "create_revision", op, revision)

    @classmethod
    def mod_revision(cls, key: bytes, op: CompareOp, revision: int) -> Compare:
        return cls(key, "mod_revision", op, revision)

    @classmethod
    def value(cls, key: bytes, op: CompareOp, value: bytes) -> Compare:
        return cls(key, "value", op, value)

    @classmethod
    def lease(cls, key: bytes, op: CompareOp, lease_id: int) -> Compare:
        return cls(key, "lease", op, lease_id)

    @classmethod
    def missing(cls, key: bytes) -> Compare:
        """True when `key` does not exist (etcd's `create_revision == 0`)."""
        return cls(key, "create_revision", "==", 0)

    @classmethod
    def exists(cls, key: bytes) -> Compare:
        return cls(key, "create_revision", ">", 0)


@dataclass(frozen=True, slots=True)
class Get:
    """Read `key`, or every key starting with it when `prefix`."""

    key: bytes
    prefix: bool = False
    limit: int = 0  # 0: no limit


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0  # 0: no lease (a put without a lease detaches the key from its old one)


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    prefix: bool = False


Op = Get | Put | Delete


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    count: int  # keys matched (may exceed len(kvs) with a limit)
    revision: int  # store revision the read saw


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int  # the revision this put created
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: int
    prev_kvs: list[KeyValue] = field(default_factory=list)


OpResult = RangeResult | PutResult | DeleteResult


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool  # whether every compare held (then `success` ran, else `failure`)
    revision: int  # store revision after the transaction
    responses: list[OpResult]


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl_s: int


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: int
    ttl_s: int  # seconds left (etcd rounds)
    granted_ttl_s: int
    keys: list[bytes]


def compare_holds(c: Compare, kv: KeyValue | None) -> bool:
    """Whether `c` holds for `kv` (None: the key does not exist), by etcd's rules."""
    if c.target == "value":
        if kv is None:
            return False  # etcd: a VALUE compare on a missing key always fails
        actual: int | bytes = kv.value
    elif kv is None:
        actual = 0
    elif c.target == "version":
        actual = kv.version
    elif c.target == "create_revision":
        actual = kv.create_revision
    elif c.target == "mod_revision":
        actual = kv.mod_revision
    else:
        actual = kv.lease
    operand = c.operand
    assert type(actual) is type(operand), f"compare {c.target} with {type(operand).__name__}"
    if c.op == "==":
        return actual == operand
    if c.op == "!=":
        return actual != operand
    if c.op == "<":
        return actual < operand  # type: ignore[operator]
    return actual > operand  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """A store's counters (`statistics()` on either implementation)."""

    requests: int  # calls made (unary calls and watches opened)
    unavailable: int  # calls that raised Unavailable
    watches_open: int  # watches currently open


def prefix_range_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key starting with prefix" (clientv3.GetPrefixRangeEnd).

    The last byte below 0xff is incremented and the rest dropped; a prefix of
    only 0xff bytes (or an empty prefix) means "to the end": b"\\0".
    """
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


class MetaStoreError(Exception):
    """Base of every error the metadata store raises."""


class Unavailable(MetaStoreError):
    """The store could not be reached or did not answer in time.

    For a write, the outcome is unknown: it may have been applied. Callers
    re-read (or rely on a compare-and-swap) before retrying.
    """


class Compacted(MetaStoreError):
    """A watch asked for history older than the store keeps."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (oldest kept: {compact_revision})")
        self.compact_revision = compact_revision


class FutureRevision(MetaStoreError):
    """A compaction asked for a revision the store has not reached."""


class LeaseNotFound(MetaStoreError):
    """The lease does not exist: never granted, revoked, or expired."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:#x} not found")
        self.lease_id = lease_id


class InvalidRequest(MetaStoreError):
    """The store rejected a malformed request (empty key, duplicate key in a txn, ...)."""
