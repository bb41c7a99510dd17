"""The controller's election rules (minilog/broker/cluster/election.py), case by case, and the
picture's folding of etcd events. Pure: no etcd, no trio.

One table drives the cases: (rule expected, state before, view, state after or None).
"""

from __future__ import annotations

import random

import pytest

from minilog.broker.cluster import RULES, ClusterPicture, ClusterView, next_state
from minilog.metastore import (
    NO_LEADER,
    BrokerRegistration,
    ClusterKeys,
    Event,
    EventType,
    KeyValue,
    PartitionState,
    TopicRecord,
)


def S(replicas, leader, epoch, isr, version=0) -> PartitionState:
    return PartitionState(tuple(replicas), leader, epoch, tuple(isr), version)


def V(live, shutting_down=(), unclean=False, rebalance=True) -> ClusterView:
    return ClusterView(frozenset(live), frozenset(shutting_down), unclean, rebalance)


CASES = [
    ("steady", S([1, 2, 3], 1, 0, [1, 2, 3]), V({1, 2, 3}), None),
    ("clean-election", S([1, 2, 3], 1, 4, [1, 2, 3]), V({2, 3}), S([1, 2, 3], 2, 5, [2, 3])),
    # preference order, not ISR order: replica 3 comes before 2 here
    ("clean-election", S([1, 3, 2], 1, 0, [2, 1, 3]), V({2, 3}), S([1, 3, 2], 3, 1, [3, 2])),
    # a follower that died while its leader also died does not stay in the ISR
    ("clean-election", S([1, 2, 3], 1, 0, [1, 2, 3]), V({3}), S([1, 2, 3], 3, 1, [3])),
    ("dead-followers-out", S([1, 2, 3], 1, 2, [1, 2, 3]), V({1, 3}), S([1, 2, 3], 1, 2, [1, 3])),
    # out-of-sync replica 2 is alive, but only the ISR may lead: offline, ISR keeps the last leader
    ("last-replica-standing", S([1, 2], 1, 3, [1]), V({2}), S([1, 2], NO_LEADER, 4, [1])),
    ("last-replica-standing", S([1, 2, 3], 1, 3, [1, 2]), V({3}), S([1, 2, 3], NO_LEADER, 4, [1])),
    ("last-replica-standing", S([1, 2], NO_LEADER, 4, [1]), V({2}), None),
    # ... and when the last ISR member returns, it is elected again
    ("clean-election", S([1, 2], NO_LEADER, 4, [1]), V({1, 2}), S([1, 2], 1, 5, [1])),
    ("unclean-election", S([1, 2], NO_LEADER, 4, [1]), V({2}, unclean=True), S([1, 2], 2, 5, [2])),
    ("unclean-election", S([1, 2, 3], 1, 0, [1]), V({3}, unclean=True), S([1, 2, 3], 3, 1, [3])),
    ("last-replica-standing", S([1, 2], 1, 0, [1, 2]), V(set()), S([1, 2], NO_LEADER, 1, [1])),
    ("controlled-shutdown", S([1, 2, 3], 1, 0, [1, 2, 3]), V({1, 2, 3}, {1}), S([1, 2, 3], 2, 1, [1, 2, 3])),
    ("controlled-shutdown", S([1, 2, 3], 1, 0, [1, 2, 3]), V({1, 2, 3}, {1, 2}), S([1, 2, 3], 3, 1, [1, 2, 3])),
    # nowhere to go: the leader stays until it stops
    ("steady", S([1, 2], 1, 0, [1]), V({1, 2}, {1}), None),
    ("steady", S([1, 2, 3], 1, 0, [1, 2, 3]), V({1, 2, 3}, {1, 2, 3}), None),
    # a shutting-down broker is not elected when another ISR member can lead
    ("clean-election", S([1, 2, 3], 1, 0, [1, 2, 3]), V({2, 3}, {2}), S([1, 2, 3], 3, 1, [2, 3])),
    ("preferred-rebalance", S([1, 2, 3], 2, 1, [2, 3, 1]), V({1, 2, 3}), S([1, 2, 3], 1, 2, [1, 2, 3])),
    ("steady", S([1, 2, 3], 2, 1, [2, 3, 1]), V({1, 2, 3}, rebalance=False), None),
    ("steady", S([1, 2, 3], 2, 1, [2, 3]), V({1, 2, 3}), None),          # preferred not in sync yet
    ("steady", S([1, 2, 3], 2, 1, [2, 3, 1]), V({1, 2, 3}, {1}), None),  # preferred leaving
]


@pytest.mark.parametrize(("rule", "before", "view", "after"), CASES)
def test_election_rules(rule, before, view, after):
    """Each row: the rule that matches and the state it asks for."""
    got_rule, got = next_state(before, view)
    assert (got_rule, got) == (rule, after)
    assert rule in RULES


def test_every_rule_has_a_case():
    assert {c[0] for c in CASES} == set(RULES)


def test_rules_are_idempotent_and_never_elect_outside_isr_when_clean():
    """Seeded random states and views: applying the rules again to their result changes nothing
    (a retried or repeated pass is harmless), leaders come from the ISR unless unclean election
    is on, epochs only grow, and the ISR is never empty."""
    seed = 1309
    rng = random.Random(seed)
    for _ in range(3000):
        n = rng.randint(1, 5)
        replicas = rng.sample(range(1, 7), n)
        isr = [r for r in replicas if rng.random() < 0.7] or [replicas[0]]
        leader = rng.choice(isr + [NO_LEADER])
        state = S(replicas, leader, rng.randint(0, 9), isr)
        live = {b for b in range(1, 7) if rng.random() < 0.6}
        view = V(live, {b for b in live if rng.random() < 0.2}, rng.random() < 0.2, rng.random() < 0.8)
        _, new = next_state(state, view)
        if new is None:
            continue
        assert next_state(new, view)[1] is None or next_state(new, view)[0] == "preferred-rebalance", (seed, state, view)
        assert new.isr and set(new.isr) <= set(new.replicas), (seed, state, view, new)
        assert new.leader_epoch >= state.leader_epoch, (seed, state, view, new)
        if new.leader != NO_LEADER and not view.unclean:
            assert new.leader in state.isr and new.leader in live, (seed, state, view, new)


def _kv(key: str, value: bytes, revision: int, create: int | None = None) -> KeyValue:
    return KeyValue(key.encode(), value, create or revision, revision, 1)


def test_picture_folds_events_of_one_transaction_and_ignores_stale_ones():
    """Several events at one revision (a transaction) all apply; an event older than the
    picture is ignored; deletes remove; a re-registration carries the new epoch."""
    pic = ClusterPicture(ClusterKeys("/r"))
    reg = BrokerRegistration(1, ("h:1",))
    pic.reset([_kv("/r/brokers/1", reg.to_bytes(), 5)], 5)
    assert pic.brokers[1].epoch == 5 and pic.brokers[1].address() == ("h", 1)
    topic = TopicRecord("t", ((1,), (1,)), {}, "id1")
    state = PartitionState((1,), 1, 0, (1,))
    events = [Event(EventType.PUT, _kv("/r/topics/t", topic.to_bytes(), 7)),
              Event(EventType.PUT, _kv("/r/partitions/t/0", state.to_bytes(), 7)),
              Event(EventType.PUT, _kv("/r/partitions/t/1", state.to_bytes(), 7))]
    assert all(pic.apply(e) for e in events)
    assert sorted(pic.states) == [("t", 0), ("t", 1)] and pic.topic_meta("t").partitions == 2
    assert not pic.apply(Event(EventType.DELETE, _kv("/r/topics/t", b"", 6)))
    assert "t" in pic.topics
    assert pic.apply(Event(EventType.DELETE, _kv("/r/brokers/1", b"", 8)))
    assert pic.brokers == {}
    assert pic.apply(Event(EventType.PUT, _kv("/r/brokers/1", reg.to_bytes(), 9)))
    assert pic.brokers[1].epoch == 9
    assert pic.apply(Event(EventType.PUT, _kv("/other/brokers/2", reg.to_bytes(), 10)))
    assert sorted(pic.brokers) == [1]


async def _controller_after_restart(stored_epochs: bool) -> tuple[PartitionState, dict[int, int] | None]:
    """Broker 2 leads t-0 and restarted (registration epoch 2) while no controller watched;
    broker 1 then becomes controller. Returns the state it leaves and the epochs it stored."""
    import json

    import trio

    from minilog.broker.cluster import Controller, MetadataFollower
    from minilog.metastore import BrokerSession, MemoryStore

    keys = ClusterKeys("/r")
    async with MemoryStore.open() as kv:
        await kv.put(keys.broker(2), BrokerRegistration(2, ("h:2",)).to_bytes())     # revision 2
        await kv.put(keys.broker(3), BrokerRegistration(3, ("h:3",)).to_bytes())     # revision 3
        await kv.put(keys.topic("t"), TopicRecord("t", ((2, 1, 3),), {}, "id").to_bytes())
        await kv.put(keys.partition("t", 0), PartitionState((2, 1, 3), 2, 0, (2, 1, 3)).to_bytes())
        if stored_epochs:       # what the previous controller accepted: broker 2's old epoch
            await kv.put(keys.broker_epochs(), json.dumps({"2": 1, "3": 3}).encode())
        picture = ClusterPicture(keys)
        follower = MetadataFollower(kv, picture)
        async with trio.open_nursery() as nursery:
            await nursery.start(follower.run)
            async with BrokerSession.open(kv, 1, ["h:1"], keys=keys) as session:
                nursery.start_soon(Controller(kv, follower).run, session)
                await follower.wait_until(lambda: picture.broker_epochs is not None
                                          and picture.broker_epochs.get(1) is not None)
                state = picture.state("t", 0)
                epochs = picture.broker_epochs
                nursery.cancel_scope.cancel()
    assert state is not None
    return state, epochs


async def test_new_controller_catches_a_restart_it_did_not_see(autojump_clock):
    """The accepted registration epochs are stored: a new controller sees that broker 2's
    registration is newer than the accepted one (it restarted, maybe losing its log's tail),
    re-elects its partition within the ISR and takes it out of the ISR; then accepts it.
    Without the stored epochs the restart would go unnoticed."""
    state, epochs = await _controller_after_restart(stored_epochs=True)
    assert (state.leader, state.leader_epoch, state.isr) == (1, 1, (1, 3))
    assert epochs is not None and epochs[2] == 2
    state, _ = await _controller_after_restart(stored_epochs=False)
    assert (state.leader, state.leader_epoch, state.isr) == (2, 0, (2, 1, 3))
