"""The partition log: append and read over a list of segments, behind one small API.

Rules:

- Offsets are dense and monotonic. `append` assigns `log_end_offset`
  (leader) or checks that the batch continues the log (follower). An
  offset never names two different batches: truncation is fsynced before
  the log end moves back, so a crash cannot resurrect cut batches.
- A batch is written exactly as received except for the 16 stamped bytes
  (base offset, length, leader epoch), outside the CRC. With
  message.timestamp.type=LogAppendTime the broker's time is also stamped
  and the CRC recomputed (`_stamp.py`; Kafka does the same).
- Rejected input changes nothing on disk. Every mutation runs under one
  guard, `with self._mutation("what"):`: a failure half-way poisons the Log
  (`_poison.py`; a full disk is the one poison it recovers from in place).
- Idempotent producers' batches are checked and remembered by the
  producer state (`_producer_state.py`); a retry is answered, not written.

Theory of operation: the work is split as in Kafka's storage module.

    _log.py             Log: append, read, lookups, argument checks, the error
                        state; when to truncate, retain, roll and flush
    _bounds.py          moving the log start forward and the log end back
                        across the parts (truncation, retention, DeleteRecords)
    _loader.py          opening: from the directory's files to the state (LogLoader)
    _segments.py        LogSegments: the segment list (lookup, reads across
                        segments, roll, truncate, delete, read descriptors,
                        index rebuilds)
    _durability.py      Durability: fsync, the recovery point, log.checkpoint
    _producer_state.py  ProducerStateManager and its snapshots
    _segment.py         LogSegment: one .log file and its two indexes
    _recovery.py        the decision tables of an unclean open
    _fs.py              the FileSystem seam every file operation goes through

A segment rolls when the one roll predicate, `should_roll`
(`_retention.py`), says so; retention asks the pure `segments_to_delete`
policy. The files are described in docs/on-disk-format.md.

Task safety: the owner (the broker's partition) serialises calls, with one
exception: `flush()` / `flush_rolled()` may run in a worker thread while
the owner keeps calling `append`/`read`/`roll` (the broker's fsync is off
the event loop); see `_durability.py` for why that pair is safe. Any other
concurrency (two appends, truncate during flush, ...) is the owner's bug.

Exception contract: public methods raise only `StorageError` subclasses;
anything else is a bug.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable

from minilog.protocol import LOG_OVERHEAD, CorruptBatchError, check_batch_fields

from . import _bounds
from ._checkpoint import CLEAN_SHUTDOWN, atomic_write
from ._config import LONG_MAX, LogConfig
from ._errors import (
    CorruptLogError,
    CorruptRecordError,
    InvalidOffsetError,
    LogCorruptedError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    StaleLeaderEpochError,
    StorageError,
)
from ._fs import OS_FS, Buffer, FileSystem
from ._recovery import RecoveryReport
from ._retention import Deletion, SegmentInfo, segments_to_delete, should_roll
from ._loader import load_log
from ._poison import Mutation, Poison
from ._segment import LogSegment
from ._stamp import stamped_parts
from ._types import AppendInfo, LogStatistics

__all__ = ["Log", "AppendInfo", "LogStatistics", "Clock"]

_log = logging.getLogger("minilog.storage")
Clock = Callable[[], int]
NO_TIMESTAMP = -1
_new_append_info = tuple.__new__            # AppendInfo without its Python-level __new__


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Log:
    """A partition's log on disk: `Log(path, config, clock=..., fs=...)` opens (or creates) it.

    After a clean shutdown only index tails are read. Otherwise the log is
    checked from the segment holding the recovery point and a torn or
    corrupt tail is cut (see `_recovery.py`); `log.last_recovery` tells
    what happened.

    Args:
        path: the partition directory (created if missing).
        config: the topic's LogConfig (defaults when None).
        clock: milliseconds since the epoch (wall time when None).
        fs: the FileSystem all file I/O goes through (the real disk when None).

    Raises:
        StorageError: the directory cannot be read or written.
    """

    def __init__(self, path: str | os.PathLike[str], config: LogConfig | None = None, *,
                 clock: Clock | None = None, fs: FileSystem | None = None) -> None:
        self.dir_path = dir_path = os.fspath(path)
        self.config = config or LogConfig()
        self._clock = clock = clock or _wall_clock_ms
        self.fs = fs = fs or OS_FS
        self._poisoned = Poison(dir_path)
        self._closed = False
        self._appends_total = 0
        self._bytes_appended_total = 0
        self._append_guard = self._mutation("append")
        self._corruptions_reported: set[tuple[str, int]] = set()
        self.last_recovery: RecoveryReport | None = None
        try:
            fs.makedirs(dir_path)
            self._open_state()
        except OSError as e:
            raise StorageError(f"{dir_path}: cannot open log: {e}") from e

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: LogConfig | None = None, *,
             clock: Clock | None = None, fs: FileSystem | None = None) -> Log:
        """Open (creating if needed) the partition log in directory `path`: `Log(...)`."""
        return cls(path, config, clock=clock, fs=fs)

    def _open_state(self) -> None:
        """Build the in-memory log from the directory (at open, and to recover from ENOSPC).

        Raises:
            OSError: from the file system (every descriptor opened is closed again).
        """
        loaded = load_log(self.dir_path, self.config, self.fs, self._clock)
        self.epoch_cache, self._durability = loaded.epoch_cache, loaded.durability
        self._segments, self.producer_state = loaded.segments, loaded.producer_state
        self._segments.on_roll = self._snapshot_producer_state
        self.last_recovery = loaded.report

    def _snapshot_producer_state(self, offset: int) -> None:
        """At a roll: snapshot the producer state, fsynced by the next flush."""
        path = self.producer_state.take_snapshot(offset, sync=False)
        with self._durability.lock:
            self._durability.unsynced_files.append(path)

    # ------------------------------------------------------------- properties

    @property
    def log_start_offset(self) -> int:
        return self._durability.log_start_offset

    @property
    def log_end_offset(self) -> int:
        """The next offset append will assign."""
        return self._segments.active.next_offset

    @property
    def recovery_point(self) -> int:
        return self._durability.recovery_point

    @property
    def size_bytes(self) -> int:
        return self._segments.size_bytes

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def segments(self) -> list[SegmentInfo]:
        """A snapshot of every segment, oldest first."""
        active = self._segments.active
        return [SegmentInfo(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp[0], s is active)
                for s in self._segments]

    def statistics(self) -> LogStatistics:
        active, segments, durability = self._segments.active, self._segments, self._durability
        return LogStatistics(
            log_start_offset=self.log_start_offset, log_end_offset=self.log_end_offset,
            recovery_point=durability.recovery_point, size_bytes=self.size_bytes,
            segment_count=len(segments), active_segment_base_offset=active.base_offset,
            active_segment_bytes=active.size_bytes, unflushed_messages=durability.unflushed_messages,
            latest_leader_epoch=self.epoch_cache.latest_epoch, appends_total=self._appends_total,
            bytes_appended_total=self._bytes_appended_total, rolls_total=segments.rolls_total,
            flushes_total=durability.flushes_total, segments_deleted_total=segments.deleted_total,
            index_rebuilds_total=segments.index_rebuilds_total)

    # ----------------------------------------------------------- error state

    def _check_usable(self, *, read: bool = False, recover: bool = True) -> None:
        """Raise unless usable; a write (`recover`) first reloads a log poisoned by a full disk."""
        if self._closed:
            raise StorageError(f"{self.dir_path}: log is closed")
        if self._poisoned.reason is not None:
            self._poisoned.check(read=read, recover=recover, reload=self._reload)

    def _poison(self, what: str, error: BaseException) -> LogCorruptedError:
        return self._poisoned.set(what, error)

    def recover_after_disk_full(self) -> None:
        """Reload the log from disk after ENOSPC poisoned it, in place (no restart needed).

        The reload is the recovery of an unclean open from the recovery point:
        a partial write is cut, indexes are re-checked, the producer state
        rebuilt. Called by the next write automatically; the broker may call
        it when it knows space was freed. A no-op on a healthy log.

        Raises:
            DiskFullError: the disk is still full (the log stays poisoned; reads go on).
            LogCorruptedError: the log was poisoned by something else, or the reload failed.
        """
        self._poisoned.recover(self._reload)

    def _reload(self) -> int:
        """Rebuild the state from the directory; returns the bytes recovery cut.

        Raises:
            OSError: the state from before the attempt is kept (reads go on from it).
        """
        old = (self.epoch_cache, self._durability, self._segments, self.producer_state, self.last_recovery)
        self._segments.close_fds()                # reopened lazily if the reload fails
        try:
            self._open_state()
        except OSError:
            (self.epoch_cache, self._durability, self._segments, self.producer_state,
             self.last_recovery) = old
            raise
        return self.last_recovery.truncated_bytes if self.last_recovery else 0

    def _mutation(self, what: str, *, in_thread: bool = False) -> Mutation:
        """`with self._mutation("truncate_to"):` checks the log is usable (recovering it from a
        full disk), and poisons it on an OSError or unreadable data inside (`_poison.py`)."""
        # flush and flush_rolled may run in a worker thread: they never reload the log there.
        check = functools.partial(self._check_usable, recover=not in_thread)
        return Mutation(check, self._poison, what)

    # ----------------------------------------------------------------- append

    def append(self, batch: Buffer, *, leader_epoch: int = 0, assign_offsets: bool = True,
               header: tuple[int, ...] | None = None) -> AppendInfo:
        """Validate, stamp and append one record batch with one write call.

        Args:
            batch: bytes-like holding exactly one RecordBatch v2. It is not
                modified (the stamped bytes are written from a copy of the
                16-byte prefix).
            leader_epoch: stamped into the batch on the leader path.
            assign_offsets: True (leader): the batch gets offsets from
                `log_end_offset` and `leader_epoch`. False (follower): the
                batch keeps the leader's offsets and epoch, and must start at
                `log_end_offset`.
            header: the batch's 13 header fields from `check_batch_fields`
                when the caller already validated it (size against
                max.message.bytes, structure, CRC, exactly one batch): they
                are used as they are, and nothing is checked twice.

        Returns:
            AppendInfo with the offsets the batch now has.

        Raises:
            RecordTooLargeError: larger than max.message.bytes (nothing written).
            CorruptRecordError: not exactly one valid batch (nothing written).
            InvalidOffsetError: follower batch does not continue the log (nothing written).
            StaleLeaderEpochError: epoch older than the log's latest (nothing written).
            LogCorruptedError: the write failed; the Log is now poisoned.
        """
        # Hot path: every batch a producer sends. Every check below runs
        # before the write, on locals: one header check (one unpack and the
        # CRC), the 16 stamped bytes packed in one go, the clock read only
        # when something needs it, no intermediate objects
        # (perf/bench_storage.py --profile append).
        if self._poisoned.reason is not None or self._closed:
            self._check_usable()        # may recover a log poisoned by a full disk
        view = memoryview(batch)
        if not isinstance(batch, (bytes, bytearray)) and (view.format != "B" or view.ndim != 1):
            view = view.cast("B")
        size = len(view)
        config = self.config
        if header is None:
            if size > config.max_message_bytes:
                raise RecordTooLargeError(f"batch of {size} bytes exceeds max.message.bytes "
                                          f"{config.max_message_bytes}")
            try:
                header = check_batch_fields(view, 0)
            except CorruptBatchError as e:
                raise CorruptRecordError(str(e)) from e
        (stored_base_offset, batch_length, stored_epoch, _magic, _crc, _attributes, last_offset_delta,
         _base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence,
         records_count) = header
        if batch_length + LOG_OVERHEAD != size:
            raise CorruptRecordError(f"{size - batch_length - LOG_OVERHEAD} bytes after the batch: "
                                     "append takes one batch")
        segments = self._segments
        active = segments.active
        log_end = active.next_offset
        if assign_offsets:
            base_offset, epoch = log_end, leader_epoch
        else:
            base_offset, epoch = stored_base_offset, stored_epoch
            if base_offset != log_end:
                raise InvalidOffsetError(f"batch starts at {base_offset}, log ends at {log_end}")
        epoch_cache = self.epoch_cache
        latest_epoch = epoch_cache.latest_epoch
        if epoch < latest_epoch:
            raise StaleLeaderEpochError(f"leader epoch {epoch} is older than {latest_epoch}")
        next_offset = base_offset + last_offset_delta + 1
        idempotent = producer_id >= 0 and base_sequence >= 0
        if idempotent and assign_offsets:
            duplicate = self.producer_state.check(producer_id, producer_epoch, base_sequence, last_offset_delta)
            if duplicate is not None:
                return AppendInfo(duplicate.first_offset, duplicate.last_offset, duplicate.max_timestamp,
                                  NO_TIMESTAMP, -1, -1, True)
        # The clock is needed by LogAppendTime, by flush.ms, and by segment.ms
        # when the segment's first batch had no timestamp (timeWaitedForRoll).
        stamp_time = assign_offsets and config.message_timestamp_type == "LogAppendTime"
        first_timestamp = active.first_batch_timestamp_ms
        now = None
        if stamp_time or config.flush_ms != LONG_MAX or first_timestamp is None or first_timestamp < 0:
            now = self._clock()
        if stamp_time:
            assert now is not None
            max_timestamp = append_time = now
        else:
            append_time = NO_TIMESTAMP
        parts = stamped_parts(view, base_offset, batch_length, epoch, append_time if stamp_time else None)
        active, position = self._write(active, parts, size, base_offset, next_offset, max_timestamp,
                                       epoch if epoch > latest_epoch else None, now)
        if idempotent:
            self.producer_state.update(producer_id, producer_epoch, base_sequence, base_offset,
                                       next_offset - 1, max_timestamp)
        self._appends_total += 1
        self._bytes_appended_total += size
        self._count_unflushed(records_count, now)
        return _new_append_info(AppendInfo, (base_offset, next_offset - 1, max_timestamp, append_time,
                                             position, active.base_offset, False))

    def _write(self, active: LogSegment, parts: list[Buffer], size: int, base_offset: int,
               next_offset: int, max_timestamp: int, new_epoch: int | None, now: int | None
               ) -> tuple[LogSegment, int]:
        """Roll when the one roll predicate says so, write `parts` with one call and record
        `new_epoch` (a leader epoch newer than the log's), under the append guard (a failure
        poisons the log).

        Returns: (the segment written to, the batch's position in it).
        """
        config = self.config
        if now is None:
            first_timestamp = active.first_batch_timestamp_ms
            assert first_timestamp is not None
            waited_ms = max_timestamp - first_timestamp
        else:
            waited_ms = active.time_waited_for_roll_ms(now, max_timestamp)
        with self._append_guard:
            reason = should_roll(active.size_bytes, size, config.segment_bytes, waited_ms, config.segment_ms,
                                 active.index_room <= 0, next_offset - 1 - active.base_offset)
            if reason is not None:
                _log.debug("%s: rolling segment %d (%s)", self.dir_path, active.base_offset, reason)
                active = self._segments.roll(self._clock() if now is None else now)
            position = active.append(parts, size, base_offset, next_offset, max_timestamp)
            if new_epoch is not None:
                self.epoch_cache.assign(new_epoch, base_offset)
        return active, position

    def _count_unflushed(self, records_count: int, now: int | None) -> None:
        """flush.messages / flush.ms after an append (`now` is read when flush.ms is set)."""
        durability, config = self._durability, self.config
        unflushed = durability.unflushed_messages = durability.unflushed_messages + records_count
        if unflushed >= config.flush_messages or (
                now is not None and now - durability.last_flush_ms >= config.flush_ms):
            self.flush()

    def roll(self) -> None:
        """Close the active segment and start a new one at the log end (no-op when empty).

        Raises:
            LogCorruptedError: a file operation failed; the Log is now poisoned.
        """
        with self._mutation("roll"):
            self._segments.roll(self._clock())

    # ------------------------------------------------------------------- read

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> bytes:
        """Whole stored batches starting with the one that holds `offset`.

        Args:
            offset: first offset wanted; the first batch returned contains it
                (its base offset may be lower: consumers skip those records).
            max_bytes: byte budget; at least one whole batch is returned
                even when it alone is larger.
            max_offset: exclusive bound on batch base offsets (the high
                watermark); None means the log end.

        Returns:
            The batches' bytes as stored, from one segment; b"" at the log
            end or at `max_offset`.

        Raises:
            OffsetOutOfRangeError: offset < log_start_offset or > log_end_offset.
            CorruptLogError: the stored batch at `offset` cannot be whole (a damaged
                segment); logged once per batch, the log stays usable.
            LogCorruptedError: the log data under a valid index is unreadable.
            StorageError: the file system failed the read.
        """
        self._check_usable(read=True)
        log_start, log_end = self.log_start_offset, self.log_end_offset
        if offset < log_start or offset > log_end:
            raise OffsetOutOfRangeError(offset, log_start, log_end)
        if offset == log_end or (max_offset is not None and offset >= max_offset):
            return b""
        try:
            return self._segments.read(offset, max_bytes, max_offset)
        except CorruptLogError as e:
            if (e.path, e.position) not in self._corruptions_reported:
                self._corruptions_reported.add((e.path, e.position))
                _log.error("%s: read at offset %d: %s", self.dir_path, offset, e)
            raise
        except CorruptBatchError as e:
            raise self._poison("index lookup after rebuild", e) from e
        except OSError as e:
            raise StorageError(f"{self.dir_path}: read at offset {offset} failed: {e}") from e

    # ----------------------------------------------------------- epochs

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch: (largest epoch <= `epoch`, its end offset).

        The end offset is the start of the next epoch, or the log end for the
        latest; (-1, -1) when `epoch` precedes every epoch in the log.
        """
        self._check_usable(read=True)
        return self.epoch_cache.end_offset_for_epoch(epoch, self.log_end_offset)

    # ----------------------------------------------------------- time lookup

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """The first offset whose record timestamp is >= `timestamp_ms` (ListOffsets by time).

        Returns:
            (offset, timestamp), or None when every record is older.

        Raises:
            LogCorruptedError: the log data under a rebuilt index is unreadable.
            StorageError: the file system failed the read.
        """
        self._check_usable(read=True)
        try:
            return self._segments.offset_for_timestamp(timestamp_ms, self.log_start_offset)
        except CorruptBatchError as e:
            raise self._poison("time lookup", e) from e
        except OSError as e:
            raise StorageError(f"{self.dir_path}: time lookup failed: {e}") from e

    # ------------------------------------------------------------ truncation

    def truncate_to(self, offset: int) -> None:
        """Drop every batch holding offsets >= `offset` (replication's divergence repair).

        The log end becomes the base offset of the batch holding `offset`
        (equal to `offset` when it is a batch boundary, as replication uses
        it). The cut is fsynced before returning, so a crash cannot bring
        the dropped batches back. Below the log start the log is emptied
        and restarted at `offset`.

        Raises:
            OffsetOutOfRangeError: `offset` is negative.
            LogCorruptedError: a file operation failed; the Log is now poisoned.
        """
        self._check_usable()
        if offset >= self.log_end_offset:
            return
        if offset < 0:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        if offset < self.log_start_offset:
            self.truncate_fully_and_start_at(offset)
            return
        with self._mutation("truncate_to"):
            _bounds.truncate_end(self._segments, self._durability, self.epoch_cache, self.producer_state, offset)

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and restart the empty log at `offset` (Kafka's
        truncateFullyAndStartAt, for a follower far behind the leader's log start).

        Raises:
            OffsetOutOfRangeError: `offset` is negative.
            LogCorruptedError: a file operation failed; the Log is now poisoned.
        """
        self._check_usable()
        if offset < 0:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        with self._mutation("truncate_fully_and_start_at"):
            _bounds.restart_at(self._segments, self._durability, self.epoch_cache, self.producer_state, offset,
                               self._clock())

    # -------------------------------------------------------------- deletion

    def delete_records_before(self, offset: int) -> list[Deletion]:
        """Move the log start to `offset` and delete the segments wholly below it.

        Records below the new log start may still be returned as part of a
        batch that straddles it (Kafka does the same); reads below it raise
        OffsetOutOfRangeError.

        Raises:
            OffsetOutOfRangeError: offset > log_end_offset.
            LogCorruptedError: a file operation failed; the Log is now poisoned.
        """
        self._check_usable()
        if offset > self.log_end_offset:
            raise OffsetOutOfRangeError(offset, self.log_start_offset, self.log_end_offset)
        if offset <= self.log_start_offset:
            return []
        with self._mutation("delete_records_before"):
            now = self._clock()
            _bounds.move_start(self._durability, self.epoch_cache, offset)
            deletions = segments_to_delete(self.segments(), now, -1, -1, log_start_offset=offset)
            self._delete_head(deletions, now)
        return deletions

    def apply_retention(self, *, high_watermark: int | None = None) -> list[Deletion]:
        """Delete whole segments past retention.ms / retention.bytes / the log start.

        The active segment is rolled first when it must go too, so expired
        data does not linger. Only segments wholly below `high_watermark`
        (default: the log end) are eligible. Surviving offsets never change.

        Returns:
            One `Deletion(segment=SegmentInfo, reason)` per deleted segment.

        Raises:
            LogCorruptedError: a file operation failed; the Log is now poisoned.
        """
        with self._mutation("apply_retention"):
            now = self._clock()
            self._segments.purge_deleted(now)
            # cleanup.policy=compact alone keeps every segment the cleaner leaves (Kafka's).
            config = self.config
            retention_bytes, retention_ms = ((config.retention_bytes, config.retention_ms)
                                             if config.delete else (-1, -1))
            deletions = segments_to_delete(
                self.segments(), now, retention_bytes, retention_ms,
                log_start_offset=self.log_start_offset, high_watermark=high_watermark)
            if not deletions:
                return []
            self._delete_head(deletions, now)
        for d in deletions:
            _log.info("%s: deleted segment %d (offsets %d..%d, %d bytes): %s", self.dir_path,
                      d.segment.base_offset, d.segment.base_offset, d.segment.next_offset - 1,
                      d.segment.size_bytes, d.reason)
        return deletions

    def _delete_head(self, deletions: list[Deletion], now: int) -> None:
        _bounds.delete_head(self._segments, self._durability, self.epoch_cache, self.producer_state,
                            deletions, now)

    # ----------------------------------------------------------------- flush

    def flush(self) -> None:
        """fsync everything appended so far and advance the recovery point.

        Raises:
            LogCorruptedError: fsync failed; the Log is now poisoned (nothing is known
                about the page cache after a failed fsync).
        """
        with self._mutation("flush", in_thread=True):
            self._durability.flush_all(self._segments, self._clock())

    @property
    def rolled_segments_unflushed(self) -> int:
        """Segments closed by a roll and not yet fsynced (see `flush_rolled`)."""
        return len(self._durability.unflushed)

    def flush_rolled(self) -> bool:
        """fsync the segments closed by rolls (not the active one); move the recovery point.

        Kafka's background `flushUptoOffsetExclusive(newSegment.baseOffset)`: recovery
        then re-checks only the active segment. Returns whether anything was flushed.

        Raises:
            LogCorruptedError: fsync failed; the Log is now poisoned.
        """
        with self._mutation("flush_rolled", in_thread=True):
            return self._durability.flush_rolled(self._segments)

    def maybe_flush(self) -> bool:
        """Apply flush.ms without an append; returns whether it flushed (raises like `flush`)."""
        self._check_usable(recover=False)
        durability = self._durability
        if durability.unflushed_messages and self._clock() - durability.last_flush_ms >= self.config.flush_ms:
            self.flush()
            return True
        return False

    def close(self) -> None:
        """Flush, record the final max timestamp, write the clean-shutdown marker.

        A poisoned log closes its files without the marker, so the next open
        recovers. Closing twice is allowed.

        Raises:
            LogCorruptedError: the final flush failed (the files are closed anyway).
        """
        if self._closed:
            return
        try:
            if self._poisoned.reason is None:
                with self._mutation("close"):
                    self._segments.active.seal()
                    self._durability.flush_all(self._segments, self._clock())
                    self._segments.purge_deleted(self._clock(), everything=True)
                    self.producer_state.take_snapshot(self.log_end_offset, sync=True,
                                                      keep_from=self._segments.active.base_offset)
                    atomic_write(os.path.join(self.dir_path, CLEAN_SHUTDOWN), b"0\n", fs=self.fs)
        finally:
            self._closed = True
            self._segments.close_fds()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Log {self.dir_path} [{self.log_start_offset}, {self.log_end_offset})>"
