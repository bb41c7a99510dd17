"""Kafka's default partitioner, so a key lands on the same partition number
as it would with a Java (or kafka-python) producer.

* Keyed records: `murmur2(key) & 0x7fffffff % num_partitions`, where murmur2
  is Kafka's `Utils.murmur2` (seed 0x9747b28c) and the mask is Kafka's
  `Utils.toPositive`. Tested against the vectors of Kafka's `UtilsTest` and
  kafka-python's implementation. `KeyPartitioner` memoises the hash of hot
  keys (bounded), so a repeated key costs one dict lookup.
* Records without a key: one "sticky" partition per topic until its batch is
  sealed, then another (KIP-480). The producer's accumulator owns that
  choice (`StickyPartitioner`); this module only picks the next partition.

Pure functions and in-memory memos, no I/O.
"""

from __future__ import annotations

import random

__all__ = ["murmur2", "partition_for_key", "KeyPartitioner", "StickyPartitioner"]

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


def partition_for_key(key: bytes, num_partitions: int) -> int:
    """Kafka's `toPositive(murmur2(key)) % num_partitions`: the uncached reference.

    The producer goes through `KeyPartitioner`, which memoises hot keys; this
    function is what that cache is tested against.
    """
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"key must be bytes, not {type(key).__name__}")
    return (murmur2(bytes(key)) & 0x7FFFFFFF) % num_partitions


class KeyPartitioner:
    """Kafka's keyed placement with a bounded memo of hot keys (one per producer).

    Theory of operation. Keys repeat (order ids, customer ids), and murmur2 in
    Python costs microseconds, so each distinct key is hashed once while it is
    hot. The memo holds `toPositive(murmur2(key))`, not the partition: the
    partition is that hash `% num_partitions`, taken on every call with the
    count the caller passes, so a change of a topic's partition count can
    never serve a stale partition (nothing to invalidate) and one memo serves
    every topic.

    Bounds: two generations, `hot` and `old`, of at most `entries_max` keys
    each; a key found in `old` moves back to `hot`; when `hot` is full it
    becomes `old` and the previous `old` is dropped (a cheap approximation of
    LRU: a key used at least once per `entries_max` distinct keys stays).
    Keys longer than `key_bytes_max` are hashed every time, never kept. So the
    memo holds at most `2 * entries_max` keys of at most `key_bytes_max`
    bytes each.

    Task safety: called from any caller thread without a lock. Each dict
    operation is atomic under the GIL; a race can at worst drop an entry or
    hash a key twice, never return a wrong hash (entries never change).
    """

    __slots__ = ("entries_max", "key_bytes_max", "_hot", "_old")

    def __init__(self, entries_max: int = 32768, key_bytes_max: int = 256) -> None:
        assert entries_max > 0 and key_bytes_max >= 0
        self.entries_max = entries_max      # keys per generation (two generations)
        self.key_bytes_max = key_bytes_max  # longer keys are not memoised
        self._hot: dict[bytes, int] = {}
        self._old: dict[bytes, int] = {}

    def partition(self, key: bytes, num_partitions: int) -> int:
        """`partition_for_key(key, num_partitions)`, memoised. `key` must be bytes."""
        h = self._hot.get(key)
        if h is None:
            h = self._old.get(key)
            if h is None:
                if type(key) is not bytes:
                    return partition_for_key(key, num_partitions)
                h = murmur2(key) & 0x7FFFFFFF
                if len(key) > self.key_bytes_max:
                    return h % num_partitions
            if len(self._hot) >= self.entries_max:
                self._old = self._hot
                self._hot = {}
            self._hot[key] = h
        return h % num_partitions

    def __len__(self) -> int:
        """Keys memoised now (both generations); at most `2 * entries_max`."""
        return len(self._hot) + len(self._old)


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
