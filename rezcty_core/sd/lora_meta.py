"""Facts about a LoRA file that ComfyUI does not tell: its trigger words, its role, how well it fits a model.

Trigger words are read, first hit wins, from
1. the project's own metadata key `rezcty_trigger` (written by `training.train_lora`),
2. a sidecar text file next to the LoRA (`NAME.txt`, comma- or line-separated, `#` comments),
3. kohya-ss metadata: the tag(s) present in (nearly) every caption of a dataset folder
   (`ss_tag_frequency`), else the instance token of the folder name (`10_token class`),
   else `ss_output_name`.
The key names are shared with the training scripts; see docs/lora.md.
"""
from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TRIGGER_KEY = "rezcty_trigger"
ROLE_KEY = "rezcty_role"
ROLES = ("style", "structure", "embedding")

# The brief's inference ranges (inclusive); outside them is allowed but noted on the node.
STRENGTH_RANGES: dict[str, tuple[float, float]] = {"style": (0.7, 1.0), "structure": (0.4, 0.7)}
EMBEDDING_WEIGHT_RANGE: tuple[float, float] = (0.2, 0.4)

_MAX_HEADER = 100 * 1024 * 1024


@dataclass
class TriggerInfo:
    words: list[str] = field(default_factory=list)
    source: str = "none"  # rezcty_trigger | sidecar | ss_tag_frequency | ss_dataset_dir | ss_output_name | none
    role: str | None = None


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` dict of a .safetensors header (no tensors are read); {} for other files."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {}
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER:
            raise ValueError(f"{path}: safetensors header claims {size} bytes; the file is damaged")
        header = json.loads(f.read(size))
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def split_words(text: str) -> list[str]:
    """'a, b\\nc' -> ['a', 'b', 'c']: comma/newline separated, trimmed, no empties, no `#` comments."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        out.extend(w.strip() for w in line.split(","))
    return [w for w in out if w]


def dedupe(words: Iterable[str]) -> list[str]:
    """Keep the first occurrence of each word (case-insensitive), in order."""
    seen: set[str] = set()
    out: list[str] = []
    for w in words:
        key = w.strip().lower()
        if key and key not in seen:
            seen.add(key)
            out.append(w.strip())
    return out


def kohya_triggers(metadata: Mapping[str, str]) -> tuple[list[str], str]:
    """Trigger words from kohya-ss metadata, and which key gave them."""
    freq_raw = metadata.get("ss_tag_frequency")
    if freq_raw:
        try:
            freq = json.loads(freq_raw)
        except json.JSONDecodeError:
            freq = {}
        words: list[str] = []
        for tags in (freq.values() if isinstance(freq, dict) else []):
            if not isinstance(tags, dict) or not tags:
                continue
            counts = {str(k).strip(): int(v) for k, v in tags.items() if str(k).strip()}
            top = max(counts.values(), default=0)
            # a trigger ends every caption, so it is among the most frequent tags; a folder where
            # every tag is equally rare (one caption) says nothing
            if top >= 2 or len(counts) == 1:
                words.extend(sorted((k for k, v in counts.items() if v == top), key=str.lower)[:3])
        if words:
            return dedupe(words), "ss_tag_frequency"
        dirs = [m.group(1).strip() for d in (freq if isinstance(freq, dict) else {})
                if (m := re.match(r"^\d+_(.+)$", str(d)))]
        tokens = [d.split()[0] for d in dirs if d.split()]
        if tokens:
            return dedupe(tokens), "ss_dataset_dir"
    name = (metadata.get("ss_output_name") or "").strip()
    if name:
        return [name], "ss_output_name"
    return [], "none"


def lora_triggers(path: str | Path, metadata: Mapping[str, str] | None = None) -> TriggerInfo:
    """Trigger words of a LoRA file (see the module docstring for the order of sources)."""
    path = Path(path)
    if metadata is None:
        try:
            metadata = read_safetensors_metadata(path)
        except (OSError, ValueError, json.JSONDecodeError):
            metadata = {}
    role = (metadata.get(ROLE_KEY) or "").strip().lower() or None
    own = split_words(metadata.get(TRIGGER_KEY, ""))
    if own:
        return TriggerInfo(dedupe(own), TRIGGER_KEY, role)
    # next to the name the user picked, or next to the real file when that name is a link
    for sidecar in dict.fromkeys((path.with_suffix(".txt"), path.resolve().with_suffix(".txt"))):
        if sidecar.is_file():
            words = split_words(sidecar.read_text(encoding="utf-8", errors="replace"))
            if words:
                return TriggerInfo(dedupe(words), "sidecar", role)
    words, source = kohya_triggers(metadata)
    return TriggerInfo(words, source, role)


def strength_note(slot: str, which: str, value: float) -> str | None:
    """A note when a non-zero strength lies outside the brief's range for the slot, else None."""
    lo, hi = STRENGTH_RANGES[slot]
    if value == 0 or lo <= value <= hi:
        return None
    return f"{slot} {which} strength {value:g} is outside the brief's range {lo:g}–{hi:g} (allowed)"


def unmatched_keys(file_keys: Iterable[str], matched_modules: Iterable[str]) -> list[str]:
    """Keys of a LoRA file that belong to none of the modules the model accepted.

    A key belongs to module `m` when it is `m.<suffix>` (kohya `.lora_down.weight`, `.alpha`,
    PEFT `.lora_A.weight`, …) or `m_lora.<suffix>` (diffusers attention-processor format).
    """
    matched = set(matched_modules)
    out: list[str] = []
    for key in file_keys:
        parts = key.split(".")
        hit = False
        for i in range(len(parts) - 1, 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in matched or (prefix.endswith("_lora") and prefix[:-5] in matched):
                hit = True
                break
        if not hit:
            out.append(key)
    return out


def unmatched_warning(slot: str, name: str, unmatched: int, total: int, shape_mismatch: int = 0) -> str | None:
    """The text shown on the node when keys of a LoRA did not fit the model, else None."""
    if unmatched == 0 and shape_mismatch == 0:
        return None
    parts = []
    if unmatched:
        parts.append(f"{unmatched} of {total} keys match no layer of this model")
    if shape_mismatch:
        parts.append(f"{shape_mismatch} layers have the wrong shape")
    mostly_foreign = unmatched * 2 >= total or shape_mismatch > 0
    hint = " — is it a LoRA for another base model (e.g. SDXL on SD 1.5)?" if mostly_foreign else ""
    return f"WARNING {slot} LoRA '{name}': " + "; ".join(parts) + f"; those were not applied{hint}"
