"""Start and stop of an async client's nursery, task group and cluster.

`AsyncAdmin`, `AsyncConsumer` and `AsyncProducer` share one shape: `start()`
opens a nursery in the owner's task, wraps it in a `TaskGroup`, connects the
`Cluster`, and on any failure unwinds all of that and leaves the client
"closed"; `close()` cancels the background tasks, closes the connections and
exits the nursery. `Lifecycle` holds those two steps; each client keeps its
own state checks around them.
"""

from __future__ import annotations

import trio

from minilog._exceptions import sole_exception
from minilog.errors import MinilogError

from ._tasks import TaskGroup

__all__ = ["Lifecycle"]


class Lifecycle:
    """Mixin for a client with `self._cluster`; it owns `_state`, `_nursery`, `_tasks`."""

    _state = "new"
    _nursery: trio.Nursery | None = None
    _nursery_cm = None
    _tasks: TaskGroup | None = None

    async def _open(self, name: str, connect, starting_state: str = "new") -> None:
        """Open the nursery and task group, then `await connect()`.

        Raises MinilogError if already started. If `connect` raises, the tasks,
        cluster and nursery are closed, `_state` becomes "closed", and the
        error propagates. On success `_state` is left for the caller to set.
        """
        if self._state != "new":
            raise MinilogError(f"{name}.start() called twice")
        self._state = starting_state
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        self._tasks = TaskGroup(self._nursery)
        try:
            await connect()
        except BaseException as exc:
            self._tasks.cancel()
            with trio.CancelScope(shield=True):
                await self._cluster.aclose()
            self._nursery.cancel_scope.cancel()
            self._state = "closed"
            try:
                await self._nursery_cm.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseExceptionGroup as group:
                # Strict exception groups wrap the one error connect raised:
                # hand the caller that error (BrokerUnavailableError, ...).
                raise sole_exception(group) from None
            raise

    async def _shutdown(self) -> None:
        """Stop the background tasks, close connections, exit the nursery."""
        self._tasks.cancel()
        with trio.CancelScope(shield=True):
            await self._cluster.aclose()
        self._nursery.cancel_scope.cancel()
        try:
            await self._nursery_cm.__aexit__(None, None, None)
        except BaseExceptionGroup as group:
            raise sole_exception(group) from None
