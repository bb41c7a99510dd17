"""Sparse offset and time indexes against a bisect-on-a-list model (seeded)."""

from __future__ import annotations

import bisect
import random

import pytest

from minilog.storage import OffsetIndex, TimeIndex


@pytest.mark.parametrize("seed", range(8))
def test_offset_index_matches_bisect_model(tmp_path, seed):
    """lookup(o) is the last entry <= o, in memory and after reloading the file."""
    rng = random.Random(seed)
    base = rng.randrange(0, 10**12)
    index = OffsetIndex(str(tmp_path / "x.index"), base, 10_000)
    index.reset()
    offsets, positions = [], []
    offset, position = base, 0
    for _ in range(rng.randrange(0, 500)):
        offset += rng.randrange(1, 50)
        position += rng.randrange(1, 5000)
        index.append(offset, position)
        offsets.append(offset)
        positions.append(position)
        if rng.random() < 0.05:
            index.flush()
    index.flush()
    reloaded = OffsetIndex(index.path, base, 10_000)
    assert reloaded.load() is None and reloaded.sanity_check(position + 1) is None
    for _ in range(300):
        target = rng.randrange(base - 5, offset + 100)
        i = bisect.bisect_right(offsets, target) - 1
        want = (base, 0) if i < 0 else (offsets[i], positions[i])
        for idx in (index, reloaded):
            assert tuple(idx.lookup(target)) == want, f"seed={seed} target={target}"
        p = rng.randrange(0, position + 100)
        j = bisect.bisect_right(positions, p) - 1
        want_p = (base, 0) if j < 0 else (offsets[j], positions[j])
        assert tuple(reloaded.lookup_by_position(p)) == want_p, f"seed={seed} position={p}"
    # truncation keeps the prefix below the cut, on disk too
    if offsets:
        cut = offsets[len(offsets) // 2]
        index.truncate_to(cut)
        again = OffsetIndex(index.path, base, 10_000)
        again.load()
        keep = bisect.bisect_left(offsets, cut)
        assert len(again) == keep, f"seed={seed}"


@pytest.mark.parametrize("seed", range(8))
def test_time_index_matches_bisect_model(tmp_path, seed):
    """last_below(t) is the last entry with timestamp < t; non-increasing stamps are skipped."""
    rng = random.Random(seed)
    index = TimeIndex(str(tmp_path / "x.timeindex"), 100, 10_000)
    index.reset()
    model = []
    offset, ts = 100, rng.randrange(0, 10**12)
    for _ in range(rng.randrange(0, 400)):
        offset += rng.randrange(1, 20)
        ts += rng.randrange(-50, 100)
        added = index.maybe_append(ts, offset)
        assert added == (not model or ts > model[-1][0]), f"seed={seed}"
        if added:
            model.append((ts, offset))
    index.flush()
    reloaded = TimeIndex(index.path, 100, 10_000)
    assert reloaded.last_entry() == (model[-1] if model else None), f"seed={seed}"
    assert reloaded.load() is None and reloaded.sanity_check(offset + 1) is None
    stamps = [t for t, _ in model]
    for _ in range(300):
        target = rng.randrange(ts - 10_000, ts + 100)
        i = bisect.bisect_left(stamps, target) - 1
        want = None if i < 0 else model[i]
        got = reloaded.last_below(target)
        assert (None if got is None else tuple(got)) == want, f"seed={seed} target={target}"


def test_sanity_check_catches_disorder_and_bad_sizes(tmp_path):
    """Kafka's sanity check: size multiple, monotonic, inside the log."""
    path = tmp_path / "x.index"
    index = OffsetIndex(str(path), 0, 100)
    index.reset()
    index.append(5, 100)
    index.append(9, 300)
    index.flush()
    fresh = OffsetIndex(str(path), 0, 100)
    assert fresh.load() is None
    assert fresh.sanity_check(301) is None
    assert "beyond log size" in fresh.sanity_check(200)
    data = bytearray(path.read_bytes())
    data[8:16], data[0:8] = data[0:8], data[8:16]
    path.write_bytes(bytes(data))
    assert "not strictly increasing" in OffsetIndex(str(path), 0, 100).sanity_check(1000)
    path.write_bytes(bytes(data) + b"\x01")
    assert "multiple" in OffsetIndex(str(path), 0, 100).load()
