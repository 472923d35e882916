"""Reproducible blueprints: what line 1's prompts.json records per prompt so line 2 renders it again identically.

An entry of prompts.json (every field but "prompt" optional; an absent one keeps the workflow's value):

    {"idea": "sunrise over mountain", "prompt": "...",
     "seeds": [1234567, 89012345],            # one image per seed ("N variations" = N distinct seeds)
     "preset": "3:2",                          # aspect preset (RezctyStockSize): base size + exact stock size
     "negative": "blurry, lowres, ...",
     "checkpoint": "v1-5-pruned-emaonly.safetensors",
     "loras": [{"name": "style.safetensors", "strength_model": 0.85, "strength_clip": 0.85},
               {"name": "structure.safetensors", "strength_model": 0.55, "strength_clip": 0.55}],
     "embedding": {"name": "rezcty_genius.safetensors", "weight": 0.3},
     "vae": "vae-ft-mse-840000-ema-pruned.safetensors",   # null: the checkpoint's own VAE
     "upscaler": "RealESRGAN_x4plus.safetensors"}

`targets(graph)` finds where each field goes in an API-format graph from its node types and links
(every KSampler's seed, the CLIP Text Encode wired to the first KSampler's negative, ...), so the
shipped workflows and edited copies of them work without `--map`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from rezcty_core.sd import presets

FIELDS = ("seeds", "preset", "negative", "checkpoint", "loras", "embedding", "vae", "upscaler")
SAMPLERS = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed", "RandomNoise": "noise_seed"}
MAX_SEED = 2**32 - 1


class BlueprintError(ValueError):
    """A field of a prompts.json entry that cannot be used (the message names the field)."""


def _ids(graph: dict, class_type: str) -> list[str]:
    ids = [k for k, v in graph.items() if isinstance(v, dict) and v.get("class_type") == class_type]
    return sorted(ids, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))


def _upstream(graph: dict, node_id: str) -> set[str]:
    """Every node that feeds `node_id`, through any chain of links."""
    seen: set[str] = set()
    todo = [node_id]
    while todo:
        node = graph.get(str(todo.pop()), {})
        for value in (node.get("inputs") or {}).values() if isinstance(node, dict) else ():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in graph and str(value[0]) not in seen:
                seen.add(str(value[0]))
                todo.append(str(value[0]))
    return seen


def _first_sampler(graph: dict) -> str | None:
    """The first-pass sampler: the one no other sampler feeds (the detail pass samples the first pass's latent),
    found from the links, so a workflow renumbered by a re-save keeps its meaning."""
    ids = [k for cls in SAMPLERS for k in _ids(graph, cls)]
    first = [k for k in ids if not (_upstream(graph, k) & (set(ids) - {k}))]
    return (first or ids)[0] if ids else None


def targets(graph: dict) -> dict[str, list[str]]:
    """Blueprint field (or sub-field) -> the NODE.INPUT targets in this graph ([] where the graph has none)."""
    t: dict[str, list[str]] = {f: [] for f in FIELDS}
    first = _first_sampler(graph)
    for cls, name in SAMPLERS.items():
        t["seeds"] += [f"{k}.{name}" for k in _ids(graph, cls)]
    # the first pass's seed first: it is the one a resolved blueprint records
    t["seeds"].sort(key=lambda target: target.rpartition(".")[0] != first)
    t["preset"] = [f"{k}.preset" for k in _ids(graph, "RezctyStockSize")]
    if first is not None:
        neg = graph[first].get("inputs", {}).get("negative")
        if isinstance(neg, list) and graph.get(str(neg[0]), {}).get("class_type") == "CLIPTextEncode" \
                and not isinstance(graph[str(neg[0])]["inputs"].get("text"), list):
            t["negative"] = [f"{neg[0]}.text"]
    t["checkpoint"] = [f"{k}.ckpt_name" for k in _ids(graph, "CheckpointLoaderSimple")]
    t["vae"] = [f"{k}.vae_name" for k in _ids(graph, "VAELoader")]
    t["upscaler"] = [f"{k}.model_name" for k in _ids(graph, "UpscaleModelLoader")]
    t["embedding"] = [f"{k}" for k in _ids(graph, "RezctyEmbeddingBridge")]
    t["loras"] = [f"{k}" for k in _ids(graph, "RezctyDualLoraLoader")]
    return t


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise BlueprintError(msg)


def seeds_of(entry: dict) -> list[int] | None:
    """The entry's seeds ("seeds" list, or a single "seed"); None when it has none."""
    raw = entry.get("seeds", [entry["seed"]] if "seed" in entry else None)
    if raw is None:
        return None
    _need(isinstance(raw, list) and raw and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                                                 for s in raw),
          f"\"seeds\" must be a non-empty list of integers 0..{MAX_SEED}, got {raw!r}")
    _need(len(set(raw)) == len(raw), f"\"seeds\" repeats a seed: {raw!r}")
    return list(raw)


@dataclass
class Bound:
    """The graph inputs one entry sets, what it left to the workflow, and what it could not apply."""

    values: dict = field(default_factory=dict)  # "NODE.INPUT" -> value (seed excluded: one per item)
    defaulted: list[str] = field(default_factory=list)  # fields absent from the entry
    ignored: list[str] = field(default_factory=list)  # fields given that this workflow has no place for


def bind(entry: dict, graph: dict, where: dict[str, list[str]] | None = None) -> Bound:
    """Map an entry's blueprint fields onto graph inputs; raises BlueprintError for a malformed field."""
    where = where or targets(graph)
    out = Bound()

    def put(name: str, value) -> None:
        if not where[name]:
            out.ignored.append(name)
        for target in where[name]:
            out.values[target] = value

    for name in FIELDS:
        if name == "seeds":
            if seeds_of(entry) is None:
                out.defaulted.append("seeds")
            continue
        if name not in entry:
            out.defaulted.append(name)
            continue
        value = entry[name]
        if name == "preset":
            try:
                put(name, presets.get_preset(value).name)
            except ValueError as e:
                raise BlueprintError(str(e)) from None
        elif name in ("negative", "checkpoint", "upscaler"):
            _need(isinstance(value, str) and (value.strip() or name == "negative"), f"\"{name}\" must be a text, got {value!r}")
            put(name, value)
        elif name == "vae":
            _need(value is None or isinstance(value, str), f"\"vae\" must be a file name or null, got {value!r}")
            if value is None:
                if where["vae"]:
                    out.ignored.append("vae")  # a VAE Loader is in the graph: it keeps its file
            else:
                put(name, value)
        elif name == "embedding":
            if isinstance(value, str):
                value = {"name": value}
            _need(isinstance(value, dict) and isinstance(value.get("name"), str),
                  f"\"embedding\" must be {{\"name\": FILE, \"weight\": W}}, got {value!r}")
            weight = value.get("weight")
            _need(weight is None or isinstance(weight, (int, float)), f"\"embedding\" weight must be a number, got {weight!r}")
            if not where["embedding"]:
                out.ignored.append(name)
            for node in where["embedding"]:
                out.values[f"{node}.embedding"] = value["name"]
                if weight is not None:
                    out.values[f"{node}.weight"] = float(weight)
        elif name == "loras":
            _need(isinstance(value, list) and len(value) <= 2 and all(isinstance(v, dict) and isinstance(v.get("name"), str)
                                                                      for v in value),
                  f"\"loras\" must be a list of up to two {{\"name\", \"strength_model\", \"strength_clip\"}} "
                  f"(style, then structure), got {value!r}")
            if not where["loras"]:
                out.ignored.append(name)
            for node in where["loras"]:
                for role, lora in zip(("style", "structure"), [*value, {"name": "none"}, {"name": "none"}]):
                    out.values[f"{node}.{role}_lora"] = lora["name"]
                    for part in ("model", "clip"):
                        s = lora.get(f"strength_{part}", lora.get("strength"))
                        if s is not None:
                            _need(isinstance(s, (int, float)), f"\"loras\" strength must be a number, got {s!r}")
                            out.values[f"{node}.{role}_strength_{part}"] = float(s)
    return out


def variation_seeds(prompt: str, n: int, base_seed: int = 0) -> list[int]:
    """N distinct seeds for a prompt, the same for the same (prompt, base seed) on every machine."""
    seeds: list[int] = []
    i = 0
    while len(seeds) < n:
        s = int(hashlib.sha256(f"{base_seed}|{prompt}|{i}".encode()).hexdigest()[:8], 16)
        if s not in seeds:
            seeds.append(s)
        i += 1
    return seeds


def defaults_from_graph(graph: dict) -> dict:
    """The blueprint fields a line-2 API workflow renders with now (what an entry without them gets)."""
    where = targets(graph)

    def value(target: str):
        node, _, name = target.rpartition(".")
        v = graph[node].get("inputs", {}).get(name)
        return None if isinstance(v, list) else v

    bp: dict = {}
    for name in ("preset", "negative", "checkpoint", "vae", "upscaler"):
        if where[name]:
            bp[name] = value(where[name][0])
    if "vae" not in bp:
        bp["vae"] = None  # decoded with the checkpoint's VAE
    if where["loras"]:
        inputs = graph[where["loras"][0]]["inputs"]
        bp["loras"] = [{"name": inputs.get(f"{r}_lora"), "strength_model": inputs.get(f"{r}_strength_model"),
                        "strength_clip": inputs.get(f"{r}_strength_clip")}
                       for r in ("style", "structure") if inputs.get(f"{r}_lora") not in (None, "none")]
    if where["embedding"]:
        inputs = graph[where["embedding"][0]]["inputs"]
        bp["embedding"] = {"name": inputs.get("embedding"), "weight": inputs.get("weight")}
    return bp


def make_entry(idea: str | None, prompt: str, defaults: dict, variations: int = 1, base_seed: int = 0,
               preset: str | None = None) -> dict:
    """One prompts.json entry: the prompt with everything line 2 needs to render it again."""
    entry: dict = {"idea": idea, "prompt": prompt, "seeds": variation_seeds(prompt, variations, base_seed)}
    entry.update(defaults)
    if preset is not None:
        entry["preset"] = presets.get_preset(preset).name
    return entry


def resolved(graph: dict, prompt: str, idea: str | None = None) -> dict:
    """The blueprint of one rendered item, read back from the graph it ran as (prompts.json format)."""
    where = targets(graph)
    entry: dict = {"idea": idea, "prompt": prompt}
    if where["seeds"]:
        node, _, name = where["seeds"][0].rpartition(".")
        seed = graph[node].get("inputs", {}).get(name)
        if isinstance(seed, int):
            entry["seeds"] = [seed]
    entry.update(defaults_from_graph(graph))
    return entry
