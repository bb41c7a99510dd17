"""Kafka's "consumer" embedded protocol: what classic group members put in their opaque bytes.

The broker relays JoinGroup metadata and SyncGroup assignments without
reading them. Only to *show* a Kafka client's group (which topics a member
subscribes to, which partitions it was assigned: `minilog groups describe`)
does it read them, with these decoders. Byte layouts (Kafka's
ConsumerProtocolSubscription / ConsumerProtocolAssignment, non-flexible)::

    subscription:  int16 version, [string topic], bytes user_data, (v1+: [owned partitions]) ...
    assignment:    int16 version, [string topic, [int32 partition]], bytes user_data

Error handling: both return None when the bytes are not in this format
(another protocol type, or a client's private format); they never raise.
"""

from __future__ import annotations

from ._types import Buffer, KafkaProtocolError, Reader

__all__ = ["decode_subscription_topics", "decode_assignment"]


def decode_subscription_topics(data: Buffer) -> list[str] | None:
    """The topics a member subscribes to, or None if `data` is not a consumer subscription."""
    try:
        r = Reader(data)
        r.int16()
        count = r.array_count(2)
        assert count is not None
        return [str(r.string()) for _ in range(count)]
    except KafkaProtocolError:
        return None


def decode_assignment(data: Buffer) -> list[tuple[str, list[int]]] | None:
    """(topic, partitions) pairs of a member's assignment, or None if not a consumer assignment."""
    if len(data) == 0:
        return []
    try:
        r = Reader(data)
        r.int16()
        count = r.array_count(6)
        assert count is not None
        out = []
        for _ in range(count):
            topic = str(r.string())
            n = r.array_count(4)
            assert n is not None
            out.append((topic, [r.int32() for _ in range(n)]))
        return out
    except KafkaProtocolError:
        return None
