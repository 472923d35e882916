"""Pre-flight: check a graph against the server's /object_info before anything is queued.

Unknown node types, missing models (with the models/ folder they belong in), bad combo values,
out-of-range numbers and broken links are listed together, one line each.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft")
# input name -> models/ folder, to name the folder when a model is missing
MODEL_FOLDERS = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "style_lora": "loras", "structure_lora": "loras",
    "vae_name": "vae", "embedding": "embeddings", "model_name": "upscale_models", "base_model": "LLM",
    "adapter": "rezcty_adapters", "unet_name": "diffusion_models", "clip_name": "text_encoders",
    "control_net_name": "controlnet",
}
FOLDER_BY_CLASS_INPUT = {("RezctyDINOv2Loader", "model"): "dinov2"}
def input_specs(info: dict) -> dict[str, tuple[list, bool]]:
    specs: dict[str, tuple[list, bool]] = {}
    for section, required in (("required", True), ("optional", False)):
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            specs[name] = (spec if isinstance(spec, list) else [spec], required)
    return specs


def combo_options(spec: list) -> list | None:
    kind = spec[0] if spec else None
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        return list(opts.get("options", [])) if "options" in opts else None
    return None


def _types_match(out_type: str, in_type: str) -> bool:
    if "*" in (out_type, in_type) or out_type == in_type:
        return True
    return bool(set(str(out_type).split(",")) & set(str(in_type).split(",")))


def _model_folder(class_type: str, name: str, options: list) -> str | None:
    if (class_type, name) in FOLDER_BY_CLASS_INPUT:
        return FOLDER_BY_CLASS_INPUT[(class_type, name)]
    if name in MODEL_FOLDERS:
        return MODEL_FOLDERS[name]
    if any(str(o).lower().endswith(MODEL_EXTS) for o in options):
        return "the matching models/ folder"
    return None


def validate_graph(graph: dict, object_info: dict, uploaded: Iterable[str] = ()) -> list[str]:
    """Every problem ComfyUI would refuse the graph for (and a few it would only fail on), one line each."""
    problems: list[str] = []
    uploaded = set(uploaded)
    if not graph:
        return ["the workflow is empty"]
    has_output = False
    for node_id, node in graph.items():
        class_type = node.get("class_type")
        label = f"node {node_id} ({class_type})"
        info = object_info.get(class_type)
        if info is None:
            problems.append(f"{label}: missing node type '{class_type}' — install the custom node pack "
                            f"that provides it (or update it) and restart ComfyUI")
            continue
        has_output = has_output or bool(info.get("output_node"))
        specs = input_specs(info)
        inputs = node.get("inputs", {})
        for name, (spec, required) in specs.items():
            if name not in inputs:
                if required:
                    problems.append(f"{label}: missing required input '{name}'")
                continue
            problems.extend(_check_value(graph, object_info, label, class_type, name, spec, inputs[name], uploaded))
    if not has_output:
        problems.append("the workflow has no output node (SaveImage, PreviewAny, a writer…): nothing would run")
    return problems


def _check_value(graph: dict, object_info: dict, label: str, class_type: str, name: str, spec: list,
                 value: Any, uploaded: set[str]) -> list[str]:
    kind = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    where = f"{label}.{name}"
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int):
        src = graph.get(value[0])
        if src is None:
            return [f"{where}: linked to node {value[0]}, which is not in the workflow"]
        src_info = object_info.get(src.get("class_type"))
        if src_info is None:
            return []  # reported as a missing node already
        outs = src_info.get("output", [])
        if value[1] >= len(outs):
            return [f"{where}: linked to output {value[1]} of node {value[0]} ({src['class_type']}), "
                    f"which has only {len(outs)} outputs"]
        in_type = "COMBO" if isinstance(kind, list) else str(kind)
        if not _types_match(str(outs[value[1]]), in_type) and not (isinstance(kind, list) and outs[value[1]] == "COMBO"):
            return [f"{where}: expects {in_type} but is linked to {outs[value[1]]} "
                    f"(output {value[1]} of node {value[0]} {src['class_type']})"]
        return []
    options = combo_options(spec)
    if options is not None:
        if opts.get("image_upload") and (value in uploaded or value in options):
            return []
        if opts.get("multiselect") and isinstance(value, list):
            bad = [v for v in value if v not in options]
            return [f"{where}: bad values {bad} (allowed: {_preview(options)})"] if bad else []
        if value in options:
            return []
        if opts.get("image_upload"):
            return [f"{where}: input file '{value}' is neither a local file nor in the server's input/ folder"]
        folder = _model_folder(class_type, name, options)
        embedded = _embedded_model_named(value)
        if embedded:
            return [f"{where}: the embedded model '{value}' is not prepared on the server — run "
                    f"`python -m rezcty_core.embedded prepare --only {embedded}` in the pack's folder there"]
        if folder:
            return [f"{where}: missing model '{value}' — put it in models/{folder}/ on the server "
                    f"(available: {_preview(options)})"]
        return [f"{where}: bad value {value!r} (allowed: {_preview(options)})"]
    if kind == "INT" or kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and isinstance(value, float) and not value.is_integer()):
            return [f"{where}: expected {'an integer' if kind == 'INT' else 'a number'}, got {value!r}"]
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and value < lo:
            return [f"{where}: {value} is out of range (minimum {lo})"]
        if hi is not None and value > hi:
            return [f"{where}: {value} is out of range (maximum {hi})"]
        return []
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return [f"{where}: expected true or false, got {value!r}"]
    if kind == "STRING" and not isinstance(value, str):
        return [f"{where}: expected text, got {value!r}"]
    return []


def _embedded_model_named(value: object) -> str | None:
    """The manifest name of an embedded model whose converted file is `value` (e.g. RealESRGAN_x4plus.safetensors)."""
    from rezcty_core.common import embedded_models

    for name in embedded_models.names():
        if any(Path(out).name == value for out in embedded_models.entry(name).get("outputs", [])):
            return name
    return None


def _preview(options: list, limit: int = 8) -> str:
    if not options:
        return "none — the folder is empty"
    shown = ", ".join(str(o) for o in options[:limit])
    return shown + (f", … ({len(options)} in all)" if len(options) > limit else "")


# ---------------------------------------------------------------------------------------------
