"""minilog's partition log on disk: segments, indexes, retention, recovery.

Installed as `minilog.storage`. Synchronous and trio-free; uses only
`minilog.protocol`'s batch header.
"""

__all__: list[str] = []
