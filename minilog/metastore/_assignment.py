"""Replica assignment: which brokers hold each partition, and which of them leads. Pure.

Rules (checked by a property test over many cluster shapes):
- every partition gets `replication_factor` distinct brokers, all live;
- the first replica is the preferred leader (Kafka's convention);
- over one topic, replica counts per broker differ by at most one, and so do
  preferred-leader counts;
- the same inputs give the same assignment (no hidden randomness: the
  caller picks `start_index`, e.g. from the topic name or a seeded random).

Theory of operation. Deal the P x R replica slots round-robin over the
brokers (rotated by `start_index`): slot s goes to broker s mod n. R
consecutive slots are R distinct brokers when R <= n, and dealing keeps the
replica counts within one. Leadership needs one more step: partition p's
first slot is p*R mod n, which only ever reaches the brokers in one residue
class modulo g = gcd(R, n). The dealing repeats every L = n/g partitions, so
for the k-th period the leader is taken from slot (k mod R) of each
partition, whose brokers form residue class (k mod g); consecutive periods
walk the classes round-robin, and each period names L distinct leaders,
which keeps leader counts within one too. Kafka's own rack-unaware
assignment (AdminUtils.assignReplicasToBrokersRackUnaware) balances leaders
only when P is a multiple of n; this does for any P.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["assign_replicas"]


def assign_replicas(
    partitions: int, replication_factor: int, brokers: Sequence[int], *, start_index: int = 0
) -> list[tuple[int, ...]]:
    """Replica lists (preferred leader first) for partitions 0..partitions-1.

    Args:
        partitions: number of partitions, >= 1.
        replication_factor: replicas per partition, 1..len(brokers).
        brokers: ids of the live brokers (any order; duplicates are an error).
        start_index: rotates which broker receives the first slot.

    Raises:
        ValueError: replication factor larger than the live brokers, or bad counts.
    """
    ordered = sorted(brokers)
    n = len(ordered)
    if len(set(ordered)) != n:
        raise ValueError(f"duplicate broker ids in {list(brokers)}")
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    if not 1 <= replication_factor <= n:
        raise ValueError(f"replication factor {replication_factor} needs at least that many live brokers (have {n})")
    rotated = ordered[start_index % n :] + ordered[: start_index % n]
    period = n // math.gcd(replication_factor, n)
    assignment = []
    for p in range(partitions):
        slots = [rotated[(p * replication_factor + j) % n] for j in range(replication_factor)]
        lead = (p // period) % replication_factor
        assignment.append(tuple(slots[lead:] + slots[:lead]))
    return assignment
