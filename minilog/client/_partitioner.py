"""Kafka's default partitioner, so a key lands on the same partition number
as it would with a Java (or kafka-python) producer.

* Keyed records: `murmur2(key) & 0x7fffffff % num_partitions`, where murmur2
  is Kafka's `Utils.murmur2` (seed 0x9747b28c) and the mask is Kafka's
  `Utils.toPositive`. Tested against the vectors of Kafka's `UtilsTest` and
  kafka-python's implementation.
* Records without a key: one "sticky" partition per topic until its batch is
  sealed, then another (KIP-480). The producer's accumulator owns that
  choice (`StickyPartitioner`); this module only picks the next partition.

Pure functions, no I/O.
"""

from __future__ import annotations

import random

__all__ = ["murmur2", "partition_for_key", "StickyPartitioner"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2`: a signed 32-bit hash of `data`."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


_CACHE: dict[bytes, int] = {}
_CACHE_MAX = 65536


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Kafka's `toPositive(murmur2(key)) % num_partitions`.

    Hashes are memoised for up to 64 Ki distinct keys (keys repeat: order
    ids, user ids), which makes the common case one dict lookup.
    """
    h = _CACHE.get(key)
    if h is None:
        if not isinstance(key, (bytes, bytearray, memoryview)):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        h = murmur2(bytes(key)) & 0x7FFFFFFF
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[bytes(key)] = h
    return h % num_partitions


class StickyPartitioner:
    """KIP-480: choose a partition for keyless records, change on new batch.

    `next(topic, num_partitions, previous)` returns a partition different
    from `previous` when there is a choice. Seeded for tests.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def next(self, num_partitions: int, previous: int | None = None) -> int:
        if num_partitions <= 1:
            return 0
        p = self._random.randrange(num_partitions - (previous is not None))
        if previous is not None and p >= previous:
            p += 1
        return p
