"""Cluster metadata on the store: registration, election, partition-state CAS, topics, producer ids.

Every store test runs on a real etcd and on the in-memory store (the `kv`
and `store_clock` fixtures of tests/_etcd_fixtures.py). Lease lapses use
1-second TTLs: real seconds on etcd, virtual ones on the memory store.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from minilog.metastore import (
    NO_LEADER,
    BrokerIdInUse,
    BrokerSession,
    ClusterKeys,
    Compare,
    KVStore,
    NotController,
    PartitionState,
    Put,
    TopicExists,
    UnknownTopicOrPartition,
    allocate_producer_ids,
    assign_replicas,
    campaign,
    create_topic,
    current_controller,
    ensure_partition_states,
    fence_for,
    get_partition_state,
    get_topic,
    list_topics,
    live_brokers,
    register_broker,
    resign,
    update_partition_state,
    watch_controller,
)

DEADLINE_S = 20.0
KEYS = ClusterKeys()


# -- replica assignment (pure) ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    brokers=st.lists(st.integers(0, 1000), min_size=1, max_size=12, unique=True),
    partitions=st.integers(1, 300),
    data=st.data(),
)
def test_assignment_spreads_replicas_and_leaders_evenly(brokers, partitions, data):
    """Replicas distinct and live; replica and preferred-leader counts per broker within one of each other."""
    rf = data.draw(st.integers(1, len(brokers)), label="replication_factor")
    start = data.draw(st.integers(0, 100), label="start_index")
    assignment = assign_replicas(partitions, rf, brokers, start_index=start)
    assert len(assignment) == partitions
    for replicas in assignment:
        assert len(replicas) == rf == len(set(replicas)) and set(replicas) <= set(brokers)
    replica_counts = Counter(b for r in assignment for b in r)
    leader_counts = Counter(r[0] for r in assignment)
    assert max(replica_counts[b] for b in brokers) - min(replica_counts[b] for b in brokers) <= 1
    assert max(leader_counts[b] for b in brokers) - min(leader_counts[b] for b in brokers) <= 1
    assert assign_replicas(partitions, rf, list(reversed(brokers)), start_index=start) == assignment


def test_assignment_rejects_impossible_shapes():
    """A replication factor above the live broker count, or no partitions, is refused."""
    with pytest.raises(ValueError):
        assign_replicas(3, 4, [1, 2, 3])
    with pytest.raises(ValueError):
        assign_replicas(0, 1, [1])
    with pytest.raises(ValueError):
        assign_replicas(1, 1, [1, 1])


def test_assignment_example_three_brokers():
    """Six partitions of RF 3 over brokers 1-3: every broker leads two and holds six."""
    assert assign_replicas(6, 3, [1, 2, 3]) == [(1, 2, 3), (2, 3, 1), (3, 1, 2), (1, 2, 3), (2, 3, 1), (3, 1, 2)]


# -- registration and election ----------------------------------------------------


async def test_registration_lives_with_the_session(kv: KVStore, store_clock):
    """A session registers its broker under its lease; a duplicate id is refused; leaving removes it at once."""
    async with BrokerSession.open(kv, 1, ["127.0.0.1:9092"], ttl_s=5) as one:
        brokers, _ = await live_brokers(kv)
        assert list(brokers) == [1] and brokers[1].addresses == ("127.0.0.1:9092",)
        assert brokers[1].epoch == one.registration.epoch > 0
        (stored,) = (await kv.get(KEYS.broker(1))).kvs
        assert stored.lease == one.lease.id
        other = await kv.grant_lease(5)
        with pytest.raises(BrokerIdInUse):
            await register_broker(kv, 1, ["127.0.0.1:9093"], other)
    assert (await live_brokers(kv))[0] == {}


async def test_dead_broker_registration_lapses_and_its_id_can_be_reused(kv: KVStore, store_clock):
    """A broker that stops renewing vanishes after its TTL; a restart waiting for its id then registers."""
    dead = await kv.grant_lease(1)
    old = await register_broker(kv, 7, ["h:1"], dead)
    fresh = await kv.grant_lease(30)
    with trio.fail_after(DEADLINE_S):
        new = await register_broker(kv, 7, ["h:2"], fresh, wait=True)
    assert new.epoch > old.epoch
    brokers, _ = await live_brokers(kv)
    assert brokers[7].addresses == ("h:2",)


async def test_one_controller_and_lease_lapse_elects_another(kv: KVStore, store_clock):
    """One of two campaigning brokers wins; when the winner's lease lapses, the other is elected with a higher epoch."""
    first_lease = await kv.grant_lease(1)
    first = await campaign(kv, 1, first_lease)
    assert await current_controller(kv) == first and first.broker_id == 1
    second_lease = await kv.grant_lease(30)
    with trio.fail_after(DEADLINE_S):
        term = await campaign(kv, 2, second_lease)  # first's lease is not kept alive: it lapses on its own
    assert term.broker_id == 2 and term.epoch > first.epoch
    assert await current_controller(kv) == term


async def test_controller_resign_and_watchers_see_every_change(kv: KVStore, store_clock):
    """watch_controller reports the controller, its resignation, and the next election."""
    seen: list[int | None] = []
    watching = trio.Event()
    a, b = await kv.grant_lease(30), await kv.grant_lease(30)
    async with trio.open_nursery() as nursery:

        async def watcher() -> None:
            async for record in watch_controller(kv):
                seen.append(None if record is None else record.broker_id)
                watching.set()
                if len(seen) == 4:
                    return

        nursery.start_soon(watcher)
        with trio.fail_after(DEADLINE_S):
            await watching.wait()
            term_a = await campaign(kv, 1, a)
            assert await resign(kv, term_a)
            assert not await resign(kv, term_a)
            await campaign(kv, 2, b)
    assert seen == [None, 1, None, 2]


async def test_session_campaign_fence_and_clean_exit(kv: KVStore, store_clock):
    """A session's campaign returns its term; its fence holds while it leads and fails after it leaves."""
    async with BrokerSession.open(kv, 3, ["h:3"], ttl_s=5) as session:
        term = await session.campaign()
        assert term.broker_id == 3
        fence = session.fence()
        assert (await kv.txn(fence, [])).succeeded
    assert not (await kv.txn(fence, [])).succeeded
    assert await current_controller(kv) is None


# -- partition state ------------------------------------------------------------------


async def _topic(kv: KVStore, partitions: int = 3, rf: int = 3) -> None:
    await create_topic(kv, "orders", partitions, rf, [1, 2, 3], configs={"retention.ms": "1000"})


def _new_leader(state: PartitionState) -> PartitionState:
    leader = next(r for r in state.isr if r != state.leader)
    return replace(state, leader=leader, leader_epoch=state.leader_epoch + 1)


async def test_create_topic_records_and_initial_states(kv: KVStore, store_clock):
    """A topic record holds its assignment and configs; each partition starts led by its preferred replica."""
    await _topic(kv, partitions=6)
    topic = await get_topic(kv, "orders")
    assert topic.partitions == 6 and topic.replication_factor == 3 and topic.configs == {"retention.ms": "1000"}
    assert Counter(r[0] for r in topic.assignment) == {1: 2, 2: 2, 3: 2}
    for p in range(6):
        state = await get_partition_state(kv, "orders", p)
        assert (state.replicas, state.leader, state.leader_epoch, state.isr, state.version) == (
            topic.assignment[p], topic.assignment[p][0], 0, topic.assignment[p], 0,
        )  # fmt: skip
    with pytest.raises(TopicExists):
        await _topic(kv)
    assert list(await list_topics(kv)) == ["orders"]
    with pytest.raises(UnknownTopicOrPartition):
        await get_partition_state(kv, "orders", 6)
    with pytest.raises(UnknownTopicOrPartition):
        await get_topic(kv, "nope")


async def test_many_partitions_and_an_interrupted_creation_is_completed(kv: KVStore, store_clock):
    """200 partitions (more than one etcd transaction holds) are all created; lost states are recreated, changed ones kept."""
    await create_topic(kv, "wide", 200, 2, [1, 2, 3, 4])
    assert (await kv.get(KEYS.partitions_prefix("wide"), prefix=True)).count == 200
    changed = await update_partition_state(kv, "wide", 5, _new_leader)
    await kv.delete(KEYS.partition("wide", 150))
    assert await ensure_partition_states(kv, await get_topic(kv, "wide")) == 1
    assert await get_partition_state(kv, "wide", 5) == changed
    assert (await get_partition_state(kv, "wide", 150)).version == 0


async def test_update_partition_state_retries_lost_races(kv: KVStore, store_clock):
    """Concurrent updaters each bump the leader epoch; none is lost, and version counts every change."""
    await _topic(kv)
    rounds, tasks = 5, 4
    async with trio.open_nursery() as nursery:
        for _ in range(tasks):

            async def updater() -> None:
                for _ in range(rounds):
                    await update_partition_state(kv, "orders", 0, _new_leader)

            nursery.start_soon(updater)
    state = await get_partition_state(kv, "orders", 0)
    assert state.leader_epoch == state.version == rounds * tasks
    unchanged = await update_partition_state(kv, "orders", 0, lambda s: None)
    assert unchanged == state


async def test_stale_revision_cas_fails(kv: KVStore, store_clock):
    """A write guarded by a partition state's old mod_revision loses once someone else changed the state."""
    await _topic(kv)
    old = await get_partition_state(kv, "orders", 1)
    await update_partition_state(kv, "orders", 1, _new_leader)
    key = KEYS.partition("orders", 1)
    stale = await kv.txn([Compare.mod_revision(key, "==", old.mod_revision)], [Put(key, _new_leader(old).to_bytes())])
    assert not stale.succeeded
    assert (await get_partition_state(kv, "orders", 1)).leader_epoch == 1


async def test_two_controllers_never_both_write_partition_state(kv: KVStore, store_clock):
    """A controller whose lease lapsed is fenced: after another is elected, its writes fail, stale or fresh."""
    await _topic(kv)
    old_lease = await kv.grant_lease(1)
    old_term = await campaign(kv, 1, old_lease)
    assert (await update_partition_state(kv, "orders", 2, _new_leader, fence=fence_for(old_term))).leader_epoch == 1
    seen_by_old = await get_partition_state(kv, "orders", 2)
    new_lease = await kv.grant_lease(30)
    with trio.fail_after(DEADLINE_S):
        new_term = await campaign(kv, 2, new_lease)  # returns once the old lease has lapsed
    assert new_term.epoch > old_term.epoch

    async def old_writes() -> None:
        with pytest.raises(NotController):
            await update_partition_state(kv, "orders", 2, _new_leader, fence=fence_for(old_term))

    async def new_writes() -> None:
        await update_partition_state(kv, "orders", 2, _new_leader, fence=fence_for(new_term))

    async with trio.open_nursery() as nursery:  # the deposed and the new controller race
        nursery.start_soon(old_writes)
        nursery.start_soon(new_writes)
    key = KEYS.partition("orders", 2)
    guarded = [*fence_for(old_term), Compare.mod_revision(key, "==", seen_by_old.mod_revision)]
    assert not (await kv.txn(guarded, [Put(key, b"{}")])).succeeded
    final = await get_partition_state(kv, "orders", 2)
    assert final.leader_epoch == 2 and final.version == 2


async def test_partition_state_invariants_are_asserted():
    """A leader outside the ISR, or an ISR member outside the replicas, is a bug caught at construction."""
    with pytest.raises(AssertionError):
        PartitionState((1, 2), 3, 0, (1, 2))
    with pytest.raises(AssertionError):
        PartitionState((1, 2), 1, 0, (1, 4))
    assert PartitionState((1, 2), NO_LEADER, 3, ()).leader == NO_LEADER


# -- producer ids ------------------------------------------------------------------------


async def test_producer_id_blocks_are_disjoint_under_races(kv: KVStore, store_clock):
    """Racing allocators get disjoint blocks that together cover 0..N without a gap."""
    blocks: list[range] = []
    async with trio.open_nursery() as nursery:
        for _ in range(4):

            async def allocator() -> None:
                for _ in range(3):
                    blocks.append(await allocate_producer_ids(kv, block_size=100))

            nursery.start_soon(allocator)
    ids = sorted(i for b in blocks for i in b)
    assert ids == list(range(1200))


async def test_memory_store_call_delay_is_virtual_network_time(autojump_clock):
    """call_delay_s delays each request by the injected amount of trio time; racing CAS writers still lose no update."""
    from minilog.metastore import MemoryStore

    delays = iter([0.25, 0.5] + [0.01] * 1000)
    async with MemoryStore.open(call_delay_s=lambda: next(delays)) as kv:
        start = trio.current_time()
        await kv.put(b"/x", b"0")
        assert trio.current_time() - start == pytest.approx(0.25)
        await kv.get(b"/x")
        assert trio.current_time() - start == pytest.approx(0.75)

        async def writer(i: int) -> None:
            for _ in range(3):
                while True:
                    (cur,) = (await kv.get(b"/x")).kvs
                    guard = Compare.mod_revision(b"/x", "==", cur.mod_revision)
                    if (await kv.txn([guard], [Put(b"/x", b"%d" % (int(cur.value) + 1))])).succeeded:
                        break

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(writer, i)
        assert (await kv.get(b"/x")).kvs[0].value == b"12"
