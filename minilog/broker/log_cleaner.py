"""The broker's log cleaner: compacts the partitions of compacted topics, off the event loop.

Kafka's `LogCleaner` is the model: `log.cleaner.threads` cleaner threads
each pick the filthiest compacted log (`pick_log`: past
max.compaction.lag.ms first, then the highest dirty ratio at or above
min.cleanable.dirty.ratio, or tombstones due), clean it for one pass, and
back off `log.cleaner.backoff.ms` when nothing is due.

Rules:
- The cleaning runs in worker threads (`trio.to_thread`, bounded by a
  capacity limiter of `log.cleaner.threads`), never on the event loop.
  Reads, appends, flushes and retention of the partition go on meanwhile:
  the cleaner reads closed segments through descriptors of its own and
  writes new files.
- The swap of each cleaned segment runs on the event loop (a few renames
  and directory fsyncs, like a roll), after any flush of the partition
  (`wait_idle`), and only while the partition is open.
- An error while cleaning a partition marks it uncleanable: it is logged
  once, counted in `statistics()`, skipped from then on, and the broker
  keeps serving it and cleaning the others.
- Shutdown cancels the workers without waiting for a pass in a thread:
  the pass is told to stop (`CleanerAborted` at its next chunk) and its
  `.cleaned` files are removed (by it, or by the next open of the log).

Task-safety: `run` and everything it calls run on the trio thread except
the pass itself (`Cleaner.clean_snapshot`), which touches only its own
`Cleaner` and files, and calls back into the loop for each swap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from minilog.storage import (
    LONG_MAX,
    Cleaner,
    CleanerAborted,
    CleanerSettings,
    CleanedSegment,
    Throttler,
    cleanable_of,
    clean_reason,
    discard_cleaned,
    pick_log,
    replace_segment,
    snapshot_log,
)

__all__ = ["LogCleaner", "LogCleanerStatistics", "cleanable_ratio"]

log = logging.getLogger("minilog.broker.cleaner")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class LogCleanerStatistics:
    threads: int
    passes_total: int
    bytes_read_total: int
    bytes_written_total: int
    records_read_total: int
    records_kept_total: int
    segments_swapped_total: int
    last_run_ms: int                    # wall clock at the end of the last pass, -1 never
    last_partition: str                 # "topic-p" of the last pass, "" never
    uncleanable_partitions: tuple[str, ...]
    in_progress: tuple[str, ...]


class LogCleaner:
    """Compacts partitions of topics with cleanup.policy containing compact.

    Args:
        threads: log.cleaner.threads.
        dedupe_buffer_bytes: log.cleaner.dedupe.buffer.size, shared by the threads.
        io_bytes_per_second_max: log.cleaner.io.max.bytes.per.second, shared.
        backoff_ms: log.cleaner.backoff.ms, the sleep when nothing is due.
    """

    def __init__(self, *, threads: int, dedupe_buffer_bytes: int, io_bytes_per_second_max: float,
                 backoff_ms: int, clock: Callable[[], int] = _wall_ms) -> None:
        self.threads = threads
        self.backoff_s = backoff_ms / 1000
        self._clock = clock
        self._settings = CleanerSettings(dedupe_buffer_bytes=max(dedupe_buffer_bytes // threads, 1))
        self._throttler = Throttler(io_bytes_per_second_max)
        self._abort = threading.Event()
        self._in_progress: set[str] = set()
        self._uncleanable: dict[str, str] = {}
        self._totals = dict(passes=0, read=0, written=0, records_read=0, records_kept=0, swapped=0)
        self._last_run_ms = -1
        self._last_partition = ""
        self._wake = trio.Event()

    @classmethod
    def from_config(cls, config: Any) -> LogCleaner:
        """From the broker's log.cleaner.* settings."""
        return cls(threads=config.log_cleaner_threads,
                   dedupe_buffer_bytes=config.log_cleaner_dedupe_buffer_size,
                   io_bytes_per_second_max=config.log_cleaner_io_max_bytes_per_second,
                   backoff_ms=config.log_cleaner_backoff_ms)

    # -- scheduling ---------------------------------------------------------------------------

    async def run(self, partitions: Callable[[], Iterable[Any]], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the cleaner threads' loops until cancelled."""
        self._abort.clear()
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(self.threads):
                    nursery.start_soon(self._worker, partitions)
                task_status.started()
        finally:
            self._abort.set()

    def wake(self) -> None:
        """Look for work now instead of at the end of the backoff (tests, topic alter)."""
        self._wake.set()

    async def _worker(self, partitions: Callable[[], Iterable[Any]]) -> None:
        cleaner = Cleaner(self._settings, clock=self._clock, throttler=self._throttler,
                          abort=self._abort.is_set)
        while True:
            part = self._grab(partitions())
            if part is None:
                with trio.move_on_after(self.backoff_s):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = trio.Event()
                continue
            name = f"{part.topic}-{part.partition}"
            try:
                await self._clean(cleaner, part)
            except CleanerAborted:
                return
            except Exception as exc:           # one partition's problem, not the broker's
                if part.closed:                # deleted or closed meanwhile: nothing to mark
                    log.info("%s: cleaning stopped, the partition was closed: %s", name, exc)
                else:
                    self._uncleanable[name] = str(exc)
                    log.error("%s: marked uncleanable: %s", name, exc, exc_info=exc)
            finally:
                self._in_progress.discard(name)
            await trio.sleep(0)

    def cleanable(self, part: Any) -> Any:
        """The clean/dirty split of one partition (for the policy and `topics describe`)."""
        config = part.log.config
        snapshot = snapshot_log(part.log, first_batch_timestamps=config.max_compaction_lag_ms < LONG_MAX)
        return snapshot, cleanable_of(snapshot, config, self._clock(), high_watermark=part.high_watermark)

    def _grab(self, parts: Iterable[Any]) -> Any:
        candidates, by_name = [], {}
        for part in parts:
            name = f"{part.topic}-{part.partition}"
            if (part.closed or not part.log.config.compact or name in self._in_progress
                    or name in self._uncleanable):
                continue
            try:
                _, cleanable = self.cleanable(part)
            except Exception as exc:
                self._uncleanable[name] = str(exc)
                log.error("%s: marked uncleanable: %s", name, exc)
                continue
            candidates.append((name, cleanable, part.log.config.min_cleanable_dirty_ratio))
            by_name[name] = part
        chosen = pick_log(candidates)
        if chosen is None:
            return None
        self._in_progress.add(chosen)
        return by_name[chosen]

    async def _clean(self, cleaner: Cleaner, part: Any) -> None:
        config = part.log.config
        snapshot, cleanable = self.cleanable(part)
        reason = clean_reason(cleanable, config.min_cleanable_dirty_ratio)
        name = f"{part.topic}-{part.partition}"
        log.info("%s: cleaning offsets [%d, %d) (%s, dirty ratio %.2f)", name,
                 cleanable.first_dirty_offset, cleanable.first_uncleanable_offset, reason,
                 cleanable.cleanable_ratio)

        def swap(cleaned: CleanedSegment) -> bool:
            return bool(trio.from_thread.run(self._swap, part, cleaned))

        try:
            # abandon_on_cancel: shutdown does not wait for the pass; `abort`
            # stops it at its next chunk (its .cleaned files are removed, or
            # the next open removes them).
            result = await trio.to_thread.run_sync(
                lambda: cleaner.clean_snapshot(snapshot, config, cleanable, swap=swap),
                abandon_on_cancel=True)
        except trio.Cancelled:
            self._abort.set()
            raise
        t = self._totals
        t["passes"] += 1
        t["read"] += result.bytes_read
        t["written"] += result.bytes_written
        t["records_read"] += result.records_read
        t["records_kept"] += result.records_kept
        t["swapped"] += result.segments_swapped
        self._last_run_ms = self._clock()
        self._last_partition = name

    async def _swap(self, part: Any, cleaned: CleanedSegment) -> bool:
        await part.wait_idle()
        if part.closed:
            discard_cleaned(cleaned)
            return False
        return replace_segment(part.log, cleaned)

    def statistics(self) -> LogCleanerStatistics:
        t = self._totals
        return LogCleanerStatistics(
            threads=self.threads, passes_total=t["passes"], bytes_read_total=t["read"],
            bytes_written_total=t["written"], records_read_total=t["records_read"],
            records_kept_total=t["records_kept"], segments_swapped_total=t["swapped"],
            last_run_ms=self._last_run_ms, last_partition=self._last_partition,
            uncleanable_partitions=tuple(sorted(self._uncleanable)),
            in_progress=tuple(sorted(self._in_progress)))


def cleanable_ratio(part: Any) -> float | None:
    """The partition's cleanable ratio (dirty bytes / cleanable bytes) when its topic is
    compacted, else None (`topics describe`)."""
    config = part.log.config
    if not config.compact or part.closed:
        return None
    snapshot = snapshot_log(part.log)
    return float(cleanable_of(snapshot, config, _wall_ms(), high_watermark=part.high_watermark)
                 .cleanable_ratio)
