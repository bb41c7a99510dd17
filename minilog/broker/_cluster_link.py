"""The seam between the cluster's control plane and the replica manager.

Two halves, each a `typing.Protocol` in this leaf module so neither side
imports the other:

- `ClusterLink` is what the replica manager (the data plane) may ask of
  the control plane: where another broker listens (to fetch from it as a
  follower) and a compare-and-swap of a partition's ISR (Kafka's
  AlterPartition, done on the partition's etcd key). The etcd-backed
  metadata implements it; a single broker has none (`None`): it leads
  every partition and never changes an ISR.
- `ReplicaControl` is what the control plane may tell the replica
  manager: a partition's state as stored (after every change the metadata
  watch sees, and once per partition at start), and that a topic is gone.

Rules:
- The replica manager acts only on states it is given, never on guesses:
  it leads a partition exactly while the newest state it was given names
  this broker leader, at that state's leader epoch.
- States are applied in the order the store committed them. A state whose
  `leader_epoch` is lower than one already applied for the partition is
  stale and ignored; at an equal epoch only the ISR (and `version`) can
  have changed.
- `alter_isr` succeeds only if the stored state still names the caller
  leader at `leader_epoch`; otherwise it returns None (the caller was
  deposed, and the newer state is on its way through the watch). A store
  that cannot be reached raises `minilog.metastore.Unavailable`; the
  caller keeps its current ISR and tries again later.

Optional, called when present (the control plane checks with getattr):
- `ReplicaControl.lease_lost()` (synchronous): this broker's etcd lease is
  gone, so the cluster already treats it as dead and is electing other
  leaders; stop leading every partition now (accept no produce, answer
  NOT_LEADER) until an `apply_partition_state` names this broker leader
  again. The broker then registers again under a new epoch; the controller
  takes it out of every ISR and moves its leaderships, and the new states
  arrive through `apply_partition_state` as usual.

Task-safety: the trio thread only.
"""

from __future__ import annotations

from typing import Protocol

from ._services import PartitionState
from .metadata import TopicMeta

__all__ = ["ClusterLink", "ReplicaControl"]


class ClusterLink(Protocol):
    """What the replica manager may ask of the control plane."""

    @property
    def broker_id(self) -> int: ...

    def broker_address(self, broker_id: int) -> tuple[str, int] | None:
        """The native listener (host, port) of a live broker, or None when it is not
        registered (dead, or not yet started)."""
        ...

    async def alter_isr(self, topic: str, partition: int, leader_epoch: int,
                        isr: tuple[int, ...]) -> PartitionState | None:
        """Store `isr` as the partition's ISR if this broker still leads it at
        `leader_epoch` (compare-and-swap). Returns the stored state, or None when
        fenced. Raises `minilog.metastore.Unavailable` when the store is down."""
        ...


class ReplicaControl(Protocol):
    """What the control plane may tell the replica manager."""

    async def apply_partition_state(self, meta: TopicMeta, partition: int,
                                    state: PartitionState) -> None:
        """Make this broker's replica of the partition match `state`: open its log if
        it is not open yet, then lead it (accept produce at `state.leader_epoch`),
        follow `state.leader` (truncate by epoch, then fetch), or, when this broker
        is not in `state.replicas`, stop and delete the local replica."""
        ...

    async def remove_topic(self, meta: TopicMeta) -> None:
        """Resign and close every local partition of a deleted topic (before its
        directories go)."""
        ...
