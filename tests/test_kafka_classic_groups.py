"""Classic (JoinGroup/SyncGroup) consumer groups: the pure state machine and the waiting layer.

Time is trio's MockClock (autojump), so rebalance and session timeouts run
instantly and deterministically.
"""

from __future__ import annotations

import pytest
import trio

from minilog.broker.groups._classic import TRANSITIONS, ClassicGroup, ClassicState
from minilog.broker.groups._group import GroupError
from minilog.broker.groups.classic import ClassicGroups, ClassicLimits
from minilog.protocol import ErrorCode

PROTOCOLS = [("range", b"meta-r"), ("roundrobin", b"meta-rr")]


def _groups(native: set[str] | None = None) -> ClassicGroups:
    return ClassicGroups(ClassicLimits(), lambda g: g in (native or set()))


async def _join(groups: ClassicGroups, member_id: str = "", *, client_id: str = "c", session_ms: int = 10_000,
                rebalance_ms: int = 30_000, protocols=PROTOCOLS, group_id: str = "g"):
    return await groups.join(group_id=group_id, member_id=member_id, client_id=client_id, client_host="h",
                             session_timeout_ms=session_ms, rebalance_timeout_ms=rebalance_ms,
                             protocol_type="consumer", protocols=protocols)


def test_transition_table_covers_every_state():
    assert set(TRANSITIONS) == set(ClassicState)


def test_pure_single_member_round():
    """One member: join completes at once, it leads, its sync hands back its own assignment."""
    g = ClassicGroup("g", "consumer")
    m = g.join(member_id="", client_id="c", client_host="h", session_timeout_ms=10_000,
               rebalance_timeout_ms=10_000, protocol_type="consumer", protocols=PROTOCOLS, now=0.0)
    assert g.join_ready()
    results = g.complete_join(0.0)
    assert results[m].generation_id == 1 and results[m].leader == m
    assert results[m].members == [(m, b"meta-r")]
    assert g.state is ClassicState.COMPLETING_REBALANCE
    assert g.sync(member_id=m, generation_id=1, assignments=[(m, b"A")], now=0.0) == b"A"
    assert g.state is ClassicState.STABLE
    with pytest.raises(GroupError) as info:
        g.heartbeat(member_id=m, generation_id=0, now=1.0)
    assert info.value.code == ErrorCode.ILLEGAL_GENERATION


def test_protocol_selection_by_votes():
    """Kafka's rule: only protocols every member supports, each member votes its favourite."""
    g = ClassicGroup("g", "consumer")
    a = g.join(member_id="", client_id="a", client_host="h", session_timeout_ms=10_000, rebalance_timeout_ms=1,
               protocol_type="consumer", protocols=[("roundrobin", b""), ("range", b"")], now=0.0)
    b = g.join(member_id="", client_id="b", client_host="h", session_timeout_ms=10_000, rebalance_timeout_ms=1,
               protocol_type="consumer", protocols=[("range", b""), ("sticky", b"")], now=0.0)
    c = g.join(member_id="", client_id="c", client_host="h", session_timeout_ms=10_000, rebalance_timeout_ms=1,
               protocol_type="consumer", protocols=[("range", b""), ("roundrobin", b"")], now=0.0)
    assert {a, b, c} == set(g.members)
    assert g.complete_join(0.0)[a].protocol_name == "range"
    with pytest.raises(GroupError) as info:
        g.join(member_id="", client_id="d", client_host="h", session_timeout_ms=10_000, rebalance_timeout_ms=1,
               protocol_type="consumer", protocols=[("sticky", b"")], now=0.0)
    assert info.value.code == 23


async def test_two_members_rebalance_and_assignments(autojump_clock):
    """The second join starts a rebalance; both joins return together with one leader;
    the follower's sync waits for the leader's assignment."""
    groups = _groups()
    first = await _join(groups, client_id="a")
    assert await groups.sync(group_id="g", member_id=first.member_id, generation_id=1,
                             assignments=[(first.member_id, b"all")]) == b"all"
    results = {}

    async def join_again(member_id: str, key: str) -> None:
        results[key] = await _join(groups, member_id, client_id=key)

    async with trio.open_nursery() as n:
        n.start_soon(join_again, "", "b")
        await trio.sleep(1)
        with pytest.raises(GroupError) as info:
            groups.heartbeat(group_id="g", member_id=first.member_id, generation_id=1)
        assert info.value.code == ErrorCode.REBALANCE_IN_PROGRESS
        n.start_soon(join_again, first.member_id, "a")
    a, b = results["a"], results["b"]
    assert a.generation_id == b.generation_id == 2
    assert a.leader == b.leader == first.member_id
    assert {m for m, _ in a.members} == {a.member_id, b.member_id} and b.members == []
    synced = {}

    async def follower() -> None:
        synced["b"] = await groups.sync(group_id="g", member_id=b.member_id, generation_id=2, assignments=[])

    async with trio.open_nursery() as n:
        n.start_soon(follower)
        await trio.sleep(1)
        assert "b" not in synced
        synced["a"] = await groups.sync(group_id="g", member_id=a.member_id, generation_id=2,
                                        assignments=[(a.member_id, b"p0"), (b.member_id, b"p1")])
    assert synced == {"a": b"p0", "b": b"p1"}
    groups.heartbeat(group_id="g", member_id=b.member_id, generation_id=2)
    assert groups.describe("g")["group_state"] == "Stable"


async def test_member_that_does_not_rejoin_is_dropped_after_the_rebalance_timeout(autojump_clock):
    groups = _groups()
    first = await _join(groups, client_id="a", rebalance_ms=20_000)
    await groups.sync(group_id="g", member_id=first.member_id, generation_id=1, assignments=[])
    start = trio.current_time()
    second = await _join(groups, client_id="b", rebalance_ms=20_000)   # a never rejoins
    assert trio.current_time() - start == pytest.approx(20.0)
    assert second.generation_id == 2 and second.leader == second.member_id
    assert set(groups.groups["g"].members) == {second.member_id}
    with pytest.raises(GroupError) as info:
        groups.heartbeat(group_id="g", member_id=first.member_id, generation_id=1)
    assert info.value.code == ErrorCode.UNKNOWN_MEMBER_ID


async def test_session_timeout_removes_a_silent_member_and_fences_its_commits(autojump_clock):
    groups = _groups()
    a = await _join(groups, client_id="a", session_ms=10_000)
    await groups.sync(group_id="g", member_id=a.member_id, generation_id=1, assignments=[])
    groups.check_commit("g", a.member_id, 1)
    await trio.sleep(11)
    with pytest.raises(GroupError) as info:
        groups.check_commit("g", a.member_id, 1)
    assert info.value.code == ErrorCode.UNKNOWN_MEMBER_ID
    assert groups.describe("g")["group_state"] == "Empty"
    groups.check_commit("g", "", -1)     # a "simple" commit to an empty group is allowed


async def test_leave_triggers_rebalance_and_empty(autojump_clock):
    groups = _groups()
    a = await _join(groups, client_id="a")
    await groups.sync(group_id="g", member_id=a.member_id, generation_id=1, assignments=[])
    groups.leave(group_id="g", member_id=a.member_id)
    described = groups.describe("g")
    assert described["group_state"] == "Empty" and described["members"] == []
    assert groups.delete("g") == ErrorCode.NONE


async def test_mixing_with_native_group_is_refused(autojump_clock):
    """A classic member cannot join a group id that is a minilog server-assigned group."""
    groups = _groups(native={"native-group"})
    with pytest.raises(GroupError) as info:
        await _join(groups, group_id="native-group")
    assert info.value.code == 23 and "minilog" in str(info.value)


async def test_session_timeout_bounds(autojump_clock):
    groups = _groups()
    with pytest.raises(GroupError) as info:
        await _join(groups, session_ms=1000)
    assert info.value.code == ErrorCode.INVALID_SESSION_TIMEOUT


async def test_commit_generation_fencing(autojump_clock):
    groups = _groups()
    a = await _join(groups, client_id="a")
    with pytest.raises(GroupError) as info:          # completing rebalance: wait for the assignment
        groups.check_commit("g", a.member_id, 1)
    assert info.value.code == ErrorCode.REBALANCE_IN_PROGRESS
    await groups.sync(group_id="g", member_id=a.member_id, generation_id=1, assignments=[])
    with pytest.raises(GroupError) as info:
        groups.check_commit("g", a.member_id, 0)
    assert info.value.code == ErrorCode.ILLEGAL_GENERATION
    with pytest.raises(GroupError) as info:
        groups.check_commit("g", "", -1)             # members exist: a simple commit is refused
    assert info.value.code == ErrorCode.UNKNOWN_MEMBER_ID
