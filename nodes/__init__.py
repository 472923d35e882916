"""ComfyUI nodes of the rezcty pack: schemas, type conversion, and calls into rezcty_core.

Each module in this package lists its node classes in a module-level `NODES` list.
"""
from __future__ import annotations

import importlib
import pkgutil


def discover_nodes() -> list:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in ("common", "host"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "NODES", []))
    return found
