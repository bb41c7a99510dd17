"""Makes this broker's replicas match the picture: the control plane's only hand on the data plane.

Theory of operation. Level-triggered, like the controller: on every change
of the picture the applier compares what it last applied (per partition:
the state's mod_revision; per topic: its record) with the picture, and
for each difference, in order:

1. a topic that is gone (or was re-created under a new topic id): tell the
   replica manager (`remove_topic`), delete its local directories, tell
   the topic-change listeners ("deleted");
2. a topic that is new, has more partitions or new configs: tell the
   listeners ("created", "partitions", "configs"); apply new configs to
   the local partitions;
3. every partition whose replicas name this broker (or named it when last
   applied): `apply_partition_state(meta, p, state)` with the state as
   stored. Per partition, states go in the order etcd committed them; a
   state superseded before the applier got to it is skipped (states are
   absolute, not deltas), so the replica manager always gets the newest.

`applied_revision` is the picture revision the last complete pass saw;
`wait_applied(revision)` lets a broker that wrote something (created a
topic) answer only once its own replicas reflect it.

Until the replica manager implements `ReplicaControl`
(minilog/broker/_cluster_link.py), `LocalReplicas` stands in: it opens the
partition logs this broker holds and records the leader, epoch, replicas
and ISR on them (no replication: METADATA and the leader's produce path
work, followers do not fetch).

Error handling: a failure applying one partition is logged and retried on
the next change (the partition stays marked as not applied); it never
stops the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from minilog._logsafe import logsafe
from minilog.metastore import PartitionState, TopicRecord

from .._cluster_link import ReplicaControl
from ..metadata import TopicMeta
from .follower import MetadataFollower
from .link import service_state
from .picture import topic_meta

__all__ = ["Applier", "LocalReplicas"]

log = logging.getLogger("minilog.broker.cluster")


class Applier:
    """Applies the picture to one broker's replicas.

    Args:
        broker_id: this broker.
        follower: the picture and its change notifications.
        replicas: the replica manager (`ReplicaControl`).
        delete_dirs: removes a deleted topic's local directories.
        apply_config: applies a topic's configs to its local partitions.
        notify: the topic-change listeners, `notify(event, topic)`.
    """

    def __init__(self, broker_id: int, follower: MetadataFollower, replicas: ReplicaControl, *,
                 delete_dirs: Callable[[TopicMeta], None],
                 apply_config: Callable[[TopicMeta], None],
                 notify: Callable[[str, str], None]) -> None:
        self.broker_id = broker_id
        self.follower = follower
        self.replicas = replicas
        self._delete_dirs = delete_dirs
        self._apply_config = apply_config
        self._notify = notify
        self._topics: dict[str, TopicRecord] = {}
        self._states: dict[tuple[str, int], int] = {}      # partition -> mod_revision applied
        self.applied_revision = 0
        self._applied = trio.Event()
        self.failures = 0
        self._passes = 0

    async def wait_applied(self, revision: int) -> None:
        """Return once a pass that saw `revision` has completed."""
        while self.applied_revision < revision:
            await self._applied.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Apply, then apply again after each change; `started` after the first full pass."""
        started = False
        while True:
            change = self.follower.change_event()
            await self.apply_once()
            if not started:
                task_status.started()
                started = True
            await change.wait()

    async def apply_once(self) -> None:
        picture = self.follower.picture
        revision = picture.revision
        await self._topic_changes(notify=self._passes > 0)   # topics found at start are not news
        self._passes += 1
        for (topic, p), state in sorted(picture.states.items()):
            if self._states.get((topic, p)) == state.mod_revision:
                continue
            mine = self.broker_id in state.replicas or (topic, p) in self._states
            record = picture.topics.get(topic)
            if not mine or record is None:
                continue
            await self._apply(topic_meta(record), p, state)
        self.applied_revision = max(self.applied_revision, revision)
        self._applied.set()
        self._applied = trio.Event()

    async def _apply(self, meta: TopicMeta, p: int, state: PartitionState) -> None:
        try:
            await self.replicas.apply_partition_state(meta, p, service_state(state))
        except Exception:
            self.failures += 1
            log.exception("%s-%d: applying leader %d epoch %d failed; retried on the next change",
                          logsafe(meta.name), p, state.leader, state.leader_epoch)
            return
        self._states[(meta.name, p)] = state.mod_revision

    async def _topic_changes(self, *, notify: bool) -> None:
        picture = self.follower.picture
        for name, gone in list(self._topics.items()):
            new = picture.topics.get(name)
            if new is None or new.topic_id != gone.topic_id:
                await self._remove(gone)
        for name, record in sorted(picture.topics.items()):
            old = self._topics.get(name)
            self._topics[name] = record
            if old is None:
                if notify:
                    self._notify("created", name)
                continue
            if record.partitions > old.partitions:
                self._notify("partitions", name)
            if dict(record.configs) != dict(old.configs):
                self._apply_config(topic_meta(record))
                self._notify("configs", name)

    async def _remove(self, record: TopicRecord) -> None:
        meta = topic_meta(record)
        del self._topics[record.name]
        for key in [k for k in self._states if k[0] == record.name]:
            del self._states[key]
        with trio.CancelScope(shield=True):            # half a deletion helps nobody
            try:
                await self.replicas.remove_topic(meta)
                self._delete_dirs(meta)
            except Exception:
                self.failures += 1
                log.exception("deleting the local replicas of %s failed", logsafe(record.name))
        log.info("deleted topic %s (%d partitions)", logsafe(record.name), record.partitions)
        self._notify("deleted", record.name)


class LocalReplicas:
    """A stand-in `ReplicaControl` until the replica manager implements one (no replication).

    Opens the log of each partition this broker holds (`open_partitions`) and
    records the stored leader, epoch, replicas and ISR on it.
    """

    def __init__(self, broker_id: int, replicas: Any, open_partitions: Callable[[TopicMeta, list[int]], None]
                 ) -> None:
        self._broker_id = broker_id
        self._replicas = replicas
        self._open = open_partitions

    async def apply_partition_state(self, meta: TopicMeta, partition: int, state: Any) -> None:
        part = self._replicas.partition(meta.name, partition)
        if part is None:
            if self._broker_id not in state.replicas:
                return
            self._open(meta, [partition])
            part = self._replicas.partition(meta.name, partition)
        part.leader_id = state.leader
        part.leader_epoch = state.leader_epoch
        part.replicas = list(state.replicas)
        part.isr = list(state.isr)

    async def remove_topic(self, meta: TopicMeta) -> None:
        await self._replicas.remove_topic(meta)
