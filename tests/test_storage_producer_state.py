"""Idempotent-producer state in the Log (Kafka's ProducerStateManager): duplicate and
sequence checks, snapshots at roll and close, rebuild from snapshot plus tail, truncation."""

from __future__ import annotations

import random

import pytest

from minilog.protocol import build_batch
from minilog.storage import (
    InvalidProducerEpochError,
    Log,
    LogConfig,
    OutOfOrderSequenceError,
    SimulatedFileSystem,
)
from minilog.storage._producer_state import decode_snapshot, encode_snapshot, snapshot_file_name

DIR = "/data/t-0"


class FakeClock:
    def __call__(self) -> int:
        return 1_000_000


def open_log(fs, **kafka):
    config = {"segment.bytes": 700, "index.interval.bytes": 100, **kafka}
    return Log(DIR, LogConfig.from_kafka(config), clock=FakeClock(), fs=fs)


def batch(pid: int, epoch: int, seq: int, count: int = 2, pad: int = 40) -> bytes:
    values = [f"p{pid}e{epoch}s{seq + i}".encode() + b"." * pad for i in range(count)]
    return build_batch(values, timestamps=1_000, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def produce(log, pid, epoch, seq, count=2):
    return log.append(batch(pid, epoch, seq, count))


def snapshots(fs) -> list[int]:
    return sorted(int(name[:20]) for name, _ in fs.list_dir(DIR) if name.endswith(".snapshot"))


def test_duplicates_are_answered_with_the_original_offsets_and_not_written():
    fs = SimulatedFileSystem()
    log = open_log(fs)
    first = produce(log, 7, 0, 0)
    produce(log, 7, 0, 2)
    end = log.log_end_offset
    again = produce(log, 7, 0, 0)                        # a retry of the first batch
    assert again.duplicate and (again.base_offset, again.last_offset) == (first.base_offset, first.last_offset)
    assert log.log_end_offset == end
    with pytest.raises(OutOfOrderSequenceError):
        produce(log, 7, 0, 9)                            # a gap
    produce(log, 7, 0, 4)
    produce(log, 7, 1, 0)                                # a new epoch starts at sequence 0
    with pytest.raises(InvalidProducerEpochError):
        produce(log, 7, 0, 6)                            # epoch 0 after epoch 1
    with pytest.raises(OutOfOrderSequenceError):
        produce(log, 7, 2, 5)                            # ... and only there
    assert log.log_end_offset == end + 4
    assert not produce(log, 8, 0, 1234).duplicate        # an unknown producer may start anywhere


def test_a_snapshot_is_written_at_each_roll_and_on_close():
    fs = SimulatedFileSystem()
    log = open_log(fs)
    seq = 0
    while log.segment_count < 4:
        produce(log, 1, 0, seq)
        seq += 2
    bases = [s.base_offset for s in log.segments()]
    assert snapshots(fs) == bases[1:]                     # one per roll, at the new base
    log.close()
    assert snapshots(fs) == [*bases[1:], log.log_end_offset]
    for _ in range(3):                                    # restarts do not pile up snapshots
        log = open_log(fs)
        produce(log, 1, 0, seq)
        seq += 2
        log.close()
    assert snapshots(fs) == [*bases[1:], log.log_end_offset]


def test_restart_rebuilds_from_the_snapshot_plus_the_tail_after_it(monkeypatch):
    """After a crash the newest snapshot is loaded and only the batches after it replayed."""
    fs = SimulatedFileSystem(random.Random(1))
    log = open_log(fs)
    seqs = {1: 0, 2: 0}
    for i in range(30):
        pid = 1 + i % 2
        produce(log, pid, 0, seqs[pid])
        seqs[pid] += 2
    log.flush()
    last_snapshot = snapshots(fs)[-1]
    assert last_snapshot < log.log_end_offset
    fs.crash()
    replayed = []
    from minilog.storage import _producer_state

    real_update = _producer_state.ProducerStateManager.update

    def spy(self, pid, epoch, seq, first, last, ts):
        replayed.append(first)
        return real_update(self, pid, epoch, seq, first, last, ts)

    monkeypatch.setattr(_producer_state.ProducerStateManager, "update", spy)
    log = open_log(fs)
    assert replayed and min(replayed) >= last_snapshot          # only the tail was read
    monkeypatch.undo()
    assert produce(log, 1, 0, seqs[1] - 2).duplicate             # the last batch of each producer
    assert produce(log, 2, 0, seqs[2] - 2).duplicate
    with pytest.raises(OutOfOrderSequenceError):
        produce(log, 1, 0, seqs[1] + 2)
    assert not produce(log, 1, 0, seqs[1]).duplicate


def test_clean_restart_needs_no_replay_and_keeps_dedup():
    fs = SimulatedFileSystem()
    log = open_log(fs, **{"segment.bytes": 1 << 20})
    first = produce(log, 5, 3, 0)
    produce(log, 5, 3, 2)
    log.close()
    log = open_log(fs, **{"segment.bytes": 1 << 20})
    assert log.producer_state.end_offset == log.log_end_offset
    assert produce(log, 5, 3, 0).base_offset == first.base_offset   # the 5-batch window survived


def test_truncation_drops_snapshots_above_the_cut_and_rebuilds_the_state():
    fs = SimulatedFileSystem()
    log = open_log(fs)
    infos = []
    for seq in range(0, 60, 2):
        infos.append(produce(log, 9, 0, seq))
    cut = infos[10].base_offset                                  # keeps batches with seq 0..18
    assert any(o > cut for o in snapshots(fs))
    log.truncate_to(cut)
    assert all(o <= cut for o in snapshots(fs))
    assert produce(log, 9, 0, 18).duplicate                      # the last surviving batch
    with pytest.raises(OutOfOrderSequenceError):
        produce(log, 9, 0, 22)                                   # 20 was cut: it is next
    assert produce(log, 9, 0, 20).base_offset == cut
    log.truncate_fully_and_start_at(1000)
    assert snapshots(fs) == [] and len(log.producer_state) == 0


def test_a_snapshot_with_a_bad_crc_is_ignored_and_an_older_one_used():
    fs = SimulatedFileSystem()
    log = open_log(fs)
    for seq in range(0, 40, 2):
        produce(log, 4, 0, seq)
    log.close()
    newest = snapshots(fs)[-1]
    path = f"{DIR}/{snapshot_file_name(newest)}"
    data = bytearray(fs.read_bytes(path))
    data[-1] ^= 0x01                                             # one flipped bit in a sequence
    fs.write_bytes(path, bytes(data))
    log = open_log(fs)
    assert newest not in snapshots(fs)                           # deleted as unusable
    assert produce(log, 4, 0, 38).duplicate                      # rebuilt from the older one + tail
    with pytest.raises(ValueError, match="CRC"):
        decode_snapshot(bytes(data))


def test_snapshot_codec_round_trips_and_rejects_truncation():
    fs = SimulatedFileSystem()
    log = open_log(fs, **{"segment.bytes": 1 << 20})
    for pid in range(3):
        for seq in range(0, 14, 2):
            produce(log, pid, pid, seq)
    data = encode_snapshot(log.producer_state.producers)
    decoded = decode_snapshot(data)
    assert {p: (e.epoch, list(e.batches)) for p, e in decoded.items()} == {
        p: (e.epoch, list(e.batches)) for p, e in log.producer_state.producers.items()}
    assert all(len(e.batches) == 5 for e in decoded.values())    # Kafka's window of 5
    for size in (0, 5, len(data) - 1):
        with pytest.raises(ValueError):
            decode_snapshot(data[:size])
