"""Subprocess helper for the kill tests, and shared batch helpers for storage tests.

As a script: `python storage_writer.py DIR SEED [FLUSH_EVERY]` opens the log
in DIR and appends forever. Batch contents are a pure function of the
offsets they get (record i of the batch at base offset o has value
b"v<o+i>"), so a test can check every byte that survives a crash. After each
`log.flush()` returns it prints `flushed <last offset>` and flushes stdout:
that offset is durable. The test SIGKILLs the process at random moments.

As a module: `batch_for(offset, ...)`, `records_of(data)`.
"""

from __future__ import annotations

import random
import sys

from minilog.protocol import build_batch, iter_batches, read_batch_records

SMALL_SEGMENTS = {"segment.bytes": 4096, "index.interval.bytes": 256}


def record_count_for(offset: int) -> int:
    return 1 + offset % 3


def batch_for(offset: int, count: int | None = None, *, timestamp: int = 1_000, pad: int = 0) -> bytes:
    """The batch whose records are b"v<offset+i>" (padded), as the writer appends it."""
    count = record_count_for(offset) if count is None else count
    values = [f"v{offset + i}".encode() + b"." * pad for i in range(count)]
    return build_batch(values, timestamps=timestamp)


def records_of(data: bytes) -> list[tuple[int, bytes]]:
    """(offset, value) of every record in whole batches `data` (CRC checked)."""
    out = []
    for _, view in iter_batches(data):
        out.extend((r.offset, r.value) for r in read_batch_records(bytes(view)))
    return out


def main(argv: list[str]) -> None:
    from minilog.storage import Log, LogConfig

    path, seed = argv[0], int(argv[1])
    flush_every = int(argv[2]) if len(argv) > 2 else 3
    rng = random.Random(seed)
    log = Log.open(path, LogConfig.from_kafka(SMALL_SEGMENTS))
    appended = 0
    while True:
        offset = log.log_end_offset
        log.append(batch_for(offset, pad=rng.randrange(0, 200)))
        appended += 1
        if appended % flush_every == 0:
            log.flush()
            sys.stdout.write(f"flushed {log.log_end_offset - 1}\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
