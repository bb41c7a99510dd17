"""The package layout and the layering rules of DESIGN.md hold."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


# -- the project's import graph ---------------------------------------------------------------

# Source directory -> the package it is installed as (pyproject's package-dir).
PACKAGE_DIRS = {"minilog": "minilog", "protocol": "minilog.protocol", "storage": "minilog.storage"}

# Which layer may import which (DESIGN.md, "Layers, and who may import whom"). `minilog` is
# the top-level leaf modules (errors, _version, _lazy, _logsafe, ...); the CLI is the edge
# and may use anything.
LAYER_MAY_IMPORT = {
    "protocol": {"protocol"},
    "storage": {"storage", "protocol"},
    "minilog": {"minilog", "protocol"},
    "broker": {"broker", "protocol", "storage", "minilog"},
    "client": {"client", "protocol", "minilog"},
    "cli": {"cli", "client", "broker", "protocol", "storage", "minilog"},
}

# Import cycles on main that their owner is removing (issue 7, section 1: handlers and the
# connection server depend on a typing.Protocol, not on the Broker class). Only these exact
# modules may still form a cycle; delete the entry when the cycle is gone.
KNOWN_CYCLES: list[frozenset[str]] = []


def module_files(root: pathlib.Path, package_dirs: dict[str, str] | None = None
                 ) -> dict[str, tuple[pathlib.Path, bool]]:
    """Installed module name -> (source path, is a package) for every .py under the dirs."""
    modules = {}
    for directory, package in (package_dirs or PACKAGE_DIRS).items():
        for path in sorted((root / directory).rglob("*.py")):
            parts = list(path.relative_to(root / directory).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join([package, *parts])] = (path, is_package)
    return modules


def import_graph(modules: dict[str, tuple[pathlib.Path, bool]]) -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in the file.

    Counts every import statement: top level, inside functions (lazy imports) and under
    `if TYPE_CHECKING:` (a cycle that only typing sees is still a cycle in the design).
    Relative imports are resolved. `from P import n` is an edge to the module P.n when that
    is a module, else to P (n is then an attribute of P's __init__). A module's own parent
    packages are imported before it anyway, so `from <own package> import <submodule>` is
    an edge to the submodule only.
    """
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + [node.module or ""]).rstrip(".")
                else:
                    base = node.module or ""
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                while target and target not in modules:      # `import a.b.c` of a non-module tail
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("protocol", "storage", "broker", "client", "cli"):
        return parts[1]
    return "minilog"


def test_no_import_cycles():
    """No two modules import each other, directly or through others (lazy and TYPE_CHECKING
    imports included), except the known cycles being removed."""
    found = cycles(import_graph(module_files(ROOT)))
    unexpected = [sorted(c) for c in found if not any(c <= known for known in KNOWN_CYCLES)]
    assert not unexpected, f"import cycles: {unexpected}"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} -> {b}" for a, targets in sorted(graph.items()) for b in sorted(targets)
            if layer_of(b) not in LAYER_MAY_IMPORT[layer_of(a)]]


def test_layers_import_only_downwards():
    """Every project import follows DESIGN.md's direction (lazy and TYPE_CHECKING included)."""
    wrong = layer_violations(import_graph(module_files(ROOT)))
    assert not wrong, wrong


MODULE_LINES_MAX = 650          # issue 7: "no module in minilog/, protocol/ or storage/ over 650 lines"


def oversized_modules(root: pathlib.Path, package_dirs: dict[str, str] | None = None,
                      lines_max: int = MODULE_LINES_MAX) -> list[str]:
    """`module (N lines)` for every module under the source dirs longer than `lines_max`."""
    out = []
    for name, (path, _) in sorted(module_files(root, package_dirs).items()):
        n = len(path.read_text().splitlines())
        if n > lines_max:
            out.append(f"{name} ({n} lines)")
    return out


def test_no_module_over_650_lines():
    """Every module in minilog/, protocol/ and storage/ stays within 650 lines (split along a
    real seam, one job per module, when one grows past it)."""
    too_long = oversized_modules(ROOT)
    assert not too_long, f"modules over {MODULE_LINES_MAX} lines: {too_long}"


def test_module_size_check_finds_a_long_module(tmp_path):
    """The size check above can fail: a 651-line module is reported, a 650-line one is not."""
    _write_tree(tmp_path, {"pkg/__init__.py": "", "pkg/long.py": "x = 1\n" * 651,
                           "pkg/sub/ok.py": "x = 1\n" * 650})
    assert oversized_modules(tmp_path, {"pkg": "pkg"}) == ["pkg.long (651 lines)"]


def test_mypy_sees_the_installed_layout():
    """minilog/protocol and minilog/storage link to the top-level dirs, so mypy (which does not
    read setuptools' package-dir) checks the tree as installed (pyproject's [tool.mypy])."""
    for name in ("protocol", "storage"):
        link = ROOT / "minilog" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), link


def _write_tree(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cycle_check_finds_synthetic_cycles(tmp_path):
    """The checks above can fail: a cycle through a TYPE_CHECKING import, one through a
    relative lazy import, one through `from package import name` of an __init__ attribute,
    and a wrong-direction import are each found; an acyclic tree passes."""
    tree = _write_tree(tmp_path, {
        "minilog/__init__.py": "",
        "minilog/broker/__init__.py": "from .app import Broker\n",
        "minilog/broker/app.py": "from minilog.broker import handlers\nclass Broker: ...\n",
        "minilog/broker/handlers.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from minilog.broker.app import Broker\n"),
        "minilog/client/__init__.py": "",
        "minilog/client/a.py": "def f():\n    from . import b\n",
        "minilog/client/b.py": "from .a import f\n",
        "minilog/cli/__init__.py": "from minilog.cli.c import run\nNAME = 1\n",
        "minilog/cli/c.py": "from minilog.cli import NAME\ndef run(): ...\n",
        "minilog/cli/d.py": "from minilog.cli import c\n",
        "protocol/__init__.py": "from ._x import X\n",
        "protocol/_x.py": "import minilog.broker.app\nX = 1\n",
        "storage/__init__.py": "from minilog.protocol import X\n",
    })
    graph = import_graph(module_files(tree))
    assert sorted(sorted(c) for c in cycles(graph)) == [
        ["minilog.broker.app", "minilog.broker.handlers"],
        ["minilog.cli", "minilog.cli.c"],
        ["minilog.client.a", "minilog.client.b"],
    ]
    assert layer_violations(graph) == ["minilog.protocol._x -> minilog.broker.app"]
    assert graph["minilog.storage"] == {"minilog.protocol"}
    assert graph["minilog.cli.d"] == {"minilog.cli.c"}     # own package: the submodule only

    fixed = _write_tree(tmp_path / "fixed", {
        "minilog/__init__.py": "",
        "minilog/a.py": "from minilog import b\n",
        "minilog/b.py": "import minilog.c\n",
        "minilog/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import os\n",
        "protocol/__init__.py": "", "storage/__init__.py": "",
    })
    assert cycles(import_graph(module_files(fixed))) == []
    assert layer_violations(import_graph(module_files(fixed))) == []


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
