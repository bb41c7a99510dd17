"""The cleaner's view of a live `Log`: snapshots of its segments, and the in-memory swap.

Both run on the log's owner thread (the broker's event loop), briefly: a
snapshot reads what the Log already knows; a swap renames files
(`_cleaner_files.commit_swap`), fsyncs the directory and puts one
`LogSegment` object in the place of another under the durability lock (a
flush in a worker thread sees the list before or after, never half).

Error handling: `replace_segment` turns an `OSError` into
`LogCorruptedError` by poisoning the log (the next open finishes or rolls
back the half-done swap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._cleaner_files import CleanedSegment, StepHook, commit_swap, discard_cleaned
from ._fs import OS_FS, FileSystem
from ._segment import LogSegment

if TYPE_CHECKING:
    from ._log import Log

__all__ = ["SegmentFile", "LogSnapshot", "snapshot_log", "replace_segment"]


@dataclass(frozen=True)
class SegmentFile:
    """A closed segment as the cleaner sees it (a snapshot taken on the owner thread)."""

    base_offset: int
    next_offset: int
    size_bytes: int
    log_path: str
    max_timestamp_ms: int
    first_batch_timestamp_ms: int       # -1 when empty or not read


@dataclass(frozen=True)
class LogSnapshot:
    dir_path: str
    log_start_offset: int
    log_end_offset: int
    recovery_point: int
    closed: tuple[SegmentFile, ...]      # oldest first
    active_base_offset: int
    active_size_bytes: int
    fs: FileSystem = OS_FS


def snapshot_log(log: Log, *, first_batch_timestamps: bool = False) -> LogSnapshot:
    """What the cleaner needs to know of `log`, taken on its owner thread."""
    log._check_usable()
    segments = log._segments.segments
    closed = []
    for segment in segments[:-1]:
        first_ts = -1
        if first_batch_timestamps and segment.size_bytes > 0:
            first_ts = segment.header_at(0).max_timestamp
        closed.append(SegmentFile(segment.base_offset, segment.next_offset, segment.size_bytes,
                                  segment.log_path, segment.max_timestamp[0], first_ts))
    active = segments[-1]
    return LogSnapshot(log.dir_path, log.log_start_offset, log.log_end_offset, log.recovery_point,
                       tuple(closed), active.base_offset, active.size_bytes, log.fs)


def replace_segment(log: Log, cleaned: CleanedSegment, *, step_hook: StepHook | None = None) -> bool:
    """Swap `cleaned` in for the log's segment of the same base offset (owner thread).

    Returns False, and discards the cleaned files, when that segment is gone
    or changed meanwhile (retention deleted it, truncation cut it).

    Raises:
        LogCorrupted: a file operation failed half-way; the log is poisoned
            and the next open finishes or rolls back the swap.
    """
    log._check_usable()
    owner = log._segments
    segments = owner.segments
    index = next((i for i, s in enumerate(segments[:-1]) if s.base_offset == cleaned.base_offset), None)
    if index is None or segments[index].size_bytes != cleaned.source_size_bytes:
        discard_cleaned(cleaned)
        return False
    old = segments[index]
    with log._mutation("cleaner swap"):
        old.close_fd()
        owner._read_fds.pop(old.base_offset, None)
        commit_swap(cleaned, step_hook=step_hook)
        if cleaned.size_bytes == 0:
            with owner.durability.lock:
                del segments[index]
                del owner.bases[index]
                if index > 0:
                    segments[index - 1].next_offset = old.next_offset
        else:
            new = LogSegment.open_existing(log.dir_path, old.base_offset, log.config,
                                           size_bytes=cleaned.size_bytes, now_ms=log._clock(),
                                           fs=log.fs)
            new.next_offset = old.next_offset
            with owner.durability.lock:
                segments[index] = new
    return True
