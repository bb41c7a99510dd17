"""The CLI against a real `minilog serve`: every command stops quietly on a closed stdout
(`| head -1`), `--partitions` allows exactly what the broker allows, and `consume --group`
exits 3 when its broker dies (issue 8, items 14 and 15)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import wait_until
from minilog.cli import main
from minilog.cli._common import EXIT_BROKER_UNAVAILABLE, EXIT_USAGE, PARTITIONS_MAX
from minilog.protocol import ApiKey, ErrorCode, build_batch

_CLI = [sys.executable, "-c", "import sys; from minilog.cli import main; sys.exit(main())"]


def _run_into_closed_pipe(broker, *args: str) -> tuple[int, str]:
    """Run `minilog ARGS` with stdout a pipe whose reader is gone before the command
    writes anything: the strongest form of `minilog ARGS | head -1`."""
    proc = subprocess.Popen([*_CLI, *args, "--bootstrap-server", broker.bootstrap],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    try:
        stderr = proc.stderr.read()
        return proc.wait(timeout=60), stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def busy_broker(broker):
    """A broker with a topic `t` holding records and a group `g` with committed offsets."""
    c = broker.client()
    assert c.create_topic("t", 3) == 0
    for p in range(3):
        assert c.produce("t", p, bytearray(build_batch([b"x"] * 10)))["error_code"] == 0
    r = c.request(ApiKey.OFFSET_COMMIT, {"group_id": "g", "member_id": "", "member_epoch": -1,
                                         "topics": [{"topic": "t", "partitions": [
                                             {"partition": p, "committed_offset": 5,
                                              "committed_leader_epoch": -1,
                                              "committed_metadata": None} for p in range(3)]}]})
    assert all(q["error_code"] == 0 for q in r.payload["topics"][0]["partitions"]), r.payload
    return broker


@pytest.mark.parametrize("args", [
    ["topics", "list"],
    ["topics", "list", "--names-only"],
    ["topics", "describe", "t"],
    ["topics", "create", "new", "--partitions", "1"],
    ["topics", "alter", "t", "--config", "retention.ms=3600000"],
    ["groups", "list"],
    ["groups", "describe", "g", "--members"],
    ["groups", "reset-offsets", "g", "--topic", "t", "--to-earliest"],
    ["consume", "t", "--from-beginning", "--max-messages", "5"],
    ["topics", "delete", "t"],
], ids=" ".join)
def test_every_command_stops_quietly_on_a_closed_stdout(busy_broker, args):
    code, stderr = _run_into_closed_pipe(busy_broker, *args)
    assert (code, stderr) == (0, ""), (code, stderr)


def test_partitions_limit_is_the_brokers(broker):
    """`--partitions` accepts exactly what the broker accepts (its help says so too)."""
    c = broker.client()

    def broker_code(count: int) -> int:
        r = c.request(ApiKey.CREATE_TOPICS, {
            "topics": [{"name": "big", "num_partitions": count, "replication_factor": 1,
                        "configs": {}}], "timeout_ms": 5000, "validate_only": True})
        return r.payload["topics"][0]["error_code"]

    assert broker_code(PARTITIONS_MAX) == ErrorCode.NONE
    assert broker_code(PARTITIONS_MAX + 1) == ErrorCode.INVALID_PARTITIONS
    runner = CliRunner()
    result = runner.invoke(main, ["topics", "create", "big", "--partitions", str(PARTITIONS_MAX + 1),
                                  "--bootstrap-server", broker.bootstrap])
    assert result.exit_code == EXIT_USAGE, result.output
    help_text = runner.invoke(main, ["topics", "create", "--help"]).output
    assert f"1<=x<={PARTITIONS_MAX}" in help_text.replace(" ", ""), help_text


def test_consume_group_exits_3_when_the_broker_dies(broker):
    """SIGKILL the broker under an idle `consume --group` (joined, nothing to print): it
    exits 3 with one line (docs/cli.md) within its request timeout plus a margin (the
    wait's deadline), instead of waiting silently for ever."""
    c = broker.client()
    assert c.create_topic("t", 2) == 0
    proc = subprocess.Popen([*_CLI, "consume", "t", "--group", "g",
                             "--request-timeout-ms", "2000", "--bootstrap-server", broker.bootstrap],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def joined() -> bool:
        r = c.request(ApiKey.CONSUMER_GROUP_DESCRIBE, {"group_ids": ["g"]}).payload["groups"][0]
        return r["group_state"] == "stable" and len(r["members"]) == 1

    try:
        wait_until(joined, "the consumer joined its group", timeout_s=30)
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait()
        _stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_BROKER_UNAVAILABLE, (proc.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minilog: error: "), stderr
    assert "Traceback" not in stderr
