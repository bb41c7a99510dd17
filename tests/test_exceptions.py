"""Unwrapping trio's strict exception groups at the edges (CLI, clients)."""

from __future__ import annotations

from minilog._exceptions import leaf_exceptions, sole_exception


def test_sole_exception_digs_through_nested_groups():
    """One error wrapped twice by nurseries comes back as itself."""
    inner = ConnectionRefusedError("no broker")
    group = ExceptionGroup("outer", [ExceptionGroup("inner", [inner])])
    assert sole_exception(group) is inner
    assert leaf_exceptions(group) == [inner]


def test_several_errors_stay_a_group():
    """Two real failures are not hidden behind one of them."""
    a, b = ValueError("a"), OSError("b")
    group = ExceptionGroup("g", [a, ExceptionGroup("h", [b])])
    assert sole_exception(group) is group
    assert leaf_exceptions(group) == [a, b]


def test_plain_exception_is_its_own_leaf():
    exc = KeyError("k")
    assert sole_exception(exc) is exc and leaf_exceptions(exc) == [exc]
