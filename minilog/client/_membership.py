"""GroupMembership: the consumer's side of a consumer group (KIP-848 protocol).

Rules:
- Runs on the consumer's trio thread (heartbeat and auto-commit tasks in the
  consumer's nursery); touches the consumer only through `GroupHooks`.
- A partition is given up only after the caller has finished with it: the
  revoke step runs on the caller's side at its next poll() (before that
  poll takes records), then the positions of what poll() returned so far
  are committed (auto-commit), and only then does the next heartbeat tell
  the coordinator the partition is free.
- At-least-once: auto-commit commits the positions as of the *previous*
  poll() (a caller that polls again has processed what the last poll
  returned), so a crash redelivers at most what was returned since the last
  commit and never skips a record.

Theory of operation:
- `subscribe` starts the heartbeat loop. Joining is a heartbeat with member
  epoch 0 and the subscription; the response carries the member id, its
  epoch and its assignment. Every later heartbeat reports the partitions
  owned now; the coordinator answers with the new assignment only when it
  changed. Partitions in the new assignment but not owned are assigned to
  the consumer at once (positions come from the committed offsets, else
  auto_offset_reset) and `on_assign` runs at the next poll(); partitions
  owned but missing from it are revoked as described above.
- FENCED_MEMBER_EPOCH / UNKNOWN_MEMBER_ID (session timeout, rebalance
  timeout, coordinator restart): every partition is lost at once, without a
  commit (its offsets may already be someone else's), `on_revoke` runs at
  the next poll, and the member rejoins with epoch 0.
- No poll() for `max_poll_interval_ms`: the member leaves the group (its
  partitions go to others) and rejoins at the next poll().
- `session_timeout_ms` travels in the heartbeat as an extra field the
  coordinator honours within group.min/max.session.timeout.ms.

Task-safety: `on_poll` is called on the caller's thread and only writes
plain attributes; everything else runs on the trio thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from minilog.errors import (
    BrokerError,
    BrokerUnavailableError,
    MinilogError,
    RequestTimeoutError,
    error_for_code,
)
from minilog.protocol import ApiKey, ErrorCode

from ._cluster import Cluster

__all__ = ["GroupMembership", "GroupHooks"]

log = logging.getLogger("minilog.consumer.group")

TopicPartition = tuple[str, int]
_LOST = (ErrorCode.FENCED_MEMBER_EPOCH, ErrorCode.UNKNOWN_MEMBER_ID)
_COORDINATOR_MOVED = (ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE,
                      ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
_FATAL = (ErrorCode.INVALID_SESSION_TIMEOUT, ErrorCode.UNSUPPORTED_ASSIGNOR,
          ErrorCode.GROUP_MAX_SIZE_REACHED, ErrorCode.INVALID_REQUEST)
_RETRY_S = 0.2
_ASSIGNOR_NAMES = {"uniform": "sticky", "cooperative-sticky": "sticky"}


def _raise(err: BaseException) -> None:
    raise err


def _tp_payload(tps) -> list[dict]:
    by_topic: dict[str, list[int]] = {}
    for t, p in tps:
        by_topic.setdefault(t, []).append(p)
    return [{"topic": t, "partitions": sorted(ps)} for t, ps in sorted(by_topic.items())]


def _tp_set(payload) -> set[TopicPartition]:
    return {(e["topic"], p) for e in payload for p in e["partitions"]}


class GroupMembership:
    """See the module docstring. Created by AsyncConsumer on first group use."""

    def __init__(self, hooks: Any, config: Any) -> None:
        self._hooks = hooks
        self._config = config
        self.group_id: str = config.group_id
        self.subscribed = False
        self.member_id = ""
        self.member_epoch = 0
        self._topics: list[str] = []
        self._send_subscription = False
        self._on_assign: Callable | None = None
        self._on_revoke: Callable | None = None
        self._owned: set[TopicPartition] = set()
        self._revoking: set[TopicPartition] = set()
        self._coordinator: int | None = None
        self._conn = None                  # our own connection to the coordinator
        self._wake = trio.Event()
        self._started = False
        self._closing = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._polls = 0                    # written on the caller's thread
        self._poll_seen = (0, 0.0)         # (polls, trio time when that count was first seen)
        self._poll_expired = False
        self._last_polled: dict[TopicPartition, int] = {}
        self._safe_positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._generation = 0               # bumped when every partition is lost
        self._announced: set[TopicPartition] = set()   # on_assign ran for these (caller's thread)
        self.stats = {"joins": 0, "fenced": 0, "revoked": 0, "assigned": 0, "commits": 0,
                      "commit_errors": 0, "poll_timeouts": 0}

    # ------------------------------------------------------------------ API (trio thread)

    async def subscribe(self, topics: list[str], on_assign=None, on_revoke=None) -> None:
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise MinilogError("subscribe() needs a non-empty list of topic names")
        self._topics = sorted(set(topics))
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._send_subscription = True
        self.subscribed = True
        if not self._started:
            self._started = True
            self._token = trio.lowlevel.current_trio_token()
            self._poll_seen = (self._polls, trio.current_time())
            self._hooks.nursery.start_soon(self._heartbeat_loop)
            if self._config.enable_auto_commit:
                self._hooks.nursery.start_soon(self._auto_commit_loop)
        self._wake.set()

    async def unsubscribe(self) -> None:
        await self._leave()
        self.subscribed = False

    async def close(self) -> None:
        self._closing = True
        try:
            await self._leave()
        finally:
            await self._drop_conn()

    async def commit(self, offsets: dict | None = None, asynchronous: bool = False) -> None:
        """Commit `offsets` ({(topic, partition): offset}) or the current positions.

        A synchronous commit retries while the coordinator moves (its broker died,
        NOT_COORDINATOR, a lost connection), up to request_timeout_ms, as Kafka's
        commitSync does; other errors are raised at once.
        """
        if offsets is None:
            offsets = self._hooks.positions()
        offsets = {(t, p): o for (t, p), o in offsets.items()}
        if asynchronous:
            self._hooks.nursery.start_soon(self._commit_quietly, offsets)
            return
        await self._while_coordinator_moves(lambda: self._commit(offsets))

    async def committed(self, partitions: list[TopicPartition]) -> dict:
        found = await self._while_coordinator_moves(lambda: self._fetch_offsets(partitions, fenced=False))
        return {tp: found.get(tp) for tp in partitions}

    async def _while_coordinator_moves(self, call):
        """`await call()`, again after a backoff while the coordinator is unreachable or moved."""
        deadline = trio.current_time() + self._config.request_timeout_ms / 1000
        backoff = _RETRY_S
        while True:
            try:
                return await call()
            except (BrokerUnavailableError, RequestTimeoutError) as exc:
                err: MinilogError = exc
            except BrokerError as exc:
                if exc.code not in _COORDINATOR_MOVED:
                    raise
                err = exc
            await self._drop_conn()     # find the coordinator again
            if trio.current_time() + backoff > deadline:
                raise err
            log.debug("group %s: coordinator unavailable (%s); retrying", self.group_id, err)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def committed_for_reset(self, partitions: list[TopicPartition]) -> dict:
        """Committed offsets to start newly assigned partitions from (fenced by epoch).

        Raises BrokerError (the fetcher retries) while the member is fenced and
        still holds the partitions.
        """
        wanted = [tp for tp in partitions if tp in self._hooks.assigned()]
        if not wanted:
            return {}
        return await self._fetch_offsets(wanted, fenced=self.subscribed and self.member_epoch > 0)

    def on_poll(self) -> None:
        """Caller's thread, every poll(): the previous poll's records are processed."""
        self._polls += 1
        self._safe_positions = self._last_polled
        self._last_polled = self._hooks.positions()

    # ------------------------------------------------------------------ coordinator I/O

    async def _coordinator_conn(self):
        """A connection of our own to the coordinator.

        Own, not the fetcher's: the broker answers a connection's requests in
        order, so a heartbeat queued behind a long-poll fetch would wait up to
        fetch_max_wait_ms (Kafka's consumer also keeps a separate coordinator
        connection for this reason).
        """
        if self._conn is not None and self._conn.usable and self._coordinator is not None:
            return self._conn
        await self._drop_conn()
        resp = await self._hooks.cluster.request_any(
            ApiKey.FIND_COORDINATOR, {"key_type": 0, "keys": [self.group_id]})
        entry = resp.payload["coordinators"][0]
        if entry["error_code"]:
            raise error_for_code(entry["error_code"], entry.get("error_message"))
        conn = await self._hooks.cluster.open_connection(entry["host"], entry["port"],
                                                         entry["node_id"])
        self._conn = conn
        self._coordinator = entry["node_id"]
        return conn

    async def _drop_conn(self) -> None:
        conn, self._conn = self._conn, None
        self._coordinator = None
        if conn is not None:
            with trio.CancelScope(shield=True):
                try:
                    await conn.aclose()
                except Exception:
                    pass

    async def _request(self, api_key: ApiKey, payload: dict) -> dict:
        conn = await self._coordinator_conn()
        try:
            resp = await conn.request(api_key, payload)
        except (BrokerUnavailableError, RequestTimeoutError):
            await self._drop_conn()
            raise
        return resp.payload

    # ------------------------------------------------------------------ heartbeats

    async def _heartbeat_loop(self) -> None:
        while not self._closing:
            self._wake = trio.Event()
            try:
                interval_s = await self._heartbeat_once()
            except (BrokerUnavailableError, RequestTimeoutError, BrokerError) as exc:
                log.debug("group %s: heartbeat failed: %s", self.group_id, exc)
                self._coordinator = None
                interval_s = _RETRY_S
            if self.member_epoch > 0 and not self._poll_expired:   # wake for the poll deadline too
                _, since = self._poll_seen
                deadline_s = since + self._config.max_poll_interval_ms / 1000 - trio.current_time()
                interval_s = min(interval_s, max(deadline_s, 0.0) + 0.001)
            with trio.move_on_after(interval_s):
                await self._wake.wait()

    def _poll_overdue(self) -> bool:
        now = trio.current_time()
        polls, since = self._poll_seen
        if self._polls != polls:
            self._poll_seen = (self._polls, now)
            return False
        return (now - since) * 1000 > self._config.max_poll_interval_ms

    async def _heartbeat_once(self) -> float:
        if not self.subscribed or self._closing:
            return 3600.0
        overdue = self._poll_overdue()
        if self._poll_expired:
            if overdue:
                return _RETRY_S              # still no poll(): stay out of the group
            self._poll_expired = False        # polled again: rejoin
        elif overdue and self.member_epoch > 0:
            log.warning("group %s: no poll() for max_poll_interval_ms=%d; leaving the group",
                        self.group_id, self._config.max_poll_interval_ms)
            self.stats["poll_timeouts"] += 1
            self._poll_expired = True
            await self._send_leave()
            self._lose_all()
            return _RETRY_S
        joining = self.member_epoch == 0
        assignor = self._config.partition_assignment_strategy
        payload = {
            "group_id": self.group_id,
            "member_id": self.member_id,
            "member_epoch": self.member_epoch,
            "rebalance_timeout_ms": self._config.max_poll_interval_ms,
            "subscribed_topic_names": self._topics if joining or self._send_subscription else None,
            "server_assignor": _ASSIGNOR_NAMES.get(assignor, assignor) if joining else None,
            "topic_partitions": _tp_payload(self._owned),
            "client_id": self._config.client_id,
            "session_timeout_ms": self._config.session_timeout_ms,
        }
        resp = await self._request(ApiKey.CONSUMER_GROUP_HEARTBEAT, payload)
        code = resp["error_code"]
        if code == ErrorCode.NONE:
            if joining:
                self.stats["joins"] += 1
                log.info("group %s: joined as %s epoch %d", self.group_id, resp["member_id"],
                         resp["member_epoch"])
            self.member_id = resp["member_id"] or self.member_id
            self.member_epoch = resp["member_epoch"]
            self._send_subscription = False
            if resp["assignment"] is not None:
                self._reconcile(_tp_set(resp["assignment"]))
            return resp["heartbeat_interval_ms"] / 1000
        if code in _LOST:
            self.stats["fenced"] += 1
            log.warning("group %s: member %s lost its membership (%s); rejoining", self.group_id,
                        self.member_id, ErrorCode(code).name)
            self._lose_all()
            self.member_epoch = 0
            return 0.0
        if code in _COORDINATOR_MOVED:
            await self._drop_conn()
            return _RETRY_S
        err = error_for_code(code, resp.get("error_message"))
        if code in _FATAL:
            # Nothing a retry can fix: stop, and raise it from the caller's next poll().
            log.error("group %s: cannot join: %s", self.group_id, err)
            self.subscribed = False
            self._lose_all()
            self._hooks.call_on_caller(_raise, err)
            return 3600.0
        log.error("group %s: heartbeat refused: %s", self.group_id, err)
        return 1.0

    async def _send_leave(self) -> None:
        payload = {"group_id": self.group_id, "member_id": self.member_id, "member_epoch": -1,
                   "rebalance_timeout_ms": self._config.max_poll_interval_ms,
                   "subscribed_topic_names": None, "server_assignor": None,
                   "topic_partitions": None, "client_id": self._config.client_id,
                   "session_timeout_ms": self._config.session_timeout_ms}
        try:
            await self._request(ApiKey.CONSUMER_GROUP_HEARTBEAT, payload)
        except MinilogError as exc:
            log.debug("group %s: leave failed: %s", self.group_id, exc)
        self.member_epoch = 0

    async def _leave(self) -> None:
        """Commit (auto-commit), revoke everything, and leave the group."""
        if not self.subscribed or self.member_epoch <= 0:
            self._lose_all(call_back=False)
            return
        if self._config.enable_auto_commit and self._owned:
            owned = self._owned - self._revoking
            offsets = {tp: o for tp, o in self._hooks.positions().items() if tp in owned}
            await self._commit_quietly(offsets)
        owned_list = sorted(self._owned)
        self._hooks.revoke(owned_list)
        self._owned.clear()
        self._unannounce(owned_list)      # the caller is in close()/unsubscribe(): it is not polling
        await self._send_leave()

    # ------------------------------------------------------------------ reconciliation

    def _reconcile(self, target: set[TopicPartition]) -> None:
        revoke = self._owned - target - self._revoking
        if revoke:
            self._revoking |= revoke
            self._hooks.nursery.start_soon(self._revoke, sorted(revoke))
        added = target - self._owned
        if added:
            self._owned |= added
            self.stats["assigned"] += len(added)
            parts = sorted(added)
            self._hooks.assign(parts)
            log.info("group %s: assigned %s", self.group_id, parts)
            self._hooks.call_on_caller(self._announce, parts)

    async def _revoke(self, parts: list[TopicPartition]) -> None:
        """Give `parts` up at the caller's next poll, commit, then confirm."""
        done = trio.Event()
        box: dict = {}
        token = self._token
        assert token is not None
        generation = self._generation

        def on_caller() -> None:
            try:
                if generation != self._generation:
                    return                       # lost meanwhile; maybe reassigned since
                box["positions"] = self._hooks.revoke(parts)
                self._unannounce(parts)
            finally:
                token.run_sync_soon(done.set)

        self._hooks.call_on_caller(on_caller)
        await done.wait()
        if not self._revoking.issuperset(parts):
            return                               # lost meanwhile (fenced): nothing to commit
        positions = box.get("positions", {})
        if self._config.enable_auto_commit and positions:
            await self._commit_quietly(positions)
        self._revoking -= set(parts)
        self._owned -= set(parts)
        self.stats["revoked"] += len(parts)
        log.info("group %s: revoked %s", self.group_id, parts)
        self._wake.set()                         # confirm at once

    def _lose_all(self, call_back: bool = True) -> None:
        """Drop every partition without committing (membership lost)."""
        lost = sorted(self._owned)
        self._generation += 1
        self._owned.clear()
        self._revoking.clear()
        self._safe_positions, self._last_polled = {}, {}
        if not lost:
            return
        self._hooks.revoke(lost)
        if call_back:
            self._hooks.call_on_caller(self._unannounce, lost)

    def _announce(self, parts: list[TopicPartition]) -> None:
        """Caller's thread: the partitions are now the caller's; tell on_assign."""
        self._announced.update(parts)
        if self._on_assign is not None:
            self._call_user(self._on_assign, parts)

    def _unannounce(self, parts: list[TopicPartition]) -> None:
        """Caller's thread: on_revoke for the partitions whose on_assign ran."""
        told = [tp for tp in parts if tp in self._announced]
        self._announced.difference_update(parts)
        if told and self._on_revoke is not None:
            self._call_user(self._on_revoke, told)

    def _call_user(self, fn: Callable, parts: list[TopicPartition]) -> None:
        try:
            fn(parts)
        except Exception:
            log.exception("group %s: rebalance callback %r failed", self.group_id, fn)

    # ------------------------------------------------------------------ commits

    async def _auto_commit_loop(self) -> None:
        while not self._closing:
            await trio.sleep(self._config.auto_commit_interval_ms / 1000)
            if not self.subscribed or self.member_epoch <= 0:
                continue
            owned = self._owned - self._revoking
            offsets = {tp: o for tp, o in self._safe_positions.items()
                       if tp in owned and self._committed.get(tp) != o}
            if offsets:
                await self._commit_quietly(offsets)

    async def _commit_quietly(self, offsets: dict) -> None:
        try:
            await self._commit(offsets)
        except MinilogError as exc:
            log.warning("group %s: commit failed: %s", self.group_id, exc)

    async def _commit(self, offsets: dict) -> None:
        """Commit synchronously. Raises the first partition's BrokerError."""
        if not offsets:
            return
        member = self.subscribed and self.member_epoch > 0
        by_topic: dict[str, list[dict]] = {}
        for (t, p), o in sorted(offsets.items()):
            by_topic.setdefault(t, []).append({"partition": p, "committed_offset": o,
                                               "committed_leader_epoch": -1,
                                               "committed_metadata": None})
        payload = {"group_id": self.group_id, "member_id": self.member_id if member else "",
                   "member_epoch": self.member_epoch if member else -1,
                   "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]}
        try:
            resp = await self._request(ApiKey.OFFSET_COMMIT, payload)
        except MinilogError:
            self.stats["commit_errors"] += 1
            raise
        first = None
        for t in resp["topics"]:
            for q in t["partitions"]:
                tp = (t["topic"], q["partition"])
                if q["error_code"] == ErrorCode.NONE:
                    self._committed[tp] = offsets[tp]
                elif first is None:
                    first = q["error_code"]
        self.stats["commits"] += 1
        if first is not None:
            self.stats["commit_errors"] += 1
            if first in _COORDINATOR_MOVED:
                self._coordinator = None
            raise error_for_code(first)

    async def _fetch_offsets(self, partitions: list[TopicPartition], *, fenced: bool) -> dict:
        payload = {"group_id": self.group_id,
                   "member_id": self.member_id if fenced else None,
                   "member_epoch": self.member_epoch if fenced else -1,
                   "topics": _tp_payload(partitions)}
        resp = await self._request(ApiKey.OFFSET_FETCH, payload)
        if resp["error_code"]:
            if resp["error_code"] in _COORDINATOR_MOVED:
                self._coordinator = None
            raise error_for_code(resp["error_code"], resp.get("error_message"))
        out = {}
        for t in resp["topics"]:
            for q in t["partitions"]:
                if q["error_code"] == 0 and q["committed_offset"] >= 0:
                    out[(t["topic"], q["partition"])] = q["committed_offset"]
        return out


class GroupHooks:
    """The consumer's side of the group-membership interface (for `_membership.py`).

    `GroupMembership(hooks: GroupHooks, config: ConsumerConfig)` is created on
    the first subscribe()/commit()/committed() and must provide:

    * `async subscribe(topics, on_assign, on_revoke)`, `async unsubscribe()`
    * `async commit(offsets: dict | None, asynchronous: bool)` (None: positions)
    * `async committed(partitions: list[(topic, partition)]) -> dict`
    * `async committed_for_reset(partitions) -> dict` offsets to start from
      for newly assigned partitions without a position (None/-1: use
      auto_offset_reset)
    * `on_poll()` (sync, caller's thread: every poll; for max_poll_interval_ms
      and auto-commit timing)
    * `async close()` (leave the group; commits first if auto-commit is on)
    * attribute `subscribed: bool`

    It drives the consumer only through these hooks, all called on the trio
    thread.
    """

    def __init__(self, consumer: Any) -> None:
        self._c = consumer   # an AsyncConsumer (not imported: consumer.py imports this module)

    @property
    def cluster(self) -> Cluster:
        """Connections and metadata (`request(node, api, payload)`, `request_any`)."""
        return self._c._cluster

    @property
    def nursery(self) -> trio.Nursery:
        """Where the membership starts its tasks: the consumer's, cancelled when it closes."""
        assert self._c._nursery is not None, "the consumer is not running"
        return self._c._nursery

    def assigned(self) -> set[tuple[str, int]]:
        return set(self._c._states)

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        """Add partitions to the assignment (positions resolved by committed_for_reset)."""
        c = self._c
        keep = [(t, p) for (t, p) in c._states]
        c._set_assignment(keep + [tp for tp in partitions if tp not in c._states])

    def revoke(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Remove partitions; return their last positions (to commit)."""
        c = self._c
        gone = set(partitions)
        positions = {tp: st.position for tp, st in c._states.items()
                     if tp in gone and st.position is not None}
        c._states = {tp: st for tp, st in c._states.items() if tp not in gone}
        return positions

    def statistics(self) -> Any:
        """The consumer's statistics snapshot (any thread)."""
        return self._c.statistics()

    def positions(self) -> dict[tuple[str, int], int]:
        """Positions to commit: next offset per assigned partition."""
        return self._c.positions()

    def call_on_caller(self, fn, *args) -> None:
        """Run fn(*args) on the caller's thread at its next poll() (for on_assign/on_revoke)."""
        self._c._caller_calls.append((fn, args))
        self._c._signal_data()
