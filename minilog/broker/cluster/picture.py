"""The cluster as this broker sees it: every record under the cluster's etcd root, in memory.

Theory of operation. `ClusterPicture` is plain data plus two mutations:
`reset(kvs, revision)` replaces everything with one prefix read, and
`apply(event)` folds in one watched change. Both are synchronous and
pure (no I/O, no trio), so the follower (follower.py) owns the I/O and a
test can drive a picture with hand-made events. Readers (Metadata, the
controller, the applier) read it between awaits and always see whole
revisions (see follower.py for why).

Rules:
- `revision` is the store revision the picture reflects: every key it
  holds is as of that revision. An event below it is stale and ignored
  (`apply` returns False); the several events of one transaction share its
  revision. The follower watches from the read's revision + 1, so nothing
  is applied twice.
- Keys it does not know (a newer minilog's records) are ignored, not fatal.
- A broker's `epoch` is its registration's create_revision: a broker that
  restarted (or lost its lease and registered again) has a new epoch even
  if the picture never saw it absent.

Task-safety: the trio thread only; no method awaits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from minilog.metastore import (
    BrokerRegistration,
    ClusterKeys,
    ControllerRecord,
    Event,
    EventType,
    KeyValue,
    PartitionState,
    TopicRecord,
)

from ..metadata import TopicMeta

__all__ = ["ClusterPicture", "topic_meta"]


def topic_meta(record: TopicRecord) -> TopicMeta:
    """The broker's view of a topic record."""
    return TopicMeta(record.name, record.topic_id, record.partitions,
                     replication_factor=record.replication_factor if record.assignment else 1,
                     configs=dict(record.configs), internal=record.internal,
                     assignment=record.assignment)


@dataclass
class ClusterPicture:
    """Every cluster record under `keys.root`, as of `revision`."""

    keys: ClusterKeys = field(default_factory=ClusterKeys)
    revision: int = 0
    brokers: dict[int, BrokerRegistration] = field(default_factory=dict)
    controller: ControllerRecord | None = None
    topics: dict[str, TopicRecord] = field(default_factory=dict)
    states: dict[tuple[str, int], PartitionState] = field(default_factory=dict)
    shutting_down: set[int] = field(default_factory=set)      # brokers asking to shut down
    producer_id_next: int = 0
    cluster_id: str = ""
    broker_epochs: dict[int, int] | None = None   # accepted by the controller (None: never written)
    _metas: dict[str, TopicMeta] = field(default_factory=dict)

    # -- mutations --------------------------------------------------------------------------

    def reset(self, kvs: Iterable[KeyValue], revision: int) -> None:
        """Replace the picture with a full read of the root taken at `revision`."""
        self.brokers.clear()
        self.controller = None
        self.topics.clear()
        self.states.clear()
        self.shutting_down.clear()
        self._metas.clear()
        self.producer_id_next = 0
        self.broker_epochs = None
        for kv in kvs:
            self._put(kv)
        self.revision = revision

    def apply(self, event: Event) -> bool:
        """Fold in one watched change; False when it was already reflected (a duplicate)."""
        if event.revision < self.revision:
            return False            # older than the picture (the events of one txn share a revision)
        if event.type == EventType.PUT:
            self._put(event.kv)
        else:
            self._delete(event.kv.key)
        self.revision = max(self.revision, event.revision)
        return True

    def _split(self, key: bytes) -> list[str] | None:
        root = self.keys.prefix()
        if not key.startswith(root):
            return None
        return key[len(root):].decode("utf-8", "replace").split("/")

    def _put(self, kv: KeyValue) -> None:
        parts = self._split(kv.key)
        if not parts:
            return
        kind = parts[0]
        try:
            if kind == "brokers" and len(parts) == 2:
                reg = BrokerRegistration.from_kv(kv)
                self.brokers[reg.broker_id] = reg
            elif kind == "controller" and len(parts) == 1:
                self.controller = ControllerRecord.from_kv(kv)
            elif kind == "topics" and len(parts) == 2:
                record = TopicRecord.from_bytes(kv.value)
                self.topics[record.name] = record
                self._metas[record.name] = topic_meta(record)
            elif kind == "partitions" and len(parts) == 3:
                self.states[(parts[1], int(parts[2]))] = PartitionState.from_kv(kv)
            elif kind == "shutdown" and len(parts) == 2:
                self.shutting_down.add(int(parts[1]))
            elif kind == "producer_ids" and len(parts) == 1:
                self.producer_id_next = int(json.loads(kv.value)["next"])
            elif kind == "broker_epochs" and len(parts) == 1:
                self.broker_epochs = {int(b): int(e) for b, e in json.loads(kv.value).items()}
            elif kind == "cluster_id" and len(parts) == 1:
                self.cluster_id = kv.value.decode("ascii", "replace")
        except (ValueError, KeyError, TypeError, AssertionError):
            return                       # a record we cannot read is left out, not fatal

    def _delete(self, key: bytes) -> None:
        parts = self._split(key)
        if not parts:
            return
        kind = parts[0]
        try:
            if kind == "brokers" and len(parts) == 2:
                self.brokers.pop(int(parts[1]), None)
            elif kind == "controller" and len(parts) == 1:
                self.controller = None
            elif kind == "topics" and len(parts) == 2:
                self.topics.pop(parts[1], None)
                self._metas.pop(parts[1], None)
            elif kind == "partitions" and len(parts) == 3:
                self.states.pop((parts[1], int(parts[2])), None)
            elif kind == "shutdown" and len(parts) == 2:
                self.shutting_down.discard(int(parts[1]))
        except ValueError:
            return

    # -- reads ------------------------------------------------------------------------------

    def topic_meta(self, name: str) -> TopicMeta | None:
        return self._metas.get(name)

    def topic_metas(self) -> dict[str, TopicMeta]:
        return dict(self._metas)

    def state(self, topic: str, partition: int) -> PartitionState | None:
        return self.states.get((topic, partition))

    @property
    def controller_id(self) -> int:
        return self.controller.broker_id if self.controller is not None else -1

    def live_broker_ids(self) -> list[int]:
        return sorted(self.brokers)

    def led_by(self, broker_id: int) -> list[tuple[str, int]]:
        """The partitions `broker_id` leads, as stored."""
        return sorted(tp for tp, s in self.states.items() if s.leader == broker_id)
