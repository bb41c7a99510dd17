"""Lazy re-exports: a package names its public objects, imports them on first use.

Keeps `import minilog` (and `import minilog.broker`) cheap: the client, the
broker and trio load only when one of their names is touched.
"""

from __future__ import annotations

import importlib
from typing import Any
from collections.abc import Callable


def lazy_getattr(package: str, table: dict[str, str], namespace: dict[str, Any]) -> Callable:
    """Return a module `__getattr__` resolving `name` from `table[name]`'s module.

    The resolved object is cached in `namespace` (the package's globals), so
    each name is imported once.
    """

    def __getattr__(name: str) -> Any:
        module_name = table.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        namespace[name] = value
        return value

    return __getattr__
