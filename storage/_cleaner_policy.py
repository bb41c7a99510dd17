"""When a compacted log is cleaned, and which part of it: pure functions, callers act.

Theory of operation (Kafka's `LogCleanerManager.cleanableOffsets`,
`maxCompactionDelay` and `grabFilthiestCompactedLog`, KIP-354): a
compacted log is split at two offsets,

    log start ........ first dirty ............... first uncleanable ...... log end
    |   clean section   |      dirty section        |   not cleanable yet      |

- first dirty: where the previous pass stopped (the cleaner checkpoint),
  clamped to [log start, log end]; the log start when there is none.
- first uncleanable: the smallest of the active segment's base offset (the
  active segment is never cleaned), the high watermark and the recovery
  point (only replicated, fsynced data is rewritten), and, with
  `min.compaction.lag.ms` > 0, the base offset of the first dirty segment
  holding a record younger than the lag.

The cleanable ratio is dirty bytes / (clean + dirty bytes), counting whole
segments. A log is due when

    reason                  condition
    ----------------------  -------------------------------------------------
    max.compaction.lag.ms   a dirty closed segment's first batch is older than the
                            lag (KIP-354), and there are dirty bytes
    min.cleanable.dirty.ratio  ratio >= min.cleanable.dirty.ratio (and dirty bytes)
    delete.retention.ms     the earliest delete horizon of a tombstone the last pass
                            kept has passed (KIP-534), and there are clean bytes

and the due log with the largest ratio goes first (`pick_log`), logs whose
compaction lag is exceeded before all others.

Everything here is pure: no clock, no files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CleanableSegment", "Cleanable", "cleanable_range", "clean_reason", "pick_log",
           "REASON_RATIO", "REASON_MAX_LAG", "REASON_TOMBSTONES"]

REASON_RATIO = "min.cleanable.dirty.ratio"
REASON_MAX_LAG = "max.compaction.lag.ms"
REASON_TOMBSTONES = "delete.retention.ms"


@dataclass(frozen=True)
class CleanableSegment:
    """What the policy needs to know about a segment."""

    base_offset: int
    next_offset: int
    size_bytes: int
    max_timestamp_ms: int           # -1 when unknown
    first_batch_timestamp_ms: int   # -1 when unknown (empty segment)
    is_active: bool = False


@dataclass(frozen=True)
class Cleanable:
    """The split of one log. Offsets are absolute; bytes count whole segments."""

    first_dirty_offset: int
    first_uncleanable_offset: int
    clean_bytes: int
    dirty_bytes: int
    max_compaction_delay_ms: int    # > 0: the max compaction lag is exceeded by this much
    tombstones_due: bool = False    # a kept tombstone's delete horizon has passed

    @property
    def cleanable_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


def cleanable_range(
    segments: Sequence[CleanableSegment],
    *,
    log_start_offset: int,
    log_end_offset: int,
    checkpoint: int | None,
    now_ms: int,
    min_compaction_lag_ms: int,
    max_compaction_lag_ms: int,
    uncleanable_from: int,
    tombstone_horizon_ms: int = -1,
) -> Cleanable:
    """Split the log (see the module table).

    Args:
        segments: every segment, oldest first, the active one last.
        checkpoint: the first dirty offset of the previous pass, or None.
        tombstone_horizon_ms: the earliest delete horizon of a tombstone the
            previous pass kept, -1 when none.
        uncleanable_from: min(high watermark, recovery point): nothing at or
            above it is rewritten.
    """
    if checkpoint is None or not log_start_offset <= checkpoint <= log_end_offset:
        first_dirty = log_start_offset
    else:
        first_dirty = checkpoint
    first_uncleanable = min(uncleanable_from, log_end_offset)
    active = [s for s in segments if s.is_active]
    if active:
        first_uncleanable = min(first_uncleanable, active[0].base_offset)
    dirty = [s for s in segments if not s.is_active and s.next_offset > first_dirty]
    if min_compaction_lag_ms > 0:
        for segment in dirty:
            if segment.max_timestamp_ms > now_ms - min_compaction_lag_ms:
                first_uncleanable = min(first_uncleanable, segment.base_offset)
                break
    for segment in segments:                 # never rewrite part of a segment: snap down
        if segment.base_offset < first_uncleanable < segment.next_offset:
            first_uncleanable = segment.base_offset
            break
    first_uncleanable = max(first_uncleanable, first_dirty)
    clean_bytes = sum(s.size_bytes for s in segments
                      if not s.is_active and s.next_offset <= first_dirty)
    dirty_bytes = sum(s.size_bytes for s in dirty if s.next_offset <= first_uncleanable)
    delay = 0
    if max_compaction_lag_ms >= 0:
        firsts = [s.first_batch_timestamp_ms for s in dirty
                  if s.next_offset <= first_uncleanable and s.first_batch_timestamp_ms > 0]
        clean_until = now_ms - max_compaction_lag_ms
        if firsts and min(firsts) < clean_until:
            delay = clean_until - min(firsts)
    tombstones_due = 0 <= tombstone_horizon_ms <= now_ms and clean_bytes > 0
    return Cleanable(first_dirty, first_uncleanable, clean_bytes, dirty_bytes, delay, tombstones_due)


def clean_reason(cleanable: Cleanable, min_cleanable_dirty_ratio: float) -> str | None:
    """Why the log is due for cleaning, or None."""
    if cleanable.dirty_bytes > 0:
        if cleanable.max_compaction_delay_ms > 0:
            return REASON_MAX_LAG
        if cleanable.cleanable_ratio >= min_cleanable_dirty_ratio:
            return REASON_RATIO
    if cleanable.tombstones_due:
        return REASON_TOMBSTONES
    return None


def pick_log(candidates: Sequence[tuple[str, Cleanable, float]]) -> str | None:
    """The name of the log to clean next among (name, cleanable, min ratio), or None.

    Logs past their max compaction lag come first (longest delay first),
    then the dirtiest by ratio; ties go to the first candidate.
    """
    due = [(name, c) for name, c, ratio in candidates if clean_reason(c, ratio) is not None]
    if not due:
        return None
    lagging = [(name, c) for name, c in due if c.max_compaction_delay_ms > 0]
    if lagging:
        return max(lagging, key=lambda nc: nc[1].max_compaction_delay_ms)[0]
    return max(due, key=lambda nc: nc[1].cleanable_ratio)[0]
