"""The broker daemon: trio server, partitions, request handlers, coordinator.

Modules (each opens with its rules and theory of operation):
- `app`: the `Broker` object (topics, partitions, listener, background
  tasks, shutdown) and the plugin hooks the group coordinator uses.
- `server`: the listener's per-connection task (pipelining, limits).
- `handlers`: one async function per API and the `DEFAULT_HANDLERS` registry.
- `partition`: `Partition`, the log plus leader epoch, ISR, high watermark
  and fetch waiters.
- `metadata`: topics persisted in the data dir.
- `config`: broker and topic settings by Kafka's key names.
- `groups`: the consumer-group coordinator (a plugin, installed at start).

Public names are re-exported lazily, so importing a submodule (for example
`minilog.broker.groups._assignors`) does not load the whole broker.
"""

from __future__ import annotations

from minilog._lazy import lazy_getattr

__all__ = ["Broker", "BrokerStatistics", "BrokerConfig", "Partition", "PartitionError",
           "DEFAULT_HANDLERS", "ConnectionInfo"]

_LAZY = {
    "Broker": "minilog.broker.app",
    "BrokerStatistics": "minilog.broker.app",
    "BrokerConfig": "minilog.broker.config",
    "Partition": "minilog.broker.partition",
    "PartitionError": "minilog.broker.partition",
    "DEFAULT_HANDLERS": "minilog.broker.handlers",
    "ConnectionInfo": "minilog.broker.server",
}


__getattr__ = lazy_getattr("minilog.broker", _LAZY, globals())
