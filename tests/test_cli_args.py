"""CLI argument parsing and local errors, through click's CliRunner, no broker needed.

Each test checks the contract of docs/cli.md: one stderr line, a named exit
code, never a traceback.
"""

from __future__ import annotations

import subprocess
import types

import pytest
from click.testing import CliRunner

from minilog.cli import main
from minilog.cli._common import (
    EXIT_CODES,
    EXIT_INVALID_CONFIG,
    EXIT_USAGE,
    CliError,
    RecordFormatter,
    parse_config_pairs,
)


def run(*args: str, input: str | None = None, env: dict | None = None):
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_exit_codes_are_distinct_and_named():
    """Every named exit code has its own number, so scripts can tell them apart."""
    assert len(set(EXIT_CODES.values())) == len(EXIT_CODES)
    assert EXIT_CODES["EXIT_OK"] == 0 and EXIT_CODES["EXIT_INTERRUPTED"] == 130


@pytest.mark.parametrize("command", [
    ["topics", "create", "t", "--partitions", "1"], ["topics", "list"], ["topics", "describe", "t"],
    ["topics", "delete", "t"], ["topics", "alter", "t", "--config", "retention.ms=1"],
    ["produce", "t", "--value", "v"], ["consume", "t"],
])
def test_every_client_command_takes_bootstrap_server(command):
    """--bootstrap-server is on every client command and is shown in --help with its env var."""
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "--bootstrap-server" in result.output
    assert "MINILOG_BOOTSTRAP_SERVER" in result.output
    assert "--request-timeout-ms" in result.output


@pytest.mark.parametrize("address", ["localhost", "host:port", ":9092", "h:0", "h:70000"])
def test_bad_bootstrap_server_is_a_usage_error(address):
    """A malformed HOST:PORT is refused before any connection is tried."""
    result = run("topics", "list", "--bootstrap-server", address)
    assert result.exit_code == EXIT_USAGE
    assert "HOST:PORT" in result.output


def test_bootstrap_server_from_environment_is_validated():
    """MINILOG_BOOTSTRAP_SERVER goes through the same check as the flag."""
    result = run("topics", "list", env={"MINILOG_BOOTSTRAP_SERVER": "nonsense"})
    assert result.exit_code == EXIT_USAGE
    assert "HOST:PORT" in result.output


def test_config_pairs_parse():
    """--config values stay strings for the broker to validate; '=' may appear in a value."""
    assert parse_config_pairs(["retention.ms=1000", " a = b=c "]) == {"retention.ms": "1000", "a": "b=c"}
    with pytest.raises(CliError) as info:
        parse_config_pairs(["retention.ms"])
    assert info.value.code == EXIT_INVALID_CONFIG


def test_create_with_malformed_config_pair_fails_locally():
    """A --config without '=' is one line and EXIT_INVALID_CONFIG, no broker needed."""
    result = run("topics", "create", "t", "--partitions", "1", "--config", "retention.ms")
    assert_one_line_error(result, EXIT_INVALID_CONFIG, "KEY=VALUE")


def test_alter_needs_a_change():
    """`topics alter` with nothing to change says so."""
    assert_one_line_error(run("topics", "alter", "t"), EXIT_INVALID_CONFIG, "nothing to alter")


def test_alter_refuses_set_and_delete_of_one_key():
    result = run("topics", "alter", "t", "--config", "retention.ms=1", "--delete-config", "retention.ms")
    assert_one_line_error(result, EXIT_INVALID_CONFIG, "retention.ms")


@pytest.mark.parametrize("template", ["{nope}", "{0}", "{}", "{value", "{offset:zz}", "{key.upper}x{bad}"])
def test_consume_bad_format_is_one_line(template):
    """An unknown field or a template that cannot render is refused before connecting."""
    result = run("consume", "t", "--format", template)
    assert_one_line_error(result, EXIT_USAGE, "--format")


def test_consume_offset_needs_partition():
    assert_one_line_error(run("consume", "t", "--offset", "3"), EXIT_USAGE, "--partition")


def test_consume_offset_must_be_a_number_or_name():
    result = run("consume", "t", "--partition", "0", "--offset", "soon")
    assert_one_line_error(result, EXIT_USAGE, "--offset")


def test_consume_group_with_partition_is_refused():
    result = run("consume", "t", "--group", "g", "--partition", "0")
    assert_one_line_error(result, EXIT_USAGE, "--group")


def test_produce_empty_separator_is_refused():
    result = run("produce", "t", "--key-separator", "")
    assert_one_line_error(result, EXIT_USAGE, "separator")


def test_produce_separator_with_value_is_refused():
    result = run("produce", "t", "--key-separator", ":", "--value", "v")
    assert_one_line_error(result, EXIT_USAGE, "separator")


def test_formatter_renders_every_field():
    """All seven fields render; bytes decode as UTF-8 with replacement; None prints null."""
    record = types.SimpleNamespace(topic="t", partition=3, offset=42, timestamp=1700000000000,
                                   key=b"k\xff", value=None, headers=[("h", b"v"), ("n", None)])
    text = RecordFormatter("{topic}|{partition}|{offset}|{timestamp}|{key}|{value}|{headers}")(record)
    assert text == "t|3|42|1700000000000|k\ufffd|null|h:v,n:null"


def test_formatter_understands_tab_escape_and_format_specs():
    record = types.SimpleNamespace(topic="t", partition=1, offset=7, timestamp=0, key=b"a",
                                   value=b"b", headers=[])
    assert RecordFormatter(r"{partition}\t{offset:>3}\t{value}")(record) == "1\t  7\tb"


def test_installed_command_reports_usage_errors_without_traceback():
    """The `minilog` entry point gives the same one-line error as CliRunner."""
    proc = subprocess.run(["minilog", "consume", "t", "--format", "{nope}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_USAGE
    assert proc.stderr.strip().count("\n") == 0 and "{nope}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


# ----------------------------------------------------------------------------
# Topic names, number ranges, group ids: refused by click before anything connects
# (the bootstrap server below does not exist; a check that connected would fail differently).

_NOWHERE = {"MINILOG_BOOTSTRAP_SERVER": "127.0.0.1:1"}
_TOPIC_COMMANDS = [
    lambda t: ["topics", "create", t],
    lambda t: ["topics", "describe", t],
    lambda t: ["topics", "delete", t],
    lambda t: ["topics", "alter", t, "--config", "retention.ms=1"],
    lambda t: ["consume", t],
    lambda t: ["produce", t, "--value", "x"],
    lambda t: ["groups", "reset-offsets", "g", "--topic", t, "--to-earliest"],
]


@pytest.mark.parametrize("name", ["", "a b", "x/y", "é", ".", "..", "t" * 250])
@pytest.mark.parametrize("command", _TOPIC_COMMANDS)
def test_bad_topic_name_is_one_line_for_every_command(command, name):
    """Every command that takes a topic checks it (Kafka's rules): one line, no traceback."""
    result = run(*command(name), env=_NOWHERE)
    assert_one_line_error(result, EXIT_INVALID_CONFIG, "minilog: error: ", "topic")


@pytest.mark.parametrize("name", ["a", "orders.v1_x-Y", "t" * 249])
def test_legal_topic_names_pass_the_check(name):
    from minilog.cli._common import topic_name_problem

    assert topic_name_problem(name) is None


@pytest.mark.parametrize("args", [
    ["topics", "create", "t", "--partitions", "99999999999999999999999"],
    ["topics", "create", "t", "--partitions", "0"],
    ["topics", "create", "t", "--partitions", "100001"],
    ["topics", "create", "t", "--replication-factor", "40000"],
    ["produce", "t", "--value", "x", "--partition", "99999999999999999999999"],
    ["produce", "t", "--value", "x", "--delivery-timeout-ms", "99999999999999"],
    ["consume", "t", "--partition", "100000"],
    ["consume", "t", "--max-messages", "0"],
    ["consume", "t", "--max-messages", "99999999999999999999999"],
    ["consume", "t", "--timeout-ms", "99999999999999"],
    ["topics", "list", "--request-timeout-ms", "99999999999999"],
    ["groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "99999999999999999999999"],
    ["groups", "reset-offsets", "g", "--topic", "t", "--to-offset", "-1"],
])
def test_numbers_out_of_range_are_one_line_usage_errors(args):
    assert_one_line_error(run(*args, env=_NOWHERE), EXIT_USAGE, "minilog: error: ", "range")


def test_consume_offset_out_of_int64_range_is_refused():
    result = run("consume", "t", "--partition", "0", "--offset", str(2**63), env=_NOWHERE)
    assert_one_line_error(result, EXIT_USAGE, "--offset")


def test_unknown_flag_is_one_line():
    assert_one_line_error(run("topics", "list", "--nope"), EXIT_USAGE, "--nope", "--help")


@pytest.mark.parametrize("command", [
    ["groups", "reset-offsets", "", "--topic", "t", "--to-earliest"],
    ["groups", "describe", ""], ["groups", "delete", ""], ["consume", "t", "--group", ""],
])
def test_empty_group_id_is_refused(command):
    assert_one_line_error(run(*command, env=_NOWHERE), EXIT_USAGE, "must not be empty")


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00", "0001-01-01T00:00:00Z",
                                  "1969-12-31T23:59:59+00:00"])
def test_reset_to_datetime_that_has_no_timestamp_is_refused(when):
    """Year 1 (astimezone fails east of UTC) and pre-1970 times: one line, EXIT_USAGE."""
    result = run("groups", "reset-offsets", "g", "--topic", "t", "--to-datetime", when,
                 env=_NOWHERE)
    assert_one_line_error(result, EXIT_USAGE, "--to-datetime")


def test_client_to_ms_raises_a_typed_error_for_unrepresentable_times():
    """The client itself (not only the CLI) refuses with ConfigError, a MinilogError."""
    import datetime as dt

    from minilog.client._group_admin import _to_ms
    from minilog.errors import ConfigError

    for when in (dt.datetime(1, 1, 1), dt.datetime(1, 1, 1, tzinfo=dt.UTC),
                 dt.datetime(1969, 12, 31, tzinfo=dt.UTC), -5, "soon"):
        with pytest.raises(ConfigError):
            _to_ms(when)
    assert _to_ms(dt.datetime(1970, 1, 1, 0, 0, 1, tzinfo=dt.UTC)) == 1000


# ----------------------------------------------------------------------------
# handle_errors: the last line of defence


def _broken_admin(monkeypatch):
    import minilog

    class Broken:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("something\nwent wrong")

    monkeypatch.setattr(minilog, "Admin", Broken)


def test_unexpected_exception_is_one_internal_error_line(monkeypatch):
    """A bug (anything not a MinilogError/CliError/OSError) is one line and exit 1."""
    _broken_admin(monkeypatch)
    monkeypatch.delenv("MINILOG_DEBUG", raising=False)
    result = run("topics", "list")
    assert_one_line_error(result, 1, "minilog: internal error: RuntimeError: something went wrong",
                          "MINILOG_DEBUG=1")


def test_minilog_debug_shows_the_traceback(monkeypatch):
    _broken_admin(monkeypatch)
    result = run("topics", "list", env={"MINILOG_DEBUG": "1"})
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "RuntimeError: something" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("minilog: internal error: ")
