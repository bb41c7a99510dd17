"""Idempotent-producer state of one partition, with snapshots (Kafka's ProducerStateManager).

Rules:

- Per producer id the log remembers its epoch and the last
  `BATCHES_KEPT` (5, Kafka's) batches: first and last sequence, first and
  last offset, max timestamp. A leader append of a batch whose producer,
  epoch and sequences match a remembered batch is a duplicate (a retry):
  it is not written again and the original offsets are answered. Otherwise
  the batch must continue the producer's sequence (`OutOfOrderSequenceError`),
  or start a newer epoch at sequence 0, and may not carry an older epoch
  (`InvalidProducerEpochError`). Nothing is written for a rejected batch.
- The state always describes exactly the batches below `end_offset`
  (the log end): every append updates it, a truncation rebuilds it.
- A snapshot `<offset>.snapshot` holds the state of the batches below
  `<offset>`. One is written at each segment roll (offset = the new
  segment's base) and by a clean close (offset = log end); truncation
  deletes the snapshots above the cut, retention the ones below the first
  segment. Opening a log loads the newest snapshot at or below the log end
  and replays only the batch headers after it, so a restart (and a
  follower after a truncation) rebuilds the state without a scan of the log.

Snapshot layout (big-endian; like Kafka's `.snapshot` files, CRC-32C over
everything after the CRC field; docs/on-disk-format.md)::

    u16 version (1) | u32 crc32c | u32 producer count
    per producer: i64 producer id | i16 epoch | u8 batch count
        per batch: i32 first seq | i32 last seq | i64 first offset | i32 offset delta
                   | i64 max timestamp

A snapshot with a bad CRC, version or length is ignored (with a warning)
and deleted; the next older one is used. Without any usable snapshot, the
state is rebuilt from the start of the second-to-last segment (Kafka's
upgrade path does the same: older producers are forgotten, their next
batch is accepted as from a new producer).

Snapshots written at a roll are written without fsync (atomic rename) and
fsynced by the next flush; the one written by a clean close is fsynced.

Task safety: owner thread only (the Log serialises calls).
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

from crc32c import crc32c

from ._checkpoint import atomic_write
from ._errors import InvalidProducerEpochError, OutOfOrderSequenceError
from ._fs import FileSystem, read_file

__all__ = ["ProducerStateManager", "BatchMetadata", "ProducerEntry", "SNAPSHOT_SUFFIX",
           "snapshot_file_name", "encode_snapshot", "decode_snapshot"]

_log = logging.getLogger("minilog.storage")
SNAPSHOT_SUFFIX = ".snapshot"
BATCHES_KEPT = 5                      # Kafka's ProducerStateEntry.NumBatchesToRetain
_SEQUENCE_MODULUS = 2**31             # sequences wrap after INT32_MAX
_VERSION = 1
_HEAD = struct.Struct(">HI")          # version, crc
_COUNT = struct.Struct(">I")
_PRODUCER = struct.Struct(">qhB")
_BATCH = struct.Struct(">iiqiq")
_SNAPSHOT_NAME = re.compile(r"^(\d{20})\.snapshot$")
_SNAPSHOT_BYTES_MAX = 1 << 30


class BatchMetadata(NamedTuple):
    """One remembered idempotent batch: its sequences and where it landed."""

    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    max_timestamp: int


class ProducerEntry:
    """A producer's epoch and its last batches (oldest first)."""

    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: deque[BatchMetadata] = deque(maxlen=BATCHES_KEPT)

    def __repr__(self) -> str:
        return f"ProducerEntry(epoch={self.epoch}, batches={list(self.batches)})"


def snapshot_file_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def encode_snapshot(producers: dict[int, ProducerEntry]) -> bytes:
    parts = [_COUNT.pack(len(producers))]
    for pid, entry in sorted(producers.items()):
        parts.append(_PRODUCER.pack(pid, entry.epoch, len(entry.batches)))
        parts.extend(_BATCH.pack(b.first_seq, b.last_seq, b.first_offset, b.last_offset - b.first_offset,
                                 b.max_timestamp) for b in entry.batches)
    body = b"".join(parts)
    return _HEAD.pack(_VERSION, crc32c(body)) + body


def decode_snapshot(data: bytes) -> dict[int, ProducerEntry]:
    """Raises ValueError for a bad version, CRC or length."""
    if len(data) < _HEAD.size + _COUNT.size:
        raise ValueError(f"snapshot of {len(data)} bytes is truncated")
    version, crc = _HEAD.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"unknown snapshot version {version}")
    body = memoryview(data)[_HEAD.size:]
    if crc32c(body) != crc:
        raise ValueError("snapshot CRC mismatch")
    (count,), pos = _COUNT.unpack_from(body), _COUNT.size
    producers: dict[int, ProducerEntry] = {}
    try:
        for _ in range(count):
            pid, epoch, batches = _PRODUCER.unpack_from(body, pos)
            pos += _PRODUCER.size
            entry = producers[pid] = ProducerEntry(epoch)
            for _ in range(batches):
                first_seq, last_seq, first_offset, delta, max_ts = _BATCH.unpack_from(body, pos)
                pos += _BATCH.size
                entry.batches.append(BatchMetadata(first_seq, last_seq, first_offset, first_offset + delta,
                                                   max_ts))
    except struct.error as e:
        raise ValueError(f"snapshot truncated: {e}") from e
    if pos != len(body):
        raise ValueError(f"{len(body) - pos} bytes after the last producer")
    return producers


class ProducerStateManager:
    """Producer id -> ProducerEntry for the batches below `end_offset`, plus snapshot files."""

    def __init__(self, dir_path: str, fs: FileSystem) -> None:
        self.dir_path = dir_path
        self.fs = fs
        self.producers: dict[int, ProducerEntry] = {}
        self.end_offset = 0

    def __len__(self) -> int:
        return len(self.producers)

    # -- the append path ----------------------------------------------------------

    def check(self, producer_id: int, epoch: int, first_seq: int, last_offset_delta: int,
              ) -> BatchMetadata | None:
        """Check an idempotent leader batch before it is written.

        Returns:
            The remembered batch when this one is its duplicate, else None.

        Raises:
            InvalidProducerEpochError: the epoch is older than the producer's.
            OutOfOrderSequenceError: the sequence does not continue the producer's.
        """
        entry = self.producers.get(producer_id)
        if entry is None:
            return None                 # unknown producer: any sequence (as Kafka for a new one)
        last_seq = (first_seq + last_offset_delta) % _SEQUENCE_MODULUS
        if epoch < entry.epoch:
            raise InvalidProducerEpochError(f"producer {producer_id} epoch {epoch} < {entry.epoch}")
        if epoch == entry.epoch:
            for batch in entry.batches:
                if batch.first_seq == first_seq and batch.last_seq == last_seq:
                    return batch
            if entry.batches:
                expected = (entry.batches[-1].last_seq + 1) % _SEQUENCE_MODULUS
                if first_seq != expected:
                    raise OutOfOrderSequenceError(f"producer {producer_id}: expected sequence {expected}, "
                                                  f"got {first_seq}")
        elif first_seq != 0:
            raise OutOfOrderSequenceError(f"producer {producer_id}: a new epoch {epoch} must start at "
                                          f"sequence 0, got {first_seq}")
        return None

    def update(self, producer_id: int, epoch: int, first_seq: int, first_offset: int, last_offset: int,
               max_timestamp: int) -> None:
        """Remember a batch written at [first_offset, last_offset] (every append, leader or follower)."""
        entry = self.producers.get(producer_id)
        if entry is None or entry.epoch != epoch:
            entry = self.producers[producer_id] = ProducerEntry(epoch)
        last_seq = (first_seq + last_offset - first_offset) % _SEQUENCE_MODULUS
        entry.batches.append(BatchMetadata(first_seq, last_seq, first_offset, last_offset, max_timestamp))
        self.end_offset = last_offset + 1

    # -- snapshots ------------------------------------------------------------------

    def snapshot_offsets(self) -> list[int]:
        """Offsets of the snapshot files present, ascending."""
        offsets = []
        for name, _ in self.fs.list_dir(self.dir_path):
            match = _SNAPSHOT_NAME.match(name)
            if match:
                offsets.append(int(match.group(1)))
        return sorted(offsets)

    def _path(self, offset: int) -> str:
        return os.path.join(self.dir_path, snapshot_file_name(offset))

    def take_snapshot(self, offset: int, *, sync: bool, keep_from: int | None = None) -> str:
        """Write `<offset>.snapshot` of the state (all batches below `offset`); returns its path.

        With `sync` the file and its name are durable on return; otherwise the
        caller has the next flush fsync it. With `keep_from` (a clean close:
        the active segment's base), older snapshots above it are deleted, so
        restarts do not pile up files: one per segment base, plus the newest.

        Raises:
            OSError: from the file system.
        """
        assert offset >= self.end_offset, (offset, self.end_offset)
        path = self._path(offset)
        atomic_write(path, encode_snapshot(self.producers), fs=self.fs, sync=sync)
        if keep_from is not None:
            self.delete_snapshots(o for o in self.snapshot_offsets() if keep_from < o < offset)
        return path

    def delete_snapshots(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            path = self._path(offset)
            try:
                self.fs.unlink(path)
            except FileNotFoundError:
                pass

    def delete_snapshots_below(self, offset: int) -> None:
        """Retention moved the first segment to `offset`: older snapshots are useless."""
        self.delete_snapshots(o for o in self.snapshot_offsets() if o < offset)

    def load(self, log_end_offset: int, fallback_offset: int) -> int:
        """Load the newest usable snapshot at or below `log_end_offset`; delete the ones above it.

        Returns:
            The offset the state is good up to: the snapshot's, or
            `fallback_offset` (state empty) when no snapshot is usable. The
            caller replays the batches from there to the log end.

        Raises:
            OSError: from the file system.
        """
        offsets = self.snapshot_offsets()
        self.delete_snapshots(o for o in offsets if o > log_end_offset)
        for offset in reversed([o for o in offsets if o <= log_end_offset]):
            try:
                self.producers = decode_snapshot(read_file(self.fs, self._path(offset), _SNAPSHOT_BYTES_MAX))
            except ValueError as e:
                _log.warning("%s: %s is unusable (%s); deleting it", self.dir_path,
                             snapshot_file_name(offset), e)
                self.delete_snapshots([offset])
                continue
            self.end_offset = offset
            return offset
        self.producers = {}
        self.end_offset = fallback_offset
        return fallback_offset

    def clear(self, offset: int) -> None:
        """Forget every producer and delete every snapshot (the log restarts at `offset`)."""
        self.delete_snapshots(self.snapshot_offsets())
        self.producers = {}
        self.end_offset = offset
