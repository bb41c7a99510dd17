"""Retention and rolling policies as pure functions; the Log acts on the answers.

Theory of operation: the Log describes its segments as `SegmentInfo`
values and asks `segments_to_delete(...)` which ones may go. The answer is
always a prefix of the segment list (oldest first), because a log never
has holes: offsets stay dense from the log start to the log end, and the
log start only moves forward. A segment is deletable when:

    reason             condition
    -----------------  ---------------------------------------------------------
    log-start-offset   its next offset <= the log start offset (delete_records)
    retention.ms       now - its max timestamp > retention.ms (retention.ms >= 0)
    retention.bytes    the log stays >= retention.bytes without it (>= 0)

and in every case it lies wholly below the high watermark (replicas still
need it otherwise) and is not the empty active segment. The active segment
may be in the answer: the Log then rolls first, so expired data does not
linger in a segment that never fills (Kafka's `deleteSegments` does the
same). Precedent: Kafka `UnifiedLog.deletableSegments`, jocko
`commitlog/delete_cleaner.go`.

`should_roll(...)` answers when the active segment must be closed before an
append. Both functions are pure: no clock, no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

__all__ = ["SegmentInfo", "Deletion", "segments_to_delete", "should_roll", "RollReason"]


@dataclass(frozen=True)
class SegmentInfo:
    """What policies need to know about a segment."""

    base_offset: int
    next_offset: int            # one past the last offset it holds
    size_bytes: int
    max_timestamp_ms: int       # -1 when no batch has a timestamp
    is_active: bool = False


@dataclass(frozen=True)
class Deletion:
    segment: SegmentInfo
    reason: str                 # "log-start-offset", "retention.ms" or "retention.bytes"


def segments_to_delete(
    segments: Sequence[SegmentInfo],
    now_ms: int,
    retention_bytes: int,
    retention_ms: int,
    *,
    log_start_offset: int = 0,
    high_watermark: int | None = None,
) -> list[Deletion]:
    """The oldest segments retention allows to delete, oldest first.

    Args:
        segments: every segment, oldest first, the active one last.
        now_ms: wall clock.
        retention_bytes: -1 for no size limit.
        retention_ms: -1 to keep forever.
        log_start_offset: segments wholly below it go regardless of retention.
        high_watermark: only segments wholly below it may go (None: no bound).

    Returns:
        A prefix of `segments`, each with the first reason that applies.
    """
    excess_bytes = sum(s.size_bytes for s in segments) - retention_bytes
    out: list[Deletion] = []
    for segment in segments:
        if segment.is_active and segment.size_bytes == 0:
            break
        if high_watermark is not None and segment.next_offset > high_watermark:
            break
        if segment.next_offset <= log_start_offset:
            reason = "log-start-offset"
        elif retention_ms >= 0 and segment.max_timestamp_ms >= 0 and (
            now_ms - segment.max_timestamp_ms > retention_ms
        ):
            reason = "retention.ms"
        elif retention_bytes >= 0 and excess_bytes - segment.size_bytes >= 0:
            reason = "retention.bytes"
        else:
            break
        excess_bytes -= segment.size_bytes
        out.append(Deletion(segment, reason))
    return out


class RollReason:
    SEGMENT_BYTES = "segment.bytes"
    SEGMENT_MS = "segment.ms"
    INDEX_FULL = "segment.index.bytes"
    OFFSET_OVERFLOW = "relative-offset-overflow"


def should_roll(
    segment_size_bytes: int,
    batch_size_bytes: int,
    segment_bytes: int,
    waited_ms: int,
    segment_ms: int,
    index_full: bool,
    relative_last_offset: int,
) -> str | None:
    """Why the active segment must roll before this append, or None: the one roll predicate.

    Called by every append (positionally: it is on the hot path).

    An empty segment never rolls (a batch larger than segment.bytes still
    gets a segment of its own, as in Kafka). `waited_ms` is the segment's
    age as Kafka's `timeWaitedForRoll` measures it (`LogSegment.time_waited_for_roll_ms`).
    """
    if segment_size_bytes == 0:
        return None
    if segment_size_bytes + batch_size_bytes > segment_bytes:
        return RollReason.SEGMENT_BYTES
    if waited_ms > segment_ms:
        return RollReason.SEGMENT_MS
    if index_full:
        return RollReason.INDEX_FULL
    if relative_last_offset > 2**32 - 1:
        return RollReason.OFFSET_OVERFLOW
    return None
