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
from minilog.storage import Log, StorageError, keyless_records

from ._services import PartitionState
from .config import BrokerConfig
from .log_cleaner import cleanable_ratio
from .metadata import TopicMeta
from .partition import Partition, PartitionError

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
        config: the broker's settings (fetch.max.bytes, fetch.max.wait.ms).
    """

    def __init__(self, broker_id: int, config: BrokerConfig) -> None:
        self.broker_id = broker_id
        self._config = config
        self._partitions: dict[tuple[str, int], Partition] = {}
        self._internal: set[str] = set()
        self._leadership: dict[str, tuple[LeadershipHook, LeadershipHook]] = {}
        self._stop_waiters: set[trio.Event] = set()
        self.stopping = False

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
            if hooks is not None:
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
        for (t, p) in sorted(self._partitions):
            if t == topic:
                become_leader(p)

    def clear(self) -> list[Partition]:
        """Forget every partition (shutdown); returns them for closing."""
        for (topic, p) in sorted(self._partitions):
            hooks = self._leadership.get(topic)
            if hooks is not None:
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
            if topic in self._internal:
                raise PartitionError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                                     f"cannot produce to internal topic {topic}")
            if records is None:
                raise PartitionError(ErrorCode.INVALID_REQUEST, "no record batch attached")
            batches = validate_records(records, part.log.config.max_message_bytes)
            if part.log.config.compact:
                check_keys(batches)
            first = None
            for batch, header in batches:
                info = await part.append(batch, acks=acks, timeout_s=timeout_s, header=header)
                if first is None:
                    first = info
            assert first is not None
            out.base_offset = first.base_offset
            out.log_append_time = first.log_append_time
            out.log_start_offset = part.log_start_offset
        except PartitionError as exc:
            out.error_code = int(exc.code)
            out.error_message = exc.message
        return out

    # -- fetch --------------------------------------------------------------------------------

    async def fetch_records(self, request: FetchRequest) -> list[FetchTopicResponse]:
        """Read every wanted partition; long-poll until min_bytes, an error, the wait, or stop."""
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
            await self._wait_for_any(request, deadline)

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
                    epoch = pp.current_leader_epoch
                    if epoch >= 0 and epoch != part.leader_epoch:
                        # KIP-320: a client with a stale (or future) view of the leader must refresh.
                        raise PartitionError(ErrorCode.FENCED_LEADER_EPOCH if epoch < part.leader_epoch
                                             else ErrorCode.UNKNOWN_LEADER_EPOCH)
                    out.high_watermark = out.last_stable_offset = part.high_watermark
                    out.log_start_offset = part.log_start_offset
                    if not part.log_start_offset <= pp.fetch_offset <= part.log_end_offset:
                        raise PartitionError(ErrorCode.OFFSET_OUT_OF_RANGE)
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

    async def _wait_for_any(self, request: FetchRequest, deadline: float) -> None:
        """Sleep until any wanted partition's HW moves, the deadline passes, or the broker stops."""
        event = trio.Event()
        parts = [part for t in request.topics for pp in t.partitions
                 if (part := self._partitions.get((t.topic, pp.partition))) is not None]
        for part in parts:
            part.add_waiter(event)
        self._stop_waiters.add(event)
        try:
            with trio.move_on_at(deadline):
                await event.wait()
        finally:
            for part in parts:
                part.discard_waiter(event)
            self._stop_waiters.discard(event)

    # -- offsets ------------------------------------------------------------------------------

    def list_offset(self, topic: str, partition: int, timestamp: int) -> ListOffsetsPartitionResponse:
        out = ListOffsetsPartitionResponse(partition)
        part = self._partitions.get((topic, partition))
        if part is None:
            out.error_code = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
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
