"""The leader epoch cache (Kafka KIP-101): epoch -> first offset of that epoch.

Theory of operation: every batch carries the leader epoch it was written
in. The cache keeps one entry per epoch change, `(epoch, start_offset)`,
with both columns strictly increasing. A follower that lost track of the
leader asks "where does my epoch end on your log?" (`end_offset_for_epoch`)
and truncates to the answer, so replicas never diverge after a leader
change. Appends add an entry when they see a newer epoch; `truncate_to`
(drop the tail) and log-start moves (drop the head) edit the cache the way
they edit the log.

File `leader-epoch-checkpoint`, text, the format of Kafka's file::

    0                        version
    <count>                  number of entries
    <epoch> <start_offset>   one line per entry, oldest first

Every change rewrites the file atomically (temp, fsync, rename, fsync dir);
changes are rare (one per leader change).

Error handling: a malformed checkpoint loads as empty (the log's recovery
re-learns epochs from the batches it scans); `assign` with an older epoch
is a caller error reported as `StaleLeaderEpoch` by the Log before anything
is written. Task safety: not thread-safe; the owning Log serialises calls.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from typing import NamedTuple

from ._checkpoint import atomic_write
from ._fs import OS_FS, FileSystem, read_file

__all__ = ["LeaderEpochCache", "EpochEntry", "LEADER_EPOCH_CHECKPOINT", "UNDEFINED_EPOCH"]

LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"
UNDEFINED_EPOCH = -1          # Kafka's UNDEFINED_EPOCH and UNDEFINED_EPOCH_OFFSET
_log = logging.getLogger("minilog.storage")


class EpochEntry(NamedTuple):
    epoch: int
    start_offset: int


class LeaderEpochCache:
    """Epoch -> start offset, persisted in `<dir>/leader-epoch-checkpoint`."""

    def __init__(self, dir_path: str, *, persist: bool = True, fs: FileSystem = OS_FS) -> None:
        self.path = os.path.join(dir_path, LEADER_EPOCH_CHECKPOINT)
        self._persist = persist
        self._fs = fs
        self._entries: list[EpochEntry] = self._load()

    def _load(self) -> list[EpochEntry]:
        try:
            lines = read_file(self._fs, self.path, 1 << 20).decode("ascii").split("\n")
            if lines[0] != "0":
                raise ValueError("unknown version")
            count = int(lines[1])
            entries = [EpochEntry(*map(int, lines[2 + i].split())) for i in range(count)]
            for a, b in zip(entries, entries[1:]):
                if not (a.epoch < b.epoch and a.start_offset <= b.start_offset):
                    raise ValueError("entries not increasing")
            return entries
        except FileNotFoundError:
            return []
        except (ValueError, IndexError, TypeError, UnicodeDecodeError) as e:
            _log.warning("%s is malformed (%s); starting with an empty epoch cache", self.path, e)
            return []

    def _write(self) -> None:
        if not self._persist:
            return
        lines = ["0", str(len(self._entries))]
        lines += [f"{e.epoch} {e.start_offset}" for e in self._entries]
        atomic_write(self.path, ("\n".join(lines) + "\n").encode(), fs=self._fs)

    # -- queries ---------------------------------------------------------------

    @property
    def entries(self) -> tuple[EpochEntry, ...]:
        return tuple(self._entries)

    @property
    def latest_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else UNDEFINED_EPOCH

    def end_offset_for_epoch(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """Kafka's OffsetsForLeaderEpoch answer for `epoch`.

        Returns:
            `(largest epoch <= epoch, its end offset)`, where the end offset is
            the start offset of the next epoch, or `log_end_offset` for the
            latest epoch; `(UNDEFINED_EPOCH, UNDEFINED_EPOCH)` when `epoch`
            precedes every entry.
        """
        entries = self._entries
        if not entries or epoch < entries[0].epoch:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH
        i = bisect_right([e.epoch for e in entries], epoch) - 1
        if i == len(entries) - 1:
            return entries[i].epoch, log_end_offset
        return entries[i].epoch, entries[i + 1].start_offset

    # -- changes ---------------------------------------------------------------

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Record that `epoch` starts at `start_offset` if it is newer. Returns whether it did.

        The caller has checked `epoch >= latest_epoch` (asserted).
        """
        if epoch < 0:
            return False
        assert epoch >= self.latest_epoch, (epoch, self.latest_epoch)
        if self._entries and epoch == self._entries[-1].epoch:
            return False
        assert not self._entries or start_offset >= self._entries[-1].start_offset
        self._entries.append(EpochEntry(epoch, start_offset))
        self._write()
        return True

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop entries starting at or after `end_offset` (the log was cut there)."""
        keep = len(self._entries)
        while keep and self._entries[keep - 1].start_offset >= end_offset:
            keep -= 1
        if keep < len(self._entries):
            del self._entries[keep:]
            self._write()

    def truncate_from_start(self, start_offset: int) -> None:
        """The log now starts at `start_offset`: drop older entries, keep the epoch in force."""
        older = [e for e in self._entries if e.start_offset < start_offset]
        if not older:
            return
        newer = self._entries[len(older):]
        keep = older[-1]
        if newer and newer[0].start_offset == start_offset:
            self._entries = newer
        else:
            self._entries = [EpochEntry(keep.epoch, start_offset), *newer]
        self._write()

    def clear(self) -> None:
        if self._entries:
            self._entries = []
            self._write()
