"""Disk faults under the partition Log, injected through the FileSystem seam
(`SimulatedFileSystem`): failed and torn writes, failed fsyncs, crashes that keep only
fsynced bytes, a full disk. No root, no tmpfs, no sleeping; a fake clock and seeded Randoms."""

from __future__ import annotations

import errno
import random

import pytest

from minilog.storage import (
    Log,
    LogConfig,
    LogCorruptedError,
    SimulatedFileSystem,
    StorageError,
    segment_file_name,
)
from storage_writer import batch_for, records_of

DIR = "/data/t-0"
SMALL = {"segment.bytes": 600, "index.interval.bytes": 100}


class FakeClock:
    def __init__(self, now_ms: int = 1_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def open_log(fs, **kafka):
    return Log(DIR, LogConfig.from_kafka({**SMALL, **kafka}), clock=FakeClock(), fs=fs)


def all_records(log) -> list[tuple[int, bytes]]:
    out, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        records = [r for r in records_of(data) if r[0] >= offset]
        assert records, offset
        out.extend(records)
        offset = records[-1][0] + 1
    return out


def expected(offsets) -> list[tuple[int, bytes]]:
    """What batch_for(o) stores: record values b"v<offset>" (padding stripped by the check)."""
    return [(o, f"v{o}".encode()) for o in offsets]


def check_dense(log) -> None:
    """Offsets dense from the log start, each record the one the writer appended there."""
    got = [(o, v.rstrip(b".")) for o, v in all_records(log)]
    assert got == expected(range(log.log_start_offset, log.log_end_offset))


def fill(log, count, *, pad=20):
    for _ in range(count):
        log.append(batch_for(log.log_end_offset, pad=pad))


def test_log_round_trip_and_clean_reopen_on_the_simulated_fs():
    fs = SimulatedFileSystem(random.Random(1))
    log = open_log(fs)
    fill(log, 40)
    assert log.segment_count > 3
    end = log.log_end_offset
    log.close()
    log = open_log(fs)
    assert log.last_recovery.clean_shutdown and log.log_end_offset == end
    check_dense(log)
    log.close()


@pytest.mark.parametrize("seed", range(12))
def test_crash_keeps_every_flushed_record_and_offsets_stay_dense(seed):
    """Power loss at a random moment: whatever the torn tail, flushed records survive,
    offsets are dense, and the log takes appends again."""
    rng = random.Random(seed)
    fs = SimulatedFileSystem(random.Random(seed))
    log = open_log(fs)
    flushed_end = 0
    for _ in range(rng.randrange(5, 80)):
        log.append(batch_for(log.log_end_offset, pad=rng.randrange(0, 120)))
        if rng.random() < 0.15:
            log.flush()
            flushed_end = log.log_end_offset
        if rng.random() < 0.05:
            log.flush_rolled()
    fs.crash(torn=rng.random() < 0.7)
    log = open_log(fs)
    assert log.log_end_offset >= flushed_end
    check_dense(log)
    log.append(batch_for(log.log_end_offset))
    check_dense(log)
    log.close()


def test_torn_append_poisons_the_log_and_reopen_cuts_the_torn_bytes():
    fs = SimulatedFileSystem()
    log = open_log(fs)
    fill(log, 3)
    fs.fail("pwritev", errno.EIO, torn_bytes=5)
    with pytest.raises(LogCorruptedError, match="append failed half-way"):
        log.append(batch_for(log.log_end_offset))
    with pytest.raises(LogCorruptedError):
        log.read(0, 100)
    with pytest.raises(LogCorruptedError):
        log.append(batch_for(log.log_end_offset))
    log.close()                                   # no clean-shutdown marker for a poisoned log
    log = open_log(fs)
    assert log.last_recovery.truncated_bytes == 5 and not log.last_recovery.clean_shutdown
    check_dense(log)
    log.close()


def test_failed_fsync_poisons_the_log():
    """After a failed fsync nothing is known about the page cache (fsyncgate): poison."""
    fs = SimulatedFileSystem()
    log = open_log(fs)
    fill(log, 3)
    fs.fail("fsync", errno.EIO, path_contains=".log")
    with pytest.raises(LogCorruptedError, match="flush failed"):
        log.flush()
    with pytest.raises(LogCorruptedError):
        log.append(batch_for(log.log_end_offset))


@pytest.mark.parametrize("op,path", [("open", ".log"), ("open", ".timeindex"), ("fsync_dir", "")])
def test_failed_roll_poisons_and_a_crash_then_recovers(op, path):
    """A roll that fails half-way (new segment file, index write, directory fsync)."""
    fs = SimulatedFileSystem(random.Random(3))
    log = open_log(fs, **{"segment.bytes": 10_000})
    fill(log, 10)
    log.flush()
    end = log.log_end_offset
    fs.fail(op, errno.EIO, path_contains=path)
    with pytest.raises(LogCorruptedError):
        log.roll()
        log.flush()                               # the directory fsync happens on flush
    fs.crash()
    log = open_log(fs)
    assert log.log_end_offset == end
    check_dense(log)
    log.close()


def test_truncation_is_durable_before_it_returns():
    """truncate_to fsyncs the cut: a crash right after cannot bring the batches back."""
    fs = SimulatedFileSystem(random.Random(4))
    log = open_log(fs)
    fill(log, 30)
    log.flush()
    log.truncate_to(12)
    assert log.log_end_offset == 12
    fs.crash()
    log = open_log(fs)
    assert log.log_end_offset == 12
    check_dense(log)


def test_failed_checkpoint_write_during_retention_poisons_and_leaves_no_tmp_file():
    fs = SimulatedFileSystem()
    log = open_log(fs)
    fill(log, 30)
    fs.fail("replace", errno.EIO, path_contains="log.checkpoint")
    with pytest.raises(LogCorruptedError, match="delete_records_before"):
        log.delete_records_before(20)
    assert "log.checkpoint.tmp" not in [name for name, _ in fs.list_dir(DIR)]


@pytest.mark.parametrize("seed", range(6))
def test_random_write_and_fsync_faults_then_crash_and_reopen(seed):
    """A seeded run with random EIO on writes and fsyncs: every failure poisons the log,
    reopening after a crash always gives a dense log holding every flushed record."""
    rng = random.Random(seed)
    fs = SimulatedFileSystem(random.Random(seed))
    flushed_end = 0
    log = open_log(fs)
    for _ in range(200):
        fs.random_faults(0.02, ops={"pwrite", "pwritev", "fsync", "open", "replace"})
        try:
            log.append(batch_for(log.log_end_offset, pad=rng.randrange(0, 80)))
            if rng.random() < 0.2:
                log.flush()
                flushed_end = log.log_end_offset
        except LogCorruptedError:
            fs.clear_faults()
            log.close()
            fs.crash(torn=True)
            log = open_log(fs)
            assert log.log_end_offset >= flushed_end
            check_dense(log)
            flushed_end = log.recovery_point
    fs.clear_faults()
    check_dense(log)
    assert fs.faults_injected > 0


def test_open_on_a_failing_disk_raises_storage_error():
    fs = SimulatedFileSystem()
    log = open_log(fs)
    fill(log, 5)
    log.close()
    fs.fail("list_dir", errno.EIO)
    with pytest.raises(StorageError, match="cannot open log"):
        open_log(fs)
    assert fs.exists(f"{DIR}/{segment_file_name(0, '.log')}")



# -- a damaged closed segment (issue 8, item 9) -----------------------------------------------


def _batch_positions(fs, base_offset):
    """(position, base offset, size) of each batch in a segment file, from its bytes."""
    data = fs.read_bytes(f"{DIR}/{segment_file_name(base_offset, '.log')}")
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos + 8:pos + 12], "big") + 12
        out.append((pos, int.from_bytes(data[pos:pos + 8], "big"), size))
        pos += size
    return out


def _batch_size(batches, position):
    return next(size for pos, _, size in batches if pos == position)


@pytest.mark.parametrize("bogus_length", [0x7FFF_FFF0, 2_000])
def test_overwritten_batch_length_in_a_closed_segment_is_a_typed_error_logged_once(bogus_length, caplog):
    """A batch_length overwritten after a clean close (so no recovery scan): a read at that
    offset raises CorruptLogError (CORRUPT_MESSAGE for the broker) instead of handing out a
    batch that claims 2 GB; other offsets, later segments and appends keep working."""
    from minilog.storage import CorruptLogError, CorruptRecordError

    fs = SimulatedFileSystem()
    log = open_log(fs, **{"segment.bytes": 3000, "index.interval.bytes": 300})
    fill(log, 60)
    assert log.segment_count >= 3
    log.close()
    batches = _batch_positions(fs, 0)
    position, victim, _ = batches[len(batches) // 2]
    path = f"{DIR}/{segment_file_name(0, '.log')}"
    data = bytearray(fs.read_bytes(path))
    data[position + 8:position + 12] = bogus_length.to_bytes(4, "big")
    fs.write_bytes(path, bytes(data))
    log = open_log(fs, **{"segment.bytes": 3000, "index.interval.bytes": 300})
    assert log.last_recovery.clean_shutdown
    for _attempt in range(2):
        with pytest.raises(CorruptLogError) as e:
            log.read(victim, 1 << 20)
        assert isinstance(e.value, CorruptRecordError) and e.value.offset == victim
        assert "corrupt batch at position" in str(e.value) and path in str(e.value)
    assert sum("corrupt batch" in r.getMessage() for r in caplog.records) == 1   # logged once
    for _, base, _ in batches[batches.index((position, victim, _batch_size(batches, position))) + 1:]:
        try:
            first = records_of(log.read(base, 1))[0][0]
        except CorruptLogError:
            continue                              # its index lookup scans through the damage
        assert first == base                      # never a later batch: offsets are not skipped
    before = records_of(log.read(0, 1 << 20))
    assert before and before[-1][0] < victim                 # reads stop before the damage
    later = log.segments()[1].base_offset
    assert records_of(log.read(later, 100))[0][0] == later   # other segments are fine
    log.append(batch_for(log.log_end_offset))                 # and the log takes appends
    log.close()



# -- a full disk (issue 8, item 10) -------------------------------------------------------------


def test_enospc_says_no_space_left_keeps_reads_and_recovers_writes_when_space_returns():
    from minilog.storage import DiskFullError

    fs = SimulatedFileSystem(random.Random(5))
    log = open_log(fs, **{"segment.bytes": 100_000})
    fill(log, 20)
    log.flush()
    stored = all_records(log)
    fs.capacity_bytes = fs.used_bytes + 100                    # room for part of one batch
    with pytest.raises(DiskFullError) as e:
        log.append(batch_for(log.log_end_offset, pad=200))
    message = str(e.value)
    assert "no space left on device" in message and segment_file_name(0, ".log") in message
    assert "short write" not in message
    assert all_records(log) == stored                          # reads of what is stored work
    with pytest.raises(DiskFullError):                         # still full: still refused
        log.append(batch_for(log.log_end_offset, pad=200))
    assert all_records(log) == stored
    fs.capacity_bytes = None                                   # the operator freed space
    info = log.append(batch_for(log.log_end_offset, pad=200))  # no reopen, no restart
    assert info.base_offset == stored[-1][0] + 1
    check_dense(log)
    log.close()
    log = open_log(fs)
    assert log.last_recovery.clean_shutdown
    check_dense(log)


@pytest.mark.parametrize("op,path", [("pwrite", ".index"), ("pwrite", "checkpoint"),
                                     ("pwrite", ".snapshot")])
def test_enospc_in_flush_roll_or_checkpoint_recovers_in_place(op, path):
    from minilog.storage import DiskFullError

    fs = SimulatedFileSystem(random.Random(6))
    log = open_log(fs, **{"segment.bytes": 600})
    for _ in range(3):
        fill(log, 5)
        fs.fail(op, errno.ENOSPC, path_contains=path)
        try:
            fill(log, 10)
            log.flush()
        except DiskFullError as e:
            assert "no space left on device" in str(e)
        else:
            pytest.fail("the injected ENOSPC did not surface")
        check_dense(log)                                       # reads keep working
    fill(log, 5)
    log.flush()
    check_dense(log)
    fs.crash()
    log = open_log(fs)
    check_dense(log)


def test_flush_never_reloads_a_disk_full_log_only_a_write_or_the_explicit_call_does():
    """flush/flush_rolled may run in the broker's worker thread: they must not reload the log
    under a concurrent append, so they keep raising DiskFullError until a write (on the owner
    thread) or recover_after_disk_full() reloads it."""
    from minilog.storage import DiskFullError

    fs = SimulatedFileSystem(random.Random(8))
    log = open_log(fs, **{"segment.bytes": 100_000})
    fill(log, 10)
    stored = all_records(log)
    fs.capacity_bytes = fs.used_bytes + 50
    with pytest.raises(DiskFullError):
        log.append(batch_for(log.log_end_offset, pad=200))
    fs.capacity_bytes = None                                     # space is back
    for flush in (log.flush, log.flush_rolled, log.maybe_flush):
        with pytest.raises(DiskFullError):
            flush()
    assert all_records(log) == stored
    log.recover_after_disk_full()                                # the broker may call it
    log.recover_after_disk_full()                                # a no-op on a healthy log
    log.flush()
    fill(log, 3)
    check_dense(log)
