"""The protocol layer's one error hierarchy.

`ProtocolError` is the base. `CorruptBatchError` means the bytes of a record
batch are not a valid batch (bad length, magic, CRC, records, or a codec
failure); its subclass `InvalidRecordError`, raised by the produce-path
validator, means the CRC matched but the records contradict the header or
the format; `FrameError` means a wire frame or message body is malformed;
`LimitExceededError` means a declared size or count is above a limit.
Decoders raise only these; any other exception is a bug.
"""

from __future__ import annotations

__all__ = ["ProtocolError", "CorruptBatchError", "InvalidRecordError", "FrameError", "LimitExceededError"]


class ProtocolError(Exception):
    """Base class of every error raised while encoding or decoding."""


class CorruptBatchError(ProtocolError):
    """A record batch failed validation (size, magic, CRC, records, codec)."""


class InvalidRecordError(CorruptBatchError):
    """A batch whose framing and CRC are right but whose records are not what
    its header says, or not well-formed (Kafka's InvalidRecordException:
    INVALID_RECORD, where a `CorruptBatchError` is CORRUPT_MESSAGE)."""


class FrameError(ProtocolError):
    """A wire frame or request/response body is malformed."""


class LimitExceededError(FrameError, CorruptBatchError):
    """A declared size or count is above the configured limit."""
