"""Replication's data plane: a leader and two followers in one trio run, over real sockets.

The control plane is the stand-in of tests/_replication_standin.py: the
real metastore records and compare-and-swaps on a MemoryStore, applied to
each broker's ReplicaManager in commit order. Every wait is a condition
with a deadline.
"""

from __future__ import annotations

import os

from minilog.broker.app import Broker
from minilog.protocol import ApiKey, ErrorCode

from _replication_standin import Client, StandInControl, batch, cluster, name_led_by, wait_for

TOPIC = name_led_by("events", 1)        # broker 1 leads partition 0 at epoch 0


def caught_up(control: StandInControl, topic: str = TOPIC, p: int = 0) -> bool:
    """Every replica holds the leader's whole log and knows its HW."""
    parts = [b.replicas.partition(topic, p) for b in control.brokers.values()]
    if any(part is None for part in parts):
        return False
    leader = next((x for x in parts if x is not None and x.is_leader), None)
    if leader is None:
        return False
    return all(x is not None and x.log_end_offset == leader.log_end_offset == x.high_watermark
               for x in parts)


def log_bytes(broker: Broker, topic: str = TOPIC, p: int = 0, end: int | None = None) -> bytes:
    part = broker.replicas.partition(topic, p)
    assert part is not None
    limit = part.high_watermark if end is None else end
    return part.log.read(part.log_start_offset, 1 << 30, max_offset=limit) if limit > 0 else b""


async def test_followers_replicate_byte_identical_and_acks_all_waits(tmp_path):
    """acks=all answers only once both followers hold the batch; below the HW every replica
    holds the same bytes; followers learn the HW; a fetch at a follower is refused."""
    async with cluster(tmp_path) as (control, _):
        await control.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2"})
        await wait_for(lambda: all(b.replicas.partition(TOPIC, 0) is not None
                                   for b in control.brokers.values()), "replicas open")
        state = await control.state(TOPIC, 0)
        leader = control.brokers[state.leader]
        followers = [control.brokers[r] for r in state.replicas if r != state.leader]
        client = await Client.connect(leader)
        for i in range(20):
            r = await client.produce(TOPIC, 0, batch(b"v%d" % i, b"w%d" % i))
            assert r["error_code"] == 0, r
            assert r["base_offset"] == 2 * i
            for f in followers:                         # acks=all: both followers have it
                part = f.replicas.partition(TOPIC, 0)
                assert part is not None and part.log_end_offset >= 2 * i + 2
        await wait_for(lambda: caught_up(control), "followers catch up with the HW")
        reference = log_bytes(leader)
        assert reference and all(log_bytes(f) == reference for f in followers)
        follower_client = await Client.connect(followers[0])
        r = await follower_client.fetch(TOPIC, 0, 0)
        assert r["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
        r = await follower_client.produce(TOPIC, 0, batch(b"x"))
        assert r["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER
        r = await client.fetch(TOPIC, 0, 0, epoch=state.leader_epoch)
        assert r["error_code"] == 0 and r["high_watermark"] == 40


async def test_acks_all_times_out_while_followers_are_cut_off(tmp_path):
    """With both followers cut off (and still in the ISR), acks=all gets REQUEST_TIMED_OUT
    and the HW stays put; once they are back the HW covers the batch."""
    async with cluster(tmp_path, cuts=((2, 1), (3, 1))) as (control, _):
        await control.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2"})
        await wait_for(lambda: caught_up(control), "replicas open")
        leader = control.brokers[1]
        client = await Client.connect(leader)
        assert (await client.produce(TOPIC, 0, batch(b"a")))["error_code"] == 0
        for f in (2, 3):
            control.cuts[(f, 1)].block()
        r = await client.produce(TOPIC, 0, batch(b"b"), timeout_ms=300)
        assert r["error_code"] == ErrorCode.REQUEST_TIMED_OUT, r
        part = leader.replicas.partition(TOPIC, 0)
        assert part is not None and part.high_watermark == 1 and part.log_end_offset == 2
        for f in (2, 3):
            control.cuts[(f, 1)].unblock()
        await wait_for(lambda: part.high_watermark == 2, "the HW covers the batch")
        # Followers connect from their own listener address (broker n on 127.0.0.n).
        assert control.cuts[(2, 1)].peers == {"127.0.0.2"}
        assert control.cuts[(3, 1)].peers == {"127.0.0.3"}


async def test_isr_shrinks_and_expands_and_min_insync(tmp_path):
    """A follower that stops fetching leaves the ISR after replica.lag.time.max.ms (acks=all
    keeps working with two); a second one leaving makes acks=all fail NOT_ENOUGH_REPLICAS
    (and the HW stop, strict min ISR); both come back when they catch up."""
    settings = {"replica.lag.time.max.ms": 400}
    async with cluster(tmp_path, settings=settings, cuts=((2, 1), (3, 1))) as (control, _):
        await control.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2"})
        await wait_for(lambda: caught_up(control), "replicas open")
        leader = control.brokers[1]
        part = leader.replicas.partition(TOPIC, 0)
        assert part is not None and part.isr == [1, 2, 3]
        client = await Client.connect(leader)

        control.cuts[(3, 1)].block()
        await wait_for(lambda: part.isr == [1, 2], "broker 3 leaves the ISR")
        assert (await control.state(TOPIC, 0)).isr == (1, 2)
        r = await client.produce(TOPIC, 0, batch(b"two"))
        assert r["error_code"] == 0, r

        # Parked acks=all while the ISR drops below min.insync.replicas.
        control.cuts[(2, 1)].block()
        r = await client.produce(TOPIC, 0, batch(b"parked"), timeout_ms=10_000)
        assert r["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, r
        assert part.isr == [1]
        r = await client.produce(TOPIC, 0, batch(b"refused"))
        assert r["error_code"] == ErrorCode.NOT_ENOUGH_REPLICAS, r
        end = part.log_end_offset
        r = await client.produce(TOPIC, 0, batch(b"acks1"), acks=1)
        assert r["error_code"] == 0
        assert part.log_end_offset == end + 1 and part.high_watermark < end   # strict min ISR

        control.cuts[(2, 1)].unblock()
        control.cuts[(3, 1)].unblock()
        await wait_for(lambda: sorted(part.isr) == [1, 2, 3], "both rejoin the ISR")
        assert sorted((await control.state(TOPIC, 0)).isr) == [1, 2, 3]
        await wait_for(lambda: caught_up(control), "everything replicated")
        assert all(log_bytes(b) == log_bytes(leader) for b in control.brokers.values())


async def test_deposed_leader_truncates_its_divergent_tail(tmp_path):
    """The old leader appended batches its followers never got; after a new leader is elected
    it fails its parked acks=all, truncates that tail by epoch and ends byte-identical to the
    new leader; the stale epoch is fenced."""
    async with cluster(tmp_path, cuts=((2, 1), (3, 1))) as (control, nursery):
        await control.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2"})
        await wait_for(lambda: caught_up(control), "replicas open")
        old = control.brokers[1]
        client = await Client.connect(old)
        for i in range(5):
            assert (await client.produce(TOPIC, 0, batch(b"c%d" % i)))["error_code"] == 0
        await wait_for(lambda: caught_up(control), "committed everywhere")
        for f in (2, 3):
            control.cuts[(f, 1)].block()
        for i in range(3):                              # the divergent tail (acks=1)
            assert (await client.produce(TOPIC, 0, batch(b"lost%d" % i), acks=1))["error_code"] == 0
        old_part = old.replicas.partition(TOPIC, 0)
        assert old_part is not None and old_part.log_end_offset == 8

        parked: dict = {}

        async def produce_parked() -> None:
            c = await Client.connect(old)
            parked.update(await c.produce(TOPIC, 0, batch(b"parked"), timeout_ms=20_000))

        nursery.start_soon(produce_parked)
        await wait_for(lambda: old_part.statistics().waiters >= 1, "acks=all parked")
        await control.elect(TOPIC, 0, 2)
        await wait_for(lambda: bool(parked), "the parked produce is answered")
        assert parked["error_code"] == ErrorCode.NOT_LEADER_OR_FOLLOWER, parked

        new = control.brokers[2]
        new_client = await Client.connect(new)
        for i in range(4):
            assert (await new_client.produce(TOPIC, 0, batch(b"n%d" % i)))["error_code"] == 0
        for f in (2, 3):
            control.cuts[(f, 1)].unblock()
        await wait_for(lambda: caught_up(control), "the old leader follows the new one")
        assert old_part.log_end_offset == 9 and not old_part.is_leader
        reference = log_bytes(new)
        assert all(log_bytes(b) == reference for b in control.brokers.values())
        assert b"lost" not in reference and b"parked" not in reference
        assert [e.epoch for e in old_part.log.epoch_cache.entries] == [0, 1]
        r = await new_client.fetch(TOPIC, 0, 0, epoch=0)
        assert r["error_code"] == ErrorCode.FENCED_LEADER_EPOCH
        r = await new_client.fetch(TOPIC, 0, 0, epoch=1)
        assert r["error_code"] == 0 and r["high_watermark"] == 9
        # A follower whose last epoch is inconsistent with the leader's log gets where to
        # truncate instead of data (epoch 0 ends at 5 here, it claims to be at 8 in it).
        frame = await new_client.request(ApiKey.FETCH, {
            "replica_id": 3, "max_wait_ms": 0, "min_bytes": 1, "max_bytes": 1 << 20,
            "isolation_level": 0, "topics": [{"topic": TOPIC, "partitions": [
                {"partition": 0, "fetch_offset": 8, "partition_max_bytes": 1 << 20,
                 "current_leader_epoch": 1, "last_fetched_epoch": 0}]}]})
        p = frame.payload["topics"][0]["partitions"][0]
        assert (p["error_code"], p["diverging_epoch"], p["diverging_end_offset"], p["records"]) == (
            0, 0, 5, -1)


async def test_idempotent_retry_after_failover_is_deduplicated(tmp_path):
    """Followers rebuild producer state from replicated batches: a retry of an acknowledged
    idempotent batch sent to the new leader gets the original offsets, nothing is written."""
    async with cluster(tmp_path) as (control, _):
        await control.create_topic(TOPIC, 1, 3, {"min.insync.replicas": "2"})
        await wait_for(lambda: caught_up(control), "replicas open")
        client = await Client.connect(control.brokers[1])
        batches = [batch(b"i%d" % i, b"j%d" % i, producer_id=77, producer_epoch=0,
                         base_sequence=2 * i) for i in range(3)]
        for i, b in enumerate(batches):
            r = await client.produce(TOPIC, 0, b)
            assert r["error_code"] == 0 and r["base_offset"] == 2 * i
        await wait_for(lambda: caught_up(control), "replicated")
        for bid in (2, 3):
            part = control.brokers[bid].replicas.partition(TOPIC, 0)
            assert part is not None and len(part.log.producer_state) == 1
        await control.elect(TOPIC, 0, 3)
        new = control.brokers[3]
        new_part = new.replicas.partition(TOPIC, 0)
        assert new_part is not None
        await wait_for(lambda: new_part.is_leader, "broker 3 leads")
        new_client = await Client.connect(new)
        r = await new_client.produce(TOPIC, 0, batches[2])
        assert r["error_code"] == 0 and r["base_offset"] == 4, r
        assert new_part.log_end_offset == 6
        nxt = batch(b"next", producer_id=77, producer_epoch=0, base_sequence=6)
        r = await new_client.produce(TOPIC, 0, nxt)
        assert r["error_code"] == 0 and r["base_offset"] == 6
        gap = batch(b"gap", producer_id=77, producer_epoch=0, base_sequence=9)
        r = await new_client.produce(TOPIC, 0, gap)
        assert r["error_code"] == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


async def test_stale_state_is_ignored_and_removed_replica_is_deleted(tmp_path):
    """A state with an older leader epoch changes nothing; a state without this broker in
    its replicas closes and deletes the local replica."""
    async with cluster(tmp_path) as (control, _):
        await control.create_topic(TOPIC, 1, 3)
        await wait_for(lambda: caught_up(control), "replicas open")
        meta = control.topics[TOPIC]
        b3 = control.brokers[3]
        part = b3.replicas.partition(TOPIC, 0)
        assert part is not None
        await control.elect(TOPIC, 0, 3)
        await wait_for(lambda: part.is_leader and part.leader_epoch == 1, "broker 3 leads")
        from minilog.broker._services import PartitionState as S
        await b3.replicas.apply_partition_state(meta, 0, S(1, 0, (1, 2, 3), (1, 2, 3), 0))
        assert part.is_leader and part.leader_epoch == 1
        await b3.replicas.apply_partition_state(meta, 0, S(1, 2, (1, 2), (1, 2), 5))
        assert b3.replicas.partition(TOPIC, 0) is None and part.closed
        assert not os.path.isdir(os.path.join(b3.data_dir, f"{TOPIC}-0"))
