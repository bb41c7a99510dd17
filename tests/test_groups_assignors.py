"""Property tests for the server-side assignors (minilog.broker.groups._assignors)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from minilog.broker.groups._assignors import ASSIGNORS, range_assign, sticky_assign

TOPICS = ["a", "b", "c"]

member_ids = st.lists(st.text("mnop0123", min_size=1, max_size=4), min_size=1, max_size=12,
                      unique=True)
partition_counts = st.fixed_dictionaries({t: st.integers(0, 40) for t in TOPICS})


def _owners(assignment):
    owners = {}
    for m, tps in assignment.items():
        for tp in tps:
            assert tp not in owners, f"{tp} assigned to {owners[tp]} and {m}"
            owners[tp] = m
    return owners


def _check_exactly_once(members, partitions, assignment):
    assert set(assignment) == set(members)
    owners = _owners(assignment)
    expected = {(t, p) for t, n in partitions.items() for p in range(n)
                if any(t in subs for subs in members.values())}
    assert set(owners) == expected
    for tp, m in owners.items():
        assert tp[0] in members[m], f"{m} got {tp} without subscribing to {tp[0]}"


@settings(max_examples=200, deadline=None)
@given(ids=member_ids, partitions=partition_counts, data=st.data())
def test_every_partition_goes_to_exactly_one_subscribed_member(ids, partitions, data):
    """Every assignor, with mixed subscriptions: each partition of a subscribed
    topic has exactly one owner, and that owner subscribes to its topic."""
    members = {m: frozenset(data.draw(st.sets(st.sampled_from(TOPICS)))) for m in ids}
    current = {m: {(t, p) for t in members[m] for p in range(partitions[t]) if p % 3 == i % 3}
               for i, m in enumerate(ids)}
    for _name, assign in ASSIGNORS.items():
        _check_exactly_once(members, partitions, assign(members, partitions, current))


@settings(max_examples=200, deadline=None)
@given(ids=member_ids, partitions=partition_counts)
def test_same_subscriptions_are_balanced_within_one(ids, partitions):
    """roundrobin and sticky balance within 1 overall; range within 1 per topic."""
    members = {m: frozenset(TOPICS) for m in ids}
    for name in ("roundrobin", "sticky"):
        counts = [len(v) for v in ASSIGNORS[name](members, partitions, {}).values()]
        assert max(counts) - min(counts) <= 1, name
    out = range_assign(members, partitions)
    for t in TOPICS:
        counts = [sum(1 for tp in v if tp[0] == t) for v in out.values()]
        assert max(counts) - min(counts) <= 1


def _lower_bound_moves(current_counts, total, n):
    """The fewest partitions that must change owner to reach a balanced result."""
    share, extra = divmod(total, n)
    counts = sorted(current_counts, reverse=True)
    return sum(max(0, c - (share + (1 if i < extra else 0))) for i, c in enumerate(counts))


@settings(max_examples=300, deadline=None)
@given(ids=member_ids, partitions=partition_counts, data=st.data())
def test_sticky_moves_the_fewest_partitions(ids, partitions, data):
    """From an arbitrary valid current assignment (some members new, some gone),
    sticky is balanced within 1 and moves exactly the unavoidable surplus."""
    members = {m: frozenset(TOPICS) for m in ids}
    all_tps = [(t, p) for t in TOPICS for p in range(partitions[t])]
    # Arbitrary current owners, including members that have left ("gone").
    pool = ids + ["gone"]
    choice = data.draw(st.lists(st.sampled_from(pool), min_size=len(all_tps),
                                max_size=len(all_tps)))
    current = {m: set() for m in pool}
    for tp, m in zip(all_tps, choice):
        current[m].add(tp)
    out = sticky_assign(members, partitions, current)
    _check_exactly_once(members, partitions, out)
    counts = [len(v) for v in out.values()]
    assert max(counts) - min(counts) <= 1
    moved = sum(len(current[m] - out[m]) for m in ids)   # taken from a surviving owner
    assert moved == _lower_bound_moves([len(current[m]) for m in ids], len(all_tps), len(ids))
    # Stable: running again on its own output moves nothing.
    assert sticky_assign(members, partitions, out) == out


def test_joining_member_takes_only_what_it_needs():
    """3 members own 12 partitions 4/4/4; a 4th joins: exactly 3 partitions move, one from each."""
    members = {m: frozenset({"t"}) for m in ("m1", "m2", "m3")}
    first = sticky_assign(members, {"t": 12}, {})
    assert sorted(len(v) for v in first.values()) == [4, 4, 4]
    members["m4"] = frozenset({"t"})
    second = sticky_assign(members, {"t": 12}, first)
    assert len(second["m4"]) == 3
    for m in ("m1", "m2", "m3"):
        assert second[m] <= first[m] and len(second[m]) == 3


def test_topic_gaining_partitions_keeps_existing_owners():
    """Adding partitions hands out only the new ones (when balance allows)."""
    members = {m: frozenset({"t"}) for m in ("m1", "m2")}
    first = sticky_assign(members, {"t": 4}, {})
    second = sticky_assign(members, {"t": 8}, first)
    for m in members:
        assert first[m] <= second[m] and len(second[m]) == 4
