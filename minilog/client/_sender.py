"""The producer's Sender: sealed batches in, produce requests out, delivery reports back.

Theory of operation (Kafka's `Sender`, aiokafka's `Sender`). The caller side
(`AsyncProducer`, or the sync facade on its own thread) appends records to
the `Accumulator`; the Sender runs as one task in the producer's nursery on
the trio thread and owns everything after a batch is sealed:

* `run()` wakes when a batch is sealed, a linger or retry time passes, a
  response arrives, or a batch's delivery deadline passes. It drains sealed
  batches into per-partition FIFO queues and `_dispatch`es.
* A batch is never larger than `batch_size` (except one record larger than
  it): batches are not merged. When the sender falls behind, a partition's
  queued batches travel together instead: one request carries up to
  `max_request_size` bytes, and a partition's entry may hold several whole
  batches back to back (the broker appends them one by one, as separate
  batches). With idempotence an entry holds at most 5 batches, the number
  of batch sequences the broker remembers per producer (as Kafka's
  `max.in.flight.requests.per.connection` <= 5), so a retried entry is
  deduplicated whole.
* Up to `max_in_flight` requests per broker are pipelined on one
  connection. A batch is encoded once (`build_batch`) when first sent; a
  retry resends the same bytes (same producer id and sequence).
* Errors: `action_for` (see `_error_actions.py`) says retry, refresh
  metadata then retry, or fail. A retried batch goes back to the *front* of
  its queue after `retry_backoff_ms`. Ordering as in Kafka: with
  `max_in_flight > 1` a retried batch may land after a later one; with
  `enable_idempotence` (or `max_in_flight=1`) a partition has one request in
  flight, so order holds across retries.
* Delivery deadline: every batch's callback is due within
  `delivery_timeout_ms` of its creation, whatever the broker does. Queued
  batches past their deadline fail at once; a request never waits (to
  connect, or for its answer) past its earliest batch's deadline; a retry
  that would start after the deadline is not made.
* Idempotence: a batch that fails for good leaves a gap in its partition's
  sequences, so the producer takes a new epoch (KIP-360) in a task of its
  own; idempotent batches wait for it, and still expire on time.

Time: deadlines are in the injected `clock`'s seconds (the accumulator's
clock, so linger deadlines set on the caller's thread compare with it);
waits convert them to trio's clock as durations, so any monotonic clock
works and tests can run on trio's MockClock.

Task-safety: everything here runs on the trio thread. The only things
shared with the caller's thread are the accumulator (its own lock) and
`done_cond`, a `threading.Condition` notified on progress.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable

import trio

from minilog.errors import (
    BrokerError,
    BrokerUnavailableError,
    ClosedError,
    MinilogError,
    RequestTimeoutError,
    error_for_code,
)
from minilog.protocol import ApiKey, ErrorCode, build_batch

from ._accumulator import Accumulator, ProducerBatch
from ._cluster import Cluster, check_error
from ._config import ProducerConfig
from ._error_actions import Action, action_for

__all__ = ["Sender"]

log = logging.getLogger("minilog.producer")
_SEQUENCE_MAX = 2**31 - 1
IDEMPOTENT_BATCHES_PER_ENTRY_MAX = 5   # batch sequences the broker remembers per producer

Entry = list[ProducerBatch]            # one partition's batches in one request, in order


class Sender:
    """Delivers sealed batches; see the module docstring. Runs on the trio thread only."""

    def __init__(self, config: ProducerConfig, accumulator: Accumulator, cluster: Cluster,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self._acc = accumulator
        self._cluster = cluster
        self._clock = clock
        self._ordered = config.enable_idempotence or config.max_in_flight == 1
        self._queues: dict[tuple[str, int], collections.deque[ProducerBatch]] = {}
        self._inflight: dict[int, int] = collections.defaultdict(int)
        self._muted: set[tuple[str, int]] = set()
        self._jobs: dict[int, collections.deque[list[Entry]]] = {}   # node -> requests to write
        self._writers: set[int] = set()
        self._awaiting: dict[int, collections.deque] = {}   # node -> requests awaiting answers
        self._responders: set[int] = set()
        self._sequences: dict[tuple[str, int], int] = collections.defaultdict(int)
        self.producer_id = -1
        self.producer_epoch = -1
        self._epoch_bump_needed = False
        self._bumping = False
        self._bump_not_before = -math.inf
        self._bump_failures = 0
        self._refreshing = False
        self._progress_pending = False
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._progress = trio.Event()
        self.done_cond = threading.Condition()   # the sync facade waits here
        self.records_failed = 0
        self.closed = False

    # -- caller-facing ---------------------------------------------------

    def wake(self) -> None:
        """Make `run()` look again (trio thread; the caller's thread goes through the token)."""
        self._wake.set()

    async def wait_progress(self) -> None:
        """Wait until some batch completes or a request ends."""
        await self._progress.wait()

    def batches_queued(self) -> int:
        return sum(len(q) for q in list(self._queues.values()))

    def requests_in_flight(self) -> int:
        return sum(list(self._inflight.values()))

    def fail_everything(self, err: MinilogError) -> None:
        """Fail every queued and unsent batch (at close). In-flight requests end when cancelled."""
        self.closed = True
        for q in self._queues.values():
            for b in q:
                self._finish(b, -1, -1, err)
        self._queues.clear()
        batches, _ = self._acc.drain(math.inf)
        for b in batches:
            b.count = len(b.values)
            self._finish(b, -1, -1, err)
        self._signal_progress()

    async def init_producer_id(self, producer_id: int = -1, producer_epoch: int = -1) -> None:
        """Ask for a producer id (or, with the current one, a new epoch). Raises MinilogError."""
        resp = await self._cluster.request_any(ApiKey.INIT_PRODUCER_ID, {
            "transactional_id": None, "transaction_timeout_ms": 60000,
            "producer_id": producer_id, "producer_epoch": producer_epoch})
        check_error(resp.payload, "InitProducerId")
        self.producer_id = resp.payload["producer_id"]
        self.producer_epoch = resp.payload["producer_epoch"]

    # -- the loop --------------------------------------------------------

    async def run(self, nursery: trio.Nursery) -> None:
        """Deliver until cancelled. Helper tasks (writers, responders) run in `nursery`."""
        self._nursery = nursery
        acc = self._acc
        delivery_s = self.config.delivery_timeout_ms / 1000
        while True:
            self._wake = trio.Event()
            now = self._clock()
            batches, linger_at = acc.drain(now)
            for b in batches:
                b.count = len(b.values)
                b.deadline = b.created + delivery_s
                self._queue((b.topic, b.partition)).append(b)
            if self._cluster.stale():
                self._refresh_metadata_soon()      # notices new partitions, moved leaders
            if self._epoch_bump_needed and not self._bumping and now >= self._bump_not_before:
                self._bumping = True
                nursery.start_soon(self._bump_epoch)
            wake_at = self._dispatch(now)
            await self._start_writers()
            for at in (linger_at, self._bump_not_before if self._epoch_bump_needed else None):
                if at is not None and (wake_at is None or at < wake_at):
                    wake_at = at
            with trio.move_on_after(math.inf if wake_at is None else max(0.0, wake_at - self._clock())):
                await self._wake.wait()

    def _queue(self, tp: tuple[str, int]) -> collections.deque[ProducerBatch]:
        q = self._queues.get(tp)
        if q is None:
            q = self._queues[tp] = collections.deque()
        return q

    def _dispatch(self, now: float) -> float | None:
        """Expire late batches, start requests for every batch that may go; return the next wake time."""
        next_at: float | None = None
        cfg = self.config
        cluster = self._cluster
        hold = self._epoch_bump_needed and self.producer_id >= 0
        per_entry_max = IDEMPOTENT_BATCHES_PER_ENTRY_MAX if self.producer_id >= 0 else 1 << 30
        while True:
            per_node: dict[int, list[Entry]] = {}
            used: dict[int, int] = {}
            for tp, q in self._queues.items():
                while q and q[0].deadline <= now:
                    self._expire(q.popleft())
                if not q:
                    continue
                b = q[0]
                next_at = b.deadline if next_at is None else min(next_at, b.deadline)
                if tp in self._muted or hold:
                    continue
                if b.retry_at > now:
                    next_at = min(next_at, b.retry_at)
                    continue
                node = cluster.leader(*tp)
                if node is None:
                    self._refresh_metadata_soon()
                    continue
                if self._inflight[node] >= cfg.max_in_flight:
                    continue
                size = used.get(node, 0)
                if size and size + b.size > cfg.max_request_size:
                    continue                   # this request is full: the next one takes it
                entry = [q.popleft()]
                size += b.size
                while (q and not b.alone and not q[0].alone and len(entry) < per_entry_max
                       and q[0].retry_at <= now and size + q[0].size <= cfg.max_request_size):
                    size += q[0].size
                    entry.append(q.popleft())
                used[node] = size
                per_node.setdefault(node, []).append(entry)
            if not per_node:
                break
            for node, entries in per_node.items():
                self._inflight[node] += 1
                if self._ordered:
                    self._muted.update((e[0].topic, e[0].partition) for e in entries)
                jobs = self._jobs.get(node)
                if jobs is None:
                    jobs = self._jobs[node] = collections.deque()
                jobs.append(entries)
        for tp in [tp for tp, q in self._queues.items() if not q]:
            del self._queues[tp]
        if self._progress_pending:
            self._signal_progress()
        return next_at

    # -- writing requests --------------------------------------------------

    async def _start_writers(self) -> None:
        """Write queued requests: inline when the connection is up (usually no
        yield at all, see BrokerConnection.send_request), else in a task that
        may have to connect first."""
        assert self._nursery is not None
        for node, jobs in list(self._jobs.items()):
            if not jobs or node in self._writers:
                continue
            self._writers.add(node)
            conn = self._cluster._conns.get(node)
            if conn is not None and conn.usable:
                await self._writer(node)
            else:
                self._nursery.start_soon(self._writer, node)

    async def _writer(self, node: int) -> None:
        """Write `node`'s produce requests one after another, in dispatch order.

        Only the writes are sequential; responses are awaited by one
        responder task per broker, so up to max_in_flight requests are
        pipelined. (Tasks started together run in no defined order in trio,
        so each request cannot simply write itself.)
        """
        jobs = self._jobs[node]
        try:
            while jobs:
                await self._send(node, jobs.popleft())
        finally:
            self._writers.discard(node)

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

    def _encoded(self, entries: list[Entry]) -> list[Entry]:
        """Encode batches not yet encoded; a batch past its deadline or that cannot be encoded fails alone.

        (A writer that had to connect first may reach a batch after its
        deadline: sending it with no time left would only time the request
        out and break the connection for the others.)
        """
        good = []
        now = self._clock()
        for entry in entries:
            ok = []
            for b in entry:
                if b.deadline <= now:
                    self._expire(b)
                    continue
                if b.data is None:
                    try:
                        self._encode(b)
                    except (TypeError, ValueError, MinilogError) as exc:
                        self._finish(b, -1, -1, MinilogError(f"cannot encode batch: {exc}"))
                        continue
                ok.append(b)
            if ok:
                good.append(ok)
        return good

    async def _send(self, node: int, entries: list[Entry]) -> None:
        cfg = self.config
        good = self._encoded(entries)
        if not good:
            self._request_done(node, entries)
            return
        topics: dict[str, list] = {}
        attachments: list[bytes] = []
        for entry in good:
            for b in entry:
                b.attempts += 1
            topics.setdefault(entry[0].topic, []).append(
                {"partition": entry[0].partition, "records": len(attachments)})
            datas = [b.data for b in entry if b.data is not None]
            attachments.append(datas[0] if len(datas) == 1 else b"".join(datas))
        payload = {"acks": cfg.acks, "timeout_ms": cfg.request_timeout_ms,
                   "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]}
        # Never wait past the earliest batch's delivery deadline (to connect or for the answer).
        remaining = min(b.deadline for entry in good for b in entry) - self._clock()
        timeout_s = max(0.001, min(cfg.request_timeout_ms / 1000, remaining))
        try:
            with trio.move_on_after(max(0.0, remaining)) as connecting:
                conn = await self._cluster.connection(node)
            if connecting.cancelled_caught:
                raise RequestTimeoutError(
                    f"could not connect to broker {node} within delivery_timeout_ms")
            slot = await conn.send_request(ApiKey.PRODUCE, payload, attachments,
                                           expect_response=cfg.acks != 0, timeout_s=timeout_s)
        except BaseException as exc:
            self._request_failed(good, exc)
            self._request_done(node, entries)
            if isinstance(exc, MinilogError):
                return
            raise
        if slot is None:   # acks=0: written is all we will know
            for entry in good:
                for b in entry:
                    self._finish(b, -1, -1, None)
            self._request_done(node, entries)
            return
        # Responses are handled in request order by one task per broker, so
        # delivery callbacks of one partition run in produce order (Kafka's
        # guarantee); the broker answers in that order anyway.
        awaiting = self._awaiting.get(node)
        if awaiting is None:
            awaiting = self._awaiting[node] = collections.deque()
        awaiting.append((conn, slot, good, entries))
        if node not in self._responders:
            self._responders.add(node)
            assert self._nursery is not None
            self._nursery.start_soon(self._responder, node)

    async def _responder(self, node: int) -> None:
        awaiting = self._awaiting[node]
        try:
            while awaiting:
                await self._await_response(node, *awaiting.popleft())
        except BaseException:
            while awaiting:          # cancelled at close: the rest fail too
                _, _, good, entries = awaiting.popleft()
                for entry in good:
                    for b in entry:
                        self._finish(b, -1, -1, ClosedError("producer closed before delivery"))
                self._request_done(node, entries)
            raise
        finally:
            self._responders.discard(node)

    async def _await_response(self, node, conn, slot, good: list[Entry], entries) -> None:
        try:
            resp = await conn.wait_response(slot)
        except BaseException as exc:
            self._request_failed(good, exc)
            if not isinstance(exc, MinilogError):
                raise
        else:
            self._handle_response(good, resp.payload)
        finally:
            self._request_done(node, entries)

    # -- outcomes ----------------------------------------------------------

    def _request_failed(self, entries: list[Entry], exc: BaseException) -> None:
        if isinstance(exc, MinilogError):
            for entry in entries:
                self._entry_failed(entry, exc)
        else:   # cancelled at close: these were never acknowledged
            for entry in entries:
                for b in entry:
                    self._finish(b, -1, -1, ClosedError("producer closed before delivery"))

    def _request_done(self, node: int, entries: list[Entry]) -> None:
        self._inflight[node] -= 1
        if self._ordered:
            self._muted.difference_update((e[0].topic, e[0].partition) for e in entries)
        self._signal_progress()
        self._wake.set()

    def _handle_response(self, entries: list[Entry], payload: dict) -> None:
        by_tp: dict[tuple[str, int], Entry] = {(e[0].topic, e[0].partition): e for e in entries}
        code = payload.get("error_code", 0)
        if code:
            err = error_for_code(code, payload.get("error_message"))
            for entry in entries:
                self._entry_failed(entry, err)
            return
        for t in payload.get("topics", ()):
            for p in t.get("partitions", ()):
                found = by_tp.pop((t["topic"], p["partition"]), None)
                if found is None:
                    continue
                code = p["error_code"]
                if code == 0 or code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
                    offset = p["base_offset"]
                    for b in found:       # the broker appended them back to back
                        self._finish(b, offset, p.get("log_append_time", -1), None)
                        offset += b.count
                else:
                    self._entry_failed(found, error_for_code(code, p.get("error_message")))
        for rest in by_tp.values():
            self._entry_failed(rest, BrokerUnavailableError(
                f"broker answered without partition {rest[0].topic}-{rest[0].partition}"))

    def _entry_failed(self, entry: Entry, err: MinilogError) -> None:
        """Retry, split or fail one partition's batches of a failed request (in order)."""
        if getattr(err, "code", None) == ErrorCode.MESSAGE_TOO_LARGE:
            if len(entry) > 1:
                self._requeue(entry, alone=True)   # find out which batch is too large
                return
            if entry[0].count > 1:
                self._requeue(_split(entry[0]), alone=True)   # Kafka's splitAndReenqueue
                return
        action = action_for(err)
        if action is Action.REFRESH_METADATA:
            self._refresh_metadata_soon()
        now = self._clock()
        backoff = self.config.retry_backoff_ms / 1000
        retry = [b for b in entry
                 if action is not Action.FATAL and b.attempts <= self.config.retries
                 and now + backoff < b.deadline and not self.closed]
        for b in entry:
            if b not in retry:
                self._finish(b, -1, -1, err)
        if retry:
            log.debug("retrying %d batch(es) of %s-%d after %s", len(retry), entry[0].topic,
                      entry[0].partition, err)
            for b in retry:
                b.retry_at = now + backoff
                b.last_error = err
                # The broker answers one base offset per partition entry. A failed entry
                # may have been stored in part (its first batches appended, a later one
                # refused, or the leader lost mid-way), so a retry of it could find some
                # batches already there (an idempotent duplicate keeps its old offset)
                # and store the rest elsewhere: offsets counted from one base would name
                # other records. Retried batches therefore travel alone.
                b.alone = b.alone or len(entry) > 1
            self._queue((entry[0].topic, entry[0].partition)).extendleft(reversed(retry))

    def _expire(self, b: ProducerBatch) -> None:
        """Fail a batch at its delivery deadline; its last attempt's error says why, if it had one."""
        self._finish(b, -1, -1, b.last_error or RequestTimeoutError(
            f"{b.count} record(s) for {b.topic}-{b.partition} not delivered within "
            f"delivery_timeout_ms ({self.config.delivery_timeout_ms} ms)"))

    def _requeue(self, batches: list[ProducerBatch], alone: bool) -> None:
        """Put batches the broker refused back at the front of their queue, to be encoded again."""
        first = batches[0]
        tp = (first.topic, first.partition)
        seqs = [b.base_sequence for b in batches if b.base_sequence >= 0]
        if seqs:                 # refused, so their sequences are free again
            self._sequences[tp] = seqs[0]
        for b in batches:
            b.data, b.base_sequence, b.alone = None, -1, alone
        self._queue(tp).extendleft(reversed(batches))

    def _finish(self, b: ProducerBatch, base_offset: int, timestamp: int, err) -> None:
        if err is not None:
            self.records_failed += b.count
            if b.base_sequence >= 0:
                # Its sequence numbers are spent but the broker may not have
                # them: later batches would be out of order forever. Take a
                # new epoch and restart sequences (Kafka's KIP-360 recovery).
                self._epoch_bump_needed = True
            if b.callbacks is None:
                log.warning("%d record(s) for %s-%d failed: %s", b.count, b.topic,
                            b.partition, err)
        if b.callbacks is None:   # the reports need no values: free them now
            b.values = []
            b.keys = b.headers = b.timestamps = None
        self._acc.completed.append((b, base_offset, timestamp, err))
        self._progress_pending = True

    def _signal_progress(self) -> None:
        self._progress_pending = False
        self._progress.set()
        self._progress = trio.Event()
        with self.done_cond:
            self.done_cond.notify_all()

    # -- metadata and producer epoch -----------------------------------------

    def _refresh_metadata_soon(self) -> None:
        if not self._refreshing and self._nursery is not None and not self.closed:
            self._refreshing = True
            self._nursery.start_soon(self._refresh_metadata)

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

    async def _bump_epoch(self) -> None:
        """After a failed idempotent batch: wait for in-flight requests, new epoch, sequences from 0.

        Runs beside `run()`, which holds idempotent batches meanwhile but
        still fails them at their delivery deadline. A failure is logged
        once as a warning (then at debug) and tried again after
        retry_backoff_ms.
        """
        try:
            while any(self._inflight.values()):
                await self._progress.wait()
            try:
                await self.init_producer_id(self.producer_id, self.producer_epoch)
            except MinilogError as exc:
                self._bump_failures += 1
                log.log(logging.WARNING if self._bump_failures == 1 else logging.DEBUG,
                        "could not bump the producer epoch (will retry): %s", exc)
                self._bump_not_before = self._clock() + self.config.retry_backoff_ms / 1000
                return
            self._bump_failures = 0
            self._epoch_bump_needed = False
            self._sequences.clear()
            for q in self._queues.values():
                for b in q:       # re-encode with the new epoch and sequences
                    b.data, b.base_sequence = None, -1
        finally:
            self._bumping = False
            self._wake.set()


def _split(b: ProducerBatch) -> list[ProducerBatch]:
    """Two halves of a batch, in order; sizes add up (buffer accounting is unchanged)."""
    half = b.count // 2
    parts = []
    for lo, hi in ((0, half), (half, b.count)):
        nb = ProducerBatch(b.topic, b.partition, b.created, b.timestamp_ms)
        nb.values = b.values[lo:hi]
        for name in ("keys", "headers", "timestamps", "callbacks"):
            col = getattr(b, name)
            setattr(nb, name, None if col is None else col[lo:hi])
        nb.count = hi - lo
        nb.size = b.size * nb.count // b.count
        nb.deadline = b.deadline
        nb.attempts = b.attempts
        nb.base_sequence = b.base_sequence if lo == 0 else -1
        nb.sealed = True
        parts.append(nb)
    parts[1].size = b.size - parts[0].size
    return parts
