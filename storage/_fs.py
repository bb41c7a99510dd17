"""The file-system seam: every file operation of storage/ goes through `FileSystem`.

Rules:

- storage/ never calls `os` file functions directly: it calls the
  `FileSystem` it was given (`Log.open(path, config, fs=...)`), so tests and
  a seeded whole-cluster simulation can swap the disk for one that loses
  unsynced bytes or fails on purpose (`SimulatedFileSystem` in `_simfs.py`).
- The interface is the small POSIX subset storage uses, with POSIX
  meaning: descriptors are ints, positional reads and writes, `os.O_*`
  flags, errors are `OSError` with an errno (ENOENT, ENOSPC, EIO, ...).
  Like TigerBeetle's `Storage` interface and DBDB's `Storage(f)`.
- Writes may be short (POSIX allows it, a full disk does it): callers check
  the count (`write_all` loops for small files, the segment append treats a
  short write as a failure).

`OS_FS` is the real implementation, a thin pass-through to `os`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

__all__ = ["FileSystem", "OsFileSystem", "OS_FS", "Buffer", "read_file", "write_all"]

Buffer = bytes | bytearray | memoryview


class FileSystem(Protocol):
    """What storage/ needs from a file system. Paths are `str`; errors are `OSError`."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """`os.open`: O_RDONLY / O_WRONLY / O_RDWR, optionally O_CREAT, O_TRUNC, O_DIRECTORY."""
        ...

    def close(self, fd: int) -> None: ...

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        """Up to `size` bytes at `offset` (fewer at the end of the file)."""
        ...

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        """Write at `offset`; returns the count written (may be short)."""
        ...

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """Write the buffers back to back at `offset` with one call; returns the count."""
        ...

    def fsync(self, fd: int) -> None: ...

    def ftruncate(self, fd: int, length: int) -> None: ...

    def fsize(self, fd: int) -> int:
        """The file's size (`os.fstat(fd).st_size`)."""
        ...

    def replace(self, src: str, dst: str) -> None:
        """Atomic rename over `dst` (durable once the directory is fsynced)."""
        ...

    def unlink(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def makedirs(self, path: str) -> None:
        """Create `path` and its parents; no error when it exists."""
        ...

    def list_dir(self, path: str) -> list[tuple[str, int]]:
        """(name, size) of each regular file in directory `path`, in no particular order."""
        ...

    def fsync_dir(self, path: str) -> None:
        """Make creations, renames and unlinks in directory `path` durable."""
        ...


class OsFileSystem:
    """The real disk: each method is the `os` call of the same meaning."""

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        return os.open(path, flags, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        return os.pwritev(fd, buffers, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def fsize(self, fd: int) -> int:
        return os.fstat(fd).st_size

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def list_dir(self, path: str) -> list[tuple[str, int]]:
        out = []
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        out.append((entry.name, entry.stat(follow_symlinks=False).st_size))
                except FileNotFoundError:
                    continue                    # removed while listing
        return out

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OS_FS: FileSystem = OsFileSystem()


def read_file(fs: FileSystem, path: str, size_max: int) -> bytes:
    """The first `size_max` bytes of a file (all of a small one). FileNotFoundError when absent.

    Reads `min(size, size_max)` bytes: `os.pread` allocates what it is asked for.
    """
    fd = fs.open(path, os.O_RDONLY)
    try:
        return fs.pread(fd, min(fs.fsize(fd), size_max), 0)
    finally:
        fs.close(fd)


def write_all(fs: FileSystem, fd: int, data: Buffer, offset: int) -> None:
    """Write all of `data` at `offset`, looping over short writes (small files only).

    Raises:
        OSError: from the file system; a call that writes nothing is ENOSPC-like
            and surfaces as the error the file system raised.
    """
    view = memoryview(data)
    while view:
        written = fs.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(f"write of {len(view)} bytes at {offset} made no progress")
        view, offset = view[written:], offset + written
