"""Moving a log's bounds: the start forward (retention, DeleteRecords), the end back (truncation).

Rules:

- The log end moves back only by truncation, and the cut is fsynced and
  checkpointed before it returns, so a crash cannot bring the dropped
  batches back (an offset never names two different batches).
- The log start moves forward only, except when the whole log restarts at
  a new offset (a follower far behind its leader's log start).
- Every move keeps the four parts of a log consistent, in this order: the
  segment list (`_segments.py`), the leader epoch cache, the producer state
  (rebuilt from its snapshot and the remaining headers after a cut, its
  snapshots below the log start dropped), and durability (the recovery
  point never above the log end nor below the log start; `log.checkpoint`
  rewritten).

Theory of operation (Kafka `UnifiedLog.truncateTo`, `truncateFullyAndStartAt`,
`maybeIncrementLogStartOffset`, `deleteOldSegments`): the Log (`_log.py`)
checks the arguments and runs each function under its mutation guard (a
failure half-way poisons the Log); these functions do the moves. Which
segments go is decided by the pure policy `segments_to_delete`
(`_retention.py`).

Error handling: raises `OSError` from the file system and
`CorruptBatchError` for unreadable log data (rebuilding the producer
state); the caller's guard turns both into a poisoned log.
"""

from __future__ import annotations

from ._durability import Durability
from ._epoch_cache import LeaderEpochCache
from ._loader import rebuild_producer_state
from ._producer_state import ProducerStateManager
from ._retention import Deletion
from ._segments import LogSegments

__all__ = ["truncate_end", "restart_at", "move_start", "delete_head"]


def truncate_end(segments: LogSegments, durability: Durability, epoch_cache: LeaderEpochCache,
                 producer_state: ProducerStateManager, offset: int) -> None:
    """Cut the batches holding offsets >= `offset` (in [log start, log end))."""
    segments.truncate_to(offset)
    log_end = segments.log_end_offset
    epoch_cache.truncate_from_end(log_end)
    rebuild_producer_state(producer_state, segments, durability.log_start_offset)
    durability.recovery_point = min(durability.recovery_point, log_end)
    durability.checkpoint(log_end)


def restart_at(segments: LogSegments, durability: Durability, epoch_cache: LeaderEpochCache,
               producer_state: ProducerStateManager, offset: int, now_ms: int) -> None:
    """Delete every segment and restart the empty log at `offset` (>= 0)."""
    segments.restart_at(offset, now_ms)
    durability.log_start_offset = durability.recovery_point = offset
    epoch_cache.clear()
    producer_state.clear(offset)
    durability.checkpoint(segments.log_end_offset)


def move_start(durability: Durability, epoch_cache: LeaderEpochCache, offset: int) -> None:
    """Move the log start forward to `offset` (<= the log end); no segment is deleted here."""
    assert offset >= durability.log_start_offset
    durability.log_start_offset = offset
    epoch_cache.truncate_from_start(offset)


def delete_head(segments: LogSegments, durability: Durability, epoch_cache: LeaderEpochCache,
                producer_state: ProducerStateManager, deletions: list[Deletion], now_ms: int) -> None:
    """Delete the segments `deletions` names (a prefix of the list), move the log start past
    them, drop the producer snapshots below it and checkpoint."""
    assert [d.segment.base_offset for d in deletions] == segments.bases[:len(deletions)]
    segments.delete_head(len(deletions), now_ms)
    first_base = segments.segments[0].base_offset
    if first_base > durability.log_start_offset:
        move_start(durability, epoch_cache, first_base)
    producer_state.delete_snapshots_below(first_base)
    durability.recovery_point = max(durability.recovery_point, durability.log_start_offset)
    durability.checkpoint(segments.log_end_offset)
