"""Where an image came from: seeds, model files and sampler settings of the graph, and model file hashes.

The Metadata Writer node passes them as `WriteOptions.generation`; `writer.write_batch` stores them under
`reproducibility` in each image's XMP and JSON sidecar.
"""
from __future__ import annotations

from pathlib import Path

from rezcty_core.common import hashing

MODEL_INPUTS = {"ckpt_name": "checkpoints", "lora_name": "loras", "style_lora": "loras", "structure_lora": "loras",
                "vae_name": "vae", "embedding": "embeddings", "unet_name": "diffusion_models",
                "clip_name": "text_encoders"}
# inputs whose name is too generic to mean a model folder on any node ("model_name")
CLASS_MODEL_INPUTS = {("UpscaleModelLoader", "model_name"): "upscale_models"}
PARAM_INPUTS = ("steps", "cfg", "sampler_name", "scheduler", "denoise", "width", "height", "strength_model",
                "strength_clip", "style_strength_model", "style_strength_clip", "structure_strength_model",
                "structure_strength_clip", "weight", "upscale_method", "scale_by", "preset", "base_scale", "crop")


def generation_params(graph: dict | None) -> dict:
    """Seeds, model files (by ComfyUI folder) and sampler settings found in an API-format graph."""
    seeds: list[int] = []
    models: list[dict] = []
    nodes: dict[str, dict] = {}
    for node_id, node in sorted((graph or {}).items(), key=lambda kv: str(kv[0])):
        if not isinstance(node, dict):
            continue
        inputs = node.get("inputs", {}) or {}
        params = {}
        for key, value in inputs.items():
            if isinstance(value, list):
                continue  # a link, not a value
            if key in ("seed", "noise_seed") and isinstance(value, int):
                seeds.append(value)
                params[key] = value
            elif key in MODEL_INPUTS and isinstance(value, str) and value not in ("none", ""):
                models.append({"node": str(node_id), "input": key, "folder": MODEL_INPUTS[key], "name": value})
            elif (node.get("class_type"), key) in CLASS_MODEL_INPUTS and isinstance(value, str) and value:
                models.append({"node": str(node_id), "input": key,
                               "folder": CLASS_MODEL_INPUTS[(node.get("class_type"), key)], "name": value})
            elif key in PARAM_INPUTS:
                params[key] = value
        if params:
            nodes[str(node_id)] = {"class_type": node.get("class_type"), **params}
    return {"seeds": seeds, "models": models, "nodes": nodes, "upscaler": upscaler_record(models)}


def upscaler_record(models: list[dict]) -> dict | None:
    """The upscale model of the render (name, and sha256 once the models are hashed), or None."""
    ups = [m for m in models if m.get("folder") == "upscale_models"]
    if not ups:
        return None
    return {k: ups[0][k] for k in ("name", "node", "sha256") if k in ups[0]}


_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """Full SHA-256 of a model file (the hash model sites list), memoised by path, size and mtime."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = hashing.file_sha256(p)
    return _HASHES[key]
