"""minilog.metastore: cluster metadata in a revisioned key-value store with etcd's semantics.

`KVStore` is the interface (etcd v3's KV, Lease and Watch); `EtcdStore`
talks to a real etcd through its JSON gateway, `MemoryStore` is the same
thing in one process on trio's clock (tests and the seeded simulation).
On top of it, the cluster's records and operations: broker registration
under a lease, controller election and fencing, partition state changed by
compare-and-swap, topics with an even replica assignment, producer-id
blocks. See docs/cluster.md.
"""

from __future__ import annotations

from ._api import KVStore, LeaseKeeper, LeaseKeeperStatistics
from ._assignment import assign_replicas
from ._cluster import (
    CAS_ATTEMPTS_MAX,
    NO_LEADER,
    TXN_OPS_MAX,
    BrokerIdInUse,
    BrokerRegistration,
    CasContention,
    ClusterKeys,
    ClusterMetadataError,
    ControllerRecord,
    NotController,
    PartitionState,
    TopicExists,
    TopicRecord,
    UnknownTopicOrPartition,
    allocate_producer_ids,
    create_topic,
    current_controller,
    delete_topic,
    put_new_topic,
    update_topic,
    ensure_partition_states,
    get_partition_state,
    get_topic,
    list_topics,
    live_brokers,
    update_partition_state,
)
from ._session import BROKER_LEASE_TTL_S, BrokerSession, campaign, fence_for, register_broker, resign, watch_controller
from ._etcd import EtcdStore
from ._local import LocalEtcd, etcd_binary, run_local_etcd
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
    StoreStatistics,
    TxnResult,
    Unavailable,
    compare_holds,
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
    "StoreStatistics",
    "Lease",
    "LeaseInfo",
    "MetaStoreError",
    "Unavailable",
    "Compacted",
    "FutureRevision",
    "LeaseNotFound",
    "InvalidRequest",
    "prefix_range_end",
    "compare_holds",
    # cluster metadata (docs/cluster.md)
    "ClusterKeys",
    "BrokerRegistration",
    "ControllerRecord",
    "TopicRecord",
    "PartitionState",
    "NO_LEADER",
    "TXN_OPS_MAX",
    "CAS_ATTEMPTS_MAX",
    "ClusterMetadataError",
    "TopicExists",
    "UnknownTopicOrPartition",
    "NotController",
    "BrokerIdInUse",
    "CasContention",
    "assign_replicas",
    "live_brokers",
    "current_controller",
    "create_topic",
    "put_new_topic",
    "update_topic",
    "delete_topic",
    "ensure_partition_states",
    "get_topic",
    "list_topics",
    "get_partition_state",
    "update_partition_state",
    "allocate_producer_ids",
    "BrokerSession",
    "BROKER_LEASE_TTL_S",
    "register_broker",
    "campaign",
    "fence_for",
    "resign",
    "watch_controller",
]


def _implementations_conform(memory: MemoryStore, etcd: EtcdStore) -> tuple[KVStore, KVStore]:
    """Never called: mypy checks here that both stores implement the `KVStore` protocol."""
    return memory, etcd
