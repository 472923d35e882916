"""Dual LoRA Loader: the style and the structure LoRA through ComfyUI's own LoRA machinery."""
from __future__ import annotations

import os

from rezcty_core.sd import lora_meta

from . import host
from .common import CATEGORY
from .host import io, ui

NONE = "none"
TRIGGERS_ATTACHMENT = "rezcty_lora_triggers"  # read by the Embedding Bridge (trigger clash warning)
_FILE_CACHE: dict[tuple, tuple[dict, dict]] = {}


def _load(path: str) -> tuple[dict, dict]:
    """(state dict, metadata) of a LoRA file; the last few are kept, keyed by path, size and mtime."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _FILE_CACHE:
        if len(_FILE_CACHE) >= 4:
            _FILE_CACHE.pop(next(iter(_FILE_CACHE)))
        _FILE_CACHE[key] = host.load_torch_file(path)
    return _FILE_CACHE[key]


def _shape_mismatches(patches: dict, shapes: dict) -> int:
    """Patched layers whose LoRA product or diff cannot have the layer's shape (ComfyUI skips them at render)."""
    bad = 0
    for key, patch in patches.items():
        target = shapes.get(key[0] if isinstance(key, tuple) else key)
        weights = getattr(patch, "weights", None)
        if target is None:
            continue
        if getattr(patch, "name", "") == "lora" and weights is not None and weights[3] is None:
            up, down = weights[0], weights[1]
            numel = up.shape[0] * down[0].numel()
            bad += int(up.shape[0] != target[0] or numel != _prod(target))
        elif isinstance(patch, tuple) and patch[0] == "diff":
            bad += int(tuple(patch[1][0].shape) != tuple(target))
    return bad


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def apply_lora(model, clip, path: str, strength_model: float, strength_clip: float):
    """Like comfy.sd.load_lora_for_models, but also counts the keys that fit neither model nor CLIP."""
    sd, meta = _load(path)
    patches, key_map, sd = host.lora_patches(model, clip, sd)
    if strength_model != 0:
        model = model.clone()
        model.add_patches(patches, strength_model)
        model.set_attachments("lora_metadata", meta)
    if strength_clip != 0:
        clip = clip.clone()
        clip.add_patches(patches, strength_clip)
    matched = [x for x, target in key_map.items() if target in patches]
    unmatched = lora_meta.unmatched_keys(sd.keys(), matched)
    shapes = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
    shapes.update({k: tuple(v.shape) for k, v in clip.cond_stage_model.state_dict().items()})
    return model, clip, meta, len(unmatched), len(sd), _shape_mismatches(patches, shapes)


def _strength(id_: str, default: float, slot: str, part: str) -> io.Float.Input:
    lo, hi = lora_meta.STRENGTH_RANGES[slot]
    return io.Float.Input(id_, default=default, min=-10.0, max=10.0, step=0.01,
                          tooltip=f"{slot} LoRA strength on the {part}; the brief's range is {lo:g}–{hi:g} "
                                  "(outside is allowed and noted on the node); 0 leaves it untouched")


class RezctyDualLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        loras = [NONE] + host.model_filenames("loras")
        return io.Schema(
            node_id="RezctyDualLoraLoader",
            display_name="Dual LoRA Loader",
            category=f"{CATEGORY}/loaders",
            description="Applies the rezcty style LoRA and structure LoRA with separate model/CLIP strengths, "
                        "and outputs their trigger words (style first) read from the files' metadata.",
            inputs=[
                io.Model.Input("model", tooltip="The SD 1.5 diffusion model."),
                io.Clip.Input("clip", tooltip="The SD 1.5 CLIP text encoder."),
                io.Combo.Input("style_lora", options=loras, default=NONE,
                               tooltip="'Painter of the soul' LoRA (rezcty_style) from models/loras, or none."),
                _strength("style_strength_model", 0.85, "style", "diffusion model"),
                _strength("style_strength_clip", 0.85, "style", "CLIP"),
                io.Combo.Input("structure_lora", options=loras, default=NONE,
                               tooltip="'Architect of space' LoRA (rezcty_structure) from models/loras, or none."),
                _strength("structure_strength_model", 0.55, "structure", "diffusion model"),
                _strength("structure_strength_clip", 0.55, "structure", "CLIP"),
            ],
            outputs=[
                io.Model.Output(tooltip="The model with both LoRAs applied."),
                io.Clip.Output(tooltip="The CLIP with both LoRAs applied."),
                io.String.Output(display_name="trigger_words",
                                 tooltip="Trigger words of the applied LoRAs, style first, deduplicated "
                                         "(wire into Whisperer Expand's trigger_words)."),
            ],
        )

    @classmethod
    def execute(cls, model, clip, style_lora, style_strength_model, style_strength_clip,
                structure_lora, structure_strength_model, structure_strength_clip) -> io.NodeOutput:
        notes: list[str] = []
        words: list[str] = []
        slots = (("style", style_lora, style_strength_model, style_strength_clip),
                 ("structure", structure_lora, structure_strength_model, structure_strength_clip))
        for slot, name, s_model, s_clip in slots:
            if name == NONE:
                continue
            if s_model == 0 and s_clip == 0:
                notes.append(f"{slot} LoRA '{name}' is off (both strengths 0)")
                continue
            path = host.model_file_path_or_raise("loras", name)
            model, clip, meta, unmatched, total, bad_shape = apply_lora(model, clip, path, s_model, s_clip)
            info = lora_meta.lora_triggers(path, meta)
            words += info.words
            notes += [n for n in (lora_meta.strength_note(slot, "model", s_model),
                                  lora_meta.strength_note(slot, "clip", s_clip),
                                  lora_meta.unmatched_warning(slot, name, unmatched, total, bad_shape)) if n]
            if info.role in ("style", "structure") and info.role != slot:
                notes.append(f"{slot} slot holds '{name}', whose metadata says it is a {info.role} LoRA")
            if not info.words:
                notes.append(f"{slot} LoRA '{name}' names no trigger word: add {os.path.splitext(name)[0]}.txt next to it")
            else:
                notes.append(f"{slot}: {', '.join(info.words)} (from {info.source})")
        triggers = lora_meta.dedupe(words)
        clip = clip.clone()
        clip.patcher.set_attachments(TRIGGERS_ATTACHMENT, list(triggers))
        text = ", ".join(triggers)
        shown = "\n".join([f"trigger words: {text or '(none)'}"] + notes)
        return io.NodeOutput(model, clip, text, ui=ui.PreviewText(shown))


NODES = [RezctyDualLoraLoader]
