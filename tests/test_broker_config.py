"""The broker's config tables: parsing, topic defaults from log.* keys, and the
docs generated from the tables staying in sync."""

from __future__ import annotations

import pathlib
import re
import signal
import tomllib

import pytest

from conftest import BrokerProcess

from minilog.broker.config import (
    BROKER_CONFIG_KEYS,
    TOPIC_CONFIG_KEYS,
    BrokerConfig,
    ConfigError,
    config_markdown,
    normalize_topic_overrides,
)

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
DOC = DOCS / "configuration.md"
_TOML_BLOCK = re.compile(r"^```toml[ \t]*\n(.*?)^```", re.M | re.S)


def _toml_blocks():
    """(id "file.md:line", text) of every ```toml block in docs/*.md."""
    out = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        for m in _TOML_BLOCK.finditer(text):
            out.append(pytest.param(m.group(1), id=f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}"))
    return out


def test_defaults_and_access_by_attribute_and_key():
    c = BrokerConfig.from_sources({})
    assert c.num_partitions == c["num.partitions"] == 1
    assert c.offsets_topic_num_partitions == 50 and c.offsets_retention_minutes == 10080
    assert c.log_retention_check_interval_ms == 300_000 and c.connections_max_idle_ms == 600_000
    assert c.auto_create_topics_enable is True and c.is_default("num.partitions")
    with pytest.raises(AttributeError):
        c.num_partitions = 3


def test_later_sources_win_and_strings_parse():
    c = BrokerConfig.from_sources({"num.partitions": 2, "log.roll.ms": 1000},
                                  {"num.partitions": "4", "auto.create.topics.enable": "false"})
    assert c.num_partitions == 4 and c.auto_create_topics_enable is False
    assert c["log.segment.ms"] == 1000 and not c.is_default("num.partitions")


@pytest.mark.parametrize("mapping, key", [
    ({"nope": 1}, "nope"),
    ({"num.partitions": "many"}, "num.partitions"),
    ({"log.retention.ms": -5}, "log.retention.ms"),
    ({"auto.create.topics.enable": "yes"}, "auto.create.topics.enable"),
    ({"compression.type": "brotli"}, "compression.type"),
    ({"default.replication.factor": 33}, "default.replication.factor"),
])
def test_bad_broker_settings_name_the_key(mapping, key):
    with pytest.raises(ConfigError) as info:
        BrokerConfig.from_sources(mapping)
    assert info.value.key == key and key in str(info.value)


def test_topic_config_takes_broker_defaults_and_overrides():
    c = BrokerConfig.from_sources({"log.retention.ms": 1000, "message.max.bytes": 5000})
    eff = c.topic_config({})
    assert eff["retention.ms"] == 1000 and eff["max.message.bytes"] == 5000
    eff = c.topic_config(normalize_topic_overrides({"retention.ms": "2000", "min.insync.replicas": 2}))
    assert eff["retention.ms"] == 2000 and eff["min.insync.replicas"] == 2
    assert c.log_config({}).retention_ms == 1000
    with pytest.raises(ConfigError):
        normalize_topic_overrides({"retention.ms": "forever"})
    with pytest.raises(ConfigError):
        normalize_topic_overrides({"log.retention.ms": "1"})     # a broker key, not a topic key


def test_docs_tables_are_generated_from_the_config_tables():
    """docs/configuration.md holds exactly the generated tables (python -m minilog.broker.config)."""
    text = DOC.read_text()
    assert config_markdown(BROKER_CONFIG_KEYS) in text
    assert config_markdown(TOPIC_CONFIG_KEYS) in text


async def test_broker_statistics(inproc_broker):
    stats = inproc_broker.statistics()
    assert stats.broker_id == 0 and stats.partitions >= 0 and stats.connections == 0


def _mutations(value, path=()):
    """Yield (path, broken payload) variants: each field dropped or given a wrong type."""
    if isinstance(value, dict):
        for name in value:
            dropped = dict(value)
            del dropped[name]
            yield path + (name, "drop"), dropped
            for p, sub in _mutations(value[name], path + (name,)):
                yield p, {**value, name: sub}
            yield path + (name, "type"), {**value, name: object()}
    elif isinstance(value, list) and value:
        for p, sub in _mutations(value[0], path + (0,)):
            yield p, [sub, *value[1:]]


def test_native_decoder_agrees_with_protocol_check():
    """The native codec's compiled decoders accept and refuse exactly what protocol.check does,
    on every API's request and on mutations of it (a dropped field, a wrong type)."""
    from minilog.protocol import OPT, REQUEST_SCHEMAS, BadRequest, FrameError, check, decode_request

    def sample(spec):
        if isinstance(spec, OPT):
            return sample(spec.spec)
        if isinstance(spec, dict):
            return {k: sample(v) for k, v in spec.items()}
        if isinstance(spec, list):
            return [sample(spec[0])]
        return {int: 1, str: "s", bool: True, float: 1.5}.get(spec, None)

    for key, spec in REQUEST_SCHEMAS.items():
        good = sample(spec)
        for payload in [good, *(m for _, m in _mutations(good))]:
            try:
                check(spec, dict(payload))
                full = True
            except FrameError:
                full = False
            decoded = decode_request(key, 0, payload, [b"batch"])
            assert (type(decoded) is not BadRequest) == full, (key, payload, decoded)


def test_docs_have_toml_examples():
    assert _toml_blocks(), "no ```toml block found in docs/*.md (the regex or the docs changed)"


@pytest.mark.parametrize("block", _toml_blocks())
def test_docs_toml_examples_start_a_broker(block, tmp_path):
    """Every ```toml block in docs/ parses and `minilog serve --config` starts with it."""
    tomllib.loads(block)                       # a TOMLDecodeError names the line
    path = tmp_path / "example.toml"
    path.write_text(block)
    b = BrokerProcess(str(tmp_path / "data"), str(tmp_path / "broker.log"), ["--config", str(path)])
    try:
        b.start()                              # asserts the "listening on" line
        assert b.stop(signal.SIGTERM) == 0, b.logs()
    finally:
        b.kill()
