"""Shared node plumbing: custom types, model folders, folder-model combos, image conversion."""
from __future__ import annotations

import os

from . import host
from .host import io

CATEGORY = "rezcty"
EMBEDDED_PREFIX = "embedded: "

# Custom socket types (docs/CONTRACT.md): prefixed REZCTY_ so they never clash with other packs.
DinoType = io.Custom("REZCTY_DINO")
EmbeddingType = io.Custom("REZCTY_EMBEDDING")
LLMType = io.Custom("REZCTY_LLM")

# Model folders the pack adds under ComfyUI's models/ (HF-format folders, one per model).
PACK_MODEL_FOLDERS = ("dinov2", "LLM", "rezcty_adapters")
for _name in PACK_MODEL_FOLDERS:
    host.add_model_folder(_name)


def list_model_dirs(folder: str) -> list[str]:
    """Sub-folders (HF `save_pretrained` layout) of every path registered for `folder`."""
    names: set[str] = set()
    for root in host.model_folder_paths(folder):
        if not os.path.isdir(root):
            continue
        for entry in os.scandir(root):
            if entry.is_dir() and not entry.name.startswith("."):
                names.add(entry.name)
    return sorted(names)


def resolve_model_dir(folder: str, name: str) -> str:
    """Absolute path of a model folder chosen in a combo; a clear error when it is gone."""
    for root in host.model_folder_paths(folder):
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    searched = ", ".join(host.model_folder_paths(folder))
    raise FileNotFoundError(f"model folder '{name}' not found under models/{folder} (searched: {searched})")


def output_dir() -> str:
    return host.output_directory()


def images_to_uint8(images) -> list:
    """ComfyUI IMAGE (B,H,W,C float 0..1 torch tensor) -> list of HxWx3 uint8 numpy arrays."""
    import numpy as np

    arr = images.detach().cpu().float().clamp(0, 1).numpy()
    out = []
    for frame in arr:
        if frame.shape[-1] == 1:
            frame = np.repeat(frame, 3, axis=-1)
        out.append(np.round(frame[..., :3] * 255.0).astype(np.uint8))
    return out


def uint8_to_images(frames: list):
    """List of HxWx3 uint8 arrays of equal size -> ComfyUI IMAGE tensor (B,H,W,C float 0..1)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.stack([f.astype(np.float32) / 255.0 for f in frames]))
