"""The storage layer's one error hierarchy.

`StorageError` is the base of everything the partition log raises on
purpose. The contract: every public method of `Log` raises only
`StorageError` subclasses (an `OSError` from the file system is wrapped);
anything else is a bug in minilog.

    StorageError
    +-- ConfigError              a config key has a bad value (the message names the key)
    +-- OffsetOutOfRangeError    a read/lookup below log start or above log end
    +-- InvalidOffsetError       a follower batch that does not continue the log
    +-- StaleLeaderEpochError    an append with an epoch older than the log's latest
    +-- RecordTooLargeError      a batch above max.message.bytes (nothing written)
    +-- CorruptRecordError       a batch failing length/magic/CRC checks (nothing written)
    |   +-- CorruptLogError      a stored batch cannot be whole (its length runs past its
    |                            segment or the next index entry): reads there fail
    +-- OutOfOrderSequenceError  an idempotent batch does not continue its producer's sequence
    +-- InvalidProducerEpochError an idempotent batch carries an older producer epoch
    +-- LogCorruptedError        a half-finished operation poisoned this Log object;
        |                        every later call raises it until the log is reopened
        +-- DiskFullError        ... because the disk was full (ENOSPC): reads of what is
                                 stored keep working, and the next write reloads the log
                                 from disk and goes on once space is free (no restart)

Rejected input (`RecordTooLargeError`, `CorruptRecordError`,
`InvalidOffsetError`, `StaleLeaderEpochError`, `OffsetOutOfRangeError`)
changes nothing on disk and leaves the Log usable. `LogCorruptedError` is
sticky, like tidwall/wal's `corrupt` flag.

The names before the `...Error` convention (`OffsetOutOfRange`,
`InvalidOffset`, `StaleLeaderEpoch`, `RecordTooLarge`, `CorruptRecord`,
`LogCorrupted`) remain as aliases of the same classes while the broker
moves over; new code uses the `...Error` names.
"""

from __future__ import annotations

__all__ = [
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
    "OffsetOutOfRange",
    "InvalidOffset",
    "StaleLeaderEpoch",
    "RecordTooLarge",
    "CorruptRecord",
    "LogCorrupted",
]


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class ConfigError(StorageError, ValueError):
    """A configuration value is invalid. `key` names the offending key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class OffsetOutOfRangeError(StorageError):
    """The requested offset is below the log start or above the log end."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} is out of range [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class InvalidOffsetError(StorageError):
    """A batch appended with the leader's offsets does not continue the log."""


class StaleLeaderEpochError(StorageError):
    """An append carries a leader epoch older than the newest one in the log."""


class RecordTooLargeError(StorageError):
    """A batch is larger than max.message.bytes. Nothing was written."""


class CorruptRecordError(StorageError):
    """A batch failed validation (length, magic, CRC). Nothing was written."""


class CorruptLogError(CorruptRecordError):
    """Stored log data is unusable at `offset` (a damaged segment, found on read).

    The log stays usable: other offsets read and appends work. The broker
    answers CORRUPT_MESSAGE for the partition (it is a CorruptRecordError).
    """

    def __init__(self, message: str, *, path: str, position: int, offset: int) -> None:
        super().__init__(message)
        self.path = path
        self.position = position
        self.offset = offset


class OutOfOrderSequenceError(StorageError):
    """An idempotent batch's sequence does not continue its producer's. Nothing was written."""


class InvalidProducerEpochError(StorageError):
    """An idempotent batch's producer epoch is older than the producer's. Nothing was written."""


class LogCorruptedError(StorageError):
    """An operation failed half-way; this Log object refuses further calls."""


class DiskFullError(LogCorruptedError):
    """A write failed with ENOSPC ("no space left on device"); the message names the file.

    Reads of what is stored keep working. The next write first reloads the
    log from disk (cutting the partial write), and succeeds once space is
    free; `Log.recover_after_disk_full()` does the reload explicitly.
    """


# Old names, kept while minilog/broker still imports them (issue 7: remove after).
OffsetOutOfRange = OffsetOutOfRangeError
InvalidOffset = InvalidOffsetError
StaleLeaderEpoch = StaleLeaderEpochError
RecordTooLarge = RecordTooLargeError
CorruptRecord = CorruptRecordError
LogCorrupted = LogCorruptedError
