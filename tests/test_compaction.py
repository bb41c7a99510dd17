"""Log compaction in storage: the cleaner against a model, the swap against crashes.

Each test drives a real `Log` in a temp dir with a fake clock and cleans it
with a real `Cleaner`; records are read back through `Log.read` and the
protocol decoder, as a consumer would see them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minilog.protocol import (
    CODEC_GZIP,
    CODEC_LZ4,
    CODEC_NONE,
    CODEC_ZSTD,
    build_batch,
    decode_records,
    iter_batches,
)
from minilog.storage import Log, LogConfig
from minilog.storage._cleaner import Cleaner, CleanerSettings, cleanable_of
from minilog.storage._cleaner_policy import (
    REASON_MAX_LAG,
    REASON_RATIO,
    REASON_TOMBSTONES,
    CleanableSegment,
    clean_reason,
    cleanable_range,
    pick_log,
)
from minilog.storage._cleaner_records import DELETE_HORIZON_MASK
from minilog.storage._cleaner_files import SWAP_STEPS, finish_swaps
from minilog.storage._cleaner_swap import replace_segment, snapshot_log
from minilog.storage._offset_map import ENTRY_OVERHEAD_BYTES, OffsetMap

DAY_MS = 86_400_000


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def compact_config(**extra: str) -> LogConfig:
    kafka = {"cleanup.policy": "compact", "segment.bytes": "700", "index.interval.bytes": "128",
             "delete.retention.ms": "1000"}
    kafka.update(extra)
    return LogConfig.from_kafka(kafka)


def read_batches(log: Log) -> list[tuple]:
    """(header, batch bytes) of every batch from the log start, through Log.read."""
    out = []
    offset = log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        if not data:
            break
        for header, view in iter_batches(data):
            out.append((header, bytes(view)))
            offset = header.next_offset
    return out


def read_records(log: Log) -> list[tuple]:
    """(offset, timestamp, key, value, headers) of every record a consumer from 0 sees."""
    records = []
    for _header, batch in read_batches(log):
        for r in decode_records(batch, "t", 0):
            records.append((r.offset, r.timestamp, r.key, r.value, tuple(r.headers)))
    return records


def latest_per_key(records) -> dict:
    latest = {}
    for record in records:
        latest[record[2]] = record
    return latest


# -- the model-based property test ------------------------------------------------------

@dataclass
class Model:
    records: list = field(default_factory=list)       # every record appended
    appended_ms: dict = field(default_factory=dict)   # offset -> clock at append
    codec_at: dict = field(default_factory=dict)      # batch base offset -> codec
    producer_last: dict = field(default_factory=dict)  # producer id -> base offset of last batch


record_st = st.tuples(
    st.one_of(st.none(), st.integers(0, 7)),                 # key index, None = no key
    st.one_of(st.none(), st.binary(min_size=0, max_size=12)),  # None = tombstone
    st.booleans(),                                            # with a header
)
op_st = st.one_of(
    st.tuples(st.just("append"), st.lists(record_st, min_size=1, max_size=5),
              st.sampled_from([CODEC_NONE, CODEC_GZIP, CODEC_LZ4, CODEC_ZSTD]),
              st.one_of(st.none(), st.integers(1, 2))),
    st.tuples(st.just("roll")),
    st.tuples(st.just("tick"), st.integers(1, 1500)),
    st.tuples(st.just("clean"), st.booleans()),
)


def check_invariants(log: Log, model: Model, now: int, retention_ms: int) -> list[tuple]:
    got = read_records(log)
    offsets = [r[0] for r in got]
    assert offsets == sorted(set(offsets)), "offsets must stay strictly increasing"
    appended = {r[0]: r for r in model.records}
    for record in got:
        assert appended[record[0]] == record, "a survivor changed (offset, timestamp, key, value or headers)"
    survivors = {r[0] for r in got}
    active_base = log.segments()[-1].base_offset
    for record in model.records:
        if record[0] >= active_base:
            assert record[0] in survivors, f"record {record[0]} in the active segment was cleaned"
    keyed = [r for r in model.records if r[2] is not None]
    seen = latest_per_key([r for r in got if r[2] is not None])
    for key, record in latest_per_key(keyed).items():
        if record[3] is not None:
            assert record[0] in survivors, f"latest record of key {key!r} at {record[0]} was dropped"
            assert seen[key] == record
        else:
            young = now < model.appended_ms[record[0]] + retention_ms
            if young:
                assert record[0] in survivors, f"tombstone at {record[0]} dropped before delete.retention.ms"
            assert key not in seen or seen[key][3] is None, "a deleted key came back"
    batch_bases = {}
    for header, _batch in read_batches(log):
        batch_bases[header.base_offset] = header
        if header.records_count:
            assert header.attributes & 0x07 == model.codec_at[header.base_offset], "codec changed"
    for pid, base in model.producer_last.items():
        assert base in batch_bases, f"producer {pid}'s last batch at {base} was dropped"
        assert batch_bases[base].producer_id == pid
    return got


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, min_size=1, max_size=40))
def test_cleaner_against_model(ops):
    """Random appends, rolls, clock ticks and cleans (some with a tiny offset map): after
    each clean the latest record of every key survives unchanged, nothing in the active
    segment is touched, tombstones live at least delete.retention.ms, producers keep
    their last batch, codecs stay, and a reopened log reads the same."""
    clock = Clock()
    config = compact_config()
    sequences = {1: 0, 2: 0}
    with tempfile.TemporaryDirectory() as d:
        log = Log.open(d, config, clock=clock)
        model = Model()
        tiny = CleanerSettings(dedupe_buffer_bytes=int(3 * (ENTRY_OVERHEAD_BYTES + 8) / 0.9) + 1)
        for op in ops:
            if op[0] == "append":
                _, recs, codec, pid = op
                keys = [None if k is None else b"key-%d" % k for k, _, _ in recs]
                values = [v for _, v, _ in recs]
                headers = [[("h", b"x%d" % i)] if h else None for i, (_, _, h) in enumerate(recs)]
                timestamps = [clock.now + i for i in range(len(recs))]
                extra = {}
                if pid is not None:
                    extra = dict(producer_id=pid, producer_epoch=0, base_sequence=sequences[pid])
                    sequences[pid] += len(recs)
                info = log.append(build_batch(values, keys, timestamps=timestamps, headers=headers,
                                              codec=codec, **extra))
                model.codec_at[info.base_offset] = codec
                if pid is not None:
                    model.producer_last[pid] = info.base_offset
                for i in range(len(recs)):
                    offset = info.base_offset + i
                    model.records.append((offset, timestamps[i], keys[i], values[i],
                                          tuple(headers[i] or ())))
                    model.appended_ms[offset] = clock.now
            elif op[0] == "roll":
                log.roll()
                log.flush()
            elif op[0] == "tick":
                clock.now += op[1]
            else:
                if op[1]:                     # a tiny map: pass after pass until nothing is dirty
                    cleaner = Cleaner(tiny, clock=clock)
                    for _ in range(200):
                        if cleaner.clean(log, force=False, min_ratio=0.0) is None:
                            break
                else:
                    Cleaner(clock=clock).clean(log)
                check_invariants(log, model, clock.now, config.delete_retention_ms)
        before = check_invariants(log, model, clock.now, config.delete_retention_ms)
        log.close()
        with Log.open(d, config, clock=clock) as reopened:
            assert read_records(reopened) == before


# -- targeted cases -----------------------------------------------------------------------

def fill(log: Log, clock: Clock, rounds: int = 60, keys: int = 5) -> None:
    for i in range(rounds):
        log.append(build_batch([b"v%d" % i, b"w%d" % i],
                               [b"k%d" % (i % keys), b"k%d" % ((i + 2) % keys)],
                               timestamps=clock.now))
    log.roll()
    log.flush()


def test_latest_per_key_survives_with_original_offsets(tmp_path):
    """A cleaned log keeps exactly the latest record per key, at its original offset."""
    clock = Clock()
    with Log.open(tmp_path, compact_config(), clock=clock) as log:
        fill(log, clock)
        before = read_records(log)
        size_before = log.size_bytes
        result = Cleaner(clock=clock).clean(log)
        assert result is not None and result.segments_swapped > 0
        after = read_records(log)
        assert after == sorted(latest_per_key(before).values())
        assert log.size_bytes < size_before / 5


def test_tombstone_removed_after_delete_retention(tmp_path):
    """A tombstone is kept through cleans for delete.retention.ms after its first
    clean (KIP-534 horizon in the batch), then the key disappears entirely."""
    clock = Clock()
    config = compact_config(**{"delete.retention.ms": "5000"})
    with Log.open(tmp_path, config, clock=clock) as log:
        log.append(build_batch([b"a1", b"b1"], [b"a", b"b"], timestamps=clock.now))
        log.append(build_batch([None], [b"a"], timestamps=clock.now))
        log.roll()
        log.flush()
        cleaner = Cleaner(clock=clock)
        cleaner.clean(log)
        assert [(r[2], r[3]) for r in read_records(log)] == [(b"b", b"b1"), (b"a", None)]
        tomb = [h for h, _ in read_batches(log) if h.attributes & DELETE_HORIZON_MASK]
        assert len(tomb) == 1 and tomb[0].base_timestamp == clock.now + 5000
        assert [r[1] for r in read_records(log)] == [clock.now, clock.now], "timestamps re-based"
        clock.now += 4999
        cleaner.clean(log)
        assert (b"a", None) in [(r[2], r[3]) for r in read_records(log)]
        snapshot_policy = cleaner.clean(log, force=False)
        assert snapshot_policy is None, "not due before the horizon"
        clock.now += 1
        result = cleaner.clean(log, force=False)
        assert result is not None and result.tombstones_dropped == 1
        assert [(r[2], r[3]) for r in read_records(log)] == [(b"b", b"b1")]


def test_keyless_records_dropped_and_empty_producer_batch_kept(tmp_path):
    """Keyless records go (Kafka counts them invalid); a producer's last batch stays as an
    empty batch with its offsets and sequence, other emptied batches go."""
    clock = Clock()
    with Log.open(tmp_path, compact_config(), clock=clock) as log:
        log.append(build_batch([b"x"], None, timestamps=clock.now))
        log.append(build_batch([b"old"], [b"k"], timestamps=clock.now, producer_id=9,
                               producer_epoch=3, base_sequence=0))
        log.append(build_batch([b"old2", b"old3"], [b"k", b"k"], timestamps=clock.now, producer_id=9,
                               producer_epoch=3, base_sequence=1))
        log.append(build_batch([b"new"], [b"k"], timestamps=clock.now))
        log.roll()
        log.flush()
        Cleaner(clock=clock).clean(log)
        batches = [h for h, _ in read_batches(log)]
        assert [(h.base_offset, h.records_count, h.producer_id) for h in batches] == [(2, 0, 9), (4, 1, -1)]
        empty = batches[0]
        assert (empty.last_offset_delta, empty.base_sequence, empty.producer_epoch) == (1, 1, 3)
        assert [(r[0], r[3]) for r in read_records(log)] == [(4, b"new")]


def test_kafka_python_reads_cleaned_batches(tmp_path):
    """kafka-python decodes cleaned batches (gaps, horizon, compression) to the same records."""
    kafka_records = pytest.importorskip("kafka.record")
    clock = Clock()
    with Log.open(tmp_path, compact_config(), clock=clock) as log:
        for i in range(20):
            log.append(build_batch([b"v%d" % i, None if i % 3 == 0 else b"w"], [b"a%d" % (i % 4), b"b"],
                                   timestamps=[clock.now + i, clock.now + 2 * i], codec=CODEC_GZIP,
                                   headers=[[("h", b"1")], None]))
        log.roll()
        log.flush()
        Cleaner(clock=clock).clean(log)
        ours = read_records(log)
        theirs = []
        for _header, batch in read_batches(log):
            for r in kafka_records.MemoryRecords(batch).next_batch():
                theirs.append((r.offset, r.timestamp, r.key, r.value, tuple(r.headers)))
        assert theirs == ours and len(ours) == 5


def test_bounded_map_cleans_in_several_passes(tmp_path):
    """A map too small for the dirty section ends the pass early; repeated passes reach
    the same log as one pass with a large map."""
    clock = Clock()
    big_dir, small_dir = tmp_path / "big", tmp_path / "small"
    for d in (big_dir, small_dir):
        with Log.open(d, compact_config(), clock=clock) as log:
            fill(log, clock, rounds=80, keys=12)
    with Log.open(big_dir, compact_config(), clock=clock) as log:
        Cleaner(clock=clock).clean(log)
        expected = read_records(log)
    small = CleanerSettings(dedupe_buffer_bytes=int(5 * (ENTRY_OVERHEAD_BYTES + 3) / 0.9))
    with Log.open(small_dir, compact_config(), clock=clock) as log:
        cleaner = Cleaner(small, clock=clock)
        passes = 0
        while True:
            result = cleaner.clean(log, force=False, min_ratio=0.0)
            if result is None:
                break
            passes += 1
            assert passes < 50
        assert passes > 2
        assert read_records(log) == expected


def test_min_compaction_lag_keeps_young_segments(tmp_path):
    """Segments holding records younger than min.compaction.lag.ms are not cleaned."""
    clock = Clock()
    config = compact_config(**{"min.compaction.lag.ms": "10000"})
    with Log.open(tmp_path, config, clock=clock) as log:
        fill(log, clock)
        before = read_records(log)
        assert Cleaner(clock=clock).clean(log) is None
        clock.now += 10001
        assert Cleaner(clock=clock).clean(log) is not None
        assert len(read_records(log)) < len(before)


# -- crashes during the swap --------------------------------------------------------------

class Crash(Exception):
    pass


def _abandon(log: Log) -> None:
    """Drop a Log as a crash would: no close, no clean-shutdown marker."""
    log._segments.close_fds()


@pytest.mark.parametrize("step", SWAP_STEPS)
def test_crash_at_every_swap_step_leaves_old_or_new(tmp_path, step):
    """Stopping the process after any swap step of the fourth segment, then reopening,
    gives either the old or the new segment (decided at `log-swap`), never a mix; the
    next clean then reaches the same log as an uninterrupted one."""
    clock = Clock()
    crash_dir, clean_dir = tmp_path / "crash", tmp_path / "clean"
    with Log.open(crash_dir, compact_config(), clock=clock) as log:
        fill(log, clock, keys=40)              # every segment keeps some latest records
        old = read_records(log)
    shutil.copytree(crash_dir, clean_dir)
    with Log.open(clean_dir, compact_config(), clock=clock) as log:
        Cleaner(clock=clock).clean(log)
        new = read_records(log)
    log = Log.open(crash_dir, compact_config(), clock=clock)
    second = log.segments()[3]               # cleaned to a smaller, non-empty segment
    swaps = []

    def swap(cleaned):
        swaps.append(cleaned.base_offset)

        def hook(at):
            if cleaned.base_offset == second.base_offset and at == step:
                raise Crash(at)
        return replace_segment(log, cleaned, step_hook=hook)

    snap = snapshot_log(log)
    with pytest.raises(Crash):
        Cleaner(clock=clock).clean_snapshot(snap, log.config, cleanable_of(snap, log.config, clock.now),
                                            swap=swap)
    assert swaps[-1] == second.base_offset
    _abandon(log)
    with Log.open(crash_dir, compact_config(), clock=clock) as reopened:
        assert not [n for n in os.listdir(crash_dir) if n.endswith((".cleaned", ".swap"))]
        got = read_records(reopened)
        lo, hi = second.base_offset, second.next_offset
        decided = SWAP_STEPS.index(step) >= SWAP_STEPS.index("log-swap")
        expected = ([r for r in new if r[0] < (hi if decided else lo)]
                    + [r for r in old if r[0] >= (hi if decided else lo)])
        assert got == expected
        Cleaner(clock=clock).clean(reopened)
        assert read_records(reopened) == new


def test_finish_swaps_rule(tmp_path):
    """The recovery rule on bare files: a `.log.swap` decides its segment's swap;
    anything else `.cleaned`/`.swap` is deleted."""
    names = {"00000000000000000000.log": b"old0", "00000000000000000000.index.swap": b"i0",
             "00000000000000000000.log.swap": b"new0", "00000000000000000007.log": b"old7",
             "00000000000000000007.index.swap": b"i7", "00000000000000000007.log.cleaned": b"new7"}
    for name, data in names.items():
        (tmp_path / name).write_bytes(data)
    assert finish_swaps(str(tmp_path)) == [0]
    assert sorted(os.listdir(tmp_path)) == ["00000000000000000000.index", "00000000000000000000.log",
                                            "00000000000000000007.log"]
    assert (tmp_path / "00000000000000000000.log").read_bytes() == b"new0"
    assert (tmp_path / "00000000000000000007.log").read_bytes() == b"old7"


# -- pure parts ---------------------------------------------------------------------------

def seg(base, nxt, size, max_ts=0, first_ts=0, active=False):
    return CleanableSegment(base, nxt, size, max_ts, first_ts, active)


POLICY_CASES = [
    # (label, segments, checkpoint, now, min lag, max lag, uncleanable from, horizon, ratio) -> reason, dirty range
    ("nothing-dirty", [seg(0, 10, 100), seg(10, 10, 0, active=True)], 10, 0, 0, 2**63 - 1, 10, -1, 0.5,
     None, (10, 10)),
    ("all-dirty", [seg(0, 10, 100), seg(10, 12, 5, active=True)], None, 0, 0, 2**63 - 1, 12, -1, 0.5,
     REASON_RATIO, (0, 10)),
    ("below-ratio", [seg(0, 10, 100), seg(10, 20, 20), seg(20, 20, 0, active=True)], 10, 0, 0,
     2**63 - 1, 20, -1, 0.5, None, (10, 20)),
    ("max-lag", [seg(0, 10, 100), seg(10, 20, 20, 50, 50), seg(20, 20, 0, active=True)], 10, 1000, 0,
     500, 20, -1, 0.5, REASON_MAX_LAG, (10, 20)),
    ("min-lag-holds-back", [seg(0, 10, 100, 900), seg(10, 20, 100, 990), seg(20, 20, 0, active=True)],
     None, 1000, 50, 2**63 - 1, 20, -1, 0.5, REASON_RATIO, (0, 10)),
    ("high-watermark-mid-segment", [seg(0, 10, 100), seg(10, 20, 100), seg(20, 20, 0, active=True)],
     None, 0, 0, 2**63 - 1, 15, -1, 0.5, REASON_RATIO, (0, 10)),
    ("checkpoint-out-of-range", [seg(5, 10, 100), seg(10, 10, 0, active=True)], 2, 0, 0, 2**63 - 1,
     10, -1, 0.5, REASON_RATIO, (5, 10)),
    ("tombstones-due", [seg(0, 10, 100), seg(10, 10, 0, active=True)], 10, 700, 0, 2**63 - 1, 10, 600,
     0.5, REASON_TOMBSTONES, (10, 10)),
    ("tombstones-not-yet", [seg(0, 10, 100), seg(10, 10, 0, active=True)], 10, 500, 0, 2**63 - 1, 10,
     600, 0.5, None, (10, 10)),
]


@pytest.mark.parametrize("case", POLICY_CASES, ids=[c[0] for c in POLICY_CASES])
def test_policy_table(case):
    """The cleaning policy as a labelled table (what is dirty, and why a log is due)."""
    (_label, segments, checkpoint, now, min_lag, max_lag, uncleanable, horizon, ratio,
     reason, dirty) = case
    c = cleanable_range(segments, log_start_offset=segments[0].base_offset,
                        log_end_offset=segments[-1].next_offset, checkpoint=checkpoint, now_ms=now,
                        min_compaction_lag_ms=min_lag, max_compaction_lag_ms=max_lag,
                        uncleanable_from=uncleanable, tombstone_horizon_ms=horizon)
    assert (c.first_dirty_offset, c.first_uncleanable_offset) == dirty
    assert clean_reason(c, ratio) == reason


def test_pick_log_prefers_lagging_then_dirtiest():
    """Logs past max.compaction.lag.ms go first, then the highest dirty ratio."""
    from minilog.storage._cleaner_policy import Cleanable
    a = Cleanable(0, 10, 100, 100, 0)        # ratio 0.5
    b = Cleanable(0, 10, 10, 90, 0)          # ratio 0.9
    c = Cleanable(0, 10, 90, 10, 5)          # lagging
    assert pick_log([("a", a, 0.5), ("b", b, 0.5)]) == "b"
    assert pick_log([("a", a, 0.5), ("b", b, 0.5), ("c", c, 0.5)]) == "c"
    assert pick_log([("a", a, 0.6)]) is None


def test_offset_map_bound():
    """The map refuses a batch that might not fit, keeps the largest offset per key."""
    m = OffsetMap(int(2 * (ENTRY_OVERHEAD_BYTES + 1) / 0.9) + 1)
    assert m.fits([b"a", b"b"]) and not m.fits([b"a", b"b", b"c"])
    m.put_batch([b"a", b"b", b"a"], [1, 2, 3], 3)
    assert (m.get(b"a"), m.get(b"b"), m.get(b"z"), m.latest_offset) == (3, 2, -1, 3)
    assert not m.fits([b"c"])
    with pytest.raises(ValueError):
        OffsetMap(10)


def test_cleaned_batches_pass_batch_checks(tmp_path):
    """Cleaned batches are valid v2 batches: length, magic, CRC and record structure."""
    from minilog.protocol import check_batch
    clock = Clock()
    with Log.open(tmp_path, compact_config(), clock=clock) as log:
        fill(log, clock)
        Cleaner(clock=clock).clean(log)
        for header, batch in read_batches(log):
            assert check_batch(batch) == header
            assert len(decode_records(batch, "t", 0)) == header.records_count


def test_bench_cleaner_smoke():
    """perf/bench_cleaner.py runs end to end at a tiny size and prints its one JSON line
    (fields and counts only, never a rate)."""
    import json
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "perf" / "bench_cleaner.py"), "--size-mb", "1",
                           "--segment-mb", "1", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tool"] == "bench_cleaner" and out["records_kept"] == out["keys"] > 0
    assert out["cleaner_mb_per_sec"] > 0 and out["raw_read_mb_per_sec"] > 0
