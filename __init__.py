"""rezcty: a ComfyUI node pack for an Adobe-Stock image factory (V3 entry point).

Nothing heavy happens at import time: models load on a node's first execute.
"""
import os
import sys

# `rezcty_core` is imported as a top-level package by the nodes and the training scripts alike,
# so there is one copy of each module (one cache, one loaded model) in the process.
_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

from .nodes import discover_nodes  # noqa: E402
from .nodes.host import HOST, ComfyExtension, io  # noqa: E402


class RezctyExtension(ComfyExtension):
    async def on_load(self) -> None:
        await HOST.hook_prompt_end()  # keep_loaded off unloads once per prompt (nodes/host.py)

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return discover_nodes()


async def comfy_entrypoint() -> ComfyExtension:
    return RezctyExtension()
