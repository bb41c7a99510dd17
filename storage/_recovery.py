"""Log recovery after an unclean shutdown, as labelled decision tables.

Theory of operation (Kafka `LogLoader`/`LogSegment.recover`, TigerBeetle's
`recovery_cases`): every segment gets a label from `SEGMENT_CASES`, and
every batch of a scanned segment gets a label from `BATCH_CASES`; the
label decides the action. Nothing is decided anywhere else.

    segment label          action   when
    ---------------------  -------  ----------------------------------------------
    clean-shutdown         TRUST    the clean marker exists: read index tails only
    below-recovery-point   TRUST    the segment ends at or before the recovery point
                                    (it was fsynced, indexes included)
    from-recovery-point    SCAN     it holds or follows the recovery point: it may
                                    hold torn or unsynced bytes
    tail-unreadable        SCAN     a trusted active segment whose index or tail
                                    did not pass the sanity check
    after-cut              DELETE   an earlier segment was cut (a bad batch, or it
                                    does not end where the next one starts:
                                    "offset-gap"): later offsets would not continue
                                    the log

    batch label            action    when
    ---------------------  --------  ---------------------------------------------
    whole-batch            KEEP      length, magic, CRC fine; offset continues the log
    torn-length            TRUNCATE  fewer than 12 bytes left for the length field
    garbage-length         TRUNCATE  length field below a header's size
    torn-tail              TRUNCATE  length runs past the end of the file
    corrupt-batch          TRUNCATE  magic, header fields or CRC are wrong
    offset-mismatch        TRUNCATE  base offset does not continue the log

SCAN checks batches one by one from the segment's start, rebuilding both
indexes and re-learning leader epochs as it goes, and cuts the file at the
first batch not labelled whole-batch. A length field is compared with the
bytes left in the file before anything is read, so a garbage length
(0x7fffffff) never drives an allocation. The scan reads 8 MiB chunks and
leaves the per-byte work to crc32c (hardware accelerated).

Error handling: recovery raises only `OSError` (the Log wraps it); what was
cut is logged at WARNING and returned in a `RecoveryReport`.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import dataclass, field

from minilog.protocol import LOG_OVERHEAD, CorruptBatchError, batch_size_at, check_batch

from ._epoch_cache import LeaderEpochCache
from ._segment import LogSegment

__all__ = [
    "Action",
    "SEGMENT_CASES",
    "BATCH_CASES",
    "RecoveryReport",
    "classify_batch",
    "scan_segment",
    "SegmentScan",
]

_log = logging.getLogger("minilog.storage")
_CHUNK_BYTES = 8 * 1024 * 1024


class Action(enum.Enum):
    TRUST = "trust"
    SCAN = "scan"
    DELETE = "delete"
    KEEP = "keep"
    TRUNCATE = "truncate"


SEGMENT_CASES: dict[str, Action] = {
    "clean-shutdown": Action.TRUST,
    "below-recovery-point": Action.TRUST,
    "from-recovery-point": Action.SCAN,
    "tail-unreadable": Action.SCAN,
    "after-cut": Action.DELETE,
}

BATCH_CASES: dict[str, Action] = {
    "whole-batch": Action.KEEP,
    "torn-length": Action.TRUNCATE,
    "garbage-length": Action.TRUNCATE,
    "torn-tail": Action.TRUNCATE,
    "corrupt-batch": Action.TRUNCATE,
    "offset-mismatch": Action.TRUNCATE,
}


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the log found and did. `truncated_bytes == 0` means nothing was cut."""

    clean_shutdown: bool
    recovery_point: int
    log_end_offset: int
    segments_scanned: int = 0
    bytes_scanned: int = 0
    truncated_bytes: int = 0
    truncated_at_offset: int | None = None      # first offset that no longer exists
    truncated_at_position: int | None = None    # in segment `truncated_segment`
    truncated_segment: int | None = None        # base offset
    truncated_label: str | None = None
    truncated_detail: str | None = None
    deleted_segments: tuple[int, ...] = ()      # base offsets of segments removed
    rebuilt_indexes: tuple[int, ...] = ()       # base offsets whose indexes were rebuilt
    segment_labels: dict = field(default_factory=dict)   # base offset -> segment label


def classify_batch(buf, pos: int, file_remaining: int, expected_offset: int):
    """Label the batch at `buf[pos:]`.

    `buf[pos:]` holds the whole batch, or everything left in the file when
    the batch claims more. Returns (label, header or None, detail).
    """
    if file_remaining < LOG_OVERHEAD:
        return "torn-length", None, f"{file_remaining} bytes left"
    try:
        size = batch_size_at(buf, pos)
    except CorruptBatchError as e:
        return "garbage-length", None, str(e)
    if size > file_remaining:
        return "torn-tail", None, f"batch claims {size} bytes, {file_remaining} left in the file"
    try:
        header = check_batch(buf, pos)
    except CorruptBatchError as e:
        return "corrupt-batch", None, str(e)
    if header.base_offset != expected_offset:
        return "offset-mismatch", header, f"base offset {header.base_offset}, expected {expected_offset}"
    return "whole-batch", header, ""


def _bytes_needed(buf, pos: int, remaining: int) -> int:
    """Bytes to have in memory before classifying the batch at `pos`.

    The claimed size is clamped to what the file holds, so a garbage length
    can never make us read (or allocate) more than the file's real bytes.
    """
    if len(buf) - pos < LOG_OVERHEAD:
        return min(LOG_OVERHEAD, remaining)
    claimed = int.from_bytes(buf[pos + 8 : pos + 12], "big", signed=True) + LOG_OVERHEAD
    return min(max(claimed, LOG_OVERHEAD), remaining)


@dataclass(frozen=True)
class SegmentScan:
    base_offset: int
    valid_bytes: int
    file_bytes: int
    label: str                  # "whole-batch" when the whole file was fine
    detail: str


def scan_segment(segment: LogSegment, file_bytes: int, epoch_cache: LeaderEpochCache) -> SegmentScan:
    """Check every batch of `segment`, rebuild its indexes, stop at the first bad one.

    The segment's tracking (size, next offset, max timestamp, indexes) is
    reset and rebuilt from the batches that pass. The file is not cut here.
    """
    segment.reset_tracking()
    fd = segment.fd()
    position = 0
    chunk, chunk_start = b"", 0
    while position < file_bytes:
        remaining = file_bytes - position
        in_chunk = position - chunk_start
        need = _bytes_needed(chunk, in_chunk, remaining)
        if len(chunk) - in_chunk < need:
            chunk = os.pread(fd, min(max(_CHUNK_BYTES, need), remaining), position)
            chunk_start, in_chunk = position, 0
            need = _bytes_needed(chunk, 0, remaining)
            if len(chunk) < need:       # one batch larger than a chunk: read exactly it
                chunk = os.pread(fd, need, position)
        label, header, detail = classify_batch(chunk, in_chunk, remaining, segment.next_offset)
        if BATCH_CASES[label] is Action.TRUNCATE:
            return SegmentScan(segment.base_offset, position, file_bytes, label, detail)
        assert BATCH_CASES[label] is Action.KEEP
        epoch = header.partition_leader_epoch
        if epoch > epoch_cache.latest_epoch:
            epoch_cache.assign(epoch, header.base_offset)
        segment._track(position, header.base_offset, header.next_offset,
                       header.max_timestamp, header.size)
        position += header.size
    return SegmentScan(segment.base_offset, position, file_bytes, "whole-batch", "")


def log_cut(dir_path: str, report: RecoveryReport) -> None:
    if report.truncated_bytes or report.deleted_segments:
        _log.warning(
            "%s: recovery cut %d bytes at offset %s (segment %s, position %s): %s (%s); "
            "deleted segments %s; log end offset now %d",
            dir_path, report.truncated_bytes, report.truncated_at_offset, report.truncated_segment,
            report.truncated_at_position, report.truncated_label, report.truncated_detail,
            list(report.deleted_segments), report.log_end_offset)
    elif not report.clean_shutdown:
        _log.info("%s: recovered %d segments (%d bytes) after an unclean shutdown, nothing cut",
                  dir_path, report.segments_scanned, report.bytes_scanned)
