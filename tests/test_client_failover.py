"""Client behaviour failover needs, at the unit level: metadata from any live broker when the first one
known is dead, several bootstrap servers, leader-change errors refresh and retry, and a retried
multi-batch entry split so that each batch's offsets come from its own answer."""

from __future__ import annotations

import socket

import pytest
import trio

import minilog
from minilog.client._cluster import Cluster
from minilog.client._error_actions import Action, action_for
from minilog.errors import error_for_code
from minilog.protocol import ApiKey, ErrorCode, iter_batches

from test_client_producer_unit import ProduceBroker, _with_topics, producer


def dead_address() -> tuple[str, int]:
    """A loopback port nothing listens on (bound, then closed: connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()


@pytest.mark.parametrize("code, action", [
    (ErrorCode.NOT_LEADER_OR_FOLLOWER, Action.REFRESH_METADATA),
    (ErrorCode.LEADER_NOT_AVAILABLE, Action.REFRESH_METADATA),
    (ErrorCode.FENCED_LEADER_EPOCH, Action.REFRESH_METADATA),
    (ErrorCode.UNKNOWN_LEADER_EPOCH, Action.REFRESH_METADATA),
    (ErrorCode.NOT_ENOUGH_REPLICAS, Action.RETRY),
    (ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, Action.RETRY),
])
def test_leader_change_errors_are_retriable(code: int, action: Action) -> None:
    """What a failover answers is retried (after a metadata refresh when the leader moved), never fatal."""
    assert action_for(error_for_code(code)) is action


async def test_metadata_comes_from_a_live_broker_when_the_first_known_is_dead(broker_factory) -> None:
    """The metadata names a dead broker first and no connection is open: a refresh asks the next broker
    instead of retrying the dead one until it gives up (the client's view after its broker was killed)."""
    live = broker_factory("--broker-id", "5")
    async with trio.open_nursery() as nursery:
        cluster = Cluster([(live.host, live.port)], client_id="t", request_timeout_ms=5000,
                          retry_backoff_ms=10)
        await cluster.start(nursery)
        for conn in list(cluster._conns.values()):
            await conn.aclose()
        cluster._conns.clear()
        cluster.brokers = {1: dead_address(), 5: (live.host, live.port)}   # broker 1 was killed
        with trio.fail_after(10):
            await cluster.refresh(["t"])
        assert cluster.brokers == {5: (live.host, live.port)}
        assert cluster._failed_node == 1
        await cluster.aclose()
        nursery.cancel_scope.cancel()


async def test_bootstrap_skips_dead_servers(broker_factory) -> None:
    """bootstrap_servers lists a dead server first: the client starts through the next one."""
    live = broker_factory()
    dead = dead_address()
    async with minilog.AsyncAdmin(f"{dead[0]}:{dead[1]},{live.bootstrap}",
                                  socket_connection_setup_timeout_ms=5000) as admin:
        await admin.create_topic("boot", 1)
        assert "boot" in await admin.list_topics()


async def test_retried_multi_batch_entry_travels_one_batch_per_request(nursery, monkeypatch,
                                                                       autojump_clock) -> None:
    """A request carrying several batches of a partition fails with NOT_LEADER_OR_FOLLOWER: its batches
    are retried one per partition entry, so each batch's offsets come from the answer about it alone,
    and every record is reported at the offset the broker stored it at."""
    import test_client_connection as tcc

    broker = ProduceBroker()
    await broker.serve(nursery)
    meta = {"topic": "t", "error_code": 0, "partitions": [
        {"partition": 0, "error_code": 0, "leader": 0, "leader_epoch": 0, "replicas": [0], "isr": [0]}]}
    monkeypatch.setattr(tcc, "encode_response", _with_topics(tcc.encode_response, meta))
    entries: list[int] = []          # batches per produce entry, in request order
    failed_once: list[int] = []      # the index of the entry that failed
    answer = broker.answer

    def script(req):
        if req.api_key == ApiKey.PRODUCE:
            data = bytes(req.attachments[req.payload["topics"][0]["partitions"][0]["records"]])
            entries.append(len(list(iter_batches(data))))
            if entries[-1] > 1 and not failed_once:
                failed_once.append(len(entries) - 1)
                broker.fail_next = [ErrorCode.NOT_LEADER_OR_FOLLOWER]
        return answer(req)

    broker.script = script
    reports: list = []
    async with producer(broker, linger_ms=200, batch_size=2048, max_in_flight=1) as p:
        for i in range(3000):
            await p.produce("t", b"%06d" % i + b"." * 40, partition=0,
                            on_delivery=lambda e, r: reports.append((e, r)))
        assert await p.flush() == 0
    assert failed_once, "no request carried several batches; the test did not exercise the retry"
    at = failed_once[0]
    failed_size = entries[at]
    assert entries[at + 1: at + 1 + failed_size] == [1] * failed_size
    assert all(e is None for e, _ in reports)
    stored = [v for _, _, vs in broker.produced for v in vs]
    assert [r.offset for _, r in reports] == list(range(3000))
    assert [stored[r.offset] for _, r in reports] == [r.value for _, r in reports]
