"""Fault tests with real processes (issue 9 section 4): a real etcd and three real `minilog serve`
brokers, RF=3, min.insync.replicas=2, acks=all, every value unique; faults are SIGKILL, SIGSTOP,
a TCP proxy cutting a follower off, and etcd going away. After each test the history checker
(tests/_checker.py) reads every partition back from its leader and every replica's files, and
reports lost acknowledged writes, an offset holding two values, values never sent, duplicates
(where the producer is idempotent) and gaps.

Rules: no sleeps to synchronise (every wait is a condition with a deadline); seeds are printed in
failure messages; settings are small (2 s broker session, replica.lag.time.max.ms 2000) so each fault
costs seconds. Each test's docstring ends with its approximate run time on this 2-core machine.
"""

from __future__ import annotations

import importlib.util
import os
import random

import pytest
import trio

from _checker import History, check
from _cluster_fixtures import LocalCluster, ProduceWorkload, host_of, open_cluster
from minilog.client.producer import AsyncProducer
from minilog.errors import (
    FencedMemberEpochError,
    NotEnoughReplicasError,
    StaleMemberEpochError,
    UnknownMemberIdError,
)
from minilog.protocol import ApiKey, ErrorCode, decode_records


pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("minilog.broker.replica_fetcher") is None,
    reason="needs the replication data plane (issue 9 section 2: minilog/broker/replica_fetcher.py)")


def seed_of() -> int:
    """A fresh seed per run, or MINILOG_FAULT_SEED to replay one; tests name it in their failure messages."""
    return int(os.environ.get("MINILOG_FAULT_SEED", random.randrange(1 << 30)))


async def check_everything(c: LocalCluster, topic: str, partitions: int, h: History, *,
                           duplicates_allowed: bool = True, context: str = "") -> None:
    """Wait for full ISRs, then read every partition from its leader and from every replica's files
    (below the high watermark), feed it all to the checker, and require byte-identical replicas."""
    await c.wait_ready(topic)
    for p in range(partitions):
        tp = (topic, p)
        records = await c.read_partition(topic, p)
        h.read_all("leader", tp, records)
        hw = records[-1][0] + 1 if records else 0
        copies = {b: c.replica_batches(b, topic, p, hw) for b in c.nodes}
        for b, batches in copies.items():
            values = decode_records(b"".join(batches), topic, p)
            h.read_all(f"replica-{b}", tp, [(r.offset, r.value) for r in values if r.offset < hw])
        first = next(iter(copies))
        for b, batches in copies.items():
            assert batches == copies[first], (
                f"{context}: {topic}-{p}: broker {b}'s batches below the high watermark {hw} differ "
                f"from broker {first}'s ({len(batches)} vs {len(copies[first])} batches)")
    check(h).assert_ok(duplicates_allowed=duplicates_allowed, context=context)


@pytest.mark.slow
async def test_leader_sigkill_rounds_lose_no_acked_write(tmp_path) -> None:
    """Leader SIGKILL at random moments while producing (acks=all, RF 3, min ISR 2), restarting the
    killed broker each round: no acked write lost, no offset with two values, replicas byte-identical
    below the high watermark. 5 rounds (MINILOG_FAULT_ROUNDS=20 for the issue's 20), about 40 s
    (slow tier)."""
    seed = seed_of()
    rng = random.Random(seed)
    topic, partitions = "kills", 2
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, partitions, 3)
        h = History()
        w = ProduceWorkload(c, topic, partitions, h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            for _round in range(int(os.environ.get("MINILOG_FAULT_ROUNDS", "5"))):
                await w.wait_acked(rng.randint(5, 100))
                p = rng.randrange(partitions)
                victim = await c.leader(topic, p)
                c.kill(victim)
                await c.wait_leader(topic, p, not_in=(victim,))
                await w.wait_acked(10)          # service is back on the new leader
                await c[victim].start()
                await c.wait_ready(topic)       # full ISR before the next round
            w.stop()
        await check_everything(c, topic, partitions, h, context=f"seed {seed}")
        assert w.acked > 0


async def test_two_of_three_down_refuses_acks_all_then_resumes(tmp_path) -> None:
    """Both followers killed: once the ISR is the leader alone, acks=all produce fails with
    NOT_ENOUGH_REPLICAS and nothing is acknowledged; after the restarts writes resume and nothing
    acknowledged earlier is missing. About 11 s."""
    topic = "two-down"
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, 1, 3)
        h = History()
        w = ProduceWorkload(c, topic, 1, h, tag="before")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await w.wait_acked(50)
            w.stop()
        leader = await c.leader(topic)
        followers = [b for b in c.nodes if b != leader]
        for b in followers:
            c.kill(b)
        await c.wait_isr(topic, 0, lambda isr: isr == (leader,), "shrunk to the leader alone")
        refused: list = []
        async with AsyncProducer(c.bootstrap, acks="all", retries=0, request_timeout_ms=3000,
                                 delivery_timeout_ms=5000) as producer:
            for i in range(10):
                value = h.sent((topic, 0), b"refused-%d" % i)
                await producer.produce(topic, value, partition=0,
                                       on_delivery=lambda e, r: refused.append((e, r)))
            await producer.flush()
        assert len(refused) == 10
        assert all(isinstance(e, NotEnoughReplicasError) and e.code == ErrorCode.NOT_ENOUGH_REPLICAS
                   for e, _ in refused), refused
        for b in followers:
            await c[b].start()
        await c.wait_ready(topic)
        w2 = ProduceWorkload(c, topic, 1, h, tag="after")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w2.run)
            await w2.wait_acked(50)
            w2.stop()
        await check_everything(c, topic, 1, h)
        read = {v for s, _, _, v in h.reads if s == "leader"}
        assert not any(v.startswith(b"refused-") for v in read), "a refused write was stored"


async def test_paused_leader_steps_down_and_acks_nothing_after(tmp_path) -> None:
    """Leader SIGSTOPped past its lease while producing, then SIGCONT: a new leader takes over, the old
    one steps down, truncates and rejoins as a follower; nothing it accepted after losing leadership is
    acknowledged (no acked write lost, no offset with two values). About 12 s."""
    topic = "pause"
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, 1, 3)
        h = History()
        w = ProduceWorkload(c, topic, 1, h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await w.wait_acked(50)
            old = await c.leader(topic)
            c.pause(old)
            new = await c.wait_leader(topic, not_in=(old,))
            await w.wait_acked(50)              # acks=all works with the two others
            c.resume(old)
            await c.wait_isr(topic, 0, lambda isr: old in isr and len(isr) == 3, "the old leader back")
            await w.wait_acked(20)
            w.stop()
        assert await c.leader(topic) in c.nodes and new != old
        await check_everything(c, topic, 1, h)


async def test_follower_cut_off_leaves_isr_and_rejoins(tmp_path) -> None:
    """A follower blackholed by the leader's proxy leaves the ISR after replica.lag.time.max.ms; acks=all
    keeps working with the other two; healed, it catches up and rejoins. About 10 s."""
    topic = "cut"
    async with open_cluster(str(tmp_path), proxied=True) as c:
        await c.create_topic(topic, 1, 3)
        h = History()
        w = ProduceWorkload(c, topic, 1, h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await w.wait_acked(30)
            leader = await c.leader(topic)
            follower = next(b for b in c.nodes if b != leader)
            for b in c.nodes:                   # from every broker, in case leadership moves
                if b != follower:
                    proxy = c[b].proxy
                    assert proxy is not None
                    proxy.cut(host_of(follower), "blackhole")
            await c.wait_isr(topic, 0, lambda isr: follower not in isr and len(isr) == 2,
                             f"broker {follower} out")
            await w.wait_acked(50)
            for b in c.nodes:
                proxy = c[b].proxy
                assert proxy is not None
                proxy.heal()
            await c.wait_isr(topic, 0, lambda isr: follower in isr, f"broker {follower} back")
            await w.wait_acked(20)
            w.stop()
        await check_everything(c, topic, 1, h)


@pytest.mark.slow
async def test_idempotent_producer_across_leader_kills_has_no_duplicates(tmp_path) -> None:
    """An idempotent producer (acks=all) across 3 leader kills: no duplicates, and each partition holds
    its values in the order sent with none missing that was acknowledged. About 30 s (slow tier)."""
    seed = seed_of()
    rng = random.Random(seed)
    topic, partitions = "idem", 2
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, partitions, 3)
        h = History()
        w = ProduceWorkload(c, topic, partitions, h, enable_idempotence=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            for _round in range(3):
                await w.wait_acked(rng.randint(10, 80))
                p = rng.randrange(partitions)
                victim = await c.leader(topic, p)
                c.kill(victim)
                await c.wait_leader(topic, p, not_in=(victim,))
                await w.wait_acked(10)
                await c[victim].start()
                await c.wait_ready(topic)
            w.stop()
        await check_everything(c, topic, partitions, h, duplicates_allowed=False, context=f"seed {seed}")
        for p in range(partitions):
            stored = [v for s, tp, _, v in sorted(h.reads, key=lambda r: r[2])
                      if s == "leader" and tp == (topic, p)]
            sent_order = {v: i for i, v in enumerate(w.order[p])}
            positions = [sent_order[v] for v in stored]
            assert positions == sorted(positions), f"seed {seed}: {topic}-{p} out of send order"


@pytest.mark.slow
async def test_rolling_restart_with_controlled_shutdown(tmp_path) -> None:
    """SIGTERM (controlled shutdown) and restart of each broker in turn under load: no delivery fails
    (only retriable errors on the way), nothing lost. About 22 s (slow tier)."""
    topic, partitions = "rolling", 3
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, partitions, 3)
        h = History()
        w = ProduceWorkload(c, topic, partitions, h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            for b in list(c.nodes):
                await w.wait_acked(30)
                assert await c.stop(b) == 0, c[b].log_tail()
                await w.wait_acked(30)
                await c[b].start()
                await c.wait_ready(topic)
            await w.wait_acked(30)
            w.stop()
        assert w.failed == 0, f"deliveries failed: {w.errors[:5]}"
        await check_everything(c, topic, partitions, h)


async def test_etcd_down_for_a_while(tmp_path) -> None:
    """etcd killed for 5 s (more than two broker sessions) under load, then restarted from its data: the
    leaders keep acknowledging while it is down, the cluster recovers, nothing acknowledged is lost.
    About 12 s."""
    topic = "etcd-down"
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, 1, 3)
        h = History()
        w = ProduceWorkload(c, topic, 1, h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await w.wait_acked(30)
            c.kill_etcd()
            down_until = trio.current_time() + 5.0    # the fault's length (over two broker sessions),
            await w.wait_acked(30)                     # not a synchronisation: leaders keep serving
            await trio.sleep_until(down_until)
            await c.restart_etcd()
            await c.wait_ready(topic)
            await w.wait_acked(30)
            w.stop()
        await check_everything(c, topic, 1, h)


async def test_consumer_group_survives_its_coordinators_broker(tmp_path) -> None:
    """A consumer group consuming (committing after each poll) while its coordinator's broker is killed:
    it keeps consuming to the end, its committed offsets never go back and are not lost. About 11 s."""
    from minilog.client.consumer import AsyncConsumer

    topic, partitions, group = "grp", 3, "g1"
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, partitions, 3)
        h = History()
        w = ProduceWorkload(c, topic, partitions, h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await w.wait_acked(300)
            w.stop()
        total = w.sent
        seen: set[bytes] = set()
        killed = False
        fenced = 0
        async with AsyncConsumer(c.bootstrap, group_id=group, enable_auto_commit=False,
                                 auto_offset_reset="earliest", request_timeout_ms=10000) as consumer:
            await consumer.subscribe([topic])
            with trio.fail_after(90):
                acked = set(h.acks)
                while not acked <= seen:
                    records = await consumer.poll(timeout_ms=500)
                    for r in records:
                        h.read("group", (r.topic, r.partition), r.offset, r.value)
                        seen.add(r.value)
                    if records:
                        try:
                            await consumer.commit()
                        except (UnknownMemberIdError, FencedMemberEpochError, StaleMemberEpochError):
                            fenced += 1     # the new coordinator fenced us: we rejoin, as Kafka's consumer
                            continue
                        committed = await consumer.committed([(topic, p) for p in range(partitions)])
                        for (t, p), o in committed.items():
                            if o is not None and o >= 0:
                                h.committed(group, (t, p), o)
                    if not killed and len(seen) > w.acked // 3:
                        async with c.admin() as admin:
                            found = await admin._request(ApiKey.FIND_COORDINATOR,
                                                         {"key_type": 0, "keys": [group]})
                        coordinator = found["coordinators"][0]["node_id"]
                        c.kill(coordinator)
                        killed = True
                        restart_me = coordinator
            # Then until everything is committed: a member fenced by the new coordinator rejoins and
            # goes back to the last committed offsets (at-least-once), so it may read some again.
            tps = [(topic, p) for p in range(partitions)]
            ends = await consumer.end_offsets(tps)
            with trio.fail_after(60):
                while True:
                    for r in await consumer.poll(timeout_ms=200):
                        h.read("group", (r.topic, r.partition), r.offset, r.value)
                    try:
                        await consumer.commit()
                    except (UnknownMemberIdError, FencedMemberEpochError, StaleMemberEpochError):
                        fenced += 1
                        continue
                    final = await consumer.committed(tps)
                    for (t, p), o in final.items():
                        if o is not None and o >= 0:
                            h.committed(group, (t, p), o)
                    if final == ends:
                        break
        assert killed
        backwards = check(h).backwards
        assert not backwards, f"committed offsets went back (killed broker {restart_me}): {backwards}"
        await c[restart_me].start()
        assert total >= len(seen)
        await check_everything(c, topic, partitions, h)


@pytest.mark.parametrize("unclean", [False, True], ids=["clean", "unclean"])
async def test_last_replica_standing(tmp_path, unclean: bool) -> None:
    """KIP-966's case: min.insync.replicas=1, both followers killed so the ISR shrinks to the leader,
    which acknowledges more writes alone, then dies too; the followers come back out of sync.
    Clean (the default): neither is elected, nothing is lost once the last leader returns.
    Unclean (unclean.leader.election.enable): one is elected and the writes only the dead leader held
    are lost, exactly as the setting trades. About 15 s each."""
    topic = "standing"
    settings = {"unclean.leader.election.enable": "true"} if unclean else {}
    async with open_cluster(str(tmp_path), settings=settings) as c:
        await c.create_topic(topic, 1, 3, config={"min.insync.replicas": "1"})
        h = History()
        w = ProduceWorkload(c, topic, 1, h, tag="shared")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await w.wait_acked(30)
            w.stop()
        leader = await c.leader(topic)
        followers = [b for b in c.nodes if b != leader]
        for b in followers:
            c.kill(b)
        await c.wait_isr(topic, 0, lambda isr: isr == (leader,), "the leader alone")
        alone = ProduceWorkload(c, topic, 1, h, tag="alone")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(alone.run)
            await alone.wait_acked(30)
            alone.stop()
        c.kill(leader)
        for b in followers:
            await c[b].start()
        await c.wait_ready(brokers=followers)
        if not unclean:
            # Two session timeouts of watching: the controller has seen both followers register and
            # the leader's lease lapse, and must still not elect an out-of-sync replica.
            deadline = trio.current_time() + 4.0
            while trio.current_time() < deadline:
                assert await c.leader(topic) not in followers, "an out-of-sync replica was elected"
                await trio.sleep(0.2)
            await c[leader].start()
            await check_everything(c, topic, 1, h)
        else:
            await c.wait_leader(topic, not_in=(leader,))
            await c[leader].start()
            await c.wait_ready(topic)
            for p in range(1):
                h.read_all("leader", (topic, p), await c.read_partition(topic, p))
            report = check(h)
            lost = {v for _, _, v, _ in report.lost}
            assert lost and all(v.startswith(b"alone-") for v in lost), str(report)
            assert not report.conflicts and not report.unknown, str(report)


async def test_follower_disk_loss_is_copied_back(tmp_path) -> None:
    """A follower killed and restarted with an empty data dir (its disk lost) fetches the partition again
    from the leader and rejoins the ISR; its copy ends byte-identical to the others. About 12 s."""
    import shutil

    topic = "disk-loss"
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, 1, 3)
        h = History()
        w = ProduceWorkload(c, topic, 1, h)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(w.run)
            await w.wait_acked(100)
            leader = await c.leader(topic)
            victim = next(b for b in c.nodes if b != leader)
            c.kill(victim)
            await c.wait_isr(topic, 0, lambda isr: victim not in isr, f"broker {victim} out")
            shutil.rmtree(c[victim].data_dir)
            await w.wait_acked(50)
            await c[victim].start()
            await c.wait_isr(topic, 0, lambda isr: victim in isr, f"broker {victim} back")
            await w.wait_acked(20)
            w.stop()
        await check_everything(c, topic, 1, h)


async def test_concurrent_producers_get_the_offsets_their_records_have(tmp_path) -> None:
    """Two producers on one partition (acks=all, small batches, so a request carries several batches of
    the partition): every acknowledged record is at the offset its delivery report named. About 5 s."""
    topic = "two-writers"
    async with open_cluster(str(tmp_path)) as c:
        await c.create_topic(topic, 1, 3)
        h = History()
        options = {"batch_size": 512, "linger_ms": 5, "max_in_flight": 1, "chunk": 400}
        writers = [ProduceWorkload(c, topic, 1, h, tag=f"w{i}", **options) for i in range(2)]
        async with trio.open_nursery() as nursery:
            for w in writers:
                nursery.start_soon(w.run)
            for w in writers:
                await w.wait_acked(600)
            for w in writers:
                w.stop()
        await check_everything(c, topic, 1, h, duplicates_allowed=False)
