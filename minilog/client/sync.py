"""The synchronous facade: Producer, Consumer, Admin on one background trio thread.

Theory of operation. Each facade object owns one `_LoopThread`: a daemon
thread running `trio.run`, inside which the async twin (`AsyncProducer`,
`AsyncConsumer`, `AsyncAdmin`) lives in one block,
`async with client: await stop.wait()`, until close() sets `stop`. Calls
that must wait for the network (metadata, admin requests, flush, commit)
cross with `trio.from_thread.run`. The hot paths do not cross per record:

* Producer.produce() appends to the shared accumulator on the caller's
  thread (see `_accumulator.py`); whole batches are handed to the sender,
  and delivery callbacks run here, on the caller's thread, inside
  poll()/flush()/produce(), as in confluent-kafka.
* Consumer.poll() takes whole decoded record lists that the fetcher
  buffered (see `consumer.py`) and waits on a `threading.Condition` only
  when the buffer is empty.

Error handling: exceptions raised on the trio thread come back unchanged
(`trio.from_thread.run` re-raises them); a dead loop thread surfaces as
ClosedError. Constructors raise ConfigError for bad options (before any
thread starts) and BrokerUnavailableError when no broker answers ("connection
refused" at once, else after socket_connection_setup_timeout_ms).

Resource handling: close() is idempotent; the thread is a daemon so a
forgotten close() never blocks interpreter exit, and __del__ does not try
to clean up across threads.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from typing import Any
from collections.abc import Callable

import trio

from minilog.errors import ClosedError, RequestTimeoutError
from minilog.protocol import Record

from ._accumulator import DeliveryReport, record_size
from .admin import AsyncAdmin, ClusterMetadata, PartitionInfo, TopicDescription
from .consumer import AsyncConsumer
from .producer import AsyncProducer

__all__ = ["Producer", "Consumer", "Admin", "Record", "DeliveryReport", "TopicDescription",
           "PartitionInfo", "ClusterMetadata"]


class _LoopThread:
    """One thread running trio with one async client entered in it."""

    def __init__(self, client, name: str) -> None:
        self.client = client
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: trio.Event | None = None
        self._closed = False
        self.crash: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            err, self._error = self._error, None
            raise err

    def _main(self) -> None:
        try:
            trio.run(self._amain)
        except BaseException as exc:  # start failure is handed to start()
            if not self._ready.is_set():
                self._error = exc
            else:                     # a crash later: surfaced by run() and the facades
                self.crash = exc
        finally:
            self._ready.set()

    async def _amain(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        # The client's whole life is this block: entering connects (a failure
        # goes to start()), leaving delivers/leaves the group and closes. A
        # background task's crash ends the block and is kept in `crash`.
        async with self.client:
            self._ready.set()
            await self._stop.wait()

    def run(self, afn: Callable, *args) -> Any:
        """Run `await afn(*args)` on the loop thread and return its result."""
        if self._closed:
            raise ClosedError("client is closed")
        try:
            return trio.from_thread.run(afn, *args, trio_token=self._token)
        except trio.RunFinishedError:
            raise self.closed_error() from self.crash

    def closed_error(self) -> ClosedError:
        """The error for a call on a stopped client, naming a crash when there was one."""
        if self.crash is None and threading.current_thread() is not self._thread:
            self._thread.join(5.0)   # the block is ending: let it record how
        if self.crash is not None:
            return ClosedError(f"client's background thread crashed: {self.crash!r}")
        return ClosedError("client's background thread has stopped")

    def stop(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        assert self._stop is not None and self._token is not None, "start() first"
        try:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        except trio.RunFinishedError:
            pass
        self._thread.join(timeout)


class Producer:
    """Synchronous producer (confluent-kafka's shape, Kafka's option names).

    >>> p = Producer("localhost:9092", acks="all", linger_ms=5)
    >>> p.produce("orders", b'{"id": 1}', key=b"customer-1", on_delivery=report)
    >>> p.flush()

    Thread-safety: produce/poll/flush may be called from any thread;
    delivery callbacks run on whichever thread calls poll/flush/produce.
    """

    def __init__(self, bootstrap_servers="localhost:9092", **options) -> None:
        self._async = AsyncProducer(bootstrap_servers, **options)   # ConfigError here
        self.config = self._async.config
        self._acc = self._async._acc
        self._completed = self._acc.completed     # hot-path shortcuts
        self._sticky = self._acc.sticky
        self._loop = _LoopThread(self._async, "minilog-producer")
        self._loop.start()
        self._closed = False

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __len__(self) -> int:
        """Records produced and not yet delivered (or failed)."""
        return self._acc.undelivered

    def produce(self, topic: str, value, key=None, partition: int | None = None,
                headers=None, timestamp_ms: int | None = None, on_delivery=None,
                callback=None) -> None:
        """Queue one record and return at once.

        Blocks only for a new topic's metadata, or while buffer_memory is
        full, each up to max_block_ms (then RequestTimeoutError /
        UnknownTopicOrPartitionError). `on_delivery(err, report)` runs later
        on the thread calling poll()/flush()/produce(). `callback` is
        confluent-kafka's older name for `on_delivery`.
        """
        if self._completed:
            self._acc.serve_completed()
        # Fast path, lock-free (see _accumulator.py): a keyless value of the
        # open sticky batch's common length, with or without a callback
        # (a batch's records all have one or none: `paired`).
        if key is partition is headers is timestamp_ms is None:
            cb = on_delivery or callback
            b = self._sticky.get(topic)
            if b is not None:
                values = b.values
                if (b.plain and type(value) is bytes and len(value) == b.value_len
                        and (cb is not None) is b.paired):
                    values.append(value if cb is None else (value, cb))
                    if not b.plain:
                        self._acc.fixup(b, values)
                    elif len(values) >= b.cap:
                        self._acc.seal_full(b, values)
                    return
        self._produce_slow(topic, value, key, partition, headers, timestamp_ms,
                           on_delivery or callback)

    def _produce_slow(self, topic, value, key, partition, headers, timestamp_ms, on_delivery):
        if self._closed or self._acc.closed:
            raise ClosedError("producer is closed")
        if self._loop.crash is not None:
            raise self._loop.closed_error() from self._loop.crash
        acc = self._acc
        if topic not in acc.num_partitions:
            self._loop.run(self._async.ensure_topic, topic)
        self._wait_for_space(record_size(value, key, headers))
        acc.append(topic, value, key, partition, headers, timestamp_ms, on_delivery)

    def _wait_for_space(self, size: int) -> None:
        """Wait (up to max_block_ms) for buffer space; RecordTooLargeError at once if it never fits."""
        acc = self._acc
        if acc.buffered_bytes + acc.batch_size <= acc.buffer_memory:
            return
        acc.check_record_size(size)
        deadline = time.monotonic() + self.config.max_block_ms / 1000
        cond = self._async.done_cond
        while True:
            acc.serve_completed()
            if acc.buffered_bytes + acc.batch_size <= acc.buffer_memory:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RequestTimeoutError(
                    f"buffer_memory ({acc.buffer_memory} bytes) still full after "
                    f"max_block_ms ({self.config.max_block_ms} ms)")
            with cond:
                if not acc.completed:
                    cond.wait(min(remaining, 0.1))

    def produce_batch(self, topic: str, values, keys=None, partition: int | None = None,
                      on_delivery=None) -> None:
        """Queue many records in one call (bulk path; one `on_delivery` for each record)."""
        if self._closed:
            raise ClosedError("producer is closed")
        acc = self._acc
        if acc.completed:
            acc.serve_completed()
        values = list(values)
        if topic not in acc.num_partitions:
            self._loop.run(self._async.ensure_topic, topic)
        self._wait_for_space(max((record_size(v) for v in values), default=0))
        acc.append_many(topic, values, None if keys is None else list(keys), partition,
                        on_delivery)

    def poll(self, timeout: float | None = 0) -> int:
        """Serve delivery callbacks, waiting up to `timeout` s for one; return records served."""
        acc = self._acc
        served = acc.serve_completed()
        if served or not timeout or acc.undelivered == 0:
            return served
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        cond = self._async.done_cond
        while not served and acc.undelivered:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            with cond:
                if not acc.completed:
                    cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            served = acc.serve_completed()
        return served

    def flush(self, timeout: float | None = None) -> int:
        """Send everything buffered, wait (up to `timeout` s), serve callbacks.

        Returns the number of records still undelivered (0 when all done).
        """
        acc = self._acc
        if acc.undelivered == 0 or self._closed:
            acc.serve_completed()
            return acc.undelivered
        with acc.lock:
            acc.flushing += 1
            acc.wake()
        try:
            self.poll(timeout if timeout is not None else -1)
            deadline = None if timeout is None else time.monotonic() + timeout
            while acc.undelivered:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self.poll(remaining if remaining is not None else -1)
        finally:
            with acc.lock:
                acc.flushing -= 1
        acc.serve_completed()
        return acc.undelivered

    def partitions_for(self, topic: str) -> list[int]:
        return self._loop.run(self._async.partitions_for, topic)

    def statistics(self):
        """ProducerStatistics: undelivered records, buffered bytes, queued batches, in flight."""
        return self._async.statistics()

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to `timeout` s), then stop the background thread. Safe to call twice."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            if timeout is not None:
                self._async.close_timeout = 0   # flush() above already waited `timeout`
            self._loop.stop()
            self._acc.serve_completed()


class Consumer:
    """Synchronous consumer (kafka-python's shape).

    >>> c = Consumer("localhost:9092", auto_offset_reset="earliest")
    >>> c.assign([("orders", 0)])
    >>> for record in c: ...

    Not thread-safe: use one Consumer per thread, as with Kafka.
    """

    def __init__(self, bootstrap_servers="localhost:9092", **options) -> None:
        self._async = AsyncConsumer(bootstrap_servers, **options)
        self.config = self._async.config
        self._loop = _LoopThread(self._async, "minilog-consumer")
        self._loop.start()
        self._closed = False
        self._iter: list = []
        self._iter_pos = 0

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("consumer is closed")
        if self._loop.crash is not None:
            raise self._loop.closed_error() from self._loop.crash

    def assign(self, partitions) -> None:
        """Consume exactly these: [(topic, partition)] or [(topic, partition, offset)]."""
        self._check()
        self._async.assign(partitions)

    def assignment(self) -> set[tuple[str, int]]:
        return self._async.assignment()

    def poll(self, timeout_ms: int | None = 0, max_records: int | None = None) -> list[Record]:
        """Return up to max_records (default max_poll_records) records, waiting up to timeout_ms.

        `timeout_ms=None` waits until there are records (or an error).
        """
        self._check()
        a = self._async
        records = a.take_records(max_records)
        if records or (timeout_ms is not None and timeout_ms <= 0):
            return records
        deadline = time.monotonic() + (1e9 if timeout_ms is None else timeout_ms / 1000)
        cond = a.data_cond
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return records
            with cond:
                if not a._buffer and not a._caller_calls and a._state == "running":
                    cond.wait(remaining)
            records = a.take_records(max_records)
            if records:
                return records
            if a._state != "running":
                raise self._loop.closed_error() from self._loop.crash

    def __iter__(self):
        return self

    def __next__(self) -> Record:
        if self._iter_pos >= len(self._iter):
            while True:
                if self._closed:
                    raise StopIteration
                batch = self.poll(timeout_ms=1000)
                if batch:
                    break
            self._iter, self._iter_pos = batch, 0
        rec = self._iter[self._iter_pos]
        self._iter_pos += 1
        return rec

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._check()
        self._iter, self._iter_pos = [], 0
        self._async.seek(topic, partition, offset)

    def seek_to_beginning(self, partitions=None) -> None:
        self._check()
        self._iter, self._iter_pos = [], 0
        self._async.seek_to_beginning(partitions)

    def seek_to_end(self, partitions=None) -> None:
        self._check()
        self._iter, self._iter_pos = [], 0
        self._async.seek_to_end(partitions)

    def statistics(self):
        """ConsumerStatistics: assignment, buffered fetch bytes, positions, high watermarks."""
        return self._async.statistics()

    def pause(self, partitions) -> None:
        self._async.pause(partitions)

    def resume(self, partitions) -> None:
        self._async.resume(partitions)

    def position(self, topic: str, partition: int) -> int:
        """Offset of the next record poll() returns for this partition."""
        self._check()
        return self._loop.run(self._async.position, topic, partition)

    def offsets_for_times(self, timestamps: dict) -> dict:
        """{(topic, partition): ts_ms} -> {(topic, partition): (offset, timestamp) or None}."""
        self._check()
        return self._loop.run(self._async.offsets_for_times, timestamps)

    def beginning_offsets(self, partitions) -> dict:
        return self._loop.run(self._async.beginning_offsets, partitions)

    def end_offsets(self, partitions) -> dict:
        return self._loop.run(self._async.end_offsets, partitions)

    def list_topics(self) -> list[str]:
        return self._loop.run(self._async.list_topics)

    def partitions_for_topic(self, topic: str) -> list[int]:
        return self._loop.run(self._async.partitions_for_topic, topic)

    def subscribe(self, topics, on_assign=None, on_revoke=None) -> None:
        """Join the group (needs group_id); on_assign/on_revoke run inside poll()."""
        self._check()
        self._loop.run(self._async.subscribe, topics, on_assign, on_revoke)

    def unsubscribe(self) -> None:
        self._loop.run(self._async.unsubscribe)

    def commit(self, offsets=None, asynchronous: bool = False) -> None:
        self._check()
        self._loop.run(self._async.commit, offsets, asynchronous)

    def committed(self, partitions) -> dict:
        self._check()
        return self._loop.run(self._async.committed, partitions)

    def close(self) -> None:
        """Leave the group (if any) and stop. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._loop.stop()


class Admin:
    """Synchronous admin client; every public method of AsyncAdmin, blocking.

    >>> with Admin("localhost:9092") as admin:
    ...     admin.create_topic("orders", partitions=3, config={"retention.ms": "604800000"})
    """

    def __init__(self, bootstrap_servers="localhost:9092", **options) -> None:
        self._async = AsyncAdmin(bootstrap_servers, **options)
        self.config = self._async.config
        self._loop = _LoopThread(self._async, "minilog-admin")
        self._loop.start()
        self._closed = False

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __getattr__(self, name: str):
        # Forward public coroutine methods (including a group-admin mixin's).
        if name.startswith("_"):
            raise AttributeError(name)
        fn = getattr(self._async, name)
        if not callable(fn):
            return fn

        def call(*args, **kwargs):
            if self._closed:
                raise ClosedError("admin client is closed")
            return self._loop.run(lambda: fn(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = fn.__doc__
        return call

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.stop()


def _forward(name: str):
    afn = getattr(AsyncAdmin, name)

    def method(self, *args, **kwargs):
        if self._closed:
            raise ClosedError("admin client is closed")
        return self._loop.run(functools.partial(getattr(self._async, name), *args, **kwargs))

    functools.update_wrapper(method, afn)
    return method


# Real methods (not only __getattr__) so help(), dir() and IDEs see them,
# including a group-admin mixin's.
for _name, _fn in inspect.getmembers(AsyncAdmin, inspect.iscoroutinefunction):
    if not _name.startswith("_") and _name not in ("start", "close") and _name not in Admin.__dict__:
        setattr(Admin, _name, _forward(_name))
del _name, _fn
