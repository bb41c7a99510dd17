"""The CLI against a real `minilog serve` (the `broker` fixture), through click's CliRunner
and through the installed `minilog` command.

Covers issue 3's CLI list: topics create/list/describe/alter/delete, produce
from stdin with a key separator and consume it back with --format,
--partition/--offset, --max-messages, --timeout-ms, and the error contract
(one stderr line, a named exit code, no traceback) for an unreachable broker,
an unknown topic and a bad config key; Ctrl-C on a running consume.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner

from minilog.cli import main
from minilog.cli._common import (
    EXIT_BROKER_UNAVAILABLE,
    EXIT_DELIVERY_FAILED,
    EXIT_INTERRUPTED,
    EXIT_INVALID_CONFIG,
    EXIT_OK,
    EXIT_TOPIC_EXISTS,
    EXIT_TOPIC_NOT_FOUND,
)

_names = itertools.count()
_SUBPROCESS_TIMEOUT_S = 60


def bootstrap_of(broker) -> str:
    for attr in ("bootstrap", "bootstrap_servers", "bootstrap_server", "address"):
        value = getattr(broker, attr, None)
        if isinstance(value, str):
            return value
    if getattr(broker, "port", None):
        return f"{broker.host}:{broker.port}"
    assert isinstance(broker, str), f"cannot find the address of {broker!r}"
    return broker


@pytest.fixture
def bs(broker) -> str:
    return bootstrap_of(broker)


@pytest.fixture
def topic(request) -> str:
    return f"cli-{request.node.name.split('[')[0].replace('_', '-')}-{next(_names)}"[:200]


def cli(bs: str, *args: str, input: str | None = None):
    """Run a command in-process with --bootstrap-server given through the environment."""
    return CliRunner().invoke(main, list(args), input=input,
                              env={"MINILOG_BOOTSTRAP_SERVER": bs}, catch_exceptions=False)


def ok(result) -> str:
    assert result.exit_code == EXIT_OK, (result.exit_code, result.output)
    return result.stdout


def minilog(bs: str | None, *args: str, input: str | None = None,
            timeout: float = _SUBPROCESS_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the installed `minilog` entry point."""
    env = dict(os.environ)
    env.pop("MINILOG_BOOTSTRAP_SERVER", None)
    if bs is not None:
        env["MINILOG_BOOTSTRAP_SERVER"] = bs
    return subprocess.run(["minilog", *args], input=input, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(code: int, returncode: int, stdout: str, stderr: str, *fragments: str):
    assert returncode == code, (returncode, stdout, stderr)
    assert "Traceback" not in stdout + stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("minilog: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def describe_rows(text: str) -> dict[int, dict]:
    row = re.compile(r"^\s*(\d+)\s+(-?\d+)\s+(\d+)\s+([\d,]+)\s+([\d,]*)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.+?)\s*$",
                     re.M)
    out = {}
    for m in row.finditer(text):
        out[int(m[1])] = dict(leader=int(m[2]), epoch=int(m[3]), replicas=m[4], isr=m[5],
                              start=int(m[6]), end=int(m[7]), hw=int(m[8]), size=m[9])
    return out


def config_value(text: str, key: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(key)}\s+(\S+)(?:\s+(?:topic|default|broker))?\s*$", text, re.M)
    return m[1] if m else None


# ----------------------------------------------------------------------------
# topics


def test_topic_lifecycle_create_list_describe_alter_delete(bs, topic):
    """A topic goes through every `topics` command and each shows the change."""
    out = ok(cli(bs, "topics", "create", topic, "--partitions", "3", "--replication-factor", "1",
                 "--config", "retention.ms=3600000", "--config", "segment.bytes=1048576"))
    assert topic in out
    listed = ok(cli(bs, "topics", "list"))
    assert re.search(rf"^\s*{re.escape(topic)}\s+3\s*$", listed, re.M), listed
    assert "__consumer_offsets" not in listed
    assert topic in ok(cli(bs, "topics", "list", "--names-only")).splitlines()

    described = ok(cli(bs, "topics", "describe", topic))
    assert f"Topic: {topic}" in described and "PartitionCount: 3" in described
    rows = describe_rows(described)
    assert sorted(rows) == [0, 1, 2], described
    for row in rows.values():
        assert row["start"] == row["end"] == row["hw"] == 0
        assert row["replicas"] == row["isr"] == str(row["leader"])
    assert config_value(described, "retention.ms") == "3600000"
    assert config_value(described, "segment.bytes") == "1048576"
    assert re.search(r"^\s*retention\.ms\s+3600000\s+topic\s*$", described, re.M), described

    ok(cli(bs, "topics", "alter", topic, "--config", "retention.ms=7200000"))
    assert config_value(ok(cli(bs, "topics", "describe", topic)), "retention.ms") == "7200000"

    ok(cli(bs, "topics", "alter", topic, "--delete-config", "retention.ms"))
    reset = config_value(ok(cli(bs, "topics", "describe", topic)), "retention.ms")
    assert reset in (None, "604800000"), reset  # gone from the overrides, or back at the default

    assert topic in ok(cli(bs, "topics", "delete", topic))
    assert topic not in ok(cli(bs, "topics", "list")).split()
    result = cli(bs, "topics", "describe", topic)
    assert_one_line_error(EXIT_TOPIC_NOT_FOUND, result.exit_code, result.stdout, result.stderr)


def test_describe_shows_offsets_and_size_after_produce(bs, topic):
    """Log end offset and size per partition reflect what was produced."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "2"))
    ok(cli(bs, "produce", topic, "--partition", "1", input="a\nb\nc\n"))
    rows = describe_rows(ok(cli(bs, "topics", "describe", topic)))
    assert rows[0]["end"] == 0 and rows[1]["end"] == 3 and rows[1]["hw"] == 3
    assert rows[1]["size"] != "0 B" and rows[0]["size"] == "0 B"


def test_create_existing_topic(bs, topic):
    """Creating a taken name exits EXIT_TOPIC_EXISTS, unless --if-not-exists."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    result = cli(bs, "topics", "create", topic, "--partitions", "1")
    assert_one_line_error(EXIT_TOPIC_EXISTS, result.exit_code, result.stdout, result.stderr)
    ok(cli(bs, "topics", "create", topic, "--partitions", "1", "--if-not-exists"))


@pytest.mark.parametrize("pair", ["no.such.key=1", "retention.ms=soon", "cleanup.policy=shred"])
def test_create_with_bad_config_changes_nothing(bs, topic, pair):
    """An unknown key or bad value is EXIT_INVALID_CONFIG and no topic is created."""
    result = cli(bs, "topics", "create", topic, "--partitions", "1", "--config", pair)
    assert_one_line_error(EXIT_INVALID_CONFIG, result.exit_code, result.stdout, result.stderr)
    assert topic not in ok(cli(bs, "topics", "list")).split()


def test_alter_with_bad_config_key(bs, topic):
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    result = cli(bs, "topics", "alter", topic, "--config", "no.such.key=1")
    assert_one_line_error(EXIT_INVALID_CONFIG, result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("command", [["topics", "describe"], ["topics", "delete"],
                                     ["topics", "alter", "--config", "retention.ms=1"],
                                     ["consume", "--timeout-ms", "100"],
                                     ["consume", "--group", "g", "--timeout-ms", "100"]])
def test_unknown_topic_is_one_line(bs, command):
    """Commands on a missing topic exit EXIT_TOPIC_NOT_FOUND with one line."""
    args = command[:2] + ["no-such-topic"] + command[2:] if command[0] == "topics" else \
        [command[0], "no-such-topic"] + command[1:]
    result = cli(bs, *args)
    assert_one_line_error(EXIT_TOPIC_NOT_FOUND, result.exit_code, result.stdout, result.stderr)


# ----------------------------------------------------------------------------
# produce and consume, through the installed command


def test_produce_stdin_with_key_separator_then_consume_with_format(bs, topic):
    """Lines split into key and value; each key's records come back in order, on one partition."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "4"))
    lines = [f"user{n % 5}:event {n}" for n in range(50)]
    proc = minilog(bs, "produce", topic, "--key-separator", ":", "--acks", "all",
                   input="\n".join(lines) + "\n")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc

    proc = minilog(bs, "consume", topic, "--from-beginning", "--max-messages", "50",
                   "--format", "{partition}|{offset}|{key}|{value}|{topic}")
    assert proc.returncode == 0, proc.stderr
    got = [line.split("|") for line in proc.stdout.splitlines()]
    assert len(got) == 50
    assert {t for *_, t in got} == {topic}
    by_key: dict[str, list] = {}
    for partition, offset, key, value, _ in got:
        by_key.setdefault(key, []).append((int(partition), int(offset), value))
    for n in range(5):
        records = sorted(by_key[f"user{n}"], key=lambda r: r[1])
        assert len({p for p, _, _ in records}) == 1, records
        assert [v for _, _, v in records] == [f"event {m}" for m in range(n, 50, 5)]


def test_default_format_prints_values_and_key_option(bs, topic):
    """--value/--key send one record; the default format prints only the value."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    before_ms = time.time_ns() // 1_000_000
    ok(cli(bs, "produce", topic, "--key", "k1", "--value", "hello world"))
    after_ms = time.time_ns() // 1_000_000
    out = ok(cli(bs, "consume", topic, "--from-beginning", "--max-messages", "1"))
    assert out == "hello world\n"
    out = ok(cli(bs, "consume", topic, "--from-beginning", "--max-messages", "1",
                 "--format", r"{key}\t{value}\t{timestamp}"))
    key, value, timestamp = out.rstrip("\n").split("\t")
    assert (key, value) == ("k1", "hello world")
    assert before_ms <= int(timestamp) <= after_ms     # the producer's create time


def test_consume_partition_and_offset(bs, topic):
    """--partition P --offset O reads only P, from O."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "2"))
    ok(cli(bs, "produce", topic, "--partition", "1", input="".join(f"v{n}\n" for n in range(5))))
    ok(cli(bs, "produce", topic, "--partition", "0", input="other\n"))
    out = ok(cli(bs, "consume", topic, "--partition", "1", "--offset", "2", "--max-messages", "3",
                 "--format", "{partition} {offset} {value}"))
    assert out.splitlines() == ["1 2 v2", "1 3 v3", "1 4 v4"]
    out = ok(cli(bs, "consume", topic, "--partition", "1", "--offset", "earliest",
                 "--max-messages", "1", "--format", "{offset}"))
    assert out == "0\n"


def test_consume_max_messages_stops_exactly(bs, topic):
    ok(cli(bs, "topics", "create", topic, "--partitions", "3"))
    ok(cli(bs, "produce", topic, input="".join(f"{n}\n" for n in range(30))))
    out = ok(cli(bs, "consume", topic, "--from-beginning", "--max-messages", "7"))
    assert len(out.splitlines()) == 7


def test_consume_timeout_exits_when_idle(bs, topic):
    """--timeout-ms ends an idle consume with exit 0; without --from-beginning old records are skipped."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    ok(cli(bs, "produce", topic, "--value", "old"))
    proc = minilog(bs, "consume", topic, "--timeout-ms", "300", timeout=30)   # raises if it hangs
    assert (proc.returncode, proc.stdout, proc.stderr) == (EXIT_OK, "", "")


def test_consume_partition_out_of_range(bs, topic):
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    result = cli(bs, "consume", topic, "--partition", "5", "--timeout-ms", "100")
    assert_one_line_error(EXIT_TOPIC_NOT_FOUND, result.exit_code, result.stdout, result.stderr)


def test_consume_group_commits(bs, topic):
    """--group resumes after the committed offset (groups have landed: no skip path)."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    ok(cli(bs, "produce", topic, input="a\nb\nc\n"))
    result = cli(bs, "consume", topic, "--group", f"g-{topic}", "--from-beginning",
                 "--max-messages", "2")
    assert ok(result) == "a\nb\n"
    again = cli(bs, "consume", topic, "--group", f"g-{topic}", "--max-messages", "1")
    assert ok(again) == "c\n"


# ----------------------------------------------------------------------------
# errors through the installed command


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"  # closed: nothing listens there


@pytest.mark.parametrize("args", [
    ["topics", "list"], ["topics", "create", "t", "--partitions", "1"], ["topics", "describe", "t"],
    ["topics", "alter", "t", "--config", "retention.ms=1"], ["topics", "delete", "t"],
    ["produce", "t", "--value", "v"], ["consume", "t", "--timeout-ms", "500"],
])
def test_unreachable_broker_is_one_line_no_traceback(args):
    """With no broker at the address, every client command prints one line and exits 3,
    after --request-timeout-ms (the deadline is far below what the client's own default
    timeouts would take, and is not a measurement)."""
    proc = minilog(_dead_address(), *args, "--request-timeout-ms", "1500", timeout=20)
    assert_one_line_error(EXIT_BROKER_UNAVAILABLE, proc.returncode, proc.stdout, proc.stderr,
                          "no broker reachable")


def test_bad_config_key_through_installed_command(bs, topic):
    proc = minilog(bs, "topics", "create", topic, "--partitions", "1", "--config", "retension.ms=5")
    assert_one_line_error(EXIT_INVALID_CONFIG, proc.returncode, proc.stdout, proc.stderr, "retension.ms")


def test_ctrl_c_stops_a_running_consume_cleanly(bs, topic):
    """SIGINT to a running `minilog consume` closes it: exit 0 or 130, no traceback."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "2"))
    env = dict(os.environ, MINILOG_BOOTSTRAP_SERVER=bs, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(["minilog", "consume", topic, "--format", "{value}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Keep producing until the consumer prints: then it is surely in its poll loop.
        deadline = time.monotonic() + 30
        line = ""
        os.set_blocking(proc.stdout.fileno(), False)
        while not line and time.monotonic() < deadline:
            ok(cli(bs, "produce", topic, "--value", "ping"))
            for _ in range(20):
                line = proc.stdout.readline()
                if line or proc.poll() is not None:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read()
        assert line == "ping\n"
        proc.send_signal(signal.SIGINT)
        _stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, EXIT_INTERRUPTED), (proc.returncode, stderr)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr


def test_consume_into_a_closed_pipe_stops_quietly(bs, topic):
    """`minilog consume ... | head -1`: when the reader goes, consume exits 0 without a traceback,
    even with no further record to write."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    ok(cli(bs, "produce", topic, input="a\nb\n"))
    env = dict(os.environ, MINILOG_BOOTSTRAP_SERVER=bs)
    proc = subprocess.Popen(["minilog", "consume", topic, "--from-beginning"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"a\n"
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=30) == 0, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in stderr and stderr == "", stderr


def test_produce_exits_non_zero_when_a_delivery_fails(bs, topic):
    """acks=all on a topic whose min.insync.replicas cannot be met: one line, EXIT_DELIVERY_FAILED."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    ok(cli(bs, "topics", "alter", topic, "--config", "min.insync.replicas=2"))
    # Ends after --delivery-timeout-ms (2 s), not the client's 120 s default: the deadline
    # of the wait for the process (it raises when passed) tells the two apart.
    proc = minilog(bs, "produce", topic, "--acks", "all", "--delivery-timeout-ms", "2000",
                   input="a\nb\n", timeout=60)
    assert_one_line_error(EXIT_DELIVERY_FAILED, proc.returncode, proc.stdout, proc.stderr,
                          "2 of 2 records not delivered", "NOT_ENOUGH_REPLICAS")
    assert proc.stdout == ""


def test_produce_to_a_partition_the_topic_lacks(bs, topic):
    """--partition 5 on a 1-partition topic: one line, EXIT_TOPIC_NOT_FOUND, nothing sent."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    result = cli(bs, "produce", topic, "--value", "x", "--partition", "5")
    assert_one_line_error(EXIT_TOPIC_NOT_FOUND, result.exit_code, result.stdout, result.stderr,
                          "no partition 5")
    assert ok(cli(bs, "consume", topic, "--from-beginning", "--timeout-ms", "300")) == ""


def test_consume_offset_past_the_log_end_says_where_it_starts(bs, topic):
    """--offset beyond the log end starts at the log end, with one warning line on stderr;
    a record produced after that is the first one printed."""
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    ok(cli(bs, "produce", topic, input="a\nb\nc\n"))
    env = dict(os.environ, MINILOG_BOOTSTRAP_SERVER=bs)
    proc = subprocess.Popen(["minilog", "consume", topic, "--partition", "0", "--offset", "500",
                             "--max-messages", "1", "--format", "{offset} {value}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning = proc.stderr.readline()  # printed before the consumer starts polling
        assert warning.startswith("minilog: warning: "), warning
        assert "offset 500 is outside the log [0, 3]" in warning and "offset 3" in warning, warning
        ok(cli(bs, "produce", topic, "--value", "d"))
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert stdout == "3 d\n" and stderr == "", (stdout, stderr)


def test_consume_offset_inside_the_log_prints_no_warning(bs, topic):
    ok(cli(bs, "topics", "create", topic, "--partitions", "1"))
    ok(cli(bs, "produce", topic, input="a\nb\nc\n"))
    result = cli(bs, "consume", topic, "--partition", "0", "--offset", "3", "--timeout-ms", "300")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == "", result.output
