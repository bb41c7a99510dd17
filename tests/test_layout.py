"""The package layout and the layering rules of DESIGN.md hold."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ["protocol", "storage"])
def test_protocol_and_storage_never_import_trio_or_upper_layers(layer):
    """protocol/ and storage/ stay sans-IO and below the broker/client/cli."""
    forbidden = ("trio", "minilog.broker", "minilog.client", "minilog.cli", "minilog.cluster")
    for path in (ROOT / layer).rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_protocol_imports_nothing_from_the_project():
    """protocol/ is the bottom layer: it imports only the stdlib and C helpers."""
    for path in (ROOT / "protocol").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith(("minilog", "storage")), f"{path.name} imports {name}"


def test_no_generic_top_level_packages_installed():
    """After install, `storage` and `protocol` are importable only under minilog."""
    code = (
        "import importlib.util, sys;"
        "sys.path = [p for p in sys.path if p not in ('', '.')];"
        "print(importlib.util.find_spec('storage') is None, importlib.util.find_spec('protocol') is None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "True"]
    assert importlib.util.find_spec("minilog.storage") is not None
    assert importlib.util.find_spec("minilog.protocol") is not None


def test_version_and_help(tmp_path):
    """`minilog --version` and `--help` work from the installed entry point."""
    out = subprocess.run(["minilog", "--version"], capture_output=True, text=True, check=True)
    from minilog import __version__

    assert __version__ in out.stdout
    out = subprocess.run(["minilog", "--help"], capture_output=True, text=True, check=True)
    assert "Usage" in out.stdout


def test_regular_install_lays_out_only_minilog(tmp_path):
    """A non-editable install (what `pip install minilog` does) holds minilog/ with
    protocol and storage inside it, and nothing named storage or protocol at top level."""
    import shutil

    source = tmp_path / "src"   # build from a copy: a build writes build/ and *.egg-info
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "tests"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )
    top = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info"))}
    top.discard("bin")
    assert top == {"minilog"}, top
    for sub in ("protocol", "storage", "broker", "broker/groups", "client", "cli"):
        assert (target / "minilog" / sub / "__init__.py").exists(), sub
    code = ("import minilog.protocol, minilog.storage, minilog.broker.groups, minilog.cli;"
            "print(minilog.protocol.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(target)}, check=True).stdout
    assert out.startswith(str(target))
