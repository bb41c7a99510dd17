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


class TwoLeaders:
    """Two scripted brokers behind one object: topic "t" has partition 0 led by node 0 and
    partition 1 led by node 1. The client dials port 1000 + node (the metadata says so), which
    tells the connections apart. Node 1 "dies" at its first FETCH (closes the connection, then
    refuses connections); node 0 serves partition 0 one record per fetch, up to 5."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.dead: set[int] = set()

    async def connect(self, host: str, port: int, timeout_s: float) -> trio.abc.Stream:
        from minilog.errors import BrokerUnavailableError

        await trio.lowlevel.checkpoint()
        node = port - 1000
        if node in self.dead:
            raise BrokerUnavailableError(f"could not connect to broker {host}:{port}: connection refused")
        client, server = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.serve, server, node)
        return client

    def answer(self, node: int, req) -> tuple[dict, list[bytes]] | None:
        from minilog.protocol import build_batch

        if req.api_key == ApiKey.API_VERSIONS:
            return {"error_code": 0, "api_versions": [[int(k), 0, 0] for k in ApiKey],
                    "broker_version": "fake", "broker_id": node}, []
        if req.api_key == ApiKey.METADATA:
            return {"brokers": [{"node_id": n, "host": "127.0.0.1", "port": 1000 + n} for n in (0, 1)],
                    "cluster_id": "c", "controller_id": 0, "topics": [
                        {"topic": "t", "error_code": 0, "partitions": [
                            {"partition": p, "error_code": 0, "leader": p, "leader_epoch": 0,
                             "replicas": [p], "isr": [p]} for p in (0, 1)]}]}, []
        assert req.api_key == ApiKey.FETCH, req.api_key
        if node == 1:
            self.dead.add(1)
            return None
        parts, attachments = [], []
        for t in req.payload["topics"]:
            for p in t["partitions"]:
                offset = p["fetch_offset"]
                out = {"partition": p["partition"], "error_code": 0, "high_watermark": 5,
                       "last_stable_offset": 5, "log_start_offset": 0, "aborted_transactions": [],
                       "records": -1}
                if p["partition"] == 0 and offset < 5:
                    batch = bytearray(build_batch([b"r%d" % offset]))
                    batch[0:8] = offset.to_bytes(8, "big")          # base offset, as a broker stamps it
                    out["records"] = len(attachments)
                    attachments.append(bytes(batch))
                parts.append(out)
        return {"throttle_time_ms": 0, "error_code": 0, "session_id": 0,
                "topics": [{"topic": "t", "partitions": parts}]}, attachments

    async def serve(self, stream, node: int) -> None:
        from minilog.protocol import NEED_DATA, FrameDecoder, encode_response

        dec = FrameDecoder("server")
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not data:
                    return
                dec.feed(data)
                while (req := dec.next_frame()) is not NEED_DATA:
                    answer = self.answer(node, req)
                    if answer is None:
                        return          # the broker died with the request in flight
                    payload, attachments = answer
                    await stream.send_all(b"".join(encode_response(req.correlation_id, payload, attachments)))


async def test_consumer_keeps_fetching_from_live_brokers_when_one_dies(nursery, autojump_clock) -> None:
    """A consumer fetching from two leaders at once: one dies mid-fetch. The consumer keeps consuming the
    other's partition (the failure is retried after a metadata refresh) instead of stopping with the
    error (an exception group escaping its fetch nursery, before the fix)."""
    brokers = TwoLeaders(nursery)
    async with minilog.AsyncConsumer("127.0.0.1:1000", connect=brokers.connect, fetch_max_wait_ms=100,
                                     request_timeout_ms=2000) as consumer:
        consumer.assign([("t", 0), ("t", 1)])
        consumer.seek("t", 0, 0)
        consumer.seek("t", 1, 0)
        got: list[int] = []
        with trio.fail_after(60):
            while len(got) < 5:
                got += [r.offset for r in await consumer.poll(timeout_ms=100) if r.partition == 0]
        assert got == [0, 1, 2, 3, 4]
        assert brokers.dead == {1}
