"""minilog.metastore: cluster metadata in a revisioned key-value store with etcd's semantics.

`KVStore` is the interface (etcd v3's KV, Lease and Watch); `EtcdStore`
talks to a real etcd through its JSON gateway, `MemoryStore` is the same
thing in one process on trio's clock (tests and the seeded simulation).
See docs/cluster.md, "Metadata store".
"""

from __future__ import annotations

from ._api import KVStore, LeaseKeeper, LeaseKeeperStatistics
from ._local import LocalEtcd, etcd_binary, run_local_etcd
from ._etcd import EtcdStore
from ._memory import MemoryStore
from ._types import (
    Compacted,
    Compare,
    CompareOp,
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
    TxnResult,
    Unavailable,
    prefix_range_end,
)

__all__ = [
    "KVStore",
    "EtcdStore",
    "MemoryStore",
    "LeaseKeeper",
    "LeaseKeeperStatistics",
    "LocalEtcd",
    "run_local_etcd",
    "etcd_binary",
    "KeyValue",
    "Event",
    "EventType",
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
    "prefix_range_end",
]
