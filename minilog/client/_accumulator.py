"""The producer's record accumulator: per-partition batches on the caller's side.

Theory of operation. `produce()` runs on the caller's thread and must be
tiny, so records are appended column by column (values, then keys, headers,
timestamps and callbacks only once some record has one) to the open
`ProducerBatch` of their partition. A batch is *sealed* when its size
estimate reaches `batch_size` (on the caller's thread), or when it is older
than `linger_ms` or a flush is asked for (on the sender's thread, in
`drain()`). Sealed batches move whole to the sender: the only thing that
crosses threads is a batch, never a record.

A record that can never be sent (larger than `max_request_size` or
`buffer_memory`) is refused at once with RecordTooLargeError, as Kafka's
producer does, before it takes any buffer space.

Keyless records stick to one partition per topic until its batch is sealed,
then move to another (KIP-480, `StickyPartitioner`).

Thread safety: every mutation of `open`/`sealed` happens under `lock`, a
`threading.Lock`, except one: produce()'s fast path appends a keyless
value of the batch's common length to a *plain* batch without the lock
(on this machine an uncontended lock costs ~450 ns, half of produce()).
The protocol, relying only on list.append being atomic under the GIL:
the caller reads `values = b.values`, checks `b.plain`, appends, and checks
`b.plain` again. Whoever ends the fast path for a batch (`detach`, under
the lock: before sealing it, or before a record with a key/headers/other
length joins it) clears `plain` first, then replaces `b.values` by a copy
of its first n items. A racing append either landed before the copy (it
is in the batch) or after (it is in the old list past n, and its caller,
seeing `plain` cleared, moves it to a new batch with `fixup`). Counters written by one thread
at a time: `appended_records`/`appended_bytes` when a batch is sealed
(under the lock; records in open batches are counted by `undelivered`),
`done_records`/`released_bytes` by whoever drains `completed` (the caller,
in poll/flush/produce). `completed` is a deque: append and popleft are
atomic in CPython.

Waking the sender: `notify()` is given by the owner (trio's
`TrioToken.run_sync_soon`, thread-safe). The caller wakes the sender when a
batch is sealed, and when it opens a batch while the sender sleeps with no
deadline (`idle`) or linger_ms is 0; `wake_pending` coalesces wake-ups
until the sender drains again. `idle` and `wake_pending` are read and
written under the lock, so a record appended just after a drain always
finds `idle` set and wakes the sender.
"""

from __future__ import annotations

import collections
from functools import partial
import threading
import time
from typing import NamedTuple
from collections.abc import Callable

from ._partitioner import KeyPartitioner, StickyPartitioner

__all__ = ["ProducerBatch", "Accumulator", "DeliveryReport", "RECORD_OVERHEAD_BYTES", "record_size"]

RECORD_OVERHEAD_BYTES = 22   # per-record framing estimate (Kafka's worst case is 21)
BATCH_OVERHEAD_BYTES = 61    # RecordBatch v2 header


class DeliveryReport(NamedTuple):
    """What `on_delivery(err, report)` receives for one record."""

    topic: str
    partition: int
    offset: int          # -1 when unknown (acks=0, or the record failed)
    timestamp: int       # ms; the broker's log-append time when the topic uses it
    key: bytes | None
    value: bytes | None
    headers: list | None = None


_new_report = partial(tuple.__new__, DeliveryReport)


class ProducerBatch:
    """Records for one partition, columnar. Caller-side fields until sealed."""

    __slots__ = ("topic", "partition", "values", "keys", "headers", "timestamps", "callbacks",
                 "size", "created", "timestamp_ms", "sealed", "plain", "value_len", "cap",
                 "detached", "paired",
                 # sender-side
                 "count", "data", "base_sequence", "attempts", "deadline", "retry_at", "alone",
                 "last_error")

    def __init__(self, topic: str, partition: int, created: float, timestamp_ms: int) -> None:
        self.topic = topic
        self.partition = partition
        self.values: list = []
        self.keys: list | None = None
        self.headers: list | None = None
        self.timestamps: list | None = None
        self.callbacks: list | None = None
        self.size = BATCH_OVERHEAD_BYTES
        self.created = created
        self.timestamp_ms = timestamp_ms
        self.sealed = False
        self.plain = False   # produce()'s lock-free fast path may append (see Accumulator)
        self.value_len = -1  # plain batches: every value has this length
        self.cap = 0         # plain batches: records that fill batch_size
        self.detached: tuple[list, int] | None = None   # (list, n): the values list racing fast appends may still hit
        self.paired = False  # plain batches: `values` holds (value, on_delivery) pairs
        self.count = 0
        self.data: bytes | None = None
        self.base_sequence = -1
        self.attempts = 0
        self.deadline = 0.0
        self.retry_at = 0.0
        self.alone = False   # sent as the only batch of its partition in a request
        self.last_error: BaseException | None = None   # why its last attempt failed

    def __repr__(self) -> str:
        return (f"<ProducerBatch {self.topic}-{self.partition} records={len(self.values)} "
                f"size~{self.size}>")


class Accumulator:
    """Caller-side batches of a producer. See the module docstring for the threading rules."""

    def __init__(self, *, batch_size: int, linger_ms: int, buffer_memory: int,
                 max_request_size: int = 1 << 62,
                 clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 seed: int | None = None) -> None:
        self.batch_size = batch_size
        self.linger_s = linger_ms / 1000
        self.buffer_memory = buffer_memory
        self.max_request_size = max_request_size
        self.record_bytes_max = min(max_request_size, buffer_memory) - BATCH_OVERHEAD_BYTES
        self.clock = clock
        self.wall_ms = wall_ms
        self.lock = threading.Lock()
        self.open: dict[tuple[str, int], ProducerBatch] = {}
        self.sticky: dict[str, ProducerBatch] = {}     # topic -> open batch of its sticky partition
        self.sticky_partition: dict[str, int] = {}
        self.sealed: collections.deque[ProducerBatch] = collections.deque()
        self.completed: collections.deque = collections.deque()
        self.num_partitions: dict[str, int] = {}       # written by the owner from metadata
        self.partitioner = StickyPartitioner(seed)
        self.key_partitioner = KeyPartitioner()   # keyed records: memoised murmur2 of hot keys
        self.appended_records = 0
        self.appended_bytes = 0
        self.done_records = 0
        self.released_bytes = 0
        self.flushing = 0
        self.idle = True
        self.wake_pending = False
        self.closed = False
        self.notify: Callable[[], None] = lambda: None

    # -- caller side ---------------------------------------------------

    @property
    def buffered_bytes(self) -> int:
        return self.appended_bytes - self.released_bytes

    @property
    def undelivered(self) -> int:
        """Records produced and not yet served as delivered or failed."""
        with self.lock:
            open_records = sum(len(b.values) for b in self.open.values())
            return self.appended_records + open_records - self.done_records

    def check_record_size(self, size: int) -> None:
        """Raise RecordTooLargeError for a record that can never be sent (Kafka's ensureValidRecordSize).

        `size` is the record's size estimate (value, key, headers and framing).
        """
        for limit, name in ((self.max_request_size, "max_request_size"),
                            (self.buffer_memory, "buffer_memory")):
            if size + BATCH_OVERHEAD_BYTES > limit:
                from minilog.errors import RecordTooLargeError
                raise RecordTooLargeError(message=(
                    f"the record is {size} bytes with its framing, larger than "
                    f"{name} ({limit} bytes)"))

    def wake(self) -> None:
        """Wake the sender (call with the lock held)."""
        if not self.wake_pending:
            self.wake_pending = True
            self.notify()

    def _new_batch(self, topic: str, partition: int) -> ProducerBatch:
        """Open a batch (lock held)."""
        b = ProducerBatch(topic, partition, self.clock(), self.wall_ms())
        self.open[(topic, partition)] = b
        if self.idle or not self.linger_s:
            self.wake()
        return b

    def _make_plain(self, b: ProducerBatch, value_len: int, paired: bool = False) -> None:
        """Let produce()'s fast path append to the new, empty batch `b` (lock held).

        `paired`: every record has a delivery callback, and the fast path
        appends one (value, callback) tuple per record: still one atomic
        list.append, so the detach protocol is unchanged; `detach` splits
        the pairs into the values and callbacks columns.
        """
        # `paired` stays fixed for as long as this values list can take fast
        # appends (detach leaves it set), and is written before `plain`: a
        # racing caller that sees `plain` also sees the list's kind.
        b.paired = paired
        b.value_len = value_len
        b.cap = max(1, (self.batch_size - BATCH_OVERHEAD_BYTES)
                    // (value_len + RECORD_OVERHEAD_BYTES))
        b.plain = True

    def detach(self, b: ProducerBatch) -> None:
        """End the fast path for `b` (lock held): from now on only locked code appends.

        A caller that passed the `plain` check just before may still append
        to the old values list: `b.values` becomes a copy of its first n
        items and (list, n) is kept in `detached`; that caller sees `plain`
        False afterwards and hands its record back through `fixup()`.
        """
        if not b.plain:
            return
        b.plain = False
        values = b.values
        n = len(values)
        if b.paired:
            # `paired` is left set: a caller racing this detach compares its
            # record's kind with it before appending to the old list.
            pairs = values[:n]
            b.values = [pair[0] for pair in pairs]
            b.callbacks = [pair[1] for pair in pairs]
        else:
            b.values = values[:n]
        b.detached = (values, n)
        b.size = BATCH_OVERHEAD_BYTES + n * (b.value_len + RECORD_OVERHEAD_BYTES)

    def fixup(self, b: ProducerBatch, values: list) -> None:
        """Re-append records a fast-path caller added after `b` was detached (takes the lock)."""
        with self.lock:
            detached = b.detached
            if detached is None or detached[0] is not values:
                return
            extra = values[detached[1]:]
            del values[detached[1]:]
            if extra:
                if self.closed:
                    from minilog.errors import ClosedError
                    raise ClosedError("producer is closed")
                if b.paired:   # (value, callback) pairs; values are always bytes
                    for x in extra:
                        v, cb = x if type(x) is tuple else (x, None)
                        self._extend_locked(b.topic, None, [v], None, cb,
                                            [RECORD_OVERHEAD_BYTES + len(v)])
                    return
                self._extend_locked(b.topic, None, extra, None, None,
                                    [RECORD_OVERHEAD_BYTES + len(v) for v in extra])

    def seal_full(self, b: ProducerBatch, values: list) -> None:
        """Fast path found its batch full: seal it, or fix up if someone else did."""
        with self.lock:
            if b.plain:
                self.seal(b)
                return
        self.fixup(b, values)

    def seal(self, b: ProducerBatch, wake: bool = True) -> None:
        """Move an open batch to the sender's queue (lock held)."""
        self.detach(b)
        b.sealed = True
        del self.open[(b.topic, b.partition)]
        self.appended_bytes += b.size
        self.appended_records += len(b.values)
        self.sealed.append(b)
        if self.sticky.get(b.topic) is b:
            del self.sticky[b.topic]
            n = self.num_partitions.get(b.topic, 1)
            self.sticky_partition[b.topic] = self.partitioner.next(n, b.partition)
        if wake:
            self.wake()

    def sticky_batch(self, topic: str) -> ProducerBatch:
        """The open batch of `topic`'s sticky partition, opened if needed (lock held)."""
        b = self.sticky.get(topic)
        if b is None:
            p = self.sticky_partition.get(topic)
            n = self.num_partitions[topic]
            if p is None or p >= n:
                p = self.sticky_partition[topic] = self.partitioner.next(n)
            b = self.open.get((topic, p)) or self._new_batch(topic, p)
            self.sticky[topic] = b
        return b

    def append(self, topic: str, value, key=None, partition: int | None = None,
               headers=None, timestamp_ms: int | None = None, callback=None) -> None:
        """The general path of produce(): any combination of options.

        `num_partitions[topic]` must be known (the owner waits for metadata).
        Raises TypeError/ValueError for a bad value, key, headers or partition.
        """
        if value is not None and type(value) is not bytes:
            value = _to_bytes(value, "value")
        if key is not None and type(key) is not bytes:
            key = _to_bytes(key, "key")
        n = self.num_partitions[topic]
        if partition is None:
            if key is not None:
                partition = self.key_partitioner.partition(key, n)
        elif type(partition) is not int or not 0 <= partition < n:
            from minilog.errors import UnknownPartitionError
            raise UnknownPartitionError(
                message=f"partition {partition!r} out of range: {topic!r} has {n}")
        if headers is not None:
            headers = _check_headers(headers)
        size = (RECORD_OVERHEAD_BYTES + (len(value) if value is not None else 0)
                + (len(key) if key is not None else 0))
        if headers:
            size += sum(len(k) + 10 + (len(v) if v else 0) for k, v in headers)
        if size > self.record_bytes_max:
            self.check_record_size(size)
        with self.lock:
            if self.closed:
                from minilog.errors import ClosedError
                raise ClosedError("producer is closed")
            if partition is None:
                b = self.sticky_batch(topic)
            else:
                b = self.open.get((topic, partition)) or self._new_batch(topic, partition)
            plain = (key is None and headers is None and timestamp_ms is None
                     and value is not None)
            paired = callback is not None
            if b.plain:
                if plain and len(value) == b.value_len and paired == b.paired:
                    b.values.append((value, callback) if paired else value)
                    if len(b.values) >= b.cap:
                        self.seal(b)
                    return
                self.detach(b)    # b.values is now private: i below is stable
            elif not b.values and plain and partition is None:
                self._make_plain(b, len(value), paired)
                b.values.append((value, callback) if paired else value)
                if b.cap <= 1:
                    self.seal(b)
                return
            i = len(b.values)
            b.values.append(value)
            if key is not None or b.keys is not None:
                if b.keys is None:
                    b.keys = [None] * i
                b.keys.append(key)
            if headers is not None or b.headers is not None:
                if b.headers is None:
                    b.headers = [None] * i
                b.headers.append(headers)
            if timestamp_ms is not None or b.timestamps is not None:
                if b.timestamps is None:
                    b.timestamps = [b.timestamp_ms] * i
                b.timestamps.append(b.timestamp_ms if timestamp_ms is None else int(timestamp_ms))
            if callback is not None or b.callbacks is not None:
                if b.callbacks is None:
                    b.callbacks = [None] * i
                b.callbacks.append(callback)
            b.size += size
            if b.size >= self.batch_size:
                self.seal(b)

    def append_many(self, topic: str, values: list, keys: list | None = None,
                    partition: int | None = None, callback=None) -> None:
        """Bulk path: whole slices go into batches (list.extend), no per-record Python call."""
        n = self.num_partitions[topic]
        if keys is not None and len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        values = [v if v is None or type(v) is bytes else _to_bytes(v, "value") for v in values]
        if keys is not None:
            keys = [k if k is None or type(k) is bytes else _to_bytes(k, "key") for k in keys]
        if partition is not None and (type(partition) is not int or not 0 <= partition < n):
            from minilog.errors import UnknownPartitionError
            raise UnknownPartitionError(
                message=f"partition {partition!r} out of range: {topic!r} has {n}")
        if keys is not None and partition is None and any(k is not None for k in keys):
            groups: dict[int | None, tuple[list, list]] = {}
            key_partition = self.key_partitioner.partition
            for v, k in zip(values, keys):
                p = None if k is None else key_partition(k, n)
                g = groups.get(p)
                if g is None:
                    g = groups[p] = ([], [])
                g[0].append(v)
                g[1].append(k)
            for p, (vs, ks) in groups.items():
                self._extend(topic, p, vs, ks, callback)
        else:
            self._extend(topic, partition, values, keys, callback)

    def _extend(self, topic, partition, values, keys, callback) -> None:
        sizes = [RECORD_OVERHEAD_BYTES + (len(v) if v is not None else 0) for v in values]
        if keys is not None:
            sizes = [s + (len(k) if k is not None else 0) for s, k in zip(sizes, keys)]
        if sizes:
            self.check_record_size(max(sizes))
        with self.lock:
            if self.closed:
                from minilog.errors import ClosedError
                raise ClosedError("producer is closed")
            self._extend_locked(topic, partition, values, keys, callback, sizes)

    def _extend_locked(self, topic, partition, values, keys, callback, sizes) -> None:
        start, total = 0, len(values)
        while start < total:
            if partition is None:
                b = self.sticky_batch(topic)
            else:
                b = self.open.get((topic, partition)) or self._new_batch(topic, partition)
            self.detach(b)
            room = self.batch_size - b.size
            end = start
            used = 0
            while end < total and (used + sizes[end] <= room or end == start):
                used += sizes[end]
                end += 1
            i = len(b.values)
            b.values += values[start:end]
            if keys is not None or b.keys is not None:
                if b.keys is None:
                    b.keys = [None] * i
                b.keys += keys[start:end] if keys is not None else [None] * (end - start)
            for name in ("headers", "callbacks"):
                col = getattr(b, name)
                if col is not None:
                    col += [None] * (end - start)
            if callback is not None:
                if b.callbacks is None:
                    b.callbacks = [None] * i
                b.callbacks[i:] = [callback] * (end - start)
            if b.timestamps is not None:
                b.timestamps += [b.timestamp_ms] * (end - start)
            b.size += used
            start = end
            if b.size >= self.batch_size:
                self.seal(b)

    # -- sender side ---------------------------------------------------

    def drain(self, now: float) -> tuple[list[ProducerBatch], float | None]:
        """Take sealed batches, sealing open ones past linger (or all when flushing).

        Returns the batches, oldest first, and the next linger deadline
        (monotonic seconds) or None when no batch is open. Sender-side.
        """
        with self.lock:
            self.wake_pending = False
            force = self.flushing > 0 or self.closed
            deadline = None
            if self.open:
                linger = self.linger_s
                for b in list(self.open.values()):
                    due = b.created + linger
                    if force or due <= now:
                        self.seal(b, wake=False)
                    elif deadline is None or due < deadline:
                        deadline = due
            out = list(self.sealed)
            self.sealed.clear()
            self.idle = deadline is None
        return out, deadline

    # -- completion (sender -> caller) -----------------------------------

    def serve_completed(self) -> int:
        """Run delivery callbacks of finished batches on this thread; return records served.

        Called by the caller's thread from poll()/flush()/produce().
        Exceptions from callbacks propagate to the caller (as in confluent-kafka).
        """
        served = 0
        completed = self.completed
        while completed:
            b, base_offset, timestamp, error = completed.popleft()
            count = b.count
            self.done_records += count
            self.released_bytes += b.size
            served += count
            callbacks = b.callbacks
            if callbacks is None:
                continue
            keys, values, headers = b.keys, b.values, b.headers
            ts_list = b.timestamps
            topic, partition = b.topic, b.partition
            if (keys is None and headers is None and ts_list is None and error is None
                    and base_offset >= 0):
                # The common case (keyless, acked): no per-record branches, and
                # reports built with tuple.__new__ (no Python-level __new__ frame).
                ts = timestamp if timestamp >= 0 else b.timestamp_ms
                for i, cb in enumerate(callbacks):
                    if cb is not None:
                        cb(None, _new_report((topic, partition, base_offset + i, ts, None,
                                              values[i], None)))
                continue
            for i, cb in enumerate(callbacks):
                if cb is None:
                    continue
                offset = base_offset + i if base_offset >= 0 and error is None else -1
                ts = timestamp if timestamp >= 0 else (
                    ts_list[i] if ts_list is not None else b.timestamp_ms)
                cb(error, DeliveryReport(topic, partition, offset, ts,
                                         keys[i] if keys is not None else None, values[i],
                                         headers[i] if headers is not None else None))
        return served


def record_size(value, key=None, headers=None) -> int:
    """A record's size estimate in a batch (value, key, headers, framing); for limit checks."""
    size = RECORD_OVERHEAD_BYTES
    for part in (value, key):
        if part is not None:
            size += len(part.encode("utf-8")) if isinstance(part, str) else len(part)
    if headers:
        items = headers.items() if isinstance(headers, dict) else headers
        size += sum(len(k) + 10 + (len(v) if v else 0) for k, v in items)
    return size


def _to_bytes(value, what: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, str or None, not {type(value).__name__}")


def _check_headers(headers) -> list:
    if isinstance(headers, dict):
        headers = list(headers.items())
    out = []
    for item in headers:
        try:
            k, v = item
        except (TypeError, ValueError):
            raise TypeError("headers must be (str, bytes | None) pairs or a dict") from None
        if not isinstance(k, str):
            raise TypeError(f"header key must be str, not {type(k).__name__}")
        if v is not None and type(v) is not bytes:
            v = _to_bytes(v, f"header {k!r}")
        out.append((k, v))
    return out
