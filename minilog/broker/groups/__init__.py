"""Consumer groups: the coordinator, server-side assignment, committed offsets.

Modules, each with one job:
- `_assignors`: range, roundrobin and sticky assignment as pure functions.
- `_group`: one group's state machine and KIP-848 reconciliation (pure).
- `_offsets`: committed offsets in memory and their `__consumer_offsets`
  record format and loader (pure).
- `_classic`: one Kafka classic (JoinGroup/SyncGroup) group's state machine (pure).
- `classic`: the classic groups of a coordinator, with trio's clock and the waiting.
- `_placement`: which `__consumer_offsets` partition holds a group, that
  topic's configs, and the coordinator's settings (pure).
- `_views`: the groups as the request model shows them (describe, list) and
  the request <-> pure-payload translations (pure).
- `coordinator`: the trio-facing GroupCoordinator (ownership of the loaded
  offsets partitions, append-then-apply, timers, leadership hooks); its
  request-model methods serve `minilog.broker.handlers.groups`.

The broker builds and wires the coordinator (see minilog/broker/app.py).
"""

from ._placement import (
    OFFSETS_TOPIC,
    CoordinatorConfig,
    group_partition,
    java_string_hash,
    offsets_topic_configs,
)
from .coordinator import CoordinatorStatistics, GroupCoordinator

__all__ = ["GroupCoordinator", "CoordinatorStatistics", "offsets_topic_configs", "CoordinatorConfig",
           "group_partition", "java_string_hash", "OFFSETS_TOPIC"]
