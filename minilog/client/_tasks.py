"""Background tasks of a client that can be stopped without cancelling the owner.

An async client opens its nursery in `start()` and leaves it in `close()`,
both in the owner's task, so the nursery's cancel scope also covers the
owner's code between the two. Cancelling that scope to stop the sender or
fetcher would cancel the owner's own close() too. `TaskGroup` gives each
background task its own cancel scope instead: `cancel()` stops them all
(and any started later), then the owner closes connections and exits the
nursery with nothing left running.
"""

from __future__ import annotations

import trio

from minilog.errors import ClosedError

__all__ = ["TaskGroup"]


class TaskGroup:
    """A nursery-like `start_soon` whose tasks `cancel()` stops. Task-safe."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: set[trio.CancelScope] = set()
        self.stopping = False

    def start_soon(self, fn, *args, name=None) -> None:
        self._nursery.start_soon(self._run, fn, args, name=name or fn)

    async def _run(self, fn, args) -> None:
        if self.stopping:
            return
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                await fn(*args)
        except BaseException as exc:
            # A task between checkpoints when close() began may meet the
            # closed connections instead of its cancellation: that is an end.
            if not (self.stopping and _only_closed(exc)):
                raise
        finally:
            self._scopes.discard(scope)

    def cancel(self) -> None:
        self.stopping = True
        for scope in list(self._scopes):
            scope.cancel()


def _only_closed(exc: BaseException) -> bool:
    if isinstance(exc, (ClosedError, trio.Cancelled)):
        return True
    inner = getattr(exc, "exceptions", None)   # MultiError / BaseExceptionGroup
    return bool(inner) and all(_only_closed(e) for e in inner)
