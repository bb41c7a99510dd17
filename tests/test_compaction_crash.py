"""A crash at every file-system operation of a cleaning pass leaves a consistent log.

Runs the cleaner on a log kept in storage's `SimulatedFileSystem`, stops the
process (an exception) after the k-th mutating file operation for every k,
drops whatever was not fsynced (`crash()`), reopens the log and checks it:
each key's latest record is there unchanged, nothing else appeared, no
`.cleaned`/`.swap` file is left, and a new pass reaches the same log as a
pass that was never interrupted.
"""

from __future__ import annotations

from typing import Any

from minilog.protocol import build_batch, decode_records, iter_batches
from minilog.storage import Log, LogConfig, SimulatedFileSystem
from minilog.storage._cleaner import Cleaner

DIR = "/data/t-0"
MUTATING = frozenset(("open", "pwrite", "pwritev", "fsync", "ftruncate", "replace", "unlink",
                      "fsync_dir"))


class Crash(Exception):
    pass


class CrashAfter:
    """A FileSystem that raises Crash on the k-th mutating call (k = -1: never)."""

    def __init__(self, fs: SimulatedFileSystem, k: int) -> None:
        self.fs = fs
        self.k = k
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.fs, name)
        if name not in MUTATING:
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.calls == self.k:
                raise Crash(f"{name} #{self.k}")
            self.calls += 1
            return method(*args, **kwargs)
        return call


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


CONFIG = LogConfig.from_kafka({"cleanup.policy": "compact", "segment.bytes": "600",
                               "index.interval.bytes": "128", "file.delete.delay.ms": "0"})


def build(fs: Any, clock: Clock) -> list:
    log = Log(DIR, CONFIG, clock=clock, fs=fs)
    for i in range(24):
        log.append(build_batch([b"v%d" % i, None if i % 7 == 3 else b"w%d" % i],
                               [b"k%d" % (i % 9), b"t%d" % (i % 5)], timestamps=clock.now))
    log.roll()
    log.flush()
    records = read(log)
    log.close()
    return records


def read(log: Log) -> list:
    out, offset = [], log.log_start_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        if not data:
            break
        for header, view in iter_batches(data):
            out += [(r.offset, r.key, r.value) for r in decode_records(bytes(view), "t", 0)]
            offset = header.next_offset
    return out


def latest(records: list) -> dict:
    return {key: (offset, value) for offset, key, value in records}


def test_crash_at_every_file_operation_of_a_pass():
    """For every k: crash after k mutating file operations of a pass, reopen, check."""
    clock = Clock()
    reference_fs = SimulatedFileSystem()
    original = build(reference_fs, clock)
    with Log(DIR, CONFIG, clock=clock, fs=reference_fs) as log:
        Cleaner(clock=clock).clean(log)
        cleaned = read(log)
    assert len(cleaned) < len(original)
    k = 0
    while True:
        fs = SimulatedFileSystem()
        build(fs, clock)
        crashing = CrashAfter(fs, k)
        try:
            log = Log(DIR, CONFIG, clock=clock, fs=crashing)
            Cleaner(clock=clock).clean(log)
            finished = True
        except Crash:
            finished = False
        fs.crash()
        with Log(DIR, CONFIG, clock=clock, fs=fs) as reopened:
            names = [name for name, _ in fs.list_dir(DIR)]
            assert not [n for n in names if n.endswith((".cleaned", ".swap"))], (k, names)
            got = read(reopened)
            assert set(got) <= set(original), f"crash after {k} operations: records appeared"
            assert latest(got) == latest(original), f"crash after {k} operations: a latest record lost"
            Cleaner(clock=clock).clean(reopened)
            assert read(reopened) == cleaned, f"crash after {k} operations: the next pass differs"
        if finished:
            break
        k += 1
    assert k > 20, "the pass should take many file operations"
