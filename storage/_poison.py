"""A Log's error state, and the one guard that sets it: a failed write poisons the log.

Rules (tidwall/wal's `corrupt` flag; Kafka's `maybeHandleIOException`):

- Every mutation of a Log runs as `with log._mutation("what"):`. An
  `OSError`, or log data found unreadable, inside the block poisons the
  Log: in-memory state and files may disagree, so every later call raises
  `LogCorruptedError` until the directory is reopened (and recovered).
- ENOSPC is the one recoverable poison (`DiskFullError`): the Log reloads
  itself from disk on the next write (`Poison.recover` with the Log's
  reload; `Log.recover_after_disk_full` calls it explicitly), and
  meanwhile serves reads when the failed operation left the in-memory
  state consistent with the files (`READABLE_AFTER_DISK_FULL`: nothing was
  tracked before the failing write).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from types import TracebackType

from minilog.protocol import CorruptBatchError

from ._errors import DiskFullError, LogCorruptedError

__all__ = ["Poison", "Mutation", "READABLE_AFTER_DISK_FULL"]

_log = logging.getLogger("minilog.storage")
READABLE_AFTER_DISK_FULL = frozenset(("append", "roll", "flush", "flush_rolled", "apply_retention",
                                      "delete_records_before"))


class Poison:
    """Healthy (`reason is None`), poisoned, or poisoned by a full disk."""

    __slots__ = ("dir_path", "reason", "disk_full", "readable")

    def __init__(self, dir_path: str) -> None:
        self.dir_path = dir_path
        self.reason: str | None = None
        self.disk_full = False            # ENOSPC: recoverable in place
        self.readable = False             # ... and reads may go on meanwhile

    def set(self, what: str, error: BaseException) -> LogCorruptedError:
        """Poison for `error` raised by operation `what`; returns the exception to raise."""
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            self.reason = f"{what} failed: no space left on device ({error.filename or self.dir_path})"
            self.disk_full, self.readable = True, what in READABLE_AFTER_DISK_FULL
        else:
            self.reason = f"{what} failed half-way ({error})"
            self.disk_full = self.readable = False
        _log.error("%s: %s", self.dir_path, self.reason)
        return self.error()

    def error(self) -> LogCorruptedError:
        """The exception a call on the poisoned log raises."""
        if self.disk_full:
            return DiskFullError(f"{self.dir_path}: {self.reason}; writes resume once space is freed")
        return LogCorruptedError(f"{self.dir_path}: {self.reason}; reopen the log to recover")

    def check(self, *, read: bool, recover: bool, reload: Callable[[], int]) -> None:
        """Raise unless a call may go on: a read while `readable`, or a write (`recover`)
        after a successful `recover(reload)` of a full-disk poison."""
        if self.reason is None:
            return
        if not self.disk_full or not (recover or (read and self.readable)):
            raise self.error()
        if not (read and self.readable):
            self.recover(reload)

    def recover(self, reload: Callable[[], int]) -> None:
        """Clear a full-disk poison by `reload()`ing the log from disk (it returns the bytes its
        recovery cut); a no-op when healthy.

        Raises:
            DiskFullError: the reload hit ENOSPC again (still poisoned; reads go on if they did).
            LogCorruptedError: poisoned by something else, or the reload failed otherwise.
        """
        if self.reason is None:
            return
        if not self.disk_full:
            raise self.error()
        try:
            truncated_bytes = reload()
        except OSError as e:
            readable = self.readable
            error = self.set("recovery after disk full", e)
            self.readable = readable and self.disk_full
            raise error from e
        _log.warning("%s: writes resume after %s; recovery cut %d bytes", self.dir_path, self.reason,
                     truncated_bytes)
        self.clear()

    def clear(self) -> None:
        self.reason = None
        self.disk_full = self.readable = False


class Mutation:
    """`with Mutation(check, poison, "what"):` runs `check()` first, and turns an OSError or
    unreadable log data inside the block into `raise poison("what", error)`."""

    __slots__ = ("_check", "_poison", "_what")

    def __init__(self, check: Callable[[], None], poison: Callable[[str, BaseException], LogCorruptedError],
                 what: str) -> None:
        self._check = check
        self._poison = poison
        self._what = what

    def __enter__(self) -> None:
        self._check()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if isinstance(exc, (OSError, CorruptBatchError)):
            raise self._poison(self._what, exc) from exc
