"""AsyncProducer against a scripted broker, on trio's virtual clock: linger, retries, order.

The fake broker answers METADATA with one topic "t" of 2 partitions led by
node 0 and lets each test script PRODUCE answers. It speaks the real frames
over memory streams (the producer's `connect` seam) and the producer's
clock is trio's, so autojump_clock makes every wait virtual.
"""

from __future__ import annotations

import pytest
import trio

import minilog
from minilog import errors
from minilog.protocol import ApiKey, ErrorCode, batch_size_at, decode_records, parse_header

from test_client_connection import FakeBroker


def producer(pb, **options) -> minilog.AsyncProducer:
    """An AsyncProducer wired to the scripted broker and trio's (virtual) clock."""
    return minilog.AsyncProducer(f"127.0.0.1:{pb.port}", connect=pb.connect,
                                 clock=trio.current_time, **options)


class ProduceBroker(FakeBroker):
    def __init__(self) -> None:
        super().__init__()
        self.produced: list = []          # (time, partition, values)
        self.fail_next: list[int] = []    # error codes for the next produce answers
        self.next_offset = {0: 0, 1: 0}
        self.headers: list = []           # (producer epoch, base sequence, answer code)
        self.batch_sizes: list[int] = []  # every stored batch's size in bytes
        self.script = self.answer

    def answer(self, req):
        if req.api_key == ApiKey.INIT_PRODUCER_ID:
            return {"error_code": 0, "producer_id": 7,
                    "producer_epoch": req.payload["producer_epoch"] + 1}
        assert req.api_key == ApiKey.PRODUCE
        topics = []
        for t in req.payload["topics"]:
            parts = []
            for p in t["partitions"]:
                code = self.fail_next.pop(0) if self.fail_next else 0
                base = -1
                header = parse_header(req.attachments[p["records"]])
                self.headers.append((header.producer_epoch, header.base_sequence, code))
                if code == 0:
                    data = bytes(req.attachments[p["records"]])
                    recs = decode_records(data, t["topic"], p["partition"])
                    self.produced.append((trio.current_time(), p["partition"],
                                          [r.value for r in recs]))
                    self.batch_sizes += _batch_sizes(data)
                    base = self.next_offset[p["partition"]]
                    self.next_offset[p["partition"]] += len(recs)
                parts.append({"partition": p["partition"], "error_code": code,
                              "error_message": None, "base_offset": base,
                              "log_append_time": -1, "log_start_offset": 0})
            topics.append({"topic": t["topic"], "partitions": parts})
        return None if req.payload["acks"] == 0 else {"topics": topics}


@pytest.fixture
async def pb(nursery, monkeypatch):
    """The scripted broker, its METADATA answer extended with topic "t" (2 partitions)."""
    import test_client_connection as tcc

    broker = ProduceBroker()
    await broker.serve(nursery)
    meta = {"topic": "t", "error_code": 0, "partitions": [
        {"partition": i, "error_code": 0, "leader": 0, "leader_epoch": 0,
         "replicas": [0], "isr": [0]} for i in range(2)]}
    monkeypatch.setattr(tcc, "encode_response", _with_topics(tcc.encode_response, meta))
    return broker


def _batch_sizes(data: bytes) -> list[int]:
    sizes, pos = [], 0
    while pos < len(data):
        sizes.append(batch_size_at(data, pos))
        pos += sizes[-1]
    return sizes


def _with_topics(encode, meta):
    def wrapped(corr, payload, attachments=()):
        if isinstance(payload, dict) and "brokers" in payload and not payload["topics"]:
            payload = {**payload, "topics": [meta]}
        return encode(corr, payload, attachments)
    return wrapped


async def test_linger_holds_records_until_linger_ms(pb, autojump_clock):
    """A lone record waits linger_ms for company before it is sent."""
    async with producer(pb, linger_ms=250) as p:
        start = trio.current_time()
        await p.produce("t", b"a", partition=0)
        await p.produce("t", b"b", partition=0)
        await trio.sleep(0.2)
        assert pb.produced == []
        await trio.sleep(0.1)
        assert len(pb.produced) == 1
        sent_at, partition, values = pb.produced[0]
        assert values == [b"a", b"b"] and partition == 0
        assert sent_at - start == pytest.approx(0.25, abs=0.01)


async def test_full_batch_goes_without_waiting_for_linger(pb, autojump_clock):
    """A batch that reaches batch_size is sent at once, whatever linger_ms says."""
    async with producer(pb, linger_ms=60000,
                                     batch_size=1000) as p:
        start = trio.current_time()
        for _i in range(20):
            await p.produce("t", b"x" * 100, partition=1)
        while not pb.produced:
            await trio.sleep(0.001)
        assert pb.produced[0][0] - start < 0.1
        assert await p.flush() == 0


async def test_retriable_errors_are_retried_with_backoff(pb, autojump_clock):
    """NOT_LEADER then success: the record is delivered once, after retry_backoff_ms."""
    pb.fail_next = [ErrorCode.NOT_LEADER_OR_FOLLOWER, ErrorCode.REQUEST_TIMED_OUT]
    reports = []
    async with producer(pb, linger_ms=0,
                                     retry_backoff_ms=100) as p:
        await p.produce("t", b"r", partition=0, on_delivery=lambda e, r: reports.append((e, r)))
        assert await p.flush() == 0
    assert [(e, r.offset) for e, r in reports] == [(None, 0)]
    assert [v for _, _, v in pb.produced] == [[b"r"]]


async def test_non_retriable_error_goes_to_the_callback(pb, autojump_clock):
    """MESSAGE_TOO_LARGE is final: on_delivery gets RecordTooLargeError, offset -1."""
    pb.fail_next = [ErrorCode.MESSAGE_TOO_LARGE]
    reports = []
    async with producer(pb, linger_ms=0) as p:
        await p.produce("t", b"big", partition=0, on_delivery=lambda e, r: reports.append((e, r)))
        assert await p.flush() == 0
    (err, report), = reports
    assert isinstance(err, errors.RecordTooLargeError) and report.offset == -1


async def test_too_large_batch_is_split_and_sent_in_order(pb, autojump_clock):
    """MESSAGE_TOO_LARGE for a multi-record batch: halves are re-queued in order, all delivered."""
    pb.fail_next = [ErrorCode.MESSAGE_TOO_LARGE]
    reports = []
    async with producer(pb, linger_ms=100) as p:
        for i in range(10):
            await p.produce("t", b"%d" % i, partition=0,
                            on_delivery=lambda e, r: reports.append((e, r.value, r.offset)))
        assert await p.flush() == 0
    assert [v for _, _, vs in pb.produced for v in vs] == [b"%d" % i for i in range(10)]
    assert len(pb.produced) == 2
    assert reports == [(None, b"%d" % i, i) for i in range(10)]


async def test_retries_stop_at_delivery_timeout(pb, autojump_clock):
    """A partition that keeps failing gives up after delivery_timeout_ms with the last error."""
    pb.fail_next = [ErrorCode.NOT_ENOUGH_REPLICAS] * 1000
    reports = []
    async with producer(pb, linger_ms=0, acks="all",
                                     retry_backoff_ms=100, delivery_timeout_ms=1000) as p:
        start = trio.current_time()
        await p.produce("t", b"x", partition=0, on_delivery=lambda e, r: reports.append(e))
        assert await p.flush() == 0
        assert trio.current_time() - start <= 1.1
    assert isinstance(reports[0], errors.NotEnoughReplicasError)


async def test_idempotent_retries_keep_partition_order(pb, autojump_clock):
    """With enable_idempotence one batch per partition is in flight: a retry cannot reorder."""
    pb.fail_next = [ErrorCode.NOT_LEADER_OR_FOLLOWER]
    async with producer(pb, enable_idempotence=True,
                                     acks="all", linger_ms=0, batch_size=200) as p:
        assert p.producer_id == 7 and p.producer_epoch == 0
        for i in range(30):
            await p.produce("t", b"%02d" % i + b"." * 40, partition=0)
        assert await p.flush() == 0
    values = [v[:2] for _, _, vs in pb.produced for v in vs]
    assert values == [b"%02d" % i for i in range(30)]


async def test_acks_zero_completes_without_response(pb, autojump_clock):
    """acks=0: no response is awaited; reports say offset -1."""
    reports = []
    async with producer(pb, acks=0, linger_ms=0) as p:
        await p.produce("t", b"z", partition=1, on_delivery=lambda e, r: reports.append((e, r)))
        assert await p.flush() == 0
    assert [(e, r.offset) for e, r in reports] == [(None, -1)]


async def test_full_buffer_blocks_then_times_out(pb, autojump_clock):
    """produce() waits for buffer space up to max_block_ms, then RequestTimeoutError."""
    pb.script = lambda req: None if req.api_key == ApiKey.PRODUCE else pb.answer(req)
    async with producer(pb, linger_ms=0, batch_size=1024,
                                     buffer_memory=4096, max_block_ms=300,
                                     request_timeout_ms=100000,
                                     delivery_timeout_ms=200000) as p:
        with pytest.raises(errors.RequestTimeoutError, match="buffer_memory"):
            for _ in range(100):
                await p.produce("t", b"y" * 500, partition=0)
        p.close_timeout = 0        # leaving the block: undelivered records fail with ClosedError
    p.poll()
    assert len(p) == 0


async def test_failed_idempotent_batch_bumps_epoch_and_restarts_sequences(pb, autojump_clock):
    """A batch that fails for good leaves a sequence gap: the producer takes a new epoch."""
    pb.fail_next = [ErrorCode.MESSAGE_TOO_LARGE]
    errs = []
    async with producer(pb, enable_idempotence=True,
                                     acks="all", linger_ms=0) as p:
        await p.produce("t", b"too big", partition=0, on_delivery=lambda e, r: errs.append(e))
        assert await p.flush() == 0
        await p.produce("t", b"next", partition=0)
        assert await p.flush() == 0
        assert p.producer_epoch == 1
    assert isinstance(errs[0], errors.RecordTooLargeError)
    assert pb.headers == [(0, 0, ErrorCode.MESSAGE_TOO_LARGE), (1, 0, 0)]


async def test_batches_never_exceed_batch_size_when_the_sender_falls_behind(pb, autojump_clock):
    """30,000 records of 100 bytes, linger 200 ms, one request in flight: every stored batch
    is at most batch_size; a request carries several batches of a partition instead."""
    async with producer(pb, linger_ms=200, batch_size=16384, max_in_flight=1) as p:
        for i in range(30_000):
            await p.produce("t", b"%06d" % i + b"." * 94, partition=0)
        assert await p.flush() == 0
    assert max(pb.batch_sizes) <= 16384
    assert len(pb.batch_sizes) >= 30_000 * 122 // 16384
    assert len(pb.produced) < len(pb.batch_sizes)      # some requests held several batches
    values = [v[:6] for _, _, vs in pb.produced for v in vs]
    assert values == [b"%06d" % i for i in range(30_000)]


async def test_a_record_larger_than_batch_size_is_a_batch_of_its_own(pb, autojump_clock):
    """The only batch allowed past batch_size holds one record larger than it."""
    async with producer(pb, linger_ms=50, batch_size=1024) as p:
        await p.produce("t", b"a" * 100, partition=0)
        await p.produce("t", b"b" * 3000, partition=0)
        await p.produce("t", b"c" * 100, partition=0)
        assert await p.flush() == 0
    big = [size for size in pb.batch_sizes if size > 1024]
    assert len(big) == 1 and big[0] < 3200
    assert [v[:1] for _, _, vs in pb.produced for v in vs] == [b"a", b"b", b"c"]


@pytest.mark.parametrize("limit", ["max_request_size", "buffer_memory"])
async def test_a_record_that_can_never_be_sent_fails_at_once(pb, autojump_clock, limit):
    """Larger than max_request_size or buffer_memory: RecordTooLargeError, no max_block_ms wait."""
    options = {limit: 4096, "max_block_ms": 60_000, "batch_size": 1024}
    async with producer(pb, **options) as p:
        start = trio.current_time()
        for call in (lambda: p.produce("t", b"x" * 5000),
                     lambda: p.produce_batch("t", [b"ok", b"x" * 5000])):
            with pytest.raises(errors.RecordTooLargeError, match=limit):
                await call()
        assert trio.current_time() == start
        await p.produce("t", b"x" * 100)      # smaller records still go
        assert await p.flush() == 0


@pytest.mark.parametrize("idempotent", [False, True])
async def test_callbacks_come_within_delivery_timeout_from_a_silent_broker(pb, autojump_clock,
                                                                             idempotent):
    """A broker that stops answering: every callback comes by delivery_timeout_ms, not request_timeout_ms."""
    pb.script = lambda req: None if req.api_key != ApiKey.INIT_PRODUCER_ID else pb.answer(req)
    options = dict(enable_idempotence=True, acks="all") if idempotent else {}
    done = []
    async with producer(pb, linger_ms=10, delivery_timeout_ms=4000, request_timeout_ms=30000,
                        retry_backoff_ms=100, **options) as p:
        start = trio.current_time()
        for i in range(50):
            await p.produce("t", b"%d" % i, partition=i % 2,
                            on_delivery=lambda e, r: done.append((trio.current_time() - start, e)))
        assert await p.flush() == 0
    assert len(done) == 50
    assert max(t for t, _ in done) <= 4.0 + 0.01
    assert all(isinstance(e, errors.RequestTimeoutError) for _, e in done)
