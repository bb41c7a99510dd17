"""The cleaner's bounded key -> last offset map (Kafka's SkimpyOffsetMap, in Python).

Rules:

- One map serves one cleaning pass of one log. It records, for every key
  seen in the dirty section, the largest offset holding that key. A record
  of the cleaned range survives when its offset is at least the map's
  offset for its key (or its key is not in the map).
- The map is bounded by `log.cleaner.dedupe.buffer.size` (per cleaner
  thread). The bound is checked *before* a batch is added, as Kafka does,
  so a batch is mapped whole or not at all; `latest_offset` says where the
  mapped range ends and the cleaner cleans only up to there. A log too
  large for one pass is cleaned in several.

Theory of operation: Kafka hashes every key into a fixed array of
(16-byte MD5, 8-byte offset) slots. In CPython hashing a key costs about
1 us, more than the rest of the per-record work, so this map is a `dict`
keyed by the key bytes themselves (exact, no collision to reason about)
and the memory bound is an estimate of what CPython really spends per
entry: the key object (33 bytes + its length), the offset `int` and the
dict slot, measured with tracemalloc at about 120 bytes plus the key
(`ENTRY_OVERHEAD_BYTES`). Before a batch is added the map checks the worst
case (every key new, at the batch's largest key length); after it, the
estimate grows by the entries really added at the batch's mean key length.

Task safety: one map per cleaner thread; not shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["OffsetMap", "OffsetMapStatistics", "ENTRY_OVERHEAD_BYTES", "LOAD_FACTOR"]

ENTRY_OVERHEAD_BYTES = 120     # bytes per entry besides the key (dict slot, bytes and int objects)
LOAD_FACTOR = 0.9              # Kafka's log.cleaner.io.buffer.load.factor default


@dataclass(frozen=True)
class OffsetMapStatistics:
    entries: int
    estimated_bytes: int
    memory_bytes_max: int
    latest_offset: int          # last offset of the last batch mapped, -1 when none


class OffsetMap:
    """Key -> largest offset, bounded in (estimated) memory."""

    def __init__(self, memory_bytes: int, *, load_factor: float = LOAD_FACTOR) -> None:
        """
        Args:
            memory_bytes: the dedupe buffer of one cleaner thread.
            load_factor: the share of it the entries may use (Kafka's 0.9).

        Raises:
            ValueError: the buffer cannot hold a single entry.
        """
        self.memory_bytes_max = int(memory_bytes * load_factor)
        if self.memory_bytes_max < ENTRY_OVERHEAD_BYTES + 1:
            raise ValueError(f"dedupe buffer of {memory_bytes} bytes cannot hold one entry")
        self._offsets: dict[bytes, int] = {}
        self._estimated_bytes = 0
        self.latest_offset = -1

    def __len__(self) -> int:
        return len(self._offsets)

    def get(self, key: bytes) -> int:
        """The largest offset mapped for `key`, or -1."""
        return self._offsets.get(key, -1)

    @property
    def lookup(self) -> Callable[[bytes, int], int]:
        """The map's `dict.get` (call it with -1 as the default): the cleaner's hot loop
        calls it once per record, and a bound C method costs a third of `get`."""
        return self._offsets.get

    def fits(self, keys: Sequence[bytes]) -> bool:
        """Whether the keys of one batch surely fit (worst case: all new, all longest)."""
        if not keys:
            return True
        worst = len(keys) * (ENTRY_OVERHEAD_BYTES + max(map(len, keys)))
        return self._estimated_bytes + worst <= self.memory_bytes_max

    def put_batch(self, keys: Sequence[bytes], offsets: Sequence[int], last_offset: int) -> None:
        """Map each key to its offset (offsets ascending), then note the batch's last offset.

        The caller checked `fits(keys)` first, or the map is empty (one batch
        always goes in, so a pass makes progress).
        """
        assert last_offset > self.latest_offset, (last_offset, self.latest_offset)
        if keys:
            before = len(self._offsets)
            self._offsets.update(zip(keys, offsets))
            added = len(self._offsets) - before
            mean_key = sum(map(len, keys)) // len(keys)
            self._estimated_bytes += added * (ENTRY_OVERHEAD_BYTES + mean_key)
        self.latest_offset = last_offset

    def clear(self) -> None:
        self._offsets.clear()
        self._estimated_bytes = 0
        self.latest_offset = -1

    def statistics(self) -> OffsetMapStatistics:
        return OffsetMapStatistics(len(self._offsets), self._estimated_bytes,
                                   self.memory_bytes_max, self.latest_offset)
