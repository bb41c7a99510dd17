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
- Opening logs is all or none: a failure closes the ones already opened.
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
import shutil
from collections.abc import Callable, Iterable, Mapping

import trio

from minilog.storage import Log, LogConfig, StorageError, parse_partition_dir_name, partition_dir_name

from .log_cleaner import LogCleaner
from .metadata import TOPICS_FILE, TopicMeta
from .partition import Partition

__all__ = ["LogManager"]

log = logging.getLogger("minilog.broker")

_DELETE_SUFFIX = "-delete"
_LOCK_FILE = ".lock"
_FLUSH_CHECK_INTERVAL_S = 1.0     # flush.ms granularity and delay before rolled segments are fsynced
_CLOSE_THREADS_MAX = 16           # logs closed (each fsyncs) at once on shutdown


class LogManager:
    """The partition logs of one data dir.

    Args:
        data_dir: absolute path of the data dir.
        retention_check_interval_s: how often retention visits every partition.
    """

    def __init__(self, data_dir: str, *, retention_check_interval_s: float,
                 cleaner: LogCleaner | None = None) -> None:
        self.data_dir = data_dir
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
                log.warning("removing orphan partition directory %s (not in %s)", entry.name,
                            TOPICS_FILE)
                doomed.append(self._rename_for_delete(entry.name, "orphan"))
        for path in doomed:
            if path:
                shutil.rmtree(path, ignore_errors=True)

    def open_logs(self, meta: TopicMeta, numbers: Iterable[int], log_config: LogConfig
                  ) -> dict[int, Log]:
        """Open (creating, recovering) partitions `numbers` of `meta`; all or none.

        Raises:
            StorageError: a log cannot be opened (the ones opened are closed again).
        """
        opened: dict[int, Log] = {}
        try:
            for p in numbers:
                path = os.path.join(self.data_dir, partition_dir_name(meta.name, p))
                opened[p] = Log.open(path, log_config)
        except BaseException:
            for plog in opened.values():
                plog.close()
            raise
        return opened

    def delete_dirs(self, meta: TopicMeta) -> None:
        """Rename the topic's partition dirs for deletion; remove them in the background."""
        doomed = [self._rename_for_delete(partition_dir_name(meta.name, p), meta.topic_id)
                  for p in range(meta.partitions)]
        paths = [d for d in doomed if d]
        if not paths:
            return

        def remove() -> None:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

        if self._nursery is not None:
            self._nursery.start_soon(trio.to_thread.run_sync, remove)
        else:
            remove()

    def _rename_for_delete(self, dir_name: str, topic_id: str) -> str | None:
        src = os.path.join(self.data_dir, dir_name)
        dst = f"{src}.{topic_id}{_DELETE_SUFFIX}"
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return None
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
                    log.error("%s-%d: retention failed: %s", part.topic, part.partition, exc)
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
                    log.error("%s-%d: flush failed: %s", part.topic, part.partition, exc)

    # -- shutdown -----------------------------------------------------------------------------

    @staticmethod
    async def close_all(partitions: Iterable[Partition]) -> None:
        """Close every partition's log, several at once in worker threads (each fsyncs)."""
        limiter = trio.CapacityLimiter(_CLOSE_THREADS_MAX)

        async def close_one(part: Partition) -> None:
            try:
                await part.aclose(limiter)
            except StorageError as exc:
                log.error("%s-%d: close failed: %s", part.topic, part.partition, exc)

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
                log.error("%s-%d: close failed: %s", part.topic, part.partition, exc)
