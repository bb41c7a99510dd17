"""The pure retention and roll policies, table-driven."""

from __future__ import annotations

import pytest

from minilog.storage import SegmentInfo, segments_to_delete, should_roll


def segs(*spec, active_size=None):
    """spec: (size, max_ts) per segment; offsets 10 apart; last one active."""
    out = []
    for i, (size, ts) in enumerate(spec):
        out.append(SegmentInfo(i * 10, i * 10 + 10, size, ts, is_active=i == len(spec) - 1))
    return out


CASES = [
    # (segments, now, retention.bytes, retention.ms, log start, hw) -> expected (base, reason)
    ("nothing expired", segs((100, 900), (100, 950), (100, 990)), 1000, -1, 500, 0, None, []),
    ("time prefix stops at first young", segs((100, 100), (100, 900), (100, 200), (100, 990)),
     1000, -1, 500, 0, None, [(0, "retention.ms")]),
    ("equal age is kept (strictly older)", segs((100, 500), (100, 990)), 1000, -1, 500, 0, None, []),
    ("active expired too", segs((100, 1), (100, 2)), 1000, -1, 500, 0, None,
     [(0, "retention.ms"), (10, "retention.ms")]),
    ("empty active never", segs((100, 1), (0, -1)), 1000, -1, 500, 0, None, [(0, "retention.ms")]),
    ("bytes: keep >= limit", segs((100, 990), (100, 990), (100, 990), (100, 990)),
     1000, 250, -1, 0, None, [(0, "retention.bytes")]),
    ("bytes: exact fit deletes", segs((100, 990), (100, 990), (100, 990)),
     1000, 200, -1, 0, None, [(0, "retention.bytes")]),
    ("forever", segs((100, 1), (100, 2)), 10**12, -1, -1, 0, None, []),
    ("log start", segs((100, 990), (100, 990), (100, 990)), 1000, -1, -1, 20, None,
     [(0, "log-start-offset"), (10, "log-start-offset")]),
    ("high watermark bounds", segs((100, 1), (100, 2), (100, 3)), 1000, -1, 5, 0, 15,
     [(0, "retention.ms")]),
]


@pytest.mark.parametrize("name, segments, now, rbytes, rms, start, hw, want", CASES,
                         ids=[c[0] for c in CASES])
def test_segments_to_delete(name, segments, now, rbytes, rms, start, hw, want):
    """Each case: a prefix, with the first reason that applies."""
    got = segments_to_delete(segments, now, rbytes, rms, log_start_offset=start, high_watermark=hw)
    assert [(d.segment.base_offset, d.reason) for d in got] == want


@pytest.mark.parametrize("kwargs, want", [
    (dict(segment_size_bytes=0, batch_size_bytes=10**9), None),
    (dict(segment_size_bytes=900, batch_size_bytes=100), None),
    (dict(segment_size_bytes=901, batch_size_bytes=100), "segment.bytes"),
    (dict(waited_ms=1001), "segment.ms"),
    (dict(index_full=True), "segment.index.bytes"),
    (dict(relative_last_offset=2**32), "relative-offset-overflow"),
])
def test_should_roll(kwargs, want):
    """should_roll names the first reason, and never rolls an empty segment."""
    base = dict(segment_size_bytes=10, batch_size_bytes=10, segment_bytes=1000, waited_ms=0,
                segment_ms=1000, index_full=False, relative_last_offset=5)
    assert should_roll(**{**base, **kwargs}) == want
