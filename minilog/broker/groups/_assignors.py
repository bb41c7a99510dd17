"""Server-side partition assignors: pure functions, no I/O, no clock.

Rules:
- Every partition of a topic that at least one member subscribes to goes to
  exactly one member subscribed to that topic. Partitions of topics nobody
  subscribes to go nowhere.
- The result is deterministic: same input, same output (members and
  partitions are walked in sorted order), so a restarted coordinator
  computes the same target.

Theory of operation. An assignor maps

    members:    {member_id: frozenset(subscribed topic names)}
    partitions: {topic: partition count}
    current:    {member_id: set((topic, partition))}   (only `sticky` reads it)

to `{member_id: set((topic, partition))}`, with an entry (maybe empty) for
every member. Three strategies, named as Kafka names them:

- `range`: per topic, the subscribed members in id order get contiguous
  ranges; the first `count % n` members get one more. Balanced within 1 per
  topic, not across topics (as in Kafka).
- `roundrobin`: all (topic, partition) pairs in order, dealt to subscribed
  members in turn. Balanced within 1 when subscriptions are the same.
- `sticky` (Kafka's "uniform" assignor): keep every partition with its
  current owner unless that breaks balance, then hand out the rest to the
  least loaded. With identical subscriptions it is balanced within 1 and
  moves the fewest partitions possible: members sorted by current load take
  the `count % n` larger quotas, each keeps min(current, quota) partitions,
  and only the surplus moves. Mixed subscriptions fall back to "keep what is
  valid, fill the least loaded, then move from the most to the least loaded
  eligible member until no move helps".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set

__all__ = ["ASSIGNORS", "DEFAULT_ASSIGNOR", "range_assign", "roundrobin_assign", "sticky_assign"]

TopicPartition = tuple[str, int]
Assignment = dict[str, set[TopicPartition]]


def _subscribers(members: Mapping[str, Set[str]], partitions: Mapping[str, int]) -> dict[str, list[str]]:
    """topic -> sorted member ids subscribed to it (topics with partitions only)."""
    out: dict[str, list[str]] = {}
    for member_id in sorted(members):
        for topic in members[member_id]:
            if partitions.get(topic, 0) > 0:
                out.setdefault(topic, []).append(member_id)
    return out


def range_assign(members: Mapping[str, Set[str]], partitions: Mapping[str, int],
                 current: Mapping[str, Set[TopicPartition]] | None = None) -> Assignment:
    """Kafka's RangeAssignor, per topic. `current` is ignored."""
    out: Assignment = {m: set() for m in members}
    for topic, subs in sorted(_subscribers(members, partitions).items()):
        count = partitions[topic]
        share, extra = divmod(count, len(subs))
        start = 0
        for i, member_id in enumerate(subs):
            n = share + (1 if i < extra else 0)
            out[member_id].update((topic, p) for p in range(start, start + n))
            start += n
        assert start == count
    return out


def roundrobin_assign(members: Mapping[str, Set[str]], partitions: Mapping[str, int],
                      current: Mapping[str, Set[TopicPartition]] | None = None) -> Assignment:
    """Kafka's RoundRobinAssignor: deal partitions in order to subscribed members."""
    out: Assignment = {m: set() for m in members}
    ring = sorted(members)
    if not ring:
        return out
    subs = _subscribers(members, partitions)
    i = 0
    for topic in sorted(subs):
        for p in range(partitions[topic]):
            while topic not in members[ring[i % len(ring)]]:
                i += 1
            out[ring[i % len(ring)]].add((topic, p))
            i += 1
    return out


def sticky_assign(members: Mapping[str, Set[str]], partitions: Mapping[str, int],
                  current: Mapping[str, Set[TopicPartition]] | None = None) -> Assignment:
    """Balanced assignment that moves as few partitions as possible (see module doc)."""
    current = current or {}
    out: Assignment = {m: set() for m in members}
    if not members:
        return out
    subs = _subscribers(members, partitions)
    all_tps = [(t, p) for t in sorted(subs) for p in range(partitions[t])]
    # Valid current ownership: the member is still here, subscribed, and the
    # partition still exists. A partition claimed twice (should not happen)
    # stays with the smaller member id.
    owner: dict[TopicPartition, str] = {}
    for member_id in sorted(current):
        if member_id not in members:
            continue
        for tp in sorted(current[member_id]):
            t, p = tp
            if t in members[member_id] and p < partitions.get(t, 0) and tp not in owner:
                owner[tp] = member_id
    kept: dict[str, list[TopicPartition]] = {m: [] for m in members}
    for tp, m in owner.items():
        kept[m].append(tp)
    quotas = _quotas(members, len(all_tps), kept)
    for m in members:
        keep = sorted(kept[m])[: quotas[m]]
        out[m].update(keep)
    assigned = {tp for m in out for tp in out[m]}
    load = {m: len(out[m]) for m in members}
    for tp in all_tps:
        if tp in assigned:
            continue
        eligible = subs[tp[0]]
        # Prefer members below their quota, then the least loaded.
        best = min(eligible, key=lambda m: (load[m] >= quotas[m], load[m], m))
        out[best].add(tp)
        load[best] += 1
    _balance(out, load, subs)
    return out


def _quotas(members: Mapping[str, Set[str]], total: int, kept: Mapping[str, list]) -> dict[str, int]:
    """Per-member target counts: the larger quotas go to the most loaded members."""
    n = len(members)
    share, extra = divmod(total, n)
    order = sorted(members, key=lambda m: (-len(kept[m]), m))
    return {m: share + (1 if i < extra else 0) for i, m in enumerate(order)}


def _balance(out: Assignment, load: dict[str, int], subs: Mapping[str, list[str]]) -> None:
    """Move single partitions from the most to a less loaded eligible member
    until no move reduces the spread. Only does work with mixed subscriptions."""
    moves_max = sum(load.values()) * max(1, len(load))  # bound the loop
    for _ in range(moves_max):
        moved = False
        for src in sorted(load, key=lambda m: (-load[m], m)):
            for tp in sorted(out[src]):
                dst = min(subs[tp[0]], key=lambda m: (load[m], m))
                if load[dst] < load[src] - 1:
                    out[src].discard(tp)
                    out[dst].add(tp)
                    load[src] -= 1
                    load[dst] += 1
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return


ASSIGNORS: dict[str, Callable[..., Assignment]] = {
    "range": range_assign,
    "roundrobin": roundrobin_assign,
    "sticky": sticky_assign,
    "uniform": sticky_assign,   # Kafka's name for the server-side sticky assignor
}
DEFAULT_ASSIGNOR = "sticky"
