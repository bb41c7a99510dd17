"""The controller under failures, with a real etcd and real brokers (issue 9, section 2):
controller failover, a stale controller fenced, last replica standing, controlled shutdown,
preferred-leader rebalance, a broker that loses its lease, and topic changes made through one
broker reaching all. Brokers run in-process (tests/_cluster_control.py).
"""

from __future__ import annotations

import os

import pytest
import trio

from minilog.broker.cluster import ClusterPicture, Controller, MetadataFollower
from minilog.metastore import NO_LEADER, ClusterKeys, ControllerRecord, EtcdStore, NotController
from minilog.protocol import ApiKey, ErrorCode

from _cluster_control import open_cluster, wait_for

pytestmark = pytest.mark.usefixtures("etcd_server")


@pytest.fixture
def endpoint(etcd_server) -> str:
    return etcd_server.endpoint


def _controller_id(cluster) -> int:
    return cluster.any().node.picture.controller_id


async def test_controller_failover_reelects_and_moves_its_leaderships(endpoint, tmp_path):
    """Killing the controller: another broker is elected (a new controller epoch) and, reading
    everything afresh, moves the dead controller's leaderships within their ISRs."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert (await cluster.create_topic("t", 3, 3))[0] == 0
        await wait_for(lambda: _controller_id(cluster) in (1, 2, 3), "a controller")
        old = _controller_id(cluster)
        old_epoch = cluster.brokers[old].node.picture.controller.epoch
        led = [p for p, s in cluster.states("t").items() if s.leader == old]
        assert led
        await cluster.kill(old)
        await wait_for(lambda: _controller_id(cluster) not in (-1, old), "a new controller")
        assert cluster.any().node.picture.controller.epoch > old_epoch
        await wait_for(lambda: all(cluster.states("t")[p].leader not in (old, NO_LEADER) for p in led),
                       "the new controller moved the old one's leaderships")
        await wait_for(lambda: all(old not in s.isr for s in cluster.states("t").values()),
                       "the old controller left every ISR")


async def test_stale_controller_is_fenced(endpoint, tmp_path):
    """A controller whose term is over (its controller key was replaced) can write nothing:
    its pass raises NotController and the partition states stay as they were."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert (await cluster.create_topic("t", 2, 3))[0] == 0
        await wait_for(lambda: cluster.any().node.picture.controller is not None, "a controller")
        current = cluster.any().node.picture.controller
        stale = ControllerRecord(current.broker_id, current.epoch - 1)
        before = cluster.states("t")
        async with EtcdStore.connect(endpoint) as kv:
            picture = ClusterPicture(ClusterKeys(cluster.root))
            follower = MetadataFollower(kv, picture)
            async with trio.open_nursery() as nursery:
                await nursery.start(follower.run)
                controller = Controller(kv, follower)
                # Pretend broker 3 restarted (another epoch accepted): the pass wants to move
                # everything off it, but the term is stale.
                accepted = {b: r.epoch for b, r in picture.brokers.items()} | {3: -1}
                with pytest.raises(NotController):
                    await controller._pass(stale, accepted)
                nursery.cancel_scope.cancel()
        assert cluster.states("t") == before


async def test_last_replica_standing_is_elected_again_only_itself(endpoint, tmp_path):
    """ISR shrunk to the leader, then the leader dies: the partition goes offline (NO_LEADER),
    the ISR keeps that last member, the live out-of-sync replica is not elected; when the
    last member returns it leads again."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert (await cluster.create_topic("t", 1, 2))[0] == 0
        state = cluster.state("t", 0)
        leader, follower_id = state.replicas
        link = cluster.brokers[leader].node.link
        shrunk = await link.alter_isr("t", 0, state.leader_epoch, (leader,))
        assert shrunk is not None and shrunk.isr == (leader,)
        assert await link.alter_isr("t", 0, state.leader_epoch + 7, (leader,)) is None   # fenced
        await wait_for(lambda: cluster.state("t", 0).isr == (leader,), "the ISR shrank")
        if _controller_id(cluster) == leader:
            pytest.skip("the leader is also the controller here")   # placement is by name; rare
        await cluster.kill(leader)
        await wait_for(lambda: cluster.state("t", 0).leader == NO_LEADER, "the partition offline")
        offline = cluster.state("t", 0)
        assert offline.isr == (leader,) and offline.leader_epoch == state.leader_epoch + 1
        md = await cluster.metadata(follower_id, ["t"])
        assert md["topics"][0]["partitions"][0]["error_code"] == ErrorCode.LEADER_NOT_AVAILABLE
        await cluster.start(leader)
        await wait_for(lambda: cluster.state("t", 0).leader == leader, "the last ISR member leads again")
        assert cluster.state("t", 0).leader_epoch > offline.leader_epoch


async def test_unclean_election_elects_out_of_sync_replica(endpoint, tmp_path):
    """With unclean.leader.election.enable, the live out-of-sync replica is elected instead."""
    async with open_cluster(endpoint, str(tmp_path), **{"unclean.leader.election.enable": True}) as cluster:
        assert (await cluster.create_topic("t", 1, 2))[0] == 0
        state = cluster.state("t", 0)
        leader, other = state.replicas
        if _controller_id(cluster) == leader:
            pytest.skip("the leader is also the controller here")
        await cluster.brokers[leader].node.link.alter_isr("t", 0, state.leader_epoch, (leader,))
        await wait_for(lambda: cluster.state("t", 0).isr == (leader,), "the ISR shrank")
        await cluster.kill(leader)
        await wait_for(lambda: cluster.state("t", 0).leader == other, "unclean election")
        assert cluster.state("t", 0).isr == (other,)


async def test_controlled_shutdown_moves_leaderships_first(endpoint, tmp_path):
    """A broker asked to stop hands every leadership to another ISR member (the controller's
    controlled-shutdown rule, not an election after its death) before it goes."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert (await cluster.create_topic("t", 6, 3))[0] == 0
        await wait_for(lambda: _controller_id(cluster) in (1, 2, 3), "a controller")
        controller_id = _controller_id(cluster)
        victim = next(b for b in (1, 2, 3) if b != controller_id)
        led = [p for p, s in cluster.states("t").items() if s.leader == victim]
        controller = cluster.brokers[controller_id].node.controller
        await cluster.stop(victim)
        stats = controller.statistics()
        assert stats.by_rule.get("controlled-shutdown", 0) == len(led), stats
        assert stats.by_rule.get("clean-election", 0) == 0, stats
        await wait_for(lambda: all(victim not in s.isr for s in cluster.states("t").values()),
                       "the stopped broker left the ISRs")


async def test_preferred_leader_returns_once_back_in_isr(endpoint, tmp_path):
    """A restarted broker gets its preferred leaderships back once the leaders put it back
    in the ISR (auto.leader.rebalance.enable)."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert (await cluster.create_topic("t", 6, 3))[0] == 0
        await wait_for(lambda: _controller_id(cluster) in (1, 2, 3), "a controller")
        victim = next(b for b in (1, 2, 3) if b != _controller_id(cluster))
        await cluster.kill(victim)
        await wait_for(lambda: all(s.leader != victim and victim not in s.isr
                                   for s in cluster.states("t").values()), "leaders moved")
        await cluster.start(victim)
        if cluster.brokers[victim].node.applier.replicas is not cluster.brokers[victim].broker.replicas:
            # No replication (the stand-in): do the leaders' ISR expansion by hand.
            for p, s in cluster.states("t").items():
                link = cluster.brokers[s.leader].node.link
                assert await link.alter_isr("t", p, s.leader_epoch, (*s.isr, victim)) is not None
        await wait_for(lambda: all(s.leader == s.replicas[0] for s in cluster.states("t").values()),
                       "every preferred replica leads again")


async def test_broker_that_lost_its_lease_registers_again(endpoint, tmp_path):
    """A broker whose lease is revoked behind its back (etcd expired it): its leaderships move
    as for a dead broker, it registers again under a new epoch and stays in the cluster."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert (await cluster.create_topic("t", 3, 3))[0] == 0
        await wait_for(lambda: _controller_id(cluster) in (1, 2, 3), "a controller")
        victim = next(b for b in (1, 2, 3) if b != _controller_id(cluster))
        node = cluster.brokers[victim].node
        old_epoch = node.session.registration.epoch
        before = cluster.states("t")
        led = [p for p, st in before.items() if st.leader == victim]
        assert led
        async with EtcdStore.connect(endpoint) as kv:
            await kv.revoke_lease(node.session.lease.id)
        await wait_for(lambda: node.lease_losses == 1 and node.session is not None
                       and node.session.registration.epoch > old_epoch, "registered again")
        # Treated as a restarted broker: every partition it led was re-elected (a new epoch,
        # another leader for a while: it may lead again once back in the ISR).
        await wait_for(lambda: all(cluster.states("t")[p].leader_epoch > before[p].leader_epoch
                                   for p in led), "its leaderships were re-elected")
        assert sorted(cluster.any().node.picture.brokers) == [1, 2, 3]


async def test_topic_changes_through_one_broker_reach_every_broker(endpoint, tmp_path):
    """Configs, new partitions and deletion requested through broker 3 are applied by all:
    the local partitions get the config, open the new partitions, and lose their directories."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert (await cluster.create_topic("t", 2, 3, via=1))[0] == 0
        c = await cluster.client(3)
        r = await c.request(ApiKey.INCREMENTAL_ALTER_CONFIGS, {"resources": [{
            "resource_type": 2, "resource_name": "t",
            "configs": [{"name": "retention.ms", "op": 0, "value": "1234"}]}], "validate_only": False})
        assert r.payload["results"][0]["error_code"] == 0, r.payload
        r = await c.request(ApiKey.CREATE_PARTITIONS, {"topics": [{"name": "t", "count": 4}],
                                                        "timeout_ms": 10_000, "validate_only": False})
        assert r.payload["results"][0]["error_code"] == 0, r.payload
        for b in (1, 2, 3):
            broker = cluster.brokers[b].broker
            await wait_for(lambda broker=broker: broker.partition("t", 3) is not None,
                           f"broker {b} opened the new partition")
            assert broker.partition("t", 0).log.config.retention_ms == 1234
        r = await c.request(ApiKey.DELETE_TOPICS, {"topics": ["t"], "timeout_ms": 10_000})
        assert r.payload["topics"][0]["error_code"] == 0, r.payload
        await c.aclose()
        for b in (1, 2, 3):
            broker = cluster.brokers[b].broker
            await wait_for(lambda broker=broker: broker.partition("t", 0) is None
                           and not any(d.startswith("t-") and not d.endswith("-delete")
                                       for d in os.listdir(broker.data_dir)),
                           f"broker {b} deleted its replicas")
            assert broker.topic_metadata("t") is None


async def test_find_coordinator_names_the_offsets_partition_leader(endpoint, tmp_path):
    """FIND_COORDINATOR from any broker answers the leader of the group's offsets partition,
    and that broker serves the group."""
    from minilog.broker.groups import OFFSETS_TOPIC, group_partition

    settings = {"offsets.topic.num.partitions": 3, "offsets.topic.replication.factor": 3}
    async with open_cluster(endpoint, str(tmp_path), group_coordinator=True, **settings) as cluster:
        await wait_for(lambda: len(cluster.states(OFFSETS_TOPIC)) == 3, "the offsets topic")
        assert all(len(s.replicas) == 3 for s in cluster.states(OFFSETS_TOPIC).values())
        leader = cluster.state(OFFSETS_TOPIC, group_partition("g", 3)).leader
        for b in (1, 2, 3):
            c = await cluster.client(b)
            r = await c.request(ApiKey.FIND_COORDINATOR, {"key_type": 0, "keys": ["g"]})
            await c.aclose()
            entry = r.payload["coordinators"][0]
            assert entry["error_code"] == 0, entry
            assert (entry["node_id"], entry["port"]) == (leader, cluster.brokers[leader].broker.port)
        coordinator = cluster.brokers[leader].broker.groups
        await wait_for(lambda: coordinator.is_coordinator_for("g"), "the leader loaded the group")


async def test_acknowledged_writes_survive_the_leaders_death(endpoint, tmp_path):
    """With the replica manager's data plane: acks=all writes to an RF=3 partition, then the
    leader dies; the controller elects an ISR member, which holds every acknowledged record
    and accepts new writes at the new epoch."""
    from minilog.protocol import build_batch

    from conftest import fetch_payload, produce_payload

    async with open_cluster(endpoint, str(tmp_path), **{"min.insync.replicas": 2}) as cluster:
        if not hasattr(cluster.any().broker.replicas, "attach_link"):
            pytest.skip("the replica manager does not replicate yet")
        assert (await cluster.create_topic("t", 1, 3))[0] == 0
        await wait_for(lambda: _controller_id(cluster) in (1, 2, 3), "a controller")
        state = cluster.state("t", 0)
        if state.leader == _controller_id(cluster):
            pytest.skip("the leader is also the controller here")   # placement is by name; rare

        async def produce(broker_id: int, value: bytes) -> dict:
            c = await cluster.client(broker_id)
            r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([value])])
            await c.aclose()
            return r.payload["topics"][0]["partitions"][0]

        for i in range(5):
            answer = await produce(state.leader, b"v%d" % i)
            assert answer["error_code"] == 0 and answer["base_offset"] == i, answer
        await cluster.kill(state.leader)
        await wait_for(lambda: cluster.state("t", 0).leader not in (state.leader, NO_LEADER),
                       "a new leader")
        new = cluster.state("t", 0)
        assert new.leader_epoch == state.leader_epoch + 1
        with trio.fail_after(20):
            while (answer := await produce(new.leader, b"after"))["error_code"] != 0:
                await trio.sleep(0.05)     # the new leader may still be applying its state
        assert answer["base_offset"] == 5, answer
        c = await cluster.client(new.leader)
        r = await c.request(ApiKey.FETCH, fetch_payload("t", 0, 0))
        await c.aclose()
        assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0
        assert r.payload["topics"][0]["partitions"][0]["high_watermark"] == 6
