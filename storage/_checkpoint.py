"""Atomic small-file writes and the partition's checkpoint files.

Theory of operation: metadata files are replaced, never edited. A write goes
to `<name>.tmp`, is fsynced, renamed over `<name>` (atomic on POSIX), and
the directory is fsynced so the rename itself is durable. A crash leaves
either the old or the new file, never a mix; a stale `.tmp` is ignored and
overwritten. This is tidwall/wal's `atomicWrite` plus the directory fsync
it skips.

Files (all text, one value per line, first line a format version, as
Kafka's checkpoint files)::

    log.checkpoint            "0\\n" "recovery-point <int>\\n" "log-start-offset <int>\\n"
    leader-epoch-checkpoint   "0\\n" "<count>\\n" then "<epoch> <start_offset>\\n" per entry
    .clean-shutdown           "0\\n" (presence is what matters)

Error handling: readers raise `ValueError` for a malformed file; callers
decide (a bad checkpoint means "recover from scratch", not a crash).
"""

from __future__ import annotations

import os

from ._fs import OS_FS, FileSystem, read_file, write_all

__all__ = [
    "atomic_write",
    "fsync_dir",
    "read_log_checkpoint",
    "write_log_checkpoint",
    "LOG_CHECKPOINT",
    "CLEAN_SHUTDOWN",
]

LOG_CHECKPOINT = "log.checkpoint"
CLEAN_SHUTDOWN = ".clean-shutdown"
_VERSION = "0"


def fsync_dir(path: str, *, fs: FileSystem = OS_FS) -> None:
    """fsync a directory so renames, creations and unlinks in it are durable."""
    fs.fsync_dir(path)


def atomic_write(path: str, data: bytes, *, fs: FileSystem = OS_FS, sync: bool = True) -> None:
    """Replace `path` with `data`: temp file, fsync, rename, fsync the directory.

    With `sync=False` both fsyncs are skipped: the rename is still atomic,
    but the file may be missing or older after a crash (callers that use it
    protect the contents with a CRC and fsync later).

    Raises:
        OSError: from the file system; `path` then still holds its old content
            (a `.tmp` may be left behind; it is removed here on failure when
            possible, and ignored and overwritten otherwise).
    """
    tmp = path + ".tmp"
    fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            write_all(fs, fd, data, 0)
            if sync:
                fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(tmp, path)
    except OSError:
        try:
            fs.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fs.fsync_dir(os.path.dirname(path) or ".")


def write_log_checkpoint(dir_path: str, recovery_point: int, log_start_offset: int, *,
                         fs: FileSystem = OS_FS) -> None:
    text = f"{_VERSION}\nrecovery-point {recovery_point}\nlog-start-offset {log_start_offset}\n"
    atomic_write(os.path.join(dir_path, LOG_CHECKPOINT), text.encode(), fs=fs)


def read_log_checkpoint(dir_path: str, *, fs: FileSystem = OS_FS) -> tuple[int, int] | None:
    """Return (recovery_point, log_start_offset), or None when there is no file.

    Raises:
        ValueError: the file exists but is malformed.
        OSError: the file cannot be read.
    """
    try:
        text = read_file(fs, os.path.join(dir_path, LOG_CHECKPOINT), 4096).decode("ascii")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as e:
        raise ValueError(f"{LOG_CHECKPOINT}: not ascii") from e
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != _VERSION:
        raise ValueError(f"{LOG_CHECKPOINT}: unknown version or truncated")
    values = {}
    for line in lines[1:3]:
        name, _, number = line.partition(" ")
        values[name] = int(number)          # ValueError when not a number
    try:
        recovery_point, log_start = values["recovery-point"], values["log-start-offset"]
    except KeyError as e:
        raise ValueError(f"{LOG_CHECKPOINT}: missing {e}") from None
    if recovery_point < 0 or log_start < 0:
        raise ValueError(f"{LOG_CHECKPOINT}: negative offset")
    return recovery_point, log_start
