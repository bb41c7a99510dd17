"""Durability: fsync, the recovery point and `log.checkpoint`, owned in one place.

Rules:

- The recovery point only moves to an offset whose bytes (and index
  entries, and directory entries) were fsynced before it moved. Recovery
  after a crash trusts everything below it and re-checks from the segment
  holding it (`_recovery.py`).
- `log.checkpoint` holds the recovery point and the log start offset; it is
  rewritten atomically (`atomic_write`) by `checkpoint()` and only here.
- Which segments still need an fsync (closed by a roll, not yet flushed)
  and whether the directory does (a segment created, renamed or deleted)
  is tracked here, under `lock`.

Theory of operation (Kafka `UnifiedLog.flush` / `LocalLog.recoveryPoint`):
a flush snapshots, under `lock`, the log end and the segments holding
every offset below it, then fsyncs them without the lock and moves the
recovery point to the snapshot's end. A roll takes the same lock to move
the old active segment into `unflushed`. So a flush may run in a worker
thread while the owner keeps appending and rolling (the broker's pattern):
the snapshot's end was written before the snapshot was taken, and every
segment holding it is fsynced.

Task safety: `flush_all`, `flush_rolled` and `checkpoint` may run in one
worker thread concurrently with appends and rolls on the owner thread
(`lock` and `checkpoint_lock`); everything else is the owner's.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol

from ._checkpoint import write_log_checkpoint
from ._fs import FileSystem
from ._segment import LogSegment

__all__ = ["Durability"]


class SegmentList(Protocol):
    """What a flush needs of the segment list (`LogSegments`, which imports this module)."""

    @property
    def log_end_offset(self) -> int: ...

    @property
    def active(self) -> LogSegment: ...


class Durability:
    """The recovery point, the log start offset as persisted, and what awaits an fsync."""

    def __init__(self, dir_path: str, fs: FileSystem, now_ms: int) -> None:
        self.dir_path = dir_path
        self.fs = fs
        self.recovery_point = 0
        self.log_start_offset = 0
        self.unflushed: list[LogSegment] = []      # closed by a roll, not yet fsynced
        self.unsynced_files: list[str] = []        # written without fsync (producer snapshots)
        self.dir_dirty = False                     # directory entries changed since the last fsync
        self.unflushed_messages = 0                # records appended since the last flush
        self.last_flush_ms = now_ms
        self.flushes_total = 0
        self.lock = threading.Lock()               # roll vs a flush in a worker thread
        self.checkpoint_lock = threading.Lock()    # log.checkpoint writers

    def forget_removed(self, kept: list[LogSegment]) -> None:
        """Segments were deleted: stop tracking the ones not in `kept`."""
        self.unflushed = [s for s in self.unflushed if s in kept]

    def checkpoint(self, log_end_offset: int) -> None:
        """Write `log.checkpoint` (recovery point clamped to the log end, log start)."""
        with self.checkpoint_lock:
            write_log_checkpoint(self.dir_path, min(self.recovery_point, log_end_offset),
                                 self.log_start_offset, fs=self.fs)

    def flush_all(self, segments: SegmentList, now_ms: int) -> None:
        """fsync every segment holding offsets below the current log end; move the recovery point.

        Raises:
            OSError: from the file system (the caller poisons the log).
        """
        with self.lock:
            end = segments.log_end_offset
            todo = [*self.unflushed, segments.active]
            self.unflushed = []
            dir_dirty, self.dir_dirty = self.dir_dirty, False
            files, self.unsynced_files = self.unsynced_files, []
        self.unflushed_messages = 0
        for segment in todo:
            segment.flush(fsync=True)
        self._sync_files(files)
        if dir_dirty:
            self.fs.fsync_dir(self.dir_path)
        self._advance(end, segments.log_end_offset)
        self.last_flush_ms = now_ms
        self.flushes_total += 1

    def flush_rolled(self, segments: SegmentList) -> bool:
        """fsync the segments closed by rolls; move the recovery point to their end.

        Returns whether anything was flushed. Raises OSError like `flush_all`.
        """
        with self.lock:
            todo, self.unflushed = self.unflushed, []
            dir_dirty, self.dir_dirty = self.dir_dirty, False
            files, self.unsynced_files = self.unsynced_files, []
        if not todo:
            with self.lock:
                self.dir_dirty = self.dir_dirty or dir_dirty
                self.unsynced_files[:0] = files
            return False
        for segment in todo:
            segment.flush(fsync=True)
        self._sync_files(files)
        if dir_dirty:
            self.fs.fsync_dir(self.dir_path)
        self._advance(todo[-1].next_offset, segments.log_end_offset)
        return True

    def _sync_files(self, paths: list[str]) -> None:
        for path in paths:
            try:
                fd = self.fs.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue                           # deleted since (truncation, retention)
            try:
                self.fs.fsync(fd)
            finally:
                self.fs.close(fd)

    def _advance(self, end: int, log_end_offset: int) -> None:
        with self.checkpoint_lock:
            self.recovery_point = min(max(self.recovery_point, end), log_end_offset)
            write_log_checkpoint(self.dir_path, self.recovery_point, self.log_start_offset, fs=self.fs)
