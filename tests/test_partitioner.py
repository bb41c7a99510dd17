"""The default partitioner matches Kafka's: murmur2 vectors, toPositive, sticky keyless."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minilog.client._partitioner import (
    KeyPartitioner,
    StickyPartitioner,
    murmur2,
    partition_for_key,
)

# Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2.
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (bytes([ord("a"), ord("b"), ord("c")]), 479470107),
]


@pytest.mark.parametrize("data, expected", KAFKA_VECTORS)
def test_murmur2_matches_kafka_vectors(data, expected):
    """Our murmur2 returns Kafka's signed 32-bit hash for its published vectors."""
    assert murmur2(data) == expected


def test_murmur2_matches_kafka_python_oracle():
    """Random keys of every tail length hash as kafka-python's murmur2 (seeded)."""
    oracle = pytest.importorskip("kafka.partitioner.default").murmur2
    rng = random.Random(1234)
    for i in range(3000):
        data = bytes(rng.randrange(256) for _ in range(i % 41))
        assert murmur2(data) & 0xFFFFFFFF == oracle(data), f"seed 1234, case {i}: {data!r}"


def test_partition_for_key_is_to_positive_mod_n():
    """partition = (murmur2(key) & 0x7fffffff) % n, as Kafka's BuiltInPartitioner."""
    for key, h in KAFKA_VECTORS:
        for n in (1, 2, 3, 7, 12, 100):
            assert partition_for_key(key, n) == (h & 0x7FFFFFFF) % n


def test_partition_for_key_matches_kafka_python_default_partitioner():
    """kafka-python's DefaultPartitioner picks the same partition for the same key."""
    mod = pytest.importorskip("kafka.partitioner.default")

    class Cluster:  # the two methods kafka-python's partitioner asks for
        def topics(self):
            return {"t"}

        def partitions_for_topic(self, topic):
            return set(range(6))

        def available_partitions_for_topic(self, topic):
            return set(range(6))

    partitioner = mod.DefaultPartitioner()
    rng = random.Random(7)
    for _ in range(500):
        key = rng.randbytes(rng.randrange(1, 30))
        expected = partitioner.partition("t", key, key, b"", b"", Cluster())
        assert partition_for_key(key, 6) == expected, f"seed 7: {key!r}"


def test_partition_for_key_rejects_non_bytes():
    """A str key must be encoded by the caller first (the producer does it)."""
    with pytest.raises(TypeError):
        partition_for_key("abc", 3)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.binary(max_size=40), min_size=1, max_size=200),
       counts=st.lists(st.integers(1, 1000), min_size=1, max_size=4),
       entries_max=st.integers(1, 16))
def test_key_partitioner_matches_uncached_function(keys, counts, entries_max):
    """The memo returns the uncached partition for every key, repeats and evictions included."""
    kp = KeyPartitioner(entries_max=entries_max, key_bytes_max=20)
    for n in counts:
        for key in keys + keys[::-1]:
            assert kp.partition(key, n) == partition_for_key(key, n), (key, n)
    assert len(kp) <= 2 * entries_max


def test_key_partitioner_bound_is_respected_and_hot_keys_stay():
    """At most 2 * entries_max keys are kept; long keys are never kept; a key used often stays."""
    kp = KeyPartitioner(entries_max=100, key_bytes_max=16)
    rng = random.Random(5)
    hot = b"order-hot"
    for i in range(10_000):
        kp.partition(rng.randbytes(rng.randrange(1, 16)), 12)
        if i % 50 == 0:
            kp.partition(hot, 12)
        assert len(kp) <= 200, f"seed 5, step {i}"
    assert hot in kp._hot or hot in kp._old
    before = len(kp)
    for _ in range(50):
        kp.partition(rng.randbytes(17), 12)   # longer than key_bytes_max
    assert len(kp) == before


def test_key_partitioner_follows_a_partition_count_change():
    """When a topic grows, the same memo places each key by the new count at once."""
    kp = KeyPartitioner()
    keys = [f"customer-{i}".encode() for i in range(500)]
    assert [kp.partition(k, 6) for k in keys] == [partition_for_key(k, 6) for k in keys]
    moved = [kp.partition(k, 12) for k in keys]
    assert moved == [partition_for_key(k, 12) for k in keys]
    assert any(a != b for a, b in zip(moved, [partition_for_key(k, 6) for k in keys]))


def test_sticky_partitioner_changes_partition_when_possible():
    """KIP-480: the next sticky partition differs from the previous one when n > 1."""
    sp = StickyPartitioner(seed=1)
    assert sp.next(1) == 0 and sp.next(1, previous=0) == 0
    seen = set()
    prev = sp.next(4)
    for _ in range(200):
        p = sp.next(4, previous=prev)
        assert p != prev and 0 <= p < 4
        seen.add(p)
        prev = p
    assert seen == {0, 1, 2, 3}
