"""The host: every ComfyUI module, function and name this pack touches, in one place.

Nodes and the pack's entry point import ComfyUI only through this module (a test enforces it), so
moving to a newer ComfyUI means reading this one file. Everything here is ComfyUI's public surface:
the V3 node API (`comfy_api.latest`, its `Caching` provider hook for the end of a prompt), `folder_paths`,
`comfy.model_management` and `comfy.model_patcher` (the memory manager that owns every model the pack loads),
`comfy.utils`, ComfyUI's LoRA loader and the execution blocker. Nothing of ComfyUI is patched or reassigned
(a test enforces it). docs/CONVENTIONS.md lists the same names.
"""
from __future__ import annotations

import logging
import os
import sys
import weakref

import comfy.lora
import comfy.lora_convert
import comfy.model_management
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import Caching, ComfyExtension, io, ui
from comfy_execution.graph_utils import ExecutionBlocker
from comfy_execution.utils import get_executing_context

from rezcty_core.common import residency

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


# --- memory (comfy.model_management, comfy.model_patcher) -----------------------------------------
# Every model the pack loads (the LLM with its projector and adapter, DINOv2) is a ModelPatcher in ComfyUI's
# memory manager, as ComfyUI hosts its own text encoders, CLIP vision and upscale models: it appears in
# `current_loaded_models`, loads on ComfyUI's torch device through `load_models_gpu`, is evicted by
# `free_memory` when another model needs the room, and released by `unload_all_models` (`/free`, the web
# page's "Unload Models"). The core side is `rezcty_core.common.residency` (this host is installed there).

def torch_device():
    return comfy.model_management.get_torch_device()


def free_memory(memory_required: float, device=None) -> None:
    """Ask ComfyUI to unload models until `memory_required` bytes are free on `device`."""
    comfy.model_management.free_memory(memory_required, device or torch_device())


def _unique_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's tensors, a tied weight (embedding = LM head) counted once."""
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        key = (t.device, t.data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


class _Weights(torch.nn.Module):
    """One rezcty model's loaded modules under one torch module: what ComfyUI measures, moves and forgets.

    Named per kind (`RezctyLLM`, `RezctyDINOv2`), the name ComfyUI's log and model list show."""

    def __init__(self, modules: dict) -> None:
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)


_WEIGHT_CLASSES: dict[str, type] = {}


def _weights_class(kind: str) -> type:
    if kind not in _WEIGHT_CLASSES:
        _WEIGHT_CLASSES[kind] = type(f"Rezcty{kind}", (_Weights,), {"__doc__": f"rezcty's {kind} weights."})
    return _WEIGHT_CLASSES[kind]


class ResidentPatcher(comfy.model_patcher.ModelPatcher):
    """A rezcty model (`residency.Resident`) as a ModelPatcher.

    Whole or nothing: transformers modules cannot run with part of their weights on another device (they lack
    ComfyUI's casting ops), so a load moves every module and a partial unload frees nothing, which makes
    `free_memory` unload the whole model. An unload offloads to `offload_device` when it can; when it cannot
    (bitsandbytes weights, the CPU where there is nowhere to offload to, keep_loaded off, too little free RAM)
    the weights are dropped, and the model's next use reads them from disk again."""

    def __init__(self, resident, load_device, offload_device) -> None:
        self._resident = weakref.ref(resident)  # the model's handle owns this patcher, not the other way round
        self.weights_movable = bool(resident.movable)
        self.drop_on_unload = False  # keep_loaded off: an unload gives the RAM back too
        weights = _weights_class(resident.kind)(resident.weight_modules())
        first = next(iter(weights.parameters()), None)
        weights.device = first.device if first is not None else offload_device
        size = _unique_bytes(weights)
        if weights.device == load_device:  # already where it runs (the CPU, bitsandbytes): nothing left to load
            weights.model_loaded_weight_memory = size
            weights.model_lowvram = False
        super().__init__(weights, load_device=load_device, offload_device=offload_device, size=size)

    def can_offload(self) -> bool:
        if self.drop_on_unload or not self.weights_movable or self.offload_device == self.load_device:
            return False
        if self.offload_device.type == "cpu":  # offloading into RAM that is not there would only swap or fail
            return self.model_size() < comfy.model_management.get_free_memory(self.offload_device) * 0.9
        return True

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        if device_to is not None and self.weights_movable:
            self.model.to(device_to)
        if device_to is not None:
            self.model.device = device_to
        self.model.model_loaded_weight_memory = self.model_size()
        self.model.model_lowvram = False
        self.model.lowvram_patch_counter = 0
        self.model.model_offload_buffer_memory = 0
        self.model.current_weight_patches_uuid = self.patches_uuid

    def partially_unload(self, device_to, memory_to_free=0, force_patch_weights=False):
        return 0

    def detach(self, unpatch_all=True):
        if unpatch_all and not self.can_offload():
            self.drop()
            return self.model
        return super().detach(unpatch_all)

    def drop(self) -> None:
        """Forget the weights: ComfyUI's record of them, then the model's own (which frees the memory).

        The model keeps this (now empty) patcher until its next use registers a new one: ComfyUI's `free_memory`
        reads its list entry after `detach` returns, so the patcher must not die inside it."""
        for name in list(self.model._modules):
            del self.model._modules[name]
        self.model.model_loaded_weight_memory = 0
        self.model.device = self.offload_device
        resident = self._resident()
        if resident is not None and resident.patcher is self:
            resident.drop_weights()
        comfy.model_management.soft_empty_cache()


class _PromptEnd(Caching.CacheProvider):
    """ComfyUI's hook at the end of each prompt (its cache-provider API). It caches nothing: it only tells the
    host that the prompt ended, so keep_loaded-off models are unloaded once per prompt, not once per list item."""

    async def on_lookup(self, context):
        return None

    async def on_store(self, context, value) -> None:
        return None

    def should_cache(self, context, value=None) -> bool:
        return False

    def on_prompt_end(self, prompt_id: str) -> None:
        HOST.prompt_ended()


class ComfyHost:
    """`rezcty_core.common.residency`'s host inside ComfyUI: ComfyUI's device and memory manager."""

    def __init__(self) -> None:
        self.prompt_end_hooked = False
        self._pending: dict[int, object] = {}
        self._watched: weakref.WeakSet = weakref.WeakSet()

    def device(self, requested: str = "auto") -> str:
        """`auto` (and `cuda`) is ComfyUI's torch device: one device policy for every node."""
        dev = torch_device()
        if requested in ("auto", "", None) or (requested == "cuda" and dev.type == "cuda"):
            return str(dev)
        return residency.local_device(requested)

    def use(self, model) -> None:
        """Before each use: ComfyUI loads the model (reading it from disk first if it was dropped) on its device,
        making room by evicting others, and marks it the most recently used."""
        patcher = model.patcher
        if patcher is None or not model.weights_loaded:
            patcher = self._register(model)
        extra = max(0, int(model.memory_needed()) - patcher.model_size())  # an LLM's KV cache and activations
        comfy.model_management.load_models_gpu([patcher], memory_required=extra, force_full_load=True)

    def _register(self, model) -> ResidentPatcher:
        load = torch.device(model.device)
        offload = comfy.model_management.unet_offload_device() if load.type != "cpu" else load
        if not model.movable:
            offload = load
        if load.type != "cpu":  # room before reading: bitsandbytes quantizes straight onto the device
            free_memory(model.memory_needed(), load)
        model.load_weights(str(offload))
        patcher = ResidentPatcher(model, load, offload)
        model.patcher = patcher
        if model not in self._watched:  # ComfyUI's node cache (RAM pressure, a changed graph) may drop the model
            self._watched.add(model)
            gone = weakref.finalize(model, print, f"[rezcty] {model.kind} {model.label} left ComfyUI's node cache: "
                                                  "its memory is freed", file=sys.stderr, flush=True)
            gone.atexit = False  # not at shutdown: nothing is being evicted then
        return patcher

    def release(self, model) -> None:
        """keep_loaded off: unload at the end of the running prompt (a list of ideas runs the node once per item
        and loads the model once), or now outside a prompt."""
        if self.prompt_end_hooked and get_executing_context() is not None:
            self._pending[id(model)] = model
        else:
            self.unload(model)

    def unload(self, model) -> None:
        """Unload now, through ComfyUI's memory manager, and give the RAM back too."""
        patcher = model.patcher
        if patcher is None:
            model.drop_weights()
            return
        patcher.drop_on_unload = True
        others = [m for m in comfy.model_management.current_loaded_models if m.model is not patcher]
        comfy.model_management.free_memory(1e30, patcher.load_device, keep_loaded=others)
        if model.weights_loaded:  # not in ComfyUI's list (offloaded to RAM earlier): forget it here
            patcher.drop()

    def prompt_ended(self) -> None:
        pending, self._pending = self._pending, {}
        for model in pending.values():
            try:
                self.unload(model)
            except Exception as e:  # one model's unload never stops the next prompt
                logging.warning("rezcty: could not unload %r: %s", model, e)

    async def hook_prompt_end(self) -> None:
        """Register `_PromptEnd` (called from the extension's on_load)."""
        if not self.prompt_end_hooked:
            await Caching().register_provider(_PromptEnd())
            self.prompt_end_hooked = True


HOST = ComfyHost()
residency.set_host(HOST)
