"""One consumer group: membership, target assignment and reconciliation (KIP-848).

Rules:
- Pure and synchronous: no trio, no I/O. Time is passed in (`now`, seconds
  on the caller's clock, e.g. `trio.current_time()`), so tests drive it.
- A partition has at most one owner at any moment. The coordinator's view of
  "owner" is `assigned | revoking` of a member; a partition enters another
  member's `assigned` only after it has left every other member's
  `assigned | revoking`, and it leaves `revoking` only when the owner's
  heartbeat reports it no longer owns it (or the owner is removed).
- Member epochs fence zombies: a heartbeat or commit carrying an epoch the
  member does not hold gets FENCED_MEMBER_EPOCH / STALE_MEMBER_EPOCH; a
  removed member gets UNKNOWN_MEMBER_ID and must rejoin with epoch 0.
- Every mutation of membership goes through `_add_member` / `_remove_member`
  / `_bump`; every change of ownership through `_grant` / `_release`.

Theory of operation (Kafka's KIP-848, simplified):

1. A change that affects the assignment (join, leave, session or rebalance
   timeout, subscription change, assignor change, a subscribed topic
   gaining partitions) bumps `group_epoch` and the state goes to ASSIGNING.
2. The target assignment is recomputed at once with the group's assignor,
   sticky to the previous target; `assignment_epoch = group_epoch`; the state
   goes to RECONCILING (or STABLE if nothing has to move).
3. Each member converges on its own heartbeats. Partitions it holds that
   are not in its target move from `assigned` to `revoking`; the response
   carries the new, smaller assignment; the member calls its revoke hook,
   commits, and reports the smaller set on its next heartbeat, which
   releases the partitions. A member with nothing left to revoke gets the
   assignment epoch as its member epoch, plus every target partition no one
   else holds. Target partitions still held by others arrive on later
   heartbeats (the response asks for a short heartbeat interval meanwhile).
4. When every member holds exactly its target at the assignment epoch the
   group is STABLE.

A member that does not confirm a revocation within its rebalance timeout
(`rebalance_timeout_ms`, the client's `max_poll_interval_ms`) is removed and
its partitions are freed, as is one that sends no heartbeat within its
session timeout.

The state machine is the table `TRANSITIONS`: (state, event) -> the states
the group may be in after the event. `_advance` computes the next state from
the facts and asserts that the table allows it.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from minilog.protocol import ErrorCode

from ._assignors import ASSIGNORS, DEFAULT_ASSIGNOR

__all__ = ["GroupState", "Event", "TRANSITIONS", "Member", "Group", "HeartbeatResult", "GroupError"]

TopicPartition = tuple[str, int]

HEARTBEAT_INTERVAL_FAST_MS = 100  # asked of members while they wait for partitions


class GroupState(str, enum.Enum):
    EMPTY = "empty"
    ASSIGNING = "assigning"
    RECONCILING = "reconciling"
    STABLE = "stable"
    DEAD = "dead"


class Event(str, enum.Enum):
    MEMBERSHIP_CHANGED = "membership-changed"   # join, leave, timeout, subscription, metadata
    TARGET_COMPUTED = "target-computed"
    MEMBER_PROGRESSED = "member-progressed"     # a heartbeat moved a member towards its target
    DELETED = "deleted"


S, E = GroupState, Event
TRANSITIONS: dict[tuple[GroupState, Event], frozenset[GroupState]] = {
    (S.EMPTY, E.MEMBERSHIP_CHANGED): frozenset({S.ASSIGNING, S.EMPTY}),
    (S.EMPTY, E.DELETED): frozenset({S.DEAD}),
    (S.ASSIGNING, E.MEMBERSHIP_CHANGED): frozenset({S.ASSIGNING, S.EMPTY}),
    (S.ASSIGNING, E.TARGET_COMPUTED): frozenset({S.RECONCILING, S.STABLE}),
    (S.RECONCILING, E.MEMBERSHIP_CHANGED): frozenset({S.ASSIGNING, S.EMPTY}),
    (S.RECONCILING, E.MEMBER_PROGRESSED): frozenset({S.RECONCILING, S.STABLE}),
    (S.STABLE, E.MEMBERSHIP_CHANGED): frozenset({S.ASSIGNING, S.EMPTY}),
    (S.STABLE, E.MEMBER_PROGRESSED): frozenset({S.STABLE, S.RECONCILING}),
}
del S, E


class GroupError(Exception):
    """A request the group refuses; `code` is the ErrorCode to answer with."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


@dataclass
class Member:
    member_id: str
    client_id: str
    client_host: str
    subscribed: frozenset[str]
    rebalance_timeout_ms: int
    session_timeout_ms: int
    session_deadline: float
    member_epoch: int = 0
    previous_member_epoch: int = -1
    assigned: set[TopicPartition] = field(default_factory=set)   # it may own these
    revoking: set[TopicPartition] = field(default_factory=set)   # it must give these up
    revocation_deadline: float | None = None
    last_sent: frozenset[TopicPartition] | None = None           # assignment in the last response


@dataclass(frozen=True)
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    assignment: list[dict] | None   # None = unchanged since the last response


def _as_tp_list(tps: Iterable[TopicPartition]) -> list[dict]:
    by_topic: dict[str, list[int]] = {}
    for t, p in tps:
        by_topic.setdefault(t, []).append(p)
    return [{"topic": t, "partitions": sorted(ps)} for t, ps in sorted(by_topic.items())]


def tp_set(topic_partitions: list[dict] | None) -> set[TopicPartition] | None:
    """The wire's [{"topic", "partitions"}] as a set of (topic, partition)."""
    if topic_partitions is None:
        return None
    return {(tp["topic"], p) for tp in topic_partitions for p in tp["partitions"]}


class Group:
    """The state of one group. Not task-safe by itself: the coordinator calls
    it from one trio task at a time (no awaits inside)."""

    def __init__(self, group_id: str, *, group_epoch: int = 0, assignor: str = DEFAULT_ASSIGNOR,
                 heartbeat_interval_ms: int = 1000) -> None:
        self.group_id = group_id
        self.group_epoch = group_epoch
        self.assignment_epoch = group_epoch
        self.assignor = assignor
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.members: dict[str, Member] = {}
        self.target: dict[str, set[TopicPartition]] = {}
        self.state = GroupState.EMPTY
        self.empty_since: float | None = None      # caller's clock; for offset expiry
        self._owner: dict[TopicPartition, str] = {}
        self._counts: dict[str, int] = {}           # partition counts the target used

    # ------------------------------------------------------------------ heartbeat

    def heartbeat(self, *, member_id: str, member_epoch: int, now: float,
                  partition_counts: Callable[[str], int], rebalance_timeout_ms: int,
                  session_timeout_ms: int, subscribed: list[str] | None = None,
                  assignor: str | None = None, owned: set[TopicPartition] | None = None,
                  client_id: str = "", client_host: str = "") -> HeartbeatResult:
        """Apply one CONSUMER_GROUP_HEARTBEAT.

        Args:
            partition_counts: topic -> current partition count (0 if unknown).
            owned: the partitions the member reports owning, None = unchanged.

        Returns:
            The member's id, its epoch and assignment (None when unchanged).

        Raises:
            GroupError: UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH, INVALID_REQUEST,
                UNSUPPORTED_ASSIGNOR. The group is unchanged in that case.
        """
        assert self.state is not GroupState.DEAD
        if assignor is not None and assignor not in ASSIGNORS:
            raise GroupError(ErrorCode.UNSUPPORTED_ASSIGNOR, f"unknown assignor {assignor!r}")
        if member_epoch == -1:
            if member_id in self.members:
                self._remove_member(member_id, now)
            return HeartbeatResult(member_id, -1, self.heartbeat_interval_ms, None)
        changed = False
        if member_epoch == 0:
            if subscribed is None:
                raise GroupError(ErrorCode.INVALID_REQUEST, "a joining member must subscribe")
            if member_id in self.members:   # rejoin after losing its state: start afresh
                self._remove_member(member_id, now, recompute=False)
            member_id = member_id or uuid.uuid4().hex
            self._add_member(Member(
                member_id=member_id, client_id=client_id, client_host=client_host,
                subscribed=frozenset(subscribed), rebalance_timeout_ms=rebalance_timeout_ms,
                session_timeout_ms=session_timeout_ms,
                session_deadline=now + session_timeout_ms / 1000))
            changed = True
            owned = set()
        else:
            member = self.members.get(member_id)
            if member is None:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
            if member_epoch not in (member.member_epoch, member.previous_member_epoch):
                raise GroupError(ErrorCode.FENCED_MEMBER_EPOCH,
                                 f"epoch {member_epoch}, member holds {member.member_epoch}")
            member.session_deadline = now + session_timeout_ms / 1000
            member.session_timeout_ms = session_timeout_ms
            member.rebalance_timeout_ms = rebalance_timeout_ms
            if subscribed is not None and frozenset(subscribed) != member.subscribed:
                member.subscribed = frozenset(subscribed)
                changed = True
        if assignor is not None and assignor != self.assignor:
            self.assignor = assignor
            changed = True
        counts = self._subscribed_counts(partition_counts)
        if counts != self._counts:
            changed = True
        if changed:
            self._bump(now, counts)
        member = self.members[member_id]
        self._reconcile(member, owned, now)
        assignment = frozenset(member.assigned)
        send = None if assignment == member.last_sent else _as_tp_list(assignment)
        member.last_sent = assignment
        waiting = member.revoking or self.target.get(member_id, set()) != member.assigned
        interval = min(self.heartbeat_interval_ms, HEARTBEAT_INTERVAL_FAST_MS) if waiting \
            else self.heartbeat_interval_ms
        return HeartbeatResult(member_id, member.member_epoch, interval, send)

    def _subscribed_counts(self, partition_counts: Callable[[str], int]) -> dict[str, int]:
        topics = set().union(*(m.subscribed for m in self.members.values())) if self.members \
            else set()
        return {t: partition_counts(t) for t in sorted(topics)}

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """The earliest session or revocation deadline, or None without members."""
        deadlines = [m.session_deadline for m in self.members.values()]
        deadlines += [m.revocation_deadline for m in self.members.values()
                      if m.revocation_deadline is not None]
        return min(deadlines, default=None)

    def expire(self, now: float,
               partition_counts: Callable[[str], int] | None = None) -> list[tuple[str, str]]:
        """Remove members whose session or revocation deadline has passed.

        Returns:
            [(member_id, reason)] for the members removed.
        """
        removed = []
        for m in list(self.members.values()):
            if now >= m.session_deadline:
                removed.append((m.member_id, "session timeout"))
            elif m.revocation_deadline is not None and now >= m.revocation_deadline:
                removed.append((m.member_id, "rebalance timeout"))
        for member_id, _ in removed:
            self._remove_member(member_id, now, partition_counts=partition_counts)
        return removed

    # ------------------------------------------------------------------ commits

    def check_member_epoch(self, member_id: str | None, member_epoch: int) -> None:
        """Raise GroupError unless a commit (or fetch) with this identity is allowed.

        member_epoch -1 means "outside group membership" (admin tools, manual
        offset management): allowed only while the group has no members.
        """
        if member_epoch < 0:
            if self.members:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID,
                                 "the group has active members; commit as a member")
            return
        member = self.members.get(member_id or "")
        if member is None:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID)
        if member_epoch > member.member_epoch:
            raise GroupError(ErrorCode.FENCED_MEMBER_EPOCH)
        if member_epoch not in (member.member_epoch, member.previous_member_epoch):
            raise GroupError(ErrorCode.STALE_MEMBER_EPOCH)

    # ------------------------------------------------------------------ mutations

    def delete(self) -> None:
        if self.members:
            raise GroupError(ErrorCode.NON_EMPTY_GROUP)
        self._advance(Event.DELETED)

    def _add_member(self, member: Member) -> None:
        self.members[member.member_id] = member
        self.empty_since = None

    def _remove_member(self, member_id: str, now: float, *, recompute: bool = True,
                       partition_counts: Callable[[str], int] | None = None) -> None:
        member = self.members.pop(member_id)
        for tp in member.assigned | member.revoking:
            self._release(tp, member_id)
        self.target.pop(member_id, None)
        if not self.members:
            self.empty_since = now
        if recompute:
            counts = self._subscribed_counts(partition_counts) if partition_counts \
                else {t: c for t, c in self._counts.items()
                      if any(t in m.subscribed for m in self.members.values())}
            self._bump(now, counts)

    def _bump(self, now: float, counts: dict[str, int]) -> None:
        self.group_epoch += 1
        self._counts = counts
        self._advance(Event.MEMBERSHIP_CHANGED)
        if not self.members:
            self.target = {}
            return
        subs = {m.member_id: m.subscribed for m in self.members.values()}
        previous = {m: set(self.target.get(m, ())) for m in subs}
        self.target = ASSIGNORS[self.assignor](subs, counts, previous)
        self.assignment_epoch = self.group_epoch
        self._advance(Event.TARGET_COMPUTED)

    def _reconcile(self, member: Member, owned: set[TopicPartition] | None, now: float) -> None:
        if owned is not None:
            for tp in member.revoking - owned:
                member.revoking.discard(tp)
                self._release(tp, member.member_id)
        target = self.target.get(member.member_id, set())
        back = member.revoking & target      # revoked, then given back before it let go
        member.revoking -= back
        member.assigned |= back
        to_revoke = member.assigned - target
        if to_revoke:
            member.assigned -= to_revoke
            member.revoking |= to_revoke
        if member.revoking:
            if member.revocation_deadline is None:
                member.revocation_deadline = now + member.rebalance_timeout_ms / 1000
        else:
            member.revocation_deadline = None
            for tp in sorted(target - member.assigned):
                if tp not in self._owner:
                    self._grant(tp, member)
            if member.member_epoch != self.assignment_epoch:
                member.previous_member_epoch = member.member_epoch
                member.member_epoch = self.assignment_epoch
        self._advance(Event.MEMBER_PROGRESSED)

    def _grant(self, tp: TopicPartition, member: Member) -> None:
        assert tp not in self._owner, f"{tp} owned by {self._owner[tp]}"
        self._owner[tp] = member.member_id
        member.assigned.add(tp)

    def _release(self, tp: TopicPartition, member_id: str) -> None:
        assert self._owner.get(tp) == member_id, (tp, member_id, self._owner.get(tp))
        del self._owner[tp]

    # ------------------------------------------------------------------ state

    def _facts_state(self) -> GroupState:
        if not self.members:
            return GroupState.EMPTY
        if self.assignment_epoch < self.group_epoch:
            return GroupState.ASSIGNING
        for m in self.members.values():
            if (m.member_epoch != self.assignment_epoch or m.revoking
                    or m.assigned != self.target.get(m.member_id, set())):
                return GroupState.RECONCILING
        return GroupState.STABLE

    def _advance(self, event: Event) -> None:
        allowed = TRANSITIONS.get((self.state, event))
        assert allowed is not None, f"{event.value} not allowed in state {self.state.value}"
        new = GroupState.DEAD if event is Event.DELETED else self._facts_state()
        assert new in allowed, f"{self.state.value} --{event.value}--> {new.value} not in table"
        self.state = new

    def owners(self) -> dict[TopicPartition, str]:
        """(topic, partition) -> member id, for every partition someone holds."""
        return dict(self._owner)

    def describe(self) -> dict:
        """The CONSUMER_GROUP_DESCRIBE entry for this group (without error fields)."""
        return {
            "group_id": self.group_id,
            "group_state": self.state.value,
            "group_epoch": self.group_epoch,
            "assignment_epoch": self.assignment_epoch,
            "assignor_name": self.assignor,
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "member_epoch": m.member_epoch,
                    "subscribed_topic_names": sorted(m.subscribed),
                    "assignment": _as_tp_list(m.assigned | m.revoking),
                }
                for m in sorted(self.members.values(), key=lambda m: m.member_id)
            ],
        }


def state_diagram() -> str:
    """The transition table as text, for docs/consumer-groups.md."""
    lines = []
    for (state, event), targets in TRANSITIONS.items():
        lines.append(f"{state.value:12} --{event.value}--> {', '.join(sorted(t.value for t in targets))}")
    return "\n".join(lines)
