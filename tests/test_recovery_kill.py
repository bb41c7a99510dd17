"""(c) kill -9 for real: a writer subprocess appends and reports flushed offsets;
the test SIGKILLs it at seeded random moments, 20 rounds on one directory."""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import sys

from minilog.protocol import iter_batches
from minilog.storage import Log, LogConfig
from storage_writer import SMALL_SEGMENTS, records_of

WRITER = pathlib.Path(__file__).with_name("storage_writer.py")


def read_everything(log):
    offset, out = log.log_start_offset, []
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20)
        out.extend(records_of(data))
        offset = [h for h, _ in iter_batches(data)][-1].next_offset
    return out


def test_sigkill_rounds(tmp_path):
    """Every reported-flushed batch survives with its offset; nothing foreign ever appears."""
    seed = 20240611
    rng = random.Random(seed)
    flushed_max = -1
    for round_ in range(20):
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(tmp_path), str(seed + round_), str(rng.choice([1, 3, 7]))],
            stdout=subprocess.PIPE, text=True, cwd=WRITER.parent)
        try:
            for _ in range(rng.randrange(1, 40)):
                line = proc.stdout.readline()
                assert line.startswith("flushed "), (round_, line)
                flushed_max = max(flushed_max, int(line.split()[1]))
            # let it run on a little (unflushed appends in flight) before the kill
            for _ in range(rng.randrange(0, 3)):
                line = proc.stdout.readline()
                flushed_max = max(flushed_max, int(line.split()[1]))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        log = Log.open(tmp_path, LogConfig.from_kafka(SMALL_SEGMENTS))
        records = read_everything(log)
        assert [o for o, _ in records] == list(range(log.log_end_offset)), f"seed={seed} round={round_}"
        assert all(v.startswith(f"v{o}.".encode()) or v == f"v{o}".encode() for o, v in records), (
            f"seed={seed} round={round_}")
        assert log.log_end_offset > flushed_max, (
            f"seed={seed} round={round_}: flushed {flushed_max}, log ends at {log.log_end_offset}")
        log.close()
