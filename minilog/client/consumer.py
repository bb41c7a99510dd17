"""AsyncConsumer: the trio-native consumer, and the fetcher both facades share.

Theory of operation.

* Assignment state lives in `_PartitionState` objects keyed by
  (topic, partition): the caller's `position` (next offset poll() returns),
  a pending `reset` ("earliest"/"latest"/"error") when no position is known,
  and an `epoch` bumped by every seek so stale fetched data is dropped.
* The fetcher task (in the consumer's nursery, on the trio thread) resolves
  resets with ListOffsets, then keeps one Fetch per leader in flight while
  the caller drains what the previous one returned. It reads only the batch
  headers of a response (the next fetch offset is the last batch's next
  offset, as in Kafka), appends each partition's raw bytes to `_buffer` (a
  deque: atomic append/popleft) and sends the next fetch at once. It pauses
  while more than `_buffer_bytes_max` undecoded bytes are buffered.
* poll() (caller's task or thread) decodes a buffered response in bulk
  (`decode_records`, `min_offset` = the fetch offset so the head of the
  first batch is skipped) while the next fetch is in flight, hands out whole
  record lists (or a slice when `max_records` cuts one), drops entries whose
  epoch is stale, and advances positions. Only whole responses and record
  lists cross threads, never single records.
* Errors found by the fetcher that the caller must see (OffsetOutOfRange
  with auto_offset_reset="error", a corrupt batch) are queued in `_buffer`
  as exceptions and raised by the next poll().

* Lifetime: `async with AsyncConsumer(...) as c:` (see `_lifecycle.py`);
  the fetcher and the group's tasks live in the consumer's nursery; leaving
  the block leaves the group (bounded by request_timeout_ms) and stops them.

Consumer groups plug in through `minilog.client._membership`: see
`GroupHooks` there for the interface the membership may use.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from minilog.errors import (
    BrokerError,
    BrokerUnavailableError,
    ClosedError,
    CorruptRecordError,
    MinilogError,
    OffsetOutOfRangeError,
    RequestTimeoutError,
    error_for_code,
)
from minilog.protocol import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    ApiKey,
    CorruptBatchError,
    ErrorCode,
    Record,
    decode_records,
    iter_batches,
)

from ._cluster import Cluster
from ._config import ConsumerConfig, parse_bootstrap
from ._connection import Connect, open_tcp
from ._error_actions import Action, action_for
from ._lifecycle import ClientLifecycle, background
from ._membership import GroupHooks, GroupMembership

__all__ = ["AsyncConsumer", "Record", "ConsumerStatistics"]

log = logging.getLogger("minilog.consumer")

_RAW = "raw"   # marks a buffer entry still holding undecoded fetch bytes
_RESET_TIMESTAMPS = {"earliest": EARLIEST_TIMESTAMP, "latest": LATEST_TIMESTAMP}


@dataclass
class _PartitionState:
    topic: str
    partition: int
    position: int | None = None      # next offset poll() returns (caller-owned)
    reset: str | None = None         # pending reset strategy when position is None
    epoch: int = 0                   # bumped by seek: fetched data of older epochs is dropped
    fetch_offset: int | None = None  # next offset to fetch (fetcher-owned)
    fetch_epoch: int = -1
    high_watermark: int = -1
    log_start_offset: int = -1
    paused: bool = False


@dataclass(frozen=True)
class ConsumerStatistics:
    partitions_assigned: int
    bytes_buffered: int           # fetched, not yet decoded by poll()
    responses_buffered: int       # buffer entries (partition responses) waiting for poll()
    positions: dict               # (topic, partition) -> next offset poll() returns
    high_watermarks: dict         # (topic, partition) -> last seen high watermark


def _tp_list(partitions) -> list[tuple]:
    out = []
    for item in partitions:
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise TypeError("partitions are (topic, partition) or (topic, partition, offset)")
        out.append(tuple(item))
    return out


class AsyncConsumer(ClientLifecycle):
    """Trio consumer. `async with AsyncConsumer("localhost:9092") as c: c.assign([("t", 0)])`.

    Task-safe within one trio run. The sync facade (`minilog.Consumer`)
    drives the same object from another thread through the caller-side
    methods (`assign`, `seek*`, `take_records`), which only touch
    thread-safe structures.
    """

    def __init__(self, bootstrap_servers="localhost:9092", *, connect: Connect = open_tcp,
                 **options) -> None:
        self.config = cfg = ConsumerConfig.from_kwargs(**options)
        self._cluster = Cluster(parse_bootstrap(bootstrap_servers), client_id=cfg.client_id,
                                request_timeout_ms=cfg.request_timeout_ms,
                                metadata_max_age_ms=cfg.metadata_max_age_ms, connect=connect,
                                connect_timeout_ms=cfg.socket_connection_setup_timeout_ms)
        self._states: dict[tuple[str, int], _PartitionState] = {}
        self._buffer: collections.deque = collections.deque()
        self._fetched_bytes = 0        # written by the fetcher only
        self._consumed_bytes = 0       # written by the caller only
        # Prefetch bound: about two fetch responses' worth of undecoded bytes.
        self._buffer_bytes_max = max(4 * 1024 * 1024, 2 * cfg.max_partition_fetch_bytes)
        self.data_cond = threading.Condition()   # sync facade waits here
        self._data_event = trio.Event()
        self._fetch_wake = trio.Event()
        self._notify = lambda: None
        self._fetcher_paused = False
        self._membership: GroupMembership | None = None
        self._nursery: trio.Nursery | None = None
        self._caller_calls: collections.deque = collections.deque()

    # -- lifecycle -----------------------------------------------------

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[AsyncConsumer]:
        async with background(self._cluster) as nursery:
            self._nursery = nursery
            token = trio.lowlevel.current_trio_token()
            self._notify = partial(token.run_sync_soon, self._wake_fetcher)
            nursery.start_soon(self._fetcher_loop)
            try:
                yield self
            finally:
                self._state = "closed"
                try:
                    if self._membership is not None:
                        with trio.move_on_after(self.config.request_timeout_ms / 1000):
                            await self._membership.close()
                finally:
                    with self.data_cond:
                        self.data_cond.notify_all()

    def _check_open(self) -> None:
        if self._state != "running":
            raise ClosedError(f"consumer is {self._state}")

    # -- assignment and positions (caller side, any thread) ---------------

    def assign(self, partitions: Iterable) -> None:
        """Replace the assignment: [(topic, partition)] or [(topic, partition, offset)].

        Partitions without an offset start at their committed offset (with a
        group) or per auto_offset_reset.
        """
        self._check_open()
        if self._membership is not None and self._membership.subscribed:
            raise MinilogError("assign() cannot be mixed with subscribe()")
        wanted = _tp_list(partitions)
        self._set_assignment(wanted)

    def _set_assignment(self, wanted: list[tuple]) -> None:
        states = {}
        for item in wanted:
            tp = (item[0], item[1])
            if not isinstance(tp[0], str) or type(tp[1]) is not int or tp[1] < 0:
                raise TypeError(f"bad partition {item!r}")
            st = self._states.get(tp) or _PartitionState(tp[0], tp[1],
                                                         reset=self.config.auto_offset_reset)
            if len(item) == 3:
                self._seek_state(st, item[2])
            states[tp] = st
        self._states = states          # one reference swap: the fetcher sees old or new
        self._notify()

    def assignment(self) -> set[tuple[str, int]]:
        return set(self._states)

    def _seek_state(self, st: _PartitionState, offset) -> None:
        if offset in ("earliest", "latest"):
            st.position, st.reset = None, offset
        elif type(offset) is int and offset >= 0:
            st.position, st.reset = offset, None
        else:
            raise ValueError(f"offset must be a non-negative int, 'earliest' or 'latest': {offset!r}")
        st.epoch += 1

    def _state_for(self, topic: str, partition: int) -> _PartitionState:
        st = self._states.get((topic, partition))
        if st is None:
            raise MinilogError(f"{topic}-{partition} is not assigned to this consumer")
        return st

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Next poll() returns records of `topic`-`partition` from `offset`."""
        self._seek_state(self._state_for(topic, partition), offset)
        self._notify()

    def seek_to_beginning(self, partitions=None) -> None:
        """Lazily move to the log start of `partitions` (default: all assigned)."""
        self._seek_many(partitions, "earliest")

    def seek_to_end(self, partitions=None) -> None:
        """Lazily move to the high watermark of `partitions` (default: all assigned)."""
        self._seek_many(partitions, "latest")

    def _seek_many(self, partitions, where: str) -> None:
        tps = list(self._states) if partitions is None else [tuple(p[:2]) for p in partitions]
        for tp in tps:
            self._seek_state(self._state_for(*tp), where)
        self._notify()

    def pause(self, partitions) -> None:
        for tp in partitions:
            self._state_for(*tp[:2]).paused = True

    def resume(self, partitions) -> None:
        for tp in partitions:
            self._state_for(*tp[:2]).paused = False
        self._notify()

    async def position(self, topic: str, partition: int) -> int:
        """The offset of the next record poll() returns (resolves a pending reset)."""
        self._check_open()
        st = self._state_for(topic, partition)
        while st.position is None:
            if (st.reset or self.config.auto_offset_reset) == "error":
                raise OffsetOutOfRangeError(message=(
                    f"{topic}-{partition} has no position and auto_offset_reset='error'"))
            await self._resolve_resets([st])
            if st.position is None:
                await trio.sleep(0.05)
        return st.position

    def statistics(self) -> ConsumerStatistics:
        """A snapshot of assignment, buffer and positions (any thread)."""
        states = dict(self._states)
        return ConsumerStatistics(
            partitions_assigned=len(states),
            bytes_buffered=self._fetched_bytes - self._consumed_bytes,
            responses_buffered=len(self._buffer),
            positions={tp: st.position for tp, st in states.items()},
            high_watermarks={tp: st.high_watermark for tp, st in states.items()})

    def positions(self) -> dict[tuple[str, int], int]:
        """Known positions of every assigned partition (for commits)."""
        return {tp: st.position for tp, st in list(self._states.items())
                if st.position is not None}

    # -- polling (caller side) -------------------------------------------

    def take_records(self, max_records: int | None = None) -> list[Record]:
        """Non-blocking: take buffered records (up to max_records) and advance positions.

        Raises an error the fetcher queued (OffsetOutOfRangeError, CorruptRecordError).
        """
        calls = self._caller_calls
        while calls:
            fn, args = calls.popleft()
            fn(*args)
        buf = self._buffer
        limit = self.config.max_poll_records if max_records is None else max_records
        out: list[Record] = []
        states = self._states
        while buf and len(out) < limit:
            entry = buf[0]
            if isinstance(entry, BaseException):
                if out:
                    break
                buf.popleft()
                raise entry
            tp, epoch = entry[0], entry[1]
            st = states.get(tp)
            if st is None or st.epoch != epoch:
                self._drop_entry(buf.popleft())
                continue
            if len(entry) == 5:            # raw bytes from the fetcher: decode in bulk
                data = entry[2]
                try:
                    records = decode_records(data, tp[0], tp[1], min_offset=entry[3],
                                             verify_crc=self.config.check_crcs)
                except CorruptBatchError as exc:
                    buf.popleft()
                    self._consumed_bytes += len(data)
                    st.paused = True
                    err = CorruptRecordError(message=f"{tp[0]}-{tp[1]} at offset {entry[3]}: {exc}")
                    if out:
                        buf.appendleft(err)
                        break
                    raise err from None
                self._consumed_bytes += len(data)
                entry[2:] = [records, 0]
                if not records:
                    buf.popleft()
                    continue
            records, start = entry[2], entry[3]
            want = limit - len(out)
            end = len(records) if len(records) - start <= want else start + want
            if start == 0 and end == len(records):
                if out:
                    out += records
                else:
                    out = records
                buf.popleft()
            else:
                out += records[start:end]
                if end == len(records):
                    buf.popleft()
                else:
                    entry[3] = end
            st.position = records[end - 1][2] + 1
        if self._fetcher_paused and self._fetched_bytes - self._consumed_bytes \
                < self._buffer_bytes_max:
            self._fetcher_paused = False
            self._notify()
        if self._membership is not None:
            self._membership.on_poll()
        return out

    async def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[Record]:
        """Return buffered records, waiting up to `timeout_ms` for some to arrive."""
        self._check_open()
        records = self.take_records(max_records)
        if records or timeout_ms <= 0:
            return records
        with trio.move_on_after(timeout_ms / 1000):
            while not records:
                await self._data_event.wait()
                records = self.take_records(max_records)
        return records

    def __aiter__(self):
        return self

    async def __anext__(self) -> Record:
        pending = getattr(self, "_iter_pending", None)
        if not pending:
            while True:
                if self._state != "running":
                    raise StopAsyncIteration
                pending = await self.poll(timeout_ms=1000)
                if pending:
                    break
            self._iter_pending = collections.deque(pending)
            pending = self._iter_pending
        return pending.popleft()

    def _drop_entry(self, entry) -> None:
        if len(entry) == 5:
            self._consumed_bytes += len(entry[2])

    # -- fetcher (trio side) ---------------------------------------------

    def _wake_fetcher(self) -> None:
        self._fetch_wake.set()

    def _signal_data(self) -> None:
        self._data_event.set()
        self._data_event = trio.Event()
        with self.data_cond:
            self.data_cond.notify_all()

    async def _fetcher_loop(self) -> None:
        backoff = 0.05
        while True:
            self._fetch_wake = trio.Event()
            states = self._states
            if self._fetched_bytes - self._consumed_bytes >= self._buffer_bytes_max:
                self._fetcher_paused = True
                await self._fetch_wake.wait()
                continue
            try:
                pending = [st for st in states.values() if st.position is None
                           and st.fetch_epoch != st.epoch]
                if pending:
                    await self._resolve_resets(pending)
                if self._cluster.stale():
                    await self._refresh([st.topic for st in states.values()])
                by_node = self._fetchable(states)
                if not by_node:
                    with trio.move_on_after(0.1 if states else math.inf):
                        await self._fetch_wake.wait()
                    continue
                if len(by_node) == 1:      # the common case: no task per fetch
                    ((node, sts),) = by_node.items()
                    await self._fetch_from(node, sts)
                else:
                    failed: list[BaseException] = []
                    async with trio.open_nursery() as nursery:
                        for node, sts in by_node.items():
                            nursery.start_soon(self._fetch_from_keeping_error, node, sts, failed)
                    if failed:      # one broker failed (killed, say): the others' data is kept
                        raise failed[0]
                backoff = 0.05
            except (BrokerUnavailableError, RequestTimeoutError, BrokerError) as exc:
                log.debug("fetch failed: %s; retrying in %.2fs", exc, backoff)
                with trio.move_on_after(backoff):
                    await self._fetch_wake.wait()
                backoff = min(backoff * 2, 1.0)
                if action_for(exc) is Action.REFRESH_METADATA:
                    await self._refresh([st.topic for st in states.values()])

    def _fetchable(self, states) -> dict[int, list[_PartitionState]]:
        by_node: dict[int, list[_PartitionState]] = {}
        missing = False
        for st in states.values():
            if st.fetch_epoch != st.epoch:
                if st.position is None:
                    continue
                st.fetch_offset, st.fetch_epoch = st.position, st.epoch
            if st.paused or st.fetch_offset is None:
                continue
            node = self._cluster.leader(st.topic, st.partition)
            if node is None:
                missing = True
                continue
            by_node.setdefault(node, []).append(st)
        if missing:
            assert self._nursery is not None
            self._nursery.start_soon(self._refresh, [st.topic for st in states.values()])
        return by_node

    async def _refresh(self, topics) -> None:
        try:
            await self._cluster.refresh(sorted(set(topics)))
        except MinilogError as exc:
            log.debug("metadata refresh failed: %s", exc)

    async def _fetch_from_keeping_error(self, node: int, sts: list[_PartitionState],
                                        failed: list[BaseException]) -> None:
        """`_fetch_from` in a task beside other brokers' fetches: a retriable failure is
        kept in `failed` (for the loop to back off and refresh metadata) instead of
        cancelling the other fetches and escaping as an exception group."""
        try:
            await self._fetch_from(node, sts)
        except (BrokerUnavailableError, RequestTimeoutError, BrokerError) as exc:
            failed.append(exc)

    async def _fetch_from(self, node: int, sts: list[_PartitionState]) -> None:
        cfg = self.config
        topics: dict[str, list] = {}
        asked: list[tuple[_PartitionState, int, int]] = []
        for st in sts:
            assert st.fetch_offset is not None      # _fetchable picks positioned partitions only
            topics.setdefault(st.topic, []).append({
                "partition": st.partition, "fetch_offset": st.fetch_offset,
                "partition_max_bytes": cfg.max_partition_fetch_bytes, "current_leader_epoch": -1})
            asked.append((st, st.fetch_epoch, st.fetch_offset))
        payload = {"replica_id": -1, "max_wait_ms": cfg.fetch_max_wait_ms,
                   "min_bytes": cfg.fetch_min_bytes, "max_bytes": cfg.fetch_max_bytes,
                   "isolation_level": 0,
                   "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]}
        resp = await self._cluster.request(node, ApiKey.FETCH, payload)
        body = resp.payload
        code = body.get("error_code", 0)
        if code:
            raise error_for_code(code, body.get("error_message"))
        by_tp = {(st.topic, st.partition): (st, epoch, offset) for st, epoch, offset in asked}
        added = 0
        refresh = False
        for t in body["topics"]:
            topic = t["topic"]
            for p in t["partitions"]:
                item = by_tp.get((topic, p["partition"]))
                if item is None:
                    continue
                st, epoch, offset = item
                if st.epoch != epoch or st.fetch_offset != offset:
                    continue   # seeked while the fetch was in flight
                code = p["error_code"]
                if code:
                    refresh |= self._partition_error(st, code)
                    continue
                st.high_watermark = p["high_watermark"]
                st.log_start_offset = p["log_start_offset"]
                idx = p["records"]
                if idx < 0:
                    continue
                data = resp.attachments[idx]
                try:
                    end = max((h.next_offset for h, _ in iter_batches(data)), default=None)
                except CorruptBatchError as exc:
                    self._buffer.append(CorruptRecordError(
                        message=f"{topic}-{st.partition} at offset {offset}: {exc}"))
                    st.paused = True
                    added += 1
                    continue
                if end is None or end <= offset:
                    continue
                # The next fetch can go out now: its offset comes from the
                # batch headers. The records are decoded by poll(), on the
                # caller's side, while that fetch is in flight.
                st.fetch_offset = end
                self._buffer.append([(topic, st.partition), epoch, data, offset, _RAW])
                self._fetched_bytes += len(data)
                added += 1
        if added:
            self._signal_data()
        if refresh:
            await self._refresh([st.topic for st in sts])

    def _partition_error(self, st: _PartitionState, code: int) -> bool:
        """Handle a partition's fetch error; return True when metadata should be refreshed."""
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            strategy = self.config.auto_offset_reset
            if strategy == "error":
                err = OffsetOutOfRangeError(message=(
                    f"{st.topic}-{st.partition}: offset {st.fetch_offset} is out of range "
                    f"and auto_offset_reset='error'"))
                st.paused = True
                self._buffer.append(err)
                self._signal_data()
                return False
            log.info("%s-%d: offset %s out of range; resetting to %s", st.topic, st.partition,
                     st.fetch_offset, strategy)
            st.position, st.reset = None, strategy
            st.epoch += 1
            return False
        err = error_for_code(code)
        action = action_for(err)
        if action is not Action.FATAL:
            return action is Action.REFRESH_METADATA   # fetched again at once, or after a refresh
        self._buffer.append(err)
        st.paused = True
        self._signal_data()
        return False

    async def _resolve_resets(self, sts: list[_PartitionState]) -> None:
        """Find positions for partitions with a pending reset (ListOffsets)."""
        wanted = {}
        for st in sts:
            if st.position is not None:
                continue
            strategy = st.reset or self.config.auto_offset_reset
            if strategy == "error":
                err = OffsetOutOfRangeError(message=(
                    f"{st.topic}-{st.partition} has no position and auto_offset_reset='error'"))
                st.fetch_epoch = st.epoch
                self._buffer.append(err)
                self._signal_data()
                continue
            wanted[(st.topic, st.partition)] = (st, st.epoch, _RESET_TIMESTAMPS[strategy])
        if not wanted:
            return
        if self._membership is not None:
            committed = await self._membership.committed_for_reset(list(wanted))
            for tp, offset in (committed or {}).items():
                st, epoch, _ = wanted.pop(tp)
                if st.epoch == epoch and offset is not None and offset >= 0:
                    st.position, st.reset = offset, None
        if not wanted:
            return
        found = await self.list_offsets({tp: ts for tp, (_, _, ts) in wanted.items()})
        for tp, (st, epoch, _) in wanted.items():
            offset = found.get(tp)
            if offset is not None and offset[0] >= 0 and st.epoch == epoch \
                    and st.position is None:
                st.position, st.reset = offset[0], None
        self._notify()

    async def list_offsets(self, query: dict) -> dict:
        """{(topic, partition): timestamp or sentinel} -> {(topic, partition): (offset, ts)}.

        Offsets are -1 when no record has a timestamp at or after the one asked.
        Raises UnknownTopicOrPartitionError and other non-retriable BrokerErrors.
        """
        return await self._cluster.list_offsets(query)

    async def offsets_for_times(self, timestamps: dict) -> dict:
        """{(topic, partition): ts_ms} -> {(topic, partition): (offset, timestamp) or None}."""
        for tp, ts in timestamps.items():
            if type(ts) is not int or ts < 0:
                raise ValueError(f"timestamp for {tp} must be a non-negative int (ms)")
        found = await self.list_offsets(timestamps)
        return {tp: (found[tp] if found[tp][0] >= 0 else None) for tp in timestamps}

    async def beginning_offsets(self, partitions) -> dict:
        found = await self.list_offsets({tuple(tp[:2]): EARLIEST_TIMESTAMP for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    async def end_offsets(self, partitions) -> dict:
        found = await self.list_offsets({tuple(tp[:2]): LATEST_TIMESTAMP for tp in partitions})
        return {tp: v[0] for tp, v in found.items()}

    async def list_topics(self) -> list[str]:
        payload = await self._cluster.metadata_all()
        return sorted(t["topic"] for t in payload["topics"] if not t["topic"].startswith("__"))

    async def partitions_for_topic(self, topic: str) -> list[int]:
        n = await self._cluster.wait_for_topic(topic, self.config.request_timeout_ms / 1000)
        return list(range(n))

    # -- consumer groups: delegated to minilog.client._membership ---------

    def _group(self):
        if self._membership is None:
            if self.config.group_id is None:
                raise MinilogError("this needs group_id: create the consumer with group_id=...")
            self._membership = GroupMembership(GroupHooks(self), self.config)
        return self._membership

    async def subscribe(self, topics, on_assign=None, on_revoke=None) -> None:
        """Join the consumer group and consume `topics` (assignment by the coordinator)."""
        self._check_open()
        if isinstance(topics, str):
            topics = [topics]
        await self._group().subscribe(list(topics), on_assign, on_revoke)

    async def unsubscribe(self) -> None:
        if self._membership is not None:
            await self._membership.unsubscribe()

    async def commit(self, offsets=None, asynchronous: bool = False) -> None:
        """Commit `offsets` ({(topic, partition): offset}) or the current positions."""
        self._check_open()
        await self._group().commit(offsets, asynchronous)

    async def committed(self, partitions) -> dict:
        """{(topic, partition): committed offset or None}."""
        self._check_open()
        return await self._group().committed([tuple(tp[:2]) for tp in partitions])
