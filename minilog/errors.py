"""The client's error hierarchy.

Rules:

* `MinilogError` is the base of everything the client raises on purpose.
* Local errors (`ConfigError`, `ClosedError`) are about this process: a bad
  option, a closed client.
* Connection errors (`BrokerUnavailableError`, `RequestTimeoutError`,
  `UnsupportedVersionError`) are about reaching a broker.
* Remote errors are `BrokerError(code, message)`: the broker answered with a
  Kafka error code. `error_for_code` picks the subclass for a code;
  `.retriable` says whether retrying the same request may succeed (Kafka's
  flag, from `minilog.protocol.is_retriable`).

Names follow Kafka's exceptions (`UnknownTopicOrPartitionError`,
`RecordTooLargeError`, ...), and `KafkaTimeoutError` is an alias of
`RequestTimeoutError`, so kafka-python users recognise them.
"""

from __future__ import annotations

from minilog.protocol import ErrorCode, error_message, is_retriable

__all__ = [
    "MinilogError",
    "ConfigError",
    "ClosedError",
    "BrokerUnavailableError",
    "RequestTimeoutError",
    "KafkaTimeoutError",
    "UnsupportedVersionError",
    "BrokerError",
    "UnknownServerError",
    "UnknownTopicOrPartitionError",
    "UnknownPartitionError",
    "TopicAlreadyExistsError",
    "RecordTooLargeError",
    "CorruptRecordError",
    "NotEnoughReplicasError",
    "OffsetOutOfRangeError",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidReplicationFactorError",
    "InvalidTopicError",
    "InvalidRequestError",
    "NotLeaderError",
    "LeaderNotAvailableError",
    "NotCoordinatorError",
    "CoordinatorNotAvailableError",
    "GroupIdNotFoundError",
    "NonEmptyGroupError",
    "FencedMemberEpochError",
    "StaleMemberEpochError",
    "UnknownMemberIdError",
    "OutOfOrderSequenceError",
    "DuplicateSequenceError",
    "InvalidProducerEpochError",
    "UnknownProducerIdError",
    "PolicyViolationError",
    "ResourceLimitExceededError",
    "error_for_code",
]


class MinilogError(Exception):
    """Base of every error the minilog client raises on purpose."""


class ConfigError(MinilogError, ValueError):
    """A client option is invalid. `.option` names it."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


class ClosedError(MinilogError):
    """The client was closed; it accepts no more calls."""


class BrokerUnavailableError(MinilogError):
    """No broker could be reached, or the connection dropped mid-request."""

    retriable = True


class RequestTimeoutError(MinilogError, TimeoutError):
    """A request (or a wait the caller bounded) did not finish in time."""

    retriable = True


KafkaTimeoutError = RequestTimeoutError


class UnsupportedVersionError(MinilogError):
    """The broker does not speak an API (or version) this client needs."""

    retriable = False


class BrokerError(MinilogError):
    """The broker answered with an error code.

    Attributes:
        code: the `ErrorCode` (or the raw int for a code this build lacks).
        message: the broker's message, or the code's default text.
        retriable: whether retrying the same request may succeed.
    """

    default_code: int = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(self, code: int | None = None, message: str | None = None) -> None:
        if code is None:
            code = self.default_code
        try:
            known = ErrorCode(code)
        except ValueError:
            name = f"ERROR_{code}"
        else:
            code, name = known, known.name
        self.code = code
        self.message = message or error_message(code)
        self.retriable = is_retriable(code)
        super().__init__(f"[{name}] {self.message}")

    def __reduce__(self):
        return (type(self), (int(self.code), self.message))


def _subclass(name: str, code: ErrorCode, doc: str) -> type[BrokerError]:
    cls = type(name, (BrokerError,), {"default_code": code, "__doc__": doc})
    cls.__module__ = __name__
    return cls


UnknownServerError = _subclass("UnknownServerError", ErrorCode.UNKNOWN_SERVER_ERROR,
                               "Unexpected error on the broker.")


class UnknownTopicOrPartitionError(BrokerError):   # a class statement: UnknownPartitionError derives from it
    """The topic or partition does not exist."""

    default_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


TopicAlreadyExistsError = _subclass("TopicAlreadyExistsError", ErrorCode.TOPIC_ALREADY_EXISTS,
                                    "A topic of that name already exists.")
RecordTooLargeError = _subclass("RecordTooLargeError", ErrorCode.MESSAGE_TOO_LARGE,
                                "A record batch exceeds max.message.bytes (MESSAGE_TOO_LARGE).")
CorruptRecordError = _subclass("CorruptRecordError", ErrorCode.CORRUPT_MESSAGE,
                               "A record batch failed its CRC or format check.")
NotEnoughReplicasError = _subclass("NotEnoughReplicasError", ErrorCode.NOT_ENOUGH_REPLICAS,
                                   "Fewer in-sync replicas than min.insync.replicas.")
OffsetOutOfRangeError = _subclass("OffsetOutOfRangeError", ErrorCode.OFFSET_OUT_OF_RANGE,
                                  "The offset is outside the partition's log.")
InvalidConfigError = _subclass("InvalidConfigError", ErrorCode.INVALID_CONFIG,
                               "A topic or broker config key or value is invalid.")
InvalidPartitionsError = _subclass("InvalidPartitionsError", ErrorCode.INVALID_PARTITIONS,
                                   "Invalid partition count.")
InvalidReplicationFactorError = _subclass(
    "InvalidReplicationFactorError", ErrorCode.INVALID_REPLICATION_FACTOR,
    "Invalid replication factor.")
InvalidTopicError = _subclass("InvalidTopicError", ErrorCode.INVALID_TOPIC_EXCEPTION,
                              "Invalid topic name.")
InvalidRequestError = _subclass("InvalidRequestError", ErrorCode.INVALID_REQUEST,
                                "The broker could not parse the request.")
NotLeaderError = _subclass("NotLeaderError", ErrorCode.NOT_LEADER_OR_FOLLOWER,
                           "This broker is not the partition's leader.")
LeaderNotAvailableError = _subclass("LeaderNotAvailableError", ErrorCode.LEADER_NOT_AVAILABLE,
                                    "The partition has no leader right now.")
NotCoordinatorError = _subclass("NotCoordinatorError", ErrorCode.NOT_COORDINATOR,
                                "This broker is not the group's coordinator.")
CoordinatorNotAvailableError = _subclass(
    "CoordinatorNotAvailableError", ErrorCode.COORDINATOR_NOT_AVAILABLE,
    "The group coordinator is not available.")
GroupIdNotFoundError = _subclass("GroupIdNotFoundError", ErrorCode.GROUP_ID_NOT_FOUND,
                                 "The group does not exist.")
NonEmptyGroupError = _subclass("NonEmptyGroupError", ErrorCode.NON_EMPTY_GROUP,
                               "The group still has active members.")
FencedMemberEpochError = _subclass("FencedMemberEpochError", ErrorCode.FENCED_MEMBER_EPOCH,
                                   "The member epoch is fenced; rejoin the group.")
StaleMemberEpochError = _subclass("StaleMemberEpochError", ErrorCode.STALE_MEMBER_EPOCH,
                                  "The member epoch is stale.")
UnknownMemberIdError = _subclass("UnknownMemberIdError", ErrorCode.UNKNOWN_MEMBER_ID,
                                 "The coordinator does not know this member id.")
OutOfOrderSequenceError = _subclass("OutOfOrderSequenceError",
                                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                    "The broker saw a gap in the producer's sequence numbers.")
DuplicateSequenceError = _subclass("DuplicateSequenceError", ErrorCode.DUPLICATE_SEQUENCE_NUMBER,
                                   "The broker already has this batch (idempotent duplicate).")
InvalidProducerEpochError = _subclass("InvalidProducerEpochError",
                                      ErrorCode.INVALID_PRODUCER_EPOCH,
                                      "The producer epoch is fenced.")
UnknownProducerIdError = _subclass("UnknownProducerIdError", ErrorCode.UNKNOWN_PRODUCER_ID,
                                   "The broker does not know this producer id.")
PolicyViolationError = _subclass("PolicyViolationError", ErrorCode.POLICY_VIOLATION,
                                 "The request violates a broker policy.")
ResourceLimitExceededError = _subclass("ResourceLimitExceededError",
                                       ErrorCode.RESOURCE_LIMIT_EXCEEDED,
                                       "A broker resource limit was reached.")

_BY_CODE: dict[int, type[BrokerError]] = {}
for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, BrokerError) and _cls is not BrokerError:
        _BY_CODE[int(_cls.default_code)] = _cls
_BY_CODE[int(ErrorCode.RECORD_LIST_TOO_LARGE)] = RecordTooLargeError
_BY_CODE[int(ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND)] = NotEnoughReplicasError
_BY_CODE[int(ErrorCode.INVALID_RECORD)] = CorruptRecordError


# Defined after _BY_CODE: a broker's UNKNOWN_TOPIC_OR_PARTITION stays
# UnknownTopicOrPartitionError (retriable); this one is raised client-side only.
class UnknownPartitionError(UnknownTopicOrPartitionError, ValueError):
    """A partition number outside the topic's range, caught on the client.

    Not retriable: the same request names the same missing partition. Also a
    ValueError, so code catching ValueError for a bad partition still works.
    """

    def __init__(self, code: int | None = None, message: str | None = None) -> None:
        super().__init__(code, message)
        self.retriable = False


def error_for_code(code: int, message: str | None = None) -> BrokerError:
    """Return (not raise) the `BrokerError` subclass instance for `code`.

    Unknown codes give a plain `BrokerError` that still carries the code.
    """
    assert code != ErrorCode.NONE, "error_for_code(NONE) is a bug"
    cls = _BY_CODE.get(int(code), BrokerError)
    return cls(code, message)
