"""The broker daemon: trio server, partitions, request handlers, coordinator.

Modules (each opens with its rules and theory of operation; see
docs/ARCHITECTURE.md for the picture):
- `app`: the `Broker`, which builds, wires, runs and stops the parts below.
- `_services`: the typed interface handlers and connections use (a leaf).
- `log_manager`: the data dir's logs: open/recover, retention, flush, close.
- `replica_manager`: partitions and roles; appends, reads, acks; the single
  validation point of produced batches; leadership hooks.
- `partition`: `Partition`, the log plus leader epoch, ISR, high watermark
  and fetch waiters; where storage errors become error codes.
- `metadata`: the metadata interface and its data-dir implementation.
- `topic_admin`: create / delete topics, add partitions, alter configs.
- `listeners`, `connection`: listeners (address + codec) and connections.
- `handlers/`: one function per API, by family (records, admin, groups).
- `config`: broker and topic settings by Kafka's key names.
- `groups`: the consumer-group coordinator.

Public names are re-exported lazily, so importing a submodule (for example
`minilog.broker.groups._assignors`) does not load the whole broker.
"""

from __future__ import annotations

from minilog._lazy import lazy_getattr

__all__ = ["Broker", "BrokerStatistics", "BrokerConfig", "Partition", "PartitionError",
           "BrokerServices", "RequestContext", "ListenerConfig", "ConnectionLimits", "HANDLERS"]

_LAZY = {
    "Broker": "minilog.broker.app",
    "BrokerStatistics": "minilog.broker.app",
    "BrokerConfig": "minilog.broker.config",
    "Partition": "minilog.broker.partition",
    "PartitionError": "minilog.broker.partition",
    "BrokerServices": "minilog.broker._services",
    "RequestContext": "minilog.broker._services",
    "ListenerConfig": "minilog.broker.listeners",
    "ConnectionLimits": "minilog.broker.connection",
    "HANDLERS": "minilog.broker.handlers",
}


__getattr__ = lazy_getattr("minilog.broker", _LAZY, globals())
