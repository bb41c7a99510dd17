"""Partition state: the log plus leadership, ISR, high watermark and waiters.

This is the API the request handlers, the group coordinator (which writes
and reads `__consumer_offsets` through it) and, later, replication use. It
is kept stable; add, don't change.

Rules:
- Offsets and the on-disk bytes belong to the `minilog.storage.Log`; this
  class adds what a broker knows: who leads, the leader epoch, the replica
  set, the ISR and the high watermark (HW).
- Consumers read only below the HW. On a single broker (ISR = the leader)
  the HW is the log end offset right after each append. With replication
  it becomes the smallest log end offset in the ISR (`_advance_high_watermark`
  is the one place that computes it).
- Every append that moves the HW wakes every registered waiter (trio
  events), so long-poll fetches return as soon as data exists, never on a
  timer.
- min.insync.replicas is checked before anything is appended.
- Storage errors become `PartitionError`s with Kafka error codes here, at
  this one boundary (`storage_error_code`); callers see only PartitionError.
- A batch arrives validated (structure, size, CRC) by the replica
  manager's single validation point, with its header fields; nothing here
  parses it again.

Theory of operation: `append_nowait` is synchronous: it calls `log.append`
with the batch's header fields (the log checks idempotent producers'
sequences and epochs against its producer state, answers a retried batch
with its original offsets, and writes the batch with its offsets and leader
epoch stamped; a rejected batch never reaches disk), advances the HW and
wakes waiters. `append` is
the async acks-aware wrapper; with replication it will wait for the HW to
pass the batch. A fetch registers one `trio.Event` with every partition it
reads (`add_waiter`) and waits for any of them.

Flush policy (flush.messages / flush.ms): the `Log` is opened with both
set to "never", so it never fsyncs inside `append` on the event loop; this
class applies the topic's policy instead and runs `log.flush()` (and, after
segment rolls, `log.flush_rolled()`, as Kafka flushes rolled segments) in a
worker thread (`trio.to_thread`). The storage layer allows exactly that
pair: a flush in a thread while appends and reads continue on the loop.
Anything else that changes the segment list (retention, close, truncation)
first awaits `wait_idle()`, so it never overlaps a flush.

Task-safety: all methods run on the trio thread; none may be called from a
worker thread. `append_nowait` never awaits, so appends are atomic with
respect to other tasks.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from minilog.protocol import LOG_OVERHEAD, CorruptBatchError, ErrorCode, check_batch_fields
from minilog.storage import (
    LONG_MAX,
    CorruptRecordError,
    InvalidProducerEpochError,
    LogConfig,
    LogCorruptedError,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    RecordTooLargeError,
    StaleLeaderEpochError,
    StorageError,
)

__all__ = ["Partition", "PartitionError", "PartitionStatistics", "storage_error_code"]

_logger = logging.getLogger("minilog.broker.partition")



class PartitionError(Exception):
    """A request on this partition failed with a Kafka error code; nothing changed
    (except for LogCorruptedError's KAFKA_STORAGE_ERROR: the log is poisoned)."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code
        self.message = message or code.name


def storage_error_code(exc: StorageError) -> ErrorCode:
    """The Kafka error code of a storage error (the one place they are mapped)."""
    if isinstance(exc, RecordTooLargeError):
        return ErrorCode.MESSAGE_TOO_LARGE
    if isinstance(exc, CorruptRecordError):
        return ErrorCode.CORRUPT_MESSAGE
    if isinstance(exc, OffsetOutOfRangeError):
        return ErrorCode.OFFSET_OUT_OF_RANGE
    if isinstance(exc, StaleLeaderEpochError):
        return ErrorCode.FENCED_LEADER_EPOCH
    if isinstance(exc, OutOfOrderSequenceError):
        return ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    if isinstance(exc, InvalidProducerEpochError):
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return ErrorCode.KAFKA_STORAGE_ERROR


def _partition_error(part: Partition, exc: StorageError) -> PartitionError:
    if isinstance(exc, LogCorruptedError):
        _logger.error("%s-%d: %s", part.topic, part.partition, exc)
    return PartitionError(storage_error_code(exc), str(exc))


@dataclass(frozen=True)
class PartitionStatistics:
    topic: str
    partition: int
    leader_epoch: int
    log_start_offset: int
    log_end_offset: int
    high_watermark: int
    size_bytes: int
    waiters: int
    producers: int


class Partition:
    """One partition replica on this broker.

    Args:
        topic, partition: its name.
        log: an open `minilog.storage.Log`.
        leader_id: broker id of the leader (-1 when none).
        leader_epoch: the current leader epoch, stamped into appended batches.
        replicas, isr: broker ids.
        min_insync_replicas: the topic's min.insync.replicas.
    """

    def __init__(self, topic: str, partition: int, log: Any, *, leader_id: int,
                 leader_epoch: int = 0, replicas: list[int] | None = None,
                 isr: list[int] | None = None, min_insync_replicas: int = 1,
                 flush_messages: int = 2**63 - 1, flush_ms: int = 2**63 - 1) -> None:
        self.topic = topic
        self.partition = partition
        self.log = log
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.replicas = list(replicas if replicas is not None else [leader_id])
        self.isr = list(isr if isr is not None else self.replicas)
        self.min_insync_replicas = min_insync_replicas
        self.high_watermark = log.log_end_offset
        self._waiters: set[trio.Event] = set()
        self.closed = False
        self.flush_messages = flush_messages       # records between fsyncs (topic flush.messages)
        self.flush_ms = flush_ms                   # ms between fsyncs (topic flush.ms)
        self._unflushed_messages = 0
        self._last_flush = time.monotonic()
        self._flush_done: trio.Event | None = None  # set while a flush runs in a thread
        self._segment_base = -1

    # -- offsets ---------------------------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def size_bytes(self) -> int:
        return self.log.size_bytes

    def _advance_high_watermark(self) -> None:
        """Single broker: HW = LEO. With followers: min LEO over the ISR."""
        hw = self.log.log_end_offset
        if hw != self.high_watermark:
            self.high_watermark = hw
            self._wake()

    # -- writing ---------------------------------------------------------------------------

    def append_nowait(self, batch: Any, header: tuple[int, ...] | None = None, *,
                      leader_epoch: int | None = None) -> Any:
        """Append one record batch as the leader; return the storage `AppendInfo`.

        Args:
            batch: exactly one record batch.
            header: its 13 header fields (`check_batch_fields`) when the
                caller validated it (size, structure, CRC); None: validated here.
            leader_epoch: stamped into the batch (default: the current epoch).

        The batch is written with its base offset and the leader epoch stamped
        (the caller's buffer is not modified). A duplicate idempotent batch is
        not appended again: the original AppendInfo is returned.

        Raises:
            PartitionError: NOT_LEADER_OR_FOLLOWER (closed partition), and the codes
                of the log's errors (OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH,
                MESSAGE_TOO_LARGE, CORRUPT_MESSAGE, ...).
        """
        if self.closed:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER, "partition is closed")
        epoch = self.leader_epoch if leader_epoch is None else leader_epoch
        if header is None:
            limit = self.log.config.max_message_bytes
            if len(batch) > limit:
                raise PartitionError(ErrorCode.MESSAGE_TOO_LARGE,
                                     f"batch of {len(batch)} bytes exceeds max.message.bytes {limit}")
            try:
                header = check_batch_fields(batch, 0)
            except CorruptBatchError as exc:
                raise PartitionError(ErrorCode.CORRUPT_MESSAGE, str(exc)) from exc
            if header[1] + LOG_OVERHEAD != len(batch):
                raise PartitionError(ErrorCode.CORRUPT_MESSAGE, "append takes exactly one batch")
        try:
            info = self.log.append(batch, leader_epoch=epoch, header=header)
        except StorageError as exc:
            raise _partition_error(self, exc) from exc
        if info.duplicate:
            return info                         # a retry: the original offsets, nothing written
        if info.segment_base_offset != self._segment_base:
            if self._segment_base >= 0:
                _logger.info("%s-%d: rolled to a new segment at offset %d", self.topic,
                             self.partition, info.segment_base_offset)
            self._segment_base = info.segment_base_offset
        self._unflushed_messages += info.last_offset - info.base_offset + 1
        self._advance_high_watermark()
        return info

    def flush_due(self) -> bool:
        """Whether the topic's flush policy asks for an fsync now."""
        return self._unflushed_messages > 0 and (
            self._unflushed_messages >= self.flush_messages
            or (time.monotonic() - self._last_flush) * 1000 >= self.flush_ms)

    async def wait_idle(self) -> None:
        """Wait until no flush of this partition runs in a worker thread."""
        while self._flush_done is not None:
            await self._flush_done.wait()

    async def flush(self) -> None:
        """fsync everything appended so far, in a worker thread (the loop stays free)."""
        await self.wait_idle()
        if self.closed:
            return
        self._unflushed_messages = 0
        self._last_flush = time.monotonic()
        await self._in_thread(self.log.flush)

    async def flush_rolled(self) -> None:
        """fsync segments closed by rolls (recovery then re-checks only the active one)."""
        await self.wait_idle()
        if not self.closed and self.log.rolled_segments_unflushed:
            await self._in_thread(self.log.flush_rolled)

    async def _in_thread(self, fn) -> None:
        """Run a flush-type call in a worker thread; one at a time per partition."""
        assert self._flush_done is None
        self._flush_done = trio.Event()
        try:
            await trio.to_thread.run_sync(fn)
        finally:
            done, self._flush_done = self._flush_done, None
            done.set()

    async def append(self, batch: Any, *, acks: int = -1, timeout_s: float = 30.0,
                     header: tuple[int, ...] | None = None) -> Any:
        """Append as the leader honouring `acks` (0, 1 or -1 = all; checked by the caller).

        Single broker: all = the leader, so this returns right after the
        append. With replication, acks=-1 will wait (up to `timeout_s`) for
        the HW to pass the batch.

        Raises:
            PartitionError: NOT_ENOUGH_REPLICAS (checked before appending),
                NOT_ENOUGH_REPLICAS_AFTER_APPEND, and what `append_nowait` raises.
        """
        assert acks in (-1, 0, 1), acks
        if acks == -1 and len(self.isr) < self.min_insync_replicas:
            raise PartitionError(
                ErrorCode.NOT_ENOUGH_REPLICAS,
                f"{len(self.isr)} in-sync replicas, min.insync.replicas is {self.min_insync_replicas}",
            )
        info = self.append_nowait(batch, header)
        if self.flush_due():
            try:
                await self.flush()             # durable before the answer, as Kafka's flush policy
            except StorageError as exc:
                raise _partition_error(self, exc) from exc
        if acks == -1 and self.high_watermark <= info.last_offset:
            with trio.move_on_after(timeout_s):
                await self.wait_for_high_watermark(info.last_offset + 1)
            if self.high_watermark <= info.last_offset:
                raise PartitionError(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND)
        return info

    def load_producer_state(self) -> int:
        """The log rebuilds idempotent-producer state itself when it opens (from its newest
        snapshot plus the batches after it, `minilog.storage.ProducerStateManager`).

        Returns:
            The number of producers known.
        """
        return len(self.log.producer_state)

    # -- reading ---------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> bytes:
        """Whole batches from `offset`, up to about `max_bytes`, below `max_offset`.

        `max_offset` defaults to the high watermark (what consumers may see);
        followers pass None-equivalent `log_end_offset`. Returns file bytes, never
        decoded. At least one whole batch is returned when one exists, even
        above `max_bytes` (as Kafka, so a large batch cannot stall a consumer).

        Raises:
            PartitionError: OFFSET_OUT_OF_RANGE outside [log start, log end]; other
                storage errors mapped.
        """
        limit = self.high_watermark if max_offset is None else max_offset
        try:
            return self.log.read(offset, max_bytes, max_offset=limit)
        except StorageError as exc:
            raise _partition_error(self, exc) from exc

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `timestamp` below the HW.

        Raises:
            PartitionError: the log's error, mapped.
        """
        try:
            found = self.log.offset_for_timestamp(timestamp)
        except StorageError as exc:
            raise _partition_error(self, exc) from exc
        if found is None or found[0] >= self.high_watermark:
            return None
        return found[0], found[1]

    def add_waiter(self, event: trio.Event) -> None:
        """Set `event` the next time the HW moves (or the partition closes)."""
        self._waiters.add(event)

    def discard_waiter(self, event: trio.Event) -> None:
        self._waiters.discard(event)

    def _wake(self) -> None:
        if self._waiters:
            for event in self._waiters:
                event.set()
            self._waiters.clear()

    async def wait_for_high_watermark(self, offset: int) -> None:
        """Return once the high watermark is above `offset - 1` (i.e. >= offset) or closed."""
        while self.high_watermark < offset and not self.closed:
            event = trio.Event()
            self._waiters.add(event)
            try:
                await event.wait()
            finally:
                self._waiters.discard(event)

    async def wait_for_data(self, offset: int) -> None:
        """Return once a consumer at `offset` has something to read (HW > offset)."""
        await self.wait_for_high_watermark(offset + 1)

    # -- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def log_config_for(topic_config: dict) -> LogConfig:
        """The Log's config for a topic config (Kafka key -> value): fsync policy disabled
        inside the Log, because the partition applies it off the event loop."""
        return LogConfig.from_kafka({**topic_config, "flush.messages": LONG_MAX, "flush.ms": LONG_MAX})

    def apply_config(self, topic_config: dict) -> None:
        """Apply a topic's effective config (Kafka key -> typed value) live."""
        self.min_insync_replicas = topic_config["min.insync.replicas"]
        self.flush_messages = topic_config["flush.messages"]
        self.flush_ms = topic_config["flush.ms"]
        self.log.config = self.log_config_for(topic_config)

    def close(self) -> None:
        """Close the log (flush + clean-shutdown marker) and wake every waiter.

        Call only when no flush runs (after `wait_idle`)."""
        assert self._flush_done is None
        if not self.closed:
            self.closed = True
            self._wake()
            self.log.close()

    async def aclose(self, limiter: trio.CapacityLimiter | None = None) -> None:
        """`close`, with the log's final flush in a worker thread (for shutdown)."""
        await self.wait_idle()
        if self.closed:
            return
        self.closed = True
        self._wake()
        await trio.to_thread.run_sync(self.log.close, limiter=limiter)

    def statistics(self) -> PartitionStatistics:
        return PartitionStatistics(self.topic, self.partition, self.leader_epoch,
                                   self.log_start_offset, self.log_end_offset,
                                   self.high_watermark, self.size_bytes, len(self._waiters),
                                   len(self.log.producer_state))
