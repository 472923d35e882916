"""The embedded Real-ESRGAN upscalers in core ComfyUI's `upscale_models` list, whatever the base directory.

The pack adds no upscale node of its own: core `UpscaleModelLoader` / `ImageUpscaleWithModel` do the work.
This module only appends the converted embedded folder (`embedded_dir()/upscale_models`, made at set-up
by `rezcty_core.sd.upscaler`) to the folder's search paths; the user's `models/upscale_models/` stays first,
so a file of the same name there wins.
"""
from __future__ import annotations

import folder_paths

from rezcty_core.sd.upscaler import embedded_upscaler_dir

folder_paths.add_model_folder_path("upscale_models", str(embedded_upscaler_dir()))

NODES: list = []
