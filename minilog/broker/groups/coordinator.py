"""The group coordinator: the trio-facing owner of groups and committed offsets.

Rules:
- A group belongs to partition `group_partition(group_id, n)` of
  `__consumer_offsets` (`_placement.py`); the coordinator of that
  partition's leader owns it. On a single broker that is every group.
- Every commit, group-metadata change and deletion is appended to that
  partition through the broker's `Partition.append` and applied to memory
  only after the append returned; the response goes out after that. (The
  one exception, the offsets of a deleted topic, is below.) One
  trio.Lock per offsets partition keeps "append order == apply order".
- Group state (`_group.Group`) and offsets (`_offsets.OffsetStore`) are pure,
  and so is their translation to and from the request model (`_views.py`);
  this module adds ownership (which partitions are loaded here), ordering
  (append, then apply), time (trio's clock, so MockClock drives the tests)
  and the log.

Theory of operation:
- The broker builds the coordinator, creates `__consumer_offsets` if
  missing (`_placement.offsets_topic_configs`), and registers `become_leader` /
  `resign` with its replica manager for that topic: each offsets partition
  led here is replayed into memory (`load_partition_nowait`) before the
  broker listens, and forgotten when leadership moves. The broker runs
  `run` in its nursery; `minilog.broker.handlers.groups` translates the
  group APIs to the methods under "request model".
- `run` sleeps until the earliest session or revocation deadline of any
  group (a heartbeat that makes an earlier deadline wakes it), removes the
  members that are due, and every offsets.retention.check.interval.ms drops
  the offsets of groups empty for longer than offsets.retention.minutes.
- Deleting a topic deletes its committed offsets in every group (as Kafka
  does), so a re-created topic of the same name starts without them. The
  broker's "deleted" topic callback drops them from memory at once and queues
  one deletion record per group (a commit of offset -1 for each of the
  topic's partitions the group had committed); the queue of an offsets
  partition is appended before anything else is appended there (under the
  same lock), and by a background task. After a crash between the topic's
  deletion and those appends, the load finds offsets of topics that do not
  exist and deletes them the same way (`forget_missing_topics_nowait`).
- Members are not persisted: after a coordinator restart every member gets
  UNKNOWN_MEMBER_ID on its next heartbeat and rejoins with epoch 0; its
  committed offsets are where it resumes. Group epochs are persisted so they
  keep growing across restarts.

Error handling: handlers never raise on purpose; refusals are error codes in
the payload (GroupError carries them out of the pure layer).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Iterable

import trio

from minilog._logsafe import logsafe
from minilog.protocol import (
    ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
    CorruptBatchError,
    DescribedGroup,
    ErrorCode,
    ListedGroup,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
)
from minilog.protocol.kafka import ClassicDescribedGroup

from . import _views
from ._classic import INCONSISTENT_GROUP_PROTOCOL
from ._group import Group, GroupError, HeartbeatResult, tp_set
from ._offsets import OffsetStore, encode_commit, encode_group_metadata, encode_group_tombstone, iter_offset_records
from ._placement import OFFSETS_TOPIC, CoordinatorConfig, group_partition
from .classic import ClassicGroups, ClassicLimits

__all__ = ["GroupCoordinator", "CoordinatorStatistics"]

log = logging.getLogger("minilog.broker.groups")

LOAD_CHUNK_BYTES = 8 * 1024 * 1024     # bytes read from the log per step while loading


@dataclass(frozen=True)
class CoordinatorStatistics:
    groups: int                 # groups with a live Group object (members now or since start)
    members: int
    groups_with_offsets: int
    records_loaded: int         # __consumer_offsets records replayed at start
    partitions_loaded: int


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class GroupCoordinator:
    """Owns the groups of the `__consumer_offsets` partitions led by this broker.

    Args:
        broker: anything with `partition(topic, p)` (a `Partition`-like object
            with `append(batch, acks=)`, `read(offset, max_bytes, max_offset=)`,
            `log_start_offset`, `log_end_offset`, `wait_idle()`),
            `topic_metadata(name)` (`.partitions`) and, for FIND_COORDINATOR,
            `broker_id`, `host`, `port`.
        wall_ms: the wall clock for commit timestamps and offset expiry.

    Task-safety: every method runs on the trio thread. Group and store
    mutations happen between awaits, so they are atomic.
    """

    def __init__(self, broker: Any, config: CoordinatorConfig, *,
                 wall_ms: Callable[[], int] = _wall_ms) -> None:
        self.broker = broker
        self.config = config
        self.groups: dict[str, Group] = {}
        self.store = OffsetStore()
        self.loaded: set[int] = set()
        self._wall_ms = wall_ms
        self._locks = [trio.Lock() for _ in range(config.offsets_topic_num_partitions)]
        self._wakeup = trio.Event()
        self._scheduled = math.inf
        self.records_loaded = 0
        # Per offsets partition: deletion batches already applied in memory, not yet appended.
        self._pending: dict[int, deque[bytes]] = {}
        self._nursery: trio.Nursery | None = None
        # Kafka clients' classic (JoinGroup/SyncGroup) groups; a group id is one kind or the other.
        self.classic = ClassicGroups(
            ClassicLimits(config.session_timeout_min_ms, config.session_timeout_max_ms, config.group_max_size),
            is_native=lambda g: g in self.groups and bool(self.groups[g].members))

    # ------------------------------------------------------------------ helpers

    def partition_for(self, group_id: str) -> int:
        return group_partition(group_id, self.config.offsets_topic_num_partitions)

    def _partition_count(self, topic: str) -> int:
        meta = self.broker.topic_metadata(topic)
        return meta.partitions if meta is not None else 0

    async def _append(self, group_id: str, batch: bytes) -> None:
        """Append one record batch to the group's offsets partition, then apply it."""
        p = self.partition_for(group_id)
        part = self.broker.partition(OFFSETS_TOPIC, p)
        if part is None:
            raise GroupError(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{OFFSETS_TOPIC}-{p} is not here")
        async with self._locks[p]:
            await self._append_pending_locked(p, part)   # deletions first: they happened first
            await part.append(bytearray(batch), acks=-1)
            for _, key, value in iter_offset_records(batch):
                self.store.apply(key, value)

    async def _append_pending_locked(self, p: int, part: Any) -> None:
        """Append offsets partition p's queued deletion batches (caller holds its lock)."""
        queue = self._pending.get(p)
        while queue:
            await part.append(bytearray(queue[0]), acks=-1)
            queue.popleft()

    async def append_pending(self, p: int) -> None:
        """Append the queued deletion batches of offsets partition p, if any.

        Error handling: a failed append is logged and the batches stay queued; the
        next commit to that partition tries again first (and fails if it fails), and
        a restart deletes the offsets again from the topic metadata.
        """
        part = self.broker.partition(OFFSETS_TOPIC, p)
        if part is None or not self._pending.get(p):
            return
        try:
            async with self._locks[p]:
                await self._append_pending_locked(p, part)
        except Exception:
            log.exception("%s-%d: appending offset deletions failed; retried on the next commit",
                          OFFSETS_TOPIC, p)

    # ------------------------------------------------------------------ topic deletion

    def on_topic_change(self, event: str, topic: str) -> None:
        """The broker's topic callback: a deleted topic's offsets go with it."""
        if event == "deleted":
            self.forget_topic_nowait(topic)

    def forget_topic_nowait(self, topic: str) -> int:
        """Delete every group's committed offsets of `topic`. Returns the groups changed.

        Memory changes at once (a fetch right after the topic's deletion sees no
        offsets); the records saying so are queued per offsets partition and
        appended by a background task or before the partition's next append.
        """
        now_ms = self._wall_ms()
        changed = []
        for group_id, rows in self.store.offsets.items():
            parts = sorted(p for (t, p), row in rows.items() if t == topic and row[2] >= 0)
            if parts:
                changed.append((group_id, parts))
        touched = set()
        for group_id, parts in changed:
            batch = encode_commit(group_id, [(topic, p, -1, -1, None) for p in parts], now_ms)
            for _, key, value in iter_offset_records(batch):
                self.store.apply(key, value)
            p = self.partition_for(group_id)
            self._pending.setdefault(p, deque()).append(batch)
            touched.add(p)
            log.info("group %s: committed offsets of deleted topic %s removed (%d partitions)",
                     logsafe(group_id), logsafe(topic), len(parts))
        if self._nursery is not None:
            for p in sorted(touched):
                self._nursery.start_soon(self.append_pending, p)
        return len(changed)

    def forget_missing_topics_nowait(self) -> list[str]:
        """Delete committed offsets of topics that do not exist (a crash came between a
        topic's deletion and its offsets' deletion records). Returns those topics.

        Needs the broker's topic metadata to be loaded (it is, before the coordinator).
        """
        missing = sorted({t for rows in self.store.offsets.values() for (t, _), row in rows.items()
                          if row[2] >= 0 and self.broker.topic_metadata(t) is None})
        for topic in missing:
            self.forget_topic_nowait(topic)
        return missing

    async def _write_metadata(self, group: Group) -> None:
        await self._append(group.group_id, encode_group_metadata(
            group.group_id, group.group_epoch, group.assignor, self._wall_ms()))

    def _check_loaded(self, group_id: str) -> None:
        if self.partition_for(group_id) not in self.loaded:
            raise GroupError(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)

    # ------------------------------------------------------------------ loading

    def load_partition_nowait(self, p: int) -> int:
        """Replay `__consumer_offsets` partition p into memory. Returns records applied.

        Synchronous (no flush of the partition may be running; at broker start
        none is). Raises CorruptBatchError on a record this format cannot read.
        """
        part = self.broker.partition(OFFSETS_TOPIC, p)
        if part is None:
            return 0
        offset, end = part.log_start_offset, part.log_end_offset
        n = 0
        while offset < end:
            data = part.read(offset, LOAD_CHUNK_BYTES, max_offset=end)
            count, next_offset = self.store.load_buffer(data)
            n += count
            if next_offset is None or next_offset <= offset:
                raise CorruptBatchError(f"{OFFSETS_TOPIC}-{p}: no progress at offset {offset}")
            offset = next_offset
        for group_id, meta in self.store.metadata.items():
            group = self.groups.get(group_id)
            if group is not None and meta.group_epoch > group.group_epoch:
                group.group_epoch = group.assignment_epoch = meta.group_epoch
        self.loaded.add(p)
        self.records_loaded += n
        return n

    def load_nowait(self) -> float:
        """Load every offsets partition on this broker. Returns the seconds taken."""
        t0 = time.perf_counter()
        for p in range(self.config.offsets_topic_num_partitions):
            self.load_partition_nowait(p)
        self.forget_missing_topics_nowait()
        elapsed = time.perf_counter() - t0
        log.info("group coordinator loaded %d records of %s (%d groups) in %.3f s",
                 self.records_loaded, OFFSETS_TOPIC, len(self.store.groups()), elapsed)
        return elapsed

    # ------------------------------------------------------------------ timers

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Expire members and offsets until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._member_timer_loop)
            nursery.start_soon(self._retention_loop)
            for p in sorted(self._pending):            # deletions found while loading
                nursery.start_soon(self.append_pending, p)
            task_status.started()

    def _poke(self, group: Group) -> None:
        deadline = group.next_deadline()
        if deadline is not None and deadline < self._scheduled:
            self._wakeup.set()

    async def _member_timer_loop(self) -> None:
        while True:
            deadlines = [d for g in self.groups.values() if (d := g.next_deadline()) is not None]
            classic = self.classic.next_deadline()
            if classic is not None:
                deadlines.append(classic)
            self._scheduled = min(deadlines, default=math.inf)
            with trio.move_on_at(self._scheduled):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            await self.expire_members(trio.current_time())

    async def expire_members(self, now: float) -> list[tuple[str, str, str]]:
        """Remove every member past its session or revocation deadline."""
        removed = []
        self.classic.expire_all(now)
        for group in list(self.groups.values()):
            deadline = group.next_deadline()
            if deadline is None or deadline > now:
                continue
            before = group.group_epoch
            for member_id, reason in group.expire(now, self._partition_count):
                log.info("group %s: removed member %s (%s)", logsafe(group.group_id),
                         logsafe(member_id), reason)
                removed.append((group.group_id, member_id, reason))
            if group.group_epoch != before:
                await self._write_metadata(group)
        return removed

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.config.offsets_retention_check_interval_ms / 1000)
            await self.expire_offsets()

    async def expire_offsets(self) -> list[str]:
        """Delete the offsets of groups empty for longer than the retention."""
        now_ms, now = self._wall_ms(), trio.current_time()
        active = {g for g, group in self.groups.items() if group.members}
        active |= {g for g, group in self.classic.groups.items() if group.members}
        empty_since_ms = {g: int(now_ms - (now - group.empty_since) * 1000)
                          for g, group in self.groups.items() if group.empty_since is not None}
        expired = self.store.expired_groups(now_ms, self.config.offsets_retention_ms, active,
                                            empty_since_ms)
        for group_id in expired:
            await self._append(group_id, encode_group_tombstone(group_id, now_ms))
            self.groups.pop(group_id, None)
            log.info("group %s: committed offsets expired", logsafe(group_id))
        return expired

    # ------------------------------------------------------------------ group operations

    async def heartbeat(self, p: dict, *, client_host: str = ""):
        """Apply one heartbeat payload. Raises GroupError."""
        group_id, epoch = p["group_id"], p["member_epoch"]
        if not group_id:
            raise GroupError(ErrorCode.INVALID_REQUEST, "empty group id")
        self._check_loaded(group_id)
        if self.classic.is_classic(group_id):
            if self.classic.delete(group_id) != ErrorCode.NONE:
                raise GroupError(INCONSISTENT_GROUP_PROTOCOL,
                                 f"group {group_id!r} is a Kafka classic-protocol group (JoinGroup/SyncGroup) "
                                 "with members; a minilog consumer cannot join it (use another group id)")
        session_ms = p.get("session_timeout_ms") or self.config.session_timeout_ms
        if not isinstance(session_ms, int) or not (
                self.config.session_timeout_min_ms <= session_ms <= self.config.session_timeout_max_ms):
            raise GroupError(ErrorCode.INVALID_SESSION_TIMEOUT,
                             f"session_timeout_ms must be within [{self.config.session_timeout_min_ms},"
                             f" {self.config.session_timeout_max_ms}] "
                             "(group.min/max.session.timeout.ms)")
        assignor = p["server_assignor"]
        if assignor is not None and assignor not in self.config.assignors:
            raise GroupError(ErrorCode.UNSUPPORTED_ASSIGNOR,
                             f"assignor {assignor!r} is not one of {', '.join(self.config.assignors)}")
        group = self.groups.get(group_id)
        if group is None:
            if epoch == -1:        # leaving a group that no longer exists: nothing to do
                return HeartbeatResult(p["member_id"], -1, self.config.heartbeat_interval_ms, None)
            if epoch != 0:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
            meta = self.store.metadata.get(group_id)
            group = Group(group_id, group_epoch=meta.group_epoch if meta else 0,
                          assignor=self.config.assignors[0],
                          heartbeat_interval_ms=self.config.heartbeat_interval_ms)
            self.groups[group_id] = group
        if epoch == 0 and p["member_id"] not in group.members and \
                len(group.members) >= self.config.group_max_size:
            raise GroupError(ErrorCode.GROUP_MAX_SIZE_REACHED)
        before = group.group_epoch
        result = group.heartbeat(
            member_id=p["member_id"], member_epoch=epoch, now=trio.current_time(),
            partition_counts=self._partition_count,
            rebalance_timeout_ms=max(p["rebalance_timeout_ms"], 0),
            session_timeout_ms=session_ms, subscribed=p["subscribed_topic_names"],
            assignor=assignor, owned=tp_set(p["topic_partitions"]),
            client_id=p["client_id"], client_host=client_host)
        self._poke(group)
        if group.group_epoch != before:
            await self._write_metadata(group)
        return result

    async def commit(self, group_id: str, member_id: str, member_epoch: int,
                     topics: list[dict]) -> dict[tuple[str, int], ErrorCode]:
        """Validate, append and apply one commit. Returns a code per (topic, partition)."""
        requested = [(t["topic"], q) for t in topics for q in t["partitions"]]
        codes = {(t, q["partition"]): ErrorCode.NONE for t, q in requested}
        try:
            if not group_id:
                raise GroupError(ErrorCode.INVALID_REQUEST, "empty group id")
            self._check_loaded(group_id)
            group = self.groups.get(group_id)
            if self.classic.is_classic(group_id):      # member_epoch is the generation
                self.classic.check_commit(group_id, member_id, member_epoch)
            elif group is not None:
                group.check_member_epoch(member_id, member_epoch)
            elif member_epoch >= 0:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
        except GroupError as exc:
            return {tp: exc.code for tp in codes}
        entries = []
        for topic, q in requested:
            tp = (topic, q["partition"])
            meta = q["committed_metadata"]
            if meta is not None and len(meta.encode()) > self.config.offset_metadata_max_bytes:
                codes[tp] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            elif not 0 <= q["partition"] < self._partition_count(topic):
                codes[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif q["committed_offset"] < 0:
                codes[tp] = ErrorCode.INVALID_COMMIT_OFFSET_SIZE
            else:
                entries.append((topic, q["partition"], q["committed_offset"],
                                q["committed_leader_epoch"], meta))
        if entries:
            try:
                await self._append(group_id, encode_commit(group_id, entries, self._wall_ms()))
            except GroupError as exc:
                return {tp: exc.code for tp in codes}
            except Exception:
                log.exception("group %s: appending a commit failed", logsafe(group_id))
                return {tp: (ErrorCode.KAFKA_STORAGE_ERROR if c == ErrorCode.NONE else c)
                        for tp, c in codes.items()}
        return codes

    # ------------------------------------------------------------------ leadership

    def become_leader(self, p: int) -> None:
        """This broker now leads `__consumer_offsets` partition p: load its groups.

        Called by the replica manager (synchronously, before requests for the
        partition's groups are served)."""
        if p not in self.loaded:
            n = self.load_partition_nowait(p)
            log.debug("group coordinator loaded %d records of %s-%d", n, OFFSETS_TOPIC, p)

    def resign(self, p: int) -> None:
        """This broker no longer leads partition p: forget its groups (a new leader loads them)."""
        self.loaded.discard(p)
        self._pending.pop(p, None)                     # the new leader deletes them on load
        for group_id in [g for g in self.groups if self.partition_for(g) == p]:
            del self.groups[group_id]
        for group_id in [g for g in self.store.groups() if self.partition_for(g) == p]:
            self.store.delete_group(group_id)

    # ------------------------------------------------------------------ request model (GroupService)

    @property
    def heartbeat_interval_ms(self) -> int:
        return self.config.heartbeat_interval_ms

    def is_coordinator_for(self, group_id: str) -> bool:
        return self.partition_for(group_id) in self.loaded

    async def heartbeat_request(self, request: ConsumerGroupHeartbeatRequest, *,
                                client_host: str = "") -> ConsumerGroupHeartbeatResponse:
        try:
            result = await self.heartbeat(_views.heartbeat_payload(request), client_host=client_host)
        except GroupError as exc:
            return ConsumerGroupHeartbeatResponse(int(exc.code), str(exc), None, -1,
                                                  self.config.heartbeat_interval_ms, None)
        return _views.heartbeat_response(result)

    def describe_group(self, group_id: str) -> DescribedGroup:
        return _views.describe_native(
            group_id, group=self.groups.get(group_id), classic=self.classic.describe(group_id),
            store=self.store, loaded=self.partition_for(group_id) in self.loaded,
            default_assignor=self.config.assignors[0])

    async def commit_offsets(self, request: OffsetCommitRequest) -> OffsetCommitResponse:
        codes = await self.commit(request.group_id, request.member_id, request.member_epoch,
                                  _views.commit_payload(request))
        return _views.commit_response(request, codes)

    def fetch_offsets(self, request: OffsetFetchRequest) -> OffsetFetchResponse:
        group_id = request.group_id
        try:
            self._check_loaded(group_id)
            group = self.groups.get(group_id)
            if request.member_id and request.member_epoch >= 0:
                if group is None:
                    raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
                group.check_member_epoch(request.member_id, request.member_epoch)
        except GroupError as exc:
            return OffsetFetchResponse(int(exc.code), [])
        wanted = None if request.topics is None else {
            (tp.topic, q) for tp in request.topics for q in tp.partitions}
        found = self.store.fetch(group_id, sorted(wanted) if wanted is not None else None)
        return _views.fetch_response(found)

    def group_state(self, group_id: str) -> str:
        return _views.group_state(self.groups.get(group_id), self.classic.describe(group_id))

    def describe_classic(self, group_id: str) -> ClassicDescribedGroup:
        """A group as Kafka's DescribeGroups shows it (minilog's own groups included)."""
        return _views.describe_classic(group_id, group=self.groups.get(group_id),
                                       classic=self.classic.describe(group_id), store=self.store)

    def list_groups(self, states: Iterable[str]) -> list[ListedGroup]:
        wanted = {s.lower() for s in states}
        names = set(self.groups) | self.store.groups() | set(self.classic.groups)
        out = [ListedGroup(g, "consumer", self.group_state(g)) for g in sorted(names)]
        if wanted:
            out = [e for e in out if e.group_state in wanted]
        return out

    async def delete_group(self, group_id: str) -> ErrorCode:
        try:
            self._check_loaded(group_id)
        except GroupError as exc:
            return exc.code
        group = self.groups.get(group_id)
        if group is None and group_id not in self.store.groups() and not self.classic.is_classic(group_id):
            return ErrorCode.GROUP_ID_NOT_FOUND
        if (group is not None and group.members) or self.classic.delete(group_id) != ErrorCode.NONE:
            return ErrorCode.NON_EMPTY_GROUP
        try:
            await self._append(group_id, encode_group_tombstone(group_id, self._wall_ms()))
        except GroupError as exc:
            return exc.code
        if group is not None:
            group.delete()
        self.groups.pop(group_id, None)
        log.info("group %s deleted", logsafe(group_id))
        return ErrorCode.NONE

    def statistics(self) -> CoordinatorStatistics:
        return CoordinatorStatistics(
            groups=len(self.groups),
            members=sum(len(g.members) for g in self.groups.values()),
            groups_with_offsets=len(self.store.offsets),
            records_loaded=self.records_loaded,
            partitions_loaded=len(self.loaded))

