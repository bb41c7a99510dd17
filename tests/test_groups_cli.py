"""`minilog groups` against a real broker, with real consumer processes:
reset-offsets on an empty group then consuming starts exactly there; resets
and deletes are refused while the group has active members; bad input gives
one line and a named exit code."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import wait_until
from minilog.protocol import build_batch
from test_groups_process import GROUP_SETTINGS, members  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

_CLI = [sys.executable, "-c", "import sys; from minilog.cli import main; sys.exit(main())", "groups"]


@pytest.fixture
def gbroker(broker_factory):
    b = broker_factory(*GROUP_SETTINGS)
    c = b.client()
    assert c.create_topic("t", 3) == 0
    for p in range(3):
        assert c.produce("t", p, bytearray(build_batch([b"x"] * 100)))["error_code"] == 0
    return b


def cli(broker, *args):
    r = subprocess.run([*_CLI, *args, "--bootstrap-server", f"{broker.host}:{broker.port}"],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def one_line_error(code, out, err, exit_code, needle):
    assert code == exit_code, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


def test_reset_then_consume_starts_exactly_there(gbroker, members):  # noqa: F811
    """Dry run changes nothing; --execute commits 40 on every partition; a member
    then consumes from exactly 40; while it is active, reset and delete are refused."""
    code, out, _ = cli(gbroker, "reset-offsets", "r", "--topic", "t", "--to-offset", "40")
    assert code == 0 and "Dry run" in out and out.count(" 40") == 3
    assert "does not exist" in out and "--allow-new-group" in out
    code, out, _ = cli(gbroker, "describe", "r")
    assert code == 10                               # still unknown: nothing changed
    one_line_error(*cli(gbroker, "reset-offsets", "r", "--topic", "t", "--to-offset", "40",
                        "--execute"), 10, "--allow-new-group")
    code, out, _ = cli(gbroker, "describe", "r")
    assert code == 10                               # refused: still unknown
    code, out, _ = cli(gbroker, "reset-offsets", "r", "--topic", "t", "--to-offset", "40",
                       "--execute", "--allow-new-group")
    assert code == 0 and "Reset 3 partition(s)" in out
    code, out, _ = cli(gbroker, "describe", "r")
    assert code == 0 and "State: empty" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("t ")]
    assert [r[:5] for r in rows] == [["t", str(p), "40", "100", "60"] for p in range(3)]

    m = members(gbroker, "r", "t", reset="latest")
    wait_until(lambda: len(m.owned()) == 3, "member owns 3 partitions", 20)
    wait_until(lambda: {p for p, _, last in m.processed() if last == 99} == {0, 1, 2},
               "member consumed to the end", 20)
    firsts = {}
    for p, first, _ in m.processed():
        firsts.setdefault(p, first)
    assert firsts == {0: 40, 1: 40, 2: 40}

    one_line_error(*cli(gbroker, "reset-offsets", "r", "--topic", "t", "--to-earliest",
                        "--execute"), 11, "active member")
    one_line_error(*cli(gbroker, "delete", "r"), 11, "active members")
    code, out, _ = cli(gbroker, "list")
    assert code == 0 and "r" in out and "stable" in out
    code, out, _ = cli(gbroker, "describe", "r", "--members")
    assert code == 0 and "m0" in out
    m.stop()
    wait_until(lambda: "empty" in cli(gbroker, "list")[1], "group empty after close", 10)
    code, out, _ = cli(gbroker, "describe", "r")
    rows = [line.split() for line in out.splitlines() if line.startswith("t ")]
    assert [r[:5] for r in rows] == [["t", str(p), "100", "100", "0"] for p in range(3)]
    code, out, err = cli(gbroker, "reset-offsets", "r", "--topic", "t", "--to-offset", "1000",
                         "--execute")
    assert code == 0 and "clamped to 100" in err
    code, out, _ = cli(gbroker, "delete", "r")
    assert code == 0
    one_line_error(*cli(gbroker, "describe", "r"), 10, "unknown group")


def test_bad_input_is_one_line_and_changes_nothing(gbroker):
    """Unknown topic, invalid datetime, no target, unknown group: one line, exit code."""
    one_line_error(*cli(gbroker, "reset-offsets", "g", "--topic", "nope", "--to-earliest"),
                   4, "unknown topic")
    one_line_error(*cli(gbroker, "reset-offsets", "g", "--topic", "t", "--to-datetime", "soon"),
                   2, "--to-datetime")
    one_line_error(*cli(gbroker, "reset-offsets", "g", "--topic", "t"), 2, "exactly one")
    one_line_error(*cli(gbroker, "delete", "g"), 10, "unknown group")
    assert cli(gbroker, "list")[1] == ""


def test_reset_of_an_unknown_group_is_refused_unless_allowed(gbroker):
    """An executed reset of a group id that never existed exits 10 and creates nothing;
    --allow-new-group pre-seeds it; a known empty group needs no flag; an empty id is refused."""
    one_line_error(*cli(gbroker, "reset-offsets", "ghost", "--topic", "t", "--to-earliest",
                        "--execute"), 10, "unknown group 'ghost'")
    assert cli(gbroker, "list")[1] == ""
    code, out, err = cli(gbroker, "reset-offsets", "ghost", "--topic", "t", "--to-earliest",
                         "--execute", "--allow-new-group")
    assert code == 0 and "Reset 3 partition(s)" in out, (out, err)
    code, out, err = cli(gbroker, "reset-offsets", "ghost", "--topic", "t", "--to-latest",
                         "--execute")
    assert code == 0 and out.count(" 100") >= 3, (out, err)
    code, out, _ = cli(gbroker, "describe", "ghost")
    assert code == 0 and "State: empty" in out
    one_line_error(*cli(gbroker, "reset-offsets", "", "--topic", "t", "--to-earliest",
                        "--execute", "--allow-new-group"), 2, "must not be empty")


def test_datetime_before_the_epoch_is_one_line(gbroker):
    """Year 1 (local time, which may not convert at all) and a pre-1970 UTC time: exit 2."""
    for when in ("0001-01-01T00:00:00", "0001-01-01T00:00:00Z", "1969-12-31T23:59:59Z"):
        one_line_error(*cli(gbroker, "reset-offsets", "g", "--topic", "t", "--to-datetime", when),
                       2, "--to-datetime")
    assert cli(gbroker, "list")[1] == ""
