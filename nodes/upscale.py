"""The embedded Real-ESRGAN upscalers in core ComfyUI's `upscale_models` list, whatever the base directory.

The pack adds no upscale node of its own: core `UpscaleModelLoader` / `ImageUpscaleWithModel` do the work.
This module appends the converted embedded folder (`embedded_dir()/upscale_models`, made by `python -m
rezcty_core.embedded prepare`) to the folder's search paths, through ComfyUI's public `folder_paths`; the user's
`models/upscale_models/` stays first, so a file of the same name there wins. Core's loader is left as it is (no
ComfyUI class or function is patched): a corrupt file there gets core's own error, which names the file.
"""
from __future__ import annotations

from rezcty_core.sd.upscaler import embedded_upscaler_dir

from . import host

host.add_model_folder("upscale_models", str(embedded_upscaler_dir()))

NODES: list = []
