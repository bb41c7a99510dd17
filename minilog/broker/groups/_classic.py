"""One classic consumer group: Kafka's JoinGroup/SyncGroup protocol with client-side assignment.

Kafka clients (kafka-python, aiokafka, librdkafka, the Java client before
KIP-848) run groups this way: every member sends JoinGroup with its
protocols (assignor names with opaque metadata); when every known member
has (re)joined, or the rebalance timeout has passed, the coordinator bumps
the generation, picks one protocol all members support and a leader, and
answers every join; the leader computes the assignment and sends it in its
SyncGroup; every member's SyncGroup returns its own (opaque) assignment.
Heartbeats keep a member alive and tell it when a rebalance has started.

Rules:
- Pure and synchronous: no trio, no I/O. Time is passed in (`now`, seconds
  on the caller's clock), so tests drive it. The coordinator adds the
  waiting (`minilog.broker.groups.classic`).
- The generation fences zombies: a SyncGroup, Heartbeat or OffsetCommit
  carrying another generation gets ILLEGAL_GENERATION; a removed member
  gets UNKNOWN_MEMBER_ID and must join again with an empty member id.
- Membership changes only through `_add_member` / `_remove_member`, state
  changes only through `_advance`, which asserts the table `TRANSITIONS`.
- A member's session deadline does not run while it waits for its join or
  sync answer (Kafka does the same); the rebalance deadline bounds that.

States, as Kafka names them: Empty -> PreparingRebalance (a member joins,
leaves or times out) -> CompletingRebalance (the join round completed;
waiting for the leader's SyncGroup) -> Stable (assignments handed out).
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from minilog.protocol import ErrorCode

from ._group import GroupError

__all__ = ["ClassicState", "ClassicMember", "ClassicGroup", "JoinResult", "TRANSITIONS",
           "INCONSISTENT_GROUP_PROTOCOL"]

INCONSISTENT_GROUP_PROTOCOL = ErrorCode.INCONSISTENT_GROUP_PROTOCOL   # no protocol in common, or the wrong kind


class ClassicState(str, enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


S = ClassicState
TRANSITIONS: dict[ClassicState, frozenset[ClassicState]] = {
    S.EMPTY: frozenset({S.PREPARING_REBALANCE, S.DEAD}),
    S.PREPARING_REBALANCE: frozenset({S.COMPLETING_REBALANCE, S.EMPTY, S.DEAD}),
    S.COMPLETING_REBALANCE: frozenset({S.PREPARING_REBALANCE, S.STABLE, S.DEAD}),
    S.STABLE: frozenset({S.PREPARING_REBALANCE, S.DEAD}),
    S.DEAD: frozenset(),
}


@dataclass
class ClassicMember:
    member_id: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]          # (assignor name, opaque metadata), by preference
    assignment: bytes = b""
    deadline: float = 0.0                       # session deadline (seconds, caller's clock)
    awaiting_join: bool = False
    awaiting_sync: bool = False

    def metadata_for(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""


@dataclass(frozen=True)
class JoinResult:
    error_code: int
    generation_id: int
    protocol_name: str
    leader: str
    member_id: str
    members: list[tuple[str, bytes]] = field(default_factory=list)   # the leader's view only


class ClassicGroup:
    """A classic group's membership, generation and assignments. Not thread-safe."""

    def __init__(self, group_id: str, protocol_type: str, *, generation_id: int = 0) -> None:
        self.group_id = group_id
        self.protocol_type = protocol_type
        self.state = ClassicState.EMPTY
        self.generation_id = generation_id
        self.protocol_name = ""
        self.leader_id = ""
        self.members: dict[str, ClassicMember] = {}
        self.rebalance_deadline: float | None = None      # set while PREPARING_REBALANCE
        self.empty_since: float | None = None

    # ------------------------------------------------------------------ requests

    def join(self, *, member_id: str, client_id: str, client_host: str, session_timeout_ms: int,
             rebalance_timeout_ms: int, protocol_type: str, protocols: Sequence[tuple[str, bytes]],
             now: float) -> str:
        """Register a (re)join; returns the member id. The answer comes from `complete_join`.

        Raises:
            GroupError: UNKNOWN_MEMBER_ID, INCONSISTENT_GROUP_PROTOCOL.
        """
        if not protocols:
            raise GroupError(INCONSISTENT_GROUP_PROTOCOL, "JoinGroup lists no protocols")
        if self.members and (protocol_type != self.protocol_type
                             or not self._candidates() & {name for name, _ in protocols}):
            raise GroupError(INCONSISTENT_GROUP_PROTOCOL,
                             f"group {self.group_id!r}: protocol type {protocol_type!r} or assignors "
                             f"{[n for n, _ in protocols]} have nothing in common with the members'")
        if member_id and member_id not in self.members:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in the group")
        if not self.members:
            self.protocol_type = protocol_type
        if not member_id:
            member_id = f"{client_id or 'consumer'}-{uuid.uuid4()}"
            self._add_member(ClassicMember(member_id, client_id, client_host, session_timeout_ms,
                                           rebalance_timeout_ms, list(protocols)))
        member = self.members[member_id]
        member.protocols = list(protocols)
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.awaiting_join = True
        member.deadline = now + session_timeout_ms / 1000
        if self.state is not S.PREPARING_REBALANCE:
            self._prepare_rebalance(now)
        return member_id

    def join_ready(self) -> bool:
        """Every member has rejoined: the round can complete now."""
        return self.state is S.PREPARING_REBALANCE and all(m.awaiting_join for m in self.members.values())

    def complete_join(self, now: float) -> dict[str, JoinResult]:
        """End the join round: drop members that did not rejoin, bump the generation, pick the
        protocol and the leader. Returns the answer for each member that rejoined."""
        assert self.state is S.PREPARING_REBALANCE, self.state
        for member in [m for m in self.members.values() if not m.awaiting_join]:
            self._remove_member(member.member_id)
        self.rebalance_deadline = None
        self.generation_id += 1
        if not self.members:
            self.protocol_name, self.leader_id = "", ""
            self._advance(S.EMPTY)
            self.empty_since = now
            return {}
        self.protocol_name = self._select_protocol()
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        self._advance(S.COMPLETING_REBALANCE)
        everyone = [(m.member_id, m.metadata_for(self.protocol_name)) for m in self.members.values()]
        results = {}
        for member in self.members.values():
            member.awaiting_join = False
            member.awaiting_sync = True
            member.assignment = b""
            member.deadline = now + member.session_timeout_ms / 1000
            results[member.member_id] = JoinResult(
                0, self.generation_id, self.protocol_name, self.leader_id, member.member_id,
                everyone if member.member_id == self.leader_id else [])
        return results

    def sync(self, *, member_id: str, generation_id: int, assignments: Sequence[tuple[str, bytes]],
             now: float) -> bytes | None:
        """The member's assignment, or None while the leader has not synced yet.

        Raises:
            GroupError: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS.
        """
        member = self._check(member_id, generation_id)
        if self.state is S.PREPARING_REBALANCE:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS)
        member.deadline = now + member.session_timeout_ms / 1000
        if self.state is S.STABLE:
            member.awaiting_sync = False
            return member.assignment
        assert self.state is S.COMPLETING_REBALANCE, self.state
        if member_id == self.leader_id:
            given = dict(assignments)
            for m in self.members.values():
                m.assignment = bytes(given.get(m.member_id, b""))
                m.awaiting_sync = False
            self._advance(S.STABLE)
            return member.assignment
        return None

    def assignment_of(self, member_id: str, generation_id: int) -> bytes | None:
        """For a waiting follower: its assignment once the group is stable in its generation."""
        member = self.members.get(member_id)
        if member is None or generation_id != self.generation_id:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS)
        if self.state is S.STABLE:
            member.awaiting_sync = False
            return member.assignment
        if self.state is S.PREPARING_REBALANCE:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS)
        return None

    def heartbeat(self, *, member_id: str, generation_id: int, now: float) -> None:
        """Raises GroupError: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS."""
        member = self._check(member_id, generation_id)
        member.deadline = now + member.session_timeout_ms / 1000
        if self.state is S.PREPARING_REBALANCE:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS)

    def leave(self, *, member_id: str, now: float) -> None:
        if member_id not in self.members:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in the group")
        self._remove_member(member_id)
        self._membership_changed(now)

    def check_commit(self, member_id: str, generation_id: int) -> None:
        """Kafka's rules for an OffsetCommit to a classic group.

        generation -1 with no member id is a "simple" commit, allowed while the
        group has no members. Raises GroupError.
        """
        if generation_id < 0 and not member_id:
            if self.members:
                raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID,
                                 f"group {self.group_id!r} has members; commit with the member id and generation")
            return
        self._check(member_id, generation_id)
        if self.state is S.COMPLETING_REBALANCE:
            raise GroupError(ErrorCode.REBALANCE_IN_PROGRESS)

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        deadlines = [m.deadline for m in self.members.values() if not (m.awaiting_join or m.awaiting_sync)]
        if self.rebalance_deadline is not None:
            deadlines.append(self.rebalance_deadline)
        return min(deadlines, default=None)

    def expire(self, now: float) -> list[str]:
        """Remove members whose session lapsed (not those waiting for an answer)."""
        gone = [m.member_id for m in self.members.values()
                if not (m.awaiting_join or m.awaiting_sync) and m.deadline <= now]
        for member_id in gone:
            self._remove_member(member_id)
        if gone:
            self._membership_changed(now)
        return gone

    def describe(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id, "group_state": self.state.value, "protocol_type": self.protocol_type,
            "protocol_data": self.protocol_name if self.state is not S.PREPARING_REBALANCE else "",
            "generation_id": self.generation_id, "leader": self.leader_id,
            "members": [{"member_id": m.member_id, "client_id": m.client_id, "client_host": m.client_host,
                         "member_metadata": m.metadata_for(self.protocol_name),
                         "member_assignment": m.assignment}
                        for m in self.members.values()],
        }

    # ------------------------------------------------------------------ internals

    def _check(self, member_id: str, generation_id: int) -> ClassicMember:
        member = self.members.get(member_id)
        if member is None:
            raise GroupError(ErrorCode.UNKNOWN_MEMBER_ID, f"member {member_id!r} is not in the group")
        if generation_id != self.generation_id:
            raise GroupError(ErrorCode.ILLEGAL_GENERATION,
                             f"generation {generation_id} is not the group's {self.generation_id}")
        return member

    def _candidates(self) -> set[str]:
        names: set[str] | None = None
        for m in self.members.values():
            own = {n for n, _ in m.protocols}
            names = own if names is None else names & own
        return names or set()

    def _select_protocol(self) -> str:
        """Kafka's rule: among protocols every member supports, each member votes for its
        most preferred one; the most votes win (ties: the first voted)."""
        candidates = self._candidates()
        assert candidates, "join() keeps at least one protocol in common"
        votes = Counter(next(n for n, _ in m.protocols if n in candidates) for m in self.members.values())
        return votes.most_common(1)[0][0]

    def _prepare_rebalance(self, now: float) -> None:
        self._advance(S.PREPARING_REBALANCE)
        self.empty_since = None
        timeout_ms = max((m.rebalance_timeout_ms for m in self.members.values()), default=0)
        self.rebalance_deadline = now + timeout_ms / 1000
        for m in self.members.values():
            m.awaiting_sync = False

    def _membership_changed(self, now: float) -> None:
        if self.state is S.PREPARING_REBALANCE:
            return                      # the round in progress settles it
        if self.members:
            self._prepare_rebalance(now)
        elif self.state is not S.EMPTY:
            self._advance(S.PREPARING_REBALANCE)
            self.complete_join(now)     # nobody left: Empty, with a new generation as Kafka does

    def _add_member(self, member: ClassicMember) -> None:
        self.members[member.member_id] = member

    def _remove_member(self, member_id: str) -> None:
        del self.members[member_id]
        if member_id == self.leader_id:
            self.leader_id = ""

    def _advance(self, new: ClassicState) -> None:
        assert new in TRANSITIONS[self.state] or new is self.state, (self.state, new)
        self.state = new
