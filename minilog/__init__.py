"""minilog: a Kafka-like partitioned commit-log broker in pure Python.

Public names (re-exported lazily so that `import minilog` stays cheap):
`Producer`, `Consumer`, `Admin`, `Record`, their async twins
`AsyncProducer`, `AsyncConsumer`, `AsyncAdmin`, and the error types in
`minilog.errors`.
"""

from __future__ import annotations

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


def __getattr__(name: str):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'minilog' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
