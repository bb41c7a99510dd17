"""Benchmark the RecordBatch v2 codec: encode, decode and validate records/s per codec.

Encode: `build_batch` of `--batch-records` values of `--value-bytes` bytes,
one timestamp (the producer's common case); `--workload uniform` has no
keys, `--workload keyed` has keys of varying length (7-18 bytes, as
"order-<id>"), which miss the uniform fast paths.
Decode: `decode_records` into `Record` objects over a buffer of about
`--fetch-bytes` of such batches (what one consumer fetch returns).
Validate: `validate_batch` of one such batch, CRC included (what the broker
runs once per produced batch before appending it).

Goals (uncompressed, 100-byte values): encode >= 3,000,000 records/s,
decode >= 2,000,000 records/s.

    python perf/bench_records.py                       # table, progress bar
    python perf/bench_records.py --json                # machine-readable
    python perf/bench_records.py --phases validate --codecs none,lz4 --cpu-time
    python perf/bench_records.py --workload keyed --phases decode
    python perf/bench_records.py --codecs none --profile decode
    python perf/bench_records.py --record-types        # Record representation costs
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections import namedtuple
from dataclasses import dataclass
from functools import partial
from itertools import repeat

from minilog.protocol import CODEC_GZIP, CODEC_LZ4, CODEC_NONE, CODEC_SNAPPY, CODEC_ZSTD
from minilog.protocol import build_batch, decode_records, validate_batch
from minilog.protocol._compression import codec_available

_clock = time.perf_counter   # --cpu-time: time.thread_time (figures on a busy machine)

CODECS = {"none": CODEC_NONE, "gzip": CODEC_GZIP, "snappy": CODEC_SNAPPY,
          "lz4": CODEC_LZ4, "zstd": CODEC_ZSTD}
GOALS = {("encode", "none"): 3_000_000, ("decode", "none"): 2_000_000}


def make_values(count: int, size: int, seed: int = 1) -> list[bytes]:
    """JSON-ish values: compressible like real events, not all identical."""
    rng = random.Random(seed)
    words = [b"user", b"order", b"click", b"view", b"id", b"price", b"ts", b"ok"]
    out = []
    for i in range(count):
        body = b'{"n":%d,' % i + b",".join(rng.choice(words) for _ in range(size // 4))
        out.append(body[:size].ljust(size, b" "))
    return out


def make_keys(count: int, seed: int = 2) -> list[bytes]:
    """Keys of varying length, as aggregate ids are: b"order-" + 1 to 12 digits."""
    rng = random.Random(seed)
    digits = [rng.randrange(1, 13) for _ in range(count)]
    return [b"order-%d" % rng.randrange(10 ** (d - 1), 10 ** d) for d in digits]


def bench_encode(values, codec, total, on_progress, keys=None) -> float:
    ts = int(time.time() * 1000)
    done = 0
    start = _clock()
    while done < total:
        build_batch(values, keys, timestamps=ts, codec=codec)
        done += len(values)
        on_progress(len(values))
    return done / (_clock() - start)


def bench_validate(values, codec, total, on_progress, keys=None) -> float:
    batch = build_batch(values, keys, timestamps=int(time.time() * 1000), codec=codec)
    validate_batch(batch, max_message_bytes=1048588)  # warm-up: plans and patterns built once
    done = 0
    start = _clock()
    while done < total:
        validate_batch(batch, max_message_bytes=1048588)
        done += len(values)
        on_progress(len(values))
    return done / (_clock() - start)


def bench_decode(values, codec, total, fetch_bytes, on_progress, keys=None) -> float:
    ts = int(time.time() * 1000)
    batches = []
    size = 0
    while size < fetch_bytes or not batches:
        batch = build_batch(values, keys, timestamps=ts, codec=codec, base_offset=len(batches) * len(values))
        batches.append(batch)
        size += len(batch)
    buf = b"".join(batches)
    decode_records(buf, "bench", 0)  # warm-up: plans and patterns built once
    done = 0
    start = _clock()
    while done < total:
        n = len(decode_records(buf, "bench", 0))
        done += n
        on_progress(n)
    return done / (_clock() - start)


def bench_record_types(count: int = 10_000) -> dict[str, float]:
    """ns per record to build `count` records of each representation in bulk."""
    NT = namedtuple("NT", "topic partition offset timestamp key value headers")

    class Slotted:
        __slots__ = NT._fields

        def __init__(self, topic, partition, offset, timestamp, key, value, headers):
            self.topic, self.partition, self.offset = topic, partition, offset
            self.timestamp, self.key, self.value, self.headers = timestamp, key, value, headers

    @dataclass(slots=True)
    class DC:
        topic: str
        partition: int
        offset: int
        timestamp: int
        key: bytes | None
        value: bytes | None
        headers: list

    def columns():
        return (repeat("t", count), repeat(0, count), range(count), repeat(1, count),
                repeat(None, count), repeat(b"v", count), repeat((), count))

    ways = {
        "namedtuple via tuple.__new__": lambda: list(map(partial(tuple.__new__, NT), zip(*columns()))),
        "namedtuple __new__": lambda: list(map(NT, *columns())),
        "namedtuple _make": lambda: list(map(NT._make, zip(*columns()))),
        "slotted class": lambda: list(map(Slotted, *columns())),
        "dataclass(slots=True)": lambda: list(map(DC, *columns())),
        "plain tuple (no names)": lambda: list(zip(*columns())),
    }
    out = {}
    gc.disable()  # compare the constructors, not the cyclic GC's passes
    try:
        for name, fn in ways.items():
            best = min(_timed(fn) for _ in range(30))
            out[name] = best / count * 1e9
    finally:
        gc.enable()
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codecs", default="none,lz4,zstd,gzip", help="comma-separated (default %(default)s)")
    p.add_argument("--records", type=int, default=2_000_000, help="records per measurement")
    p.add_argument("--batch-records", type=int, default=1000, help="records per batch")
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--workload", choices=["uniform", "keyed"], default="uniform",
                   help="uniform: no keys; keyed: keys of varying length (default %(default)s)")
    p.add_argument("--phases", default="encode,decode,validate", help="comma-separated (default %(default)s)")
    p.add_argument("--fetch-bytes", type=int, default=1 << 20, help="decode buffer size")
    p.add_argument("--repeat", type=int, default=3, help="measurements; the best is reported")
    p.add_argument("--json", action="store_true", help="print JSON only")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with this thread's CPU time, not the wall clock (a shared, busy machine)")
    p.add_argument("--profile", choices=["encode", "decode", "validate"], help="pyinstrument one phase")
    p.add_argument("--record-types", action="store_true", help="compare Record representations")
    args = p.parse_args(argv)
    if args.cpu_time:
        global _clock
        _clock = time.thread_time

    if args.record_types:
        result = bench_record_types()
        print(json.dumps(result, indent=2) if args.json else
              "\n".join(f"{ns:8.1f} ns/record  {name}" for name, ns in result.items()))
        return 0
    names = [c for c in args.codecs.split(",") if c]
    for name in names:
        if name not in CODECS or not codec_available(CODECS[name]):
            p.error(f"codec {name!r} unknown or unavailable")
    values = make_values(args.batch_records, args.value_bytes)
    keys = make_keys(args.batch_records) if args.workload == "keyed" else None
    if args.profile:
        return _profile(args, values, CODECS[names[0]], keys)

    results = _run(args, names, values, keys)
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "value_bytes": args.value_bytes,
                          "batch_records": args.batch_records, "workload": args.workload,
                          "results": results}, indent=2))
    else:
        _print_table(results)
    return 0


def _phase(phase, values, codec, args, on_progress, keys) -> float:
    if phase == "encode":
        return bench_encode(values, codec, args.records, on_progress, keys)
    if phase == "validate":
        return bench_validate(values, codec, args.records, on_progress, keys)
    return bench_decode(values, codec, args.records, args.fetch_bytes, on_progress, keys)


def _run(args, names, values, keys) -> list[dict]:
    from rich.progress import Progress

    phases = [ph for ph in args.phases.split(",") if ph in ("encode", "decode", "validate")]
    jobs = [(phase, name) for name in names for phase in phases]
    results = []
    with Progress(transient=True, disable=args.json) as progress:
        task = progress.add_task("benchmarking", total=len(jobs) * args.repeat * args.records)
        advance = partial(progress.advance, task)
        for phase, name in jobs:
            progress.update(task, description=f"{phase} {name}")
            codec = CODECS[name]
            runs = [_phase(phase, values, codec, args, advance, keys) for _ in range(args.repeat)]
            goal = GOALS.get((phase, name)) if keys is None else None
            results.append({"phase": phase, "codec": name, "records_per_s": round(max(runs)),
                            "goal": goal, "met": None if goal is None else max(runs) >= goal})
    return results


def _print_table(results) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="RecordBatch v2 codec, records/s (best run)")
    for col in ("phase", "codec", "records/s", "goal", "met"):
        table.add_column(col, justify="right" if col != "phase" else "left")
    for r in results:
        table.add_row(r["phase"], r["codec"], f"{r['records_per_s']:,}",
                      f"{r['goal']:,}" if r["goal"] else "-",
                      {True: "yes", False: "NO", None: "-"}[r["met"]])
    Console().print(table)


def _profile(args, values, codec, keys) -> int:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    rate = _phase(args.profile, values, codec, args, lambda n: None, keys)
    profiler.stop()
    print(profiler.output_text(unicode=True, color=False))
    print(f"{args.profile}: {rate:,.0f} records/s (under the profiler)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
