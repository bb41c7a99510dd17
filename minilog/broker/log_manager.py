"""The log manager: the data dir's partition logs on disk, and their upkeep.

Kafka's LogManager is the model: it owns the directory, opens (and so
recovers) every partition log, runs the retention and flush schedulers,
removes deleted topics' directories, and closes the logs on shutdown. It
knows files and `minilog.storage.Log`s; who leads a partition and what a
client may read are the replica manager's business.

Rules:
- The data dir is locked (flock on `.lock`) for as long as the broker
  runs: two brokers on one dir would corrupt it.
- Directories of deleted topics are renamed to `*-delete` first (cheap,
  atomic) and removed in a worker thread; directories no topic names
  (a crash mid-deletion or mid-creation) are removed at start-up.
- Opening logs is all or none: a failure closes the ones already opened
  (each one, whatever closing another raised) and, for a creation, removes
  the directories it made. Creations that would not fit in the descriptor
  budget (RLIMIT_NOFILE minus a headroom) are refused up front.
- Compacted topics are cleaned by the `LogCleaner` (log_cleaner.py), which
  runs in this manager's nursery with the retention and flush loops.
- The retention and flush loops visit one partition at a time and yield
  between them; every fsync runs in a worker thread (through the
  partition, which keeps one flush at a time and lets retention wait for it).

Theory of operation: `lock()` then `clean(topics)` at start; `open_logs`
for each topic (start-up, creation, new partitions); `run(partitions)` in
the broker's nursery runs both loops over whatever `partitions()` returns
at each pass; `close_all` on shutdown closes every log in worker threads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping

import trio

from minilog._logsafe import logsafe

from minilog.storage import (
    OS_FS,
    FileSystem,
    Log,
    LogConfig,
    StorageError,
    parse_partition_dir_name,
    partition_dir_name,
)

from .log_cleaner import LogCleaner
from .metadata import TOPICS_FILE, TopicMeta
from .partition import Partition

__all__ = ["LogManager", "fd_headroom"]

log = logging.getLogger("minilog.broker")

_DELETE_SUFFIX = "-delete"
_LOCK_FILE = ".lock"
_FLUSH_CHECK_INTERVAL_S = 1.0     # flush.ms granularity and delay before rolled segments are fsynced
_CLOSE_THREADS_MAX = 16           # logs closed (each fsyncs) at once on shutdown
_FDS_PER_LOG = 1                  # descriptors a newly created log keeps open (its active segment)
_FD_HEADROOM_MAX = 1024           # descriptors kept free for connections when creating topics
_FD_DIR = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"


def _in_trio_thread() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def fd_headroom(soft_limit: int) -> int:
    """Descriptors topic creation leaves free: a quarter of the limit, at most 1,024."""
    return min(_FD_HEADROOM_MAX, soft_limit // 4)


def _close_quietly(meta: TopicMeta, logs: Mapping[int, Log]) -> None:
    """Close every log in `logs`; a failure is logged and the next one is closed anyway
    (Log.close releases its descriptors even when its final flush fails)."""
    for p, plog in logs.items():
        try:
            plog.close()
        except Exception as exc:
            log.warning("%s-%d: close after a failed open: %s", logsafe(meta.name), p, exc)


class LogManager:
    """The partition logs of one data dir.

    Args:
        data_dir: absolute path of the data dir.
        retention_check_interval_s: how often retention visits every partition.
        fs: the file system the partition logs' files go through (directories are
            created, renamed and removed on the real disk).
    """

    def __init__(self, data_dir: str, *, retention_check_interval_s: float,
                 cleaner: LogCleaner | None = None, fs: FileSystem = OS_FS) -> None:
        self.data_dir = data_dir
        self.fs = fs
        self._retention_interval_s = retention_check_interval_s
        self.cleaner = cleaner                    # compaction (log.cleaner.enable)
        self._lock_fd: int | None = None
        self._nursery: trio.Nursery | None = None

    # -- the directory ------------------------------------------------------------------------

    def lock(self) -> None:
        """Create and lock the data dir. Raises StorageError when another broker holds it."""
        os.makedirs(self.data_dir, exist_ok=True)
        fd = os.open(os.path.join(self.data_dir, _LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StorageError(f"data dir {self.data_dir} is in use by another broker") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def clean(self, topics: Mapping[str, TopicMeta]) -> None:
        """Remove dirs of deleted topics and orphan partition dirs (not in `topics`)."""
        doomed: list[str | None] = []
        for entry in os.scandir(self.data_dir):
            if not entry.is_dir():
                continue
            if entry.name.endswith(_DELETE_SUFFIX):
                doomed.append(entry.path)
                continue
            try:
                topic, p = parse_partition_dir_name(entry.name)
            except ValueError:
                continue
            meta = topics.get(topic)
            if meta is None or p >= meta.partitions:
                log.warning("removing orphan partition directory %s (not in %s)", logsafe(entry.name),
                            TOPICS_FILE)
                doomed.append(self._rename_for_delete(entry.name))
        for path in doomed:
            if path:
                shutil.rmtree(path, ignore_errors=True)

    def open_logs(self, meta: TopicMeta, numbers: Iterable[int], log_config: LogConfig, *,
                  new: bool = False) -> dict[int, Log]:
        """Open (creating, recovering) partitions `numbers` of `meta`; all or none.

        Args:
            new: the partitions are being created: a failure also removes the
                directories this call made (a failed creation leaves nothing behind).

        Raises:
            StorageError: a log cannot be opened (every one opened is closed again,
                whatever closing them raises: issue 8, item 2).
        """
        numbers = list(numbers)
        opened: dict[int, Log] = {}
        try:
            for p in numbers:
                path = os.path.join(self.data_dir, partition_dir_name(meta.name, p))
                opened[p] = Log.open(path, log_config, fs=self.fs)
        except BaseException:
            if new:
                self.discard_new_logs(meta, numbers, opened)
            else:
                _close_quietly(meta, opened)
            raise
        return opened

    def discard_new_logs(self, meta: TopicMeta, numbers: Iterable[int], logs: Mapping[int, Log]
                         ) -> None:
        """Undo a creation: close `logs` (every one, whatever fails) and remove the
        directories of partitions `numbers` (renamed now, removed in the background)."""
        _close_quietly(meta, logs)
        names = [partition_dir_name(meta.name, p) for p in numbers]
        self._remove_dirs(n for n in names if os.path.isdir(os.path.join(self.data_dir, n)))

    def descriptor_problem(self, partitions: int) -> str | None:
        """Why opening `partitions` more logs would exhaust file descriptors, or None.

        A log keeps `_FDS_PER_LOG` descriptor open; the budget is RLIMIT_NOFILE's soft
        limit minus what is open now minus a headroom kept for connections and for the
        files a log opens briefly (`fd_headroom`). Kafka has no such check and fails
        half-way with "Too many open files"; refusing up front answers with a reason.
        """
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return None
        try:
            in_use = len(os.listdir(_FD_DIR))
        except OSError:
            return None                                      # no /proc: no estimate
        headroom = fd_headroom(soft)
        needed = partitions * _FDS_PER_LOG
        free = soft - headroom - in_use
        if needed <= free:
            return None
        return (f"{partitions} new partitions need {needed} file descriptors but only "
                f"{max(free, 0)} are free (RLIMIT_NOFILE {soft}, {in_use} open, {headroom} kept "
                f"for connections): raise the broker's limit (ulimit -n) or ask for fewer partitions")

    def delete_dirs(self, meta: TopicMeta) -> None:
        """Rename the topic's partition dirs for deletion; remove them in the background."""
        self._remove_dirs(partition_dir_name(meta.name, p) for p in range(meta.partitions))

    def delete_partition_dirs(self, meta: TopicMeta, numbers: Iterable[int]) -> None:
        """Rename partitions `numbers` of `meta` for deletion (a replica moved away);
        removed in the background. Absent directories are skipped."""
        self._remove_dirs(partition_dir_name(meta.name, p) for p in numbers)

    def _remove_dirs(self, dir_names: Iterable[str]) -> None:
        doomed = [self._rename_for_delete(name) for name in dir_names]
        paths = [d for d in doomed if d]
        if not paths:
            return

        def remove() -> None:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

        if self._nursery is not None and _in_trio_thread():
            self._nursery.start_soon(trio.to_thread.run_sync, remove)
        else:
            remove()                   # in a worker thread already (a failed creation)

    def _rename_for_delete(self, dir_name: str) -> str | None:
        """Rename a directory to a delete marker and return its new path (None: it is gone).

        The marker is `<32 hex digits>-delete`, whatever the directory's name: Kafka's
        `<dir>.<id>-delete` overflows NAME_MAX (255 bytes) for topic names over ~210
        characters, and then neither the deletion nor the next start could get rid of
        it (issue 8, item 1). The old name goes to the log. Should the rename fail
        anyway, the directory is removed where it is: a directory the broker made
        never stops the broker.
        """
        src = os.path.join(self.data_dir, dir_name)
        dst = os.path.join(self.data_dir, f"{uuid.uuid4().hex}{_DELETE_SUFFIX}")
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot rename %s for deletion (%s): removing it in place",
                        logsafe(dir_name), exc)
            shutil.rmtree(src, ignore_errors=True)     # now: the name may be reused at once
            return None
        log.debug("%s renamed to %s for deletion", logsafe(dir_name), os.path.basename(dst))
        return dst

    # -- upkeep -------------------------------------------------------------------------------

    async def run(self, partitions: Callable[[], Iterable[Partition]], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the retention and flush loops (and the cleaner) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                nursery.start_soon(self._retention_loop, partitions)
                nursery.start_soon(self._flush_loop, partitions)
                if self.cleaner is not None:
                    await nursery.start(self.cleaner.run, partitions)
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def _retention_loop(self, partitions: Callable[[], Iterable[Partition]]) -> None:
        while True:
            await trio.sleep(self._retention_interval_s)
            for part in list(partitions()):
                if part.closed:
                    continue
                await part.wait_idle()
                try:
                    part.log.apply_retention(high_watermark=part.high_watermark)
                except StorageError as exc:
                    log.error("%s-%d: retention failed: %s", logsafe(part.topic), part.partition, exc)
                await trio.sleep(0)           # one partition at a time; let requests run

    async def _flush_loop(self, partitions: Callable[[], Iterable[Partition]]) -> None:
        """Kafka's flush scheduler: fsync rolled segments, and apply flush.ms to partitions
        that stopped receiving appends. Every fsync runs in a worker thread."""
        while True:
            await trio.sleep(_FLUSH_CHECK_INTERVAL_S)
            for part in list(partitions()):
                if part.closed:
                    continue
                try:
                    if part.flush_due():
                        await part.flush()
                    elif part.log.rolled_segments_unflushed:
                        await part.flush_rolled()
                except StorageError as exc:
                    log.error("%s-%d: flush failed: %s", logsafe(part.topic), part.partition, exc)

    # -- shutdown -----------------------------------------------------------------------------

    @staticmethod
    async def close_all(partitions: Iterable[Partition]) -> None:
        """Close every partition's log, several at once in worker threads (each fsyncs)."""
        limiter = trio.CapacityLimiter(_CLOSE_THREADS_MAX)

        async def close_one(part: Partition) -> None:
            try:
                await part.aclose(limiter)
            except StorageError as exc:
                log.error("%s-%d: close failed: %s", logsafe(part.topic), part.partition, exc)

        async with trio.open_nursery() as nursery:
            for part in list(partitions):
                nursery.start_soon(close_one, part)

    @staticmethod
    def close_now(partitions: Iterable[Partition]) -> None:
        """Close logs synchronously (after `close_all`, or when start-up failed)."""
        for part in partitions:
            try:
                part.close()
            except StorageError as exc:
                log.error("%s-%d: close failed: %s", logsafe(part.topic), part.partition, exc)
