"""One segment: a `.log` file of stamped batches plus its two sparse indexes.

Files of a segment whose first offset is 4200, in the partition directory::

    00000000000000004200.log        batches back to back, exactly as stamped
    00000000000000004200.index      offset index (see _index.py)
    00000000000000004200.timeindex  time index (see _index.py)

The partition directory is `<topic>-<partition>` (Kafka's naming; the topic
may itself contain dashes, the partition is after the last one).

Theory of operation: a segment appends with one positional write per batch
(`pwritev` of the 16 stamped header bytes and the rest of the caller's
buffer, so nothing is copied) and reads with `pread`, through the `FileSystem` seam (`_fs.py`). Every batch that
enters the segment, by append or by a recovery scan, goes through
`_track()`, which advances the size, the next offset and the max timestamp
and adds sparse index entries. Closed segments learn their next offset from
the following segment and their max timestamp from the last time index
entry, so opening them reads no log data.

Task safety: not thread-safe; the owning Log serialises calls.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator

from minilog.protocol import (
    HEADER_SIZE,
    BatchHeader,
    CorruptBatchError,
    parse_header,
)

from ._config import LogConfig
from ._errors import CorruptLogError
from ._fs import OS_FS, Buffer, FileSystem
from ._index import OffsetIndex, OffsetPosition, TimeIndex

__all__ = [
    "LogSegment",
    "segment_file_name",
    "parse_segment_file_name",
    "partition_dir_name",
    "parse_partition_dir_name",
    "LOG_SUFFIX",
    "INDEX_SUFFIX",
    "TIME_INDEX_SUFFIX",
    "DELETED_SUFFIX",
]

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"
_OFFSET_DIGITS = 20
_SEGMENT_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex)$")
_SUFFIXES = frozenset((LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX))
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")
_SCAN_CHUNK_BYTES = 4096 + HEADER_SIZE     # about one index interval of headers


def segment_file_name(base_offset: int, suffix: str) -> str:
    """`00000000000000004200.log` for base offset 4200 and suffix `.log`."""
    assert base_offset >= 0
    return f"{base_offset:0{_OFFSET_DIGITS}d}{suffix}"


def parse_segment_file_name(name: str) -> tuple[int, str] | None:
    """(base offset, suffix) of a segment file name, or None for other files."""
    suffix = name[_OFFSET_DIGITS:]
    if suffix in _SUFFIXES and name[:_OFFSET_DIGITS].isdigit() and name.isascii():
        return int(name[:_OFFSET_DIGITS]), suffix
    match = _SEGMENT_NAME.match(name)
    if match is None:
        return None
    return int(match.group(1)), "." + match.group(2)


def partition_dir_name(topic: str, partition: int) -> str:
    """`orders-3` for topic `orders`, partition 3."""
    if not topic or "/" in topic or topic in (".", "..") or partition < 0:
        raise ValueError(f"bad topic/partition {topic!r}/{partition}")
    return f"{topic}-{partition}"


def parse_partition_dir_name(name: str) -> tuple[str, int]:
    """(topic, partition) from `orders-3`; the partition follows the last dash.

    Raises:
        ValueError: the name is not `<topic>-<partition>`.
    """
    match = _PARTITION_DIR.match(name)
    if match is None:
        raise ValueError(f"not a partition directory name: {name!r}")
    return match.group(1), int(match.group(2))


class LogSegment:
    """A `.log` file and its indexes. Created by `create` or `open_existing`."""

    def __init__(self, dir_path: str, base_offset: int, config: LogConfig, *,
                 size_bytes: int, created_ms: int, fs: FileSystem = OS_FS) -> None:
        self.dir_path = dir_path
        self.fs = fs
        self.base_offset = base_offset
        self.config = config
        stem = os.path.join(dir_path, segment_file_name(base_offset, ""))   # one join: opening
        self.log_path = stem + LOG_SUFFIX                                       # 1,000 segments
        self.index = OffsetIndex(stem + INDEX_SUFFIX, base_offset, config.offset_index_entries_max, fs=fs)
        self.time_index = TimeIndex(stem + TIME_INDEX_SUFFIX, base_offset, config.time_index_entries_max,
                                    fs=fs)
        self.size_bytes = size_bytes
        self.next_offset = base_offset          # exact once tracked or told by the Log
        self.created_ms = created_ms
        self.first_batch_timestamp_ms: int | None = None   # rolling basis (Kafka's)
        self._max_timestamp: tuple[int, int] | None = None  # (ts, offset), lazily known
        self._bytes_since_index_entry = 0
        self._fd: int | None = None
        self._writable = False
        self.index_checked = False               # sanity check done since open
        self.index_room = 0                      # appends with index entries left (active only)

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def create(cls, dir_path: str, base_offset: int, config: LogConfig, now_ms: int, *,
               fs: FileSystem = OS_FS) -> LogSegment:
        """Create an empty segment (truncating stale files of the same name)."""
        segment = cls(dir_path, base_offset, config, size_bytes=0, created_ms=now_ms, fs=fs)
        fd = fs.open(segment.log_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        segment._fd, segment._writable = fd, True
        segment.index.reset()
        segment.time_index.reset()
        segment.index.flush()
        segment.time_index.flush()
        segment._max_timestamp = (-1, base_offset)
        segment.index_checked = True
        segment.refresh_index_room()
        return segment

    @classmethod
    def open_existing(cls, dir_path: str, base_offset: int, config: LogConfig, *,
                      size_bytes: int, now_ms: int, fs: FileSystem = OS_FS) -> LogSegment:
        """Wrap an existing segment without reading it."""
        return cls(dir_path, base_offset, config, size_bytes=size_bytes, created_ms=now_ms, fs=fs)

    def fd(self) -> int:
        if self._fd is None:
            self._fd = self.fs.open(self.log_path, os.O_RDONLY)
        return self._fd

    def writable_fd(self) -> int:
        if not self._writable:
            self.close_fd()
            self._fd = self.fs.open(self.log_path, os.O_RDWR)
            self._writable = True
        assert self._fd is not None
        return self._fd

    def close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd, self._writable = self._fd, None, False
            self.fs.close(fd)

    @property
    def has_open_fd(self) -> bool:
        return self._fd is not None

    def flush(self, *, fsync: bool) -> None:
        """Write pending index entries; with `fsync`, make log and indexes durable.

        Safe against a concurrent append on another thread (see _log.py): the
        fsync goes through a descriptor of its own, never one that the owner
        thread might close.
        """
        self.index.flush(fsync=fsync)
        self.time_index.flush(fsync=fsync)
        if fsync:
            fd = self.fs.open(self.log_path, os.O_RDONLY)
            try:
                self.fs.fsync(fd)
            finally:
                self.fs.close(fd)

    def seal(self) -> None:
        """The segment stops being active: record its final max timestamp."""
        timestamp, offset = self.max_timestamp
        if timestamp >= 0:
            self.time_index.maybe_append(timestamp, offset)
        # Index files are written by the next flush/close (one writer only).

    def delete_files(self, *, rename_only: bool) -> list[str]:
        """Unlink (or rename to `*.deleted`) the segment's files. Returns new names."""
        self.close_fd()
        renamed = []
        for path in (self.log_path, self.index.path, self.time_index.path):
            try:
                if rename_only:
                    self.fs.replace(path, path + DELETED_SUFFIX)
                    renamed.append(path + DELETED_SUFFIX)
                else:
                    self.fs.unlink(path)
            except FileNotFoundError:
                pass
        return renamed

    # -- state -----------------------------------------------------------------

    @property
    def max_timestamp(self) -> tuple[int, int]:
        """(largest batch max timestamp, base offset of its batch); (-1, base) when none."""
        if self._max_timestamp is None:
            last = self.time_index.last_entry()
            self._max_timestamp = (last.timestamp, last.offset) if last else (-1, self.base_offset)
        return self._max_timestamp

    def time_waited_for_roll_ms(self, now_ms: int, batch_max_timestamp_ms: int) -> int:
        """How old the segment is for segment.ms, as Kafka's `timeWaitedForRoll`.

        With a timestamp on the first batch: the incoming batch's max timestamp
        minus it (so producers whose clocks are consistently off do not roll
        a segment per batch); otherwise wall time since the segment was created
        or opened.
        """
        first = self.first_batch_timestamp_ms
        if first is not None and first >= 0:
            return batch_max_timestamp_ms - first
        return now_ms - self.created_ms

    def check_indexes(self, *, active: bool = False) -> str | None:
        """Load and sanity-check both indexes (Kafka's sanityCheck). Returns a problem or None.

        The active segment's time index is checked after its tail is known.
        """
        problem = self.index.load() or self.index.sanity_check(self.size_bytes)
        if problem is None:
            problem = self.time_index.load()
        if problem is None and not active:
            problem = self.time_index.sanity_check(self.next_offset)
        self.index_checked = problem is None
        return problem

    def refresh_index_room(self) -> None:
        """Recount how many more index entries fit (each append adds at most one per index)."""
        self.index_room = min(self.index.entries_max - len(self.index),
                              self.time_index.entries_max - len(self.time_index))

    def reset_tracking(self) -> None:
        """Forget everything about the contents (before a rebuild scan)."""
        self.size_bytes = 0
        self.next_offset = self.base_offset
        self._max_timestamp = (-1, self.base_offset)
        self._bytes_since_index_entry = 0
        self.first_batch_timestamp_ms = None
        self.index.reset()
        self.time_index.reset()
        self.index_checked = True
        self.refresh_index_room()

    def _track(self, position: int, base_offset: int, next_offset: int,
               max_timestamp: int, size: int) -> None:
        """Account for one batch stored at `position`: the one place state advances.

        Hot path (every append): plain attribute access only.
        """
        assert position == self.size_bytes and base_offset >= self.next_offset, (
            position, self.size_bytes, base_offset, self.next_offset)
        if position == 0:
            self.first_batch_timestamp_ms = max_timestamp
        known = self._max_timestamp
        if known is None:
            known = self._max_timestamp = self.max_timestamp
        if max_timestamp > known[0]:
            known = self._max_timestamp = (max_timestamp, base_offset)
        since_entry = self._bytes_since_index_entry
        if since_entry > self.config.index_interval_bytes and position > 0:
            self.index.append(base_offset, position)
            self.time_index.maybe_append(known[0], known[1])
            since_entry = 0
            self.index_room -= 1
        self._bytes_since_index_entry = since_entry + size
        self.size_bytes = position + size
        self.next_offset = next_offset

    # -- writing ---------------------------------------------------------------

    def append(self, parts: list[Buffer], size: int, base_offset: int, next_offset: int,
               max_timestamp: int) -> int:
        """Write one batch (given as buffers) at the end, with one call. Returns its position.

        Raises:
            OSError: the write failed; its `filename` is the segment's path and,
                for a full disk, its errno ENOSPC (a short write is followed
                by one more write, which a full disk answers with ENOSPC, so
                the error says what happened). The caller poisons the log.
        """
        position = self.size_bytes
        fd = self._fd
        if fd is None or not self._writable:
            fd = self.writable_fd()
        try:
            written = self.fs.pwritev(fd, parts, position)
            if written != size:
                self._write_rest(fd, parts, position, written, size)
        except OSError as e:
            if e.filename is not None or e.errno is None:
                raise
            raise OSError(e.errno, e.strerror, self.log_path) from e
        self._track(position, base_offset, next_offset, max_timestamp, size)
        return position

    def _write_rest(self, fd: int, parts: list[Buffer], position: int, written: int, size: int) -> None:
        """POSIX allows a short write: write the rest (a full disk then raises ENOSPC)."""
        rest = memoryview(b"".join(parts))[written:]
        while rest:
            count = self.fs.pwrite(fd, rest, position + written)
            if count <= 0:
                raise OSError(errno.EIO, f"short write: {written} of {size} bytes at {position}",
                              self.log_path)
            rest, written = rest[count:], written + count

    def truncate_to_position(self, position: int) -> None:
        """Cut the log file at `position` (a batch boundary) and keep indexes consistent."""
        self.fs.ftruncate(self.writable_fd(), position)
        self.size_bytes = position

    def restore_after_truncate(self, cut_offset: int) -> None:
        """After cutting the file, drop index entries past the cut and reload the tail."""
        self.index.truncate_to(cut_offset)
        self.time_index.truncate_to(cut_offset)
        self.load_tail()

    def load_tail(self) -> None:
        """Learn next offset and max timestamp of the segment from its tail.

        The one tail reload, used at open (trusted active segment) and after
        a truncation: it starts from the last index entries and reads only
        the headers after the last offset index entry (at most about
        index.interval.bytes of headers).

        Raises:
            CorruptBatchError: a header in the tail is unreadable.
        """
        size = self.size_bytes
        last = self.index.last_entry()
        last_time = self.time_index.last_entry()
        self._max_timestamp = (last_time.timestamp, last_time.offset) if last_time else (-1, self.base_offset)
        self.first_batch_timestamp_ms = None
        self.size_bytes = last.position
        self.next_offset = last.offset
        self.refresh_index_room()
        self._replay_tail(last, size)

    def _replay_tail(self, start: OffsetPosition, end_position: int) -> None:
        # The batch at an index entry already has its entry: do not add another.
        self._bytes_since_index_entry = 0
        for position, header in self.iter_headers(start.position, end_position):
            if header.base_offset < self.next_offset:          # compacted segments have gaps
                raise CorruptBatchError(
                    f"{self.log_path}: batch at {position} has offset {header.base_offset}, "
                    f"expected {self.next_offset}")
            if position + header.size > end_position:
                raise CorruptBatchError(f"{self.log_path}: torn batch at {position}")
            if position == start.position and position > 0:
                self._max_timestamp = max(self._max_timestamp, (header.max_timestamp, header.base_offset),
                                          key=lambda t: t[0])
                self._bytes_since_index_entry = header.size
                self.size_bytes = position + header.size
                self.next_offset = header.next_offset
                continue
            self._track(position, header.base_offset, header.next_offset,
                        header.max_timestamp, header.size)
        if self.size_bytes != end_position:
            raise CorruptBatchError(f"{self.log_path}: tail does not end on a batch boundary")
        if self.first_batch_timestamp_ms is None and end_position > 0:
            self.first_batch_timestamp_ms = self.header_at(0).max_timestamp

    # -- reading ---------------------------------------------------------------

    def read(self, position: int, size: int) -> bytes:
        assert 0 <= position and position + size <= self.size_bytes, (position, size, self.size_bytes)
        return self.fs.pread(self.fd(), size, position)

    def header_at(self, position: int) -> BatchHeader:
        """Parse the batch header at `position`. Raises CorruptBatchError."""
        if position + HEADER_SIZE > self.size_bytes:
            raise CorruptBatchError(f"{self.log_path}: no header at {position}")
        return parse_header(self.fs.pread(self.fd(), HEADER_SIZE, position))

    def iter_headers(self, start: int, end: int) -> Iterator[tuple[int, BatchHeader]]:
        """Yield (position, header) for batches starting in [start, end).

        Reads chunks and parses headers in memory; never reads record data
        it does not need. Raises CorruptBatchError for an unreadable header.
        """
        fd = self.fd()
        position = start
        chunk, chunk_start = b"", start
        while position < end:
            offset_in_chunk = position - chunk_start
            if offset_in_chunk < 0 or offset_in_chunk + HEADER_SIZE > len(chunk):
                chunk = self.fs.pread(fd, max(_SCAN_CHUNK_BYTES, HEADER_SIZE), position)
                chunk_start, offset_in_chunk = position, 0
                if len(chunk) < HEADER_SIZE:
                    raise CorruptBatchError(f"{self.log_path}: truncated header at {position}")
            header = parse_header(chunk, offset_in_chunk)
            yield position, header
            if header.size > end - position:       # skipping it would silently skip offsets
                self._corrupt(position, header, f"claims {header.size} bytes, {end - position} left")
            position += header.size

    def check_whole(self, position: int, header: BatchHeader) -> None:
        """Raise CorruptLogError unless the batch at `position` can be whole: its length must
        end within the segment and not run past the next offset index entry (a batch start)."""
        end = position + header.size
        if end > self.size_bytes:
            self._corrupt(position, header, f"claims {header.size} bytes, {self.size_bytes - position} "
                          "left in the segment")
        following = self.index.next_after(position)
        if following is not None and end > following.position:
            self._corrupt(position, header, f"claims {header.size} bytes, running past the batch at "
                          f"position {following.position} (offset {following.offset})")

    def _corrupt(self, position: int, header: BatchHeader, detail: str) -> None:
        raise CorruptLogError(f"{self.log_path}: corrupt batch at position {position} "
                              f"(offset {header.base_offset}): {detail}",
                              path=self.log_path, position=position, offset=header.base_offset)

    def _headers_from(self, entry: OffsetPosition, end: int) -> Iterator[tuple[int, BatchHeader]]:
        """Headers from an index entry on, checking the entry really names a batch start.

        A scribbled index that stays sorted would otherwise send a scan into
        the middle of a batch; the base offset check turns that into a
        CorruptBatchError, and the Log rebuilds the index.
        """
        headers = self.iter_headers(entry.position, end)
        first = next(headers, None)
        if first is None:
            return
        # Without an entry the scan starts at position 0 with the segment's base
        # offset, where a compacted segment may hold a later first batch.
        if first[1].base_offset != entry.offset and not (
                entry.position == 0 and first[1].base_offset > entry.offset):
            raise CorruptBatchError(
                f"{self.index.path}: entry ({entry.offset}, {entry.position}) points at a batch "
                f"with base offset {first[1].base_offset}")
        yield first
        yield from headers

    def find_batch(self, offset: int) -> tuple[int, BatchHeader] | None:
        """Position and header of the batch holding `offset`, or of the first batch after it.

        Uses the sparse index, then scans headers forward (a few KiB at most).
        Returns None when every batch of the segment is below `offset`.
        """
        for position, header in self._headers_from(self.index.lookup(offset), self.size_bytes):
            if header.next_offset > offset:
                return position, header
        return None

    def position_of(self, offset: int) -> int:
        """Position of the first batch whose base offset is >= `offset` (size if none)."""
        for position, header in self._headers_from(self.index.lookup(offset), self.size_bytes):
            if header.base_offset >= offset:
                return position
        return self.size_bytes

    def boundary_at_or_before(self, start: int, limit: int) -> int:
        """The furthest batch end `e` with start < e <= limit, or `start` if the first
        batch alone passes `limit`. `start` and the result are batch boundaries."""
        entry = self.index.lookup_by_position(limit)
        if entry.position <= start:
            entry = OffsetPosition(-1, start)       # scan from start (its offset is not needed)
            headers = self.iter_headers(start, self.size_bytes)
        else:
            headers = self._headers_from(entry, self.size_bytes)
        best = start
        for pos, header in headers:
            end = pos + header.size
            if end > limit:
                break
            best = end
        if best == start and entry.position > start:
            best = entry.position    # the index entry itself is a boundary within the limit
        return best
