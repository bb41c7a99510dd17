"""Background work and shutdown: retention runs on its interval, flush.messages
fsyncs off the loop, graceful shutdown answers in-flight requests, orphan
directories are removed at start."""

from __future__ import annotations

import os
import signal
import threading
import time

import trio

from minilog.protocol import ApiKey, ErrorCode, build_batch

from conftest import AsyncRawClient, fetch_payload, open_inproc_broker, produce_payload


async def _wait_for(predicate, what: str, timeout_s: float = 10.0) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.01)


async def test_retention_runs_in_background(tmp_path, caplog):
    """With a short log.retention.check.interval.ms, old segments go without any request."""
    caplog.set_level("INFO")
    settings = {"log.retention.check.interval.ms": 50, "log.segment.delete.delay.ms": 0}
    async with open_inproc_broker(str(tmp_path / "d"), settings, group_coordinator=False) as b:
        c = await AsyncRawClient.connect(b.port)
        await c.create_topic("t", 1, {"segment.bytes": "1000", "retention.bytes": "1500"})
        batch = build_batch([b"x" * 400])
        for _ in range(10):
            r = await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [batch])
            assert r.payload["topics"][0]["partitions"][0]["error_code"] == 0
        part = b.partition("t", 0)
        # A pass may run mid-way through the produces and the next one later:
        # wait until one has run after the last produce, i.e. both hold.
        limit = 1500 + len(batch) * 2
        await _wait_for(lambda: part.log_start_offset > 0 and part.size_bytes <= limit,
                        "retention moved the log start and trimmed the log")
        r = await c.request(ApiKey.FETCH, fetch_payload("t", 0, 0))
        p0 = r.payload["topics"][0]["partitions"][0]
        assert p0["error_code"] == ErrorCode.OFFSET_OUT_OF_RANGE, (p0, part.statistics())
        await c.aclose()
    assert "rolled to a new segment" in caplog.text, caplog.text
    assert "deleted segment" in caplog.text, caplog.text


async def test_flush_messages_fsyncs_without_blocking(tmp_path):
    """flush.messages=1: every acknowledged produce has been fsynced (recovery point = LEO)."""
    async with open_inproc_broker(str(tmp_path / "d"), group_coordinator=False) as b:
        c = await AsyncRawClient.connect(b.port)
        await c.create_topic("t", 1, {"flush.messages": "1"})
        for i in range(5):
            await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([b"v"])])
            assert b.partition("t", 0).log.recovery_point == i + 1
        await c.aclose()


async def test_graceful_shutdown_answers_parked_fetch(tmp_path):
    """A long-poll fetch in flight at shutdown is answered (empty), not dropped."""
    async with open_inproc_broker(str(tmp_path / "d"), group_coordinator=False) as b:
        c = await AsyncRawClient.connect(b.port)
        await c.create_topic("t")
        await c.send(ApiKey.FETCH, fetch_payload("t", 0, 0, max_wait_ms=30_000))
        await _wait_for(lambda: b.partition("t", 0).statistics().waiters == 1, "fetch parked")
        b.request_shutdown()
        with trio.fail_after(5):
            r = await c.receive()
        assert r.payload["topics"][0]["partitions"][0]["records"] == -1


async def test_orphan_partition_dirs_removed_at_start(tmp_path):
    """Partition dirs not named by topics.json (a crash mid-create/delete) are removed."""
    data = tmp_path / "d"
    async with open_inproc_broker(str(data), group_coordinator=False) as b:
        assert await b.admin.create_topic("t", 1, 1, {}) == (ErrorCode.NONE, None)
    os.makedirs(data / "ghost-0")
    os.makedirs(data / "t-5")
    os.makedirs(data / "t-0.abc-delete")
    async with open_inproc_broker(str(data), group_coordinator=False) as b:
        assert [(n, b.topic_metadata(n).partitions) for n in b.metadata.topic_names()] == [("t", 1)]
        assert sorted(p for p in os.listdir(data) if os.path.isdir(data / p)) == ["t-0"]


async def test_internal_topic_hooks(tmp_path):
    """create_internal_topic is idempotent, clients cannot produce to or delete it,
    and topic-change callbacks fire."""
    events = []
    async with open_inproc_broker(str(tmp_path / "d"), group_coordinator=False) as b:
        b.on_topic_change(lambda event, topic: events.append((event, topic)))
        meta = await b.create_internal_topic("__internal", 3, {"retention.ms": "-1"})
        assert await b.create_internal_topic("__internal", 3, {}) is meta and meta.internal
        part = b.partition("__internal", 2)
        info = await part.append(bytearray(build_batch([b"offset record"])), acks=-1)
        assert info.base_offset == 0 and part.high_watermark == 1
        assert part.read(0, 1 << 20)
        c = await AsyncRawClient.connect(b.port)
        r = await c.request(ApiKey.PRODUCE, produce_payload("__internal", 0), [build_batch([b"x"])])
        assert r.payload["topics"][0]["partitions"][0]["error_code"] == ErrorCode.INVALID_TOPIC_EXCEPTION
        r = await c.request(ApiKey.DELETE_TOPICS, {"topics": ["__internal"], "timeout_ms": 100})
        assert r.payload["topics"][0]["error_code"] != 0
        await c.create_topic("t", 1)
        await b.admin.create_partitions("t", 2)
        await b.admin.alter_topic_configs("t", {"retention.ms": "1000"})
        await b.admin.delete_topic("t")
        await c.aclose()
    assert events == [("created", "__internal"), ("created", "t"), ("partitions", "t"),
                      ("configs", "t"), ("deleted", "t")]


def test_sigterm_during_traffic_exits_zero_and_keeps_acked_data(broker):
    """SIGTERM while a producer is busy: exit 0; every acknowledged batch is there after restart."""
    c = broker.client()
    c.create_topic("t")
    acked = []
    stop = threading.Event()

    def produce():
        try:
            while not stop.is_set():
                r = c.produce("t", 0, build_batch([b"v%d" % len(acked)]))
                if r["error_code"] == 0:
                    acked.append(r["base_offset"])
        except (ConnectionError, OSError):
            pass

    thread = threading.Thread(target=produce)
    thread.start()
    deadline = time.monotonic() + 10
    while len(acked) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert broker.stop(signal.SIGTERM) == 0
    stop.set()
    thread.join(10)
    broker.start()
    c2 = broker.client()
    hw = c2.list_offset("t", 0, -1)["offset"]
    assert acked and hw >= acked[-1] + 1


async def test_rolled_segments_are_fsynced_in_background(tmp_path):
    """Without any flush policy, segments closed by a roll are fsynced soon after (as Kafka),
    so crash recovery only re-checks the active segment."""
    async with open_inproc_broker(str(tmp_path / "d"), group_coordinator=False) as b:
        c = await AsyncRawClient.connect(b.port)
        await c.create_topic("t", 1, {"segment.bytes": "1000"})
        for _ in range(6):
            await c.request(ApiKey.PRODUCE, produce_payload("t", 0), [build_batch([b"x" * 400])])
        log = b.partition("t", 0).log
        assert log.segment_count > 1              # it rolled (the flusher may already have run)
        # The recovery point moves once the worker thread's fsyncs are done.
        await _wait_for(lambda: log.recovery_point > 0, "rolled segments flushed")
        assert log.rolled_segments_unflushed == 0 and log.recovery_point <= log.log_end_offset
        await c.aclose()


async def test_read_ahead_bounded_by_bytes_and_count(tmp_path):
    """With tiny queued.max.requests / queued.max.request.bytes, 100 pipelined 16 KiB produces
    are all answered, in order (back-pressure, not deadlock)."""
    settings = {"queued.max.requests": 2, "queued.max.request.bytes": 10_000}
    async with open_inproc_broker(str(tmp_path / "d"), settings, group_coordinator=False) as b:
        c = await AsyncRawClient.connect(b.port)
        await c.create_topic("t")
        batch = build_batch([os.urandom(16_000)])

        async def send_all():
            for _ in range(100):
                await c.send(ApiKey.PRODUCE, produce_payload("t", 0), [batch])

        offsets = []
        with trio.fail_after(20):
            async with trio.open_nursery() as n:
                n.start_soon(send_all)
                for _ in range(100):
                    r = await c.receive()
                    offsets.append(r.payload["topics"][0]["partitions"][0]["base_offset"])
        assert offsets == list(range(100))
        await c.aclose()
