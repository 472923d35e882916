"""Textual-inversion embeddings (rezcty_genius): read every common file format, check the width,
and the text/conditioning arithmetic behind the Embedding Bridge's `weight`.

Formats (what ComfyUI's own loader reads, too):
* A1111 `.pt`: `{"string_to_param": {"*": (n, d)}, "name": ..., "step": ...}`
* A1111 `.safetensors`: `{"emb_params": (n, d)}`
* diffusers `learned_embeds.bin` / `.safetensors`: `{"<token>": (d,) or (n, d)}`
* SDXL-style `.safetensors`: `{"clip_l": (n, 768), "clip_g": (n, 1280)}` — the part whose width fits is used.

Weight semantics (docs/lora.md): the conditioning is a linear blend
`cond = (1 - weight) * encode(text without the trigger) + weight * encode(text with the embedding)`,
so weight 0 is exactly the prompt without the embedding and weight 1 is the plain ComfyUI
`embedding:` behaviour.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rezcty_core.sd.lora_meta import TRIGGER_KEY, read_safetensors_metadata

KNOWN_WIDTHS = "SD 1.x = 768, SD 2.x = 1024, SDXL clip_g = 1280"
EXTENSIONS = (".safetensors", ".pt", ".bin", ".ckpt")


class EmbeddingError(ValueError):
    """An embedding file that cannot be used; the message names the file and what to do."""


@dataclass
class TIEmbedding:
    path: Path
    vectors: Any  # torch.Tensor (n_vectors, width), float32
    trigger: str
    file_format: str  # a1111 | a1111_safetensors | diffusers | sdxl
    aliases: list[str] = field(default_factory=list)  # every word in a prompt that means this embedding
    metadata: dict = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def n_vectors(self) -> int:
        return int(self.vectors.shape[0])


def _as_matrix(t: Any, path: Path, what: str):
    import torch

    if not torch.is_tensor(t) or not t.is_floating_point() or t.ndim == 0 or t.numel() == 0:
        raise EmbeddingError(f"embedding '{path.name}': {what} is not a float tensor of vectors")
    return t.detach().to(torch.float32).reshape(-1, t.shape[-1]).clone()


def _read_raw(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle with arbitrary objects, zip damage, …
        raise EmbeddingError(f"embedding '{path.name}' cannot be read safely as a torch file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}); re-save it as .safetensors") from None
    if not isinstance(data, dict):
        raise EmbeddingError(f"embedding '{path.name}': expected a dict of tensors, found {type(data).__name__}")
    return data


def _pick(data: dict, path: Path, expected_width: int | None) -> tuple[Any, str, str | None]:
    """(vectors, format, name stored in the file) from a loaded embedding dict."""
    import torch

    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or not params:
            raise EmbeddingError(f"embedding '{path.name}': 'string_to_param' holds no vectors")
        name = data.get("name") if isinstance(data.get("name"), str) else None
        return _as_matrix(next(iter(params.values())), path, "string_to_param"), "a1111", name
    if "emb_params" in data:
        return _as_matrix(data["emb_params"], path, "emb_params"), "a1111_safetensors", None
    if "clip_l" in data or "clip_g" in data:
        parts = {k: _as_matrix(data[k], path, k) for k in ("clip_l", "clip_g") if k in data}
        for vec in parts.values():
            if expected_width is None or vec.shape[-1] == expected_width:
                return vec, "sdxl", None
        return next(iter(parts.values())), "sdxl", None
    tensors = {k: v for k, v in data.items() if torch.is_tensor(v)}
    if len(tensors) == 1:
        key, vec = next(iter(tensors.items()))
        return _as_matrix(vec, path, f"'{key}'"), "diffusers", str(key)
    keys = ", ".join(sorted(map(str, data))[:8])
    raise EmbeddingError(f"embedding '{path.name}': unknown layout (keys: {keys}); expected A1111 string_to_param/"
                         "emb_params, diffusers {'<token>': vector} or SDXL clip_l/clip_g")


def load_ti_embedding(path: str | Path, expected_width: int | None = None) -> TIEmbedding:
    """Read a textual-inversion embedding; raise EmbeddingError naming both widths when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise EmbeddingError(f"embedding file not found: {path}")
    try:
        raw = _read_raw(path)
        meta = read_safetensors_metadata(path)
    except EmbeddingError:
        raise
    except Exception as e:
        raise EmbeddingError(f"embedding '{path.name}' is not a readable embedding file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    vectors, fmt, stored_name = _pick(raw, path, expected_width)
    width = int(vectors.shape[-1])
    if expected_width is not None and width != expected_width:
        raise EmbeddingError(
            f"embedding '{path.name}' has vectors {width} wide, but this CLIP text encoder expects {expected_width} "
            f"({KNOWN_WIDTHS}): use an embedding trained for this base model")
    trigger = (meta.get(TRIGGER_KEY) or "").split(",")[0].strip()
    if not trigger and fmt == "diffusers" and stored_name:
        trigger = stored_name.strip()
    if not trigger:
        trigger = path.stem
    aliases = [trigger, path.stem, path.name] + ([stored_name] if stored_name else [])
    if trigger.startswith("<") and trigger.endswith(">"):
        aliases.append(trigger[1:-1])
    seen: list[str] = []
    for a in aliases:
        if a and a.strip() and a.strip() not in seen:
            seen.append(a.strip())
    return TIEmbedding(path, vectors, trigger, fmt, seen, meta)


def _alias_pattern(aliases: list[str]) -> str:
    names = "|".join(re.escape(a) for a in sorted(set(aliases), key=len, reverse=True))
    ext = "|".join(re.escape(e) for e in EXTENSIONS)
    return rf"(?<![\w\-:.<])(?:embedding:)?(?:{names})(?:{ext})?(?![\w\-])"


def bridge_texts(text: str, aliases: list[str], reference: str) -> tuple[str, str, int]:
    """(plain, bridged, occurrences) for a prompt and an embedding.

    `plain` is the prompt with every mention of the embedding removed (its separators too);
    `bridged` has each mention replaced by `reference` (ComfyUI syntax, `embedding:FILE`), or
    `reference` appended at the end when the prompt does not mention the embedding.
    """
    pattern = _alias_pattern(aliases)
    count = len(re.findall(pattern, text))
    bridged = re.sub(pattern, lambda _m: reference, text)
    if count == 0:
        bridged = f"{text.rstrip()}, {reference}" if text.strip() else reference
    mark = "\x00"
    plain = re.sub(rf"\(\s*{pattern}\s*(?::\s*-?[\d.]+)?\s*\)", mark, text)
    plain = re.sub(pattern, mark, plain)
    plain = re.sub(rf"(^|\n)[ \t]*{mark}[ \t]*,?[ \t]*", r"\1", plain)
    plain = re.sub(rf"[ \t]*,?[ \t]*{mark}", "", plain)
    return plain, bridged, count


def blend(plain: Any, bridged: Any, weight: float) -> Any:
    """(1 - weight) * plain + weight * bridged along the last axes; the shorter token axis is
    zero-padded (as ComfyUI's ConditioningAverage does) when the embedding adds a 77-token chunk."""
    import torch

    if weight == 0:
        return plain
    if weight == 1:
        return bridged
    if plain.ndim >= 2 and plain.shape[-2] != bridged.shape[-2]:
        n = max(plain.shape[-2], bridged.shape[-2])

        def pad(t):
            extra = n - t.shape[-2]
            if extra == 0:
                return t
            return torch.cat([t, torch.zeros(*t.shape[:-2], extra, t.shape[-1], dtype=t.dtype, device=t.device)], -2)

        plain, bridged = pad(plain), pad(bridged)
    return torch.lerp(plain, bridged.to(plain.dtype), float(weight))


def weight_note(weight: float, low: float = 0.2, high: float = 0.4) -> str | None:
    if weight == 0 or low <= weight <= high:
        return None
    return f"weight {weight:g} is outside the brief's range {low:g}–{high:g} (allowed)"


def trigger_clash(trigger: str, lora_triggers: list[str]) -> str | None:
    """A warning when the embedding's trigger is also a LoRA trigger (the brief wants them distinct)."""
    clash = [t for t in lora_triggers if t.strip().lower() == trigger.strip().lower()]
    if not clash:
        return None
    return (f"WARNING embedding trigger '{trigger}' is also a LoRA trigger; the brief wants rezcty_genius to have "
            "its own word — retrain or rename it (training.train_embedding --token)")
