"""The log cleaner: compaction of one log, one pass at a time (Kafka's `LogCleaner.Cleaner`).

Rules:

- For each key at least the latest record survives, and surviving records
  keep their offset, timestamp, key, value and headers, inside RecordBatch
  v2 batches (`_cleaner_records.py` decides per batch). Offsets never
  change; consumers see gaps.
- Only closed segments below the first uncleanable offset are rewritten
  (`_cleaner_policy.py`): never the active segment, never data above the
  high watermark or the recovery point.
- A cleaned segment is written to new files and swapped in atomically
  (`_cleaner_swap.py`); the original is never modified in place.
- Synchronous and deterministic: time comes from the injected clock, the
  throttle sleeps through the injected `sleep`. No trio: the broker runs
  `clean_snapshot` in a worker thread and the swap on the log's owner thread.

Theory of operation, one pass over a log:

1. Snapshot the log's segments (owner thread) and split it into clean,
   dirty and uncleanable sections (`cleanable_range`).
2. Build the offset map over the dirty section, batch by batch, until the
   section ends or the map is full (`OffsetMap`); the pass then cleans up
   to the end of what was mapped, and the next pass starts there.
3. Find each producer id's last batch (a header scan of the whole log), so
   cleaning keeps it (as an empty batch if need be) and idempotence survives.
4. For each closed segment from the log start up to the mapped end: read
   its batches, write the survivors to `B.*.cleaned` with fresh indexes;
   when nothing changed, delete the copy; otherwise swap it in (through the
   `swap` callback, which the broker runs on the event loop).
5. Write the cleaner checkpoint: the mapped end is the next first dirty offset.

Reads and writes are counted against `log.cleaner.io.max.bytes.per.second`
(`Throttler`). `abort()` is polled between batches so a closing broker
stops a pass promptly (`CleanerAborted`).

Error handling: `clean_snapshot` raises `CleanerAborted`, `CorruptBatchError`
for a batch it cannot decode and `OSError` from the file system; the
broker marks the partition uncleanable on anything but `CleanerAborted`.
Left-over `.cleaned` files are deleted on error.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from minilog.protocol import HEADER_SIZE, BatchHeader, CorruptBatchError, decode_records, iter_batches, parse_header

from ._cleaner_policy import Cleanable, CleanableSegment, cleanable_range
from ._cleaner_records import DROP, KEEP, FilterContext, filter_batch
from ._cleaner_files import (
    CLEANED_SUFFIX,
    CleanedSegment,
    CleanerCheckpoint,
    discard_cleaned,
    read_cleaner_checkpoint,
    write_cleaner_checkpoint,
)
from ._cleaner_swap import LogSnapshot, SegmentFile, replace_segment, snapshot_log
from ._config import LONG_MAX, LogConfig, MiB
from ._fs import FileSystem
from ._index import OffsetIndex, TimeIndex
from ._segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, segment_file_name

if TYPE_CHECKING:
    from ._log import Log

__all__ = ["Cleaner", "CleanerSettings", "CleanResult", "CleanerAborted", "Throttler",
           "cleanable_of"]

_log = logging.getLogger("minilog.storage.cleaner")
Clock = Callable[[], int]
SwapFn = Callable[[CleanedSegment], bool]


class CleanerAborted(Exception):
    """The pass was asked to stop (`abort()` returned True); nothing half-done remains."""


@dataclass(frozen=True)
class CleanerSettings:
    """Broker-level cleaner settings (Kafka's log.cleaner.*), per cleaner thread."""

    dedupe_buffer_bytes: int = 128 * MiB          # bytes, the offset map's memory bound
    io_bytes_per_second_max: float = float("inf")  # bytes/s read + written, all threads share it
    io_buffer_bytes: int = 1 * MiB                # bytes read per chunk


@dataclass(frozen=True)
class CleanResult:
    """What one pass did."""

    first_dirty_offset: int
    end_offset: int                 # the next pass starts here
    bytes_read: int
    bytes_written: int
    records_read: int
    records_kept: int
    tombstones_dropped: int
    keyless_dropped: int
    segments_cleaned: int
    segments_swapped: int
    map_entries: int
    elapsed_ms: int
    map_full: bool                  # the dedupe buffer ended the pass early
    tombstone_horizon_ms: int       # earliest delete horizon of a kept tombstone, -1 none


class Throttler:
    """Bound a rate of bytes per second by sleeping (Kafka's `Throttler`).

    Thread-safe: the broker shares one among its cleaner threads (the rate is
    a broker-wide bound); a thread that must wait sleeps holding the lock, so
    the others wait their turn too.
    """

    def __init__(self, bytes_per_second: float, *, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.bytes_per_second = bytes_per_second
        self._monotonic = monotonic
        self._sleep = sleep
        self._window_start = monotonic()
        self._window_bytes = 0
        self._lock = threading.Lock()
        self.slept_seconds = 0.0

    def account(self, nbytes: int) -> None:
        if self.bytes_per_second == float("inf") or nbytes <= 0:
            return
        with self._lock:
            self._account(nbytes)

    def _account(self, nbytes: int) -> None:
        self._window_bytes += nbytes
        elapsed = self._monotonic() - self._window_start
        needed = self._window_bytes / self.bytes_per_second
        if needed > elapsed:
            self._sleep(needed - elapsed)
            self.slept_seconds += needed - elapsed
        if elapsed > 1.0:
            self._window_start, self._window_bytes = self._monotonic(), 0


def _policy_segments(snapshot: LogSnapshot) -> list[CleanableSegment]:
    segments = [CleanableSegment(s.base_offset, s.next_offset, s.size_bytes, s.max_timestamp_ms,
                                 s.first_batch_timestamp_ms) for s in snapshot.closed]
    segments.append(CleanableSegment(snapshot.active_base_offset, snapshot.log_end_offset,
                                     snapshot.active_size_bytes, -1, -1, is_active=True))
    return segments


def cleanable_of(snapshot: LogSnapshot, config: LogConfig, now_ms: int, *,
                 high_watermark: int | None = None) -> Cleanable:
    """The clean/dirty split of a snapshot (for the policy and `topics describe`)."""
    uncleanable_from = snapshot.recovery_point
    if high_watermark is not None:
        uncleanable_from = min(uncleanable_from, high_watermark)
    checkpoint = read_cleaner_checkpoint(snapshot.dir_path, snapshot.fs)
    return cleanable_range(
        _policy_segments(snapshot), log_start_offset=snapshot.log_start_offset,
        log_end_offset=snapshot.log_end_offset,
        checkpoint=checkpoint.first_dirty_offset if checkpoint else None,
        now_ms=now_ms, min_compaction_lag_ms=config.min_compaction_lag_ms,
        max_compaction_lag_ms=config.max_compaction_lag_ms, uncleanable_from=uncleanable_from,
        tombstone_horizon_ms=checkpoint.tombstone_horizon_ms if checkpoint else -1)


@dataclass
class _Pass:
    """Counters of one pass (mutable while it runs)."""

    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    tombstones_dropped: int = 0
    keyless_dropped: int = 0
    segments_cleaned: int = 0
    segments_swapped: int = 0
    tombstone_horizon_ms: int = -1
    producer_last_batch: dict[int, int] = field(default_factory=dict)


class Cleaner:
    """Cleans compacted logs, one pass at a time. One instance per cleaner thread."""

    def __init__(self, settings: CleanerSettings | None = None, *, clock: Clock,
                 throttler: Throttler | None = None,
                 abort: Callable[[], bool] = lambda: False) -> None:
        from ._offset_map import OffsetMap
        self.settings = settings or CleanerSettings()
        self._clock = clock
        self.throttler = throttler or Throttler(self.settings.io_bytes_per_second_max)
        self._abort = abort
        self.offset_map = OffsetMap(self.settings.dedupe_buffer_bytes)

    # -- entry points ----------------------------------------------------------

    def clean(self, log: Log, *, high_watermark: int | None = None, force: bool = True,
              min_ratio: float | None = None) -> CleanResult | None:
        """One pass over `log` on the calling thread (storage tests, tools).

        Args:
            force: clean whatever is cleanable even below min.cleanable.dirty.ratio.
            min_ratio: override the log's min.cleanable.dirty.ratio (with force=False).

        Returns:
            The pass's result, or None when nothing was due.
        """
        from ._cleaner_policy import clean_reason
        snapshot = snapshot_log(log, first_batch_timestamps=log.config.max_compaction_lag_ms < LONG_MAX)
        now = self._clock()
        cleanable = cleanable_of(snapshot, log.config, now, high_watermark=high_watermark)
        ratio = log.config.min_cleanable_dirty_ratio if min_ratio is None else min_ratio
        if force:
            if cleanable.dirty_bytes == 0 and cleanable.clean_bytes == 0:
                return None
        elif clean_reason(cleanable, ratio) is None:
            return None
        return self.clean_snapshot(snapshot, log.config, cleanable,
                                   swap=lambda cleaned: replace_segment(log, cleaned))

    def clean_snapshot(self, snapshot: LogSnapshot, config: LogConfig, cleanable: Cleanable, *,
                       swap: SwapFn) -> CleanResult:
        """One pass over the dirty section `cleanable` names (any thread; see the module)."""
        started = self._clock()
        now = started
        stats = _Pass()
        self.offset_map.clear()
        mapped_end, full = self._build_map(snapshot, cleanable, stats)
        stats.producer_last_batch = self._producer_last_batches(snapshot, stats)
        ctx = FilterContext(self.offset_map.lookup, now, config.delete_retention_ms,
                            stats.producer_last_batch)
        for segment in snapshot.closed:
            if segment.base_offset >= mapped_end:
                break
            if segment.next_offset <= snapshot.log_start_offset:
                continue                         # retention's to delete, not ours to clean
            cleaned = self._clean_segment(snapshot, segment, config, ctx, stats)
            stats.segments_cleaned += 1
            if cleaned is not None and swap(cleaned):
                stats.segments_swapped += 1
        end = cleanable.first_uncleanable_offset if not full else mapped_end
        write_cleaner_checkpoint(snapshot.dir_path, CleanerCheckpoint(end, stats.tombstone_horizon_ms),
                                 snapshot.fs)
        result = CleanResult(
            first_dirty_offset=cleanable.first_dirty_offset, end_offset=end,
            bytes_read=stats.bytes_read, bytes_written=stats.bytes_written,
            records_read=stats.records_read, records_kept=stats.records_kept,
            tombstones_dropped=stats.tombstones_dropped, keyless_dropped=stats.keyless_dropped,
            segments_cleaned=stats.segments_cleaned, segments_swapped=stats.segments_swapped,
            map_entries=len(self.offset_map), elapsed_ms=self._clock() - started, map_full=full,
            tombstone_horizon_ms=stats.tombstone_horizon_ms)
        self.offset_map.clear()
        _log.info("%s: cleaned offsets [%d, %d): read %d bytes, wrote %d, kept %d of %d records, "
                  "swapped %d of %d segments", snapshot.dir_path, snapshot.log_start_offset, end,
                  result.bytes_read, result.bytes_written, result.records_kept, result.records_read,
                  result.segments_swapped, result.segments_cleaned)
        return result

    # -- steps -------------------------------------------------------------------

    def _check_abort(self) -> None:
        if self._abort():
            raise CleanerAborted()

    def _batches(self, fs: FileSystem, segment: SegmentFile, stats: _Pass
                 ) -> Iterator[tuple[BatchHeader, memoryview]]:
        """Every batch of a closed segment, read in io-buffer chunks through the throttle."""
        chunk_bytes = self.settings.io_buffer_bytes
        fd = fs.open(segment.log_path, os.O_RDONLY)
        try:
            position, pending = 0, b""
            while position < segment.size_bytes:
                self._check_abort()
                data = fs.pread(fd, min(chunk_bytes, segment.size_bytes - position), position)
                if not data:
                    raise CorruptBatchError(f"{segment.log_path}: ends at {position}, "
                                            f"expected {segment.size_bytes} bytes")
                position += len(data)
                stats.bytes_read += len(data)
                self.throttler.account(len(data))
                buf = pending + data if pending else data
                used = 0
                for header, view in iter_batches(buf):
                    yield header, view
                    used += header.size
                pending = buf[used:]
            if pending:
                raise CorruptBatchError(f"{segment.log_path}: ends inside a batch")
        finally:
            fs.close(fd)

    def _build_map(self, snapshot: LogSnapshot, cleanable: Cleanable, stats: _Pass) -> tuple[int, bool]:
        """Map keys to offsets over the dirty section. Returns (mapped end, map full)."""
        offset_map = self.offset_map
        start, end = cleanable.first_dirty_offset, cleanable.first_uncleanable_offset
        for segment in snapshot.closed:
            if segment.next_offset <= start:
                continue
            if segment.base_offset >= end:
                break
            try:
                for header, view in self._batches(snapshot.fs, segment, stats):
                    if header.next_offset <= start or header.is_control:
                        continue
                    if header.base_offset >= end:
                        break
                    records = decode_records(view, "", -1)
                    keys = [r.key for r in records if r.key is not None]
                    if len(offset_map) and not offset_map.fits(keys):
                        return offset_map.latest_offset + 1, True
                    offsets = [r.offset for r in records if r.key is not None]
                    offset_map.put_batch(keys, offsets, header.last_offset)
            except FileNotFoundError:
                continue                          # deleted by retention meanwhile
        return end, False

    def _producer_last_batches(self, snapshot: LogSnapshot, stats: _Pass) -> dict[int, int]:
        """Producer id -> base offset of its last batch, from the batch headers of every
        closed segment (the active segment's batches are never cleaned, but they make
        earlier batches of their producer not the last: they are read too)."""
        last: dict[int, int] = {}
        files = [(s.log_path, s.size_bytes) for s in snapshot.closed]
        active_path = os.path.join(snapshot.dir_path,
                                   segment_file_name(snapshot.active_base_offset, LOG_SUFFIX))
        files.append((active_path, snapshot.active_size_bytes))
        fs = snapshot.fs
        for path, size in files:
            try:
                fd = fs.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue                          # deleted by retention meanwhile
            try:
                position = 0
                while position + HEADER_SIZE <= size:
                    header = parse_header(fs.pread(fd, HEADER_SIZE, position))
                    stats.bytes_read += HEADER_SIZE
                    if header.producer_id >= 0:
                        last[header.producer_id] = header.base_offset
                    position += header.size
            finally:
                fs.close(fd)
        return last

    def _clean_segment(self, snapshot: LogSnapshot, segment: SegmentFile, config: LogConfig,
                       ctx: FilterContext, stats: _Pass) -> CleanedSegment | None:
        """Write the survivors of `segment` to `.cleaned` files; None when nothing changed."""
        writer = _CleanedWriter(snapshot.dir_path, segment.base_offset, config, snapshot.fs)
        changed = False
        try:
            try:
                for header, view in self._batches(snapshot.fs, segment, stats):
                    decision = filter_batch(header, view, ctx)
                    stats.records_read += decision.records_in
                    stats.records_kept += decision.records_kept
                    stats.tombstones_dropped += decision.tombstones_dropped
                    stats.keyless_dropped += decision.keyless_dropped
                    if decision.horizon_ms is not None and (
                            stats.tombstone_horizon_ms < 0 or decision.horizon_ms < stats.tombstone_horizon_ms):
                        stats.tombstone_horizon_ms = decision.horizon_ms
                    if decision.action == DROP:
                        changed = True
                        continue
                    data = view if decision.action == KEEP else decision.data
                    assert data is not None
                    changed = changed or decision.action != KEEP
                    out_header = header if decision.action == KEEP else parse_header(data)
                    writer.write(data, out_header)
                    stats.bytes_written += len(data)
                    self.throttler.account(len(data))
            except FileNotFoundError:
                changed = False                  # deleted by retention meanwhile
            if not changed:
                writer.abandon()
                return None
            return writer.finish(segment.size_bytes)
        except BaseException:
            writer.abandon()
            raise


class _CleanedWriter:
    """Writes one cleaned segment: `B.log.cleaned` and its two indexes, as _segment.py would."""

    def __init__(self, dir_path: str, base_offset: int, config: LogConfig, fs: FileSystem) -> None:
        self.dir_path = dir_path
        self.base_offset = base_offset
        self.config = config
        self.fs = fs
        stem = os.path.join(dir_path, segment_file_name(base_offset, ""))
        self.log_path = stem + LOG_SUFFIX + CLEANED_SUFFIX
        self.index = OffsetIndex(stem + INDEX_SUFFIX + CLEANED_SUFFIX, base_offset,
                                 config.offset_index_entries_max, fs=fs)
        self.time_index = TimeIndex(stem + TIME_INDEX_SUFFIX + CLEANED_SUFFIX, base_offset,
                                    config.time_index_entries_max, fs=fs)
        self.index.reset()
        self.time_index.reset()
        self._fd: int | None = fs.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        self.size_bytes = 0
        self._max_timestamp = (-1, base_offset)
        self._since_entry = 0

    def write(self, data: bytes | memoryview, header: BatchHeader) -> None:
        # Index entries every index.interval.bytes, as LogSegment._track adds them.
        assert self._fd is not None
        position = self.size_bytes
        if header.max_timestamp > self._max_timestamp[0]:
            self._max_timestamp = (header.max_timestamp, header.base_offset)
        if self._since_entry > self.config.index_interval_bytes and position > 0:
            self.index.append(header.base_offset, position)
            self.time_index.maybe_append(*self._max_timestamp)
            self._since_entry = 0
        written = self.fs.pwrite(self._fd, data, position)
        if written != len(data):
            raise OSError(f"short write: {written} of {len(data)} bytes in {self.log_path}")
        self._since_entry += len(data)
        self.size_bytes += len(data)

    def finish(self, source_size_bytes: int) -> CleanedSegment:
        assert self._fd is not None
        timestamp, offset = self._max_timestamp
        if timestamp >= 0:
            self.time_index.maybe_append(timestamp, offset)    # sealed: last entry = max
        self.index.rewrite(fsync=True)
        self.time_index.rewrite(fsync=True)
        self.fs.fsync(self._fd)
        self.fs.close(self._fd)
        self._fd = None
        return CleanedSegment(self.dir_path, self.base_offset, source_size_bytes, self.size_bytes,
                              self.fs)

    def abandon(self) -> None:
        if self._fd is not None:
            self.fs.close(self._fd)
            self._fd = None
        discard_cleaned(CleanedSegment(self.dir_path, self.base_offset, 0, 0, self.fs))
