"""Sparse offset and time indexes of one segment.

Byte layouts (big-endian, entries back to back, no header; the file's size
is a multiple of the entry size)::

    .index      entry = u32 relative_offset, u32 position          (8 bytes)
    .timeindex  entry = i64 max_timestamp_ms, u32 relative_offset  (12 bytes)

`relative_offset` is `batch base offset - segment base offset`; `position`
is the byte position of that batch in the `.log` file. Offsets and
positions are never mixed: lookups return `OffsetPosition` or
`TimestampOffset` named tuples.

Theory of operation (Kafka's OffsetIndex/TimeIndex, without mmap):

- The offset index gets one entry per `index.interval.bytes` of log: the
  batch's base offset and its position. Lookup finds the largest entry at
  or below the target (bisect) and the caller scans a few batch headers
  forward from there. Without an entry the scan starts at position 0.
- The time index gets an entry at the same moments, when the segment's
  largest timestamp so far has grown: (largest timestamp so far, base
  offset of the batch holding it). Timestamps are strictly increasing, and
  every batch written before an entry has a timestamp <= that entry's, so
  a time lookup may start its scan at the offset of the last entry whose
  timestamp is below the target: nothing earlier can reach the target. When a segment stops being active the final
  largest timestamp is appended, so the last entry gives the segment's
  max timestamp without reading the log (retention needs only that).
- Entries are kept in memory (two `array` columns) and appended to the file
  lazily, by `flush()` (log flush and close), which encodes the entries
  the file lacks in one go: an append only grows the two columns. The index is
  derived data: after an unclean shutdown, recovery rebuilds the indexes of
  every segment it re-scans, so a lost tail of index entries costs nothing.
- Closed segments load their index on first use (a lookup), not at open,
  which keeps opening a log with 1,000 segments in milliseconds. Loading
  runs Kafka's sanity check: size a multiple of the entry size, keys
  strictly increasing, values within the segment. A failed check reports a
  problem string and the segment rebuilds the index from the log.

Task safety: not thread-safe; the owning Log serialises calls.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from typing import Any, NamedTuple

from ._fs import OS_FS, FileSystem, read_file, write_all

__all__ = ["OffsetIndex", "TimeIndex", "OffsetPosition", "TimestampOffset"]

_BIG_ENDIAN_HOST = sys.byteorder == "big"
_OFFSET_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")
U32_MAX = 2**32 - 1


class OffsetPosition(NamedTuple):
    offset: int      # absolute offset (a batch base offset)
    position: int    # byte position in the .log file


class TimestampOffset(NamedTuple):
    timestamp: int   # ms
    offset: int      # absolute offset (a batch base offset)


_INDEX_FILE_BYTES_MAX = 1 << 31      # far above segment.index.bytes' limit


def _read_index_file(fs: FileSystem, path: str) -> bytes:
    try:
        return read_file(fs, path, _INDEX_FILE_BYTES_MAX)
    except FileNotFoundError:
        return b""


class _SparseIndex:
    """Shared machinery: two in-memory columns, a pending tail, lazy load."""

    ENTRY: struct.Struct

    def __init__(self, path: str, base_offset: int, entries_max: int, *,
                 fs: FileSystem = OS_FS) -> None:
        self.path = path
        self.fs = fs
        self.base_offset = base_offset
        self.entries_max = max(1, entries_max)
        self._keys: array[Any] | None = None     # None until loaded
        self._values: array[int] | None = None   # appended after _keys: its length counts entries
        self._file_entries = 0                 # entries the file holds (when loaded)

    # -- loading ---------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._keys is not None

    def load(self) -> str | None:
        """Read the file into memory. Returns a problem description, or None."""
        data = _read_index_file(self.fs, self.path)
        size = self.ENTRY.size
        problem = None
        if len(data) % size:
            problem = f"{os.path.basename(self.path)}: size {len(data)} is not a multiple of {size}"
            data = data[: len(data) - len(data) % size]
        self._decode(data)
        self._file_entries = len(self._columns()[0])
        return problem

    def reset(self) -> None:
        """Forget every entry (in memory); `rewrite()` then makes the file match."""
        self._decode(b"")
        self._file_entries = -1                # unknown: rewrite the whole file

    def _decode(self, data: bytes) -> None:
        raise NotImplementedError

    def _encode(self, start: int, end: int) -> bytes:
        """Entries [start, end) in the file layout."""
        raise NotImplementedError

    def _ensure_loaded(self) -> None:
        if self._keys is None:
            self.load()

    def _columns(self) -> tuple[array[Any], array[int]]:
        """Both columns, loading the file first if needed."""
        if self._keys is None or self._values is None:
            self.load()
        assert self._keys is not None and self._values is not None
        return self._keys, self._values

    # -- writing ---------------------------------------------------------------

    def flush(self, *, fsync: bool = False) -> None:
        """Append pending entries to the file (or rewrite it after a reset)."""
        if self._keys is None:
            return
        if self._file_entries < 0:
            self.rewrite(fsync=fsync)
            return
        # An append on the owner thread may add entries meanwhile: write the
        # ones present now (counted by _values, which grows last), no more.
        start, end = self._file_entries, len(self._columns()[1])
        if end > start or fsync:
            fs = self.fs
            fd = fs.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if end > start:
                    write_all(fs, fd, self._encode(start, end), start * self.ENTRY.size)
                    self._file_entries = end
                if fsync:
                    fs.fsync(fd)
            finally:
                fs.close(fd)

    def rewrite(self, *, fsync: bool = False) -> None:
        """Make the file hold exactly the in-memory entries."""
        count = len(self._columns()[0])
        data = self._encode(0, count)
        fs = self.fs
        fd = fs.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            write_all(fs, fd, data, 0)
            if fsync:
                fs.fsync(fd)
        finally:
            fs.close(fd)
        self._file_entries = count

    def delete(self) -> None:
        try:
            self.fs.unlink(self.path)
        except FileNotFoundError:
            pass

    # -- queries ---------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._columns()[0])

    @property
    def is_full(self) -> bool:
        return len(self) >= self.entries_max

    @property
    def size_bytes(self) -> int:
        return len(self) * self.ENTRY.size


class OffsetIndex(_SparseIndex):
    """Sparse map: batch base offset -> byte position in the segment's .log."""

    ENTRY = _OFFSET_ENTRY

    def _decode(self, data: bytes) -> None:
        both = array("I")
        both.frombytes(data)
        if not _BIG_ENDIAN_HOST:
            both.byteswap()
        self._keys = both[0::2]
        self._values = both[1::2]

    def _encode(self, start: int, end: int) -> bytes:
        both = array("I", bytes(8 * (end - start)))
        keys, values = self._columns()
        both[0::2] = keys[start:end]
        both[1::2] = values[start:end]
        if not _BIG_ENDIAN_HOST:
            both.byteswap()
        return both.tobytes()

    def append(self, offset: int, position: int) -> None:
        """Add an entry. Caller guarantees offset and position grow (asserted).

        Hot path (once per index.interval.bytes of appends, so once per
        batch of 4 KiB or more): no loading, no property calls, no encoding
        (flush encodes); the active segment's index is always loaded.
        """
        keys, values = self._keys, self._values
        assert keys is not None and values is not None     # the active segment's index is loaded
        relative = offset - self.base_offset
        assert len(keys) < self.entries_max and relative <= U32_MAX and position <= U32_MAX and (
            relative > keys[-1] and position > values[-1] if keys else relative >= 0 and position >= 0
        ), (offset, position)
        keys.append(relative)
        values.append(position)

    def lookup(self, offset: int) -> OffsetPosition:
        """The last entry with offset <= `offset`, or (base offset, 0)."""
        keys, values = self._columns()
        i = bisect_right(keys, offset - self.base_offset) - 1
        if i < 0:
            return OffsetPosition(self.base_offset, 0)
        return OffsetPosition(self.base_offset + keys[i], values[i])

    def lookup_by_position(self, position: int) -> OffsetPosition:
        """The last entry with position <= `position`, or (base offset, 0)."""
        keys, values = self._columns()
        i = bisect_right(values, position) - 1
        if i < 0:
            return OffsetPosition(self.base_offset, 0)
        return OffsetPosition(self.base_offset + keys[i], values[i])

    def next_after(self, position: int) -> OffsetPosition | None:
        """The first entry with position > `position`, or None."""
        keys, values = self._columns()
        i = bisect_right(values, position)
        if i == len(values):
            return None
        return OffsetPosition(self.base_offset + keys[i], values[i])

    def last_entry(self) -> OffsetPosition:
        keys, values = self._columns()
        if not keys:
            return OffsetPosition(self.base_offset, 0)
        return OffsetPosition(self.base_offset + keys[-1], values[-1])

    def truncate_to(self, offset: int) -> None:
        """Drop entries with offset >= `offset` (in memory and in the file)."""
        keys, values = self._columns()
        keep = bisect_left(keys, offset - self.base_offset)
        if keep < len(keys):
            del keys[keep:]
            del values[keep:]
            self.rewrite()

    def sanity_check(self, log_size: int) -> str | None:
        """Kafka's sanityCheck: strictly increasing, positions inside the log."""
        keys, values = self._columns()
        name = os.path.basename(self.path)
        if any(a >= b for a, b in zip(keys, keys[1:])):
            return f"{name}: offsets not strictly increasing"
        if any(a >= b for a, b in zip(values, values[1:])):
            return f"{name}: positions not strictly increasing"
        if values and values[-1] >= max(log_size, 1):
            return f"{name}: position {values[-1]} beyond log size {log_size}"
        if values and values[0] == 0:
            return f"{name}: entry at position 0"
        return None


class TimeIndex(_SparseIndex):
    """Sparse map: largest timestamp so far -> base offset of the batch holding it."""

    ENTRY = _TIME_ENTRY

    def _decode(self, data: bytes) -> None:
        keys, values = array("q"), array("I")
        for timestamp, relative in _TIME_ENTRY.iter_unpack(data):
            keys.append(timestamp)
            values.append(relative)
        self._keys, self._values = keys, values

    def _encode(self, start: int, end: int) -> bytes:
        keys, values = self._columns()
        return b"".join(map(_TIME_ENTRY.pack, keys[start:end], values[start:end]))

    def maybe_append(self, timestamp: int, offset: int) -> bool:
        """Add an entry when `timestamp` is above the last one. Returns whether it did."""
        keys, values = self._columns()
        if (keys and timestamp <= keys[-1]) or len(keys) >= self.entries_max:
            return False
        relative = offset - self.base_offset
        assert 0 <= relative <= U32_MAX, offset
        assert not values or relative >= values[-1], (relative, values[-1])
        keys.append(timestamp)
        values.append(relative)
        return True

    def last_below(self, timestamp: int) -> TimestampOffset | None:
        """The last entry with timestamp < `timestamp`, or None."""
        keys, values = self._columns()
        i = bisect_left(keys, timestamp) - 1
        if i < 0:
            return None
        return TimestampOffset(keys[i], self.base_offset + values[i])

    def last_entry(self) -> TimestampOffset | None:
        """The last entry, reading only the file's last 12 bytes when not loaded."""
        if self._keys is None:
            fs = self.fs
            try:
                fd = fs.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                size = fs.fsize(fd)
                size -= size % _TIME_ENTRY.size
                if size == 0:
                    return None
                data = fs.pread(fd, _TIME_ENTRY.size, size - _TIME_ENTRY.size)
            finally:
                fs.close(fd)
            if len(data) < _TIME_ENTRY.size:
                return None
            timestamp, relative = _TIME_ENTRY.unpack(data)
            return TimestampOffset(timestamp, self.base_offset + relative)
        keys, values = self._columns()
        if not keys:
            return None
        return TimestampOffset(keys[-1], self.base_offset + values[-1])

    def truncate_to(self, offset: int) -> None:
        """Drop entries whose offset is >= `offset`."""
        keys, values = self._columns()
        relative = offset - self.base_offset
        keep = len(values)
        while keep and values[keep - 1] >= relative:
            keep -= 1
        if keep < len(keys):
            del keys[keep:]
            del values[keep:]
            self.rewrite()

    def sanity_check(self, next_offset: int) -> str | None:
        keys, values = self._columns()
        name = os.path.basename(self.path)
        if any(a >= b for a, b in zip(keys, keys[1:])):
            return f"{name}: timestamps not strictly increasing"
        if any(a > b for a, b in zip(values, values[1:])):
            return f"{name}: offsets decreasing"
        if values and self.base_offset + values[-1] >= max(next_offset, self.base_offset + 1):
            return f"{name}: offset {self.base_offset + values[-1]} beyond segment end {next_offset}"
        return None
