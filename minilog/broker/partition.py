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

Replication (a cluster; `replicated` is True): the replica manager sets the
role from the control plane's state (`become_leader` / `become_follower`).
A leader tracks each follower's log end from its fetches
(`update_follower`); its HW is the smallest log end over the maximal ISR
(the ISR plus a pending addition) and does not move while the ISR is
smaller than min.insync.replicas (Kafka 4's strict min ISR). A follower
appends the leader's batches as they are (`append_as_follower`), takes
min(leader's HW, own log end) as its HW and truncates by epoch. Every role
change bumps `generation`: a parked acks=all append of an older generation
answers NOT_LEADER_OR_FOLLOWER. The rules themselves are pure functions in
`replication.py`.

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
from collections.abc import Sequence
from typing import Any

import trio

from minilog.protocol import LOG_OVERHEAD, CorruptBatchError, ErrorCode, check_batch_fields
from minilog.storage import (
    LONG_MAX,
    InvalidOffsetError,
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

from .replication import ReplicaProgress, high_watermark_candidate, update_progress

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
    if isinstance(exc, (OffsetOutOfRangeError, InvalidOffsetError)):
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
                 flush_messages: int = 2**63 - 1, flush_ms: int = 2**63 - 1,
                 local_id: int | None = None) -> None:
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
        # Replication (see the module docstring); a single broker leaves these as they are.
        self.local_id = leader_id if local_id is None else local_id    # this broker
        self.replicated = False                    # roles and ISR come from the control plane
        self.is_leader = True
        self.version = -1                          # the applied state's version (partition epoch)
        self.generation = 0                        # bumped by every role change
        self.followers: dict[int, ReplicaProgress] = {}
        self.pending_isr: tuple[int, ...] | None = None   # an ISR change in flight
        self.leader_epoch_start_offset = 0
        self._append_waiters: set[trio.Event] = set()     # followers' long polls
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
        """Single broker: HW = LEO. Replicated leader: min LEO over the maximal ISR, never
        while the ISR is below min.insync.replicas, never backwards (`high_watermark_candidate`)."""
        if not self.replicated:
            hw = self.log.log_end_offset
            if hw != self.high_watermark:
                self.high_watermark = hw
                self._wake()
            return
        if not self.is_leader:
            return
        hw = high_watermark_candidate(self.log.log_end_offset, self.local_id, self.isr,
                                      self.pending_isr, self.followers, self.min_insync_replicas)
        if hw > self.high_watermark:
            self.high_watermark = hw
            self._wake()

    # -- replication roles (the replica manager calls these; see replica_manager.py) ----------

    def become_leader(self, leader_epoch: int, replicas: list[int], isr: list[int], version: int,
                      now_s: float) -> None:
        """Lead at `leader_epoch`: record the epoch's start in the epoch cache (so followers'
        OffsetForLeaderEpoch answers are right before the first append), reset the
        followers' progress (ISR members count as caught up now, as Kafka does)."""
        self.generation += 1
        self._set_state(self.local_id, leader_epoch, replicas, isr, version)
        self.is_leader = True
        cache = self.log.epoch_cache
        if leader_epoch > cache.latest_epoch:
            cache.assign(leader_epoch, self.log.log_end_offset)
        self.leader_epoch_start_offset = self.log.log_end_offset
        self.followers = {b: ReplicaProgress(last_caught_up_s=now_s if b in isr else 0.0)
                          for b in replicas if b != self.local_id}
        self.pending_isr = None
        self._wake()
        self._advance_high_watermark()

    def become_follower(self, leader_id: int, leader_epoch: int, replicas: list[int],
                        isr: list[int], version: int) -> None:
        """Follow `leader_id` (-1: no leader yet). Parked acks=all appends answer
        NOT_LEADER_OR_FOLLOWER; followers' long polls here return."""
        self.generation += 1
        self._set_state(leader_id, leader_epoch, replicas, isr, version)
        self.is_leader = False
        self.followers = {}
        self.pending_isr = None
        self.high_watermark = min(self.high_watermark, self.log.log_end_offset)
        self._wake()
        self._wake_appends()

    def set_isr(self, isr: list[int], version: int) -> None:
        """The ISR changed at the same leader epoch: recompute the HW and wake acks=all
        waiters (they check the ISR size against min.insync.replicas)."""
        self.isr = list(isr)
        self.version = version
        self._advance_high_watermark()
        self._wake()

    def _set_state(self, leader_id: int, leader_epoch: int, replicas: list[int], isr: list[int],
                   version: int) -> None:
        self.replicated = True
        self.leader_id = leader_id
        self.leader_epoch = leader_epoch
        self.replicas = list(replicas)
        self.isr = list(isr)
        self.version = version

    def update_follower(self, replica_id: int, fetch_offset: int, now_s: float) -> bool:
        """A follower fetched at `fetch_offset` (its log end). Returns whether the HW moved."""
        progress = self.followers.get(replica_id)
        if progress is None:
            return False
        update_progress(progress, fetch_offset, self.log.log_end_offset, now_s)
        before = self.high_watermark
        self._advance_high_watermark()
        return self.high_watermark != before

    def append_as_follower(self, batch: Any) -> Any:
        """Append one batch fetched from the leader with its offsets and epoch as they are
        (producer state and epoch cache follow from the batch).

        Raises:
            PartitionError: the log's errors (OFFSET_OUT_OF_RANGE when the batch does not
                continue the log, CORRUPT_MESSAGE, FENCED_LEADER_EPOCH, ...).
        """
        if self.closed:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER, "partition is closed")
        try:
            info = self.log.append(batch, assign_offsets=False)
        except StorageError as exc:
            raise _partition_error(self, exc) from exc
        self._unflushed_messages += info.last_offset - info.base_offset + 1
        return info

    def update_high_watermark_as_follower(self, leader_high_watermark: int) -> None:
        """HW = min(leader's HW, own log end) (Kafka's follower rule)."""
        hw = min(leader_high_watermark, self.log.log_end_offset)
        if hw != self.high_watermark and hw >= 0:
            self.high_watermark = hw
            self._wake()

    async def truncate_to(self, offset: int) -> None:
        """Drop every batch at or above `offset` (after any running flush); HW follows."""
        await self.wait_idle()
        try:
            self.log.truncate_to(offset)
            # Also at the log end: an epoch this broker led without appending anything
            # ends there and must go (Kafka's truncateTo does the same).
            self.log.epoch_cache.truncate_from_end(offset)
        except StorageError as exc:
            raise _partition_error(self, exc) from exc
        except OSError as exc:
            raise PartitionError(ErrorCode.KAFKA_STORAGE_ERROR, f"epoch checkpoint: {exc}") from exc
        self.high_watermark = min(self.high_watermark, self.log.log_end_offset)

    async def truncate_fully_and_start_at(self, offset: int) -> None:
        """Empty the log and restart it at `offset` (a follower behind the leader's log start)."""
        await self.wait_idle()
        try:
            self.log.truncate_fully_and_start_at(offset)
        except StorageError as exc:
            raise _partition_error(self, exc) from exc
        self.high_watermark = offset

    def add_append_waiter(self, event: trio.Event) -> None:
        """Set `event` at the next append (followers' long polls) or role change."""
        self._append_waiters.add(event)

    def discard_append_waiter(self, event: trio.Event) -> None:
        self._append_waiters.discard(event)

    def _wake_appends(self) -> None:
        if self._append_waiters:
            for event in self._append_waiters:
                event.set()
            self._append_waiters.clear()

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
        if self._append_waiters:
            self._wake_appends()
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
        """Append one batch as the leader honouring `acks`: `append_batches` of one."""
        return (await self.append_batches([(batch, header)], acks=acks, timeout_s=timeout_s))[0]

    async def append_batches(self, batches: Sequence[tuple[Any, tuple[int, ...] | None]], *,
                             acks: int = -1, timeout_s: float = 30.0) -> list[Any]:
        """Append one request's batches as the leader honouring `acks` (0, 1 or -1 = all;
        checked by the caller). Returns each batch's append info.

        The batches are appended back to back with no await between them, so no other
        request's batch can land in between: the answer's one base offset describes
        every record of the request. acks=-1 then waits once (up to `timeout_s`) for
        the HW to pass the last batch. On a single broker the HW is the log end, so
        that is at once.

        Raises:
            PartitionError: NOT_LEADER_OR_FOLLOWER (not the leader, or deposed while
                waiting), NOT_ENOUGH_REPLICAS (checked before appending),
                NOT_ENOUGH_REPLICAS_AFTER_APPEND (the ISR shrank below
                min.insync.replicas while waiting), REQUEST_TIMED_OUT, and what
                `append_nowait` raises (batches before the failing one stay appended).
        """
        assert acks in (-1, 0, 1), acks
        if not self.is_leader:
            raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                 f"broker {self.local_id} does not lead {self.topic}-{self.partition}")
        if acks == -1 and len(self.isr) < self.min_insync_replicas:
            raise PartitionError(
                ErrorCode.NOT_ENOUGH_REPLICAS,
                f"{len(self.isr)} in-sync replicas, min.insync.replicas is {self.min_insync_replicas}",
            )
        generation = self.generation
        infos = [self.append_nowait(batch, header) for batch, header in batches]
        if self.flush_due():
            try:
                await self.flush()             # durable before the answer, as Kafka's flush policy
            except StorageError as exc:
                raise _partition_error(self, exc) from exc
        last = max(info.last_offset for info in infos)     # a retried batch answers its old offsets
        if acks == -1 and (self.replicated or self.high_watermark <= last):
            await self._wait_acked(last + 1, generation, timeout_s)
        return infos

    async def _wait_acked(self, offset: int, generation: int, timeout_s: float) -> None:
        """Kafka's DelayedProduce: wait until the HW reaches `offset` with the ISR at or
        above min.insync.replicas, in the leadership `generation` that appended."""
        with trio.move_on_after(timeout_s):
            while True:
                if self.generation != generation or self.closed:
                    raise PartitionError(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                         "leadership moved before the records were replicated")
                enough = len(self.isr) >= self.min_insync_replicas
                if self.high_watermark >= offset:
                    if enough or not self.replicated:
                        return
                    raise PartitionError(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND)
                if not enough:
                    raise PartitionError(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                                         f"ISR shrank to {len(self.isr)}, below min.insync.replicas "
                                         f"{self.min_insync_replicas}")
                event = trio.Event()
                self._waiters.add(event)
                try:
                    await event.wait()
                finally:
                    self._waiters.discard(event)
        raise PartitionError(ErrorCode.REQUEST_TIMED_OUT,
                             f"the records were not replicated to the ISR within {timeout_s:g} s")

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
