"""The embedded Real-ESRGAN upscalers in core ComfyUI's `upscale_models` list, whatever the base directory.

The pack adds no upscale node of its own: core `UpscaleModelLoader` / `ImageUpscaleWithModel` do the work.
This module
* appends the converted embedded folder (`embedded_dir()/upscale_models`, made at set-up by
  `rezcty_core.sd.upscaler`) to the folder's search paths; the user's `models/upscale_models/` stays
  first, so a file of the same name there wins;
* makes core `UpscaleModelLoader` name the file when it cannot load it: core reports a corrupt file as
  safetensors' bare "header too large" / "incomplete metadata" (several lines, or no path at all) and a
  file of another architecture as spandrel's "Unsupported model". The result and every working load
  are untouched; only the exception's text changes (one line: the file, the cause, what to do).
"""
from __future__ import annotations

from rezcty_core.sd.upscaler import embedded_upscaler_dir

from . import host

host.add_model_folder("upscale_models", str(embedded_upscaler_dir()))


def load_error_message(model_name: str, error: BaseException) -> str:
    path = host.model_file_path("upscale_models", model_name) or f"models/upscale_models/{model_name}"
    reason = " ".join(str(error).split())
    cut = reason.find(" File path:")  # core appends the path and advice after its first line
    reason = (reason[:cut] if cut > 0 else reason)[:300] or "no detail"
    return (f"upscale model {path} could not be loaded ({type(error).__name__}: {reason}); "
            "the file is corrupt, truncated or not an image upscaler: replace it (a .safetensors/.pth "
            "ESRGAN-family model in models/upscale_models/) or pick another model_name")


def _name_the_file_on_load_errors() -> None:
    core = host.core_node_class("UpscaleModelLoader")
    original = getattr(core, "execute", None)
    if original is None or getattr(original, "_rezcty_names_file", False):
        return
    func = original.__func__

    def execute(cls, model_name, *args, **kwargs):
        try:
            return func(cls, model_name, *args, **kwargs)
        except Exception as e:  # re-raised with the file named; the cause stays chained
            raise ValueError(load_error_message(model_name, e)) from e

    execute._rezcty_names_file = True
    core.execute = classmethod(execute)


_name_the_file_on_load_errors()

NODES: list = []
