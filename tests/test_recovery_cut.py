"""Recovery after unclean shutdowns: torn tails at every byte, flipped bytes,
corrupt indexes and garbage length fields, on real files."""

from __future__ import annotations

import os
import random
import shutil

import pytest

from minilog.protocol import iter_batches
from minilog.storage import BATCH_CASES, SEGMENT_CASES, Log, LogConfig, segment_file_name
from storage_writer import batch_for, records_of

CONFIG = {"segment.bytes": 1200, "index.interval.bytes": 100}


def open_log(path, **kafka):
    return Log.open(path, LogConfig.from_kafka({**CONFIG, **kafka}), clock=lambda: 1_000_000)


def crash(log) -> None:
    """Simulate kill -9: drop the object without close (no marker, no index flush)."""
    for segment in log._segments:
        segment.close_fd()


def build(path, batches=30, *, flush_at=None):
    """A log with `batches` batches; returns [(base, next, position, size, segment base)]."""
    log = open_log(path)
    layout = []
    for i in range(batches):
        info = log.append(batch_for(log.log_end_offset, pad=i * 7 % 40))
        size = log.segments()[-1].size_bytes - info.position
        layout.append((info.base_offset, info.last_offset + 1, info.position, size, info.segment_base_offset))
        if flush_at is not None and i == flush_at:
            log.flush()
    crash(log)
    return layout


def check_log(path, expected_end):
    """Every surviving record is the one the writer put there; offsets dense; next append continues."""
    log = open_log(path)
    assert log.log_end_offset == expected_end
    offset, seen = log.log_start_offset, []
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        batches = [h for h, _ in iter_batches(data)]
        seen.extend(records_of(data))
        offset = batches[-1].next_offset
    assert [o for o, _ in seen] == list(range(expected_end))
    assert all(v.startswith(f"v{o}".encode()) for o, v in seen)
    assert log.append(batch_for(expected_end)).base_offset == expected_end
    log.close()
    return log


def test_tables_cover_every_label():
    """The decision tables are total: every label has an action."""
    assert set(BATCH_CASES) >= {"whole-batch", "torn-length", "garbage-length", "torn-tail",
                                "corrupt-batch", "offset-mismatch"}
    assert set(SEGMENT_CASES) >= {"clean-shutdown", "below-recovery-point", "from-recovery-point",
                                  "after-cut"}


@pytest.mark.parametrize("flush_at", [None, 20])
def test_cut_active_segment_at_every_byte(tmp_path, flush_at):
    """(a) Cut inside the last two batches at every byte: exactly the whole batches before it survive."""
    pristine = tmp_path / "pristine"
    layout = build(pristine, flush_at=flush_at)
    active_base = layout[-1][4]
    last_two = [b for b in layout if b[4] == active_base][-2:]
    assert len(last_two) == 2
    start = last_two[0][2]
    end = last_two[1][2] + last_two[1][3]
    log_file = segment_file_name(active_base, ".log")
    for cut in range(start, end):
        work = tmp_path / f"cut{cut}"
        shutil.copytree(pristine, work)
        os.truncate(work / log_file, cut)
        survivors = [b for b in layout if b[4] < active_base or b[2] + b[3] <= cut]
        log = check_log(work, survivors[-1][1])
        shutil.rmtree(work)
        assert log.last_recovery.truncated_bytes == cut - (survivors[-1][2] + survivors[-1][3] if
                                                           survivors[-1][4] == active_base else 0)


def test_flipped_byte_in_last_batch_is_cut(tmp_path):
    """(b) A flipped byte in the last batch fails its CRC: it is cut, never returned."""
    layout = build(tmp_path, flush_at=29)          # even the flushed segment is re-checked
    base, _nxt, position, size, segment_base = layout[-1]
    path = tmp_path / segment_file_name(segment_base, ".log")
    data = bytearray(path.read_bytes())
    data[position + size - 3] ^= 0x40
    path.write_bytes(bytes(data))
    log = check_log(tmp_path, base)
    assert log.last_recovery.truncated_label == "corrupt-batch"


def test_flipped_length_field_cuts_from_there(tmp_path):
    """(b) A corrupted length field in the active segment cuts that batch and all after it."""
    layout = build(tmp_path)
    segment_base = layout[-1][4]
    in_active = [b for b in layout if b[4] == segment_base]
    victim = in_active[len(in_active) // 2]
    path = tmp_path / segment_file_name(segment_base, ".log")
    data = bytearray(path.read_bytes())
    data[victim[2] + 10] ^= 0x01                  # low bytes of batch_length
    path.write_bytes(bytes(data))
    check_log(tmp_path, victim[0])


@pytest.mark.parametrize("seed", range(6))
def test_flipped_byte_in_index_files(tmp_path, seed):
    """(b) Scribbling on .index/.timeindex after a clean close: reads stay right, the index is rebuilt."""
    rng = random.Random(seed)
    log = open_log(tmp_path)
    for _ in range(60):
        log.append(batch_for(log.log_end_offset, pad=30))
    log.close()
    names = sorted(n for n in os.listdir(tmp_path) if n.endswith((".index", ".timeindex"))
                   and os.path.getsize(tmp_path / n) > 0)
    name = rng.choice(names)
    data = bytearray((tmp_path / name).read_bytes())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    (tmp_path / name).write_bytes(bytes(data))
    log = open_log(tmp_path)
    end = log.log_end_offset
    for offset in range(end):                       # every offset, via every index entry
        data = log.read(offset, 1)
        (h, _), = list(iter_batches(data))
        assert h.base_offset <= offset < h.next_offset, f"seed={seed} file={name} offset={offset}"
        assert records_of(data)[0][1].startswith(f"v{h.base_offset}".encode())
    log.close()


def test_missing_index_files_are_rebuilt(tmp_path):
    """Deleted index files after a crash are rebuilt from the log."""
    layout = build(tmp_path)
    for name in os.listdir(tmp_path):
        if name.endswith((".index", ".timeindex")):
            os.unlink(tmp_path / name)
    check_log(tmp_path, layout[-1][1])


def test_garbage_length_never_allocated(tmp_path, monkeypatch):
    """(d) A 0x7fffffff length field is compared with the file size, never read or allocated."""
    layout = build(tmp_path)
    segment_base = layout[-1][4]
    path = tmp_path / segment_file_name(segment_base, ".log")
    with open(path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write((12345).to_bytes(8, "big") + (0x7FFFFFFF).to_bytes(4, "big") + b"\x00" * 40)
    file_size = os.path.getsize(path)
    requested = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, pos: requested.append(n) or real_pread(fd, n, pos))
    log = check_log(tmp_path, layout[-1][1])
    assert max(requested) <= max(file_size, 1 << 20)
    assert log.last_recovery.truncated_label == "torn-tail"
    assert log.last_recovery.truncated_bytes == 52


def test_garbage_after_crash_in_closed_segment_above_recovery_point(tmp_path):
    """A corrupt batch in a closed, unflushed segment cuts there and deletes later segments."""
    layout = build(tmp_path)
    bases = sorted({b[4] for b in layout})
    assert len(bases) >= 3
    victim = next(b for b in layout if b[4] == bases[1])
    path = tmp_path / segment_file_name(bases[1], ".log")
    data = bytearray(path.read_bytes())
    data[victim[2] + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    log = check_log(tmp_path, victim[0])
    assert set(log.last_recovery.deleted_segments) == set(bases[2:])


def test_segments_below_recovery_point_are_not_read(tmp_path, monkeypatch):
    """Unclean open re-checks only from the segment holding the recovery point."""
    layout = build(tmp_path, flush_at=25)
    scanned = []
    import minilog.storage._recovery as recovery_module
    real = recovery_module.scan_segment
    monkeypatch.setattr(recovery_module, "scan_segment",
                        lambda seg, *a: scanned.append(seg.base_offset) or real(seg, *a))
    check_log(tmp_path, layout[-1][1])
    holding_rp = max(b[4] for b in layout if b[0] <= layout[25][1] - 1)
    assert min(scanned) == holding_rp


def test_recovered_closed_segments_keep_their_max_timestamp(tmp_path):
    """After a crash, re-checked closed segments record their max timestamp for retention."""
    log = open_log(tmp_path)
    for i in range(30):
        log.append(batch_for(log.log_end_offset, timestamp=5_000 + i))
    want = [s.max_timestamp_ms for s in log.segments()]
    crash(log)
    log = open_log(tmp_path)
    log.close()
    log = open_log(tmp_path)
    assert [s.max_timestamp_ms for s in log.segments()] == want


def test_sorted_but_wrong_index_entry_is_detected_and_rebuilt(tmp_path):
    """An index entry that stays sorted but points into a batch is caught by the base offset check."""
    log = open_log(tmp_path, **{"segment.bytes": 1 << 20})
    for _ in range(40):
        log.append(batch_for(log.log_end_offset, pad=30))
    log.roll()
    log.close()
    path = tmp_path / segment_file_name(0, ".index")
    data = bytearray(path.read_bytes())
    assert len(data) >= 24
    position = int.from_bytes(data[12:16], "big")
    data[12:16] = (position + 1).to_bytes(4, "big")       # entry 1, still between its neighbours
    path.write_bytes(bytes(data))
    log = open_log(tmp_path, **{"segment.bytes": 1 << 20})
    for offset in range(log.log_end_offset):
        (h, _), = list(iter_batches(log.read(offset, 1)))
        assert h.base_offset <= offset < h.next_offset
    assert log.statistics().index_rebuilds_total == 1
    log.close()
