"""Issue 8 item 5: the broker's memory for requests read and responses not yet sent is
bounded for the whole broker (`queued.max.request.bytes`), a connection whose answers
are not read is not read from, a well-behaved client is served meanwhile, and everything
is freed when the hostile connections end (no reference cycles: no gc.collect needed).

Hostile clients here send fetches for megabytes and never read an answer (their socket
receive buffer made small), the class of client that pinned `fetch.max.bytes` per
connection (20 connections: 1.2 GB RSS) before the budget.
"""

from __future__ import annotations

import gc
import os
import select
import socket
import struct
import time
import weakref

import trio

from minilog.broker.memory import GUARANTEED_BYTES
from minilog.protocol import ApiKey, build_batch, encode_request

from conftest import AsyncRawClient, RawClient, fetch_payload, open_inproc_broker, wait_until

MiB = 1024 * 1024
VALUE_BYTES = 1_000_000           # one record per batch, under max.message.bytes
BATCHES = 16                      # ~16 MB in the topic


def _fetch_frame(max_bytes: int, correlation_id: int) -> bytes:
    pieces = encode_request(ApiKey.FETCH, 0, correlation_id, "hostile",
                            fetch_payload("t", 0, 0, max_bytes=max_bytes))
    return b"".join(bytes(p) for p in pieces)


def _hostile_socket(host: str, port: int, fetches: int, max_bytes: int) -> socket.socket:
    """A connection that asks for `fetches` answers of up to `max_bytes` and reads none."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # before connect: small window
    sock.connect((host, port))
    sock.sendall(b"".join(_fetch_frame(max_bytes, i) for i in range(fetches)))
    return sock


def _rss_bytes(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def _fill(client: RawClient) -> None:
    assert client.create_topic("t") == 0
    for _ in range(BATCHES):
        assert client.produce("t", 0, build_batch([os.urandom(VALUE_BYTES)]))["error_code"] == 0


def _served(client: RawClient, offset: int) -> float:
    """Produce one record and fetch it back; returns the seconds it took."""
    started = time.monotonic()
    answer = client.produce("t", 0, build_batch([b"good-%d" % offset]))
    assert answer["error_code"] == 0, answer
    p, data = client.fetch("t", 0, answer["base_offset"], max_bytes=64 * 1024)
    assert p["error_code"] == 0 and b"good-%d" % offset in data
    return time.monotonic() - started


CAPACITY = 32 * MiB               # queued.max.request.bytes of the RSS test
HOSTILE = 24                      # connections, each asking for 4 x 16 MB and reading nothing
# The documented ceiling (docs/operations.md): the budget, plus per connection what any
# connection may hold (GUARANTEED_BYTES) and one record batch, plus slack for the allocator.
RSS_GROWTH_MAX = CAPACITY + HOSTILE * (GUARANTEED_BYTES + 1 * MiB) + 48 * MiB


def test_issue_8_item_5_non_reading_fetchers_are_bounded_by_the_broker_budget(broker_factory):
    """24 connections each ask for 4 fetches of 16 MB and read nothing, against a real
    `minilog serve` with queued.max.request.bytes 32 MiB: the broker's RSS grows by less
    than the documented ceiling (without the budget: about 24 x 16 MB = 384 MB), a
    well-behaved client is served meanwhile, and after the hostile clients disconnect the
    broker's RSS falls back (responses are not kept alive by reference cycles)."""
    b = broker_factory("--set", f"queued.max.request.bytes={CAPACITY}",
                       "--set", "request.timeout.ms=120000")
    good = b.client()
    _fill(good)
    assert b.proc is not None
    pid = b.proc.pid
    _served(good, 0)
    baseline = _rss_bytes(pid)

    hostile = [_hostile_socket(b.host, b.port, 4, 16 * MiB) for _ in range(HOSTILE)]
    try:
        # Every hostile connection has been answered as far as the budget lets it: the
        # broker holds their responses and stopped reading them.
        wait_until(lambda: _rss_bytes(pid) > baseline + 8 * MiB,
                   "the broker holds the hostile clients' answers", timeout_s=30)
        worst = 0.0
        for i in range(1, 21):                       # a well-behaved client is served
            worst = max(worst, _served(good, i))
        growth = _rss_bytes(pid, "VmHWM") - baseline
        assert growth < RSS_GROWTH_MAX, (growth // MiB, RSS_GROWTH_MAX // MiB)
        assert worst < 10.0, worst                   # generous: proves no stall, not a timing
    finally:
        for sock in hostile:
            sock.close()
    wait_until(lambda: _rss_bytes(pid) < baseline + 16 * MiB,
               "the broker's RSS falls back after the hostile clients left", timeout_s=30)
    _served(good, 99)


def _push_partial_frames(socks: list[socket.socket], frame_bytes: int, sent_max: int) -> int:
    """Send each socket the start of a `frame_bytes` frame, up to `sent_max` bytes, as fast as
    the broker reads; stop when every socket is done or none was writable for 2 s (the
    broker stopped reading them). Returns the bytes sent in all."""
    chunk = struct.pack(">I", frame_bytes - 4) + b"\0" * (256 * 1024 - 4)
    sent = {sock: 0 for sock in socks}
    for sock in socks:
        sock.setblocking(False)
    while True:
        pending = [sock for sock in socks if sent[sock] < sent_max]
        if not pending:
            break
        _, writable, _ = select.select([], pending, [], 2.0)
        if not writable:
            break
        for sock in writable:
            view = memoryview(chunk)[: sent_max - sent[sock]]
            if sent[sock]:
                view = memoryview(b"\0" * len(view))
            try:
                sent[sock] += sock.send(view)
            except BlockingIOError:
                pass
    return sum(sent.values())


def test_issue_8_item_5_read_ahead_of_large_frames_is_bounded(broker_factory):
    """12 connections each send 24 MB of a 64 MB frame and stop: the broker reads the
    frames only as far as queued.max.request.bytes (32 MiB) lets it, plus each connection's
    small allowance, so its RSS grows by less than the documented ceiling (without the
    budget: 12 x 24 MB = 288 MB), and a well-behaved client is served meanwhile."""
    b = broker_factory("--set", f"queued.max.request.bytes={CAPACITY}")
    good = b.client()
    assert good.create_topic("t") == 0
    assert b.proc is not None
    pid = b.proc.pid
    _served(good, 0)
    baseline = _rss_bytes(pid)
    socks = [socket.create_connection((b.host, b.port)) for _ in range(12)]
    try:
        _push_partial_frames(socks, 64 * MiB, 24 * MiB)
        for i in range(1, 11):
            assert _served(good, i) < 10.0              # generous: no stall
        growth = _rss_bytes(pid, "VmHWM") - baseline
        assert growth < CAPACITY + 12 * (GUARANTEED_BYTES + 1 * MiB) + 48 * MiB, growth // MiB
    finally:
        for sock in socks:
            sock.close()


async def test_issue_8_item_5_tracked_bytes_return_to_zero_and_connections_are_freed(tmp_path):
    """In process, with the cyclic garbage collector off: 20 non-reading fetchers hold at
    most the budget plus each one's small allowance, a good client is served, and when
    they disconnect the budget's held bytes return to zero and every Connection object is
    freed by reference counting (no exception-traceback cycle keeps responses alive)."""
    capacity = 8 * MiB
    settings = {"queued.max.request.bytes": capacity, "request.timeout.ms": 120_000,
                "offsets.topic.num.partitions": 1}
    async with open_inproc_broker(str(tmp_path / "d"), settings) as b:
        good = await AsyncRawClient.connect(b.port)
        assert await good.create_topic("t") == 0
        for _ in range(8):
            r = await good.request(ApiKey.PRODUCE, _produce_payload(),
                                   [build_batch([os.urandom(VALUE_BYTES)])])
            assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0
        memory = b.listeners.memory
        await _wait_for_nothing_held(memory)     # the last answer's release may lag its arrival
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            hostile = []
            for _ in range(20):
                sock = trio.socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await sock.connect(("127.0.0.1", b.port))
                stream = trio.SocketStream(sock)
                await stream.send_all(b"".join(_fetch_frame(8 * MiB, i) for i in range(4)))
                hostile.append(stream)
            with trio.fail_after(30):
                while (memory.statistics().held_bytes < capacity // 2
                       or b.listeners.connections < 21):
                    await trio.sleep(0.01)
            refs = [weakref.ref(conn) for conn in b.listeners._connections.values()]
            assert len(refs) == 21
            r = await good.request(ApiKey.FETCH, fetch_payload("t", 0, 0, max_bytes=4 * MiB))
            assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0
            stats = memory.statistics()
            assert stats.held_bytes_peak <= capacity + 21 * (GUARANTEED_BYTES + 1 * MiB), stats
            for stream in hostile:
                await stream.aclose()
            del stream, hostile
            with trio.fail_after(30):
                while b.listeners.connections > 1:
                    await trio.sleep(0.01)
            await _wait_for_nothing_held(memory)
            alive = [ref for ref in refs if ref() is not None]
            assert len(alive) == 1, f"{len(alive) - 1} closed connections kept alive by cycles"
        finally:
            if was_enabled:
                gc.enable()
        await good.aclose()


async def _wait_for_nothing_held(memory) -> None:
    with trio.fail_after(10):
        while memory.statistics().held_bytes:
            await trio.sleep(0.01)


def _produce_payload() -> dict:
    return {"acks": -1, "timeout_ms": 5000, "topics": [
        {"topic": "t", "partitions": [{"partition": 0, "records": 0}]}]}
