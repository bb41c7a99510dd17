"""CLI command logic against an in-memory fake of minilog.Admin / Producer / Consumer.

These pin what the commands do with the client's answers (table rendering,
delivery failures, stop conditions, commits, Ctrl-C) without a broker; the
same behaviour against the real broker is in test_cli_broker.py.
"""

from __future__ import annotations

import types

import pytest
from click.testing import CliRunner

import minilog
from minilog import errors
from minilog.cli import main
from minilog.cli._common import (
    EXIT_BROKER_UNAVAILABLE,
    EXIT_DELIVERY_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TOPIC_NOT_FOUND,
    EXIT_USAGE,
)


class World:
    """Topics as lists of partitions of (key, value) records, plus a call log."""

    def __init__(self) -> None:
        self.topics: dict[str, list[list[tuple[bytes | None, bytes]]]] = {}
        self.configs: dict[str, dict] = {}
        self.calls: list = []
        self.delivery_error: BaseException | None = None
        self.poll_interrupt_after: int | None = None
        self.committed: list = []


@pytest.fixture
def world(monkeypatch) -> World:
    w = World()

    class Admin:
        def __init__(self, bootstrap_servers, **kwargs):
            w.calls.append(("Admin", bootstrap_servers))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def close(self):
            pass

        def create_topic(self, name, partitions, replication_factor, config):
            if name in w.topics:
                raise errors.TopicAlreadyExistsError()
            w.topics[name] = [[] for _ in range(partitions or 1)]
            w.configs[name] = dict(config or {})

        def list_topics(self, internal=False):
            return list(w.topics)

        def describe_topic(self, name):
            if name not in w.topics:
                raise errors.UnknownTopicOrPartitionError(message=f"unknown topic {name}")
            parts = [types.SimpleNamespace(partition=i, leader=0, leader_epoch=0, replicas=[0],
                                           isr=[0], log_start_offset=0, log_end_offset=len(p),
                                           high_watermark=len(p), size_bytes=100 * len(p))
                     for i, p in enumerate(w.topics[name])]
            return types.SimpleNamespace(name=name, partitions=parts, config=w.configs.get(name, {}))

        def alter_configs(self, topic, changes):
            w.calls.append(("alter", topic, changes))

        def delete_topic(self, name):
            if w.topics.pop(name, None) is None:
                raise errors.UnknownTopicOrPartitionError()

    class Producer:
        def __init__(self, bootstrap_servers, **kwargs):
            w.calls.append(("Producer", bootstrap_servers, kwargs))
            self.pending = []

        def produce(self, topic, value, key=None, partition=None, headers=None,
                    timestamp_ms=None, on_delivery=None):
            self.pending.append((topic, value, key, partition, on_delivery))

        def partitions_for(self, topic):
            return list(range(len(w.topics.setdefault(topic, [[]]))))

        def flush(self, timeout=None):
            for topic, value, key, partition, cb in self.pending:
                if w.delivery_error is not None:
                    cb(w.delivery_error, None)
                    continue
                parts = w.topics.setdefault(topic, [[]])
                p = partition if partition is not None else (len(key or b"") % len(parts))
                parts[p].append((key, value))
                cb(None, types.SimpleNamespace(topic=topic, partition=p, offset=len(parts[p]) - 1))
            self.pending.clear()
            return 0

        def close(self, timeout=None):
            w.calls.append(("Producer.close",))

    class Consumer:
        def __init__(self, bootstrap_servers, group_id=None, **kwargs):
            w.calls.append(("Consumer", bootstrap_servers, group_id, kwargs))
            self.positions: dict = {}
            self.polls = 0

        def assign(self, partitions):
            w.calls.append(("assign", list(partitions)))
            for tp in partitions:
                self.positions[tp[:2]] = tp[2] if len(tp) > 2 else 0

        def beginning_offsets(self, partitions):
            return {tuple(tp[:2]): 0 for tp in partitions}

        def end_offsets(self, partitions):
            return {(t, p): len(w.topics[t][p]) for t, p, *_ in partitions}

        def seek_to_beginning(self, *partitions):
            for tp in self.positions:
                self.positions[tp] = 0

        def seek_to_end(self, *partitions):
            for (t, p) in self.positions:
                self.positions[(t, p)] = len(w.topics[t][p])

        def poll(self, timeout_ms=0, max_records=500):
            self.polls += 1
            if w.poll_interrupt_after is not None and self.polls > w.poll_interrupt_after:
                raise KeyboardInterrupt
            out = []
            for (t, p), pos in sorted(self.positions.items()):
                for offset in range(pos, len(w.topics[t][p])):
                    if len(out) == max_records:
                        break
                    key, value = w.topics[t][p][offset]
                    out.append(minilog.Record(t, p, offset, 1000, key, value, []))
                    self.positions[(t, p)] = offset + 1
            return out

        def commit(self):
            w.committed.append(dict(self.positions))

        def close(self):
            w.calls.append(("Consumer.close",))

    monkeypatch.setitem(vars(minilog), "Admin", Admin)
    monkeypatch.setitem(vars(minilog), "Producer", Producer)
    monkeypatch.setitem(vars(minilog), "Consumer", Consumer)
    return w


def run(*args, input=None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_default_bootstrap_server_is_localhost_9092(world):
    assert run("topics", "list").exit_code == 0
    assert ("Admin", "localhost:9092") in world.calls


def test_describe_renders_one_row_per_partition_and_configs(world):
    world.topics["t"] = [[(None, b"x")], [], [(None, b"a"), (None, b"b")]]
    world.configs["t"] = {"retention.ms": "1000", "cleanup.policy": "delete"}
    out = run("topics", "describe", "t").stdout
    assert "Topic: t  PartitionCount: 3  ReplicationFactor: 1" in out
    assert [line.split()[:8] for line in out.splitlines() if line.strip()[:1].isdigit()] == [
        ["0", "0", "0", "0", "0", "0", "1", "1"],
        ["1", "0", "0", "0", "0", "0", "0", "0"],
        ["2", "0", "0", "0", "0", "0", "2", "2"],
    ]
    assert "retention.ms" in out and "cleanup.policy" in out


def test_alter_sends_sets_and_resets_together(world):
    world.topics["t"] = [[]]
    result = run("topics", "alter", "t", "--config", "retention.ms=5", "--delete-config", "segment.bytes")
    assert result.exit_code == 0
    assert ("alter", "t", {"retention.ms": "5", "segment.bytes": None}) in world.calls


def test_produce_splits_at_first_separator_and_strips_crlf(world):
    world.topics["t"] = [[], [], []]
    result = run("produce", "t", "--key-separator", "::", input="a::1::x\r\nbb::2\n::3\n")
    assert result.exit_code == 0 and result.output == ""
    records = sorted(r for p in world.topics["t"] for r in p)
    assert records == [(b"", b"3"), (b"a", b"1::x"), (b"bb", b"2")]


def test_produce_line_without_separator_is_a_usage_error_after_sending_earlier_lines(world):
    world.topics["t"] = [[]]
    result = run("produce", "t", "--key-separator", ":", input="k:v\nnokey\nk:w\n")
    assert result.exit_code == EXIT_USAGE
    assert "line 2" in result.stderr
    assert world.topics["t"][0] == [(b"k", b"v")]


def test_produce_passes_acks_and_compression(world):
    assert run("produce", "t", "--value", "v", "--acks", "all", "--compression", "lz4").exit_code == 0
    kwargs = next(c[2] for c in world.calls if c[0] == "Producer")
    assert kwargs["acks"] == "all" and kwargs["compression_type"] == "lz4"
    assert ("Producer.close",) in world.calls


def test_produce_failed_deliveries_exit_with_the_errors_code(world):
    world.delivery_error = errors.UnknownTopicOrPartitionError()
    result = run("produce", "t", input="a\nb\n")
    assert result.exit_code == EXIT_TOPIC_NOT_FOUND
    assert result.stderr.count("\n") == 1 and "2 of 2 records not delivered" in result.stderr


def test_produce_generic_delivery_failure(world):
    world.delivery_error = errors.RecordTooLargeError()
    result = run("produce", "t", "--value", "v")
    assert result.exit_code == EXIT_DELIVERY_FAILED


def test_consume_from_beginning_max_messages_and_format(world):
    world.topics["t"] = [[(b"k", b"v0"), (b"k", b"v1")], [(None, b"\xffz")]]
    out = run("consume", "t", "--from-beginning", "--max-messages", "3",
              "--format", "{partition}:{offset}:{key}:{value}").stdout
    assert out.splitlines() == ["0:0:k:v0", "0:1:k:v1", "1:0:null:\ufffdz"]
    assert ("Consumer.close",) in world.calls


def test_consume_default_starts_at_the_end(world):
    world.topics["t"] = [[(None, b"old")]]
    result = run("consume", "t", "--timeout-ms", "50")
    assert result.exit_code == 0 and result.stdout == ""


def test_consume_partition_offset_assigns_one_partition(world):
    world.topics["t"] = [[], [(None, b"a"), (None, b"b")]]
    out = run("consume", "t", "--partition", "1", "--offset", "1", "--timeout-ms", "50").stdout
    assert out == "b\n"
    assert ("assign", [("t", 1, 1)]) in world.calls


def test_consume_ctrl_c_closes_and_exits_130(world):
    world.topics["t"] = [[(None, b"a")]]
    world.poll_interrupt_after = 1
    result = run("consume", "t", "--from-beginning")
    assert result.exit_code == EXIT_INTERRUPTED
    assert result.stdout == "a\n" and "Traceback" not in result.output
    assert ("Consumer.close",) in world.calls


def test_consume_group_subscribes_and_commits(world, monkeypatch):
    world.topics["t"] = [[(None, b"a")]]
    subscribed = []

    def subscribe(self, topics):
        subscribed.append(topics)
        self.assign([("t", 0, 0)])

    monkeypatch.setattr(minilog.Consumer, "subscribe", subscribe, raising=False)
    result = run("consume", "t", "--group", "g", "--max-messages", "1")
    assert result.exit_code == 0 and result.stdout == "a\n"
    assert subscribed == [["t"]] and world.committed == [{("t", 0): 1}]
    consumer_call = next(c for c in world.calls if c[0] == "Consumer")
    assert consumer_call[2] == "g"


def test_broker_unavailable_maps_to_exit_3(world, monkeypatch):
    def boom(self, **kwargs):
        raise errors.BrokerUnavailableError("could not connect to broker localhost:9092")

    monkeypatch.setattr(minilog.Admin, "list_topics", boom)
    result = run("topics", "list")
    assert result.exit_code == EXIT_BROKER_UNAVAILABLE
    assert result.stderr == "minilog: error: could not connect to broker localhost:9092\n"
