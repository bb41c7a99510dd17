"""LogConfig and the generic Kafka-keyed config table."""

from __future__ import annotations

import pytest

from minilog.storage import (
    LOG_CONFIG_KEYS,
    ConfigError,
    ConfigKey,
    LogConfig,
    at_least,
    parse_config,
)


def test_defaults_are_kafkas():
    """Defaults match Kafka's topic config defaults."""
    c = LogConfig()
    assert c.segment_bytes == 1 << 30
    assert c.segment_ms == c.retention_ms == 7 * 24 * 3600 * 1000
    assert c.retention_bytes == -1
    assert c.index_interval_bytes == 4096
    assert c.segment_index_bytes == 10 << 20
    assert c.max_message_bytes == 1048588
    assert c.flush_messages == c.flush_ms == 2**63 - 1
    assert c.cleanup_policy == "delete" and c.message_timestamp_type == "CreateTime"
    assert LogConfig.from_kafka({}) == c


def test_from_kafka_parses_strings_and_ignores_other_layers():
    """CLI-style string values parse; keys of other layers are ignored unless strict."""
    c = LogConfig.from_kafka({"segment.bytes": "4096", "retention.ms": "-1",
                              "min.insync.replicas": "2", "message.timestamp.type": "LogAppendTime"})
    assert c.segment_bytes == 4096 and c.retention_ms == -1
    assert c.message_timestamp_type == "LogAppendTime"
    with pytest.raises(ConfigError) as e:
        LogConfig.from_kafka({"min.insync.replicas": "2"}, strict=True)
    assert e.value.key == "min.insync.replicas"
    assert LogConfig.from_kafka(c.to_kafka()) == c


@pytest.mark.parametrize("key, value", [
    ("segment.bytes", "big"),
    ("segment.bytes", 10),
    ("segment.ms", 0),
    ("retention.ms", -2),
    ("retention.bytes", -7),
    ("index.interval.bytes", -1),
    ("max.message.bytes", True),
    ("flush.messages", 0),
    ("cleanup.policy", "shred"),
    ("cleanup.policy", "compact,compact"),
    ("min.cleanable.dirty.ratio", "1.5"),
    ("delete.retention.ms", -1),
    ("message.timestamp.type", "WallTime"),
    ("segment.index.bytes", 4),
])
def test_bad_values_name_the_key(key, value):
    """Every bad value raises ConfigError whose message and .key name the key."""
    with pytest.raises(ConfigError) as e:
        LogConfig.from_kafka({key: value})
    assert e.value.key == key and key in str(e.value)


@pytest.mark.parametrize("policy, compact, delete", [
    ("delete", False, True), ("compact", True, False), ("compact,delete", True, True),
    ("delete,compact", True, True)])
def test_cleanup_policies(policy, compact, delete):
    """cleanup.policy takes Kafka's delete, compact and both (issue 12)."""
    config = LogConfig.from_kafka({"cleanup.policy": policy, "min.cleanable.dirty.ratio": "0.25"})
    assert (config.compact, config.delete, config.min_cleanable_dirty_ratio) == (compact, delete, 0.25)


def test_direct_construction_is_validated():
    """LogConfig(...) runs the same validators as from_kafka."""
    with pytest.raises(ConfigError) as e:
        LogConfig(retention_bytes=-5)
    assert e.value.key == "retention.bytes"


def test_parse_config_is_generic():
    """The broker can describe its own keys with ConfigKey rows."""
    table = (
        ConfigKey("min.insync.replicas", "min_insync_replicas", int, 1, at_least(1), "", "acks=all floor"),
        ConfigKey("unclean.leader.election.enable", "unclean", bool, False),
        ConfigKey("compression.type", "compression_type", str, "producer"),
    )
    assert parse_config(table, {"min.insync.replicas": "2", "unclean.leader.election.enable": "true"}) == {
        "min_insync_replicas": 2, "unclean": True, "compression_type": "producer"}
    with pytest.raises(ConfigError) as e:
        parse_config(table, {"min.insync.replicas": 0})
    assert e.value.key == "min.insync.replicas"
    with pytest.raises(ConfigError) as e:
        parse_config(table, {"nope": 1})
    assert e.value.key == "nope"


def test_every_row_has_unit_or_enum_and_doc():
    """The table documents itself: every row has a doc string."""
    for key in LOG_CONFIG_KEYS:
        assert key.doc, key.name
        assert key.unit or key.type is str, key.name
