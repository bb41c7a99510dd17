"""The group state machine (minilog.broker.groups._group): joins, leaves, timeouts,
fencing, and the one-owner-at-a-time rule under a seeded random simulation."""

from __future__ import annotations

import random

import pytest

from minilog.broker.groups._group import (
    TRANSITIONS, Group, GroupError, GroupState, state_diagram, tp_set,
)
from minilog.protocol import ErrorCode

COUNTS = {"t": 12}


class Client:
    """A well-behaved member: owns what the last response allowed, reports it."""

    def __init__(self, group, now, topics=("t",), rebalance_timeout_ms=5000, session_timeout_ms=3000):
        self.group = group
        self.member_id = ""
        self.epoch = 0
        self.owned: set = set()
        self.topics = list(topics)
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.session_timeout_ms = session_timeout_ms
        self.beat(now)

    def beat(self, now, counts=None, subscribe=None):
        counts = counts or COUNTS
        res = self.group.heartbeat(
            member_id=self.member_id, member_epoch=self.epoch, now=now,
            partition_counts=lambda t: counts.get(t, 0),
            rebalance_timeout_ms=self.rebalance_timeout_ms,
            session_timeout_ms=self.session_timeout_ms,
            subscribed=subscribe or (self.topics if self.epoch == 0 else None),
            owned=set(self.owned))
        self.member_id, self.epoch = res.member_id, res.member_epoch
        if res.assignment is not None:
            new = tp_set(res.assignment)
            self.owned &= new          # revoke first (the next heartbeat confirms)
            self.pending = new - self.owned
            self.owned |= new
        return res

    def leave(self, now):
        self.group.heartbeat(member_id=self.member_id, member_epoch=-1, now=now,
                             partition_counts=lambda t: COUNTS.get(t, 0),
                             rebalance_timeout_ms=0, session_timeout_ms=0)
        self.owned = set()


def settle(clients, now, rounds=10):
    for _ in range(rounds):
        for c in clients:
            c.beat(now)


def test_three_members_get_four_each_and_the_group_is_stable():
    """3 members on 12 partitions converge to 4/4/4, all at the assignment epoch."""
    g = Group("g")
    cs = [Client(g, 0.0) for _ in range(3)]
    settle(cs, 0.1)
    assert sorted(len(c.owned) for c in cs) == [4, 4, 4]
    assert g.state is GroupState.STABLE
    assert {c.epoch for c in cs} == {g.assignment_epoch}


def test_a_partition_moves_only_after_its_owner_confirms():
    """A joiner gets a partition held by another member only after that member's
    heartbeat reports it gone; until then the group is reconciling."""
    g = Group("g")
    a = Client(g, 0.0)
    assert len(a.owned) == 12
    b = Client(g, 0.1)
    assert b.owned == set()                 # all 12 are still a's
    assert g.state is GroupState.RECONCILING
    a.beat(0.2)                             # a is told to drop 6; it does so locally
    assert len(a.owned) == 6
    b.beat(0.3)                             # ...but has not confirmed yet
    assert b.owned == set()
    a.beat(0.4)                             # confirms
    b.beat(0.5)
    assert len(b.owned) == 6 and not (a.owned & b.owned)
    a.beat(0.6)
    assert g.state is GroupState.STABLE


def test_leave_rebalances_at_once():
    """A clean leave frees its partitions for the next heartbeat of the others."""
    g = Group("g")
    cs = [Client(g, 0.0) for _ in range(3)]
    settle(cs, 0.1)
    cs[0].leave(0.2)
    cs[1].beat(0.3)
    cs[2].beat(0.3)
    assert len(cs[1].owned) + len(cs[2].owned) == 12


def test_session_timeout_removes_the_member_and_fences_it():
    """No heartbeat within session_timeout_ms: removed; its next heartbeat and
    commit get UNKNOWN_MEMBER_ID; it rejoins cleanly with epoch 0."""
    g = Group("g")
    a, b = Client(g, 0.0), Client(g, 0.0)
    settle([a, b], 0.1)
    for t in (1.0, 2.0, 3.0):
        a.beat(t)
    assert g.next_deadline() == pytest.approx(3.1)   # b's session deadline
    assert g.expire(3.2) == [(b.member_id, "session timeout")]
    a.beat(3.3)
    assert len(a.owned) == 12
    with pytest.raises(GroupError) as err:
        b.beat(3.4)
    assert err.value.code == ErrorCode.UNKNOWN_MEMBER_ID
    with pytest.raises(GroupError) as err:
        g.check_member_epoch(b.member_id, b.epoch)
    assert err.value.code == ErrorCode.UNKNOWN_MEMBER_ID
    b.epoch, b.owned = 0, set()                   # rejoin with the same id
    b.beat(3.5)
    settle([a, b], 3.6)
    assert sorted([len(a.owned), len(b.owned)]) == [6, 6]


def test_rebalance_timeout_removes_a_member_that_does_not_revoke():
    """A member asked to revoke that never confirms loses its partitions after
    rebalance_timeout_ms, and the waiting member gets them."""
    g = Group("g")
    a = Client(g, 0.0, rebalance_timeout_ms=1000, session_timeout_ms=30000)
    b = Client(g, 0.1)
    g.heartbeat(member_id=a.member_id, member_epoch=a.epoch, now=0.2,
                partition_counts=COUNTS.get, rebalance_timeout_ms=1000,
                session_timeout_ms=30000, owned=set(a.owned))   # keeps claiming all 12
    assert g.expire(1.0) == []
    assert g.expire(1.3) == [(a.member_id, "rebalance timeout")]
    b.beat(1.4)
    assert len(b.owned) == 12


def test_stale_and_fenced_epochs():
    """Heartbeats and commits with an epoch the member does not hold are refused."""
    g = Group("g")
    a = Client(g, 0.0)
    with pytest.raises(GroupError) as err:
        g.heartbeat(member_id=a.member_id, member_epoch=a.epoch + 5, now=0.1,
                    partition_counts=COUNTS.get, rebalance_timeout_ms=1000, session_timeout_ms=1000)
    assert err.value.code == ErrorCode.FENCED_MEMBER_EPOCH
    g.check_member_epoch(a.member_id, a.epoch)
    with pytest.raises(GroupError) as err:
        g.check_member_epoch(a.member_id, a.epoch + 1)
    assert err.value.code == ErrorCode.FENCED_MEMBER_EPOCH
    with pytest.raises(GroupError) as err:
        g.check_member_epoch(None, -1)          # admin commit while members are active
    assert err.value.code == ErrorCode.UNKNOWN_MEMBER_ID


def test_topic_gaining_partitions_triggers_a_new_target():
    """A subscribed topic growing from 12 to 16 partitions hands out the new 4."""
    g = Group("g")
    cs = [Client(g, 0.0) for _ in range(2)]
    settle(cs, 0.1)
    before = [set(c.owned) for c in cs]
    for c in cs:
        c.beat(0.2, counts={"t": 16})
    settle(cs, 0.3)  # counts default back to 12 would shrink; keep 16
    for c in cs:
        c.beat(0.4, counts={"t": 16})
    assert sorted(len(c.owned) for c in cs) == [8, 8]
    assert all(b <= c.owned for b, c in zip(before, cs))


def test_subscription_change_rebalances():
    """A member switching topics gets the new topic's partitions."""
    counts = {"t": 4, "u": 4}
    g = Group("g")
    a = Client(g, 0.0)
    a.beat(0.1, counts=counts, subscribe=["t", "u"])
    a.beat(0.2, counts=counts)
    assert len(a.owned) == 8


def test_transition_table_documents_every_state():
    assert {s for s, _ in TRANSITIONS} == set(GroupState) - {GroupState.DEAD}
    assert "empty" in state_diagram()


@pytest.mark.parametrize("seed", range(30))
def test_simulation_never_two_owners(seed):
    """Seeded random joins, leaves, stalls and crashes: no partition is ever
    owned by two members at once (client-side view), and when everyone behaves
    the group converges to stable with every partition owned."""
    rng = random.Random(seed)
    g = Group("g", assignor=rng.choice(["range", "roundrobin", "sticky"]))
    now = 0.0
    clients: list[Client] = []
    for step in range(300):
        now += rng.uniform(0.01, 0.5)
        action = rng.random()
        if action < 0.1 and len(clients) < 6:
            clients.append(Client(g, now, rebalance_timeout_ms=2000, session_timeout_ms=2000))
        elif action < 0.15 and clients:
            clients.pop(rng.randrange(len(clients))).leave(now)
        elif action < 0.18 and clients:
            clients.pop(rng.randrange(len(clients)))   # crash: silent until expired
        else:
            for c in list(clients):
                if rng.random() < 0.8:
                    try:
                        c.beat(now)
                    except GroupError as exc:
                        assert exc.code in (ErrorCode.UNKNOWN_MEMBER_ID, ErrorCode.FENCED_MEMBER_EPOCH)
                        c.owned, c.epoch = set(), 0     # lost: drop everything, rejoin
                        c.beat(now)
        for member_id, _ in g.expire(now):
            for c in clients:
                if c.member_id == member_id:
                    c.owned = set()                     # the zombie learns later; its
                    c.zombie = True                     # partitions are no longer its own
        live = [c for c in clients if not getattr(c, "zombie", False)]
        seen: dict = {}
        for c in live:
            for tp in c.owned:
                assert tp not in seen, f"seed {seed} step {step}: {tp} owned twice"
                seen[tp] = c.member_id
        for c in clients:
            c.zombie = False
    for _ in range(60):   # past every session timeout: crashed members expire
        now += 0.05
        g.expire(now)
        for c in clients:
            try:
                c.beat(now)
            except GroupError:
                c.owned, c.epoch = set(), 0
                c.beat(now)
    if clients:
        assert g.state is GroupState.STABLE, seed
        assert sum(len(c.owned) for c in clients) == 12
