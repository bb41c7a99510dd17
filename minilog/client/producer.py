"""AsyncProducer: the trio-native producer, and the sender both facades share.

Theory of operation.

* Caller side (`produce`, `produce_batch`, `poll`, `flush`): records go into
  the `Accumulator` (see `_accumulator.py`); delivery callbacks of finished
  batches run on the caller's task/thread inside poll/flush/produce, as in
  confluent-kafka.
* Sender side (`_sender_loop`, a task in the producer's nursery): wakes when
  a batch is sealed or a linger deadline passes, drains sealed batches into
  per-partition FIFO queues, and `_dispatch`es: each request to a broker
  carries at most one batch per partition (Kafka's rule), and up to
  `max_in_flight` requests per broker are pipelined on one connection.
  A batch is encoded once (`build_batch`) when first dispatched; a retry
  resends the same bytes (same producer id / sequence).
* Retries: a batch that failed with a retriable error (or a lost connection,
  or a request timeout) goes back to the *front* of its partition's queue
  after `retry_backoff_ms`, until `retries` or `delivery_timeout_ms` runs
  out; metadata is refreshed first. Ordering: as in Kafka, with
  `max_in_flight > 1` a retried batch may land after a later batch of the
  same partition that was already in flight. With `enable_idempotence` (or
  `max_in_flight=1`) a partition has at most one batch in flight, so order
  is preserved across retries.
* acks=0: the request gets no response; batches complete when written,
  with offset -1.

Exception contract: produce()/flush() raise `MinilogError` subclasses
(ClosedError, RequestTimeoutError when blocked longer than max_block_ms,
UnknownTopicOrPartitionError when the topic never shows up in metadata);
per-record failures go to `on_delivery(err, report)`.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import partial

import trio
import trio.testing

from minilog.errors import (
    BrokerError,
    BrokerUnavailableError,
    ClosedError,
    MinilogError,
    RequestTimeoutError,
    error_for_code,
)
from minilog.protocol import ApiKey, ErrorCode, build_batch

from ._accumulator import Accumulator, DeliveryReport, ProducerBatch
from ._lifecycle import Lifecycle
from ._cluster import Cluster, check_error
from ._config import ProducerConfig, parse_bootstrap

__all__ = ["AsyncProducer", "DeliveryReport", "ProducerStatistics"]

log = logging.getLogger("minilog.producer")
_SEQUENCE_MAX = 2**31 - 1


@dataclass(frozen=True)
class ProducerStatistics:
    records_undelivered: int      # produced, not yet delivered or failed
    bytes_buffered: int           # sealed batches not yet served (counts against buffer_memory)
    batches_queued: int           # sealed, waiting for the sender
    requests_in_flight: int       # produce requests awaiting a response, all brokers
    records_failed: int           # records whose delivery failed, since start


class AsyncProducer(Lifecycle):
    """Trio producer. `async with AsyncProducer("localhost:9092") as p: await p.produce(...)`.

    Options are Kafka's producer settings in snake_case (see
    docs/configuration.md, "Client settings"); a bad one raises ConfigError.
    Task-safe within one trio run; `produce` may also be driven from the sync
    facade's thread (see sync.py), which shares the accumulator.
    """

    def __init__(self, bootstrap_servers="localhost:9092", **options) -> None:
        self.config = cfg = ProducerConfig.from_kwargs(**options)
        self._bootstrap = parse_bootstrap(bootstrap_servers)
        self._acc = Accumulator(batch_size=cfg.batch_size, linger_ms=cfg.linger_ms,
                                buffer_memory=cfg.buffer_memory)
        self._cluster = Cluster(self._bootstrap, client_id=cfg.client_id,
                                request_timeout_ms=cfg.request_timeout_ms,
                                metadata_max_age_ms=cfg.metadata_max_age_ms,
                                retry_backoff_ms=cfg.retry_backoff_ms,
                                allow_auto_topic_creation=True)
        self._ordered = cfg.enable_idempotence or cfg.max_in_flight == 1
        self._queues: dict[tuple[str, int], collections.deque[ProducerBatch]] = {}
        self._inflight: dict[int, int] = collections.defaultdict(int)
        self._muted: set[tuple[str, int]] = set()
        self._jobs: dict[int, collections.deque] = {}   # node -> requests to write, in order
        self._writers: set[int] = set()                 # nodes with a running _writer
        self._awaiting: dict[int, collections.deque] = {}   # node -> requests awaiting answers
        self._responders: set[int] = set()              # nodes with a running _responder
        self._sequences: dict[tuple[str, int], int] = collections.defaultdict(int)
        self.producer_id = -1
        self.producer_epoch = -1
        self._wake: trio.Event | None = None
        self._progress: trio.Event | None = None
        self.done_cond = threading.Condition()   # sync facade waits here
        self._refreshing = False
        self._state = "new"
        self.errors_count = 0

    # -- lifecycle -----------------------------------------------------

    async def __aenter__(self) -> AsyncProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, load metadata, get a producer id if idempotent, start the sender.

        Raises:
            BrokerUnavailableError: no bootstrap server reachable within request_timeout_ms.
            UnsupportedVersionError: the broker lacks an API this producer needs.
        """
        await self._open("AsyncProducer", self._connect, starting_state="starting")
        self._wake = trio.Event()
        self._progress = trio.Event()
        # Time on the caller's thread must agree with trio's clock: with the
        # system clock trio's time is perf_counter() plus a fixed offset.
        if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
            self._acc.clock = trio.current_time
        else:
            offset = trio.current_time() - time.perf_counter()
            self._acc.clock = lambda: time.perf_counter() + offset
        token = trio.lowlevel.current_trio_token()
        self._acc.notify = partial(token.run_sync_soon, self._on_wake)
        self._state = "running"
        self._tasks.start_soon(self._sender_loop)

    async def _connect(self) -> None:
        await self._cluster.start(self._tasks)
        if self.config.enable_idempotence:
            await self._init_producer_id()

    async def close(self, timeout: float | None = None) -> None:
        """Deliver what is buffered (up to `timeout` s), then stop. Safe to call twice."""
        if self._state in ("closed", "closing"):
            return
        if self._state == "new":
            self._state = "closed"
            return
        self._state = "closing"
        try:
            await self.flush(timeout)
        finally:
            with self._acc.lock:
                self._acc.closed = True
                self._acc.sticky.clear()
            self._fail_everything(ClosedError("producer closed before delivery"))
            await self._shutdown()
            self._state = "closed"
            self.poll()

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

    async def _wait_for_space(self) -> None:
        acc = self._acc
        if acc.buffered_bytes + acc.batch_size <= acc.buffer_memory:
            return
        with trio.move_on_after(self.config.max_block_ms / 1000):
            while True:
                acc.serve_completed()
                if acc.buffered_bytes + acc.batch_size <= acc.buffer_memory:
                    return
                await self._progress.wait()
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
            await self._wait_for_space()
        acc.append(topic, value, key, partition, headers, timestamp_ms, on_delivery)

    async def produce_batch(self, topic: str, values, keys=None, partition: int | None = None,
                            on_delivery=None) -> None:
        """Queue many records at once (bulk path: slices go into batches whole)."""
        self._check_open()
        if self._acc.completed:
            self._acc.serve_completed()
        await self.ensure_topic(topic)
        await self._wait_for_space()
        self._acc.append_many(topic, list(values), None if keys is None else list(keys),
                              partition, on_delivery)

    async def send(self, topic: str, value, key=None, partition: int | None = None,
                   headers=None, timestamp_ms: int | None = None) -> DeliveryReport:
        """Produce one record and wait for its delivery report (raises its error)."""
        done = trio.Event()
        result: list = []

        def on_delivery(err, report):
            result.append((err, report))
            done.set()

        await self.produce(topic, value, key, partition, headers, timestamp_ms, on_delivery)
        await self.flush()
        while not done.is_set():  # pragma: no cover - flush() serves callbacks
            await self._progress.wait()
            self.poll()
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
            batches_queued=len(self._acc.sealed) + sum(len(q) for q in list(self._queues.values())),
            requests_in_flight=sum(list(self._inflight.values())),
            records_failed=self.errors_count)

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
                    await self._progress.wait()
        finally:
            with acc.lock:
                acc.flushing -= 1
        acc.serve_completed()
        return acc.undelivered

    # -- sender side ---------------------------------------------------

    def _on_wake(self) -> None:
        self._wake.set()

    async def _sender_loop(self) -> None:
        acc = self._acc
        delivery_s = self.config.delivery_timeout_ms / 1000
        while True:
            self._wake = trio.Event()
            batches, deadline = acc.drain(acc.clock())
            merge_max = self.config.max_request_size
            for b in batches:
                b.count = len(b.values)
                b.deadline = b.created + delivery_s
                q = self._queues.get((b.topic, b.partition))
                if q is None:
                    q = self._queues[(b.topic, b.partition)] = collections.deque()
                elif (q and q[-1].data is None and q[-1].attempts == 0
                      and q[-1].size + b.size <= merge_max):
                    _merge(q[-1], b)   # the sender is behind: fewer, larger batches
                    continue
                q.append(b)
            if self._cluster.stale():
                self._refresh_metadata_soon()      # notices new partitions, moved leaders
            if self._epoch_bump_needed and self._state == "running":
                await self._bump_epoch()
            retry_at = self._dispatch()
            await self._start_writers()
            if retry_at is not None and (deadline is None or retry_at < deadline):
                deadline = retry_at
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wake.wait()

    def _dispatch(self) -> float | None:
        """Start requests for every queued batch that may go now; return the next retry time."""
        now = trio.current_time()
        next_at = None
        max_in_flight = self.config.max_in_flight
        cluster = self._cluster
        while True:
            per_node: dict[int, list[ProducerBatch]] = {}
            for tp, q in self._queues.items():
                if not q or tp in self._muted:
                    continue
                b = q[0]
                if b.retry_at > now:
                    next_at = b.retry_at if next_at is None else min(next_at, b.retry_at)
                    continue
                node = cluster.leader(*tp)
                if node is None:
                    if now > b.deadline:
                        q.popleft()
                        self._finish(b, -1, -1, RequestTimeoutError(
                            f"no leader for {tp[0]}-{tp[1]} within delivery_timeout_ms"))
                    else:
                        self._refresh_metadata_soon()
                        retry = now + self.config.retry_backoff_ms / 1000
                        next_at = retry if next_at is None else min(next_at, retry)
                    continue
                if self._inflight[node] >= max_in_flight:
                    continue
                group = per_node.get(node)
                if group is None:
                    group = per_node[node] = []
                group.append(q.popleft())
            if not per_node:
                break
            for node, batches in per_node.items():
                self._inflight[node] += 1
                if self._ordered:
                    self._muted.update((b.topic, b.partition) for b in batches)
                jobs = self._jobs.get(node)
                if jobs is None:
                    jobs = self._jobs[node] = collections.deque()
                jobs.append(batches)
        for tp in [tp for tp, q in self._queues.items() if not q]:
            del self._queues[tp]
        if self._progress_pending:
            self._signal_progress()
        return next_at

    _progress_pending = False

    def _encode(self, b: ProducerBatch) -> None:
        tp = (b.topic, b.partition)
        pid = self.producer_id
        if pid >= 0:
            b.base_sequence = self._sequences[tp]
            self._sequences[tp] = (b.base_sequence + b.count) & _SEQUENCE_MAX
        b.data = build_batch(
            b.values, b.keys, timestamps=b.timestamps if b.timestamps is not None else b.timestamp_ms,
            headers=b.headers, codec=self.config.codec, producer_id=pid,
            producer_epoch=self.producer_epoch, base_sequence=b.base_sequence)

    async def _start_writers(self) -> None:
        """Write queued requests: inline when the connection is up (usually no
        yield at all, see BrokerConnection.send_request), else in a task that
        may have to connect first."""
        for node, jobs in list(self._jobs.items()):
            if not jobs or node in self._writers:
                continue
            self._writers.add(node)
            conn = self._cluster._conns.get(node)
            if conn is not None and conn.usable:
                await self._writer(node)
            else:
                self._tasks.start_soon(self._writer, node)

    async def _writer(self, node: int) -> None:
        """Write `node`'s produce requests one after another, in dispatch order.

        Only the writes are sequential; responses are awaited by one task
        per request, so up to max_in_flight requests are pipelined. (Tasks
        started together run in no defined order in trio, so each request
        cannot simply write itself.)
        """
        jobs = self._jobs[node]
        try:
            while jobs:
                await self._send(node, jobs.popleft())
        finally:
            self._writers.discard(node)

    async def _send(self, node: int, batches: list[ProducerBatch]) -> None:
        cfg = self.config
        good = []
        for b in batches:
            if b.data is None:
                try:
                    self._encode(b)
                except (TypeError, ValueError, MinilogError) as exc:
                    self._finish(b, -1, -1, MinilogError(f"cannot encode batch: {exc}"))
                    continue
            good.append(b)
        if not good:
            self._request_done(node, batches)
            return
        topics: dict[str, list] = {}
        for i, b in enumerate(good):
            b.attempts += 1
            topics.setdefault(b.topic, []).append({"partition": b.partition, "records": i})
        payload = {"acks": cfg.acks, "timeout_ms": cfg.request_timeout_ms,
                   "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]}
        try:
            conn = await self._cluster.connection(node)
            slot = await conn.send_request(ApiKey.PRODUCE, payload, [b.data for b in good],
                                           expect_response=cfg.acks != 0)
        except BaseException as exc:
            self._request_failed(good, exc)
            self._request_done(node, batches)
            if isinstance(exc, MinilogError):
                return
            raise
        if slot is None:   # acks=0: written is all we will know
            for b in good:
                self._finish(b, -1, -1, None)
            self._request_done(node, batches)
            return
        # Responses are handled in request order by one task per broker, so
        # delivery callbacks of one partition run in produce order (Kafka's
        # guarantee); the broker answers in that order anyway.
        awaiting = self._awaiting.get(node)
        if awaiting is None:
            awaiting = self._awaiting[node] = collections.deque()
        awaiting.append((conn, slot, good, batches))
        if node not in self._responders:
            self._responders.add(node)
            self._tasks.start_soon(self._responder, node)

    async def _responder(self, node: int) -> None:
        awaiting = self._awaiting[node]
        try:
            while awaiting:
                await self._await_response(node, *awaiting.popleft())
        except BaseException:
            while awaiting:          # cancelled by close(): the rest fail too
                _, _, good, batches = awaiting.popleft()
                for b in good:
                    self._finish(b, -1, -1, ClosedError("producer closed before delivery"))
                self._request_done(node, batches)
            raise
        finally:
            self._responders.discard(node)

    async def _await_response(self, node, conn, slot, good, batches) -> None:
        try:
            resp = await conn.wait_response(slot)
        except BaseException as exc:
            self._request_failed(good, exc)
            if not isinstance(exc, MinilogError):
                raise
        else:
            self._handle_response(good, resp.payload)
        finally:
            self._request_done(node, batches)

    def _request_failed(self, batches: list[ProducerBatch], exc: BaseException) -> None:
        if isinstance(exc, (BrokerUnavailableError, RequestTimeoutError)):
            self._refresh_metadata_soon()
            for b in batches:
                self._retry_or_fail(b, exc)
        elif isinstance(exc, MinilogError):      # unsupported version, closed
            for b in batches:
                self._finish(b, -1, -1, exc)
        else:   # cancelled by close(): these were never acknowledged
            for b in batches:
                self._finish(b, -1, -1, ClosedError("producer closed before delivery"))

    def _request_done(self, node: int, batches: list[ProducerBatch]) -> None:
        self._inflight[node] -= 1
        if self._ordered:
            self._muted.difference_update((b.topic, b.partition) for b in batches)
        self._signal_progress()
        self._wake.set()

    def _handle_response(self, batches: list[ProducerBatch], payload: dict) -> None:
        by_tp = {(b.topic, b.partition): b for b in batches}
        code = payload.get("error_code", 0)
        if code:
            err = error_for_code(code, payload.get("error_message"))
            for b in batches:
                self._retry_or_fail(b, err)
            return
        for t in payload.get("topics", ()):
            for p in t.get("partitions", ()):
                b = by_tp.pop((t["topic"], p["partition"]), None)
                if b is None:
                    continue
                code = p["error_code"]
                if code == 0 or code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
                    self._finish(b, p["base_offset"], p.get("log_append_time", -1), None)
                else:
                    err = error_for_code(code, p.get("error_message"))
                    if code in (ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                                ErrorCode.LEADER_NOT_AVAILABLE):
                        self._refresh_metadata_soon()
                    self._retry_or_fail(b, err)
        for b in by_tp.values():
            self._retry_or_fail(b, BrokerUnavailableError(
                f"broker answered without partition {b.topic}-{b.partition}"))

    def _retry_or_fail(self, b: ProducerBatch, err: MinilogError) -> None:
        if (getattr(err, "code", None) == ErrorCode.MESSAGE_TOO_LARGE and b.count > 1
                and b.values is not None):
            self._split_and_requeue(b)   # Kafka's splitAndReenqueue: maybe a merge made it big
            return
        now = trio.current_time()
        retriable = getattr(err, "retriable", False)
        backoff = self.config.retry_backoff_ms / 1000
        if (retriable and b.attempts <= self.config.retries and now + backoff < b.deadline
                and self._state != "closed"):
            b.retry_at = now + backoff
            log.debug("retrying %r after %s", b, err)
            q = self._queues.get((b.topic, b.partition))
            if q is None:
                q = self._queues[(b.topic, b.partition)] = collections.deque()
            q.appendleft(b)
        else:
            self._finish(b, -1, -1, err)

    def _split_and_requeue(self, b: ProducerBatch) -> None:
        """Re-queue a too-large batch as two halves, in order, at the front of its queue."""
        tp = (b.topic, b.partition)
        if b.base_sequence >= 0:          # the broker rejected it: its sequence is free again
            self._sequences[tp] = b.base_sequence
        half = b.count // 2
        parts = []
        for lo, hi in ((0, half), (half, b.count)):
            nb = ProducerBatch(b.topic, b.partition, b.created, b.timestamp_ms)
            nb.values = b.values[lo:hi]
            for name in ("keys", "headers", "timestamps", "callbacks"):
                col = getattr(b, name)
                setattr(nb, name, None if col is None else col[lo:hi])
            nb.count = hi - lo
            nb.size = b.size * nb.count // b.count + (b.size * (hi - lo) % b.count if lo else 0)
            nb.deadline = b.deadline
            nb.attempts = b.attempts     # > 0: never merged again
            nb.sealed = True
            parts.append(nb)
        parts[1].size = b.size - parts[0].size   # sizes still add up for buffer accounting
        q = self._queues.setdefault(tp, collections.deque())
        q.appendleft(parts[1])
        q.appendleft(parts[0])

    def _finish(self, b: ProducerBatch, base_offset: int, timestamp: int, err) -> None:
        if err is not None:
            self.errors_count += b.count
            if b.base_sequence >= 0:
                # Its sequence numbers are spent but the broker may not have
                # them: later batches would be out of order forever. Bump the
                # epoch and restart sequences (Kafka's KIP-360 recovery).
                self._epoch_bump_needed = True
            if b.callbacks is None:
                log.warning("%d record(s) for %s-%d failed: %s", b.count, b.topic,
                            b.partition, err)
        if b.callbacks is None:   # the reports need no values: free them now
            b.values = b.keys = b.headers = b.timestamps = None
        self._acc.completed.append((b, base_offset, timestamp, err))
        self._progress_pending = True

    def _signal_progress(self) -> None:
        self._progress_pending = False
        self._progress.set()
        self._progress = trio.Event()
        with self.done_cond:
            self.done_cond.notify_all()

    def _fail_everything(self, err: MinilogError) -> None:
        for q in self._queues.values():
            for b in q:
                self._finish(b, -1, -1, err)
        self._queues.clear()
        batches, _ = self._acc.drain(math.inf)
        for b in batches:
            b.count = len(b.values)
            self._finish(b, -1, -1, err)
        self._signal_progress()

    def _refresh_metadata_soon(self) -> None:
        if not self._refreshing and self._nursery is not None:
            self._refreshing = True
            self._tasks.start_soon(self._refresh_metadata)

    async def _refresh_metadata(self) -> None:
        try:
            await trio.sleep(self.config.retry_backoff_ms / 1000)
            await self._cluster.refresh(list(self._acc.num_partitions))
            for topic in list(self._acc.num_partitions):
                n = self._cluster.partition_count(topic)
                if n:
                    self._acc.num_partitions[topic] = n
        except (MinilogError, BrokerError) as exc:
            log.debug("metadata refresh failed: %s", exc)
        finally:
            self._refreshing = False
            self._wake.set()

    _epoch_bump_needed = False

    async def _bump_epoch(self) -> None:
        """After a failed idempotent batch: wait for in-flight requests, new epoch, sequences from 0."""
        while any(self._inflight.values()):
            await self._progress.wait()
        try:
            await self._init_producer_id(self.producer_id, self.producer_epoch)
        except MinilogError as exc:
            log.warning("could not bump the producer epoch: %s", exc)
            await trio.sleep(self.config.retry_backoff_ms / 1000)
            return
        self._epoch_bump_needed = False
        self._sequences.clear()
        for q in self._queues.values():
            for b in q:       # re-encode with the new epoch and sequences
                b.data, b.base_sequence = None, -1

    async def _init_producer_id(self, producer_id: int = -1, producer_epoch: int = -1) -> None:
        resp = await self._cluster.request_any(ApiKey.INIT_PRODUCER_ID, {
            "transactional_id": None, "transaction_timeout_ms": 60000,
            "producer_id": producer_id, "producer_epoch": producer_epoch})
        check_error(resp.payload, "InitProducerId")
        self.producer_id = resp.payload["producer_id"]
        self.producer_epoch = resp.payload["producer_epoch"]


def _merge(a: ProducerBatch, b: ProducerBatch) -> None:
    """Append batch `b`'s records to the queued, not yet encoded batch `a` (same partition).

    Used only when batches queue up behind max_in_flight: one larger request
    costs the sender (and the broker) far less than several small ones.
    Sizes add up, so buffer_memory accounting is unchanged.
    """
    n_a, n_b = a.count, b.count
    for name in ("keys", "headers", "callbacks"):
        col_a, col_b = getattr(a, name), getattr(b, name)
        if col_a is None and col_b is None:
            continue
        setattr(a, name, (col_a if col_a is not None else [None] * n_a)
                + (col_b if col_b is not None else [None] * n_b))
    # Records without an explicit timestamp take their batch's creation time
    # (see docs/python-api.md); merged batches keep the first one's, so the
    # encoder's uniform fast path still applies.
    if a.timestamps is not None or b.timestamps is not None:
        a.timestamps = ((a.timestamps if a.timestamps is not None else [a.timestamp_ms] * n_a)
                        + (b.timestamps if b.timestamps is not None else [b.timestamp_ms] * n_b))
    a.values += b.values
    a.count = n_a + n_b
    a.size += b.size
    a.plain = a.plain and b.plain
    a.deadline = min(a.deadline, b.deadline)
