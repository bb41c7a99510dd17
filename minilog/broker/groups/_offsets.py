"""Committed offsets in memory, and their records in `__consumer_offsets`.

Rules:
- Pure and synchronous: no trio, no I/O. The coordinator appends the
  records this module encodes and feeds back the batches it reads.
- The in-memory store keeps only the latest value per (group, topic,
  partition): loading a long history costs memory for the live keys only.
- The loader accepts only batches this module wrote (one record each,
  uncompressed, msgpack key and value) on the fast path and falls back to the
  general record decoder for anything else, so it never misreads a batch.

Record format. Every write is one RecordBatch v2 holding one record; key
and value are msgpack arrays whose first element is the format version, so
versions coexist in one history (the loader reads both):

    offset commit   key   [2, "o", group_id, [[topic, [partition, ...]], ...]]
      (version 2)   value [2, [[topic, partition, offset, leader_epoch,
                                metadata | nil, commit_timestamp_ms], ...]]
                    The key names the group AND the partitions the value
                    sets (topics and partitions sorted), so two commit
                    records with equal key bytes set exactly the same
                    partitions: the later one makes the earlier irrelevant.
                    An entry with offset -1 deletes that partition's offset.
    offset commit   key   [1, "o", group_id]            (written before v2;
      (version 1)   value [1, [rows as above]]           still read)
    group metadata  key   [1, "g", group_id]
                    value [1, group_epoch, assignor, timestamp_ms]
                    value nil (a tombstone): the group and all its offsets
                    are deleted.

Why one record per commit request rather than one per partition (Kafka):
a commit request of N partitions is one record, so the loader does one
header walk per request instead of N varint-framed records in Python. A
future compactor must keep the latest entry per (group, topic, partition)
across records; for version-2 commits, keeping the latest record per key
bytes (before the group's last tombstone) is a safe first step.

Loading (`load_buffer`): a version-2 commit record is not decoded when it is
read: the loader only remembers, per raw key bytes, where the latest record
with that key is (one dict store per record). At the end of each read, and
before any record that could interact with pending commits (a tombstone, a
version-1 commit, anything unusual), the surviving records are decoded and
applied in log order. That is exact: for every (group, topic, partition) the
last record touching it is the last one of its key, so it survives, and
survivors are applied in log order. Group-metadata records are applied at
once (they do not touch offsets). Every batch's CRC is still checked; only
a superseded record's msgpack value is never decoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import msgpack
from crc32c import crc32c

from minilog.protocol import CRC_START, CorruptBatchError, build_batch, decode_records

__all__ = [
    "FORMAT_VERSION",
    "OffsetAndMetadata",
    "GroupMetadata",
    "OffsetStore",
    "encode_commit",
    "encode_group_metadata",
    "encode_group_tombstone",
    "iter_offset_records",
    "METADATA_BYTES_MAX",
]

FORMAT_VERSION = 2            # of offset-commit records; group records stay version 1
GROUP_FORMAT_VERSION = 1
METADATA_BYTES_MAX = 4096   # offset.metadata.max.bytes, Kafka's default
KIND_COMMIT = "o"
KIND_GROUP = "g"

TopicPartition = tuple[str, int]


class OffsetAndMetadata(NamedTuple):
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int


@dataclass(frozen=True)
class GroupMetadata:
    group_epoch: int
    assignor: str
    timestamp_ms: int


_pack = msgpack.Packer(use_bin_type=True).pack


def _batch(key: bytes, value: bytes | None, timestamp_ms: int) -> bytes:
    return build_batch([value], [key], timestamps=timestamp_ms)


def encode_commit(group_id: str, entries: Iterable[tuple[str, int, int, int, str | None]],
                  timestamp_ms: int) -> bytes:
    """One batch committing (topic, partition, offset, leader_epoch, metadata) entries.

    Rows are sorted by (topic, partition) (stable: of a partition given twice
    the later entry still wins), and the key lists them, so equal key bytes
    mean "sets the same partitions" (see the module docstring).
    """
    rows = sorted(([t, p, o, e, m, timestamp_ms] for t, p, o, e, m in entries),
                  key=lambda r: (r[0], r[1]))
    topics: list = []
    for r in rows:
        if not topics or topics[-1][0] != r[0]:
            topics.append([r[0], []])
        parts = topics[-1][1]
        if not parts or parts[-1] != r[1]:
            parts.append(r[1])
    return _batch(_pack([FORMAT_VERSION, KIND_COMMIT, group_id, topics]),
                  _pack([FORMAT_VERSION, rows]), timestamp_ms)


def encode_commit_v1(group_id: str, entries: Iterable[tuple[str, int, int, int, str | None]],
                     timestamp_ms: int) -> bytes:
    """A version-1 commit batch (what brokers before format 2 wrote); for tests."""
    rows = [[t, p, o, e, m, timestamp_ms] for t, p, o, e, m in entries]
    return _batch(_pack([1, KIND_COMMIT, group_id]), _pack([1, rows]), timestamp_ms)


def encode_group_metadata(group_id: str, group_epoch: int, assignor: str, timestamp_ms: int) -> bytes:
    return _batch(_pack([GROUP_FORMAT_VERSION, KIND_GROUP, group_id]),
                  _pack([GROUP_FORMAT_VERSION, group_epoch, assignor, timestamp_ms]), timestamp_ms)


def encode_group_tombstone(group_id: str, timestamp_ms: int) -> bytes:
    return _batch(_pack([GROUP_FORMAT_VERSION, KIND_GROUP, group_id]), None, timestamp_ms)


# The first bytes of every version-2 commit key: fixarray(4), 2, fixstr "o".
_V2_COMMIT_PREFIX = _pack([FORMAT_VERSION, KIND_COMMIT, "", []])[:4]
_V1_COMMIT_PREFIX = _pack([1, KIND_COMMIT, ""])[:4]
assert _V2_COMMIT_PREFIX == b"\x94\x02\xa1o" and _V1_COMMIT_PREFIX == b"\x93\x01\xa1o"


def _varint(buf, pos: int) -> tuple[int, int]:
    """Kafka's zigzag varint at `pos` -> (value, next position)."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint too long")


_HEADER = struct.Struct(">qiibIhiqqqhii")   # Kafka RecordBatch v2 header (61 bytes)
_HEADER7 = struct.Struct(">qi4xbIhi30xi")   # the fields the loader uses, same layout
_LENGTH = struct.Struct(">i")
_ATTR_SIMPLE_MASK = 0x07 | 0x20             # codec bits and the control bit


def _varint_at(buf, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:                      # one byte: the common case, no call overhead
        return (b >> 1) ^ -(b & 1), pos + 1
    return _varint(buf, pos)


def iter_offset_records(buf) -> Iterator[tuple[int, bytes | None, bytes | None]]:
    """(next offset, key, value) of every record in the whole batches of `buf`, in order.

    `next offset` is the offset after the record's batch (where a reader resumes).

    A trailing partial batch is ignored (a read may end with one).

    Raises:
        CorruptBatchError: a batch fails its CRC or is malformed.
    """
    buf = bytes(buf)
    end = len(buf)
    pos = 0
    unpack = _HEADER.unpack_from
    while end - pos >= 61:
        (base_offset, length, _, magic, crc, attributes, last_delta, _, _, _, _, _,
         count) = unpack(buf, pos)
        size = length + 12
        if length < 49 or magic != 2:
            raise CorruptBatchError(f"bad batch length or magic at offset {base_offset}")
        if size > end - pos:
            return
        batch_end = pos + size
        if count == 1 and not attributes & _ATTR_SIMPLE_MASK:
            if crc32c(buf[pos + CRC_START:batch_end]) != crc:
                raise CorruptBatchError(f"CRC mismatch at offset {base_offset}")
            try:
                _, p = _varint_at(buf, pos + 61)      # record length
                _, p = _varint_at(buf, p + 1)         # (attributes) timestamp delta
                _, p = _varint_at(buf, p)             # offset delta
                klen, p = _varint_at(buf, p)
                key = buf[p:p + klen] if klen >= 0 else None
                p += max(klen, 0)
                vlen, p = _varint_at(buf, p)
                value = buf[p:p + vlen] if vlen >= 0 else None
            except IndexError:
                raise CorruptBatchError(f"truncated record at offset {base_offset}") from None
            if p + max(vlen, 0) >= batch_end:
                raise CorruptBatchError(f"record overruns its batch at offset {base_offset}")
            yield base_offset + last_delta + 1, key, value
        else:
            for rec in decode_records(buf[pos:batch_end], "__consumer_offsets", -1):
                yield base_offset + last_delta + 1, rec.key, rec.value
        pos = batch_end


class OffsetStore:
    """Latest committed offset per (group, topic, partition), plus group metadata.

    Rows are kept as the decoded msgpack lists [topic, partition, offset,
    leader_epoch, metadata, commit_timestamp_ms] (no per-row object on the
    load path); an offset of -1 marks a deleted offset and reads as absent.

    Not task-safe by itself; the coordinator calls it from one task at a time.
    """

    _KEY_CACHE_MAX = 100_000

    def __init__(self) -> None:
        self.offsets: dict[str, dict[TopicPartition, list]] = {}
        self.metadata: dict[str, GroupMetadata] = {}
        self.last_commit_ms: dict[str, int] = {}
        self._keys: dict[bytes, tuple[str, str]] = {}

    # -------------------------------------------------------------- mutations

    def _key(self, key: bytes | None) -> tuple[str, str]:
        cached = self._keys.get(key)  # type: ignore[arg-type]
        if cached is not None:
            return cached
        k = msgpack.unpackb(key, use_list=True) if key is not None else None
        if not (isinstance(k, list) and len(k) >= 3 and isinstance(k[2], str)
                and ((len(k) == 3 and k[0] == 1 and k[1] in (KIND_COMMIT, KIND_GROUP))
                     or (len(k) == 4 and k[0] == 2 and k[1] == KIND_COMMIT
                         and isinstance(k[3], list)))):
            raise ValueError(f"unknown key {k!r}")
        if len(self._keys) >= self._KEY_CACHE_MAX:
            self._keys.clear()
        self._keys[key] = cached = (k[1], k[2])  # type: ignore[index]
        return cached

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of `__consumer_offsets` (replay or live write).

        Raises:
            CorruptBatchError: the key or value is not a record this format knows.
        """
        try:
            kind, group_id = self._key(key)
            v = msgpack.unpackb(value, use_list=True) if value is not None else None
            if kind == KIND_COMMIT:
                if v is None:
                    raise ValueError("an offset commit record without a value")
                rows = v[1]
                group = self.offsets.get(group_id)
                if group is None:
                    group = self.offsets[group_id] = {}
                group.update({(r[0], r[1]): r for r in rows})
                if rows:
                    self.last_commit_ms[group_id] = rows[-1][5]
            elif v is None:
                self.delete_group(group_id)
            else:
                self.metadata[group_id] = GroupMetadata(v[1], v[2], v[3])
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            raise CorruptBatchError(f"bad __consumer_offsets record: {exc}") from None

    def delete_group(self, group_id: str) -> None:
        self.offsets.pop(group_id, None)
        self.metadata.pop(group_id, None)
        self.last_commit_ms.pop(group_id, None)

    def load(self, buffers: Iterable) -> int:
        """Replay the batches in `buffers` (in log order). Returns records applied."""
        n = 0
        for buf in buffers:
            count, _ = self.load_buffer(buf)
            n += count
        return n

    def load_buffer(self, buf) -> tuple[int, int | None]:
        """Replay the whole batches of one read. Returns (records, next offset or None).

        The batches this module writes (one record, small header fields) are
        framed inline: no generator, no call per varint. A version-2 commit
        is deferred (`pending`: raw key -> batch position, latest wins) and
        decoded only if it survives (see the module docstring); anything
        else flushes the pending commits first where order matters. A
        trailing partial batch is ignored.

        Raises:
            CorruptBatchError: a batch fails its CRC or a record is unreadable.
        """
        buf = bytes(buf)
        end = len(buf)
        pos = 0
        n = 0
        next_offset = None
        unpack = _HEADER7.unpack_from
        startswith = buf.startswith
        prefix = _V2_COMMIT_PREFIX
        prefix_v1 = _V1_COMMIT_PREFIX
        pending: dict[bytes, int] = {}
        crc32c_ = crc32c
        crc_start = CRC_START
        last = -1                           # position of the last whole batch
        try:
            while end - pos >= 61:
                base_offset, length, magic, crc, attributes, last_delta, count = unpack(buf, pos)
                if length < 49 or magic != 2:
                    raise CorruptBatchError(f"bad batch length or magic at offset {base_offset}")
                batch_end = pos + length + 12
                if batch_end > end:
                    break
                last = pos
                if crc32c_(buf[pos + crc_start:batch_end]) != crc:
                    raise CorruptBatchError(f"CRC mismatch at offset {base_offset}")
                if count == 1 and not attributes & 0x27:        # _ATTR_SIMPLE_MASK
                    # record: length, attributes 0, timestamp delta 0, offset delta 0,
                    # key length, key, value length, value, header count 0
                    p = pos + 61
                    p += 1 if buf[p] < 0x80 else (2 if buf[p + 1] < 0x80 else 3)
                    kb = buf[p + 3]
                    if kb < 0x80:
                        kz = kb
                        kp = p + 4
                    elif buf[p + 4] < 0x80:
                        kz = (kb & 0x7F) | (buf[p + 4] << 7)
                        kp = p + 5
                    else:
                        kz = 1              # longer key: the general path
                    if not (kz & 1 or buf[p] or buf[p + 1] or buf[p + 2]):
                        vp = kp + (kz >> 1)
                        vb = buf[vp]
                        if vb < 0x80:
                            vlen = (vb >> 1) ^ -(vb & 1)
                            vp += 1
                        else:
                            vlen, vp = _varint(buf, vp)
                        if vlen >= 0 and vp + vlen + 1 == batch_end:
                            if startswith(prefix, kp):
                                pending[buf[kp:kp + (kz >> 1)]] = pos
                                n += 1
                                pos = batch_end
                                continue
                            if startswith(prefix_v1, kp):     # history written before v2
                                if pending:
                                    self._flush(buf, pending)
                                self._apply_v1_commit(buf[kp:kp + (kz >> 1)], buf, vp, vlen,
                                                      base_offset)
                                n += 1
                                pos = batch_end
                                continue
                # Not a deferrable commit: group metadata needs no flush (it
                # does not touch offsets); everything else may.
                records = list(iter_offset_records(buf[pos:batch_end]))
                for _, k, v in records:
                    if pending and not (v is not None and k is not None
                                        and self._key(k)[0] == KIND_GROUP):
                        self._flush(buf, pending)
                    self.apply(k, v)
                    n += 1
                pos = batch_end
        except IndexError:
            raise CorruptBatchError(f"truncated record at position {pos} of a read") from None
        except ValueError as exc:          # an unknown key from _key
            raise CorruptBatchError(f"bad __consumer_offsets record: {exc}") from None
        if pending:
            self._flush(buf, pending)
        if last >= 0:
            base_offset, _, _, _, _, last_delta, _ = unpack(buf, last)
            next_offset = base_offset + last_delta + 1
        return n, next_offset

    def _apply_v1_commit(self, key: bytes, buf: bytes, vp: int, vlen: int,
                         base_offset: int) -> None:
        """`apply` of a version-1 commit record, inlined for long v1 histories."""
        kind_group = self._keys.get(key)
        if kind_group is None:
            self.apply(key, buf[vp:vp + vlen])
            return
        try:
            rows = msgpack.unpackb(buf[vp:vp + vlen])[1]
            group = self.offsets.get(kind_group[1])
            if group is None:
                group = self.offsets[kind_group[1]] = {}
            if len(rows) == 1:
                r = rows[0]
                group[(r[0], r[1])] = r
            else:
                group.update({(r[0], r[1]): r for r in rows})
            if rows:
                self.last_commit_ms[kind_group[1]] = rows[-1][5]
        except (ValueError, TypeError, IndexError, msgpack.UnpackException) as exc:
            raise CorruptBatchError(f"bad __consumer_offsets record at offset "
                                    f"{base_offset}: {exc}") from None

    def _flush(self, buf: bytes, pending: dict[bytes, int]) -> None:
        """Apply the surviving deferred commits (batch positions in `buf`) in log order."""
        positions = sorted(pending.values())
        pending.clear()
        for pos in positions:
            (length,) = _LENGTH.unpack_from(buf, pos + 8)
            for _, k, v in iter_offset_records(buf[pos:pos + length + 12]):
                self.apply(k, v)

    # -------------------------------------------------------------- queries

    def fetch(self, group_id: str,
              partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, OffsetAndMetadata | None]:
        group = self.offsets.get(group_id, {})
        if partitions is None:
            return {tp: OffsetAndMetadata(r[2], r[3], r[4], r[5])
                    for tp, r in sorted(group.items()) if r[2] >= 0}
        out: dict[TopicPartition, OffsetAndMetadata | None] = {}
        for tp in partitions:
            r = group.get(tp)
            out[tp] = OffsetAndMetadata(r[2], r[3], r[4], r[5]) if r and r[2] >= 0 else None
        return out

    def groups(self) -> set[str]:
        return set(self.offsets) | set(self.metadata)

    def expired_groups(self, now_ms: int, retention_ms: int, active: set[str],
                       empty_since_ms: dict[str, int]) -> list[str]:
        """Groups with no members whose last activity is older than retention_ms.

        A group's last activity is the later of its last commit and the time
        it became empty (Kafka's rule for consumer groups).
        """
        out = []
        for group_id in self.groups():
            if group_id in active:
                continue
            last = max(self.last_commit_ms.get(group_id, 0), empty_since_ms.get(group_id, 0),
                       self.metadata[group_id].timestamp_ms if group_id in self.metadata else 0)
            if now_ms - last >= retention_ms:
                out.append(group_id)
        return sorted(out)
