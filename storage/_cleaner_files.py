"""Swapping a cleaned segment in for the original, atomically, and finishing a cut-short swap.

Files of one swap of segment B (base offset B, names as in _segment.py)::

    B.log.cleaned  B.index.cleaned  B.timeindex.cleaned    written and fsynced by the cleaner
    B.log.swap     B.index.swap     B.timeindex.swap       renamed: the swap is decided
    B.log          B.index          B.timeindex            renamed over the originals: done

Steps (Kafka's `.cleaned` -> `.swap` -> final, `LocalLog.replaceSegments`),
each followed by a directory fsync:

    step            what                                           a crash after it leaves
    --------------  ---------------------------------------------  -----------------------
    written         the three `.cleaned` files exist, fsynced      the old segment
    indexes-swap    B.index.cleaned, B.timeindex.cleaned -> .swap  the old segment
    log-swap        B.log.cleaned -> B.log.swap  (the commit)      the new segment
    indexes-final   B.index.swap, B.timeindex.swap -> final        the new segment
    log-final       B.log.swap -> B.log                            the new segment

`finish_swaps(dir)` runs when a log opens, before anything reads the
directory, and decides by one rule: a `B.log.swap` file means the swap of
B was decided, so its `.swap` files are renamed over the originals;
everything else with a `.cleaned` or `.swap` suffix belongs to an
undecided swap and is deleted. Either way the directory then holds, for
every segment, either all the old files or all the new ones, never a mix.
A cleaned segment with no batches left is not swapped in: the original
is deleted (its `.log` first, so a crash leaves at worst index files
without a log, which the open path removes).

The cleaner swaps segments one at a time in offset order, so a crash
between two swaps leaves some segments cleaned and the later ones not:
still a consistent log (a record is only ever dropped for a later record
of its key, and later segments are never cleaned before earlier ones).

The in-memory half (`_cleaner_swap.replace_segment`) runs on the log's
owner thread. This module knows files only (no `Log`), so the log's open
path can use `finish_swaps`.

Error handling: functions raise `OSError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from ._checkpoint import atomic_write
from ._fs import OS_FS, FileSystem, read_file
from ._segment import INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, segment_file_name

__all__ = [
    "CLEANED_SUFFIX",
    "SWAP_SUFFIX",
    "SWAP_STEPS",
    "CleanedSegment",
    "commit_swap",
    "discard_cleaned",
    "finish_swaps",
    "read_cleaner_checkpoint",
    "write_cleaner_checkpoint",
    "CLEANER_CHECKPOINT",
    "CleanerCheckpoint",
]

_log = logging.getLogger("minilog.storage.cleaner")
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
CLEANER_CHECKPOINT = "cleaner-offset-checkpoint"
_SUFFIXES = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)
SWAP_STEPS = ("written", "indexes-swap", "log-swap", "indexes-final", "log-final")
StepHook = Callable[[str], None]


@dataclass(frozen=True)
class CleanedSegment:
    """A cleaned copy of one closed segment, written as `.cleaned` files."""

    dir_path: str
    base_offset: int
    source_size_bytes: int          # the original's size: the swap checks it is unchanged
    size_bytes: int                 # 0: no batch survived, the original is deleted instead
    fs: FileSystem = OS_FS


def _stem(dir_path: str, base_offset: int) -> str:
    return os.path.join(dir_path, segment_file_name(base_offset, ""))


def _rename_all(fs: FileSystem, stem: str, suffixes: tuple[str, ...], src: str, dst: str) -> None:
    for suffix in suffixes:
        fs.replace(stem + suffix + src, stem + suffix + dst)


def commit_swap(segment: CleanedSegment, *, step_hook: StepHook | None = None) -> None:
    """Run the swap steps of the module table on disk (the cleaned files exist, fsynced).

    `step_hook(step)` is called after each step (tests stop there to check
    that a crash at that point leaves a consistent log).
    """
    hook = step_hook or (lambda step: None)
    stem, dir_path, fs = _stem(segment.dir_path, segment.base_offset), segment.dir_path, segment.fs
    hook("written")
    if segment.size_bytes == 0:
        for suffix in _SUFFIXES:               # the .log first: see the module docstring
            _unlink_quietly(fs, stem + suffix)
        fs.fsync_dir(dir_path)
        for suffix in _SUFFIXES:
            _unlink_quietly(fs, stem + suffix + CLEANED_SUFFIX)
        return
    _rename_all(fs, stem, (INDEX_SUFFIX, TIME_INDEX_SUFFIX), CLEANED_SUFFIX, SWAP_SUFFIX)
    fs.fsync_dir(dir_path)
    hook("indexes-swap")
    _rename_all(fs, stem, (LOG_SUFFIX,), CLEANED_SUFFIX, SWAP_SUFFIX)
    fs.fsync_dir(dir_path)
    hook("log-swap")
    _rename_all(fs, stem, (INDEX_SUFFIX, TIME_INDEX_SUFFIX), SWAP_SUFFIX, "")
    fs.fsync_dir(dir_path)
    hook("indexes-final")
    _rename_all(fs, stem, (LOG_SUFFIX,), SWAP_SUFFIX, "")
    fs.fsync_dir(dir_path)
    hook("log-final")


def discard_cleaned(segment: CleanedSegment) -> None:
    """Delete the `.cleaned` files of a swap that will not happen."""
    stem = _stem(segment.dir_path, segment.base_offset)
    for suffix in _SUFFIXES:
        _unlink_quietly(segment.fs, stem + suffix + CLEANED_SUFFIX)


def _unlink_quietly(fs: FileSystem, path: str) -> None:
    try:
        fs.unlink(path)
    except FileNotFoundError:
        pass


def finish_swaps(dir_path: str, fs: FileSystem = OS_FS) -> list[int]:
    """Complete decided swaps and delete undecided ones (the module's one rule).

    Returns:
        The base offsets of the segments whose swap was completed.
    """
    names = [name for name, _size in fs.list_dir(dir_path)]
    decided = {name[:-len(LOG_SUFFIX + SWAP_SUFFIX)] for name in names
               if name.endswith(LOG_SUFFIX + SWAP_SUFFIX)}
    completed: list[int] = []
    changed = False
    for name in sorted(names):
        if not name.endswith((CLEANED_SUFFIX, SWAP_SUFFIX)):
            continue
        path = os.path.join(dir_path, name)
        stem = name.split(".", 1)[0]
        if name.endswith(SWAP_SUFFIX) and stem in decided and not name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
            fs.replace(path, path[:-len(SWAP_SUFFIX)])          # indexes before the log
        elif not name.endswith(LOG_SUFFIX + SWAP_SUFFIX):
            fs.unlink(path)
        changed = True
    for stem in sorted(decided):
        path = os.path.join(dir_path, stem + LOG_SUFFIX)
        fs.replace(path + SWAP_SUFFIX, path)
        completed.append(int(stem))
    if changed:
        fs.fsync_dir(dir_path)
        _log.warning("%s: finished interrupted cleaner swaps of segments %s", dir_path, completed)
    return completed


@dataclass(frozen=True)
class CleanerCheckpoint:
    first_dirty_offset: int
    tombstone_horizon_ms: int       # earliest delete horizon of a kept tombstone; -1 none


def read_cleaner_checkpoint(dir_path: str, fs: FileSystem = OS_FS) -> CleanerCheckpoint | None:
    """What the last pass left, or None (no file, or unreadable: start over)."""
    try:
        lines = read_file(fs, os.path.join(dir_path, CLEANER_CHECKPOINT), 128).split()
        if len(lines) == 3 and lines[0] == b"0":
            return CleanerCheckpoint(int(lines[1]), int(lines[2]))
    except (OSError, ValueError):
        pass
    return None


def write_cleaner_checkpoint(dir_path: str, checkpoint: CleanerCheckpoint,
                             fs: FileSystem = OS_FS) -> None:
    """Layout (text lines, like log.checkpoint): version `0`, first dirty offset,
    earliest tombstone horizon in ms (-1: none)."""
    atomic_write(os.path.join(dir_path, CLEANER_CHECKPOINT),
                 b"0\n%d\n%d\n" % (checkpoint.first_dirty_offset, checkpoint.tombstone_horizon_ms),
                 fs=fs)
