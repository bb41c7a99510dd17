"""The cluster's control plane against a real etcd and real brokers (issue 9, sections 1-2).

Brokers run in-process (one trio run, real sockets, real etcd); tests/_cluster_control.py
starts them. Real-process fault tests are in tests/test_cluster_faults*.py.
"""

from __future__ import annotations

import collections

import pytest

from minilog.protocol import ApiKey, ErrorCode

from _cluster_control import open_cluster, wait_for

pytestmark = pytest.mark.usefixtures("etcd_server")


@pytest.fixture
def endpoint(etcd_server) -> str:
    return etcd_server.endpoint


async def test_rf3_topic_spreads_leaders_and_every_broker_agrees(endpoint, tmp_path):
    """A topic created with RF=3 through one broker: every partition has 3 replicas,
    leaders spread evenly over the 3 brokers, and METADATA from each broker lists the same
    3 brokers, controller and partition states."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert await cluster.create_topic("t", 6, 3, via=2) == (0, None)
        answers = [await cluster.metadata(b, ["t"]) for b in (1, 2, 3)]
        for md in answers:
            assert sorted(b["node_id"] for b in md["brokers"]) == [1, 2, 3]
            ports = {b["node_id"]: b["port"] for b in md["brokers"]}
            assert ports == {i: cluster.brokers[i].broker.port for i in (1, 2, 3)}
            assert md["controller_id"] in (1, 2, 3)
        assert all(md == answers[0] for md in answers), answers
        parts = answers[0]["topics"][0]["partitions"]
        assert len(parts) == 6
        assert all(p["error_code"] == 0 and sorted(p["replicas"]) == [1, 2, 3]
                   and sorted(p["isr"]) == [1, 2, 3] and p["leader"] == p["replicas"][0]
                   and p["leader_epoch"] == 0 for p in parts)
        assert collections.Counter(p["leader"] for p in parts) == {1: 2, 2: 2, 3: 2}


async def test_replication_factor_above_live_brokers_is_refused(endpoint, tmp_path):
    """RF 4 on 3 live brokers: INVALID_REPLICATION_FACTOR, naming the live count; nothing stored."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        code, message = await cluster.create_topic("t", 1, 4)
        assert code == ErrorCode.INVALID_REPLICATION_FACTOR
        assert "3 live brokers" in message
        assert (await cluster.create_topic("t", 1, 3))[0] == 0
        assert (await cluster.create_topic("t", 1, 3, via=3))[0] == ErrorCode.TOPIC_ALREADY_EXISTS


async def test_leader_death_moves_leadership_within_isr(endpoint, tmp_path):
    """Killing a broker: each partition it led gets a new leader from the rest of its ISR
    (the next replica in preference order), leader epoch + 1, and the dead broker leaves
    every ISR; METADATA stops listing it."""
    async with open_cluster(endpoint, str(tmp_path)) as cluster:
        assert await cluster.create_topic("t", 6, 3) == (0, None)
        before = cluster.states("t")
        victim = 2 if cluster.any().node.picture.controller_id != 2 else 3
        await cluster.kill(victim)
        await wait_for(lambda: all(s.leader != victim and victim not in s.isr
                                   for s in cluster.states("t").values()), "leaders moved")
        after = cluster.states("t")
        for p, old in before.items():
            new = after[p]
            if old.leader == victim:
                assert new.leader == next(r for r in old.replicas if r != victim)
                assert new.leader_epoch == old.leader_epoch + 1
            else:
                assert (new.leader, new.leader_epoch) == (old.leader, old.leader_epoch)
            assert set(new.isr) == {1, 2, 3} - {victim}
        md = await cluster.metadata(cluster.any().id, ["t"])
        assert sorted(b["node_id"] for b in md["brokers"]) == sorted({1, 2, 3} - {victim})


async def test_single_broker_without_etcd_is_unchanged(tmp_path):
    """No --metadata: METADATA names only this broker, as controller, leading everything;
    and the broker never imports etcd's client or the cluster package."""
    import subprocess
    import sys

    from conftest import AsyncRawClient, open_inproc_broker

    async with open_inproc_broker(str(tmp_path / "d"), group_coordinator=False) as b:
        assert b.cluster is None
        c = await AsyncRawClient.connect(b.port)
        assert await c.create_topic("t", 2) == 0
        r = await c.request(ApiKey.METADATA, {"topics": ["t"], "allow_auto_topic_creation": False})
        assert r.payload["brokers"] == [{"node_id": 0, "host": "127.0.0.1", "port": b.port}]
        assert r.payload["controller_id"] == 0
        assert [p["leader"] for p in r.payload["topics"][0]["partitions"]] == [0, 0]
        await c.aclose()
    script = ("import sys, trio\n"
              "from minilog.broker.app import Broker\n"
              "from minilog.broker.config import BrokerConfig\n"
              f"b = Broker(BrokerConfig.from_sources({{}}), {str(tmp_path / 'e')!r}, port=0)\n"
              "async def main():\n"
              "    async with trio.open_nursery() as n:\n"
              "        await n.start(b.run)\n"
              "        b.request_shutdown()\n"
              "trio.run(main)\n"
              "bad = [m for m in ('httpx', 'minilog.metastore', 'minilog.broker.cluster') if m in sys.modules]\n"
              "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
