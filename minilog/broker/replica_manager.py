"""The replica manager: this broker's partitions, their roles, appends and reads.

Kafka's ReplicaManager is the model: it holds every partition replica on
the broker, appends produced batches (and, with replication, waits for
acks=all), serves fetches from clients (and, later, from followers) with
long polls, answers offset lookups, and tells whoever cares (the group
coordinator) when this broker becomes or stops being a partition's leader.

Rules:
- `validate_records` is the single validation point of produced bytes:
  each batch is split out, size-checked against max.message.bytes and
  CRC-checked exactly once, here; the header fields it returns go down to
  the partition and the log, which do not parse the batch again. (The
  records layer's structural walk plugs in here too.)
- A produce request's attachment is all or nothing: every batch in it is
  validated before the first is appended.
- Errors leave this module as error codes in response objects; the
  partition is the one place storage errors become codes.
- Leadership hooks (`on_leadership`) are called with each partition of
  their topic when it becomes led here (`become_leader`) and before it
  stops being (`resign`). On a single broker every partition is led here
  from the moment it is opened until it is closed or deleted.
- Replication (a cluster: `attach_link` was called): roles come only from
  `apply_partition_state` (the `ReplicaControl` half of `_cluster_link.py`),
  in the store's commit order; a state with an older leader epoch (or an
  older version at the same epoch) is ignored. Leading: appends are stamped
  with the state's leader epoch, follower fetches move the HW, the ISR is
  kept by `isr.IsrManager`. Following: `replica_fetcher` truncates by epoch
  and fetches. Produce, consumer fetch and ListOffsets at a non-leader
  answer NOT_LEADER_OR_FOLLOWER; a request naming an older leader epoch
  FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH.
- The high watermarks of replicated partitions are checkpointed in the data
  dir (`replication-offset-checkpoint`, every
  replica.high.watermark.checkpoint.interval.ms and at shutdown); a
  replica opened again starts at min(checkpointed HW, log end).

Task-safety: the trio thread only. `append_records` awaits only inside
`Partition.append` (flush policy, acks=all), so the batches of one
attachment are appended in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from minilog._logsafe import logsafe

from minilog.protocol import (
    EARLIEST_TIMESTAMP,
    EpochEndOffset,
    OffsetForLeaderEpochRequest,
    OffsetForLeaderTopicResult,
    LATEST_TIMESTAMP,
    CorruptBatchError,
    DescribedPartition,
    ErrorCode,
    FetchPartitionResponse,
    FetchRequest,
    FetchTopicResponse,
    InvalidRecordError,
    ListOffsetsPartitionResponse,
    ProducePartitionResponse,
    batch_size_at,
    check_batch_fields,
    validate_batch,
)
from minilog.storage import Log, StorageError, keyless_records, read_hw_checkpoint, write_hw_checkpoint

from ._cluster_link import ClusterLink
from ._services import PartitionState
from .config import BrokerConfig
from .isr import IsrManager
from .log_cleaner import cleanable_ratio
from .log_manager import LogManager
from .metadata import TopicMeta
from .partition import Partition, PartitionError
from .replica_fetcher import FetcherSettings, ReplicaFetcherManager
from .replication import epoch_end_offset

__all__ = ["ReplicaManager", "validate_records"]

log = logging.getLogger("minilog.broker")

LeadershipHook = Callable[[int], None]


def validate_records(records: memoryview, max_message_bytes: int) -> list[tuple[memoryview, tuple[int, ...]]]:
    """Split one produced attachment into its batches, validating each once.

    Returns:
        (batch view, its 13 header fields) per batch, in order.

    Raises:
        PartitionError: MESSAGE_TOO_LARGE (a batch over `max_message_bytes`),
            CORRUPT_MESSAGE (bad length, magic, bounds or CRC; batches that do
            not tile the attachment exactly), INVALID_RECORD (records that
            contradict the header, `protocol.validate_batch`).
    """
    total = len(records)
    out: list[tuple[memoryview, tuple[int, ...]]] = []
    pos = 0
    try:
        while True:
            size = batch_size_at(records, pos)
            if size > max_message_bytes:
                raise PartitionError(ErrorCode.MESSAGE_TOO_LARGE,
                                     f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}")
            if size > total - pos:
                raise PartitionError(ErrorCode.CORRUPT_MESSAGE, "truncated batch at the end of the records")
            fields = check_batch_fields(records, pos)          # structure and CRC, once
            batch = records if pos == 0 and size == total else records[pos:pos + size]
            # Kafka's LogValidator: the records are what the header says, so every
            # consumer can read them (issue 8 item 8); the CRC was checked just above.
            validate_batch(batch, max_message_bytes=max_message_bytes, fields=fields)
            out.append((batch, fields))
            pos += size
            if pos == total:
                return out
    except InvalidRecordError as exc:
        raise PartitionError(ErrorCode.INVALID_RECORD, str(exc)) from exc
    except CorruptBatchError as exc:
        raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from exc


def check_keys(batches: list[tuple[memoryview, tuple[int, ...]]]) -> None:
    """A compacted topic takes only keyed records: any keyless record refuses the whole
    request, before anything is appended (Kafka's INVALID_RECORD).

    Raises:
        PartitionError: INVALID_RECORD, or CORRUPT_MESSAGE for records that do not decode.
    """
    for batch, _header in batches:
        try:
            keyless = keyless_records(batch)
        except CorruptBatchError as exc:
            raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from exc
        if keyless:
            raise PartitionError(ErrorCode.INVALID_RECORD,
                                 f"compacted topic: {keyless} record(s) without a key")


class ReplicaManager:
    """The partition replicas of this broker.

    Args:
        broker_id: this broker's id (the leader of every partition on one broker).
        config: the broker's settings (fetch.max.bytes, fetch.max.wait.ms, replica.*).
        logs: the log manager, to open and delete replicas the control plane
            assigns here (cluster only).
        source_host: this broker's listener host; followers connect from it when it
            is a specific address.
    """

    def __init__(self, broker_id: int, config: BrokerConfig, *, logs: LogManager | None = None,
                 source_host: str | None = None) -> None:
        self.broker_id = broker_id
        self._config = config
        self._logs = logs
        self._source_host = source_host
        self._partitions: dict[tuple[str, int], Partition] = {}
        self._internal: set[str] = set()
        self._leadership: dict[str, tuple[LeadershipHook, LeadershipHook]] = {}
        self._stop_waiters: set[trio.Event] = set()
        self.stopping = False
        # Replication (None until `attach_link`).
        self.link: ClusterLink | None = None
        self.fetchers: ReplicaFetcherManager | None = None
        self.isr: IsrManager | None = None
        self._linked = trio.Event()
        self._apply_lock = trio.Lock()
        self._checkpointed: dict[tuple[str, int], int] | None = None

    # -- replication: wiring ------------------------------------------------------------------

    def attach_link(self, link: ClusterLink) -> None:
        """Enter cluster mode: roles come from `apply_partition_state`, followers fetch
        through `link.broker_address`, ISR changes go through `link.alter_isr`. Call
        once, before the first `apply_partition_state`."""
        assert self.link is None
        config = self._config
        self.link = link
        self.fetchers = ReplicaFetcherManager(self.broker_id, link, FetcherSettings(
            config.replica_fetch_wait_max_ms, config.replica_fetch_max_bytes,
            config.replica_fetch_response_max_bytes, config.replica_fetch_backoff_ms,
            config.replica_socket_timeout_ms), self._source_host)
        self.isr = IsrManager(link, config.replica_lag_time_max_ms, self.partitions)
        self._linked.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run replication's tasks (fetchers, ISR checks, HW checkpoints) once a link is
        attached; until cancelled. A single broker only waits here."""
        task_status.started()
        await self._linked.wait()
        assert self.fetchers is not None and self.isr is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(self.fetchers.run)
            await nursery.start(self.isr.run)
            if self._logs is not None:
                nursery.start_soon(self._checkpoint_loop)

    async def _checkpoint_loop(self) -> None:
        interval_s = self._config.replica_high_watermark_checkpoint_interval_ms / 1000
        while True:
            await trio.sleep(interval_s)
            try:
                await trio.to_thread.run_sync(self._write_checkpoint, self._high_watermarks())
            except OSError as exc:
                log.error("cannot write the high-watermark checkpoint: %s", exc)

    def _high_watermarks(self) -> dict[tuple[str, int], int]:
        return {key: part.high_watermark for key, part in self._partitions.items()
                if part.replicated}

    def _write_checkpoint(self, hws: dict[tuple[str, int], int]) -> None:
        assert self._logs is not None
        write_hw_checkpoint(self._logs.data_dir, hws)

    # -- replication: the control plane's calls (ReplicaControl) ------------------------------

    async def apply_partition_state(self, meta: TopicMeta, partition: int,
                                    state: PartitionState) -> None:
        """Make this broker's replica of `meta`-`partition` match `state` (see the module
        rules): open it, lead it, follow, or stop and delete it.

        Raises:
            StorageError: the replica's log cannot be opened.
        """
        assert self.link is not None, "attach_link first"
        async with self._apply_lock:
            key = (meta.name, partition)
            part = self._partitions.get(key)
            if self.broker_id not in state.replicas:
                if part is not None or self._logs is not None:
                    await self._stop_replica(meta, partition, delete=True)
                return
            if part is None:
                part = await self._open_replica(meta, partition)
            elif part.replicated and (state.leader_epoch < part.leader_epoch or (
                    state.leader_epoch == part.leader_epoch and state.version < part.version)):
                log.debug("%s-%d: stale state ignored (epoch %d v%d < epoch %d v%d)",
                          logsafe(meta.name), partition, state.leader_epoch, state.version,
                          part.leader_epoch, part.version)
                return
            self._apply_role(part, state)

    def _apply_role(self, part: Partition, state: PartitionState) -> None:
        assert self.fetchers is not None
        replicas, isr = list(state.replicas), list(state.isr)
        same_term = (part.replicated and state.leader_epoch == part.leader_epoch
                     and state.leader == part.leader_id)
        hooks = self._leadership.get(part.topic)
        if state.leader == self.broker_id:
            if same_term and part.is_leader:
                part.replicas = replicas
                part.set_isr(isr, state.version)
                return
            was_leader = part.is_leader         # its hooks ran (also when opened as a single broker's)
            self.fetchers.unfollow(part)
            part.become_leader(state.leader_epoch, replicas, isr, state.version, trio.current_time())
            log.info("%s-%d: leader at epoch %d, ISR %s", logsafe(part.topic), part.partition,
                     state.leader_epoch, isr)
            if hooks is not None and not was_leader:
                hooks[0](part.partition)
            return
        if same_term and not part.is_leader:
            part.replicas = replicas
            part.isr, part.version = isr, state.version
            return
        if part.is_leader and hooks is not None:
            hooks[1](part.partition)
        part.become_follower(state.leader, state.leader_epoch, replicas, isr, state.version)
        log.info("%s-%d: follower of %d at epoch %d", logsafe(part.topic), part.partition,
                 state.leader, state.leader_epoch)
        self.fetchers.follow(part)

    async def _open_replica(self, meta: TopicMeta, partition: int) -> Partition:
        """Open (creating, recovering) a replica's log in a worker thread; not led yet."""
        assert self._logs is not None, "no log manager to open replicas with"
        logs = self._logs
        effective = self._config.topic_config(meta.configs)
        opened = await trio.to_thread.run_sync(
            lambda: logs.open_logs(meta, [partition], Partition.log_config_for(effective)))
        if self._checkpointed is None:
            self._checkpointed = await trio.to_thread.run_sync(read_hw_checkpoint, logs.data_dir)
        checkpointed = self._checkpointed or {}
        plog = opened[partition]
        part = Partition(meta.name, partition, plog, leader_id=-1, leader_epoch=-1, replicas=[],
                         isr=[], local_id=self.broker_id)
        part.replicated = True
        part.is_leader = False
        part.high_watermark = min(checkpointed.get((meta.name, partition), 0),
                                  plog.log_end_offset)
        part.apply_config(effective)
        if meta.internal:
            self._internal.add(meta.name)
        self._partitions[(meta.name, partition)] = part
        return part

    async def _stop_replica(self, meta: TopicMeta, partition: int, *, delete: bool) -> None:
        """Stop fetching, resign, close; with `delete` remove the directory too."""
        part = self._partitions.pop((meta.name, partition), None)
        if part is not None:
            if self.fetchers is not None:
                self.fetchers.unfollow(part)
            hooks = self._leadership.get(meta.name)
            if part.is_leader and hooks is not None:
                hooks[1](partition)
            part.generation += 1
            try:
                await part.aclose()
            except StorageError as exc:
                log.warning("%s-%d: close failed: %s", logsafe(meta.name), partition, exc)
        if delete and self._logs is not None:
            self._logs.delete_partition_dirs(meta, [partition])

    # -- the partitions -----------------------------------------------------------------------

    def partition(self, topic: str, partition: int) -> Partition | None:
        return self._partitions.get((topic, partition))

    def partitions(self) -> list[Partition]:
        return list(self._partitions.values())

    def add_partitions(self, meta: TopicMeta, logs: dict[int, Log], topic_config: dict[str, Any]) -> None:
        """Make the opened `logs` of `meta` partitions led by this broker."""
        if meta.internal:
            self._internal.add(meta.name)
        for p, plog in sorted(logs.items()):
            part = Partition(meta.name, p, plog, leader_id=self.broker_id,
                             leader_epoch=meta.leader_epoch, replicas=[self.broker_id],
                             isr=[self.broker_id])
            part.apply_config(topic_config)
            try:
                part.load_producer_state()
            except (StorageError, CorruptBatchError) as exc:
                log.warning("%s-%d: producer state not rebuilt: %s", logsafe(meta.name), p, exc)
            self._partitions[(meta.name, p)] = part
        hooks = self._leadership.get(meta.name)
        if hooks is not None:
            for p in sorted(logs):
                hooks[0](p)

    async def remove_topic(self, meta: TopicMeta) -> None:
        """Resign and close every partition of `meta` (before its directories go)."""
        hooks = self._leadership.get(meta.name)
        for p in range(meta.partitions):
            part = self._partitions.pop((meta.name, p), None)
            if part is None:
                continue
            if self.fetchers is not None:
                self.fetchers.unfollow(part)
            part.generation += 1
            if hooks is not None and part.is_leader:
                hooks[1](p)
            try:
                await part.aclose()               # waits for a running flush, wakes fetches
            except StorageError as exc:
                log.warning("%s-%d: close before delete failed: %s", logsafe(meta.name), p, exc)

    def apply_config(self, meta: TopicMeta, topic_config: dict[str, Any]) -> None:
        for p in range(meta.partitions):
            part = self._partitions.get((meta.name, p))
            if part is not None:
                part.apply_config(topic_config)

    def on_leadership(self, topic: str, become_leader: LeadershipHook, resign: LeadershipHook) -> None:
        """Call `become_leader(p)` / `resign(p)` as partitions of `topic` change role here;
        at once for the partitions already led."""
        self._leadership[topic] = (become_leader, resign)
        for (t, p), part in sorted(self._partitions.items()):
            if t == topic and part.is_leader:
                become_leader(p)

    def clear(self) -> list[Partition]:
        """Forget every partition (shutdown; the HW checkpoint is written first); returns
        them for closing."""
        hws = self._high_watermarks()
        if hws and self._logs is not None:
            try:
                self._write_checkpoint(hws)
            except OSError as exc:
                log.error("cannot write the high-watermark checkpoint: %s", exc)
        for (topic, p), part in sorted(self._partitions.items()):
            hooks = self._leadership.get(topic)
            if hooks is not None and part.is_leader:
                hooks[1](p)
        parts = list(self._partitions.values())
        self._partitions.clear()
        return parts

    def shutdown(self) -> None:
        """Stop waiting: every parked fetch returns what it has."""
        self.stopping = True
        for event in list(self._stop_waiters):
            event.set()

    # -- state --------------------------------------------------------------------------------

    def partition_state(self, topic: str, partition: int) -> PartitionState | None:
        part = self._partitions.get((topic, partition))
        if part is None:
            return None
        return PartitionState(part.leader_id, part.leader_epoch, tuple(part.replicas), tuple(part.isr))

    def describe_partition(self, topic: str, partition: int) -> DescribedPartition:
        part = self._partitions.get((topic, partition))
        if part is None:
            return DescribedPartition(partition, int(ErrorCode.LEADER_NOT_AVAILABLE), -1, -1, [], [])
        return DescribedPartition(partition, 0, part.leader_id, part.leader_epoch, list(part.replicas),
                                  list(part.isr), part.log_start_offset, part.log_end_offset,
                                  part.high_watermark, part.size_bytes, cleanable_ratio(part))

    def waiters(self) -> int:
        return sum(p.statistics().waiters for p in self._partitions.values())

    def size_bytes(self) -> int:
        return sum(p.size_bytes for p in self._partitions.values())

    # -- produce ------------------------------------------------------------------------------

    async def append_records(self, topic: str, partition: int, records: memoryview | None,
                             acks: int, timeout_s: float) -> ProducePartitionResponse:
        """Validate and append one partition's produced batches (acks already checked)."""
        out = ProducePartitionResponse(partition)
        part = self._partitions.get((topic, partition))
        try:
            if part is None:
                raise PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                     f"unknown topic or partition {topic}-{partition}")
            if not part.is_leader:
                raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                     f"broker {self.broker_id} does not lead {topic}-{partition}")
            if topic in self._internal:
                raise PartitionError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                                     f"cannot produce to internal topic {topic}")
            if records is None:
                raise PartitionError(ErrorCode.INVALID_REQUEST, "no record batch attached")
            batches = validate_records(records, part.log.config.max_message_bytes)
            if part.log.config.compact:
                check_keys(batches)
            # One append for the whole request: another request's batches cannot land
            # between these, so the one base offset answered covers all of them.
            first = (await part.append_batches(batches, acks=acks, timeout_s=timeout_s))[0]
            out.base_offset = first.base_offset
            out.log_append_time = first.log_append_time
            out.log_start_offset = part.log_start_offset
        except PartitionError as exc:
            out.error_code = int(exc.code)
            out.error_message = exc.message
        return out

    # -- fetch --------------------------------------------------------------------------------

    async def fetch_records(self, request: FetchRequest) -> list[FetchTopicResponse]:
        """Read every wanted partition; long-poll until min_bytes, an error, the wait, or stop.

        A follower's fetch (replica_id >= 0) reads up to the log end, records the
        follower's progress (which may move the HW and expand the ISR) and waits for
        appends rather than for the HW."""
        config = self._config
        budget = min(max(request.max_bytes, 0), config.fetch_max_bytes)
        wait_s = min(max(request.max_wait_ms, 0), config.fetch_max_wait_ms) / 1000
        deadline = trio.current_time() + wait_s
        follower = request.replica_id >= 0
        while True:
            topics, total, any_error = self._fetch_round(request, budget, follower)
            if (total >= request.min_bytes or any_error or trio.current_time() >= deadline
                    or self.stopping):
                return topics
            await self._wait_for_any(request, deadline, follower)

    def _fetch_round(self, request: FetchRequest, budget: int,
                     follower: bool) -> tuple[list[FetchTopicResponse], int, bool]:
        """Read every wanted partition once. Returns (topics, record bytes, any error)."""
        topics = []
        total, any_error = 0, False
        for t in request.topics:
            partitions = []
            for pp in t.partitions:
                out = FetchPartitionResponse(pp.partition)
                partitions.append(out)
                part = self._partitions.get((t.topic, pp.partition))
                try:
                    if part is None:
                        raise PartitionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                    if not part.is_leader:
                        raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER)
                    epoch = pp.current_leader_epoch
                    if epoch >= 0 and epoch != part.leader_epoch:
                        # KIP-320: a client with a stale (or future) view of the leader must refresh.
                        raise PartitionError(ErrorCode.FENCED_LEADER_EPOCH if epoch < part.leader_epoch
                                             else ErrorCode.UNKNOWN_LEADER_EPOCH)
                    out.high_watermark = out.last_stable_offset = part.high_watermark
                    out.log_start_offset = part.log_start_offset
                    if follower and self._follower_diverges(part, pp, out):
                        continue
                    if not part.log_start_offset <= pp.fetch_offset <= part.log_end_offset:
                        raise PartitionError(ErrorCode.OFFSET_OUT_OF_RANGE)
                    if follower:
                        self._follower_fetched(part, request.replica_id, pp.fetch_offset)
                        out.high_watermark = out.last_stable_offset = part.high_watermark
                    limit = min(max(pp.partition_max_bytes, 0), budget - total)
                    if limit > 0 or total == 0:
                        data = part.read(pp.fetch_offset, max(limit, 1),
                                         max_offset=part.log_end_offset if follower else None)
                        if data:
                            out.records = data
                            total += len(data)
                except PartitionError as exc:
                    out.error_code = int(exc.code)
                    any_error = True
            topics.append(FetchTopicResponse(t.topic, partitions))
        return topics, total, any_error

    def _follower_diverges(self, part: Partition, pp: Any, out: FetchPartitionResponse) -> bool:
        """KIP-595's check of a follower's `last_fetched_epoch`: when its log cannot be a
        prefix of this one, answer the epoch and end offset to truncate to instead of data
        (an epoch this log does not know ends at the log start: `diverging_end_offset` is
        never negative when the follower must truncate)."""
        last = pp.last_fetched_epoch
        if last is None or last < 0 or not part.replicated:
            return False
        epoch, end = epoch_end_offset(part.log.epoch_cache.entries, last, part.log_end_offset)
        if epoch == last and end >= pp.fetch_offset:
            return False
        out.diverging_epoch = epoch
        out.diverging_end_offset = end if end >= 0 else part.log_start_offset
        return True

    def _follower_fetched(self, part: Partition, replica_id: int, fetch_offset: int) -> None:
        if replica_id not in part.followers:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                 f"broker {replica_id} is not a replica of {part.topic}-{part.partition}")
        part.update_follower(replica_id, fetch_offset, trio.current_time())
        if self.isr is not None:
            self.isr.maybe_expand(part, replica_id)

    async def _wait_for_any(self, request: FetchRequest, deadline: float, follower: bool = False) -> None:
        """Sleep until any wanted partition's HW moves (a follower: any append), the
        deadline passes, or the broker stops."""
        event = trio.Event()
        parts = [part for t in request.topics for pp in t.partitions
                 if (part := self._partitions.get((t.topic, pp.partition))) is not None]
        for part in parts:
            if follower:
                part.add_append_waiter(event)
            else:
                part.add_waiter(event)
        self._stop_waiters.add(event)
        try:
            with trio.move_on_at(deadline):
                await event.wait()
        finally:
            for part in parts:
                if follower:
                    part.discard_append_waiter(event)
                else:
                    part.discard_waiter(event)
            self._stop_waiters.discard(event)

    # -- OffsetForLeaderEpoch -----------------------------------------------------------------

    def offsets_for_leader_epoch(self, request: OffsetForLeaderEpochRequest
                                 ) -> list[OffsetForLeaderTopicResult]:
        """Where each asked epoch ends on this leader's log (followers after a leader change)."""
        topics = []
        for t in request.topics:
            results = []
            for pp in t.partitions:
                out = EpochEndOffset(pp.partition)
                results.append(out)
                part = self._partitions.get((t.topic, pp.partition))
                if part is None:
                    out.error_code = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                elif not part.is_leader:
                    out.error_code = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
                elif 0 <= pp.current_leader_epoch != part.leader_epoch:
                    out.error_code = int(ErrorCode.FENCED_LEADER_EPOCH
                                         if pp.current_leader_epoch < part.leader_epoch
                                         else ErrorCode.UNKNOWN_LEADER_EPOCH)
                else:
                    out.leader_epoch, out.end_offset = epoch_end_offset(
                        part.log.epoch_cache.entries, pp.leader_epoch, part.log_end_offset)
            topics.append(OffsetForLeaderTopicResult(t.topic, results))
        return topics

    # -- offsets ------------------------------------------------------------------------------

    def list_offset(self, topic: str, partition: int, timestamp: int) -> ListOffsetsPartitionResponse:
        out = ListOffsetsPartitionResponse(partition)
        part = self._partitions.get((topic, partition))
        if part is None:
            out.error_code = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            return out
        if not part.is_leader:
            out.error_code = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
            return out
        out.leader_epoch = part.leader_epoch
        if timestamp == EARLIEST_TIMESTAMP:
            out.offset = part.log_start_offset
        elif timestamp == LATEST_TIMESTAMP:
            out.offset = part.high_watermark
        elif timestamp < 0:
            out.error_code = int(ErrorCode.INVALID_REQUEST)
        else:
            try:
                found = part.offset_for_timestamp(timestamp)
            except PartitionError as exc:
                out.error_code = int(exc.code)
                found = None
            if found is not None:
                out.offset, out.timestamp = found
        return out
