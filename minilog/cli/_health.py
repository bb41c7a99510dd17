"""Which partitions are under-replicated or offline: a pure function over one Metadata answer.

Kafka's tool (`kafka-topics --describe --under-replicated-partitions` and
`--unavailable-partitions`) judges a partition from its leader, replicas and
ISR as the cluster's metadata has them; so does this module:

    offline            no leader (-1), or the named leader is not among the live brokers
    under-replicated   the ISR is smaller than the replica set

An offline partition is reported as offline only (it is usually under-replicated
too). The ISR shrinks only when the leader (or the controller, for a dead
leader) removes a replica, after `replica.lag.time.max.ms` for a slow follower;
a broker killed a moment ago may still be listed in ISRs until then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["OFFLINE", "UNDER_REPLICATED", "PartitionHealth", "partition_health", "unhealthy_partitions"]

OFFLINE = "offline"
UNDER_REPLICATED = "under-replicated"


@dataclass(frozen=True)
class PartitionHealth:
    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    status: str               # OFFLINE | UNDER_REPLICATED | "ok"


def partition_health(leader: int, replicas: Iterable[int], isr: Iterable[int],
                     live_brokers: Iterable[int]) -> str:
    """OFFLINE, UNDER_REPLICATED or "ok" for one partition."""
    if leader < 0 or leader not in set(live_brokers):
        return OFFLINE
    if len(set(isr)) < len(set(replicas)):
        return UNDER_REPLICATED
    return "ok"


def unhealthy_partitions(partitions: Mapping[str, Iterable[Any]], live_brokers: Iterable[int],
                         *, topics: Iterable[str] | None = None,
                         statuses: Iterable[str] = (OFFLINE, UNDER_REPLICATED)) -> list[PartitionHealth]:
    """The partitions (of `topics`, or all) whose status is in `statuses`, by topic and partition.

    `partitions` maps a topic to objects with partition, leader, replicas, isr
    (the client's `ClusterMetadata.partitions`).
    """
    live = set(live_brokers)
    wanted = set(statuses)
    names = sorted(partitions) if topics is None else [t for t in topics if t in partitions]
    out = []
    for name in names:
        for p in sorted(partitions[name], key=lambda p: p.partition):
            status = partition_health(p.leader, p.replicas, p.isr, live)
            if status in wanted:
                out.append(PartitionHealth(name, p.partition, p.leader, tuple(p.replicas),
                                           tuple(p.isr), status))
    return out
