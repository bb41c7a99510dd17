"""The partition Log: append/read round trips, lookups, truncation, rolling,
retention, flush, epochs and error handling, on real files with a fake clock."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilog.protocol import build_batch, iter_batches, parse_header
from minilog.storage import (
    CorruptRecord,
    InvalidOffset,
    Log,
    LogConfig,
    LogCorrupted,
    OffsetOutOfRange,
    RecordTooLarge,
    StaleLeaderEpoch,
    StorageError,
    parse_partition_dir_name,
    partition_dir_name,
    segment_file_name,
)
from storage_writer import batch_for, records_of


class FakeClock:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def open_log(path, clock=None, **kafka):
    return Log.open(path, LogConfig.from_kafka(kafka), clock=clock or FakeClock())


def headers(data: bytes):
    return [h for h, _ in iter_batches(data)]


def all_records(log) -> list[tuple[int, bytes]]:
    out, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        hs = headers(data)
        assert hs, offset
        out.extend(r for r in records_of(data) if r[0] >= offset)
        offset = hs[-1].next_offset
    return out


def fill(log, count, *, start_ts=1_000, pad=0):
    infos = []
    for i in range(count):
        infos.append(log.append(batch_for(log.log_end_offset, timestamp=start_ts + i, pad=pad)))
    return infos


# --------------------------------------------------------------------- names

def test_partition_and_segment_names():
    """Directory <topic>-<partition> round-trips (dashes in topics too); segment names are 20 digits."""
    assert partition_dir_name("orders", 3) == "orders-3"
    assert parse_partition_dir_name("my-topic-12") == ("my-topic", 12)
    with pytest.raises(ValueError):
        parse_partition_dir_name("nodash")
    assert segment_file_name(4200, ".log") == "00000000000000004200.log"


# --------------------------------------------------------------- round trips

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.tuples(st.integers(1, 5), st.integers(0, 300)), min_size=1, max_size=40),
    segment_bytes=st.integers(200, 3000),
    interval=st.integers(0, 600),
    reads=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 3000), st.integers(0, 10**6)),
                   min_size=1, max_size=15),
)
def test_append_read_round_trip(tmp_path_factory, sizes, segment_bytes, interval, reads):
    """read(o, n) returns whole stored batches, the first holding o, dense, within budget and max_offset."""
    path = tmp_path_factory.mktemp("log")
    log = open_log(path, **{"segment.bytes": segment_bytes, "index.interval.bytes": interval})
    model = []                                   # (base, next, stored bytes)
    for count, pad in sizes:
        batch = batch_for(log.log_end_offset, count, pad=pad)
        info = log.append(batch, leader_epoch=7)
        stored = bytearray(batch)
        stored[0:8] = info.base_offset.to_bytes(8, "big")
        stored[12:16] = (7).to_bytes(4, "big")
        model.append((info.base_offset, info.last_offset + 1, bytes(stored)))
    end = log.log_end_offset
    assert end == sum(c for c, _ in sizes)
    for reopen in (False, True):
        if reopen:
            log.close()
            log = open_log(path, **{"segment.bytes": segment_bytes, "index.interval.bytes": interval})
        for raw_offset, budget, raw_max in reads:
            offset = raw_offset % (end + 1)
            max_offset = None if raw_max % 3 == 0 else raw_max % (end + 2)
            data = log.read(offset, budget, max_offset=max_offset)
            limit = end if max_offset is None else min(end, max_offset)
            first = next((i for i, m in enumerate(model) if m[1] > offset), None)
            if offset >= limit or first is None or model[first][0] >= limit:
                assert data == b""
                continue
            hs = headers(data)
            assert hs and hs[0].base_offset <= offset < hs[0].next_offset
            assert len(hs) == 1 or len(data) <= budget
            assert all(h.base_offset < limit for h in hs)
            assert all(a.next_offset == b.base_offset for a, b in zip(hs, hs[1:]))
            # same bytes as stored, from one segment
            k = len(hs)
            assert data == b"".join(m[2] for m in model[first:first + k])
            # maximal: the next batch of the same segment would break the budget or the bound
            bases = [seg.base_offset for seg in log.segments()]
            seg_of = lambda o: max(b for b in bases if b <= o)  # noqa: B023
            if first + k < len(model):
                nxt = model[first + k]
                if seg_of(nxt[0]) == seg_of(model[first][0]) and nxt[0] < limit:
                    assert len(data) + len(nxt[2]) > budget
    log.close()


def test_read_errors_and_log_end(tmp_path):
    """Out-of-range offsets raise; the log end reads as b""."""
    log = open_log(tmp_path)
    assert log.read(0, 100) == b""
    fill(log, 3)
    with pytest.raises(OffsetOutOfRange):
        log.read(log.log_end_offset + 1, 100)
    assert log.read(log.log_end_offset, 100) == b""
    log.delete_records_before(2)
    with pytest.raises(OffsetOutOfRange):
        log.read(1, 100)
    assert headers(log.read(2, 1))[0].base_offset <= 2


def test_read_returns_one_whole_batch_over_budget(tmp_path):
    """A batch bigger than max_bytes is still returned whole."""
    log = open_log(tmp_path)
    log.append(batch_for(0, 2, pad=500))
    data = log.read(1, 10)
    assert len(headers(data)) == 1 and len(data) > 10


def test_reads_use_index_not_scan_from_segment_start(tmp_path, monkeypatch):
    """A read near the end of a big segment preads a bounded number of bytes."""
    log = open_log(tmp_path, **{"index.interval.bytes": 1024})
    fill(log, 2000, pad=40)
    log.close()
    log = open_log(tmp_path, **{"index.interval.bytes": 1024})
    read_bytes = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, pos: read_bytes.append(n) or real(fd, n, pos))
    data = log.read(log.log_end_offset - 5, 100)
    assert headers(data)
    assert sum(read_bytes) < 64 * 1024, read_bytes


# ------------------------------------------------------------------- append

def test_append_stamps_offsets_and_epoch(tmp_path):
    """Leader path: offsets from the log end, epoch stamped; caller's buffer untouched."""
    log = open_log(tmp_path)
    batch = bytearray(batch_for(0, 3))
    before = bytes(batch)
    info = log.append(batch, leader_epoch=5)
    assert (info.base_offset, info.last_offset) == (0, 2)
    info = log.append(batch, leader_epoch=5)
    assert (info.base_offset, info.last_offset) == (3, 5)
    assert bytes(batch) == before
    h = headers(log.read(3, 1000))[0]
    assert (h.base_offset, h.partition_leader_epoch) == (3, 5)
    assert log.end_offset_for_epoch(5) == (5, 6)


def test_rejected_appends_leave_nothing_on_disk(tmp_path):
    """Oversized, corrupt, non-contiguous and stale-epoch batches change nothing."""
    log = open_log(tmp_path, **{"max.message.bytes": 500})
    log.append(batch_for(0, 1), leader_epoch=3)
    size = log.size_bytes
    good = batch_for(1, 1)
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    with pytest.raises(RecordTooLarge):
        log.append(batch_for(1, 1, pad=600))
    with pytest.raises(CorruptRecord):
        log.append(bytes(bad_crc))
    with pytest.raises(CorruptRecord):
        log.append(good + good)
    with pytest.raises(CorruptRecord):
        log.append(good[:-3])
    with pytest.raises(CorruptRecord):
        log.append(b"\x00" * 100)
    with pytest.raises(StaleLeaderEpoch):
        log.append(good, leader_epoch=2)
    with pytest.raises(InvalidOffset):
        log.append(build_batch([b"x"], base_offset=7), assign_offsets=False)
    assert log.size_bytes == size and log.log_end_offset == 1
    assert os.path.getsize(tmp_path / segment_file_name(0, ".log")) == size
    log.append(good, leader_epoch=3)             # still usable


def test_follower_append_keeps_leader_offsets_and_epochs(tmp_path):
    """assign_offsets=False keeps base offset and epoch; the epoch cache learns from them."""
    leader = open_log(tmp_path / "l")
    follower = open_log(tmp_path / "f")
    for epoch in (0, 0, 2, 2, 5):
        leader.append(batch_for(leader.log_end_offset, 2), leader_epoch=epoch)
    offset = 0
    while offset < leader.log_end_offset:
        for h, view in iter_batches(leader.read(offset, 10)):
            follower.append(bytes(view), assign_offsets=False)
            offset = h.next_offset
    assert follower.read(0, 1 << 20) == leader.read(0, 1 << 20)
    assert follower.epoch_cache.entries == leader.epoch_cache.entries
    assert [tuple(e) for e in leader.epoch_cache.entries] == [(0, 0), (2, 4), (5, 8)]
    assert follower.end_offset_for_epoch(1) == (0, 4)
    assert follower.end_offset_for_epoch(5) == (5, 10)
    assert follower.end_offset_for_epoch(9) == (5, 10)


def test_follower_keeps_leader_timestamps_under_log_append_time(tmp_path):
    """Followers never re-stamp: the leader's bytes are stored unchanged."""
    clock = FakeClock(999)
    log = open_log(tmp_path, clock, **{"message.timestamp.type": "LogAppendTime"})
    batch = build_batch([b"x"], timestamps=5, base_offset=0, partition_leader_epoch=2)
    log.append(batch, assign_offsets=False)
    assert log.read(0, 100) == batch


def test_maybe_flush_applies_flush_ms(tmp_path):
    """maybe_flush() flushes only when flush.ms passed and something is unflushed."""
    clock = FakeClock()
    log = open_log(tmp_path, clock, **{"flush.ms": 500})
    assert log.maybe_flush() is False
    log.append(batch_for(0))
    assert log.maybe_flush() is False
    clock.now_ms += 500
    assert log.maybe_flush() is True and log.recovery_point == log.log_end_offset


def test_log_append_time(tmp_path):
    """message.timestamp.type=LogAppendTime stamps the broker clock, CRC stays valid."""
    clock = FakeClock(123_456)
    log = open_log(tmp_path, clock, **{"message.timestamp.type": "LogAppendTime"})
    info = log.append(batch_for(0, 2, timestamp=5))
    assert info.log_append_time == info.max_timestamp == 123_456
    data = log.read(0, 1000)
    assert [r[0] for r in records_of(data)] == [0, 1]    # CRC checked by the decoder
    assert parse_header(data).max_timestamp == 123_456
    assert log.offset_for_timestamp(123_000) == (0, 123_456)


# ------------------------------------------------------------- time lookup

def test_offset_for_timestamp(tmp_path):
    """First offset with timestamp >= t, across segments, via the time index."""
    log = open_log(tmp_path, **{"segment.bytes": 800, "index.interval.bytes": 100})
    expected = []
    for i in range(60):
        base = log.log_end_offset
        ts = [10_000 + 10 * i, 10_000 + 10 * i + 5]
        log.append(build_batch([b"a", b"b"], timestamps=ts))
        expected += [(base, ts[0]), (base + 1, ts[1])]
    assert log.segment_count > 3
    for reopen in (False, True):
        if reopen:
            log.close()
            log = open_log(tmp_path, **{"segment.bytes": 800, "index.interval.bytes": 100})
        for target in range(9_990, 10_620, 3):
            want = next(((o, t) for o, t in expected if t >= target), None)
            assert log.offset_for_timestamp(target) == want, target


def test_offset_for_timestamp_non_monotonic(tmp_path):
    """CreateTime stamps may go backwards: the answer is the first batch reaching t."""
    log = open_log(tmp_path, **{"index.interval.bytes": 0})
    stamps = [50, 10, 70, 20, 90, 30]
    for t in stamps:
        log.append(build_batch([b"x"], timestamps=t))
    assert log.offset_for_timestamp(60) == (2, 70)
    assert log.offset_for_timestamp(15) == (0, 50)
    assert log.offset_for_timestamp(80) == (4, 90)
    assert log.offset_for_timestamp(91) is None


# ---------------------------------------------------------------- truncate

@pytest.mark.parametrize("cut", [0, 1, 7, 19, 20, 33, 59])
def test_truncate_to(tmp_path, cut):
    """truncate_to drops everything from the batch holding `cut`; appends continue there; reopen agrees."""
    log = open_log(tmp_path, **{"segment.bytes": 600, "index.interval.bytes": 64})
    for i in range(30):
        log.append(batch_for(log.log_end_offset, 2), leader_epoch=i // 10)
    log.flush()
    log.truncate_to(cut)
    end = cut - cut % 2
    assert log.log_end_offset == end
    assert [o for o, _ in all_records(log)] == list(range(end))
    assert all(e.start_offset < max(end, 1) for e in log.epoch_cache.entries)
    assert log.recovery_point <= end
    info = log.append(batch_for(end, 2), leader_epoch=5)
    assert info.base_offset == end
    log.close()
    log = open_log(tmp_path, **{"segment.bytes": 600, "index.interval.bytes": 64})
    assert [o for o, _ in all_records(log)] == list(range(end + 2))
    assert all(v == f"v{o}".encode() for o, v in all_records(log))


def test_truncate_then_crash_does_not_resurrect(tmp_path):
    """After truncate_to and an unclean shutdown, cut batches do not come back."""
    log = open_log(tmp_path)
    fill(log, 10)
    log.flush()
    log.truncate_to(4)
    del log                                         # no close: unclean
    log = open_log(tmp_path)
    assert log.log_end_offset <= 4 + 2
    assert all(o < log.log_end_offset for o, _ in all_records(log))


def test_truncate_below_log_start_restarts(tmp_path):
    """Below the log start, truncate_to empties the log and restarts it there."""
    log = open_log(tmp_path, **{"segment.bytes": 300})
    fill(log, 20)
    log.delete_records_before(10)
    log.truncate_to(5)
    assert (log.log_start_offset, log.log_end_offset, log.segment_count) == (5, 5, 1)
    assert log.append(batch_for(5)).base_offset == 5


# ----------------------------------------------------------------- deletion

def test_delete_records_before(tmp_path):
    """The log start moves, whole segments below it go, offsets above are unchanged; it persists."""
    cfg = {"segment.bytes": 400}
    log = open_log(tmp_path, **cfg)
    fill(log, 40)
    segments = log.segment_count
    before = dict(all_records(log))
    deleted = log.delete_records_before(25)
    assert log.log_start_offset == 25
    assert deleted and all(d.segment.next_offset <= 25 for d in deleted)
    assert log.segment_count == segments - len(deleted)
    assert all(before[o] == v for o, v in all_records(log))
    with pytest.raises(OffsetOutOfRange):
        log.delete_records_before(log.log_end_offset + 1)
    log.close()
    log = open_log(tmp_path, **cfg)
    assert log.log_start_offset == 25
    end = log.log_end_offset
    log.delete_records_before(end)                  # everything: the active segment rolls and goes
    assert log.log_start_offset == end and log.segment_count == 1 and log.size_bytes == 0
    assert log.append(batch_for(end)).base_offset == end


# ------------------------------------------------------------------ rolling

def test_roll_on_segment_bytes(tmp_path):
    """Segments never exceed segment.bytes (except a single oversized batch)."""
    log = open_log(tmp_path, **{"segment.bytes": 1000})
    fill(log, 50, pad=50)
    log.append(batch_for(log.log_end_offset, 1, pad=2000))
    infos = log.segments()
    assert len(infos) > 3
    assert all(s.size_bytes <= 1000 for s in infos[:-1])
    assert infos[-1].size_bytes > 1000
    assert all(a.next_offset == b.base_offset for a, b in zip(infos, infos[1:]))
    names = sorted(os.listdir(tmp_path))
    assert segment_file_name(infos[1].base_offset, ".timeindex") in names


def test_roll_on_segment_ms(tmp_path):
    """A segment rolls when its first batch is older than segment.ms."""
    clock = FakeClock(1_000_000)
    log = open_log(tmp_path, clock, **{"segment.ms": 60_000})
    log.append(batch_for(0, 1, timestamp=clock.now_ms))
    clock.now_ms += 59_000
    log.append(batch_for(1, 1, timestamp=clock.now_ms))
    assert log.segment_count == 1
    clock.now_ms += 2_000
    log.append(batch_for(2, 1, timestamp=clock.now_ms))
    assert log.segment_count == 2
    assert log.segments()[1].base_offset == 2


def test_old_producer_clock_does_not_roll_every_batch(tmp_path):
    """segment.ms compares batch timestamps with the first batch's (Kafka's timeWaitedForRoll)."""
    clock = FakeClock(10**12)
    log = open_log(tmp_path, clock, **{"segment.ms": 60_000})
    for i in range(10):
        log.append(batch_for(log.log_end_offset, timestamp=1_000 + i))
    assert log.segment_count == 1
    log.append(batch_for(log.log_end_offset, timestamp=1_000 + 60_001))
    assert log.segment_count == 2


def test_unclean_open_with_bad_checkpoint_removes_marker(tmp_path):
    """A clean marker next to a malformed checkpoint: full recovery, and the marker is gone."""
    log = open_log(tmp_path)
    fill(log, 5)
    log.close()
    (tmp_path / "log.checkpoint").write_text("garbage")
    log = open_log(tmp_path)
    assert not log.last_recovery.clean_shutdown and log.last_recovery.segments_scanned == 1
    assert not (tmp_path / ".clean-shutdown").exists()
    assert [o for o, _ in all_records(log)] == list(range(log.log_end_offset))


def test_roll_on_full_index(tmp_path):
    """A full offset index rolls the segment."""
    log = open_log(tmp_path, **{"segment.index.bytes": 24, "index.interval.bytes": 0})
    fill(log, 20)
    assert log.segment_count >= 5
    assert all(len(open(tmp_path / segment_file_name(s.base_offset, ".index"), "rb").read()) <= 24
               for s in log.segments()[:-1])


def test_explicit_roll_and_empty_roll(tmp_path):
    """roll() starts a new segment at the log end; rolling an empty segment is a no-op."""
    log = open_log(tmp_path)
    log.roll()
    assert log.segment_count == 1
    fill(log, 3)
    log.roll()
    log.roll()
    assert log.segment_count == 2 and log.segments()[1].base_offset == log.log_end_offset


# ---------------------------------------------------------------- retention

def test_retention_ms_deletes_old_segments_and_rolls_active(tmp_path):
    """Segments older than retention.ms go; an expired active segment is rolled and goes too."""
    clock = FakeClock(100_000)
    cfg = {"segment.bytes": 500, "retention.ms": 10_000, "file.delete.delay.ms": 0}
    log = open_log(tmp_path, clock, **cfg)
    for i in range(30):
        log.append(batch_for(log.log_end_offset, timestamp=100_000 + i * 1000))
    clock.now_ms = 100_000 + 17_000
    before = dict(all_records(log))
    deleted = log.apply_retention()
    assert deleted and all(d.reason == "retention.ms" for d in deleted)
    assert all(clock.now_ms - d.segment.max_timestamp_ms > 10_000 for d in deleted)
    assert log.log_start_offset == log.segments()[0].base_offset
    assert all(before[o] == v for o, v in all_records(log))
    clock.now_ms = 10**9                              # everything expired
    log.apply_retention()
    assert log.segment_count == 1 and log.size_bytes == 0
    assert log.log_start_offset == log.log_end_offset
    assert log.append(batch_for(log.log_end_offset)).base_offset == log.log_start_offset
    log.close()
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".log")]
    assert len(leftovers) == 1


def test_retention_forever_and_high_watermark(tmp_path):
    """retention.ms=-1 keeps everything; nothing at or above the high watermark is deleted."""
    clock = FakeClock(10**12)
    log = open_log(tmp_path, clock, **{"segment.bytes": 400, "retention.ms": -1})
    fill(log, 30)
    assert log.apply_retention() == []
    log2 = open_log(tmp_path / "b", clock, **{"segment.bytes": 400, "retention.ms": 1})
    fill(log2, 30)
    hw = log2.segments()[2].base_offset
    deleted = log2.apply_retention(high_watermark=hw)
    assert [d.segment.next_offset for d in deleted][-1] <= hw
    assert log2.log_start_offset == hw


def test_retention_bytes(tmp_path):
    """retention.bytes deletes oldest segments while the rest stays >= the limit."""
    log = open_log(tmp_path, **{"segment.bytes": 500, "retention.bytes": 1200, "retention.ms": -1})
    fill(log, 40)
    total = log.size_bytes
    deleted = log.apply_retention()
    assert deleted and all(d.reason == "retention.bytes" for d in deleted)
    assert log.size_bytes >= 1200 - 0 or log.segment_count == 1
    assert log.size_bytes + sum(d.segment.size_bytes for d in deleted) == total
    assert log.size_bytes - log.segments()[0].size_bytes < 1200


def test_file_delete_delay(tmp_path):
    """Deleted segments linger as *.deleted until file.delete.delay.ms passed."""
    clock = FakeClock(100_000)
    log = open_log(tmp_path, clock, **{"segment.bytes": 300, "retention.ms": 1, "file.delete.delay.ms": 5_000})
    fill(log, 10, start_ts=0)
    log.apply_retention()
    assert any(n.endswith(".deleted") for n in os.listdir(tmp_path))
    clock.now_ms += 6_000
    log.apply_retention()
    assert not any(n.endswith(".deleted") for n in os.listdir(tmp_path))


# ------------------------------------------------------------ flush, close

def test_flush_advances_recovery_point_checkpoint(tmp_path):
    """flush() moves the recovery point to the log end and persists it."""
    log = open_log(tmp_path)
    fill(log, 5)
    assert log.recovery_point == 0
    log.flush()
    assert log.recovery_point == log.log_end_offset
    text = (tmp_path / "log.checkpoint").read_text().split("\n")
    assert text[0] == "0" and text[1] == f"recovery-point {log.log_end_offset}"


def test_flush_messages_policy(tmp_path):
    """flush.messages=N fsyncs after N records."""
    log = open_log(tmp_path, **{"flush.messages": 4})
    log.append(batch_for(0, 3))
    assert log.recovery_point == 0
    log.append(batch_for(3, 3))
    assert log.recovery_point == 6


def test_flush_ms_policy(tmp_path):
    """flush.ms=T fsyncs on the first append T ms after the last flush."""
    clock = FakeClock()
    log = open_log(tmp_path, clock, **{"flush.ms": 1000})
    log.append(batch_for(0))
    assert log.recovery_point == 0
    clock.now_ms += 1000
    log.append(batch_for(1))
    assert log.recovery_point == log.log_end_offset


def test_close_writes_marker_and_reopen_is_clean(tmp_path):
    """close() leaves a clean-shutdown marker; open consumes it and reads only index tails."""
    log = open_log(tmp_path, **{"segment.bytes": 500})
    fill(log, 40)
    records = all_records(log)
    log.close()
    assert (tmp_path / ".clean-shutdown").exists()
    with pytest.raises(StorageError):
        log.append(batch_for(0))
    log = open_log(tmp_path, **{"segment.bytes": 500})
    assert not (tmp_path / ".clean-shutdown").exists()
    assert log.last_recovery.clean_shutdown and log.last_recovery.bytes_scanned == 0
    closed = log._segments.segments[:-1]
    assert all(not s.index.loaded for s in closed)   # closed segments untouched
    assert all_records(log) == records
    assert log.append(batch_for(log.log_end_offset)).base_offset == records[-1][0] + 1


def test_statistics_is_frozen(tmp_path):
    """statistics() returns a frozen snapshot."""
    log = open_log(tmp_path)
    fill(log, 3)
    stats = log.statistics()
    assert stats.log_end_offset == log.log_end_offset and stats.appends_total == 3
    with pytest.raises(Exception):
        stats.log_end_offset = 0


def test_failed_write_poisons_log(tmp_path, monkeypatch):
    """A failed write poisons the Log until reopened; reopen recovers what was whole."""
    log = open_log(tmp_path)
    fill(log, 3)

    def broken(fd, parts, pos):
        os.pwrite(fd, bytes(parts[0])[:5], pos)      # a torn write, then the error
        raise OSError(5, "Input/output error")     # (ENOSPC recovers in place: test_storage_faults)

    monkeypatch.setattr(os, "pwritev", broken)
    with pytest.raises(LogCorrupted):
        log.append(batch_for(3))
    monkeypatch.undo()
    with pytest.raises(LogCorrupted):
        log.read(0, 100)
    with pytest.raises(LogCorrupted):
        log.append(batch_for(3))
    log.close()                                       # no marker for a poisoned log
    assert not (tmp_path / ".clean-shutdown").exists()
    log = open_log(tmp_path)
    assert log.last_recovery.truncated_bytes == 5
    assert [o for o, _ in all_records(log)] == list(range(log.log_end_offset))
    assert log.log_end_offset == 4 and log.append(batch_for(4)).base_offset == 4


def test_epoch_cache_persists_and_follows_truncation(tmp_path):
    """leader-epoch-checkpoint survives reopen; truncate_to and log start moves edit it."""
    log = open_log(tmp_path, **{"segment.bytes": 300})
    for epoch in (1, 1, 3, 3, 4, 4):
        log.append(batch_for(log.log_end_offset, 2), leader_epoch=epoch)
    log.close()
    log = open_log(tmp_path, **{"segment.bytes": 300})
    assert [tuple(e) for e in log.epoch_cache.entries] == [(1, 0), (3, 4), (4, 8)]
    log.truncate_to(8)
    assert [tuple(e) for e in log.epoch_cache.entries] == [(1, 0), (3, 4)]
    assert log.end_offset_for_epoch(3) == (3, 8)
    log.delete_records_before(6)
    assert [tuple(e) for e in log.epoch_cache.entries] == [(3, 6)]
    assert log.end_offset_for_epoch(1) == (-1, -1)


def test_flush_in_worker_thread_while_appending(tmp_path):
    """flush() in another thread concurrently with appends/rolls (the broker's pattern) stays consistent."""
    import threading

    log = open_log(tmp_path, **{"segment.bytes": 2000, "index.interval.bytes": 50})
    stop = threading.Event()
    errors = []
    points = []

    def flusher():
        try:
            while not stop.is_set():
                log.flush()
                points.append(log.recovery_point)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for _ in range(1500):
            log.append(batch_for(log.log_end_offset, pad=20))
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert points == sorted(points) and points[-1] <= log.log_end_offset
    records = all_records(log)
    log.close()
    log = open_log(tmp_path, **{"segment.bytes": 2000, "index.interval.bytes": 50})
    for seg in log._segments.segments[:-1]:
        assert seg.check_indexes() is None
    assert all_records(log) == records


def test_flush_rolled_moves_recovery_point_to_active_base(tmp_path):
    """flush_rolled() fsyncs closed segments only; a crash then re-checks just the active one."""
    log = open_log(tmp_path, **{"segment.bytes": 500})
    fill(log, 40)
    assert log.rolled_segments_unflushed > 0
    assert log.flush_rolled() is True
    assert log.rolled_segments_unflushed == 0 and log.flush_rolled() is False
    active_base = log.segments()[-1].base_offset
    assert log.recovery_point == active_base
    records = all_records(log)
    for segment in log._segments:
        segment.close_fd()                               # crash
    log = open_log(tmp_path, **{"segment.bytes": 500})
    assert log.last_recovery.rebuilt_indexes == (active_base,)
    assert all_records(log) == records
