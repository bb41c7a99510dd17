"""minilog._logsafe: client strings in log lines cannot forge lines or drive the terminal."""

from __future__ import annotations

import pytest

from minilog._logsafe import LOGSAFE_CHARS_MAX, logsafe


@pytest.mark.parametrize("name", ["orders", "order-events.v2", "g_1", "grüße", "名前", "a b", "x'y\"z"])
def test_printable_names_are_unchanged(name):
    assert logsafe(name) == name


@pytest.mark.parametrize(("raw", "escaped"), [
    ("g\n2026-01-01 INFO minilog: forged", "g\\n2026-01-01 INFO minilog: forged"),
    ("a\rb", "a\\rb"),
    ("\x1b[2J", "\\x1b[2J"),
    ("tab\there", "tab\\there"),
    ("nul\x00", "nul\\x00"),
    ("nel\x85ls\u2028ps\u2029", "nel\\x85ls\\u2028ps\\u2029"),
    ("back\\slash", "back\\\\slash"),
    ("back\\n", "back\\\\n"),                    # a literal backslash-n is not an escaped newline
])
def test_control_characters_and_backslashes_are_escaped(raw, escaped):
    out = logsafe(raw)
    assert out == escaped
    assert out.isprintable()
    assert len(out.splitlines()) == 1


def test_long_values_are_cut_and_say_so():
    out = logsafe("x" * 40_000)
    assert out == "x" * LOGSAFE_CHARS_MAX + "...(40000 chars)"
    assert logsafe("\n" * 10, chars_max=3) == "\\n\\n\\n...(10 chars)"


def test_non_strings_are_formatted_first():
    assert logsafe(42) == "42"
    assert logsafe(b"a\nb") == "b'a\\\\nb'"      # str(bytes) is already a repr; its backslash doubles
