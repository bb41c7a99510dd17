"""The leader's ISR upkeep: shrink lagging followers out, let caught-up ones back in.

Theory of operation: `IsrManager` runs in the replica manager's nursery:
every half `replica.lag.time.max.ms` (Kafka's isr-expiration) it shrinks
the ISR of partitions led here (`replication.out_of_sync`), and a follower
fetch that catches up asks it to expand (`replication.may_join_isr`). Both
go through `ClusterLink.alter_isr` (a compare-and-swap guarded by this
broker's leader epoch), one change in flight per partition; the HW counts a
pending addition while it is in flight (`Partition.pending_isr`). A fenced
change (None) is dropped: the newer state arrives through
`apply_partition_state`. A store that cannot be reached keeps the current
ISR; the next check tries again.

Task-safety: the trio thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from minilog._logsafe import logsafe

from .partition import Partition
from .replication import may_join_isr, out_of_sync

if TYPE_CHECKING:
    from ._cluster_link import ClusterLink

__all__ = ["IsrManager"]

log = logging.getLogger("minilog.broker.isr")


class IsrManager:
    """Shrinks and expands the ISR of the partitions led here (see the module docstring).

    Args:
        link: the control plane's compare-and-swap of the ISR.
        lag_max_ms: replica.lag.time.max.ms.
        partitions: every partition on this broker (read at each check).
    """

    def __init__(self, link: ClusterLink, lag_max_ms: int,
                 partitions: Callable[[], Iterable[Partition]]) -> None:
        self._link = link
        self._lag_max_s = lag_max_ms / 1000
        self._partitions = partitions
        self._nursery: trio.Nursery | None = None
        self.changes_total = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check for lagging followers every half lag_max_ms (Kafka's isr-expiration) until
        cancelled; changes run as tasks in this nursery."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(self._lag_max_s / 2)
                    self.check_shrink()
            finally:
                self._nursery = None

    def check_shrink(self) -> None:
        now = trio.current_time()
        for part in list(self._partitions()):
            if not (part.replicated and part.is_leader) or part.closed or part.pending_isr is not None:
                continue
            lagging = out_of_sync(part.isr, part.local_id, part.followers, now, self._lag_max_s)
            if lagging:
                new_isr = tuple(r for r in part.isr if r not in lagging)
                log.info("%s-%d: shrinking ISR %s -> %s (not caught up for %d ms: %s)",
                         logsafe(part.topic), part.partition, part.isr, list(new_isr),
                         self._lag_max_s * 1000, lagging)
                self._alter(part, new_isr)

    def maybe_expand(self, part: Partition, replica_id: int) -> None:
        """After a fetch of `replica_id`: ask to add it to the ISR when it may join."""
        if (replica_id in part.isr or part.pending_isr is not None or not part.is_leader
                or self._nursery is None):
            return
        progress = part.followers.get(replica_id)
        if progress is None or not may_join_isr(progress, part.high_watermark,
                                                part.leader_epoch_start_offset):
            return
        new_isr = (*part.isr, replica_id)
        log.info("%s-%d: expanding ISR %s -> %s (broker %d caught up)", logsafe(part.topic),
                 part.partition, part.isr, list(new_isr), replica_id)
        self._alter(part, new_isr)

    def _alter(self, part: Partition, new_isr: tuple[int, ...]) -> None:
        assert self._nursery is not None
        part.pending_isr = new_isr
        self._nursery.start_soon(self._alter_task, part, new_isr, part.leader_epoch, part.generation)

    async def _alter_task(self, part: Partition, new_isr: tuple[int, ...], leader_epoch: int,
                          generation: int) -> None:
        from minilog.metastore import MetaStoreError

        state = None
        try:
            state = await self._link.alter_isr(part.topic, part.partition, leader_epoch, new_isr)
        except MetaStoreError as exc:
            log.warning("%s-%d: ISR change to %s not stored: %s", logsafe(part.topic),
                        part.partition, list(new_isr), exc)
        except Exception:        # the control plane's bug must not take the broker down
            log.exception("%s-%d: ISR change to %s failed", logsafe(part.topic), part.partition,
                          list(new_isr))
        finally:
            if part.generation == generation:
                part.pending_isr = None
        if state is None or part.generation != generation or part.closed:
            return                          # fenced or moved on: the newer state is on its way
        if state.leader_epoch == part.leader_epoch and state.version > part.version:
            self.changes_total += 1
            part.set_isr(list(state.isr), state.version)
        else:
            part._advance_high_watermark()
