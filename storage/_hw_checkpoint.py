"""The high-watermark checkpoint of a data dir (Kafka's replication-offset-checkpoint).

A replica that restarts must not expose records above the last high
watermark it knew: those may never have been committed, and a consumer
that read them could see them vanish when the replica truncates to its
new leader. The broker writes every partition's HW here periodically and
on shutdown; at start a replicated partition's HW is min(checkpointed HW,
log end), 0 when the partition is not listed.

File `<data-dir>/replication-offset-checkpoint`, text, Kafka's format::

    0                          version
    <count>                    number of entries
    <topic> <partition> <hw>   one line per partition

Written atomically (temp, fsync, rename, fsync dir). Topic names never
hold spaces (Kafka's legal characters), so a line splits on its last two.

Error handling: a malformed file loads as empty (every HW then starts at 0
and is re-learnt from the leader: safe, only slower to expose); write
errors propagate as OSError to the caller, who logs and retries later.
Task safety: pure functions; the caller serialises writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from ._checkpoint import atomic_write
from ._fs import OS_FS, FileSystem, read_file

__all__ = ["HW_CHECKPOINT", "read_hw_checkpoint", "write_hw_checkpoint"]

HW_CHECKPOINT = "replication-offset-checkpoint"
_SIZE_MAX = 64 << 20
_log = logging.getLogger("minilog.storage")


def read_hw_checkpoint(data_dir: str, *, fs: FileSystem = OS_FS) -> dict[tuple[str, int], int]:
    """(topic, partition) -> HW from the data dir's checkpoint; {} when absent or malformed."""
    path = os.path.join(data_dir, HW_CHECKPOINT)
    try:
        lines = read_file(fs, path, _SIZE_MAX).decode("utf-8").split("\n")
        if lines[0] != "0":
            raise ValueError("unknown version")
        count = int(lines[1])
        out = {}
        for line in lines[2:2 + count]:
            topic, partition, hw = line.rsplit(" ", 2)
            if int(partition) < 0 or int(hw) < 0:
                raise ValueError(f"negative value in {line!r}")
            out[(topic, int(partition))] = int(hw)
        if len(out) != count:
            raise ValueError(f"{len(out)} entries, header says {count}")
        return out
    except FileNotFoundError:
        return {}
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        _log.warning("%s is malformed (%s); high watermarks start at 0", path, e)
        return {}


def write_hw_checkpoint(data_dir: str, high_watermarks: Mapping[tuple[str, int], int], *,
                        fs: FileSystem = OS_FS) -> None:
    """Replace the checkpoint with `high_watermarks` (atomically, fsynced)."""
    lines = ["0", str(len(high_watermarks))]
    lines += [f"{topic} {p} {hw}" for (topic, p), hw in sorted(high_watermarks.items())]
    atomic_write(os.path.join(data_dir, HW_CHECKPOINT), ("\n".join(lines) + "\n").encode(), fs=fs)
