"""minilog's partition log on disk: segments, indexes, retention, recovery.

Installed as `minilog.storage`. Synchronous and trio-free; uses only
`minilog.protocol`'s batch header and record decoder.

Start with `Log(path, LogConfig.from_kafka({...}), clock=..., fs=...)`
(`Log.open` is the same); the module docstring of `_log.py` maps the
modules, docs/on-disk-format.md describes the files.
"""

from ._checkpoint import atomic_write, fsync_dir
from ._cleaner import Cleaner, CleanerAborted, CleanerSettings, CleanResult, Throttler, cleanable_of
from ._cleaner_files import CleanedSegment, discard_cleaned
from ._cleaner_policy import Cleanable, clean_reason, pick_log
from ._cleaner_records import keyless_records
from ._cleaner_swap import LogSnapshot, replace_segment, snapshot_log
from ._config import (
    LOG_CONFIG_KEYS,
    LONG_MAX,
    ConfigKey,
    GiB,
    KiB,
    LogConfig,
    MiB,
    at_least,
    between,
    one_of,
    parse_config,
)
from ._epoch_cache import UNDEFINED_EPOCH, EpochEntry, LeaderEpochCache
from ._hw_checkpoint import HW_CHECKPOINT, read_hw_checkpoint, write_hw_checkpoint
from ._errors import (
    ConfigError,
    CorruptLogError,
    CorruptRecord,
    CorruptRecordError,
    DiskFullError,
    InvalidOffset,
    InvalidOffsetError,
    InvalidProducerEpochError,
    LogCorrupted,
    LogCorruptedError,
    OffsetOutOfRange,
    OffsetOutOfRangeError,
    OutOfOrderSequenceError,
    RecordTooLarge,
    RecordTooLargeError,
    StaleLeaderEpoch,
    StaleLeaderEpochError,
    StorageError,
)
from ._fs import OS_FS, FileSystem, OsFileSystem
from ._simfs import FaultRule, SimulatedFileSystem
from ._index import OffsetIndex, OffsetPosition, TimeIndex, TimestampOffset
from ._log import Log
from ._producer_state import BatchMetadata, ProducerEntry, ProducerStateManager
from ._recovery import BATCH_CASES, SEGMENT_CASES, RecoveryReport
from ._types import AppendInfo, LogStatistics
from ._retention import Deletion, SegmentInfo, segments_to_delete, should_roll
from ._segment import (
    parse_partition_dir_name,
    parse_segment_file_name,
    partition_dir_name,
    segment_file_name,
)

__all__ = [
    "Cleaner",
    "CleanerAborted",
    "CleanerSettings",
    "CleanResult",
    "Throttler",
    "cleanable_of",
    "CleanedSegment",
    "discard_cleaned",
    "Cleanable",
    "clean_reason",
    "pick_log",
    "keyless_records",
    "LogSnapshot",
    "replace_segment",
    "snapshot_log",
    "Log",
    "LogConfig",
    "AppendInfo",
    "LogStatistics",
    "RecoveryReport",
    "Deletion",
    "SegmentInfo",
    "segments_to_delete",
    "should_roll",
    "ConfigKey",
    "parse_config",
    "LOG_CONFIG_KEYS",
    "at_least",
    "between",
    "one_of",
    "KiB",
    "MiB",
    "GiB",
    "LONG_MAX",
    "LeaderEpochCache",
    "EpochEntry",
    "UNDEFINED_EPOCH",
    "HW_CHECKPOINT",
    "read_hw_checkpoint",
    "write_hw_checkpoint",
    "OffsetIndex",
    "TimeIndex",
    "OffsetPosition",
    "TimestampOffset",
    "SEGMENT_CASES",
    "BATCH_CASES",
    "partition_dir_name",
    "parse_partition_dir_name",
    "segment_file_name",
    "parse_segment_file_name",
    "atomic_write",
    "fsync_dir",
    "StorageError",
    "ConfigError",
    "OffsetOutOfRangeError",
    "InvalidOffsetError",
    "StaleLeaderEpochError",
    "RecordTooLargeError",
    "CorruptRecordError",
    "CorruptLogError",
    "LogCorruptedError",
    "DiskFullError",
    "OutOfOrderSequenceError",
    "InvalidProducerEpochError",
    "ProducerStateManager",
    "ProducerEntry",
    "BatchMetadata",
    # old names, aliases of the ...Error classes while the broker moves over
    "OffsetOutOfRange",
    "InvalidOffset",
    "StaleLeaderEpoch",
    "RecordTooLarge",
    "CorruptRecord",
    "LogCorrupted",
    "FileSystem",
    "OsFileSystem",
    "OS_FS",
    "SimulatedFileSystem",
    "FaultRule",
]
