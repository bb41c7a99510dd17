"""The segment list of one partition: lookup by offset, roll, truncate, delete.

Rules:

- Segments hold contiguous, dense offset ranges, oldest first; the last
  one is active and takes appends. `bases` mirrors the base offsets for
  bisecting. Nothing else in storage/ edits the list.
- Every change of directory entries (a segment created, renamed, deleted)
  marks `Durability.dir_dirty`, so the next flush fsyncs the directory.
- Index lookups go through `with_index`: a sparse index that fails its
  sanity check or points into the middle of a batch is rebuilt from the
  log once and the lookup retried (Kafka's `LogSegment.sanityCheck` +
  `recover`). A rebuild that finds a bad batch raises `CorruptBatchError`;
  the Log poisons itself on it.
- Closed segments keep at most `READ_FDS_MAX` read descriptors open (LRU).

Theory of operation (Kafka `LogSegments` / `LocalLog`): this class is the
mechanics; the Log (`_log.py`) decides when to roll, truncate and delete,
checks arguments, and guards every mutation (a failure half-way poisons
the Log).

Error handling: methods raise `OSError` from the file system and
`CorruptBatchError` for unreadable log data; nothing is wrapped here.
Task safety: owner thread only, except that `roll` publishes the new
segment under `Durability.lock` for a concurrent flush (see _durability.py).
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TypeVar

from minilog.protocol import BatchHeader, CorruptBatchError, read_batch_records

from ._config import LogConfig
from ._durability import Durability
from ._epoch_cache import LeaderEpochCache
from ._fs import FileSystem
from ._recovery import scan_segment
from ._segment import LogSegment

__all__ = ["LogSegments", "READ_FDS_MAX"]

_log = logging.getLogger("minilog.storage")
READ_FDS_MAX = 64                 # closed segments keeping an open read descriptor
T = TypeVar("T")


class LogSegments:
    """The ordered segments of a partition directory and the operations on the list."""

    def __init__(self, dir_path: str, config: LogConfig, fs: FileSystem, durability: Durability,
                 epoch_cache: LeaderEpochCache) -> None:
        self.dir_path = dir_path
        self.config = config
        self.fs = fs
        self.durability = durability
        self.epoch_cache = epoch_cache
        self.segments: list[LogSegment] = []
        self.bases: list[int] = []
        self._read_fds: OrderedDict[int, LogSegment] = OrderedDict()
        self._pending_deletes: list[tuple[int, list[str]]] = []    # (due ms, renamed paths)
        self.on_roll: Callable[[int], None] | None = None    # called with the new segment's base
        self.rolls_total = 0
        self.deleted_total = 0
        self.index_rebuilds_total = 0

    def replace(self, segments: list[LogSegment]) -> None:
        """Take `segments` (oldest first, non-empty) as the whole list."""
        assert segments
        self.segments = segments
        self.bases = [s.base_offset for s in segments]

    # -- queries ---------------------------------------------------------------

    @property
    def active(self) -> LogSegment:
        return self.segments[-1]

    @property
    def log_end_offset(self) -> int:
        return self.segments[-1].next_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size_bytes for s in self.segments)

    def __len__(self) -> int:
        return len(self.segments)

    def __iter__(self) -> Iterator[LogSegment]:
        return iter(self.segments)

    def floor(self, offset: int) -> int:
        """Index of the segment whose range holds `offset` (0 below the first base)."""
        return max(bisect_right(self.bases, offset) - 1, 0)

    def find_batch(self, offset: int) -> tuple[LogSegment, int, BatchHeader] | None:
        """(segment, position, header) of the batch holding `offset` or the first after it."""
        for segment in self.segments[self.floor(offset):]:
            found = self.with_index(segment, lambda s: s.find_batch(offset))
            if found is not None:
                return segment, found[0], found[1]
        return None

    def read(self, offset: int, max_bytes: int, max_offset: int | None) -> bytes:
        """Whole batches from the one holding `offset`, within one segment, up to `max_bytes`
        (at least one batch) and below `max_offset`; b"" when there is none.

        The first batch is checked whole before it is handed out (`LogSegment.check_whole`).
        """
        found = self.find_batch(offset)
        if found is None:
            return b""
        segment, position, header = found
        if max_offset is not None and header.base_offset >= max_offset:
            return b""
        segment.check_whole(position, header)     # never hand out an unusable first batch
        limit = segment.size_bytes
        if max_offset is not None and max_offset < segment.next_offset:
            limit = self.with_index(segment, lambda s: s.position_of(max_offset))
        budget_end = min(limit, position + max(max_bytes, 0))
        end = self.with_index(segment, lambda s: s.boundary_at_or_before(position, budget_end))
        if end == position:
            end = position + header.size       # at least one whole batch
        data = segment.read(position, end - position)
        self.remember_fd(segment)
        return data

    def offset_for_timestamp(self, timestamp_ms: int, log_start: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after `log_start` with timestamp >=
        `timestamp_ms`, or None.

        Finds the first segment whose max timestamp reaches the target, then
        the time index entry below it, then scans batch headers; only that
        one batch's records are decoded to pick the exact record.
        """
        for segment in self.segments:
            if segment.next_offset <= log_start or segment.size_bytes == 0:
                continue
            if segment.max_timestamp[0] >= timestamp_ms:
                return self.with_index(segment, lambda s: self._time_lookup(s, timestamp_ms, log_start))
        return None

    def _time_lookup(self, segment: LogSegment, timestamp_ms: int, log_start: int) -> tuple[int, int] | None:
        below = segment.time_index.last_below(timestamp_ms)
        start = segment.index.lookup(below.offset if below else segment.base_offset)
        for position, header in segment.iter_headers(start.position, segment.size_bytes):
            if header.max_timestamp < timestamp_ms or header.next_offset <= log_start:
                continue
            batch = segment.read(position, header.size)
            try:
                for record in read_batch_records(batch, verify_crc=True):
                    if record.timestamp >= timestamp_ms and record.offset >= log_start:
                        return record.offset, record.timestamp
            except CorruptBatchError as e:
                _log.warning("%s: cannot decode batch at offset %d: %s", self.dir_path,
                             header.base_offset, e)
            return max(header.base_offset, log_start), header.max_timestamp
        return None

    # -- index-driven lookups ----------------------------------------------------

    def with_index(self, segment: LogSegment, lookup: Callable[[LogSegment], T]) -> T:
        """Run an index-driven lookup; on a bad index, rebuild it and retry once.

        Raises:
            CorruptBatchError: the log data itself is bad (the rebuild found a
                bad batch, or the lookup fails again after the rebuild).
            OSError: from the file system.
        """
        if not segment.index_checked:
            problem = segment.check_indexes(active=segment is self.segments[-1])
            if problem is not None:
                self._rebuild_indexes(segment, problem)
        try:
            return lookup(segment)
        except CorruptBatchError as e:
            self._rebuild_indexes(segment, str(e))
        return lookup(segment)

    def _rebuild_indexes(self, segment: LogSegment, problem: str) -> None:
        _log.warning("%s: rebuilding indexes of segment %d: %s", self.dir_path, segment.base_offset,
                     problem)
        expected_next, size = segment.next_offset, segment.size_bytes
        try:
            scan = scan_segment(segment, size, self.epoch_cache)
        except OSError as e:        # the segment's tracking is half rebuilt: as bad as corrupt
            raise CorruptBatchError(f"segment {segment.base_offset}: index rebuild failed: {e}") from e
        # A compacted segment may end before the next one starts (an offset gap).
        if scan.valid_bytes != size or segment.next_offset > expected_next:
            raise CorruptBatchError(
                f"segment {segment.base_offset} holds a bad batch at {scan.valid_bytes}: {scan.detail}")
        segment.next_offset = expected_next
        if segment is not self.segments[-1]:
            segment.seal()
        segment.index.rewrite()
        segment.time_index.rewrite()
        self.index_rebuilds_total += 1

    def remember_fd(self, segment: LogSegment) -> None:
        """Bound the number of open descriptors of closed segments (LRU)."""
        if segment is self.segments[-1]:
            return
        fds = self._read_fds
        fds[segment.base_offset] = segment
        fds.move_to_end(segment.base_offset)
        while len(fds) > READ_FDS_MAX:
            _, old = fds.popitem(last=False)
            if old is not self.segments[-1]:
                old.close_fd()

    # -- changes ---------------------------------------------------------------

    def roll(self, now_ms: int) -> LogSegment:
        """Close the active segment and start a new one at the log end (no-op when empty)."""
        active = self.segments[-1]
        if active.size_bytes == 0:
            return active
        active.seal()
        segment = LogSegment.create(self.dir_path, active.next_offset, self.config, now_ms, fs=self.fs)
        durability = self.durability
        with durability.lock:
            durability.unflushed.append(active)
            self.segments.append(segment)
            self.bases.append(segment.base_offset)
            durability.dir_dirty = True
        self.rolls_total += 1
        self.remember_fd(active)
        if self.on_roll is not None:
            self.on_roll(segment.base_offset)
        return segment

    def truncate_to(self, offset: int) -> None:
        """Drop every batch holding offsets >= `offset`; fsync the cut.

        `offset` lies in [first base offset, log end). The log end becomes the
        base offset of the batch holding `offset`.
        """
        i = self.floor(offset)
        for segment in reversed(self.segments[i + 1:]):
            self.delete_segment(segment, rename=False)
        del self.segments[i + 1:]
        del self.bases[i + 1:]
        segment = self.segments[-1]
        found = self.with_index(segment, lambda s: s.find_batch(offset))
        if found is not None:
            position, header = found
            segment.truncate_to_position(position)
            self.fs.fsync(segment.writable_fd())
            segment.restore_after_truncate(header.base_offset)
            segment.index.flush(fsync=True)
            segment.time_index.flush(fsync=True)
        self._read_fds.pop(segment.base_offset, None)
        segment.writable_fd()
        self.durability.forget_removed(self.segments[:-1])
        self.fs.fsync_dir(self.dir_path)

    def restart_at(self, offset: int, now_ms: int) -> None:
        """Delete every segment and start one empty segment at `offset`; fsync the directory."""
        for segment in reversed(self.segments):
            self.delete_segment(segment, rename=False)
        self.replace([LogSegment.create(self.dir_path, offset, self.config, now_ms, fs=self.fs)])
        self.durability.forget_removed([])
        self.fs.fsync_dir(self.dir_path)

    def delete_head(self, count: int, now_ms: int) -> None:
        """Delete the first `count` segments, rolling first if that takes the active one."""
        if count == 0:
            return
        if count == len(self.segments):
            self.roll(now_ms)
        for segment in self.segments[:count]:
            self.delete_segment(segment, rename=self.config.file_delete_delay_ms > 0, now_ms=now_ms)
        del self.segments[:count]
        del self.bases[:count]
        self.durability.forget_removed(self.segments)
        self.deleted_total += count

    def delete_segment(self, segment: LogSegment, *, rename: bool, now_ms: int = 0) -> None:
        """Unlink a segment's files, or rename them to `*.deleted` for file.delete.delay.ms."""
        self._read_fds.pop(segment.base_offset, None)
        renamed = segment.delete_files(rename_only=rename)
        if renamed:
            self._pending_deletes.append((now_ms + self.config.file_delete_delay_ms, renamed))
        self.durability.dir_dirty = True

    def purge_deleted(self, now_ms: int, *, everything: bool = False) -> None:
        """Unlink `*.deleted` files whose delay has passed (all of them with `everything`)."""
        keep = []
        for due, paths in self._pending_deletes:
            if everything or due <= now_ms:
                for path in paths:
                    try:
                        self.fs.unlink(path)
                    except FileNotFoundError:
                        pass
            else:
                keep.append((due, paths))
        self._pending_deletes = keep

    def close_fds(self) -> None:
        for segment in self.segments:
            segment.close_fd()
