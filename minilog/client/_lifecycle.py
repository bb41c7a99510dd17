"""The lifetime of an async client: `async with client:` and nothing else.

Rules (trio's structured concurrency, as in trio's own
`_highlevel_serve_listeners.py`). A client's background tasks (the
producer's sender, the consumer's fetcher and group heartbeats, connection
readers) live in one nursery, opened when the `async with` block is entered
and closed when it is left. No nursery is entered by hand in one call and
left in another; a crash in a background task cancels the block and comes
out of it, as any child task's exception does.

Theory of operation. `background(cluster)` is that lifetime as one
`asynccontextmanager`: it opens the nursery, connects the cluster, yields the
nursery, and on the way out cancels the tasks (the block's own code has
finished by then) and closes the connections, shielded. A client
composes it in its own `_running()` context manager, which adds what that
client does on entry (producer id, sender task) and on exit (flush, leave
the group). `ClientLifecycle` gives a client class `__aenter__`/`__aexit__`
that enter and leave `_running()`, and refuses a second entry.

Exceptions: trio wraps what escapes a nursery in an ExceptionGroup; one
error alone is handed out bare (`BrokerUnavailableError`, the caller's own
exception), so `except BrokerUnavailableError` works around `async with`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from minilog._exceptions import sole_exception
from minilog.errors import MinilogError

from ._cluster import Cluster

__all__ = ["ClientLifecycle", "background"]


@asynccontextmanager
async def background(cluster: Cluster) -> AsyncIterator[trio.Nursery]:
    """Nursery for a client's background tasks, with `cluster` connected in it.

    Raises what `Cluster.start` raises (BrokerUnavailableError,
    UnsupportedVersionError), or a background task's crash.
    """
    try:
        try:
            async with trio.open_nursery() as nursery:
                await cluster.start(nursery)
                try:
                    yield nursery
                finally:
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _raise_sole(group)
            raise
    finally:
        with trio.CancelScope(shield=True):
            await cluster.aclose()


def _raise_sole(group: BaseExceptionGroup) -> None:
    """Raise the one exception inside `group`, unchanged (its cause and context kept)."""
    exc = sole_exception(group)
    if exc is group:
        return
    saved = exc.__cause__, exc.__context__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__cause__, exc.__context__, exc.__suppress_context__ = saved
        del exc


class ClientLifecycle:
    """`async with` support for a client that defines `_running()` (an asynccontextmanager).

    `_state` is "new", then "running" inside the block ("starting" while
    entering), then "closed". A client is entered once; a failed entry
    leaves it "closed".
    """

    _state = "new"
    _running_cm: AbstractAsyncContextManager[Any] | None = None

    def _running(self) -> AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        if self._state != "new":
            raise MinilogError(f"{type(self).__name__} is {self._state}: `async with` a client "
                               f"once, and make a new one to start again")
        self._state = "starting"
        cm = self._running()
        try:
            await cm.__aenter__()
        except BaseException:
            self._state = "closed"
            raise
        self._running_cm = cm
        self._state = "running"
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        cm, self._running_cm = self._running_cm, None
        assert cm is not None
        try:
            return await cm.__aexit__(*exc_info)
        finally:
            self._state = "closed"
