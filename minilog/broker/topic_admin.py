"""Topic administration: create, delete, add partitions, alter configs.

Rules:
- Bad input is answered, not raised: every operation returns
  `(ErrorCode, message)`; storage failures become KAFKA_STORAGE_ERROR.
- Creation opens the partition logs first, then stores the metadata: a
  crash in between leaves only orphan directories, which the next start
  removes (`LogManager.clean`). Deletion stores the metadata first (it is
  the truth), then closes the logs and removes the directories.
- Configs are validated in full (`BrokerConfig.topic_config`) before
  anything changes, and applied live to every partition.
- Listeners registered with `on_topic_change(callback)` hear
  `callback(event, topic)`, event in "created" | "deleted" | "partitions"
  | "configs", after the change is durable.

- Creations, deletions and new partitions run one at a time (a trio.Lock);
  the file-system work of a creation (opening thousands of logs) runs in a
  worker thread and the metadata is written once per request, so other
  clients are answered meanwhile. One request creates at most
  PARTITIONS_PER_REQUEST_MAX partitions; the critical sections are shielded
  from cancellation (a log opened in the thread is never dropped).

Task-safety: the trio thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from minilog._logsafe import logsafe
from minilog.protocol import ErrorCode
from minilog.storage import ConfigError, Log, StorageError

from .config import TOPIC_CONFIG_KEYS, BrokerConfig, normalize_topic_overrides
from .log_manager import LogManager
from .metadata import MetadataStore, ReplicaPlacementError, TopicMeta, validate_topic_name
from .partition import Partition
from .replica_manager import ReplicaManager

__all__ = ["TopicAdmin", "PARTITIONS_MAX", "PARTITIONS_PER_REQUEST_MAX"]

log = logging.getLogger("minilog.broker")

PARTITIONS_MAX = 10_000                  # partitions of one topic
PARTITIONS_PER_REQUEST_MAX = 10_000      # partitions one request may create, over all its topics
TOPIC_CONFIG_NAMES = frozenset(key.name for key in TOPIC_CONFIG_KEYS)

Result = tuple[ErrorCode, str | None]
TopicSpec = tuple[str, int, int, dict[str, Any]]     # name, partitions, replication factor, configs


@dataclass(frozen=True)
class _Plan:
    """A creation that passed every check."""

    name: str
    partitions: int
    replication_factor: int
    overrides: dict[str, str]


class TopicAdmin:
    """Topic administration over the metadata store, the log manager and the replica manager."""

    def __init__(self, config: BrokerConfig, metadata: MetadataStore, logs: LogManager,
                 replicas: ReplicaManager) -> None:
        self._config = config
        self._metadata = metadata
        self._logs = logs
        self._replicas = replicas
        self._callbacks: list[Callable[[str, str], Any]] = []
        self._changes = trio.Lock()       # creations, deletions, new partitions: one at a time

    def on_topic_change(self, callback: Callable[[str, str], Any]) -> None:
        self._callbacks.append(callback)

    def _notify(self, event: str, topic: str) -> None:
        for callback in self._callbacks:
            try:
                callback(event, topic)
            except Exception:
                log.exception("topic-change callback failed")

    # -- opening ------------------------------------------------------------------------------

    def open_partitions(self, meta: TopicMeta, numbers: Iterable[int]) -> None:
        """Open (recovering) partitions `numbers` of a stored topic and make them served."""
        effective = self._config.topic_config(meta.configs)
        logs = self._logs.open_logs(meta, numbers, Partition.log_config_for(effective))
        self._replicas.add_partitions(meta, logs, effective)

    async def _open_and_store(self, meta: TopicMeta, numbers: Iterable[int]) -> None:
        """Open new partitions and store the metadata naming them; on any failure undo both
        (logs closed, directories removed): a failed creation leaves nothing behind."""
        numbers = list(numbers)
        effective = self._config.topic_config(meta.configs)
        logs = self._logs.open_logs(meta, numbers, Partition.log_config_for(effective), new=True)
        try:
            await self._metadata.put(meta)
        except OSError as exc:
            self._logs.discard_new_logs(meta, numbers, logs)
            raise StorageError(f"cannot write topic metadata: {exc}") from exc
        except BaseException:
            self._logs.discard_new_logs(meta, numbers, logs)
            raise
        self._replicas.add_partitions(meta, logs, effective)

    # -- creating -----------------------------------------------------------------------------

    def _check_creation(self, name: str, num_partitions: int, replication_factor: int,
                        configs: dict[str, Any]) -> Result | _Plan:
        """The plan of one creation, or why it is refused (nothing changes here)."""
        problem = validate_topic_name(name) if isinstance(name, str) else "topic name is not a string"
        if problem:
            return ErrorCode.INVALID_TOPIC_EXCEPTION, problem
        if self._metadata.topic(name) is not None:
            return ErrorCode.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists"
        if num_partitions == -1:
            num_partitions = self._config.num_partitions
        if not 1 <= num_partitions <= PARTITIONS_MAX:
            return ErrorCode.INVALID_PARTITIONS, f"partition count must be in [1, {PARTITIONS_MAX}]"
        if replication_factor == -1:
            replication_factor = self._config.default_replication_factor
        problem = self._metadata.check_replication_factor(replication_factor)
        if problem:
            return ErrorCode.INVALID_REPLICATION_FACTOR, problem
        try:
            overrides = normalize_topic_overrides(configs)
            self._config.topic_config(overrides)
        except ConfigError as exc:
            return ErrorCode.INVALID_CONFIG, str(exc)
        return _Plan(name, num_partitions, replication_factor, overrides)

    async def create_topics(self, specs: Sequence[TopicSpec], *, validate_only: bool = False
                            ) -> list[Result]:
        """Create topics `(name, partitions, replication factor, configs)`; one result each.

        One request creates at most PARTITIONS_PER_REQUEST_MAX partitions (topics beyond
        are refused, RESOURCE_LIMIT_EXCEEDED), and no more than the descriptor budget
        allows. The logs are opened in a worker thread and the metadata is written once
        for all of them, so other clients are served meanwhile (issue 8, item 3).
        """
        results: list[Result] = [(ErrorCode.NONE, None)] * len(specs)
        async with self._changes:                      # one topic change at a time
            plans: list[tuple[int, _Plan]] = []
            named: set[str] = set()
            total = 0
            for i, (name, partitions, replication_factor, configs) in enumerate(specs):
                if name in named:
                    results[i] = ErrorCode.INVALID_REQUEST, "topic named twice in one request"
                    continue
                named.add(name)
                plan = self._check_creation(name, partitions, replication_factor, configs)
                if not isinstance(plan, _Plan):
                    results[i] = plan
                elif total + plan.partitions > PARTITIONS_PER_REQUEST_MAX:
                    results[i] = (ErrorCode.RESOURCE_LIMIT_EXCEEDED, f"one request may create at "
                                  f"most {PARTITIONS_PER_REQUEST_MAX} partitions")
                else:
                    total += plan.partitions
                    plans.append((i, plan))
            if validate_only or not plans:
                return results
            problem = self._logs.descriptor_problem(total)
            if problem:
                for i, _ in plans:
                    results[i] = ErrorCode.RESOURCE_LIMIT_EXCEEDED, problem
                return results
            with trio.CancelScope(shield=True):        # the thread's logs must not be lost
                await self._create_planned(plans, results)
        return results

    async def _create_planned(self, plans: list[tuple[int, _Plan]], results: list[Result]) -> None:
        todo: list[tuple[int, TopicMeta, Any]] = []
        for i, plan in plans:
            try:
                meta = self._metadata.new_topic(plan.name, plan.partitions,
                                                plan.replication_factor, plan.overrides)
            except ReplicaPlacementError as exc:
                results[i] = ErrorCode.INVALID_REPLICATION_FACTOR, str(exc)
                continue
            todo.append((i, meta, self._config.topic_config(plan.overrides)))

        def open_all() -> list[dict[int, Log] | Exception]:
            out: list[dict[int, Log] | Exception] = []
            for _, meta, effective in todo:
                try:
                    out.append(self._logs.open_logs(meta, range(meta.partitions),
                                                    Partition.log_config_for(effective), new=True))
                except (StorageError, OSError) as exc:
                    out.append(exc)
            return out

        opened = await trio.to_thread.run_sync(open_all)
        done: list[tuple[TopicMeta, Any, dict[int, Log]]] = []
        for (i, meta, effective), logs in zip(todo, opened, strict=True):
            if isinstance(logs, Exception):
                log.error("cannot create topic %s: %s", logsafe(meta.name), logs)
                results[i] = ErrorCode.KAFKA_STORAGE_ERROR, str(logs)
            else:
                done.append((meta, effective, logs))
        try:
            await self._metadata.put_many([meta for meta, _, _ in done])
        except OSError as exc:
            message = f"cannot write topic metadata: {exc}"
            log.error("cannot create topics: %s", message)
            for (i, meta, _), logs in zip(todo, opened, strict=True):
                if not isinstance(logs, Exception):
                    self._logs.discard_new_logs(meta, range(meta.partitions), logs)
                    results[i] = ErrorCode.KAFKA_STORAGE_ERROR, message
            return
        for meta, effective, logs in done:
            self._replicas.add_partitions(meta, logs, effective)
            log.info("created topic %s with %d partitions%s", logsafe(meta.name), meta.partitions,
                     f", configs {logsafe(meta.configs, 1024)}" if meta.configs else "")
            self._notify("created", meta.name)

    async def create_topic(self, name: str, num_partitions: int, replication_factor: int,
                           configs: dict[str, Any], *, validate_only: bool = False) -> Result:
        return (await self.create_topics([(name, num_partitions, replication_factor, configs)],
                                         validate_only=validate_only))[0]

    async def auto_create_topics(self, names: Sequence[str]) -> dict[str, ErrorCode]:
        """METADATA's auto-creation of `names` (distinct); NONE for each topic that now exists."""
        if not self._config.auto_create_topics_enable:
            return {name: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION for name in names}
        results = await self.create_topics([(name, -1, -1, {}) for name in names])
        return {name: code for name, (code, _) in zip(names, results, strict=True)}

    async def create_internal_topic(self, name: str, partitions: int, configs: dict[str, Any]
                                    ) -> TopicMeta:
        """Create an internal topic (e.g. __consumer_offsets) unless it exists; return it.

        Raises:
            ConfigError: `configs` holds an unknown key or a bad value.
            StorageError: the logs or the metadata cannot be written.
        """
        meta = self._metadata.topic(name)
        if meta is not None:
            return meta
        overrides = normalize_topic_overrides(configs)
        self._config.topic_config(overrides)
        await self._create(name, partitions, 1, overrides, internal=True)
        created = self._metadata.topic(name)
        assert created is not None
        return created

    async def _create(self, name: str, partitions: int, replication_factor: int,
                      overrides: dict[str, str], *, internal: bool = False) -> None:
        meta = self._metadata.new_topic(name, partitions, replication_factor, overrides,
                                        internal=internal)
        await self._open_and_store(meta, range(partitions))
        log.info("created topic %s with %d partitions%s%s", logsafe(name), partitions,
                 f", configs {logsafe(overrides, 1024)}" if overrides else "", " (internal)" if internal else "")
        self._notify("created", name)

    # -- changing -----------------------------------------------------------------------------

    async def delete_topic(self, name: str) -> Result:
        """Forget a topic durably, close its logs, remove its directories in the background."""
        meta = self._metadata.topic(name)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        if meta.internal:
            return ErrorCode.INVALID_REQUEST, f"{name!r} is an internal topic"
        async with self._changes:
            meta = self._metadata.topic(name)          # again: it may have changed meanwhile
            if meta is None:
                return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
            with trio.CancelScope(shield=True):        # half a deletion helps nobody
                try:
                    await self._metadata.delete(name)
                except OSError as exc:                 # e.g. ENOSPC with no reserve left
                    log.error("cannot delete topic %s: %s", logsafe(name), exc)
                    return ErrorCode.KAFKA_STORAGE_ERROR, f"cannot write topic metadata: {exc}"
                await self._replicas.remove_topic(meta)
                self._logs.delete_dirs(meta)
        log.info("deleted topic %s (%d partitions)", logsafe(name), meta.partitions)
        self._notify("deleted", name)
        return ErrorCode.NONE, None

    async def create_partitions(self, name: str, count: int, *, validate_only: bool = False
                                ) -> Result:
        async with self._changes:
            meta = self._metadata.topic(name)
            if meta is None:
                return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
            if count <= meta.partitions:
                return (ErrorCode.INVALID_PARTITIONS,
                        f"topic has {meta.partitions} partitions; the count can only increase")
            if count > PARTITIONS_MAX:
                return ErrorCode.INVALID_PARTITIONS, f"at most {PARTITIONS_MAX} partitions"
            if validate_only:
                return ErrorCode.NONE, None
            problem = self._logs.descriptor_problem(count - meta.partitions)
            if problem:
                return ErrorCode.RESOURCE_LIMIT_EXCEEDED, problem
            old = meta.partitions
            new_meta = self._metadata.with_partitions(name, count)
            effective = self._config.topic_config(new_meta.configs)
            numbers = range(old, count)
            with trio.CancelScope(shield=True):        # the thread's logs must not be lost
                try:
                    logs = await trio.to_thread.run_sync(
                        lambda: self._logs.open_logs(new_meta, numbers,
                                                     Partition.log_config_for(effective), new=True))
                except StorageError as exc:
                    return ErrorCode.KAFKA_STORAGE_ERROR, str(exc)
                try:
                    await self._metadata.put(new_meta)
                except OSError as exc:
                    self._logs.discard_new_logs(new_meta, numbers, logs)
                    return ErrorCode.KAFKA_STORAGE_ERROR, f"cannot write topic metadata: {exc}"
                self._replicas.add_partitions(new_meta, logs, effective)
        log.info("topic %s now has %d partitions (was %d)", logsafe(name), count, old)
        self._notify("partitions", name)
        return ErrorCode.NONE, None

    async def alter_topic_configs(self, name: str, changes: dict[str, str | None], *,
                                  validate_only: bool = False) -> Result:
        """Set (value) or delete (None) topic overrides; applied live to every partition."""
        meta = self._metadata.topic(name)
        if meta is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}"
        try:
            overrides, effective = self._changed_overrides(meta, changes)
        except ConfigError as exc:
            return ErrorCode.INVALID_CONFIG, str(exc)
        if validate_only:
            return ErrorCode.NONE, None
        meta = await self._metadata.set_configs(name, overrides)
        self._replicas.apply_config(meta, effective)
        log.info("altered topic %s configs: %s", logsafe(name), logsafe(changes, 1024))
        self._notify("configs", name)
        return ErrorCode.NONE, None

    def _changed_overrides(self, meta: TopicMeta, changes: dict[str, str | None]
                           ) -> tuple[dict[str, str], dict[str, Any]]:
        """(new overrides, effective config) after `changes`. Raises ConfigError."""
        overrides = dict(meta.configs)
        for key, value in changes.items():
            if value is None:
                if key not in TOPIC_CONFIG_NAMES:
                    raise ConfigError(str(key), "unknown topic config key")
                overrides.pop(key, None)
            else:
                overrides.update(normalize_topic_overrides({key: value}))
        return overrides, self._config.topic_config(overrides)
