"""The partition log: an ordered list of segments behind one small API.

Rules:

- Offsets are dense and monotonic. `append` assigns `log_end_offset`
  (leader) or checks that the batch continues the log (follower). An
  offset never names two different batches: truncation is fsynced before
  the log end moves back, so a crash cannot resurrect cut batches.
- A batch is written exactly as received except for the 16 stamped bytes
  (base offset, length, leader epoch), outside the CRC. With
  message.timestamp.type=LogAppendTime the broker's time is also stamped
  and the CRC recomputed (Kafka does the same).
- Rejected input changes nothing on disk. A failure half-way through a
  mutation poisons the Log: every later call raises `LogCorrupted` until
  the directory is reopened (and recovered).

Theory of operation: segments hold contiguous offset ranges; the last one
is active and takes appends. Lookups bisect segment base offsets, then the
segment's sparse index, then scan a few KiB of batch headers. A read hands
back whole stored batches with one `pread`, never parsing records. Every
`index.interval.bytes` an index entry is added; a segment rolls on
segment.bytes, segment.ms, a full index or a relative-offset overflow
(`should_roll`). Retention asks the pure `segments_to_delete` policy and
deletes whole segments from the head. `flush` fsyncs and moves the
recovery point; after an unclean shutdown `Log.open` re-checks the log
from the segment holding the recovery point (`_recovery.py`).

Files in the partition directory (docs/on-disk-format.md, "Segments and
indexes")::

    <base>.log / <base>.index / <base>.timeindex   per segment (_segment.py, _index.py)
    log.checkpoint                                recovery point, log start offset
    leader-epoch-checkpoint                       epoch -> start offset (_epoch_cache.py)
    .clean-shutdown                               written by close(), removed by open()
    *.deleted                                     segments waiting file.delete.delay.ms

Task safety: the owner (the broker's partition) serialises calls, with one
exception: `flush()` may run in a worker thread while the owner keeps
calling `append`/`read`/`roll` (the broker's fsync is off the event loop).
That pair is safe: flush snapshots what to fsync under a lock shared with
roll, fsyncs through its own descriptors, and only ever sets the recovery
point to an offset that was written before its snapshot. Any other
concurrency (two appends, truncate during flush, ...) is the owner's bug.

Exception contract: public methods raise only `StorageError` subclasses;
anything else is a bug.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple
from collections.abc import Callable

from minilog.protocol import (
    CRC_START,
    LOG_OVERHEAD,
    TIMESTAMP_TYPE_MASK,
    CorruptBatchError,
    check_batch_fields,
    compute_crc,
    parse_header,
    read_batch_records,
    stamp_batch,
)

from ._checkpoint import CLEAN_SHUTDOWN, atomic_write, fsync_dir, read_log_checkpoint, write_log_checkpoint
from ._config import LONG_MAX, LogConfig
from ._epoch_cache import LeaderEpochCache
from ._errors import (
    CorruptRecord,
    InvalidOffset,
    LogCorrupted,
    OffsetOutOfRange,
    RecordTooLarge,
    StaleLeaderEpoch,
    StorageError,
)
from ._recovery import RecoveryReport, log_cut, recover_segments, scan_directory, scan_segment
from ._retention import Deletion, SegmentInfo, segments_to_delete, should_roll
from ._segment import LogSegment

__all__ = ["Log", "AppendInfo", "LogStatistics", "Clock"]

_log = logging.getLogger("minilog.storage")
Clock = Callable[[], int]
_STAMP_BYTES = 16                 # base offset, batch length, leader epoch: outside the CRC
_READ_FDS_MAX = 64                # closed segments keeping an open read descriptor
NO_TIMESTAMP = -1
_RELATIVE_OFFSET_MAX = 2**32 - 1  # index entries store offsets as u32 relative to the segment


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class AppendInfo(NamedTuple):
    base_offset: int
    last_offset: int
    max_timestamp: int            # ms; the broker's time under LogAppendTime
    log_append_time: int          # ms under LogAppendTime, else -1 (Kafka's NO_TIMESTAMP)
    position: int                 # byte position in the segment (diagnostics)
    segment_base_offset: int


@dataclass(frozen=True)
class LogStatistics:
    log_start_offset: int
    log_end_offset: int
    recovery_point: int
    size_bytes: int
    segment_count: int
    active_segment_base_offset: int
    active_segment_bytes: int
    unflushed_messages: int
    latest_leader_epoch: int
    appends_total: int
    bytes_appended_total: int
    rolls_total: int
    flushes_total: int
    segments_deleted_total: int
    index_rebuilds_total: int


# The LogAppendTime stamp rewrites two CRC-covered header fields. The layout
# is _batch_header's; these positions are pinned by the paired assertion in
# `_stamp_log_append_time` (parse_header must read back what we wrote).
_ATTRIBUTES = struct.Struct(">h")
_ATTRIBUTES_POS = CRC_START                 # attributes are the first CRC-covered field
_MAX_TIMESTAMP = struct.Struct(">q")
_MAX_TIMESTAMP_POS = 35
_CRC = struct.Struct(">I")
_CRC_POS = CRC_START - 4

# The 16 stamped bytes, packed in one go on the append path; the layout is
# protocol's `stamp_batch` (checked once at import, below).
_STAMP = struct.Struct(">qii")              # base offset, batch length, leader epoch
_new_append_info = tuple.__new__            # AppendInfo without its Python-level __new__


def _stamp_layout_matches_protocol() -> bool:
    probe = bytearray(_STAMP.pack(0, 49, 0))
    stamp_batch(probe, 0, 7, 9)
    return bytes(probe) == _STAMP.pack(7, 49, 9)


assert _STAMP.size == _STAMP_BYTES and _stamp_layout_matches_protocol()


def _stamp_log_append_time(buf: bytearray, now_ms: int) -> None:
    header = parse_header(buf)
    _ATTRIBUTES.pack_into(buf, _ATTRIBUTES_POS, header.attributes | TIMESTAMP_TYPE_MASK)
    _MAX_TIMESTAMP.pack_into(buf, _MAX_TIMESTAMP_POS, now_ms)
    _CRC.pack_into(buf, _CRC_POS, compute_crc(buf, 0, header.size))
    after = parse_header(buf)
    assert after.max_timestamp == now_ms and after.attributes & TIMESTAMP_TYPE_MASK
    assert after._replace(max_timestamp=header.max_timestamp, crc=header.crc,
                          attributes=header.attributes) == header


class Log:
    """A partition's log on disk. Build with `Log.open(path, config, clock=...)`."""

    def __init__(self, dir_path: str, config: LogConfig, clock: Clock) -> None:
        self.dir_path = dir_path
        self.config = config
        self._clock = clock
        self._segments: list[LogSegment] = []
        self._bases: list[int] = []
        self._log_start = 0
        self._recovery_point = 0
        self._poisoned: str | None = None
        self._closed = False
        self._unflushed_segments: list[LogSegment] = []
        self._dir_dirty = False
        self._unflushed_messages = 0
        self._last_flush_ms = clock()
        self._read_fds: OrderedDict[int, LogSegment] = OrderedDict()
        self._pending_deletes: list[tuple[int, list[str]]] = []
        self._roll_lock = threading.Lock()          # roll vs a flush in a worker thread
        self._checkpoint_lock = threading.Lock()    # log.checkpoint writers
        self._counters = dict(rolls=0, flushes=0, deleted=0, rebuilds=0)
        self._appends_total = 0
        self._bytes_appended_total = 0
        self.epoch_cache = LeaderEpochCache(dir_path)
        self.last_recovery: RecoveryReport | None = None

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, path: str | os.PathLike, config: LogConfig | None = None, *,
             clock: Clock | None = None) -> Log:
        """Open (creating if needed) the partition log in directory `path`.

        After a clean shutdown only index tails are read. Otherwise the log is
        checked from the segment holding the recovery point and a torn or
        corrupt tail is cut (see `_recovery.py`); `log.last_recovery` tells
        what happened.

        Raises:
            StorageError: the directory cannot be read or written.
        """
        dir_path = os.fspath(path)
        try:
            os.makedirs(dir_path, exist_ok=True)
            log = cls(dir_path, config or LogConfig(), clock or _wall_clock_ms)
            log._load()
        except OSError as e:
            raise StorageError(f"{dir_path}: cannot open log: {e}") from e
        return log

    def _load(self) -> None:
        now = self._clock()
        sizes = scan_directory(self.dir_path)
        marker = os.path.join(self.dir_path, CLEAN_SHUTDOWN)
        clean = marker_found = os.path.exists(marker)
        try:
            checkpoint = read_log_checkpoint(self.dir_path)
        except ValueError as e:
            _log.warning("%s: %s; recovering the whole log", self.dir_path, e)
            checkpoint, clean = None, False
        recovery_point, log_start = checkpoint if checkpoint else (0, 0)
        for base in sorted(sizes):
            self._segments.append(LogSegment.open_existing(
                self.dir_path, base, self.config, size_bytes=sizes[base], now_ms=now))
        if not self._segments:
            self._segments.append(LogSegment.create(self.dir_path, log_start, self.config, now))
            self._dir_dirty = True
            clean = True                      # a brand-new log has nothing to recover
        self._bases = [s.base_offset for s in self._segments]
        for segment, following in zip(self._segments, self._segments[1:]):
            segment.next_offset = following.base_offset
        self._segments, report = recover_segments(
            self.dir_path, self._segments, clean=clean, recovery_point=recovery_point,
            epoch_cache=self.epoch_cache)
        self._bases = [s.base_offset for s in self._segments]
        self._segments[-1].writable_fd()
        self._log_start = min(max(log_start, self._segments[0].base_offset), self.log_end_offset)
        self.epoch_cache.truncate_from_end(self.log_end_offset)
        self.epoch_cache.truncate_from_start(self._log_start)
        if marker_found:
            os.unlink(marker)                 # from now on, a crash is an unclean shutdown
            self._dir_dirty = True
        if clean:
            self._recovery_point = min(max(recovery_point, self._log_start), self.log_end_offset)
            fsync_dir(self.dir_path)
        else:
            self._flush_all()                 # what recovery kept is now the recovery point
        self.last_recovery = report
        log_cut(self.dir_path, report)

    # ------------------------------------------------------------- properties

    @property
    def log_start_offset(self) -> int:
        return self._log_start

    @property
    def log_end_offset(self) -> int:
        """The next offset append will assign."""
        return self._segments[-1].next_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    def segments(self) -> list[SegmentInfo]:
        """A snapshot of every segment, oldest first."""
        return [self._info(s) for s in self._segments]

    def _info(self, segment: LogSegment) -> SegmentInfo:
        return SegmentInfo(segment.base_offset, segment.next_offset, segment.size_bytes,
                           segment.max_timestamp[0], segment is self._segments[-1])

    def statistics(self) -> LogStatistics:
        active = self._segments[-1]
        c = self._counters
        return LogStatistics(
            log_start_offset=self._log_start, log_end_offset=self.log_end_offset,
            recovery_point=self._recovery_point, size_bytes=self.size_bytes,
            segment_count=len(self._segments), active_segment_base_offset=active.base_offset,
            active_segment_bytes=active.size_bytes, unflushed_messages=self._unflushed_messages,
            latest_leader_epoch=self.epoch_cache.latest_epoch, appends_total=self._appends_total,
            bytes_appended_total=self._bytes_appended_total, rolls_total=c["rolls"], flushes_total=c["flushes"],
            segments_deleted_total=c["deleted"], index_rebuilds_total=c["rebuilds"])

    # ----------------------------------------------------------- error state

    def _check_usable(self) -> None:
        if self._poisoned is not None:
            raise LogCorrupted(f"{self.dir_path}: {self._poisoned}; reopen the log to recover")
        if self._closed:
            raise StorageError(f"{self.dir_path}: log is closed")

    def _poison(self, what: str, error: BaseException) -> LogCorrupted:
        self._poisoned = f"{what} failed half-way ({error})"
        _log.error("%s: %s", self.dir_path, self._poisoned)
        return LogCorrupted(f"{self.dir_path}: {self._poisoned}; reopen the log to recover")

    # ----------------------------------------------------------------- append

    def append(self, batch, *, leader_epoch: int = 0, assign_offsets: bool = True) -> AppendInfo:
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

        Returns:
            AppendInfo with the offsets the batch now has.

        Raises:
            RecordTooLarge: larger than max.message.bytes (nothing written).
            CorruptRecord: not exactly one valid batch (nothing written).
            InvalidOffset: follower batch does not continue the log (nothing written).
            StaleLeaderEpoch: epoch older than the log's latest (nothing written).
            LogCorrupted: the write failed; the Log is now poisoned.
        """
        # Hot path: every batch a producer sends. Every check below runs
        # before the write, on locals: one header check (one unpack and the
        # CRC), the 16 stamped bytes packed in one go, the common "no roll"
        # answer inline, the clock read only when something needs it, no
        # intermediate objects (perf/bench_storage.py --profile append).
        if self._poisoned is not None or self._closed:
            self._check_usable()
        view = memoryview(batch)
        if not isinstance(batch, (bytes, bytearray)) and (view.format != "B" or view.ndim != 1):
            view = view.cast("B")
        size = len(view)
        config = self.config
        if size > config.max_message_bytes:
            raise RecordTooLarge(f"batch of {size} bytes exceeds max.message.bytes "
                                 f"{config.max_message_bytes}")
        try:
            (stored_base_offset, batch_length, stored_epoch, _magic, _crc, _attributes, last_offset_delta,
             _base_timestamp, max_timestamp, _producer_id, _producer_epoch, _base_sequence,
             records_count) = check_batch_fields(view, 0)
        except CorruptBatchError as e:
            raise CorruptRecord(str(e)) from e
        if batch_length + LOG_OVERHEAD != size:
            raise CorruptRecord(f"{size - batch_length - LOG_OVERHEAD} bytes after the batch: "
                                "append takes one batch")
        active = self._segments[-1]
        log_end = active.next_offset
        if assign_offsets:
            base_offset, epoch = log_end, leader_epoch
        else:
            base_offset, epoch = stored_base_offset, stored_epoch
            if base_offset != log_end:
                raise InvalidOffset(f"batch starts at {base_offset}, log ends at {log_end}")
        epoch_cache = self.epoch_cache
        latest_epoch = epoch_cache.latest_epoch
        if epoch < latest_epoch:
            raise StaleLeaderEpoch(f"leader epoch {epoch} is older than {latest_epoch}")
        next_offset = base_offset + last_offset_delta + 1
        # The clock is needed by LogAppendTime, by flush.ms, and by segment.ms
        # when the segment's first batch had no timestamp (timeWaitedForRoll).
        stamp_time = assign_offsets and config.message_timestamp_type == "LogAppendTime"
        first_timestamp = active.first_batch_timestamp_ms
        now = None
        if stamp_time or config.flush_ms != LONG_MAX or first_timestamp is None or first_timestamp < 0:
            now = self._clock()
        if stamp_time:
            copy = bytearray(view)
            stamp_batch(copy, 0, base_offset, epoch)
            _stamp_log_append_time(copy, now)
            parts, max_timestamp, append_time = [copy], now, now
        else:
            parts, append_time = [_STAMP.pack(base_offset, batch_length, epoch), view[_STAMP_BYTES:]], NO_TIMESTAMP
        waited_ms = max_timestamp - first_timestamp if now is None else active.time_waited_for_roll_ms(
            now, max_timestamp)
        try:
            if not (active.size_bytes + size <= config.segment_bytes and waited_ms <= config.segment_ms
                    and active.index_room > 0 and next_offset - 1 - active.base_offset <= _RELATIVE_OFFSET_MAX):
                # Not the common "no roll" answer: ask the policy (should_roll).
                active = self._maybe_roll(size, self._clock() if now is None else now, max_timestamp,
                                          next_offset - 1)
            position = active.append(parts, size, base_offset, next_offset, max_timestamp)
            if epoch > latest_epoch:
                epoch_cache.assign(epoch, base_offset)
        except OSError as e:
            raise self._poison("append", e) from e
        self._appends_total += 1
        self._bytes_appended_total += size
        unflushed = self._unflushed_messages = self._unflushed_messages + records_count
        if unflushed >= config.flush_messages or (now is not None and now - self._last_flush_ms >= config.flush_ms):
            self.flush()
        return _new_append_info(AppendInfo, (base_offset, next_offset - 1, max_timestamp, append_time,
                                             position, active.base_offset))

    def _maybe_roll(self, batch_size: int, now: int, batch_max_timestamp: int,
                    last_offset: int) -> LogSegment:
        active = self._segments[-1]
        config = self.config
        waited_ms = active.time_waited_for_roll_ms(now, batch_max_timestamp)
        # Fast path, every append: the common "no roll" answer of should_roll,
        # checked inline (a subset of its None case, so never a wrong answer).
        if (active.size_bytes + batch_size <= config.segment_bytes
                and waited_ms <= config.segment_ms
                and active.index_room > 0
                and last_offset - active.base_offset <= _RELATIVE_OFFSET_MAX):
            return active
        reason = should_roll(
            segment_size_bytes=active.size_bytes, batch_size_bytes=batch_size,
            segment_bytes=config.segment_bytes, waited_ms=waited_ms, segment_ms=config.segment_ms,
            index_full=active.index.is_full or active.time_index.is_full,
            relative_last_offset=last_offset - active.base_offset)
        if reason is None:
            return active
        _log.debug("%s: rolling segment %d (%s)", self.dir_path, active.base_offset, reason)
        return self._roll(now)

    def roll(self) -> None:
        """Close the active segment and start a new one at the log end (no-op when empty).

        Raises:
            LogCorrupted: a file operation failed; the Log is now poisoned.
        """
        self._check_usable()
        try:
            self._roll(self._clock())
        except OSError as e:
            raise self._poison("roll", e) from e

    def _roll(self, now: int) -> LogSegment:
        active = self._segments[-1]
        if active.size_bytes == 0:
            return active
        active.seal()
        segment = LogSegment.create(self.dir_path, active.next_offset, self.config, now)
        with self._roll_lock:
            self._unflushed_segments.append(active)
            self._segments.append(segment)
            self._bases.append(segment.base_offset)
            self._dir_dirty = True
        self._counters["rolls"] += 1
        self._remember_fd(active)
        return segment

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
            OffsetOutOfRange: offset < log_start_offset or > log_end_offset.
            LogCorrupted: the log data under a valid index is unreadable.
        """
        self._check_usable()
        log_end = self.log_end_offset
        if offset < self._log_start or offset > log_end:
            raise OffsetOutOfRange(offset, self._log_start, log_end)
        if offset == log_end or (max_offset is not None and offset >= max_offset):
            return b""
        try:
            return self._read(offset, max_bytes, max_offset)
        except OSError as e:
            raise StorageError(f"{self.dir_path}: read at offset {offset} failed: {e}") from e

    def _read(self, offset: int, max_bytes: int, max_offset: int | None) -> bytes:
        i = bisect_right(self._bases, offset) - 1
        for segment in self._segments[max(i, 0):]:
            found = self._with_index(segment, lambda s: s.find_batch(offset))
            if found is not None:
                break
        else:
            return b""
        position, header = found
        if max_offset is not None and header.base_offset >= max_offset:
            return b""
        limit = segment.size_bytes
        if max_offset is not None and max_offset < segment.next_offset:
            limit = self._with_index(segment, lambda s: s.position_of(max_offset))
        budget_end = min(limit, position + max(max_bytes, 0))
        end = self._with_index(segment, lambda s: s.boundary_at_or_before(position, budget_end))
        if end == position:
            end = position + header.size       # at least one whole batch
        data = segment.read(position, end - position)
        self._remember_fd(segment)
        return data

    def _with_index(self, segment: LogSegment, lookup):
        """Run an index-driven lookup; on a bad index, rebuild it and retry once."""
        if not segment.index_checked:
            problem = segment.check_indexes(active=segment is self._segments[-1])
            if problem is not None:
                self._rebuild_indexes(segment, problem)
        try:
            return lookup(segment)
        except CorruptBatchError as e:
            self._rebuild_indexes(segment, str(e))
        try:
            return lookup(segment)
        except CorruptBatchError as e:
            raise self._poison("index lookup after rebuild", e) from e

    def _rebuild_indexes(self, segment: LogSegment, problem: str) -> None:
        _log.warning("%s: rebuilding indexes of segment %d: %s", self.dir_path, segment.base_offset, problem)
        expected_next, size = segment.next_offset, segment.size_bytes
        try:
            scan = scan_segment(segment, size, self.epoch_cache)
            if scan.valid_bytes != size or segment.next_offset != expected_next:
                raise self._poison("index rebuild", CorruptBatchError(
                    f"segment {segment.base_offset} holds a bad batch at {scan.valid_bytes}: {scan.detail}"))
            if segment is not self._segments[-1]:
                segment.seal()
            segment.index.rewrite()
            segment.time_index.rewrite()
        except OSError as e:
            raise self._poison("index rebuild", e) from e
        self._counters["rebuilds"] += 1

    def _remember_fd(self, segment: LogSegment) -> None:
        """Bound the number of open descriptors of closed segments (LRU)."""
        if segment is self._segments[-1]:
            return
        fds = self._read_fds
        fds[segment.base_offset] = segment
        fds.move_to_end(segment.base_offset)
        while len(fds) > _READ_FDS_MAX:
            _, old = fds.popitem(last=False)
            if old is not self._segments[-1]:
                old.close_fd()

    # ----------------------------------------------------------- epochs

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch: (largest epoch <= `epoch`, its end offset).

        The end offset is the start of the next epoch, or the log end for the
        latest; (-1, -1) when `epoch` precedes every epoch in the log.
        """
        self._check_usable()
        return self.epoch_cache.end_offset_for_epoch(epoch, self.log_end_offset)

    # ----------------------------------------------------------- time lookup

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """The first offset whose record timestamp is >= `timestamp_ms`.

        Finds the first segment whose max timestamp reaches the target, then
        the time index entry below it, then scans batch headers; only that
        one batch's records are decoded to pick the exact record.

        Returns:
            (offset, timestamp), or None when every record is older.
        """
        self._check_usable()
        try:
            for segment in self._segments:
                if segment.next_offset <= self._log_start or segment.size_bytes == 0:
                    continue
                if segment.max_timestamp[0] >= timestamp_ms:
                    return self._with_index(segment, lambda s: self._time_lookup(s, timestamp_ms))
        except OSError as e:
            raise StorageError(f"{self.dir_path}: time lookup failed: {e}") from e
        return None

    def _time_lookup(self, segment: LogSegment, timestamp_ms: int) -> tuple[int, int] | None:
        below = segment.time_index.last_below(timestamp_ms)
        start = segment.index.lookup(below.offset if below else segment.base_offset)
        for position, header in segment.iter_headers(start.position, segment.size_bytes):
            if header.max_timestamp < timestamp_ms or header.next_offset <= self._log_start:
                continue
            batch = segment.read(position, header.size)
            try:
                for record in read_batch_records(batch, verify_crc=True):
                    if record.timestamp >= timestamp_ms and record.offset >= self._log_start:
                        return record.offset, record.timestamp
            except CorruptBatchError as e:
                _log.warning("%s: cannot decode batch at offset %d: %s", self.dir_path,
                             header.base_offset, e)
            return max(header.base_offset, self._log_start), header.max_timestamp
        return None

    # ------------------------------------------------------------ truncation

    def truncate_to(self, offset: int) -> None:
        """Drop every batch holding offsets >= `offset` (replication's divergence repair).

        The log end becomes the base offset of the batch holding `offset`
        (equal to `offset` when it is a batch boundary, as replication uses
        it). The cut is fsynced before returning, so a crash cannot bring
        the dropped batches back. Below the log start the log is emptied
        and restarted at `offset`.

        Raises:
            LogCorrupted: a file operation failed; the Log is now poisoned.
        """
        self._check_usable()
        if offset >= self.log_end_offset:
            return
        if offset < 0:
            raise OffsetOutOfRange(offset, self._log_start, self.log_end_offset)
        if offset < self._log_start:
            self.truncate_fully_and_start_at(offset)
            return
        try:
            i = bisect_right(self._bases, offset) - 1
            for segment in reversed(self._segments[i + 1:]):
                self._delete_segment(segment, rename=False)
            del self._segments[i + 1:]
            del self._bases[i + 1:]
            segment = self._segments[-1]
            found = self._with_index(segment, lambda s: s.find_batch(offset))
            if found is not None:
                position, header = found
                segment.truncate_to_position(position)
                os.fsync(segment.writable_fd())
                segment.restore_after_truncate(header.base_offset)
                segment.index.flush(fsync=True)
                segment.time_index.flush(fsync=True)
            self._read_fds.pop(segment.base_offset, None)
            segment.writable_fd()
            self._unflushed_segments = [s for s in self._unflushed_segments if s in self._segments[:-1]]
            fsync_dir(self.dir_path)
            self.epoch_cache.truncate_from_end(self.log_end_offset)
            self._recovery_point = min(self._recovery_point, self.log_end_offset)
            with self._checkpoint_lock:
                write_log_checkpoint(self.dir_path, self._recovery_point, self._log_start)
        except (OSError, CorruptBatchError) as e:
            raise self._poison("truncate_to", e) from e

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Delete every segment and restart the empty log at `offset` (Kafka's
        truncateFullyAndStartAt, for a follower far behind the leader's log start)."""
        self._check_usable()
        if offset < 0:
            raise OffsetOutOfRange(offset, self._log_start, self.log_end_offset)
        try:
            for segment in reversed(self._segments):
                self._delete_segment(segment, rename=False)
            self._segments = [LogSegment.create(self.dir_path, offset, self.config, self._clock())]
            self._bases = [offset]
            self._unflushed_segments = []
            self._log_start = self._recovery_point = offset
            fsync_dir(self.dir_path)
            self.epoch_cache.clear()
            with self._checkpoint_lock:
                write_log_checkpoint(self.dir_path, self._recovery_point, self._log_start)
        except OSError as e:
            raise self._poison("truncate_fully_and_start_at", e) from e

    # -------------------------------------------------------------- deletion

    def delete_records_before(self, offset: int) -> list[Deletion]:
        """Move the log start to `offset` and delete the segments wholly below it.

        Records below the new log start may still be returned as part of a
        batch that straddles it (Kafka does the same); reads below it raise
        OffsetOutOfRange.

        Raises:
            OffsetOutOfRange: offset > log_end_offset.
            LogCorrupted: a file operation failed; the Log is now poisoned.
        """
        self._check_usable()
        if offset > self.log_end_offset:
            raise OffsetOutOfRange(offset, self._log_start, self.log_end_offset)
        if offset <= self._log_start:
            return []
        try:
            self._log_start = offset
            self.epoch_cache.truncate_from_start(offset)
            deletions = segments_to_delete(self.segments(), self._clock(), -1, -1,
                                           log_start_offset=offset)
            self._delete_head(deletions)
            self._recovery_point = max(self._recovery_point, self._log_start)
            with self._checkpoint_lock:
                write_log_checkpoint(self.dir_path, min(self._recovery_point, self.log_end_offset),
                                     self._log_start)
        except OSError as e:
            raise self._poison("delete_records_before", e) from e
        return deletions

    def apply_retention(self, *, high_watermark: int | None = None) -> list[Deletion]:
        """Delete whole segments past retention.ms / retention.bytes / the log start.

        The active segment is rolled first when it must go too, so expired
        data does not linger. Only segments wholly below `high_watermark`
        (default: the log end) are eligible. Surviving offsets never change.

        Returns:
            One `Deletion(segment=SegmentInfo, reason)` per deleted segment.

        Raises:
            LogCorrupted: a file operation failed; the Log is now poisoned.
        """
        self._check_usable()
        now = self._clock()
        try:
            self._purge_deleted(now)
            deletions = segments_to_delete(
                self.segments(), now, self.config.retention_bytes, self.config.retention_ms,
                log_start_offset=self._log_start, high_watermark=high_watermark)
            if not deletions:
                return []
            self._delete_head(deletions)
            if self._segments[0].base_offset > self._log_start:
                self._log_start = self._segments[0].base_offset
                self.epoch_cache.truncate_from_start(self._log_start)
            self._recovery_point = max(self._recovery_point, self._log_start)
            with self._checkpoint_lock:
                write_log_checkpoint(self.dir_path, min(self._recovery_point, self.log_end_offset),
                                     self._log_start)
        except OSError as e:
            raise self._poison("apply_retention", e) from e
        for d in deletions:
            _log.info("%s: deleted segment %d (offsets %d..%d, %d bytes): %s", self.dir_path,
                      d.segment.base_offset, d.segment.base_offset, d.segment.next_offset - 1,
                      d.segment.size_bytes, d.reason)
        return deletions

    def _delete_head(self, deletions: list[Deletion]) -> None:
        """Delete the first len(deletions) segments, rolling first if that takes the active one."""
        count = len(deletions)
        if count == 0:
            return
        assert [d.segment.base_offset for d in deletions] == self._bases[:count]
        if count == len(self._segments):
            self._roll(self._clock())
        for segment in self._segments[:count]:
            self._delete_segment(segment, rename=self.config.file_delete_delay_ms > 0)
        del self._segments[:count]
        del self._bases[:count]
        self._unflushed_segments = [s for s in self._unflushed_segments if s in self._segments]
        self._counters["deleted"] += count

    def _delete_segment(self, segment: LogSegment, *, rename: bool) -> None:
        self._read_fds.pop(segment.base_offset, None)
        renamed = segment.delete_files(rename_only=rename)
        if renamed:
            self._pending_deletes.append((self._clock() + self.config.file_delete_delay_ms, renamed))
        self._dir_dirty = True

    def _purge_deleted(self, now: int, *, everything: bool = False) -> None:
        keep = []
        for due, paths in self._pending_deletes:
            if everything or due <= now:
                for path in paths:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
            else:
                keep.append((due, paths))
        self._pending_deletes = keep

    # ----------------------------------------------------------------- flush

    def flush(self) -> None:
        """fsync everything appended so far and advance the recovery point.

        Raises:
            LogCorrupted: fsync failed; the Log is now poisoned (as after a
                failed fsync nothing is known about the page cache).
        """
        self._check_usable()
        try:
            self._flush_all()
        except OSError as e:
            raise self._poison("flush", e) from e

    @property
    def rolled_segments_unflushed(self) -> int:
        """Segments closed by a roll and not yet fsynced (see `flush_rolled`)."""
        return len(self._unflushed_segments)

    def flush_rolled(self) -> bool:
        """fsync the segments closed by rolls and move the recovery point to their end.

        Kafka flushes a rolled segment in the background (`flushUptoOffsetExclusive(
        newSegment.baseOffset)`) even with flush.messages/flush.ms at "never",
        so after a crash recovery re-checks only the active segment. The
        broker calls this in a worker thread when `rolled_segments_unflushed`
        is non-zero. The active segment is not fsynced.

        Returns:
            Whether anything was flushed.

        Raises:
            LogCorrupted: fsync failed; the Log is now poisoned.
        """
        self._check_usable()
        with self._roll_lock:
            segments, self._unflushed_segments = self._unflushed_segments, []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        if not segments:
            if dir_dirty:
                self._dir_dirty = True
            return False
        try:
            for segment in segments:
                segment.flush(fsync=True)
            if dir_dirty:
                fsync_dir(self.dir_path)
            with self._checkpoint_lock:
                end = segments[-1].next_offset
                self._recovery_point = min(max(self._recovery_point, end), self.log_end_offset)
                write_log_checkpoint(self.dir_path, self._recovery_point, self._log_start)
        except OSError as e:
            raise self._poison("flush_rolled", e) from e
        return True

    def maybe_flush(self) -> bool:
        """Apply the flush.ms policy without an append (the broker's periodic flusher).

        Returns whether it flushed. Raises LogCorrupted like `flush`.
        """
        self._check_usable()
        if self._unflushed_messages and self._clock() - self._last_flush_ms >= self.config.flush_ms:
            self.flush()
            return True
        return False

    def _flush_all(self) -> None:
        # Snapshot under the roll lock: every offset below `end` lives in one of
        # `segments`, and the directory entries of those segments are covered
        # by `dir_dirty`. Appends may continue while we fsync (worker thread).
        with self._roll_lock:
            end = self.log_end_offset
            segments = [*self._unflushed_segments, self._segments[-1]]
            self._unflushed_segments = []
            dir_dirty, self._dir_dirty = self._dir_dirty, False
        self._unflushed_messages = 0
        for segment in segments:
            segment.flush(fsync=True)
        if dir_dirty:
            fsync_dir(self.dir_path)
        with self._checkpoint_lock:
            self._recovery_point = min(max(self._recovery_point, end), self.log_end_offset)
            write_log_checkpoint(self.dir_path, self._recovery_point, self._log_start)
        self._last_flush_ms = self._clock()
        self._counters["flushes"] += 1

    def close(self) -> None:
        """Flush, record the final max timestamp, write the clean-shutdown marker.

        A poisoned log closes its files without the marker, so the next open
        recovers. Closing twice is allowed.
        """
        if self._closed:
            return
        try:
            if self._poisoned is None:
                self._segments[-1].seal()
                self._flush_all()
                self._purge_deleted(self._clock(), everything=True)
                atomic_write(os.path.join(self.dir_path, CLEAN_SHUTDOWN), b"0\n")
        except OSError as e:
            raise self._poison("close", e) from e
        finally:
            self._closed = True
            for segment in self._segments:
                segment.close_fd()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<Log {self.dir_path} [{self._log_start}, {self.log_end_offset}) "
                f"{len(self._segments)} segments>")
