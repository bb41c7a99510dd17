"""What a client does about an error: one table shared by the producer and the consumer.

Rules. Every error a produce or fetch can meet, an error code in a response
or a failure of the request itself, maps to one `Action`:

* `RETRY`: send the same thing again after `retry_backoff_ms` (a replica
  was slow, the broker timed out waiting for acks).
* `REFRESH_METADATA`: our view of the cluster is stale (the leader moved,
  a connection to the broker was lost): refresh metadata, then retry.
* `FATAL`: retrying cannot help (a batch too large, a bad request, a
  version the broker lacks): the error goes to the caller or the delivery
  callback.

The table follows Kafka's clients (`Sender.canRetry` and the
`InvalidMetadataException` subclasses, `Fetcher.handleFetchResponse`):
codes Kafka marks `InvalidMetadataException` refresh metadata; other
retriable codes retry; the rest are fatal. Each side keeps only the cases
that are its own, decided before the table is asked: the producer splits a
MESSAGE_TOO_LARGE batch of several records, and takes
DUPLICATE_SEQUENCE_NUMBER as success; the consumer resets its position on
OFFSET_OUT_OF_RANGE. Group-coordinator errors belong to `_membership.py`.

Pure: no I/O, no state. `action_for(err)` is the only entry point.
"""

from __future__ import annotations

import enum

from minilog.errors import (
    BrokerUnavailableError,
    ClosedError,
    RequestTimeoutError,
)
from minilog.protocol import ErrorCode

__all__ = ["Action", "ACTIONS", "action_for"]


class Action(enum.Enum):
    RETRY = "retry"
    REFRESH_METADATA = "refresh metadata, then retry"
    FATAL = "fatal"


_R, _M, _F = Action.RETRY, Action.REFRESH_METADATA, Action.FATAL

ACTIONS: dict[int, Action] = {
    # Stale metadata: the partition moved or is not (yet) known where we asked.
    ErrorCode.NOT_LEADER_OR_FOLLOWER: _M,
    ErrorCode.LEADER_NOT_AVAILABLE: _M,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION: _M,
    ErrorCode.FENCED_LEADER_EPOCH: _M,
    ErrorCode.UNKNOWN_LEADER_EPOCH: _M,
    ErrorCode.REPLICA_NOT_AVAILABLE: _M,
    ErrorCode.KAFKA_STORAGE_ERROR: _M,       # the log dir failed: leadership will move
    ErrorCode.NETWORK_EXCEPTION: _M,
    # Transient: the same request may succeed on the same broker.
    ErrorCode.REQUEST_TIMED_OUT: _R,
    ErrorCode.NOT_ENOUGH_REPLICAS: _R,
    ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND: _R,
    ErrorCode.CORRUPT_MESSAGE: _R,            # Kafka: the bytes may have been damaged in transit
    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER: _R,
    ErrorCode.RESOURCE_LIMIT_EXCEEDED: _R,
    # Fatal for this request.
    ErrorCode.MESSAGE_TOO_LARGE: _F,
    ErrorCode.RECORD_LIST_TOO_LARGE: _F,
    ErrorCode.INVALID_TOPIC_EXCEPTION: _F,
    ErrorCode.INVALID_REQUIRED_ACKS: _F,
    ErrorCode.INVALID_REQUEST: _F,
    ErrorCode.INVALID_RECORD: _F,
    ErrorCode.INVALID_TIMESTAMP: _F,
    ErrorCode.INVALID_PRODUCER_EPOCH: _F,
    ErrorCode.UNKNOWN_PRODUCER_ID: _F,
    ErrorCode.UNSUPPORTED_VERSION: _F,
    ErrorCode.UNSUPPORTED_COMPRESSION_TYPE: _F,
    ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT: _F,
    ErrorCode.POLICY_VIOLATION: _F,
    ErrorCode.OFFSET_OUT_OF_RANGE: _F,        # the consumer handles it before asking
    ErrorCode.UNKNOWN_SERVER_ERROR: _F,
}


def action_for(err: BaseException) -> Action:
    """The action for `err`: a `BrokerError` by its code, else by the kind of failure.

    A lost connection or a request without an answer refreshes metadata (the
    broker may be gone and its partitions led elsewhere, as Kafka's
    NetworkClient does on disconnect). A closed client and anything unknown
    are fatal; an unknown code falls back to the broker's `retriable` flag.
    """
    code = getattr(err, "code", None)
    if code is not None:
        action = ACTIONS.get(code)
        if action is not None:
            return action
        return _R if getattr(err, "retriable", False) else _F
    if isinstance(err, (BrokerUnavailableError, RequestTimeoutError)):
        return _M
    if isinstance(err, ClosedError):
        return _F
    return _F
