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
