"""The client against a real `minilog serve` subprocess (the `broker` fixture).

Every wait is bounded (flush/poll timeouts, trio.fail_after); nothing sleeps
to synchronise.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest
import trio

import minilog
from minilog import errors
from minilog.client._partitioner import partition_for_key
from minilog.protocol._compression import codec_available
from minilog.client._config import CODECS

WAIT_S = 20


def bs(broker) -> str:
    return f"{broker.host}:{broker.port}"


def consume_n(consumer, n: int, timeout_s: float = WAIT_S) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += consumer.poll(timeout_ms=200)
    return got


@pytest.fixture
def admin(broker):
    with minilog.Admin(bs(broker), request_timeout_ms=10000) as a:
        yield a


def test_produce_consume_round_trip_with_delivery_reports(broker, admin):
    """Delivery reports carry dense offsets; a consumer reads back the same records in order."""
    admin.create_topic("orders", partitions=1)
    reports = []
    with minilog.Producer(bs(broker), linger_ms=1) as p:
        for i in range(100):
            p.produce("orders", b"value-%d" % i, key=b"k", headers=[("n", b"%d" % i)],
                      on_delivery=lambda err, r: reports.append((err, r)))
        assert p.flush(WAIT_S) == 0
        assert len(p) == 0
    assert [e for e, _ in reports] == [None] * 100
    assert [r.offset for _, r in reports] == list(range(100))
    assert reports[5][1].value == b"value-5" and reports[5][1].key == b"k"
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("orders", 0)])
        got = consume_n(c, 100)
        assert [r.offset for r in got] == list(range(100))
        assert [r.value for r in got] == [b"value-%d" % i for i in range(100)]
        assert got[7].headers == [("n", b"7")] and got[7].key == b"k"
        assert got[0].topic == "orders" and got[0].partition == 0
        assert c.position("orders", 0) == 100
        assert c.assignment() == {("orders", 0)}


def test_keyed_records_keep_order_per_partition_and_land_on_kafkas_partition(broker, admin):
    """Each key's records land on murmur2(key) % n and stay in produce order."""
    admin.create_topic("keyed", partitions=4)
    with minilog.Producer(bs(broker), linger_ms=2, batch_size=2048) as p:
        for i in range(400):
            p.produce("keyed", b"%d" % i, key=b"customer-%d" % (i % 13))
        assert p.flush(WAIT_S) == 0
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("keyed", p) for p in range(4)])
        got = consume_n(c, 400)
    assert len(got) == 400
    per_key: dict = {}
    for r in got:
        assert r.partition == partition_for_key(r.key, 4)
        per_key.setdefault(r.key, []).append(int(r.value))
    for key, values in per_key.items():
        assert values == sorted(values), key


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_acks_settings_deliver(broker, admin, acks):
    """acks 0, 1 and all all deliver; acks=0 reports offset -1 (no response)."""
    admin.create_topic("acks", partitions=1)
    reports = []
    with minilog.Producer(bs(broker), acks=acks) as p:
        for i in range(20):
            p.produce("acks", b"%d" % i, on_delivery=lambda e, r: reports.append((e, r.offset)))
        assert p.flush(WAIT_S) == 0
    assert all(e is None for e, _ in reports) and len(reports) == 20
    if acks == 0:
        assert {o for _, o in reports} == {-1}
    else:
        assert [o for _, o in reports] == list(range(20))
    assert admin.list_offsets({("acks", 0): "latest"}) == {("acks", 0): 20}


@pytest.mark.parametrize("codec", ["gzip", "lz4", "zstd", "snappy"])
def test_compression_codecs_round_trip(broker, admin, codec):
    """Compressed batches are stored as sent and decode back on the consumer."""
    if not codec_available(CODECS[codec]):
        pytest.skip(f"{codec} not installed")
    admin.create_topic("z", partitions=1)
    values = [(b"record %d " % i) * 20 for i in range(300)]
    with minilog.Producer(bs(broker), compression_type=codec) as p:
        p.produce_batch("z", values)
        assert p.flush(WAIT_S) == 0
    size = admin.describe_topic("z").partitions[0].size_bytes
    assert size < sum(map(len, values)) // 2
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("z", 0)])
        assert [r.value for r in consume_n(c, 300)] == values


def test_seek_and_seek_to_beginning_and_end(broker, admin):
    """seek() moves the next poll; seek_to_* resolve lazily to log start / high watermark."""
    admin.create_topic("s", partitions=1)
    with minilog.Producer(bs(broker)) as p:
        p.produce_batch("s", [b"%d" % i for i in range(50)])
        p.flush(WAIT_S)
    with minilog.Consumer(bs(broker), auto_offset_reset="latest") as c:
        c.assign([("s", 0)])
        assert c.position("s", 0) == 50
        c.seek("s", 0, 42)
        assert [r.offset for r in consume_n(c, 8)] == list(range(42, 50))
        c.seek_to_beginning()
        got = consume_n(c, 50)
        assert got[0].offset == 0 and len(got) == 50
        c.seek_to_end([("s", 0)])
        assert c.position("s", 0) == 50
        assert c.poll(timeout_ms=100) == []
        c.seek("s", 0, 10)
        assert c.poll(timeout_ms=WAIT_S * 1000, max_records=3)[0].offset == 10
        with pytest.raises(errors.MinilogError, match="not assigned"):
            c.seek("other", 0, 1)
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("s", 0, 45)])
        assert [r.offset for r in consume_n(c, 5)] == [45, 46, 47, 48, 49]


def test_offsets_for_times(broker, admin):
    """The first offset with a timestamp at or after the one asked; None past the end."""
    admin.create_topic("ts", partitions=1)
    with minilog.Producer(bs(broker)) as p:
        for i in range(10):
            p.produce("ts", b"%d" % i, timestamp_ms=1_000_000 + i * 1000)
        p.flush(WAIT_S)
    with minilog.Consumer(bs(broker)) as c:
        c.assign([("ts", 0)])
        found = c.offsets_for_times({("ts", 0): 1_004_500})
        assert found == {("ts", 0): (5, 1_005_000)}
        assert c.offsets_for_times({("ts", 0): 2_000_000}) == {("ts", 0): None}
        assert c.offsets_for_times({("ts", 0): 0})[("ts", 0)][0] == 0
    assert admin.list_offsets({("ts", 0): "earliest"}) == {("ts", 0): 0}
    assert admin.list_offsets({("ts", 0): 1_003_000}) == {("ts", 0): 3}


def test_admin_create_describe_alter_delete(broker, admin):
    """Topic lifecycle through Admin, with typed errors for the common mistakes."""
    admin.create_topic("a1", partitions=3, config={"retention.ms": "3600000"})
    admin.create_topics([("a2", 2), {"name": "a3", "partitions": 1}])
    assert {"a1", "a2", "a3"} <= set(admin.list_topics())
    with pytest.raises(errors.TopicAlreadyExistsError):
        admin.create_topic("a1")
    d = admin.describe_topic("a1")
    assert d.name == "a1" and [p.partition for p in d.partitions] == [0, 1, 2]
    assert d.partitions[0].leader == 0 and d.partitions[0].log_end_offset == 0
    assert d.config["retention.ms"] == "3600000"
    admin.alter_configs("a1", {"retention.ms": "7200000", "cleanup.policy": "delete"})
    assert admin.describe_configs("a1")["retention.ms"] == "7200000"
    admin.alter_configs("a1", {"retention.ms": None})
    assert admin.describe_configs("a1", verbose=True)["retention.ms"]["is_default"]
    with pytest.raises(errors.InvalidConfigError):
        admin.alter_configs("a1", {"no.such.key": "1"})
    admin.create_partitions("a1", 5)
    assert len(admin.describe_topic("a1").partitions) == 5
    with pytest.raises(errors.InvalidPartitionsError):
        admin.create_partitions("a1", 2)
    md = admin.metadata()
    assert md.topics["a1"] == 5 and 0 in md.brokers
    admin.delete_topic("a2")
    assert "a2" not in admin.list_topics()
    with pytest.raises(errors.UnknownTopicOrPartitionError):
        admin.delete_topic("a2")
    with pytest.raises(errors.UnknownTopicOrPartitionError):
        admin.describe_topic("nope")
    with pytest.raises(errors.InvalidPartitionsError):
        admin.create_topic("bad", partitions=0)


def test_auto_offset_reset_error_raises_offset_out_of_range(broker, admin):
    """auto_offset_reset='error': no position -> OffsetOutOfRangeError from poll()."""
    admin.create_topic("oor", partitions=1)
    with minilog.Consumer(bs(broker), auto_offset_reset="error") as c:
        c.assign([("oor", 0)])
        with pytest.raises(errors.OffsetOutOfRangeError):
            c.position("oor", 0)
        with pytest.raises(errors.OffsetOutOfRangeError):
            consume_n(c, 1, timeout_s=5)
    with minilog.Consumer(bs(broker), auto_offset_reset="error") as c:
        c.assign([("oor", 0, 1000)])
        with pytest.raises(errors.OffsetOutOfRangeError):
            consume_n(c, 1, timeout_s=5)


def test_out_of_range_position_resets_to_earliest(broker, admin):
    """A seek past the log end with auto_offset_reset='earliest' restarts at the log start."""
    admin.create_topic("oor2", partitions=1)
    with minilog.Producer(bs(broker)) as p:
        p.produce_batch("oor2", [b"a", b"b"])
        p.flush(WAIT_S)
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("oor2", 0, 99)])
        assert [r.value for r in consume_n(c, 2)] == [b"a", b"b"]


def test_idempotent_producer_gets_producer_id_and_delivers(broker, admin):
    """enable_idempotence asks InitProducerId and stamps id/epoch/sequence into batches."""
    admin.create_topic("idem", partitions=2)
    with minilog.Producer(bs(broker), enable_idempotence=True, acks="all") as p:
        assert p._async.producer_id >= 0
        for i in range(100):
            p.produce("idem", b"%d" % i, key=b"%d" % (i % 5))
        assert p.flush(WAIT_S) == 0
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("idem", 0), ("idem", 1)])
        assert len(consume_n(c, 100)) == 100


def test_unknown_topic_fails_after_max_block_ms(broker_factory):
    """Producing to a topic that never appears raises after max_block_ms, not a hang."""
    broker = broker_factory("--set", "auto.create.topics.enable=false")
    with minilog.Producer(bs(broker), max_block_ms=500) as p:
        with pytest.raises(errors.UnknownTopicOrPartitionError, match="not present in metadata after 500 ms"):
            p.produce("never", b"x")


def test_auto_created_topic_on_first_produce(broker):
    """With the broker's auto.create.topics.enable (default true), producing creates the topic."""
    with minilog.Producer(bs(broker)) as p:
        p.produce("auto", b"x")
        assert p.flush(WAIT_S) == 0
        assert p.partitions_for("auto") == [0]


def test_broker_down_at_construction_is_broker_unavailable_saying_refused(broker):
    """No broker at the address: BrokerUnavailableError saying "connection refused"."""
    broker.kill()
    for cls in (minilog.Producer, minilog.Consumer, minilog.Admin):
        with pytest.raises(errors.BrokerUnavailableError, match="connection refused"):
            cls(bs(broker), request_timeout_ms=600_000, socket_connection_setup_timeout_ms=1000)


def test_broker_killed_mid_request_gives_typed_errors_not_a_hang(broker, admin):
    """SIGKILL of the broker: admin calls raise BrokerUnavailableError, produce fails by timeout."""
    admin.create_topic("k", partitions=1)
    p = minilog.Producer(bs(broker), delivery_timeout_ms=1500, request_timeout_ms=1000,
                         retry_backoff_ms=50)
    c = minilog.Consumer(bs(broker), auto_offset_reset="earliest", request_timeout_ms=1000,
                         fetch_max_wait_ms=100)
    c.assign([("k", 0)])
    p.produce("k", b"before")
    assert p.flush(WAIT_S) == 0
    assert [r.value for r in consume_n(c, 1)] == [b"before"]
    errs = []
    broker.stop(signal.SIGKILL)
    with pytest.raises((errors.BrokerUnavailableError, errors.RequestTimeoutError)):
        admin.list_topics()
    with pytest.raises((errors.BrokerUnavailableError, errors.RequestTimeoutError)):
        p.produce("new-topic", b"x")      # needs metadata: fails, typed
    p.produce("k", b"x", on_delivery=lambda e, r: errs.append(e))
    assert p.flush(10) == 0
    assert len(errs) == 1 and isinstance(errs[0], (errors.BrokerUnavailableError,
                                                   errors.RequestTimeoutError))
    assert c.poll(timeout_ms=300) == []    # the fetcher retries quietly
    p.close()
    p.close()
    c.close()
    c.close()


def test_issue_8_idempotent_producer_delivers_callbacks_within_delivery_timeout_after_sigkill(
        broker, admin, caplog):
    """Broker killed with SIGKILL under an idempotent producer with many queued batches: every
    callback comes within delivery_timeout_ms (flush bounded by it returns 0), and the failed
    epoch bump warns once (it used to block the sender on every round: callbacks 13 s late)."""
    admin.create_topic("idem-kill", partitions=12)
    p = minilog.Producer(bs(broker), enable_idempotence=True, acks="all", linger_ms=5,
                         batch_size=1024, delivery_timeout_ms=4000, retry_backoff_ms=100)
    try:
        for i in range(200):
            p.produce("idem-kill", b"before-%d" % i, key=b"%d" % i)
        assert p.flush(WAIT_S) == 0
        errs = []
        for i in range(500):          # some are in flight or queued at the kill
            p.produce("idem-kill", b"at-%d" % i + b"." * 100, key=b"%d" % i,
                      on_delivery=lambda e, r: errs.append(e))
        broker.stop(signal.SIGKILL)
        for i in range(4000):         # produced after it: metadata is known, the leader is gone
            p.produce("idem-kill", b"after-%d" % i + b"." * 100, key=b"%d" % i,
                      on_delivery=lambda e, r: errs.append(e))
        assert p.flush(4.0 + 2.0) == 0        # delivery_timeout_ms, plus scheduling slack
        assert len(errs) == 4500
        assert all(isinstance(e, (errors.BrokerUnavailableError, errors.RequestTimeoutError))
                   for e in errs if e is not None)
        assert sum(e is not None for e in errs) >= 4000
        warnings = [r for r in caplog.records if "could not bump" in r.getMessage()
                    and r.levelname == "WARNING"]
        assert len(warnings) <= 1
    finally:
        p.close(0)


def test_close_is_idempotent_and_closed_clients_refuse(broker):
    """close() twice is fine; calls after close raise ClosedError."""
    p = minilog.Producer(bs(broker))
    p.close()
    p.close()
    with pytest.raises(errors.ClosedError):
        p.produce("t", b"x")
    c = minilog.Consumer(bs(broker))
    c.close()
    c.close()
    with pytest.raises(errors.ClosedError):
        c.poll()
    a = minilog.Admin(bs(broker))
    a.close()
    a.close()
    with pytest.raises(errors.ClosedError):
        a.list_topics()


def test_callbacks_run_on_the_callers_thread(broker, admin):
    """on_delivery runs inside flush()/poll() on the thread that calls them."""
    admin.create_topic("thr", partitions=1)
    threads = set()
    with minilog.Producer(bs(broker)) as p:
        for _ in range(10):
            p.produce("thr", b"x", on_delivery=lambda e, r: threads.add(threading.get_ident()))
        p.flush(WAIT_S)
    assert threads == {threading.get_ident()}


def test_consumer_iteration(broker, admin):
    """`for record in consumer` yields records one by one."""
    admin.create_topic("it", partitions=1)
    with minilog.Producer(bs(broker)) as p:
        p.produce_batch("it", [b"%d" % i for i in range(5)])
        p.flush(WAIT_S)
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("it", 0)])
        out = []
        for record in c:
            out.append(record.value)
            if len(out) == 5:
                break
    assert out == [b"0", b"1", b"2", b"3", b"4"]


async def test_async_twins_round_trip(broker):
    """AsyncAdmin, AsyncProducer and AsyncConsumer work natively in trio."""
    addr = bs(broker)
    with trio.fail_after(WAIT_S):
        async with minilog.AsyncAdmin(addr) as admin:
            await admin.create_topic("async", partitions=2)
            assert "async" in await admin.list_topics()
        async with minilog.AsyncProducer(addr, linger_ms=0) as p:
            report = await p.send("async", b"one", key=b"k")
            assert report.offset == 0 and report.partition == partition_for_key(b"k", 2)
            seen = []
            for i in range(10):
                await p.produce("async", b"%d" % i, partition=0,
                                on_delivery=lambda e, r: seen.append(r.offset))
            assert await p.flush() == 0
            assert len(seen) == 10
        async with minilog.AsyncConsumer(addr, auto_offset_reset="earliest") as c:
            c.assign([("async", 0), ("async", 1)])
            got = []
            while len(got) < 11:
                got += await c.poll(timeout_ms=1000)
            assert sorted(r.value for r in got) == sorted([b"one"] + [b"%d" % i for i in range(10)])
            assert await c.position("async", 0) == sum(1 for r in got if r.partition == 0)
            found = await c.offsets_for_times({("async", 0): 0})
            assert found[("async", 0)][0] == 0


def test_sync_producer_crosses_threads_per_batch_not_per_record(broker, admin):
    """10,000 keyless produce() calls wake the background thread about once per batch."""
    admin.create_topic("hops", partitions=1)
    with minilog.Producer(bs(broker), linger_ms=20, batch_size=16384) as p:
        p.produce("hops", b"warm-up")
        p.flush(WAIT_S)
        acc = p._acc
        wakes = []
        real = acc.notify
        acc.notify = lambda: (wakes.append(1), real())
        for _ in range(10_000):
            p.produce("hops", b"x" * 100)
        assert p.flush(WAIT_S) == 0
    batches = 10_000 * 122 // 16384
    assert len(wakes) <= 2 * batches + 10, len(wakes)


def test_consumer_reports_a_crashed_background_thread(broker, admin):
    """If the fetcher dies of a bug, poll() raises ClosedError naming the cause (no hang)."""
    admin.create_topic("crash", partitions=1)
    c = minilog.Consumer(bs(broker), auto_offset_reset="earliest", fetch_max_wait_ms=50)

    def boom(*args):
        raise RuntimeError("injected bug")

    c._async._fetchable = boom
    c.assign([("crash", 0)])
    with pytest.raises(errors.ClosedError, match="injected bug"):
        consume_n(c, 1, timeout_s=10)
    c.close()


def test_null_values_str_values_header_dicts_and_statistics(broker, admin):
    """Tombstones (None), str values (UTF-8) and dict headers round-trip; statistics() add up."""
    admin.create_topic("misc", partitions=1)
    with minilog.Producer(bs(broker)) as p:
        p.produce("misc", None, key=b"gone")
        p.produce("misc", "héllo", key="k", headers={"source": b"test", "empty": None})
        assert p.statistics().records_undelivered == 2
        assert p.flush(WAIT_S) == 0
        stats = p.statistics()
        assert stats.records_undelivered == 0 and stats.records_failed == 0
    with minilog.Consumer(bs(broker), auto_offset_reset="earliest") as c:
        c.assign([("misc", 0)])
        first, second = consume_n(c, 2)
        assert first.value is None and first.key == b"gone"
        assert second.value == "héllo".encode() and second.key == b"k"
        assert second.headers == [("source", b"test"), ("empty", None)]
        stats = c.statistics()
        assert stats.positions == {("misc", 0): 2} and stats.high_watermarks == {("misc", 0): 2}


def test_produce_to_missing_partition_raises_unknown_partition_error(broker):
    """Producer.produce(partition=5) on a 1-partition topic: UnknownPartitionError (a ValueError)."""
    addr = bs(broker)
    with minilog.Admin(addr) as admin:
        admin.create_topic("one", partitions=1)
    with minilog.Producer(addr, linger_ms=0) as p:
        with pytest.raises(errors.UnknownPartitionError, match="out of range") as info:
            p.produce("one", b"x", partition=5)
        assert isinstance(info.value, ValueError) and info.value.retriable is False
        with pytest.raises(errors.UnknownPartitionError):
            p.produce_batch("one", [b"x"], partition=5)
        p.produce("one", b"ok", partition=0)
        assert p.flush(WAIT_S) == 0


async def test_async_clients_lifecycle(broker):
    """`async with` once; a failed entry leaves "closed"; the block's own error comes out bare."""
    addr = bs(broker)
    with trio.fail_after(WAIT_S):
        for cls in (minilog.AsyncAdmin, minilog.AsyncProducer, minilog.AsyncConsumer):
            c = cls(addr)
            async with c:
                assert c._state == "running"
                with pytest.raises(errors.MinilogError, match="once"):
                    async with c:
                        pass
            assert c._state == "closed"
            with pytest.raises(errors.MinilogError, match="closed"):
                async with c:
                    pass
            extra = {"fetch_max_wait_ms": 100} if cls is minilog.AsyncConsumer else {}
            dead = cls("127.0.0.1:1", request_timeout_ms=300, **extra)
            with pytest.raises(errors.BrokerUnavailableError):
                async with dead:
                    pass
            assert dead._state == "closed"
            with pytest.raises(KeyError, match="mine"):   # not an ExceptionGroup
                async with cls(addr):
                    raise KeyError("mine")


async def test_a_crashed_background_task_ends_the_async_with_block(broker):
    """A bug in the fetcher cancels the caller's block and comes out of `async with`."""
    with trio.fail_after(WAIT_S):
        async with minilog.AsyncAdmin(bs(broker)) as admin:
            await admin.create_topic("crash-async", partitions=1)
        c = minilog.AsyncConsumer(bs(broker), auto_offset_reset="earliest")

        def boom(*args):
            raise RuntimeError("injected bug")

        c._fetchable = boom
        with pytest.raises(RuntimeError, match="injected bug"):
            async with c:
                c.assign([("crash-async", 0)])
                await trio.sleep_forever()
