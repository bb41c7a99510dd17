"""Classic (JoinGroup/SyncGroup) groups beside minilog's server-assigned groups.

Rules:
- A group id is one kind or the other. `ClassicGroups` owns the classic
  ones; the group coordinator asks `is_classic(group_id)` before letting a
  native heartbeat in, and this module asks `is_native(group_id)` (a
  callable the coordinator passes in) before letting a JoinGroup in. Mixing
  is refused with INCONSISTENT_GROUP_PROTOCOL and a message naming the kind.
- The pure state machine is `_classic.ClassicGroup`; this module adds trio's
  clock and the waiting: a JoinGroup is answered when the round completes
  (every member rejoined, or the rebalance timeout passed), a follower's
  SyncGroup when the leader's SyncGroup arrives (or its session lapses).
- Session expiry is checked when any request touches a group, and by
  `expire_all`, which the coordinator's timer may call; a group whose
  members all vanished is cleaned up by the next request that looks at it.
- Committed offsets stay in the coordinator's offset store (the same
  `__consumer_offsets` records as native groups); `check_commit` only
  applies Kafka's generation fencing.

Task-safety: everything runs on the broker's trio thread; state changes
happen between awaits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from minilog.protocol import ErrorCode

from ._classic import INCONSISTENT_GROUP_PROTOCOL, ClassicGroup, ClassicState, JoinResult
from ._group import GroupError

__all__ = ["ClassicGroups", "ClassicLimits", "JoinResult"]

log = logging.getLogger("minilog.broker.groups.classic")


@dataclass(frozen=True)
class ClassicLimits:
    session_timeout_min_ms: int = 6_000        # group.min.session.timeout.ms
    session_timeout_max_ms: int = 1_800_000    # group.max.session.timeout.ms
    group_max_size: int = 2**31 - 1            # group.max.size


class _Round:
    """Waiters of one group: the current join round's answers and a sync wake-up."""

    def __init__(self) -> None:
        self.joined = trio.Event()
        self.results: dict[str, JoinResult] = {}
        self.synced = trio.Event()


class ClassicGroups:
    """The classic groups of one coordinator.

    Args:
        limits: session timeout bounds and group size.
        is_native: tells whether a group id is a minilog (server-assigned) group.
    """

    def __init__(self, limits: ClassicLimits, is_native: Callable[[str], bool]) -> None:
        self.limits = limits
        self.groups: dict[str, ClassicGroup] = {}
        self._rounds: dict[str, _Round] = {}
        self._is_native = is_native

    def is_classic(self, group_id: str) -> bool:
        return group_id in self.groups

    def _round(self, group_id: str) -> _Round:
        r = self._rounds.get(group_id)
        if r is None:
            r = self._rounds[group_id] = _Round()
        return r

    def _finish_join(self, group: ClassicGroup, now: float) -> None:
        r = self._round(group.group_id)
        r.results = group.complete_join(now)
        r.joined.set()
        self._rounds[group.group_id] = _Round()
        r.synced.set()            # followers of the old generation wake up and see it changed
        log.info("group %s: generation %d, %d members, protocol %r, leader %s", group.group_id,
                 group.generation_id, len(group.members), group.protocol_name, group.leader_id)

    def _settle(self, group: ClassicGroup, now: float) -> None:
        """After any membership change: complete the round if nobody else is awaited."""
        if group.join_ready():
            self._finish_join(group, now)
        elif group.state is not ClassicState.COMPLETING_REBALANCE:
            self._round(group.group_id).synced.set()

    def expire(self, group_id: str, now: float) -> None:
        group = self.groups.get(group_id)
        if group is None:
            return
        for member_id in group.expire(now):
            log.info("group %s: member %s removed (session timeout)", group_id, member_id)
        if group.rebalance_deadline is not None and group.rebalance_deadline <= now and \
                group.state is ClassicState.PREPARING_REBALANCE:
            self._finish_join(group, now)
        else:
            self._settle(group, now)

    def expire_all(self, now: float) -> None:
        for group_id in list(self.groups):
            self.expire(group_id, now)

    def next_deadline(self) -> float | None:
        return min((d for g in self.groups.values() if (d := g.next_deadline()) is not None), default=None)

    # ------------------------------------------------------------------ requests

    async def join(self, *, group_id: str, member_id: str, client_id: str, client_host: str,
                   session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                   protocols: Sequence[tuple[str, bytes]]) -> JoinResult:
        """JoinGroup: waits until the round completes. Raises GroupError."""
        if not group_id:
            raise GroupError(ErrorCode.INVALID_REQUEST, "empty group id")
        if self._is_native(group_id):
            raise GroupError(INCONSISTENT_GROUP_PROTOCOL,
                             f"group {group_id!r} is a minilog (server-assigned) consumer group; "
                             "a Kafka classic-protocol member cannot join it (use another group id)")
        lim = self.limits
        if not lim.session_timeout_min_ms <= session_timeout_ms <= lim.session_timeout_max_ms:
            raise GroupError(ErrorCode.INVALID_SESSION_TIMEOUT,
                             f"session_timeout_ms must be within [{lim.session_timeout_min_ms}, "
                             f"{lim.session_timeout_max_ms}] (group.min/max.session.timeout.ms)")
        now = trio.current_time()
        group = self.groups.get(group_id)
        if group is None:
            group = self.groups[group_id] = ClassicGroup(group_id, protocol_type)
        self.expire(group_id, now)
        if not member_id and len(group.members) >= lim.group_max_size:
            raise GroupError(ErrorCode.GROUP_MAX_SIZE_REACHED)
        rebalance_ms = rebalance_timeout_ms if rebalance_timeout_ms > 0 else session_timeout_ms
        member_id = group.join(member_id=member_id, client_id=client_id, client_host=client_host,
                               session_timeout_ms=session_timeout_ms, rebalance_timeout_ms=rebalance_ms,
                               protocol_type=protocol_type, protocols=protocols, now=now)
        r = self._round(group_id)
        self._settle(group, now)
        while not r.joined.is_set():
            deadline = group.rebalance_deadline
            with trio.move_on_at(deadline if deadline is not None else trio.current_time()):
                await r.joined.wait()
            if not r.joined.is_set() and group.state is ClassicState.PREPARING_REBALANCE:
                self._finish_join(group, trio.current_time())
        result = r.results.get(member_id)
        if result is None:        # removed while waiting (left, or replaced by a newer join)
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} left the group")
        return result

    async def sync(self, *, group_id: str, member_id: str, generation_id: int,
                   assignments: Sequence[tuple[str, bytes]]) -> bytes:
        """SyncGroup: the member's assignment; followers wait for the leader. Raises GroupError."""
        group = self._group(group_id)
        now = trio.current_time()
        self.expire(group_id, now)
        r = self._round(group_id)
        assignment = group.sync(member_id=member_id, generation_id=generation_id,
                                assignments=assignments, now=now)
        if assignment is not None:
            r.synced.set()
            return assignment
        member = group.members[member_id]
        deadline = now + member.session_timeout_ms / 1000
        while True:
            with trio.move_on_at(deadline):
                await r.synced.wait()
            assignment = group.assignment_of(member_id, generation_id)
            if assignment is not None:
                return assignment
            if trio.current_time() >= deadline:
                # The leader never synced: start over without it, as its session has lapsed too.
                leader = group.leader_id
                if leader and leader in group.members and leader != member_id:
                    group.leave(member_id=leader, now=trio.current_time())
                    self._settle(group, trio.current_time())
                raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS, "the leader did not send the assignment")
            r = self._round(group_id)

    def heartbeat(self, *, group_id: str, member_id: str, generation_id: int) -> None:
        group = self._group(group_id)
        now = trio.current_time()
        self.expire(group_id, now)
        group.heartbeat(member_id=member_id, generation_id=generation_id, now=now)

    def leave(self, *, group_id: str, member_id: str) -> None:
        group = self._group(group_id)
        now = trio.current_time()
        group.leave(member_id=member_id, now=now)
        log.info("group %s: member %s left", group_id, member_id)
        self._settle(group, now)

    def check_commit(self, group_id: str, member_id: str, generation_id: int) -> None:
        group = self.groups.get(group_id)
        if group is None:
            if generation_id >= 0 or member_id:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"group {group_id!r} has no member {member_id!r}")
            return
        self.expire(group_id, trio.current_time())
        group.check_commit(member_id, generation_id)

    def describe(self, group_id: str) -> dict[str, Any] | None:
        group = self.groups.get(group_id)
        if group is None:
            return None
        self.expire(group_id, trio.current_time())
        return group.describe()

    def delete(self, group_id: str) -> ErrorCode:
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.NONE
        if group.members:
            return ErrorCode.NON_EMPTY_GROUP
        del self.groups[group_id]
        self._rounds.pop(group_id, None)
        return ErrorCode.NONE

    def _group(self, group_id: str) -> ClassicGroup:
        group = self.groups.get(group_id)
        if group is None:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"group {group_id!r} has no members")
        return group
