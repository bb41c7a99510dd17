"""minilog: a Kafka-like partitioned commit-log broker in pure Python.

Public names (re-exported lazily so that `import minilog` stays cheap):
`Producer`, `Consumer`, `Admin`, `Record`, their async twins
`AsyncProducer`, `AsyncConsumer`, `AsyncAdmin`, and the error types in
`minilog.errors`.
"""

from __future__ import annotations

from ._lazy import lazy_getattr

from ._version import __version__

__all__ = [
    "__version__",
    "Producer",
    "Consumer",
    "Admin",
    "Record",
    "AsyncProducer",
    "AsyncConsumer",
    "AsyncAdmin",
]

_LAZY = {
    "Producer": "minilog.client.sync",
    "Consumer": "minilog.client.sync",
    "Admin": "minilog.client.sync",
    "AsyncProducer": "minilog.client.producer",
    "AsyncConsumer": "minilog.client.consumer",
    "AsyncAdmin": "minilog.client.admin",
    "Record": "minilog.protocol",
}


__getattr__ = lazy_getattr("minilog", _LAZY, globals())
