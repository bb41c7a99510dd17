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
                                    ends after the next one starts: "offset-gap"):
                                    later offsets would not continue the log (a gap
                                    between segments is legal: compaction leaves them)

    batch label            action    when
    ---------------------  --------  ---------------------------------------------
    whole-batch            KEEP      length, magic, CRC fine; offset continues the log
    torn-length            TRUNCATE  fewer than 12 bytes left for the length field
    garbage-length         TRUNCATE  length field below a header's size
    torn-tail              TRUNCATE  length runs past the end of the file
    corrupt-batch          TRUNCATE  magic, header fields or CRC are wrong
    offset-mismatch        TRUNCATE  base offset below the previous batch's end (a gap
                                     above it is legal: compaction leaves gaps, as in Kafka)

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

from typing import Any

from minilog.protocol import LOG_OVERHEAD, BatchHeader, CorruptBatchError, batch_size_at, check_batch

from ._epoch_cache import LeaderEpochCache
from ._fs import Buffer, FileSystem
from ._segment import DELETED_SUFFIX, LOG_SUFFIX, LogSegment, parse_segment_file_name

__all__ = [
    "Action",
    "SEGMENT_CASES",
    "BATCH_CASES",
    "RecoveryReport",
    "classify_batch",
    "scan_segment",
    "SegmentScan",
    "scan_directory",
    "recover_segments",
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
    segment_labels: dict[int, str] = field(default_factory=dict)   # base offset -> segment label


def classify_batch(buf: Buffer, pos: int, file_remaining: int, expected_offset: int,
                   ) -> tuple[str, BatchHeader | None, str]:
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
    if header.base_offset < expected_offset:     # above it: a gap left by compaction
        return "offset-mismatch", header, f"base offset {header.base_offset}, expected {expected_offset}"
    return "whole-batch", header, ""


def _bytes_needed(buf: Buffer, pos: int, remaining: int) -> int:
    """Bytes to have in memory before classifying the batch at `pos`.

    The claimed size is clamped to what the file holds, so a garbage length
    can never make us read (or allocate) more than the file's real bytes.
    """
    overhead: int = LOG_OVERHEAD
    if len(buf) - pos < overhead:
        return min(overhead, remaining)
    claimed = int.from_bytes(buf[pos + 8 : pos + 12], "big", signed=True) + overhead
    return min(max(claimed, overhead), remaining)


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
    pread = segment.fs.pread
    position = 0
    chunk, chunk_start = b"", 0
    while position < file_bytes:
        remaining = file_bytes - position
        in_chunk = position - chunk_start
        need = _bytes_needed(chunk, in_chunk, remaining)
        if len(chunk) - in_chunk < need:
            chunk = pread(fd, min(max(_CHUNK_BYTES, need), remaining), position)
            chunk_start, in_chunk = position, 0
            need = _bytes_needed(chunk, 0, remaining)
            if len(chunk) < need:       # one batch larger than a chunk: read exactly it
                chunk = pread(fd, need, position)
        label, header, detail = classify_batch(chunk, in_chunk, remaining, segment.next_offset)
        if BATCH_CASES[label] is Action.TRUNCATE:
            return SegmentScan(segment.base_offset, position, file_bytes, label, detail)
        assert BATCH_CASES[label] is Action.KEEP and header is not None
        epoch = header.partition_leader_epoch
        if epoch > epoch_cache.latest_epoch:
            epoch_cache.assign(epoch, header.base_offset)
        segment._track(position, header.base_offset, header.next_offset,
                       header.max_timestamp, header.size)
        position += header.size
    return SegmentScan(segment.base_offset, position, file_bytes, "whole-batch", "")


def scan_directory(dir_path: str, fs: FileSystem) -> dict[int, int]:
    """Sizes of the .log files by base offset; removes leftovers of interrupted work.

    Reads only directory entries and sizes: no file is opened.
    """
    sizes: dict[int, int] = {}
    index_files: list[tuple[int, str]] = []
    for name, size in fs.list_dir(dir_path):
        path = os.path.join(dir_path, name)
        if name.endswith((DELETED_SUFFIX, ".tmp")):
            fs.unlink(path)                    # deletion was due, or a write never completed
            continue
        parsed = parse_segment_file_name(name)
        if parsed is None:
            continue
        base, suffix = parsed
        if suffix == LOG_SUFFIX:
            sizes[base] = size
        else:
            index_files.append((base, path))
    for base, path in index_files:
        if base not in sizes:                  # an index without its log: derived data, drop it
            fs.unlink(path)
    return sizes


def recover_segments(dir_path: str, segments: list[LogSegment], *, clean: bool,
                     recovery_point: int, epoch_cache: LeaderEpochCache, fs: FileSystem,
                     ) -> tuple[list[LogSegment], RecoveryReport]:
    """Label every segment (SEGMENT_CASES) and act on the label.

    Args:
        segments: every segment found, oldest first, closed ones knowing
            their next offset; none of their data has been read yet.

    Returns:
        The segments kept (the last is the active one, its tail known) and
        the report. Cut files are fsynced; rewritten indexes too.

    Raises:
        OSError: from the file system.
    """
    labels: dict[int, str] = {}
    cut: dict[str, Any] = {}
    scanned: list[SegmentScan] = []
    deleted: list[int] = []
    keep: list[LogSegment] = []
    for i, segment in enumerate(segments):
        following = segments[i + 1] if i + 1 < len(segments) else None
        label = _label_segment(dir_path, segment, clean, recovery_point,
                               is_last=following is None, after_cut=bool(cut))
        labels[segment.base_offset] = label
        action = SEGMENT_CASES[label]
        if action is Action.DELETE:
            segment.delete_files(rename_only=False)
            deleted.append(segment.base_offset)
            continue
        keep.append(segment)
        if action is Action.SCAN:
            scan = _scan_and_cut(segment, epoch_cache, is_last=following is None)
            scanned.append(scan)
            if scan.valid_bytes < scan.file_bytes:
                cut = dict(truncated_bytes=scan.file_bytes - scan.valid_bytes,
                           truncated_at_offset=segment.next_offset,
                           truncated_at_position=scan.valid_bytes,
                           truncated_segment=segment.base_offset,
                           truncated_label=scan.label, truncated_detail=scan.detail)
            elif following is not None and following.base_offset < segment.next_offset:
                cut = dict(truncated_bytes=0, truncated_at_offset=segment.next_offset,
                           truncated_segment=following.base_offset, truncated_label="offset-gap",
                           truncated_detail=f"next segment starts at {following.base_offset}")
    if deleted:
        fs.fsync_dir(dir_path)
    report = RecoveryReport(
        clean_shutdown=clean, recovery_point=recovery_point, log_end_offset=keep[-1].next_offset,
        segments_scanned=len(scanned), bytes_scanned=sum(s.file_bytes for s in scanned),
        deleted_segments=tuple(deleted), rebuilt_indexes=tuple(s.base_offset for s in scanned),
        segment_labels=labels, **cut)
    return keep, report


def _label_segment(dir_path: str, segment: LogSegment, clean: bool, recovery_point: int, *,
                   is_last: bool, after_cut: bool) -> str:
    """The SEGMENT_CASES label; trusting the active segment means reading its tail."""
    if after_cut:
        return "after-cut"
    if clean:
        label = "clean-shutdown"
    elif not is_last and segment.next_offset <= recovery_point:
        label = "below-recovery-point"
    else:
        label = "from-recovery-point"
    if SEGMENT_CASES[label] is Action.TRUST and is_last:
        try:
            problem = segment.check_indexes(active=True)
            if problem is None:
                segment.load_tail()
                return label
            _log.warning("%s: %s", dir_path, problem)
        except CorruptBatchError as e:
            _log.warning("%s: active segment tail unreadable: %s", dir_path, e)
        return "tail-unreadable"
    return label


def _scan_and_cut(segment: LogSegment, epoch_cache: LeaderEpochCache, *, is_last: bool) -> SegmentScan:
    """Check every batch, cut the file at the first bad one, rewrite both indexes."""
    scan = scan_segment(segment, segment.size_bytes, epoch_cache)
    if scan.valid_bytes < scan.file_bytes:
        segment.truncate_to_position(scan.valid_bytes)
        segment.fs.fsync(segment.writable_fd())
    if not is_last:
        segment.seal()                      # closed: last time index entry = max timestamp
    segment.index.rewrite(fsync=True)
    segment.time_index.rewrite(fsync=True)
    return scan


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
