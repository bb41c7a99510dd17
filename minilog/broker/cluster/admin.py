"""Topic administration in a cluster: every change is an etcd write, applied by every broker.

`ClusterTopicAdmin` is `TopicAdmin` (same checks, same answers) with the
storing half replaced: instead of opening logs here and writing the data
dir's file, a creation places the replicas over the live brokers and
writes the topic and its partition states to etcd; a deletion, new
partitions or new configs likewise. Every broker's applier (applier.py)
then makes its own replicas match (opens, deletes, reconfigures) and tells
its topic-change listeners, so a request served by any broker has the same
effect everywhere. The broker that served the request answers once its
own replicas reflect the change (`Applier.wait_applied`).

Errors: a replication factor above the live brokers is
INVALID_REPLICATION_FACTOR; a topic created meanwhile by another broker is
TOPIC_ALREADY_EXISTS; etcd down is REQUEST_TIMED_OUT (retriable: nothing
may have changed, or the change may have been stored; a retry finds out).

Task-safety: the trio thread only.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from minilog._logsafe import logsafe
from minilog.metastore import MetaStoreError, TopicExists, UnknownTopicOrPartition
from minilog.protocol import ErrorCode
from minilog.storage import ConfigError

from ..config import BrokerConfig, normalize_topic_overrides
from ..log_manager import LogManager
from ..metadata import ReplicaPlacementError, TopicMeta
from ..replica_manager import ReplicaManager
from ..topic_admin import PARTITIONS_MAX, Result, TopicAdmin, _Plan
from .applier import Applier
from .etcd_metadata import EtcdMetadata

__all__ = ["ClusterTopicAdmin"]

log = logging.getLogger("minilog.broker.cluster")

SETTLE_TIMEOUT_S = 10.0      # a change applied to this broker's own replicas before answering


def _unavailable(exc: MetaStoreError) -> Result:
    return ErrorCode.REQUEST_TIMED_OUT, f"cluster metadata store unavailable: {exc}"


class ClusterTopicAdmin(TopicAdmin):
    """Topic administration over etcd (see the module docstring). `attach` the applier first."""

    def __init__(self, config: BrokerConfig, metadata: EtcdMetadata, logs: LogManager,
                 replicas: ReplicaManager) -> None:
        super().__init__(config, metadata, logs, replicas)
        self._etcd = metadata
        self._applier: Applier | None = None

    def attach(self, applier: Applier) -> None:
        self._applier = applier

    async def _settled(self) -> None:
        """Wait until this broker's replicas reflect everything the picture holds now
        (bounded: a slow open is not a failed request; the change is stored)."""
        assert self._applier is not None
        with trio.move_on_after(SETTLE_TIMEOUT_S):
            await self._applier.wait_applied(self._etcd.picture.revision)

    def notify(self, event: str, topic: str) -> None:
        """The applier's topic-change events (every broker hears every change)."""
        self._notify(event, topic)

    # -- creating -----------------------------------------------------------------------------

    async def _create_planned(self, plans: list[tuple[int, _Plan]], results: list[Result]) -> None:
        for i, plan in plans:
            try:
                meta = self._etcd.new_topic(plan.name, plan.partitions, plan.replication_factor,
                                            plan.overrides)
                await self._etcd.put(meta)
            except ReplicaPlacementError as exc:
                results[i] = ErrorCode.INVALID_REPLICATION_FACTOR, str(exc)
                continue
            except TopicExists:
                results[i] = ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {plan.name!r} already exists"
                continue
            except MetaStoreError as exc:
                results[i] = _unavailable(exc)
                continue
            log.info("created topic %s with %d partitions, replication factor %d%s",
                     logsafe(meta.name), meta.partitions, meta.replication_factor,
                     f", configs {logsafe(meta.configs, 1024)}" if meta.configs else "")
        await self._settled()

    async def create_internal_topic(self, name: str, partitions: int, configs: dict[str, Any]
                                    ) -> TopicMeta:
        """Create an internal topic unless it exists, with replication factor
        min(offsets.topic.replication.factor, live brokers); racing creators are safe.

        Raises:
            ConfigError: bad `configs`.
            MetaStoreError: etcd down, or no live broker.
        """
        meta = self._etcd.topic(name)
        if meta is not None:
            return meta
        overrides = normalize_topic_overrides(configs)
        self._config.topic_config(overrides)
        live = len(self._etcd.picture.brokers)
        rf = max(1, min(self._config.offsets_topic_replication_factor, live))
        try:
            new = self._etcd.new_topic(name, partitions, rf, overrides, internal=True)
            await self._etcd.put(new)
            log.info("created topic %s with %d partitions, replication factor %d (internal)",
                     logsafe(name), partitions, rf)
        except ReplicaPlacementError as exc:
            raise MetaStoreError(f"cannot place {name}: {exc}") from exc
        except TopicExists:
            await self._etcd.wait_for_topic(name)      # another broker was first: fine
        await self._settled()
        created = self._etcd.topic(name)
        assert created is not None
        return created

    # -- changing -----------------------------------------------------------------------------

    async def delete_topic(self, name: str) -> Result:
        meta = self._etcd.topic(name)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        if meta.internal:
            return ErrorCode.INVALID_REQUEST, f"{name!r} is an internal topic"
        async with self._changes:
            try:
                await self._etcd.delete(name)
            except UnknownTopicOrPartition:
                return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
            except MetaStoreError as exc:
                return _unavailable(exc)
            await self._settled()
        return ErrorCode.NONE, None

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False
                                ) -> Result:
        async with self._changes:
            meta = self._etcd.topic(name)
            if meta is None:
                return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
            if count <= meta.partitions:
                return (ErrorCode.INVALID_PARTITIONS,
                        f"topic has {meta.partitions} partitions; the count can only increase")
            if count > PARTITIONS_MAX:
                return ErrorCode.INVALID_PARTITIONS, f"at most {PARTITIONS_MAX} partitions"
            try:
                new_meta = self._etcd.with_partitions(name, count)
            except ReplicaPlacementError as exc:
                return ErrorCode.INVALID_REPLICATION_FACTOR, str(exc)
            if validate_only:
                return ErrorCode.NONE, None
            try:
                await self._etcd.put(new_meta)
            except MetaStoreError as exc:
                return _unavailable(exc)
            await self._settled()
        log.info("topic %s now has %d partitions (was %d)", logsafe(name), count, meta.partitions)
        return ErrorCode.NONE, None

    async def alter_topic_configs(self, name: str, changes: dict[str, str | None], *,
                                  validate_only: bool = False) -> Result:
        meta = self._etcd.topic(name)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        try:
            overrides, _ = self._changed_overrides(meta, changes)
        except ConfigError as exc:
            return ErrorCode.INVALID_CONFIG, str(exc)
        if validate_only:
            return ErrorCode.NONE, None
        try:
            await self._etcd.set_configs(name, overrides)
        except UnknownTopicOrPartition:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        except MetaStoreError as exc:
            return _unavailable(exc)
        await self._settled()
        log.info("altered topic %s configs: %s", logsafe(name), logsafe(changes, 1024))
        return ErrorCode.NONE, None
