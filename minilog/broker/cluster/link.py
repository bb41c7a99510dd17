"""`ClusterLink` on etcd: what the replica manager may ask of the control plane.

- `broker_address(id)`: the native listener of a live broker, from the
  picture's registrations (advertised addresses, so a follower connects
  the way clients do, through a proxy if one is advertised).
- `alter_isr(topic, p, epoch, isr)`: Kafka's AlterPartition as a
  compare-and-swap on the partition's key: it writes only while the stored
  state still names this broker leader at `epoch` (the leader's own fence:
  a deposed leader changes nothing and gets None). The picture is brought
  up to the write's revision before returning, so the caller's next read
  of the picture agrees with what it was told.

Task-safety: the trio thread only.
"""

from __future__ import annotations

from dataclasses import replace

from minilog.metastore import KVStore, PartitionState, UnknownTopicOrPartition, update_partition_state

from .._services import PartitionState as ServicePartitionState
from .follower import MetadataFollower

__all__ = ["EtcdClusterLink", "service_state"]


def service_state(state: PartitionState) -> ServicePartitionState:
    """The replica manager's `PartitionState` of a stored one."""
    return ServicePartitionState(state.leader, state.leader_epoch, tuple(state.replicas), tuple(state.isr),
                                 state.version)


class EtcdClusterLink:
    """Implements `minilog.broker._cluster_link.ClusterLink` for one broker."""

    def __init__(self, broker_id: int, kv: KVStore, follower: MetadataFollower) -> None:
        self._broker_id = broker_id
        self._kv = kv
        self._follower = follower

    @property
    def broker_id(self) -> int:
        return self._broker_id

    def broker_address(self, broker_id: int) -> tuple[str, int] | None:
        reg = self._follower.picture.brokers.get(broker_id)
        return reg.address("native") if reg is not None else None

    async def alter_isr(self, topic: str, partition: int, leader_epoch: int,
                        isr: tuple[int, ...]) -> ServicePartitionState | None:
        """Store `isr` if this broker still leads at `leader_epoch`; None when fenced.
        Raises `minilog.metastore.Unavailable` when etcd cannot be reached."""
        me = self._broker_id
        assert me in isr, f"the leader {me} must stay in its ISR {isr}"
        fenced = False

        def fn(current: PartitionState) -> PartitionState | None:
            nonlocal fenced
            fenced = current.leader != me or current.leader_epoch != leader_epoch
            if fenced or tuple(current.isr) == tuple(isr):
                return None
            members = set(isr)
            return replace(current, isr=tuple(r for r in current.replicas if r in members))

        keys = self._follower.picture.keys
        try:
            stored = await update_partition_state(self._kv, topic, partition, fn, keys=keys)
        except UnknownTopicOrPartition:
            return None
        if fenced:
            return None
        await self._follower.wait_revision(stored.mod_revision)
        return service_state(stored)
