"""The default partitioner matches Kafka's: murmur2 vectors, toPositive, sticky keyless."""

from __future__ import annotations

import random

import pytest

from minilog.client._partitioner import StickyPartitioner, murmur2, partition_for_key

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
