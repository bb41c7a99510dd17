"""The connection layer against a scripted in-process broker: pipelining, timeouts, failures.

The fake broker is a trio TCP server in the same run; with pytest-trio's
autojump_clock, request timeouts elapse instantly once every task waits.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from minilog.client._cluster import Cluster
from minilog.client._connection import BrokerConnection
from minilog.errors import (
    BrokerUnavailableError,
    ClosedError,
    RequestTimeoutError,
    UnsupportedVersionError,
)
from minilog.protocol import ApiKey, FrameDecoder, NEED_DATA, encode_response

ALL_APIS = [[int(k), 0, 0] for k in ApiKey]


class FakeBroker:
    """Answers ApiVersions and METADATA; `script(request)` decides the rest.

    script returns a payload to answer, None to stay silent, or "close".
    """

    def __init__(self, apis=ALL_APIS) -> None:
        self.apis = apis
        self.requests: list = []
        self.script = lambda req: {"echo": req.payload}
        self.port = 0

    async def serve(self, nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]

    async def handle(self, stream) -> None:
        dec = FrameDecoder("server")
        async with stream:
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return
                dec.feed(data)
                while (req := dec.next_frame()) is not NEED_DATA:
                    self.requests.append(req)
                    if req.api_key == ApiKey.API_VERSIONS:
                        answer = {"error_code": 0, "api_versions": self.apis,
                                  "broker_version": "fake", "broker_id": 0}
                    elif req.api_key == ApiKey.METADATA:
                        answer = {"brokers": [{"node_id": 0, "host": "127.0.0.1",
                                               "port": self.port}],
                                  "cluster_id": "c", "controller_id": 0, "topics": []}
                    else:
                        answer = self.script(req)
                    if answer == "close":
                        return
                    if answer is not None:
                        await stream.send_all(b"".join(encode_response(req.correlation_id,
                                                                       answer)))


@pytest.fixture
async def fake(nursery):
    broker = FakeBroker()
    await broker.serve(nursery)
    return broker


async def test_pipelined_requests_match_responses_in_order(fake, nursery):
    """Many concurrent requests share one connection; each gets its own answer."""
    conn = BrokerConnection("127.0.0.1", fake.port)
    await conn.open(nursery)
    results = {}

    async def one(i):
        resp = await conn.request(ApiKey.LIST_GROUPS, {"i": i})
        results[i] = resp.payload["echo"]["i"]

    async with trio.open_nursery() as n:
        for i in range(50):
            n.start_soon(one, i)
    assert results == {i: i for i in range(50)}
    ids = [r.correlation_id for r in fake.requests[1:]]
    assert len(set(ids)) == 50
    await conn.aclose()
    await conn.aclose()   # idempotent


async def test_silent_broker_gives_request_timeout_and_poisons_connection(fake, nursery,
                                                                          autojump_clock):
    """No answer within request_timeout_ms -> RequestTimeoutError; later calls fail fast."""
    fake.script = lambda req: None
    conn = BrokerConnection("127.0.0.1", fake.port, request_timeout_ms=2000)
    await conn.open(nursery)
    start = trio.current_time()
    with pytest.raises(RequestTimeoutError, match="no response within 2000 ms"):
        await conn.request(ApiKey.LIST_GROUPS, {})
    assert trio.current_time() - start == pytest.approx(2.0, abs=0.01)
    with pytest.raises(RequestTimeoutError):
        await conn.request(ApiKey.LIST_GROUPS, {})
    assert not conn.usable


async def test_broker_closing_mid_request_fails_every_pending_request(fake, nursery):
    """EOF with requests in flight -> BrokerUnavailableError for each, never a hang."""
    fake.script = lambda req: "close" if req.payload.get("i") == 3 else None
    conn = BrokerConnection("127.0.0.1", fake.port, request_timeout_ms=60000)
    await conn.open(nursery)
    errors = []

    async def one(i):
        try:
            await conn.request(ApiKey.LIST_GROUPS, {"i": i})
        except BrokerUnavailableError as exc:
            errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            for i in range(5):
                n.start_soon(one, i)
    assert len(errors) == 5
    assert "closed the connection" in str(errors[0])


async def test_missing_api_fails_handshake_with_clear_message(nursery):
    """A broker lacking METADATA v0 is refused at connect with UnsupportedVersionError."""
    broker = FakeBroker(apis=[[int(ApiKey.API_VERSIONS), 0, 3]])
    await broker.serve(nursery)
    conn = BrokerConnection("127.0.0.1", broker.port)
    with pytest.raises(UnsupportedVersionError, match="does not support METADATA v0"):
        await conn.open(nursery)


async def test_api_checked_before_use(nursery):
    """An API the broker lacks fails when first used, before anything is sent."""
    broker = FakeBroker(apis=[[int(ApiKey.API_VERSIONS), 0, 0], [int(ApiKey.METADATA), 0, 0]])
    await broker.serve(nursery)
    conn = BrokerConnection("127.0.0.1", broker.port)
    await conn.open(nursery)
    with pytest.raises(UnsupportedVersionError, match="PRODUCE"):
        await conn.request(ApiKey.PRODUCE, {})


async def test_refused_connection_is_broker_unavailable(nursery):
    """Nothing listening -> BrokerUnavailableError naming the address."""
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = BrokerConnection("127.0.0.1", port)
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        await conn.open(nursery)


async def test_cluster_bootstrap_retries_until_timeout(nursery, autojump_clock):
    """No bootstrap server reachable: BrokerUnavailableError after request_timeout_ms."""
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = Cluster([("127.0.0.1", port)], client_id="t", request_timeout_ms=3000)
    start = trio.current_time()
    with pytest.raises(BrokerUnavailableError, match="no broker reachable"):
        await cluster.start(nursery)
    assert 2.0 <= trio.current_time() - start <= 3.5


async def test_cluster_reconnects_after_a_broken_connection(fake, nursery):
    """After the broker drops a connection, the next request opens a new one."""
    cluster = Cluster([("127.0.0.1", fake.port)], client_id="t", request_timeout_ms=5000)
    await cluster.start(nursery)
    fake.script = lambda req: "close"
    with pytest.raises(BrokerUnavailableError):
        await cluster.request(0, ApiKey.LIST_GROUPS, {})
    fake.script = lambda req: {"ok": 1}
    resp = await cluster.request(0, ApiKey.LIST_GROUPS, {})
    assert resp.payload == {"ok": 1}
    await cluster.aclose()
    with pytest.raises(ClosedError):
        await cluster.request(0, ApiKey.LIST_GROUPS, {})


async def test_large_and_small_frames_interleave_safely(fake, nursery):
    """Big frames take the locked send path, small ones the direct write; none interleave."""
    conn = BrokerConnection("127.0.0.1", fake.port)
    await conn.open(nursery)
    results = {}

    async def one(i, big):
        attachment = b"z" * (3 * 1024 * 1024 if big else 10)
        resp = await conn.request(ApiKey.LIST_GROUPS, {"i": i}, [attachment])
        results[i] = resp.payload["echo"]["i"]

    async with trio.open_nursery() as n:
        for i in range(20):
            n.start_soon(one, i, i % 4 == 0)
    assert results == {i: i for i in range(20)}
    sizes = {r.payload["i"]: len(r.attachments[0]) for r in fake.requests[1:]}
    assert all(sizes[i] == (3 * 1024 * 1024 if i % 4 == 0 else 10) for i in range(20))
