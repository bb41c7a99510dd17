"""The fault tests' TCP proxy (tests/_fault_proxy.py) over real loopback sockets: it forwards, and cuts
one source address off (reset or blackhole) while others keep working."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

import pytest
import trio

from _fault_proxy import FaultProxy, open_fault_proxy

A, B = "127.0.0.11", "127.0.0.12"     # two "brokers" as sources


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    async def echo(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            async for data in stream:
                await stream.send_all(data)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        yield "127.0.0.1", listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def connect(proxy: FaultProxy, source: str) -> trio.SocketStream:
    return await trio.open_tcp_stream(*proxy.address, local_address=source)


async def roundtrip(stream: trio.SocketStream, data: bytes) -> bytes:
    await stream.send_all(data)
    got = b""
    with trio.fail_after(5):
        while len(got) < len(data):
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                break
            got += chunk
    return got


async def test_forwards_both_ways() -> None:
    """Bytes go through to the upstream and back, for large transfers too."""
    async with echo_server() as up, open_fault_proxy(up) as proxy:
        stream = await connect(proxy, A)
        payload = bytes(range(256)) * 2000
        assert await roundtrip(stream, payload) == payload
        assert proxy.stats.accepted == {A: 1}
        await stream.aclose()


async def test_drop_resets_open_and_new_connections_of_one_source() -> None:
    """`cut(A, "drop")` resets A's open connection and each new one; B is untouched; heal restores A."""
    async with echo_server() as up, open_fault_proxy(up) as proxy:
        a, b = await connect(proxy, A), await connect(proxy, B)
        assert await roundtrip(a, b"x") == b"x"
        proxy.cut(A, "drop")
        with pytest.raises((trio.BrokenResourceError, ConnectionResetError)):
            with trio.fail_after(5):
                while True:          # the reset arrives as a failed read or write
                    await a.send_all(b"y")
                    if not await a.receive_some(10):
                        raise trio.BrokenResourceError("closed")
        a2 = await connect(proxy, A)
        with pytest.raises((trio.BrokenResourceError, ConnectionResetError)):
            with trio.fail_after(5):
                if not await a2.receive_some(10):
                    raise trio.BrokenResourceError("closed")
        assert proxy.stats.refused[A] >= 1
        assert await roundtrip(b, b"still") == b"still"
        proxy.heal(A)
        a3 = await connect(proxy, A)
        assert await roundtrip(a3, b"back") == b"back"
        for s in (a, a2, a3, b):
            await s.aclose()


async def test_blackhole_swallows_silently() -> None:
    """`cut(A, "blackhole")`: A's bytes vanish, nothing comes back and the connection stays open; after
    heal, new connections from A work again."""
    async with echo_server() as up, open_fault_proxy(up) as proxy:
        a = await connect(proxy, A)
        assert await roundtrip(a, b"x") == b"x"
        proxy.cut(A, "blackhole")
        await a.send_all(b"lost")
        with trio.move_on_after(0.3) as silent:      # absence of an answer: bounded wait
            await a.receive_some(10)
        assert silent.cancelled_caught
        with trio.fail_after(5):
            while proxy.stats.discarded_bytes.get(A, 0) < 4:
                await trio.sleep(0.01)
        fresh = await connect(proxy, A)
        await fresh.send_all(b"lost too")
        with trio.move_on_after(0.3) as silent:
            await fresh.receive_some(10)
        assert silent.cancelled_caught
        assert proxy.connections_from(A) == 0
        proxy.heal()
        healed = await connect(proxy, A)
        assert await roundtrip(healed, b"ok") == b"ok"
        for s in (a, fresh, healed):
            await s.aclose()


async def test_upstream_down_resets_the_client() -> None:
    """With nothing listening upstream, a client's connection is reset (a killed broker looks dead)."""
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        dead = s.getsockname()
    async with open_fault_proxy(dead) as proxy:
        stream = await connect(proxy, A)
        with pytest.raises((trio.BrokenResourceError, ConnectionResetError)):
            with trio.fail_after(10):
                if not await stream.receive_some(10):
                    raise trio.BrokenResourceError("closed")
        await stream.aclose()
