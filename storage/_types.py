"""Result types of the partition log's API (`Log.append`, `Log.statistics`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["AppendInfo", "LogStatistics"]


class AppendInfo(NamedTuple):
    base_offset: int
    last_offset: int
    max_timestamp: int            # ms; the broker's time under LogAppendTime
    log_append_time: int          # ms under LogAppendTime, else -1 (Kafka's NO_TIMESTAMP)
    position: int                 # byte position in the segment (diagnostics)
    segment_base_offset: int      # -1 for a duplicate
    duplicate: bool = False       # an idempotent retry: nothing written, the original offsets


@dataclass(frozen=True)
class LogStatistics:
    log_start_offset: int
    log_end_offset: int
    recovery_point: int
    size_bytes: int
    segment_count: int
    active_segment_base_offset: int
    active_segment_bytes: int
    unflushed_messages: int
    latest_leader_epoch: int
    appends_total: int
    bytes_appended_total: int
    rolls_total: int
    flushes_total: int
    segments_deleted_total: int
    index_rebuilds_total: int
