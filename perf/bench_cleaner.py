"""Log cleaner throughput against the raw sequential read rate, in one run.

Usage:
    python perf/bench_cleaner.py [--size-mb 128] [--live 0.1] [--value-bytes 100]
                                 [--batch-records 100] [--segment-mb 16] [--dir DIR]
                                 [--json] [--no-progress]

Builds a compacted log of about `--size-mb` MB whose keys are each written
1/`--live` times in random order (so about `--live` of the records are the
latest of their key), rolls it, then measures on the same files:

- raw: `os.pread` of 1 MiB chunks over every closed segment (the page cache
  is warm: one untimed read first), i.e. the rate at which the bytes can be
  had at all;
- cleaner: one `Cleaner.clean` pass over the whole log (offset map,
  producer scan, filtering, re-encoding, writing and swapping the cleaned
  segments), MB of the log cleaned per second.

Goal (issue 12): cleaner MB/s >= 0.3 of the raw read MB/s. Prints one line
of JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

from minilog.protocol import build_batch
from minilog.storage import Cleaner, CleanerSettings, Log, LogConfig

MiB = 1024 * 1024


def build_log(path: str, size_mb: int, live: float, value_bytes: int, batch_records: int,
              segment_mb: int, show_progress: bool) -> tuple[Log, int, int]:
    """Fill a compacted log; returns (log, records, keys)."""
    record_bytes = value_bytes + 20                     # value, key, record framing
    records = size_mb * MiB // record_bytes
    keys = max(1, int(records * live))
    rng = random.Random(7)
    order = [i % keys for i in range(records)]
    rng.shuffle(order)
    config = LogConfig.from_kafka({"cleanup.policy": "compact", "segment.bytes": segment_mb * MiB,
                                   "min.cleanable.dirty.ratio": "0.0"})
    log = Log.open(path, config)
    value = b"v" * value_bytes
    now = time.time_ns() // 1_000_000
    step = max(1, records // batch_records // 20)
    for n, start in enumerate(range(0, records, batch_records)):
        chunk = order[start:start + batch_records]
        log.append(build_batch([value] * len(chunk), [b"key-%010d" % k for k in chunk], timestamps=now))
        if show_progress and n % step == 0:
            print(f"\rwriting {100 * start // records}%", end="", file=sys.stderr, flush=True)
    log.roll()
    log.flush()
    if show_progress:
        print("\r", end="", file=sys.stderr)
    return log, records, keys


def raw_read_mb_per_s(log: Log) -> float:
    paths = [(s.base_offset, s.size_bytes) for s in log.segments()[:-1]]
    files = [os.path.join(log.dir_path, f"{base:020d}.log") for base, _ in paths]

    def read_all() -> int:
        total = 0
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                position = 0
                while True:
                    data = os.pread(fd, MiB, position)
                    if not data:
                        break
                    position += len(data)
            finally:
                os.close(fd)
            total += position
        return total

    read_all()                                          # warm the page cache
    started = time.perf_counter()
    total = read_all()
    return total / MiB / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=128)
    parser.add_argument("--live", type=float, default=0.1, help="share of records that survive")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--batch-records", type=int, default=100)
    parser.add_argument("--segment-mb", type=int, default=16)
    parser.add_argument("--dir", default=None, help="parent directory of the temp log")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="bench_cleaner-", dir=args.dir)
    try:
        log, records, keys = build_log(os.path.join(workdir, "t-0"), args.size_mb, args.live,
                                       args.value_bytes, args.batch_records, args.segment_mb,
                                       not args.no_progress and not args.json)
        log_bytes = sum(s.size_bytes for s in log.segments()[:-1])
        raw = raw_read_mb_per_s(log)
        cleaner = Cleaner(CleanerSettings(dedupe_buffer_bytes=512 * MiB),
                          clock=lambda: time.time_ns() // 1_000_000)
        started = time.perf_counter()
        result = cleaner.clean(log)
        elapsed = time.perf_counter() - started
        assert result is not None and not result.map_full
        cleaner_rate = log_bytes / MiB / elapsed
        out = {
            "tool": "bench_cleaner", "log_mb": round(log_bytes / MiB, 1), "records": records,
            "keys": keys, "records_kept": result.records_kept,
            "bytes_written_mb": round(result.bytes_written / MiB, 1),
            "cleaner_seconds": round(elapsed, 3), "cleaner_mb_per_sec": round(cleaner_rate, 1),
            "raw_read_mb_per_sec": round(raw, 1), "ratio": round(cleaner_rate / raw, 3),
        }
        log.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>22}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
