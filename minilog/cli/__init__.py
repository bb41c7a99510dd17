"""The `minilog` command line: a thin click layer over the client and broker.

Each module registers its commands on the root group: `serve` (the broker
daemon), `topics`, `produce`, `consume`, `groups`, `cluster` (a local etcd and N brokers).
"""

from __future__ import annotations

from ._group import main
from . import serve, topics, produce, consume, groups, cluster  # noqa: F401  (register commands)

__all__ = ["main"]
