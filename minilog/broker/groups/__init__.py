"""Consumer groups: the coordinator, server-side assignment, committed offsets.

Modules, each with one job:
- `_assignors`: range, roundrobin and sticky assignment as pure functions.
- `_group`: one group's state machine and KIP-848 reconciliation (pure).
- `_offsets`: committed offsets in memory and their `__consumer_offsets`
  record format and loader (pure).
- `_classic`: one Kafka classic (JoinGroup/SyncGroup) group's state machine (pure).
- `classic`: the classic groups of a coordinator, with trio's clock and the waiting.
- `coordinator`: the trio-facing GroupCoordinator; its request-model methods
  serve `minilog.broker.handlers.groups`.

The broker builds and wires the coordinator (see minilog/broker/app.py).
"""

from .coordinator import (
    OFFSETS_TOPIC,
    CoordinatorConfig,
    GroupCoordinator,
    group_partition,
    offsets_topic_configs,
)

__all__ = ["GroupCoordinator", "offsets_topic_configs", "CoordinatorConfig", "group_partition", "OFFSETS_TOPIC"]
