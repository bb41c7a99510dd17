"""Error mapping and client option validation (no broker needed)."""

from __future__ import annotations

import pickle

import pytest

import minilog
from minilog import errors
from minilog.client._config import ConsumerConfig, ProducerConfig, parse_bootstrap
from minilog.protocol import ErrorCode, is_retriable

CASES = [
    (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, errors.UnknownTopicOrPartitionError, True),
    (ErrorCode.TOPIC_ALREADY_EXISTS, errors.TopicAlreadyExistsError, False),
    (ErrorCode.MESSAGE_TOO_LARGE, errors.RecordTooLargeError, False),
    (ErrorCode.CORRUPT_MESSAGE, errors.CorruptRecordError, True),
    (ErrorCode.NOT_ENOUGH_REPLICAS, errors.NotEnoughReplicasError, True),
    (ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND, errors.NotEnoughReplicasError, True),
    (ErrorCode.OFFSET_OUT_OF_RANGE, errors.OffsetOutOfRangeError, False),
    (ErrorCode.INVALID_CONFIG, errors.InvalidConfigError, False),
    (ErrorCode.INVALID_PARTITIONS, errors.InvalidPartitionsError, False),
    (ErrorCode.INVALID_REPLICATION_FACTOR, errors.InvalidReplicationFactorError, False),
    (ErrorCode.NOT_LEADER_OR_FOLLOWER, errors.NotLeaderError, True),
    (ErrorCode.GROUP_ID_NOT_FOUND, errors.GroupIdNotFoundError, False),
    (ErrorCode.NON_EMPTY_GROUP, errors.NonEmptyGroupError, False),
    (ErrorCode.FENCED_MEMBER_EPOCH, errors.FencedMemberEpochError, False),
    (ErrorCode.UNKNOWN_MEMBER_ID, errors.UnknownMemberIdError, False),
    (ErrorCode.UNKNOWN_SERVER_ERROR, errors.UnknownServerError, False),
]


@pytest.mark.parametrize("code, cls, retriable", CASES)
def test_error_for_code_picks_the_subclass(code, cls, retriable):
    """Each common Kafka code maps to its named BrokerError subclass with Kafka's retriable flag."""
    err = errors.error_for_code(code, "details")
    assert type(err) is cls
    assert isinstance(err, errors.BrokerError) and isinstance(err, minilog.errors.MinilogError)
    assert err.code == code and err.retriable is retriable == is_retriable(code)
    assert err.message == "details" and code.name in str(err)


def test_every_error_code_maps_to_a_broker_error():
    """No code crashes the mapping; unknown numbers keep their code."""
    for code in ErrorCode:
        if code != ErrorCode.NONE:
            assert errors.error_for_code(code).code == code
    err = errors.error_for_code(12345)
    assert type(err) is errors.BrokerError and err.code == 12345 and not err.retriable


def test_broker_errors_pickle_and_default_messages():
    """Errors cross process boundaries (pickle) and have a default message."""
    err = errors.error_for_code(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is type(err) and again.code == err.code and again.message == err.message
    assert "unknown topic" in errors.UnknownTopicOrPartitionError().message


def test_timeout_aliases_and_local_errors():
    """KafkaTimeoutError is RequestTimeoutError; ConfigError names its option."""
    assert errors.KafkaTimeoutError is errors.RequestTimeoutError
    assert issubclass(errors.RequestTimeoutError, TimeoutError)
    e = errors.ConfigError("acks", "bad")
    assert e.option == "acks" and isinstance(e, ValueError)


@pytest.mark.parametrize("kwargs, option", [
    (dict(acks=2), "acks"),
    (dict(acks="some"), "acks"),
    (dict(linger_ms=-1), "linger_ms"),
    (dict(linger_ms=1.5), "linger_ms"),
    (dict(batch_size=0), "batch_size"),
    (dict(compression_type="brotli"), "compression_type"),
    (dict(max_in_flight=0), "max_in_flight"),
    (dict(retries=-1), "retries"),
    (dict(enable_idempotence="yes"), "enable_idempotence"),
    (dict(enable_idempotence=True, acks=1), "acks"),
    (dict(enable_idempotence=True, acks="all", max_in_flight=6), "max_in_flight"),
    (dict(buffer_memory=10), "buffer_memory"),
    (dict(lingerms=5), "lingerms"),
    (dict(client_id=7), "client_id"),
])
def test_bad_producer_options_raise_config_error_naming_them(kwargs, option):
    """Option mistakes fail at construction, before any connection, naming the option."""
    with pytest.raises(errors.ConfigError) as info:
        minilog.Producer("127.0.0.1:1", **kwargs)
    assert info.value.option == option


@pytest.mark.parametrize("kwargs, option", [
    (dict(auto_offset_reset="smallest"), "auto_offset_reset"),
    (dict(max_poll_records=0), "max_poll_records"),
    (dict(fetch_max_wait_ms=40000), "request_timeout_ms"),
    (dict(group_id=""), "group_id"),
    (dict(enable_auto_commit=1), "enable_auto_commit"),
    (dict(partition_assignment_strategy="magic"), "partition_assignment_strategy"),
])
def test_bad_consumer_options_raise_config_error(kwargs, option):
    with pytest.raises(errors.ConfigError) as info:
        minilog.Consumer("127.0.0.1:1", **kwargs)
    assert info.value.option == option


@pytest.mark.parametrize("servers", ["", "localhost", "host:port", "h:0", "h:70000", 42])
def test_bad_bootstrap_servers(servers):
    with pytest.raises(errors.ConfigError) as info:
        parse_bootstrap(servers)
    assert info.value.option == "bootstrap_servers"


def test_good_options_normalise():
    """acks="all" means -1; several bootstrap servers parse in order."""
    assert ProducerConfig.from_kwargs(acks="all").acks == -1
    assert ProducerConfig.from_kwargs(compression_type="zstd").codec == 4
    assert ConsumerConfig.from_kwargs(group_id="g").group_id == "g"
    assert parse_bootstrap("a:1, b:2") == [("a", 1), ("b", 2)]
    assert parse_bootstrap(["[::1]:9092"]) == [("::1", 9092)]


def test_unknown_partition_error_is_a_value_error_and_not_retriable():
    e = errors.UnknownPartitionError(message="partition 5 out of range: 't' has 1")
    assert isinstance(e, errors.UnknownTopicOrPartitionError) and isinstance(e, ValueError)
    assert e.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and e.retriable is False
    assert type(e).__module__ == "minilog.errors"
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is errors.UnknownPartitionError and e2.retriable is False
    # the broker's code still maps to the retriable base class
    assert type(errors.error_for_code(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)) \
        is errors.UnknownTopicOrPartitionError


def test_produce_to_out_of_range_partition_raises_unknown_partition_error():
    """Accumulator.append / append_many reject a partition the topic lacks."""
    from minilog.client._accumulator import Accumulator

    acc = Accumulator(batch_size=16384, linger_ms=0, buffer_memory=1 << 20)
    acc.num_partitions["t"] = 1
    for bad in (5, 1, -1):
        with pytest.raises(errors.UnknownPartitionError, match="out of range"):
            acc.append("t", b"x", partition=bad)
        with pytest.raises(errors.UnknownPartitionError, match="out of range"):
            acc.append_many("t", [b"x"], partition=bad)
    with pytest.raises(ValueError):       # existing `except ValueError` still catches it
        acc.append("t", b"x", partition=5)
    acc.append("t", b"x", partition=0)


def test_error_action_table_agrees_with_kafkas_retriable_flags():
    """Producer and consumer share one table: a retriable code is never fatal, a fatal one never
    retried; a lost connection refreshes metadata; a closed client is fatal."""
    from minilog.client._error_actions import ACTIONS, Action, action_for

    for code in ErrorCode:
        if code == ErrorCode.NONE:
            continue
        action = action_for(errors.error_for_code(code))
        assert (action is not Action.FATAL) == is_retriable(code), code
        if code in ACTIONS:
            assert ACTIONS[code] is action
    assert action_for(errors.error_for_code(ErrorCode.NOT_LEADER_OR_FOLLOWER)) is Action.REFRESH_METADATA
    assert action_for(errors.error_for_code(ErrorCode.NOT_ENOUGH_REPLICAS)) is Action.RETRY
    assert action_for(errors.BrokerUnavailableError("lost")) is Action.REFRESH_METADATA
    assert action_for(errors.RequestTimeoutError("slow")) is Action.REFRESH_METADATA
    assert action_for(errors.ClosedError("closed")) is Action.FATAL
