"""Helpers for exceptions that trio wraps in exception groups.

trio (>= 0.25, strict exception groups) wraps whatever escapes a nursery in
an `ExceptionGroup`, possibly nested. Callers at the edges (the CLI, the
sync facade) want the one operating error inside, so that users see
`BrokerUnavailableError`, not "Exceptions from Trio nursery".
"""

from __future__ import annotations

__all__ = ["leaf_exceptions", "sole_exception"]


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside `exc`, depth first (just `[exc]` for a plain one)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[BaseException] = []
        for inner in exc.exceptions:
            leaves.extend(leaf_exceptions(inner))
        return leaves
    return [exc]


def sole_exception(exc: BaseException) -> BaseException:
    """The one leaf inside `exc` if there is exactly one, else `exc` itself."""
    leaves = leaf_exceptions(exc)
    return leaves[0] if len(leaves) == 1 else exc
