"""The client's shape: seams instead of test hooks, modules of a readable size, `async with` lifetimes."""

from __future__ import annotations

import ast
import pathlib

import minilog

CLIENT = pathlib.Path(minilog.__file__).parent / "client"
MODULE_LINES_MAX = 650


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_production_client_code_never_imports_trio_testing():
    """Time and streams are injected (clock=, connect=); test helpers stay in tests."""
    offenders = [p.name for p in CLIENT.glob("*.py") if any(
        name == "trio.testing" or name.startswith("trio.testing.") for name in _imports(p))]
    assert offenders == []


def test_client_modules_stay_under_the_size_limit():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in CLIENT.glob("*.py")}
    assert {n: s for n, s in sizes.items() if s > MODULE_LINES_MAX} == {}


def test_async_clients_have_no_manual_start_or_close():
    """The lifetime is the `async with` block (see _lifecycle.py), not start()/close() pairs."""
    for cls in (minilog.AsyncProducer, minilog.AsyncConsumer, minilog.AsyncAdmin):
        assert hasattr(cls, "__aenter__") and hasattr(cls, "__aexit__")
        assert not hasattr(cls, "start") and not hasattr(cls, "close"), cls
    assert not (CLIENT / "_tasks.py").exists()
