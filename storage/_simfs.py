"""An in-memory file system that remembers what was fsynced and fails on request.

`SimulatedFileSystem` implements the `FileSystem` seam (`_fs.py`) in memory,
for disk-fault tests without root or tmpfs and for a seeded whole-cluster
simulation. It is deterministic: nothing depends on time, threads or
addresses, and every random choice comes from the `random.Random` it was
given.

Rules (the strict reading of POSIX that a careful storage engine assumes):

- File contents are durable only up to the last `fsync` of the file; a
  name (creation, rename, unlink) is durable only after `fsync_dir` of its
  directory. `crash()` keeps exactly that: every file's last fsynced bytes
  under the names of the last directory fsyncs, and closes every
  descriptor. `crash(torn=True)` also keeps a random prefix of bytes
  appended after the last fsync (a torn tail), as a real disk may.
- Directories are durable as soon as they exist (`makedirs`).
- Faults, all opt-in:
  - `capacity_bytes`: the disk's size. A write that does not fit writes
    what fits and returns a short count; a write with no room raises
    ENOSPC (as Linux does). Raise the capacity to "free space".
  - `fail(op, errno, ...)`: the next matching call(s) raise OSError(errno);
    for writes, `torn_bytes=n` first writes n bytes of the data, and
    `short_bytes=n` writes n bytes and returns n without an error.
  - `random_faults(probability, ops, errnos)`: each matching call fails
    with that probability (drawn from the injected Random).

Operations (`op` names for faults): open, close, pread, pwrite, pwritev,
fsync, ftruncate, fsize, replace, unlink, exists, makedirs, list_dir,
fsync_dir.

Task safety: every call holds one lock, so a Log's flush in a worker
thread works; a simulation calls it from a single thread.
"""

from __future__ import annotations

import errno as errno_codes
import os
import posixpath
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._fs import Buffer

__all__ = ["SimulatedFileSystem", "FaultRule"]

WRITE_OPS = frozenset(("pwrite", "pwritev"))


@dataclass
class FaultRule:
    """Fail the next `count` calls of `op` whose path contains `path_contains`, after `skip` matches."""

    op: str
    errno: int
    path_contains: str = ""
    count: int = 1
    skip: int = 0
    torn_bytes: int | None = None        # writes: write this many bytes, then raise
    short_bytes: int | None = None       # writes: write this many bytes and return the count


class _Inode:
    __slots__ = ("data", "synced", "links", "opened")

    def __init__(self) -> None:
        self.data = bytearray()
        self.synced = b""            # contents as of the last fsync
        self.links = 0               # names in the current namespace
        self.opened = 0              # open descriptors


@dataclass
class _Handle:
    inode: _Inode | None             # None: a directory handle (for fsync)
    path: str
    readable: bool
    writable: bool


def _error(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class SimulatedFileSystem:
    """In-memory `FileSystem` with fsync-accurate crashes and injected faults."""

    def __init__(self, rng: random.Random | None = None, *, capacity_bytes: int | None = None) -> None:
        self.rng = rng if rng is not None else random.Random(0)
        self.capacity_bytes = capacity_bytes
        self._lock = threading.RLock()
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/"}
        self._fds: dict[int, _Handle] = {}
        self._next_fd = 3
        self._used = 0
        self._rules: list[FaultRule] = []
        self._random: tuple[float, frozenset[str], tuple[int, ...]] | None = None
        self.faults_injected = 0
        self.crashes = 0

    # -- faults ------------------------------------------------------------------

    def fail(self, op: str, errno: int = errno_codes.EIO, *, path_contains: str = "", count: int = 1,
             skip: int = 0, torn_bytes: int | None = None, short_bytes: int | None = None) -> FaultRule:
        """Make the next matching call(s) of `op` fail; returns the rule (its `count` drops to 0)."""
        rule = FaultRule(op, errno, path_contains, count, skip, torn_bytes, short_bytes)
        with self._lock:
            self._rules.append(rule)
        return rule

    def random_faults(self, probability: float, ops: Iterable[str] = WRITE_OPS | {"fsync"},
                      errnos: Sequence[int] = (errno_codes.EIO,)) -> None:
        """Fail each call of `ops` with `probability` (0 turns random faults off)."""
        with self._lock:
            self._random = (probability, frozenset(ops), tuple(errnos)) if probability > 0 else None

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()
            self._random = None

    @property
    def used_bytes(self) -> int:
        return self._used

    def _fault(self, op: str, path: str) -> FaultRule | None:
        """The rule that fires for this call, or None. Consumes it."""
        for rule in self._rules:
            if rule.op == op and rule.count > 0 and rule.path_contains in path:
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.count -= 1
                if rule.count == 0:
                    self._rules.remove(rule)
                self.faults_injected += 1
                return rule
        if self._random is not None:
            probability, ops, errnos = self._random
            if op in ops and self.rng.random() < probability:
                self.faults_injected += 1
                return FaultRule(op, self.rng.choice(errnos))
        return None

    def _check(self, op: str, path: str) -> None:
        rule = self._fault(op, path)
        if rule is not None:
            raise _error(rule.errno, path)

    # -- crash -------------------------------------------------------------------

    def crash(self, *, torn: bool = False) -> None:
        """Lose everything not fsynced: the machine lost power. Every descriptor is gone.

        With `torn`, a file whose unsynced bytes extend its synced bytes
        keeps a random-length prefix of them (drawn from the Random).
        """
        with self._lock:
            self.crashes += 1
            self._fds.clear()
            self._names = dict(self._durable_names)
            inodes = {id(inode): inode for inode in self._names.values()}.values()
            for inode in inodes:
                extra = b""
                unsynced = len(inode.data) - len(inode.synced)
                if torn and unsynced > 0 and inode.data.startswith(inode.synced):
                    keep = self.rng.randrange(unsynced + 1)
                    extra = bytes(inode.data[len(inode.synced):len(inode.synced) + keep])
                inode.data = bytearray(inode.synced + extra)
                inode.links = 0
                inode.opened = 0
            for inode in self._names.values():
                inode.links += 1
            self._used = sum(len(inode.data) for inode in inodes)

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath(os.fspath(path))

    def _parent_must_exist(self, path: str) -> None:
        if posixpath.dirname(path) not in self._dirs:
            raise _error(errno_codes.ENOENT, path)

    def _release_if_unused(self, inode: _Inode) -> None:
        if inode.links == 0 and inode.opened == 0:
            self._used -= len(inode.data)

    def _handle(self, fd: int) -> _Handle:
        handle = self._fds.get(fd)
        if handle is None:
            raise _error(errno_codes.EBADF, f"fd {fd}")
        return handle

    def _file(self, fd: int, *, write: bool = False) -> tuple[_Handle, _Inode]:
        handle = self._handle(fd)
        if handle.inode is None:
            raise _error(errno_codes.EISDIR, handle.path)
        if (write and not handle.writable) or (not write and not handle.readable):
            raise _error(errno_codes.EBADF, handle.path)
        return handle, handle.inode

    def _write(self, fd: int, op: str, data: bytes, offset: int) -> int:
        handle, inode = self._file(fd, write=True)
        rule = self._fault(op, handle.path)
        limit = len(data)
        if rule is not None:
            limit = rule.torn_bytes if rule.torn_bytes is not None else rule.short_bytes or 0
            limit = min(limit, len(data))
        end = offset + limit
        if self.capacity_bytes is not None:
            allowed_end = len(inode.data) + max(self.capacity_bytes - self._used, 0)
            if end > allowed_end:          # a full disk: write what fits, ENOSPC when nothing does
                limit = max(allowed_end - offset, 0)
                if limit == 0:
                    raise _error(errno_codes.ENOSPC, handle.path)
                end = offset + limit
        growth = max(end - len(inode.data), 0)
        if offset > len(inode.data):
            inode.data.extend(bytes(offset - len(inode.data)))
        inode.data[offset:end] = data[:limit]
        self._used += growth
        if rule is not None and rule.short_bytes is None:
            raise _error(rule.errno, handle.path)
        return limit

    # -- the FileSystem interface ---------------------------------------------------

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        with self._lock:
            path = self._norm(path)
            self._check("open", path)
            access = flags & os.O_ACCMODE
            if flags & getattr(os, "O_DIRECTORY", 0) or path in self._dirs:
                if path not in self._dirs:
                    raise _error(errno_codes.ENOTDIR, path)
                if access != os.O_RDONLY:
                    raise _error(errno_codes.EISDIR, path)
                inode = None
            else:
                inode = self._names.get(path)
                if inode is None:
                    if not flags & os.O_CREAT:
                        raise _error(errno_codes.ENOENT, path)
                    self._parent_must_exist(path)
                    inode = self._names[path] = _Inode()
                    inode.links = 1
                elif flags & os.O_CREAT and flags & os.O_EXCL:
                    raise _error(errno_codes.EEXIST, path)
                if flags & os.O_TRUNC and access != os.O_RDONLY:
                    self._used -= len(inode.data)
                    inode.data = bytearray()
                inode.opened += 1
            fd, self._next_fd = self._next_fd, self._next_fd + 1
            self._fds[fd] = _Handle(inode, path, access in (os.O_RDONLY, os.O_RDWR),
                                    access in (os.O_WRONLY, os.O_RDWR))
            return fd

    def close(self, fd: int) -> None:
        with self._lock:
            handle = self._handle(fd)
            del self._fds[fd]
            if handle.inode is not None:
                handle.inode.opened -= 1
                self._release_if_unused(handle.inode)
            self._check("close", handle.path)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        with self._lock:
            handle, inode = self._file(fd)
            self._check("pread", handle.path)
            if size < 0 or offset < 0:
                raise _error(errno_codes.EINVAL, handle.path)
            return bytes(inode.data[offset:offset + size])

    def pwrite(self, fd: int, data: Buffer, offset: int) -> int:
        with self._lock:
            return self._write(fd, "pwrite", bytes(data), offset)

    def pwritev(self, fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        with self._lock:
            return self._write(fd, "pwritev", b"".join(bytes(b) for b in buffers), offset)

    def fsync(self, fd: int) -> None:
        with self._lock:
            handle = self._handle(fd)
            self._check("fsync", handle.path)
            if handle.inode is None:
                self._sync_dir(handle.path)
            else:
                handle.inode.synced = bytes(handle.inode.data)

    def ftruncate(self, fd: int, length: int) -> None:
        with self._lock:
            handle, inode = self._file(fd, write=True)
            self._check("ftruncate", handle.path)
            if length < 0:
                raise _error(errno_codes.EINVAL, handle.path)
            growth = length - len(inode.data)
            if self.capacity_bytes is not None and growth > self.capacity_bytes - self._used:
                raise _error(errno_codes.ENOSPC, handle.path)
            if growth > 0:
                inode.data.extend(bytes(growth))
            else:
                del inode.data[length:]
            self._used += growth

    def fsize(self, fd: int) -> int:
        with self._lock:
            handle, inode = self._file(fd)
            self._check("fsize", handle.path)
            return len(inode.data)

    def replace(self, src: str, dst: str) -> None:
        with self._lock:
            src, dst = self._norm(src), self._norm(dst)
            self._check("replace", src)
            inode = self._names.get(src)
            if inode is None:
                raise _error(errno_codes.ENOENT, src)
            if dst in self._dirs:
                raise _error(errno_codes.EISDIR, dst)
            self._parent_must_exist(dst)
            if src == dst:
                return
            old = self._names.pop(dst, None)
            self._names[dst] = self._names.pop(src)
            if old is not None:
                old.links -= 1
                self._release_if_unused(old)

    def unlink(self, path: str) -> None:
        with self._lock:
            path = self._norm(path)
            self._check("unlink", path)
            inode = self._names.pop(path, None)
            if inode is None:
                raise _error(errno_codes.EISDIR if path in self._dirs else errno_codes.ENOENT, path)
            inode.links -= 1
            self._release_if_unused(inode)

    def exists(self, path: str) -> bool:
        with self._lock:
            path = self._norm(path)
            self._check("exists", path)
            return path in self._names or path in self._dirs

    def makedirs(self, path: str) -> None:
        with self._lock:
            path = self._norm(path)
            self._check("makedirs", path)
            missing = []
            while path not in self._dirs:
                if path in self._names:
                    raise _error(errno_codes.ENOTDIR, path)
                missing.append(path)
                path = posixpath.dirname(path)
            self._dirs.update(missing)

    def list_dir(self, path: str) -> list[tuple[str, int]]:
        with self._lock:
            path = self._norm(path)
            self._check("list_dir", path)
            if path not in self._dirs:
                raise _error(errno_codes.ENOENT, path)
            return [(posixpath.basename(name), len(inode.data)) for name, inode in self._names.items()
                    if posixpath.dirname(name) == path]

    def fsync_dir(self, path: str) -> None:
        with self._lock:
            path = self._norm(path)
            self._check("fsync_dir", path)
            if path not in self._dirs:
                raise _error(errno_codes.ENOENT, path)
            self._sync_dir(path)

    def _sync_dir(self, path: str) -> None:
        durable = self._durable_names
        for name in [n for n in durable if posixpath.dirname(n) == path and n not in self._names]:
            del durable[name]
        for name, inode in self._names.items():
            if posixpath.dirname(name) == path:
                durable[name] = inode

    # -- inspection (tests) ---------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        """A file's current contents (bypasses faults)."""
        with self._lock:
            inode = self._names.get(self._norm(path))
            if inode is None:
                raise _error(errno_codes.ENOENT, path)
            return bytes(inode.data)

    def write_bytes(self, path: str, data: bytes, *, synced: bool = True) -> None:
        """Replace a file's contents, creating it (bypasses faults and capacity).

        With `synced` (the default) the contents and the name are durable.
        """
        with self._lock:
            path = self._norm(path)
            self._parent_must_exist(path)
            inode = self._names.get(path)
            if inode is None:
                inode = self._names[path] = _Inode()
                inode.links = 1
            self._used += len(data) - len(inode.data)
            inode.data = bytearray(data)
            if synced:
                inode.synced = bytes(data)
                self._sync_dir(posixpath.dirname(path))
