"""The host: every ComfyUI module, function and name this pack touches, in one place.

Nodes and the pack's entry point import ComfyUI only through this module (a test enforces it), so
moving to a newer ComfyUI means reading this one file. Everything here is ComfyUI's public surface:
the V3 node API (`comfy_api.latest`), `folder_paths`, `comfy.model_management`, `comfy.utils`,
ComfyUI's LoRA loader and the execution blocker. docs/CONVENTIONS.md lists the same names.
"""
from __future__ import annotations

import logging
import os

import comfy.lora
import comfy.lora_convert
import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import ComfyExtension, io, ui
from comfy_execution.graph_utils import ExecutionBlocker

__all__ = ["ComfyExtension", "ExecutionBlocker", "io", "ui"]


# --- folders (folder_paths) ----------------------------------------------------------------------

def add_model_folder(name: str, path: str | None = None) -> None:
    """Register a model folder kind (default `<models>/<name>`); ComfyUI searches the paths in order."""
    folder_paths.add_model_folder_path(name, path or os.path.join(folder_paths.models_dir, name))


def model_folder_paths(name: str) -> list[str]:
    """Every folder registered for a model kind (`extra_model_paths.yaml` included)."""
    return list(folder_paths.get_folder_paths(name))


def model_filenames(name: str) -> list[str]:
    """The files ComfyUI lists for a model kind (what a core combo shows)."""
    return list(folder_paths.get_filename_list(name))


def model_file_path(name: str, filename: str) -> str | None:
    """Full path of a listed model file, or None."""
    return folder_paths.get_full_path(name, filename)


def model_file_path_or_raise(name: str, filename: str) -> str:
    """Full path of a listed model file; ComfyUI's own error when it is gone."""
    return folder_paths.get_full_path_or_raise(name, filename)


def models_directory() -> str:
    """ComfyUI's `models/` folder (under `--base-directory` when one is given)."""
    return folder_paths.models_dir


def output_directory() -> str:
    return folder_paths.get_output_directory()


def user_directory() -> str:
    return folder_paths.get_user_directory()


# --- progress and files (comfy.utils) -------------------------------------------------------------

def progress_bar(total: int):
    """ComfyUI's progress bar (shown on the node in the web page)."""
    return comfy.utils.ProgressBar(total)


def load_torch_file(path: str) -> tuple[dict, dict]:
    """(state dict, metadata) of a .safetensors/.ckpt file, loaded safely."""
    sd, meta = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    return sd, meta or {}


# --- LoRA (ComfyUI's own loader) ------------------------------------------------------------------

def lora_patches(model, clip, lora_sd: dict) -> tuple[dict, dict, dict]:
    """(patches, key map, converted state dict) of a LoRA for this MODEL/CLIP pair, as core's loader makes them."""
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    sd = comfy.lora_convert.convert_lora(lora_sd)
    return comfy.lora.load_lora(sd, key_map, log_missing=False), key_map, sd


# --- memory (comfy.model_management) --------------------------------------------------------------

def torch_device():
    return comfy.model_management.get_torch_device()


def free_memory(memory_required: float, device=None) -> None:
    """Ask ComfyUI to offload its own models until `memory_required` bytes are free on `device`."""
    comfy.model_management.free_memory(memory_required, device or torch_device())


def _chain_release_on_comfy_unload() -> None:
    """ComfyUI's `/free` (unload_models) also releases rezcty's DINOv2 and LLM caches.

    Those models are not ComfyUI ModelPatchers, so ComfyUI cannot see them; chaining our release
    onto `unload_all_models` lets a factory line hand the whole GPU to the next one.
    """
    mm = comfy.model_management
    original = mm.unload_all_models
    if getattr(original, "_rezcty_chained", False):
        return

    def unload_all_models(*args, **kwargs):
        from rezcty_core.eye import dinov2 as vision
        from rezcty_core.llm import model as llm

        vision.unload_all()
        llm.unload_all()
        logging.info("rezcty: released cached DINOv2 and LLM models")
        return original(*args, **kwargs)

    unload_all_models._rezcty_chained = True
    mm.unload_all_models = unload_all_models


_chain_release_on_comfy_unload()


# --- core nodes ---------------------------------------------------------------------------------

def core_node_class(class_type: str):
    """A core node's class by its id (e.g. `UpscaleModelLoader`), or None."""
    import nodes as comfy_nodes  # ComfyUI's own nodes.py, importable once the server runs

    return comfy_nodes.NODE_CLASS_MAPPINGS.get(class_type)
