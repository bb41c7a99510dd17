"""AsyncProducer: the trio-native producer's caller side and its lifetime.

Theory of operation.

* Caller side (`produce`, `produce_batch`, `poll`, `flush`): records go into
  the `Accumulator` (see `_accumulator.py`); delivery callbacks of finished
  batches run on the caller's task/thread inside poll/flush/produce, as in
  confluent-kafka.
* Delivery is the `Sender`'s (see `_sender.py`): one task in the producer's
  nursery that turns sealed batches into produce requests, retries, and
  reports each batch's outcome back through the accumulator.
* Lifetime (see `_lifecycle.py`): `async with AsyncProducer(...) as p:`
  connects, gets a producer id when idempotent and starts the sender;
  leaving the block delivers what is buffered (up to `close_timeout`
  seconds; None waits up to delivery_timeout_ms per batch), fails the rest
  with ClosedError, and stops. An exception leaving the block skips the
  delivery wait.
* Time: `clock` (default `time.monotonic`) is injected; the caller's thread
  stamps batches with it and the sender computes every deadline with it.
  Tests pass `clock=trio.current_time` to run on trio's MockClock.

Exception contract: produce()/flush() raise `MinilogError` subclasses
(ClosedError; RecordTooLargeError at once for a record larger than
max_request_size or buffer_memory; RequestTimeoutError when blocked longer
than max_block_ms; UnknownTopicOrPartitionError when the topic never shows
up in metadata); per-record failures go to `on_delivery(err, report)`.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from minilog.errors import ClosedError, RequestTimeoutError

from ._accumulator import Accumulator, DeliveryReport, record_size
from ._cluster import Cluster
from ._config import ProducerConfig, parse_bootstrap
from ._connection import Connect, open_tcp
from ._lifecycle import ClientLifecycle, background
from ._sender import Sender

__all__ = ["AsyncProducer", "DeliveryReport", "ProducerStatistics"]


@dataclass(frozen=True)
class ProducerStatistics:
    records_undelivered: int      # produced, not yet delivered or failed
    bytes_buffered: int           # sealed batches not yet served (counts against buffer_memory)
    batches_queued: int           # sealed, waiting for the sender
    requests_in_flight: int       # produce requests awaiting a response, all brokers
    records_failed: int           # records whose delivery failed, since start


class AsyncProducer(ClientLifecycle):
    """Trio producer. `async with AsyncProducer("localhost:9092") as p: await p.produce(...)`.

    Options are Kafka's producer settings in snake_case (see
    docs/configuration.md, "Client settings"); a bad one raises ConfigError.
    `clock` and `connect` are seams for tests (a monotonic clock in
    seconds; `connect(host, port, timeout_s) -> trio.abc.Stream`).
    Task-safe within one trio run; `produce` may also be driven from the sync
    facade's thread (see sync.py), which shares the accumulator.
    """

    close_timeout: float | None = None   # seconds leaving `async with` waits for delivery

    def __init__(self, bootstrap_servers="localhost:9092", *,
                 clock: Callable[[], float] = time.monotonic, connect: Connect = open_tcp,
                 **options) -> None:
        self.config = cfg = ProducerConfig.from_kwargs(**options)
        self._acc = Accumulator(batch_size=cfg.batch_size, linger_ms=cfg.linger_ms,
                                buffer_memory=cfg.buffer_memory,
                                max_request_size=cfg.max_request_size, clock=clock)
        self._cluster = Cluster(parse_bootstrap(bootstrap_servers), client_id=cfg.client_id,
                                request_timeout_ms=cfg.request_timeout_ms,
                                metadata_max_age_ms=cfg.metadata_max_age_ms,
                                retry_backoff_ms=cfg.retry_backoff_ms,
                                allow_auto_topic_creation=True, connect=connect,
                                connect_timeout_ms=cfg.socket_connection_setup_timeout_ms)
        self._sender = Sender(cfg, self._acc, self._cluster, clock)
        self.done_cond = self._sender.done_cond   # the sync facade waits here

    @property
    def producer_id(self) -> int:
        return self._sender.producer_id

    @property
    def producer_epoch(self) -> int:
        return self._sender.producer_epoch

    # -- lifetime ------------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[AsyncProducer]:
        async with background(self._cluster) as nursery:
            if self.config.enable_idempotence:
                await self._sender.init_producer_id()
            token = trio.lowlevel.current_trio_token()
            self._acc.notify = partial(token.run_sync_soon, self._sender.wake)
            nursery.start_soon(self._sender.run, nursery)
            try:
                yield self
                self._state = "closing"
                await self.flush(self.close_timeout)
            finally:
                with self._acc.lock:
                    self._acc.closed = True
                    self._acc.sticky.clear()
                self._sender.fail_everything(ClosedError("producer closed before delivery"))
                self._state = "closed"

    # -- caller side ---------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "running":
            raise ClosedError(f"producer is {self._state}")

    async def ensure_topic(self, topic: str) -> int:
        """Load `topic`'s partition count into the accumulator (waits up to max_block_ms)."""
        n = self._acc.num_partitions.get(topic)
        if n is None:
            if not isinstance(topic, str) or not topic:
                raise TypeError("topic must be a non-empty str")
            n = await self._cluster.wait_for_topic(topic, self.config.max_block_ms / 1000)
            self._acc.num_partitions[topic] = n
        return n

    async def partitions_for(self, topic: str) -> list[int]:
        return list(range(await self.ensure_topic(topic)))

    async def _wait_for_space(self, size: int) -> None:
        """Wait (up to max_block_ms) until a batch fits in buffer_memory.

        Raises RecordTooLargeError at once for a record of `size` bytes that
        could never fit, RequestTimeoutError when the buffer stays full.
        """
        acc = self._acc
        if acc.buffered_bytes + acc.batch_size <= acc.buffer_memory:
            return
        acc.check_record_size(size)
        with trio.move_on_after(self.config.max_block_ms / 1000):
            while True:
                acc.serve_completed()
                if acc.buffered_bytes + acc.batch_size <= acc.buffer_memory:
                    return
                await self._sender.wait_progress()
        raise RequestTimeoutError(
            f"buffer_memory ({acc.buffer_memory} bytes) still full after max_block_ms "
            f"({self.config.max_block_ms} ms)")

    async def produce(self, topic: str, value, key=None, partition: int | None = None,
                      headers=None, timestamp_ms: int | None = None, on_delivery=None) -> None:
        """Queue one record; returns once it is buffered (not delivered).

        Waits only for metadata of a new topic or for buffer space (up to
        max_block_ms). `on_delivery(err, report)` runs later in
        poll()/flush()/produce().
        """
        self._check_open()
        acc = self._acc
        if acc.completed:
            acc.serve_completed()
        if topic not in acc.num_partitions:
            await self.ensure_topic(topic)
        if not acc.sticky.get(topic):
            await self._wait_for_space(record_size(value, key, headers))
        acc.append(topic, value, key, partition, headers, timestamp_ms, on_delivery)

    async def produce_batch(self, topic: str, values, keys=None, partition: int | None = None,
                            on_delivery=None) -> None:
        """Queue many records at once (bulk path: slices go into batches whole)."""
        self._check_open()
        if self._acc.completed:
            self._acc.serve_completed()
        values = list(values)
        keys = None if keys is None else list(keys)
        await self.ensure_topic(topic)
        await self._wait_for_space(max((record_size(v) for v in values), default=0))
        self._acc.append_many(topic, values, keys, partition, on_delivery)

    async def send(self, topic: str, value, key=None, partition: int | None = None,
                   headers=None, timestamp_ms: int | None = None) -> DeliveryReport:
        """Produce one record and wait for its delivery report (raises its error)."""
        result: list = []
        await self.produce(topic, value, key, partition, headers, timestamp_ms,
                           lambda err, report: result.append((err, report)))
        while not result:
            await self.flush()
        err, report = result[0]
        if err is not None:
            raise err
        return report

    def poll(self) -> int:
        """Run pending delivery callbacks; return how many records were served."""
        return self._acc.serve_completed()

    def __len__(self) -> int:
        return self._acc.undelivered

    def statistics(self) -> ProducerStatistics:
        """A snapshot of the producer's queues (any thread; values may be a moment old)."""
        return ProducerStatistics(
            records_undelivered=self._acc.undelivered,
            bytes_buffered=self._acc.buffered_bytes,
            batches_queued=len(self._acc.sealed) + self._sender.batches_queued(),
            requests_in_flight=self._sender.requests_in_flight(),
            records_failed=self._sender.records_failed)

    async def flush(self, timeout: float | None = None) -> int:
        """Send everything buffered and wait for it; return records still undelivered."""
        acc = self._acc
        if self._state not in ("running", "closing"):
            acc.serve_completed()
            return acc.undelivered
        with acc.lock:
            acc.flushing += 1
            acc.wake()
        try:
            with trio.move_on_after(math.inf if timeout is None else timeout):
                while True:
                    acc.serve_completed()
                    if acc.undelivered == 0:
                        break
                    await self._sender.wait_progress()
        finally:
            with acc.lock:
                acc.flushing -= 1
        acc.serve_completed()
        return acc.undelivered
