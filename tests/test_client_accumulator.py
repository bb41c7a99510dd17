"""The producer's caller-side accumulator: sealing, linger, stickiness, columns, callbacks."""

from __future__ import annotations

import pytest

from minilog.client._accumulator import RECORD_OVERHEAD_BYTES, Accumulator
from minilog.client._partitioner import partition_for_key
from minilog.protocol import build_batch, decode_records


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(batch_size=1000, linger_ms=5, partitions=4):
    clock = FakeClock()
    acc = Accumulator(batch_size=batch_size, linger_ms=linger_ms, buffer_memory=1 << 20,
                      clock=clock, wall_ms=lambda: 1_700_000_000_000, seed=3)
    acc.num_partitions["t"] = partitions
    wakes = []
    acc.notify = lambda: wakes.append(clock.now)
    return acc, clock, wakes


def test_batch_is_sealed_when_full_and_sticky_partition_moves():
    """A batch reaching batch_size is sealed on the caller's side; keyless records then stick elsewhere."""
    acc, _, wakes = make(batch_size=61 + 10 * (100 + RECORD_OVERHEAD_BYTES))
    for _ in range(10):
        acc.append("t", b"x" * 100)
    assert len(acc.sealed) == 1 and not acc.open
    first = acc.sealed[0]
    assert len(first.values) == 10 and first.sealed
    acc.append("t", b"y" * 100)
    (b,) = acc.open.values()
    assert b.partition != first.partition
    assert wakes, "sealing wakes the sender"


def test_linger_drain_seals_only_old_batches_and_reports_next_deadline():
    """drain() seals batches older than linger_ms and returns the earliest remaining deadline."""
    acc, clock, _ = make(linger_ms=5)
    acc.append("t", b"a", partition=0)
    clock.now += 0.003
    acc.append("t", b"b", partition=1)
    batches, deadline = acc.drain(clock.now)
    assert batches == [] and deadline == pytest.approx(100.005)
    clock.now = 100.005
    batches, deadline = acc.drain(clock.now)
    assert [b.partition for b in batches] == [0] and deadline == pytest.approx(100.008)
    acc.flushing = 1
    batches, deadline = acc.drain(clock.now)
    assert [b.partition for b in batches] == [1] and deadline is None and acc.idle


def test_new_batch_wakes_an_idle_sender_once():
    """Opening a batch while the sender sleeps without deadline wakes it; wake-ups coalesce."""
    acc, clock, wakes = make(linger_ms=5)
    acc.append("t", b"a", partition=0)
    acc.append("t", b"b", partition=1)
    assert len(wakes) == 1      # coalesced until the sender drains
    acc.drain(clock.now)        # sender ran: knows the deadline, not idle
    acc.append("t", b"c", partition=2)
    assert len(wakes) == 1      # not idle: the sender's timer covers it


def test_keyed_records_go_to_kafkas_partition_and_columns_fill_lazily():
    """Keys pick murmur2 partitions; key/header/timestamp columns appear only when used."""
    acc, clock, _ = make(partitions=5)
    acc.append("t", b"v1", key=b"order-1")
    p = partition_for_key(b"order-1", 5)
    b = acc.open[("t", p)]
    assert b.keys == [b"order-1"] and b.headers is None and b.timestamps is None
    acc.append("t", b"v2", key=b"order-1", headers=[("h", b"1")], timestamp_ms=5)
    assert b.headers == [None, [("h", b"1")]]
    assert b.timestamps == [1_700_000_000_000, 5]
    assert not b.plain
    acc.flushing = 1
    (batch,) = acc.drain(clock.now)[0]
    data = build_batch(batch.values, batch.keys, timestamps=batch.timestamps, headers=batch.headers)
    recs = decode_records(data, "t", p)
    assert [(r.key, r.value, r.timestamp) for r in recs] == [
        (b"order-1", b"v1", 1_700_000_000_000), (b"order-1", b"v2", 5)]
    assert recs[1].headers == [("h", b"1")]


def test_values_are_validated_and_str_encoded():
    """str values/keys become UTF-8; other types are refused at produce time."""
    acc, _, _ = make()
    acc.append("t", "héllo", key="k")
    b = next(iter(acc.open.values()))
    assert b.values == ["héllo".encode()] and b.keys == [b"k"]
    with pytest.raises(TypeError):
        acc.append("t", 42)
    with pytest.raises(ValueError):
        acc.append("t", b"x", partition=9)


def test_append_many_splits_by_batch_size_and_key():
    """The bulk path fills batches whole and routes keyed records like append()."""
    acc, clock, _ = make(batch_size=61 + 100 * (10 + RECORD_OVERHEAD_BYTES), partitions=3)
    acc.append_many("t", [b"0123456789"] * 250)
    sizes = [len(b.values) for b in acc.sealed] + [len(b.values) for b in acc.open.values()]
    assert sizes == [100, 100, 50] and acc.undelivered == 250
    keys = [b"k%d" % (i % 7) for i in range(70)]
    acc.append_many("t", [b"v"] * 70, keys=keys)
    acc.flushing = 1
    batches, _ = acc.drain(clock.now)
    for b in batches:
        if b.keys is not None:
            assert all(k is None or partition_for_key(k, 3) == b.partition for k in b.keys)


def test_serve_completed_runs_callbacks_with_offsets_and_counts_everything():
    """Callbacks get (err, report) with base_offset + i; batches without callbacks only count."""
    acc, clock, _ = make()
    got = []
    acc.append("t", b"a", partition=0, callback=lambda e, r: got.append((e, r)))
    acc.append("t", b"b", partition=0)
    acc.append("t", b"c", partition=0, callback=lambda e, r: got.append((e, r)))
    acc.append("t", b"d", partition=1)
    acc.flushing = 1
    batches, _ = acc.drain(clock.now)
    for b in batches:
        b.count = len(b.values)
    assert acc.undelivered == 4
    acc.completed.append((batches[0], 40, -1, None))
    acc.completed.append((batches[1], -1, -1, RuntimeError("x")))
    assert acc.serve_completed() == 4 and acc.undelivered == 0
    assert [(e, r.offset, r.value) for e, r in got] == [(None, 40, b"a"), (None, 42, b"c")]
    assert got[0][1].timestamp == 1_700_000_000_000
    assert acc.buffered_bytes == 0


def test_lock_free_fast_path_loses_and_duplicates_nothing_under_races():
    """Three producer threads on produce()'s lock-free path race a thread sealing batches.

    Every record must end up in exactly one sealed batch. The switch interval
    is cut to microseconds so threads interleave between every few bytecodes.
    """
    import sys
    import threading

    from minilog.client.sync import Producer

    acc, clock, _ = make(batch_size=61 + 50 * (8 + RECORD_OVERHEAD_BYTES), linger_ms=0,
                         partitions=3)

    class FakeProducer:   # just what Producer.produce touches
        _acc = acc
        _completed = acc.completed
        _sticky = acc.sticky

        def _produce_slow(self, topic, value, key, partition, headers, ts, cb):
            acc.append(topic, value, key, partition, headers, ts, cb)

    fake = FakeProducer()
    produce = Producer.produce
    taken: list = []
    done = threading.Event()

    def sealer():
        while not done.is_set():
            acc.flushing = 1
            taken.extend(acc.drain(clock.now)[0])

    def producer(tid: int):
        for i in range(20000):
            produce(fake, "t", b"%02d%06d" % (tid, i))

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        s = threading.Thread(target=sealer)
        s.start()
        threads = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        s.join()
    finally:
        sys.setswitchinterval(old)
    acc.flushing = 1
    taken.extend(acc.drain(clock.now)[0])
    got = [v for b in taken for v in b.values]
    assert len(got) == 60000 and set(got) == {b"%02d%06d" % (t, i)
                                              for t in range(3) for i in range(20000)}
    assert acc.undelivered == 60000 and not acc.open
    for tid in range(3):   # one thread's records on one partition stay in order
        for p in range(3):
            mine = [v for b in taken if b.partition == p for v in b.values if v[:2] == b"%02d" % tid]
            assert mine == sorted(mine)


def test_fast_path_append_after_detach_is_moved_by_fixup():
    """The exact race, step by step: the caller appends to a batch sealed under its feet."""
    acc, _clock, _ = make(partitions=2)
    acc.append("t", b"aaaa")
    b = acc.sticky["t"]
    assert b.plain and b.value_len == 4
    values = b.values                 # caller: read the list, check plain ...
    assert b.plain
    with acc.lock:                    # ... the sender seals the batch meanwhile ...
        acc.seal(b)
    values.append(b"bbbb")            # ... the caller's append lands in the old list
    assert not b.plain
    acc.fixup(b, values)              # the caller notices and hands the record back
    assert b.values == [b"aaaa"] and values == [b"aaaa"]
    (nb,) = acc.open.values()
    assert nb.values == [b"bbbb"] and nb is not b
    acc.fixup(b, values)              # idempotent: nothing moves twice
    assert nb.values == [b"bbbb"]


class _Cb:
    """A delivery callback that knows its own record's value and records its reports."""

    __slots__ = ("value", "out")

    def __init__(self, value, out=None):
        self.value = value
        self.out = out

    def __call__(self, err, report):
        if self.out is not None:
            self.out.append((self.value, err, report))


def test_paired_fast_path_keeps_callbacks_aligned_under_races():
    """Records with and without callbacks race a sealer on produce()'s lock-free path.

    A plain batch holds either bare values or (value, callback) pairs; runs
    of both kinds make batches switch kind and detach often. Every record
    must end up in exactly one sealed batch, with its callback (if any) at
    its own value's index.
    """
    import sys
    import threading

    from minilog.client.sync import Producer

    acc, clock, _ = make(batch_size=61 + 50 * (8 + RECORD_OVERHEAD_BYTES), linger_ms=0,
                         partitions=3)

    class FakeProducer:   # just what Producer.produce touches
        _acc = acc
        _completed = acc.completed
        _sticky = acc.sticky

        def _produce_slow(self, topic, value, key, partition, headers, ts, cb):
            acc.append(topic, value, key, partition, headers, ts, cb)

    fake = FakeProducer()
    produce = Producer.produce
    taken: list = []
    done = threading.Event()

    def sealer():
        while not done.is_set():
            acc.flushing = 1
            taken.extend(acc.drain(clock.now)[0])

    def producer(tid: int):
        for i in range(20000):
            v = b"%02d%06d" % (tid, i)
            if (i // 7) % 3:   # runs of records with and without a callback
                produce(fake, "t", v, on_delivery=_Cb(v))
            else:
                produce(fake, "t", v)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        s = threading.Thread(target=sealer)
        s.start()
        threads = [threading.Thread(target=producer, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        s.join()
    finally:
        sys.setswitchinterval(old)
    acc.flushing = 1
    taken.extend(acc.drain(clock.now)[0])
    got = [v for b in taken for v in b.values]
    assert all(type(v) is bytes for v in got)
    assert len(got) == 60000 and set(got) == {b"%02d%06d" % (t, i)
                                              for t in range(3) for i in range(20000)}
    assert acc.undelivered == 60000 and not acc.open
    with_cb = 0
    for b in taken:
        if b.callbacks is None:
            continue
        assert len(b.callbacks) == len(b.values)
        for v, cb in zip(b.values, b.callbacks):
            if cb is not None:
                assert cb.value == v
                with_cb += 1
    assert with_cb == sum(1 for t in range(3) for i in range(20000) if (i // 7) % 3)
    for tid in range(3):   # one thread's records on one partition stay in order
        for p in range(3):
            mine = [v for b in taken if b.partition == p for v in b.values if v[:2] == b"%02d" % tid]
            assert mine == sorted(mine)


def test_paired_fast_path_detach_fixup_and_reports_step_by_step():
    """A paired batch: detach splits pairs into columns; stray appends of either kind move with
    their callbacks; each report carries its own record's offset and value."""
    from minilog.client.sync import Producer

    acc, _clock, _ = make(partitions=2)
    out: list = []

    class FakeProducer:
        _acc = acc
        _completed = acc.completed
        _sticky = acc.sticky

        def _produce_slow(self, topic, value, key, partition, headers, ts, cb):
            acc.append(topic, value, key, partition, headers, ts, cb)

    fake = FakeProducer()
    for v in (b"aaaa", b"abab"):
        Producer.produce(fake, "t", v, on_delivery=_Cb(v, out))
    b = acc.sticky["t"]
    assert b.plain and b.paired and [p[0] for p in b.values] == [b"aaaa", b"abab"]
    values = b.values
    with acc.lock:
        acc.seal(b)
    assert b.values == [b"aaaa", b"abab"] and [cb.value for cb in b.callbacks] == b.values
    assert b.paired        # stays set: a racing caller compares its record's kind with it
    # two callers that passed the plain check before the seal: one pair, one bare value
    values.append((b"bbbb", _Cb(b"bbbb", out)))
    values.append(b"cccc")
    acc.fixup(b, values)
    assert b.values == [b"aaaa", b"abab"]
    (nb,) = acc.open.values()
    assert nb.values == [b"bbbb", b"cccc"] and not nb.plain
    assert nb.callbacks[0].value == b"bbbb" and nb.callbacks[1] is None
    acc.fixup(b, values)   # idempotent
    assert nb.values == [b"bbbb", b"cccc"]
    # the sender completes both batches: reports in record order, offsets by index
    for batch, base in ((b, 10), (nb, 20)):
        batch.count = len(batch.values)
        acc.completed.append((batch, base, -1, None))
    assert acc.serve_completed() == 4
    assert [(v, err, r.offset, r.value, r.topic, r.partition) for v, err, r in out] == [
        (b"aaaa", None, 10, b"aaaa", "t", b.partition),
        (b"abab", None, 11, b"abab", "t", b.partition),
        (b"bbbb", None, 20, b"bbbb", "t", nb.partition)]
    assert all(r.timestamp == 1_700_000_000_000 and r.key is None and r.headers is None
               and type(r).__name__ == "DeliveryReport" for _, _, r in out)
