"""Opening a partition log: from the directory's files to the in-memory state (Kafka's LogLoader).

Theory of operation: `load_log` lists the directory (removing leftovers of
interrupted work), reads `log.checkpoint` and the clean-shutdown marker,
wraps every segment without reading it, lets `_recovery.py` label and
act on each segment (trust, scan and cut, delete), then sets the log
start offset, trims the leader epoch cache to the log's range and
rebuilds the producer state from its newest snapshot plus the batch
headers after it (`rebuild_producer_state`). After an unclean shutdown
everything from the recovery point on is fsynced and the recovery point
moves to the log end. The same function reloads a log in place after a
full disk poisoned it (`Log.recover_after_disk_full`): the page cache
then holds the truth, which is why the re-checked segments are fsynced.

Error handling: raises `OSError` from the file system, with every
descriptor it opened closed again; what recovery cut is logged and
returned in the report.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from minilog.protocol import CorruptBatchError

from ._checkpoint import CLEAN_SHUTDOWN, read_log_checkpoint
from ._cleaner_files import finish_swaps
from ._config import LogConfig
from ._durability import Durability
from ._epoch_cache import LeaderEpochCache
from ._errors import StorageError
from ._fs import FileSystem
from ._producer_state import ProducerStateManager
from ._recovery import RecoveryReport, log_cut, recover_segments, scan_directory
from ._segment import LogSegment
from ._segments import LogSegments

__all__ = ["LoadedLog", "load_log", "rebuild_producer_state"]

_log = logging.getLogger("minilog.storage")


@dataclass
class LoadedLog:
    """Everything a Log holds about its directory, consistent with the files."""

    epoch_cache: LeaderEpochCache
    durability: Durability
    segments: LogSegments
    producer_state: ProducerStateManager
    report: RecoveryReport


def load_log(dir_path: str, config: LogConfig, fs: FileSystem, clock: Callable[[], int]) -> LoadedLog:
    """Open the log in `dir_path` (which exists), recovering it after an unclean shutdown.

    Raises:
        OSError: from the file system (descriptors opened here are closed again).
    """
    epoch_cache = LeaderEpochCache(dir_path, fs=fs)
    durability = Durability(dir_path, fs, clock())
    segments = LogSegments(dir_path, config, fs, durability, epoch_cache)
    producer_state = ProducerStateManager(dir_path, fs)
    try:
        report = _load(dir_path, config, fs, clock, segments, epoch_cache, producer_state)
    except BaseException:
        segments.close_fds()
        raise
    return LoadedLog(epoch_cache, durability, segments, producer_state, report)


def _load(dir_path: str, config: LogConfig, fs: FileSystem, clock: Callable[[], int],
          segments: LogSegments, epoch_cache: LeaderEpochCache,
          producer_state: ProducerStateManager) -> RecoveryReport:
    now, durability = clock(), segments.durability
    finish_swaps(dir_path, fs)                # a cleaner swap cut short: complete or roll back
    sizes = scan_directory(dir_path, fs)
    marker = os.path.join(dir_path, CLEAN_SHUTDOWN)
    clean = marker_found = fs.exists(marker)
    try:
        checkpoint = read_log_checkpoint(dir_path, fs=fs)
    except ValueError as e:
        _log.warning("%s: %s; recovering the whole log", dir_path, e)
        checkpoint, clean = None, False
    recovery_point, log_start = checkpoint if checkpoint else (0, 0)
    found = [LogSegment.open_existing(dir_path, base, config, size_bytes=sizes[base], now_ms=now, fs=fs)
             for base in sorted(sizes)]
    if not found:
        found.append(LogSegment.create(dir_path, log_start, config, now, fs=fs))
        durability.dir_dirty = True
        clean = True                          # a brand-new log has nothing to recover
    for segment, following in zip(found, found[1:]):
        segment.next_offset = following.base_offset
    segments.segments = found                 # so a failure below closes their descriptors
    kept, report = recover_segments(dir_path, found, clean=clean, recovery_point=recovery_point,
                                    epoch_cache=epoch_cache, fs=fs)
    segments.replace(kept)
    kept[-1].writable_fd()
    log_end = segments.log_end_offset
    durability.log_start_offset = min(max(log_start, kept[0].base_offset), log_end)
    epoch_cache.truncate_from_end(log_end)
    epoch_cache.truncate_from_start(durability.log_start_offset)
    rebuild_producer_state(producer_state, segments, durability.log_start_offset)
    if marker_found:
        fs.unlink(marker)                     # from now on, a crash is an unclean shutdown
        durability.dir_dirty = True
    if clean:
        durability.recovery_point = min(max(recovery_point, durability.log_start_offset), log_end)
        fs.fsync_dir(dir_path)
    else:
        # What recovery kept becomes durable: every segment from the recovery point on is
        # fsynced (after an in-place reload its bytes may be in the page cache only).
        durability.unflushed = [s for s in kept[:-1] if s.next_offset > recovery_point]
        durability.flush_all(segments, clock())
    log_cut(dir_path, report)
    return report


def rebuild_producer_state(state: ProducerStateManager, segments: LogSegments, log_start: int) -> None:
    """Producer state of the batches below the log end: newest snapshot plus the headers after it.

    Without a usable snapshot the last two segments are replayed (Kafka's upgrade path).
    Snapshots above the log end are deleted (after a truncation or a recovery cut).
    """
    found = segments.segments
    fallback = max(found[-2 if len(found) > 1 else 0].base_offset, log_start)
    offset = max(state.load(segments.log_end_offset, fallback), log_start)
    try:
        for segment in found[segments.floor(offset):]:
            if segment.next_offset <= offset or segment.size_bytes == 0:
                continue
            start = 0
            if offset > segment.base_offset:
                start = segments.with_index(segment, lambda s: s.position_of(offset))
            for _, h in segment.iter_headers(start, segment.size_bytes):
                if h.producer_id >= 0 and h.base_sequence >= 0:
                    state.update(h.producer_id, h.producer_epoch, h.base_sequence, h.base_offset,
                                 h.last_offset, h.max_timestamp)
    except (CorruptBatchError, StorageError) as e:    # a damaged segment: serve what we know
        _log.warning("%s: producer state rebuilt only up to a damaged batch: %s", segments.dir_path, e)
    state.end_offset = segments.log_end_offset
