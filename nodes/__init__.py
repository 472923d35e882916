"""ComfyUI nodes of the rezcty pack: schemas, type conversion, and calls into rezcty_core.

Each module in this package lists its node classes in a module-level `NODES` list.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil


def _embedded_models_folder() -> None:
    """Where the embedded default models are read: `<models>/rezcty/embedded` registered with ComfyUI as the model
    folder `rezcty_embedded` (extra_model_paths.yaml may add more), unless REZCTY_EMBEDDED_DIR names one. Says at
    start-up which models are not prepared and the one command that prepares them; never prepares, never fails."""
    import os

    from rezcty_core.common import embedded_models, paths

    from . import host

    try:
        host.add_model_folder("rezcty_embedded", os.path.join(host.models_directory(), *paths.MODELS_SUBDIR))
        paths.set_host_embedded_dirs(lambda: host.model_folder_paths("rezcty_embedded"))
        absent = [n for n in embedded_models.names() if not embedded_models.is_present(n)]
        if absent:
            logging.warning("rezcty: embedded models not prepared in %s: %s; prepare them with: %s",
                            paths.embedded_dir(), ", ".join(absent), embedded_models.prepare_command(absent))
    except Exception as e:  # a lookup problem must never stop ComfyUI starting
        logging.warning("rezcty: could not look up the embedded models (%s: %s)", type(e).__name__, e)


def discover_nodes() -> list:
    _embedded_models_folder()
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in ("common", "host"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found.extend(getattr(module, "NODES", []))
    return found
