"""The connection layer against a scripted in-process broker: pipelining, timeouts, failures.

The fake broker speaks the real frames over `trio.testing.memory_stream_pair`:
the client's injected `connect` function hands it one end of a pair. No
socket is involved, so pytest-trio's autojump_clock makes request timeouts
elapse instantly and deterministically once every task waits.
"""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing

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
        self.port = 9092
        self.connects = 0
        self.refuse = False
        self._nursery: trio.Nursery | None = None

    async def serve(self, nursery) -> None:
        self._nursery = nursery

    async def serve_tcp(self, nursery) -> None:
        """Also listen on a real loopback port (for the socket's own write paths)."""
        self._nursery = nursery
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]

    async def connect(self, host: str, port: int, timeout_s: float) -> trio.abc.Stream:
        """The client's `connect` seam: one end of a memory stream pair, the other served here."""
        await trio.lowlevel.checkpoint()
        if self.refuse:
            raise BrokerUnavailableError(f"could not connect to broker {host}:{port}: connection refused")
        self.connects += 1
        client, server = trio.testing.memory_stream_pair()
        assert self._nursery is not None
        self._nursery.start_soon(self.handle, server)
        return client

    async def handle(self, stream) -> None:
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
                        try:
                            await stream.send_all(b"".join(encode_response(req.correlation_id,
                                                                           answer)))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return


@pytest.fixture
async def fake(nursery):
    broker = FakeBroker()
    await broker.serve(nursery)
    return broker


def connection(broker: FakeBroker, **kwargs) -> BrokerConnection:
    return BrokerConnection("127.0.0.1", broker.port, connect=broker.connect, **kwargs)


def cluster(broker: FakeBroker, **kwargs) -> Cluster:
    return Cluster([("127.0.0.1", broker.port)], client_id="t", connect=broker.connect, **kwargs)


async def test_pipelined_requests_match_responses_in_order(fake, nursery):
    """Many concurrent requests share one connection; each gets its own answer."""
    conn = connection(fake)
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
    conn = connection(fake, request_timeout_ms=2000)
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
    conn = connection(fake, request_timeout_ms=60000)
    await conn.open(nursery)
    errors = []

    async def one(i):
        try:
            await conn.request(ApiKey.LIST_GROUPS, {"i": i})
        except BrokerUnavailableError as exc:
            errors.append(exc)

    async with trio.open_nursery() as n:
        for i in range(5):
            n.start_soon(one, i)
    assert len(errors) == 5
    assert "closed the connection" in str(errors[0])


async def test_missing_api_fails_handshake_with_clear_message(nursery):
    """A broker lacking METADATA v0 is refused at connect with UnsupportedVersionError."""
    broker = FakeBroker(apis=[[int(ApiKey.API_VERSIONS), 0, 3]])
    await broker.serve(nursery)
    conn = connection(broker)
    with pytest.raises(UnsupportedVersionError, match="does not support METADATA v0"):
        await conn.open(nursery)


async def test_api_checked_before_use(nursery):
    """An API the broker lacks fails when first used, before anything is sent."""
    broker = FakeBroker(apis=[[int(ApiKey.API_VERSIONS), 0, 0], [int(ApiKey.METADATA), 0, 0]])
    await broker.serve(nursery)
    conn = connection(broker)
    await conn.open(nursery)
    with pytest.raises(UnsupportedVersionError, match="PRODUCE"):
        await conn.request(ApiKey.PRODUCE, {})


async def test_refused_connection_is_broker_unavailable_and_says_refused(nursery):
    """Nothing listening (a real socket) -> BrokerUnavailableError naming the address and the refusal."""
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = BrokerConnection("127.0.0.1", port)
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}: connection refused"):
        await conn.open(nursery)


async def test_cluster_bootstrap_gives_up_after_the_connect_timeout(fake, nursery, autojump_clock):
    """Refused bootstrap servers: BrokerUnavailableError after the connect timeout, not the request timeout."""
    fake.refuse = True
    c = cluster(fake, request_timeout_ms=30000, connect_timeout_ms=3000)
    start = trio.current_time()
    with pytest.raises(BrokerUnavailableError, match="connection refused"):
        await c.start(nursery)
    assert 2.0 <= trio.current_time() - start <= 3.0


async def test_cluster_reconnects_after_a_broken_connection(fake, nursery):
    """After the broker drops a connection, the next request opens a new one."""
    c = cluster(fake, request_timeout_ms=5000)
    await c.start(nursery)
    fake.script = lambda req: "close"
    with pytest.raises(BrokerUnavailableError):
        await c.request(0, ApiKey.LIST_GROUPS, {})
    fake.script = lambda req: {"ok": 1}
    resp = await c.request(0, ApiKey.LIST_GROUPS, {})
    assert resp.payload == {"ok": 1} and fake.connects == 2
    await c.aclose()
    with pytest.raises(ClosedError):
        await c.request(0, ApiKey.LIST_GROUPS, {})


async def test_large_and_small_frames_interleave_safely(nursery):
    """Over a real socket, big frames take the locked send path, small ones the direct write; none interleave."""
    fake = FakeBroker()
    await fake.serve_tcp(nursery)
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
